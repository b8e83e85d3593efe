//! The Images page: the catalogue with filters, sorting and marker-based paging. The filter
//! form is a plain GET form, so every view is a shareable URL and works without JavaScript.

use domain::DiskFormat;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::{Form, A};
use leptos_router::hooks::use_query_map;
use leptos_router::params::ParamsMap;

use crate::api::auth::whoami;
use crate::api::images::{list_images, ImageList, ImageSummary, SORT_KEYS, STATUSES};
use crate::api::prefs::{welcome_dismissed, DismissWelcome};
use crate::api::shares::{pending_shares, AnswerShare, PendingShare};
use crate::components::feedback::ActionResult;
use crate::components::size::{encode_query, human_bytes};
use crate::pages::SignInPrompt;

#[component]
pub fn ImagesPage() -> impl IntoView {
    let dismiss = ServerAction::<DismissWelcome>::new();
    // Re-read after a dismissal so the panel disappears without a reload when JS runs; without
    // JS the form post redirects back here and the server renders the page without it.
    let welcome = Resource::new(move || dismiss.version().get(), |_| welcome_dismissed());
    let answer = ServerAction::<AnswerShare>::new();
    let me = Resource::new(|| (), |_| whoami());
    let query = use_query_map();
    let images = Resource::new(
        move || (answer.version().get(), query.get()),
        |(_, q)| {
            let g = |k: &str| q.get(k);
            list_images(
                g("q"),
                g("status"),
                g("disk_format"),
                g("visibility"),
                g("owner"),
                g("tag"),
                g("size_min"),
                g("size_max"),
                g("protected"),
                g("sort"),
                g("dir"),
                g("marker"),
                g("limit").and_then(|l| l.parse().ok()),
            )
        },
    );
    let shares = Resource::new(move || answer.version().get(), |_| pending_shares());

    view! {
        <Title text="Images" />
        <section class="page">
            <div class="page-head">
                <h1>"Images"</h1>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        // Offered to those who may upload into the current project.
                        matches!(me.await, Ok(Some(m)) if m.can_upload())
                            .then(|| view! { <A href="/upload" attr:class="button button-primary" attr:id="upload-button">"Upload image"</A> })
                    })}
                </Suspense>
            </div>
            // The image page's delete comes back here with the name it deleted: say so.
            {move || query.with(|q| q.get("deleted")).filter(|n| !n.is_empty()).map(|name| view! {
                <p class="success" role="status" id="deleted-notice">{format!("Deleted the image “{name}” and its stored data.")}</p>
            })}
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let uploader = matches!(me.await, Ok(Some(m)) if m.can_upload());
                    match welcome.await {
                        Ok(false) => Some(view! { <Welcome dismiss uploader /> }.into_any()),
                        _ => None,
                    }
                })}
            </Suspense>
            <Suspense fallback=|| view! { <p class="muted" role="status">"Loading images…"</p> }>
                {move || Suspend::new(async move {
                    let Ok(Some(me)) = me.await else { return view! { <SignInPrompt what="your images" /> }.into_any() };
                    let shares = shares.await.unwrap_or_default();
                    let scope = match (&me.project, me.is_admin) {
                        (_, true) => "All images (administrator view)".to_owned(),
                        (Some(p), false) => format!("Images of {}, plus public and shared ones", p.name),
                        (None, false) => "Public images. Ask an administrator for a role in a project to upload your own.".to_owned(),
                    };
                    let q = query.get_untracked();
                    match images.await {
                        Ok(list) => view! {
                            <p class="muted" id="images-scope">{scope}</p>
                            <PendingShares shares answer />
                            <Filters q=q.clone() owners=list.owners.clone() />
                            <ImageTable list q />
                        }.into_any(),
                        Err(err) => view! {
                            <div class="alert" role="alert">
                                <strong>"Images could not be loaded. "</strong>
                                {err.to_string()}
                            </div>
                        }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// Images other projects shared with this one, waiting for an answer.
#[component]
fn PendingShares(shares: Vec<PendingShare>, answer: ServerAction<AnswerShare>) -> impl IntoView {
    (!shares.is_empty()).then(|| {
        view! {
            <section class="notice" aria-labelledby="shares-title" id="pending-shares">
                <h2 id="shares-title">{format!("{} image{} shared with your project", shares.len(), if shares.len() == 1 { "" } else { "s" })}</h2>
                <ActionResult action=answer success="Answer saved." />
                <ul class="members">
                    {shares.into_iter().map(|s| {
                        let (id1, id2) = (s.image_id.clone(), s.image_id.clone());
                        view! {
                        <li>
                            <strong>{s.image_name.clone()}</strong>" from "{s.owner.clone()}
                            <ActionForm action=answer attr:class="inline">
                                <input type="hidden" name="image_id" value=id1 />
                                <input type="hidden" name="accept" value="true" />
                                <button type="submit" class="button button-quiet">"Accept"</button>
                            </ActionForm>
                            <ActionForm action=answer attr:class="inline">
                                <input type="hidden" name="image_id" value=id2 />
                                <input type="hidden" name="accept" value="false" />
                                <button type="submit" class="button button-quiet">"Reject"</button>
                            </ActionForm>
                        </li>
                        }
                    }).collect_view()}
                </ul>
            </section>
        }
    })
}

#[component]
fn Welcome(dismiss: ServerAction<DismissWelcome>, uploader: bool) -> impl IntoView {
    view! {
        <aside class="welcome" id="welcome" aria-labelledby="welcome-title">
            <h2 id="welcome-title">"Welcome to Hangar"</h2>
            {if uploader {
                view! { <p>
                    "Upload disk images in any common format. Hangar checks each one before it is used, "
                    "converts it for your storage, and records its checksums."
                </p> }.into_any()
            } else {
                view! { <p>
                    "Browse and download the images your project can use; each was checked before it became available, "
                    "and its checksums are on its page. To upload images, ask an administrator for the member role."
                </p> }.into_any()
            }}
            <ActionForm action=dismiss>
                <button type="submit" class="button button-quiet" id="dismiss-welcome">"Dismiss"</button>
            </ActionForm>
        </aside>
    }
}

/// The filter form's current value of `key`.
fn val(q: &ParamsMap, key: &str) -> String {
    q.get(key).unwrap_or_default()
}

/// `options` as `<option>`s with the current value selected; the first option means "any".
fn options(any: &'static str, current: &str, items: Vec<(String, String)>) -> impl IntoView {
    let none_selected = current.is_empty();
    view! {
        <option value="" selected=none_selected>{any}</option>
        {items.into_iter().map(|(v, label)| { let sel = v == current; view! { <option value=v selected=sel>{label}</option> } }).collect_view()}
    }
}

fn pairs(items: &[&str]) -> Vec<(String, String)> {
    items.iter().map(|s| ((*s).to_owned(), (*s).to_owned())).collect()
}

#[component]
fn Filters(q: ParamsMap, owners: Vec<(String, String)>) -> impl IntoView {
    let protected = val(&q, "protected");
    let dir = val(&q, "dir");
    view! {
        <Form method="GET" action="/images" attr:class="filters" attr:id="image-filters" attr:aria-label="Filter images">
            <div class="field"><label for="f-q">"Name contains"</label><input id="f-q" name="q" type="search" value=val(&q, "q") /></div>
            <div class="field"><label for="f-status">"Status"</label>
                <select id="f-status" name="status">{options("Any", &val(&q, "status"), pairs(&STATUSES.map(|s| s.as_str())))}</select></div>
            <div class="field"><label for="f-format">"Disk format"</label>
                <select id="f-format" name="disk_format">{options("Any", &val(&q, "disk_format"), pairs(&DiskFormat::ALL.iter().map(|f| f.as_str()).collect::<Vec<_>>()))}</select></div>
            <div class="field"><label for="f-visibility">"Visibility"</label>
                <select id="f-visibility" name="visibility">{options("Default", &val(&q, "visibility"), pairs(&["private", "shared", "community", "public", "all"]))}</select></div>
            <div class="field"><label for="f-owner">"Owner"</label>
                <select id="f-owner" name="owner">{options("Any", &val(&q, "owner"), owners)}</select></div>
            <div class="field"><label for="f-tag">"Tag"</label><input id="f-tag" name="tag" type="text" value=val(&q, "tag") /></div>
            <div class="field"><label for="f-min">"Size from"</label><input id="f-min" name="size_min" type="text" placeholder="e.g. 100 MiB" value=val(&q, "size_min") /></div>
            <div class="field"><label for="f-max">"Size up to"</label><input id="f-max" name="size_max" type="text" placeholder="e.g. 2 GiB" value=val(&q, "size_max") /></div>
            <div class="field"><label for="f-protected">"Protected"</label>
                <select id="f-protected" name="protected">
                    <option value="" selected=protected.is_empty()>"Any"</option>
                    <option value="yes" selected=protected == "yes">"Protected"</option>
                    <option value="no" selected=protected == "no">"Not protected"</option>
                </select></div>
            <div class="field"><label for="f-sort">"Sort by"</label>
                <select id="f-sort" name="sort">{options("Created", &val(&q, "sort"), SORT_KEYS.iter().skip(1).map(|(k, l)| ((*k).to_owned(), (*l).to_owned())).collect())}</select></div>
            <div class="field"><label for="f-dir">"Order"</label>
                <select id="f-dir" name="dir">
                    <option value="" selected=dir.is_empty()>"Default"</option>
                    <option value="asc" selected=dir == "asc">"Ascending"</option>
                    <option value="desc" selected=dir == "desc">"Descending"</option>
                </select></div>
            <div class="field filter-actions">
                <button type="submit" class="button button-primary">"Apply filters"</button>
                <A href="/images" attr:class="button button-quiet">"Clear"</A>
            </div>
        </Form>
    }
}

/// The current listing's URL with `marker` replaced (or removed).
fn page_url(q: &ParamsMap, marker: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for key in ["q", "status", "disk_format", "visibility", "owner", "tag", "size_min", "size_max", "protected", "sort", "dir", "limit"] {
        if let Some(v) = q.get(key).filter(|v| !v.is_empty()) {
            parts.push(format!("{key}={}", encode_query(&v)));
        }
    }
    if let Some(m) = marker {
        parts.push(format!("marker={}", encode_query(m)));
    }
    if parts.is_empty() {
        "/images".to_owned()
    } else {
        format!("/images?{}", parts.join("&"))
    }
}

#[component]
fn ImageTable(list: ImageList, q: ParamsMap) -> impl IntoView {
    let filtered = ["q", "status", "disk_format", "visibility", "owner", "tag", "size_min", "size_max", "protected"]
        .iter()
        .any(|k| q.get(k).is_some_and(|v| !v.is_empty()));
    if list.images.is_empty() && filtered {
        return view! {
            <div class="empty-state" id="images-empty">
                <h2>"No images match these filters"</h2>
                <p><A href="/images">"Clear the filters"</A></p>
            </div>
        }
        .into_any();
    }
    if list.images.is_empty() && q.get("marker").is_none() {
        return view! {
            <div class="empty-state" id="images-empty">
                <div class="empty-icon" aria-hidden="true">"▢"</div>
                <h2>"No images yet"</h2>
                <p>"Upload a disk image to see it here. Hangar accepts QCOW2, RAW, VDI, VHD/VHDX, VMDK, ISO, OVA and more."</p>
                <p class="empty-actions">
                    <A href="/upload" attr:class="button button-primary">"Upload your first image"</A>
                    <A href="/formats">"Which formats can I upload?"</A>
                </p>
            </div>
        }
        .into_any();
    }
    let total = list.total;
    let first = q.get("marker").map(|_| page_url(&q, None));
    let next = list.next_marker.as_deref().map(|m| page_url(&q, Some(m)));
    view! {
        <p class="muted" id="images-count" role="status">
            {format!("{total} image{} match{}", if total == 1 { "" } else { "s" }, if total == 1 { "es" } else { "" })}
            {if first.is_some() { " · a later page" } else { "" }}
        </p>
        <div class="table-wrap">
            <table class="table" id="images-table">
                <caption class="visually-hidden">"Images"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Name"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Format"</th>
                        <th scope="col">"Visibility"</th>
                        <th scope="col">"Owner"</th>
                        <th scope="col" class="num">"Size"</th>
                        <th scope="col">"Created"</th>
                    </tr>
                </thead>
                <tbody>{list.images.into_iter().map(|image| view! { <ImageRow image /> }).collect_view()}</tbody>
            </table>
        </div>
        <nav class="pager" aria-label="Pages">
            {first.map(|href| view! { <A href=href attr:class="button button-quiet" attr:id="first-page">"← First page"</A> })}
            {next.map(|href| view! { <A href=href attr:class="button button-quiet" attr:id="next-page" attr:rel="next">"Next page →"</A> })}
        </nav>
    }
    .into_any()
}

#[component]
fn ImageRow(image: ImageSummary) -> impl IntoView {
    let name = if image.name.is_empty() { format!("(unnamed {})", &image.id[..image.id.len().min(8)]) } else { image.name };
    let format = crate::formats::describe(image.disk_format, image.container_format, "—");
    let href = format!("/images/{}", image.id);
    view! {
        <tr data-image=image.id.clone()>
            <th scope="row">
                <A href=href>{name}</A>
                {image.protected.then(|| view! { <span class="badge" title="Protected: cannot be deleted">"protected"</span> })}
                {(!image.tags.is_empty()).then(|| view! {
                    <ul class="tags" aria-label="Tags">{image.tags.into_iter().map(|t| view! { <li>{t}</li> }).collect_view()}</ul>
                })}
            </th>
            <td><span class=format!("status status-{}", image.status)>{image.status.as_str()}</span></td>
            <td>{format}</td>
            <td>{image.visibility.as_str()}</td>
            <td>{image.owner_name}</td>
            <td class="num">{image.size.map_or_else(|| "—".to_owned(), human_bytes)}</td>
            <td><time datetime=image.created_at.clone()>{image.created_at.replace('T', " ").trim_end_matches('Z').to_owned()}</time></td>
        </tr>
    }
}
