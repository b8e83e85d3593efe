//! Times the catalogue's list and detail queries on a realistic catalogue.
//!
//! `cargo run --release -p records --example catalogue_bench [runs]`
//!
//! Builds a temporary database with 10,000 images across 20 projects (mixed statuses, formats,
//! visibilities, sizes including NULL, tags, properties, shares with members and locations),
//! then runs each case `runs` times (default 200) and prints p50/p95/max in milliseconds. Exits
//! with status 1 when a p95 misses its target: 50 ms for a list page, 20 ms for a detail.

use std::process::ExitCode;
use std::time::Instant;

use records::bench::{build, loadavg, Lcg, Stats, DETAIL_TARGET, IMAGES, LIST_TARGET, PROJECTS};
use records::{Db, ImageQuery, SortDir, SortKey, Visible};

#[tokio::main]
async fn main() -> ExitCode {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_sqlite(&dir.path().join("hangar.db")).await.expect("open");
    let mut rng = Lcg(42);
    let t = Instant::now();
    let (projects, ids) = build(&db, &mut rng).await;
    println!("built {IMAGES} images in {PROJECTS} projects in {:.1} s; load {}", t.elapsed().as_secs_f64(), loadavg());

    let mut all = Vec::new();

    // 1. A project's Images page: default sort, first page.
    let mut s = Stats { name: "project default page (limit 25)", target: LIST_TARGET, runs: Vec::new() };
    for i in 0..runs {
        let p = &projects[i % PROJECTS];
        let t = Instant::now();
        let page = db.query_images(&ImageQuery::default(), Visible::Project(p)).await.expect("list");
        s.runs.push(t.elapsed());
        assert_eq!(page.images.len(), 25);
    }
    all.push(s);

    // 2. Page 5 of the same, by marker (the marker is found before timing).
    let mut markers = Vec::new();
    for p in &projects {
        let mut q = ImageQuery::default();
        for _ in 0..4 {
            let page = db.query_images(&q, Visible::Project(p)).await.expect("list");
            q.marker = page.next_marker;
        }
        markers.push(q.marker.expect("a fifth page"));
    }
    let mut s = Stats { name: "project page 5 via marker", target: LIST_TARGET, runs: Vec::new() };
    for i in 0..runs {
        let q = ImageQuery { marker: Some(markers[i % PROJECTS].clone()), ..ImageQuery::default() };
        let t = Instant::now();
        let page = db.query_images(&q, Visible::Project(&projects[i % PROJECTS])).await.expect("list");
        s.runs.push(t.elapsed());
        assert_eq!(page.images.len(), 25);
    }
    all.push(s);

    // 3. The dashboard's search with filters, sorted by name.
    let mut s = Stats { name: "search+filters, sort name asc", target: LIST_TARGET, runs: Vec::new() };
    let words = ["ubuntu", "debian", "fedora", "rocky", "server", "cloud", "1.0"];
    for i in 0..runs {
        let q = ImageQuery {
            name_contains: Some(words[i % words.len()].to_owned()),
            disk_formats: vec!["qcow2".to_owned(), "raw".to_owned()],
            size_min: Some(1 << 30),
            size_max: Some(16 << 30),
            sort: vec![(SortKey::Name, SortDir::Asc)],
            ..ImageQuery::default()
        };
        let t = Instant::now();
        db.query_images(&q, Visible::Project(&projects[i % PROJECTS])).await.expect("list");
        s.runs.push(t.elapsed());
    }
    all.push(s);

    // 4. An administrator's listing (everything but community images, newest first).
    let mut s = Stats { name: "admin default page (limit 25)", target: LIST_TARGET, runs: Vec::new() };
    for _ in 0..runs {
        let t = Instant::now();
        let page = db.query_images(&ImageQuery::default(), Visible::All).await.expect("list");
        s.runs.push(t.elapsed());
        assert_eq!(page.images.len(), 25);
    }
    all.push(s);

    // 5. The detail page.
    let mut s = Stats { name: "image_detail", target: DETAIL_TARGET, runs: Vec::new() };
    for _ in 0..runs {
        let id = rng.pick(&ids);
        let t = Instant::now();
        let d = db.image_detail(id).await.expect("detail");
        s.runs.push(t.elapsed());
        assert!(d.is_some());
    }
    all.push(s);

    println!("{runs} runs per case; load {}", loadavg());
    let mut ok = true;
    for s in &all {
        ok &= s.report();
    }
    db.close().await;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
