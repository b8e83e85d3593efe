//! Security headers on every response.
//!
//! Pages set their own Content-Security-Policy (with the nonce of their inline scripts) and
//! `Cache-Control: no-store` while they render (`app::shell`). This layer adds what every
//! response gets: `X-Content-Type-Options: nosniff` (a JSON error or an image download is never
//! run as a script or page), `Referrer-Policy: same-origin` (image ids in URLs stay here; the
//! CSRF check still sees same-origin referrers), `X-Frame-Options: DENY` (older browsers'
//! `frame-ancestors`), and for responses without a policy of their own (API answers, static
//! files, downloads) a CSP that allows nothing to run or load.

use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy of responses that are not pages: nothing runs, nothing loads, nothing frames.
pub const INERT_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Adds the headers described in the module documentation.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(INERT_CSP));
    }
    resp
}
