//! `[policy]` and `[[routes]]`: the route table every proxied request is
//! judged by. Reloaded on SIGHUP, so a route that can't be compiled is refused
//! here, with its line, rather than misjudging requests later.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file;
use super::values::{duration_within, Invalid};
use crate::cors::{self, Cors, Origin, Origins};
use crate::limits::{Budget, Rate, RateError};
use crate::policy::{PathPattern, Policy, Route, RouteTable, Rule, UnknownPolicy};
use crate::roles::{Role, RoleRequirement, RolesMatch};

/// Methods a route may name (case-insensitive in the file).
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The route table; `assertion` is `upstream.assertion`, which routes inherit.
pub(super) fn route_table(
    policy: file::PolicySection,
    routes: Vec<Spanned<file::RouteEntry>>,
    assertion: bool,
) -> Result<RouteTable, Invalid> {
    let default_policy = match policy.default {
        Some(p) => p.get_ref().parse().map_err(|m: UnknownPolicy| Invalid::at(&p, m.to_string()))?,
        None => Policy::Deny,
    };
    let default_rule =
        Rule { policy: default_policy, require_fresh: false, roles: None, assertion, websocket: false };
    let compiled = routes
        .into_iter()
        .enumerate()
        .map(|(index, entry)| route(index, entry, assertion))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteTable::new(compiled, default_rule))
}

fn route(index: usize, entry: Spanned<file::RouteEntry>, assertion: bool) -> Result<Route, Invalid> {
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
    let cors = cors(&entry, policy, &methods)?;
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
        cors,
        index,
    })
}

/// The `cors_*` keys, refused at the offending value. `cors_methods` defaults
/// to the route's methods, or to [`cors::DEFAULT_METHODS`] (what browsers send
/// cross-origin without asking) on a route that lists none.
fn cors(
    entry: &file::RouteEntry,
    policy: Policy,
    route_methods: &[http::Method],
) -> Result<Option<Arc<Cors>>, Invalid> {
    let Some(first) = entry.cors_origins.first() else {
        let others = [
            entry.cors_methods.as_ref().map(Spanned::span),
            entry.cors_headers.as_ref().map(Spanned::span),
            entry.cors_credentials.as_ref().map(Spanned::span),
            entry.cors_max_age.as_ref().map(Spanned::span),
            entry.cors_expose_headers.as_ref().map(Spanned::span),
        ];
        return match others.into_iter().flatten().next() {
            Some(span) => Err(Invalid {
                span,
                message: "the `cors_*` keys need a `cors_origins` list on the same route".into(),
            }),
            None => Ok(None),
        };
    };
    if policy == Policy::Deny {
        return Err(Invalid::at(
            first,
            "a `deny` route answers nothing a page could read, so it can't have `cors_origins`",
        ));
    }
    let credentials = entry.cors_credentials.as_ref().is_some_and(|c| *c.get_ref());
    let origins = if let Some(star) = entry.cors_origins.iter().find(|o| o.get_ref() == "*") {
        if entry.cors_origins.len() > 1 {
            return Err(Invalid::at(star, "`\"*\"` allows every origin: list it alone or list origins"));
        }
        if credentials {
            return Err(Invalid::at(
                star,
                "`\"*\"` can't be used with `cors_credentials = true`: list the origins that may send credentials",
            ));
        }
        Origins::Any
    } else {
        Origins::Listed(
            entry
                .cors_origins
                .iter()
                .map(|o| o.get_ref().parse::<Origin>().map_err(|e| Invalid::at(o, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let methods = match &entry.cors_methods {
        Some(listed) => {
            if listed.get_ref().is_empty() {
                return Err(Invalid::at(listed, "`cors_methods` must list at least one method"));
            }
            let mut methods = Vec::new();
            for name in listed.get_ref() {
                let m = method(name)?;
                let served = route_methods.is_empty()
                    || route_methods.contains(&m)
                    || (m == http::Method::HEAD && route_methods.contains(&http::Method::GET));
                if !served {
                    return Err(Invalid::at(
                        name,
                        format!("`cors_methods` lists {m}, which this route's `methods` don't include"),
                    ));
                }
                if !methods.contains(&m) {
                    methods.push(m);
                }
            }
            methods
        }
        None if route_methods.is_empty() => cors::DEFAULT_METHODS.to_vec(),
        None => route_methods.to_vec(),
    };
    let headers = header_names(entry.cors_headers.as_ref(), &cors::DEFAULT_HEADERS, "cors_headers")?;
    let expose = header_names(
        entry.cors_expose_headers.as_ref(),
        &cors::DEFAULT_EXPOSE_HEADERS,
        "cors_expose_headers",
    )?;
    let max_age = duration_within(
        entry.cors_max_age.clone(),
        cors::DEFAULT_MAX_AGE,
        Duration::ZERO..=cors::MAX_MAX_AGE,
        "cors_max_age",
    )?;
    Ok(Some(Arc::new(Cors::new(origins, methods, headers, credentials, max_age, expose))))
}

/// A list of header names (`cors_headers`, `cors_expose_headers`), or the default.
fn header_names(
    listed: Option<&Spanned<Vec<Spanned<String>>>>,
    default: &[&'static str],
    key: &str,
) -> Result<Vec<http::HeaderName>, Invalid> {
    let Some(listed) = listed else {
        return Ok(default.iter().map(|h| http::HeaderName::from_static(h)).collect());
    };
    let mut names: Vec<http::HeaderName> = Vec::new();
    for name in listed.get_ref() {
        let parsed = http::HeaderName::from_bytes(name.get_ref().as_bytes())
            .ok()
            .filter(|_| name.get_ref() != "*")
            .ok_or_else(|| {
                Invalid::at(
                    name,
                    format!(
                        "`{key}`: `{}` is not a header name (list each name; `*` is not taken)",
                        name.get_ref()
                    ),
                )
            })?;
        if !names.contains(&parsed) {
            names.push(parsed);
        }
    }
    Ok(names)
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
