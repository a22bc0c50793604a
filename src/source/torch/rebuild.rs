//! From a decoded pickle to tensors, storages, JSON values and notes.
//!
//! For: interpreting the calls the unpickler recorded (the allowlisted
//! rebuild functions, `OrderedDict`, `torch.Size`, ...; see `mod.rs` for the
//! list), parsing persistent ids into storage references, validating every
//! tensor view against its storage, and walking the object graph from the
//! root into paths and JSON by the rules documented in `mod.rs`.
//!
//! Not for: opcodes (`pickle`), archives (`zip`, `legacy`).
//!
//! Interpretation is memoized per object, so a shared object is interpreted
//! once; the walk visits shared objects once per path, within budgets (values
//! visited, bytes of text copied) that stop a small pickle from expanding
//! exponentially through shared references. Nothing recurses without a depth
//! bound.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{Map, Number, Value};

use super::pickle::{
    Global, GlobalRef, Id, IdMap, MAX_DEPTH, Node, Object, Pickle, PickleError, TorchDtype, esc,
};
use super::{MAX_DIMS, MAX_PATH_LEN, Storage, TensorRef, TorchError};
use crate::dtype::Dtype;

/// Where a storage's bytes lie in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub offset: u64,
    pub len: u64,
}

pub type Payloads = HashMap<String, Payload>;

/// Longest storage key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Most notes one pickle's walk keeps; the rest are counted in one last
/// note (a hostile file could otherwise make one per value).
pub const MAX_NOTES: usize = 256;

/// A persistent id, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pid {
    Storage {
        /// The node of the `PersId`.
        node: Id,
        offset: usize,
        key: String,
        dtype: TorchDtype,
        numel: u64,
        /// Legacy storage views: (view key, offset, numel) in elements.
        view: Option<(String, u64, u64)>,
    },
    /// `("module", cls, source_file, source)`: a pickled container class
    /// (legacy files of whole modules).
    Module { node: Id },
}

impl Pid {
    pub fn key(&self) -> Option<&str> {
        match self {
            Pid::Storage { key, .. } => Some(key),
            Pid::Module { .. } => None,
        }
    }

    fn node(&self) -> Id {
        match self {
            Pid::Storage { node, .. } | Pid::Module { node } => *node,
        }
    }

    /// Bytes the id declares: numel x element size.
    fn nbytes(&self) -> Option<u64> {
        match self {
            Pid::Storage { dtype, numel, .. } => numel.checked_mul(dtype.size()),
            Pid::Module { .. } => Some(0),
        }
    }
}

/// Every persistent id of the pickle (reachable or not, as torch loads them
/// all), in node order.
pub fn persistent_ids(p: &Pickle, what: &str) -> Result<Vec<Pid>, TorchError> {
    let mut out = Vec::new();
    for (i, n) in p.nodes.iter().enumerate() {
        let Node::PersId { pid, offset } = n else {
            continue;
        };
        let node = i as Id;
        let err = |why: String| TorchError::Pickle {
            what: what.to_string(),
            err: PickleError {
                offset: *offset,
                op: "BINPERSID".to_string(),
                why,
            },
        };
        let Node::Tuple(items) = p.node(*pid) else {
            return Err(err(format!(
                "persistent id is {}, not a ('storage', ...) tuple",
                p.node(*pid).kind()
            )));
        };
        // Storage keys are short ("0", "1", ... or a pointer's digits); a
        // bound keeps a shared huge string from being copied per id.
        let key_text = |id: Id| match p.node(id) {
            Node::Str(s) if s.len() <= MAX_KEY_LEN => Some(s.to_string()),
            Node::Int(v) => Some(v.to_string()),
            _ => None,
        };
        let tag = items.first().and_then(|&t| match p.node(t) {
            Node::Str(s) => Some(&**s),
            _ => None,
        });
        match tag {
            Some("storage") => {}
            Some("module") => {
                out.push(Pid::Module { node });
                continue;
            }
            _ => {
                return Err(err(
                    "persistent id is not a ('storage', ...) tuple".to_string()
                ));
            }
        }
        if items.len() != 5 && items.len() != 6 {
            return Err(err(format!(
                "storage persistent id has {} items, expected 5 (zip) or 6 (legacy)",
                items.len()
            )));
        }
        let dtype = match p.node(items[1]) {
            Node::Global(g) => match g.kind {
                Global::StorageClass(d) => d,
                _ => {
                    return Err(err(format!("'{}' is not a storage class", g.full_name())));
                }
            },
            other => {
                return Err(err(format!(
                    "storage type is {}, not a storage class",
                    other.kind()
                )));
            }
        };
        let Some(key) = key_text(items[2]) else {
            return Err(err(format!(
                "storage key is {}, not a string of at most {MAX_KEY_LEN} bytes",
                p.node(items[2]).kind()
            )));
        };
        let numel = match p.node(items[4]) {
            Node::Int(v) if *v >= 0 => *v as u64,
            other => {
                return Err(err(format!(
                    "storage '{}': element count is {}, not a non-negative int",
                    esc(&key),
                    other.kind()
                )));
            }
        };
        let view = match items.get(5).map(|&v| p.node(v)) {
            None | Some(Node::None) => None,
            Some(Node::Tuple(v)) if v.len() == 3 => {
                let (Some(vk), Node::Int(o), Node::Int(n)) =
                    (key_text(v[0]), p.node(v[1]), p.node(v[2]))
                else {
                    return Err(err("storage view is not (key, offset, size)".to_string()));
                };
                if *o < 0 || *n < 0 {
                    return Err(err("storage view has a negative offset or size".to_string()));
                }
                Some((vk, *o as u64, *n as u64))
            }
            Some(_) => return Err(err("storage view is not (key, offset, size)".to_string())),
        };
        out.push(Pid::Storage {
            node,
            offset: *offset,
            key,
            dtype,
            numel,
            view,
        });
    }
    Ok(out)
}

/// What [`build`] produces.
pub struct Output {
    pub storages: Vec<Storage>,
    pub tensors: Vec<TensorRef>,
    pub values: Value,
    pub notes: Vec<String>,
}

/// Storage keys in order: decimal integers numerically, then the rest.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.trim_start_matches('0').len())
    };
    match (num(a), num(b)) {
        // Same digits after leading zeros compare by length then bytes.
        (Some(la), Some(lb)) => la
            .cmp(&lb)
            .then_with(|| a.trim_start_matches('0').cmp(b.trim_start_matches('0')))
            .then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Validate the storages, then walk the object graph from the root.
/// `payloads` must hold every key of `pids`.
pub fn build(
    p: &Pickle,
    what: &str,
    pids: &[Pid],
    payloads: &Payloads,
    pickle_len: usize,
) -> Result<Output, TorchError> {
    // Storages: every key, its first dtype, its payload; each id must fit.
    let mut keys: Vec<&str> = Vec::new();
    let mut first_dtype: HashMap<&str, TorchDtype> = HashMap::new();
    for pid in pids {
        let Pid::Storage {
            key, dtype, view, ..
        } = pid
        else {
            continue;
        };
        let payload = payloads
            .get(key.as_str())
            .ok_or_else(|| TorchError::Storage {
                key: esc(key),
                why: "has no data".to_string(),
            })?;
        let nbytes = pid.nbytes().ok_or_else(|| TorchError::Storage {
            key: esc(key),
            why: "element count overflows".to_string(),
        })?;
        if nbytes > payload.len {
            return Err(TorchError::Storage {
                key: esc(key),
                why: format!(
                    "the pickle declares {nbytes} bytes ({}) but the data holds {}",
                    dtype.name(),
                    payload.len
                ),
            });
        }
        if let Some((vk, o, n)) = view {
            let end = o.checked_add(*n).and_then(|e| e.checked_mul(dtype.size()));
            if end.is_none_or(|e| e > nbytes) {
                return Err(TorchError::Storage {
                    key: esc(key),
                    why: format!(
                        "view '{}' ({o}+{n} elements) lies outside the storage",
                        esc(vk)
                    ),
                });
            }
        }
        if !first_dtype.contains_key(key.as_str()) {
            first_dtype.insert(key, *dtype);
            keys.push(key);
        }
    }
    keys.sort_by(|a, b| key_order(a, b));
    let mut storages = Vec::with_capacity(keys.len());
    let mut storage_index = HashMap::with_capacity(keys.len());
    for k in keys {
        let payload = payloads[k];
        storage_index.insert(k.to_string(), storages.len());
        storages.push(Storage {
            key: k.to_string(),
            dtype: first_dtype[k].safetensors().unwrap_or(Dtype::U8),
            offset: payload.offset,
            len: payload.len,
        });
    }

    let mut w = Walker {
        p,
        what,
        pids: pids.iter().map(|pid| (pid.node(), pid)).collect(),
        storage_index,
        resolved: IdMap::default(),
        tensors: Vec::new(),
        tensor_paths: HashSet::new(),
        path_suffix: HashMap::new(),
        notes: Vec::new(),
        notes_dropped: 0,
        visits: 0,
        max_visits: 2 * p.nodes.len() as u64 + 1_000_000,
        text: 0,
        max_text: 2 * pickle_len as u64 + (64 << 20),
        on_path: IdMap::default(),
    };
    let values = w.walk(p.root, "", 0, None)?;
    let mut notes = w.notes;
    if w.notes_dropped > 0 {
        notes.push(format!(
            "... and {} more notes like these, left out",
            w.notes_dropped
        ));
    }
    Ok(Output {
        storages,
        tensors: w.tensors,
        values,
        notes,
    })
}

/// A tensor as its rebuild call describes it.
#[derive(Debug, Clone)]
struct TensorSpec {
    /// The `PersId` node of its storage.
    pid: Id,
    dtype: TorchDtype,
    offset: u64,
    shape: Vec<u64>,
    strides: Vec<u64>,
    requires_grad: bool,
    /// A tensor subclass (`_rebuild_from_type_v2` with a class not on the
    /// allowlist) read as a plain tensor.
    subclass: Option<String>,
}

/// What an object (or global, or persistent id) means.
#[derive(Debug, Clone)]
enum Resolved {
    Tensor(Rc<TensorSpec>),
    /// A tensor left out, and why.
    Omitted(String),
    /// A dict-like: its items.
    Dict(Vec<(Id, Id)>),
    /// A sequence: `torch.Size`, `set(...)`.
    Seq(Vec<Id>),
    Json(Value),
    /// An object of a class not on the allowlist (its name).
    Opaque(String),
}

struct Walker<'a> {
    p: &'a Pickle,
    what: &'a str,
    pids: IdMap<&'a Pid>,
    storage_index: HashMap<String, usize>,
    resolved: IdMap<Rc<Resolved>>,
    tensors: Vec<TensorRef>,
    tensor_paths: HashSet<String>,
    /// The next `#n` suffix to try for a tensor path taken before.
    path_suffix: HashMap<String, u64>,
    /// At most [`MAX_NOTES`].
    notes: Vec<String>,
    /// Notes past [`MAX_NOTES`].
    notes_dropped: u64,
    visits: u64,
    max_visits: u64,
    /// Bytes of text (strings, keys, paths) copied into the output.
    text: u64,
    max_text: u64,
    /// Containers on the current path, with their paths (cycle detection).
    on_path: IdMap<String>,
}

type R<T> = Result<T, TorchError>;

/// A dict key as Python's `==` (and `hash`) compares it, for the keys a
/// pickle can hold: ints, bools and integral floats are one number (`1 ==
/// 1.0 == True`), strings by text, tuples and frozensets by their items,
/// globals by name; anything else (NaN, bytes, whose content is not kept,
/// objects) only equals the same pickled object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PyKey {
    None,
    Int(i128),
    /// An integer beyond 128 bits, by its decimal digits.
    BigInt(String),
    /// A float that is not integral, by its bits.
    Float(u64),
    Str(String),
    Global(String, String),
    Tuple(Vec<PyKey>),
    /// Sorted, without repeats.
    FrozenSet(Vec<PyKey>),
    Object(Id),
}

/// `name#n` for the first `n` from `next[name]` (2 at first) that `taken`
/// says is free; `next[name]` moves past it. Finding names for k repeats of
/// one name costs O(k) in all, not O(k^2).
fn free_name(name: &str, next: &mut HashMap<String, u64>, taken: impl Fn(&str) -> bool) -> String {
    let n = next.entry(name.to_string()).or_insert(2);
    loop {
        let candidate = format!("{name}#{n}");
        *n += 1;
        if !taken(&candidate) {
            return candidate;
        }
    }
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_string()
    } else {
        format!("{path}.{seg}")
    }
}

fn float_json(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None => Value::from(if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "inf"
        } else {
            "-inf"
        }),
    }
}

fn tagged(tag: &str, v: impl Into<Value>) -> Value {
    let mut m = Map::new();
    m.insert(tag.to_string(), v.into());
    Value::Object(m)
}

impl Walker<'_> {
    fn node(&self, id: Id) -> &Node {
        self.p.node(id)
    }

    fn rebuild_err<T>(&self, o: &Object, g: &GlobalRef, why: impl Into<String>) -> R<T> {
        Err(TorchError::Rebuild {
            what: self.what.to_string(),
            offset: o.offset as u64,
            global: g.full_name(),
            why: why.into(),
        })
    }

    fn charge_text(&mut self, n: usize, path: &str) -> R<()> {
        self.text += n as u64;
        if self.text > self.max_text {
            return Err(TorchError::Value {
                path: esc(path),
                why: format!(
                    "the object tree expands to more than {} bytes of text through shared references",
                    self.max_text
                ),
            });
        }
        Ok(())
    }

    fn child_path(&mut self, path: &str, seg: &str) -> R<String> {
        let p = join(path, seg);
        if p.len() > MAX_PATH_LEN {
            return Err(TorchError::Value {
                path: esc(path),
                why: format!("path longer than {MAX_PATH_LEN} bytes"),
            });
        }
        self.charge_text(p.len(), path)?;
        Ok(p)
    }

    /// The items of a tuple or list argument.
    fn seq(&self, id: Id) -> Option<&[Id]> {
        match self.node(id) {
            Node::Tuple(v) | Node::List(v) => Some(v),
            _ => None,
        }
    }

    fn describe(&mut self, id: Id, depth: usize) -> String {
        match self.node(id) {
            Node::Object(_) => match self.resolve(id, depth + 1).as_deref() {
                Ok(Resolved::Opaque(name)) => {
                    format!("an object of non-allowlisted class '{name}'")
                }
                _ => "an object".to_string(),
            },
            Node::Global(g) => format!("the global '{}'", g.full_name()),
            n => n.kind().to_string(),
        }
    }

    fn int_arg(&mut self, o: &Object, g: &GlobalRef, id: Id, what: &str, depth: usize) -> R<u64> {
        match self.node(id) {
            Node::Int(v) if *v >= 0 => Ok(*v as u64),
            Node::Int(v) => {
                let v = *v;
                self.rebuild_err(o, g, format!("{what} is negative ({v})"))
            }
            _ => {
                let d = self.describe(id, depth);
                self.rebuild_err(o, g, format!("{what} is {d}, not an int"))
            }
        }
    }

    /// A shape or stride: a tuple/list of ints, or `torch.Size((...))`.
    fn ints_arg(
        &mut self,
        o: &Object,
        g: &GlobalRef,
        id: Id,
        what: &str,
        depth: usize,
    ) -> R<Vec<u64>> {
        let mut id = id;
        if let Node::Object(inner) = self.node(id)
            && let Node::Global(ig) = self.node(inner.callable)
            && ig.kind == Global::Size
            && let Some(&[first]) = self.seq(inner.args)
        {
            id = first;
        }
        let Some(n) = self.seq(id).map(<[Id]>::len) else {
            let d = self.describe(id, depth);
            return self.rebuild_err(o, g, format!("{what} is {d}, not a tuple of ints"));
        };
        if n > MAX_DIMS {
            return self.rebuild_err(
                o,
                g,
                format!("{what} has {n} dimensions (at most {MAX_DIMS})"),
            );
        }
        let items = self.seq(id).map(<[Id]>::to_vec).unwrap_or_default();
        items
            .iter()
            .map(|&i| self.int_arg(o, g, i, what, depth))
            .collect()
    }

    fn bool_arg(&mut self, o: &Object, g: &GlobalRef, id: Id, what: &str, depth: usize) -> R<bool> {
        match self.node(id) {
            Node::Bool(b) => Ok(*b),
            Node::Int(v) => Ok(*v != 0),
            _ => {
                let d = self.describe(id, depth);
                self.rebuild_err(o, g, format!("{what} is {d}, not a bool"))
            }
        }
    }

    /// The tensor (or left-out tensor) argument `id` of `g`.
    fn tensor_arg(&mut self, o: &Object, g: &GlobalRef, id: Id, depth: usize) -> R<Resolved> {
        if matches!(self.node(id), Node::Object(_)) {
            let r = self.resolve(id, depth + 1)?;
            match &*r {
                Resolved::Tensor(_) | Resolved::Omitted(_) => return Ok((*r).clone()),
                Resolved::Opaque(name) => {
                    let name = name.clone();
                    return self.rebuild_err(
                        o,
                        g,
                        format!(
                            "the tensor argument is an object of non-allowlisted class '{name}'"
                        ),
                    );
                }
                _ => {}
            }
        }
        let d = self.describe(id, depth);
        self.rebuild_err(o, g, format!("the tensor argument is {d}, not a tensor"))
    }

    /// Interpret object `id` (memoized).
    fn resolve(&mut self, id: Id, depth: usize) -> R<Rc<Resolved>> {
        if let Some(r) = self.resolved.get(&id) {
            return Ok(r.clone());
        }
        if depth > MAX_DEPTH {
            return Err(TorchError::Pickle {
                what: self.what.to_string(),
                err: PickleError {
                    offset: match self.node(id) {
                        Node::Object(o) => o.offset,
                        _ => 0,
                    },
                    op: "REDUCE".to_string(),
                    why: format!("calls nest deeper than {MAX_DEPTH}"),
                },
            });
        }
        let r = Rc::new(self.interpret(id, depth)?);
        self.resolved.insert(id, r.clone());
        Ok(r)
    }

    /// What object `id` means: the call it records, interpreted.
    fn interpret(&mut self, id: Id, depth: usize) -> R<Resolved> {
        let p = self.p;
        let Node::Object(o) = p.node(id) else {
            return Ok(Resolved::Opaque("?".to_string()));
        };
        let Node::Global(g) = p.node(o.callable) else {
            return Ok(Resolved::Opaque(format!(
                "<result of calling {}>",
                self.describe(o.callable, depth)
            )));
        };
        self.call(o, g, o.args, depth)
    }

    /// `g(*args)` for object `o` (`args` is `o.args`, or the inner argument
    /// tuple of `_rebuild_from_type_v2`): charge the arguments, then hand
    /// them to the interpretation of `g`'s family.
    fn call(&mut self, o: &Object, g: &GlobalRef, args: Id, depth: usize) -> R<Resolved> {
        // The argument tuple may be shared by many objects: charged.
        self.spend(o, g, self.seq(args).map_or(0, <[Id]>::len))?;
        let a: Vec<Id> = self.seq(args).map(<[Id]>::to_vec).unwrap_or_default();
        let is_tuple = self.seq(args).is_some();
        let opaque = || Ok(Resolved::Opaque(g.full_name()));
        match g.kind {
            Global::OrderedDict | Global::Counter | Global::DefaultDict => self.dict_like(o, g, &a),
            Global::Set | Global::FrozenSet => self.set_like(o, g, &a),
            Global::RebuildTensor | Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                self.rebuild_tensor(o, g, &a, is_tuple, depth)
            }
            Global::RebuildParameter
            | Global::RebuildParameterWithState
            | Global::RebuildDeviceTensorFromCpuTensor => self.wrapped_tensor(o, g, &a, depth),
            Global::Parameter => self.parameter(o, g, &a, depth),
            Global::RebuildFromTypeV2 => self.rebuild_from_type_v2(o, g, &a, depth),
            Global::RebuildUnsupported(why) => Ok(Resolved::Omitted(why.to_string())),
            Global::Size => self.size(o, g, &a),
            Global::Device => self.device(o, g, &a),
            Global::GetLayout => match a.first().map(|&f| self.node(f)) {
                Some(Node::Str(s)) if s.len() <= 64 => {
                    Ok(Resolved::Json(Value::from(s.to_string())))
                }
                _ => self.rebuild_err(o, g, "argument is not a layout name"),
            },
            Global::CodecsEncode | Global::Bytes | Global::ByteArray => {
                self.bytes_len(o, g, &a, depth)
            }
            Global::Complex => self.complex(o, g, &a),
            Global::Reconstructor => match a.first().map(|&f| self.node(f)) {
                // copyreg._reconstructor(cls, base, state): an instance of cls.
                Some(Node::Global(cls)) => Ok(Resolved::Opaque(cls.full_name())),
                _ => opaque(),
            },
            Global::TensorClass
            | Global::StorageClass(_)
            | Global::TypedStorage
            | Global::Dtype(_)
            | Global::QScheme
            | Global::Other => opaque(),
        }
    }

    /// `OrderedDict`, `Counter`, `defaultdict`: the items of the argument
    /// (`OrderedDict([(k, v)])`, `Counter({...})`; a `defaultdict`'s first
    /// argument is its factory), then those added by `SETITEMS`.
    fn dict_like(&mut self, o: &Object, g: &GlobalRef, a: &[Id]) -> R<Resolved> {
        let first = if g.kind == Global::DefaultDict {
            None
        } else {
            a.first().copied()
        };
        let mut items = Vec::new();
        match first.map(|f| self.node(f)) {
            Some(Node::Dict(d)) => items.extend(d.iter().copied()),
            Some(Node::List(l) | Node::Tuple(l)) => {
                for &pair in l {
                    match self.seq(pair) {
                        Some(&[k, v]) => items.push((k, v)),
                        _ => {
                            return self.rebuild_err(
                                o,
                                g,
                                "argument is not a list of (key, value) pairs",
                            );
                        }
                    }
                }
            }
            _ => {}
        }
        items.extend(o.dict_items.iter().copied());
        self.spend(o, g, items.len())?;
        Ok(Resolved::Dict(items))
    }

    /// `set`, `frozenset`: the items of the argument (`set([...])`), then
    /// those added by `APPENDS`/`ADDITEMS`.
    fn set_like(&mut self, o: &Object, g: &GlobalRef, a: &[Id]) -> R<Resolved> {
        let mut items = Vec::new();
        if let Some(Node::List(l) | Node::Tuple(l) | Node::Set { items: l, .. }) =
            a.first().map(|&f| self.node(f))
        {
            items.extend(l.iter().copied())
        }
        items.extend(o.list_items.iter().copied());
        self.spend(o, g, items.len())?;
        Ok(Resolved::Seq(items))
    }

    /// `_rebuild_parameter(data, requires_grad, hooks)`,
    /// `_rebuild_parameter_with_state(data, requires_grad, hooks, state)`,
    /// `_rebuild_device_tensor_from_cpu_tensor(data, dtype, device,
    /// requires_grad)`: the tensor `data`, with its `requires_grad`.
    fn wrapped_tensor(&mut self, o: &Object, g: &GlobalRef, a: &[Id], depth: usize) -> R<Resolved> {
        // Number of arguments, position of requires_grad.
        let (n, rg_at) = match g.kind {
            Global::RebuildParameter => (3, 1),
            Global::RebuildParameterWithState => (4, 1),
            _ => (4, 3),
        };
        if a.len() != n {
            return self.rebuild_err(o, g, format!("takes {n} arguments, got {}", a.len()));
        }
        let rg = self.bool_arg(o, g, a[rg_at], "requires_grad", depth)?;
        let t = self.tensor_arg(o, g, a[0], depth)?;
        Ok(with_requires_grad(t, rg))
    }

    /// `Parameter(data=None, requires_grad=True)` (via `NEWOBJ`): the
    /// tensor `data`, with its `requires_grad`.
    fn parameter(&mut self, o: &Object, g: &GlobalRef, a: &[Id], depth: usize) -> R<Resolved> {
        let Some(&data) = a.first() else {
            return Ok(Resolved::Omitted("an empty nn.Parameter".to_string()));
        };
        let rg = match a.get(1) {
            Some(&x) => self.bool_arg(o, g, x, "requires_grad", depth)?,
            None => true,
        };
        let t = self.tensor_arg(o, g, data, depth)?;
        Ok(with_requires_grad(t, rg))
    }

    /// `_rebuild_from_type_v2(func, type, args, state)`: the tensor
    /// `func(*args)` builds, marked with `type` when that is a subclass.
    fn rebuild_from_type_v2(
        &mut self,
        o: &Object,
        g: &GlobalRef,
        a: &[Id],
        depth: usize,
    ) -> R<Resolved> {
        if a.len() != 4 {
            return self.rebuild_err(o, g, format!("takes 4 arguments, got {}", a.len()));
        }
        let Node::Global(func) = self.node(a[0]) else {
            let d = self.describe(a[0], depth);
            return self.rebuild_err(o, g, format!("the function is {d}, not a global"));
        };
        let func = func.clone();
        let inner = self.call(o, &func, a[2], depth + 1)?;
        let subclass = match self.node(a[1]) {
            Node::Global(t) if matches!(t.kind, Global::TensorClass | Global::Parameter) => None,
            Node::Global(t) => Some(t.full_name()),
            _ => Some("?".to_string()),
        };
        match inner {
            Resolved::Tensor(t) if subclass.is_some() => {
                let mut t = (*t).clone();
                t.subclass = subclass;
                Ok(Resolved::Tensor(Rc::new(t)))
            }
            Resolved::Tensor(_) | Resolved::Omitted(_) => Ok(inner),
            Resolved::Opaque(name) => self.rebuild_err(
                o,
                g,
                format!("the tensor would be built by non-allowlisted '{name}'"),
            ),
            _ => self.rebuild_err(
                o,
                g,
                format!("'{}' does not build a tensor", func.full_name()),
            ),
        }
    }

    /// `torch.Size((d0, d1, ...))`: its dimensions.
    fn size(&mut self, o: &Object, g: &GlobalRef, a: &[Id]) -> R<Resolved> {
        match a.first().and_then(|&f| self.seq(f)) {
            Some(items) => {
                let items = items.to_vec();
                self.spend(o, g, items.len())?;
                Ok(Resolved::Seq(items))
            }
            None if a.is_empty() => Ok(Resolved::Seq(Vec::new())),
            None => self.rebuild_err(o, g, "argument is not a tuple"),
        }
    }

    /// `torch.device(type[, index])`: the string `type[:index]`.
    fn device(&mut self, o: &Object, g: &GlobalRef, a: &[Id]) -> R<Resolved> {
        // Short names only: the JSON is copied once per path.
        let s = |id: Id| match self.node(id) {
            Node::Str(s) if s.len() <= 64 => Some(s.to_string()),
            Node::Int(v) => Some(v.to_string()),
            _ => None,
        };
        let parts: Option<Vec<String>> = if (1..=2).contains(&a.len()) {
            a.iter().map(|&x| s(x)).collect()
        } else {
            None
        };
        match parts {
            Some(p) => Ok(Resolved::Json(Value::from(p.join(":")))),
            None => self.rebuild_err(o, g, "arguments are not (type[, index])"),
        }
    }

    /// `_codecs.encode`, `bytes`, `bytearray`: a bytes value, as its length
    /// (`{"gyro_bytes": n}`).
    fn bytes_len(&mut self, o: &Object, g: &GlobalRef, a: &[Id], depth: usize) -> R<Resolved> {
        // bytes written by protocols 0-2: _codecs.encode(text, 'latin1'),
        // bytes() for b""; bytearray(bytes) / bytearray(text, encoding);
        // bytes(n) / bytearray(n).
        let len = match a.first().map(|&f| self.node(f)) {
            None => 0,
            Some(Node::Bytes(n)) => *n,
            Some(Node::Str(s)) => {
                let latin1 = a.get(1).is_some_and(|&e| {
                    matches!(self.node(e), Node::Str(e)
                        if ["latin1", "latin-1", "iso-8859-1"]
                            .iter()
                            .any(|l| e.eq_ignore_ascii_case(l)))
                });
                // Counting characters scans the text: charged, as the text
                // may be shared by many objects.
                let (n, len) = (s.len(), if latin1 { s.chars().count() } else { s.len() });
                self.spend_text(o, g, n)?;
                len as u64
            }
            Some(Node::Int(n)) if *n >= 0 => *n as u64,
            // bytearray(_codecs.encode(text, 'latin1')), protocol 2.
            Some(Node::Object(_)) => {
                let inner = self.resolve(a[0], depth + 1)?;
                match &*inner {
                    Resolved::Json(v) => match v.get("gyro_bytes").and_then(Value::as_u64) {
                        Some(n) => n,
                        None => return self.rebuild_err(o, g, "argument is not bytes or text"),
                    },
                    _ => return self.rebuild_err(o, g, "argument is not bytes or text"),
                }
            }
            _ => return self.rebuild_err(o, g, "argument is not bytes or text"),
        };
        Ok(Resolved::Json(tagged("gyro_bytes", len)))
    }

    /// `complex(real=0, imag=0)`: `{"gyro_complex": [real, imag]}`.
    fn complex(&mut self, o: &Object, g: &GlobalRef, a: &[Id]) -> R<Resolved> {
        let num = |id: Option<&Id>| match id.map(|&x| self.node(x)) {
            None => Some(0.0),
            Some(Node::Float(f)) => Some(*f),
            Some(Node::Int(i)) => Some(*i as f64),
            _ => None,
        };
        match (num(a.first()), num(a.get(1))) {
            (Some(re), Some(im)) if a.len() <= 2 => Ok(Resolved::Json(tagged(
                "gyro_complex",
                Value::Array(vec![float_json(re), float_json(im)]),
            ))),
            _ => self.rebuild_err(o, g, "arguments are not (real, imag) numbers"),
        }
    }

    /// `_rebuild_tensor(storage, storage_offset, size, stride)` and its
    /// v2 (`requires_grad, backward_hooks[, metadata]`) and v3 (`..., dtype[,
    /// metadata]`) forms: a tensor view of a storage.
    fn rebuild_tensor(
        &mut self,
        o: &Object,
        g: &GlobalRef,
        a: &[Id],
        is_tuple: bool,
        depth: usize,
    ) -> R<Resolved> {
        let (min, max) = match g.kind {
            Global::RebuildTensor => (4, 4),
            Global::RebuildTensorV2 => (6, 7),
            _ => (7, 8),
        };
        if !is_tuple || a.len() < min || a.len() > max {
            let range = if min == max {
                min.to_string()
            } else {
                format!("{min} or {max}")
            };
            return self.rebuild_err(o, g, format!("takes {range} arguments, got {}", a.len()));
        }
        let pid_node = a[0];
        let storage_dtype = match self.pids.get(&pid_node) {
            Some(Pid::Storage { dtype, .. }) => *dtype,
            _ => {
                let d = self.describe(pid_node, depth);
                return self.rebuild_err(
                    o,
                    g,
                    format!("the storage argument is {d}, not a storage"),
                );
            }
        };
        let offset = self.int_arg(o, g, a[1], "storage_offset", depth)?;
        let shape = self.ints_arg(o, g, a[2], "size", depth)?;
        let strides = self.ints_arg(o, g, a[3], "stride", depth)?;
        if shape.len() != strides.len() {
            return self.rebuild_err(
                o,
                g,
                format!(
                    "size has {} dimensions but stride has {}",
                    shape.len(),
                    strides.len()
                ),
            );
        }
        let requires_grad = if a.len() > 4 {
            self.bool_arg(o, g, a[4], "requires_grad", depth)?
        } else {
            false
        };
        let (dtype, metadata) = match g.kind {
            Global::RebuildTensorV3 => {
                let d = match self.node(a[6]) {
                    Node::Global(dg) => match dg.kind {
                        Global::Dtype(d) => d,
                        _ => {
                            return self.rebuild_err(
                                o,
                                g,
                                format!("dtype is '{}', not a dtype", dg.full_name()),
                            );
                        }
                    },
                    n => {
                        let k = n.kind();
                        return self.rebuild_err(o, g, format!("dtype is {k}, not a dtype"));
                    }
                };
                (d, a.get(7).copied())
            }
            _ => (storage_dtype, a.get(6).copied()),
        };
        if let Some(m) = metadata
            && self.truthy_dict(m, depth)?
        {
            return Ok(Resolved::Omitted(
                "a tensor with its conj or neg bit set (a lazy view whose bytes are not its values)".to_string(),
            ));
        }
        if dtype.safetensors().is_none() {
            return Ok(Resolved::Omitted(format!(
                "a {} tensor (no safetensors dtype holds it)",
                dtype.name()
            )));
        }
        Ok(Resolved::Tensor(Rc::new(TensorSpec {
            pid: pid_node,
            dtype,
            offset,
            shape,
            strides,
            requires_grad,
            subclass: None,
        })))
    }

    /// Does the tensor metadata dict `{"conj": bool, "neg": bool}` set a bit?
    /// Anything else (or more than a few items: torch writes at most two)
    /// counts as set, which leaves the tensor out.
    fn truthy_dict(&mut self, id: Id, depth: usize) -> R<bool> {
        let items: Vec<(Id, Id)> = match self.node(id) {
            Node::None => return Ok(false),
            Node::Dict(d) if d.len() <= 4 => d.clone(),
            Node::Object(_) => match &*self.resolve(id, depth + 1)? {
                Resolved::Dict(d) if d.len() <= 4 => d.clone(),
                _ => return Ok(true),
            },
            _ => return Ok(true),
        };
        // a repeated key's last value counts, as in the dict torch makes
        let items = self.python_dict(&items, "")?;
        Ok(items.iter().any(|&(_, v, _)| {
            !matches!(self.node(v), Node::Bool(false) | Node::Int(0) | Node::None)
        }))
    }

    /// Count `n` bytes of text scanned while interpreting object `o`
    /// against the walk's text budget.
    fn spend_text(&mut self, o: &Object, g: &GlobalRef, n: usize) -> R<()> {
        self.text += n as u64;
        if self.text > self.max_text {
            return self.rebuild_err(
                o,
                g,
                format!(
                    "the object tree expands to more than {} bytes of text through shared references",
                    self.max_text
                ),
            );
        }
        Ok(())
    }

    /// Count `n` items copied while interpreting object `o` against the
    /// walk's budget (a shared argument list could otherwise be copied once
    /// per object that names it).
    fn spend(&mut self, o: &Object, g: &GlobalRef, n: usize) -> R<()> {
        self.visits += n as u64;
        if self.visits > self.max_visits {
            return self.rebuild_err(
                o,
                g,
                format!(
                    "the object tree expands to more than {} values through shared references",
                    self.max_visits
                ),
            );
        }
        Ok(())
    }

    fn visit(&mut self, path: &str, depth: usize) -> R<()> {
        self.visits += 1;
        if self.visits > self.max_visits {
            return Err(TorchError::Value {
                path: esc(path),
                why: format!(
                    "the object tree expands to more than {} values through shared references",
                    self.max_visits
                ),
            });
        }
        if depth > MAX_DEPTH {
            return Err(TorchError::Value {
                path: esc(path),
                why: format!("values nest deeper than {MAX_DEPTH}"),
            });
        }
        Ok(())
    }

    /// The JSON of node `id` at `path`; tensors found are recorded. Inside
    /// an opaque object (`opaque` = its class and path) a tensor is an error.
    fn walk(&mut self, id: Id, path: &str, depth: usize, opaque: Option<(&str, &str)>) -> R<Value> {
        if let Some(v) = self.leaf(id, path, depth)? {
            return Ok(v);
        }
        self.visit(path, depth)?;
        let p = self.p;
        match p.node(id) {
            Node::BigInt(s) => Ok(match s.parse::<u64>() {
                Ok(v) => Value::from(v),
                Err(_) => {
                    self.note(format!(
                        "'{}': integer beyond 64 bits written as a string",
                        esc(path)
                    ));
                    self.charge_text(s.len(), path)?;
                    Value::from(s.to_string())
                }
            }),
            // Leaves, handled above.
            Node::None
            | Node::Bool(_)
            | Node::Int(_)
            | Node::Float(_)
            | Node::Str(_)
            | Node::Bytes(_)
            | Node::Global(_) => Ok(Value::Null),
            Node::List(items) | Node::Tuple(items) | Node::Set { items, .. } => {
                self.container(id, path, |w| w.array(items, path, depth, opaque))
            }
            Node::Dict(pairs) => self.container(id, path, |w| w.dict(pairs, path, depth, opaque)),
            Node::PersId { .. } => Ok(
                match self.pids.get(&id).and_then(|p| p.key()).map(str::to_string) {
                    Some(key) => {
                        self.charge_text(key.len(), path)?;
                        tagged("gyro_storage", key)
                    }
                    _ => tagged(
                        "gyro_opaque",
                        "persistent id 'module' (a pickled module class)",
                    ),
                },
            ),
            Node::Object(o) => {
                let r = self.resolve(id, depth)?;
                match &*r {
                    Resolved::Tensor(t) => {
                        if let Some((class, opath)) = opaque {
                            return Err(TorchError::Tensor {
                                path: esc(path),
                                why: format!(
                                    "held by '{}', an object of non-allowlisted class '{class}'; \
                                     refusing rather than leaving it out (gyrofs does not run pickled classes)",
                                    esc(opath)
                                ),
                            });
                        }
                        self.emit_tensor(t, path)
                    }
                    Resolved::Omitted(why) => {
                        self.note(format!("'{}': left out: {why}", esc(path)));
                        Ok(tagged("gyro_omitted", why.clone()))
                    }
                    Resolved::Dict(pairs) => {
                        self.container(id, path, |w| w.dict(pairs, path, depth, opaque))
                    }
                    Resolved::Seq(items) => {
                        self.container(id, path, |w| w.array(items, path, depth, opaque))
                    }
                    Resolved::Json(v) => Ok(v.clone()),
                    Resolved::Opaque(class) => {
                        self.note(format!(
                            "'{}': object of non-allowlisted class '{class}' kept as a placeholder (nothing was called)",
                            esc(path)
                        ));
                        let class = class.clone();
                        self.container(id, path, |w| w.opaque(o, &class, path, depth))
                    }
                }
            }
        }
    }

    /// Walk container `id` with cycle detection.
    fn container(&mut self, id: Id, path: &str, f: impl FnOnce(&mut Self) -> R<Value>) -> R<Value> {
        if let Some(at) = self.on_path.get(&id) {
            let at = at.clone();
            self.note(format!(
                "'{}': contains itself (a cycle back to '{}'), cut",
                esc(path),
                esc(&at)
            ));
            return Ok(tagged("gyro_cycle", at));
        }
        self.on_path.insert(id, path.to_string());
        let r = f(self);
        self.on_path.remove(&id);
        r
    }

    /// The JSON of a leaf that needs no path (everything but containers,
    /// objects, persistent ids and big integers), so that long lists of
    /// numbers cost no path text.
    fn leaf(&mut self, id: Id, path: &str, depth: usize) -> R<Option<Value>> {
        let p = self.p;
        let v = match p.node(id) {
            Node::None => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(v) => Value::from(*v),
            Node::Float(f) => float_json(*f),
            Node::Str(s) => {
                self.charge_text(s.len(), path)?;
                Value::from(s.to_string())
            }
            Node::Bytes(n) => tagged("gyro_bytes", *n),
            Node::Global(g) => match g.kind {
                Global::Dtype(d) => Value::from(d.name()),
                _ => tagged("gyro_global", g.full_name()),
            },
            _ => return Ok(None),
        };
        self.visit(path, depth)?;
        Ok(Some(v))
    }

    fn array(
        &mut self,
        items: &[Id],
        path: &str,
        depth: usize,
        opaque: Option<(&str, &str)>,
    ) -> R<Value> {
        let mut out = Vec::with_capacity(items.len().min(1 << 16));
        for (i, &item) in items.iter().enumerate() {
            if let Some(v) = self.leaf(item, path, depth + 1)? {
                out.push(v);
                continue;
            }
            let cp = self.child_path(path, &i.to_string())?;
            out.push(self.walk(item, &cp, depth + 1, opaque)?);
        }
        Ok(Value::Array(out))
    }

    fn dict(
        &mut self,
        pairs: &[(Id, Id)],
        path: &str,
        depth: usize,
        opaque: Option<(&str, &str)>,
    ) -> R<Value> {
        let mut out = Map::new();
        let mut non_string = 0usize;
        // The next `#n` to try for a key text taken before.
        let mut suffix: HashMap<String, u64> = HashMap::new();
        for (k, v, count) in self.python_dict(pairs, path)? {
            let (mut key, plain) = self.key_text(k, path)?;
            if !plain {
                non_string += 1;
            }
            if count > 1 {
                self.note(format!(
                    "'{}': key '{}' occurs {count} times; the last value is used, as torch.load does",
                    esc(path),
                    esc(&key)
                ));
            }
            if out.contains_key(&key) {
                let renamed = free_name(&key, &mut suffix, |n| out.contains_key(n));
                self.note(format!(
                    "'{}': key '{}' is another key than an earlier one that prints the same \
                     (such as 1 and \"1\"); this one is named '{}'",
                    esc(path),
                    esc(&key),
                    esc(&renamed)
                ));
                key = renamed;
            }
            self.charge_text(key.len(), path)?;
            let value = match self.leaf(v, path, depth + 1)? {
                Some(value) => value,
                None => {
                    let cp = self.child_path(path, &key)?;
                    self.walk(v, &cp, depth + 1, opaque)?
                }
            };
            out.insert(key, value);
        }
        if non_string > 0 {
            self.note(format!(
                "'{}': {non_string} dict keys that are neither strings nor integers written as JSON text",
                esc(path)
            ));
        }
        Ok(Value::Object(out))
    }

    /// `pairs` as Python's dict holds them: a key equal to an earlier one
    /// (`==`, as [`PyKey`] compares) replaces its value and keeps its place
    /// and key object. Each key with its last value and how many times the
    /// key occurs.
    fn python_dict(&mut self, pairs: &[(Id, Id)], path: &str) -> R<Vec<(Id, Id, u64)>> {
        let mut out: Vec<(Id, Id, u64)> = Vec::with_capacity(pairs.len());
        let mut at: HashMap<PyKey, usize> = HashMap::with_capacity(pairs.len());
        for &(k, v) in pairs {
            match at.entry(self.py_key(k, path, 0)?) {
                Entry::Occupied(e) => {
                    let o = &mut out[*e.get()];
                    o.1 = v;
                    o.2 += 1;
                }
                Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push((k, v, 1));
                }
            }
        }
        Ok(out)
    }

    /// Dict key `k` as Python compares keys.
    fn py_key(&mut self, k: Id, path: &str, depth: usize) -> R<PyKey> {
        let p = self.p;
        Ok(match p.node(k) {
            Node::None => PyKey::None,
            Node::Bool(b) => PyKey::Int(i128::from(*b)),
            Node::Int(v) => PyKey::Int(i128::from(*v)),
            Node::BigInt(s) => match s.parse::<i128>() {
                Ok(v) => PyKey::Int(v),
                Err(_) => PyKey::BigInt(s.to_string()),
            },
            Node::Float(f) if f.is_nan() => PyKey::Object(k),
            // 1.0 == 1 and -0.0 == 0 (every integral float below 2^127
            // converts exactly)
            Node::Float(f) if f.fract() == 0.0 && f.abs() < 2f64.powi(127) => {
                PyKey::Int(*f as i128)
            }
            Node::Float(f) => PyKey::Float(f.to_bits()),
            Node::Str(s) => PyKey::Str(s.to_string()),
            Node::Global(g) => PyKey::Global(g.module.clone(), g.name.clone()),
            Node::Tuple(items)
            | Node::Set {
                items,
                frozen: true,
            } if depth < 16 => {
                let mut keys = Vec::with_capacity(items.len());
                for &i in items {
                    self.visit(path, depth)?;
                    keys.push(self.py_key(i, path, depth + 1)?);
                }
                match p.node(k) {
                    Node::Tuple(_) => PyKey::Tuple(keys),
                    _ => {
                        keys.sort();
                        keys.dedup();
                        PyKey::FrozenSet(keys)
                    }
                }
            }
            _ => PyKey::Object(k),
        })
    }

    /// The text of a dict key, and whether it was a string or an integer.
    fn key_text(&mut self, k: Id, path: &str) -> R<(String, bool)> {
        match self.node(k) {
            Node::Str(s) => Ok((s.to_string(), true)),
            // Integer keys (optimizer state ids, ...) are their decimal text
            // by the documented rule; only other kinds of keys earn a note.
            Node::Int(v) => Ok((v.to_string(), true)),
            Node::BigInt(s) => Ok((s.to_string(), true)),
            _ => {
                let v = self.key_json(k, path, 0)?;
                Ok((serde_json::to_string(&v).unwrap_or_default(), false))
            }
        }
    }

    /// The JSON of a key that is neither a string nor an int: scalars and
    /// tuples of them as values are; anything else by its kind.
    fn key_json(&mut self, k: Id, path: &str, depth: usize) -> R<Value> {
        self.visit(path, depth)?;
        let p = self.p;
        Ok(match p.node(k) {
            Node::None => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(v) => Value::from(*v),
            Node::BigInt(s) => Value::from(s.to_string()),
            Node::Float(f) => float_json(*f),
            Node::Str(s) => {
                self.charge_text(s.len(), path)?;
                Value::from(s.to_string())
            }
            Node::Bytes(n) => tagged("gyro_bytes", *n),
            Node::Tuple(items) | Node::Set { items, .. } if depth < 16 => {
                let mut out = Vec::new();
                for &i in items {
                    out.push(self.key_json(i, path, depth + 1)?);
                }
                Value::Array(out)
            }
            Node::Global(g) => match g.kind {
                Global::Dtype(d) => Value::from(d.name()),
                _ => tagged("gyro_global", g.full_name()),
            },
            n => Value::from(format!("<{}>", n.kind())),
        })
    }

    fn opaque(&mut self, o: &Object, class: &str, path: &str, depth: usize) -> R<Value> {
        let mut m = Map::new();
        m.insert("gyro_opaque".to_string(), Value::from(class));
        let ctx = Some((class, path));
        let args_empty = self.seq(o.args).is_some_and(<[Id]>::is_empty);
        let is_reconstructor =
            matches!(self.node(o.callable), Node::Global(g) if g.kind == Global::Reconstructor);
        if !args_empty && !is_reconstructor {
            let cp = self.child_path(path, "args")?;
            m.insert("args".to_string(), self.walk(o.args, &cp, depth + 1, ctx)?);
        }
        if let Some(kw) = o.kwargs
            && !matches!(self.node(kw), Node::Dict(d) if d.is_empty())
        {
            let cp = self.child_path(path, "kwargs")?;
            m.insert("kwargs".to_string(), self.walk(kw, &cp, depth + 1, ctx)?);
        }
        if let Some(st) = o.state
            && !matches!(self.node(st), Node::None)
        {
            let cp = self.child_path(path, "state")?;
            m.insert("state".to_string(), self.walk(st, &cp, depth + 1, ctx)?);
        }
        if !o.dict_items.is_empty() {
            let cp = self.child_path(path, "items")?;
            let v = self.dict(&o.dict_items, &cp, depth + 1, ctx)?;
            m.insert("items".to_string(), v);
        }
        if !o.list_items.is_empty() {
            let cp = self.child_path(path, "list")?;
            let v = self.array(&o.list_items, &cp, depth + 1, ctx)?;
            m.insert("list".to_string(), v);
        }
        Ok(Value::Object(m))
    }

    /// Add a note, or count it past [`MAX_NOTES`].
    fn note(&mut self, n: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(n);
        } else {
            self.notes_dropped += 1;
        }
    }

    /// Validate a tensor against its storage and record it at `path`.
    fn emit_tensor(&mut self, t: &TensorSpec, path: &str) -> R<Value> {
        let mut path = if path.is_empty() {
            "tensor".to_string()
        } else {
            path.to_string()
        };
        if self.tensor_paths.contains(&path) {
            let taken = &self.tensor_paths;
            let renamed = free_name(&path, &mut self.path_suffix, |n| taken.contains(n));
            self.note(format!(
                "'{}': another tensor has this path; this one is named '{}'",
                esc(&path),
                esc(&renamed)
            ));
            path = renamed;
        }
        let Some(Pid::Storage {
            key,
            dtype: sdtype,
            numel: snumel,
            view,
            ..
        }) = self.pids.get(&t.pid)
        else {
            return Err(TorchError::Tensor {
                path: esc(&path),
                why: "its storage is not a storage".to_string(),
            });
        };
        let terr = |why: String| TorchError::Tensor {
            path: esc(&path),
            why,
        };
        let elsize = t.dtype.size();
        // Bytes the tensor may address: its persistent id's (already checked
        // to lie within the payload), or a legacy view's sub-range.
        // (Checked in `build`: these products do not overflow.)
        let (base_bytes, avail_bytes) = match view {
            Some((_, o, n)) => (
                o.saturating_mul(sdtype.size()),
                n.saturating_mul(sdtype.size()),
            ),
            None => (0, snumel.saturating_mul(sdtype.size())),
        };
        if base_bytes % elsize != 0 {
            return Err(terr(format!(
                "storage view offset of {base_bytes} bytes is not a multiple of the {elsize}-byte element"
            )));
        }
        let storage_numel = avail_bytes / elsize;
        // torch's own limit: a tensor's bytes fit an int64.
        let numel = crate::dtype::numel(&t.shape);
        if numel
            .and_then(|n| n.checked_mul(elsize))
            .is_none_or(|b| b > i64::MAX as u64)
        {
            return Err(terr(format!(
                "shape {} holds more than 2^63 bytes",
                crate::error::ShapeDisplay(&t.shape)
            )));
        }
        if numel == Some(0) {
            // No bytes; only the start is checked, so that offsets computed
            // from it stay inside the storage.
            if t.offset > storage_numel {
                return Err(terr(format!(
                    "empty view starts at element {} but storage '{}' has {storage_numel}",
                    t.offset,
                    esc(key)
                )));
            }
        } else {
            let mut last = Some(t.offset);
            for (&d, &s) in t.shape.iter().zip(&t.strides) {
                last = last.and_then(|l| (d - 1).checked_mul(s).and_then(|x| l.checked_add(x)));
            }
            let need = last.and_then(|l| l.checked_add(1));
            if need.is_none_or(|n| n > storage_numel) {
                let need = need.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
                return Err(terr(format!(
                    "view needs {need} elements but storage '{}' has {storage_numel}",
                    esc(key)
                )));
            }
        }
        let storage_offset = base_bytes / elsize + t.offset; // both within the storage
        let Some(&storage) = self.storage_index.get(key) else {
            return Err(terr(format!("storage '{}' is missing", esc(key))));
        };
        let Some(dtype) = t.dtype.safetensors() else {
            return Err(terr(format!("{} has no safetensors dtype", t.dtype.name())));
        };
        if let Some(class) = &t.subclass {
            self.note(format!(
                "'{}': tensor subclass '{class}' read as a plain tensor",
                esc(&path)
            ));
        }
        self.charge_text(path.len(), &path)?;
        self.tensor_paths.insert(path.clone());
        self.tensors.push(TensorRef {
            path: path.clone(),
            storage,
            dtype,
            storage_offset,
            shape: t.shape.clone(),
            strides: t.strides.clone(),
            requires_grad: t.requires_grad,
        });
        Ok(tagged("gyro_tensor", path))
    }
}

/// Tensor `r` with `requires_grad` set (anything else unchanged).
fn with_requires_grad(r: Resolved, requires_grad: bool) -> Resolved {
    match r {
        Resolved::Tensor(t) => {
            let mut t = (*t).clone();
            t.requires_grad = requires_grad;
            Resolved::Tensor(Rc::new(t))
        }
        other => other,
    }
}
