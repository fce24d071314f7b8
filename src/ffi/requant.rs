//! Fixed-point requantization from C: TFLite's `QuantizeMultiplier` and
//! `MultiplyByQuantizedMultiplier`, with the mode as an argument.

use qkern_kernels::reference::requant::{quantize_multiplier, requantize_fixed};
use qkern_kernels::{QuantizedMultiplier, RequantMode};

use super::util::{check_outputs_disjoint, span};
use super::{Failure, guard, qk_requant_mode, qk_status, requant_mode_from_c};

/// The fixed-point modes only: `QK_REQUANT_FP32` multiplies by a float scale and has no
/// fixed-point multiplier.
fn fixed_mode(mode: qk_requant_mode) -> Result<RequantMode, Failure> {
    match requant_mode_from_c(mode, "mode")? {
        RequantMode::Fp32 => Err(Failure::invalid(
            "`mode` = QK_REQUANT_FP32 has no fixed-point multiplier (it multiplies by a float scale); \
             use QK_REQUANT_TFLITE_DOUBLE_ROUNDING or QK_REQUANT_SINGLE_ROUNDING",
        )),
        m => Ok(m),
    }
}

/// TFLite's `QuantizeMultiplier`: finds `multiplier` (Q0.31, in `[2^30, 2^31)`) and
/// `shift` with `real ≈ multiplier · 2^(shift − 31)`.
///
/// `real` must be finite and ≥ 0 (`QK_ERR_SCALE` otherwise); 0, and values so small
/// that the shift would fall below −31, give `{0, 0}`. `mode` is
/// `QK_REQUANT_TFLITE_DOUBLE_ROUNDING` or `QK_REQUANT_SINGLE_ROUNDING` (the latter caps
/// the shift at 30, as TFLite built with `TFLITE_SINGLE_ROUNDING`); `QK_REQUANT_FP32`
/// or an unknown value is `QK_ERR_INVALID_PARAMETER`. The outputs are written only on
/// success.
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
        let mode = fixed_mode(mode)?;
        if !(real.is_finite() && real >= 0.0) {
            return Err(Failure::new(
                qk_status::QK_ERR_SCALE,
                format!("invalid scale: `real` is {real}, must be finite and non-negative"),
            ));
        }
        let qm = quantize_multiplier(real, mode);
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
/// upward).
///
/// `multiplier` must be ≥ 0 and `shift` in `[-31, 30]` (the range where TFLite's
/// arithmetic is defined), else `QK_ERR_INVALID_PARAMETER`. The result is computed
/// exactly: it equals TFLite's wherever TFLite's intermediate values do not overflow,
/// and a result outside `int32_t` is `QK_ERR_OVERFLOW` rather than a wrapped value.
/// `*out` is written only on success.
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
        let mode = fixed_mode(mode)?;
        if multiplier < 0 {
            return Err(Failure::invalid(format!("`multiplier` is {multiplier}, must be non-negative")));
        }
        if !(-31..=30).contains(&shift) {
            return Err(Failure::invalid(format!("`shift` is {shift}, must be in [-31, 30]")));
        }
        let v = requantize_fixed(x as i64, QuantizedMultiplier { multiplier, shift }, mode, 0);
        let v = i32::try_from(v).map_err(|_| {
            Failure::overflow(format!("{x} · {multiplier} · 2^({shift} − 31) rounds to {v}, outside int32_t"))
        })?;
        // SAFETY: `out` was checked non-null and aligned; the caller guarantees it is writable.
        unsafe { out.write(v) };
        Ok(())
    })
}
