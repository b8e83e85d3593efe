//! Human-readable byte sizes.

/// One formatter for the UI and the server's messages (`crates/imageops`).
pub use imageops::units::human_bytes;

/// Parses a size typed by a person: a plain byte count or a number with a unit
/// (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`; `K`/`M`/`G`/`T`/`P` are binary).
/// Decimal fractions are allowed with a unit (`1.5 TiB`). None when it does not parse or overflows.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), text[split..].trim());
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        "p" | "pib" => 1 << 50,
        "pb" => 1_000_000_000_000_000,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier);
    }
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bytes = value * multiplier as f64;
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (bytes < u64::MAX as f64).then_some(bytes.round() as u64)
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn encode_query(value: &str) -> String {
    use std::fmt::Write;
    value.bytes().fold(String::with_capacity(value.len()), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::{encode_query, human_bytes, parse_bytes};

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query("user. create&x=1"), "user.%20create%26x%3D1");
        assert_eq!(encode_query("é"), "%C3%A9");
    }

    #[test]
    fn parses_sizes_people_type() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("500 GiB"), Some(500 << 30));
        assert_eq!(parse_bytes("2GB"), Some(2_000_000_000));
        assert_eq!(parse_bytes("1.5 TiB"), Some(3 << 39));
        assert_eq!(parse_bytes("16 ZiB"), None);
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("99999999999 PiB"), None, "overflow is refused, not wrapped");
    }

    #[test]
    fn formats_sizes_people_read() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
