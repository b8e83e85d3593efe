//! The Hangar server: configuration, state, the axum router, and start-up/shutdown.
//!
//! `main.rs` only parses flags and calls [`run`]. Tests build the same [`router`] from an
//! [`AppState`] and drive it with `tower::ServiceExt::oneshot`, or start [`serve`] on port 0.

use std::sync::Arc;
use std::time::Instant;

use app::api::context::ServerContext;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use domain::ImageStatus;
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::{generate_route_list, LeptosRoutes};
use records::Db;
use tower_sessions::cookie::SameSite;
use tower_sessions::{ExpiredDeletion, Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;

pub mod auth;
pub mod cli;
pub mod config;
pub mod download;
pub mod glance;
pub mod headers;
pub mod ingest;
pub mod jobs;

pub use config::{Config, ConfigError, Flags};

/// Sessions end after this long without a request.
const SESSION_IDLE_LIFETIME: time::Duration = time::Duration::days(14);

/// How often expired sessions are purged from the database.
const SESSION_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub leptos: LeptosOptions,
    pub db: Db,
    pub started: Instant,
    pub config: Arc<Config>,
    /// The tus data plane; complete uploads flow to the ingest worker.
    pub uploads: Arc<uploads::Uploads>,
    /// The background job workers (imports, copies).
    pub jobs: jobs::Jobs,
    /// The configured storage backends.
    pub stores: imageops::Stores,
    /// The image use-cases both doors call (`crates/imageops`).
    pub images: imageops::Images,
}

impl AppState {
    /// The configured storage backends, as the UI lists them.
    pub fn backends(&self) -> Vec<app::api::storage::BackendInfo> {
        let default = self.stores.default_name();
        self.stores
            .all()
            .iter()
            .map(|b| app::api::storage::BackendInfo {
                name: b.name().to_owned(),
                kind: b.kind().as_str().to_owned(),
                is_default: b.name() == default,
            })
            .collect()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Database(#[from] records::DbError),
    #[error("cannot prepare the session table: {0}")]
    Sessions(sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot create the first administrator: {0}")]
    Bootstrap(String),
    #[error("cannot open the upload area: {0}")]
    Uploads(String),
    #[error("storage configuration: {0}")]
    Storage(String),
}

/// How old an interrupted storage write must be before a server frees its remains (the parts
/// of a Ceph multipart upload whose server died mid-write). Far longer than any write takes
/// (40 GiB at 100 MiB/s is 7 minutes), so a write running on another server sharing the bucket
/// is never cut off.
const ABANDONED_WRITE_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How often the sweep runs (first at start-up).
const ABANDONED_WRITE_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

impl AppState {
    /// Opens the data directory and database (running migrations) for `config`.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
        let db = Db::open_sqlite(&config.database_path()).await?;
        // Request bodies that were arriving when the server stopped hold quota for nothing now.
        let released = db.release_interrupted_quota_holds().await?;
        if released > 0 {
            tracing::info!(released, "released the quota held by uploads interrupted by the last stop");
        }
        let stores =
            imageops::Stores::open(&config.storage, config.default_storage.as_deref(), &config.data_dir).map_err(StartError::Storage)?;
        stores.spawn_sweeper(ABANDONED_WRITE_AGE, ABANDONED_WRITE_SWEEP_EVERY);
        let jobs = jobs::start(&db, config.data_dir.clone(), config.job_workers, stores.clone()).await?;
        jobs::spawn_orphan_sweeper(db.clone(), config.data_dir.clone(), config.orphan_grace);
        let images = imageops::Images::new(db.clone(), stores.clone(), &config.data_dir);
        let uploads = open_uploads(&images, &config.data_dir).await?;
        let leptos = LeptosOptions::builder()
            .output_name(app::OUTPUT_NAME)
            .site_root(config.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(config.listen)
            .build();
        Ok(Self { leptos, db, started: Instant::now(), config: Arc::new(config), uploads, jobs, stores, images })
    }
}

/// Opens the tus data plane; each complete upload becomes an `import` job for the worker pool
/// (`imageops::Images::queue_import`, as for every door).
async fn open_uploads(images: &imageops::Images, data_dir: &std::path::Path) -> Result<Arc<uploads::Uploads>, StartError> {
    let db = &images.db;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<uploads::CompletedUpload>();
    let on_complete: uploads::OnComplete = Arc::new(move |done| {
        let _ = tx.send(done);
    });
    let up = uploads::Uploads::open(db.clone(), uploads::UploadConfig::new(data_dir), on_complete)
        .await
        .map_err(|e| StartError::Uploads(e.to_string()))?;
    // Every upload is checked before a byte is stored, so none is accepted whose bytes would be
    // discarded later (`check_new_upload`).
    let check = images.clone();
    up.set_check_metadata(Arc::new(move |new| {
        let images = check.clone();
        Box::pin(async move { check_new_upload(&images, &new).await })
    }));
    // MD5 and SHA-512 of the uploaded bytes only where they are stored as uploaded.
    let (hash_db, hash_stores) = (db.clone(), images.stores.clone());
    up.set_hashes_for(Arc::new(move |m| {
        let (db, stores) = (hash_db.clone(), hash_stores.clone());
        Box::pin(async move {
            let Some(image_id) = m.get("image_id") else { return uploads::UploadHashes::All };
            let backend = m.get("store").filter(|s| !s.is_empty()).and_then(|n| stores.get(n)).unwrap_or_else(|| stores.default_backend());
            ingest::upload_hashes(&db, image_id, backend.kind().as_str()).await
        })
    }));
    let completion = images.clone();
    tokio::spawn(async move {
        while let Some(done) = rx.recv().await {
            complete_upload(&completion, done).await;
        }
    });
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel::<uploads::UploadEvent>();
    up.set_on_event(Arc::new(move |e| {
        let _ = etx.send(e);
    }));
    let events_db = db.clone();
    tokio::spawn(async move {
        while let Some(e) = erx.recv().await {
            upload_event(&events_db, e).await;
        }
    });
    let _cleanup = uploads::spawn_cleanup(up.clone());
    Ok(up)
}

/// Hands a complete tus upload to its import. The uploader may have named a backend
/// (Upload-Metadata `store`; otherwise the default). One that vanished from the configuration
/// while the upload ran (creation refuses unknown names) is not swapped for another: the image
/// is killed with the reason.
async fn complete_upload(images: &imageops::Images, done: uploads::CompletedUpload) {
    let Some(image_id) = done.metadata.get("image_id").cloned() else {
        tracing::warn!(upload = %done.id, "complete upload names no image; discarding it");
        let _ = std::fs::remove_file(&done.path);
        return;
    };
    let size = std::fs::metadata(&done.path).map(|m| m.len()).unwrap_or(0);
    let backend = match done.metadata.get("store").filter(|s| !s.is_empty()) {
        Some(name) => name.clone(),
        None => images.stores.default_backend().name().to_owned(),
    };
    let data = imageops::ReceivedData {
        image_id: image_id.clone(),
        path: done.path.clone(),
        user_id: done.user_id.clone(),
        project_id: done.project_id.clone(),
        file_name: done.metadata.get("filename").cloned(),
        sha256: done.sha256,
        md5: done.md5,
        sha512: done.sha512,
    };
    match images.queue_import(&data, size, &backend).await {
        Ok(_) => {}
        Err(imageops::Error::Invalid(reason)) => {
            tracing::warn!(upload = %done.id, store = %backend, "the storage backend an upload names no longer exists; refusing it");
            let _ = std::fs::remove_file(&done.path);
            follow_upload(
                &images.db,
                &image_id,
                &done.project_id,
                &done.id,
                &[ImageStatus::Queued, ImageStatus::Uploading],
                ImageStatus::Killed,
                &reason,
            )
            .await;
        }
        Err(err) => {
            tracing::warn!(upload = %done.id, error = %err, "cannot queue the import; discarding the upload");
            let _ = std::fs::remove_file(&done.path);
        }
    }
}

/// The creation check of a tus upload (see `open_uploads`): the one admission rule of every door
/// (`imageops::Images::admit_data`), mapped to tus's `(status, message)`. `Ok` carries the room
/// the upload's import will need (`ingest::room_after_upload`), which the data plane reserves
/// with the upload's own bytes.
async fn check_new_upload(images: &imageops::Images, new: &uploads::NewUploadCheck) -> Result<uploads::RoomAfter, (u16, String)> {
    let Some(image_id) = new.metadata.get("image_id").filter(|s| !s.is_empty()) else {
        return Err((
            400,
            "Name the image this upload is for: create it first (the dashboard's Upload page, or POST /image/v2/images) \
             and put its id in Upload-Metadata as image_id."
                .to_owned(),
        ));
    };
    let store = new.metadata.get("store").map(String::as_str);
    let admitted = images.admit_data(&new.authn, image_id, imageops::Arrival::Tus, store).await.map_err(|e| match e {
        imageops::Error::NotFound(_) => (404, format!("There is no image {image_id} to upload to.")),
        imageops::Error::Db(e) => {
            tracing::error!(error = %e, "cannot check a new upload's image");
            (if e.is_disk_full() { 507 } else { 500 }, "Hangar cannot check this upload's image right now; try again.".to_owned())
        }
        e => (e.status(), e.to_string()),
    })?;
    let internal = |e: records::DbError| {
        tracing::error!(error = %e, "cannot read the storage matrix for a new upload");
        (500, "Hangar cannot check this upload's image right now; try again.".to_owned())
    };
    let store = images.stores.get(&admitted.backend).unwrap_or_else(|| images.stores.default_backend());
    let rules = ingest::Rules::load(&images.db, store.kind().as_str()).await.map_err(internal)?;
    let declared = imageops::declared::declared(admitted.image.disk_format, admitted.image.container_format);
    Ok(ingest::room_after_upload(&rules, declared.inspect_as()))
}

/// An image whose bytes start arriving is `uploading`; one whose upload expired unfinished is
/// `killed` with the reason. Only for an upload made in the image's own project, and only from
/// the states before an import.
async fn upload_event(db: &Db, e: uploads::UploadEvent) {
    let (info, from, to, reason): (_, &[ImageStatus], _, _) = match e {
        uploads::UploadEvent::Started(i) => (i, &[ImageStatus::Queued], ImageStatus::Uploading, ""),
        uploads::UploadEvent::Expired(i) => (
            i,
            &[ImageStatus::Queued, ImageStatus::Uploading],
            ImageStatus::Killed,
            "The upload expired before all of its bytes arrived; upload the file again.",
        ),
    };
    let Some(image_id) = info.metadata.get("image_id") else {
        return;
    };
    follow_upload(db, image_id, &info.project_id, &info.id, from, to, reason).await;
}

/// Moves the image an upload names from one of `from` to `to` (with `reason`), if it belongs
/// to the upload's project.
async fn follow_upload(db: &Db, image_id: &str, project_id: &str, upload_id: &str, from: &[ImageStatus], to: ImageStatus, reason: &str) {
    match db.image(image_id).await {
        Ok(Some(img)) if img.owner.as_deref() == Some(project_id) => match db.transition_image(image_id, from, to, reason).await {
            Ok(true) => {
                tracing::info!(image = %image_id, upload = %upload_id, status = %to, "image status follows its upload")
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(image = %image_id, error = %err, "cannot record the upload's progress on the image")
            }
        },
        Ok(_) => {
            tracing::warn!(image = %image_id, upload = %upload_id, "an upload names an image of another project or none; ignored")
        }
        Err(err) => {
            tracing::warn!(image = %image_id, error = %err, "cannot load the image an upload names")
        }
    }
}

/// The session layer, backed by a table in the same SQLite database so sessions survive restarts.
pub async fn session_layer(state: &AppState) -> Result<SessionManagerLayer<SqliteStore>, StartError> {
    let store = SqliteStore::new(state.db.pool().clone());
    store.migrate().await.map_err(StartError::Sessions)?;
    tokio::spawn(store.clone().continuously_delete_expired(SESSION_PURGE_INTERVAL));
    Ok(SessionManagerLayer::new(store)
        .with_name("hangar_session")
        .with_secure(state.config.secure_cookies)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_expiry(Expiry::OnInactivity(SESSION_IDLE_LIFETIME)))
}

/// The whole HTTP surface: Leptos pages and server functions, `/healthz`, static files.
pub fn router(state: AppState, sessions: SessionManagerLayer<SqliteStore>) -> Router {
    let routes = generate_route_list(app::App);
    let context = ServerContext { db: state.db.clone(), started: state.started, backends: state.backends(), images: state.images.clone() };
    let leptos = state.leptos.clone();
    let tus = uploads::router(state.uploads.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/images/{id}/file", get(download::image_file))
        .leptos_routes_with_context(&state, routes, move || provide_context(context.clone()), move || app::shell(leptos.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(app::shell))
        .with_state(state.clone())
        .merge(tus)
        .route("/image/", get(glance::root))
        .nest("/image", glance::router(state.clone()))
        // Layers run bottom-up on the way in: trace → security headers → sessions → CSRF
        // check → authentication.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn(auth::csrf))
        .layer(axum::middleware::from_fn(auth::bound_sign_in))
        .layer(sessions)
        .layer(axum::middleware::from_fn_with_state(state, headers::security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Liveness and readiness: 200 when the database answers, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok", "database": "ok", "version": env!("CARGO_PKG_VERSION") }))),
        Err(err) => {
            tracing::error!(error = %err, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "unavailable", "database": "unavailable", "version": env!("CARGO_PKG_VERSION") })),
            )
        }
    }
}

/// Readiness: can this server take uploads now? 200 when the database answers and the data
/// directory (where uploads and conversions land) has at least `low_space_bytes` free; 503 with
/// the reason otherwise. Each storage backend's free space is reported, and flagged `low`
/// below the same bound (reads go on; imports to it would fail). `/healthz` stays the liveness
/// check: a full disk degrades Hangar (sign-in, tokens and downloads keep working), it does not
/// make it dead.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let low = state.config.low_space_bytes;
    let database = state.db.ping().await.is_ok();
    let data_free = rustix::fs::statvfs(&state.config.data_dir).ok().map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    let data_low = data_free.is_some_and(|f| f < low);
    let mut backends = Vec::new();
    for b in state.stores.all() {
        let space = b.space().await.ok();
        let free = space.as_ref().and_then(|s| s.free);
        backends.push(serde_json::json!({ "name": b.name(), "free": free, "low": free.is_some_and(|f| f < low) }));
    }
    let (code, status) = match (database, data_low) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::SERVICE_UNAVAILABLE, "low_space"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    (
        code,
        Json(serde_json::json!({
            "status": status,
            "database": if database { "ok" } else { "unavailable" },
            "data_dir": { "free": data_free, "low_space_bytes": low, "low": data_low },
            "backends": backends,
        })),
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// Starts Hangar with `config` and runs until a shutdown signal.
pub async fn run(config: Config) -> Result<(), StartError> {
    let pkg = config.site_root.join("pkg").join(format!("{}.js", app::OUTPUT_NAME));
    if !pkg.exists() {
        tracing::warn!(
            path = %pkg.display(),
            "the browser bundle is missing: pages render but will not become interactive; build it with scripts/build-site.sh"
        );
    }
    let state = AppState::open(config).await?;
    cli::bootstrap(&state.db, |k| std::env::var(k).ok()).await.map_err(|e| StartError::Bootstrap(e.message))?;
    let sessions = session_layer(&state).await?;
    let addr = state.config.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr: addr.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| StartError::Listen { addr: addr.to_string(), source })?;
    tracing::info!(
        address = %format!("http://{local}"),
        data_dir = %state.config.data_dir.display(),
        "Hangar is listening"
    );
    let (db, jobs, bound) = (state.db.clone(), state.jobs.clone(), state.config.shutdown_timeout);
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut http = tokio::spawn(serve(listener, router(state, sessions), {
        let stop = stop.clone();
        async move { stop.notified().await }
    }));
    tokio::select! {
        ended = &mut http => {
            // The server ended by itself: a listener failure.
            let ended = ended.map_err(|e| StartError::Listen { addr: local.to_string(), source: std::io::Error::other(e) })?;
            ended.map_err(|source| StartError::Listen { addr: local.to_string(), source })?;
        }
        () = shutdown_signal() => {
            // Stop taking requests and jobs at once; running jobs stop at their next step and
            // are queued for the next start (nothing is killed), all within the bound.
            stop.notify_one();
            let started = Instant::now();
            let (stopped, http) = tokio::join!(jobs.shutdown(bound), tokio::time::timeout(bound, &mut http));
            let (requeued, still_running) = stopped;
            if !requeued.is_empty() {
                tracing::info!(jobs = ?requeued, "stopped running jobs; they are queued and run again at the next start");
            }
            if !still_running.is_empty() {
                tracing::warn!(jobs = ?still_running, "jobs still running at the shutdown bound; the next start queues them again");
            }
            if http.is_err() {
                tracing::warn!(bound_secs = bound.as_secs(), "requests still in flight at the shutdown bound were cut off");
            }
            tracing::info!(took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "shutdown finished");
        }
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
