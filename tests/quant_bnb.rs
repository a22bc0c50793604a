//! bitsandbytes checkpoints (4-bit NF4 / FP4, nested or not, and
//! LLM.int8()) through a real mount: `bf16/` (and `f16/`, `f32/`) equal the
//! library's own dequantization bit for bit (tests/data/quant/bnb, written
//! by scripts/make_quant_bnb.py), `raw/` keeps the stored tensors, and a
//! checkpoint that does not check out leaves the converted views out with
//! one line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant/bnb")
        .join(name)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every tensor of MNT/<dir>, through its index.
fn model(mnt: &Mount, dir: &str) -> Tensors {
    let index: serde_json::Value = serde_json::from_slice(&read(
        &mnt.join(&format!("{dir}/model.safetensors.index.json")),
    ))
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
        all.extend(read_st(&read(&mnt.join(&format!("{dir}/{s}")))));
    }
    all
}

#[track_caller]
fn assert_same(what: &str, got: &Tensors, want: &Tensors) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: tensor names"
    );
    for (name, w) in want {
        let g = &got[name];
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{what}: {name}: dtype/shape");
        if g.2 != w.2 {
            let diff = g.2.iter().zip(&w.2).position(|(a, b)| a != b).unwrap();
            panic!("{what}: {name}: bytes differ from the library's (first at byte {diff})");
        }
    }
}

fn manifest(mnt: &Mount) -> serde_json::Value {
    serde_json::from_slice(&read(&mnt.join("manifest.json"))).unwrap()
}

/// Mount `case`; bf16/ equals reference.safetensors, its config has no
/// quantization config, raw/ is the stored checkpoint; returns the mount.
fn check_case(name: &str, dtypes: &str) -> Mount {
    let src = case(name);
    let mnt = Mount::with_args(&src, &["--dtype", dtypes]);
    let want = read_st(&read(&src.join("golden/reference.safetensors")));
    let got = model(&mnt, "bf16");
    assert_same(&format!("{name} bf16/"), &got, &want);

    let config: serde_json::Value =
        serde_json::from_slice(&read(&mnt.join("bf16/config.json"))).unwrap();
    assert!(config.get("quantization_config").is_none(), "{name}");
    assert_eq!(config["model_type"], "llama");

    // raw/ keeps every stored tensor (parts, quant_state JSON and all)
    let stored = source_tensors(&src);
    let raw = read_st(&read(&mnt.join("raw/model.safetensors")));
    assert_same(&format!("{name} raw/"), &raw, &stored);

    // the record of a dequantized weight names the scheme and its parts
    let q = "model.layers.0.self_attn.q_proj.weight";
    let one = read(&mnt.join(&format!("bf16/tensors/{q}.safetensors")));
    let md = read_st_metadata(&one);
    let record = md.values().find(|v| v.contains("\"dequant\"")).cloned();
    let record = record.unwrap_or_else(|| panic!("{name}: no dequant record in {md:?}"));
    assert!(record.contains("\"scheme\":\"bitsandbytes\""), "{record}");
    assert!(
        manifest(&mnt)["notes"]
            .to_string()
            .find("not available")
            .is_none()
    );
    mnt
}

#[test]
fn nf4_with_skipped_modules_equals_dequantize_4bit() {
    let mnt = check_case("nf4", "bf16");
    // down_proj and lm_head are in llm_int8_skip_modules: stored in BF16,
    // passed through as they are
    let stored = source_tensors(&case("nf4"));
    let got = model(&mnt, "bf16");
    for name in ["model.layers.1.mlp.down_proj.weight", "lm_head.weight"] {
        assert_eq!(stored[name].0, "BF16");
        assert_eq!(got[name], stored[name], "{name} passes through");
    }
    let record = read_st_metadata(&read(
        &mnt.join("bf16/tensors/model.layers.0.self_attn.q_proj.weight.safetensors"),
    ))
    .into_values()
    .find(|v| v.contains("\"dequant\""))
    .unwrap();
    for part in [
        "\"absmax\":",
        "\"quant_map\":",
        "\"quant_state\":",
        "\"blocksize\":64",
    ] {
        assert!(record.contains(part), "{part} in {record}");
    }
}

#[test]
fn nf4_nested_equals_dequantize_4bit() {
    // 288 blocks: two nested blocks of 256, the second partial
    let mnt = check_case("nf4_nested", "bf16");
    let record = read_st_metadata(&read(
        &mnt.join("bf16/tensors/model.layers.0.mlp.up_proj.weight.safetensors"),
    ))
    .into_values()
    .find(|v| v.contains("\"dequant\""))
    .unwrap();
    assert!(record.contains("\"nested_absmax\":"), "{record}");
    assert!(record.contains("\"nested_offset\":"), "{record}");
}

#[test]
fn nf4_nested_blocksize_128_equals_dequantize_4bit() {
    check_case("nf4_nested_b128", "bf16");
}

#[test]
fn nf4_stored_as_bfloat16_elements_equals_dequantize_4bit() {
    let stored = source_tensors(&case("nf4_storage_bf16"));
    assert_eq!(stored["model.layers.0.self_attn.q_proj.weight"].0, "BF16");
    check_case("nf4_storage_bf16", "bf16");
}

#[test]
fn fp4_float32_equals_dequantize_4bit_cast_to_bf16() {
    check_case("fp4_f32", "bf16");
}

#[test]
fn fp4_odd_last_dimension_equals_the_librarys_generic_path() {
    check_case("fp4_odd", "bf16");
}

#[test]
fn fp4_nested_float16_equals_dequantize_4bit_in_f16_and_bf16() {
    let mnt = check_case("fp4_nested_f16", "bf16,f16");
    let want = read_st(&read(
        &case("fp4_nested_f16").join("golden/reference_f16.safetensors"),
    ));
    assert_same("fp4_nested_f16 f16/", &model(&mnt, "f16"), &want);
}

#[test]
fn int8_equals_int8_vectorwise_dequant() {
    let mnt = check_case("int8", "bf16,f32");
    // float32: the library's output exactly
    let want = read_st(&read(
        &case("int8").join("golden/reference_f32.safetensors"),
    ));
    let got = model(&mnt, "f32");
    let got: Tensors = got
        .into_iter()
        .filter(|(k, _)| want.contains_key(k))
        .collect();
    assert_same("int8 f32/", &got, &want);
    // o_proj is in llm_int8_skip_modules
    let stored = source_tensors(&case("int8"));
    assert_eq!(stored["model.layers.0.self_attn.o_proj.weight"].0, "BF16");
    assert!(!stored.contains_key("model.layers.0.self_attn.o_proj.SCB"));
}

// ---- checkpoints that do not check out ----

/// A copy of `name` with its tensors changed by `edit` (and its config by
/// `config`), mounted; bf16/ must be left out with one line naming `why`.
fn refused(
    name: &str,
    edit: impl FnOnce(&mut Tensors),
    config: impl FnOnce(&mut serde_json::Value),
    why: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(name);
    std::fs::create_dir(&src).unwrap();
    let mut tensors = source_tensors(&case(name));
    edit(&mut tensors);
    let ts: Vec<T> = tensors
        .into_iter()
        .map(|(name, (dtype, shape, data))| T {
            name,
            dtype: Box::leak(dtype.into_boxed_str()),
            shape,
            data,
        })
        .collect();
    write_safetensors(&src.join("model.safetensors"), &ts);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&read(&case(name).join("config.json"))).unwrap();
    config(&mut cfg);
    std::fs::write(src.join("config.json"), cfg.to_string()).unwrap();

    let mnt = Mount::new(&src);
    assert!(!mnt.join("bf16").exists(), "{why}: bf16/ must be left out");
    assert!(mnt.join("raw/model.safetensors").exists());
    let notes: Vec<String> = manifest(&mnt)["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .filter(|n| n.contains("bitsandbytes checkpoint"))
        .collect();
    assert_eq!(notes.len(), 1, "one line: {notes:?}");
    assert!(!notes[0].contains('\n'), "{notes:?}");
    assert!(notes[0].contains(why), "{why} in {notes:?}");
    let log = std::fs::read_to_string(&mnt.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

const Q: &str = "model.layers.0.self_attn.q_proj.weight";

fn set_state(t: &mut Tensors, key: &str, state: &str) {
    let s = t.get_mut(key).unwrap();
    s.1 = vec![state.len()];
    s.2 = state.as_bytes().to_vec();
}

#[test]
fn a_missing_part_leaves_bf16_out() {
    refused(
        "nf4",
        |t| {
            t.remove(&format!("{Q}.absmax"));
        },
        |_| {},
        &format!("{Q}.absmax is missing"),
    );
    refused(
        "nf4_nested",
        |t| {
            t.remove(&format!("{Q}.nested_quant_map"));
        },
        |_| {},
        &format!("{Q}.nested_quant_map is missing"),
    );
    // a part without its quant_state
    refused(
        "nf4",
        |t| {
            t.remove(&format!("{Q}.quant_state.bitsandbytes__nf4"));
        },
        |_| {},
        "is stored without the rest of its weight",
    );
    refused(
        "int8",
        |t| {
            t.remove(Q);
        },
        |_| {},
        &format!("{Q} is missing"),
    );
}

#[test]
fn a_wrong_shape_leaves_bf16_out() {
    refused(
        "nf4",
        |t| {
            let a = t.get_mut(&format!("{Q}.absmax")).unwrap();
            a.1 = vec![a.1[0] - 1];
            a.2.truncate(a.2.len() - 4);
        },
        |_| {},
        "expected F32",
    );
    // the quant_state's shape does not fit the packed bytes
    refused(
        "nf4",
        |t| {
            let key = format!("{Q}.quant_state.bitsandbytes__nf4");
            let s = String::from_utf8(t[&key].2.clone()).unwrap();
            set_state(t, &key, &s.replace("[32, 32]", "[32, 34]"));
        },
        |_| {},
        &format!("{Q} is U8"),
    );
    refused(
        "int8",
        |t| {
            let s = t.get_mut("model.layers.0.mlp.up_proj.SCB").unwrap();
            s.1 = vec![3];
            s.2.truncate(12);
        },
        |_| {},
        "model.layers.0.mlp.up_proj.SCB is F32 [3]",
    );
}

#[test]
fn an_unsupported_configuration_leaves_bf16_out() {
    let key = format!("{Q}.quant_state.bitsandbytes__nf4");
    let k2 = key.clone();
    refused(
        "nf4",
        move |t| {
            let s = String::from_utf8(t[&k2].2.clone()).unwrap();
            set_state(t, &k2, &s.replace("\"blocksize\": 64", "\"blocksize\": 48"));
        },
        |_| {},
        "blocksize 48 is not one of",
    );
    refused(
        "nf4",
        |_| {},
        |c| c["quantization_config"]["bnb_4bit_quant_storage"] = "float64".into(),
        "bnb_4bit_quant_storage \"float64\" is not supported",
    );
    refused(
        "nf4",
        |_| {},
        |c| c["quantization_config"]["load_in_4bit"] = false.into(),
        "neither load_in_4bit nor load_in_8bit",
    );
    refused(
        "nf4",
        |t| {
            let v = t
                .remove(&format!("{Q}.quant_state.bitsandbytes__nf4"))
                .unwrap();
            t.insert(format!("{Q}.quant_state.bitsandbytes__int2"), v);
        },
        |_| {},
        "quant type 'int2' is not nf4 or fp4",
    );
    refused(
        "nf4_nested",
        move |t| {
            let s = String::from_utf8(t[&key].2.clone()).unwrap();
            set_state(
                t,
                &key,
                &s.replace(
                    "\"nested_dtype\": \"float32\"",
                    "\"nested_dtype\": \"bfloat16\"",
                ),
            );
        },
        |_| {},
        "nested_dtype \"bfloat16\" is not supported",
    );
    refused(
        "int8",
        |t| {
            t.get_mut("model.layers.1.mlp.gate_proj.weight_format")
                .unwrap()
                .2 = vec![1]
        },
        |_| {},
        "weight_format is 1",
    );
}

#[test]
fn a_hostile_quant_state_is_refused_in_one_line() {
    let key = format!("{Q}.quant_state.bitsandbytes__nf4");
    for (state, why) in [
        (
            "{\"quant_type\": \"nf4\", \"blocksize\"",
            "does not hold JSON",
        ),
        ("\u{1}\u{2}\u{3}", "does not hold JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        (
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [4294967296, 4294967296]}",
            "empty or too large",
        ),
        (
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [-1, 32]}",
            "shape is not a list of sizes",
        ),
        (
            "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [32, 32]}",
            "does not match",
        ),
        (
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [32, 32]}",
            "is not bfloat16, float16 or float32",
        ),
        (
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [32, 32], \"evil\": 1}",
            "unknown key 'evil'",
        ),
        (
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [32, 32], \"nested_offset\": 1}",
            "go together",
        ),
    ] {
        let k = key.clone();
        refused("nf4", move |t| set_state(t, &k, state), |_| {}, why);
    }
}
