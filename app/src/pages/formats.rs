//! The Formats page: what Hangar accepts and how it treats each format.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::formats::FORMATS;

#[component]
pub fn FormatsPage() -> impl IntoView {
    view! {
        <Title text="Formats" />
        <section class="page">
            <h1>"Formats"</h1>
            <p class="lead">
                "Hangar identifies every image from its bytes, never from its name, and refuses "
                "images that could read files on the host or hide one format inside another."
            </p>
            <nav aria-label="Formats on this page" class="toc">
                <ul>
                    {FORMATS.iter().map(|f| view! { <li><a href=format!("#{}", f.id)>{f.name}</a></li> }).collect_view()}
                </ul>
            </nav>
            <div class="cards">
                {FORMATS
                    .iter()
                    .map(|f| {
                        view! {
                            <article class="card format-card" id=f.id aria-labelledby=format!("{}-title", f.id)>
                                <h2 id=format!("{}-title", f.id)>{f.name}</h2>
                                <p>{f.description}</p>
                                <dl class="facts">
                                    <dt>"Glance"</dt>
                                    <dd><code>{f.glance}</code></dd>
                                    <dt>"Files"</dt>
                                    <dd>{f.extensions}</dd>
                                    <dt>"On import"</dt>
                                    <dd>{f.handling}</dd>
                                </dl>
                            </article>
                        }
                    })
                    .collect_view()}
            </div>
        </section>
    }
}
