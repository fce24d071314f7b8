//! Packers: each writes one [`PackFormat`](crate::PackFormat) that a family of kernels reads.

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
/// weights `w − zw[c]` as little-endian i16, channel tiles of `ct`, taps in pairs,
/// zero-padded. `zw` holds one zero point (per tensor) or `channels`. Also writes
/// `sums[c] = Σ_t (w[c][t] − zw[c])` (the driver folds `−za·sums[c]` into `col_offset`).
/// `out` must hold `format.packed_bytes(channels, taps)` bytes, `sums` `channels`.
///
/// Panics if a slice is too short (the driver validates first).
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
    let ct = format.ct;
    let pairs = format.pairs(taps);
    let out = &mut out[..format.packed_bytes(channels, taps)];
    out.fill(0);
    for c in 0..channels {
        let z = if zw.len() == 1 { zw[0] } else { zw[c] };
        let (tile, cc) = (c / ct, c % ct);
        let mut sum = 0i32;
        for t in 0..taps {
            let v = w[c * taps + t].to_i32() - z;
            sum += v;
            let (p, h) = (t / 2, t % 2);
            let at = ((tile * pairs + p) * ct + cc) * 4 + 2 * h;
            out[at..at + 2].copy_from_slice(&(v as i16).to_le_bytes());
        }
        sums[c] = sum;
    }
}
