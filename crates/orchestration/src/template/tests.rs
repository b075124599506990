//! Template parsing, parameters, functions, the dependency graph and validation errors.

use serde_json::{json, Map, Value};

use super::functions::resolve;
use super::*;
use crate::resources::Registry;

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap()
}

fn check(tpl: &str, params: Value) -> HeatResult<(Template, Checked)> {
    let t = Template::parse(&yaml(tpl))?;
    let p = params.as_object().cloned().unwrap_or_default();
    let pseudo = Pseudo { stack_name: "s".into(), stack_id: "id-1".into(), project_id: "p".into() };
    let c = t.check(&p, &Map::new(), &Registry::standard(), &pseudo)?;
    Ok((t, c))
}

fn err(tpl: &str, params: Value) -> String {
    check(tpl, params).map(|_| ()).unwrap_err().to_string()
}

const CHAIN: &str = r#"
heat_template_version: 2018-08-31
resources:
  port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: net}
      fixed_ips: [{subnet: {get_resource: subnet}}]
  subnet:
    type: OS::Neutron::Subnet
    properties:
      network: {get_attr: [net, show, id]}
      cidr: 10.0.0.0/24
  net:
    type: OS::Neutron::Net
  extra:
    type: OS::Heat::None
    depends_on: port
  alone:
    type: OS::Heat::RandomString
"#;

#[test]
fn dependencies_come_from_references_and_depends_on() {
    let (_, c) = check(CHAIN, json!({})).unwrap();
    let pos = |r: &str| c.order.iter().position(|x| x == r).unwrap();
    assert!(pos("net") < pos("subnet") && pos("subnet") < pos("port") && pos("port") < pos("extra"));
    assert_eq!(c.deps["port"].iter().cloned().collect::<Vec<_>>(), vec!["net", "subnet"]);
    assert_eq!(c.deps["subnet"].iter().cloned().collect::<Vec<_>>(), vec!["net"]);
    assert!(c.deps["alone"].is_empty());
    let rev = graph::dependents(&c.deps);
    assert_eq!(rev["net"].iter().cloned().collect::<Vec<_>>(), vec!["port", "subnet"]);
}

#[test]
fn cycles_are_refused_naming_their_members() {
    let e = err(
        r#"
heat_template_version: 2018-08-31
resources:
  a: {type: OS::Heat::None, properties: {x: {get_resource: b}}}
  b: {type: OS::Heat::None, depends_on: [c]}
  c: {type: OS::Heat::None, properties: {y: {get_attr: [a, show]}}}
  d: {type: OS::Heat::None, depends_on: a}
"#,
        json!({}),
    );
    assert_eq!(e, "Circular Dependency Found: a, b, c depend on each other");
    let e =
        err("heat_template_version: 2018-08-31\nresources:\n  a: {type: OS::Heat::None, depends_on: a}\n", json!({}));
    assert!(e.contains("a depends on itself"), "{e}");
}

#[test]
fn bad_references_name_their_path() {
    let e = err(
        r#"
heat_template_version: 2018-08-31
resources:
  net: {type: OS::Neutron::Net}
  port:
    type: OS::Neutron::Port
    properties:
      network: {get_resource: net}
      fixed_ips:
        - subnet: {get_resource: nosuch}
"#,
        json!({}),
    );
    assert_eq!(
        e,
        "The specified reference \"nosuch\" (in resources.port.properties.fixed_ips[0].subnet) is incorrect."
    );
    let e = err(
        "heat_template_version: 2018-08-31\nresources:\n  n: {type: OS::Neutron::Net}\noutputs:\n  o: {value: {get_attr: [n, colour]}}\n",
        json!({}),
    );
    assert_eq!(e, "The Referenced Attribute (n colour) is incorrect (in outputs.o.value).");
    let e = err(
        "heat_template_version: 2018-08-31\nresources:\n  n: {type: OS::Neutron::Net, depends_on: [m]}\n",
        json!({}),
    );
    assert!(e.contains("\"m\" (in resources.n.depends_on)"), "{e}");
    let e = err(
        "heat_template_version: 2018-08-31\nresources:\n  n: {type: OS::Neutron::Net, properties: {name: {get_param: nope}}}\n",
        json!({}),
    );
    assert!(e.contains("(nope)") && e.contains("resources.n.properties.name"), "{e}");
}

#[test]
fn types_and_properties_are_checked() {
    let e = err("heat_template_version: 2018-08-31\nresources:\n  x: {type: OS::Nova::Nope}\n", json!({}));
    assert_eq!(e, "The Resource Type (OS::Nova::Nope) could not be found (in resources.x).");
    let e = err(
        "heat_template_version: 2018-08-31\nresources:\n  x: {type: OS::Neutron::Net, properties: {colour: red}}\n",
        json!({}),
    );
    assert_eq!(e, "Property error: resources.x.properties: Unknown Property colour");
    let e = err("heat_template_version: 2018-08-31\nresources:\n  x: {type: OS::Neutron::Port}\n", json!({}));
    assert_eq!(e, "Property error: resources.x.properties: Property network not assigned");
    let e = err(
        "heat_template_version: 2018-08-31\nresources:\n  x: {type: OS::Neutron::Net, properties: {admin_state_up: maybe}}\n",
        json!({}),
    );
    assert!(e.starts_with("Property error: resources.x.properties.admin_state_up:"), "{e}");
    let e = err("heat_template_version: 2012-12-12\nresources: {}\n", json!({}));
    assert!(e.contains("heat_template_version: 2012-12-12"), "{e}");
    let e = err("heat_template_version: 2018-08-31\nresource:\n  x: {type: OS::Heat::None}\n", json!({}));
    assert_eq!(e, "The template section is invalid: resource");
    assert!(check("heat_template_version: rocky\n", json!({})).is_ok());
}

const PARAMS: &str = r#"
heat_template_version: 2018-08-31
parameters:
  name:
    type: string
    constraints:
      - length: {min: 2, max: 5}
      - allowed_pattern: "[a-z]+"
        description: lowercase letters only
  count: {type: number, default: 2, constraints: [{range: {min: 1, max: 3}}]}
  flavor: {type: string, default: small, constraints: [{allowed_values: [small, large]}]}
  nets: {type: comma_delimited_list, default: "a, b"}
  on: {type: boolean, default: "yes"}
  data: {type: json, default: {k: [1, 2]}}
  secret: {type: string, hidden: true, default: s3cret}
"#;

#[test]
fn parameters_are_typed_and_constrained() {
    let (t, c) = check(PARAMS, json!({"name": "web", "count": "3"})).unwrap();
    assert_eq!(c.params["count"], json!(3));
    assert_eq!(c.params["nets"], json!(["a", "b"]));
    assert_eq!(c.params["on"], json!(true));
    assert_eq!(c.params["data"], json!({"k": [1, 2]}));
    assert_eq!(c.params["OS::stack_id"], json!("id-1"));
    assert_eq!(t.parameters["secret"].shown(&c.params["secret"]), json!("******"));
    let e = check(PARAMS, json!({})).unwrap_err();
    assert!(matches!(e, HeatError::ParameterMissing(ref p) if p == "name"), "{e}");
    assert_eq!(e.to_string(), "The Parameter (name) was not provided.");
    assert_eq!(err(PARAMS, json!({"name": "w"})), "Parameter 'name' is invalid: length must be between 2 and 5");
    assert_eq!(err(PARAMS, json!({"name": "Web"})), "Parameter 'name' is invalid: lowercase letters only");
    assert_eq!(
        err(PARAMS, json!({"name": "web", "count": 7})),
        "Parameter 'count' is invalid: 7 must be between 1 and 3"
    );
    assert!(err(PARAMS, json!({"name": "web", "count": "many"})).contains("not a number"));
    assert!(err(PARAMS, json!({"name": "web", "flavor": "huge"})).contains("\"huge\" is not an allowed value"));
    assert!(err(PARAMS, json!({"name": "web", "on": "perhaps"})).contains("Unrecognized value"));
    assert_eq!(err(PARAMS, json!({"name": "web", "other": 1})), "The Parameter (other) was not defined in template.");
    let e = err("heat_template_version: 2018-08-31\nparameters:\n  p: {type: integer}\n", json!({}));
    assert!(e.contains("Invalid type (integer)"), "{e}");
}

/// Evaluates `v` with the parameters of `check` and no resources.
fn eval(tpl: &str, params: Value, v: Value) -> Result<Value, String> {
    let (_, c) = check(tpl, params).unwrap();
    let files = Map::new();
    let values = Values { params: &c.params, files: &files, conditions: &c.conditions };
    resolve(&v, &values)
}

#[test]
fn functions_compute_values() {
    let v = eval(
        PARAMS,
        json!({"name": "web"}),
        json!({
            "a": {"str_replace": {"template": "$n-$name", "params": {"$name": {"get_param": "name"}, "$n": {"get_param": "count"}}}},
            "b": {"list_join": [",", {"get_param": "nets"}, ["c"]]},
            "c": {"str_split": [",", "x,y,z", 1]},
            "d": {"get_param": ["data", "k", 1]},
            "e": {"map_merge": [{"a": 1}, {"b": 2}, {"a": 3}]},
            "f": {"repeat": {"for_each": {"<%p%>": [80, 443]}, "template": {"port": "<%p%>"}}},
            "g": [{"equals": [{"get_param": "flavor"}, "small"]}, {"if": [{"not": {"get_param": "on"}}, 1, 2]}],
        }),
    )
    .unwrap();
    assert_eq!(v["a"], "2-web");
    assert_eq!(v["b"], "a,b,c");
    assert_eq!(v["c"], "y");
    assert_eq!(v["d"], 2);
    assert_eq!(v["e"], json!({"a": 3, "b": 2}));
    assert_eq!(v["f"], json!([{"port": 80}, {"port": 443}]));
    assert_eq!(v["g"], json!([true, 2]));
    let e = eval(PARAMS, json!({"name": "web"}), json!({"str_split": [",", "x", 5]})).unwrap_err();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn conditions_switch_resources_off() {
    let tpl = r#"
heat_template_version: 2018-08-31
parameters:
  env: {type: string, default: dev}
conditions:
  prod: {equals: [{get_param: env}, prod]}
  not_prod: {not: prod}
resources:
  big: {type: OS::Heat::None, condition: prod}
  small: {type: OS::Heat::None, condition: not_prod, properties: {ref: {get_resource: big}}}
outputs:
  which: {value: {if: [prod, big, small]}}
"#;
    let (_, c) = check(tpl, json!({})).unwrap();
    assert_eq!(c.enabled.iter().cloned().collect::<Vec<_>>(), vec!["small"]);
    assert!(c.deps["small"].is_empty(), "a reference to a switched-off resource is no dependency");
    let (_, c) = check(tpl, json!({"env": "prod"})).unwrap();
    assert_eq!(c.enabled.iter().cloned().collect::<Vec<_>>(), vec!["big"]);
    let e =
        err("heat_template_version: 2018-08-31\nresources:\n  a: {type: OS::Heat::None, condition: nope}\n", json!({}));
    assert!(e.contains("Invalid condition \"nope\""), "{e}");
}

#[test]
fn templates_arrive_as_maps_or_text() {
    let t = load(&json!("heat_template_version: 2018-08-31\nresources: {}\n")).unwrap();
    assert_eq!(t["heat_template_version"], "2018-08-31");
    assert!(load(&json!("[1, 2]")).is_err());
    assert!(load(&json!(": : bad")).unwrap_err().to_string().contains("Error parsing template"));
    let e = Template::parse(&json!({"resources": {}})).unwrap_err().to_string();
    assert!(e.contains("heat_template_version is missing"), "{e}");
}

#[test]
fn a_resource_group_of_an_unknown_type_is_refused_by_name() {
    let e = err(
        r#"
heat_template_version: 2018-08-31
resources:
  g: {type: OS::Heat::ResourceGroup, properties: {count: 2, resource_def: {type: OS::Nova::Nope}}}
"#,
        json!({}),
    );
    assert!(e.contains("OS::Nova::Nope") && e.contains("resources.g.properties.resource_def.type"), "{e}");
}
