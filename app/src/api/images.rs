//! Image catalogue server functions.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// One row of the Images page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    pub name: String,
    pub status: String,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub visibility: String,
    pub size: Option<u64>,
    pub created_at: String,
}

/// The Images page's data: the newest images and how many exist in all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageSummary>,
    pub total: u64,
}

/// How many rows the Images page shows until paging arrives with the catalogue issue.
pub const PAGE_SIZE: u32 = 50;

/// Lists the images the caller may see (Glance's default listing for their project), newest first.
#[server(prefix = "/api", endpoint = "list_images")]
pub async fn list_images() -> Result<ImageList, AppError> {
    crate::auth::answer(list_images_inner()).await
}

#[cfg(feature = "ssr")]
async fn list_images_inner() -> Result<ImageList, AppError> {
    let (_, me) = crate::auth::require(&policy::Action::ListImages)?;
    let ctx = crate::api::context::server_context()?;
    let visible = match (&me.is_admin, &me.scope) {
        (true, _) => records::Visible::All,
        (false, Some(scope)) => records::Visible::Project(&scope.project_id),
        (false, None) => records::Visible::PublicOnly,
    };
    let rows = ctx.db.list_images(visible, PAGE_SIZE).await.map_err(|e| AppError::internal("list images", &e))?;
    let total = ctx.db.count_images(visible).await.map_err(|e| AppError::internal("count images", &e))?;
    let images = rows
        .into_iter()
        .map(|r| ImageSummary {
            id: r.id,
            name: r.name,
            status: r.status,
            disk_format: r.disk_format,
            container_format: r.container_format,
            visibility: r.visibility,
            size: r.size.and_then(|s| u64::try_from(s).ok()),
            created_at: r.created_at,
        })
        .collect();
    Ok(ImageList { images, total })
}
