//! The FUSE adapter: translates kernel requests into [`Volume`] calls.
//!
//! Every callback is a few lines: call the volume, turn its typed error into
//! an errno ([`ToErrno`]), and log a failed read once, here, with the
//! operation. Attributes, directory offsets and the open-mode check are
//! decided in `volume`, tested without FUSE. Content never changes while
//! mounted, so entries and attributes get long TTLs and files open with
//! `FOPEN_KEEP_CACHE` (a second read is served from the page cache); no
//! `direct_io`, so loaders can mmap. Everything that would write answers
//! `EROFS`.
//!
//! With `--cache-converted`, a file whose bytes are all in the cache opens
//! in FUSE passthrough (kernel 6.9+, CAP_SYS_ADMIN): the kernel reads and
//! maps its cache file directly ([`Passthrough`]); elsewhere, or when the
//! kernel refuses, reads come here and the volume serves them from the
//! cache file.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::error::{FsError, ToErrno};
use crate::volume::{Attr, DirSink, Kind, Volume};

/// Entries and attributes never change while mounted.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest readahead asked of the kernel (it may grant less).
const MAX_READAHEAD: u32 = 1 << 20;
/// Largest request asked of the kernel: fuser derives `max_pages` from it
/// (4096 pages), and the kernel grants at most `fs.fuse.max_pages_limit`
/// (256 by default; docs/MOUNTING.md, "Request size and readahead").
const MAX_REQUEST: u32 = 16 << 20;

pub struct GyroFs {
    volume: Arc<Volume>,
    time: SystemTime,
    /// Open files by inode, when passthrough may be used.
    passthrough: Option<Passthrough>,
    /// The session's notifier, once it runs: drops the pages of a file
    /// that goes to passthrough.
    notifier: Arc<OnceLock<Notifier>>,
}

/// FUSE passthrough of files complete in the converted-bytes cache.
///
/// The kernel serves an inode either through the page cache (our reads) or
/// through one backing file, never both at once: an open in the other mode
/// fails with EIO. So each inode's open files are counted here, and a new
/// open takes the mode of those still open; only an inode with none open
/// changes mode. (The kernel forgets an open before it sends RELEASE, so
/// these counts are never below its own.)
struct Passthrough {
    /// Cleared when the kernel refuses (no passthrough in it, or no
    /// CAP_SYS_ADMIN): complete files are then read from the cache file.
    on: AtomicBool,
    open: Mutex<HashMap<u64, Opens>>,
}

enum Opens {
    /// Files open through the page cache.
    Cached(usize),
    /// Files open in passthrough, all on one backing file (kept, and its
    /// cache file pinned, until the last is released).
    Through {
        count: usize,
        backing: BackingId,
        _whole: crate::converted_cache::Whole,
    },
}

/// File handles: how the file was opened (`release` tells them apart).
const FH_CACHED: u64 = 0;
const FH_THROUGH: u64 = 1;

impl GyroFs {
    /// The filesystem of `volume`; `notifier` is filled once the session
    /// runs (until then, pages of files going to passthrough stay).
    pub fn new(volume: Arc<Volume>, notifier: Arc<OnceLock<Notifier>>) -> GyroFs {
        let time = UNIX_EPOCH + Duration::from_secs(volume.mtime_secs().max(0) as u64);
        let passthrough = volume.caches_converted().then(|| Passthrough {
            on: AtomicBool::new(std::env::var_os("GYROFS_NO_PASSTHROUGH").is_none()),
            open: Mutex::new(HashMap::new()),
        });
        GyroFs {
            volume,
            time,
            passthrough,
            notifier,
        }
    }

    /// Open `ino` (allowed to be read) with `--cache-converted`: in
    /// passthrough if it is complete in the cache and no file of it is
    /// open through the page cache, else as usual.
    fn open_counted(&self, p: &Passthrough, ino: INodeNo, reply: ReplyOpen) {
        let cached_open = || {
            matches!(
                p.open.lock().unwrap_or_else(|e| e.into_inner()).get(&ino.0),
                Some(Opens::Cached(_))
            )
        };
        // Checked (every block's CRC, once) before the lock is taken.
        let whole = match p.on.load(Ordering::Relaxed) && !cached_open() {
            true => self.volume.open_whole(ino.0),
            false => None,
        };
        let mut open = p.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get_mut(&ino.0) {
            Some(Opens::Through { count, backing, .. }) => {
                *count += 1;
                return reply.opened_passthrough(
                    FileHandle(FH_THROUGH),
                    FopenFlags::empty(),
                    backing,
                );
            }
            Some(Opens::Cached(count)) => *count += 1,
            None => match whole.map(|w| (reply.open_backing(&w.file), w)) {
                Some((Ok(backing), w)) => {
                    log::debug!(
                        "passthrough: {} is read from {}",
                        self.volume.path_of(ino.0),
                        w.path.display()
                    );
                    reply.opened_passthrough(FileHandle(FH_THROUGH), FopenFlags::empty(), &backing);
                    self.drop_pages(ino);
                    open.insert(
                        ino.0,
                        Opens::Through {
                            count: 1,
                            backing,
                            _whole: w,
                        },
                    );
                    return;
                }
                Some((Err(e), _)) => {
                    if p.on.swap(false, Ordering::Relaxed) {
                        log::info!(
                            "passthrough refused by the kernel ({e}): files complete in the cache are read from it through this process"
                        );
                    }
                    open.insert(ino.0, Opens::Cached(1));
                }
                None => {
                    open.insert(ino.0, Opens::Cached(1));
                }
            },
        }
        reply.opened(FileHandle(FH_CACHED), FopenFlags::FOPEN_KEEP_CACHE);
    }

    /// Drop the kernel's page cache of `ino`, now read in passthrough:
    /// those pages are no longer used (the kernel reads the cache file's),
    /// and would only push the cache file's out of memory (a load of a
    /// model just converted holds both). In a thread: the kernel takes the
    /// pages' locks, and must not wait on this request's handler.
    fn drop_pages(&self, ino: INodeNo) {
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        let path = self.volume.path_of(ino.0);
        let spawned = std::thread::Builder::new()
            .name("gyrofs-drop-pages".into())
            .spawn(move || match n.inval_inode(ino, 0, 0) {
                Ok(()) => log::debug!("passthrough: {path}: its pages read through gyrofs dropped"),
                Err(e) => log::debug!("passthrough: {path}: cannot drop its pages: {e}"),
            });
        if let Err(e) = spawned {
            log::debug!("passthrough: cannot drop the pages of inode {}: {e}", ino.0);
        }
    }

    fn file_attr(&self, a: Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks(),
            atime: self.time,
            mtime: self.time,
            ctime: self.time,
            crtime: self.time,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: crate::volume::BLOCK,
            flags: 0,
        }
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.to_errno())
}

/// A FUSE directory reply as a [`DirSink`].
struct DirReply<'a>(&'a mut ReplyDirectory);

impl DirSink for DirReply<'_> {
    fn add(&mut self, ino: u64, next: u64, kind: Kind, name: &str) -> bool {
        self.0.add(INodeNo(ino), next, file_type(kind), name)
    }
}

/// Answer `EROFS` to operations that would write. Each line gives the
/// callback's name, the types of its arguments after `&self` (ignored), and
/// its reply type.
macro_rules! read_only {
    ($($name:ident($($arg:ty),*) -> $reply:ty;)*) => {
        $(
            fn $name(&self, $(_: $arg,)* reply: $reply) {
                reply.error(Errno::EROFS);
            }
        )*
    };
}

impl Filesystem for GyroFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        if let Err(max) = config.set_max_write(MAX_REQUEST) {
            let _ = config.set_max_write(max);
        }
        let _ = config.set_max_background(64);
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_CACHE_SYMLINKS;
        let _ = config.add_capabilities(wanted & config.capabilities());
        if let Some(p) = &self.passthrough {
            // Backing files on a plain filesystem (depth 0); this mount may
            // itself be stacked under one more (overlayfs).
            let offered = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH);
            if offered && config.set_max_stack_depth(1).is_ok() {
                let _ = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH);
            } else if p.on.swap(false, Ordering::Relaxed) {
                log::info!(
                    "the kernel offers no FUSE passthrough (Linux 6.9+): files complete in the cache are read from it through this process"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.volume.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &self.file_attr(a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.volume.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.file_attr(a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match (self.volume.open_file(ino.0, flags.0), &self.passthrough) {
            (Ok(()), Some(p)) => self.open_counted(p, ino, reply),
            (Ok(()), None) => reply.opened(FileHandle(FH_CACHED), FopenFlags::FOPEN_KEEP_CACHE),
            (Err(e), _) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(p) = &self.passthrough {
            let mut open = p.open.lock().unwrap_or_else(|e| e.into_inner());
            let last = match open.get_mut(&ino.0) {
                Some(Opens::Cached(count) | Opens::Through { count, .. }) => {
                    *count = count.saturating_sub(1);
                    *count == 0
                }
                None => false,
            };
            if last {
                // The backing file is closed (and unpinned) with it.
                open.remove(&ino.0);
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // One reply buffer per FUSE thread, reused: every byte of a reply is
        // written by the read, so it is never zeroed again.
        thread_local! {
            static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let out = &mut buf[..size as usize];
            match self.volume.read_ino(ino.0, offset, out) {
                Ok(n) => reply.data(&out[..n]),
                Err(e) => {
                    let path = self.volume.path_of(ino.0);
                    log::error!("read {path} at {offset}+{size}: {e}");
                    reply.error(errno(&e));
                }
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.volume.opendir(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self
            .volume
            .readdir(ino.0, offset, &mut DirReply(&mut reply))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// No ioctls: `ENOTTY`, quietly (Python asks `TCGETS` of every file it
    /// opens, to know whether it is a terminal).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.volume.statfs();
        reply.statfs(
            s.blocks,
            0,
            0,
            s.files,
            0,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.volume.access(ino.0, mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush.
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    // Everything below would modify the tree: the mount is read-only.
    read_only! {
        setattr(
            &Request, INodeNo, Option<u32>, Option<u32>, Option<u32>, Option<u64>,
            Option<TimeOrNow>, Option<TimeOrNow>, Option<SystemTime>, Option<FileHandle>,
            Option<SystemTime>, Option<SystemTime>, Option<SystemTime>, Option<fuser::BsdFileFlags>
        ) -> ReplyAttr;
        mknod(&Request, INodeNo, &OsStr, u32, u32, u32) -> ReplyEntry;
        mkdir(&Request, INodeNo, &OsStr, u32, u32) -> ReplyEntry;
        unlink(&Request, INodeNo, &OsStr) -> ReplyEmpty;
        rmdir(&Request, INodeNo, &OsStr) -> ReplyEmpty;
        symlink(&Request, INodeNo, &OsStr, &Path) -> ReplyEntry;
        rename(&Request, INodeNo, &OsStr, INodeNo, &OsStr, RenameFlags) -> ReplyEmpty;
        link(&Request, INodeNo, INodeNo, &OsStr) -> ReplyEntry;
        write(
            &Request, INodeNo, FileHandle, u64, &[u8], WriteFlags, OpenFlags, Option<LockOwner>
        ) -> ReplyWrite;
        setxattr(&Request, INodeNo, &OsStr, &[u8], i32, u32) -> ReplyEmpty;
        removexattr(&Request, INodeNo, &OsStr) -> ReplyEmpty;
        create(&Request, INodeNo, &OsStr, u32, u32, i32) -> ReplyCreate;
        fallocate(&Request, INodeNo, FileHandle, u64, u64, i32) -> ReplyEmpty;
        copy_file_range(
            &Request, INodeNo, FileHandle, u64, INodeNo, FileHandle, u64, u64, CopyFileRangeFlags
        ) -> ReplyWrite;
    }
}
