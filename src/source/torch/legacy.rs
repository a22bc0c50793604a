//! The legacy (pre-1.6) torch.save format: a stream of pickles followed by
//! raw storages.
//!
//! For: files written by torch < 1.6 or with
//! `_use_new_zipfile_serialization=False`. The layout, as
//! `torch.serialization._legacy_save` writes it:
//!
//! 1. a pickle of the magic number `0x1950a86a20f9469cfc6c`;
//! 2. a pickle of the protocol version (1001);
//! 3. a pickle of `sys_info` (`{"protocol_version", "little_endian",
//!    "type_sizes"}`);
//! 4. the main pickle, whose persistent ids are
//!    `("storage", storage_type, root_key, location, numel, view_metadata)`;
//! 5. a pickle of the list of storage keys;
//! 6. for each key in that order: the element count as 8 bytes little-endian,
//!    then count x element size bytes of raw data (not aligned).
//!
//! The element size is that of the dtype the first persistent id naming the
//! key gives. The counts and data are little-endian whatever the writing
//! machine was (torch's `_write_file` converts on big-endian hosts), so
//! `little_endian = False` in `sys_info` only adds a note.
//!
//! Read by range ([`read`]): a prefix of the file, doubling from 64 KiB
//! until the pickles parse in it (so at most twice their length is read), then the 8-byte element count of
//! each storage (where the persistent ids' element counts put them, all
//! at once, before they are read and checked one by one). A remote file
//! is thus fetched at its pickles and counts only, not whole.
//!
//! Not for: the older tar format (torch < 0.4), refused by the caller.

use std::collections::HashMap;

use super::pickle::{self, Node, Pickle};
use super::rebuild::{self, Payload, Payloads};
use super::{Bytes, Checkpoint, Format, TorchError};

/// The first prefix of a legacy file read for its pickles.
const FIRST_PREFIX: u64 = 64 << 10;

/// torch's legacy magic number.
pub const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// The only legacy protocol version torch ever wrote.
pub const PROTOCOL_VERSION: i64 = 1001;

fn is_magic(n: &Node) -> bool {
    matches!(n, Node::BigInt(s) if **s == *MAGIC.to_string())
}

/// Does `data` start with a pickle of the magic number? (Looks at the first
/// 64 bytes only.)
pub fn is_legacy(data: &[u8]) -> bool {
    let head = &data[..data.len().min(64)];
    pickle::parse(head, 0).is_ok_and(|p| is_magic(p.node(p.root)))
}

fn parse_at(data: &[u8], pos: usize, what: &str) -> Result<Pickle, TorchError> {
    pickle::parse(data, pos).map_err(|err| TorchError::Pickle {
        what: what.to_string(),
        err,
    })
}

fn legacy_err<T>(why: impl Into<String>) -> Result<T, TorchError> {
    Err(TorchError::Legacy(why.into()))
}

/// Parse a legacy file held in memory (the caller has checked
/// [`is_legacy`]).
#[cfg(test)]
pub fn parse(data: &[u8]) -> Result<Checkpoint, TorchError> {
    read(data)
}

/// The pickles before the storages.
struct Pickles {
    header_end: usize,
    notes: Vec<String>,
    main: Pickle,
    keys: Pickle,
}

fn pickles(data: &[u8]) -> Result<Pickles, TorchError> {
    let (header_end, notes) = parse_header(data)?;
    let main = parse_at(data, header_end, "legacy main pickle")?;
    let keys = parse_at(data, main.end, "legacy storage key list")?;
    Ok(Pickles {
        header_end,
        notes,
        main,
        keys,
    })
}

/// Parse a legacy file read by range (the caller has checked
/// [`is_legacy`]): its pickles from a prefix that grows until they parse
/// (an error stands once the prefix is the whole file), then the storage
/// counts.
pub fn read<B: Bytes + ?Sized>(data: &B) -> Result<Checkpoint, TorchError> {
    let size = data.size();
    let mut n = size.min(FIRST_PREFIX);
    let Pickles {
        header_end,
        mut notes,
        main,
        keys: keys_pickle,
    } = loop {
        match pickles(data.read(0, n)?) {
            Ok(p) => break p,
            Err(e) if n >= size => return Err(e),
            Err(_) => n = size.min(n.saturating_mul(2)),
        }
    };
    let what = "legacy main pickle";
    let keys = storage_keys(&keys_pickle, main.end)?;
    let pids = rebuild::persistent_ids(&main, what)?;
    let payloads = storage_payloads(data, keys_pickle.end, &keys, &pids)?;
    let pickle_len = main.end - header_end;
    let mut out = rebuild::build(&main, what, &pids, &payloads, pickle_len)?;
    notes.append(&mut out.notes);
    Ok(Checkpoint {
        format: Format::Legacy,
        big_endian: false,
        storages: out.storages,
        tensors: out.tensors,
        values: out.values,
        notes,
    })
}

/// Check the three pickles before the main one (magic number, protocol
/// version, `sys_info`); return where the main pickle starts and the notes
/// `sys_info` calls for.
fn parse_header(data: &[u8]) -> Result<(usize, Vec<String>), TorchError> {
    let magic = parse_at(data, 0, "legacy magic number pickle")?;
    if !is_magic(magic.node(magic.root)) {
        return legacy_err("the first pickle is not torch's magic number");
    }
    let version = parse_at(data, magic.end, "legacy protocol version pickle")?;
    match version.node(version.root) {
        Node::Int(PROTOCOL_VERSION) => {}
        Node::Int(v) => {
            return legacy_err(format!(
                "legacy protocol version {v}, expected {PROTOCOL_VERSION}"
            ));
        }
        n => {
            return legacy_err(format!(
                "legacy protocol version is {}, not an int",
                n.kind()
            ));
        }
    }
    let sys_info = parse_at(data, version.end, "legacy sys_info pickle")?;
    let mut notes = Vec::new();
    if let Node::Dict(items) = sys_info.node(sys_info.root) {
        for &(k, v) in items {
            if matches!(sys_info.node(k), Node::Str(s) if &**s == "little_endian")
                && matches!(sys_info.node(v), Node::Bool(false))
            {
                notes.push(
                    "written on a big-endian machine; legacy storages are little-endian regardless"
                        .to_string(),
                );
            }
        }
    } else {
        return legacy_err(format!(
            "sys_info at byte {} is {}, not a dict",
            version.end,
            sys_info.node(sys_info.root).kind()
        ));
    }
    Ok((sys_info.end, notes))
}

/// The storage keys listed by `keys_pickle` (which starts at byte `at`).
fn storage_keys(keys_pickle: &Pickle, at: usize) -> Result<Vec<String>, TorchError> {
    match keys_pickle.node(keys_pickle.root) {
        Node::List(items) => items
            .iter()
            .map(|&k| match keys_pickle.node(k) {
                Node::Str(s) if s.len() <= rebuild::MAX_KEY_LEN => Ok(s.to_string()),
                Node::Int(v) => Ok(v.to_string()),
                n => legacy_err(format!(
                    "storage key list at byte {at} holds {}, not a key",
                    n.kind()
                )),
            })
            .collect(),
        n => legacy_err(format!(
            "storage key list at byte {at} is {}, not a list",
            n.kind()
        )),
    }
}

/// Where each storage's bytes lie: the storages follow one another from
/// byte `start`, in the order of `keys`, each as its element count then its
/// elements (of the dtype of the first persistent id in `pids` naming it).
/// Every key named by a persistent id must be listed.
fn storage_payloads<B: Bytes + ?Sized>(
    data: &B,
    start: usize,
    keys: &[String],
    pids: &[rebuild::Pid],
) -> Result<Payloads, TorchError> {
    // The dtype (and element count) of the first persistent id naming
    // each key.
    let mut dtypes = HashMap::new();
    for p in pids {
        if let rebuild::Pid::Storage {
            key, dtype, numel, ..
        } = p
        {
            dtypes.entry(key.as_str()).or_insert((*dtype, *numel));
        }
    }
    let len = data.size();
    // Where the counts are if the persistent ids' element counts are
    // right: fetched together (each is read and checked below anyway).
    let mut guess = Vec::new();
    let mut at = start as u64;
    for key in keys {
        let Some(&(dtype, numel)) = dtypes.get(key.as_str()) else {
            break;
        };
        match numel
            .checked_mul(dtype.size())
            .and_then(|n| at.checked_add(8)?.checked_add(n))
        {
            Some(next) if at.saturating_add(8) <= len => {
                guess.push((at, 8));
                at = next;
            }
            _ => break,
        }
    }
    data.prefetch(&guess);
    let dtypes: HashMap<&str, _> = dtypes.into_iter().map(|(k, (d, _))| (k, d)).collect();
    let mut payloads = Payloads::new();
    let mut pos = start as u64;
    for key in keys {
        let kerr = |why: String| TorchError::Storage {
            key: pickle::esc(key),
            why,
        };
        let dtype = *dtypes.get(key.as_str()).ok_or_else(|| {
            kerr("listed in the storage key list but named by no persistent id".to_string())
        })?;
        if len - pos.min(len) < 8 {
            return Err(kerr(format!(
                "its element count at byte {pos} runs past the end of the file ({len} bytes)"
            )));
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(data.read(pos, 8)?);
        let count = u64::from_le_bytes(c);
        let start = pos + 8;
        let nbytes = count.checked_mul(dtype.size());
        let end = nbytes.and_then(|n| start.checked_add(n));
        let (Some(nbytes), Some(end)) = (nbytes, end) else {
            return Err(kerr(format!("element count {count} overflows")));
        };
        if end > len {
            return Err(kerr(format!(
                "{count} elements of {} ({nbytes} bytes at byte {start}) run past the end of the file ({len} bytes)",
                dtype.name()
            )));
        }
        if payloads
            .insert(
                key.clone(),
                Payload {
                    offset: start,
                    len: nbytes,
                },
            )
            .is_some()
        {
            return Err(kerr("appears twice in the storage key list".to_string()));
        }
        pos = end;
    }
    for p in pids {
        if let Some(k) = p.key()
            && !payloads.contains_key(k)
        {
            return Err(TorchError::Storage {
                key: pickle::esc(k),
                why: "named by a persistent id but missing from the storage key list".to_string(),
            });
        }
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;

    fn s(x: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(x.len() as u32).to_le_bytes());
        v.extend_from_slice(x.as_bytes());
        v
    }

    /// A legacy file by hand: `{"v": tensor}` whose persistent id carries
    /// `view_metadata` (written by torch < 1.0 for storage views), then the
    /// key list and the storage (`count` i16 elements declared, `data`).
    fn legacy_file(view: Option<(u32, u32)>, keys: &[&str], count: u64, data: &[u8]) -> Vec<u8> {
        let mut f = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
        f.extend(b"\x80\x02M\xe9\x03.");
        f.extend(b"\x80\x02}(");
        f.extend(s("little_endian"));
        f.extend(b"\x89u.");
        f.extend(b"\x80\x02}(");
        f.extend(s("v"));
        f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        f.extend(s("storage"));
        f.extend(b"ctorch\nShortStorage\n");
        f.extend(s("k"));
        f.extend(s("cpu"));
        f.extend(b"K\x06");
        match view {
            Some((o, n)) => {
                f.extend(b"(");
                f.extend(s("k2"));
                f.extend(b"J");
                f.extend(o.to_le_bytes());
                f.extend(b"J");
                f.extend(n.to_le_bytes());
                f.extend(b"t");
            }
            None => f.push(b'N'),
        }
        f.extend(b"tQK\x01K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu.");
        f.extend(b"\x80\x02](");
        for k in keys {
            f.extend(s(k));
        }
        f.extend(b"e.");
        f.extend(count.to_le_bytes());
        f.extend(data);
        f
    }

    const DATA: [u8; 12] = [0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0];

    #[test]
    fn storage_views_and_offsets() {
        let f = legacy_file(Some((2, 3)), &["k"], 6, &DATA);
        let ck = parse(&f).unwrap();
        assert_eq!(ck.format, Format::Legacy);
        assert_eq!(ck.storages.len(), 1);
        let st = &ck.storages[0];
        assert_eq!((st.dtype, st.len), (Dtype::I16, 12));
        assert_eq!(&f[st.offset as usize..][..12], &DATA);
        let t = &ck.tensors[0];
        // View offset 2 plus tensor offset 1.
        assert_eq!((t.storage_offset, t.shape.clone()), (3, vec![2]));
        assert_eq!(
            ck.notes,
            ["written on a big-endian machine; legacy storages are little-endian regardless"]
        );
        assert!(!ck.big_endian);
    }

    #[test]
    fn refusals() {
        let cases: [(Vec<u8>, &str); 5] = [
            (
                // The view (offset 2, 1 element) is too small for offset 1 + 2 elements.
                legacy_file(Some((2, 1)), &["k"], 6, &DATA),
                "tensor 'v': view needs 3 elements but storage 'k' has 1",
            ),
            (
                legacy_file(Some((5, 3)), &["k"], 6, &DATA),
                "storage 'k': view 'k2' (5+3 elements) lies outside the storage",
            ),
            (
                legacy_file(None, &["k"], 6, &DATA[..10]),
                "storage 'k': 6 elements of torch.int16 (12 bytes at byte 202) run past the end of the file (212 bytes)",
            ),
            (
                legacy_file(None, &[], 6, &DATA),
                "storage 'k': named by a persistent id but missing from the storage key list",
            ),
            (
                legacy_file(None, &["k", "x"], 6, &DATA),
                "storage 'x': listed in the storage key list but named by no persistent id",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(parse(&f).unwrap_err().to_string(), want);
        }
        // Truncated anywhere: an error, never a panic.
        let f = legacy_file(None, &["k"], 6, &DATA);
        assert!(parse(&f).is_ok());
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "{n}");
        }
    }
}
