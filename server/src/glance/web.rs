//! The `web-download` import method: `POST /v2/images/{id}/import` with
//! `{"method":{"name":"web-download","uri":"https://…"}}` makes Hangar fetch the image itself.
//!
//! Fetching URLs from the server is an SSRF risk, so the method is off unless the operator names
//! the hosts it may reach (`web_download_allowed_hosts`; Glance's `[import_filtering_opts]`
//! allow-list). A URI is refused with 400 unless its scheme is `http` or `https`, it carries no
//! credentials, and its host (as the URL parser normalizes it) is exactly one of those hosts.
//! Any port is allowed on an allowed host. Redirects are not followed (a 3xx is a failure: a
//! redirect could lead off the list), proxies from the environment are not used, and the
//! download is bounded in time ([`TOTAL_TIMEOUT`], [`IDLE_TIMEOUT`]) and in bytes (the project's
//! remaining byte quota and Glance's image size cap, as `PUT /file`).
//!
//! As in Glance, the answer is 202 at once and the image is `importing` while the body
//! arrives. The bytes then become the same `import` job as `PUT /file`'s, so the inspector and
//! the storage matrix judge them. If the download fails, its partial file is removed and the
//! image goes back to `queued` (as a failed `PUT /file` does) with the reason in its status
//! reason (shown by the dashboard), so the client may try again.

use std::path::Path as FsPath;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::data::{byte_limit, check_formats, incoming_dir, submit_import, Digests, Received};
use super::{empty, Caller, GlanceError, Result};
use crate::AppState;

/// The longest a whole download may take.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest the origin may stay silent (connecting, or between two chunks).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// True when hosts are configured, which turns the method on.
pub fn enabled(state: &AppState) -> bool {
    !state.config.web_download_allowed_hosts.is_empty()
}

/// A configured host as the URL parser writes hosts (lower case, IPv6 in brackets, IDNA).
fn normalized(host: &str) -> Option<String> {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    reqwest::Url::parse(&format!("http://{host}/")).ok().and_then(|u| u.host_str().map(str::to_owned))
}

/// The URL to fetch, or why `uri` does not pass the filter.
pub fn check_uri(allowed: &[String], uri: &str) -> std::result::Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(uri).map_err(|e| format!("{uri:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme {} is not allowed (only http and https)", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URIs with credentials (user:password@host) are refused".to_owned());
    }
    let host = url.host_str().ok_or_else(|| "the URI names no host".to_owned())?;
    if !allowed.iter().any(|a| normalized(a).as_deref() == Some(host)) {
        return Err(format!("the host {host} is not in this Hangar's web_download_allowed_hosts"));
    }
    Ok(url)
}

/// `POST /import` with `web-download`: checks, `queued` → `importing`, and the download in the
/// background. 202 with no body.
pub async fn import(state: &AppState, caller: &Caller, image: &records::ImageDetail, doc: &Value, mut stores: Vec<String>) -> Result<Response> {
    if !enabled(state) {
        return Err(GlanceError::bad_request(
            "Import method web-download is disabled on this Hangar: fetching URLs from the server needs an allow-list of hosts (web_download_allowed_hosts), and none is configured.",
        ));
    }
    let uri = doc
        .get("method")
        .and_then(|m| m.get("uri"))
        .and_then(Value::as_str)
        .ok_or_else(|| GlanceError::bad_request("web-download needs the URI to fetch: {\"method\": {\"name\": \"web-download\", \"uri\": …}}."))?;
    if image.status != "queued" {
        return Err(GlanceError::conflict(format!("Image status is {}: web-download imports need a queued image.", image.status)));
    }
    check_formats(image, StatusCode::CONFLICT)?;
    let url = check_uri(&state.config.web_download_allowed_hosts, uri)
        .map_err(|why| GlanceError::bad_request(format!("URI for web-download does not pass filtering: {why}.")))?;
    if stores.len() > 1 {
        return Err(GlanceError::bad_request("Hangar imports into one store; copy the active image to others with the copy-image method."));
    }
    let backend = stores.pop().unwrap_or_else(|| state.stores.default_backend().name().to_owned());
    let limit = byte_limit(state, image).await?;
    if !state.db.transition_image(&image.id, &["queued"], "importing", "").await? {
        return Err(GlanceError::conflict("Image status transition to importing is not allowed: another upload or import started first."));
    }
    caller.audit(state, "image.import", "image", &image.id, &format!("web-download {url}")).await?;
    let (state, id, user) = (state.clone(), image.id.clone(), caller.me.user_id.clone());
    tokio::spawn(async move { run(state, id, user, url, limit, backend).await });
    Ok(empty(StatusCode::ACCEPTED))
}

/// The background half: download, then hand over to the import job, or restore `queued`.
async fn run(state: AppState, id: String, user: String, url: reqwest::Url, limit: u64, backend: String) {
    let dest = incoming_dir(&state).join(format!("{id}.{:08x}.download", super::rand_ref()));
    let reason = match fetch(&url, &dest, limit).await {
        Ok(got) => match state.db.image_detail(&id).await {
            // Still ours (not deleted, nobody else moved it meanwhile): the import job takes it.
            Ok(Some(image)) if image.status == "importing" => match submit_import(&state, &user, &image, dest.clone(), &got, backend).await {
                Ok(_) => {
                    tracing::info!(image = %id, %url, bytes = got.size, "web-download finished; importing");
                    return;
                }
                Err(e) => format!("web-download of {url} could not be handed to the import: {}", e.message),
            },
            Ok(_) => {
                tracing::info!(image = %id, %url, "web-download finished but the image was deleted or changed meanwhile");
                let _ = tokio::fs::remove_file(&dest).await;
                return;
            }
            Err(e) => format!("web-download of {url} could not be handed to the import: {e}"),
        },
        Err(why) => format!("web-download of {url} failed: {why}"),
    };
    tracing::warn!(image = %id, %reason, "web-download failed; the image is queued again");
    let _ = tokio::fs::remove_file(&dest).await;
    if let Err(e) = state.db.transition_image(&id, &["importing"], "queued", &reason).await {
        tracing::warn!(image = %id, error = %e, "cannot put an image back to queued after a failed web-download");
    }
}

/// Downloads `url` into `dest` (removed by the caller on failure), hashing it, within `limit`
/// bytes and the timeouts.
async fn fetch(url: &reqwest::Url, dest: &FsPath, limit: u64) -> std::result::Result<Received, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(IDLE_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make an HTTP client ({e})"))?;
    let resp = client.get(url.clone()).send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(format!("the server answered {status}; redirects are not followed, give the final URI"));
    }
    if status != reqwest::StatusCode::OK {
        return Err(format!("the server answered {status}"));
    }
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("cannot create the download directory ({e})"))?;
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(|e| format!("cannot create the download file ({e})"))?;
    let mut digests = Digests::start();
    let mut stream = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, stream.next())
            .await
            .map_err(|_| format!("the server sent nothing for {} s", IDLE_TIMEOUT.as_secs()))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| describe(&e))?;
        if digests.update(&chunk).await > limit {
            return Err(too_large(limit));
        }
        file.write_all(&chunk).await.map_err(|e| format!("cannot write the download ({e})"))?;
    }
    file.sync_all().await.map_err(|e| format!("cannot write the download ({e})"))?;
    let got = digests.finish().await.ok_or("cannot hash the download (a digest failed)")?;
    if let Some(n) = declared.filter(|n| *n != got.size) {
        return Err(format!("the server declared {n} bytes but sent {}", got.size));
    }
    Ok(got)
}

fn too_large(limit: u64) -> String {
    format!("the image is larger than the {limit} bytes left in the project's storage quota (or the image size cap)")
}

/// A transfer error with its causes (reqwest's own message is only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    use std::fmt::Write;
    let mut text = if e.is_timeout() { format!("timed out ({e})") } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_filter() {
        let allowed = vec!["127.0.0.1".to_owned(), "images.example.com".to_owned(), "::1".to_owned()];
        assert!(check_uri(&allowed, "http://127.0.0.1:8080/a.qcow2").is_ok());
        assert!(check_uri(&allowed, "https://IMAGES.example.com/a.qcow2").is_ok(), "hosts are compared normalized");
        assert!(check_uri(&allowed, "http://[::1]:9/x").is_ok());
        assert!(check_uri(&allowed, "http://0x7f.0.0.1/x").is_ok(), "the parser normalizes IPv4 spellings");
        for (uri, why) in [
            ("ftp://127.0.0.1/x", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("http://u:p@127.0.0.1/x", "credentials"),
            ("http://u@127.0.0.1/x", "credentials"),
            ("http://localhost/x", "not in"),
            ("http://images.example.com.evil.test/x", "not in"),
            ("http://127.0.0.2/x", "not in"),
            ("not a url", "not a URL"),
        ] {
            let err = check_uri(&allowed, uri).unwrap_err();
            assert!(err.contains(why), "{uri}: {err}");
        }
        assert!(check_uri(&[], "http://127.0.0.1/x").is_err(), "nothing is allowed by an empty list");
    }
}
