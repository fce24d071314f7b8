//! GEMV tiles (`m ≤ 4` rows) on the GEMM kernels' `[k/4][32][4]` packed format.
//!
//! A GEMV streams every weight byte once per call, so it is bound by the read
//! bandwidth of wherever the weights live (L3 or DRAM), not by `vpdpbusd`: per 64 weight
//! bytes it has `m` multiply-adds to do. What matters is that the K loop (a) computes
//! only the `m` rows that exist — `m = 3` as 3 rows, not as the GEMM tile's 4 (on Zen 4
//! four rows are already `vpdpbusd`-bound at ~59 GB/s of weights, three are not), and
//! (b) keeps 8 or more independent accumulators in flight by splitting K over `G`
//! accumulator sets (unrolled loops, many loads in flight), and (c) reads the panel strictly
//! in order. The driver walks the panels in order too (they are adjacent), so a call is
//! one sequential stream per thread, which the hardware prefetchers follow.
//!
//! Software prefetch was measured and is not used: on a plain read stream (4 KiB
//! pages) `prefetcht0/t1/t2/nta` 1–32 KiB ahead was never faster than the hardware
//! prefetchers alone on this Zen 4 host, at 16, 45 and 256 MiB (up to 30 % slower at
//! short distances); on huge pages it cost 10 % at 16 MiB and gained 0–10 % at 43 MiB;
//! inside this K loop (`prefetcht1` 4 KiB ahead, every line) dec4096 lost 10 %
//! (73 → 66 GB/s) and dec11008 gained nothing (44 → 44 GB/s), interleaved runs.
//!
//! What does matter is the page size of the packed weights: `PackedWeights` asks for
//! transparent huge pages (see the driver's `advise_huge_pages`), which doubled the
//! rate of a stream past the L3 here.

use super::gemm::tile;
use crate::types::GemmArgs;

/// One GEMV tile: `m ≤ 4` rows × `n ≤ 32` columns over a `[k/4][32][4]` panel,
/// computing exactly `m` rows.
///
/// Reads and writes exactly what [`super::gemm::gemm_tile`] does for the same
/// arguments (`MR = 4`, `NV = 2`): `m` rows of `k` activation bytes, the panel's
/// `k.div_ceil(4)·128` bytes (only the zmm columns holding one of the `n` columns), the
/// per-column tables for `n` columns, and the `m × n` output tile. No alignment needed.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`] contract with `1 ≤ args.m ≤ 4`, `1 ≤ args.n ≤ 32`,
/// `b` packed in the `[k/4][32][4]` format; the CPU supports AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv_tile<const A_FLIP: bool>(args: &GemmArgs) {
    // SAFETY (each arm): forwarded contract; n ≤ 16·NU (NU = 1 for n ≤ 16, else 2),
    // m ≤ R, and NV = 2 is the panel's width.
    unsafe {
        match (args.n.div_ceil(16), matches!(args.n % 16, 1..=8)) {
            (1, false) => rows::<1, A_FLIP, false>(args),
            (1, true) => rows::<1, A_FLIP, true>(args),
            (_, false) => rows::<2, A_FLIP, false>(args),
            (_, true) => rows::<2, A_FLIP, true>(args),
        }
    }
}

/// Picks `R = m` and the accumulator sets `G`: 8 accumulators for `m = 1` and `m = 2`
/// (the same K loops as the GEMM tile's short-row paths), 24 for `m = 3`, 16 for
/// `m = 4` (within the 32 zmm registers with the weight and broadcast vectors).
///
/// Measured (interleaved runs, 16 MiB of weights in L3, against the read probe on huge
/// pages, ~80 GB/s): `m = 1` with `G = 4` streamed 72–76 GB/s and with `G = 8` 69–75,
/// `m = 2` with `G = 2` 62–67 and with `G = 4` 55–65: no gain from more sets, so the
/// shorter loops stay. `m = 3` as 3 rows instead of the GEMM tile's 4 went from ~52 to
/// ~63 GB/s (312 → 380 GOPS); `m = 4` with `G = 2` 400 → 420 GOPS over `G = 1`. `m = 4`
/// is bound by `vpdpbusd` itself (4 per 64 weight bytes: ~59 GB/s at this host's
/// ~470 GOPS), `m = 3` nearly (~79 GB/s).
///
/// # Safety
/// As [`gemv_tile`], and `args.n ≤ 16·NU`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn rows<const NU: usize, const A_FLIP: bool, const HALF: bool>(args: &GemmArgs) {
    // SAFETY (each arm): forwarded contract with m ≤ R.
    unsafe {
        match args.m {
            1 => tile::<1, 2, NU, 4, A_FLIP, HALF>(args),
            2 => tile::<2, 2, NU, 2, A_FLIP, HALF>(args),
            3 => tile::<3, 2, NU, 4, A_FLIP, HALF>(args),
            _ => tile::<4, 2, NU, 2, A_FLIP, HALF>(args),
        }
    }
}
