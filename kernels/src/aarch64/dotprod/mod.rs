//! AArch64 dot product (`sdot`) kernels.
//!
//! [`QX8_GEMM_8X8C4__DOTPROD`]: 8×8 tiles, weights packed `[k/4][8][4]`
//! (`pack_b_kgroups`, `kr` 4) and stored as i8 (u8 weights as `b − 128`, `b_offset`
//! 128); activations multiply as i8 (u8 ones XOR 0x80, i.e. `a − 128`, `a_offset` −128),
//! so every combination runs `sdot` and the driver moves the zero points. The product of
//! two i8 is at most 2^14 and four of them 2^16: every `sdot` is exact, and the i32
//! accumulation wraps modulo 2^32 as the [`GemmArgs`] contract asks.
//!
//! The K loop is one `asm!` block per 8 K: 8 rows' 8 activation bytes (`sdot` by element
//! takes each row's K group of 4 as a lane), 64 weight bytes (two groups × 8 columns),
//! 32 `sdot` into 16 accumulators `v16..v31` (row `r`: `v16+2r` columns 0–3, `v17+2r`
//! columns 4–7). On Neoverse-N1 (2 `sdot` per cycle) that is 16 cycles of `sdot` against
//! 4 pair loads: the main loop (16 K per iteration, packed A) runs at 100 % of the `sdot`
//! peak by llvm-mca (`benches/arm-mca.sh`). Tiles of at most 2 or 4 rows (GEMV, the last
//! row tile) run a loop over only those rows.
//!
//! With the driver's packed A ([`pack_a_8x8`], flipped there), the loop loads two rows per
//! 16-byte load; the raw-row entry loads 8 bytes per row and, for u8 activations, flips
//! them in the loop (8 `eor` per 32 `sdot`). The K tail (K mod 8) goes through a packed
//! copy of the last partial block, so nothing past a row's `k` bytes is read.
//!
//! The indirect entry ([`IgemmArgs`], convolution rows read in place through the
//! indirection buffer) runs the raw-row loop tap by tap on the tap's row pointers, with
//! the same tail, so its inner loop is the raw entry's (flip included for u8).
//!
//! Epilogue: the accumulators go to a stack tile and through the shared NEON output stage
//! ([`store_tile_neon`](super::store_tile_neon)), bit-exact with the reference for every stage.

// `sdot_lane!` (defined in `codebook`) is also used by `pwlq`.
#[macro_use]
pub mod codebook;
pub mod pwlq;

use core::arch::aarch64::*;
use core::arch::asm;

use super::{PACK_BLOCK_BYTES, PACK_KB, pack_a_8x8, row_pointers, tap_rows};
use crate::types::{GemmArgs, GemmUkernel, IgemmArgs, Indirect, Isa, PackFormat, PackedA};

/// Rows per tile.
const MR: usize = 8;
/// Columns per tile.
const NR: usize = 8;
/// K elements per weight group.
const KR: usize = 4;
/// Bytes of the panel per 8 K (two groups of 8 columns × 4).
const B_BLOCK_BYTES: usize = 2 * NR * KR;

/// The 16 accumulators: row `r` is `[2r]` (columns 0–3) and `[2r + 1]` (columns 4–7).
type Acc = [int32x4_t; 16];

/// `iters` blocks of 8 K from packed A ([`pack_a_8x8`]) and the panel.
///
/// # Safety
/// The CPU has dotprod; `a` is readable for `64·iters` bytes, `b` for `64·iters`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn loop_packed(c: &mut Acc, a: *const u8, b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: the loop reads 64 bytes of `a` and of `b` per iteration (contract).
    unsafe {
        asm!(
            "2:",
            "ldp q0, q1, [{a}]",
            "ldp q8, q9, [{b}]",
            "ldp q2, q3, [{a}, #32]",
            "add {a}, {a}, #64",
            "ldp q10, q11, [{b}, #32]",
            "add {b}, {b}, #64",
            "sdot v16.4s, v8.16b, v0.4b[0]",
            "sdot v17.4s, v9.16b, v0.4b[0]",
            "sdot v18.4s, v8.16b, v0.4b[2]",
            "sdot v19.4s, v9.16b, v0.4b[2]",
            "sdot v20.4s, v8.16b, v1.4b[0]",
            "sdot v21.4s, v9.16b, v1.4b[0]",
            "sdot v22.4s, v8.16b, v1.4b[2]",
            "sdot v23.4s, v9.16b, v1.4b[2]",
            "sdot v24.4s, v8.16b, v2.4b[0]",
            "sdot v25.4s, v9.16b, v2.4b[0]",
            "sdot v26.4s, v8.16b, v2.4b[2]",
            "sdot v27.4s, v9.16b, v2.4b[2]",
            "sdot v28.4s, v8.16b, v3.4b[0]",
            "sdot v29.4s, v9.16b, v3.4b[0]",
            "sdot v30.4s, v8.16b, v3.4b[2]",
            "sdot v31.4s, v9.16b, v3.4b[2]",
            "sdot v16.4s, v10.16b, v0.4b[1]",
            "sdot v17.4s, v11.16b, v0.4b[1]",
            "sdot v18.4s, v10.16b, v0.4b[3]",
            "sdot v19.4s, v11.16b, v0.4b[3]",
            "sdot v20.4s, v10.16b, v1.4b[1]",
            "sdot v21.4s, v11.16b, v1.4b[1]",
            "sdot v22.4s, v10.16b, v1.4b[3]",
            "sdot v23.4s, v11.16b, v1.4b[3]",
            "sdot v24.4s, v10.16b, v2.4b[1]",
            "sdot v25.4s, v11.16b, v2.4b[1]",
            "sdot v26.4s, v10.16b, v2.4b[3]",
            "sdot v27.4s, v11.16b, v2.4b[3]",
            "sdot v28.4s, v10.16b, v3.4b[1]",
            "sdot v29.4s, v11.16b, v3.4b[1]",
            "sdot v30.4s, v10.16b, v3.4b[3]",
            "sdot v31.4s, v11.16b, v3.4b[3]",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) iters => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            inout("v16") c[0], inout("v17") c[1], inout("v18") c[2], inout("v19") c[3],
            inout("v20") c[4], inout("v21") c[5], inout("v22") c[6], inout("v23") c[7],
            inout("v24") c[8], inout("v25") c[9], inout("v26") c[10], inout("v27") c[11],
            inout("v28") c[12], inout("v29") c[13], inout("v30") c[14], inout("v31") c[15],
            options(nostack, readonly),
        );
    }
}

/// `iters` blocks of 16 K (two packed A blocks, four panel groups) per iteration: the
/// main loop. Unrolled by two so that each operand's pointer moves once per 64 `sdot` and
/// the next block's loads interleave with the `sdot` of this one (llvm-mca 16, Cortex-A57
/// class model it uses for `-mcpu=neoverse-n1`: 16 cycles per 8 K, the `sdot` bound,
/// against 19 for the one-block loop).
///
/// # Safety
/// The CPU has dotprod; `a` is readable for `128·iters` bytes, `b` for `128·iters`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn loop16_packed(c: &mut Acc, a: *const u8, b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: the loop reads 128 bytes of `a` and of `b` per iteration (contract).
    unsafe {
        asm!(
            "// qkern-mca-begin qx8_gemm_8x8c4__dotprod packed",
            "2:",
            "ldp q0, q1, [{a}]",
            "ldp q8, q9, [{b}]",
            "ldp q2, q3, [{a}, #32]",
            "ldp q10, q11, [{b}, #32]",
            "sdot v16.4s, v8.16b, v0.4b[0]",
            "sdot v17.4s, v9.16b, v0.4b[0]",
            "sdot v18.4s, v8.16b, v0.4b[2]",
            "sdot v19.4s, v9.16b, v0.4b[2]",
            "sdot v20.4s, v8.16b, v1.4b[0]",
            "sdot v21.4s, v9.16b, v1.4b[0]",
            "sdot v22.4s, v8.16b, v1.4b[2]",
            "sdot v23.4s, v9.16b, v1.4b[2]",
            "ldp q4, q5, [{a}, #64]",
            "sdot v24.4s, v8.16b, v2.4b[0]",
            "sdot v25.4s, v9.16b, v2.4b[0]",
            "sdot v26.4s, v8.16b, v2.4b[2]",
            "sdot v27.4s, v9.16b, v2.4b[2]",
            "sdot v28.4s, v8.16b, v3.4b[0]",
            "sdot v29.4s, v9.16b, v3.4b[0]",
            "sdot v30.4s, v8.16b, v3.4b[2]",
            "sdot v31.4s, v9.16b, v3.4b[2]",
            "ldp q12, q13, [{b}, #64]",
            "sdot v16.4s, v10.16b, v0.4b[1]",
            "sdot v17.4s, v11.16b, v0.4b[1]",
            "sdot v18.4s, v10.16b, v0.4b[3]",
            "sdot v19.4s, v11.16b, v0.4b[3]",
            "sdot v20.4s, v10.16b, v1.4b[1]",
            "sdot v21.4s, v11.16b, v1.4b[1]",
            "sdot v22.4s, v10.16b, v1.4b[3]",
            "sdot v23.4s, v11.16b, v1.4b[3]",
            "ldp q6, q7, [{a}, #96]",
            "sdot v24.4s, v10.16b, v2.4b[1]",
            "sdot v25.4s, v11.16b, v2.4b[1]",
            "sdot v26.4s, v10.16b, v2.4b[3]",
            "sdot v27.4s, v11.16b, v2.4b[3]",
            "sdot v28.4s, v10.16b, v3.4b[1]",
            "sdot v29.4s, v11.16b, v3.4b[1]",
            "sdot v30.4s, v10.16b, v3.4b[3]",
            "sdot v31.4s, v11.16b, v3.4b[3]",
            "ldp q14, q15, [{b}, #96]",
            "sdot v16.4s, v12.16b, v4.4b[0]",
            "sdot v17.4s, v13.16b, v4.4b[0]",
            "sdot v18.4s, v12.16b, v4.4b[2]",
            "sdot v19.4s, v13.16b, v4.4b[2]",
            "sdot v20.4s, v12.16b, v5.4b[0]",
            "sdot v21.4s, v13.16b, v5.4b[0]",
            "sdot v22.4s, v12.16b, v5.4b[2]",
            "sdot v23.4s, v13.16b, v5.4b[2]",
            "sdot v24.4s, v12.16b, v6.4b[0]",
            "sdot v25.4s, v13.16b, v6.4b[0]",
            "sdot v26.4s, v12.16b, v6.4b[2]",
            "sdot v27.4s, v13.16b, v6.4b[2]",
            "sdot v28.4s, v12.16b, v7.4b[0]",
            "sdot v29.4s, v13.16b, v7.4b[0]",
            "sdot v30.4s, v12.16b, v7.4b[2]",
            "sdot v31.4s, v13.16b, v7.4b[2]",
            "add {a}, {a}, #128",
            "sdot v16.4s, v14.16b, v4.4b[1]",
            "sdot v17.4s, v15.16b, v4.4b[1]",
            "sdot v18.4s, v14.16b, v4.4b[3]",
            "sdot v19.4s, v15.16b, v4.4b[3]",
            "sdot v20.4s, v14.16b, v5.4b[1]",
            "sdot v21.4s, v15.16b, v5.4b[1]",
            "sdot v22.4s, v14.16b, v5.4b[3]",
            "sdot v23.4s, v15.16b, v5.4b[3]",
            "sdot v24.4s, v14.16b, v6.4b[1]",
            "sdot v25.4s, v15.16b, v6.4b[1]",
            "sdot v26.4s, v14.16b, v6.4b[3]",
            "sdot v27.4s, v15.16b, v6.4b[3]",
            "sdot v28.4s, v14.16b, v7.4b[1]",
            "sdot v29.4s, v15.16b, v7.4b[1]",
            "sdot v30.4s, v14.16b, v7.4b[3]",
            "sdot v31.4s, v15.16b, v7.4b[3]",
            "add {b}, {b}, #128",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "// qkern-mca-end",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) iters => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            inout("v16") c[0], inout("v17") c[1], inout("v18") c[2], inout("v19") c[3],
            inout("v20") c[4], inout("v21") c[5], inout("v22") c[6], inout("v23") c[7],
            inout("v24") c[8], inout("v25") c[9], inout("v26") c[10], inout("v27") c[11],
            inout("v28") c[12], inout("v29") c[13], inout("v30") c[14], inout("v31") c[15],
            options(nostack, readonly),
        );
    }
}

/// An 8 K loop over packed A and the panel whose body (given) loads into `v0..v1`,
/// `v8..v11` and accumulates into `v16..v31`.
macro_rules! loop_rows_asm {
    ($c:ident, $a:ident, $b:ident, $iters:ident, $mark:literal, [$($body:literal),* $(,)?]) => {
        asm!(
            $mark,
            "2:",
            $($body,)*
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "// qkern-mca-end",
            a = inout(reg) $a => _,
            b = inout(reg) $b => _,
            n = inout(reg) $iters => _,
            out("v0") _, out("v1") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            inout("v16") $c[0], inout("v17") $c[1], inout("v18") $c[2], inout("v19") $c[3],
            inout("v20") $c[4], inout("v21") $c[5], inout("v22") $c[6], inout("v23") $c[7],
            inout("v24") $c[8], inout("v25") $c[9], inout("v26") $c[10], inout("v27") $c[11],
            inout("v28") $c[12], inout("v29") $c[13], inout("v30") $c[14], inout("v31") $c[15],
            options(nostack, readonly),
        )
    };
}

/// `iters` blocks of 8 K for a tile of at most `R` (2 or 4) rows, from packed A (only its
/// first `R` rows are loaded) and the panel: `R/8` of the 8-row loop's work, for GEMV
/// (M = 1) and short last row tiles.
///
/// # Safety
/// The CPU has dotprod; `a` is readable for `64·iters` bytes, `b` for `64·iters`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn loop_packed_rows<const R: usize>(c: &mut Acc, a: *const u8, b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: the loop reads at most 64 bytes of `a` and 64 of `b` per iteration (contract).
    unsafe {
        if R <= 2 {
            loop_rows_asm!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c4__dotprod packed-m2", [
                "ldr q0, [{a}]",
                "add {a}, {a}, #64",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "sdot v16.4s, v8.16b, v0.4b[0]",
                "sdot v17.4s, v9.16b, v0.4b[0]",
                "sdot v18.4s, v8.16b, v0.4b[2]",
                "sdot v19.4s, v9.16b, v0.4b[2]",
                "sdot v16.4s, v10.16b, v0.4b[1]",
                "sdot v17.4s, v11.16b, v0.4b[1]",
                "sdot v18.4s, v10.16b, v0.4b[3]",
                "sdot v19.4s, v11.16b, v0.4b[3]",
            ]);
        } else {
            loop_rows_asm!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c4__dotprod packed-m4", [
                "ldp q0, q1, [{a}]",
                "add {a}, {a}, #64",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "sdot v16.4s, v8.16b, v0.4b[0]",
                "sdot v17.4s, v9.16b, v0.4b[0]",
                "sdot v18.4s, v8.16b, v0.4b[2]",
                "sdot v19.4s, v9.16b, v0.4b[2]",
                "sdot v20.4s, v8.16b, v1.4b[0]",
                "sdot v21.4s, v9.16b, v1.4b[0]",
                "sdot v22.4s, v8.16b, v1.4b[2]",
                "sdot v23.4s, v9.16b, v1.4b[2]",
                "sdot v16.4s, v10.16b, v0.4b[1]",
                "sdot v17.4s, v11.16b, v0.4b[1]",
                "sdot v18.4s, v10.16b, v0.4b[3]",
                "sdot v19.4s, v11.16b, v0.4b[3]",
                "sdot v20.4s, v10.16b, v1.4b[1]",
                "sdot v21.4s, v11.16b, v1.4b[1]",
                "sdot v22.4s, v10.16b, v1.4b[3]",
                "sdot v23.4s, v11.16b, v1.4b[3]",
            ]);
        }
    }
}

/// One K group of 4 from a packed A block (its lanes 0 and 2) and the panel.
///
/// # Safety
/// The CPU has dotprod; `a` is readable for 64 bytes, `b` for 32.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn group_packed(c: &mut Acc, a: *const u8, b: *const u8) {
    // SAFETY: reads 64 bytes of `a`, 32 of `b` (contract).
    unsafe {
        asm!(
            "ldp q0, q1, [{a}]",
            "ldp q8, q9, [{b}]",
            "ldp q2, q3, [{a}, #32]",
            "sdot v16.4s, v8.16b, v0.4b[0]",
            "sdot v17.4s, v9.16b, v0.4b[0]",
            "sdot v18.4s, v8.16b, v0.4b[2]",
            "sdot v19.4s, v9.16b, v0.4b[2]",
            "sdot v20.4s, v8.16b, v1.4b[0]",
            "sdot v21.4s, v9.16b, v1.4b[0]",
            "sdot v22.4s, v8.16b, v1.4b[2]",
            "sdot v23.4s, v9.16b, v1.4b[2]",
            "sdot v24.4s, v8.16b, v2.4b[0]",
            "sdot v25.4s, v9.16b, v2.4b[0]",
            "sdot v26.4s, v8.16b, v2.4b[2]",
            "sdot v27.4s, v9.16b, v2.4b[2]",
            "sdot v28.4s, v8.16b, v3.4b[0]",
            "sdot v29.4s, v9.16b, v3.4b[0]",
            "sdot v30.4s, v8.16b, v3.4b[2]",
            "sdot v31.4s, v9.16b, v3.4b[2]",
            a = in(reg) a,
            b = in(reg) b,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v8") _, out("v9") _,
            inout("v16") c[0], inout("v17") c[1], inout("v18") c[2], inout("v19") c[3],
            inout("v20") c[4], inout("v21") c[5], inout("v22") c[6], inout("v23") c[7],
            inout("v24") c[8], inout("v25") c[9], inout("v26") c[10], inout("v27") c[11],
            inout("v28") c[12], inout("v29") c[13], inout("v30") c[14], inout("v31") c[15],
            options(nostack, readonly),
        );
    }
}

/// `iters` blocks of 8 K from 8 raw rows (advanced by `8·iters`) and the panel; with
/// `FLIP` the activations are XORed with 0x80 first (u8 → i8 − 128).
///
/// # Safety
/// The CPU has dotprod; every row is readable for `8·iters` bytes, `b` for `64·iters`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn loop_raw<const FLIP: bool>(c: &mut Acc, rows: &mut [*const u8; MR], b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7] = *rows;
    // SAFETY: reads 8 bytes of every row and 64 of `b` per iteration (contract).
    unsafe {
        if FLIP {
            asm!(
                "// qkern-mca-begin qx8_gemm_8x8c4__dotprod raw-u8",
                "2:",
                "ldr d0, [{a0}], #8",
                "ldr d1, [{a1}], #8",
                "ldr d2, [{a2}], #8",
                "ldr d3, [{a3}], #8",
                "ldr d4, [{a4}], #8",
                "ldr d5, [{a5}], #8",
                "ldr d6, [{a6}], #8",
                "ldr d7, [{a7}], #8",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "eor v0.8b, v0.8b, v12.8b",
                "eor v1.8b, v1.8b, v12.8b",
                "eor v2.8b, v2.8b, v12.8b",
                "eor v3.8b, v3.8b, v12.8b",
                "eor v4.8b, v4.8b, v12.8b",
                "eor v5.8b, v5.8b, v12.8b",
                "eor v6.8b, v6.8b, v12.8b",
                "eor v7.8b, v7.8b, v12.8b",
                "sdot v16.4s, v8.16b, v0.4b[0]",
                "sdot v17.4s, v9.16b, v0.4b[0]",
                "sdot v18.4s, v8.16b, v1.4b[0]",
                "sdot v19.4s, v9.16b, v1.4b[0]",
                "sdot v20.4s, v8.16b, v2.4b[0]",
                "sdot v21.4s, v9.16b, v2.4b[0]",
                "sdot v22.4s, v8.16b, v3.4b[0]",
                "sdot v23.4s, v9.16b, v3.4b[0]",
                "sdot v24.4s, v8.16b, v4.4b[0]",
                "sdot v25.4s, v9.16b, v4.4b[0]",
                "sdot v26.4s, v8.16b, v5.4b[0]",
                "sdot v27.4s, v9.16b, v5.4b[0]",
                "sdot v28.4s, v8.16b, v6.4b[0]",
                "sdot v29.4s, v9.16b, v6.4b[0]",
                "sdot v30.4s, v8.16b, v7.4b[0]",
                "sdot v31.4s, v9.16b, v7.4b[0]",
                "sdot v16.4s, v10.16b, v0.4b[1]",
                "sdot v17.4s, v11.16b, v0.4b[1]",
                "sdot v18.4s, v10.16b, v1.4b[1]",
                "sdot v19.4s, v11.16b, v1.4b[1]",
                "sdot v20.4s, v10.16b, v2.4b[1]",
                "sdot v21.4s, v11.16b, v2.4b[1]",
                "sdot v22.4s, v10.16b, v3.4b[1]",
                "sdot v23.4s, v11.16b, v3.4b[1]",
                "sdot v24.4s, v10.16b, v4.4b[1]",
                "sdot v25.4s, v11.16b, v4.4b[1]",
                "sdot v26.4s, v10.16b, v5.4b[1]",
                "sdot v27.4s, v11.16b, v5.4b[1]",
                "sdot v28.4s, v10.16b, v6.4b[1]",
                "sdot v29.4s, v11.16b, v6.4b[1]",
                "sdot v30.4s, v10.16b, v7.4b[1]",
                "sdot v31.4s, v11.16b, v7.4b[1]",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                "// qkern-mca-end",
                a0 = inout(reg) a0, a1 = inout(reg) a1, a2 = inout(reg) a2, a3 = inout(reg) a3,
                a4 = inout(reg) a4, a5 = inout(reg) a5, a6 = inout(reg) a6, a7 = inout(reg) a7,
                b = inout(reg) b => _,
                n = inout(reg) iters => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                in("v12") vdupq_n_u8(0x80),
                inout("v16") c[0], inout("v17") c[1], inout("v18") c[2], inout("v19") c[3],
                inout("v20") c[4], inout("v21") c[5], inout("v22") c[6], inout("v23") c[7],
                inout("v24") c[8], inout("v25") c[9], inout("v26") c[10], inout("v27") c[11],
                inout("v28") c[12], inout("v29") c[13], inout("v30") c[14], inout("v31") c[15],
                options(nostack, readonly),
            );
        } else {
            asm!(
                "// qkern-mca-begin qx8_gemm_8x8c4__dotprod raw-i8",
                "2:",
                "ldr d0, [{a0}], #8",
                "ldr d1, [{a1}], #8",
                "ldr d2, [{a2}], #8",
                "ldr d3, [{a3}], #8",
                "ldr d4, [{a4}], #8",
                "ldr d5, [{a5}], #8",
                "ldr d6, [{a6}], #8",
                "ldr d7, [{a7}], #8",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "sdot v16.4s, v8.16b, v0.4b[0]",
                "sdot v17.4s, v9.16b, v0.4b[0]",
                "sdot v18.4s, v8.16b, v1.4b[0]",
                "sdot v19.4s, v9.16b, v1.4b[0]",
                "sdot v20.4s, v8.16b, v2.4b[0]",
                "sdot v21.4s, v9.16b, v2.4b[0]",
                "sdot v22.4s, v8.16b, v3.4b[0]",
                "sdot v23.4s, v9.16b, v3.4b[0]",
                "sdot v24.4s, v8.16b, v4.4b[0]",
                "sdot v25.4s, v9.16b, v4.4b[0]",
                "sdot v26.4s, v8.16b, v5.4b[0]",
                "sdot v27.4s, v9.16b, v5.4b[0]",
                "sdot v28.4s, v8.16b, v6.4b[0]",
                "sdot v29.4s, v9.16b, v6.4b[0]",
                "sdot v30.4s, v8.16b, v7.4b[0]",
                "sdot v31.4s, v9.16b, v7.4b[0]",
                "sdot v16.4s, v10.16b, v0.4b[1]",
                "sdot v17.4s, v11.16b, v0.4b[1]",
                "sdot v18.4s, v10.16b, v1.4b[1]",
                "sdot v19.4s, v11.16b, v1.4b[1]",
                "sdot v20.4s, v10.16b, v2.4b[1]",
                "sdot v21.4s, v11.16b, v2.4b[1]",
                "sdot v22.4s, v10.16b, v3.4b[1]",
                "sdot v23.4s, v11.16b, v3.4b[1]",
                "sdot v24.4s, v10.16b, v4.4b[1]",
                "sdot v25.4s, v11.16b, v4.4b[1]",
                "sdot v26.4s, v10.16b, v5.4b[1]",
                "sdot v27.4s, v11.16b, v5.4b[1]",
                "sdot v28.4s, v10.16b, v6.4b[1]",
                "sdot v29.4s, v11.16b, v6.4b[1]",
                "sdot v30.4s, v10.16b, v7.4b[1]",
                "sdot v31.4s, v11.16b, v7.4b[1]",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                "// qkern-mca-end",
                a0 = inout(reg) a0, a1 = inout(reg) a1, a2 = inout(reg) a2, a3 = inout(reg) a3,
                a4 = inout(reg) a4, a5 = inout(reg) a5, a6 = inout(reg) a6, a7 = inout(reg) a7,
                b = inout(reg) b => _,
                n = inout(reg) iters => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                inout("v16") c[0], inout("v17") c[1], inout("v18") c[2], inout("v19") c[3],
                inout("v20") c[4], inout("v21") c[5], inout("v22") c[6], inout("v23") c[7],
                inout("v24") c[8], inout("v25") c[9], inout("v26") c[10], inout("v27") c[11],
                inout("v28") c[12], inout("v29") c[13], inout("v30") c[14], inout("v31") c[15],
                options(nostack, readonly),
            );
        }
    }
    *rows = [a0, a1, a2, a3, a4, a5, a6, a7];
}

/// The last `rem` (1..=7) K of a tile from one packed block: a whole block of 8 when
/// the panel has two groups left (`rem > 4`), one group of 4 otherwise.
///
/// # Safety
/// The CPU has dotprod; `a` is readable for 64 bytes, `b` for `rem.div_ceil(4)·32`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn tail_packed(c: &mut Acc, a: *const u8, b: *const u8, rem: usize) {
    // SAFETY: forwarded.
    unsafe {
        if rem > KR {
            loop_packed(c, a, b, 1)
        } else {
            group_packed(c, a, b)
        }
    }
}

/// The tile's accumulators to the output stage.
///
/// # Safety
/// As [`store_tile_neon`](super::store_tile_neon).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn finish(args: &GemmArgs, c: &Acc) {
    let mut tile = [[0i32; NR]; MR];
    for (r, row) in tile.iter_mut().enumerate() {
        // SAFETY: 8 i32 in the row.
        unsafe {
            vst1q_s32(row.as_mut_ptr(), c[2 * r]);
            vst1q_s32(row.as_mut_ptr().add(4), c[2 * r + 1]);
        }
    }
    // SAFETY: forwarded contract.
    unsafe { super::store_tile_neon::<MR, NR>(args, &tile) }
}

/// Raw-row entry point (`FLIP` for u8 activations).
///
/// Reads `m` rows of `k` bytes of A (stride `lda`), the panel's `k.div_ceil(4)·32`
/// bytes; nothing past them.
///
/// # Safety
/// The CPU has dotprod; `args` satisfies the [`GemmArgs`] contract with `m ≤ 8`, `n ≤ 8`
/// and a `{nr: 8, kr: 4}` panel of i8-stored weights.
#[target_feature(enable = "neon,dotprod")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_8x8c4__dotprod<const FLIP: bool>(args: &GemmArgs) {
    let mut c: Acc = [vdupq_n_s32(0); 16];
    let iters = args.k / PACK_KB;
    let rem = args.k % PACK_KB;
    // SAFETY: m ≥ 1 rows (contract); the loop reads 8·iters ≤ k bytes per row and
    // 64·iters panel bytes; the tail reads a packed copy of the last k − 8·iters bytes.
    unsafe {
        let mut rows = row_pointers::<MR>(args);
        loop_raw::<FLIP>(&mut c, &mut rows, args.b, iters);
        if rem > 0 {
            let mut blk = [0u8; PACK_BLOCK_BYTES];
            pack_a_8x8::<FLIP>(args.a.add(iters * PACK_KB), args.lda, args.m, rem, blk.as_mut_ptr());
            tail_packed(&mut c, blk.as_ptr(), args.b.add(iters * B_BLOCK_BYTES), rem);
        }
        finish(args, &c);
    }
}

/// Packed-A entry point: `args.a` is a tile written by [`pack_a_8x8`] (flipped for u8
/// activations), so one function serves every combination.
///
/// Reads `k.div_ceil(8)·64` bytes of packed A and the panel's `k.div_ceil(4)·32` bytes.
///
/// # Safety
/// As [`qx8_gemm_8x8c4__dotprod`], with `args.a` a packed A tile.
#[target_feature(enable = "neon,dotprod")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_8x8c4__dotprod_packed_a(args: &GemmArgs) {
    let mut c: Acc = [vdupq_n_s32(0); 16];
    let iters = args.k / PACK_KB;
    let rem = args.k % PACK_KB;
    // SAFETY: k.div_ceil(8) packed blocks and k.div_ceil(4) panel groups (contract).
    unsafe {
        // Tiles of at most 2 or 4 rows (GEMV, the last row tile) load and multiply only
        // those rows of the packed tile; its rows past m are zeros.
        match args.m {
            ..=2 => loop_packed_rows::<2>(&mut c, args.a, args.b, iters),
            3..=4 => loop_packed_rows::<4>(&mut c, args.a, args.b, iters),
            _ => {
                loop16_packed(&mut c, args.a, args.b, iters / 2);
                let done = iters / 2 * 2;
                loop_packed(&mut c, args.a.add(done * PACK_BLOCK_BYTES), args.b.add(done * B_BLOCK_BYTES), iters % 2);
            }
        }
        if rem > 0 {
            tail_packed(&mut c, args.a.add(iters * PACK_BLOCK_BYTES), args.b.add(iters * B_BLOCK_BYTES), rem);
        }
        finish(args, &c);
    }
}

/// Indirect entry point ([`IgemmArgs`], `FLIP` for u8 activations): per tap, the 8 tap
/// rows (rows past `m` repeat row `m − 1`) run the raw-row loop ([`loop_raw`], the same
/// instructions as the raw entry) over the tap's whole blocks of 8 K, then a K tail of 4
/// (`kc` is a multiple of 4, not necessarily of 8) runs [`group_packed`] on a packed copy
/// of the tail, as the raw entry's. The panel is read in order, `kc/4` groups per tap.
///
/// Reads the `m·taps` indirection entries; per row `i < m` and tap `t`, the `kc` bytes at
/// [`IgemmArgs::tap_ptr`]`(i, t)`; the panel's `taps·kc/4·32` bytes; the per-column
/// tables and row sums as [`store_tile_neon`](super::store_tile_neon). Writes only the
/// `m × n` output tile.
///
/// # Safety
/// The CPU has dotprod; `args` satisfies the [`IgemmArgs`] contract with `m ≤ 8`,
/// `n ≤ 8`, `kc` a positive multiple of 4 and a `{nr: 8, kr: 4}` panel of i8-stored
/// weights.
#[target_feature(enable = "neon,dotprod")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_igemm_8x8c4__dotprod<const FLIP: bool>(args: &IgemmArgs) {
    let mut c: Acc = [vdupq_n_s32(0); 16];
    let iters = args.kc / PACK_KB;
    let rem = args.kc % PACK_KB;
    let mut bp = args.b;
    for t in 0..args.taps {
        // SAFETY: t < taps; every tap row holds kc bytes (rows past m repeat row m − 1):
        // the loop reads 8·iters ≤ kc of them and the tail the last rem = 4; the panel
        // holds kc/4 groups of 32 bytes for this tap after bp.
        unsafe {
            let mut rows = tap_rows::<MR>(args, t);
            loop_raw::<FLIP>(&mut c, &mut rows, bp, iters);
            bp = bp.add(iters * B_BLOCK_BYTES);
            if rem > 0 {
                // kc is a multiple of 4: the tail is one K group. Each row's 4 bytes go to
                // the start of its 8 in a packed block (lanes 0 and 2 of a row pair, what
                // `group_packed` reads), inline: no packer call that would spill the
                // accumulators once per tap. Rows past m repeat row m − 1 (readable);
                // their sums are never stored.
                debug_assert_eq!(rem, KR);
                let flip = if FLIP { 0x8080_8080u32 } else { 0 };
                let mut blk = [0u8; PACK_BLOCK_BYTES];
                for (r, &p) in rows.iter().enumerate() {
                    let w = p.cast::<u32>().read_unaligned() ^ flip;
                    blk[r * PACK_KB..r * PACK_KB + KR].copy_from_slice(&w.to_le_bytes());
                }
                group_packed(&mut c, blk.as_ptr(), bp);
                bp = bp.add(NR * KR);
            }
        }
    }
    // SAFETY: the output side of `args` is a GemmArgs tile with m ≤ 8, n ≤ 8.
    unsafe { finish(&args.epilogue_args(), &c) }
}

/// The indirect entry for u8 (`FLIP`) or i8 activations, as an
/// [`IgemmUkernelFn`](crate::IgemmUkernelFn).
///
/// # Safety
/// As [`qx8_igemm_8x8c4__dotprod`].
unsafe fn indirect_entry<const FLIP: bool>(args: &IgemmArgs) {
    // SAFETY: forwarded (the registration's ISA guarantees dotprod).
    unsafe { qx8_igemm_8x8c4__dotprod::<FLIP>(args) }
}

/// The raw-row entry for u8 (`FLIP`) or i8 activations, as a [`GemmUkernelFn`](crate::GemmUkernelFn).
///
/// # Safety
/// As [`qx8_gemm_8x8c4__dotprod`].
unsafe fn entry<const FLIP: bool>(args: &GemmArgs) {
    // SAFETY: forwarded (the registration's ISA guarantees dotprod).
    unsafe { qx8_gemm_8x8c4__dotprod::<FLIP>(args) }
}

/// The packed-A entry, as a [`GemmUkernelFn`](crate::GemmUkernelFn).
///
/// # Safety
/// As [`qx8_gemm_8x8c4__dotprod_packed_a`].
unsafe fn entry_packed(args: &GemmArgs) {
    // SAFETY: forwarded.
    unsafe { qx8_gemm_8x8c4__dotprod_packed_a(args) }
}

/// The A packer for u8 (`FLIP`) or i8 activations, as an [`APackFn`](crate::APackFn).
///
/// # Safety
/// As [`APackFn`](crate::APackFn).
unsafe fn pack_entry<const FLIP: bool>(a: *const u8, lda: usize, m: usize, k: usize, dst: *mut u8) {
    // SAFETY: forwarded.
    unsafe { pack_a_8x8::<FLIP>(a, lda, m, k, dst) }
}

/// `qx8_gemm_8x8c4__dotprod`: `sdot` by element, 8×8 tiles, K groups of 4; u8
/// activations flipped to i8 (`a_offset` −128), u8 weights stored as i8 (`b_offset` 128).
pub const QX8_GEMM_8X8C4__DOTPROD: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_8x8c4__dotprod",
    isa: Isa::Dotprod,
    mr: MR,
    format: PackFormat { nr: NR, kr: KR },
    a_offset: [-128, 0],
    b_offset: [128, 0],
    max_abs_stored_b: None,
    run: [[Some(entry::<true>), Some(entry::<true>)], [Some(entry::<false>), Some(entry::<false>)]],
    indirect: Some(Indirect {
        run: [
            [Some(indirect_entry::<true>), Some(indirect_entry::<true>)],
            [Some(indirect_entry::<false>), Some(indirect_entry::<false>)],
        ],
    }),
    packed_a: Some(PackedA {
        kr: PACK_KB,
        group_bytes: PACK_BLOCK_BYTES,
        pack: [pack_entry::<true>, pack_entry::<false>],
        run: [[Some(entry_packed), Some(entry_packed)], [Some(entry_packed), Some(entry_packed)]],
    }),
};

/// dotprod GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[QX8_GEMM_8X8C4__DOTPROD];
