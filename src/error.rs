//! Typed errors.
//!
//! Two families, because they happen at different times and reach users
//! differently:
//! - [`SourceError`]: a checkpoint gyrofs refuses while opening it (at `mount`,
//!   `ls` or `convert` time). Its `Display` is the one line the user sees: the
//!   file, then what is wrong with it.
//! - [`ReadError`]: a read that fails after the mount is up (the source changed
//!   underneath, a computed range failed). The FUSE adapter turns it into an
//!   errno with [`ReadError::errno`] and logs it once.

use std::fmt;
use std::io;
use std::path::Path;

/// A checkpoint (or one of its files) that cannot be opened as a source.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct SourceError {
    /// The file that is wrong, as the user named it (source path joined with the file name).
    pub file: String,
    /// What is wrong with it.
    pub problem: Problem,
}

impl SourceError {
    pub fn new(file: impl AsRef<Path>, problem: Problem) -> Self {
        SourceError {
            file: file.as_ref().display().to_string(),
            problem,
        }
    }

    pub fn io(file: impl AsRef<Path>, err: io::Error) -> Self {
        SourceError::new(file, Problem::Io(err))
    }

    pub fn invalid(file: impl AsRef<Path>, why: impl Into<String>) -> Self {
        SourceError::new(file, Problem::Invalid(why.into()))
    }
}

/// What is wrong with a source file. Each variant names the tensor, offset or
/// value involved so that the message can be acted on.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("file is {len} bytes, too short for {what} (needs {need})")]
    Truncated {
        what: &'static str,
        len: u64,
        need: u64,
    },
    #[error("header length {header_len} runs past the end of the file ({len} bytes)")]
    HeaderPastEnd { header_len: u64, len: u64 },
    #[error("header length {0} exceeds the 100000000-byte limit")]
    HeaderTooLarge(u64),
    #[error("header is not valid JSON: {0}")]
    HeaderJson(String),
    #[error("header is not a JSON object")]
    HeaderNotObject,
    #[error("tensor '{tensor}': {why}")]
    Tensor { tensor: String, why: String },
    #[error("unknown dtype '{dtype}' for tensor '{tensor}'")]
    UnknownDtype { tensor: String, dtype: String },
    #[error(
        "tensor '{tensor}': {dtype} with shape {shape:?} needs {expected} bytes but data_offsets span {actual}"
    )]
    ShapeMismatch {
        tensor: String,
        dtype: String,
        shape: Vec<u64>,
        expected: u64,
        actual: u64,
    },
    #[error(
        "tensor '{tensor}': data_offsets [{begin}, {end}] lie outside the {buffer}-byte data buffer"
    )]
    OffsetsOutOfRange {
        tensor: String,
        begin: u64,
        end: u64,
        buffer: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap (bytes {begin}..{end} of the data buffer)")]
    Overlap {
        first: String,
        second: String,
        begin: u64,
        end: u64,
    },
    #[error("data buffer bytes {begin}..{end} belong to no tensor (tensors must tile the buffer)")]
    Gap { begin: u64, end: u64 },
    #[error("tensor '{tensor}' appears in both {first} and {second}")]
    DuplicateTensor {
        tensor: String,
        first: String,
        second: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A read of a virtual file that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The source file no longer has the length or modification time it had
    /// at mount time, so its bytes can no longer be trusted (or even mapped).
    #[error("source file {file} changed since it was mounted")]
    SourceChanged { file: String },
    #[error("source file {file}: {err}")]
    Io { file: String, err: io::Error },
    /// A computed range could not be produced.
    #[error("{0}")]
    Compute(String),
}

impl ReadError {
    /// The errno a FUSE reply should carry for this error.
    pub fn errno(&self) -> i32 {
        libc::EIO
    }
}

/// An error of the command line tool: what failed, in one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, err: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            err,
        }
    }
}

/// Shape formatting used in messages and listings: `[2, 3]`.
pub struct ShapeDisplay<'a>(pub &'a [u64]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
