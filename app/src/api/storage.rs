//! The storage-compatibility matrix and the configured backends.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// A configured storage backend, as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub name: String,
    /// `local`, `nfs`, `s3` or `rbd` (`domain::StorageKind`).
    pub kind: String,
    /// Where uploads go unless the user picks another backend.
    pub is_default: bool,
}

/// One cell: what an import of `format` does on a backend of `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    pub kind: String,
    pub format: String,
    /// `native`, `convert`, `extract` or `refuse`.
    pub action: String,
    pub target_format: Option<String>,
    pub reason: String,
    pub updated_at: String,
    pub updated_by: String,
}

impl MatrixCell {
    /// The cell's short text: "native", "→ qcow2", "extract", "refused".
    pub fn label(&self) -> String {
        match (self.action.as_str(), &self.target_format) {
            ("convert", Some(t)) => format!("convert to {t}"),
            ("refuse", _) => "refused".to_owned(),
            (a, _) => a.to_owned(),
        }
    }
}

/// The matrix page's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixData {
    pub kinds: Vec<String>,
    pub formats: Vec<String>,
    pub cells: Vec<MatrixCell>,
    pub backends: Vec<BackendInfo>,
    pub can_edit: bool,
}

impl MatrixData {
    pub fn cell(&self, kind: &str, format: &str) -> Option<&MatrixCell> {
        self.cells.iter().find(|c| c.kind == kind && c.format == format)
    }
}

/// The matrix's rows, in the order the page shows them.
pub use domain::MATRIX_FORMATS;
/// The matrix's columns.
pub const MATRIX_KINDS: [&str; 4] = [
    domain::StorageKind::Local.as_str(),
    domain::StorageKind::Nfs.as_str(),
    domain::StorageKind::S3.as_str(),
    domain::StorageKind::Rbd.as_str(),
];
/// Formats a conversion can produce.
pub use domain::CONVERT_TARGETS;

/// Human names of the backend kinds.
pub fn kind_label(kind: &str) -> &'static str {
    domain::StorageKind::parse(kind).map_or("Other", domain::StorageKind::label)
}

#[cfg(feature = "ssr")]
fn cell_of(c: records::PolicyCell) -> MatrixCell {
    MatrixCell {
        kind: c.backend_kind.as_str().to_owned(),
        format: c.format.as_str().to_owned(),
        action: c.action.as_str().to_owned(),
        target_format: c.target_format.map(|t| t.as_str().to_owned()),
        reason: c.reason,
        updated_at: c.updated_at,
        updated_by: c.updated_by,
    }
}

/// The whole matrix plus the configured backends. Anyone signed in may read it.
#[server(prefix = "/api", endpoint = "storage_matrix")]
pub async fn storage_matrix() -> Result<MatrixData, AppError> {
    crate::auth::answer(async move {
        let (_, me) = crate::auth::signed_in()?;
        let ctx = crate::api::context::server_context()?;
        let cells = ctx.db.storage_policy().await.map_err(|e| AppError::internal("read storage matrix", &e))?;
        let formats: Vec<String> = MATRIX_FORMATS.iter().map(|f| (*f).to_owned()).collect();
        Ok(MatrixData {
            kinds: MATRIX_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            formats,
            cells: cells.into_iter().map(cell_of).collect(),
            backends: ctx.backends.clone(),
            can_edit: policy::authorize(Some(&me), &policy::Action::EditStorageMatrix).is_ok(),
        })
    })
    .await
}

/// Changes one cell (administrators). Audited.
#[server(prefix = "/api", endpoint = "set_matrix_cell")]
pub async fn set_matrix_cell(
    kind: String,
    format: String,
    action: String,
    target_format: Option<String>,
    reason: String,
) -> Result<MatrixCell, AppError> {
    crate::auth::answer(async move {
        let (authn, _) = crate::auth::require(&policy::Action::EditStorageMatrix)?;
        let ctx = crate::api::context::server_context()?;
        let req = imageops::CellRequest {
            kind: &kind,
            format: &format,
            action: &action,
            target_format: target_format.as_deref(),
            reason: &reason,
        };
        Ok(cell_of(ctx.images.set_matrix_cell(&authn, &req).await?))
    })
    .await
}

/// Bytes and image counts of one format (on one backend, or of one project on it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatUsage {
    pub format: String,
    pub images: u64,
    pub bytes: u64,
}

/// One backend's usage: totals by format, by project, and free space where it can tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendUsage {
    pub name: String,
    pub kind: String,
    pub is_default: bool,
    pub free: Option<u64>,
    pub total: Option<u64>,
    pub by_format: Vec<FormatUsage>,
    /// (project name, its formats).
    pub by_project: Vec<(String, Vec<FormatUsage>)>,
}

impl BackendUsage {
    pub fn bytes(&self) -> u64 {
        self.by_format.iter().map(|f| f.bytes).sum()
    }
    pub fn images(&self) -> u64 {
        self.by_format.iter().map(|f| f.images).sum()
    }
}

/// The storage overview: every configured backend's usage. Administrators see every project;
/// others see their own project's share and the backends' totals of it only.
#[server(prefix = "/api", endpoint = "storage_overview")]
pub async fn storage_overview() -> Result<Vec<BackendUsage>, AppError> {
    crate::auth::answer(async move {
        let (_, me) = crate::auth::signed_in()?;
        let ctx = crate::api::context::server_context()?;
        let rows = ctx.db.storage_usage().await.map_err(|e| AppError::internal("storage usage", &e))?;
        let mine = me.scope.as_ref().map(|s| s.project_id.clone());
        let rows: Vec<_> = rows.into_iter().filter(|r| me.is_admin || (mine.is_some() && r.owner == mine)).collect();
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut out = Vec::new();
        for b in &ctx.backends {
            let (free, total) = ctx.images.stores.space(&b.name).await;
            let mut by_format: Vec<FormatUsage> = Vec::new();
            let mut by_project: Vec<(String, Vec<FormatUsage>)> = Vec::new();
            for r in rows.iter().filter(|r| r.backend == b.name) {
                match by_format.iter_mut().find(|f| f.format == r.disk_format.as_str()) {
                    Some(f) => {
                        f.images += n(r.images);
                        f.bytes += n(r.bytes);
                    }
                    None => {
                        by_format.push(FormatUsage { format: r.disk_format.as_str().to_owned(), images: n(r.images), bytes: n(r.bytes) })
                    }
                }
                let project = if r.owner_name.is_empty() { "(no project)".to_owned() } else { r.owner_name.clone() };
                let entry = FormatUsage { format: r.disk_format.as_str().to_owned(), images: n(r.images), bytes: n(r.bytes) };
                match by_project.iter_mut().find(|(p, _)| *p == project) {
                    Some((_, v)) => v.push(entry),
                    None => by_project.push((project, vec![entry])),
                }
            }
            by_format.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.format.cmp(&b.format)));
            out.push(BackendUsage {
                name: b.name.clone(),
                kind: b.kind.clone(),
                is_default: b.is_default,
                free,
                total,
                by_format,
                by_project,
            });
        }
        Ok(out)
    })
    .await
}
