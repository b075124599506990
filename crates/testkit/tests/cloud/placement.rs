//! Placement through the real `openstack` CLI with the osc-placement plugin: every
//! command of issue 5's Tests section, at the negotiated default microversion and at 1.39.

use serde_json::Value;
use stratus_testkit::TestCloud;

const AGG: &str = "5b2c0e5c-6bd4-4b6e-9d4e-0b8f6a1c9d01";

async fn os(cloud: &TestCloud, args: &[&str]) -> Value {
    cloud.openstack(args).await.unwrap_or_else(|e| panic!("openstack {args:?}: {e}"))
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("expected a list, got {v}"))
}

#[tokio::test]
async fn placement_through_osc_placement() {
    // No local compute agent: its own resource provider would join every list and
    // candidate query this test counts.
    let cloud = TestCloud::start_with(|c| c.compute.local.local_agent = false).await;
    let v139 = ["--os-placement-api-version", "1.39"];

    // Providers: create (negotiated version, 1.29), a nested child, list, show, set.
    let rp = os(&cloud, &["resource", "provider", "create", "cn-1"]).await;
    let uuid = rp["uuid"].as_str().unwrap().to_string();
    assert_eq!(rp["name"], "cn-1");
    assert_eq!(rp["generation"], 0);
    let child = os(&cloud, &["resource", "provider", "create", "cn-1-numa0", "--parent-provider", &uuid]).await;
    assert_eq!(child["root_provider_uuid"], uuid.as_str());
    let list = os(&cloud, &["resource", "provider", "list"]).await;
    assert_eq!(rows(&list).len(), 2);
    let list = os(&cloud, &["resource", "provider", "list", "--in-tree", &uuid]).await;
    assert_eq!(rows(&list).len(), 2);
    let shown = os(&cloud, &["resource", "provider", "show", &uuid]).await;
    assert_eq!(shown["uuid"], uuid.as_str());
    cloud.openstack(&["resource", "provider", "set", &uuid, "--name", "cn-1-renamed"]).await.unwrap();
    let shown = os(&cloud, &["resource", "provider", "show", &uuid]).await;
    assert_eq!(shown["name"], "cn-1-renamed");

    // Inventories.
    cloud
        .openstack(&[
            "resource",
            "provider",
            "inventory",
            "set",
            &uuid,
            "--resource",
            "VCPU=8",
            "--resource",
            "VCPU:allocation_ratio=2.0",
            "--resource",
            "MEMORY_MB=4096",
            "--resource",
            "MEMORY_MB:reserved=512",
            "--resource",
            "DISK_GB=100",
        ])
        .await
        .unwrap();
    let invs = os(&cloud, &["resource", "provider", "inventory", "list", &uuid]).await;
    assert_eq!(rows(&invs).len(), 3, "{invs}");
    let vcpu = rows(&invs).iter().find(|r| r["resource_class"] == "VCPU").unwrap();
    assert_eq!(vcpu["total"], 8);
    assert_eq!(vcpu["allocation_ratio"], 2.0);
    let mem = os(&cloud, &["resource", "provider", "inventory", "show", &uuid, "MEMORY_MB"]).await;
    assert_eq!(mem["reserved"], 512);
    cloud
        .openstack(&["resource", "provider", "inventory", "delete", &uuid, "--resource-class", "DISK_GB"])
        .await
        .unwrap();
    let invs = os(&cloud, &["resource", "provider", "inventory", "list", &uuid]).await;
    assert_eq!(rows(&invs).len(), 2);

    // Resource classes and traits.
    let mut args = v139.to_vec();
    args.extend(["resource", "class", "create", "CUSTOM_FPGA"]);
    cloud.openstack(&args).await.unwrap();
    let classes = os(&cloud, &["resource", "class", "list"]).await;
    assert!(rows(&classes).iter().any(|c| c["name"] == "CUSTOM_FPGA"));
    assert!(rows(&classes).iter().any(|c| c["name"] == "VCPU"));
    let mut args = v139.to_vec();
    args.extend(["trait", "create", "CUSTOM_GOLD"]);
    cloud.openstack(&args).await.unwrap();
    let traits = os(&cloud, &["trait", "list", "--name", "startswith:CUSTOM"]).await;
    assert_eq!(rows(&traits).iter().map(|t| t["name"].clone()).collect::<Vec<_>>(), vec!["CUSTOM_GOLD"]);
    let set = os(
        &cloud,
        &["resource", "provider", "trait", "set", &uuid, "--trait", "CUSTOM_GOLD", "--trait", "HW_CPU_X86_AVX2"],
    )
    .await;
    assert_eq!(rows(&set).len(), 2, "{set}");
    let tl = os(&cloud, &["resource", "provider", "trait", "list", &uuid]).await;
    assert_eq!(rows(&tl).len(), 2);

    // Aggregates (1.19 needs the generation).
    let gen = os(&cloud, &["resource", "provider", "show", &uuid]).await["generation"].as_i64().unwrap().to_string();
    let aggs =
        os(&cloud, &["resource", "provider", "aggregate", "set", &uuid, "--aggregate", AGG, "--generation", &gen])
            .await;
    assert_eq!(rows(&aggs).len(), 1, "{aggs}");
    let aggs = os(&cloud, &["resource", "provider", "aggregate", "list", &uuid]).await;
    assert_eq!(rows(&aggs)[0]["uuid"], AGG);

    // Allocation candidates.
    let cands = os(
        &cloud,
        &[
            "allocation",
            "candidate",
            "list",
            "--resource",
            "VCPU=1",
            "--resource",
            "MEMORY_MB=512",
            "--required",
            "HW_CPU_X86_AVX2",
        ],
    )
    .await;
    assert_eq!(rows(&cands).len(), 1, "{cands}");
    let cands =
        os(&cloud, &["allocation", "candidate", "list", "--resource", "VCPU=1", "--required", "STORAGE_DISK_SSD"])
            .await;
    assert_eq!(rows(&cands).len(), 0);
    let mut args = v139.to_vec();
    args.extend(["allocation", "candidate", "list", "--resource", "VCPU=1", "--forbidden", "CUSTOM_GOLD"]);
    let cands = cloud.openstack(&args).await.unwrap();
    assert_eq!(rows(&cands).len(), 0);

    // Allocations: set, show, usages, delete.
    let consumer = "9b3e0f5a-2c1d-4e8f-a7b6-c5d4e3f2a1b0";
    let project = "4a6b2d0e-1f3c-4b5a-9e8d-7c6b5a4f3e2d";
    let user = "8c7d6e5f-4a3b-4c2d-9e1f-0a9b8c7d6e5f";
    let mut args = v139.to_vec();
    let alloc = format!("rp={uuid},VCPU=2,MEMORY_MB=1024");
    args.extend([
        "resource",
        "provider",
        "allocation",
        "set",
        consumer,
        "--allocation",
        &alloc,
        "--project-id",
        project,
        "--user-id",
        user,
        "--consumer-type",
        "INSTANCE",
    ]);
    let (code, out, err) = cloud.openstack_raw(&cloud.admin(), &args).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let mut args = v139.to_vec();
    args.extend(["resource", "provider", "allocation", "show", consumer]);
    let shown = cloud.openstack(&args).await.unwrap();
    assert_eq!(rows(&shown)[0]["resource_provider"], uuid.as_str());
    assert_eq!(rows(&shown)[0]["resources"]["VCPU"], 2);
    let usage = os(&cloud, &["resource", "provider", "usage", "show", &uuid]).await;
    let vcpu = rows(&usage).iter().find(|r| r["resource_class"] == "VCPU").unwrap();
    assert_eq!(vcpu["usage"], 2);
    let usage = os(&cloud, &["resource", "usage", "show", project]).await;
    let mem = rows(&usage).iter().find(|r| r["resource_class"] == "MEMORY_MB").unwrap();
    assert_eq!(mem["usage"], 1024);
    // Over capacity: the CLI reports the 409.
    let mut args = v139.to_vec();
    let too_much = format!("rp={uuid},VCPU=15");
    args.extend([
        "resource",
        "provider",
        "allocation",
        "set",
        "1b3e0f5a-2c1d-4e8f-a7b6-c5d4e3f2a1b0",
        "--allocation",
        &too_much,
        "--project-id",
        project,
        "--user-id",
        user,
        "--consumer-type",
        "INSTANCE",
    ]);
    let (code, _, err) = cloud.openstack_raw(&cloud.admin(), &args).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("exceed the capacity"), "{err}");
    // A provider with allocations cannot be deleted.
    assert!(cloud.openstack(&["resource", "provider", "delete", &uuid]).await.is_err());
    cloud.openstack(&["resource", "provider", "allocation", "delete", consumer]).await.unwrap();
    let usage = os(&cloud, &["resource", "provider", "usage", "show", &uuid]).await;
    assert!(rows(&usage).iter().all(|r| r["usage"] == 0), "{usage}");

    // Delete child then parent.
    let child_uuid = child["uuid"].as_str().unwrap();
    cloud.openstack(&["resource", "provider", "delete", child_uuid]).await.unwrap();
    cloud.openstack(&["resource", "provider", "delete", &uuid]).await.unwrap();
    let list = os(&cloud, &["resource", "provider", "list"]).await;
    assert!(rows(&list).is_empty());
    cloud.shutdown().await;
}
