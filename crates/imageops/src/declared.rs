//! What an image's declared formats say its data is, by Glance's conventions
//! (docs/glance-api.md, "Packages"): a disk image is declared by its disk format; a package by
//! its container format — `ova`, or `uec` for a UEC tarball (Hangar's own value: Glance has none)
//! — with the disk format naming the disk inside, as in
//! `openstack image create --container-format ova --disk-format vmdk --file app.ova`.
//! The one place that reading lives: the import, the room an upload reserves and the digests it
//! computes all go through [`declared`].

pub use domain::Package;
use domain::{ContainerFormat, DiskFormat};

/// An image's declaration, read from its disk and container formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declared {
    /// The package the data is, when its container format says so.
    pub package: Option<Package>,
    /// The disk format: of the data itself, or, in a package, of the disk inside it.
    pub disk: Option<DiskFormat>,
}

impl Declared {
    /// The format the whole upload is inspected as: the package, or else the disk format.
    pub fn inspect_as(&self) -> Option<&'static str> {
        match self.package {
            Some(p) => Some(p.as_str()),
            None => self.disk.map(DiskFormat::as_str),
        }
    }

    /// Refuses a package whose disk (`found`, by the inspector's name) is not what the disk
    /// format declared; the message offers the declaration that would be right.
    pub fn check_inner(&self, found: &str) -> Result<(), String> {
        let (Some(package), Some(want)) = (self.package, self.disk) else { return Ok(()) };
        let same = want.as_str() == found || (package == Package::Uec && want == DiskFormat::Ami && found == "raw");
        if same {
            return Ok(());
        }
        let right = if package == Package::Uec { "ami" } else { found };
        Err(format!(
            "The image was declared with disk_format {want} (container_format {package}), but the disk in this {package} is {found}; \
             declare disk_format {right} with container_format {package}, or upload the right file."
        ))
    }
}

/// Refuses a declaration no package can satisfy — a package whose disk format cannot be the disk
/// inside it (an OVA of an ISO, a UEC tarball of a qcow2) — before any byte is sent, with the
/// disk formats that can.
pub fn check_declaration(disk_format: Option<DiskFormat>, container_format: Option<ContainerFormat>) -> Result<(), String> {
    let d = declared(disk_format, container_format);
    match (d.package, d.disk) {
        (Some(p), Some(disk)) if !p.inner_formats().contains(&disk) => Err(format!(
            "A package declared with container_format {p} holds a disk of one of these formats: {}; disk_format {disk} cannot be the disk inside it.",
            p.inner_formats().iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
        )),
        _ => Ok(()),
    }
}

/// Reads an image's declaration: the container format says whether it is a package.
pub fn declared(disk_format: Option<DiskFormat>, container_format: Option<ContainerFormat>) -> Declared {
    Declared { package: container_format.and_then(ContainerFormat::package), disk: disk_format }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{ContainerFormat as C, DiskFormat as D};

    #[test]
    fn the_container_declares_the_package_and_the_disk_format_the_disk_inside() {
        let d = declared(Some(D::Vmdk), Some(C::Ova));
        assert_eq!((d.package, d.disk, d.inspect_as()), (Some(Package::Ova), Some(D::Vmdk), Some("ova")));
        assert_eq!(d.check_inner("vmdk"), Ok(()));
        let wrong = d.check_inner("raw").unwrap_err();
        assert!(wrong.contains("declare disk_format raw with container_format ova"), "{wrong}");

        let d = declared(Some(D::Ami), Some(C::Uec));
        assert_eq!(d.inspect_as(), Some("uec"));
        assert_eq!(d.check_inner("raw"), Ok(()), "an AMI is a raw file system");
        assert!(declared(Some(D::Qcow2), Some(C::Uec)).check_inner("raw").unwrap_err().contains("declare disk_format ami"));

        let d = declared(Some(D::Vmdk), Some(C::Bare));
        assert_eq!((d.package, d.inspect_as()), (None, Some("vmdk")));
        assert_eq!(d.check_inner("raw"), Ok(()), "not a package: the inspector compares the file itself");
        assert_eq!(declared(None, None).inspect_as(), None);
        assert_eq!(declared(None, Some(C::Ova)).inspect_as(), Some("ova"));
        assert_eq!(declared(None, Some(C::Ova)).check_inner("vmdk"), Ok(()), "no disk declared: any disk inside");

        assert!(check_declaration(Some(D::Iso), Some(C::Ova)).unwrap_err().contains("vmdk, raw"));
        assert!(check_declaration(Some(D::Qcow2), Some(C::Uec)).is_err());
        for (disk, container) in
            [(Some(D::Vmdk), Some(C::Ova)), (Some(D::Ami), Some(C::Uec)), (Some(D::Iso), Some(C::Bare)), (None, Some(C::Ova))]
        {
            assert_eq!(check_declaration(disk, container), Ok(()), "{disk:?} {container:?}");
        }
    }
}
