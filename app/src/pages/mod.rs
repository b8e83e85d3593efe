//! One module per route.

use leptos::prelude::*;
use leptos_router::hooks::use_location;

pub mod account;
pub mod admin;
pub mod formats;
pub mod image;
pub mod images;
pub mod not_found;
pub mod signin;
pub mod storage;
pub mod upload;

/// Shown instead of a page's content to someone who is not signed in.
#[component]
pub fn SignInPrompt(what: &'static str) -> impl IntoView {
    let location = use_location();
    let href = move || {
        let here = format!("{}{}", location.pathname.get(), location.search.get());
        format!("/signin?next={}", crate::components::size::encode_query(&here))
    };
    view! {
        <div class="notice" id="signin-prompt">
            <p><strong>{format!("Sign in to see {what}.")}</strong></p>
            <p><a class="button button-primary" href=href>"Sign in"</a></p>
        </div>
    }
}
