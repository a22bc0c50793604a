//! The kernel workloads both benchmarks run (`kernels`: criterion;
//! `kernel_table`: interleaved rounds printed as a table): every kernel of
//! `gyrofs::quant` on realistic shapes and data, as a function of the path.

use gyrofs::quant::fp8::BlockScaled;
use gyrofs::quant::ggml::{GgmlType, can_dequantize};
use gyrofs::quant::mxfp4::{Expert, Pair};
use gyrofs::quant::simd::Kernels;

/// BF16 output bytes per run of the elementwise and ggml kernels: larger
/// than L2, so the source and output stream through memory as they do when
/// a mount serves a large tensor.
pub const OUT_BYTES: usize = 16 << 20;

/// `run(path, out)`: compute the workload's output on a path.
pub type Run = Box<dyn Fn(&Kernels, &mut [u8])>;

/// One kernel on one input: `run` fills `out` (`out_bytes` BF16 bytes).
pub struct Workload {
    pub name: String,
    pub out_bytes: usize,
    pub run: Run,
}

fn w(name: &str, out_bytes: usize, run: impl Fn(&Kernels, &mut [u8]) + 'static) -> Workload {
    Workload {
        name: name.to_string(),
        out_bytes,
        run: Box::new(run),
    }
}

/// splitmix64: deterministic inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Every workload whose name contains one of `filters` (all if empty).
pub fn all(filters: &[String]) -> Vec<Workload> {
    let keep = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let mut out = Vec::new();
    let mut rng = Rng(1);
    mxfp4(&mut rng, &keep, &mut out);
    floats(&mut rng, &keep, &mut out);
    fp8(&mut rng, &keep, &mut out);
    ggml(&mut rng, &keep, &mut out);
    encode(&mut rng, &keep, &mut out);
    out
}

fn mxfp4(rng: &mut Rng, keep: &dyn Fn(&str) -> bool, out: &mut Vec<Workload>) {
    let names = ["mxfp4_transposed", "mxfp4_transposed_cold", "mxfp4_blocks"];
    if !names.iter().any(|n| keep(n)) {
        return;
    }
    // gpt-oss-shaped experts: E = 4 slices of [2880 rows, 90 groups] (the
    // `down_proj` of gpt-oss, and half of `gate_up_proj`), scales as in
    // trained checkpoints (2^-27 .. 2^12).
    let (e, r, g) = (4usize, 2880usize, 90usize);
    let n = r * g;
    let blocks: std::rc::Rc<Vec<u8>> = rng.bytes(e * n * 16).into();
    let scales: std::rc::Rc<Vec<u8>> = (0..e * n)
        .map(|_| 100 + (rng.next() % 40) as u8)
        .collect::<Vec<_>>()
        .into();
    let expert_out = n * 32 * 2;
    if keep(names[0]) {
        // As a mount serves them: 1 MiB read requests, each computing the
        // whole output rows it covers (182 rows of 2880 values) into one
        // reused reply buffer, as the read path does.
        let rows_per_read = (1 << 20) / (r * 2);
        let (b, s) = (blocks.clone(), scales.clone());
        let reply = std::cell::RefCell::new(vec![0u8; rows_per_read * r * 2]);
        out.push(w(names[0], e * expert_out, move |k, _out| {
            let mut reply = reply.borrow_mut();
            for x in 0..e {
                let (b, s) = (&b[x * n * 16..][..n * 16], &s[x * n..][..n]);
                let expert = Expert::new(b, s, r, g).unwrap();
                for c0 in (0..g * 32).step_by(rows_per_read) {
                    let c1 = (c0 + rows_per_read).min(g * 32);
                    let o = &mut reply[..(c1 - c0) * r * 2];
                    let rows = expert.transposed(c0..c1).unwrap();
                    k.mxfp4_transposed_le(&rows, o).unwrap();
                }
            }
        }));
    }
    if keep(names[1]) {
        // Whole experts at once into a large cold buffer (the worst case:
        // every output line comes from memory).
        let (b, s) = (blocks.clone(), scales.clone());
        out.push(w(names[1], e * expert_out, move |k, out| {
            for (x, o) in out.chunks_exact_mut(expert_out).enumerate() {
                let (b, s) = (&b[x * n * 16..][..n * 16], &s[x * n..][..n]);
                let rows = Expert::new(b, s, r, g)
                    .unwrap()
                    .transposed(0..g * 32)
                    .unwrap();
                k.mxfp4_transposed_le(&rows, o).unwrap();
            }
        }));
    }
    if keep(names[2]) {
        // Storage order (non-expert MXFP4 tensors).
        let nb = OUT_BYTES / 64;
        out.push(w(names[2], OUT_BYTES, move |k, out| {
            let pair = Pair::new(&blocks[..nb * 16], &scales[..nb]).unwrap();
            k.mxfp4_blocks_le(&pair, out).unwrap()
        }));
    }
}

fn floats(rng: &mut Rng, keep: &dyn Fn(&str) -> bool, out: &mut Vec<Workload>) {
    let n = OUT_BYTES / 2;
    // Values of a weight's typical range.
    let mut value = || ((rng.next() % 2_000_001) as f64 - 1e6) * 1.7e-7;
    if keep("f16_to_bf16") {
        let f16: std::rc::Rc<Vec<u8>> = (0..n)
            .flat_map(|_| half::f16::from_f64(value()).to_le_bytes())
            .collect::<Vec<_>>()
            .into();
        let src = f16.clone();
        out.push(w("f16_to_bf16", OUT_BYTES, move |k, out| {
            k.f16_to_bf16(&src, out).unwrap()
        }));
        // Issue 8: the `half` crate's F16 -> f32 slice conversion (F16C when
        // the CPU has it) followed by this path's F32 -> BF16 kernel, in
        // 16 KiB pieces, against the fused kernel.
        out.push(w("f16_to_bf16_via_half", OUT_BYTES, move |k, out| {
            use half::slice::HalfFloatSliceExt;
            let mut h = [half::f16::ZERO; 4096];
            let mut f = [0f32; 4096];
            let mut fb = [0u8; 4096 * 4];
            for (s, o) in f16.chunks(8192).zip(out.chunks_mut(8192)) {
                let m = s.len() / 2;
                for (h, s) in h.iter_mut().zip(s.chunks_exact(2)) {
                    *h = half::f16::from_le_bytes([s[0], s[1]]);
                }
                h[..m].convert_to_f32_slice(&mut f[..m]);
                for (b, x) in fb.chunks_exact_mut(4).zip(&f[..m]) {
                    b.copy_from_slice(&x.to_le_bytes());
                }
                k.f32_to_bf16(&fb[..4 * m], o).unwrap();
            }
        }));
    }
    if keep("f32_to_bf16") {
        let f32: Vec<u8> = (0..n)
            .flat_map(|_| (value() as f32).to_le_bytes())
            .collect();
        out.push(w("f32_to_bf16", OUT_BYTES, move |k, out| {
            k.f32_to_bf16(&f32, out).unwrap()
        }));
    }
    if keep("f64_to_bf16") {
        let f64: Vec<u8> = (0..n).flat_map(|_| value().to_le_bytes()).collect();
        out.push(w("f64_to_bf16", OUT_BYTES, move |k, out| {
            k.f64_to_bf16(&f64, out).unwrap()
        }));
    }
}

fn fp8(rng: &mut Rng, keep: &dyn Fn(&str) -> bool, out: &mut Vec<Workload>) {
    let n = OUT_BYTES / 2;
    let codes: std::rc::Rc<Vec<u8>> = rng.bytes(n).into();
    if keep("e4m3_to_bf16") {
        let c = codes.clone();
        out.push(w("e4m3_to_bf16", OUT_BYTES, move |k, out| {
            k.e4m3_to_bf16(&c, out).unwrap()
        }));
    }
    if keep("e5m2_to_bf16") {
        let c = codes.clone();
        out.push(w("e5m2_to_bf16", OUT_BYTES, move |k, out| {
            k.e5m2_to_bf16(&c, out).unwrap()
        }));
    }
    if keep("fp8_block") {
        // DeepSeek-V3-shaped block-scaled weight: [1024, 8192], 128 x 128
        // tiles, served row range by row range like a mount does.
        let (rows, cols) = (1024, 8192);
        let layout = BlockScaled::new(rows, cols, BlockScaled::DEEPSEEK_BLOCK).unwrap();
        let (gr, gc) = layout.scale_shape();
        let scale: Vec<u8> = (0..gr * gc)
            .flat_map(|_| (1.0f32 / (1 + rng.next() % 500) as f32).to_le_bytes())
            .collect();
        out.push(w("fp8_block", rows * cols * 2, move |k, out| {
            let x = layout.slice(&codes[..rows * cols], 0, &scale).unwrap();
            k.fp8_block_le(&x, out).unwrap()
        }));
    }
}

fn ggml(rng: &mut Rng, keep: &dyn Fn(&str) -> bool, out: &mut Vec<Workload>) {
    for ty in GgmlType::ALL {
        let name = format!("ggml_{}", ty.name());
        if !can_dequantize(ty) || !keep(&name) {
            continue;
        }
        let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
        let nblocks = OUT_BYTES / (2 * bs);
        let mut raw = rng.bytes(nblocks * ts);
        // Finite f16 fields (2^-8 .. 2^-6) where the type has them; random
        // bytes would make many of them inf / NaN.
        let f16_fields: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
            GgmlType::TQ1_0 => &[52],
            GgmlType::TQ2_0 => &[64],
            // E8M0 / UE4M3 scales, IQ1_M's scattered d, F32, BF16: as drawn.
            GgmlType::MXFP4 | GgmlType::NVFP4 | GgmlType::IQ1_M => &[],
            GgmlType::F32 | GgmlType::BF16 => &[],
            _ => &[0],
        };
        for b in raw.chunks_exact_mut(ts) {
            for &o in f16_fields {
                b[o + 1] = 0x1C + (b[o + 1] & 3);
            }
        }
        out.push(w(&name, nblocks * bs * 2, move |k, out| {
            k.ggml_dequantize(ty, &raw, out).unwrap()
        }));
    }
}

/// The GGUF view's encoders: BF16, F16 or F32 weights to Q8_0 (output
/// bytes are Q8_0 here, not BF16), as `gguf/model-Q8_0.gguf` reads them.
fn encode(rng: &mut Rng, keep: &dyn Fn(&str) -> bool, out: &mut Vec<Workload>) {
    use gyrofs::quant::ggml_encode::Floats;
    let n = OUT_BYTES / 2;
    for (from, name) in [
        (Floats::BF16, "encode_Q8_0_from_bf16"),
        (Floats::F16, "encode_Q8_0_from_f16"),
        (Floats::F32, "encode_Q8_0_from_f32"),
    ] {
        if !keep(name) {
            continue;
        }
        let src: Vec<u8> = (0..n)
            .flat_map(|_| {
                let x = ((rng.next() % 2_000_001) as f32 - 1e6) * 1.7e-8;
                match from {
                    Floats::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
                    Floats::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
                    Floats::F32 => x.to_le_bytes().to_vec(),
                }
            })
            .collect();
        out.push(w(name, n / 32 * 34, move |k, out| {
            k.encode(GgmlType::Q8_0, from, &src, out).unwrap()
        }));
    }
}
