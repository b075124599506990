//! Pagination, sorting and `next` links, the one way every service does them.
//!
//! OpenStack paginates by marker (the id of the last item seen) rather than offset, so a
//! page stays correct while rows are added. With arbitrary sort keys the SQL is a keyset
//! condition: rows strictly after the marker row in (sort keys..., id) order. Callers
//! validate sort keys against an allow-list that maps API names to columns, so no
//! client text ever reaches SQL.

use stratus_db::{Arg, Query};

use crate::fault::ApiError;
use crate::query::{encode, QueryPairs};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

impl SortDir {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "asc" => Ok(SortDir::Asc),
            "desc" => Ok(SortDir::Desc),
            other => Err(ApiError::bad_request(format!("Invalid sort direction {other:?}: use asc or desc"))),
        }
    }
    fn sql(self) -> &'static str {
        match self {
            SortDir::Asc => "ASC",
            SortDir::Desc => "DESC",
        }
    }
}

/// One sort key: a column (already mapped from the API name) and a direction.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// SQL column.
    pub column: &'static str,
    /// Direction.
    pub dir: SortDir,
}

/// A parsed page request.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// Page size (already capped).
    pub limit: usize,
    /// Id of the last item of the previous page.
    pub marker: Option<String>,
    /// Sort keys, the id tiebreaker not included.
    pub sort: Vec<SortKey>,
}

/// How a resource may be paged and sorted.
#[derive(Debug, Clone, Copy)]
pub struct PageSpec {
    /// API sort key name → SQL column.
    pub sort_keys: &'static [(&'static str, &'static str)],
    /// Sort used when the client gives none.
    pub default_sort: &'static [(&'static str, SortDir)],
    /// Page size when the client gives no `limit`.
    pub default_limit: usize,
    /// Largest page served (larger limits are capped, as OpenStack's `max_limit`).
    pub max_limit: usize,
}

impl PageSpec {
    fn column(&self, key: &str) -> Result<&'static str, ApiError> {
        self.sort_keys.iter().find(|(k, _)| *k == key).map(|(_, c)| *c).ok_or_else(|| {
            let allowed: Vec<_> = self.sort_keys.iter().map(|(k, _)| *k).collect();
            ApiError::bad_request(format!("Invalid sort key {key:?}; sortable keys are: {}", allowed.join(", ")))
        })
    }

    /// Parses `limit`, `marker`, `sort_key`/`sort_dir` pairs and Glance's `sort=key:dir,...`.
    pub fn parse(&self, q: &QueryPairs) -> Result<PageRequest, ApiError> {
        let limit = match q.get("limit") {
            None => self.default_limit,
            Some(v) => {
                let n: i64 = v.parse().map_err(|_| {
                    ApiError::bad_request(format!("Invalid limit {v:?}: expected a non-negative integer"))
                })?;
                if n < 0 {
                    return Err(ApiError::bad_request(format!("Invalid limit {n}: must be >= 0")));
                }
                (n as usize).min(self.max_limit)
            }
        };
        let marker = q.get("marker").map(str::to_string);
        let mut sort = Vec::new();
        if let Some(s) = q.get("sort") {
            for item in s.split(',').filter(|i| !i.trim().is_empty()) {
                let (k, d) = item.split_once(':').unwrap_or((item, "desc"));
                sort.push(SortKey { column: self.column(k.trim())?, dir: SortDir::parse(d)? });
            }
        }
        let keys = q.all("sort_key");
        let dirs = q.all("sort_dir");
        if dirs.len() > keys.len() && !keys.is_empty() {
            return Err(ApiError::bad_request("More sort_dir than sort_key parameters"));
        }
        for (i, k) in keys.iter().enumerate() {
            let dir = match dirs.get(i).or(dirs.last()) {
                Some(d) => SortDir::parse(d)?,
                None => SortDir::Asc,
            };
            sort.push(SortKey { column: self.column(k)?, dir });
        }
        if sort.is_empty() {
            for (k, d) in self.default_sort {
                sort.push(SortKey { column: self.column(k)?, dir: *d });
            }
        }
        Ok(PageRequest { limit, marker, sort })
    }
}

impl PageRequest {
    /// Appends ` ORDER BY ..., <id_col> <dir>` (the id breaks ties so order is total).
    pub fn push_order_by(&self, q: &mut Query, id_col: &str) {
        q.push(" ORDER BY ");
        for k in &self.sort {
            q.push(k.column).push(" ").push(k.dir.sql()).push(", ");
        }
        let last_dir = self.sort.last().map(|k| k.dir).unwrap_or(SortDir::Asc);
        q.push(id_col).push(" ").push(last_dir.sql());
    }

    /// Appends ` AND (<rows after the marker row>)`. `marker_values` are the marker row's
    /// values of the sort columns, in order, followed by its id.
    pub fn push_after_marker(&self, q: &mut Query, id_col: &str, marker_values: &[Arg]) {
        let last_dir = self.sort.last().map(|k| k.dir).unwrap_or(SortDir::Asc);
        let mut cols: Vec<(&str, SortDir)> = self.sort.iter().map(|k| (k.column, k.dir)).collect();
        cols.push((id_col, last_dir));
        q.push(" AND (");
        for i in 0..cols.len() {
            if i > 0 {
                q.push(" OR ");
            }
            q.push("(");
            for (j, (col, _)) in cols.iter().enumerate().take(i) {
                q.push(col).push(" = ");
                q.bind(marker_values.get(j).cloned().unwrap_or(Arg::Null));
                q.push(" AND ");
            }
            let (col, dir) = cols[i];
            q.push(col).push(if dir == SortDir::Asc { " > " } else { " < " });
            q.bind(marker_values.get(i).cloned().unwrap_or(Arg::Null));
            q.push(")");
        }
        q.push(")");
    }

    /// Appends ` LIMIT n` (one more than the page, so the caller knows if a next page exists).
    pub fn push_limit_plus_one(&self, q: &mut Query) {
        q.push(" LIMIT ").bind((self.limit + 1) as i64);
    }
}

/// The href of the next page: the same URL with `marker` replaced.
pub fn next_href(public_base: &str, path: &str, query: &QueryPairs, marker: &str) -> String {
    let mut parts: Vec<String> =
        query.0.iter().filter(|(k, _)| k != "marker").map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    parts.push(format!("marker={}", encode(marker)));
    format!("{}{}?{}", public_base.trim_end_matches('/'), path, parts.join("&"))
}

/// Splits `rows` fetched with [`PageRequest::push_limit_plus_one`] into the page and whether
/// more rows follow.
pub fn split_page<T>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    (rows, more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_pairs;

    const SPEC: PageSpec = PageSpec {
        sort_keys: &[("name", "name"), ("created_at", "created_at")],
        default_sort: &[("created_at", SortDir::Desc)],
        default_limit: 1000,
        max_limit: 1000,
    };

    #[test]
    fn parses_and_builds_keyset_sql() {
        let q = QueryPairs(parse_pairs("limit=2&marker=m&sort_key=name&sort_dir=asc").unwrap());
        let p = SPEC.parse(&q).unwrap();
        assert_eq!(p.limit, 2);
        let mut sql = Query::new("SELECT * FROM t WHERE 1 = 1");
        p.push_after_marker(&mut sql, "id", &[Arg::from("n"), Arg::from("m")]);
        p.push_order_by(&mut sql, "id");
        p.push_limit_plus_one(&mut sql);
        assert_eq!(
            sql.sql(),
            "SELECT * FROM t WHERE 1 = 1 AND ((name > $1) OR (name = $2 AND id > $3)) ORDER BY name ASC, id ASC LIMIT $4"
        );
        let g = SPEC.parse(&QueryPairs(parse_pairs("sort=name:desc,created_at").unwrap())).unwrap();
        assert_eq!(g.sort.len(), 2);
        assert!(SPEC.parse(&QueryPairs(parse_pairs("sort_key=password").unwrap())).is_err());
        assert!(SPEC.parse(&QueryPairs(parse_pairs("limit=-1").unwrap())).is_err());
        assert_eq!(SPEC.parse(&QueryPairs(parse_pairs("limit=5000").unwrap())).unwrap().limit, 1000);
        let href = next_href("http://h/compute", "/v2.1/servers", &q, "abc");
        assert_eq!(href, "http://h/compute/v2.1/servers?limit=2&sort_key=name&sort_dir=asc&marker=abc");
        assert_eq!(split_page(vec![1, 2, 3], 2), (vec![1, 2], true));
    }
}
