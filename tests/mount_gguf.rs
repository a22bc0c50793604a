//! GGUF sources through a real mount: lossless raw/ (checked against what
//! gguf-py reads, tests/data/gguf/expected.json), bf16/ bit-exact against
//! `gguf.quants.dequantize` rounded once to BF16, split sets, metadata.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gyrofs::quant::bf16;

fn gguf(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gguf")
        .join(rel)
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(gguf("expected.json")).unwrap()).unwrap()
}

fn one_tensor(
    mnt: &Mount,
    view: &str,
    name: &str,
) -> (String, Vec<usize>, Vec<u8>, serde_json::Value) {
    let bytes = std::fs::read(mnt.join(&format!("{view}/tensors/{name}.safetensors"))).unwrap();
    let md = read_st_metadata(&bytes);
    let rec: serde_json::Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
    let t = read_st(&bytes);
    assert_eq!(t.len(), 1);
    let (dtype, shape, data) = t[name].clone();
    (dtype, shape, data, rec[name].clone())
}

#[test]
fn raw_view_is_the_gguf_bytes() {
    let src = gguf("quants.gguf");
    let file = std::fs::read(&src).unwrap();
    let mnt = Mount::new(&src);
    let want = expected();
    let tensors = want["quants.gguf"]["tensors"].as_array().unwrap();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let (off, n) = (
            t["offset"].as_u64().unwrap() as usize,
            t["n_bytes"].as_u64().unwrap() as usize,
        );
        let (dtype, _, data, rec) = one_tensor(&mnt, "raw", name);
        assert!(
            data == file[off..off + n],
            "{name}: raw bytes differ from the GGUF data"
        );
        assert_eq!(rec["ggml"]["type"], t["type"], "{name}");
        assert_eq!(rec["ggml"]["type_id"], t["type_id"], "{name}");
        assert_eq!(rec["ggml"]["shape"], t["shape"], "{name}");
        assert_eq!(rec["source"]["offsets"], serde_json::json!([off, off + n]));
        let quantized = rec["ggml"]["block_size"].as_u64().unwrap() > 1;
        let plain = if quantized {
            "U8"
        } else {
            t["type"].as_str().unwrap()
        };
        assert_eq!(dtype, plain, "{name}");
    }
    // The pack holds every tensor.
    let pack = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
    assert_eq!(pack.len(), tensors.len());
    // Metadata: whole in gguf_metadata.json, summarised in the manifest.
    let md: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("gguf_metadata.json")).unwrap()).unwrap();
    assert_eq!(md, want["quants.gguf"]["metadata"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["gguf"]["general.architecture"], "gyrofs-test");
    assert_eq!(manifest["source"]["format"], "gguf");
}

#[test]
fn bf16_view_matches_gguf_py_dequantization() {
    let mnt = Mount::new(&gguf("quants.gguf"));
    let reference = Mount::new(&gguf("quants_ref.gguf"));
    let refs = walk(&reference.join("raw/tensors"));
    assert!(refs.len() >= 40, "reference tensors: {}", refs.len());
    let mut types = std::collections::BTreeSet::new();
    for f in refs {
        let name = f.strip_suffix(".safetensors").unwrap();
        let (rdtype, rshape, rdata, _) = one_tensor(&reference, "raw", name);
        assert_eq!(rdtype, "F32");
        let want: Vec<u16> = rdata
            .chunks_exact(4)
            .map(|c| bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())))
            .collect();
        let (dtype, shape, data, rec) = one_tensor(&mnt, "bf16", name);
        assert_eq!((dtype.as_str(), &shape), ("BF16", &rshape), "{name}");
        if rec["ggml"]["type"] == "BF16" {
            // BF16 passes through unchanged (NaN payloads included); rounding
            // the reference's f32 gives the same bits for every number.
            let (_, _, raw, _) = one_tensor(&mnt, "raw", name);
            assert_eq!(data, raw, "{name}");
            for (g, w) in data.chunks_exact(2).zip(&want) {
                let g = u16::from_le_bytes([g[0], g[1]]);
                let nan = |v: u16| v & 0x7F80 == 0x7F80 && v & 0x7F != 0;
                assert!(g == *w || (nan(g) && nan(*w)), "{name}: {g:#x} vs {w:#x}");
            }
            types.insert("BF16".to_string());
            continue;
        }
        let got: Vec<u16> = data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            bad,
            0,
            "{name}: {bad} of {} values differ from gguf.quants.dequantize",
            want.len()
        );
        types.insert(rec["ggml"]["type"].as_str().unwrap().to_string());
    }
    for t in [
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
        "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4",
    ] {
        assert!(types.contains(t), "no golden tensor of type {t}");
    }
    // A type without a dequantizer is named, stays in raw/, and does not break the mount.
    let manifest = std::fs::read_to_string(mnt.join("manifest.json")).unwrap();
    assert!(manifest.contains("cannot dequantize ggml type Q8_K"));
    assert!(mnt.join("raw/tensors/act.q8_k.safetensors").exists());
    assert!(!mnt.join("bf16/tensors/act.q8_k.safetensors").exists());
    // Integers are kept as they are.
    let (dtype, _, data, _) = one_tensor(&mnt, "bf16", "ids.i64");
    let (rdtype, _, rdata, _) = one_tensor(&mnt, "raw", "ids.i64");
    assert_eq!((dtype, data), (rdtype, rdata));

    // Mount and convert agree on the whole bf16 view.
    let conv = convert(&gguf("quants.gguf"), "bf16");
    for rel in walk(&mnt.join("bf16")) {
        assert!(
            std::fs::read(mnt.join(&format!("bf16/{rel}"))).unwrap()
                == std::fs::read(conv.path().join("out").join(&rel)).unwrap(),
            "bf16/{rel}"
        );
    }
}

fn q8_0(seed: u64, rows: u64, cols: u64) -> Vec<u8> {
    // Random blocks with a sane f16 scale (0x2000 ~ 2^-7) in each 34-byte block.
    let mut b = bytes(seed, (rows * cols / 32 * 34) as usize);
    for blk in b.chunks_exact_mut(34) {
        blk[0] = 0x00;
        blk[1] = 0x20;
    }
    b
}

#[test]
fn split_set_mounts_as_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let parts = 3u16;
    let mut all = Vec::new();
    for i in 0..parts {
        let t = vec![
            GT {
                name: format!("blk.{i}.ffn_up.weight"),
                ty: 8,
                dims: vec![64, 4],
                data: q8_0(i as u64, 4, 64),
            },
            GT {
                name: format!("blk.{i}.attn_norm.weight"),
                ty: 0,
                dims: vec![64],
                data: bytes(100 + i as u64, 256),
            },
        ];
        let path = dir
            .path()
            .join(format!("toy-{:05}-of-{:05}.gguf", i + 1, parts));
        let mut kvs = vec![
            ("split.no", Kv::U16(i)),
            ("split.count", Kv::U16(parts)),
            ("split.tensors.count", Kv::I32(6)),
        ];
        if i == 0 {
            kvs.insert(0, ("general.architecture", Kv::Str("llama")));
        }
        write_gguf(&path, &kvs, &t);
        all.extend(t);
    }
    // Naming the second part, or the folder, mounts the whole set.
    for src in [
        dir.path().join("toy-00002-of-00003.gguf"),
        dir.path().to_path_buf(),
    ] {
        let mnt = Mount::new(&src);
        let pack = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
        assert_eq!(pack.len(), all.len());
        for t in &all {
            assert_eq!(pack[&t.name].2, t.data, "{}", t.name);
        }
        // A 'llama' GGUF that is not a complete llama (no embedding, no
        // attention): bf16/ keeps the GGUF names, without a config.json.
        let (_, shape, _, _) = one_tensor(&mnt, "bf16", "blk.2.ffn_up.weight");
        assert_eq!(shape, vec![4, 64]);
        assert!(!mnt.join("bf16/config.json").exists());
        assert!(!mnt.join("bf16/tokenizer.json").exists());
        let md: serde_json::Value =
            serde_json::from_slice(&std::fs::read(mnt.join("gguf_metadata.json")).unwrap())
                .unwrap();
        assert_eq!(md["general.architecture"], "llama");
    }
    // A missing part is refused, naming it.
    std::fs::remove_file(dir.path().join("toy-00003-of-00003.gguf")).unwrap();
    let o = gyrofs(&[
        "ls",
        &dir.path()
            .join("toy-00001-of-00003.gguf")
            .display()
            .to_string(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("toy-00003-of-00003.gguf") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn split_metadata_must_match_the_names() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2u16 {
        let t = vec![GT {
            name: format!("t{i}"),
            ty: 0,
            dims: vec![8],
            data: bytes(i as u64, 32),
        }];
        let path = dir.path().join(format!("m-{:05}-of-00002.gguf", i + 1));
        write_gguf(
            &path,
            &[("split.no", Kv::U16(1 - i)), ("split.count", Kv::U16(2))],
            &t,
        );
    }
    let o = gyrofs(&["ls", &dir.path().display().to_string()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("split.no is 1, but the file name says 0"),
        "{err}"
    );
}

#[test]
fn bad_gguf_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.gguf", b"GGML\x03\0\0\0".repeat(4), "not a GGUF file"),
        (
            "v1.gguf",
            [b"GGUF".as_slice(), &1u32.to_le_bytes(), &[0u8; 16]].concat(),
            "version 1",
        ),
        ("short.gguf", b"GGUF\x03\0".to_vec(), "too short"),
        (
            "count.gguf",
            [
                b"GGUF".as_slice(),
                &3u32.to_le_bytes(),
                &u64::MAX.to_le_bytes(),
                &0u64.to_le_bytes(),
            ]
            .concat(),
            "cannot fit",
        ),
    ];
    for (name, data, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        for cmd in ["ls", "mount"] {
            let mnt = dir.path().join("mnt");
            std::fs::create_dir_all(&mnt).unwrap();
            let o = if cmd == "ls" {
                gyrofs(&["ls", &p.display().to_string()])
            } else {
                gyrofs(&[
                    "mount",
                    &p.display().to_string(),
                    &mnt.display().to_string(),
                ])
            };
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{cmd} {name} succeeded");
            assert!(!is_mounted(&mnt));
            assert_eq!(err.trim_end().lines().count(), 1, "{cmd} {name}: {err}");
            assert!(
                err.contains(name) && err.contains(want),
                "{cmd} {name}: {err}"
            );
            assert!(!err.contains("panicked"));
        }
    }
}

/// `--dtype f16,f32`: the f32/ view is gguf-py's float32 dequantization
/// (what transformers' GGUF loader computes) and f16/ is that cast to
/// float16 by torch (`quants_ref.f16`, scripts/make_dtype_golden.py); NaN is
/// canonical where gyrofs computes it.
#[test]
fn f16_and_f32_views_match_transformers_gguf_loading() {
    let mnt = Mount::with_args(&gguf("quants.gguf"), &["--dtype", "f16,f32"]);
    assert!(!mnt.join("bf16").exists());
    let reference = Mount::new(&gguf("quants_ref.gguf"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference.join("manifest.json")).unwrap()).unwrap();
    let f16_ref = std::fs::read(gguf("quants_ref.f16")).unwrap();
    let mut at = 0usize;
    let nan32 = |b: u32| b & 0x7F80_0000 == 0x7F80_0000 && b & 0x7F_FFFF != 0;
    let nan16 = |b: u16| b & 0x7C00 == 0x7C00 && b & 0x3FF != 0;
    for t in manifest["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let (_, _, want32, _) = one_tensor(&reference, "raw", name);
        let n = want32.len() / 4;
        let want16 = &f16_ref[at * 2..(at + n) * 2];
        at += n;
        let (d32, _, got32, rec) = one_tensor(&mnt, "f32", name);
        let (d16, _, got16, _) = one_tensor(&mnt, "f16", name);
        assert_eq!((d32.as_str(), d16.as_str()), ("F32", "F16"), "{name}");
        let ty = rec["ggml"]["type"].as_str().unwrap();
        for (i, (g, w)) in got32
            .chunks_exact(4)
            .zip(want32.chunks_exact(4))
            .enumerate()
        {
            let (g, w) = (
                u32::from_le_bytes(g.try_into().unwrap()),
                u32::from_le_bytes(w.try_into().unwrap()),
            );
            let ok = g == w || (nan32(w) && (g == 0x7FC0_0000 || ty == "F32"));
            assert!(ok, "{name} f32[{i}]: {g:#010x} vs {w:#010x}");
        }
        for (i, (g, w)) in got16
            .chunks_exact(2)
            .zip(want16.chunks_exact(2))
            .enumerate()
        {
            let (g, w) = (
                u16::from_le_bytes([g[0], g[1]]),
                u16::from_le_bytes([w[0], w[1]]),
            );
            let ok = g == w || (nan16(w) && (g == 0x7E00 || ty == "F16"));
            assert!(ok, "{name} f16[{i}]: {g:#06x} vs {w:#06x}");
        }
    }
    assert_eq!(at * 2, f16_ref.len());
    let config_less = !mnt.join("f16/config.json").exists();
    assert!(config_less, "a GGUF source has no config.json (yet)");
}
