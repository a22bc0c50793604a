//! The BF16 view through a real mount: bit-identical to what transformers
//! produces from the MXFP4 sample (both gpt-oss layouts), to torch's casts
//! and to DeepSeek-style FP8 block dequantization, and byte-identical to
//! `gyrofs convert --view bf16`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Every tensor of MNT/bf16, through its index, checking the index itself.
fn bf16_model(mnt: &Mount) -> Tensors {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mnt.join("bf16/model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut shards: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    shards.sort();
    shards.dedup();
    let mut all = Tensors::new();
    for s in shards {
        let bytes = std::fs::read(mnt.join(&format!("bf16/{s}"))).unwrap();
        let md = read_st_metadata(&bytes);
        assert_eq!(md["format"], "pt");
        assert_eq!(md["gyro.view"], "bf16");
        for (name, t) in read_st(&bytes) {
            assert_eq!(map[&name].as_str(), Some(s), "{name} is in {s}");
            all.insert(name, t);
        }
    }
    assert_eq!(all.len(), map.len());
    let total: usize = all.values().map(|t| t.2.len()).sum();
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total as u64));
    all
}

fn check_against_transformers(src: &Path) {
    let mnt = Mount::new(src);
    let got = bf16_model(&mnt);
    let want = read_st(&std::fs::read(data("golden/bf16-reference.safetensors")).unwrap());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "same tensor names"
    );
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{name}: dtype/shape");
        assert!(g.2 == w.2, "{name}: values differ from transformers");
    }
    // Shapes transformers' dense GptOssExperts expects.
    assert_eq!(
        got["model.layers.0.mlp.experts.gate_up_proj"].1,
        vec![4, 64, 128]
    );
    assert_eq!(
        got["model.layers.0.mlp.experts.down_proj"].1,
        vec![4, 64, 64]
    );

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("bf16/config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none());
    assert_eq!(config["torch_dtype"], "bfloat16");
    assert_eq!(config["model_type"], "gpt_oss");
    assert_eq!(config["num_local_experts"], 4);
    assert_eq!(config["num_experts_per_tok"], 2);

    // One BF16 tensor per file in bf16/tensors, equal to the model's.
    let files = walk(&mnt.join("bf16/tensors"));
    assert_eq!(files.len(), got.len());
    for f in files {
        let one = read_st(&std::fs::read(mnt.join(&format!("bf16/tensors/{f}"))).unwrap());
        let (name, t) = one.iter().next().unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(format!("{name}.safetensors"), f);
        assert_eq!(t, &got[name]);
    }

    // The whole view equals `gyrofs convert --view bf16`.
    let conv = convert(src, "bf16");
    let out = conv.path().join("out");
    let mounted = walk(&mnt.join("bf16"));
    assert_eq!(mounted, walk(&out));
    for rel in &mounted {
        let a = std::fs::read(mnt.join(&format!("bf16/{rel}"))).unwrap();
        let b = std::fs::read(out.join(rel)).unwrap();
        assert!(a == b, "bf16/{rel}: mount and convert differ");
    }
    // --files-only: the model folder alone (no tensors/, experts/).
    let conv = convert_with(src, "bf16", &["--files-only"]);
    let top: Vec<String> = mounted.into_iter().filter(|r| !r.contains('/')).collect();
    assert!(top.iter().any(|r| r == "config.json"), "{top:?}");
    assert_eq!(walk(&conv.path().join("out")), top);
}

#[test]
fn hf_layout_bf16_equals_transformers_dequantization() {
    check_against_transformers(&sample_hf());
}

#[test]
fn original_layout_bf16_is_the_hf_model() {
    check_against_transformers(&sample_original());
    let mnt = Mount::new(&sample_original());
    assert!(
        !mnt.join("bf16/dtypes.json").exists(),
        "dtypes.json describes the original layout only"
    );
    let md = read_st_metadata(
        &std::fs::read(mnt.join("bf16/tensors/model.layers.1.self_attn.k_proj.weight.safetensors"))
            .unwrap(),
    );
    let rec: serde_json::Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
    let rec = &rec["model.layers.1.self_attn.k_proj.weight"];
    assert_eq!(rec["source"]["name"], "block.1.attn.qkv.weight");
    assert_eq!(rec["transform"]["kind"], "slice");
    assert_eq!(rec["transform"]["start"], 64);
    assert_eq!(rec["transform"]["stop"], 96);
}

#[test]
fn random_reads_through_the_kernel_match_whole_file() {
    let mnt = Mount::new(&sample_original());
    let path = mnt.join("bf16/tensors/model.layers.0.mlp.experts.gate_up_proj.safetensors");
    let whole = std::fs::read(&path).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let mut x = 12345u64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % whole.len() as u64) as usize;
        let len = ((x >> 20) % 5000) as usize;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        assert_eq!(&buf[..n], &whole[off..(off + len).min(whole.len())]);
    }
}

/// u16s of a little-endian byte string.
fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// torch's expected BF16 with its NaNs replaced by gyrofs's canonical NaN.
fn canonical(expected: &[u8]) -> Vec<u16> {
    u16s(expected)
        .into_iter()
        .map(|v| {
            if v & 0x7F80 == 0x7F80 && v & 0x7F != 0 {
                0x7FC0
            } else {
                v
            }
        })
        .collect()
}

fn bf16_of(mnt: &Mount, name: &str) -> (Vec<usize>, String, Vec<u8>) {
    let t = read_st(&std::fs::read(mnt.join(&format!("bf16/tensors/{name}.safetensors"))).unwrap());
    let (dtype, shape, bytes) = t[name].clone();
    (shape, dtype, bytes)
}

#[test]
fn float_casts_match_torch() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("floats");
    std::fs::create_dir(&src).unwrap();
    let rd = |f: &str| std::fs::read(data(&format!("quant/{f}"))).unwrap();
    let f16_all: Vec<u8> = (0..=0xFFFFu16).flat_map(|v| v.to_le_bytes()).collect();
    let f32_in = rd("float_f32.in");
    let f64_in = rd("float_f64.in");
    let t = |name: &str, dtype: &'static str, data: Vec<u8>, w: usize| common::T {
        name: name.into(),
        dtype,
        shape: vec![data.len() / w],
        data,
    };
    write_safetensors(
        &src.join("model.safetensors"),
        &[
            t("h", "F16", f16_all, 2),
            t("s", "F32", f32_in, 4),
            t("d", "F64", f64_in, 8),
            common::T::new("ids", "I64", &[5], 1),
            common::T::new("mask", "BOOL", &[7], 2),
            common::T::new("b", "BF16", &[3, 3], 3),
        ],
    );
    let mnt = Mount::new(&src);
    for (name, golden) in [
        ("h", "float_f16_all.bf16"),
        ("s", "float_f32.bf16"),
        ("d", "float_f64.bf16"),
    ] {
        let (_, dtype, got) = bf16_of(&mnt, name);
        assert_eq!(dtype, "BF16");
        assert_eq!(u16s(&got), canonical(&rd(golden)), "{name}");
    }
    // Integers and booleans are kept; BF16 passes through unchanged.
    let source = source_tensors(&src);
    for name in ["ids", "mask", "b"] {
        let (shape, dtype, bytes) = bf16_of(&mnt, name);
        assert_eq!((dtype, shape, bytes), source[name].clone(), "{name}");
    }
}

#[test]
fn fp8_block_scaled_checkpoint_dequantizes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fp8");
    std::fs::create_dir(&src).unwrap();
    let rd = |f: &str| std::fs::read(data(&format!("quant/{f}"))).unwrap();
    let layer = |w: &str, s: &str, shape: &[usize], grid: &[usize]| {
        [
            common::T {
                name: format!("{w}.weight"),
                dtype: "F8_E4M3",
                shape: shape.to_vec(),
                data: rd(&format!("{s}.weight")),
            },
            common::T {
                name: format!("{w}.weight_scale_inv"),
                dtype: "F32",
                shape: grid.to_vec(),
                data: rd(&format!("{s}.scale_inv")),
            },
        ]
    };
    let mut ts: Vec<common::T> = layer(
        "model.layers.0.mlp.down_proj",
        "fp8_block_a",
        &[130, 260],
        &[2, 3],
    )
    .into();
    ts.push(common::T::new("model.norm.weight", "BF16", &[8], 1));
    write_safetensors(&src.join("model.safetensors"), &ts);
    std::fs::write(
        src.join("config.json"),
        r#"{"model_type": "deepseek_v3", "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}"#,
    )
    .unwrap();
    let mnt = Mount::new(&src);
    let (shape, dtype, got) = bf16_of(&mnt, "model.layers.0.mlp.down_proj.weight");
    assert_eq!((shape, dtype.as_str()), (vec![130, 260], "BF16"));
    assert_eq!(u16s(&got), canonical(&rd("fp8_block_a.bf16")));
    assert!(
        !mnt.join("bf16/tensors/model.layers.0.mlp.down_proj.weight_scale_inv.safetensors")
            .exists()
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("bf16/config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none());
    assert_eq!(config["model_type"], "deepseek_v3");
    // The raw view still pairs them.
    let md = read_st_metadata(
        &std::fs::read(
            mnt.join("raw/tensors/model.layers.0.mlp.down_proj.weight_scale_inv.safetensors"),
        )
        .unwrap(),
    );
    let rec: serde_json::Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
    let q = &rec["model.layers.0.mlp.down_proj.weight_scale_inv"]["quant"];
    assert_eq!(q["scheme"], "fp8_block");
    assert_eq!(q["role"], "scale_inv");
    assert_eq!(q["peer"], "model.layers.0.mlp.down_proj.weight");
}

#[test]
fn fp8_block_size_comes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fp8b");
    std::fs::create_dir(&src).unwrap();
    let rd = |f: &str| std::fs::read(data(&format!("quant/{f}"))).unwrap();
    write_safetensors(
        &src.join("model.safetensors"),
        &[
            common::T {
                name: "w.weight".into(),
                dtype: "F8_E4M3",
                shape: vec![37, 45],
                data: rd("fp8_block_b.weight"),
            },
            common::T {
                name: "w.weight_scale_inv".into(),
                dtype: "F32",
                shape: vec![5, 3],
                data: rd("fp8_block_b.scale_inv"),
            },
        ],
    );
    std::fs::write(
        src.join("config.json"),
        r#"{"quantization_config": {"quant_method": "fp8", "weight_block_size": [8, 16]}}"#,
    )
    .unwrap();
    let mnt = Mount::new(&src);
    let (_, _, got) = bf16_of(&mnt, "w.weight");
    assert_eq!(u16s(&got), canonical(&rd("fp8_block_b.bf16")));
}

/// `--dtype bf16,f16,f32`: three converted views of one source. The f32/
/// values (each format's exact float32, computed by the scalar kernels of
/// `quant::wide`) rounded to BF16 give the bf16/ view (computed by the SIMD
/// BF16 kernels) bit for bit, and rounded to F16 give the f16/ view; configs
/// name their dtype. (scripts/check_transformers.py checks all three views
/// against transformers' own float16 and float32 dequantization.)
#[test]
fn f16_and_f32_views_agree_with_bf16() {
    for src in [sample_hf(), sample_original()] {
        let m = Mount::with_args(&src, &["--dtype", "bf16,f16,f32"]);
        for (dir, name) in [("bf16", "bfloat16"), ("f16", "float16"), ("f32", "float32")] {
            let c: serde_json::Value = serde_json::from_slice(
                &std::fs::read(m.join(&format!("{dir}/config.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(c["dtype"], name);
            assert!(m.join(&format!("{dir}/experts/registry.json")).exists());
        }
        let shard = |dir: &str| {
            read_st(
                &std::fs::read(m.join(&format!("{dir}/model-00001-of-00001.safetensors"))).unwrap(),
            )
        };
        let (b, h, f) = (shard("bf16"), shard("f16"), shard("f32"));
        assert_eq!(b.keys().collect::<Vec<_>>(), f.keys().collect::<Vec<_>>());
        for (name, (dt32, shape, f32s)) in &f {
            let (dt16, s16, f16s) = &h[name];
            let (dtb, sb, bf) = &b[name];
            assert_eq!((shape, s16, sb), (shape, shape, shape), "{name}");
            if dt32 != "F32" {
                // Not a float: the same bytes in every view.
                assert_eq!((f32s, f16s), (bf, bf), "{name}");
                continue;
            }
            assert_eq!((dt16.as_str(), dtb.as_str()), ("F16", "BF16"), "{name}");
            for (i, c) in f32s.chunks_exact(4).enumerate() {
                let x = f32::from_le_bytes(c.try_into().unwrap());
                let want_b = if x.is_nan() {
                    0x7FC0
                } else {
                    half::bf16::from_f32(x).to_bits()
                };
                let want_h = if x.is_nan() {
                    0x7E00
                } else {
                    half::f16::from_f32(x).to_bits()
                };
                let got_b = u16::from_le_bytes([bf[2 * i], bf[2 * i + 1]]);
                let got_h = u16::from_le_bytes([f16s[2 * i], f16s[2 * i + 1]]);
                assert_eq!(got_b, want_b, "{name}[{i}] bf16 of {x:e}");
                assert_eq!(got_h, want_h, "{name}[{i}] f16 of {x:e}");
            }
        }
    }
}
