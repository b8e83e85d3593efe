//! What a form says after it was submitted: the error (with or without JavaScript: a form post
//! that failed comes back with the error in the URL, which `ServerAction` picks up), or a success
//! note.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;

use crate::AppError;

/// Shows the last result of `action`: its error in an alert, or `success` once it succeeded.
#[component]
pub fn ActionResult<S>(action: ServerAction<S>, #[prop(into)] success: String) -> impl IntoView
where
    S: ServerFn<Error = AppError> + Clone + Send + Sync + 'static,
    S::Output: Clone + Send + Sync + 'static,
{
    move || match action.value().get() {
        Some(Err(err)) => Some(view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any()),
        Some(Ok(_)) => Some(view! { <div class="success" role="status">{success.clone()}</div> }.into_any()),
        None => None,
    }
}
