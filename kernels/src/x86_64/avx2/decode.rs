//! Codebook decode to int8 GEMM panels on AVX2 ([`crate::pack::decode`]): 8 columns per
//! step, one 32-byte load of a codebook group giving 64 weights (nibble split + two
//! `vpshufb` of the 16-entry table; 5-bit codes blend a second lookup by their bit
//! plane), stored straight into the `c4` panel (`kr = 4`), or after one in-lane byte
//! shuffle and a qword permute into the `c2` panel (`kr = 2`, the exact `vpmaddwd`
//! GEMM's layout).

use core::arch::x86_64::*;

use super::codebook::expand_bits;
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
            for g in 0..geo.groups {
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

/// AVX2 decoders, least preferred first.
pub const DECODERS: &[CodebookDecoder] = &[
    CodebookDecoder { name: "codebook4_decode_c2__avx2", isa: Isa::Avx2, bits: 4, kr: 2, cols: 8, run: decode::<false, 2> },
    CodebookDecoder { name: "codebook4_decode_c4__avx2", isa: Isa::Avx2, bits: 4, kr: 4, cols: 8, run: decode::<false, 4> },
    CodebookDecoder { name: "codebook5_decode_c2__avx2", isa: Isa::Avx2, bits: 5, kr: 2, cols: 8, run: decode::<true, 2> },
    CodebookDecoder { name: "codebook5_decode_c4__avx2", isa: Isa::Avx2, bits: 5, kr: 4, cols: 8, run: decode::<true, 4> },
];
