//! Views: the virtual files built from a catalog.
//!
//! Nothing per tensor is built at mount. Each view decides, from the
//! catalog, what it holds in compact form and lays out its names in the
//! [`Tree`]; a file's bytes (a [`VFile`]: header bytes, source extents and
//! computed ranges) are built only when the kernel first asks for it (the
//! volume caches the result). Reading is done by `crate::read`.
//!
//! - `file`: the shape of a virtual file ([`VFile`], [`Segment`],
//!   [`Compute`]); `registry`: the [`View`] trait, the list of views
//!   ([`registry::BUILDERS`]) and [`build`]; `tree`: the names.
//! - One module per view: `raw` (`raw/`: lossless files), `converted`
//!   (`bf16/`, `f16/`, `f32/`: the model as a Hugging Face folder,
//!   dequantized / converted), `experts` (one file per MoE expert, in `raw/`
//!   and each converted view), `manifest` (`manifest.json`, streamed, and
//!   `gguf_metadata.json`).
//! - The mappings from a family's layout to the Hugging Face one that the
//!   converted views use: `gpt_oss` (the gpt-oss `original/` layout),
//!   `gguf_hf` (GGUF models), `nanogpt` (nanoGPT training checkpoints).
//! - Shared machinery: `compute` (the computed segments), `header` (the
//!   Gyro safetensors header every virtual safetensors file starts with),
//!   `record` (the typed provenance record of each of its tensors), `names`
//!   (tensor names escaped into file names).

pub mod compute;
pub mod converted;
pub mod experts;
mod file;
pub mod gguf_hf;
pub mod gpt_oss;
pub mod header;
pub mod manifest;
pub mod names;
pub mod nanogpt;
pub mod raw;
pub mod record;
pub mod registry;
pub mod tree;

pub use file::{Compute, Segment, VFile};
pub use registry::{
    Builder, Context, FileRef, Listing, TensorInfo, Tensors, View, ViewId, Views, build,
};
pub use tree::{NodeId, NodeKind, ROOT, Tree};
