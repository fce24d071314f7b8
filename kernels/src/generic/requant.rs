//! Elementwise requantization of i32 accumulators: the kernel entry point behind
//! `qkern::Requantizer::requantize_slice`. NEON on AArch64 (the GEMM epilogue's
//! arithmetic), the scalar reference elsewhere and for the tail.

use crate::reference::requant::requantize;
use crate::types::{QuantizedMultiplier, RequantMode};

/// Requantizes `acc[i]` into `out[i]` for `i < min(acc.len(), out.len())`: exactly
/// `reference::requant::requantize(acc[i], mode, scale, qm, zero_point, qmin, qmax)`,
/// stored as its low byte (the u8 / i8 bit pattern when `[qmin, qmax]` lies within the
/// output type's range).
#[allow(clippy::too_many_arguments)]
pub fn requantize_i32_slice(
    acc: &[i32],
    out: &mut [u8],
    mode: RequantMode,
    scale: f32,
    qm: QuantizedMultiplier,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) {
    #[cfg(target_arch = "aarch64")]
    let done = crate::aarch64::requantize_slice_neon(acc, out, mode, scale, qm, zero_point, qmin, qmax);
    #[cfg(not(target_arch = "aarch64"))]
    let done = 0;
    for (o, &a) in out[done..].iter_mut().zip(&acc[done..]) {
        *o = requantize(a as i64, mode, scale, qm, zero_point, qmin, qmax) as u8;
    }
}
