//! WebSocket tunnels: the one upgrade that is forwarded, judged as the
//! request that asked for it, and closed when the token that opened it
//! expires.

use std::time::{Duration, Instant};

use http::header::{CONNECTION, UPGRADE};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::{Live, RequestCtx};
use crate::auth::Identity;
use crate::clock::now_unix;

/// Whether a WebSocket upgrade may come from the page that asked for it.
///
/// Browsers don't apply CORS to WebSockets: any site can open one to the
/// gateway, and the browser sends the user's cookies with it (cross-site
/// WebSocket hijacking). So a browser's upgrade (one with an `Origin`) passes
/// only from the gateway's own origin (the `Origin`'s scheme is this
/// connection's and its host the request's `Host`) or from an origin the
/// route's CORS settings list with credentials allowed. Clients that aren't
/// browsers send no `Origin` and are judged by their token alone.
pub(super) fn origin_allowed(request: &http::HeaderMap, cors: Option<&crate::cors::Cors>, tls: bool) -> bool {
    let mut origins = request.get_all(http::header::ORIGIN).iter();
    let Some(origin) = origins.next() else { return true };
    if origins.next().is_some() {
        return false;
    }
    if cors.is_some_and(|cors| cors.admits_with_credentials(origin)) {
        return true;
    }
    let host = request.get(http::header::HOST).map(http::HeaderValue::as_bytes);
    let own_scheme = if tls { "https" } else { "http" };
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(own_scheme))
        .map(|(_, rest)| rest.as_bytes());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Puts back the upgrade headers canonicalising removed, for a route that
/// allows WebSockets, and sets when the tunnel must close: at
/// `websocket_max_duration`, or sooner when the authorising token expires.
pub(super) fn open(
    session: &mut Session,
    ctx: &mut RequestCtx,
    live: &Live,
    identity: Option<&Identity>,
) -> Result<()> {
    let request = session.req_header_mut();
    request.insert_header(UPGRADE, "websocket")?;
    request.insert_header(CONNECTION, "Upgrade")?;
    let mut lifetime = live.upstream_settings.websocket_max_duration;
    if let Some(expires) =
        identity.map(|i| i.expires_at).filter(|_| live.upstream_settings.websocket_close_at_expiry)
    {
        lifetime = lifetime.min(Duration::from_secs(expires.saturating_sub(now_unix())));
    }
    ctx.tunnel_deadline = Some(Instant::now() + lifetime);
    Ok(())
}

/// A WebSocket tunnel lives until its deadline (the authorising token's
/// expiry, or `websocket_max_duration`) and not a moment longer. pingora has no
/// total timeout for a tunnel, so every pass through its loop (each chunk,
/// either way) checks the deadline and shortens the client-side read timeout
/// to what is left: an idle tunnel then times out at the deadline too.
pub(super) fn close_at_deadline(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let Some(deadline) = ctx.tunnel_deadline.filter(|_| ctx.tunnel_open) else {
        return Ok(());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Error::e_explain(ErrorType::ReadTimedout, "the token that opened this WebSocket has expired");
    }
    session.set_read_timeout(Some(left));
    Ok(())
}
