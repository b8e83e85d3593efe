//! The navigation shell around every page: skip link, header with navigation, footer.

use leptos::prelude::*;
use leptos_router::components::A;

use leptos::server_fn::ServerFn;
use leptos_router::hooks::use_location;

use crate::api::auth::{whoami, Me, SignOut, SwitchProject};
use crate::api::status::{server_status, StatusReport};

/// Header, navigation and footer around the routed page.
#[component]
pub fn Shell(children: Children) -> impl IntoView {
    let me = Resource::new(|| (), |_| whoami());
    let signed_in = move || matches!(me.get(), Some(Ok(Some(_))));
    let is_admin = move || matches!(me.get(), Some(Ok(Some(Me { is_admin: true, .. }))));
    // Signed out, the Upload page asks to sign in; signed in, it is offered to those who may
    // upload (readers are not shown a door that refuses them).
    let may_upload = move || match me.get() {
        Some(Ok(Some(me))) => me.can_upload(),
        _ => true,
    };
    view! {
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="topbar">
            <A href="/" attr:class="brand">
                <span class="brand-mark" aria-hidden="true">"▲"</span>
                <span class="brand-name">"Hangar"</span>
            </A>
            <nav aria-label="Main">
                <ul class="nav">
                    <li><A href="/images">"Images"</A></li>
                    <Suspense fallback=|| ()>
                        <Show when=may_upload>
                            <li><A href="/upload">"Upload"</A></li>
                        </Show>
                    </Suspense>
                    <li><A href="/jobs">"Jobs"</A></li>
                    <li><A href="/storage">"Storage matrix"</A></li>
                    <li><A href="/formats">"Formats"</A></li>
                    <Suspense fallback=|| ()>
                        <Show when=is_admin>
                            <li><A href="/admin">"Admin"</A></li>
                        </Show>
                    </Suspense>
                </ul>
            </nav>
            <div class="usermenu">
                <Suspense fallback=|| ()>
                    <Show when=signed_in fallback=|| view! { <a href="/signin" class="signin-link">"Sign in"</a> }>
                        {move || me.get().and_then(Result::ok).flatten().map(|me| view! { <UserMenu me /> })}
                    </Show>
                </Suspense>
            </div>
        </header>
        <main id="main" tabindex="-1">{children()}</main>
        <Footer />
    }
}

/// The signed-in user's controls: project switcher, account link, sign out. Plain forms, so they
/// work without JavaScript and reload the page for the new identity or project.
#[component]
fn UserMenu(me: Me) -> impl IntoView {
    let location = use_location();
    let here = move || format!("{}{}", location.pathname.get(), location.search.get());
    let current = me.project.as_ref().map(|p| p.id.clone()).unwrap_or_default();
    view! {
        {(!me.projects.is_empty()).then(|| view! {
            <form method="post" action=SwitchProject::url() class="project-switch">
                <input type="hidden" name="next" value=here />
                <label for="project-select" class="visually-hidden">"Project"</label>
                <select id="project-select" name="project_id">
                    {me.projects.iter().map(|p| view! {
                        <option value=p.id.clone() selected=p.id == current>{format!("{} · {}", p.name, if me.is_admin { "administrator" } else { p.role.as_str() })}</option>
                    }).collect_view()}
                </select>
                <button type="submit" class="button button-small">"Switch"</button>
            </form>
        })}
        {me.projects.is_empty().then(|| view! { <span class="muted-light" id="no-project">"No project"</span> })}
        <A href="/account" attr:class="account-link" attr:id="account-link">{me.username.clone()}</A>
        <form method="post" action=SignOut::url()>
            <button type="submit" class="button button-small" id="sign-out">"Sign out"</button>
        </form>
    }
}

/// Footer with a server status check. The check needs the browser bundle: the button stays
/// disabled until the page has hydrated, so a user without JavaScript never presses a dead button.
#[component]
fn Footer() -> impl IntoView {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let check = Action::new(|_: &()| server_status());
    let result = move || {
        check.value().get().map(|res| match res {
            Ok(status) => status_line(&status),
            Err(err) => format!("Server check failed: {err}"),
        })
    };
    view! {
        <footer class="footer">
            <span>"Hangar " {env!("CARGO_PKG_VERSION")}</span>
            <span class="footer-status">
                <button
                    id="status-check"
                    class="button button-quiet"
                    type="button"
                    disabled=move || !hydrated.get() || check.pending().get()
                    data-hydrated=move || hydrated.get().to_string()
                    on:click=move |_| {
                        check.dispatch(());
                    }
                >
                    "Check server"
                </button>
                <output id="status-result" aria-live="polite">
                    {move || if check.pending().get() { Some("Checking…".to_owned()) } else { result() }}
                </output>
            </span>
        </footer>
    }
}

fn status_line(status: &StatusReport) -> String {
    let images = match status.images {
        Some(1) => " · 1 image".to_owned(),
        Some(n) => format!(" · {n} images"),
        None => String::new(),
    };
    format!("Server healthy · {}{images} · up {}", status.database, uptime(status.uptime_seconds))
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_reads_naturally() {
        let s = StatusReport { version: "0.1.0".into(), database: "SQLite".into(), images: Some(1), uptime_seconds: 3725 };
        assert_eq!(status_line(&s), "Server healthy · SQLite · 1 image · up 1 h 2 min");
        let anonymous = StatusReport { images: None, ..s };
        assert_eq!(status_line(&anonymous), "Server healthy · SQLite · up 1 h 2 min");
        assert_eq!(uptime(59), "59 s");
        assert_eq!(uptime(90_000), "1 d 1 h");
    }
}
