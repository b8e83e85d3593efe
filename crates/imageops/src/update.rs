//! Changing an image's metadata: the one place its rules live. Each door turns its syntax (the
//! Glance API's JSON-patch, the dashboard's edit form) into the image's fields after the change;
//! [`check_update`] judges the change and [`Images::update_image`] applies it.

use std::collections::BTreeMap;

use accounts::Authn;
use domain::{DiskFormat, ImageStatus};
use policy::{Action, Visibility};

use crate::{metadata, Error, Images};

/// An image's editable fields: Glance's base properties, tags and custom properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFields {
    pub name: Option<String>,
    pub visibility: Visibility,
    pub protected: bool,
    pub os_hidden: bool,
    pub min_disk: i64,
    pub min_ram: i64,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub properties: BTreeMap<String, String>,
}

impl ImageFields {
    pub fn of(image: &records::ImageDetail) -> Self {
        ImageFields {
            name: (!image.name.is_empty()).then(|| image.name.clone()),
            visibility: image.visibility,
            protected: image.protected,
            os_hidden: image.os_hidden,
            min_disk: image.min_disk,
            min_ram: image.min_ram,
            disk_format: image.disk_format.map(|d| d.as_str().to_owned()),
            container_format: image.container_format.map(|c| c.as_str().to_owned()),
            owner: image.owner.clone(),
            tags: image.tag_list(),
            properties: image.property_map(),
        }
    }
}

/// The visibility a door was given as text: 400 unless it is one of Glance's four.
pub fn parse_visibility(text: &str) -> Result<Visibility, Error> {
    Visibility::parse(text).ok_or_else(|| {
        Error::Invalid(format!("Invalid value '{text}' for 'visibility': it must be one of public, private, shared, community."))
    })
}

/// Judges a change from `before` to `after` of an image in `status`, whose disk format must be
/// one of `disk_formats`, and returns what to store (only what changed). The rules, as Glance
/// applies them: a name of at most 255 characters; a known visibility; minimums of 0 or more;
/// disk and container formats changed only while the image waits for data (`queued`, or
/// `importing`), never unset once set, and known; the owner never changes; tags of 1 to 255
/// characters, at most 128; custom properties under `policy::metadata`'s names and sizes, at
/// most 128.
pub fn check_update(
    before: &ImageFields,
    after: &ImageFields,
    status: ImageStatus,
    disk_formats: &[DiskFormat],
) -> Result<records::ImagePatch, Error> {
    let invalid = |m: String| Err(Error::Invalid(m));
    if after.name.as_ref().is_some_and(|n| n.chars().count() > records::MAX_NAME_CHARS) {
        return invalid(format!("Invalid value for 'name': at most {} characters.", records::MAX_NAME_CHARS));
    }
    for (what, n) in [("min_disk", after.min_disk), ("min_ram", after.min_ram)] {
        if n < 0 {
            return invalid(format!("Invalid value for '{what}': it must be an integer of 0 or more."));
        }
    }
    let (mut disk_format, mut container_format) = (None, None);
    for (what, old, new) in
        [("disk_format", &before.disk_format, &after.disk_format), ("container_format", &before.container_format, &after.container_format)]
    {
        if old == new {
            continue;
        }
        if !matches!(status, ImageStatus::Queued | ImageStatus::Importing) {
            return Err(Error::Forbidden(format!("Attribute {what} can be only replaced for a queued image (this one is {status}).")));
        }
        let Some(value) = new else { return invalid(format!("'{what}' cannot be unset once set.")) };
        if what == "disk_format" {
            disk_format = Some(crate::create::known_disk_format(value, disk_formats)?);
        } else {
            container_format = Some(crate::create::known_container_format(value)?);
        }
    }
    if after.disk_format != before.disk_format || after.container_format != before.container_format {
        // Unchanged values are the stored ones (valid); changed ones were parsed above.
        let disk = disk_format.or_else(|| after.disk_format.as_deref().and_then(DiskFormat::parse));
        let container = container_format.or_else(|| after.container_format.as_deref().and_then(domain::ContainerFormat::parse));
        crate::declared::check_declaration(disk, container).map_err(Error::Invalid)?;
    }
    if after.owner != before.owner {
        return Err(Error::Forbidden("Owner can't be updated: images stay in the project that created them.".to_owned()));
    }
    if after.tags.iter().any(|t| t.is_empty() || t.chars().count() > records::MAX_TAG_CHARS) {
        return invalid(format!("A tag has 1 to {} characters.", records::MAX_TAG_CHARS));
    }
    if after.tags.len() > records::MAX_TAGS {
        return Err(Error::TooLarge(format!("An image has at most {} tags.", records::MAX_TAGS)));
    }
    if after.properties.len() > records::MAX_PROPERTIES {
        return Err(Error::TooLarge(format!("An image has at most {} properties.", records::MAX_PROPERTIES)));
    }
    // Names (reserved, read-only, the import's, syntax) of what changes, each value's size and
    // the total.
    policy::metadata::check_property_change(&before.properties, &after.properties).map_err(metadata)?;
    Ok(records::ImagePatch {
        name: (after.name != before.name).then(|| after.name.clone().unwrap_or_default()),
        visibility: (after.visibility != before.visibility).then_some(after.visibility),
        protected: (after.protected != before.protected).then_some(after.protected),
        os_hidden: (after.os_hidden != before.os_hidden).then_some(after.os_hidden),
        min_disk: (after.min_disk != before.min_disk).then_some(after.min_disk),
        min_ram: (after.min_ram != before.min_ram).then_some(after.min_ram),
        disk_format,
        container_format,
        properties: (after.properties != before.properties).then(|| after.properties.clone()),
        tags: (after.tags != before.tags).then(|| after.tags.clone()),
    })
}

impl Images {
    /// Changes the metadata of an image the caller may modify: `edit` (the door's syntax) turns
    /// its current fields into the wanted ones, [`check_update`] judges the change, a change of
    /// visibility is authorized (`SetVisibility`: public is for administrators; the denial
    /// audited), and what changed is stored and audited. Returns the image as stored.
    pub async fn update_image(
        &self,
        authn: &Authn,
        image_id: &str,
        edit: impl FnOnce(&mut ImageFields) -> Result<(), Error>,
    ) -> Result<records::ImageDetail, Error> {
        let (_, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        let image = self.db.image_detail(image_id).await?.ok_or_else(|| Error::NotFound("No such image.".to_owned()))?;
        let before = ImageFields::of(&image);
        let mut after = before.clone();
        edit(&mut after)?;
        let patch = check_update(&before, &after, image.status, &self.disk_formats().await?)?;
        if let Some(to) = patch.visibility {
            self.authorize(authn, &Action::SetVisibility { image: &facts, to })?;
        }
        if patch == records::ImagePatch::default() {
            return Ok(image);
        }
        let done = self.db.update_image(image_id, &patch).await?.ok_or_else(|| Error::NotFound("No such image.".to_owned()))?;
        self.audit(authn, "image.update", "image", image_id, &done.name).await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ImageFields {
        ImageFields {
            name: Some("n".into()),
            visibility: Visibility::Private,
            protected: false,
            os_hidden: false,
            min_disk: 0,
            min_ram: 0,
            disk_format: Some("qcow2".into()),
            container_format: Some("bare".into()),
            owner: Some("p1".into()),
            tags: vec![],
            properties: BTreeMap::from([("a".to_owned(), "1".to_owned())]),
        }
    }

    /// The status class each kind of change gets, as Glance answers.
    fn class(change: impl FnOnce(&mut ImageFields), status: ImageStatus) -> &'static str {
        let before = fields();
        let mut after = before.clone();
        change(&mut after);
        match check_update(&before, &after, status, &[DiskFormat::Qcow2, DiskFormat::Raw]) {
            Ok(_) => "ok",
            Err(Error::Invalid(_)) => "400",
            Err(Error::Forbidden(_)) => "403",
            Err(Error::Conflict(_)) => "409",
            Err(Error::TooLarge(_)) => "413",
            Err(_) => "other",
        }
    }

    #[test]
    fn the_rules_of_a_change() {
        assert_eq!(class(|f| f.disk_format = Some("raw".into()), ImageStatus::Active), "403");
        assert_eq!(class(|f| f.disk_format = Some("raw".into()), ImageStatus::Queued), "ok");
        assert_eq!(class(|f| f.disk_format = Some("vmdk".into()), ImageStatus::Queued), "400");
        assert_eq!(class(|f| f.disk_format = None, ImageStatus::Queued), "400");
        assert_eq!(class(|f| f.container_format = Some("docker".into()), ImageStatus::Queued), "400");
        assert_eq!(class(|f| f.owner = Some("p2".into()), ImageStatus::Active), "403");
        assert_eq!(class(|f| f.min_ram = -1, ImageStatus::Active), "400");
        assert_eq!(class(|f| f.name = Some("x".repeat(256)), ImageStatus::Active), "400");
        assert_eq!(class(|f| f.tags = vec!["t".repeat(256)], ImageStatus::Active), "400");
        assert_eq!(class(|f| f.tags = (0..=records::MAX_TAGS).map(|i| i.to_string()).collect(), ImageStatus::Active), "413");
        assert_eq!(class(|f| drop(f.properties.insert("os_glance_x".into(), "1".into())), ImageStatus::Active), "403");
        assert_eq!(class(|f| drop(f.properties.insert("checksum".into(), "1".into())), ImageStatus::Active), "403");
        assert_eq!(class(|f| drop(f.properties.insert("ova_parent".into(), "someone-elses".into())), ImageStatus::Active), "403");
        assert_eq!(
            class(|f| f.properties.extend((0..records::MAX_PROPERTIES).map(|i| (format!("k{i}"), "v".into()))), ImageStatus::Active),
            "413"
        );
        assert_eq!(class(|f| drop(f.properties.insert("big".into(), "v".repeat(65_536))), ImageStatus::Active), "413");
        assert_eq!(class(|f| drop(f.properties.remove("a")), ImageStatus::Active), "ok");
        assert_eq!(class(|_| {}, ImageStatus::Active), "ok");
    }

    #[test]
    fn only_what_changed_is_stored() {
        let before = fields();
        let mut after = before.clone();
        after.name = Some("m".into());
        let p = check_update(&before, &after, ImageStatus::Active, &[]).unwrap();
        assert_eq!(p, records::ImagePatch { name: Some("m".into()), ..Default::default() });
        assert_eq!(check_update(&before, &before, ImageStatus::Active, &[]).unwrap(), records::ImagePatch::default());
    }
}
