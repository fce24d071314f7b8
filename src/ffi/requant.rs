//! Requantization from C: int32 accumulators to u8/i8 in any of the three modes
//! (`qk_requantize`), and TFLite's `QuantizeMultiplier` and
//! `MultiplyByQuantizedMultiplier`, with the mode as an argument.

use std::ffi::c_void;

use super::util::{check_disjoint, check_outputs_disjoint, slice, slice_mut, span};
use super::{Dtype, Failure, guard, qk_dtype, qk_requant_mode, qk_status, requant_mode_from_c};
use crate::requant::{self, Requantizer};
use crate::{Int8, QuantizedMultiplier};

/// Requantizes a `rows × cols` matrix of int32 accumulators (row-major, contiguous) to
/// `QK_U8` or `QK_I8`: `out[i][j] = clamp(mode(acc[i][j], scale[j]) + zero_point, lo, hi)`
/// with `lo = max(clamp_min, type min)`, `hi = min(clamp_max, type max)` (pass
/// `INT32_MIN, INT32_MAX` for no extra clamp; the zero point for a fused ReLU).
///
/// * `scale`: the real multiplier (e.g. `sa·sb/sy`), finite and > 0; 1 value (per
///   tensor) or `cols` values (per column).
/// * `mode`: `QK_REQUANT_FP32` (ONNX: `acc · scale` in float, round half to even),
///   `QK_REQUANT_TFLITE_DOUBLE_ROUNDING` or `QK_REQUANT_SINGLE_ROUNDING` (the multiplier
///   derived from `scale` as [`qk_quantize_multiplier`] does); each bit-exact with
///   qkern's reference, as the GEMM output stages.
/// * `out_count` must equal `rows · cols`.
///
/// Errors: NULL buffers (`QK_ERR_NULL_POINTER`), a bad dtype, mode or scale count, a
/// zero point outside the output type, `clamp_min > clamp_max` or a clamp range
/// disjoint from the type (`QK_ERR_INVALID_PARAMETER`), `out` overlapping an input.
///
/// # Safety
///
/// `acc` must point to `rows · cols` readable `int32_t`, `scale` to `scale_count`
/// readable `float`, `out` to `out_count` writable bytes not overlapping them; none
/// may be written by another thread during the call.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qk_requantize(
    acc: *const i32,
    rows: usize,
    cols: usize,
    scale: *const f32,
    scale_count: usize,
    mode: qk_requant_mode,
    zero_point: i32,
    clamp_min: i32,
    clamp_max: i32,
    out: *mut c_void,
    out_dtype: qk_dtype,
    out_count: usize,
) -> qk_status {
    guard("qk_requantize", || {
        let dtype = Dtype::from_c(out_dtype, "out_dtype")?;
        if !matches!(dtype, Dtype::U8 | Dtype::I8) {
            return Err(Failure::unsupported(format!("`out_dtype` = {}: requantization produces QK_U8 or QK_I8", dtype.name())));
        }
        let n = rows.checked_mul(cols).ok_or_else(|| Failure::overflow(format!("`acc`: {rows} × {cols} overflows size_t")))?;
        let acc_s = span(acc, n, "acc")?;
        let scale_s = span(scale, scale_count, "scale")?;
        let out_s = span(out.cast_const().cast::<u8>(), out_count, "out")?;
        check_disjoint(&out_s, &[&acc_s, &scale_s])?;
        if out_count != n {
            return Err(Failure::shape(format!("`out` has {out_count} elements but `acc` is {rows} × {cols} = {n}")));
        }
        if scale_count == 0 || (scale_count != 1 && scale_count != cols) {
            return Err(Failure::shape(format!(
                "`scale` has {scale_count} values; it needs 1 (per tensor) or cols = {cols} (per column)"
            )));
        }
        let mode = requant_mode_from_c(mode, "mode")?;
        // SAFETY: the spans were checked (non-null, aligned, sizes within the address
        // space) with these pointers and lengths, `out` is disjoint from both inputs, and
        // the caller guarantees validity and no concurrent writes for the call.
        let (acc, scales) = unsafe { (slice(acc, n, &acc_s), slice(scale, scale_count, &scale_s)) };
        let rqs = scales
            .iter()
            .map(|&s| Requantizer::new(mode, s, zero_point)?.with_clamp(clamp_min, clamp_max))
            .collect::<crate::Result<Vec<_>>>()?;
        // SAFETY: as above; `out` is exclusively ours for the call.
        match dtype {
            Dtype::U8 => run(&rqs, acc, cols, unsafe { slice_mut(out.cast::<u8>(), n, &out_s) }),
            _ => run(&rqs, acc, cols, unsafe { slice_mut(out.cast::<i8>(), n, &out_s) }),
        }
        .map_err(Failure::from)
    })
}

/// Requantizes `acc` into `out` with `rqs[0]` for every element (one requantizer) or
/// `rqs[j]` for column `j` (`rqs.len() == cols ≥ 2`).
fn run<O: Int8>(rqs: &[Requantizer], acc: &[i32], cols: usize, out: &mut [O]) -> crate::Result<()> {
    if let [rq] = rqs {
        return rq.requantize_slice(acc, out);
    }
    // Validates the zero point and clamp against O once, as the per-tensor path does.
    for rq in rqs {
        rq.requantize_slice::<O>(&[], &mut [])?;
    }
    for (a_row, o_row) in acc.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        for ((o, &a), rq) in o_row.iter_mut().zip(a_row).zip(rqs) {
            // Clamping to [clamp_min, clamp_max] then saturating to O is clamping to
            // their intersection, which `requantize_slice` checked is not empty.
            *o = O::saturate_from(rq.requantize(a as i64));
        }
    }
    Ok(())
}

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
