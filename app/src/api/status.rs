//! Server status, shown on demand in the footer.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// What the footer's "Check server" control shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub database: String,
    /// Images the caller can see; None for anonymous callers.
    pub images: Option<u64>,
    pub uptime_seconds: u64,
}

/// Checks the database and reports the server's version, image count and uptime.
#[server(prefix = "/api", endpoint = "server_status")]
pub async fn server_status() -> Result<StatusReport, AppError> {
    let ctx = crate::api::context::server_context()?;
    ctx.db.ping().await.map_err(|e| AppError::internal("ping database", &e))?;
    // Anonymous callers learn that the server is up, not what it holds.
    let principal = crate::auth::authn().principal;
    let visible = principal.as_ref().map(|p| match &p.scope {
        _ if p.is_admin => records::Visible::All,
        Some(scope) => records::Visible::Project(&scope.project_id),
        None => records::Visible::PublicOnly,
    });
    let images = match visible {
        Some(v) => Some(ctx.db.count_images(v).await.map_err(|e| AppError::internal("count images", &e))?),
        None => None,
    };
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        database: "SQLite".to_owned(),
        images,
        uptime_seconds: ctx.started.elapsed().as_secs(),
    })
}
