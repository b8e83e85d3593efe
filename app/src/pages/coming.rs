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

/// Upload: the browser identifies each file before sending it, then uploads it in resumable chunks.
#[component]
pub fn UploadPage() -> impl IntoView {
    view! {
        <Coming
            title="Upload"
            lead="Upload disk images from your browser: Hangar identifies each file before a byte is sent."
            points=&[
                "Drag-and-drop or pick several files; each is identified in the browser from its first 64 KiB and last 1.5 KiB.",
                "Chunked, parallel uploads that resume after a network drop, a page reload or a browser restart.",
                "Server-side validation of every upload, then conversion to the format your storage needs.",
            ]
        />
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
