//! A small SQL builder for queries whose shape depends on the request: optional
//! filters, sort keys and markers. It numbers placeholders (`$1`, `$2`, ...) as values
//! are bound, so callers never count parameters by hand.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Arguments};

use crate::DbError;

/// A value bound into a [`Query`].
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// Text (ids, names, timestamps).
    Text(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean, stored as BIGINT 0/1 (see the crate docs for why there are no BOOLEAN columns).
    Bool(bool),
    /// SQL NULL (bound as text).
    Null,
    /// SQL NULL for an integer (or boolean) column: PostgreSQL refuses a NULL typed as
    /// text there ("column is of type bigint but expression is of type text").
    NullInt,
    /// SQL NULL for a floating-point column, for the same reason.
    NullFloat,
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_string())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Float(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
/// The NULL of a value's SQL type, so `Option<T>` binds a NULL PostgreSQL accepts for
/// that column (an untyped NULL is sent as text).
pub trait TypedNull {
    /// The NULL to bind for `None`.
    const NULL: Arg;
}
impl TypedNull for &str {
    const NULL: Arg = Arg::Null;
}
impl TypedNull for String {
    const NULL: Arg = Arg::Null;
}
impl TypedNull for &String {
    const NULL: Arg = Arg::Null;
}
impl TypedNull for i64 {
    const NULL: Arg = Arg::NullInt;
}
impl TypedNull for bool {
    const NULL: Arg = Arg::NullInt;
}
impl TypedNull for f64 {
    const NULL: Arg = Arg::NullFloat;
}
impl<T: Into<Arg> + TypedNull> From<Option<T>> for Arg {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(T::NULL)
    }
}

/// SQL text plus its bound arguments.
#[derive(Debug, Default, Clone)]
pub struct Query {
    sql: String,
    args: Vec<Arg>,
}

impl Query {
    /// Starts a query with `sql`.
    pub fn new(sql: impl Into<String>) -> Self {
        Query { sql: sql.into(), args: Vec::new() }
    }

    /// Appends raw SQL. Never pass user input here: bind it.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends the next placeholder and binds `v` to it.
    pub fn bind(&mut self, v: impl Into<Arg>) -> &mut Self {
        self.args.push(v.into());
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    /// Appends `sql` followed by a bound placeholder, e.g. `q.push_bind(" AND name = ", n)`.
    pub fn push_bind(&mut self, sql: &str, v: impl Into<Arg>) -> &mut Self {
        self.push(sql);
        self.bind(v)
    }

    /// Appends `col IN ($a, $b, ...)`; an empty list becomes a false condition.
    pub fn push_in<I, V>(&mut self, col: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Arg>,
    {
        let mut first = true;
        for v in values {
            if first {
                self.push(col).push(" IN (");
                first = false;
            } else {
                self.push(", ");
            }
            self.bind(v);
        }
        if first {
            self.push("1 = 0");
        } else {
            self.push(")");
        }
        self
    }

    /// The SQL text built so far.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    fn arguments(&self) -> AnyArguments<'static> {
        let mut a = AnyArguments::default();
        for v in &self.args {
            let r = match v {
                Arg::Text(s) => a.add(s.clone()),
                Arg::Int(i) => a.add(*i),
                Arg::Float(f) => a.add(*f),
                Arg::Bool(b) => a.add(i64::from(*b)),
                Arg::Null => a.add(Option::<String>::None),
                Arg::NullInt => a.add(Option::<i64>::None),
                Arg::NullFloat => a.add(Option::<f64>::None),
            };
            r.expect("binding plain values cannot fail");
        }
        a
    }

    /// Runs the query and returns every row.
    pub async fn fetch_all<'e, E>(&self, ex: E) -> Result<Vec<AnyRow>, DbError>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        Ok(sqlx::query_with(&self.sql, self.arguments()).fetch_all(ex).await?)
    }

    /// Runs the query and returns the first row, if any.
    pub async fn fetch_optional<'e, E>(&self, ex: E) -> Result<Option<AnyRow>, DbError>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        Ok(sqlx::query_with(&self.sql, self.arguments()).fetch_optional(ex).await?)
    }

    /// Runs the statement and returns the number of rows affected.
    pub async fn execute<'e, E>(&self, ex: E) -> Result<u64, DbError>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        Ok(sqlx::query_with(&self.sql, self.arguments()).execute(ex).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_in_order() {
        let mut q = Query::new("SELECT * FROM t WHERE 1 = 1");
        q.push_bind(" AND a = ", "x").push(" AND ").push_in("b", [1i64, 2]);
        assert_eq!(q.sql(), "SELECT * FROM t WHERE 1 = 1 AND a = $1 AND b IN ($2, $3)");
        let mut e = Query::new("SELECT 1 WHERE ");
        e.push_in("c", Vec::<i64>::new());
        assert_eq!(e.sql(), "SELECT 1 WHERE 1 = 0");
    }
}
