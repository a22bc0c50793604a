//! A model as llama.cpp's converter writes it, decided at mount from the
//! Hugging Face folder view's tensor names and shapes and its config: the
//! output tensors in file order (name, shape, how their values are made)
//! and the hyperparameter keys. Types are chosen per output type
//! ([`Model::tensor_type`]); bytes are made on read (`data`).

use crate::quant::ggml::GgmlType;
use crate::view::gguf::arch::Arch;
use crate::view::gguf::config::Config;
use crate::view::gguf::tensors::{Data, OutTensor, Raw};
use crate::view::gguf::writer::Kv;

/// The output types the view offers, with their file names and
/// `general.file_type`.
pub const OUTTYPES: [(GgmlType, &str, u32); 4] = [
    (GgmlType::F32, "F32", 0),
    (GgmlType::F16, "F16", 1),
    (GgmlType::BF16, "BF16", 32),
    (GgmlType::Q8_0, "Q8_0", 7),
];

/// `general.file_type` of a model whose MXFP4 experts stay MXFP4, for the
/// float output types (`MOSTLY_MXFP4_MOE`).
pub const FILE_TYPE_MXFP4_MOE: u32 = 38;

/// A model the view writes.
#[derive(Debug)]
pub struct Model {
    pub arch: &'static dyn Arch,
    pub config: Config,
    pub tensors: Vec<OutTensor>,
    /// `general.size_label`, from the parameter counts.
    pub size_label: String,
}

/// Names whose tensors stay F32 whatever the output type (the converter's
/// list, for the architectures gyrofs writes).
const F32_TENSORS: &[&str] = &[
    "ffn_gate_inp",
    "ffn_gate_inp_shexp",
    "position_embd",
    "token_types",
];

impl Model {
    /// The type of `t` in a file of output type `out` (the converter's
    /// rules: 1-D tensors, norms, biases, routers and position embeddings
    /// stay F32; a Q8_0 tensor whose rows are not whole blocks is F16).
    pub fn tensor_type(t: &OutTensor, out: GgmlType) -> GgmlType {
        if let Data::Raw(_, ty) = &t.data {
            return *ty;
        }
        let stem = t.name.strip_suffix(".weight");
        let router = stem.is_some_and(|s| {
            let base = s.rsplit('.').next().unwrap_or(s);
            F32_TENSORS.contains(&base)
        });
        if t.shape.len() <= 1 || t.name.ends_with("_norm.weight") || router || stem.is_none() {
            return GgmlType::F32;
        }
        let row = t.shape.last().copied().unwrap_or(0);
        if out == GgmlType::Q8_0 && row % 32 != 0 {
            return GgmlType::F16;
        }
        out
    }

    /// Does the file keep MXFP4 experts (file type 38 for float outputs)?
    pub fn has_mxfp4(&self) -> bool {
        self.tensors
            .iter()
            .any(|t| matches!(t.data, Data::Raw(Raw::Mxfp4 { .. }, _)))
    }

    /// `general.file_type` of the file of output type `out`.
    pub fn file_type(&self, out: GgmlType) -> u32 {
        let (_, _, ft) = OUTTYPES
            .iter()
            .find(|o| o.0 == out)
            .copied()
            .unwrap_or(OUTTYPES[1]);
        if self.has_mxfp4() && out != GgmlType::Q8_0 {
            FILE_TYPE_MXFP4_MOE
        } else {
            ft
        }
    }

    /// The key/value pairs up to the tokenizer's, for output type `out`
    /// (`sampling`: the `general.sampling.*` keys of the generation config).
    pub fn kv(&self, out: GgmlType, sampling: &Kv) -> Kv {
        let mut kv = Kv::new();
        kv.str("general.architecture", self.arch.name());
        self.arch.early_kv(&self.config, &mut kv);
        kv.str("general.type", "model");
        kv.extend(sampling);
        kv.str("general.size_label", &self.size_label);
        self.arch
            .hparams(&self.config, &mut kv, self.file_type(out));
        kv.u32("general.quantization_version", 2);
        kv
    }
}

/// The `general.sampling.*` keys of a `generation_config.json` (gguf-py's
/// `Metadata.load`), in the order the writer adds them.
pub fn sampling(generation: &serde_json::Value) -> Kv {
    use crate::catalog::gguf::GgufValue;
    let mut kv = Kv::new();
    let int = |v: &serde_json::Value| v.as_i64().map(|i| GgufValue::I32(i as i32));
    let float = |v: &serde_json::Value| v.as_f64().map(|f| GgufValue::F32(f as f32));
    let keys: [(&str, &[&str], bool); 12] = [
        ("sequence", &["sequence"], false),
        ("top_k", &["top_k"], true),
        ("top_p", &["top_p"], false),
        ("min_p", &["min_p"], false),
        ("xtc_probability", &["xtc_probability"], false),
        ("xtc_threshold", &["xtc_threshold"], false),
        ("temp", &["temperature"], false),
        ("penalty_last_n", &["penalty_last_n"], true),
        (
            "penalty_repeat",
            &["penalty_repeat", "repetition_penalty"],
            false,
        ),
        ("mirostat", &["mirostat"], true),
        ("mirostat_tau", &["mirostat_tau"], false),
        ("mirostat_eta", &["mirostat_eta"], false),
    ];
    for (key, from, integer) in keys {
        let Some(v) = from
            .iter()
            .find_map(|k| generation.get(*k).filter(|v| !v.is_null()))
        else {
            continue;
        };
        let value = match (key, integer) {
            ("sequence", _) => v.as_str().map(|s| GgufValue::String(s.to_string())),
            (_, true) => int(v),
            (_, false) => float(v),
        };
        if let Some(value) = value {
            kv.set(&format!("general.sampling.{key}"), value);
        }
    }
    kv
}

/// `general.size_label` from the written tensors (gguf-py's
/// `get_total_parameter_count` and `size_label`).
pub fn size_label(tensors: &[OutTensor]) -> String {
    let (mut total, mut shared, mut expert) = (0u64, 0u64, 0u64);
    let (mut expert_sum, mut expert_tensors) = (0u64, 0u64);
    for t in tensors {
        let size: u64 = t.shape.iter().product();
        total += size;
        let experts = if t.name.contains("_exps.") && t.shape.len() >= 3 {
            let k = if t.name.ends_with(".bias") { 2 } else { 3 };
            Some(t.shape[t.shape.len() - k])
        } else {
            None
        };
        match experts {
            Some(e) if e > 0 => {
                expert += size / e;
                expert_sum += e;
                expert_tensors += 1;
            }
            _ => shared += size,
        }
    }
    let count = expert_sum.checked_div(expert_tensors).unwrap_or(0);
    if count > 0 {
        format!("{count}x{}", scaled(shared + expert))
    } else {
        scaled(total)
    }
}

/// `model_weight_count_rounded_notation`: `125K`, `1.0M`, `8.0B`.
fn scaled(n: u64) -> String {
    let n = n as f64;
    let (s, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    // Python: max(2 - len(str(round(s)).lstrip('0')), 0) decimals.
    let r = s.round_ties_even() as u64;
    let digits = if r == 0 { 0 } else { r.to_string().len() };
    let fix = 2usize.saturating_sub(digits);
    format!("{s:.fix$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::gguf::tensors::Values;

    #[test]
    fn size_labels() {
        assert_eq!(scaled(125_248), "125K");
        assert_eq!(scaled(999_999), "1000K");
        assert_eq!(scaled(1_000_001), "1.0M");
        assert_eq!(scaled(494_032_768), "494M");
        assert_eq!(scaled(8_030_261_248), "8.0B");
        assert_eq!(scaled(123), "0.12K");
    }

    #[test]
    fn f32_rules() {
        let t = |name: &str, shape: Vec<u64>| OutTensor::values(name, shape, Values::Hf(0));
        let q = GgmlType::Q8_0;
        assert_eq!(
            Model::tensor_type(&t("blk.0.attn_q.weight", vec![64, 64]), q),
            q
        );
        assert_eq!(
            Model::tensor_type(&t("blk.0.ffn_down.weight", vec![64, 48]), q),
            GgmlType::F16
        );
        assert_eq!(
            Model::tensor_type(&t("blk.0.attn_norm.weight", vec![64]), q),
            GgmlType::F32
        );
        assert_eq!(
            Model::tensor_type(&t("blk.0.ffn_gate_inp.weight", vec![8, 64]), q),
            GgmlType::F32
        );
        assert_eq!(
            Model::tensor_type(&t("blk.0.attn_qkv.bias", vec![3, 64]), q),
            GgmlType::F32
        );
    }
}
