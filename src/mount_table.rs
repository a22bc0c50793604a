//! The system's mount table, as `/proc/self/mountinfo` shows it: what is
//! mounted at a path, and whether it is a gyrofs mount.
//!
//! `mount` uses it to refuse mounting onto a live gyrofs mount and to find
//! the mount's device (for its readahead); `umount` to unmount only gyrofs
//! mounts. Read from the file rather than by `stat`ing the path, because a
//! FUSE mount whose daemon died answers every `stat` with ENOTCONN.

use std::path::Path;

/// One mount, as far as gyrofs cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem (`0:39`).
    pub device: String,
    /// Filesystem type (`fuse`, `fuse.sshfs`, `tmpfs`, ...).
    pub fstype: String,
    /// The mount source (for gyrofs mounts, SOURCE as given: an absolute
    /// path or a URL).
    pub source: String,
}

impl MountEntry {
    /// Mounted by gyrofs: type `fuse.gyrofs` (or, from gyrofs before it set
    /// the type for root mounts, type `fuse` named `gyrofs:<source name>`).
    pub fn is_gyrofs(&self) -> bool {
        self.fstype == "fuse.gyrofs"
            || (self.fstype == "fuse" && self.source.starts_with("gyrofs:"))
    }
}

/// The newest mount at `path` (an absolute path, not resolved again), if any.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find(&info, path)
}

/// [`mount_at`] over the text of a mountinfo file.
fn find(info: &str, path: &Path) -> Option<MountEntry> {
    let want = escape(&path.to_string_lossy());
    // Fields: id parent major:minor root mountpoint options [optional...] - fstype source super
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&want.as_str()) {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        Some(MountEntry {
            device: fields.get(2)?.to_string(),
            fstype: fields.get(dash + 1)?.to_string(),
            source: unescape(fields.get(dash + 2)?),
        })
    })
}

/// `path` as mountinfo writes it: space, tab, newline and backslash as octal
/// escapes (`\040`, `\011`, `\012`, `\134`).
pub fn escape(path: &str) -> String {
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

/// Undo [`escape`] (any `\ooo` octal escape).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_mountinfo() {
        assert_eq!(escape("/mnt/a b"), "/mnt/a\\040b");
        assert_eq!(escape("t\tn\nb\\"), "t\\011n\\012b\\134");
        assert_eq!(escape("/ü/x"), "/ü/x");
        assert_eq!(unescape("a\\040b\\134"), "a b\\");
    }

    #[test]
    fn finds_the_newest_mount_at_a_path() {
        let info = "\
22 1 0:21 / /tmp rw,nosuid - tmpfs tmpfs rw
42 22 0:39 / /tmp/m\\040x ro,nosuid,nodev,noatime - fuse gyrofs:gpt-oss-tiny ro,user_id=0
43 42 0:40 / /tmp/m\\040x ro shared:5 - fuse.sshfs host:/x rw
";
        let e = find(info, Path::new("/tmp/m x")).unwrap();
        assert_eq!(e.fstype, "fuse.sshfs");
        assert!(!e.is_gyrofs());
        let t = find(info, Path::new("/tmp")).unwrap();
        assert_eq!((t.device.as_str(), t.fstype.as_str()), ("0:21", "tmpfs"));
        let g = find(
            &info.lines().take(2).collect::<Vec<_>>().join("\n"),
            Path::new("/tmp/m x"),
        );
        assert!(g.unwrap().is_gyrofs());
        assert_eq!(find(info, Path::new("/nope")), None);
        let typed = "44 1 0:41 / /mnt/q ro - fuse.gyrofs /models/q ro,user_id=0\n";
        let q = find(typed, Path::new("/mnt/q")).unwrap();
        assert_eq!(q.source, "/models/q");
        assert!(q.is_gyrofs());
        let other = "45 1 0:42 / /mnt/f ro - fuse /dev/fuse ro,user_id=0\n";
        assert!(!find(other, Path::new("/mnt/f")).unwrap().is_gyrofs());
    }
}
