//! The admin listener's HTTP side: which requests need the admin token, how
//! bodies are read, and how operations' answers become responses. What each
//! operation does lives in [`super::operations`], shared with the CLI.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::operations::{Operation, Operator, Request};
use crate::accounts::Accounts;
use crate::auth::bearer_token;
use crate::config::Secret;
use crate::error::ApiError;
use crate::http_io::{read_body, Reply};
use crate::listening::ListenerReadiness;
use crate::metrics::Metrics;
use crate::proxy::Live;
use crate::tokens::TokenService;

/// Largest body the admin API reads.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// The longest a caller may take to send an admin request body.
const ADMIN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct AdminApi {
    operator: Operator,
    /// The bearer token every `/admin/` request must present.
    admin_token: Option<Secret>,
    /// The running gateway's metrics and live config, for `/metrics` and `/readyz`.
    operations: Option<(Arc<Metrics>, Arc<ArcSwap<Live>>)>,
    /// Whether the gateway's listeners accept connections yet, for `/readyz`.
    listeners: Option<Arc<ListenerReadiness>>,
    /// `admin.openapi` and the document served there ([`crate::openapi`]).
    openapi: Option<(String, Vec<u8>)>,
}

impl AdminApi {
    pub fn new(accounts: Accounts, tokens: Option<Arc<TokenService>>, admin_token: Option<Secret>) -> Self {
        AdminApi {
            operator: Operator::new(accounts, tokens),
            admin_token,
            operations: None,
            listeners: None,
            openapi: None,
        }
    }

    /// Adds `/metrics` and upstream readiness (the running gateway's admin listener).
    pub fn with_operations(mut self, metrics: Arc<Metrics>, live: Arc<ArcSwap<Live>>) -> Self {
        self.operations = Some((metrics, live));
        self
    }

    /// Serves the OpenAPI document at `path` (without credentials: it says
    /// what the API is, nothing about who uses it).
    pub fn with_openapi(mut self, path: String, document: Vec<u8>) -> Self {
        self.openapi = Some((path, document));
        self
    }

    /// Adds the listeners to readiness (the running gateway's admin listener).
    pub fn with_listeners(mut self, listeners: Arc<ListenerReadiness>) -> Self {
        self.listeners = Some(listeners);
        self
    }

    /// Ready: every listener accepts connections in this process, the store
    /// answers and at least one upstream passes its health check.
    async fn readiness(&self) -> Reply {
        let store_ok = match self.operator.store().health().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "readiness: store check failed");
                false
            }
        };
        let upstreams: Vec<(String, bool)> = match &self.operations {
            Some((_, live)) => {
                live.load().upstreams.health().into_iter().map(|(a, ok)| (a.to_string(), ok)).collect()
            }
            None => Vec::new(),
        };
        let listeners: BTreeMap<String, String> = self.listeners.as_ref().map_or_else(BTreeMap::new, |l| {
            l.states()
                .into_iter()
                .map(|(addr, ok)| {
                    (addr.to_string(), if ok { "accepting" } else { "not_accepting" }.to_owned())
                })
                .collect()
        });
        let listening = self.listeners.as_ref().is_none_or(|l| l.all_accepting());
        let ready = listening && store_ok && upstreams.iter().any(|(_, ok)| *ok);
        let upstreams: BTreeMap<String, String> = upstreams
            .into_iter()
            .map(|(addr, ok)| (addr, if ok { "healthy" } else { "unhealthy" }.to_owned()))
            .collect();
        let body = Readiness {
            status: if ready { "ready" } else { "not_ready" }.to_owned(),
            store: if store_ok { "ok" } else { "failing" }.to_owned(),
            upstreams,
            listeners,
        };
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        Reply::json(status, &body)
    }

    /// `/metrics`, with the store's gauges brought up to date first.
    async fn metrics(&self, metrics: &Metrics) -> Reply {
        let store = self.operator.store();
        if let Ok(count) = store.revoked_count().await {
            metrics.revocation_entries.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        metrics.store_up.set(i64::from(store.health().await.is_ok()));
        Reply {
            status: StatusCode::OK,
            body: metrics.render(),
            headers: vec![(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT.to_owned())],
            error_code: None,
        }
    }

    fn authorised(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let presented = bearer_token(headers)?.ok_or(ApiError::MissingToken)?;
        let Some(expected) = self.admin_token.as_ref().map(Secret::expose) else {
            return Err(ApiError::InvalidToken);
        };
        if presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::InvalidToken)
        }
    }

    async fn respond(&self, session: &mut ServerSession) -> Reply {
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_owned();
        let query = header.uri.query().map(str::to_owned);
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => {
                return Reply::json(StatusCode::OK, &Health { status: "ok".into() });
            }
            (&Method::GET, "/readyz") => return self.readiness().await,
            (&Method::GET, path) if self.openapi.as_ref().is_some_and(|(at, _)| at == path) => {
                if let Some((_, document)) = &self.openapi {
                    return Reply {
                        status: StatusCode::OK,
                        body: document.clone(),
                        headers: vec![(http::header::CONTENT_TYPE, "application/json".to_owned())],
                        error_code: None,
                    };
                }
            }
            (&Method::GET, "/metrics") => {
                if let Some((metrics, _)) = &self.operations {
                    return self.metrics(metrics).await;
                }
            }
            _ => {}
        }
        if let Err(e) = self.authorised(&session.req_header().headers) {
            return Reply::error(&e);
        }
        let body = match read_body(session, MAX_ADMIN_BODY, ADMIN_BODY_TIMEOUT).await {
            Ok(body) => body,
            Err(e) => return Reply::error(&e),
        };
        match Request::parse(&method, &path, query.as_deref(), &body) {
            Ok(request) => self.answer(request).await,
            Err(e) => Reply::error(&e),
        }
    }

    /// Runs the operation a request names.
    async fn answer(&self, request: Request) -> Reply {
        match request {
            Request::ListUsers(op) => self.run(op).await,
            Request::FindUser(op) => self.run(op).await,
            Request::CreateUser(op) => self.run(op).await,
            Request::ShowUser(op) => self.run(op).await,
            Request::UpdateUser(op) => self.run(op).await,
            Request::DeleteUser(op) => self.run(op).await,
            Request::RevokeUserTokens(op) => self.run(op).await,
            Request::RevokeToken(op) => self.run(op).await,
            Request::Stats(op) => self.run(op).await,
            Request::ListRoles(op) => self.run(op).await,
            Request::ChangeRole(op) => self.run(op).await,
        }
    }

    async fn run<O: Operation>(&self, op: O) -> Reply {
        match op.run(&self.operator).await {
            Ok(answer) => Reply::json(O::STATUS, &answer),
            Err(e) => Reply::error(&e),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let reply = self.respond(session).await;
        let mut builder = Response::builder()
            .status(reply.status)
            .header(http::header::CONTENT_LENGTH, reply.body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        if !reply.headers.iter().any(|(name, _)| name == http::header::CONTENT_TYPE) {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &reply.headers {
            builder = builder.header(name, value);
        }
        builder.body(reply.body).unwrap_or_else(|_| Response::new(ApiError::Internal.body()))
    }
}

/// `GET /healthz` (unauthenticated).
#[derive(Serialize)]
pub struct Health {
    pub status: String,
}

/// `GET /readyz` (unauthenticated): 200 when ready, else 503.
#[derive(Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok` or `failing`.
    pub store: String,
    /// Each upstream address: `healthy` or `unhealthy`.
    pub upstreams: BTreeMap<String, String>,
    /// Each listen address (proxy, TLS, admin): `accepting` once this
    /// process has accepted a connection on it, else `not_accepting`.
    pub listeners: BTreeMap<String, String>,
}
