//! Sign in.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::auth::SignIn;
use crate::components::feedback::ActionResult;

/// A plain form (not `ActionForm`), also when hydrated: signing in changes what every part of
/// the page shows, so a full post-and-redirect is what we want. A failure comes back to this page
/// with the error in the URL, which the action picks up.
#[component]
pub fn SignInPage() -> impl IntoView {
    let action = ServerAction::<SignIn>::new();
    let query = use_query_map();
    let next = move || query.with(|q| q.get("next").unwrap_or_else(|| "/images".to_owned()));
    view! {
        <Title text="Sign in" />
        <section class="page narrow">
            <h1>"Sign in"</h1>
            <p class="lead">"Sign in with the account your administrator gave you."</p>
            <form method="post" action=SignIn::url() class="form" id="signin-form">
                <input type="hidden" name="next" value=next />
                <label for="signin-username">"Username"</label>
                <input id="signin-username" name="username" type="text" autocomplete="username" required autofocus />
                <label for="signin-password">"Password"</label>
                <input id="signin-password" name="password" type="password" autocomplete="current-password" required />
                <ActionResult action success="Signed in." />
                <button type="submit" class="button button-primary">"Sign in"</button>
            </form>
        </section>
    }
}
