//! `[log]`: how the gateway's own log lines look. Kept apart from `[server]`
//! because the CLI reads it too, before anything is served.

use serde::{Deserialize, Serialize};

use super::file;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,gatehouse=debug`; `GATEHOUSE_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".to_owned() }
    }
}

impl LogConfig {
    pub(super) fn from_file(section: file::LogSection) -> Self {
        let defaults = LogConfig::default();
        LogConfig {
            format: section.format.map_or(defaults.format, |word| word.0),
            level: section.level.unwrap_or(defaults.level),
        }
    }
}
