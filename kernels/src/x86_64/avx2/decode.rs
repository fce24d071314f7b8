//! Codebook decode to int8 GEMM panels on AVX2 ([`crate::pack::decode`]): 8 columns per
//! step, one 32-byte load of a codebook group giving 64 weights (nibble split + two
//! `vpshufb` of the 16-entry table; 5-bit codes blend a second lookup by their bit
//! plane), stored straight into the `c4` panel (`kr = 4`), or into the `c2` panel
//! (`kr = 2`, the exact `vpmaddwd` GEMM's layout) 16 columns per step: the code bytes
//! put in K-pair order by one in-lane shuffle before the lookups, then one qword unpack
//! per 32-byte row ([`step16_c2`]; 8-column steps with a permute of the decoded bytes
//! where a source panel does not hold 16 columns).

use core::arch::x86_64::*;

use super::codebook::{expand_bits, spread_bits};
use crate::pack::decode::{CodebookDecodeArgs, CodebookDecoder, finish_panel};
use crate::types::Isa;

/// Decodes `args.panels` target panels (see [`CodebookDecodeArgs`]).
///
/// Reads, per target panel, the source groups of its columns below `n` (each group's
/// nibble bytes and, for 5 bits, its bit plane) and 32 (16 for 4 bits) table bytes;
/// writes the panels, K and N padding 0.
///
/// # Safety
/// The [`CodebookDecodeArgs`] contract; `src_nr` and `dst_nr` multiples of 8; the CPU
/// supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn decode<const B5: bool, const KR: usize>(args: &CodebookDecodeArgs) {
    let bits = if B5 { 5 } else { 4 };
    let (snr, dnr) = (args.src_nr, args.dst_nr);
    let geo = args.geometry(bits, KR);
    // SAFETY: the table holds 32 bytes (16 read for 4 bits).
    let (ta, tb) = unsafe {
        let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.cast()));
        (lo, if B5 { _mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.add(16).cast())) } else { lo })
    };
    let tables = Tables { ta, tb, nib: _mm256_set1_epi8(0x0F) };
    for p in 0..args.panels {
        let (jp, dst, full) = args.panel(&geo, p, 8);
        // Steps of 16 columns outermost (the source panel and offset, a division, once per
        // step), K groups inside, both 8-column halves of a group together: each source
        // group and each target row is then read and written whole in one pass (halves in
        // separate passes over K re-fetched every partly written target line from L2).
        for c0 in (0..full).step_by(16) {
            let j = jp + c0;
            let (g0, jl) = (args.src_group(&geo, j, 0), j % snr);
            // The second half, where the panel has it, in the same source panel or not.
            let second = (c0 + 8 < full).then(|| if jl + 8 < snr { (g0, jl + 8) } else { (args.src_group(&geo, j + 8, 0), 0) });
            // `c2` targets take 16 columns of one source panel per step (32-byte rows).
            let wide = KR == 2 && c0 + 16 <= full && jl.is_multiple_of(16) && jl + 16 <= snr;
            for g in 0..geo.groups {
                if wide {
                    // SAFETY: columns j..j + 16 below n, in one source panel; group g < k/8;
                    // target K group g of columns c0..c0 + 16 of panel p.
                    unsafe { step16_c2::<B5>(&tables, g0.add(g * geo.src_group), snr, jl, dst, dnr, g, c0) };
                    continue;
                }
                // SAFETY: columns j.. and j + 8.. below n, group g < k/8 of their source
                // panels; target K group g of columns c0..c0 + 16 of panel p.
                unsafe {
                    step::<B5, KR>(&tables, g0.add(g * geo.src_group), snr, jl, dst, dnr, g, c0);
                    if let Some((g1, jl1)) = second {
                        step::<B5, KR>(&tables, g1.add(g * geo.src_group), snr, jl1, dst, dnr, g, c0 + 8);
                    }
                }
            }
        }
        // SAFETY: the contract; `dst` is panel p.
        unsafe { finish_panel(args, &geo, bits, KR, jp, full, dst) };
    }
}

/// The broadcast lookup tables (codes 0–15, 16–31) and the nibble mask.
#[derive(Clone, Copy)]
struct Tables {
    ta: __m256i,
    tb: __m256i,
    nib: __m256i,
}

/// Decodes one K group (8 K) of 8 columns: source column `jl` of the group at `gb`
/// (nibble bytes at `4·jl`, the bit planes `4·snr` further) into target columns
/// `c0..c0 + 8` of K group `g` of the panel at `dst`.
///
/// # Safety
/// The group holds columns `jl..jl + 8` (and their bit planes with `B5`); the panel at
/// `dst` (`dnr` columns, `KR` bytes per K group) holds K group `g` and columns
/// `c0..c0 + 8`; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)] // one step's geometry, called from one loop
unsafe fn step<const B5: bool, const KR: usize>(t: &Tables, gb: *const u8, snr: usize, jl: usize, dst: *mut u8, dnr: usize, g: usize, c0: usize) {
    // SAFETY: the caller's contract: 32 nibble bytes at 4·jl and, with B5, 4 plane
    // bytes at jl/2 in each half of the plane.
    let (vlo, vhi) = unsafe {
        let x = _mm256_loadu_si256(gb.add(4 * jl).cast());
        let lo = _mm256_and_si256(x, t.nib);
        let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), t.nib);
        let (mut vlo, mut vhi) = (_mm256_shuffle_epi8(t.ta, lo), _mm256_shuffle_epi8(t.ta, hi));
        if B5 {
            let plane = gb.add(4 * snr + jl / 2);
            let mlo = expand_bits(plane.cast::<u32>().read_unaligned());
            let mhi = expand_bits(plane.add(snr / 2).cast::<u32>().read_unaligned());
            vlo = _mm256_blendv_epi8(vlo, _mm256_shuffle_epi8(t.tb, lo), mlo);
            vhi = _mm256_blendv_epi8(vhi, _mm256_shuffle_epi8(t.tb, hi), mhi);
        }
        (vlo, vhi)
    };
    // SAFETY (stores): K group g of columns c0..c0 + 8 of the panel.
    unsafe {
        if KR == 4 {
            _mm256_storeu_si256(dst.add((2 * g * dnr + c0) * 4).cast(), vlo);
            _mm256_storeu_si256(dst.add(((2 * g + 1) * dnr + c0) * 4).cast(), vhi);
        } else {
            // kr = 2: per lane (4 columns × t 0..4) the bytes of t 0,1 then those of t 2,3.
            let pairs = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
            for (h, v) in [vlo, vhi].into_iter().enumerate() {
                // [t01 of columns 0..8 | t23 of columns 0..8].
                let v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pairs), 0b11_01_10_00);
                let d = dst.add(((4 * g + 2 * h) * dnr + c0) * 2);
                _mm_storeu_si128(d.cast(), _mm256_castsi256_si128(v));
                _mm_storeu_si128(d.add(dnr * 2).cast(), _mm256_extracti128_si256(v, 1));
            }
        }
    }
}

/// [`step`] for 16 columns `jl..jl + 16` of one source panel into a `c2` panel, whose
/// K-pair rows are then whole 32-byte stores. The columns are loaded as A = 0–3 | 8–11
/// and B = 4–7 | 12–15 (by lane) and each lane's bytes put in K-pair order before the
/// lookups, so that one in-lane qword unpack of A and B gives a row of 16 columns in
/// order: no lane-crossing permute of the decoded bytes.
///
/// # Safety
/// The group holds columns `jl..jl + 16` (and their bit planes with `B5`); the panel at
/// `dst` (`dnr` columns, 2 bytes per K pair) holds K group `g` and columns `c0..c0 + 16`;
/// the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)] // one step's geometry, called from one loop
unsafe fn step16_c2<const B5: bool>(t: &Tables, gb: *const u8, snr: usize, jl: usize, dst: *mut u8, dnr: usize, g: usize, c0: usize) {
    // Per lane (4 columns × t 0..4, byte 4c + t): the bytes of t 0,1 then those of t 2,3.
    const PAIRS: [i8; 16] = [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15];
    // SAFETY: the caller's contract: 64 nibble bytes at 4·jl; PAIRS holds 16 bytes.
    let (pairs, xa, xb) = unsafe {
        let pairs = _mm256_broadcastsi128_si256(_mm_loadu_si128(PAIRS.as_ptr().cast()));
        let p = gb.add(4 * jl);
        let half = |o: usize| _mm_loadu_si128(p.add(o).cast());
        (pairs, _mm256_inserti128_si256(_mm256_castsi128_si256(half(0)), half(32), 1), _mm256_inserti128_si256(_mm256_castsi128_si256(half(16)), half(48), 1))
    };
    let (xa, xb) = (_mm256_shuffle_epi8(xa, pairs), _mm256_shuffle_epi8(xb, pairs));
    let split = |x: __m256i| (_mm256_and_si256(x, t.nib), _mm256_and_si256(_mm256_srli_epi16(x, 4), t.nib));
    let ((alo, ahi), (blo, bhi)) = (split(xa), split(xb));
    let look = |i: __m256i| _mm256_shuffle_epi8(t.ta, i);
    let (mut alo_v, mut ahi_v, mut blo_v, mut bhi_v) = (look(alo), look(ahi), look(blo), look(bhi));
    if B5 {
        // The fifth bits of the 16 columns' low (high) nibbles: 8 plane bytes, 4 bits per
        // column (column c's in byte c/2). Lane l of A holds columns 8l..8l + 4 (plane bytes
        // 4l, 4l + 1), of B columns 8l + 4..8l + 8 (bytes 4l + 2, 4l + 3); position p of a
        // lane holds its byte PAIRS[p], whose bit is bit PAIRS[p] mod 8 of byte PAIRS[p]/8.
        const fn spread(base: [i8; 2]) -> [i8; 32] {
            let mut c = [0i8; 32];
            let mut i = 0;
            while i < 32 {
                c[i] = base[i / 16] + PAIRS[i % 16] / 8;
                i += 1;
            }
            c
        }
        const SPREAD_A: [i8; 32] = spread([0, 4]);
        const SPREAD_B: [i8; 32] = spread([2, 6]);
        const SEL: [i8; 16] = {
            let mut s = [0i8; 16];
            let mut i = 0;
            while i < 16 {
                s[i] = (1u8 << (PAIRS[i] % 8)) as i8;
                i += 1;
            }
            s
        };
        // SAFETY: constant arrays of 32 and 16 bytes.
        let (sa, sb, sel) = unsafe {
            (
                _mm256_loadu_si256(SPREAD_A.as_ptr().cast()),
                _mm256_loadu_si256(SPREAD_B.as_ptr().cast()),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(SEL.as_ptr().cast())),
            )
        };
        let mask = |q: __m256i, s: __m256i| spread_bits(q, s, sel);
        // SAFETY: the caller's contract: 8 plane bytes at jl/2 in each half of the plane.
        let (qlo, qhi) = unsafe {
            let plane = gb.add(4 * snr + jl / 2);
            (_mm256_set1_epi64x(plane.cast::<i64>().read_unaligned()), _mm256_set1_epi64x(plane.add(snr / 2).cast::<i64>().read_unaligned()))
        };
        let lookb = |i: __m256i| _mm256_shuffle_epi8(t.tb, i);
        alo_v = _mm256_blendv_epi8(alo_v, lookb(alo), mask(qlo, sa));
        blo_v = _mm256_blendv_epi8(blo_v, lookb(blo), mask(qlo, sb));
        ahi_v = _mm256_blendv_epi8(ahi_v, lookb(ahi), mask(qhi, sa));
        bhi_v = _mm256_blendv_epi8(bhi_v, lookb(bhi), mask(qhi, sb));
    }
    // SAFETY (stores): K pairs 4g..4g + 4, columns c0..c0 + 16 of the panel.
    unsafe {
        let row = |r: usize| dst.add(((4 * g + r) * dnr + c0) * 2).cast::<__m256i>();
        _mm256_storeu_si256(row(0), _mm256_unpacklo_epi64(alo_v, blo_v));
        _mm256_storeu_si256(row(1), _mm256_unpackhi_epi64(alo_v, blo_v));
        _mm256_storeu_si256(row(2), _mm256_unpacklo_epi64(ahi_v, bhi_v));
        _mm256_storeu_si256(row(3), _mm256_unpackhi_epi64(ahi_v, bhi_v));
    }
}

/// AVX2 decoders, least preferred first.
pub const DECODERS: &[CodebookDecoder] = &[
    CodebookDecoder { name: "codebook4_decode_c2__avx2", isa: Isa::Avx2, bits: 4, kr: 2, cols: 8, run: decode::<false, 2> },
    CodebookDecoder { name: "codebook4_decode_c4__avx2", isa: Isa::Avx2, bits: 4, kr: 4, cols: 8, run: decode::<false, 4> },
    CodebookDecoder { name: "codebook5_decode_c2__avx2", isa: Isa::Avx2, bits: 5, kr: 2, cols: 8, run: decode::<true, 2> },
    CodebookDecoder { name: "codebook5_decode_c4__avx2", isa: Isa::Avx2, bits: 5, kr: 4, cols: 8, run: decode::<true, 4> },
];
