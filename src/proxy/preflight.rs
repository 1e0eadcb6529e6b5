//! CORS preflights, answered by the gateway (see [`crate::cors`]): a browser
//! sends them without a token, so they can't go through the route's policy,
//! and they are judged by the route the *real* request would match, its
//! requested method on the canonical path, so a preflight can't borrow a
//! weaker route's answer.

use pingora::proxy::Session;
use pingora::Result;

use super::{Gateway, Live, Outcome, PolicyLabel, RequestCtx};
use crate::cors;
use crate::error::ApiError;
use crate::http_io::write_no_content;

impl Gateway {
    /// Answers a preflight (already told apart by [`cors::is_preflight`]) on
    /// a route with CORS: 204 with the allowing headers, or 403
    /// `cors_refused` without any. `None` when the route has no CORS: the
    /// `OPTIONS` request is then an ordinary one, judged by its own route.
    pub(super) async fn preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        live: &Live,
        path: &str,
    ) -> Result<Option<bool>> {
        let requested = match cors::requested_method(&session.req_header().headers) {
            Ok(method) => method,
            Err(refusal) => {
                return self.refuse(session, ctx, &ApiError::CorsRefused(refusal)).await.map(Some)
            }
        };
        let matched = live.routes.lookup(&requested, path);
        let Some(route_cors) = matched.route.and_then(|r| r.cors.as_ref()) else {
            return Ok(None);
        };
        ctx.route = matched.route_label();
        ctx.policy = PolicyLabel::Route(matched.rule.policy);
        match route_cors.preflight(&session.req_header().headers) {
            Ok(headers) => {
                ctx.outcome = Outcome::Preflight;
                write_no_content(session, &headers, &ctx.request_id).await?;
                Ok(Some(true))
            }
            Err(refusal) => self.refuse(session, ctx, &ApiError::CorsRefused(refusal)).await.map(Some),
        }
    }
}
