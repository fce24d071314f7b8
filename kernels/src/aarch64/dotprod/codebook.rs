//! Table-lookup codebook tiles with `sdot`: the NEON `tbl` decode
//! ([`decode16`](crate::aarch64::neon::codebook)), then `sdot` by element.
//!
//! A group of the [`CodebookFormat`] (`nr = 16`: 64 nibble bytes, 4 columns × 4 K per
//! 16 bytes) decodes to 4 vectors of the weights of K `t` (low nibbles) and 4 of K
//! `4 + t` (high nibbles), each exactly the `.16b` operand of `sdot .4s` for 4 columns.
//! Each row's 8 activation bytes (K `8g .. 8g + 8`, i8; u8 ones XOR 0x80, `a_offset`
//! −128) are the by-element operand: lane 0 (K 0–3) against the low decodes, lane 1
//! (K 4–7) against the high ones. 4 rows × 4 column vectors = 16 accumulators, 32 `sdot`
//! per group against 20 decode instructions (4 loads, 4 `and`, 4 `ushr`, 8 `tbl`).
//!
//! Exactness: `sdot` sums four i8 × i8 products (each at most 2^14, the sum at most 2^16)
//! into its i32 lane; the accumulation wraps modulo 2^32 as the [`CodebookArgs`]
//! contract asks. Exact for every i8 table.
//!
//! `sdot` is unstable as an intrinsic on Rust 1.95: a one-instruction `asm!` wrapper in a
//! `neon,dotprod` function ([`sdot_lane`]), which the compiler inlines and schedules.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::aarch64::neon::codebook::{decode16, load_a8, tables};
use crate::generic::codebook::store_tile;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// Columns per tile.
const NR: usize = 16;

/// `acc += Σ_{i<4} w[4j + i]·a[4L + i]` per lane `j` (`sdot acc.4s, w.16b, a.4b[L]`).
///
/// # Safety
/// The CPU has dotprod.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: u32>(acc: int32x4_t, w: int8x16_t, a: int8x8_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; dotprod is enabled (contract).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{l}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The `R × 16` tile (`R ≤ 4`).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (64 or 80 bytes each), the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m = R`, `n ≤ 16`, an `nr = 16`
/// panel of `bits = 4` (5 with `B5`) codes; the CPU has dotprod.
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const R: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: table bytes (contract).
    let tables = unsafe { tables::<B5>(args) };
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let groups = args.k.div_ceil(8);
    for g in 0..groups {
        let kn = (args.k - 8 * g).min(8);
        // SAFETY: group g of the panel: 64 nibble bytes, then (5 bits) 16 plane bytes
        // (the low-nibble bitmap, then the high one: `decode16`'s layout).
        let w = unsafe {
            let p = args.b.add(g * gb);
            let plane = if B5 { vld1q_u8(p.add(NR * 4)) } else { vdupq_n_u8(0) };
            let mut w = [(vdupq_n_s8(0), vdupq_n_s8(0)); 4];
            for (v, wv) in w.iter_mut().enumerate() {
                *wv = decode16::<B5>(vld1q_u8(p.add(16 * v)), tables, plane, v);
            }
            w
        };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: row r < m, bytes 8g .. 8g + kn ≤ k; dotprod (contract).
            unsafe {
                let a = load_a8::<FLIP>(args.a.add(r * args.lda + 8 * g), kn);
                for (v, (wlo, whi)) in w.iter().enumerate() {
                    acc_r[v] = sdot_lane::<0>(acc_r[v], *wlo, a);
                    acc_r[v] = sdot_lane::<1>(acc_r[v], *whi, a);
                }
            }
        }
    }
    let mut out = [[0i32; NR]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (v, x) in a.iter().enumerate() {
            // SAFETY: 4 i32 of the row.
            unsafe { vst1q_s32(o.as_mut_ptr().add(4 * v), *x) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<R, NR>(args, &out) }
}

/// Dispatches on the tile's row count.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m ≤ 4`, `n ≤ 16`, an `nr = 16`
/// panel of `bits = 4` (5 with `B5`) codes; the CPU has dotprod (dispatch registers the
/// kernel only then).
unsafe fn entry<const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, R = m.
    unsafe {
        match args.m {
            1 => tile::<1, FLIP, B5>(args),
            2 => tile::<2, FLIP, B5>(args),
            3 => tile::<3, FLIP, B5>(args),
            _ => tile::<4, FLIP, B5>(args),
        }
    }
}

/// `qx8_codebook4_gemm_4x16c8__dotprod`: 4-bit codes, any i8 table, `tbl` + `sdot`.
pub const QX8_CODEBOOK4_GEMM_4X16C8__DOTPROD: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_4x16c8__dotprod",
    family: CodebookFamily::Lut,
    isa: Isa::Dotprod,
    bits: 4,
    mr: 4,
    format: CodebookFormat { nr: NR, bits: 4 },
    a_offset: [-128, 0],
    max_abs_table: None,
    extra_features: &[],
    run: [entry::<true, false>, entry::<false, false>],
};

/// `qx8_codebook5_gemm_4x16c8__dotprod`: 5-bit codes (bit plane + two-register `tbl`),
/// any i8 table.
pub const QX8_CODEBOOK5_GEMM_4X16C8__DOTPROD: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_4x16c8__dotprod",
    family: CodebookFamily::Lut,
    isa: Isa::Dotprod,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: NR, bits: 5 },
    a_offset: [-128, 0],
    max_abs_table: None,
    extra_features: &[],
    run: [entry::<true, true>, entry::<false, true>],
};

/// dotprod codebook kernels, least preferred first.
pub const CODEBOOK_KERNELS: &[CodebookUkernel] =
    &[QX8_CODEBOOK4_GEMM_4X16C8__DOTPROD, QX8_CODEBOOK5_GEMM_4X16C8__DOTPROD];
