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
        // The form names the project; the share use-case (`imageops`) takes its id.
        let (authn, _) = crate::auth::signed_in()?;
        let ctx = server_context()?;
        // The image and the right to share it first: a caller who may not share it learns
        // nothing about which project names exist.
        let (_, facts) = ctx.images.visible_image(&authn, &image_id).await?;
        ctx.images.authorize(&authn, &policy::Action::ShareImage(&facts))?;
        let target = ctx
            .db
            .project_by_name(project.trim())
            .await
            .map_err(|e| AppError::internal("load project", &e))?
            .ok_or_else(|| AppError::NotFound { message: format!("There is no project '{}'.", project.trim()) })?;
        ctx.images.share_image(&authn, &image_id, &target.id).await?;
        Ok(())
    })
    .await
}

/// Stops sharing an image with a project.
#[server(prefix = "/api", endpoint = "unshare_image")]
pub async fn unshare_image(image_id: String, project_id: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, _) = crate::auth::signed_in()?;
        Ok(server_context()?.images.unshare_image(&authn, &image_id, &project_id).await?)
    })
    .await
}

/// Accepts or rejects an image shared with the caller's current project.
#[server(prefix = "/api", endpoint = "answer_share")]
pub async fn answer_share(image_id: String, accept: bool) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        // The dashboard answers for the caller's current project.
        let (authn, me) = crate::auth::signed_in()?;
        let project = me.scope.as_ref().map(|s| s.project_id.clone()).ok_or_else(|| AppError::bad_request("Choose a project first."))?;
        let status = if accept { policy::MemberStatus::Accepted } else { policy::MemberStatus::Rejected };
        server_context()?.images.answer_share(&authn, &image_id, &project, status).await?;
        Ok(())
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
