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
//! - One module per view: `raw` (`raw/`: lossless files), `hf` (`bf16/`,
//!   `f16/`, `f32/`: the model as a Hugging Face folder, dequantized /
//!   converted; with the mappings from other layouts to the Hugging Face
//!   one: `hf::gguf`, `hf::gpt_oss`, `hf::nanogpt`), `experts` (one file per
//!   MoE expert, in `raw/` and each Hugging Face folder view), `manifest`
//!   (`manifest.json`, streamed, and `gguf_metadata.json`).
//! - Shared machinery: `compute` (the computed segments), `header` (the
//!   Gyro safetensors header every virtual safetensors file starts with),
//!   `record` (the typed provenance record of each of its tensors), `names`
//!   (tensor names escaped into file names).

pub mod compute;
pub mod experts;
mod file;
pub mod gguf;
pub mod header;
pub mod hf;
pub mod manifest;
pub mod names;
pub mod raw;
pub mod record;
pub mod registry;
pub mod tree;

pub use file::{Compute, Segment, VFile};
pub use registry::{
    Builder, Context, FileRef, Listing, TensorInfo, Tensors, View, ViewId, Views, build,
};
pub use tree::{NodeId, NodeKind, ROOT, Tree};
