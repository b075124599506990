//! Placement's REST API driven in-process: per-microversion shapes, error codes,
//! generations, allocation candidates.

mod harness;

use axum::http::StatusCode;
use serde_json::{json, Value};
use stratus_core::RequestContext;

const AGG1: &str = "11111111-1111-1111-1111-111111111111";
const AGG2: &str = "22222222-2222-2222-2222-222222222222";

fn code(v: &Value) -> &str {
    v["errors"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn root_document_and_version_negotiation() {
    let h = harness::sqlite().await;
    let (s, v) = h.call("GET", "/", "", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["versions"][0]["max_version"], "1.39");
    let (s, v) = h.call("GET", "/resource_providers", "1.40", None).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE, "{v}");
    assert!(v["errors"][0]["status"].is_number());
}

#[tokio::test]
async fn provider_crud_per_microversion() {
    let h = harness::sqlite().await;
    // 1.0: 201 with Location and no body.
    let (s, hdrs, v) = h
        .call_full(RequestContext::internal_admin(), "POST", "/resource_providers", "1.0", Some(json!({"name": "cn1"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(v.is_null());
    let loc = hdrs["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("/placement/resource_providers/"));
    let cn1 = loc.rsplit('/').next().unwrap().to_string();
    // 1.0 shape: no nested fields, no traits/allocations links.
    let (s, v) = h.call("GET", &format!("/resource_providers/{cn1}"), "1.0", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["generation"], 0);
    assert!(v.get("parent_provider_uuid").is_none());
    assert_eq!(v["links"].as_array().unwrap().len(), 3);
    // 1.14: nested fields; 1.11: allocations link.
    let (_, v) = h.call("GET", &format!("/resource_providers/{cn1}"), "1.14", None).await;
    assert_eq!(v["root_provider_uuid"], cn1.as_str());
    assert!(v["parent_provider_uuid"].is_null());
    assert_eq!(v["links"].as_array().unwrap().len(), 6);
    // 1.20 returns the body; child provider gets root of parent.
    let child = h.provider("cn1_numa0", Some(&cn1)).await;
    let (_, v) = h.call("GET", &format!("/resource_providers/{child}"), "1.39", None).await;
    assert_eq!(v["parent_provider_uuid"], cn1.as_str());
    assert_eq!(v["root_provider_uuid"], cn1.as_str());
    // Duplicate name: 409 placement.duplicate_name.
    let (s, v) = h.call("POST", "/resource_providers", "1.39", Some(json!({"name": "cn1"}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.duplicate_name");
    // parent_provider_uuid is unknown before 1.14.
    let (s, _) =
        h.call("POST", "/resource_providers", "1.13", Some(json!({"name": "x", "parent_provider_uuid": cn1}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Filters.
    let (_, v) = h.call("GET", "/resource_providers?name=cn1", "1.39", None).await;
    assert_eq!(v["resource_providers"].as_array().unwrap().len(), 1);
    let (_, v) = h.call("GET", &format!("/resource_providers?in_tree={child}"), "1.39", None).await;
    assert_eq!(v["resource_providers"].as_array().unwrap().len(), 2);
    let (s, _) = h.call("GET", &format!("/resource_providers?in_tree={child}"), "1.13", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Rename.
    let (s, v) =
        h.call("PUT", &format!("/resource_providers/{cn1}"), "1.39", Some(json!({"name": "cn1-renamed"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "cn1-renamed");
    // Re-parenting needs 1.37; un-parenting too.
    let other = h.provider("cn2", None).await;
    let (s, _) = h
        .call(
            "PUT",
            &format!("/resource_providers/{child}"),
            "1.36",
            Some(json!({"name": "cn1_numa0", "parent_provider_uuid": other})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h
        .call(
            "PUT",
            &format!("/resource_providers/{child}"),
            "1.37",
            Some(json!({"name": "cn1_numa0", "parent_provider_uuid": other})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["root_provider_uuid"], other.as_str());
    // Loops are refused.
    let (s, _) = h
        .call(
            "PUT",
            &format!("/resource_providers/{other}"),
            "1.37",
            Some(json!({"name": "cn2", "parent_provider_uuid": child})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Deleting a parent: 409 cannot_delete_parent.
    let (s, v) = h.call("DELETE", &format!("/resource_providers/{other}"), "1.39", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.resource_provider.cannot_delete_parent");
    let (s, _) = h.call("DELETE", &format!("/resource_providers/{child}"), "1.39", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("GET", &format!("/resource_providers/{child}"), "1.39", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["errors"][0]["status"], 404);
    // Unknown route under /placement: placement error format.
    let (s, v) = h.call("GET", "/nope", "1.39", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["errors"].is_array());
}

#[tokio::test]
async fn inventories_generations_and_in_use() {
    let h = harness::sqlite().await;
    let rp = h.provider("cn", None).await;
    let path = format!("/resource_providers/{rp}/inventories");
    let (s, v) = h
        .call("PUT", &path, "1.39", Some(json!({"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 8}, "MEMORY_MB": {"total": 4096, "reserved": 512}}})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["resource_provider_generation"], 1);
    assert_eq!(
        v["inventories"]["VCPU"],
        json!({"total": 8, "reserved": 0, "min_unit": 1, "max_unit": 2147483647, "step_size": 1, "allocation_ratio": 1.0})
    );
    // Stale generation: 409 placement.concurrent_update.
    let (s, v) =
        h.call("PUT", &path, "1.39", Some(json!({"resource_provider_generation": 0, "inventories": {}}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.concurrent_update");
    // Unknown class: 400. reserved > total: 400.
    let (s, _) = h
        .call(
            "PUT",
            &format!("{path}/CUSTOM_NOPE"),
            "1.39",
            Some(json!({"resource_provider_generation": 1, "total": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .call(
            "PUT",
            &format!("{path}/VCPU"),
            "1.39",
            Some(json!({"resource_provider_generation": 1, "total": 1, "reserved": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // reserved == total: allowed from 1.26 only.
    let (s, _) = h
        .call(
            "PUT",
            &format!("{path}/VCPU"),
            "1.25",
            Some(json!({"resource_provider_generation": 1, "total": 8, "reserved": 8})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // POST a single class: 201.
    let (s, v) = h
        .call(
            "POST",
            &path,
            "1.39",
            Some(json!({"resource_provider_generation": 1, "resource_class": "DISK_GB", "total": 100})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["resource_provider_generation"], 2);
    // Allocate 6 VCPU, then shrinking to 4 or deleting VCPU is 409 inventory.inuse.
    let c = uuid::Uuid::new_v4().to_string();
    let (s, v) = h
        .call(
            "PUT",
            &format!("/allocations/{c}"),
            "1.39",
            Some(json!({
            "allocations": {rp.clone(): {"resources": {"VCPU": 6}}},
            "project_id": "p1", "user_id": "u1", "consumer_generation": null, "consumer_type": "INSTANCE"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, inv) = h.call("GET", &format!("{path}/VCPU"), "1.39", None).await;
    let g = inv["resource_provider_generation"].clone();
    let (s, v) = h
        .call("PUT", &format!("{path}/VCPU"), "1.39", Some(json!({"resource_provider_generation": g, "total": 4})))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.inventory.inuse");
    let (s, v) = h.call("DELETE", &format!("{path}/VCPU"), "1.39", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.inventory.inuse");
    let (s, _) = h.call("DELETE", &path, "1.4", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = h.call("DELETE", &path, "1.5", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Provider with allocations cannot be deleted.
    let (s, v) = h.call("DELETE", &format!("/resource_providers/{rp}"), "1.39", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.resource_provider.inuse");
    // Usages.
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/usages"), "1.39", None).await;
    assert_eq!(v["usages"], json!({"VCPU": 6, "MEMORY_MB": 0, "DISK_GB": 0}));
}

#[tokio::test]
async fn allocations_per_microversion() {
    let h = harness::sqlite().await;
    let rp = h.provider("cn", None).await;
    let rp2 = h.provider("cn2", None).await;
    h.inventory(&rp, &[("VCPU", 4, 0, 2.0), ("MEMORY_MB", 2048, 0, 1.0)]).await;
    h.inventory(&rp2, &[("VCPU", 4, 0, 1.0)]).await;
    let c = uuid::Uuid::new_v4().to_string();
    let path = format!("/allocations/{c}");
    // 1.0 list format, no project needed.
    let (s, v) = h
        .call(
            "PUT",
            &path,
            "1.0",
            Some(json!({"allocations": [{"resource_provider": {"uuid": rp}, "resources": {"VCPU": 2}}]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // 1.8 requires project and user.
    let (s, _) = h
        .call(
            "PUT",
            &path,
            "1.8",
            Some(json!({"allocations": [{"resource_provider": {"uuid": rp}, "resources": {"VCPU": 2}}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = h.call("GET", &path, "1.0", None).await;
    assert!(v.get("project_id").is_none());
    assert_eq!(v["allocations"][&rp]["resources"]["VCPU"], 2);
    let (_, v) = h.call("GET", &path, "1.28", None).await;
    assert_eq!(v["consumer_generation"], 0);
    // 1.28: generation required and checked.
    let body = |gen: Value, vcpu: i64| {
        json!({"allocations": {rp.clone(): {"resources": {"VCPU": vcpu}}}, "project_id": "p1", "user_id": "u1",
               "consumer_generation": gen, "consumer_type": "INSTANCE"})
    };
    let (s, v) = h.call("PUT", &path, "1.38", Some(body(Value::Null, 3))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.concurrent_update");
    let (s, v) = h.call("PUT", &path, "1.38", Some(body(json!(0), 3))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = h.call("GET", &path, "1.38", None).await;
    assert_eq!(v["consumer_generation"], 1);
    assert_eq!(v["consumer_type"], "INSTANCE");
    assert_eq!(v["project_id"], "p1");
    // consumer_type is rejected before 1.38.
    let (s, _) = h.call("PUT", &path, "1.37", Some(body(json!(1), 3))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Capacity: 4 * 2.0 = 8; 3 used, 6 more does not fit.
    let c2 = uuid::Uuid::new_v4().to_string();
    let (s, v) = h.call("PUT", &format!("/allocations/{c2}"), "1.38", Some(body(Value::Null, 6))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["errors"][0]["detail"].as_str().unwrap().contains("exceed the capacity"));
    let (s, _) = h.call("PUT", &format!("/allocations/{c2}"), "1.38", Some(body(Value::Null, 5))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Unknown provider: 400.
    let bogus = uuid::Uuid::new_v4().to_string();
    let (s, _) = h
        .call("PUT", &format!("/allocations/{}", uuid::Uuid::new_v4()), "1.38",
            Some(json!({"allocations": {bogus: {"resources": {"VCPU": 1}}}, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "INSTANCE"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // POST /allocations: move c's allocation to a migration consumer on rp2 atomically.
    let mig = uuid::Uuid::new_v4().to_string();
    let (s, v) = h
        .call("POST", "/allocations", "1.38", Some(json!({
            c.clone(): {"allocations": {}, "project_id": "p1", "user_id": "u1", "consumer_generation": 1, "consumer_type": "INSTANCE"},
            mig.clone(): {"allocations": {rp2.clone(): {"resources": {"VCPU": 3}}}, "project_id": "p1", "user_id": "u1", "consumer_generation": null, "consumer_type": "MIGRATION"}
        })))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = h.call("GET", &path, "1.38", None).await;
    assert_eq!(v, json!({"allocations": {}}));
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp2}/allocations"), "1.38", None).await;
    assert_eq!(v["allocations"][&mig]["resources"]["VCPU"], 3);
    // Usages per project: 1.9 flat, 1.38 grouped by consumer type.
    let (_, v) = h.call("GET", "/usages?project_id=p1", "1.9", None).await;
    assert_eq!(v["usages"], json!({"VCPU": 8}));
    let (_, v) = h.call("GET", "/usages?project_id=p1", "1.38", None).await;
    assert_eq!(v["usages"]["MIGRATION"], json!({"consumer_count": 1, "VCPU": 3}));
    assert_eq!(v["usages"]["INSTANCE"], json!({"consumer_count": 1, "VCPU": 5}));
    assert_eq!(v["usages"]["all"]["consumer_count"], 2);
    let (s, _) = h.call("GET", "/usages", "1.9", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // DELETE.
    let (s, _) = h.call("DELETE", &format!("/allocations/{mig}"), "1.38", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("DELETE", &format!("/allocations/{mig}"), "1.38", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn traits_classes_aggregates() {
    let h = harness::sqlite().await;
    let (s, _) = h.call("GET", "/traits", "1.5", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = h.call("GET", "/traits?name=startswith:HW_CPU_X86", "1.6", None).await;
    assert!(v["traits"].as_array().unwrap().iter().any(|t| t == "HW_CPU_X86_AVX2"));
    let (s, _) = h.call("PUT", "/traits/CUSTOM_GOLD", "1.6", None).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.call("PUT", "/traits/CUSTOM_GOLD", "1.6", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("PUT", "/traits/gold", "1.6", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("DELETE", "/traits/STORAGE_DISK_SSD", "1.6", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let rp = h.provider("cn", None).await;
    h.traits(&rp, &["CUSTOM_GOLD", "STORAGE_DISK_SSD"]).await;
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/traits"), "1.6", None).await;
    assert_eq!(v["traits"], json!(["CUSTOM_GOLD", "STORAGE_DISK_SSD"]));
    let (s, _) = h.call("DELETE", "/traits/CUSTOM_GOLD", "1.6", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, v) = h.call("GET", "/traits?associated=true", "1.6", None).await;
    assert_eq!(v["traits"], json!(["CUSTOM_GOLD", "STORAGE_DISK_SSD"]));
    let (s, v) = h
        .call(
            "PUT",
            &format!("/resource_providers/{rp}/traits"),
            "1.6",
            Some(json!({"resource_provider_generation": 0, "traits": []})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&v), "placement.concurrent_update");
    // Resource classes.
    let (_, v) = h.call("GET", "/resource_classes", "1.2", None).await;
    assert!(v["resource_classes"].as_array().unwrap().iter().any(|c| c["name"] == "PCPU"));
    let (s, _) = h.call("POST", "/resource_classes", "1.2", Some(json!({"name": "CUSTOM_FPGA_X"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.call("POST", "/resource_classes", "1.2", Some(json!({"name": "CUSTOM_FPGA_X"}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h.call("PUT", "/resource_classes/CUSTOM_FPGA_Y", "1.7", None).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.call("PUT", "/resource_classes/CUSTOM_FPGA_Y", "1.7", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("PUT", "/resource_classes/CUSTOM_FPGA_X", "1.2", Some(json!({"name": "CUSTOM_FPGA_Z"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h.call("GET", "/resource_classes/CUSTOM_FPGA_Z", "1.2", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call("DELETE", "/resource_classes/VCPU", "1.2", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("DELETE", "/resource_classes/CUSTOM_FPGA_Z", "1.2", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Aggregates: bare list before 1.19, generation after.
    let (s, v) = h.call("PUT", &format!("/resource_providers/{rp}/aggregates"), "1.1", Some(json!([AGG1]))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"aggregates": [AGG1]}));
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/aggregates"), "1.19", None).await;
    let g = v["resource_provider_generation"].clone();
    let (s, v) = h
        .call(
            "PUT",
            &format!("/resource_providers/{rp}/aggregates"),
            "1.19",
            Some(json!({"aggregates": [AGG1, AGG2], "resource_provider_generation": g})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["aggregates"].as_array().unwrap().len(), 2);
    let (_, v) = h.call("GET", &format!("/resource_providers?member_of=in:{AGG2}"), "1.3", None).await;
    assert_eq!(v["resource_providers"].as_array().unwrap().len(), 1);
    let (_, v) = h.call("GET", &format!("/resource_providers?member_of=!{AGG2}"), "1.32", None).await;
    assert_eq!(v["resource_providers"].as_array().unwrap().len(), 0);
    let (_, v) = h.call("GET", "/resource_providers?required=CUSTOM_GOLD", "1.18", None).await;
    assert_eq!(v["resource_providers"].as_array().unwrap().len(), 1, "the stale trait PUT changed nothing: {v}");
    let (_, v) = h.call("GET", "/resource_providers?required=!CUSTOM_GOLD", "1.22", None).await;
    assert_eq!(v["resource_providers"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn policy_admin_or_service_only() {
    let h = harness::sqlite().await;
    let member = RequestContext {
        user_id: "u".into(),
        project_id: Some("p".into()),
        roles: vec!["member".into(), "reader".into()],
        ..Default::default()
    };
    let (s, v) = h.call_as(member, "GET", "/resource_providers", "1.39", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let service = RequestContext { user_id: "nova".into(), roles: vec!["service".into()], ..Default::default() };
    let (s, _) = h.call_as(service, "GET", "/resource_providers", "1.39", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn allocation_candidates_flat_filters() {
    let h = harness::sqlite().await;
    let a = h.provider("a", None).await;
    let b = h.provider("b", None).await;
    let c = h.provider("c", None).await;
    for rp in [&a, &b, &c] {
        h.inventory(rp, &[("VCPU", 4, 0, 1.0), ("MEMORY_MB", 1024, 0, 1.0)]).await;
    }
    h.traits(&a, &["HW_CPU_X86_AVX2"]).await;
    h.traits(&b, &["HW_CPU_X86_AVX2", "STORAGE_DISK_SSD"]).await;
    h.aggregates(&c, &[AGG1]).await;
    let q = |s: &str| format!("/allocation_candidates?{s}");
    let (s, v) = h.call("GET", &q("resources=VCPU:1,MEMORY_MB:512"), "1.10", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 3);
    // 1.10 list shape, 1.12 dict shape.
    assert!(v["allocation_requests"][0]["allocations"].is_array());
    assert!(v["provider_summaries"][&a].get("traits").is_none());
    let (_, v) = h.call("GET", &q("resources=VCPU:1"), "1.12", None).await;
    assert!(v["allocation_requests"][0]["allocations"].is_object());
    // Too much: none.
    let (_, v) = h.call("GET", &q("resources=VCPU:5"), "1.39", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 0);
    // Required, forbidden, any-of.
    let (_, v) = h.call("GET", &q("resources=VCPU:1&required=HW_CPU_X86_AVX2"), "1.17", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 2);
    assert_eq!(v["provider_summaries"][&a]["traits"], json!(["HW_CPU_X86_AVX2"]));
    let (_, v) = h.call("GET", &q("resources=VCPU:1&required=HW_CPU_X86_AVX2,!STORAGE_DISK_SSD"), "1.22", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 1);
    let (s, _) = h.call("GET", &q("resources=VCPU:1&required=!STORAGE_DISK_SSD"), "1.21", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = h.call("GET", &q("resources=VCPU:1&required=in:STORAGE_DISK_SSD,CUSTOM_NONE"), "1.39", None).await;
    assert_eq!(v["errors"][0]["status"], 400, "unknown trait in any-of");
    let (_, v) = h
        .call(
            "GET",
            &q("resources=VCPU:1&required=in:STORAGE_DISK_SSD,HW_CPU_X86_AVX2&required=!STORAGE_DISK_SSD"),
            "1.39",
            None,
        )
        .await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 1);
    let (s, _) = h.call("GET", &q("resources=VCPU:1&required=in:STORAGE_DISK_SSD"), "1.38", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // member_of and forbidden aggregates.
    let (_, v) = h.call("GET", &q(&format!("resources=VCPU:1&member_of={AGG1}")), "1.21", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 1);
    let (_, v) = h.call("GET", &q(&format!("resources=VCPU:1&member_of=!{AGG1}")), "1.32", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 2);
    // limit needs 1.16.
    let (s, _) = h.call("GET", &q("resources=VCPU:1&limit=1"), "1.15", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = h.call("GET", &q("resources=VCPU:1&limit=1"), "1.16", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 1);
    assert_eq!(v["provider_summaries"].as_object().unwrap().len(), 1);
    // Unknown class: 400; no resources: 400.
    let (s, _) = h.call("GET", &q("resources=CUSTOM_NOPE:1"), "1.39", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("GET", &q("limit=1"), "1.39", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Summaries: only requested classes before 1.27, all after.
    let (_, v) = h.call("GET", &q("resources=VCPU:1"), "1.26", None).await;
    assert!(v["provider_summaries"][&a]["resources"].get("MEMORY_MB").is_none());
    let (_, v) = h.call("GET", &q("resources=VCPU:1"), "1.27", None).await;
    assert_eq!(v["provider_summaries"][&a]["resources"]["MEMORY_MB"], json!({"capacity": 1024, "used": 0}));
}

#[tokio::test]
async fn allocation_candidates_nested_granular_sharing() {
    let h = harness::sqlite().await;
    // Compute node with two NUMA children, each with PCPU and a NIC child with VFs.
    let cn = h.provider("cn", None).await;
    h.inventory(&cn, &[("VCPU", 8, 0, 1.0), ("MEMORY_MB", 4096, 0, 1.0)]).await;
    h.traits(&cn, &["COMPUTE_NODE"]).await;
    let numa0 = h.provider("cn_numa0", Some(&cn)).await;
    let numa1 = h.provider("cn_numa1", Some(&cn)).await;
    h.inventory(&numa0, &[("PCPU", 4, 0, 1.0)]).await;
    h.inventory(&numa1, &[("PCPU", 4, 0, 1.0)]).await;
    let nic0 = h.provider("cn_numa0_nic", Some(&numa0)).await;
    h.inventory(&nic0, &[("SRIOV_NET_VF", 8, 0, 1.0)]).await;
    h.traits(&nic0, &["HW_NIC_SRIOV"]).await;
    // Shared storage in an aggregate with the compute node.
    let ss = h.provider("shared-disk", None).await;
    h.inventory(&ss, &[("DISK_GB", 1000, 0, 1.0)]).await;
    h.traits(&ss, &["MISC_SHARES_VIA_AGGREGATE"]).await;
    h.aggregates(&ss, &[AGG1]).await;
    h.aggregates(&cn, &[AGG1]).await;
    let q = |s: &str| format!("/allocation_candidates?{s}");
    // Unsuffixed request spread over the tree and the sharing provider.
    let (s, v) = h.call("GET", &q("resources=VCPU:1,PCPU:2,DISK_GB:10"), "1.29", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let reqs = v["allocation_requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2, "PCPU from either NUMA node: {v}");
    for r in reqs {
        assert_eq!(r["allocations"][&ss]["resources"]["DISK_GB"], 10);
        assert_eq!(r["allocations"][&cn]["resources"]["VCPU"], 1);
    }
    // 1.29 summaries include the whole tree with parent/root.
    assert_eq!(v["provider_summaries"][&nic0]["parent_provider_uuid"], numa0.as_str());
    assert_eq!(v["provider_summaries"][&nic0]["root_provider_uuid"], cn.as_str());
    // Granular: two groups need group_policy.
    let (s, v) = h.call("GET", &q("resources1=PCPU:1&resources2=PCPU:1"), "1.25", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(code(&v), "placement.query.missing_value");
    let (_, v) = h.call("GET", &q("resources1=PCPU:1&resources2=PCPU:1&group_policy=isolate"), "1.25", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = h.call("GET", &q("resources1=PCPU:1&resources2=PCPU:1&group_policy=none"), "1.25", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 4, "{v}");
    // String suffixes from 1.33; mappings from 1.34.
    let (s, _) = h.call("GET", &q("resources_PCPU=PCPU:1"), "1.32", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = h
        .call("GET", &q("resources=VCPU:1&resources_NET=SRIOV_NET_VF:1&required_NET=HW_NIC_SRIOV&resources_CPU=PCPU:1&group_policy=none"), "1.34", None)
        .await;
    let reqs = v["allocation_requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2, "{v}");
    assert_eq!(reqs[0]["mappings"]["_NET"], json!([nic0]));
    assert_eq!(reqs[0]["mappings"][""], json!([cn]));
    // same_subtree: the VF and the PCPU from the same NUMA node only.
    let (_, v) = h
        .call(
            "GET",
            &q("resources_NET=SRIOV_NET_VF:1&resources_CPU=PCPU:1&group_policy=none&same_subtree=_NET,_CPU"),
            "1.36",
            None,
        )
        .await;
    let reqs = v["allocation_requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "numa0 is the ancestor of the NIC; numa1 is not: {v}");
    assert_eq!(reqs[0]["allocations"][&numa0]["resources"]["PCPU"], 1);
    // A resourceless group (1.36) names the subtree root by trait.
    h.traits(&numa1, &["HW_NUMA_ROOT"]).await;
    let (_, v) = h
        .call(
            "GET",
            &q("resources_CPU=PCPU:1&required_NUMA=HW_NUMA_ROOT&group_policy=none&same_subtree=_NUMA,_CPU"),
            "1.36",
            None,
        )
        .await;
    let reqs = v["allocation_requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "{v}");
    assert_eq!(reqs[0]["allocations"][&numa1]["resources"]["PCPU"], 1);
    let (s, _) =
        h.call("GET", &q("resources_CPU=PCPU:1&required_NUMA=HW_NUMA_ROOT&group_policy=none"), "1.35", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "resourceless groups need 1.36");
    // root_required.
    let (_, v) = h.call("GET", &q("resources=PCPU:1&root_required=COMPUTE_NODE"), "1.35", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 2);
    let (_, v) = h.call("GET", &q("resources=PCPU:1&root_required=!COMPUTE_NODE"), "1.35", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 0);
    let (s, _) = h.call("GET", &q("resources=PCPU:1&root_required=COMPUTE_NODE"), "1.34", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // in_tree.
    let (_, v) = h.call("GET", &q(&format!("resources=DISK_GB:1&in_tree={ss}")), "1.31", None).await;
    assert_eq!(v["allocation_requests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn reshaper_moves_inventory_and_allocations_atomically() {
    let h = harness::sqlite().await;
    let cn = h.provider("cn", None).await;
    h.inventory(&cn, &[("VCPU", 8, 0, 1.0), ("VGPU", 4, 0, 1.0)]).await;
    let gpu = h.provider("cn_pgpu0", Some(&cn)).await;
    let c = uuid::Uuid::new_v4().to_string();
    let (s, _) = h
        .call(
            "PUT",
            &format!("/allocations/{c}"),
            "1.30",
            Some(json!({
            "allocations": {cn.clone(): {"resources": {"VCPU": 2, "VGPU": 1}}},
            "project_id": "p", "user_id": "u", "consumer_generation": null})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let gen = |v: &Value| v["resource_provider_generation"].clone();
    let (_, cn_inv) = h.call("GET", &format!("/resource_providers/{cn}/inventories"), "1.30", None).await;
    let (_, gpu_inv) = h.call("GET", &format!("/resource_providers/{gpu}/inventories"), "1.30", None).await;
    // Moving inventory without the allocation would leave VGPU usage on cn: 409, nothing changes.
    let bad = json!({
        "inventories": {
            cn.clone(): {"resource_provider_generation": gen(&cn_inv), "inventories": {"VCPU": {"total": 8}}},
            gpu.clone(): {"resource_provider_generation": gen(&gpu_inv), "inventories": {"VGPU": {"total": 4}}}},
        "allocations": {}});
    let (s, v) = h.call("POST", "/reshaper", "1.30", Some(bad)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "placement.inventory.inuse");
    let (s, _) = h.call("POST", "/reshaper", "1.29", Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let good = json!({
        "inventories": {
            cn.clone(): {"resource_provider_generation": gen(&cn_inv), "inventories": {"VCPU": {"total": 8}}},
            gpu.clone(): {"resource_provider_generation": gen(&gpu_inv), "inventories": {"VGPU": {"total": 4}}}},
        "allocations": {c.clone(): {
            "allocations": {cn.clone(): {"resources": {"VCPU": 2}}, gpu.clone(): {"resources": {"VGPU": 1}}},
            "project_id": "p", "user_id": "u", "consumer_generation": 0}}});
    let (s, v) = h.call("POST", "/reshaper", "1.30", Some(good)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = h.call("GET", &format!("/allocations/{c}"), "1.30", None).await;
    assert_eq!(v["allocations"][&gpu]["resources"]["VGPU"], 1);
    assert_eq!(v["allocations"][&cn]["resources"], json!({"VCPU": 2}));
    // The read model followed: VGPU candidates now come from the child.
    let (_, v) = h.call("GET", "/allocation_candidates?resources=VGPU:1", "1.30", None).await;
    let reqs = v["allocation_requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(v["provider_summaries"][&gpu]["resources"]["VGPU"], json!({"capacity": 4, "used": 1}));
}
