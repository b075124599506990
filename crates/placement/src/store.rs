//! SQL shared by several resources: reading providers into the read model, generation
//! checks, and existence of resource classes and traits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stratus_db::sqlx::{Any, Executor, Row};
use stratus_db::{Query, Tx};

use crate::catalog;
use crate::error::{PlacementError, Result};
use crate::index::{Inv, Provider};
use crate::AppState;

/// A provider row.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Generation.
    pub generation: i64,
    /// Parent.
    pub parent: Option<String>,
    /// Root.
    pub root: String,
}

const PROVIDER_COLS: &str = "uuid, name, generation, parent_uuid, root_uuid";

fn provider_from(r: &stratus_db::sqlx::any::AnyRow) -> ProviderRow {
    ProviderRow {
        uuid: r.get(0),
        name: r.get(1),
        generation: r.get(2),
        parent: r.get::<Option<String>, _>(3),
        root: r.get(4),
    }
}

/// One provider by UUID.
pub async fn provider<'e, E: Executor<'e, Database = Any>>(ex: E, uuid: &str) -> Result<Option<ProviderRow>> {
    let mut q = Query::new(format!("SELECT {PROVIDER_COLS} FROM placement_resource_providers WHERE uuid = "));
    q.bind(uuid);
    Ok(q.fetch_optional(ex).await?.as_ref().map(provider_from))
}

/// One provider by UUID, or 404 in Placement's words.
pub async fn provider_or_404<'e, E: Executor<'e, Database = Any>>(ex: E, uuid: &str) -> Result<ProviderRow> {
    provider(ex, uuid)
        .await?
        .ok_or_else(|| PlacementError::NotFound(format!("No resource provider with uuid {uuid} found")))
}

/// Increments a provider's generation if it still is `expected`; 409 otherwise.
pub async fn bump_generation(tx: &mut Tx, uuid: &str, expected: i64) -> Result<i64> {
    let mut q = Query::new("UPDATE placement_resource_providers SET generation = generation + 1, updated_at = ");
    q.bind(stratus_core::time::now()).push(" WHERE uuid = ").bind(uuid).push(" AND generation = ").bind(expected);
    if q.execute(&mut **tx).await? != 1 {
        return Err(PlacementError::ConcurrentUpdate(format!(
            "resource provider generation conflict: the resource provider {uuid} was updated by another request; \
             please update the generation and try again."
        )));
    }
    Ok(expected + 1)
}

/// True when `rc` is a standard or existing custom resource class.
pub async fn class_exists<'e, E: Executor<'e, Database = Any>>(ex: E, rc: &str) -> Result<bool> {
    if catalog::is_standard_class(rc) {
        return Ok(true);
    }
    let mut q = Query::new("SELECT 1 FROM placement_custom_resource_classes WHERE name = ");
    q.bind(rc);
    Ok(q.fetch_optional(ex).await?.is_some())
}

/// The subset of `names` that are not known traits.
pub async fn unknown_traits<'e, E: Executor<'e, Database = Any>>(ex: E, names: &[String]) -> Result<Vec<String>> {
    let custom: Vec<&String> = names.iter().filter(|n| !catalog::is_standard_trait(n)).collect();
    if custom.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Query::new("SELECT name FROM placement_custom_traits WHERE ");
    q.push_in("name", custom.iter().map(|s| s.as_str()));
    let found: BTreeSet<String> = q.fetch_all(ex).await?.iter().map(|r| r.get::<String, _>(0)).collect();
    Ok(custom.into_iter().filter(|n| !found.contains(*n)).cloned().collect())
}

/// Inventories of `uuids` (all providers when `None`).
pub async fn inventories<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    uuids: Option<&[String]>,
) -> Result<HashMap<String, BTreeMap<String, Inv>>> {
    let mut q = Query::new(
        "SELECT provider_uuid, resource_class, total, reserved, min_unit, max_unit, step_size, allocation_ratio \
         FROM placement_inventories",
    );
    if let Some(u) = uuids {
        q.push(" WHERE ").push_in("provider_uuid", u.iter().map(String::as_str));
    }
    let mut out: HashMap<String, BTreeMap<String, Inv>> = HashMap::new();
    for r in q.fetch_all(ex).await? {
        let inv = Inv {
            total: r.get(2),
            reserved: r.get(3),
            min_unit: r.get(4),
            max_unit: r.get(5),
            step_size: r.get(6),
            allocation_ratio: r.get(7),
        };
        out.entry(r.get(0)).or_default().insert(r.get(1), inv);
    }
    Ok(out)
}

/// Inventories of `uuids` with the usage of each inventoried class, in one statement
/// (the claim path: one round trip fewer inside the writer's transaction).
#[allow(clippy::type_complexity)]
pub async fn inventories_with_usage<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    uuids: &[String],
) -> Result<(HashMap<String, BTreeMap<String, Inv>>, HashMap<String, BTreeMap<String, i64>>)> {
    let mut q = Query::new(
        "SELECT i.provider_uuid, i.resource_class, i.total, i.reserved, i.min_unit, i.max_unit, i.step_size, \
         i.allocation_ratio, CAST(COALESCE((SELECT SUM(a.used) FROM placement_allocations a \
         WHERE a.provider_uuid = i.provider_uuid AND a.resource_class = i.resource_class), 0) AS BIGINT) \
         FROM placement_inventories i WHERE ",
    );
    q.push_in("i.provider_uuid", uuids.iter().map(String::as_str));
    let mut invs: HashMap<String, BTreeMap<String, Inv>> = HashMap::new();
    let mut uses: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for r in q.fetch_all(ex).await? {
        let inv = Inv {
            total: r.get(2),
            reserved: r.get(3),
            min_unit: r.get(4),
            max_unit: r.get(5),
            step_size: r.get(6),
            allocation_ratio: r.get(7),
        };
        let (rp, rc): (String, String) = (r.get(0), r.get(1));
        let used: i64 = r.get(8);
        if used != 0 {
            uses.entry(rp.clone()).or_default().insert(rc.clone(), used);
        }
        invs.entry(rp).or_default().insert(rc, inv);
    }
    Ok((invs, uses))
}

/// Usages of `uuids` (all providers when `None`) per class.
pub async fn usages<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    uuids: Option<&[String]>,
) -> Result<HashMap<String, BTreeMap<String, i64>>> {
    let mut q =
        Query::new("SELECT provider_uuid, resource_class, CAST(SUM(used) AS BIGINT) FROM placement_allocations");
    if let Some(u) = uuids {
        q.push(" WHERE ").push_in("provider_uuid", u.iter().map(String::as_str));
    }
    q.push(" GROUP BY provider_uuid, resource_class");
    let mut out: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for r in q.fetch_all(ex).await? {
        out.entry(r.get(0)).or_default().insert(r.get(1), r.get::<i64, _>(2));
    }
    Ok(out)
}

async fn pairs<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    sql: &str,
    uuids: Option<&[String]>,
) -> Result<HashMap<String, BTreeSet<String>>> {
    let mut q = Query::new(sql);
    if let Some(u) = uuids {
        q.push(" WHERE ").push_in("provider_uuid", u.iter().map(String::as_str));
    }
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in q.fetch_all(ex).await? {
        out.entry(r.get(0)).or_default().insert(r.get(1));
    }
    Ok(out)
}

/// Reads providers (all when `uuids` is `None`) with everything the read model holds.
pub async fn load_providers(st: &AppState, uuids: Option<&[String]>) -> Result<Vec<Provider>> {
    let db = st.db.reader();
    let mut q = Query::new(format!("SELECT {PROVIDER_COLS} FROM placement_resource_providers"));
    if let Some(u) = uuids {
        q.push(" WHERE ").push_in("uuid", u.iter().map(String::as_str));
    }
    let rows: Vec<ProviderRow> = q.fetch_all(db).await?.iter().map(provider_from).collect();
    let mut invs = inventories(db, uuids).await?;
    let mut uses = usages(db, uuids).await?;
    let mut traits = pairs(db, "SELECT provider_uuid, trait FROM placement_provider_traits", uuids).await?;
    let mut aggs = pairs(db, "SELECT provider_uuid, aggregate_uuid FROM placement_provider_aggregates", uuids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            Provider::new(
                r.uuid.clone(),
                r.name,
                r.generation,
                r.parent,
                r.root,
                invs.remove(&r.uuid).unwrap_or_default(),
                uses.remove(&r.uuid).unwrap_or_default(),
                traits.remove(&r.uuid).unwrap_or_default(),
                aggs.remove(&r.uuid).unwrap_or_default(),
            )
        })
        .collect())
}

/// Loads the whole read model (start-up, periodic resync): newer components replace
/// older ones, and providers no longer in the database are dropped.
pub async fn reload_all(st: &AppState) -> Result<()> {
    let provs = load_providers(st, None).await?;
    let present: std::collections::HashSet<String> = provs.iter().map(|p| p.uuid.clone()).collect();
    let mut idx = st.index.write();
    for p in provs {
        idx.apply(p, true);
    }
    idx.retain(&present);
    Ok(())
}

/// Re-reads `uuids` after a committed write and applies them to the read model.
pub async fn refresh(st: &AppState, uuids: &[String], created: bool) -> Result<()> {
    let provs = load_providers(st, Some(uuids)).await?;
    let mut idx = st.index.write();
    for p in provs {
        idx.apply(p, created);
    }
    Ok(())
}
