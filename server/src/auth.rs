//! Request authentication and cross-site request protection, as axum middleware.
//!
//! [`authenticate`] resolves who is calling once per request — from `X-Auth-Token` (API clients)
//! or the session cookie (browsers) — into an [`accounts::Authn`] in the request's extensions,
//! where server functions and API routes find it. Authorization is not decided here: every
//! handler asks the `policy` crate for its own action.
//!
//! [`csrf`] refuses state-changing browser requests that come from another site: a request that
//! carries the session cookie and is not GET/HEAD/OPTIONS must name this server in its `Origin`
//! (or, failing that, `Referer`) header. API clients authenticate with a header a foreign page
//! cannot set, so token requests are exempt. This is OWASP's "verifying origin with standard
//! headers" defence, on top of the `SameSite=Lax` session cookie.

use std::net::SocketAddr;

use accounts::{session_keys, Authn};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower_sessions::Session;

use crate::AppState;

/// The header API clients authenticate with (as Glance's clients do with Keystone tokens).
pub const AUTH_TOKEN_HEADER: &str = "x-auth-token";

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(serde_json::json!({ "code": code, "message": message }))).into_response()
}

fn remote_addr(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_owned(), |ci| ci.0.ip().to_string())
}

/// An error in the Glance API's shape (`{"error": {"code", "title", "message"}}`): glanceclient
/// reads `message` from every top-level value and crashes on the flat form.
fn glance_error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    (status, Json(serde_json::json!({ "error": { "code": status.as_u16(), "title": title, "message": message } }))).into_response()
}

/// Resolves the caller into an [`Authn`]; an invalid token is refused with 401 at once.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let glance = req.uri().path() == "/image" || req.uri().path().starts_with("/image/");
    let error = |status: StatusCode, code: &str, message: &str| {
        if glance {
            glance_error(status, message)
        } else {
            error(status, code, message)
        }
    };
    let remote_addr = remote_addr(&req);
    let token = req.headers().get(AUTH_TOKEN_HEADER).map(|v| v.to_str().unwrap_or("").to_owned());
    let authn = if let Some(token) = token {
        match accounts::principal_for_token(&state.db, token.trim()).await {
            Ok(Some(principal)) => {
                let scopes = principal.scope.clone().into_iter().collect();
                Authn { principal: Some(principal), scopes, remote_addr, via_token: true }
            }
            Ok(None) => return error(StatusCode::UNAUTHORIZED, "unauthorized", "The authentication token is invalid, revoked or expired."),
            Err(err) => {
                tracing::error!(error = %err, "token lookup failed");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Authentication is unavailable; try again.");
            }
        }
    } else if let Some(session) = req.extensions().get::<Session>().cloned() {
        match session_principal(&state, &session).await {
            Ok(Some((principal, scopes))) => Authn { principal: Some(principal), scopes, remote_addr, via_token: false },
            Ok(None) => Authn { remote_addr, ..Authn::default() },
            Err(err) => {
                tracing::error!(error = %err, "session lookup failed");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Authentication is unavailable; try again.");
            }
        }
    } else {
        Authn { remote_addr, ..Authn::default() }
    };
    req.extensions_mut().insert(authn);
    next.run(req).await
}

#[derive(Debug, thiserror::Error)]
enum SessionAuthError {
    #[error("session store: {0}")]
    Session(#[from] tower_sessions::session::Error),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
}

/// The session's user, if it is still valid; an invalid one (user disabled, password reset,
/// deleted) is signed out on the spot.
async fn session_principal(
    state: &AppState,
    session: &Session,
) -> Result<Option<(policy::Principal, Vec<policy::Scope>)>, SessionAuthError> {
    let Some(user_id) = session.get::<String>(session_keys::USER_ID).await? else { return Ok(None) };
    let epoch = session.get::<i64>(session_keys::EPOCH).await?.unwrap_or(-1);
    let project = session.get::<String>(session_keys::PROJECT).await?;
    let found = accounts::principal_for_session(&state.db, &user_id, epoch, project.as_deref()).await?;
    if found.is_none() {
        session.flush().await?;
    }
    Ok(found)
}

/// Refuses cross-site state-changing requests that ride on the session cookie.
pub async fn csrf(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.headers().contains_key(AUTH_TOKEN_HEADER) {
        return next.run(req).await;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| *o != "null")
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get(header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(|r| r.split('/').take(3).collect::<Vec<_>>().join("/").into())
        });
    let same_site = !host.is_empty()
        && origin.as_deref().is_some_and(|o| o == format!("http://{host}") || o == format!("https://{host}"));
    if same_site {
        next.run(req).await
    } else {
        tracing::warn!(method = %req.method(), uri = %req.uri(), ?origin, host, "cross-site request refused");
        error(
            StatusCode::FORBIDDEN,
            "cross-site-request",
            "This request did not come from a Hangar page, so it was refused to protect your account. Reload the page and try again.",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    async fn status(req: axum::http::Request<Body>) -> StatusCode {
        let app = Router::new().route("/x", post(|| async { "ok" }).get(|| async { "ok" })).layer(axum::middleware::from_fn(csrf));
        app.oneshot(req).await.unwrap().status()
    }

    fn post_with(headers: &[(&str, &str)]) -> axum::http::Request<Body> {
        let mut b = axum::http::Request::post("/x").header(header::HOST, "hangar.example:3000");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn same_origin_posts_pass_and_cross_site_posts_are_refused() {
        assert_eq!(status(post_with(&[("origin", "http://hangar.example:3000")])).await, StatusCode::OK);
        assert_eq!(status(post_with(&[("referer", "https://hangar.example:3000/images?x=1")])).await, StatusCode::OK);
        assert_eq!(status(post_with(&[("origin", "http://evil.example")])).await, StatusCode::FORBIDDEN);
        assert_eq!(status(post_with(&[("origin", "http://hangar.example:3000.evil.example")])).await, StatusCode::FORBIDDEN);
        assert_eq!(status(post_with(&[("origin", "null")])).await, StatusCode::FORBIDDEN);
        assert_eq!(status(post_with(&[])).await, StatusCode::FORBIDDEN, "no Origin and no Referer");
        assert_eq!(status(post_with(&[("x-auth-token", "hgr_x")])).await, StatusCode::OK, "API clients are exempt");
        let get = axum::http::Request::get("/x").body(Body::empty()).unwrap();
        assert_eq!(status(get).await, StatusCode::OK);
    }
}
