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
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest { message: message.into() }
    }

    /// Logs `err` with a fresh reference id and returns the opaque error users see.
    #[cfg(feature = "ssr")]
    pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(%reference, context, error = %chain, "internal error");
        AppError::Internal { reference }
    }
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
