//! Packers: each writes one [`PackFormat`](crate::PackFormat) that a family of kernels reads.

pub mod codebook;

pub use codebook::{pack_codebook, pack_codebook4};

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
