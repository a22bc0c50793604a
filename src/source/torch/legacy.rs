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
//! Not for: the older tar format (torch < 0.4), refused by the caller.

use std::collections::HashMap;

use super::pickle::{self, Node, Pickle};
use super::rebuild::{self, Payload, Payloads};
use super::{Checkpoint, Format, TorchError};

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

/// Parse a legacy file (the caller has checked [`is_legacy`]).
pub fn parse(data: &[u8]) -> Result<Checkpoint, TorchError> {
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

    let what = "legacy main pickle";
    let main = parse_at(data, sys_info.end, what)?;
    let keys_pickle = parse_at(data, main.end, "legacy storage key list")?;
    let keys: Vec<String> = match keys_pickle.node(keys_pickle.root) {
        Node::List(items) => items
            .iter()
            .map(|&k| match keys_pickle.node(k) {
                Node::Str(s) => Ok(s.to_string()),
                Node::Int(v) => Ok(v.to_string()),
                n => legacy_err(format!(
                    "storage key list at byte {} holds {}, not a key",
                    main.end,
                    n.kind()
                )),
            })
            .collect::<Result<_, _>>()?,
        n => {
            return legacy_err(format!(
                "storage key list at byte {} is {}, not a list",
                main.end,
                n.kind()
            ));
        }
    };

    let pids = rebuild::persistent_ids(&main, what)?;
    // The dtype of the first persistent id naming each key.
    let mut dtypes = HashMap::new();
    for p in &pids {
        if let rebuild::Pid::Storage { key, dtype, .. } = p {
            dtypes.entry(key.as_str()).or_insert(*dtype);
        }
    }
    let mut payloads = Payloads::new();
    let mut pos = keys_pickle.end as u64;
    let len = data.len() as u64;
    for key in &keys {
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
        let p = pos as usize;
        let mut c = [0u8; 8];
        c.copy_from_slice(&data[p..p + 8]);
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
    for p in &pids {
        if let Some(k) = p.key()
            && !payloads.contains_key(k)
        {
            return Err(TorchError::Storage {
                key: pickle::esc(k),
                why: "named by a persistent id but missing from the storage key list".to_string(),
            });
        }
    }
    let pickle_len = main.end - sys_info.end;
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
