//! Checks shared by every section: addresses, durations and bounded numbers.
//!
//! They all fail with an [`Invalid`] that carries the span of the offending
//! value, so the message [`super::Config::parse`] reports names the line and
//! column to fix. Keeping them here means one wording for one kind of mistake.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use toml::Spanned;

/// A validation failure before it is located in the file.
pub(super) struct Invalid {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

impl Invalid {
    pub(super) fn at<T>(value: &Spanned<T>, message: impl Into<String>) -> Self {
        Invalid { span: value.span(), message: message.into() }
    }
}

pub(super) fn socket_addr(value: &Spanned<String>) -> Result<SocketAddr, Invalid> {
    value.get_ref().parse().map_err(|_| {
        Invalid::at(
            value,
            format!("`{}` is not an IP:port address, e.g. \"127.0.0.1:8080\"", value.get_ref()),
        )
    })
}

pub(super) fn socket_addrs(values: &[Spanned<String>]) -> Result<Vec<SocketAddr>, Invalid> {
    values.iter().map(socket_addr).collect()
}

pub(super) fn duration_or(value: Option<Spanned<String>>, default: Duration) -> Result<Duration, Invalid> {
    match value {
        Some(v) => humantime::parse_duration(v.get_ref()).map_err(|e| {
            Invalid::at(&v, format!("`{}` is not a duration like \"15m\" or \"30d\": {e}", v.get_ref()))
        }),
        None => Ok(default),
    }
}

/// A duration with a (non-zero) default that must not be zero when given.
pub(super) fn positive_duration(
    value: Option<Spanned<String>>,
    default: Duration,
    message: &str,
) -> Result<Duration, Invalid> {
    match value {
        Some(v) => {
            let duration = duration_or(Some(v.clone()), default)?;
            if duration.is_zero() {
                return Err(Invalid::at(&v, message));
            }
            Ok(duration)
        }
        None => Ok(default),
    }
}

/// A duration with a default that must lie in `range` (the default does).
pub(super) fn duration_within(
    value: Option<Spanned<String>>,
    default: Duration,
    range: RangeInclusive<Duration>,
    key: &str,
) -> Result<Duration, Invalid> {
    match value {
        Some(v) => {
            let duration = duration_or(Some(v.clone()), default)?;
            if !range.contains(&duration) {
                return Err(Invalid::at(
                    &v,
                    format!(
                        "{key} must be between {} and {}",
                        humantime::format_duration(*range.start()),
                        humantime::format_duration(*range.end())
                    ),
                ));
            }
            Ok(duration)
        }
        None => Ok(default),
    }
}

/// A number with a default that must lie in `range`.
pub(super) fn bounded<T: PartialOrd + Display>(
    value: Option<Spanned<T>>,
    default: T,
    range: RangeInclusive<T>,
    key: &str,
) -> Result<T, Invalid> {
    match value {
        Some(v) if !range.contains(v.get_ref()) => {
            Err(Invalid::at(&v, format!("{key} must be between {} and {}", range.start(), range.end())))
        }
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}

/// A count that must be at least 1 when given.
pub(super) fn at_least_one<T: PartialEq + From<u8>>(
    value: Option<Spanned<T>>,
    default: T,
    key: &str,
) -> Result<T, Invalid> {
    match value {
        Some(v) if *v.get_ref() == T::from(0) => Err(Invalid::at(&v, format!("{key} must be at least 1"))),
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}
