//! SQL helpers every resource module shares: reading typed columns, the key/value
//! tables (volume, snapshot and backup metadata, image metadata, extra specs, QoS
//! values), and the listing rules (filters are bound, sort keys come from allow-lists,
//! pages are keyset pages after a marker).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};
use stratus_core::pagination::{next_href, split_page, PageRequest, PageSpec};
use stratus_core::QueryPairs;
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Arg, Query, Tx};

use crate::error::VolResult;

/// A text column.
pub fn s(row: &AnyRow, col: &str) -> String {
    row.try_get::<Option<String>, _>(col).ok().flatten().unwrap_or_default()
}

/// A nullable text column.
pub fn os(row: &AnyRow, col: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(col).ok().flatten()
}

/// An integer column.
pub fn i(row: &AnyRow, col: &str) -> i64 {
    row.try_get::<Option<i64>, _>(col).ok().flatten().unwrap_or_default()
}

/// A 0/1 flag column.
pub fn b(row: &AnyRow, col: &str) -> bool {
    i(row, col) != 0
}

/// A key/value table: `table (<owner>, key, value)`.
#[derive(Debug, Clone, Copy)]
pub struct KvTable {
    /// Table name.
    pub table: &'static str,
    /// Column naming the owner.
    pub owner: &'static str,
}

/// Volume metadata.
pub const VOLUME_META: KvTable = KvTable { table: "volume_metadata", owner: "volume_id" };
/// Volume image metadata (`volume_image_metadata`).
pub const IMAGE_META: KvTable = KvTable { table: "volume_image_metadata", owner: "volume_id" };
/// Snapshot metadata.
pub const SNAPSHOT_META: KvTable = KvTable { table: "volume_snapshot_metadata", owner: "snapshot_id" };
/// Backup metadata.
pub const BACKUP_META: KvTable = KvTable { table: "volume_backup_metadata", owner: "backup_id" };
/// Volume type extra specs.
pub const EXTRA_SPECS: KvTable = KvTable { table: "volume_type_extra_specs", owner: "type_id" };
/// QoS spec values.
pub const QOS_VALUES: KvTable = KvTable { table: "volume_qos_spec_values", owner: "spec_id" };

impl KvTable {
    /// Every owner's pairs, for the owners named.
    pub async fn load_many<'e, E>(
        &self,
        ex: E,
        owners: &[String],
    ) -> VolResult<HashMap<String, BTreeMap<String, String>>>
    where
        E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
    {
        let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        if owners.is_empty() {
            return Ok(out);
        }
        let mut q = Query::new(format!("SELECT {}, key, value FROM {} WHERE ", self.owner, self.table));
        q.push_in(self.owner, owners.iter().cloned());
        for r in q.fetch_all(ex).await? {
            out.entry(s(&r, self.owner)).or_default().insert(s(&r, "key"), s(&r, "value"));
        }
        Ok(out)
    }

    /// One owner's pairs.
    pub async fn load<'e, E>(&self, ex: E, owner: &str) -> VolResult<BTreeMap<String, String>>
    where
        E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
    {
        Ok(self.load_many(ex, &[owner.to_string()]).await?.remove(owner).unwrap_or_default())
    }

    /// Sets `pairs` (adding or overwriting; others stay).
    pub async fn merge(&self, tx: &mut Tx, owner: &str, pairs: &BTreeMap<String, String>) -> VolResult<()> {
        for (k, v) in pairs {
            let mut q = Query::new(format!("DELETE FROM {} WHERE {} = ", self.table, self.owner));
            q.bind(owner).push(" AND key = ").bind(k);
            q.execute(&mut **tx).await?;
            let mut q = Query::new(format!("INSERT INTO {} ({}, key, value) VALUES (", self.table, self.owner));
            q.bind(owner).push(", ").bind(k).push(", ").bind(v).push(")");
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Replaces every pair with `pairs`.
    pub async fn replace(&self, tx: &mut Tx, owner: &str, pairs: &BTreeMap<String, String>) -> VolResult<()> {
        self.clear(tx, owner).await?;
        self.merge(tx, owner, pairs).await
    }

    /// Removes `key`; answers whether it was there.
    pub async fn remove(&self, tx: &mut Tx, owner: &str, key: &str) -> VolResult<bool> {
        let mut q = Query::new(format!("DELETE FROM {} WHERE {} = ", self.table, self.owner));
        q.bind(owner).push(" AND key = ").bind(key);
        Ok(q.execute(&mut **tx).await? > 0)
    }

    /// Removes every pair of `owner`.
    pub async fn clear(&self, tx: &mut Tx, owner: &str) -> VolResult<()> {
        let mut q = Query::new(format!("DELETE FROM {} WHERE {} = ", self.table, self.owner));
        q.bind(owner);
        q.execute(&mut **tx).await?;
        Ok(())
    }
}

/// Appends a filter matching owners whose `meta` has every pair of `want`.
pub fn push_meta_filter(q: &mut Query, kv: KvTable, id_col: &str, want: &BTreeMap<String, String>) {
    for (k, v) in want {
        q.push(&format!(" AND {id_col} IN (SELECT {} FROM {} WHERE key = ", kv.owner, kv.table));
        q.bind(k.clone()).push(" AND value = ").bind(v.clone()).push(")");
    }
}

/// A listing's page: rows after the marker, sorted, one more than the page fetched.
pub struct Listing {
    /// Parsed limit, marker and sort.
    pub page: PageRequest,
    /// `offset` (Cinder still accepts it).
    pub offset: i64,
}

impl Listing {
    /// Parses the query's paging parameters with `spec`.
    pub fn parse(spec: &PageSpec, q: &QueryPairs) -> VolResult<Listing> {
        let page = spec.parse(q).map_err(crate::error::VolError::Api)?;
        let offset = q.int("offset").map_err(crate::error::VolError::Api)?.unwrap_or(0);
        if offset < 0 {
            return Err(crate::error::bad("Invalid offset: it must be >= 0"));
        }
        Ok(Listing { page, offset })
    }

    /// Appends the marker condition (the marker row's sort values are read from
    /// `table` by id), ORDER BY, LIMIT and OFFSET.
    pub async fn finish<'e, E>(&self, q: &mut Query, ex: E, table: &str, id_col: &str, what: &str) -> VolResult<()>
    where
        E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
    {
        if let Some(m) = &self.page.marker {
            let cols: Vec<&str> = self.page.sort.iter().map(|k| k.column).collect();
            let select = if cols.is_empty() { id_col.to_string() } else { format!("{}, {id_col}", cols.join(", ")) };
            let mut mq = Query::new(format!("SELECT {select} FROM {table} WHERE {id_col} = "));
            mq.bind(m.clone());
            let row = mq.fetch_optional(ex).await?.ok_or_else(|| {
                // Cinder's MarkerNotFound is a NotFound (404).
                crate::error::VolError::NotFound(format!("Marker {m} could not be found ({what})."))
            })?;
            let mut vals = Vec::new();
            for c in cols.iter().chain(std::iter::once(&id_col)) {
                let v = match row.try_get::<Option<String>, _>(*c) {
                    Ok(v) => Arg::from(v),
                    Err(_) => Arg::from(row.try_get::<Option<i64>, _>(*c).ok().flatten()),
                };
                vals.push(v);
            }
            self.page.push_after_marker(q, id_col, &vals);
        }
        self.page.push_order_by(q, id_col);
        self.page.push_limit_plus_one(q);
        if self.offset > 0 {
            q.push(" OFFSET ").bind(self.offset);
        }
        Ok(())
    }

    /// Splits the fetched rows into the page and its `next` link. As Cinder
    /// (`_get_collection_links`), a full page always links to the next one, even when
    /// nothing follows: clients (Tempest's pagination tests) rely on it.
    pub fn links<T>(
        &self,
        rows: Vec<T>,
        last_id: impl Fn(&T) -> String,
        base: &str,
        path: &str,
        q: &QueryPairs,
    ) -> (Vec<T>, Option<Value>) {
        let (rows, more) = split_page(rows, self.page.limit);
        let full = self.page.limit > 0 && rows.len() == self.page.limit;
        let link = match (more || full, rows.last()) {
            (true, Some(last)) => Some(json!([{"rel": "next", "href": next_href(base, path, q, &last_id(last))}])),
            _ => None,
        };
        (rows, link)
    }
}
