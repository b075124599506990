//! Identity through the real `openstack` CLI and over HTTP: bootstrap, tokens, catalog,
//! users/projects/domains/groups/roles, application credentials, and the RBAC cases
//! (admin vs member vs another project's user vs disabled user vs revoked and expired
//! tokens).

use std::time::Duration;

use serde_json::{json, Value};
use stratus_testkit::{openstack_cli, Creds, TestCloud};

/// A cloud with the cheapest password hash, so logins in tests cost microseconds.
async fn cloud() -> TestCloud {
    TestCloud::start_with(fast).await
}

pub(crate) fn fast(c: &mut stratus::Config) {
    c.identity.password_hash_memory_kib = 8;
    c.identity.password_hash_iterations = 1;
}

pub(crate) async fn cli(cloud: &TestCloud, args: &[&str]) -> Value {
    match cloud.openstack(args).await {
        Ok(v) => v,
        Err(e) => panic!("openstack {}: {e}", args.join(" ")),
    }
}

pub(crate) async fn cli_as(cloud: &TestCloud, creds: &Creds, args: &[&str]) -> Value {
    match cloud.openstack_as(creds, args).await {
        Ok(v) => v,
        Err(e) => panic!("openstack {} as {}: {e}", args.join(" "), creds.username),
    }
}

/// Runs the CLI with exactly `env` (no password variables), e.g. for application credentials.
async fn cli_env(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(openstack_cli());
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out =
        tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("CLI in time").expect("CLI runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap_or(&vec![]).iter().filter_map(|x| x[key].as_str().map(str::to_string)).collect()
}

async fn http(
    cloud: &TestCloud,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = cloud.http().request(method, cloud.at(path));
    if let Some(t) = token {
        r = r.header("x-auth-token", t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

async fn get(cloud: &TestCloud, path: &str, token: &str) -> (u16, Value) {
    let (s, _, b) = http(cloud, reqwest::Method::GET, path, Some(token), None).await;
    (s, b)
}

async fn password_token(cloud: &TestCloud, user: &str, password: &str, scope: Value) -> (u16, Option<String>, Value) {
    let mut body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}}}});
    if !scope.is_null() {
        body["auth"]["scope"] = scope;
    }
    let (s, h, b) = http(cloud, reqwest::Method::POST, "/identity/v3/auth/tokens", None, Some(body)).await;
    (s, h.get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string), b)
}

fn project_scope(name: &str) -> Value {
    json!({"project": {"name": name, "domain": {"id": "default"}}})
}

/// Validates `subject` as admin: the status of GET /v3/auth/tokens.
async fn validate_status(cloud: &TestCloud, admin: &str, subject: &str) -> u16 {
    let r = cloud
        .http()
        .get(cloud.at("/identity/v3/auth/tokens"))
        .header("x-auth-token", admin)
        .header("x-subject-token", subject)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn bootstrap_writes_admin_openrc_and_restarts_idempotently() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cloud = TestCloud::start_in(dir.path().to_path_buf(), fast).await;
    let rc = std::fs::read_to_string(dir.path().join("admin-openrc")).unwrap();
    let mode = std::fs::metadata(dir.path().join("admin-openrc")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    for line in [
        "export OS_PROJECT_DOMAIN_NAME=Default",
        "export OS_USER_DOMAIN_NAME=Default",
        "export OS_PROJECT_NAME=admin",
        "export OS_USERNAME=admin",
        &format!("export OS_PASSWORD={}", stratus_testkit::ADMIN_PASSWORD),
        &format!("export OS_AUTH_URL={}/identity/v3", cloud.url),
        "export OS_IDENTITY_API_VERSION=3",
        "export OS_IMAGE_API_VERSION=2",
    ] {
        assert!(rc.lines().any(|l| l == line), "admin-openrc lacks {line:?}:\n{rc}");
    }
    let admin = cloud.admin_token().await;
    let (_, users) = get(&cloud, "/identity/v3/users?name=admin", &admin).await;
    let admin_id = users["users"][0]["id"].as_str().unwrap().to_string();
    let (_, roles) = get(&cloud, "/identity/v3/roles", &admin).await;
    let role_names: Vec<String> = names(&roles["roles"], "name");
    for r in ["admin", "manager", "member", "reader", "service"] {
        assert!(role_names.contains(&r.to_string()), "{role_names:?}");
    }
    let (_, projects) = get(&cloud, "/identity/v3/projects", &admin).await;
    assert_eq!(names(&projects["projects"], "name"), vec!["admin", "service"]);
    cloud.shutdown().await;

    let cloud = TestCloud::start_in(dir.path().to_path_buf(), fast).await;
    let admin = cloud.admin_token().await;
    let (_, users) = get(&cloud, "/identity/v3/users", &admin).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1);
    assert_eq!(users["users"][0]["id"], admin_id.as_str(), "same admin after restart");
    let (_, services) = get(&cloud, "/identity/v3/services", &admin).await;
    let served = stratus::app::catalog().len();
    assert_eq!(services["services"].as_array().unwrap().len(), served, "no duplicate catalog entries");
    let (_, eps) = get(&cloud, "/identity/v3/endpoints", &admin).await;
    assert_eq!(eps["endpoints"].as_array().unwrap().len(), 3 * served, "public, internal and admin each");
    assert!(
        eps["endpoints"].as_array().unwrap().iter().all(|e| e["url"].as_str().unwrap().starts_with(&cloud.url)),
        "endpoints follow the new address"
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn token_issue_revoke_catalog_and_versions_through_cli() {
    let cloud = cloud().await;
    let t = cli(&cloud, &["token", "issue"]).await;
    let token = t["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("gAAAAA"), "a Fernet token: {token}");
    assert_eq!(t["project_id"].as_str().unwrap().len(), 32);
    assert!(t["expires"].as_str().unwrap().len() >= 19);

    let cat = cli(&cloud, &["catalog", "list"]).await;
    let mut types = names(&cat, "Type");
    types.sort();
    // Exactly what this binary serves.
    let mut served: Vec<&str> = stratus::app::catalog().iter().map(|e| e.service_type).collect();
    served.sort();
    assert_eq!(types, served);
    for ty in ["block-storage", "compute", "identity", "image", "network", "object-store", "placement"] {
        assert!(types.iter().any(|t| t == ty), "{ty} is served and listed: {types:?}");
    }
    let compute = cli(&cloud, &["catalog", "show", "compute"]).await;
    assert_eq!(compute["type"], "compute");
    assert!(compute.to_string().contains(&format!("{}/compute/v2.1", cloud.url)), "{compute}");

    let versions = cli(&cloud, &["versions", "show"]).await;
    assert!(
        versions.as_array().unwrap().iter().any(|v| v["Service Type"] == "identity" && v["Version"] == "3.14"),
        "{versions}"
    );

    // A token validated over HTTP has Keystone's body.
    let admin = cloud.admin_token().await;
    let r = cloud
        .http()
        .get(cloud.at("/identity/v3/auth/tokens"))
        .header("x-auth-token", &admin)
        .header("x-subject-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers().get("x-subject-token").unwrap().to_str().unwrap(), token);
    let body: Value = r.json().await.unwrap();
    let tk = &body["token"];
    assert_eq!(tk["methods"], json!(["password"]));
    assert_eq!(tk["user"]["name"], "admin");
    assert_eq!(tk["user"]["domain"], json!({"id": "default", "name": "Default"}));
    assert!(tk["user"].as_object().unwrap().contains_key("password_expires_at"));
    assert_eq!(tk["project"]["name"], "admin");
    assert_eq!(tk["project"]["domain"]["name"], "Default");
    assert_eq!(tk["is_domain"], false);
    let mut roles = names(&tk["roles"], "name");
    roles.sort();
    assert_eq!(roles, ["admin", "manager", "member", "reader"], "implied roles expanded");
    assert_eq!(tk["audit_ids"].as_array().unwrap().len(), 1);
    assert_eq!(tk["audit_ids"][0].as_str().unwrap().len(), 22);
    assert!(tk["expires_at"].as_str().unwrap().ends_with('Z') && tk["issued_at"].as_str().unwrap().contains('.'));
    assert_eq!(tk["catalog"].as_array().unwrap().len(), stratus::app::catalog().len());

    cli(&cloud, &["token", "revoke", &token]).await;
    assert_eq!(validate_status(&cloud, &admin, &token).await, 404, "revoked token no longer validates");
    let (s, _) = get(&cloud, "/identity/v3/auth/catalog", &token).await;
    assert_eq!(s, 401, "revoked token is refused");
    let (s, _) = get(&cloud, "/identity/v3/auth/catalog", &admin).await;
    assert_eq!(s, 200, "revoking one token leaves others alone");
    cloud.shutdown().await;
}

#[tokio::test]
async fn catalog_management_through_cli() {
    let cloud = cloud().await;
    let regions = cli(&cloud, &["region", "list"]).await;
    assert_eq!(names(&regions, "Region"), ["RegionOne"]);
    // Three endpoints (public, internal, admin) for each service the binary serves.
    let served = cli(&cloud, &["endpoint", "list"]).await.as_array().unwrap().len();
    let services = cli(&cloud, &["service", "list"]).await.as_array().unwrap().len();
    assert_eq!(served, 3 * services);
    let svc = cli(&cloud, &["service", "create", "--name", "glance2", "--description", "Extra image", "image2"]).await;
    assert_eq!(svc["type"], "image2");
    assert_eq!(svc["name"], "glance2");
    let list = cli(&cloud, &["service", "list"]).await;
    assert!(names(&list, "Name").contains(&"glance2".to_string()));
    let mut ids = Vec::new();
    for iface in ["public", "internal", "admin"] {
        let ep =
            cli(&cloud, &["endpoint", "create", "--region", "RegionOne", "image2", iface, "http://controller:9292"])
                .await;
        assert_eq!(ep["interface"], iface);
        assert_eq!(ep["region"], "RegionOne");
        assert_eq!(ep["service_type"], "image2");
        assert_eq!(ep["url"], "http://controller:9292");
        ids.push(ep["id"].as_str().unwrap().to_string());
    }
    let shown = cli(&cloud, &["endpoint", "show", &ids[0]]).await;
    assert_eq!(shown["service_name"], "glance2");
    let eps = cli(&cloud, &["endpoint", "list", "--service", "image2"]).await;
    assert_eq!(eps.as_array().unwrap().len(), 3);
    let all = cli(&cloud, &["endpoint", "list"]).await;
    assert_eq!(all.as_array().unwrap().len(), served + 3, "the served services' endpoints and image2's");
    cli(&cloud, &["endpoint", "delete", &ids[0]]).await;
    let eps = cli(&cloud, &["endpoint", "list", "--service", "image2"]).await;
    assert_eq!(eps.as_array().unwrap().len(), 2);
    // The new service shows in fresh tokens' catalogs.
    let cat = cli(&cloud, &["catalog", "list"]).await;
    assert!(names(&cat, "Type").contains(&"image2".to_string()));
    cli(&cloud, &["service", "delete", "image2"]).await;
    let list = cli(&cloud, &["service", "list"]).await;
    assert!(!names(&list, "Name").contains(&"glance2".to_string()));
    let err = cloud.openstack(&["endpoint", "show", &ids[1]]).await.unwrap_err();
    assert!(err.stderr.contains("No") || err.stderr.contains("404") || err.stderr.contains("ould not"), "{err}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn domains_projects_and_users_through_cli() {
    let cloud = cloud().await;
    let d = cli(&cloud, &["domain", "create", "--description", "An Example Domain", "example"]).await;
    assert_eq!(d["name"], "example");
    assert_eq!(d["enabled"], true);
    let domains = cli(&cloud, &["domain", "list"]).await;
    let mut dn = names(&domains, "Name");
    dn.sort();
    assert_eq!(dn, ["Default", "example"]);

    let p =
        cli(&cloud, &["project", "create", "--domain", "default", "--description", "Demo Project", "myproject"]).await;
    assert_eq!(p["domain_id"], "default");
    assert_eq!(p["parent_id"], "default");
    let pid = p["id"].as_str().unwrap().to_string();
    let child = cli(&cloud, &["project", "create", "--domain", "default", "--parent", "myproject", "child"]).await;
    assert_eq!(child["parent_id"], pid.as_str());
    let other = cli(&cloud, &["project", "create", "--domain", "example", "elsewhere"]).await;
    assert_eq!(other["domain_id"], d["id"]);
    let list = cli(&cloud, &["project", "list"]).await;
    let mut pn = names(&list, "Name");
    pn.sort();
    assert_eq!(pn, ["admin", "child", "elsewhere", "myproject", "service"]);
    let shown = cli(&cloud, &["project", "show", "myproject"]).await;
    assert_eq!(shown["description"], "Demo Project");
    let dup = cloud.openstack(&["project", "create", "--domain", "default", "myproject"]).await.unwrap_err();
    assert!(dup.stderr.contains("409") || dup.stderr.contains("Conflict"), "{dup}");

    let u = cli(
        &cloud,
        &["user", "create", "--domain", "default", "--password", "pw-one", "--project", "myproject", "myuser"],
    )
    .await;
    assert_eq!(u["name"], "myuser");
    assert_eq!(u["default_project_id"], pid.as_str());
    assert!(u.get("password").is_none(), "no password or hash in responses: {u}");
    let users = cli(&cloud, &["user", "list"]).await;
    let mut un = names(&users, "Name");
    un.sort();
    assert_eq!(un, ["admin", "myuser"]);
    let shown = cli(&cloud, &["user", "show", "myuser"]).await;
    assert_eq!(shown["id"], u["id"]);
    cli(&cloud, &["role", "add", "--project", "myproject", "--user", "myuser", "member"]).await;
    let me = Creds::new("myuser", "pw-one", "myproject");
    let t = cli_as(&cloud, &me, &["token", "issue"]).await;
    assert_eq!(t["project_id"], pid.as_str());

    // Admin resets the password: the old one stops working, the new one works.
    cli(&cloud, &["user", "set", "--password", "pw-two", "myuser"]).await;
    assert!(cloud.openstack_as(&me, &["token", "issue"]).await.is_err());
    let me = Creds::new("myuser", "pw-two", "myproject");
    cli_as(&cloud, &me, &["token", "issue"]).await;
    // The user changes their own password.
    cli_as(&cloud, &me, &["user", "password", "set", "--password", "pw-three", "--original-password", "pw-two"]).await;
    let me = Creds::new("myuser", "pw-three", "myproject");
    cli_as(&cloud, &me, &["token", "issue"]).await;
    let wrong =
        cloud.openstack_as(&me, &["user", "password", "set", "--password", "x", "--original-password", "wrong"]).await;
    assert!(wrong.is_err(), "a wrong original password is refused");

    // Disable: no more tokens.
    cli(&cloud, &["user", "set", "--disable", "myuser"]).await;
    assert_eq!(cli(&cloud, &["user", "show", "myuser"]).await["enabled"], false);
    assert!(cloud.openstack_as(&me, &["token", "issue"]).await.is_err());
    cli(&cloud, &["user", "set", "--enable", "myuser"]).await;
    cli_as(&cloud, &me, &["token", "issue"]).await;

    // Projects and domains disabled.
    cli(&cloud, &["project", "set", "--disable", "myproject"]).await;
    assert_eq!(cli(&cloud, &["project", "show", "myproject"]).await["enabled"], false);
    assert!(cloud.openstack_as(&me, &["token", "issue"]).await.is_err(), "no token for a disabled project");
    cli(&cloud, &["domain", "set", "--disable", "example"]).await;
    assert_eq!(cli(&cloud, &["domain", "show", "example"]).await["enabled"], false);

    let refused = cloud.openstack(&["project", "delete", "myproject"]).await;
    assert!(refused.is_err(), "a project with children is not deleted");
    cli(&cloud, &["project", "delete", "child"]).await;
    cli(&cloud, &["project", "delete", "myproject"]).await;
    cli(&cloud, &["user", "delete", "myuser"]).await;
    let users = cli(&cloud, &["user", "list"]).await;
    assert_eq!(names(&users, "Name"), ["admin"]);
    let gone = cloud.openstack(&["user", "show", "myuser"]).await.unwrap_err();
    assert!(gone.stderr.to_lowercase().contains("no user"), "{gone}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn groups_roles_and_assignments_through_cli() {
    let cloud = cloud().await;
    cli(&cloud, &["project", "create", "--domain", "default", "demo"]).await;
    cli(&cloud, &["user", "create", "--password", "pw", "alice"]).await;
    cli(&cloud, &["user", "create", "--password", "pw", "bob"]).await;
    let g = cli(&cloud, &["group", "create", "devs"]).await;
    assert_eq!(g["name"], "devs");
    cli(&cloud, &["group", "add", "user", "devs", "alice"]).await;
    let (code, out, _) = cloud.openstack_raw(&cloud.admin(), &["group", "contains", "user", "devs", "alice"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("alice in group devs"), "{out}");
    let (_, out, err) = cloud.openstack_raw(&cloud.admin(), &["group", "contains", "user", "devs", "bob"]).await;
    assert!(format!("{out}{err}").contains("bob not in group devs"), "{out}{err}");

    // Bootstrap's roles, and the services' own (object storage's ResellerAdmin), then ours.
    let mut before = names(&cli(&cloud, &["role", "list"]).await, "Name");
    for role in ["admin", "manager", "member", "reader", "service"] {
        assert!(before.contains(&role.to_string()), "bootstrap role {role} in {before:?}");
    }
    let r = cli(&cloud, &["role", "create", "myrole"]).await;
    assert_eq!(r["name"], "myrole");
    let roles = cli(&cloud, &["role", "list"]).await;
    let mut rn = names(&roles, "Name");
    rn.sort();
    before.push("myrole".into());
    before.sort();
    assert_eq!(rn, before);
    assert!(cloud.openstack(&["role", "create", "myrole"]).await.is_err(), "duplicate role name");

    cli(&cloud, &["role", "add", "--project", "demo", "--user", "bob", "myrole"]).await;
    cli(&cloud, &["role", "add", "--project", "demo", "--group", "devs", "member"]).await;
    let plain = cli(&cloud, &["role", "assignment", "list", "--project", "demo", "--names"]).await;
    assert_eq!(plain.as_array().unwrap().len(), 2, "{plain}");
    assert!(plain.as_array().unwrap().iter().any(|a| a["Group"] == "devs@Default" && a["Role"] == "member"));
    let eff = cli(&cloud, &["role", "assignment", "list", "--names", "--effective", "--project", "demo"]).await;
    let mut got: Vec<String> = eff
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["User"].as_str().unwrap(),
                a["Role"].as_str().unwrap(),
                a["Project"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["alice@Default member demo@Default", "alice@Default reader demo@Default", "bob@Default myrole demo@Default"],
        "group expanded to its member, member implies reader"
    );
    let mine = cli(&cloud, &["role", "assignment", "list", "--user", "alice", "--effective", "--names"]).await;
    assert_eq!(mine.as_array().unwrap().len(), 2);

    // Alice gets a token for demo through her group.
    let alice = Creds::new("alice", "pw", "demo");
    cli_as(&cloud, &alice, &["token", "issue"]).await;

    let implied = cli(&cloud, &["implied", "role", "list"]).await;
    let pairs: Vec<String> = implied
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}>{}", r["Prior Role Name"].as_str().unwrap(), r["Implied Role Name"].as_str().unwrap()))
        .collect();
    for pair in ["admin>manager", "manager>member", "member>reader"] {
        assert!(pairs.contains(&pair.to_string()), "bootstrap's {pair} in {pairs:?}");
    }

    let bob = Creds::new("bob", "pw", "demo");
    cli_as(&cloud, &bob, &["token", "issue"]).await;
    cli(&cloud, &["role", "remove", "--project", "demo", "--user", "bob", "myrole"]).await;
    assert!(cloud.openstack_as(&bob, &["token", "issue"]).await.is_err(), "no role left on demo");
    cli(&cloud, &["role", "delete", "myrole"]).await;
    let roles = cli(&cloud, &["role", "list"]).await;
    assert!(!names(&roles, "Name").contains(&"myrole".to_string()));
    cloud.shutdown().await;
}

#[tokio::test]
async fn application_credentials_through_cli() {
    let cloud = cloud().await;
    cli(&cloud, &["project", "create", "--domain", "default", "demo"]).await;
    cli(&cloud, &["user", "create", "--password", "pw", "carol"]).await;
    cli(&cloud, &["role", "add", "--project", "demo", "--user", "carol", "member"]).await;
    let carol = Creds::new("carol", "pw", "demo");
    let ac = cli_as(&cloud, &carol, &["application", "credential", "create", "--description", "ci", "ci-cred"]).await;
    let secret = ac["Secret"].as_str().unwrap().to_string();
    let ac_id = ac["ID"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32);
    assert_eq!(ac["Unrestricted"], false);
    let mut roles: Vec<String> =
        ac["Roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or_default().to_string()).collect();
    roles.sort();
    assert_eq!(roles, ["member", "reader"], "defaults to the token's roles: {ac}");
    let list = cli_as(&cloud, &carol, &["application", "credential", "list"]).await;
    assert_eq!(names(&list, "Name"), ["ci-cred"]);
    assert!(!list.to_string().contains(&secret), "the secret is shown once only");

    let auth_url = format!("{}/identity/v3", cloud.url);
    let env = [
        ("OS_AUTH_TYPE", "v3applicationcredential"),
        ("OS_AUTH_URL", auth_url.as_str()),
        ("OS_APPLICATION_CREDENTIAL_ID", ac_id.as_str()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret.as_str()),
        ("OS_IDENTITY_API_VERSION", "3"),
        ("OS_REGION_NAME", "RegionOne"),
    ];
    let (code, out, err) = cli_env(&env, &["token", "issue", "-f", "json"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let t: Value = serde_json::from_str(&out).unwrap();
    let demo = cli(&cloud, &["project", "show", "demo"]).await;
    assert_eq!(t["project_id"], demo["id"], "scoped to the credential's project");
    // A restricted credential cannot mint more credentials.
    let (code, _, _) = cli_env(&env, &["application", "credential", "create", "nested", "-f", "json"]).await;
    assert_ne!(code, Some(0));
    let wrong = [env[0], env[1], env[2], ("OS_APPLICATION_CREDENTIAL_SECRET", "wrong"), env[4], env[5]];
    let (code, _, _) = cli_env(&wrong, &["token", "issue", "-f", "json"]).await;
    assert_ne!(code, Some(0), "a wrong secret is refused");

    // Over HTTP the token shows the credential and is limited to its roles.
    let admin = cloud.admin_token().await;
    let r = cloud
        .http()
        .get(cloud.at("/identity/v3/auth/tokens"))
        .header("x-auth-token", &admin)
        .header("x-subject-token", t["id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token"]["methods"], json!(["application_credential"]));
    assert_eq!(body["token"]["application_credential"]["id"], ac_id.as_str());
    assert_eq!(body["token"]["application_credential"]["restricted"], true);

    cli_as(&cloud, &carol, &["application", "credential", "delete", "ci-cred"]).await;
    let (code, _, _) = cli_env(&env, &["token", "issue", "-f", "json"]).await;
    assert_ne!(code, Some(0), "a deleted credential no longer authenticates");
    assert_eq!(validate_status(&cloud, &admin, t["id"].as_str().unwrap()).await, 404, "its tokens are revoked");
    cloud.shutdown().await;
}

#[tokio::test]
async fn rbac_admin_member_other_project_disabled_and_revoked() {
    let cloud = cloud().await;
    let admin = cloud.admin_token().await;
    let mk = |name: &str| json!({"project": {"name": name, "domain_id": "default"}});
    let (s, _, a) = http(&cloud, reqwest::Method::POST, "/identity/v3/projects", Some(&admin), Some(mk("pa"))).await;
    assert_eq!(s, 201);
    let (_, _, b) = http(&cloud, reqwest::Method::POST, "/identity/v3/projects", Some(&admin), Some(mk("pb"))).await;
    let pa = a["project"]["id"].as_str().unwrap().to_string();
    let pb = b["project"]["id"].as_str().unwrap().to_string();
    let (_, roles) = get(&cloud, "/identity/v3/roles?name=member", &admin).await;
    let member = roles["roles"][0]["id"].as_str().unwrap().to_string();
    let mut uids = Vec::new();
    for (name, project) in [("ua", &pa), ("ub", &pb)] {
        let (s, _, u) = http(
            &cloud,
            reqwest::Method::POST,
            "/identity/v3/users",
            Some(&admin),
            Some(json!({"user": {"name": name, "password": "pw"}})),
        )
        .await;
        assert_eq!(s, 201);
        let uid = u["user"]["id"].as_str().unwrap().to_string();
        let (s, _, _) = http(
            &cloud,
            reqwest::Method::PUT,
            &format!("/identity/v3/projects/{project}/users/{uid}/roles/{member}"),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(s, 204);
        uids.push(uid);
    }
    let (s, ta, body) = password_token(&cloud, "ua", "pw", project_scope("pa")).await;
    assert_eq!(s, 201, "{body}");
    let ta = ta.unwrap();
    let (_, tb, _) = password_token(&cloud, "ub", "pw", project_scope("pb")).await;
    let tb = tb.unwrap();

    // Failed logins all look alike.
    let (s1, _, e1) = password_token(&cloud, "ua", "wrong", project_scope("pa")).await;
    let (s2, _, e2) = password_token(&cloud, "nobody", "pw", project_scope("pa")).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(e1, e2, "no hint whether the user exists");
    assert_eq!(e1["error"]["code"], 401);
    let (s, _, _) = password_token(&cloud, "ua", "pw", project_scope("pb")).await;
    assert_eq!(s, 401, "no token for a project without a role");

    // member vs admin
    for path in
        ["/identity/v3/users", "/identity/v3/projects", "/identity/v3/role_assignments", "/identity/v3/endpoints"]
    {
        assert_eq!(get(&cloud, path, &ta).await.0, 403, "member lists {path}");
        assert_eq!(get(&cloud, path, &admin).await.0, 200, "admin lists {path}");
    }
    let (s, _, e) =
        http(&cloud, reqwest::Method::POST, "/identity/v3/users", Some(&ta), Some(json!({"user": {"name": "x"}})))
            .await;
    assert_eq!(s, 403);
    assert_eq!(e["error"]["title"], "Forbidden");
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::PUT,
        &format!("/identity/v3/projects/{pa}/users/{}/roles/{member}", uids[1]),
        Some(&ta),
        None,
    )
    .await;
    assert_eq!(s, 403, "members do not grant roles");
    // Users read themselves and their own project, not others'.
    assert_eq!(get(&cloud, &format!("/identity/v3/users/{}", uids[0]), &ta).await.0, 200);
    assert_eq!(get(&cloud, &format!("/identity/v3/users/{}", uids[1]), &ta).await.0, 403);
    assert_eq!(get(&cloud, &format!("/identity/v3/projects/{pa}"), &ta).await.0, 200);
    assert_eq!(get(&cloud, &format!("/identity/v3/projects/{pb}"), &ta).await.0, 403, "another project's user");
    assert_eq!(get(&cloud, &format!("/identity/v3/projects/{pa}"), &tb).await.0, 403);
    let (s, p) = get(&cloud, "/identity/v3/auth/projects", &ta).await;
    assert_eq!(s, 200);
    assert_eq!(names(&p["projects"], "name"), ["pa"]);
    // A user may validate their own token but not another's.
    assert_eq!(validate_status(&cloud, &ta, &ta).await, 200);
    assert_eq!(validate_status(&cloud, &ta, &tb).await, 403);
    // Changing a password takes the original password, whatever token comes with it (as
    // Keystone: the call is not policy-enforced, so an expired password can be changed).
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::POST,
        &format!("/identity/v3/users/{}/password", uids[1]),
        Some(&ta),
        Some(json!({"user": {"password": "x", "original_password": "not-the-password"}})),
    )
    .await;
    assert_eq!(s, 401, "another user's password needs its original");

    // Revoked token.
    let (_, t2, _) = password_token(&cloud, "ua", "pw", project_scope("pa")).await;
    let t2 = t2.unwrap();
    let (s, _, _) = http(&cloud, reqwest::Method::DELETE, "/identity/v3/auth/tokens", Some(&admin), None).await;
    assert_eq!(s, 400, "DELETE without X-Subject-Token");
    let r = cloud
        .http()
        .delete(cloud.at("/identity/v3/auth/tokens"))
        .header("x-auth-token", &t2)
        .header("x-subject-token", &t2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "users revoke their own tokens");
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &t2).await.0, 401);
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &ta).await.0, 200, "other tokens unaffected");
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", "garbage").await.0, 401);

    // Disabled user: existing tokens stop working, no new ones.
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::PATCH,
        &format!("/identity/v3/users/{}", uids[0]),
        Some(&admin),
        Some(json!({"user": {"enabled": false}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &ta).await.0, 401);
    assert_eq!(password_token(&cloud, "ua", "pw", project_scope("pa")).await.0, 401);
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::PATCH,
        &format!("/identity/v3/users/{}", uids[0]),
        Some(&admin),
        Some(json!({"user": {"enabled": true}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        get(&cloud, "/identity/v3/auth/projects", &ta).await.0,
        401,
        "re-enabling does not revive revoked tokens"
    );
    assert_eq!(password_token(&cloud, "ua", "pw", project_scope("pa")).await.0, 201);

    // Removing the role voids the project's tokens; disabling the project too.
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &tb).await.0, 200);
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::DELETE,
        &format!("/identity/v3/projects/{pb}/users/{}/roles/{member}", uids[1]),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &tb).await.0, 401);
    let (_, t3, _) = password_token(&cloud, "ua", "pw", project_scope("pa")).await;
    let t3 = t3.unwrap();
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::PATCH,
        &format!("/identity/v3/projects/{pa}"),
        Some(&admin),
        Some(json!({"project": {"enabled": false}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &t3).await.0, 401, "disabled project");

    // Errors are Keystone's.
    let (s, e) = get(&cloud, "/identity/v3/users/nope", &admin).await;
    assert_eq!(s, 404);
    assert_eq!(e, json!({"error": {"code": 404, "message": "Could not find user: nope.", "title": "Not Found"}}));
    cloud.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_lockout_and_key_rotation() {
    let cloud = TestCloud::start_with(|c| {
        fast(c);
        c.identity.token_expiration_secs = 2;
        c.identity.lockout_failure_attempts = 2;
        c.identity.lockout_duration_secs = 600;
        c.identity.refresh_secs = 1;
    })
    .await;
    let admin = cloud.admin_token().await;
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::POST,
        "/identity/v3/users",
        Some(&admin),
        Some(json!({"user": {"name": "dave", "password": "pw"}})),
    )
    .await;
    assert_eq!(s, 201);
    // Lockout after two failures, even with the right password.
    assert_eq!(password_token(&cloud, "dave", "bad", Value::Null).await.0, 401);
    assert_eq!(password_token(&cloud, "dave", "bad", Value::Null).await.0, 401);
    let (s, _, e) = password_token(&cloud, "dave", "pw", Value::Null).await;
    assert_eq!(s, 401);
    assert!(e["error"]["message"].as_str().unwrap().contains("locked"), "{e}");
    let (_, users) = get(&cloud, "/identity/v3/users?name=dave", &admin).await;
    let dave = users["users"][0]["id"].as_str().unwrap().to_string();
    http(
        &cloud,
        reqwest::Method::PATCH,
        &format!("/identity/v3/users/{dave}"),
        Some(&admin),
        Some(json!({"user": {"enabled": true}})),
    )
    .await;
    let (s, unscoped, body) = password_token(&cloud, "dave", "pw", Value::Null).await;
    assert_eq!(s, 201, "an admin re-enable unlocks");
    assert!(body["token"].get("project").is_none() && body["token"].get("catalog").is_none(), "unscoped: {body}");

    // Key rotation: tokens from the previous primary still validate.
    let before = cloud.admin_token().await;
    stratus_identity::rotate_keys(&cloud.data_dir, &Default::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = cloud.admin_token().await;
    assert_eq!(validate_status(&cloud, &after, &before).await, 200, "old-key token still valid");
    assert_eq!(validate_status(&cloud, &before, &after).await, 200);

    // Expiry.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &before).await.0, 401, "expired token");
    let fresh = cloud.admin_token().await;
    assert_eq!(validate_status(&cloud, &fresh, unscoped.as_deref().unwrap()).await, 404, "expired subject");
    cloud.shutdown().await;
}

#[tokio::test]
async fn token_method_and_domain_and_system_scopes() {
    let cloud = cloud().await;
    let (s, unscoped, _) = password_token(&cloud, "admin", stratus_testkit::ADMIN_PASSWORD, json!("unscoped")).await;
    assert_eq!(s, 201);
    let unscoped = unscoped.unwrap();
    // Rescope with the token method.
    let body = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}}, "scope": project_scope("admin")}});
    let (s, h, b) = http(&cloud, reqwest::Method::POST, "/identity/v3/auth/tokens?nocatalog", None, Some(body)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["token"]["methods"], json!(["password", "token"]));
    assert!(b["token"].get("catalog").is_none(), "nocatalog");
    assert_eq!(b["token"]["audit_ids"].as_array().unwrap().len(), 2, "audit chain");
    let scoped = h.get("x-subject-token").unwrap().to_str().unwrap().to_string();
    // System scope.
    let (s, sys, b) =
        password_token(&cloud, "admin", stratus_testkit::ADMIN_PASSWORD, json!({"system": {"all": true}})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["token"]["system"], json!({"all": true}));
    let (s, sysinfo) = get(&cloud, "/identity/v3/auth/system", sys.as_deref().unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(sysinfo["system"], json!([{"all": true}]));
    // Domain scope needs a role on the domain.
    let (s, _, _) =
        password_token(&cloud, "admin", stratus_testkit::ADMIN_PASSWORD, json!({"domain": {"name": "Default"}})).await;
    assert_eq!(s, 401);
    let (_, users) = get(&cloud, "/identity/v3/users?name=admin", &scoped).await;
    let admin_id = users["users"][0]["id"].as_str().unwrap().to_string();
    let (_, roles) = get(&cloud, "/identity/v3/roles?name=reader", &scoped).await;
    let reader = roles["roles"][0]["id"].as_str().unwrap().to_string();
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::PUT,
        &format!("/identity/v3/domains/default/users/{admin_id}/roles/{reader}"),
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, dom, b) =
        password_token(&cloud, "admin", stratus_testkit::ADMIN_PASSWORD, json!({"domain": {"name": "Default"}})).await;
    assert_eq!(s, 201);
    assert_eq!(b["token"]["domain"], json!({"id": "default", "name": "Default"}));
    assert_eq!(names(&b["token"]["roles"], "name"), ["reader"]);
    let (_, d) = get(&cloud, "/identity/v3/auth/domains", dom.as_deref().unwrap()).await;
    assert_eq!(names(&d["domains"], "id"), ["default"]);
    let (s, ra) = get(
        &cloud,
        &format!("/identity/v3/role_assignments?scope.domain.id=default&user.id={admin_id}&include_names"),
        &scoped,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ra["role_assignments"][0]["scope"]["domain"]["name"], "Default");
    // Revoking the parent chain: the rescoped token dies with its parent's chain event.
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::PUT,
        &format!("/identity/v3/system/users/{admin_id}/roles/{reader}"),
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, sr) = get(&cloud, &format!("/identity/v3/system/users/{admin_id}/roles"), &scoped).await;
    assert_eq!(s, 200);
    assert_eq!(sr["roles"].as_array().unwrap().len(), 2);
    cloud.shutdown().await;
}

/// Failed logins are throttled per source and per account *before* any password hash
/// runs (the hash is what made failed logins a memory and CPU weapon), with Keystone's
/// error body and a `Retry-After` the client can honour; correct logins take no tokens.
#[tokio::test]
async fn failed_logins_are_throttled_per_source_and_per_account_before_hashing() {
    let cloud = TestCloud::start_with(|c| {
        fast(c);
        c.identity.failed_login_source_burst = 4;
        c.identity.failed_login_source_per_minute = 1;
        c.identity.failed_login_user_burst = 2;
        c.identity.failed_login_user_per_minute = 1;
    })
    .await;
    let admin = cloud.admin_token().await;
    let (s, _, _) = http(
        &cloud,
        reqwest::Method::POST,
        "/identity/v3/users",
        Some(&admin),
        Some(json!({"user": {"name": "erin", "password": "pw"}})),
    )
    .await;
    assert_eq!(s, 201);
    // Correct logins never count.
    for _ in 0..6 {
        assert_eq!(password_token(&cloud, "erin", "pw", Value::Null).await.0, 201);
    }
    // Two failures for erin use up her account's burst: the third attempt is refused
    // unhashed, even with the right password.
    assert_eq!(password_token(&cloud, "erin", "bad", Value::Null).await.0, 401);
    assert_eq!(password_token(&cloud, "erin", "bad", Value::Null).await.0, 401);
    let r = cloud
        .http()
        .post(cloud.at("/identity/v3/auth/tokens"))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "erin", "domain": {"name": "Default"}, "password": "pw"}}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u32 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429, "{body}");
    assert_eq!(body["error"]["title"], "Too Many Requests", "{body}");
    // Another account from the same address still works until the address's own burst
    // (4 failures) is spent: two more unknown names, then everything from it waits.
    assert_eq!(password_token(&cloud, "nobody-1", "x", Value::Null).await.0, 401);
    assert_eq!(password_token(&cloud, "nobody-2", "x", Value::Null).await.0, 401);
    assert_eq!(password_token(&cloud, "nobody-3", "x", Value::Null).await.0, 429);
    assert_eq!(password_token(&cloud, "admin", "wrong", Value::Null).await.0, 429);
    // Tokens already issued keep working: validation hashes nothing.
    assert_eq!(get(&cloud, "/identity/v3/auth/projects", &admin).await.0, 200);
    cloud.shutdown().await;
}
