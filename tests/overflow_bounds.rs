//! Every overflow bound of `docs/overflow.md`, tested exactly at the bound and one step
//! past it, through the public API (and through the kernels crate where the bound is a
//! kernel constant). Results are compared with i64 / i128 references computed here, and
//! the past-bound cases assert the documented behaviour: the chunked i64 path (still
//! exact), an `Error::Overflow` for an i32 output that does not fit, another kernel, or a
//! refusal.
//!
//! The worst case of each bound is built from all-extreme operands so that the bound is
//! *reached*, not just approached: e.g. `K = 65793`, `a − za = −255`, `b − zb = −128`
//! gives `K·255·128 = i32::MAX − 127`, and a bias of 127 puts the result on `i32::MAX`.
//! Huge-K cases use M ≤ 7 and N ≤ 16, so the file runs in about a second natively.
//! ISA-specific cases skip (visibly) on a CPU without the tier.

mod common;

use qkern::codebook::{CodebookFamily, CodebookWeights};
use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput, ConvPath, DepthwiseConv, DepthwiseFilter};
use qkern::gemm::K_CHUNK;
use qkern::quant::{LevelParams, LevelSet, PackedCodes};
use qkern::requant::{Requantizer, multiply_by_quantized_multiplier, quantize_multiplier};
use qkern::{
    Activations, Context, Error, Int8, Isa, MatrixMut, MatrixRef, PackedWeights, QuantizedMultiplier, RequantMode, Requantize,
    WeightQuant,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MAX: i64 = i32::MAX as i64;
const MIN: i64 = i32::MIN as i64;
const N: usize = 16;

/// One context per tier this CPU runs (each with its own best kernels).
fn tiers() -> Vec<Context> {
    common::available_isas().into_iter().map(|i| Context::for_isa(i).unwrap()).collect()
}

/// One context per GEMM kernel this CPU runs that takes any weights (each kernel once, at
/// the lowest tier offering it), so the bounds run through every microkernel and its
/// epilogue, not only each tier's default.
fn gemm_contexts() -> Vec<Context> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for base in tiers() {
        for k in base.kernels().gemm_candidates.clone() {
            if k.max_abs_stored_b.is_none() && !seen.contains(&k.name) {
                seen.push(k.name);
                out.push(base.clone().with_gemm_kernel(k.name).unwrap());
            }
        }
    }
    out
}

/// The context of `isa`, or `None` after a SKIP line (a failure under `QKERN_REQUIRE_ISA`).
fn tier(what: &str, isa: Isa) -> Option<Context> {
    (common::native_arch(isa) && common::isa_or_skip(what, isa)).then(|| Context::for_isa(isa).unwrap())
}

/// `C[m][n] = Σ_k (a − za)·(b − zb[n]) + bias[n]` in i64; `b` is `k × n` row-major.
#[allow(clippy::too_many_arguments)] // the GEMM's own operands, named as in the formula
fn gemm_ref<A: Int8, B: Int8>(a: &[A], za: A, b: &[B], zb: &[i32], bias: Option<&[i32]>, m: usize, k: usize, n: usize) -> Vec<i64> {
    let mut c = vec![0i64; m * n];
    for i in 0..m {
        for kk in 0..k {
            let x = (a[i * k + kk].to_i32() - za.to_i32()) as i64;
            for j in 0..n {
                c[i * n + j] += x * (b[kk * n + j].to_i32() - zb[j]) as i64;
            }
        }
        for j in 0..n {
            c[i * n + j] += bias.map_or(0, |b| b[j] as i64);
        }
    }
    c
}

/// Whether `r` is `Error::Overflow`.
fn is_overflow<T: std::fmt::Debug>(r: &qkern::Result<T>) -> bool {
    matches!(r, Err(Error::Overflow(_)))
}

/// Whether `r` is `Error::Unsupported`.
fn is_unsupported<T: std::fmt::Debug>(r: &qkern::Result<T>) -> bool {
    matches!(r, Err(Error::Unsupported(_)))
}

// ---------------------------------------------------------------------------------------
// Fixed-point and f32 requantization references (i128 / f32, written from the formulas in
// src/requant.rs's module docs, not from the code).

/// `round_half_away(v / 2^s)` for `s ≥ 1`.
fn div_pot_half_away(v: i128, s: u32) -> i128 {
    let d = 1i128 << s;
    let q = v.abs() / d;
    let r = v.abs() % d;
    let q = if 2 * r >= d { q + 1 } else { q };
    if v < 0 { -q } else { q }
}

/// The mode's value of `acc` before the zero point (exact, i128).
fn fixed_ref(acc: i64, qm: QuantizedMultiplier, mode: RequantMode) -> i128 {
    let p = acc as i128 * qm.multiplier as i128;
    match mode {
        RequantMode::SingleRounding => {
            // floor(p · 2^shift / 2^31 + 1/2)
            let total = 31 - qm.shift;
            if total <= 0 { p << -total } else { (p + (1i128 << (total - 1))).div_euclid(1i128 << total) }
        }
        _ => {
            // h = floor(p · 2^left / 2^31 + 1/2), then round_half_away(h / 2^right).
            let (left, right) = (qm.shift.max(0), (-qm.shift).max(0));
            let h = ((p << left) + (1i128 << 30)).div_euclid(1i128 << 31);
            if right == 0 { h } else { div_pot_half_away(h, right as u32) }
        }
    }
}

/// One requantized output: the mode's value + zp, clamped to `[lo, hi]`.
fn requant_ref(acc: i64, mode: RequantMode, scale: f32, qm: QuantizedMultiplier, zp: i32, lo: i32, hi: i32) -> i64 {
    let v = match mode {
        RequantMode::Fp32 => {
            let x = ((acc as f32) * scale).round_ties_even();
            // Clamp in f64 first: ±inf and values past i64 saturate.
            (x as f64).clamp(-1e30, 1e30) as i128
        }
        _ => fixed_ref(acc, qm, mode),
    } + zp as i128;
    v.clamp(lo as i128, hi as i128) as i64
}

// ---------------------------------------------------------------------------------------
// 1. GEMM driver: whole-K i32 iff K·max|a−za|·max|b−zb| + max|bias| ≤ i32::MAX
//    (src/gemm/driver.rs `whole_k_exact`); past it K chunks of K_CHUNK carried in i64, and
//    an i32 output that does not fit is `Error::Overflow`.

/// u8 × i8, positive worst case: a − za = −255 (a = 0, za = 255), b − zb = −128.
/// `K_POS · 255 · 128 = i32::MAX − 127`.
const K_POS: usize = 65793;

fn pos_case(m: usize, k: usize) -> (Vec<u8>, Vec<i8>) {
    (vec![0u8; m * k], vec![-128i8; k * N])
}

#[test]
fn gemm_whole_k_bound_at_i32_max() {
    assert_eq!(K_POS as i64 * 255 * 128 + 127, MAX);
    let bias = [127i32; N];
    for ctx in gemm_contexts() {
        for m in [1, 7] {
            let (a, b) = pos_case(m, K_POS);
            let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, K_POS, N), WeightQuant::per_tensor(0, 1.0)).unwrap();
            let expect = gemm_ref(&a, 255u8, &b, &[0; N], Some(&bias), m, K_POS, N);
            assert!(expect.iter().all(|&v| v == MAX));
            let mut c = vec![0i32; m * N];
            let act = Activations::new(MatrixRef::new(&a, m, K_POS), 255u8, 1.0);
            ctx.gemm_i32(act, &w, Some(&bias), MatrixMut::new(&mut c, m, N)).unwrap();
            assert!(c.iter().all(|&v| v as i64 == MAX), "{} m={m}: {:?}", w.kernel_name(), &c[..4]);
        }
    }
}

#[test]
fn gemm_whole_k_bound_one_step_past() {
    // Bias 128: the true result is 2^31. Past K: K_POS + 1 with no bias, 2^31 + 32513.
    for ctx in gemm_contexts() {
        for (k, bias_v) in [(K_POS, 128i32), (K_POS + 1, 0)] {
            for m in [1, 7] {
                let bias = [bias_v; N];
                let (a, b) = pos_case(m, k);
                let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, k, N), WeightQuant::per_tensor(0, 1.0)).unwrap();
                let expect = gemm_ref(&a, 255u8, &b, &[0; N], Some(&bias), m, k, N);
                assert!(expect.iter().all(|&v| v > MAX));
                let act = Activations::new(MatrixRef::new(&a, m, k), 255u8, 1.0);
                let name = w.kernel_name();
                // i32 output: the exact value does not fit: an error, not a wrapped i32::MIN.
                let mut c = vec![0i32; m * N];
                let r = ctx.gemm_i32(act, &w, Some(&bias), MatrixMut::new(&mut c, m, N));
                assert!(is_overflow(&r), "{name} k={k} m={m}: {r:?} {:?}", &c[..2]);
                // Requantized: the exact value, scaled by 2^−24 (128 + 32513·2^−24 → 128).
                // A wrapped accumulator (negative) would clamp to 0 instead.
                for mode in [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
                    let sy = 16_777_216.0f32; // sa·sb/sy = 2^−24
                    let qm = if mode == RequantMode::Fp32 {
                        QuantizedMultiplier { multiplier: 0, shift: 0 }
                    } else {
                        quantize_multiplier(1.0 / sy as f64, mode).unwrap()
                    };
                    let rq = Requantize::new(sy, 0u8).mode(mode).bias(&bias);
                    let mut y = vec![0u8; m * N];
                    ctx.gemm_requantize(act, &w, &rq, MatrixMut::new(&mut y, m, N)).unwrap();
                    for (i, (&got, &e)) in y.iter().zip(&expect).enumerate() {
                        let want = requant_ref(e, mode, 1.0 / sy, qm, 0, 0, 255);
                        assert_eq!(got as i64, want, "{name} {mode:?} k={k} m={m} [{i}]");
                        assert_eq!(got, 128);
                    }
                }
                // f32 output (no i32 bias): acc·sa·sb, 2^31 + … exactly as f32 rounds it.
                let mut f = vec![0f32; m * N];
                ctx.gemm_f32(act, &w, None, MatrixMut::new(&mut f, m, N)).unwrap();
                let e0 = expect[0] - bias_v as i64;
                assert!(f.iter().all(|&v| v == e0 as f32), "{name} k={k} m={m}: {} vs {e0}", f[0]);
            }
        }
    }
}

/// i8 × u8, negative worst case: a − za = −255 (a = −128, za = 127), b − zb = 255.
/// `K_NEG · 255 · 255 = i32::MAX − 33022`.
const K_NEG: usize = 33025;

#[test]
fn gemm_whole_k_bound_negative_side() {
    assert_eq!(K_NEG as i64 * 255 * 255 + 33022, MAX);
    for ctx in gemm_contexts() {
        let m = 3;
        let a = vec![-128i8; m * K_NEG];
        let b = vec![255u8; K_NEG * N];
        let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, K_NEG, N), WeightQuant::per_tensor(0, 1.0)).unwrap();
        let act = Activations::new(MatrixRef::new(&a, m, K_NEG), 127i8, 1.0);
        // At: bias −33022 → −i32::MAX (whole-K i32). Past: −33023 → i32::MIN, which fits:
        // the chunked path returns it exactly. Two past: −33024 → below i32::MIN: error.
        for (bias_v, want) in [(-33022, Some(-MAX)), (-33023, Some(MIN)), (-33024, None)] {
            let bias = [bias_v; N];
            let expect = gemm_ref(&a, 127i8, &b, &[0; N], Some(&bias), m, K_NEG, N);
            let mut c = vec![0i32; m * N];
            let r = ctx.gemm_i32(act, &w, Some(&bias), MatrixMut::new(&mut c, m, N));
            match want {
                Some(v) => {
                    r.unwrap();
                    assert!(expect.iter().all(|&e| e == v));
                    assert!(c.iter().zip(&expect).all(|(&g, &e)| g as i64 == e), "{} bias {bias_v}: {}", w.kernel_name(), c[0]);
                }
                None => assert!(is_overflow(&r), "{} bias {bias_v}: {r:?}", w.kernel_name()),
            }
        }
    }
}

#[test]
fn gemm_chunked_path_is_exact_on_random_data() {
    // K past the bound for any data with |a − za| = 255 and a 255-wide weight range;
    // random values, per-column zero points, bias: every result fits, all must be exact.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (k, n) = (2 * K_CHUNK + 4099, 20);
    let b: Vec<u8> = (0..k * n).map(|i| if i == 0 { 0 } else { rng.random() }).collect();
    let mut zb: Vec<i32> = (0..n).map(|_| rng.random_range(0..=255)).collect();
    zb[0] = 255; // |b − zb| = 255 at (0, 0)
    let bias: Vec<i32> = (0..n).map(|_| rng.random_range(-1_000_000..=1_000_000)).collect();
    for ctx in gemm_contexts() {
        for m in [2, 9] {
            let a: Vec<i8> = (0..m * k).map(|_| rng.random()).collect();
            let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, k, n), WeightQuant::per_column(&zb, &vec![1.0; n])).unwrap();
            let expect = gemm_ref(&a, 127i8, &b, &zb, Some(&bias), m, k, n);
            let mut c = vec![0i32; m * n];
            ctx.gemm_i32(Activations::new(MatrixRef::new(&a, m, k), 127i8, 1.0), &w, Some(&bias), MatrixMut::new(&mut c, m, n)).unwrap();
            assert!(c.iter().zip(&expect).all(|(&g, &e)| g as i64 == e), "{} m={m}", w.kernel_name());
        }
    }
}

#[test]
fn k_chunk_keeps_every_chunk_exact() {
    // One chunk never overflows for any 8-bit operands and zero points; the largest
    // such chunk would be 33025 (the depthwise tap limit, same bound).
    assert!(K_CHUNK as i64 * 255 * 255 <= MAX);
    const { assert!(33025i64 * 255 * 255 <= MAX && 33026i64 * 255 * 255 > MAX) };
    assert_eq!(qkern_kernels::DW_MAX_TAPS, 33025);
    // Chunks start on a packed K group of every kernel.
    for ctx in tiers() {
        for kn in &ctx.kernels().gemm_candidates {
            assert!(K_CHUNK.is_multiple_of(kn.format.kr), "{}", kn.name);
        }
    }
}

#[test]
fn requantized_gemm_at_i32_extremes_and_multiplier_edges() {
    // Accumulators ±i32::MAX (the bound, both signs) through every tier's fused
    // epilogue: effective multipliers 2^−24·0.77, 1 − 2^−24, 2^30 (shift 31: every
    // nonzero product saturates), 2^40 and 2^−39, in each mode, against the i128 / f32
    // reference.
    let m = 2;
    let (a, b) = pos_case(m, K_POS);
    let bias_pos = [127i32; N];
    // −i32::MAX from the i8 × u8 worst case (see `gemm_whole_k_bound_negative_side`).
    let a_neg = vec![-128i8; m * K_NEG];
    let b_neg = vec![255u8; K_NEG * N];
    let bias_neg = [-33022i32; N];
    for ctx in gemm_contexts() {
        let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, K_POS, N), WeightQuant::per_tensor(0, 1.0)).unwrap();
        let w_neg = PackedWeights::new_in(&ctx, MatrixRef::new(&b_neg, K_NEG, N), WeightQuant::per_tensor(0, 1.0)).unwrap();
        // Double rounding leaves the shift uncapped: 2^40 is shift 41; 2^−39 flushes to 0.
        let (big, tiny) = (2f32.powi(-40), 2f32.powi(39));
        for sy in [16_777_216.0f32 / 0.77, 1.0 / (1.0 - f32::EPSILON / 2.0), 1.0 / 1_073_741_824.0, big, tiny] {
            for mode in [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
                let eff = 1.0 / sy;
                let qm = if mode == RequantMode::Fp32 {
                    QuantizedMultiplier { multiplier: 0, shift: 0 }
                } else {
                    quantize_multiplier(1.0 / sy as f64, mode).unwrap()
                };
                let mut y = vec![0i8; m * N];
                let rq = Requantize::new(sy, 3i8).mode(mode).bias(&bias_pos);
                ctx.gemm_requantize(Activations::new(MatrixRef::new(&a, m, K_POS), 255u8, 1.0), &w, &rq, MatrixMut::new(&mut y, m, N)).unwrap();
                let want = requant_ref(MAX, mode, eff, qm, 3, -128, 127);
                assert!(y.iter().all(|&v| v as i64 == want), "{} {mode:?} sy={sy}: {} vs {want}", w.kernel_name(), y[0]);
                let rq = Requantize::new(sy, 3i8).mode(mode).bias(&bias_neg);
                ctx.gemm_requantize(Activations::new(MatrixRef::new(&a_neg, m, K_NEG), 127i8, 1.0), &w_neg, &rq, MatrixMut::new(&mut y, m, N))
                    .unwrap();
                let want = requant_ref(-MAX, mode, eff, qm, 3, -128, 127);
                assert!(y.iter().all(|&v| v as i64 == want), "{} {mode:?} sy={sy}: {} vs {want} (−i32::MAX)", w_neg.kernel_name(), y[0]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. AVX2 vpmaddubsw: 2·255·|b| ≤ 32767 ⇔ stored |b| ≤ 64 (`max_abs_stored_b: Some(64)`,
//    checked by `PackedWeights::new_in` in src/gemm/pack.rs); past it the exact kernel.

#[cfg(target_arch = "x86_64")]
mod maddubs {
    use super::*;

    const FAST: &str = "qx8_gemm_4x16c4_maddubs__avx2";

    fn check<B: Int8>(ctx: &Context, bv: [B; 2], fast: bool) {
        let k = 64;
        let b: Vec<B> = (0..k * N).map(|i| bv[i % 2]).collect();
        let a = vec![255u8; 3 * k];
        let w = PackedWeights::new_in(ctx, MatrixRef::new(&b, k, N), WeightQuant::per_tensor(0, 1.0)).unwrap();
        assert_eq!(w.kernel_name() == FAST, fast, "{}: {:?}", w.kernel_name(), (bv[0].to_i32(), bv[1].to_i32()));
        let expect = gemm_ref(&a, 0u8, &b, &[0; N], None, 3, k, N);
        let mut c = vec![0i32; 3 * N];
        ctx.gemm_i32(Activations::new(MatrixRef::new(&a, 3, k), 0u8, 1.0), &w, None, MatrixMut::new(&mut c, 3, N)).unwrap();
        assert!(c.iter().zip(&expect).all(|(&g, &e)| g as i64 == e), "{}", w.kernel_name());
        // The fast kernel forced: packs within the bound, refuses past it.
        let forced = ctx.clone().with_gemm_kernel(FAST).unwrap();
        let r = PackedWeights::new_in(&forced, MatrixRef::new(&b, k, N), WeightQuant::per_tensor(0, 1.0));
        assert_eq!(r.is_ok(), fast, "{r:?}");
        if !fast {
            assert!(is_unsupported(&r), "{r:?}");
        }
    }

    #[test]
    fn maddubs_pairs_at_64_and_past() {
        let Some(ctx) = tier("vpmaddubsw bound", Isa::Avx2) else { return };
        assert_eq!(2 * 255 * 64, 32640);
        assert!(2 * 255 * 65 > i16::MAX as i32);
        // i8 weights (stored as they are): ±64 at the bound, 65 / −65 past it.
        check::<i8>(&ctx, [64, -64], true);
        check::<i8>(&ctx, [65, 0], false);
        check::<i8>(&ctx, [-65, 0], false);
        // u8 weights, stored as b − 128: 64 and 192 at the bound, 63 / 193 past it.
        check::<u8>(&ctx, [64, 192], true);
        check::<u8>(&ctx, [63, 128], false);
        check::<u8>(&ctx, [193, 128], false);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Depthwise: taps ≤ DW_MAX_TAPS = 33025 (`DepthwiseFilter::new_in`), the per-call
//    predicate taps·max|x−za|·max|w−zw| + max|bias| ≤ i32::MAX (`DepthwiseConv::run`,
//    src/conv/depthwise.rs), and the c4 (i8) layout for centred weights in [−128, 127].

fn dw_geometry(c: usize, kh: usize, kw: usize, in_h: usize, in_w: usize) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: 1,
        in_h,
        in_w,
        in_c: c,
        out_c: c,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: 0,
        pad_left: 0,
        pad_bottom: 0,
        pad_right: 0,
        groups: c,
    }
}

#[test]
fn depthwise_tap_limit() {
    let ctx = Context::new().unwrap();
    let w = vec![1i8; 33026];
    assert!(DepthwiseFilter::new_in(&ctx, &w[..33025], 1, 1, 33025, WeightQuant::per_tensor(0, 1.0)).is_ok());
    let r = DepthwiseFilter::new_in(&ctx, &w, 1, 1, 33026, WeightQuant::per_tensor(0, 1.0));
    assert!(is_unsupported(&r), "{r:?}");
}

#[test]
fn depthwise_exact_bound_at_and_past() {
    // x − za = −255 (x = 0, za = 255), w − zw = −255 (w = 0, zw = 255): each tap +65025,
    // 33025 taps = i32::MAX − 33022.
    let (c, taps) = (2, 33025);
    let x = vec![0u8; taps * c];
    let w = vec![0u8; c * taps];
    let g = dw_geometry(c, 1, taps, 1, taps);
    for ctx in tiers() {
        let f = DepthwiseFilter::new_in(&ctx, &w, c, 1, taps, WeightQuant::per_tensor(255, 1.0)).unwrap();
        let name = f.kernel_name();
        let mut dw = DepthwiseConv::new(f, &g).unwrap();
        let act = Activations::new(MatrixRef::new(&x, taps, c), 255u8, 1.0);
        let mut y = [0i32; 2];
        dw.run_i32(&ctx, act, Some(&[33022, 33022]), MatrixMut::new(&mut y, 1, c)).unwrap();
        assert_eq!(y, [i32::MAX; 2], "{name}");
        // Past: bias 33023, true value 2^31: an i32 output errors; requantized and f32
        // outputs carry the exact value (a wrapped one would be negative).
        let r = dw.run_i32(&ctx, act, Some(&[33023, 0]), MatrixMut::new(&mut y, 1, c));
        assert!(is_overflow(&r), "{name}: {r:?}");
        let mut q = [0u8; 2];
        let rq = Requantize::new(16_777_216.0, 0u8).bias(&[33023, 0]);
        dw.run_requantize(&ctx, act, &rq, MatrixMut::new(&mut q, 1, c)).unwrap();
        let ref0 = requant_ref(MAX + 1, RequantMode::Fp32, 1.0 / 16_777_216.0, QuantizedMultiplier { multiplier: 0, shift: 0 }, 0, 0, 255);
        let ref1 = requant_ref(MAX - 33022, RequantMode::Fp32, 1.0 / 16_777_216.0, QuantizedMultiplier { multiplier: 0, shift: 0 }, 0, 0, 255);
        assert_eq!([q[0] as i64, q[1] as i64], [ref0, ref1], "{name}");
        assert_eq!(q, [128, 128]);
    }
}

/// `Σ_t (x[t] − za)·(w[c][t] − zw)` for one output pixel covering the whole input.
fn dw_ref<B: Int8>(x: &[u8], za: i32, w: &[B], zw: i32, c: usize, taps: usize) -> Vec<i64> {
    (0..c).map(|ch| (0..taps).map(|t| (x[t * c + ch] as i64 - za as i64) * (w[ch * taps + t].to_i32() - zw) as i64).sum()).collect()
}

#[test]
fn depthwise_c4_layout_at_and_past_i8() {
    // The i8 (c4) layout holds centred weights in [−128, 127] (`DwPackFormat::holds`):
    // −128 and 127 take it, 128 and −129 take the i16 layout; both exact.
    let Some(ctx) = tier("depthwise c4 layout", Isa::Avx512Vnni) else { return };
    let (c, taps) = (20, 9);
    let x = vec![255u8; taps * c];
    let g = dw_geometry(c, 3, 3, 3, 3);
    for (w0, zw, c4) in [(-128i8, 0, true), (127, 0, true), (127, -1, false), (-128, 1, false)] {
        let w: Vec<i8> = (0..c * taps).map(|i| if i % 3 == 0 { w0 } else { 5 }).collect();
        let f = DepthwiseFilter::new_in(&ctx, &w, c, 3, 3, WeightQuant::per_tensor(zw, 1.0)).unwrap();
        let name = f.kernel_name();
        assert_eq!(name.contains("c4__"), c4, "{name} for centred {}", w0 as i32 - zw);
        let mut dw = DepthwiseConv::new(f, &g).unwrap();
        let mut y = vec![0i32; c];
        dw.run_i32(&ctx, Activations::new(MatrixRef::new(&x, taps, c), 0u8, 1.0), None, MatrixMut::new(&mut y, 1, c)).unwrap();
        let expect = dw_ref(&x, 0, &w, zw, c, taps);
        assert!(y.iter().zip(&expect).all(|(&g, &e)| g as i64 == e), "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. Indirect conv: runs on the indirect (in-place) kernel entry only where
//    `whole_k_exact` holds for the call's zero point and bias (src/conv/mod.rs);
//    otherwise it gathers (and the GEMM driver chunks K).

#[test]
fn indirect_conv_at_and_past_whole_k_bound() {
    // 1×2 filter, 32768 channels: K = 65536, K·255·128 = i32::MAX − 8 388 607.
    let (cin, cout) = (32768, N);
    let g = Conv2dGeometry { groups: 1, out_c: cout, ..dw_geometry(cin, 1, 2, 1, 2) };
    let w = vec![-128i8; cout * 2 * cin];
    let x = vec![0u8; 2 * cin];
    let sum = 65536i64 * 255 * 128;
    assert_eq!(sum + 8_388_607, MAX);
    let mut saw_indirect = false;
    for ctx in tiers() {
        let conv = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(0, 1.0)).unwrap();
        let indirect = conv.path() == ConvPath::IndirectGemm;
        saw_indirect |= indirect;
        let mut y = vec![0i32; cout];
        // At: |bias| = 8 388 607, the result i32::MAX; the indirect path, no gather.
        ctx.conv2d_i32(&conv, ConvInput::new(&x, 255u8, 1.0), Some(&[8_388_607; N]), &mut y).unwrap();
        assert!(y.iter().all(|&v| v as i64 == MAX), "{}", conv.kernel_name());
        if indirect {
            assert_eq!(conv.workspace_bytes(), 0, "{}: gathered at the bound", conv.kernel_name());
        }
        // Past: |bias| = 8 388 608 (negative, so the result fits): gathered, exact.
        ctx.conv2d_i32(&conv, ConvInput::new(&x, 255u8, 1.0), Some(&[-8_388_608; N]), &mut y).unwrap();
        assert!(y.iter().all(|&v| v as i64 == sum - 8_388_608), "{}", conv.kernel_name());
        if indirect {
            assert!(conv.workspace_bytes() > 0, "{}: not gathered past the bound", conv.kernel_name());
        }
        // Past, positive: 2^31 does not fit the i32 output.
        let r = ctx.conv2d_i32(&conv, ConvInput::new(&x, 255u8, 1.0), Some(&[8_388_608; N]), &mut y);
        assert!(is_overflow(&r), "{}: {r:?}", conv.kernel_name());
    }
    assert!(saw_indirect || common::tiers_filtered(), "no tier took the indirect path (the scalar tier has an indirect entry)");
}

// ---------------------------------------------------------------------------------------
// 5. Codebook (src/codebook): the grid must fit i8 (|grid| ≤ 127, `table_of`); the
//    driver's K·max|a−za|·grid_max + max|bias| ≤ i32::MAX (src/codebook/driver.rs);
//    `max_abs_table: Some(64)` kernels (AVX2 vpmaddubsw lookup, AVX-512 vpsllvw shift).

fn codes_for(levels: &[i16], codes: &[u8], k: usize, n: usize) -> qkern::Result<PackedCodes> {
    let set = LevelSet::codebook_i16(4, levels)?;
    PackedCodes::pack(codes, k, n, &LevelParams::per_tensor(set, 1.0)?)
}

/// `Σ_k (a − za)·grid[code]` per column (+ bias), `codes` k × n.
#[allow(clippy::too_many_arguments)] // the GEMM's own operands, named as in the formula
fn codebook_ref(a: &[u8], za: i32, grid: &[i16], codes: &[u8], m: usize, k: usize, n: usize, bias: Option<&[i32]>) -> Vec<i64> {
    let mut c = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: i64 = (0..k).map(|kk| (a[i * k + kk] as i64 - za as i64) * grid[codes[kk * n + j] as usize] as i64).sum();
            c[i * n + j] = s + bias.map_or(0, |b| b[j] as i64);
        }
    }
    c
}

#[test]
fn codebook_grid_i8_or_i16_table() {
    let ctx = Context::new().unwrap();
    let codes = vec![1u8; 8];
    let p = codes_for(&[1, 127], &codes, 8, 1).unwrap();
    assert_eq!(p.level_set().grid().unwrap().max_abs(), 127);
    let w = CodebookWeights::new_in(&ctx, &p).unwrap();
    assert_eq!(w.table(), &[1, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Past int8: the i16-table kernels, up to ±32767 (the grid's own bound).
    for top in [128i16, 32767] {
        let p = codes_for(&[1, top], &codes, 8, 1).unwrap();
        let w = CodebookWeights::new_in(&ctx, &p).unwrap();
        assert!(w.table().is_empty() && w.table_i16()[..2] == [1, top], "{}", w.kernel_name());
    }
    // −32768 = −2^15 next to 1: no grid within ±32767.
    let r = LevelSet::codebook_i16(4, &[-32768, 1]).map(|s| s.grid().is_none());
    assert!(matches!(r, Ok(true)), "{r:?}");
}

#[test]
fn codebook_driver_bound_at_and_past() {
    // a = 255, za = 0, every weight 127: 66311 · 255 · 127 = i32::MAX − 1912.
    let k = 66311;
    assert_eq!(k as i64 * 255 * 127 + 1912, MAX);
    let n = 8;
    let codes = vec![1u8; k * n];
    let p = codes_for(&[1, 127], &codes, k, n).unwrap();
    let a = vec![255u8; k];
    for ctx in tiers() {
        let w = CodebookWeights::new_in(&ctx, &p).unwrap();
        let act = Activations::new(MatrixRef::new(&a, 1, k), 0u8, 1.0);
        let mut c = vec![0i32; n];
        ctx.codebook_gemm_i32(act, &w, Some(&[1912; 8]), MatrixMut::new(&mut c, 1, n)).unwrap();
        let expect = codebook_ref(&a, 0, &[1, 127], &codes, 1, k, n, Some(&[1912; 8]));
        assert!(expect.iter().all(|&e| e == MAX));
        assert!(c.iter().all(|&v| v == i32::MAX), "{}: {c:?}", w.kernel_name());
        // Past: bias 1913 → 2^31: the chunked path's i32 output reports it.
        let r = ctx.codebook_gemm_i32(act, &w, Some(&[1913; 8]), MatrixMut::new(&mut c, 1, n));
        assert!(is_overflow(&r), "{}: {r:?}", w.kernel_name());
        // Past but fitting (bias −1913): chunked, exact.
        ctx.codebook_gemm_i32(act, &w, Some(&[-1913; 8]), MatrixMut::new(&mut c, 1, n)).unwrap();
        assert!(c.iter().all(|&v| v as i64 == MAX - 1912 - 1913), "{}: {c:?}", w.kernel_name());
    }
}

#[test]
fn codebook_i16_driver_bound_at_and_past() {
    // a = 255, za = 0, every weight 16384 (PoT-5's top): 514 · 255 · 16384 = i32::MAX − 32767.
    let k = 514;
    assert_eq!(k as i64 * 255 * 16384 + 32767, MAX);
    let n = 20;
    let codes = vec![1u8; k * n];
    let p = codes_for(&[1, 16384], &codes, k, n).unwrap();
    let a = vec![255u8; k];
    for ctx in tiers() {
        let w = CodebookWeights::new_in(&ctx, &p).unwrap();
        let act = Activations::new(MatrixRef::new(&a, 1, k), 0u8, 1.0);
        let mut c = vec![0i32; n];
        ctx.codebook_gemm_i32(act, &w, Some(&[32767; 20]), MatrixMut::new(&mut c, 1, n)).unwrap();
        let expect = codebook_ref(&a, 0, &[1, 16384], &codes, 1, k, n, Some(&[32767; 20]));
        assert!(expect.iter().all(|&e| e == MAX));
        assert!(c.iter().all(|&v| v == i32::MAX), "{}: {c:?}", w.kernel_name());
        // Past: bias 32768 → 2^31, through K chunks of 512 (the chunk bound at 2^14).
        let r = ctx.codebook_gemm_i32(act, &w, Some(&[32768; 20]), MatrixMut::new(&mut c, 1, n));
        assert!(is_overflow(&r), "{}: {r:?}", w.kernel_name());
        // Past but fitting (bias −32768): chunked, exact.
        ctx.codebook_gemm_i32(act, &w, Some(&[-32768; 20]), MatrixMut::new(&mut c, 1, n)).unwrap();
        assert!(c.iter().all(|&v| v as i64 == MAX - 32767 - 32768), "{}: {c:?}", w.kernel_name());
        // A K twice the chunk and more, every weight at ±32767 (the widest grid), centred
        // activations: sums of ±2^31-scale chunks carried exactly.
        let k2 = 2000;
        let codes2: Vec<u8> = (0..k2 * n).map(|i| ((i / n) % 3 == 0) as u8).collect();
        let p2 = codes_for(&[-32767, 32767], &codes2, k2, n).unwrap();
        let w2 = CodebookWeights::new_in(&ctx, &p2).unwrap();
        let a2: Vec<u8> = (0..k2).map(|i| if i % 2 == 0 { 255 } else { 0 }).collect();
        let mut cf = vec![0f32; n];
        ctx.codebook_gemm_f32(Activations::new(MatrixRef::new(&a2, 1, k2), 0u8, 1.0), &w2, None, MatrixMut::new(&mut cf, 1, n)).unwrap();
        let e = codebook_ref(&a2, 0, &[-32767, 32767], &codes2, 1, k2, n, None);
        assert!(e.iter().all(|&v| i32::try_from(v).is_err()), "{e:?}");
        for (got, want) in cf.iter().zip(&e) {
            assert_eq!(*got, *want as f32, "{}", w2.kernel_name());
        }
    }
}

/// Packs `levels` codes (alternating codes 0 and 2: the ±extremes) for a kernel; checks
/// the kernel choice and exactness with all-255 activations.
#[cfg(target_arch = "x86_64")]
fn codebook_table_case(ctx: &Context, family: CodebookFamily, levels: &[i16], bounded: &str, at: bool) {
    let (k, n, m) = (64, 16, 3);
    let codes: Vec<u8> = (0..k * n).map(|i| if (i / n) % 2 == 0 { 0 } else { 2 }).collect();
    let p = codes_for(levels, &codes, k, n).unwrap();
    let w = CodebookWeights::with_family(ctx, &p, family).unwrap();
    assert_eq!(w.kernel_name() == bounded, at, "{} for grid {levels:?}", w.kernel_name());
    let a = vec![255u8; m * k];
    let mut c = vec![0i32; m * n];
    ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, m, k), 0u8, 1.0), &w, None, MatrixMut::new(&mut c, m, n)).unwrap();
    let expect = codebook_ref(&a, 0, levels, &codes, m, k, n, None);
    assert!(c.iter().zip(&expect).all(|(&g, &e)| g as i64 == e), "{}", w.kernel_name());
    let r = CodebookWeights::with_kernel(ctx, &p, bounded);
    assert_eq!(r.is_ok(), at);
    if !at {
        assert!(is_unsupported(&r), "{r:?}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn codebook_maddubs_table_at_64_and_past() {
    let Some(ctx) = tier("codebook vpmaddubsw bound", Isa::Avx2) else { return };
    let fast = "qx8_codebook4_gemm_4x16c8_maddubs__avx2";
    codebook_table_case(&ctx, CodebookFamily::Lut, &[-64, 1, 64], fast, true);
    codebook_table_case(&ctx, CodebookFamily::Lut, &[-65, 1, 65], fast, false);
    codebook_table_case(&ctx, CodebookFamily::Lut, &[-64, 1, 65], fast, false);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn shift_vpsllvw_table_at_64_and_past() {
    // i16 lanes sum W = 2 K steps: 2·255·64 = 32640 ≤ 32767; 65 (= 2^6 + 2^0) is still a
    // two-term shift weight but goes to the i32-lane AVX2 shift kernel.
    let Some(ctx) = tier("vpsllvw shift bound", Isa::Avx512Vnni) else { return };
    let bounded = "qx8_shift_apot_gemm_8x16c2__avx512vnni";
    codebook_table_case(&ctx, CodebookFamily::Shift, &[-64, 3, 64], bounded, true);
    codebook_table_case(&ctx, CodebookFamily::Shift, &[-65, 3, 65], bounded, false);
}

#[test]
fn shift_exponent_limit() {
    // Terms are 2^0 … 2^6 (`SHIFT_MAX_EXP`): 64 and 96 = 2^6 + 2^5 encode, 2^7 does not.
    use qkern_kernels::pack::shift::{shift_encode, shift_terms};
    assert_eq!(shift_terms(64), Some(1));
    assert_eq!(shift_terms(-96), Some(2));
    assert_eq!(shift_terms(128), None);
    assert_eq!(shift_terms(-128), None);
    assert!(shift_encode(-64, 1).is_some() && shift_encode(128, 2).is_none());
    // Through the API: a grid reaching 96 runs on the shift kernels, exactly; 127 (seven
    // set bits) is refused by the shift family.
    let ctx = Context::new().unwrap();
    let (k, n) = (40, 3);
    let codes: Vec<u8> = (0..k * n).map(|i| (i % 3) as u8).collect();
    let p = codes_for(&[-96, 1, 96], &codes, k, n).unwrap();
    let w = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Shift).unwrap();
    let a = vec![255u8; k];
    let mut c = vec![0i32; n];
    ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, 1, k), 0u8, 1.0), &w, None, MatrixMut::new(&mut c, 1, n)).unwrap();
    let expect = codebook_ref(&a, 0, &[-96, 1, 96], &codes, 1, k, n, None);
    assert!(c.iter().zip(&expect).all(|(&g, &e)| g as i64 == e), "{}", w.kernel_name());
    let p = codes_for(&[-127, 1, 127], &codes, k, n).unwrap();
    let r = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Shift);
    assert!(is_unsupported(&r), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// 6. Requantization (src/requant.rs): TFLite's i32 arithmetic limits, the multiplier and
//    shift ranges, and exactness at the accumulator extremes.

fn qm(multiplier: i32, shift: i32) -> QuantizedMultiplier {
    QuantizedMultiplier { multiplier, shift }
}

#[test]
fn double_rounding_left_shift_must_fit_i32() {
    // x·2^left must fit i32 (TFLite would wrap it): left = 1 → x ∈ [−2^30, 2^30 − 1].
    let dr = RequantMode::TfliteDoubleRounding;
    for (x, ok) in [(-(1 << 30), true), ((1 << 30) - 1, true), (-(1 << 30) - 1, false), (1 << 30, false)] {
        for mult in [1 << 30, i32::MAX] {
            let r = multiply_by_quantized_multiplier(x, qm(mult, 1), dr);
            if ok {
                assert_eq!(r.unwrap() as i128, fixed_ref(x as i64, qm(mult, 1), dr), "x={x} M={mult}");
            } else {
                assert!(is_overflow(&r), "x={x}: {r:?}");
            }
        }
    }
}

#[test]
fn single_rounding_result_must_fit_i32() {
    // {2^30, 2} doubles x: x ∈ [−2^30, 2^30 − 1] fits, one past does not.
    let sr = RequantMode::SingleRounding;
    for (x, ok) in [(-(1 << 30), true), ((1 << 30) - 1, true), (-(1 << 30) - 1, false), (1 << 30, false)] {
        let r = multiply_by_quantized_multiplier(x, qm(1 << 30, 2), sr);
        if ok {
            assert_eq!(r.unwrap() as i64, 2 * x as i64);
        } else {
            assert!(is_overflow(&r), "x={x}: {r:?}");
        }
    }
}

#[test]
fn multiplier_and_shift_ranges() {
    let (dr, sr) = (RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding);
    let bad = |r: qkern::Result<i32>| matches!(r, Err(Error::InvalidParameter(_)));
    // Mantissa 0 or in [2^30, 2^31).
    assert!(multiply_by_quantized_multiplier(5, qm(1 << 30, 0), dr).is_ok());
    assert!(multiply_by_quantized_multiplier(5, qm(i32::MAX, 0), dr).is_ok());
    assert!(bad(multiply_by_quantized_multiplier(5, qm((1 << 30) - 1, 0), dr)));
    // Shift: [−31, 31] double rounding, [−31, 30] single rounding.
    assert!(multiply_by_quantized_multiplier(0, qm(1 << 30, 31), dr).is_ok());
    assert!(bad(multiply_by_quantized_multiplier(0, qm(1 << 30, 32), dr)));
    assert!(multiply_by_quantized_multiplier(5, qm(1 << 30, -31), dr).is_ok());
    assert!(bad(multiply_by_quantized_multiplier(5, qm(1 << 30, -32), dr)));
    assert!(multiply_by_quantized_multiplier(0, qm(1 << 30, 30), sr).is_ok());
    assert!(bad(multiply_by_quantized_multiplier(0, qm(1 << 30, 31), sr)));
    assert!(bad(multiply_by_quantized_multiplier(5, qm(1 << 30, -32), sr)));
}

#[test]
fn requantizer_exact_at_accumulator_extremes() {
    // `Requantizer::requantize` takes any i64 accumulator exactly (the i128 product,
    // ≤ 2^125, is clamped at 2^100 only where the result saturates anyway).
    let accs = [i32::MIN as i64, MIN + 1, MAX, MAX - 1, i64::MIN, i64::MAX, -1, 1, 0];
    for mode in [RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
        let top = if mode == RequantMode::SingleRounding { 30 } else { 31 };
        for q in [qm(i32::MAX, top), qm(i32::MAX, 0), qm(1 << 30, -31), qm(i32::MAX, -31), qm(1 << 30, 1)] {
            for (lo, hi) in [(i32::MIN, i32::MAX), (-128, 127)] {
                let r = Requantizer::from_multiplier(mode, q, 5).unwrap().with_clamp(lo, hi).unwrap();
                for &acc in &accs {
                    let want = (fixed_ref(acc, q, mode) + 5).clamp(lo as i128, hi as i128);
                    assert_eq!(r.requantize(acc) as i128, want, "{mode:?} {q:?} acc={acc} [{lo}, {hi}]");
                }
            }
        }
    }
    // Fp32: f32(acc)·scale rounded half-even; i32::MAX rounds to 2^31 as an f32.
    let r = Requantizer::new(RequantMode::Fp32, 0.5, 0).unwrap();
    assert_eq!(r.requantize(MAX), 1 << 30);
    assert_eq!(r.requantize(MIN), -(1 << 30));
    let r = Requantizer::new(RequantMode::Fp32, 1.0, 0).unwrap();
    assert_eq!(r.requantize(MAX), i32::MAX); // 2^31 saturates to the clamp
}

// ---------------------------------------------------------------------------------------
// 7. PWLQ exact mode (src/quant/pwlq/kernels.rs): exact for any K. The driver path packs
//    [C | T | S] in K slices of ⌊i32::MAX / (255·Q)⌋ rows (each exact in i32) summed in
//    i64; the fused paths (AVX-512; NEON/dotprod on AArch64) run their kernels on chunks
//    of blocks·64·255·Q < 2^31 and sum them in i64. Past either bound: still exact, no `Error::Overflow`.

#[test]
fn pwlq_exact_mode_at_and_past_i32() {
    use qkern::quant::Granularity;
    use qkern::quant::pwlq::{PwlqGemmWeights, PwlqParams, PwlqTensor};
    // 4-bit: Q = 7. Channel 0: code 7 (centre c = 7); channel 1: code −15 (tail t = −7,
    // sign −1). a = 255, za = 0: Dc = K·1785, at K = 18798·64 = 1 203 072 it is
    // i32::MAX − 127 (one K slice, one fused chunk); one more K (and one more 64-block)
    // passes i32 (two slices, two fused chunks) and must still be exact.
    let q = 7i64;
    let k_at = 18798 * 64;
    assert!(18798 * 64 * 255 * q < 1 << 31 && 18799 * 64 * 255 * q >= 1 << 31);
    assert_eq!(k_at as i64 * 255 * q + 127, MAX);
    let (m_range, p) = (3.0f32, 1.25f32);
    let params = PwlqParams::new(4, Granularity::PerChannel { axis: 0 }, vec![m_range; 2], vec![p; 2]).unwrap();
    let (s1, s2) = (p / 7.0, (m_range - p) / 7.0);
    for (k, slices) in [(k_at, 1), (k_at + 1, 2)] {
        let codes: Vec<i16> = (0..2 * k).map(|i| if i < k { 7 } else { -15 }).collect();
        let packed = PwlqTensor::new(codes, &[2, k], params.clone()).unwrap().pack().unwrap();
        let a = vec![255u8; k];
        // The exact dots, and the f32 combine as its docs define it (each i64 dot rounded
        // once to f32, no FMA).
        let d = [(k as i64 * 255 * 7, 0, 0), (0, -(k as i64) * 255 * 7, -(k as i64) * 255)];
        assert_eq!(d[0].0 > MAX, slices == 2);
        let want: Vec<f32> = d.iter().map(|&(dc, dt, ds)| ((s1 * dc as f32 + s2 * dt as f32) + p * ds as f32) * 0.5).collect();
        // The scalar tier (driver path) and the best one (the fused path on x86 SIMD): the
        // driver's own bound runs through every tier in the GEMM tests above, and the
        // slice bound through every tier in the next test.
        let all = tiers();
        let ends = [all[0].clone(), all[all.len() - 1].clone()];
        for base in ends.into_iter().take(all.len().min(2)) {
            let ctx = base.with_threads(1).unwrap();
            let w = PwlqGemmWeights::new_in(&ctx, &packed).unwrap();
            // The tiers with fused PWLQ kernels for one row: AVX2 and AVX-512 VNNI; every
            // SIMD tier on AArch64.
            let fused_tier = (cfg!(target_arch = "x86_64") && matches!(ctx.kernels().isa, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni | Isa::Amx))
                || (cfg!(target_arch = "aarch64") && ctx.kernels().isa != Isa::Scalar);
            assert_eq!(w.uses_fused(&ctx, 1), fused_tier, "k={k} at {:?}", ctx.kernels().isa);
            assert_eq!(w.k_slices(), slices, "k={k}");
            let mut y = [0f32; 2];
            w.gemm_f32_in(&ctx, Activations::new(MatrixRef::new(&a, 1, k), 0u8, 0.5), None, MatrixMut::new(&mut y, 1, 2)).unwrap();
            assert_eq!(y.map(f32::to_bits), [want[0].to_bits(), want[1].to_bits()], "k={k} at {:?}", ctx.kernels().isa);
            let mut dots = [0i64; 6];
            w.dots_in(&ctx, MatrixRef::new(&a, 1, k), 0u8, &mut dots).unwrap();
            assert_eq!(dots, [d[0].0, d[1].0, d[0].1, d[1].1, d[0].2, d[1].2], "k={k}");
        }
    }
}

/// One PWLQ exact-mode call on `ctx`: the dots equal `want_dots` (computed by the test)
/// and the reference's; the output equals `gemm_exact_ref` bit for bit.
fn pwlq_check<A: Int8>(ctx: &Context, packed: &qkern::quant::pwlq::PwlqPacked, a: &[A], za: A, want_dots: &[i64], bias: &[f32]) {
    use qkern::quant::pwlq::{PwlqGemmWeights, gemm_exact_dots_ref, gemm_exact_ref};
    let (n, k) = (packed.channels(), packed.k());
    let am = MatrixRef::new(a, 1, k);
    let w = PwlqGemmWeights::new_in(ctx, packed).unwrap();
    let r = gemm_exact_dots_ref(am, za, packed).unwrap();
    let mut ref_dots = vec![0i64; 3 * n];
    for (j, t) in r.dots.iter().enumerate() {
        (ref_dots[j], ref_dots[n + j], ref_dots[2 * n + j]) = (t.centre, t.tail, t.tail_sign);
    }
    assert_eq!(ref_dots, want_dots, "reference dots, K = {k}");
    let mut dots = vec![0i64; 3 * n];
    w.dots_in(ctx, am, za, &mut dots).unwrap();
    assert_eq!(dots, want_dots, "{} threads {} K = {k} {}", ctx.kernels().isa.name(), ctx.threads(), A::NAME);
    let mut want = vec![f32::NAN; n];
    gemm_exact_ref(Activations::new(am, za, 0.75), packed, Some(bias), MatrixMut::new(&mut want, 1, n)).unwrap();
    let mut got = vec![f32::NAN; n];
    w.gemm_f32_in(ctx, Activations::new(am, za, 0.75), Some(bias), MatrixMut::new(&mut got, 1, n)).unwrap();
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "{} threads {} K = {k} {}: {got:?} vs {want:?}",
        ctx.kernels().isa.name(),
        ctx.threads(),
        A::NAME
    );
}

#[test]
fn pwlq_exact_mode_past_the_slice_bound_every_tier() {
    use qkern::quant::Granularity;
    use qkern::quant::pwlq::{PwlqGemmWeights, PwlqParams, PwlqTensor};
    // 8-bit: Q = 127, the smallest K that passes i32 with extreme operands. |a − za| = 255
    // everywhere (u8 a = 255, za = 0: +255; i8 a = −128, za = 127: −255). Channel 0: code
    // 127 (c = 127); channel 1: code −255 (t = −127, s = −1); channel 2: codes 127, 200
    // (t = 72, s = 1), −3 (c = −3) in turn. K = 66 311: Dc₀ = ±(i32::MAX − 1 912), one
    // slice; K = 66 312: Dc₀, Dt₁ pass i32 on both sides, two slices.
    let q = 127i64;
    let k_at = (MAX / (255 * q)) as usize;
    assert_eq!((k_at, MAX - k_at as i64 * 255 * q), (66_311, 1_912));
    let params = PwlqParams::new(8, Granularity::PerChannel { axis: 0 }, vec![3.0, 2.0, 5.0], vec![1.25, 0.5, 4.0]).unwrap();
    let n = 3;
    let bias = [0.5f32, -1.0, 0.25];
    for (k, slices) in [(k_at, 1), (k_at + 1, 2)] {
        let code = |c: usize, kk: usize| -> i16 {
            match c {
                0 => 127,
                1 => -255,
                _ => [127, 200, -3][kk % 3],
            }
        };
        let codes: Vec<i16> = (0..n * k).map(|i| code(i / k, i % k)).collect();
        let packed = PwlqTensor::new(codes, &[n, k], params.clone()).unwrap().pack().unwrap();
        let kk = k as i64;
        let thirds = [(0..k).filter(|i| i % 3 == 0).count() as i64, (0..k).filter(|i| i % 3 == 1).count() as i64, (0..k).filter(|i| i % 3 == 2).count() as i64];
        // [Dc₀, Dc₁, Dc₂, Dt₀, Dt₁, Dt₂, Ds₀, Ds₁, Ds₂] for a − za = v.
        let dots = |v: i64| -> Vec<i64> {
            vec![v * kk * 127, 0, v * (127 * thirds[0] - 3 * thirds[2]), 0, -v * kk * 127, v * 72 * thirds[1], 0, -v * kk, v * thirds[1]]
        };
        assert_eq!(dots(255)[0] > MAX && dots(-255)[0] < MIN, slices == 2);
        let (au, ai) = (vec![255u8; k], vec![-128i8; k]);
        for isa in common::available_isas() {
            for ctx in [Context::for_isa(isa).unwrap(), Context::for_isa(isa).unwrap().with_threads(1).unwrap()] {
                assert_eq!(PwlqGemmWeights::new_in(&ctx, &packed).unwrap().k_slices(), slices, "K = {k}");
                pwlq_check(&ctx, &packed, &au, 0u8, &dots(255), &bias);
                pwlq_check(&ctx, &packed, &ai, 127i8, &dots(-255), &bias);
            }
        }
    }
}
