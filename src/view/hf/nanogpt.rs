//! nanoGPT-style GPT-2 training checkpoints -> Hugging Face `GPT2LMHeadModel`.
//!
//! A training checkpoint (`ckpt.pt`: `{"model": state_dict, "optimizer": ...,
//! "model_args": {...}, "iter_num": ..., "config": {...}}`) holds a GPT-2 in
//! nanoGPT's layout. This module is the mapping the converted view applies
//! (documented in docs/VIEWS.md), so that `from_pretrained(MNT/bf16)` loads
//! it as a `GPT2LMHeadModel` with the same logits:
//! - the model's tensors keep their names (nanoGPT names its modules as HF
//!   GPT-2 does), without the `model.` key and the `_orig_mod.`
//!   (`torch.compile`) or `module.` (DDP) prefixes;
//! - the `nn.Linear` weights of `attn.c_attn`, `attn.c_proj`, `mlp.c_fc` and
//!   `mlp.c_proj` (`[out, in]`) are transposed into HF's `Conv1D` layout
//!   (`[in, out]`);
//! - the causal-mask buffers `attn.bias` / `attn.masked_bias` are dropped;
//! - a model saved with `bias=False` gets zero biases (HF GPT-2 has them),
//!   recorded as synthesized;
//! - `lm_head.weight` tied to `transformer.wte.weight` (the same storage) is
//!   left out, as `save_pretrained` does (`tie_word_embeddings: true`);
//! - everything else in the checkpoint (optimizer state, ...) stays in `raw/`.
//!
//! `config.json` comes from `model_args` (or the training `config`):
//! `n_layer`, `n_head`, `n_embd`, `block_size` -> `n_positions`, the
//! vocabulary size of `wte` (nanoGPT pads it to 50304), and
//! `activation_function: "gelu"`: nanoGPT's `nn.GELU()` is the exact erf
//! GELU, while HF GPT-2's default `gelu_new` is the tanh approximation and
//! gives other logits.

use serde_json::{Value, json};

use crate::catalog::index_by_name;
use crate::catalog::{Catalog, SourceFormat, TensorId};

/// What the mapping makes of one output tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Source tensor `id` under `name`, as it is.
    Keep { name: String, id: TensorId },
    /// Source tensor `id` (2-D) transposed, under `name`.
    Transpose { name: String, id: TensorId },
    /// Zeros of `shape`, under `name`.
    Zeros { name: String, shape: Vec<u64> },
}

/// A nanoGPT checkpoint recognised, ready to map.
#[derive(Debug, Clone)]
pub struct NanoGpt {
    pub outputs: Vec<Out>,
    pub config: Value,
}

/// Prefixes nanoGPT checkpoints put before `transformer.` (the `model` key,
/// then `torch.compile`'s or DDP's wrapper).
const PREFIXES: [&str; 6] = [
    "model._orig_mod.",
    "model.module._orig_mod.",
    "model.module.",
    "model.",
    "_orig_mod.",
    "module.",
];

/// The Conv1D weights HF GPT-2 holds transposed against `nn.Linear`.
const CONV1D: [&str; 4] = [
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
];

/// Recognise a nanoGPT checkpoint. `Ok(None)`: not one (no
/// `...transformer.wte.weight`). `Err(why)`: one, but the mapping cannot be
/// made (no `model_args` nor `config`, shapes that disagree): the caller
/// notes why and keeps the checkpoint's own names.
pub fn detect(catalog: &Catalog) -> Result<Option<NanoGpt>, String> {
    if catalog.format != SourceFormat::Pytorch {
        return Ok(None);
    }
    let index = index_by_name(&catalog.tensors);
    let Some(prefix) = PREFIXES
        .iter()
        .find(|p| index.contains_key(format!("{p}transformer.wte.weight").as_str()))
    else {
        return Ok(None);
    };
    let get = |name: &str| index.get(format!("{prefix}{name}").as_str()).copied();
    let args = args(catalog).ok_or_else(|| {
        "a nanoGPT-style GPT-2 checkpoint, but it has neither 'model_args' nor a 'config' \
         with n_layer, n_head and n_embd: bf16/ keeps the checkpoint's own names"
            .to_string()
    })?;
    let wte = catalog.tensor(get("transformer.wte.weight").expect("found"));
    let [vocab, n_embd] = wte.shape[..] else {
        return Err(format!(
            "transformer.wte.weight has shape {:?}, not [vocab, n_embd]",
            wte.shape
        ));
    };
    if n_embd != args.n_embd {
        return Err(format!(
            "transformer.wte.weight has {n_embd} columns but model_args says n_embd {}",
            args.n_embd
        ));
    }

    let mut outputs = Vec::new();
    let keep = |name: &str, outputs: &mut Vec<Out>| -> Result<(), String> {
        match get(name) {
            Some(id) => {
                let t = catalog.tensor(id);
                if CONV1D.iter().any(|c| name.ends_with(c)) {
                    if t.shape.len() != 2 {
                        return Err(format!("{name} has shape {:?}, not 2-D", t.shape));
                    }
                    if t.shape[0] > crate::view::compute::MAX_TRANSPOSED_ROW {
                        return Err(format!(
                            "{name} has {} rows: its transpose's rows would be over gyrofs's \
                             limit of {} values",
                            t.shape[0],
                            crate::view::compute::MAX_TRANSPOSED_ROW
                        ));
                    }
                    outputs.push(Out::Transpose {
                        name: name.to_string(),
                        id,
                    });
                } else {
                    outputs.push(Out::Keep {
                        name: name.to_string(),
                        id,
                    });
                }
            }
            None => return Err(format!("no tensor {prefix}{name}")),
        }
        Ok(())
    };
    let bias = |name: &str, len: u64, outputs: &mut Vec<Out>| {
        let out = match get(name) {
            Some(id) => Out::Keep {
                name: name.to_string(),
                id,
            },
            None => Out::Zeros {
                name: name.to_string(),
                shape: vec![len],
            },
        };
        outputs.push(out);
    };
    let n = n_embd;
    keep("transformer.wte.weight", &mut outputs)?;
    keep("transformer.wpe.weight", &mut outputs)?;
    for l in 0..args.n_layer {
        let p = format!("transformer.h.{l}.");
        keep(&format!("{p}ln_1.weight"), &mut outputs)?;
        bias(&format!("{p}ln_1.bias"), n, &mut outputs);
        keep(&format!("{p}attn.c_attn.weight"), &mut outputs)?;
        bias(&format!("{p}attn.c_attn.bias"), 3 * n, &mut outputs);
        keep(&format!("{p}attn.c_proj.weight"), &mut outputs)?;
        bias(&format!("{p}attn.c_proj.bias"), n, &mut outputs);
        keep(&format!("{p}ln_2.weight"), &mut outputs)?;
        bias(&format!("{p}ln_2.bias"), n, &mut outputs);
        keep(&format!("{p}mlp.c_fc.weight"), &mut outputs)?;
        bias(&format!("{p}mlp.c_fc.bias"), 4 * n, &mut outputs);
        keep(&format!("{p}mlp.c_proj.weight"), &mut outputs)?;
        bias(&format!("{p}mlp.c_proj.bias"), n, &mut outputs);
    }
    keep("transformer.ln_f.weight", &mut outputs)?;
    bias("transformer.ln_f.bias", n, &mut outputs);
    // lm_head: tied (the same bytes as wte) -> left to HF's tying.
    let tied = match get("lm_head.weight") {
        None => true,
        Some(id) => {
            let h = catalog.tensor(id);
            let same = h.extent == wte.extent && h.shape == wte.shape && h.layout == wte.layout;
            if !same {
                outputs.push(Out::Keep {
                    name: "lm_head.weight".into(),
                    id,
                });
            }
            same
        }
    };
    let mut config = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "n_embd": n_embd,
        "n_positions": args.block_size,
        "n_ctx": args.block_size,
        "vocab_size": vocab,
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "attn_pdrop": args.dropout,
        "embd_pdrop": args.dropout,
        "resid_pdrop": args.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "use_cache": true,
        "tie_word_embeddings": tied,
    });
    // GPT-2's <|endoftext|>, when the vocabulary has it (a tiny model's
    // does not; transformers' default would then point past it).
    let eot = if vocab > 50256 {
        json!(50256)
    } else {
        Value::Null
    };
    config["bos_token_id"] = eot.clone();
    config["eos_token_id"] = eot;
    Ok(Some(NanoGpt { outputs, config }))
}

/// The model's hyper-parameters.
struct Args {
    n_layer: u64,
    n_head: u64,
    n_embd: u64,
    block_size: u64,
    dropout: f64,
}

/// `model_args`, else the training `config`, of the pickled checkpoint.
fn args(catalog: &Catalog) -> Option<Args> {
    let pickle = catalog.pickle.as_ref()?;
    ["model_args", "config"].iter().find_map(|k| {
        let a = pickle.get(k)?;
        let int = |k: &str| a.get(k)?.as_u64();
        Some(Args {
            n_layer: int("n_layer")?,
            n_head: int("n_head")?,
            n_embd: int("n_embd")?,
            block_size: int("block_size").unwrap_or(1024),
            dropout: a.get("dropout").and_then(Value::as_f64).unwrap_or(0.0),
        })
    })
}

/// Names of tensors the mapping leaves in `raw/` only (all but the model's).
pub fn left_out(catalog: &Catalog, g: &NanoGpt) -> usize {
    let used: std::collections::HashSet<TensorId> = g
        .outputs
        .iter()
        .filter_map(|o| match o {
            Out::Keep { id, .. } | Out::Transpose { id, .. } => Some(*id),
            Out::Zeros { .. } => None,
        })
        .collect();
    catalog.tensors.len() - used.len()
}
