//! Orchestration (Heat v1) through the real `openstack stack ...` commands
//! (python-heatclient): a stack of a network, subnet, port, random string and value
//! with outputs is created and waited for, its resources exist in the network API, its
//! outputs are right, another project sees nothing of it, and deleting it removes
//! everything; a network API failure mid-create rolls back what was made; a template
//! with a bad reference or an unknown type is refused naming it; `stack update` (a new
//! template, `--existing` with a parameter, `--dry-run`, a failing one rolled back)
//! and a resource group scaled by updates. One stack has a server, on the test
//! cloud's `fake` virt driver: no guest runs in this file.

use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

const STACK: &str = r#"
heat_template_version: 2018-08-31
description: a network with a subnet and a port, a random string and a value
parameters:
  prefix:
    type: string
    constraints:
      - length: {min: 1, max: 20}
  cidr:
    type: string
    default: 10.20.30.0/24
resources:
  net:
    type: OS::Neutron::Net
    properties:
      name: {list_join: ['-', [{get_param: prefix}, net]]}
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_resource: net}
      cidr: {get_param: cidr}
  port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: net}
      fixed_ips:
        - subnet: {get_resource: subnet}
  secret:
    type: OS::Heat::RandomString
    properties:
      length: 16
  greeting:
    type: OS::Heat::Value
    properties:
      type: string
      value:
        str_replace:
          template: port $ip on $net
          params:
            $ip: {get_attr: [port, fixed_ips, 0, ip_address]}
            $net: {get_attr: [net, name]}
outputs:
  port_ip:
    description: the port's address
    value: {get_attr: [port, fixed_ips, 0, ip_address]}
  net_id:
    value: {get_resource: net}
  greeting:
    value: {get_attr: [greeting, value]}
  secret:
    value: {get_attr: [secret, value]}
"#;

/// Polls `stack show` until the status is `want` (panics on another final status).
async fn wait_stack(cloud: &TestCloud, creds: &Creds, name: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = cloud.openstack_as(creds, &["stack", "show", name]).await.expect("stack show");
        let status = s(&v, "stack_status");
        if status == want {
            return v;
        }
        assert!(!status.ends_with("_FAILED") || want.ends_with("_FAILED"), "stack {name} is {status}: {v}");
        assert!(Instant::now() < deadline, "stack {name} stayed {status}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn member_user(cloud: &TestCloud, name: &str) -> Creds {
    cloud.openstack(&["project", "create", "--domain", "default", name]).await.expect("project create");
    let pw = format!("{name}-pw");
    cloud
        .openstack(&["user", "create", "--domain", "default", "--password", &pw, "--project", name, name])
        .await
        .expect("user create");
    cloud.openstack(&["role", "add", "--project", name, "--user", name, "member"]).await.expect("role add");
    Creds::new(name, &pw, name)
}

#[tokio::test]
async fn stack_create_outputs_isolation_and_delete_through_heatclient() {
    let cloud = TestCloud::start().await;
    let alice = member_user(&cloud, "heat-alice").await;
    let tpl = cloud.data_dir.join("stack.yaml");
    std::fs::write(&tpl, STACK).unwrap();
    let tpl = tpl.to_str().unwrap();

    let (code, out, err) = cloud
        .openstack_raw(&alice, &["stack", "create", "-t", tpl, "--parameter", "prefix=web", "--wait", "web"])
        .await;
    assert_eq!(code, Some(0), "stack create --wait failed: {err}{out}");
    assert!(out.contains("CREATE_COMPLETE"), "the event log shows the completion: {out}");
    let stack = wait_stack(&cloud, &alice, "web", "CREATE_COMPLETE").await;
    let stack_id = s(&stack, "id");

    // The outputs, checked against the network API.
    let out = |k: &'static str| {
        let cloud = &cloud;
        let alice = &alice;
        async move {
            let v = cloud.openstack_as(alice, &["stack", "output", "show", "web", k]).await.expect("output show");
            assert_eq!(s(&v, "output_key"), k);
            s(&v, "output_value")
        }
    };
    let net_id = out("net_id").await;
    let net = cloud.openstack_as(&alice, &["network", "show", &net_id]).await.expect("the stack's network exists");
    assert_eq!(s(&net, "name"), "web-net");
    let resources = cloud.openstack_as(&alice, &["stack", "resource", "list", "web"]).await.expect("resource list");
    let resources = resources.as_array().expect("a list").clone();
    assert_eq!(resources.len(), 5, "{resources:?}");
    assert!(resources.iter().all(|r| s(r, "resource_status") == "CREATE_COMPLETE"), "{resources:?}");
    let port_id =
        resources.iter().find(|r| s(r, "resource_name") == "port").map(|r| s(r, "physical_resource_id")).unwrap();
    let port = cloud.openstack_as(&alice, &["port", "show", &port_id]).await.expect("port show");
    let ip = port["fixed_ips"][0]["ip_address"].as_str().map(str::to_string).unwrap_or_else(|| {
        // Older CLIs print fixed_ips as text: "ip_address='10.20.30.5', subnet_id='...'".
        let text = port["fixed_ips"].to_string();
        text.split("ip_address='").nth(1).and_then(|r| r.split('\'').next()).unwrap_or_default().to_string()
    });
    assert!(ip.starts_with("10.20.30."), "port address {ip}");
    assert_eq!(out("port_ip").await, ip);
    assert_eq!(out("greeting").await, format!("port {ip} on web-net"));
    let secret = out("secret").await;
    assert_eq!(secret.len(), 16);
    assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()));
    let events = cloud.openstack_as(&alice, &["stack", "event", "list", "web"]).await.expect("event list");
    assert!(events.to_string().contains("CREATE_IN_PROGRESS"), "{events}");

    // Another project sees nothing.
    let bob = member_user(&cloud, "heat-bob").await;
    let list = cloud.openstack_as(&bob, &["stack", "list"]).await.expect("stack list");
    assert!(list.as_array().is_none_or(|a| a.is_empty()), "bob sees {list}");
    assert!(cloud.openstack_as(&bob, &["stack", "show", "web"]).await.is_err());
    assert!(cloud.openstack_as(&bob, &["stack", "show", &stack_id]).await.is_err());
    let mine = cloud.openstack_as(&alice, &["stack", "list"]).await.expect("stack list");
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");

    // A second stack of the same name is refused.
    let (code, _, err) =
        cloud.openstack_raw(&alice, &["stack", "create", "-t", tpl, "--parameter", "prefix=x", "web"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("already exists"), "{err}");

    let (code, out, err) = cloud.openstack_raw(&alice, &["stack", "delete", "--yes", "--wait", "web"]).await;
    assert_eq!(code, Some(0), "stack delete --wait failed: {err}{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cloud.openstack_as(&alice, &["stack", "show", "web"]).await.is_ok() {
        assert!(Instant::now() < deadline, "stack web still shown by name after its deletion");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(cloud.openstack_as(&alice, &["network", "show", &net_id]).await.is_err(), "the network was deleted");
    assert!(cloud.openstack_as(&alice, &["port", "show", &port_id]).await.is_err(), "the port was deleted");
    let gone = cloud.openstack_as(&alice, &["stack", "show", &stack_id]).await.expect("deleted stacks show by id");
    assert_eq!(s(&gone, "stack_status"), "DELETE_COMPLETE");
    cloud.shutdown().await;
}

const FAILING: &str = r#"
heat_template_version: 2021-04-16
resources:
  net:
    type: OS::Neutron::Net
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_resource: net}
      cidr: 10.1.2.300/24
"#;

const BAD_REFERENCE: &str = r#"
heat_template_version: 2018-08-31
resources:
  net:
    type: OS::Neutron::Net
  port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: nosuch}
"#;

const UNKNOWN_TYPE: &str = r#"
heat_template_version: 2018-08-31
resources:
  thing:
    type: OS::Nova::Nope
"#;

#[tokio::test]
async fn stack_failures_roll_back_and_bad_templates_are_refused() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    let write = |name: &str, text: &str| {
        let p = cloud.data_dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let bad = write("bad.yaml", BAD_REFERENCE);
    let (code, _, err) = cloud.openstack_raw(&admin, &["orchestration", "template", "validate", "-t", &bad]).await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("The specified reference \"nosuch\" (in resources.port.properties.network) is incorrect."),
        "{err}"
    );
    let (code, _, err) = cloud.openstack_raw(&admin, &["stack", "create", "-t", &bad, "bad"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("nosuch"), "{err}");
    let unknown = write("unknown.yaml", UNKNOWN_TYPE);
    let (code, _, err) = cloud.openstack_raw(&admin, &["stack", "create", "-t", &unknown, "unknown"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("OS::Nova::Nope"), "{err}");
    let list = cloud.openstack(&["stack", "list"]).await.expect("stack list");
    assert!(list.as_array().is_none_or(|a| a.is_empty()), "refused stacks are not recorded: {list}");
    let good = write("good.yaml", STACK);
    let v = cloud.openstack(&["orchestration", "template", "validate", "-t", &good]).await.expect("validate");
    assert_eq!(v["Parameters"]["cidr"]["Default"], "10.20.30.0/24", "{v}");

    // The network API refuses the subnet: the stack fails, and rolling back deletes the
    // network made before.
    let failing = write("failing.yaml", FAILING);
    let (code, _, err) = cloud
        .openstack_raw(&admin, &["stack", "create", "-t", &failing, "--enable-rollback", "--wait", "failing"])
        .await;
    assert_ne!(code, Some(0), "a failing stack makes create --wait fail");
    assert!(err.contains("CREATE_FAILED"), "{err}");
    let stack = wait_stack(&cloud, &admin, "failing", "ROLLBACK_COMPLETE").await;
    let resources = cloud.openstack(&["stack", "resource", "list", "failing"]).await.expect("resource list");
    let net = resources.as_array().unwrap().iter().find(|r| s(r, "resource_name") == "net").cloned().unwrap();
    assert_eq!(s(&net, "resource_status"), "DELETE_COMPLETE", "{resources}");
    assert!(cloud.openstack(&["network", "show", &s(&net, "physical_resource_id")]).await.is_err(), "rolled back");
    let events = cloud.openstack(&["stack", "event", "list", "failing"]).await.expect("event list");
    assert!(events.to_string().contains("CREATE_FAILED"), "{events}");
    assert!(s(&stack, "stack_status_reason").contains("ROLLBACK"), "{stack}");
    cloud.openstack(&["stack", "delete", "--yes", "--wait", "failing"]).await.expect("stack delete");
    cloud.shutdown().await;
}

const APP: &str = r#"
heat_template_version: 2021-04-16
description: a server behind a router, with a key pair and a security group
parameters:
  image: {type: string, default: tiny}
  flavor: {type: string, default: m1.nano}
  public_net: {type: string, default: public}
resources:
  key:
    type: OS::Nova::KeyPair
    properties:
      name: {list_join: ['-', [{get_param: 'OS::stack_name'}, key]]}
  net:
    type: OS::Neutron::Net
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_resource: net}
      cidr: 192.168.77.0/24
  router:
    type: OS::Neutron::Router
    properties:
      external_gateway_info: {network: {get_param: public_net}}
  iface:
    type: OS::Neutron::RouterInterface
    properties:
      router: {get_resource: router}
      subnet: {get_resource: subnet}
  sg:
    type: OS::Neutron::SecurityGroup
    properties:
      rules:
        - {protocol: tcp, port_range_min: 22, port_range_max: 22, remote_ip_prefix: 0.0.0.0/0}
        - {protocol: icmp}
  web_rule:
    type: OS::Neutron::SecurityGroupRule
    properties:
      security_group: {get_resource: sg}
      protocol: tcp
      port_range_min: 8080
      port_range_max: 8080
      remote_group: {get_resource: sg}
  port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: net}
      security_groups: [{get_resource: sg}]
      fixed_ips: [{subnet: {get_resource: subnet}}]
  fip:
    type: OS::Neutron::FloatingIP
    depends_on: iface
    properties:
      floating_network: {get_param: public_net}
  fip_assoc:
    type: OS::Neutron::FloatingIPAssociation
    properties:
      floatingip_id: {get_resource: fip}
      port_id: {get_resource: port}
  boot_config:
    type: OS::Heat::SoftwareConfig
    properties:
      config: |
        #!/bin/sh
        echo from-heat
  server:
    type: OS::Nova::Server
    depends_on: iface
    properties:
      user_data_format: SOFTWARE_CONFIG
      user_data: {get_resource: boot_config}
      image: {get_param: image}
      flavor: {get_param: flavor}
      key_name: {get_resource: key}
      networks: [{port: {get_resource: port}}]
      metadata: {stack: {get_param: 'OS::stack_name'}}
outputs:
  address: {value: {get_attr: [server, first_address]}}
  port_ip: {value: {get_attr: [port, fixed_ips, 0, ip_address]}}
  server_id: {value: {get_resource: server}}
  router_id: {value: {get_resource: router}}
  sg_id: {value: {get_resource: sg}}
  public_key: {value: {get_attr: [key, public_key]}}
  floating_ip: {value: {get_attr: [fip, floating_ip_address]}}
  port_id: {value: {get_resource: port}}
"#;

/// A server stack on the `fake` virt driver (the test cloud's default): this checks
/// the orchestration of the compute and network APIs, not a guest.
#[tokio::test]
async fn server_stack_with_router_keypair_and_security_group_on_the_fake_driver() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    cloud.create_tiny_image().await;
    cloud.openstack(&["network", "create", "--external", "public"]).await.expect("external network");
    cloud
        .openstack(&["subnet", "create", "--network", "public", "--subnet-range", "172.24.9.0/24", "public-v4"])
        .await
        .expect("external subnet");
    let tpl = cloud.data_dir.join("app.yaml");
    std::fs::write(&tpl, APP).unwrap();
    let (code, out, err) =
        cloud.openstack_raw(&admin, &["stack", "create", "-t", tpl.to_str().unwrap(), "--wait", "app"]).await;
    assert_eq!(code, Some(0), "stack create --wait failed: {err}{out}");
    wait_stack(&cloud, &admin, "app", "CREATE_COMPLETE").await;
    let out = |k: &'static str| {
        let cloud = &cloud;
        async move {
            let v = cloud.openstack(&["stack", "output", "show", "app", k]).await.expect("output show");
            s(&v, "output_value")
        }
    };
    let (address, port_ip) = (out("address").await, out("port_ip").await);
    assert!(address.starts_with("192.168.77."), "{address}");
    assert_eq!(address, port_ip, "the server got the stack's port");
    let server_id = out("server_id").await;
    let server = cloud.openstack(&["server", "show", &server_id]).await.expect("server show");
    assert_eq!(s(&server, "status"), "ACTIVE");
    assert_eq!(s(&server, "key_name"), "app-key");
    // SOFTWARE_CONFIG: the server got the config's text as its user data (base64 of
    // "#!/bin/sh\necho from-heat\n").
    let full = cloud.openstack(&["--os-compute-api-version", "2.3", "server", "show", &server_id]).await.expect("show");
    assert_eq!(s(&full, "OS-EXT-SRV-ATTR:user_data"), "IyEvYmluL3NoCmVjaG8gZnJvbS1oZWF0Cg==", "{full}");
    let key = cloud.openstack(&["keypair", "show", "app-key"]).await.expect("keypair show");
    assert!(out("public_key").await.starts_with("ssh-"), "{key}");
    let router_id = out("router_id").await;
    let ports = cloud.openstack(&["port", "list", "--router", &router_id]).await.expect("router ports");
    assert!(ports.to_string().contains("192.168.77.1"), "the interface on the subnet: {ports}");
    let sg = cloud.openstack(&["security", "group", "rule", "list", &out("sg_id").await]).await.expect("rules");
    assert!(sg.to_string().contains("22:22") && sg.to_string().contains("8080:8080"), "{sg}");
    let fip = out("floating_ip").await;
    assert!(fip.starts_with("172.24.9."), "{fip}");
    let shown = cloud.openstack(&["floating", "ip", "show", &fip]).await.expect("floating ip show");
    assert_eq!(s(&shown, "port_id"), out("port_id").await, "associated with the server's port");

    // The server renamed and its metadata changed in place by an update.
    let renamed = APP.replace(
        "      metadata: {stack: {get_param: 'OS::stack_name'}}",
        "      name: renamed-by-heat\n      metadata: {stack: changed}",
    );
    assert_ne!(renamed, APP);
    let tpl2 = cloud.data_dir.join("app2.yaml");
    std::fs::write(&tpl2, renamed).unwrap();
    let (code, o, err) =
        cloud.openstack_raw(&admin, &["stack", "update", "-t", tpl2.to_str().unwrap(), "--wait", "app"]).await;
    assert_eq!(code, Some(0), "stack update failed: {err}{o}");
    assert_eq!(out("server_id").await, server_id, "the same server");
    let server = cloud.openstack(&["server", "show", &server_id]).await.expect("server show");
    assert_eq!(s(&server, "name"), "renamed-by-heat");
    assert!(server["properties"].to_string().contains("changed"), "{server}");

    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "delete", "--yes", "--wait", "app"]).await;
    assert_eq!(code, Some(0), "stack delete --wait failed: {err}{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cloud.openstack(&["server", "show", &server_id]).await.is_ok() {
        assert!(Instant::now() < deadline, "the server outlived its stack");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(cloud.openstack(&["keypair", "show", "app-key"]).await.is_err(), "key pair deleted");
    assert!(cloud.openstack(&["router", "show", &router_id]).await.is_err(), "router deleted");
    assert!(cloud.openstack(&["floating", "ip", "show", &fip]).await.is_err(), "floating IP released");
    cloud.shutdown().await;
}

const UPDATE_V1: &str = r#"
heat_template_version: 2021-04-16
parameters:
  label: {type: string, default: one}
resources:
  net:
    type: OS::Neutron::Net
    properties:
      name: upd-net
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_resource: net}
      cidr: 10.61.0.0/24
  old_port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: net}
  label:
    type: OS::Heat::Value
    properties:
      value: {get_param: label}
outputs:
  label: {value: {get_attr: [label, value]}}
  subnet_id: {value: {get_resource: subnet}}
"#;

/// The network renamed (in place), the subnet's range changed (replaced: new made,
/// old deleted), a port removed and another added on the new subnet.
const UPDATE_V2: &str = r#"
heat_template_version: 2021-04-16
parameters:
  label: {type: string, default: one}
resources:
  net:
    type: OS::Neutron::Net
    properties:
      name: upd-net-renamed
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_resource: net}
      cidr: 10.62.0.0/24
  new_port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: net}
      fixed_ips: [{subnet: {get_resource: subnet}}]
  label:
    type: OS::Heat::Value
    properties:
      value: {get_param: label}
outputs:
  label: {value: {get_attr: [label, value]}}
  subnet_id: {value: {get_resource: subnet}}
  port_ip: {value: {get_attr: [new_port, fixed_ips, 0, ip_address]}}
"#;

/// V2 with a subnet the network API refuses: the update fails and rolls back.
const UPDATE_BAD: &str = r#"
heat_template_version: 2021-04-16
parameters:
  label: {type: string, default: one}
resources:
  net:
    type: OS::Neutron::Net
    properties:
      name: upd-net-broken
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_resource: net}
      cidr: 10.63.0.300/24
  label:
    type: OS::Heat::Value
    properties:
      value: {get_param: label}
"#;

/// Ports on a network, as many as `count` says, each named after its index.
const GROUP: &str = r#"
heat_template_version: 2021-04-16
parameters:
  count: {type: number, default: 2}
resources:
  net:
    type: OS::Neutron::Net
  ports:
    type: OS::Heat::ResourceGroup
    properties:
      count: {get_param: count}
      resource_def:
        type: OS::Neutron::Port
        properties:
          name: grp-port-%index%
          network: {get_resource: net}
outputs:
  port_ids: {value: {get_attr: [ports, refs]}}
  names: {value: {get_attr: [ports, name]}}
"#;

#[tokio::test]
async fn stack_update_patch_preview_and_rollback_through_heatclient() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    let write = |name: &str, text: &str| {
        let p = cloud.data_dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (v1, v2, bad) = (write("v1.yaml", UPDATE_V1), write("v2.yaml", UPDATE_V2), write("bad.yaml", UPDATE_BAD));
    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "create", "-t", &v1, "--wait", "upd"]).await;
    assert_eq!(code, Some(0), "stack create failed: {err}{out}");
    let physical = |list: &Value, name: &str| {
        list.as_array().unwrap().iter().find(|r| s(r, "resource_name") == name).map(|r| s(r, "physical_resource_id"))
    };
    let before = cloud.openstack(&["stack", "resource", "list", "upd"]).await.expect("resource list");
    let (net_id, old_subnet) = (physical(&before, "net").unwrap(), physical(&before, "subnet").unwrap());
    let old_port = physical(&before, "old_port").unwrap();

    // The dry run says what would happen and changes nothing.
    let preview = cloud.openstack(&["stack", "update", "--dry-run", "-t", &v2, "upd"]).await.expect("dry run");
    let text = preview.to_string();
    assert!(text.contains("new_port") && text.contains("old_port"), "{text}");
    let bucket = |k: &str| {
        preview[k].as_array().cloned().or_else(|| {
            preview
                .as_array()
                .and_then(|a| a.iter().find(|x| x["Field"] == k).and_then(|x| x["Value"].as_array().cloned()))
        })
    };
    if let (Some(replaced), Some(updated)) = (bucket("replaced"), bucket("updated")) {
        assert!(Value::Array(replaced).to_string().contains("subnet"), "{preview}");
        assert!(Value::Array(updated).to_string().contains("\"net\""), "{preview}");
    }
    let same = cloud.openstack(&["stack", "resource", "list", "upd"]).await.expect("resource list");
    assert_eq!(physical(&same, "subnet").as_deref(), Some(old_subnet.as_str()), "a dry run changes nothing");

    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "update", "-t", &v2, "--wait", "upd"]).await;
    assert_eq!(code, Some(0), "stack update failed: {err}{out}");
    let stack = wait_stack(&cloud, &admin, "upd", "UPDATE_COMPLETE").await;
    let after = cloud.openstack(&["stack", "resource", "list", "upd"]).await.expect("resource list");
    assert_eq!(physical(&after, "net").as_deref(), Some(net_id.as_str()), "the network was updated in place");
    let net = cloud.openstack(&["network", "show", &net_id]).await.expect("network show");
    assert_eq!(s(&net, "name"), "upd-net-renamed");
    let new_subnet = physical(&after, "subnet").unwrap();
    assert_ne!(new_subnet, old_subnet, "the subnet was replaced");
    assert!(cloud.openstack(&["subnet", "show", &old_subnet]).await.is_err(), "the old subnet was deleted");
    assert!(cloud.openstack(&["port", "show", &old_port]).await.is_err(), "the removed port was deleted");
    assert!(physical(&after, "old_port").is_none(), "{after}");
    let ip = cloud.openstack(&["stack", "output", "show", "upd", "port_ip"]).await.expect("output");
    assert!(s(&ip, "output_value").starts_with("10.62.0."), "the new port is on the new subnet: {ip}");
    assert_eq!(s(&stack, "stack_status"), "UPDATE_COMPLETE");
    let events = cloud.openstack(&["stack", "event", "list", "upd"]).await.expect("event list");
    assert!(events.to_string().contains("UPDATE_COMPLETE"), "{events}");

    // --existing keeps the template and changes a parameter: only the value changes.
    let (code, out, err) = cloud
        .openstack_raw(&admin, &["stack", "update", "--existing", "--parameter", "label=two", "--wait", "upd"])
        .await;
    assert_eq!(code, Some(0), "stack update --existing failed: {err}{out}");
    let label = cloud.openstack(&["stack", "output", "show", "upd", "label"]).await.expect("output");
    assert_eq!(s(&label, "output_value"), "two");
    let kept = cloud.openstack(&["stack", "resource", "list", "upd"]).await.expect("resource list");
    assert_eq!(physical(&kept, "subnet"), Some(new_subnet.clone()), "the rest is untouched");

    // A failing update rolls back to the previous template: the name is back.
    let (code, _, err) =
        cloud.openstack_raw(&admin, &["stack", "update", "-t", &bad, "--rollback", "enabled", "--wait", "upd"]).await;
    assert_ne!(code, Some(0), "a failing update makes update --wait fail");
    assert!(err.contains("UPDATE_FAILED") || err.contains("failed"), "{err}");
    wait_stack(&cloud, &admin, "upd", "ROLLBACK_COMPLETE").await;
    let net = cloud.openstack(&["network", "show", &net_id]).await.expect("network show");
    assert_eq!(s(&net, "name"), "upd-net-renamed", "renamed back");
    let rolled = cloud.openstack(&["stack", "resource", "list", "upd"]).await.expect("resource list");
    assert_eq!(physical(&rolled, "subnet"), Some(new_subnet.clone()), "the subnet as it was");
    assert!(cloud.openstack(&["subnet", "show", &new_subnet]).await.is_ok());
    let label = cloud.openstack(&["stack", "output", "show", "upd", "label"]).await.expect("output");
    assert_eq!(s(&label, "output_value"), "two", "parameters as they were");

    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "delete", "--yes", "--wait", "upd"]).await;
    assert_eq!(code, Some(0), "stack delete failed: {err}{out}");
    assert!(cloud.openstack(&["network", "show", &net_id]).await.is_err(), "everything deleted");

    // A resource group scaled up and down by updating its count.
    let group = write("group.yaml", GROUP);
    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "create", "-t", &group, "--wait", "grp"]).await;
    assert_eq!(code, Some(0), "group stack create failed: {err}{out}");
    let ports = |v: &Value| -> Vec<String> {
        let text = s(v, "output_value");
        serde_json::from_str::<Vec<String>>(&text).unwrap_or_else(|_| {
            v["output_value"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().into()).collect()
        })
    };
    let before = ports(&cloud.openstack(&["stack", "output", "show", "grp", "port_ids"]).await.expect("output"));
    assert_eq!(before.len(), 2);
    for (i, id) in before.iter().enumerate() {
        let p = cloud.openstack(&["port", "show", id]).await.expect("member port exists");
        assert_eq!(s(&p, "name"), format!("grp-port-{i}"));
    }
    let (code, out, err) = cloud
        .openstack_raw(&admin, &["stack", "update", "--existing", "--parameter", "count=3", "--wait", "grp"])
        .await;
    assert_eq!(code, Some(0), "scale up failed: {err}{out}");
    let up = ports(&cloud.openstack(&["stack", "output", "show", "grp", "port_ids"]).await.expect("output"));
    assert_eq!(up.len(), 3);
    assert_eq!(up[..2], before[..], "the first two members kept");
    let (code, out, err) = cloud
        .openstack_raw(&admin, &["stack", "update", "--existing", "--parameter", "count=1", "--wait", "grp"])
        .await;
    assert_eq!(code, Some(0), "scale down failed: {err}{out}");
    let down = ports(&cloud.openstack(&["stack", "output", "show", "grp", "port_ids"]).await.expect("output"));
    assert_eq!(down, before[..1]);
    for gone in &up[1..] {
        assert!(cloud.openstack(&["port", "show", gone]).await.is_err(), "removed member {gone} deleted");
    }
    let list = cloud.openstack(&["stack", "list"]).await.expect("stack list");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "nested stacks are not listed: {list}");
    cloud.openstack(&["stack", "delete", "--yes", "--wait", "grp"]).await.expect("stack delete");
    assert!(cloud.openstack(&["port", "show", &down[0]]).await.is_err(), "members deleted with the stack");
    cloud.shutdown().await;
}

const VOLUME: &str = r#"
heat_template_version: 2021-04-16
parameters:
  size: {type: number, default: 1}
  name: {type: string, default: heat-vol}
resources:
  vol:
    type: OS::Cinder::Volume
    properties:
      size: {get_param: size}
      name: {get_param: name}
      metadata: {made_by: heat}
outputs:
  id: {value: {get_resource: vol}}
  size: {value: {get_attr: [vol, size]}}
"#;

/// A volume on the in-process volume agent's `file` backend: created and waited for,
/// renamed and extended in place by an update, deleted with its stack.
#[tokio::test]
async fn volume_stack_created_extended_and_deleted_through_heatclient() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cloud.openstack(&["volume", "service", "list"]).await.expect("volume service list");
        let up = list.as_array().unwrap().iter().any(|r| s(r, "Binary") == "cinder-volume" && s(r, "State") == "up");
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "no cinder-volume service came up: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tpl = cloud.data_dir.join("volume.yaml");
    std::fs::write(&tpl, VOLUME).unwrap();
    let tpl = tpl.to_str().unwrap();
    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "create", "-t", tpl, "--wait", "vol"]).await;
    assert_eq!(code, Some(0), "stack create failed: {err}{out}");
    let id = s(&cloud.openstack(&["stack", "output", "show", "vol", "id"]).await.expect("output"), "output_value");
    let v = cloud.openstack(&["volume", "show", &id]).await.expect("the volume exists");
    assert_eq!((s(&v, "status"), s(&v, "name"), v["size"].as_i64()), ("available".into(), "heat-vol".into(), Some(1)));
    assert!(v["properties"].to_string().contains("heat"), "{v}");

    let (code, out, err) = cloud
        .openstack_raw(
            &admin,
            &["stack", "update", "--existing", "--parameter", "size=2", "--parameter", "name=bigger", "--wait", "vol"],
        )
        .await;
    assert_eq!(code, Some(0), "stack update failed: {err}{out}");
    let v = cloud.openstack(&["volume", "show", &id]).await.expect("the same volume");
    assert_eq!((s(&v, "name"), v["size"].as_i64()), ("bigger".into(), Some(2)), "renamed and extended in place");
    let size = cloud.openstack(&["stack", "output", "show", "vol", "size"]).await.expect("output");
    assert_eq!(size["output_value"].to_string().trim_matches('"'), "2", "{size}");

    let (code, out, err) = cloud.openstack_raw(&admin, &["stack", "delete", "--yes", "--wait", "vol"]).await;
    assert_eq!(code, Some(0), "stack delete failed: {err}{out}");
    assert!(cloud.openstack(&["volume", "show", &id]).await.is_err(), "the volume was deleted");
    cloud.shutdown().await;
}
