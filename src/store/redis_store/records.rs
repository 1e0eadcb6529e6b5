//! User records as Redis hashes: reading one back into a [`User`].

use std::collections::HashMap;

use super::keys::Keys;
use super::pool::Pool;
use crate::roles;
use crate::store::{StoreError, User, UserId};

pub(super) async fn fetch_user(pool: &Pool, keys: &Keys, id: UserId) -> Result<Option<User>, StoreError> {
    let fields: HashMap<String, String> = pool.query(redis::cmd("HGETALL").arg(keys.user(id))).await?;
    if fields.is_empty() {
        return Ok(None);
    }
    user_from_fields(&fields).map(Some)
}

pub(super) fn user_from_fields(fields: &HashMap<String, String>) -> Result<User, StoreError> {
    let text = |name: &str| {
        fields.get(name).cloned().ok_or_else(|| StoreError::Corrupt(format!("user record without `{name}`")))
    };
    let number = |name: &str| {
        text(name)?
            .parse::<u64>()
            .map_err(|_| StoreError::Corrupt(format!("user record `{name}` is not a number")))
    };
    Ok(User {
        id: number("id")?,
        email: text("email")?,
        username: text("username")?,
        password_hash: text("password_hash")?,
        is_admin: number("is_admin")? == 1,
        blocked: number("blocked")? == 1,
        created_at: number("created_at")?,
        token_version: number("token_version")?,
        // Records written before roles existed have no `roles` field.
        roles: roles::parse_list(fields.get("roles").map_or("", String::as_str))
            .map_err(|e| StoreError::Corrupt(format!("user record `roles`: {e}")))?,
    })
}
