//! The `gguf/` view against llama.cpp's own converter: each fixture of
//! tests/data/gguf-out/ (a tiny random Hugging Face model, made by
//! scripts/make_gguf_out.py) is mounted, and every `gguf/model-T.gguf` read
//! through the kernel must hold what `convert_hf_to_gguf.py --outtype t`
//! wrote for the same folder (`NAME.expected.json`): every key/value but the
//! authorship keys, with its GGUF type, in order; every tensor's name, type,
//! dimensions and offset; and each tensor's bytes (by SHA-256).
//! `gyrofs convert --view gguf/...` writes the same bytes.

mod common;

use std::path::{Path, PathBuf};

use common::{Mount, gyrofs};
use gyrofs::catalog::gguf::{GgufArray, GgufValue};
use gyrofs::source::gguf::parse_data;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The fixtures the view writes (every one scripts/make_gguf_out.py makes).
const CASES: &[&str] = &[
    "llama",
    "llama-f32",
    "llama-256",
    "mixtral",
    "gemma2",
    "gemma2-f16",
    "gemma3",
    "phi3",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "gpt2",
    "gpt_oss",
];

const TYPES: [(&str, &str); 4] = [
    ("f32", "F32"),
    ("f16", "F16"),
    ("bf16", "BF16"),
    ("q8_0", "Q8_0"),
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gguf-out")
        .join(name)
}

/// Keys the converter derives from the folder name and model card
/// (docs/GGUF_OUT.md: gyrofs may write them differently).
fn authorship(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "general.name",
        "general.author",
        "general.version",
        "general.organization",
        "general.finetune",
        "general.basename",
        "general.description",
        "general.quantized_by",
        "general.license",
        "general.url",
        "general.doi",
        "general.uuid",
        "general.repo_url",
        "general.tags",
        "general.languages",
    ];
    const PREFIXES: &[&str] = &[
        "general.license.",
        "general.source.",
        "general.base_model.",
        "general.dataset.",
    ];
    KEYS.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A value as scripts/make_gguf_out.py describes it: `[type, value]`.
fn describe(v: &GgufValue) -> (String, Value) {
    fn scalar(v: &GgufValue) -> (&'static str, Value) {
        match v {
            GgufValue::U8(x) => ("uint8", json!(x)),
            GgufValue::I8(x) => ("int8", json!(x)),
            GgufValue::U16(x) => ("uint16", json!(x)),
            GgufValue::I16(x) => ("int16", json!(x)),
            GgufValue::U32(x) => ("uint32", json!(x)),
            GgufValue::I32(x) => ("int32", json!(x)),
            GgufValue::F32(x) => ("float32", json!(f64::from(*x))),
            GgufValue::Bool(x) => ("bool", json!(x)),
            GgufValue::String(x) => ("string", json!(x)),
            GgufValue::U64(x) => ("uint64", json!(x)),
            GgufValue::I64(x) => ("int64", json!(x)),
            GgufValue::F64(x) => ("float64", json!(x)),
            GgufValue::Array(_) => ("array", Value::Null),
        }
    }
    match v {
        GgufValue::Array(a) => {
            let (sub, items): (&str, Vec<Value>) = match a {
                GgufArray::String(s) => ("string", s.iter().map(|x| json!(x)).collect()),
                GgufArray::I32(s) => ("int32", s.iter().map(|x| json!(x)).collect()),
                GgufArray::F32(s) => ("float32", s.iter().map(|x| json!(f64::from(*x))).collect()),
                GgufArray::U32(s) => ("uint32", s.iter().map(|x| json!(x)).collect()),
                other => panic!("no description for array {other:?}"),
            };
            (format!("array:{sub}"), Value::Array(items))
        }
        v => {
            let (t, x) = scalar(v);
            (t.to_string(), x)
        }
    }
}

/// Compare one GGUF file with its expected description (`kv`: the keys,
/// `general.file_type` as `typ["file_type"]`; `typ["tensors"]`); one line
/// per difference.
fn differences(bytes: &[u8], kv_want: &Value, typ: &Value) -> Vec<String> {
    let h = parse_data(Path::new("model.gguf"), bytes).expect("a valid GGUF file");
    let mut out = Vec::new();
    let kv: Vec<(String, String, Value)> = h
        .metadata
        .iter()
        .filter(|(k, _)| !authorship(k))
        .map(|(k, v)| {
            let (t, x) = describe(v);
            (k.clone(), t, x)
        })
        .collect();
    let want: Vec<Value> = kv_want
        .as_array()
        .expect("kv")
        .iter()
        .map(|w| match w[0].as_str() {
            Some("general.file_type") => json!([w[0], w[1], typ["file_type"]]),
            _ => w.clone(),
        })
        .collect();
    let keys: Vec<&str> = kv.iter().map(|k| k.0.as_str()).collect();
    let want_keys: Vec<&str> = want.iter().map(|k| k[0].as_str().unwrap()).collect();
    if keys != want_keys {
        out.push(format!("keys:\n  got  {keys:?}\n  want {want_keys:?}"));
    }
    for (k, t, x) in &kv {
        if let Some(w) = want.iter().find(|w| w[0] == k.as_str())
            && (w[1] != t.as_str() || &w[2] != x)
        {
            let cut = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            out.push(format!(
                "{k}: got {t} {}, want {} {}",
                cut(x),
                w[1],
                cut(&w[2])
            ));
        }
    }
    let start = h.tensors.first().map_or(0, |t| t.offset);
    let tensors: Vec<Value> = h
        .tensors
        .iter()
        .map(|t| {
            let data = &bytes[t.offset as usize..t.end() as usize];
            json!([
                t.name,
                t.ggml_type.id(),
                t.dims,
                t.offset - start,
                format!("{:x}", Sha256::digest(data))
            ])
        })
        .collect();
    let want_t = typ["tensors"].as_array().expect("tensors");
    if tensors.len() != want_t.len() {
        out.push(format!("{} tensors, want {}", tensors.len(), want_t.len()));
    }
    for (g, w) in tensors.iter().zip(want_t) {
        if g != w {
            out.push(format!("tensor: got {g}, want {w}"));
        }
    }
    out
}

fn expected(name: &str) -> Value {
    let p = data(name).with_extension("expected.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

#[test]
fn every_file_is_what_the_converter_writes() {
    let mut problems = Vec::new();
    for name in CASES {
        let m = Mount::new(&data(name));
        let exp = expected(name);
        for (t, file) in TYPES {
            let path = m.path.join("gguf").join(format!("model-{file}.gguf"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name} {file}: {e}"));
            for d in differences(&bytes, &exp["kv"], &exp["types"][t]) {
                problems.push(format!("{name} {file}: {d}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The llama-quantize files (scripts/make_gguf_quant.py; docs/GGUF_OUT.md).
const MIXES: [&str; 4] = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q4_0"];

/// Every `gguf/model-{Q4_K_M,Q5_K_M,Q6_K,Q4_0}.gguf` holds what
/// `llama_model_quantize` (llama-quantize, default options, no importance
/// matrix) wrote from the converter's BF16 file (`NAME.quant.json`): the
/// keys in its order with their types and the BF16 file's values (but
/// `general.file_type`); every tensor's name, type, dimensions, offset and
/// bytes (SHA-256). A model llama-quantize refuses (gpt-oss: MXFP4 is not
/// requantized) has none of these files.
#[test]
fn every_quantized_file_is_what_llama_quantize_writes() {
    let mut problems = Vec::new();
    for name in CASES {
        let m = Mount::new(&data(name));
        let exp = expected(name);
        let p = data(name).with_extension("quant.json");
        let quant: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        for mix in MIXES {
            let want = &quant["types"][mix];
            let path = m.path.join("gguf").join(format!("model-{mix}.gguf"));
            if want.get("refused").is_some() {
                if path.exists() {
                    problems.push(format!(
                        "{name} {mix}: llama-quantize refuses it, the mount has it"
                    ));
                }
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name} {mix}: {e}"));
            // The BF16 file's values, in llama-quantize's key order.
            let kv: Vec<Value> = want["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| !authorship(k[0].as_str().unwrap()))
                .map(|k| {
                    exp["kv"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e[0] == k[0])
                        .cloned()
                        .unwrap_or_else(|| json!([k[0], k[1], null]))
                })
                .collect();
            for d in differences(&bytes, &Value::Array(kv), want) {
                problems.push(format!("{name} {mix}: {d}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The llama-quantize files against llama-quantize itself, live
/// (scripts/check_gguf_quant.py): the mounted BF16 file quantized by
/// `llama_cpp.llama_model_quantize` is the mounted file byte for byte,
/// and llama.cpp's logits of both are the same, bit for bit. Runs where
/// llama-cpp-python is installed (`GYROFS_PYTHON`, default
/// /opt/pyref/bin/python); says it is skipped otherwise.
#[test]
fn llama_quantize_writes_the_mounted_quantized_files() {
    let python = std::env::var("GYROFS_PYTHON").unwrap_or_else(|_| "/opt/pyref/bin/python".into());
    let has_llama_cpp = std::process::Command::new(&python)
        .args(["-c", "import llama_cpp, gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_llama_cpp {
        eprintln!(
            "skipped: comparing with llama-quantize needs llama-cpp-python in {python} \
             (pip install llama-cpp-python==0.3.36); scripts/check_gguf_quant.py runs it"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_gguf_quant.py");
    let out = run_bounded(
        std::process::Command::new(&python)
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_gyrofs"))
            .args(CASES),
        600,
    );
    assert!(out.contains("all good"), "{out}");
}

/// Run `cmd` with its stdout captured, killed after `secs` seconds; its
/// stdout, and a panic when it fails.
fn run_bounded(cmd: &mut std::process::Command, secs: u64) -> String {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("{cmd:?} did not finish in {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = reader.join().unwrap().unwrap();
    assert!(status.success(), "{out}");
    out
}

#[test]
fn convert_writes_the_mounted_bytes() {
    let name = "mixtral";
    let m = Mount::new(&data(name));
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("g");
    let st = gyrofs(&[
        "convert",
        data(name).to_str().unwrap(),
        dst.to_str().unwrap(),
        "--view",
        "gguf/model-Q8_0.gguf",
        "--quiet",
    ]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let written = std::fs::read(dst.join("model-Q8_0.gguf")).unwrap();
    let mounted = std::fs::read(m.path.join("gguf/model-Q8_0.gguf")).unwrap();
    assert!(written == mounted, "convert and the mount differ");
}

#[test]
fn partial_reads_compute_only_their_rows_and_match_the_whole_file() {
    // Through the read path itself (the kernel would round to pages).
    for (fixture, file) in [
        ("llama", "gguf/model-Q8_0.gguf"),
        ("llama", "gguf/model-BF16.gguf"),
        ("llama-256", "gguf/model-Q4_K_M.gguf"),
        ("llama-256", "gguf/model-Q6_K.gguf"),
    ] {
        let v = gyrofs::volume::Volume::open(&data(fixture)).unwrap();
        let id = v.resolve(file).unwrap();
        let size = v.file(id).unwrap().size;
        let whole = v.read(id, 0, size as usize).unwrap();
        let mut at = 0u64;
        let mut step = 1u64;
        while at < size {
            let n = step.min(size - at) as usize;
            let part = v.read(id, at, n).unwrap();
            assert_eq!(part, &whole[at as usize..at as usize + n], "{file} at {at}");
            at += step;
            step = step * 7 % 4099 + 13;
        }
    }
}

/// llama.cpp itself loads every mounted file with the converter's logits
/// and tokenization, bit for bit (scripts/check_gguf_out.py, mmap on).
/// Runs where llama-cpp-python is installed (in `GYROFS_PYTHON`, default
/// /opt/pyref/bin/python) and the converter's files are at `REFERENCE_DIR`
/// (`KEEP=DIR scripts/make_gguf_out.py` leaves them); says it is skipped
/// otherwise (the check script always runs it).
#[test]
fn llama_cpp_loads_the_mounted_files_like_the_converters() {
    let python = std::env::var("GYROFS_PYTHON").unwrap_or_else(|_| "/opt/pyref/bin/python".into());
    let has_llama_cpp = std::process::Command::new(&python)
        .args(["-c", "import llama_cpp, gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    let reference = std::env::var_os("REFERENCE_DIR").map(PathBuf::from);
    let (true, Some(reference)) = (has_llama_cpp, reference.filter(|r| r.is_dir())) else {
        eprintln!(
            "skipped: llama.cpp's load of the mounted files needs llama-cpp-python in {python} \
             (pip install llama-cpp-python==0.3.36) and REFERENCE_DIR (the converter's files, \
             from KEEP=DIR scripts/make_gguf_out.py); scripts/check_gguf_out.py runs it"
        );
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_gguf_out.py");
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_gyrofs"))
        .args(CASES)
        .env("REFERENCE_DIR", &reference)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
    });
    // Bounded: about 5 s per fixture on 2 cores.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("scripts/check_gguf_out.py did not finish in 600 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = reader.join().unwrap().unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("all good"), "{out}");
}

/// `gyrofs ls` ends with the GGUF files a mount offers, or why there are
/// none.
#[test]
fn ls_says_which_gguf_files_a_source_offers() {
    let out = gyrofs(&["ls", data("qwen2_moe").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("gguf/ (qwen2moe, ")
            && last.ends_with(
                "model-F32.gguf model-F16.gguf model-BF16.gguf model-Q8_0.gguf \
                 model-Q4_K_M.gguf model-Q5_K_M.gguf model-Q6_K.gguf model-Q4_0.gguf"
            ),
        "{last}"
    );
    let falcon =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf-models/falcon-f16.gguf");
    let out = gyrofs(&["ls", falcon.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("gguf/ is not available for this source: "),
        "{text}"
    );
}

/// A GGUF source's `gguf/` files carry the source's own tokenizer, key for
/// key (llama.cpp reads it exactly; a SentencePiece GGUF has no
/// `tokenizer.model` for the converter's path).
#[test]
fn a_gguf_source_keeps_its_tokenizer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf-models");
    for name in ["llama-q4_k.gguf", "qwen2-f16.gguf", "gemma3-q8_0.gguf"] {
        let src = root.join(name);
        let tokenizer = |bytes: &[u8]| -> Vec<(String, String, Value)> {
            let h = parse_data(Path::new("model.gguf"), bytes).expect("a valid GGUF file");
            h.metadata
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer."))
                .map(|(k, v)| {
                    let (t, x) = describe(v);
                    (k.clone(), t, x)
                })
                .collect()
        };
        let want = tokenizer(&std::fs::read(&src).unwrap());
        assert!(want.len() > 5, "{name}");
        let m = Mount::new(&src);
        for file in ["model-F16.gguf", "model-Q8_0.gguf"] {
            let got = tokenizer(&std::fs::read(m.path.join("gguf").join(file)).unwrap());
            assert!(got == want, "{name} {file}: tokenizer keys differ");
        }
    }
}
