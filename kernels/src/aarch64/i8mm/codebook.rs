//! Table-lookup codebook tiles with `smmla` / `usmmla`: the NEON `tbl` decode
//! ([`decode_group8`], shared with the NEON and dotprod kernels), one `zip` per column
//! pair into the 2×8 operand, then 2×2-block matrix multiplies.
//!
//! Weights: the [`CodebookFormat`] (`nr = 8`) as the other ARM lookup kernels read it, so
//! the packed codes are the same bytes at every ARM tier. 16 bytes of a group decode to
//! `lo` = columns `j < 4` × K `t < 4` at byte `4j + t` and `hi` = the same columns × K
//! `4 + t`. `zip1 .4s (lo, hi)` is `[c0 K0–3, c0 K4–7, c1 K0–3, c1 K4–7]`: exactly the
//! 2 columns × 8 K right operand of `smmla`; `zip2` gives columns 2–3. So a group costs
//! the dotprod kernel's 10 decode instructions plus 4 `zip`s for 16 `smmla` (8 rows × 8
//! columns × 8 K). (A layout with one column pair per nibble half of a 16-byte load would
//! save the 4 `zip`s, but it is a second packed format for the same codes; measured by
//! `benches/arm-mca.sh`, the loop is bound by the vector pipes either way.)
//!
//! Activations: the left operand is two rows × 8 K, the block layout of
//! [`pack_a_8x8`] (a 16-byte load of it is one row pair). In the K loop it is formed
//! from the raw rows (`ldr d` + `ld1 {.d}[1]`: the codebook driver does not pack A, and
//! an in-kernel copy per column tile would cost more than the two loads); the K tail
//! (K mod 8) is packed by [`pack_a_8x8`] into one zero-padded block. Neither operand is
//! flipped: i8 rows multiply with `smmla`, u8 rows with `usmmla` (unsigned × signed),
//! `a_offset` 0 for both.
//!
//! Exactness: a product is at most `255·128 < 2^15` in magnitude (`(−128)·(−128) = 2^14`
//! for i8 × i8), eight of them less than `2^18`, added to the i32 lane by the
//! instruction itself (no intermediate i16 anywhere); the accumulation wraps modulo 2^32
//! as the [`CodebookArgs`] contract asks. So the kernel is exact for every i8 table
//! (`max_abs_table: None`). The driver's K chunk (`src/codebook/driver.rs::k_chunk`)
//! assumes raw activations `a + a_offset` within ±255: here `a` itself (u8 ≤ 255, i8
//! ≥ −128), so a chunk's true sum fits in i32 and its wrapped value is exact.
//!
//! `smmla`/`usmmla` are unstable as intrinsics on Rust 1.95: a one-instruction `asm!`
//! (macro `mmla!`, expanded inside the `neon,i8mm` tile function) that the compiler
//! allocates registers for and schedules.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::aarch64::neon::codebook::{decode_group8, tables};
use crate::aarch64::{PACK_BLOCK_BYTES, PACK_KB, pack_a_8x8};
use crate::generic::codebook::store_tile;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// Columns per tile.
const NR: usize = 8;
/// Rows per tile.
const MR: usize = 8;

/// `$acc += $a · $bᵀ` on 2×8 blocks (`usmmla` when `$u`: `$a` unsigned, else `smmla`):
/// lanes `[r0·c0, r0·c1, r1·c0, r1·c1]`. A macro, not a function: the `asm!` lands in
/// the caller (a `neon,i8mm` function), so it is never an out-of-line call. Used inside
/// an `unsafe` block of such a function (register-only: no memory, no flags).
macro_rules! mmla {
    ($u:expr, $acc:expr, $a:expr, $b:expr) => {
        if $u { mmla!(@ "usmmla", $acc, $a, $b) } else { mmla!(@ "smmla", $acc, $a, $b) }
    };
    (@ $op:literal, $acc:expr, $a:expr, $b:expr) => {
        asm!(
            concat!($op, " {acc:v}.4s, {a:v}.16b, {b:v}.16b"),
            acc = inout(vreg) $acc,
            a = in(vreg) $a,
            b = in(vreg) $b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
}

/// The `R × 8` tile (`R` = 2, 4 or 8); rows at and past `m` repeat row `m − 1` in the K
/// loop and are zero in the tail block (computed, never stored).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (32 or 40 bytes each), the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `1 ≤ m ≤ R`, `n ≤ 8`, an `nr = 8`
/// panel of `bits = 4` (5 with `B5`) codes; the CPU has i8mm.
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile<const R: usize, const U: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY: table bytes (contract).
    let tables = unsafe { tables::<B5>(args) };
    // acc[p][q]: rows 2p, 2p + 1 × columns 2q, 2q + 1 (only p < R / 2 is used).
    let mut acc = [[vdupq_n_s32(0); NR / 2]; MR / 2];
    // SAFETY: rows below m lie in A (contract); the others repeat row m − 1.
    let rows: [*const u8; MR] = core::array::from_fn(|r| unsafe { args.a.add(r.min(args.m - 1) * args.lda) });
    // Group `g`, the row pair `p`'s operand given by `$pair(p)`. A macro, so the loop
    // body and the tail are both inline.
    macro_rules! group {
        ($g:expr, $pair:expr) => {{
            // SAFETY: group g < k.div_ceil(8) of the panel (contract).
            let [(l0, h0), (l1, h1)] = unsafe { decode_group8::<B5>(args.b, $g, tables) };
            let zip = |lo: int8x16_t, hi: int8x16_t| {
                let (lo, hi) = (vreinterpretq_s32_s8(lo), vreinterpretq_s32_s8(hi));
                [vreinterpretq_s8_s32(vzip1q_s32(lo, hi)), vreinterpretq_s8_s32(vzip2q_s32(lo, hi))]
            };
            let [b0, b1] = zip(l0, h0);
            let [b2, b3] = zip(l1, h1);
            let b = [b0, b1, b2, b3];
            for (p, acc_p) in acc.iter_mut().enumerate().take(R / 2) {
                let a: uint8x16_t = $pair(p);
                for (q, bq) in b.iter().enumerate() {
                    // SAFETY: i8mm (contract); register-only.
                    unsafe { mmla!(U, acc_p[q], a, *bq) };
                }
            }
        }};
    }
    let full = args.k / PACK_KB;
    for g in 0..full {
        // SAFETY: bytes 8g .. 8g + 8 ≤ k of rows 2p, 2p + 1 (real or repeated).
        group!(g, |p: usize| unsafe {
            vcombine_u8(vld1_u8(rows[2 * p].add(8 * g)), vld1_u8(rows[2 * p + 1].add(8 * g)))
        });
    }
    let rem = args.k % PACK_KB;
    if rem > 0 {
        let mut blk = [0u8; PACK_BLOCK_BYTES];
        // SAFETY: m rows of bytes 8·full .. k (contract); the block holds one K group.
        unsafe { pack_a_8x8::<false>(args.a.add(8 * full), args.lda, args.m, rem, blk.as_mut_ptr()) };
        // SAFETY: row pair p of the block: 16 bytes at 16p < 64.
        group!(full, |p: usize| unsafe { vld1q_u8(blk.as_ptr().add(16 * p)) });
    }
    let mut out = [[0i32; NR]; R];
    for (p, acc_p) in acc.iter().enumerate().take(R / 2) {
        for (q, x) in acc_p.iter().enumerate() {
            let mut v = [0i32; 4];
            // SAFETY: 4 i32.
            unsafe { vst1q_s32(v.as_mut_ptr(), *x) };
            out[2 * p][2 * q..2 * q + 2].copy_from_slice(&v[..2]);
            out[2 * p + 1][2 * q..2 * q + 2].copy_from_slice(&v[2..]);
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<R, NR>(args, &out) }
}

/// Dispatches on the tile's row count (`U`: u8 activations, `usmmla`).
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m ≤ 8`, `n ≤ 8`, an `nr = 8`
/// panel of `bits = 4` (5 with `B5`) codes; the CPU has i8mm (dispatch registers the
/// kernel only then).
unsafe fn entry<const U: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ R.
    unsafe {
        match args.m {
            ..=2 => tile::<2, U, B5>(args),
            3 | 4 => tile::<4, U, B5>(args),
            _ => tile::<MR, U, B5>(args),
        }
    }
}

/// The descriptor of the `bits`-bit kernel (the two differ only in name, width and
/// entry points).
const fn kernel(name: &'static str, bits: u32, run: [crate::types::CodebookUkernelFn; 2]) -> CodebookUkernel {
    CodebookUkernel {
        name,
        family: CodebookFamily::Lut,
        isa: Isa::I8mm,
        bits,
        mr: MR,
        format: CodebookFormat { nr: NR, bits },
        a_offset: [0, 0],
        max_abs_table: None,
        table_i16: false,
        a_sign_split: false,
        gemv: None,
        extra_features: &[],
        run,
    }
}

/// `qx8_codebook4_gemm_8x8c8__i8mm`: 4-bit codes, any i8 table, `tbl` + `usmmla` (u8
/// activations) / `smmla` (i8).
pub const QX8_CODEBOOK4_GEMM_8X8C8__I8MM: CodebookUkernel =
    kernel("qx8_codebook4_gemm_8x8c8__i8mm", 4, [entry::<true, false>, entry::<false, false>]);

/// `qx8_codebook5_gemm_8x8c8__i8mm`: 5-bit codes (bit plane + two-register `tbl`), any
/// i8 table.
pub const QX8_CODEBOOK5_GEMM_8X8C8__I8MM: CodebookUkernel =
    kernel("qx8_codebook5_gemm_8x8c8__i8mm", 5, [entry::<true, true>, entry::<false, true>]);

/// i8mm codebook kernels, least preferred first.
pub const CODEBOOK_KERNELS: &[CodebookUkernel] = &[QX8_CODEBOOK4_GEMM_8X8C8__I8MM, QX8_CODEBOOK5_GEMM_8X8C8__I8MM];
