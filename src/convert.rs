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

/// Write the view at `view` (a directory or a single file of the tree) into
/// `out`. A directory's contents land directly in `out`, like
/// `cp -r MNT/VIEW OUT` with OUT not existing yet; a file lands as `out/NAME`.
pub fn convert(volume: &Volume, view: &str, out: &Path, progress: bool) -> Result<Summary, Error> {
    let tree = &volume.tree;
    let root = tree.resolve(view).ok_or_else(|| {
        let top: Vec<String> = tree
            .children(crate::view::ROOT)
            .unwrap_or(&[])
            .iter()
            .map(|&c| tree.path(c))
            .collect();
        Error::NoSuchView {
            view: view.to_string(),
            top: top.join(", "),
        }
    })?;
    let mut jobs: Vec<(NodeId, PathBuf)> = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    if tree.file(root).is_some() {
        jobs.push((root, out.join(&tree.node(root).expect("resolved").name)));
    } else {
        collect(volume, root, out, &mut jobs, &mut dirs);
    }
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let total: u64 = jobs.iter().map(|(id, _)| file_size(volume, *id)).sum();
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
    jobs.sort_by_key(|(id, _)| std::cmp::Reverse(file_size(volume, *id)));
    jobs.par_iter()
        .try_for_each(|(id, path)| write_file(volume, *id, path, &bar))?;
    bar.finish_and_clear();
    Ok(Summary {
        files: jobs.len(),
        bytes: total,
        elapsed: started.elapsed(),
    })
}

fn file_size(volume: &Volume, id: NodeId) -> u64 {
    volume.tree.file(id).map_or(0, |f| f.size)
}

fn collect(
    volume: &Volume,
    dir: NodeId,
    at: &Path,
    jobs: &mut Vec<(NodeId, PathBuf)>,
    dirs: &mut Vec<PathBuf>,
) {
    for &c in volume.tree.children(dir).unwrap_or(&[]) {
        let node = volume.tree.node(c).expect("child ids are valid");
        let path = at.join(&node.name);
        if volume.tree.file(c).is_some() {
            jobs.push((c, path));
        } else {
            dirs.push(path.clone());
            collect(volume, c, &path, jobs, dirs);
        }
    }
}

fn write_file(volume: &Volume, id: NodeId, path: &Path, bar: &ProgressBar) -> Result<(), Error> {
    let size = file_size(volume, id);
    let mut partial = path.as_os_str().to_owned();
    partial.push(".gyrofs-partial");
    let partial = PathBuf::from(partial);
    let mut f = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
    let mut offset = 0;
    while offset < size {
        let data = volume.read(id, offset, CHUNK)?;
        if data.is_empty() {
            break;
        }
        f.write_all(&data).map_err(|e| Error::io(&partial, e))?;
        offset += data.len() as u64;
        bar.inc(data.len() as u64);
    }
    drop(f);
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}
