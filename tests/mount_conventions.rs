//! gyrofs mounts the way other FUSE filesystems do: `-o` option lists,
//! mount(8) with `-t fuse.gyrofs` / `-t gyrofs` and fstab lines through the
//! `mount.gyrofs` helper (a symlink to the binary, docs/MOUNTING.md),
//! `umount` ending the daemon, type `fuse.gyrofs` and the source as the
//! filesystem's name in /proc/mounts, and readiness told to systemd.
//!
//! The helper tests put symlinks into /sbin (where mount(8) looks) for their
//! duration only, one test at a time, and skip with a line saying so when
//! not run as root.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The /proc/mounts line of the mount at `mnt`: (source, type, options).
fn proc_mounts(mnt: &Path) -> Option<(String, String, String)> {
    let want = mnt.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(1) == Some(&want.as_str()))
                .then(|| (f[0].to_string(), f[2].to_string(), f[3].to_string()))
        })
}

/// The pids of daemons serving `mnt` (their command lines name the path).
fn daemons(mnt: &Path) -> Vec<i32> {
    let want = mnt.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "--foreground") && args.contains(&want) {
            pids.push(pid);
        }
    }
    pids
}

/// A mount point in a temporary folder, force-unmounted when dropped (every
/// path, a failed assertion included).
struct Mnt {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Mnt {
    fn new() -> Mnt {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        Mnt { dir, path }
    }
}

impl Drop for Mnt {
    fn drop(&mut self) {
        for _ in 0..5 {
            if !is_mounted(&self.path) {
                break;
            }
            force_unmount(&self.path);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// One helper test at a time (they share /sbin's names).
static HELPERS: Mutex<()> = Mutex::new(());

/// Symlinks to the gyrofs under test at system paths (`/sbin/mount.gyrofs`
/// and `/sbin/mount.fuse.gyrofs`, as docs/MOUNTING.md installs them),
/// removed when dropped; a symlink that was there before is put back.
struct Links {
    installed: Vec<(PathBuf, Option<PathBuf>)>,
    _one: std::sync::MutexGuard<'static, ()>,
}

const HELPER_LINKS: [&str; 2] = ["/sbin/mount.gyrofs", "/sbin/mount.fuse.gyrofs"];

impl Links {
    /// None (with the reason printed) where they cannot be installed.
    fn install(test: &str, paths: &[&str]) -> Option<Links> {
        let one = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
        if !is_root() {
            println!("skipped: {test}: installing links into system folders needs root");
            return None;
        }
        let mut links = Links {
            installed: Vec::new(),
            _one: one,
        };
        for at in paths.iter().map(PathBuf::from) {
            let dir = at.parent().expect("a path in a folder");
            if !dir.is_dir() {
                println!(
                    "skipped: {test}: {} does not exist on this machine",
                    dir.display()
                );
                return None;
            }
            let before = match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => Some(std::fs::read_link(&at).unwrap()),
                Ok(_) => {
                    println!(
                        "skipped: {test}: {} is an installed file, not a symlink; left alone",
                        at.display()
                    );
                    return None;
                }
                Err(_) => None,
            };
            let _ = std::fs::remove_file(&at);
            links.installed.push((at.clone(), before));
            if let Err(e) = std::os::unix::fs::symlink(GYROFS, &at) {
                println!("skipped: {test}: cannot link {}: {e}", at.display());
                return None;
            }
        }
        Some(links)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for (at, before) in &self.installed {
            let _ = std::fs::remove_file(at);
            if let Some(target) = before {
                let _ = std::os::unix::fs::symlink(target, at);
            }
        }
    }
}

/// mount(8), bounded.
fn mount8(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new("mount");
    for a in args {
        cmd.arg(a);
    }
    run_within(cmd, Duration::from_secs(60))
}

fn run_within(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounted as a gyrofs mount of `source` should be: in /proc/mounts as
/// type `fuse.gyrofs` named by the source, read-only, serving the sample.
fn assert_gyrofs_mount(mnt: &Path, source: &Path) {
    let (name, fstype, opts) = proc_mounts(mnt).expect("in /proc/mounts");
    assert_eq!(fstype, "fuse.gyrofs");
    assert_eq!(name, source.display().to_string());
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    assert!(mnt.join("bf16/config.json").is_file());
}

/// `umount MNT` (util-linux) unmounts, and the daemon ends.
fn umount8_ends_the_daemon(mnt: &Path) {
    let pids = daemons(mnt);
    assert_eq!(pids.len(), 1, "one daemon for {}: {pids:?}", mnt.display());
    let o = run_within(
        {
            let mut c = Command::new("umount");
            c.arg(mnt);
            c
        },
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "umount: {}", stderr(&o));
    assert!(!is_mounted(mnt));
    let proc = PathBuf::from(format!("/proc/{}", pids[0]));
    wait_until("the daemon to end", Duration::from_secs(10), || {
        // Gone, or a zombie nobody reaps (its parent exited).
        std::fs::read_to_string(proc.join("stat"))
            .map_or(true, |s| s.split(' ').nth(2) == Some("Z"))
    });
}

#[test]
fn o_options_are_the_long_flags() {
    let mnt = Mnt::new();
    let log = mnt.dir.path().join("log");
    let o = gyrofs_within(
        &[
            "mount",
            &sample_hf().display().to_string(),
            &mnt.path.display().to_string(),
            "-o",
            &format!(
                "ro,allow_other,dtype=bf16+f16,uid=4242,file_mode=0440,log_file={},_netdev,nofail",
                log.display()
            ),
        ],
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mnt.path.join("f16/config.json").is_file(), "dtype=bf16+f16");
    assert!(mnt.path.join("bf16/config.json").is_file());
    let m = std::fs::metadata(mnt.path.join("bf16/config.json")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (4242, 0o440));
    assert!(proc_mounts(&mnt.path).unwrap().2.contains("allow_other"));
    assert!(log.exists(), "log_file=");
    let o = gyrofs(&["umount", &mnt.path.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_unknown_o_option_is_refused_in_one_line() {
    let mnt = Mnt::new();
    let o = gyrofs_within(
        &[
            "mount",
            &sample_hf().display().to_string(),
            &mnt.path.display().to_string(),
            "-o",
            "allow_other,compress=zstd",
        ],
        Duration::from_secs(30),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown mount option 'compress=zstd'"),
        "{err}"
    );
    assert!(!is_mounted(&mnt.path));
    // Nor is an -o list hidden in a group of short flags ignored.
    let o = gyrofs_within(
        &[
            "mount",
            &sample_hf().display().to_string(),
            &mnt.path.display().to_string(),
            "-fo",
            "dtype=f32",
        ],
        Duration::from_secs(30),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("-o must stand on its own"), "{err}");
    assert!(!is_mounted(&mnt.path));
}

/// mount(8)'s `-f` (fake) mounts nothing but still checks the command
/// line: a bad option value fails it.
#[test]
fn fake_mount_checks_the_options() {
    let mnt = Mnt::new();
    let (src, dst) = (
        sample_hf().display().to_string(),
        mnt.path.display().to_string(),
    );
    let o = gyrofs_within(
        &[&src, &dst, "-f", "-o", "dtype=bf17"],
        Duration::from_secs(30),
    );
    assert!(!o.status.success(), "-f accepted dtype=bf17");
    assert!(stderr(&o).contains("bf17"), "{}", stderr(&o));
    let o = gyrofs_within(
        &[&src, &dst, "-f", "-o", "log_file"],
        Duration::from_secs(30),
    );
    assert!(!o.status.success(), "-f accepted log_file without a value");
    let o = gyrofs_within(
        &[&src, &dst, "-f", "-o", "dtype=f16"],
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&mnt.path));
}

/// A root mount is typed `fuse.gyrofs` and named by its source (an absolute
/// path, a relative one resolved), as sshfs's `host:/path`.
#[test]
fn proc_mounts_shows_fuse_gyrofs_and_the_source() {
    let here = sample_hf().parent().unwrap().to_path_buf();
    let m = Mount::from_dir(&here, Path::new("gpt-oss-tiny"));
    assert_gyrofs_mount(&m.path, &sample_hf());
}

#[test]
fn mount_t_fuse_gyrofs_and_mount_t_gyrofs_go_through_the_helper() {
    let test = "mount_t_fuse_gyrofs_and_mount_t_gyrofs_go_through_the_helper";
    let Some(_helpers) = Links::install(test, &HELPER_LINKS) else {
        return;
    };
    for fstype in ["fuse.gyrofs", "gyrofs"] {
        let mnt = Mnt::new();
        let o = mount8(&[&"-t", &fstype, &sample_hf(), &mnt.path]);
        assert!(o.status.success(), "mount -t {fstype}: {}", stderr(&o));
        assert_gyrofs_mount(&mnt.path, &sample_hf());
        umount8_ends_the_daemon(&mnt.path);
    }
    // Options reach the helper (and the fake flag mounts nothing).
    let mnt = Mnt::new();
    let o = mount8(&[
        &"-t",
        &"fuse.gyrofs",
        &"-o",
        &"dtype=f32",
        &sample_hf(),
        &mnt.path,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mnt.path.join("f32/config.json").is_file());
    assert!(!mnt.path.join("bf16").exists());
    umount8_ends_the_daemon(&mnt.path);
    let o = mount8(&[&"-f", &"-t", &"gyrofs", &sample_hf(), &mnt.path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&mnt.path));
    // A failing mount fails mount(8) with gyrofs's line.
    let o = mount8(&[&"-t", &"gyrofs", &"/nonexistent/model", &mnt.path]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/model"), "{}", stderr(&o));
    assert!(!is_mounted(&mnt.path));
}

/// An fstab line (`SOURCE MNT fuse.gyrofs ro,allow_other,_netdev 0 0`)
/// mounts with `mount MNT`; here with a temporary fstab (`mount -T`).
#[test]
fn an_fstab_line_mounts_with_mount_mnt() {
    let Some(_helpers) = Links::install("an_fstab_line_mounts_with_mount_mnt", &HELPER_LINKS)
    else {
        return;
    };
    let mnt = Mnt::new();
    let fstab = mnt.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# gyrofs\n{} {} fuse.gyrofs ro,allow_other,_netdev,nofail,dtype=bf16+f16 0 0\n",
            sample_hf().display(),
            mnt.path.display()
        ),
    )
    .unwrap();
    let o = mount8(&[&"-T", &fstab, &mnt.path]);
    assert!(o.status.success(), "mount -T fstab MNT: {}", stderr(&o));
    assert_gyrofs_mount(&mnt.path, &sample_hf());
    assert!(mnt.path.join("f16/config.json").is_file());
    assert!(proc_mounts(&mnt.path).unwrap().2.contains("allow_other"));
    umount8_ends_the_daemon(&mnt.path);
}

/// Without the helper, mount(8) falls back to fuse3's `mount.fuse`, which
/// runs `gyrofs SOURCE MNT -o OPTIONS` through /bin/sh. mount(8) clears
/// PATH for its helpers, so the shell's default one is searched: gyrofs is
/// linked into /usr/local/sbin for the test.
#[test]
fn fuse3_mount_fuse_runs_gyrofs_from_the_default_path() {
    let test = "fuse3_mount_fuse_runs_gyrofs_from_the_default_path";
    if !["/sbin/mount.fuse", "/usr/sbin/mount.fuse"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        println!("skipped: {test}: fuse3's mount.fuse is not installed");
        return;
    }
    // Holds the helper lock: no helper is installed meanwhile.
    let Some(_links) = Links::install(test, &["/usr/local/sbin/gyrofs"]) else {
        return;
    };
    if HELPER_LINKS.iter().any(|p| Path::new(p).exists()) {
        println!("skipped: {test}: a mount.fuse.gyrofs helper is installed");
        return;
    }
    let mnt = Mnt::new();
    let o = mount8(&[
        &"-t",
        &"fuse.gyrofs",
        &"-o",
        &"allow_other",
        &sample_hf(),
        &mnt.path,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_gyrofs_mount(&mnt.path, &sample_hf());
    umount8_ends_the_daemon(&mnt.path);
}

/// `mount -f` under systemd (`Type=notify`): `READY=1` once the mount
/// answers, `STOPPING=1` when it ends, on `$NOTIFY_SOCKET`.
#[test]
fn foreground_mount_notifies_systemd() {
    let mnt = Mnt::new();
    let sock = mnt.dir.path().join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(GYROFS)
        .arg("mount")
        .arg(sample_hf())
        .arg(&mnt.path)
        .arg("-f")
        .env("NOTIFY_SOCKET", &sock)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stop = Stop(child);
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(mnt.path.join("raw/model.safetensors").exists());
    let o = gyrofs(&["umount", &mnt.path.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let n = listener.recv(&mut buf).expect("STOPPING=1 within 30 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    wait_until("mount -f to exit", Duration::from_secs(10), || {
        stop.0.try_wait().unwrap().is_some()
    });
}

/// `systemctl stop` (SIGTERM): STOPPING=1 goes out when stopping begins,
/// not once the mount has gone (here a file held open keeps it until the
/// file is closed).
#[test]
fn stopping_is_notified_when_sigterm_arrives() {
    let mnt = Mnt::new();
    let sock = mnt.dir.path().join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(GYROFS)
        .arg("mount")
        .arg(sample_hf())
        .arg(&mnt.path)
        .arg("-f")
        .env("NOTIFY_SOCKET", &sock)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stop = Stop(child);
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    let held = std::fs::File::open(mnt.path.join("raw/model.safetensors")).unwrap();
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(stop.0.id() as libc::pid_t, libc::SIGTERM) };
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = listener
        .recv(&mut buf)
        .expect("STOPPING=1 within 10 s of SIGTERM, with a file still open");
    assert_eq!(&buf[..n], b"STOPPING=1");
    drop(held);
    wait_until("mount -f to exit", Duration::from_secs(10), || {
        stop.0.try_wait().unwrap().is_some()
    });
    // Once, not again at the end.
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(listener.recv(&mut buf).is_err(), "a second notification");
}

/// The completion scripts and the man page come from the command line's
/// definition (and name its commands and options).
#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let o = gyrofs(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("cache-dir") && text.contains("convert"),
            "{shell}"
        );
    }
    let o = gyrofs(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let man = String::from_utf8_lossy(&o.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH gyrofs"),
        "{man:.200}"
    );
    assert!(man.contains("mount"));
    // One page per command, with its options.
    let o = gyrofs(&["man", "mount"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let man = String::from_utf8_lossy(&o.stdout);
    assert!(man.contains(".TH gyrofs-mount"), "{man:.300}");
    assert!(
        man.contains("cache\\-dir") && man.contains("allow\\-other"),
        "{man}"
    );
}
