//! `[policy]` and `[[routes]]`: the route table every proxied request is
//! judged by. Reloaded on SIGHUP, so a route that can't be compiled is refused
//! here, with its line, rather than misjudging requests later.

use std::num::NonZeroU32;
use std::sync::Arc;

use toml::Spanned;

use super::file;
use super::values::Invalid;
use super::{UpstreamConfig, UpstreamProtocol};
use crate::limits::{Budget, Rate, RateError};
use crate::policy::{PathPattern, Policy, Route, RouteTable, Rule, UnknownPolicy};
use crate::roles::{Role, RoleRequirement, RolesMatch};

/// Methods a route may name (case-insensitive in the file).
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The route table. Routes inherit `upstream.assertion`, and may only let
/// WebSockets through to an HTTP/1.1 upstream.
pub(super) fn route_table(
    policy: file::PolicySection,
    routes: Vec<Spanned<file::RouteEntry>>,
    upstream: &UpstreamConfig,
) -> Result<RouteTable, Invalid> {
    let assertion = upstream.assertion;
    let default_policy = match policy.default {
        Some(p) => p.get_ref().parse().map_err(|m: UnknownPolicy| Invalid::at(&p, m.to_string()))?,
        None => Policy::Deny,
    };
    let default_rule =
        Rule { policy: default_policy, require_fresh: false, roles: None, assertion, websocket: false };
    let compiled = routes
        .into_iter()
        .enumerate()
        .map(|(index, entry)| route(index, entry, upstream))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteTable::new(compiled, default_rule))
}

fn route(
    index: usize,
    entry: Spanned<file::RouteEntry>,
    upstream: &UpstreamConfig,
) -> Result<Route, Invalid> {
    let assertion = upstream.assertion;
    let entry_span = entry.span();
    let entry = entry.into_inner();
    let pattern =
        PathPattern::parse(entry.path.get_ref()).map_err(|e| Invalid::at(&entry.path, e.to_string()))?;
    let policy: Policy = entry
        .policy
        .get_ref()
        .parse()
        .map_err(|e: UnknownPolicy| Invalid::at(&entry.policy, e.to_string()))?;
    let roles = role_requirement(&entry, policy, entry_span.clone())?;
    if entry.fresh && policy != Policy::Admin && roles.is_none() {
        return Err(Invalid {
            span: entry_span,
            message: "`fresh = true` only applies to admin routes and routes with `roles`; \
                      use `policy = \"fresh\"` instead"
                .into(),
        });
    }
    let methods = entry.methods.iter().map(method).collect::<Result<Vec<_>, _>>()?;
    if entry.websocket
        && (policy == Policy::Deny || !(methods.is_empty() || methods.contains(&http::Method::GET)))
    {
        return Err(Invalid {
            span: entry_span,
            message: "`websocket = true` needs a route that allows GET and is not `deny`".into(),
        });
    }
    if entry.websocket && upstream.protocol != UpstreamProtocol::Http1 {
        // A WebSocket upgrades an HTTP/1.1 connection; pingora drops the
        // upgrade on the way to an HTTP/2 upstream, so it could never open.
        return Err(Invalid {
            span: entry_span,
            message: "`websocket = true` needs upstream.protocol = \"http1\": a WebSocket upgrades an HTTP/1.1 connection"
                .into(),
        });
    }
    let budget = budget(entry.rate, entry.burst, policy, &pattern, &methods)?;
    Ok(Route {
        pattern,
        methods,
        rule: Rule {
            policy,
            require_fresh: entry.fresh,
            roles,
            assertion: entry.assertion.unwrap_or(assertion),
            websocket: entry.websocket,
        },
        budget,
        index,
    })
}

/// `rate` and `burst`, refused at the offending value.
fn budget(
    rate: Option<Spanned<String>>,
    burst: Option<Spanned<u32>>,
    policy: Policy,
    pattern: &PathPattern,
    methods: &[http::Method],
) -> Result<Option<Budget>, Invalid> {
    let Some(rate) = rate else {
        return match burst {
            Some(burst) => Err(Invalid::at(&burst, "`burst` needs a `rate` on the same route")),
            None => Ok(None),
        };
    };
    if policy == Policy::Deny {
        return Err(Invalid::at(&rate, "a `deny` route forwards nothing, so it can't have a `rate`"));
    }
    let parsed: Rate = rate.get_ref().parse().map_err(|e: RateError| Invalid::at(&rate, e.to_string()))?;
    let burst = match burst {
        Some(b) => {
            Some(NonZeroU32::new(*b.get_ref()).ok_or_else(|| Invalid::at(&b, "`burst` must be at least 1"))?)
        }
        None => None,
    };
    Ok(Some(Budget::new(parsed, burst, pattern.as_str(), methods)))
}

/// `roles` and `roles_match`: only on routes that identify the caller.
fn role_requirement(
    entry: &file::RouteEntry,
    policy: Policy,
    entry_span: std::ops::Range<usize>,
) -> Result<Option<Arc<RoleRequirement>>, Invalid> {
    let matching = entry.roles_match.as_ref();
    if entry.roles.is_empty() {
        return match matching {
            Some(m) => Err(Invalid::at(m, "`roles_match` needs a `roles` list on the same route")),
            None => Ok(None),
        };
    }
    if !matches!(policy, Policy::Any | Policy::Fresh | Policy::Admin) {
        return Err(Invalid {
            span: entry_span,
            message: format!(
                "`roles` needs a route that identifies the caller (policy any, fresh or admin), not `{policy}`"
            ),
        });
    }
    let roles = entry
        .roles
        .iter()
        .map(|name| Role::parse(name.get_ref()).map_err(|e| Invalid::at(name, e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let matching = matching.map_or(RolesMatch::Any, |m| m.get_ref().0);
    Ok(RoleRequirement::new(roles, matching).map(Arc::new))
}

fn method(name: &Spanned<String>) -> Result<http::Method, Invalid> {
    let upper = name.get_ref().to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(Invalid::at(
            name,
            format!("unknown method `{}`: expected one of {}", name.get_ref(), METHODS.join(", ")),
        ));
    }
    upper.parse().map_err(|_| Invalid::at(name, "invalid method"))
}
