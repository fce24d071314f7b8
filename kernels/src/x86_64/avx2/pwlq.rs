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
/// Uses the table's odd symmetry: PWLQ dequantization is odd (`lut[f | 8]` is `−lut[f]`,
/// exactly: both branches of the definition negate exactly), so the kernel reads only the
/// centre half `lut[0..8]` and the tail half `lut[16..24]` and XORs the nibble's sign bit
/// into the float. That equals the table for every *canonical* field — every field except
/// the negative centre zero `0b0_1000`, which no `qkern::quant::pwlq::PwlqPacked` holds
/// (packing never writes it and `from_parts` rejects it).
///
/// Per block of 64 weights, four `vpmovzxbd` of 8 value bytes each; one gives the dwords
/// `hi·16 | lo` of 8 weights of the first half-block (`lo`) and the 8 at +32 (`hi`), so
/// `d` and `d >> 4` index both through `vpermps`, which reads only bits 0–2 (the
/// magnitude `q`). Per 8 weights: two `vpermps` (centre, tail), a `vblendvps` on the
/// region bit, which one `vpsllvd` of the broadcast region half-word moves to bit 31
/// (lane `j` of group `g`: shift `31 − 8g − j`; the bits below it are ignored), and a
/// `vxorps` with `index << 28`, whose bit 31 is the sign and bits 28–30 are `q`: the two
/// lookup registers hold `lut[q] ^ (q << 28)`, so the XOR cancels them, leaving
/// `lut[q] ^ sign·2³¹` = `lut[field]`. That is 7 vector ops and a store per 8 floats
/// (the region halves come from memory by `vpbroadcastd`, once per block). A 16-entry
/// lookup takes two `vpermps` and a blend on AVX2 (no two-table permute), and the region
/// and sign bits each need moving to bit 31, so 7 is about the floor: on Zen 4, with 4
/// vector pipes (`vpermps` on two, shifts on two overlapping those), ≥ 1.75 cycles per
/// 8 floats, about half the rate of an L1-resident copy (one 32-byte store a cycle).
/// Reads `⌈K/64⌉` blocks of both planes, writes exactly `out`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn pwlq4_dequant_f32_u64(values: &[u8], regions: &[u64], lut: &[f32; 32], out: &mut [f32]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // `q << 28` for lane `q`: the bits of the index that `index << 28` brings besides the
    // sign, pre-cancelled in the two lookup registers.
    let q28 = _mm256_slli_epi32::<28>(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    // SAFETY: `lut` holds 32 floats.
    let (tc, tt) = unsafe {
        (
            _mm256_xor_ps(_mm256_loadu_ps(lut.as_ptr()), _mm256_castsi256_ps(q28)),
            _mm256_xor_ps(_mm256_loadu_ps(lut.as_ptr().add(16)), _mm256_castsi256_ps(q28)),
        )
    };
    let lane = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    let t = Tables { tc, tt, shift: core::array::from_fn(|g| _mm256_sub_epi32(lane, _mm256_set1_epi32(8 * g as i32))) };
    let vp = values.as_ptr();
    let rp = regions.as_ptr();
    let op = out.as_mut_ptr();
    let full = k / 64;
    for b in 0..full {
        // SAFETY: b < blocks, so the planes hold block b (checked above); 64·b + 64 ≤ k.
        unsafe { block_f32(&t, vp.add(32 * b), rp.add(b), op.add(64 * b)) };
    }
    if full < blocks {
        let mut tmp = [0f32; 64];
        // SAFETY: block `full` < blocks is in the planes; `tmp` holds 64 floats.
        unsafe { block_f32(&t, vp.add(32 * full), rp.add(full), tmp.as_mut_ptr()) };
        out[64 * full..].copy_from_slice(&tmp[..k - 64 * full]);
    }
}

/// The lookup registers of [`pwlq4_dequant_f32_u64`]: the centre and tail halves of the
/// table XOR `q << 28`, and per group `g` of 8 lanes the `vpsllvd` counts `31 − 8g − j`.
struct Tables {
    tc: __m256,
    tt: __m256,
    shift: [__m256i; 4],
}

/// One block of [`pwlq4_dequant_f32_u64`]: 64 floats from the 32 value bytes at `v` and
/// the region word at `r`, stored at `o`.
///
/// # Safety
/// AVX2; `v` readable for 32 bytes, `r` for one `u64`, `o` writable for 64 floats.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_f32(t: &Tables, v: *const u8, r: *const u64, o: *mut f32) {
    // SAFETY: the caller's contract; the region halves are read as two u32 (little-endian:
    // weights 0..32, then 32..64) straight into `vpbroadcastd`.
    unsafe {
        let rl = _mm256_set1_epi32(r.cast::<i32>().read_unaligned());
        let rh = _mm256_set1_epi32(r.cast::<i32>().add(1).read_unaligned());
        for g in 0..4 {
            let d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(v.add(8 * g).cast()));
            let dh = _mm256_srli_epi32::<4>(d);
            let lo = lookup(t, d, _mm256_sllv_epi32(rl, t.shift[g]));
            let hi = lookup(t, dh, _mm256_sllv_epi32(rh, t.shift[g]));
            _mm256_storeu_ps(o.add(8 * g), lo);
            _mm256_storeu_ps(o.add(32 + 8 * g), hi);
        }
    }
}

/// 8 floats: `idx` has the nibble in bits 0–3 (anything above bit 3 is ignored), `region`
/// the region bit in bit 31.
#[inline]
#[target_feature(enable = "avx2")]
fn lookup(t: &Tables, idx: __m256i, region: __m256i) -> __m256 {
    let val = _mm256_blendv_ps(
        _mm256_permutevar8x32_ps(t.tc, idx),
        _mm256_permutevar8x32_ps(t.tt, idx),
        _mm256_castsi256_ps(region),
    );
    _mm256_xor_ps(val, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
}

/// 4-bit PWLQ codes of one channel → i8 on a common integer grid: `out[i] =
/// table[field(i)]` (`table[0..16]` centre levels, `table[16..32]` tail levels, by nibble;
/// two `vpshufb` and a `vpblendvb` on the region bits expanded to bytes, 32 weights per
/// step). The region word is broadcast from memory once per block (`vpbroadcastq`); per
/// 32 weights one `vpshufb` spreads its bytes, an AND and a compare make the byte mask.
/// Reads `⌈K/64⌉` blocks of both planes, writes exactly `out`.
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
    // Byte i of half h (weights 32h..32h + 32): byte 4h + i/8 of the region word (in both
    // 128-bit lanes after the broadcast), tested against bit i%8.
    let spread = |h: i8| {
        let b = 4 * h;
        _mm256_setr_epi8(
            b, b, b, b, b, b, b, b, b + 1, b + 1, b + 1, b + 1, b + 1, b + 1, b + 1, b + 1, //
            b + 2, b + 2, b + 2, b + 2, b + 2, b + 2, b + 2, b + 2, b + 3, b + 3, b + 3, b + 3, b + 3, b + 3, b + 3, b + 3,
        )
    };
    let t = TablesI8 {
        tc,
        tt,
        nib: _mm256_set1_epi8(0x0F),
        spread: [spread(0), spread(1)],
        bit: _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64),
    };
    let vp = values.as_ptr();
    let rp = regions.as_ptr();
    let op = out.as_mut_ptr();
    let full = k / 64;
    for b in 0..full {
        // SAFETY: b < blocks, so the planes hold block b (checked above); 64·b + 64 ≤ k.
        unsafe { block_i8(&t, vp.add(32 * b), rp.add(b), op.add(64 * b)) };
    }
    if full < blocks {
        let mut tmp = [0i8; 64];
        // SAFETY: block `full` < blocks is in the planes; `tmp` holds 64 bytes.
        unsafe { block_i8(&t, vp.add(32 * full), rp.add(full), tmp.as_mut_ptr()) };
        out[64 * full..].copy_from_slice(&tmp[..k - 64 * full]);
    }
}

/// The constant registers of [`pwlq4_dequant_i8_u64`].
struct TablesI8 {
    tc: __m256i,
    tt: __m256i,
    nib: __m256i,
    spread: [__m256i; 2],
    bit: __m256i,
}

/// One block of [`pwlq4_dequant_i8_u64`]: 64 bytes from the 32 value bytes at `v` and the
/// region word at `r`, stored at `o`.
///
/// # Safety
/// AVX2; `v` readable for 32 bytes, `r` for one `u64`, `o` writable for 64 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_i8(t: &TablesI8, v: *const u8, r: *const u64, o: *mut i8) {
    // SAFETY: the caller's contract.
    unsafe {
        let v = _mm256_loadu_si256(v.cast());
        let r = _mm256_set1_epi64x(r.read_unaligned() as i64);
        let halves = [_mm256_and_si256(v, t.nib), _mm256_and_si256(_mm256_srli_epi16::<4>(v), t.nib)];
        for (h, idx) in halves.into_iter().enumerate() {
            let m = _mm256_and_si256(_mm256_shuffle_epi8(r, t.spread[h]), t.bit);
            let m = _mm256_cmpeq_epi8(m, t.bit);
            let val = _mm256_blendv_epi8(_mm256_shuffle_epi8(t.tc, idx), _mm256_shuffle_epi8(t.tt, idx), m);
            _mm256_storeu_si256(o.add(32 * h).cast(), val);
        }
    }
}

/// Blocks of [`pwlq4_dot3_u8`] whose i16 pair sums are added before widening: a
/// `vpmaddubsw` pair of u8 activations × codes within ±7 is at most `2·255·7 = 3570`, a
/// block's two halves `7140`, four blocks `28560 ≤ 32767`.
const DOT3_I16_BLOCKS: usize = 4;
const _: () = assert!(DOT3_I16_BLOCKS * 2 * 2 * 255 * 7 <= i16::MAX as usize);

/// Fused exact-mode dot products of 4-bit PWLQ, the AVX2 counterpart of
/// `x86_64::avx512vnni::pwlq::pwlq4_dot3_u8` with the same contract: for `R` activation
/// rows `a[r]` (u8, each at least `⌈K/64⌉·64` bytes, zero-padded by the caller; padded
/// code fields are zero) and `NC` channels (`values[c]`, `regions[c]`: that channel's
/// planes, `⌈K/64⌉` blocks), returns `out[r][c]` = the raw sums `[Σ a·c, Σ a·t, Σ a·s]`.
///
/// Per 32 weights of a block half: `vpshufb` of the nibbles through the signed-magnitude
/// table gives `q` (`c` in the centre, `t` in the tail) and through the sign table `±1`;
/// the region bits, expanded to a byte mask, keep the tail's `t` and `s`. Three
/// `vpmaddubsw` per row give `Σ a·q`, `Σ a·t`, `Σ a·s` (then `Σ a·c = Σ a·q − Σ a·t`):
/// u8 × values within ±7, so nothing saturates, and the i16 sums of
/// [`DOT3_I16_BLOCKS`] blocks are exact before `vpmaddwd` by ones widens them. Exact in
/// i32 while `⌈K/64⌉·64·255·7 < 2³¹` (the caller chunks K). `R·NC` should stay small
/// (three i16 and three i32 accumulators per pair): the caller uses one row, one channel.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn pwlq4_dot3_u8<const R: usize, const NC: usize>(
    a: [&[u8]; R],
    values: [&[u8]; NC],
    regions: [&[u64]; NC],
) -> [[[i32; 3]; NC]; R] {
    use crate::x86_64::avx2::codebook::expand_bits;
    use crate::x86_64::avx512vnni::pwlq::{DOT3_TQ, DOT3_TS, dot3_blocks};
    let blocks = dot3_blocks(&a, &values, &regions);
    // SAFETY: 16 bytes each.
    let (tq, ts) = unsafe {
        (_mm256_broadcastsi128_si256(_mm_loadu_si128(DOT3_TQ.as_ptr().cast())), _mm256_broadcastsi128_si256(_mm_loadu_si128(DOT3_TS.as_ptr().cast())))
    };
    let nib = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    // [Σ a·q, Σ a·t, Σ a·s] per row and channel: i32, and the i16 sums of the open run.
    let mut acc = [[[zero; 3]; NC]; R];
    let mut part = [[[zero; 3]; NC]; R];
    for b in 0..blocks {
        // SAFETY: 64·b + 64 ≤ a[r].len().
        let av: [[__m256i; 2]; R] =
            core::array::from_fn(|r| unsafe { [_mm256_loadu_si256(a[r].as_ptr().add(64 * b).cast()), _mm256_loadu_si256(a[r].as_ptr().add(64 * b + 32).cast())] });
        for c in 0..NC {
            // SAFETY: 32·b + 32 ≤ values[c].len().
            let v = unsafe { _mm256_loadu_si256(values[c].as_ptr().add(32 * b).cast()) };
            let rg = regions[c][b];
            // Weights 0–31 (low nibbles) and 32–63 (high nibbles) of the block.
            let halves = [(_mm256_and_si256(v, nib), expand_bits(rg as u32)), (_mm256_and_si256(_mm256_srli_epi16::<4>(v), nib), expand_bits((rg >> 32) as u32))];
            for (h, (idx, tail)) in halves.into_iter().enumerate() {
                let q = _mm256_shuffle_epi8(tq, idx);
                let t = _mm256_and_si256(q, tail);
                let s = _mm256_and_si256(_mm256_shuffle_epi8(ts, idx), tail);
                for r in 0..R {
                    let p = &mut part[r][c];
                    p[0] = _mm256_add_epi16(p[0], _mm256_maddubs_epi16(av[r][h], q));
                    p[1] = _mm256_add_epi16(p[1], _mm256_maddubs_epi16(av[r][h], t));
                    p[2] = _mm256_add_epi16(p[2], _mm256_maddubs_epi16(av[r][h], s));
                }
            }
        }
        if (b + 1) % DOT3_I16_BLOCKS == 0 || b + 1 == blocks {
            for (ar, pr) in acc.iter_mut().zip(part.iter_mut()) {
                for (ac, pc) in ar.iter_mut().zip(pr.iter_mut()) {
                    for (x, y) in ac.iter_mut().zip(pc.iter_mut()) {
                        *x = _mm256_add_epi32(*x, _mm256_madd_epi16(*y, ones));
                        *y = zero;
                    }
                }
            }
        }
    }
    let mut out = [[[0i32; 3]; NC]; R];
    for r in 0..R {
        for c in 0..NC {
            let mut lanes = [[0i32; 8]; 3];
            for (l, x) in lanes.iter_mut().zip(&acc[r][c]) {
                // SAFETY: 8 i32.
                unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), *x) };
            }
            let sum = |l: &[i32; 8]| l.iter().fold(0i32, |s, &x| s.wrapping_add(x));
            let (q, t, s) = (sum(&lanes[0]), sum(&lanes[1]), sum(&lanes[2]));
            out[r][c] = [q.wrapping_sub(t), t, s];
        }
    }
    out
}
