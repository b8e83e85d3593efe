//! Authentication and authorization as server functions see them.
//!
//! The server's middleware resolves who is calling (session cookie or `X-Auth-Token`) into an
//! [`accounts::Authn`] in the request's extensions. Every server function then calls [`require`]
//! (or [`signed_in`]) with a [`policy::Action`] before doing anything; a refusal sets the HTTP
//! status (401/403) and is recorded in the audit log when it concerns a privileged action.

use accounts::Authn;
use leptos::prelude::*;
use policy::{Action, Denial, Principal};

use crate::AppError;

/// Who is calling, as resolved by the server's middleware (anonymous if nothing was resolved).
pub fn authn() -> Authn {
    use_context::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Authn>().cloned()).unwrap_or_default()
}

/// Sets the response status for an error a server function is about to return. Only when the
/// request *is* a programmatic server-function call: a page that calls server functions while
/// rendering on the server answers 200 and shows the error (or a sign-in prompt) in its HTML, and
/// a plain HTML form post (no JavaScript) is redirected back with the error in the URL, which a
/// status of ours would overwrite.
pub fn fail<T>(err: AppError) -> Result<T, AppError> {
    let is_api_call = use_context::<http::request::Parts>().is_some_and(|p| {
        let form_post = p.headers.get(http::header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"));
        p.uri.path().starts_with("/api/") && !form_post
    });
    if let (true, Some(resp)) = (is_api_call, use_context::<leptos_axum::ResponseOptions>()) {
        resp.set_status(http::StatusCode::from_u16(err.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR));
    }
    Err(err)
}

/// Authorizes `action` for the caller and returns the principal, or fails with 401/403.
pub fn require(action: &Action<'_>) -> Result<(Authn, Principal), AppError> {
    let authn = authn();
    match policy::authorize(authn.principal.as_ref(), action) {
        Ok(()) => match authn.principal.clone() {
            Some(p) => Ok((authn, p)),
            None => fail(AppError::Unauthorized { message: Denial::NotSignedIn.to_string() }),
        },
        Err(Denial::NotSignedIn) => fail(AppError::Unauthorized { message: Denial::NotSignedIn.to_string() }),
        Err(Denial::Forbidden(message)) => {
            if action.is_privileged() {
                tracing::warn!(user = ?authn.principal.as_ref().map(|p| &p.username), ?action, "privileged action denied");
                if let Ok(ctx) = crate::api::context::server_context() {
                    leptos::task::spawn(write_denial(ctx.db, authn.clone(), action, &message));
                }
            }
            fail(AppError::Forbidden { message })
        }
    }
}

pub use imageops::{action_name, write_denial};

/// Requires any signed-in caller.
pub fn signed_in() -> Result<(Authn, Principal), AppError> {
    require(&Action::ListImages)
}

/// Records a privileged action in the audit log. A failure to write the log fails the action's
/// response (the change is already made, so the error says so) rather than going unrecorded.
pub async fn audit(
    db: &records::Db,
    authn: &Authn,
    action: &str,
    target_type: &str,
    target_id: &str,
    detail: &str,
) -> Result<(), AppError> {
    imageops::audit(db, authn, action, target_type, target_id, detail).await.map_err(|e| AppError::internal("write audit log", &e))
}

/// Maps an accounts-layer error to what the user sees.
pub fn account_error(err: accounts::AccountError) -> AppError {
    use accounts::AccountError as E;
    match err {
        E::BadCredentials | E::Disabled => AppError::Unauthorized { message: err.to_string() },
        E::Throttled { .. } => AppError::TooManyRequests { message: err.to_string() },
        E::Invalid(_) => AppError::BadRequest { message: err.to_string() },
        E::Taken(_) => AppError::Conflict { message: err.to_string() },
        E::NotFound(_) => AppError::NotFound { message: err.to_string() },
        E::Db(e) => AppError::internal("accounts database", &e),
        E::Hash(_) => AppError::internal("password hashing", &err),
    }
}

/// Maps a records error, turning unique violations into a 409 naming `what`.
pub fn db_error(what: &str, err: records::DbError) -> AppError {
    if err.is_unique_violation() {
        AppError::Conflict { message: format!("{what} is already taken.") }
    } else {
        AppError::internal(what, &err)
    }
}

/// Runs a server function body, setting the HTTP status from the error it returns (so clients
/// and tests see 400/401/403/404/409/429 rather than a blanket 500).
pub async fn answer<T>(body: impl std::future::Future<Output = Result<T, AppError>>) -> Result<T, AppError> {
    match body.await {
        Ok(v) => Ok(v),
        Err(e) => fail(e),
    }
}
