//! gyrofs: mount machine-learning checkpoints as lazy, byte-exact virtual
//! files.
//!
//! Data flows one way, and the modules follow it, each importing only those
//! listed after it (docs/ARCHITECTURE.md):
//! - front ends: [`fuse`] (the kernel adapter) and [`mount`] (the daemon's
//!   life cycle; [`mount_table`] reads the system's mount table,
//!   [`mount_options`] the `-o` lists and mount(8)'s helper calls,
//!   [`notify`] tells systemd the mount is ready),
//!   [`convert`] (writes a view to disk), [`ls`] (lists tensors);
//! - [`volume`]: a source and its tree together: the filesystem operations
//!   without FUSE;
//! - [`read`]: the one read path from (file, offset, length) to bytes;
//! - [`view`]: the virtual files built from the catalog (`raw/`, `bf16/`,
//!   `experts/`, `manifest.json`), each a header plus segments: source
//!   extents and computed ranges;
//! - [`source`]: format readers (safetensors, GGUF, PyTorch), which parse a
//!   checkpoint's headers (never its tensor data) into a catalog;
//! - [`catalog`]: what was read: tensors, dtypes, extents, quant pairs,
//!   config, and the source's files;
//! - [`remote`]: remote sources (S3, the Hugging Face Hub, HTTPS) laid out
//!   in a local block cache and handed down as a [`store::Opener`];
//! - [`store`]: the bytes of source files, local or remote, only through
//!   calls that make them local first;
//! - [`error`]: the typed errors of every layer, and their errno;
//! - leaves: [`quant`] (number-format kernels), [`dtype`], [`json`],
//!   [`naming`] (file-name conventions of checkpoint sets), [`access`]
//!   (who may read: owners, groups, modes combined).

pub mod access;
pub mod catalog;
pub mod convert;
pub mod converted_cache;
pub mod dtype;
pub mod error;
pub mod fuse;
pub mod json;
pub mod ls;
pub mod mount;
pub mod mount_options;
pub mod mount_table;
pub mod naming;
pub mod notify;
pub mod quant;
pub mod read;
pub mod remote;
pub mod source;
pub mod store;
pub mod view;
pub mod volume;
