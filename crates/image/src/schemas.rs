//! JSON schemas the clients fetch (`/v2/schemas/image(s)`, `/v2/schemas/member(s)`,
//! `/v2/schemas/task(s)`; the metadefs ones are in [`crate::metadefs::schemas`]).
//!
//! They describe exactly what `images::view` and the members view return: a client
//! validating a response against them must find every field declared with its type.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::images::patch::{CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES};
use crate::members::STATUSES;
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/schemas/image", get(|| async { Json(image()) }))
        .route("/v2/schemas/images", get(|| async { Json(images()) }))
        .route("/v2/schemas/member", get(|| async { Json(member()) }))
        .route("/v2/schemas/members", get(|| async { Json(members()) }))
        .route("/v2/schemas/task", get(|| async { Json(task()) }))
        .route("/v2/schemas/tasks", get(|| async { Json(tasks()) }))
}

fn task_properties() -> Value {
    json!({
        "id": {"type": "string", "description": "An identifier for the task", "pattern": UUID_PATTERN},
        "type": {"type": "string", "enum": crate::tasks::TYPES, "description": "The type of task represented by this content"},
        "status": {"type": "string", "enum": crate::tasks::STATUSES, "description": "The current status of this task"},
        "input": {"type": ["null", "object"], "description": "The parameters required by task, JSON blob"},
        "result": {"type": ["null", "object"], "description": "The result of current task, JSON blob"},
        "owner": {"type": "string", "description": "An identifier for the owner of this task"},
        "message": {"type": "string", "description": "Human-readable informative message only included when appropriate (usually on failure)"},
        "image_id": {"type": "string", "description": "Image associated with the task"},
        "request_id": {"type": "string", "description": "Human-readable informative request-id"},
        "user_id": {"type": "string", "description": "User associated with the task"},
        "expires_at": {"type": ["null", "string"], "description": "Datetime when this resource would be subject to removal"},
        "created_at": {"type": "string", "description": "Datetime when this resource was created"},
        "updated_at": {"type": "string", "description": "Datetime when this resource was updated"},
        "self": {"type": "string", "readOnly": true},
        "schema": {"type": "string", "readOnly": true}
    })
}

/// `GET /v2/schemas/task`.
pub fn task() -> Value {
    json!({"name": "task", "properties": task_properties()})
}

/// `GET /v2/schemas/tasks`: the list shows tasks without input, result and message.
pub fn tasks() -> Value {
    let mut partial = task_properties();
    if let Some(o) = partial.as_object_mut() {
        for k in ["input", "result", "message"] {
            o.remove(k);
        }
    }
    json!({
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": {"name": "task", "properties": partial}},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

const UUID_PATTERN: &str = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

fn nullable_enum(values: &[&str]) -> Value {
    let mut e: Vec<Value> = vec![Value::Null];
    e.extend(values.iter().map(|v| json!(v)));
    Value::Array(e)
}

/// `GET /v2/schemas/image`.
pub fn image() -> Value {
    json!({
        "name": "image",
        "additionalProperties": {"type": "string"},
        "properties": {
            "id": {"type": "string", "description": "An identifier for the image", "pattern": UUID_PATTERN},
            "name": {"type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": 255},
            "status": {
                "type": "string", "readOnly": true, "description": "Status of the image",
                "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing",
                         "pending_delete", "deactivated"]
            },
            "visibility": {"type": "string", "description": "Scope of image accessibility", "enum": VISIBILITIES},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": {"type": ["null", "string"], "readOnly": true, "maxLength": 32,
                         "description": "md5 hash of image contents."},
            "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "maxLength": 64,
                             "description": "Algorithm to calculate the os_hash_value"},
            "os_hash_value": {"type": ["null", "string"], "readOnly": true, "maxLength": 128,
                              "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo"},
            "owner": {"type": ["null", "string"], "maxLength": 255, "description": "Owner of the image"},
            "size": {"type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true, "description": "Virtual size of image in bytes"},
            "container_format": {"type": ["null", "string"], "enum": nullable_enum(CONTAINER_FORMATS),
                                 "description": "Format of the container"},
            "disk_format": {"type": ["null", "string"], "enum": nullable_enum(DISK_FORMATS),
                            "description": "Format of the disk"},
            "created_at": {"type": "string", "readOnly": true, "description": "Date and time of image registration"},
            "updated_at": {"type": "string", "readOnly": true, "description": "Date and time of the last image modification"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}, "description": "List of strings related to the image"},
            "direct_url": {"type": "string", "readOnly": true, "description": "URL to access the image file kept in external store"},
            "min_ram": {"type": "integer", "minimum": 0, "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "minimum": 0, "description": "Amount of disk space (in GB) required to boot image."},
            "self": {"type": "string", "readOnly": true, "description": "An image self url"},
            "file": {"type": "string", "readOnly": true, "description": "An image file url"},
            "stores": {"type": "string", "readOnly": true, "description": "Store in which image data resides."},
            "schema": {"type": "string", "readOnly": true, "description": "An image schema url"},
            "locations": {
                "type": "array",
                "description": "A set of URLs to access the image file kept in external store",
                "items": {"type": "object", "required": ["url", "metadata"],
                          "properties": {"url": {"type": "string", "maxLength": 255}, "metadata": {"type": "object"}}}
            },
            "kernel_id": {"type": ["null", "string"], "pattern": UUID_PATTERN,
                          "description": "ID of image stored in Glance that should be used as the kernel when booting an AMI-style image."},
            "ramdisk_id": {"type": ["null", "string"], "pattern": UUID_PATTERN,
                           "description": "ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image."},
            "instance_uuid": {"type": "string", "description": "Metadata which can be used to record which instance this image is associated with."},
            "architecture": {"type": "string", "description": "Operating system architecture"},
            "os_distro": {"type": "string", "description": "Common name of operating system distribution"},
            "os_version": {"type": "string", "description": "Operating system version as specified by the distributor"},
            "description": {"type": "string", "description": "A human-readable string describing this image."}
        },
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

/// `GET /v2/schemas/images`.
pub fn images() -> Value {
    json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image()},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

/// `GET /v2/schemas/member`.
pub fn member() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {"type": "string", "description": "An identifier for the image", "pattern": UUID_PATTERN},
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "schema": {"type": "string", "readOnly": true},
            "status": {"type": "string", "enum": STATUSES, "description": "The status of this image member"},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"}
        }
    })
}

/// `GET /v2/schemas/members`.
pub fn members() -> Value {
    json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member()},
            "schema": {"type": "string"}
        },
        "links": [{"rel": "describedby", "href": "{schema}"}]
    })
}
