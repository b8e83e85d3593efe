//! Security headers on every response.
//!
//! Pages set their own Content-Security-Policy (with the nonce of their inline scripts) and
//! `Cache-Control: no-store` while they render (`app::shell`). This layer adds what every
//! response gets: `X-Content-Type-Options: nosniff` (a JSON error or an image download is never
//! run as a script or page), `Referrer-Policy: same-origin` (image ids in URLs stay here; the
//! CSRF check still sees same-origin referrers), `X-Frame-Options: DENY` (older browsers'
//! `frame-ancestors`), for responses without a policy of their own (API answers, static
//! files, downloads) a CSP that allows nothing to run or load, `Cache-Control: no-store` on
//! everything but the static assets (API answers and downloads are private too), and behind
//! HTTPS (`secure_cookies`) `Strict-Transport-Security`.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy of responses that are not pages: nothing runs, nothing loads, nothing frames.
pub const INERT_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Paths whose answers are the same for everyone (the built bundle, the stylesheet, public files):
/// caches may keep them. Everything else may show private data and is `no-store` unless the
/// handler says otherwise.
fn is_static_asset(path: &str) -> bool {
    path.starts_with("/pkg/") || path == "/favicon.svg" || path == "/favicon.ico" || path == "/robots.txt"
}

/// Adds the headers described in the module documentation; with `secure_cookies` (Hangar is
/// behind HTTPS) also `Strict-Transport-Security`.
pub async fn security_headers(State(state): State<crate::AppState>, req: Request, next: Next) -> Response {
    let cacheable = is_static_asset(req.uri().path());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !cacheable && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.config.secure_cookies {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(INERT_CSP));
    }
    resp
}
