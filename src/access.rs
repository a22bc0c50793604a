//! Who may read the mount: the owner, group and read permission of each
//! virtual file and folder, derived from the source's own files.
//!
//! A user may read a virtual file only when they could read, directly, every
//! source file it is made from: the file itself (its read bits) and every
//! folder on the way to it (their search bits). Each of those is an
//! [`Access`]: an owner, a group, and which of the three classes (owner,
//! group, others) may pass, kept as read bits (`0o444` = everyone).
//! [`combine`] joins several into the most restrictive one; the mount then
//! shows files with the read bits (`0o444` at most) and folders with read
//! and search bits (`0o555` at most), and the kernel enforces them
//! (`default_permissions`). No write bit ever: the mount is read-only. No
//! execute bit on files: a virtual file is never a program.
//!
//! [`Overrides`] (`--uid`, `--gid`, `--file-mode`, `--dir-mode`) replace
//! the derived values for the whole mount, as mountpoint-s3's flags do.
//!
//! A leaf: no other module of gyrofs is imported here.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Read bits of the three classes.
const READ: u16 = 0o444;
const OWNER: u16 = 0o400;
const GROUP: u16 = 0o040;

/// Owner, group and which classes may read (or pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access {
    pub uid: u32,
    pub gid: u32,
    /// Read bits (a subset of `0o444`): the classes that may read.
    pub read: u16,
}

impl Access {
    /// A file: its owner, group and read bits.
    pub fn of_file(meta: &std::fs::Metadata) -> Access {
        Access {
            uid: meta.uid(),
            gid: meta.gid(),
            read: meta.mode() as u16 & READ,
        }
    }

    /// A folder on the way to a file: who may pass (search bits).
    pub fn of_passage(meta: &std::fs::Metadata) -> Access {
        Access {
            uid: meta.uid(),
            gid: meta.gid(),
            read: (meta.mode() as u16 & 0o111) << 2,
        }
    }

    /// A folder whose listing is shown (the source folder): who may both
    /// list it and pass.
    pub fn of_listed_folder(meta: &std::fs::Metadata) -> Access {
        let m = meta.mode() as u16;
        Access {
            uid: meta.uid(),
            gid: meta.gid(),
            read: m & READ & ((m & 0o111) << 2),
        }
    }

    /// What the mounting user's own files get: remote sources, generated
    /// files of a source with no files. Everyone may read, as mountpoint-s3
    /// does by default (0644 / 0755 there, without the write bit here).
    pub fn mounting_user() -> Access {
        let (uid, gid) = mounting_user();
        Access {
            uid,
            gid,
            read: READ,
        }
    }

    /// Does this restrict nobody?
    fn is_open(&self) -> bool {
        self.read == READ
    }

    /// Permission bits of a virtual file.
    pub fn file_mode(&self) -> u16 {
        self.read
    }

    /// Permission bits of a virtual folder: search wherever read.
    pub fn dir_mode(&self) -> u16 {
        self.read | (self.read >> 2)
    }
}

/// The effective user and group of this process: the mounting user.
pub fn mounting_user() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and have no preconditions.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// The most restrictive of `items`: whoever may read the result could read
/// every one of them directly.
///
/// - Items that restrict nobody (read by all three classes) are set aside.
/// - When the rest share one owner and one group, the result is that owner
///   and group, with the read bits they all have (a user falls in the same
///   class for each of them, so the intersection is exact).
/// - Otherwise the owner is the mounting user (`me`), who read them all;
///   the group is their common group if they have one, readable by it only
///   when every item lets both its owner and its group read; others may
///   not read.
/// - When nothing restricts anyone, everyone may read; the owner and group
///   are the items' own when they all agree, else the mounting user's.
pub fn combine(items: impl IntoIterator<Item = Access>, me: (u32, u32)) -> Access {
    let mut all = items.into_iter().peekable();
    let Some(&first) = all.peek() else {
        return Access {
            uid: me.0,
            gid: me.1,
            read: READ,
        };
    };
    let (mut same_uid, mut same_gid) = (true, true);
    let mut rest: Option<(Access, bool, bool)> = None;
    let mut and = READ;
    let mut group_ok = true;
    for a in all {
        same_uid &= a.uid == first.uid;
        same_gid &= a.gid == first.gid;
        if a.is_open() {
            continue;
        }
        and &= a.read;
        group_ok &= a.read & GROUP != 0 && a.read & OWNER != 0;
        rest = Some(match rest {
            None => (a, true, true),
            Some((r, u, g)) => (r, u && a.uid == r.uid, g && a.gid == r.gid),
        });
    }
    match rest {
        None => Access {
            uid: if same_uid { first.uid } else { me.0 },
            gid: if same_gid { first.gid } else { me.1 },
            read: READ,
        },
        Some((r, true, true)) => Access {
            uid: r.uid,
            gid: r.gid,
            read: and,
        },
        Some((r, _, common_gid)) => Access {
            uid: me.0,
            gid: if common_gid { r.gid } else { me.1 },
            read: OWNER | if common_gid && group_ok { GROUP } else { 0 },
        },
    }
}

/// Who may pass every folder on the way to `real` (an absolute path with
/// no symlinks), from `/` down to its parent. Folders that stop nobody are
/// left out; a folder that cannot be examined counts as passable by its
/// mounting user only.
pub fn passages(real: &Path) -> Vec<Access> {
    let me = mounting_user();
    real.ancestors()
        .skip(1)
        .map(|dir| match std::fs::metadata(dir) {
            Ok(m) => Access::of_passage(&m),
            Err(_) => Access {
                uid: me.0,
                gid: me.1,
                read: OWNER,
            },
        })
        .filter(|a| !a.is_open())
        .collect()
}

/// `--uid`, `--gid`, `--file-mode`, `--dir-mode`: the same owner, group
/// or mode for every file (folder) of the mount instead of the derived ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits of every file (write bits already removed).
    pub file_mode: Option<u16>,
    /// Permission bits of every folder (write bits already removed).
    pub dir_mode: Option<u16>,
}

/// Parse an octal mode (`0444`, `644`, `0o750`) for `--file-mode` or
/// `--dir-mode`. Write bits are dropped (the mount is read-only: `0644`
/// means `0444`); setuid, setgid and sticky bits are refused.
pub fn parse_mode(s: &str) -> Result<u16, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let m = u16::from_str_radix(digits, 8)
        .ok()
        .filter(|_| !digits.is_empty() && digits.len() <= 4)
        .ok_or_else(|| format!("'{s}' is not an octal mode (e.g. 0440)"))?;
    if m > 0o777 {
        return Err(format!(
            "'{s}': only permission bits (0 to 0777) can be given, not setuid, setgid or sticky"
        ));
    }
    Ok(m & 0o555)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(uid: u32, gid: u32, read: u16) -> Access {
        Access { uid, gid, read }
    }
    const ME: (u32, u32) = (0, 0);

    #[test]
    fn combine_is_the_most_restrictive() {
        // One owner and group: the intersection.
        assert_eq!(
            combine([a(1, 2, 0o444), a(1, 2, 0o440), a(1, 2, 0o404)], ME),
            a(1, 2, 0o400)
        );
        // Open items restrict nobody, whoever owns them.
        assert_eq!(
            combine([a(5, 5, 0o444), a(1, 2, 0o440)], ME),
            a(1, 2, 0o440)
        );
        assert_eq!(
            combine([a(5, 5, 0o444), a(5, 5, 0o444)], ME),
            a(5, 5, 0o444)
        );
        assert_eq!(
            combine([a(5, 5, 0o444), a(1, 2, 0o444)], ME),
            a(0, 0, 0o444)
        );
        // Owners differ: the mounting user, and the common group when every
        // item lets its group read.
        assert_eq!(
            combine([a(1, 7, 0o440), a(2, 7, 0o440)], ME),
            a(0, 7, 0o440)
        );
        assert_eq!(
            combine([a(1, 7, 0o440), a(2, 7, 0o400)], ME),
            a(0, 7, 0o400)
        );
        assert_eq!(
            combine([a(1, 7, 0o440), a(2, 8, 0o440)], ME),
            a(0, 0, 0o400)
        );
        // Nothing at all: the mounting user's.
        assert_eq!(combine([], (3, 4)), a(3, 4, 0o444));
    }

    #[test]
    fn modes() {
        assert_eq!(a(0, 0, 0o440).dir_mode(), 0o550);
        assert_eq!(a(0, 0, 0o404).file_mode(), 0o404);
        assert_eq!(parse_mode("0644"), Ok(0o444));
        assert_eq!(parse_mode("750"), Ok(0o550));
        assert_eq!(parse_mode("0o400"), Ok(0o400));
        assert!(parse_mode("4755").unwrap_err().contains("setuid"));
        assert!(parse_mode("rw").unwrap_err().contains("octal"));
        assert!(parse_mode("").is_err());
        assert!(parse_mode("0888").is_err());
    }
}
