//! The per-expert views, `raw/experts/` and `bf16/experts/`: one file per
//! (layer, expert) of a mixture-of-experts model, the always-resident rest in
//! `base.safetensors`, and `registry.json`.
//!
//! An expert is found two ways, always checked against the model's expert
//! count E (config.json `num_local_experts` / `num_experts` /
//! `n_routed_experts`, or GGUF `<arch>.expert_count`), never by name alone:
//! - fused tensors holding every expert of a layer along axis 0 (`shape[0] ==
//!   E`): Hugging Face `...mlp.experts.gate_up_proj*` (no index after
//!   `experts`), gpt-oss original `block.N.mlp.mlp1_*` / `mlp2_*`, GGUF
//!   `blk.N.ffn_*_exps.*`. Expert e's tensor is the slice `[e]` (contiguous
//!   bytes), so it is served as a range of the source (raw) or of the
//!   computed BF16 tensor (bf16);
//! - per-expert tensors, `...experts.<e>....` (Mixtral
//!   `block_sparse_moe.experts.3.w1`, Qwen-MoE / DeepSeek
//!   `mlp.experts.3.gate_proj`), with `e < E`: whole tensors.
//!
//! Everything else (embeddings, attention, norms, routers, shared experts,
//! head) goes to `base.safetensors`. A model without an expert count, or
//! without expert tensors, has no `experts/` directory. File names sort by
//! layer, then expert: `layer_00_expert_000.safetensors`. Specified in
//! docs/VIEWS.md.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::catalog::{Catalog, FileId, SourceFormat};
use crate::dtype::numel;
use crate::json::to_pretty;
use crate::view::header::{Entry, safetensors_file, source_json};
use crate::view::{
    Builder, Context, FileRef, Segment, TensorInfo, Tensors, Tree, VFile, View, ViewId,
};

/// The kinds of files of an expert split (see [`FileRef::Of`]).
mod kind {
    /// `base.safetensors`.
    pub const BASE: u8 = 0;
    /// `layer_LL_expert_EEE.safetensors`, by expert file.
    pub const EXPERT: u8 = 1;
    /// `registry.json`.
    pub const REGISTRY: u8 = 2;
}

/// Build `experts/` in every view with tensors built so far (`raw/`, and
/// each converted view), for a mixture-of-experts model.
pub fn build(b: &mut Builder) {
    let Some(moe) = moe(b.catalog) else {
        return;
    };
    if moe.experts > MAX_EXPERTS {
        b.notes.push(format!(
            "experts/ is left out: the config says {} experts per layer, more than {MAX_EXPERTS}",
            moe.experts
        ));
        return;
    }
    let parents: Vec<ViewId> = b
        .views()
        .filter(|(_, v)| v.tensors().is_some())
        .map(|(id, _)| id)
        .collect();
    for parent in parents {
        let mut notes = Vec::new();
        let (view, dir) = {
            let (_, v) = b.views().find(|&(id, _)| id == parent).expect("listed");
            let tensors = v.tensors().expect("has tensors");
            let items = (0..tensors.count())
                .map(|i| tensors.info(b.catalog, i))
                .collect();
            let dir = format!("{}/experts", tensors.dir());
            (ExpertsView::new(parent, items, moe, &mut notes), dir)
        };
        b.notes.extend(notes);
        if let Some(x) = view {
            let id = b.next_id();
            x.add(b.tree, &dir, id);
            b.add(Box::new(x));
        }
    }
}

/// The mixture-of-experts shape of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moe {
    pub experts: u64,
    pub per_token: Option<u64>,
    pub layers: Option<u64>,
}

/// Most experts per layer a model may have for its `experts/` split (the
/// largest models have a few hundred); a config saying more is refused with
/// a note.
pub const MAX_EXPERTS: u64 = 1 << 16;

/// Most tensors all expert files of one split may hold together (every
/// slice of every fused tensor counts): a bound on the memory a hostile
/// config and a few bytes of header can make the split take.
pub const MAX_MEMBERS: u64 = 1 << 24;

/// The model's expert count (and experts per token, layer count) from its
/// config or GGUF metadata; `None` for a dense model.
pub fn moe(catalog: &Catalog) -> Option<Moe> {
    let first = |v: &Value, keys: &[&str]| keys.iter().find_map(|k| v.get(*k)?.as_u64());
    if catalog.format == SourceFormat::Gguf {
        let md = catalog.gguf_metadata.as_ref()?;
        let arch = md.text("general.architecture")?;
        let key = |k: &str| md.u64(&format!("{arch}.{k}"));
        return Some(Moe {
            experts: key("expert_count").filter(|&e| e > 0)?,
            per_token: key("expert_used_count"),
            layers: key("block_count"),
        });
    }
    let config = catalog.config.as_ref()?;
    // Multimodal configs nest the language model's.
    let c = config.get("text_config").unwrap_or(config);
    Some(Moe {
        experts: first(c, &["num_local_experts", "num_experts", "n_routed_experts"])
            .filter(|&e| e > 0)?,
        per_token: first(
            c,
            &["num_experts_per_tok", "experts_per_token", "moe_top_k"],
        ),
        layers: first(c, &["num_hidden_layers", "n_layer", "num_layers"]),
    })
}

/// Where a tensor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Base,
    /// All experts of `layer`, stacked on axis 0.
    Fused {
        layer: u64,
    },
    /// Expert `expert` of `layer`, whole.
    Expert {
        layer: u64,
        expert: u64,
    },
}

/// The layer number in a tensor name (`model.layers.3.`, `block.3.`, `blk.3.`, `h.3.`).
fn layer_of(parts: &[&str]) -> Option<u64> {
    parts
        .windows(2)
        .find(|w| matches!(w[0], "layers" | "layer" | "block" | "blk" | "h"))
        .and_then(|w| w[1].parse().ok())
}

/// Place tensor `name` of shape `shape` in a model with `experts` experts.
pub fn place(name: &str, shape: &[u64], experts: u64) -> Place {
    let parts: Vec<&str> = name.split('.').collect();
    let Some(layer) = layer_of(&parts) else {
        return Place::Base;
    };
    if let Some(i) = parts.iter().position(|p| *p == "experts")
        && let Some(next) = parts.get(i + 1)
    {
        return match next.parse::<u64>() {
            Ok(expert) if expert < experts => Place::Expert { layer, expert },
            Ok(_) => Place::Base,
            Err(_) if shape.first() == Some(&experts) => Place::Fused { layer },
            Err(_) => Place::Base,
        };
    }
    let fused_name =
        name.contains("_exps.") || name.contains(".mlp.mlp1_") || name.contains(".mlp.mlp2_");
    if fused_name && shape.first() == Some(&experts) {
        return Place::Fused { layer };
    }
    Place::Base
}

/// Bytes `[offset, offset + len)` of a concatenation of segments.
pub fn slice_segments(segments: &[Segment], offset: u64, len: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = 0;
    for s in segments {
        let n = s.len();
        let (a, b) = (offset.max(at), (offset + len).min(at + n));
        if a < b {
            out.push(s.slice(a - at, b - a));
        }
        at += n;
    }
    out
}

/// Expert `e`'s slice of a fused entry (the expert axis removed).
fn expert_slice(entry: Entry, e: u64, experts: u64) -> Entry {
    let per = entry.len() / experts;
    Entry {
        shape: entry.shape[1..].to_vec(),
        record: entry.record.expert_slice(e),
        data: slice_segments(&entry.data, e * per, per),
        ..entry
    }
}

/// One tensor of an expert file: item `item` of the parent view, whole or
/// (fused tensors) its slice `slice` along the expert axis.
#[derive(Debug, Clone, Copy)]
struct Member {
    item: u32,
    slice: Option<u32>,
}

/// The file of one (layer, expert).
#[derive(Debug)]
struct ExpertFile {
    layer: u64,
    expert: u64,
    members: Vec<Member>,
}

/// What one `<view>/experts/` directory holds.
#[derive(Debug)]
pub struct ExpertsView {
    /// The view whose tensors it splits.
    pub parent: ViewId,
    moe: Moe,
    base: Vec<Member>,
    files: Vec<ExpertFile>,
    layer_width: usize,
    expert_width: usize,
}

impl ExpertsView {
    /// Split the parent view's tensors `items`; `None` if no tensor is an
    /// expert's (no `experts/` directory then), or if the split would hold
    /// more than [`MAX_MEMBERS`] tensors (a note says so).
    pub fn new(
        parent: ViewId,
        items: Vec<TensorInfo>,
        moe: Moe,
        notes: &mut Vec<String>,
    ) -> Option<Self> {
        let members: u64 = items
            .iter()
            .map(|it| match place(it.name, &it.shape, moe.experts) {
                Place::Fused { .. } if sliceable(it, moe.experts) => moe.experts,
                _ => 1,
            })
            .sum();
        if members > MAX_MEMBERS {
            notes.push(format!(
                "experts/ is left out: splitting {} experts per layer would make {members} \
                 tensors of expert files, more than {MAX_MEMBERS}",
                moe.experts
            ));
            return None;
        }
        let mut base = Vec::new();
        let mut experts: BTreeMap<(u64, u64), Vec<(Member, u64)>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            let whole = Member {
                item: i as u32,
                slice: None,
            };
            let align = it.dtype.alignment();
            match place(it.name, &it.shape, moe.experts) {
                Place::Expert { layer, expert } => {
                    experts
                        .entry((layer, expert))
                        .or_default()
                        .push((whole, align));
                }
                Place::Fused { layer } if sliceable(it, moe.experts) => {
                    for e in 0..moe.experts {
                        let m = Member {
                            item: i as u32,
                            slice: Some(e as u32),
                        };
                        experts.entry((layer, e)).or_default().push((m, align));
                    }
                }
                _ => base.push((whole, align)),
            }
        }
        if experts.is_empty() {
            return None;
        }
        let by_alignment = |mut ms: Vec<(Member, u64)>| {
            ms.sort_by_key(|m| std::cmp::Reverse(m.1));
            ms.into_iter().map(|m| m.0).collect::<Vec<_>>()
        };
        let max_layer = experts.keys().map(|k| k.0).max().unwrap_or(0);
        Some(ExpertsView {
            parent,
            moe,
            base: by_alignment(base),
            files: experts
                .into_iter()
                .map(|((layer, expert), ms)| ExpertFile {
                    layer,
                    expert,
                    members: by_alignment(ms),
                })
                .collect(),
            layer_width: digits(moe.layers.unwrap_or(max_layer + 1).saturating_sub(1)).max(2),
            expert_width: digits(moe.experts - 1).max(3),
        })
    }

    fn file_name(&self, f: &ExpertFile) -> String {
        let (lw, ew) = (self.layer_width, self.expert_width);
        format!(
            "layer_{:0lw$}_expert_{:0ew$}.safetensors",
            f.layer, f.expert
        )
    }

    /// Lay out the directory `dir` (as view `me`).
    pub fn add(&self, tree: &mut Tree, dir: &str, me: ViewId) {
        let file = |kind, index| FileRef::Of {
            view: me,
            kind,
            index,
        };
        let dir = tree.dir_path(dir);
        tree.add_file(dir, "base.safetensors", file(kind::BASE, 0));
        tree.add_file(dir, "registry.json", file(kind::REGISTRY, 0));
        for (i, f) in self.files.iter().enumerate() {
            tree.add_file(dir, &self.file_name(f), file(kind::EXPERT, i as u32));
        }
    }

    /// The parent items read by the base file (`None`) or expert file `index`.
    pub fn items(&self, index: Option<u32>) -> impl Iterator<Item = u32> + '_ {
        let members = match index {
            Some(i) => &self.files[i as usize].members,
            None => &self.base,
        };
        members.iter().map(|m| m.item)
    }

    /// The parent view's tensors.
    fn parent<'a>(&self, cx: &Context<'a>) -> &'a dyn Tensors {
        cx.views
            .get(self.parent)
            .tensors()
            .expect("an expert split's parent has tensors")
    }

    fn entries(&self, cx: &Context, members: &[Member]) -> Vec<Entry> {
        let parent = self.parent(cx);
        members
            .iter()
            .map(|m| {
                let e = parent.entry(cx.catalog, m.item);
                match m.slice {
                    Some(s) => expert_slice(e, s.into(), self.moe.experts),
                    None => e,
                }
            })
            .collect()
    }

    fn members_file(&self, cx: &Context, members: &[Member]) -> VFile {
        let entries = self.entries(cx, members);
        let parent = self.parent(cx);
        let files: Vec<FileId> = members
            .iter()
            .flat_map(|m| parent.source_files(cx.catalog, m.item))
            .collect();
        let source = source_json(cx.catalog, files);
        let dir = format!("{}/experts", parent.dir());
        safetensors_file(cx.catalog, &dir, &source, entries)
    }

    /// `base.safetensors`.
    pub fn base_file(&self, cx: &Context) -> VFile {
        self.members_file(cx, &self.base)
    }

    /// Expert file `index`.
    pub fn expert_file(&self, cx: &Context, index: u32) -> VFile {
        self.members_file(cx, &self.files[index as usize].members)
    }

    /// `registry.json` (docs/VIEWS.md): every file, its size and tensors.
    pub fn registry_file(&self, cx: &Context) -> VFile {
        let catalog = cx.catalog;
        let listed = |members: &[Member]| -> Vec<Value> {
            let entries = self.entries(cx, members);
            members
                .iter()
                .zip(entries)
                .map(|(m, e)| {
                    json!({
                        "name": e.name,
                        "dtype": e.dtype.name(),
                        "shape": e.shape,
                        "bytes": e.len(),
                        "source": e.record.source.map_or(&e.name, |s| &catalog.tensor(s).name),
                        "index": m.slice,
                    })
                })
                .collect()
        };
        let experts: Vec<Value> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let size = self.expert_file(cx, i as u32).size;
                json!({
                    "layer": f.layer,
                    "expert": f.expert,
                    "file": self.file_name(f),
                    "size": size,
                    "tensors": listed(&f.members),
                })
            })
            .collect();
        let view = self.parent(cx).dir();
        let base_size = self.base_file(cx).size;
        let registry = json!({
            "num_experts": self.moe.experts,
            "experts_per_token": self.moe.per_token,
            "num_layers": self.moe.layers,
            "view": view,
            "base": {"file": "base.safetensors", "size": base_size, "tensors": listed(&self.base)},
            "experts": experts,
        });
        VFile::from_bytes(to_pretty(&registry).into_bytes())
    }
}

impl View for ExpertsView {
    fn file(&self, cx: &Context, kind: u8, index: u32) -> VFile {
        match kind {
            kind::BASE => self.base_file(cx),
            kind::REGISTRY => self.registry_file(cx),
            _ => self.expert_file(cx, index),
        }
    }

    fn reads(&self, cx: &Context, kind: u8, index: u32, source: FileId) -> bool {
        let items = match kind {
            kind::BASE => Some(None),
            kind::EXPERT => Some(Some(index)),
            _ => None,
        };
        let parent = self.parent(cx);
        items.is_some_and(|index| {
            self.items(index)
                .any(|item| parent.source_files(cx.catalog, item).contains(&source))
        })
    }
}

/// Can a fused item be cut into `experts` whole-byte slices?
/// Whether a fused tensor splits into `experts` whole-byte, non-empty slices
/// (an empty fused tensor stays whole in the base file: its slices would be
/// as many empty files as the config's expert count says).
fn sliceable(it: &TensorInfo, experts: u64) -> bool {
    numel(&it.shape[1..])
        .and_then(|n| it.dtype.bytes_for(n))
        .is_some_and(|per| per > 0 && per.checked_mul(experts) == Some(it.len))
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use std::borrow::Cow;

    #[test]
    fn places() {
        let e = 8;
        assert_eq!(
            place(
                "model.layers.3.mlp.experts.gate_up_proj_blocks",
                &[8, 4, 2, 16],
                e
            ),
            Place::Fused { layer: 3 }
        );
        assert_eq!(
            place("model.layers.3.mlp.experts.gate_up_proj", &[7, 4], e),
            Place::Base
        );
        assert_eq!(
            place("block.0.mlp.mlp1_weight.blocks", &[8, 4, 2, 16], e),
            Place::Fused { layer: 0 }
        );
        assert_eq!(place("block.0.mlp.gate.weight", &[8, 64], e), Place::Base);
        assert_eq!(
            place("model.layers.1.mlp.router.weight", &[8, 64], e),
            Place::Base
        );
        assert_eq!(
            place("blk.2.ffn_up_exps.weight", &[8, 4, 64], e),
            Place::Fused { layer: 2 }
        );
        assert_eq!(place("blk.2.ffn_gate_inp.weight", &[8, 64], e), Place::Base);
        assert_eq!(
            place(
                "model.layers.5.block_sparse_moe.experts.7.w1.weight",
                &[4, 4],
                e
            ),
            Place::Expert {
                layer: 5,
                expert: 7
            }
        );
        assert_eq!(
            place(
                "model.layers.5.block_sparse_moe.experts.8.w1.weight",
                &[4, 4],
                e
            ),
            Place::Base
        );
        assert_eq!(
            place(
                "model.layers.5.mlp.shared_experts.gate_proj.weight",
                &[8, 4],
                e
            ),
            Place::Base
        );
        assert_eq!(place("model.embed_tokens.weight", &[8, 4], e), Place::Base);
    }

    #[test]
    fn empty_fused_tensors_stay_whole() {
        // A config's expert count of 2^40 and a fused [2^40, 0] tensor (a
        // few bytes of header) made the split build 2^40 empty slices.
        let experts = 1u64 << 40;
        let item = |shape: Vec<u64>, len| TensorInfo {
            name: "model.layers.0.mlp.experts.gate_up_proj",
            dtype: Dtype::BF16,
            shape: Cow::Owned(shape),
            len,
        };
        let moe = Moe {
            experts,
            per_token: None,
            layers: None,
        };
        let mut notes = Vec::new();
        let items = vec![item(vec![experts, 0], 0)];
        assert!(ExpertsView::new(ViewId(0), items, moe, &mut notes).is_none());
        assert!(notes.is_empty());
        // Slices of a byte each: sliceable, but too many.
        let items = vec![item(vec![experts, 1], 2 * experts)];
        assert!(ExpertsView::new(ViewId(0), items, moe, &mut notes).is_none());
        assert!(notes[0].contains("more than 16777216"), "{notes:?}");
        // Overflowing slice sizes are not sliceable.
        let items = vec![item(vec![experts, 1 << 40], 0)];
        assert!(ExpertsView::new(ViewId(0), items, moe, &mut notes).is_none());
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn slices_segments() {
        use crate::catalog::Extent;
        use std::sync::Arc;
        let at = |offset, len| Extent {
            file: FileId(0),
            offset,
            len,
        };
        let segs = vec![
            Segment::Bytes(Arc::from(&b"abcd"[..])),
            Segment::Source(at(100, 10)),
        ];
        let s = slice_segments(&segs, 2, 5);
        assert_eq!(s.len(), 2);
        assert!(matches!(&s[0], Segment::Bytes(b) if &b[..] == b"cd"));
        assert!(matches!(s[1], Segment::Source(e) if e == at(100, 3)));
    }
}
