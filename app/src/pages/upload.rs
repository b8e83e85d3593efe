//! The Upload page: pick or drop files; each is identified in the browser from its head and tail
//! (advice only: the server inspects again), described with Horizon's fields, and uploaded in
//! checksummed chunks over parallel tus uploads that survive network drops and reloads.

use diskimage::{Format, PackageFacts, Report, Verdict};
use domain::{DiskFormat, ImageStatus};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use send_wrapper::SendWrapper;

use crate::api::auth::whoami;
use crate::api::images::RelatedImage;
use crate::api::upload::{cancel_image, create_image, image_progress, import_stage_line, ImageForm};
use crate::components::size::human_bytes;
use crate::pages::SignInPrompt;
use crate::upload::{self as engine, ResumeRecord};

/// Where one file is.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Sniffing,
    Ready,
    Refused,
    Uploading,
    Paused,
    Verifying,
    Active,
    Killed(String),
    Failed(String),
    Cancelled,
}

impl Phase {
    fn line(&self) -> String {
        match self {
            Phase::Sniffing => "Identifying…".into(),
            Phase::Ready => "Ready: nothing is sent until you press Start upload (or Start all)".into(),
            Phase::Refused => "Refused before upload".into(),
            Phase::Uploading => "Uploading".into(),
            Phase::Paused => "Paused".into(),
            Phase::Verifying => "Verifying on the server…".into(),
            Phase::Active => "Active".into(),
            Phase::Killed(r) => format!("Refused by the server: {r}"),
            Phase::Failed(m) => format!("Upload stopped: {m}"),
            Phase::Cancelled => "Cancelled; the uploaded data was removed".into(),
        }
    }
}

/// One queued file and everything the page shows about it.
#[derive(Clone)]
struct Item {
    key: String,
    file: SendWrapper<gloo_file::File>,
    size: u64,
    file_name: String,
    report: RwSignal<Option<Result<Report, String>>>,
    name: RwSignal<String>,
    disk_format: RwSignal<String>,
    /// `bare`, or the package the sniff recognised (`ova`, `uec`): a package is declared by its
    /// container format, the disk format naming the disk inside (`imageops::declared`).
    container_format: RwSignal<String>,
    visibility: RwSignal<String>,
    description: RwSignal<String>,
    min_disk: RwSignal<String>,
    min_ram: RwSignal<String>,
    architecture: RwSignal<String>,
    os_distro: RwSignal<String>,
    os_version: RwSignal<String>,
    tags: RwSignal<String>,
    protected: RwSignal<bool>,
    phase: RwSignal<Phase>,
    confirmed: RwSignal<u64>,
    note: RwSignal<String>,
    /// While verifying: what the server's import is doing (see `import_stage_line`).
    server_line: RwSignal<String>,
    started: RwSignal<f64>,
    stop: RwSignal<bool>,
    resume: RwSignal<Option<ResumeRecord>>,
    sha256: RwSignal<Option<String>>,
    /// Once active: the images a package became (empty for a plain disk).
    package: RwSignal<Vec<RelatedImage>>,
    /// A package's disks that did not become images, and why.
    not_kept: RwSignal<Option<String>>,
    /// The image this file became, once it is active (the card links to it).
    done_id: RwSignal<Option<String>>,
}

impl engine::Observer for Item {
    fn progress(&self, confirmed: u64) {
        self.confirmed.set(confirmed);
    }
    fn retrying(&self, message: &str, delay_ms: i32) {
        self.note.set(format!("Connection trouble ({message}); retrying in {:.1} s…", f64::from(delay_ms) / 1000.0));
    }
    fn stopped(&self) -> bool {
        self.stop.get_untracked()
    }
    fn network(&self, online: bool) {
        self.note.set(if online {
            String::new()
        } else {
            "You are offline. The upload waits and goes on by itself when the network is back; nothing sent so far is lost.".to_owned()
        });
    }
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn stem(file_name: &str) -> String {
    let base = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
    base.to_owned()
}

/// What the form says about a package: how it is declared and what it becomes.
fn package_note(container_format: &str) -> Option<&'static str> {
    match container_format {
        "ova" => Some(
            "An OVA package (container format OVA): each of its disks becomes an image. The disk format names the disk \
             inside, VMDK for most appliances.",
        ),
        "uec" => Some("A UEC tarball (container format UEC): it becomes a machine image (AMI) linked to its kernel and ramdisk."),
        _ => None,
    }
}

/// The Glance disk_format to pre-fill for a detected format.
fn glance_format(report: &Report) -> Option<&'static str> {
    report.format.glance_disk_format()
}

impl Item {
    fn new(file: gloo_file::File) -> Self {
        let file_name = file.name();
        Item {
            key: engine::fingerprint(&file),
            size: file.size(),
            name: RwSignal::new(stem(&file_name)),
            file_name,
            file: SendWrapper::new(file),
            report: RwSignal::new(None),
            disk_format: RwSignal::new(String::new()),
            container_format: RwSignal::new("bare".into()),
            visibility: RwSignal::new("private".into()),
            description: RwSignal::new(String::new()),
            min_disk: RwSignal::new(String::new()),
            min_ram: RwSignal::new(String::new()),
            architecture: RwSignal::new(String::new()),
            os_distro: RwSignal::new(String::new()),
            os_version: RwSignal::new(String::new()),
            tags: RwSignal::new(String::new()),
            protected: RwSignal::new(false),
            phase: RwSignal::new(Phase::Sniffing),
            confirmed: RwSignal::new(0),
            note: RwSignal::new(String::new()),
            server_line: RwSignal::new(String::new()),
            started: RwSignal::new(0.0),
            stop: RwSignal::new(false),
            resume: RwSignal::new(None),
            sha256: RwSignal::new(None),
            package: RwSignal::new(Vec::new()),
            not_kept: RwSignal::new(None),
            done_id: RwSignal::new(None),
        }
    }

    fn form(&self) -> ImageForm {
        ImageForm {
            name: self.name.get_untracked(),
            description: self.description.get_untracked(),
            disk_format: self.disk_format.get_untracked(),
            container_format: self.container_format.get_untracked(),
            visibility: self.visibility.get_untracked(),
            min_disk: self.min_disk.get_untracked().trim().parse().unwrap_or(0),
            min_ram: self.min_ram.get_untracked().trim().parse().unwrap_or(0),
            architecture: self.architecture.get_untracked(),
            os_distro: self.os_distro.get_untracked(),
            os_version: self.os_version.get_untracked(),
            protected: self.protected.get_untracked(),
            tags: self.tags.get_untracked(),
            size: self.size,
        }
    }

    /// Sniffs the file and looks for an interrupted upload of it.
    async fn identify(self) {
        let report = engine::sniff_file(&self.file).await;
        if let Ok(r) = &report {
            if let Some(f) = glance_format(r) {
                self.disk_format.set(f.to_owned());
            }
            // A package: the disk inside is what the disk format names (an OVA's are VMDK as
            // a rule; a UEC tarball's machine image is an AMI).
            match r.format {
                Format::Ova => {
                    self.container_format.set("ova".into());
                    self.disk_format.set("vmdk".into());
                }
                Format::Uec => {
                    self.container_format.set("uec".into());
                    self.disk_format.set("ami".into());
                }
                _ => {}
            }
        }
        let refused = matches!(&report, Ok(r) if r.verdict == Verdict::Rejected);
        self.report.set(Some(report));
        if let Some(rec) = engine::load_resume(&self.key) {
            self.name.set(rec.image_name.clone());
            self.resume.set(Some(rec));
        }
        self.phase.set(if refused { Phase::Refused } else { Phase::Ready });
    }

    /// Creates the image (unless resuming), uploads, then follows ingest to the end.
    async fn run(self, chunk: u64, store: String) {
        self.stop.set(false);
        self.note.set(String::new());
        self.phase.set(Phase::Uploading);
        self.started.set(now_ms());
        let record = match self.resume.get_untracked() {
            Some(rec) => rec,
            None => match create_image(self.form()).await {
                Ok(image_id) => ResumeRecord { image_id, image_name: self.name.get_untracked(), store, ..ResumeRecord::default() },
                Err(e) => {
                    self.phase.set(Phase::Failed(e.to_string()));
                    return;
                }
            },
        };
        engine::save_resume(&self.key, &record);
        self.resume.set(Some(record.clone()));
        let image_id = record.image_id.clone();
        match engine::upload(&self.file, &self.key, record, chunk, &self).await {
            Ok(()) => {}
            Err(e) if self.stop.get_untracked() => {
                let _ = e;
                self.resume.set(engine::load_resume(&self.key));
                if self.phase.get_untracked() == Phase::Uploading {
                    self.phase.set(Phase::Paused);
                }
                return;
            }
            Err(e) => {
                self.resume.set(engine::load_resume(&self.key));
                self.phase.set(Phase::Failed(e.message));
                return;
            }
        }
        self.confirmed.set(self.size);
        self.note.set(String::new());
        self.phase.set(Phase::Verifying);
        loop {
            match image_progress(image_id.clone()).await {
                // Active, and the import job done (a package's other images come after).
                Ok(p) if p.status == ImageStatus::Active && p.stage.is_empty() => {
                    self.sha256.set(p.sha256);
                    self.package.set(p.package);
                    self.not_kept.set(p.package_not_kept);
                    self.done_id.set(Some(p.id));
                    engine::forget_resume(&self.key);
                    self.resume.set(None);
                    self.phase.set(Phase::Active);
                    return;
                }
                Ok(p) if p.status == ImageStatus::Killed => {
                    engine::forget_resume(&self.key);
                    self.resume.set(None);
                    self.phase.set(Phase::Killed(p.reason));
                    return;
                }
                Ok(p) => {
                    self.note.set(String::new());
                    self.server_line.set(import_stage_line(&p));
                }
                Err(e) => self.note.set(format!("Could not check the image's status ({e}); still trying…")),
            }
            engine::sleep(1000).await;
        }
    }

    /// Stops the upload and removes everything it sent.
    async fn cancel(self) {
        self.stop.set(true);
        // The stored record is the fresh one: the engine adds the parts' URLs as it creates them.
        if let Some(rec) = engine::load_resume(&self.key).or_else(|| self.resume.get_untracked()) {
            for p in &rec.parts {
                engine::terminate(&p.url).await;
            }
            let _ = cancel_image(rec.image_id.clone()).await;
        }
        engine::forget_resume(&self.key);
        self.resume.set(None);
        self.confirmed.set(0);
        self.phase.set(Phase::Cancelled);
    }
}

#[component]
pub fn UploadPage() -> impl IntoView {
    let me = Resource::new(|| (), |_| whoami());
    view! {
        <Title text="Upload" />
        <section class="page">
            <h1>"Upload"</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match me.await {
                        Ok(Some(me)) => match (me.can_upload(), me.project) {
                            (true, Some(p)) => view! { <Uploader project=p.name /> }.into_any(),
                            (false, Some(p)) => view! {
                                <div class="alert" role="alert" id="upload-denied">
                                    {format!("You are a reader in {}: readers can see images but not upload them. Ask an administrator for the member role.", p.name)}
                                </div>
                            }.into_any(),
                            (_, None) => view! {
                                <div class="alert" role="alert" id="upload-denied">"You have no role in any project yet. Ask an administrator to add you to one."</div>
                            }.into_any(),
                        },
                        _ => view! { <SignInPrompt what="the upload form" /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn Uploader(project: String) -> impl IntoView {
    let items: RwSignal<Vec<Item>> = RwSignal::new(Vec::new());
    let chunk_mib = RwSignal::new(engine::DEFAULT_CHUNK >> 20);
    // Where new images are stored: empty is the server's default backend.
    let store = RwSignal::new(String::new());
    let backends = Resource::new(|| (), |_| crate::api::storage::storage_matrix());
    let dragging = RwSignal::new(false);
    let file_input = NodeRef::<leptos::html::Input>::new();
    let add_files = move |list: Option<web_sys::FileList>| {
        let Some(list) = list else { return };
        for i in 0..list.length() {
            if let Some(f) = list.get(i) {
                let item = Item::new(gloo_file::File::from(f));
                items.update(|v| v.push(item.clone()));
                spawn_local(item.identify());
            }
        }
    };
    // A file chosen before the page became interactive: its `change` event fired before any
    // handler listened, so it is picked up here, once, when the page hydrates.
    Effect::new(move |_| {
        if let Some(input) = file_input.get() {
            if input.files().is_some_and(|f| f.length() > 0) {
                add_files(input.files());
                input.set_value("");
            }
        }
    });
    let total = move || items.with(|v| v.iter().map(|i| i.size).sum::<u64>());
    let sent = move || items.with(|v| v.iter().map(|i| i.confirmed.get()).sum::<u64>());
    view! {
        <p class="lead">
            "Images go to project " <strong>{project}</strong>
            ". Each file is identified in your browser before anything is sent; Hangar checks it again on the server."
        </p>
        <noscript>
            // Hides what only works with JavaScript (`.needs-js`): no dead picker.
            <link rel="stylesheet" href="/pkg/nojs.css" />
            <div class="alert" id="upload-needs-js">
                <p>"Uploading from this page needs JavaScript: the browser reads and checks your file and sends it in resumable chunks."</p>
                <p>"Without it, send the file with the OpenStack client, for example "
                    <code>"openstack image create --disk-format qcow2 --container-format bare --file disk.qcow2 my-image"</code>
                    ", or with any tus client (see the README)."</p>
            </div>
        </noscript>
        // Without JavaScript the picker could only pretend: the noscript stylesheet hides it.
        // Before hydration it works (a file chosen then is picked up when the page hydrates).
        <div
            id="dropzone"
            class="dropzone needs-js"
            class:dragging=move || dragging.get()
            on:dragover=move |ev: web_sys::DragEvent| { ev.prevent_default(); dragging.set(true); }
            on:dragleave=move |_| dragging.set(false)
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                dragging.set(false);
                add_files(ev.data_transfer().and_then(|d| d.files()));
            }
        >
            <label for="file-input" class="dropzone-label">"Drop disk images here, or choose files"</label>
            <input
                id="file-input"
                node_ref=file_input
                type="file"
                multiple
                on:change=move |ev| {
                    let input: web_sys::HtmlInputElement = event_target(&ev);
                    add_files(input.files());
                    input.set_value("");
                }
            />
            <p class="muted">"QCOW2, RAW, VDI, VHD/VHDX, VMDK, ISO, AMI/AKI/ARI, and OVA or UEC packages. Until you start, only the first 64 KiB, the last 1.5 KiB and a package's file headers are read."</p>
        </div>
        <details class="advanced needs-js">
            <summary>"Transfer settings"</summary>
            <label for="chunk-size">"Chunk size"</label>
            <select id="chunk-size" on:change=move |ev| chunk_mib.set(event_target_value(&ev).parse().unwrap_or(8))>
                {[4u64, 8, 16, 32].into_iter().map(|m| view! { <option value=m.to_string() selected=move || chunk_mib.get() == m>{format!("{m} MiB")}</option> }).collect_view()}
            </select>
        </details>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let list = backends.await.map(|m| m.backends).unwrap_or_default();
                (list.len() > 1).then(|| view! {
                    <p class="store-choice">
                        <label for="store-select">"Store new images on"</label>" "
                        <select id="store-select" on:change=move |ev| store.set(event_target_value(&ev))>
                            {list.into_iter().map(|b| {
                                let label = format!("{} ({}){}", b.name, crate::api::storage::kind_label(&b.kind), if b.is_default { " · default" } else { "" });
                                let value = if b.is_default { String::new() } else { b.name.clone() };
                                view! { <option value=value selected=b.is_default>{label}</option> }
                            }).collect_view()}
                        </select>
                        " "<a href="/storage">"What each backend does with each format"</a>
                    </p>
                })
            })}
        </Suspense>
        <Show when=move || items.with(|v| !v.is_empty())>
            <div class="overall" aria-live="polite">
                <progress id="overall-progress" max=move || total().max(1).to_string() value=move || sent().to_string()></progress>
                <span>{move || format!("All files: {} of {}", human_bytes(sent()), human_bytes(total()))}</span>
                <button class="button button-primary" id="start-all" on:click=move |_| {
                    for item in items.get_untracked() {
                        if item.phase.get_untracked() == Phase::Ready {
                            spawn_local(item.run(chunk_mib.get_untracked() << 20, store.get_untracked()));
                        }
                    }
                }>"Start all"</button>
            </div>
        </Show>
        <ul class="upload-list">
            <For each=move || items.get() key=|i| i.key.clone() let:item>
                <UploadCard item chunk_mib store />
            </For>
        </ul>
    }
}

#[component]
fn UploadCard(item: Item, chunk_mib: RwSignal<u64>, store: RwSignal<String>) -> impl IntoView {
    let it = item.clone();
    let ids = |s: &str| format!("{s}-{}", item.key.len() ^ item.size as usize);
    let report_view = {
        let it = it.clone();
        move || match it.report.get() {
            None => view! { <p class="muted">"Identifying…"</p> }.into_any(),
            Some(Err(e)) => view! { <div class="alert" role="alert">{e}</div> }.into_any(),
            Some(Ok(r)) => view! { <SniffSummary report=r /> }.into_any(),
        }
    };
    // A disk format that contradicts what the file is: (chosen, detected). The server would
    // refuse the upload after every byte was sent, so it cannot start until resolved. An AMI is
    // a raw file system: declared `ami`, raw bytes are right.
    let mismatch = {
        let it = it.clone();
        move || {
            let chosen = it.disk_format.get();
            let detected = it.report.with(|r| r.as_ref().and_then(|r| r.as_ref().ok()).and_then(glance_format));
            match detected {
                Some("raw") if chosen == "ami" => None,
                Some(d) if !chosen.is_empty() && d != chosen => Some((chosen, d)),
                _ => None,
            }
        }
    };
    let mismatch = StoredValue::new(mismatch);
    let percent = {
        let it = it.clone();
        move || if it.size == 0 { 100.0 } else { it.confirmed.get() as f64 * 100.0 / it.size as f64 }
    };
    let rate_eta = {
        let it = it.clone();
        move || {
            let secs = (now_ms() - it.started.get()) / 1000.0;
            let done = it.confirmed.get();
            if it.phase.get() != Phase::Uploading || secs < 0.5 || done == 0 {
                return String::new();
            }
            let rate = done as f64 / secs;
            let left = (it.size.saturating_sub(done)) as f64 / rate.max(1.0);
            format!(
                " · {}/s · {} left",
                human_bytes(rate as u64),
                if left < 60.0 { format!("{left:.0} s") } else { format!("{:.0} min", left / 60.0) }
            )
        }
    };
    let editable = {
        let it = it.clone();
        move || {
            matches!(it.phase.get(), Phase::Ready | Phase::Sniffing | Phase::Refused | Phase::Failed(_)) && it.resume.with(Option::is_none)
        }
    };
    let field = |label: &'static str, id: String, sig: RwSignal<String>, editable: Box<dyn Fn() -> bool + Send + Sync>| {
        view! {
            <label for=id.clone()>{label}</label>
            <input id=id type="text" prop:value=move || sig.get() on:input=move |ev| sig.set(event_target_value(&ev)) disabled=move || !editable() />
        }
    };
    let ed = editable;
    let can_start = {
        let it = it.clone();
        move || {
            matches!(it.phase.get(), Phase::Ready | Phase::Failed(_) | Phase::Paused)
                && !it.name.get().trim().is_empty()
                && !it.disk_format.get().is_empty()
                && mismatch.with_value(|m| m()).is_none()
        }
    };
    let (i1, i2, i3, i4) = (it.clone(), it.clone(), it.clone(), it.clone());
    view! {
        <li class="card upload-card" data-file=item.file_name.clone()>
            <h2>{item.file_name.clone()}<span class="muted">{format!(" · {}", human_bytes(item.size))}</span></h2>
            {report_view}
            {move || i1.resume.get().filter(|_| matches!(i1.phase.get(), Phase::Ready | Phase::Failed(_) | Phase::Paused)).map(|_| view! {
                <div class="notice resume-offer" role="note">"An earlier upload of this file was interrupted. Start resumes it: only the missing bytes are sent."</div>
            })}
            <div class="form upload-form">
                {field("Image name", ids("name"), it.name, Box::new(ed))}
                <label for=ids("format")>"Disk format"</label>
                <select id=ids("format") on:change={ let s = it.disk_format; move |ev| s.set(event_target_value(&ev)) } disabled={ let e = ed; move || !e() }>
                    <option value="" selected={ let s = it.disk_format; move || s.get().is_empty() }>"Choose…"</option>
                    {DiskFormat::ALL.iter().map(|f| { let (f, s) = (f.as_str(), it.disk_format); view! { <option value=f selected=move || s.get() == f>{f.to_uppercase()}</option> } }).collect_view()}
                </select>
                { let s = it.disk_format; move || mismatch.with_value(|m| m()).map(|(chosen, detected)| view! {
                    <div class="warning mismatch" role="alert">
                        <p>{format!(
                            "You chose {} but the file is {}: the server would refuse it after the whole file was sent, so the upload cannot start until they match.",
                            chosen.to_uppercase(),
                            detected.to_uppercase()
                        )}</p>
                        <button type="button" class="button use-detected" on:click=move |_| s.set(detected.to_owned())>{format!("Use {}", detected.to_uppercase())}</button>
                    </div>
                }) }
                { let c = it.container_format; move || package_note(&c.get()).map(|m| view! { <p class="muted package-note" role="note">{m}</p> }) }
                <label for=ids("vis")>"Visibility"</label>
                <select id=ids("vis") on:change={ let s = it.visibility; move |ev| s.set(event_target_value(&ev)) } disabled={ let e = ed; move || !e() }>
                    <option value="private">"Private: this project only"</option>
                    <option value="shared">"Shared: with projects you choose"</option>
                    <option value="community">"Community: anyone may use it"</option>
                    <option value="public">"Public (administrators only)"</option>
                </select>
                <details>
                    <summary>"More details (description, requirements, OS, tags)"</summary>
                    {field("Description", ids("desc"), it.description, Box::new(ed))}
                    {field("Minimum disk (GiB)", ids("mindisk"), it.min_disk, Box::new(ed))}
                    {field("Minimum RAM (MiB)", ids("minram"), it.min_ram, Box::new(ed))}
                    {field("Architecture", ids("arch"), it.architecture, Box::new(ed))}
                    {field("OS distribution", ids("distro"), it.os_distro, Box::new(ed))}
                    {field("OS version", ids("osver"), it.os_version, Box::new(ed))}
                    {field("Tags (comma-separated)", ids("tags"), it.tags, Box::new(ed))}
                    <label class="check"><input type="checkbox" prop:checked=move || it.protected.get() on:change={ let s = it.protected; move |ev| s.set(event_target_checked(&ev)) } />" Protected (cannot be deleted)"</label>
                </details>
            </div>
            <div class="upload-controls">
                <button class="button button-primary start" disabled=move || !can_start() on:click={ let it = i2.clone(); move |_| spawn_local(it.clone().run(chunk_mib.get_untracked() << 20, store.get_untracked())) }>
                    {move || match i3.phase.get() {
                        Phase::Uploading => "Uploading…",
                        Phase::Verifying => "Verifying…",
                        Phase::Active => "Uploaded",
                        _ if i3.resume.with(Option::is_some) => "Resume upload",
                        _ => "Start upload",
                    }}
                </button>
                <button class="button button-quiet pause" disabled={ let it = i4.clone(); move || it.phase.get() != Phase::Uploading } on:click={ let it = i4.clone(); move |_| { it.stop.set(true); it.phase.set(Phase::Paused); } }>"Pause"</button>
                <button class="button button-quiet cancel" disabled={ let it = i4.clone(); move || matches!(it.phase.get(), Phase::Active | Phase::Cancelled | Phase::Verifying | Phase::Killed(_)) } on:click={ let it = i4.clone(); move |_| spawn_local(it.clone().cancel()) }>"Cancel"</button>
            </div>
            <progress class="file-progress" max="100" value=move || format!("{:.1}", percent())></progress>
            <p class="status-line" aria-live="polite">
                <span class="phase">{ let it = it.clone(); move || match it.phase.get() {
                    Phase::Verifying if !it.server_line.get().is_empty() => it.server_line.get(),
                    p => p.line(),
                } }</span>
                { let it = it.clone(); move || (it.confirmed.get() > 0 || it.phase.get() == Phase::Uploading).then(|| format!(" · {} of {} ({:.0}%)", human_bytes(it.confirmed.get()), human_bytes(it.size), percent())) }
                {rate_eta}
            </p>
            { let it = it.clone(); move || (!it.note.get().is_empty()).then(|| view! { <p class="muted note">{it.note.get()}</p> }) }
            { let it = it.clone(); move || it.sha256.get().map(|h| view! { <p class="checksum">"SHA-256 " <code class="sha256">{h}</code></p> }) }
            { let it = it.clone(); move || it.done_id.get().filter(|_| it.package.with(Vec::is_empty)).map(|id| view! { <p class="open-image"><a href=format!("/images/{id}")>"Open the image"</a></p> }) }
            { let it = it.clone(); move || it.package.with(|p| !p.is_empty()).then(|| view! { <PackageImages images=it.package.get() /> }) }
            { let it = it.clone(); move || it.not_kept.get().map(|n| view! { <p class="warning package-not-kept" role="alert">{format!("Not every disk of the package became an image: {n}")}</p> }) }
        </li>
    }
}

/// The images a package became, each linked (the upload card, once the import is done).
#[component]
fn PackageImages(images: Vec<RelatedImage>) -> impl IntoView {
    view! {
        <div class="package-images">
            <p><strong>{format!("The package became {} {}:", images.len(), if images.len() == 1 { "image" } else { "images" })}</strong></p>
            <ul>
                {images.into_iter().map(|r| {
                    let label = if r.name.is_empty() { r.id.clone() } else { r.name.clone() };
                    view! {
                        <li data-role=r.role.clone()>
                            <a href=format!("/images/{}", r.id)>{label}</a>
                            <span class="muted">{format!(" · {}{} · {}", r.role, r.disk_format.map(|f| format!(", {f}")).unwrap_or_default(), r.status)}</span>
                        </li>
                    }
                }).collect_view()}
            </ul>
        </div>
    }
}

/// What a package holds, from the browser's sniff: its disks (each becomes an image), the
/// virtual machine's facts, the manifest and every member seen.
#[component]
fn PackageContents(facts: PackageFacts, format: Format) -> impl IntoView {
    let kind = if format == Format::Uec { "UEC tarball" } else { "OVA" };
    let mut vm = Vec::new();
    if let Some(n) = &facts.name {
        vm.push(("Virtual machine", n.clone()));
    }
    if let Some(os) = &facts.os {
        vm.push(("Operating system", os.clone()));
    }
    if let Some(c) = facts.cpus {
        vm.push(("CPUs", c.to_string()));
    }
    if let Some(m) = facts.memory_mib {
        vm.push(("Memory", human_bytes(m.saturating_mul(1 << 20))));
    }
    let manifest = match (&facts.manifest, format) {
        (Some(m), _) => Some(format!(
            "Manifest {}: {} digests of {} files; the server verifies every one before importing.",
            m.member, m.algorithm, m.entries
        )),
        (None, Format::Ova) if facts.complete => Some("No manifest: the package's files carry no digests to verify.".to_owned()),
        _ => None,
    };
    let members_note = if facts.complete {
        format!("All {} files in the {kind}", facts.members.len())
    } else {
        format!("The first {} files in the {kind} (the server reads the rest)", facts.members.len())
    };
    let disks = facts.disks.clone();
    view! {
        <div class="package-contents">
            <p><strong>{format!("This {kind} holds {} {}; each becomes an image:", disks.len(), if disks.len() == 1 { "disk" } else { "disks" })}</strong></p>
            <div class="table-wrap">
                <table class="package-disks">
                    <thead><tr><th scope="col">"Disk"</th><th scope="col">"File"</th><th scope="col">"Format"</th><th scope="col">"Virtual size"</th><th scope="col">"In the package"</th></tr></thead>
                    <tbody>
                        {disks.into_iter().enumerate().map(|(i, d)| view! {
                            <tr data-disk=d.id.clone()>
                                <td>{d.id.clone()}{(i == 0).then_some(" (this image)")}</td>
                                <td><code>{d.member.clone()}</code></td>
                                <td>{d.format.clone()}</td>
                                <td>{d.capacity.map_or_else(|| "—".to_owned(), human_bytes)}</td>
                                <td>{d.size.map_or_else(|| "—".to_owned(), human_bytes)}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            {(!vm.is_empty()).then(|| view! {
                <dl class="facts package-vm">
                    {vm.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()}
                </dl>
            })}
            {manifest.map(|m| view! { <p class="package-manifest">{m}</p> })}
            <details class="package-members">
                <summary>{members_note}</summary>
                <ul>
                    {facts.members.into_iter().map(|m| view! {
                        <li><code>{m.name}</code><span class="muted">{format!(" · {} · {}", m.role, human_bytes(m.size))}</span></li>
                    }).collect_view()}
                </ul>
            </details>
        </div>
    }
    .into_any()
}

/// The browser's verdict, in plain language.
#[component]
fn SniffSummary(report: Report) -> impl IntoView {
    let accepted = report.verdict == Verdict::Accepted;
    let what = format!(
        "{}{}{}",
        report.format.label(),
        report.subformat.as_deref().map(|s| format!(" ({s})")).unwrap_or_default(),
        report.virtual_size.map(|v| format!(", virtual size {}", human_bytes(v))).unwrap_or_default()
    );
    view! {
        <div class=if accepted { "sniff sniff-ok" } else { "sniff sniff-bad" } data-format=report.format.as_str()>
            <p>
                <strong>{if accepted { "Looks like " } else { "Will be refused: " }}</strong>
                <span class="detected">{what}</span>
            </p>
            {(!report.findings.is_empty()).then(|| view! {
                <ul class="findings">
                    {report.findings.iter().map(|f| view! { <li data-code=f.code.clone()>{f.message.clone()}</li> }).collect_view()}
                </ul>
            })}
            {(accepted).then(|| report.package.clone().map(|p| view! { <PackageContents facts=*p format=report.format /> }.into_any()))}
        </div>
    }
}
