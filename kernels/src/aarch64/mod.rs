//! AArch64 kernels, one module per ISA tier (NEON, dotprod, i8mm). Each tier lists its
//! kernels in its own `GEMM_KERNELS`; [`gemm_kernels`] joins them, least preferred first.
//!
//! * NEON: `qx8_gemm_4x16c1__neon`, exact for every input (i16 widening + `smlal`);
//!   `qx8_gemm_4x4c16_sadalp__neon` (`smull` + `smlal2` i16 pairs + `sadalp`) for weights
//!   whose stored `|b| ≤ 127`.
//! * dotprod: `qx8_gemm_8x8c4__dotprod` (`sdot` by element, weights stored as i8,
//!   u8 activations flipped to i8).
//! * i8mm: `qx8_gemm_8x8c8__i8mm` (`smmla` for i8 activations, `usmmla` for u8, weights
//!   stored as i8).
//!
//! * Depthwise: `qx8_dwconv_{up,9p,25p}16__neon` (i16 widening `smlal`, 16-channel
//!   tiles; [`neon::dwconv`]).
//! * Codebook: `tbl` decode, then `smull` + `sadalp` (`qx8_codebook{4,5}_gemm_4x8c8__neon`),
//!   `sdot` (`qx8_codebook{4,5}_gemm_8x8c8__dotprod`) or `smmla`/`usmmla`
//!   (`qx8_codebook{4,5}_gemm_8x8c8__i8mm`); [`neon::codebook`], [`dotprod::codebook`],
//!   [`i8mm::codebook`]. Grids beyond int8: `tbl` on the i16 table's byte planes +
//!   `smlal` (`qx8_codebook{4,5}_i16_gemm_4x4c8__neon`).
//! * Bit shift (codebook family `shift`): `qx8_shift_{pot,apot}_gemm_4x8c2__neon`
//!   (`sshl` on i16 lanes, `eor` sign, `sadalp`; [`neon::shift`]).
//! * PWLQ exact mode (fused GEMM, called by `qkern::quant::pwlq`):
//!   `qs8_pwlq_dot3_gemm_8x16c4__dotprod` (`tbl` decode of the code bytes into the three
//!   int8 operands, `sdot`; [`dotprod::pwlq`]) and `qs8_pwlq_dot3_gemm_8x16c4__neon`
//!   (`tbl`, `smull`/`smlal`/`sadalp`; [`neon::pwlq`]).
//!
//! The dotprod and i8mm kernels read A either as raw rows or packed by [`pack_a_8x8`]
//! (the driver packs once per row tile and reuses it for every column tile). All three
//! GEMM kernels also have indirect entries (convolution rows read in place through an
//! indirection buffer, [`IgemmArgs`](crate::IgemmArgs)): per tap, the raw-row K loop on
//! the tap's row pointers ([`tap_rows`]).

pub mod dotprod;
pub mod i8mm;
pub mod neon;

use crate::types::{CodebookUkernel, DwconvUkernel, GemmUkernel};

/// Every AArch64 GEMM microkernel in this build, least preferred first.
pub fn gemm_kernels() -> impl Iterator<Item = GemmUkernel> {
    neon::GEMM_KERNELS.iter().chain(dotprod::GEMM_KERNELS).chain(i8mm::GEMM_KERNELS).copied()
}

/// Every AArch64 depthwise microkernel in this build, least preferred first (within a
/// tier, the any-size kernel before the specialised ones).
pub fn dwconv_kernels() -> impl Iterator<Item = DwconvUkernel> {
    neon::dwconv::DWCONV_KERNELS.iter().copied()
}

/// Every AArch64 codebook microkernel in this build (both families: table lookup and bit
/// shift), least preferred first.
pub fn codebook_kernels() -> impl Iterator<Item = CodebookUkernel> {
    neon::shift::SHIFT_KERNELS
        .iter()
        .chain(neon::codebook::CODEBOOK_KERNELS)
        .chain(dotprod::codebook::CODEBOOK_KERNELS)
        .chain(i8mm::codebook::CODEBOOK_KERNELS)
        .copied()
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

/// The row pointers of tap `t` of an indirect tile ([`IgemmArgs`](crate::IgemmArgs)):
/// rows at and past `m` repeat row `m − 1` (valid memory), so the K loops run all `MR`
/// rows without a branch, as on raw rows ([`row_pointers`]); their results are never
/// stored.
///
/// # Safety
/// `args` satisfies the [`IgemmArgs`](crate::IgemmArgs) contract and `t < args.taps`.
#[inline(always)]
pub(crate) unsafe fn tap_rows<const MR: usize>(args: &crate::types::IgemmArgs, t: usize) -> [*const u8; MR] {
    // SAFETY: min(i, m − 1) < m and t < taps (contract).
    core::array::from_fn(|i| unsafe { args.tap_ptr(i.min(args.m - 1), t) })
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

/// 4 entries of a per-column table from column `j0`, lanes past `n` zero (nothing past
/// the table's `n` entries is read).
///
/// # Safety
/// `p` has `n > j0` readable entries.
#[inline(always)]
unsafe fn load_cols4(p: *const i32, n: usize, j0: usize) -> core::arch::aarch64::int32x4_t {
    use core::arch::aarch64::*;
    // SAFETY: a whole vector lies inside the table; a partial one is copied lane by lane.
    unsafe {
        if j0 + 4 <= n {
            vld1q_s32(p.add(j0))
        } else {
            let mut v = [0i32; 4];
            for (t, x) in v.iter_mut().enumerate().take(n - j0) {
                *x = *p.add(j0 + t);
            }
            vld1q_s32(v.as_ptr())
        }
    }
}

/// Stores the first `min(4, n − j0)` lanes of `x` at `p`.
///
/// # Safety
/// `p` is writable for `min(4, n − j0)` 4-byte elements.
#[inline(always)]
unsafe fn store_cols4(p: *mut i32, x: core::arch::aarch64::int32x4_t, n: usize, j0: usize) {
    use core::arch::aarch64::*;
    // SAFETY: whole vector or the lanes inside the row.
    unsafe {
        if j0 + 4 <= n {
            vst1q_s32(p, x)
        } else {
            let mut v = [0i32; 4];
            vst1q_s32(v.as_mut_ptr(), x);
            for (t, &y) in v.iter().enumerate().take(n - j0) {
                p.add(t).write_unaligned(y);
            }
        }
    }
}

/// The shared epilogue of the AArch64 kernels: adds the zero-point terms to the
/// accumulator tile and writes it through the output stage, 4 columns at a time in NEON
/// for I32, F32 and the `Fp32` requantization (bit-exact with the reference: `scvtf`,
/// separate multiply and add as the reference rounds twice, `fcvtns` rounds half to
/// even and saturates NaN to 0 as `as` does, a saturating zero-point add, then
/// `max(qmin)`, `min(qmax)`); the fixed-point requantization modes go through the
/// portable per-element code, the reference's own formula.
///
/// Reads `n` entries of each per-column table the stage uses and `m` row sums; writes
/// the `m × n` output tile only.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`](crate::GemmArgs) contract for an `m × n` tile with
/// `m ≤ MR`, `n ≤ NR`; `NR` is a multiple of 4.
#[inline]
pub(crate) unsafe fn store_tile_neon<const MR: usize, const NR: usize>(args: &crate::GemmArgs, tile: &[[i32; NR]; MR]) {
    use crate::types::{OutputKind, RequantMode};
    use core::arch::aarch64::*;
    let out = &args.out;
    let (m, n) = (args.m, args.n);
    if matches!(out.kind, OutputKind::U8 | OutputKind::I8) && out.mode != RequantMode::Fp32 {
        // SAFETY: forwarded contract.
        return unsafe { crate::generic::gemm::store_tile::<MR, NR>(args, tile) };
    }
    let zb_terms = !args.a_row_sum.is_null() && !args.b_zero_point.is_null();
    let mut j0 = 0;
    while j0 < n {
        // SAFETY (every table read below): the contract gives n entries for each table
        // the stage uses; `load_cols4` reads only those. Row sums: m entries.
        unsafe {
            let col_off = load_cols4(out.col_offset, n, j0);
            let zb = if zb_terms { load_cols4(args.b_zero_point, n, j0) } else { vdupq_n_s32(0) };
            let x_of = |i: usize| {
                let x = vaddq_s32(vld1q_s32(tile[i].as_ptr().add(j0)), col_off);
                if zb_terms { vsubq_s32(x, vmulq_n_s32(zb, *args.a_row_sum.add(i))) } else { x }
            };
            match out.kind {
                OutputKind::I32 => {
                    for i in 0..m {
                        store_cols4(args.c.cast::<i32>().add(i * args.ldc + j0), x_of(i), n, j0);
                    }
                }
                OutputKind::F32 => {
                    let scale = vreinterpretq_f32_s32(load_cols4(out.scale.cast(), n, j0));
                    let bias = if out.bias_f32.is_null() {
                        vdupq_n_f32(0.0) // the reference adds +0.0 (turning −0.0 into +0.0)
                    } else {
                        vreinterpretq_f32_s32(load_cols4(out.bias_f32.cast(), n, j0))
                    };
                    for i in 0..m {
                        let y = vaddq_f32(vmulq_f32(vcvtq_f32_s32(x_of(i)), scale), bias);
                        store_cols4(args.c.cast::<i32>().add(i * args.ldc + j0), vreinterpretq_s32_f32(y), n, j0);
                    }
                }
                OutputKind::U8 | OutputKind::I8 => {
                    let scale = vreinterpretq_f32_s32(load_cols4(out.scale.cast(), n, j0));
                    let zp = vdupq_n_s32(out.out_zero_point);
                    let (qmin, qmax) = (vdupq_n_s32(out.qmin), vdupq_n_s32(out.qmax));
                    for i in 0..m {
                        let q = vcvtnq_s32_f32(vmulq_f32(vcvtq_f32_s32(x_of(i)), scale));
                        let q = vminq_s32(vmaxq_s32(vqaddq_s32(q, zp), qmin), qmax);
                        // In the byte range now: the low byte of each lane is the value.
                        let b = vmovn_s16(vcombine_s16(vmovn_s32(q), vdup_n_s16(0)));
                        let word = vget_lane_u32::<0>(vreinterpret_u32_s8(b));
                        let dst = args.c.add(i * args.ldc + j0);
                        if j0 + 4 <= n {
                            dst.cast::<u32>().write_unaligned(word);
                        } else {
                            for t in 0..n - j0 {
                                dst.add(t).write((word >> (8 * t)) as u8);
                            }
                        }
                    }
                }
            }
        }
        j0 += 4;
    }
}
