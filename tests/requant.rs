//! Requantization: TFLite's published values, gemmlowp's rounding rules, the three modes
//! on their ties and extremes, randomized comparison against exact oracles written here,
//! and bad input to every public function of `qkern::requant`.
//!
//! Sources of the published values (data only, no code copied):
//! * TFLite `tensorflow/lite/kernels/internal/quantization_util_test.cc` (tests
//!   `QuantizeMultiplierSmallerThanOneExp`, `QuantizeMultiplierGreaterThanOne`,
//!   `QuantizeMultiplierUnderflow`, `QuantizeMultiplierArray`, `PreprocessSoftmaxScaling`,
//!   `MultiplyByQuantizedMultiplierInt32`, `MultiplyByQuantizedMultiplierInt64`,
//!   `IntegerFrExpVersusDouble`).
//! * gemmlowp `test/test_fixedpoint.cc` (`RoundingDivideByPOT` equals `std::round(x / 2^s)`
//!   for s in 0..32 on its list of test values, exactly) and `fixedpoint/fixedpoint.h`
//!   (`SaturatingRoundingDoublingHighMul` is ARM `VQRDMULH`; `INT32_MIN·INT32_MIN`
//!   saturates).

use qkern::requant::{self, QuantizedMultiplier, RequantMode, Requantizer};
use qkern::Error;
use qkern_kernels::reference::requant as r;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DR: RequantMode = RequantMode::TfliteDoubleRounding;
const SR: RequantMode = RequantMode::SingleRounding;
const FP: RequantMode = RequantMode::Fp32;
const MIN: i32 = i32::MIN;
const MAX: i32 = i32::MAX;

fn qm(multiplier: i32, shift: i32) -> QuantizedMultiplier {
    QuantizedMultiplier { multiplier, shift }
}

fn pair(q: QuantizedMultiplier) -> (i32, i32) {
    (q.multiplier, q.shift)
}

// ---------------------------------------------------------------------------------------
// Independent oracles (exact rational arithmetic in i128, or std's f32/f64 rounding).
// ---------------------------------------------------------------------------------------

/// floor(n / 2^k), k < 127.
fn floor_pot(n: i128, k: u32) -> i128 {
    n.div_euclid(1i128 << k)
}

/// round(n / 2^k), ties away from zero, k < 126.
fn round_away_pot(n: i128, k: u32) -> i128 {
    if k == 0 {
        return n;
    }
    let d = 1i128 << k;
    let q = n.abs() / d;
    let rem = n.abs() - q * d;
    let q = if 2 * rem >= d { q + 1 } else { q };
    if n < 0 { -q } else { q }
}

/// gemmlowp double rounding as a rational computation: h = floor(x·M·2^left/2^31 + 1/2)
/// (SaturatingRoundingDoublingHighMul without the i32 bound: the nudge makes ties go
/// toward +∞, as VQRDMULH), then round(h / 2^right) with ties away from zero
/// (RoundingDivideByPOT). shift in −31..=31.
fn oracle_double(x: i64, m: i32, shift: i32) -> i128 {
    assert!((-31..=31).contains(&shift));
    let left = shift.max(0) as u32;
    let right = (-shift).max(0) as u32;
    let n = x as i128 * m as i128 * (1i128 << left); // |n| ≤ 2^125
    // floor(n/2^31 + 1/2) = floor((2n + 2^31) / 2^32)
    let h = floor_pot(2 * n + (1i128 << 31), 32);
    round_away_pot(h, right)
}

/// Single rounding as a rational computation: floor(x·M·2^shift / 2^31 + 1/2).
/// shift in −31..=30.
fn oracle_single(x: i64, m: i32, shift: i32) -> i128 {
    assert!((-31..=30).contains(&shift));
    let n = x as i128 * m as i128; // |n| ≤ 2^94
    if shift >= 0 {
        // floor((2·n·2^shift + 2^31) / 2^32)
        floor_pot(2 * n * (1i128 << shift) + (1i128 << 31), 32)
    } else {
        let k = (31 - shift) as u32; // 32..=62
        floor_pot(2 * n + (1i128 << k), k + 1)
    }
}

/// ONNX fp32 requantization with std's rounding: the f32 product is the exact product
/// (computed in f64, which holds 48 significant bits exactly) rounded once to f32.
fn oracle_fp32(acc: i64, scale: f32, zp: i32) -> i64 {
    let p = ((acc as f32) as f64 * scale as f64) as f32;
    (p.round_ties_even() as i64).saturating_add(zp as i64)
}

fn sat_i32(v: i128) -> i32 {
    v.clamp(MIN as i128, MAX as i128) as i32
}

// ---------------------------------------------------------------------------------------
// TFLite: QuantizeMultiplier
// ---------------------------------------------------------------------------------------

/// Asserts the kernel-level and the safe `quantize_multiplier` give `expected` in `modes`.
fn check_qm(real: f64, modes: &[RequantMode], expected: (i32, i32)) {
    for &mode in modes {
        assert_eq!(pair(r::quantize_multiplier(real, mode)), expected, "reference, real = {real:e}, {mode:?}");
        if real >= 0.0 {
            assert_eq!(pair(requant::quantize_multiplier(real, mode).unwrap()), expected, "safe, real = {real:e}, {mode:?}");
        }
    }
}

#[test]
fn tflite_quantize_multiplier_smaller_than_one() {
    // QuantizeMultiplierSmallerThanOneExp.
    let both = [DR, SR];
    check_qm(0.25, &both, (1073741824, -1));
    // Around 0.5 the exponent changes; TFLite avoids hitting 2^31.
    check_qm(0.50 - 5e-9, &both, (2147483627, -1));
    check_qm(0.50 - 1e-10, &both, (1073741824, 0));
    check_qm(0.50, &both, (1073741824, 0));
    check_qm(0.75, &both, (1610612736, 0));
    check_qm(1.0 - 1e-9, &both, (2147483646, 0));
    // TFLite's SmallerThanOneExp dies on 1 − 1e-15 because QuantizeMultiplier rounds the
    // mantissa up to 2^31 and so returns shift 1 (derived from the rule, not published).
    check_qm(1.0 - 1e-15, &both, (1073741824, 1));
    check_qm(0.0, &both, (0, 0));
}

#[test]
fn tflite_quantize_multiplier_greater_than_one() {
    // QuantizeMultiplierGreaterThanOne.
    let both = [DR, SR];
    check_qm(1.0 + 1e-11, &both, (1073741824, 1));
    check_qm(1.25, &both, (1342177280, 1));
    check_qm(1.50, &both, (1610612736, 1));
    check_qm(1.75, &both, (1879048192, 1));
    check_qm(2.0 - 1e-9, &both, (2147483647, 1));
    check_qm(2.0 - 1e-11, &both, (1073741824, 2));
    check_qm(2.0, &both, (1073741824, 2));
}

#[test]
fn tflite_quantize_multiplier_underflow() {
    // QuantizeMultiplierUnderflow: std::ldexp of *float* values.
    let both = [DR, SR];
    let ldexp_f = |m: f32, e: i32| m as f64 * 2f64.powi(e);
    check_qm(ldexp_f(1.0, -31), &both, (1073741824, -30));
    check_qm(ldexp_f(1.0, -32), &both, (1073741824, -31));
    check_qm(ldexp_f(0.99, -32), &both, (0, 0));
    check_qm(ldexp_f(1.0, -33), &both, (0, 0));
    // The smallest values of all flush to zero too (subnormal input to frexp).
    check_qm(f64::from_bits(1), &both, (0, 0));
    check_qm(f64::MIN_POSITIVE, &both, (0, 0));
}

#[test]
fn tflite_quantize_multiplier_array() {
    // QuantizeMultiplierArray (double-rounding build: negative multipliers allowed; the
    // reference follows TFLite, the safe API rejects negatives — see bad_input tests).
    let weights = [-4.0, -2.0, -1.0, -0.5, -0.25, -0.125, 0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0];
    let significand = [
        -1073741824,
        -1073741824,
        -1073741824,
        -1073741824,
        -1073741824,
        -1073741824,
        0,
        1073741824,
        1073741824,
        1073741824,
        1073741824,
        1073741824,
        1073741824,
    ];
    let shift = [3, 2, 1, 0, -1, -2, 0, -2, -1, 0, 1, 2, 3];
    for i in 0..weights.len() {
        check_qm(weights[i], &[DR], (significand[i], shift[i]));
    }
}

#[test]
fn tflite_quantize_multiplier_saturation_and_negative_edge() {
    // PreprocessSoftmaxScaling: the real multiplier is
    // min(beta · scale · 2^(31 − integer_bits), max_real) with max_real = 2^31 − 1
    // (double-rounding build) or 2^30 − 1 (single-rounding build), then QuantizeMultiplier.
    let real = |beta: f64, scale: f64, bits: i32, max_real: f64| (beta * scale * (1u64 << (31 - bits)) as f64).min(max_real);
    let dr_max = (1u64 << 31) as f64 - 1.0;
    check_qm(real(1.0, 16.0, 4, dr_max), &[DR], (2147483647, 31));
    check_qm(real(1.0, 8.0, 4, dr_max), &[DR], (1073741824, 31));
    check_qm(real(2.0, 16.0, 5, dr_max), &[DR], (2147483647, 31));
    check_qm(real(2.0, 8.0, 5, dr_max), &[DR], (1073741824, 31));
    let sr_max = (1u64 << 30) as f64 - 1.0;
    check_qm(real(1.0, 8.0, 4, sr_max), &[SR], (2147483646, 30));
    check_qm(real(1.0, 4.0, 4, sr_max), &[SR], (1073741824, 30));
    check_qm(real(2.0, 8.0, 5, sr_max), &[SR], (2147483646, 30));
    check_qm(real(2.0, 4.0, 5, sr_max), &[SR], (1073741824, 30));

    // Single rounding caps shift > 30 at {2^31 − 1, 30}; double rounding does not cap.
    check_qm(2f64.powi(30), &[SR], (MAX, 30));
    check_qm(2f64.powi(30), &[DR], (1 << 30, 31));
    check_qm(1e20, &[SR], (MAX, 30));
    let big = r::quantize_multiplier(1e20, DR);
    assert_eq!(big.shift, 67); // frexp(1e20).1
    assert!(big.multiplier >= 1 << 30);
    // Rounding up to 2^31 at a power of two minus a hair: halve and shift + 1.
    check_qm(4.0 * (1.0 - f64::EPSILON / 2.0), &[DR, SR], (1 << 30, 3));
    // Negative mantissa rounding to −2^31 is kept as INT32_MIN (TFLite only halves +2^31).
    assert_eq!(pair(r::quantize_multiplier(-(1.0 - f64::EPSILON / 2.0), DR)), (MIN, 0));
}

#[test]
fn frexp_and_rounding_primitives() {
    // IntegerFrExpVersusDouble's std::frexp values, exactly.
    assert_eq!(r::frexp(0.0), (0.0, 0));
    assert_eq!(r::frexp(1.0), (0.5, 1));
    assert_eq!(r::frexp(0.25), (0.5, -1));
    assert_eq!(r::frexp(-1.0), (-0.5, 1));
    assert_eq!(r::frexp(123.45), (123.45 / 128.0, 7)); // 0.964453..., division by 2^7 is exact
    // Subnormals and the extremes of f64.
    assert_eq!(r::frexp(f64::from_bits(1)), (0.5, -1073));
    assert_eq!(r::frexp(f64::MAX), (f64::MAX / 2f64.powi(1023) / 2.0, 1024));
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..100_000 {
        let x = f64::from_bits(rng.random::<u64>());
        if !x.is_finite() || x == 0.0 {
            continue;
        }
        let (m, e) = r::frexp(x);
        assert!((0.5..1.0).contains(&m.abs()), "frexp({x:e}) mantissa {m}");
        // m · 2^e == x, checked in two exact power-of-two steps.
        let back = m * 2f64.powi(e / 2) * 2f64.powi(e - e / 2);
        assert_eq!(back, x, "frexp({x:e}) = ({m}, {e})");
    }

    // round_half_even_f32 against std's round_ties_even, on edges and random bit patterns.
    let edges = [
        0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 8388607.5, -8388607.5, 8388606.5, 4194304.5,
        4194305.5, 8388608.0, 16777215.0, -0.0, 0.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, f32::MIN,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let random = (0..1_000_000).map(|_| f32::from_bits(rng.random::<u32>()));
    for v in edges.into_iter().chain(random) {
        let got = r::round_half_even_f32(v);
        let want = v.round_ties_even();
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "round_half_even_f32({v:e}) = {got:e}, want {want:e}");
    }
    // round_half_away_f64 against std's round (C round, TfLiteRound).
    let edges = [0.5f64, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999999999999994, 4503599627370495.5, -4503599627370495.5, -0.0];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let random = (0..1_000_000).map(|_| f64::from_bits(rng.random::<u64>()));
    for v in edges.into_iter().chain(random) {
        let got = r::round_half_away_f64(v);
        let want = v.round();
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "round_half_away_f64({v:e}) = {got:e}, want {want:e}");
    }
}

// ---------------------------------------------------------------------------------------
// TFLite: MultiplyByQuantizedMultiplier
// ---------------------------------------------------------------------------------------

/// QuantizeMultiplier then every form of the multiply in `mode`, all must give `expected`.
fn quant_and_multiply(x: i32, real: f64, mode: RequantMode, expected: i32) {
    let q = r::quantize_multiplier(real, mode);
    let i32_form = match mode {
        DR => r::multiply_by_quantized_multiplier_double_rounding(x, q),
        _ => r::multiply_by_quantized_multiplier_single_rounding(x, q),
    };
    assert_eq!(i32_form, expected, "i32 form, x = {x}, real = {real}, {mode:?}");
    assert_eq!(r::requantize_fixed(x as i64, q, mode, 0), expected as i64, "i64 form, x = {x}, real = {real}, {mode:?}");
    if real >= 0.0 {
        let q2 = requant::quantize_multiplier(real, mode).unwrap();
        assert_eq!(requant::multiply_by_quantized_multiplier(x, q2, mode).unwrap(), expected, "safe API, x = {x}, {mode:?}");
    }
}

#[test]
fn tflite_multiply_by_quantized_multiplier_int32() {
    // MultiplyByQuantizedMultiplierInt32: both builds.
    for mode in [DR, SR] {
        quant_and_multiply(0, 0.1, mode, 0);
        quant_and_multiply(1, 0.0, mode, 0);
        quant_and_multiply(10000, 0.00097656, mode, 10);
        quant_and_multiply(-10000, 0.00097656, mode, -10);
        quant_and_multiply(MIN, 0.00001, mode, -21475);
        quant_and_multiply(MAX, 0.00001, mode, 21475);
    }
    // Negative multipliers: double-rounding build only.
    quant_and_multiply(10000, -0.00097656, DR, -10);
    quant_and_multiply(-10000, -0.00097656, DR, 10);
    quant_and_multiply(MIN, -0.00001, DR, 21475);
    quant_and_multiply(MAX, -0.00001, DR, -21475);

    // Maximum x and multiplier, shift −3: TFLite expects TfLiteRound(x·M / 2^34) in double.
    let (x, m, shift) = (MAX, MAX, -3);
    let tflite_expected = ((x as i64 * m as i64) as f64 / (1u64 << (31 - shift)) as f64).round() as i32;
    assert_eq!(tflite_expected, 268435456); // (2^31−1)^2 / 2^34 = 268435455.75…
    for mode in [DR, SR] {
        for (xx, want) in [(x, tflite_expected), (-x, -tflite_expected)] {
            let q = qm(m, shift);
            let got = match mode {
                DR => r::multiply_by_quantized_multiplier_double_rounding(xx, q),
                _ => r::multiply_by_quantized_multiplier_single_rounding(xx, q),
            };
            assert_eq!(got, want, "{mode:?} x = {xx}");
            assert_eq!(r::requantize_fixed(xx as i64, q, mode, 0), want as i64);
            assert_eq!(requant::multiply_by_quantized_multiplier(xx, q, mode).unwrap(), want);
        }
    }
}

#[test]
fn tflite_multiply_by_quantized_multiplier_int64() {
    // MultiplyByQuantizedMultiplierInt64. Values in i32 range: identical.
    for mode in [DR, SR] {
        for (x, real, want) in [(0i64, 0.1, 0i64), (1, 0.0, 0), (10000, 0.00097656, 10), (-10000, 0.00097656, -10)] {
            assert_eq!(r::requantize_fixed(x, r::quantize_multiplier(real, mode), mode, 0), want);
        }
    }
    // Beyond i32, TFLite's int64 overload first rounds the multiplier to 16 bits and so
    // publishes −1407385600 / 1407385600 for ±2^47 · 1e-5 and 65534 for the maximum case.
    // qkern's i64 form is exact instead; the exact values, computed independently:
    // QuantizeMultiplier(1e-5) = {round(0.65536 · 2^31), −16} = {1407374884, −16}, and
    // 2^47 · M · 2^−47 = M exactly.
    for mode in [DR, SR] {
        let q = r::quantize_multiplier(0.00001, mode);
        assert_eq!(pair(q), (1407374884, -16));
        assert_eq!(r::requantize_fixed(-(1i64 << 47), q, mode, 0), -1407374884);
        assert_eq!(r::requantize_fixed((1i64 << 47) - 1, q, mode, 0), 1407374884);
        // (2^47 − 1)(2^31 − 1) / 2^62 = 65535.99997…: exact rounding gives 65536.
        let q = qm(MAX, -31);
        let x = (1i64 << 47) - 1;
        let exact = oracle_single(x, MAX, -31);
        assert_eq!(exact, 65536);
        assert_eq!(r::requantize_fixed(x, q, mode, 0), 65536);
        assert_eq!(r::requantize_fixed(-x, q, mode, 0), -65536);
    }
}

// ---------------------------------------------------------------------------------------
// gemmlowp rounding rules
// ---------------------------------------------------------------------------------------

/// gemmlowp's test value list: ±(2^i + {−2..=2}) for i < 31, the i32 extremes, and 1000
/// random values (ours from a fixed seed).
fn gemmlowp_test_values() -> Vec<i32> {
    let mut v = Vec::new();
    for i in 0..31 {
        let p = 1i32 << i;
        for d in -2..=2 {
            v.push(p.wrapping_add(d));
            v.push((-p).wrapping_add(d));
        }
    }
    v.extend([MIN, MIN + 1, MIN + 2, MAX - 2, MAX - 1, MAX]);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    v.extend((0..1000).map(|_| rng.random::<i32>()));
    v.sort();
    v
}

#[test]
fn gemmlowp_rounding_divide_by_pot() {
    // test_fixedpoint.cc: RoundingDivideByPOT(x, s) == std::round(x / 2^s) exactly, s < 32.
    let vals = gemmlowp_test_values();
    for s in 0..32 {
        for &x in &vals {
            let want = (x as f64 / (1u64 << s) as f64).round() as i32; // x / 2^s is exact in f64
            assert_eq!(r::rounding_divide_by_pot(x, s), want, "RoundingDivideByPOT({x}, {s})");
        }
    }
    // Exponent 0 is the identity; exponent 31 at the extremes.
    for &x in &vals {
        assert_eq!(r::rounding_divide_by_pot(x, 0), x);
    }
    assert_eq!(r::rounding_divide_by_pot(MIN, 31), -1);
    assert_eq!(r::rounding_divide_by_pot(MAX, 31), 1);
    assert_eq!(r::rounding_divide_by_pot(1 << 30, 31), 1); // +0.5 → 1
    assert_eq!(r::rounding_divide_by_pot(-(1 << 30), 31), -1); // −0.5 → −1
    assert_eq!(r::rounding_divide_by_pot((1 << 30) - 1, 31), 0);
    assert_eq!(r::rounding_divide_by_pot(-(1 << 30) + 1, 31), 0);
    // Negative ties go away from zero.
    for (x, s, want) in [(-1, 1, -1), (-3, 1, -2), (-5, 1, -3), (1, 1, 1), (3, 1, 2), (-6, 2, -2), (-2, 2, -1), (2, 2, 1), (-10, 2, -3)] {
        assert_eq!(r::rounding_divide_by_pot(x, s), want, "RoundingDivideByPOT({x}, {s})");
    }
    // Outside gemmlowp's 0..=31: exact rounding beyond, identity below.
    assert_eq!(r::rounding_divide_by_pot(MIN, 32), -1); // −0.5 → −1
    assert_eq!(r::rounding_divide_by_pot(MAX, 32), 0);
    assert_eq!(r::rounding_divide_by_pot(MIN, 33), 0);
    assert_eq!(r::rounding_divide_by_pot(MIN, i32::MAX), 0);
    assert_eq!(r::rounding_divide_by_pot(12345, -4), 12345);
}

#[test]
fn gemmlowp_saturating_rounding_doubling_high_mul() {
    // The one saturating case.
    assert_eq!(r::saturating_rounding_doubling_high_mul(MIN, MIN), MAX);
    // Nudge rounding on both signs: the nudge makes ties go toward +∞ (VQRDMULH), so
    // +0.5 → 1 but −0.5 → 0 and −1.5 → −1.
    let half = 1 << 30;
    assert_eq!(r::saturating_rounding_doubling_high_mul(1, half), 1);
    assert_eq!(r::saturating_rounding_doubling_high_mul(-1, half), 0);
    assert_eq!(r::saturating_rounding_doubling_high_mul(3, half), 2);
    assert_eq!(r::saturating_rounding_doubling_high_mul(-3, half), -1);
    assert_eq!(r::saturating_rounding_doubling_high_mul(half, -1), 0);
    // Just off the tie, both signs round to nearest.
    assert_eq!(r::saturating_rounding_doubling_high_mul(-1, half + 1), -1); // −0.500000000466
    assert_eq!(r::saturating_rounding_doubling_high_mul(1, half - 1), 0); // 0.49999999953
    // Extremes (exact products, computed by hand).
    assert_eq!(r::saturating_rounding_doubling_high_mul(MIN, MAX), -MAX);
    assert_eq!(r::saturating_rounding_doubling_high_mul(MAX, MAX), MAX - 1);
    assert_eq!(r::saturating_rounding_doubling_high_mul(MIN, 1), -1);
    assert_eq!(r::saturating_rounding_doubling_high_mul(MIN, -1), 1);
    assert_eq!(r::saturating_rounding_doubling_high_mul(MIN, 0), 0);
    // Against the ARM definition of VQRDMULH, sat((2ab + 2^31) >> 32), on all pairs.
    let vals = gemmlowp_test_values();
    for &a in &vals {
        for &b in &vals {
            let want = sat_i32((2 * a as i128 * b as i128 + (1i128 << 31)) >> 32);
            assert_eq!(r::saturating_rounding_doubling_high_mul(a, b), want, "SRDHM({a}, {b})");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The three modes: ties and extremes
// ---------------------------------------------------------------------------------------

/// The value of every form of a fixed-point mode, which must agree; returns it.
fn fixed(x: i64, m: i32, shift: i32, mode: RequantMode) -> i64 {
    let q = qm(m, shift);
    let v = r::requantize_fixed(x, q, mode, 0);
    let oracle = match mode {
        DR => oracle_double(x, m, shift),
        _ => oracle_single(x, m, shift),
    };
    assert_eq!(v as i128, oracle, "requantize_fixed({x}, {{{m}, {shift}}}, {mode:?}) vs oracle");
    v
}

#[test]
fn ties_in_each_mode() {
    let half = 1 << 30; // M = 2^30: real = 0.5 · 2^shift
    // shift 0 (real 0.5): one rounding in both fixed modes, ties toward +∞.
    for mode in [DR, SR] {
        for (x, want) in [(1, 1), (-1, 0), (3, 2), (-3, -1), (5, 3), (-5, -2)] {
            assert_eq!(fixed(x, half, 0, mode), want, "{mode:?} x = {x}");
            let q = qm(half, 0);
            let i32_form = if mode == DR {
                r::multiply_by_quantized_multiplier_double_rounding(x as i32, q)
            } else {
                r::multiply_by_quantized_multiplier_single_rounding(x as i32, q)
            };
            assert_eq!(i32_form as i64, want);
        }
    }
    // shift −1 (real 0.25): exact high product, then RoundingDivideByPOT rounds the tie
    // away from zero; single rounding rounds it toward +∞; fp32 to even.
    for (x, dr, sr, fp) in [(2, 1, 1, 0), (-2, -1, 0, 0), (6, 2, 2, 2), (-6, -2, -1, -2), (10, 3, 3, 2), (-10, -3, -2, -2)] {
        assert_eq!(fixed(x, half, -1, DR), dr, "double x = {x}");
        assert_eq!(fixed(x, half, -1, SR), sr, "single x = {x}");
        assert_eq!(r::requantize_fp32(x, 0.25, 0), fp, "fp32 x = {x}");
        assert_eq!(r::multiply_by_quantized_multiplier_double_rounding(x as i32, qm(half, -1)) as i64, dr);
        assert_eq!(r::multiply_by_quantized_multiplier_single_rounding(x as i32, qm(half, -1)) as i64, sr);
    }
    // The double-rounding artefact: 1 · 0.375 = 0.375, but 0.75 → 1 then 1/2 → 1.
    assert_eq!(fixed(1, 3 << 29, -1, DR), 1);
    assert_eq!(fixed(1, 3 << 29, -1, SR), 0);
    assert_eq!(r::requantize_fp32(1, 0.375, 0), 0);
    // Fp32 ties: to even, both signs, and the sign of zero does not leak into the result.
    for (acc, want) in [(1, 0), (-1, 0), (3, 2), (-3, -2), (5, 2), (-5, -2), (7, 4), (-7, -4)] {
        assert_eq!(r::requantize_fp32(acc, 0.5, 0), want, "fp32 acc = {acc}");
        assert_eq!(r::requantize_fp32(acc, 0.5, 10), want + 10);
    }
    // Ties at the top of the fixed modes' range: shift −31, M = 2^30 maps INT32_MIN to
    // exactly −0.5.
    assert_eq!(fixed(MIN as i64, half, -31, DR), -1); // SRDHM exact −2^30, then away
    assert_eq!(fixed(MIN as i64, half, -31, SR), 0); // toward +∞
    assert_eq!(r::requantize_fp32(MIN as i64, 2f32.powi(-32), 0), 0); // to even
    // i64 ties: acc / 2^11 = ±(2^29 + 1/2).
    let acc = (1i64 << 40) + (1 << 10);
    assert_eq!(fixed(acc, half, -10, DR), (1 << 29) + 1);
    assert_eq!(fixed(-acc, half, -10, DR), -(1 << 29) - 1);
    assert_eq!(fixed(acc, half, -10, SR), (1 << 29) + 1);
    assert_eq!(fixed(-acc, half, -10, SR), -(1 << 29));
}

#[test]
fn extremes_of_the_fixed_point_modes() {
    let half = 1 << 30;
    for mode in [DR, SR] {
        // Multiplier 2^31 − 1 and 2^30, shift 0 and −31, x at the i32 extremes
        // (values from exact big-integer arithmetic).
        assert_eq!(fixed(MIN as i64, MAX, 0, mode), -(MAX as i64));
        assert_eq!(fixed(MAX as i64, MAX, 0, mode), MAX as i64 - 1);
        assert_eq!(fixed(MAX as i64, MAX, -31, mode), 1);
        assert_eq!(fixed(MIN as i64, MAX, -31, mode), -1);
        assert_eq!(fixed(MIN as i64, half, 0, mode), -(1 << 30));
        assert_eq!(fixed(MAX as i64, half, 0, mode), 1 << 30); // 2^30 − 1/2 → 2^30
        assert_eq!(fixed(0, MAX, -31, mode), 0);
        assert_eq!(fixed(MAX as i64, 0, 0, mode), 0);
        // shift +30: the largest left shift both modes share.
        assert_eq!(fixed(1, half, 30, mode), 1 << 29);
        assert_eq!(fixed(-1, half, 30, mode), -(1 << 29));
        assert_eq!(fixed(2, half, 30, mode), 1 << 30);
        assert_eq!(fixed(-2, MAX, 30, mode), -(MAX as i64)); // x·M/2
        assert_eq!(fixed(1, MAX, 30, mode), 1 << 30); // (2^31 − 1)/2 → 2^30
        // i64 accumulators far beyond i32.
        assert_eq!(fixed(i64::MAX, half, -31, mode), 1 << 31); // (2^63 − 1)/2^32 → 2^31
        assert_eq!(fixed(i64::MIN, half, -31, mode), -(1 << 31));
        assert_eq!(fixed(i64::MIN, MAX, -31, mode), -((1i64 << 32) - 2)); // −2^32 + 2
        assert_eq!(fixed(i64::MIN, half, 0, mode), i64::MIN / 2);
        assert_eq!(fixed(i64::MAX, half, 1, mode), i64::MAX);
        assert_eq!(fixed(i64::MIN, half, 1, mode), i64::MIN);
        // The exact result saturates at the i64 range only after the zero point is added.
        let q = qm(half, 1); // real 1.0
        assert_eq!(r::requantize_fixed(i64::MAX, q, mode, 5), i64::MAX);
        assert_eq!(r::requantize_fixed(i64::MAX, q, mode, -5), i64::MAX - 5);
        assert_eq!(r::requantize_fixed(i64::MIN, q, mode, 5), i64::MIN + 5);
        assert_eq!(r::requantize_fixed(i64::MIN, q, mode, -5), i64::MIN);
        assert_eq!(r::requantize_fixed(i64::MIN, qm(MAX, 30), mode, 0), i64::MIN);
        assert_eq!(r::requantize_fixed(i64::MAX, qm(MAX, 30), mode, 0), i64::MAX);
    }
    // Where the two modes part at the extremes: MAX · 2^30 / 2^62 = 0.4999999998.
    assert_eq!(fixed(MAX as i64, half, -31, DR), 1); // SRDHM rounds up to 2^30, then 0.5 → 1
    assert_eq!(fixed(MAX as i64, half, -31, SR), 0);

    // Shifts outside TFLite's ranges are still exact in the i64 form.
    assert_eq!(r::requantize_fixed(3, qm(half, 40), SR, 0), 3i64 << 39);
    assert_eq!(r::requantize_fixed(3, qm(half, 40), DR, 0), 3i64 << 39);
    assert_eq!(r::requantize_fixed(-3, qm(half, 200), DR, 0), i64::MIN);
    assert_eq!(r::requantize_fixed(3, qm(half, i32::MAX), SR, 0), i64::MAX);
    assert_eq!(r::requantize_fixed(i64::MAX, qm(MAX, -200), DR, 7), 7);
    assert_eq!(r::requantize_fixed(i64::MIN, qm(MAX, i32::MIN), SR, 7), 7);
    assert_eq!(r::requantize_fixed(0, qm(MAX, i32::MAX), DR, 7), 7);

    // The i32 forms at their overflow points, bit-exact with TFLite's arithmetic:
    // x · 2^left wraps in the double-rounding form (2 · 2^30 → INT32_MIN), the exact
    // form does not, and the safe API reports it.
    let q = qm(half, 30);
    let wrapped = r::saturating_rounding_doubling_high_mul(2i32.wrapping_mul(1 << 30), half);
    assert_eq!(wrapped, -(1 << 30));
    assert_eq!(r::multiply_by_quantized_multiplier_double_rounding(2, q), wrapped);
    assert_eq!(r::requantize_fixed(2, q, DR, 0), 1 << 30);
    assert!(matches!(requant::multiply_by_quantized_multiplier(2, q, DR), Err(Error::Overflow(_))));
    // Shift 31 in double rounding: x = −1 still fits (−2^31), x = 1 does not.
    assert_eq!(requant::multiply_by_quantized_multiplier(-1, qm(half, 31), DR).unwrap(), -(1 << 30));
    assert!(matches!(requant::multiply_by_quantized_multiplier(1, qm(half, 31), DR), Err(Error::Overflow(_))));
    // SRDHM's saturation (only reachable with TFLite's negative INT32_MIN multiplier):
    // the i32 form saturates to INT32_MAX; the exact form gives 2^31.
    assert_eq!(r::multiply_by_quantized_multiplier_double_rounding(MIN, qm(MIN, 0)), MAX);
    assert_eq!(r::requantize_fixed(MIN as i64, qm(MIN, 0), DR, 0), 1i64 << 31);
    // Single rounding: a result beyond i32 saturates in the i32 form, errors in the API.
    let q = qm(MAX, 30);
    // (x·M/2 with M = 2^31 − 1: x = ±2 still fits, ±4 does not.)
    assert_eq!(r::multiply_by_quantized_multiplier_single_rounding(-2, q), -MAX);
    assert_eq!(r::multiply_by_quantized_multiplier_single_rounding(-4, q), MIN);
    assert_eq!(r::multiply_by_quantized_multiplier_single_rounding(4, q), MAX);
    assert_eq!(r::requantize_fixed(-4, q, SR, 0), -2 * MAX as i64);
    assert!(matches!(requant::multiply_by_quantized_multiplier(-4, q, SR), Err(Error::Overflow(_))));
    assert_eq!(requant::multiply_by_quantized_multiplier(-2, q, SR).unwrap(), -MAX);
}

#[test]
fn extremes_of_fp32() {
    // f32(acc) is rounded first, as MLAS does: 2^24 + 1 → 2^24 (tie to even).
    assert_eq!(r::requantize_fp32(16_777_217, 1.0, 0), 16_777_216);
    assert_eq!(r::requantize_fp32(MAX as i64, 1.0, 0), 1i64 << 31);
    assert_eq!(r::requantize_fp32(MIN as i64, 1.0, -3), -(1i64 << 31) - 3);
    assert_eq!(r::requantize_fp32(MIN as i64, 2f32.powi(-31), 0), -1);
    assert_eq!(r::requantize_fp32(MAX as i64, 2f32.powi(-31), 0), 1);
    // i64 beyond i32: f32(2^40 + 2^10) = 2^40, so the tie of the exact value is not seen.
    assert_eq!(r::requantize_fp32((1 << 40) + (1 << 10), 2f32.powi(-11), 0), 1 << 29);
    assert_eq!(r::requantize_fp32(i64::MAX, 2f32.powi(-40), 0), 1 << 23);
    // Products beyond i64 or f32 saturate; NaN products give the zero point.
    assert_eq!(r::requantize_fp32(i64::MAX, f32::MAX, 3), i64::MAX);
    assert_eq!(r::requantize_fp32(i64::MIN, f32::MAX, 3), i64::MIN + 3);
    assert_eq!(r::requantize_fp32(i64::MIN, 1.0, -3), i64::MIN);
    assert_eq!(r::requantize_fp32(5, f32::NAN, 3), 3);
    assert_eq!(r::requantize_fp32(0, f32::INFINITY, 3), 3);
    assert_eq!(r::requantize_fp32(1, f32::MIN_POSITIVE, 0), 0);
    // Clamp, with the bounds the wrong way round: no panic, the upper bound wins.
    assert_eq!(r::requantize(1000, FP, 1.0, qm(0, 0), 0, -128, 127), 127);
    assert_eq!(r::requantize(-1000, FP, 1.0, qm(0, 0), 0, -128, 127), -128);
    assert_eq!(r::requantize(0, FP, 1.0, qm(0, 0), 0, 10, -10), -10);
    assert_eq!(r::requantize(i64::MIN, DR, 1.0, qm(MAX, 30), 0, 0, 255), 0);
}

/// floor(v + 1/2) without the inexact addition: floor and the fraction are exact in f64.
fn floor_half_up(v: f64) -> f64 {
    let f = v.floor();
    if v - f >= 0.5 { f + 1.0 } else { f }
}

#[test]
fn f64_oracle_for_wide_accumulators() {
    // An independent check in f64 where every intermediate is exact: |x| < 2^50 and a
    // multiplier with at most 3 significant bits, so x·M has ≤ 53 bits.
    let ms = [1 << 30, 3 << 29, 5 << 28, 7 << 28];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..100_000 {
        let x = rng.random_range(-(1i64 << 50)..(1i64 << 50));
        let m = ms[rng.random_range(0..ms.len())];
        let shift = rng.random_range(-31..=0);
        let p = x as f64 * m as f64; // exact
        let single = floor_half_up(p * 2f64.powi(shift - 31));
        let high = floor_half_up(p / 2f64.powi(31));
        let double = (high * 2f64.powi(shift)).round(); // std round: ties away from zero
        assert_eq!(r::requantize_fixed(x, qm(m, shift), SR, 0) as f64, single, "single x = {x} M = {m} shift = {shift}");
        assert_eq!(r::requantize_fixed(x, qm(m, shift), DR, 0) as f64, double, "double x = {x} M = {m} shift = {shift}");
    }
}

// ---------------------------------------------------------------------------------------
// Randomized comparison against the exact oracles
// ---------------------------------------------------------------------------------------

fn random_multiplier(rng: &mut ChaCha8Rng) -> i32 {
    match rng.random_range(0..8) {
        0 => 1 << 30,
        1 => MAX,
        2 => 3 << 29,
        // Few significant bits: many exact ties.
        3 | 4 => {
            let bits = rng.random_range(1..=8);
            let top = rng.random_range((1i64 << (bits - 1))..(1i64 << bits));
            (top << (31 - bits)) as i32
        }
        _ => rng.random_range((1 << 30)..=MAX),
    }
}

fn random_acc(rng: &mut ChaCha8Rng, wide: bool) -> i64 {
    let v = match rng.random_range(0..6) {
        0 => rng.random_range(-1000..=1000),
        1 => rng.random::<i32>() as i64,
        // ± 2^k + small: lands on ties with power-of-two-ish multipliers.
        2 => {
            let k = rng.random_range(0..if wide { 62 } else { 31 });
            let s = if rng.random::<bool>() { 1 } else { -1 };
            s * (1i64 << k) + rng.random_range(-2..=2)
        }
        3 => [MIN as i64, MAX as i64, MIN as i64 + 1, MAX as i64 - 1, 0, -1, 1][rng.random_range(0..7)],
        4 if wide => rng.random::<i64>(),
        _ if wide => [i64::MIN, i64::MAX, i64::MIN + 1, -(1 << 47), (1 << 47) - 1][rng.random_range(0..5)],
        _ => rng.random::<i32>() as i64 >> rng.random_range(0..31),
    };
    if wide { v } else { v.clamp(MIN as i64, MAX as i64) }
}

#[test]
fn randomized_double_rounding_against_oracle() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xD0);
    let (mut agreed_i32, mut n) = (0u32, 0u32);
    for i in 0..400_000 {
        let wide = i % 2 == 1;
        let x = random_acc(&mut rng, wide);
        let m = random_multiplier(&mut rng);
        let shift = if rng.random_range(0..4) == 0 { rng.random_range(-31..=31) } else { rng.random_range(-31..=0) };
        let q = qm(m, shift);
        let want = oracle_double(x, m, shift);
        let zp = rng.random_range(-300..=300);
        let got = r::requantize_fixed(x, q, DR, zp);
        assert_eq!(got as i128, (want + zp as i128).clamp(i64::MIN as i128, i64::MAX as i128), "x = {x} qm = {q:?} zp = {zp}");
        if !wide {
            let x32 = x as i32;
            let left = shift.max(0);
            let fits = i32::try_from((x as i128) << left).is_ok();
            let api = requant::multiply_by_quantized_multiplier(x32, q, DR);
            if fits {
                // No overflow in TFLite's arithmetic: the i32 form and the API are exact.
                assert_eq!(r::multiply_by_quantized_multiplier_double_rounding(x32, q) as i128, want, "i32 form x = {x} qm = {q:?}");
                assert_eq!(api.unwrap() as i128, want);
                agreed_i32 += 1;
            } else {
                assert!(matches!(api, Err(Error::Overflow(_))), "x = {x} qm = {q:?}");
            }
        }
        n += 1;
    }
    assert!(n >= 100_000 && agreed_i32 >= 100_000, "{n} cases, {agreed_i32} i32 agreements");
}

#[test]
fn randomized_single_rounding_against_oracle() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5E);
    let (mut agreed_i32, mut n) = (0u32, 0u32);
    for i in 0..400_000 {
        let wide = i % 2 == 1;
        let x = random_acc(&mut rng, wide);
        let m = random_multiplier(&mut rng);
        let shift = if rng.random_range(0..4) == 0 { rng.random_range(-31..=30) } else { rng.random_range(-31..=0) };
        let q = qm(m, shift);
        let want = oracle_single(x, m, shift);
        let zp = rng.random_range(-300..=300);
        let got = r::requantize_fixed(x, q, SR, zp);
        assert_eq!(got as i128, (want + zp as i128).clamp(i64::MIN as i128, i64::MAX as i128), "x = {x} qm = {q:?} zp = {zp}");
        if !wide {
            let x32 = x as i32;
            assert_eq!(r::multiply_by_quantized_multiplier_single_rounding(x32, q), sat_i32(want), "i32 form x = {x} qm = {q:?}");
            let api = requant::multiply_by_quantized_multiplier(x32, q, SR);
            if i32::try_from(want).is_ok() {
                assert_eq!(api.unwrap() as i128, want);
                agreed_i32 += 1;
            } else {
                assert!(matches!(api, Err(Error::Overflow(_))), "x = {x} qm = {q:?}");
            }
        }
        n += 1;
    }
    assert!(n >= 100_000 && agreed_i32 >= 100_000, "{n} cases, {agreed_i32} i32 agreements");
}

#[test]
fn randomized_fp32_against_oracle() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xF3);
    for i in 0..400_000 {
        let acc = random_acc(&mut rng, i % 2 == 1);
        let scale = match rng.random_range(0..4) {
            // Powers of two and halves: many exact ties.
            0 => 2f32.powi(rng.random_range(-40..=4)) * [1.0, 0.5, 1.5, 0.75][rng.random_range(0..4)],
            1 => f32::from_bits(rng.random_range(1..0x7f80_0000u32)), // any positive finite
            _ => rng.random_range(1e-6f32..1.0),
        };
        let zp = rng.random_range(-300..=300);
        assert_eq!(r::requantize_fp32(acc, scale, zp), oracle_fp32(acc, scale, zp), "acc = {acc} scale = {scale:e}");
    }
}

// ---------------------------------------------------------------------------------------
// The safe API: Requantizer, and bad input to every public function
// ---------------------------------------------------------------------------------------

#[test]
fn requantizer_computes_each_mode() {
    let scale = 0.0123f32;
    for mode in RequantMode::ALL {
        let rq = Requantizer::new(mode, scale, 7).unwrap();
        assert_eq!(rq.mode(), mode);
        assert_eq!(rq.zero_point(), 7);
        assert_eq!(rq.scale(), scale);
        assert_eq!(rq.clamp(), (MIN, MAX));
        let q = r::quantize_multiplier(scale as f64, mode);
        assert_eq!(rq.multiplier(), (mode != FP).then_some(q));
        for acc in [0i64, 1, -1, 40, -41, 1000, -1000, MAX as i64, MIN as i64, 1 << 40, i64::MIN] {
            let want = match mode {
                FP => oracle_fp32(acc, scale, 7),
                DR => (oracle_double(acc, q.multiplier, q.shift) + 7) as i64,
                SR => (oracle_single(acc, q.multiplier, q.shift) + 7) as i64,
            };
            assert_eq!(rq.requantize(acc) as i64, want.clamp(MIN as i64, MAX as i64), "{mode:?} acc = {acc}");
        }
        // The slice form: clamp to the requantizer's bounds and to the output type.
        let acc: Vec<i32> = (-400..400).step_by(7).collect();
        let relu = rq.with_clamp(7, 100).unwrap();
        let mut out_u8 = vec![0u8; acc.len()];
        relu.requantize_slice(&acc, &mut out_u8).unwrap();
        let mut out_i8 = vec![0i8; acc.len()];
        rq.requantize_slice(&acc, &mut out_i8).unwrap();
        for (i, &a) in acc.iter().enumerate() {
            assert_eq!(out_u8[i] as i32, rq.requantize(a as i64).clamp(7, 100));
            assert_eq!(out_i8[i] as i32, rq.requantize(a as i64).clamp(-128, 127));
        }
    }
    // An explicit multiplier (as read from a TFLite model).
    let rq = Requantizer::from_multiplier(DR, qm(3 << 29, -1), -5).unwrap();
    assert_eq!(rq.scale(), 0.375);
    assert_eq!(rq.requantize(1), 1 - 5); // the double-rounding artefact
    let rq = Requantizer::from_multiplier(SR, qm(3 << 29, -1), -5).unwrap();
    assert_eq!(rq.requantize(1), -5);
    assert_eq!(Requantizer::from_multiplier(SR, qm(0, 0), 3).unwrap().requantize(i64::MAX), 3);
    // Saturation of accumulators beyond i32.
    let rq = Requantizer::new(DR, 1.0, 0).unwrap();
    assert_eq!(rq.requantize(i64::MAX), MAX);
    assert_eq!(rq.requantize(i64::MIN), MIN);
}

#[test]
fn bad_input_quantize_multiplier() {
    for real in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-300, -0.5, -f64::MAX] {
        for mode in [DR, SR] {
            let e = requant::quantize_multiplier(real, mode).unwrap_err();
            assert!(matches!(e, Error::InvalidScale { .. }), "{real}: {e}");
            assert!(e.to_string().contains("real"), "{e}");
        }
    }
    let e = requant::quantize_multiplier(0.5, FP).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(_)) && e.to_string().contains("mode"), "{e}");
    // Zero (either sign) is allowed.
    assert_eq!(requant::quantize_multiplier(-0.0, DR).unwrap(), qm(0, 0));
    assert_eq!(requant::quantize_multiplier(0.0, SR).unwrap(), qm(0, 0));
}

#[test]
fn bad_input_multiply_by_quantized_multiplier() {
    let half = 1 << 30;
    let bad_multipliers = [1, (1 << 30) - 1, -1, MIN, -(1 << 30)];
    for mode in [DR, SR] {
        for m in bad_multipliers {
            let e = requant::multiply_by_quantized_multiplier(5, qm(m, 0), mode).unwrap_err();
            assert!(matches!(e, Error::InvalidParameter(_)) && e.to_string().contains("qm.multiplier"), "{e}");
        }
        for s in [-32, -100, i32::MIN, i32::MAX, 32] {
            let e = requant::multiply_by_quantized_multiplier(5, qm(half, s), mode).unwrap_err();
            assert!(matches!(e, Error::InvalidParameter(_)) && e.to_string().contains("qm.shift"), "{e}");
        }
        // Multiplier 0 is valid at every in-range shift.
        assert_eq!(requant::multiply_by_quantized_multiplier(MAX, qm(0, -31), mode).unwrap(), 0);
        assert_eq!(requant::multiply_by_quantized_multiplier(MIN, qm(0, 30), mode).unwrap(), 0);
    }
    // Shift 31: double rounding only.
    let e = requant::multiply_by_quantized_multiplier(0, qm(half, 31), SR).unwrap_err();
    assert!(e.to_string().contains("qm.shift"), "{e}");
    assert_eq!(requant::multiply_by_quantized_multiplier(0, qm(half, 31), DR).unwrap(), 0);
    // Fp32 is not a fixed-point mode.
    let e = requant::multiply_by_quantized_multiplier(5, qm(half, 0), FP).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(_)) && e.to_string().contains("mode"), "{e}");
    // Overflow.
    for (x, q, mode) in [(MAX, qm(half, 1), DR), (MIN, qm(half, 1), DR), (1, qm(MAX, 31), DR), (MAX, qm(MAX, 30), SR), (MIN, qm(half, 2), SR)] {
        let e = requant::multiply_by_quantized_multiplier(x, q, mode).unwrap_err();
        assert!(matches!(e, Error::Overflow(_)), "{x} {q:?} {mode:?}: {e}");
    }
    // Just inside: no error.
    assert_eq!(requant::multiply_by_quantized_multiplier(MIN, qm(half, 1), SR).unwrap(), MIN);
    assert_eq!(requant::multiply_by_quantized_multiplier(MIN / 2, qm(half, 1), DR).unwrap(), MIN / 2);
}

#[test]
fn bad_input_requantizer() {
    for mode in RequantMode::ALL {
        for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -1.0, -f32::MIN_POSITIVE] {
            let e = Requantizer::new(mode, s, 0).unwrap_err();
            assert!(matches!(e, Error::InvalidScale { what: "scale", .. }), "{mode:?} {s}: {e}");
        }
    }
    // Double rounding cannot represent a scale ≥ 2^31 (shift 32); single rounding caps it.
    let e = Requantizer::new(DR, 2f32.powi(31), 0).unwrap_err();
    assert!(matches!(e, Error::InvalidScale { .. }) && e.to_string().contains("scale"), "{e}");
    assert!(Requantizer::new(DR, 2f32.powi(31) - 128.0, 0).is_ok());
    assert_eq!(Requantizer::new(SR, f32::MAX, 0).unwrap().multiplier(), Some(qm(MAX, 30)));
    assert!(Requantizer::new(FP, f32::MAX, 0).is_ok());

    // from_multiplier: every rejection of multiply_by_quantized_multiplier.
    assert!(Requantizer::from_multiplier(FP, qm(1 << 30, 0), 0).unwrap_err().to_string().contains("mode"));
    assert!(Requantizer::from_multiplier(DR, qm(12345, 0), 0).unwrap_err().to_string().contains("qm.multiplier"));
    assert!(Requantizer::from_multiplier(SR, qm(1 << 30, 31), 0).unwrap_err().to_string().contains("qm.shift"));
    assert!(Requantizer::from_multiplier(DR, qm(1 << 30, -32), 0).unwrap_err().to_string().contains("qm.shift"));

    // with_clamp: min > max.
    let rq = Requantizer::new(FP, 0.5, 0).unwrap();
    let e = rq.with_clamp(10, 9).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(_)) && e.to_string().contains("clamp"), "{e}");
    assert!(rq.with_clamp(9, 9).is_ok());

    // requantize_slice: length mismatch, zero point outside the output type, clamp
    // disjoint from the output type.
    let acc = [1i32, 2, 3];
    let mut short = [0u8; 2];
    let e = rq.requantize_slice(&acc, &mut short).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch(_)) && e.to_string().contains("`out`"), "{e}");
    let mut long = [0u8; 4];
    assert!(matches!(rq.requantize_slice(&acc, &mut long), Err(Error::ShapeMismatch(_))));
    let mut out = [0u8; 3];
    for zp in [-1, 256] {
        let e = Requantizer::new(FP, 0.5, zp).unwrap().requantize_slice(&acc, &mut out).unwrap_err();
        assert!(matches!(e, Error::ZeroPointOutOfRange { value, min: 0, max: 255, .. } if value == zp as i64), "{e}");
    }
    let mut out_i8 = [0i8; 3];
    let e = Requantizer::new(FP, 0.5, 128).unwrap().requantize_slice(&acc, &mut out_i8).unwrap_err();
    assert!(matches!(e, Error::ZeroPointOutOfRange { min: -128, max: 127, .. }), "{e}");
    let e = rq.with_clamp(300, 400).unwrap().requantize_slice(&acc, &mut out).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(_)) && e.to_string().contains("clamp"), "{e}");
    let e = rq.with_clamp(-300, -200).unwrap().requantize_slice(&acc, &mut out_i8).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(_)), "{e}");
    // Nothing was written by the failed calls.
    assert_eq!(out, [0u8; 3]);
    // Empty slices are fine.
    rq.requantize_slice(&[], &mut [0u8; 0]).unwrap();
}

/// `requantize_slice` (NEON on AArch64, 4 lanes at a time plus a scalar tail) against the
/// scalar reference element by element, in every mode: accumulators at the i32 extremes
/// and small ones (exact `.5` ties of both signs after a `2^30` multiplier), multipliers
/// and shifts at both ends of what `from_multiplier` accepts, every zero point and clamp
/// class, and lengths that leave each tail size.
#[test]
fn requantize_slice_matches_the_reference_at_the_corners() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x51ce);
    let mut acc: Vec<i32> = (-40..=40).collect();
    acc.extend_from_slice(&[i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 1 << 30, -(1 << 30), 65_536, -65_537]);
    acc.extend((0..200).map(|_| rng.random::<i32>() >> rng.random_range(0..32)));
    let mults = [1 << 30, (1 << 30) + 1, 3 << 29, i32::MAX, i32::MAX - 1, 1_518_500_250, 0];
    let mut cases: Vec<(RequantMode, QuantizedMultiplier, f32)> = Vec::new();
    for &m in &mults {
        for shift in (-31..=31).filter(|s| *s <= 2 || *s >= 29 || s % 7 == 0) {
            cases.push((DR, qm(m, shift), 0.0));
            if shift <= 30 {
                cases.push((SR, qm(m, shift), 0.0));
            }
        }
    }
    for scale in [1.0f32, 0.5, 0.25, 0.375, 1e-3, 1e-9, 3.0, 1e6, 2.5e9, f32::MIN_POSITIVE] {
        cases.push((FP, qm(0, 0), scale));
    }
    for (mode, q, scale) in cases {
        for zp in [0, -128, 127, -1, 255, 1] {
            let rq = if mode == FP { Requantizer::new(mode, scale, zp) } else { Requantizer::from_multiplier(mode, q, zp) }.unwrap();
            for (lo, hi) in [(i32::MIN, i32::MAX), (zp, zp.saturating_add(6)), (-5, 5), (0, 0)] {
                let rq = rq.with_clamp(lo, hi).unwrap();
                let len = acc.len() - rng.random_range(0..4);
                let acc = &acc[..len];
                if (-128..=127).contains(&zp) && hi >= -128 && lo <= 127 {
                    let mut out = vec![0x55i8; len];
                    rq.requantize_slice(acc, &mut out).unwrap();
                    for (i, &a) in acc.iter().enumerate() {
                        let want = r::requantize(a as i64, mode, scale, q, zp, lo.max(-128), hi.min(127));
                        assert_eq!(out[i] as i32, want, "{mode:?} {q:?} scale={scale} zp={zp} clamp=[{lo},{hi}] acc={a} (i={i}, len={len})");
                    }
                }
                if (0..=255).contains(&zp) && hi >= 0 && lo <= 255 {
                    let mut out = vec![0x55u8; len];
                    rq.requantize_slice(acc, &mut out).unwrap();
                    for (i, &a) in acc.iter().enumerate() {
                        let want = r::requantize(a as i64, mode, scale, q, zp, lo.max(0), hi.min(255));
                        assert_eq!(out[i] as i32, want, "{mode:?} {q:?} scale={scale} zp={zp} clamp=[{lo},{hi}] acc={a} (i={i}, len={len})");
                    }
                }
            }
        }
    }
}
