//! The `web-download` import method: `POST /v2/images/{id}/import` with
//! `{"method":{"name":"web-download","uri":"https://…"}}` makes Hangar fetch the image itself.
//!
//! Fetching URLs from the server is an SSRF risk, so the method is off unless the operator names
//! the hosts it may reach (`web_download_allowed_hosts`; Glance's `[import_filtering_opts]`
//! allow-list). A URI is refused with 400 unless its scheme is `http` or `https`, it carries no
//! credentials, its host (as the URL parser normalizes it) is exactly one of those hosts, and its
//! port (the one it names, else its scheme's default) is one that host's entries allow: a bare
//! host allows ports 80 and 443 only ([`DEFAULT_PORTS`]), an entry `host:port` (`[v6]:port`)
//! allows exactly that port, so the other services of an allowed host stay out of reach.
//! Redirects are not followed (a 3xx is a failure: a redirect could lead off the list), proxies
//! from the environment are not used, and the download is bounded in time ([`TOTAL_TIMEOUT`],
//! [`IDLE_TIMEOUT`]) and in bytes (the project's remaining byte quota and Glance's image size
//! cap, as `PUT /file`).
//!
//! As in Glance, the answer is 202 at once and the image is `importing` while the body
//! arrives. The bytes then become the same `import` job as `PUT /file`'s, so the inspector and
//! the storage matrix judge them. If the download fails, its partial file is removed and the
//! image goes back to `queued` (as a failed `PUT /file` does) with the reason in its status
//! reason (shown by the dashboard), so the client may try again. Every connection-level failure
//! (refused, reset, unknown host, TLS, a timeout, a body cut off) gives one and the same reason,
//! [`unreachable_reason`], so the answer does not tell an open port from a closed one; the
//! detail goes to the log. The origin's HTTP status (404, 500…) is reported as such.

use std::path::Path as FsPath;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::data::{incoming_dir, submit_import, Digests, Received};
use super::{empty, Caller, GlanceError, Result};
use crate::AppState;
use domain::ImageStatus;
use imageops::Arrival;
use imageops::BodyHold;

/// The longest a whole download may take.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest the origin may stay silent (connecting, or between two chunks).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// True when hosts are configured, which turns the method on.
pub fn enabled(state: &AppState) -> bool {
    !state.config.web_download_allowed_hosts.is_empty()
}

/// The ports a bare host in `web_download_allowed_hosts` allows (an entry `host:port` allows
/// exactly its own port instead).
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// A configured host as the URL parser writes hosts (lower case, IPv6 in brackets, IDNA).
fn normalized(host: &str) -> Option<String> {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    reqwest::Url::parse(&format!("http://{host}/")).ok().and_then(|u| u.host_str().map(str::to_owned))
}

/// One `web_download_allowed_hosts` entry: its host (normalized) and the port it names, None
/// for a bare host (`host`, `::1`, `[::1]`; then [`DEFAULT_PORTS`]). `host:port` and
/// `[v6]:port` name a port; an entry that parses as neither allows nothing.
fn allowed_entry(entry: &str) -> Option<(String, Option<u16>)> {
    let entry = entry.trim();
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, if after.is_empty() { None } else { Some(after.strip_prefix(':')?) })
    } else {
        match entry.split_once(':') {
            // One colon: host:port. More: a bare IPv6 address.
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (entry, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok().filter(|n| *n > 0)?),
        Some(_) => return None,
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', '[', ']']) {
        return None;
    }
    Some((normalized(host)?, port))
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
    let mut ports: Vec<u16> = allowed
        .iter()
        .map(String::as_str)
        .filter_map(allowed_entry)
        .filter(|(h, _)| h == host)
        .flat_map(|(_, port)| port.map_or(DEFAULT_PORTS.to_vec(), |p| vec![p]))
        .collect();
    if ports.is_empty() {
        return Err(format!("the host {host} is not in this Hangar's web_download_allowed_hosts"));
    }
    ports.sort_unstable();
    ports.dedup();
    // http and https always have a default port.
    let port = url.port_or_known_default().ok_or_else(|| "the URI names no port".to_owned())?;
    if !ports.contains(&port) {
        let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        return Err(format!(
            "port {port} of {host} is not allowed; the allowed ports there are {list} \
             (web_download_allowed_hosts: a bare host allows 80 and 443, host:port that port)"
        ));
    }
    Ok(url)
}

/// `POST /import` with `web-download`: checks, `queued` → `importing`, and the download in the
/// background. 202 with no body.
pub async fn import(
    state: &AppState,
    caller: &Caller,
    image: &records::ImageDetail,
    doc: &Value,
    mut stores: Vec<String>,
) -> Result<Response> {
    if !enabled(state) {
        return Err(GlanceError::bad_request(
            "Import method web-download is disabled on this Hangar: fetching URLs from the server needs an allow-list of hosts (web_download_allowed_hosts), and none is configured.",
        ));
    }
    let uri = doc.get("method").and_then(|m| m.get("uri")).and_then(Value::as_str).ok_or_else(|| {
        GlanceError::bad_request("web-download needs the URI to fetch: {\"method\": {\"name\": \"web-download\", \"uri\": …}}.")
    })?;
    let url = check_uri(&state.config.web_download_allowed_hosts, uri)
        .map_err(|why| GlanceError::bad_request(format!("URI for web-download does not pass filtering: {why}.")))?;
    if stores.len() > 1 {
        return Err(GlanceError::bad_request("Hangar imports into one store; copy the active image to others with the copy-image method."));
    }
    let store = stores.pop();
    let admitted = state.images.admit_data(&caller.authn, &image.id, Arrival::Download, store.as_deref()).await?;
    let (limit, backend) = (admitted.byte_limit, admitted.backend);
    if !state.db.transition_image(&image.id, &[ImageStatus::Queued], ImageStatus::Importing, "").await? {
        return Err(GlanceError::conflict("Image status transition to importing is not allowed: another upload or import started first."));
    }
    // The download holds an upload slot and its bytes of the project's quota as they arrive,
    // as a PUT does.
    let hold = match BodyHold::start(&state.db, image, "upload", None).await {
        Ok(h) => h,
        Err(e) => {
            state.db.transition_image(&image.id, &[ImageStatus::Importing], ImageStatus::Queued, "").await?;
            return Err(e.into());
        }
    };
    caller.audit(state, "image.import", "image", &image.id, &format!("web-download {url}")).await?;
    let (state, id, user) = (state.clone(), image.id.clone(), caller.me.user_id.clone());
    tokio::spawn(async move { run(state, id, user, url, limit, backend, hold).await });
    Ok(empty(StatusCode::ACCEPTED))
}

/// The background half: download, then hand over to the import job, or restore `queued`.
async fn run(state: AppState, id: String, user: String, url: reqwest::Url, limit: u64, backend: String, mut hold: BodyHold) {
    let dest = incoming_dir(&state).join(format!("{id}.{:08x}.download", super::rand_ref()));
    let reason = match fetch(&url, &dest, limit, &mut hold).await {
        Ok(got) => match state.db.image_detail(&id).await {
            // Still ours (not deleted, nobody else moved it meanwhile): the import job takes it,
            // with the bytes held for it.
            Ok(Some(image)) if image.status == ImageStatus::Importing => match hand_over(&state, &user, &image, &dest, &got, backend).await
            {
                Ok(()) => {
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
        Err(Failure::Unreachable) => unreachable_reason(&url),
        Err(Failure::Other(why)) => format!("web-download of {url} failed: {why}"),
    };
    tracing::warn!(image = %id, %reason, "web-download failed; the image is queued again");
    let _ = tokio::fs::remove_file(&dest).await;
    for purpose in ["upload", "import"] {
        if let Err(e) = state.db.release_quota(&id, purpose).await {
            tracing::warn!(image = %id, error = %e, "cannot give back the quota a failed web-download held");
        }
    }
    if let Err(e) = state.db.transition_image(&id, &[ImageStatus::Importing], ImageStatus::Queued, &reason).await {
        tracing::warn!(image = %id, error = %e, "cannot put an image back to queued after a failed web-download");
    }
}

/// Turns the download's hold into the import's and queues the import job.
async fn hand_over(
    state: &AppState,
    user: &str,
    image: &records::ImageDetail,
    dest: &FsPath,
    got: &Received,
    backend: String,
) -> Result<()> {
    state.db.move_quota_hold(&image.id, "upload", "import", got.size).await?;
    submit_import(state, user, image, dest.to_path_buf(), got, backend).await?;
    Ok(())
}

/// Why a download failed.
enum Failure {
    /// Connection-level: refused, reset, unknown host, TLS, a timeout, a body cut off. One
    /// reason for all ([`unreachable_reason`]), so that it does not tell an open port from a
    /// closed one (or an existing host from another); the detail is logged for the operator.
    Unreachable,
    /// Anything else, said as it is: the origin's HTTP status, the size bound, a local failure.
    Other(String),
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Other(why)
    }
}

/// The status reason of an image whose origin could not be reached, whatever the kind of
/// failure (it names the host only: not the port, not the cause).
fn unreachable_reason(url: &reqwest::Url) -> String {
    format!("web-download failed: the server at {} could not be reached", url.host_str().unwrap_or("the URI's host"))
}

/// Logs a connection-level failure in full; the image is told only [`Failure::Unreachable`].
fn cannot_reach(url: &reqwest::Url, detail: &str) -> Failure {
    tracing::info!(%url, error = %detail, "web-download: the origin could not be reached");
    Failure::Unreachable
}

/// Downloads `url` into `dest` (removed by the caller on failure), hashing it, within `limit`
/// bytes and the timeouts.
async fn fetch(url: &reqwest::Url, dest: &FsPath, limit: u64, hold: &mut BodyHold) -> std::result::Result<Received, Failure> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(IDLE_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make an HTTP client ({e})"))?;
    let resp = client.get(url.clone()).send().await.map_err(|e| cannot_reach(url, &describe(&e)))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(format!("the server answered {status}; redirects are not followed, give the final URI").into());
    }
    if status != reqwest::StatusCode::OK {
        return Err(format!("the server answered {status}").into());
    }
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit).into());
    }
    if let Some(n) = declared {
        hold.cover(n).await.map_err(|e| e.to_string())?;
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
            .map_err(|_| cannot_reach(url, &format!("the server sent nothing for {} s", IDLE_TIMEOUT.as_secs())))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| cannot_reach(url, &describe(&e)))?;
        let size = digests.update(&chunk).await;
        if size > limit {
            return Err(too_large(limit).into());
        }
        hold.cover(size).await.map_err(|e| e.to_string())?;
        file.write_all(&chunk).await.map_err(|e| format!("cannot write the download ({e})"))?;
    }
    file.sync_all().await.map_err(|e| format!("cannot write the download ({e})"))?;
    let got = digests.finish().await.ok_or_else(|| "cannot hash the download (a digest failed)".to_owned())?;
    if let Some(n) = declared.filter(|n| *n != got.size) {
        return Err(format!("the server declared {n} bytes but sent {}", got.size).into());
    }
    Ok(got)
}

fn too_large(limit: u64) -> String {
    format!("the image is larger than the {limit} bytes left in the project's storage quota (or the image size cap)")
}

/// A transfer error with its causes (reqwest's own message is only "error sending request"),
/// for the log.
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
        let allowed = vec![
            "127.0.0.1".to_owned(),
            "127.0.0.1:8080".to_owned(),
            "images.example.com".to_owned(),
            "::1".to_owned(),
            "[::1]:9".to_owned(),
            "10.0.0.7:8443".to_owned(),
        ];
        assert!(check_uri(&allowed, "http://127.0.0.1:8080/a.qcow2").is_ok(), "a host:port entry allows its port");
        assert!(check_uri(&allowed, "http://127.0.0.1/a.qcow2").is_ok(), "a bare host allows 80");
        assert!(check_uri(&allowed, "https://127.0.0.1/a.qcow2").is_ok(), "and 443");
        assert!(check_uri(&allowed, "http://127.0.0.1:80/a.qcow2").is_ok());
        assert!(check_uri(&allowed, "http://127.0.0.1:443/a.qcow2").is_ok(), "the port counts, not the scheme");
        assert!(check_uri(&allowed, "https://IMAGES.example.com/a.qcow2").is_ok(), "hosts are compared normalized");
        assert!(check_uri(&allowed, "http://[::1]:9/x").is_ok());
        assert!(check_uri(&allowed, "http://[::1]/x").is_ok());
        assert!(check_uri(&allowed, "http://0x7f.0.0.1/x").is_ok(), "the parser normalizes IPv4 spellings");
        assert!(check_uri(&allowed, "https://10.0.0.7:8443/x").is_ok());
        for (uri, why) in [
            ("ftp://127.0.0.1/x", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("http://u:p@127.0.0.1/x", "credentials"),
            ("http://u@127.0.0.1/x", "credentials"),
            ("http://localhost/x", "not in"),
            ("http://images.example.com.evil.test/x", "not in"),
            ("http://127.0.0.2/x", "not in"),
            ("not a url", "not a URL"),
            // Other ports of an allowed host: refused, naming the ports that are allowed.
            ("http://127.0.0.1:8081/x", "port 8081 of 127.0.0.1 is not allowed; the allowed ports there are 80, 443, 8080"),
            ("http://127.0.0.1:22/x", "port 22 of 127.0.0.1"),
            ("http://images.example.com:8080/x", "the allowed ports there are 80, 443 "),
            ("http://[::1]:10/x", "port 10 of [::1] is not allowed; the allowed ports there are 9, 80, 443"),
            // A host:port entry allows that port only, not 80 or 443.
            ("http://10.0.0.7/x", "port 80 of 10.0.0.7 is not allowed; the allowed ports there are 8443"),
            ("https://10.0.0.7/x", "port 443 of 10.0.0.7"),
        ] {
            let err = check_uri(&allowed, uri).unwrap_err();
            assert!(err.contains(why), "{uri}: {err}");
        }
        assert!(check_uri(&[], "http://127.0.0.1/x").is_err(), "nothing is allowed by an empty list");
        // Entries that parse as nothing allow nothing.
        for bad in ["h:", "h:x", "h:0", "h:65536", "[::1", "[::1]x", "u@h", "h/x"] {
            assert_eq!(allowed_entry(bad), None, "{bad}");
            assert!(check_uri(&[bad.to_owned()], "http://h/x").is_err(), "{bad}");
        }
        assert_eq!(allowed_entry("[::1]:9"), Some(("[::1]".to_owned(), Some(9))));
        assert_eq!(allowed_entry("::1"), Some(("[::1]".to_owned(), None)));
        assert_eq!(allowed_entry("Images.Example.com:8443"), Some(("images.example.com".to_owned(), Some(8443))));
    }

    #[test]
    fn connection_failures_give_one_reason() {
        let reason = |u: &str| unreachable_reason(&reqwest::Url::parse(u).unwrap());
        assert_eq!(reason("http://127.0.0.1:1/a"), reason("https://127.0.0.1:8443/b?c"), "neither the port nor the path shows");
        assert_eq!(reason("http://127.0.0.1/a"), "web-download failed: the server at 127.0.0.1 could not be reached");
    }
}
