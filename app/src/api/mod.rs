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
        /// What server functions need of the storage backends and the job workers.
        pub stores: std::sync::Arc<dyn StoreOps>,
    }

    /// A future that borrows its arguments (the trait stays object-safe without async-trait).
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

    /// Storage and job operations the server provides to server functions.
    pub trait StoreOps: Send + Sync + std::fmt::Debug {
        /// Deletes the bytes stored under `key` on `backend` (idempotent).
        fn delete<'a>(&'a self, backend: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), String>>;
        /// Wakes a job worker (after a job was queued or retried).
        fn wake_jobs(&self);
        /// Free and total bytes of a backend, where it can tell (bounded by its timeout).
        fn space<'a>(&'a self, backend: &'a str) -> BoxFuture<'a, (Option<u64>, Option<u64>)>;
    }

    /// The server context, or an internal error if the server forgot to provide it.
    pub fn server_context() -> Result<ServerContext, AppError> {
        use_context::<ServerContext>()
            .ok_or_else(|| AppError::internal("server context", &std::io::Error::other("ServerContext was not provided")))
    }
}
