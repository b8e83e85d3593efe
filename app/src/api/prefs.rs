//! Per-browser preferences kept in the session (which lives in the database, so they survive a
//! server restart).

use leptos::prelude::*;

use crate::AppError;

#[cfg(feature = "ssr")]
const WELCOME_DISMISSED: &str = "welcome_dismissed";

#[cfg(feature = "ssr")]
async fn session() -> Result<tower_sessions::Session, AppError> {
    Ok(leptos_axum::extract::<tower_sessions::Session>().await?)
}

/// Whether this browser has dismissed the welcome panel on the Images page.
#[server(prefix = "/api", endpoint = "welcome_dismissed")]
pub async fn welcome_dismissed() -> Result<bool, AppError> {
    let session = session().await?;
    session.get::<bool>(WELCOME_DISMISSED).await.map(|v| v.unwrap_or(false)).map_err(|e| AppError::internal("read session", &e))
}

/// Hides the welcome panel for this browser. Works as a plain form post without JavaScript.
#[server(prefix = "/api", endpoint = "dismiss_welcome")]
pub async fn dismiss_welcome() -> Result<(), AppError> {
    let session = session().await?;
    session.insert(WELCOME_DISMISSED, true).await.map_err(|e| AppError::internal("write session", &e))
}
