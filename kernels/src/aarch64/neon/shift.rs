//! Bit-shift codebook tiles on plain NEON: `sshl` on i16 lanes, the sign by an `eor` with
//! the weight's sign mask (its `+1` repaid once per column, not per row), and `sadalp`
//! (pairwise add-accumulate into i32) that also sums each column's two K lanes.
//!
//! Layout ([`crate::pack::shift`], `nr = 8`): the 16 term bytes of one K pair `p` of a
//! group are 8 columns × 2 consecutive K, byte `2j + u`. Decode, once per K pair and
//! shared by the `R ≤ 4` rows: `and 0x3F` (the counts), `cmlt #0` (the sign bit as a
//! byte mask), and `zip1`/`zip2` of each with itself, which makes the i16 lanes `(j, u)`
//! of two vectors (4 columns each) — `sshl` reads only the low signed byte of a lane as
//! its count, and the mask byte doubled is an all-ones or zero i16 lane. An APoT second
//! term is `zip`ped as it is (its bytes are counts only). Per row, the group's 8
//! activations are widened to i16 once; per K pair, their pair `(x_k, x_{k+1})` is
//! broadcast as one 32-bit lane (`dup`), then per 4 columns: `sshl` (twice + `add` for
//! APoT), `eor` with the sign mask, `sadalp` into the row's i32 accumulator.
//!
//! # The sign
//!
//! With `m` the lane's mask (−1 for a negative weight, else 0) and `t = x·|w|` the shifted
//! sum, `t ^ m = t` or `−t − 1`: that is `sign·t + m`. So each lane accumulates
//! `Σ (x·w + m)` and a per-column count `Σ m` (independent of the row: an `add` per K
//! pair in i16, a `sadalp` per group of 8 K, where it is at most 4 in magnitude) is
//! subtracted at the end. One `eor` per row and 4 columns instead of `eor` + `sub`.
//!
//! # Why i16 is exact
//!
//! An activation is `|x| ≤ 255` (u8 zero-extended; i8 sign-extended, `|x| ≤ 128`). A
//! weight is `±(2^a [+ 2^b])` with exponents `a, b ≤ 6` (`SHIFT_MAX_EXP`), so
//! `|w| ≤ 64 + 32 = 96`.
//! * One shift: `|x << a| ≤ 255·64 = 16320 < 2^15`: `sshl` drops no bit; a missing term's
//!   count 32 is ≥ the lane width, and `sshl` then gives 0 (the Arm ARM shifts the
//!   element to infinite precision and keeps its low 16 bits).
//! * One K step of one lane: `|(x·|w|) ^ m| ≤ 255·96 + 1 = 24481 < 2^15`.
//! * That lane goes to `sadalp` at once (`W = 1` K pair per widening): no two steps are
//!   ever summed in i16, so the kernels are exact for every grid the shift format holds
//!   (`max_abs_table: None`). Summing `W = 2` steps before `sadalp` would need
//!   `2·(255·G + 1) ≤ 32767`, i.e. grids within ±64, and is no faster: `sadalp` takes the
//!   place of the `add` it would save, and the extra i16 partials spill (llvm-mca 16, one
//!   group of the 4-row tile, `W = 1` vs `W = 2`: Cortex-A53 PoT 173 vs 203 cycles, APoT
//!   279 vs 348; Neoverse-N1, on LLVM 16's Cortex-A57 model, PoT 106 vs 111, APoT 175
//!   vs 170).
//! * `sadalp` adds the two lanes `(j, 0)`, `(j, 1)` to column `j`'s i32 exactly; the i32
//!   sums wrap modulo 2^32 as the [`CodebookArgs`] contract allows (the driver keeps the
//!   true value within i32 or chunks K).
//!
//! # Speed
//!
//! `benches/arm-mca.sh`, one group of 8 K of the 4 × 8 tile (256 MACs): PoT 173 cycles on
//! Cortex-A53, 106 on Neoverse-N1; APoT 279 and 175; the lookup kernel
//! `qx8_codebook4_gemm_4x8c8__neon` 107 and 46. As on x86, dispatch keeps the lookup
//! family by default and runs these on request (`QKERN_CODEBOOK_KERNEL=shift`).

use core::arch::aarch64::*;

use super::codebook::load_a8;
use crate::generic::codebook::store_tile;
use crate::pack::shift::SHIFT_COUNT_MASK;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, CodebookUkernelFn, Isa};

/// Columns per tile.
const NR: usize = 8;

/// The decoded weights of one K pair of the 8 columns: per vector `v` (columns
/// `4v .. 4v + 4`, i16 lanes `(j, u)`), the term counts in each lane's low byte and the
/// sign mask.
#[derive(Clone, Copy)]
struct Pair {
    /// Term 0's counts.
    c0: [int16x8_t; 2],
    /// Term 1's counts (APoT only).
    c1: [int16x8_t; 2],
    /// −1 for a negative weight, else 0.
    neg: [int16x8_t; 2],
}

/// `b` zipped with itself: the i16 lanes `(b[i], b[i])` of bytes `0..8` and `8..16`.
#[inline(always)]
fn double(b: uint8x16_t) -> [int16x8_t; 2] {
    // SAFETY: register-only NEON operations (the AArch64 baseline).
    unsafe { [vreinterpretq_s16_u8(vzip1q_u8(b, b)), vreinterpretq_s16_u8(vzip2q_u8(b, b))] }
}

/// Decodes K pair `p` of a group (`at`: its term-0 bytes, `plane` bytes before term 1's).
///
/// # Safety
/// 16 bytes are readable at `at`, and at `at + plane` for `T = 2`.
#[inline(always)]
unsafe fn decode<const T: usize>(at: *const u8, plane: usize) -> Pair {
    // SAFETY: the reads the contract allows; NEON is the AArch64 baseline.
    unsafe {
        let raw = vld1q_u8(at);
        let c1 = if T == 2 { double(vld1q_u8(at.add(plane))) } else { [vdupq_n_s16(0); 2] };
        Pair {
            c0: double(vandq_u8(raw, vdupq_n_u8(SHIFT_COUNT_MASK))),
            c1,
            neg: double(vcltzq_s8(vreinterpretq_s8_u8(raw))),
        }
    }
}

/// `Σ ±(x << e)` of one K pair for one row: `x` is the row's activation pair broadcast
/// to every 32-bit lane; each lane sum, `eor`ed with the sign mask, is `sadalp`ed into
/// `acc`.
#[inline(always)]
fn step<const T: usize>(acc: &mut [int32x4_t; 2], x: int16x8_t, d: &Pair) {
    // SAFETY: register-only NEON operations (the AArch64 baseline).
    unsafe {
        for (v, a) in acc.iter_mut().enumerate() {
            let mut t = vshlq_s16(x, d.c0[v]);
            if T == 2 {
                t = vaddq_s16(t, vshlq_s16(x, d.c1[v]));
            }
            *a = vpadalq_s16(*a, veorq_s16(t, d.neg[v]));
        }
    }
}

/// The `R × 8` tile (`R = m ≤ 4`).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)·64·T` bytes; not the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m = R`, `n ≤ 8`, an `nr = 8`
/// panel in the `T`-term shift layout.
// The row and vector indices address several register arrays at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize, const T: usize, const SIGNED: bool>(args: &CodebookArgs) {
    let plane = NR * 8;
    let gb = plane * T;
    let mut acc = [[vdupq_n_s32(0); 2]; R];
    // Σ m per column (i32), and its i16 partial over the current group.
    let mut corr = [vdupq_n_s32(0); 2];
    // Group `g` of `kn ≤ 8` real K (the rest of the activations 0, the rest of the
    // weights the zero weight). A macro, so the whole-group and tail copies are both
    // inline with a constant or variable `kn`.
    macro_rules! group {
        ($g:expr, $kn:expr) => {{
            let (g, kn): (usize, usize) = ($g, $kn);
            let mut x = [vdupq_n_s32(0); R];
            for r in 0..R {
                // SAFETY: row r < m, bytes 8g .. 8g + kn ≤ k (contract).
                let a = unsafe { load_a8::<false>(args.a.add(r * args.lda + 8 * g), kn) };
                let a = if SIGNED { vmovl_s8(a) } else { vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_s8(a))) };
                x[r] = vreinterpretq_s32_s16(a);
            }
            // SAFETY: group g < k.div_ceil(8) of the panel: gb bytes (contract).
            let gp = unsafe { args.b.add(g * gb) };
            let mut c16 = [vdupq_n_s16(0); 2];
            macro_rules! pair {
                ($p:literal) => {{
                    // SAFETY: the group's 16 term-0 (and term-1) bytes of K pair p.
                    let d = unsafe { decode::<T>(gp.add(2 * NR * $p), plane) };
                    for v in 0..2 {
                        c16[v] = vaddq_s16(c16[v], d.neg[v]);
                    }
                    for r in 0..R {
                        step::<T>(&mut acc[r], vreinterpretq_s16_s32(vdupq_laneq_s32::<$p>(x[r])), &d);
                    }
                }};
            }
            pair!(0);
            pair!(1);
            pair!(2);
            pair!(3);
            for v in 0..2 {
                corr[v] = vpadalq_s16(corr[v], c16[v]);
            }
        }};
    }
    let full = args.k / 8;
    for g in 0..full {
        group!(g, 8);
    }
    if !args.k.is_multiple_of(8) {
        group!(full, args.k % 8);
    }
    let mut out = [[0i32; NR]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        for v in 0..2 {
            // SAFETY: 4 i32 of the row at 4v < 8.
            unsafe { vst1q_s32(o.as_mut_ptr().add(4 * v), vsubq_s32(a[v], corr[v])) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<R, NR>(args, &out) }
}

/// Dispatches on the tile's row count.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m ≤ 4`, `n ≤ 8`, an `nr = 8`
/// panel in the `T`-term shift layout.
unsafe fn entry<const T: usize, const SIGNED: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, R = m; NEON is the AArch64 baseline.
    unsafe {
        match args.m {
            1 => tile::<1, T, SIGNED>(args),
            2 => tile::<2, T, SIGNED>(args),
            3 => tile::<3, T, SIGNED>(args),
            _ => tile::<4, T, SIGNED>(args),
        }
    }
}

/// The descriptor of the `terms`-term kernel (`bits = 8·terms` bytes per weight).
const fn kernel(name: &'static str, terms: u32, run: [CodebookUkernelFn; 2]) -> CodebookUkernel {
    CodebookUkernel {
        name,
        family: CodebookFamily::Shift,
        isa: Isa::Neon,
        bits: 5,
        mr: 4,
        format: CodebookFormat { nr: NR, bits: 8 * terms },
        a_offset: [0, 0],
        max_abs_table: None,
        table_i16: false,
        a_sign_split: false,
        gemv: None,
        extra_features: &[],
        run,
    }
}

/// `qx8_shift_pot_gemm_4x8c2__neon`: PoT weights (`±x << e`), `sshl` on i16 lanes,
/// `sadalp` into i32; exact for every grid of the shift format.
pub const QX8_SHIFT_POT_GEMM_4X8C2__NEON: CodebookUkernel =
    kernel("qx8_shift_pot_gemm_4x8c2__neon", 1, [entry::<1, false>, entry::<1, true>]);

/// `qx8_shift_apot_gemm_4x8c2__neon`: APoT weights (`±((x << e1) + (x << e2))`), two
/// `sshl` per lane; exact for every grid of the shift format.
pub const QX8_SHIFT_APOT_GEMM_4X8C2__NEON: CodebookUkernel =
    kernel("qx8_shift_apot_gemm_4x8c2__neon", 2, [entry::<2, false>, entry::<2, true>]);

/// NEON bit-shift codebook kernels, least preferred first.
pub const SHIFT_KERNELS: &[CodebookUkernel] = &[QX8_SHIFT_POT_GEMM_4X8C2__NEON, QX8_SHIFT_APOT_GEMM_4X8C2__NEON];
