//! Reference depthwise convolution over an indirection buffer, exact in i64.

use crate::types::{DW_ZERO_TAP, Int8};

/// `out[p·channels + c] = Σ_t (x[p][t][c] − za)·(w[c][t] − zw[c])`, where `x[p][t]` is the
/// row at `input[indirection[p·taps + t]..]` (a [`DW_ZERO_TAP`] entry is padding and
/// contributes 0, as a row of `za` would). `w` is `channels × taps` (`[c][t]`), `zw` one
/// zero point or `channels`.
///
/// Panics if a slice is too short (tests and validated callers only).
#[allow(clippy::too_many_arguments)]
pub fn dwconv_i64<A: Int8, B: Int8>(
    channels: usize,
    taps: usize,
    pixels: usize,
    input: &[A],
    indirection: &[usize],
    za: i32,
    w: &[B],
    zw: &[i32],
    out: &mut [i64],
) {
    assert!(zw.len() == 1 || zw.len() == channels, "zw must have 1 or `channels` entries");
    for p in 0..pixels {
        for c in 0..channels {
            let z = if zw.len() == 1 { zw[0] } else { zw[c] } as i64;
            let mut acc = 0i64;
            for t in 0..taps {
                let off = indirection[p * taps + t];
                if off == DW_ZERO_TAP {
                    continue;
                }
                let x = input[off + c].to_i32() as i64 - za as i64;
                acc += x * (w[c * taps + t].to_i32() as i64 - z);
            }
            out[p * channels + c] = acc;
        }
    }
}
