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

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::catalog::{Catalog, FileId, SourceFormat};
use crate::dtype::numel;
use crate::json::to_pretty;
use crate::view::header::{Entry, safetensors_file, source_json};
use crate::view::{NodeId, Segment, Tree, VFile};

/// The mixture-of-experts shape of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moe {
    pub experts: u64,
    pub per_token: Option<u64>,
    pub layers: Option<u64>,
}

/// The model's expert count (and experts per token, layer count) from its
/// config or GGUF metadata; `None` for a dense model.
pub fn moe(catalog: &Catalog) -> Option<Moe> {
    let first = |v: &Value, keys: &[&str]| keys.iter().find_map(|k| v.get(*k)?.as_u64());
    if catalog.format == SourceFormat::Gguf {
        let md = catalog.gguf_metadata.as_ref()?;
        let arch = md.get("general.architecture")?.as_str()?;
        let key = |k: &str| md.get(format!("{arch}.{k}"))?.as_u64();
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

/// Expert `e`'s slice of a fused entry, with the expert axis removed; `None`
/// if the slice is not a whole number of bytes, or is empty (an empty fused
/// tensor stays whole in the base file: its slices would be any number of
/// empty files, as many as the config's expert count says).
fn expert_slice(entry: &Entry, e: u64, experts: u64) -> Option<Entry> {
    let inner = &entry.shape[1..];
    let per = entry.dtype.bytes_for(numel(inner)?)?;
    if per == 0 || per * experts != entry.len() {
        return None;
    }
    Some(Entry {
        name: entry.name.clone(),
        dtype: entry.dtype,
        shape: inner.to_vec(),
        record: entry.record.expert_slice(e),
        data: slice_segments(&entry.data, e * per, per),
    })
}

/// A tensor of a view, as the split needs it.
#[derive(Debug, Clone)]
pub struct Item {
    pub entry: Entry,
    /// Source files it reads.
    pub files: Vec<FileId>,
}

/// One tensor of the split.
struct Member<'a> {
    entry: Entry,
    /// Index along the stacked tensor's expert axis, for fused tensors.
    index: Option<u64>,
    item: &'a Item,
}

impl<'a> Member<'a> {
    fn whole(item: &'a Item) -> Self {
        Member {
            entry: item.entry.clone(),
            index: None,
            item,
        }
    }
}

/// The split of a view's tensors: the base file's and each (layer, expert)'s.
struct Split<'a> {
    base: Vec<Member<'a>>,
    experts: BTreeMap<(u64, u64), Vec<Member<'a>>>,
}

/// Place every item: whole into an expert or the base, or sliced by expert.
fn split(items: &[Item], experts: u64) -> Split<'_> {
    let mut out = Split {
        base: Vec::new(),
        experts: BTreeMap::new(),
    };
    for item in items {
        match place(&item.entry.name, &item.entry.shape, experts) {
            Place::Expert { layer, expert } => out
                .experts
                .entry((layer, expert))
                .or_default()
                .push(Member::whole(item)),
            Place::Fused { layer } => {
                let slices: Option<Vec<Entry>> = (0..experts)
                    .map(|e| expert_slice(&item.entry, e, experts))
                    .collect();
                let Some(slices) = slices else {
                    out.base.push(Member::whole(item));
                    continue;
                };
                for (e, entry) in (0..).zip(slices) {
                    out.experts.entry((layer, e)).or_default().push(Member {
                        entry,
                        index: Some(e),
                        item,
                    });
                }
            }
            Place::Base => out.base.push(Member::whole(item)),
        }
    }
    out
}

/// Writes the files of one `<view>/experts/` directory.
struct Writer<'c> {
    catalog: &'c Catalog,
    /// `raw/experts` or `bf16/experts`: the `gyro.view` of its files.
    dir_path: String,
    dir: NodeId,
    /// `gyro.source` by source file set: the expert files of a layer draw on
    /// the same few source files.
    sources: HashMap<Vec<FileId>, String>,
}

impl Writer<'_> {
    /// Add one file of `members`; its size and registry tensor list.
    fn add(&mut self, tree: &mut Tree, name: &str, mut members: Vec<Member>) -> (u64, Value) {
        members.sort_by_key(|m| std::cmp::Reverse(m.entry.dtype.alignment()));
        let mut files: Vec<FileId> = members
            .iter()
            .flat_map(|m| m.item.files.iter().copied())
            .collect();
        files.sort_unstable();
        files.dedup();
        let catalog = self.catalog;
        let source = self
            .sources
            .entry(files)
            .or_insert_with_key(|f| source_json(catalog, f.iter().copied()));
        let listed: Vec<Value> = members
            .iter()
            .map(|m| {
                json!({
                    "name": m.entry.name,
                    "dtype": m.entry.dtype.name(),
                    "shape": m.entry.shape,
                    "bytes": m.entry.len(),
                    "source": catalog.tensor(m.entry.record.source).name,
                    "index": m.index,
                })
            })
            .collect();
        let entries = members.into_iter().map(|m| m.entry).collect();
        let file = safetensors_file(catalog, &self.dir_path, source, entries);
        let size = file.size;
        tree.add_file(self.dir, name, "", file);
        (size, Value::Array(listed))
    }
}

/// Add `<view>/experts/` for the view's tensors `items`. Returns false (and
/// adds nothing) if no tensor is an expert's.
pub fn add(tree: &mut Tree, catalog: &Catalog, view: &str, items: &[Item], moe: Moe) -> bool {
    let Split { base, experts } = split(items, moe.experts);
    if experts.is_empty() {
        return false;
    }
    let max_layer = experts.keys().map(|k| k.0).max().unwrap_or(0);
    let layer_width = digits(moe.layers.unwrap_or(max_layer + 1).saturating_sub(1)).max(2);
    let expert_width = digits(moe.experts - 1).max(3);
    let dir_path = format!("{view}/experts");
    let dir = tree.dir_path(&dir_path);
    let mut writer = Writer {
        catalog,
        dir_path,
        dir,
        sources: HashMap::new(),
    };

    let (base_size, base_tensors) = writer.add(tree, "base.safetensors", base);
    let mut registry_experts = Vec::new();
    for ((layer, expert), members) in experts {
        let name =
            format!("layer_{layer:0layer_width$}_expert_{expert:0expert_width$}.safetensors");
        let (size, tensors) = writer.add(tree, &name, members);
        registry_experts.push(json!({
            "layer": layer,
            "expert": expert,
            "file": name,
            "size": size,
            "tensors": tensors,
        }));
    }
    let registry = json!({
        "num_experts": moe.experts,
        "experts_per_token": moe.per_token,
        "num_layers": moe.layers,
        "view": view,
        "base": {"file": "base.safetensors", "size": base_size, "tensors": base_tensors},
        "experts": registry_experts,
    });
    tree.add_file(
        dir,
        "registry.json",
        "",
        VFile::from_bytes(to_pretty(&registry).into_bytes()),
    );
    true
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let entry = Entry {
            name: "model.layers.0.mlp.experts.gate_up_proj".into(),
            dtype: crate::dtype::Dtype::BF16,
            shape: vec![experts, 0],
            record: crate::view::record::Record::new(
                crate::catalog::TensorId(0),
                crate::view::record::Transform::Identity,
            ),
            data: Vec::new(),
        };
        let items = [Item {
            entry,
            files: Vec::new(),
        }];
        let s = split(&items, experts);
        assert!(s.experts.is_empty());
        assert_eq!(s.base.len(), 1);
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
