//! Administration: users, projects, role grants, quotas and the audit log. Admins only.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: String,
    /// `project: role` pairs.
    pub roles: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub members: Vec<MemberInfo>,
    pub quota: Quota,
    pub images: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user_id: String,
    pub username: String,
    pub role: String,
}

/// A project's limits; None is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub max_images: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_concurrent_uploads: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub remote_addr: String,
    pub outcome: String,
}

/// One page of the audit log, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The `before` of the next (older) page, when there are older entries.
    pub older: Option<i64>,
}

/// Entries per audit page.
pub const AUDIT_PAGE: u32 = 100;

#[cfg(feature = "ssr")]
mod imp {
    pub use crate::api::context::server_context;
    pub use crate::auth::{account_error, answer, audit, db_error, require};
    pub use policy::Action;

    pub fn admin() -> Result<(accounts::Authn, policy::Principal), crate::AppError> {
        require(&Action::ManageAccounts)
    }
}

/// Every user with their roles.
#[server(prefix = "/api", endpoint = "admin_list_users")]
pub async fn admin_list_users() -> Result<Vec<UserInfo>, AppError> {
    use imp::*;
    answer(async move {
        admin()?;
        let db = server_context()?.db;
        let users = db.list_users().await.map_err(|e| AppError::internal("list users", &e))?;
        let roles = db.all_roles().await.map_err(|e| AppError::internal("list roles", &e))?;
        Ok(users
            .into_iter()
            .map(|u| UserInfo {
                roles: roles.iter().filter(|r| r.user_id == u.id).map(|r| (r.project_name.clone(), r.role.clone())).collect(),
                id: u.id,
                username: u.username,
                is_admin: u.is_admin,
                disabled: u.disabled,
                created_at: u.created_at,
            })
            .collect())
    })
    .await
}

/// Creates a user. `is_admin` makes them a cloud administrator.
#[server(prefix = "/api", endpoint = "admin_create_user")]
pub async fn admin_create_user(username: String, password: String, is_admin: Option<String>) -> Result<String, AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let db = server_context()?.db;
        let is_admin = is_admin.is_some_and(|v| v == "on" || v == "true");
        let user = accounts::create_user(&db, &username, &password, is_admin).await.map_err(account_error)?;
        audit(&db, &authn, "user.create", "user", &user.username, if is_admin { "admin" } else { "" }).await?;
        Ok(user.id)
    })
    .await
}

/// Disables (ending their sessions and tokens' use) or re-enables a user.
#[server(prefix = "/api", endpoint = "admin_set_user_disabled")]
pub async fn admin_set_user_disabled(user_id: String, disabled: bool) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, me) = admin()?;
        if disabled && me.user_id == user_id {
            return Err(AppError::bad_request("You cannot disable your own account."));
        }
        let db = server_context()?.db;
        let user = db
            .user_by_id(&user_id)
            .await
            .map_err(|e| AppError::internal("load user", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such user.".into() })?;
        db.set_user_disabled(&user_id, disabled).await.map_err(|e| AppError::internal("disable user", &e))?;
        audit(&db, &authn, if disabled { "user.disable" } else { "user.enable" }, "user", &user.username, "").await
    })
    .await
}

/// Sets a new password for a user (ending their sessions).
#[server(prefix = "/api", endpoint = "admin_reset_password")]
pub async fn admin_reset_password(user_id: String, password: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let db = server_context()?.db;
        let user = db
            .user_by_id(&user_id)
            .await
            .map_err(|e| AppError::internal("load user", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such user.".into() })?;
        accounts::reset_password(&db, &user_id, &password).await.map_err(account_error)?;
        audit(&db, &authn, "user.reset_password", "user", &user.username, "").await
    })
    .await
}

/// Every project with its members, quota and usage.
#[server(prefix = "/api", endpoint = "admin_list_projects")]
pub async fn admin_list_projects() -> Result<Vec<ProjectInfo>, AppError> {
    use imp::*;
    answer(async move {
        admin()?;
        let db = server_context()?.db;
        let projects = db.list_projects().await.map_err(|e| AppError::internal("list projects", &e))?;
        let roles = db.all_roles().await.map_err(|e| AppError::internal("list roles", &e))?;
        let mut out = Vec::with_capacity(projects.len());
        for p in projects {
            let q = db.quota(&p.id).await.map_err(|e| AppError::internal("load quota", &e))?;
            let (images, bytes) = db.project_usage(&p.id).await.map_err(|e| AppError::internal("project usage", &e))?;
            let to_u64 = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
            out.push(ProjectInfo {
                members: roles
                    .iter()
                    .filter(|r| r.project_id == p.id)
                    .map(|r| MemberInfo { user_id: r.user_id.clone(), username: r.username.clone(), role: r.role.clone() })
                    .collect(),
                quota: Quota {
                    max_images: to_u64(q.max_images),
                    max_bytes: to_u64(q.max_bytes),
                    max_concurrent_uploads: to_u64(q.max_concurrent_uploads),
                },
                images,
                bytes,
                id: p.id,
                name: p.name,
                description: p.description,
                created_at: p.created_at,
            });
        }
        Ok(out)
    })
    .await
}

/// Creates a project.
#[server(prefix = "/api", endpoint = "admin_create_project")]
pub async fn admin_create_project(name: String, description: Option<String>) -> Result<String, AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let name = name.trim().to_owned();
        accounts::validate_name("A project name", &name).map_err(account_error)?;
        let db = server_context()?.db;
        let p = db
            .create_project(&name, description.as_deref().unwrap_or("").trim())
            .await
            .map_err(|e| db_error(&format!("The project name '{name}'"), e))?;
        audit(&db, &authn, "project.create", "project", &p.name, "").await?;
        Ok(p.id)
    })
    .await
}

/// Renames a project or changes its description.
#[server(prefix = "/api", endpoint = "admin_update_project")]
pub async fn admin_update_project(project_id: String, name: String, description: Option<String>) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let name = name.trim().to_owned();
        accounts::validate_name("A project name", &name).map_err(account_error)?;
        let db = server_context()?.db;
        let old = db
            .project_by_id(&project_id)
            .await
            .map_err(|e| AppError::internal("load project", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such project.".into() })?;
        db.rename_project(&project_id, &name, description.as_deref().unwrap_or(&old.description).trim())
            .await
            .map_err(|e| db_error(&format!("The project name '{name}'"), e))?;
        audit(&db, &authn, "project.update", "project", &name, &format!("was {}", old.name)).await
    })
    .await
}

/// Grants `role` (reader or member) in a project, replacing any role the user had there.
#[server(prefix = "/api", endpoint = "admin_grant_role")]
pub async fn admin_grant_role(username: String, project_id: String, role: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let role = policy::Role::parse(&role)
            .ok_or_else(|| AppError::bad_request("The role must be reader or member (admin is granted on the user)."))?;
        let db = server_context()?.db;
        let user = db
            .user_by_name(username.trim())
            .await
            .map_err(|e| AppError::internal("load user", &e))?
            .ok_or_else(|| AppError::NotFound { message: format!("There is no user '{}'.", username.trim()) })?;
        let project = db
            .project_by_id(&project_id)
            .await
            .map_err(|e| AppError::internal("load project", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such project.".into() })?;
        db.grant_role(&user.id, &project.id, role.as_str()).await.map_err(|e| AppError::internal("grant role", &e))?;
        audit(&db, &authn, "role.grant", "user", &user.username, &format!("{} in {}", role.as_str(), project.name)).await
    })
    .await
}

/// Removes a user's role in a project.
#[server(prefix = "/api", endpoint = "admin_revoke_role")]
pub async fn admin_revoke_role(user_id: String, project_id: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let db = server_context()?.db;
        let user = db.user_by_id(&user_id).await.map_err(|e| AppError::internal("load user", &e))?;
        let project = db.project_by_id(&project_id).await.map_err(|e| AppError::internal("load project", &e))?;
        let (Some(user), Some(project)) = (user, project) else {
            return Err(AppError::NotFound { message: "No such user or project.".into() });
        };
        if !db.revoke_role(&user_id, &project_id).await.map_err(|e| AppError::internal("revoke role", &e))? {
            return Err(AppError::NotFound { message: format!("{} has no role in {}.", user.username, project.name) });
        }
        audit(&db, &authn, "role.revoke", "user", &user.username, &format!("in {}", project.name)).await
    })
    .await
}

/// Sets a project's quota; empty fields mean unlimited. Sizes accept units (e.g. `500 GiB`).
#[server(prefix = "/api", endpoint = "admin_set_quota")]
pub async fn admin_set_quota(
    project_id: String,
    max_images: Option<String>,
    max_bytes: Option<String>,
    max_concurrent_uploads: Option<String>,
) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = admin()?;
        let count = |field: &str, v: Option<String>| -> Result<Option<i64>, AppError> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse::<u32>()
                    .map(|n| Some(i64::from(n)))
                    .map_err(|_| AppError::bad_request(format!("{field} must be a whole number, or empty for unlimited."))),
            }
        };
        let bytes = match max_bytes.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(
                crate::components::size::parse_bytes(s)
                    .and_then(|b| i64::try_from(b).ok())
                    .ok_or_else(|| AppError::bad_request("Total size must be a size such as 500 GiB, or empty for unlimited."))?,
            ),
        };
        let quota = records::QuotaRow {
            max_images: count("Image count", max_images)?,
            max_bytes: bytes,
            max_concurrent_uploads: count("Concurrent uploads", max_concurrent_uploads)?,
        };
        let db = server_context()?.db;
        let project = db
            .project_by_id(&project_id)
            .await
            .map_err(|e| AppError::internal("load project", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such project.".into() })?;
        db.set_quota(&project_id, quota).await.map_err(|e| AppError::internal("set quota", &e))?;
        let fmt = |v: Option<i64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let detail = format!(
            "images {}, bytes {}, concurrent uploads {}",
            fmt(quota.max_images),
            fmt(quota.max_bytes),
            fmt(quota.max_concurrent_uploads)
        );
        audit(&db, &authn, "quota.set", "project", &project.name, &detail).await
    })
    .await
}

/// The audit log, newest first, with filters (empty = any). `before` pages to older entries.
#[server(prefix = "/api", endpoint = "admin_list_audit")]
pub async fn admin_list_audit(
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
) -> Result<AuditPage, AppError> {
    use imp::*;
    answer(async move {
        require(&Action::ViewAudit)?;
        let db = server_context()?.db;
        let filter = records::AuditFilter {
            actor: actor.unwrap_or_default().trim().to_owned(),
            action: action.unwrap_or_default().trim().to_owned(),
            outcome: outcome.unwrap_or_default().trim().to_owned(),
            before_id: before,
            // One more than a page: whether older entries exist.
            limit: AUDIT_PAGE + 1,
        };
        let mut rows = db.list_audit(&filter).await.map_err(|e| AppError::internal("list audit", &e))?;
        let more = rows.len() > AUDIT_PAGE as usize;
        rows.truncate(AUDIT_PAGE as usize);
        let older = rows.last().filter(|_| more).map(|r| r.id);
        let entries = rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor_name,
                action: r.action,
                target: if r.target_type.is_empty() { r.target_id } else { format!("{} {}", r.target_type, r.target_id) },
                detail: r.detail,
                remote_addr: r.remote_addr,
                outcome: r.outcome,
            })
            .collect();
        Ok(AuditPage { entries, older })
    })
    .await
}
