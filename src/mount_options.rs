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
    "sync",
    "dirsync",
    "nosymfollow",
    "silent",
    "loud",
    "default_permissions",
];

/// Generic options that carry a value: SELinux labels (`context="..."`),
/// which mount(8) passes on and gyrofs ignores.
const GENERIC_WITH_VALUE: &[&str] = &["context", "fscontext", "defcontext", "rootcontext"];

/// Whether `key` is a generic mount(8)/fstab option gyrofs ignores:
/// [`GENERIC`], [`GENERIC_WITH_VALUE`], `comment`, and the `x-*` options of
/// userspace tools (`x-systemd.automount`; `X-` too, as util-linux matches
/// them).
fn is_generic(key: &str) -> bool {
    GENERIC.contains(&key)
        || GENERIC_WITH_VALUE.contains(&key)
        || key == "comment"
        || key.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-"))
}

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
        // `--log-file -out.log`: the argument after a long option that
        // takes a value is that value, never an `-o` list.
        let long = arg.to_str().and_then(|a| a.strip_prefix("--"));
        if long.is_some_and(|l| grammar.mount_longs.get(l) == Some(&true)) {
            out.push(arg.clone());
            out.extend(rest.next().cloned());
            continue;
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
        if is_generic(key) {
            continue;
        }
        let long = key.replace('_', "-");
        let Some(&takes_value) = grammar.mount_longs.get(&long) else {
            if sloppy {
                unknown.push(item.to_string());
                continue;
            }
            return Err(MountError::UnknownOption {
                option: item.to_string(),
            });
        };
        if long == "foreground" {
            // As a helper, mount(8) would wait for ever.
            return Err(MountError::ForegroundInList);
        }
        // `-o log_file` alone would become `--log-file` and take the next
        // argument (the source) as its value.
        if takes_value && value.is_none() {
            return Err(MountError::OptionNeedsValue {
                option: key.to_string(),
            });
        }
        if !takes_value && value.is_some() {
            return Err(MountError::OptionTakesNoValue {
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

    /// `-o cache_dir` without `=DIR` would make clap take the next
    /// argument (the source, for mount(8)) as the cache folder.
    #[test]
    fn value_options_need_their_value_and_flags_take_none() {
        for program in ["mount.gyrofs", "gyrofs"] {
            let e = norm(program, &["s", "m", "-o", "cache_dir"]).unwrap_err();
            assert!(
                e.to_string().contains("'cache_dir' needs a value"),
                "{program}: {e}"
            );
        }
        let e = norm("gyrofs", &["mount", "-o", "uid", "s", "m"]).unwrap_err();
        assert!(e.to_string().contains("'uid' needs a value"), "{e}");
        let e = norm("gyrofs", &["mount", "s", "m", "-o", "allow_other=1"]).unwrap_err();
        assert!(
            e.to_string().contains("'allow_other=1' takes no value"),
            "{e}"
        );
    }

    #[test]
    fn foreground_is_refused_in_an_option_list() {
        for args in [
            &["s", "m", "-o", "foreground"][..],
            &["mount", "s", "m", "-o", "ro,foreground"],
        ] {
            let e = norm("gyrofs", args).unwrap_err();
            assert!(e.to_string().contains("foreground"), "{e}");
        }
        // -f / --foreground on the command line stay.
        let n = norm("gyrofs", &["mount", "s", "m", "--foreground"]).unwrap();
        assert_eq!(args(&n), ["mount", "s", "m", "--foreground"]);
    }

    /// The argument after `--cache-dir` is its value, even when it starts
    /// with `-o`.
    #[test]
    fn the_value_of_a_long_option_is_not_an_option_list() {
        let n = norm(
            "gyrofs",
            &["mount", "--cache-dir", "-odd", "s", "m", "-o", "uid=3"],
        )
        .unwrap();
        assert_eq!(
            args(&n),
            ["mount", "--cache-dir", "-odd", "s", "m", "--uid=3"]
        );
        // A flag does not take the next argument.
        let n = norm("gyrofs", &["mount", "--allow-other", "-ouid=3", "s", "m"]).unwrap();
        assert_eq!(args(&n), ["mount", "--allow-other", "--uid=3", "s", "m"]);
    }

    #[test]
    fn more_generic_options_are_ignored() {
        let n = norm(
            "mount.gyrofs",
            &[
                "s",
                "m",
                "-o",
                "sync,dirsync,nosymfollow,silent,loud,X-mount.mkdir,x-Foo",
            ],
        )
        .unwrap();
        assert_eq!(args(&n), ["mount", "s", "m"]);
        let n = norm(
            "mount.gyrofs",
            &[
                "s",
                "m",
                "-o",
                "context=system_u:object_r:tmp_t:s0,fscontext=a,defcontext=b,rootcontext=c",
            ],
        )
        .unwrap();
        assert_eq!(args(&n), ["mount", "s", "m"]);
    }
}
