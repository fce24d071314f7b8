//! AArch64 kernels, one module per ISA tier (NEON, dotprod, i8mm). Each tier lists its
//! kernels in its own `GEMM_KERNELS`; [`gemm_kernels`] joins them, least preferred first.
//!
//! * NEON: `qx8_gemm_4x16c1__neon`, exact for every input (i16 widening + `smlal`).
//! * dotprod: `qx8_gemm_8x8c4__dotprod` (`sdot` by element, weights stored as i8,
//!   u8 activations flipped to i8).
//! * i8mm: `qx8_gemm_8x8c8__i8mm` (`smmla` for i8 activations, `usmmla` for u8, weights
//!   stored as i8).
//!
//! The dotprod and i8mm kernels read A either as raw rows or packed by [`pack_a_8x8`]
//! (the driver packs once per row tile and reuses it for every column tile).

pub mod dotprod;
pub mod i8mm;
pub mod neon;

use crate::types::GemmUkernel;

/// Every AArch64 GEMM microkernel in this build, least preferred first.
pub fn gemm_kernels() -> impl Iterator<Item = GemmUkernel> {
    neon::GEMM_KERNELS.iter().chain(dotprod::GEMM_KERNELS).chain(i8mm::GEMM_KERNELS).copied()
}

/// Rows of the 8-row packed A layout ([`pack_a_8x8`]).
pub(crate) const PACK_MR: usize = 8;
/// K elements per block of the packed A layout.
pub(crate) const PACK_KB: usize = 8;
/// Bytes of one block of the packed A layout (8 rows × 8 K bytes).
pub(crate) const PACK_BLOCK_BYTES: usize = PACK_MR * PACK_KB;

/// Packs `m ≤ 8` rows of `k` activations into blocks of 8 K: block `b` holds, for each
/// of the 8 rows in order, its bytes `8b..8b + 8` (so a 16-byte load is a pair of rows,
/// the 2×8 operand of `smmla`, and its 4-byte lanes are the rows' K groups of 4, the
/// `sdot` by-element operand). Rows past `m` and K past `k` are zero. With `FLIP`, every
/// real byte is XORed with 0x80 (u8 → i8 minus 128, the `a_offset` of the sdot kernel).
/// Writes exactly `k.div_ceil(8)·64` bytes.
///
/// # Safety
/// `1 ≤ m` rows of `k` bytes are readable from `a`, `lda` apart (rows past 8 are
/// ignored); `dst` is writable for `k.div_ceil(8)·64` bytes.
pub(crate) unsafe fn pack_a_8x8<const FLIP: bool>(a: *const u8, lda: usize, m: usize, k: usize, dst: *mut u8) {
    let m = m.min(PACK_MR);
    let flip = if FLIP { 0x8080_8080_8080_8080u64 } else { 0 };
    for blk in 0..k.div_ceil(PACK_KB) {
        let t = blk * PACK_KB;
        let len = PACK_KB.min(k - t);
        for r in 0..PACK_MR {
            let word = if r >= m {
                0
            } else if len == PACK_KB {
                // SAFETY: bytes t..t+8 ≤ k of row r < m are readable.
                unsafe { a.add(r * lda + t).cast::<u64>().read_unaligned() ^ flip }
            } else {
                let mut bytes = [0u8; PACK_KB];
                // SAFETY: bytes t..k of row r are readable; `bytes` holds 8 ≥ len.
                unsafe { core::ptr::copy_nonoverlapping(a.add(r * lda + t), bytes.as_mut_ptr(), len) };
                // Only the real bytes are flipped; the padding stays 0 (its weights are 0).
                u64::from_le_bytes(bytes) ^ (flip & (u64::MAX >> (64 - 8 * len)))
            };
            // SAFETY: block blk < k.div_ceil(8), row r: inside dst.
            unsafe { dst.add(blk * PACK_BLOCK_BYTES + r * PACK_KB).cast::<u64>().write_unaligned(word) };
        }
    }
}

/// The row pointers of a raw-row tile: rows at and past `m` repeat row `m − 1`, so the
/// K loop runs all rows without a branch (their results are never stored).
///
/// # Safety
/// `args.m ≥ 1` rows of A exist `args.lda` apart.
#[inline(always)]
pub(crate) unsafe fn row_pointers<const MR: usize>(args: &crate::types::GemmArgs) -> [*const u8; MR] {
    let mut rows = [args.a; MR];
    for r in 1..MR {
        // SAFETY: row r < m lies inside A (contract); rows past m are not formed.
        rows[r] = if r < args.m { unsafe { args.a.add(r * args.lda) } } else { rows[r - 1] };
    }
    rows
}
