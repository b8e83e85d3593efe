//! [`Images`]: the use-cases and the pieces every door shares (the facts the policy needs about
//! an image, the audit log).

use std::path::{Path, PathBuf};

use accounts::Authn;
use policy::Action;

use crate::{Error, Stores};

/// The use-cases' shared state: the database, the storage backends (and the job workers'
/// signal), and where request bodies wait for their import. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Images {
    pub db: records::Db,
    pub stores: Stores,
    incoming: PathBuf,
}

impl Images {
    /// `data_dir` is the server's data directory (`uploads-glance/` in it holds request bodies
    /// and staged data).
    pub fn new(db: records::Db, stores: Stores, data_dir: &Path) -> Self {
        Images { db, stores, incoming: data_dir.join("uploads-glance") }
    }

    /// Where Glance request bodies, staged data and web downloads wait for their import.
    pub fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    /// The staged data of image `id` (`PUT …/stage`) and its digests.
    pub fn staged_paths(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.incoming.join(format!("{id}.staged")), self.incoming.join(format!("{id}.staged.json")))
    }

    /// Removes the staged data of image `id`, if any.
    pub fn discard_staged(&self, id: &str) {
        let (data, meta) = self.staged_paths(id);
        let _ = std::fs::remove_file(data);
        let _ = std::fs::remove_file(meta);
    }

    /// Loads an image and the facts the policy needs about it, as seen from `scope_project`
    /// (its membership there). A stored visibility or member status that is not one of the
    /// known values is an error, not quietly something else.
    pub async fn image_facts(&self, image_id: &str, scope_project: Option<&str>) -> Result<(records::ImageRow, policy::ImageFacts), Error> {
        image_facts(&self.db, image_id, scope_project).await
    }

    /// Authorizes `action` for the caller: a refused privileged action is recorded in the audit
    /// log (outcome `denied`, written in the background so the refusal is answered at once).
    pub fn authorize(&self, authn: &Authn, action: &Action<'_>) -> Result<(), Error> {
        match policy::authorize(authn.principal.as_ref(), action) {
            Ok(()) => Ok(()),
            Err(denial) => {
                if let policy::Denial::Forbidden(why) = &denial {
                    if action.is_privileged() {
                        tracing::warn!(user = ?authn.principal.as_ref().map(|p| &p.username), ?action, "privileged action denied");
                        tokio::spawn(write_denial(self.db.clone(), authn.clone(), action, why));
                    }
                }
                Err(Error::denied(denial))
            }
        }
    }

    /// Records a privileged action in the audit log ([`audit`]).
    pub async fn audit(&self, authn: &Authn, action: &str, target_type: &str, target_id: &str, detail: &str) -> Result<(), Error> {
        Ok(audit(&self.db, authn, action, target_type, target_id, detail).await?)
    }

    /// Deletes an image the caller may see and delete: its record (a tombstone keeps its id
    /// from being taken again), its bytes on every backend, its staged data, and an audit entry.
    /// A protected image is refused (403, as Glance answers), and so is one whose stored copy
    /// others depend on — RBD clones of it, the disks of VMs booted from it — with 409 naming
    /// them, as Glance's rbd store refuses (`InUseByStore`). Returns the deleted record.
    pub async fn delete_image(&self, authn: &Authn, image_id: &str) -> Result<records::ImageRow, Error> {
        let (row, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::DeleteImage(&facts))?;
        if row.protected {
            return Err(Error::Forbidden(PROTECTED.to_owned()));
        }
        for loc in self.db.image_locations(image_id).await? {
            match self.stores.dependents(&loc.backend, &loc.key).await {
                Ok(d) if d.is_empty() => {}
                Ok(d) => {
                    return Err(Error::Conflict(format!(
                        "The image is in use: its copy on '{}' has clones ({}), the disks of instances or volumes made from it. Remove or flatten them first.",
                        loc.backend,
                        d.join(", ")
                    )))
                }
                Err(e) => {
                    return Err(Error::Conflict(format!(
                        "Hangar cannot tell whether the image's copy on '{}' is in use, so it is not deleted: {e}",
                        loc.backend
                    )))
                }
            }
        }
        match self.db.delete_image(image_id).await? {
            records::DeleteOutcome::NotFound => Err(Error::NotFound("No such image.".to_owned())),
            records::DeleteOutcome::Protected => Err(Error::Forbidden(PROTECTED.to_owned())),
            records::DeleteOutcome::Deleted { locations } => {
                for (backend, key) in &locations {
                    if let Err(err) = self.stores.delete(backend, key).await {
                        // The record is gone; the bytes are an orphan the operator can remove.
                        tracing::warn!(image = %image_id, %backend, %key, error = %err, "deleted image's bytes could not be removed");
                    }
                }
                self.discard_staged(image_id);
                self.audit(authn, "image.delete", "image", image_id, &row.name).await?;
                Ok(row)
            }
        }
    }
}

const PROTECTED: &str = "Image is protected: turn protection off before deleting it.";

/// [`Images::image_facts`] for callers holding only the database.
pub async fn image_facts(
    db: &records::Db,
    image_id: &str,
    scope_project: Option<&str>,
) -> Result<(records::ImageRow, policy::ImageFacts), Error> {
    let row = db.image(image_id).await?.ok_or_else(|| Error::NotFound("No such image.".to_owned()))?;
    let membership = match scope_project {
        Some(p) => match db.image_member(image_id, p).await? {
            Some(m) => Some(m.status),
            None => None,
        },
        None => None,
    };
    let facts = policy::ImageFacts { owner: row.owner.clone(), visibility: row.visibility, protected: row.protected, membership };
    Ok((row, facts))
}

/// Records a privileged action in the audit log. A failure to write the log fails the action's
/// response (the change is made, so the error says so) rather than going unrecorded.
pub async fn audit(
    db: &records::Db,
    authn: &Authn,
    action: &str,
    target_type: &str,
    target_id: &str,
    detail: &str,
) -> Result<(), records::DbError> {
    let actor = authn.principal.as_ref();
    db.append_audit(&records::NewAudit {
        actor_id: actor.map(|p| p.user_id.as_str()),
        actor_name: actor.map_or("anonymous", |p| p.username.as_str()),
        action,
        target_type,
        target_id,
        detail,
        remote_addr: &authn.remote_addr,
        outcome: "ok",
    })
    .await?;
    Ok(())
}

/// What an action is called in the audit log when it is refused.
pub fn action_name(action: &Action<'_>) -> &'static str {
    match action {
        Action::ManageOwnTokens { .. } => "token.create",
        Action::ViewOwnTokens => "token.manage",
        Action::ManageAccounts => "accounts.manage",
        Action::ViewAudit => "audit.view",
        Action::EditStorageMatrix => "storage_matrix.edit",
        Action::SetVisibility { .. } => "image.publicize",
        _ => "other",
    }
}

/// Records a refused privileged action (outcome `denied`) in the audit log. Callers spawn it:
/// the refusal is answered at once, and a log that cannot be written is reported in the
/// server's log instead.
pub fn write_denial(
    db: records::Db,
    authn: Authn,
    action: &Action<'_>,
    why: &str,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (name, why) = (action_name(action), why.to_owned());
    let target_type = match action {
        Action::SetVisibility { .. } => "image",
        Action::ManageOwnTokens { .. } | Action::ViewOwnTokens => "token",
        _ => "",
    };
    async move {
        let actor = authn.principal.as_ref();
        let via = if authn.via_token { "API token: " } else { "" };
        let written = db
            .append_audit(&records::NewAudit {
                actor_id: actor.map(|p| p.user_id.as_str()),
                actor_name: actor.map_or("anonymous", |p| p.username.as_str()),
                action: name,
                target_type,
                target_id: "",
                detail: &format!("{via}{why}"),
                remote_addr: &authn.remote_addr,
                outcome: "denied",
            })
            .await;
        if let Err(err) = written {
            tracing::error!(error = %err, action = name, "cannot record a denied action in the audit log");
        }
    }
}
