//! Software configuration kept in the stack: `OS::Heat::SoftwareConfig` (a script or
//! cloud-config text with a group), `OS::Heat::CloudConfig` (a `#cloud-config` document
//! from a map) and `OS::Heat::MultipartMime` (several configs in one MIME multipart
//! message, what cloud-init reads as user data). Each is referenced by its id
//! (`get_resource`), and `config` is its text; a server with `user_data_format:
//! SOFTWARE_CONFIG` gets the text of the config its `user_data` names ([`config_text`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{opt, req, Created, Cx, Kind, Prop, Registry, ResourceType};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(SoftwareConfig));
    r.add(Arc::new(CloudConfig));
    r.add(Arc::new(MultipartMime));
}

fn made(config: String, group: &str) -> Created {
    Created {
        physical_id: uuid::Uuid::new_v4().to_string(),
        ref_id: None,
        attributes: json!({"config": config, "group": group}),
    }
}

/// The text of the config with id `id` in this stack, or `id` itself when no config of
/// the stack has that id (a literal script given in its place).
pub async fn config_text(cx: &Cx, id: &str) -> Result<String, String> {
    let row = crate::store::resource_by_physical(&cx.db, &cx.stack_id, id).await.map_err(|e| e.to_string())?;
    Ok(match row.and_then(|r| r.attributes["config"].as_str().map(str::to_string)) {
        Some(text) => text,
        None => id.to_string(),
    })
}

struct SoftwareConfig;

#[async_trait]
impl ResourceType for SoftwareConfig {
    fn name(&self) -> &'static str {
        "OS::Heat::SoftwareConfig"
    }
    fn description(&self) -> &'static str {
        "A configuration script or document, for servers' user data or deployments."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("group", Kind::Str, "Tool that applies it (default Heat::Ungrouped)."),
            opt("config", Kind::Str, "The configuration text."),
            opt("inputs", Kind::List, "Inputs it takes."),
            opt("outputs", Kind::List, "Outputs it gives."),
            opt("options", Kind::Map, "Options for the tool."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["config"]
    }
    async fn create(&self, _cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let config = props.get("config").and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(made(config, props.get("group").and_then(Value::as_str).unwrap_or("Heat::Ungrouped")))
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _a: &Value) -> Result<(), String> {
        Ok(())
    }
}

struct CloudConfig;

#[async_trait]
impl ResourceType for CloudConfig {
    fn name(&self) -> &'static str {
        "OS::Heat::CloudConfig"
    }
    fn description(&self) -> &'static str {
        "A cloud-init #cloud-config document made from a map."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[opt("cloud_config", Kind::Map, "The cloud-config map.")];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["config"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let map = props.get("cloud_config").cloned().unwrap_or(json!({}));
        let yaml = serde_yaml::to_string(&map)
            .map_err(|e| format!("Property error: resources.{}.properties.cloud_config: {e}", cx.resource_name))?;
        Ok(made(format!("#cloud-config\n{yaml}"), "Heat::Ungrouped"))
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _a: &Value) -> Result<(), String> {
        Ok(())
    }
}

struct MultipartMime;

/// The MIME subtype cloud-init dispatches on, from the text's first line.
fn guess_subtype(text: &str) -> &'static str {
    if text.starts_with("#!") {
        "x-shellscript"
    } else if text.starts_with("#cloud-config") {
        "cloud-config"
    } else if text.starts_with("#cloud-boothook") {
        "cloud-boothook"
    } else if text.starts_with("#include") {
        "x-include-url"
    } else {
        "plain"
    }
}

/// A multipart/mixed message of `(subtype, filename, text)` parts.
fn mime(parts: &[(String, String, String)]) -> String {
    let boundary = format!("==============={}==", uuid::Uuid::new_v4().simple());
    let mut out = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    for (subtype, filename, text) in parts {
        out.push_str(&format!(
            "--{boundary}\nContent-Type: text/{subtype}; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"{filename}\"\n\n{text}\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\n"));
    out
}

#[async_trait]
impl ResourceType for MultipartMime {
    fn name(&self) -> &'static str {
        "OS::Heat::MultipartMime"
    }
    fn description(&self) -> &'static str {
        "Several configs in one MIME multipart message (cloud-init user data)."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("parts", Kind::List, "Parts: {config (a config's id or text), filename, type, subtype}."),
            opt("group", Kind::Str, "Tool that applies it (default Heat::Ungrouped)."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["config"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let mut parts = Vec::new();
        for (i, p) in props.get("parts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let at = format!("Property error: resources.{}.properties.parts[{i}]", cx.resource_name);
            let id = p["config"].as_str().ok_or_else(|| format!("{at}.config: a config id or text is required"))?;
            let text = config_text(cx, id).await?;
            let subtype = match p["subtype"].as_str() {
                Some(s) => s.to_string(),
                None => guess_subtype(&text).to_string(),
            };
            let filename = p["filename"].as_str().map(str::to_string).unwrap_or_else(|| format!("part-{i}"));
            parts.push((subtype, filename, text));
        }
        Ok(made(mime(&parts), props.get("group").and_then(Value::as_str).unwrap_or("Heat::Ungrouped")))
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _a: &Value) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_message_has_each_part_with_its_type() {
        let m = mime(&[
            ("x-shellscript".into(), "a.sh".into(), "#!/bin/sh\necho hi".into()),
            ("cloud-config".into(), "part-1".into(), "#cloud-config\nruncmd: []".into()),
        ]);
        let boundary = m.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(m.matches(&format!("--{boundary}\n")).count(), 2);
        assert!(m.ends_with(&format!("--{boundary}--\n")));
        assert!(
            m.contains("Content-Type: text/x-shellscript") && m.contains("filename=\"a.sh\"\n\n#!/bin/sh\necho hi\n")
        );
        assert_eq!(guess_subtype("#cloud-config\n"), "cloud-config");
        assert_eq!(guess_subtype("hello"), "plain");
    }
}
