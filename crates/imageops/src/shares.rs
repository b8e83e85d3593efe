//! Image members (Glance's image sharing): the owner shares a `shared` image with another
//! project, which accepts or rejects it; the rules for both doors.

use accounts::Authn;
use policy::{Action, MemberStatus, Visibility};

use crate::{Error, Images};

/// The most projects one image can be shared with (Glance's `image_member_quota` default).
pub const MAX_MEMBERS: usize = 128;

impl Images {
    /// Shares an image the caller may share with project `project_id`: only a `shared` image has
    /// members (403 otherwise, as Glance answers), not with its own project (400), at most
    /// [`MAX_MEMBERS`] (413, counted by the insert), not twice (409). Audited. Returns the new
    /// `pending` membership.
    pub async fn share_image(&self, authn: &Authn, image_id: &str, project_id: &str) -> Result<records::MemberRow, Error> {
        let (image, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ShareImage(&facts))?;
        if image.visibility != Visibility::Shared {
            return Err(Error::Forbidden(format!(
                "Only shared images have members; this one is {}. Make it shared first.",
                image.visibility
            )));
        }
        let project =
            self.db.project_by_id(project_id).await?.ok_or_else(|| Error::Invalid(format!("No project has the id {project_id}.")))?;
        if image.owner.as_deref() == Some(project.id.as_str()) {
            return Err(Error::Invalid("The image's own project cannot be a member of it.".to_owned()));
        }
        let max = i64::try_from(MAX_MEMBERS).unwrap_or(i64::MAX);
        match self.db.add_image_member_within(image_id, &project.id, max).await? {
            records::MemberAdded::Added => {}
            records::MemberAdded::Exists => {
                return Err(Error::Conflict(format!("The image is already shared with {} ({}).", project.name, project.id)))
            }
            records::MemberAdded::Full => {
                return Err(Error::TooLarge(format!("An image can be shared with at most {MAX_MEMBERS} projects.")))
            }
            // Made private (or deleted) since it was read above.
            records::MemberAdded::NotShared => {
                return Err(Error::Forbidden("Only shared images have members; this one is no longer shared.".to_owned()))
            }
        }
        self.audit(authn, "image.share", "image", image_id, &project.name).await?;
        self.db.image_member(image_id, &project.id).await?.ok_or_else(|| Error::NotFound("The membership vanished.".to_owned()))
    }

    /// Stops sharing an image the caller may share with project `project_id` (404 if it was
    /// not). Audited.
    pub async fn unshare_image(&self, authn: &Authn, image_id: &str, project_id: &str) -> Result<(), Error> {
        let (_, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ShareImage(&facts))?;
        if !self.db.remove_image_member(image_id, project_id).await? {
            return Err(Error::NotFound(format!("{project_id} is not a member of image {image_id}.")));
        }
        self.audit(authn, "image.unshare", "image", image_id, project_id).await
    }

    /// The answer of project `member` to an image shared with it: only that project answers
    /// (403 for anyone else), through a membership it has (404). Audited as
    /// `image.share.<status>`. Returns the membership as stored.
    pub async fn answer_share(
        &self,
        authn: &Authn,
        image_id: &str,
        member: &str,
        status: MemberStatus,
    ) -> Result<records::MemberRow, Error> {
        let caller_project = authn.principal.as_ref().and_then(|p| p.scope.as_ref()).map(|s| s.project_id.as_str());
        if caller_project != Some(member) {
            return Err(Error::Forbidden("Only the member project can accept or reject an image shared with it.".to_owned()));
        }
        self.authorize(authn, &Action::AnswerShare { project: member })?;
        if !self.db.set_image_member_status(image_id, member, status).await? {
            return Err(Error::NotFound("That image is not shared with your project.".to_owned()));
        }
        self.audit(authn, &format!("image.share.{status}"), "image", image_id, "").await?;
        self.db.image_member(image_id, member).await?.ok_or_else(|| Error::NotFound("The membership vanished.".to_owned()))
    }
}
