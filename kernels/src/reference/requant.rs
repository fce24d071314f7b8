//! Requantization: the one definition of every rounding rule (DESIGN.md §2).
//!
//! * [`quantize_multiplier`] is TFLite's `QuantizeMultiplier`
//!   (`tensorflow/lite/kernels/internal/quantization_util.cc`).
//! * [`saturating_rounding_doubling_high_mul`] and [`rounding_divide_by_pot`] are
//!   gemmlowp's (`fixedpoint/fixedpoint.h`).
//! * [`multiply_by_quantized_multiplier_double_rounding`] and
//!   [`multiply_by_quantized_multiplier_single_rounding`] are TFLite's two
//!   `MultiplyByQuantizedMultiplier(int32_t, int32_t, int)` forms
//!   (`tensorflow/lite/kernels/internal/common.cc`, default build and
//!   `TFLITE_SINGLE_ROUNDING` build), bit for bit on i32.
//! * [`requantize_fixed`] generalises both to the i64 accumulators that long K produces
//!   by evaluating the same formulas exactly (in i128, no intermediate wrap or
//!   saturation). Wherever TFLite's i32 arithmetic does not overflow (the left-shifted
//!   input fits i32, the one saturating product `INT32_MIN·INT32_MIN` of
//!   `SaturatingRoundingDoublingHighMul` is not hit, the single-rounding result fits
//!   i32) it returns the same value as the i32 form. It is *not* TFLite's
//!   `MultiplyByQuantizedMultiplier(int64_t, …)`, which first rounds the multiplier to
//!   16 bits and so is less exact.
//! * [`requantize_fp32`] is ONNX / onnxruntime (MLAS): float multiply, round half to
//!   even, add the zero point.
//!
//! Every function here is total: no input panics; out-of-domain inputs have a
//! documented result (the safe `qkern::requant` API rejects them instead).

use crate::types::{QuantizedMultiplier, RequantMode};

/// Round half to even (ONNX, C `nearbyint` in the default rounding mode) for f32.
/// NaN and infinities are returned unchanged; the sign of a zero result follows `v`.
#[inline]
pub fn round_half_even_f32(v: f32) -> f32 {
    // Values of magnitude ≥ 2^23 (and NaN/inf) are already integral.
    if v.is_nan() || v.abs() >= 8_388_608.0 {
        return v;
    }
    let t = v as i32; // truncation toward zero, exact here
    let frac = v - t as f32; // exact: |v| < 2^23, so v and t share the grid of v
    let r = if frac.abs() > 0.5 || (frac.abs() == 0.5 && t % 2 != 0) {
        t as f32 + frac.signum()
    } else {
        t as f32
    };
    // -0.3 → -0.0 as nearbyint does (t as f32 would give +0.0).
    r.copysign(v)
}

/// Round half away from zero (C `round`, TFLite's `TfLiteRound`) for f64.
/// NaN and infinities are returned unchanged; the sign of a zero result follows `v`.
#[inline]
pub fn round_half_away_f64(v: f64) -> f64 {
    // Values of magnitude ≥ 2^52 (and NaN/inf) are already integral.
    if v.is_nan() || v.abs() >= 4_503_599_627_370_496.0 {
        return v;
    }
    let t = v as i64 as f64; // truncation toward zero, exact here
    let frac = v - t; // exact
    let r = if frac.abs() >= 0.5 { t + frac.signum() } else { t };
    r.copysign(v)
}

/// C `frexp`: `x = m · 2^e` with `|m|` in `[0.5, 1)`; `(±0, 0)` for a zero. NaN and
/// infinities are returned as `(x, 0)` (C leaves the exponent unspecified).
pub fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first (exact, a power of two).
        let (m, e) = frexp(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (m, e - 54);
    }
    // Keep sign and fraction, set the biased exponent to 1022 (i.e. 2^-1).
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022u64 << 52));
    (m, exp - 1022)
}

/// TFLite's `QuantizeMultiplier`: `real ≈ multiplier · 2^(shift − 31)`.
///
/// Exactly as TFLite: `(q, shift) = frexp(real)`, `q_fixed = TfLiteRound(q · 2^31)`
/// (half away from zero); `q_fixed == 2^31` becomes `2^30` with `shift + 1`; a shift
/// below −31 flushes to `{0, 0}`; `real == 0` gives `{0, 0}`. With
/// [`RequantMode::SingleRounding`] (TFLite built with `TFLITE_SINGLE_ROUNDING`) a shift
/// above 30 saturates to `{2^31 − 1, 30}`; the other modes leave the shift uncapped.
///
/// Negative multipliers follow TFLite too: the mantissa is negative, and
/// `q_fixed == −2^31` is kept as `i32::MIN` (TFLite only halves `+2^31`).
/// Non-finite `real` (on which TFLite's `CHECK` aborts) gives `{0, 0}`; the safe
/// `qkern::requant::quantize_multiplier` rejects it instead.
pub fn quantize_multiplier(real: f64, mode: RequantMode) -> QuantizedMultiplier {
    if real == 0.0 || !real.is_finite() {
        return QuantizedMultiplier { multiplier: 0, shift: 0 };
    }
    let (q, mut shift) = frexp(real);
    // |q| in [0.5, 1): q·2^31 is exact, its rounding lies in [2^30, 2^31] in magnitude.
    let mut q_fixed = round_half_away_f64(q * 2_147_483_648.0) as i64;
    if q_fixed == 1 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        q_fixed = 0;
    }
    if mode == RequantMode::SingleRounding && shift > 30 {
        shift = 30;
        q_fixed = (1i64 << 31) - 1;
    }
    QuantizedMultiplier { multiplier: q_fixed as i32, shift }
}

/// gemmlowp `SaturatingRoundingDoublingHighMul` on i32 (ARM `VQRDMULH`):
/// `(a·b + nudge) / 2^31` truncated, with `nudge = 2^30` for a non-negative product and
/// `1 − 2^30` otherwise — which equals `floor((a·b + 2^30) / 2^31)`, i.e. ties round
/// toward +∞ on both signs. `INT32_MIN · INT32_MIN` saturates to `INT32_MAX`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 { 1i64 << 30 } else { 1 - (1i64 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32 // `/` truncates toward zero, as in C
}

/// gemmlowp `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest, ties away from
/// zero. gemmlowp asserts `exponent` in `0..=31`; here larger exponents give the same
/// exact rounding (so 0 or ±1), and a negative exponent is treated as 0.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    // gemmlowp's mask / threshold formulation, evaluated in i64 so that every exponent
    // is well defined; for 0..=31 this is exactly the i32 computation.
    let e = exponent.clamp(0, 62) as u32;
    let x = x as i64;
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i64;
    ((x >> e) + (remainder > threshold) as i64) as i32
}

/// TFLite `MultiplyByQuantizedMultiplier(int32_t x, int32_t M, int shift)`, default
/// (double-rounding) build:
/// `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x · 2^left, M), right)` with
/// `left = max(shift, 0)`, `right = max(−shift, 0)`.
///
/// Bit-exact with TFLite on i32, including its overflow behaviour: `x · 2^left` wraps
/// modulo 2^32 (TFLite marks the function `TFLITE_NO_SANITIZE_INTEGER_OVERFLOW`) and
/// `INT32_MIN·INT32_MIN` saturates. Use [`requantize_fixed`] for the exact form.
#[inline]
pub fn multiply_by_quantized_multiplier_double_rounding(x: i32, qm: QuantizedMultiplier) -> i32 {
    let left = qm.shift.max(0);
    let right = (-(qm.shift as i64)).clamp(0, 63) as i32;
    // x · 2^left modulo 2^32: a plain shift for left < 32, zero beyond.
    let a = if left < 32 { x.wrapping_shl(left as u32) } else { 0 };
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(a, qm.multiplier), right)
}

/// TFLite `MultiplyByQuantizedMultiplier(int32_t x, int32_t M, int shift)` built with
/// `TFLITE_SINGLE_ROUNDING` (ruy's form): `(x·M + 2^(total − 1)) >> total` in i64 with
/// `total = 31 − shift`, i.e. `floor(x·M·2^(shift−31) + 1/2)` — ties toward +∞.
///
/// TFLite requires `shift` in `−31..=30` and a result that fits i32 (`DCHECK`s); here any
/// shift is evaluated exactly and a result outside i32 saturates.
#[inline]
pub fn multiply_by_quantized_multiplier_single_rounding(x: i32, qm: QuantizedMultiplier) -> i32 {
    let v = mul_fixed_exact(x as i64, qm, RequantMode::SingleRounding);
    v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
}

/// Magnitude at which the exact fixed-point product is clamped. Far beyond i64, so
/// adding an i32 zero point and saturating to i64 afterwards gives the exact answer.
const BOUND: i128 = 1 << 100;

/// `v · 2^s` exactly, clamped to `[−BOUND, BOUND]`.
fn shl_bounded(v: i128, s: i64) -> i128 {
    if v == 0 {
        return 0;
    }
    let v = v.clamp(-BOUND, BOUND);
    if s >= 100 || v.unsigned_abs() > (BOUND >> s) as u128 {
        return if v < 0 { -BOUND } else { BOUND };
    }
    v << s
}

/// The fixed-point multiply of `mode` on an i64 input, evaluated exactly (no wrap, no
/// intermediate saturation), clamped to `[−BOUND, BOUND]`. `Fp32` is treated as
/// `TfliteDoubleRounding`.
fn mul_fixed_exact(x: i64, qm: QuantizedMultiplier, mode: RequantMode) -> i128 {
    // |x·M| ≤ 2^63 · 2^31 = 2^94.
    let p = x as i128 * qm.multiplier as i128;
    let shift = qm.shift as i64;
    match mode {
        RequantMode::SingleRounding => {
            let total = 31 - shift;
            if total <= 0 {
                // No fractional bits: an exact left shift.
                shl_bounded(p, -total)
            } else if total > 120 {
                // |p| < 2^(total−1): p + 2^(total−1) lies in (0, 2^total), so floor → 0.
                0
            } else {
                (p + (1i128 << (total - 1))) >> total
            }
        }
        RequantMode::TfliteDoubleRounding | RequantMode::Fp32 => {
            let left = shift.max(0);
            let right = (-shift).max(0);
            // SaturatingRoundingDoublingHighMul(x·2^left, M) without the i32 bound.
            let high = if left >= 31 {
                // x·M·2^left is a multiple of 2^31: the division is exact.
                shl_bounded(p, left - 31)
            } else {
                // |p·2^left| < 2^124: fits. gemmlowp's nudge and truncating division.
                let ab = p << left;
                let nudge = if ab >= 0 { 1i128 << 30 } else { 1 - (1i128 << 30) };
                (ab + nudge) / (1i128 << 31)
            };
            // RoundingDivideByPOT(high, right), ties away from zero.
            if right == 0 {
                high
            } else if right > 120 {
                0 // |high| ≤ 2^100 < 2^(right−1)
            } else {
                let mask = (1i128 << right) - 1;
                let remainder = high & mask;
                let threshold = (mask >> 1) + (high < 0) as i128;
                (high >> right) + (remainder > threshold) as i128
            }
        }
    }
}

/// Fixed-point requantization of an exact accumulator: the multiply of `mode`, evaluated
/// exactly, then `+ zero_point`. Not clamped; the result saturates to the i64 range.
///
/// * `TfliteDoubleRounding`: `round_away(floor(acc·M·2^left / 2^31 + 1/2) / 2^right)`,
///   `left = max(shift, 0)`, `right = max(−shift, 0)` — gemmlowp's two roundings.
/// * `SingleRounding`: `floor(acc·M·2^shift / 2^31 + 1/2)`.
///
/// For i32 `acc` this equals [`multiply_by_quantized_multiplier_double_rounding`] /
/// [`multiply_by_quantized_multiplier_single_rounding`] (plus the zero point) wherever
/// those do not overflow. Any shift is accepted. `Fp32` is not a fixed-point mode; given
/// it, this computes the double-rounding form (callers dispatch `Fp32` to
/// [`requantize_fp32`]).
pub fn requantize_fixed(acc: i64, qm: QuantizedMultiplier, mode: RequantMode, zero_point: i32) -> i64 {
    let v = mul_fixed_exact(acc, qm, mode) + zero_point as i128;
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// ONNX / onnxruntime requantization: `round_half_even(acc as f32 · scale) + zero_point`,
/// where `acc as f32` and the product are each rounded to nearest f32 (as MLAS does with
/// its i32 accumulators). Not clamped. A product beyond i64 saturates; a NaN product
/// (NaN scale, or `0 · ∞`) gives `zero_point`.
pub fn requantize_fp32(acc: i64, scale: f32, zero_point: i32) -> i64 {
    let v = round_half_even_f32(acc as f32 * scale);
    // `as` saturates and maps NaN to 0.
    (v as i64).saturating_add(zero_point as i64)
}

/// One requantized value, clamped to `[qmin, qmax]`: [`requantize_fp32`] with `scale` for
/// `Fp32`, [`requantize_fixed`] with `qm` for the fixed-point modes. If `qmin > qmax` the
/// result is `qmax` (the bounds are applied as `max(qmin)` then `min(qmax)`).
pub fn requantize(acc: i64, mode: RequantMode, scale: f32, qm: QuantizedMultiplier, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    let v = match mode {
        RequantMode::Fp32 => requantize_fp32(acc, scale, zero_point),
        RequantMode::TfliteDoubleRounding | RequantMode::SingleRounding => requantize_fixed(acc, qm, mode, zero_point),
    };
    v.max(qmin as i64).min(qmax as i64) as i32
}
