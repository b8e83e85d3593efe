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

use std::net::{IpAddr, SocketAddr};

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

/// An IP address or a CIDR range (`10.0.0.0/8`, `fd00::/8`), for `trusted_proxies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpRange {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().map_err(|_| ())?, Some(p.parse::<u8>().map_err(|_| ())?)),
            None => (s.parse::<IpAddr>().map_err(|_| ())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(());
        }
        Ok(IpRange { net: addr, prefix })
    }
}

impl IpRange {
    /// Whether `ip` lies in this range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits): (u128, u128, u32) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n).into(), u32::from(i).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        host_bits >= bits || (a >> host_bits) == (b >> host_bits)
    }
}

/// The client's address: the connection's peer, or, when the peer is one of `trusted` proxies,
/// the last address in `X-Forwarded-For` that is not a trusted proxy itself (each proxy appends
/// the address it saw, so entries left of that one may be forged by the client).
pub fn client_addr(peer: Option<IpAddr>, forwarded_for: &[&str], trusted: &[IpRange]) -> String {
    let Some(peer) = peer else { return "unknown".to_owned() };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return peer.to_string();
    }
    let hops = forwarded_for.iter().flat_map(|h| h.split(',')).map(str::trim).filter(|s| !s.is_empty());
    let mut client = peer;
    for hop in hops.collect::<Vec<_>>().into_iter().rev() {
        // An address may come with a port (`1.2.3.4:5678`, `[::1]:5678`).
        let parsed = hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()));
        match parsed {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip.to_string(),
            // Garbage in the chain: stop at the last address a trusted proxy vouched for.
            Err(_) => break,
        }
    }
    client.to_string()
}

fn remote_addr(req: &Request, trusted: &[IpRange]) -> String {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip());
    if trusted.is_empty() {
        return peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    }
    // Read lossily: a client's own junk in the header (which a proxy appends to) must not make
    // the whole header, and the address the proxy added, disappear.
    let forwarded: Vec<String> =
        req.headers().get_all("x-forwarded-for").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    let forwarded: Vec<&str> = forwarded.iter().map(String::as_str).collect();
    client_addr(peer, &forwarded, trusted)
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
    let remote_addr = remote_addr(&req, &state.config.trusted_proxies);
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

/// A sign-in request carries a username and a password (and where to go next): at most this
/// many bytes. Anything larger is refused unread (a megabyte "username" must cost nothing).
pub const MAX_SIGN_IN_BODY: u64 = 16 * 1024;

/// Refuses a sign-in request over [`MAX_SIGN_IN_BODY`] (or of unknown length) with 413.
pub async fn bound_sign_in(req: Request, next: Next) -> Response {
    if req.uri().path() == "/api/sign_in" && *req.method() == Method::POST {
        use axum::body::HttpBody as _;
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        let len = declared.or_else(|| req.body().size_hint().exact());
        if len.is_none_or(|n| n > MAX_SIGN_IN_BODY) {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "A sign-in is a username and a password; this request is larger than that (or says no length).",
            );
        }
    }
    next.run(req).await
}

/// Refuses cross-site state-changing requests that ride on the session cookie.
pub async fn csrf(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.headers().contains_key(AUTH_TOKEN_HEADER) {
        return next.run(req).await;
    }
    // The API surfaces (tus, Glance) with no session cookie carry no credentials a foreign page
    // could borrow: let them through, to be answered 401 by their handlers rather than a
    // confusing "cross-site" 403. (Pages' forms keep the check even without a cookie: a forged
    // sign-in would sign the victim into the attacker's account.)
    let path = req.uri().path();
    let api = path == "/uploads" || path.starts_with("/uploads/") || path == "/image" || path.starts_with("/image/");
    let has_session = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .any(|c| c.split(';').any(|kv| kv.trim_start().starts_with("hangar_session=")));
    if api && !has_session {
        return next.run(req).await;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin =
        req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).filter(|o| *o != "null").map(str::to_owned).or_else(|| {
            req.headers()
                .get(header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(|r| r.split('/').take(3).collect::<Vec<_>>().join("/").into())
        });
    let same_site = !host.is_empty() && origin.as_deref().is_some_and(|o| o == format!("http://{host}") || o == format!("https://{host}"));
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

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpRange> = ["10.0.0.0/8", "192.168.1.5"].iter().map(|s| s.parse().unwrap()).collect();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A client talking to us directly cannot claim another address.
        assert_eq!(client_addr(ip("203.0.113.9"), &["1.2.3.4"], &trusted), "203.0.113.9");
        // Behind a trusted proxy: the address it appended.
        assert_eq!(client_addr(ip("10.1.2.3"), &["198.51.100.7"], &trusted), "198.51.100.7");
        // A forged left-most entry is ignored: the last untrusted hop counts.
        assert_eq!(client_addr(ip("10.1.2.3"), &["1.2.3.4, 198.51.100.7, 192.168.1.5"], &trusted), "198.51.100.7");
        // Several headers are one list.
        assert_eq!(client_addr(ip("10.1.2.3"), &["1.2.3.4", "198.51.100.8"], &trusted), "198.51.100.8");
        // No header, or garbage: the proxy itself.
        assert_eq!(client_addr(ip("10.1.2.3"), &[], &trusted), "10.1.2.3");
        assert_eq!(client_addr(ip("10.1.2.3"), &["not-an-ip"], &trusted), "10.1.2.3");
        // Junk the client put first does not hide what the proxy appended; ports are dropped.
        assert_eq!(client_addr(ip("10.1.2.3"), &["\u{e9}, 198.51.100.7"], &trusted), "198.51.100.7");
        assert_eq!(client_addr(ip("10.1.2.3"), &["198.51.100.7:4711"], &trusted), "198.51.100.7");
        assert_eq!(client_addr(ip("10.1.2.3"), &["[2001:db8::1]:4711"], &trusted), "2001:db8::1");
        // Nothing trusted: the header is ignored.
        assert_eq!(client_addr(ip("10.1.2.3"), &["198.51.100.7"], &[]), "10.1.2.3");
        assert_eq!(client_addr(ip("::ffff:10.0.0.1"), &["198.51.100.7"], &trusted), "198.51.100.7", "IPv4-mapped peer");
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("fd00::/8".parse::<IpRange>().unwrap().contains("fd12::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<IpRange>().unwrap().contains("8.8.8.8".parse().unwrap()));
    }
}
