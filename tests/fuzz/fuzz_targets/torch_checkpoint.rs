//! Fuzz target: the PyTorch reader (`source::torch::parse`: zip archive,
//! legacy stream, restricted unpickler) on arbitrary bytes. It must never
//! panic, and a checkpoint it accepts must keep the promises the catalog
//! relies on: every storage inside the file, every tensor's elements inside
//! its storage, its contiguous size countable.
#![no_main]

use gyrofs::source::torch::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = parse(data) else {
        return;
    };
    for s in &ck.storages {
        let end = s.offset.checked_add(s.len).expect("storage end overflows");
        assert!(end <= data.len() as u64, "storage '{}' past the end", s.key);
    }
    for t in &ck.tensors {
        let s = &ck.storages[t.storage];
        assert_eq!(t.shape.len(), t.strides.len(), "'{}': strides", t.path);
        let size = t.dtype.bits().div_ceil(8).max(1);
        let elements = s.len / size;
        if t.numel() == 0 {
            assert!(t.storage_offset <= elements, "'{}': offset", t.path);
            continue;
        }
        let last = t
            .shape
            .iter()
            .zip(&t.strides)
            .try_fold(t.storage_offset, |a, (&d, &st)| a.checked_add((d - 1).checked_mul(st)?))
            .expect("last element overflows");
        assert!(last < elements, "'{}': element {last} past its storage", t.path);
        assert!(
            t.numel().checked_mul(size).is_some_and(|b| b <= 1 << 63),
            "'{}': size",
            t.path
        );
    }
});
