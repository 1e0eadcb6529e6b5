//! The Grafana dashboard (`config/grafana-dashboard.json`) against the metrics
//! a real gateway exports.
//!
//! A dashboard is code that no compiler reads: rename a metric or a label in
//! `src/metrics.rs` and its panels go blank without an error anywhere. So a
//! gateway is driven until every metric family has samples, its `/metrics`
//! is scraped, and every series name and label each panel query and template
//! variable reads is looked up in that scrape. The panels ops teams rely on
//! are checked by title and by the metric they read, so none can be lost
//! quietly either.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::config::text;
use crate::common::{send_signal, Gateway, Options, Upstream};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json");

/// Labels Prometheus attaches to every series it scrapes (the target's), so
/// a query may use them on any metric though `/metrics` never shows them.
const SCRAPE_LABELS: &[&str] = &["instance", "job"];

/// Every family `src/metrics.rs` defines; the dashboard must read each.
const FAMILIES: &[&str] = &[
    "gatehouse_requests_total",
    "gatehouse_refusals_total",
    "gatehouse_auth_decision_seconds",
    "gatehouse_upstream_response_seconds",
    "gatehouse_upstream_healthy",
    "gatehouse_logins_total",
    "gatehouse_refreshes_total",
    "gatehouse_revocations_total",
    "gatehouse_store_up",
    "gatehouse_revocation_entries",
    "gatehouse_config_reloads_total",
];

/// The panels the README's "Dashboard" section describes: title and the
/// family each must read.
const PANELS: &[(&str, &str)] = &[
    ("Requests by route and outcome", "gatehouse_requests_total"),
    ("Responses by status", "gatehouse_requests_total"),
    ("Refusals by reason", "gatehouse_refusals_total"),
    ("Auth decision latency (p50 / p99)", "gatehouse_auth_decision_seconds"),
    ("Upstream latency (p50 / p99)", "gatehouse_upstream_response_seconds"),
    ("Upstream health", "gatehouse_upstream_healthy"),
    ("Upstream responses", "gatehouse_upstream_response_seconds"),
    ("Logins by result", "gatehouse_logins_total"),
    ("Refreshes by result", "gatehouse_refreshes_total"),
    ("Revocations by kind", "gatehouse_revocations_total"),
    ("Store up", "gatehouse_store_up"),
    ("Revocation entries", "gatehouse_revocation_entries"),
    ("Config reloads", "gatehouse_config_reloads_total"),
];

#[test]
fn every_series_and_label_the_dashboard_reads_is_exported() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| c.upstream.get_mut().health_check_interval = text("100ms")),
    );
    // Traffic that gives every family a sample: a login, a proxied request
    // (auth decision, upstream latency), a refusal, a refresh, a logout (a
    // revocation and a revocation entry) and a config reload.
    let (access, refresh) = gw.admin_login();
    assert_eq!(gw.get("/item/chair", Some(&access)).0, 200);
    assert_eq!(gw.get("/item/chair", None).0, 401);
    assert_eq!(gw.post("/refresh", Some(&refresh), Value::Null).0, 200);
    assert_eq!(gw.post("/logout", Some(&access), Value::Null).0, 200);
    send_signal(gw.pid(), "HUP");

    let scrape = || {
        let resp = gw.http.get(format!("http://{}/metrics", gw.admin_addr)).send().unwrap();
        assert_eq!(resp.status(), 200);
        Exposition::parse(&resp.text().unwrap())
    };
    // The health check and the reload land in the background.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (exposition, missing) = loop {
        let exposition = scrape();
        let missing: Vec<_> = FAMILIES.iter().filter(|f| !exposition.has_samples(f)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (exposition, missing);
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // First what the dashboard misses (a renamed metric shows here by name),
    // then any family that never appeared.
    let dashboard = load_dashboard();
    let problems = check(&dashboard, &exposition);
    assert!(
        problems.is_empty(),
        "the dashboard reads what the gateway does not export:\n{}",
        problems.join("\n")
    );
    assert!(missing.is_empty(), "no samples of {missing:?} after the traffic:\n{}", gw.log());

    // The check fails on a renamed metric or label (a check that cannot fail
    // checks nothing): rename one of each in the dashboard's text.
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    for (from, to, expected) in [
        ("gatehouse_logins_total", "gatehouse_login_total", "gatehouse_login_total is not exported"),
        ("sum by (reason)", "sum by (code)", "label `code`"),
        ("{{upstream}}", "{{address}}", "label `address`"),
    ] {
        let renamed: Value = serde_json::from_str(&text.replace(from, to)).unwrap();
        let problems = check(&renamed, &exposition);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "renaming {from} to {to} went unnoticed: {problems:?}"
        );
    }
}

#[test]
fn the_dashboard_has_the_ops_panels_and_sound_queries() {
    let dashboard = load_dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39, "a current Grafana schema");
    assert!(dashboard["id"].is_null(), "importable: no instance-local id");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let datasource = variable("datasource");
    assert_eq!((&datasource["type"], &datasource["query"]), (&json!("datasource"), &json!("prometheus")));
    let route = variable("route");
    assert_eq!(route["type"], "query");
    let (_, query) = variable_query(route).unwrap();
    assert!(query.starts_with("label_values(") && query.trim_end().ends_with("route)"), "{query}");

    let panels = all_panels(&dashboard);
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title} ignores $datasource");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no queries"));
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "a query of {title} ignores $datasource"
            );
            let expr = target["expr"].as_str().unwrap();
            let query = Query::parse(expr);
            for range in &query.ranges {
                assert_eq!(range, "$__rate_interval", "{title}: `{expr}` should rate over $__rate_interval");
            }
            if query.functions.contains("histogram_quantile") {
                assert!(query.metrics.iter().all(|m| m.ends_with("_bucket")), "{title}: `{expr}`");
                assert!(query.grouping.contains("le"), "{title}: `{expr}` must keep `le`");
            }
        }
    }
    for (title, family) in PANELS {
        let panel = panels
            .iter()
            .find(|p| p["title"] == *title)
            .unwrap_or_else(|| panic!("the dashboard lost its {title:?} panel"));
        let reads = panel_metrics(panel);
        assert!(
            reads.iter().any(|m| family_of(m) == *family),
            "{title:?} should read {family}, reads {reads:?}"
        );
    }
    let read: BTreeSet<String> =
        panels.iter().flat_map(|p| panel_metrics(p)).map(|m| family_of(&m)).collect();
    for family in FAMILIES {
        assert!(read.contains(*family), "no panel reads {family}");
    }
}

#[test]
fn the_query_reader_finds_series_labels_and_ranges() {
    let q = Query::parse(
        r#"histogram_quantile(0.99, sum by (le, policy) (rate(x_seconds_bucket{instance=~"$i", policy!="a,}"}[$__rate_interval])))"#,
    );
    assert_eq!(q.metrics, BTreeSet::from(["x_seconds_bucket".to_owned()]));
    assert_eq!(q.grouping, BTreeSet::from(["le".to_owned(), "policy".to_owned()]));
    assert_eq!(
        q.matchers,
        vec![
            ("x_seconds_bucket".to_owned(), "instance".to_owned()),
            ("x_seconds_bucket".to_owned(), "policy".to_owned())
        ]
    );
    assert_eq!(q.ranges, vec!["$__rate_interval"]);
    let q = Query::parse("sum(rate(a_total[5m])) by (route) / on (route) group_left max(b) offset 1h");
    assert_eq!(q.metrics, BTreeSet::from(["a_total".to_owned(), "b".to_owned()]));
    assert_eq!(q.grouping, BTreeSet::from(["route".to_owned()]));
    let exposition = Exposition::parse(
        "# TYPE h histogram\nh_bucket{le=\"0.1\",route=\"/item/{name}\",q=\"a\\\"}\"} 1\nh_sum{route=\"/x\"} 2\nh_count{route=\"/x\"} 1\n",
    );
    assert_eq!(exposition.series["h_bucket"], BTreeSet::from(["le".into(), "route".into(), "q".into()]));
    assert!(exposition.has_samples("h") && !exposition.series.contains_key("h"));
}

fn load_dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// What the dashboard reads that the scrape lacks, one sentence each.
fn check(dashboard: &Value, exposition: &Exposition) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, expr, legend) in queries(dashboard) {
        let query = Query::parse(&expr);
        if query.metrics.is_empty() {
            problems.push(format!("{place}: `{expr}` reads no series"));
        }
        let lacks = |metric: &str, label: &str, how: &str| -> Option<String> {
            let labels = exposition.series.get(metric)?;
            (!SCRAPE_LABELS.contains(&label) && !labels.contains(label))
                .then(|| format!("{place}: {how} label `{label}`, which {metric} lacks (it has {labels:?})"))
        };
        for (metric, label) in &query.matchers {
            problems.extend(lacks(metric, label, "matches on"));
        }
        for metric in &query.metrics {
            for label in &query.grouping {
                problems.extend(lacks(metric, label, "groups by"));
            }
            for label in &query.extra_labels {
                problems.extend(lacks(metric, label, "lists values of"));
            }
        }
        for label in legend_labels(&legend) {
            if query.grouping.is_empty() {
                for metric in &query.metrics {
                    problems.extend(lacks(metric, &label, "names series by"));
                }
            } else if !query.grouping.contains(&label) {
                problems.push(format!("{place}: names series by label `{label}`, which `{expr}` drops"));
            }
        }
        for metric in &query.metrics {
            if !exposition.series.contains_key(metric) {
                problems.push(format!(
                    "{place}: {metric} is not exported (exported series: {:?})",
                    exposition.series.keys().collect::<Vec<_>>()
                ));
            } else if let Some(base) = histogram_base(metric) {
                if exposition.families.get(base).map(String::as_str) != Some("histogram") {
                    problems.push(format!("{place}: {metric} is not a series of an exported histogram"));
                }
            }
        }
    }
    problems
}

/// Every query with where it is and its legend: panel targets' `expr`
/// (in rows too) and query variables' `label_values(...)`.
fn queries(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let legend = target["legendFormat"].as_str().unwrap_or_default().to_owned();
                out.push((
                    format!("panel {:?}", panel["title"].as_str().unwrap_or("")),
                    expr.to_owned(),
                    legend,
                ));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some((name, query)) = variable_query(variable) {
            out.push((format!("variable ${name}"), query.to_owned(), String::new()));
        }
    }
    out
}

/// A query variable's PromQL: a string, or the query editor's object.
fn variable_query(variable: &Value) -> Option<(&str, &str)> {
    if variable["type"] != "query" {
        return None;
    }
    let query = variable["query"].as_str().or_else(|| variable["query"]["query"].as_str())?;
    Some((variable["name"].as_str().unwrap_or(""), query))
}

fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn panel_metrics(panel: &Value) -> BTreeSet<String> {
    let exprs = panel["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str());
    exprs.flat_map(|e| Query::parse(e).metrics).collect()
}

/// `x_bucket`, `x_sum`, `x_count` → `x`; other names are their own family.
fn family_of(series: &str) -> String {
    histogram_base(series).unwrap_or(series).to_owned()
}

fn histogram_base(series: &str) -> Option<&str> {
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| series.strip_suffix(suffix))
}

/// `{{label}}` references in a legend format.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

/// A scrape: each family's type (`# TYPE`) and, per series name (`x_bucket`
/// for a histogram `x`), the label names its samples carry.
struct Exposition {
    families: BTreeMap<String, String>,
    series: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut families = BTreeMap::new();
        let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.insert(name.to_owned(), kind.trim().to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let chars: Vec<char> = line.chars().collect();
            let name_end = chars.iter().position(|c| *c == '{' || *c == ' ').unwrap();
            let name: String = chars[..name_end].iter().collect();
            let labels = series.entry(name).or_default();
            if chars[name_end] == '{' {
                let end = closing_brace(&chars, name_end);
                labels.extend(matcher_labels(&chars[name_end + 1..end]));
            }
        }
        Exposition { families, series }
    }

    /// Whether the family has at least one sample (a vector with no label
    /// values yet is not exported at all).
    fn has_samples(&self, family: &str) -> bool {
        self.series.keys().any(|s| family_of(s) == family || s == family)
    }
}

/// What a PromQL expression reads.
#[derive(Debug, Default)]
struct Query {
    /// Series names selected.
    metrics: BTreeSet<String>,
    /// (series, label) for every label matched in a `{...}` selector.
    matchers: Vec<(String, String)>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left/right`:
    /// every series the expression reads must carry them.
    grouping: BTreeSet<String>,
    /// The label whose values `label_values(..., label)` lists.
    extra_labels: BTreeSet<String>,
    /// The text inside each range selector's `[...]`.
    ranges: Vec<String>,
    functions: BTreeSet<String>,
}

/// Words that are neither series nor functions: aggregation operators (they
/// may be followed by `by (...)` before their parenthesis) and keywords.
const OPERATORS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

impl Query {
    fn parse(expr: &str) -> Query {
        let mut query = Query::default();
        let mut expr = expr.trim();
        // Grafana's `label_values(selector, label)`: the last argument is a label.
        let inner;
        if let Some(rest) = expr.strip_prefix("label_values(") {
            let rest = rest.trim_end().strip_suffix(')').unwrap_or_else(|| panic!("`{expr}`: unclosed"));
            let (selector, label) =
                rest.rsplit_once(',').unwrap_or_else(|| panic!("`{expr}`: label_values needs a series"));
            query.extra_labels.insert(label.trim().to_owned());
            inner = selector.to_owned();
            expr = &inner;
        }
        let chars: Vec<char> = expr.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '"' || c == '\'' || c == '`' {
                i = string_end(&chars, i) + 1;
            } else if c == '[' {
                let end = i + chars[i..].iter().position(|c| *c == ']').unwrap_or_else(|| panic!("`{expr}`"));
                query.ranges.push(chars[i + 1..end].iter().collect::<String>().trim().to_owned());
                i = end + 1;
            } else if c == '{' {
                panic!("`{expr}`: a selector without a series name is not supported here");
            } else if c == '$' {
                // A dashboard variable: `$name` or `${name}`.
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i += chars[i..].iter().position(|c| *c == '}').unwrap() + 1;
                } else {
                    while i < chars.len() && is_word(chars[i]) {
                        i += 1;
                    }
                }
            } else if c.is_ascii_digit() || c == '.' {
                // A number or a duration (`0.99`, `1h`).
                while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().position(|c| !c.is_whitespace()).map(|n| i + n);
                let next_char = next.map(|n| chars[n]);
                if GROUPING.contains(&word.as_str()) {
                    if let (Some(open), Some('(')) = (next, next_char) {
                        let close = open + chars[open..].iter().position(|c| *c == ')').unwrap();
                        let list: String = chars[open + 1..close].iter().collect();
                        query.grouping.extend(
                            list.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned),
                        );
                        i = close + 1;
                    }
                } else if OPERATORS.contains(&word.as_str()) {
                } else if next_char == Some('(') {
                    query.functions.insert(word);
                } else {
                    if let (Some(open), Some('{')) = (next, next_char) {
                        let close = closing_brace(&chars, open);
                        for label in matcher_labels(&chars[open + 1..close]) {
                            query.matchers.push((word.clone(), label));
                        }
                        i = close + 1;
                    }
                    query.metrics.insert(word);
                }
            } else {
                i += 1;
            }
        }
        query
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index of the quote closing the string that opens at `start`.
fn string_end(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i,
            _ => i += 1,
        }
    }
    panic!("unclosed string in {:?}", chars.iter().collect::<String>())
}

/// The index of the `}` closing the `{` at `open`, skipping quoted values
/// (route patterns hold braces: `route="/item/{name}"`).
fn closing_brace(chars: &[char], open: usize) -> usize {
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = string_end(chars, i) + 1,
            '}' => return i,
            _ => i += 1,
        }
    }
    panic!("unclosed selector in {:?}", chars.iter().collect::<String>())
}

/// The label names of `a="x", b=~"y"` (a selector's or a sample's labels).
fn matcher_labels(inside: &[char]) -> Vec<String> {
    let mut labels = Vec::new();
    let mut i = 0;
    while i < inside.len() {
        let c = inside[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string_end(inside, i) + 1;
        } else if is_word(c) {
            let start = i;
            while i < inside.len() && is_word(inside[i]) {
                i += 1;
            }
            labels.push(inside[start..i].iter().collect());
        } else {
            i += 1;
        }
    }
    labels
}
