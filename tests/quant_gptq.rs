//! GPTQ checkpoints through a real mount: `bf16/` (and `f16/`) equal
//! gptqmodel's own dequantization bit for bit for every case
//! scripts/make_quant_gptq.py writes (2, 3, 4, 8 bits; symmetric and
//! asymmetric; groups of 32 and 64 and per channel; act-order g_idx;
//! checkpoint formats gptq and gptq_v2; AutoGPTQ's quantize_config.json;
//! gptqmodel's per-module `dynamic` overrides), and a broken checkpoint
//! leaves the converted views out with one line.

mod common;
mod gptq_awq;

use gptq_awq::*;
use serde_json::json;

#[test]
fn four_bit_symmetric_in_bf16_and_f16() {
    check_case("gptq", "b4_g32_sym");
}

#[test]
fn four_bit_act_order_asymmetric() {
    check_case("gptq", "b4_g32_act");
}

#[test]
fn three_bit_codes_straddle_words() {
    check_case("gptq", "b3_g64_act");
}

#[test]
fn eight_bit() {
    check_case("gptq", "b8_g32");
}

#[test]
fn two_bit_per_channel_from_quantize_config_json() {
    check_case("gptq", "b2_channel_side");
}

#[test]
fn checkpoint_format_gptq_v2() {
    check_case("gptq", "b4_v2");
}

#[test]
fn dynamic_overrides_per_module() {
    // down_proj at 8 bits, o_proj not quantized (passes through)
    check_case("gptq", "dynamic");
}

const CASE: &str = "b4_g32_act";
const LAYER: &str = "model.layers.0.mlp.up_proj";

#[test]
fn a_missing_part_is_refused_in_one_line() {
    let r = mount_broken("gptq", CASE, |ts, _| {
        ts.retain(|t| t.name != format!("{LAYER}.g_idx"))
    });
    assert_refused("gptq", r, &[&format!("{LAYER}.g_idx is missing")]);
}

#[test]
fn an_orphan_part_is_refused() {
    let r = mount_broken("gptq", CASE, |ts, _| {
        ts.retain(|t| t.name != format!("{LAYER}.qweight"))
    });
    assert_refused("gptq", r, &[&format!("has no {LAYER}.qweight")]);
}

#[test]
fn a_wrong_shape_is_refused_in_one_line() {
    let r = mount_broken("gptq", CASE, |ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == format!("{LAYER}.qzeros"))
            .unwrap();
        // one row less
        let row = t.data.len() / t.shape[0];
        t.shape[0] -= 1;
        t.data.truncate(t.data.len() - row);
    });
    assert_refused("gptq", r, &[&format!("{LAYER}.qzeros has shape")]);
    let r = mount_broken("gptq", CASE, |ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == format!("{LAYER}.scales"))
            .unwrap();
        t.dtype = "BF16";
    });
    assert_refused("gptq", r, &["scales is BF16, expected F16"]);
}

#[test]
fn unsupported_settings_are_refused_in_one_line() {
    let r = mount_broken("gptq", CASE, |_, c| qc(c)["bits"] = json!(5));
    assert_refused("gptq", r, &["5-bit GPTQ is not supported"]);
    // the config's width does not fit the stored shapes
    let r = mount_broken("gptq", CASE, |_, c| qc(c)["bits"] = json!(8));
    assert_refused("gptq", r, &["qweight has shape", "8-bit"]);
    let r = mount_broken("gptq", CASE, |_, c| {
        qc(c)["checkpoint_format"] = json!("marlin")
    });
    assert_refused("gptq", r, &["checkpoint_format 'marlin' is not supported"]);
    let r = mount_broken("gptq", CASE, |_, c| qc(c)["group_size"] = json!(0));
    assert_refused("gptq", r, &["group_size 0"]);
    let r = mount_broken("gptq", CASE, |_, c| qc(c)["group_size"] = json!(16));
    assert_refused("gptq", r, &["groups, expected"]);
    let r = mount_broken("gptq", "b2_channel_side", |_, c| {
        c.as_object_mut().unwrap().remove("bits");
    });
    assert_refused("gptq", r, &["no 'bits'"]);
}

#[test]
fn a_group_index_out_of_range_fails_the_read_not_the_daemon() {
    let src = case("gptq", CASE).join("model");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    // g_idx is data, not shape: a bad value is found on read (EIO)
    let mut st = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let (hlen, header) = {
        let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
        (n, h)
    };
    let off = header[format!("{LAYER}.g_idx")]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    let at = 8 + hlen + off + 4 * 3;
    st[at..at + 4].copy_from_slice(&1000i32.to_le_bytes());
    std::fs::write(tmp.path().join("model.safetensors"), &st).unwrap();
    let mnt = common::Mount::new(tmp.path());
    let err = std::fs::read(mnt.join("bf16/model-00001-of-00001.safetensors")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // the daemon is alive: other files still read
    assert!(std::fs::read(mnt.join("bf16/config.json")).is_ok());
    assert!(
        std::fs::read(mnt.join(&format!(
            "bf16/tensors/{}.weight.safetensors",
            "model.layers.0.mlp.gate_proj"
        )))
        .is_ok()
    );
}
