//! `/v2/schemas/metadefs/*`: the JSON schemas of the metadefs resources, which
//! [`super::validate`] enforces on requests and the views in this module's siblings
//! follow in responses.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::validate::TYPES;
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    let r = |f: fn() -> Value| get(move || async move { Json(f()) });
    Router::new()
        .route("/v2/schemas/metadefs/namespace", r(namespace))
        .route("/v2/schemas/metadefs/namespaces", r(namespaces))
        .route("/v2/schemas/metadefs/resource_type", r(resource_type))
        .route("/v2/schemas/metadefs/resource_types", r(resource_types))
        .route("/v2/schemas/metadefs/property", r(property))
        .route("/v2/schemas/metadefs/properties", r(properties))
        .route("/v2/schemas/metadefs/object", r(object))
        .route("/v2/schemas/metadefs/objects", r(objects))
        .route("/v2/schemas/metadefs/tag", r(tag))
        .route("/v2/schemas/metadefs/tags", r(tags))
}

fn stamp(what: &str) -> Value {
    json!({"type": "string", "readOnly": true, "format": "date-time", "description": format!("Date and time of {what}")})
}

fn type_enum() -> Value {
    json!({"type": "string", "enum": TYPES})
}

/// The keywords of one property definition.
fn property_keywords() -> Value {
    json!({
        "name": {"type": "string", "maxLength": 80},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "operators": {"type": "array", "items": {"type": "string"}},
        "type": type_enum(),
        "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "maxLength": {"type": "integer", "minimum": 0},
        "minLength": {"type": "integer", "minimum": 0, "default": 0},
        "pattern": {"type": "string", "format": "regex"},
        "enum": {"type": "array"},
        "readonly": {"type": "boolean"},
        "default": {},
        "items": {"type": "object", "properties": {"type": type_enum(), "enum": {"type": "array"}}},
        "maxItems": {"type": "integer", "minimum": 0},
        "minItems": {"type": "integer", "minimum": 0, "default": 0},
        "uniqueItems": {"type": "boolean", "default": false},
        "additionalItems": {"type": "boolean"}
    })
}

fn property_definitions() -> Value {
    json!({
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["title", "type"],
            "properties": property_keywords(),
            "additionalProperties": false
        }
    })
}

fn collection(name: &str, items_key: &str, item: Value) -> Value {
    json!({
        "name": name,
        "properties": {
            items_key: {"type": "array", "items": item},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

/// `GET /v2/schemas/metadefs/namespace`.
pub fn namespace() -> Value {
    json!({
        "name": "namespace",
        "type": "object",
        "required": ["namespace"],
        "additionalProperties": false,
        "properties": {
            "namespace": {"type": "string", "maxLength": 80, "description": "The unique namespace text."},
            "display_name": {"type": "string", "maxLength": 80, "description": "The user friendly name for the namespace."},
            "description": {"type": "string", "maxLength": 500, "description": "Provides a user friendly description of the namespace."},
            "visibility": {"type": "string", "enum": ["public", "private"], "description": "Scope of namespace accessibility."},
            "protected": {"type": "boolean", "description": "If true, namespace will not be deletable."},
            "owner": {"type": "string", "maxLength": 255, "description": "Owner of the namespace."},
            "created_at": stamp("namespace creation"),
            "updated_at": stamp("the last namespace modification"),
            "schema": {"type": "string", "readOnly": true},
            "self": {"type": "string", "readOnly": true},
            "resource_type_associations": {
                "type": "array",
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "prefix": {"type": "string"}, "properties_target": {"type": "string"}
                }}
            },
            "properties": property_definitions(),
            "objects": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "properties": property_definitions()
            }}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
        }
    })
}

/// `GET /v2/schemas/metadefs/namespaces`.
pub fn namespaces() -> Value {
    collection("namespaces", "namespaces", namespace())
}

/// `GET /v2/schemas/metadefs/resource_type`.
pub fn resource_type() -> Value {
    json!({
        "name": "resource_type_association",
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "maxLength": 80, "description": "Resource type names should be aligned with Heat resource types whenever possible."},
            "prefix": {"type": "string", "maxLength": 80, "description": "Prefix of the properties on resources of this type."},
            "properties_target": {"type": "string", "maxLength": 80, "description": "Where on a resource of this type the properties go."},
            "created_at": stamp("resource type association"),
            "updated_at": stamp("the last resource type association modification")
        }
    })
}

/// `GET /v2/schemas/metadefs/resource_types`.
pub fn resource_types() -> Value {
    collection("resource_type_associations", "resource_type_associations", resource_type())
}

/// `GET /v2/schemas/metadefs/property`.
pub fn property() -> Value {
    let mut props = property_keywords();
    props["required"]["minItems"] = json!(1);
    json!({
        "name": "property",
        "type": "object",
        "required": ["type", "title", "name"],
        "additionalProperties": false,
        "properties": props
    })
}

/// `GET /v2/schemas/metadefs/properties`.
pub fn properties() -> Value {
    let mut item = property();
    item["required"] = json!(["type", "title"]);
    json!({
        "name": "properties",
        "properties": {
            "properties": {"type": "object", "additionalProperties": item},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

/// `GET /v2/schemas/metadefs/object`.
pub fn object() -> Value {
    json!({
        "name": "object",
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "maxLength": 80},
            "description": {"type": "string"},
            "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "properties": property_definitions(),
            "schema": {"type": "string", "readOnly": true},
            "self": {"type": "string", "readOnly": true},
            "created_at": stamp("object creation"),
            "updated_at": stamp("the last object modification")
        }
    })
}

/// `GET /v2/schemas/metadefs/objects`.
pub fn objects() -> Value {
    collection("objects", "objects", object())
}

/// `GET /v2/schemas/metadefs/tag`.
pub fn tag() -> Value {
    json!({
        "name": "tag",
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "maxLength": 80},
            "created_at": stamp("tag creation"),
            "updated_at": stamp("the last tag modification")
        }
    })
}

/// `GET /v2/schemas/metadefs/tags`.
pub fn tags() -> Value {
    collection("tags", "tags", tag())
}
