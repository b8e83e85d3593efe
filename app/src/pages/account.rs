//! The signed-in user's own page: API tokens.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::auth::whoami;
use crate::api::tokens::{list_tokens, CreateToken, RevokeToken};
use crate::components::feedback::ActionResult;
use crate::pages::SignInPrompt;

#[component]
pub fn AccountPage() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let me = Resource::new(|| (), |_| whoami());
    let tokens = Resource::new(move || (create.version().get(), revoke.version().get()), |_| list_tokens());
    view! {
        <Title text="Account" />
        <section class="page">
            <h1>"Account"</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let Ok(Some(me)) = me.await else { return view! { <SignInPrompt what="your account" /> }.into_any() };
                    view! {
                        <p class="lead">
                            "Signed in as " <strong>{me.username.clone()}</strong>
                            {me.is_admin.then_some(" (administrator)")}
                        </p>
                        <h2>"API tokens"</h2>
                        <p>
                            "Tokens let the CLI and API clients act as you in one project: send one as "
                            <code>"X-Auth-Token"</code> ". A token is shown once, when it is created."
                        </p>
                        <ActionForm action=create attr:class="form inline-form" attr:id="token-form">
                            <label for="token-name">"Name"</label>
                            <input id="token-name" name="name" type="text" maxlength="100" placeholder="e.g. laptop CLI" />
                            <label for="token-project">"Project"</label>
                            <select id="token-project" name="project_id">
                                {me.projects.iter().map(|p| {
                                    let selected = me.project.as_ref().is_some_and(|c| c.id == p.id);
                                    view! { <option value=p.id.clone() selected=selected>{format!("{} ({})", p.name, p.role)}</option> }
                                }).collect_view()}
                            </select>
                            <label for="token-expiry">"Expires"</label>
                            <select id="token-expiry" name="expires_in_days">
                                <option value="">"never (until revoked)"</option>
                                <option value="7">"in 7 days"</option>
                                <option value="30" selected=true>"in 30 days"</option>
                                <option value="90">"in 90 days"</option>
                                <option value="366">"in a year"</option>
                            </select>
                            <button type="submit" class="button button-primary">"Create token"</button>
                        </ActionForm>
                        {move || match create.value().get() {
                            Some(Ok(new)) => view! {
                                <div class="success" role="status" id="new-token">
                                    <p>"Your new token for " {new.token.project.clone()} ". Copy it now: it will not be shown again."</p>
                                    <code class="secret" id="new-token-secret">{new.secret.clone()}</code>
                                </div>
                            }.into_any(),
                            Some(Err(err)) => view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any(),
                            None => ().into_any(),
                        }}
                        <ActionResult action=revoke success="Token revoked." />
                    }.into_any()
                })}
            </Suspense>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Ok(list) if list.is_empty() => view! { <p class="muted" id="tokens-empty">"You have no tokens."</p> }.into_any(),
                        Ok(list) => view! {
                            <div class="table-wrap">
                                <table class="table" id="tokens-table">
                                    <caption class="visually-hidden">"Your API tokens"</caption>
                                    <thead><tr>
                                        <th scope="col">"Name"</th><th scope="col">"Project"</th><th scope="col">"Created"</th>
                                        <th scope="col">"Last used"</th><th scope="col">"Expires"</th><th scope="col">"State"</th>
                                    </tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|t| view! {
                                            <tr>
                                                <th scope="row">{if t.name.is_empty() { "(unnamed)".to_owned() } else { t.name.clone() }}</th>
                                                <td>{t.project.clone()}</td>
                                                <td>{t.created_at.clone()}</td>
                                                <td>{t.last_used_at.clone().unwrap_or_else(|| "never".into())}</td>
                                                <td>{t.expires_at.clone().unwrap_or_else(|| "never".into())}</td>
                                                <td>
                                                    {if t.revoked {
                                                        view! { <span class="status status-killed">"revoked"</span> }.into_any()
                                                    } else {
                                                        view! {
                                                            <ActionForm action=revoke>
                                                                <input type="hidden" name="token_id" value=t.id.clone() />
                                                                <button type="submit" class="button button-quiet">"Revoke"</button>
                                                            </ActionForm>
                                                        }.into_any()
                                                    }}
                                                </td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                        }.into_any(),
                        Err(_) => ().into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}
