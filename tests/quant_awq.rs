//! AWQ (GEMM) checkpoints through a real mount: `bf16/` (and `f16/`)
//! equal AutoAWQ's `dequantize_gemm` (as gptqmodel 7.7 ships it) bit for
//! bit, `modules_to_not_convert` layers pass through, and a broken or
//! unsupported checkpoint leaves the converted views out with one line.

mod common;
mod gptq_awq;

use gptq_awq::*;
use serde_json::json;

#[test]
fn group_32_in_bf16_and_f16() {
    check_case("awq", "g32");
}

#[test]
fn group_64_with_modules_not_converted() {
    check_case("awq", "g64_not_convert");
}

const LAYER: &str = "model.layers.0.self_attn.q_proj";

#[test]
fn broken_checkpoints_are_refused_in_one_line() {
    let r = mount_broken("awq", "g32", |ts, _| {
        ts.retain(|t| t.name != format!("{LAYER}.scales"))
    });
    assert_refused("awq", r, &[&format!("{LAYER}.scales is missing")]);
    let r = mount_broken("awq", "g32", |ts, _| {
        ts.retain(|t| t.name != format!("{LAYER}.qweight"))
    });
    assert_refused("awq", r, &[&format!("has no {LAYER}.qweight")]);
    let r = mount_broken("awq", "g32", |ts, _| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == format!("{LAYER}.qzeros"))
            .unwrap();
        t.shape = vec![t.shape[1], t.shape[0]];
    });
    assert_refused("awq", r, &[&format!("{LAYER}.qzeros has shape")]);
}

#[test]
fn unsupported_settings_are_refused_in_one_line() {
    let r = mount_broken("awq", "g32", |_, c| qc(c)["version"] = json!("gemv"));
    assert_refused("awq", r, &["AWQ version \"gemv\" is not supported (gemm)"]);
    let r = mount_broken("awq", "g32", |_, c| qc(c)["bits"] = json!(3));
    assert_refused("awq", r, &["3-bit AWQ is not supported"]);
    let r = mount_broken("awq", "g32", |_, c| qc(c)["zero_point"] = json!(false));
    assert_refused("awq", r, &["zero_point false"]);
    let r = mount_broken("awq", "g32", |_, c| qc(c)["group_size"] = json!(96));
    assert_refused("awq", r, &["group_size 96 does not divide"]);
}
