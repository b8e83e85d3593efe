//! One image: every field, checksums with copy buttons, where it is stored (per backend, per the
//! matrix), its jobs with live progress, download, metadata editing, deactivate/reactivate and
//! delete (with a confirmation the server enforces). Every form works without JavaScript.

use domain::{ImageStatus, JobKind, JobStatus, Visibility};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::api::images::*;
use crate::api::storage::kind_label;
use crate::components::feedback::ActionResult;
use crate::components::size::human_bytes;
use crate::pages::SignInPrompt;

fn opt_bytes(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_owned(), |n| format!("{} ({n} bytes)", human_bytes(n)))
}

fn when(t: &str) -> String {
    t.replace('T', " ").trim_end_matches('Z').to_owned()
}

/// A counter that ticks every 1.5 s while `busy` is true (hydrated only): resources that read it
/// refresh while jobs run, so progress moves without a reload, and stop when nothing runs.
fn poll_while_busy() -> (RwSignal<u32>, RwSignal<bool>) {
    let tick = RwSignal::new(0u32);
    let busy = RwSignal::new(false);
    Effect::new(move |_| {
        if let Ok(handle) = set_interval_with_handle(
            move || {
                if busy.get_untracked() {
                    tick.update(|t| *t = t.wrapping_add(1));
                }
            },
            std::time::Duration::from_millis(1500),
        ) {
            on_cleanup(move || handle.clear());
        }
    });
    (tick, busy)
}

#[component]
pub fn ImagePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let update = ServerAction::<UpdateImage>::new();
    let status = ServerAction::<SetImageStatus>::new();
    let delete = ServerAction::<DeleteImage>::new();
    let copy = ServerAction::<CopyImage>::new();
    let control = ServerAction::<ControlJob>::new();
    // Re-read while jobs run, so progress moves without a reload (hydrated only).
    let (tick, busy) = poll_while_busy();
    let image = Resource::new(
        move || (id(), update.version().get(), status.version().get(), copy.version().get(), control.version().get(), tick.get()),
        |(id, ..)| image_detail(id),
    );

    view! {
        <section class="page">
            <p class="crumbs"><A href="/images">"← Images"</A></p>
            <Suspense fallback=|| view! { <p class="muted" role="status">"Loading the image…"</p> }>
                {move || Suspend::new(async move {
                    match image.await {
                        Ok(v) => {
                            busy.set(v.jobs.iter().any(|j| j.status.is_live())
                                || matches!(v.status, ImageStatus::Uploading | ImageStatus::Importing));
                            view! { <Detail v update status delete copy control /> }.into_any()
                        }
                        Err(crate::AppError::Unauthorized { .. }) => view! { <SignInPrompt what="this image" /> }.into_any(),
                        Err(err) => {
                            // An image that does not exist (or that the caller may not see)
                            // answers 404, not a page with status 200 that says so.
                            #[cfg(feature = "ssr")]
                            if let (crate::AppError::NotFound { .. }, Some(resp)) =
                                (&err, use_context::<leptos_axum::ResponseOptions>())
                            {
                                resp.set_status(http::StatusCode::NOT_FOUND);
                            }
                            view! {
                            <Title text="Image not found" />
                            <h1>"Image not found"</h1>
                            <div class="alert" role="alert" id="image-error">{err.to_string()}</div>
                            }.into_any()
                        }
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn Detail(
    v: ImageView,
    update: ServerAction<UpdateImage>,
    status: ServerAction<SetImageStatus>,
    delete: ServerAction<DeleteImage>,
    copy: ServerAction<CopyImage>,
    control: ServerAction<ControlJob>,
) -> impl IntoView {
    let title = if v.name.is_empty() { v.id.clone() } else { v.name.clone() };
    let confirm_word = title.clone();
    let format = crate::formats::describe(v.disk_format, v.container_format, "not known yet");
    let uploaded = match (&v.uploaded_format, v.uploaded_size) {
        (Some(f), Some(n)) => format!("{f}, {}", human_bytes(n)),
        (Some(f), None) => f.clone(),
        _ => "—".to_owned(),
    };
    let status_form = match v.status {
        ImageStatus::Active => Some(("deactivate", "Deactivate")),
        ImageStatus::Deactivated => Some(("reactivate", "Reactivate")),
        _ => None,
    };
    let id = v.id.clone();
    let (id_s, id_u, id_d) = (id.clone(), id.clone(), id.clone());
    let tags_text = v.tags.join(", ");
    let props_text = v.properties.iter().map(|(k, val)| format!("{k}={val}")).collect::<Vec<_>>().join("\n");
    let visibility = v.visibility;
    let checksums = vec![
        ("sum-md5", "MD5 (Glance checksum)", v.checksum.clone()),
        ("sum-sha512", "SHA-512 (os_hash_value)", v.os_hash_value.clone()),
        ("sum-sha256", "SHA-256 of the uploaded file", v.sha256.clone()),
    ];
    view! {
        <Title text=format!("Image · {title}") />
        <div class="page-head">
            <h1 id="image-name">{title.clone()}</h1>
            <div class="actions">
                {v.download_url.clone().map(|href| view! { <a class="button button-primary" href=href id="download" download="">"Download"</a> })}
                {(v.can_modify).then(|| status_form.map(|(action, label)| view! {
                    <ActionForm action=status attr:class="inline">
                        <input type="hidden" name="image_id" value=id_s.clone() />
                        <input type="hidden" name="action" value=action />
                        <button type="submit" class="button button-quiet" id="status-button">{label}</button>
                    </ActionForm>
                }))}
            </div>
        </div>
        <p>
            <span class=format!("status status-{}", v.status) id="image-status">{v.status.as_str()}</span>
            {v.protected.then(|| view! { <span class="badge" id="protected-badge">"protected"</span> })}
            {v.os_hidden.then(|| view! { <span class="badge">"hidden"</span> })}
        </p>
        {(!v.status_reason.is_empty()).then(|| view! { <div class="alert" role="alert" id="status-reason">{v.status_reason.clone()}</div> })}
        <ActionResult action=status success="Status changed." />
        <ActionResult action=copy success="Copy queued: follow it under Jobs below." />
        <ActionResult action=control success="Done." />

        <div class="detail-grid">
            <section class="card" aria-labelledby="facts-title">
                <h2 id="facts-title">"Details"</h2>
                <dl class="facts" id="image-facts">
                    <dt>"ID"</dt><dd><code>{v.id.clone()}</code></dd>
                    <dt>"Owner"</dt><dd>{if v.owner_name.is_empty() { "—".to_owned() } else { v.owner_name.clone() }}</dd>
                    <dt>"Format"</dt><dd>{format}</dd>
                    <dt>"Uploaded as"</dt><dd>{uploaded}</dd>
                    <dt>"Visibility"</dt><dd>{v.visibility.as_str()}</dd>
                    <dt>"Size"</dt><dd>{opt_bytes(v.size)}</dd>
                    <dt>"Virtual size"</dt><dd>{opt_bytes(v.virtual_size)}</dd>
                    <dt>"Minimum disk"</dt><dd>{format!("{} GB", v.min_disk)}</dd>
                    <dt>"Minimum RAM"</dt><dd>{format!("{} MB", v.min_ram)}</dd>
                    <dt>"Created"</dt><dd><time datetime=v.created_at.clone()>{when(&v.created_at)}</time></dd>
                    <dt>"Updated"</dt><dd><time datetime=v.updated_at.clone()>{when(&v.updated_at)}</time></dd>
                </dl>
                <h3>"Tags"</h3>
                {if v.tags.is_empty() {
                    view! { <p class="muted">"No tags."</p> }.into_any()
                } else {
                    view! { <ul class="tags" id="image-tags">{v.tags.iter().map(|t| view! { <li>{t.clone()}</li> }).collect_view()}</ul> }.into_any()
                }}
                <h3>"Properties"</h3>
                {if v.properties.is_empty() {
                    view! { <p class="muted">"No properties."</p> }.into_any()
                } else {
                    view! { <dl class="facts" id="image-properties">{v.properties.iter().map(|(k, val)| view! { <dt><code>{k.clone()}</code></dt><dd>{val.clone()}</dd> }).collect_view()}</dl> }.into_any()
                }}
            </section>
            <section class="card" aria-labelledby="sums-title">
                <h2 id="sums-title">"Checksums"</h2>
                <dl class="sums">
                    {checksums.into_iter().map(|(id, label, value)| view! { <Checksum id label value /> }).collect_view()}
                </dl>
                {(!v.findings.is_empty()).then(|| view! {
                    <h3>"Inspector findings"</h3>
                    <ul class="findings" id="image-findings">
                        {v.findings.iter().map(|f| view! { <li class=format!("finding finding-{}", f.severity)><strong>{f.severity.clone()}": "</strong>{f.message.clone()}</li> }).collect_view()}
                    </ul>
                })}
            </section>
        </div>

        {(!v.package.is_empty()).then(|| view! { <PackageSection package=v.package.clone() properties=v.properties.clone() uploaded=v.uploaded_format.clone() /> })}

        <section class="card" aria-labelledby="storage-title">
            <h2 id="storage-title">"Storage"</h2>
            <p class="muted">"Where this image is stored, and what the "<A href="/storage">"storage matrix"</A>" says each backend would do with it."</p>
            <div class="table-wrap">
                <table class="table" id="image-storage">
                    <thead><tr><th scope="col">"Backend"</th><th scope="col">"Here"</th><th scope="col">"Why"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr></thead>
                    <tbody>
                        {v.placements.iter().map(|p| {
                            let can_copy = v.can_modify && v.status == ImageStatus::Active && matches!(p.state.as_str(), "native" | "convert" | "extract");
                            let (image_id, backend) = (id.clone(), p.backend.clone());
                            view! {
                                <tr data-backend=p.backend.clone()>
                                    <th scope="row">{p.backend.clone()}<span class="kind-note">{kind_label(&p.kind)}</span></th>
                                    <td><span class=format!("cell cell-{}", if p.state == "stored" { "native" } else { p.state.as_str() })>{p.text.clone()}</span></td>
                                    <td class="muted">{p.reason.clone()}</td>
                                    <td>{can_copy.then(|| view! {
                                        <ActionForm action=copy attr:class="inline">
                                            <input type="hidden" name="image_id" value=image_id />
                                            <input type="hidden" name="backend" value=backend.clone() />
                                            <button type="submit" class="button button-quiet">{format!("Copy to {backend}")}</button>
                                        </ActionForm>
                                    })}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </section>

        <section class="card" aria-labelledby="jobs-title">
            <h2 id="jobs-title">"Jobs"</h2>
            <JobTable jobs=v.jobs.clone() control show_image=false can_control=v.can_modify />
        </section>

        {v.can_modify.then(|| view! {
            <section class="card" aria-labelledby="edit-title">
                <h2 id="edit-title">"Edit metadata"</h2>
                <ActionForm action=update attr:class="form" attr:id="edit-image-form">
                    <input type="hidden" name="image_id" value=id_u.clone() />
                    <label for="e-name">"Name"</label>
                    <input id="e-name" name="name" type="text" maxlength="255" value=v.name.clone() />
                    <label for="e-visibility">"Visibility"</label>
                    <select id="e-visibility" name="visibility">
                        {Visibility::ALL.iter().map(|o| { let sel = *o == visibility; view! { <option value=o.as_str() selected=sel>{o.as_str()}</option> } }).collect_view()}
                    </select>
                    <label for="e-min-disk">"Minimum disk (GB)"</label>
                    <input id="e-min-disk" name="min_disk" type="number" min="0" value=v.min_disk.to_string() />
                    <label for="e-min-ram">"Minimum RAM (MB)"</label>
                    <input id="e-min-ram" name="min_ram" type="number" min="0" value=v.min_ram.to_string() />
                    <label class="check"><input type="checkbox" name="protected" checked=v.protected />" Protected (cannot be deleted)"</label>
                    <label class="check"><input type="checkbox" name="os_hidden" checked=v.os_hidden />" Hidden from the default list"</label>
                    <label for="e-tags">"Tags (comma-separated)"</label>
                    <input id="e-tags" name="tags" type="text" value=tags_text />
                    <label for="e-props">"Properties (one key=value per line)"</label>
                    <crate::html::TextArea value=props_text attr:id="e-props" attr:name="properties" attr:rows="5" attr:placeholder="os_distro=debian\nos_version=12" />
                    <button type="submit" class="button button-primary">"Save changes"</button>
                </ActionForm>
                <ActionResult action=update success="Saved." />
            </section>
        })}

        {v.can_delete.then(|| view! {
            <section class="card danger-zone" aria-labelledby="delete-title">
                <h2 id="delete-title">"Delete this image"</h2>
                {if v.protected {
                    view! { <p id="delete-protected">"This image is protected: deleting it will be refused until protection is turned off above."</p> }.into_any()
                } else {
                    view! { <p>"Deleting removes the record and every stored copy. It cannot be undone."</p> }.into_any()
                }}
                <ActionForm action=delete attr:class="form" attr:id="delete-image-form">
                    <input type="hidden" name="image_id" value=id_d.clone() />
                    <label for="d-confirm">{format!("Type {confirm_word} to confirm")}</label>
                    <input id="d-confirm" name="confirm" type="text" autocomplete="off" required />
                    <button type="submit" class="button button-danger">"Delete image"</button>
                </ActionForm>
                <ActionResult action=delete success="Deleted." />
            </section>
        })}
    }
}

/// A checksum with a copy button (the value stays selectable without JavaScript).
#[component]
fn Checksum(id: &'static str, label: &'static str, value: Option<String>) -> impl IntoView {
    let copied = RwSignal::new(false);
    match value {
        None => view! { <dt>{label}</dt><dd class="muted">"—"</dd> }.into_any(),
        Some(v) => {
            let text = v.clone();
            let copy = move |_| {
                #[cfg(feature = "hydrate")]
                {
                    if let Some(w) = web_sys::window() {
                        let _ = w.navigator().clipboard().write_text(&text);
                        copied.set(true);
                    }
                }
                #[cfg(not(feature = "hydrate"))]
                let _ = &text;
            };
            view! {
                <dt>{label}</dt>
                <dd class="sum">
                    <code id=id>{v}</code>
                    <button type="button" class="button button-quiet copy" on:click=copy aria-label=format!("Copy {label}")>
                        {move || if copied.get() { "Copied" } else { "Copy" }}
                    </button>
                </dd>
            }
            .into_any()
        }
    }
}

/// Jobs with progress bars and cancel/retry controls.
#[component]
pub fn JobTable(jobs: Vec<JobView>, control: ServerAction<ControlJob>, show_image: bool, can_control: bool) -> impl IntoView {
    if jobs.is_empty() {
        return view! { <p class="muted" id="no-jobs">"No jobs."</p> }.into_any();
    }
    view! {
        <div class="table-wrap">
            <table class="table jobs" id="jobs-table">
                <thead><tr>
                    {show_image.then(|| view! { <th scope="col">"Image"</th> })}
                    <th scope="col">"Job"</th><th scope="col">"Backend"</th><th scope="col">"Status"</th>
                    <th scope="col">"Progress"</th><th scope="col">"Result"</th><th scope="col">"Started"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr></thead>
                <tbody>
                    {jobs.into_iter().map(|j| {
                        let pct = j.percent();
                        let active = j.status.is_live();
                        let retry = matches!(j.status, JobStatus::Failed | JobStatus::Cancelled) && j.kind == JobKind::Copy;
                        let (id1, id2) = (j.id.clone(), j.id.clone());
                        let label = format!("{} of {} to {}", j.kind, if j.image_name.is_empty() { "image" } else { j.image_name.as_str() }, j.backend);
                        view! {
                            <tr data-job=j.id.clone() data-status=j.status.as_str()>
                                {show_image.then(|| view! { <td><A href=format!("/images/{}", j.image_id)>{j.image_name.clone()}</A></td> })}
                                <td>{j.kind.as_str()}</td>
                                <td>{j.backend.clone()}</td>
                                <td>
                                    <span class=format!("status status-job-{}", j.status)>{j.status.as_str()}</span>
                                    {(j.status == JobStatus::Running && !j.stage.is_empty()).then(|| view! { <span class="muted stage">{format!(" · {}", crate::api::upload::stage_name(&j.stage))}</span> })}
                                </td>
                                <td>
                                    <progress max="100" value=pct.to_string() aria-label=format!("Progress of the {label}")>{format!("{pct}%")}</progress>
                                    <span class="pct">{format!(" {pct}%")}</span>
                                    <span class="muted">{if j.bytes_total > 0 { format!(" {} of {}", human_bytes(j.bytes_done), human_bytes(j.bytes_total)) } else { String::new() }}</span>
                                </td>
                                <td>{if j.error.is_empty() { j.summary.clone() } else { j.error.clone() }}</td>
                                <td><time datetime=j.created_at.clone()>{when(&j.created_at)}</time></td>
                                <td>
                                    {(can_control && active).then(|| view! {
                                        <ActionForm action=control attr:class="inline">
                                            <input type="hidden" name="job_id" value=id1 />
                                            <input type="hidden" name="action" value="cancel" />
                                            <button type="submit" class="button button-quiet">"Cancel"</button>
                                        </ActionForm>
                                    })}
                                    {(can_control && retry).then(|| view! {
                                        <ActionForm action=control attr:class="inline">
                                            <input type="hidden" name="job_id" value=id2 />
                                            <input type="hidden" name="action" value="retry" />
                                            <button type="submit" class="button button-quiet">"Retry"</button>
                                        </ActionForm>
                                    })}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

/// All jobs the caller may see, refreshed while any is active.
#[component]
pub fn JobsPage() -> impl IntoView {
    let control = ServerAction::<ControlJob>::new();
    let (tick, busy) = poll_while_busy();
    let jobs = Resource::new(move || (control.version().get(), tick.get()), |_| list_jobs());
    view! {
        <Title text="Jobs" />
        <section class="page">
            <h1>"Jobs"</h1>
            <p class="lead">"Imports (inspection and conversion) and copies between backends. Jobs survive a restart: interrupted ones run again."</p>
            <ActionResult action=control success="Done." />
            <Suspense fallback=|| view! { <p class="muted" role="status">"Loading jobs…"</p> }>
                {move || Suspend::new(async move {
                    match jobs.await {
                        Ok(list) => {
                            busy.set(list.iter().any(|j| j.status.is_live()));
                            view! { <JobTable jobs=list control show_image=true can_control=true /> }.into_any()
                        }
                        Err(crate::AppError::Unauthorized { .. }) => view! { <SignInPrompt what="jobs" /> }.into_any(),
                        Err(err) => view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// The package this image came from: what the descriptor said (on the first image) and every
/// image the package became, linked.
#[component]
fn PackageSection(package: Vec<RelatedImage>, properties: Vec<(String, String)>, uploaded: Option<String>) -> impl IntoView {
    let title = if uploaded.as_deref() == Some("uec") || package.iter().any(|r| r.role == "kernel" || r.role == "ramdisk") {
        "From a UEC tarball"
    } else {
        "From an OVA package"
    };
    let prop = |k: &str| properties.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let mut facts: Vec<(&'static str, String)> = Vec::new();
    if let Some(n) = prop("ovf_name") {
        facts.push(("Virtual machine", n));
    }
    if let Some(os) = prop("ovf_os_type") {
        facts.push(("Operating system", os));
    }
    if let Some(c) = prop("ovf_cpus") {
        facts.push(("CPUs", c));
    }
    if let Some(m) = prop("ovf_memory_mib").and_then(|m| m.parse::<u64>().ok()) {
        facts.push(("Memory", human_bytes(m.saturating_mul(1 << 20))));
    }
    match prop("ovf_manifest_verified").as_deref() {
        Some("true") => facts.push(("Manifest", "every file's digest verified".to_owned())),
        Some("false") => facts.push(("Manifest", "none in the package".to_owned())),
        _ => {}
    }
    if let Some(c) = prop("ovf_certificate") {
        facts.push(("Certificate", c));
    }
    view! {
        <section class="card" aria-labelledby="package-title" id="image-package">
            <h2 id="package-title">{title}</h2>
            {(!facts.is_empty()).then(|| view! {
                <dl class="facts package-facts">{facts.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()}</dl>
            })}
            {prop(imageops::NOT_KEPT).map(|n| view! { <p class="warning" role="alert" id="package-not-kept">{format!("Not every disk of the package became an image: {n}")}</p> })}
            <p>{format!("The package became {} {}:", package.len(), if package.len() == 1 { "image" } else { "images" })}</p>
            <ul class="package-images">
                {package.into_iter().map(|r| {
                    let label = if r.name.is_empty() { r.id.clone() } else { r.name.clone() };
                    let what = format!(" · {}{} · {}", r.role, r.disk_format.map(|f| format!(", {f}")).unwrap_or_default(), r.status);
                    view! {
                        <li data-role=r.role.clone()>
                            {if r.is_self {
                                view! { <strong aria-current="page">{label}" (this image)"</strong> }.into_any()
                            } else {
                                view! { <A href=format!("/images/{}", r.id)>{label}</A> }.into_any()
                            }}
                            <span class="muted">{what}</span>
                        </li>
                    }
                }).collect_view()}
            </ul>
        </section>
    }
}
