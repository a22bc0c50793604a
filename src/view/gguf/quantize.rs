//! The K-quant files (`model-Q4_K_M.gguf`, `model-Q5_K_M.gguf`,
//! `model-Q6_K.gguf`, `model-Q4_0.gguf`) as llama-quantize (no importance
//! matrix, default options) writes them from the BF16 file: its tensor
//! order, its per-tensor type choice (`llama_tensor_get_type` with the
//! `_M` mixes' extra bits, the token embedding and output choices, the
//! fallbacks of rows that are not whole blocks) and its metadata
//! (docs/GGUF_OUT.md, "K-quant files"). Ported from `src/llama-quant.cpp`
//! of the llama.cpp vendored by llama-cpp-python 0.3.36. The bytes are
//! `quant::ggml_quantize`'s.

use crate::catalog::gguf::GgufValue;
use crate::quant::ggml::GgmlType;
use crate::view::gguf::model::Model;
use crate::view::gguf::tensors::Data;
use crate::view::gguf::writer::Kv;

/// A file type llama-quantize writes without an importance matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// The file name's part (`model-NAME.gguf`).
    pub name: &'static str,
    /// `general.file_type` (`llama_ftype`).
    pub ftype: u32,
    /// The default tensor type (`llama_ftype_get_default_type`).
    pub default: GgmlType,
}

pub const Q4_K_M: Mix = Mix {
    name: "Q4_K_M",
    ftype: 15,
    default: GgmlType::Q4_K,
};
pub const Q5_K_M: Mix = Mix {
    name: "Q5_K_M",
    ftype: 17,
    default: GgmlType::Q5_K,
};
pub const Q6_K: Mix = Mix {
    name: "Q6_K",
    ftype: 18,
    default: GgmlType::Q6_K,
};
pub const Q4_0: Mix = Mix {
    name: "Q4_0",
    ftype: 2,
    default: GgmlType::Q4_0,
};

/// The files, in the order `gguf/` lists them.
pub const MIXES: [Mix; 4] = [Q4_K_M, Q5_K_M, Q6_K, Q4_0];

/// What llama-quantize reads of the model's hyperparameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hparams {
    /// `{arch}.block_count` (`n_layer_all`).
    pub n_layer: i32,
    /// `{arch}.expert_count` (0 without).
    pub n_expert: u32,
    /// llama.cpp's `LLM_TYPE_70B` (llama: 80 layers with grouped-query
    /// attention and not 8 experts; qwen2: 80 layers).
    pub is_70b: bool,
}

impl Hparams {
    /// From the BF16 file's keys.
    pub fn of(kv: &Kv, arch: &str) -> Hparams {
        let u = |k: &str| match kv.get(&format!("{arch}.{k}")) {
            Some(GgufValue::U32(v)) => Some(*v),
            Some(GgufValue::I32(v)) => Some(*v as u32),
            _ => None,
        };
        let n_layer = u("block_count").unwrap_or(0) as i32;
        let n_expert = u("expert_count").unwrap_or(0);
        let heads = u("attention.head_count");
        let kv_heads = u("attention.head_count_kv").or(heads);
        let is_70b = n_layer == 80
            && match arch {
                "llama" => n_expert != 8 && heads != kv_heads,
                "qwen2" => true,
                _ => false,
            };
        Hparams {
            n_layer,
            n_expert,
            is_70b,
        }
    }
}

/// The layer of a tensor name as `sscanf(name, "blk.%d.", &l)` reads it
/// (`None` when there is none).
pub fn layer(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let v: i64 = digits[..n].parse().unwrap_or(i64::MAX);
    let v = v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    Some(if neg { v.wrapping_neg() } else { v })
}

/// The order llama-quantize writes tensors in (its loader's
/// `weight_name_comparer`): by layer (`blk.N.`; none first), then by name.
pub fn order<'a>(names: impl Iterator<Item = &'a str>) -> Vec<usize> {
    let mut keyed: Vec<(i32, &str, usize)> = names
        .enumerate()
        .map(|(i, n)| (layer(n).unwrap_or(-1), n, i))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// `tensor_get_category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    let rules = [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    rules
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Other, |r| r.1)
}

/// `ggml_n_dims` of a numpy-order shape: trailing `ne` of 1 (leading numpy
/// axes of 1) do not count.
pub fn n_dims(shape: &[u64]) -> usize {
    shape
        .iter()
        .position(|&d| d != 1)
        .map_or(1, |first| shape.len() - first)
}

/// `tensor_allows_quantization` with default options, for the names the
/// view's architectures write (and the general rules).
fn allows_quantization(name: &str, shape: &[u64]) -> bool {
    if n_dims(shape) < 2 || !name.ends_with("weight") {
        return false;
    }
    const NEVER: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    name != "position_embd.weight"
        && name != "token_types.weight"
        && !NEVER.iter().any(|s| name.contains(s))
}

/// `i_layer < n/8 || i_layer >= 7n/8 || (i_layer - n/8) % 3 == 2`.
fn use_more_bits(i: i32, n: i32) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// One tensor as llama-quantize sees it in the BF16 file.
#[derive(Debug, Clone, Copy)]
pub struct InTensor<'a> {
    pub name: &'a str,
    /// Numpy order.
    pub shape: &'a [u64],
    /// Its type in the BF16 file.
    pub ty: GgmlType,
}

/// Why llama-quantize would not write the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The type of each of `tensors` (given in llama-quantize's order, see
/// [`order`]) in the file of `mix`, as `llama_tensor_get_type` chooses it.
pub fn types(mix: Mix, hp: Hparams, tensors: &[InTensor]) -> Result<Vec<GgmlType>, Refused> {
    let tied = !tensors.iter().any(|t| category(t.name) == Category::Output);
    let n_attention_wv = tensors
        .iter()
        .filter(|t| {
            matches!(
                category(t.name),
                Category::AttnV | Category::AttnQkv | Category::AttnKvB
            )
        })
        .count() as i32;
    let mut i_attention_wv = 0i32;
    let mut i_ffn_down = 0i32;
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !allows_quantization(t.name, t.shape) {
            out.push(t.ty);
            continue;
        }
        let ncols = t.shape.last().copied().unwrap_or(1);
        let cat = category(t.name);
        let mut new = mix.default;
        let layer_of = |counter: i32| -> Result<i32, Refused> {
            if hp.n_expert <= 1 {
                return Ok(counter);
            }
            match layer(t.name) {
                Some(l) if (0..hp.n_layer).contains(&l) => Ok(l),
                Some(l) => Err(Refused(format!(
                    "bad layer {l} for tensor {}: must be in [0, {})",
                    t.name, hp.n_layer
                ))),
                None => Err(Refused(format!(
                    "failed to determine layer for tensor {}",
                    t.name
                ))),
            }
        };
        match cat {
            Category::Output => new = output_type(new, ncols),
            Category::TokenEmbd if tied => new = output_type(new, ncols),
            Category::AttnV | Category::AttnQkv | Category::AttnKvB => {
                if (mix == Q4_K_M || mix == Q5_K_M) && use_more_bits(i_attention_wv, n_attention_wv)
                {
                    new = GgmlType::Q6_K;
                }
                if hp.is_70b && matches!(new, GgmlType::Q3_K | GgmlType::Q4_K) {
                    new = GgmlType::Q5_K;
                }
                if hp.n_expert == 8 {
                    new = GgmlType::Q8_0;
                }
                i_attention_wv += 1;
            }
            Category::AttnK if hp.n_expert == 8 => new = GgmlType::Q8_0,
            Category::FfnDown => {
                let i_layer = layer_of(i_ffn_down)?;
                if (mix == Q4_K_M || mix == Q5_K_M) && use_more_bits(i_layer, hp.n_layer) {
                    new = GgmlType::Q6_K;
                }
                i_ffn_down += 1;
            }
            Category::AttnOutput if hp.n_expert == 8 && mix == Q4_K_M => new = GgmlType::Q5_K,
            Category::FfnGate | Category::FfnUp => {
                layer_of(0)?;
            }
            _ => {}
        }
        out.push(fallback(new, ncols));
    }
    Ok(out)
}

/// The output tensor's type (and a tied token embedding's): Q8_0 when its
/// rows are not whole blocks of the file's default type, else Q6_K (Q8_0
/// stays Q8_0).
fn output_type(default: GgmlType, ncols: u64) -> GgmlType {
    if !ncols.is_multiple_of(default.block_size()) {
        GgmlType::Q8_0
    } else if default != GgmlType::Q8_0 {
        GgmlType::Q6_K
    } else {
        default
    }
}

/// `tensor_type_fallback`: a type whose blocks do not fit the rows
/// (`ncols` values) becomes the 32-value type llama-quantize names for it,
/// and F16 when those do not fit either.
fn fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    if ncols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let ret = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(ret.block_size()) {
        ret
    } else {
        GgmlType::F16
    }
}

/// The file of `mix` for `model`: its tensors in llama-quantize's order
/// (indexes into `model.tensors`) and the type of each, or why
/// llama-quantize would refuse to write it.
pub fn plan(model: &Model, mix: Mix) -> Result<Vec<(usize, GgmlType)>, Refused> {
    if let Some(t) = model
        .tensors
        .iter()
        .find(|t| matches!(t.data, Data::Raw(..)))
    {
        return Err(Refused(format!(
            "llama-quantize does not requantize '{}' ({}) without --allow-requantize",
            t.name,
            Model::tensor_type(t, GgmlType::BF16)
        )));
    }
    let hp = Hparams::of(&model.kv(GgmlType::BF16, &Kv::new()), model.arch.name());
    let order = order(model.tensors.iter().map(|t| t.name.as_str()));
    let inputs: Vec<InTensor> = order
        .iter()
        .map(|&i| {
            let t = &model.tensors[i];
            InTensor {
                name: &t.name,
                shape: &t.shape,
                ty: Model::tensor_type(t, GgmlType::BF16),
            }
        })
        .collect();
    let types = types(mix, hp, &inputs)?;
    Ok(order.into_iter().zip(types).collect())
}

/// The keys of the file of `mix`: the BF16 file's (`bf16`), then
/// `general.quantization_version` and `general.file_type` moved to the end
/// (llama-quantize copies the keys, then sets these two, which removes and
/// appends them).
pub fn kv(bf16: &Kv, mix: Mix) -> Kv {
    let mut kv = bf16.clone();
    kv.remove("general.quantization_version");
    kv.remove("general.file_type");
    kv.u32("general.quantization_version", 2);
    kv.u32("general.file_type", mix.ftype);
    kv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_as_sscanf_reads_them() {
        assert_eq!(layer("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer("blk.x"), None);
        assert_eq!(layer("output.weight"), None);
        assert_eq!(layer("blk.3x"), Some(3));
    }

    #[test]
    fn order_is_by_layer_then_name() {
        let names = [
            "blk.10.a",
            "output.weight",
            "blk.2.b",
            "blk.2.a",
            "token_embd.weight",
        ];
        let o: Vec<&str> = order(names.iter().copied())
            .into_iter()
            .map(|i| names[i])
            .collect();
        assert_eq!(
            o,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn mixes_give_more_bits_where_llama_quantize_does() {
        // 8 layers: use_more_bits is true for layers 0, 3, 6, 7.
        let more: Vec<i32> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
        assert_eq!(more, [0, 3, 6, 7]);
        let hp = Hparams {
            n_layer: 2,
            n_expert: 0,
            is_70b: false,
        };
        let s = [256u64, 256];
        let narrow = [256u64, 64];
        let t = |name, shape| InTensor {
            name,
            shape,
            ty: GgmlType::BF16,
        };
        let ts = [
            t("token_embd.weight", &s[..]),
            t("blk.0.attn_v.weight", &s[..]),
            t("blk.0.ffn_down.weight", &narrow[..]),
            t("blk.1.attn_v.weight", &s[..]),
            t("blk.1.attn_norm.weight", &[256][..]),
        ];
        use GgmlType::*;
        assert_eq!(
            types(Q4_K_M, hp, &ts).unwrap(),
            [Q6_K, Q4_K, Q5_0, Q6_K, BF16]
        );
        assert_eq!(
            types(super::Q4_0, hp, &ts).unwrap(),
            [Q6_K, Q4_0, Q4_0, Q4_0, BF16]
        );
        assert_eq!(types(Q5_K_M, hp, &ts).unwrap()[2], Q5_1);
        assert_eq!(types(super::Q6_K, hp, &ts).unwrap()[2], Q8_0);
        assert_eq!(fallback(Q4_K, 48), F16);
    }

    /// The rules for 8 experts and for llama.cpp's 70B type, as
    /// llama-quantize chose them for a Mixtral with 8 experts and a Llama
    /// with 80 layers (hidden 32; checked against llama_model_quantize
    /// while porting: the whole files were equal).
    #[test]
    fn eight_experts_and_70b_as_llama_quantize_chooses() {
        use GgmlType::*;
        let s = [32u64, 32];
        let e = [8u64, 32, 32];
        let t = |name, shape| InTensor {
            name,
            shape,
            ty: BF16,
        };
        let moe = Hparams {
            n_layer: 2,
            n_expert: 8,
            is_70b: false,
        };
        let ts = [
            t("blk.0.attn_k.weight", &s[..]),
            t("blk.0.attn_output.weight", &s[..]),
            t("blk.0.attn_v.weight", &s[..]),
            t("blk.1.ffn_down_exps.weight", &e[..]),
        ];
        assert_eq!(types(Q4_K_M, moe, &ts).unwrap(), [Q8_0, Q5_1, Q8_0, Q8_0]);
        let kv = |layers: u32, heads: u32, kv_heads: u32| {
            let mut kv = Kv::new();
            kv.u32("llama.block_count", layers);
            kv.u32("llama.attention.head_count", heads);
            kv.u32("llama.attention.head_count_kv", kv_heads);
            Hparams::of(&kv, "llama")
        };
        assert!(kv(80, 4, 2).is_70b);
        assert!(!kv(80, 4, 4).is_70b);
        assert!(!kv(32, 4, 2).is_70b);
        let big = kv(80, 4, 2);
        let names: Vec<String> = (0..80).map(|i| format!("blk.{i}.attn_v.weight")).collect();
        let ts: Vec<InTensor> = names.iter().map(|n| t(n, &s[..])).collect();
        let got = types(Q4_K_M, big, &ts).unwrap();
        // Layer 1: more bits (Q6_K -> Q8_0); layer 20: Q4_K -> Q5_K (70B)
        // -> Q5_1 (rows of 32).
        assert_eq!((got[1], got[20]), (Q8_0, Q5_1));
    }
}
