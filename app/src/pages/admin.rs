//! Administration screens: users, projects (members, roles, quotas) and the audit log.
//! The server refuses every admin call from non-admins; these pages also say so plainly.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::{Form, A};
use leptos_router::hooks::use_query_map;

use crate::api::admin::*;
use crate::api::auth::whoami;
use crate::components::feedback::ActionResult;
use crate::components::size::human_bytes;
use crate::pages::SignInPrompt;

/// Renders `body` for administrators, a sign-in prompt for anonymous users and a refusal otherwise.
#[component]
fn AdminOnly(title: &'static str, children: ChildrenFn) -> impl IntoView {
    let me = Resource::new(|| (), |_| whoami());
    let children = StoredValue::new(children);
    view! {
        <Title text=title />
        <section class="page">
            <h1>{title}</h1>
            <nav aria-label="Administration" class="subnav">
                <A href="/admin" exact=true>"Users"</A>
                <A href="/admin/projects">"Projects"</A>
                <A href="/admin/audit">"Audit log"</A>
            </nav>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match me.await {
                        Ok(Some(me)) if me.is_admin => children.with_value(|c| c()).into_any(),
                        Ok(Some(_)) => view! {
                            <div class="alert" role="alert" id="admin-denied">
                                "Only administrators can manage users and projects. Consult your cloud administrator for the privileges you need."
                            </div>
                        }.into_any(),
                        _ => view! { <SignInPrompt what="administration" /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
pub fn AdminUsersPage() -> impl IntoView {
    view! { <AdminOnly title="Admin · Users"><UsersPanel /></AdminOnly> }
}

#[component]
fn UsersPanel() -> impl IntoView {
    let create = ServerAction::<AdminCreateUser>::new();
    let disable = ServerAction::<AdminSetUserDisabled>::new();
    let reset = ServerAction::<AdminResetPassword>::new();
    let users = Resource::new(move || (create.version().get(), disable.version().get(), reset.version().get()), |_| admin_list_users());
    view! {
        <h2>"Create a user"</h2>
        <ActionForm action=create attr:class="form inline-form" attr:id="create-user-form">
            <label for="new-username">"Username"</label>
            <input id="new-username" name="username" type="text" required maxlength="64" autocomplete="off" />
            <label for="new-password">"Initial password"</label>
            <input id="new-password" name="password" type="password" required minlength="8" autocomplete="new-password" />
            <label class="check"><input type="checkbox" name="is_admin" />" Administrator"</label>
            <button type="submit" class="button button-primary">"Create user"</button>
        </ActionForm>
        <ActionResult action=create success="User created. Grant them a role in a project under Projects." />
        <ActionResult action=disable success="Saved." />
        <ActionResult action=reset success="Password changed; the user's sessions have ended." />
        <h2>"Users"</h2>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match users.await {
                    Err(err) => view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any(),
                    Ok(list) => view! {
                        <div class="table-wrap">
                            <table class="table" id="users-table">
                                <caption class="visually-hidden">"Users"</caption>
                                <thead><tr>
                                    <th scope="col">"User"</th><th scope="col">"Roles"</th><th scope="col">"State"</th>
                                    <th scope="col">"Actions"</th>
                                </tr></thead>
                                <tbody>
                                    {list.into_iter().map(|u| view! { <UserRow u disable reset /> }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn UserRow(u: UserInfo, disable: ServerAction<AdminSetUserDisabled>, reset: ServerAction<AdminResetPassword>) -> impl IntoView {
    let roles = if u.roles.is_empty() {
        "none".to_owned()
    } else {
        u.roles.iter().map(|(p, r)| format!("{r} in {p}")).collect::<Vec<_>>().join(", ")
    };
    let pw_id = format!("pw-{}", u.id);
    let pw_label = format!("New password for {}", u.username);
    let (id1, id2) = (u.id.clone(), u.id.clone());
    let next_disabled = (!u.disabled).to_string();
    let toggle = if u.disabled { "Enable" } else { "Disable" };
    let state = if u.disabled {
        view! { <span class="status status-killed">"disabled"</span> }.into_any()
    } else {
        view! { <span class="status status-active">"active"</span> }.into_any()
    };
    view! {
        <tr data-user=u.username.clone()>
            <th scope="row">{u.username.clone()}{u.is_admin.then(|| view! { <span class="badge">"admin"</span> })}</th>
            <td>{roles}</td>
            <td>{state}</td>
            <td class="actions">
                <ActionForm action=disable>
                    <input type="hidden" name="user_id" value=id1 />
                    <input type="hidden" name="disabled" value=next_disabled />
                    <button type="submit" class="button button-quiet">{toggle}</button>
                </ActionForm>
                <ActionForm action=reset attr:class="inline-form">
                    <input type="hidden" name="user_id" value=id2 />
                    <label class="visually-hidden" for=pw_id.clone()>{pw_label}</label>
                    <input id=pw_id name="password" type="password" minlength="8" required placeholder="new password" autocomplete="new-password" />
                    <button type="submit" class="button button-quiet">"Reset password"</button>
                </ActionForm>
            </td>
        </tr>
    }
}

#[component]
pub fn AdminProjectsPage() -> impl IntoView {
    view! { <AdminOnly title="Admin · Projects"><ProjectsPanel /></AdminOnly> }
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(String::new, |n| n.to_string())
}

#[component]
fn ProjectsPanel() -> impl IntoView {
    let create = ServerAction::<AdminCreateProject>::new();
    let rename = ServerAction::<AdminUpdateProject>::new();
    let grant = ServerAction::<AdminGrantRole>::new();
    let revoke = ServerAction::<AdminRevokeRole>::new();
    let quota = ServerAction::<AdminSetQuota>::new();
    let projects = Resource::new(
        move || (create.version().get(), rename.version().get(), grant.version().get(), revoke.version().get(), quota.version().get()),
        |_| admin_list_projects(),
    );
    view! {
        <h2>"Create a project"</h2>
        <ActionForm action=create attr:class="form inline-form" attr:id="create-project-form">
            <label for="new-project">"Name"</label>
            <input id="new-project" name="name" type="text" required maxlength="64" />
            <label for="new-project-desc">"Description"</label>
            <input id="new-project-desc" name="description" type="text" maxlength="200" />
            <button type="submit" class="button button-primary">"Create project"</button>
        </ActionForm>
        <ActionResult action=create success="Project created." />
        <ActionResult action=rename success="Project saved." />
        <ActionResult action=grant success="Role granted." />
        <ActionResult action=revoke success="Role revoked." />
        <ActionResult action=quota success="Quota saved." />
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match projects.await {
                    Err(err) => view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No projects yet."</p> }.into_any(),
                    Ok(list) => list.into_iter().map(|p| view! { <ProjectCard p grant revoke quota rename /> }).collect_view().into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ProjectCard(
    p: ProjectInfo,
    grant: ServerAction<AdminGrantRole>,
    revoke: ServerAction<AdminRevokeRole>,
    quota: ServerAction<AdminSetQuota>,
    rename: ServerAction<AdminUpdateProject>,
) -> impl IntoView {
    let fid = |s: &str| format!("{s}-{}", p.id);
    let usage = format!(
        "{} image{} · {}{}",
        p.images,
        if p.images == 1 { "" } else { "s" },
        human_bytes(p.bytes),
        if p.description.is_empty() { String::new() } else { format!(" · {}", p.description) }
    );
    let members = if p.members.is_empty() {
        view! { <p class="muted">"Nobody has a role here yet."</p> }.into_any()
    } else {
        let items = p
            .members
            .iter()
            .map(|m| {
                let (uid, pid) = (m.user_id.clone(), p.id.clone());
                let label = format!("Revoke {}'s role in {}", m.username, p.name);
                view! {
                    <li>
                        <strong>{m.username.clone()}</strong>" · "{m.role.clone()}
                        <ActionForm action=revoke attr:class="inline">
                            <input type="hidden" name="user_id" value=uid />
                            <input type="hidden" name="project_id" value=pid />
                            <button type="submit" class="button button-quiet" aria-label=label>"Revoke"</button>
                        </ActionForm>
                    </li>
                }
            })
            .collect_view();
        view! { <ul class="members">{items}</ul> }.into_any()
    };
    let (id1, id2, id3) = (p.id.clone(), p.id.clone(), p.id.clone());
    let (grant_user, grant_role) = (fid("grant-user"), fid("grant-role"));
    let (q_images, q_bytes, q_uploads) = (fid("q-images"), fid("q-bytes"), fid("q-uploads"));
    let (r_name, r_desc) = (fid("rename"), fid("redesc"));
    let (max_images, max_bytes, max_uploads) =
        (limit(p.quota.max_images), p.quota.max_bytes.map(human_bytes).unwrap_or_default(), limit(p.quota.max_concurrent_uploads));
    let (name, description) = (p.name.clone(), p.description.clone());
    view! {
        <article class="card project-card" data-project=p.name.clone() aria-labelledby=fid("title")>
            <h2 id=fid("title")>{p.name.clone()}</h2>
            <p class="muted">{usage}</p>
            <h3>"Members"</h3>
            {members}
            <ActionForm action=grant attr:class="form inline-form">
                <input type="hidden" name="project_id" value=id1 />
                <label for=grant_user.clone()>"User"</label>
                <input id=grant_user name="username" type="text" required />
                <label for=grant_role.clone()>"Role"</label>
                <select id=grant_role name="role">
                    <option value="member">"member: upload and manage images"</option>
                    <option value="reader">"reader: see images"</option>
                </select>
                <button type="submit" class="button button-quiet">"Grant role"</button>
            </ActionForm>
            <h3>"Quota"</h3>
            <ActionForm action=quota attr:class="form inline-form">
                <input type="hidden" name="project_id" value=id2 />
                <label for=q_images.clone()>"Images"</label>
                <input id=q_images name="max_images" type="text" inputmode="numeric" value=max_images placeholder="unlimited" />
                <label for=q_bytes.clone()>"Total size"</label>
                <input id=q_bytes name="max_bytes" type="text" value=max_bytes placeholder="unlimited, e.g. 500 GiB" />
                <label for=q_uploads.clone()>"Concurrent uploads"</label>
                <input id=q_uploads name="max_concurrent_uploads" type="text" inputmode="numeric" value=max_uploads placeholder="unlimited" />
                <button type="submit" class="button button-quiet">"Save quota"</button>
            </ActionForm>
            <details>
                <summary>"Rename"</summary>
                <ActionForm action=rename attr:class="form inline-form">
                    <input type="hidden" name="project_id" value=id3 />
                    <label for=r_name.clone()>"Name"</label>
                    <input id=r_name name="name" type="text" required value=name />
                    <label for=r_desc.clone()>"Description"</label>
                    <input id=r_desc name="description" type="text" value=description />
                    <button type="submit" class="button button-quiet">"Save"</button>
                </ActionForm>
            </details>
        </article>
    }
}

#[component]
pub fn AdminAuditPage() -> impl IntoView {
    view! { <AdminOnly title="Admin · Audit log"><AuditPanel /></AdminOnly> }
}

#[component]
fn AuditPanel() -> impl IntoView {
    let query = use_query_map();
    let filter =
        move || query.with(|q| (q.get("actor"), q.get("action"), q.get("outcome"), q.get("before").and_then(|b| b.parse::<i64>().ok())));
    let entries = Resource::new(filter, |(actor, action, outcome, before)| admin_list_audit(actor, action, outcome, before));
    let value = move |key: &'static str| query.with(|q| q.get(key).unwrap_or_default());
    view! {
        <Form method="GET" action="" attr:class="form inline-form" attr:id="audit-filter">
            <label for="f-actor">"Who"</label>
            <input id="f-actor" name="actor" type="text" value=move || value("actor") />
            <label for="f-action">"Action starts with"</label>
            <input id="f-action" name="action" type="text" value=move || value("action") placeholder="e.g. user." />
            <label for="f-outcome">"Outcome"</label>
            <select id="f-outcome" name="outcome">
                {["", "ok", "denied", "failed"].into_iter().map(|o| view! {
                    <option value=o selected=move || value("outcome") == o>{if o.is_empty() { "any" } else { o }}</option>
                }).collect_view()}
            </select>
            <button type="submit" class="button button-quiet">"Filter"</button>
        </Form>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match entries.await {
                    Err(err) => view! { <div class="alert" role="alert">{err.to_string()}</div> }.into_any(),
                    Ok(page) if page.entries.is_empty() => view! { <p class="muted" id="audit-empty">"No entries match."</p> }.into_any(),
                    Ok(page) => {
                        let rows = page.entries;
                        // Only when older entries exist (the link led to an empty page before).
                        let older = page.older.map(|before| {
                            let (actor, action, outcome, _) = filter();
                            format!(
                                "/admin/audit?actor={}&action={}&outcome={}&before={}",
                                crate::components::size::encode_query(&actor.unwrap_or_default()),
                                crate::components::size::encode_query(&action.unwrap_or_default()),
                                crate::components::size::encode_query(&outcome.unwrap_or_default()),
                                before
                            )
                        });
                        view! {
                            <div class="table-wrap">
                                <table class="table" id="audit-table">
                                    <caption class="visually-hidden">"Audit log, newest first"</caption>
                                    <thead><tr>
                                        <th scope="col">"When (UTC)"</th><th scope="col">"Who"</th><th scope="col">"Action"</th>
                                        <th scope="col">"Target"</th><th scope="col">"Detail"</th><th scope="col">"From"</th><th scope="col">"Outcome"</th>
                                    </tr></thead>
                                    <tbody>
                                        {rows.into_iter().map(|r| view! {
                                            <tr>
                                                <td><time datetime=r.at.clone()>{r.at.replace('T', " ").trim_end_matches('Z').to_owned()}</time></td>
                                                <td>{r.actor}</td>
                                                <td><code>{r.action}</code></td>
                                                <td>{r.target}</td>
                                                <td>{r.detail}</td>
                                                <td>{r.remote_addr}</td>
                                                <td><span class=format!("status outcome-{}", r.outcome)>{r.outcome.clone()}</span></td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                            {older.map(|href| view! { <p><a href=href id="audit-older">"Older entries"</a></p> })}
                        }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}
