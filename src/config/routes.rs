//! `[policy]` and `[[routes]]`: the route table every proxied request is
//! judged by. Reloaded on SIGHUP, so a route that can't be compiled is refused
//! here, with its line, rather than misjudging requests later.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file;
use super::values::{duration_within, Invalid};
use super::{UpstreamConfig, UpstreamProtocol};
use crate::cors::{self, Cors, Origin, Origins};
use crate::limits::{Budget, Rate, RateError};
use crate::policy::{PathPattern, Policy, Route, RouteTable, Rule, UnknownPolicy};
use crate::roles::{Role, RoleRequirement, RolesMatch};

/// Methods a route may name (case-insensitive in the file).
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The route table. Routes inherit `upstream.assertion` and `[cors]`
/// (`cors_defaults`), and may only let WebSockets through to an HTTP/1.1
/// upstream.
pub(super) fn route_table(
    policy: file::PolicySection,
    cors_defaults: &file::CorsSection,
    routes: Vec<Spanned<file::RouteEntry>>,
    upstream: &UpstreamConfig,
    signin_enabled: bool,
) -> Result<RouteTable, Invalid> {
    let assertion = upstream.assertion;
    let default_policy = match policy.default {
        Some(p) => p.get_ref().parse().map_err(|m: UnknownPolicy| Invalid::at(&p, m.to_string()))?,
        None => Policy::Deny,
    };
    let default_rule =
        Rule { policy: default_policy, require_fresh: false, roles: None, assertion, websocket: false };
    cors_section(cors_defaults)?;
    let compiled = routes
        .into_iter()
        .enumerate()
        .map(|(index, entry)| route(index, entry, cors_defaults, upstream, signin_enabled))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteTable::new(compiled, default_rule))
}

fn route(
    index: usize,
    entry: Spanned<file::RouteEntry>,
    cors_defaults: &file::CorsSection,
    upstream: &UpstreamConfig,
    signin_enabled: bool,
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
    let signin_redirect = match &entry.signin_redirect {
        Some(v) if *v.get_ref() && !signin_enabled => {
            return Err(Invalid::at(
                v,
                "`signin_redirect = true` needs [signin] enabled = true: there is no sign-in page to send browsers to",
            ))
        }
        Some(v) => *v.get_ref(),
        None => false,
    };
    let cors = cors(&entry, cors_defaults, policy, &methods)?;
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
        signin_redirect,
        index,
    })
}

/// The `cors_*` keys, each falling back to `[cors]`, refused at the
/// offending value. `cors_methods` defaults to the route's methods, or to
/// [`cors::DEFAULT_METHODS`] (what browsers send cross-origin without asking)
/// on a route that lists none.
fn cors(
    entry: &file::RouteEntry,
    defaults: &file::CorsSection,
    policy: Policy,
    route_methods: &[http::Method],
) -> Result<Option<Arc<Cors>>, Invalid> {
    if let (Some(own), Policy::Deny) = (&entry.cors_origins, policy) {
        if !own.get_ref().is_empty() {
            return Err(Invalid::at(
                own,
                "a `deny` route answers nothing a page could read, so it can't have `cors_origins`",
            ));
        }
    }
    let listed = match (&entry.cors_origins, &defaults.origins) {
        (Some(own), _) => own.get_ref().as_slice(),
        // `deny` routes don't inherit: they answer nothing a page could read.
        (None, Some(inherited)) if policy != Policy::Deny => inherited.get_ref().as_slice(),
        _ => &[],
    };
    if listed.is_empty() {
        let own_keys = [
            entry.cors_methods.as_ref().map(Spanned::span),
            entry.cors_headers.as_ref().map(Spanned::span),
            entry.cors_credentials.as_ref().map(Spanned::span),
            entry.cors_max_age.as_ref().map(Spanned::span),
            entry.cors_expose_headers.as_ref().map(Spanned::span),
        ];
        return match own_keys.into_iter().flatten().next() {
            Some(span) => Err(Invalid {
                span,
                message:
                    "the `cors_*` keys need origins: `cors_origins` on the route or `origins` in `[cors]`"
                        .into(),
            }),
            None => Ok(None),
        };
    }
    let credentials =
        entry.cors_credentials.as_ref().or(defaults.credentials.as_ref()).is_some_and(|c| *c.get_ref());
    let origins = origins(listed, credentials)?;
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
    let headers = header_names(
        entry.cors_headers.as_ref().or(defaults.headers.as_ref()),
        &cors::DEFAULT_HEADERS,
        "cors_headers",
    )?;
    let expose = header_names(
        entry.cors_expose_headers.as_ref().or(defaults.expose_headers.as_ref()),
        &cors::DEFAULT_EXPOSE_HEADERS,
        "cors_expose_headers",
    )?;
    let max_age = duration_within(
        entry.cors_max_age.clone().or_else(|| defaults.max_age.clone()),
        cors::DEFAULT_MAX_AGE,
        Duration::ZERO..=cors::MAX_MAX_AGE,
        "cors_max_age",
    )?;
    Ok(Some(Arc::new(Cors::new(origins, methods, headers, credentials, max_age, expose))))
}

/// Origins as listed: exact ones, or `"*"` alone and without credentials.
fn origins(listed: &[Spanned<String>], credentials: bool) -> Result<Origins, Invalid> {
    let Some(star) = listed.iter().find(|o| o.get_ref() == "*") else {
        return listed
            .iter()
            .map(|o| o.get_ref().parse::<Origin>().map_err(|e| Invalid::at(o, e.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Origins::Listed);
    };
    if listed.len() > 1 {
        return Err(Invalid::at(star, "`\"*\"` allows every origin: list it alone or list origins"));
    }
    if credentials {
        return Err(Invalid::at(
            star,
            "`\"*\"` can't be used with `cors_credentials = true`: list the origins that may send credentials",
        ));
    }
    Ok(Origins::Any)
}

/// `[cors]` on its own, so a mistake there is found even where no route
/// inherits it.
fn cors_section(section: &file::CorsSection) -> Result<(), Invalid> {
    let credentials = section.credentials.as_ref().is_some_and(|c| *c.get_ref());
    if let Some(listed) = &section.origins {
        origins(listed.get_ref(), credentials)?;
    }
    header_names(section.headers.as_ref(), &[], "cors.headers")?;
    header_names(section.expose_headers.as_ref(), &[], "cors.expose_headers")?;
    duration_within(
        section.max_age.clone(),
        cors::DEFAULT_MAX_AGE,
        Duration::ZERO..=cors::MAX_MAX_AGE,
        "cors.max_age",
    )?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const APP: &str = "https://app.example.com";

    fn config(extra: &str) -> Result<Config, String> {
        let text = format!("[upstream]\naddresses = [\"127.0.0.1:1\"]\n{extra}");
        Config::parse(&text, Path::new("cors.toml")).map_err(|e| e.to_string())
    }

    /// Whether a page from `origin` may read answers on `method path`.
    fn readable(config: &Config, method: http::Method, path: &str, origin: &str) -> bool {
        let mut request = http::HeaderMap::new();
        request.insert(http::header::ORIGIN, origin.parse().unwrap());
        config.routes.lookup(&method, path).route.and_then(|r| r.cors.as_ref()).is_some_and(|c| {
            c.actual(&request).iter().any(|(name, _)| name == http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
        })
    }

    #[test]
    fn routes_inherit_the_cors_section_unless_they_opt_out_or_deny() {
        let config = config(&format!(
            "[cors]\norigins = [\"{APP}\"]\ncredentials = true\nmax_age = \"1h\"\n\n\
             [[routes]]\npath = \"/api/**\"\npolicy = \"any\"\n\n\
             [[routes]]\npath = \"/mine/**\"\npolicy = \"any\"\ncors_origins = [\"https://other.example\"]\n\n\
             [[routes]]\npath = \"/off/**\"\npolicy = \"public\"\ncors_origins = []\n\n\
             [[routes]]\npath = \"/secret/**\"\npolicy = \"deny\"\n"
        ))
        .unwrap();
        assert!(readable(&config, http::Method::GET, "/api/x", APP));
        assert!(!readable(&config, http::Method::GET, "/api/x", "https://other.example"));
        assert!(readable(&config, http::Method::GET, "/mine/x", "https://other.example"));
        assert!(
            !readable(&config, http::Method::GET, "/mine/x", APP),
            "the route's own list replaces [cors]'s"
        );
        assert!(!readable(&config, http::Method::GET, "/off/x", APP));
        assert!(!readable(&config, http::Method::GET, "/secret/x", APP));
        assert!(!readable(&config, http::Method::GET, "/unrouted", APP), "the default policy has no CORS");
    }

    #[test]
    fn a_cors_section_mistake_is_found_at_its_line() {
        let star = config("[cors]\norigins = [\"*\"]\ncredentials = true\n").unwrap_err();
        assert!(star.starts_with("cors.toml:4:12: `\"*\"` can't be used"), "{star}");
        let path = config("[cors]\norigins = [\"https://a.example/x\"]\n").unwrap_err();
        assert!(path.starts_with("cors.toml:4:12: origin `https://a.example/x` has a path"), "{path}");
        // A route's credentials meet `[cors]`'s `*` at the `*`.
        let inherited = config(
            "[cors]\norigins = [\"*\"]\n\n[[routes]]\npath = \"/a\"\npolicy = \"any\"\ncors_credentials = true\n",
        )
        .unwrap_err();
        assert!(inherited.starts_with("cors.toml:4:12: "), "{inherited}");
        let deny =
            config(&format!("[[routes]]\npath = \"/a\"\npolicy = \"deny\"\ncors_origins = [\"{APP}\"]\n"))
                .unwrap_err();
        assert!(deny.starts_with("cors.toml:6:16: a `deny` route"), "{deny}");
    }
}
