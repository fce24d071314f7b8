//! PWLQ dequantization kernels, AVX2. Same contract as the AVX-512 ones
//! (`x86_64::avx512vnni::pwlq`): each output is `table[field]` of a table the caller
//! built with the scalar definition (the f32 kernel uses the table's odd symmetry, see
//! its docs), so the results are bit-exact by construction.

// Blocks index two parallel planes; an index loop says that best.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

#[inline]
fn check(values: &[u8], regions: &[u64], k: usize) -> usize {
    let blocks = k.div_ceil(64);
    assert!(values.len() >= blocks * 32 && regions.len() >= blocks, "PWLQ planes shorter than K");
    blocks
}

/// 4-bit PWLQ codes of one channel → f32: `out[i] = lut[field(i)]` for `i < out.len()`.
///
/// 8 weights per step: `vpmovzxbd` of the nibbles, two `vpermps` (they read only index
/// bits 0–2, the magnitude `q`) in the centre half `lut[0..8]` and the tail half
/// `lut[16..24]`, a `vblendvps` on the region bit (moved to the sign bit with `vpsrlvd`
/// and a shift), then the nibble's sign bit XOR-ed into the float's. That equals the table
/// for every *canonical* field — PWLQ dequantization is odd (`lut[f | 8]` is `−lut[f]`,
/// exactly: both branches of the definition negate exactly) — i.e. every field except
/// the negative centre zero `0b0_1000`, which no `qkern::quant::pwlq::PwlqPacked` holds (packing never
/// writes it and `from_parts` rejects it). Reads `⌈K/64⌉` blocks of both planes, writes
/// exactly `out`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn pwlq4_dequant_f32_u64(values: &[u8], regions: &[u64], lut: &[f32; 32], out: &mut [f32]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // SAFETY: `lut` holds 32 floats.
    let (tc, tt) = unsafe { (_mm256_loadu_ps(lut.as_ptr()), _mm256_loadu_ps(lut.as_ptr().add(16))) };
    let nib = _mm_set1_epi8(0x0F);
    let lane_shift = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let sign = _mm256_set1_epi32(i32::MIN);
    let vp = values.as_ptr();
    let op = out.as_mut_ptr();
    let mut tmp = [0f32; 8];
    for b in 0..blocks {
        // SAFETY: 32·b + 32 ≤ values.len().
        let (v0, v1) = unsafe { (_mm_loadu_si128(vp.add(32 * b).cast()), _mm_loadu_si128(vp.add(32 * b + 16).cast())) };
        // Nibble bytes of weights 0..16, 16..32, 32..48, 48..64.
        let quads = [
            _mm_and_si128(v0, nib),
            _mm_and_si128(v1, nib),
            _mm_and_si128(_mm_srli_epi16::<4>(v0), nib),
            _mm_and_si128(_mm_srli_epi16::<4>(v1), nib),
        ];
        let r = regions[b];
        let step = |g: usize| {
            let q = quads[g / 2];
            let bytes = if g.is_multiple_of(2) { q } else { _mm_srli_si128::<8>(q) };
            let idx = _mm256_cvtepu8_epi32(bytes);
            let reg = _mm256_slli_epi32::<31>(_mm256_srlv_epi32(_mm256_set1_epi32(((r >> (8 * g)) & 0xFF) as i32), lane_shift));
            let val = _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(tc, idx),
                _mm256_permutevar8x32_ps(tt, idx),
                _mm256_castsi256_ps(reg),
            );
            _mm256_xor_ps(val, _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32::<28>(idx), sign)))
        };
        let base = 64 * b;
        if base + 64 <= k {
            for g in 0..8 {
                // SAFETY: base + 64 ≤ out.len().
                unsafe { _mm256_storeu_ps(op.add(base + 8 * g), step(g)) };
            }
        } else {
            for g in 0..8 {
                let start = base + 8 * g;
                if start >= k {
                    break;
                }
                let val = step(g);
                if start + 8 <= k {
                    // SAFETY: start + 8 ≤ out.len().
                    unsafe { _mm256_storeu_ps(op.add(start), val) };
                } else {
                    // SAFETY: `tmp` holds 8 floats.
                    unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), val) };
                    out[start..k].copy_from_slice(&tmp[..k - start]);
                }
            }
        }
    }
}

/// 4-bit PWLQ codes of one channel → i8 on a common integer grid: `out[i] =
/// table[field(i)]` (`table[0..16]` centre levels, `table[16..32]` tail levels, by nibble;
/// two `vpshufb` and a `vpblendvb` on the region bits expanded to bytes, 32 weights per
/// step). Reads `⌈K/64⌉` blocks of both planes, writes exactly `out`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn pwlq4_dequant_i8_u64(values: &[u8], regions: &[u64], table: &[i8; 32], out: &mut [i8]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // SAFETY: `table` holds 32 bytes.
    let (tc, tt) = unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().add(16).cast())),
        )
    };
    let nib = _mm256_set1_epi8(0x0F);
    // Byte i of a 32-bit region word: broadcast byte i/8, test bit i%8.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let vp = values.as_ptr();
    let op = out.as_mut_ptr();
    let mut tmp = [0i8; 32];
    for b in 0..blocks {
        // SAFETY: 32·b + 32 ≤ values.len().
        let v = unsafe { _mm256_loadu_si256(vp.add(32 * b).cast()) };
        let halves = [_mm256_and_si256(v, nib), _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib)];
        for (h, idx) in halves.into_iter().enumerate() {
            let start = 64 * b + 32 * h;
            if start >= k {
                break;
            }
            let word = (regions[b] >> (32 * h)) as u32 as i32;
            let m = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(word), spread), bit);
            let m = _mm256_cmpeq_epi8(m, bit);
            let val = _mm256_blendv_epi8(_mm256_shuffle_epi8(tc, idx), _mm256_shuffle_epi8(tt, idx), m);
            if start + 32 <= k {
                // SAFETY: start + 32 ≤ out.len().
                unsafe { _mm256_storeu_si256(op.add(start).cast(), val) };
            } else {
                // SAFETY: `tmp` holds 32 bytes.
                unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), val) };
                out[start..k].copy_from_slice(&tmp[..k - start]);
            }
        }
    }
}
