//! Shared by the catalogue benchmarks (records' and the server's): a deterministic catalogue of
//! realistic images and p50/p95 reporting. Not used by Hangar itself.
#![allow(clippy::expect_used, clippy::cast_possible_truncation, clippy::indexing_slicing)]

use std::time::Duration;

use crate::Db;
use domain::ImageStatus;

/// Images in the benchmark catalogue.
pub const IMAGES: usize = 10_000;
/// Projects they belong to.
pub const PROJECTS: usize = 20;
/// p95 targets of the catalogue issue.
pub const LIST_TARGET: Duration = Duration::from_millis(50);
pub const DETAIL_TARGET: Duration = Duration::from_millis(20);

/// A small deterministic generator, so every run measures the same catalogue.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Builds the benchmark catalogue: returns the project ids and image ids.
pub async fn build(db: &Db, rng: &mut Lcg) -> (Vec<String>, Vec<String>) {
    let mut projects = Vec::with_capacity(PROJECTS);
    for i in 0..PROJECTS {
        projects.push(db.create_project(&format!("project-{i:02}"), "").await.expect("project").id);
    }
    let distros = ["ubuntu", "debian", "fedora", "centos", "rocky", "alpine", "windows", "cirros"];
    let variants = ["server", "minimal", "cloud", "desktop", "gpu"];
    let disk_formats = ["qcow2", "qcow2", "qcow2", "raw", "raw", "vmdk", "iso", "vhd"];
    let tags = ["prod", "test", "gpu", "lts", "nightly", "golden"];

    let mut ids = Vec::with_capacity(IMAGES);
    let mut tx = db.pool().begin().await.expect("begin");
    let start = 1_700_000_000i64; // 2023-11-14: two years of uploads from here
    for n in 0..IMAGES {
        let id = uuid::Uuid::new_v4().to_string();
        let owner = &projects[rng.below(PROJECTS as u64) as usize];
        let status = if rng.chance(80) {
            ImageStatus::Active
        } else {
            *rng.pick(&[ImageStatus::Queued, ImageStatus::Importing, ImageStatus::Killed, ImageStatus::Deactivated, ImageStatus::Saving])
        };
        let visibility = match rng.below(10) {
            0..=5 => "private",
            6 | 7 => "shared",
            8 => "public",
            _ => "community",
        };
        let distro = rng.pick(&distros);
        let name = format!("{distro}-{}.{:02}-{}-{n}", 10 + rng.below(15), rng.below(12), rng.pick(&variants));
        let disk_format = (!rng.chance(5)).then(|| *rng.pick(&disk_formats));
        let has_data = status.has_data();
        let size = (has_data && !rng.chance(5)).then(|| rng.below(20 << 30) as i64);
        let virtual_size = size.map(|s| s * 2);
        let created = start + (n as i64) * 6_000 + rng.below(600) as i64;
        let updated = created + rng.below(86_400 * 30) as i64;
        let mut image_tags: Vec<&str> = Vec::new();
        for _ in 0..rng.below(4) {
            let t = *rng.pick(&tags);
            if !image_tags.contains(&t) {
                image_tags.push(t);
            }
        }
        let tags_json = format!("[{}]", image_tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(","));
        let properties = format!(
            r#"{{"os_distro":"{distro}","os_version":"{}","architecture":"{}","hw_disk_bus":"virtio"}}"#,
            10 + rng.below(15),
            rng.pick(&["x86_64", "x86_64", "aarch64"])
        );
        sqlx::query(
            "INSERT INTO images (id, name, status, disk_format, container_format, visibility, size, virtual_size, \
             owner, protected, os_hidden, min_disk, min_ram, checksum, os_hash_algo, os_hash_value, properties, tags, \
             created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'bare', ?, ?, ?, ?, ?, ?, ?, ?, ?, 'sha512', ?, ?, ?, \
             strftime('%Y-%m-%dT%H:%M:%SZ', ?, 'unixepoch'), strftime('%Y-%m-%dT%H:%M:%SZ', ?, 'unixepoch'))",
        )
        .bind(&id)
        .bind(&name)
        .bind(status)
        .bind(disk_format)
        .bind(visibility)
        .bind(size)
        .bind(virtual_size)
        .bind(owner)
        .bind(rng.chance(10))
        .bind(rng.chance(3))
        .bind(rng.below(40) as i64)
        .bind((rng.below(8) * 512) as i64)
        .bind(has_data.then(|| format!("{:032x}", rng.below(u64::MAX))))
        .bind(has_data.then(|| format!("{:0128x}", rng.below(u64::MAX))))
        .bind(&properties)
        .bind(&tags_json)
        .bind(created)
        .bind(updated)
        .execute(&mut *tx)
        .await
        .expect("insert image");
        if visibility == "shared" {
            for _ in 0..1 + rng.below(3) {
                let member = &projects[rng.below(PROJECTS as u64) as usize];
                if member != owner {
                    sqlx::query("INSERT OR IGNORE INTO image_members (image_id, project_id, status) VALUES (?, ?, ?)")
                        .bind(&id)
                        .bind(member)
                        .bind(*rng.pick(&["accepted", "accepted", "pending", "rejected"]))
                        .execute(&mut *tx)
                        .await
                        .expect("insert member");
                }
            }
        }
        if let (true, Some(size)) = (has_data, size) {
            sqlx::query("INSERT INTO image_locations (image_id, backend, key, disk_format, size) VALUES (?, 'local', ?, ?, ?)")
                .bind(&id)
                .bind(format!("images/{id}"))
                .bind(disk_format.unwrap_or("raw"))
                .bind(size)
                .execute(&mut *tx)
                .await
                .expect("insert location");
        }
        ids.push(id);
    }
    tx.commit().await.expect("commit");
    sqlx::query("ANALYZE").execute(db.pool()).await.expect("analyze");
    (projects, ids)
}

/// Timings of one benchmark case against its p95 target.
pub struct Stats {
    pub name: &'static str,
    pub target: Duration,
    pub runs: Vec<Duration>,
}

impl Stats {
    pub fn percentile(&self, p: usize) -> Duration {
        let mut v = self.runs.clone();
        v.sort();
        // Nearest rank.
        let rank = (p * v.len()).div_ceil(100).max(1);
        v[rank - 1]
    }

    /// Prints one line; false when the p95 missed the target.
    pub fn report(&self) -> bool {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p95 = self.percentile(95);
        let max = self.runs.iter().max().copied().unwrap_or_default();
        let ok = p95 <= self.target;
        println!(
            "{:<34} p50 {:>7.2} ms   p95 {:>7.2} ms   max {:>7.2} ms   target p95 <= {:>3} ms  {}",
            self.name,
            ms(self.percentile(50)),
            ms(p95),
            ms(max),
            self.target.as_millis(),
            if ok { "ok" } else { "MISSED" }
        );
        ok
    }
}

/// The machine's load averages, printed with every benchmark.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}
