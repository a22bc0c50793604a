//! The `gguf/` view: the model as the GGUF files llama.cpp's converter
//! (`convert_hf_to_gguf.py --outtype f32|f16|bf16|q8_0`) writes for it, and
//! those llama-quantize makes of the BF16 one (Q4_K_M, Q5_K_M, Q6_K, Q4_0:
//! [`quantize`]), for llama.cpp, ollama and LM Studio (docs/GGUF_OUT.md).
//!
//! It is built on the first Hugging Face folder view (`bf16/`): what that
//! folder is (its tensors, in float32, and its config and tokenizer files)
//! is what the converter would read (an MXFP4 pair, which the folder
//! holds dequantized, is read as stored: the converter keeps gpt-oss's
//! MXFP4 experts as they are). At mount, the model is decided from
//! names, shapes and the config alone ([`model::Model`]: the output tensors
//! in file order and how each is made; the rows of Gemma 3's embedding that
//! a GGUF source's vocabulary keeps are counted when a file is first asked
//! for, as counting them reads the whole vocabulary); a file's header (with the
//! tokenizer) is built when the file is first asked for, and its tensor
//! bytes are computed on read, a row at a time ([`data`]).
//!
//! - `arch`: the architectures and their mappings; `config`: the
//!   hyperparameters with their config class's defaults; `vocab` and
//!   `special`: the tokenizer keys; `writer`: GGUF header bytes.

pub mod arch;
pub mod config;
pub mod data;
pub mod model;
pub mod quantize;
pub mod special;
pub mod tensors;
pub mod vocab;
pub mod writer;

use std::any::Any;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::catalog::{Catalog, FileId};
use crate::dtype::Dtype;
use crate::quant::ggml::GgmlType;
use crate::quant::ggml_encode::encoded_len;
use crate::view::hf::plan::Plan;
use crate::view::hf::{HfView, Made, SideFile};
use crate::view::{Builder, Context, FileRef, Segment, VFile, View, ViewId};
use model::{Model, OUTTYPES};
use tensors::{Data, HfTensor, Mxfp4Stored};
use writer::{Kv, TensorInfo, pad};

/// Longest tensor name llama.cpp loads (`GGML_MAX_NAME` is 64, with the
/// terminating NUL).
const MAX_NAME: usize = 63;

/// What `gguf/` holds: one file per output type of one model.
#[derive(Debug)]
pub struct GgufView {
    /// The Hugging Face folder view it converts.
    parent: ViewId,
    /// The model as decided at mount. Where the tokenizer is made from a
    /// GGUF source's metadata, Gemma 3's token embedding still has all its
    /// rows here: counting the rows the converter keeps takes a pass over
    /// the whole vocabulary, so it is left to when a file is first asked
    /// for ([`GgufView::model`]).
    model: Model,
    /// Whether the vocabulary rows were left to count.
    rows_deferred: bool,
    /// The model with the vocabulary rows counted, once a file was asked
    /// for (`None` if deciding it again failed: then `model`).
    counted: OnceLock<Option<Model>>,
    /// The llama-quantize files: each one's tensors (indexes into
    /// `model.tensors`, in its order) and their types.
    mixes: Vec<MixFile>,
    /// The keys made from the folder's side files, built when a file is
    /// first asked for.
    side: OnceLock<SideKeys>,
}

/// Keys made from the folder's side files.
#[derive(Debug)]
struct SideKeys {
    /// `general.sampling.*`, from `generation_config.json`.
    sampling: Kv,
    /// The tokenizer keys, or why there are none.
    vocab: Result<Kv, String>,
}

/// Build `gguf/` on the first Hugging Face folder view, for a model of an
/// architecture it writes (otherwise a note says why; a source without a
/// config has no `gguf/` and no note).
pub fn build(b: &mut Builder) {
    let found = b.views().find_map(|(id, v)| {
        let any: &dyn Any = v;
        any.downcast_ref::<HfView>().map(|hf| (id, hf))
    });
    let Some((parent, hf)) = found else { return };
    let Some(config) = hf.config() else { return };
    let (model, rows_deferred) = match model_of(b.catalog, hf, config, Rows::Defer) {
        Ok(m) => m,
        Err(why) => {
            b.notes
                .push(format!("gguf/ is not available for this source: {why}"));
            return;
        }
    };
    let me = b.next_id();
    let dir = b.tree.dir_path("gguf");
    // A model llama-quantize refuses (gpt-oss's MXFP4 experts) has none of
    // its files; not a problem of the source, so no note (docs/GGUF_OUT.md).
    let mixes = match mixes(&model) {
        Ok(m) => m,
        Err(why) => {
            log::debug!("gguf/ has no llama-quantize files: {why}");
            Vec::new()
        }
    };
    let names = OUTTYPES
        .iter()
        .map(|o| o.1)
        .chain(mixes.iter().map(|(m, _)| m.name));
    for (k, name) in names.enumerate() {
        let file = FileRef::Of {
            view: me,
            kind: k as u8,
            index: 0,
        };
        b.tree.add_file(dir, &format!("model-{name}.gguf"), file);
    }
    b.add(Box::new(GgufView {
        parent,
        model,
        rows_deferred,
        counted: OnceLock::new(),
        mixes,
        side: OnceLock::new(),
    }));
}

/// A llama-quantize file: its type, and its tensors (indexes into the
/// model's tensors, in its order) with their types.
type MixFile = (quantize::Mix, Vec<(usize, GgmlType)>);

/// The llama-quantize files of `model`, each with its tensors in file
/// order and their types ([`quantize::plan`]), or why there are none.
fn mixes(model: &Model) -> Result<Vec<MixFile>, String> {
    quantize::MIXES
        .iter()
        .map(|&m| quantize::plan(model, m).map(|p| (m, p)).map_err(|r| r.0))
        .collect()
}

/// Whether the vocabulary rows of a tokenizer made from a GGUF source's
/// metadata are counted now or left to later.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    Count,
    Defer,
}

/// The model the converter would write for `hf`, and whether the rows of a
/// made tokenizer were left to count (`rows` is [`Rows::Defer`] and the
/// architecture asked for them).
fn model_of(
    catalog: &Catalog,
    hf: &HfView,
    config: &Value,
    rows: Rows,
) -> Result<(Model, bool), String> {
    let arch = arch::of(config)?;
    let cfg = arch.config(config);
    let mut tensors: Vec<HfTensor> = Vec::with_capacity(hf.model);
    for (i, p) in hf.model_plans().iter().enumerate() {
        let name = p.name(catalog);
        if arch.skipped(name) {
            continue;
        }
        let (dtype, shape, _) = p.info(catalog, Dtype::F32);
        if dtype != Dtype::F32 {
            return Err(format!("tensor '{name}' is {dtype}, not a float tensor"));
        }
        let mxfp4 = mxfp4_stored(catalog, p);
        // An MXFP4 pair is read where its scales are (the converter
        // repacks a pair when it reaches the scales).
        let files = p.files(catalog);
        let file = match mxfp4 {
            Some(_) => files.last(),
            None => files.first(),
        }
        .map(|&f| catalog.files[f].file.name.clone())
        .unwrap_or_default();
        tensors.push(HfTensor {
            index: i as u32,
            name: name.to_string(),
            shape: shape.into_owned(),
            dtype: p.source_dtype(catalog).unwrap_or(Dtype::F32),
            file,
            mxfp4,
        });
    }
    // The converter reads files in name order, each file's tensors in name
    // order.
    tensors.sort_by(|a, b| (&a.file, &a.name).cmp(&(&b.file, &b.name)));
    let folder = Sides {
        catalog,
        files: hf.side_files(catalog),
        rows,
        deferred: Cell::new(false),
    };
    let out = arch.tensors(&cfg, &tensors, &folder)?;
    if let Some(t) = out.iter().find(|t| t.name.len() > MAX_NAME) {
        return Err(format!(
            "tensor name '{}' is longer than llama.cpp takes",
            t.name
        ));
    }
    let size_label = model::size_label(&out);
    let model = Model {
        arch,
        config: cfg,
        tensors: out,
        size_label,
    };
    Ok((model, folder.deferred.get()))
}

/// The stored shape of plan `p`'s MXFP4 pair, if it is one in the Hugging
/// Face layout (blocks `[E, R, G, 16]`, scales `[E, R, G]`).
fn mxfp4_stored(catalog: &Catalog, p: &Plan) -> Option<Mxfp4Stored> {
    let (blocks, scales, _) = p.mxfp4()?;
    let (b, s) = (catalog.tensor(blocks), catalog.tensor(scales));
    match (&b.shape[..], &s.shape[..]) {
        (&[e, r, g, 16], &[e2, r2, g2]) if (e, r, g) == (e2, r2, g2) => Some(Mxfp4Stored {
            experts: e,
            rows: r,
            groups: g,
        }),
        _ => None,
    }
}

/// What `gguf/` holds for `catalog`, in one line (its summary, or why
/// there is none), decided as a mount decides it but without laying out
/// any view's tree: `gyrofs ls` prints it. `None` when the source has no
/// `config.json` (no `gguf/`, and nothing to say).
pub fn offer(catalog: &Catalog) -> Option<String> {
    let mut notes = Vec::new();
    let conversion = crate::view::hf::plan::Conversion::new(catalog, &mut notes).ok()?;
    let hf = HfView::new(catalog, &conversion, Dtype::BF16);
    let config = hf.config()?;
    Some(match model_of(catalog, &hf, config, Rows::Count) {
        Ok((model, _)) => summary(&model),
        Err(why) => format!("gguf/ is not available for this source: {why}"),
    })
}

/// A model's files in one line: the architecture and the files.
fn summary(model: &Model) -> String {
    let quantized = mixes(model).unwrap_or_default();
    let files: Vec<String> = OUTTYPES
        .iter()
        .map(|o| o.1)
        .chain(quantized.iter().map(|(m, _)| m.name))
        .map(|name| format!("model-{name}.gguf"))
        .collect();
    format!(
        "gguf/ ({}, {} tensors, {}): {}",
        model.arch.name(),
        model.tensors.len(),
        model.size_label,
        files.join(" ")
    )
}

impl GgufView {
    /// The model its files hold: the one decided at mount, or, if that one
    /// left the vocabulary rows to count, the model with them counted.
    fn model(&self, cx: &Context) -> &Model {
        if !self.rows_deferred {
            return &self.model;
        }
        let counted = self.counted.get_or_init(|| {
            let hf = self.parent(cx);
            let config = hf.config()?;
            match model_of(cx.catalog, hf, config, Rows::Count) {
                Ok((model, _)) => Some(model),
                Err(why) => {
                    // Then every embedding row stays: not the converter's
                    // file, so say so.
                    log::warn!(
                        "gguf/: cannot count the vocabulary's rows ({why}); the token embedding keeps all of its rows"
                    );
                    None
                }
            }
        });
        counted.as_ref().unwrap_or(&self.model)
    }

    /// The Hugging Face folder view it converts.
    fn parent<'a>(&self, cx: &Context<'a>) -> &'a HfView {
        let any: &dyn Any = cx.views.get(self.parent);
        any.downcast_ref::<HfView>()
            .expect("gguf/ is built on a Hugging Face folder view")
    }

    /// The keys from the side files (built once; a tokenizer that cannot
    /// be read is left out of every file, with a warning in the log).
    fn side(&self, cx: &Context) -> &SideKeys {
        self.side.get_or_init(|| {
            let hf = self.parent(cx);
            let files = SideFiles::read(cx.catalog, hf);
            let sampling = match files.json("generation_config.json") {
                Ok(Some(g)) => model::sampling(&g),
                _ => Kv::new(),
            };
            let vocab = match &cx.catalog.gguf_metadata {
                Some(meta) => Ok(source_vocab(meta)),
                None => vocab_kv(&files, hf, self.model(cx)),
            };
            if let Err(why) = &vocab {
                log::warn!("gguf/: the GGUF files have no tokenizer: {why}");
            }
            SideKeys { sampling, vocab }
        })
    }

    /// The file of kind `k`: an output type of the converter (an index
    /// into [`OUTTYPES`]), then the llama-quantize files (`mixes`).
    fn gguf_file(&self, cx: &Context, k: usize) -> VFile {
        let side = self.side(cx);
        let model = self.model(cx);
        let (out, plan): (GgmlType, Vec<(usize, GgmlType, bool)>) = match OUTTYPES.get(k) {
            Some(&(out, _, _)) => (
                out,
                (model.tensors.iter().enumerate())
                    .map(|(i, t)| (i, Model::tensor_type(t, out), false))
                    .collect(),
            ),
            // llama-quantize's file, made from the BF16 file: a tensor it
            // quantizes is read as the BF16 file holds it (rounded to
            // BF16 unless that file has it in F32); one it keeps is the
            // BF16 file's.
            None => {
                let (_, plan) = &self.mixes[k - OUTTYPES.len()];
                let plan = plan.iter().map(|&(i, ty)| {
                    let bf16 = Model::tensor_type(&model.tensors[i], GgmlType::BF16);
                    (i, ty, ty != bf16 && bf16 == GgmlType::BF16)
                });
                (GgmlType::BF16, plan.collect())
            }
        };
        let mut kv = model.kv(out, &side.sampling);
        if let Ok(v) = &side.vocab {
            kv.extend(v);
        }
        let quantized = k >= OUTTYPES.len();
        if let Some((mix, _)) = k.checked_sub(OUTTYPES.len()).map(|m| &self.mixes[m]) {
            kv = quantize::kv(&kv, *mix);
        }
        let infos: Vec<TensorInfo> = plan
            .iter()
            .map(|&(i, ty, _)| {
                let t = &model.tensors[i];
                // ggml writes `ggml_n_dims` axes: none of the leading 1s.
                let skip = if quantized {
                    t.shape.len() - quantize::n_dims(&t.shape).min(t.shape.len())
                } else {
                    0
                };
                TensorInfo {
                    name: t.name.clone(),
                    shape: t.shape[skip..].to_vec(),
                    ty,
                    bytes: encoded_len(ty, t.shape.iter().product()).unwrap_or(0),
                }
            })
            .collect();
        let header = writer::header(&kv, &infos);
        let mut segments = vec![Segment::Bytes(header.bytes.into())];
        for (&(i, ty, via_bf16), info) in plan.iter().zip(&infos) {
            segments.push(Segment::Computed(self.tensor_data(cx, i, ty, via_bf16)));
            let padding = pad(info.bytes) - info.bytes;
            if padding > 0 {
                segments.push(Segment::Bytes(vec![0u8; padding as usize].into()));
            }
        }
        VFile::new(segments)
    }

    /// The bytes of tensor `i` in type `ty` (`via_bf16`: its values
    /// rounded to BF16 first).
    fn tensor_data(
        &self,
        cx: &Context,
        i: usize,
        ty: GgmlType,
        via_bf16: bool,
    ) -> Arc<dyn crate::view::Compute> {
        let hf = self.parent(cx);
        let t = &self.model(cx).tensors[i];
        let row = t.shape.last().copied().unwrap_or(1);
        match &t.data {
            Data::Values(v) => {
                let moved = (ty.plain_dtype())
                    .filter(|_| !via_bf16)
                    .and_then(|d| data::moved(cx.catalog, hf, v, d));
                match moved {
                    Some(bytes) => bytes,
                    None => Arc::new(data::Encoded::new(cx.catalog, hf, v, ty, row, via_bf16)),
                }
            }
            Data::Raw(r, _) => data::raw(cx.catalog, hf, r),
        }
    }
}

/// The side files of a Hugging Face folder view, read on demand (while the
/// model is decided at mount).
struct Sides<'a> {
    catalog: &'a Catalog,
    files: Vec<(String, SideFile)>,
    /// Count the rows of a tokenizer made from GGUF metadata, or leave them.
    rows: Rows,
    /// Set when the rows were asked for and left to count.
    deferred: Cell<bool>,
}

impl arch::Folder for Sides<'_> {
    fn has(&self, name: &str) -> bool {
        self.files.iter().any(|(n, _)| n == name)
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let (_, f) = self.files.iter().find(|(n, _)| n == name)?;
        let _reading = self.catalog.files.reading();
        f.read(self.catalog)
    }

    fn tokenizer_rows(&self) -> Option<u64> {
        let made = self.files.iter().find_map(|(n, f)| match f {
            SideFile::Made(_, Made::GgufTokenizer { updated, arch }) if n == "tokenizer.json" => {
                Some((updated, arch))
            }
            _ => None,
        });
        match made {
            // Counted from the GGUF metadata (the file is not built), or
            // left to count: all rows meanwhile.
            Some(_) if self.rows == Rows::Defer => {
                self.deferred.set(true);
                None
            }
            Some((updated, arch)) => {
                let meta = self.catalog.gguf_metadata.as_ref()?;
                crate::view::hf::gguf::tokenizer::rows(meta, updated, arch).ok()
            }
            None => arch::json_tokenizer_rows(&self.read("tokenizer.json")?),
        }
    }
}

/// The side files of a Hugging Face folder view, read.
struct SideFiles {
    files: Vec<(String, Vec<u8>)>,
}

impl SideFiles {
    fn read(catalog: &Catalog, hf: &HfView) -> SideFiles {
        let _reading = catalog.files.reading();
        let files = hf
            .side_files(catalog)
            .into_iter()
            .filter_map(|(name, f)| Some((name, f.read(catalog)?)))
            .collect();
        SideFiles { files }
    }

    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    fn text(&self, name: &str) -> Option<String> {
        self.bytes(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn json(&self, name: &str) -> Result<Option<Value>, String> {
        match self.bytes(name) {
            None => Ok(None),
            Some(b) => serde_json::from_slice(b)
                .map(Some)
                .map_err(|e| format!("{name}: {e}")),
        }
    }
}

/// The tokenizer keys of a GGUF source, as they are: its own tokenizer,
/// which llama.cpp reads exactly (the Hugging Face tokenizer files `bf16/`
/// makes of it are a translation, and a SentencePiece one has no
/// `tokenizer.model` for the converter's path).
fn source_vocab(meta: &crate::catalog::gguf::GgufMetadata) -> Kv {
    let mut kv = Kv::new();
    for (k, v) in meta.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        kv.set(k, v.clone());
    }
    kv
}

/// The tokenizer keys, from the folder's files.
fn vocab_kv(files: &SideFiles, hf: &HfView, model: &Model) -> Result<Kv, String> {
    let tokenizer_json = files.json("tokenizer.json")?;
    let tokenizer_config = files.json("tokenizer_config.json")?;
    let added = files.json("added_tokens.json")?;
    let template_json = files.json("chat_template.json")?;
    let jinja = files.text("chat_template.jinja");
    let merges = files.text("merges.txt");
    let inputs = vocab::Inputs {
        files: special::Files {
            tokenizer_json: tokenizer_json.as_ref(),
            tokenizer_config: tokenizer_config.as_ref(),
            config: hf.config(),
            chat_template_jinja: jinja.as_deref(),
            chat_template_json: template_json.as_ref(),
            merges_txt: merges.as_deref(),
        },
        tokenizer_model: files.bytes("tokenizer.model"),
        added_tokens_json: added.as_ref(),
        vocab_size: model.config.u64(&["vocab_size"]),
    };
    let mut kv = Kv::new();
    vocab::write(model.arch.vocab(), &inputs, &mut kv)?;
    Ok(kv)
}

impl View for GgufView {
    fn file(&self, cx: &Context, kind: u8, _: u32) -> VFile {
        self.gguf_file(cx, kind as usize)
    }

    fn reads(&self, cx: &Context, _: u8, _: u32, source: FileId) -> bool {
        let hf = self.parent(cx);
        hf.model_plans()
            .iter()
            .any(|p| p.files(cx.catalog).contains(&source))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use crate::catalog::Catalog;
    use crate::quant::ggml::GgmlType;
    use crate::volume::Volume;

    /// `gguf/NAME` of `source`, written to `dir` and opened as a source.
    fn gguf_of(source: &Path, name: &str, dir: &Path) -> Catalog {
        let v = Volume::open(source).unwrap();
        let id = v.resolve(&format!("gguf/{name}")).unwrap();
        let size = v.file(id).unwrap().size;
        let bytes = v.read(id, 0, size as usize).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        crate::source::open(&path, &crate::store::Opener::local()).unwrap()
    }

    /// Every tensor by name: ggml type, shape and bytes.
    fn tensors(c: &Catalog) -> BTreeMap<String, (GgmlType, Vec<u64>, Vec<u8>)> {
        c.tensors
            .iter()
            .map(|t| {
                let g = t.ggml.as_ref().unwrap();
                let bytes = c.files.bytes(t.extent).unwrap().to_vec();
                (t.name.clone(), (g.ty, g.shape.clone(), bytes))
            })
            .collect()
    }

    /// The bundled gpt-oss sample in its Hugging Face layout (two shards)
    /// and its `original/` layout: the same keys and tensors (the MXFP4
    /// experts repacked from the same bytes, file type 38); only the order
    /// differs, which follows the shards.
    #[test]
    fn gpt_oss_original_layout_gives_the_release_tensors() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt-oss-tiny");
        let dir = tempfile::tempdir().unwrap();
        for name in ["model-F16.gguf", "model-Q8_0.gguf"] {
            let (a, b) = (dir.path().join("hf"), dir.path().join("original"));
            std::fs::create_dir_all(&a).unwrap();
            std::fs::create_dir_all(&b).unwrap();
            let hf = gguf_of(&root, name, &a);
            let orig = gguf_of(&root.join("original"), name, &b);
            let (mh, mo) = (
                hf.gguf_metadata.clone().unwrap(),
                orig.gguf_metadata.clone().unwrap(),
            );
            let keys = |m: &crate::catalog::gguf::GgufMetadata| {
                m.iter()
                    .filter(|(k, _)| k != "general.name")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(&mh), keys(&mo), "{name}");
            let want_type = if name.contains("Q8_0") { 7 } else { 38 };
            assert_eq!(
                mh.get("general.file_type"),
                Some(&crate::catalog::gguf::GgufValue::U32(want_type))
            );
            let (th, to) = (tensors(&hf), tensors(&orig));
            assert_eq!(th.len(), 41);
            assert_eq!(th, to, "{name}");
            let (ty, shape, _) = &th["blk.1.ffn_up_exps.weight"];
            assert_eq!((*ty, &shape[..]), (GgmlType::MXFP4, &[4, 64, 64][..]));
        }
    }
}
