//! AArch64 Advanced SIMD (NEON) kernels.
//!
//! [`QX8_GEMM_4X16C1__NEON`]: exact for every input, all four u8/i8 combinations with no
//! operand offsets. Both operands are widened to i16 (sign- or zero-extended per type:
//! u8 values fit i16 as they are) and multiplied with `smlal`/`smlal2` by element into
//! i32: one product is at most 255·255 and each is accumulated on its own, so no i16
//! pair sum exists that could overflow (the `smull` + `sadalp` pairing would need the
//! packer's `max_abs_stored_b` bound; this kernel needs none). Accumulation wraps modulo
//! 2^32 as the [`GemmArgs`] contract asks.
//!
//! Weights are packed `[k][16]` (`pack_b_kgroups` with `kr` 1). Per 8 K, each row's 8
//! activation bytes are loaded and widened once; per K, 16 weight bytes are widened
//! (`sxtl`/`sxtl2`) and 16 `smlal` (4 rows × 16 columns) use the row's K-th i16 lane.
//! The K tail (K mod 8) multiplies by scalars, reading nothing past a row's `k` bytes.
//!
//! The indirect entry ([`IgemmArgs`], convolution rows read in place through the
//! indirection buffer) runs the same K loop tap by tap on the tap's row pointers.
//!
//! Epilogue: the shared NEON output stage ([`store_tile_neon`](super::store_tile_neon)) over the accumulator tile.
//!
//! [`pairs::QX8_GEMM_4X4C16_SADALP__NEON`]: the `smull` + `smlal2` + `sadalp` variant, for
//! weights the packer proved within stored `|b| ≤ 127` (see [`pairs`]).

pub mod codebook;
pub mod dwconv;
pub mod pairs;
pub mod pwlq;
pub mod shift;

use core::arch::aarch64::*;

use super::row_pointers;
use crate::types::{GemmArgs, GemmUkernel, IgemmArgs, Indirect, Isa, PackFormat};

/// Rows per tile.
const MR: usize = 4;
/// Columns per tile.
const NR: usize = 16;

/// `MR` rows × 4 vectors of 4 i32 columns.
type Acc = [[int32x4_t; 4]; MR];

/// 8 activation bytes widened to i16 (sign- or zero-extended per type).
///
/// # Safety
/// `p` is readable for 8 bytes.
#[inline(always)]
unsafe fn load_a8<const SIGNED: bool>(p: *const u8) -> int16x8_t {
    // SAFETY: forwarded.
    unsafe {
        if SIGNED { vmovl_s8(vld1_s8(p.cast())) } else { vreinterpretq_s16_u16(vmovl_u8(vld1_u8(p))) }
    }
}

/// 16 weight bytes (one K row of the panel) widened to two i16 vectors.
///
/// # Safety
/// `p` is readable for 16 bytes.
#[inline(always)]
unsafe fn load_b16<const SIGNED: bool>(p: *const u8) -> (int16x8_t, int16x8_t) {
    // SAFETY: forwarded.
    unsafe {
        if SIGNED {
            let x = vld1q_s8(p.cast());
            (vmovl_s8(vget_low_s8(x)), vmovl_high_s8(x))
        } else {
            let x = vld1q_u8(p);
            (vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(x))), vreinterpretq_s16_u16(vmovl_high_u8(x)))
        }
    }
}

/// One K step with lane `L` of each row's widened activations.
macro_rules! mlal_lane {
    ($c:ident, $a:ident, $b:expr, $L:literal) => {{
        let (b0, b1) = $b;
        for r in 0..MR {
            $c[r][0] = vmlal_laneq_s16::<$L>($c[r][0], vget_low_s16(b0), $a[r]);
            $c[r][1] = vmlal_high_laneq_s16::<$L>($c[r][1], b0, $a[r]);
            $c[r][2] = vmlal_laneq_s16::<$L>($c[r][2], vget_low_s16(b1), $a[r]);
            $c[r][3] = vmlal_high_laneq_s16::<$L>($c[r][3], b1, $a[r]);
        }
    }};
}

/// `k` K steps of the `MR` rows (rows past the tile's `m` may repeat a real row) into
/// `c`: whole blocks of 8 K with lane multiplies, then the K tail by scalars. Returns
/// the panel pointer past the `k` K rows read.
///
/// # Safety
/// Every `rows[r]` is readable for `k` bytes; `b` for `16·k`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn k_loop<const A_SIGNED: bool, const B_SIGNED: bool>(c: &mut Acc, rows: &[*const u8; MR], b: *const u8, k: usize) -> *const u8 {
    let mut b = b;
    // SAFETY: the block loop reads bytes kk..kk+8 ≤ k of each row and panel rows
    // kk..kk+8 ≤ k; the tail reads single bytes < k (contract).
    unsafe {
        let mut kk = 0;
        while kk + 8 <= k {
            let mut a = [vdupq_n_s16(0); MR];
            for r in 0..MR {
                a[r] = load_a8::<A_SIGNED>(rows[r].add(kk));
            }
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b), 0);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(NR)), 1);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(2 * NR)), 2);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(3 * NR)), 3);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(4 * NR)), 4);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(5 * NR)), 5);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(6 * NR)), 6);
            mlal_lane!(c, a, load_b16::<B_SIGNED>(b.add(7 * NR)), 7);
            b = b.add(8 * NR);
            kk += 8;
        }
        while kk < k {
            let (b0, b1) = load_b16::<B_SIGNED>(b);
            for r in 0..MR {
                let x = *rows[r].add(kk);
                let av = if A_SIGNED { x as i8 as i16 } else { x as i16 };
                c[r][0] = vmlal_n_s16(c[r][0], vget_low_s16(b0), av);
                c[r][1] = vmlal_high_n_s16(c[r][1], b0, av);
                c[r][2] = vmlal_n_s16(c[r][2], vget_low_s16(b1), av);
                c[r][3] = vmlal_high_n_s16(c[r][3], b1, av);
            }
            b = b.add(NR);
            kk += 1;
        }
    }
    b
}

/// The accumulator tile through the shared NEON output stage.
///
/// # Safety
/// As [`store_tile_neon`](super::store_tile_neon).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn finish(args: &GemmArgs, c: &Acc) {
    let mut tile = [[0i32; NR]; MR];
    for (row, cr) in tile.iter_mut().zip(c) {
        for (v, x) in cr.iter().enumerate() {
            // SAFETY: 4 i32 inside the row of 16.
            unsafe { vst1q_s32(row.as_mut_ptr().add(4 * v), *x) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe { super::store_tile_neon::<MR, NR>(args, &tile) }
}

/// The tile: [`k_loop`] over the whole K, then the output stage.
///
/// Reads `m` rows of `k` bytes of A (stride `lda`) and the panel's `16·k` bytes; nothing
/// past them.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`] contract with `m ≤ 4`, `n ≤ 16` and a
/// `{nr: 16, kr: 1}` panel.
#[target_feature(enable = "neon")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_4x16c1__neon<const A_SIGNED: bool, const B_SIGNED: bool>(args: &GemmArgs) {
    let mut c: Acc = [[vdupq_n_s32(0); 4]; MR];
    // SAFETY: m ≥ 1 rows of k bytes (contract; rows past m repeat row m − 1), the panel
    // holds 16·k bytes.
    unsafe {
        let rows = row_pointers::<MR>(args);
        k_loop::<A_SIGNED, B_SIGNED>(&mut c, &rows, args.b, args.k);
        finish(args, &c);
    }
}

/// Indirect entry point ([`IgemmArgs`]): per tap, [`k_loop`] (the raw entry's loop) over
/// the tap's `kc` elements of its 4 row pointers (rows past `m` repeat row `m − 1`),
/// the panel read in order; then the same output stage.
///
/// Reads the `m·taps` indirection entries; per row `i < m` and tap `t`, the `kc` bytes at
/// [`IgemmArgs::tap_ptr`]`(i, t)`; the panel's `16·taps·kc` bytes; the per-column tables
/// and row sums as [`store_tile_neon`](super::store_tile_neon). Writes only the `m × n`
/// output tile.
///
/// # Safety
/// `args` satisfies the [`IgemmArgs`] contract with `m ≤ 4`, `n ≤ 16` and a
/// `{nr: 16, kr: 1}` panel.
#[target_feature(enable = "neon")]
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_igemm_4x16c1__neon<const A_SIGNED: bool, const B_SIGNED: bool>(args: &IgemmArgs) {
    let mut c: Acc = [[vdupq_n_s32(0); 4]; MR];
    let mut b = args.b;
    for t in 0..args.taps {
        // SAFETY: t < taps; every tap row holds kc bytes (rows past m repeat row m − 1);
        // the panel holds 16·kc bytes for this tap after b.
        unsafe {
            let rows = super::tap_rows::<MR>(args, t);
            b = k_loop::<A_SIGNED, B_SIGNED>(&mut c, &rows, b, args.kc);
        }
    }
    // SAFETY: the output side of `args` is a GemmArgs tile with m ≤ 4, n ≤ 16.
    unsafe { finish(&args.epilogue_args(), &c) }
}

/// Indirect entry for one (A, B) signedness pair, as an
/// [`IgemmUkernelFn`](crate::IgemmUkernelFn).
///
/// # Safety
/// As [`qx8_igemm_4x16c1__neon`].
unsafe fn indirect_entry<const A_SIGNED: bool, const B_SIGNED: bool>(args: &IgemmArgs) {
    // SAFETY: forwarded (NEON is part of the aarch64 baseline).
    unsafe { qx8_igemm_4x16c1__neon::<A_SIGNED, B_SIGNED>(args) }
}

/// Entry point for one (A, B) signedness pair, as a [`GemmUkernelFn`](crate::GemmUkernelFn).
///
/// # Safety
/// As [`qx8_gemm_4x16c1__neon`].
unsafe fn entry<const A_SIGNED: bool, const B_SIGNED: bool>(args: &GemmArgs) {
    // SAFETY: forwarded (NEON is part of the aarch64 baseline).
    unsafe { qx8_gemm_4x16c1__neon::<A_SIGNED, B_SIGNED>(args) }
}

/// `qx8_gemm_4x16c1__neon`: exact for all inputs — i16 widening + `smlal` by element,
/// 4×16 tiles, K one at a time in the panel. All four u8/i8 combinations, no offsets.
pub const QX8_GEMM_4X16C1__NEON: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_4x16c1__neon",
    isa: Isa::Neon,
    mr: MR,
    format: PackFormat { nr: NR, kr: 1 },
    a_offset: [0, 0],
    b_offset: [0, 0],
    max_abs_stored_b: None,
    run: [[Some(entry::<false, false>), Some(entry::<false, true>)], [Some(entry::<true, false>), Some(entry::<true, true>)]],
    indirect: Some(Indirect {
        run: [
            [Some(indirect_entry::<false, false>), Some(indirect_entry::<false, true>)],
            [Some(indirect_entry::<true, false>), Some(indirect_entry::<true, true>)],
        ],
    }),
    packed_a: None,
};

/// NEON GEMM microkernels, least preferred first: the `sadalp` pair kernel after the
/// exact one, so the packer tries it first and falls back where its bound fails.
pub const GEMM_KERNELS: &[GemmUkernel] = &[QX8_GEMM_4X16C1__NEON, pairs::QX8_GEMM_4X4C16_SADALP__NEON];
