//! Keystone's remaining v3 resources through the real `openstack` CLI where it has the
//! command, else over HTTP: trusts and trust-scoped tokens, OS-INHERIT, credentials and
//! EC2 credentials, access rules (and their enforcement), implied roles, endpoint groups
//! and project endpoint filters, OAuth1 consumers, domain configuration, policies,
//! security compliance (password history, minimum age, change upon first use), projects
//! acting as domains, extra attributes, bad input Keystone refuses, and the catalog
//! listing only the services being served (stale entries of an older data directory
//! removed on start). The SQL-heavy parts run on SQLite and PostgreSQL.

use reqwest::Method;
use serde_json::{json, Value};
use stratus_testkit::{Creds, TestCloud};

use crate::identity::{cli, cli_as, fast};

async fn http(cloud: &TestCloud, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = cloud.http().request(method, cloud.at(path));
    if let Some(t) = token {
        r = r.header("x-auth-token", t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// POST as `token`, expecting `want`; returns the body.
async fn post(cloud: &TestCloud, token: &str, path: &str, body: Value, want: u16) -> Value {
    let (s, b) = http(cloud, Method::POST, path, Some(token), Some(body.clone())).await;
    assert_eq!(s, want, "POST {path} {body}: {b}");
    b
}

async fn status(cloud: &TestCloud, method: Method, token: &str, path: &str, body: Option<Value>) -> u16 {
    http(cloud, method, path, Some(token), body).await.0
}

/// A password token; `scope` as Keystone's `auth.scope` (null: none). Returns (status, token, body).
async fn login(cloud: &TestCloud, user: &str, password: &str, scope: Value) -> (u16, Option<String>, Value) {
    let mut body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}}}});
    if !scope.is_null() {
        body["auth"]["scope"] = scope;
    }
    let resp = cloud.http().post(cloud.at("/identity/v3/auth/tokens")).json(&body).send().await.unwrap();
    let s = resp.status().as_u16();
    let t = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    (s, t, resp.json().await.unwrap_or(Value::Null))
}

fn project(id: &str) -> Value {
    json!({"project": {"id": id}})
}

/// A PostgreSQL URL whose connections use a fresh schema, and the schema's name.
async fn postgres_schema() -> (String, String) {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL").expect(
        "STRATUS_TEST_POSTGRES_URL is not set: start PostgreSQL with scripts/test-postgres.sh and export its URL",
    );
    let db = stratus_db::Db::connect(&base).await.expect("PostgreSQL must be reachable");
    let schema = format!("identity_t{}_{}", std::process::id(), rand::random::<u32>());
    stratus_db::sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(db.reader()).await.unwrap();
    db.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    (format!("{base}{sep}options=-c%20search_path%3D{schema}"), schema)
}

async fn drop_schema(schema: &str) {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL").unwrap();
    let db = stratus_db::Db::connect(&base).await.unwrap();
    stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(db.reader()).await.unwrap();
    db.close().await;
}

/// Creates user `name` (password `pw`) with `role` on project `project_id`; returns its id.
async fn user_on(cloud: &TestCloud, admin: &str, name: &str, pw: &str, project_id: &str, role: &str) -> String {
    let u = post(cloud, admin, "/identity/v3/users", json!({"user": {"name": name, "password": pw}}), 201).await;
    let uid = u["user"]["id"].as_str().unwrap().to_string();
    let (_, r) = http(cloud, Method::GET, &format!("/identity/v3/roles?name={role}"), Some(admin), None).await;
    let rid = r["roles"][0]["id"].as_str().unwrap();
    let path = format!("/identity/v3/projects/{project_id}/users/{uid}/roles/{rid}");
    assert_eq!(status(cloud, Method::PUT, admin, &path, None).await, 204);
    uid
}

/// Trusts, OS-INHERIT, credentials, endpoint filters, domain configuration and password
/// history over HTTP, on one database.
async fn keystone_resources(db_url: Option<String>) {
    let cloud = TestCloud::start_with(move |c| {
        fast(c);
        c.identity.unique_last_password_count = 2;
        if let Some(u) = db_url {
            c.database.url = u;
        }
    })
    .await;
    let admin = cloud.admin_token().await;

    // --- trusts: create as the trustor, a trust-scoped token for the trustee ---------
    let p = post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "tp"}}), 201).await;
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    let trustor = user_on(&cloud, &admin, "trustor", "pw-trustor", &pid, "member").await;
    let trustee =
        post(&cloud, &admin, "/identity/v3/users", json!({"user": {"name": "trustee", "password": "pw-t"}}), 201).await;
    let trustee = trustee["user"]["id"].as_str().unwrap().to_string();
    let (_, tor, _) = login(&cloud, "trustor", "pw-trustor", project(&pid)).await;
    let tor = tor.unwrap();
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S.000000Z").to_string();
    let trust_body = |roles: Value| {
        json!({"trust": {"trustor_user_id": trustor, "trustee_user_id": trustee, "project_id": pid,
            "impersonation": true, "roles": roles, "expires_at": expires, "remaining_uses": 2}})
    };
    // Roles the trustor lacks cannot be delegated; only the trustor creates.
    post(&cloud, &tor, "/identity/v3/OS-TRUST/trusts", trust_body(json!([{"name": "admin"}])), 403).await;
    post(&cloud, &admin, "/identity/v3/OS-TRUST/trusts", trust_body(json!([{"name": "member"}])), 403).await;
    let mut bad = trust_body(json!([{"name": "member"}]));
    bad["trust"]["expires_at"] = json!("bad.123Z");
    post(&cloud, &tor, "/identity/v3/OS-TRUST/trusts", bad, 400).await;
    let t = post(&cloud, &tor, "/identity/v3/OS-TRUST/trusts", trust_body(json!([{"name": "member"}])), 201).await;
    let tid = t["trust"]["id"].as_str().unwrap().to_string();
    assert_eq!(t["trust"]["expires_at"], expires.as_str(), "rendered with microseconds and Z");
    assert_eq!(t["trust"]["roles"][0]["name"], "member");
    let (_, list) =
        http(&cloud, Method::GET, &format!("/identity/v3/OS-TRUST/trusts?trustor_user_id={trustor}"), Some(&tor), None)
            .await;
    assert_eq!(list["trusts"].as_array().unwrap().len(), 1);
    let (s, _) = http(&cloud, Method::GET, "/identity/v3/OS-TRUST/trusts", Some(&tor), None).await;
    assert_eq!(s, 403, "listing every trust is for admins");
    let role_path = format!("/identity/v3/OS-TRUST/trusts/{tid}/roles");
    let (_, roles) = http(&cloud, Method::GET, &role_path, Some(&tor), None).await;
    let member_id = roles["roles"][0]["id"].as_str().unwrap().to_string();
    let (s, b) = http(&cloud, Method::GET, &format!("{role_path}/{member_id}"), Some(&tor), None).await;
    assert_eq!(s, 200, "{b} {roles}");
    assert_eq!(status(&cloud, Method::HEAD, &tor, &format!("{role_path}/{member_id}"), None).await, 200);
    // The trustee gets a token on the project as the trustor (impersonation), with only
    // the delegated role and what it implies; the trust allows two such tokens.
    let (_, tee, _) = login(&cloud, "trustee", "pw-t", Value::Null).await;
    let tee = tee.unwrap();
    let trust_auth = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": tee}},
        "scope": {"OS-TRUST:trust": {"id": tid}}}});
    let resp = cloud.http().post(cloud.at("/identity/v3/auth/tokens")).json(&trust_auth).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let trust_token = resp.headers()["x-subject-token"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token"]["user"]["id"], trustor.as_str());
    assert_eq!(body["token"]["project"]["id"], pid.as_str());
    assert_eq!(body["token"]["OS-TRUST:trust"]["id"], tid.as_str());
    let mut names: Vec<&str> =
        body["token"]["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["member", "reader"]);
    let (s, _) = http(&cloud, Method::GET, "/compute/v2.1/servers", Some(&trust_token), None).await;
    assert_eq!(s, 200, "the trust token works on other services");
    let (s, _) = http(&cloud, Method::POST, "/identity/v3/auth/tokens", None, Some(trust_auth.clone())).await;
    assert_eq!(s, 201, "second use");
    let (s, _) = http(&cloud, Method::POST, "/identity/v3/auth/tokens", None, Some(trust_auth.clone())).await;
    assert_eq!(s, 404, "remaining_uses spent");
    // As Keystone: the uses limit issuing only; the trust stays shown and listed, and the
    // tokens it gave keep working until it is deleted.
    let (s, _) = http(&cloud, Method::GET, "/compute/v2.1/servers", Some(&trust_token), None).await;
    assert_eq!(s, 200, "a spent trust's tokens still work");
    let (s, shown) = http(&cloud, Method::GET, &format!("/identity/v3/OS-TRUST/trusts/{tid}"), Some(&tor), None).await;
    assert_eq!((s, &shown["trust"]["remaining_uses"]), (200, &json!(0)), "{shown}");
    let (_, listed) =
        http(&cloud, Method::GET, &format!("/identity/v3/OS-TRUST/trusts?trustor_user_id={trustor}"), Some(&tor), None)
            .await;
    assert!(listed["trusts"].as_array().unwrap().iter().any(|t| t["id"] == tid.as_str()), "{listed}");
    // Someone else cannot use the trust; deleting it voids its tokens.
    assert_eq!(status(&cloud, Method::DELETE, &tor, &format!("/identity/v3/OS-TRUST/trusts/{tid}"), None).await, 204);
    let (s, _) = http(&cloud, Method::GET, "/compute/v2.1/servers", Some(&trust_token), None).await;
    assert_eq!(s, 401, "a deleted trust's tokens are refused");
    let rescope = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": trust_token}}}});
    let (s, _) = http(&cloud, Method::POST, "/identity/v3/auth/tokens", None, Some(rescope)).await;
    assert_eq!(s, 404, "a token that no longer validates is not found by the token method");
    let (s, _) = http(&cloud, Method::GET, &format!("/identity/v3/OS-TRUST/trusts/{tid}"), Some(&tor), None).await;
    assert_eq!(s, 404);

    // --- OS-INHERIT: a domain grant inherited by the domain's projects ----------------
    let d = post(&cloud, &admin, "/identity/v3/domains", json!({"domain": {"name": "inh"}}), 201).await;
    let did = d["domain"]["id"].as_str().unwrap().to_string();
    let parent =
        post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "par", "domain_id": did}}), 201).await;
    let parent = parent["project"]["id"].as_str().unwrap().to_string();
    let leaf =
        post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "leaf", "parent_id": parent}}), 201)
            .await;
    let leaf = leaf["project"]["id"].as_str().unwrap().to_string();
    let u = post(
        &cloud,
        &admin,
        "/identity/v3/users",
        json!({"user": {"name": "heir", "password": "pw-h", "domain_id": did}}),
        201,
    )
    .await;
    let heir = u["user"]["id"].as_str().unwrap().to_string();
    let r = post(&cloud, &admin, "/identity/v3/roles", json!({"role": {"name": "inherited-role"}}), 201).await;
    let rid = r["role"]["id"].as_str().unwrap().to_string();
    let grant = format!("/identity/v3/OS-INHERIT/projects/{parent}/users/{heir}/roles/{rid}/inherited_to_projects");
    assert_eq!(status(&cloud, Method::PUT, &admin, &grant, None).await, 204);
    assert_eq!(status(&cloud, Method::HEAD, &admin, &grant, None).await, 204);
    let eff = |p: &str| format!("/identity/v3/role_assignments?effective&user.id={heir}&scope.project.id={p}");
    let (_, a) = http(&cloud, Method::GET, &eff(&leaf), Some(&admin), None).await;
    assert_eq!(a["role_assignments"].as_array().unwrap().len(), 1, "the leaf inherits: {a}");
    let (_, a) = http(&cloud, Method::GET, &eff(&parent), Some(&admin), None).await;
    assert_eq!(a["role_assignments"].as_array().unwrap().len(), 0, "not the project itself: {a}");
    let (_, a) =
        http(&cloud, Method::GET, &format!("/identity/v3/role_assignments?user.id={heir}"), Some(&admin), None).await;
    assert_eq!(a["role_assignments"][0]["scope"]["OS-INHERIT:inherited_to"], "projects");
    assert_eq!(status(&cloud, Method::DELETE, &admin, &grant, None).await, 204);
    let dgrant = format!("/identity/v3/OS-INHERIT/domains/{did}/users/{heir}/roles/{rid}/inherited_to_projects");
    assert_eq!(status(&cloud, Method::PUT, &admin, &dgrant, None).await, 204);
    let scope = json!({"project": {"id": leaf}});
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"id": heir, "password": "pw-h"}}}, "scope": scope}});
    let (s, b) = http(&cloud, Method::POST, "/identity/v3/auth/tokens", None, Some(body)).await;
    assert_eq!(s, 201, "a token on the leaf through the domain's inherited grant: {b}");
    assert_eq!(b["token"]["roles"][0]["id"], rid.as_str());

    // --- credentials and EC2 -----------------------------------------------------------
    let (_, me, _) = login(&cloud, "trustor", "pw-trustor", project(&pid)).await;
    let me = me.unwrap();
    let ec2 =
        post(&cloud, &me, &format!("/identity/v3/users/{trustor}/credentials/OS-EC2"), json!({"tenant_id": pid}), 201)
            .await;
    let access = ec2["credential"]["access"].as_str().unwrap().to_string();
    assert_eq!(ec2["credential"]["tenant_id"], pid.as_str());
    let (_, creds) = http(&cloud, Method::GET, "/identity/v3/credentials", Some(&me), None).await;
    assert_eq!(creds["credentials"].as_array().unwrap().len(), 1, "the EC2 pair is a credential of type ec2");
    assert_eq!(creds["credentials"][0]["type"], "ec2");
    let (_, other_creds) = http(&cloud, Method::GET, "/identity/v3/credentials", Some(&tee), None).await;
    assert_eq!(other_creds["credentials"].as_array().unwrap().len(), 0, "others' credentials are not listed");
    let cred_id = creds["credentials"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = http(&cloud, Method::GET, &format!("/identity/v3/credentials/{cred_id}"), Some(&tee), None).await;
    assert_eq!(s, 403);
    let patch = json!({"credential": {"type": "cert"}});
    assert_eq!(
        status(&cloud, Method::PATCH, &me, &format!("/identity/v3/credentials/{cred_id}"), Some(patch)).await,
        400
    );
    let ec2_path = format!("/identity/v3/users/{trustor}/credentials/OS-EC2/{access}");
    assert_eq!(status(&cloud, Method::DELETE, &me, &ec2_path, None).await, 204);
    assert_eq!(status(&cloud, Method::GET, &me, &ec2_path, None).await, 404);
    let blob = json!({"access": "a1", "secret": "s1"}).to_string();
    let c = json!({"credential": {"user_id": trustor, "type": "ec2", "blob": blob}});
    post(&cloud, &admin, "/identity/v3/credentials", c, 400).await;

    // --- endpoint groups: a project's catalog limited to its endpoints ----------------
    let (_, svcs) = http(&cloud, Method::GET, "/identity/v3/services?type=image", Some(&admin), None).await;
    let image_sid = svcs["services"][0]["id"].as_str().unwrap().to_string();
    let g = json!({"endpoint_group": {"name": "img", "filters": {"service_id": image_sid}}});
    let g = post(&cloud, &admin, "/identity/v3/OS-EP-FILTER/endpoint_groups", g, 201).await;
    let gid = g["endpoint_group"]["id"].as_str().unwrap().to_string();
    let bad = json!({"endpoint_group": {"name": "x", "filters": {"color": "red"}}});
    post(&cloud, &admin, "/identity/v3/OS-EP-FILTER/endpoint_groups", bad, 400).await;
    let assoc = format!("/identity/v3/OS-EP-FILTER/endpoint_groups/{gid}/projects/{pid}");
    assert_eq!(status(&cloud, Method::PUT, &admin, &assoc, None).await, 204);
    let (_, cat) = http(&cloud, Method::GET, "/identity/v3/auth/catalog", Some(&me), None).await;
    let types: Vec<&str> = cat["catalog"].as_array().unwrap().iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["image"], "the project sees only its endpoint group");
    assert_eq!(status(&cloud, Method::DELETE, &admin, &assoc, None).await, 204);
    let (_, cat) = http(&cloud, Method::GET, "/identity/v3/auth/catalog", Some(&me), None).await;
    assert_eq!(
        cat["catalog"].as_array().unwrap().len(),
        stratus::app::catalog().len(),
        "no association: the whole catalog"
    );

    // --- domain configuration -----------------------------------------------------------
    let cfg = json!({"config": {"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://x", "password": "s3cret"}}});
    let (s, b) =
        http(&cloud, Method::PUT, &format!("/identity/v3/domains/{did}/config"), Some(&admin), Some(cfg)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["config"]["ldap"], json!({"url": "ldap://x"}), "sensitive options are never shown");
    let bad = json!({"config": {"ldap": {"color": "red"}}});
    let (s, _) =
        http(&cloud, Method::PATCH, &format!("/identity/v3/domains/{did}/config"), Some(&admin), Some(bad)).await;
    assert_eq!(s, 403, "an option a domain may not set");
    let opt = format!("/identity/v3/domains/{did}/config/identity/driver");
    assert_eq!(status(&cloud, Method::DELETE, &admin, &opt, None).await, 204);
    assert_eq!(status(&cloud, Method::GET, &admin, &opt, None).await, 404);

    // --- password history (self-service) ---------------------------------------------------
    let pw_path = format!("/identity/v3/users/{trustor}/password");
    let change = |orig: &str, new: &str| json!({"user": {"original_password": orig, "password": new}});
    let (s, _) = http(&cloud, Method::POST, &pw_path, None, Some(change("pw-trustor", "pw-2"))).await;
    assert_eq!(s, 204, "no token needed: the original password is the credential");
    let (s, _) = http(&cloud, Method::POST, &pw_path, None, Some(change("pw-2", "pw-trustor"))).await;
    assert_eq!(s, 400, "a recent password cannot be reused");
    let (s, _) = http(&cloud, Method::POST, &pw_path, None, Some(change("pw-2", "pw-2"))).await;
    assert_eq!(s, 400, "nor the current one");
    let (s, _) = http(&cloud, Method::POST, &pw_path, None, Some(change("wrong", "pw-3"))).await;
    assert_eq!(s, 401);
    assert_eq!(status(&cloud, Method::GET, &admin, "/identity/v3/auth/tokens", None).await, 400);
    let check = cloud
        .http()
        .get(cloud.at("/identity/v3/auth/tokens"))
        .header("x-auth-token", &admin)
        .header("x-subject-token", &me)
        .send()
        .await
        .unwrap();
    assert_eq!(check.status().as_u16(), 404, "the password change revoked the user's tokens");
    let reset = json!({"user": {"password": "pw-trustor"}});
    assert_eq!(
        status(&cloud, Method::PATCH, &admin, &format!("/identity/v3/users/{trustor}"), Some(reset)).await,
        200,
        "an admin reset is not checked against history"
    );
    let (s, _, _) = login(&cloud, "trustor", "pw-trustor", Value::Null).await;
    assert_eq!(s, 201);
    cloud.shutdown().await;
}

#[tokio::test]
async fn keystone_resources_on_sqlite() {
    keystone_resources(None).await;
}

#[tokio::test]
async fn keystone_resources_on_postgres() {
    let (url, schema) = postgres_schema().await;
    keystone_resources(Some(url)).await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn trusts_credentials_access_rules_implied_roles_and_consumers_through_cli() {
    let cloud = TestCloud::start_with(fast).await;
    cli(&cloud, &["project", "create", "--domain", "default", "demo"]).await;
    let alice_id =
        cli(&cloud, &["user", "create", "--password", "pw-a", "alice"]).await["id"].as_str().unwrap().to_string();
    let bob_id =
        cli(&cloud, &["user", "create", "--password", "pw-b", "bob"]).await["id"].as_str().unwrap().to_string();
    cli(&cloud, &["role", "add", "--project", "demo", "--user", "alice", "member"]).await;
    let alice = Creds::new("alice", "pw-a", "demo");

    // Trusts (a user who may not list users names them by id).
    let demo_id = cli(&cloud, &["project", "show", "demo"]).await["id"].as_str().unwrap().to_string();
    let member_id = cli(&cloud, &["role", "show", "member"]).await["id"].as_str().unwrap().to_string();
    let t = cli_as(
        &cloud,
        &alice,
        &["trust", "create", "--project", &demo_id, "--role", &member_id, "--impersonate", &alice_id, &bob_id],
    )
    .await;
    assert_eq!(t["is_impersonation"], true, "{t}");
    let list = cli_as(&cloud, &alice, &["trust", "list", "--trustor", &alice_id]).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let shown = cli_as(&cloud, &alice, &["trust", "show", t["id"].as_str().unwrap()]).await;
    assert_eq!(shown["project_id"], t["project_id"]);
    cli_as(&cloud, &alice, &["trust", "delete", t["id"].as_str().unwrap()]).await;

    // Credentials and EC2 key pairs.
    let c = cli(&cloud, &["credential", "create", "--type", "cert", "alice", "certificate-text"]).await;
    assert_eq!(c["type"], "cert");
    cli(
        &cloud,
        &["credential", "set", "--type", "cert", "--user", "alice", "--data", "new-text", c["id"].as_str().unwrap()],
    )
    .await;
    let c2 = cli(&cloud, &["credential", "show", c["id"].as_str().unwrap()]).await;
    assert_eq!(c2["blob"], "new-text");
    cli(&cloud, &["credential", "delete", c["id"].as_str().unwrap()]).await;
    let ec2 = cli_as(&cloud, &alice, &["ec2", "credentials", "create"]).await;
    let access = ec2["access"].as_str().unwrap().to_string();
    let list = cli_as(&cloud, &alice, &["ec2", "credentials", "list"]).await;
    assert!(list.to_string().contains(&access), "{list}");
    cli_as(&cloud, &alice, &["ec2", "credentials", "delete", &access]).await;

    // Access rules: the credential may list servers and nothing else.
    let rules = r#"[{"service": "compute", "method": "GET", "path": "/v2.1/servers"}]"#;
    let ac = cli_as(&cloud, &alice, &["application", "credential", "create", "--access-rules", rules, "ro"]).await;
    let rule_list = cli_as(&cloud, &alice, &["access", "rule", "list"]).await;
    assert_eq!(rule_list.as_array().unwrap().len(), 1, "{rule_list}");
    let rule_id = rule_list[0]["ID"].as_str().unwrap().to_string();
    let body = json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": {
        "id": ac["ID"], "secret": ac["Secret"]}}}});
    let resp = cloud.http().post(cloud.at("/identity/v3/auth/tokens")).json(&body).send().await.unwrap();
    let token = resp.headers()["x-subject-token"].to_str().unwrap().to_string();
    assert_eq!(http(&cloud, Method::GET, "/compute/v2.1/servers", Some(&token), None).await.0, 200);
    assert_eq!(http(&cloud, Method::GET, "/image/v2/images", Some(&token), None).await.0, 401, "not in the rules");
    assert_eq!(http(&cloud, Method::GET, "/compute/v2.1/flavors", Some(&token), None).await.0, 401);
    let err = cloud.openstack_as(&alice, &["access", "rule", "delete", &rule_id]).await;
    assert!(err.is_err(), "a rule in use cannot be deleted");
    cli_as(&cloud, &alice, &["application", "credential", "delete", "ro"]).await;
    cli_as(&cloud, &alice, &["access", "rule", "delete", &rule_id]).await;

    // Implied roles, and what Keystone refuses.
    cli(&cloud, &["role", "create", "r1"]).await;
    cli(&cloud, &["role", "create", "r2"]).await;
    cli(&cloud, &["implied", "role", "create", "--implied-role", "r2", "r1"]).await;
    let rules = cli(&cloud, &["implied", "role", "list"]).await;
    assert!(rules.to_string().contains("r2"), "{rules}");
    // What Keystone refuses (over HTTP, by id: the CLI looks names up among global roles).
    let admin = cloud.admin_token().await;
    let role_id = |v: Value| v["id"].as_str().unwrap().to_string();
    let dr = role_id(cli(&cloud, &["role", "create", "--domain", "default", "dr"]).await);
    let (r1, r2) =
        (role_id(cli(&cloud, &["role", "show", "r1"]).await), role_id(cli(&cloud, &["role", "show", "r2"]).await));
    let implies = |prior: &str, implied: &str| format!("/identity/v3/roles/{prior}/implies/{implied}");
    assert_eq!(status(&cloud, Method::PUT, &admin, &implies(&r1, &dr), None).await, 403, "global implies domain role");
    assert_eq!(status(&cloud, Method::PUT, &admin, &implies(&r2, &r1), None).await, 400, "a cycle");

    // OAuth1 consumers (over HTTP: the CLI's consumer commands need oauthlib).
    let c = post(&cloud, &admin, "/identity/v3/OS-OAUTH1/consumers", json!({"consumer": {"description": "app"}}), 201)
        .await;
    assert!(c["consumer"]["secret"].as_str().is_some_and(|s| s.len() > 20));
    let cpath = format!("/identity/v3/OS-OAUTH1/consumers/{}", c["consumer"]["id"].as_str().unwrap());
    let (s, _) = http(&cloud, Method::PATCH, &cpath, Some(&admin), Some(json!({"consumer": {"secret": "x"}}))).await;
    assert_eq!(s, 400, "a consumer's secret is not changed");
    let (s, _) =
        http(&cloud, Method::PATCH, &cpath, Some(&admin), Some(json!({"consumer": {"description": "renamed"}}))).await;
    assert_eq!(s, 200);
    let (_, shown) = http(&cloud, Method::GET, &cpath, Some(&admin), None).await;
    assert_eq!(shown["consumer"]["description"], "renamed");
    assert!(shown["consumer"].get("secret").is_none(), "the secret is shown once");
    assert_eq!(status(&cloud, Method::DELETE, &admin, &cpath, None).await, 204);
    assert_eq!(status(&cloud, Method::GET, &admin, &cpath, None).await, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn bad_input_keystone_refuses_and_projects_acting_as_domains() {
    let cloud = TestCloud::start_with(fast).await;
    let admin = cloud.admin_token().await;
    let p = post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "p1", "flavor": "x"}}), 201).await;
    assert_eq!(p["project"]["flavor"], "x", "unknown attributes are kept");
    let path = format!("/identity/v3/projects/{}", p["project"]["id"].as_str().unwrap());
    for (body, want) in [
        (json!({"project": {"domain_id": "other"}}), 400),
        (json!({"project": {"id": "other"}}), 400),
        (json!({"project": {"is_domain": true}}), 400),
        (json!({"project": {"parent_id": {}}}), 400),
        (json!({"project": {"parent_id": "elsewhere"}}), 403),
        (json!({"project": {"name": "x".repeat(65)}}), 400),
    ] {
        assert_eq!(status(&cloud, Method::PATCH, &admin, &path, Some(body.clone())).await, want, "{body}");
    }
    post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "y".repeat(65)}}), 400).await;
    post(&cloud, &admin, "/identity/v3/domains", json!({"domain": {"name": "z".repeat(65)}}), 400).await;
    post(&cloud, &admin, "/identity/v3/groups", json!({"group": {"name": "g", "domain_id": null}}), 400).await;
    let g = post(&cloud, &admin, "/identity/v3/groups", json!({"group": {"name": "g"}}), 201).await;
    let gpath = format!("/identity/v3/groups/{}", g["group"]["id"].as_str().unwrap());
    assert_eq!(status(&cloud, Method::PATCH, &admin, &gpath, Some(json!({"group": {"domain_id": "x"}}))).await, 400);
    post(&cloud, &admin, "/identity/v3/regions", json!({"region": {"parent_id": {}}}), 400).await;
    post(&cloud, &admin, "/identity/v3/roles", json!({"role": {"name": "o", "options": {"color": true}}}), 400).await;
    let r = post(
        &cloud,
        &admin,
        "/identity/v3/roles",
        json!({"role": {"name": "fixed", "options": {"immutable": true}}}),
        201,
    )
    .await;
    let rpath = format!("/identity/v3/roles/{}", r["role"]["id"].as_str().unwrap());
    assert_eq!(status(&cloud, Method::DELETE, &admin, &rpath, None).await, 403, "an immutable role stays");
    let u = post(
        &cloud,
        &admin,
        "/identity/v3/users",
        json!({"user": {"name": "u", "project_id": "p", "options": {"bogus": true}}}),
        400,
    )
    .await;
    assert!(u["error"]["message"].as_str().unwrap().contains("bogus"));
    let u = post(&cloud, &admin, "/identity/v3/users", json!({"user": {"name": "u", "project_id": "pp"}}), 201).await;
    let (_, shown) = http(
        &cloud,
        Method::GET,
        &format!("/identity/v3/users/{}", u["user"]["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(shown["user"]["project_id"], "pp", "extra user attributes are returned");

    // An endpoint naming a region that does not exist yet creates it.
    let (_, svcs) = http(&cloud, Method::GET, "/identity/v3/services?type=image", Some(&admin), None).await;
    let e = json!({"endpoint": {"service_id": svcs["services"][0]["id"], "interface": "public", "url": "http://x", "region_id": "new-region"}});
    post(&cloud, &admin, "/identity/v3/endpoints", e, 201).await;
    assert_eq!(status(&cloud, Method::GET, &admin, "/identity/v3/regions/new-region", None).await, 200);

    // A project acting as a domain is a domain.
    let d =
        post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "pd", "is_domain": true}}), 201).await;
    assert_eq!(d["project"]["is_domain"], true);
    assert_eq!(d["project"]["domain_id"], Value::Null);
    let did = d["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(status(&cloud, Method::GET, &admin, &format!("/identity/v3/domains/{did}"), None).await, 200);
    let (_, l) = http(&cloud, Method::GET, "/identity/v3/projects?is_domain=true", Some(&admin), None).await;
    assert!(l["projects"].as_array().unwrap().iter().any(|p| p["id"] == did.as_str()));
    let inner =
        post(&cloud, &admin, "/identity/v3/projects", json!({"project": {"name": "in", "parent_id": did}}), 201).await;
    assert_eq!(inner["project"]["domain_id"], did.as_str(), "a child of a domain project lives in that domain");
    let ppath = format!("/identity/v3/projects/{did}");
    assert_eq!(status(&cloud, Method::PATCH, &admin, &ppath, Some(json!({"project": {"enabled": false}}))).await, 200);
    assert_eq!(status(&cloud, Method::DELETE, &admin, &ppath, None).await, 204);
    assert_eq!(status(&cloud, Method::GET, &admin, &format!("/identity/v3/domains/{did}"), None).await, 404);
    // HEAD on an implied role answers 204.
    let r1 = post(&cloud, &admin, "/identity/v3/roles", json!({"role": {"name": "a1"}}), 201).await;
    let r2 = post(&cloud, &admin, "/identity/v3/roles", json!({"role": {"name": "a2"}}), 201).await;
    let imp = format!(
        "/identity/v3/roles/{}/implies/{}",
        r1["role"]["id"].as_str().unwrap(),
        r2["role"]["id"].as_str().unwrap()
    );
    assert_eq!(status(&cloud, Method::PUT, &admin, &imp, None).await, 201);
    assert_eq!(status(&cloud, Method::HEAD, &admin, &imp, None).await, 204);
    cloud.shutdown().await;
}

#[tokio::test]
async fn change_password_upon_first_use_and_minimum_age() {
    let cloud = TestCloud::start_with(|c| {
        fast(c);
        c.identity.change_password_upon_first_use = true;
        c.identity.minimum_password_age_days = 1;
        c.identity.password_regex = "^.{8,}$".into();
        c.identity.password_regex_description = "at least 8 characters".into();
    })
    .await;
    let admin = cloud.admin_token().await;
    let (_, b) = http(
        &cloud,
        Method::POST,
        "/identity/v3/users",
        Some(&admin),
        Some(json!({"user": {"name": "n", "password": "short"}})),
    )
    .await;
    assert!(b["error"]["message"].as_str().unwrap().contains("at least 8 characters"), "{b}");
    let u =
        post(&cloud, &admin, "/identity/v3/users", json!({"user": {"name": "n", "password": "first-password"}}), 201)
            .await;
    let uid = u["user"]["id"].as_str().unwrap().to_string();
    assert!(u["user"]["password_expires_at"].is_string(), "set by an admin: expired at once");
    let (s, _, b) = login(&cloud, "n", "first-password", Value::Null).await;
    assert_eq!(s, 401);
    assert!(b["error"]["message"].as_str().unwrap().contains("expired"), "{b}");
    let pw = format!("/identity/v3/users/{uid}/password");
    let change = json!({"user": {"original_password": "first-password", "password": "second-password"}});
    let (s, b) = http(&cloud, Method::POST, &pw, None, Some(change)).await;
    assert_eq!(s, 204, "{b}");
    let (s, _, _) = login(&cloud, "n", "second-password", Value::Null).await;
    assert_eq!(s, 201, "changed by its user: valid");
    let again = json!({"user": {"original_password": "second-password", "password": "third-password"}});
    let (s, b) = http(&cloud, Method::POST, &pw, None, Some(again)).await;
    assert_eq!(s, 400, "minimum age: {b}");
    cloud.shutdown().await;
}

/// A data directory made by an older Stratus (identity schema 1, a bootstrap catalog
/// with block and object storage at old URLs) is upgraded: entries of services still
/// served are kept and follow the served URLs (no duplicates), a bootstrap entry of a
/// service no longer served goes, and an operator's own service stays untouched.
async fn stale_catalog_removed_on_upgrade(db_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url.clone().unwrap_or_else(|| format!("sqlite://{}/stratus.db", dir.path().display()));
    {
        let db = stratus_db::Db::connect(&url).await.unwrap();
        db.migrate("identity", &stratus_identity::MIGRATIONS[..1]).await.unwrap();
        let now = stratus_core::time::now();
        let insert = |id: &'static str, ty: &'static str, name: &'static str| {
            let (db, now) = (&db, &now);
            async move {
                stratus_db::sqlx::query("INSERT INTO identity_services (id, type, name, description, enabled, created_at) VALUES ($1, $2, $3, '', 1, $4)")
                    .bind(id).bind(ty).bind(name).bind(now).execute(db.reader()).await.unwrap();
                stratus_db::sqlx::query("INSERT INTO identity_endpoints (id, service_id, interface, region_id, url, enabled, created_at) VALUES ($1, $2, 'public', 'RegionOne', 'http://old', 1, $3)")
                    .bind(format!("e-{id}")).bind(id).bind(now).execute(db.reader()).await.unwrap();
            }
        };
        for (id, ty, name) in
            [("s-vol", "volumev3", "cinderv3"), ("s-obj", "object-store", "swift"), ("s-own", "rating", "cloudkitty")]
        {
            insert(id, ty, name).await;
        }
        // Schema 2 marks the old bootstrap's rows; a service a bootstrap registered and
        // this binary no longer serves is one more such row.
        db.migrate("identity", stratus_identity::MIGRATIONS).await.unwrap();
        insert("s-gone", "dns", "designate").await;
        stratus_db::sqlx::query("UPDATE identity_services SET bootstrap = 1 WHERE id = 's-gone'")
            .execute(db.reader())
            .await
            .unwrap();
        db.close().await;
    }
    let cloud = TestCloud::start_in(dir.path().to_path_buf(), move |c| {
        fast(c);
        if let Some(u) = db_url {
            c.database.url = u;
        }
    })
    .await;
    let admin = cloud.admin_token().await;
    let (_, svcs) = http(&cloud, Method::GET, "/identity/v3/services", Some(&admin), None).await;
    let mut types: Vec<&str> =
        svcs["services"].as_array().unwrap().iter().map(|s| s["type"].as_str().unwrap()).collect();
    types.sort();
    let mut expected: Vec<&str> = stratus::app::catalog().iter().map(|e| e.service_type).collect();
    expected.push("rating");
    expected.sort();
    assert_eq!(types, expected, "served services once each, the operator's kept, the unserved one gone");
    let (_, eps) = http(&cloud, Method::GET, "/identity/v3/endpoints", Some(&admin), None).await;
    let eps = eps["endpoints"].as_array().unwrap();
    let ep = |id: &str| eps.iter().find(|e| e["id"] == id).cloned();
    assert!(ep("e-s-gone").is_none(), "the unserved service's endpoint is removed");
    assert_eq!(ep("e-s-own").unwrap()["url"], "http://old", "an operator's endpoint is never touched");
    let vol = ep("e-s-vol").expect("the old volume endpoint is kept");
    assert!(vol["url"].as_str().unwrap().starts_with(&format!("{}/volume/v3/", cloud.url)), "{vol}");
    let obj = ep("e-s-obj").expect("the old object endpoint is kept");
    assert!(obj["url"].as_str().unwrap().starts_with(&format!("{}/object/v1/AUTH_", cloud.url)), "{obj}");
    // `openstack limits show --absolute` reads compute and block storage limits: both answer.
    let limits = cli(&cloud, &["limits", "show", "--absolute"]).await;
    assert!(!limits.as_array().unwrap().is_empty(), "{limits}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn stale_catalog_entries_removed_on_upgrade_sqlite() {
    stale_catalog_removed_on_upgrade(None).await;
}

#[tokio::test]
async fn stale_catalog_entries_removed_on_upgrade_postgres() {
    let (url, schema) = postgres_schema().await;
    stale_catalog_removed_on_upgrade(Some(url)).await;
    drop_schema(&schema).await;
}
