//! Fuzz target: the safetensors header parser (`source::safetensors::parse_bytes`)
//! on arbitrary bytes. It must never panic, and a header it accepts must keep
//! the promises the views rely on: tensors in data order tiling the data
//! buffer exactly, each as long as its dtype and shape say.
#![no_main]

use std::path::Path;

use gyrofs::dtype::numel;
use gyrofs::source::safetensors::parse_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse_bytes(Path::new("fuzz.safetensors"), data) else {
        return;
    };
    let mut cursor = h.data_start;
    for t in &h.tensors {
        assert_eq!(
            t.start, cursor,
            "tensor '{}' does not follow the previous",
            t.name
        );
        let bytes = numel(&t.shape).and_then(|n| t.dtype.bytes_for(n));
        assert_eq!(
            bytes,
            Some(t.end - t.start),
            "tensor '{}' has the wrong length",
            t.name
        );
        cursor = t.end;
    }
    assert_eq!(
        cursor,
        data.len() as u64,
        "tensors do not reach the end of the file"
    );
});
