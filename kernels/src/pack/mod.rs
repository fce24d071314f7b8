//! Packers: each writes one [`PackFormat`](crate::PackFormat) that a family of kernels reads.

pub mod codebook;
pub mod decode;
pub mod shift;

pub use codebook::{pack_codebook, pack_codebook4};
pub use shift::{pack_shift, shift_encode, shift_terms};

use crate::types::{Int8, PackFormat};

/// Packs `B[K][N]` (row stride `ldb`) into `format`: panels of `nr` columns, K in groups
/// of `kr`, `[panel][k/kr][nr][kr]`, zero-padded in K and N. Values are stored as their
/// bit patterns of `b − b_offset` (the kernel's [`b_offset`](crate::GemmUkernel::b_offset),
/// e.g. 128 to store u8 weights as i8). `out` must hold `format.packed_bytes(k, n)` bytes.
///
/// Panics if a slice is too short (the driver validates first).
#[allow(clippy::too_many_arguments)]
pub fn pack_b_kgroups<B: Int8>(format: PackFormat, b: &[B], k: usize, n: usize, ldb: usize, b_offset: i32, out: &mut [u8]) {
    let PackFormat { nr, kr } = format;
    let kp = format.k_padded(k);
    let out = &mut out[..format.packed_bytes(k, n)];
    out.fill(0);
    if kp == 0 {
        // K = 0: nothing to pack (and `chunks_exact_mut(0)` would panic).
        return;
    }
    for (p, panel) in out.chunks_exact_mut(kp * nr).enumerate() {
        let n0 = p * nr;
        let ncols = nr.min(n - n0);
        for kk in 0..k {
            let (g, r) = (kk / kr, kk % kr);
            let row = &b[kk * ldb + n0..kk * ldb + n0 + ncols];
            for (j, v) in row.iter().enumerate() {
                panel[(g * nr + j) * kr + r] = v.to_i32().wrapping_sub(b_offset) as u8;
            }
        }
    }
}

/// Packs a depthwise filter `w[c][t]` (`channels × taps`, the OHWI layout with one input
/// channel per group) into `format` ([`DwPackFormat`](crate::DwPackFormat)): centred
/// weights `w − zw[c]` (little-endian i16 for `kr = 2`, i8 for `kr = 4`), channel tiles
/// of `ct`, taps in groups of `kr`, zero-padded. `zw` holds one zero point (per tensor)
/// or `channels`. Also writes `sums[c] = Σ_t (w[c][t] − zw[c])` (the driver folds
/// `−za·sums[c]` into `col_offset`). `out` must hold `format.packed_bytes(channels, taps)`
/// bytes, `sums` `channels`.
///
/// Panics if a slice is too short or a centred weight does not fit the format (the
/// driver checks with [`DwPackFormat::holds`](crate::DwPackFormat::holds) first).
pub fn pack_dwconv<B: Int8>(
    format: crate::DwPackFormat,
    w: &[B],
    channels: usize,
    taps: usize,
    zw: &[i32],
    out: &mut [u8],
    sums: &mut [i32],
) {
    assert!(zw.len() == 1 || zw.len() == channels, "zw must have 1 or `channels` entries");
    assert!(format.kr == 2 || format.kr == 4, "depthwise formats group 2 or 4 taps");
    let (ct, kr) = (format.ct, format.kr);
    let groups = format.groups(taps);
    let out = &mut out[..format.packed_bytes(channels, taps)];
    out.fill(0);
    for c in 0..channels {
        let z = if zw.len() == 1 { zw[0] } else { zw[c] };
        let (tile, cc) = (c / ct, c % ct);
        let mut sum = 0i32;
        for t in 0..taps {
            let v = w[c * taps + t].to_i32() - z;
            assert!(format.holds(v), "centred weight {v} does not fit the kr = {kr} format");
            sum += v;
            let (g, h) = (t / kr, t % kr);
            let at = ((tile * groups + g) * ct + cc) * 4;
            if kr == 2 {
                out[at + 2 * h..at + 2 * h + 2].copy_from_slice(&(v as i16).to_le_bytes());
            } else {
                out[at + h] = v as i8 as u8;
            }
        }
        sums[c] = sum;
    }
}
