//! The one read path: (virtual file, offset, length) -> bytes.
//!
//! FUSE `read` and `gyrofs convert` both call [`read`], so a mount and a
//! conversion cannot disagree. A request is assembled into one buffer:
//! in-memory bytes (headers, generated JSON) copied, lossless source ranges
//! read with `pread` (one copy, as `cat` makes; no page-table work on the
//! map), computed ranges produced by their kernels reading the memory map,
//! only over the covered range.
//!
//! A source file can change under a read (docs/RELIABILITY.md). The read
//! runs inside `Files::guarded` (a truncation under a kernel's map access is
//! recovered, not fatal), and once the bytes are
//! assembled every source file they came from is checked again: if it moved
//! during the read, the read answers `SourceChanged` (EIO) instead of bytes
//! that may mix old and new contents.

use crate::catalog::{FileId, Files};
use crate::error::ReadError;
use crate::view::{Segment, VFile};

/// Up to `size` bytes of `file` from `offset` (fewer only at end of file).
/// A source file truncated during the read gives `SourceChanged`, not a
/// crash (`Files::guarded`).
pub fn read(files: &Files, file: &VFile, offset: u64, size: usize) -> Result<Vec<u8>, ReadError> {
    let n = file.size.saturating_sub(offset).min(size as u64) as usize;
    let mut out = vec![0u8; n];
    read_into(files, file, offset, &mut out)?;
    Ok(out)
}

/// Fill `out` with bytes of `file` from `offset`; returns how many there were
/// (fewer than `out.len()` only at the end of the file). Every byte returned
/// is written, so `out` may hold anything before (a reused reply buffer).
pub fn read_into(
    files: &Files,
    file: &VFile,
    offset: u64,
    out: &mut [u8],
) -> Result<usize, ReadError> {
    if let Some(why) = &file.failed {
        return Err(ReadError::NotBuilt(why.to_string()));
    }
    let n = file.size.saturating_sub(offset).min(out.len() as u64) as usize;
    let out = &mut out[..n];
    // A remote source's cache holes are punched only once no read that
    // began before an eviction is in progress (store::epochs).
    let _reading = files.reading();
    files.guarded(|| assemble(files, file, offset, out))?;
    Ok(n)
}

/// The source ranges that bytes `offset..offset + len` of `file` are made
/// from, as far as they are known (lossless segments, and computations
/// that say: `Compute::extents_at`); computations that do not say are left
/// out.
pub fn source_extents(file: &VFile, offset: u64, len: u64) -> Vec<crate::catalog::Extent> {
    let end = offset.saturating_add(len).min(file.size);
    let mut out = Vec::new();
    if offset >= end {
        return out;
    }
    let segments = file.segments();
    let starts = file.starts();
    let mut i = starts.partition_point(|&s| s <= offset) - 1;
    let mut at = offset;
    while at < end && i < segments.len() {
        let (s0, seg) = (starts[i], &segments[i]);
        let within = at - s0;
        let n = (s0 + seg.len()).min(end) - at;
        match seg {
            Segment::Bytes(_) => {}
            Segment::Source(e) => out.push(e.sub(within, n)),
            Segment::Computed(c) => out.extend(c.extents_at(within, n).unwrap_or_default()),
        }
        at += n;
        i += 1;
    }
    out
}

/// Start fetching, in the background, the remote source bytes that
/// `offset..offset + len` of `file` will need (read-ahead; nothing for
/// local sources).
pub fn prefetch(files: &Files, file: &VFile, offset: u64, len: u64) {
    for e in source_extents(file, offset, len) {
        files[e.file].file.prefetch(e.offset, e.len);
    }
}

/// Computed ranges at least this long are split across the worker pool.
const PARALLEL_MIN: usize = 256 << 10;

fn assemble(files: &Files, file: &VFile, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
    if out.is_empty() {
        return Ok(());
    }
    let end = offset + out.len() as u64;
    let segments = file.segments();
    let starts = file.starts();
    // Last segment starting at or before `offset`.
    let first = starts.partition_point(|&s| s <= offset) - 1;

    let mut touched: Vec<FileId> = Vec::new();
    let mut at = offset;
    let mut i = first;
    while at < end {
        let seg = &segments[i];
        let s0 = starts[i];
        let within = at - s0;
        let n = (s0 + seg.len()).min(end) - at;
        let dst = &mut out[(at - offset) as usize..(at - offset + n) as usize];
        fill(files, seg, within, dst, &mut touched)?;
        at += n;
        i += 1;
    }
    for f in touched {
        files[f].file.check_unchanged()?;
    }
    Ok(())
}

/// Compute `dst` (bytes `within..` of `c`), split across the worker pool when
/// it is long: one sequential reader (a loader reading a file front to back,
/// one request at a time) then keeps every core busy. Each part runs on its
/// thread inside `Files::guarded`, like the request itself.
fn compute(
    files: &Files,
    c: &dyn crate::view::Compute,
    within: u64,
    dst: &mut [u8],
) -> Result<(), ReadError> {
    let workers = rayon::current_num_threads();
    if dst.len() < PARALLEL_MIN || workers < 2 {
        return c.read_at(files, within, dst);
    }
    use rayon::prelude::*;
    let part = dst.len().div_ceil(workers).next_multiple_of(64 << 10);
    dst.par_chunks_mut(part)
        .enumerate()
        .try_for_each(|(k, chunk)| {
            files.guarded(|| c.read_at(files, within + (k * part) as u64, chunk))
        })
}

/// Fill `dst` with bytes of `seg` starting `within` bytes into it; note the
/// source files read in `touched`.
fn fill(
    files: &Files,
    seg: &Segment,
    within: u64,
    dst: &mut [u8],
    touched: &mut Vec<FileId>,
) -> Result<(), ReadError> {
    let mut touch = |f: FileId| {
        if !touched.contains(&f) {
            touched.push(f);
        }
    };
    match seg {
        Segment::Bytes(b) => {
            dst.copy_from_slice(&b[within as usize..within as usize + dst.len()]);
        }
        Segment::Source(e) => {
            touch(e.file);
            files.read_into(e.sub(within, dst.len() as u64), dst)?;
        }
        Segment::Computed(c) => {
            for e in c.extents() {
                touch(e.file);
            }
            compute(files, c.as_ref(), within, dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Extent, FileRole};
    use crate::view::Compute;
    use std::sync::Arc;

    /// Output byte i is (i * 7) mod 256.
    #[derive(Debug)]
    struct Ramp(u64);
    impl Compute for Ramp {
        fn len(&self) -> u64 {
            self.0
        }
        fn extents(&self) -> Vec<Extent> {
            Vec::new()
        }
        fn read_at(&self, _: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
            for (k, b) in out.iter_mut().enumerate() {
                *b = ((offset + k as u64) * 7 % 256) as u8;
            }
            Ok(())
        }
    }

    fn whole(files: &Files, f: &VFile) -> Vec<u8> {
        read(files, f, 0, f.size as usize + 10).unwrap().to_vec()
    }

    #[test]
    fn every_range_matches_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src");
        let src: Vec<u8> = (0..100u8).collect();
        std::fs::write(&p, &src).unwrap();
        let mut files = Files::default();
        let id = files.push(
            crate::store::Opener::local()
                .open(&p, "src".into())
                .unwrap(),
            Default::default(),
            FileRole::Tensors,
        );
        assert_eq!(id, FileId(0));
        let at = |offset, len| {
            Segment::Source(Extent {
                file: id,
                offset,
                len,
            })
        };
        let vf = VFile::new([
            Segment::Bytes(Arc::from(&b"HEAD"[..])),
            at(10, 20),
            Segment::Computed(Arc::new(Ramp(9))),
            at(90, 10),
        ]);
        let mut expect = b"HEAD".to_vec();
        expect.extend_from_slice(&src[10..30]);
        expect.extend((0..9u64).map(|i| (i * 7 % 256) as u8));
        expect.extend_from_slice(&src[90..100]);
        assert_eq!(whole(&files, &vf), expect);
        for off in 0..=vf.size {
            for len in [0usize, 1, 3, 5, 17, 64] {
                let got = read(&files, &vf, off, len).unwrap();
                let lo = off as usize;
                let hi = (lo + len).min(expect.len());
                assert_eq!(&got[..], &expect[lo.min(hi)..hi], "off {off} len {len}");
            }
        }
    }
}
