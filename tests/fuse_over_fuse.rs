//! A source on another FUSE filesystem (as on NFS, mountpoint-s3, JuiceFS):
//! a small passthrough filesystem in this test serves a source folder and
//! counts the bytes the kernel asks it for. gyrofs mounted over it gives the
//! same bytes as over the local folder, and reading one expert file pulls
//! only about that expert's bytes from below, not the layer or the file.

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    Request,
};

/// A read-only passthrough of the regular files of one folder, counting the
/// bytes read from each.
struct Passthrough {
    files: Vec<(String, PathBuf, u64)>,
    read: Arc<HashMap<String, AtomicU64>>,
}

const TTL: Duration = Duration::from_secs(1);

impl Passthrough {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = if ino == 1 {
            (FileType::Directory, 0, 0o555)
        } else {
            let (_, _, size) = self.files.get(ino as usize - 2)?;
            (FileType::RegularFile, *size, 0o444)
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for Passthrough {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent.0 == 1)
            .then(|| self.files.iter().position(|f| OsStr::new(&f.0) == name))
            .flatten();
        match found.and_then(|i| self.attr(i as u64 + 2)) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _: &Request, _: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((name, path, len)) = self.files.get(ino.0 as usize - 2) else {
            return reply.error(Errno::ENOENT);
        };
        let n = (*len).saturating_sub(offset).min(size as u64) as usize;
        let mut buf = vec![0u8; n];
        match std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut buf, offset)) {
            Ok(()) => {
                self.read[name].fetch_add(n as u64, Ordering::Relaxed);
                reply.data(&buf);
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        for (i, (name, _, _)) in self.files.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(i as u64 + 2),
                i as u64 + 1,
                FileType::RegularFile,
                name,
            ) {
                break;
            }
        }
        reply.ok();
    }
}

/// A passthrough mount of `src` at `at`; unmounted when dropped.
struct Lower {
    _session: fuser::BackgroundSession,
    path: PathBuf,
    read: Arc<HashMap<String, AtomicU64>>,
}

impl Lower {
    fn new(src: &Path, at: &Path) -> Lower {
        let mut files: Vec<(String, PathBuf, u64)> = std::fs::read_dir(src)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                let len = e.metadata().unwrap().len();
                (e.file_name().to_string_lossy().into_owned(), e.path(), len)
            })
            .collect();
        files.sort();
        let read = Arc::new(
            files
                .iter()
                .map(|f| (f.0.clone(), AtomicU64::new(0)))
                .collect(),
        );
        let fs = Passthrough {
            files,
            read: Arc::clone(&read),
        };
        std::fs::create_dir_all(at).unwrap();
        let mut config = Config::default();
        config.mount_options = vec![MountOption::RO, MountOption::FSName("passthrough".into())];
        let session = fuser::Session::new(fs, at, &config)
            .expect("mount the passthrough filesystem")
            .spawn()
            .expect("serve it");
        wait_until("the passthrough mount", Duration::from_secs(10), || {
            is_mounted(at)
        });
        Lower {
            _session: session,
            path: at.to_path_buf(),
            read,
        }
    }

    fn reset(&self) {
        self.read
            .values()
            .for_each(|c| c.store(0, Ordering::Relaxed));
    }

    fn bytes(&self, name: &str) -> u64 {
        self.read[name].load(Ordering::Relaxed)
    }
}

impl Drop for Lower {
    fn drop(&mut self) {
        force_unmount(&self.path);
    }
}

#[test]
fn same_bytes_over_another_fuse_filesystem() {
    let d = tempfile::tempdir().unwrap();
    let lower = Lower::new(&sample_hf(), &d.path().join("lower"));
    let over = Mount::new(&lower.path);
    let direct = convert(&sample_hf(), ".");
    let want = direct.path().join("out");
    let files = walk(&want);
    assert_eq!(walk(&over.path), files);
    for f in &files {
        assert_eq!(
            std::fs::read(over.join(f)).unwrap(),
            std::fs::read(want.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// One BF16 expert of an MXFP4 gpt-oss-shaped model pulls about that
/// expert's blocks and scales from the filesystem below, not the layer.
#[test]
fn one_expert_reads_about_its_own_bytes_from_below() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let (e, rows, groups) = (8usize, 1024usize, 16usize);
    let ts = vec![
        T::new("model.embed_tokens.weight", "BF16", &[16, 8], 1),
        T::new(
            "model.layers.0.mlp.experts.gate_up_proj_blocks",
            "U8",
            &[e, rows, groups, 16],
            2,
        ),
        T::new(
            "model.layers.0.mlp.experts.gate_up_proj_scales",
            "U8",
            &[e, rows, groups],
            3,
        ),
        T::new(
            "model.layers.0.mlp.experts.down_proj_blocks",
            "U8",
            &[e, rows, groups, 16],
            4,
        ),
        T::new(
            "model.layers.0.mlp.experts.down_proj_scales",
            "U8",
            &[e, rows, groups],
            5,
        ),
    ];
    write_safetensors(&src.join("model.safetensors"), &ts);
    std::fs::write(
        src.join("config.json"),
        r#"{"model_type": "gpt_oss", "num_local_experts": 8, "num_hidden_layers": 1}"#,
    )
    .unwrap();
    let lower = Lower::new(&src, &d.path().join("lower"));
    let over = Mount::new(&lower.path);
    lower.reset();

    let expert = std::fs::read(over.join("bf16/experts/layer_00_expert_003.safetensors")).unwrap();
    let own = 2 * (rows * groups * 16 + rows * groups) as u64;
    let pulled = lower.bytes("model.safetensors");
    eprintln!(
        "one BF16 expert ({} bytes): {pulled} bytes read from below for {own} bytes of its source ({:.2}x)",
        expert.len(),
        pulled as f64 / own as f64
    );
    assert!(pulled >= own, "read less than the expert's own bytes?");
    assert!(
        pulled <= 3 * own,
        "{pulled} bytes read from below for an expert of {own} bytes"
    );
    let layer = 2 * e as u64 * (rows * groups * 17) as u64;
    assert!(pulled < layer / 2, "the whole layer was pulled");

    // The bytes equal those of a mount of the local folder.
    let local = Mount::new(&src);
    assert_eq!(
        std::fs::read(local.join("bf16/experts/layer_00_expert_003.safetensors")).unwrap(),
        expert
    );
}
