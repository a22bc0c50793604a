//! Surviving a source file that shrinks under its memory map.
//!
//! gyrofs reads tensor bytes straight from read-only maps of the source
//! files. If another process truncates a mapped file, touching a page past
//! the new end raises SIGBUS, which would kill the daemon. Checking the file's
//! length before each access narrows that window but cannot close it (the
//! truncate can land between the check and the copy), so reads of the maps
//! run inside [`guarded`]:
//!
//! - a SIGBUS on a thread inside `guarded`, at an address in one of the maps
//!   that call reads, is *recovered*: the handler maps an
//!   anonymous zero page over the faulting page (the instruction then
//!   completes, reading zeros), notes the address, and returns; `guarded`
//!   then reports a [`Fault`], and the read path turns it into EIO for that
//!   read and marks the source file changed for good (so the zeros are never
//!   served: every later read of that file fails too);
//! - any other fatal signal (SIGSEGV, SIGBUS outside `guarded`, SIGILL,
//!   SIGFPE, SIGABRT) is written to stderr (the daemon's `--log-file`) with
//!   its address, then handled as before (the previous handler, so Rust's
//!   stack-overflow message still appears, or the default action).
//!
//! The alternative, `pread` into a buffer instead of reading the map, was
//! rejected: it costs a copy on every lossless read, and the transposed MXFP4
//! kernel reads one 16-byte block from each of thousands of rows a stride
//! apart, which would become thousands of system calls per request or a copy
//! of the whole expert. With this module the happy path costs two
//! thread-local stores per read.
//!
//! Bytes that the *kernel* copies from a map (a borrowed reply handed to
//! `writev` on /dev/fuse, or to `write` by `convert`) never raise a signal:
//! the kernel's copy fails with EFAULT, and FUSE answers that request with EIO.
//!
//! Async-signal safety: the handler touches only const-initialised
//! thread-locals of `Copy` types and calls `mmap`, `write` and `sigaction`,
//! which are plain system calls on Linux.

use std::cell::Cell;
use std::sync::{Once, OnceLock};

/// An address range `(start, len)` of a map that `guarded` may recover in.
pub type Range = (usize, usize);

thread_local! {
    /// Inside `guarded` on this thread: the maps it reads (pointer and
    /// length of a slice borrowed for the duration of the call; null outside).
    static ACTIVE: Cell<(*const Range, usize)> = const { Cell::new((std::ptr::null(), 0)) };
    /// First faulting address recovered during the current `guarded` call (0: none).
    static FAULT_ADDR: Cell<usize> = const { Cell::new(0) };
}

/// A SIGBUS recovered while reading a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The address that faulted (inside some source file's map).
    pub addr: usize,
}

/// Run `f`, recovering from SIGBUS in the maps `ranges` (see the module
/// comment). `Err` if a fault was recovered: whatever `f` computed from the
/// map is then not to be trusted. A SIGBUS anywhere else stays fatal.
pub fn guarded<T>(ranges: &[Range], f: impl FnOnce() -> T) -> Result<T, Fault> {
    install();
    let outer = ACTIVE.with(|a| a.replace((ranges.as_ptr(), ranges.len())));
    if !outer.0.is_null() {
        // Nested: restore the outer call's ranges; it reports.
        let out = f();
        ACTIVE.with(|a| a.set(outer));
        return Ok(out);
    }
    FAULT_ADDR.with(|a| a.set(0));
    let out = f();
    ACTIVE.with(|a| a.set((std::ptr::null(), 0)));
    match FAULT_ADDR.with(|a| a.replace(0)) {
        0 => Ok(out),
        addr => Err(Fault { addr }),
    }
}

/// Is `addr` in one of the ranges of the current `guarded` call?
fn guarded_addr(addr: usize) -> bool {
    let (ptr, len) = ACTIVE.with(|a| a.get());
    if ptr.is_null() {
        return false;
    }
    // SAFETY: `guarded` set (ptr, len) from a slice that outlives the call,
    // and clears it before returning; we are on the same thread, inside it.
    let ranges = unsafe { std::slice::from_raw_parts(ptr, len) };
    ranges
        .iter()
        .any(|&(start, n)| addr >= start && addr - start < n)
}

/// Signals whose arrival is logged before the process dies.
const FATAL: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// The handlers that were installed before ours, by signal number.
static PREVIOUS: OnceLock<[Option<libc::sigaction>; 32]> = OnceLock::new();

static INSTALL: Once = Once::new();

/// Install the handlers (once per process; [`guarded`] does it).
pub fn install() {
    INSTALL.call_once(|| {
        let mut previous = [None; 32];
        for sig in FATAL {
            // SAFETY: a zeroed sigaction is a valid out-parameter; a null
            // new action only queries the current one.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old);
                previous[sig as usize] = Some(old);
            }
        }
        // Before any handler of ours can run.
        let _ = PREVIOUS.set(previous);
        for sig in FATAL {
            // SAFETY: `on_signal` has the SA_SIGINFO signature and is
            // async-signal-safe (module comment); the mask is initialised by
            // sigemptyset before use.
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                libc::sigaction(sig, &new, std::ptr::null_mut());
            }
        }
    });
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers;
    // si_addr is meaningful for SIGBUS/SIGSEGV/SIGILL/SIGFPE and harmless
    // to read for the others.
    let addr = unsafe { (*info).si_addr() } as usize;
    if sig == libc::SIGBUS && guarded_addr(addr) && recover(addr) {
        FAULT_ADDR.with(|a| {
            if a.get() == 0 {
                a.set(addr.max(1));
            }
        });
        return;
    }
    fatal(sig, addr, info, ctx);
}

/// Map a zero page over the page holding `addr`, so that the faulting load
/// completes. False if that cannot be done.
fn recover(addr: usize) -> bool {
    let page = page_size();
    let start = addr & !(page - 1);
    // SAFETY: the page lies in one of the read-only source maps that the
    // current `guarded` call named (checked by the caller); replacing it with
    // a private anonymous read-only page changes what a read of it returns
    // (zeros) and nothing else. The map is unmapped as a whole when its
    // SourceFile is dropped, this page included.
    let r = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            page,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    r != libc::MAP_FAILED
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// Log a fatal signal, then let the previous handler (or the default action)
/// have it.
fn fatal(sig: libc::c_int, addr: usize, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let mut buf = [0u8; 128];
    let mut n = 0;
    for part in [
        &b"gyrofs: fatal signal "[..],
        signal_name(sig),
        b" at address 0x",
    ] {
        n += copy(&mut buf[n..], part);
    }
    n += hex(&mut buf[n..], addr);
    n += copy(&mut buf[n..], b"\n");
    // SAFETY: write(2) on fd 2 with a valid buffer; async-signal-safe.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };

    let previous = PREVIOUS.get().and_then(|p| p[sig as usize]);
    match previous {
        Some(old)
            if old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous handler was installed with SA_SIGINFO, so
            // it has this signature; we call it as the kernel would have.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(old.sa_sigaction) };
            f(sig, info, ctx);
        }
        _ => {
            // SAFETY: restoring the default action and re-raising is the
            // standard way to die "of" a signal; both are async-signal-safe.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
    }
}

fn signal_name(sig: libc::c_int) -> &'static [u8] {
    match sig {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGILL => b"SIGILL",
        libc::SIGFPE => b"SIGFPE",
        libc::SIGABRT => b"SIGABRT",
        _ => b"?",
    }
}

fn copy(dst: &mut [u8], src: &[u8]) -> usize {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    n
}

fn hex(dst: &mut [u8], mut v: usize) -> usize {
    let mut digits = [0u8; 16];
    let mut k = 0;
    loop {
        digits[k] = b"0123456789abcdef"[v & 15];
        k += 1;
        v >>= 4;
        if v == 0 || k == digits.len() {
            break;
        }
    }
    digits[..k].reverse();
    copy(dst, &digits[..k])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Truncate a mapped file, then read past the new end inside `guarded`:
    /// the read completes (with zeros) and the fault is reported; outside
    /// `guarded` nothing is touched.
    #[test]
    fn recovers_sigbus_from_a_truncated_map() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let page = page_size();
        std::fs::File::create(&p)
            .unwrap()
            .write_all(&vec![7u8; 4 * page])
            .unwrap();
        let f =
            crate::store::SourceFile::open(&p, "f".into(), crate::store::Backing::Local).unwrap();
        let data = f.read_head(f.len).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(page as u64)
            .unwrap();
        let ranges = [(data.as_ptr() as usize, data.len())];
        let first = guarded(&ranges, || data[10]);
        assert_eq!(first, Ok(7));
        let past = guarded(&ranges, || data[2 * page + 5..2 * page + 9].to_vec());
        let fault = past.unwrap_err();
        let base = data.as_ptr() as usize;
        assert!((base + 2 * page..base + 3 * page).contains(&fault.addr));
        // The page now reads as zeros, and a later guarded read is clean.
        assert_eq!(guarded(&ranges, || data[2 * page + 1]), Ok(0));
    }

    #[test]
    fn formats_addresses() {
        let mut b = [0u8; 20];
        let n = hex(&mut b, 0x7f00_dead_beef);
        assert_eq!(&b[..n], b"7f00deadbeef");
        let n = hex(&mut b, 0);
        assert_eq!(&b[..n], b"0");
    }
}
