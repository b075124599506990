//! Running `ip`, `nft`, `sysctl` and `dnsmasq` inside a chosen network namespace.
//!
//! Every command is an argv (no shell). Names that come from the desired state are
//! validated before they reach an argv ([`check_name`]), so a crafted id cannot become an
//! option. `ip` itself has no `--` terminator for device names, which is why validation
//! (not quoting) is the defence here.
//!
//! [`Ns`] is the namespace a command runs in: `Ns::Root` is the process's own namespace
//! (production), `Ns::Named` is one under `/run/netns` (router/DHCP namespaces, and in
//! tests the namespace that plays the hypervisor host).

use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::process::Command;

/// A network namespace commands run in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ns {
    /// The agent's own namespace.
    Root,
    /// A named namespace (`/run/netns/<name>`).
    Named(String),
}

impl Ns {
    /// The namespace called `name`.
    pub fn named(name: impl Into<String>) -> Ns {
        Ns::Named(name.into())
    }

    /// Its name, for `ip link set ... netns <name>`.
    pub fn name(&self) -> Option<&str> {
        match self {
            Ns::Root => None,
            Ns::Named(n) => Some(n),
        }
    }

    /// `ip [-n ns] args...`, checked.
    pub async fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv: Vec<&str> = Vec::with_capacity(args.len() + 2);
        if let Ns::Named(n) = self {
            argv.extend(["-n", n.as_str()]);
        }
        argv.extend_from_slice(args);
        run("ip", &argv).await
    }

    /// `bridge [-n ns] args...`, checked (FDB entries).
    pub async fn bridge(&self, args: &[&str]) -> Result<String> {
        let mut argv: Vec<&str> = Vec::with_capacity(args.len() + 2);
        if let Ns::Named(n) = self {
            argv.extend(["-n", n.as_str()]);
        }
        argv.extend_from_slice(args);
        run("bridge", &argv).await
    }

    /// `ip [-n ns] args...`, returning whether it succeeded (for probes such as "does it exist").
    pub async fn ip_ok(&self, args: &[&str]) -> bool {
        self.ip(args).await.is_ok()
    }

    /// `ip -j [-n ns] args...` parsed as JSON.
    pub async fn ip_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        let out = self.ip(&a).await?;
        if out.trim().is_empty() {
            return Ok(Value::Array(vec![]));
        }
        serde_json::from_str(&out).with_context(|| format!("ip -j {args:?}: bad JSON"))
    }

    /// Runs `program args...` inside the namespace (through `ip netns exec` for a named one).
    pub async fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        match self {
            Ns::Root => run(program, args).await,
            Ns::Named(n) => {
                let mut argv = vec!["netns", "exec", n.as_str(), program];
                argv.extend_from_slice(args);
                run("ip", &argv).await
            }
        }
    }

    /// `nft -f <file>` inside the namespace: the file is one atomic transaction.
    pub async fn nft_apply(&self, ruleset: &str, dir: &std::path::Path) -> Result<()> {
        let path = dir.join(format!("nft-{}.conf", std::process::id()));
        tokio::fs::write(&path, ruleset).await?;
        let p = path.to_string_lossy().into_owned();
        let r = self.exec("nft", &["-f", &p]).await;
        let _ = tokio::fs::remove_file(&path).await;
        r.map(|_| ()).with_context(|| format!("nft ruleset:\n{ruleset}"))
    }

    /// Sets a sysctl inside the namespace (each namespace has its own `net.*`).
    pub async fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]).await.map(|_| ())
    }

    /// Whether a link exists.
    pub async fn link_exists(&self, dev: &str) -> bool {
        self.ip_ok(&["link", "show", "dev", dev]).await
    }
}

/// Runs a program, returns stdout, fails with its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {program} (see scripts/install-host-packages.sh)"))?;
    if !out.status.success() {
        bail!("{program} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Named namespaces that exist now.
pub async fn list_netns() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"]).await?;
    Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
}

/// Creates a named namespace (no-op if present) with its loopback up.
pub async fn ensure_netns(name: &str) -> Result<Ns> {
    check_name(name)?;
    if !list_netns().await?.iter().any(|n| n == name) {
        run("ip", &["netns", "add", name]).await?;
    }
    let ns = Ns::named(name);
    ns.ip(&["link", "set", "lo", "up"]).await?;
    Ok(ns)
}

/// Kills the processes inside a named namespace, then deletes it (its devices go with it).
pub async fn delete_netns(name: &str) -> Result<()> {
    check_name(name)?;
    if let Ok(pids) = run("ip", &["netns", "pids", name]).await {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    if list_netns().await?.iter().any(|n| n == name) {
        run("ip", &["netns", "del", name]).await?;
    }
    Ok(())
}

/// Accepts names made of ASCII letters, digits, `-`, `_`, `.` and `:` that do not start with `-`.
pub fn check_name(s: &str) -> Result<&str> {
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    if ok {
        Ok(s)
    } else {
        Err(anyhow!("refusing unsafe name {s:?}"))
    }
}

/// Validates a MAC address (`aa:bb:cc:dd:ee:ff`).
pub fn check_mac(s: &str) -> Result<&str> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
        Ok(s)
    } else {
        Err(anyhow!("bad MAC address {s:?}"))
    }
}

/// An id squeezed to its first `n` alphanumeric characters (for interface names, IFNAMSIZ = 16).
pub fn short(id: &str, n: usize) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric()).take(n).collect::<String>().to_ascii_lowercase()
}

/// Device names, Neutron style, all within 15 characters.
pub mod names {
    use super::short;

    /// Bridge of a network: `brq` + 11 id characters.
    pub fn bridge(net_id: &str) -> String {
        format!("brq{}", short(net_id, 11))
    }
    /// VXLAN device of a VNI.
    pub fn vxlan(vni: u32) -> String {
        format!("vxlan-{vni}")
    }
    /// Host side of a port (a guest's tap, or the bridge end of a DHCP/router veth).
    pub fn tap(port_id: &str) -> String {
        format!("tap{}", short(port_id, 11))
    }
    /// DHCP namespace end of the DHCP port.
    pub fn dhcp_dev(port_id: &str) -> String {
        format!("ns-{}", short(port_id, 11))
    }
    /// Router namespace end of an interface port.
    pub fn router_if(port_id: &str) -> String {
        format!("qr-{}", short(port_id, 11))
    }
    /// Router namespace end of the gateway port.
    pub fn router_gw(port_id: &str) -> String {
        format!("qg-{}", short(port_id, 11))
    }
    /// VLAN subinterface of a physical interface; hashed when `phys.vid` would not fit.
    pub fn vlan(phys: &str, vid: u32) -> String {
        let n = format!("{phys}.{vid}");
        if n.len() <= 15 {
            n
        } else {
            format!("vlan{}-{vid}", short(phys, 5))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        let id = "6b0c9a1e-2f3d-4c5b-8a7e-0123456789ab";
        for n in
            [names::bridge(id), names::tap(id), names::dhcp_dev(id), names::router_gw(id), names::vxlan(16_777_215)]
        {
            assert!(n.len() <= 15, "{n}");
        }
        assert_eq!(names::bridge(id), "brq6b0c9a1e2f3");
        assert_eq!(names::vlan("eth0", 100), "eth0.100");
        assert!(names::vlan("enp0s31f6long", 4094).len() <= 15);
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert!(check_name("-rf").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("qdhcp-6b0c").is_ok());
        assert!(check_mac("fa:16:3e:00:00:01").is_ok());
        assert!(check_mac("fa:16:3e:00:00:0g").is_err());
    }
}
