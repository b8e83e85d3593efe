//! Server functions, grouped by area. Each one is a public HTTP endpoint under `/api/`, so each
//! checks what it needs itself (accounts and policy arrive with the accounts issue).

pub mod admin;
pub mod auth;
pub mod images;
pub mod prefs;
pub mod shares;
pub mod status;
pub mod storage;
pub mod tokens;
pub mod upload;

/// Server-side context the server functions reach through `use_context`.
#[cfg(feature = "ssr")]
pub mod context {
    use leptos::prelude::use_context;

    use crate::AppError;

    /// Shared state the server provides to every request's reactive owner.
    #[derive(Clone, Debug)]
    pub struct ServerContext {
        pub db: records::Db,
        pub started: std::time::Instant,
        /// The configured storage backends (names and kinds).
        pub backends: Vec<crate::api::storage::BackendInfo>,
        /// The image use-cases (`crates/imageops`): storage backends, job signal, audit.
        pub images: imageops::Images,
    }

    /// The server context, or an internal error if the server forgot to provide it.
    pub fn server_context() -> Result<ServerContext, AppError> {
        use_context::<ServerContext>()
            .ok_or_else(|| AppError::internal("server context", &std::io::Error::other("ServerContext was not provided")))
    }
}
