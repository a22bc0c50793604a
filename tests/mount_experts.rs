//! The per-expert views through a real mount: every expert file's tensors,
//! stacked back by expert, equal the source tensor (raw) or the bf16 view's
//! tensor (bf16); the registry matches the files; and reading one expert
//! touches only that expert's source bytes.

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use common::*;

type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;
/// (expert index, bytes, shape) of one slice.
type Slice = (u64, Vec<u8>, Vec<usize>);

fn tensors_of(path: &Path) -> Tensors {
    read_st(&std::fs::read(path).unwrap())
}

/// The stacked tensors a view holds: `raw` -> the source tensors, `bf16` ->
/// the files of bf16/tensors.
fn view_tensors(mnt: &Mount, view: &str) -> Tensors {
    let mut all = Tensors::new();
    for f in walk(&mnt.join(&format!("{view}/tensors"))) {
        all.extend(tensors_of(&mnt.join(&format!("{view}/tensors/{f}"))));
    }
    all
}

/// Check `<view>/experts` against the view's own tensors; returns the
/// registry.
fn check_split(mnt: &Mount, view: &str, experts: usize) -> serde_json::Value {
    let dir = mnt.join(&format!("{view}/experts"));
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("registry.json")).unwrap()).unwrap();
    assert_eq!(registry["num_experts"], experts as u64);
    let whole = view_tensors(mnt, view);

    // Registry <-> files: names, sizes, tensors.
    let mut listed = vec!["base.safetensors".to_string(), "registry.json".to_string()];
    let check_file = |entry: &serde_json::Value| -> Tensors {
        let file = entry["file"].as_str().unwrap();
        let path = dir.join(file);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            entry["size"].as_u64().unwrap(),
            "{file} size"
        );
        let ts = tensors_of(&path);
        let names: Vec<&str> = entry["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(ts.len(), names.len(), "{file}");
        for t in entry["tensors"].as_array().unwrap() {
            let (dtype, shape, data) = &ts[t["name"].as_str().unwrap()];
            assert_eq!(t["dtype"].as_str().unwrap(), dtype);
            assert_eq!(t["bytes"].as_u64().unwrap() as usize, data.len());
            let s: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(&s, shape);
        }
        ts
    };
    let base = check_file(&registry["base"]);
    let mut per_expert: BTreeMap<String, Vec<Slice>> = BTreeMap::new();
    let mut seen_files = std::collections::BTreeSet::new();
    for e in registry["experts"].as_array().unwrap() {
        let (layer, expert) = (e["layer"].as_u64().unwrap(), e["expert"].as_u64().unwrap());
        let file = e["file"].as_str().unwrap().to_string();
        assert_eq!(
            file,
            format!("layer_{layer:02}_expert_{expert:03}.safetensors")
        );
        listed.push(file.clone());
        seen_files.insert((layer, expert));
        let ts = check_file(e);
        for t in e["tensors"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let (_, shape, data) = &ts[name];
            match t["index"].as_u64() {
                Some(i) => {
                    assert_eq!(i, expert);
                    per_expert.entry(name.to_string()).or_default().push((
                        i,
                        data.clone(),
                        shape.clone(),
                    ));
                }
                // A whole per-expert tensor: equal to the view's tensor.
                None => assert_eq!(&whole[name].2, data, "{name}"),
            }
        }
    }
    // Stacking fused slices back by expert gives the view's tensor.
    for (name, mut parts) in per_expert {
        parts.sort_by_key(|p| p.0);
        assert_eq!(parts.len(), experts, "{name}: one slice per expert");
        let stacked: Vec<u8> = parts.iter().flat_map(|p| p.1.clone()).collect();
        let (_, shape, data) = &whole[&name];
        assert!(
            stacked == *data,
            "{view}/experts: {name} does not stack back to the view's tensor"
        );
        assert_eq!(&shape[1..], &parts[0].2[..]);
    }
    // Base + experts cover every tensor of the view exactly once.
    for (name, t) in &base {
        assert_eq!(&whole[name], t, "base {name}");
    }
    let mut names_in_files: Vec<String> = base.keys().cloned().collect();
    for e in registry["experts"].as_array().unwrap() {
        for t in e["tensors"].as_array().unwrap() {
            names_in_files.push(t["name"].as_str().unwrap().to_string());
        }
    }
    names_in_files.sort();
    names_in_files.dedup();
    assert_eq!(names_in_files, whole.keys().cloned().collect::<Vec<_>>());
    // The directory holds exactly the registry's files.
    listed.sort();
    assert_eq!(walk(&dir), listed);
    registry
}

#[test]
fn gpt_oss_sample_both_layouts() {
    for src in [sample_hf(), sample_original()] {
        let mnt = Mount::new(&src);
        for view in ["raw", "bf16"] {
            let r = check_split(&mnt, view, 4);
            assert_eq!(r["experts"].as_array().unwrap().len(), 2 * 4);
            assert_eq!(r["experts_per_token"], 2);
            assert_eq!(r["num_layers"], 2);
        }
        // Expert files of the bf16 view hold BF16 experts in the bf16 view's orientation.
        let ts = tensors_of(&mnt.join("bf16/experts/layer_01_expert_002.safetensors"));
        assert_eq!(
            ts["model.layers.1.mlp.experts.gate_up_proj"].1,
            vec![64, 128]
        );
        assert_eq!(ts["model.layers.1.mlp.experts.gate_up_proj"].0, "BF16");
    }
}

fn mixtral(dir: &Path, dtype: &'static str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut ts = vec![T::new("model.embed_tokens.weight", "BF16", &[16, 8], 1)];
    for l in 0..2 {
        ts.push(T::new(
            &format!("model.layers.{l}.block_sparse_moe.gate.weight"),
            "BF16",
            &[4, 8],
            2,
        ));
        ts.push(T::new(
            &format!("model.layers.{l}.self_attn.q_proj.weight"),
            "BF16",
            &[8, 8],
            3,
        ));
        for e in 0..4 {
            for w in ["w1", "w2", "w3"] {
                let seed = 100 + l * 10 + e * 3 + w.len() as u64;
                ts.push(T::new(
                    &format!("model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight"),
                    dtype,
                    &[6, 8],
                    seed,
                ));
            }
        }
    }
    write_safetensors(&dir.join("model.safetensors"), &ts);
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2}"#,
    )
    .unwrap();
}

#[test]
fn mixtral_style_per_expert_tensors() {
    for dtype in ["BF16", "F32"] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mixtral");
        mixtral(&src, dtype);
        let mnt = Mount::new(&src);
        for view in ["raw", "bf16"] {
            let r = check_split(&mnt, view, 4);
            let first = &r["experts"][0];
            assert_eq!(first["file"], "layer_00_expert_000.safetensors");
            assert_eq!(first["tensors"].as_array().unwrap().len(), 3);
        }
        let raw = tensors_of(&mnt.join("raw/experts/layer_01_expert_003.safetensors"));
        let src_t = source_tensors(&src);
        let name = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
        assert_eq!(raw[name], src_t[name]);
        let bf = tensors_of(&mnt.join("bf16/experts/layer_01_expert_003.safetensors"));
        assert_eq!(bf[name].0, "BF16");
    }
}

#[test]
fn gguf_moe_experts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moe.gguf");
    let q8 = |seed: u64, n: usize| {
        let mut b = bytes(seed, n / 32 * 34);
        for blk in b.chunks_exact_mut(34) {
            blk[0] = 0;
            blk[1] = 0x20;
        }
        b
    };
    write_gguf(
        &path,
        &[
            ("general.architecture", Kv::Str("llama")),
            ("llama.block_count", Kv::U32(1)),
            ("llama.expert_count", Kv::U32(4)),
            ("llama.expert_used_count", Kv::U32(2)),
        ],
        &[
            GT {
                name: "token_embd.weight".into(),
                ty: 0,
                dims: vec![64, 8],
                data: bytes(1, 64 * 8 * 4),
            },
            GT {
                name: "blk.0.ffn_gate_inp.weight".into(),
                ty: 0,
                dims: vec![64, 4],
                data: bytes(2, 64 * 4 * 4),
            },
            GT {
                name: "blk.0.ffn_up_exps.weight".into(),
                ty: 8,
                dims: vec![64, 8, 4],
                data: q8(3, 64 * 8 * 4),
            },
            GT {
                name: "blk.0.ffn_down_exps.weight".into(),
                ty: 8,
                dims: vec![64, 8, 4],
                data: q8(4, 64 * 8 * 4),
            },
        ],
    );
    let mnt = Mount::new(&path);
    for view in ["raw", "bf16"] {
        let r = check_split(&mnt, view, 4);
        assert_eq!(r["experts"].as_array().unwrap().len(), 4);
        assert_eq!(r["experts_per_token"], 2);
    }
    let e2 = tensors_of(&mnt.join("bf16/experts/layer_00_expert_002.safetensors"));
    assert_eq!(e2["blk.0.ffn_up_exps.weight"].1, vec![8, 64]);
}

#[test]
fn dense_model_has_no_experts_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dense");
    std::fs::create_dir(&src).unwrap();
    write_safetensors(
        &src.join("model.safetensors"),
        &[T::new(
            "model.layers.0.mlp.up_proj.weight",
            "BF16",
            &[4, 4],
            1,
        )],
    );
    std::fs::write(
        src.join("config.json"),
        r#"{"model_type": "llama", "num_hidden_layers": 1}"#,
    )
    .unwrap();
    let mnt = Mount::new(&src);
    assert!(!mnt.join("raw/experts").exists());
    assert!(!mnt.join("bf16/experts").exists());
}

/// Page-cache residency of `[start, end)` of `path`, in bytes (mincore).
fn resident(path: &Path, start: u64, end: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: read-only shared mapping of a file nobody writes during the test.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let page = 4096u64;
    let (a, b) = (start / page * page, end.div_ceil(page) * page);
    let pages = ((b - a) / page) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: the range lies within the mapping (rounded to pages inside the
    // file's last page), and `vec` has one byte per page.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(a as usize) as *mut libc::c_void,
            (b - a).min(map.len() as u64 - a) as usize,
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 == 1).count() as u64 * page
}

#[test]
fn reading_one_expert_touches_only_its_bytes() {
    // 8 experts, each four times the kernel's largest readahead window:
    // readaround and sequential readahead of the source map (which runs up
    // to two windows ahead) can reach an expert's neighbours, no further.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("moe");
    std::fs::create_dir(&src).unwrap();
    let e = 8usize;
    let max_ra_kb = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("queue/read_ahead_kb")).ok())
        .filter_map(|s| s.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(128);
    let per = (16 << 20).max(4 * max_ra_kb * 1024).next_multiple_of(4096);
    let ts = vec![
        T::new("model.embed_tokens.weight", "BF16", &[16, 8], 1),
        T::new(
            "model.layers.0.mlp.experts.up_proj",
            "BF16",
            &[e, per / 2],
            2,
        ),
    ];
    write_safetensors(&src.join("model.safetensors"), &ts);
    std::fs::write(
        src.join("config.json"),
        r#"{"num_local_experts": 8, "num_hidden_layers": 1}"#,
    )
    .unwrap();
    let file = src.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    let data_start = len - (e * per) as u64;
    let expert_range = |i: u64| {
        (
            data_start + i * per as u64,
            data_start + (i + 1) * per as u64,
        )
    };
    let f = std::fs::File::open(&file).unwrap();
    f.sync_all().unwrap();
    let evict = || {
        // SAFETY: advisory call on a valid descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    };

    // Mounting reads the header (and the kernel reads around it); evict
    // after mounting so that only what the expert read brings in is counted.
    let mnt = Mount::new(&src);
    evict();
    let before: Vec<u64> = (0..e as u64)
        .map(|i| {
            let (a, b) = expert_range(i);
            resident(&file, a, b)
        })
        .collect();
    // Pages the daemon still maps (the header's, with the kernel's
    // fault-around, at the start of expert 0) cannot be evicted; only
    // changes are counted below.
    assert!(
        before[1..].iter().all(|&r| r == 0),
        "could not evict: {before:?}"
    );

    let got = std::fs::read(mnt.join("raw/experts/layer_00_expert_003.safetensors")).unwrap();
    assert!(got.len() > per);
    let after: Vec<u64> = (0..e as u64)
        .map(|i| {
            let (a, b) = expert_range(i);
            resident(&file, a, b)
        })
        .collect();

    let (a, b) = expert_range(3);
    assert!(resident(&file, a, b) >= per as u64, "expert 3 was read");
    for i in [0usize, 1, 5, 6, 7] {
        assert_eq!(
            after[i], before[i],
            "expert {i} was touched reading expert 3: {after:?}"
        );
    }
    for i in [2usize, 4] {
        // Neighbours: at most the kernel's readahead past the boundary.
        assert!(
            after[i] <= (2 * max_ra_kb as u64 + 1024) * 1024,
            "expert {i}: {} bytes resident",
            after[i]
        );
    }
}
