//! Mounting and unmounting behave like the tools people know (sshfs,
//! fusermount3): no mount stacked on a live one, a hint for a dead one,
//! `gyrofs umount` only for gyrofs mounts, a `-l` hint when busy, fatal
//! signals logged, control characters escaped by `ls`, and the non-root path
//! through fusermount3.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn one_line_error(o: &Output, expect: &[&str]) {
    assert!(!o.status.success(), "expected a failure");
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for e in expect {
        assert!(err.contains(e), "{err:?} lacks {e:?}");
    }
}

/// The pid of the daemon serving `mnt` (its command line names the path).
fn daemon_pid(mnt: &Path) -> i32 {
    let want = mnt.display().to_string();
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
            return pid;
        }
    }
    panic!("no daemon for {want}");
}

/// A source and a mount point whose names start with '-', after `--` (as
/// the Python package passes them): the daemon, re-run with
/// `--foreground`, must not see a third operand.
#[test]
fn operands_starting_with_a_dash_after_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sample_hf(), dir.path().join("-model")).unwrap();
    std::fs::create_dir(dir.path().join("-mnt")).unwrap();
    let log = dir.path().join("gyrofs.log");
    let out = Command::new(GYROFS)
        .args(["mount", "--log-file"])
        .arg(&log)
        .args(["--", "-model", "-mnt"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let path = dir.path().join("-mnt");
    let m = Mount { dir, path, log };
    assert!(
        out.status.success(),
        "{}\nlog: {}",
        stderr(&out),
        std::fs::read_to_string(&m.log).unwrap_or_default()
    );
    assert!(is_mounted(&m.path));
    assert!(m.join("raw/model.safetensors").exists());
    let o = gyrofs_within(
        &["umount", "--", &m.path.display().to_string()],
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&m.path));
}

#[test]
fn mounting_onto_a_live_mount_is_refused() {
    let m = Mount::new(&sample_hf());
    let o = gyrofs(&[
        "mount",
        &sample_original().display().to_string(),
        &m.path.display().to_string(),
    ]);
    // The live mount is named by its source, as /proc/mounts shows it.
    let source = format!("already mounted ({})", sample_hf().display());
    one_line_error(&o, &[&source, "gyrofs umount"]);
    // The live mount is untouched.
    assert!(m.join("raw/model.safetensors").exists());
}

#[test]
fn a_dead_mount_gets_a_hint_and_gyrofs_umount_clears_it() {
    let m = Mount::new(&sample_hf());
    let pid = daemon_pid(&m.path);
    // SAFETY: sending SIGKILL to the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // (A name never looked up: the kernel cannot answer from its cache.)
    wait_until("a dead mount", Duration::from_secs(10), || {
        std::fs::metadata(m.join("never-looked-up"))
            .is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
    });
    let path = m.path.display().to_string();
    let o = gyrofs(&["mount", &sample_hf().display().to_string(), &path]);
    one_line_error(&o, &["dead FUSE mount", "gyrofs umount"]);
    let o = gyrofs(&["umount", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&m.path));
}

#[test]
fn umount_refuses_what_is_not_a_gyrofs_mount() {
    let d = tempfile::tempdir().unwrap();
    let plain = d.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let o = gyrofs(&["umount", &plain.display().to_string()]);
    one_line_error(&o, &["not a mount point"]);
    let o = gyrofs(&["umount", &d.path().join("nope").display().to_string()]);
    one_line_error(&o, &["no such file"]);

    let tmpfs = d.path().join("tmpfs");
    std::fs::create_dir(&tmpfs).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&tmpfs)
        .status()
        .unwrap();
    assert!(ok.success(), "mount -t tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            force_unmount(&self.0);
        }
    }
    let _guard = Unmount(tmpfs.clone());
    let o = gyrofs(&["umount", &tmpfs.display().to_string()]);
    one_line_error(&o, &["tmpfs mount, not a gyrofs one", "umount(8)"]);
    assert!(is_mounted(&tmpfs));
}

#[test]
fn umount_of_a_busy_mount_suggests_lazy() {
    let m = Mount::new(&sample_hf());
    let path = m.path.display().to_string();
    let open = std::fs::File::open(m.join("manifest.json")).unwrap();
    let o = gyrofs(&["umount", &path]);
    one_line_error(&o, &["busy", "gyrofs umount -l"]);
    assert!(is_mounted(&m.path));
    let o = gyrofs(&["umount", "-l", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&m.path));
    drop(open);
}

#[test]
fn a_fatal_signal_is_logged() {
    let m = Mount::new(&sample_hf());
    let pid = daemon_pid(&m.path);
    // SAFETY: sending SIGABRT to the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGABRT) };
    wait_until("the log line", Duration::from_secs(10), || {
        std::fs::read_to_string(&m.log).is_ok_and(|l| l.contains("fatal signal SIGABRT"))
    });
}

#[test]
fn ls_escapes_control_characters() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("evil.safetensors");
    write_safetensors(&p, &[T::new("a\u{1b}[2Jb\u{7}", "U8", &[2], 1)]);
    let o = gyrofs(&["ls", &p.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("a%1B[2Jb%07"), "{out}");
    assert!(!out.bytes().any(|b| b == 0x1b || b == 0x07), "{out:?}");
    // --json keeps the exact name (JSON escapes it).
    let o = gyrofs(&["ls", "--json", &p.display().to_string()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensors"][0]["name"], "a\u{1b}[2Jb\u{7}");
}

/// Run `cmd` as user `nobody`.
fn as_nobody(cmd: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    for a in cmd {
        c.arg(a);
    }
    c.output().expect("run setpriv (util-linux)")
}

/// Copy a directory's files (not recursive) with world-readable modes.
fn copy_readable(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            let dst = to.join(e.file_name());
            std::fs::copy(e.path(), &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Set in CI (`.ci/run`): a test that needs fusermount3 fails instead of
/// skipping itself when it is not installed.
const REQUIRE_FUSERMOUNT: &str = "GYROFS_REQUIRE_FUSERMOUNT";

/// Whether fusermount3 is installed. When it is not, say on the terminal
/// (past the test harness's capture) that `test` is skipped and why, or
/// fail if [`REQUIRE_FUSERMOUNT`] is set.
fn fusermount3_installed(test: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .any(|d| d.join("fusermount3").is_file());
    if found {
        return true;
    }
    let why = "fusermount3 is not installed (Debian/Ubuntu package fuse3: apt-get install fuse3)";
    assert!(
        std::env::var_os(REQUIRE_FUSERMOUNT).is_none(),
        "{test}: {why}, and {REQUIRE_FUSERMOUNT} is set"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why}; the non-root mount path is not tested"
    );
    false
}

/// `/dev/fuse` made usable by other users for as long as it lives, as
/// fuse3's udev rule makes it on a normal system (containers have no
/// udev); its mode is put back when dropped, on every path.
struct FuseDeviceForAll {
    restore: Option<u32>,
}

impl FuseDeviceForAll {
    fn new() -> FuseDeviceForAll {
        let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        if mode & 0o006 == 0o006 {
            return FuseDeviceForAll { restore: None };
        }
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode | 0o006))
            .expect("make /dev/fuse usable by other users (as fuse3's udev rule does)");
        FuseDeviceForAll {
            restore: Some(mode),
        }
    }
}

impl Drop for FuseDeviceForAll {
    fn drop(&mut self) {
        if let Some(mode) = self.restore {
            let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode));
        }
    }
}

/// The non-root path: `nobody` mounts through fusermount3 (Debian package
/// fuse3), reads the same bytes root gets from `convert`, and unmounts with
/// `fusermount3 -u` and with `gyrofs umount`. Skipped, with a line saying
/// so, where fusermount3 is not installed (but not in CI).
#[test]
fn non_root_mount_through_fusermount3() {
    if !fusermount3_installed("non_root_mount_through_fusermount3") {
        return;
    }
    let _dev = FuseDeviceForAll::new();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.join("gyrofs");
    std::fs::copy(GYROFS, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = d.path().join("src");
    copy_readable(&sample_hf(), &src);
    let expect = convert(&src, ".");
    let want = expect.path().join("out");
    let open = d.path().join("expect");
    copy_readable(&want.join("raw"), &open.join("raw"));
    copy_readable(&want.join("bf16"), &open.join("bf16"));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            force_unmount(&self.0);
        }
    }
    let _guard = Unmount(mnt.clone());
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(65534), Some(65534)).unwrap();
    let log = logs.join("gyrofs.log");

    for unmount in ["fusermount3", "gyrofs"] {
        let o = as_nobody(&[&exe, &"mount", &src, &mnt, &"--log-file", &log]);
        assert!(
            o.status.success(),
            "mount as nobody: {}\n{}",
            stderr(&o),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(is_mounted(&mnt));
        for f in [
            "raw/model.safetensors",
            "bf16/model-00001-of-00001.safetensors",
        ] {
            let o = as_nobody(&[&"cmp", &mnt.join(f), &open.join(f)]);
            assert!(o.status.success(), "{f} as nobody: {}", stderr(&o));
        }
        let o = match unmount {
            "fusermount3" => as_nobody(&[&"fusermount3", &"-u", &mnt]),
            _ => as_nobody(&[&exe, &"umount", &mnt]),
        };
        assert!(o.status.success(), "{unmount} as nobody: {}", stderr(&o));
        wait_until("unmount", Duration::from_secs(10), || !is_mounted(&mnt));
    }
}

/// `mount -f` says on stderr when the mount is ready and when it has ended.
#[test]
fn foreground_mount_says_when_ready_and_when_it_ends() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    struct Stop(std::process::Child, PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            force_unmount(&self.1);
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(GYROFS)
        .arg("mount")
        .arg(sample_hf())
        .arg(&mnt)
        .arg("-f")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut stop = Stop(child, mnt.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a line from mount -f")
    };
    let ready = next();
    let mnt_s = mnt.display().to_string();
    assert!(ready.contains("mounted at"), "{ready}");
    assert!(ready.contains(&mnt_s), "{ready}");
    assert!(ready.contains("gyrofs umount"), "{ready}");
    assert!(is_mounted(&mnt), "said ready before the mount exists");
    assert!(mnt.join("raw/model.safetensors").exists());
    let o = gyrofs(&["umount", &mnt_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ended = next();
    assert_eq!(ended, format!("gyrofs: {mnt_s} unmounted"));
    let mut status = None;
    wait_until("mount -f to exit", Duration::from_secs(10), || {
        status = stop.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "more lines"
    );
}

/// `scripts/demo.sh` shows cargo's build progress (a first build takes
/// minutes) and then its demo. A stand-in `cargo` first in PATH prints
/// what the real one would (nothing with `--quiet`) and supplies the
/// binary, so no release build runs here.
#[test]
fn demo_script_shows_the_build_then_the_demo() {
    let d = tempfile::tempdir().unwrap();
    let stub = d.path().join("stub");
    std::fs::create_dir(&stub).unwrap();
    let cargo = stub.join("cargo");
    std::fs::write(
        &cargo,
        format!(
            r#"#!/bin/sh
case " $* " in *" --quiet "*|*" -q "*) ;; *) echo "   Compiling gyrofs v0 (stand-in)" >&2 ;; esac
mkdir -p "$CARGO_TARGET_DIR/release" && cp {} "$CARGO_TARGET_DIR/release/gyrofs"
"#,
            GYROFS
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("timeout")
        .arg("120")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", d.path().join("target"))
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("Compiling gyrofs v0 (stand-in)"), "{err}");
    assert!(out.contains("raw/model.safetensors"), "{out}");
    assert!(out.trim_end().ends_with("lossless"), "{out}");
}
