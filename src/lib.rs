//! gyrofs: mount machine-learning checkpoints as lazy, byte-exact virtual
//! safetensors files.
//!
//! Data flows one way, and the modules follow it:
//! - [`source`]: read a checkpoint's headers (never its tensor data) from
//!   memory-mapped files;
//! - [`catalog`]: what was read: tensors, dtypes, extents, quant pairs, config;
//! - [`view`]: the tree of virtual files built from the catalog (`raw/`,
//!   `manifest.json`), each a Gyro header plus segments;
//! - [`read`]: the one read path from (file, offset, length) to bytes;
//! - [`volume`]: a source and its tree together, the filesystem operations
//!   without FUSE;
//! - front ends: [`fuse`] (the kernel adapter) and [`mount`] (its process
//!   life cycle; [`mounts`] reads the system's mount table), [`convert`] (writes a view to disk), [`ls`] (lists tensors);
//! - [`error`]: the typed errors of every layer, and their errno.

pub mod catalog;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod fuse;
pub mod json;
pub mod ls;
pub mod mount;
pub mod mounts;
pub mod naming;
pub mod quant;
pub mod read;
pub mod remote;
pub mod source;
pub mod store;
pub mod view;
pub mod volume;
