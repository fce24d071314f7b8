//! Indirect `vpdpbusd` zmm GEMM tiles ([`IgemmArgs`]): the convolution's A rows read in
//! place, tap by tap, through the indirection buffer, instead of being gathered into an
//! im2col workspace first.
//!
//! The K loop is the GEMM tile's ([`super::gemm`]), split at tap boundaries: per tap, the
//! `MR` row pointers are looked up once (a padding tap reads the shared row of activation
//! zero points), then `kc/4` K groups each do `MR` 4-byte broadcasts, `NU` loads of 64
//! packed weight bytes and `MR·NU` `vpdpbusd`. The packed weights and the epilogue (every
//! output stage) are the GEMM kernel's own, so the results are identical bit for bit.
//! `kc` is a multiple of 4 (contract), so every K group lies within one tap and no load
//! is partial.

use core::arch::x86_64::*;

use super::gemm::{dpbusd, epilogue, load_b, store_i32};
use crate::types::{IgemmArgs, OutputKind};

/// The indirect u8×s8 tile: `MR` rows × `16·NV` columns on the `[k/4][16·NV][4]` panel.
///
/// Reads only: the `m·taps` indirection entries; per row `i < m` and tap `t`, the `kc`
/// bytes at [`IgemmArgs::tap_ptr`]`(i, t)`; the panel's `taps·kc/4·64·NV` bytes (of each
/// K group, only the zmm columns that hold one of the `n` columns); the per-column tables
/// and row sums as [`super::gemm::gemm_tile`]. Writes only the `m × n` output tile. No
/// pointer needs any alignment.
///
/// # Safety
/// `args` satisfies the [`IgemmArgs`] contract with `1 ≤ args.m ≤ MR`,
/// `1 ≤ args.n ≤ 16·NV`, `args.kc` a positive multiple of 4; the CPU supports AVX-512
/// F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn igemm_tile<const MR: usize, const NV: usize, const A_FLIP: bool>(args: &IgemmArgs) {
    // Narrow tiles multiply only the zmm columns they store, as the GEMM tile does.
    // SAFETY (each arm): forwarded contract; n ≤ 16·NU, and NU ≤ NV by each guard.
    unsafe {
        let half = matches!(args.n % 16, 1..=8);
        match (args.n.div_ceil(16), half) {
            (1, false) if NV > 1 => tile::<MR, NV, 1, A_FLIP, false>(args),
            (1, true) if NV > 1 => tile::<MR, NV, 1, A_FLIP, true>(args),
            (2, false) if NV > 2 => tile::<MR, NV, 2, A_FLIP, false>(args),
            (2, true) if NV > 2 => tile::<MR, NV, 2, A_FLIP, true>(args),
            (_, false) => tile::<MR, NV, NV, A_FLIP, false>(args),
            (_, true) => tile::<MR, NV, NV, A_FLIP, true>(args),
        }
    }
}

/// The K loop over `NU ≤ NV` zmm columns (`HALF`: the last one as a ymm).
///
/// # Safety
/// As [`igemm_tile`], and `args.n ≤ 16·NU`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tile<const MR: usize, const NV: usize, const NU: usize, const A_FLIP: bool, const HALF: bool>(
    args: &IgemmArgs,
) {
    const { assert!(NU >= 1 && NU <= NV && MR >= 1) };
    let (m, taps, kc) = (args.m, args.taps, args.kc);
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    let mut bp = args.b;
    for t in 0..taps {
        // Rows past `m` read row m−1's taps (valid memory); their sums are never stored.
        let rows: [*const u8; MR] = core::array::from_fn(|i| {
            // SAFETY: min(i, m−1) < m and t < taps (contract).
            unsafe { args.tap_ptr(i.min(m - 1), t) }
        });
        let mut off = 0usize;
        while off < kc {
            let mut bv = [_mm512_setzero_si512(); NU];
            for (v, b) in bv.iter_mut().enumerate() {
                // SAFETY: K group (t·kc + off)/4 of the panel holds 64·NV bytes (contract).
                *b = unsafe { load_b::<HALF>(bp.add(64 * v), v + 1 == NU) };
            }
            for i in 0..MR {
                // SAFETY: each tap row holds kc ≥ off + 4 bytes (kc a multiple of 4).
                let x = unsafe { rows[i].add(off).cast::<i32>().read_unaligned() };
                let mut a = _mm512_set1_epi32(x);
                if A_FLIP {
                    a = _mm512_xor_si512(a, flip);
                }
                for v in 0..NU {
                    // SAFETY: this function has the CPU features.
                    acc[i][v] = unsafe { dpbusd::<HALF>(acc[i][v], a, bv[v], v + 1 == NU) };
                }
            }
            // Within the panel (or one past its end after the last group).
            bp = bp.wrapping_add(64 * NV);
            off += 4;
        }
    }
    let ga = args.epilogue_args();
    if args.out.kind == OutputKind::I32 {
        // As the GEMM tile: the i32 output straight from registers.
        // SAFETY: the output side of `args` is a GemmArgs tile; m ≤ MR, n ≤ 16·NU.
        unsafe { store_i32::<MR, NV, NU>(&ga, &acc) };
        return;
    }
    // As the GEMM tile: the epilogue receives the accumulators in a fresh array.
    let mut fin = core::mem::MaybeUninit::<[[__m512i; NV]; MR]>::uninit();
    let fp = fin.as_mut_ptr().cast::<__m512i>();
    for (i, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: element (i, v) of the MR × NV array `fin`, each written exactly once.
            unsafe { fp.add(i * NV + v).write(x) };
        }
    }
    // SAFETY: every element was written just above; the output side of `args` is a
    // GemmArgs tile.
    unsafe { epilogue::<MR, NV>(&ga, fin.assume_init_ref()) }
}
