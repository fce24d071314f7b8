//! Requantization: the modes of DESIGN.md §2 and TFLite's multiplier derivation.
//!
//! A requantizer maps an exact integer accumulator `acc` to an output integer. The three
//! [`RequantMode`]s compute, before the zero point is added and the result clamped:
//!
//! * [`RequantMode::Fp32`] — ONNX / onnxruntime / PyTorch / XNNPACK:
//!   `round_half_even(f32(acc) · scale)`, where `f32(acc)` and the product are each
//!   rounded to the nearest f32.
//! * [`RequantMode::TfliteDoubleRounding`] — TFLite's default build, gemmlowp's two
//!   roundings: with `left = max(shift, 0)`, `right = max(−shift, 0)`,
//!   `h = floor(acc·M·2^left / 2^31 + 1/2)` (`SaturatingRoundingDoublingHighMul`: ties
//!   toward +∞) then `round_half_away(h / 2^right)` (`RoundingDivideByPOT`).
//! * [`RequantMode::SingleRounding`] — ruy / TFLite built with `TFLITE_SINGLE_ROUNDING`:
//!   `floor(acc·M·2^shift / 2^31 + 1/2)`, one rounding, ties toward +∞.
//!
//! For the fixed-point modes the real scale is first turned into a
//! [`QuantizedMultiplier`] `{M, shift}` by TFLite's `QuantizeMultiplier`
//! ([`quantize_multiplier`]): `scale ≈ M · 2^(shift − 31)`, `M` in `[2^30, 2^31)`.
//! On i64 accumulators the formulas are evaluated exactly (no intermediate wrap); on i32
//! inputs where TFLite's i32 arithmetic does not overflow, the result is TFLite's, bit
//! for bit. The scalar definitions live in `qkern_kernels::reference::requant`.

use qkern_kernels::reference::requant as r;

use crate::error::{Error, Result, check_scale};
use crate::Int8;
pub use qkern_kernels::{QuantizedMultiplier, RequantMode};

/// Smallest non-zero multiplier mantissa, 2^30.
const M_MIN: i32 = 1 << 30;

/// TFLite's `QuantizeMultiplier` for a fixed-point `mode`: `real ≈ M · 2^(shift − 31)`.
///
/// `real == 0` gives `{0, 0}`; multipliers below 2^−32 (up to mantissa rounding) flush
/// to `{0, 0}` as in TFLite. With `SingleRounding` the shift is capped at 30 (a larger `real` becomes
/// `{2^31 − 1, 30}`), as TFLite built with `TFLITE_SINGLE_ROUNDING`; with
/// `TfliteDoubleRounding` the shift is not capped (TFLite's default build).
///
/// Errors: `real` NaN, infinite or negative ([`Error::InvalidScale`]); `mode` `Fp32`,
/// which has no fixed-point multiplier ([`Error::InvalidParameter`]).
pub fn quantize_multiplier(real: f64, mode: RequantMode) -> Result<QuantizedMultiplier> {
    if !real.is_finite() || real < 0.0 {
        return Err(Error::InvalidScale { what: "real (multiplier to quantize)", value: real });
    }
    check_fixed_mode(mode)?;
    Ok(r::quantize_multiplier(real, mode))
}

/// TFLite's `MultiplyByQuantizedMultiplier(x, M, shift)` in the fixed-point `mode`.
///
/// The result is TFLite's, bit for bit, and equals the exact value of the mode's formula
/// (module docs). Where TFLite's i32 arithmetic would overflow — in
/// `TfliteDoubleRounding`, `x · 2^shift` (shift > 0) outside i32, which TFLite wraps; in
/// `SingleRounding`, a result outside i32 — this returns [`Error::Overflow`] instead
/// (a zero multiplier gives 0 for every `x`).
///
/// Errors: `mode` `Fp32` (not a fixed-point mode); `qm.multiplier` neither 0 nor in
/// `[2^30, 2^31)`; `qm.shift` outside `−31..=31` (`TfliteDoubleRounding`: gemmlowp's
/// `RoundingDivideByPOT` takes exponents `0..=31`, TFLite forms `1 << shift`) or
/// `−31..=30` (`SingleRounding`, TFLite's `DCHECK`); overflow as above.
pub fn multiply_by_quantized_multiplier(x: i32, qm: QuantizedMultiplier, mode: RequantMode) -> Result<i32> {
    check_multiplier(qm, mode)?;
    match mode {
        RequantMode::TfliteDoubleRounding => {
            let left = qm.shift.max(0) as u32;
            let shifted = (x as i64) << left; // left ≤ 31: fits i64
            // A zero multiplier gives 0 whatever the (wrapped) left-shifted x is.
            if qm.multiplier != 0 && i32::try_from(shifted).is_err() {
                return Err(Error::Overflow(format!(
                    "x = {x} shifted left by shift = {} does not fit i32 (TFLite's double-rounding \
                     arithmetic would wrap)",
                    qm.shift
                )));
            }
            // The multiplier is ≥ 0, so the one saturating case of
            // SaturatingRoundingDoublingHighMul (INT32_MIN · INT32_MIN) cannot occur.
            Ok(r::multiply_by_quantized_multiplier_double_rounding(x, qm))
        }
        RequantMode::SingleRounding => {
            let v = r::requantize_fixed(x as i64, qm, mode, 0);
            i32::try_from(v).map_err(|_| {
                Error::Overflow(format!(
                    "x = {x} times multiplier {{{}, {}}} is {v}, outside i32",
                    qm.multiplier, qm.shift
                ))
            })
        }
        RequantMode::Fp32 => unreachable_fp32(),
    }
}

/// `Fp32` was rejected by `check_multiplier`; kept as an error, not a panic.
fn unreachable_fp32<T>() -> Result<T> {
    Err(Error::Internal("Fp32 reached a fixed-point path".into()))
}

fn check_fixed_mode(mode: RequantMode) -> Result<()> {
    if mode == RequantMode::Fp32 {
        return Err(Error::InvalidParameter(
            "mode: Fp32 is not a fixed-point mode; use TfliteDoubleRounding or SingleRounding".into(),
        ));
    }
    Ok(())
}

/// The shift range a fixed-point mode accepts.
fn shift_range(mode: RequantMode) -> (i32, i32) {
    match mode {
        RequantMode::SingleRounding => (-31, 30),
        _ => (-31, 31),
    }
}

fn check_multiplier(qm: QuantizedMultiplier, mode: RequantMode) -> Result<()> {
    check_fixed_mode(mode)?;
    if qm.multiplier != 0 && qm.multiplier < M_MIN {
        return Err(Error::InvalidParameter(format!(
            "qm.multiplier: {} must be 0 or in [2^30, 2^31) = [{M_MIN}, {}]",
            qm.multiplier,
            i32::MAX
        )));
    }
    let (lo, hi) = shift_range(mode);
    if !(lo..=hi).contains(&qm.shift) {
        return Err(Error::InvalidParameter(format!(
            "qm.shift: {} must be in [{lo}, {hi}] for mode {}",
            qm.shift,
            mode.name()
        )));
    }
    Ok(())
}

/// A requantization stage: mode, scale (or fixed-point multiplier), output zero point and
/// clamp bounds. `requantize(acc) = clamp(mode(acc) + zero_point, min, max)` with the
/// mode's formula of the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Requantizer {
    mode: RequantMode,
    scale: f32,
    qm: QuantizedMultiplier,
    zero_point: i32,
    min: i32,
    max: i32,
}

impl Requantizer {
    /// A requantizer to `scale` (the real multiplier, e.g. `sa·sb/sy`) and `zero_point`,
    /// unclamped (bounds `i32::MIN..=i32::MAX`). For the fixed-point modes the multiplier
    /// is derived by [`quantize_multiplier`] from `scale` as f64.
    ///
    /// Errors: `scale` NaN, infinite, zero or negative; with `TfliteDoubleRounding`, a
    /// scale ≥ 2^31, whose shift would exceed 31 (see [`multiply_by_quantized_multiplier`]).
    pub fn new(mode: RequantMode, scale: f32, zero_point: i32) -> Result<Self> {
        check_scale("scale", scale)?;
        let qm = match mode {
            RequantMode::Fp32 => QuantizedMultiplier::default(),
            _ => {
                let qm = quantize_multiplier(scale as f64, mode)?;
                // Only TfliteDoubleRounding can exceed its shift range (scale ≥ 2^31).
                check_multiplier(qm, mode).map_err(|_| Error::InvalidScale {
                    what: "scale (≥ 2^31: beyond the largest TfliteDoubleRounding multiplier, shift 31)",
                    value: scale as f64,
                })?;
                qm
            }
        };
        Ok(Requantizer { mode, scale, qm, zero_point, min: i32::MIN, max: i32::MAX })
    }

    /// A fixed-point requantizer from an explicit multiplier (e.g. read from a TFLite
    /// model), unclamped.
    ///
    /// Errors: `mode` `Fp32`; `qm` invalid for `mode` (see
    /// [`multiply_by_quantized_multiplier`]).
    pub fn from_multiplier(mode: RequantMode, qm: QuantizedMultiplier, zero_point: i32) -> Result<Self> {
        check_multiplier(qm, mode)?;
        let scale = multiplier_to_f64(qm) as f32;
        Ok(Requantizer { mode, scale, qm, zero_point, min: i32::MIN, max: i32::MAX })
    }

    /// The same requantizer with clamp bounds `[min, max]` (fused ReLU / ReLU6).
    ///
    /// Errors: `min > max`.
    pub fn with_clamp(self, min: i32, max: i32) -> Result<Self> {
        if min > max {
            return Err(Error::InvalidParameter(format!("clamp: min {min} is greater than max {max}")));
        }
        Ok(Requantizer { min, max, ..self })
    }

    /// The mode.
    pub fn mode(&self) -> RequantMode {
        self.mode
    }

    /// The f32 scale: as given to [`Requantizer::new`], or for
    /// [`Requantizer::from_multiplier`] the multiplier's value `M · 2^(shift − 31)`
    /// rounded to f32.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The fixed-point multiplier; `None` in `Fp32` mode.
    pub fn multiplier(&self) -> Option<QuantizedMultiplier> {
        (self.mode != RequantMode::Fp32).then_some(self.qm)
    }

    /// The output zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// The clamp bounds `(min, max)`.
    pub fn clamp(&self) -> (i32, i32) {
        (self.min, self.max)
    }

    /// One accumulator: `clamp(mode(acc) + zero_point, min, max)`. Exact for every i64
    /// `acc` (values beyond i32 saturate at the clamp bounds).
    pub fn requantize(&self, acc: i64) -> i32 {
        r::requantize(acc, self.mode, self.scale, self.qm, self.zero_point, self.min, self.max)
    }

    /// Requantizes `acc` into `out` (same length), clamped to the requantizer's bounds
    /// intersected with `O`'s range.
    ///
    /// Errors: lengths differ; `zero_point` outside `O`'s range; clamp bounds disjoint from
    /// `O`'s range.
    pub fn requantize_slice<O: Int8>(&self, acc: &[i32], out: &mut [O]) -> Result<()> {
        if acc.len() != out.len() {
            return Err(Error::ShapeMismatch(format!(
                "`acc` has {} elements but `out` has {}; they must be equal",
                acc.len(),
                out.len()
            )));
        }
        if !(O::MIN..=O::MAX).contains(&self.zero_point) {
            return Err(Error::ZeroPointOutOfRange {
                what: "zero_point (output type)",
                value: self.zero_point as i64,
                min: O::MIN as i64,
                max: O::MAX as i64,
            });
        }
        let (lo, hi) = (self.min.max(O::MIN), self.max.min(O::MAX));
        if lo > hi {
            return Err(Error::InvalidParameter(format!(
                "clamp [{}, {}] does not intersect the range [{}, {}] of output type {}",
                self.min,
                self.max,
                O::MIN,
                O::MAX,
                O::NAME
            )));
        }
        // [lo, hi] lies within O's range, so each result's low byte is O's bit pattern:
        // the kernel (NEON on AArch64, the scalar reference elsewhere) writes bytes.
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        qkern_kernels::generic::requant::requantize_i32_slice(acc, bytes, self.mode, self.scale, self.qm, self.zero_point, lo, hi);
        Ok(())
    }
}

/// `M · 2^(shift − 31)` in f64, exact. `qm` is validated: `shift − 31` is in `−62..=0`.
fn multiplier_to_f64(qm: QuantizedMultiplier) -> f64 {
    let right = (31 - qm.shift as i64).clamp(0, 63) as u32;
    qm.multiplier as f64 / (1u64 << right) as f64
}
