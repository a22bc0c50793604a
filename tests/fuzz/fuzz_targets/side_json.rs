//! Fuzz target: the JSON side files of a safetensors checkpoint, parsed from
//! the same arbitrary bytes as `model.safetensors.index.json`
//! (`source::parse_index`), `dtypes.json` (`source::parse_dtypes`) and
//! `config.json` (`source::parse_json`), and a parsed config handed to every
//! pure function that reads it: FP8 block pairing (and the block's value
//! count, written in headers and the manifest), the gpt-oss q/k/v row
//! counts, the derived Hugging Face config and the renaming of original
//! tensors. Nothing may panic.
#![no_main]

use std::path::Path;

use gyrofs::catalog::{Extent, FileId, Tensor, pair_fp8_block};
use gyrofs::dtype::Dtype;
use gyrofs::source::{parse_dtypes, parse_index, parse_json};
use gyrofs::view::hf::gpt_oss::{QkvRows, hf_config, hf_name};
use libfuzzer_sys::fuzz_target;

fn tensor(name: &str, dtype: Dtype, shape: &[u64]) -> Tensor {
    let extent = Extent {
        file: FileId(0),
        offset: 0,
        len: 0,
    };
    Tensor::new(name.into(), dtype, shape.to_vec(), extent)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = parse_index(Path::new("model.safetensors.index.json"), data) {
        for shard in index.weight_map.values() {
            assert!(!shard.contains('/') && !shard.starts_with('.'), "{shard}");
        }
    }
    let _ = parse_dtypes(Path::new("dtypes.json"), data);
    let Ok(config) = parse_json(Path::new("config.json"), data) else {
        return;
    };
    let mut tensors = vec![
        tensor("a.weight", Dtype::F8_E4M3, &[200, 300]),
        tensor("a.weight_scale_inv", Dtype::F32, &[2, 3]),
        tensor("b.weight", Dtype::F8_E4M3, &[1, 1]),
        tensor("b.weight_scale_inv", Dtype::F32, &[1, 1]),
    ];
    pair_fp8_block(&mut tensors, Some(&config));
    for q in tensors.iter().filter_map(|t| t.quant.as_ref()) {
        assert!(q.scheme.values_per_block() > 0);
    }
    let _ = hf_config(&config);
    if let Ok(qkv) = QkvRows::from_config(&config) {
        for name in [
            "block.0.attn.qkv.weight",
            "block.1.attn.qkv.bias",
            "norm.scale",
        ] {
            let _ = hf_name(name, qkv);
        }
    }
});
