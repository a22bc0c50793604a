//! The torch.save reader against torch itself, without a mount: every
//! fixture in `tests/data/torch/` (written by `scripts/make_torch_fixtures.py`)
//! parses into the tensor paths, dtypes, shapes and non-tensor values
//! `torch.load(weights_only=True)` gives, and every tensor's bytes, gathered
//! from the file by a plain strided loop, equal `t.contiguous()` as
//! `safetensors.torch.save_file` wrote it. Every hostile or broken file is
//! refused with its exact line (or neutralised), nothing it asks for runs,
//! and no mutation of a good file makes the parser panic or return a view
//! outside the file.

use std::path::{Path, PathBuf};

use gyrofs::source::torch::{Checkpoint, Format, TensorRef, parse};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch")
}

fn read(rel: &str) -> Vec<u8> {
    let p = dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const GOOD: &[&str] = &[
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
    "dup-keys",
    "plain-proto0",
    "plain-proto1",
    "plain-proto3",
    "plain-proto4",
    "plain-proto5",
];

/// The contiguous bytes of `t`, by a plain loop over its indices
/// (little-endian: big-endian elements are reversed).
fn gather(data: &[u8], ck: &Checkpoint, t: &TensorRef) -> Vec<u8> {
    let s = &ck.storages[t.storage];
    let storage = &data[s.offset as usize..(s.offset + s.len) as usize];
    let size = (t.dtype.bits() / 8) as usize;
    let mut out = Vec::with_capacity(t.numel() as usize * size);
    if t.numel() == 0 {
        return out;
    }
    let mut idx = vec![0u64; t.shape.len()];
    loop {
        let e = t.storage_offset + idx.iter().zip(&t.strides).map(|(i, s)| i * s).sum::<u64>();
        let at = e as usize * size;
        let mut el = storage[at..at + size].to_vec();
        if ck.big_endian {
            el.reverse();
        }
        out.extend_from_slice(&el);
        // Next index, last dimension fastest.
        let mut d = t.shape.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn check_fixture(name: &str) -> Checkpoint {
    let data = read(&format!("{name}.pt"));
    let ck = parse(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
    let exp: Value = serde_json::from_slice(&read(&format!("expected-{name}.json"))).unwrap();

    match (&ck.format, exp["format"].as_str().unwrap()) {
        (Format::Zip { archive_name }, "zip") => {
            assert_eq!(
                Some(archive_name.as_str()),
                exp["archive_name"].as_str(),
                "{name}"
            )
        }
        (Format::Legacy, "legacy") => {}
        (f, e) => panic!("{name}: format {f:?}, expected {e}"),
    }
    assert_eq!(Some(ck.big_endian), exp["big_endian"].as_bool(), "{name}");
    let paths: Vec<&str> = ck.tensors.iter().map(|t| t.path.as_str()).collect();
    let want: Vec<&str> = exp["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(paths, want, "{name}: tensor paths");
    assert_eq!(ck.values, exp["values"], "{name}: values");

    let st_bytes = if want.is_empty() {
        Vec::new()
    } else {
        read(&format!("expected-{name}.safetensors"))
    };
    let st = (!want.is_empty()).then(|| safetensors::SafeTensors::deserialize(&st_bytes).unwrap());
    for t in &ck.tensors {
        let meta = &exp["tensors"][&t.path];
        assert_eq!(
            meta["dtype"].as_str(),
            Some(t.dtype.name()),
            "{name}: {}",
            t.path
        );
        let shape: Vec<u64> = meta["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{name}: {}", t.path);
        assert_eq!(
            Some(t.requires_grad),
            meta["requires_grad"].as_bool(),
            "{name}: {}",
            t.path
        );
        let view = st.as_ref().unwrap().tensor(&t.path).unwrap();
        let shape_usize: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        assert_eq!(view.shape(), shape_usize.as_slice(), "{name}: {}", t.path);
        assert_eq!(
            gather(&data, &ck, t),
            view.data(),
            "{name}: bytes of {}",
            t.path
        );
    }
    for s in &ck.storages {
        assert!(
            s.offset + s.len <= data.len() as u64,
            "{name}: storage {}",
            s.key
        );
    }
    ck
}

#[test]
fn every_fixture_matches_torch() {
    for name in GOOD {
        check_fixture(name);
    }
}

#[test]
fn notes_say_what_was_left_out() {
    let ck = check_fixture("unsupported");
    let notes = ck.notes.join("\n");
    for n in [
        "'complex64': left out: a torch.complex64 tensor (no safetensors dtype holds it)",
        "'complex128': left out: a torch.complex128 tensor (no safetensors dtype holds it)",
        "'quantized': left out: a quantized tensor",
        "'sparse': left out: a sparse tensor",
        "'meta': left out: a meta tensor (it has no data)",
        "'neg_view': left out: a tensor with its conj or neg bit set",
    ] {
        assert!(notes.contains(n), "{n:?} not in\n{notes}");
    }
    assert_eq!(ck.notes.len(), 6, "{notes}");
    assert_eq!(ck.tensors.len(), 1);

    let ck = check_fixture("namespace");
    assert_eq!(
        ck.notes,
        [
            "'args': object of non-allowlisted class 'argparse.Namespace' kept as a placeholder (nothing was called)"
        ]
    );
    assert_eq!(ck.values["args"]["state"]["lr"], 0.1);

    let ck = check_fixture("nested");
    assert!(
        ck.notes.contains(
            &"'a.b': another tensor has this path; this one is named 'a.b#2'".to_string()
        )
    );
    assert!(ck.notes.contains(
        &"'int_keys': key '1' is another key than an earlier one that prints the same (such as 1 and \"1\"); this one is named '1#2'".to_string()
    ), "{:?}", ck.notes);

    // Integer keys (the optimizer state's parameter ids) are plain decimal
    // path segments: nothing to note.
    let ck = check_fixture("nanogpt");
    assert!(ck.notes.is_empty(), "{:?}", ck.notes);
}

/// A pickled dict with repeated keys (which torch.save cannot write) reads
/// as torch.load reads it: the last value of a key wins, in the key's first
/// place (`check_fixture` compares with torch.load); keys that are distinct
/// in Python but print the same are renamed; the manifest's notes say both.
#[test]
fn repeated_keys_keep_the_last_value_as_torch_load_does() {
    let ck = check_fixture("dup-keys");
    let w = ck.tensors.iter().find(|t| t.path == "w").unwrap();
    assert_eq!(ck.storages[w.storage].key, "1");
    assert_eq!(ck.values["1"], "1.0 replaces it again");
    assert_eq!(ck.values["1#2"], "string one");
    assert_eq!(
        ck.notes,
        [
            "'': key 'w' occurs 3 times; the last value is used, as torch.load does",
            "'': key 'm' occurs 2 times; the last value is used, as torch.load does",
            "'': key '1' occurs 3 times; the last value is used, as torch.load does",
            "'': key '1' is another key than an earlier one that prints the same (such as 1 and \"1\"); this one is named '1#2'",
            "'': 1 dict keys that are neither strings nor integers written as JSON text",
        ]
    );
}

/// Pickles made to multiply work or memory: many keys that print the same
/// (each NaN is its own key), one tensor path reached many ways, a node per
/// byte. Linear time, notes capped, memory within the budget.
#[test]
fn hostile_repetitions_cost_linear_time_and_few_notes() {
    let ck = parse(&read("bad/nan-keys.pt")).unwrap();
    let keys = ck.values.as_object().unwrap();
    assert_eq!(keys.len(), 3000);
    assert!(keys.contains_key("\"NaN\"#3000"));
    assert_eq!(ck.notes.len(), 256 + 1, "{:?}", &ck.notes[250..]);
    assert!(
        ck.notes
            .contains(&"... and 2744 more notes like these, left out".to_string()),
        "{:?}",
        &ck.notes[250..]
    );
    let ck = parse(&read("bad/path-collisions.pt")).unwrap();
    assert!(ck.tensors.len() > 1000, "{}", ck.tensors.len());
    assert!(ck.notes.len() <= 257);
    let paths: std::collections::HashSet<&str> =
        ck.tensors.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths.len(), ck.tensors.len());
    let ck = parse(&read("bad/none-flood.pt")).unwrap();
    assert_eq!(ck.values.as_array().unwrap().len(), 60000);
}

#[test]
fn shared_storages_and_views() {
    // Tied weights: two paths, one storage.
    let ck = check_fixture("nanogpt");
    let find = |p: &str| ck.tensors.iter().find(|t| t.path == p).unwrap();
    let wte = find("model._orig_mod.transformer.wte.weight");
    let head = find("model._orig_mod.lm_head.weight");
    assert_eq!(wte.storage, head.storage);
    assert_eq!(ck.values["iter_num"], 3);
    assert_eq!(ck.values["model_args"]["n_embd"], 8);
    assert!(find("optimizer.state.0.exp_avg").shape == wte.shape);
    assert!(ck.tensors.iter().all(|t| !t.requires_grad));

    // One tensor object under two keys.
    let ck = check_fixture("nested");
    let a = ck.tensors.iter().find(|t| t.path == "same_object").unwrap();
    let b = ck.tensors.iter().find(|t| t.path == "same_again").unwrap();
    assert_eq!((a.storage, a.storage_offset), (b.storage, b.storage_offset));

    // Views keep their strides; expanded dims have stride 0.
    let ck = check_fixture("views");
    let find = |p: &str| ck.tensors.iter().find(|t| t.path == p).unwrap();
    assert_eq!(find("transposed").strides, [1, 6]);
    assert_eq!(find("expanded").strides, [1, 0]);
    assert_eq!(find("narrowed").storage_offset, 6);
    assert_eq!(find("base").storage, find("stepped").storage);

    // nn.Parameter entries.
    let ck = check_fixture("params");
    assert!(ck.tensors.iter().all(|t| t.requires_grad));

    let ck = check_fixture("tensor-root");
    assert_eq!(ck.tensors[0].path, "tensor");
    assert_eq!(ck.values, serde_json::json!({"gyro_tensor": "tensor"}));
}

/// Every hostile or broken file and the exact line it is refused with.
const REFUSED: &[(&str, &str)] = &[
    (
        "os-system",
        "os-system/data.pkl: byte 2: GLOBAL: refused: 'os.system' is a code-execution primitive (nothing was run)",
    ),
    (
        "posix-system",
        "posix-system/data.pkl: byte 153: GLOBAL: refused: 'posix.system' is a code-execution primitive (nothing was run)",
    ),
    (
        "builtins-eval",
        "builtins-eval/data.pkl: byte 18: STACK_GLOBAL: refused: 'builtins.eval' is a code-execution primitive (nothing was run)",
    ),
    (
        "builtins-exec",
        "builtins-exec/data.pkl: byte 2: GLOBAL: refused: 'builtins.exec' is a code-execution primitive (nothing was run)",
    ),
    (
        "subprocess-inst",
        "subprocess-inst/data.pkl: byte 24: INST: refused: 'subprocess.Popen' is a code-execution primitive (nothing was run)",
    ),
    (
        "getattr-obj",
        "getattr-obj/data.pkl: byte 3: GLOBAL: refused: 'builtins.getattr' is a code-execution primitive (nothing was run)",
    ),
    (
        "tensor-from-unknown",
        "tensor-from-unknown/data.pkl: byte 120: torch._utils._rebuild_tensor_v2: the storage argument is an object of non-allowlisted class 'evil.module.make_storage', not a storage",
    ),
    (
        "tensor-inside-unknown",
        "tensor 'm.state.w': held by 'm', an object of non-allowlisted class 'evil.module.Model'; refusing rather than leaving it out (gyrofs does not run pickled classes)",
    ),
    (
        "build-on-dict",
        "build-on-dict/data.pkl: byte 17: BUILD: cannot set the state of a dict",
    ),
    (
        "deep-marks",
        "deep-marks/data.pkl: byte 258: MARK: MARKs nest deeper than 256",
    ),
    (
        "huge-memo-index",
        "huge-memo-index/data.pkl: byte 13: LONG_BINGET: memo index 4294967294 was never stored",
    ),
    (
        "length-2-60",
        "length-2-60/data.pkl: byte 2: BINUNICODE8: needs 1152921504606846976 bytes but the pickle ends 4 bytes later",
    ),
    (
        "long4-huge",
        "long4-huge/data.pkl: byte 2: LONG4: integer of 2147483647 bytes exceeds the 256-byte limit",
    ),
    (
        "frame-huge",
        "frame-huge/data.pkl: byte 2: FRAME: frame of 4611686018427387904 bytes runs past the end (2 bytes left)",
    ),
    (
        "unknown-opcode",
        "unknown-opcode/data.pkl: byte 148: 0xff: unknown opcode",
    ),
    (
        "truncated-pickle",
        "truncated-pickle/data.pkl: byte 10: GLOBAL: line is not terminated by a newline before the end",
    ),
    (
        "stack-underflow",
        "stack-underflow/data.pkl: byte 2: APPEND: stack underflow",
    ),
    (
        "mark-misuse",
        "mark-misuse/data.pkl: byte 7: SETITEMS: no MARK to pop to",
    ),
    (
        "missing-storage",
        "storage '0': the archive has no entry 'missing-storage/data/0'",
    ),
    (
        "short-storage",
        "storage '0': the pickle declares 16 bytes (torch.float32) but the data holds 8",
    ),
    (
        "view-past-storage",
        "tensor 'w': view needs 5 elements but storage '0' has 4",
    ),
    (
        "deflated",
        "zip entry 'deflated/data/0': is compressed (method 8, deflate); torch.save stores entries uncompressed, so this archive was rewritten by another tool: re-save it with torch.save",
    ),
    (
        "deflated-pickle",
        "zip entry 'deflated-pickle/data.pkl': is compressed (method 8, deflate); torch.save stores entries uncompressed, so this archive was rewritten by another tool: re-save it with torch.save",
    ),
    (
        "no-data-pkl",
        "zip: no entry 'nodata/data.pkl' (not a torch.save archive?)",
    ),
    (
        "plain-pickle",
        "not a torch.save checkpoint: a pickle without torch.save's magic number (plain pickle.dump output?)",
    ),
    (
        "not-torch",
        "not a torch.save checkpoint: neither a zip archive nor a legacy torch.save pickle (starts with 68 65 6c 6c 6f 2c 20 77)",
    ),
];

#[test]
fn hostile_and_broken_files_are_refused_with_one_line() {
    for (name, line) in REFUSED {
        let data = read(&format!("bad/{name}.pt"));
        match parse(&data) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert_eq!(&msg, line, "{name}");
                assert!(!msg.contains('\n'), "{name}: not one line");
            }
        }
    }
    // Nesting and blow-ups: the messages name a (shortened) path.
    for (name, why) in [
        ("deep-lists", "values nest deeper than 256"),
        ("shared-blowup", "through shared references"),
    ] {
        let e = parse(&read(&format!("bad/{name}.pt")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(why) && !e.contains('\n') && e.len() < 400,
            "{name}: {e}"
        );
    }
}

#[test]
fn unknown_globals_nothing_depends_on_are_placeholders() {
    let ck = parse(&read("bad/reduce-unknown.pt")).unwrap();
    assert_eq!(ck.tensors.len(), 1);
    assert_eq!(
        ck.values["evil"],
        serde_json::json!({"gyro_opaque": "evil.module.run", "args": ["touch CANARY"]})
    );
    assert_eq!(
        ck.values["built"],
        serde_json::json!({"gyro_opaque": "evil.module.Thing", "state": {"__setstate__": "x", "n": 7}})
    );
    let ck = parse(&read("bad/inst-obj.pt")).unwrap();
    assert_eq!(ck.values["inst"]["args"], serde_json::json!([1]));
    assert_eq!(ck.values["obj"]["args"], serde_json::json!([2]));
    let ck = parse(&read("bad/self-cycle.pt")).unwrap();
    assert_eq!(ck.values, serde_json::json!([{"gyro_cycle": ""}]));
}

/// The hostile pickles ask for `touch CANARY`: parsing all of them (in this
/// process's working directory, the crate root) must not create it.
#[test]
fn canary_never_appears() {
    let canary = Path::new("CANARY");
    assert!(!canary.exists(), "CANARY exists before the test");
    for e in std::fs::read_dir(dir().join("bad")).unwrap() {
        let p = e.unwrap().path();
        let _ = parse(&std::fs::read(&p).unwrap());
    }
    assert!(!canary.exists(), "a hostile pickle created CANARY");
    assert!(!dir().join("CANARY").exists());
}

/// Truncations and random byte changes of every good fixture: never a panic,
/// and whatever parses has every storage and every view inside the file.
#[test]
fn mutations_never_panic_or_escape_the_file() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for name in GOOD {
        let good = read(&format!("{name}.pt"));
        for i in 0..300 {
            let mut b = good.clone();
            if i % 3 == 0 {
                b.truncate((next() % good.len() as u64) as usize);
            } else {
                for _ in 0..1 + next() % 4 {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] = next() as u8;
                }
            }
            let Ok(ck) = parse(&b) else { continue };
            for st in &ck.storages {
                assert!(st.offset + st.len <= b.len() as u64, "{name} #{i}");
            }
            for t in &ck.tensors {
                let st = &ck.storages[t.storage];
                let size = t.dtype.bits() / 8;
                if t.numel() > 0 {
                    let last = t.storage_offset
                        + t.shape
                            .iter()
                            .zip(&t.strides)
                            .map(|(d, s)| (d - 1) * s)
                            .sum::<u64>();
                    assert!((last + 1) * size <= st.len, "{name} #{i}: {}", t.path);
                }
            }
        }
    }
}
