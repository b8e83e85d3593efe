//! Creating an image: the one place its rules live (both doors used to write their own; where
//! they disagreed the Glance behaviour won — values out of bounds are refused, never cut).

use std::collections::BTreeMap;

use accounts::Authn;
use domain::{ContainerFormat, DiskFormat};
use policy::{Action, Visibility};

use crate::units::human_bytes;
use crate::{Error, Images};

/// What a caller asks for when it creates an image, as its door parsed it (types checked, values
/// not): [`Images::create_image`] judges the values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewImageRequest {
    /// The id to use (Glance lets a client choose one): a UUID, stored lower-case.
    pub id: Option<String>,
    pub name: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    /// None: `shared`, Glance's default since v2.5.
    pub visibility: Option<Visibility>,
    pub protected: bool,
    pub os_hidden: bool,
    pub min_disk: i64,
    pub min_ram: i64,
    pub tags: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// The size the caller says it will upload (the dashboard knows the file): refused now if
    /// it cannot fit the project's byte quota, before anything is sent.
    pub expected_size: Option<u64>,
}

impl Images {
    /// The disk formats the configured backends accept: the storage matrix's formats whose row
    /// is not `refuse` on at least one configured backend kind, as Glance names them (`ova` and
    /// `uec` are packages, container formats).
    pub async fn disk_formats(&self) -> Result<Vec<DiskFormat>, Error> {
        let kinds: Vec<&str> = self.stores.all().iter().map(|b| b.kind().as_str()).collect();
        let mut formats: Vec<DiskFormat> = Vec::new();
        for c in self.db.storage_policy().await? {
            let Some(format) = c.format.disk() else { continue };
            if c.action != domain::MatrixAction::Refuse && kinds.contains(&c.backend_kind.as_str()) && !formats.contains(&format) {
                formats.push(format);
            }
        }
        formats.sort_by_key(|f| f.as_str());
        Ok(formats)
    }

    /// Creates a `queued` image in the caller's project: authorized (`CreateImage`, and
    /// `SetVisibility` for the visibility asked: public is for administrators), the values
    /// checked, the project's quotas applied (the image count by the insert itself, exact under
    /// parallel creates), audited. Returns the new image's id.
    pub async fn create_image(&self, authn: &Authn, req: NewImageRequest) -> Result<String, Error> {
        let me = authn.principal.as_ref().ok_or_else(|| Error::NotSignedIn("Sign in first.".to_owned()))?;
        let project = me.scope.as_ref().map(|s| s.project_id.clone()).ok_or_else(|| {
            Error::Forbidden("Images belong to projects: choose a project (or use a token scoped to one) first.".to_owned())
        })?;
        self.authorize(authn, &Action::CreateImage { project: &project })?;
        let new = self.check_new(&req, &project, &me.user_id).await?;
        let visibility = req.visibility.unwrap_or(Visibility::Shared);
        // The image to be, under the policy's rule for who may give it this visibility.
        let facts =
            policy::ImageFacts { owner: Some(project.clone()), visibility: Visibility::Private, protected: false, membership: None };
        self.authorize(authn, &Action::SetVisibility { image: &facts, to: visibility })?;
        let quota = self.db.quota(&project).await?;
        if let (Some(size), Some(max)) = (req.expected_size, quota.max_bytes.and_then(|m| u64::try_from(m).ok())) {
            let (_, used) = self.db.project_usage(&project).await?;
            if used.saturating_add(size) > max {
                return Err(Error::TooLarge(format!(
                    "This image ({}) would take your project past its storage quota of {} ({} used).",
                    human_bytes(size),
                    human_bytes(max),
                    human_bytes(used)
                )));
            }
        }
        let new = records::NewImage { visibility: Some(visibility), max_images: quota.max_images, ..new };
        let over_quota = |e: records::DbError| match e {
            records::DbError::ImageQuota { max } => Error::TooLarge(format!(
                "Your project has reached its quota of {max} images. Delete an image or ask an administrator to raise the quota."
            )),
            e => Error::Db(e),
        };
        let id = match &req.id {
            Some(id) => {
                self.db
                    .create_image_with_id(id, &new)
                    .await
                    .map_err(over_quota)?
                    .ok_or_else(|| Error::Conflict(format!("An image with identifier {id} already exists")))?
                    .id
            }
            None => self.db.create_image(&new).await.map_err(over_quota)?.id,
        };
        if req.os_hidden {
            self.db.update_image(&id, &records::ImagePatch { os_hidden: Some(true), ..Default::default() }).await?;
        }
        self.audit(authn, "image.create", "image", &id, &new.name).await?;
        Ok(id)
    }

    /// The values of a new image, checked (everything but authorization and quotas).
    async fn check_new(&self, req: &NewImageRequest, project: &str, user_id: &str) -> Result<records::NewImage, Error> {
        if let Some(id) = &req.id {
            if !is_uuid(id) || id.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(Error::Invalid("'id' must be a UUID (lower-case).".to_owned()));
            }
        }
        let name = req.name.clone().unwrap_or_default();
        if name.chars().count() > records::MAX_NAME_CHARS {
            return Err(Error::Invalid(format!("Invalid value for 'name': at most {} characters.", records::MAX_NAME_CHARS)));
        }
        let disk_format = match &req.disk_format {
            Some(d) => Some(known_disk_format(d, &self.disk_formats().await?)?),
            None => None,
        };
        let container_format = match &req.container_format {
            Some(c) => Some(known_container_format(c)?),
            None => None,
        };
        crate::declared::check_declaration(disk_format, container_format).map_err(Error::Invalid)?;
        for (what, n) in [("min_disk", req.min_disk), ("min_ram", req.min_ram)] {
            if n < 0 {
                return Err(Error::Invalid(format!("Invalid value for '{what}': it must be an integer of 0 or more.")));
            }
        }
        // Bounded before anything else: a list far over the limit is refused without work
        // proportional to its square.
        if req.tags.len() > records::MAX_TAGS.saturating_mul(4) {
            return Err(Error::TooLarge(format!("An image has at most {} tags.", records::MAX_TAGS)));
        }
        let mut tags: Vec<String> = Vec::new();
        for t in &req.tags {
            if t.is_empty() || t.chars().count() > records::MAX_TAG_CHARS {
                return Err(Error::Invalid(format!("A tag has 1 to {} characters.", records::MAX_TAG_CHARS)));
            }
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        if tags.len() > records::MAX_TAGS {
            return Err(Error::TooLarge(format!("An image has at most {} tags.", records::MAX_TAGS)));
        }
        for key in req.properties.keys() {
            policy::metadata::check_property_key(key).map_err(metadata)?;
        }
        if req.properties.len() > records::MAX_PROPERTIES {
            return Err(Error::TooLarge(format!("An image has at most {} properties.", records::MAX_PROPERTIES)));
        }
        policy::metadata::check_properties(req.properties.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(metadata)?;
        Ok(records::NewImage {
            name,
            disk_format,
            container_format,
            visibility: None,
            owner: Some(project.to_owned()),
            protected: req.protected,
            min_disk: req.min_disk,
            min_ram: req.min_ram,
            properties: req.properties.clone(),
            tags,
            created_by: Some(user_id.to_owned()),
            max_images: None,
        })
    }
}

/// A metadata rule's refusal (`policy::metadata`) as a use-case error.
pub fn metadata(e: policy::metadata::MetadataError) -> Error {
    use policy::metadata::MetadataError as M;
    match e {
        M::Invalid(m) => Error::Invalid(m),
        M::Forbidden(m) => Error::Forbidden(m),
        M::TooLarge(m) => Error::TooLarge(m),
    }
}

/// 8-4-4-4-12 hexadecimal digits.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36 && b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// The disk format a door was given as text: 400 unless it is one the configured backends accept
/// (`known`, from [`Images::disk_formats`]).
pub fn known_disk_format(text: &str, known: &[DiskFormat]) -> Result<DiskFormat, Error> {
    match DiskFormat::parse(text) {
        Some(d) if known.contains(&d) => Ok(d),
        _ => Err(Error::Invalid(format!(
            "Invalid value '{text}' for 'disk_format': it must be one of {}.",
            known.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The container format a door was given as text: 400 unless it is one of Glance's (and
/// Hangar's `uec`).
pub fn known_container_format(text: &str) -> Result<ContainerFormat, Error> {
    policy::metadata::check_container_format(text).map_err(metadata)?;
    ContainerFormat::parse(text).ok_or_else(|| Error::Invalid(format!("Invalid value '{text}' for 'container_format'.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_uuid("6a1e0c8a-0b2c-4d5e-8f90-123456789abc"));
        assert!(!is_uuid("6a1e0c8a0b2c4d5e8f90123456789abc"));
        assert!(!is_uuid("6a1e0c8a-0b2c-4d5e-8f90-123456789abg"));
    }
}
