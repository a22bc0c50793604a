//! The shape of a virtual file: [`Segment`]s laid end to end, whose lengths
//! are known before any byte is read.
//! - [`Segment::Bytes`]: bytes held in memory (Gyro headers, generated JSON);
//! - [`Segment::Source`]: an [`Extent`] of a source file, copied as is;
//! - [`Segment::Computed`]: bytes produced on demand by a [`Compute`] (a
//!   dequantization, a slice, a transpose, a stream of JSON) for exactly the
//!   requested range.
//!
//! Every view builds its files of these; `crate::read` reads them.

use std::fmt;
use std::sync::Arc;

use crate::catalog::{Extent, Files};
use crate::error::ReadError;
use crate::view::compute;

/// Bytes computed on demand. `read_at` must fill `out` with bytes
/// `[offset, offset + out.len())` of its output, which is `len()` bytes long,
/// and must give the same bytes every time.
pub trait Compute: Send + Sync + fmt::Debug {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_at(&self, files: &Files, offset: u64, out: &mut [u8]) -> Result<(), ReadError>;
    /// The source ranges it reads (to know which files depend on which
    /// source file).
    fn extents(&self) -> Vec<Extent>;
    /// The source ranges that reading output bytes `within..within + len`
    /// touches: what read-ahead of a remote source fetches ahead of a
    /// reader. `None` (the default) when not worked out: such a range gets
    /// no read-ahead. Only a hint: the read itself fetches what its kernel
    /// borrows, whatever this says.
    fn extents_at(&self, within: u64, len: u64) -> Option<Vec<Extent>> {
        let _ = (within, len);
        None
    }
    /// The source range whose bytes this output is, byte for byte, if it
    /// is one: a reader that only looks at the bytes (an encoder) borrows
    /// them from the map ([`Files::bytes`], inside the read path's
    /// `Files::guarded`) instead of copying them. `None` (the default):
    /// read them with `read_at`.
    fn as_source(&self) -> Option<Extent> {
        None
    }
}

/// A contiguous piece of a virtual file.
#[derive(Debug, Clone)]
pub enum Segment {
    Bytes(Arc<[u8]>),
    Source(Extent),
    Computed(Arc<dyn Compute>),
}

impl Segment {
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Source(e) => e.len,
            Segment::Computed(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `[offset, offset + len)` of this segment, as a segment (a
    /// computed one becomes a window on the same computation).
    pub fn slice(&self, offset: u64, len: u64) -> Segment {
        debug_assert!(offset + len <= self.len());
        match self {
            Segment::Bytes(b) => {
                Segment::Bytes(Arc::from(&b[offset as usize..(offset + len) as usize]))
            }
            Segment::Source(e) => Segment::Source(e.sub(offset, len)),
            Segment::Computed(c) => Segment::Computed(Arc::new(compute::Window {
                inner: c.clone(),
                offset,
                len,
            })),
        }
    }
}

/// A virtual file: segments laid end to end.
#[derive(Debug, Clone)]
pub struct VFile {
    pub size: u64,
    segments: Vec<Segment>,
    /// Offset of each segment in the file (same length as `segments`).
    starts: Vec<u64>,
    /// Why the file could not be built (it then has no bytes, and looking
    /// it up or reading it fails with this).
    pub failed: Option<Arc<str>>,
}

impl VFile {
    /// Build a file from segments, dropping empty ones and merging source
    /// ranges that continue each other (a lossless pack of a whole shard
    /// becomes one segment, so large reads borrow straight from the map).
    pub fn new(segments: impl IntoIterator<Item = Segment>) -> VFile {
        let mut merged: Vec<Segment> = Vec::new();
        for seg in segments {
            if seg.is_empty() {
                continue;
            }
            if let (Some(Segment::Source(a)), Segment::Source(b)) = (merged.last_mut(), &seg)
                && a.file == b.file
                && a.end() == b.offset
            {
                a.len += b.len;
                continue;
            }
            merged.push(seg);
        }
        let mut starts = Vec::with_capacity(merged.len());
        let mut size = 0;
        for s in &merged {
            starts.push(size);
            size += s.len();
        }
        VFile {
            size,
            segments: merged,
            starts,
            failed: None,
        }
    }

    /// A file that could not be built, and why (one line).
    pub fn failed(why: impl Into<Arc<str>>) -> VFile {
        VFile {
            failed: Some(why.into()),
            ..VFile::new([])
        }
    }

    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> VFile {
        VFile::new([Segment::Bytes(bytes.into())])
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Bytes this file holds in memory (headers, generated JSON).
    pub fn held_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Bytes(b) => b.len() as u64,
                _ => 0,
            })
            .sum()
    }

    pub fn starts(&self) -> &[u64] {
        &self.starts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_contiguous_source_ranges() {
        let src = |file, offset, len| {
            Segment::Source(Extent {
                file: crate::catalog::FileId(file),
                offset,
                len,
            })
        };
        let f = VFile::new([
            Segment::Bytes(Arc::from(&b"hd"[..])),
            src(0, 10, 5),
            src(0, 15, 5),
            Segment::Bytes(Arc::from(&b""[..])),
            src(1, 20, 1),
        ]);
        assert_eq!(f.size, 13);
        assert_eq!(f.segments().len(), 3);
        assert_eq!(f.starts(), &[0, 2, 12]);
    }
}
