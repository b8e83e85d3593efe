//! A package's family: the images one OVA or UEC tarball became. The import records the links
//! as properties (`server/src/ingest.rs`): the first image (an OVA's first disk, a UEC's machine
//! image) carries the package's facts and, for UEC, `kernel_id`/`ramdisk_id`; every further
//! image carries `ova_parent` or `uec_parent` naming the first. The upload card and the image
//! page list the family from here, each image linked, as far as the caller may see them.

use accounts::Authn;

use crate::{Error, Images, NOT_KEPT};

/// The properties that name the first image of a package.
const PARENT_KEYS: [&str; 2] = ["ova_parent", "uec_parent"];

/// At most this many images are listed for one package (an OVA holds at most
/// `diskimage::limits::TAR_MAX_MEMBERS` members).
const FAMILY_LIMIT: u32 = 100;

/// One image of a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub id: String,
    pub name: String,
    pub status: domain::ImageStatus,
    pub disk_format: Option<domain::DiskFormat>,
    /// What it is in the package: `first disk`, `disk <ovf diskId>`, `machine image`,
    /// `kernel` or `ramdisk`.
    pub role: String,
    /// The image asked about.
    pub is_self: bool,
}

fn visible(authn: &Authn) -> records::Visible<'_> {
    match authn.principal.as_ref() {
        Some(p) if p.is_admin => records::Visible::All,
        Some(policy::Principal { scope: Some(s), .. }) => records::Visible::Project(&s.project_id),
        _ => records::Visible::PublicOnly,
    }
}

impl Images {
    /// The images the package that made `image_id` became, the first image first; empty when
    /// the image did not come from a package. Images the caller may not see are left out.
    pub async fn package_family(&self, authn: &Authn, image_id: &str) -> Result<Vec<Related>, Error> {
        let (row, _) = self.visible_image(authn, image_id).await?;
        let detail = |id: String| async move { self.db.image_detail(&id).await.map_err(Error::from) };
        let Some(me) = detail(row.id.clone()).await? else {
            return Ok(Vec::new());
        };
        let props = me.property_map();
        let parent_id = PARENT_KEYS.iter().find_map(|k| props.get(*k).cloned());
        let first = match &parent_id {
            None => me,
            Some(p) => match self.visible_image(authn, p).await {
                Ok(_) => match detail(p.clone()).await? {
                    Some(d) => d,
                    None => return Ok(Vec::new()),
                },
                Err(_) => return Ok(Vec::new()),
            },
        };
        let mut children = Vec::new();
        for key in PARENT_KEYS {
            let query = records::ImageQuery {
                properties: vec![(key.to_owned(), first.id.clone())],
                sort: vec![(records::SortKey::CreatedAt, records::SortDir::Asc)],
                limit: Some(FAMILY_LIMIT),
                ..Default::default()
            };
            let page = self.db.query_images(&query, visible(authn)).await?;
            // The import gives a package's images their first image's project (and only it
            // sets these properties: policy::metadata::is_import_property).
            children.extend(page.images.into_iter().filter(|c| c.owner == first.owner && c.id != first.id));
        }
        let first_props = first.property_map();
        // A package whose other disks were all refused (a quota) is still a package of one.
        let from_package = matches!(first.uploaded_format.as_deref(), Some("ova" | "uec")) && first_props.contains_key(NOT_KEPT);
        if children.is_empty() && !from_package {
            return Ok(Vec::new());
        }
        let uec = children.iter().any(|c| c.property_map().contains_key("uec_parent"));
        let role_of = |c: &records::ImageDetail| {
            if first_props.get("kernel_id") == Some(&c.id) {
                "kernel".to_owned()
            } else if first_props.get("ramdisk_id") == Some(&c.id) {
                "ramdisk".to_owned()
            } else {
                let p = c.property_map();
                p.get("ovf_disk_id").or_else(|| p.get("uec_member")).map_or_else(|| "disk".to_owned(), |d| format!("disk {d}"))
            }
        };
        let related = |d: &records::ImageDetail, role: String| Related {
            id: d.id.clone(),
            name: d.name.clone(),
            status: d.status,
            disk_format: d.disk_format,
            role,
            is_self: d.id == image_id,
        };
        let mut out = vec![related(&first, if uec { "machine image" } else { "first disk" }.to_owned())];
        out.extend(children.iter().map(|c| related(c, role_of(c))));
        Ok(out)
    }
}
