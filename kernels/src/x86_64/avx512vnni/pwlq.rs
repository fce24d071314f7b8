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

/// Nibble `sign·8 | q` → `±q` (the fused dot kernels' signed-magnitude table; q = 0 with
/// the sign bit only occurs in the tail, where it is −(Q+1+0): t = 0, s = −1).
pub(crate) const DOT3_TQ: [i8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7];
/// Nibble `sign·8 | q` → `±1` (the sign table).
pub(crate) const DOT3_TS: [i8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1];

/// The block count of the fused dot kernels' planes (`⌈K/64⌉`, from the first channel's
/// region plane), after checking every row and plane holds that many blocks.
pub(crate) fn dot3_blocks<const R: usize, const NC: usize>(a: &[&[u8]; R], values: &[&[u8]; NC], regions: &[&[u64]; NC]) -> usize {
    let blocks = if NC == 0 { 0 } else { regions[0].len() };
    for r in a {
        assert!(r.len() >= blocks * 64);
    }
    for c in 0..NC {
        assert!(values[c].len() >= blocks * 32 && regions[c].len() >= blocks);
    }
    blocks
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
    let blocks = dot3_blocks(&a, &values, &regions);
    // SAFETY: 16 bytes each.
    let (tq, ts) = unsafe {
        (_mm512_broadcast_i32x4(_mm_loadu_si128(DOT3_TQ.as_ptr().cast())), _mm512_broadcast_i32x4(_mm_loadu_si128(DOT3_TS.as_ptr().cast())))
    };
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

/// Columns per panel of [`pwlq_dot3_gemm_8x16c4`]'s packed weights.
pub const DOT3_PANEL_NR: usize = 16;

/// Bytes of one K step (4 weights of each of the 16 columns) of a panel.
pub const DOT3_STEP_BYTES: usize = 64;

/// Exact-mode PWLQ GEMM microkernel, `qs8_pwlq_dot3_gemm_8x16c4__avx512vnni`: `R ≤ 8`
/// activation rows × one panel of 16 channels of 4-bit PWLQ, returning the raw sums
/// `out[r][j][col] = Σ_k a[r][k] · plane_j[k][col]` for the planes `j` = 0 (centre codes
/// `c`), 1 (tail codes `t`), 2 (tail signs `s`) — no zero point: the caller subtracts
/// `za·Σ plane_j`.
///
/// `panel` is `steps` K steps of [`DOT3_STEP_BYTES`] bytes, byte `col·4 + i` of step `s`
/// the weight `(4s + i, col)` (the int8 GEMM's `c4` layout) as `nibble | region·0x80`,
/// the nibble `sign·8 | q` of the packed format. One byte per weight, as int8 weights,
/// decoded in registers per step: `vpshufb` of the byte through the signed-magnitude
/// table gives `c` (a tail byte has bit 7 set, which `vpshufb` zeroes), and of the byte
/// XOR 0x80 through it and the sign table gives `t` and `s` (now the centre bytes are
/// zeroed) — one XOR and three shuffles per 24 `vpdpbusd`. A zero byte (the padding)
/// decodes to 0 in all three.
///
/// `a` is the `R` rows packed the same way, `a[(s·R + r)·4 + i] = a[r][4s + i]`
/// (`4·R·steps` bytes): one sequential stream, where `R` separate rows a page apart
/// would share one L1 set. Per step: one 64-byte load, the decode, `R` broadcasts and
/// `3R` `vpdpbusd` into `3R ≤ 24` accumulators (24 + three planes + two tables + the
/// broadcast: 30 zmm registers, no spill). The caller zero-pads K to a whole step. Exact
/// in i32 while `4·steps·255·7` < 2³¹ (the caller chunks K).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn pwlq_dot3_gemm_8x16c4<const R: usize>(a: &[u8], panel: &[u8]) -> [[[i32; DOT3_PANEL_NR]; 3]; R] {
    const { assert!(R != 0 && R <= 8, "1 to 8 rows") };
    let steps = panel.len() / DOT3_STEP_BYTES;
    assert!(a.len() >= 4 * R * steps, "packed activations shorter than the panel's K");
    let tq = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7));
    let ts = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1));
    let region = _mm512_set1_epi8(i8::MIN);
    let ap = a.as_ptr();
    let wp = panel.as_ptr();
    let mut acc = [[_mm512_setzero_si512(); 3]; R];
    for s in 0..steps {
        // SAFETY: DOT3_STEP_BYTES·(s + 1) ≤ panel.len().
        let f = unsafe { _mm512_loadu_si512(wp.add(DOT3_STEP_BYTES * s).cast()) };
        let wc = _mm512_shuffle_epi8(tq, f);
        let x = _mm512_xor_si512(f, region);
        let wt = _mm512_shuffle_epi8(tq, x);
        let ws = _mm512_shuffle_epi8(ts, x);
        for r in 0..R {
            // SAFETY: 4·(s·R + r) + 4 ≤ 4·R·steps ≤ a.len() (checked above).
            let av = _mm512_set1_epi32(unsafe { ap.add(4 * (s * R + r)).cast::<i32>().read_unaligned() });
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, wc);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, wt);
            acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], av, ws);
        }
    }
    let mut out = [[[0i32; DOT3_PANEL_NR]; 3]; R];
    for r in 0..R {
        for j in 0..3 {
            // SAFETY: out[r][j] holds 16 i32.
            unsafe { _mm512_storeu_si512(out[r][j].as_mut_ptr().cast(), acc[r][j]) };
        }
    }
    out
}

/// The exact-mode epilogue of one row of a 16-channel panel, for dots that fit i32 (one
/// K chunk of [`pwlq_dot3_gemm_8x16c4`]): per lane `D_j = raw[j] − zsum[j]` (i32; the
/// caller proves the true dot and both terms fit), converted by `vcvtdq2ps` (round to
/// nearest even: the same f32 as the reference's i64 → f32 of the same integer), then
/// `y = ((s1·Dc + s2·Dt) + p·Ds)·sa (+ bias)` with `params` = `[s1, s2, p]` per lane,
/// every step one IEEE f32 operation in this order, no FMA — bit for bit
/// `qkern::quant::pwlq::combine_exact`. Writes the first `out.len() ≤ 16` lanes.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
pub unsafe fn pwlq_combine_row16(
    raw: &[[i32; 16]; 3],
    zsum: &[[i32; 16]; 3],
    params: &[[f32; 16]; 3],
    sa: f32,
    bias: Option<&[f32; 16]>,
    out: &mut [f32],
) {
    assert!(out.len() <= 16, "a panel row has at most 16 channels");
    // SAFETY: every array holds 16 lanes.
    let (d, pr, b) = unsafe {
        let d: [__m512; 3] = core::array::from_fn(|j| {
            let r = _mm512_loadu_si512(raw[j].as_ptr().cast());
            _mm512_cvtepi32_ps(_mm512_sub_epi32(r, _mm512_loadu_si512(zsum[j].as_ptr().cast())))
        });
        let pr: [__m512; 3] = core::array::from_fn(|j| _mm512_loadu_ps(params[j].as_ptr()));
        (d, pr, bias.map(|b| _mm512_loadu_ps(b.as_ptr())))
    };
    let c = _mm512_mul_ps(pr[0], d[0]);
    let t = _mm512_mul_ps(pr[1], d[1]);
    let s = _mm512_mul_ps(pr[2], d[2]);
    let mut y = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(c, t), s), _mm512_set1_ps(sa));
    if let Some(b) = b {
        y = _mm512_add_ps(y, b);
    }
    let mask = ((1u32 << out.len()) - 1) as u16;
    // SAFETY: the mask writes only lanes 0..out.len().
    unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), mask, y) };
}
