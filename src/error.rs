//! Typed errors, one family per layer, and their errno in one place.
//!
//! - [`SourceError`]: a checkpoint gyrofs refuses while opening it (at `mount`,
//!   `ls` or `convert` time). Its `Display` is the one line the user sees: the
//!   file, then what is wrong with it ([`Problem`]).
//! - [`ViewError`]: a view that cannot be built for a source; the view is left
//!   out and the message becomes a note (`manifest.json`, a warning).
//! - [`ReadError`]: a read that fails after the mount is up (the source changed
//!   underneath, a computed range failed).
//! - [`FsError`]: a filesystem operation on the mounted tree (lookup, open,
//!   readdir, read) that fails.
//! - [`MountError`]: setting a mount up or taking it down.
//! - [`RemoteError`]: a remote source that cannot be opened;
//!   [`RemoteReadError`]: remote bytes that cannot be had after the mount.
//! - [`Error`]: what the command line reports, wrapping the others.
//!
//! [`ToErrno`] maps every variant that can reach the kernel to its errno; the
//! FUSE adapter only calls it (as mountpoint-s3's `ToErrno` does).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::quant::KernelError;
use crate::quant::ggml::DequantError;

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

/// Why a path of a source is not served.
#[derive(Debug)]
pub enum Refusal {
    /// A symlink whose target does not exist.
    Broken { target: PathBuf },
    /// A chain of symlinks that never ends.
    Loop,
    /// Resolves outside the source folder (and outside the cache's blobs/).
    Outside { real: PathBuf },
    /// Not a regular file (a folder, a device, a FIFO, ...).
    NotAFile,
    /// Changed between the check and the open.
    Moved,
    /// Anything else (permission denied, ...).
    Io(io::Error),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Broken { target } => write!(
                f,
                "a broken symlink (to {}, which does not exist; an unfinished download?)",
                target.display()
            ),
            Refusal::Loop => f.write_str("a symlink loop (too many levels of symbolic links)"),
            Refusal::Outside { real } => write!(
                f,
                "a symlink to {}, outside the source folder (gyrofs serves only files inside \
                 it, or inside blobs/ of the Hugging Face cache a snapshot belongs to)",
                real.display()
            ),
            Refusal::NotAFile => f.write_str("not a regular file"),
            Refusal::Moved => f.write_str("changed while being opened (a symlink replaced?)"),
            Refusal::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Refusal {
    /// The same, without paths (for manifest notes, which record no
    /// absolute path).
    pub fn short(&self) -> String {
        match self {
            Refusal::Broken { .. } => "a broken symlink (an unfinished download?)".into(),
            Refusal::Outside { .. } => "a symlink that leads outside the source folder".into(),
            other => other.to_string(),
        }
    }
}

/// What is wrong with a source file. Each variant names the tensor, offset or
/// value involved so that the message can be acted on.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Io(#[source] io::Error),
    /// Not served: where it leads or what it is (`store::confine`).
    #[error("{0}")]
    Refused(Refusal),
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
    /// The file does not begin as a safetensors file does (a plausible
    /// header length, then `{`): `why` says what is off, `head` is its
    /// first bytes, escaped.
    #[error("not a safetensors file: {why}; it begins \"{head}\"")]
    NotSafetensors { why: Box<Problem>, head: String },
    /// A Git LFS pointer file stands where the checkpoint file should be:
    /// the repository was cloned without its LFS content.
    #[error(
        "a Git LFS pointer{}, not the file's content: run `git lfs pull` in the repository it came from",
        size.map(|s| format!(" to a {s}-byte file")).unwrap_or_default()
    )]
    LfsPointer { size: Option<u64> },
    /// SOURCE itself does not exist.
    #[error("source not found (no such file or folder)")]
    NoSource,
    #[error("{0}")]
    Invalid(String),
}

/// A view that cannot be built for a source. The view is left out, and the
/// message (prefixed with the view's name) is a note of the mount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The source's config.json lacks or mistypes something the view needs.
    #[error("config.json {0}")]
    Config(String),
    /// A gpt-oss original checkpoint without its config.json.
    #[error("a gpt-oss original checkpoint needs its config.json")]
    MissingConfig,
    /// A tensor whose shape or dtype the view cannot handle.
    #[error("{tensor}: {why}")]
    Tensor { tensor: String, why: String },
    /// The source's weights are quantized in a way gyrofs does not
    /// dequantize (or does not check out): why, one line.
    #[error("{0}")]
    Unconverted(String),
}

/// A read of a virtual file that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The source file no longer has the length or modification time it had
    /// at mount time, so its bytes can no longer be trusted (or even mapped).
    #[error("source file {file} changed since it was mounted")]
    SourceChanged { file: String },
    /// The source file could not be examined.
    #[error("source file {file}: {err}")]
    Io { file: String, err: io::Error },
    /// A segment points outside its source file (a bug in a view).
    #[error("bytes {offset}..{end} are outside source file {file} ({size} bytes)", end = *offset as u128 + *len as u128)]
    OutOfRange {
        file: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// A kernel refused its arguments (a bug in a view: wrong extent).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A ggml dequantization was refused (a bug in a view: wrong extent or type).
    #[error(transparent)]
    Dequant(#[from] DequantError),
    /// Bytes of a remote source could not be fetched (after retries), or
    /// the remote object changed since it was mounted.
    #[error(transparent)]
    Remote(#[from] RemoteReadError),
    /// The file could not be built (a GGUF tokenizer beyond the memory its
    /// metadata allows, ...): why.
    #[error("{0}")]
    NotBuilt(String),
}

/// A filesystem operation on the mounted tree that fails.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("read-only file system")]
    ReadOnly,
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The errno an error reaches the kernel (and the reader) as.
pub trait ToErrno {
    fn to_errno(&self) -> i32;
}

impl ToErrno for ReadError {
    fn to_errno(&self) -> i32 {
        match self {
            // What the README promises: a changed source reads as EIO.
            ReadError::SourceChanged { .. } => libc::EIO,
            ReadError::Io { err, .. } => err.raw_os_error().unwrap_or(libc::EIO),
            ReadError::OutOfRange { .. }
            | ReadError::Kernel(_)
            | ReadError::Dequant(_)
            | ReadError::Remote(_)
            | ReadError::NotBuilt(_) => libc::EIO,
        }
    }
}

impl ToErrno for FsError {
    fn to_errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::Read(e) => e.to_errno(),
        }
    }
}

/// Setting a mount up or taking it down.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{}: mount point is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{}: mount point not found; create it first: mkdir -p {}", path.display(), path.display())]
    NoMountPoint { path: PathBuf },
    /// A non-root user without `fusermount3` (fuse3 not installed).
    #[error(
        "{}: cannot mount as a non-root user: fusermount3 not found in PATH; install the fuse3 package (apt-get install fuse3, dnf install fuse3), or mount as root",
        path.display()
    )]
    NoFusermountToMount { path: PathBuf },
    /// `/dev/fuse` cannot be opened: `why` says what to do about it.
    #[error("{}: cannot mount: {device}: {err}; {why}", path.display(), device = FUSE_DEVICE)]
    FuseDevice {
        path: PathBuf,
        err: io::Error,
        why: &'static str,
    },
    #[error("{}: cannot mount: {err}", path.display())]
    Mount { path: PathBuf, err: io::Error },
    /// `--cache-converted` with a cache folder that cannot be used.
    #[error("--cache-converted: cache directory {}: {err}; give another --cache-dir", dir.display())]
    ConvertedCache { dir: PathBuf, err: String },
    #[error("{}: cannot start the FUSE session: {err}", path.display())]
    Start { path: PathBuf, err: io::Error },
    #[error("{}: FUSE session ended: {err}", path.display())]
    Session { path: PathBuf, err: io::Error },
    #[error("{}: the FUSE session panicked", path.display())]
    Panicked { path: PathBuf },
    /// The daemon reported why it could not mount (its own one-line error).
    #[error("{0}")]
    Daemon(String),
    #[error("the mount daemon exited before the mount was ready (run with -f to see why)")]
    DaemonExited,
    #[error("the mount did not answer within {secs}s")]
    Timeout { secs: u64 },
    #[error("{}: the mount does not answer", path.display())]
    NoAnswer { path: PathBuf },
    #[error("mount point contains a NUL byte")]
    NulInPath,
    #[error("{}: cannot unmount: {err}", path.display())]
    Unmount { path: PathBuf, err: io::Error },
    #[error("{}: {program} -u failed ({status}): {said}", path.display())]
    Fusermount {
        path: PathBuf,
        program: &'static str,
        status: std::process::ExitStatus,
        said: String,
    },
    #[error("{}: already mounted ({mounted}); unmount it first: gyrofs umount {}", path.display(), path.display())]
    AlreadyMounted { path: PathBuf, mounted: String },
    #[error("{}: a dead FUSE mount is still attached here (its daemon has exited); run `gyrofs umount {}` first", path.display(), path.display())]
    Stale { path: PathBuf },
    #[error("{}: {}", path.display(), if *exists { "not a mount point (a plain directory or file)" } else { "no such file or directory" })]
    NotMounted { path: PathBuf, exists: bool },
    #[error("{}: a {fstype} mount, not a gyrofs one; use umount(8) for it", path.display())]
    NotGyrofs { path: PathBuf, fstype: String },
    #[error("{}: busy (files are open under it); close them, or detach it now and let it go when they close: gyrofs umount -l {}", path.display(), path.display())]
    Busy { path: PathBuf },
    #[error("{}: cannot unmount as a non-root user without fusermount3 (Debian package fuse3): {err}", path.display())]
    NoFusermount { path: PathBuf, err: io::Error },
    /// A `-o` option that is neither a long option of `gyrofs mount` nor
    /// one of mount(8)'s generic ones.
    #[error(
        "unknown mount option '{option}' (-o takes the long options of `gyrofs mount` with _ for -, e.g. allow_other,dtype=bf16+f16,cache_dir=DIR, and mount(8)'s generic ones: ro, rw, _netdev, nofail, defaults, x-*)"
    )]
    UnknownOption { option: String },
    #[error("-o needs a list of options (e.g. -o allow_other,dtype=bf16+f16)")]
    NoOptionList,
    /// A `-o` option that takes a value given without `=VALUE`.
    #[error("mount option '{option}' needs a value: -o {option}=VALUE")]
    OptionNeedsValue { option: String },
    /// A `-o` flag given with `=VALUE`.
    #[error("mount option '{option}' takes no value (write it without =...)")]
    OptionTakesNoValue { option: String },
    /// `foreground` in a `-o` list: mount(8) would wait for a helper that
    /// never returns.
    #[error(
        "'foreground' is not a mount option (mount(8) would wait for ever); use gyrofs mount -f on the command line"
    )]
    ForegroundInList,
    /// `-o` inside a group of short flags (`-fo LIST`), which the `-o`
    /// rewriting does not see.
    #[error("-o must stand on its own (-f -o {list}), not in a group of short flags like -fo")]
    GroupedOptionList { list: String },
    /// mount(8) called the helper in a way it does not take.
    #[error(
        "usage as a mount helper: mount.gyrofs SOURCE MOUNTPOINT [-s] [-f] [-n] [-v] [-o OPTIONS] [-t TYPE] (got {got})"
    )]
    HelperUsage { got: String },
}

/// The FUSE device every mount opens.
pub const FUSE_DEVICE: &str = "/dev/fuse";

/// An error of the command line tool: what failed, in one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{path}: {err}")]
    Io { path: String, err: io::Error },
    /// `convert`'s OUTDIR names something that is not a folder.
    #[error(
        "{path}: exists and is not a folder; OUTDIR must be a folder (convert writes the view's files into it): name a new or an existing folder"
    )]
    OutNotAFolder { path: String },
    /// `convert --view` names nothing in the tree.
    #[error("no view '{view}' in this source (top level: {top})")]
    NoSuchView { view: String, top: String },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, err: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            err,
        }
    }
}

/// A remote source that cannot be opened (listing, credentials, the
/// server's answers at mount).
#[derive(Debug, thiserror::Error)]
#[error("{url}: {why}")]
pub struct RemoteError {
    pub url: String,
    pub why: String,
}

/// Why bytes of a remote object cannot be had (after the mount).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteReadError {
    #[error("{url} changed since it was mounted")]
    Changed { url: String },
    #[error("{url}: {why}")]
    Failed { url: String, why: String },
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
