//! The web dashboard over HTTP, as a browser without script would use it: log in through
//! the form, launch an instance on the fake driver, see it listed with its name escaped,
//! CSRF refusals, the security headers, a member's view, logout revoking the token.
//! (The real-browser test is `dashboard_browser`.)

use std::collections::HashMap;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use stratus_testkit::{TestCloud, ADMIN_PASSWORD};

/// A browser-like client: follows no redirects on its own, keeps cookies.
pub struct Web {
    client: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

/// A page: status, headers, body.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect points (path under the cloud).
    pub fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The first CSRF token in the page's forms.
    pub fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf_token\" value=\"").expect("a form with a CSRF token");
        let rest = &self.body[at + "name=\"csrf_token\" value=\"".len()..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }
}

impl Web {
    pub fn new(cloud: &TestCloud) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Web { client, base: cloud.at(""), cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for c in headers.get_all(SET_COOKIE) {
            let c = c.to_str().expect("ascii cookie");
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').expect("name=value");
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        let status = r.status();
        let headers = r.headers().clone();
        self.keep(&headers);
        Page { status, headers, body: r.text().await.expect("body") }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self.client.get(format!("{}{path}", self.base)).header(COOKIE, self.cookie_header()).send().await;
        self.finish(r.expect("GET")).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await;
        self.finish(r.expect("POST")).await
    }

    /// Logs in through the form; returns the response to the form's POST.
    pub async fn login(&mut self, domain: &str, user: &str, password: &str) -> Page {
        let form = self.get("/dashboard/auth/login").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/dashboard/auth/login",
            &[("csrf_token", &csrf), ("domain", domain), ("username", user), ("password", password)],
        )
        .await
    }
}

async fn api(cloud: &TestCloud, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = cloud.http().request(method, cloud.at(path)).header("x-auth-token", token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("api call");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// A project with a member user (password `member-pw`), made through the identity API.
async fn member(cloud: &TestCloud, admin: &str, project: &str, user: &str) {
    use reqwest::Method;
    let p = api(cloud, admin, Method::POST, "/identity/v3/projects", Some(json!({"project": {"name": project}}))).await;
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    let u = api(
        cloud,
        admin,
        Method::POST,
        "/identity/v3/users",
        Some(json!({"user": {"name": user, "password": "member-pw", "default_project_id": pid}})),
    )
    .await;
    let uid = u["user"]["id"].as_str().unwrap().to_string();
    let roles = api(cloud, admin, Method::GET, "/identity/v3/roles?name=member", None).await;
    let rid = roles["roles"][0]["id"].as_str().unwrap().to_string();
    let r = cloud
        .http()
        .put(cloud.at(&format!("/identity/v3/projects/{pid}/users/{uid}/roles/{rid}")))
        .header("x-auth-token", admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// The public 1 MiB raw image `tiny` the fake driver boots, through the image API; its id.
pub async fn tiny_image(cloud: &TestCloud, admin: &str) -> String {
    let body = json!({"name": "tiny", "disk_format": "raw", "container_format": "bare", "visibility": "public"});
    let v = api(cloud, admin, reqwest::Method::POST, "/image/v2/images", Some(body)).await;
    let id = v["id"].as_str().unwrap().to_string();
    let r = cloud
        .http()
        .put(cloud.at(&format!("/image/v2/images/{id}/file")))
        .header("x-auth-token", admin)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    id
}

async fn server_names(cloud: &TestCloud, token: &str) -> Vec<String> {
    let v = api(cloud, token, reqwest::Method::GET, "/compute/v2.1/servers", None).await;
    v["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn dashboard_login_launch_escape_csrf_and_logout() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin_token().await;
    let image_id = tiny_image(&cloud, &admin).await;

    // Not logged in: pages send to the login form.
    let mut web = Web::new(&cloud);
    let p = web.get("/dashboard/project/instances").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(p.location().ends_with("/dashboard/auth/login"), "{}", p.location());

    // A wrong password: the form again, with identity's refusal, and no session.
    let p = web.login("Default", "admin", "wrong").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("<form") && !web.cookies.contains_key("stratus_session"));

    // The login form without its CSRF token is refused before identity is asked.
    let p = web
        .post("/dashboard/auth/login", &[("domain", "Default"), ("username", "admin"), ("password", ADMIN_PASSWORD)])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Logging in (with the domain's id, as the seeds type it) sets a strict session cookie.
    let p = web.login("default", "admin", ADMIN_PASSWORD).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(p.location().ends_with("/dashboard/project/overview"));
    let set: Vec<_> = p.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let session = set.iter().find(|c| c.starts_with("stratus_session=")).expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag");

    let p = web.get("/dashboard/project/overview").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Limit summary") && p.body.contains("Instances"));
    let csp = p.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(p.body.contains(">Users<"), "an admin sees the identity panels");

    // Launch on the fake driver with a hostile name.
    let form = web.get("/dashboard/project/instances/launch").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(&image_id) && form.body.contains("m1.tiny"));
    let csrf = form.csrf();
    let evil = "<script>alert(1)</script>";
    let launch =
        [("name", evil), ("image_id", image_id.as_str()), ("flavor_id", "1"), ("network_id", ""), ("key_name", "")];

    // Without the CSRF token, or with another one, nothing is created.
    let p = web.post("/dashboard/project/instances/launch", &launch).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let mut forged = launch.to_vec();
    forged.push(("csrf_token", "00"));
    assert_eq!(web.post("/dashboard/project/instances/launch", &forged).await.status, StatusCode::FORBIDDEN);
    assert!(server_names(&cloud, &admin).await.is_empty(), "a refused form launched nothing");

    let mut ok = launch.to_vec();
    ok.push(("csrf_token", &csrf));
    let p = web.post("/dashboard/project/instances/launch", &ok).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(server_names(&cloud, &admin).await, vec![evil.to_string()]);

    let list = web.get("/dashboard/project/instances").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the name is shown, escaped");
    assert!(!list.body.contains(evil), "the name is never markup");
    assert!(list.body.contains("Launched instance &lt;script&gt;"), "the message is escaped too");
    let rows = web.get("/dashboard/project/instances/rows").await;
    assert!(rows.body.starts_with("<table") && rows.body.contains("&lt;script&gt;"));

    // The instance becomes ACTIVE (fake driver), then is stopped from the page.
    let id = api(&cloud, &admin, reqwest::Method::GET, "/compute/v2.1/servers", None).await["servers"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut status = String::new();
    for _ in 0..100 {
        let v = api(&cloud, &admin, reqwest::Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
        status = v["server"]["status"].as_str().unwrap().to_string();
        if status == "ACTIVE" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "ACTIVE");
    let list = web.get("/dashboard/project/instances").await;
    assert!(list.body.contains("status-ACTIVE") && list.body.contains("Console"));
    let csrf = list.csrf();
    let p = web
        .post(&format!("/dashboard/project/instances/{id}/action"), &[("csrf_token", &csrf), ("action", "stop")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    // An action the API refuses shows the API's message (here: not a known action).
    let p = web
        .post(&format!("/dashboard/project/instances/{id}/action"), &[("csrf_token", &csrf), ("action", "explode")])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);

    // Networks: create a network with a subnet; a bad CIDR leaves no network behind.
    let p = web
        .post(
            "/dashboard/project/networks",
            &[
                ("csrf_token", &csrf),
                ("name", "web-net"),
                ("subnet_name", "web-sub"),
                ("cidr", "10.9.0.0/24"),
                ("enable_dhcp", "on"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web
        .post("/dashboard/project/networks", &[("csrf_token", &csrf), ("name", "bad-net"), ("cidr", "10.9.0.0/99")])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    let nets = web.get("/dashboard/project/networks").await;
    assert!(nets.body.contains("web-net") && nets.body.contains("10.9.0.0/24"));
    assert!(!nets.body.contains("bad-net"), "the refused subnet's network was removed");

    // Logout revokes the token: the old cookie no longer opens anything.
    let old = web.cookies.get("stratus_session").cloned().unwrap();
    let p = web.post("/dashboard/auth/logout", &[("csrf_token", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    web.cookies.insert("stratus_session".into(), old);
    let p = web.get("/dashboard/project/overview").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    cloud.shutdown().await;
}

#[tokio::test]
async fn dashboard_member_sees_own_project_only_and_no_admin_panels() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin_token().await;
    let image_id = tiny_image(&cloud, &admin).await;
    member(&cloud, &admin, "blue", "bob").await;
    // The admin's instance in the admin project.
    api(
        &cloud,
        &admin,
        reqwest::Method::POST,
        "/compute/v2.1/servers",
        Some(
            json!({"server": {"name": "admins-secret-vm", "imageRef": image_id, "flavorRef": "1", "networks": "none"}}),
        ),
    )
    .await;

    let mut web = Web::new(&cloud);
    let p = web.login("Default", "bob", "member-pw").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web.get("/dashboard/project/overview").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("blue"), "scoped to the member's project");
    assert!(!p.body.contains(">Users<") && !p.body.contains(">Identity<"), "no admin panels for a member");
    let p = web.get("/dashboard/project/instances").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains("admins-secret-vm"), "another project's server is not listed");
    // The admin page itself is refused by the identity API's policy, not hidden by us.
    let p = web.get("/dashboard/identity/users").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);

    // The project switcher: bob gets a role on a second project and switches to it; a
    // project he has no role on is refused.
    member(&cloud, &admin, "green", "gina").await;
    let projects = api(&cloud, &admin, reqwest::Method::GET, "/identity/v3/projects", None).await;
    let id_of = |name: &str| {
        projects["projects"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (green, admin_project) = (id_of("green"), id_of("admin"));
    let users = api(&cloud, &admin, reqwest::Method::GET, "/identity/v3/users?name=bob", None).await;
    let bob = users["users"][0]["id"].as_str().unwrap().to_string();
    let roles = api(&cloud, &admin, reqwest::Method::GET, "/identity/v3/roles?name=member", None).await;
    let member_role = roles["roles"][0]["id"].as_str().unwrap().to_string();
    let r = cloud
        .http()
        .put(cloud.at(&format!("/identity/v3/projects/{green}/users/{bob}/roles/{member_role}")))
        .header("x-auth-token", &admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // The list of projects is read at login: log in again.
    let csrf = web.get("/dashboard/project/overview").await.csrf();
    web.post("/dashboard/auth/logout", &[("csrf_token", &csrf)]).await;
    assert_eq!(web.login("Default", "bob", "member-pw").await.status, StatusCode::SEE_OTHER);
    let csrf = web.get("/dashboard/project/overview").await.csrf();
    let p = web.post("/dashboard/auth/switch", &[("csrf_token", &csrf), ("project_id", &admin_project)]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "no role on the admin project");
    let p = web.post("/dashboard/auth/switch", &[("csrf_token", &csrf), ("project_id", &green)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web.get("/dashboard/project/overview").await;
    assert!(p.body.contains(&format!("<option value=\"{green}\" selected>green</option>")), "{}", p.body);
    assert!(p.body.contains("Switched to project green."));
    cloud.shutdown().await;
}

async fn wait_active(cloud: &TestCloud, token: &str, id: &str) {
    for _ in 0..100 {
        let v = api(cloud, token, reqwest::Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
        if v["server"]["status"] == "ACTIVE" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("server {id} did not become ACTIVE");
}

#[tokio::test]
async fn dashboard_floating_ip_allocate_associate_release() {
    use reqwest::Method;
    let cloud = TestCloud::start().await;
    let admin = cloud.admin_token().await;
    let image_id = tiny_image(&cloud, &admin).await;
    let post = |path: &'static str, body: Value| {
        let (cloud, admin) = (&cloud, &admin);
        async move { api(cloud, admin, Method::POST, path, Some(body)).await }
    };
    let ext = post("/network/v2.0/networks", json!({"network": {"name": "public", "router:external": true}})).await;
    let ext = ext["network"]["id"].as_str().unwrap().to_string();
    post(
        "/network/v2.0/subnets",
        json!({"subnet": {"network_id": ext, "cidr": "203.0.113.0/24", "ip_version": 4, "enable_dhcp": false}}),
    )
    .await;
    let net = post("/network/v2.0/networks", json!({"network": {"name": "priv"}})).await;
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let sub =
        post("/network/v2.0/subnets", json!({"subnet": {"network_id": net, "cidr": "10.20.0.0/24", "ip_version": 4}}))
            .await;
    let sub = sub["subnet"]["id"].as_str().unwrap().to_string();
    let server = post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "fip-vm", "imageRef": image_id, "flavorRef": "1", "networks": [{"uuid": net}]}}),
    )
    .await;
    let server = server["server"]["id"].as_str().unwrap().to_string();
    wait_active(&cloud, &admin, &server).await;
    let ports = api(&cloud, &admin, Method::GET, &format!("/network/v2.0/ports?device_id={server}"), None).await;
    let port = ports["ports"][0]["id"].as_str().unwrap().to_string();

    let mut web = Web::new(&cloud);
    assert_eq!(web.login("Default", "admin", ADMIN_PASSWORD).await.status, StatusCode::SEE_OTHER);
    // The router, from the Routers panel: a gateway on `public`, an interface on `priv`.
    let p = web.get("/dashboard/project/routers").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("No routers.") && p.body.contains(&format!("value=\"{ext}\"")));
    let csrf = p.csrf();
    let p = web
        .post("/dashboard/project/routers", &[("csrf_token", &csrf), ("name", "r1"), ("external_network_id", &ext)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let routers = api(&cloud, &admin, Method::GET, "/network/v2.0/routers", None).await;
    let router = routers["routers"][0].clone();
    assert_eq!(router["external_gateway_info"]["network_id"], json!(ext));
    let router = router["id"].as_str().unwrap().to_string();
    let p = web
        .post(&format!("/dashboard/project/routers/{router}/interface"), &[("csrf_token", &csrf), ("subnet_id", &sub)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = web.get("/dashboard/project/routers").await;
    assert!(p.body.contains("10.20.0.0/24 (10.20.0.1)"), "the interface is listed: {}", p.body);

    let p = web.get("/dashboard/project/floating_ips").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("No floating IPs.") && p.body.contains(&format!("value=\"{ext}\"")));
    let csrf = p.csrf();
    let p = web.post("/dashboard/project/floating_ips", &[("csrf_token", &csrf), ("network_id", &ext)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let fips = api(&cloud, &admin, Method::GET, "/network/v2.0/floatingips", None).await;
    let fip = fips["floatingips"][0].clone();
    let (fip_id, addr) =
        (fip["id"].as_str().unwrap().to_string(), fip["floating_ip_address"].as_str().unwrap().to_string());
    assert!(addr.starts_with("203.0.113."));
    let p = web.get("/dashboard/project/floating_ips").await;
    assert!(p.body.contains(&addr) && p.body.contains("fip-vm: 10.20.0."), "the instance's port is offered");

    let p = web
        .post(
            &format!("/dashboard/project/floating_ips/{fip_id}/associate"),
            &[("csrf_token", &csrf), ("port_id", &port)],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let v = api(&cloud, &admin, Method::GET, &format!("/network/v2.0/floatingips/{fip_id}"), None).await;
    assert_eq!(v["floatingip"]["port_id"], json!(port));
    let p = web.get("/dashboard/project/floating_ips").await;
    assert!(p.body.contains("Disassociate"));

    let p = web.post(&format!("/dashboard/project/floating_ips/{fip_id}/disassociate"), &[("csrf_token", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let v = api(&cloud, &admin, Method::GET, &format!("/network/v2.0/floatingips/{fip_id}"), None).await;
    assert!(v["floatingip"]["port_id"].is_null());
    let p = web.post(&format!("/dashboard/project/floating_ips/{fip_id}/release"), &[("csrf_token", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let fips = api(&cloud, &admin, Method::GET, "/network/v2.0/floatingips", None).await;
    assert!(fips["floatingips"].as_array().unwrap().is_empty());
    // Deleting the router removes its interface first.
    let p = web.post(&format!("/dashboard/project/routers/{router}/delete"), &[("csrf_token", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let routers = api(&cloud, &admin, Method::GET, "/network/v2.0/routers", None).await;
    assert!(routers["routers"].as_array().unwrap().is_empty());
    cloud.shutdown().await;
}

/// Polls the volume until its status is `want`.
async fn wait_volume(cloud: &TestCloud, token: &str, project: &str, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = api(cloud, token, reqwest::Method::GET, &format!("/volume/v3/{project}/volumes/{id}"), None).await;
        if last["volume"]["status"] == want {
            return last;
        }
        assert_ne!(last["volume"]["status"], "error", "{last}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("volume {id} never became {want}: {last}");
}

#[tokio::test]
async fn dashboard_volume_create_attach_detach_delete() {
    use reqwest::Method;
    let cloud = TestCloud::start().await;
    let admin = cloud.admin_token().await;
    let image_id = tiny_image(&cloud, &admin).await;
    let projects = api(&cloud, &admin, Method::GET, "/identity/v3/projects?name=admin", None).await;
    let project = projects["projects"][0]["id"].as_str().unwrap().to_string();
    let server = api(
        &cloud,
        &admin,
        Method::POST,
        "/compute/v2.1/servers",
        Some(json!({"server": {"name": "vol-vm", "imageRef": image_id, "flavorRef": "1", "networks": "none"}})),
    )
    .await;
    let server = server["server"]["id"].as_str().unwrap().to_string();
    wait_active(&cloud, &admin, &server).await;

    let mut web = Web::new(&cloud);
    assert_eq!(web.login("Default", "admin", ADMIN_PASSWORD).await.status, StatusCode::SEE_OTHER);
    let p = web.get("/dashboard/project/volumes").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let csrf = p.csrf();
    let p = web.post("/dashboard/project/volumes", &[("csrf_token", &csrf), ("name", "data-vol"), ("size", "0")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "size 0 is refused before the API");
    let p = web.post("/dashboard/project/volumes", &[("csrf_token", &csrf), ("name", "data-vol"), ("size", "1")]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let vols = api(&cloud, &admin, Method::GET, &format!("/volume/v3/{project}/volumes"), None).await;
    let vol = vols["volumes"][0]["id"].as_str().unwrap().to_string();
    wait_volume(&cloud, &admin, &project, &vol, "available").await;

    let attach = format!("/dashboard/project/volumes/{vol}/attach");
    let p = web.post(&attach, &[("csrf_token", &csrf), ("server_id", &server)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "attach through the compute API: {}", p.body);
    wait_volume(&cloud, &admin, &project, &vol, "in-use").await;
    let p = web.get("/dashboard/project/volumes/rows").await;
    assert!(p.body.contains("vol-vm on /dev/") && p.body.contains("Detach"), "{}", p.body);
    let detach = format!("/dashboard/project/volumes/{vol}/detach");
    let p = web.post(&detach, &[("csrf_token", &csrf), ("server_id", &server)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    wait_volume(&cloud, &admin, &project, &vol, "available").await;
    let p = web.post(&format!("/dashboard/project/volumes/{vol}/delete"), &[("csrf_token", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    cloud.shutdown().await;
}

#[tokio::test]
async fn dashboard_failed_logins_are_throttled_per_browser_address() {
    let cloud = TestCloud::start_with(|c| {
        c.identity.failed_login_source_burst = 2;
        c.identity.failed_login_source_per_minute = 1;
        c.identity.failed_login_user_burst = 100;
    })
    .await;
    let mut web = Web::new(&cloud);
    // Different user names, so only the per-source bucket can empty: identity sees the
    // browser's address, not an anonymous in-process caller.
    assert_eq!(web.login("Default", "mallory0", "guess").await.status, StatusCode::UNAUTHORIZED);
    let mut refused = None;
    for n in 1..6 {
        let p = web.login("Default", &format!("mallory{n}"), "guess").await;
        if p.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(p);
            break;
        }
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);
    }
    let p = refused.expect("the browser's address ran out of failed logins");
    assert!(p.body.contains("<form"), "the form again, with identity's message");
    cloud.shutdown().await;
}
