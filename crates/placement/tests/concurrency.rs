//! Many concurrent claims against one small provider must never push usage above
//! `(total - reserved) * allocation_ratio`, on SQLite and on PostgreSQL. Losers of a
//! generation race get 409 `placement.concurrent_update` and retry, as schedulers do.

mod harness;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;
use stratus_db::sqlx::Row;

/// Capacity of the provider under test: (10 - 2) * 1.5 = 12 VCPU.
const CAPACITY: i64 = 12;

async fn hammer(h: harness::Harness) {
    let h = Arc::new(h);
    let rp = h.provider("small", None).await;
    h.inventory(&rp, &[("VCPU", 10, 2, 1.5), ("MEMORY_MB", 1024, 0, 1.0)]).await;
    let mut tasks = Vec::new();
    for i in 0..48i64 {
        let (h, rp) = (h.clone(), rp.clone());
        tasks.push(tokio::spawn(async move {
            let amt = 1 + i % 3;
            let consumer = uuid::Uuid::new_v4().to_string();
            let mut granted = 0i64;
            let mut conflicts = 0;
            for _attempt in 0..50 {
                let (s, v) = if i % 4 == 0 {
                    // Two consumers in one POST: all or nothing.
                    let other = uuid::Uuid::new_v4().to_string();
                    let body = json!({
                        consumer.clone(): {"allocations": {rp.clone(): {"resources": {"VCPU": amt}}}, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "INSTANCE"},
                        other: {"allocations": {rp.clone(): {"resources": {"VCPU": 1, "MEMORY_MB": 8}}}, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "MIGRATION"},
                    });
                    let r = h.call("POST", "/allocations", "1.38", Some(body)).await;
                    if r.0 == StatusCode::NO_CONTENT {
                        granted = amt + 1;
                    }
                    r
                } else {
                    let body = json!({"allocations": {rp.clone(): {"resources": {"VCPU": amt}}}, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "INSTANCE"});
                    let r = h.call("PUT", &format!("/allocations/{consumer}"), "1.38", Some(body)).await;
                    if r.0 == StatusCode::NO_CONTENT {
                        granted = amt;
                    }
                    r
                };
                match s {
                    StatusCode::NO_CONTENT => break,
                    StatusCode::CONFLICT if v["errors"][0]["code"] == "placement.concurrent_update" => {
                        conflicts += 1;
                        tokio::task::yield_now().await;
                    }
                    StatusCode::CONFLICT => break, // capacity exceeded: a correct refusal
                    other => panic!("unexpected {other}: {v}"),
                }
            }
            (granted, conflicts)
        }));
    }
    let (mut granted, mut conflicts) = (0, 0);
    for t in tasks {
        let (g, c) = t.await.unwrap();
        granted += g;
        conflicts += c;
    }
    eprintln!("granted {granted} VCPU of {CAPACITY}; {conflicts} generation conflicts retried");
    // The database: never above capacity, and exactly what was granted.
    let row = stratus_db::sqlx::query(
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM placement_allocations WHERE provider_uuid = $1 AND resource_class = 'VCPU'",
    )
    .bind(&rp)
    .fetch_one(h.db.reader())
    .await
    .unwrap();
    let used: i64 = row.get(0);
    assert!(used <= CAPACITY, "over-committed: {used} > {CAPACITY}");
    assert_eq!(used, granted, "granted claims and stored usage differ");
    assert!(used >= CAPACITY - 2, "48 claimants should fill the provider, used {used}");
    // The API and the read model agree with the database.
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/usages"), "1.38", None).await;
    assert_eq!(v["usages"]["VCPU"], used);
    let (_, v) = h.call("GET", "/allocation_candidates?resources=VCPU:1", "1.38", None).await;
    let n = v["allocation_requests"].as_array().unwrap().len();
    assert_eq!(n, usize::from(used < CAPACITY), "{v}");
    if n == 0 {
        // Full: a candidate query must say so, and summaries must not be stale.
        let (_, v) = h.call("GET", &format!("/resource_providers?resources=VCPU:1&in_tree={rp}"), "1.38", None).await;
        assert_eq!(v["resource_providers"].as_array().unwrap().len(), 0);
    }

    // Second round: churn (delete + re-claim) under concurrency keeps the invariant.
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/allocations"), "1.38", None).await;
    let consumers: Vec<String> = v["allocations"].as_object().unwrap().keys().cloned().collect();
    let mut tasks = Vec::new();
    for (i, c) in consumers.into_iter().enumerate() {
        let (h, rp) = (h.clone(), rp.clone());
        tasks.push(tokio::spawn(async move {
            let (s, _) = h.call("DELETE", &format!("/allocations/{c}"), "1.38", None).await;
            assert_eq!(s, StatusCode::NO_CONTENT);
            let amt = 1 + (i as i64) % 4;
            for _ in 0..50 {
                let body = json!({"allocations": {rp.clone(): {"resources": {"VCPU": amt}}}, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "INSTANCE"});
                let (s, v) = h.call("PUT", &format!("/allocations/{}", uuid::Uuid::new_v4()), "1.38", Some(body)).await;
                if !(s == StatusCode::CONFLICT && v["errors"][0]["code"] == "placement.concurrent_update") {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let row = stratus_db::sqlx::query(
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM placement_allocations WHERE provider_uuid = $1 AND resource_class = 'VCPU'",
    )
    .bind(&rp)
    .fetch_one(h.db.reader())
    .await
    .unwrap();
    let used: i64 = row.get(0);
    assert!(used <= CAPACITY, "over-committed after churn: {used}");
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/usages"), "1.38", None).await;
    assert_eq!(v["usages"]["VCPU"], used);
    let idx_used = h.svc.state().index.read().get(&rp).unwrap().used("VCPU");
    assert_eq!(idx_used, used, "read model drifted from the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_claims_never_overcommit_sqlite() {
    hammer(harness::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_claims_never_overcommit_postgres() {
    hammer(harness::postgres().await).await;
}

/// Claims for new consumers are written in batches (group commit); each claim of a batch
/// must still be all-or-nothing with its own answer: exactly the claims that fit succeed,
/// a claim naming a missing provider or class fails alone (400) without consuming
/// anything, a consumer claimed twice at once is granted once (the other gets 409
/// `placement.concurrent_update`), and the read model ends equal to the database.
async fn batch_semantics(h: harness::Harness) {
    let h = Arc::new(h);
    let rp = h.provider("batched", None).await;
    // 10 claims of MEMORY_MB 100 fit in 1024; VCPU (12) is not the limit.
    h.inventory(&rp, &[("VCPU", 10, 2, 1.5), ("MEMORY_MB", 1024, 0, 1.0)]).await;
    // The twins claim a roomy provider: only their shared consumer can refuse one of them.
    let roomy = h.provider("roomy", None).await;
    h.inventory(&roomy, &[("VCPU", 64, 0, 1.0)]).await;
    let twin = uuid::Uuid::new_v4().to_string();
    let missing = uuid::Uuid::new_v4().to_string();
    let mut tasks = Vec::new();
    for i in 0..60usize {
        let (h, rp, twin, missing, roomy) = (h.clone(), rp.clone(), twin.clone(), missing.clone(), roomy.clone());
        tasks.push(tokio::spawn(async move {
            let consumer = if i < 2 { twin } else { uuid::Uuid::new_v4().to_string() };
            let mut res = json!({rp.clone(): {"resources": {"VCPU": 1, "MEMORY_MB": 100}}});
            if i < 2 {
                res = json!({roomy: {"resources": {"VCPU": 1}}});
            }
            match i % 10 {
                // A provider that does not exist: the whole claim is refused, nothing kept.
                3 => res[missing] = json!({"resources": {"VCPU": 1}}),
                // A class the provider has no inventory of: 409, nothing kept.
                7 => res[rp.clone()]["resources"]["DISK_GB"] = json!(1),
                _ => {}
            }
            let body = json!({"allocations": res, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "INSTANCE"});
            let (s, v) = h.call("PUT", &format!("/allocations/{consumer}"), "1.38", Some(body)).await;
            (i, s, v)
        }));
    }
    let (mut ok, mut twins_ok, mut twins_conflict) = (0, 0, 0);
    for t in tasks {
        let (i, s, v) = t.await.unwrap();
        match (i % 10, s) {
            (3, s) => assert_eq!(s, StatusCode::BAD_REQUEST, "claim {i}: {v}"),
            (7, s) => assert_eq!(s, StatusCode::CONFLICT, "claim {i}: {v}"),
            (_, StatusCode::NO_CONTENT) if i < 2 => twins_ok += 1,
            (_, StatusCode::NO_CONTENT) => ok += 1,
            (_, StatusCode::CONFLICT) if i < 2 && v["errors"][0]["code"] == "placement.concurrent_update" => {
                twins_conflict += 1
            }
            (_, StatusCode::CONFLICT) => assert!(
                v["errors"][0]["detail"].as_str().unwrap_or("").contains("exceed the capacity"),
                "claim {i}: {v}"
            ),
            (_, s) => panic!("claim {i}: unexpected {s}: {v}"),
        }
    }
    // Only capacity limits the well-formed claims; one twin wins unless capacity refused it.
    assert_eq!(ok, 10, "exactly the 10 claims that fit succeed (twins {twins_ok} ok, {twins_conflict} refused)");
    assert_eq!((twins_ok, twins_conflict), (1, 1), "one consumer claimed twice at once: granted once, refused once");
    let row = stratus_db::sqlx::query(
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT), COUNT(DISTINCT consumer_uuid) FROM placement_allocations WHERE provider_uuid = $1 AND resource_class = 'MEMORY_MB'",
    )
    .bind(&rp)
    .fetch_one(h.db.reader())
    .await
    .unwrap();
    let (used, consumers): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((used, consumers), (1000, 10));
    let vcpu = stratus_db::sqlx::query(
        "SELECT CAST(COALESCE(SUM(used), 0) AS BIGINT) FROM placement_allocations WHERE provider_uuid = $1 AND resource_class = 'VCPU'",
    )
    .bind(&rp)
    .fetch_one(h.db.reader())
    .await
    .unwrap()
    .get::<i64, _>(0);
    assert_eq!(vcpu, 10, "a refused claim left allocations behind");
    let orphans = stratus_db::sqlx::query(
        "SELECT COUNT(*) FROM placement_consumers c WHERE NOT EXISTS (SELECT 1 FROM placement_allocations a WHERE a.consumer_uuid = c.uuid)",
    )
    .fetch_one(h.db.reader())
    .await
    .unwrap()
    .get::<i64, _>(0);
    assert_eq!(orphans, 0, "a refused claim left its consumer behind");
    let idx = h.svc.state().index.read().get(&rp).unwrap().clone();
    assert_eq!((idx.used("MEMORY_MB"), idx.used("VCPU")), (1000, 10), "read model drifted from the database");
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}"), "1.38", None).await;
    assert_eq!(v["generation"], idx.generation, "read model generation differs from the database");
    // A claim for an existing consumer with consumer_generation null is a 409.
    let (_, v) = h.call("GET", &format!("/resource_providers/{rp}/allocations"), "1.38", None).await;
    let c = v["allocations"].as_object().unwrap().keys().next().unwrap().clone();
    let body = json!({"allocations": {rp.clone(): {"resources": {"VCPU": 1}}}, "project_id": "p", "user_id": "u", "consumer_generation": null, "consumer_type": "INSTANCE"});
    let (s, v) = h.call("PUT", &format!("/allocations/{c}"), "1.38", Some(body)).await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (StatusCode::CONFLICT, Some("placement.concurrent_update")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn batched_claims_each_all_or_nothing_sqlite() {
    batch_semantics(harness::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn batched_claims_each_all_or_nothing_postgres() {
    batch_semantics(harness::postgres().await).await;
}
