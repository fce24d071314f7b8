//! Requantization: the one definition of every rounding rule (DESIGN.md §2).
//!
//! The fixed-point modes follow TFLite / gemmlowp exactly for i32 inputs. They are
//! generalised to the i64 accumulators that long K produces by doing the same
//! arithmetic in i128, so a result never silently wraps: for every input that TFLite
//! accepts without overflow the result is identical.

use crate::types::{QuantizedMultiplier, RequantMode};

/// Round half to even (ONNX, `nearbyint` in the default rounding mode) for f32.
#[inline]
pub fn round_half_even_f32(v: f32) -> f32 {
    // Values of magnitude ≥ 2^23 (and NaN/inf) are already integral.
    if !(v.abs() < 8_388_608.0) {
        return v;
    }
    let t = v as i32 as f32; // truncation toward zero, exact here
    let frac = v - t; // exact: both have the same exponent range
    if frac.abs() > 0.5 {
        t + frac.signum()
    } else if frac.abs() == 0.5 {
        // tie: pick the even neighbour
        if (t as i32) % 2 == 0 { t } else { t + frac.signum() }
    } else {
        t
    }
}

/// Round half away from zero (C `round`, TFLite's `TfLiteRound`) for f64.
#[inline]
pub fn round_half_away_f64(v: f64) -> f64 {
    if !(v.abs() < 4_503_599_627_370_496.0) {
        return v;
    }
    let t = v as i64 as f64;
    let frac = v - t;
    if frac.abs() >= 0.5 { t + frac.signum() } else { t }
}

/// `frexp`: `x = m · 2^e` with `|m|` in `[0.5, 1)`; `(0, 0)` for zero. `x` must be finite.
pub fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // subnormal: scale into the normal range first
        let (m, e) = frexp(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (m, e - 54);
    }
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022u64 << 52));
    (m, exp - 1022)
}

/// TFLite's `QuantizeMultiplier`: `real ≈ multiplier · 2^(shift − 31)`.
///
/// `mode` matters only for [`RequantMode::SingleRounding`], which (as TFLite built with
/// `TFLITE_SINGLE_ROUNDING`) caps the shift at 30. Multipliers so small that the shift
/// would be below −31 become `{0, 0}`. `real` must be finite (the driver checks).
pub fn quantize_multiplier(real: f64, mode: RequantMode) -> QuantizedMultiplier {
    if real == 0.0 || !real.is_finite() {
        return QuantizedMultiplier { multiplier: 0, shift: 0 };
    }
    let (q, mut shift) = frexp(real);
    let mut q_fixed = round_half_away_f64(q * (1u64 << 31) as f64) as i64;
    debug_assert!(q_fixed.abs() <= 1 << 31);
    if q_fixed.abs() == 1 << 31 {
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

/// gemmlowp `SaturatingRoundingDoublingHighMul` on i32.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 { 1i64 << 30 } else { 1 - (1i64 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32 // `/` truncates toward zero, as in C
}

/// gemmlowp `RoundingDivideByPOT` on i32: divide by `2^exponent`, ties away from zero.
/// `exponent` in `0..=31`.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!((0..=31).contains(&exponent));
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> exponent) + (remainder > threshold) as i32
}

/// TFLite `MultiplyByQuantizedMultiplier`, double-rounding form, on i32 (left shifts
/// that overflow i32 wrap, exactly as TFLite's arithmetic on such inputs is undefined:
/// use [`requantize_fixed`] for the exact i64 form).
#[inline]
pub fn multiply_by_quantized_multiplier_double_rounding(x: i32, qm: QuantizedMultiplier) -> i32 {
    let left = qm.shift.max(0);
    let right = (-qm.shift).max(0);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left), qm.multiplier),
        right,
    )
}

/// TFLite `MultiplyByQuantizedMultiplier` with `TFLITE_SINGLE_ROUNDING` (ruy's form):
/// `(x·M + 2^(30−shift)) >> (31 − shift)`, the result saturated to i32.
/// Requires `shift` in `−31..=30` (as [`quantize_multiplier`] produces).
#[inline]
pub fn multiply_by_quantized_multiplier_single_rounding(x: i32, qm: QuantizedMultiplier) -> i32 {
    sat_i32(mul_fixed_i128(x as i64, qm, RequantMode::SingleRounding))
}

fn sat_i32(v: i128) -> i32 {
    v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
}

/// The fixed-point modes on an i64 accumulator, computed exactly in i128.
fn mul_fixed_i128(x: i64, qm: QuantizedMultiplier, mode: RequantMode) -> i128 {
    let m = qm.multiplier as i128;
    match mode {
        RequantMode::SingleRounding => {
            let total = (31 - qm.shift).clamp(1, 126) as u32;
            ((x as i128 * m) + (1i128 << (total - 1))) >> total
        }
        _ => {
            // SRDHM: (x·2^left·M + nudge) / 2^31 truncating, then RDBPOT by `right`.
            let left = qm.shift.max(0) as u32;
            let right = (-qm.shift).max(0) as u32;
            // f32 scales give shifts up to 128, where x·2^left·M overflows even i128. The
            // exact result is then far outside i64, which `requantize_fixed` saturates to.
            let ab = if x == 0 || m == 0 {
                0
            } else {
                match (if left < 127 { (x as i128).checked_mul(1i128 << left) } else { None }).and_then(|v| v.checked_mul(m)) {
                    Some(ab) => ab,
                    None => return if (x < 0) != (m < 0) { i128::MIN >> 2 } else { i128::MAX >> 2 },
                }
            };
            let nudge = if ab >= 0 { 1i128 << 30 } else { 1 - (1i128 << 30) };
            let mut high = (ab + nudge) / (1i128 << 31);
            // Only INT32_MIN·INT32_MIN saturates in gemmlowp; multipliers here are in
            // [-2^31, 2^31), and that case needs x = INT32_MIN, left = 0, M = INT32_MIN.
            if x == i32::MIN as i64 && left == 0 && qm.multiplier == i32::MIN {
                high = i32::MAX as i128;
            }
            let mask = (1i128 << right) - 1;
            let rem = high & mask;
            let threshold = (mask >> 1) + (high < 0) as i128;
            (high >> right) + (rem > threshold) as i128
        }
    }
}

/// Fixed-point requantization of an exact accumulator: the multiply of `mode`
/// (`TfliteDoubleRounding` or `SingleRounding`), then `+ zero_point`. Not clamped; the
/// result saturates to the i64 range.
pub fn requantize_fixed(acc: i64, qm: QuantizedMultiplier, mode: RequantMode, zero_point: i32) -> i64 {
    debug_assert!(mode != RequantMode::Fp32);
    let v = mul_fixed_i128(acc, qm, mode) + zero_point as i128;
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// ONNX / onnxruntime requantization: `round_half_even(acc as f32 · scale) + zero_point`.
/// Not clamped; a non-finite product saturates.
pub fn requantize_fp32(acc: i64, scale: f32, zero_point: i32) -> i64 {
    let v = round_half_even_f32(acc as f32 * scale);
    // `as` saturates and maps NaN to 0; finite products of validated inputs never hit that.
    (v as i64).saturating_add(zero_point as i64)
}

/// One requantized value, clamped to `[qmin, qmax]`. `scale` is used by `Fp32`, `qm` by
/// the fixed-point modes.
pub fn requantize(acc: i64, mode: RequantMode, scale: f32, qm: QuantizedMultiplier, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    let v = match mode {
        RequantMode::Fp32 => requantize_fp32(acc, scale, zero_point),
        _ => requantize_fixed(acc, qm, mode, zero_point),
    };
    v.clamp(qmin as i64, qmax as i64) as i32
}
