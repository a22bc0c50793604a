//! MLX quantized checkpoints (as mlx-lm saves them) through a real mount:
//! `bf16/` (and `f16/` where mlx's output dtype is float16) equal, byte for
//! byte, mlx's own `mx.dequantize` of every weight (the fixtures and their
//! references are made by scripts/make_quant_mlx.py with mlx itself);
//! `raw/` keeps the stored tensors; broken checkpoints leave the converted
//! views out with one line and never take the daemon down.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant/mlx")
        .join(case)
}

/// Every tensor of the converted view `dir` (through its index when
/// sharded, else its one model file).
fn view_model(mnt: &Mount, dir: &str) -> Tensors {
    let mut all = Tensors::new();
    let mut files: Vec<String> = std::fs::read_dir(mnt.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model") && n.ends_with(".safetensors"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{dir}/ has no model file");
    for f in files {
        let bytes = std::fs::read(mnt.join(&format!("{dir}/{f}"))).unwrap();
        all.extend(read_st(&bytes));
    }
    all
}

/// The checkpoint of a case, as mlx-lm saved it.
fn model(case: &str) -> PathBuf {
    fixture(case).join("model")
}

/// Its stored tensors.
fn stored(case: &str) -> Tensors {
    read_st(&std::fs::read(model(case).join("model.safetensors")).unwrap())
}

fn reference(case: &str, file: &str) -> Tensors {
    read_st(&std::fs::read(fixture(case).join(file)).unwrap())
}

fn assert_same(got: &Tensors, want: &Tensors, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the same tensor names"
    );
    for (name, w) in want {
        let g = &got[name];
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{what}: {name}: dtype/shape");
        if g.2 != w.2 {
            let first = g.2.iter().zip(&w.2).position(|(a, b)| a != b).unwrap();
            panic!("{what}: {name}: bytes differ from mlx's from byte {first}");
        }
    }
}

/// Mount `case` and check bf16/ (and f16/ if `f16`), config.json and raw/.
fn check_case(case: &str, f16: bool) {
    let src = model(case);
    let mnt = if f16 {
        Mount::with_args(&src, &["--dtype", "bf16,f16"])
    } else {
        Mount::new(&src)
    };
    assert_same(
        &view_model(&mnt, "bf16"),
        &reference(case, "reference.safetensors"),
        &format!("{case} bf16/"),
    );
    if f16 {
        assert_same(
            &view_model(&mnt, "f16"),
            &reference(case, "reference-f16.safetensors"),
            &format!("{case} f16/"),
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("bf16/config.json")).unwrap()).unwrap();
    assert!(config.get("quantization").is_none(), "{case}: {config}");
    assert!(config.get("quantization_config").is_none(), "{case}");
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["torch_dtype"], "bfloat16");

    // raw/ keeps every stored tensor, packed parts included, byte for byte
    let raw = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
    assert_same(&raw, &stored(case), &format!("{case} raw/"));
    let manifest = std::fs::read_to_string(mnt.join("manifest.json")).unwrap();
    assert!(!manifest.contains("not available"), "{case}: {manifest}");
}

#[test]
fn affine_4_bit_group_64_equals_mx_dequantize() {
    check_case("affine4_g64", false);
}

#[test]
fn affine_3_bit_float16_scales_equal_mx_dequantize_in_f16_and_bf16() {
    check_case("affine3_g32_f16", true);
}

#[test]
fn per_module_overrides_every_bit_width_and_unquantized_modules() {
    check_case("mixed", false);
    // o_proj is left unquantized by the override: it passes through
    let src = stored("mixed");
    let o = &src["model.layers.0.self_attn.o_proj.weight"];
    assert_eq!(o.0, "BF16");
    let mnt = Mount::new(&model("mixed"));
    let got = view_model(&mnt, "bf16");
    assert_eq!(got["model.layers.0.self_attn.o_proj.weight"], *o);
    assert_eq!(
        got["model.norm.weight"], src["model.norm.weight"],
        "norms pass through"
    );
}

#[test]
fn mxfp4_nvfp4_and_mxfp8_modes_equal_mx_dequantize() {
    for case in ["mxfp4", "nvfp4", "mxfp8"] {
        check_case(case, false);
    }
}

#[test]
fn the_gyro_header_records_the_dequantization() {
    let mnt = Mount::new(&model("mixed"));
    let bytes =
        std::fs::read(mnt.join("bf16/tensors/model.layers.0.mlp.down_proj.weight.safetensors"))
            .unwrap();
    let md = read_st_metadata(&bytes);
    let all = md.values().cloned().collect::<Vec<_>>().join("\n");
    for want in [
        r#""kind":"dequant""#,
        r#""params":{"bits":3,"group_size":128,"mode":"affine"}"#,
        r#""scheme":"mlx""#,
        r#""biases":"model.layers.0.mlp.down_proj.biases""#,
        r#""scales":"model.layers.0.mlp.down_proj.scales""#,
        r#""weight":"model.layers.0.mlp.down_proj.weight""#,
    ] {
        assert!(all.contains(want), "{want} not in {all}");
    }
}

/// A copy of `case` with its model file's tensors changed by `edit` and its
/// config by `config`.
fn broken(
    case: &str,
    edit: impl Fn(&mut Tensors),
    config: impl Fn(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut t = stored(case);
    edit(&mut t);
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| {
            let dtype = match d.as_str() {
                "U32" => safetensors::Dtype::U32,
                "BF16" => safetensors::Dtype::BF16,
                "F16" => safetensors::Dtype::F16,
                "U8" => safetensors::Dtype::U8,
                other => panic!("{other}"),
            };
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dir.path().join("model.safetensors"))
        .unwrap();
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model(case).join("config.json")).unwrap()).unwrap();
    config(&mut c);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    dir
}

/// Mount `src`: no bf16/, one manifest line naming `want`, raw/ intact.
fn assert_refused(src: &Path, want: &str) {
    let mnt = Mount::new(src);
    assert!(
        !mnt.join("bf16").exists(),
        "bf16/ must be left out ({want})"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join("manifest.json")).unwrap()).unwrap();
    let notes: Vec<&str> = manifest["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| n.contains("not available"))
        .collect();
    assert_eq!(notes.len(), 1, "{manifest}");
    assert!(!notes[0].contains('\n'), "one line: {}", notes[0]);
    assert!(
        notes[0].contains("mlx checkpoint") && notes[0].contains(want),
        "{want} not in {}",
        notes[0]
    );
    // raw/ is there, and reads
    let raw = read_st(&std::fs::read(mnt.join("raw/model.safetensors")).unwrap());
    assert!(!raw.is_empty());
}

#[test]
fn a_missing_part_leaves_bf16_out() {
    let src = broken(
        "affine4_g64",
        |t| {
            t.remove("model.layers.1.mlp.up_proj.scales");
        },
        |_| {},
    );
    assert_refused(
        src.path(),
        "model.layers.1.mlp.up_proj.weight: a packed U32 weight without model.layers.1.mlp.up_proj.scales",
    );
    let src = broken(
        "affine4_g64",
        |t| {
            t.remove("model.layers.0.self_attn.q_proj.biases");
        },
        |_| {},
    );
    assert_refused(
        src.path(),
        "model.layers.0.self_attn.q_proj.biases is missing",
    );
}

#[test]
fn a_wrong_shape_leaves_bf16_out() {
    let src = broken(
        "affine4_g64",
        |t| {
            let s = t.get_mut("model.layers.0.mlp.gate_proj.scales").unwrap();
            // [128, 1] -> [64, 2]: same bytes, wrong shape
            s.1 = vec![s.1[0] / 2, s.1[1] * 2];
        },
        |_| {},
    );
    assert_refused(
        src.path(),
        "model.layers.0.mlp.gate_proj.weight: the scales have shape [64, 2], expected [128, 1]",
    );
}

#[test]
fn an_unsupported_bit_width_or_mode_leaves_bf16_out() {
    let src = broken(
        "affine4_g64",
        |_| {},
        |c| c["quantization"]["bits"] = 7.into(),
    );
    assert_refused(src.path(), "7-bit affine quantization is not supported");
    let src = broken(
        "affine4_g64",
        |_| {},
        |c| c["quantization"]["mode"] = "fp3".into(),
    );
    assert_refused(src.path(), "mode 'fp3'");
    // the config's bits disagree with the stored shapes
    let src = broken(
        "affine4_g64",
        |_| {},
        |c| c["quantization"]["bits"] = 8.into(),
    );
    assert_refused(src.path(), "rows of 32 elements are not whole groups of 64");
}

type EditConfig = dyn Fn(&mut serde_json::Value);
type EditTensors = dyn Fn(&mut Tensors);

/// Hostile configs and shapes: each mounts (raw/ at least), every file of
/// the mount reads, and the daemon stays up; none panics.
#[test]
fn hostile_configs_and_shapes_never_panic() {
    let configs: Vec<Box<EditConfig>> = vec![
        Box::new(|_| {}),
        Box::new(|c| c["quantization"]["bits"] = (-1).into()),
        Box::new(|c| c["quantization"]["bits"] = 1e30.into()),
        Box::new(|c| c["quantization"]["group_size"] = 0.into()),
        Box::new(|c| c["quantization"]["group_size"] = u64::MAX.into()),
        Box::new(|c| c["quantization"] = serde_json::json!([4, 64])),
        Box::new(|c| c["quantization"]["lm_head"] = "yes".into()),
        Box::new(|c| c["quantization"]["lm_head"] = serde_json::json!({"bits": null, "mode": 3})),
        Box::new(|c| c["quantization"]["model.embed_tokens"] = false.into()),
    ];
    let shapes: Vec<Box<EditTensors>> = vec![
        Box::new(|_| {}),
        // an empty packed weight: zero rows
        Box::new(|t| {
            for part in ["weight", "scales", "biases"] {
                let e = t.get_mut(&format!("lm_head.{part}")).unwrap();
                e.1[0] = 0;
                e.2.clear();
            }
        }),
        // scales as U32 (4 bytes per element, the same bytes count as 2 BF16 per row)
        Box::new(|t| {
            let e = t.get_mut("lm_head.scales").unwrap();
            e.0 = "U32".into();
            e.1 = vec![e.1[0] / 2, e.1[1]];
        }),
        // a one-axis packed weight
        Box::new(|t| {
            let e = t.get_mut("lm_head.weight").unwrap();
            e.1 = vec![e.1[0] * e.1[1]];
        }),
    ];
    for (i, config) in configs.iter().enumerate() {
        for (j, shape) in shapes.iter().enumerate() {
            // each hostile config with good tensors, each hostile shape with the good config
            if i > 0 && j > 0 {
                continue;
            }
            let src = broken("affine4_g64", shape, config);
            let mnt = Mount::new(src.path());
            for f in walk(&mnt.path) {
                std::fs::read(mnt.join(&f)).unwrap_or_else(|e| panic!("{i}/{j}: {f}: {e}"));
            }
            assert!(mnt.join("raw/model.safetensors").exists(), "{i}/{j}");
            assert!(is_mounted(&mnt.path), "{i}/{j}: the daemon went away");
        }
    }
}
