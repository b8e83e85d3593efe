//! Deactivating and reactivating an image (Glance's image actions), for both doors.

use accounts::Authn;
use policy::Action;

use crate::{Error, Images};

/// A change of an image's availability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusAction {
    /// `active` → `deactivated`: its data cannot be downloaded (except by administrators).
    Deactivate,
    /// `deactivated` → `active`.
    Reactivate,
}

impl StatusAction {
    /// `deactivate` or `reactivate` (the Glance action's name); None for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deactivate" => Some(StatusAction::Deactivate),
            "reactivate" => Some(StatusAction::Reactivate),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusAction::Deactivate => "deactivate",
            StatusAction::Reactivate => "reactivate",
        }
    }
}

impl Images {
    /// Loads an image the caller may see, with its policy facts; 404 for one it may not.
    pub async fn visible_image(&self, authn: &Authn, image_id: &str) -> Result<(records::ImageRow, policy::ImageFacts), Error> {
        let scope = authn.principal.as_ref().and_then(|p| p.scope.as_ref()).map(|s| s.project_id.clone());
        let (row, facts) = self.image_facts(image_id, scope.as_deref()).await?;
        if !policy::can_view(authn.principal.as_ref(), &facts) {
            return Err(Error::NotFound("No such image.".to_owned()));
        }
        Ok((row, facts))
    }

    /// Deactivates or reactivates an image the caller may modify. Asking for the state the
    /// image is already in changes nothing and succeeds (Glance); an image in any other state
    /// (queued, importing, killed…) is refused with 403, as Glance answers. Only a change is
    /// audited.
    pub async fn set_status(&self, authn: &Authn, image_id: &str, action: StatusAction) -> Result<(), Error> {
        let (_, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        let change = match action {
            StatusAction::Deactivate => self.db.deactivate_image(image_id).await?,
            StatusAction::Reactivate => self.db.reactivate_image(image_id).await?,
        };
        let verb = action.as_str();
        match change {
            records::StatusChange::Changed => self.audit(authn, &format!("image.{verb}"), "image", image_id, "").await,
            records::StatusChange::Unchanged => Ok(()),
            records::StatusChange::ImageNotFound => Err(Error::NotFound("No such image.".to_owned())),
            records::StatusChange::WrongStatus(s) => Err(Error::Forbidden(format!(
                "Not allowed to {verb} an image in status '{s}': only active images can be deactivated and deactivated ones reactivated."
            ))),
        }
    }
}
