//! Route policy: which rule applies to a request, and what that rule demands.
//!
//! Routes are compiled once when the config loads and sorted so that the first
//! route that matches a request is also the most specific one. That keeps the
//! per-request lookup a plain scan with an early exit, and makes the precedence
//! rule a property of the patterns alone (documented in the README):
//!
//! 1. a pattern without `/**` beats one with it;
//! 2. between two full patterns, compare segment by segment from the left:
//!    a literal beats a `{param}`;
//! 3. between two prefix (`/**`) patterns, the longer prefix wins, then rule 2;
//! 4. a route that lists the request's method beats one that lists no methods;
//! 5. otherwise the route written first in the file wins.
//!
//! Literal segments match regardless of ASCII letter case: many backends
//! (Express, ASP.NET, IIS) route `/ADMIN/x` to their `/admin/x` handler, so a
//! case-sensitive match would judge that request by a weaker route than the
//! one that serves it. The upstream still receives the path as sent.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use crate::roles::RoleRequirement;

/// What a route demands of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// No token check at all.
    Public,
    /// Anonymous callers pass; a token, if sent, must be valid.
    Optional,
    /// A valid access token of an existing, unblocked user.
    Any,
    /// As `any`, and the token came from a password login.
    Fresh,
    /// As `any`, and the user is an administrator.
    Admin,
    /// Never forwarded.
    Deny,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Public => "public",
            Policy::Optional => "optional",
            Policy::Any => "any",
            Policy::Fresh => "fresh",
            Policy::Admin => "admin",
            Policy::Deny => "deny",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is not one of [`Policy`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}`: expected one of public, optional, any, fresh, admin, deny")]
pub struct UnknownPolicy(String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "public" => Policy::Public,
            "optional" => Policy::Optional,
            "any" => Policy::Any,
            "fresh" => Policy::Fresh,
            "admin" => Policy::Admin,
            "deny" => Policy::Deny,
            other => return Err(UnknownPolicy(other.to_owned())),
        })
    }
}

/// The rule the gateway applies to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub policy: Policy,
    /// On `admin` routes and routes with roles: the token must also be fresh.
    pub require_fresh: bool,
    /// Roles the caller's account must hold (only on `any`, `fresh` and
    /// `admin` routes); shared, so matching a route copies a pointer.
    pub roles: Option<Arc<RoleRequirement>>,
    /// Forward a signed identity assertion (`X-Auth-Assertion`) upstream.
    pub assertion: bool,
    /// A WebSocket upgrade may pass (after this rule's checks); on every
    /// other route the upgrade headers are removed and no tunnel can open.
    pub websocket: bool,
}

/// One segment of a compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// Why a route's path pattern was refused; each message quotes the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("path pattern `{pattern}` must start with `/`")]
    NotAbsolute { pattern: String },
    #[error("path pattern `{pattern}` has an empty segment (`//` or a trailing `/`)")]
    EmptySegment { pattern: String },
    #[error("path pattern `{pattern}`: `**` is only allowed as the last segment, as `/**`")]
    InnerWildcard { pattern: String },
    #[error("path pattern `{pattern}`: `{segment}` is not a valid parameter name")]
    ParamName { pattern: String, segment: String },
    #[error(
        "path pattern `{pattern}`: segment `{segment}` mixes literal text with `{{`, `}}`, `*`, `?`, `#` or `%`"
    )]
    MixedSegment { pattern: String, segment: String },
}

/// A compiled path pattern: `/items`, `/item/{name}`, `/static/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// As written; shared, because every matched request carries it as its
    /// route label for the access log and metrics.
    source: Arc<str>,
    segments: Vec<Segment>,
    /// Ends in `/**`: matches the prefix itself and everything below it.
    prefix: bool,
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let owned = || pattern.to_owned();
        if !pattern.starts_with('/') {
            return Err(PatternError::NotAbsolute { pattern: owned() });
        }
        let (body, prefix) = match pattern.strip_suffix("/**") {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        let mut segments = Vec::new();
        for raw in body.split('/').skip(1) {
            if raw.is_empty() {
                // Only a bare "/" (or "/**") may have an empty segment.
                if body.len() <= 1 {
                    continue;
                }
                return Err(PatternError::EmptySegment { pattern: owned() });
            }
            if raw.contains("**") {
                return Err(PatternError::InnerWildcard { pattern: owned() });
            }
            if raw.starts_with('{') && raw.ends_with('}') {
                let name = &raw[1..raw.len() - 1];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(PatternError::ParamName { pattern: owned(), segment: raw.to_owned() });
                }
                segments.push(Segment::Param);
            } else if raw.contains(['{', '}', '*', '?', '#', '%']) {
                return Err(PatternError::MixedSegment { pattern: owned(), segment: raw.to_owned() });
            } else {
                // Stored lower-case: matching folds ASCII case.
                segments.push(Segment::Literal(raw.to_ascii_lowercase()));
            }
        }
        Ok(PathPattern { source: Arc::from(pattern), segments, prefix })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The pattern as written, shared rather than copied.
    pub fn shared(&self) -> &Arc<str> {
        &self.source
    }

    /// Matches a normalised path (starts with `/`, no query string).
    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').skip(1).filter(|s| !s.is_empty());
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            if let Segment::Literal(lit) = segment {
                if !lit.eq_ignore_ascii_case(part) {
                    return false;
                }
            }
        }
        self.prefix || parts.next().is_none()
    }

    /// Orders patterns from most to least specific (see the module docs).
    fn specificity_cmp(&self, other: &Self) -> Ordering {
        // `Less` sorts first, so "more specific" is `Less`.
        match (self.prefix, other.prefix) {
            (false, true) => return Ordering::Less,
            (true, false) => return Ordering::Greater,
            (true, true) => {
                let by_len = other.segments.len().cmp(&self.segments.len());
                if by_len != Ordering::Equal {
                    return by_len;
                }
            }
            (false, false) => {}
        }
        for (a, b) in self.segments.iter().zip(&other.segments) {
            match (a, b) {
                (Segment::Literal(_), Segment::Param) => return Ordering::Less,
                (Segment::Param, Segment::Literal(_)) => return Ordering::Greater,
                _ => {}
            }
        }
        // Full patterns of different lengths never match the same path, so
        // their order is arbitrary; it must still be consistent (a total order
        // for the sort): the shorter first, as in a dictionary.
        self.segments.len().cmp(&other.segments.len())
    }
}

/// One configured route.
#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: PathPattern,
    /// Upper-case method names; empty means every method.
    pub methods: Vec<http::Method>,
    pub rule: Rule,
    /// `rate` and `burst`: the request budget per caller, if any. Kept off
    /// [`Rule`], which the default policy also produces and which has none.
    pub budget: Option<crate::limits::Budget>,
    /// `cors_*`: which other origins' pages may call this route, answered by
    /// the gateway (see [`crate::cors`]). Off [`Rule`] like `budget`: it
    /// changes what a browser may read, never what the policy decides.
    pub cors: Option<Arc<crate::cors::Cors>>,
    /// `signin_redirect`: a browser refused for want of a valid token is
    /// sent to the sign-in page instead (see [`crate::signin`]).
    pub signin_redirect: bool,
    /// Position in the config file, for tie-breaks and for logs.
    pub index: usize,
}

impl Route {
    fn allows(&self, method: &http::Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }
}

/// The compiled route list plus the rule for requests that match no route.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Most specific first.
    routes: Vec<Route>,
    /// Positions in `routes` of the routes whose pattern starts with a given
    /// literal segment, in order: a request only scans its own bucket...
    by_first_segment: HashMap<String, Vec<usize>>,
    /// ...merged with the routes that start with a `{param}` or have no
    /// segment at all (`/`, `/**`), which any path may match.
    unanchored: Vec<usize>,
    default_rule: Rule,
}

/// What the lookup found: the rule, and the pattern for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub rule: &'a Rule,
    /// `None` when the default policy applied.
    pub route: Option<&'a Route>,
}

/// Which route a request matched, as logged and counted: a fixed name
/// (`(default)`, a built-in endpoint) or the route's pattern, shared with the
/// route table so labelling a request allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteLabel {
    Fixed(&'static str),
    Pattern(Arc<str>),
}

impl RouteLabel {
    pub fn as_str(&self) -> &str {
        match self {
            RouteLabel::Fixed(name) => name,
            RouteLabel::Pattern(pattern) => pattern,
        }
    }
}

impl fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Matched<'_> {
    /// For logs and metrics: the matched pattern, or `(default)`.
    pub fn route_label(&self) -> RouteLabel {
        self.route
            .map_or(RouteLabel::Fixed("(default)"), |r| RouteLabel::Pattern(Arc::clone(r.pattern.shared())))
    }
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>, default_rule: Rule) -> Self {
        routes.sort_by(|a, b| {
            a.pattern
                .specificity_cmp(&b.pattern)
                .then_with(|| a.methods.is_empty().cmp(&b.methods.is_empty()))
                .then_with(|| a.index.cmp(&b.index))
        });
        let mut by_first_segment: HashMap<String, Vec<usize>> = HashMap::new();
        let mut unanchored = Vec::new();
        for (position, route) in routes.iter().enumerate() {
            match route.pattern.segments.first() {
                Some(Segment::Literal(first)) => {
                    by_first_segment.entry(first.clone()).or_default().push(position)
                }
                _ => unanchored.push(position),
            }
        }
        RouteTable { routes, by_first_segment, unanchored, default_rule }
    }

    pub fn lookup(&self, method: &http::Method, path: &str) -> Matched<'_> {
        let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
        // Bucket keys are lower-case; most paths already are, so only fold when needed.
        let bucket = if first.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_first_segment.get(&first.to_ascii_lowercase())
        } else {
            self.by_first_segment.get(first)
        };
        let bucket = bucket.map_or(&[][..], Vec::as_slice);
        // Walk both position lists in order, so the most specific match wins.
        let (mut a, mut b) = (bucket.iter().peekable(), self.unanchored.iter().peekable());
        let mut found = None;
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            let Some(&position) = next else { break };
            let r = &self.routes[position];
            // HEAD is answered like GET by every upstream, so it follows GET's
            // rule unless a route names HEAD itself.
            if r.pattern.matches(path)
                && (r.allows(method) || (method == http::Method::HEAD && r.allows(&http::Method::GET)))
            {
                found = Some(r);
                break;
            }
        }
        match found {
            Some(route) => Matched { rule: &route.rule, route: Some(route) },
            None => Matched { rule: &self.default_rule, route: None },
        }
    }

    /// Whether every method is judged alike on `path` (same policy, same
    /// freshness and role demands, same request budget). Where that holds, a framework's `_method` override
    /// can't turn the request into one the gateway would have judged
    /// differently, so a form body needs no check for it.
    pub fn judged_alike_for_every_method(&self, path: &str) -> bool {
        const METHODS: [http::Method; 7] = [
            http::Method::GET,
            http::Method::HEAD,
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
            http::Method::OPTIONS,
        ];
        let judged = |method: &http::Method| {
            let matched = self.lookup(method, path);
            let budget = matched.route.and_then(|r| r.budget.clone());
            (matched.rule.policy, matched.rule.require_fresh, matched.rule.roles.clone(), budget)
        };
        let first = judged(&http::Method::POST);
        METHODS.iter().all(|m| judged(m) == first)
    }

    pub fn default_rule(&self) -> &Rule {
        &self.default_rule
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn route(path: &str, methods: &[&str], policy: Policy, index: usize) -> Route {
        Route {
            pattern: PathPattern::parse(path).unwrap(),
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            rule: Rule { policy, require_fresh: false, roles: None, assertion: false, websocket: false },
            budget: None,
            cors: None,
            signin_redirect: false,
            index,
        }
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable::new(
            routes,
            Rule {
                policy: Policy::Deny,
                require_fresh: false,
                roles: None,
                assertion: false,
                websocket: false,
            },
        )
    }

    #[test]
    fn exact_param_and_prefix_patterns_match() {
        let p = PathPattern::parse("/item/{name}").unwrap();
        assert!(p.matches("/item/chair"));
        assert!(!p.matches("/item"));
        assert!(!p.matches("/item/chair/legs"));
        let p = PathPattern::parse("/static/**").unwrap();
        assert!(p.matches("/static"));
        assert!(p.matches("/static/a/b"));
        assert!(!p.matches("/staticx"));
        let p = PathPattern::parse("/**").unwrap();
        assert!(p.matches("/"));
        assert!(p.matches("/anything/at/all"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["item", "/a//b", "/a/", "/a/**/b", "/a/{}", "/a/x{y}", "/a/*"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn pattern_errors_quote_the_pattern() {
        let message = |pattern: &str| PathPattern::parse(pattern).unwrap_err().to_string();
        assert_eq!(message("item"), "path pattern `item` must start with `/`");
        assert_eq!(message("/a/"), "path pattern `/a/` has an empty segment (`//` or a trailing `/`)");
        assert_eq!(
            message("/a/**/b"),
            "path pattern `/a/**/b`: `**` is only allowed as the last segment, as `/**`"
        );
        assert_eq!(message("/a/{}"), "path pattern `/a/{}`: `{}` is not a valid parameter name");
        assert_eq!(
            message("/a/x{y}"),
            "path pattern `/a/x{y}`: segment `x{y}` mixes literal text with `{`, `}`, `*`, `?`, `#` or `%`"
        );
    }

    #[test]
    fn most_specific_route_wins_regardless_of_file_order() {
        let t = table(vec![
            route("/**", &[], Policy::Deny, 0),
            route("/item/**", &[], Policy::Public, 1),
            route("/item/{name}", &[], Policy::Any, 2),
            route("/item/special", &[], Policy::Admin, 3),
            route("/item/{name}", &["POST"], Policy::Fresh, 4),
        ]);
        let get = Method::GET;
        assert_eq!(t.lookup(&get, "/item/special").rule.policy, Policy::Admin);
        assert_eq!(t.lookup(&get, "/item/chair").rule.policy, Policy::Any);
        assert_eq!(t.lookup(&Method::POST, "/item/chair").rule.policy, Policy::Fresh);
        assert_eq!(t.lookup(&get, "/item/a/b").rule.policy, Policy::Public);
        assert_eq!(t.lookup(&get, "/other").rule.policy, Policy::Deny);
        assert_eq!(t.lookup(&Method::HEAD, "/item/chair").rule.policy, Policy::Any);
    }

    #[test]
    fn methods_differing_only_in_roles_or_budget_are_not_judged_alike() {
        use crate::roles::{Role, RolesMatch};
        let mut editors = route("/doc/{id}", &["DELETE"], Policy::Any, 1);
        let roles = vec![Role::parse("editor").unwrap()];
        editors.rule.roles = RoleRequirement::new(roles, RolesMatch::Any).map(Arc::new);
        let t = table(vec![route("/doc/{id}", &[], Policy::Any, 0), editors]);
        assert!(!t.judged_alike_for_every_method("/doc/1"), "a `_method=DELETE` would skip the role check");
        let plain = table(vec![
            route("/doc/{id}", &[], Policy::Any, 0),
            route("/doc/{id}", &["DELETE"], Policy::Any, 1),
        ]);
        assert!(plain.judged_alike_for_every_method("/doc/1"));
        let mut budgeted = route("/doc/{id}", &["DELETE"], Policy::Any, 1);
        let rate = "3/m".parse().unwrap();
        budgeted.budget = Some(crate::limits::Budget::new(rate, None, "/doc/{id}", &[http::Method::DELETE]));
        let t = table(vec![route("/doc/{id}", &[], Policy::Any, 0), budgeted]);
        assert!(!t.judged_alike_for_every_method("/doc/1"), "a `_method=DELETE` would skip the budget");
    }

    #[test]
    fn unmatched_requests_get_the_default_rule() {
        let t = table(vec![route("/items", &["GET"], Policy::Optional, 0)]);
        let m = t.lookup(&Method::DELETE, "/items");
        assert!(m.route.is_none());
        assert_eq!(m.rule.policy, Policy::Deny);
    }

    #[test]
    fn the_index_keeps_precedence_across_buckets() {
        let t = table(vec![
            route("/{any}/x", &[], Policy::Public, 0),
            route("/a/{y}", &[], Policy::Any, 1),
            route("/a/**", &[], Policy::Admin, 2),
            route("/**", &[], Policy::Deny, 3),
        ]);
        assert_eq!(t.lookup(&Method::GET, "/a/x").rule.policy, Policy::Any, "literal first segment wins");
        assert_eq!(t.lookup(&Method::GET, "/b/x").rule.policy, Policy::Public);
        assert_eq!(t.lookup(&Method::GET, "/a/x/y").rule.policy, Policy::Admin);
        assert_eq!(t.lookup(&Method::GET, "/b/y").rule.policy, Policy::Deny);
        assert_eq!(t.lookup(&Method::GET, "/").rule.policy, Policy::Deny);
    }

    #[test]
    fn literal_segments_match_in_any_letter_case() {
        let t = table(vec![route("/admin/**", &[], Policy::Admin, 0), route("/**", &[], Policy::Public, 1)]);
        for path in ["/admin/x", "/ADMIN/x", "/Admin", "/aDmIn/users"] {
            assert_eq!(t.lookup(&Method::GET, path).rule.policy, Policy::Admin, "{path}");
        }
        let t = table(vec![route("/Item/{name}", &["DELETE"], Policy::Admin, 0)]);
        assert_eq!(t.lookup(&Method::DELETE, "/ITEM/chair").rule.policy, Policy::Admin);
    }

    #[test]
    fn method_overrides_matter_only_where_methods_are_judged_differently() {
        let t = table(vec![
            route("/item/{name}", &["DELETE"], Policy::Admin, 0),
            route("/upload/**", &[], Policy::Any, 1),
            route("/**", &[], Policy::Public, 2),
        ]);
        assert!(!t.judged_alike_for_every_method("/item/x"));
        assert!(t.judged_alike_for_every_method("/upload/big"));
        assert!(t.judged_alike_for_every_method("/other"));
    }

    #[test]
    fn specificity_is_a_total_order() {
        // Found by the config fuzzer: `/a` tied with both `/a/{x}` and
        // `/a/b`, which are not tied with each other, and the sort panicked.
        let patterns: Vec<PathPattern> =
            ["/a/{x}", "/a", "/a/b", "/{x}", "/{x}/b", "/a/**", "/**", "/a/b/**", "/{x}/**"]
                .iter()
                .map(|p| PathPattern::parse(p).unwrap())
                .collect();
        for a in &patterns {
            for b in &patterns {
                assert_eq!(a.specificity_cmp(b), b.specificity_cmp(a).reverse(), "{a:?} {b:?}");
                for c in &patterns {
                    if a.specificity_cmp(b) != Ordering::Greater && b.specificity_cmp(c) != Ordering::Greater
                    {
                        assert_ne!(a.specificity_cmp(c), Ordering::Greater, "{a:?} {b:?} {c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn first_route_in_file_wins_a_tie() {
        let t = table(vec![route("/a/{x}", &[], Policy::Any, 0), route("/a/{y}", &[], Policy::Public, 1)]);
        assert_eq!(t.lookup(&Method::GET, "/a/1").rule.policy, Policy::Any);
    }
}
