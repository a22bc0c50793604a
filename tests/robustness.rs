//! No panic on any input: randomly shaped (valid or corrupt) checkpoints are
//! either refused with an error, or open into a tree every byte of which can
//! be read, in any chunking, with the same result. Runs on the library (no
//! FUSE), so it can try many inputs.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::*;
use gyrofs::volume::Volume;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const DTYPES: &[&str] = &[
    "BOOL", "F4", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32",
    "U32", "F32", "F64", "I64", "U64",
];

/// Names that exercise every view rule: MXFP4 pairs in both layouts, FP8
/// pairs, fused and per-expert tensors, gpt-oss original names.
fn name(r: &mut Rng, i: usize) -> String {
    let l = r.below(3);
    let e = r.below(5);
    let stems = [
        format!("model.layers.{l}.mlp.experts.gate_up_proj"),
        format!("model.layers.{l}.mlp.experts.{e}.w1.weight"),
        format!("block.{l}.mlp.mlp1_weight"),
        format!("block.{l}.attn.qkv.weight"),
        format!("blk.{l}.ffn_up_exps.weight"),
        format!("model.layers.{l}.self_attn.q_proj.weight"),
        format!("t{i}"),
    ];
    let stem = r.pick(&stems).clone();
    let suffix = *r.pick(&[
        "",
        "_blocks",
        "_scales",
        ".blocks",
        ".scales",
        "_scale_inv",
        "_bias",
    ]);
    format!("{stem}{suffix}")
}

fn random_checkpoint(r: &mut Rng, dir: &std::path::Path) {
    let mut ts: Vec<T> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for i in 0..1 + r.below(8) as usize {
        let n = name(r, i);
        if !names.insert(n.clone()) {
            continue;
        }
        let dtype = *r.pick(DTYPES);
        let rank = r.below(5) as usize;
        let mut shape: Vec<usize> = (0..rank)
            .map(|_| *r.pick(&[0usize, 1, 2, 3, 4, 5, 16, 32, 64]))
            .collect();
        if dtype == "F4" && shape.iter().product::<usize>() % 2 == 1 {
            shape.push(2);
        }
        // Sometimes make a well-formed MXFP4 or FP8 pair so the dequant paths run.
        if r.below(3) == 0 {
            let e = *r.pick(&[1usize, 2, 4]);
            let rows = *r.pick(&[1usize, 2, 3, 32]);
            let g = *r.pick(&[1usize, 2]);
            let stem = format!("model.layers.{}.mlp.experts.down_proj", r.below(2));
            if names.insert(format!("{stem}_blocks")) {
                names.insert(format!("{stem}_scales"));
                ts.push(T::new(
                    &format!("{stem}_blocks"),
                    "U8",
                    &[e, rows, g, 16],
                    r.next(),
                ));
                ts.push(T::new(
                    &format!("{stem}_scales"),
                    "U8",
                    &[e, rows, g],
                    r.next(),
                ));
            }
        }
        if r.below(4) == 0 {
            let (rows, cols) = (1 + r.below(200) as usize, 1 + r.below(200) as usize);
            let stem = format!("fp8.{i}.weight");
            ts.push(T::new(&stem, "F8_E4M3", &[rows, cols], r.next()));
            ts.push(T::new(
                &format!("{stem}_scale_inv"),
                "F32",
                &[rows.div_ceil(128), cols.div_ceil(128)],
                r.next(),
            ));
        }
        ts.push(T::new(&n, dtype, &shape, r.next()));
    }
    write_safetensors(&dir.join("model.safetensors"), &ts);
    let config = match r.below(4) {
        0 => None,
        1 => Some(format!(r#"{{"model_type": "gpt_oss", "num_local_experts": {}, "num_hidden_layers": 3}}"#, r.below(6))),
        2 => Some(r#"{"num_experts": 4, "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}"#.to_string()),
        _ => Some(format!(
            r#"{{"num_hidden_layers": 3, "num_experts": 2, "experts_per_token": 1, "vocab_size": 8, "hidden_size": 32,
            "intermediate_size": 32, "swiglu_limit": 7.0, "head_dim": {}, "num_attention_heads": 2,
            "num_key_value_heads": 1, "sliding_window": 4, "initial_context_length": 16, "rope_theta": 1000,
            "rope_scaling_factor": 2.0, "rope_ntk_alpha": 1, "rope_ntk_beta": 32}}"#,
            r.below(4)
        )),
    };
    if let Some(c) = config {
        std::fs::write(dir.join("config.json"), c).unwrap();
    }
    if r.below(3) == 0 {
        let dtypes: serde_json::Map<String, serde_json::Value> = ts
            .iter()
            .map(|t| (t.name.clone(), (*r.pick(&["BF16", "FP4", "UE8"])).into()))
            .collect();
        std::fs::write(
            dir.join("dtypes.json"),
            serde_json::to_string(&dtypes).unwrap(),
        )
        .unwrap();
    }
}

/// Read every file whole and in random chunks; the bytes must agree.
fn read_everything(v: &Volume, r: &mut Rng) {
    for id in 0..v.tree.len() {
        let Some(f) = v.file(id) else { continue };
        let whole = v.read(id, 0, f.size as usize).expect("read").to_vec();
        assert_eq!(whole.len() as u64, f.size, "{}", v.path(id));
        let mut at = 0u64;
        while at < f.size {
            let n = 1 + r.below(3000) as usize;
            let part = v.read(id, at, n).expect("read");
            assert_eq!(
                &part[..],
                &whole[at as usize..(at as usize + n).min(whole.len())]
            );
            at += n as u64;
        }
    }
}

#[test]
fn random_checkpoints_never_panic() {
    let mut r = Rng(0x5EED_1234_ABCD_0001);
    let mut opened = 0;
    for case in 0..300 {
        let dir = tempfile::tempdir().unwrap();
        random_checkpoint(&mut r, dir.path());
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(v) = Volume::open(dir.path()) {
                read_everything(&v, &mut Rng(case + 1));
                true
            } else {
                false
            }
        }));
        match result {
            Ok(true) => opened += 1,
            Ok(false) => {}
            Err(_) => {
                let keep = dir.keep();
                panic!("case {case} panicked; input kept in {}", keep.display());
            }
        }
    }
    assert!(
        opened > 200,
        "only {opened} of 300 random checkpoints opened"
    );
}

#[test]
fn corrupted_headers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.safetensors");
    write_safetensors(
        &src,
        &[
            T::new("a_blocks", "U8", &[2, 3, 1, 16], 1),
            T::new("a_scales", "U8", &[2, 3, 1], 2),
            T::new("b", "F32", &[3, 5], 3),
        ],
    );
    let good = std::fs::read(&src).unwrap();
    let mut r = Rng(99);
    for i in 0..2000 {
        let mut b = good.clone();
        if i < good.len().min(600) {
            b.truncate(i);
        } else {
            for _ in 0..1 + r.below(3) {
                let at = r.below(good.len().min(400) as u64) as usize;
                b[at] = r.next() as u8;
            }
        }
        std::fs::write(&src, &b).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(v) = Volume::open(&src) {
                read_everything(&v, &mut r.clone_seed());
            }
        }));
        assert!(
            outcome.is_ok(),
            "panicked on corrupted input #{i}: {:?}",
            &b[..b.len().min(200)]
        );
    }
}

impl Rng {
    fn clone_seed(&self) -> Rng {
        Rng(self.0 | 1)
    }
}
