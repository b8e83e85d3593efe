//! The browser side of an upload: sniffing a file from its head and tail, and a tus 1.0 client
//! that sends it in checksummed chunks over up to [`MAX_STREAMS`] parallel partial uploads,
//! retries with back-off, and can resume after a reload (its upload URLs are kept in
//! localStorage under a fingerprint of the file).
//!
//! This module compiles for the server too (the page's event handlers reference it), but only
//! ever runs in the browser.

use base64::Engine as _;
use gloo_file::{Blob, File};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Bytes per PATCH: large enough that per-request overhead is small, small enough that a lost
/// connection costs little and the progress bar moves.
pub const DEFAULT_CHUNK: u64 = 8 << 20;
/// Partial uploads in flight at once (one chunk each).
pub const MAX_STREAMS: u64 = 4;
/// Attempts per chunk before the upload pauses with an error.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry delay; doubled per attempt up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: i32 = 500;
pub const MAX_BACKOFF_MS: i32 = 15_000;
/// Where the data plane lives.
pub const ENDPOINT: &str = "/uploads";

// ---- sniffing ------------------------------------------------------------------------------

/// Bytes `[start, end)` of `file`: the Blob slice (what is sent: Chromium streams a Blob body
/// from the file at ~160-230 MiB/s here, but an ArrayBuffer body at ~17 MiB/s) and its bytes as
/// an ArrayBuffer (what is hashed). Neither enters WASM memory.
async fn read_chunk(file: &File, start: u64, end: u64) -> Result<(web_sys::Blob, js_sys::ArrayBuffer), String> {
    let blob: &web_sys::Blob = AsRef::<web_sys::Blob>::as_ref(file);
    let part = blob.slice_with_f64_and_f64(start as f64, end as f64).map_err(|e| format!("cannot read the file: {e:?}"))?;
    let v = JsFuture::from(part.array_buffer()).await.map_err(|e| format!("cannot read the file: {e:?}"))?;
    let bytes = v.dyn_into().map_err(|_| "cannot read the file".to_owned())?;
    Ok((part, bytes))
}

/// `crypto.subtle`, which exists only in a secure context (https, or http on localhost).
fn subtle_crypto() -> Option<web_sys::SubtleCrypto> {
    let crypto = web_sys::window()?.crypto().ok()?;
    let subtle = js_sys::Reflect::get(&crypto, &JsValue::from_str("subtle")).ok()?;
    if subtle.is_undefined() || subtle.is_null() {
        return None;
    }
    subtle.dyn_into().ok()
}

/// SHA-256 of a chunk: WebCrypto (the browser's native code, off the page's thread) where the
/// page is a secure context; the WASM implementation (size-optimised, single-threaded) elsewhere.
async fn sha256_of(buf: &js_sys::ArrayBuffer) -> Vec<u8> {
    if let Some(p) = subtle_crypto().and_then(|s| s.digest_with_str_and_buffer_source("SHA-256", buf).ok()) {
        if let Ok(v) = JsFuture::from(p).await {
            return js_sys::Uint8Array::new(&v).to_vec();
        }
    }
    Sha256::digest(js_sys::Uint8Array::new(buf).to_vec()).to_vec()
}

async fn read_range(file: &File, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let blob: Blob = Blob::from(file.clone()).slice(start, end);
    gloo_file::futures::read_as_bytes(&blob).await.map_err(|e| format!("cannot read the file: {e}"))
}

/// Identifies a file from its first 64 KiB and last 1.5 KiB, plus the few ranges the library
/// asks for. The whole file is never read.
pub async fn sniff_file(file: &File) -> Result<diskimage::Report, String> {
    let size = file.size();
    let mut bytes = diskimage::SparseBytes::new(size);
    let (head, tail) = diskimage::SparseBytes::initial_ranges(size);
    for r in [head, tail] {
        if r.len > 0 {
            bytes.insert(r.offset, read_range(file, r.offset, r.end()).await?);
        }
    }
    loop {
        match diskimage::sniff(&bytes) {
            diskimage::SniffOutcome::Done(report) => return Ok(report),
            diskimage::SniffOutcome::NeedMore(ranges) => {
                for r in ranges {
                    let end = r.end().min(size);
                    bytes.insert(r.offset, read_range(file, r.offset, end).await?);
                }
            }
        }
    }
}

// ---- HTTP helpers --------------------------------------------------------------------------

/// A failed request: `retry` says whether trying again may help (network errors, 5xx, 423).
#[derive(Clone, Debug)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
    pub retry: bool,
}

fn js_err(e: JsValue) -> HttpError {
    HttpError { status: 0, message: format!("{e:?}"), retry: true }
}

async fn fetch(method: &str, url: &str, headers: &[(&str, String)], body: Option<&JsValue>) -> Result<web_sys::Response, HttpError> {
    let window = web_sys::window().ok_or_else(|| js_err(JsValue::from_str("no window")))?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let h = web_sys::Headers::new().map_err(js_err)?;
    h.set("Tus-Resumable", "1.0.0").map_err(js_err)?;
    for (k, v) in headers {
        h.set(k, v).map_err(js_err)?;
    }
    init.set_headers(&h);
    if let Some(b) = body {
        init.set_body(b);
    }
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(js_err)?;
    let resp: web_sys::Response = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(|e| HttpError { status: 0, message: format!("network error: {e:?}"), retry: true })?
        .dyn_into()
        .map_err(js_err)?;
    Ok(resp)
}

async fn text(resp: &web_sys::Response) -> String {
    match resp.text() {
        Ok(p) => JsFuture::from(p).await.ok().and_then(|v| v.as_string()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The server's message from a JSON `{message}` body, or the body itself.
async fn failure(resp: web_sys::Response) -> HttpError {
    let status = resp.status();
    let body = text(&resp).await;
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| if body.trim().is_empty() { format!("HTTP {status}") } else { body.trim().chars().take(300).collect() });
    HttpError { status, message, retry: status >= 500 || status == 423 }
}

fn header(resp: &web_sys::Response, name: &str) -> Option<String> {
    resp.headers().get(name).ok().flatten()
}

/// Waits `ms` milliseconds (browser timer).
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---- the tus client ------------------------------------------------------------------------

/// Creates an upload; returns its URL.
async fn create(length: u64, metadata: &[(&str, &str)], concat: Option<String>) -> Result<String, HttpError> {
    let meta = metadata.iter().map(|(k, v)| format!("{k} {}", b64(v.as_bytes()))).collect::<Vec<_>>().join(",");
    let mut headers = vec![("Upload-Metadata", meta)];
    match concat {
        Some(final_of) => headers.push(("Upload-Concat", final_of)),
        None => headers.push(("Upload-Length", length.to_string())),
    }
    let resp = fetch("POST", ENDPOINT, &headers, None).await?;
    if resp.status() != 201 {
        return Err(failure(resp).await);
    }
    header(&resp, "Location").ok_or_else(|| HttpError { status: 201, message: "the server sent no upload URL".into(), retry: false })
}

/// Creates a part; it names the image so that the server can show the image as `uploading`
/// once the first bytes of any part arrive.
async fn create_partial(length: u64, image_id: &str) -> Result<String, HttpError> {
    let headers = [
        ("Upload-Length", length.to_string()),
        ("Upload-Concat", "partial".into()),
        ("Upload-Metadata", format!("image_id {}", b64(image_id.as_bytes()))),
    ];
    let resp = fetch("POST", ENDPOINT, &headers, None).await?;
    if resp.status() != 201 {
        return Err(failure(resp).await);
    }
    header(&resp, "Location").ok_or_else(|| HttpError { status: 201, message: "the server sent no upload URL".into(), retry: false })
}

/// The server's offset for an upload; None if it no longer exists.
async fn offset(url: &str) -> Result<Option<u64>, HttpError> {
    let resp = fetch("HEAD", url, &[], None).await?;
    match resp.status() {
        200 | 204 => Ok(header(&resp, "Upload-Offset").and_then(|o| o.parse().ok())),
        404 | 410 => Ok(None),
        _ => Err(failure(resp).await),
    }
}

/// Removes an upload on the server (termination).
pub async fn terminate(url: &str) {
    let _ = fetch("DELETE", url, &[], None).await;
}

/// What the page shows and controls while an upload runs.
pub trait Observer {
    /// Bytes confirmed by the server so far, over all streams.
    fn progress(&self, confirmed: u64);
    /// A chunk failed and will be retried after `delay_ms`.
    fn retrying(&self, message: &str, delay_ms: i32);
    /// True when the user paused or cancelled: stop after the current chunk.
    fn stopped(&self) -> bool;
    /// The browser went offline (`false`: the upload waits, however long, without using up
    /// retries) or came back (`true`: it goes on by itself).
    fn network(&self, online: bool);
}

/// False when the browser knows it has no network (`navigator.onLine`). True does not promise
/// a working connection (a hotel Wi-Fi's login page), so requests still retry with back-off.
fn online() -> bool {
    web_sys::window().is_none_or(|w| w.navigator().on_line())
}

fn paused() -> HttpError {
    HttpError { status: 0, message: "paused".into(), retry: false }
}

/// Delay before retry number `attempt + 1`.
fn backoff(attempt: u32) -> i32 {
    FIRST_BACKOFF_MS.saturating_mul(1 << attempt.min(5)).min(MAX_BACKOFF_MS)
}

/// While the browser is offline (the Wi-Fi dropped, the laptop slept), waits until it is back,
/// however long that takes; pause and cancel still work. Returns whether it waited.
async fn wait_online(obs: &dyn Observer) -> Result<bool, HttpError> {
    if online() {
        return Ok(false);
    }
    obs.network(false);
    while !online() {
        if obs.stopped() {
            return Err(paused());
        }
        sleep(500).await;
    }
    obs.network(true);
    Ok(true)
}

/// After a failed request that may succeed if repeated: waits out an offline spell (no attempt
/// used up) or backs off before attempt `*attempt + 1`; gives the error back once the attempts
/// are used up.
async fn before_retry(obs: &dyn Observer, attempt: &mut u32, e: HttpError) -> Result<(), HttpError> {
    if wait_online(obs).await? {
        return Ok(());
    }
    if *attempt + 1 >= MAX_ATTEMPTS {
        return Err(e);
    }
    let delay = backoff(*attempt);
    obs.retrying(&e.message, delay);
    sleep(delay).await;
    *attempt += 1;
    Ok(())
}

/// Runs a request that is safe to repeat (a HEAD, or a part's POST whose duplicate only leaves
/// an empty upload to expire) with the chunks' retry rules: back-off on network errors and 5xx,
/// and no attempts used up while offline.
async fn with_retries<T, Fut: std::future::Future<Output = Result<T, HttpError>>>(
    obs: &dyn Observer,
    mut request: impl FnMut() -> Fut,
) -> Result<T, HttpError> {
    let mut attempt = 0u32;
    loop {
        wait_online(obs).await?;
        match request().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retry => before_retry(obs, &mut attempt, e).await?,
            Err(e) => return Err(e),
        }
    }
}

/// The URLs of one file's upload, kept in localStorage so a reload can resume it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub image_id: String,
    pub image_name: String,
    pub parts: Vec<PartRecord>,
    /// Set once the final (concatenation) upload was created.
    pub final_url: Option<String>,
    /// The storage backend chosen for the image (empty: the server's default).
    #[serde(default)]
    pub store: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub url: String,
    pub start: u64,
    pub end: u64,
}

/// The localStorage key for a file: its name, size and modification time.
pub fn fingerprint(file: &File) -> String {
    let modified = file.last_modified_time().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("hangar-upload:{}:{}:{modified}", file.name(), file.size())
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.local_storage().ok().flatten())
}

pub fn load_resume(key: &str) -> Option<ResumeRecord> {
    storage()?.get_item(key).ok().flatten().and_then(|s| serde_json::from_str(&s).ok())
}

pub fn save_resume(key: &str, rec: &ResumeRecord) {
    if let (Some(s), Ok(json)) = (storage(), serde_json::to_string(rec)) {
        let _ = s.set_item(key, &json);
    }
}

pub fn forget_resume(key: &str) {
    if let Some(s) = storage() {
        let _ = s.remove_item(key);
    }
}

/// Splits `size` bytes into up to [`MAX_STREAMS`] parts of whole chunks.
pub fn plan_parts(size: u64, chunk: u64) -> Vec<(u64, u64)> {
    let chunks = size.div_ceil(chunk).max(1);
    let streams = chunks.min(MAX_STREAMS);
    let per = chunks.div_ceil(streams) * chunk;
    (0..streams).map(|i| (i * per, ((i + 1) * per).min(size))).filter(|(s, e)| e > s || size == 0).collect()
}

/// A chunk ready to send: its range in the file, the Blob slice and its `Upload-Checksum`.
struct Prepared {
    start: u64,
    end: u64,
    body: web_sys::Blob,
    checksum: String,
}

async fn prepare(file: &File, start: u64, end: u64) -> Result<Prepared, String> {
    let (body, bytes) = read_chunk(file, start, end).await?;
    let checksum = format!("sha256 {}", b64(&sha256_of(&bytes).await));
    Ok(Prepared { start, end, body, checksum })
}

/// Sends bytes `[from, part.end)` of `file` to the part's upload, chunk by chunk. While a chunk
/// travels, the next one is read and hashed (that work would otherwise wait for the response;
/// measured here: +10% throughput with the same four chunks in flight).
async fn send_part(
    file: &File,
    part: &PartRecord,
    mut from: u64,
    chunk: u64,
    done: &std::cell::Cell<u64>,
    obs: &dyn Observer,
) -> Result<(), HttpError> {
    let mut attempt = 0u32;
    let mut ready: Option<Prepared> = None;
    while from < part.end {
        if obs.stopped() {
            return Err(paused());
        }
        let end = (from + chunk).min(part.end);
        // The chunk prepared while the last one travelled, unless the offset moved meanwhile.
        let this = match ready.take() {
            Some(p) if p.start == from && p.end == end => p,
            _ => prepare(file, from, end).await.map_err(|m| HttpError { status: 0, message: m, retry: false })?,
        };
        let headers = [
            ("Upload-Offset", (from - part.start).to_string()),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
            ("Upload-Checksum", this.checksum),
        ];
        let next = async {
            // A chunk that cannot be read now is read again (and its error reported) in turn.
            if end < part.end {
                prepare(file, end, (end + chunk).min(part.end)).await.ok()
            } else {
                None
            }
        };
        let (sent, next) = join2(fetch("PATCH", &part.url, &headers, Some(AsRef::<JsValue>::as_ref(&this.body))), next).await;
        ready = next;
        let result = match sent {
            Ok(resp) if resp.status() == 204 || resp.status() == 200 => Ok(()),
            Ok(resp) if resp.status() == 409 => {
                // Our idea of the offset is stale (e.g. a response was lost): ask the server.
                match offset(&part.url).await? {
                    Some(o) => {
                        from = part.start + o;
                        continue;
                    }
                    None => Err(HttpError { status: 404, message: "the upload expired on the server".into(), retry: false }),
                }
            }
            Ok(resp) if resp.status() == 460 => {
                Err(HttpError { status: 460, message: "a chunk was corrupted on the way; sending it again".into(), retry: true })
            }
            Ok(resp) => Err(failure(resp).await),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                done.set(done.get() + (end - from));
                from = end;
                attempt = 0;
            }
            Err(e) if e.retry => {
                before_retry(obs, &mut attempt, e).await?;
                // After a network error the server may have stored part of the chunk.
                if let Ok(Some(o)) = offset(&part.url).await {
                    let server_at = part.start + o;
                    if server_at > from {
                        done.set(done.get() + (server_at - from));
                        from = server_at;
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Uploads `file` for `image_id`, resuming from `record` where possible. Returns when the
/// server has the whole file (the final upload is complete) or with the first unrecoverable
/// error. `record` is kept up to date in localStorage under `key`.
pub async fn upload(file: &File, key: &str, mut record: ResumeRecord, chunk: u64, obs: &dyn Observer) -> Result<(), HttpError> {
    let size = file.size();
    // Resume: ask the server how far each part got; start again if any part is gone.
    let mut starts = Vec::new();
    if !record.parts.is_empty() && record.final_url.is_none() {
        for p in &record.parts {
            let url = p.url.as_str();
            match with_retries(obs, move || offset(url)).await? {
                Some(o) => starts.push(p.start + o.min(p.end - p.start)),
                None => {
                    starts.clear();
                    break;
                }
            }
        }
        if starts.len() != record.parts.len() {
            record.parts.clear();
        }
    }
    if record.final_url.is_some() {
        // Already complete on the server; nothing left to send.
        obs.progress(size);
        return Ok(());
    }
    if record.parts.is_empty() {
        for (start, end) in plan_parts(size, chunk) {
            let image_id = record.image_id.as_str();
            let url = with_retries(obs, move || create_partial(end - start, image_id)).await?;
            record.parts.push(PartRecord { url, start, end });
            starts.push(start);
        }
        save_resume(key, &record);
    }
    let done = std::cell::Cell::new(starts.iter().zip(&record.parts).map(|(s, p)| s - p.start).sum::<u64>());
    obs.progress(done.get());
    let sends = record.parts.iter().zip(&starts).map(|(p, s)| send_part(file, p, *s, chunk, &done, obs));
    let ticker = async {
        loop {
            obs.progress(done.get());
            sleep(250).await;
        }
    };
    let all = futures_join_all(sends);
    let results = select_first(all, ticker).await;
    obs.progress(done.get());
    for r in results {
        r?;
    }
    let parts = record.parts.iter().map(|p| p.url.as_str()).collect::<Vec<_>>().join(" ");
    let name = file.name();
    let mut meta = vec![("image_id", record.image_id.as_str()), ("filename", name.as_str()), ("name", record.image_name.as_str())];
    if !record.store.is_empty() {
        meta.push(("store", record.store.as_str()));
    }
    // Not repeated on its own (a lost answer may hide a final upload that exists): a failure
    // here leaves the record for Resume, which finds the parts complete and asks again.
    wait_online(obs).await?;
    let url = create(size, &meta, Some(format!("final;{parts}"))).await?;
    record.final_url = Some(url);
    save_resume(key, &record);
    Ok(())
}

/// Runs all futures to completion concurrently (single-threaded: they interleave at awaits).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(out.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

/// Runs two futures concurrently (interleaved at awaits) and returns both outputs.
async fn join2<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(move |cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            if let (Some(x), Some(y)) = (ra.take(), rb.take()) {
                return std::task::Poll::Ready((x, y));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Polls `main` and `side` together; returns `main`'s output (`side` never finishes).
async fn select_first<A: std::future::Future, B: std::future::Future<Output = ()>>(main: A, side: B) -> A::Output {
    let mut main = Box::pin(main);
    let mut side = Box::pin(side);
    std::future::poll_fn(move |cx| {
        if let std::task::Poll::Ready(v) = main.as_mut().poll(cx) {
            return std::task::Poll::Ready(v);
        }
        let _ = side.as_mut().poll(cx);
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::plan_parts;

    #[test]
    fn files_split_into_at_most_four_parts_of_whole_chunks() {
        let c = 8 << 20;
        assert_eq!(plan_parts(100, c), vec![(0, 100)]);
        assert_eq!(plan_parts(3 * c, c), vec![(0, c), (c, 2 * c), (2 * c, 3 * c)]);
        let parts = plan_parts(10 * c + 5, c);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.first().unwrap().0, 0);
        assert_eq!(parts.last().unwrap().1, 10 * c + 5);
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0 && (w[0].1 - w[0].0) % c == 0));
        assert_eq!(plan_parts(0, c), vec![(0, 0)]);
    }
}
