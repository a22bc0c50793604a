//! What global names mean: the allowlist, the refused code-execution
//! primitives, and torch's dtypes and storage classes.
//!
//! For: resolving a `module.name` from `GLOBAL`/`STACK_GLOBAL`/`INST` to a
//! [`Global`] (by name only: nothing is imported), deciding which names
//! refuse a file outright ([`is_refused`]), and the table of torch dtypes
//! with their element sizes and safetensors counterparts ([`TorchDtype`]).
//!
//! Not for: what a call means (`rebuild`) or decoding opcodes (`pickle`).

use crate::dtype::Dtype;

/// The globals gyrofs knows. Everything `torch.load(weights_only=True)`
/// accepts by default is here (see `mod.rs` for what each maps to), plus
/// `collections.defaultdict`, `builtins.frozenset` and
/// `copyreg._reconstructor` (which only name a class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    Counter,
    DefaultDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    RebuildDeviceTensorFromCpuTensor,
    /// `_rebuild_qtensor`, `_rebuild_sparse_tensor`, `_rebuild_nested_tensor`,
    /// `_rebuild_meta_tensor_no_storage`, `_rebuild_wrapper_subclass`,
    /// `_rebuild_device_tensor_from_numpy`: tensors gyrofs leaves out.
    RebuildUnsupported(&'static str),
    Parameter,
    /// `torch.Tensor`, `torch.FloatTensor`, ...
    TensorClass,
    /// `torch.FloatStorage`, ..., `torch.storage.UntypedStorage`.
    StorageClass(TorchDtype),
    TypedStorage,
    Dtype(TorchDtype),
    Size,
    Device,
    GetLayout,
    QScheme,
    CodecsEncode,
    Bytes,
    ByteArray,
    Set,
    FrozenSet,
    Complex,
    Reconstructor,
    /// Not allowlisted: a placeholder when called.
    Other,
}

impl Global {
    /// Resolve `module.name` (after Python 2 renames).
    pub fn of(module: &str, name: &str) -> Global {
        match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("collections", "Counter") => Global::Counter,
            ("collections", "defaultdict") => Global::DefaultDict,
            ("torch._utils", n) => match n {
                "_rebuild_tensor" => Global::RebuildTensor,
                "_rebuild_tensor_v2" => Global::RebuildTensorV2,
                "_rebuild_tensor_v3" => Global::RebuildTensorV3,
                "_rebuild_parameter" => Global::RebuildParameter,
                "_rebuild_parameter_with_state" => Global::RebuildParameterWithState,
                "_rebuild_device_tensor_from_cpu_tensor" => {
                    Global::RebuildDeviceTensorFromCpuTensor
                }
                "_rebuild_qtensor" => Global::RebuildUnsupported("a quantized tensor"),
                "_rebuild_sparse_tensor" => Global::RebuildUnsupported("a sparse tensor"),
                "_rebuild_nested_tensor" => Global::RebuildUnsupported("a nested tensor"),
                "_rebuild_meta_tensor_no_storage" => {
                    Global::RebuildUnsupported("a meta tensor (it has no data)")
                }
                "_rebuild_wrapper_subclass" => {
                    Global::RebuildUnsupported("a tensor subclass without storage")
                }
                "_rebuild_device_tensor_from_numpy" => {
                    Global::RebuildUnsupported("a tensor rebuilt from a numpy array")
                }
                _ => Global::Other,
            },
            // `torch.tensor` is the pre-1.8 name of `torch._tensor`.
            ("torch._tensor" | "torch.tensor", "_rebuild_from_type_v2") => {
                Global::RebuildFromTypeV2
            }
            ("torch.nn.parameter", "Parameter") => Global::Parameter,
            ("torch._tensor" | "torch.tensor", "Tensor") => Global::TensorClass,
            ("torch.storage", "UntypedStorage") => Global::StorageClass(TorchDtype::UInt8),
            ("torch.storage", "TypedStorage") => Global::TypedStorage,
            ("torch" | "torch.cuda", n) => {
                if n == "UntypedStorage" {
                    return Global::StorageClass(TorchDtype::UInt8);
                }
                if let Some(d) = TorchDtype::from_storage_class(n) {
                    return Global::StorageClass(d);
                }
                if module == "torch" {
                    if let Some(d) = TorchDtype::from_name(n) {
                        return Global::Dtype(d);
                    }
                    match n {
                        "Size" => return Global::Size,
                        "device" => return Global::Device,
                        "Tensor" => return Global::TensorClass,
                        "per_tensor_affine"
                        | "per_tensor_symmetric"
                        | "per_channel_affine"
                        | "per_channel_symmetric"
                        | "per_channel_affine_float_qparams" => return Global::QScheme,
                        _ => {}
                    }
                }
                if n.ends_with("Tensor") && n.len() > "Tensor".len() {
                    return Global::TensorClass;
                }
                Global::Other
            }
            ("torch.serialization", "_get_layout") => Global::GetLayout,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("builtins", "bytes") => Global::Bytes,
            ("builtins", "bytearray") => Global::ByteArray,
            ("builtins", "set") => Global::Set,
            ("builtins", "frozenset") => Global::FrozenSet,
            ("builtins", "complex") => Global::Complex,
            ("copyreg", "_reconstructor") => Global::Reconstructor,
            _ => Global::Other,
        }
    }
}

/// Modules whose globals only serve to run code, files or processes. A
/// pickle that names one (by `GLOBAL`, `STACK_GLOBAL` or `INST`) is refused
/// outright: no checkpoint needs them, and an attack should be loud.
const REFUSED_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "sys",
    "subprocess",
    "_posixsubprocess",
    "pty",
    "shutil",
    "socket",
    "ctypes",
    "importlib",
    "runpy",
    "code",
    "codeop",
    "pickle",
    "_pickle",
    "marshal",
    "webbrowser",
    "multiprocessing",
    "signal",
    "types",
    "commands",
    "popen2",
    "asyncio",
    "threading",
    "_thread",
    "pdb",
    "timeit",
    "torch.hub",
];

/// `builtins` functions that evaluate, import, open or reach attributes.
const REFUSED_BUILTINS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
    "apply",
    "exit",
    "quit",
    "help",
    "memoryview",
];

/// `operator` functions that call methods or reach attributes by name.
const REFUSED_OPERATOR: &[&str] = &["attrgetter", "methodcaller", "call"];

/// Is `module.name` a code-execution primitive that gyrofs refuses to even
/// name? (Nothing is ever called either way; this makes attacks loud.)
pub fn is_refused(module: &str, name: &str) -> bool {
    let in_module =
        |m: &str| module == m || module.strip_prefix(m).is_some_and(|r| r.starts_with('.'));
    REFUSED_MODULES.iter().any(|m| in_module(m))
        || (module == "builtins" && REFUSED_BUILTINS.contains(&name))
        || (module == "operator" && REFUSED_OPERATOR.contains(&name))
        || (module == "torch" && (name == "load" || name == "hub"))
        || (module == "numpy" && name == "load")
}

/// Python 2 module and name renames (the subset of `_compat_pickle` that a
/// checkpoint can meet).
pub fn py2_rename(module: &str, name: &str) -> (String, String) {
    match (module, name) {
        ("__builtin__", "unicode") => ("builtins".into(), "str".into()),
        ("__builtin__", "long") => ("builtins".into(), "int".into()),
        ("__builtin__", "xrange") => ("builtins".into(), "range".into()),
        ("__builtin__", n) => ("builtins".into(), n.into()),
        ("copy_reg", n) => ("copyreg".into(), n.into()),
        (m, n) => (m.into(), n.into()),
    }
}

/// The dtypes torch can name, with their element sizes and safetensors
/// counterparts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TorchDtype {
    Float64,
    Float32,
    Float16,
    BFloat16,
    Int64,
    Int32,
    Int16,
    Int8,
    UInt8,
    Bool,
    UInt16,
    UInt32,
    UInt64,
    Float8E4M3Fn,
    Float8E5M2,
    Float8E4M3Fnuz,
    Float8E5M2Fnuz,
    Float8E8M0Fnu,
    Complex128,
    Complex64,
    Complex32,
    BComplex32,
    QInt8,
    QUInt8,
    QInt32,
    QUInt4x2,
    QUInt2x4,
    Float4E2M1FnX2,
    Bits8,
    Bits16,
    Bits1x8,
    Bits2x4,
    Bits4x2,
    /// `torch.uint1` ... `torch.uint7`, `torch.int1` ... `torch.int7`.
    SubByte,
}

/// (dtype, torch name, element size in bytes, safetensors dtype).
const TORCH_DTYPES: &[(TorchDtype, &str, u64, Option<Dtype>)] = &[
    (TorchDtype::Float64, "float64", 8, Some(Dtype::F64)),
    (TorchDtype::Float32, "float32", 4, Some(Dtype::F32)),
    (TorchDtype::Float16, "float16", 2, Some(Dtype::F16)),
    (TorchDtype::BFloat16, "bfloat16", 2, Some(Dtype::BF16)),
    (TorchDtype::Int64, "int64", 8, Some(Dtype::I64)),
    (TorchDtype::Int32, "int32", 4, Some(Dtype::I32)),
    (TorchDtype::Int16, "int16", 2, Some(Dtype::I16)),
    (TorchDtype::Int8, "int8", 1, Some(Dtype::I8)),
    (TorchDtype::UInt8, "uint8", 1, Some(Dtype::U8)),
    (TorchDtype::Bool, "bool", 1, Some(Dtype::BOOL)),
    (TorchDtype::UInt16, "uint16", 2, Some(Dtype::U16)),
    (TorchDtype::UInt32, "uint32", 4, Some(Dtype::U32)),
    (TorchDtype::UInt64, "uint64", 8, Some(Dtype::U64)),
    (
        TorchDtype::Float8E4M3Fn,
        "float8_e4m3fn",
        1,
        Some(Dtype::F8_E4M3),
    ),
    (
        TorchDtype::Float8E5M2,
        "float8_e5m2",
        1,
        Some(Dtype::F8_E5M2),
    ),
    (
        TorchDtype::Float8E4M3Fnuz,
        "float8_e4m3fnuz",
        1,
        Some(Dtype::F8_E4M3FNUZ),
    ),
    (
        TorchDtype::Float8E5M2Fnuz,
        "float8_e5m2fnuz",
        1,
        Some(Dtype::F8_E5M2FNUZ),
    ),
    (
        TorchDtype::Float8E8M0Fnu,
        "float8_e8m0fnu",
        1,
        Some(Dtype::F8_E8M0),
    ),
    (TorchDtype::Complex128, "complex128", 16, None),
    (TorchDtype::Complex64, "complex64", 8, None),
    (TorchDtype::Complex32, "complex32", 4, None),
    (TorchDtype::BComplex32, "bcomplex32", 4, None),
    (TorchDtype::QInt8, "qint8", 1, None),
    (TorchDtype::QUInt8, "quint8", 1, None),
    (TorchDtype::QInt32, "qint32", 4, None),
    (TorchDtype::QUInt4x2, "quint4x2", 1, None),
    (TorchDtype::QUInt2x4, "quint2x4", 1, None),
    (TorchDtype::Float4E2M1FnX2, "float4_e2m1fn_x2", 1, None),
    (TorchDtype::Bits8, "bits8", 1, None),
    (TorchDtype::Bits16, "bits16", 2, None),
    (TorchDtype::Bits1x8, "bits1x8", 1, None),
    (TorchDtype::Bits2x4, "bits2x4", 1, None),
    (TorchDtype::Bits4x2, "bits4x2", 1, None),
];

/// Legacy typed storage classes (`torch.FloatStorage`, ...).
const STORAGE_CLASSES: &[(&str, TorchDtype)] = &[
    ("DoubleStorage", TorchDtype::Float64),
    ("FloatStorage", TorchDtype::Float32),
    ("HalfStorage", TorchDtype::Float16),
    ("BFloat16Storage", TorchDtype::BFloat16),
    ("LongStorage", TorchDtype::Int64),
    ("IntStorage", TorchDtype::Int32),
    ("ShortStorage", TorchDtype::Int16),
    ("CharStorage", TorchDtype::Int8),
    ("ByteStorage", TorchDtype::UInt8),
    ("BoolStorage", TorchDtype::Bool),
    ("ComplexDoubleStorage", TorchDtype::Complex128),
    ("ComplexFloatStorage", TorchDtype::Complex64),
    ("QInt8Storage", TorchDtype::QInt8),
    ("QInt32Storage", TorchDtype::QInt32),
    ("QUInt8Storage", TorchDtype::QUInt8),
    ("QUInt4x2Storage", TorchDtype::QUInt4x2),
    ("QUInt2x4Storage", TorchDtype::QUInt2x4),
];

impl TorchDtype {
    /// From the attribute name in `torch.<name>` (canonical names and the
    /// aliases `float`, `double`, `half`, `long`, `int`, `short`, `cfloat`,
    /// `cdouble`, `chalf`).
    pub fn from_name(name: &str) -> Option<TorchDtype> {
        let canonical = match name {
            "float" => "float32",
            "double" => "float64",
            "half" => "float16",
            "long" => "int64",
            "int" => "int32",
            "short" => "int16",
            "cfloat" => "complex64",
            "cdouble" => "complex128",
            "chalf" => "complex32",
            n => n,
        };
        if let Some(&(d, ..)) = TORCH_DTYPES.iter().find(|e| e.1 == canonical) {
            return Some(d);
        }
        let sub = |p: &str| {
            canonical
                .strip_prefix(p)
                .is_some_and(|b| matches!(b, "1" | "2" | "3" | "4" | "5" | "6" | "7"))
        };
        (sub("uint") || sub("int")).then_some(TorchDtype::SubByte)
    }

    pub fn from_storage_class(name: &str) -> Option<TorchDtype> {
        STORAGE_CLASSES.iter().find(|e| e.0 == name).map(|e| e.1)
    }

    fn entry(self) -> Option<&'static (TorchDtype, &'static str, u64, Option<Dtype>)> {
        TORCH_DTYPES.iter().find(|e| e.0 == self)
    }

    /// `torch.float32`, ...
    pub fn name(self) -> String {
        match self.entry() {
            Some(e) => format!("torch.{}", e.1),
            None => "torch.uintN/intN (sub-byte)".to_string(),
        }
    }

    /// Bytes per element as torch stores it (1 for the packed sub-byte types).
    pub fn size(self) -> u64 {
        self.entry().map_or(1, |e| e.2)
    }

    /// The safetensors dtype holding the same bytes, if there is one.
    pub fn safetensors(self) -> Option<Dtype> {
        self.entry().and_then(|e| e.3)
    }
}
