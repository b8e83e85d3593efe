//! `GET /v2/images` query strings → [`records::ImageQuery`] (Glance's `RequestDeserializer.index`,
//! docs/glance-api.md §1.4), and the `next` link that repeats them with a new marker.

use domain::ImageStatus;
use records::{ImageQuery, MemberStatusFilter, SortDir, SortKey, TimeFilter, TimeOp, VisibilityFilter};

/// Glance's sort keys (`sort_key`/`sort`); the catalogue knows a few more for the dashboard.
const GLANCE_SORT_KEYS: [&str; 8] = ["name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"];

/// Attributes whose filter takes Glance's `in:` operator.
const IN_FILTERS: [&str; 5] = ["container_format", "disk_format", "id", "name", "status"];

fn bad(m: impl Into<String>) -> String {
    m.into()
}

fn values(v: &str, key: &str) -> Result<Vec<String>, String> {
    match v.strip_prefix("in:") {
        Some(list) if IN_FILTERS.contains(&key) => in_list(list),
        _ => Ok(vec![v.to_owned()]),
    }
}

/// Splits the value of Glance's `in:` operator: `a,b` or `"glass, darkly",share me` (a quoted
/// item may contain commas; `\"` is a literal quote). The `in:` prefix itself is the caller's.
fn in_list(s: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') if chars.peek() == Some(&'"') => item.push(chars.next().unwrap_or('"')),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(format!("invalid filter: unterminated quote in {s:?}")),
                }
            }
            match chars.next() {
                None => {
                    items.push(item);
                    return Ok(items);
                }
                Some(',') => items.push(item),
                Some(_) => return Err(format!("invalid filter: a quoted item must be followed by a comma in {s:?}")),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some(c) => item.push(c),
                    None => {
                        items.push(item);
                        return Ok(items);
                    }
                }
            }
            items.push(item);
        }
    }
}

/// Glance's `op:time` form of a time filter (`created_at=gte:2024-01-01T00:00:00Z`); a bare time
/// means `eq` (Glance's `split_filter_op`). The time itself is judged by [`TimeFilter::new`].
fn time_filter(s: &str) -> Result<TimeFilter, String> {
    let (op, at) = match s.split_once(':') {
        Some((op, rest)) if op.chars().all(|c| c.is_ascii_alphabetic()) => {
            let op = match op {
                "gt" => TimeOp::Gt,
                "gte" => TimeOp::Gte,
                "lt" => TimeOp::Lt,
                "lte" => TimeOp::Lte,
                "eq" => TimeOp::Eq,
                "neq" => TimeOp::Neq,
                _ => return Err(format!("invalid filter: unknown operator {op:?}: use gt, gte, lt, lte, eq or neq")),
            };
            (op, rest)
        }
        _ => (TimeOp::Eq, s),
    };
    TimeFilter::new(op, at).map_err(|e| e.to_string())
}

fn boolean(key: &str, v: &str, any_case: bool) -> Result<bool, String> {
    let v = if any_case { v.to_ascii_lowercase() } else { v.to_owned() };
    match v.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!("Invalid value '{v}' for parameter '{key}': use true or false."))),
    }
}

fn integer(key: &str, v: &str) -> Result<i64, String> {
    v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| bad(format!("{key} must be a non-negative integer, not '{v}'.")))
}

/// Parses the query pairs of an image listing; the error is the 400 message.
pub fn parse(pairs: &[(String, String)]) -> Result<ImageQuery, String> {
    let mut q = ImageQuery::default();
    let (mut sort_keys, mut sort_dirs, mut sort_new) = (Vec::new(), Vec::new(), None::<String>);
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                let n = integer("limit", v)?;
                q.limit = Some(u32::try_from(n).unwrap_or(u32::MAX).min(records::MAX_LIST_LIMIT));
            }
            "marker" => q.marker = Some(v.clone()),
            "sort_key" => sort_keys.push(v.clone()),
            "sort_dir" => sort_dirs.push(v.clone()),
            "sort" => sort_new = Some(v.clone()),
            "changes-since" => return Err(bad("The \"changes-since\" filter is no longer available on v2.")),
            "id" => q.ids.extend(values(v, k)?),
            "name" => q.names.extend(values(v, k)?),
            "status" => {
                // Glance filters without judging the values: one that names no status matches nothing.
                let named = values(v, k)?;
                q.statuses.get_or_insert_with(Vec::new).extend(named.iter().filter_map(|s| ImageStatus::parse(s)));
            }
            "disk_format" => q.disk_formats.extend(values(v, k)?),
            "container_format" => q.container_formats.extend(values(v, k)?),
            "visibility" => q.visibility = Some(VisibilityFilter::parse(v).map_err(|e| e.to_string())?),
            "member_status" => q.member_status = MemberStatusFilter::parse(v).map_err(|e| e.to_string())?,
            "owner" => q.owners.push(v.clone()),
            "tag" => q.tags.push(v.clone()),
            "size_min" => q.size_min = Some(integer(k, v)?),
            "size_max" => q.size_max = Some(integer(k, v)?),
            "created_at" => q.created_at.push(time_filter(v)?),
            "updated_at" => q.updated_at.push(time_filter(v)?),
            // Glance lowercases os_hidden (glanceclient sends `True`) but not `protected`.
            "protected" => q.protected = Some(boolean(k, v, false)?),
            "os_hidden" => q.os_hidden = Some(boolean(k, v, true)?),
            "checksum" => q.checksum = Some(v.clone()),
            "os_hash_value" => q.os_hash_value = Some(v.clone()),
            "self" | "file" | "schema" => return Err(bad(format!("'{k}' is a link and cannot be used as a filter."))),
            _ => {
                if !records::valid_property_key(k) {
                    return Err(bad(format!("'{k}' is not a valid filter: property names are 1 to 255 letters, digits and _ : . -")));
                }
                q.properties.push((k.clone(), v.clone()));
            }
        }
    }
    if sort_new.is_some() && (!sort_keys.is_empty() || !sort_dirs.is_empty()) {
        return Err(bad("The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'."));
    }
    let key = |s: &str| -> Result<SortKey, String> {
        if !GLANCE_SORT_KEYS.contains(&s) {
            return Err(bad(format!("Invalid sort key: {s}. It must be one of: {}.", GLANCE_SORT_KEYS.join(", "))));
        }
        SortKey::parse(s).map_err(|e| e.to_string())
    };
    let dir = |s: &str| SortDir::parse(s).map_err(|_| bad(format!("Invalid sort direction: {s}. Use asc or desc.")));
    if let Some(spec) = sort_new {
        // `sort=name:asc,status` (direction defaults to desc).
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, d) = item.split_once(':').unwrap_or((item, "desc"));
            q.sort.push((key(k.trim())?, dir(d.trim())?));
        }
    } else if !sort_keys.is_empty() || !sort_dirs.is_empty() {
        if sort_dirs.len() > 1 && sort_dirs.len() != sort_keys.len() {
            return Err(bad("Number of sort dirs does not match the number of sort keys."));
        }
        let keys = if sort_keys.is_empty() { vec!["created_at".to_owned()] } else { sort_keys };
        for (i, k) in keys.iter().enumerate() {
            let d = sort_dirs.get(i).or(sort_dirs.first()).map_or(Ok(SortDir::Desc), |d| dir(d))?;
            q.sort.push((key(k)?, d));
        }
    }
    Ok(q)
}

/// Percent-encodes a query component (everything but RFC 3986's unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `next` link: the same query (filters, sort, limit) with `marker` replaced.
pub fn next_link(pairs: &[(String, String)], marker: &str) -> String {
    let mut parts: Vec<String> = pairs.iter().filter(|(k, _)| k != "marker").map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    parts.push(format!("marker={}", encode(marker)));
    format!("/v2/images?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn both_sort_syntaxes_and_their_errors() {
        let q = parse(&p("sort=name:asc,size")).unwrap();
        assert_eq!(q.sort, vec![(SortKey::Name, SortDir::Asc), (SortKey::Size, SortDir::Desc)]);
        let q = parse(&p("sort_key=name&sort_key=size&sort_dir=asc")).unwrap();
        assert_eq!(q.sort, vec![(SortKey::Name, SortDir::Asc), (SortKey::Size, SortDir::Asc)]);
        assert!(parse(&p("sort=name&sort_key=size")).is_err(), "mixed forms");
        assert!(parse(&p("sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc&sort_dir=asc")).is_err());
        assert!(parse(&p("sort_key=owner")).is_err(), "not a Glance key");
        assert!(parse(&p("sort=name:up")).is_err());
    }

    #[test]
    fn filters_follow_glance() {
        let q = parse(&p("status=in:saving,queued&os_hidden=True&tag=a&tag=b&hw_disk_bus=virtio&limit=5000")).unwrap();
        assert_eq!(q.statuses, Some(vec![ImageStatus::Saving, ImageStatus::Queued]));
        assert_eq!(q.os_hidden, Some(true));
        assert_eq!(q.tags, ["a", "b"]);
        assert_eq!(q.properties, [("hw_disk_bus".to_owned(), "virtio".to_owned())]);
        assert_eq!(q.limit, Some(records::MAX_LIST_LIMIT));
        assert!(parse(&p("protected=True")).is_err(), "protected is lowercase only");
        assert!(parse(&p("limit=-1")).is_err());
        assert!(parse(&p("limit=x")).is_err());
        assert!(parse(&p("changes-since=2020-01-01")).is_err());
        assert!(parse(&p("visibility=everyone")).is_err());
        assert!(parse(&p("member_status=maybe")).is_err());
        assert!(parse(&p("created_at=after:2020-01-01")).is_err());
        assert_eq!(parse(&p("name=in:\"a,b\",c")).unwrap().names, ["a,b", "c"]);
    }

    #[test]
    fn times_are_normalised_to_the_stored_format() {
        let at = |s: &str| time_filter(s).map(|f| (f.op(), f.at().to_owned()));
        assert_eq!(at("gte:2024-05-01").unwrap(), (TimeOp::Gte, "2024-05-01T00:00:00Z".into()));
        assert_eq!(at("lt:2024-05-01T10:00").unwrap(), (TimeOp::Lt, "2024-05-01T10:00:00Z".into()));
        assert_eq!(at("2024-03-01T01:30:00+02:00").unwrap(), (TimeOp::Eq, "2024-02-29T23:30:00Z".into()));
        assert_eq!(at("neq:2023-12-31T23:00:00-0130").unwrap(), (TimeOp::Neq, "2024-01-01T00:30:00Z".into()));
        assert_eq!(at("gt:2024-05-01 10:00:00.000z").unwrap(), (TimeOp::Gt, "2024-05-01T10:00:00Z".into()));
        assert_eq!(at("gte:2024-05-01T10:00:00.25Z").unwrap(), (TimeOp::Gt, "2024-05-01T10:00:00Z".into()));
        assert_eq!(at("lte:1970-01-01T00:00:00Z").unwrap().1, "1970-01-01T00:00:00Z");
        for bad in [
            "",
            "2024",
            "2024-13-01",
            "2023-02-29",
            "2024-04-31",
            "2024-01-01T24:00",
            "2024-01-01T10:00:60",
            "2024-01-01T10",
            "2024-01-01T10:00:00+25:00",
            "2024-01-01T10:00:00 UTC",
            "now",
            "2460000.5",
            "gtx:2024-01-01",
            "between:2024-01-01",
            "0000-01-01T00:00:00+01:00",
            "2024-01-01T10:00:00.",
        ] {
            assert!(at(bad).unwrap_err().starts_with("invalid filter"), "{bad:?} was accepted");
        }
        assert_eq!(at("2024-02-29T00:00:00Z").unwrap().1, "2024-02-29T00:00:00Z");
        assert_eq!(at("2000-02-29").unwrap().1, "2000-02-29T00:00:00Z");
    }

    #[test]
    fn in_lists_split_on_commas_outside_quotes() {
        let split = |s: &str| in_list(s).unwrap();
        assert_eq!(split("saving,queued"), ["saving", "queued"]);
        assert_eq!(split("one"), ["one"]);
        assert_eq!(split(r#""glass, darkly",share me"#), ["glass, darkly", "share me"]);
        assert_eq!(split(r#"a,"b\"c""#), ["a", "b\"c"]);
        assert_eq!(split("a,,b"), ["a", "", "b"]);
        assert!(in_list(r#""open"#).is_err());
        assert!(in_list(r#""a"b"#).is_err());
    }

    #[test]
    fn next_keeps_the_query_and_replaces_the_marker() {
        let link = next_link(&p("limit=2&marker=old&name=a b&tag=x"), "m1");
        assert_eq!(link, "/v2/images?limit=2&name=a%20b&tag=x&marker=m1");
    }
}
