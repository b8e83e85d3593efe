//! Personal API tokens, for the CLI and API clients (`X-Auth-Token`).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub project: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
    /// When the token stops working by itself (None: when revoked).
    pub expires_at: Option<String>,
}

/// A token just created: `secret` is shown this once and never again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub secret: String,
    pub token: TokenInfo,
}

#[cfg(feature = "ssr")]
fn info(t: records::TokenRow) -> TokenInfo {
    TokenInfo {
        id: t.id,
        name: t.name,
        project: t.project_name,
        created_at: t.created_at,
        last_used_at: t.last_used_at,
        revoked: t.revoked_at.is_some(),
        expires_at: t.expires_at,
    }
}

/// The caller's tokens, newest first.
#[server(prefix = "/api", endpoint = "list_tokens")]
pub async fn list_tokens() -> Result<Vec<TokenInfo>, AppError> {
    crate::auth::answer(async move {
        // A token may not list its siblings (policy: Action::needs_session).
        let (_, me) = crate::auth::require(&policy::Action::ViewOwnTokens)?;
        let ctx = crate::api::context::server_context()?;
        let rows = ctx.db.tokens_of_user(&me.user_id).await.map_err(|e| AppError::internal("list tokens", &e))?;
        Ok(rows.into_iter().map(info).collect())
    })
    .await
}

/// Creates a token scoped to `project_id` (default: the current project) that lasts
/// `expires_in_days` days (empty: until revoked).
#[server(prefix = "/api", endpoint = "create_token")]
pub async fn create_token(name: String, project_id: Option<String>, expires_in_days: Option<String>) -> Result<NewToken, AppError> {
    crate::auth::answer(async move {
        // Only a signed-in session mints tokens: a token that could would outlive its revocation.
        let (authn, me) = crate::auth::require(&policy::Action::ViewOwnTokens)?;
        let days = match expires_in_days.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => Some(d.parse::<u32>().map_err(|_| AppError::bad_request(format!("'{d}' is not a number of days.")))?),
        };
        let project = project_id
            .filter(|p| !p.is_empty())
            .or_else(|| me.scope.as_ref().map(|s| s.project_id.clone()))
            .ok_or_else(|| AppError::bad_request("Choose a project for the token; you have no role in any project yet."))?;
        crate::auth::require(&policy::Action::ManageOwnTokens { project: &project })?;
        let ctx = crate::api::context::server_context()?;
        let user = ctx
            .db
            .user_by_id(&me.user_id)
            .await
            .map_err(|e| AppError::internal("load user", &e))?
            .ok_or_else(|| AppError::Unauthorized { message: "Sign in again.".into() })?;
        let issued = accounts::issue_expiring_token(&ctx.db, &user, &project, &name, days).await.map_err(crate::auth::account_error)?;
        let lasts = days.map_or_else(|| "until revoked".to_owned(), |d| format!("{d} days"));
        crate::auth::audit(
            &ctx.db,
            &authn,
            "token.create",
            "token",
            &issued.row.id,
            &format!("project {}, {lasts}", issued.row.project_name),
        )
        .await?;
        Ok(NewToken { secret: issued.secret, token: info(issued.row) })
    })
    .await
}

/// Revokes one of the caller's tokens.
#[server(prefix = "/api", endpoint = "revoke_token")]
pub async fn revoke_token(token_id: String) -> Result<(), AppError> {
    crate::auth::answer(async move {
        let (authn, me) = crate::auth::require(&policy::Action::ViewOwnTokens)?;
        let ctx = crate::api::context::server_context()?;
        if !ctx.db.revoke_token(&me.user_id, &token_id).await.map_err(|e| AppError::internal("revoke token", &e))? {
            return Err(AppError::NotFound { message: "No such token, or it is already revoked.".into() });
        }
        crate::auth::audit(&ctx.db, &authn, "token.revoke", "token", &token_id, "").await
    })
    .await
}
