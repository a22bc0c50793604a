//! compressed-tensors checkpoints through a real mount: `bf16/` equals
//! compressed-tensors' own decompression byte for byte (golden files made
//! by scripts/make_quant_compressed_tensors.py with the library itself),
//! `f16/` is its exact cast, `raw/` keeps the stored tensors, and a
//! checkpoint that does not check out leaves the converted views out with
//! one line, never wrong numbers.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

const CASES: &[&str] = &[
    "fp8",
    "mxfp4",
    "mxfp6",
    "mxfp8",
    "naive_int8",
    "nvfp4",
    "w4_asym_mixed",
    "w4_block",
    "w4a16_group",
    "w8_mixed",
    "w8a8_int",
];

/// Suffixes of the stored parts of a quantized weight.
const PARTS: &[&str] = &[
    ".weight_packed",
    ".weight_scale",
    ".weight_zero_point",
    ".weight_g_idx",
    ".weight_global_scale",
    ".weight_shape",
    ".input_scale",
    ".input_zero_point",
    ".input_global_scale",
];

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant/compressed_tensors")
        .join(name)
}

/// Every tensor of MNT/VIEW, through its index.
fn model(mnt: &Mount, view: &str) -> Tensors {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mnt.join(&format!("{view}/model.safetensors.index.json"))).unwrap(),
    )
    .unwrap();
    let mut shards: Vec<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    shards.sort();
    shards.dedup();
    let mut all = Tensors::new();
    for s in shards {
        all.extend(read_st(
            &std::fs::read(mnt.join(&format!("{view}/{s}"))).unwrap(),
        ));
    }
    all
}

fn check_case(name: &str) {
    let src = case(name).join("model");
    let want = read_st(&std::fs::read(case(name).join("reference.safetensors")).unwrap());
    let stored = source_tensors(&src);
    let mnt = Mount::new(&src);
    let got = model(&mnt, "bf16");
    for (n, w) in &want {
        let g = got
            .get(n)
            .unwrap_or_else(|| panic!("{name}: {n} is not in bf16/"));
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{name}: {n}: dtype/shape");
        assert!(
            g.2 == w.2,
            "{name}: {n}: values differ from compressed-tensors"
        );
    }
    // everything else passes through unchanged; no part is left in bf16/
    for (n, g) in &got {
        assert!(
            !PARTS.iter().any(|p| n.ends_with(p)),
            "{name}: {n} is in bf16/"
        );
        if !want.contains_key(n) {
            let s = &stored[n];
            assert_eq!(s.0, "BF16", "{name}: {n}");
            assert!(g == s, "{name}: {n} is not passed through");
        }
    }
    assert!(
        got.contains_key("lm_head.weight"),
        "{name}: the ignored lm_head"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("bf16/config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none(), "{name}");
    assert_eq!(config["model_type"], "llama");
    // raw/ keeps the stored tensors
    let raw = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
    for (n, s) in &stored {
        assert!(raw.get(n) == Some(s), "{name}: raw/ {n}");
    }
    // the Gyro header records the dequantization
    let any = want.keys().next().unwrap();
    let shard = std::fs::read(mnt.join(&format!("bf16/tensors/{any}.safetensors"))).unwrap();
    let md = read_st_metadata(&shard);
    let tensors: serde_json::Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
    let t = &tensors[any.as_str()]["transform"];
    assert_eq!(t["kind"], "dequant", "{name}: {t}");
    assert_eq!(t["scheme"], "compressed-tensors", "{name}: {t}");
}

#[test]
fn bf16_equals_compressed_tensors_decompression() {
    for name in CASES {
        check_case(name);
    }
}

#[test]
fn f16_is_the_exact_cast_of_the_library_output() {
    let name = "w4a16_group";
    let src = case(name).join("model");
    let want = read_st(&std::fs::read(case(name).join("reference.safetensors")).unwrap());
    let mnt = Mount::with_args(&src, &["--dtype", "bf16,f16"]);
    let got = model(&mnt, "f16");
    for (n, w) in &want {
        let g = &got[n];
        assert_eq!(g.0, "F16");
        let cast: Vec<u8> =
            w.2.chunks_exact(2)
                .flat_map(|b| {
                    let x = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                    half::f16::from_f32(x).to_le_bytes()
                })
                .collect();
        assert!(
            g.2 == cast,
            "{n}: f16/ is not the cast of the library's BF16"
        );
    }
}

/// A copy of `name`'s checkpoint with `edit` applied to its tensors and
/// `config` to its config.json.
fn broken(
    name: &str,
    edit: impl FnOnce(&mut Tensors),
    config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = case(name).join("model");
    let mut tensors = source_tensors(&src);
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            let dtype = match d.as_str() {
                "BF16" => safetensors::Dtype::BF16,
                "F32" => safetensors::Dtype::F32,
                "I32" => safetensors::Dtype::I32,
                "I64" => safetensors::Dtype::I64,
                "I8" => safetensors::Dtype::I8,
                "U8" => safetensors::Dtype::U8,
                "F8_E4M3" => safetensors::Dtype::F8_E4M3,
                other => panic!("{other}"),
            };
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config(&mut c);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    dir
}

fn assert_refused(dir: &Path, says: &str) {
    let mnt = Mount::new(dir);
    assert!(!mnt.join("bf16").exists(), "bf16/ is there");
    assert!(mnt.join("raw/model.safetensors").exists());
    let manifest = std::fs::read_to_string(mnt.join("manifest.json")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.contains("compressed-tensors checkpoint:"))
        .unwrap_or_else(|| panic!("no note in {manifest}"));
    assert!(line.contains(says), "{line}");
}

#[test]
fn a_checkpoint_that_does_not_check_out_leaves_bf16_out() {
    let q = "model.layers.0.self_attn.q_proj";
    // a part missing
    let d = broken(
        "w4a16_group",
        |t| {
            t.remove(&format!("{q}.weight_scale"));
        },
        |_| {},
    );
    assert_refused(d.path(), "belongs to no quantized weight");
    let d = broken(
        "w4_asym_mixed",
        |t| {
            t.remove(&format!("{q}.weight_zero_point"));
        },
        |_| {},
    );
    assert_refused(
        d.path(),
        "no model.layers.0.self_attn.q_proj.weight_zero_point",
    );
    // a wrong shape
    let d = broken(
        "w4a16_group",
        |t| {
            let s = t.get_mut(&format!("{q}.weight_scale")).unwrap();
            s.1 = vec![32, 4];
        },
        |_| {},
    );
    assert_refused(d.path(), "has shape [32, 4], expected [64, 2]");
    // weight_shape that does not fit the packed codes
    let d = broken(
        "w4a16_group",
        |t| {
            let s = t.get_mut(&format!("{q}.weight_shape")).unwrap();
            s.2 = [64i64, 72].iter().flat_map(|v| v.to_le_bytes()).collect();
        },
        |_| {},
    );
    assert_refused(d.path(), "does not fit a weight [64, 72]");
    // an unsupported bit width, strategy, format
    let d = broken(
        "w4a16_group",
        |_| {},
        |c| c["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 3.into(),
    );
    assert_refused(
        d.path(),
        "3-bit int weights in format pack-quantized are not supported",
    );
    let d = broken(
        "w4a16_group",
        |_| {},
        |c| {
            c["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] =
                "token".into()
        },
    );
    assert_refused(d.path(), "strategy 'token' is not supported");
    let d = broken(
        "w4a16_group",
        |_| {},
        |c| {
            c["quantization_config"]["config_groups"]["group_0"]["format"] = "marlin-24".into();
        },
    );
    assert_refused(d.path(), "format 'marlin-24' is not supported");
    // a module on the ignore list stored quantized
    let d = broken(
        "w4a16_group",
        |_| {},
        |c| c["quantization_config"]["ignore"] = serde_json::json!(["lm_head", q]),
    );
    assert_refused(d.path(), "is on the ignore list but stored quantized");
}

/// `weight_g_idx` (activation order): each column takes its group's scale;
/// a group index outside the scales is a read error (EIO) on that tensor
/// only, never a panic, and the mount goes on serving.
#[test]
fn g_idx_columns_and_a_hostile_g_idx() {
    let q = "model.layers.0.self_attn.q_proj";
    let want = read_st(&std::fs::read(case("w4a16_group").join("reference.safetensors")).unwrap());
    let idx = |v: &[i32]| -> (String, Vec<usize>, Vec<u8>) {
        (
            "I32".into(),
            vec![64],
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    };
    // g_idx that names each column's own group: the same weight as groups of 32
    let same: Vec<i32> = (0..64).map(|c| c / 32).collect();
    let d = broken(
        "w4a16_group",
        |t| drop(t.insert(format!("{q}.weight_g_idx"), idx(&same))),
        |_| {},
    );
    let mnt = Mount::new(d.path());
    let got = model(&mnt, "bf16");
    assert!(got[&format!("{q}.weight")] == want[&format!("{q}.weight")]);
    drop(mnt);
    // swapped groups: column c takes the other group's scale
    let swapped: Vec<i32> = (0..64).map(|c| 1 - c / 32).collect();
    let d = broken(
        "w4a16_group",
        |t| drop(t.insert(format!("{q}.weight_g_idx"), idx(&swapped))),
        |_| {},
    );
    let mnt = Mount::new(d.path());
    let got = model(&mnt, "bf16");
    assert!(got[&format!("{q}.weight")] != want[&format!("{q}.weight")]);
    drop(mnt);
    // out of range
    let mut bad = same.clone();
    bad[40] = 7;
    let d = broken(
        "w4a16_group",
        |t| drop(t.insert(format!("{q}.weight_g_idx"), idx(&bad))),
        |_| {},
    );
    let mnt = Mount::new(d.path());
    let err = std::fs::read(mnt.join(&format!("bf16/tensors/{q}.weight.safetensors"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let k = "model.layers.0.self_attn.k_proj.weight";
    let ok = read_st(&std::fs::read(mnt.join(&format!("bf16/tensors/{k}.safetensors"))).unwrap());
    assert!(ok[k] == want[k]);
}

/// MX checkpoints (`mxfp4-pack-quantized`, `mxfp6-pack-quantized`,
/// `mxfp8-quantized`) that do not check out: scales that are not U8 E8M0
/// exponents, a strategy the format does not write, a bit width the format
/// does not have.
#[test]
fn an_mx_checkpoint_that_does_not_check_out_leaves_bf16_out() {
    let q = "model.layers.0.self_attn.q_proj";
    for name in ["mxfp4", "mxfp6", "mxfp8"] {
        let d = broken(
            name,
            |t| t.get_mut(&format!("{q}.weight_scale")).unwrap().0 = "I8".into(),
            |_| {},
        );
        assert_refused(d.path(), &format!("{q}.weight_scale is I8, expected U8"));
        let d = broken(
            name,
            |_| {},
            |c| {
                c["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] =
                    "channel".into()
            },
        );
        assert_refused(d.path(), "strategy channel with mx");
    }
    // MXFP4 codes called MXFP6: the bit width, then the packed rows
    let d = broken(
        "mxfp4",
        |_| {},
        |c| {
            c["quantization_config"]["config_groups"]["group_0"]["format"] =
                "mxfp6-pack-quantized".into()
        },
    );
    assert_refused(
        d.path(),
        "4-bit float weights in format mxfp6-pack-quantized are not supported",
    );
    let d = broken(
        "mxfp4",
        |_| {},
        |c| {
            let g = &mut c["quantization_config"]["config_groups"]["group_0"];
            g["format"] = "mxfp6-pack-quantized".into();
            g["weights"]["num_bits"] = 6.into();
        },
    );
    assert_refused(d.path(), "has 64 bytes per row, not a multiple of 3");
}
