//! The error type that crosses the wire from server functions to the UI.
//!
//! Every layer has its own error enum; at the server-function boundary they are converted once
//! into [`AppError`], which carries a stable kebab-case `code` and a message a user can act on.
//! Internal failures never show their cause: the user gets a reference id, the log gets the chain.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// What a user sees when a server call fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum AppError {
    /// Something failed inside Hangar; the operator finds the details in the log under `reference`.
    #[error("Hangar hit an internal error (reference {reference}). Try again; if it persists, give the reference to your administrator.")]
    Internal { reference: String },
    /// The request was understood but is not acceptable; `message` says why and what to do.
    #[error("{message}")]
    BadRequest { message: String },
    /// The thing asked for does not exist (or the caller may not know it exists).
    #[error("{message}")]
    NotFound { message: String },
    /// The caller is not signed in (HTTP 401).
    #[error("{message}")]
    Unauthorized { message: String },
    /// The caller is signed in but may not do this (HTTP 403).
    #[error("{message}")]
    Forbidden { message: String },
    /// The request conflicts with the current state, e.g. a name that is taken (HTTP 409).
    #[error("{message}")]
    Conflict { message: String },
    /// A quota or size limit would be exceeded (HTTP 413, as the upload path answers).
    #[error("{message}")]
    QuotaExceeded { message: String },
    /// Too many attempts (HTTP 429).
    #[error("{message}")]
    TooManyRequests { message: String },
    /// The server's disk is full: the change was not made (HTTP 507, as the upload paths answer).
    #[error("{message}")]
    InsufficientStorage { message: String },
    /// The call never reached the server function or its answer could not be read (network, codec).
    #[error("Could not reach Hangar: {message}")]
    Transport { message: String },
}

impl AppError {
    /// The stable machine-readable code (also the serde tag).
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Internal { .. } => "internal",
            AppError::BadRequest { .. } => "bad-request",
            AppError::NotFound { .. } => "not-found",
            AppError::Unauthorized { .. } => "unauthorized",
            AppError::Forbidden { .. } => "forbidden",
            AppError::Conflict { .. } => "conflict",
            AppError::TooManyRequests { .. } => "too-many-requests",
            AppError::QuotaExceeded { .. } => "quota-exceeded",
            AppError::InsufficientStorage { .. } => "insufficient-storage",
            AppError::Transport { .. } => "transport",
        }
    }

    /// The HTTP status a server function answers with when it returns this error.
    pub fn status(&self) -> u16 {
        match self {
            AppError::Internal { .. } | AppError::Transport { .. } => 500,
            AppError::BadRequest { .. } => 400,
            AppError::NotFound { .. } => 404,
            AppError::Unauthorized { .. } => 401,
            AppError::Forbidden { .. } => 403,
            AppError::Conflict { .. } => 409,
            AppError::TooManyRequests { .. } => 429,
            AppError::QuotaExceeded { .. } => 413,
            AppError::InsufficientStorage { .. } => 507,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest { message: message.into() }
    }

    /// Logs `err` with a fresh reference id and returns the opaque error users see; a write the
    /// full disk refused is a 507 that says so instead (every server function maps its storage
    /// failures here, so all of them degrade the same way).
    #[cfg(feature = "ssr")]
    pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut chain = err.to_string();
        let mut full = disk_full(err);
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            full |= disk_full(cause);
            source = cause.source();
        }
        if full {
            tracing::warn!(context, error = %chain, "a write was refused: the disk is full");
            return AppError::InsufficientStorage {
                message: "The server's disk is full, so this could not be completed (reading still works). \
                          Check the result, try again later, or ask an administrator to make room."
                    .to_owned(),
            };
        }
        tracing::error!(%reference, context, error = %chain, "internal error");
        AppError::Internal { reference }
    }
}

/// A use-case's refusal or failure as the dashboard shows it.
#[cfg(feature = "ssr")]
impl From<imageops::Error> for AppError {
    fn from(e: imageops::Error) -> Self {
        use imageops::Error as E;
        match e {
            E::NotSignedIn(message) => AppError::Unauthorized { message },
            E::Forbidden(message) => AppError::Forbidden { message },
            E::NotFound(message) => AppError::NotFound { message },
            E::Invalid(message) => AppError::BadRequest { message },
            E::Conflict(message) => AppError::Conflict { message },
            E::TooLarge(message) => AppError::QuotaExceeded { message },
            E::Db(e) => AppError::internal("database", &e),
        }
    }
}

/// Whether `err` is a write refused because the disk (or its quota) is full: the database's
/// SQLITE_FULL ([`records::DbError::is_disk_full`]), the I/O error, or SQLite's message for it
/// wrapped by a library that keeps only the text (the session store).
#[cfg(feature = "ssr")]
fn disk_full(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(db) = err.downcast_ref::<records::DbError>() {
        return db.is_disk_full();
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        return matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded);
    }
    err.to_string().contains("database or disk is full")
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Transport { message: value.to_string() }
    }
}

impl From<ServerFnErrorErr> for AppError {
    fn from(value: ServerFnErrorErr) -> Self {
        AppError::from_server_fn_error(value)
    }
}
