//! The Glance v2-compatible Image API, mounted at `/image` (as devstack does), so `glance` and
//! `openstack image` work unmodified with `--os-image-url http://HOST:PORT/image`.
//!
//! What real clients need is written down in `docs/glance-api.md` (§4.4 is the
//! checklist this module follows). The rules that shape every handler:
//!
//! - Authentication is the server's (`X-Auth-Token` → `accounts::Authn`, see `auth.rs`);
//!   authorization is `policy::authorize`, the same rules as the dashboard. An image the caller
//!   may not see answers 404, never 403, so ids do not leak.
//! - Errors are JSON whose every top-level value is an object (`{"error":{"code","title",
//!   "message"}}`) for clients that ask for JSON (openstacksdk), and webob's small HTML page
//!   otherwise (glanceclient's `Accept: */*`), so the CLIs print what they print against Glance
//!   ("HTTP 404 Not Found: No image found with ID …"). A flat JSON body would crash glanceclient.
//!   Empty 202/204 answers carry no JSON content type (glanceclient would try to parse them).
//! - `GET /image/` (trailing slash) cannot be routed here: axum's `nest` hands this router
//!   `/image` and `/image/…` only. The server's router routes it to [`root`] beside the nest, so
//!   discovery that adds the slash gets the same version document.
//! - Bytes go through the same `import` job as the dashboard's uploads (`ingest.rs`): nothing
//!   becomes `active` without Hangar's own inspection, and a refused image answers 415 with the
//!   inspector's reason.
//!
//! Layout: this file has the router, the error type, the caller, versions, schemas and the info
//! endpoints; `images.rs` the catalogue (create, list, show, PATCH, delete, tags, actions);
//! `data.rs` the bytes (upload, stage, import, tasks); `web.rs` the `web-download` import;
//! `members.rs` image members.

use accounts::Authn;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::AppState;

mod data;
mod images;
mod members;
pub mod patch;
pub mod query;
mod web;

/// The API versions this server answers to. Glance lists v2.8–v2.13 only when several stores
/// are configured; Hangar always has the multi-store API (`/v2/info/stores`), so it lists them
/// all. glanceclient's `image-tasks` looks for `v2.12` by exact id.
const MINOR_VERSIONS: u32 = 17;

/// Glance's `image_member_quota` (the rule is the share use-case's: `imageops`).
pub use imageops::MAX_MEMBERS;

/// The import methods Hangar offers, in Glance's order. `web-download` only when
/// `web_download_allowed_hosts` names hosts (fetching arbitrary URLs from the server is an SSRF
/// risk; Glance's `[import_filtering_opts]`); `glance-download` needs federated regions.
pub fn import_methods(state: &AppState) -> Vec<&'static str> {
    let mut methods = vec!["glance-direct"];
    if web::enabled(state) {
        methods.push("web-download");
    }
    methods.push("copy-image");
    methods
}

/// An answer in Glance's shape. `title` follows the HTTP reason phrase.
#[derive(Debug)]
pub struct GlanceError {
    pub status: StatusCode,
    pub message: String,
    headers: Vec<(header::HeaderName, String)>,
}

impl GlanceError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        GlanceError { status, message: message.into(), headers: Vec::new() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn no_image(id: &str) -> Self {
        Self::not_found(format!("No image found with ID {id}"))
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }
    /// An internal failure: logged in full, answered with a reference only.
    pub fn internal(what: &str, err: &dyn std::fmt::Display) -> Self {
        let reference = format!("{:08x}", rand_ref());
        tracing::error!(%reference, error = %err, "glance api: {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Hangar hit an internal error (reference {reference}). Try again; if it persists, give the reference to your administrator."),
        )
    }
    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A short reference for an internal error, from the clock (not a secret, only a log key).
fn rand_ref() -> u32 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (n as u32) ^ ((n >> 32) as u32)
}

impl From<imageops::Error> for GlanceError {
    fn from(e: imageops::Error) -> Self {
        use imageops::Error as E;
        match e {
            E::NotSignedIn(m) => GlanceError::new(StatusCode::UNAUTHORIZED, m),
            E::Forbidden(m) => GlanceError::forbidden(m),
            E::NotFound(m) => GlanceError::not_found(m),
            E::Invalid(m) => GlanceError::bad_request(m),
            E::Conflict(m) => GlanceError::conflict(m),
            E::TooLarge(m) => GlanceError::too_large(m),
            E::Db(e) => e.into(),
        }
    }
}

impl From<records::DbError> for GlanceError {
    fn from(e: records::DbError) -> Self {
        if e.is_disk_full() {
            tracing::warn!(error = %e, "the database's disk is full");
            return GlanceError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "The server's disk is full (0 bytes free), so nothing could be recorded; reads still work. Try again later.",
            );
        }
        GlanceError::internal("database", &e)
    }
}

impl From<records::CatalogueError> for GlanceError {
    fn from(e: records::CatalogueError) -> Self {
        use records::CatalogueError as E;
        match e {
            E::MarkerNotFound => GlanceError::bad_request("The marker does not name an image you can see."),
            E::InvalidFilter(m) | E::InvalidValue(m) => GlanceError::bad_request(m),
            E::LimitExceeded(m) => GlanceError::too_large(m),
            e @ E::WrongStatus { .. } => GlanceError::forbidden(e.to_string()),
            E::Db(e) => e.into(),
        }
    }
}

impl IntoResponse for GlanceError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = json!({ "error": { "code": self.status.as_u16(), "title": title, "message": self.message } });
        let mut resp = (self.status, Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

pub type Result<T, E = GlanceError> = std::result::Result<T, E>;

/// The authenticated caller of a request.
pub struct Caller {
    pub authn: Authn,
    pub me: policy::Principal,
}

impl Caller {
    /// The caller, or 401 when the request carries no (valid) credentials.
    pub fn from(authn: Option<Extension<Authn>>) -> Result<Self> {
        let authn = authn.map(|Extension(a)| a).unwrap_or_default();
        match authn.principal.clone() {
            Some(me) => Ok(Caller { authn, me }),
            None => Err(GlanceError::new(
                StatusCode::UNAUTHORIZED,
                "This server could not verify that you are authorized: send an API token in X-Auth-Token.",
            )),
        }
    }

    pub fn project(&self) -> Option<&str> {
        self.me.scope.as_ref().map(|s| s.project_id.as_str())
    }

    /// The listing scope (as the dashboard's).
    pub fn visible(&self) -> records::Visible<'_> {
        match (&self.me.is_admin, &self.me.scope) {
            (true, _) => records::Visible::All,
            (false, Some(scope)) => records::Visible::Project(&scope.project_id),
            (false, None) => records::Visible::PublicOnly,
        }
    }

    /// As [`Caller::allow`], recording a refused privileged action (making an image public) in
    /// the audit log with outcome `denied`.
    pub fn allow_audited(&self, state: &AppState, action: &policy::Action<'_>) -> Result<()> {
        let allowed = self.allow(action);
        if allowed.is_ok() {
            return allowed;
        }
        state.images.authorize(&self.authn, action).map_err(Into::into)
    }

    pub fn allow(&self, action: &policy::Action<'_>) -> Result<()> {
        policy::authorize(Some(&self.me), action).map_err(|d| match d {
            policy::Denial::NotSignedIn => GlanceError::new(StatusCode::UNAUTHORIZED, d.to_string()),
            policy::Denial::Forbidden(m) => GlanceError::forbidden(m),
        })
    }

    /// Loads an image the caller may see with its policy facts, or 404.
    pub async fn image(&self, state: &AppState, id: &str) -> Result<(records::ImageDetail, policy::ImageFacts)> {
        let (_, facts) = state.images.image_facts(id, self.project()).await.map_err(|e| match e {
            imageops::Error::NotFound(_) => GlanceError::no_image(id),
            e => e.into(),
        })?;
        if !policy::can_view(Some(&self.me), &facts) {
            return Err(GlanceError::no_image(id));
        }
        let detail = state.db.image_detail(id).await?.ok_or_else(|| GlanceError::no_image(id))?;
        Ok((detail, facts))
    }

    pub async fn audit(&self, state: &AppState, action: &str, target_type: &str, target: &str, detail: &str) -> Result<()> {
        state.images.audit(&self.authn, action, target_type, target, detail).await.map_err(Into::into)
    }
}

/// An empty answer with no JSON content type (glanceclient parses JSON-typed bodies).
pub fn empty(status: StatusCode) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "").into_response()
}

/// The API's routes (nested under `/image` by the caller).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/versions", get(versions))
        .route("/v2/schemas/{*name}", get(schema))
        .route("/v2/info/import", get(info_import))
        .route("/v2/info/stores", get(info_stores))
        .route("/v2/info/stores/detail", get(info_stores_detail))
        .route("/v2/info/usage", get(info_usage))
        .route("/v2/images", get(images::list).post(images::create))
        .route("/v2/images/{id}", get(images::show).patch(images::update).delete(images::delete))
        .route("/v2/images/{id}/file", get(crate::download::image_file).put(data::upload))
        .route("/v2/images/{id}/stage", put(data::stage))
        .route("/v2/images/{id}/import", post(data::import))
        .route("/v2/images/{id}/tasks", get(data::tasks))
        .route("/v2/images/{id}/actions/{action}", post(images::action))
        .route("/v2/images/{id}/tags/{tag}", put(images::add_tag).delete(images::remove_tag))
        .route("/v2/images/{id}/members", get(members::list).post(members::create))
        .route("/v2/images/{id}/members/{member}", get(members::show).put(members::update).delete(members::delete))
        .fallback(|| async { GlanceError::not_found("The resource could not be found.") })
        .layer(axum::middleware::from_fn(negotiate_errors))
        .with_state(state)
}

/// Largest error body [`negotiate_errors`] rewrites (ours are a few hundred bytes).
const MAX_ERROR_BODY: usize = 64 * 1024;

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Answers errors as Glance does for the client's `Accept`: nested JSON when it asks for JSON
/// (openstacksdk), otherwise webob's small HTML page, which glanceclient (`Accept: */*`) prints
/// as "HTTP 404 Not Found: No image found with ID …", exactly as against Glance.
async fn negotiate_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wants_json = req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("json"));
    let resp = next.run(req).await;
    let is_json = resp.headers().get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).is_some_and(|c| c.contains("json"));
    if wants_json || !is_json || !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return (parts.status, "").into_response();
    };
    let message =
        serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v["error"]["message"].as_str().map(str::to_owned)).unwrap_or_default();
    let title = format!("{} {}", parts.status.as_u16(), parts.status.canonical_reason().unwrap_or("Error"));
    let page = format!(
        "<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n  {}<br /><br />\n\n\n\n </body>\n</html>",
        html_escape(&message)
    );
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(page))
}

/// `scheme://host/image`, for the absolute links of the version document.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).filter(|p| *p == "https").unwrap_or("http");
    format!("{proto}://{host}/image")
}

fn version_document(headers: &HeaderMap) -> Value {
    let href = format!("{}/v2/", base_url(headers));
    let versions: Vec<Value> = (0..=MINOR_VERSIONS)
        .rev()
        .map(|n| {
            json!({
                "id": format!("v2.{n}"),
                "status": if n == MINOR_VERSIONS { "CURRENT" } else { "SUPPORTED" },
                "links": [{ "rel": "self", "href": href }],
            })
        })
        .collect();
    json!({ "versions": versions })
}

/// `GET /` (and `GET /image/`, routed by the server): 300 Multiple Choices with the versions
/// (what openstacksdk reads to find `/v2/`).
pub async fn root(headers: HeaderMap) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(version_document(&headers))).into_response()
}

/// `GET /versions`: 200 with the versions (glanceclient's bootstrap).
async fn versions(headers: HeaderMap) -> Response {
    Json(version_document(&headers)).into_response()
}

/// The disk formats the configured backends accept: the storage matrix's formats whose row is
/// not `refuse` on at least one configured backend kind, as Glance names them.
async fn disk_formats(state: &AppState) -> Result<Vec<&'static str>> {
    Ok(state.images.disk_formats().await?.into_iter().map(domain::DiskFormat::as_str).collect())
}

const UUID_PATTERN: &str = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

/// The image schema (Glance's `get_base_properties` plus its default extra properties), with the
/// format enums from the configuration. glanceclient builds its `image-create`/`image-update`
/// options from it and validates every image it is sent against it.
pub async fn image_schema(state: &AppState) -> Result<Value> {
    let mut disk: Vec<Value> = vec![Value::Null];
    disk.extend(disk_formats(state).await?.into_iter().map(Value::from));
    let mut container: Vec<Value> = vec![Value::Null];
    container.extend(domain::ContainerFormat::ALL.iter().map(|c| Value::from(c.as_str())));
    let ro = |ty: Value, description: &str| json!({ "readOnly": true, "type": ty, "description": description });
    Ok(json!({
        "name": "image",
        "additionalProperties": { "type": "string" },
        "links": [
            { "href": "{self}", "rel": "self" },
            { "href": "{file}", "rel": "enclosure" },
            { "href": "{schema}", "rel": "describedby" }
        ],
        "properties": {
            "id": { "type": "string", "pattern": UUID_PATTERN, "description": "An identifier for the image" },
            "name": { "type": ["null", "string"], "maxLength": 255, "description": "Descriptive name for the image" },
            "status": {
                "readOnly": true, "type": "string", "description": "Status of the image",
                "enum": domain::ImageStatus::ALL
            },
            "visibility": { "type": "string", "enum": ["community", "public", "private", "shared"], "description": "Scope of image accessibility" },
            "protected": { "type": "boolean", "description": "If true, image will not be deletable." },
            "os_hidden": { "type": "boolean", "description": "If true, image will not appear in default image list response." },
            "checksum": { "readOnly": true, "type": ["null", "string"], "maxLength": 32, "description": "md5 hash of image contents." },
            "os_hash_algo": { "readOnly": true, "type": ["null", "string"], "maxLength": 64, "description": "Algorithm to calculate the os_hash_value" },
            "os_hash_value": { "readOnly": true, "type": ["null", "string"], "maxLength": 128, "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo" },
            "owner": { "type": ["null", "string"], "maxLength": 255, "description": "Owner of the image" },
            "size": ro(json!(["null", "integer"]), "Size of image file in bytes"),
            "virtual_size": ro(json!(["null", "integer"]), "Virtual size of image in bytes"),
            "container_format": { "type": ["null", "string"], "enum": container, "description": "Format of the container" },
            "disk_format": { "type": ["null", "string"], "enum": disk, "description": "Format of the disk" },
            "created_at": ro(json!("string"), "Date and time of image registration"),
            "updated_at": ro(json!("string"), "Date and time of the last image modification"),
            "tags": { "type": "array", "items": { "type": "string", "maxLength": 255 }, "description": "List of strings related to the image" },
            "direct_url": ro(json!("string"), "URL to access the image file kept in external store"),
            "min_ram": { "type": "integer", "description": "Amount of ram (in MB) required to boot image." },
            "min_disk": { "type": "integer", "description": "Amount of disk space (in GB) required to boot image." },
            "self": ro(json!("string"), "An image self url"),
            "file": ro(json!("string"), "An image file url"),
            "stores": ro(json!("string"), "Store in which image data resides.  Only present when the operator has enabled multiple stores. May be a comma-separated list of store identifiers."),
            "schema": ro(json!("string"), "An image schema url"),
            "kernel_id": { "type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": false, "description": "ID of image stored in Glance that should be used as the kernel when booting an AMI-style image." },
            "ramdisk_id": { "type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": false, "description": "ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image." },
            "instance_uuid": { "type": "string", "is_base": false, "description": "Metadata which can be used to record which instance this image is associated with. (Informational only, does not create an instance snapshot.)" },
            "architecture": { "type": "string", "is_base": false, "description": "Operating system architecture as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html" },
            "os_distro": { "type": "string", "is_base": false, "description": "Common name of operating system distribution as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html" },
            "os_version": { "type": "string", "is_base": false, "description": "Operating system version as specified by the distributor." },
            "description": { "type": "string", "is_base": false, "description": "A human-readable string describing this image." }
        }
    }))
}

fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": { "type": "string", "description": "Date and time of image member creation" },
            "image_id": { "type": "string", "pattern": UUID_PATTERN, "description": "An identifier for the image" },
            "member_id": { "type": "string", "description": "An identifier for the image member (tenantId)" },
            "schema": { "readOnly": true, "type": "string" },
            "status": { "type": "string", "enum": ["pending", "accepted", "rejected"], "description": "The status of this image member" },
            "updated_at": { "type": "string", "description": "Date and time of last modification of image member" }
        }
    })
}

fn task_schema() -> Value {
    json!({
        "name": "task",
        "properties": {
            "id": { "type": "string", "pattern": UUID_PATTERN },
            "type": { "type": "string", "enum": ["import", "api_image_import", "location_import"] },
            "status": { "type": "string", "enum": ["pending", "processing", "success", "failure"] },
            "input": { "type": ["null", "object"] },
            "result": { "type": ["null", "object"] },
            "owner": { "type": "string" },
            "message": { "type": "string" },
            "image_id": { "type": "string" },
            "request_id": { "type": "string" },
            "user_id": { "type": "string" },
            "expires_at": { "type": ["null", "string"] },
            "created_at": { "type": "string" },
            "updated_at": { "type": "string" },
            "self": { "type": "string" },
            "schema": { "type": "string" }
        }
    })
}

fn collection(name: &str, item: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "properties": {
            name: { "type": "array", "items": schema },
            "schema": { "type": "string" },
            "first": { "type": "string" },
            "next": { "type": "string" }
        },
        "links": [
            { "rel": "first", "href": "{first}" },
            { "rel": "next", "href": "{next}" },
            { "rel": "describedby", "href": format!("{{schema}}#{item}") }
        ]
    })
}

/// `GET /v2/schemas/{name}`.
async fn schema(State(state): State<AppState>, axum::extract::Path(name): axum::extract::Path<String>) -> Result<Response> {
    let body = match name.as_str() {
        "image" => image_schema(&state).await?,
        "images" => collection("images", "image", image_schema(&state).await?),
        "member" => member_schema(),
        "members" => collection("members", "member", member_schema()),
        "task" => task_schema(),
        "tasks" => collection("tasks", "task", task_schema()),
        // glanceclient caches these at bootstrap; Hangar has no metadata definitions.
        "metadefs/namespace" => json!({ "name": "namespace", "properties": {} }),
        "metadefs/resource_type" => json!({ "name": "resource_type", "properties": {} }),
        _ => return Err(GlanceError::not_found(format!("No schema named {name}."))),
    };
    Ok(Json(body).into_response())
}

/// `GET /v2/info/import`.
async fn info_import(State(state): State<AppState>, authn: Option<Extension<Authn>>) -> Result<Response> {
    Caller::from(authn)?;
    Ok(Json(json!({
        "import-methods": { "description": "Import methods available.", "type": "array", "value": import_methods(&state) }
    }))
    .into_response())
}

/// `GET /v2/info/stores`: the configured backends (Glance's string "true" for flags).
async fn info_stores(State(state): State<AppState>, authn: Option<Extension<Authn>>) -> Result<Response> {
    Caller::from(authn)?;
    let stores: Vec<Value> = state
        .backends()
        .into_iter()
        .map(|b| {
            let mut s = json!({ "id": b.name, "description": format!("{} storage", b.kind) });
            if b.is_default {
                s["default"] = json!("true");
            }
            s
        })
        .collect();
    Ok(Json(json!({ "stores": stores })).into_response())
}

/// `GET /v2/info/stores/detail` (administrators): adds each backend's type, as Glance names
/// its drivers (`file` for local and NFS directories, `s3`, `rbd`).
async fn info_stores_detail(State(state): State<AppState>, authn: Option<Extension<Authn>>) -> Result<Response> {
    let caller = Caller::from(authn)?;
    if !caller.me.is_admin {
        return Err(GlanceError::forbidden("Only administrators can see the stores' details."));
    }
    let stores: Vec<Value> = state.backends()
        .into_iter()
        .map(|b| {
            let kind = match b.kind.as_str() {
                "s3" | "rbd" => b.kind.as_str(),
                _ => "file",
            };
            let mut s = json!({ "id": b.name, "description": format!("{} storage", b.kind), "type": kind, "weight": 0, "properties": { "hangar_kind": b.kind } });
            if b.is_default {
                s["default"] = json!("true");
            }
            s
        })
        .collect();
    Ok(Json(json!({ "stores": stores })).into_response())
}

const MIB: u64 = 1024 * 1024;

/// `GET /v2/info/usage`: the caller's project's quotas and use, in MiB and counts (-1: no limit).
async fn info_usage(State(state): State<AppState>, authn: Option<Extension<Authn>>) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let Some(project) = caller.project().map(str::to_owned) else {
        return Err(GlanceError::forbidden("Your token is not scoped to a project, so it has no usage."));
    };
    let quota = state.db.quota(&project).await?;
    let (images, bytes) = state.db.project_usage(&project).await?;
    let busy = records::ImageQuery {
        owners: vec![project.clone()],
        statuses: Some(vec![domain::ImageStatus::Saving, domain::ImageStatus::Uploading, domain::ImageStatus::Importing]),
        visibility: Some(records::VisibilityFilter::All),
        limit: Some(0),
        ..Default::default()
    };
    let uploading = state.db.query_images(&busy, records::Visible::All).await?.total;
    let staged = data::staged_bytes(&state, &project).await;
    let limit = |v: Option<i64>, unit: u64| v.map_or(-1, |n| n / i64::try_from(unit).unwrap_or(1));
    Ok(Json(json!({ "usage": {
        "image_size_total": { "limit": limit(quota.max_bytes, MIB), "usage": bytes.div_ceil(MIB) },
        "image_stage_total": { "limit": limit(quota.max_bytes, MIB), "usage": staged.div_ceil(MIB) },
        "image_count_total": { "limit": limit(quota.max_images, 1), "usage": images },
        "image_count_uploading": { "limit": limit(quota.max_concurrent_uploads, 1), "usage": uploading },
    }}))
    .into_response())
}
