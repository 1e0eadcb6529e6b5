//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! One registry per gateway (not the process-global default) so tests and
//! embedders can run several. Names follow Prometheus conventions: counters end
//! in `_total`, durations are `_seconds` histograms; label values come from
//! the config (route patterns) or small fixed sets, never from clients.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for sub-millisecond to multi-second latencies.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    /// Every request: matched route (or built-in endpoint), policy, outcome, status.
    pub requests: IntCounterVec,
    /// Refused proxied requests: matched route and the error code.
    pub refusals: IntCounterVec,
    /// Time to decide a request (header checks, token, revocation and user lookups).
    pub auth_seconds: HistogramVec,
    /// From sending the request upstream to its response header.
    pub upstream_seconds: HistogramVec,
    pub logins: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub revocations: IntCounterVec,
    /// Revocation entries held in the store (tokens and login sessions).
    pub revocation_entries: IntGauge,
    /// 1 while the store answers (for Redis: reachable and in step), sampled at scrape time.
    pub store_up: IntGauge,
    pub upstream_healthy: IntGaugeVec,
    pub config_reloads: IntCounterVec,
}

impl Metrics {
    // The definitions below are static and valid, and each is registered once
    // in a fresh registry: the `expect`s cannot fire.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        }
        fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
            let h =
                HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
                    .expect("valid metric definition");
            registry.register(Box::new(h.clone())).expect("metric registered once");
            h
        }
        let revocation_entries =
            IntGauge::new("gatehouse_revocation_entries", "Revocation entries held in the store")
                .expect("valid metric definition");
        registry.register(Box::new(revocation_entries.clone())).expect("metric registered once");
        let store_up = IntGauge::new(
            "gatehouse_store_up",
            "1 if the store answers (Redis: reachable, and this gateway's copy is in step)",
        )
        .expect("valid metric definition");
        registry.register(Box::new(store_up.clone())).expect("metric registered once");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new("gatehouse_upstream_healthy", "1 if the upstream passes its health check"),
            &["upstream"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(upstream_healthy.clone())).expect("metric registered once");
        Metrics {
            requests: counter(
                &registry,
                "gatehouse_requests_total",
                "Requests by matched route, policy, outcome and status",
                &["route", "policy", "outcome", "status"],
            ),
            refusals: counter(
                &registry,
                "gatehouse_refusals_total",
                "Proxied requests the gateway refused, by matched route and reason (the error code)",
                &["route", "reason"],
            ),
            auth_seconds: histogram(
                &registry,
                "gatehouse_auth_decision_seconds",
                "Time to make the authentication decision",
                &["policy"],
            ),
            upstream_seconds: histogram(
                &registry,
                "gatehouse_upstream_response_seconds",
                "Time from forwarding a request to the upstream's response header",
                &["upstream"],
            ),
            logins: counter(&registry, "gatehouse_logins_total", "Login attempts by result", &["result"]),
            refreshes: counter(
                &registry,
                "gatehouse_refreshes_total",
                "Token refreshes by result",
                &["result"],
            ),
            revocations: counter(
                &registry,
                "gatehouse_revocations_total",
                "Revocations by kind (token, user, session)",
                &["kind"],
            ),
            revocation_entries,
            store_up,
            upstream_healthy,
            config_reloads: counter(
                &registry,
                "gatehouse_config_reloads_total",
                "Config reloads (SIGHUP) by result",
                &["result"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
