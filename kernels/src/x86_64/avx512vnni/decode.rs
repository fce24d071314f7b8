//! Codebook decode to int8 GEMM panels on AVX-512 ([`crate::pack::decode`]): 16 columns
//! per step, one 64-byte load of a codebook group giving 128 weights (nibble split +
//! two `vpshufb` zmm of the 16-entry table; 5-bit codes add a masked `vpshufb` of the
//! second half, the mask a `kmovq` of the group's bit plane), stored straight into the
//! `c4` panel of the `vpdpbusd` GEMM.

use core::arch::x86_64::*;

use crate::pack::decode::{CodebookDecodeArgs, CodebookDecoder, finish_panel};
use crate::types::Isa;

/// Decodes `args.panels` target `c4` panels (see [`CodebookDecodeArgs`]); reads and
/// writes as the AVX2 decoder ([`crate::x86_64::avx2::decode::decode`]).
///
/// # Safety
/// The [`CodebookDecodeArgs`] contract; `src_nr` and `dst_nr` multiples of 16; the CPU
/// supports AVX-512 F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn decode_c4<const B5: bool>(args: &CodebookDecodeArgs) {
    let bits = if B5 { 5 } else { 4 };
    let snr = args.src_nr;
    let dnr = args.dst_nr;
    let geo = args.geometry(bits, 4);
    // SAFETY: the table holds 32 bytes (16 read for 4 bits).
    let (ta, tb) = unsafe {
        let lo = _mm512_broadcast_i32x4(_mm_loadu_si128(args.table.cast()));
        (lo, if B5 { _mm512_broadcast_i32x4(_mm_loadu_si128(args.table.add(16).cast())) } else { lo })
    };
    let nib = _mm512_set1_epi8(0x0F);
    for p in 0..args.panels {
        // 16-column steps whose columns all lie below n; the rest by the scalar definition.
        let (jp, dst, full) = args.panel(&geo, p, 16);
        // Column steps outermost: the source panel and offset (a division) once per step.
        for c0 in (0..full).step_by(16) {
            let j = jp + c0;
            let (g0, jl) = (args.src_group(&geo, j, 0), j % snr);
            for g in 0..geo.groups {
                // SAFETY: column j < n, group g < k/8: the source holds the group's nibble
                // bytes (64 at 4·jl) and bit planes (8 bytes each at jl/2 in each half);
                // the stores are K groups 2g, 2g + 1 of columns c0..c0+16 of the panel.
                unsafe {
                    let gb = g0.add(g * geo.src_group);
                    let x = _mm512_loadu_si512(gb.add(4 * jl).cast());
                    let lo = _mm512_and_si512(x, nib);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), nib);
                    let (mut vlo, mut vhi) = (_mm512_shuffle_epi8(ta, lo), _mm512_shuffle_epi8(ta, hi));
                    if B5 {
                        let plane = gb.add(4 * snr + jl / 2);
                        let mlo: __mmask64 = plane.cast::<u64>().read_unaligned();
                        let mhi: __mmask64 = plane.add(snr / 2).cast::<u64>().read_unaligned();
                        vlo = _mm512_mask_shuffle_epi8(vlo, mlo, tb, lo);
                        vhi = _mm512_mask_shuffle_epi8(vhi, mhi, tb, hi);
                    }
                    _mm512_storeu_si512(dst.add((2 * g * dnr + c0) * 4).cast(), vlo);
                    _mm512_storeu_si512(dst.add(((2 * g + 1) * dnr + c0) * 4).cast(), vhi);
                }
            }
        }
        // SAFETY: the contract; `dst` is panel p.
        unsafe { finish_panel(args, &geo, bits, 4, jp, full, dst) };
    }
}

/// AVX-512 decoders, least preferred first.
pub const DECODERS: &[CodebookDecoder] = &[
    CodebookDecoder { name: "codebook4_decode_c4__avx512bw", isa: Isa::Avx512Vnni, bits: 4, kr: 4, cols: 16, run: decode_c4::<false> },
    CodebookDecoder { name: "codebook5_decode_c4__avx512bw", isa: Isa::Avx512Vnni, bits: 5, kr: 4, cols: 16, run: decode_c4::<true> },
];
