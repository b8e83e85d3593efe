//! Image members: an owner shares a `shared` image with another project, which accepts or
//! rejects it (Glance's image members).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// An image shared with the caller's project, waiting for an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingShare {
    pub image_id: String,
    pub image_name: String,
    pub owner: String,
    pub shared_at: String,
}

#[cfg(feature = "ssr")]
pub mod imp {
    pub use crate::api::context::server_context;
    pub use crate::auth::{answer, audit, require};
    use crate::AppError;

    /// Loads an image and the facts the policy needs about it for the caller's project
    /// (`imageops::image_facts`).
    pub async fn image_facts(
        db: &records::Db,
        image_id: &str,
        scope_project: Option<&str>,
    ) -> Result<(records::ImageRow, policy::ImageFacts), AppError> {
        Ok(imageops::image_facts(db, image_id, scope_project).await?)
    }
}

/// Shares an image with the project named `project`.
#[server(prefix = "/api", endpoint = "share_image")]
pub async fn share_image(image_id: String, project: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, me) = crate::auth::signed_in()?;
        let db = server_context()?.db;
        let scope = me.scope.as_ref().map(|s| s.project_id.as_str());
        let (image, facts) = image_facts(&db, &image_id, scope).await?;
        if !policy::can_view(Some(&me), &facts) {
            return Err(AppError::NotFound { message: "No such image.".into() });
        }
        require(&policy::Action::ShareImage(&facts))?;
        let target = db
            .project_by_name(project.trim())
            .await
            .map_err(|e| AppError::internal("load project", &e))?
            .ok_or_else(|| AppError::NotFound { message: format!("There is no project '{}'.", project.trim()) })?;
        if image.owner.as_deref() == Some(target.id.as_str()) {
            return Err(AppError::bad_request("An image cannot be shared with the project that owns it."));
        }
        if !db.add_image_member(&image.id, &target.id).await.map_err(|e| AppError::internal("share image", &e))? {
            return Err(AppError::Conflict { message: format!("The image is already shared with {}.", target.name) });
        }
        audit(&db, &authn, "image.share", "image", &image.id, &format!("with {}", target.name)).await
    })
    .await
}

/// Stops sharing an image with a project.
#[server(prefix = "/api", endpoint = "unshare_image")]
pub async fn unshare_image(image_id: String, project_id: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, me) = crate::auth::signed_in()?;
        let db = server_context()?.db;
        let scope = me.scope.as_ref().map(|s| s.project_id.as_str());
        let (image, facts) = image_facts(&db, &image_id, scope).await?;
        if !policy::can_view(Some(&me), &facts) {
            return Err(AppError::NotFound { message: "No such image.".into() });
        }
        require(&policy::Action::ShareImage(&facts))?;
        if !db.remove_image_member(&image.id, &project_id).await.map_err(|e| AppError::internal("unshare image", &e))? {
            return Err(AppError::NotFound { message: "The image is not shared with that project.".into() });
        }
        audit(&db, &authn, "image.unshare", "image", &image.id, &format!("project {project_id}")).await
    })
    .await
}

/// Accepts or rejects an image shared with the caller's current project.
#[server(prefix = "/api", endpoint = "answer_share")]
pub async fn answer_share(image_id: String, accept: bool) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, me) = crate::auth::signed_in()?;
        let project = me.scope.as_ref().map(|s| s.project_id.clone()).ok_or_else(|| AppError::bad_request("Choose a project first."))?;
        require(&policy::Action::AnswerShare { project: &project })?;
        let db = server_context()?.db;
        let status = if accept { "accepted" } else { "rejected" };
        if !db.set_image_member_status(&image_id, &project, status).await.map_err(|e| AppError::internal("answer share", &e))? {
            return Err(AppError::NotFound { message: "That image is not shared with your project.".into() });
        }
        audit(&db, &authn, if accept { "image.share_accept" } else { "image.share_reject" }, "image", &image_id, "").await
    })
    .await
}

/// Images shared with the caller's current project that await an answer.
#[server(prefix = "/api", endpoint = "pending_shares")]
pub async fn pending_shares() -> Result<Vec<PendingShare>, AppError> {
    use imp::*;
    answer(async move {
        let (_, me) = crate::auth::signed_in()?;
        let Some(scope) = me.scope else { return Ok(Vec::new()) };
        let db = server_context()?.db;
        let rows = db.pending_shares(&scope.project_id).await.map_err(|e| AppError::internal("pending shares", &e))?;
        Ok(rows
            .into_iter()
            .map(|m| PendingShare { image_id: m.image_id, image_name: m.image_name, owner: m.owner_name, shared_at: m.created_at })
            .collect())
    })
    .await
}
