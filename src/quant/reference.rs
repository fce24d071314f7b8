//! The scalar definition of uniform quantization, one element at a time.
//!
//! Every vectorised loop in [`crate::quant`] equals these functions bit for bit; the
//! tests hold them to it. The rules:
//!
//! * `q = clamp(round(x / scale) + zero_point, qmin, qmax)`, with an IEEE f32 *division*
//!   (ONNX `QuantizeLinear` specifies division; a reciprocal multiply differs in the
//!   last bit for some inputs and would break bit-exactness with ONNX).
//! * Rounding: [`Rounding::HalfEven`] is `qkern_kernels::reference::round_half_even_f32`,
//!   the one definition in qkern; [`Rounding::HalfAway`] is
//!   `qkern_kernels::reference::round_half_away_f64` (exact for every f32);
//!   [`Rounding::Stochastic`] is `floor(v) + [u < v − floor(v)]` with `u` the next draw of
//!   [`UniformStream`] — the same distribution as `floor(v + u)`, but without the
//!   rounding error of the sum `v + u`, so the expectation is `v` up to the 2⁻⁵³
//!   resolution of `u`.
//! * `x / scale` = NaN (x NaN) quantizes to the zero point, i.e. it dequantizes to 0.0.
//!   ONNX leaves NaN undefined for integer outputs; the zero point is the one choice that
//!   does not invent a value and survives dequantization as a neutral 0.
//! * `±inf` (and any quotient too large) saturates to `qmax` / `qmin`, as ONNX specifies.
//! * Dequantization: `(q − zero_point) as f32 · scale` (the difference is exact, so one
//!   rounding, in the multiply).

use qkern_kernels::reference::{round_half_away_f64, round_half_even_f32};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::uniform::Rounding;

/// 2²³: f32 values at least this large are integers already.
const TWO23: f32 = 8_388_608.0;

/// The source of the uniform draws `u ∈ [0, 1)` of stochastic rounding.
///
/// A ChaCha8 generator (`rand_chacha::ChaCha8Rng::seed_from_u64(seed)`, portable and
/// stable across platforms and versions); each draw takes one `next_u64` and keeps its
/// top 53 bits: `u = (r >> 11) · 2⁻⁵³`. The quantizer draws one `u` per element, in flat
/// element order, whatever the element's value or granularity — so the result for a
/// given seed does not depend on the data layout of anything but the element index.
#[derive(Clone, Debug)]
pub struct UniformStream(ChaCha8Rng);

impl UniformStream {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        UniformStream(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The next draw, uniform on the 2⁵³ multiples of 2⁻⁵³ in `[0, 1)`.
    #[inline]
    pub fn next_u(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// Rounds `v` to an integral f32 by `rounding`; `u` is the uniform draw used only by
/// [`Rounding::Stochastic`] (its seed is not used here). NaN and ±inf pass through.
#[inline]
pub fn round_to_integral(v: f32, rounding: Rounding, u: f64) -> f32 {
    match rounding {
        Rounding::HalfEven => round_half_even_f32(v),
        Rounding::HalfAway => round_half_away_f64(v as f64) as f32,
        Rounding::Stochastic { .. } => {
            if v.is_nan() || v.abs() >= TWO23 {
                return v; // integral already, or NaN / inf
            }
            let fl = v.floor();
            // In f64 the difference is exact unless v is negative and smaller than 2⁻²⁹
            // in magnitude, where its error is below the 2⁻⁵³ resolution of u. (In f32,
            // 1 − 1e-10 would round to 1.)
            let frac = v as f64 - fl as f64;
            if u < frac { fl + 1.0 } else { fl }
        }
    }
}

/// Quantizes one value: `clamp(round(x / scale) + zero_point, qmin, qmax)`, NaN → the
/// zero point. `u` is the stochastic draw (ignored by the deterministic modes).
///
/// This is the definition; it does not validate (a caller passing `qmin > qmax` gets a
/// meaningless but non-panicking result).
#[inline]
pub fn quantize_value(x: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32, rounding: Rounding, u: f64) -> i32 {
    let v = x / scale;
    if v.is_nan() {
        return zero_point;
    }
    // r is integral; r + zero_point is exact for |r| < 2²⁴, and beyond that it only
    // matters that the sign and magnitude saturate, which rounding cannot change.
    let r = round_to_integral(v, rounding, u);
    let q = r + zero_point as f32;
    q.max(qmin as f32).min(qmax as f32) as i32
}

/// Dequantizes one code: `(q − zero_point) · scale`, the difference taken exactly.
#[inline]
pub fn dequantize_value(q: i32, scale: f32, zero_point: i32) -> f32 {
    (q as i64 - zero_point as i64) as f32 * scale
}
