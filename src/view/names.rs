//! Tensor name -> file name escaping.
//!
//! Most tensor names (`model.layers.0.mlp.up_proj.weight`) are already good
//! file names and are used unchanged. The rules (docs/FORMAT.md, "File
//! names"):
//! - `%` becomes `%25`, `/` becomes `%2F`, bytes 0x00..0x1F and 0x7F become
//!   `%XX` (uppercase hex), and a leading `.` becomes `%2E`. Everything else,
//!   including non-ASCII UTF-8, is kept. Decoding `%XX` gives the name back.
//! - The empty name becomes `%_`, which no other name escapes to.
//! - If the escaped name plus its extension would exceed 255 bytes, it is cut
//!   to 200 bytes (on a character and escape boundary) and `%~` plus 16 hex
//!   digits of the FNV-1a 64 hash of the full name are appended. `%~` cannot
//!   appear in a short escaped name, so long and short names never collide;
//!   the file's Gyro header still carries the full name.

/// Longest file name Linux accepts.
const NAME_MAX: usize = 255;
/// Bytes of escaped name kept when a name is too long.
const LONG_PREFIX: usize = 200;

/// File name stem for `tensor` such that `stem + ext` fits in NAME_MAX
/// (borrowed when the name needs no escaping, as most do).
pub fn escape<'a>(tensor: &'a str, ext: &str) -> std::borrow::Cow<'a, str> {
    if tensor.is_empty() {
        return "%_".into();
    }
    let plain = |(i, c): (usize, char)| {
        !(c == '%' || c == '/' || (c == '.' && i == 0) || (c as u32) < 0x20 || c as u32 == 0x7f)
    };
    if tensor.len() + ext.len() <= NAME_MAX && tensor.char_indices().all(plain) {
        return tensor.into();
    }
    let mut out = String::with_capacity(tensor.len());
    for (i, c) in tensor.char_indices() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' if i == 0 => out.push_str("%2E"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("%{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    if out.len() + ext.len() <= NAME_MAX {
        return out.into();
    }
    let mut cut = LONG_PREFIX;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    // Do not split a %XX escape.
    if let Some(p) = out[..cut].rfind('%')
        && p + 3 > cut
    {
        cut = p;
    }
    format!("{}%~{:016x}", &out[..cut], fnv1a64(tensor.as_bytes())).into()
}

/// A name made safe to print on a terminal: `%` and control characters
/// (C0, DEL and the C1 range U+0080..U+009F, which terminals can take as
/// escape sequences) become `%XX` per UTF-8 byte, as in file names; the rest
/// is kept. `gyrofs ls` prints names this way.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c == '%' || c.is_control();
    if !name.contains(control) {
        return name.into();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if control(c) {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Inverse of [`escape`] for names that were not shortened; `None` for a
/// shortened (`%~`) or malformed name.
pub fn unescape(stem: &str) -> Option<String> {
    if stem == "%_" {
        return Some(String::new());
    }
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a, 64-bit: a stable hash that needs no dependency.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names() {
        assert_eq!(printable("model.layers.0.w"), "model.layers.0.w");
        assert_eq!(printable("a\x1b[31mb%\u{9b}é/x"), "a%1B[31mb%25%C2%9Bé/x");
        assert_eq!(unescape(&printable("t\ta%")).unwrap(), "t\ta%");
    }

    #[test]
    fn plain_names_unchanged() {
        let n = "model.layers.0.mlp.experts.gate_up_proj_blocks";
        assert_eq!(escape(n, ".safetensors"), n);
    }

    #[test]
    fn escapes_and_round_trips() {
        for n in [
            "a/b",
            ".hidden",
            "..",
            "50%",
            "tab\there",
            "ünï/κ",
            "",
            "x.",
            "%2F",
        ] {
            let e = escape(n, ".safetensors");
            assert!(!e.contains('/'), "{e}");
            assert!(!e.starts_with('.'), "{e}");
            assert_eq!(unescape(&e).as_deref(), Some(n), "{n} -> {e}");
        }
        assert_eq!(escape("a/b", ""), "a%2Fb");
        assert_eq!(escape(".x", ""), "%2Ex");
    }

    #[test]
    fn long_names_are_cut_and_distinct() {
        let a = "x".repeat(300);
        let b = format!("{}y", "x".repeat(299));
        let (ea, eb) = (escape(&a, ".safetensors"), escape(&b, ".safetensors"));
        assert!(ea.len() + 12 <= 255);
        assert_ne!(ea, eb);
        assert!(ea.contains("%~"));
        assert_eq!(unescape(&ea), None);
        // Cutting never splits an escape or a character.
        let c = "/".repeat(100);
        let ec = escape(&c, ".safetensors");
        assert!(ec.starts_with("%2F") && ec.contains("%~"));
        let d = "é".repeat(200);
        assert!(escape(&d, ".safetensors").len() <= 243);
    }

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
