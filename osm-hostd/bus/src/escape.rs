//! D-Bus object path elements from names, escaped as systemd does.

/// Escapes a name into one D-Bus object path element, as systemd does: every byte
/// outside `[A-Za-z0-9]` becomes `_xx` (lowercase hex). The empty string becomes `_`.
pub fn escape_path_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(name.len() * 2);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Reverses [`escape_path_element`]; `None` if the element is not a valid escape.
pub fn unescape_path_element(elem: &str) -> Option<String> {
    if elem == "_" {
        return Some(String::new());
    }
    let bytes = elem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = elem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_escaping_round_trips() {
        for name in ["web-1", "debian-12.8", "", "a_b"] {
            let e = escape_path_element(name);
            assert!(
                e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{e}"
            );
            assert_eq!(unescape_path_element(&e).as_deref(), Some(name));
        }
        assert_eq!(escape_path_element("web-1"), "web_2d1");
    }
}
