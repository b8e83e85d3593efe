#![allow(unsafe_code)] // #[wasm_bindgen] expands to unsafe glue code.
//! Browser entry point: hydrates the HTML that the server rendered.

use wasm_bindgen::prelude::wasm_bindgen;

/// Called by the module script that Leptos' `HydrationScripts` put into the page.
#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
