//! The fast plain-NEON int8 GEMM: `smull` + `smlal2` pairs summed in i16, `sadalp` into
//! i32 ([`QX8_GEMM_4X4C16_SADALP__NEON`]). It may run only on weights the packer measured
//! (`max_abs_stored_b: Some(127)`); every other weight matrix takes the exact
//! [`QX8_GEMM_4X16C1__NEON`](super::QX8_GEMM_4X16C1__NEON).
//!
//! Layout: weights packed `[k/16][4][16]` (`pack_b_kgroups` with `kr` 16), so one 16-byte
//! load is one column's 16 consecutive K, and one 16-byte load of a raw row is the
//! matching activations: `smull` multiplies K `t < 8` lane by lane into i16, `smlal2`
//! adds K `8 + t` to the same lane, `sadalp` adds adjacent i16 lanes into the column's
//! 4 i32 lanes (one accumulator per row × column, 16 for the 4×4 tile; three `addp` per
//! row at the end). Per 16 K and row × column: 3 instructions for 16 multiply-adds,
//! against 4 `smlal .4s` in the exact kernel.
//!
//! Operands as i8: activations multiply as i8, u8 ones XOR 0x80 (`a − 128`, `a_offset`
//! −128); u8 weights are stored as `b − 128` (`b_offset` 128). So `|a| ≤ 128` always.
//!
//! Exactness, the one thing to prove: an i16 lane holds `a_t·w_t + a_{8+t}·w_{8+t}`.
//! With every stored weight `|w| ≤ 127` (the packer's `max_abs_stored_b`: an i8 weight
//! matrix without −128, a u8 one without 0), each product is at most `128·127 = 16256`
//! in magnitude and the pair at most `32512 ≤ 32767`: no lane wraps. The bound is tight
//! in the sense that matters: one −128 weight paired with another (and −128
//! activations) gives `2·(−128)·(−128) = 32768`, which wraps to −32768 — so a matrix
//! holding −128 (stored) falls back to the exact kernel. (Without the activation flip,
//! u8 activations would need `2·255·|w| ≤ 32767`, i.e. `|w| ≤ 64`; the flip gives both
//! activation types the same, weaker bound.) `sadalp` adds two i16 lanes in i32 and the
//! i32 accumulation wraps modulo 2^32 as the [`GemmArgs`] contract asks.
//!
//! Epilogue: the shared NEON output stage ([`store_tile_neon`](super::super::store_tile_neon)).

use core::arch::aarch64::*;

use crate::aarch64::row_pointers;
use crate::types::{GemmArgs, GemmUkernel, Isa, PackFormat};

/// Rows per tile.
const MR: usize = 4;
/// Columns per tile.
const NR: usize = 4;
/// K elements per weight group (one 16-byte load per column).
const KR: usize = 16;

/// The kernel's weight bound: stored `|b| ≤ 127` keeps `2·128·|b| ≤ 32767`.
const MAX_ABS_STORED_B: i32 = 127;

/// 16 activation bytes as i8 (XOR 0x80 with `FLIP`); with `kn < 16` only `kn` bytes are
/// read, the rest are zero (then flipped: they meet zero weights, the panel's padding).
///
/// # Safety
/// `p` is readable for `min(kn, 16)` bytes.
#[inline(always)]
unsafe fn load_a16<const FLIP: bool>(p: *const u8, kn: usize) -> int8x16_t {
    // SAFETY: 16 bytes, or kn bytes copied into a 16-byte buffer; NEON is the baseline.
    unsafe {
        let v = if kn >= KR {
            vld1q_u8(p)
        } else {
            let mut b = [0u8; KR];
            core::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), kn);
            vld1q_u8(b.as_ptr())
        };
        vreinterpretq_s8_u8(if FLIP { veorq_u8(v, vdupq_n_u8(0x80)) } else { v })
    }
}

/// The 4×4 tile (`FLIP` for u8 activations).
///
/// Reads `m` rows of `k` bytes of A (stride `lda`; not one past `k`) and the panel's
/// `k.div_ceil(16)·64` bytes; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`] contract with `m ≤ 4`, `n ≤ 4`, a `{nr: 4, kr: 16}`
/// panel of i8-stored weights, every one with `|b| ≤ 127` (else results are wrong, never
/// out of bounds).
#[target_feature(enable = "neon")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_4x4c16_sadalp__neon<const FLIP: bool>(args: &GemmArgs) {
    let mut c = [[vdupq_n_s32(0); NR]; MR];
    // SAFETY: m ≥ 1 rows of k bytes (contract); groups below k / 16 read bytes
    // 16g .. 16g + 16 ≤ k of each row, the tail only the k mod 16 real bytes; the panel
    // holds k.div_ceil(16) groups of 64 bytes.
    unsafe {
        let rows = row_pointers::<MR>(args);
        // Group `g` of 16 K with `kn` real K: the rows' operands, the weights loaded per
        // column. A macro, so the loop body and the tail are both inline.
        macro_rules! group {
            ($g:expr, $kn:expr) => {{
                let g: usize = $g;
                let a: [int8x16_t; MR] = core::array::from_fn(|r| load_a16::<FLIP>(rows[r].add(KR * g), $kn));
                let b = args.b.cast::<i8>().add(g * KR * NR);
                for j in 0..NR {
                    let w = vld1q_s8(b.add(KR * j));
                    for (r, ar) in a.iter().enumerate() {
                        let pair = vmlal_high_s8(vmull_s8(vget_low_s8(*ar), vget_low_s8(w)), *ar, w);
                        c[r][j] = vpadalq_s16(c[r][j], pair);
                    }
                }
            }};
        }
        let full = args.k / KR;
        for g in 0..full {
            group!(g, KR);
        }
        if !args.k.is_multiple_of(KR) {
            group!(full, args.k % KR);
        }
        let mut tile = [[0i32; NR]; MR];
        for (row, cr) in tile.iter_mut().zip(&c) {
            vst1q_s32(row.as_mut_ptr(), vpaddq_s32(vpaddq_s32(cr[0], cr[1]), vpaddq_s32(cr[2], cr[3])));
        }
        super::super::store_tile_neon::<MR, NR>(args, &tile);
    }
}

/// Entry point (`FLIP` for u8 activations), as a [`GemmUkernelFn`](crate::GemmUkernelFn).
///
/// # Safety
/// As [`qx8_gemm_4x4c16_sadalp__neon`].
unsafe fn entry<const FLIP: bool>(args: &GemmArgs) {
    // SAFETY: forwarded (NEON is part of the aarch64 baseline).
    unsafe { qx8_gemm_4x4c16_sadalp__neon::<FLIP>(args) }
}

/// `qx8_gemm_4x4c16_sadalp__neon`: `smull` + `smlal2` i16 pairs, `sadalp` into i32, 4×4
/// tiles, K groups of 16; only for weights whose stored form satisfies `|b| ≤ 127` (no
/// −128 i8 weight, no 0 u8 weight), which the packer checks.
pub const QX8_GEMM_4X4C16_SADALP__NEON: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_4x4c16_sadalp__neon",
    isa: Isa::Neon,
    mr: MR,
    format: PackFormat { nr: NR, kr: KR },
    a_offset: [-128, 0],
    b_offset: [128, 0],
    max_abs_stored_b: Some(MAX_ABS_STORED_B),
    run: [[Some(entry::<true>), Some(entry::<true>)], [Some(entry::<false>), Some(entry::<false>)]],
    indirect: None,
    packed_a: None,
};
