//! The tus endpoints driven through `router()` with `oneshot`, against a real SQLite database and
//! a temp upload directory.

mod common;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use base64::Engine as _;
use common::*;
use records::QuotaRow;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn options_advertises_the_extensions_without_auth() {
    let env = Env::new().await;
    let r = env.send(None, axum::http::Request::options("/uploads").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("tus-version"), "1.0.0");
    assert_eq!(r.header("tus-extension"), "creation,creation-with-upload,termination,checksum,expiration,concatenation");
    assert_eq!(r.header("tus-max-size"), (1u64 << 40).to_string());
    assert!(r.header("tus-checksum-algorithm").contains("sha256"));
    assert!(r.headers.get("tus-resumable").is_none(), "OPTIONS answers carry no Tus-Resumable");
}

#[tokio::test]
async fn create_head_patch_complete_with_hashes() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(3 * 1024 * 1024 + 5, 1);
    let meta = format!("filename {},filetype {}", b64("disk.qcow2"), b64("application/x-qemu-disk"));
    let r = env.create(&m, data.len() as u64, &[("upload-metadata", &meta)]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.header("tus-resumable"), "1.0.0");
    assert_eq!(r.offset(), 0);
    assert!(r.header("upload-expires").ends_with(" GMT"));
    let url = r.header("location");
    assert!(url.starts_with("/uploads/"), "{url}");

    let h = env.head(&m, &url).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!((h.offset(), h.header("upload-length")), (0, data.len().to_string()));
    assert_eq!(h.header("cache-control"), "no-store");
    let echoed = uploads::tus::metadata(&h.headers).unwrap();
    assert_eq!(echoed["filename"], "disk.qcow2");

    let (a, b) = data.split_at(2 * 1024 * 1024 + 3);
    let r = env.patch_with(&m, &url, 0, a, &[("upload-checksum", &format!("sha256 {}", sha256_b64(a)))]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(r.offset(), a.len() as u64);
    assert!(r.header("upload-expires").ends_with(" GMT"));
    assert_eq!(env.head(&m, &url).await.offset(), a.len() as u64);
    assert!(env.completions().is_empty());

    let r = env.patch(&m, &url, a.len() as u64, b).await;
    assert_eq!((r.status, r.offset()), (StatusCode::NO_CONTENT, data.len() as u64));
    let done = env.next_completion().await;
    assert_completed(&done, &data);
    assert_eq!(done.metadata["filetype"], "application/x-qemu-disk");
    assert_eq!(done.project_id, env.people.p1);
    assert_eq!(format!("/uploads/{}", done.id), url);
    assert_eq!(env.head(&m, &url).await.offset(), data.len() as u64, "HEAD still answers after completion");
    assert_eq!(env.completions().len(), 1, "the callback fires exactly once");
    // A PATCH after the hand-over (past the end, empty, or at a stale offset) is a 409 that
    // says so, changes nothing and completes nothing again.
    let late = env.patch(&m, &url, data.len() as u64, b"x").await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.body.contains("handed over"), "{}", late.body);
    assert_eq!(env.patch(&m, &url, data.len() as u64, b"").await.status, StatusCode::CONFLICT);
    assert_eq!(env.patch(&m, &url, 0, b"x").await.status, StatusCode::CONFLICT);
    assert_eq!(env.completions().len(), 1);
}

#[tokio::test]
async fn a_wrong_offset_is_409_and_changes_nothing() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    let url = env.created(&m, 10).await;
    assert_eq!(env.patch(&m, &url, 0, b"hello").await.offset(), 5);
    for wrong in [0, 4, 6, 10] {
        let r = env.patch(&m, &url, wrong, b"world").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "offset {wrong}: {}", r.body);
    }
    assert_eq!(env.head(&m, &url).await.offset(), 5);
}

#[tokio::test]
async fn a_checksum_mismatch_is_460_and_the_chunk_is_discarded() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(300_000, 2);
    let url = env.created(&m, data.len() as u64).await;
    let (a, b) = data.split_at(100_000);
    assert_eq!(env.patch(&m, &url, 0, a).await.offset(), 100_000);
    let wrong = format!("sha256 {}", sha256_b64(b"something else"));
    let r = env.patch_with(&m, &url, 100_000, b, &[("upload-checksum", &wrong)]).await;
    assert_eq!(r.status.as_u16(), 460, "{}", r.body);
    assert_eq!(env.head(&m, &url).await.offset(), 100_000);
    assert_eq!(std::fs::metadata(env.config.dir.join(url.trim_start_matches("/uploads/"))).unwrap().len(), 100_000, "truncated back");

    for bad in ["md5 AAAA", "sha256 not-base64!", "sha256 AAAA", "sha256"] {
        let r = env.patch_with(&m, &url, 100_000, b, &[("upload-checksum", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    // sha1 (the algorithm tus makes mandatory) works too, and the running hashes were not
    // polluted by the discarded chunk.
    let sha1 = base64::engine::general_purpose::STANDARD.encode(<sha1::Sha1 as sha2::Digest>::digest(b));
    let r = env.patch_with(&m, &url, 100_000, b, &[("upload-checksum", &format!("sha1 {sha1}"))]).await;
    assert_eq!((r.status, r.offset()), (StatusCode::NO_CONTENT, 300_000), "{}", r.body);
    assert_completed(&env.next_completion().await, &data);
}

#[tokio::test]
async fn version_and_content_type_are_checked() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    let url = env.created(&m, 10).await;
    let no_version = axum::http::Request::head(&url).body(Body::empty()).unwrap();
    let r = env.send(Some(&m), no_version).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.header("tus-version"), "1.0.0");
    let old = axum::http::Request::post("/uploads").header("tus-resumable", "0.2.2").header("upload-length", "5");
    assert_eq!(env.send(Some(&m), old.body(Body::empty()).unwrap()).await.status, StatusCode::PRECONDITION_FAILED);

    let wrong_type = tus(Method::PATCH, &url)
        .header("content-type", "application/octet-stream")
        .header("upload-offset", "0")
        .body(Body::from("hello"))
        .unwrap();
    assert_eq!(env.send(Some(&m), wrong_type).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let no_offset = tus(Method::PATCH, &url).header("content-type", "application/offset+octet-stream").body(Body::from("x")).unwrap();
    assert_eq!(env.send(Some(&m), no_offset).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(env.head(&m, &url).await.offset(), 0);
}

#[tokio::test]
async fn hostile_headers_are_refused_not_panicked_on() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    for (name, value) in [
        ("upload-length", "-1"),
        ("upload-length", "99999999999999999999999"),
        ("upload-length", ""),
        ("upload-metadata", "a"),
        ("upload-metadata", "key %%%"),
        ("upload-concat", "final;"),
        ("upload-concat", "final;/uploads/zzz"),
        ("upload-concat", "sideways"),
        ("upload-defer-length", "1"),
    ] {
        let mut b = tus(Method::POST, "/uploads");
        if name != "upload-length" {
            b = b.header("upload-length", "10");
        }
        let r = env.send(Some(&m), b.header(name, value).body(Body::empty()).unwrap()).await;
        let expect = if name == "upload-metadata" && value == "a" { StatusCode::CREATED } else { StatusCode::BAD_REQUEST };
        assert_eq!(r.status, expect, "{name}: {value:?} → {}", r.body);
    }
    let huge = format!("k {}", "A".repeat(5000));
    assert_eq!(env.create(&m, 10, &[("upload-metadata", &huge)]).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(env.head(&m, "/uploads/not-a-uuid").await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.head(&m, "/uploads/00000000-0000-0000-0000-000000000000").await.status, StatusCode::NOT_FOUND);
    let non_ascii = tus(Method::POST, "/uploads").header("upload-length", axum::http::HeaderValue::from_bytes(b"1\xff").unwrap());
    assert_eq!(env.send(Some(&m), non_ascii.body(Body::empty()).unwrap()).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn termination_removes_the_upload_and_its_file() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    let url = env.created(&m, 10).await;
    env.patch(&m, &url, 0, b"abc").await;
    assert_eq!(env.files().len(), 1);
    assert_eq!(env.delete(&env.people.member2, &url).await.status, StatusCode::NOT_FOUND, "not someone else's");
    let r = env.delete(&m, &url).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(r.header("tus-resumable"), "1.0.0");
    assert_eq!(env.head(&m, &url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.patch(&m, &url, 3, b"def").await.status, StatusCode::NOT_FOUND);
    assert!(env.files().is_empty());
    // X-HTTP-Method-Override works for environments without DELETE.
    let url = env.created(&m, 10).await;
    let r = env.send(Some(&m), tus(Method::POST, &url).header("x-http-method-override", "DELETE").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(env.files().is_empty());
}

#[tokio::test]
async fn expired_uploads_are_gone_and_cleaned_up() {
    // Two services on one database: one whose uploads expire at once, one with a day.
    let env = Env::new().await;
    let m = env.people.member.clone();
    let (on_complete, _, _) = recorder();
    let mut quick = env.config.clone();
    quick.expiry = Duration::ZERO;
    let quick = uploads::Uploads::open(env.db.clone(), quick, on_complete).await.unwrap();
    let quick_router = uploads::router(quick.clone());
    let mut req = tus(Method::POST, "/uploads").header("upload-length", "10").body(Body::empty()).unwrap();
    req.extensions_mut().insert(m.clone());
    let res = tower::ServiceExt::oneshot(quick_router, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let expired = res.headers()["location"].to_str().unwrap().to_owned();
    let kept = env.created(&m, 10).await;
    assert_eq!(env.files().len(), 2);

    assert_eq!(env.head(&m, &expired).await.status, StatusCode::GONE);
    assert_eq!(env.patch(&m, &expired, 0, b"abc").await.status, StatusCode::GONE);
    assert_eq!(env.uploads.remove_expired().await.unwrap(), 1);
    assert_eq!(env.head(&m, &expired).await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.files(), vec![kept.trim_start_matches("/uploads/").to_owned()]);
    assert_eq!(env.head(&m, &kept).await.status, StatusCode::OK);

    // The periodic task does the same.
    let mut req = tus(Method::POST, "/uploads").header("upload-length", "10").body(Body::empty()).unwrap();
    req.extensions_mut().insert(m.clone());
    let quick_router = uploads::router(quick.clone());
    assert_eq!(tower::ServiceExt::oneshot(quick_router, req).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(env.files().len(), 2);
    let task = uploads::spawn_cleanup(quick);
    for _ in 0..200 {
        if env.files().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert_eq!(env.files().len(), 1);
}

#[tokio::test]
async fn quotas_and_the_maximum_size_are_413() {
    let env = Env::with(|c| c.max_upload_size = 1000).await;
    let m = env.people.member.clone();
    let r = env.create(&m, 1001, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body.contains("at most 1000 bytes"), "{}", r.body);
    assert_eq!(env.create(&m, 1000, &[]).await.status, StatusCode::CREATED);

    // Bytes: in-flight uploads count against max_bytes.
    env.db.set_quota(&env.people.p1, QuotaRow { max_bytes: Some(1500), ..QuotaRow::default() }).await.unwrap();
    let r = env.create(&m, 600, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body.contains("quota is 1500 bytes"), "{}", r.body);
    assert_eq!(env.create(&m, 500, &[]).await.status, StatusCode::CREATED);
    // Other projects are not affected.
    assert_eq!(env.create(&env.people.other, 600, &[]).await.status, StatusCode::CREATED);

    // Concurrent uploads: parts do not take a slot, ordinary uploads do.
    env.db.set_quota(&env.people.p1, QuotaRow { max_concurrent_uploads: Some(2), ..QuotaRow::default() }).await.unwrap();
    let r = env.create(&m, 10, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body.contains("2 uploads at a time"), "{}", r.body);
    assert_eq!(env.create(&m, 10, &[("upload-concat", "partial")]).await.status, StatusCode::CREATED);

    // A body larger than the per-request limit is refused before it is read.
    let env = Env::with(|c| c.max_request_body = 100).await;
    let m = env.people.member.clone();
    let url = env.created(&m, 1000).await;
    let r = env.patch(&m, &url, 0, &[0u8; 101]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body.contains("at most 100 bytes"), "{}", r.body);
    // …also when it comes without a Content-Length.
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let req = tus(Method::PATCH, &url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(Body::new(body))
        .unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            let _ = tx.send_data(Bytes::from_static(&[7u8; 60])).await;
        }
    });
    assert_eq!(env.send(Some(&m), req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    sender.await.unwrap();
    assert_eq!(env.head(&m, &url).await.offset(), 0, "nothing of the over-long request is kept");
    // And a request past the declared length.
    let url = env.created(&m, 10).await;
    assert_eq!(env.patch(&m, &url, 0, &[1u8; 11]).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn who_may_do_what() {
    let env = Env::new().await;
    let p = &env.people;
    let r = env.send(None, tus(Method::POST, "/uploads").header("upload-length", "10").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = env.create(&p.reader, 10, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("Readers cannot upload"), "{}", r.body);
    let mut unscoped = p.member.clone();
    unscoped.principal.as_mut().unwrap().scope = None;
    assert_eq!(env.create(&unscoped, 10, &[]).await.status, StatusCode::FORBIDDEN);

    let url = env.created(&p.member, 10).await;
    assert_eq!(env.send(None, tus(Method::HEAD, &url).body(Body::empty()).unwrap()).await.status, StatusCode::UNAUTHORIZED);
    for stranger in [&p.member2, &p.reader, &p.other] {
        assert_eq!(env.head(stranger, &url).await.status, StatusCode::NOT_FOUND);
        assert_eq!(env.patch(stranger, &url, 0, b"x").await.status, StatusCode::NOT_FOUND);
        assert_eq!(env.delete(stranger, &url).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(env.head(&p.admin, &url).await.status, StatusCode::OK);
    assert_eq!(env.patch(&p.admin, &url, 0, b"x").await.status, StatusCode::NO_CONTENT);

    // A creator whose role was revoked can look and cancel, but not write.
    let member = env.db.user_by_name("member").await.unwrap().unwrap();
    env.db.revoke_role(&member.id, &p.p1).await.unwrap();
    let (principal, scopes) = accounts::principal_for_session(&env.db, &member.id, member.session_epoch, None).await.unwrap().unwrap();
    let revoked = accounts::Authn { principal: Some(principal), scopes, ..p.member.clone() };
    assert_eq!(env.head(&revoked, &url).await.status, StatusCode::OK);
    assert_eq!(env.patch(&revoked, &url, 1, b"x").await.status, StatusCode::FORBIDDEN);
    assert_eq!(env.delete(&revoked, &url).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn partial_uploads_concatenate_into_a_final_one() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(2 * 1024 * 1024 + 77, 3);
    let pieces: Vec<&[u8]> = data.chunks(600_000).collect();
    let mut parts = Vec::new();
    for piece in &pieces {
        let r = env.create(&m, piece.len() as u64, &[("upload-concat", "partial")]).await;
        assert_eq!(r.status, StatusCode::CREATED);
        parts.push(r.header("location"));
    }
    // In parallel, as a browser with several streams would.
    let mut writes = Vec::new();
    for (url, piece) in parts.iter().zip(&pieces) {
        let mut req = tus(Method::PATCH, url)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .body(Body::from(piece.to_vec()))
            .unwrap();
        req.extensions_mut().insert(m.clone());
        writes.push(tokio::spawn(tower::ServiceExt::oneshot(env.router.clone(), req)));
    }
    for w in writes {
        assert_eq!(w.await.unwrap().unwrap().status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(env.head(&m, &parts[0]).await.header("upload-concat"), "partial");
    assert!(env.completions().is_empty(), "parts are not handed over");

    let incomplete = env.create(&m, 5, &[("upload-concat", "partial")]).await.header("location");
    let bad = env.create_final(&m, &[&parts[0], &incomplete]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "a final needs complete parts: {}", bad.body);
    let theirs = env.create_final(&env.people.member2, &[&parts[0]]).await;
    assert_eq!(theirs.status, StatusCode::BAD_REQUEST, "only one's own parts");

    let list = parts.iter().map(|p| format!("http://hangar.test{p}")).collect::<Vec<_>>().join(" ");
    let req = tus(Method::POST, "/uploads")
        .header("upload-concat", format!("final;{list}"))
        .header("upload-metadata", format!("filename {}", b64("joined.raw")));
    let r = env.send(Some(&m), req.body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let fin = r.header("location");
    let done = env.next_completion().await;
    assert_completed(&done, &data);
    assert_eq!(done.metadata["filename"], "joined.raw");
    let h = env.head(&m, &fin).await;
    assert_eq!((h.offset(), h.header("upload-length")), (data.len() as u64, data.len().to_string()));
    assert!(h.header("upload-concat").starts_with("final;/uploads/"));
    for part in &parts {
        assert_eq!(env.head(&m, part).await.status, StatusCode::NOT_FOUND, "parts are removed after the join");
    }
    assert_eq!(env.patch(&m, &fin, 0, b"x").await.status, StatusCode::FORBIDDEN);
    assert_eq!(env.files().len(), 2, "the final's file and the unfinished part remain");
    assert_eq!(env.completions().len(), 1);
}

#[tokio::test]
async fn a_restart_mid_upload_loses_nothing() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(1_500_000, 4);
    let url = env.created(&m, data.len() as u64).await;
    assert_eq!(env.patch(&m, &url, 0, &data[..700_000]).await.offset(), 700_000);

    env.restart().await;
    let h = env.head(&m, &url).await;
    assert_eq!((h.status, h.offset()), (StatusCode::OK, 700_000));
    assert_eq!(env.patch(&m, &url, 0, &data[..10]).await.status, StatusCode::CONFLICT);
    let r = env.patch(&m, &url, 700_000, &data[700_000..]).await;
    assert_eq!((r.status, r.offset()), (StatusCode::NO_CONTENT, 1_500_000));
    // The running hashes were lost with the old process: they are computed from the file.
    assert_completed(&env.next_completion().await, &data);
    // The hand-over is recorded just after the callback (a crash between the two repeats the
    // callback rather than losing it): restart only once it is recorded, or the test races it.
    let id = url.rsplit('/').next().unwrap().to_owned();
    let mut recorded = false;
    for _ in 0..500 {
        recorded = env.db.upload_by_id(&id).await.unwrap().is_some_and(|u| u.completed_at.is_some());
        if recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(recorded, "the hand-over of {id} was recorded");
    env.restart().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.completions().len(), 1, "a second restart does not hand it over again");
}

#[tokio::test]
async fn parts_survive_a_restart_and_join_after_it() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(50_000, 5);
    let a = env.created(&m, 0).await; // completes at once
    let done = env.next_completion().await;
    assert_eq!((done.length, format!("/uploads/{}", done.id)), (0, a));
    assert_completed(&done, b"");

    let p = env.create(&m, data.len() as u64, &[("upload-concat", "partial")]).await.header("location");
    env.patch(&m, &p, 0, &data).await;
    env.restart().await;
    let r = env.create_final(&m, &[&p]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_completed(&env.next_completion().await, &data);
}

#[tokio::test]
async fn creation_with_upload_keeps_the_body() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(70_000, 6);
    let req = tus(Method::POST, "/uploads")
        .header("upload-length", "100000")
        .header("content-type", "application/offset+octet-stream")
        .header("content-length", data.len().to_string())
        .header("upload-checksum", format!("sha256 {}", sha256_b64(&data)))
        .body(Body::from(data.clone()))
        .unwrap();
    let r = env.send(Some(&m), req).await;
    assert_eq!((r.status, r.offset()), (StatusCode::CREATED, 70_000), "{}", r.body);
    let url = r.header("location");
    let rest = common::data(30_000, 7);
    assert_eq!(env.patch(&m, &url, 70_000, &rest).await.offset(), 100_000);
    let all = [data, rest].concat();
    assert_completed(&env.next_completion().await, &all);

    // A body that fails its checksum still creates the upload, at offset 0.
    let req = tus(Method::POST, "/uploads")
        .header("upload-length", "10")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-checksum", format!("sha256 {}", sha256_b64(b"other")))
        .body(Body::from("0123456789"))
        .unwrap();
    let r = env.send(Some(&m), req).await;
    assert_eq!((r.status, r.offset()), (StatusCode::CREATED, 0));
    // A body with the wrong type is refused.
    let req = tus(Method::POST, "/uploads")
        .header("upload-length", "10")
        .header("content-type", "text/plain")
        .body(Body::from("0123456789"))
        .unwrap();
    assert_eq!(env.send(Some(&m), req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// A PATCH whose client goes away after some bytes: tus says keep what arrived.
#[tokio::test]
async fn a_client_that_disappears_keeps_its_durable_bytes() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(3_000_000, 8);
    let url = env.created(&m, data.len() as u64).await;

    let broken_patch = |checksum: Option<String>, from: usize, upto: usize| {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        let mut b =
            tus(Method::PATCH, &url).header("content-type", "application/offset+octet-stream").header("upload-offset", from.to_string());
        if let Some(c) = checksum {
            b = b.header("upload-checksum", c);
        }
        let piece = data[from..upto].to_vec();
        let feeder = tokio::spawn(async move {
            for c in piece.chunks(100_000) {
                tx.send_data(Bytes::copy_from_slice(c)).await.unwrap();
            }
            tx.abort(std::io::Error::other("connection reset"));
        });
        (b.body(Body::new(body)).unwrap(), feeder)
    };

    // Without a checksum, what arrived is kept (here 1.3 MB, more than a block).
    let (req, feeder) = broken_patch(None, 0, 1_300_000);
    let _ = env.send(Some(&m), req).await;
    feeder.await.unwrap();
    assert_eq!(env.head(&m, &url).await.offset(), 1_300_000);

    // With a checksum, an unverifiable part is not kept.
    let (req, feeder) = broken_patch(Some(format!("sha256 {}", sha256_b64(&data[1_300_000..]))), 1_300_000, 2_000_000);
    let _ = env.send(Some(&m), req).await;
    feeder.await.unwrap();
    assert_eq!(env.head(&m, &url).await.offset(), 1_300_000);

    let r = env.patch(&m, &url, 1_300_000, &data[1_300_000..]).await;
    assert_eq!(r.offset(), 3_000_000);
    assert_completed(&env.next_completion().await, &data);
}

/// Two PATCHes on one upload at once: one writes, the other waits and then gets 409; the
/// file is not corrupted.
#[tokio::test]
async fn concurrent_patches_do_not_corrupt_an_upload() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let data = data(400_000, 9);
    let url = env.created(&m, data.len() as u64).await;

    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    let slow = tus(Method::PATCH, &url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .header("content-length", "200000")
        .body(Body::new(body))
        .unwrap();
    let first_half = data[..200_000].to_vec();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let feeder = tokio::spawn(async move {
        tx.send_data(Bytes::copy_from_slice(&first_half[..1000])).await.unwrap();
        tx.send_data(Bytes::copy_from_slice(&first_half[1000..2000])).await.unwrap();
        let _ = started_tx.send(());
        go_rx.await.unwrap();
        tx.send_data(Bytes::copy_from_slice(&first_half[2000..])).await.unwrap();
    });
    let router = env.router.clone();
    let mut slow = slow;
    slow.extensions_mut().insert(m.clone());
    let first = tokio::spawn(tower::ServiceExt::oneshot(router, slow));
    started_rx.await.unwrap();
    // The first request holds the upload's lock and is mid-body; a competing write waits for
    // it and then finds the offset moved.
    let other_bytes = common::data(200_000, 99);
    let competing = env.patch(&m, &url, 0, &other_bytes);
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        go_tx.send(()).unwrap();
    };
    let (second, ()) = tokio::join!(competing, release);
    let first = first.await.unwrap().unwrap();
    feeder.await.unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert_eq!(env.patch(&m, &url, 200_000, &data[200_000..]).await.offset(), 400_000);
    assert_completed(&env.next_completion().await, &data);
}

/// A disk that fills up: creation refuses what does not fit (507), and a write that fails with
/// ENOSPC answers 507 and keeps nothing of the request.
#[tokio::test]
async fn a_full_disk_is_507_and_nothing_half_written_is_kept() {
    let mut env = Env::with(|c| c.max_upload_size = 1 << 60).await;
    let m = env.people.member.clone();
    let r = env.create(&m, 1 << 59, &[]).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.body);
    assert!(r.body.contains("bytes free"), "{}", r.body);
    assert!(env.files().is_empty(), "nothing is left behind");

    let data = data(2_500_000, 10);
    let url = env.created(&m, data.len() as u64).await;
    assert_eq!(env.patch(&m, &url, 0, &data[..1_000_000]).await.offset(), 1_000_000);
    // Swap the upload's file for /dev/full, which fails every write with ENOSPC.
    let path = env.config.dir.join(url.trim_start_matches("/uploads/"));
    let saved = env.config.dir.join("saved");
    std::fs::rename(&path, &saved).unwrap();
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let r = env.patch(&m, &url, 1_000_000, &data[1_000_000..]).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.body);
    assert!(r.body.contains("disk is full"), "{}", r.body);
    assert_eq!(env.head(&m, &url).await.offset(), 1_000_000, "the offset did not move");
    // Space again: the upload resumes where it was.
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&saved, &path).unwrap();
    assert_eq!(env.patch(&m, &url, 1_000_000, &data[1_000_000..]).await.offset(), 2_500_000);
    assert_completed(&env.next_completion().await, &data);
}

#[tokio::test]
async fn stray_files_are_swept() {
    let env = Env::with(|c| c.expiry = Duration::ZERO).await;
    let stray = env.config.dir.join("0b0e4bc8-6f7c-4a8e-9d1e-3a1f2b3c4d5e");
    let other = env.config.dir.join("not-an-upload.txt");
    std::fs::write(&stray, b"left by a crash").unwrap();
    std::fs::write(&other, b"not ours").unwrap();
    assert_eq!(env.uploads.remove_expired().await.unwrap(), 0);
    assert!(!stray.exists());
    assert!(other.exists(), "only files named like uploads are touched");
}

#[tokio::test]
async fn sha256_only_leaves_md5_and_sha512_to_the_consumer() {
    let mut env = Env::with(|c| c.hashes = uploads::UploadHashes::Sha256).await;
    let m = env.people.member.clone();
    let data = data(1_200_000, 11);
    let url = env.created(&m, data.len() as u64).await;
    env.patch(&m, &url, 0, &data[..500_000]).await;
    env.patch(&m, &url, 500_000, &data[500_000..]).await;
    let done = env.next_completion().await;
    assert_eq!((done.sha256.as_deref(), done.md5.as_deref(), done.sha512.as_deref()), (Some(sha256_hex(&data).as_str()), None, None));
    // The same when hashing falls back to reading the file (a restart mid-upload).
    let url = env.created(&m, data.len() as u64).await;
    env.patch(&m, &url, 0, &data[..500_000]).await;
    env.restart().await;
    env.patch(&m, &url, 500_000, &data[500_000..]).await;
    let done = env.next_completion().await;
    assert_eq!((done.sha256.as_deref(), done.md5.as_deref()), (Some(sha256_hex(&data).as_str()), None));
}

/// The process dies after an upload's last bytes are durable but before the consumer took it
/// (here: the consumer's callback panics): the next start hands it over, with hashes read back
/// from the file.
#[tokio::test]
async fn a_restart_hands_over_what_a_crash_did_not() {
    let mut env = Env::new().await;
    let m = env.people.member.clone();
    let (tx, mut attempted) = tokio::sync::mpsc::unbounded_channel::<String>();
    let crashing: uploads::OnComplete = std::sync::Arc::new(move |done: uploads::CompletedUpload| {
        let _ = tx.send(done.id.clone());
        panic!("simulated crash while handing over {}", done.id);
    });
    let dying = uploads::Uploads::open(env.db.clone(), env.config.clone(), crashing).await.unwrap();
    let router = uploads::router(dying);
    let data = data(800_000, 12);
    let mut req = tus(Method::POST, "/uploads").header("upload-length", data.len().to_string()).body(Body::empty()).unwrap();
    req.extensions_mut().insert(m.clone());
    let res = tower::ServiceExt::oneshot(router.clone(), req).await.unwrap();
    let url = res.headers()["location"].to_str().unwrap().to_owned();
    let mut req = tus(Method::PATCH, &url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(Body::from(data.clone()))
        .unwrap();
    req.extensions_mut().insert(m.clone());
    assert_eq!(tower::ServiceExt::oneshot(router, req).await.unwrap().status(), StatusCode::NO_CONTENT);
    let id = tokio::time::timeout(Duration::from_secs(30), attempted.recv()).await.unwrap().unwrap();
    assert_eq!(format!("/uploads/{id}"), url);

    env.restart().await;
    let done = env.next_completion().await;
    assert_eq!(done.id, id);
    assert_completed(&done, &data);
}

/// A final whose parts cannot be joined (here a part's file vanished) stays unfinished, shows no
/// Upload-Offset, leaves no half-written file, and goes away with its parts when it expires.
#[tokio::test]
async fn a_join_that_fails_leaves_nothing_half_written() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    let part = env.create(&m, 1000, &[("upload-concat", "partial")]).await.header("location");
    env.patch(&m, &part, 0, &data(1000, 13)).await;
    let part_id = part.trim_start_matches("/uploads/").to_owned();
    std::fs::remove_file(env.config.dir.join(&part_id)).unwrap();
    let r = env.create_final(&m, &[&part]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let fin = r.header("location");
    let fin_id = fin.trim_start_matches("/uploads/").to_owned();
    // The join runs in the background; a DELETE waits for it to give up, then terminates the
    // final (the loop only guards against a slow machine outlasting LOCK_WAIT).
    for _ in 0..200 {
        if env.delete(&m, &fin).await.status == StatusCode::NO_CONTENT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.head(&m, &fin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.head(&m, &part).await.status, StatusCode::NOT_FOUND, "the final took its parts along");
    assert!(!env.files().contains(&fin_id), "no half-written final file");
    assert!(env.completions().is_empty());
}

#[tokio::test]
async fn a_final_shows_no_offset_until_joined() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    let part = env.create(&m, 10, &[("upload-concat", "partial")]).await.header("location");
    env.patch(&m, &part, 0, b"0123456789").await;
    std::fs::remove_file(env.config.dir.join(part.trim_start_matches("/uploads/"))).unwrap();
    let fin = env.create_final(&m, &[&part]).await.header("location");
    let h = env.head(&m, &fin).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.headers.get("upload-offset").is_none(), "{:?}", h.headers);
    assert_eq!(h.header("upload-length"), "10");
    assert_eq!(h.header("upload-concat"), format!("final;{part}"));
    assert_eq!(env.delete(&m, &part).await.status, StatusCode::FORBIDDEN, "a claimed part goes with its final");
}

#[tokio::test]
async fn one_user_cannot_hold_unbounded_open_uploads() {
    let env = Env::new().await;
    let m = env.people.member.clone();
    for i in 0..uploads::MAX_OPEN_UPLOADS_PER_USER {
        let r = env.create(&m, 1, &[("upload-concat", "partial")]).await;
        assert_eq!(r.status, StatusCode::CREATED, "upload {i}: {}", r.body);
    }
    let r = env.create(&m, 1, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body.contains("uploads open"), "{}", r.body);
    assert_eq!(env.create(&env.people.member2, 1, &[]).await.status, StatusCode::CREATED, "others are not affected");
}

/// The consumer hears when an upload's first bytes are durable (once, also for a part) and
/// when an unfinished upload expires; a complete one expiring later says nothing.
#[tokio::test]
async fn events_tell_when_bytes_start_and_when_an_unfinished_upload_expires() {
    // Long enough that the PATCHes below finish before expiry on a loaded 2-core machine
    // (with 1 s, a busy CI saw 410 Gone mid-test).
    let env = Env::with(|c| c.expiry = Duration::from_secs(4)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    env.uploads.set_on_event(std::sync::Arc::new(move |e| {
        let _ = tx.send(e);
    }));
    let m = env.people.member.clone();
    let meta = format!("image_id {}", b64("img-1"));
    let r = env.create(&m, 10, &[("upload-metadata", meta.as_str()), ("upload-concat", "partial")]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let url = r.header("location").to_owned();
    assert!(rx.try_recv().is_err(), "no event before any byte");
    assert_eq!(env.patch(&m, &url, 0, b"abcd").await.offset(), 4);
    match rx.try_recv() {
        Ok(uploads::UploadEvent::Started(info)) => {
            assert_eq!(info.metadata.get("image_id").map(String::as_str), Some("img-1"));
            assert_eq!(info.project_id, env.people.p1);
        }
        other => panic!("expected Started, got {other:?}"),
    }
    assert_eq!(env.patch(&m, &url, 4, b"ef").await.offset(), 6);
    assert!(rx.try_recv().is_err(), "Started is said once");
    let done = env.created(&m, 3).await;
    assert_eq!(env.patch(&m, &done, 0, b"xyz").await.offset(), 3);
    assert!(matches!(rx.try_recv(), Ok(uploads::UploadEvent::Started(_))));

    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(env.uploads.remove_expired().await.unwrap(), 2);
    match rx.try_recv() {
        Ok(uploads::UploadEvent::Expired(info)) => {
            assert_eq!(info.id, url.rsplit('/').next().unwrap())
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    assert!(rx.try_recv().is_err(), "the complete upload expiring is not an event");
}

/// The consumer chooses the digests per upload from its metadata (Hangar: no MD5/SHA-512 of
/// bytes it will convert): in order as they arrive, and when parts are joined.
#[tokio::test]
async fn the_consumer_chooses_the_digests_per_upload() {
    let mut env = Env::new().await;
    env.uploads.set_hashes_for(std::sync::Arc::new(|m: std::collections::BTreeMap<String, String>| {
        Box::pin(async move {
            if m.contains_key("converted") {
                uploads::UploadHashes::Sha256
            } else {
                uploads::UploadHashes::All
            }
        })
    }));
    let m = env.people.member.clone();
    let data = data(700_000, 5);
    let converted = format!("converted {}", b64("yes"));
    for (extra, all) in [(vec![("upload-metadata", converted.as_str())], false), (vec![], true)] {
        let r = env.create(&m, data.len() as u64, &extra).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        env.patch(&m, &r.header("location"), 0, &data).await;
        let done = env.next_completion().await;
        assert_eq!(done.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
        assert_eq!((done.md5.is_some(), done.sha512.is_some()), (all, all), "metadata {extra:?}");
    }
    // Joined from parts: the final's metadata decides.
    for (meta, all) in [(Some(converted.as_str()), false), (None, true)] {
        let mut parts = Vec::new();
        for piece in data.chunks(400_000) {
            let url = env.create(&m, piece.len() as u64, &[("upload-concat", "partial")]).await.header("location");
            assert_eq!(env.patch(&m, &url, 0, piece).await.status, StatusCode::NO_CONTENT);
            parts.push(url);
        }
        let mut req = tus(Method::POST, "/uploads").header("upload-concat", format!("final;{}", parts.join(" ")));
        if let Some(v) = meta {
            req = req.header("upload-metadata", v);
        }
        assert_eq!(env.send(Some(&m), req.body(Body::empty()).unwrap()).await.status, StatusCode::CREATED);
        let done = env.next_completion().await;
        assert_eq!(done.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
        assert_eq!((done.md5.is_some(), done.sha512.is_some()), (all, all), "final metadata {meta:?}");
    }
}
