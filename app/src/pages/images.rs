//! The Images page: the catalogue, newest first.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

use crate::api::auth::whoami;
use crate::api::images::{list_images, ImageList, ImageSummary};
use crate::api::prefs::{welcome_dismissed, DismissWelcome};
use crate::api::shares::{pending_shares, AnswerShare, PendingShare};
use crate::components::feedback::ActionResult;
use crate::components::size::human_bytes;
use crate::pages::SignInPrompt;

#[component]
pub fn ImagesPage() -> impl IntoView {
    let dismiss = ServerAction::<DismissWelcome>::new();
    // Re-read after a dismissal so the panel disappears without a reload when JS runs; without
    // JS the form post redirects back here and the server renders the page without it.
    let welcome = Resource::new(move || dismiss.version().get(), |_| welcome_dismissed());
    let answer = ServerAction::<AnswerShare>::new();
    let me = Resource::new(|| (), |_| whoami());
    let images = Resource::new(move || answer.version().get(), |_| list_images());
    let shares = Resource::new(move || answer.version().get(), |_| pending_shares());

    view! {
        <Title text="Images" />
        <section class="page">
            <div class="page-head">
                <h1>"Images"</h1>
                <A href="/upload" attr:class="button button-primary">"Upload image"</A>
            </div>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match welcome.await {
                        Ok(false) => Some(view! { <Welcome dismiss /> }.into_any()),
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
                    match images.await {
                        Ok(list) => view! {
                            <p class="muted" id="images-scope">{scope}</p>
                            <PendingShares shares answer />
                            <ImageTable list />
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
fn Welcome(dismiss: ServerAction<DismissWelcome>) -> impl IntoView {
    view! {
        <aside class="welcome" id="welcome" aria-labelledby="welcome-title">
            <h2 id="welcome-title">"Welcome to Hangar"</h2>
            <p>
                "Upload disk images in any common format. Hangar checks each one before it is used, "
                "converts it for your storage, and records its checksums."
            </p>
            <ActionForm action=dismiss>
                <button type="submit" class="button button-quiet" id="dismiss-welcome">"Dismiss"</button>
            </ActionForm>
        </aside>
    }
}

#[component]
fn ImageTable(list: ImageList) -> impl IntoView {
    if list.images.is_empty() {
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
    let shown = list.images.len();
    let total = list.total;
    view! {
        <p class="muted" id="images-count">
            {if u64::try_from(shown).unwrap_or(u64::MAX) == total {
                format!("{total} image{}", if total == 1 { "" } else { "s" })
            } else {
                format!("Showing the newest {shown} of {total} images")
            }}
        </p>
        <div class="table-wrap">
            <table class="table" id="images-table">
                <caption class="visually-hidden">"Images, newest first"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Name"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Format"</th>
                        <th scope="col">"Visibility"</th>
                        <th scope="col" class="num">"Size"</th>
                        <th scope="col">"Created"</th>
                    </tr>
                </thead>
                <tbody>{list.images.into_iter().map(|image| view! { <ImageRow image /> }).collect_view()}</tbody>
            </table>
        </div>
    }
    .into_any()
}

#[component]
fn ImageRow(image: ImageSummary) -> impl IntoView {
    let name = if image.name.is_empty() { format!("(unnamed {})", &image.id[..image.id.len().min(8)]) } else { image.name };
    let format = match (image.disk_format, image.container_format) {
        (Some(d), Some(c)) if c != "bare" => format!("{d} in {c}"),
        (Some(d), _) => d,
        (None, _) => "—".to_owned(),
    };
    view! {
        <tr>
            <th scope="row">{name}</th>
            <td><span class=format!("status status-{}", image.status)>{image.status.clone()}</span></td>
            <td>{format}</td>
            <td>{image.visibility}</td>
            <td class="num">{image.size.map_or_else(|| "—".to_owned(), human_bytes)}</td>
            <td><time datetime=image.created_at.clone()>{image.created_at.replace('T', " ").trim_end_matches('Z').to_owned()}</time></td>
        </tr>
    }
}
