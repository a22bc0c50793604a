//! Why a GGUF model is not mapped to a Hugging Face model, or why it has no
//! tokenizer files: [`GgufHfError`]; and why an [`Op`](super::Op) does not
//! fit its sources: [`OpError`].
//!
//! Each message is one line naming the key, value or tensor involved; the
//! view writes it into `manifest.json`'s notes, so the wording is part of
//! gyrofs's output (and tests compare it).

use serde_json::Value;
use thiserror::Error;

use crate::catalog::gguf::GgufValue;
use crate::quant::ggml::GgmlType;
use crate::view::compute::MAX_TRANSPOSED_ROW;

/// Why a GGUF model is not the Hugging Face model `gguf_hf::map` makes of
/// it (or, for the tokenizer variants, why it has no tokenizer files).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GgufHfError {
    // ---- metadata keys
    /// A key the mapping needs is absent.
    #[error("no {key} in the GGUF metadata")]
    MissingKey { key: &'static str },
    /// A key that must hold text holds `value`.
    #[error("{key} is {}, not a string", .value.to_json())]
    NotAString { key: String, value: GgufValue },
    /// A key that must hold an array holds `value`.
    #[error("{key} is {}, not an array", .value.to_json())]
    NotAnArray { key: String, value: GgufValue },

    // ---- the architecture
    /// transformers' GGUF loader does not know `arch`.
    #[error(
        "GGUF architecture '{arch}': transformers cannot load it from GGUF (not in GGUF_CONFIG_MAPPING)"
    )]
    UnsupportedArchitecture { arch: String },
    /// gyrofs has no tensor name table for `arch` (the GGUF architecture).
    #[error("GGUF architecture '{arch}': gyrofs has no tensor name table for it yet")]
    NoTensorTable { arch: String },
    /// Falcon-40B/180B, with `kv_heads` KV heads (or a second LayerNorm).
    #[error(
        "falcon with the new decoder architecture (Falcon-40B/180B: {kv_heads} KV heads, two \
         LayerNorms per block), which transformers cannot load from GGUF: llama.cpp \
         rearranges its fused QKV"
    )]
    FalconNewDecoder { kv_heads: u64 },
    /// StableLM 2 12B's stacked per-head q/k norms.
    #[error(
        "stablelm with per-head q/k LayerNorms (StableLM 2 12B), which \
         transformers' GGUF loader does not map"
    )]
    StableLmPerHeadNorms,

    // ---- the config
    /// A config key the tensors need (a head count) is absent.
    #[error("the GGUF metadata gives no {key}")]
    ConfigMissing { key: String },
    /// A config key the tensors need is not a count.
    #[error("config {key} is {value}, not a non-negative integer")]
    ConfigNotCount { key: String, value: Value },

    // ---- the tensors
    /// A fused-experts tensor in an architecture whose model has none.
    #[error(
        "GGUF tensor '{tensor}': experts, which the Hugging Face '{arch}' model has no place for"
    )]
    UnplacedExperts { tensor: String, arch: String },
    /// One half of a gate/up pair without the other.
    #[error("{tensor} has no matching {partner}")]
    NoPartner { tensor: String, partner: String },
    /// An op reads a tensor the file does not have.
    #[error("no GGUF tensor '{tensor}'")]
    MissingTensor { tensor: String },
    /// A tensor of a type gyrofs cannot dequantize.
    #[error(
        "GGUF tensor '{tensor}' has ggml type {}, which gyrofs cannot convert to BF16",
        .ty.name()
    )]
    Unconvertible { tensor: String, ty: GgmlType },
    /// The op making Hugging Face tensor `hf` from GGUF tensor `tensor`
    /// does not fit its sources' shapes.
    #[error("{hf} (from {tensor}): {source}")]
    BadShape {
        hf: String,
        tensor: String,
        source: OpError,
    },
    /// The op's sources are of different ggml types (a Gyro record names
    /// one dequantization for all).
    #[error("{hf} (from {tensor}): sources of different ggml types ({})", type_names(.types))]
    MixedTypes {
        hf: String,
        tensor: String,
        types: Vec<GgmlType>,
    },
    /// The op transposes rows of `len` elements, longer than the lazy
    /// implementation takes.
    #[error(
        "{hf} (from {tensor}): transposed rows of {len} elements, over gyrofs's limit of {MAX_TRANSPOSED_ROW}"
    )]
    RowTooLong {
        hf: String,
        tensor: String,
        len: u64,
    },
    /// The tensors are not a complete model of GGUF architecture `arch`
    /// (`complete::check`): `what` is missing.
    #[error("not a complete '{arch}' model: {what}")]
    Incomplete { arch: String, what: String },
    /// A GGUF tensor kept under its own name (no Hugging Face counterpart)
    /// whose name is also a Hugging Face tensor's.
    #[error(
        "GGUF tensor '{tensor}' has no Hugging Face counterpart, and its name is that of a mapped tensor"
    )]
    KeptNameTaken { tensor: String },
    /// Two GGUF tensors give the same Hugging Face tensor.
    #[error("GGUF tensors '{first}' and '{second}' both map to {hf}")]
    DuplicateTarget {
        first: String,
        second: String,
        hf: String,
    },

    // ---- the tokenizer
    /// No `tokenizer.ggml.model`: the file has no tokenizer.
    #[error("no tokenizer.ggml.model in the GGUF metadata: no tokenizer to build")]
    NoTokenizer,
    /// A tokenizer model gyrofs does not build.
    #[error("tokenizer.ggml.model '{model}': gyrofs builds llama and gpt2 tokenizers only")]
    UnsupportedTokenizer { model: String },
    /// No `tokenizer.ggml.tokens` array.
    #[error("no tokenizer.ggml.tokens array in the GGUF metadata")]
    NoTokens,
    /// `tokenizer.ggml.tokens` holds something other than text.
    #[error("tokenizer.ggml.tokens is not an array of strings")]
    TokensNotStrings,
    /// A special token id (`key`) that is no count.
    #[error("{key} is {}, not a token id", .value.to_json())]
    NotATokenId { key: String, value: GgufValue },
    /// A special token id (`key`) past the vocabulary.
    #[error("{key} is {id}, past the {tokens} tokens")]
    TokenIdPastEnd { key: String, id: u64, tokens: usize },
    /// `tokenizer.ggml.merges` holds something other than text.
    #[error("tokenizer.ggml.merges holds a non-string")]
    MergeNotString,
    /// A merge that is not `left right`.
    #[error("merge {merge:?} is not two tokens separated by one space")]
    BadMerge { merge: String },
    /// A byte-level BPE tokenizer cannot be rebuilt without its merges.
    #[error("a gpt2 (byte-level BPE) tokenizer without tokenizer.ggml.merges")]
    ByteLevelWithoutMerges,
    /// A SentencePiece tokenizer with neither scores nor merges.
    #[error("a SentencePiece tokenizer without tokenizer.ggml.scores or merges")]
    NoScoresOrMerges,
    /// `tokenizer.ggml.scores` is not an array as long as the vocabulary.
    #[error("tokenizer.ggml.scores is not one number per token")]
    ScoresNotPerToken,
    /// `tokenizer.ggml.scores` holds something other than numbers.
    #[error("tokenizer.ggml.scores holds a non-number")]
    ScoreNotNumber,
    /// A special token the post-processor needs has no id.
    #[error("special token {token:?} has no id")]
    SpecialTokenWithoutId { token: String },
    /// Building the tokenizer would allocate more than the source's
    /// metadata allows (a few times its size, with a floor).
    #[error(
        "{file}: not built: it would take more than {limit} bytes of memory, the most this GGUF's {metadata} bytes of metadata may make gyrofs allocate"
    )]
    TokenizerTooBig {
        file: String,
        limit: u64,
        metadata: u64,
    },
}

/// Why an [`Op`](super::Op) does not fit the shapes (or values) of its
/// sources.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// A one-source op given `got` sources.
    #[error("{op} takes one source, got {got}")]
    SourceCount { op: &'static str, got: usize },
    /// A many-source op given none.
    #[error("{op} of no tensors")]
    NoSources { op: &'static str },
    /// Rows permuted in a tensor of `rank` axes (1 or 2 are).
    #[error("unpermute_rows of a {rank}-D tensor")]
    UnpermuteRank { rank: usize },
    /// Rows that do not split into `n_head` heads of row pairs.
    #[error("unpermute_rows: {rows} rows are not a multiple of 2 x {n_head} heads")]
    UnpermuteRows { rows: u64, n_head: u64 },
    /// A transpose of fewer than two axes.
    #[error("transpose of a {rank}-D tensor")]
    TransposeRank { rank: usize },
    /// An interleave of tensors without axes.
    #[error("interleave of 0-D tensors")]
    InterleaveScalars,
    /// Interleaved sources of different shapes.
    #[error("interleave: shapes {first:?} and {other:?} differ")]
    InterleaveShapes { first: Vec<u64>, other: Vec<u64> },
    /// A concatenation along an axis the sources do not have.
    #[error("concat along axis {axis} of {rank}-D tensors")]
    ConcatAxis { axis: usize, rank: usize },
    /// Concatenated sources that differ other than along `axis`.
    #[error("concat along axis {axis}: shapes {first:?} and {other:?} differ")]
    ConcatShapes {
        axis: usize,
        first: Vec<u64>,
        other: Vec<u64>,
    },
    /// An output axis longer than 2^64 elements.
    #[error("{op}: size overflow")]
    Overflow { op: &'static str },
    /// An input whose value count is not its shape's (`Op::apply`).
    #[error("input of shape {shape:?} has {values} values")]
    InputLength { shape: Vec<u64>, values: usize },
}

/// `F16, Q8_0`: ggml type names for a message.
fn type_names(types: &[GgmlType]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let cases = [
            (
                GgufHfError::NotAString {
                    key: "general.architecture".into(),
                    value: GgufValue::F32(1e-5),
                },
                "general.architecture is 0.00001, not a string",
            ),
            (
                GgufHfError::MixedTypes {
                    hf: "h".into(),
                    tensor: "g".into(),
                    types: vec![GgmlType::F32, GgmlType::F16],
                },
                "h (from g): sources of different ggml types (F32, F16)",
            ),
            (
                GgufHfError::BadShape {
                    hf: "h".into(),
                    tensor: "g".into(),
                    source: OpError::ConcatShapes {
                        axis: 1,
                        first: vec![2, 1],
                        other: vec![3, 1],
                    },
                },
                "h (from g): concat along axis 1: shapes [2, 1] and [3, 1] differ",
            ),
            (
                GgufHfError::StableLmPerHeadNorms,
                "stablelm with per-head q/k LayerNorms (StableLM 2 12B), which \
                 transformers' GGUF loader does not map",
            ),
            (
                GgufHfError::BadMerge {
                    merge: "a \"b\"".into(),
                },
                r#"merge "a \"b\"" is not two tokens separated by one space"#,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
