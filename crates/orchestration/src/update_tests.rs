//! Stack updates against a real (SQLite) database with a type that keeps a ledger of
//! what exists: in-place updates, replacements (new made before old deleted, and what
//! depends on a replaced resource replaced in turn), additions and removals in
//! dependency order; a failure at each step rolled back to exactly what was there
//! (backups restored, not remade); a crash at each step (the engine task killed while
//! a call hangs) recovered at restart with nothing leaked or lost; `disable_rollback`
//! leaving `UPDATE_FAILED` from which updating again converges.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::engine::{self, state::*};
use crate::engine_tests::{env_with, record_with, status, Env};
use crate::resources::{Change, Created, Cx, Prop, ResourceType};
use crate::store::{self, Definition, EventFilter, StackRow, UpdateOptions};
use crate::S;

/// What the fake service holds and did.
#[derive(Default)]
struct Ledger {
    /// Physical ids that exist.
    live: Mutex<BTreeSet<String>>,
    /// `create:<id>`, `update:<id>`, `delete:<id>` in order.
    log: Mutex<Vec<String>>,
    /// Operations (`create:<resource>`...) that fail, once each.
    fail: Mutex<Vec<String>>,
    /// The operation that hangs (the crash point).
    hang: Mutex<Option<String>>,
    /// Set when the hanging operation was reached.
    hung: Mutex<bool>,
    /// Things made so far, by resource name (ids are `<name>#<n>`).
    made: Mutex<std::collections::BTreeMap<String, usize>>,
}

struct Thing(Arc<Ledger>);

impl Thing {
    async fn step(&self, op: &str, resource: &str) -> Result<(), String> {
        let key = format!("{op}:{resource}");
        if self.0.hang.lock().as_deref() == Some(key.as_str()) {
            *self.0.hung.lock() = true;
            std::future::pending::<()>().await;
        }
        let mut fail = self.0.fail.lock();
        if let Some(i) = fail.iter().position(|f| *f == key) {
            // Once: what runs it again (a rollback) succeeds.
            fail.remove(i);
            return Err(format!("BadRequest: resources.{resource}: injected failure"));
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceType for Thing {
    fn name(&self) -> &'static str {
        "Test::Thing"
    }
    fn description(&self) -> &'static str {
        "a thing in a ledger"
    }
    fn props(&self) -> Option<&'static [Prop]> {
        None
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["out", "name"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let n = {
            let mut made = self.0.made.lock();
            let n = made.entry(cx.resource_name.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let id = format!("{}#{n}", cx.resource_name);
        self.step("create", &cx.resource_name).await?;
        cx.started(&id).await?;
        self.0.live.lock().insert(id.clone());
        self.0.log.lock().push(format!("create:{id}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(Created {
            physical_id: id,
            ref_id: None,
            attributes: json!({"out": props.get("in"), "name": props.get("name")}),
        })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        self.step("delete", &format!("{}:{id}", cx.resource_name)).await?;
        self.0.live.lock().remove(id);
        self.0.log.lock().push(format!("delete:{id}"));
        Ok(())
    }
    fn updatable(&self) -> &'static [&'static str] {
        &["name"]
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        self.step("update", &cx.resource_name).await?;
        assert!(self.0.live.lock().contains(change.physical_id), "updating what does not exist");
        self.0.log.lock().push(format!("update:{}", change.physical_id));
        let attributes = json!({"out": change.new.get("in"), "name": change.new.get("name")});
        Ok(Created { physical_id: change.physical_id.to_string(), ref_id: None, attributes })
    }
}

/// a ← b ← e; c alone.
const OLD: &str = r#"
heat_template_version: 2018-08-31
resources:
  a: {type: Test::Thing, properties: {name: a1, in: 1}}
  b: {type: Test::Thing, properties: {in: {get_attr: [a, out]}}}
  c: {type: Test::Thing, properties: {in: 3}}
  e: {type: Test::Thing, properties: {in: {get_resource: b}}}
outputs:
  e_in: {value: {get_attr: [e, out]}}
"#;

/// a renamed (in place); b's input changes (replaced), so e (its reference changed) is
/// replaced too; c removed; d added, needing the new b.
const NEW: &str = r#"
heat_template_version: 2018-08-31
resources:
  a: {type: Test::Thing, properties: {name: a2, in: 1}}
  b: {type: Test::Thing, properties: {in: 5}}
  d: {type: Test::Thing, properties: {in: {get_resource: b}}}
  e: {type: Test::Thing, properties: {in: {get_resource: b}}}
outputs:
  e_in: {value: {get_attr: [e, out]}}
"#;

async fn setup(disable_rollback: bool) -> (Env, Arc<Ledger>, StackRow) {
    let ledger = Arc::new(Ledger::default());
    let l2 = ledger.clone();
    let e = env_with(move |r| r.add(Arc::new(Thing(l2)))).await;
    let s = record_with(&e.st, "up", OLD, disable_rollback).await;
    engine::run_create(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "CREATE_COMPLETE");
    let s = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    (e, ledger, s)
}

async fn begin(st: &S, s: &StackRow, text: &str) {
    let def = Definition {
        template: serde_yaml::from_str(text).unwrap(),
        files: json!({}),
        environment: json!({}),
        parameters: json!({}),
    };
    let opts = UpdateOptions { disable_rollback: s.disable_rollback, timeout_mins: None, tags: None };
    store::begin_update(&st.db, s, &def, &opts).await.unwrap();
}

/// `name → (state, physical id)` of the stack's rows.
async fn rows(st: &S, id: &str) -> Vec<(String, String, String)> {
    store::resources(&st.db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, format!("{}_{}", r.action, r.status), r.physical_id.unwrap_or_default()))
        .collect()
}

/// The live things are exactly what the stack's rows record: nothing leaked, nothing lost.
async fn assert_tracked(st: &S, id: &str, ledger: &Ledger) {
    let recorded: BTreeSet<String> = rows(st, id).await.into_iter().map(|r| r.2).filter(|p| !p.is_empty()).collect();
    let all = rows(st, id).await;
    let live = ledger.live.lock().clone();
    assert_eq!(live, recorded, "live things vs rows {all:?}");
    assert!(store::backups(&st.db, id).await.unwrap().is_empty(), "no backups left");
}

fn pos(log: &[String], prefix: &str) -> usize {
    log.iter().position(|x| x.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} not in {log:?}"))
}

async fn wait_for(st: &S, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(st, id).await != want {
        assert!(tokio::time::Instant::now() < deadline, "stuck at {}, wanted {want}", status(st, id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_update_keeps_updates_replaces_adds_and_removes_in_order() {
    let (e, ledger, s) = setup(true).await;
    let before = rows(&e.st, &s.id).await;
    let phys = |n: &str| before.iter().find(|r| r.0 == n).unwrap().2.clone();
    ledger.log.lock().clear();
    begin(&e.st, &s, NEW).await;
    crate::update::run_update(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "UPDATE_COMPLETE");
    let log = ledger.log.lock().clone();
    let after = rows(&e.st, &s.id).await;
    let now = |n: &str| after.iter().find(|r| r.0 == n).cloned().unwrap();
    assert_eq!(now("a"), ("a".into(), "UPDATE_COMPLETE".into(), phys("a")), "a renamed in place");
    assert!(log.contains(&format!("update:{}", phys("a"))), "{log:?}");
    assert_ne!(now("b").2, phys("b"), "b replaced");
    assert_ne!(now("e").2, phys("e"), "e replaced: its input (b's reference) changed");
    assert!(after.iter().all(|r| r.0 != "c"), "c removed: {after:?}");
    assert_eq!(now("d").1, "CREATE_COMPLETE");
    // New before old; dependents' new after their dependency's new; old dependents
    // deleted before the old things they depended on.
    assert!(pos(&log, &format!("create:{}", now("b").2)) < pos(&log, &format!("create:{}", now("e").2)));
    assert!(pos(&log, &format!("create:{}", now("e").2)) < pos(&log, &format!("delete:{}", phys("e"))));
    assert!(pos(&log, &format!("delete:{}", phys("e"))) < pos(&log, &format!("delete:{}", phys("b"))));
    assert!(log.contains(&format!("delete:{}", phys("c"))));
    assert_tracked(&e.st, &s.id, &ledger).await;
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    let outs = engine::outputs(&e.st, &s2).await;
    assert_eq!(outs[0].2, Ok(json!(now("b").2)), "outputs see the new resources");
    let ev = store::events(&e.st.db, &s.id, &EventFilter::default()).await.unwrap();
    let stack_ev: Vec<String> =
        ev.iter().filter(|x| x.resource_name == "up").map(|x| format!("{}_{}", x.action, x.status)).collect();
    assert_eq!(stack_ev[2..], ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"]);
    let a_ev: Vec<String> =
        ev.iter().filter(|x| x.resource_name == "a").map(|x| format!("{}_{}", x.action, x.status)).collect();
    assert_eq!(a_ev[2..], ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"]);
    assert!(ev.iter().any(|x| x.resource_name == "b" && x.status_reason.contains("replacing")));

    // The same definition again changes nothing.
    ledger.log.lock().clear();
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    begin(&e.st, &s2, NEW).await;
    crate::update::run_update(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "UPDATE_COMPLETE");
    assert!(ledger.log.lock().is_empty(), "{:?}", ledger.log.lock());

    // Deleting the stack deletes what the update made.
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    engine::start_delete(&e.st, &s2).await.unwrap();
    wait_for(&e.st, &s.id, "DELETE_COMPLETE").await;
    assert!(ledger.live.lock().is_empty(), "{:?}", ledger.live.lock());
}

#[tokio::test]
async fn a_failure_at_each_step_rolls_back_to_exactly_what_was_there() {
    for failing in ["update:a", "create:b", "create:d", "create:e"] {
        let (e, ledger, s) = setup(false).await;
        let before = rows(&e.st, &s.id).await;
        let live_before = ledger.live.lock().clone();
        ledger.fail.lock().push(failing.to_string());
        begin(&e.st, &s, NEW).await;
        crate::update::run_update(e.st.clone(), s.id.clone()).await;
        assert_eq!(status(&e.st, &s.id).await, "ROLLBACK_COMPLETE", "failing {failing}");
        ledger.fail.lock().clear();
        assert_eq!(*ledger.live.lock(), live_before, "failing {failing}: the very same things, none remade");
        let after = rows(&e.st, &s.id).await;
        let names = |v: &[(String, String, String)]| v.iter().map(|r| (r.0.clone(), r.2.clone())).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&before), "failing {failing}");
        assert_tracked(&e.st, &s.id, &ledger).await;
        let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
        assert_eq!(s2.template, serde_yaml::from_str::<Value>(OLD).unwrap(), "the old template is back");
        let ev = store::events(&e.st.db, &s.id, &EventFilter::default()).await.unwrap();
        let stack_ev: Vec<String> =
            ev.iter().filter(|x| x.resource_name == "up").map(|x| format!("{}_{}", x.action, x.status)).collect();
        assert_eq!(stack_ev[2..], ["UPDATE_IN_PROGRESS", "UPDATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"]);
        let reason = ev.iter().find(|x| x.resource_name == "up" && x.status == FAILED).unwrap();
        assert!(reason.status_reason.contains("injected failure"), "{}", reason.status_reason);
    }
}

#[tokio::test]
async fn a_crash_at_each_step_is_rolled_back_at_restart_without_leaks() {
    for point in ["update:a", "create:b", "create:d", "create:e", "delete:e:e#0", "delete:b:b#0", "delete:c:c#0"] {
        let (e, ledger, s) = setup(false).await;
        let live_before = ledger.live.lock().clone();
        assert!(live_before.contains("b#0") && live_before.contains("c#0") && live_before.contains("e#0"));
        *ledger.hang.lock() = Some(point.to_string());
        begin(&e.st, &s, NEW).await;
        engine::spawn(&e.st, &s.id, crate::update::run_update(e.st.clone(), s.id.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !*ledger.hung.lock() {
            assert!(tokio::time::Instant::now() < deadline, "{point} never reached: {:?}", ledger.log.lock());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The crash: the engine stops where it is; only the database remains.
        engine::cancel(&e.st, &s.id).await;
        *ledger.hang.lock() = None;
        assert_eq!(status(&e.st, &s.id).await, "UPDATE_IN_PROGRESS");
        engine::recover(&e.st).await.unwrap();
        wait_for(&e.st, &s.id, "ROLLBACK_COMPLETE").await;
        assert_tracked(&e.st, &s.id, &ledger).await;
        let names: Vec<String> = rows(&e.st, &s.id).await.into_iter().map(|r| r.0).collect();
        assert_eq!(names, ["a", "b", "c", "e"], "crash at {point}");
        let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
        assert_eq!(s2.template, serde_yaml::from_str::<Value>(OLD).unwrap());
        let outs = engine::outputs(&e.st, &s2).await;
        let b = rows(&e.st, &s.id).await.into_iter().find(|r| r.0 == "b").unwrap().2;
        assert_eq!(outs[0].2, Ok(json!(b)), "crash at {point}: e refers to the b that exists");
    }
}

#[tokio::test]
async fn with_rollback_disabled_a_crash_leaves_update_failed_and_updating_again_converges() {
    let (e, ledger, s) = setup(true).await;
    *ledger.hang.lock() = Some("create:e".into());
    begin(&e.st, &s, NEW).await;
    engine::spawn(&e.st, &s.id, crate::update::run_update(e.st.clone(), s.id.clone()));
    while !*ledger.hung.lock() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine::cancel(&e.st, &s.id).await;
    *ledger.hang.lock() = None;
    engine::recover(&e.st).await.unwrap();
    wait_for(&e.st, &s.id, "UPDATE_FAILED").await;
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    begin(&e.st, &s2, NEW).await;
    crate::update::run_update(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "UPDATE_COMPLETE");
    assert_tracked(&e.st, &s.id, &ledger).await;
    let names: Vec<String> = rows(&e.st, &s.id).await.into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["a", "b", "d", "e"]);
    // A second update while one runs is refused.
    let s3 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    begin(&e.st, &s3, OLD).await;
    let def = Definition { template: json!({}), files: json!({}), environment: json!({}), parameters: json!({}) };
    let opts = UpdateOptions { disable_rollback: true, timeout_mins: None, tags: None };
    let again = store::begin_update(&e.st.db, &s3, &def, &opts).await;
    assert!(matches!(again, Err(crate::HeatError::InProgress { .. })), "{again:?}");
    let _ = IN_PROGRESS;
}

fn group_template(count: u32) -> String {
    format!(
        r#"
heat_template_version: 2018-08-31
resources:
  group:
    type: OS::Heat::ResourceGroup
    properties:
      count: {count}
      resource_def: {{type: Test::Thing, properties: {{name: m-%index%, in: 7}}}}
  after:
    type: Test::Thing
    properties: {{in: {{get_attr: [group, resource.0.name]}}}}
outputs:
  refs: {{value: {{get_attr: [group, refs]}}}}
  names: {{value: {{get_attr: [group, name]}}}}
  by_index: {{value: {{get_attr: [group, attributes, name]}}}}
"#
    )
}

async fn output(st: &S, id: &str, key: &str) -> Value {
    let s = store::stack(&st.db, id).await.unwrap().unwrap();
    engine::outputs(st, &s).await.into_iter().find(|o| o.0 == key).unwrap().2.unwrap()
}

#[tokio::test]
async fn a_resource_group_scales_up_and_down_by_update_and_is_deleted_with_its_stack() {
    let ledger = Arc::new(Ledger::default());
    let l2 = ledger.clone();
    let e = env_with(move |r| r.add(Arc::new(Thing(l2)))).await;
    let s = record_with(&e.st, "grp", &group_template(2), true).await;
    engine::run_create(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "CREATE_COMPLETE");
    assert_eq!(output(&e.st, &s.id, "refs").await, json!(["0#0", "1#0"]));
    assert_eq!(output(&e.st, &s.id, "names").await, json!(["m-0", "m-1"]));
    assert_eq!(output(&e.st, &s.id, "by_index").await, json!({"0": "m-0", "1": "m-1"}));
    let after = rows(&e.st, &s.id).await.into_iter().find(|r| r.0 == "after").unwrap();
    assert_eq!(after.1, "CREATE_COMPLETE");
    let listed = store::list_stacks(&e.st.db, None).await.unwrap();
    assert_eq!(listed.len(), 1, "the nested stack is not listed");

    // Scale up: one member added, the others untouched.
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    begin(&e.st, &s2, &group_template(3)).await;
    crate::update::run_update(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "UPDATE_COMPLETE");
    assert_eq!(output(&e.st, &s.id, "refs").await, json!(["0#0", "1#0", "2#0"]));
    // Scale down: the highest indexes go.
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    begin(&e.st, &s2, &group_template(1)).await;
    crate::update::run_update(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "UPDATE_COMPLETE");
    assert_eq!(output(&e.st, &s.id, "refs").await, json!(["0#0"]));
    let live: Vec<String> = ledger.live.lock().iter().cloned().collect();
    assert_eq!(live, ["0#0", "after#0"], "removed members deleted, the rest kept");

    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    engine::start_delete(&e.st, &s2).await.unwrap();
    wait_for(&e.st, &s.id, "DELETE_COMPLETE").await;
    assert!(ledger.live.lock().is_empty(), "{:?}", ledger.live.lock());
}

#[tokio::test]
async fn a_crash_inside_a_resource_group_is_rolled_back_with_its_members() {
    let ledger = Arc::new(Ledger::default());
    let l2 = ledger.clone();
    let e = env_with(move |r| r.add(Arc::new(Thing(l2)))).await;
    let s = record_with(&e.st, "grpcrash", &group_template(3), false).await;
    *ledger.hang.lock() = Some("create:2".into());
    engine::spawn(&e.st, &s.id, engine::run_create(e.st.clone(), s.id.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !*ledger.hung.lock() {
        assert!(tokio::time::Instant::now() < deadline, "never reached: {:?}", ledger.log.lock());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine::cancel(&e.st, &s.id).await;
    *ledger.hang.lock() = None;
    assert!(!ledger.live.lock().is_empty(), "members were made before the crash");
    engine::recover(&e.st).await.unwrap();
    wait_for(&e.st, &s.id, "ROLLBACK_COMPLETE").await;
    assert!(ledger.live.lock().is_empty(), "every member deleted: {:?}", ledger.live.lock());
}

fn nested_template(n: &str) -> String {
    format!(
        r#"
heat_template_version: 2018-08-31
resources:
  inner:
    type: OS::Heat::Stack
    properties:
      parameters: {{n: {n}}}
      template: |
        heat_template_version: 2018-08-31
        parameters:
          n: {{type: string}}
        resources:
          t: {{type: Test::Thing, properties: {{name: {{get_param: n}}, in: 1}}}}
        outputs:
          t_name: {{value: {{get_attr: [t, name]}}}}
outputs:
  inner_name: {{value: {{get_attr: [inner, outputs, t_name]}}}}
"#
    )
}

#[tokio::test]
async fn a_nested_stack_is_made_updated_and_deleted_with_its_parent() {
    let ledger = Arc::new(Ledger::default());
    let l2 = ledger.clone();
    let e = env_with(move |r| r.add(Arc::new(Thing(l2)))).await;
    let s = record_with(&e.st, "outer", &nested_template("a"), true).await;
    engine::run_create(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "CREATE_COMPLETE");
    assert_eq!(output(&e.st, &s.id, "inner_name").await, json!("a"));
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    begin(&e.st, &s2, &nested_template("b")).await;
    crate::update::run_update(e.st.clone(), s.id.clone()).await;
    assert_eq!(status(&e.st, &s.id).await, "UPDATE_COMPLETE");
    assert_eq!(output(&e.st, &s.id, "inner_name").await, json!("b"));
    assert_eq!(ledger.log.lock().iter().filter(|l| l.starts_with("update:t#0")).count(), 1, "updated in place");
    let s2 = store::stack(&e.st.db, &s.id).await.unwrap().unwrap();
    engine::start_delete(&e.st, &s2).await.unwrap();
    wait_for(&e.st, &s.id, "DELETE_COMPLETE").await;
    assert!(ledger.live.lock().is_empty(), "{:?}", ledger.live.lock());
}
