//! The restricted unpickler: a stack machine over every opcode of protocols
//! 0-5 that turns a pickle into a graph of plain values, never executing,
//! importing or calling anything.
//!
//! For: decoding `data.pkl` (zip checkpoints) and the pickles of the legacy
//! format into [`Pickle`]: an arena of [`Node`]s in which containers refer to
//! their items by [`Id`], so memo references (`GET`) share a node exactly as
//! Python shares an object, and no input can make the decoder copy a value.
//! Calls (`REDUCE`, `NEWOBJ`, `NEWOBJ_EX`, `INST`, `OBJ`) become
//! [`Node::Object`] records (callable, arguments, later `BUILD` state and
//! `SETITEMS`/`APPENDS` items) for `rebuild` to interpret; `BINPERSID`
//! becomes [`Node::PersId`].
//!
//! Not for: deciding what a call means (tensors, OrderedDicts: `rebuild`),
//! storages or archives.
//!
//! Globals are resolved by name only, against the allowlist of
//! `torch.load(weights_only=True)` ([`Global::of`]); anything else is kept as
//! [`Global::Other`] (a placeholder when called). Globals that exist to run
//! code ([`is_refused`]: `os.*`, `subprocess.*`, `builtins.eval`, ...) make
//! the whole pickle refused at the opcode that names them.
//!
//! Hostile input: every length is checked against the bytes left before
//! anything is read; the value graph may have at most [`MAX_VALUES`] nodes
//! (each opcode adds at most one, so the graph is also bounded by the input
//! length) and take at most [`MEMORY_PER_BYTE`] bytes of memory per byte of
//! pickle read plus [`MEMORY_FLOOR`] (nodes, their text and item lists,
//! counted as they are made); `MARK`s may nest at most [`MAX_DEPTH`] deep; long integers may
//! have at most [`MAX_LONG_BYTES`] bytes; there is no recursion, and every
//! opcode does work proportional to the bytes it reads or the items it
//! consumes, so decoding is linear in the input.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

pub use super::globals::{Global, TorchDtype};
use super::globals::{is_refused, py2_rename};

/// Index of a node in [`Pickle::nodes`].
pub type Id = u32;

/// A fast hasher for [`Id`] keys (node indices gyrofs assigns itself, not
/// values chosen by the file): a multiplicative hash folded so that every
/// bit of the id reaches the low bits.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(b.into());
        }
    }
    fn write_u32(&mut self, n: u32) {
        let h = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by node ids.
pub type IdMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;

/// The memo: indices are chosen by the file. Dense indices (what picklers
/// write: 0, 1, 2, ...) live in a vector that is never more than twice the
/// number of entries plus 1024 long; others go to a SipHash map (no
/// collision attacks).
#[derive(Default)]
struct Memo {
    dense: Vec<Option<Id>>,
    sparse: HashMap<u32, Id>,
    len: usize,
}

impl Memo {
    fn get(&self, k: u32) -> Option<Id> {
        match self.dense.get(k as usize) {
            Some(&v) => v,
            None => self.sparse.get(&k).copied(),
        }
    }

    fn insert(&mut self, k: u32, v: Id) {
        let i = k as usize;
        if i >= self.dense.len() && i < 2 * self.len + 1024 && !self.sparse.contains_key(&k) {
            self.dense.resize(i + 1, None);
        }
        let fresh = match self.dense.get_mut(i) {
            Some(slot) => slot.replace(v).is_none(),
            None => self.sparse.insert(k, v).is_none(),
        };
        if fresh {
            self.len += 1;
        }
    }
}

/// Most nodes one pickle may create (about 32 bytes each). Checkpoints with
/// 100k tensors take about 2M.
pub const MAX_VALUES: usize = 1 << 24;
/// Memory the value graph may take per byte of pickle read (with
/// [`MEMORY_FLOOR`]). Pickles torch.save writes take 6 to 11 (measured on
/// the fixtures, nanoGPT checkpoints and a 2,100-tensor state dict with its
/// optimizer state: about 15 nodes of 32 bytes per tensor record of 60 to
/// 100 bytes); the worst any input can do is about 36 (`TUPLE1`: one byte,
/// one node holding one item), which [`MAX_VALUES`] alone would let a
/// 16 MB pickle turn into 0.75 GB.
pub const MEMORY_PER_BYTE: u64 = 16;
/// Memory any pickle's value graph may take, whatever its length.
pub const MEMORY_FLOOR: u64 = 64 << 20;
/// Deepest nesting of `MARK`s, of containers when values are walked, and of
/// calls whose arguments are calls. Checkpoints nest fewer than 20 levels;
/// the walk recurses (about 2 KiB of stack per level), so the cap also keeps
/// it well inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 256;
/// Largest `LONG1`/`LONG4`/`LONG` integer, in bytes of two's complement.
pub const MAX_LONG_BYTES: usize = 256;
/// Longest module or name of a global, in bytes.
pub const MAX_GLOBAL_NAME: usize = 1024;
/// Highest pickle protocol.
pub const HIGHEST_PROTOCOL: u8 = 5;

/// A decoded pickle.
#[derive(Debug)]
pub struct Pickle {
    pub nodes: Vec<Node>,
    /// The value `STOP` returned.
    pub root: Id,
    /// Offset one past the `STOP` opcode (in the slice given to [`parse`]).
    pub end: usize,
    /// Highest `PROTO` seen (0 when there was none).
    pub protocol: u8,
    /// Bytes of memory the value graph was counted as taking (see
    /// [`MEMORY_PER_BYTE`]).
    pub memory: u64,
}

impl Pickle {
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id as usize]
    }
}

/// A value. Containers hold the ids of their items.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, as decimal digits with an optional `-`.
    BigInt(Box<str>),
    Float(f64),
    Str(Box<str>),
    /// A `bytes`/`bytearray` value, by its length (its content is never
    /// needed).
    Bytes(u64),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set {
        items: Vec<Id>,
        frozen: bool,
    },
    Global(Box<GlobalRef>),
    Object(Box<Object>),
    /// A persistent id (`PERSID`/`BINPERSID`): `pid` is the id value (torch
    /// writes a tuple `("storage", ...)`); `offset` is the opcode's.
    PersId {
        pid: Id,
        offset: usize,
    },
}

impl Node {
    /// What kind of value this is, for messages: `a list`, `an int`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "a bool",
            Node::Int(_) | Node::BigInt(_) => "an int",
            Node::Float(_) => "a float",
            Node::Str(_) => "a string",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "a list",
            Node::Tuple(_) => "a tuple",
            Node::Dict(_) => "a dict",
            Node::Set { .. } => "a set",
            Node::Global(_) => "a global",
            Node::Object(_) => "an object",
            Node::PersId { .. } => "a persistent id",
        }
    }
}

/// A global named by `GLOBAL`, `STACK_GLOBAL` or `INST`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalRef {
    /// Module and name after Python 2 renames (`__builtin__` -> `builtins`).
    pub module: String,
    pub name: String,
    pub kind: Global,
}

impl GlobalRef {
    /// `module.name`, escaped for a one-line message.
    pub fn full_name(&self) -> String {
        esc(&format!("{}.{}", self.module, self.name))
    }
}

/// How an object was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOp {
    Reduce,
    NewObj,
    NewObjEx,
    Inst,
    Obj,
}

impl CallOp {
    pub fn name(self) -> &'static str {
        match self {
            CallOp::Reduce => "REDUCE",
            CallOp::NewObj => "NEWOBJ",
            CallOp::NewObjEx => "NEWOBJ_EX",
            CallOp::Inst => "INST",
            CallOp::Obj => "OBJ",
        }
    }
}

/// A call recorded, never made: `callable(*args, **kwargs)`, then `BUILD`
/// with `state`, then items added by `SETITEM(S)` / `APPEND(S)` / `ADDITEMS`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub op: CallOp,
    /// Offset of the opcode that made the object.
    pub offset: usize,
    pub callable: Id,
    /// The argument tuple (any node for a hostile `REDUCE`).
    pub args: Id,
    pub kwargs: Option<Id>,
    /// The last `BUILD` state.
    pub state: Option<Id>,
    pub dict_items: Vec<(Id, Id)>,
    pub list_items: Vec<Id>,
}

/// Why decoding failed: the opcode, its offset and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Offset of the opcode (in the slice given to [`parse`]).
    pub offset: usize,
    /// The opcode's name (`BINUNICODE`), or `0xNN` for an unknown byte.
    pub op: String,
    pub why: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}: {}", self.offset, self.op, self.why)
    }
}

/// Escape control characters and cut very long text, so that a name from
/// the file stays one short line in a message.
pub fn esc(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Decode the pickle that starts at `data[start]`, up to its `STOP`.
pub fn parse(data: &[u8], start: usize) -> Result<Pickle, PickleError> {
    let mut m = Machine {
        data,
        start,
        memory: 0,
        pos: start,
        op_start: start,
        op: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::default(),
        protocol: 0,
    };
    m.run()
}

struct Machine<'a> {
    data: &'a [u8],
    /// Where the pickle starts in `data`.
    start: usize,
    /// Memory the value graph takes, as counted by `charge`.
    memory: u64,
    pos: usize,
    op_start: usize,
    op: u8,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: Memo,
    protocol: u8,
}

/// Opcode bytes (pickletools names).
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// The pickletools name of opcode byte `b`, if it is one.
pub fn op_name(b: u8) -> Option<&'static str> {
    use op::*;
    Some(match b {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => return None,
    })
}

type R<T> = Result<T, PickleError>;

impl<'a> Machine<'a> {
    /// The error `why` at the current opcode.
    fn err<T>(&self, why: impl Into<String>) -> R<T> {
        Err(PickleError {
            offset: self.op_start,
            op: op_name(self.op).map_or_else(|| format!("0x{:02x}", self.op), str::to_string),
            why: why.into(),
        })
    }

    /// Bytes left after `pos`.
    fn left(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, if the input holds them.
    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        if n > self.left() as u64 {
            return self.err(format!(
                "needs {n} bytes but the pickle ends {} bytes later",
                self.left()
            ));
        }
        let n = n as usize;
        let data: &'a [u8] = self.data;
        let s = &data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next `N` bytes, as an array.
    fn arr<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// The next byte.
    fn u8(&mut self) -> R<u8> {
        Ok(self.arr::<1>()?[0])
    }

    /// The next 4 bytes, as a little-endian integer.
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    /// The next 8 bytes, as a little-endian integer.
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }

    /// Bytes up to the next `\n` (not included; the `\n` is consumed).
    fn line(&mut self) -> R<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos.min(data.len())..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => self.err("line is not terminated by a newline before the end"),
        }
    }

    /// The next line, which must be UTF-8.
    fn line_str(&mut self) -> R<String> {
        let l = self.line()?;
        match std::str::from_utf8(l) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("line is not UTF-8"),
        }
    }

    /// Count `bytes` more of memory for the value graph, within
    /// [`MEMORY_PER_BYTE`] per byte read so far plus [`MEMORY_FLOOR`].
    fn charge(&mut self, bytes: u64) -> R<()> {
        self.memory += bytes;
        let read = (self.pos - self.start) as u64;
        let limit = MEMORY_FLOOR + MEMORY_PER_BYTE * read;
        if self.memory > limit {
            return self.err(format!(
                "its values would take more than {} MiB of memory after {read} bytes \
                 ({MEMORY_PER_BYTE} bytes per byte of pickle plus {} MiB)",
                limit >> 20,
                MEMORY_FLOOR >> 20
            ));
        }
        Ok(())
    }

    /// Add `n` to the value graph (within [`MAX_VALUES`] and the memory
    /// budget), without pushing it.
    fn push_node(&mut self, n: Node) -> R<Id> {
        if self.nodes.len() >= MAX_VALUES {
            return self.err(format!("more than {MAX_VALUES} values"));
        }
        self.charge(std::mem::size_of::<Node>() as u64 + heap_bytes(&n))?;
        self.nodes.push(n);
        Ok((self.nodes.len() - 1) as Id)
    }

    /// Add `n` to the value graph and push it.
    fn push(&mut self, n: Node) -> R<()> {
        let id = self.push_node(n)?;
        self.stack.push(id);
        Ok(())
    }

    /// The stack length at the innermost open `MARK` (0 without one).
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Pop the top of the stack, which must lie above the innermost `MARK`.
    fn pop(&mut self) -> R<Id> {
        if self.stack.len() <= self.base() {
            return self.err("stack underflow");
        }
        Ok(self.stack.pop().unwrap_or_default())
    }

    /// The top of the stack, which must lie above the innermost `MARK`.
    fn top(&self) -> R<Id> {
        if self.stack.len() <= self.base() {
            return self.err("stack underflow");
        }
        Ok(*self.stack.last().unwrap_or(&0))
    }

    /// Pop the innermost `MARK` and the items above it.
    fn pop_mark(&mut self) -> R<Vec<Id>> {
        match self.marks.pop() {
            Some(m) => Ok(self.stack.split_off(m)),
            None => self.err("no MARK to pop to"),
        }
    }

    /// Node `id`, to add items or state to.
    fn node_mut(&mut self, id: Id) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Store the top of the stack in the memo at `key`.
    fn memo_put(&mut self, key: u64) -> R<()> {
        let Ok(key) = u32::try_from(key) else {
            return self.err(format!("memo index {key} is too large"));
        };
        let v = self.top()?;
        if self.memo.len >= MAX_VALUES && self.memo.get(key).is_none() {
            return self.err(format!("more than {MAX_VALUES} memo entries"));
        }
        self.memo.insert(key, v);
        Ok(())
    }

    /// Push the value stored in the memo at `key`.
    fn memo_get(&mut self, key: u64) -> R<()> {
        match u32::try_from(key).ok().and_then(|k| self.memo.get(k)) {
            Some(v) => {
                self.stack.push(v);
                Ok(())
            }
            None => self.err(format!("memo index {key} was never stored")),
        }
    }

    /// Add the global `module.name` to the value graph, refusing the ones
    /// that run code.
    fn global(&mut self, module: &str, name: &str) -> R<Id> {
        if module.len() > MAX_GLOBAL_NAME || name.len() > MAX_GLOBAL_NAME {
            return self.err(format!(
                "global name of {} bytes exceeds the {MAX_GLOBAL_NAME}-byte limit",
                module.len().max(name.len())
            ));
        }
        let (module, name) = py2_rename(module, name);
        if is_refused(&module, &name) {
            return self.err(format!(
                "refused: '{}' is a code-execution primitive (nothing was run)",
                esc(&format!("{module}.{name}"))
            ));
        }
        let kind = Global::of(&module, &name);
        self.push_node(Node::Global(Box::new(GlobalRef { module, name, kind })))
    }

    /// The text of node `id`, if it is a string.
    fn str_of(&self, id: Id) -> Option<&str> {
        match &self.nodes[id as usize] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Push the record of the call `callable(*args, **kwargs)` made by `op`.
    fn object(&mut self, op: CallOp, callable: Id, args: Id, kwargs: Option<Id>) -> R<()> {
        self.push(Node::Object(Box::new(Object {
            op,
            offset: self.op_start,
            callable,
            args,
            kwargs,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        })))
    }

    /// The decimal integer `digits` (`INT`, `LONG`).
    fn int_node(&self, digits: &[u8]) -> R<Node> {
        match parse_decimal(digits) {
            Some(n) => Ok(n),
            None => self.err(format!(
                "'{}' is not a decimal integer of at most {} digits",
                esc(&String::from_utf8_lossy(digits)),
                MAX_DECIMAL_DIGITS
            )),
        }
    }

    /// The little-endian integer of `n` bytes that follows (`LONG1`,
    /// `LONG4`).
    fn long_node(&mut self, n: u64) -> R<Node> {
        if n > MAX_LONG_BYTES as u64 {
            return self.err(format!(
                "integer of {n} bytes exceeds the {MAX_LONG_BYTES}-byte limit"
            ));
        }
        let b = self.take(n)?;
        Ok(long_from_le(b))
    }

    /// A Python 2 `str` (STRING, BINSTRING, SHORT_BINSTRING): text when it
    /// is UTF-8 (torch.load decodes it so), else bytes.
    fn string(&mut self, b: &[u8]) -> R<()> {
        match std::str::from_utf8(b) {
            Ok(s) => self.push(Node::Str(s.into())),
            Err(_) => self.push(Node::Bytes(b.len() as u64)),
        }
    }

    /// Push the UTF-8 string of `len` bytes that follows.
    fn unicode(&mut self, len: u64) -> R<()> {
        let b = self.take(len)?;
        let s: Box<str> = String::from_utf8_lossy(b).into();
        self.push(Node::Str(s))
    }

    /// Skip the `len` bytes that follow and push a bytes value of that length.
    fn bytes(&mut self, len: u64) -> R<()> {
        self.take(len)?;
        self.push(Node::Bytes(len))
    }

    /// Execute opcodes from `pos` until `STOP`: read one opcode byte and hand
    /// it to the method of its family, which reads the opcode's argument
    /// bytes and updates the stack, marks and memo.
    fn run(&mut self) -> R<Pickle> {
        use op::*;
        loop {
            self.op_start = self.pos;
            if self.pos >= self.data.len() {
                self.op = STOP;
                return self.err("the pickle ends without STOP");
            }
            self.op = self.data[self.pos];
            self.pos += 1;
            match self.op {
                STOP => return self.stop(),
                PROTO | FRAME => self.frame_op()?,
                INT | LONG | BININT | BININT1 | BININT2 | LONG1 | LONG4 | FLOAT | BINFLOAT
                | NONE | NEWTRUE | NEWFALSE => self.number_op()?,
                STRING | BINSTRING | SHORT_BINSTRING | UNICODE | SHORT_BINUNICODE | BINUNICODE
                | BINUNICODE8 | SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8
                | NEXT_BUFFER | READONLY_BUFFER => self.text_op()?,
                EMPTY_LIST | EMPTY_TUPLE | EMPTY_DICT | EMPTY_SET | LIST | TUPLE | TUPLE1
                | TUPLE2 | TUPLE3 | FROZENSET | DICT => self.container_op()?,
                APPEND | APPENDS | SETITEM | SETITEMS | ADDITEMS => self.fill_op()?,
                MARK | POP | POP_MARK | DUP => self.stack_op()?,
                PUT | BINPUT | LONG_BINPUT | MEMOIZE | GET | BINGET | LONG_BINGET => {
                    self.memo_op()?
                }
                GLOBAL | STACK_GLOBAL | EXT1 | EXT2 | EXT4 => self.global_op()?,
                REDUCE | NEWOBJ | NEWOBJ_EX | INST | OBJ | BUILD => self.call_op()?,
                PERSID | BINPERSID => self.persid_op()?,
                _ => return self.unknown(),
            }
        }
    }

    /// The error for a byte that is no opcode. The family methods below
    /// return it for any opcode not theirs, which `run` never passes them.
    fn unknown<T>(&self) -> R<T> {
        Err(PickleError {
            offset: self.op_start,
            op: format!("0x{:02x}", self.op),
            why: "unknown opcode".to_string(),
        })
    }

    /// `STOP`: the value on top of the stack is the pickle's value.
    fn stop(&mut self) -> R<Pickle> {
        let root = self.pop()?;
        Ok(Pickle {
            nodes: std::mem::take(&mut self.nodes),
            root,
            end: self.pos,
            protocol: self.protocol,
            memory: self.memory,
        })
    }

    /// `PROTO` and `FRAME`: check the protocol and that a frame lies within
    /// the input (frames are otherwise transparent).
    fn frame_op(&mut self) -> R<()> {
        use op::*;
        match self.op {
            PROTO => {
                let p = self.u8()?;
                if p > HIGHEST_PROTOCOL {
                    return self.err(format!("unsupported protocol {p}"));
                }
                self.protocol = self.protocol.max(p);
            }
            FRAME => {
                let n = self.u64()?;
                if n > self.left() as u64 {
                    return self.err(format!(
                        "frame of {n} bytes runs past the end ({} bytes left)",
                        self.left()
                    ));
                }
            }
            _ => return self.unknown(),
        }
        Ok(())
    }

    /// Integers, floats, `None` and booleans: push the constant.
    fn number_op(&mut self) -> R<()> {
        use op::*;
        let n = match self.op {
            INT => match self.line()? {
                b"00" => Node::Bool(false),
                b"01" => Node::Bool(true),
                d => self.int_node(d)?,
            },
            LONG => {
                let l = self.line()?;
                let l = l.strip_suffix(b"L").unwrap_or(l);
                self.int_node(l)?
            }
            BININT => Node::Int(i32::from_le_bytes(self.arr()?).into()),
            BININT1 => Node::Int(self.u8()?.into()),
            BININT2 => Node::Int(u16::from_le_bytes(self.arr()?).into()),
            LONG1 => {
                let n = self.u8()?;
                self.long_node(n.into())?
            }
            LONG4 => {
                let n = i32::from_le_bytes(self.arr()?);
                if n < 0 {
                    return self.err(format!("negative length {n}"));
                }
                self.long_node(n as u64)?
            }
            FLOAT => {
                let l = self.line()?;
                let v = std::str::from_utf8(l)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok());
                match v {
                    Some(v) => Node::Float(v),
                    None => {
                        let t = esc(&String::from_utf8_lossy(l));
                        return self.err(format!("'{t}' is not a float"));
                    }
                }
            }
            BINFLOAT => Node::Float(f64::from_be_bytes(self.arr()?)),
            NONE => Node::None,
            NEWTRUE => Node::Bool(true),
            NEWFALSE => Node::Bool(false),
            _ => return self.unknown(),
        };
        self.push(n)
    }

    /// Strings, bytes and buffers: push the text, or the length of the
    /// bytes (whose content is skipped).
    fn text_op(&mut self) -> R<()> {
        use op::*;
        match self.op {
            STRING => {
                let l = self.line()?;
                match unquote_repr(l) {
                    Some(b) => self.string(&b),
                    None => self.err("not a quoted string"),
                }
            }
            BINSTRING => {
                let n = i32::from_le_bytes(self.arr()?);
                if n < 0 {
                    return self.err(format!("negative length {n}"));
                }
                let b = self.take(n as u64)?;
                self.string(b)
            }
            SHORT_BINSTRING => {
                let n = self.u8()?;
                let b = self.take(n.into())?;
                self.string(b)
            }
            UNICODE => {
                let l = self.line()?;
                match raw_unicode_unescape(l) {
                    Some(s) => self.push(Node::Str(s.into())),
                    None => self.err("bad raw-unicode-escape sequence"),
                }
            }
            SHORT_BINUNICODE => {
                let n = self.u8()?;
                self.unicode(n.into())
            }
            BINUNICODE => {
                let n = self.u32()?;
                self.unicode(n.into())
            }
            BINUNICODE8 => {
                let n = self.u64()?;
                self.unicode(n)
            }
            SHORT_BINBYTES => {
                let n = self.u8()?;
                self.bytes(n.into())
            }
            BINBYTES => {
                let n = self.u32()?;
                self.bytes(n.into())
            }
            BINBYTES8 | BYTEARRAY8 => {
                let n = self.u64()?;
                self.bytes(n)
            }
            NEXT_BUFFER => self.err("out-of-band buffers are not supported"),
            READONLY_BUFFER => {
                // The buffer on top of the stack stays as it is.
                self.top()?;
                Ok(())
            }
            _ => self.unknown(),
        }
    }

    /// Container constructors: push an empty container, or one made of the
    /// items above the last `MARK` (or the top one to three items).
    fn container_op(&mut self) -> R<()> {
        use op::*;
        let n = match self.op {
            EMPTY_LIST => Node::List(Vec::new()),
            EMPTY_TUPLE => Node::Tuple(Vec::new()),
            EMPTY_DICT => Node::Dict(Vec::new()),
            EMPTY_SET => Node::Set {
                items: Vec::new(),
                frozen: false,
            },
            LIST => Node::List(self.pop_mark()?),
            TUPLE => Node::Tuple(self.pop_mark()?),
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = (self.op - TUPLE1 + 1) as usize;
                if self.stack.len() < self.base() + n {
                    return self.err("stack underflow");
                }
                Node::Tuple(self.stack.split_off(self.stack.len() - n))
            }
            FROZENSET => Node::Set {
                items: self.pop_mark()?,
                frozen: true,
            },
            DICT => {
                let items = self.pop_mark()?;
                Node::Dict(self.pairs(&items)?)
            }
            _ => return self.unknown(),
        };
        self.push(n)
    }

    /// `APPEND(S)`, `SETITEM(S)`, `ADDITEMS`: add items to the list, dict,
    /// set or object below them.
    fn fill_op(&mut self) -> R<()> {
        use op::*;
        match self.op {
            APPEND => {
                let v = self.pop()?;
                self.append(vec![v])
            }
            APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)
            }
            SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![(k, v)])
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(&items)?;
                self.set_items(pairs)
            }
            ADDITEMS => {
                let items = self.pop_mark()?;
                self.add_items(items)
            }
            _ => self.unknown(),
        }
    }

    /// `MARK`, `POP`, `POP_MARK`, `DUP`: stack manipulation.
    fn stack_op(&mut self) -> R<()> {
        use op::*;
        match self.op {
            MARK => {
                if self.marks.len() >= MAX_DEPTH {
                    return self.err(format!("MARKs nest deeper than {MAX_DEPTH}"));
                }
                self.marks.push(self.stack.len());
            }
            POP => {
                if self.stack.len() > self.base() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let v = self.top()?;
                self.stack.push(v);
            }
            _ => return self.unknown(),
        }
        Ok(())
    }

    /// `PUT`, `BINPUT`, `LONG_BINPUT`, `MEMOIZE` store the top of the stack
    /// in the memo; `GET`, `BINGET`, `LONG_BINGET` push a stored value.
    fn memo_op(&mut self) -> R<()> {
        use op::*;
        match self.op {
            PUT => {
                let l = self.line()?;
                let k = self.decimal_index(l)?;
                self.memo_put(k)
            }
            BINPUT => {
                let k = self.u8()?;
                self.memo_put(k.into())
            }
            LONG_BINPUT => {
                let k = self.u32()?;
                self.memo_put(k.into())
            }
            MEMOIZE => {
                let k = self.memo.len as u64;
                self.memo_put(k)
            }
            GET => {
                let l = self.line()?;
                let k = self.decimal_index(l)?;
                self.memo_get(k)
            }
            BINGET => {
                let k = self.u8()?;
                self.memo_get(k.into())
            }
            LONG_BINGET => {
                let k = self.u32()?;
                self.memo_get(k.into())
            }
            _ => self.unknown(),
        }
    }

    /// `GLOBAL` and `STACK_GLOBAL`: push a global, by name only (refused if
    /// it runs code). The extension registry (`EXT1`, `EXT2`, `EXT4`) is
    /// not supported.
    fn global_op(&mut self) -> R<()> {
        use op::*;
        let g = match self.op {
            GLOBAL => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                self.global(&module, &name)?
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.str_of(module), self.str_of(name)) else {
                    return self.err("module and name are not strings");
                };
                if m.len() > MAX_GLOBAL_NAME || n.len() > MAX_GLOBAL_NAME {
                    // Checked before copying: the strings may be shared.
                    return self.err(format!(
                        "global name of {} bytes exceeds the {MAX_GLOBAL_NAME}-byte limit",
                        m.len().max(n.len())
                    ));
                }
                let (m, n) = (m.to_string(), n.to_string());
                self.global(&m, &n)?
            }
            EXT1 | EXT2 | EXT4 => {
                return self.err("extension registry codes are not supported");
            }
            _ => return self.unknown(),
        };
        self.stack.push(g);
        Ok(())
    }

    /// `REDUCE`, `NEWOBJ`, `NEWOBJ_EX`, `INST`, `OBJ`: record a call as an
    /// [`Object`], never making it; `BUILD`: record the state it is given.
    fn call_op(&mut self) -> R<()> {
        use op::*;
        match self.op {
            REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.object(CallOp::Reduce, callable, args, None)
            }
            NEWOBJ => {
                let args = self.pop()?;
                let cls = self.pop()?;
                self.object(CallOp::NewObj, cls, args, None)
            }
            NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                self.object(CallOp::NewObjEx, cls, args, Some(kwargs))
            }
            INST => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let cls = self.global(&module, &name)?;
                let items = self.pop_mark()?;
                let args = self.push_node(Node::Tuple(items))?;
                self.object(CallOp::Inst, cls, args, None)
            }
            OBJ => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return self.err("no class after MARK");
                }
                let cls = items.remove(0);
                let args = self.push_node(Node::Tuple(items))?;
                self.object(CallOp::Obj, cls, args, None)
            }
            BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                match self.node_mut(target) {
                    Node::Object(o) => o.state = Some(state),
                    n => {
                        let k = n.kind();
                        return self.err(format!("cannot set the state of {k}"));
                    }
                }
                Ok(())
            }
            _ => self.unknown(),
        }
    }

    /// `PERSID` (a text id) and `BINPERSID` (any value): push a
    /// [`Node::PersId`] for `rebuild` to resolve.
    fn persid_op(&mut self) -> R<()> {
        let pid = match self.op {
            op::PERSID => {
                let l = self.line()?;
                let s: Box<str> = String::from_utf8_lossy(l).into();
                self.push_node(Node::Str(s))?
            }
            op::BINPERSID => self.pop()?,
            _ => return self.unknown(),
        };
        let offset = self.op_start;
        self.push(Node::PersId { pid, offset })
    }

    /// The memo index written as decimal `digits` (`PUT`, `GET`).
    fn decimal_index(&self, digits: &[u8]) -> R<u64> {
        match std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(k) => Ok(k),
            None => self.err(format!(
                "'{}' is not a memo index",
                esc(&String::from_utf8_lossy(digits))
            )),
        }
    }

    /// `items` as key/value pairs.
    fn pairs(&self, items: &[Id]) -> R<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return self.err(format!(
                "odd number of items ({}) for key/value pairs",
                items.len()
            ));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    /// `APPEND(S)`: add `items` to the list or object on top of the stack.
    fn append(&mut self, items: Vec<Id>) -> R<()> {
        let target = self.top()?;
        self.charge(4 * items.len() as u64)?;
        match self.node_mut(target) {
            Node::List(l) => l.extend(items),
            Node::Object(o) => o.list_items.extend(items),
            n => {
                let k = n.kind();
                return self.err(format!("cannot append to {k}"));
            }
        }
        Ok(())
    }

    /// `SETITEM(S)`: add `pairs` to the dict or object on top of the stack.
    fn set_items(&mut self, pairs: Vec<(Id, Id)>) -> R<()> {
        let target = self.top()?;
        self.charge(8 * pairs.len() as u64)?;
        match self.node_mut(target) {
            Node::Dict(d) => d.extend(pairs),
            Node::Object(o) => o.dict_items.extend(pairs),
            n => {
                let k = n.kind();
                return self.err(format!("cannot set items of {k}"));
            }
        }
        Ok(())
    }

    /// `ADDITEMS`: add `items` to the set or object on top of the stack.
    fn add_items(&mut self, items: Vec<Id>) -> R<()> {
        let target = self.top()?;
        self.charge(4 * items.len() as u64)?;
        match self.node_mut(target) {
            Node::Set {
                items: set,
                frozen: false,
            } => set.extend(items),
            Node::Object(o) => o.list_items.extend(items),
            n => {
                let k = n.kind();
                return self.err(format!("cannot add items to {k}"));
            }
        }
        Ok(())
    }
}

/// Bytes node `n` holds outside itself (text, item lists, boxes).
fn heap_bytes(n: &Node) -> u64 {
    let ids = |n: usize| 4 * n as u64;
    match n {
        Node::BigInt(s) | Node::Str(s) => s.len() as u64,
        Node::List(v) | Node::Tuple(v) | Node::Set { items: v, .. } => ids(v.len()),
        Node::Dict(d) => ids(2 * d.len()),
        Node::Global(g) => {
            (std::mem::size_of::<GlobalRef>() + g.module.len() + g.name.len()) as u64
        }
        Node::Object(o) => {
            std::mem::size_of::<Object>() as u64 + ids(2 * o.dict_items.len() + o.list_items.len())
        }
        Node::None
        | Node::Bool(_)
        | Node::Int(_)
        | Node::Float(_)
        | Node::Bytes(_)
        | Node::PersId { .. } => 0,
    }
}

/// Longest decimal integer accepted by the text opcodes (`INT`, `LONG`).
pub const MAX_DECIMAL_DIGITS: usize = 2 * MAX_LONG_BYTES + MAX_LONG_BYTES / 2;

/// A decimal integer with optional sign: `Int` when it fits i64.
fn parse_decimal(digits: &[u8]) -> Option<Node> {
    let s = std::str::from_utf8(digits).ok()?.trim();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty()
        || body.len() > MAX_DECIMAL_DIGITS
        || !body.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if let Ok(v) = s.parse::<i64>() {
        return Some(Node::Int(v));
    }
    let trimmed = body.trim_start_matches('0');
    let body = if trimmed.is_empty() { "0" } else { trimmed };
    Some(Node::BigInt(
        if neg {
            format!("-{body}")
        } else {
            body.to_string()
        }
        .into(),
    ))
}

/// A little-endian two's complement integer (`LONG1`/`LONG4`): `Int` when it
/// fits i64, else its decimal digits.
pub fn long_from_le(b: &[u8]) -> Node {
    if b.is_empty() {
        return Node::Int(0);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    if b.len() <= 8 {
        let fill = if neg { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        return Node::Int(i64::from_le_bytes(a));
    }
    // Magnitude as little-endian u32 limbs.
    let mut mag: Vec<u8> = b.to_vec();
    if neg {
        // Two's complement negate: invert and add one.
        let mut carry = 1u16;
        for x in mag.iter_mut() {
            let v = (!*x) as u16 + carry;
            *x = v as u8;
            carry = v >> 8;
        }
    }
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    // Repeated division by 10^9 (at most 64 limbs: quadratic but tiny).
    let mut parts = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for l in limbs.iter_mut().rev() {
            let cur = (rem << 32) | *l as u64;
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        parts.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    match parts.split_last() {
        Some((first, rest)) => {
            s.push_str(&first.to_string());
            for p in rest.iter().rev() {
                s.push_str(&format!("{p:09}"));
            }
        }
        None => s.push('0'),
    }
    match s.parse::<i64>() {
        Ok(v) => Node::Int(v),
        Err(_) => Node::BigInt(s.into()),
    }
}

/// The bytes of a Python `repr` of a (Python 2) string: `'...'` or `"..."`
/// with backslash escapes.
fn unquote_repr(l: &[u8]) -> Option<Vec<u8>> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    if l.len() < 2 {
        return None;
    }
    let q = l[0];
    if (q != b'\'' && q != b'"') || l[l.len() - 1] != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'\\' | b'\'' | b'"' => out.push(e),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => {}
            b'x' => {
                let h = body.get(i..i + 2)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Some(out)
}

/// Python's `raw-unicode-escape` decoding: `\uXXXX` and `\UXXXXXXXX`
/// escapes; every other byte is a Latin-1 character.
fn raw_unicode_unescape(l: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        let c = l[i];
        if c == b'\\' && matches!(l.get(i + 1), Some(b'u' | b'U')) {
            // An odd run of backslashes escapes; raw-unicode-escape only
            // looks at the backslash right before the u.
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let h = l.get(i + 2..i + 2 + n)?;
            let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            i += 2 + n;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(b: &[u8]) -> R<Pickle> {
        parse(b, 0)
    }

    fn root(b: &[u8]) -> Node {
        let p = run(b).unwrap();
        p.node(p.root).clone()
    }

    #[test]
    fn scalars() {
        assert_eq!(root(b"K\x07."), Node::Int(7));
        assert_eq!(root(b"J\xff\xff\xff\xff."), Node::Int(-1));
        assert_eq!(root(b"M\x01\x02."), Node::Int(0x0201));
        assert_eq!(root(b"I00\n."), Node::Bool(false));
        assert_eq!(root(b"I-12\n."), Node::Int(-12));
        assert_eq!(root(b"L123L\n."), Node::Int(123));
        assert_eq!(
            root(b"L123456789012345678901234567890L\n."),
            Node::BigInt("123456789012345678901234567890".into())
        );
        assert_eq!(root(b"F1.5\n."), Node::Float(1.5));
        assert_eq!(root(b"G?\xf8\x00\x00\x00\x00\x00\x00."), Node::Float(1.5));
        assert_eq!(root(b"\x88."), Node::Bool(true));
        assert_eq!(root(b"N."), Node::None);
        assert_eq!(root(b"S'a\\nb'\n."), Node::Str("a\nb".into()));
        assert_eq!(root(b"Vcaf\\u00e9\n."), Node::Str("caf\u{e9}".into()));
        assert_eq!(root(b"\x8c\x02hi."), Node::Str("hi".into()));
        assert_eq!(root(b"C\x03abc."), Node::Bytes(3));
    }

    #[test]
    fn longs() {
        assert_eq!(long_from_le(&[]), Node::Int(0));
        assert_eq!(long_from_le(&[0xff]), Node::Int(-1));
        assert_eq!(long_from_le(&[0x00, 0x80]), Node::Int(-32768));
        // 2^64 = 0x1_0000_0000_0000_0000
        let mut b = vec![0u8; 8];
        b.push(1);
        assert_eq!(
            long_from_le(&b),
            Node::BigInt("18446744073709551616".into())
        );
        let neg: Vec<u8> = vec![0, 0, 0, 0, 0, 0, 0, 0, 0xff];
        assert_eq!(
            long_from_le(&neg),
            Node::BigInt("-18446744073709551616".into())
        );
        // The torch magic number, as torch writes it.
        let magic = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
        assert_eq!(
            long_from_le(&magic),
            Node::BigInt(format!("{}", 0x1950a86a20f9469cfc6cu128).into())
        );
    }

    #[test]
    fn memo_shares_nodes() {
        // [] PUT0 GET0 APPEND: a list that contains itself.
        let p = run(b"]q\x00h\x00a.").unwrap();
        assert_eq!(p.node(p.root), &Node::List(vec![p.root]));
    }

    #[test]
    fn refusals() {
        let e = run(b"cos\nsystem\n.").unwrap_err();
        assert_eq!(
            e.to_string(),
            "byte 0: GLOBAL: refused: 'os.system' is a code-execution primitive (nothing was run)"
        );
        let e = run(b"c__builtin__\neval\n.").unwrap_err();
        assert!(e.to_string().contains("builtins.eval"), "{e}");
        let e = run(b"\x8c\x02os\x8c\x06system\x93.").unwrap_err();
        assert!(e.to_string().contains("STACK_GLOBAL"), "{e}");
        let e = run(b"(S'x'\niposix\nsystem\n.").unwrap_err();
        assert!(e.to_string().contains("INST"), "{e}");
        assert_eq!(
            run(b"\xff").unwrap_err().to_string(),
            "byte 0: 0xff: unknown opcode"
        );
        assert_eq!(
            run(b"K\x01").unwrap_err().to_string(),
            "byte 2: STOP: the pickle ends without STOP"
        );
        assert_eq!(run(b"a.").unwrap_err().why, "stack underflow");
        assert_eq!(run(b"(a.").unwrap_err().why, "stack underflow");
        assert_eq!(run(b"e.").unwrap_err().why, "no MARK to pop to");
        assert_eq!(
            run(b"X\x00\x00\x00\x10ab").unwrap_err().to_string(),
            "byte 0: BINUNICODE: needs 268435456 bytes but the pickle ends 2 bytes later"
        );
        assert!(run(b"\x8d\x00\x00\x00\x00\x00\x00\x00\x10.").is_err());
        assert!(
            run(b"\x8b\x00\x00\x00\x40")
                .unwrap_err()
                .why
                .contains("limit")
        );
        assert!(
            run(b"\x95\xff\xff\xff\xff\xff\xff\xff\x0f.")
                .unwrap_err()
                .why
                .contains("frame")
        );
        assert!(run(b"h\x05.").unwrap_err().why.contains("never stored"));
        assert!(run(b"\x80\x06.").unwrap_err().why.contains("protocol"));
        let deep = [b'('; MAX_DEPTH + 1];
        assert!(run(&deep).unwrap_err().why.contains("nest"));
    }

    #[test]
    fn calls_are_recorded() {
        let p = run(b"ccollections\nOrderedDict\n)R\x8c\x01aK\x01s.").unwrap();
        let Node::Object(o) = p.node(p.root) else {
            panic!("not an object")
        };
        assert_eq!(o.op, CallOp::Reduce);
        assert_eq!(o.dict_items.len(), 1);
        let Node::Global(g) = p.node(o.callable) else {
            panic!("not a global")
        };
        assert_eq!(g.kind, Global::OrderedDict);
    }
}
