//! Placement's samples for `/metrics`: capacity and usage per provider and resource
//! class, the numbers an operator watches to know when a cloud is full.

use stratus_core::metrics::Sample;
use stratus_db::{Db, DbError};

/// Capacity (`(total - reserved) * allocation_ratio`, what placement lets consumers
/// claim) and usage of every provider's inventories.
pub async fn samples(db: &Db) -> Result<Vec<Sample>, DbError> {
    let inventories: Vec<(String, String, i64, i64, f64)> = stratus_db::sqlx::query_as(
        "SELECT p.name, i.resource_class, i.total, i.reserved, i.allocation_ratio \
         FROM placement_inventories i JOIN placement_resource_providers p ON p.uuid = i.provider_uuid \
         ORDER BY p.name, i.resource_class",
    )
    .fetch_all(db.reader())
    .await?;
    let used: Vec<(String, String, i64)> = stratus_db::sqlx::query_as(
        "SELECT p.name, a.resource_class, CAST(SUM(a.used) AS BIGINT) \
         FROM placement_allocations a JOIN placement_resource_providers p ON p.uuid = a.provider_uuid \
         GROUP BY p.name, a.resource_class",
    )
    .fetch_all(db.reader())
    .await?;
    let mut out = Vec::new();
    for (provider, class, total, reserved, ratio) in inventories {
        let labels = || vec![("provider", provider.clone()), ("resource_class", class.clone())];
        let capacity = ((total - reserved) as f64 * ratio).floor();
        out.push(Sample::new(
            "stratus_placement_capacity",
            "What consumers may claim of a provider's inventory: (total - reserved) * allocation_ratio.",
            labels(),
            capacity,
        ));
        let u = used.iter().find(|(p, c, _)| *p == provider && *c == class).map_or(0, |(_, _, u)| *u);
        out.push(Sample::new(
            "stratus_placement_usage",
            "What consumers hold of a provider's inventory.",
            labels(),
            u as f64,
        ));
    }
    Ok(out)
}
