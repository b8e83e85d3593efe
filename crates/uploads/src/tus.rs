//! tus 1.0.0 header names, limits and parsers. Every parser takes hostile input: it never panics,
//! never allocates from an unchecked length, and answers a 400 with a message on anything odd.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine as _;

use crate::UploadError;

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration,concatenation";
/// sha1 is the algorithm every tus client may assume (the spec makes it mandatory); sha256 is
/// what Hangar's own clients send.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

pub const TUS_RESUMABLE: &str = "tus-resumable";
pub const TUS_VERSION: &str = "tus-version";
pub const TUS_EXTENSION: &str = "tus-extension";
pub const TUS_MAX_SIZE: &str = "tus-max-size";
pub const TUS_CHECKSUM_ALGORITHM: &str = "tus-checksum-algorithm";
pub const UPLOAD_OFFSET: &str = "upload-offset";
pub const UPLOAD_LENGTH: &str = "upload-length";
pub const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
pub const UPLOAD_METADATA: &str = "upload-metadata";
pub const UPLOAD_CHECKSUM: &str = "upload-checksum";
pub const UPLOAD_CONCAT: &str = "upload-concat";
pub const UPLOAD_EXPIRES: &str = "upload-expires";
pub const METHOD_OVERRIDE: &str = "x-http-method-override";

/// Longest `Upload-Metadata` header accepted: a file name, a type and a few hints fit many
/// times over, and the value is stored with every upload row and echoed on every HEAD.
pub const MAX_METADATA_LEN: usize = 4096;
/// Most key/value pairs in `Upload-Metadata` (same reason).
pub const MAX_METADATA_PAIRS: usize = 32;
/// Longest metadata key: keys are short identifiers (`filename`, `filetype`, …).
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// Most parts one final upload may join. Browsers use 4 streams; 64 leaves room for custom
/// clients while bounding the header, the transaction that claims parts and the join.
pub const MAX_PARTS: usize = 64;
/// Longest `Upload-Concat` header: MAX_PARTS absolute URLs of a few hundred bytes each.
pub const MAX_CONCAT_LEN: usize = MAX_PARTS * 256;
/// Decimal digits of the largest length or offset accepted: 18 digits stay below i64::MAX,
/// which is what SQLite stores, and allow up to an exabyte.
const MAX_DIGITS: usize = 18;

/// A header's value as ASCII text; missing is `None`, non-ASCII is a 400.
fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, UploadError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| bad(format!("The {name} header must be ASCII text."))),
    }
}

fn bad(message: String) -> UploadError {
    UploadError::BadRequest(message)
}

/// A non-negative decimal number as tus sends them (digits only, no sign, no spaces).
pub fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, UploadError> {
    let Some(s) = text(headers, name)? else { return Ok(None) };
    if s.is_empty() || s.len() > MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("The {name} header must be a non-negative integer of at most {MAX_DIGITS} digits.")));
    }
    s.parse::<u64>().map(Some).map_err(|_| bad(format!("The {name} header is not a number.")))
}

/// Whether `Tus-Resumable` is the version this server speaks.
pub fn version_ok(headers: &HeaderMap) -> bool {
    headers.get(TUS_RESUMABLE).is_some_and(|v| v.as_bytes() == VERSION.as_bytes())
}

/// Whether the body is declared as tus upload data (parameters after `;` are tolerated).
pub fn is_offset_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// `Upload-Metadata: key base64,key2 base64,key3` decoded into strings. Keys are printable
/// ASCII without spaces or commas (the spec's rule) and unique; values must be UTF-8 without
/// control characters, since they are echoed to clients and shown in the UI.
pub fn metadata(headers: &HeaderMap) -> Result<BTreeMap<String, String>, UploadError> {
    let mut out = BTreeMap::new();
    let Some(raw) = text(headers, UPLOAD_METADATA)? else { return Ok(out) };
    if raw.len() > MAX_METADATA_LEN {
        return Err(bad(format!("Upload-Metadata may have at most {MAX_METADATA_LEN} bytes.")));
    }
    if raw.is_empty() {
        return Ok(out);
    }
    for pair in raw.split(',') {
        if out.len() == MAX_METADATA_PAIRS {
            return Err(bad(format!("Upload-Metadata may have at most {MAX_METADATA_PAIRS} entries.")));
        }
        let pair = pair.trim();
        let mut it = pair.splitn(2, ' ');
        let key = it.next().unwrap_or_default();
        let value = it.next().map(str::trim).unwrap_or_default();
        if key.is_empty() || key.len() > MAX_METADATA_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(bad("Upload-Metadata keys must be 1 to 128 printable ASCII characters without spaces or commas.".into()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| bad(format!("The Upload-Metadata value of '{key}' is not valid base64.")))?;
        let value = String::from_utf8(bytes).map_err(|_| bad(format!("The Upload-Metadata value of '{key}' is not UTF-8 text.")))?;
        if value.chars().any(char::is_control) {
            return Err(bad(format!("The Upload-Metadata value of '{key}' contains control characters.")));
        }
        if out.insert(key.to_owned(), value).is_some() {
            return Err(bad(format!("Upload-Metadata names '{key}' twice.")));
        }
    }
    Ok(out)
}

/// The metadata map in `Upload-Metadata` form, for HEAD.
pub fn encode_metadata(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)) })
        .collect::<Vec<_>>()
        .join(",")
}

/// A per-request checksum the client sent (`Upload-Checksum: <algo> <base64>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

pub fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, UploadError> {
    let Some(raw) = text(headers, UPLOAD_CHECKSUM)? else { return Ok(None) };
    let (algo, value) = raw.split_once(' ').ok_or_else(|| bad("Upload-Checksum must be '<algorithm> <base64 digest>'.".into()))?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| bad("The Upload-Checksum digest is not valid base64.".into()))?;
    let wrong_len = || bad(format!("The Upload-Checksum digest has the wrong length for {algo}."));
    match algo {
        "sha1" => Ok(Some(Checksum::Sha1(digest.try_into().map_err(|_| wrong_len())?))),
        "sha256" => Ok(Some(Checksum::Sha256(digest.try_into().map_err(|_| wrong_len())?))),
        _ => Err(bad(format!("Unsupported checksum algorithm; this server supports {CHECKSUM_ALGORITHMS}."))),
    }
}

/// `Upload-Concat` on creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Concat {
    None,
    Partial,
    /// The parts' upload ids, in order.
    Final(Vec<String>),
}

/// Parses `Upload-Concat`; part URLs may be absolute (`http://host/uploads/<id>`) or paths
/// (`/uploads/<id>`), and must name uploads under `prefix`.
pub fn concat(headers: &HeaderMap, prefix: &str) -> Result<Concat, UploadError> {
    let Some(raw) = text(headers, UPLOAD_CONCAT)? else { return Ok(Concat::None) };
    if raw.len() > MAX_CONCAT_LEN {
        return Err(bad(format!("Upload-Concat may have at most {MAX_CONCAT_LEN} bytes.")));
    }
    if raw == "partial" {
        return Ok(Concat::Partial);
    }
    let Some(list) = raw.strip_prefix("final;") else {
        return Err(bad("Upload-Concat must be 'partial' or 'final;<url> <url> …'.".into()));
    };
    let mut ids: Vec<String> = Vec::new();
    for url in list.split(' ').filter(|s| !s.is_empty()) {
        if ids.len() == MAX_PARTS {
            return Err(bad(format!("A final upload may join at most {MAX_PARTS} parts.")));
        }
        let id = part_id(url, prefix).ok_or_else(|| bad(format!("'{url}' is not an upload URL of this server.")))?;
        if ids.contains(&id) {
            return Err(bad("A final upload cannot name the same part twice.".into()));
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(bad("A final upload must name its parts.".into()));
    }
    Ok(Concat::Final(ids))
}

/// The upload id in `url` if it is `[scheme://host]<prefix>/<uuid>`.
fn part_id(url: &str, prefix: &str) -> Option<String> {
    let path = match url.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => url,
    };
    let id = path.strip_prefix(prefix)?.strip_prefix('/')?;
    parse_id(id)
}

/// An upload id from a URL segment, canonicalised; anything but a UUID is `None`.
pub fn parse_id(s: &str) -> Option<String> {
    if s.len() > 36 {
        return None;
    }
    uuid::Uuid::try_parse(s).ok().map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(name: &'static str, value: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(value).unwrap());
        m
    }

    #[test]
    fn numbers_are_plain_digits() {
        assert_eq!(number(&h(UPLOAD_OFFSET, "42"), UPLOAD_OFFSET).unwrap(), Some(42));
        assert_eq!(number(&HeaderMap::new(), UPLOAD_OFFSET).unwrap(), None);
        for v in ["-1", "+1", "1e3", "", "0x10", "1234567890123456789", "١٢"] {
            if let Ok(value) = HeaderValue::from_str(v) {
                let mut m = HeaderMap::new();
                m.insert(UPLOAD_OFFSET, value);
                assert!(number(&m, UPLOAD_OFFSET).is_err(), "{v:?}");
            }
        }
    }

    #[test]
    fn metadata_round_trips_and_refuses_junk() {
        let m = metadata(&h(UPLOAD_METADATA, "filename d29ybGQudHh0,empty,type dGV4dC9wbGFpbg==")).unwrap();
        assert_eq!(m["filename"], "world.txt");
        assert_eq!(m["empty"], "");
        assert_eq!(metadata(&h(UPLOAD_METADATA, &encode_metadata(&m))).unwrap(), m);
        for v in ["a !!!", "a b c", "a YQ==,a YQ==", "k AA==", "k /w==", ",", "a YQ==,,b YQ=="] {
            assert!(metadata(&h(UPLOAD_METADATA, v)).is_err(), "{v:?}");
        }
        assert!(metadata(&h(UPLOAD_METADATA, &"k YQ==,".repeat(1000))).is_err());
        let many = (0..40).map(|i| format!("k{i} YQ==")).collect::<Vec<_>>().join(",");
        assert!(metadata(&h(UPLOAD_METADATA, &many)).is_err());
    }

    #[test]
    fn checksums_name_a_known_algorithm_and_length() {
        let sha256 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(checksum(&h(UPLOAD_CHECKSUM, &format!("sha256 {sha256}"))).unwrap(), Some(Checksum::Sha256([7; 32])));
        assert!(checksum(&h(UPLOAD_CHECKSUM, &format!("sha1 {sha256}"))).is_err());
        assert!(checksum(&h(UPLOAD_CHECKSUM, &format!("md5 {sha256}"))).is_err());
        assert!(checksum(&h(UPLOAD_CHECKSUM, "sha256")).is_err());
        assert!(checksum(&h(UPLOAD_CHECKSUM, "sha256 ***")).is_err());
    }

    #[test]
    fn concat_names_parts_of_this_server() {
        let a = "0b0e4bc8-6f7c-4a8e-9d1e-3a1f2b3c4d5e";
        let b = "1b0e4bc8-6f7c-4a8e-9d1e-3a1f2b3c4d5e";
        let v = format!("final;/uploads/{a} http://h:1/uploads/{b}");
        assert_eq!(concat(&h(UPLOAD_CONCAT, &v), "/uploads").unwrap(), Concat::Final(vec![a.into(), b.into()]));
        assert_eq!(concat(&h(UPLOAD_CONCAT, "partial"), "/uploads").unwrap(), Concat::Partial);
        for v in
            ["final;", "final;/other/x", "final;/uploads/../etc", "whole", &format!("final;/uploads/{a} /uploads/{a}"), "final;http://"]
        {
            assert!(concat(&h(UPLOAD_CONCAT, v), "/uploads").is_err(), "{v:?}");
        }
        let many = (0..65).map(|_| format!("/uploads/{a}")).collect::<Vec<_>>().join(" ");
        assert!(concat(&h(UPLOAD_CONCAT, &format!("final;{many}")), "/uploads").is_err());
    }
}
