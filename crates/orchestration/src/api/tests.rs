//! The API through its router, with a stub token validator (three users in two
//! projects) and only the stack-local resource types, so that no other service is
//! needed: canonical URLs and redirects, Heat's fault bodies, policy and project
//! isolation, outputs, resources, events with paging, validation, and deletion.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use stratus_auth::AuthState;
use stratus_core::internal::InternalClient;
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use tower::ServiceExt;

use crate::{OrchestrationService, Registry};

struct Tokens;

#[async_trait]
impl TokenValidator for Tokens {
    async fn validate(&self, token: &str) -> Result<RequestContext, AuthFailure> {
        let (project, roles): (&str, &[&str]) = match token {
            "alice" => ("pa", &["member", "reader"]),
            "bob" => ("pb", &["member", "reader"]),
            "reader" => ("pa", &["reader"]),
            _ => return Err(AuthFailure::Invalid("unknown token".into())),
        };
        Ok(RequestContext {
            user_id: format!("u-{token}"),
            user_name: token.into(),
            project_id: Some(project.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        })
    }
}

const BASE: &str = "http://127.0.0.1:9/orchestration";

async fn api() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = stratus_db::Db::connect(&format!("sqlite://{}/heat.db", dir.path().display())).await.unwrap();
    let platform = Platform {
        db,
        bus: Arc::new(stratus_bus::InProcBus::new()),
        public_url: "http://127.0.0.1:9".into(),
        data_dir: dir.path().to_path_buf(),
        host: "test".into(),
        internal: InternalClient::default(),
        region: "RegionOne".into(),
    };
    let auth = AuthState { validator: Arc::new(Tokens), identity_uri: "http://127.0.0.1:9/identity".into() };
    let svc = OrchestrationService::start_with_registry(platform, auth, Default::default(), Registry::standard())
        .await
        .unwrap();
    (svc.router(), dir)
}

async fn call(
    r: &Router,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(path).header("x-auth-token", token);
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = r.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn location(h: &HeaderMap) -> String {
    h.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

const TEMPLATE: &str = r#"
heat_template_version: 2018-08-31
description: two values
parameters:
  word: {type: string, default: hello}
  secret: {type: string, hidden: true, default: pssst}
resources:
  rand: {type: OS::Heat::RandomString, properties: {length: 8}}
  val:
    type: OS::Heat::Value
    properties:
      value: {list_join: [' ', [{get_param: word}, {get_attr: [rand, value]}]]}
outputs:
  joined: {value: {get_attr: [val, value]}, description: the words}
  rand: {value: {get_resource: rand}}
"#;

fn template() -> Value {
    serde_yaml::from_str(TEMPLATE).unwrap()
}

/// Waits until `path` shows the stack in `want`.
async fn wait(r: &Router, path: &str, want: &str) -> Value {
    for _ in 0..200 {
        let (st, _, v) = call(r, Method::GET, path, "alice", None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["stack"]["stack_status"] == want {
            return v["stack"].clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never reached {want}");
}

#[tokio::test]
async fn stack_lifecycle_through_the_api() {
    let (r, _dir) = api().await;
    let body = json!({"stack_name": "s1", "template": template(), "parameters": {"word": "hi"}});
    let (st, h, v) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["stack"]["id"].as_str().unwrap().to_string();
    let canonical = format!("{BASE}/v1/pa/stacks/s1/{id}");
    assert_eq!(location(&h), canonical);
    assert_eq!(v["stack"]["links"][0], json!({"href": canonical, "rel": "self"}));

    // Lookups by name and by id redirect to the canonical URL, children and query kept.
    let (st, h, _) = call(&r, Method::GET, "/v1/pa/stacks/s1", "alice", None).await;
    assert_eq!((st, location(&h)), (StatusCode::FOUND, canonical.clone()));
    let (st, h, _) = call(&r, Method::GET, &format!("/v1/pa/stacks/{id}/events?sort_dir=asc"), "alice", None).await;
    assert_eq!((st, location(&h)), (StatusCode::FOUND, format!("{canonical}/events?sort_dir=asc")));

    let path = format!("/v1/pa/stacks/s1/{id}");
    let stack = wait(&r, &path, "CREATE_COMPLETE").await;
    assert_eq!(stack["stack_name"], "s1");
    assert_eq!(stack["description"], "two values");
    assert_eq!(stack["disable_rollback"], true, "Heat's default");
    assert_eq!(stack["parameters"]["secret"], "******");
    assert_eq!(stack["parameters"]["OS::stack_id"], json!(id));
    let outputs = stack["outputs"].as_array().unwrap();
    let joined = outputs.iter().find(|o| o["output_key"] == "joined").unwrap();
    let rand =
        outputs.iter().find(|o| o["output_key"] == "rand").unwrap()["output_value"].as_str().unwrap().to_string();
    assert_eq!(rand.len(), 8);
    assert_eq!(joined["output_value"], json!(format!("hi {rand}")));
    assert_eq!(joined["description"], "the words");
    let (st, _, v) = call(&r, Method::GET, &format!("{path}?resolve_outputs=false"), "alice", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["stack"].get("outputs").is_none());

    let (_, _, v) = call(&r, Method::GET, &format!("{path}/outputs/joined"), "alice", None).await;
    assert_eq!(v["output"]["output_value"], json!(format!("hi {rand}")));
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/outputs"), "alice", None).await;
    assert_eq!(v["outputs"].as_array().unwrap().len(), 2);
    let (st, _, v) = call(&r, Method::GET, &format!("{path}/outputs/nope"), "alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["type"], "EntityNotFound", "{v}");
    assert_eq!(v["error"]["message"], "The Output (nope) could not be found.");

    let (_, _, v) = call(&r, Method::GET, &format!("{path}/resources"), "alice", None).await;
    let res = v["resources"].as_array().unwrap();
    assert_eq!(res.len(), 2);
    let rand_res = res.iter().find(|x| x["resource_name"] == "rand").unwrap();
    assert_eq!(rand_res["resource_status"], "CREATE_COMPLETE");
    assert_eq!(rand_res["required_by"], json!(["val"]));
    assert_eq!(rand_res["links"][1]["rel"], "stack");
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/resources/rand"), "alice", None).await;
    assert_eq!(v["resource"]["attributes"]["value"], json!(rand));
    let (st, _, _) = call(&r, Method::GET, &format!("{path}/resources/nope"), "alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Events: stack events identify the stack as heatclient checks, and page by marker.
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/events"), "alice", None).await;
    let events = v["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 6);
    let last = events.last().unwrap();
    assert_eq!(
        (last["resource_name"].as_str(), last["resource_status"].as_str()),
        (Some("s1"), Some("CREATE_COMPLETE"))
    );
    assert_eq!(last["physical_resource_id"], json!(id));
    let stack_link = last["links"].as_array().unwrap().iter().find(|l| l["rel"] == "stack").unwrap();
    assert!(stack_link["href"].as_str().unwrap().ends_with(&id));
    let marker = events[1]["id"].as_str().unwrap();
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/events?marker={marker}&limit=2"), "alice", None).await;
    assert_eq!(
        v["events"].as_array().unwrap().iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
        vec![events[2]["id"].clone(), events[3]["id"].clone()]
    );
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/events?sort_dir=desc&limit=1"), "alice", None).await;
    assert_eq!(v["events"][0]["id"], last["id"]);
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/resources/rand/events"), "alice", None).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/template"), "alice", None).await;
    assert_eq!(v, template());

    // Another project sees nothing; a token of another project cannot use this URL; a
    // reader cannot create.
    let (_, _, v) = call(&r, Method::GET, "/v1/pb/stacks", "bob", None).await;
    assert_eq!(v["stacks"], json!([]));
    let (st, _, _) = call(&r, Method::GET, "/v1/pb/stacks/s1", "bob", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = call(&r, Method::GET, &format!("/v1/pb/stacks/s1/{id}"), "bob", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, v) = call(&r, Method::GET, "/v1/pa/stacks", "bob", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _, _) =
        call(&r, Method::POST, "/v1/pa/stacks", "reader", Some(json!({"stack_name": "r", "template": template()})))
            .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = call(&r, Method::GET, "/v1/pa/stacks", "nobody", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Same name again: 409 in Heat's format.
    let (st, _, v) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(body)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"]["type"], "StackExists");
    assert_eq!(v["error"]["message"], "The Stack (s1) already exists.");
    let (_, _, v) = call(&r, Method::GET, "/v1/pa/stacks", "alice", None).await;
    assert_eq!(v["stacks"].as_array().unwrap().len(), 1);
    // Updates: the preview of a new word says only the value changes (in place).
    let (_, _, before) = call(&r, Method::GET, &format!("{path}/outputs/rand"), "alice", None).await;
    let (st, _, v) =
        call(&r, Method::PATCH, &format!("{path}/preview"), "alice", Some(json!({"parameters": {"word": "bye"}})))
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let changes = &v["resource_changes"];
    assert_eq!(changes["updated"][0]["resource_name"], "val", "{v}");
    assert_eq!(changes["unchanged"][0]["resource_name"], "rand", "{v}");
    assert!(changes["replaced"].as_array().unwrap().is_empty() && changes["added"].as_array().unwrap().is_empty());
    // PATCH keeps the template and the other parameters.
    let (st, _, v) = call(&r, Method::PATCH, &path, "alice", Some(json!({"parameters": {"word": "bye"}}))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let shown = wait(&r, &path, "UPDATE_COMPLETE").await;
    assert_eq!(shown["parameters"]["word"], "bye");
    let (_, _, after) = call(&r, Method::GET, &format!("{path}/outputs/rand"), "alice", None).await;
    assert_eq!(after, before, "the random string was kept");
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/outputs/joined"), "alice", None).await;
    assert!(v["output"]["output_value"].as_str().unwrap().starts_with("bye "), "{v}");
    // PUT replaces the parameters: `word` returns to its default.
    let put = json!({"template": template()});
    let (st, _, _) = call(&r, Method::PUT, "/v1/pa/stacks/s1", "alice", Some(put)).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(wait(&r, &path, "UPDATE_COMPLETE").await["parameters"]["word"], "hello");
    // Bad updates are refused before anything changes.
    let (st, _, v) = call(&r, Method::PUT, &path, "alice", Some(json!({"parameters": {}}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("No template"), "{v}");
    let nope = json!({"template": {"heat_template_version": "2018-08-31", "resources": {"x": {"type": "OS::Nope"}}}});
    let (st, _, v) = call(&r, Method::PUT, &path, "alice", Some(nope)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("OS::Nope"), "{v}");
    let (st, _, v) = call(&r, Method::PATCH, &path, "alice", Some(json!({"parameters": {"nosuch": 1}}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _, _) = call(&r, Method::PATCH, &path, "reader", Some(json!({}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(wait(&r, &path, "UPDATE_COMPLETE").await["parameters"]["word"], "hello");
    // A resource marked unhealthy is replaced by the next update.
    let mark = json!({"mark_unhealthy": true, "resource_status_reason": "broken"});
    let (st, _, v) = call(&r, Method::PATCH, &format!("{path}/resources/rand"), "alice", Some(mark)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/resources/rand"), "alice", None).await;
    assert_eq!(v["resource"]["resource_status"], "CHECK_FAILED", "{v}");
    assert_eq!(v["resource"]["resource_status_reason"], "broken");
    let (st, _, _) = call(&r, Method::PATCH, &format!("{path}/resources/rand"), "alice", Some(json!({}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = call(&r, Method::PATCH, &path, "alice", Some(json!({}))).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    wait(&r, &path, "UPDATE_COMPLETE").await;
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/resources/rand"), "alice", None).await;
    assert_eq!(v["resource"]["resource_status"], "CREATE_COMPLETE", "replaced: {v}");
    let (_, _, replaced) = call(&r, Method::GET, &format!("{path}/outputs/rand"), "alice", None).await;
    assert_ne!(replaced, before, "a new random string");

    let (st, _, _) = call(&r, Method::DELETE, &path, "alice", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let gone = wait(&r, &path, "DELETE_COMPLETE").await;
    assert!(gone["deletion_time"].is_string());
    let (st, _, _) = call(&r, Method::GET, "/v1/pa/stacks/s1", "alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "deleted stacks are not found by name");
    let (_, _, v) = call(&r, Method::GET, "/v1/pa/stacks", "alice", None).await;
    assert_eq!(v["stacks"], json!([]));
    let (st, _, _) = call(&r, Method::DELETE, &path, "alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_get_heat_faults() {
    let (r, _dir) = api().await;
    let bad_ref = json!({"template": {
        "heat_template_version": "2018-08-31",
        "resources": {"v": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["nosuch", "value"]}}}},
    }});
    let (st, _, v) = call(&r, Method::POST, "/v1/pa/validate", "alice", Some(bad_ref.clone())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], 400);
    assert_eq!(v["title"], "Bad Request");
    assert_eq!(v["error"]["type"], "StackValidationFailed");
    assert_eq!(
        v["error"]["message"],
        "The specified reference \"nosuch\" (in resources.v.properties.value) is incorrect."
    );
    let mut create = bad_ref.clone();
    create["stack_name"] = json!("bad");
    let (st, _, _) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(create)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, v) =
        call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(json!({"stack_name": "9lives", "template": template()})))
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("must start with alpha"), "{v}");
    let needs = json!({"stack_name": "p", "template": {"heat_template_version": "2018-08-31", "parameters": {"n": {"type": "number"}}}});
    let (st, _, v) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(needs.clone())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["type"], "UserParameterMissing");
    // Validation describes parameters without needing their values.
    let (st, _, v) = call(&r, Method::POST, "/v1/pa/validate", "alice", Some(needs)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["Parameters"]["n"]["Type"], "Number");
    let (st, _, v) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(json!({"stack_name": "x"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["message"], "No template specified");
    let (_, _, v) = call(&r, Method::GET, "/v1/pa/stacks", "alice", None).await;
    assert_eq!(v["stacks"], json!([]), "nothing refused was recorded");

    let (_, _, v) = call(&r, Method::GET, "/v1/pa/resource_types", "alice", None).await;
    let types = v["resource_types"].as_array().unwrap();
    assert!(types.contains(&json!("OS::Nova::Server")) && types.contains(&json!("OS::Heat::RandomString")));
    let (_, _, v) = call(&r, Method::GET, "/v1/pa/resource_types/OS::Neutron::Port", "alice", None).await;
    assert_eq!(v["properties"]["network"]["required"], true);
    let (st, _, _) = call(&r, Method::GET, "/v1/pa/resource_types/OS::No::Such", "alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, _, v) = call(&r, Method::GET, "/v1/pa/template_versions", "alice", None).await;
    assert!(v["template_versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["version"] == "heat_template_version.2021-04-16"));
    let (_, _, v) = call(&r, Method::GET, "/v1/pa/build_info", "alice", None).await;
    assert!(v["api"]["revision"].is_string());
}

const WAIT: &str = r#"
heat_template_version: 2018-08-31
parameters:
  timeout: {type: number, default: 60}
resources:
  handle: {type: OS::Heat::WaitConditionHandle}
  wait:
    type: OS::Heat::WaitCondition
    properties:
      handle: {get_resource: handle}
      timeout: {get_param: timeout}
      count: 2
outputs:
  data: {value: {get_attr: [wait, data]}}
  curl: {value: {get_attr: [handle, curl_cli]}}
"#;

/// Posts `body` to a handle's endpoint with `token` (no Keystone token, as a guest).
async fn signal(r: &Router, endpoint: &str, token: &str, body: &str) -> StatusCode {
    let path = endpoint.strip_prefix(BASE).expect("the endpoint is under the service's URL");
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("x-auth-token", token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    r.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn a_wait_condition_completes_on_its_signals_and_times_out_without_them() {
    let (r, _dir) = api().await;
    let body = json!({"stack_name": "w", "template": serde_yaml::from_str::<Value>(WAIT).unwrap()});
    let (st, h, _) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    let path = location(&h).strip_prefix(BASE).unwrap().to_string();
    let mut handle = Value::Null;
    for _ in 0..200 {
        let (_, _, v) = call(&r, Method::GET, &format!("{path}/resources/handle"), "alice", None).await;
        if v["resource"]["resource_status"] == "CREATE_COMPLETE" {
            handle = v["resource"]["attributes"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (endpoint, token) = (handle["endpoint"].as_str().unwrap(), handle["token"].as_str().unwrap());
    assert!(handle["curl_cli"].as_str().unwrap().contains(endpoint), "{handle}");
    assert_eq!(signal(&r, endpoint, "wrong", "{}").await, StatusCode::FORBIDDEN);
    assert_eq!(signal(&r, endpoint, token, r#"{"status": "MAYBE"}"#).await, StatusCode::BAD_REQUEST);
    assert_eq!(signal(&r, endpoint, token, r#"{"status": "SUCCESS", "data": "one"}"#).await, StatusCode::OK);
    let (_, _, v) = call(&r, Method::GET, &path, "alice", None).await;
    assert_eq!(v["stack"]["stack_status"], "CREATE_IN_PROGRESS", "count 2: one signal is not enough");
    // The second signal from a user of the project, through the resource's signal API.
    let sig = format!("{path}/resources/handle/signal");
    let (st, _, _) = call(&r, Method::POST, &format!("{path}/resources/wait/signal"), "alice", Some(json!({}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "only handles take signals");
    let (st, _, _) = call(&r, Method::POST, &sig, "reader", Some(json!({}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, v) = call(&r, Method::POST, &sig, "alice", Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    wait(&r, &path, "CREATE_COMPLETE").await;
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/outputs/data"), "alice", None).await;
    let data: Value = serde_json::from_str(v["output"]["output_value"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"1": "one", "2": null}));
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/events"), "alice", None).await;
    assert!(v.to_string().contains("SIGNAL"), "signals are events: {v}");

    // No signal within the timeout: the stack fails, naming the timeout.
    let body = json!({"stack_name": "w2", "template": serde_yaml::from_str::<Value>(WAIT).unwrap(), "parameters": {"timeout": 1}});
    let (_, h, _) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(body)).await;
    let path = location(&h).strip_prefix(BASE).unwrap().to_string();
    let failed = wait(&r, &path, "CREATE_FAILED").await;
    assert!(failed["stack_status_reason"].as_str().unwrap().contains("WaitConditionTimeout"), "{failed}");
}

const CONFIGS: &str = r##"
heat_template_version: 2018-08-31
resources:
  script:
    type: OS::Heat::SoftwareConfig
    properties:
      group: script
      config: "#!/bin/sh\necho hello > /tmp/hello"
  cloud:
    type: OS::Heat::CloudConfig
    properties:
      cloud_config: {runcmd: [date]}
  both:
    type: OS::Heat::MultipartMime
    properties:
      parts:
        - config: {get_resource: script}
          filename: hello.sh
        - config: {get_resource: cloud}
        - config: "#cloud-boothook\necho early"
outputs:
  mime: {value: {get_attr: [both, config]}}
  cloud: {value: {get_attr: [cloud, config]}}
"##;

#[tokio::test]
async fn software_configs_are_combined_into_a_multipart_message() {
    let (r, _dir) = api().await;
    let body = json!({"stack_name": "cfg", "template": serde_yaml::from_str::<Value>(CONFIGS).unwrap()});
    let (st, h, _) = call(&r, Method::POST, "/v1/pa/stacks", "alice", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    let path = location(&h).strip_prefix(BASE).unwrap().to_string();
    wait(&r, &path, "CREATE_COMPLETE").await;
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/outputs/cloud"), "alice", None).await;
    let cloud = v["output"]["output_value"].as_str().unwrap().to_string();
    assert!(cloud.starts_with("#cloud-config\n") && cloud.contains("runcmd"), "{cloud}");
    let (_, _, v) = call(&r, Method::GET, &format!("{path}/outputs/mime"), "alice", None).await;
    let mime = v["output"]["output_value"].as_str().unwrap();
    assert!(mime.starts_with("Content-Type: multipart/mixed; boundary="), "{mime}");
    assert!(mime.contains("Content-Type: text/x-shellscript") && mime.contains("filename=\"hello.sh\""), "{mime}");
    assert!(mime.contains("echo hello > /tmp/hello"), "the script's text, not its id: {mime}");
    assert!(mime.contains("Content-Type: text/cloud-config") && mime.contains(&cloud), "{mime}");
    assert!(mime.contains("Content-Type: text/cloud-boothook"), "a literal part is used as it is: {mime}");
}
