//! Names that leave the process: the cache's file names, and URLs as logs
//! and error messages show them.
//!
//! - Cache files are named by a SHA-256 of what they hold (an object's
//!   identity and version, a source URL), after a short readable prefix for
//!   humans: two different objects never share a name (docs/REMOTE.md,
//!   "Cache").
//! - A URL is shown without its query string, fragment or user
//!   information ([`redact`]): a signed URL carries its credentials there.

use sha2::{Digest, Sha256};

/// `url` as logs and errors show it: scheme, host and path, with any
/// `user:password@`, query string and fragment left out (a query string
/// shows as `?...`).
pub fn redact(url: &str) -> String {
    let (base, hidden) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], true),
        None => (url, false),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => base.to_string(),
    };
    match hidden {
        true => format!("{base}?..."),
        false => base,
    }
}

/// SHA-256 of the strings, each prefixed with its length (so that no two
/// lists of strings hash alike by moving a boundary).
pub fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file name for `parts` (as [`digest`] hashes them): a readable prefix
/// made of `label` (what is left after its last `/`, without a query
/// string, at most 48 characters that every filesystem takes), then the
/// hash in hex.
pub fn hashed(label: &str, parts: &[&str]) -> String {
    let path = label.split(['?', '#']).next().unwrap_or("");
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
            true => c,
            false => '_',
        })
        .take(48)
        .collect();
    let clean = clean.trim_start_matches('.');
    format!("{clean}-{}", hex(&digest(parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact("https://h/a/b.gguf?X-Amz-Signature=sekret&x=1"),
            "https://h/a/b.gguf?..."
        );
        assert_eq!(redact("https://user:pw@h:8/f#frag"), "https://h:8/f?...");
        assert_eq!(redact("s3://bucket/key"), "s3://bucket/key");
        assert_eq!(redact("hf://org/m@main"), "hf://org/m@main");
    }

    #[test]
    fn hashed_names_are_readable_and_distinct() {
        let a = hashed("s3://b/dir/model.safetensors", &["a", "v"]);
        assert!(a.starts_with("model.safetensors-"), "{a}");
        assert_eq!(a.len(), "model.safetensors-".len() + 64);
        assert_ne!(a, hashed("s3://b/dir/model.safetensors", &["a", "w"]));
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        let q = hashed("https://h/f.pt?sig=sekret", &["x"]);
        assert!(q.starts_with("f.pt-") && !q.contains("sekret"), "{q}");
        assert!(!hashed("https://h/..", &["x"]).starts_with('.'));
    }
}
