//! Fuzz target: the GGUF header parser (`source::gguf::parse_data`) on
//! arbitrary bytes, and the metadata's JSON rendering (`manifest.json`,
//! `gguf_metadata.json`). Nothing may panic, and an accepted header must keep
//! the promises the catalog relies on: every tensor's bytes inside the file,
//! at an aligned offset, as long as its ggml type and dims say, and no two
//! tensors overlapping.
#![no_main]

use std::path::Path;

use gyrofs::source::gguf::parse_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse_data(Path::new("fuzz.gguf"), data) else {
        return;
    };
    let json = h.metadata_json();
    serde_json::to_string(&json).expect("metadata JSON serializes");
    let len = data.len() as u64;
    let mut extents = Vec::new();
    for t in &h.tensors {
        assert!(
            t.offset >= h.data_start && t.end() <= len,
            "tensor '{}' outside the file",
            t.name
        );
        assert_eq!(
            (t.offset - h.data_start) % h.alignment,
            0,
            "tensor '{}' misaligned",
            t.name
        );
        let bytes = t.ggml_type.bytes_for(t.n_elements());
        assert_eq!(
            bytes,
            Some(t.n_bytes),
            "tensor '{}' has the wrong length",
            t.name
        );
        assert_eq!(t.shape().len(), t.dims.len());
        if t.n_bytes > 0 {
            extents.push((t.offset, t.end()));
        }
    }
    extents.sort_unstable();
    for w in extents.windows(2) {
        assert!(w[0].1 <= w[1].0, "tensors overlap: {:?}", w);
    }
});
