//! Many tensors: a source with 400,000 tensors mounts, lists and reads
//! correctly, with the pack left out (its header would pass the safetensors
//! limit) and BF16 shards split to keep their headers under it. Timings are
//! not asserted here (scripts/bench.sh measures them).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const N: usize = 400_000;

/// A sparse safetensors file of `N` one-element F32 tensors named `t<i>`.
fn many(path: &std::path::Path) {
    let mut h = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    for i in 0..N {
        h.push_str(&format!(
            r#","t{i}":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}"#,
            4 * i,
            4 * i + 4
        ));
    }
    h.push('}');
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(h.as_bytes()).unwrap();
    // Tensor i holds the f32 value i.
    let data: Vec<u8> = (0..N).flat_map(|i| (i as f32).to_le_bytes()).collect();
    f.write_all(&data).unwrap();
}

#[test]
fn four_hundred_thousand_tensors() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("many.safetensors");
    many(&src);
    let m = Mount::new(&src);

    // The pack is left out, and says so.
    assert!(!m.join("raw/model.safetensors").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["tensor_count"], N);
    let notes = manifest["notes"].to_string();
    assert!(
        notes.contains("raw/model.safetensors is left out"),
        "{notes}"
    );
    assert_eq!(
        manifest["tensors"][N - 1]["raw_file"],
        format!("raw/tensors/t{}.safetensors", N - 1)
    );

    // Every tensor file is listed, in source order.
    let names: Vec<String> = std::fs::read_dir(m.join("raw/tensors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), N);
    assert_eq!(names[12345], "t12345.safetensors");

    // Lookups by name, and the bytes (raw: the source's; bf16: rounded).
    for i in [0, 1, 77_777, N - 1] {
        let raw =
            read_st(&std::fs::read(m.join(&format!("raw/tensors/t{i}.safetensors"))).unwrap());
        assert_eq!(raw[&format!("t{i}")].2, (i as f32).to_le_bytes());
        let b = read_st(&std::fs::read(m.join(&format!("bf16/tensors/t{i}.safetensors"))).unwrap());
        let bits = u16::from_le_bytes(b[&format!("t{i}")].2[..].try_into().unwrap());
        assert_eq!(bits, half::bf16::from_f32(i as f32).to_bits(), "t{i}");
    }

    // BF16 shards: every tensor in one of them, each header under the limit.
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(m.join("bf16/model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), N);
    let shards: std::collections::BTreeSet<&str> =
        map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(
        shards.len() > 1,
        "one shard of {N} tensors would pass the header limit"
    );
    let mut total = 0;
    for s in shards {
        let f = std::fs::File::open(m.join(&format!("bf16/{s}"))).unwrap();
        let mut len = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut len, 0).unwrap();
        assert!(u64::from_le_bytes(len) <= 100_000_000, "{s}");
        let bytes = std::fs::read(m.join(&format!("bf16/{s}"))).unwrap();
        total += read_st(&bytes).len();
    }
    assert_eq!(total, N);
    wait_until("still mounted", Duration::from_secs(1), || {
        is_mounted(&m.path)
    });
}
