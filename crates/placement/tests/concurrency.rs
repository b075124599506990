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
