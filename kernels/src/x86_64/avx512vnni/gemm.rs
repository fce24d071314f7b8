//! `vpdpbusd` zmm GEMM tiles: u8 activations × s8 packed weights → i32, on the
//! `[k/4][NR][4]` packed format (`c4`), with the output stage fused into the epilogue.
//!
//! One inner loop serves all four signedness pairs through the kernel descriptor's
//! offsets: i8 activations are flipped to u8 (`XOR 0x80`, i.e. `+128`) as they are
//! broadcast, and u8 weights are stored as i8 (`−128`) by the packer; the driver moves
//! the zero points, row sums and column terms to match (see `GemmUkernel::a_offset`).
//!
//! Per K group of 4 the tile does `MR` broadcasts of 4 activation bytes, `NV` loads of 64
//! packed weight bytes, and `MR·NV` `vpdpbusd` into `MR·NV` zmm accumulators, which
//! stay in registers for the whole K loop; the epilogue receives them once, through
//! memory, and finishes one row at a time.
//!
//! `vpdpbusd` accumulates with wrapping i32 adds (the `s` form would saturate), as the
//! contract asks; the only i16/u8 intermediate is inside the instruction, and it is exact.
//!
//! Every output stage is vectorised and bit-exact with `generic::gemm::output_value`:
//! F32 and the `Fp32` requantization in f32 lanes, the two fixed-point modes in i64
//! lanes (exact products, no wrap), evaluated as `reference::requant` defines them.

use core::arch::x86_64::*;

use crate::generic::gemm::output_value;
use crate::types::{GemmArgs, OutputKind, RequantMode};

/// Column mask of zmm `v` (columns `16v .. 16v+16`) for a tile of `n` columns.
#[inline]
pub(super) fn col_mask(n: usize, v: usize) -> __mmask16 {
    let lo = 16 * v;
    if n >= lo + 16 {
        0xffff
    } else if n > lo {
        ((1u32 << (n - lo)) - 1) as __mmask16
    } else {
        0
    }
}

/// The u8×s8 tile: `MR` rows × `16·NV` columns (`NV ≥ 2`: the narrow-tile paths
/// instantiate 1 and 2 zmm columns).
///
/// Reads only: `m` rows of `k` activation bytes from `a` (stride `lda`) — the last,
/// partial K group with a masked load, so not one byte past `k` — and the panel's
/// `k.div_ceil(4)·16·NV·4` bytes from `b` (of each K group, only the zmm columns that
/// hold one of the `n` columns); the per-column tables for the `n` columns
/// (`scale`/`bias_f32`/`qmult` only when the output stage uses them); `a_row_sum` for
/// `m` rows and `b_zero_point` for `n` columns when both are non-null. Writes only the
/// `m × n` output tile. No pointer needs any alignment.
///
/// # Safety
/// `args` satisfies the [`GemmArgs`] contract with `1 ≤ args.m ≤ MR`,
/// `1 ≤ args.n ≤ 16·NV`, `b` packed in the `[k/4][16·NV][4]` format; the CPU supports
/// AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm_tile<const MR: usize, const NV: usize, const A_FLIP: bool>(args: &GemmArgs) {
    // A narrow tile (the last panel of an N that is not a multiple of NR) multiplies only
    // the zmm columns it stores: the K loop's cost follows n, not NR.
    // SAFETY (each arm): forwarded contract; n ≤ 16·NU, and NU ≤ NV by each guard.
    unsafe {
        // A last zmm column holding at most 8 of the n columns multiplies as a ymm: on
        // cores that split zmm ops in two (Zen 4) or issue ymm `vpdpbusd` on two ports
        // (Intel), that halves its cost (n = 24: 1.5 instead of 2 zmm per row).
        let half = matches!(args.n % 16, 1..=8);
        match (args.n.div_ceil(16), half) {
            (1, false) if NV > 1 => rows::<MR, NV, 1, A_FLIP, false>(args),
            (1, true) if NV > 1 => rows::<MR, NV, 1, A_FLIP, true>(args),
            (2, false) if NV > 2 => rows::<MR, NV, 2, A_FLIP, false>(args),
            (2, true) if NV > 2 => rows::<MR, NV, 2, A_FLIP, true>(args),
            (_, false) => rows::<MR, NV, NV, A_FLIP, false>(args),
            (_, true) => rows::<MR, NV, NV, A_FLIP, true>(args),
        }
    }
}

/// Picks the row count the K loop computes: a short tile (GEMV, `m ≤ 4`) runs only
/// `R ≥ m` rows instead of all `MR` (rows past `m` would otherwise cost as much as real
/// ones), and splits K over `G` independent accumulator sets so that consecutive
/// `vpdpbusd` do not wait on each other's latency (with `m = 1` the full tile would have
/// only `NU` accumulators in flight).
///
/// # Safety
/// As [`gemm_tile`], and `args.n ≤ 16·NU`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn rows<const MR: usize, const NV: usize, const NU: usize, const A_FLIP: bool, const HALF: bool>(
    args: &GemmArgs,
) {
    // SAFETY (each arm): forwarded contract; m ≤ R in each arm (R ≤ MR by the guards).
    unsafe {
        match args.m {
            1 if MR > 1 => tile::<1, NV, NU, 4, A_FLIP, HALF>(args),
            2 if MR > 2 => tile::<2, NV, NU, 2, A_FLIP, HALF>(args),
            3 | 4 if MR > 4 => tile::<4, NV, NU, 1, A_FLIP, HALF>(args),
            _ => tile::<MR, NV, NU, 1, A_FLIP, HALF>(args),
        }
    }
}

/// The 64 packed bytes of one zmm column of a K group; with `HALF` and `last`, only
/// the first 32 (the 8 columns a half column multiplies), the rest zero.
///
/// # Safety
/// `p` is valid for 64 bytes of reads (32 with `HALF && last`); the CPU features hold
/// (caller, into which this is always inlined).
#[inline(always)]
pub(super) unsafe fn load_b<const HALF: bool>(p: *const u8, last: bool) -> __m512i {
    // SAFETY: forwarded.
    unsafe {
        if HALF && last {
            _mm512_zextsi256_si512(_mm256_loadu_si256(p.cast()))
        } else {
            _mm512_loadu_si512(p.cast())
        }
    }
}

/// `vpdpbusd` of one zmm column; with `HALF` and `last`, of its low 8 lanes only, as a
/// ymm (the upper lanes of the result are zero and never stored).
///
/// # Safety
/// The CPU features hold (caller, into which this is always inlined).
#[inline(always)]
pub(super) unsafe fn dpbusd<const HALF: bool>(acc: __m512i, a: __m512i, b: __m512i, last: bool) -> __m512i {
    // SAFETY: register-only intrinsics; the features are the caller's.
    unsafe {
        if HALF && last {
            _mm512_zextsi256_si512(_mm256_dpbusd_epi32(
                _mm512_castsi512_si256(acc),
                _mm512_castsi512_si256(a),
                _mm512_castsi512_si256(b),
            ))
        } else {
            _mm512_dpbusd_epi32(acc, a, b)
        }
    }
}

/// [`gemm_tile`] computing `R` rows (`m ≤ R`) and only the first `NU` of the panel's `NV`
/// zmm columns (the others stay zero and are not stored: `n ≤ 16·NU`), with `G`
/// accumulator sets: set `g` takes the K groups `≡ g (mod G)` of the main loop, and the
/// sets are summed (wrapping, as `vpdpbusd` itself adds) before the epilogue, so the
/// result is the same i32 modulo 2^32.
///
/// # Safety
/// As [`gemm_tile`], and `args.m ≤ R`, `args.n ≤ 16·NU`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) unsafe fn tile<
    const R: usize,
    const NV: usize,
    const NU: usize,
    const G: usize,
    const A_FLIP: bool,
    const HALF: bool,
>(
    args: &GemmArgs,
) {
    const { assert!(NU >= 1 && NU <= NV && G >= 1 && R >= 1) };
    let (m, k) = (args.m, args.k);
    // Rows past `m` re-read row m−1 (always valid memory) instead of branching in the
    // loop; their accumulators are never stored.
    let mut rows = [args.a; R];
    for i in 1..R {
        rows[i] = if i < m {
            args.a.wrapping_add(i * args.lda)
        } else {
            rows[i - 1]
        };
    }
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let mut accs = [[[_mm512_setzero_si512(); NV]; R]; G];
    let mut bp = args.b;
    let mut off = 0usize;
    // One K group (4 bytes of each row, 64·NV packed bytes) into accumulator set `acc`.
    // Its reads are sound only for a full group of the K range (`off + 4 ≤ k`, `bp` at
    // group `off/4` of the panel): each call below says why that holds.
    let group = |acc: &mut [[__m512i; NV]; R], bp: *const u8, off: usize| {
        let mut bv = [_mm512_setzero_si512(); NU];
        for (v, b) in bv.iter_mut().enumerate() {
            // SAFETY: group `off/4` of the panel holds 64·NV bytes (contract).
            *b = unsafe { load_b::<HALF>(bp.add(64 * v), v + 1 == NU) };
        }
        for i in 0..R {
            // SAFETY: row i (or row m−1 standing in for it) has k ≥ off + 4 bytes.
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
    };
    let groups = k / 4;
    for _ in 0..groups / G {
        for (g, acc) in accs.iter_mut().enumerate() {
            // Full groups: groups off/4 .. off/4 + G all lie within `groups`.
            group(acc, bp.wrapping_add(64 * NV * g), off + 4 * g);
        }
        // Within the panel (or one past its end after the last group).
        bp = bp.wrapping_add(64 * NV * G);
        off += 4 * G;
    }
    let (acc, rest) = accs.split_first_mut().expect("G ≥ 1");
    for _ in 0..groups % G {
        // Full groups: the `groups % G` left after the main loop.
        group(acc, bp, off);
        bp = bp.wrapping_add(64 * NV);
        off += 4;
    }
    for r in rest.iter() {
        for i in 0..R {
            for v in 0..NU {
                acc[i][v] = _mm512_add_epi32(acc[i][v], r[i][v]);
            }
        }
    }
    let rem = k % 4;
    if rem != 0 {
        // The last group: only `rem` bytes of each row exist; the masked load reads no
        // more (and faults on none of the rest). The packer zero-padded B's group, so the
        // missing lanes (0, or 0x80 once flipped) multiply zeros.
        let amask = ((1u32 << rem) - 1) as __mmask16;
        let mut bv = [_mm512_setzero_si512(); NU];
        for (v, b) in bv.iter_mut().enumerate() {
            // SAFETY: the last group of the panel holds 64·NV bytes (contract).
            *b = unsafe { load_b::<HALF>(bp.add(64 * v), v + 1 == NU) };
        }
        for i in 0..R {
            // SAFETY: row i has bytes off..off+rem (k = off + rem); the rest are masked.
            let x = unsafe { _mm_maskz_loadu_epi8(amask, rows[i].add(off).cast()) };
            let mut a = _mm512_broadcastd_epi32(x);
            if A_FLIP {
                a = _mm512_xor_si512(a, flip);
            }
            for v in 0..NU {
                // SAFETY: this function has the CPU features.
                acc[i][v] = unsafe { dpbusd::<HALF>(acc[i][v], a, bv[v], v + 1 == NU) };
            }
        }
    }
    if args.out.kind == OutputKind::I32 {
        // The i32 output finishes here, with the accumulators still in registers: every
        // index below is a compile-time constant (the runtime `m` only guards stores),
        // so LLVM need not spill them. On short K (pointwise convolutions, K = 64) the
        // round trip through the epilogue's array cost as much as the stores themselves.
        // SAFETY: forwarded contract; m ≤ R, n ≤ 16·NU.
        unsafe { store_i32::<R, NV, NU>(args, acc) };
        return;
    }
    // The epilogue is a separate function: inlined here, LLVM keeps the accumulators in
    // memory throughout the K loop (the epilogue indexes them by the runtime `m`). It
    // receives them in a fresh, uninitialised array written once here: handing it `accs`
    // itself made LLVM zero that array in memory on entry, a measurable cost on short K.
    let mut fin = core::mem::MaybeUninit::<[[__m512i; NV]; R]>::uninit();
    let fp = fin.as_mut_ptr().cast::<__m512i>();
    for (i, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: element (i, v) of the R × NV array `fin`, each written exactly once.
            unsafe { fp.add(i * NV + v).write(x) };
        }
    }
    // SAFETY: every element was written just above; forwarded contract.
    unsafe { epilogue::<R, NV>(args, fin.assume_init_ref()) }
}

/// The I32 output stage of [`tile`]: adds the column and row terms (as [`epilogue`]) and
/// stores the `m × n` tile; the columns past `16·NU` hold nothing to store.
///
/// Always inlined into [`tile`] (hence no `#[target_feature]`, which forbids that: the
/// features come from the caller), so that the accumulators stay in registers.
///
/// # Safety
/// As [`gemm_tile`], and `args.m ≤ R`, `args.n ≤ 16·NU`; called only from a function
/// compiled with AVX-512 F/BW/VL/VNNI enabled.
#[inline(always)]
// Index loops over the NU column vectors address several parallel arrays at once.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn store_i32<const R: usize, const NV: usize, const NU: usize>(
    args: &GemmArgs,
    acc: &[[__m512i; NV]; R],
) {
    let (m, n) = (args.m, args.n);
    let masks: [__mmask16; NU] = core::array::from_fn(|v| col_mask(n, v));
    // SAFETY: the CPU features hold (caller). Memory: col_offset and b_zero_point (when
    // non-null) have n entries, a_row_sum (when non-null) m; row i < m of the tile holds
    // n i32 from c + i·ldc elements (contract). Masked-off lanes are neither read nor
    // written, so the wrapping addresses of fully masked vectors are never touched.
    unsafe {
        let mut colo = [_mm512_setzero_si512(); NU];
        for v in 0..NU {
            colo[v] = _mm512_maskz_loadu_epi32(masks[v], args.out.col_offset.wrapping_add(16 * v));
        }
        let c0 = args.c.cast::<i32>();
        if args.b_zero_point.is_null() || args.a_row_sum.is_null() {
            for i in 0..R {
                if i < m {
                    let c = c0.wrapping_add(i * args.ldc);
                    for v in 0..NU {
                        let r = _mm512_add_epi32(acc[i][v], colo[v]);
                        _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], r);
                    }
                }
            }
        } else {
            let mut zb = [_mm512_setzero_si512(); NU];
            for v in 0..NU {
                zb[v] = _mm512_maskz_loadu_epi32(masks[v], args.b_zero_point.wrapping_add(16 * v));
            }
            for i in 0..R {
                if i < m {
                    let rs = _mm512_set1_epi32(*args.a_row_sum.add(i));
                    let c = c0.wrapping_add(i * args.ldc);
                    for v in 0..NU {
                        let r = _mm512_sub_epi32(
                            _mm512_add_epi32(acc[i][v], colo[v]),
                            _mm512_mullo_epi32(zb[v], rs),
                        );
                        _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], r);
                    }
                }
            }
        }
    }
}

/// Adds the column and row terms and runs the output stage on the `m × n` tile. Masked
/// loads and stores touch only columns < n; their addresses are formed with
/// `wrapping_add` because a fully masked vector may lie past the end of a table.
///
/// # Safety
/// As [`gemm_tile`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)]
// Index loops over the NV column vectors address several parallel arrays at once.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn epilogue<const MR: usize, const NV: usize>(args: &GemmArgs, acc: &[[__m512i; NV]; MR]) {
    let (m, n) = (args.m, args.n);
    let out = &args.out;
    let masks: [__mmask16; NV] = core::array::from_fn(|v| col_mask(n, v));

    // Row i of the accumulators plus col_offset[j] − b_zero_point[j]·a_row_sum[i],
    // wrapping. Each row is loaded once and finished in registers.
    let mut colo = [_mm512_setzero_si512(); NV];
    for v in 0..NV {
        // SAFETY: col_offset has n entries; masked-off lanes are not read.
        colo[v] =
            unsafe { _mm512_maskz_loadu_epi32(masks[v], out.col_offset.wrapping_add(16 * v)) };
    }
    let with_zb = !args.b_zero_point.is_null() && !args.a_row_sum.is_null();
    let mut zb = [_mm512_setzero_si512(); NV];
    if with_zb {
        for v in 0..NV {
            // SAFETY: b_zero_point, non-null, has n entries.
            zb[v] = unsafe {
                _mm512_maskz_loadu_epi32(masks[v], args.b_zero_point.wrapping_add(16 * v))
            };
        }
    }
    let row_acc = |i: usize| -> [__m512i; NV] {
        let mut r = acc[i];
        let rs = if with_zb {
            // SAFETY: a_row_sum, non-null, has m > i entries.
            _mm512_set1_epi32(unsafe { *args.a_row_sum.add(i) })
        } else {
            _mm512_setzero_si512()
        };
        for v in 0..NV {
            r[v] = _mm512_add_epi32(r[v], colo[v]);
            if with_zb {
                r[v] = _mm512_sub_epi32(r[v], _mm512_mullo_epi32(zb[v], rs));
            }
        }
        r
    };
    let m = m.min(MR);

    match (out.kind, out.mode) {
        (OutputKind::I32, _) => {
            for i in 0..m {
                let row = row_acc(i);
                let c = args.c.cast::<i32>().wrapping_add(i * args.ldc);
                for v in 0..NV {
                    // SAFETY: row i of the tile holds n i32 from c + i·ldc elements
                    // (contract); masked-off columns are not written.
                    unsafe { _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], row[v]) };
                }
            }
        }
        (OutputKind::F32, _) => {
            let mut scale = [_mm512_setzero_ps(); NV];
            let mut bias = [_mm512_setzero_ps(); NV];
            for v in 0..NV {
                // SAFETY: scale has n entries for F32; bias_f32 too when non-null.
                unsafe {
                    scale[v] = _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(16 * v));
                    if !out.bias_f32.is_null() {
                        bias[v] =
                            _mm512_maskz_loadu_ps(masks[v], out.bias_f32.wrapping_add(16 * v));
                    }
                }
            }
            for i in 0..m {
                let row = row_acc(i);
                let c = args.c.cast::<f32>().wrapping_add(i * args.ldc);
                for v in 0..NV {
                    // `acc as f32 * s + b` exactly as the reference: a rounded multiply,
                    // then a rounded add (no FMA); `+ 0.0` without a bias, as it does.
                    let y =
                        _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(row[v]), scale[v]), bias[v]);
                    // SAFETY: row i of the tile holds n f32 from c + i·ldc elements
                    // (contract); masked-off columns are not written.
                    unsafe { _mm512_mask_storeu_ps(c.wrapping_add(16 * v), masks[v], y) };
                }
            }
        }
        (OutputKind::U8 | OutputKind::I8, mode) => {
            let zp = out.out_zero_point as i64;
            let (lo, hi) = (out.qmin as i64 - zp, out.qmax as i64 - zp);
            // Integers up to 2^24 are exact in f32 (the Fp32 clamp below needs that).
            const EXACT: i64 = 1 << 24;
            if out.qmin > out.qmax || (mode == RequantMode::Fp32 && !(-EXACT <= lo && hi <= EXACT))
            {
                // Outside the contract's clamp bounds (an output-type zero point and
                // qmin ≤ qmax): the scalar reference, element by element, whatever it does.
                let mut lanes = [0i32; 16];
                for i in 0..m {
                    let row = row_acc(i);
                    let c = args.c.wrapping_add(i * args.ldc);
                    for v in 0..NV {
                        // SAFETY: `lanes` holds 16 i32.
                        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), row[v]) };
                        for (jj, &a) in lanes.iter().enumerate().take(n.saturating_sub(16 * v)) {
                            let j = 16 * v + jj;
                            // SAFETY: `output_value` reads only the tables this stage
                            // uses, at column j < n; (i, j) lies in the output tile.
                            unsafe { c.add(j).write(output_value(a, j, out) as u8) };
                        }
                    }
                }
                return;
            }
            match mode {
                RequantMode::Fp32 => {
                    // The reference: clamp(sat_i64(round_half_even(acc·s)) + zp, qmin, qmax)
                    // = zp + clamp(round_half_even(acc·s), qmin − zp, qmax − zp), NaN → 0.
                    // Those bounds are small integers, so the clamp can run on the float
                    // before the conversion (rounding is monotone and keeps integers): the
                    // conversion never sees an out-of-range value.
                    let lo_f = _mm512_set1_ps(lo as f32);
                    let hi_f = _mm512_set1_ps(hi as f32);
                    let zpv = _mm512_set1_epi32(out.out_zero_point);
                    let mut scale = [_mm512_setzero_ps(); NV];
                    for v in 0..NV {
                        // SAFETY: scale has n entries in Fp32 mode.
                        scale[v] = unsafe {
                            _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(16 * v))
                        };
                    }
                    // A finite scale times a finite accumulator is never NaN (at most
                    // ±inf, which the clamp handles): the NaN fix-up is needed only when
                    // some scale is NaN or infinite (`s − s` is then NaN).
                    let all_finite = scale
                        .iter()
                        .all(|&s| _mm512_cmp_ps_mask::<_CMP_ORD_Q>(_mm512_sub_ps(s, s), s) == 0xffff);
                    for i in 0..m {
                        let row = row_acc(i);
                        let c = args.c.wrapping_add(i * args.ldc);
                        for v in 0..NV {
                            let x = _mm512_mul_ps(_mm512_cvtepi32_ps(row[v]), scale[v]);
                            // NaN → 0 (the reference's `as i64` does that), then clamp.
                            let x = if all_finite {
                                x
                            } else {
                                _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), x)
                            };
                            let x = _mm512_min_ps(_mm512_max_ps(x, lo_f), hi_f);
                            let q = _mm512_cvt_roundps_epi32::<
                                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                            >(x);
                            // In [qmin, qmax] ⊂ [−128, 255]: the low byte is the u8/i8 pattern.
                            let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, zpv));
                            // SAFETY: row i of the tile holds n bytes from c + i·ldc
                            // (contract); masked-off columns are not written.
                            unsafe {
                                _mm_mask_storeu_epi8(c.wrapping_add(16 * v).cast(), masks[v], bytes)
                            };
                        }
                    }
                }
                fixed => {
                    let single = fixed == RequantMode::SingleRounding;
                    let bounds = Bounds {
                        zp: _mm512_set1_epi64(zp),
                        qmin: _mm512_set1_epi64(out.qmin as i64),
                        qmax: _mm512_set1_epi64(out.qmax as i64),
                    };
                    // Per-column parameters, columns 16v..16v+8 and 16v+8..16v+16.
                    let mut cols = [[FixedCols::double(_mm512_setzero_si512()); 2]; NV];
                    let mut any_shl = false;
                    for v in 0..NV {
                        for h in 0..2 {
                            let m8 = (masks[v] >> (8 * h)) as __mmask8;
                            // SAFETY: qmult has n entries in the fixed-point modes; each
                            // 8-byte {multiplier, shift} is one i64 lane; masked-off
                            // lanes are not read.
                            let q = unsafe {
                                _mm512_maskz_loadu_epi64(
                                    m8,
                                    out.qmult.wrapping_add(16 * v + 8 * h).cast(),
                                )
                            };
                            cols[v][h] = if single {
                                FixedCols::single(q)
                            } else {
                                FixedCols::double(q)
                            };
                            any_shl |= cols[v][h].shl != 0;
                        }
                    }
                    for i in 0..m {
                        let row = row_acc(i);
                        let c = args.c.wrapping_add(i * args.ldc);
                        for v in 0..NV {
                            let a_lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(row[v]));
                            let a_hi =
                                _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(row[v]));
                            let (q_lo, q_hi) = if single {
                                (
                                    requant_single(a_lo, &cols[v][0], any_shl, &bounds),
                                    requant_single(a_hi, &cols[v][1], any_shl, &bounds),
                                )
                            } else {
                                (
                                    requant_double(a_lo, &cols[v][0], any_shl, &bounds),
                                    requant_double(a_hi, &cols[v][1], any_shl, &bounds),
                                )
                            };
                            // In [qmin, qmax]: the low byte of each i64 is the u8/i8 pattern.
                            let bytes = _mm_unpacklo_epi64(
                                _mm512_cvtepi64_epi8(q_lo),
                                _mm512_cvtepi64_epi8(q_hi),
                            );
                            // SAFETY: row i of the tile holds n bytes from c + i·ldc
                            // (contract); masked-off columns are not written.
                            unsafe {
                                _mm_mask_storeu_epi8(c.wrapping_add(16 * v).cast(), masks[v], bytes)
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Output zero point and clamp bounds, in i64 lanes.
pub(crate) struct Bounds {
    pub(crate) zp: __m512i,
    pub(crate) qmin: __m512i,
    pub(crate) qmax: __m512i,
}

/// The fixed-point parameters of 8 columns, in i64 lanes, derived once per tile from
/// their `QuantizedMultiplier {multiplier, shift}` (one i64 lane each).
///
/// Both modes start with `x = round_half_up(acc·M / 2^t)` on the exact product
/// (`|acc·M| ≤ 2^62`): TfliteDoubleRounding's `SaturatingRoundingDoublingHighMul(acc·2^left,
/// M)` is `floor((acc·M·2^left + 2^30) / 2^31)`, i.e. that with `t = 31 − left`;
/// SingleRounding is that with `t = 31 − shift`. Where `t ≤ 0` it is an exact left shift
/// by `−t`. TfliteDoubleRounding then applies `RoundingDivideByPOT(x, right)`.
#[derive(Clone, Copy)]
pub(crate) struct FixedCols {
    /// The multiplier in the low 32 bits (what `vpmuldq` reads).
    mult: __m512i,
    /// The rounding right shift `t` (a count ≥ 64 acts as 64: `vpsravq` fills with the
    /// sign, which gives the exact 0).
    t: __m512i,
    /// Lanes with `t ≤ 0`: an exact left shift by `−t` instead.
    pub(crate) shl: __mmask8,
    /// `max(−t, 0)`.
    s: __m512i,
    /// `2^61 >> s`: the largest `|product|` whose left shift stays within `2^61`.
    lim: __m512i,
    /// TfliteDoubleRounding: `min(max(−shift, 0), 62)` (a larger exponent gives 0 as 62
    /// does, since then `|x| ≤ 2^31`); 0 for SingleRounding.
    right: __m512i,
    /// `2^right − 1`, for the ties-away rounding.
    rmask: __m512i,
    /// `rmask >> 1`.
    rhalf: __m512i,
}

impl FixedCols {
    /// From the multiplier lanes and the rounding shift `t` (i64 lanes) and `right`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn new(q: __m512i, t: __m512i, right: __m512i) -> FixedCols {
        let zero = _mm512_setzero_si512();
        let one = _mm512_set1_epi64(1);
        let s = _mm512_max_epi64(_mm512_sub_epi64(zero, t), zero);
        let rmask = _mm512_sub_epi64(_mm512_sllv_epi64(one, right), one);
        FixedCols {
            mult: q,
            t,
            shl: _mm512_cmple_epi64_mask(t, zero),
            s,
            // Logical shift: counts ≥ 64 give 0, so any nonzero product saturates.
            lim: _mm512_srlv_epi64(_mm512_set1_epi64(1 << 61), s),
            right,
            rmask,
            rhalf: _mm512_srli_epi64::<1>(rmask),
        }
    }

    /// TfliteDoubleRounding: `t = 31 − max(shift, 0)`, `right = min(max(−shift, 0), 62)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) fn double(q: __m512i) -> FixedCols {
        let zero = _mm512_setzero_si512();
        let shift = _mm512_srai_epi64::<32>(q);
        let t = _mm512_sub_epi64(_mm512_set1_epi64(31), _mm512_max_epi64(shift, zero));
        let right = _mm512_min_epi64(_mm512_max_epi64(_mm512_sub_epi64(zero, shift), zero), _mm512_set1_epi64(62));
        FixedCols::new(q, t, right)
    }

    /// SingleRounding: `t = 31 − shift`, no second rounding.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) fn single(q: __m512i) -> FixedCols {
        let shift = _mm512_srai_epi64::<32>(q);
        let t = _mm512_sub_epi64(_mm512_set1_epi64(31), shift);
        FixedCols::new(q, t, _mm512_setzero_si512())
    }
}

/// `round_half_up(acc·M / 2^t)` for 8 i32 accumulators (sign-extended to i64 lanes),
/// exact: `(p >> t) + bit t−1 of p` (no overflow, unlike adding `2^(t−1)` first). Lanes
/// with `t ≤ 0` (only when `any_shl`) take `p << −t`, or `±2^61` where that would pass
/// `2^61` — beyond any clamp range, with the product's sign, as the reference's exact
/// arithmetic gives.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn scale_fixed(a: __m512i, c: &FixedCols, any_shl: bool) -> __m512i {
    let p = _mm512_mul_epi32(a, c.mult);
    let one = _mm512_set1_epi64(1);
    let bit = _mm512_and_si512(_mm512_srav_epi64(p, _mm512_sub_epi64(c.t, one)), one);
    let x = _mm512_add_epi64(_mm512_srav_epi64(p, c.t), bit);
    if !any_shl {
        return x;
    }
    let zero = _mm512_setzero_si512();
    let ovf = c.shl & (_mm512_cmpgt_epi64_mask(p, c.lim) | _mm512_cmplt_epi64_mask(p, _mm512_sub_epi64(zero, c.lim)));
    let big = _mm512_mask_mov_epi64(_mm512_set1_epi64(1 << 61), _mm512_cmplt_epi64_mask(p, zero), _mm512_set1_epi64(-(1 << 61)));
    let shifted = _mm512_mask_mov_epi64(_mm512_sllv_epi64(p, c.s), ovf, big);
    _mm512_mask_mov_epi64(x, c.shl, shifted)
}

/// `+ zp`, clamped to `[qmin, qmax]` (no i64 overflow: `|x| ≤ 2^62`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn finish(x: __m512i, b: &Bounds) -> __m512i {
    _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(x, b.zp), b.qmin), b.qmax)
}

/// TfliteDoubleRounding on 8 accumulators, exactly as
/// `reference::requant::requantize_fixed`: `high` as [`scale_fixed`], then gemmlowp's
/// `RoundingDivideByPOT(high, right)` (ties away from zero), `+ zp`, clamp.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) fn requant_double(a: __m512i, c: &FixedCols, any_shl: bool, b: &Bounds) -> __m512i {
    let high = scale_fixed(a, c, any_shl);
    // right > 0 only where shift < 0, i.e. t = 31 and |high| ≤ 2^31.
    let neg = _mm512_srai_epi64::<63>(high);
    let remainder = _mm512_and_si512(high, c.rmask);
    let threshold = _mm512_sub_epi64(c.rhalf, neg);
    let q = _mm512_srav_epi64(high, c.right);
    let q = _mm512_mask_sub_epi64(q, _mm512_cmpgt_epi64_mask(remainder, threshold), q, _mm512_set1_epi64(-1));
    finish(q, b)
}

/// SingleRounding on 8 accumulators, exactly as `reference::requant::requantize_fixed`:
/// [`scale_fixed`] with `t = 31 − shift`, `+ zp`, clamp.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) fn requant_single(a: __m512i, c: &FixedCols, any_shl: bool, b: &Bounds) -> __m512i {
    finish(scale_fixed(a, c, any_shl), b)
}
