//! The engine against a real (SQLite) database with a recording resource type: creation
//! order and parallelism limits, values passed between resources, events, rollback on a
//! failure at each resource, `disable_rollback`, deletion in reverse order, and
//! recovery of a creation interrupted by a crash.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use stratus_core::internal::InternalClient;
use stratus_core::{Platform, RequestContext};

use crate::engine::{self, state::*};
use crate::resources::{Created, Cx, Prop, Registry, ResourceType};
use crate::store::{self, EventFilter, StackRow};
use crate::template::{Pseudo, Template};
use crate::{OrchestrationService, S};

/// Records every create and delete; fails creating the resources named in `fail`.
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    fail: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl ResourceType for Recorder {
    fn name(&self) -> &'static str {
        "Test::Recorder"
    }
    fn description(&self) -> &'static str {
        "records calls"
    }
    fn props(&self) -> Option<&'static [Prop]> {
        None
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["out"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let id = format!("phys-{}", cx.resource_name);
        cx.started(&id).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.log.lock().push(format!("create:{}", cx.resource_name));
        if self.fail.lock().contains(&cx.resource_name) {
            return Err(format!("BadRequest: resources.{}: injected failure", cx.resource_name));
        }
        Ok(Created { physical_id: id, ref_id: None, attributes: json!({"out": props.get("in").cloned()}) })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        assert_eq!(id, format!("phys-{}", cx.resource_name));
        self.log.lock().push(format!("delete:{}", cx.resource_name));
        Ok(())
    }
}

pub(crate) struct Env {
    pub(crate) st: S,
    log: Arc<Mutex<Vec<String>>>,
    fail: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// The engine on a fresh SQLite database with the standard types, the recorder, and
/// whatever `more` adds (the update tests' own type).
pub(crate) async fn env_with(more: impl FnOnce(&mut Registry)) -> Env {
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
    let log = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(Mutex::new(Vec::new()));
    let mut reg = Registry::standard();
    reg.add(Arc::new(Recorder { log: log.clone(), fail: fail.clone() }));
    more(&mut reg);
    let st = OrchestrationService::state(platform, Default::default(), reg).await.unwrap();
    Env { st, log, fail, _dir: dir }
}

/// a ← b ← c (values flow along), d independent, e a Heat value of c's output.
const TPL: &str = r#"
heat_template_version: 2018-08-31
resources:
  a: {type: Test::Recorder, properties: {in: 1}}
  b: {type: Test::Recorder, properties: {in: {get_attr: [a, out]}}}
  c: {type: Test::Recorder, properties: {in: {list_join: ['-', [{get_resource: b}, x]]}}}
  d: {type: Test::Recorder, properties: {in: 4}}
  e: {type: OS::Heat::Value, properties: {value: {get_attr: [c, out]}}}
outputs:
  e: {value: {get_attr: [e, value]}}
  b_ref: {value: {get_resource: b}}
"#;

/// Records a stack as the API does, in `CREATE IN_PROGRESS`.
async fn record(st: &S, name: &str, disable_rollback: bool) -> StackRow {
    record_with(st, name, TPL, disable_rollback).await
}

/// Records a stack of template `text` as the API does, in `CREATE IN_PROGRESS`.
pub(crate) async fn record_with(st: &S, name: &str, text: &str, disable_rollback: bool) -> StackRow {
    let template: Value = serde_yaml::from_str(text).unwrap();
    let tpl = Template::parse(&template).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let pseudo = Pseudo { stack_name: name.into(), stack_id: id.clone(), project_id: "p".into() };
    let checked = tpl.check(&Map::new(), &Map::new(), &st.registry, &pseudo).unwrap();
    let row = StackRow {
        id: id.clone(),
        name: name.into(),
        project_id: "p".into(),
        user_id: "u".into(),
        action: CREATE.into(),
        status: IN_PROGRESS.into(),
        status_reason: "Stack CREATE started".into(),
        description: String::new(),
        template,
        files: json!({}),
        environment: json!({}),
        parameters: json!({}),
        disable_rollback,
        timeout_mins: None,
        tags: None,
        context: RequestContext { project_id: Some("p".into()), ..Default::default() },
        created_at: stratus_core::time::now(),
        updated_at: None,
        deleted_at: None,
        previous: None,
        parent_id: None,
    };
    let res: Vec<(String, String)> =
        checked.enabled.iter().map(|r| (r.clone(), tpl.resources[r].type_name.clone())).collect();
    store::insert_stack(&st.db, &row, &res).await.unwrap();
    row
}

pub(crate) async fn status(st: &S, id: &str) -> String {
    let s = store::stack(&st.db, id).await.unwrap().unwrap();
    format!("{}_{}", s.action, s.status)
}

async fn resource_states(st: &S, id: &str) -> Vec<(String, String, Option<String>)> {
    store::resources(&st.db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, format!("{}_{}", r.action, r.status), r.physical_id))
        .collect()
}

fn pos(log: &[String], entry: &str) -> usize {
    log.iter().position(|x| x == entry).unwrap_or_else(|| panic!("{entry} not in {log:?}"))
}

#[tokio::test]
async fn creates_in_dependency_order_with_values_and_events() {
    let e = env().await;
    let s = record(&e.st, "ok", true).await;
    engine::run_create(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "CREATE_COMPLETE");
    let log = e.log.lock().clone();
    assert!(pos(&log, "create:a") < pos(&log, "create:b") && pos(&log, "create:b") < pos(&log, "create:c"), "{log:?}");
    assert!(resource_states(&e.st, &s.id).await.iter().all(|r| r.1 == "CREATE_COMPLETE"));
    let outs = engine::outputs(&e.st, &s).await;
    let get = |k: &str| outs.iter().find(|o| o.0 == k).unwrap().2.clone().unwrap();
    assert_eq!(get("b_ref"), json!("phys-b"));
    assert_eq!(get("e"), json!("phys-b-x"), "c's input was b's reference joined, and e took c's output");
    // Events: the stack's start and end around two per resource, in order.
    let ev = store::events(&e.st.db, &s.id, &EventFilter::default()).await.unwrap();
    assert_eq!(ev.len(), 2 + 2 * 5);
    assert_eq!((ev[0].resource_name.as_str(), ev[0].status.as_str()), ("ok", IN_PROGRESS));
    let last = ev.last().unwrap();
    assert_eq!(
        (last.resource_name.as_str(), last.status.as_str(), last.physical_id.as_str()),
        ("ok", COMPLETE, s.id.as_str())
    );
    let seqs: Vec<i64> = ev.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let c_events: Vec<String> = ev.iter().filter(|x| x.resource_name == "c").map(|x| x.status.clone()).collect();
    assert_eq!(c_events, vec![IN_PROGRESS, COMPLETE]);
    let f = EventFilter { marker: Some(ev[3].id.clone()), limit: Some(2), ..Default::default() };
    let page = store::events(&e.st.db, &s.id, &f).await.unwrap();
    assert_eq!(page.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![ev[4].seq, ev[5].seq]);

    // Delete: reverse order, everything deleted, the stack marked deleted.
    store::set_stack_state(&e.st.db, &s, DELETE, IN_PROGRESS, "Stack DELETE started", false).await.unwrap();
    engine::run_delete(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "DELETE_COMPLETE");
    assert!(store::stack(&e.st.db, &s.id).await.unwrap().unwrap().deleted_at.is_some());
    let log = e.log.lock().clone();
    assert!(pos(&log, "delete:c") < pos(&log, "delete:b") && pos(&log, "delete:b") < pos(&log, "delete:a"), "{log:?}");
    assert!(log.contains(&"delete:d".to_string()));
    assert!(resource_states(&e.st, &s.id).await.iter().all(|r| r.1 == "DELETE_COMPLETE"));
}

#[tokio::test]
async fn a_failure_at_any_resource_rolls_back_everything_made() {
    for failing in ["a", "b", "c", "d"] {
        let e = env().await;
        e.fail.lock().push(failing.to_string());
        let s = record(&e.st, "rb", false).await;
        engine::run_create(e.st.clone(), s.id.clone()).await;
        assert_eq!(status(&e.st, &s.id).await, "ROLLBACK_COMPLETE", "failing {failing}");
        let log = e.log.lock().clone();
        // Everything whose creation started (and so was recorded) was deleted, nothing else.
        for entry in &log {
            if let Some(r) = entry.strip_prefix("create:") {
                assert!(log.contains(&format!("delete:{r}")), "{r} was created but not deleted: {log:?}");
            }
        }
        let states = resource_states(&e.st, &s.id).await;
        assert!(states.iter().filter(|r| r.0 != "e").all(|r| r.1 == "DELETE_COMPLETE"), "{states:?}");
        let ev = store::events(&e.st.db, &s.id, &EventFilter::default()).await.unwrap();
        let stack_states: Vec<String> =
            ev.iter().filter(|x| x.resource_name == "rb").map(|x| format!("{}_{}", x.action, x.status)).collect();
        assert_eq!(stack_states, ["CREATE_IN_PROGRESS", "CREATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"]);
        let failed = ev.iter().find(|x| x.resource_name == failing && x.status == FAILED).expect("failure event");
        assert!(failed.status_reason.contains("injected failure"));
        let reason = ev.iter().find(|x| x.resource_name == "rb" && x.status == FAILED).unwrap();
        assert!(reason.status_reason.starts_with("Resource CREATE failed: BadRequest"), "{}", reason.status_reason);
    }
}

#[tokio::test]
async fn disable_rollback_keeps_what_was_made_until_deleted() {
    let e = env().await;
    e.fail.lock().push("c".into());
    let s = record(&e.st, "keep", true).await;
    engine::run_create(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "CREATE_FAILED");
    assert!(!e.log.lock().iter().any(|x| x.starts_with("delete:")));
    let states = resource_states(&e.st, &s.id).await;
    let c = states.iter().find(|r| r.0 == "c").unwrap();
    assert_eq!((c.1.as_str(), c.2.as_deref()), ("CREATE_FAILED", Some("phys-c")), "tracked although it failed");
    let e_state = states.iter().find(|r| r.0 == "e").unwrap();
    assert_eq!(e_state.1, "INIT_COMPLETE", "what depends on the failure never started");
    let s = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    engine::start_delete(&e.st, &s).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(&e.st, &s.id).await != "DELETE_COMPLETE" {
        assert!(tokio::time::Instant::now() < deadline, "stuck at {}", status(&e.st, &s.id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = e.log.lock().clone();
    for r in ["a", "b", "c", "d"] {
        assert!(log.contains(&format!("delete:{r}")), "{r}: {log:?}");
    }
}

#[tokio::test]
async fn a_creation_interrupted_by_a_crash_is_failed_and_rolled_back() {
    let e = env().await;
    let s = record(&e.st, "crash", false).await;
    // The crash: `a` was made and recorded, `b` was being created (recorded, no answer).
    let rows = store::resources(&e.st.db, &s.id).await.unwrap();
    let row = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
    let upd = store::ResourceUpdate {
        physical_id: Some("phys-a".into()),
        attributes: Some(json!({"out": 1})),
        ..Default::default()
    };
    store::set_resource_state(&e.st.db, &s.id, &row("a"), CREATE, COMPLETE, "state changed", upd).await.unwrap();
    store::set_resource_state(&e.st.db, &s.id, &row("b"), CREATE, IN_PROGRESS, "state changed", Default::default())
        .await
        .unwrap();
    store::set_physical_id(&e.st.db, &s.id, "b", "phys-b").await.unwrap();
    engine::recover(&e.st).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(&e.st, &s.id).await != "ROLLBACK_COMPLETE" {
        assert!(tokio::time::Instant::now() < deadline, "stuck at {}", status(&e.st, &s.id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut log = e.log.lock().clone();
    log.sort();
    assert_eq!(log, vec!["delete:a", "delete:b"], "both recorded resources deleted, nothing created");
    let ev = store::events(&e.st.db, &s.id, &EventFilter { resource_name: Some("b".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(ev.iter().any(|x| x.status == FAILED && x.status_reason.contains("Engine restarted")), "{ev:?}");
}

#[tokio::test]
async fn a_deletion_interrupted_by_a_crash_resumes() {
    let e = env().await;
    let s = record(&e.st, "del", true).await;
    engine::run_create(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "CREATE_COMPLETE");
    // The crash: the stack was marked DELETE IN_PROGRESS and `c` was being deleted.
    store::set_stack_state(&e.st.db, &s, DELETE, IN_PROGRESS, "Stack DELETE started", false).await.unwrap();
    let rows = store::resources(&e.st.db, &s.id).await.unwrap();
    let c = rows.iter().find(|r| r.name == "c").unwrap();
    store::set_resource_state(&e.st.db, &s.id, c, DELETE, IN_PROGRESS, "state changed", Default::default())
        .await
        .unwrap();
    engine::recover(&e.st).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(&e.st, &s.id).await != "DELETE_COMPLETE" {
        assert!(tokio::time::Instant::now() < deadline, "stuck at {}", status(&e.st, &s.id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deletes = e.log.lock().iter().filter(|x| x.starts_with("delete:")).count();
    assert_eq!(deletes, 4, "a, b, c, d deleted once each");
}
