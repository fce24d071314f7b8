//! Table-lookup codebook tiles with `sdot`: the NEON `tbl` decode
//! ([`decode16`](crate::aarch64::neon::codebook)), then `sdot` by element.
//!
//! A group of the [`CodebookFormat`] (`nr = 8`: 32 nibble bytes, 4 columns × 4 K per
//! 16 bytes) decodes to 2 vectors of the weights of K `t` (low nibbles) and 2 of K
//! `4 + t` (high nibbles), each exactly the `.16b` operand of `sdot .4s` for 4 columns.
//! Each row's 8 activation bytes (K `8g .. 8g + 8`, i8; u8 ones XOR 0x80, `a_offset`
//! −128) are the by-element operand: lane 0 (K 0–3) against the low decodes, lane 1
//! (K 4–7) against the high ones. 8 rows × 2 column vectors = 16 accumulators, 32 `sdot`
//! per group against 10 decode instructions (2 loads, 2 `and`, 2 `ushr`, 4 `tbl`): the 8
//! rows share each decode. (A 4 × 16 tile, tried first, spent 20 decode instructions per
//! 32 `sdot`: 48 % of the `sdot` peak by llvm-mca.)
//!
//! Exactness: `sdot` sums four i8 × i8 products (each at most 2^14, the sum at most 2^16)
//! into its i32 lane; the accumulation wraps modulo 2^32 as the [`CodebookArgs`]
//! contract asks. Exact for every i8 table.
//!
//! `sdot` is unstable as an intrinsic on Rust 1.95: a one-instruction `asm!` (macro
//! `sdot_lane!`, expanded inside the `neon,dotprod` tile function) that the compiler
//! allocates registers for and schedules.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::aarch64::neon::codebook::{decode_group8, load_a8, tables};
use crate::generic::codebook::store_tile;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// Columns per tile.
const NR: usize = 8;
/// Rows per tile.
const MR: usize = 8;

/// `$acc += Σ_{i<4} $w[4j + i]·$a[4L + i]` per lane `j` (`sdot acc.4s, w.16b, a.4b[L]`).
/// A macro, not a function: the `asm!` lands in the caller (a `neon,dotprod` function),
/// so it is never an out-of-line call, whatever the inliner decides. Used inside an
/// `unsafe` block of such a function (a register-only instruction: no memory, no flags).
macro_rules! sdot_lane {
    ($acc:expr, $w:expr, $a:expr, $l:literal) => {
        asm!(
            concat!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[", $l, "]"),
            acc = inout(vreg) $acc,
            w = in(vreg) $w,
            a = in(vreg) $a,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
}

/// The `R × 8` tile (`R ≤ 8`); rows at and past `m` repeat row `m − 1` (computed, never
/// stored).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (32 or 40 bytes each), the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `1 ≤ m ≤ R`, `n ≤ 8`, an `nr = 8`
/// panel of `bits = 4` (5 with `B5`) codes; the CPU has dotprod.
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const R: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY: table bytes (contract).
    let tables = unsafe { tables::<B5>(args) };
    let mut acc = [[vdupq_n_s32(0); 2]; R];
    // SAFETY: rows below m lie in A (contract); the others repeat row m − 1.
    let rows: [*const u8; R] = core::array::from_fn(|r| unsafe { args.a.add(r.min(args.m - 1) * args.lda) });
    // Group `g` of `kn ≤ 8` real K: expanded with a constant 8 for the whole groups (a
    // branch-free loop body), once more for the K tail. A macro, so both copies are
    // inline (a closure called twice may be outlined, a call per group).
    macro_rules! group {
        ($g:expr, $kn:expr) => {{
            let (g, kn): (usize, usize) = ($g, $kn);
            // SAFETY: group g < k.div_ceil(8) of the panel (contract).
            let w = unsafe { decode_group8::<B5>(args.b, g, tables) };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: row r < m, bytes 8g .. 8g + kn ≤ k; dotprod (contract).
                unsafe {
                    let a = load_a8::<FLIP>(rows[r].add(8 * g), kn);
                    for (v, (wlo, whi)) in w.iter().enumerate() {
                        sdot_lane!(acc_r[v], *wlo, a, 0);
                        sdot_lane!(acc_r[v], *whi, a, 1);
                    }
                }
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
/// `args` satisfies the [`CodebookArgs`] contract with `m ≤ 8`, `n ≤ 8`, an `nr = 8`
/// panel of `bits = 4` (5 with `B5`) codes; the CPU has dotprod (dispatch registers the
/// kernel only then).
unsafe fn entry<const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ R.
    unsafe {
        match args.m {
            1 => tile::<1, FLIP, B5>(args),
            2 => tile::<2, FLIP, B5>(args),
            3 | 4 => tile::<4, FLIP, B5>(args),
            _ => tile::<MR, FLIP, B5>(args),
        }
    }
}

/// `qx8_codebook4_gemm_8x8c8__dotprod`: 4-bit codes, any i8 table, `tbl` + `sdot`.
pub const QX8_CODEBOOK4_GEMM_8X8C8__DOTPROD: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_8x8c8__dotprod",
    family: CodebookFamily::Lut,
    isa: Isa::Dotprod,
    bits: 4,
    mr: MR,
    format: CodebookFormat { nr: NR, bits: 4 },
    a_offset: [-128, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [entry::<true, false>, entry::<false, false>],
};

/// `qx8_codebook5_gemm_8x8c8__dotprod`: 5-bit codes (bit plane + two-register `tbl`),
/// any i8 table.
pub const QX8_CODEBOOK5_GEMM_8X8C8__DOTPROD: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_8x8c8__dotprod",
    family: CodebookFamily::Lut,
    isa: Isa::Dotprod,
    bits: 5,
    mr: MR,
    format: CodebookFormat { nr: NR, bits: 5 },
    a_offset: [-128, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [entry::<true, true>, entry::<false, true>],
};

/// dotprod codebook kernels, least preferred first.
pub const CODEBOOK_KERNELS: &[CodebookUkernel] =
    &[QX8_CODEBOOK4_GEMM_8X8C8__DOTPROD, QX8_CODEBOOK5_GEMM_8X8C8__DOTPROD];
