//! The one error type of the upload data plane and how each variant answers over HTTP.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::tus;

/// What can go wrong in the data plane. The doc comment of each variant says what the client
/// sees; messages are shown as they are (plain text), except for internal failures, which are
/// logged in full and shown only as a reference id.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// 401: no signed-in user (no session, no valid `X-Auth-Token`).
    #[error("Sign in to upload.")]
    NotSignedIn,
    /// 403: signed in, but without upload rights here (policy's message).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such upload, or one the caller may not know about.
    #[error("There is no such upload.")]
    NotFound,
    /// 410: the upload expired (it is removed by the cleanup task).
    #[error("This upload has expired; start a new one.")]
    Gone,
    /// 400: a malformed or unsupported header.
    #[error("{0}")]
    BadRequest(String),
    /// 412: missing or unsupported `Tus-Resumable` (answered with `Tus-Version`).
    #[error("This server speaks tus 1.0.0; send `Tus-Resumable: 1.0.0`.")]
    UnsupportedVersion,
    /// 415: a body that is not `application/offset+octet-stream`.
    #[error("Upload data must be sent as Content-Type: application/offset+octet-stream.")]
    UnsupportedMediaType,
    /// 409: `Upload-Offset` is not where the upload is (the resource is unchanged).
    #[error("Upload-Offset {sent} does not match the upload's offset {actual}; ask with HEAD and resume from there.")]
    OffsetMismatch { sent: u64, actual: u64 },
    /// 413: over the maximum image size, a quota, or the per-request body limit.
    #[error("{0}")]
    TooLarge(String),
    /// 423: another request is writing to this upload right now.
    #[error("Another request is writing to this upload; retry in a moment.")]
    Locked,
    /// 460 (tus checksum extension): the chunk's checksum did not match; its bytes were discarded.
    #[error("The checksum of this chunk does not match Upload-Checksum; its bytes were discarded, send it again.")]
    ChecksumMismatch,
    /// 507: the server's disk cannot take the bytes; nothing half-written is kept.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 500: a file-system failure (logged; the client sees a reference id).
    #[error("file system error: {0}")]
    Io(#[from] std::io::Error),
    /// 500: a database failure (logged; the client sees a reference id).
    #[error(transparent)]
    Db(#[from] records::DbError),
    /// 500: anything else that should not happen (logged; the client sees a reference id).
    #[error("internal error: {0}")]
    Internal(String),
    /// The consumer's creation check refused the upload with this status (400, 403, 404, 409)
    /// and message ([`crate::Uploads::set_check_metadata`]).
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
}

/// tus's "460 Checksum Mismatch" (not in the HTTP registry, so built from its number).
pub(crate) fn checksum_mismatch_status() -> StatusCode {
    StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
}

impl UploadError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            UploadError::NotSignedIn => StatusCode::UNAUTHORIZED,
            UploadError::Forbidden(_) => StatusCode::FORBIDDEN,
            UploadError::NotFound => StatusCode::NOT_FOUND,
            UploadError::Gone => StatusCode::GONE,
            UploadError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UploadError::UnsupportedVersion => StatusCode::PRECONDITION_FAILED,
            UploadError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Locked => StatusCode::LOCKED,
            UploadError::ChecksumMismatch => checksum_mismatch_status(),
            UploadError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            UploadError::Io(e) if is_disk_full(e) => StatusCode::INSUFFICIENT_STORAGE,
            UploadError::Refused { status, .. } => *status,
            UploadError::Db(e) if e.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
            UploadError::Io(_) | UploadError::Db(_) | UploadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A disk-full I/O error becomes the 507 with a message users understand.
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        if is_disk_full(&e) {
            UploadError::InsufficientStorage(DISK_FULL.to_owned())
        } else {
            UploadError::Io(e)
        }
    }
}

pub(crate) const DISK_FULL: &str =
    "The server's upload disk is full; nothing of this request was kept. Try again later or ask an administrator.";

/// ENOSPC and EDQUOT: the disk (or the server's disk quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            let reference = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(reference = %reference, error = %self, "upload request failed");
            format!("Internal error (reference {reference}). The upload's durable bytes are kept; retry later.")
        } else {
            self.to_string()
        };
        let mut res = (status, message).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if matches!(self, UploadError::UnsupportedVersion) {
            res.headers_mut().insert(tus::TUS_VERSION, HeaderValue::from_static(tus::VERSION));
        }
        res
    }
}
