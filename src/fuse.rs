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

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
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
}

impl GyroFs {
    pub fn new(volume: Arc<Volume>) -> GyroFs {
        let time = UNIX_EPOCH + Duration::from_secs(volume.mtime_secs().max(0) as u64);
        GyroFs { volume, time }
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
        match self.volume.open_file(ino.0, flags.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        }
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
