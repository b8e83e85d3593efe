//! Signing in and out, who am I, and the active project.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// A project the caller can switch to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectChoice {
    pub id: String,
    pub name: String,
    pub role: String,
}

/// The signed-in user, as the navigation shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub username: String,
    pub is_admin: bool,
    pub project: Option<ProjectChoice>,
    pub projects: Vec<ProjectChoice>,
}

impl Me {
    /// May upload into the current project (an administrator, or a member of it): the pages
    /// offer uploading only then. The server decides all the same (`policy`).
    pub fn can_upload(&self) -> bool {
        self.is_admin || self.project.as_ref().is_some_and(|p| p.role == "member")
    }
}

/// Only same-site paths are followed after sign-in: an absolute URL or `//host` would make the
/// sign-in form an open redirect.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2048
                && n.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            n.to_owned()
        }
        _ => "/images".to_owned(),
    }
}

#[cfg(feature = "ssr")]
async fn session() -> Result<tower_sessions::Session, AppError> {
    Ok(leptos_axum::extract::<tower_sessions::Session>().await?)
}

#[cfg(feature = "ssr")]
fn choice(s: &policy::Scope) -> ProjectChoice {
    ProjectChoice { id: s.project_id.clone(), name: s.project_name.clone(), role: s.role.as_str().to_owned() }
}

/// The signed-in user, or None.
#[server(prefix = "/api", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<Me>, AppError> {
    let authn = crate::auth::authn();
    Ok(authn.principal.map(|p| Me {
        username: p.username,
        is_admin: p.is_admin,
        project: p.scope.as_ref().map(choice),
        projects: authn.scopes.iter().map(choice).collect(),
    }))
}

/// Signs in with a username and password, then goes to `next` (a same-site path).
#[server(prefix = "/api", endpoint = "sign_in")]
pub async fn sign_in(username: String, password: String, next: Option<String>) -> Result<(), AppError> {
    use accounts::session_keys;
    crate::auth::answer(async move {
        let ctx = crate::api::context::server_context()?;
        let authn = crate::auth::authn();
        let user = match accounts::sign_in(&ctx.db, &username, &password, &authn.remote_addr).await {
            Ok(user) => user,
            Err(err) => {
                let outcome = if matches!(err, accounts::AccountError::Db(_)) { "failed" } else { "denied" };
                let _ = ctx
                    .db
                    .append_audit(&records::NewAudit {
                        actor_name: username.trim(),
                        action: "auth.sign_in",
                        target_type: "user",
                        target_id: username.trim(),
                        detail: &err.to_string(),
                        remote_addr: &authn.remote_addr,
                        outcome,
                        ..Default::default()
                    })
                    .await;
                return Err(crate::auth::account_error(err));
            }
        };
        let session = session().await?;
        // A new session id at sign-in: an id planted before sign-in (session fixation) is useless.
        session.cycle_id().await.map_err(|e| AppError::internal("rotate session id", &e))?;
        session.insert(session_keys::USER_ID, &user.id).await.map_err(|e| AppError::internal("write session", &e))?;
        session.insert(session_keys::EPOCH, user.session_epoch).await.map_err(|e| AppError::internal("write session", &e))?;
        ctx.db
            .append_audit(&records::NewAudit {
                actor_id: Some(&user.id),
                actor_name: &user.username,
                action: "auth.sign_in",
                target_type: "user",
                target_id: &user.id,
                remote_addr: &authn.remote_addr,
                outcome: "ok",
                ..Default::default()
            })
            .await
            .map_err(|e| AppError::internal("write audit log", &e))?;
        leptos_axum::redirect(&safe_next(next.as_deref()));
        Ok(())
    })
    .await
}

/// Signs out: the session is deleted, server side.
#[server(prefix = "/api", endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), AppError> {
    crate::auth::answer(async move {
        let session = session().await?;
        session.flush().await.map_err(|e| AppError::internal("end session", &e))?;
        leptos_axum::redirect("/signin");
        Ok(())
    })
    .await
}

/// Makes `project_id` the project the UI acts in (the user needs a role there).
#[server(prefix = "/api", endpoint = "switch_project")]
pub async fn switch_project(project_id: String, next: Option<String>) -> Result<(), AppError> {
    crate::auth::answer(async move {
        let (authn, _) = crate::auth::signed_in()?;
        if !authn.scopes.iter().any(|s| s.project_id == project_id) {
            return Err(AppError::Forbidden { message: "You have no role in that project.".into() });
        }
        let session = session().await?;
        session.insert(accounts::session_keys::PROJECT, &project_id).await.map_err(|e| AppError::internal("write session", &e))?;
        leptos_axum::redirect(&safe_next(next.as_deref()));
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_limited_to_same_site_paths() {
        assert_eq!(safe_next(Some("/admin/users")), "/admin/users");
        assert_eq!(safe_next(Some("/images?status=active")), "/images?status=active");
        for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)", "/a b", "/x\n"] {
            assert_eq!(safe_next(Some(bad)), "/images", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/images");
    }
}
