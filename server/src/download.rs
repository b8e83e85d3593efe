//! `GET /images/{id}/file`: an image's bytes, with single-range `Range` requests (resumable
//! downloads) and `HEAD`. Authorised by the same policy as the pages (`ViewImage`).

use std::ops::Range;

use accounts::Authn;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use domain::ImageStatus;

use crate::AppState;

fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: the whole object. Multi-range requests are answered whole too, as
    /// RFC 9110 allows.
    Whole,
    Part(Range<u64>),
    /// Nothing of the range lies inside the object: 416.
    Unsatisfiable,
}

/// Parses a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against `size`.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.map(str::trim).and_then(|h| h.strip_prefix("bytes=")) else { return RangeAsk::Whole };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAsk::Whole };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeAsk::Whole,
        // The last n bytes.
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeAsk::Unsatisfiable,
            Ok(n) => size.saturating_sub(n)..size,
            Err(_) => return RangeAsk::Whole,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else { return RangeAsk::Whole };
            let end = if b.is_empty() {
                size
            } else {
                match b.parse::<u64>() {
                    Ok(last) if last >= start => last.saturating_add(1).min(size),
                    _ => return RangeAsk::Whole,
                }
            };
            if start >= size {
                return RangeAsk::Unsatisfiable;
            }
            start..end
        }
    };
    if range.start >= range.end {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part(range)
    }
}

/// Serves an image's data from its first active copy on a configured backend.
pub async fn image_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    authn: Option<Extension<Authn>>,
) -> Response {
    let principal = authn.as_ref().and_then(|a| a.principal.clone());
    let Some(me) = principal else {
        return plain(StatusCode::UNAUTHORIZED, "Sign in (or send X-Auth-Token) to download images.");
    };
    let db = &state.db;
    let scope = me.scope.as_ref().map(|s| s.project_id.clone());
    let facts = match imageops::image_facts(db, &id, scope.as_deref()).await {
        Ok((_, f)) => f,
        Err(_) => return plain(StatusCode::NOT_FOUND, "No such image."),
    };
    if policy::authorize(Some(&me), &policy::Action::ViewImage(&facts)).is_err() {
        return plain(StatusCode::NOT_FOUND, "No such image.");
    }
    let Ok(Some(image)) = db.image_detail(&id).await else { return plain(StatusCode::NOT_FOUND, "No such image.") };
    match image.status {
        ImageStatus::Active => {}
        ImageStatus::Deactivated if me.is_admin => {}
        ImageStatus::Deactivated => {
            return plain(StatusCode::FORBIDDEN, "This image is deactivated: its data cannot be downloaded until it is reactivated.")
        }
        other => return plain(StatusCode::NO_CONTENT, &format!("This image has no data yet (it is {other}).")),
    }
    let locations = db.image_locations(&id).await.unwrap_or_default();
    let Some((loc, store)) = locations
        .iter()
        .filter(|l| l.status == domain::LocationStatus::Active)
        .find_map(|l| state.stores.get(&l.backend).map(|s| (l.clone(), s.clone())))
    else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "No copy of this image is on a configured storage backend.");
    };
    let size = u64::try_from(loc.size).unwrap_or(0);
    let ask = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    // If-Range: a range only applies to the same version (our ETag is the copy's MD5).
    let etag = loc.checksum.as_ref().map(|c| format!("\"{c}\""));
    let ask = match (headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()), &etag) {
        (Some(v), Some(e)) if v.trim() != e => RangeAsk::Whole,
        (Some(_), None) => RangeAsk::Whole,
        _ => ask,
    };
    let ext = if loc.disk_format == domain::ImageFormat::Ami { "img" } else { loc.disk_format.as_str() };
    let stem: String =
        image.name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let stem = if stem.trim_matches('_').is_empty() { image.id.clone() } else { stem };
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{stem}.{ext}\""))
        .header("x-image-disk-format", loc.disk_format.as_str());
    if let Some(e) = &etag {
        resp = resp.header(header::ETAG, e.clone());
    }
    if let Some(c) = &loc.checksum {
        // Glance sends the MD5 hex as Content-MD5; its clients compare it with what they read.
        resp = resp.header("content-md5", c.clone());
    }
    let (status, range, length) = match ask {
        RangeAsk::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::RANGE_NOT_SATISFIABLE.into_response());
        }
        RangeAsk::Whole => (StatusCode::OK, None, size),
        RangeAsk::Part(r) => {
            resp = resp.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1));
            let len = r.end - r.start;
            (StatusCode::PARTIAL_CONTENT, Some(r), len)
        }
    };
    resp = resp.status(status).header(header::CONTENT_LENGTH, HeaderValue::from(length));
    if method == Method::HEAD || length == 0 {
        return resp.body(Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    match store.get(&loc.key, range).await {
        Ok(stream) => resp.body(Body::from_stream(stream)).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(err) => {
            tracing::warn!(image = %id, backend = %loc.backend, error = %err, "download failed");
            plain(StatusCode::BAD_GATEWAY, &format!("The {} storage could not be read: {err}", loc.backend))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), RangeAsk::Part(0..10));
        assert_eq!(parse_range(Some("bytes=90-"), 100), RangeAsk::Part(90..100));
        assert_eq!(parse_range(Some("bytes=90-1000"), 100), RangeAsk::Part(90..100));
        assert_eq!(parse_range(Some("bytes=-10"), 100), RangeAsk::Part(90..100));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), RangeAsk::Part(0..100));
        assert_eq!(parse_range(Some("bytes=100-"), 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 100), RangeAsk::Whole, "invalid: ignored");
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeAsk::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 100), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
    }
}
