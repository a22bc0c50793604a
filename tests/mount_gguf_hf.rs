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

/// F32 bytes of `n` small values (seeded), and their BF16 bits as gyrofs
/// rounds them (round to nearest even; the values are finite).
fn f32s(seed: u32, n: usize) -> (Vec<u8>, Vec<u8>) {
    let vals: Vec<f32> = (0..n)
        .map(|i| ((seed as usize * 131 + i * 17) % 97) as f32 / 7.0 - 6.0)
        .collect();
    let raw = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bf = vals
        .iter()
        .flat_map(|v| {
            let b = v.to_bits();
            let r = (b + 0x7fff + ((b >> 16) & 1)) >> 16;
            (r as u16).to_le_bytes()
        })
        .collect();
    (raw, bf)
}

/// A toy llama GGUF (F32 tensors; hidden 8, 2 heads of 4, 1 KV head, FFN
/// 16, vocabulary 6) of `blocks` blocks whose metadata says `declared`,
/// plus `extra` tensors (name, ggml dims).
fn toy_llama(path: &Path, declared: u32, blocks: u32, extra: Extra) {
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![8, 6]),
        ("output_norm.weight".into(), vec![8]),
    ];
    for k in 0..blocks {
        for (leaf, dims) in [
            ("attn_norm", &[8][..]),
            ("attn_q", &[8, 8]),
            ("attn_k", &[8, 4]),
            ("attn_v", &[8, 4]),
            ("attn_output", &[8, 8]),
            ("ffn_norm", &[8]),
            ("ffn_gate", &[8, 16]),
            ("ffn_up", &[8, 16]),
            ("ffn_down", &[16, 8]),
        ] {
            shapes.push((format!("blk.{k}.{leaf}.weight"), dims.to_vec()));
        }
    }
    shapes.extend(extra.iter().map(|(n, d)| (n.to_string(), d.to_vec())));
    let tensors: Vec<GT> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (name, dims))| GT {
            data: f32s(i as u32, dims.iter().product::<u64>() as usize).0,
            name,
            ty: 0,
            dims,
        })
        .collect();
    write_gguf(
        path,
        &[
            ("general.architecture", Kv::Str("llama")),
            ("llama.block_count", Kv::U32(declared)),
            ("llama.embedding_length", Kv::U32(8)),
            ("llama.feed_forward_length", Kv::U32(16)),
            ("llama.attention.head_count", Kv::U32(2)),
            ("llama.attention.head_count_kv", Kv::U32(1)),
        ],
        &tensors,
    );
}

/// Extra tensors of a toy GGUF: name, ggml dims.
type Extra<'a> = &'a [(&'a str, &'a [u64])];

/// Notes of `MNT/manifest.json`, one string.
fn notes(m: &Mount) -> String {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(m.join("manifest.json")).unwrap()).unwrap();
    manifest["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A complete model with tensors the Hugging Face mapping has no place for:
/// the model folder holds the model, and every other tensor is still in
/// `bf16/tensors/`, dequantized, under its GGUF name, and named in the
/// manifest.
#[test]
fn tensors_the_mapping_leaves_out_stay_in_bf16_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-extra.gguf");
    let extra: Extra = &[("rope_freqs.weight", &[2]), ("blk.0.odd.weight", &[4, 2])];
    toy_llama(&path, 2, 2, extra);
    let m = Mount::new(&path);
    assert!(m.join("bf16/config.json").exists());
    let index: Value = serde_json::from_slice(
        &std::fs::read(m.join("bf16/model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let mapped = index["weight_map"].as_object().unwrap();
    assert!(mapped.contains_key("model.layers.1.self_attn.q_proj.weight"));
    assert_eq!(mapped.len(), 2 + 2 * 9, "{mapped:?}");
    let shard = read_st(&std::fs::read(m.join("bf16/model-00001-of-00001.safetensors")).unwrap());
    assert_eq!(shard.len(), mapped.len());
    let notes = notes(&m);
    let n = 2 + 2 * 9;
    for (k, (name, dims)) in extra.iter().enumerate() {
        assert!(!mapped.contains_key(*name));
        let f = m.join(&format!("bf16/tensors/{name}.safetensors"));
        let t = read_st(&std::fs::read(&f).unwrap_or_else(|e| panic!("{name}: {e}")));
        let (dtype, shape, data) = &t[*name];
        let want_shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
        assert_eq!((dtype.as_str(), shape), ("BF16", &want_shape), "{name}");
        let numel = dims.iter().product::<u64>() as usize;
        assert_eq!(data, &f32s((n + k) as u32, numel).1, "{name}");
        assert!(
            notes.contains(&format!(
                "GGUF tensor '{name}' has no Hugging Face counterpart: not in the model files \
                 (transformers leaves it out); kept under its GGUF name in tensors/"
            )),
            "{notes}"
        );
    }
}

/// A GGUF that declares a known architecture but is not a complete model of
/// it: `bf16/` keeps every tensor under its GGUF name, has no config.json,
/// and the manifest says why.
#[test]
fn incomplete_models_keep_their_gguf_names() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(u32, u32, Extra, &str); 3] = [
        // nothing maps: tensors named otherwise
        (
            1,
            0,
            &[
                ("model.embed.weight", &[8, 6]),
                ("blk.0.mixer.weight", &[8, 8]),
            ],
            "not a complete 'llama' model: no token_embd.weight",
        ),
        // a block short of what the metadata says
        (
            3,
            2,
            &[],
            "not a complete 'llama' model: llama.block_count is 3, but block 2 has no tensors",
        ),
        // more blocks than it says
        (
            1,
            2,
            &[],
            "not a complete 'llama' model: llama.block_count is 1, but there are tensors of block 1",
        ),
    ];
    for (i, (declared, blocks, extra, why)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.gguf"));
        if blocks == 0 {
            // only the extra tensors
            let tensors: Vec<GT> = extra
                .iter()
                .enumerate()
                .map(|(k, (name, dims))| GT {
                    name: name.to_string(),
                    ty: 0,
                    dims: dims.to_vec(),
                    data: f32s(k as u32, dims.iter().product::<u64>() as usize).0,
                })
                .collect();
            write_gguf(
                &path,
                &[
                    ("general.architecture", Kv::Str("llama")),
                    ("llama.block_count", Kv::U32(declared)),
                    ("llama.attention.head_count", Kv::U32(2)),
                ],
                &tensors,
            );
        } else {
            toy_llama(&path, declared, blocks, extra);
        }
        let m = Mount::new(&path);
        assert!(!m.join("bf16/config.json").exists(), "case {i}");
        let notes = notes(&m);
        assert!(
            notes.contains(&format!(
                "the converted views keep the GGUF tensor names (not a Hugging Face model folder): {why}"
            )),
            "case {i}: {notes}"
        );
        let raw = walk(&m.join("raw/tensors"));
        let bf16 = walk(&m.join("bf16/tensors"));
        assert_eq!(bf16, raw, "case {i}");
        assert!(!raw.is_empty());
        if blocks == 0 {
            for (k, (name, dims)) in extra.iter().enumerate() {
                let f = m.join(&format!("bf16/tensors/{name}.safetensors"));
                let t = read_st(&std::fs::read(f).unwrap());
                let numel = dims.iter().product::<u64>() as usize;
                assert_eq!(t[*name].2, f32s(k as u32, numel).1, "{name}");
            }
        }
    }
}

/// A vocabulary that would make `tokenizer.json` blow up (every prefix of
/// one 400-character token: merges whose text grows with the cube of its
/// length, from 80 KB of metadata) mounts at once; the file is refused
/// when it is asked for (EIO, one log line), and `convert` fails with that
/// line instead of writing an empty file. The model and the other files
/// are served.
#[test]
fn a_tokenizer_beyond_its_budget_is_refused_when_asked_for() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("hostile.gguf");
    let extra: Vec<String> = (1..=400).map(|k| "\u{1}".repeat(k)).collect();
    std::fs::write(&src, gemma3_with_tokens(&extra)).unwrap();
    let m = Mount::new(&src);
    assert!(m.join("bf16/tokenizer_config.json").exists());
    assert!(std::fs::read(m.join("bf16/model-00001-of-00001.safetensors")).is_ok());
    let err = std::fs::read(m.join("bf16/tokenizer.json")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let log = std::fs::read_to_string(&m.log).unwrap();
    assert!(
        log.contains("bf16/tokenizer.json: tokenizer.json: not built: it would take more than"),
        "{log}"
    );
    let out = d.path().join("out");
    let o = gyrofs(&[
        "convert",
        &src.display().to_string(),
        &out.display().to_string(),
        "--files-only",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("gyrofs: tokenizer.json: not built"),
        "{stderr}"
    );
    assert!(!out.join("tokenizer.json").exists());
}
