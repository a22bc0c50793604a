//! GGUF -> Hugging Face mapping (`view::hf::gguf`) against what transformers
//! itself makes of GGUF files written by llama.cpp's converter
//! (tests/data/gguf-models/, made by scripts/make_gguf_models.py): config,
//! tokenizer files, state-dict names and shapes, and every tensor's values
//! bit for bit (each op's reference on the f32 dequantization, rounded once
//! to BF16).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gyrofs::quant::bf16;
use gyrofs::quant::ggml::dequantize_f32;
use gyrofs::source::gguf::{GgufHeader, parse_data};
use gyrofs::view::hf::gguf::{GgufTensorInfo, HfModel, Input, map};
use serde_json::{Map, Value};

/// The fixtures, or another folder made by scripts/make_gguf_models.py
/// (`GYROFS_GGUF_MODELS`: the type matrix).
fn dir() -> PathBuf {
    match std::env::var_os("GYROFS_GGUF_MODELS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf-models"),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 16,
        "expected the fixture GGUF files, found {}",
        v.len()
    );
    v
}

fn arch_of(path: &Path) -> String {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    stem.rsplit_once('-').unwrap().0.to_string()
}

fn load(path: &Path) -> (Vec<u8>, GgufHeader, HfModel) {
    let data = std::fs::read(path).unwrap();
    let header = parse_data(path, &data).unwrap();
    let infos: Vec<GgufTensorInfo> = header
        .tensors
        .iter()
        .map(|t| GgufTensorInfo {
            name: t.name.clone(),
            shape: t.shape(),
            ty: t.ggml_type,
        })
        .collect();
    let model = map(&header.metadata, &infos).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (data, header, model)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// JSON equality with every number compared as f64 (Python writes 1e-06
/// where serde_json may hold 0.000001, and ints where a value is integral).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn diff(what: &str, a: &Value, b: &Value) -> String {
    if let (Value::Object(x), Value::Object(y)) = (a, b) {
        let mut out = String::new();
        for k in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
            match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) if same(p, q) => {}
                (p, q) => {
                    let s = |v: Option<&Value>| {
                        v.map(|v| v.to_string().chars().take(300).collect::<String>())
                    };
                    out += &format!("{what}.{k}: gyrofs {:?} / transformers {:?}\n", s(p), s(q));
                }
            }
        }
        out
    } else {
        format!("{what}: differs")
    }
}

#[test]
fn config_matches_transformers() {
    let mut failures = String::new();
    for path in fixtures() {
        let (_, _, model) = load(&path);
        let golden = read_json(&dir().join(format!("{}.config.json", arch_of(&path))));
        let mut want: Map<String, Value> = golden["gguf"].as_object().unwrap().clone();
        want.remove("_model_name_or_path");
        if let Some(fixes) = golden.get("fixes").and_then(Value::as_object) {
            want.extend(fixes.clone());
        }
        let mut got = model.config.as_object().unwrap().clone();
        let archs = got.remove("architectures");
        assert!(
            matches!(archs, Some(Value::Array(ref a)) if a.len() == 1),
            "{}: architectures",
            path.display()
        );
        if !same(&Value::Object(got.clone()), &Value::Object(want.clone())) {
            failures += &format!(
                "{}:\n{}",
                path.display(),
                diff("config", &Value::Object(got), &Value::Object(want))
            );
        }
        // everything we set that the model's own config.to_dict() shows
        // agrees with it (gpt_oss: the original model's config, whose floats
        // GGUF holds as f32: compared as f32)
        let to_dict = golden["to_dict"].as_object().unwrap();
        for (k, v) in model.config.as_object().unwrap() {
            let original = arch_of(&path) == "gpt_oss";
            let f32_equal = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => original && x as f32 == y as f32,
                _ => false,
            };
            if let Some(w) = to_dict.get(k)
                && !w.is_null()
                && !same(v, w)
                && !f32_equal(v, w)
            {
                failures += &format!(
                    "{}: config.{k} {v} but to_dict() says {w}\n",
                    path.display()
                );
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

/// Keys `save_pretrained` writes about where and how a tokenizer was
/// loaded, not what it is.
const RUNTIME_KEYS: [&str; 3] = ["is_local", "local_files_only", "model_max_length"];

#[test]
fn tokenizer_files_match_transformers() {
    let mut failures = String::new();
    for path in fixtures() {
        let (_, header, model) = load(&path);
        let built = model.built_files(&header.metadata).unwrap();
        let golden = read_json(&dir().join(format!("{}.tokenizer.json", arch_of(&path))));
        // No files where transformers cannot read the GGUF at all (gpt_oss):
        // its tokenizer is checked through the mount against the original
        // one's encodings (scripts/check_gguf_hf.py --mount).
        let Some(want) = golden["files"].as_object() else {
            assert!(
                !model.files.is_empty(),
                "{}: no tokenizer files",
                path.display()
            );
            continue;
        };
        let got: BTreeMap<&str, &str> = built
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let names_want: BTreeSet<&str> = want.keys().map(String::as_str).collect();
        let names_got: BTreeSet<&str> = got.keys().copied().collect();
        if names_want != names_got {
            failures += &format!(
                "{}: files {names_got:?}, transformers {names_want:?}\n",
                path.display()
            );
            continue;
        }
        for (name, w) in want {
            let g = got[name.as_str()];
            if name.ends_with(".json") {
                let mut w = w.clone();
                if name == "tokenizer_config.json" {
                    for k in RUNTIME_KEYS {
                        w.as_object_mut().unwrap().remove(k);
                    }
                }
                let g: Value = serde_json::from_str(g).unwrap();
                if name == "tokenizer.json" {
                    // Where transformers' GGUF loader gives a pipeline other
                    // than the model's own tokenizer (phi3), gyrofs follows
                    // the original (scripts/make_spm_originals.py).
                    if let Some(orig) = golden.get("original") {
                        for part in ["normalizer", "pre_tokenizer", "decoder"] {
                            w[part] = orig[part].clone();
                        }
                    }
                    for part in [
                        "added_tokens",
                        "normalizer",
                        "pre_tokenizer",
                        "post_processor",
                        "decoder",
                    ] {
                        if !same(&g[part], &w[part]) {
                            failures += &format!(
                                "{}: tokenizer.json {part}:\n  gyrofs {}\n  transformers {}\n",
                                path.display(),
                                g[part],
                                w[part]
                            );
                        }
                    }
                    let (gm, wm) = (&g["model"], &w["model"]);
                    for (k, v) in wm.as_object().unwrap() {
                        if k == "merges" {
                            let (a, b) = (gm[k].as_array().unwrap(), v.as_array().unwrap());
                            if a != b {
                                let first = a
                                    .iter()
                                    .zip(b)
                                    .position(|(x, y)| x != y)
                                    .unwrap_or(a.len().min(b.len()));
                                failures += &format!(
                                    "{}: merges differ ({} vs {}), first at #{first}: {:?} / {:?}\n",
                                    path.display(),
                                    a.len(),
                                    b.len(),
                                    a.get(first),
                                    b.get(first)
                                );
                            }
                        } else if !same(&gm[k], v) {
                            failures +=
                                &format!("{}: tokenizer.json model.{k} differs\n", path.display());
                        }
                    }
                    if gm.as_object().unwrap().len() != wm.as_object().unwrap().len() {
                        failures +=
                            &format!("{}: tokenizer.json model keys differ\n", path.display());
                    }
                }
                if !same(&g, &w) {
                    failures += &format!("{}:\n{}", path.display(), diff(name, &g, &w));
                }
            } else if Some(g) != w.as_str() {
                failures += &format!("{}: {name} differs\n", path.display());
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn tensors_match_transformers_bit_for_bit() {
    let mut failures = String::new();
    for path in fixtures() {
        let (data, header, model) = load(&path);
        let golden_path = path.with_extension("expected.safetensors");
        let golden_bytes = std::fs::read(&golden_path).unwrap();
        let golden = safetensors::SafeTensors::deserialize(&golden_bytes).unwrap();
        let want: BTreeSet<String> = golden.names().into_iter().map(str::to_string).collect();
        let got: BTreeSet<String> = model.tensors.iter().map(|t| t.name.clone()).collect();
        if want != got {
            failures += &format!(
                "{}: names differ: only gyrofs {:?}, only transformers {:?}\n",
                path.display(),
                got.difference(&want).collect::<Vec<_>>(),
                want.difference(&got).collect::<Vec<_>>()
            );
            continue;
        }
        let f32_of = |name: &str| -> (Vec<u64>, Vec<f32>) {
            let t = header.tensors.iter().find(|t| t.name == name).unwrap();
            let mut out = vec![0f32; t.n_elements() as usize];
            dequantize_f32(
                t.ggml_type,
                &data[t.offset as usize..t.end() as usize],
                &mut out,
            )
            .unwrap();
            (t.shape(), out)
        };
        for t in &model.tensors {
            let g = golden.tensor(&t.name).unwrap();
            let gshape: Vec<u64> = g.shape().iter().map(|&d| d as u64).collect();
            if gshape != t.shape {
                failures += &format!(
                    "{}: {} shape {:?}, transformers {:?}\n",
                    path.display(),
                    t.name,
                    t.shape,
                    gshape
                );
                continue;
            }
            assert_eq!(g.dtype(), safetensors::Dtype::BF16, "{}", t.name);
            let sources: Vec<(Vec<u64>, Vec<f32>)> =
                t.op.sources().iter().map(|s| f32_of(s)).collect();
            let inputs: Vec<Input> = sources
                .iter()
                .map(|(s, v)| Input {
                    shape: s,
                    values: v,
                })
                .collect();
            let values = t.op.apply(&inputs).unwrap();
            let ours: Vec<u16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
            let theirs: Vec<u16> = g
                .data()
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            if ours != theirs {
                let n = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
                failures += &format!(
                    "{}: {} ({:?}): {n} of {} values differ\n",
                    path.display(),
                    t.name,
                    t.op,
                    theirs.len()
                );
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

/// With GYROFS_GGUF_HF_EXPORT=DIR, writes each fixture's mapping as a
/// Hugging Face folder (DIR/<fixture>/: config.json with dtype bfloat16,
/// generation_config.json, tokenizer files, model.safetensors computed with
/// the reference ops) for scripts/check_gguf_hf.py to load with
/// transformers. Does nothing otherwise.
#[test]
fn export_folders_for_python_check() {
    let Some(out) = std::env::var_os("GYROFS_GGUF_HF_EXPORT") else {
        return;
    };
    for path in fixtures() {
        let (data, header, model) = load(&path);
        let folder = Path::new(&out).join(path.file_stem().unwrap());
        std::fs::create_dir_all(&folder).unwrap();
        let mut config = model.config.clone();
        config["dtype"] = "bfloat16".into();
        std::fs::write(folder.join("config.json"), gyrofs::json::to_pretty(&config)).unwrap();
        if let Some(g) = &model.generation_config {
            std::fs::write(
                folder.join("generation_config.json"),
                gyrofs::json::to_pretty(g),
            )
            .unwrap();
        }
        for (name, text) in model.built_files(&header.metadata).unwrap() {
            std::fs::write(folder.join(name), text).unwrap();
        }
        let mut bytes: Vec<(String, Vec<u64>, Vec<u8>)> = Vec::new();
        for t in &model.tensors {
            let sources: Vec<(Vec<u64>, Vec<f32>)> =
                t.op.sources()
                    .iter()
                    .map(|s| {
                        let g = header.tensors.iter().find(|g| g.name == *s).unwrap();
                        let mut v = vec![0f32; g.n_elements() as usize];
                        dequantize_f32(
                            g.ggml_type,
                            &data[g.offset as usize..g.end() as usize],
                            &mut v,
                        )
                        .unwrap();
                        (g.shape(), v)
                    })
                    .collect();
            let inputs: Vec<Input> = sources
                .iter()
                .map(|(s, v)| Input {
                    shape: s,
                    values: v,
                })
                .collect();
            let values = t.op.apply(&inputs).unwrap();
            let b: Vec<u8> = values
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect();
            bytes.push((t.name.clone(), t.shape.clone(), b));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                let shape: Vec<usize> = s.iter().map(|&d| d as usize).collect();
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape, b)
                        .unwrap(),
                )
            })
            .collect();
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &folder.join("model.safetensors"))
            .unwrap();
    }
}
