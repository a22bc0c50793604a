//! No panic on any input: randomly shaped (valid or corrupt) checkpoints are
//! either refused with an error, or open into a tree every byte of which can
//! be read, in any chunking, with the same result. Runs on the library (no
//! FUSE), so it can try many inputs.
//!
//! Inputs are proptest strategies: random checkpoints in both layouts
//! (Hugging Face names, and gpt-oss original names with `dtypes.json`), one
//! file or shards with or without an index, MXFP4 pairs of either naming,
//! block-scaled FP8 pairs with their config, fused and per-expert tensors,
//! configs that make the experts and gpt-oss views run; and the same
//! checkpoints with one file truncated or a few bytes overwritten. A failing
//! case is shrunk to a small one and its seed kept in
//! `tests/proptest-regressions/robustness.txt` (replayed first by every
//! run). `PROPTEST_CASES=N` runs N cases per property instead of the
//! defaults below, which keep `cargo test` fast.

mod common;

use std::path::Path;

use common::*;
use gyrofs::volume::Volume;
use proptest::prelude::*;
use proptest::sample::{Index, select};

/// Cases per property: `default`, or `PROPTEST_CASES` when set. Failures
/// are kept in tests/proptest-regressions/robustness.txt.
fn config(default: u32) -> ProptestConfig {
    proptest_config(default, "tests/proptest-regressions/robustness.txt")
}

const DTYPES: &[&str] = &[
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
    "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
];

/// Endings that make a name one half of a pair, a bias, or nothing special.
const SUFFIXES: &[&str] = &[
    "",
    "_blocks",
    "_scales",
    ".blocks",
    ".scales",
    "_scale_inv",
    "_bias",
];

/// Names that exercise every view rule: MXFP4 pairs in both layouts, FP8
/// pairs, fused and per-expert tensors, gpt-oss original names.
fn name(i: usize) -> impl Strategy<Value = String> {
    (0..3u64, 0..5u64, 0..8usize, select(SUFFIXES)).prop_map(move |(l, e, stem, suffix)| {
        let stem = match stem {
            0 => format!("model.layers.{l}.mlp.experts.gate_up_proj"),
            1 => format!("model.layers.{l}.mlp.experts.{e}.w1.weight"),
            2 => format!("block.{l}.mlp.mlp1_weight"),
            3 => format!("block.{l}.attn.qkv.weight"),
            4 => format!("blk.{l}.ffn_up_exps.weight"),
            5 => format!("model.layers.{l}.self_attn.q_proj.weight"),
            6 => "norm.scale".to_string(),
            _ => format!("t{i}"),
        };
        format!("{stem}{suffix}")
    })
}

/// A shape of rank 0 to 4 with at most 2^14 elements, whose byte size is
/// whole for `dtype` (F4 needs an even count, F6 a multiple of 4).
fn shape(dtype: &'static str) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(select(&[0usize, 1, 2, 3, 4, 5, 16, 32, 64][..]), 0..5).prop_map(
        move |mut s| {
            while s.iter().product::<usize>() > 1 << 14 {
                s.pop();
            }
            let n: usize = s.iter().product();
            if !(n * elem_bits(dtype)).is_multiple_of(8) {
                s.push(4);
            }
            s
        },
    )
}

fn tensor(i: usize) -> impl Strategy<Value = T> {
    (name(i), select(DTYPES))
        .prop_flat_map(|(n, d)| (Just(n), Just(d), shape(d), any::<u64>()))
        .prop_map(|(n, d, s, seed)| T::new(&n, d, &s, seed))
}

/// A well-formed MXFP4 pair: `[E, rows, G, 16]` blocks and `[E, rows, G]`
/// scales, named as Hugging Face (`_blocks`) or gpt-oss original (`.blocks`).
fn mxfp4_pair() -> impl Strategy<Value = Vec<T>> {
    (
        any::<bool>(),
        0..2u64,
        select(&[1usize, 2, 4][..]),
        select(&[1usize, 2, 3, 32][..]),
        1..3usize,
        any::<u64>(),
    )
        .prop_map(|(hf, l, e, rows, g, seed)| {
            let (stem, sep) = if hf {
                (format!("model.layers.{l}.mlp.experts.down_proj"), "_")
            } else {
                (format!("block.{l}.mlp.mlp2_weight"), ".")
            };
            vec![
                T::new(&format!("{stem}{sep}blocks"), "U8", &[e, rows, g, 16], seed),
                T::new(&format!("{stem}{sep}scales"), "U8", &[e, rows, g], !seed),
            ]
        })
}

/// A block-scaled FP8 pair for blocks of `block` rows x cols.
fn fp8_pair(block: (usize, usize)) -> impl Strategy<Value = Vec<T>> {
    (0..4usize, 1..200usize, 1..200usize, any::<u64>()).prop_map(move |(i, rows, cols, seed)| {
        let w = format!("fp8.{i}.weight");
        let grid = [rows.div_ceil(block.0), cols.div_ceil(block.1)];
        vec![
            T::new(&w, "F8_E4M3", &[rows, cols], seed),
            T::new(&format!("{w}_scale_inv"), "F32", &grid, !seed),
        ]
    })
}

/// config.json: none, a Hugging Face gpt-oss (experts), an FP8 one (block
/// size), or a gpt-oss original one (q/k/v split by `head_dim`).
fn config_json(block: (usize, usize)) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (0..6u64).prop_map(|e| Some(format!(
            r#"{{"model_type": "gpt_oss", "num_local_experts": {e}, "num_hidden_layers": 3}}"#
        ))),
        Just(Some(format!(
            r#"{{"num_experts": 4, "quantization_config": {{"quant_method": "fp8", "weight_block_size": [{}, {}]}}}}"#,
            block.0, block.1
        ))),
        (0..4u64).prop_map(|head_dim| Some(format!(
            r#"{{"num_hidden_layers": 3, "num_experts": 2, "experts_per_token": 1, "vocab_size": 8, "hidden_size": 32,
            "intermediate_size": 32, "swiglu_limit": 7.0, "head_dim": {head_dim}, "num_attention_heads": 2,
            "num_key_value_heads": 1, "sliding_window": 4, "initial_context_length": 16, "rope_theta": 1000,
            "rope_scaling_factor": 2.0, "rope_ntk_alpha": 1, "rope_ntk_beta": 32}}"#
        ))),
    ]
}

/// A checkpoint folder to write.
#[derive(Debug, Clone)]
struct Checkpoint {
    /// Unique names, in the order they were generated.
    tensors: Vec<T>,
    /// 1 (`model.safetensors`) or more shards; tensor `i` goes to shard `i % shards`.
    shards: usize,
    /// With several shards: write `model.safetensors.index.json`.
    index: bool,
    config: Option<String>,
    /// `dtypes.json` (gpt-oss original layout): a logical dtype per tensor.
    dtypes: Option<Vec<&'static str>>,
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    let block = select(&[(128usize, 128usize), (8, 16), (1, 1), (64, 200)][..]);
    block
        .prop_flat_map(|block| {
            (
                prop::collection::vec((0..8usize).prop_flat_map(tensor), 1..8),
                prop::option::weighted(0.3, mxfp4_pair()),
                prop::option::weighted(0.25, fp8_pair(block)),
                config_json(block),
                prop::option::weighted(
                    0.3,
                    prop::collection::vec(select(&["BF16", "FP4", "UE8"][..]), 12),
                ),
                1..4usize,
                any::<bool>(),
            )
        })
        .prop_map(|(singles, mxfp4, fp8, config, dtypes, shards, index)| {
            let mut tensors: Vec<T> = Vec::new();
            let all = mxfp4.into_iter().flatten().chain(fp8.into_iter().flatten());
            for t in all.chain(singles) {
                if !tensors.iter().any(|u| u.name == t.name) {
                    tensors.push(t);
                }
            }
            Checkpoint {
                shards: shards.min(tensors.len()),
                tensors,
                index,
                config,
                dtypes,
            }
        })
}

impl Checkpoint {
    /// Write the checkpoint into `dir`; returns the files written (relative names).
    fn write(&self, dir: &Path) -> Vec<String> {
        let mut written = Vec::new();
        if self.shards == 1 {
            write_safetensors(&dir.join("model.safetensors"), &self.tensors);
            written.push("model.safetensors".to_string());
        } else {
            let shards: Vec<Vec<T>> = (0..self.shards)
                .map(|s| {
                    let mine = self.tensors.iter().enumerate();
                    mine.filter(|(i, _)| i % self.shards == s)
                        .map(|(_, t)| t.clone())
                        .collect()
                })
                .collect();
            write_sharded(dir, &shards);
            for i in 0..self.shards {
                written.push(format!(
                    "model-{:05}-of-{:05}.safetensors",
                    i + 1,
                    self.shards
                ));
            }
            if self.index {
                written.push("model.safetensors.index.json".to_string());
            } else {
                std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
            }
        }
        if let Some(c) = &self.config {
            std::fs::write(dir.join("config.json"), c).unwrap();
            written.push("config.json".to_string());
        }
        if let Some(logical) = &self.dtypes {
            let map: serde_json::Map<String, serde_json::Value> = self
                .tensors
                .iter()
                .zip(logical.iter().cycle())
                .map(|(t, l)| (t.name.clone(), (*l).into()))
                .collect();
            let text = serde_json::to_string(&map).unwrap();
            std::fs::write(dir.join("dtypes.json"), text).unwrap();
            written.push("dtypes.json".to_string());
        }
        written
    }
}

/// Read every file whole, then in chunks of the sizes `chunks` (cycled);
/// the bytes must agree, and reads at and past the end give nothing.
fn read_everything(v: &Volume, chunks: &[usize]) -> Result<(), TestCaseError> {
    for id in 0..v.tree.len() {
        let Some(f) = v.file(id) else { continue };
        let path = v.path(id);
        let whole = v.read(id, 0, f.size as usize + 1);
        let whole = whole.map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        prop_assert_eq!(whole.len() as u64, f.size, "{}", path);
        let mut at = 0usize;
        for &n in chunks.iter().cycle() {
            if at >= whole.len() {
                break;
            }
            let part = v.read(id, at as u64, n);
            let part = part.map_err(|e| TestCaseError::fail(format!("{path} at {at}: {e}")))?;
            let end = (at + n).min(whole.len());
            prop_assert!(
                part[..] == whole[at..end],
                "{} differs at {}+{}",
                path,
                at,
                n
            );
            at = end;
        }
        prop_assert!(v.read(id, f.size, 7).unwrap().is_empty());
        prop_assert!(v.read(id, u64::MAX, usize::MAX).unwrap().is_empty());
    }
    Ok(())
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..3000usize, 1..6)
}

/// How to damage one file of a checkpoint.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut the file at this fraction of its length.
    Truncate(Index),
    /// Overwrite bytes in its first 400 (header, JSON) with these values.
    Overwrite(Vec<(Index, u8)>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        prop::collection::vec((any::<Index>(), any::<u8>()), 1..4).prop_map(Damage::Overwrite),
    ]
}

impl Damage {
    fn apply(&self, b: &mut Vec<u8>) {
        match self {
            Damage::Truncate(at) => b.truncate(at.index(b.len() + 1)),
            Damage::Overwrite(edits) if !b.is_empty() => {
                for (at, byte) in edits {
                    let n = b.len().min(400);
                    b[at.index(n)] = *byte;
                }
            }
            Damage::Overwrite(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Well-formed random checkpoints always open, and read the same in any
    /// chunking.
    #[test]
    fn random_checkpoints_open_and_read(ck in checkpoint(), chunks in chunks()) {
        let dir = tempfile::tempdir().unwrap();
        ck.write(dir.path());
        let v = Volume::open(dir.path());
        let v = v.map_err(|e| TestCaseError::fail(format!("refused a valid checkpoint: {e}")))?;
        read_everything(&v, &chunks)?;
    }

    /// The same checkpoints with one file damaged are refused with an error
    /// or open and read consistently; never a panic.
    #[test]
    fn damaged_checkpoints_never_panic(
        ck in checkpoint(),
        which in any::<Index>(),
        damage in damage(),
        chunks in chunks(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = ck.write(dir.path());
        let victim = dir.path().join(which.get(&files));
        let mut bytes = std::fs::read(&victim).unwrap();
        damage.apply(&mut bytes);
        std::fs::write(&victim, &bytes).unwrap();
        if let Ok(v) = Volume::open(dir.path()) {
            read_everything(&v, &chunks)?;
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Damage to a single safetensors file, opened by its path.
    #[test]
    fn damaged_single_files_never_panic(
        tensors in prop::collection::vec((0..8usize).prop_flat_map(tensor), 1..4),
        damage in damage(),
        chunks in chunks(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.safetensors");
        let mut unique: Vec<T> = Vec::new();
        for t in tensors.into_iter().chain([
            T::new("a_blocks", "U8", &[2, 3, 1, 16], 1),
            T::new("a_scales", "U8", &[2, 3, 1], 2),
        ]) {
            if !unique.iter().any(|u| u.name == t.name) {
                unique.push(t);
            }
        }
        write_safetensors(&src, &unique);
        let mut bytes = std::fs::read(&src).unwrap();
        damage.apply(&mut bytes);
        std::fs::write(&src, &bytes).unwrap();
        if let Ok(v) = Volume::open(&src) {
            read_everything(&v, &chunks)?;
        }
    }
}
