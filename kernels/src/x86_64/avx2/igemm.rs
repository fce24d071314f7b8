//! Indirect AVX2 GEMM tiles ([`IgemmArgs`]): a convolution's A rows read in place, tap
//! by tap, through the indirection buffer, instead of being gathered into an im2col
//! workspace first — the indirect entries of [`QX8_GEMM_6X16C2__AVX2`] and
//! [`QX8_GEMM_4X16C4_MADDUBS__AVX2`].
//!
//! Both are the GEMM tiles of [`super::gemm`] with the K loop split at tap boundaries:
//! per tap the `MR` row pointers are looked up once (a padding tap reads the shared row of
//! activation zero points), then the GEMM tile's own inner loop runs over the tap's `kc`
//! elements, on the same packed panel, followed by the same epilogue (every output
//! stage), so the results are identical bit for bit. `kc` is a multiple of the packed K
//! group (2, 4; contract), so no K group straddles two taps.
//!
//! * exact (`6x16c2`): each tap's `kc` bytes per row are widened to i16 (`widen_rows`,
//!   the packer of the GEMM entry's packed A) `KC` at a time into a stack buffer, then
//!   `exact_k_loop` runs on it. Where `kc` is not a multiple of 16 (few channels),
//!   consecutive taps are first copied into raw rows of `KC` bytes, then widened.
//! * `vpmaddubsw` (`4x16c4`): u8 activations are read in place; i8 ones are first copied
//!   `XOR 0x80` (`flip_rows`) `KC4` at a time, then `maddubs_groups` runs. The
//!   packed weights carry the GEMM kernel's bound (`max_abs_stored_b` 64) unchanged.
//!
//! [`QX8_GEMM_6X16C2__AVX2`]: super::QX8_GEMM_6X16C2__AVX2
//! [`QX8_GEMM_4X16C4_MADDUBS__AVX2`]: super::QX8_GEMM_4X16C4_MADDUBS__AVX2

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::gemm::{
    A_BLOCK_BYTES, A_BLOCK_K, Acc, KC, KC4, MR_EXACT, MR_FAST, NR, NV, exact_k_loop, flip_rows, maddubs_groups,
    store_acc, store_tile, widen_rows,
};
use crate::types::{IgemmArgs, Indirect};

/// The row pointers of tap `t`: rows at and past `m` repeat row `m − 1` (valid memory),
/// so the loops run all `MR` rows without a branch; their results are never stored.
///
/// # Safety
/// `args` satisfies the [`IgemmArgs`] contract and `t < args.taps`.
#[inline(always)]
unsafe fn tap_rows<const MR: usize>(args: &IgemmArgs, t: usize) -> [*const u8; MR] {
    // SAFETY: min(i, m − 1) < m and t < taps (contract).
    core::array::from_fn(|i| unsafe { args.tap_ptr(i.min(args.m - 1), t) })
}

/// Copies `len` bytes (even) from `src` to `dst` in 8-, 4- and 2-byte moves: no call to
/// `memcpy` for the few bytes of one tap of a few channels.
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes; `len` is even.
#[inline(always)]
unsafe fn copy_even(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    // SAFETY (each move): bytes i.. of the move lie below len.
    unsafe {
        while i + 8 <= len {
            dst.add(i).cast::<u64>().write_unaligned(src.add(i).cast::<u64>().read_unaligned());
            i += 8;
        }
        if i + 4 <= len {
            dst.add(i).cast::<u32>().write_unaligned(src.add(i).cast::<u32>().read_unaligned());
            i += 4;
        }
        if i + 2 <= len {
            dst.add(i).cast::<u16>().write_unaligned(src.add(i).cast::<u16>().read_unaligned());
        }
    }
}

/// The exact indirect tile over the first `NVA` (1 or 2) blocks of 8 columns.
///
/// Reads only: the `m·taps` indirection entries; per row `i < m` and tap `t`, the `kc`
/// bytes at [`IgemmArgs::tap_ptr`]`(i, t)`; the panel's `taps·kc/2·32` bytes; the
/// per-column tables and row sums as the GEMM tile's epilogue. Writes only the `m × n`
/// output tile.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`IgemmArgs`] contract with
/// `1 ≤ m ≤ 6`, `1 ≤ n ≤ 8·NVA`, `kc` a positive multiple of 2 and a panel in the
/// `{nr: 16, kr: 2}` format.
#[target_feature(enable = "avx2")]
unsafe fn exact_itile<const NVA: usize, const A_SIGNED: bool, const B_SIGNED: bool>(args: &IgemmArgs) {
    let mut acc: Acc<MR_EXACT> = [[_mm256_setzero_si256(); NV]; MR_EXACT];
    let mut buf = [MaybeUninit::<u8>::uninit(); KC / A_BLOCK_K * A_BLOCK_BYTES];
    let bufp = buf.as_mut_ptr().cast::<u8>();
    let mut bp = args.b;
    if args.kc.is_multiple_of(A_BLOCK_K) {
        // Each tap is whole blocks: widened straight from its rows, KC at a time.
        for t in 0..args.taps {
            // SAFETY: t < taps.
            let rows = unsafe { tap_rows::<MR_EXACT>(args, t) };
            let mut off = 0;
            while off < args.kc {
                let len = KC.min(args.kc - off);
                let src = rows.map(|p| p.wrapping_add(off));
                // As in the GEMM tile: a local copy the compiler keeps in registers.
                let mut c = acc;
                // SAFETY: rows r < m hold kc ≥ off + len bytes from their tap pointer;
                // buf holds KC/16 ≥ len/16 blocks; the panel holds the segment's len/2
                // pairs after bp.
                unsafe {
                    widen_rows::<A_SIGNED>(&src, args.m, len, bufp, None);
                    exact_k_loop::<MR_EXACT, NVA, B_SIGNED>(&mut c, bufp, bp, len / 2);
                    bp = bp.add(len / 2 * NR * 2);
                }
                acc = c;
                off += len;
            }
        }
    } else {
        // Taps that end inside a block (few channels): consecutive taps' bytes are first
        // copied into one raw row per tile row, KC at a time, then widened as whole
        // blocks — a tap per chunk would widen a zero-padded block per tap and run a
        // K loop of a few pairs.
        let mut raw = [[MaybeUninit::<u8>::uninit(); KC]; MR_EXACT];
        let raw_rows: [*const u8; MR_EXACT] = core::array::from_fn(|r| raw[r].as_ptr().cast());
        let (mut t, mut off) = (0, 0);
        // SAFETY: taps ≥ 1.
        let mut rows = unsafe { tap_rows::<MR_EXACT>(args, 0) };
        while t < args.taps {
            let mut filled = 0;
            while filled < KC && t < args.taps {
                let len = (args.kc - off).min(KC - filled);
                for (r, row) in rows.iter().enumerate().take(args.m) {
                    // SAFETY: row r < m holds kc ≥ off + len bytes; raw row r holds KC ≥
                    // filled + len.
                    unsafe { copy_even(row.add(off), raw[r].as_mut_ptr().add(filled).cast(), len) };
                }
                filled += len;
                off += len;
                if off == args.kc {
                    (t, off) = (t + 1, 0);
                    if t < args.taps {
                        // SAFETY: t < taps.
                        rows = unsafe { tap_rows::<MR_EXACT>(args, t) };
                    }
                }
            }
            let mut c = acc;
            // SAFETY: raw rows r < m hold `filled` bytes (written above); buf holds
            // KC/16 ≥ filled.div_ceil(16) blocks; the panel holds the chunk's filled/2
            // pairs (filled is even: kc, KC and every len are) after bp.
            unsafe {
                widen_rows::<A_SIGNED>(&raw_rows, args.m, filled, bufp, None);
                exact_k_loop::<MR_EXACT, NVA, B_SIGNED>(&mut c, bufp, bp, filled / 2);
                bp = bp.add(filled / 2 * NR * 2);
            }
            acc = c;
        }
    }
    let ga = args.epilogue_args();
    // SAFETY: the output side of `args` is a GemmArgs tile with m ≤ 6, n ≤ 8·NVA.
    unsafe { store_acc::<MR_EXACT, NVA>(&ga, acc) }
}

/// The `vpmaddubsw` indirect tile over the first `NVA` (1 or 2) blocks of 8 columns;
/// `A_FLIP` for i8 activations.
///
/// Reads only: the `m·taps` indirection entries; per row `i < m` and tap `t`, the `kc`
/// bytes at [`IgemmArgs::tap_ptr`]`(i, t)` (4-byte words inside them); the panel's
/// `taps·kc/4·64` bytes; the per-column tables and row sums as the GEMM tile's epilogue.
/// Writes only the `m × n` output tile. Exact when every stored weight has `|b| ≤ 64`.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`IgemmArgs`] contract with
/// `1 ≤ m ≤ MR`, `1 ≤ n ≤ 8·NVA`, `kc` a positive multiple of 4 and a panel in the
/// `{nr: 16, kr: 4}` format.
#[target_feature(enable = "avx2")]
unsafe fn maddubs_itile<const MR: usize, const NVA: usize, const A_FLIP: bool>(args: &IgemmArgs) {
    let mut acc: Acc<MR> = [[_mm256_setzero_si256(); NV]; MR];
    let mut buf = [[MaybeUninit::<u8>::uninit(); KC4]; MR];
    let flipped: [*const u8; MR] = core::array::from_fn(|r| buf[r].as_ptr().cast());
    let mut bp = args.b;
    for t in 0..args.taps {
        // SAFETY: t < taps.
        let rows = unsafe { tap_rows::<MR>(args, t) };
        let mut off = 0;
        while off < args.kc {
            // Unflipped rows are read in place, the whole tap at once.
            let len = if A_FLIP { KC4.min(args.kc - off) } else { args.kc - off };
            let src = if A_FLIP {
                // SAFETY: every row (rows past m repeat row m − 1) holds kc ≥ off + len
                // bytes; buf holds MR rows of KC4 ≥ len bytes.
                unsafe { flip_rows::<MR>(&rows, off, len, buf.as_mut_ptr().cast()) };
                flipped
            } else {
                rows.map(|p| p.wrapping_add(off))
            };
            let mut c = acc;
            // SAFETY: len is a multiple of 4 (kc and KC4 are): len/4 whole groups of
            // every source row (in place, or in the buffer written just above) and of
            // the panel after bp.
            bp = unsafe { maddubs_groups::<MR, NVA>(&mut c, &src, len / 4, bp) };
            acc = c;
            off += len;
        }
    }
    // SAFETY: the output side of `args` is a GemmArgs tile with m ≤ MR, n ≤ 8·NVA.
    unsafe { store_tile(&args.epilogue_args(), acc) }
}

/// Indirect entry of the exact kernel for one (A, B) signedness pair.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`IgemmArgs`] contract for a tile of at
/// most 6 × 16 with a `{nr: 16, kr: 2}` panel.
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_igemm_6x16c2__avx2<const A_SIGNED: bool, const B_SIGNED: bool>(args: &IgemmArgs) {
    // SAFETY: forwarded. As the GEMM entry: at most 8 columns, half the work.
    unsafe {
        if args.n <= 8 {
            exact_itile::<1, A_SIGNED, B_SIGNED>(args)
        } else {
            exact_itile::<NV, A_SIGNED, B_SIGNED>(args)
        }
    }
}

/// Indirect entry of the `vpmaddubsw` kernel; `A_FLIP` for i8 activations.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`IgemmArgs`] contract for a tile of at
/// most 4 × 16 with a `{nr: 16, kr: 4}` panel whose stored weights all satisfy
/// `|b| ≤ 64`.
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_igemm_4x16c4_maddubs__avx2<const A_FLIP: bool>(args: &IgemmArgs) {
    // SAFETY: forwarded. As the GEMM entry: at most 8 columns, half the work.
    unsafe {
        if args.n <= 8 {
            maddubs_itile::<MR_FAST, 1, A_FLIP>(args)
        } else {
            maddubs_itile::<MR_FAST, NV, A_FLIP>(args)
        }
    }
}

/// The indirect entries of `qx8_gemm_6x16c2__avx2`: all four u8/i8 combinations.
pub const INDIRECT_6X16C2: Indirect = Indirect {
    run: [
        [Some(qx8_igemm_6x16c2__avx2::<false, false>), Some(qx8_igemm_6x16c2__avx2::<false, true>)],
        [Some(qx8_igemm_6x16c2__avx2::<true, false>), Some(qx8_igemm_6x16c2__avx2::<true, true>)],
    ],
};

/// The indirect entries of `qx8_gemm_4x16c4_maddubs__avx2`: one per activation
/// signedness, both weight types (stored with the GEMM kernel's `b_offset`).
pub const INDIRECT_4X16C4_MADDUBS: Indirect = Indirect {
    run: [
        [Some(qx8_igemm_4x16c4_maddubs__avx2::<false>), Some(qx8_igemm_4x16c4_maddubs__avx2::<false>)],
        [Some(qx8_igemm_4x16c4_maddubs__avx2::<true>), Some(qx8_igemm_4x16c4_maddubs__avx2::<true>)],
    ],
};
