//! Fixed-point requantization from C: TFLite's `QuantizeMultiplier` and
//! `MultiplyByQuantizedMultiplier`, with the mode as an argument.

use super::util::{check_outputs_disjoint, span};
use super::{guard, qk_requant_mode, qk_status, requant_mode_from_c};
use crate::QuantizedMultiplier;
use crate::requant;

/// TFLite's `QuantizeMultiplier`: finds `multiplier` (Q0.31, in `[2^30, 2^31)`) and
/// `shift` with `real ≈ multiplier · 2^(shift − 31)`.
///
/// `real` must be finite and ≥ 0 (`QK_ERR_SCALE` otherwise); 0, and values so small
/// that the shift would fall below −31, give `{0, 0}`. `mode` is
/// `QK_REQUANT_TFLITE_DOUBLE_ROUNDING` or `QK_REQUANT_SINGLE_ROUNDING` (the latter caps
/// the shift at 30, as TFLite built with `TFLITE_SINGLE_ROUNDING`); `QK_REQUANT_FP32`
/// or an unknown value is `QK_ERR_INVALID_PARAMETER`. The outputs are written only on
/// success. Over `qkern::requant::quantize_multiplier`.
///
/// # Safety
///
/// `multiplier` and `shift` must each be NULL (an error) or point to a writable,
/// aligned `int32_t`; they must be distinct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_quantize_multiplier(
    real: f64,
    mode: qk_requant_mode,
    multiplier: *mut i32,
    shift: *mut i32,
) -> qk_status {
    guard("qk_quantize_multiplier", || {
        let m_span = span(multiplier.cast_const(), 1, "multiplier")?;
        let s_span = span(shift.cast_const(), 1, "shift")?;
        check_outputs_disjoint(&[&m_span, &s_span])?;
        let mode = requant_mode_from_c(mode, "mode")?;
        let qm = requant::quantize_multiplier(real, mode)?;
        // SAFETY: both pointers were checked non-null, aligned and distinct; the caller
        // guarantees they point to writable int32_t.
        unsafe {
            multiplier.write(qm.multiplier);
            shift.write(qm.shift);
        }
        Ok(())
    })
}

/// TFLite's `MultiplyByQuantizedMultiplier(x, multiplier, shift)` in the rounding of
/// `mode`: `x · multiplier · 2^(shift − 31)`, rounded as gemmlowp
/// (`QK_REQUANT_TFLITE_DOUBLE_ROUNDING`: SaturatingRoundingDoublingHighMul then
/// RoundingDivideByPOT) or ruy (`QK_REQUANT_SINGLE_ROUNDING`: one rounding, ties
/// toward +∞). Over `qkern::requant::multiply_by_quantized_multiplier`.
///
/// `multiplier` must be 0 or in `[2^30, 2^31)` and `shift` in `[-31, 31]` (double
/// rounding) or `[-31, 30]` (single rounding), else `QK_ERR_INVALID_PARAMETER`;
/// `QK_REQUANT_FP32` or an unknown mode is `QK_ERR_INVALID_PARAMETER` too. The result is
/// TFLite's, bit for bit. Where TFLite's `int32_t` arithmetic would overflow (double
/// rounding: `x · 2^shift` for `shift > 0` outside `int32_t`, which TFLite wraps; single
/// rounding: a result outside `int32_t`) this returns `QK_ERR_OVERFLOW` instead of a
/// wrapped value. `*out` is written only on success.
///
/// # Safety
///
/// `out` must be NULL (an error) or point to a writable, aligned `int32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_multiply_by_quantized_multiplier(
    x: i32,
    multiplier: i32,
    shift: i32,
    mode: qk_requant_mode,
    out: *mut i32,
) -> qk_status {
    guard("qk_multiply_by_quantized_multiplier", || {
        span(out.cast_const(), 1, "out")?;
        let mode = requant_mode_from_c(mode, "mode")?;
        let v = requant::multiply_by_quantized_multiplier(x, QuantizedMultiplier { multiplier, shift }, mode)?;
        // SAFETY: `out` was checked non-null and aligned; the caller guarantees it is writable.
        unsafe { out.write(v) };
        Ok(())
    })
}
