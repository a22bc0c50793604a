//! Mount conventions: the `-o` option list of FUSE filesystems and fstab,
//! and the command line mount(8) gives a `mount.gyrofs` helper.
//!
//! `-o allow_other,dtype=bf16+f16,cache_dir=/var/cache/gyrofs` is the long
//! flags of `gyrofs mount` written the way sshfs and fstab take them: `_`
//! for `-`, `+` for the commas of the `dtype` list. The list is turned into
//! those long flags before the command line is parsed, so that both
//! spellings are checked by one parser and say the same thing. The generic
//! options that mount(8) and fstab add (`rw`, `ro`, `_netdev`, `nofail`,
//! `defaults`, ...) say nothing to gyrofs (every mount is read-only, nodev,
//! nosuid) and are dropped.
//!
//! mount(8) runs `/sbin/mount.TYPE SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]`
//! for `-t TYPE` (for `fuse.gyrofs`, `mount.fuse.gyrofs`, else
//! `mount.fuse`, which runs `gyrofs SOURCE MOUNTPOINT -o OPTIONS`). All of
//! these become `gyrofs mount SOURCE MOUNTPOINT ...` here: the helpers as
//! symlinks to the gyrofs binary, recognised by their name (argv\[0\]).
//! docs/MOUNTING.md says how to install them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::error::MountError;

/// Names under which the gyrofs binary acts as mount(8)'s helper.
pub const HELPER_NAMES: [&str; 2] = ["mount.gyrofs", "mount.fuse.gyrofs"];

/// Options of mount(8) and fstab that concern the mount command, systemd or
/// the kernel's generic flags, not gyrofs: dropped from a `-o` list.
const GENERIC: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "auto",
    "noauto",
    "_netdev",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "async",
    "default_permissions",
];

/// What the command line of `gyrofs mount` accepts, from its definition.
pub struct Grammar {
    /// The subcommands (`mount`, `ls`, ...).
    pub subcommands: Vec<String>,
    /// The long options of `mount` (`allow-other`, `cache-dir`, ...), and
    /// whether each takes a value.
    pub mount_longs: HashMap<String, bool>,
}

/// A command line made ready for the parser.
#[derive(Debug, PartialEq, Eq)]
pub struct Normalized {
    /// The arguments (without the program name) in `gyrofs` form.
    pub args: Vec<OsString>,
    /// mount(8)'s `-f` (fake): do everything but mount.
    pub fake: bool,
    /// Options a sloppy (`-s`) helper call gave that gyrofs does not know.
    pub ignored: Vec<String>,
}

/// Turn the command line of `program` (argv\[0\]) into `gyrofs`'s own: a
/// helper call (`mount.gyrofs SOURCE MOUNTPOINT -o OPTIONS`, or the same as
/// `gyrofs SOURCE MOUNTPOINT -o OPTIONS`, how fuse3's `mount.fuse3` runs
/// it) into `mount SOURCE MOUNTPOINT ...`, and each `-o` list of a mount
/// into long flags.
pub fn normalize(
    program: &OsStr,
    args: &[OsString],
    grammar: &Grammar,
) -> Result<Normalized, MountError> {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let first = args.first().map(|a| a.to_string_lossy().into_owned());
    let helper = HELPER_NAMES.contains(&name.as_str())
        || first.as_ref().is_some_and(|f| {
            !f.starts_with('-')
                && !grammar.subcommands.contains(f)
                && args.iter().any(|a| a.as_encoded_bytes().starts_with(b"-o"))
        });
    if helper {
        return helper_call(args, grammar);
    }
    if first.as_deref() != Some("mount") {
        return Ok(Normalized {
            args: args.to_vec(),
            fake: false,
            ignored: Vec::new(),
        });
    }
    let mut out = vec![OsString::from("mount")];
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            out.push(arg.clone());
            out.extend(rest.cloned());
            break;
        }
        match option_list(arg, &mut rest)? {
            Some(list) => out.extend(expand(&list, grammar, false)?.0),
            None => out.push(arg.clone()),
        }
    }
    Ok(Normalized {
        args: out,
        fake: false,
        ignored: Vec::new(),
    })
}

/// The list of an `-o LIST` or `-oLIST` argument (taking LIST from `rest`
/// for the first), or None for any other argument.
fn option_list(
    arg: &OsStr,
    rest: &mut std::slice::Iter<'_, OsString>,
) -> Result<Option<String>, MountError> {
    let bytes = arg.as_encoded_bytes();
    if bytes == b"-o" {
        let list = rest.next().ok_or(MountError::NoOptionList)?;
        return Ok(Some(list.to_string_lossy().into_owned()));
    }
    match bytes.strip_prefix(b"-o") {
        Some(list) => Ok(Some(String::from_utf8_lossy(list).into_owned())),
        None => Ok(None),
    }
}

/// `SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`, as mount(8) calls
/// its helpers, into `mount SOURCE MOUNTPOINT FLAGS...`.
fn helper_call(args: &[OsString], grammar: &Grammar) -> Result<Normalized, MountError> {
    let (mut positional, mut lists) = (Vec::new(), Vec::new());
    let (mut fake, mut sloppy) = (false, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if let Some(list) = option_list(arg, &mut rest)? {
            lists.push(list);
        } else if text == "-t" {
            rest.next(); // The type: this helper's, by its name.
        } else if text.starts_with("-t") {
        } else if text.starts_with('-') && text.len() > 1 && !text.starts_with("--") {
            for flag in text[1..].chars() {
                match flag {
                    'f' => fake = true,
                    's' => sloppy = true,
                    'n' | 'v' => {}
                    _ => {
                        return Err(MountError::HelperUsage {
                            got: format!("-{flag}"),
                        });
                    }
                }
            }
        } else if text.starts_with('-') {
            return Err(MountError::HelperUsage {
                got: text.into_owned(),
            });
        } else {
            positional.push(arg.clone());
        }
    }
    let [source, mountpoint] =
        <[OsString; 2]>::try_from(positional).map_err(|p| MountError::HelperUsage {
            got: format!("{} operands", p.len()),
        })?;
    let mut out = vec!["mount".into(), source, mountpoint];
    let mut ignored = Vec::new();
    for list in &lists {
        let (flags, unknown) = expand(list, grammar, sloppy)?;
        out.extend(flags);
        ignored.extend(unknown);
    }
    Ok(Normalized {
        args: out,
        fake,
        ignored,
    })
}

/// One `-o` list as long flags; with `sloppy`, unknown options are
/// returned apart instead of refused.
fn expand(
    list: &str,
    grammar: &Grammar,
    sloppy: bool,
) -> Result<(Vec<OsString>, Vec<String>), MountError> {
    let (mut flags, mut unknown) = (Vec::new(), Vec::new());
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        if GENERIC.contains(&key) || key.starts_with("x-") || key == "comment" {
            continue;
        }
        let long = key.replace('_', "-");
        if !grammar.mount_longs.contains_key(&long) {
            if sloppy {
                unknown.push(item.to_string());
                continue;
            }
            return Err(MountError::UnknownOption {
                option: item.to_string(),
            });
        }
        flags.push(match value {
            // A list inside the list: `dtype=bf16+f16`.
            Some(v) if long == "dtype" => format!("--{long}={}", v.replace('+', ",")).into(),
            Some(v) => format!("--{long}={v}").into(),
            None => format!("--{long}").into(),
        });
    }
    Ok((flags, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grammar() -> Grammar {
        Grammar {
            subcommands: ["mount", "umount", "ls", "convert"]
                .map(String::from)
                .to_vec(),
            mount_longs: [
                ("allow-other", false),
                ("dtype", true),
                ("cache-dir", true),
                ("foreground", false),
                ("uid", true),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        }
    }

    fn norm(program: &str, args: &[&str]) -> Result<Normalized, MountError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        normalize(OsStr::new(program), &args, &grammar())
    }

    fn args(n: &Normalized) -> Vec<String> {
        n.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn o_lists_become_long_flags() {
        let n = norm(
            "gyrofs",
            &[
                "mount",
                "src",
                "mnt",
                "-o",
                "ro,allow_other,dtype=bf16+f16,cache_dir=/var/cache/g",
                "-ouid=7",
                "-f",
            ],
        )
        .unwrap();
        assert_eq!(
            args(&n),
            [
                "mount",
                "src",
                "mnt",
                "--allow-other",
                "--dtype=bf16,f16",
                "--cache-dir=/var/cache/g",
                "--uid=7",
                "-f"
            ]
        );
        assert!(!n.fake);
    }

    #[test]
    fn other_commands_are_left_alone() {
        let n = norm("gyrofs", &["ls", "src", "--json"]).unwrap();
        assert_eq!(args(&n), ["ls", "src", "--json"]);
        // Without -o a bare pair is not a helper call (a typo stays a
        // typo for the parser to report).
        let n = norm("gyrofs", &["mout", "a", "b"]).unwrap();
        assert_eq!(args(&n), ["mout", "a", "b"]);
    }

    #[test]
    fn helper_calls_become_mount() {
        for program in [
            "/sbin/mount.gyrofs",
            "/sbin/mount.fuse.gyrofs",
            "mount.gyrofs",
        ] {
            let n = norm(program, &["/m/x", "/mnt", "-o", "rw"]).unwrap();
            assert_eq!(args(&n), ["mount", "/m/x", "/mnt"], "{program}");
        }
        // fuse3's mount.fuse3 runs `gyrofs SOURCE MNT -o OPTS`.
        let n = norm(
            "gyrofs",
            &["/m/x", "/mnt", "-o", "allow_other,_netdev,nofail"],
        )
        .unwrap();
        assert_eq!(args(&n), ["mount", "/m/x", "/mnt", "--allow-other"]);
        let n = norm(
            "mount.gyrofs",
            &[
                "s",
                "m",
                "-nv",
                "-t",
                "fuse.gyrofs",
                "-o",
                "x-systemd.automount,comment=y",
            ],
        )
        .unwrap();
        assert_eq!(args(&n), ["mount", "s", "m"]);
        let n = norm("mount.gyrofs", &["s", "m", "-f"]).unwrap();
        assert!(n.fake);
        let n = norm(
            "mount.gyrofs",
            &["s", "m", "-s", "-o", "allow_other,bogus=1"],
        )
        .unwrap();
        assert_eq!(args(&n), ["mount", "s", "m", "--allow-other"]);
        assert_eq!(n.ignored, ["bogus=1"]);
    }

    #[test]
    fn bad_calls_get_one_line() {
        let e = norm("gyrofs", &["mount", "s", "m", "-o", "allow_other,bogus"]).unwrap_err();
        assert!(
            e.to_string().contains("unknown mount option 'bogus'"),
            "{e}"
        );
        let e = norm("gyrofs", &["mount", "s", "m", "-o"]).unwrap_err();
        assert!(e.to_string().contains("-o needs"), "{e}");
        let e = norm("mount.gyrofs", &["s"]).unwrap_err();
        assert!(
            e.to_string().contains("mount.gyrofs SOURCE MOUNTPOINT"),
            "{e}"
        );
        let e = norm("mount.gyrofs", &["s", "m", "-N", "3"]).unwrap_err();
        assert!(e.to_string().contains("-N"), "{e}");
    }
}
