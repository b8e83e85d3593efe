//! Hangar's user interface: the Leptos application rendered by the server (feature `ssr`) and
//! hydrated in the browser (feature `hydrate`).
//!
//! - [`pages`]: one module per route.
//! - [`components`]: reusable pieces (props in, events out, no server calls).
//! - [`api`]: `#[server]` functions grouped by area; server-only code sits behind `ssr`.
// Leptos views are nested types; the Upload page's (cards with package listings) needs more
// than the default 128 levels to compute its layout when hydrating.
#![recursion_limit = "256"]

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, Meta, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

pub mod api;
#[cfg(feature = "ssr")]
pub mod auth;
pub mod components;
mod error;
pub mod formats;
pub mod html;
pub mod pages;
pub mod upload;

pub use error::AppError;

/// The name the build gives the browser bundle and stylesheet (`/pkg/hangar.js`, `.css`).
pub const OUTPUT_NAME: &str = "hangar";

/// The HTML document around the app, rendered on the server only. It also sets the page's
/// security headers (see [`security_headers`]).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    security_headers();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The Content-Security-Policy of every page, for the nonce Leptos put on its inline scripts
/// (the hydration loader and streamed resource data). Scripts come only from Hangar itself or
/// carry the nonce (no inline event handlers, no `eval`); WebAssembly may be compiled; styles
/// only from Hangar's stylesheet (no `style` attributes); nothing may frame a page.
pub fn content_security_policy(nonce: Option<&str>) -> String {
    // Without a nonce (never expected: leptos_axum makes one per render) no inline script runs.
    let nonce = nonce.map(|n| format!(" 'nonce-{n}'")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'{nonce} 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Sets the CSP for this render's nonce, and `Cache-Control: no-store` (pages show private
/// data: a shared cache or the back button after sign-out must not replay them). The server
/// adds the headers every response gets (`nosniff`, `Referrer-Policy`, …).
#[cfg(feature = "ssr")]
fn security_headers() {
    use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY};
    let Some(resp) = use_context::<leptos_axum::ResponseOptions>() else { return };
    let nonce = leptos::nonce::use_nonce().map(|n| n.to_string());
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(nonce.as_deref())) {
        resp.insert_header(CONTENT_SECURITY_POLICY, csp);
    }
    resp.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The application: navigation shell and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Every page renders with `SsrMode::Async`: the server waits for its resources (the navigation
    // shell loads the signed-in user on every page) and sends complete HTML, so pages work without
    // JavaScript (out-of-order streaming would fill in `<Suspense>` content with inline scripts).
    view! {
        <Stylesheet id="leptos" href=format!("/pkg/{OUTPUT_NAME}.css") />
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg" />
        <Meta name="description" content="Hangar: upload, validate, convert and manage virtual machine images." />
        <Title formatter=crate::html::title />
        <Router>
            <components::shell::Shell>
                <Routes fallback=pages::not_found::NotFound>
                    <Route path=path!("/") view=pages::images::ImagesPage ssr=SsrMode::Async />
                    <Route path=path!("/images") view=pages::images::ImagesPage ssr=SsrMode::Async />
                    <Route path=path!("/images/:id") view=pages::image::ImagePage ssr=SsrMode::Async />
                    <Route path=path!("/jobs") view=pages::image::JobsPage ssr=SsrMode::Async />
                    <Route path=path!("/upload") view=pages::upload::UploadPage ssr=SsrMode::Async />
                    <Route path=path!("/storage") view=pages::storage::StoragePage ssr=SsrMode::Async />
                    <Route path=path!("/formats") view=pages::formats::FormatsPage ssr=SsrMode::Async />
                    <Route path=path!("/signin") view=pages::signin::SignInPage ssr=SsrMode::Async />
                    <Route path=path!("/account") view=pages::account::AccountPage ssr=SsrMode::Async />
                    <Route path=path!("/admin") view=pages::admin::AdminUsersPage ssr=SsrMode::Async />
                    <Route path=path!("/admin/projects") view=pages::admin::AdminProjectsPage ssr=SsrMode::Async />
                    <Route path=path!("/admin/audit") view=pages::admin::AdminAuditPage ssr=SsrMode::Async />
                </Routes>
            </components::shell::Shell>
        </Router>
    }
}
