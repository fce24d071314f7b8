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

#[cfg(test)]
mod tests;

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

/// The fixed-point requantization parameters of 4 columns, derived once per column
/// group from their `QuantizedMultiplier {multiplier, shift}` for [`store_tile_neon`].
///
/// Target: `reference::requant::requantize_fixed` on an i32 accumulator, i.e. the exact
/// (unwrapped, unsaturated) value of the mode's formula, `+ zero_point`, then the clamp.
///
/// * Narrow path (`TfliteDoubleRounding`, every shift ≤ 0, so no left shift): gemmlowp's
///   two steps on i32 lanes. `sqrdmulh` is `SaturatingRoundingDoublingHighMul` exactly,
///   `floor((x·M + 2^30) / 2^31)`, except that it saturates the one product
///   `INT32_MIN·INT32_MIN` to `2^31 − 1` where the exact value is `2^31` (fixed below).
///   Then `RoundingDivideByPOT(h, r)`, ties away from zero, with `r = −shift`:
///   `srshl` by `−r` computes `floor((v + 2^(r−1)) / 2^r)` exactly (the architecture
///   adds the rounding constant in unbounded precision), i.e. ties toward +∞. For
///   `h ≥ 0` that is already round-half-away. For `h < 0`, round-half-away is
///   `ceil((h − 2^(r−1)) / 2^r)`, and for integers `ceil(a / 2^r) = floor((a + 2^r − 1) / 2^r)`,
///   so it equals `floor((h − 1 + 2^(r−1)) / 2^r)`: `srshl` applied to `h − 1`. The
///   fix-up `(h & −r) >> 31` (arithmetic) is −1 exactly when `h < 0` and `r > 0` (the
///   sign bit of `−r` is set iff `r > 0`; for `r = 0` `srshl` does not round, so no
///   fix-up); `h ≥ −(2^31 − 1)` (`sqrdmulh` never returns `INT32_MIN`), so `h − 1` does
///   not wrap. `r ≥ 32` gives 0 for every `h`, as the exact form does, so `r` is
///   clamped to 32. The saturating corner: for `1 ≤ r ≤ 31`, `2^31 − 1` and `2^31`
///   round to the same `2^(31−r)`; they differ by one at `r = 0` (`2^31` vs `2^31 − 1`)
///   and `r = 32` (`1` vs `0`). Those lanes (`M = INT32_MIN`, `shift ∈ {0, −32}`, and
///   the accumulator `INT32_MIN`) get `+1` after the saturating zero-point add, which is
///   exact: `sat(sat(2^31 − 1 + zp) + 1) = sat(2^31 + zp)` for every `zp`, and the clamp
///   to `[qmin, qmax] ⊂ i32` of an i32-saturated value equals the clamp of the exact one.
/// * Wide path (`SingleRounding`, or a positive shift in the group): the exact product
///   `p = x·M` in i64 lanes (`smull`/`smull2`, `|p| ≤ 2^62`), then one `sqrshl` by
///   `s`: for `s < 0` a rounding right shift `floor((p + 2^(−s−1)) / 2^−s)` (exact, as
///   above; `−s ≥ 64` gives 0, as `|p| < 2^63`), for `s ≥ 0` a left shift saturating
///   to i64 (beyond i64 the clamp gives `qmin`/`qmax` with the right sign anyway).
///   Single rounding: `floor(p·2^shift / 2^31 + 1/2)` is that with `s = shift − 31`.
///   Double rounding: `SaturatingRoundingDoublingHighMul(x·2^left, M)` evaluated exactly
///   is `floor((p·2^left + 2^30) / 2^31)`, i.e. `s = left − 31`; then the
///   `RoundingDivideByPOT` with the same fix-up in i64 (`right > 0` only when `left = 0`,
///   so `|y| ≤ 2^31` there). The zero point is added in i64 (saturating), then `sqxtn`.
#[derive(Clone, Copy)]
struct FixedCols4 {
    /// The multipliers.
    mult: core::arch::aarch64::int32x4_t,
    /// Narrow path: `−min(r, 32)`; wide path: `−min(right, 63)` (0 for single rounding).
    neg_right: core::arch::aarch64::int32x4_t,
    /// Narrow path: lanes whose `INT32_MIN` accumulator needs the `+1` (all ones).
    corner: core::arch::aarch64::int32x4_t,
    /// Narrow path: `corner` has a lane set.
    any_corner: bool,
    /// Wide path: the `sqrshl` count `s` per lane, in `[−64, 63]`.
    sh: core::arch::aarch64::int32x4_t,
    /// The narrow path applies (double rounding, every shift ≤ 0).
    use_narrow: bool,
}

impl FixedCols4 {
    /// The parameters of columns `j0..min(j0 + 4, n)` (lanes past `n` get `{0, 0}`).
    ///
    /// # Safety
    /// `qmult` has `n > j0` readable entries.
    #[inline(always)]
    unsafe fn load(qmult: *const crate::types::QuantizedMultiplier, n: usize, j0: usize, single: bool) -> FixedCols4 {
        use core::arch::aarch64::*;
        // SAFETY: a whole group lies inside the table; a partial one is copied.
        unsafe {
            let mut part = [crate::types::QuantizedMultiplier::default(); 4];
            let src = if j0 + 4 <= n {
                qmult.add(j0)
            } else {
                core::ptr::copy_nonoverlapping(qmult.add(j0), part.as_mut_ptr(), n - j0);
                part.as_ptr()
            };
            // `{multiplier, shift}` pairs (repr(C), two i32): de-interleave.
            let q = vld2q_s32(src.cast::<i32>());
            let (mult, shift) = (q.0, q.1);
            let zero = vdupq_n_s32(0);
            let narrow = !single && vmaxvq_s32(shift) <= 0;
            if narrow {
                let min = vdupq_n_s32(i32::MIN);
                let at = |s: i32| vceqq_s32(shift, vdupq_n_s32(s));
                let corner = vandq_u32(vceqq_s32(mult, min), vorrq_u32(at(0), at(-32)));
                FixedCols4 {
                    mult,
                    neg_right: vmaxq_s32(shift, vdupq_n_s32(-32)),
                    corner: vreinterpretq_s32_u32(corner),
                    any_corner: vmaxvq_u32(corner) != 0,
                    sh: zero,
                    use_narrow: narrow,
                }
            } else {
                let sh = if single {
                    // s = shift − 31, clamped to [−64, 63] (both ends act as beyond).
                    vsubq_s32(vmaxq_s32(vminq_s32(shift, vdupq_n_s32(94)), vdupq_n_s32(-33)), vdupq_n_s32(31))
                } else {
                    // s = max(shift, 0) − 31, clamped to ≤ 63.
                    vsubq_s32(vminq_s32(vmaxq_s32(shift, zero), vdupq_n_s32(94)), vdupq_n_s32(31))
                };
                let neg_right = if single { zero } else { vmaxq_s32(vminq_s32(shift, zero), vdupq_n_s32(-63)) };
                FixedCols4 { mult, neg_right, corner: zero, any_corner: false, sh, use_narrow: narrow }
            }
        }
    }

    /// Narrow path on 4 accumulators: `sat32(requantize_fixed(x))` before the clamp
    /// (zero point included).
    #[inline(always)]
    unsafe fn narrow(&self, x: core::arch::aarch64::int32x4_t, zp: core::arch::aarch64::int32x4_t) -> core::arch::aarch64::int32x4_t {
        use core::arch::aarch64::*;
        // SAFETY: register-only NEON arithmetic (NEON is baseline on AArch64).
        unsafe {
            let h = vqrdmulhq_s32(x, self.mult);
            // h − 1 where h < 0 and r > 0 (see the type's comment), then the rounding shift.
            let h = vsraq_n_s32::<31>(h, vandq_s32(h, self.neg_right));
            let q = vqaddq_s32(vrshlq_s32(h, self.neg_right), zp);
            if self.any_corner {
                let fix = vandq_s32(vreinterpretq_s32_u32(vceqq_s32(x, vdupq_n_s32(i32::MIN))), self.corner);
                vqsubq_s32(q, fix) // + 1 (saturating) on the corner lanes
            } else {
                q
            }
        }
    }

    /// Wide path on 4 accumulators: as [`FixedCols4::narrow`].
    #[inline(always)]
    unsafe fn wide(&self, x: core::arch::aarch64::int32x4_t, zp: core::arch::aarch64::int64x2_t) -> core::arch::aarch64::int32x4_t {
        use core::arch::aarch64::*;
        // SAFETY: register-only NEON arithmetic.
        unsafe {
            let half = |p: int64x2_t, sh: int64x2_t, nr: int64x2_t| {
                let y = vqrshlq_s64(p, sh);
                // RoundingDivideByPOT (nr = 0 for single rounding: no-op).
                let y = vsraq_n_s64::<63>(y, vandq_s64(y, nr));
                vqmovn_s64(vqaddq_s64(vrshlq_s64(y, nr), zp))
            };
            let lo = half(
                vmull_s32(vget_low_s32(x), vget_low_s32(self.mult)),
                vmovl_s32(vget_low_s32(self.sh)),
                vmovl_s32(vget_low_s32(self.neg_right)),
            );
            let hi = half(vmull_high_s32(x, self.mult), vmovl_high_s32(self.sh), vmovl_high_s32(self.neg_right));
            vcombine_s32(lo, hi)
        }
    }
}

/// The shared epilogue of the AArch64 kernels: adds the zero-point terms to the
/// accumulator tile and writes it through the output stage, 4 columns at a time in NEON,
/// bit-exact with the reference for every stage: I32; F32 and the `Fp32` requantization
/// (`scvtf`, separate multiply and add as the reference rounds twice, `fcvtns` rounds
/// half to even and saturates NaN to 0 as `as` does, a saturating zero-point add); the
/// fixed-point modes as [`FixedCols4`] describes; then `max(qmin)`, `min(qmax)`.
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
    let zb_terms = !args.a_row_sum.is_null() && !args.b_zero_point.is_null();
    let mut j0 = 0;
    while j0 < n {
        // SAFETY (every table read below): the contract gives n entries for each table
        // the stage uses; `load_cols4` and `FixedCols4::load` read only those. Row sums:
        // m entries.
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
                    let zp = vdupq_n_s32(out.out_zero_point);
                    let (qmin, qmax) = (vdupq_n_s32(out.qmin), vdupq_n_s32(out.qmax));
                    // `q`: the requantized value with the zero point, saturated to i32
                    // (which the clamp to [qmin, qmax] ⊂ i32 does not see).
                    let store = |i: usize, q: int32x4_t| {
                        let q = vminq_s32(vmaxq_s32(q, qmin), qmax);
                        // The stored byte is the low byte of each lane (`as u8`).
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
                    };
                    match out.mode {
                        RequantMode::Fp32 => {
                            let scale = vreinterpretq_f32_s32(load_cols4(out.scale.cast(), n, j0));
                            for i in 0..m {
                                let q = vcvtnq_s32_f32(vmulq_f32(vcvtq_f32_s32(x_of(i)), scale));
                                store(i, vqaddq_s32(q, zp));
                            }
                        }
                        mode => {
                            let cols = FixedCols4::load(out.qmult, n, j0, mode == RequantMode::SingleRounding);
                            if cols.use_narrow {
                                for i in 0..m {
                                    store(i, cols.narrow(x_of(i), zp));
                                }
                            } else {
                                let zp64 = vdupq_n_s64(out.out_zero_point as i64);
                                for i in 0..m {
                                    store(i, cols.wide(x_of(i), zp64));
                                }
                            }
                        }
                    }
                }
            }
        }
        j0 += 4;
    }
}

/// The NEON body of [`requantize_i32_slice`](crate::generic::requant::requantize_i32_slice):
/// requantizes the first `4·⌊len/4⌋` of `len = min(acc.len(), out.len())` elements as
/// the GEMM epilogue does (one [`FixedCols4`] broadcast from `qm` for the fixed-point
/// modes, `scvtf`/`fmul`/`fcvtns` for `Fp32`), storing the low byte of each clamped
/// value, and returns how many it did (the caller finishes the tail). Bit-exact with
/// `reference::requant::requantize` for every input, except that `Fp32` needs
/// `|zero_point|, |qmin|, |qmax| ≤ 2^16` (where `fcvtns` saturating to i32 cannot be
/// told from the reference's i64); otherwise it does nothing and returns 0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn requantize_slice_neon(
    acc: &[i32],
    out: &mut [u8],
    mode: crate::types::RequantMode,
    scale: f32,
    qm: crate::types::QuantizedMultiplier,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> usize {
    use crate::types::RequantMode;
    use core::arch::aarch64::*;
    const FP32_LIMIT: i32 = 1 << 16;
    if mode == RequantMode::Fp32 && [zero_point, qmin, qmax].iter().any(|v| v.unsigned_abs() > FP32_LIMIT as u32) {
        return 0;
    }
    let len = acc.len().min(out.len()) / 4 * 4;
    let (acc, out) = (&acc[..len], &mut out[..len]);
    // SAFETY: NEON is baseline on AArch64; every load and store below is of a whole
    // 4-element chunk of the slices.
    unsafe {
        let zp = vdupq_n_s32(zero_point);
        let zp64 = vdupq_n_s64(zero_point as i64);
        let (lo, hi) = (vdupq_n_s32(qmin), vdupq_n_s32(qmax));
        let qms = [qm; 4];
        let cols = FixedCols4::load(qms.as_ptr(), 4, 0, mode == RequantMode::SingleRounding);
        let vscale = vdupq_n_f32(scale);
        for (a, o) in acc.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
            let x = vld1q_s32(a.as_ptr());
            let q = match mode {
                RequantMode::Fp32 => vqaddq_s32(vcvtnq_s32_f32(vmulq_f32(vcvtq_f32_s32(x), vscale)), zp),
                _ if cols.use_narrow => cols.narrow(x, zp),
                _ => cols.wide(x, zp64),
            };
            let q = vminq_s32(vmaxq_s32(q, lo), hi);
            let b = vmovn_s16(vcombine_s16(vmovn_s32(q), vdup_n_s16(0)));
            o.as_mut_ptr().cast::<u32>().write_unaligned(vget_lane_u32::<0>(vreinterpret_u32_s8(b)));
        }
    }
    len
}
