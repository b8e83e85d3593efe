//! The Glance v2-compatible Image API, mounted at `/image` (as devstack does), so `glance` and
//! `openstack image` work unmodified with `--os-image-url http://HOST:PORT/image`.

use axum::Router;

use crate::AppState;

/// The API's routes (nested under `/image` by the caller).
pub fn router(_state: AppState) -> Router {
    Router::new()
}
