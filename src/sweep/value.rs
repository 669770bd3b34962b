//! Small helpers on values: labels, file-name fragments, hashes and CSV fields.

use super::node::flatten;

/// How a value reads in run names, results.csv and figures: numbers as short as they
/// stay exact (`1e-4`, `0.5`, `16`), strings as they are, tables as `key-value+…`.
pub fn label_of(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => short_float(*f),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => items.iter().map(label_of).collect::<Vec<_>>().join("+"),
        t @ toml::Value::Table(_) => flatten("", t)
            .iter()
            .map(|(k, v)| format!("{k}-{}", label_of(v)))
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// The shorter of `f`'s plain and scientific forms (both exact): `0.01`, `1e-4`, `16`.
pub fn short_float(f: f64) -> String {
    let plain = format!("{f}");
    let sci = format!("{f:e}");
    if plain.len() <= sci.len() {
        plain
    } else {
        sci
    }
}

/// `text` with every character but ASCII letters, digits, `.`, `+`, `-` and `_` replaced
/// by `-`, so that it can be part of a file name anywhere.
pub fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// FNV-1a, 64 bits, as 16 hex digits: a stable fingerprint of specs and configs (not
/// for security; it only tells whether a file changed).
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One CSV field: quoted when it holds a comma, quote or line break.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A number for results.csv: exact (shortest round-trip form), empty when missing.
pub fn csv_number(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_exact() {
        let f = |v: f64| short_float(v);
        assert_eq!(
            [f(1e-4), f(0.001), f(0.01), f(0.5), f(16.0), f(1e6)],
            ["1e-4", "1e-3", "0.01", "0.5", "16", "1e6"]
        );
        let t: toml::Value =
            toml::from_str::<toml::Table>("a = { name = \"adding\", seq_len = 30 }").unwrap()["a"]
                .clone();
        assert_eq!(label_of(&t), "name-adding+seq_len-30");
        assert_eq!(file_safe("a b/c=d"), "a-b-c-d");
        assert_eq!(csv_field("a,b\"c"), "\"a,b\"\"c\"");
    }
}
