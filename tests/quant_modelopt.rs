//! NVIDIA ModelOpt NVFP4 / FP8 checkpoints (`export_hf_checkpoint`, made on
//! CPU by scripts/make_quant_modelopt.py) through a real mount: `bf16/`
//! equals ModelOpt's own dequantization byte for byte, whether the format
//! is named by config.json's `quantization_config` or only by
//! `hf_quant_config.json`; a checkpoint that does not check out leaves the
//! converted views out with one line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant/modelopt")
        .join(name)
}

fn bf16_model(mnt: &Mount) -> Tensors {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mnt.join("bf16/model.safetensors.index.json")).unwrap(),
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
            &std::fs::read(mnt.join(&format!("bf16/{s}"))).unwrap(),
        ));
    }
    all
}

#[test]
fn bf16_equals_modelopt_dequantization() {
    for name in ["fp8", "nvfp4", "nvfp4_side_file"] {
        let src = case(name).join("model");
        let want = read_st(&std::fs::read(case(name).join("reference.safetensors")).unwrap());
        let stored = source_tensors(&src);
        let mnt = Mount::new(&src);
        let got = bf16_model(&mnt);
        for (n, w) in &want {
            let g = got
                .get(n)
                .unwrap_or_else(|| panic!("{name}: no {n} in bf16/"));
            assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{name}: {n}");
            assert!(g.2 == w.2, "{name}: {n}: values differ from ModelOpt");
        }
        for (n, g) in &got {
            assert!(
                !n.ends_with("_scale") && !n.ends_with("_scale_2"),
                "{name}: {n} is in bf16/"
            );
            if !want.contains_key(n) {
                assert!(g == &stored[n], "{name}: {n} is not passed through");
            }
        }
        assert!(got.contains_key("lm_head.weight"));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(mnt.join("bf16/config.json")).unwrap()).unwrap();
        assert!(config.get("quantization_config").is_none(), "{name}");
        assert!(!mnt.join("bf16/hf_quant_config.json").exists(), "{name}");
        let raw = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
        for (n, s) in &stored {
            assert!(raw.get(n) == Some(s), "{name}: raw/ {n}");
        }
        let any = want.keys().next().unwrap();
        let md = read_st_metadata(
            &std::fs::read(mnt.join(&format!("bf16/tensors/{any}.safetensors"))).unwrap(),
        );
        let tensors: serde_json::Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
        let t = &tensors[any.as_str()]["transform"];
        assert_eq!(t["kind"], "dequant", "{name}: {t}");
        assert_eq!(t["scheme"], "modelopt", "{name}: {t}");
    }
}

/// A copy of the `nvfp4_side_file` case (only hf_quant_config.json) with
/// `edit` applied to its tensors and `side` to hf_quant_config.json.
fn broken(
    edit: impl FnOnce(&mut Tensors),
    side: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = case("nvfp4_side_file").join("model");
    let mut tensors = source_tensors(&src);
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            let dtype = match d.as_str() {
                "BF16" => safetensors::Dtype::BF16,
                "F32" => safetensors::Dtype::F32,
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
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut q: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("hf_quant_config.json")).unwrap()).unwrap();
    side(&mut q);
    std::fs::write(dir.path().join("hf_quant_config.json"), q.to_string()).unwrap();
    dir
}

fn assert_refused(dir: &Path, says: &str) {
    let mnt = Mount::new(dir);
    assert!(!mnt.join("bf16").exists(), "bf16/ is there");
    assert!(mnt.join("raw/model.safetensors").exists());
    let manifest = std::fs::read_to_string(mnt.join("manifest.json")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.contains("modelopt checkpoint:"))
        .unwrap_or_else(|| panic!("no note in {manifest}"));
    assert!(line.contains(says), "{line}");
}

#[test]
fn a_checkpoint_that_does_not_check_out_leaves_bf16_out() {
    let q = "model.layers.0.self_attn.q_proj";
    let d = broken(|t| drop(t.remove(&format!("{q}.weight_scale_2"))), |_| {});
    assert_refused(
        d.path(),
        "no model.layers.0.self_attn.q_proj.weight_scale_2",
    );
    let d = broken(
        |t| t.get_mut(&format!("{q}.weight_scale")).unwrap().1 = vec![32, 8],
        |_| {},
    );
    assert_refused(d.path(), "has shape [32, 8], expected [64, 4]");
    let d = broken(
        |_| {},
        |c| c["quantization"]["quant_algo"] = "W4A8_AWQ".into(),
    );
    assert_refused(d.path(), "quant_algo 'W4A8_AWQ' is not supported");
    let d = broken(|_| {}, |c| c["quantization"]["group_size"] = 32.into());
    assert_refused(d.path(), "NVFP4 group_size 32 is not supported");
    let d = broken(
        |_| {},
        |c| c["quantization"]["exclude_modules"] = serde_json::json!(["lm_head", "*q_proj"]),
    );
    assert_refused(d.path(), "is on exclude_modules but stored quantized");
}
