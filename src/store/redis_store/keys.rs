//! Key names: the layout in the module documentation of [`super`], written
//! down once.

use crate::store::UserId;

/// Key names under the configured prefix.
pub(crate) struct Keys {
    prefix: String,
    pub(crate) channel: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned(), channel: format!("{prefix}events") }
    }
    pub(crate) fn user(&self, id: UserId) -> String {
        format!("{}user:{id}", self.prefix)
    }
    pub(crate) fn user_prefix(&self) -> String {
        format!("{}user:", self.prefix)
    }
    pub(crate) fn email(&self, email: &str) -> String {
        format!("{}email:{email}", self.prefix)
    }
    pub(crate) fn email_prefix(&self) -> String {
        format!("{}email:", self.prefix)
    }
    pub(crate) fn username(&self, key: &str) -> String {
        format!("{}username:{key}", self.prefix)
    }
    pub(crate) fn username_prefix(&self) -> String {
        format!("{}username:", self.prefix)
    }
    pub(crate) fn index_version(&self) -> String {
        format!("{}index_version", self.prefix)
    }
    pub(crate) fn user_ids(&self) -> String {
        format!("{}users", self.prefix)
    }
    pub(crate) fn last_user_id(&self) -> String {
        format!("{}last_user_id", self.prefix)
    }
    pub(crate) fn token(&self, jti: &str) -> String {
        format!("{}revoked:{jti}", self.prefix)
    }
    pub(crate) fn family(&self, id: &str) -> String {
        format!("{}family:{id}", self.prefix)
    }
    pub(crate) fn token_pattern(&self) -> String {
        format!("{}revoked:*", self.prefix)
    }
    pub(crate) fn family_pattern(&self) -> String {
        format!("{}family:*", self.prefix)
    }
    /// A login-limit key.
    pub(crate) fn limit(&self, rest: &str) -> String {
        format!("{}limit:{rest}", self.prefix)
    }
}
