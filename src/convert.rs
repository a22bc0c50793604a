//! `gyrofs convert`: write the files of a view to disk without FUSE.
//!
//! The bytes come from the same read path as the mount ([`Volume::read`]),
//! so `convert --view V OUT` and `cp -r MNT/V OUT` give identical files.
//! Files are written in parallel, each to `NAME.gyrofs-partial` and renamed
//! into place when complete; a progress bar shows bytes written when stderr
//! is a terminal.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::error::Error;
use crate::view::NodeId;
use crate::volume::Volume;

/// Bytes asked of the read path at a time.
const CHUNK: usize = 8 << 20;

#[derive(Debug)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Refuse an OUTDIR that exists and is not a folder (a file, a link to
/// one), before any work: convert writes files into OUTDIR.
pub fn check_out(out: &Path) -> Result<(), Error> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => Err(Error::OutNotAFolder {
            path: out.display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// Write the view at `view` (a directory or a single file of the tree) into
/// `out`. A directory's contents land directly in `out`, like
/// `cp -r MNT/VIEW OUT` with OUT not existing yet (`recursive` false: only
/// the files directly in it, like `cp MNT/VIEW/* OUT`); a file lands as
/// `out/NAME`.
pub fn convert(
    volume: &Volume,
    view: &str,
    out: &Path,
    recursive: bool,
    progress: bool,
) -> Result<Summary, Error> {
    let root = volume.resolve(view).ok_or_else(|| {
        let top: Vec<String> = volume
            .children(crate::view::ROOT)
            .into_iter()
            .flatten()
            .map(|c| volume.path(c))
            .collect();
        Error::NoSuchView {
            view: view.to_string(),
            top: top.join(", "),
        }
    })?;
    check_out(out)?;
    let mut jobs: Vec<(NodeId, PathBuf)> = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    if volume.is_dir(root) {
        collect(volume, root, out, recursive, &mut jobs, &mut dirs);
    } else {
        jobs.push((root, out.join(volume.name(root))));
    }
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    // Sizing a file builds it (its header): in parallel too.
    let mut sized: Vec<(NodeId, PathBuf, u64)> = jobs
        .into_par_iter()
        .map(|(id, path)| (id, path, file_size(volume, id)))
        .collect();
    let total: u64 = sized.iter().map(|j| j.2).sum();
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    // Biggest files first, so the parallel tail is short.
    sized.sort_by_key(|j| std::cmp::Reverse(j.2));
    sized
        .par_iter()
        .try_for_each(|(id, path, size)| write_file(volume, *id, *size, path, &bar))?;
    bar.finish_and_clear();
    Ok(Summary {
        files: sized.len(),
        bytes: total,
        elapsed: started.elapsed(),
    })
}

fn file_size(volume: &Volume, id: NodeId) -> u64 {
    volume.file(id).map_or(0, |f| f.size)
}

fn collect(
    volume: &Volume,
    dir: NodeId,
    at: &Path,
    recursive: bool,
    jobs: &mut Vec<(NodeId, PathBuf)>,
    dirs: &mut Vec<PathBuf>,
) {
    for c in volume.children(dir).into_iter().flatten() {
        let path = at.join(volume.name(c));
        if volume.is_dir(c) {
            if recursive {
                dirs.push(path.clone());
                collect(volume, c, &path, recursive, jobs, dirs);
            }
        } else {
            jobs.push((c, path));
        }
    }
}

fn write_file(
    volume: &Volume,
    id: NodeId,
    size: u64,
    path: &Path,
    bar: &ProgressBar,
) -> Result<(), Error> {
    // A file that could not be built is an error, not an empty file.
    if let Some(why) = volume.file(id).and_then(|f| f.failed.clone()) {
        return Err(crate::error::ReadError::NotBuilt(why.to_string()).into());
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".gyrofs-partial");
    let partial = PathBuf::from(partial);
    let mut f = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
    let mut buf = vec![0u8; CHUNK.min(size as usize)];
    let mut offset = 0;
    while offset < size {
        let n = volume.read_into(id, offset, &mut buf)?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n]).map_err(|e| Error::io(&partial, e))?;
        offset += n as u64;
        bar.inc(n as u64);
    }
    drop(f);
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}
