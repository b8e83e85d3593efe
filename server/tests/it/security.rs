//! Stored and reflected script injection through the real router: every field a user controls
//! that a page shows is filled with markup-breaking text (through the dashboard's server
//! functions, the Glance API and, where only the server writes a field, the database), then
//! every page that shows one is fetched and must show it escaped, inert and intact, under the
//! security headers (a nonce-based Content-Security-Policy on every page, `nosniff`,
//! `Referrer-Policy`, `X-Frame-Options` on every response, `no-store` on pages).

use crate::common;
use domain::{ImageStatus, JobStatus, LocationStatus, Visibility};

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use common::{seed_accounts, token, Auth, Reply, TestApp, HOST, PASSWORD};
use records::NewImage;
use serde_json::json;

/// Ends the document title early and runs a script.
const P_TITLE: &str = "x</title><script>alert(1)</script>";
/// Ends a `<textarea>` (whose content the renderer does not escape) and runs a handler.
const P_TEXTAREA: &str = "</textarea><img src=x onerror=alert(2)>";
/// Ends a double-quoted attribute and opens an element with a handler.
const P_ATTR: &str = "\"><svg onload=alert(3)>";
/// Ends a single-quoted attribute and opens an element.
const P_QUOTE: &str = "'><b>4</b>";
/// Ends a `<noscript>` and runs a script.
const P_NOSCRIPT: &str = "</noscript><script>alert(5)</script>";
/// Ends a `<style>` and runs a script.
const P_STYLE: &str = "</style><script>alert(6)</script>";
/// Opens a comment that swallows the rest of the page.
const P_COMMENT: &str = "<!--unclosed-7";

const PAYLOADS: [&str; 7] = [P_TITLE, P_TEXTAREA, P_ATTR, P_QUOTE, P_NOSCRIPT, P_STYLE, P_COMMENT];

/// What a page shows when one of the payloads got into its markup unescaped. (Leptos writes
/// comments of its own, so the comment payload carries a marker of its own.)
const MARKERS: [&str; 5] = ["<script>alert(", "<img src=x onerror", "<svg onload", "<b>4</b>", "<!--unclosed"];

/// Every payload in one string (a field that holds them all).
fn all_payloads() -> String {
    PAYLOADS.join(" | ")
}

/// `s` percent-encoded for a form body or a query string (every byte but the unreserved ones).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The character a named or numeric character reference (without `&` and `;`) stands for.
fn entity_char(entity: &str) -> Option<char> {
    match entity {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok()
            } else {
                entity.strip_prefix('#').and_then(|d| d.parse::<u32>().ok())
            };
            code.and_then(char::from_u32)
        }
    }
}

/// `s` with its character references decoded once: the text a browser shows for escaped HTML.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|end| *end <= 10).and_then(|end| entity_char(&rest[1..end]).map(|c| (c, end + 1)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The raw content of the document's `<title>` (the first one: the head's).
fn title_of(body: &str) -> Option<&str> {
    let open = body.find("<title")?;
    let start = open + body[open..].find('>')? + 1;
    let end = start + body[start..].find("</title>")?;
    Some(&body[start..end])
}

/// The raw content of the `<textarea>` whose id is `id` (whatever the order of its attributes).
fn textarea_of<'a>(body: &'a str, id: &str) -> Option<&'a str> {
    let at = body.find(&format!(" id=\"{id}\""))?;
    let open = body[..at].rfind('<')?;
    if !body[open..].starts_with("<textarea") {
        return None;
    }
    let start = at + body[at..].find('>')? + 1;
    let end = start + body[start..].find("</textarea>")?;
    Some(&body[start..end])
}

/// The raw value of attribute `attr` of the element whose id is `id` (double-quoted values).
fn attribute_of<'a>(body: &'a str, id: &str, attr: &str) -> Option<&'a str> {
    let at = body.find(&format!(" id=\"{id}\""))?;
    let open = body[..at].rfind('<')?;
    let close = at + body[at..].find('>')?;
    let tag = &body[open..close];
    let needle = format!(" {attr}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// Every `<script …>` start tag of `body`.
fn script_tags(body: &str) -> Vec<&str> {
    body.match_indices("<script").filter_map(|(i, _)| body[i..].find('>').map(|end| &body[i..=i + end])).collect()
}

/// Every `nonce="…"` attribute value of `body`.
fn nonce_attributes(body: &str) -> Vec<&str> {
    body.match_indices(" nonce=\"")
        .filter_map(|(i, m)| {
            let start = i + m.len();
            body[start..].find('"').map(|end| &body[start..start + end])
        })
        .collect()
}

fn header_values(r: &Reply, name: &str) -> Vec<String> {
    r.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("(not visible ASCII)").to_owned()).collect()
}

/// The headers every response carries, pages and API answers alike.
fn check_every_response_headers(what: &str, r: &Reply, failures: &mut Vec<String>) {
    for (name, want) in [("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin"), ("x-frame-options", "DENY")] {
        let got = header_values(r, name);
        if got.len() != 1 || !got[0].trim().eq_ignore_ascii_case(want) {
            failures.push(format!("{what}: {name} is {got:?}, want exactly one {want:?}"));
        }
    }
}

/// A CSP as (directive, its values), directive names lower-cased.
fn directives(csp: &str) -> Vec<(String, Vec<String>)> {
    csp.split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let mut words = d.split_ascii_whitespace();
            let name = words.next().unwrap_or_default().to_ascii_lowercase();
            (name, words.map(str::to_owned).collect())
        })
        .collect()
}

/// The headers of an HTML page, and its inline scripts against its policy. Returns the nonce.
fn check_page_headers(what: &str, r: &Reply, failures: &mut Vec<String>) -> Option<String> {
    check_every_response_headers(what, r, failures);
    let ctype = header_values(r, "content-type");
    if !ctype.first().is_some_and(|c| c.starts_with("text/html")) {
        failures.push(format!("{what}: content-type {ctype:?}, want text/html"));
    }
    let cache = header_values(r, "cache-control");
    if !cache.iter().any(|c| c.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-store"))) {
        failures.push(format!("{what}: cache-control {cache:?}, want no-store"));
    }
    let csps = header_values(r, "content-security-policy");
    let [csp] = csps.as_slice() else {
        failures.push(format!("{what}: want exactly one content-security-policy header, got {csps:?}"));
        return None;
    };
    if csp.to_ascii_lowercase().contains("'unsafe-inline'") {
        failures.push(format!("{what}: the policy allows 'unsafe-inline': {csp}"));
    }
    let dirs = directives(csp);
    let directive = |name: &str| dirs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    for name in ["frame-ancestors", "object-src", "base-uri"] {
        if directive(name) != Some(vec!["'none'".to_owned()]) {
            failures.push(format!("{what}: want {name} 'none' in {csp}"));
        }
    }
    let Some(script_src) = directive("script-src") else {
        failures.push(format!("{what}: no script-src in {csp}"));
        return None;
    };
    for want in ["'self'", "'wasm-unsafe-eval'"] {
        if !script_src.iter().any(|s| s == want) {
            failures.push(format!("{what}: script-src lacks {want}: {csp}"));
        }
    }
    let nonces: Vec<&str> = script_src.iter().filter_map(|s| s.strip_prefix("'nonce-").and_then(|n| n.strip_suffix('\''))).collect();
    let [nonce] = nonces.as_slice() else {
        failures.push(format!("{what}: want exactly one 'nonce-…' in script-src: {csp}"));
        return None;
    };
    let nonce = (*nonce).to_owned();
    if nonce.len() < 16 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')) {
        failures.push(format!("{what}: the nonce {nonce:?} is not 16 or more base64 characters"));
    }
    // Leptos's inline scripts (the hydration loader, resource data) carry the header's nonce.
    let attrs = nonce_attributes(&r.body);
    if attrs.is_empty() {
        failures.push(format!("{what}: no element carries the nonce (the hydration script should)"));
    }
    for a in attrs {
        if a != nonce {
            failures.push(format!("{what}: nonce=\"{a}\" in the page, but the policy's nonce is {nonce:?}"));
        }
    }
    let wanted = format!(" nonce=\"{nonce}\"");
    for tag in script_tags(&r.body) {
        if !tag.contains(" src=") && !tag.contains(&wanted) {
            failures.push(format!("{what}: inline script without the nonce: {tag}"));
        }
    }
    Some(nonce)
}

/// No payload reached the markup unescaped, and the title holds no markup.
fn check_escaped(what: &str, body: &str, failures: &mut Vec<String>) {
    for marker in MARKERS {
        if let Some(at) = body.find(marker) {
            let from = body[..at].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
            let to = body[at..].char_indices().nth(120).map_or(body.len(), |(i, _)| at + i);
            failures.push(format!("{what}: unescaped {marker:?} in the page: …{}…", &body[from..to]));
        }
    }
    match title_of(body) {
        None => failures.push(format!("{what}: no <title>")),
        Some(t) if t.contains('<') || t.contains('>') => failures.push(format!("{what}: markup in the <title>: {t:?}")),
        Some(_) => {}
    }
}

/// One page request and what it must show.
struct Visit {
    who: &'static str,
    path: String,
    status: StatusCode,
    /// The document title a browser shows, when the page's title holds user text.
    title: Option<String>,
    /// Text the page must show (after decoding character references): proof that the field
    /// reached the page, so the escaping checks are not vacuous.
    shows: Vec<String>,
}

fn visit(who: &'static str, path: impl Into<String>, title: Option<String>, shows: &[&str]) -> Visit {
    Visit { who, path: path.into(), status: StatusCode::OK, title, shows: shows.iter().copied().map(str::to_owned).collect() }
}

async fn glance(app: &TestApp, method: &str, uri: &str, tok: &str, ctype: Option<&str>, body: Body) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "application/json")
        .header("x-auth-token", tok);
    if let Some(c) = ctype {
        b = b.header(header::CONTENT_TYPE, c);
    }
    app.send(b.body(body).unwrap()).await
}

fn ok(what: &str, r: &Reply) {
    assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
}

/// A reflected error: the URL a failed form post without JavaScript comes back to, carrying the
/// server function's error (`__path`, `__err`), which the page's `ServerAction` shows.
fn error_in_url(path: &str, endpoint: &str, message: &str) -> String {
    let err = json!({ "code": "bad-request", "message": message }).to_string();
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(err);
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}__path={}&__err={}", enc(&format!("/api/{endpoint}")), enc(&encoded))
}

#[tokio::test]
async fn every_user_controlled_field_reaches_pages_escaped() {
    // Two backends of the same kind, so a copy between them follows the matrix (whose reason,
    // written by an administrator, then becomes the job's error).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let config = server::Config {
        data_dir: root.join("data"),
        storage: common::local_backends(&root, &["local", "second"]),
        ..server::Config::default()
    };
    let app = common::spawn_app_with(dir, config).await;
    let (p1, p2) = seed_accounts(&app).await;
    let db = app.state.db.clone();

    let admin = app.sign_in("admin", PASSWORD).await;
    let member = app.sign_in("member", PASSWORD).await;
    let other = app.sign_in("other", PASSWORD).await;
    let (as_admin, as_member) = (Auth::Cookie(admin.clone()), Auth::Cookie(member.clone()));
    // The administrator acts in p1 (as a member there), like the member.
    ok("switch_project", &app.call("switch_project", &format!("project_id={p1}"), &as_admin).await);

    // --- Image A, through the dashboard: the upload form, then the edit form. ---
    let tags_text = PAYLOADS.join(", ");
    let form = format!(
        "form[name]={}&form[disk_format]=qcow2&form[container_format]=bare&form[visibility]=private\
         &form[description]={}&form[min_disk]=0&form[min_ram]=0&form[architecture]={}&form[os_distro]={}\
         &form[os_version]={}&form[protected]=false&form[tags]={}&form[size]=1024",
        enc(P_TITLE),
        enc(P_TEXTAREA),
        enc(P_NOSCRIPT),
        enc(P_STYLE),
        enc(P_COMMENT),
        enc(&tags_text)
    );
    let created = app.call("create_image", &form, &as_admin).await;
    ok("create_image", &created);
    let a = created.json().as_str().expect("create_image answers the image id").to_owned();
    let props = [
        ("description", P_TEXTAREA),
        ("os_distro", P_ATTR),
        ("architecture", P_QUOTE),
        ("note_title", P_TITLE),
        ("note_noscript", P_NOSCRIPT),
        ("note_style", P_STYLE),
        ("note_comment", P_COMMENT),
    ];
    let props_text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let form = format!(
        "image_id={a}&name={}&visibility=private&min_disk=0&min_ram=0&tags={}&properties={}",
        enc(P_TITLE),
        enc(&tags_text),
        enc(&props_text)
    );
    ok("update_image", &app.call("update_image", &form, &as_member).await);

    // --- Image B, through the Glance API: create, JSON-patch, a tag; then shared with p2. ---
    let member_token = token(&app, "member", &p1).await;
    let r = glance(
        &app,
        "POST",
        "/image/v2/images",
        &member_token,
        Some("application/json"),
        Body::from(json!({"name": "glance-made", "disk_format": "qcow2", "container_format": "bare", "visibility": "shared"}).to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "Glance create: {}", r.body);
    let b = r.json()["id"].as_str().unwrap().to_owned();
    let ops = json!([
        {"op": "replace", "path": "/name", "value": P_STYLE},
        {"op": "add", "path": "/description", "value": P_TEXTAREA},
        {"op": "add", "path": "/hw_note", "value": P_COMMENT},
        {"op": "add", "path": "/os_distro", "value": P_NOSCRIPT},
        {"op": "replace", "path": "/tags", "value": [P_TITLE, P_QUOTE]}
    ]);
    let r = glance(
        &app,
        "PATCH",
        &format!("/image/v2/images/{b}"),
        &member_token,
        Some("application/openstack-images-v2.1-json-patch"),
        Body::from(ops.to_string()),
    )
    .await;
    ok("Glance PATCH", &r);
    let r = glance(&app, "PUT", &format!("/image/v2/images/{b}/tags/{}", enc(P_ATTR)), &member_token, None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "Glance tag: {}", r.body);
    ok("share_image", &app.call("share_image", &format!("image_id={b}&project=p2"), &as_member).await);

    // --- Image C, refused at import: the reason and findings users see (the inspector quotes
    // what it found inside the file, e.g. a backing file's name). ---
    let c = db
        .create_image(&NewImage {
            name: P_NOSCRIPT.into(),
            disk_format: Some(domain::DiskFormat::Qcow2),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let findings = json!([
        {"severity": "error", "message": format!("backing file {P_TITLE} {P_ATTR}")},
        {"severity": "warning", "message": format!("{P_TEXTAREA} {P_COMMENT}")}
    ]);
    db.kill_image(&c, &format!("Refused: {}", all_payloads()), &findings.to_string()).await.unwrap();

    // --- The storage matrix: an administrator's reason for a cell, which users see on the
    // matrix, on image pages and as the error of a copy the cell refuses. ---
    let reason = all_payloads();
    let form = format!("kind=local&format=vdi&action=refuse&reason={}", enc(&reason));
    ok("set_matrix_cell", &app.call("set_matrix_cell", &form, &as_admin).await);

    // --- Image D: active on `local` as VDI; its copy to `second` is refused by that cell. ---
    let d = db
        .create_image(&NewImage {
            name: P_QUOTE.into(),
            disk_format: Some(domain::DiskFormat::Vdi),
            container_format: Some(domain::ContainerFormat::Bare),
            visibility: Some(Visibility::Private),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    assert!(db.transition_image(&d, &[ImageStatus::Queued], ImageStatus::Active, "").await.unwrap());
    let key = format!("{d}.vdi");
    std::fs::create_dir_all(root.join("local")).unwrap();
    std::fs::create_dir_all(root.join("second")).unwrap();
    std::fs::write(root.join("local").join(&key), b"0123456789").unwrap();
    db.put_location(&records::LocationRow {
        image_id: d.clone(),
        backend: "local".into(),
        key,
        disk_format: domain::ImageFormat::Vdi,
        size: 10,
        checksum: None,
        os_hash_value: None,
        status: LocationStatus::Active,
        created_at: String::new(),
    })
    .await
    .unwrap();
    let copied = app.call("copy_image", &format!("image_id={d}&backend=second"), &as_member).await;
    ok("copy_image", &copied);
    let job_id = copied.json().as_str().expect("copy_image answers the job id").to_owned();
    let mut job = db.job(&job_id).await.unwrap().unwrap();
    for _ in 0..300 {
        if !matches!(job.status.as_str(), "queued" | "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        job = db.job(&job_id).await.unwrap().unwrap();
    }
    assert_eq!(job.status, JobStatus::Failed, "the matrix refuses the copy: {job:?}");
    assert!(job.error.contains(P_TEXTAREA), "the job's error quotes the cell's reason: {}", job.error);

    // --- Tokens: the member names one after each payload, the administrator one. ---
    for p in PAYLOADS {
        ok("create_token", &app.call("create_token", &format!("name={}&project_id={p1}", enc(p)), &as_member).await);
    }
    ok("create_token", &app.call("create_token", &format!("name={}&project_id={p1}", enc(P_ATTR)), &as_admin).await);

    // --- Projects: descriptions are free text; names are refused unless plain. ---
    let form = format!("name=web-team&description={}", enc(&format!("{P_ATTR} {P_QUOTE}")));
    ok("admin_create_project", &app.call("admin_create_project", &form, &as_admin).await);
    let form = format!("project_id={p2}&name=p2&description={}", enc(P_TEXTAREA));
    ok("admin_update_project", &app.call("admin_update_project", &form, &as_admin).await);
    let r = app.call("admin_create_project", &format!("name={}", enc(P_TITLE)), &as_admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a project name with markup: {}", r.body);

    // --- Users: names with markup are refused; trying to sign in as one lands in the audit log
    // (an anonymous visitor writes what the administrator reads there). ---
    let form = format!("username={}&password=long-enough-password", enc(P_TITLE));
    let r = app.call("admin_create_user", &form, &as_admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a username with markup: {}", r.body);
    for p in PAYLOADS {
        let r = app.call("sign_in", &format!("username={}&password=wrong-password", enc(p)), &Auth::Anonymous).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "sign in as {p:?}: {}", r.body);
    }

    // --- Every page that shows any of it, as each kind of caller. ---
    let image_title = |name: &str| Some(format!("Image · {name} · Hangar"));
    let all: Vec<&str> = PAYLOADS.to_vec();
    let reflected = format!("Reflected: {}", all_payloads());
    let mut visits = vec![
        visit("admin", "/", None, &[P_TITLE, P_STYLE, P_NOSCRIPT, P_QUOTE]),
        visit("admin", "/images", None, &all),
        visit("admin", format!("/images/{a}"), image_title(P_TITLE), &all),
        visit(
            "admin",
            format!("/images/{b}"),
            image_title(P_STYLE),
            &[P_STYLE, P_TEXTAREA, P_COMMENT, P_NOSCRIPT, P_TITLE, P_QUOTE, P_ATTR],
        ),
        visit("admin", format!("/images/{c}"), image_title(P_NOSCRIPT), &all),
        visit("admin", format!("/images/{d}"), image_title(P_QUOTE), &all),
        visit("admin", "/jobs", None, &all),
        visit("admin", "/account", None, &[P_ATTR]),
        visit("admin", "/admin", None, &[]),
        visit("admin", "/admin/projects", None, &[P_ATTR, P_QUOTE, P_TEXTAREA]),
        // Failed sign-ins (actor and target), image.create / image.update (name), Glance's
        // image.update (name) and image.tag.add (tag).
        visit("admin", "/admin/audit", None, &all),
        visit("admin", "/storage", None, &all),
        visit("admin", "/storage?kind=local&format=vdi", None, &all),
        visit("admin", "/upload", None, &[]),
        visit("admin", "/formats", None, &[]),
        visit("admin", error_in_url(&format!("/images/{a}"), "update_image", &reflected), image_title(P_TITLE), &[reflected.as_str()]),
        visit("admin", error_in_url("/admin/projects", "admin_grant_role", &reflected), None, &[reflected.as_str()]),
        visit("member", "/images", None, &all),
        visit("member", format!("/images/{a}"), image_title(P_TITLE), &all),
        visit("member", format!("/images/{b}"), image_title(P_STYLE), &[P_STYLE, P_TEXTAREA, P_COMMENT]),
        visit("member", format!("/images/{c}"), image_title(P_NOSCRIPT), &all),
        visit("member", format!("/images/{d}"), image_title(P_QUOTE), &all),
        visit("member", "/jobs", None, &all),
        visit("member", "/account", None, &all),
        visit("member", "/storage", None, &all),
        visit("member", "/upload", None, &[]),
        // The image p1 shared with p2 waits for p2's answer, under its name.
        visit("other", "/images", None, &[P_STYLE]),
        visit("anonymous", "/images", None, &[]),
        visit("anonymous", "/formats", None, &[]),
        visit("anonymous", format!("/signin?next={}", enc(P_ATTR)), None, &[P_ATTR]),
        visit("anonymous", error_in_url("/signin", "sign_in", &reflected), None, &[reflected.as_str()]),
    ];
    visits.push(Visit { status: StatusCode::NOT_FOUND, ..visit("anonymous", format!("/no/such/{}", enc(P_TITLE)), None, &[]) });

    let mut failures: Vec<String> = Vec::new();
    let mut nonces: HashSet<String> = HashSet::new();
    for v in &visits {
        let what = format!("GET {} as {}", v.path, v.who);
        let cookie = match v.who {
            "admin" => Some(admin.as_str()),
            "member" => Some(member.as_str()),
            "other" => Some(other.as_str()),
            _ => None,
        };
        let r = app.get(&v.path, cookie).await;
        if r.status != v.status {
            failures.push(format!("{what}: status {}, want {}", r.status, v.status));
            continue;
        }
        if let Some(nonce) = check_page_headers(&what, &r, &mut failures) {
            if !nonces.insert(nonce.clone()) {
                failures.push(format!("{what}: the nonce {nonce:?} was already used by another response"));
            }
        }
        check_escaped(&what, &r.body, &mut failures);
        let shown = decode_entities(&r.body);
        for s in &v.shows {
            if !shown.contains(s.as_str()) {
                failures.push(format!("{what}: does not show {s:?} (the field should reach this page)"));
            }
        }
        if let Some(want) = &v.title {
            let got = title_of(&r.body).map(decode_entities);
            if got.as_deref() != Some(want.as_str()) {
                failures.push(format!("{what}: the title reads {got:?}, want {want:?}"));
            }
        }
    }

    // The edit forms hold the stored text exactly, so saving them without JavaScript keeps it.
    let page = app.get(&format!("/images/{a}"), Some(admin.as_str())).await.body;
    match textarea_of(&page, "e-props") {
        None => failures.push("image A: no #e-props textarea".to_owned()),
        Some(raw) => {
            let mut got: Vec<String> = decode_entities(raw).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect();
            let mut want: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
            got.sort();
            want.sort();
            if got != want {
                failures.push(format!("image A: the properties box holds {got:?}, want {want:?} (raw: {raw:?})"));
            }
        }
    }
    let name = attribute_of(&page, "e-name", "value").map(decode_entities);
    if name.as_deref() != Some(P_TITLE) {
        failures.push(format!("image A: the name field holds {name:?}, want {P_TITLE:?}"));
    }
    let tags = attribute_of(&page, "e-tags", "value").map(decode_entities);
    let mut got_tags: Vec<String> = tags.as_deref().unwrap_or_default().split(", ").map(str::to_owned).collect();
    let mut want_tags: Vec<String> = PAYLOADS.iter().copied().map(str::to_owned).collect();
    got_tags.sort();
    want_tags.sort();
    if got_tags != want_tags {
        failures.push(format!("image A: the tags field holds {tags:?}, want the payloads"));
    }
    let page = app.get("/storage?kind=local&format=vdi", Some(admin.as_str())).await.body;
    let cell = textarea_of(&page, "cell-reason").map(decode_entities);
    if cell.as_deref() != Some(reason.as_str()) {
        failures.push(format!("storage matrix: the reason box holds {cell:?}, want {reason:?}"));
    }

    // API answers (JSON) carry the headers every response gets.
    let mut api = vec![
        ("GET /healthz".to_owned(), app.get("/healthz", None).await),
        ("POST /api/whoami".to_owned(), app.call("whoami", "", &as_member).await),
        ("POST /api/image_detail".to_owned(), app.call("image_detail", &format!("image_id={a}"), &as_member).await),
        (
            format!("GET /image/v2/images/{b}"),
            glance(&app, "GET", &format!("/image/v2/images/{b}"), &member_token, None, Body::empty()).await,
        ),
    ];
    // Glance's HTML error page (glanceclient's `Accept: */*`) quotes the id from the URL.
    let html_error = app
        .send(
            Request::get(format!("/image/v2/images/{}", enc(P_TITLE)))
                .header(header::HOST, HOST)
                .header(header::ACCEPT, "*/*")
                .header("x-auth-token", member_token.as_str())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    for marker in MARKERS {
        if html_error.body.contains(marker) {
            failures.push(format!("Glance's HTML error page: unescaped {marker:?}: {}", html_error.body));
        }
    }
    let csp = header_values(&html_error, "content-security-policy");
    if csp.len() != 1 || csp[0].to_ascii_lowercase().contains("'unsafe-inline'") || !csp[0].contains("frame-ancestors 'none'") {
        failures.push(format!(
            "Glance's HTML error page: content-security-policy {csp:?}, want one without 'unsafe-inline', with frame-ancestors 'none'"
        ));
    }
    api.push(("GET /image/v2/images/<payload> (HTML error)".to_owned(), html_error));
    for (what, r) in &api {
        if !r.status.is_success() && !what.contains("HTML error") {
            failures.push(format!("{what}: status {}: {}", r.status, r.body));
        }
        check_every_response_headers(what, r, &mut failures);
    }

    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
