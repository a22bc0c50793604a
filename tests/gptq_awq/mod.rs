//! Checks shared by tests/quant_gptq.rs and tests/quant_awq.rs: a fixture
//! of scripts/make_quant_gptq.py mounted for real, compared with the
//! library's own dequantization, and broken copies of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

pub type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

/// `tests/data/quant/<family>/<case>`: `model/` (the source) and the
/// golden files beside it.
pub fn case(family: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant")
        .join(family)
        .join(name)
}

/// Every tensor of a converted view (`bf16`, `f16`), through its index.
pub fn view_model(mnt: &Mount, view: &str) -> (Tensors, BTreeMap<String, String>) {
    let index: Value = serde_json::from_slice(
        &std::fs::read(mnt.join(&format!("{view}/model.safetensors.index.json"))).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut shards: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    shards.sort();
    shards.dedup();
    let (mut all, mut records) = (Tensors::new(), BTreeMap::new());
    for s in shards {
        let bytes = std::fs::read(mnt.join(&format!("{view}/{s}"))).unwrap();
        let md = read_st_metadata(&bytes);
        let recs: Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
        for (name, r) in recs.as_object().unwrap() {
            records.insert(name.clone(), r.to_string());
        }
        all.extend(read_st(&bytes));
    }
    assert_eq!(all.len(), map.len());
    (all, records)
}

fn is_part(name: &str) -> bool {
    [".qweight", ".qzeros", ".scales", ".g_idx"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// F16 bytes cast to BF16 (torch's `.to(torch.bfloat16)`: nearest even).
fn f16_to_bf16(b: &[u8]) -> Vec<u8> {
    b.chunks_exact(2)
        .flat_map(|c| {
            let x = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            half::bf16::from_f32(x).to_le_bytes()
        })
        .collect()
}

/// Mount `family/name` and check it against the library: every
/// dequantized weight of `bf16/` (and of `f16/` where the fixture has
/// `reference_f16.safetensors`) byte for byte, the unquantized tensors cast
/// unchanged, the Gyro record, `config.json` without quantization config,
/// and `raw/` holding the stored tensors.
pub fn check_case(family: &str, name: &str) {
    let dir = case(family, name);
    let src = dir.join("model");
    let f16 = dir.join("reference_f16.safetensors");
    let mnt = if f16.exists() {
        Mount::with_args(&src, &["--dtype", "bf16,f16"])
    } else {
        Mount::new(&src)
    };
    let what = format!("{family}/{name}");
    let (got, records) = view_model(&mnt, "bf16");
    let want = read_st(&std::fs::read(dir.join("reference.safetensors")).unwrap());
    let stored = source_tensors(&src);
    let mut names: Vec<&String> = want.keys().collect();
    for (n, (dtype, shape, data)) in &stored {
        if is_part(n) {
            continue;
        }
        // unquantized tensors pass through, cast to BF16
        assert_eq!(dtype, "F16", "{what}: {n}");
        let g = &got[n];
        assert_eq!((g.0.as_str(), &g.1), ("BF16", shape), "{what}: {n}");
        assert!(g.2 == f16_to_bf16(data), "{what}: {n} is not its cast");
        names.push(n);
    }
    names.sort();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        names,
        "{what}: bf16/ holds the dequantized weights and the unquantized tensors"
    );
    for (n, w) in &want {
        let g = &got[n];
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{what}: {n} dtype/shape");
        assert!(
            g.2 == w.2,
            "{what}: {n} differs from the library's dequantization"
        );
        let module = n.strip_suffix(".weight").unwrap();
        let r = &records[n];
        assert!(
            r.contains(r#""kind":"dequant""#)
                && r.contains(&format!(r#""scheme":"{family}""#))
                && r.contains(&format!(r#""qweight":"{module}.qweight""#)),
            "{what}: {n} record {r}"
        );
    }
    if f16.exists() {
        let (got, _) = view_model(&mnt, "f16");
        for (n, w) in read_st(&std::fs::read(&f16).unwrap()) {
            let g = &got[&n];
            assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{what}: f16 {n} dtype/shape");
            assert!(
                g.2 == w.2,
                "{what}: f16 {n} differs from the library's float16 result"
            );
        }
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(mnt.join("bf16/config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none(), "{what}");
    assert_eq!(config["model_type"], "llama");
    assert!(!mnt.join("bf16/quantize_config.json").exists(), "{what}");
    // raw/ keeps every stored tensor as it is
    let raw = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
    assert_eq!(raw, stored, "{what}: raw/");
}

/// A writable copy of `family/name`'s checkpoint, with its tensors and
/// config edited by `edit` (None drops a tensor), mounted: returns the
/// manifest's notes and whether `bf16/` exists. `raw/` must be there.
pub fn mount_broken(
    family: &str,
    name: &str,
    edit: impl Fn(&mut Vec<T>, &mut Value),
) -> (Vec<String>, bool) {
    let src = case(family, name).join("model");
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let mut tensors: Vec<T> = read_st(&std::fs::read(src.join("model.safetensors")).unwrap())
        .into_iter()
        .map(|(n, (dtype, shape, data))| T {
            name: n,
            dtype: match dtype.as_str() {
                "F16" => "F16",
                "I32" => "I32",
                "BF16" => "BF16",
                other => panic!("{other}"),
            },
            shape,
            data,
        })
        .collect();
    let config_file = if tmp.path().join("quantize_config.json").exists() {
        "quantize_config.json"
    } else {
        "config.json"
    };
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join(config_file)).unwrap()).unwrap();
    edit(&mut tensors, &mut config);
    write_safetensors(&tmp.path().join("model.safetensors"), &tensors);
    std::fs::write(
        tmp.path().join(config_file),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let mnt = Mount::new(tmp.path());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(mnt.join("manifest.json")).unwrap()).unwrap();
    let notes = manifest["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert!(mnt.join("raw/model.safetensors").exists());
    let has_bf16 = mnt.join("bf16").exists();
    (notes, has_bf16)
}

/// `config` with its quantization config (config.json's
/// `quantization_config`, or the side file itself).
pub fn qc(config: &mut Value) -> &mut Value {
    if config.get("quantization_config").is_some() {
        &mut config["quantization_config"]
    } else {
        config
    }
}

/// Assert that the mount left the converted views out with one note that
/// contains every one of `words`.
pub fn assert_refused(family: &str, (notes, has_bf16): (Vec<String>, bool), words: &[&str]) {
    assert!(!has_bf16, "bf16/ is left out: {notes:?}");
    let hits: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains(&format!("{family} checkpoint")))
        .collect();
    assert_eq!(hits.len(), 1, "one note: {notes:?}");
    assert!(!hits[0].contains('\n'), "one line: {}", hits[0]);
    for w in words {
        assert!(hits[0].contains(w), "{w:?} in {}", hits[0]);
    }
}
