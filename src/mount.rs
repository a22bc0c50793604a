//! `gyrofs mount` and `gyrofs umount`: process life cycle around the adapter.
//!
//! By default `mount` returns only once the mount answers: it starts itself
//! again as a detached daemon (new session, stdin/stdout/stderr away from the
//! terminal) and waits for the daemon to report on a pipe either `ready`
//! (after it has looked up `manifest.json` through the kernel) or the one-line
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

use fuser::{Config, MountOption, Session, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{Error, MountError};
use crate::fuse::GyroFs;
use crate::volume::Volume;

/// Set in the daemon's environment: report readiness on stdout.
const NOTIFY_ENV: &str = "GYROFS_NOTIFY_READY";
/// How long `mount` waits for the daemon to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub threads: usize,
    pub allow_other: bool,
    pub foreground: bool,
    pub log_file: Option<PathBuf>,
    /// Kernel readahead for the mount, in KiB (applied when permitted: root).
    pub read_ahead_kb: u32,
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
        println!("error: {e}");
    }
    result
}

/// Re-run this command as a detached daemon with `--foreground`, and wait
/// until it reports that the mount answers (or why it failed).
fn spawn_daemon(opts: &MountOptions) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
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
    // then `ready` or `error: ...`.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let last = !line.starts_with("warning: ");
            if tx.send(line).is_err() || last {
                return;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ready" => return Ok(()),
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

fn serve(source: &Path, mountpoint: &Path, opts: &MountOptions, notify: bool) -> Result<(), Error> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MountError::NotADirectory {
                path: mountpoint.to_path_buf(),
            }
            .into());
        }
        Err(e) => return Err(Error::io(mountpoint, e)),
    }
    // Resolve now: once mounted, resolving the path would ask the mount
    // itself, which does not answer until the session runs.
    let canonical = std::fs::canonicalize(mountpoint).map_err(|e| Error::io(mountpoint, e))?;
    let started = Instant::now();
    let volume = Arc::new(Volume::open(source)?);
    if notify {
        // A daemon must not keep its starting directory busy (the source is
        // open and the mount point resolved by now).
        let _ = std::env::set_current_dir("/");
    }
    for note in &volume.notes {
        log::warn!("{note}");
        if notify {
            println!("warning: {note}");
        }
    }
    log::info!(
        "opened {} ({} tensors, {} files in the tree) in {:?}",
        source.display(),
        volume.catalog.tensors.len(),
        volume.tree.len(),
        started.elapsed()
    );

    let mut config = Config::default();
    let fsname = format!(
        "gyrofs:{}",
        source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::FSName(fsname),
        MountOption::Subtype("gyrofs".into()),
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;

    let session = Session::new(GyroFs::new(volume), &canonical, &config).map_err(|err| {
        MountError::Mount {
            path: mountpoint.to_path_buf(),
            err,
        }
    })?;

    set_read_ahead(&canonical, opts.read_ahead_kb);

    // Signals unmount by path, as `gyrofs umount` does; the session then ends.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| Error::io("signal handlers", e))?;
    let path = canonical.clone();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}: unmounting");
            if let Err(e) = umount(&path, true) {
                log::error!("unmount failed: {e}");
            }
        }
    });

    if notify {
        let probe = canonical.join(crate::view::manifest::NAME);
        std::thread::spawn(move || report_ready(&probe));
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
    let serving = std::mem::replace(&mut background.guard, std::thread::spawn(|| Ok(())));
    let ended = serving.join();
    std::mem::forget(background);
    let path = mountpoint.to_path_buf();
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(MountError::Session { path, err }.into()),
        Err(_) => Err(MountError::Panicked { path }.into()),
    }
}

/// Set the kernel readahead of the mount at `mountpoint` (canonical path),
/// found through /proc/self/mountinfo so that the mount itself is not asked.
/// Needs root; otherwise the kernel default stays and this is logged.
fn set_read_ahead(mountpoint: &Path, kb: u32) {
    let want = mountinfo_escape(&mountpoint.to_string_lossy());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Fields: id parent major:minor root mountpoint ...; the last match is the newest mount.
    let dev = info
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[4] == want)
        .map(|f| f[2].to_string());
    let Some(dev) = dev else {
        log::info!(
            "{}: not found in /proc/self/mountinfo; readahead unchanged",
            mountpoint.display()
        );
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => log::info!("{knob} = {kb}"),
        Err(e) => log::info!("cannot set {knob} ({e}); readahead unchanged"),
    }
}

/// Wait (bounded) until the mount answers a lookup, then tell the waiting
/// parent and let go of the pipe.
fn report_ready(probe: &Path) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::fs::metadata(probe).is_err() {
        if Instant::now() > deadline {
            let err = MountError::NoAnswer {
                path: probe.to_path_buf(),
            };
            println!("error: {err}");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
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

/// `gyrofs umount MNT`: unmount(2) as root, `fusermount3 -u` otherwise.
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), MountError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|_| MountError::NulInPath)?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
            return Err(MountError::Unmount {
                path: mountpoint.to_path_buf(),
                err: std::io::Error::last_os_error(),
            });
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
        match cmd.arg(mountpoint).status() {
            Ok(s) if s.success() => return Ok(()),
            Ok(status) => {
                return Err(MountError::Fusermount {
                    path: mountpoint.to_path_buf(),
                    program: bin,
                    status,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(MountError::NoFusermount {
        path: mountpoint.to_path_buf(),
        err: last.unwrap_or_else(|| std::io::Error::other("not found")),
    })
}

/// `path` as /proc/self/mountinfo writes it: space, tab, newline and
/// backslash as octal escapes (`\040`, `\011`, `\012`, `\134`).
fn mountinfo_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_mountinfo() {
        assert_eq!(mountinfo_escape("/mnt/a b"), "/mnt/a\\040b");
        assert_eq!(mountinfo_escape("t\tn\nb\\"), "t\\011n\\012b\\134");
        assert_eq!(mountinfo_escape("/ü/x"), "/ü/x");
    }
}
