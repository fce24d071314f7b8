//! Requantization in every mode against an independent i128 / f64 oracle: the scalar
//! `Requantizer` (any i64 accumulator), its slice form, and every ISA's GEMM output stage
//! (K = 1 with (a − za)·(b − zb) = 1, so the accumulator is the i32 bias itself).

use qkern::requant::Requantizer;
use qkern::{Activations, Context, MatrixMut, MatrixRef, PackedWeights, QuantizedMultiplier, Requantize, RequantMode, WeightQuant};

use super::common::{Fill, Gen};

fn qkern_fill() -> Fill {
    Fill::Uniform
}

/// `floor(x / 2^s)` and round-half-away `x / 2^s`, for `s ≥ 0`, by plain i128 division.
fn floor_div(x: i128, s: u32) -> i128 {
    x.div_euclid(1i128 << s)
}
fn div_round_away(x: i128, s: u32) -> i128 {
    if s == 0 {
        return x;
    }
    let d = 1i128 << s;
    let q = (x.abs() * 2 + d) / (2 * d); // round(|x|/d), ties up
    if x < 0 { -q } else { q }
}

/// The fixed-point modes by their definitions (gemmlowp / TFLite), exact in i128, for
/// accumulators in i32 range and shifts in the modes' valid ranges.
fn oracle_fixed(acc: i64, qm: QuantizedMultiplier, mode: RequantMode) -> i128 {
    let p = acc as i128 * qm.multiplier as i128;
    match mode {
        // floor(acc·M·2^shift / 2^31 + 1/2)
        RequantMode::SingleRounding => {
            let total = 31 - qm.shift;
            if total <= 0 { p << (-total) } else { floor_div(p + (1i128 << (total - 1)), total as u32) }
        }
        // SRDHM(acc·2^left, M) = floor((x·M + 2^30) / 2^31) (ties up, both signs), then a
        // division by 2^right rounding half away from zero.
        _ => {
            let (left, right) = (qm.shift.max(0) as u32, (-qm.shift).max(0) as u32);
            let high = floor_div((p << left) + (1i128 << 30), 31);
            div_round_away(high, right)
        }
    }
}

/// ONNX: round_half_even(f32(f32(acc) · scale)), computed in f64 from the two f32 roundings.
fn oracle_fp32(acc: i64, scale: f32) -> i128 {
    let prod = ((acc as f32) as f64 * scale as f64) as f32; // one f32 rounding of the exact product
    let r = (prod as f64).round_ties_even();
    if r.is_nan() { 0 } else { r.clamp(-1e30, 1e30) as i128 }
}

pub fn run(data: &[u8]) {
    let mut g = Gen::new(data);
    let mode = g.pick(&[RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding]);
    // Scales across the whole useful range, including exact powers of two (ties) and
    // values near 1 (the multiplier's top bits).
    let scale = match g.size(0, 3) {
        0 => 2f32.powi(g.int(-40, 20) as i32),
        1 => g.pick(&[0.999_999_9f32, 1.0, 1.000_000_1, 0.5, 1.5, 3.0e-6, 0.003_921_568_6]),
        _ => {
            let s = g.f32_bits().abs();
            if s.is_finite() && s > 1e-30 && s < 1e6 { s } else { 0.0123 }
        }
    };
    let zp = g.int(-300, 300) as i32;
    let (lo, hi) = (g.int(-400, 400) as i32, g.int(-400, 400) as i32);
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let Ok(rq) = Requantizer::new(mode, scale, zp) else {
        // Only scales beyond the double-rounding multiplier's range may be refused.
        assert!(mode == RequantMode::TfliteDoubleRounding && scale >= 2f32.powi(31), "{mode:?} refused scale {scale}");
        return;
    };
    let rq = rq.with_clamp(lo, hi).unwrap();
    let fill = g.fill();
    let len = g.size(1, 300);
    let mut accs: Vec<i64> = g.values(len, i32::MIN as i64, i32::MAX as i64, fill);
    // Most accumulators where the output is not clamped (ties live there): acc ≈ t / scale
    // for t inside the clamp window.
    let near = g.values(len, (lo - zp - 2) as i64, (hi - zp + 2) as i64, qkern_fill());
    let jitter = g.values(len, -3, 3, qkern_fill());
    for (i, a) in accs.iter_mut().enumerate() {
        if i % 4 != 0 {
            *a = ((near[i] as f64 / scale as f64) as i64).saturating_add(jitter[i]).clamp(i32::MIN as i64, i32::MAX as i64);
        }
    }
    let oracle = |acc: i64, lo: i32, hi: i32, zp: i32| -> i32 {
        let v = match mode {
            RequantMode::Fp32 => oracle_fp32(acc, scale),
            m => oracle_fixed(acc, rq.multiplier().unwrap(), m),
        } + zp as i128;
        v.clamp(lo as i128, hi as i128) as i32
    };
    for &a in &accs {
        assert_eq!(rq.requantize(a), oracle(a, lo, hi, zp), "{mode:?} scale {scale} zp {zp} acc {a}");
    }

    // The slice form into u8.
    let acc32: Vec<i32> = accs.iter().map(|&a| a as i32).collect();
    let (zy, qlo, qhi) = (zp.clamp(0, 255), lo.clamp(0, 255), hi.clamp(0, 255));
    let rq8 = Requantizer::new(mode, scale, zy).unwrap().with_clamp(qlo, qhi).unwrap();
    let mut out = vec![0u8; acc32.len()];
    rq8.requantize_slice(&acc32, &mut out).unwrap();
    for (&a, &o) in acc32.iter().zip(&out) {
        assert_eq!(o as i32, oracle(a as i64, qlo, qhi, zy), "slice {mode:?} scale {scale} acc {a}");
    }

    // The kernels' output stage: K = 1, a − za = 1, b − zb = 1, per-column i32 bias =
    // acc − 1 (so it must fit i32), sa·sb/sy = scale with sa = sb = 1.
    let bias: Vec<i32> = acc32.iter().map(|&a| a.saturating_sub(1).max(i32::MIN + 1)).collect();
    let n = bias.len();
    let b = vec![1i8; n];
    for &isa in &qkern::dispatch::cpu().isas {
        let ctx = Context::for_isa(isa).unwrap();
        let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, 1, n), WeightQuant::per_tensor(0, 1.0)).unwrap();
        let a = [1u8];
        let mut c = vec![0u8; n];
        // The driver derives the multiplier from sa·sb/sy in f64: sy = 1/scale would
        // round; use sy = 1 and put the scale in sa (f32 product 1·scale is exact).
        let r = Requantize::new(1.0, zy as u8).mode(mode).clamp(qlo as u8, qhi as u8).bias(&bias);
        let act = Activations::new(MatrixRef::new(&a, 1, 1), 0u8, scale);
        match ctx.gemm_requantize(act, &w, &r, MatrixMut::new(&mut c, 1, n)) {
            Ok(()) => {
                for (j, &o) in c.iter().enumerate() {
                    let acc = bias[j] as i64 + 1;
                    assert_eq!(o as i32, oracle(acc, qlo, qhi, zy), "{isa:?} {mode:?} scale {scale} acc {acc}");
                }
            }
            Err(e) => assert!(mode == RequantMode::TfliteDoubleRounding && scale >= 2f32.powi(31), "{isa:?}: {e}"),
        }
    }
}
