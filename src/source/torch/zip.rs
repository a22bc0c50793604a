//! A zip central-directory reader for torch.save archives.
//!
//! For: finding each entry of a zip held in memory and the exact absolute
//! byte range of a STORED entry's payload, so that a storage can be served
//! straight from the memory map. Reads the end of central directory record
//! (searched for in the last 64 KiB + 22 bytes), the ZIP64 locator and
//! record, every central directory entry (with ZIP64 extra fields for sizes
//! and offsets of 0xFFFFFFFF), and, for a payload, the entry's LOCAL header,
//! whose extra field length can differ from the central directory's.
//!
//! Not for: decompression (torch.save stores entries uncompressed; a
//! compressed entry that is needed is refused), writing, CRC checks (the
//! payload is never read here), multi-disk archives, encryption.
//!
//! Hostile input: every offset and length is checked against the file
//! before use; the number of entries is bounded by the central directory's
//! size (46 bytes at least per entry), so allocation is bounded by the input.

use std::collections::HashMap;

use super::pickle::esc;
use super::{Bytes, TorchError};

const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIG: &[u8; 4] = b"PK\x06\x06";
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";
const LOCAL_LEN: usize = 30;
/// Longest archive comment; the EOCD record lies within this of the end.
const MAX_COMMENT: usize = 0xffff;
const ZIP64_EXTRA_ID: u16 = 0x0001;

/// One central directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (UTF-8; invalid bytes replaced).
    pub name: String,
    /// Compression method (0 = stored).
    pub method: u16,
    /// General purpose flags (bit 0: encrypted).
    pub flags: u16,
    pub compressed_size: u64,
    pub size: u64,
    /// Absolute offset of the entry's local header.
    pub local_header: u64,
}

/// The entries of a zip, and the file to read their local headers from.
pub struct Archive<'a, B: Bytes + ?Sized> {
    data: &'a B,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl<B: Bytes + ?Sized> std::fmt::Debug for Archive<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn zip_err<T>(why: impl Into<String>) -> Result<T, TorchError> {
    Err(TorchError::Zip(why.into()))
}

/// Bytes `at..at + len` of `data`, or an error naming `what`.
fn slice<'a, B: Bytes + ?Sized>(
    data: &'a B,
    at: u64,
    len: u64,
    what: &str,
) -> Result<&'a [u8], TorchError> {
    match at.checked_add(len) {
        Some(end) if end <= data.size() => data.read(at, len),
        _ => zip_err(format!(
            "{what} (bytes {at}..{}) runs past the end of the file ({} bytes)",
            at.saturating_add(len),
            data.size()
        )),
    }
}

fn method_name(m: u16) -> &'static str {
    match m {
        1 => "shrink",
        6 => "implode",
        8 => "deflate",
        9 => "deflate64",
        12 => "bzip2",
        14 => "lzma",
        93 => "zstd",
        95 => "xz",
        _ => "unknown",
    }
}

impl<'a> Archive<'a, [u8]> {
    /// Read the central directory of the zip held in memory `data`.
    pub fn parse(data: &'a [u8]) -> Result<Self, TorchError> {
        Archive::read(data)
    }
}

impl<'a, B: Bytes + ?Sized> Archive<'a, B> {
    /// Read the central directory of the zip `data` (its last bytes and the
    /// directory itself).
    pub fn read(data: &'a B) -> Result<Self, TorchError> {
        let (count, cd_size, cd_offset) = central_directory(data)?;
        let cd = slice(data, cd_offset, cd_size, "central directory")?;
        if count > cd_size / CENTRAL_LEN as u64 {
            return zip_err(format!(
                "central directory of {cd_size} bytes at byte {cd_offset} cannot hold {count} entries"
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut by_name = HashMap::with_capacity(count as usize);
        let mut pos = 0usize;
        for i in 0..count {
            let at = cd_offset + pos as u64;
            let entry_err = |why: String| {
                TorchError::Zip(format!("central directory entry {i} at byte {at}: {why}"))
            };
            let (entry, total) = read_entry(&cd[pos..], &entry_err)?;
            if by_name.insert(entry.name.clone(), entries.len()).is_some() {
                return Err(entry_err(format!("'{}' appears twice", esc(&entry.name))));
            }
            entries.push(entry);
            pos += total;
        }
        Ok(Archive {
            data,
            entries,
            by_name,
        })
    }

    /// The entries in central directory order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// Absolute offset and length of a STORED entry's payload, from its
    /// local header. Refuses compressed or encrypted entries.
    pub fn stored_payload(&self, e: &Entry) -> Result<(u64, u64), TorchError> {
        let err = |why: String| TorchError::Entry {
            name: esc(&e.name),
            why,
        };
        if e.flags & 1 != 0 {
            return Err(err("is encrypted".to_string()));
        }
        if e.method != 0 {
            return Err(err(format!(
                "is compressed (method {}, {}); torch.save stores entries uncompressed, \
                 so this archive was rewritten by another tool: re-save it with torch.save",
                e.method,
                method_name(e.method)
            )));
        }
        if e.compressed_size != e.size {
            return Err(err(format!(
                "is stored but its compressed size {} differs from its size {}",
                e.compressed_size, e.size
            )));
        }
        let h = slice(self.data, e.local_header, LOCAL_LEN as u64, "local header")
            .map_err(|x| err(x.to_string()))?;
        if &h[..4] != LOCAL_SIG {
            return Err(err(format!("no local header at byte {}", e.local_header)));
        }
        let name_len = u64::from(u16_at(h, 26));
        let extra_len = u64::from(u16_at(h, 28));
        let name_at = e.local_header + LOCAL_LEN as u64;
        let local_name = slice(self.data, name_at, name_len, "local header name")
            .map_err(|x| err(x.to_string()))?;
        if String::from_utf8_lossy(local_name) != e.name {
            return Err(err(format!(
                "local header at byte {} names '{}'",
                e.local_header,
                esc(&String::from_utf8_lossy(local_name))
            )));
        }
        let start = name_at + name_len + extra_len;
        match start.checked_add(e.size) {
            Some(end) if end <= self.data.size() => Ok((start, e.size)),
            _ => Err(err(format!(
                "payload (bytes {start}..{}) runs past the end of the file ({} bytes)",
                start.saturating_add(e.size),
                self.data.size()
            ))),
        }
    }
}

/// The number of entries, size and offset of the central directory, from
/// the end of central directory record or, when a ZIP64 locator precedes
/// that, from the ZIP64 record. Refuses multi-disk archives.
fn central_directory<B: Bytes + ?Sized>(data: &B) -> Result<(u64, u64, u64), TorchError> {
    // The end of central directory record (and the ZIP64 locator before it)
    // lie in the file's last bytes: read those only.
    let size = data.size();
    let from = size.saturating_sub((EOCD_LEN + MAX_COMMENT + ZIP64_LOCATOR_LEN) as u64);
    let tail = data.read(from, size - from)?;
    let at = find_eocd(tail, size)?;
    let eocd = from + at as u64;
    let rec = &tail[at..at + EOCD_LEN];
    let disk = u16_at(rec, 4);
    let cd_disk = u16_at(rec, 6);
    let count = u64::from(u16_at(rec, 10));
    let cd_size = u64::from(u32_at(rec, 12));
    let cd_offset = u64::from(u32_at(rec, 16));
    // The locator is inside `tail` whenever it is inside the file.
    let has_locator = at >= ZIP64_LOCATOR_LEN
        && &tail[at - ZIP64_LOCATOR_LEN..at - ZIP64_LOCATOR_LEN + 4] == ZIP64_LOCATOR_SIG;
    if has_locator {
        let loc = &tail[at - ZIP64_LOCATOR_LEN..at];
        let zip64 = u64_at(loc, 8);
        let r = slice(
            data,
            zip64,
            ZIP64_EOCD_LEN as u64,
            "ZIP64 end of central directory",
        )?;
        if &r[..4] != ZIP64_EOCD_SIG {
            return zip_err(format!(
                "no ZIP64 end of central directory record at byte {zip64}, where the locator at byte {} points",
                eocd - ZIP64_LOCATOR_LEN as u64
            ));
        }
        if u32_at(r, 16) != 0 || u32_at(r, 20) != 0 {
            return zip_err("multi-disk (split) archives are not supported");
        }
        return Ok((u64_at(r, 32), u64_at(r, 40), u64_at(r, 48)));
    }
    if disk != 0 || cd_disk != 0 {
        return zip_err("multi-disk (split) archives are not supported");
    }
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        return zip_err(format!(
            "end of central directory at byte {eocd} defers to ZIP64, but there is no ZIP64 locator"
        ));
    }
    Ok((count, cd_size, cd_offset))
}

/// The central directory entry at the start of `cd` (the rest of the
/// directory), and its length in bytes. `entry_err` makes an error that
/// names the entry.
fn read_entry(
    cd: &[u8],
    entry_err: &impl Fn(String) -> TorchError,
) -> Result<(Entry, usize), TorchError> {
    if cd.len() < CENTRAL_LEN {
        return Err(entry_err("truncated".to_string()));
    }
    let h = &cd[..CENTRAL_LEN];
    if &h[..4] != CENTRAL_SIG {
        return Err(entry_err("bad signature".to_string()));
    }
    let flags = u16_at(h, 8);
    let method = u16_at(h, 10);
    let mut compressed_size = u64::from(u32_at(h, 20));
    let mut size = u64::from(u32_at(h, 24));
    let name_len = usize::from(u16_at(h, 28));
    let extra_len = usize::from(u16_at(h, 30));
    let comment_len = usize::from(u16_at(h, 32));
    let disk_start = u16_at(h, 34);
    let mut local_header = u64::from(u32_at(h, 42));
    let total = CENTRAL_LEN + name_len + extra_len + comment_len;
    if cd.len() < total {
        return Err(entry_err(format!(
            "name, extra field and comment ({} bytes) run past the central directory",
            total - CENTRAL_LEN
        )));
    }
    let name_bytes = &cd[CENTRAL_LEN..CENTRAL_LEN + name_len];
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    let extra = &cd[CENTRAL_LEN + name_len..CENTRAL_LEN + name_len + extra_len];
    let need_size = size == 0xffff_ffff;
    let need_csize = compressed_size == 0xffff_ffff;
    let need_offset = local_header == 0xffff_ffff;
    if need_size || need_csize || need_offset || disk_start == 0xffff {
        let z = zip64_extra(extra).map_err(|why| entry_err(format!("'{}': {why}", esc(&name))))?;
        let Some(z) = z else {
            return Err(entry_err(format!(
                "'{}' has 0xFFFFFFFF sizes or offset but no ZIP64 extra field",
                esc(&name)
            )));
        };
        // The ZIP64 field holds, in this order, only the values whose
        // 32-bit fields are saturated.
        let mut vals = z.chunks_exact(8).map(|c| u64_at(c, 0));
        let mut next = |what: &str| {
            vals.next().ok_or_else(|| {
                entry_err(format!(
                    "'{}': ZIP64 extra field lacks the {what}",
                    esc(&name)
                ))
            })
        };
        if need_size {
            size = next("size")?;
        }
        if need_csize {
            compressed_size = next("compressed size")?;
        }
        if need_offset {
            local_header = next("local header offset")?;
        }
    } else if disk_start != 0 {
        return zip_err("multi-disk (split) archives are not supported");
    }
    let entry = Entry {
        name,
        method,
        flags,
        compressed_size,
        size,
        local_header,
    };
    Ok((entry, total))
}

/// Offset in `data`, the last bytes of a file of `size` bytes, of the end
/// of central directory record: the last signature in the final 64 KiB +
/// 22 bytes whose comment fits in the file.
fn find_eocd(data: &[u8], size: u64) -> Result<usize, TorchError> {
    if data.len() < EOCD_LEN {
        return zip_err(format!(
            "file of {size} bytes is too short for an end of central directory record (truncated?)"
        ));
    }
    let lowest = data.len().saturating_sub(EOCD_LEN + MAX_COMMENT);
    let mut at = data.len() - EOCD_LEN;
    loop {
        if &data[at..at + 4] == EOCD_SIG {
            let comment = usize::from(u16_at(data, at + 20));
            if at + EOCD_LEN + comment <= data.len() {
                return Ok(at);
            }
        }
        if at == lowest {
            return zip_err("no end of central directory record (truncated file?)");
        }
        at -= 1;
    }
}

/// The data of the ZIP64 extended information field in `extra`, if any.
fn zip64_extra(mut extra: &[u8]) -> Result<Option<&[u8]>, String> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0);
        let len = usize::from(u16_at(extra, 2));
        if extra.len() - 4 < len {
            return Err(format!(
                "extra field 0x{id:04x} of {len} bytes runs past the extra data"
            ));
        }
        if id == ZIP64_EXTRA_ID {
            return Ok(Some(&extra[4..4 + len]));
        }
        extra = &extra[4 + len..];
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One entry to write: name, payload, local extra, central extra (the
    /// writer adds ZIP64 fields when `zip64`).
    pub struct W<'a> {
        pub name: &'a str,
        pub data: &'a [u8],
        pub method: u16,
        pub local_extra: &'a [u8],
    }

    /// A minimal zip writer for tests: STORED entries, optional ZIP64 for
    /// everything (sizes and offsets saturated, ZIP64 EOCD and locator).
    pub fn write_zip(entries: &[W], zip64: bool, comment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let lho = out.len() as u64;
            out.extend_from_slice(LOCAL_SIG);
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&e.method.to_le_bytes());
            out.extend_from_slice(&[0; 8]); // time, date, crc
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(e.local_extra.len() as u16).to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(e.local_extra);
            out.extend_from_slice(e.data);

            let mut extra = Vec::new();
            if zip64 {
                extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                extra.extend_from_slice(&24u16.to_le_bytes());
                extra.extend_from_slice(&(e.data.len() as u64).to_le_bytes());
                extra.extend_from_slice(&(e.data.len() as u64).to_le_bytes());
                extra.extend_from_slice(&lho.to_le_bytes());
            }
            let sat = |v: u64| if zip64 { 0xffff_ffff } else { v as u32 };
            central.extend_from_slice(CENTRAL_SIG);
            central.extend_from_slice(&45u16.to_le_bytes());
            central.extend_from_slice(&45u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&e.method.to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&sat(e.data.len() as u64).to_le_bytes());
            central.extend_from_slice(&sat(e.data.len() as u64).to_le_bytes());
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 4]); // comment len, disk
            central.extend_from_slice(&[0; 6]); // attrs
            central.extend_from_slice(&sat(lho).to_le_bytes());
            central.extend_from_slice(e.name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let cd_offset = out.len() as u64;
        let cd_size = central.len() as u64;
        out.extend_from_slice(&central);
        let n = entries.len() as u64;
        if zip64 {
            let rec = out.len() as u64;
            out.extend_from_slice(ZIP64_EOCD_SIG);
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0]);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&cd_size.to_le_bytes());
            out.extend_from_slice(&cd_offset.to_le_bytes());
            out.extend_from_slice(ZIP64_LOCATOR_SIG);
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&rec.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        let sat16 = |v: u64| if zip64 { 0xffff } else { v as u16 };
        let sat32 = |v: u64| if zip64 { 0xffff_ffff } else { v as u32 };
        out.extend_from_slice(EOCD_SIG);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&sat16(n).to_le_bytes());
        out.extend_from_slice(&sat16(n).to_le_bytes());
        out.extend_from_slice(&sat32(cd_size).to_le_bytes());
        out.extend_from_slice(&sat32(cd_offset).to_le_bytes());
        out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        out.extend_from_slice(comment);
        out
    }

    fn w<'a>(name: &'a str, data: &'a [u8]) -> W<'a> {
        W {
            name,
            data,
            method: 0,
            local_extra: &[],
        }
    }

    #[test]
    fn reads_plain_and_zip64_with_differing_local_extra() {
        for zip64 in [false, true] {
            let z = write_zip(
                &[
                    w("a/x", b"hello"),
                    W {
                        name: "a/y",
                        data: b"world!",
                        method: 0,
                        local_extra: b"\x99\x99\x03\x00abc",
                    },
                ],
                zip64,
                b"a comment",
            );
            let a = Archive::parse(&z).unwrap();
            assert_eq!(a.entries().len(), 2);
            for (name, want) in [("a/x", &b"hello"[..]), ("a/y", b"world!")] {
                let (o, n) = a.stored_payload(a.find(name).unwrap()).unwrap();
                assert_eq!(&z[o as usize..(o + n) as usize], want, "zip64={zip64}");
            }
        }
    }

    #[test]
    fn refusals() {
        let z = write_zip(
            &[W {
                name: "a/x",
                data: b"zz",
                method: 8,
                local_extra: &[],
            }],
            false,
            b"",
        );
        let a = Archive::parse(&z).unwrap();
        let e = a.stored_payload(a.find("a/x").unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("zip entry 'a/x': is compressed (method 8, deflate)"),
            "{e}"
        );

        assert_eq!(
            Archive::parse(b"PK\x05\x06").unwrap_err().to_string(),
            "zip: file of 4 bytes is too short for an end of central directory record (truncated?)"
        );
        let z = write_zip(&[w("a/x", b"hello")], false, b"");
        // Truncated before the end record.
        let e = Archive::parse(&z[..z.len() - 5]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "zip: no end of central directory record (truncated file?)"
        );
        // Central directory offset pointing past the end.
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 6..n - 2].copy_from_slice(&1_000_000u32.to_le_bytes());
        let e = Archive::parse(&bad).unwrap_err();
        assert!(
            e.to_string().contains("central directory (bytes 1000000.."),
            "{e}"
        );
        // Entry count that cannot fit.
        let mut bad = z.clone();
        bad[n - 12..n - 10].copy_from_slice(&500u16.to_le_bytes());
        let e = Archive::parse(&bad).unwrap_err();
        assert!(e.to_string().contains("cannot hold 500 entries"), "{e}");
        // Payload running past the end: a central size larger than the file.
        let a = Archive::parse(&z).unwrap();
        let big = Entry {
            size: 1 << 40,
            compressed_size: 1 << 40,
            ..a.find("a/x").unwrap().clone()
        };
        let e = a.stored_payload(&big).unwrap_err();
        assert!(
            e.to_string().contains("runs past the end of the file"),
            "{e}"
        );
        // Duplicate names.
        let z = write_zip(&[w("a/x", b"1"), w("a/x", b"2")], false, b"");
        assert!(
            Archive::parse(&z)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn never_panics_on_corruption() {
        let z = write_zip(&[w("a/x", b"hello"), w("a/y", b"world")], true, b"c");
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mut b = z.clone();
            let i = (s % b.len() as u64) as usize;
            b[i] = (s >> 32) as u8;
            if s & 1 == 0 {
                b.truncate((s >> 40) as usize % (b.len() + 1));
            }
            if let Ok(a) = Archive::parse(&b) {
                for e in a.entries() {
                    let _ = a.stored_payload(e);
                }
            }
        }
    }
}
