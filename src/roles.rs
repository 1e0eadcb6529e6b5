//! Roles: named privileges an account holds, and what a route demands of them.
//!
//! A role is a short, validated name (`editor`, `billing:write`). It travels
//! in a comma-separated header (`X-Auth-Roles`) and in Redis as a
//! comma-separated field, so the alphabet leaves out commas, spaces and
//! upper case: a backend comparing names byte for byte sees what the route
//! was judged against.
//!
//! `admin` is a role with the meaning it always had: it is the account's
//! `is_admin` flag (and the access token's `is_admin` claim), so stored
//! accounts, tokens and `policy = "admin"` routes keep working. Adding or
//! removing the `admin` role sets that flag; every other role is kept in the
//! account's role list. Decisions use the account's current roles, read on
//! every request, so removing a role takes effect at the next request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The role that is the account's admin flag.
pub const ADMIN: &str = "admin";

/// Longest role name, in bytes.
pub const MAX_ROLE_BYTES: usize = 64;

/// Most roles one account may hold (besides `admin`): bounds the header and
/// the token that carry them.
pub const MAX_ROLES_PER_USER: usize = 32;

/// A valid role name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(Box<str>);

/// Why a role name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid role name: use 1 to 64 lower-case letters, digits, `.`, `_`, `:` or `-`, \
     starting with a letter or digit"
)]
pub struct InvalidRole(pub String);

impl Role {
    pub fn parse(name: &str) -> Result<Role, InvalidRole> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b".:_-".contains(&b);
        let valid = !name.is_empty()
            && name.len() <= MAX_ROLE_BYTES
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.bytes().all(allowed);
        if !valid {
            // Quoted back to whoever typed it, so keep it short and printable.
            let shown: String =
                name.chars().take(MAX_ROLE_BYTES).map(|c| if c.is_control() { '?' } else { c }).collect();
            return Err(InvalidRole(shown));
        }
        Ok(Role(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_admin(&self) -> bool {
        &*self.0 == ADMIN
    }

    pub fn admin() -> Role {
        Role(ADMIN.into())
    }
}

impl TryFrom<String> for Role {
    type Error = InvalidRole;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Role::parse(&name)
    }
}

impl From<Role> for String {
    fn from(role: Role) -> String {
        role.0.into()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a route's role list is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RolesMatch {
    /// At least one of the listed roles.
    Any,
    /// Every listed role.
    All,
}

/// What a route demands of the caller's roles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleRequirement {
    /// Sorted, without duplicates, never empty.
    roles: Box<[Role]>,
    matching: RolesMatch,
}

impl RoleRequirement {
    /// `None` for an empty list: a route without a role requirement.
    pub fn new(mut roles: Vec<Role>, matching: RolesMatch) -> Option<RoleRequirement> {
        roles.sort();
        roles.dedup();
        (!roles.is_empty()).then(|| RoleRequirement { roles: roles.into(), matching })
    }

    /// Whether an account with the `stored` roles (sorted, as
    /// [`crate::store::User::roles`]) and, if `admin`, the admin role meets
    /// the requirement. Nothing is copied: this runs on every request.
    pub fn is_met_by(&self, stored: &[Role], admin: bool) -> bool {
        let holds = |role: &Role| if role.is_admin() { admin } else { stored.binary_search(role).is_ok() };
        match self.matching {
            RolesMatch::Any => self.roles.iter().any(holds),
            RolesMatch::All => self.roles.iter().all(holds),
        }
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn matching(&self) -> RolesMatch {
        self.matching
    }
}

/// The roles an account holds, sorted: its stored roles, plus `admin` when
/// `admin` is true.
pub fn held(stored: &[Role], admin: bool) -> Vec<Role> {
    let mut roles = stored.to_vec();
    if admin {
        roles.push(Role::admin());
        roles.sort();
    }
    roles
}

/// Roles as one header value: sorted names joined by commas.
pub fn header_value(roles: &[Role]) -> String {
    let mut value = String::with_capacity(roles.iter().map(|r| r.as_str().len() + 1).sum());
    for (i, role) in roles.iter().enumerate() {
        if i > 0 {
            value.push(',');
        }
        value.push_str(role.as_str());
    }
    value
}

/// Why a stored role list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredRolesError {
    #[error(transparent)]
    Invalid(#[from] InvalidRole),
    #[error("more than {MAX_ROLES_PER_USER} roles")]
    TooMany,
}

/// A stored role list as the rest of the gateway relies on it: sorted (role
/// checks binary-search it), without duplicates, without `admin` (which is
/// the admin flag, so a record can't say `admin` in `X-Auth-Roles` while the
/// flag says otherwise), and within the bound. Every store reads through this.
pub fn stored(mut roles: Vec<Role>) -> Result<Vec<Role>, StoredRolesError> {
    roles.retain(|role| !role.is_admin());
    roles.sort();
    roles.dedup();
    if roles.len() > MAX_ROLES_PER_USER {
        return Err(StoredRolesError::TooMany);
    }
    Ok(roles)
}

/// Reads a stored comma-separated list (the Redis field); an empty text is no roles.
pub fn parse_list(text: &str) -> Result<Vec<Role>, StoredRolesError> {
    stored(text.split(',').filter(|s| !s.is_empty()).map(Role::parse).collect::<Result<Vec<_>, _>>()?)
}

/// `serde(deserialize_with)` for a stored role list (the sled record): see [`stored`].
pub fn deserialize_stored<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Role>, D::Error> {
    stored(Vec::<Role>::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<Role> {
        names.iter().map(|n| Role::parse(n).unwrap()).collect()
    }

    #[test]
    fn role_names_are_short_lower_case_and_comma_free() {
        for good in ["editor", "admin", "billing:write", "team.a_b-c", "9lives"] {
            assert_eq!(Role::parse(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(MAX_ROLE_BYTES + 1);
        for bad in ["", "Editor", "a,b", "a b", "-lead", ".x", "ünï", "a\nb", long.as_str()] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Role>("\"Editor\"").is_err());
    }

    #[test]
    fn any_and_all_match_as_named() {
        let need = |names: &[&str], m| RoleRequirement::new(roles(names), m).unwrap();
        let held = roles(&["editor", "viewer"]);
        assert!(need(&["publisher", "editor"], RolesMatch::Any).is_met_by(&held, false));
        assert!(!need(&["publisher", "editor"], RolesMatch::All).is_met_by(&held, false));
        assert!(need(&["viewer", "editor", "editor"], RolesMatch::All).is_met_by(&held, false));
        assert!(!need(&["publisher"], RolesMatch::Any).is_met_by(&[], false));
        assert!(!need(&["admin", "editor"], RolesMatch::All).is_met_by(&held, false));
        assert!(need(&["admin", "editor"], RolesMatch::All).is_met_by(&held, true));
        assert!(need(&["admin"], RolesMatch::Any).is_met_by(&[], true));
        assert!(RoleRequirement::new(Vec::new(), RolesMatch::All).is_none());
    }

    #[test]
    fn admin_is_held_through_the_flag_and_headers_are_sorted() {
        let stored = roles(&["billing", "editor"]);
        assert_eq!(header_value(&held(&stored, true)), "admin,billing,editor");
        assert_eq!(header_value(&held(&stored, false)), "billing,editor");
        assert_eq!(header_value(&[]), "");
        assert_eq!(parse_list("editor,,billing,editor").unwrap(), roles(&["billing", "editor"]));
        assert_eq!(parse_list("admin,editor").unwrap(), roles(&["editor"]), "admin is the flag");
        assert!(parse_list("Editor").is_err());
        let many: Vec<String> = (0..=MAX_ROLES_PER_USER).map(|n| format!("r{n}")).collect();
        assert_eq!(parse_list(&many.join(",")), Err(StoredRolesError::TooMany));
        #[derive(serde::Deserialize)]
        struct Record {
            #[serde(deserialize_with = "deserialize_stored")]
            roles: Vec<Role>,
        }
        let record: Record = serde_json::from_str(r#"{"roles": ["zed", "admin", "abe", "zed"]}"#).unwrap();
        assert_eq!(record.roles, roles(&["abe", "zed"]));
    }
}
