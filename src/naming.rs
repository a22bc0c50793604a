//! File-name conventions of checkpoint sets, shared by the readers that open
//! them (`source/`) and the remote lister that must find a set's siblings
//! (`remote/`). Pure functions on names; no I/O.
//!
//! - GGUF split sets (llama.cpp's `gguf-split`): `NAME-00001-of-00003.gguf`.

/// `(prefix, number, count)` of a GGUF split file name
/// `prefix-0000i-of-0000n.gguf` (five digits each, `1 <= i <= n`).
pub fn gguf_split(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) {
        return None;
    }
    let (no, count) = (no.parse().ok()?, count.parse().ok()?);
    (no >= 1 && no <= count).then_some((prefix, no, count))
}

/// The name of part `no` of the GGUF split set `prefix` of `count` parts.
pub fn gguf_split_part(prefix: &str, no: u32, count: u32) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_split_names() {
        assert_eq!(gguf_split("m-00001-of-00003.gguf"), Some(("m", 1, 3)));
        assert_eq!(gguf_split("a-b-00003-of-00003.gguf"), Some(("a-b", 3, 3)));
        assert_eq!(gguf_split("m-00004-of-00003.gguf"), None);
        assert_eq!(gguf_split("m-1-of-3.gguf"), None);
        assert_eq!(gguf_split("m.gguf"), None);
        assert_eq!(gguf_split_part("a-b", 3, 3), "a-b-00003-of-00003.gguf");
        let p = gguf_split_part("m", 2, 12);
        assert_eq!(gguf_split(&p), Some(("m", 2, 12)));
    }
}
