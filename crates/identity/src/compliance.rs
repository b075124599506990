//! Keystone's `[security_compliance]` (PCI-DSS) rules for passwords: history, minimum
//! age, expiry, a required pattern, change upon first use, and inactive accounts.
//!
//! A self-service change (`POST /v3/users/{id}/password`) is checked against every rule;
//! an admin setting a password (user create or `PATCH`) only against the pattern, as in
//! Keystone, but still enters the history. The history holds the hashes of the passwords
//! a user had before the current one, newest kept, pruned to what
//! `unique_last_password_count` needs.

use chrono::{Duration, Utc};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::User;
use crate::state::Identity;

/// Who sets a password: the user themself (every rule) or an admin (pattern only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// `POST /v3/users/{id}/password` with the original password.
    SelfService,
    /// User creation or `PATCH /v3/users/{id}` by an admin.
    Admin,
}

/// Refuses `password` when it breaks `password_regex`.
pub fn check_pattern(id: &Identity, password: &str) -> Result<()> {
    let pattern = &id.cfg.password_regex;
    if pattern.is_empty() {
        return Ok(());
    }
    let re = regex::Regex::new(pattern)
        .map_err(|e| IdentityError::Internal(format!("[identity] password_regex does not compile: {e}")))?;
    if !re.is_match(password) {
        let why = if id.cfg.password_regex_description.is_empty() {
            format!("it must match {pattern}")
        } else {
            id.cfg.password_regex_description.clone()
        };
        return Err(IdentityError::invalid(format!(
            "Password validation error: The password does not meet the requirements: {why}."
        )));
    }
    Ok(())
}

/// Refuses a self-service change of `user`'s password to `new` when the current password
/// is younger than `minimum_password_age_days` or `new` is one of the last
/// `unique_last_password_count` passwords (the current one included).
pub async fn check_self_service(id: &Identity, user: &User, new: &str) -> Result<()> {
    if user.option("lock_password") {
        return Err(IdentityError::Forbidden(format!(
            "You cannot change your password at this time due to password policy disallowing password changes. \
             Please contact your administrator. (user {})",
            user.id
        )));
    }
    let min_age = id.cfg.minimum_password_age_days;
    // An expired password (or one to change upon first use) may always be changed.
    let expired =
        user.password_expires_at.as_deref().and_then(stratus_core::time::parse).is_some_and(|e| e <= Utc::now());
    if min_age > 0 && !expired {
        if let Some(created) = user.password_created_at.as_deref().and_then(stratus_core::time::parse) {
            if Utc::now() < created + Duration::days(min_age.into()) {
                return Err(IdentityError::invalid(format!(
                    "You cannot change your password at this time due to the minimum password age. Once you change \
                     your password, it must be used for {min_age} day(s) before it can be changed. Please try again \
                     in {} day(s) or contact your administrator to reset your password.",
                    (created + Duration::days(min_age.into()) - Utc::now()).num_days().max(1)
                )));
            }
        }
    }
    let count = id.cfg.unique_last_password_count;
    if count == 0 {
        return Ok(());
    }
    let mut hashes: Vec<String> = user.password_hash.iter().cloned().collect();
    if count > 1 {
        let mut q = Query::new("SELECT password_hash FROM identity_password_history WHERE user_id = ");
        q.bind(&user.id).push(" ORDER BY created_at DESC LIMIT ").push(&(count - 1).to_string());
        for r in q.fetch_all(id.platform.db.reader()).await? {
            hashes.push(r.try_get(0)?);
        }
    }
    for h in hashes {
        if id.hasher.verify(new.to_string(), Some(h)).await? {
            return Err(IdentityError::invalid(format!(
                "The new password cannot be identical to a previous password. The total number which includes \
                 the new password must be unique is {count}."
            )));
        }
    }
    Ok(())
}

/// When a password set now by `setter` expires: at once for an admin-set password under
/// `change_password_upon_first_use`, after `password_expires_days` otherwise, never when
/// neither applies or the user's options exempt them.
pub fn expiry(
    id: &Identity,
    user_options: &serde_json::Map<String, serde_json::Value>,
    setter: Setter,
) -> Option<String> {
    let opt = |n: &str| user_options.get(n).and_then(serde_json::Value::as_bool).unwrap_or(false);
    let now = Utc::now();
    if setter == Setter::Admin && id.cfg.change_password_upon_first_use && !opt("ignore_change_password_upon_first_use")
    {
        return Some(stratus_core::time::to_storage(now));
    }
    if id.cfg.password_expires_days > 0 && !opt("ignore_password_expiry") {
        return Some(stratus_core::time::to_storage(now + Duration::days(id.cfg.password_expires_days.into())));
    }
    None
}

/// The statements that give `user_id` the password `hash` (set by `setter`): the previous
/// hash moves into the history, which is pruned to what the history check reads.
pub fn set_password(
    id: &Identity,
    user_id: &str,
    previous_hash: Option<&str>,
    hash: String,
    expires_at: Option<String>,
) -> Vec<Query> {
    let now = stratus_core::time::now();
    let mut qs = Vec::new();
    if let Some(prev) = previous_hash {
        let mut q = Query::new("INSERT INTO identity_password_history (user_id, password_hash, created_at) VALUES (");
        q.bind(user_id).push(", ").bind(prev).push(", ").bind(&now).push(")");
        qs.push(q);
    }
    let keep = id.cfg.unique_last_password_count.saturating_sub(1);
    let mut prune = Query::new("DELETE FROM identity_password_history WHERE user_id = ");
    prune.bind(user_id);
    prune.push(" AND created_at NOT IN (SELECT created_at FROM identity_password_history WHERE user_id = ");
    prune.bind(user_id).push(" ORDER BY created_at DESC LIMIT ").push(&keep.to_string()).push(")");
    qs.push(prune);
    let mut q = Query::new("UPDATE identity_users SET password_hash = ");
    q.bind(hash).push_bind(", password_created_at = ", &now).push_bind(", password_expires_at = ", expires_at);
    q.push(" WHERE id = ").bind(user_id);
    qs.push(q);
    qs
}

/// Refuses a login whose password has expired, and disables an account unused for
/// longer than `disable_user_account_days_inactive`. Returns the statement recording
/// today's activity when it changed.
pub async fn check_login(id: &Identity, user: &User) -> Result<Option<Query>> {
    let now = Utc::now();
    if let Some(exp) = user.password_expires_at.as_deref().and_then(stratus_core::time::parse) {
        if exp <= now && !user.option("ignore_password_expiry") {
            return Err(IdentityError::Unauthorized(format!(
                "The password is expired and needs to be changed for user: {}.",
                user.id
            )));
        }
    }
    let days = id.cfg.disable_user_account_days_inactive;
    if days > 0 && !user.option("ignore_user_inactivity") {
        if let Some(last) = user.last_active_at.as_deref().and_then(stratus_core::time::parse) {
            if now - last > Duration::days(days.into()) {
                let mut q = Query::new("UPDATE identity_users SET enabled = 0 WHERE id = ");
                q.bind(&user.id);
                id.exec(vec![q]).await?;
                return Err(IdentityError::Unauthorized(format!(
                    "The account is disabled for user: {} after {days} days of inactivity.",
                    user.id
                )));
            }
        }
    }
    let today = now.format("%Y-%m-%dT00:00:00.000000Z").to_string();
    if days > 0 && user.last_active_at.as_deref() != Some(today.as_str()) {
        let mut q = Query::new("UPDATE identity_users SET last_active_at = ");
        q.bind(today).push_bind(" WHERE id = ", &user.id);
        return Ok(Some(q));
    }
    Ok(None)
}
