//! `gyrofs mount` and `gyrofs umount`: process life cycle around the adapter.
//!
//! By default `mount` returns only once the mount answers: it starts itself
//! again as a detached daemon (new session, stdin/stdout/stderr away from the
//! terminal) and waits for the daemon to report on a pipe either `ready`
//! (after it has looked up `raw` through the kernel) or the one-line
//! error that stopped it. `-f` keeps the daemon attached. Either way SIGINT,
//! SIGTERM and SIGHUP unmount cleanly, and an external `umount` ends it.
//!
//! Root mounts directly (mount(2)); other users go through `fusermount3`,
//! which fuser calls for us.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fuser::{Config, INodeNo, MountOption, Notifier, Session, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{Error, FUSE_DEVICE, MountError};
use crate::fuse::GyroFs;
use crate::mount_table;
use crate::volume::Volume;

/// The type of a gyrofs mount is `fuse.gyrofs`.
pub const FS_SUBTYPE: &str = "gyrofs";
/// Set in the daemon's environment: report readiness on stdout.
const NOTIFY_ENV: &str = "GYROFS_NOTIFY_READY";
/// How long `mount` waits for the mount to answer once the daemon has read
/// the source. Reading the source itself (headers only, but a model can have
/// a million tensors) is not timed: the daemon either finishes or reports
/// an error, and the wait ends if it dies.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The command line (without the program name) the background daemon
    /// is started with, `--foreground` added: `mount SOURCE MOUNTPOINT
    /// FLAGS...`, as the parser took it (a helper call or `-o` list already
    /// turned into long flags, `crate::mount_options`).
    pub argv: Vec<std::ffi::OsString>,
    pub threads: usize,
    pub allow_other: bool,
    pub foreground: bool,
    pub log_file: Option<PathBuf>,
    /// Kernel readahead for the mount, in KiB (applied when permitted: root).
    pub read_ahead_kb: u32,
    /// What the volume presents (the converted views' dtypes).
    pub volume: crate::volume::Options,
    /// How a remote SOURCE is fetched and cached (`--cache-dir` and
    /// `--cache-size` also place and bound the converted-bytes cache).
    pub remote: crate::remote::RemoteOptions,
    /// Keep computed bytes on disk (`--cache-converted`, docs/CACHE.md).
    pub cache_converted: bool,
}

/// Default readahead: sequential reads of large tensors (cat, cp, loaders)
/// become several 1 MiB requests in flight at once instead of 128 KiB ones.
pub const DEFAULT_READ_AHEAD_KB: u32 = 4096;

/// Default number of FUSE worker threads.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(4, 16)
}

pub fn mount(source: &Path, mountpoint: &Path, opts: &MountOptions) -> Result<(), Error> {
    if !opts.foreground {
        return spawn_daemon(opts);
    }
    let notify = std::env::var_os(NOTIFY_ENV).is_some();
    let result = serve(source, mountpoint, opts, notify);
    if let (Err(e), true) = (&result, notify) {
        // The parent is waiting on our stdout for exactly this line.
        tell_parent(&format!("error: {e}"));
    }
    result
}

/// Re-run this command as a detached daemon with `--foreground`, and wait
/// until it reports that the mount answers (or why it failed).
fn spawn_daemon(opts: &MountOptions) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    // Right after the subcommand: after a `--` (a source or mount point
    // starting with '-') it would be a third operand.
    let mut args = opts.argv.clone();
    let at = args.iter().position(|a| a == "mount").map_or(0, |i| i + 1);
    args.insert(at, "--foreground".into());
    let stderr = match &opts.log_file {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))?,
        ),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(NOTIFY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; it
    // detaches the daemon from the terminal's session so that closing the
    // terminal or pressing Ctrl-C there does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io("gyrofs daemon", e))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    // The daemon speaks one line at a time: `warning: ...` (any number),
    // `opened` once the source is read, then `ready` or `error: ...`.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let last = line == "ready" || line.starts_with("error: ");
            if tx.send(line).is_err() || last {
                return;
            }
        }
    });
    // No deadline until the source is read (see READY_TIMEOUT).
    let mut deadline: Option<Instant> = None;
    loop {
        let got = match deadline {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match got {
            Ok(line) if line == "ready" => return Ok(()),
            Ok(line) if line == "opened" => deadline = Some(Instant::now() + READY_TIMEOUT),
            Ok(line) if line.starts_with("warning: ") => eprintln!("gyrofs: {line}"),
            Ok(line) => {
                let _ = child.wait();
                return Err(MountError::Daemon(match line.strip_prefix("error: ") {
                    Some(msg) => msg.to_string(),
                    None => format!("unexpected message from the mount daemon: {line}"),
                })
                .into());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return Err(MountError::DaemonExited.into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                return Err(MountError::Timeout {
                    secs: READY_TIMEOUT.as_secs(),
                }
                .into());
            }
        }
    }
}

/// The converted-bytes cache of `volume` (source `label`) in `--cache-dir`
/// (the remote block cache's default), holding at most `--cache-size`
/// (default: 64 GiB, or 90% of the free space of its disk if less).
fn open_converted_cache(
    label: &str,
    remote: &crate::remote::RemoteOptions,
    volume: &Volume,
) -> Result<crate::converted_cache::ConvertedCache, MountError> {
    let dir = match remote.cache_dir.clone() {
        Some(d) => d,
        None => crate::remote::default_cache_dir().map_err(|err| MountError::ConvertedCache {
            dir: PathBuf::from("(default)"),
            err,
        })?,
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let fail = |err: String| MountError::ConvertedCache {
        dir: dir.clone(),
        err,
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let default = crate::remote::DEFAULT_CACHE_SIZE;
    let cap = remote.cache_size.unwrap_or_else(|| {
        crate::remote::free_space(&dir).map_or(default, |free| default.min(free / 10 * 9))
    });
    let cache =
        crate::converted_cache::ConvertedCache::open(&dir, cap, label, &volume.catalog.files)
            .map_err(|e| fail(e.to_string()))?;
    log::info!(
        "cache: converted bytes of {label} kept in {} (at most {cap} bytes)",
        dir.join(crate::converted_cache::SUBDIR).display()
    );
    Ok(cache)
}

fn serve(source: &Path, mountpoint: &Path, opts: &MountOptions, notify: bool) -> Result<(), Error> {
    let canonical = check_mountpoint(mountpoint)?;
    check_can_mount(mountpoint)?;
    // As the user named it (a remote one becomes a local folder below).
    let named = source.display().to_string();
    let started = Instant::now();
    crate::store::fault::install();
    log_panics();
    // Absolute (symlinks kept: a snapshot link repointed is a change): the
    // daemon leaves its starting directory below, and the watcher re-resolves
    // the source paths for as long as the mount lives.
    let source = match crate::remote::is_remote(source) {
        true => source.to_path_buf(),
        false => std::path::absolute(source).map_err(|e| Error::io(source, e))?,
    };
    // What `mount` and /proc/mounts list as the filesystem's source, as
    // sshfs's `host:/path`: the absolute path, or a remote source's URL
    // without its query string (which may hold credentials: /proc/mounts
    // is world-readable). Commas would end the option fusermount3 gets it
    // in.
    let fsname = match crate::remote::is_remote(&source) {
        true => crate::remote::names::redact(&source.to_string_lossy()),
        false => source.to_string_lossy().into_owned(),
    }
    .replace(',', "%2C");
    let label = crate::converted_cache::source_label(&source);
    let located = crate::remote::locate(&source, &opts.remote)?;
    let source = located.path.clone();
    let mut volume = Volume::open_with(&source, &located.opener, &opts.volume)?;
    if opts.cache_converted {
        volume.set_converted_cache(open_converted_cache(&label, &opts.remote, &volume)?);
    }
    let volume = Arc::new(volume);
    // Opening a source allocates and frees a lot (a GGUF's vocabulary is
    // counted, a pickle is interpreted); give what is free back to the
    // system, or the daemon keeps that peak for its whole life.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; no memory in use
    // is touched.
    unsafe {
        libc::malloc_trim(0);
    }
    if notify {
        // A daemon must not keep its starting directory busy (the source is
        // open and the mount point resolved by now).
        let _ = std::env::set_current_dir("/");
    }
    for note in located.warnings.iter().chain(volume.notes()) {
        log::warn!("{note}");
        if notify {
            tell_parent(&format!("warning: {note}"));
        }
    }
    if notify {
        tell_parent("opened");
    }
    log::info!(
        "opened {} ({} tensors, {} files in the tree) in {:?}",
        source.display(),
        volume.catalog.tensors.len(),
        volume.tree.len(),
        started.elapsed()
    );

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        // The kernel checks each file's owner, group and mode (taken from
        // the source's, `crate::access`) for every user, as for a disk.
        MountOption::DefaultPermissions,
        MountOption::FSName(fsname.clone()),
        // Type `fuse.gyrofs` in /proc/mounts. A kernel option, not
        // `MountOption::Subtype`: fuser leaves that out of the mount(2) it
        // makes as root (fusermount3 takes either).
        MountOption::CUSTOM(format!("subtype={FS_SUBTYPE}")),
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;

    let notifier_slot: Arc<std::sync::OnceLock<Notifier>> = Arc::default();
    let fs = || GyroFs::new(Arc::clone(&volume), Arc::clone(&notifier_slot));
    let session = match Session::new(fs(), &canonical, &config) {
        // A kernel before about 5.4 may refuse an option it does not know
        // (subtype=) with EINVAL: mount once more without it, as type
        // `fuse` named `gyrofs:SOURCE`, which `gyrofs umount` also knows.
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            log::info!(
                "mount with subtype={FS_SUBTYPE} refused ({err}); mounting as type fuse named gyrofs:{fsname}"
            );
            config.mount_options.retain(|o| {
                !matches!(o, MountOption::CUSTOM(_) | MountOption::FSName(_))
            });
            config
                .mount_options
                .push(MountOption::FSName(format!("gyrofs:{fsname}")));
            Session::new(fs(), &canonical, &config)
        }
        other => other,
    }
    .map_err(|err| MountError::Mount {
        path: mountpoint.to_path_buf(),
        err,
    })?;

    set_read_ahead(&canonical, opts.read_ahead_kb);

    // Signals unmount by path, as `gyrofs umount` does; the session then ends.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| Error::io("signal handlers", e))?;
    let path = canonical.clone();
    // STOPPING=1 goes out when stopping begins: at the signal, or (after an
    // outside `umount`) once the session has ended.
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let said_stopping = Arc::clone(&stopping);
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            if !notify {
                said_stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                crate::notify::notify("STOPPING=1");
            }
            log::info!("signal {sig}: unmounting");
            if let Err(e) = umount(&path, true) {
                log::error!("unmount failed: {e}");
            }
        }
    });

    // `raw` is in every tree and costs nothing to look up (the manifest of
    // a million-tensor model takes a while to size).
    let probe = canonical.join("raw");
    if notify {
        std::thread::spawn(move || report_ready(&probe));
    } else {
        // In the foreground: one line once the mount answers, one when it
        // ends (below).
        let said = format!(
            "gyrofs: {named} mounted at {}; Ctrl-C or `gyrofs umount {}` unmounts",
            mountpoint.display(),
            mountpoint.display()
        );
        std::thread::spawn(move || {
            if answers(&probe) {
                eprintln!("{said}");
                crate::notify::notify("READY=1");
            }
        });
    }

    // Serve on a background session, which owns the mount, and wait for it
    // to end. It ends only once the kernel has unmounted (`umount`, a signal
    // above, `fusermount3 -u`); fuser would then unmount the path once more
    // when dropping the mount, and a new mount may already sit there (it
    // answers the kernel's DESTROY before the unmount completes). So the
    // mount is forgotten, never dropped.
    let mut background = session.spawn().map_err(|err| MountError::Start {
        path: mountpoint.to_path_buf(),
        err,
    })?;
    let notifier = background.notifier();
    let _ = notifier_slot.set(notifier.clone());
    let watched = Arc::clone(&volume);
    std::thread::spawn(move || watch(&watched, &notifier));
    let serving = std::mem::replace(&mut background.guard, std::thread::spawn(|| Ok(())));
    let ended = serving.join();
    std::mem::forget(background);
    // Computed bytes still on their way to the converted cache.
    if !volume.flush_converted(Duration::from_secs(30)) {
        log::warn!("cache: some computed bytes were not written before exit");
    }
    let path = mountpoint.to_path_buf();
    match ended {
        Ok(Ok(())) => {
            if !notify {
                if !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    crate::notify::notify("STOPPING=1");
                }
                eprintln!("gyrofs: {} unmounted", mountpoint.display());
            }
            Ok(())
        }
        Ok(Err(err)) => Err(MountError::Session { path, err }.into()),
        Err(_) => Err(MountError::Panicked { path }.into()),
    }
}

/// Check that `mountpoint` can take a new mount, and resolve it (now: once
/// mounted, resolving the path would ask the mount itself, which does not
/// answer until the session runs).
fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, Error> {
    let path = mountpoint.to_path_buf();
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(MountError::NotADirectory { path }.into()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(MountError::Stale { path }.into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MountError::NoMountPoint { path }.into());
        }
        Err(e) => return Err(Error::io(mountpoint, e)),
    }
    let canonical = std::fs::canonicalize(mountpoint).map_err(|e| Error::io(mountpoint, e))?;
    if let Some(m) = mount_table::mount_at(&canonical)
        && m.is_gyrofs()
    {
        // The kernel may answer stat from its cache even for a dead mount;
        // statfs always asks the daemon.
        if statfs_errno(&canonical) == Some(libc::ENOTCONN) {
            return Err(MountError::Stale { path }.into());
        }
        return Err(MountError::AlreadyMounted {
            path,
            mounted: m.source,
        }
        .into());
    }
    Ok(canonical)
}

/// Check, before the source is read, that this process can mount at all:
/// a non-root user needs `fusermount3` (fuser runs it), and every mount
/// opens `/dev/fuse`. Without them fuser's errors are a bare errno ("No
/// such file or directory") that sends the user after the mount point.
fn check_can_mount(mountpoint: &Path) -> Result<(), MountError> {
    let path = mountpoint.to_path_buf();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && find_fusermount().is_none() {
        return Err(MountError::NoFusermountToMount { path });
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(FUSE_DEVICE);
    match opened {
        Ok(_) => Ok(()),
        Err(err) => {
            let why = match err.raw_os_error() {
                Some(libc::EACCES) => {
                    "it is not usable by you: as root, run `chmod 666 /dev/fuse` (what fuse3's udev rule does), or add yourself to its group"
                }
                Some(libc::EPERM) => {
                    "the device is not allowed here: in a container, pass it in (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
                }
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => {
                    "load the FUSE kernel module (as root: modprobe fuse); in a container, pass the device in (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
                }
                _ => "FUSE is not usable on this machine",
            };
            Err(MountError::FuseDevice { path, err, why })
        }
    }
}

/// The `fusermount3` (or `fusermount`) that fuser will run, found where it
/// looks: `$FUSERMOUNT_PATH`, then `PATH`, then `/sbin` and `/bin`.
fn find_fusermount() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(p)).filter(|p| runnable(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend([PathBuf::from("/sbin"), PathBuf::from("/bin")]);
    ["fusermount3", "fusermount"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| runnable(p))
}

/// The errno of statfs(2) on `path`, if it fails.
fn statfs_errno(path: &Path) -> Option<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` is a valid
    // NUL-terminated path for the duration of the call.
    let r = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf)
    };
    (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// How often the watcher checks the source files for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Check the source files for changes every [`WATCH_INTERVAL`], for the life
/// of the daemon. A changed file is logged with every virtual file that reads
/// it (one line each), and their pages in the kernel's cache are dropped, so
/// that no stale byte is served from the cache: the next read reaches the
/// daemon and answers EIO.
fn watch(volume: &Volume, notifier: &Notifier) {
    loop {
        std::thread::sleep(WATCH_INTERVAL);
        for changed in volume.poll_changes() {
            let name = &volume.catalog.files[changed.file].file.name;
            log::error!(
                "source file {name} changed since it was mounted; reads of the {} files made from it answer EIO",
                changed.affected.len()
            );
            for ino in changed.affected {
                log::error!(
                    "{}: source file {name} changed; reads answer EIO",
                    volume.path_of(ino)
                );
                // ENOENT: the kernel holds nothing of this file; nothing to drop.
                if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0)
                    && e.raw_os_error() != Some(libc::ENOENT)
                {
                    log::warn!("cannot drop cached pages of inode {ino}: {e}");
                }
            }
        }
    }
}

/// Log panics (the daemon's stderr is the log file, or nothing) before the
/// default report.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        default(info);
    }));
}

/// Set the kernel readahead of the mount at `mountpoint` (canonical path),
/// found through /proc/self/mountinfo so that the mount itself is not asked.
/// Needs root; otherwise the kernel default stays and this is logged.
fn set_read_ahead(mountpoint: &Path, kb: u32) {
    let Some(m) = mount_table::mount_at(mountpoint) else {
        log::info!(
            "{}: not found in /proc/self/mountinfo; readahead unchanged",
            mountpoint.display()
        );
        return;
    };
    let knob = format!("/sys/class/bdi/{}/read_ahead_kb", m.device);
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => log::info!("{knob} = {kb}"),
        Err(e) => log::info!("cannot set {knob} ({e}); readahead unchanged"),
    }
}

/// One line to the waiting `gyrofs mount` (our stdout is its pipe). A parent
/// that has gone away (killed while waiting) is not an error of ours.
fn tell_parent(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Wait (bounded) until the mount answers a lookup, then tell the waiting
/// parent and let go of the pipe.
fn report_ready(probe: &Path) {
    if !answers(probe) {
        let err = MountError::NoAnswer {
            path: probe.to_path_buf(),
        };
        tell_parent(&format!("error: {err}"));
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid open fd; stdout is locked, so no
        // other thread is writing to it while it is replaced.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// Wait (up to [`READY_TIMEOUT`]) until the mount answers a lookup of
/// `probe`; false if it never does.
fn answers(probe: &Path) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::fs::metadata(probe).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `gyrofs umount MNT`: unmount a gyrofs mount (and nothing else):
/// umount(2) as root, `fusermount3 -u` otherwise.
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), MountError> {
    let path = mountpoint.to_path_buf();
    // Not canonicalize(): a dead FUSE mount cannot be resolved. Resolve the
    // parent and keep the last component.
    let abs = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent)
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.clone())
        }
        _ => std::fs::canonicalize(mountpoint).unwrap_or_else(|_| path.clone()),
    };
    match mount_table::mount_at(&abs) {
        None => {
            return Err(MountError::NotMounted {
                path,
                exists: abs.exists(),
            });
        }
        Some(m) if !m.is_gyrofs() => {
            return Err(MountError::NotGyrofs {
                path,
                fstype: m.fstype,
            });
        }
        Some(_) => {}
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(abs.as_os_str().as_bytes())
            .map_err(|_| MountError::NulInPath)?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBUSY) {
                return Err(MountError::Busy { path });
            }
            return Err(MountError::Unmount { path, err });
        }
        return Ok(());
    }
    let mut last = None;
    for bin in ["fusermount3", "fusermount"] {
        let mut cmd = Command::new(bin);
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        match cmd.arg(&abs).stderr(Stdio::piped()).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if said.contains("busy") && !lazy {
                    return Err(MountError::Busy { path });
                }
                return Err(MountError::Fusermount {
                    path,
                    program: bin,
                    status: out.status,
                    said,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(MountError::NoFusermount {
        path,
        err: last.unwrap_or_else(|| std::io::Error::other("not found")),
    })
}
