//! Data plane benchmark (issue 9), run by `bench/dataplane.sh` (root; host tools needed).
//!
//! An in-process cloud whose network agent lives in a namespace made here, driven through
//! the REST API (not the CLI, whose Python start-up would dominate):
//! - **port create + plug → first DHCP reply**: `POST /ports` bound to the agent's host,
//!   then the "hypervisor" makes the tap (a veth named `tap<port11>` with the port's MAC);
//!   time until the port is ACTIVE (the agent noticed the tap, plugged it, reported), then
//!   a DHCP client in the guest namespace until it is BOUND;
//! - **security group rule add → effect**: a guest pings another whose group has no ICMP
//!   rule; time from the `POST /security-group-rules` answer to the first echo reply, and
//!   from the `DELETE` answer to the first lost echo.
//!
//! Everything it makes is in namespaces named `stratus-dpb-…`, deleted on exit.

#[path = "../../network-agent/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stratus_network_agent::model::Port;
use stratus_testkit::TestCloud;

const ROUNDS: usize = 5;

struct Api<'a> {
    cloud: &'a TestCloud,
    token: String,
}

impl Api<'_> {
    async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.cloud.http().request(method.clone(), self.cloud.at(path)).header("X-Auth-Token", &self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

fn model_port(p: &Value) -> Port {
    serde_json::from_value(json!({
        "id": p["id"], "network_id": p["network_id"], "mac_address": p["mac_address"],
    }))
    .expect("port")
}

fn stats(name: &str, xs: &mut [Duration]) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} min {:.0} ms, median {:.0} ms, max {:.0} ms",
        xs.len(),
        ms(xs[0]),
        ms(xs[xs.len() / 2]),
        ms(xs[xs.len() - 1])
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lab = common::Lab::new("dpb");
    let host = lab.netns("host");
    let agent = lab.agent_cfg("h", &host);
    let cloud = TestCloud::start_with(|c| {
        c.network_agent = stratus_network_agent::AgentConfig {
            enabled: "true".into(),
            host: String::new(),
            device_poll_interval_ms: 100,
            ..agent
        };
    })
    .await;
    let hostname = cloud.handle().platform.host.clone();
    let api = Api { cloud: &cloud, token: cloud.admin_token().await };
    use reqwest::Method;
    let net = api.req(Method::POST, "/network/v2.0/networks", Some(json!({"network": {"name": "bench"}}))).await;
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    api.req(
        Method::POST,
        "/network/v2.0/subnets",
        Some(json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.88.0.0/24"}})),
    )
    .await;
    let sg = api
        .req(Method::POST, "/network/v2.0/security-groups", Some(json!({"security_group": {"name": "closed"}})))
        .await;
    let sg_id = sg["security_group"]["id"].as_str().unwrap().to_string();
    let new_port = |sgs: Option<Vec<String>>| {
        let mut p = json!({"network_id": net_id, "device_owner": "compute:nova",
            "device_id": common::uuid(), "binding:host_id": hostname});
        if let Some(s) = sgs {
            p["security_groups"] = json!(s);
        }
        json!({ "port": p })
    };
    // Let the agent schedule the network's DHCP server before timing anything.
    let t0 = Instant::now();
    loop {
        let dhcp = api
            .req(Method::GET, &format!("/network/v2.0/ports?network_id={net_id}&device_owner=network:dhcp"), None)
            .await;
        if dhcp["ports"].as_array().is_some_and(|a| !a.is_empty())
            && common::link_exists(&format!("{}h-qdhcp-{net_id}", lab.prefix), "lo")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no DHCP server scheduled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut to_lease = vec![];
    let mut to_active = vec![];
    let mut after_plug = vec![];
    let mut guests = vec![];
    for i in 0..ROUNDS {
        let t = Instant::now();
        let p = api.req(Method::POST, "/network/v2.0/ports", Some(new_port(None))).await;
        let g = lab.guest(&format!("g{i}"), &host, &model_port(&p["port"]));
        let pid = p["port"]["id"].as_str().unwrap();
        loop {
            let now = api.req(Method::GET, &format!("/network/v2.0/ports/{pid}"), None).await;
            if now["port"]["status"] == "ACTIVE" {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "port ACTIVE");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        to_active.push(t.elapsed());
        let t2 = Instant::now();
        let lease = g.dhcp();
        after_plug.push(t2.elapsed());
        to_lease.push(t.elapsed());
        assert_eq!(lease.get("ip_address"), p["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap());
        guests.push(g);
    }

    let target_port = api.req(Method::POST, "/network/v2.0/ports", Some(new_port(Some(vec![sg_id.clone()])))).await;
    let target = lab.guest("target", &host, &model_port(&target_port["port"]));
    let target_ip = target.dhcp().get("ip_address").to_string();
    let pinger = &guests[0];
    let mut add = vec![];
    let mut remove = vec![];
    for _ in 0..ROUNDS {
        assert!(!pinger.ping(&target_ip), "no ICMP rule yet");
        let r = api
            .req(
                Method::POST,
                "/network/v2.0/security-group-rules",
                Some(json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", "protocol": "icmp"}})),
            )
            .await;
        let t = Instant::now();
        pinger.ping_until(&target_ip, Duration::from_secs(10)).expect("rule takes effect");
        add.push(t.elapsed());
        let rid = r["security_group_rule"]["id"].as_str().unwrap();
        api.req(Method::DELETE, &format!("/network/v2.0/security-group-rules/{rid}"), None).await;
        // Short probes; the time is taken at the start of the first probe that gets no reply.
        let t = Instant::now();
        loop {
            let probe = t.elapsed();
            let ok = std::process::Command::new("ip")
                .args(["netns", "exec", &pinger.ns, "ping", "-n", "-q", "-c", "1", "-W", "0.2", &target_ip])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                remove.push(probe);
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "removal takes effect");
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("dataplane benchmark (debug build of the cloud; load average {})", load.trim());
    stats("port create + tap -> port ACTIVE (plugged, reported)", &mut to_active);
    stats("DHCP client start on the plugged port -> lease", &mut after_plug);
    stats("port create + plug -> DHCP lease (sum)", &mut to_lease);
    stats("SG rule add (API answer) -> first echo reply", &mut add);
    stats("SG rule delete (API answer) -> first unanswered echo", &mut remove);
    cloud.shutdown().await;
}
