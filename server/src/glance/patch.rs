//! Glance's JSON-patch subset for `PATCH /v2/images/{id}` (glance-api.md §1.5), applied to an
//! editable copy of an image. Pure: the handler loads the image, applies, checks the policy for
//! what changed, and stores the result in one update.

use std::collections::BTreeMap;

use serde_json::Value;

/// The v2.1 media type (JSON-patch draft 10: `add` on an existing member replaces it) and the
/// deprecated v2.0 one (draft 4: `add` on an existing member is 409).
pub const MEDIA_TYPE_V21: &str = "application/openstack-images-v2.1-json-patch";
pub const MEDIA_TYPE_V20: &str = "application/openstack-images-v2.0-json-patch";

/// What an image looks like to a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Editable {
    pub name: Option<String>,
    pub visibility: String,
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

impl Editable {
    pub fn of(image: &records::ImageDetail) -> Self {
        Editable {
            name: (!image.name.is_empty()).then(|| image.name.clone()),
            visibility: image.visibility.clone(),
            protected: image.protected,
            os_hidden: image.os_hidden,
            min_disk: image.min_disk,
            min_ram: image.min_ram,
            disk_format: image.disk_format.clone(),
            container_format: image.container_format.clone(),
            owner: image.owner.clone(),
            tags: image.tag_list(),
            properties: image.property_map(),
        }
    }
}

/// The context a patch is judged in.
pub struct Rules<'a> {
    /// True for the v2.1 media type (add-as-replace).
    pub v21: bool,
    /// The image's status: formats change only while `queued` (or `importing`).
    pub status: &'a str,
    pub disk_formats: &'a [String],
    pub container_formats: &'a [&'a str],
}

/// Why a patch was refused; the handler maps these to 400/403/409/413.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchError {
    BadRequest(String),
    Forbidden(String),
    Conflict(String),
    TooLarge(String),
}

fn bad(m: impl Into<String>) -> PatchError {
    PatchError::BadRequest(m.into())
}

/// Base properties: always present, never removable.
fn is_base(name: &str) -> bool {
    matches!(
        name,
        "name" | "visibility" | "protected" | "os_hidden" | "min_disk" | "min_ram" | "disk_format" | "container_format" | "owner" | "tags"
    )
}

impl From<policy::metadata::MetadataError> for PatchError {
    fn from(e: policy::metadata::MetadataError) -> Self {
        use policy::metadata::MetadataError as M;
        match e {
            M::Invalid(m) => PatchError::BadRequest(m),
            M::Forbidden(m) => PatchError::Forbidden(m),
            M::TooLarge(m) => PatchError::TooLarge(m),
        }
    }
}

/// Checks a create/patch key that is not a base property (the rule both doors share:
/// `policy::metadata`). `Ok(())` means a custom property.
pub fn check_custom_key(name: &str) -> Result<(), PatchError> {
    Ok(policy::metadata::check_property_key(name)?)
}

/// Checks the custom properties an image would have after a create or patch: each value's
/// length and the total (`policy::metadata`).
pub fn check_properties(props: &BTreeMap<String, String>) -> Result<(), PatchError> {
    Ok(policy::metadata::check_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())))?)
}

fn opt_string(name: &str, v: &Value, max: usize) -> Result<Option<String>, PatchError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
        Value::String(_) => Err(bad(format!("Invalid value for '{name}': at most {max} characters."))),
        _ => Err(bad(format!("Invalid value for '{name}': it must be a string or null."))),
    }
}

fn enum_value(name: &str, v: &Value, allowed: &[&str]) -> Result<Option<String>, PatchError> {
    let s = opt_string(name, v, 255)?;
    match &s {
        Some(x) if !allowed.contains(&x.as_str()) => {
            Err(bad(format!("Invalid value '{x}' for '{name}': it must be one of {}.", allowed.join(", "))))
        }
        _ => Ok(s),
    }
}

fn boolean(name: &str, v: &Value) -> Result<bool, PatchError> {
    v.as_bool().ok_or_else(|| bad(format!("Invalid value for '{name}': it must be true or false.")))
}

fn non_negative(name: &str, v: &Value) -> Result<i64, PatchError> {
    v.as_i64().filter(|n| *n >= 0).ok_or_else(|| bad(format!("Invalid value for '{name}': it must be an integer of 0 or more.")))
}

fn tags(v: &Value) -> Result<Vec<String>, PatchError> {
    let list = v.as_array().ok_or_else(|| bad("Invalid value for 'tags': it must be an array of strings."))?;
    let mut out: Vec<String> = Vec::new();
    for t in list {
        let t = t.as_str().ok_or_else(|| bad("Invalid value for 'tags': it must be an array of strings."))?;
        if t.is_empty() || t.chars().count() > records::MAX_TAG_CHARS {
            return Err(bad(format!("A tag has 1 to {} characters.", records::MAX_TAG_CHARS)));
        }
        if !out.iter().any(|x| x == t) {
            out.push(t.to_owned());
        }
    }
    if out.len() > records::MAX_TAGS {
        return Err(PatchError::TooLarge(format!("An image has at most {} tags.", records::MAX_TAGS)));
    }
    Ok(out)
}

/// Sets one base property from a JSON value, checking it as the schema does.
pub fn set_base(ed: &mut Editable, name: &str, v: &Value, rules: &Rules<'_>) -> Result<(), PatchError> {
    match name {
        "name" => ed.name = opt_string(name, v, records::MAX_NAME_CHARS)?,
        "visibility" => {
            ed.visibility = enum_value(name, v, &["public", "private", "shared", "community"])?
                .ok_or_else(|| bad("Invalid value for 'visibility': it cannot be null."))?
        }
        "protected" => ed.protected = boolean(name, v)?,
        "os_hidden" => ed.os_hidden = boolean(name, v)?,
        "min_disk" => ed.min_disk = non_negative(name, v)?,
        "min_ram" => ed.min_ram = non_negative(name, v)?,
        "disk_format" | "container_format" => {
            let allowed: Vec<&str> = if name == "disk_format" {
                rules.disk_formats.iter().map(String::as_str).collect()
            } else {
                rules.container_formats.to_vec()
            };
            let value = enum_value(name, v, &allowed)?;
            let current = if name == "disk_format" { &ed.disk_format } else { &ed.container_format };
            if value != *current {
                if !matches!(rules.status, "queued" | "importing") {
                    return Err(PatchError::Forbidden(format!(
                        "Attribute {name} can be only replaced for a queued image (this one is {}).",
                        rules.status
                    )));
                }
                if value.is_none() {
                    return Err(bad(format!("'{name}' cannot be unset once set.")));
                }
            }
            if name == "disk_format" {
                ed.disk_format = value;
            } else {
                ed.container_format = value;
            }
        }
        "owner" => {
            let value = opt_string(name, v, 255)?;
            if value != ed.owner {
                return Err(PatchError::Forbidden("Owner can't be updated: images stay in the project that created them.".into()));
            }
        }
        "tags" => ed.tags = tags(v)?,
        _ => return Err(bad(format!("'{name}' is not a base property."))),
    }
    Ok(())
}

/// Decodes a JSON pointer of depth 1 (`/name`, `/a~1b` = `a/b`).
fn property_of(path: &str) -> Result<String, PatchError> {
    let rest = path.strip_prefix('/').ok_or_else(|| bad(format!("Invalid JSON pointer for this resource: '{path}'")))?;
    if rest.starts_with("locations") {
        return Err(PatchError::Forbidden("Image locations are not exposed by Hangar (Glance's show_multiple_locations is off).".into()));
    }
    if rest.contains('/') || rest.is_empty() {
        return Err(bad(format!("Invalid JSON pointer for this resource: '{path}'")));
    }
    Ok(rest.replace("~1", "/").replace("~0", "~"))
}

/// Applies a patch document (a JSON array of operations) to `ed`.
pub fn apply(ed: &mut Editable, doc: &Value, rules: &Rules<'_>) -> Result<(), PatchError> {
    let ops = doc.as_array().ok_or_else(|| bad("The request body must be a JSON array of operations."))?;
    for op in ops {
        let obj = op.as_object().ok_or_else(|| bad("Each operation must be a JSON object."))?;
        let kind = obj.get("op").and_then(Value::as_str).ok_or_else(|| bad("Each operation needs an 'op'."))?;
        if !matches!(kind, "add" | "remove" | "replace") {
            return Err(bad(format!("Operation '{kind}' is not supported: use add, remove or replace.")));
        }
        let path = obj.get("path").and_then(Value::as_str).ok_or_else(|| bad("Each operation needs a 'path'."))?;
        let name = property_of(path)?;
        let value = obj.get("value");
        if kind != "remove" && value.is_none() {
            return Err(bad(format!("Operation '{kind}' on '{path}' needs a 'value'.")));
        }
        if is_base(&name) {
            match (kind, value) {
                ("remove", _) => return Err(PatchError::Forbidden(format!("Property '{name}' may not be removed."))),
                (_, Some(v)) => set_base(ed, &name, v, rules)?,
                _ => {}
            }
            continue;
        }
        check_custom_key(&name)?;
        let exists = ed.properties.contains_key(&name);
        match kind {
            "remove" => {
                if ed.properties.remove(&name).is_none() {
                    return Err(PatchError::Conflict(format!("Property {name} does not exist.")));
                }
            }
            _ => {
                if kind == "replace" && !exists {
                    return Err(PatchError::Conflict(format!("Property {name} does not exist.")));
                }
                if kind == "add" && exists && !rules.v21 {
                    return Err(PatchError::Conflict(format!("Property {name} already present.")));
                }
                let v = match value {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(bad(format!("Invalid value for '{name}': custom properties are strings."))),
                };
                ed.properties.insert(name, v);
                if ed.properties.len() > records::MAX_PROPERTIES {
                    return Err(PatchError::TooLarge(format!("An image has at most {} properties.", records::MAX_PROPERTIES)));
                }
            }
        }
    }
    check_properties(&ed.properties)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ed() -> Editable {
        Editable {
            name: Some("n".into()),
            visibility: "private".into(),
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

    fn run(doc: Value, v21: bool, status: &str) -> Result<Editable, PatchError> {
        let disk = vec!["qcow2".to_owned(), "raw".to_owned()];
        let rules = Rules { v21, status, disk_formats: &disk, container_formats: &["bare", "ovf"] };
        let mut e = ed();
        apply(&mut e, &doc, &rules).map(|()| e)
    }

    #[test]
    fn add_replaces_under_v21_only() {
        let e = run(json!([{"op":"add","path":"/a","value":"2"},{"op":"add","path":"/name","value":"x"}]), true, "active").unwrap();
        assert_eq!(e.properties["a"], "2");
        assert_eq!(e.name.as_deref(), Some("x"));
        assert!(matches!(run(json!([{"op":"add","path":"/a","value":"2"}]), false, "active"), Err(PatchError::Conflict(_))));
    }

    #[test]
    fn glance_error_classes() {
        use PatchError::*;
        let cls = |doc: Value, status: &str| match run(doc, true, status) {
            Ok(_) => "ok",
            Err(BadRequest(_)) => "400",
            Err(Forbidden(_)) => "403",
            Err(Conflict(_)) => "409",
            Err(TooLarge(_)) => "413",
        };
        assert_eq!(cls(json!([{"op":"replace","path":"/b","value":"1"}]), "active"), "409");
        assert_eq!(cls(json!([{"op":"remove","path":"/b"}]), "active"), "409");
        assert_eq!(cls(json!([{"op":"remove","path":"/name"}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"replace","path":"/status","value":"active"}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"add","path":"/os_glance_x","value":"1"}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"add","path":"/deleted","value":"1"}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"replace","path":"/disk_format","value":"raw"}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"replace","path":"/disk_format","value":"raw"}]), "queued"), "ok");
        assert_eq!(cls(json!([{"op":"replace","path":"/disk_format","value":"vmdk"}]), "queued"), "400");
        assert_eq!(cls(json!([{"op":"replace","path":"/owner","value":"p2"}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"replace","path":"/min_ram","value":-1}]), "active"), "400");
        assert_eq!(cls(json!([{"op":"replace","path":"/visibility","value":"everyone"}]), "active"), "400");
        assert_eq!(cls(json!([{"op":"move","path":"/a","from":"/b"}]), "active"), "400");
        assert_eq!(cls(json!({"op":"add"}), "active"), "400");
        assert_eq!(cls(json!([{"op":"add","path":"/x","value":5}]), "active"), "400");
        assert_eq!(cls(json!([{"op":"add","path":"/locations/0","value":{}}]), "active"), "403");
        assert_eq!(cls(json!([{"op":"add","path":"/a/b","value":"1"}]), "active"), "400");
        assert_eq!(cls(json!([{"op":"replace","path":"/tags","value":["x","x","y"]}]), "active"), "ok");
        let many: Vec<Value> = (0..=records::MAX_PROPERTIES).map(|i| json!({"op":"add","path":format!("/k{i}"),"value":"v"})).collect();
        assert_eq!(cls(Value::from(many), "active"), "413");
    }
}
