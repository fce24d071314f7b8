//! Portable GEMM microkernel on the `[k/KR][NR][KR]` packed format.

use crate::reference::requant::{requantize_fixed, requantize_fp32};
use crate::types::{GemmArgs, GemmUkernel, IgemmArgs, Indirect, Int8, Isa, OutputKind, OutputStage, PackFormat, RequantMode};

/// Output-stage value for one accumulator, shared by every portable epilogue.
///
/// `acc` already holds the zero-point corrections and i32 bias. Returns the value to
/// store, widened: i32, f32 bits, or the clamped 8-bit value.
#[inline(always)]
pub fn output_value(acc: i32, j: usize, out: &OutputStage) -> u32 {
    // SAFETY (of the reads below): the kernel contract guarantees the per-column arrays
    // used by `out.kind`/`out.mode` are valid for the tile's columns; `j` is one of them.
    match out.kind {
        OutputKind::I32 => acc as u32,
        OutputKind::F32 => {
            let s = unsafe { *out.scale.add(j) };
            let b = if out.bias_f32.is_null() { 0.0 } else { unsafe { *out.bias_f32.add(j) } };
            (acc as f32 * s + b).to_bits()
        }
        OutputKind::U8 | OutputKind::I8 => {
            let q = match out.mode {
                RequantMode::Fp32 => requantize_fp32(acc as i64, unsafe { *out.scale.add(j) }, out.out_zero_point),
                mode => requantize_fixed(acc as i64, unsafe { *out.qmult.add(j) }, mode, out.out_zero_point),
            };
            q.clamp(out.qmin as i64, out.qmax as i64) as i32 as u32
        }
    }
}

/// Adds the per-row and per-column terms and writes the tile through the output stage.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`] contract for an `args.m × args.n` tile.
#[inline(always)]
pub unsafe fn store_tile<const MR: usize, const NR: usize>(args: &GemmArgs, acc: &[[i32; NR]; MR]) {
    let out = &args.out;
    for (i, row) in acc.iter().enumerate().take(args.m) {
        // SAFETY: a_row_sum, when non-null, has `m` entries (contract).
        let rs = if args.a_row_sum.is_null() { 0 } else { unsafe { *args.a_row_sum.add(i) } };
        for (j, &v) in row.iter().enumerate().take(args.n) {
            // SAFETY: col_offset has `n` entries; b_zero_point, when non-null, too.
            let zb = if args.b_zero_point.is_null() { 0 } else { unsafe { *args.b_zero_point.add(j) } };
            let acc = v.wrapping_add(unsafe { *out.col_offset.add(j) }).wrapping_sub(zb.wrapping_mul(rs));
            let val = output_value(acc, j, out);
            let idx = i * args.ldc + j;
            // SAFETY: the output tile is `m × n` with row stride `ldc` elements of the
            // output type (contract).
            unsafe {
                match out.kind {
                    OutputKind::I32 | OutputKind::F32 => (args.c as *mut u32).add(idx).write_unaligned(val),
                    OutputKind::U8 | OutputKind::I8 => args.c.add(idx).write(val as u8),
                }
            }
        }
    }
}

/// Portable tile: `MR × NR` accumulators, K in groups of `KR` from the packed panel.
///
/// Reads `m` rows of `k` activations (stride `lda`), the panel's
/// `k.div_ceil(KR)·NR·KR` bytes, and nothing past them.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`] contract; `args.m ≤ MR`, `args.n ≤ NR`.
pub unsafe fn gemm_tile<A: Int8, B: Int8, const MR: usize, const NR: usize, const KR: usize>(args: &GemmArgs) {
    let mut acc = [[0i32; NR]; MR];
    let groups = args.k.div_ceil(KR);
    for g in 0..groups {
        let k0 = g * KR;
        let kn = KR.min(args.k - k0);
        // SAFETY: group `g` of the panel holds NR·KR bytes (contract).
        let blk = unsafe { core::slice::from_raw_parts(args.b.add(g * NR * KR), NR * KR) };
        for (i, acc_row) in acc.iter_mut().enumerate().take(args.m) {
            // SAFETY: row i has `k` readable elements from `a + i·lda` (contract).
            let arow = unsafe { core::slice::from_raw_parts(args.a.add(i * args.lda + k0), kn) };
            for (r, &abits) in arow.iter().enumerate() {
                let av = A::from_bits(abits).to_i32();
                for (j, accv) in acc_row.iter_mut().enumerate() {
                    let bv = B::from_bits(blk[j * KR + r]).to_i32();
                    *accv = accv.wrapping_add(av * bv);
                }
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<MR, NR>(args, &acc) }
}

/// The u8×s8 form of [`gemm_tile`], as the VNNI instructions compute: activations are
/// read as u8 after `XOR 0x80` when `A_FLIP` (i8 activations, `a_offset` 128), and the
/// packed weights are always i8 (u8 weights stored as `b − 128` by the packer).
///
/// # Safety
/// As [`gemm_tile`].
pub unsafe fn gemm_tile_u8s8<const A_FLIP: bool, const MR: usize, const NR: usize, const KR: usize>(args: &GemmArgs) {
    let mut acc = [[0i32; NR]; MR];
    let flip = if A_FLIP { 0x80 } else { 0 };
    for g in 0..args.k.div_ceil(KR) {
        let k0 = g * KR;
        let kn = KR.min(args.k - k0);
        // SAFETY: group `g` of the panel holds NR·KR bytes (contract).
        let blk = unsafe { core::slice::from_raw_parts(args.b.add(g * NR * KR), NR * KR) };
        for (i, acc_row) in acc.iter_mut().enumerate().take(args.m) {
            // SAFETY: row i has `k` readable elements from `a + i·lda` (contract).
            let arow = unsafe { core::slice::from_raw_parts(args.a.add(i * args.lda + k0), kn) };
            for (r, &abits) in arow.iter().enumerate() {
                let av = (abits ^ flip) as i32;
                for (j, accv) in acc_row.iter_mut().enumerate() {
                    *accv = accv.wrapping_add(av * blk[j * KR + r] as i8 as i32);
                }
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<MR, NR>(args, &acc) }
}

/// The indirect twin of [`gemm_tile`] ([`IgemmArgs`]): the same K loop, each row's
/// K range read tap by tap through the indirection buffer. The reference for every
/// indirect kernel, on the same packed panel.
///
/// Reads, per row `i < m` and tap `t`, the `kc` elements of [`IgemmArgs::tap_ptr`], the
/// panel's `taps·kc/KR·NR·KR` bytes, and nothing past them.
///
/// # Safety
/// `args` satisfies the [`IgemmArgs`] contract; `args.m ≤ MR`, `args.n ≤ NR`, `kc` a
/// multiple of `KR`.
pub unsafe fn igemm_tile<A: Int8, B: Int8, const MR: usize, const NR: usize, const KR: usize>(args: &IgemmArgs) {
    // SAFETY: forwarded contract; a flip of 0 leaves the bits as they are.
    unsafe { igemm_tile_impl::<MR, NR, KR>(args, 0, |a| A::from_bits(a).to_i32(), |b| B::from_bits(b).to_i32()) }
}

/// The u8×s8 form of [`igemm_tile`] (as [`gemm_tile_u8s8`]).
///
/// # Safety
/// As [`igemm_tile`].
pub unsafe fn igemm_tile_u8s8<const A_FLIP: bool, const MR: usize, const NR: usize, const KR: usize>(args: &IgemmArgs) {
    let flip = if A_FLIP { 0x80 } else { 0 };
    // SAFETY: forwarded contract.
    unsafe { igemm_tile_impl::<MR, NR, KR>(args, flip, |a| a as i32, |b| b as i8 as i32) }
}

/// The shared loop of the portable indirect tiles: activation bits are XORed with
/// `flip`, then read with `av`; packed weight bytes with `bv`.
///
/// # Safety
/// As [`igemm_tile`].
#[inline(always)]
unsafe fn igemm_tile_impl<const MR: usize, const NR: usize, const KR: usize>(
    args: &IgemmArgs,
    flip: u8,
    av: impl Fn(u8) -> i32,
    bv: impl Fn(u8) -> i32,
) {
    let mut acc = [[0i32; NR]; MR];
    let groups = args.kc / KR;
    for t in 0..args.taps {
        for g in 0..groups {
            // SAFETY: K group t·groups + g of the panel holds NR·KR bytes (contract).
            let blk = unsafe { core::slice::from_raw_parts(args.b.add((t * groups + g) * NR * KR), NR * KR) };
            for (i, acc_row) in acc.iter_mut().enumerate().take(args.m) {
                // SAFETY: i < m, t < taps; the tap row holds kc ≥ (g+1)·KR elements.
                let arow = unsafe { core::slice::from_raw_parts(args.tap_ptr(i, t).add(g * KR), KR) };
                for (r, &abits) in arow.iter().enumerate() {
                    let a = av(abits ^ flip);
                    for (j, accv) in acc_row.iter_mut().enumerate() {
                        *accv = accv.wrapping_add(a * bv(blk[j * KR + r]));
                    }
                }
            }
        }
    }
    // SAFETY: forwarded contract: the output side of `args` is a GemmArgs tile.
    unsafe { store_tile::<MR, NR>(&args.epilogue_args(), &acc) }
}

/// `qu8s8_gemm_4x16c4__generic`: the operand transformation of the VNNI kernels
/// (`a_offset`/`b_offset` 128) in portable code, so the driver's and the tester's
/// handling of offsets is exercised on every CPU.
pub const QU8S8_GEMM_4X16C4__GENERIC: GemmUkernel = GemmUkernel {
    name: "qu8s8_gemm_4x16c4__generic",
    isa: Isa::Scalar,
    mr: 4,
    format: PackFormat { nr: 16, kr: 4 },
    a_offset: [0, 128],
    b_offset: [128, 0],
    max_abs_stored_b: None,
    run: [
        [Some(gemm_tile_u8s8::<false, 4, 16, 4>), Some(gemm_tile_u8s8::<false, 4, 16, 4>)],
        [Some(gemm_tile_u8s8::<true, 4, 16, 4>), Some(gemm_tile_u8s8::<true, 4, 16, 4>)],
    ],
    packed_a: None,
    indirect: Some(Indirect {
        run: [
            [Some(igemm_tile_u8s8::<false, 4, 16, 4>), Some(igemm_tile_u8s8::<false, 4, 16, 4>)],
            [Some(igemm_tile_u8s8::<true, 4, 16, 4>), Some(igemm_tile_u8s8::<true, 4, 16, 4>)],
        ],
    }),
};

/// `qx8_gemm_4x16c4__generic`: all four u8/i8 combinations, 4×16 tiles, K groups of 4.
pub const QX8_GEMM_4X16C4__GENERIC: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_4x16c4__generic",
    isa: Isa::Scalar,
    mr: 4,
    format: PackFormat { nr: 16, kr: 4 },
    a_offset: [0, 0],
    b_offset: [0, 0],
    max_abs_stored_b: None,
    run: [
        [Some(gemm_tile::<u8, u8, 4, 16, 4>), Some(gemm_tile::<u8, i8, 4, 16, 4>)],
        [Some(gemm_tile::<i8, u8, 4, 16, 4>), Some(gemm_tile::<i8, i8, 4, 16, 4>)],
    ],
    packed_a: None,
    indirect: Some(Indirect {
        run: [
            [Some(igemm_tile::<u8, u8, 4, 16, 4>), Some(igemm_tile::<u8, i8, 4, 16, 4>)],
            [Some(igemm_tile::<i8, u8, 4, 16, 4>), Some(igemm_tile::<i8, i8, 4, 16, 4>)],
        ],
    }),
};

/// Every portable GEMM kernel, least preferred first (the dispatch table, the tests and
/// the benches read this).
pub const GEMM_KERNELS: &[GemmUkernel] = &[QU8S8_GEMM_4X16C4__GENERIC, QX8_GEMM_4X16C4__GENERIC];
