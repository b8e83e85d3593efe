//! Glance's JSON-patch subset for `PATCH /v2/images/{id}` (docs/glance-api.md §1.5), applied to an
//! editable copy of an image. Pure: the handler loads the image, applies, checks the policy for
//! what changed, and stores the result in one update.

use serde_json::Value;

/// The v2.1 media type (JSON-patch draft 10: `add` on an existing member replaces it) and the
/// deprecated v2.0 one (draft 4: `add` on an existing member is 409).
pub const MEDIA_TYPE_V21: &str = "application/openstack-images-v2.1-json-patch";
pub const MEDIA_TYPE_V20: &str = "application/openstack-images-v2.0-json-patch";

/// What an image looks like to a patch: its fields (`imageops::ImageFields`).
pub use imageops::ImageFields as Editable;

/// The context a patch is read in.
pub struct Rules {
    /// True for the v2.1 media type (add-as-replace).
    pub v21: bool,
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

fn opt_string(name: &str, v: &Value) -> Result<Option<String>, PatchError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(bad(format!("Invalid value for '{name}': it must be a string or null."))),
    }
}

fn boolean(name: &str, v: &Value) -> Result<bool, PatchError> {
    v.as_bool().ok_or_else(|| bad(format!("Invalid value for '{name}': it must be true or false.")))
}

fn integer(name: &str, v: &Value) -> Result<i64, PatchError> {
    v.as_i64().ok_or_else(|| bad(format!("Invalid value for '{name}': it must be an integer of 0 or more.")))
}

/// An array of strings, each kept once (the values are judged by the use-case).
fn tags(v: &Value) -> Result<Vec<String>, PatchError> {
    let list = v.as_array().ok_or_else(|| bad("Invalid value for 'tags': it must be an array of strings."))?;
    let mut out: Vec<String> = Vec::new();
    for t in list {
        let t = t.as_str().ok_or_else(|| bad("Invalid value for 'tags': it must be an array of strings."))?;
        if !out.iter().any(|x| x == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// Sets one base property from a JSON value of the right type. The value itself (lengths,
/// known formats, when formats may change, the owner) is judged by the use-case
/// (`imageops::check_update`, `Images::create_image`): one place for both doors.
pub fn set_base(ed: &mut Editable, name: &str, v: &Value) -> Result<(), PatchError> {
    match name {
        "name" => ed.name = opt_string(name, v)?,
        "visibility" => {
            let text = opt_string(name, v)?.ok_or_else(|| bad("Invalid value for 'visibility': it cannot be null."))?;
            ed.visibility = imageops::parse_visibility(&text).map_err(|e| bad(e.to_string()))?;
        }
        "protected" => ed.protected = boolean(name, v)?,
        "os_hidden" => ed.os_hidden = boolean(name, v)?,
        "min_disk" => ed.min_disk = integer(name, v)?,
        "min_ram" => ed.min_ram = integer(name, v)?,
        "disk_format" => ed.disk_format = opt_string(name, v)?,
        "container_format" => ed.container_format = opt_string(name, v)?,
        "owner" => ed.owner = opt_string(name, v)?,
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
pub fn apply(ed: &mut Editable, doc: &Value, rules: &Rules) -> Result<(), PatchError> {
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
                (_, Some(v)) => set_base(ed, &name, v)?,
                _ => {}
            }
            continue;
        }
        // A reserved or read-only name is refused (403) before whether it exists (409), as
        // Glance orders it; the rule itself is policy::metadata's.
        policy::metadata::check_property_key(&name).map_err(|e| match e {
            policy::metadata::MetadataError::Invalid(m) => PatchError::BadRequest(m),
            policy::metadata::MetadataError::Forbidden(m) => PatchError::Forbidden(m),
            policy::metadata::MetadataError::TooLarge(m) => PatchError::TooLarge(m),
        })?;
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
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn ed() -> Editable {
        Editable {
            name: Some("n".into()),
            visibility: domain::Visibility::Private,
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

    fn run(doc: Value, v21: bool) -> Result<Editable, PatchError> {
        let mut e = ed();
        apply(&mut e, &doc, &Rules { v21 }).map(|()| e)
    }

    #[test]
    fn add_replaces_under_v21_only() {
        let e = run(json!([{"op":"add","path":"/a","value":"2"},{"op":"add","path":"/name","value":"x"}]), true).unwrap();
        assert_eq!(e.properties["a"], "2");
        assert_eq!(e.name.as_deref(), Some("x"));
        assert!(matches!(run(json!([{"op":"add","path":"/a","value":"2"}]), false), Err(PatchError::Conflict(_))));
    }

    /// What the patch syntax itself refuses (the values are the use-case's: imageops's tests).
    #[test]
    fn glance_error_classes() {
        use PatchError::*;
        let cls = |doc: Value| match run(doc, true) {
            Ok(_) => "ok",
            Err(BadRequest(_)) => "400",
            Err(Forbidden(_)) => "403",
            Err(Conflict(_)) => "409",
            Err(TooLarge(_)) => "413",
        };
        assert_eq!(cls(json!([{"op":"replace","path":"/b","value":"1"}])), "409");
        assert_eq!(cls(json!([{"op":"remove","path":"/b"}])), "409");
        assert_eq!(cls(json!([{"op":"remove","path":"/name"}])), "403");
        assert_eq!(cls(json!([{"op":"replace","path":"/size","value":"1"}])), "403");
        assert_eq!(cls(json!([{"op":"move","path":"/a","from":"/b"}])), "400");
        assert_eq!(cls(json!({"op":"add"})), "400");
        assert_eq!(cls(json!([{"op":"add","path":"/x","value":5}])), "400");
        assert_eq!(cls(json!([{"op":"replace","path":"/min_ram","value":"big"}])), "400");
        assert_eq!(cls(json!([{"op":"replace","path":"/visibility","value":null}])), "400");
        assert_eq!(cls(json!([{"op":"add","path":"/locations/0","value":{}}])), "403");
        assert_eq!(cls(json!([{"op":"add","path":"/a/b","value":"1"}])), "400");
        assert_eq!(cls(json!([{"op":"replace","path":"/tags","value":["x","x","y"]}])), "ok");
        assert_eq!(run(json!([{"op":"replace","path":"/tags","value":["x","x","y"]}]), true).unwrap().tags, ["x", "y"]);
    }
}
