//! PyTorch sources through a real mount: every tensor of every torch.save
//! fixture (zip and legacy, every dtype, strided views, shared storages,
//! nested containers, big-endian) reads through the kernel exactly as
//! `torch.load(weights_only=True)` gives it (`t.contiguous()`, golden files
//! written by torch: scripts/make_torch_fixtures.py, make_torch_models.py);
//! `bf16/` equals that of the same tensors in a safetensors file; nanoGPT
//! training checkpoints appear as Hugging Face GPT-2 folders bit-identical
//! to torch's eager conversion; Hugging Face `pytorch_model*.bin` folders
//! mount as models; bad files are refused with one line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn torch_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch")
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch-models")
}

/// Fixtures with tensors, and their expected tensors file.
const WITH_TENSORS: &[&str] = &[
    "dtypes",
    "dtypes-legacy",
    "views",
    "views-legacy",
    "views-proto1",
    "params",
    "nanogpt",
    "nanogpt-legacy",
    "nanogpt-proto4-legacy",
    "nested",
    "nested-proto5",
    "namespace",
    "unsupported",
    "archive-folder",
    "tensor-root",
    "large",
    "bigendian",
    "rezipped",
];

fn manifest(m: &Mount) -> Value {
    serde_json::from_slice(&std::fs::read(m.join("manifest.json")).unwrap()).unwrap()
}

/// Tensor name -> the file `raw/` holds it in (from the manifest).
fn raw_files(m: &Mount) -> BTreeMap<String, String> {
    manifest(m)["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["raw_file"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn read_file_tensors(m: &Mount, rel: &str) -> Tensors {
    read_st(&std::fs::read(m.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

/// Every tensor of every fixture, through raw/tensors/ and raw/model.safetensors.
#[test]
fn every_tensor_reads_as_torch_loads_it() {
    for name in WITH_TENSORS {
        let src = torch_dir().join(format!("{name}.pt"));
        let expected = read_st(
            &std::fs::read(torch_dir().join(format!("expected-{name}.safetensors"))).unwrap(),
        );
        let m = Mount::new(&src);
        let files = raw_files(&m);
        assert_eq!(files.len(), expected.len(), "{name}: tensor count");
        for (tensor, want) in &expected {
            let file = files
                .get(tensor)
                .unwrap_or_else(|| panic!("{name}: no '{tensor}'"));
            let got = read_file_tensors(&m, file);
            assert_eq!(got.get(tensor), Some(want), "{name}: {tensor}");
        }
        let pack = read_file_tensors(&m, "raw/model.safetensors");
        assert_eq!(&pack, &expected, "{name}: raw/model.safetensors");
        let mf = manifest(&m);
        assert_eq!(mf["source"]["format"], "pytorch");
    }
}

/// bf16/ of a PyTorch source is bf16/ of the same tensors in safetensors
/// (the conversion rules are the same; only the provenance records differ).
#[test]
fn bf16_equals_that_of_the_same_tensors_as_safetensors() {
    for name in ["dtypes", "views", "bigendian", "nested"] {
        let t = Mount::new(&torch_dir().join(format!("{name}.pt")));
        let s = Mount::new(&torch_dir().join(format!("expected-{name}.safetensors")));
        let (a, b) = (raw_files(&t), raw_files(&s));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (tensor, file) in &a {
            let bf = |m: &Mount, f: &str| read_file_tensors(m, &f.replacen("raw/", "bf16/", 1));
            assert_eq!(
                bf(&t, file).get(tensor),
                bf(&s, &b[tensor]).get(tensor),
                "{name}: {tensor}"
            );
        }
    }
}

/// Non-tensor values in the manifest; strided views recorded as such.
#[test]
fn values_and_records() {
    let m = Mount::new(&torch_dir().join("nanogpt.pt"));
    let mf = manifest(&m);
    assert_eq!(mf["pickle"]["iter_num"], 3);
    assert_eq!(mf["pickle"]["model_args"]["n_embd"], 8);
    assert!(mf["pickle"]["optimizer"]["param_groups"].is_array());
    assert!(
        mf["pickle"].get("model").is_none(),
        "tensors are not values"
    );

    let m = Mount::new(&torch_dir().join("views.pt"));
    let bytes = std::fs::read(m.join("raw/tensors/transposed.safetensors")).unwrap();
    let md = read_st_metadata(&bytes);
    let rec: Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
    let r = &rec["transposed"];
    assert_eq!(r["transform"]["kind"], "contiguous");
    assert_eq!(r["source"]["strides"], serde_json::json!([1, 6]));
    let md = read_st_metadata(&std::fs::read(m.join("raw/tensors/base.safetensors")).unwrap());
    let rec: Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
    assert_eq!(rec["base"]["transform"]["kind"], "identity");
    assert!(rec["base"]["source"].get("strides").is_none());
}

/// nanoGPT training checkpoints: bf16/ is a GPT2LMHeadModel folder whose
/// tensors are bit-identical to torch's eager conversion.
#[test]
fn nanogpt_checkpoints_as_hugging_face_gpt2() {
    for (name, tied) in [
        ("nanogpt-compiled", true),
        ("nanogpt-ddp-nobias", true),
        ("nanogpt-untied", false),
    ] {
        let m = Mount::new(&models_dir().join(format!("{name}.pt")));
        let expected = read_st(
            &std::fs::read(models_dir().join(format!("expected-bf16-{name}.safetensors"))).unwrap(),
        );
        let shards = read_file_tensors(&m, "bf16/model-00001-of-00001.safetensors");
        assert_eq!(shards, expected, "{name}");
        let config: Value =
            serde_json::from_slice(&std::fs::read(m.join("bf16/config.json")).unwrap()).unwrap();
        assert_eq!(config["model_type"], "gpt2");
        assert_eq!(config["activation_function"], "gelu");
        assert_eq!(config["tie_word_embeddings"], tied);
        assert_eq!(config["n_layer"], 2);
        assert_eq!(config["n_positions"], 8);
        assert_eq!(config["dtype"], "bfloat16");
        // Records say what was done.
        let md = read_st_metadata(
            &std::fs::read(m.join("bf16/tensors/transformer.h.0.attn.c_attn.weight.safetensors"))
                .unwrap(),
        );
        let rec: Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
        let tr = &rec["transformer.h.0.attn.c_attn.weight"]["transform"];
        assert_eq!(
            tr,
            &serde_json::json!({"dims": [1, 0], "kind": "transpose", "of": {"kind": "cast", "to": "BF16"}})
        );
        if name == "nanogpt-ddp-nobias" {
            let md = read_st_metadata(
                &std::fs::read(m.join("bf16/tensors/transformer.ln_f.bias.safetensors")).unwrap(),
            );
            let rec: Value = serde_json::from_str(&md["gyro.tensors"]).unwrap();
            assert_eq!(
                rec["transformer.ln_f.bias"]["transform"]["kind"],
                "synthesized"
            );
            assert!(rec["transformer.ln_f.bias"].get("source").is_none());
        }
    }
    // Without model_args or config: no mapping, and a note says why.
    let m = Mount::new(&models_dir().join("nanogpt-noargs.pt"));
    let notes = manifest(&m)["notes"].to_string();
    assert!(
        notes.contains("neither 'model_args' nor a 'config'"),
        "{notes}"
    );
    assert!(
        m.join("bf16/tensors/model.transformer.wte.weight.safetensors")
            .exists()
    );
}

/// Hugging Face folders of pytorch_model.bin (single and sharded with an
/// index): raw/ holds every tensor as torch loads it, bf16/ is a model folder.
#[test]
fn hugging_face_pytorch_model_bin_folders() {
    let expected =
        read_st(&std::fs::read(models_dir().join("expected-hf-gpt2.safetensors")).unwrap());
    for folder in ["hf-gpt2-bin", "hf-gpt2-sharded"] {
        let m = Mount::new(&models_dir().join(folder));
        let pack = read_file_tensors(&m, "raw/model.safetensors");
        assert_eq!(pack, expected, "{folder}");
        assert!(m.join("raw/config.json").exists());
        let config: Value =
            serde_json::from_slice(&std::fs::read(m.join("bf16/config.json")).unwrap()).unwrap();
        assert_eq!(config["dtype"], "bfloat16");
        assert_eq!(config["model_type"], "gpt2");
        let index: Value = serde_json::from_slice(
            &std::fs::read(m.join("bf16/model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            index["weight_map"].as_object().unwrap().len(),
            expected.len()
        );
    }
    // A folder with both: the safetensors weights, and a note.
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(sample_hf()).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        models_dir().join("hf-gpt2-bin/pytorch_model.bin"),
        d.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let m = Mount::new(d.path());
    let mf = manifest(&m);
    assert_eq!(mf["source"]["format"], "safetensors");
    assert!(
        mf["notes"]
            .to_string()
            .contains("also holds PyTorch weights (pytorch_model.bin)")
    );
}

/// Broken files are refused with one line naming the file and the problem.
#[test]
fn bad_files_are_refused_with_one_line() {
    let cases = [
        ("truncated-pickle.pt", "data.pkl"),
        ("no-data-pkl.pt", "no entry"),
        ("missing-storage.pt", "storage"),
        ("short-storage.pt", "storage"),
        ("view-past-storage.pt", "view needs"),
        ("unknown-opcode.pt", "opcode"),
        ("deflated.pt", "compress"),
        ("os-system.pt", "os"),
    ];
    for (file, expect) in cases {
        let p = torch_dir().join("bad").join(file);
        for cmd in ["ls", "mount"] {
            let mnt = tempfile::tempdir().unwrap();
            let mut args = vec![cmd.to_string(), p.display().to_string()];
            if cmd == "mount" {
                args.push(mnt.path().display().to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = gyrofs(&args);
            assert!(!o.status.success(), "{file}: {cmd} succeeded");
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{file}: {err}");
            assert!(err.contains(file), "{file}: {err}");
            assert!(
                err.to_lowercase().contains(expect),
                "{file}: {err} lacks {expect}"
            );
            assert!(!is_mounted(mnt.path()));
        }
    }
}
