//! A total deadline for each request's header section.
//!
//! pingora times each read of a request header separately (60 s for a new
//! connection, the keep-alive timeout after that), so a client that trickles
//! one header byte every few seconds holds a connection, and a worker's
//! attention, for as long as it likes. No `ProxyHttp` phase runs before the
//! header is parsed, so the deadline sits one layer lower: this wrapper around
//! pingora's HTTP application reads each HTTP/1 header section itself, with an
//! idle wait for its first byte and then `server.header_timeout` for the whole
//! section, and hands the bytes to pingora as if they had just arrived
//! (pingora's pipelined-prefix mechanism). A client that misses the deadline
//! gets a JSON 408 and the connection closes; one whose header outgrows the
//! limit gets a JSON 431.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long a new connection may wait before its first request starts, as
/// pingora itself allows.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(60);

/// Room for the request line on top of `limits.max_header_bytes`, which
/// counts header fields only.
const REQUEST_LINE_ALLOWANCE: usize = 16 * 1024;

pub struct HeaderDeadline<A> {
    inner: Arc<A>,
    deadline: Duration,
    max_header_bytes: usize,
    metrics: Arc<Metrics>,
}

impl<A> HeaderDeadline<A> {
    pub fn new(inner: A, deadline: Duration, max_header_bytes: usize, metrics: Arc<Metrics>) -> Self {
        HeaderDeadline { inner: Arc::new(inner), deadline, max_header_bytes, metrics }
    }
}

/// What became of reading one header section.
enum Head {
    /// A complete header section (and whatever followed it in the same reads).
    Complete(BytesMut),
    /// The client closed, or stayed idle, before sending anything: nothing to answer.
    Gone,
    TooSlow,
    TooLarge,
}

#[async_trait]
impl<A> HttpServerApp for HeaderDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Keep-alive state carries over to the session rebuilt below. (It
        // also counts down `keepalive_request_limit` once more, which the
        // gateway leaves unset.)
        let settings = HttpPersistentSettings::for_session(&session);
        let idle = session.get_keepalive().map_or(FIRST_REQUEST_WAIT, Duration::from_secs);
        let mut stream = match session {
            ServerSession::H1(h1) => h1.into_inner(),
            other => return self.inner.process_new_http(other, shutdown).await,
        };
        let limit = self.max_header_bytes + REQUEST_LINE_ALLOWANCE;
        let refusal = match read_head(&mut stream, idle, self.deadline, limit, shutdown.clone()).await {
            Head::Complete(head) => {
                let mut session = ServerSession::new_http1(stream);
                settings.apply_to_session(&mut session);
                session.set_pipelined_prefix(head);
                return self.inner.process_new_http(session, shutdown).await;
            }
            Head::Gone => return None,
            Head::TooSlow => ApiError::RequestTimeout,
            Head::TooLarge => ApiError::HeadersTooLarge { limit: self.max_header_bytes },
        };
        tracing::info!(code = refusal.code(), "request header refused before parsing");
        let mut status = itoa::Buffer::new();
        self.metrics
            .requests
            .with_label_values(&["(none)", "none", "refused", status.format(refusal.status().as_u16())])
            .inc();
        refuse(&mut stream, &refusal).await;
        None
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// Reads until the end of a header section (a blank line), waiting at most
/// `idle` for the first byte and `deadline` from then on for the rest. A
/// connection still idle when shutdown begins is closed, as pingora does, so it
/// can't hold a draining gateway open.
async fn read_head(
    stream: &mut Stream,
    idle: Duration,
    deadline: Duration,
    limit: usize,
    mut shutdown: ShutdownWatch,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
    let draining = *shutdown.borrow();
    let first = tokio::select! {
        first = tokio::time::timeout(idle, stream.read_buf(&mut buf)) => first,
        _ = shutdown.wait_for(|stopping| *stopping), if !draining => return Head::Gone,
    };
    match first {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Head::Gone,
    }
    let until = tokio::time::Instant::now() + deadline;
    // Bytes already searched for the blank line (less the 3 it may straddle),
    // so a head sent a byte at a time costs linear, not quadratic, work.
    let mut searched: usize = 0;
    loop {
        // Empty lines before the request line don't count (httparse skips
        // them): the search starts where the request line does.
        let start = buf.iter().position(|&b| b != b'\r' && b != b'\n');
        if let Some(start) = start {
            if blank_line(&buf[start.max(searched.saturating_sub(3))..]) {
                return Head::Complete(buf);
            }
        }
        searched = buf.len();
        if buf.len() > limit {
            return Head::TooLarge;
        }
        match tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Head::Gone,
            Err(_) => return Head::TooSlow,
        }
    }
}

/// A blank line ends the header section: a line feed followed by another, or
/// by CRLF (httparse takes CRLF and bare LF line ends alike). Searched with
/// `memchr`: a header section has a few dozen line feeds among hundreds of bytes.
fn blank_line(buf: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', buf).any(|i| matches!(&buf[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// Answers a refusal on the raw connection and closes it.
async fn refuse(stream: &mut Stream, error: &ApiError) {
    let body = error.body();
    let status = error.status();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::blank_line;

    #[test]
    fn a_blank_line_ends_the_header_section_whatever_the_line_ends() {
        assert!(blank_line(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(blank_line(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(blank_line(b"GET / HTTP/1.1\nHost: a\n\r\nbody"));
        assert!(!blank_line(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!blank_line(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!blank_line(b"GET / HTTP/1.1\r\nHost: a\r\r\n"));
        assert!(!blank_line(b""));
    }
}
