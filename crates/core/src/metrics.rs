//! Samples a service offers to the process's Prometheus endpoint (`/metrics`), and their
//! text exposition format. Each service measures its own state (its SQL stays in its
//! crate); the binary gathers the samples and renders them.

use std::fmt::Write as _;

/// One gauge sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (`stratus_<service>_<what>`).
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A sample.
    pub fn new(name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, value: f64) -> Sample {
        Sample { name, help, labels, value }
    }
}

/// Escapes a label value (`\`, `"` and newlines, as the format requires).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders `{a="x",b="y"}` (or nothing without labels).
pub fn labels(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// Renders gauge samples, one `# HELP`/`# TYPE` header per metric name (samples of one
/// name are grouped, as the format requires, whatever order they came in).
pub fn render_gauges(samples: &[Sample], out: &mut String) {
    let mut names: Vec<&'static str> = Vec::new();
    for s in samples {
        if !names.contains(&s.name) {
            names.push(s.name);
        }
    }
    for name in names {
        let mut first = true;
        for s in samples.iter().filter(|s| s.name == name) {
            if first {
                let _ = writeln!(out, "# HELP {name} {}", s.help);
                let _ = writeln!(out, "# TYPE {name} gauge");
                first = false;
            }
            let _ = writeln!(out, "{name}{} {}", labels(&s.labels), s.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_one_name_are_grouped_under_one_header_and_values_escaped() {
        let s = |v: &str, x: f64| Sample::new("stratus_x", "X.", vec![("a", v.to_string())], x);
        let mut out = String::new();
        render_gauges(&[s("p\"q", 1.0), Sample::new("stratus_y", "Y.", vec![], 2.5), s("r\\s\n", 3.0)], &mut out);
        assert_eq!(
            out,
            "# HELP stratus_x X.\n# TYPE stratus_x gauge\nstratus_x{a=\"p\\\"q\"} 1\nstratus_x{a=\"r\\\\s\\n\"} 3\n\
             # HELP stratus_y Y.\n# TYPE stratus_y gauge\nstratus_y 2.5\n"
        );
    }
}
