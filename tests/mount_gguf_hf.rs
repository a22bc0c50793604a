//! GGUF models as Hugging Face folders through a real mount: for every
//! fixture GGUF written by llama.cpp's converter (tests/data/gguf-models/,
//! scripts/make_gguf_models.py), `MNT/bf16/` holds exactly the state dict
//! transformers' own GGUF loader gives (`from_pretrained(dir,
//! gguf_file=..., dtype=bfloat16)`, golden `*.expected.safetensors`), read
//! lazily through the kernel: dequantization, llama.cpp's Q/K permutation
//! undone, norm offsets, transposes and expert concatenation all computed
//! in the read path. Plus a config.json, tokenizer files and an index.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf-models")
}

#[test]
fn every_fixture_is_the_model_transformers_loads() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    assert!(files.len() >= 16);
    for gguf in files {
        let stem = gguf.file_stem().unwrap().to_str().unwrap().to_string();
        let expected =
            read_st(&std::fs::read(dir().join(format!("{stem}.expected.safetensors"))).unwrap());
        let m = Mount::new(&gguf);
        let index: Value = serde_json::from_slice(
            &std::fs::read(m.join("bf16/model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let mut got = std::collections::BTreeMap::new();
        let shards: std::collections::BTreeSet<String> = index["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for s in shards {
            got.extend(read_st(
                &std::fs::read(m.join(&format!("bf16/{s}"))).unwrap(),
            ));
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{stem}: tensor names"
        );
        for (name, want) in &expected {
            assert_eq!(&got[name], want, "{stem}: {name}");
        }
        let config: Value =
            serde_json::from_slice(&std::fs::read(m.join("bf16/config.json")).unwrap()).unwrap();
        assert_eq!(config["dtype"], "bfloat16", "{stem}");
        assert!(config["model_type"].is_string(), "{stem}");
        assert!(m.join("bf16/tokenizer.json").exists(), "{stem}");
        assert!(m.join("bf16/tokenizer_config.json").exists(), "{stem}");
        // Records name what was done.
        let md = read_st_metadata(
            &std::fs::read(m.join("bf16/model-00001-of-00001.safetensors")).unwrap(),
        );
        assert!(md["gyro.tensors"].contains("\"kind\""), "{stem}");
        if stem.starts_with("llama") {
            assert!(md["gyro.tensors"].contains("unpermute_rows"), "{stem}");
        }
    }
}

/// A GGUF of an architecture gyrofs cannot map keeps today's GGUF-named
/// bf16/, with a note saying why.
#[test]
fn unmapped_architecture_keeps_gguf_names() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf/quants.gguf");
    let m = Mount::new(&src);
    let manifest = std::fs::read_to_string(m.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("keep the GGUF tensor names"),
        "{manifest}"
    );
    assert!(
        m.join("bf16/tensors/Q4_K.rows.safetensors").exists()
            || !walk(&m.join("bf16/tensors")).is_empty()
    );
}
