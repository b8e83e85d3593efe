//! The storage-compatibility matrix: per backend kind and format, what an import does and why.
//! Everyone signed in reads it; administrators edit it (the form works without JavaScript).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::storage::*;
use crate::components::feedback::ActionResult;
use crate::components::size::human_bytes;
use crate::pages::SignInPrompt;

const LEGEND: [(&str, &str, &str); 4] = [
    ("native", "native", "Stored exactly as uploaded."),
    ("convert", "convert to …", "Converted on import by Hangar's own converter; the upload's checksum is kept too."),
    ("extract", "extract", "A package: unpacked, and each disk inside follows its own format's row."),
    ("refuse", "refused", "Not accepted on this backend: the upload is stopped with the reason."),
];

#[component]
pub fn StoragePage() -> impl IntoView {
    let set = ServerAction::<SetMatrixCell>::new();
    // Re-read after a save that worked only: a refused one keeps the form as the admin typed it.
    let saved = RwSignal::new(0u32);
    Effect::new(move |_| {
        if matches!(set.value().get(), Some(Ok(_))) {
            saved.update(|n| *n += 1);
        }
    });
    let matrix = Resource::new(move || saved.get(), |_| storage_matrix());
    let usage = Resource::new(|| (), |_| storage_overview());
    view! {
        <Title text="Storage matrix" />
        <section class="page">
            <h1>"Storage matrix"</h1>
            <p class="lead">
                "Which image formats each kind of storage backend keeps natively, converts on import, "
                "or refuses, and why. Every upload follows the row of its format on the backend it is stored on."
            </p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match matrix.await {
                        Err(crate::AppError::Unauthorized { .. }) => view! { <SignInPrompt what="the storage matrix" /> }.into_any(),
                        Err(err) => view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any(),
                        Ok(m) => view! { <MatrixView m set /> }.into_any(),
                    }
                })}
            </Suspense>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    usage.await.ok().map(|u| view! { <UsageView backends=u /> })
                })}
            </Suspense>
        </section>
    }
}

fn tip_id(kind: &str, format: &str) -> String {
    format!("tip-{kind}-{format}")
}

#[component]
fn MatrixView(m: MatrixData, set: ServerAction<SetMatrixCell>) -> impl IntoView {
    let query = use_query_map();
    let selected =
        move || query.with(|q| (q.get("kind").unwrap_or_else(|| "local".into()), q.get("format").unwrap_or_else(|| "qcow2".into())));
    let m = StoredValue::new(m);
    let header = m.with_value(|m| {
        m.kinds
            .iter()
            .map(|k| {
                let names: Vec<String> = m.backends.iter().filter(|b| &b.kind == k).map(|b| b.name.clone()).collect();
                let note = if names.is_empty() { "no backend configured".to_owned() } else { format!("configured: {}", names.join(", ")) };
                view! { <th scope="col">{kind_label(k)}<span class="kind-note">{note}</span></th> }
            })
            .collect_view()
    });
    let can_edit = m.with_value(|m| m.can_edit);
    let rows = move || {
        m.with_value(|m| {
            m.formats
                .iter()
                .map(|f| {
                    let cells = m
                        .kinds
                        .iter()
                        .map(|k| {
                            let tip = tip_id(k, f);
                            let (class, label, reason) = match m.cell(k, f) {
                                Some(c) => (format!("cell cell-{}", c.action), c.label(), format!("{} (set by {} at {})", c.reason, c.updated_by, c.updated_at)),
                                None => ("cell cell-refuse".to_owned(), "refused".to_owned(), "No rule for this format: refused.".to_owned()),
                            };
                            let (kk, ff) = (k.clone(), f.clone());
                            let current = move || {
                                let (sk, sf) = selected();
                                can_edit && sk == kk && sf == ff
                            };
                            let cell = if m.can_edit {
                                let href = format!("/storage?kind={k}&format={f}#edit-cell");
                                let title = format!("Edit {} on {}", f, kind_label(k));
                                view! {
                                    <a class=class class:cell-current=current href=href aria-describedby=tip.clone() title=title data-cell=format!("{k}/{f}")>{label}</a>
                                }
                                .into_any()
                            } else {
                                view! { <span class=class tabindex="0" aria-describedby=tip.clone() data-cell=format!("{k}/{f}")>{label}</span> }.into_any()
                            };
                            view! { <td>{cell}<span class="tip" role="tooltip" id=tip>{reason}</span></td> }
                        })
                        .collect_view();
                    view! { <tr><th scope="row">{f.clone()}</th>{cells}</tr> }
                })
                .collect_view()
        })
    };
    view! {
        <div class="table-wrap">
            <table class="matrix" id="storage-matrix">
                <caption class="visually-hidden">"Storage-compatibility matrix: formats by backend kind. Focus a cell for its reason."</caption>
                <thead><tr><th scope="col">"Format"</th>{header}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
        <h2>"Legend"</h2>
        <ul class="legend" id="matrix-legend">
            {LEGEND.iter().map(|(action, label, text)| view! {
                <li><span class=format!("cell cell-{action}")>{*label}</span>" "{*text}</li>
            }).collect_view()}
        </ul>
        <p class="muted">"Hover over or focus a cell (Tab) to read its reason."</p>
        {move || m.with_value(|m| m.can_edit).then(|| view! { <EditCell m selected=Signal::derive(selected) set /> })}
    }
}

#[component]
fn EditCell(m: StoredValue<MatrixData>, selected: Signal<(String, String)>, set: ServerAction<SetMatrixCell>) -> impl IntoView {
    // Once hydrated, the target field shows only for "convert to …" (without JavaScript it
    // always shows: the choice of action cannot hide it).
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    move || {
        let (kind, format) = selected.get();
        let current = m.with_value(|m| m.cell(&kind, &format).cloned());
        let action = current.as_ref().map_or_else(|| "refuse".to_owned(), |c| c.action.clone());
        let target = current.as_ref().and_then(|c| c.target_format.clone()).unwrap_or_default();
        let reason = current.as_ref().map(|c| c.reason.clone()).unwrap_or_default();
        let kinds = m.with_value(|m| m.kinds.clone());
        let formats = m.with_value(|m| m.formats.clone());
        let (k2, f2) = (kind.clone(), format.clone());
        let chosen = RwSignal::new(action.clone());
        view! {
            <section class="card" id="edit-cell" aria-labelledby="edit-cell-title">
                <h2 id="edit-cell-title">"Edit a cell"</h2>
                <p class="muted">"Changes apply to the next import; stored images keep their format. Every change is in the audit log."</p>
                <ActionForm action=set attr:class="form" attr:id="edit-cell-form">
                    <label for="cell-kind">"Backend kind"</label>
                    <select id="cell-kind" name="kind">
                        {kinds.into_iter().map(|k| { let sel = k == k2; view! { <option value=k.clone() selected=sel>{kind_label(&k)}</option> } }).collect_view()}
                    </select>
                    <label for="cell-format">"Format"</label>
                    <select id="cell-format" name="format">
                        {formats.into_iter().map(|f| { let sel = f == f2; view! { <option value=f.clone() selected=sel>{f.clone()}</option> } }).collect_view()}
                    </select>
                    <label for="cell-action">"On import"</label>
                    <select id="cell-action" name="action" on:change=move |ev| chosen.set(event_target_value(&ev))>
                        {LEGEND.iter().map(|(a, label, _)| { let sel = *a == action; view! { <option value=*a selected=sel>{*label}</option> } }).collect_view()}
                    </select>
                    <div class="field" id="cell-target-field" hidden=move || hydrated.get() && chosen.get() != "convert">
                        <label for="cell-target">"Convert to (only for “convert to …”)"</label>
                        <select id="cell-target" name="target_format">
                            <option value="" selected=target.is_empty()>"—"</option>
                            {CONVERT_TARGETS.iter().map(|t| { let sel = *t == target; view! { <option value=*t selected=sel>{*t}</option> } }).collect_view()}
                        </select>
                    </div>
                    <label for="cell-reason">"Reason users see"</label>
                    <crate::html::TextArea value=reason attr:id="cell-reason" attr:name="reason" attr:rows="3" attr:maxlength="500" attr:required=true />
                    <button type="submit" class="button button-primary">"Save cell"</button>
                </ActionForm>
                <ActionResult action=set success="Saved. The next import on this kind of backend follows the new rule." />
            </section>
        }
    }
}

/// Colours of the usage chart's formats (AA contrast against white text is not needed: the
/// chart has a legend and a table with the same numbers).
fn colour(format: &str) -> &'static str {
    match format {
        "qcow2" => "#1f5fbf",
        "raw" => "#1d7a46",
        "iso" => "#8a5a00",
        "ami" | "aki" | "ari" => "#55308f",
        "vdi" | "vhd" | "vhdx" | "vmdk" => "#b3261e",
        _ => "#5a6472",
    }
}

/// The bar's colour for what is not the images shown.
const OTHER_COLOUR: &str = "#9aa3ad";

/// Per backend: a stacked bar of bytes by format (server-rendered SVG), free space, and a table
/// of bytes and images by project and format.
#[component]
fn UsageView(backends: Vec<BackendUsage>) -> impl IntoView {
    let max = backends.iter().map(|b| b.total.unwrap_or(0).max(b.bytes())).max().unwrap_or(0).max(1);
    const W: f64 = 600.0;
    view! {
        <section aria-labelledby="usage-title" id="storage-usage">
            <h2 id="usage-title">"Backends and usage"</h2>
            {backends.into_iter().map(|b| {
                let used = b.bytes();
                // Scale: the backend's capacity when known, else the largest backend's use.
                let scale = b.total.unwrap_or(max).max(used).max(1) as f64;
                let mut x = 0.0;
                let segments: Vec<_> = b.by_format.iter().map(|f| {
                    let w = (f.bytes as f64 / scale * W).max(if f.bytes > 0 { 2.0 } else { 0.0 });
                    let seg = (x, w, colour(&f.format), format!("{}: {} in {} image(s)", f.format, human_bytes(f.bytes), f.images));
                    x += w;
                    seg
                }).collect();
                // What fills the storage besides the images shown (other projects' images,
                // other files on the same disk): without it a nearly full disk would look empty.
                let other = match (b.free, b.total) {
                    (Some(f), Some(t)) => t.saturating_sub(f).saturating_sub(used),
                    _ => 0,
                };
                let other_segment = (other > 0).then(|| {
                    let w = (other as f64 / scale * W).max(2.0).min((W - x).max(0.0));
                    (x, w, format!("Everything else on this storage: {}", human_bytes(other)))
                });
                let free = match (b.free, b.total) {
                    (Some(f), Some(t)) => format!("{} free of {}", human_bytes(f), human_bytes(t)),
                    _ => "free space: not reported by this backend".to_owned(),
                };
                let summary = format!("{}: {} in {} image(s); {}", b.name, human_bytes(used), b.images(), free);
                view! {
                    <article class="card usage-card" data-backend=b.name.clone()>
                        <h3>{b.name.clone()}" "<span class="kind-note">{kind_label(&b.kind)}{if b.is_default { " · default for uploads" } else { "" }}</span></h3>
                        <p class="usage-line">
                            {format!("{} in {} image(s) · ", human_bytes(used), b.images())}
                            {(other > 0).then(|| view! { <span class="other">{format!("{} used by everything else · ", human_bytes(other))}</span> })}
                            <span class="free">{free}</span>
                        </p>
                        <svg class="usage-chart" viewBox="0 0 600 28" width="100%" height="28" role="img" aria-label=summary>
                            <rect x="0" y="0" width="600" height="28" rx="6" fill="#eef1f5" />
                            {segments.into_iter().map(|(x, w, c, t)| view! {
                                <rect x=format!("{x:.1}") y="0" width=format!("{w:.1}") height="28" fill=c><title>{t}</title></rect>
                            }).collect_view()}
                            {other_segment.map(|(x, w, t)| view! {
                                <rect class="other" x=format!("{x:.1}") y="0" width=format!("{w:.1}") height="28" fill=OTHER_COLOUR><title>{t}</title></rect>
                            })}
                        </svg>
                        <ul class="legend">
                            {b.by_format.iter().map(|f| view! {
                                <li><svg class="swatch" viewBox="0 0 1 1" aria-hidden="true"><rect width="1" height="1" fill=colour(&f.format) /></svg>{format!("{} · {} · {} image(s)", f.format, human_bytes(f.bytes), f.images)}</li>
                            }).collect_view()}
                            {(other > 0).then(|| view! {
                                <li class="other"><svg class="swatch" viewBox="0 0 1 1" aria-hidden="true"><rect width="1" height="1" fill=OTHER_COLOUR /></svg>{format!("everything else · {}", human_bytes(other))}</li>
                            })}
                        </ul>
                        {(!b.by_project.is_empty()).then(|| view! {
                            <table class="table usage-table">
                                <caption class="visually-hidden">{format!("Usage of {} by project and format", b.name)}</caption>
                                <thead><tr><th scope="col">"Project"</th><th scope="col">"Format"</th><th scope="col" class="num">"Images"</th><th scope="col" class="num">"Bytes"</th></tr></thead>
                                <tbody>
                                    {b.by_project.iter().flat_map(|(p, fs)| fs.iter().map(move |f| view! {
                                        <tr><th scope="row">{p.clone()}</th><td>{f.format.clone()}</td><td class="num">{f.images}</td><td class="num">{human_bytes(f.bytes)}</td></tr>
                                    })).collect_view()}
                                </tbody>
                            </table>
                        })}
                    </article>
                }
            }).collect_view()}
        </section>
    }
}
