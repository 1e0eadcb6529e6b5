//! `[passwords]`: argon2 cost and password rules. The bounds keep a typo from
//! making every login take minutes or every hash trivially cheap.

use super::file;
use super::values::{bounded, Invalid};

#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_length: usize,
    /// Password hashes computed at once (each takes a core and `memory_kib`).
    pub max_concurrent_hashes: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            min_length: 8,
            // Leave a core for proxied traffic.
            max_concurrent_hashes: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1).max(1)),
        }
    }
}

impl PasswordConfig {
    pub(super) fn from_file(section: file::PasswordsSection) -> Result<Self, Invalid> {
        let defaults = PasswordConfig::default();
        Ok(PasswordConfig {
            memory_kib: bounded(
                section.memory_kib,
                defaults.memory_kib,
                8..=4 * 1024 * 1024,
                "passwords.memory_kib",
            )?,
            iterations: bounded(section.iterations, defaults.iterations, 1..=100, "passwords.iterations")?,
            parallelism: bounded(section.parallelism, defaults.parallelism, 1..=64, "passwords.parallelism")?,
            min_length: section.min_length.unwrap_or(defaults.min_length),
            max_concurrent_hashes: section.max_concurrent_hashes.unwrap_or(defaults.max_concurrent_hashes),
        })
    }
}
