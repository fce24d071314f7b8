//! PWLQ dequantization kernels, AVX-512 F/BW/VL (the tier's instructions below VNNI).
//!
//! Both read one channel of the 4-bit PWLQ packed format (`qkern::quant::pwlq::PwlqPacked`):
//! per block of 64 weights a 32-byte value plane (byte `i` = nibble of weight `i` in bits
//! 0–3 and of weight `32 + i` in bits 4–7; the nibble is `sign·8 | q`) and a `u64` region
//! word (bit `i` = region of weight `i`). The 5-bit field is `region·16 | nibble`.
//!
//! Neither kernel does arithmetic on values: each output is `table[field]`, where the
//! caller built the table with the scalar definition (`dequantize_value` for f32, the
//! grid level for i8). That makes them bit-exact with the reference by construction —
//! the f32 operations are the reference's own, done once per field instead of per weight.

// Blocks index two parallel planes; an index loop says that best.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

/// Checks the plane lengths for `k` weights (the kernels' only preconditions besides the
/// CPU); a panic here is a caller bug, the safe wrapper validates first.
#[inline]
fn check(values: &[u8], regions: &[u64], k: usize) -> usize {
    let blocks = k.div_ceil(64);
    assert!(values.len() >= blocks * 32 && regions.len() >= blocks, "PWLQ planes shorter than K");
    blocks
}

/// 4-bit PWLQ codes of one channel → f32: `out[i] = lut[field(i)]` for `i < out.len()`
/// (`vpmovzxbd`, region bit OR-ed in under the region mask, `vpermt2ps` over the 32-entry
/// table, 16 weights per step). Reads `⌈K/64⌉` blocks of both planes (padding included),
/// writes exactly `out`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn pwlq4_dequant_f32_u64(values: &[u8], regions: &[u64], lut: &[f32; 32], out: &mut [f32]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // SAFETY: `lut` holds 32 floats.
    let (t_lo, t_hi) = unsafe { (_mm512_loadu_ps(lut.as_ptr()), _mm512_loadu_ps(lut.as_ptr().add(16))) };
    let nib = _mm256_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi32(16);
    let vp = values.as_ptr();
    let op = out.as_mut_ptr();
    for b in 0..blocks {
        // SAFETY: 32·b + 32 ≤ values.len() (checked above).
        let v = unsafe { _mm256_loadu_si256(vp.add(32 * b).cast()) };
        let lo = _mm256_and_si256(v, nib);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib);
        let r = regions[b];
        let groups = [
            _mm256_castsi256_si128(lo),
            _mm256_extracti128_si256::<1>(lo),
            _mm256_castsi256_si128(hi),
            _mm256_extracti128_si256::<1>(hi),
        ];
        let base = 64 * b;
        for (g, bytes) in groups.into_iter().enumerate() {
            let idx = _mm512_cvtepu8_epi32(bytes);
            let idx = _mm512_mask_or_epi32(idx, (r >> (16 * g)) as u16, idx, sixteen);
            let val = _mm512_permutex2var_ps(t_lo, idx, t_hi);
            let start = base + 16 * g;
            if start + 16 <= k {
                // SAFETY: start + 16 ≤ k = out.len().
                unsafe { _mm512_storeu_ps(op.add(start), val) };
            } else if start < k {
                let mask = ((1u32 << (k - start)) - 1) as u16;
                // SAFETY: the mask writes only lanes start..k.
                unsafe { _mm512_mask_storeu_ps(op.add(start), mask, val) };
            }
        }
    }
}

/// 4-bit PWLQ codes of one channel → i8 on a common integer grid: `out[i] =
/// table[field(i)]`, `table[0..16]` the centre levels and `table[16..32]` the tail levels
/// by nibble (`vpshufb` of both halves, `vpblendmb` under the region word — 64 weights per
/// step). Reads `⌈K/64⌉` blocks of both planes, writes exactly `out`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn pwlq4_dequant_i8_u64(values: &[u8], regions: &[u64], table: &[i8; 32], out: &mut [i8]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // SAFETY: `table` holds 32 bytes; each 16-byte half is broadcast to the four lanes.
    let (tc, tt) = unsafe {
        (
            _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast())),
            _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().add(16).cast())),
        )
    };
    let nib = _mm256_set1_epi8(0x0F);
    let vp = values.as_ptr();
    let op = out.as_mut_ptr();
    for b in 0..blocks {
        // SAFETY: 32·b + 32 ≤ values.len().
        let v = unsafe { _mm256_loadu_si256(vp.add(32 * b).cast()) };
        let lo = _mm256_and_si256(v, nib);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib);
        let idx = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let val = _mm512_mask_blend_epi8(regions[b], _mm512_shuffle_epi8(tc, idx), _mm512_shuffle_epi8(tt, idx));
        let start = 64 * b;
        if start + 64 <= k {
            // SAFETY: start + 64 ≤ out.len().
            unsafe { _mm512_storeu_si512(op.add(start).cast(), val) };
        } else {
            let mask = (1u64 << (k - start)) - 1;
            // SAFETY: the mask writes only bytes start..k.
            unsafe { _mm512_mask_storeu_epi8(op.add(start), mask, val) };
        }
    }
}

/// Fused exact-mode dot products of 4-bit PWLQ: for `R` activation rows `a[r]` (u8, each
/// at least `⌈K/64⌉·64` bytes — the caller zero-pads; padded code fields are zero) and
/// `NC` channels (`values[c]`, `regions[c]`: that channel's planes, `⌈K/64⌉` blocks),
/// returns `out[r][c]` = the raw sums `[Σ a·c, Σ a·t, Σ a·s]` (no zero point: the caller
/// subtracts `za·Σc` etc.). Each block of each channel is decoded once in registers —
/// `vpshufb` of the nibble through the signed-magnitude table (`±q`) and the sign table
/// (`±1`), zero-masked by the region word (centre: region 0; tail and sign: region 1) —
/// and used by all `R` rows: three `vpdpbusd` per row. `R·NC·3 ≤ 24` accumulators keep
/// everything in registers. Exact in i32 while `⌈K/64⌉·64·255·Q < 2³¹` (the caller
/// checks). Callers pad short row or channel groups by repeating an entry.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn pwlq4_dot3_u8<const R: usize, const NC: usize>(
    a: [&[u8]; R],
    values: [&[u8]; NC],
    regions: [&[u64]; NC],
) -> [[[i32; 3]; NC]; R] {
    let blocks = if NC == 0 { 0 } else { regions[0].len() };
    for r in a {
        assert!(r.len() >= blocks * 64);
    }
    for c in 0..NC {
        assert!(values[c].len() >= blocks * 32 && regions[c].len() >= blocks);
    }
    // Nibble `sign·8 | q` → `±q` and → `±1` (q = 0 with the sign bit only occurs in the
    // tail, where it is −(Q+1+0): t = 0, s = −1).
    let tq = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7));
    let ts = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1));
    let nib = _mm256_set1_epi8(0x0F);
    let mut acc = [[[_mm512_setzero_si512(); 3]; NC]; R];
    for b in 0..blocks {
        // SAFETY: 64·b + 64 ≤ a[r].len().
        let av: [__m512i; R] = core::array::from_fn(|r| unsafe { _mm512_loadu_si512(a[r].as_ptr().add(64 * b).cast()) });
        for c in 0..NC {
            // SAFETY: 32·b + 32 ≤ values[c].len().
            let v = unsafe { _mm256_loadu_si256(values[c].as_ptr().add(32 * b).cast()) };
            let lo = _mm256_and_si256(v, nib);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib);
            let idx = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let rg = regions[c][b];
            let wc = _mm512_maskz_shuffle_epi8(!rg, tq, idx);
            let wt = _mm512_maskz_shuffle_epi8(rg, tq, idx);
            let wsg = _mm512_maskz_shuffle_epi8(rg, ts, idx);
            for r in 0..R {
                acc[r][c][0] = _mm512_dpbusd_epi32(acc[r][c][0], av[r], wc);
                acc[r][c][1] = _mm512_dpbusd_epi32(acc[r][c][1], av[r], wt);
                acc[r][c][2] = _mm512_dpbusd_epi32(acc[r][c][2], av[r], wsg);
            }
        }
    }
    let mut out = [[[0i32; 3]; NC]; R];
    for r in 0..R {
        for c in 0..NC {
            for j in 0..3 {
                out[r][c][j] = _mm512_reduce_add_epi32(acc[r][c][j]);
            }
        }
    }
    out
}
