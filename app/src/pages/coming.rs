//! Sections whose issues have not landed yet. Each says plainly what is coming, so nobody
//! mistakes an empty screen for a broken one.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

#[component]
fn Coming(title: &'static str, lead: &'static str, points: &'static [&'static str]) -> impl IntoView {
    view! {
        <Title text=title />
        <section class="page">
            <h1>{title}</h1>
            <p class="lead">{lead}</p>
            <div class="notice" role="note">
                <strong>"Coming soon. "</strong>
                "This part of Hangar is being built. It will offer:"
                <ul>{points.iter().map(|p| view! { <li>{*p}</li> }).collect_view()}</ul>
            </div>
            <p><A href="/formats">"See which formats Hangar understands"</A></p>
        </section>
    }
}

/// The storage-compatibility matrix.
#[component]
pub fn StoragePage() -> impl IntoView {
    view! {
        <Coming
            title="Storage matrix"
            lead="Which image formats each storage backend keeps natively, converts on import, or refuses, and why."
            points=&[
                "Local, NFS-backed and Ceph-backed storage side by side, per format.",
                "The reason for every cell, on hover, on focus and in a legend.",
                "Administrators edit the policy; every import applies it.",
            ]
        />
    }
}
