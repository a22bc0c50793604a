//! Source readers: turn a checkpoint into a [`Catalog`].
//!
//! [`open`] decides what SOURCE is (a file or a folder, which format) and
//! hands the files to their format's reader. Readers parse headers only;
//! tensor bytes stay in the source until a view reads them. Every byte a
//! reader sees comes from a `store::SourceFile` opened through the
//! `store::Opener` the caller passes in (local files, or the cache files of
//! a remote source). Anything that cannot be read is refused here with one
//! [`SourceError`] naming the file, so a mount either happens completely or
//! not at all.
//!
//! One folder per format, each of the same shape: the reader (`mod.rs`:
//! parse and validate one file's header, with a pure entry point from bytes
//! that tests/fuzz/ fuzzes) and the set (`set.rs`: the files of one
//! checkpoint, checked together, into a catalog):
//! - `safetensors`: single files, shards with or without
//!   `model.safetensors.index.json`, gpt-oss `original/` with `dtypes.json`;
//! - `gguf`: `.gguf` files and split sets;
//! - `torch`: torch.save files (zip and legacy) read by a restricted
//!   unpickler that runs no code; `pytorch_model*.bin` folders.
//!
//! `side`: the side files read at open (`config.json`, `dtypes.json`). This
//! module: what SOURCE is (by content, not extension), which format a
//! folder holds (Hugging Face cache snapshots of symlinks included), and
//! which of its files are side files.

pub mod gguf;
pub mod quantized;
pub mod safetensors;
pub mod side;
pub mod torch;

pub use safetensors::set::INDEX_JSON;
pub use side::{ShardIndex, parse_index};
pub use side::{parse_dtypes, parse_json};
pub use torch::set::row_major;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, Files, SourceFormat, Tensor};
use crate::error::{Problem, SourceError};
use crate::store::{Confinement, Opener, Refusal};

/// Extensions of checkpoint data files. A folder's other regular files are
/// side files (config, tokenizer, ...); these are not, so that a folder
/// holding both `model.safetensors` and `pytorch_model.bin` does not pass the
/// second copy through.
const CHECKPOINT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "gguf",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "onnx",
    "pkl",
    "npz",
];

/// Open SOURCE (a file or a folder) and read its catalog; `opener` opens
/// its files (`Opener::local()`, or a remote source's from
/// `remote::prepare`).
pub fn open(path: &Path, opener: &Opener) -> Result<Catalog, SourceError> {
    // Parsers borrow bytes of remote files' caches too.
    let _reading = opener.reading();
    open_source(path, opener).map_err(|err| lfs_explained(opener, err))
}

/// The first line of a Git LFS pointer file.
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

/// `err`, or, when the file it names is a Git LFS pointer (a repository
/// cloned without its LFS content), an error saying so: whatever the
/// format's reader made of the pointer's text is no help. For a folder in
/// which no checkpoint was found, the same for its first checkpoint-named
/// file that is a pointer (a `pytorch_model.bin` pointer is not recognised
/// as a torch file at all).
fn lfs_explained(opener: &Opener, err: SourceError) -> SourceError {
    let path = Path::new(&err.file);
    if path.is_dir() {
        let pointer = list_files(path, None).ok().and_then(|listing| {
            listing
                .files
                .iter()
                .filter(|n| extension(n).is_some_and(|e| CHECKPOINT_EXTENSIONS.contains(&e)))
                .map(|n| path.join(n))
                .find_map(|p| lfs_pointer(opener, &p).map(|e| (p, e)))
        });
        return match pointer {
            Some((p, problem)) => SourceError::new(p, problem),
            None => err,
        };
    }
    match lfs_pointer(opener, path) {
        Some(problem) => SourceError::new(path, problem),
        None => err,
    }
}

/// [`Problem::LfsPointer`] if `path` is a Git LFS pointer file.
fn lfs_pointer(opener: &Opener, path: &Path) -> Option<Problem> {
    if !path.is_file() {
        return None;
    }
    let file = opener.open(path, file_name(path)).ok()?;
    // A pointer is about 130 bytes: version, oid, size.
    let head = file.read_head(1024).ok()?;
    if !head.starts_with(LFS_POINTER) {
        return None;
    }
    let size = head
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"size "))
        .and_then(|n| std::str::from_utf8(n).ok()?.trim().parse().ok());
    Some(Problem::LfsPointer { size })
}

fn open_source(path: &Path, opener: &Opener) -> Result<Catalog, SourceError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::new(path, Problem::NoSource),
        _ => SourceError::io(path, e),
    })?;
    // A local source's files must not lead out of it (a remote source's
    // tree is gyrofs's own, in its cache).
    let confined;
    let opener = match opener.is_remote() {
        true => opener,
        false => {
            let c = Confinement::of_source(path).map_err(|e| SourceError::io(path, e))?;
            confined = opener.confined(c);
            &confined
        }
    };
    if meta.is_dir() {
        return open_dir(opener, path);
    }
    if !meta.is_file() {
        return Err(SourceError::invalid(path, "not a file or a folder"));
    }
    let ext = extension(&file_name(path)).map(str::to_string);
    let torch_ext = matches!(ext.as_deref(), Some("pt" | "pth" | "bin" | "ckpt"));
    let one = vec![(path.to_path_buf(), file_name(path))];
    match sniff(opener, path) {
        Magic::Gguf => gguf::set::open_file(opener, path),
        _ if ext.as_deref() == Some("gguf") => gguf::set::open_file(opener, path),
        Magic::Torch => torch::set::open(opener, one, &[], Vec::new()),
        Magic::Other if torch_ext => torch::set::open(opener, one, &[], Vec::new()),
        Magic::Other => safetensors::set::open(opener, SourceFormat::Safetensors, one, &[], None),
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    /// `GGUF`.
    Gguf,
    /// A zip archive (torch.save's format since torch 1.6) or a legacy
    /// torch.save pickle stream.
    Torch,
    /// Anything else (safetensors starts with a length, not a magic).
    Other,
}

fn sniff(opener: &Opener, path: &Path) -> Magic {
    // Already local for a remote file (every file's first block is fetched
    // at open).
    let Ok(file) = opener.open(path, file_name(path)) else {
        return Magic::Other;
    };
    let head = file.read_head(64).unwrap_or(&[]);
    if head.starts_with(b"GGUF") {
        Magic::Gguf
    } else if torch::set::sniff(head) {
        Magic::Torch
    } else {
        Magic::Other
    }
}

/// The last component of `path`, as recorded in headers (never the whole path).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn extension(name: &str) -> Option<&str> {
    Path::new(name).extension().and_then(|e| e.to_str())
}

/// Refuse a tensor name that appears in two files of a set. `tensors` are
/// in file order; the error names the file that repeats the name.
pub(crate) fn check_unique_names(files: &Files, tensors: &[Tensor]) -> Result<(), SourceError> {
    let mut seen: HashMap<&str, &Tensor> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if let Some(first) = seen.insert(&t.name, t) {
            let second = &files[t.extent.file].file;
            return Err(SourceError::new(
                &second.path,
                Problem::DuplicateTensor {
                    tensor: t.name.clone(),
                    first: files[first.extent.file].file.name.clone(),
                    second: second.name.clone(),
                },
            ));
        }
    }
    Ok(())
}

/// The entries of a source folder that may be files of the checkpoint.
struct Listing {
    /// Regular files (after following symlinks that stay inside the source,
    /// `store::confine`), by name, sorted.
    files: Vec<String>,
    /// Entries that cannot be served (a broken symlink, a loop, a link out
    /// of the source, not a regular file, unreadable), by name, and why.
    refused: Vec<(String, Refusal)>,
}

impl Listing {
    /// Every name, served or not, sorted: what the folder's layout is
    /// decided from (a broken shard must not make another layout).
    fn names(&self) -> Vec<String> {
        let mut all: Vec<String> = self.files.clone();
        all.extend(self.refused.iter().map(|(n, _)| n.clone()));
        all.sort();
        all
    }

    fn refused(&self, name: &str) -> bool {
        self.refused.iter().any(|(n, _)| n == name)
    }
}

/// The entries directly inside `dir` (folders, hidden files and what is
/// under subfolders are not part of it).
fn list_files(dir: &Path, confine: Option<&Confinement>) -> Result<Listing, SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))?;
    let mut listing = Listing {
        files: Vec::new(),
        refused: Vec::new(),
    };
    for entry in rd {
        let entry = entry.map_err(|e| SourceError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: Hugging Face cache snapshots are links into blobs/.
        let checked = match confine {
            Some(c) => c.check(&path).map(|_| ()),
            None => match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(Refusal::NotAFile),
                Err(e) => Err(Refusal::Io(e)),
            },
        };
        match checked {
            Ok(()) => listing.files.push(name),
            Err(Refusal::NotAFile) if path.is_dir() => {}
            Err(r) => listing.refused.push((name, r)),
        }
    }
    listing.files.sort();
    Ok(listing)
}

/// Refuse the mount if a file the checkpoint needs (`needed`) cannot be
/// served, naming it and why; every other entry that cannot be served is
/// left out, with a warning and a note (returned).
fn screen(
    dir: &Path,
    listing: &Listing,
    needed: impl Fn(&str) -> bool,
) -> Result<Vec<String>, SourceError> {
    if let Some((name, why)) = listing.refused.iter().find(|(n, _)| needed(n)) {
        return Err(SourceError::invalid(
            dir.join(name),
            format!("{why}; the model needs this file, so nothing is mounted"),
        ));
    }
    let mut notes = Vec::new();
    for (name, why) in &listing.refused {
        log::warn!("{}: {why}; left out", dir.join(name).display());
        notes.push(format!("{name} is left out: {}", why.short()));
    }
    Ok(notes)
}

fn open_dir(opener: &Opener, dir: &Path) -> Result<Catalog, SourceError> {
    let listing = list_files(dir, opener.confinement())?;
    let names = listing.names();
    let has = |n: &str| names.iter().any(|x| x == n);
    let side = |skip: &str| -> Vec<(PathBuf, String)> {
        listing
            .files
            .iter()
            .filter(|n| n.as_str() != skip && n.as_str() != torch::set::INDEX_JSON)
            .filter(|n| extension(n).is_none_or(|e| !CHECKPOINT_EXTENSIONS.contains(&e)))
            .map(|n| (dir.join(n), n.clone()))
            .collect()
    };
    let torch_files: Vec<String> = if has(torch::set::INDEX_JSON) {
        torch::set::shards_from_index(opener, &dir.join(torch::set::INDEX_JSON))?
    } else {
        names
            .iter()
            .filter(|n| matches!(extension(n), Some("bin" | "pt" | "pth" | "ckpt")))
            .filter(|n| listing.refused(n) || sniff(opener, &dir.join(n)) == Magic::Torch)
            .cloned()
            .collect()
    };

    // Safetensors first, as transformers prefers them.
    let index = if has(INDEX_JSON) {
        Some(side::read_index(opener, &dir.join(INDEX_JSON))?)
    } else {
        None
    };
    let shard_names: Vec<String> = match &index {
        Some(index) => index.shards(),
        None => names
            .iter()
            .filter(|n| extension(n) == Some("safetensors"))
            .cloned()
            .collect(),
    };
    if !shard_names.is_empty() {
        let format = if has("dtypes.json") {
            SourceFormat::GptOssOriginal
        } else {
            SourceFormat::Safetensors
        };
        let notes = screen(dir, &listing, |n| {
            shard_names.iter().any(|s| s == n) || n == INDEX_JSON || side::is_needed(n)
        })?;
        let shards = shard_names
            .iter()
            .map(|n| (dir.join(n), n.clone()))
            .collect();
        let mut catalog =
            safetensors::set::open(opener, format, shards, &side(INDEX_JSON), index.as_ref())?;
        let torch_files: Vec<&String> =
            torch_files.iter().filter(|n| !listing.refused(n)).collect();
        if !torch_files.is_empty() {
            let list: Vec<&str> = torch_files.iter().map(|s| s.as_str()).collect();
            catalog.notes.push(format!(
                "the folder also holds PyTorch weights ({}); as transformers does, the safetensors weights are used",
                list.join(", ")
            ));
        }
        catalog.notes.extend(notes);
        return Ok(catalog);
    }
    if !torch_files.is_empty() {
        let is_shard = |n: &str| n.starts_with("pytorch_model-") || has(torch::set::INDEX_JSON);
        if torch_files.len() > 1 && !torch_files.iter().all(|n| is_shard(n)) {
            return Err(SourceError::invalid(
                dir,
                format!(
                    "holds several PyTorch checkpoints ({}); name the one to mount",
                    torch_files.join(", ")
                ),
            ));
        }
        let notes = screen(dir, &listing, |n| {
            torch_files.iter().any(|s| s == n) || n == torch::set::INDEX_JSON || side::is_needed(n)
        })?;
        let shards = torch_files
            .iter()
            .map(|n| (dir.join(n), n.clone()))
            .collect();
        return torch::set::open(opener, shards, &side(INDEX_JSON), notes);
    }
    let ggufs: Vec<&String> = names
        .iter()
        .filter(|n| extension(n) == Some("gguf"))
        .collect();
    if !ggufs.is_empty() {
        let notes = screen(dir, &listing, |n| extension(n) == Some("gguf"))?;
        let mut catalog = gguf::set::open_dir(opener, dir, &ggufs)?;
        catalog.notes.extend(notes);
        return Ok(catalog);
    }
    Err(SourceError::invalid(
        dir,
        "no checkpoint found (looked for *.safetensors, model.safetensors.index.json, \
         pytorch_model*.bin, *.pt, *.pth, *.ckpt and *.gguf)",
    ))
}
