//! The shared plumbing, exercised through real routers in several service families:
//! faults, 400/413/415/404/405, panics, microversions, request ids, pagination SQL.

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::{json, Value};
use stratus_core::fault::FaultFormat;
use stratus_core::pagination::{next_href, split_page, PageSpec, SortDir};
use stratus_core::stack::service_stack;
use stratus_core::{request_id, ApiVersion, MicroversionSpec, OsJson, QueryPairs};
use tower::ServiceExt;

const SPEC: MicroversionSpec = MicroversionSpec {
    service_type: "compute",
    legacy_header: Some("x-openstack-nova-api-version"),
    min: ApiVersion::new(2, 1),
    max: ApiVersion::new(2, 96),
};

async fn echo(OsJson(v): OsJson<Value>) -> Json<Value> {
    Json(v)
}

async fn boom() -> &'static str {
    panic!("deliberate test panic")
}

async fn version(v: ApiVersion) -> String {
    v.to_string()
}

fn app(format: FaultFormat, versions: Option<MicroversionSpec>) -> Router {
    let routes = Router::new()
        .route("/echo", post(echo))
        .route("/boom", get(boom))
        .route("/version", get(version))
        .layer(DefaultBodyLimit::max(64));
    Router::new().nest("/svc", service_stack(routes, format, versions)).layer(middleware::from_fn(request_id::assign))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post_json(path: &str, ctype: Option<&str>, body: &'static str) -> Request<Body> {
    let mut b = Request::post(path);
    if let Some(c) = ctype {
        b = b.header("content-type", c);
    }
    b.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn client_mistakes_are_4xx_in_each_family() {
    for (format, key) in
        [(FaultFormat::Nova, "badRequest"), (FaultFormat::Keystone, "error"), (FaultFormat::Neutron, "NeutronError")]
    {
        let app = app(format, None);
        let (s, h, b) = send(&app, post_json("/svc/echo", Some("application/json"), "{\"a\": ")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{format:?}");
        assert!(h.get("x-openstack-request-id").is_some());
        let text = b.to_string();
        assert!(b.get(key).is_some(), "{format:?}: {b}");
        assert!(text.contains("line 1 column"), "parser position in {text}");

        let (s, _, b) = send(&app, post_json("/svc/echo", Some("text/plain"), "{}")).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{format:?} {b}");

        let big = Box::leak(format!("{{\"x\": \"{}\"}}", "a".repeat(200)).into_boxed_str());
        let (s, _, b) = send(&app, post_json("/svc/echo", Some("application/json"), big)).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{format:?} {b}");

        let (s, _, b) = send(&app, Request::get("/svc/nothing-here").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(b.to_string().contains("/svc/nothing-here"), "{b}");

        let (s, _, b) = send(&app, Request::delete("/svc/echo").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
        assert!(b.is_object(), "405 has a fault body: {b}");

        let (s, _, b) = send(&app, post_json("/svc/echo", Some("application/json"), "{\"ok\": 1}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, json!({"ok": 1}));
    }
}

#[tokio::test]
async fn a_panic_is_a_500_fault_and_the_router_keeps_serving() {
    for format in [FaultFormat::Nova, FaultFormat::Placement] {
        let app = app(format, None);
        let (s, h, b) = send(&app, Request::get("/svc/boom").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        let id = h.get("x-openstack-request-id").unwrap().to_str().unwrap().to_string();
        if format == FaultFormat::Nova {
            assert_eq!(b["computeFault"]["code"], 500);
        } else {
            assert_eq!(b["errors"][0]["request_id"], id.as_str());
        }
        let (s, _, _) = send(&app, post_json("/svc/echo", Some("application/json"), "{}")).await;
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test]
async fn microversions_are_negotiated_and_echoed() {
    let app = app(FaultFormat::Nova, Some(SPEC));
    let req = |h: &'static str, v: &'static str| Request::get("/svc/version").header(h, v).body(Body::empty()).unwrap();
    let r = app.clone().oneshot(req("openstack-api-version", "compute 2.60")).await.unwrap();
    assert_eq!(r.headers()["openstack-api-version"], "compute 2.60");
    assert_eq!(r.headers()["x-openstack-nova-api-version"], "2.60");
    let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"2.60");
    let (s, _, b) = send(&app, req("x-openstack-nova-api-version", "2.200")).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(b["notAcceptable"]["code"], 406);
    let (s, _, _) = send(&app, req("openstack-api-version", "compute latest")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = send(&app, req("openstack-api-version", "compute 2.1.1")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

const PAGE: PageSpec = PageSpec {
    sort_keys: &[("name", "name"), ("size", "size")],
    default_sort: &[("name", SortDir::Asc)],
    default_limit: 3,
    max_limit: 3,
};

#[tokio::test]
async fn keyset_pagination_visits_every_row_once_on_sqlite() {
    use sqlx::Row;
    use stratus_db::{Arg, Db, Query};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/p.db", dir.path().display())).await.unwrap();
    sqlx::raw_sql("CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL, size BIGINT NOT NULL)")
        .execute(db.reader())
        .await
        .unwrap();
    // Duplicate sort values force the id tiebreaker to matter.
    for i in 0..10i64 {
        let mut q = Query::new("INSERT INTO items (id, name, size) VALUES (");
        q.bind(format!("id{i:02}")).push(", ").bind(format!("n{}", i % 4)).push(", ").bind(i % 3).push(")");
        q.execute(db.reader()).await.unwrap();
    }
    for qs in ["sort_key=name&sort_dir=desc", "sort_key=size&sort_key=name&sort_dir=asc&sort_dir=desc", ""] {
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..10 {
            let mut pairs = stratus_core::query::parse_pairs(qs).unwrap();
            if let Some(m) = &marker {
                pairs.push(("marker".into(), m.clone()));
            }
            let page = PAGE.parse(&QueryPairs(pairs)).unwrap();
            let mut q = Query::new("SELECT id, name, size FROM items WHERE 1 = 1");
            if let Some(m) = &page.marker {
                let mut mq = Query::new("SELECT name, size FROM items WHERE id = ");
                mq.bind(m.clone());
                let row = mq.fetch_optional(db.reader()).await.unwrap().unwrap();
                let mut vals = Vec::new();
                for k in &page.sort {
                    vals.push(if k.column == "name" {
                        Arg::from(row.get::<String, _>("name"))
                    } else {
                        Arg::from(row.get::<i64, _>("size"))
                    });
                }
                vals.push(Arg::from(m.clone()));
                page.push_after_marker(&mut q, "id", &vals);
            }
            page.push_order_by(&mut q, "id");
            page.push_limit_plus_one(&mut q);
            let rows = q.fetch_all(db.reader()).await.unwrap();
            let (rows, more) = split_page(rows, page.limit);
            for r in &rows {
                seen.push(r.get::<String, _>("id"));
            }
            if !more {
                break;
            }
            marker = seen.last().cloned();
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10, "{qs}: every row exactly once, got {seen:?}");
        assert_eq!(seen.len(), 10, "{qs}: no duplicates, got {seen:?}");
    }
    let href = next_href("http://x/compute", "/v2.1/servers", &QueryPairs(vec![("limit".into(), "2".into())]), "id03");
    assert_eq!(href, "http://x/compute/v2.1/servers?limit=2&marker=id03");
    db.close().await;
}
