//! AArch64 int8 matrix multiply (`smmla`/`usmmla`) kernels.
//!
//! [`QX8_GEMM_8X8C8__I8MM`]: 8×8 tiles, weights packed `[k/8][8][8]` (`pack_b_kgroups`,
//! `kr` 8) and stored as i8 (u8 weights as `b − 128`, `b_offset` 128). Activations stay
//! as they are: i8 rows multiply with `smmla`, u8 rows with `usmmla` (unsigned × signed),
//! so neither operand is flipped in the loop. A product is at most 255·128 in magnitude
//! and eight of them under 2^18: every instruction is exact, and the i32 accumulation
//! wraps modulo 2^32 as the [`GemmArgs`] contract asks.
//!
//! The `[k/8][8][8]` panel is already the 2×8 right operand of `smmla`: 16 bytes are two
//! columns × 8 K. The left operand is two rows × 8 K, which is one 16-byte load of the
//! driver's packed A ([`pack_a_8x8`]) or, from raw rows, a `ldr d` + `ld1 {.d}[1]` pair.
//! Per 8 K the loop loads 4 A and 4 B vectors and runs 16 `smmla` into `v16..v31`
//! (`v16 + 4p + q`: rows `2p, 2p+1` × columns `2q, 2q+1`, lanes `[r0c0, r0c1, r1c0,
//! r1c1]`). The K tail (K mod 8) goes through a packed copy of the last partial block.
//!
//! The indirect entry ([`IgemmArgs`], convolution rows read in place through the
//! indirection buffer) runs the raw-row loop tap by tap on the tap's row pointers: its
//! inner loop is the raw entry's.
//!
//! Epilogue: the accumulators are unscrambled to a stack tile and go through the NEON
//! output stage ([`store_tile_neon`](super::store_tile_neon)), bit-exact with the reference for every stage.

pub mod codebook;

use core::arch::aarch64::*;
use core::arch::asm;

use super::{PACK_BLOCK_BYTES, PACK_KB, pack_a_8x8, row_pointers, tap_rows};
use crate::types::{GemmArgs, GemmUkernel, IgemmArgs, Indirect, Isa, PackFormat, PackedA};

/// Rows per tile.
const MR: usize = 8;
/// Columns per tile.
const NR: usize = 8;
/// K elements per weight group.
const KR: usize = 8;
/// Bytes of the panel per group of 8 K.
const B_BLOCK_BYTES: usize = NR * KR;

/// The 16 accumulators, `[4p + q]` = rows `2p, 2p+1` × columns `2q, 2q+1`.
type Acc = [int32x4_t; 16];

macro_rules! mm_loop_packed {
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
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            inout("v16") $c[0], inout("v17") $c[1], inout("v18") $c[2], inout("v19") $c[3],
            inout("v20") $c[4], inout("v21") $c[5], inout("v22") $c[6], inout("v23") $c[7],
            inout("v24") $c[8], inout("v25") $c[9], inout("v26") $c[10], inout("v27") $c[11],
            inout("v28") $c[12], inout("v29") $c[13], inout("v30") $c[14], inout("v31") $c[15],
            options(nostack, readonly),
        )
    };
}

macro_rules! mm_loop_raw {
    ($c:ident, $r:ident, $b:ident, $iters:ident, $mark:literal, [$($body:literal),* $(,)?]) => {
        asm!(
            $mark,
            "2:",
            $($body,)*
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "// qkern-mca-end",
            a0 = inout(reg) $r[0], a1 = inout(reg) $r[1], a2 = inout(reg) $r[2], a3 = inout(reg) $r[3],
            a4 = inout(reg) $r[4], a5 = inout(reg) $r[5], a6 = inout(reg) $r[6], a7 = inout(reg) $r[7],
            b = inout(reg) $b => _,
            n = inout(reg) $iters => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            inout("v16") $c[0], inout("v17") $c[1], inout("v18") $c[2], inout("v19") $c[3],
            inout("v20") $c[4], inout("v21") $c[5], inout("v22") $c[6], inout("v23") $c[7],
            inout("v24") $c[8], inout("v25") $c[9], inout("v26") $c[10], inout("v27") $c[11],
            inout("v28") $c[12], inout("v29") $c[13], inout("v30") $c[14], inout("v31") $c[15],
            options(nostack, readonly),
        )
    };
}

macro_rules! mm_loop16_packed {
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
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            inout("v16") $c[0], inout("v17") $c[1], inout("v18") $c[2], inout("v19") $c[3],
            inout("v20") $c[4], inout("v21") $c[5], inout("v22") $c[6], inout("v23") $c[7],
            inout("v24") $c[8], inout("v25") $c[9], inout("v26") $c[10], inout("v27") $c[11],
            inout("v28") $c[12], inout("v29") $c[13], inout("v30") $c[14], inout("v31") $c[15],
            options(nostack, readonly),
        )
    };
}

/// `iters` × 16 K (two groups of 8) from packed A and the panel: the main loop, unrolled
/// by two so each pointer moves once per 32 `smmla` and the second group's loads
/// interleave with the first group's `smmla` (llvm-mca 16, its Neoverse-N2 model that
/// `-mcpu=neoverse-v1` uses: 2 `smmla` per cycle, the peak).
///
/// # Safety
/// The CPU has i8mm; `a` is readable for `128·iters` bytes, `b` for `128·iters`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
unsafe fn loop16_packed<const U: bool>(c: &mut Acc, a: *const u8, b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: the loop reads 128 bytes of `a` and of `b` per iteration (contract).
    unsafe {
        if U {
            mm_loop16_packed!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed-usmmla", [
                "ldp q0, q1, [{a}]",
                "ldp q8, q9, [{b}]",
                "ldp q2, q3, [{a}, #32]",
                "ldp q10, q11, [{b}, #32]",
                "usmmla v16.4s, v0.16b, v8.16b",
                "usmmla v17.4s, v0.16b, v9.16b",
                "usmmla v18.4s, v0.16b, v10.16b",
                "usmmla v19.4s, v0.16b, v11.16b",
                "ldp q4, q5, [{a}, #64]",
                "usmmla v20.4s, v1.16b, v8.16b",
                "usmmla v21.4s, v1.16b, v9.16b",
                "usmmla v22.4s, v1.16b, v10.16b",
                "usmmla v23.4s, v1.16b, v11.16b",
                "ldp q12, q13, [{b}, #64]",
                "usmmla v24.4s, v2.16b, v8.16b",
                "usmmla v25.4s, v2.16b, v9.16b",
                "usmmla v26.4s, v2.16b, v10.16b",
                "usmmla v27.4s, v2.16b, v11.16b",
                "ldp q6, q7, [{a}, #96]",
                "usmmla v28.4s, v3.16b, v8.16b",
                "usmmla v29.4s, v3.16b, v9.16b",
                "usmmla v30.4s, v3.16b, v10.16b",
                "usmmla v31.4s, v3.16b, v11.16b",
                "ldp q14, q15, [{b}, #96]",
                "usmmla v16.4s, v4.16b, v12.16b",
                "usmmla v17.4s, v4.16b, v13.16b",
                "usmmla v18.4s, v4.16b, v14.16b",
                "usmmla v19.4s, v4.16b, v15.16b",
                "usmmla v20.4s, v5.16b, v12.16b",
                "usmmla v21.4s, v5.16b, v13.16b",
                "usmmla v22.4s, v5.16b, v14.16b",
                "usmmla v23.4s, v5.16b, v15.16b",
                "add {a}, {a}, #128",
                "usmmla v24.4s, v6.16b, v12.16b",
                "usmmla v25.4s, v6.16b, v13.16b",
                "usmmla v26.4s, v6.16b, v14.16b",
                "usmmla v27.4s, v6.16b, v15.16b",
                "usmmla v28.4s, v7.16b, v12.16b",
                "usmmla v29.4s, v7.16b, v13.16b",
                "usmmla v30.4s, v7.16b, v14.16b",
                "usmmla v31.4s, v7.16b, v15.16b",
                "add {b}, {b}, #128",
            ]);
        } else {
            mm_loop16_packed!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed-smmla", [
                "ldp q0, q1, [{a}]",
                "ldp q8, q9, [{b}]",
                "ldp q2, q3, [{a}, #32]",
                "ldp q10, q11, [{b}, #32]",
                "smmla v16.4s, v0.16b, v8.16b",
                "smmla v17.4s, v0.16b, v9.16b",
                "smmla v18.4s, v0.16b, v10.16b",
                "smmla v19.4s, v0.16b, v11.16b",
                "ldp q4, q5, [{a}, #64]",
                "smmla v20.4s, v1.16b, v8.16b",
                "smmla v21.4s, v1.16b, v9.16b",
                "smmla v22.4s, v1.16b, v10.16b",
                "smmla v23.4s, v1.16b, v11.16b",
                "ldp q12, q13, [{b}, #64]",
                "smmla v24.4s, v2.16b, v8.16b",
                "smmla v25.4s, v2.16b, v9.16b",
                "smmla v26.4s, v2.16b, v10.16b",
                "smmla v27.4s, v2.16b, v11.16b",
                "ldp q6, q7, [{a}, #96]",
                "smmla v28.4s, v3.16b, v8.16b",
                "smmla v29.4s, v3.16b, v9.16b",
                "smmla v30.4s, v3.16b, v10.16b",
                "smmla v31.4s, v3.16b, v11.16b",
                "ldp q14, q15, [{b}, #96]",
                "smmla v16.4s, v4.16b, v12.16b",
                "smmla v17.4s, v4.16b, v13.16b",
                "smmla v18.4s, v4.16b, v14.16b",
                "smmla v19.4s, v4.16b, v15.16b",
                "smmla v20.4s, v5.16b, v12.16b",
                "smmla v21.4s, v5.16b, v13.16b",
                "smmla v22.4s, v5.16b, v14.16b",
                "smmla v23.4s, v5.16b, v15.16b",
                "add {a}, {a}, #128",
                "smmla v24.4s, v6.16b, v12.16b",
                "smmla v25.4s, v6.16b, v13.16b",
                "smmla v26.4s, v6.16b, v14.16b",
                "smmla v27.4s, v6.16b, v15.16b",
                "smmla v28.4s, v7.16b, v12.16b",
                "smmla v29.4s, v7.16b, v13.16b",
                "smmla v30.4s, v7.16b, v14.16b",
                "smmla v31.4s, v7.16b, v15.16b",
                "add {b}, {b}, #128",
            ]);
        }
    }
}

/// `iters` groups of 8 K from packed A ([`pack_a_8x8`]) and the panel: `usmmla` when
/// `U` (u8 activations), else `smmla`.
///
/// # Safety
/// The CPU has i8mm; `a` is readable for `64·iters` bytes, `b` for `64·iters`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
unsafe fn loop_packed<const U: bool>(c: &mut Acc, a: *const u8, b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: the loop reads 64 bytes of `a` and of `b` per iteration (contract).
    unsafe {
        if U {
            mm_loop_packed!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed8-usmmla", [
                "ldp q0, q1, [{a}]",
                "ldp q8, q9, [{b}]",
                "ldp q2, q3, [{a}, #32]",
                "add {a}, {a}, #64",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "usmmla v16.4s, v0.16b, v8.16b",
                "usmmla v17.4s, v0.16b, v9.16b",
                "usmmla v18.4s, v0.16b, v10.16b",
                "usmmla v19.4s, v0.16b, v11.16b",
                "usmmla v20.4s, v1.16b, v8.16b",
                "usmmla v21.4s, v1.16b, v9.16b",
                "usmmla v22.4s, v1.16b, v10.16b",
                "usmmla v23.4s, v1.16b, v11.16b",
                "usmmla v24.4s, v2.16b, v8.16b",
                "usmmla v25.4s, v2.16b, v9.16b",
                "usmmla v26.4s, v2.16b, v10.16b",
                "usmmla v27.4s, v2.16b, v11.16b",
                "usmmla v28.4s, v3.16b, v8.16b",
                "usmmla v29.4s, v3.16b, v9.16b",
                "usmmla v30.4s, v3.16b, v10.16b",
                "usmmla v31.4s, v3.16b, v11.16b",
            ]);
        } else {
            mm_loop_packed!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed8-smmla", [
                "ldp q0, q1, [{a}]",
                "ldp q8, q9, [{b}]",
                "ldp q2, q3, [{a}, #32]",
                "add {a}, {a}, #64",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "smmla v16.4s, v0.16b, v8.16b",
                "smmla v17.4s, v0.16b, v9.16b",
                "smmla v18.4s, v0.16b, v10.16b",
                "smmla v19.4s, v0.16b, v11.16b",
                "smmla v20.4s, v1.16b, v8.16b",
                "smmla v21.4s, v1.16b, v9.16b",
                "smmla v22.4s, v1.16b, v10.16b",
                "smmla v23.4s, v1.16b, v11.16b",
                "smmla v24.4s, v2.16b, v8.16b",
                "smmla v25.4s, v2.16b, v9.16b",
                "smmla v26.4s, v2.16b, v10.16b",
                "smmla v27.4s, v2.16b, v11.16b",
                "smmla v28.4s, v3.16b, v8.16b",
                "smmla v29.4s, v3.16b, v9.16b",
                "smmla v30.4s, v3.16b, v10.16b",
                "smmla v31.4s, v3.16b, v11.16b",
            ]);
        }
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

/// `iters` groups of 8 K for a tile of at most `R` (2 or 4) rows, from packed A (only
/// its first `R` rows are loaded) and the panel: `R/8` of the 8-row loop's work, for
/// GEMV (M = 1) and short last row tiles. `usmmla` when `U`, else `smmla`.
///
/// # Safety
/// The CPU has i8mm; `a` is readable for `64·iters` bytes, `b` for `64·iters`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
unsafe fn loop_packed_rows<const U: bool, const R: usize>(c: &mut Acc, a: *const u8, b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: the loop reads at most 64 bytes of `a` and 64 of `b` per iteration (contract).
    unsafe {
        match (U, R <= 2) {
            (true, true) => loop_rows_asm!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed-m2-usmmla", [
                "ldr q0, [{a}]",
                "add {a}, {a}, #64",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "usmmla v16.4s, v0.16b, v8.16b",
                "usmmla v17.4s, v0.16b, v9.16b",
                "usmmla v18.4s, v0.16b, v10.16b",
                "usmmla v19.4s, v0.16b, v11.16b",
            ]),
            (false, true) => loop_rows_asm!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed-m2-smmla", [
                "ldr q0, [{a}]",
                "add {a}, {a}, #64",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "smmla v16.4s, v0.16b, v8.16b",
                "smmla v17.4s, v0.16b, v9.16b",
                "smmla v18.4s, v0.16b, v10.16b",
                "smmla v19.4s, v0.16b, v11.16b",
            ]),
            (true, false) => loop_rows_asm!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed-m4-usmmla", [
                "ldp q0, q1, [{a}]",
                "add {a}, {a}, #64",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "usmmla v16.4s, v0.16b, v8.16b",
                "usmmla v17.4s, v0.16b, v9.16b",
                "usmmla v18.4s, v0.16b, v10.16b",
                "usmmla v19.4s, v0.16b, v11.16b",
                "usmmla v20.4s, v1.16b, v8.16b",
                "usmmla v21.4s, v1.16b, v9.16b",
                "usmmla v22.4s, v1.16b, v10.16b",
                "usmmla v23.4s, v1.16b, v11.16b",
            ]),
            (false, false) => loop_rows_asm!(c, a, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm packed-m4-smmla", [
                "ldp q0, q1, [{a}]",
                "add {a}, {a}, #64",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "smmla v16.4s, v0.16b, v8.16b",
                "smmla v17.4s, v0.16b, v9.16b",
                "smmla v18.4s, v0.16b, v10.16b",
                "smmla v19.4s, v0.16b, v11.16b",
                "smmla v20.4s, v1.16b, v8.16b",
                "smmla v21.4s, v1.16b, v9.16b",
                "smmla v22.4s, v1.16b, v10.16b",
                "smmla v23.4s, v1.16b, v11.16b",
            ]),
        }
    }
}

/// `iters` groups of 8 K from 8 raw rows (advanced by `8·iters`) and the panel.
///
/// # Safety
/// The CPU has i8mm; every row is readable for `8·iters` bytes, `b` for `64·iters`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
unsafe fn loop_raw<const U: bool>(c: &mut Acc, rows: &mut [*const u8; MR], b: *const u8, iters: usize) {
    if iters == 0 {
        return;
    }
    // SAFETY: reads 8 bytes of every row and 64 of `b` per iteration (contract).
    unsafe {
        if U {
            mm_loop_raw!(c, rows, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm raw-usmmla", [
                "ldr d0, [{a0}], #8",
                "ld1 {{v0.d}}[1], [{a1}], #8",
                "ldr d1, [{a2}], #8",
                "ld1 {{v1.d}}[1], [{a3}], #8",
                "ldr d2, [{a4}], #8",
                "ld1 {{v2.d}}[1], [{a5}], #8",
                "ldr d3, [{a6}], #8",
                "ld1 {{v3.d}}[1], [{a7}], #8",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "usmmla v16.4s, v0.16b, v8.16b",
                "usmmla v17.4s, v0.16b, v9.16b",
                "usmmla v18.4s, v0.16b, v10.16b",
                "usmmla v19.4s, v0.16b, v11.16b",
                "usmmla v20.4s, v1.16b, v8.16b",
                "usmmla v21.4s, v1.16b, v9.16b",
                "usmmla v22.4s, v1.16b, v10.16b",
                "usmmla v23.4s, v1.16b, v11.16b",
                "usmmla v24.4s, v2.16b, v8.16b",
                "usmmla v25.4s, v2.16b, v9.16b",
                "usmmla v26.4s, v2.16b, v10.16b",
                "usmmla v27.4s, v2.16b, v11.16b",
                "usmmla v28.4s, v3.16b, v8.16b",
                "usmmla v29.4s, v3.16b, v9.16b",
                "usmmla v30.4s, v3.16b, v10.16b",
                "usmmla v31.4s, v3.16b, v11.16b",
            ]);
        } else {
            mm_loop_raw!(c, rows, b, iters, "// qkern-mca-begin qx8_gemm_8x8c8__i8mm raw-smmla", [
                "ldr d0, [{a0}], #8",
                "ld1 {{v0.d}}[1], [{a1}], #8",
                "ldr d1, [{a2}], #8",
                "ld1 {{v1.d}}[1], [{a3}], #8",
                "ldr d2, [{a4}], #8",
                "ld1 {{v2.d}}[1], [{a5}], #8",
                "ldr d3, [{a6}], #8",
                "ld1 {{v3.d}}[1], [{a7}], #8",
                "ldp q8, q9, [{b}]",
                "ldp q10, q11, [{b}, #32]",
                "add {b}, {b}, #64",
                "smmla v16.4s, v0.16b, v8.16b",
                "smmla v17.4s, v0.16b, v9.16b",
                "smmla v18.4s, v0.16b, v10.16b",
                "smmla v19.4s, v0.16b, v11.16b",
                "smmla v20.4s, v1.16b, v8.16b",
                "smmla v21.4s, v1.16b, v9.16b",
                "smmla v22.4s, v1.16b, v10.16b",
                "smmla v23.4s, v1.16b, v11.16b",
                "smmla v24.4s, v2.16b, v8.16b",
                "smmla v25.4s, v2.16b, v9.16b",
                "smmla v26.4s, v2.16b, v10.16b",
                "smmla v27.4s, v2.16b, v11.16b",
                "smmla v28.4s, v3.16b, v8.16b",
                "smmla v29.4s, v3.16b, v9.16b",
                "smmla v30.4s, v3.16b, v10.16b",
                "smmla v31.4s, v3.16b, v11.16b",
            ]);
        }
    }
}

/// The tile's accumulators, unscrambled from 2×2 blocks, to the output stage.
///
/// # Safety
/// As [`store_tile_neon`](super::store_tile_neon).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn finish(args: &GemmArgs, c: &Acc) {
    let mut tile = [[0i32; NR]; MR];
    for p in 0..MR / 2 {
        for q in 0..NR / 2 {
            let mut v = [0i32; 4];
            // SAFETY: 4 i32.
            unsafe { vst1q_s32(v.as_mut_ptr(), c[4 * p + q]) };
            tile[2 * p][2 * q] = v[0];
            tile[2 * p][2 * q + 1] = v[1];
            tile[2 * p + 1][2 * q] = v[2];
            tile[2 * p + 1][2 * q + 1] = v[3];
        }
    }
    // SAFETY: forwarded contract.
    unsafe { super::store_tile_neon::<MR, NR>(args, &tile) }
}

/// Raw-row entry point (`U` for u8 activations).
///
/// Reads `m` rows of `k` bytes of A (stride `lda`), the panel's `k.div_ceil(8)·64`
/// bytes; nothing past them.
///
/// # Safety
/// The CPU has i8mm; `args` satisfies the [`GemmArgs`] contract with `m ≤ 8`, `n ≤ 8`
/// and a `{nr: 8, kr: 8}` panel of i8-stored weights.
#[target_feature(enable = "neon,i8mm")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_8x8c8__i8mm<const U: bool>(args: &GemmArgs) {
    let mut c: Acc = [vdupq_n_s32(0); 16];
    let iters = args.k / KR;
    let rem = args.k % KR;
    // SAFETY: m ≥ 1 rows (contract); the loop reads 8·iters ≤ k bytes per row and
    // 64·iters panel bytes; the tail reads a packed copy of the last k − 8·iters bytes
    // and the panel's last (zero-padded) group.
    unsafe {
        let mut rows = row_pointers::<MR>(args);
        loop_raw::<U>(&mut c, &mut rows, args.b, iters);
        if rem > 0 {
            let mut blk = [0u8; PACK_BLOCK_BYTES];
            pack_a_8x8::<false>(args.a.add(iters * KR), args.lda, args.m, rem, blk.as_mut_ptr());
            loop_packed::<U>(&mut c, blk.as_ptr(), args.b.add(iters * B_BLOCK_BYTES), 1);
        }
        finish(args, &c);
    }
}

/// Packed-A entry point (`U` for u8 activations): `args.a` is a tile written by
/// [`pack_a_8x8`] (not flipped).
///
/// Reads `k.div_ceil(8)·64` bytes of packed A and of the panel.
///
/// # Safety
/// As [`qx8_gemm_8x8c8__i8mm`], with `args.a` a packed A tile.
#[target_feature(enable = "neon,i8mm")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_8x8c8__i8mm_packed_a<const U: bool>(args: &GemmArgs) {
    let mut c: Acc = [vdupq_n_s32(0); 16];
    // SAFETY: k.div_ceil(8) packed blocks and panel groups (contract).
    unsafe {
        let groups = args.k.div_ceil(KR);
        // Tiles of at most 2 or 4 rows (GEMV, the last row tile) load and multiply only
        // those rows of the packed tile; its rows past m are zeros.
        match args.m {
            ..=2 => loop_packed_rows::<U, 2>(&mut c, args.a, args.b, groups),
            3..=4 => loop_packed_rows::<U, 4>(&mut c, args.a, args.b, groups),
            _ => {
                loop16_packed::<U>(&mut c, args.a, args.b, groups / 2);
                let done = groups / 2 * 2;
                loop_packed::<U>(&mut c, args.a.add(done * PACK_BLOCK_BYTES), args.b.add(done * B_BLOCK_BYTES), groups % 2);
            }
        }
        finish(args, &c);
    }
}

/// Indirect entry point ([`IgemmArgs`], `U` for u8 activations): per tap, the 8 tap rows
/// (rows past `m` repeat row `m − 1`) run the raw-row loop ([`loop_raw`], the same
/// instructions as the raw entry) over the tap's `kc/8` groups; the panel is read in
/// order. `kc` is a multiple of 8 (the contract's `kr`), so no K group straddles two taps
/// and there is no K tail.
///
/// Reads the `m·taps` indirection entries; per row `i < m` and tap `t`, the `kc` bytes at
/// [`IgemmArgs::tap_ptr`]`(i, t)`; the panel's `taps·kc/8·64` bytes; the per-column
/// tables and row sums as [`store_tile_neon`](super::store_tile_neon). Writes only the
/// `m × n` output tile.
///
/// # Safety
/// The CPU has i8mm; `args` satisfies the [`IgemmArgs`] contract with `m ≤ 8`, `n ≤ 8`,
/// `kc` a positive multiple of 8 and a `{nr: 8, kr: 8}` panel of i8-stored weights.
#[target_feature(enable = "neon,i8mm")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_igemm_8x8c8__i8mm<const U: bool>(args: &IgemmArgs) {
    debug_assert!(args.kc.is_multiple_of(KR));
    let mut c: Acc = [vdupq_n_s32(0); 16];
    let iters = args.kc / KR;
    let mut bp = args.b;
    for t in 0..args.taps {
        // SAFETY: t < taps; every tap row r < m holds kc = 8·iters bytes (rows past m
        // repeat row m − 1); the panel holds kc/8 groups of 64 bytes for this tap after bp.
        unsafe {
            let mut rows = tap_rows::<MR>(args, t);
            loop_raw::<U>(&mut c, &mut rows, bp, iters);
            bp = bp.add(iters * B_BLOCK_BYTES);
        }
    }
    // SAFETY: the output side of `args` is a GemmArgs tile with m ≤ 8, n ≤ 8.
    unsafe { finish(&args.epilogue_args(), &c) }
}

/// The indirect entry, as an [`IgemmUkernelFn`](crate::IgemmUkernelFn).
///
/// # Safety
/// As [`qx8_igemm_8x8c8__i8mm`].
unsafe fn indirect_entry<const U: bool>(args: &IgemmArgs) {
    // SAFETY: forwarded (the registration's ISA guarantees i8mm).
    unsafe { qx8_igemm_8x8c8__i8mm::<U>(args) }
}

/// The raw-row entry, as a [`GemmUkernelFn`](crate::GemmUkernelFn).
///
/// # Safety
/// As [`qx8_gemm_8x8c8__i8mm`].
unsafe fn entry<const U: bool>(args: &GemmArgs) {
    // SAFETY: forwarded (the registration's ISA guarantees i8mm).
    unsafe { qx8_gemm_8x8c8__i8mm::<U>(args) }
}

/// The packed-A entry, as a [`GemmUkernelFn`](crate::GemmUkernelFn).
///
/// # Safety
/// As [`qx8_gemm_8x8c8__i8mm_packed_a`].
unsafe fn entry_packed<const U: bool>(args: &GemmArgs) {
    // SAFETY: forwarded.
    unsafe { qx8_gemm_8x8c8__i8mm_packed_a::<U>(args) }
}

/// The A packer (no flip: both activation types multiply as they are).
///
/// # Safety
/// As [`APackFn`](crate::APackFn).
unsafe fn pack_entry(a: *const u8, lda: usize, m: usize, k: usize, dst: *mut u8) {
    // SAFETY: forwarded.
    unsafe { pack_a_8x8::<false>(a, lda, m, k, dst) }
}

/// `qx8_gemm_8x8c8__i8mm`: `usmmla` (u8 activations) / `smmla` (i8), 8×8 tiles, K
/// groups of 8; u8 weights stored as i8 (`b_offset` 128).
pub const QX8_GEMM_8X8C8__I8MM: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_8x8c8__i8mm",
    isa: Isa::I8mm,
    mr: MR,
    format: PackFormat { nr: NR, kr: KR },
    a_offset: [0, 0],
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
        pack: [pack_entry, pack_entry],
        run: [
            [Some(entry_packed::<true>), Some(entry_packed::<true>)],
            [Some(entry_packed::<false>), Some(entry_packed::<false>)],
        ],
    }),
};

/// i8mm GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[QX8_GEMM_8X8C8__I8MM];
