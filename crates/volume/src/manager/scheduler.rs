//! The scheduler: which pool a new volume goes to, and, when none will do, why.
//!
//! As Cinder's filter scheduler: the candidates are the pools of the `cinder-volume`
//! services that are enabled and up; filters drop those in another availability zone,
//! those whose `volume_backend_name` is not the one the volume type asks for, those
//! without multiattach when the volume needs it, those that are not the source's
//! backend (snapshots and clones stay on their backend), and those without room; the
//! capacity weigher then prefers the most virtual free space. Room is counted from the
//! volume rows (every volume scheduled to the pool, those still being created
//! included) inside the same transaction that records the choice, so a burst of
//! creates cannot overcommit a pool between two heartbeats. A refusal lists every
//! backend with the reason it was dropped: that text becomes the user message.

use stratus_db::{Query, Tx};
use stratus_volume_contract::{BackendReport, PoolReport};

use crate::sql;
use crate::Vol;

/// What a new volume needs.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Size in GiB.
    pub size_gb: i64,
    /// Availability zone it must be in.
    pub availability_zone: Option<String>,
    /// The type's `volume_backend_name`.
    pub backend_name: Option<String>,
    /// Other capabilities the type asks for (see [`CAPABILITIES`]), by name.
    pub capabilities: Vec<(String, String)>,
    /// It must be on this backend (`host@backend`): its source is there.
    pub same_backend: Option<String>,
    /// It may attach to several servers.
    pub multiattach: bool,
}

/// Capabilities a volume type's extra specs can ask a backend for (beside
/// `volume_backend_name`); other extra specs do not constrain the scheduler.
pub const CAPABILITIES: &[&str] = &["storage_protocol", "vendor_name", "driver_version"];

/// What backend `r` reports for capability `key`.
fn capability<'a>(r: &'a BackendReport, key: &str) -> Option<&'a str> {
    match key {
        "storage_protocol" => Some(&r.storage_protocol),
        "vendor_name" => Some(&r.vendor_name),
        "driver_version" => Some(&r.driver_version),
        _ => None,
    }
}

/// Whether `have` satisfies the extra spec `want`: equality, except that protocols
/// compare without case (`iSCSI`/`iscsi`) as in Cinder.
fn satisfies(key: &str, have: &str, want: &str) -> bool {
    if key == "storage_protocol" {
        have.eq_ignore_ascii_case(want)
    } else {
        have == want
    }
}

/// A volume service as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `host@backend`.
    pub backend: String,
    /// Its last report.
    pub report: BackendReport,
    /// Up (heartbeat recent) and enabled.
    pub usable: Result<(), String>,
}

/// Every registered backend with whether it is usable.
pub async fn candidates<'e, E>(vol: &Vol, ex: E) -> Result<Vec<Candidate>, stratus_db::DbError>
where
    E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
{
    let rows = Query::new("SELECT * FROM volume_services WHERE service_binary = 'cinder-volume' ORDER BY host")
        .fetch_all(ex)
        .await?;
    let now = chrono::Utc::now();
    Ok(rows
        .iter()
        .map(|r| {
            let report: BackendReport =
                sql::os(r, "report").and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
            let age = stratus_core::time::parse(&sql::s(r, "updated_at"))
                .map(|t| (now - t).num_seconds())
                .unwrap_or(i64::MAX);
            let usable = if sql::b(r, "disabled") {
                Err(format!("disabled ({})", sql::os(r, "disabled_reason").unwrap_or_else(|| "no reason given".into())))
            } else if age > vol.cfg.service_down_time_secs as i64 {
                Err(format!("down (no heartbeat for {age} s)"))
            } else if report.backend_state == "down" {
                Err("its storage is unreachable (backend_state down)".into())
            } else {
                Ok(())
            };
            Candidate { backend: sql::s(r, "host"), report, usable }
        })
        .collect())
}

/// GiB scheduled to `host` (`host@backend#pool`) according to the volume rows.
pub async fn provisioned(tx: &mut Tx, host: &str) -> Result<i64, stratus_db::DbError> {
    let mut q = Query::new(
        "SELECT CAST(COALESCE(SUM(size + reserved_size), 0) AS BIGINT) AS n FROM volume_volumes WHERE deleted = 0 AND host = ",
    );
    q.bind(host);
    Ok(q.fetch_optional(&mut **tx).await?.map(|r| sql::i(&r, "n")).unwrap_or(0))
}

/// Virtual free GiB of `pool` given `provisioned` GiB, and why it cannot take `size`.
fn room(pool: &PoolReport, provisioned: i64, size: i64) -> (f64, Option<String>) {
    let total = pool.total_capacity_gb;
    let reserved = total * pool.reserved_percentage as f64 / 100.0;
    let ratio = if pool.thin_provisioning_support { pool.max_over_subscription_ratio.max(1.0) } else { 1.0 };
    let virtual_free = (total - reserved) * ratio - provisioned as f64;
    if total <= 0.0 {
        return (0.0, Some("reports no capacity".into()));
    }
    if pool.free_capacity_gb - reserved <= 0.0 {
        return (
            virtual_free,
            Some(format!("has no free space left ({:.1} GiB free, {reserved:.1} reserved)", pool.free_capacity_gb)),
        );
    }
    if !pool.thin_provisioning_support && pool.free_capacity_gb - reserved < size as f64 {
        return (
            virtual_free,
            Some(format!("has {:.1} GiB free, {size} GiB requested", pool.free_capacity_gb - reserved)),
        );
    }
    if virtual_free < size as f64 {
        return (
            virtual_free,
            Some(format!(
                "has {virtual_free:.1} GiB left to provision ({total:.1} GiB x{ratio} overcommit, {provisioned} GiB provisioned), {size} GiB requested"
            )),
        );
    }
    (virtual_free, None)
}

/// Picks the pool for a volume with `needs` (`host@backend#pool`), or explains in
/// words why there is none.
pub async fn pick(vol: &Vol, tx: &mut Tx, needs: &Needs) -> Result<Result<String, String>, stratus_db::DbError> {
    let all = candidates(vol, &mut **tx).await?;
    if all.is_empty() {
        return Ok(Err("No volume service is registered: start a volume agent ([volume_agent]).".into()));
    }
    let mut best: Option<(f64, String)> = None;
    let mut why = Vec::new();
    for c in &all {
        let r = &c.report;
        if let Err(e) = &c.usable {
            why.push(format!("{} is {e}", c.backend));
            continue;
        }
        if let Some(az) = &needs.availability_zone {
            if &r.availability_zone != az {
                why.push(format!("{} is in availability zone {}, not {az}", c.backend, r.availability_zone));
                continue;
            }
        }
        if let Some(name) = &needs.backend_name {
            if &r.volume_backend_name != name {
                why.push(format!(
                    "{} has volume_backend_name {}, the volume type asks for {name}",
                    c.backend, r.volume_backend_name
                ));
                continue;
            }
        }
        if let Some((k, want, have)) = needs.capabilities.iter().find_map(|(k, want)| {
            let have = capability(r, k).unwrap_or_default();
            (!satisfies(k, have, want)).then_some((k, want, have))
        }) {
            why.push(format!("{} has {k} {have}, the volume type asks for {want}", c.backend));
            continue;
        }
        if let Some(b) = &needs.same_backend {
            if &c.backend != b {
                why.push(format!("{} is not {b}, where the volume's source is", c.backend));
                continue;
            }
        }
        if r.pools.is_empty() {
            why.push(format!("{} reports no pools", c.backend));
        }
        for pool in &r.pools {
            let host = format!("{}#{}", c.backend, pool.name);
            if needs.multiattach && !pool.multiattach {
                why.push(format!("{host} does not support multiattach"));
                continue;
            }
            let used = provisioned(tx, &host).await?;
            let (free, refused) = room(pool, used, needs.size_gb);
            if let Some(r) = refused {
                why.push(format!("{host} {r}"));
                continue;
            }
            if best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, host));
            }
        }
    }
    Ok(match best {
        Some((_, host)) => Ok(host),
        None => Err(why.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_match_as_cinder_compares_them() {
        assert!(satisfies("storage_protocol", "iSCSI", "iscsi"));
        assert!(satisfies("vendor_name", "Open Source", "Open Source"));
        assert!(!satisfies("vendor_name", "Open Source", "open source"));
        assert!(!satisfies("storage_protocol", "file", "iSCSI"));
    }

    #[test]
    fn thin_pools_overcommit_up_to_their_ratio() {
        let pool = PoolReport {
            name: "p".into(),
            total_capacity_gb: 10.0,
            free_capacity_gb: 8.0,
            max_over_subscription_ratio: 2.0,
            thin_provisioning_support: true,
            ..Default::default()
        };
        assert_eq!(room(&pool, 15, 5).1, None);
        let refused = room(&pool, 16, 5).1.unwrap();
        assert!(refused.contains("4.0 GiB left to provision") && refused.contains("5 GiB requested"), "{refused}");
        let full = PoolReport { free_capacity_gb: 0.0, ..pool.clone() };
        assert!(room(&full, 0, 1).1.unwrap().contains("no free space"));
        let thick = PoolReport { thin_provisioning_support: false, ..pool };
        assert!(room(&thick, 0, 9).1.unwrap().contains("8.0 GiB free, 9 GiB requested"));
    }
}
