//! Rules for image metadata that every door applies the same way: which container formats
//! exist, which property names are Glance's own, and how long names, keys and values may be.
//! The dashboard's server functions and the Glance API both call these, so a key one door
//! refuses is never stored through the other.

use std::collections::BTreeMap;

use domain::ContainerFormat;

/// Property names are at most this many characters (Glance's `image_properties.name` column).
pub const MAX_PROPERTY_KEY_CHARS: usize = 255;
/// A property value is at most this many bytes: Glance keeps values in a MySQL `TEXT` column,
/// which holds 65,535 bytes, so no Glance deployment stores a longer one.
pub const MAX_PROPERTY_VALUE_BYTES: usize = 65_535;
/// All of an image's custom property keys and values together are at most this many bytes,
/// so one image cannot make every listing of its project megabytes long (128 properties of the
/// largest value would be 8 MiB).
pub const MAX_PROPERTIES_TOTAL_BYTES: usize = 256 * 1024;

/// Glance's base properties: set through their own fields, never as custom properties.
pub const BASE_PROPERTIES: [&str; 10] =
    ["name", "visibility", "protected", "os_hidden", "min_disk", "min_ram", "disk_format", "container_format", "owner", "tags"];
/// Fields the server sets; a client may not set them (Glance answers 403).
pub const READ_ONLY_PROPERTIES: [&str; 13] = [
    "id",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
];
/// Names Glance reserves (403), besides every name that starts with `os_glance`.
pub const RESERVED_PROPERTIES: [&str; 5] = ["location", "locations", "deleted", "deleted_at", "stores"];

/// Properties Hangar's import of a package sets on the images it makes: which package an image
/// came from and what the package's descriptor said (`server/src/ingest.rs`). Only the import
/// sets, changes or removes them, so the links and facts the dashboard shows cannot be forged.
pub const IMPORT_PROPERTIES: [&str; 4] = ["ova_parent", "uec_parent", "uec_member", "package_disks_not_kept"];
/// Every property whose name starts with this is an OVF fact the import recorded.
pub const IMPORT_PROPERTY_PREFIX: &str = "ovf_";

/// True for a property only Hangar's package import sets ([`IMPORT_PROPERTIES`]).
pub fn is_import_property(key: &str) -> bool {
    IMPORT_PROPERTIES.contains(&key) || key.starts_with(IMPORT_PROPERTY_PREFIX)
}

/// Why a piece of metadata was refused; the doors map these to 400/403/413.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// A malformed value (400).
    Invalid(String),
    /// A name only the server may set (403).
    Forbidden(String),
    /// Over a size limit (413).
    TooLarge(String),
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataError::Invalid(m) | MetadataError::Forbidden(m) | MetadataError::TooLarge(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for MetadataError {}

/// Checks a container format name.
pub fn check_container_format(value: &str) -> Result<(), MetadataError> {
    match ContainerFormat::parse(value) {
        Some(_) => Ok(()),
        None => Err(MetadataError::Invalid(format!(
            "Invalid value '{value}' for 'container_format': it must be one of {}.",
            ContainerFormat::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Whether `key` is a well-formed property name: 1 to 255 of ASCII letters, digits, `_ : . -`.
pub fn valid_property_key(key: &str) -> bool {
    (1..=MAX_PROPERTY_KEY_CHARS).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}

/// Checks the name of a custom property (one that is not a base property).
pub fn check_property_key(key: &str) -> Result<(), MetadataError> {
    if READ_ONLY_PROPERTIES.contains(&key) {
        return Err(MetadataError::Forbidden(format!("Attribute '{key}' is read-only.")));
    }
    if RESERVED_PROPERTIES.contains(&key) || key.starts_with("os_glance") {
        return Err(MetadataError::Forbidden(format!("Attribute '{key}' is reserved.")));
    }
    if is_import_property(key) {
        return Err(MetadataError::Forbidden(format!("Attribute '{key}' is set by Hangar's import of a package; it cannot be changed.")));
    }
    if BASE_PROPERTIES.contains(&key) {
        return Err(MetadataError::Invalid(format!("'{key}' is not a custom property; set it in its own field.")));
    }
    if !valid_property_key(key) {
        let shown: String = key.chars().take(40).collect();
        return Err(MetadataError::Invalid(format!(
            "Property names are 1 to {MAX_PROPERTY_KEY_CHARS} letters, digits and _ : . - ; '{shown}' is not one."
        )));
    }
    Ok(())
}

/// Checks one custom property: its name, then its value's length.
pub fn check_property(key: &str, value: &str) -> Result<(), MetadataError> {
    check_property_key(key)?;
    if value.len() > MAX_PROPERTY_VALUE_BYTES {
        return Err(MetadataError::TooLarge(format!(
            "The value of '{key}' is {} bytes; a property value is at most {MAX_PROPERTY_VALUE_BYTES} bytes.",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a whole set of custom properties: each one, then their total size.
pub fn check_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), MetadataError> {
    let mut total = 0usize;
    for (k, v) in props {
        check_property(k, v)?;
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    check_total(total)
}

/// Checks a change of an image's custom properties: every property added or changed as
/// [`check_property`], none of the import's removed ([`is_import_property`]; those it keeps
/// unchanged are fine), and the total size of the result.
pub fn check_property_change(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Result<(), MetadataError> {
    for (k, v) in after {
        if before.get(k) != Some(v) {
            check_property(k, v)?;
        }
    }
    if let Some(k) = before.keys().find(|k| !after.contains_key(*k) && is_import_property(k)) {
        return Err(MetadataError::Forbidden(format!("Attribute '{k}' is set by Hangar's import of a package; it cannot be removed.")));
    }
    check_total(after.iter().map(|(k, v)| k.len().saturating_add(v.len())).fold(0usize, usize::saturating_add))
}

fn check_total(total: usize) -> Result<(), MetadataError> {
    if total > MAX_PROPERTIES_TOTAL_BYTES {
        return Err(MetadataError::TooLarge(format!(
            "The image's properties take {total} bytes; together they may take at most {MAX_PROPERTIES_TOTAL_BYTES} bytes."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_read_only_and_base_names_are_refused() {
        for k in ["os_glance_import_task", "os_glance_x", "location", "locations", "deleted", "stores"] {
            assert!(matches!(check_property_key(k), Err(MetadataError::Forbidden(_))), "{k}");
        }
        for k in ["id", "status", "checksum", "direct_url", "self"] {
            assert!(matches!(check_property_key(k), Err(MetadataError::Forbidden(_))), "{k}");
        }
        for k in ["name", "tags", "container_format", "owner"] {
            assert!(matches!(check_property_key(k), Err(MetadataError::Invalid(_))), "{k}");
        }
        for k in ["", "a b", "x<y", &"k".repeat(256)] {
            assert!(matches!(check_property_key(k), Err(MetadataError::Invalid(_))), "{k}");
        }
        assert_eq!(check_property_key("os_distro"), Ok(()));
        assert_eq!(check_property_key(&"k".repeat(255)), Ok(()));
    }

    #[test]
    fn values_and_totals_are_bounded() {
        assert_eq!(check_property("description", &"x".repeat(MAX_PROPERTY_VALUE_BYTES)), Ok(()));
        assert!(matches!(check_property("description", &"x".repeat(MAX_PROPERTY_VALUE_BYTES + 1)), Err(MetadataError::TooLarge(_))));
        let big = "x".repeat(60_000);
        let keys: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        assert!(matches!(check_properties(keys.iter().map(|k| (k.as_str(), big.as_str()))), Err(MetadataError::TooLarge(_))));
        assert_eq!(check_properties(keys.iter().take(4).map(|k| (k.as_str(), big.as_str()))), Ok(()));
    }

    /// The properties a package's import records cannot be set, changed or removed by users, so
    /// no one can make an image look like a disk of someone else's appliance; an edit that keeps
    /// them as they are passes.
    #[test]
    fn the_import_properties_are_the_servers() {
        for k in ["ova_parent", "uec_parent", "uec_member", "package_disks_not_kept", "ovf_name", "ovf_manifest_verified"] {
            assert!(matches!(check_property_key(k), Err(MetadataError::Forbidden(_))), "{k}");
        }
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>();
        let imported = map(&[("ova_parent", "p"), ("ovf_name", "VM"), ("os_distro", "debian")]);
        let edited = map(&[("ova_parent", "p"), ("ovf_name", "VM"), ("os_distro", "ubuntu")]);
        assert_eq!(check_property_change(&imported, &edited), Ok(()));
        let forged = map(&[("ova_parent", "q"), ("ovf_name", "VM"), ("os_distro", "debian")]);
        assert!(matches!(check_property_change(&imported, &forged), Err(MetadataError::Forbidden(_))));
        let unlinked = map(&[("ovf_name", "VM"), ("os_distro", "debian")]);
        assert!(matches!(check_property_change(&imported, &unlinked), Err(MetadataError::Forbidden(_))));
        let added = map(&[("ovf_manifest_verified", "true")]);
        assert!(matches!(check_property_change(&BTreeMap::new(), &added), Err(MetadataError::Forbidden(_))));
    }

    #[test]
    fn container_formats() {
        assert_eq!(check_container_format("bare"), Ok(()));
        assert!(check_container_format("docker<script>").is_err());
    }
}
