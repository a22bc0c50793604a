//! The catalog: everything gyrofs knows about a source after reading its
//! headers, and nothing it would have to read tensor data to know.
//!
//! Source readers (`source/`) produce it; views (`view/`) consume it. It holds
//! the mapped files ([`CatalogFile`]: the map, the file's own metadata, its
//! role), every tensor (stored dtype, logical dtype, shape, [`Extent`] in a
//! mapped file), quantization pairings, the parsed `config.json`, and the side
//! files (tokenizer, generation config, ...) that views pass through unchanged.
//!
//! Files and tensors are referred to by dense typed indices ([`FileId`],
//! [`TensorId`]), never by position in some parallel vector.

pub mod gguf;
pub mod packed;

use std::collections::{BTreeMap, HashMap};
use std::ops::Index;
use std::sync::Arc;

use serde_json::Value;

use self::gguf::GgufMetadata;
use self::packed::{Packed, PackedId};
use crate::dtype::Dtype;
use crate::error::ReadError;
use crate::quant::ggml::GgmlType;
use crate::store::{ReadEpochs, Reading, SourceFile, fault};

/// Index of a file in [`Catalog::files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// Index of a tensor in [`Catalog::tensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

impl FileId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl TensorId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A byte range `[offset, offset + len)` of a source file: where a tensor's
/// bytes are, and what a lossless segment or a kernel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub file: FileId,
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// `len` bytes starting `offset` bytes in.
    pub fn sub(&self, offset: u64, len: u64) -> Extent {
        debug_assert!(offset + len <= self.len);
        Extent {
            file: self.file,
            offset: self.offset + offset,
            len,
        }
    }
}

/// What a source file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// Holds tensor data (a safetensors shard, a GGUF file).
    Tensors,
    /// Passed through unchanged next to the model (config, tokenizer, ...).
    Side,
}

impl FileRole {
    pub fn name(self) -> &'static str {
        match self {
            FileRole::Tensors => "tensors",
            FileRole::Side => "side",
        }
    }
}

/// One mapped source file and what the catalog knows about it.
#[derive(Debug)]
pub struct CatalogFile {
    pub file: SourceFile,
    /// The file's own `__metadata__` (safetensors; empty otherwise).
    pub metadata: BTreeMap<String, String>,
    pub role: FileRole,
}

/// Every file of a source, indexed by [`FileId`]: tensor files first (in
/// source order), then side files. The read path gets its bytes here.
#[derive(Debug, Default)]
pub struct Files {
    files: Vec<CatalogFile>,
    /// The address range of each file's map, for SIGBUS recovery.
    ranges: Vec<fault::Range>,
    /// The reads in progress of the block cache behind remote files (none
    /// for a local source).
    epochs: Option<Arc<ReadEpochs>>,
}

impl Files {
    pub fn push(
        &mut self,
        file: SourceFile,
        metadata: BTreeMap<String, String>,
        role: FileRole,
    ) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.ranges.push(file.map_range());
        if self.epochs.is_none() {
            self.epochs = file.epochs().cloned();
        }
        self.files.push(CatalogFile {
            file,
            metadata,
            role,
        });
        id
    }

    /// Count a read of these files' bytes as in progress for as long as the
    /// guard lives, so that no cached remote byte it borrows is evicted
    /// under it (`store::epochs`); `None` for a local source.
    pub fn reading(&self) -> Option<Reading> {
        self.epochs.as_ref().map(|e| e.enter())
    }

    /// Run `f`, which reads the maps of these files, recovering from a
    /// SIGBUS in them (a file truncated under the map, `store::fault`): the
    /// file is then marked changed and `f`'s result replaced by
    /// [`ReadError::SourceChanged`].
    pub fn guarded<T>(&self, f: impl FnOnce() -> Result<T, ReadError>) -> Result<T, ReadError> {
        match fault::guarded(&self.ranges, f) {
            Ok(r) => r,
            Err(fault) => {
                let hit = self.files.iter().find(|f| f.file.maps(fault.addr));
                let file = hit.map_or_else(|| "?".to_string(), |f| f.file.name.clone());
                if let Some(f) = hit {
                    f.file.mark_changed();
                }
                Err(ReadError::SourceChanged { file })
            }
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every file with its id.
    pub fn iter(&self) -> impl Iterator<Item = (FileId, &CatalogFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// The files with `role`.
    pub fn with_role(&self, role: FileRole) -> impl Iterator<Item = (FileId, &CatalogFile)> {
        self.iter().filter(move |(_, f)| f.role == role)
    }

    /// The bytes of `e`, borrowed from the map after checking that the file
    /// is unchanged.
    pub fn bytes(&self, e: Extent) -> Result<&[u8], ReadError> {
        self[e.file].file.read_at(e.offset, e.len)
    }

    /// Copy the bytes of `e` into `dst` (`pread`; no map access).
    pub fn read_into(&self, e: Extent, dst: &mut [u8]) -> Result<(), ReadError> {
        self[e.file].file.read_into(e.offset, dst)
    }

    /// The whole of file `id`.
    pub fn whole(&self, id: FileId) -> Extent {
        Extent {
            file: id,
            offset: 0,
            len: self[id].file.len,
        }
    }
}

impl Index<FileId> for Files {
    type Output = CatalogFile;
    fn index(&self, id: FileId) -> &CatalogFile {
        &self.files[id.index()]
    }
}

/// Which kind of checkpoint the catalog was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// One or more `.safetensors` files (Hugging Face layout, sharded or not).
    Safetensors,
    /// A gpt-oss `original/` folder: safetensors plus `dtypes.json`.
    GptOssOriginal,
    /// A `.gguf` file or a split set `name-0000i-of-0000n.gguf`.
    Gguf,
    /// `torch.save` files (zip or legacy): a `.pt`/`.pth`/`.ckpt`, or a
    /// Hugging Face folder of `pytorch_model*.bin`.
    Pytorch,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Safetensors => "safetensors",
            SourceFormat::GptOssOriginal => "gpt-oss-original",
            SourceFormat::Gguf => "gguf",
            SourceFormat::Pytorch => "pytorch",
        }
    }
}

/// A tensor as stored in the source.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    /// Storage dtype (what the bytes are laid out as).
    pub dtype: Dtype,
    /// What the values mean: `FP4`, `UE8` (from `dtypes.json` or a detected
    /// MXFP4 pairing), a ggml type name, otherwise the storage dtype's name.
    pub logical: String,
    pub shape: Vec<u64>,
    /// Where its bytes are: exactly (the usual case), or, for a strided or
    /// big-endian view (`layout`), the part of its storage the view spans.
    pub extent: Extent,
    /// How a PyTorch tensor that is not a plain little-endian run of bytes
    /// lies in its storage; `None` for every other tensor.
    pub layout: Option<Box<Layout>>,
    pub quant: Option<Quant>,
    /// For GGUF tensors: the ggml type and the logical (numpy-order) shape.
    /// Quantized types are stored as U8 rows of whole blocks, so `shape` is
    /// then the logical shape with its last axis counted in bytes.
    pub ggml: Option<Ggml>,
    /// The packed weight this tensor is a part of (`packed`).
    pub packed: Option<PackedId>,
}

/// A strided view of a storage (PyTorch): element `[i, j, ...]` is element
/// `offset + i * strides[0] + j * strides[1] + ...` of the storage. The
/// tensor's bytes are its elements in row-major order, little-endian (what
/// `t.contiguous()` holds), gathered on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The whole storage.
    pub storage: Extent,
    /// In elements.
    pub offset: u64,
    /// In elements, one per axis.
    pub strides: Vec<u64>,
    /// The storage holds big-endian elements (swapped when gathered).
    pub big_endian: bool,
}

/// The ggml view of a GGUF tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ggml {
    pub ty: GgmlType,
    pub shape: Vec<u64>,
}

impl Tensor {
    /// A tensor whose logical dtype is its stored dtype, not paired.
    pub fn new(name: String, dtype: Dtype, shape: Vec<u64>, extent: Extent) -> Tensor {
        Tensor {
            logical: dtype.name().to_string(),
            name,
            dtype,
            shape,
            extent,
            layout: None,
            quant: None,
            ggml: None,
            packed: None,
        }
    }

    /// The shape of the values (a GGUF tensor's logical shape; otherwise the
    /// stored shape).
    pub fn logical_shape(&self) -> &[u64] {
        match &self.ggml {
            Some(g) => &g.shape,
            None => &self.shape,
        }
    }

    /// Bytes of the tensor's data (of its elements in row-major order).
    pub fn len(&self) -> u64 {
        match &self.layout {
            None => self.extent.len,
            Some(_) => crate::dtype::numel(&self.shape)
                .and_then(|n| self.dtype.bytes_for(n))
                .unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Membership in a quantization pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quant {
    pub scheme: QuantScheme,
    pub role: QuantRole,
    /// The other member.
    pub peer: TensorId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantScheme {
    /// OCP MX FP4 (E2M1) values, 32 per 16-byte block, with one E8M0 (UE8)
    /// scale byte per block: gpt-oss `*.blocks`/`*.scales`, HF `*_blocks`/`*_scales`.
    Mxfp4,
    /// F8_E4M3 `weight` [R, C] with an F32 `weight_scale_inv` of one value
    /// per `rows x cols` tile (DeepSeek-V3 / Kimi-K2: 128 x 128).
    Fp8Block { rows: u64, cols: u64 },
}

impl QuantScheme {
    pub fn name(self) -> &'static str {
        match self {
            QuantScheme::Mxfp4 => "mxfp4",
            QuantScheme::Fp8Block { .. } => "fp8_block",
        }
    }

    /// Values sharing one scale.
    pub fn values_per_block(self) -> u64 {
        match self {
            QuantScheme::Mxfp4 => 32,
            QuantScheme::Fp8Block { rows, cols } => rows * cols,
        }
    }

    /// How the member with `role` is called in headers and manifests.
    pub fn role_name(self, role: QuantRole) -> &'static str {
        match (self, role) {
            (QuantScheme::Mxfp4, QuantRole::Data) => "blocks",
            (QuantScheme::Mxfp4, QuantRole::Scales) => "scales",
            (QuantScheme::Fp8Block { .. }, QuantRole::Data) => "weight",
            (QuantScheme::Fp8Block { .. }, QuantRole::Scales) => "scale_inv",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantRole {
    /// The quantized values (MXFP4 blocks, FP8 weight).
    Data,
    /// The scales that go with them.
    Scales,
}

/// Everything known about a source.
#[derive(Debug)]
pub struct Catalog {
    pub format: SourceFormat,
    pub files: Files,
    /// Tensors in source order: by file, then by offset.
    pub tensors: Vec<Tensor>,
    /// The parsed `config.json`, if the source has one.
    pub config: Option<Value>,
    /// A GGUF source's key/value metadata (all of it, typed, in file order;
    /// of the first file of a split set).
    pub gguf_metadata: Option<GgufMetadata>,
    /// A PyTorch source's pickled objects other than tensors, as JSON (by
    /// file for a sharded source).
    pub pickle: Option<Value>,
    /// What the source reader left out or chose, one line each (they go
    /// into the manifest's notes).
    pub notes: Vec<String>,
    /// Weights a quantization library stored as several tensors (`packed`).
    pub packed: Vec<Packed>,
    /// Why the converted views cannot be built (a quantization format gyrofs
    /// does not dequantize), if so: one line.
    pub unconverted: Option<String>,
}

impl Catalog {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.index()]
    }

    /// Every tensor with its id, in source order.
    pub fn tensor_ids(&self) -> impl Iterator<Item = (TensorId, &Tensor)> {
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (TensorId(i as u32), t))
    }

    /// The tensor called `name`.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(|i| TensorId(i as u32))
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(Tensor::len).sum()
    }

    /// The packed weight `id`.
    pub fn packed(&self, id: PackedId) -> &Packed {
        &self.packed[id.index()]
    }

    /// The name of the source file holding `t`.
    pub fn file_name(&self, t: &Tensor) -> &str {
        &self.files[t.extent.file].file.name
    }
}

/// Tensor name -> id.
pub fn index_by_name(tensors: &[Tensor]) -> HashMap<&str, TensorId> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), TensorId(i as u32)))
        .collect()
}

/// Record a quantization pair on both members.
fn link_pair(tensors: &mut [Tensor], data: TensorId, scales: TensorId, scheme: QuantScheme) {
    for (me, peer, role) in [
        (data, scales, QuantRole::Data),
        (scales, data, QuantRole::Scales),
    ] {
        tensors[me.index()].quant = Some(Quant { scheme, role, peer });
    }
}

/// Find MXFP4 block/scale pairs and record them on both members.
///
/// A pair is `X.blocks` + `X.scales` (gpt-oss original) or `X_blocks` +
/// `X_scales` (Hugging Face), both one byte per element, with the blocks'
/// shape equal to the scales' shape plus a last axis of 16. Logical dtypes
/// become `FP4` and `UE8` unless `dtypes.json` already said otherwise.
pub fn pair_mxfp4(tensors: &mut [Tensor]) {
    let index = index_by_name(tensors);
    let mut pairs = Vec::new();
    for (bi, t) in tensors.iter().enumerate() {
        let stem_sep = t
            .name
            .strip_suffix("blocks")
            .filter(|s| s.ends_with('.') || s.ends_with('_'));
        let Some(stem) = stem_sep.filter(|_| t.layout.is_none()) else {
            continue;
        };
        let Some(&si) = index.get(format!("{stem}scales").as_str()) else {
            continue;
        };
        let s = &tensors[si.index()];
        let byte_sized = |d: Dtype| matches!(d, Dtype::U8 | Dtype::I8 | Dtype::F8_E8M0);
        let shapes_match = t.shape.len() == s.shape.len() + 1
            && t.shape.last() == Some(&16)
            && t.shape[..s.shape.len()] == s.shape[..];
        if byte_sized(t.dtype) && byte_sized(s.dtype) && shapes_match && s.layout.is_none() {
            pairs.push((TensorId(bi as u32), si));
        } else {
            log::warn!(
                "{} and {} look like an MXFP4 pair but their dtypes/shapes do not fit; left unpaired",
                t.name,
                s.name
            );
        }
    }
    for (b, s) in pairs {
        link_pair(tensors, b, s, QuantScheme::Mxfp4);
        for (id, logical) in [(b, "FP4"), (s, "UE8")] {
            let t = &mut tensors[id.index()];
            if t.logical == t.dtype.name() {
                t.logical = logical.into();
            }
        }
    }
}

/// Find block-scaled FP8 pairs: `X.weight` (F8_E4M3, [R, C]) with
/// `X.weight_scale_inv` (F32, [ceil(R/b0), ceil(C/b1)]), where `[b0, b1]` is
/// the config's `quantization_config.weight_block_size` (default [128, 128],
/// also for a block size of zero or of more than 2^64 values).
pub fn pair_fp8_block(tensors: &mut [Tensor], config: Option<&Value>) {
    let block = config
        .and_then(|c| c.get("quantization_config"))
        .and_then(|q| q.get("weight_block_size"))
        .and_then(Value::as_array)
        .and_then(|a| match a.as_slice() {
            [r, c] => Some((r.as_u64()?, c.as_u64()?)),
            _ => None,
        })
        // A block of 0 or of more than 2^64 values is no block size.
        .filter(|&(r, c)| r > 0 && c > 0 && r.checked_mul(c).is_some())
        .unwrap_or((128, 128));
    let index = index_by_name(tensors);
    let mut pairs = Vec::new();
    for (wi, w) in tensors.iter().enumerate() {
        if w.dtype != Dtype::F8_E4M3
            || w.shape.len() != 2
            || w.quant.is_some()
            || w.layout.is_some()
        {
            continue;
        }
        let Some(&si) = index.get(format!("{}_scale_inv", w.name).as_str()) else {
            continue;
        };
        let s = &tensors[si.index()];
        let grid = [w.shape[0].div_ceil(block.0), w.shape[1].div_ceil(block.1)];
        if s.dtype == Dtype::F32 && s.shape == grid && s.layout.is_none() {
            pairs.push((TensorId(wi as u32), si));
        } else {
            log::warn!(
                "{} has a {} with dtype {} shape {:?}, not F32 {:?} for {}x{} blocks; left unpaired",
                w.name,
                s.name,
                s.dtype,
                s.shape,
                grid,
                block.0,
                block.1
            );
        }
    }
    let scheme = QuantScheme::Fp8Block {
        rows: block.0,
        cols: block.1,
    };
    for (w, s) in pairs {
        link_pair(tensors, w, s, scheme);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dtype: Dtype, shape: &[u64]) -> Tensor {
        let extent = Extent {
            file: FileId(0),
            offset: 0,
            len: 0,
        };
        Tensor::new(name.into(), dtype, shape.to_vec(), extent)
    }

    fn peer(t: &Tensor) -> usize {
        t.quant.as_ref().unwrap().peer.index()
    }

    #[test]
    fn pairs_both_layouts() {
        let mut ts = vec![
            t("a.blocks", Dtype::U8, &[2, 4, 3, 16]),
            t("a.scales", Dtype::U8, &[2, 4, 3]),
            t("m.gate_up_proj_blocks", Dtype::U8, &[2, 8, 1, 16]),
            t("m.gate_up_proj_scales", Dtype::U8, &[2, 8, 1]),
            t("bad_blocks", Dtype::U8, &[2, 8, 1, 16]),
            t("bad_scales", Dtype::U8, &[2, 9, 1]),
            t("xblocks", Dtype::U8, &[1, 16]),
            t("xscales", Dtype::U8, &[1]),
        ];
        pair_mxfp4(&mut ts);
        assert_eq!(peer(&ts[0]), 1);
        assert_eq!(peer(&ts[1]), 0);
        assert_eq!(ts[1].quant.as_ref().unwrap().role, QuantRole::Scales);
        assert_eq!(ts[0].logical, "FP4");
        assert_eq!(ts[3].logical, "UE8");
        assert!(ts[2].quant.is_some());
        assert!(ts[4].quant.is_none() && ts[5].quant.is_none());
        assert!(ts[6].quant.is_none());
    }

    #[test]
    fn pairs_fp8_blocks() {
        let mut ts = vec![
            t("a.weight", Dtype::F8_E4M3, &[200, 300]),
            t("a.weight_scale_inv", Dtype::F32, &[2, 3]),
            t("b.weight", Dtype::F8_E4M3, &[200, 300]),
            t("b.weight_scale_inv", Dtype::F32, &[1, 3]),
        ];
        pair_fp8_block(&mut ts, None);
        assert_eq!(peer(&ts[0]), 1);
        assert_eq!(
            ts[0].quant.as_ref().unwrap().scheme,
            QuantScheme::Fp8Block {
                rows: 128,
                cols: 128
            }
        );
        assert!(ts[2].quant.is_none());
        let cfg = serde_json::json!({"quantization_config": {"weight_block_size": [100, 300]}});
        let mut ts2 = vec![
            t("b.weight", Dtype::F8_E4M3, &[200, 300]),
            t("b.weight_scale_inv", Dtype::F32, &[2, 1]),
        ];
        pair_fp8_block(&mut ts2, Some(&cfg));
        let q = ts2[1].quant.as_ref().unwrap();
        assert_eq!(q.scheme.role_name(q.role), "scale_inv");
    }

    #[test]
    fn fp8_block_size_whose_product_overflows_is_the_default() {
        // A 2^33 x 2^33 block makes a 1 x 1 grid for any weight; its value
        // count (values_per_block, in headers and the manifest) overflowed.
        let cfg = serde_json::json!({"quantization_config": {"weight_block_size": [1u64 << 33, 1u64 << 33]}});
        let mut ts = vec![
            t("a.weight", Dtype::F8_E4M3, &[2, 3]),
            t("a.weight_scale_inv", Dtype::F32, &[1, 1]),
        ];
        pair_fp8_block(&mut ts, Some(&cfg));
        let q = ts[0].quant.as_ref().unwrap();
        assert_eq!(
            q.scheme,
            QuantScheme::Fp8Block {
                rows: 128,
                cols: 128
            }
        );
        assert_eq!(q.scheme.values_per_block(), 128 * 128);
    }
}
