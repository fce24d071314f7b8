//! Table-lookup codebook tiles: 4-bit codes decoded to i8 by a nibble split and
//! `vpshufb` (the 16-entry table replicated in each 128-bit lane), multiplied with u8
//! activations by `vpdpbusd` zmm.
//!
//! The packed layout ([`CodebookFormat`], K groups of 8) puts the codes of `k = 8g..8g+3`
//! of 16 columns in the low nibbles of a 64-byte load and those of `k = 8g+4..8g+7` in the
//! high nibbles, each byte at the position `vpdpbusd` wants (column `j`, `t = k mod 4` at
//! byte `4j + t`). So one load, two masks, one shift and two `vpshufb` feed two
//! `vpdpbusd` per row; the decode is shared by all `R` rows of the tile. i8 activations are
//! flipped to u8 (`XOR 0x80`, `a_offset` 128) as they are broadcast. `vpdpbusd` wraps, as
//! the [`CodebookArgs`] contract asks; its i16 intermediates are exact.

use core::arch::x86_64::*;

use crate::generic::codebook::{a_quads16, store_tile};
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// The activation words of a partial last group of `kn < 8` bytes: bytes past K are 0
/// after the flip, so the padding codes multiply nothing.
///
/// # Safety
/// `p` is readable for `kn` bytes.
#[inline(always)]
pub(crate) unsafe fn a_tail_words<const FLIP: bool>(p: *const u8, kn: usize) -> (i32, i32) {
    let mut b = [0u8; 8];
    for (t, d) in b.iter_mut().enumerate().take(kn) {
        // SAFETY: t < kn.
        *d = unsafe { *p.add(t) } ^ if FLIP { 0x80 } else { 0 };
    }
    let v = u64::from_le_bytes(b);
    (v as u32 as i32, (v >> 32) as u32 as i32)
}

/// The `MR × 16·NV` tile; dispatches short tiles (GEMV) to fewer rows with split
/// accumulators (lo / hi K halves in separate chains, for latency).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)·16·NV·4` bytes, 16 table bytes; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ MR`, `n ≤ NR = 16·NV`; the CPU
/// supports AVX-512 F/BW/VL/VNNI, and VBMI when `VBMI`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn codebook_tile<const MR: usize, const NV: usize, const NR: usize, const FLIP: bool, const B5: bool, const VBMI: bool>(
    args: &CodebookArgs,
) {
    // SAFETY (each arm): forwarded, m ≤ the row count; `VBMI` only with the CPU feature.
    // The `vpermb` decode goes to the decode-bound short tiles only: at 3+ rows the
    // decode is shared and `vpshufb` (two ports) is as fast.
    unsafe {
        match args.m {
            1 => tile::<1, NV, NR, FLIP, true, B5, VBMI>(args),
            2 => tile::<2, NV, NR, FLIP, true, B5, VBMI>(args),
            3 | 4 if MR > 4 => tile::<4, NV, NR, FLIP, false, B5, false>(args),
            _ => tile::<MR, NV, NR, FLIP, false, B5, false>(args),
        }
    }
}

/// # Safety
/// As [`codebook_tile`], `m ≤ R`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tile<const R: usize, const NV: usize, const NR: usize, const FLIP: bool, const SPLIT: bool, const B5: bool, const VBMI: bool>(
    args: &CodebookArgs,
) {
    // 5-bit groups carry their bit plane after the nibbles.
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: every pointer access below stays within the contract's ranges: full
    // groups read 8 activation bytes at k0 < k − 7, the tail reads k − k0 bytes, the
    // panel has k.div_ceil(8) groups of NR·4 bytes; rows ≥ m are never read (r < m).
    unsafe {
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(args.table.cast()));
        // Codes 16–31 (5-bit only): a second lookup, blended in where bit 4 is set.
        let table_hi = if B5 { _mm512_broadcast_i32x4(_mm_loadu_si128(args.table.add(16).cast())) } else { table };
        let mask = _mm512_set1_epi8(0x0F);
        let flip = _mm512_set1_epi8(if FLIP { -128 } else { 0 });
        let zero = _mm512_setzero_si512();
        let mut acc = [[zero; NV]; R];
        let mut acc2 = [[zero; NV]; R];
        let full = args.k / 8;
        let m = args.m;
        let decode = |p: *const u8, wlo: &mut [__m512i; NV], whi: &mut [__m512i; NV]| {
            for v in 0..NV {
                let raw = _mm512_loadu_si512(p.add(64 * v).cast());
                if VBMI && !B5 {
                    // `vpermb` reads index bits 0–5 only and `table` holds the 16 entries
                    // 4× over, so bits 4–5 (the other nibble, or the neighbour byte's low
                    // bits after the word shift) pick a copy of the same entry: no masks.
                    wlo[v] = vpermb(raw, table);
                    whi[v] = vpermb(_mm512_srli_epi16(raw, 4), table);
                    continue;
                }
                let il = _mm512_and_si512(raw, mask);
                let ih = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
                wlo[v] = _mm512_shuffle_epi8(table, il);
                whi[v] = _mm512_shuffle_epi8(table, ih);
                if B5 {
                    let plane = p.add(NR * 4);
                    let ml: __mmask64 = plane.add(8 * v).cast::<u64>().read_unaligned();
                    let mh: __mmask64 = plane.add(NR / 2 + 8 * v).cast::<u64>().read_unaligned();
                    wlo[v] = _mm512_mask_blend_epi8(ml, wlo[v], _mm512_shuffle_epi8(table_hi, il));
                    whi[v] = _mm512_mask_blend_epi8(mh, whi[v], _mm512_shuffle_epi8(table_hi, ih));
                }
            }
        };
        let mut wlo = [zero; NV];
        let mut whi = [zero; NV];
        for g in 0..full {
            decode(args.b.add(g * gb), &mut wlo, &mut whi);
            for r in 0..R {
                if r >= m {
                    break;
                }
                let p = args.a.add(r * args.lda + 8 * g);
                // Broadcasts from memory (folded into `vpdpbusd`'s {1to16} when not flipped).
                let mut alo = _mm512_set1_epi32(p.cast::<i32>().read_unaligned());
                let mut ahi = _mm512_set1_epi32(p.add(4).cast::<i32>().read_unaligned());
                if FLIP {
                    alo = _mm512_xor_si512(alo, flip);
                    ahi = _mm512_xor_si512(ahi, flip);
                }
                for v in 0..NV {
                    acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], alo, wlo[v]);
                    if SPLIT {
                        acc2[r][v] = _mm512_dpbusd_epi32(acc2[r][v], ahi, whi[v]);
                    } else {
                        acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], ahi, whi[v]);
                    }
                }
            }
        }
        let kn = args.k - 8 * full;
        if kn > 0 {
            decode(args.b.add(full * gb), &mut wlo, &mut whi);
            for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                let (lo, hi) = a_tail_words::<FLIP>(args.a.add(r * args.lda + 8 * full), kn);
                for v in 0..NV {
                    acc_r[v] = _mm512_dpbusd_epi32(acc_r[v], _mm512_set1_epi32(lo), wlo[v]);
                    acc_r[v] = _mm512_dpbusd_epi32(acc_r[v], _mm512_set1_epi32(hi), whi[v]);
                }
            }
        }
        let mut out = [[0i32; NR]; R];
        for ((o, a1), a2) in out.iter_mut().zip(&acc).zip(&acc2).take(m) {
            for v in 0..NV {
                let s = if SPLIT { _mm512_add_epi32(a1[v], a2[v]) } else { a1[v] };
                _mm512_storeu_si512(o[16 * v..].as_mut_ptr().cast(), s);
            }
        }
        store_tile::<R, NR>(args, &out);
    }
}

/// `vpermb zmm` (AVX-512 VBMI): `table[idx & 63]` per byte. Inline asm, so that the
/// fallback kernels sharing [`tile`] are never compiled with VBMI enabled.
///
/// # Safety
/// The CPU supports AVX-512 VBMI.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn vpermb(idx: __m512i, table: __m512i) -> __m512i {
    let out: __m512i;
    // SAFETY: a register-only instruction; the caller guarantees the CPU feature.
    unsafe {
        core::arch::asm!(
            "vpermb {o}, {i}, {t}",
            o = lateout(zmm_reg) out,
            i = in(zmm_reg) idx,
            t = in(zmm_reg) table,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// 8×32 tile, u8 activations.
///
/// # Safety
/// [`codebook_tile`]'s contract for an 8×32 tile.
pub unsafe fn qx8_codebook4_gemm_8x32c8_u8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<8, 2, 32, false, false, false>(args) }
}

/// 8×32 tile, i8 activations (flipped to u8).
///
/// # Safety
/// [`codebook_tile`]'s contract for an 8×32 tile.
pub unsafe fn qx8_codebook4_gemm_8x32c8_i8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<8, 2, 32, true, false, false>(args) }
}

/// `qx8_codebook4_gemm_8x32c8__avx512vnni`: 8 rows × 32 columns, 16 accumulators; per K
/// group of 8, two 64-byte loads and four `vpshufb` feed 32 `vpdpbusd`.
pub const QX8_CODEBOOK4_GEMM_8X32C8__AVX512VNNI: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_8x32c8__avx512vnni",
    family: CodebookFamily::Lut,
    isa: Isa::Avx512Vnni,
    bits: 4,
    mr: 8,
    format: CodebookFormat { nr: 32, bits: 4 },
    a_offset: [0, 128],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_codebook4_gemm_8x32c8_u8a, qx8_codebook4_gemm_8x32c8_i8a],
};

/// 8×32 tile, u8 activations, `vpermb` decode for 1–2 rows.
///
/// # Safety
/// [`codebook_tile`]'s contract for an 8×32 tile; the CPU supports AVX-512 VBMI.
pub unsafe fn qx8_codebook4_gemm_8x32c8_vbmi_u8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<8, 2, 32, false, false, true>(args) }
}

/// 8×32 tile, i8 activations (flipped to u8), `vpermb` decode for 1–2 rows.
///
/// # Safety
/// [`codebook_tile`]'s contract for an 8×32 tile; the CPU supports AVX-512 VBMI.
pub unsafe fn qx8_codebook4_gemm_8x32c8_vbmi_i8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<8, 2, 32, true, false, true>(args) }
}

/// `qx8_codebook4_gemm_8x32c8__avx512vbmi`: the 8×32 tile whose GEMV rows (M ≤ 2, decode
/// bound) decode with one `vpermb` per nibble on a 64-byte table (16 entries 4×) instead
/// of mask, mask, `vpshufb`; needs `avx512vbmi` (the plain kernel is the fallback).
pub const QX8_CODEBOOK4_GEMM_8X32C8__AVX512VBMI: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_8x32c8__avx512vbmi",
    family: CodebookFamily::Lut,
    isa: Isa::Avx512Vnni,
    bits: 4,
    mr: 8,
    format: CodebookFormat { nr: 32, bits: 4 },
    a_offset: [0, 128],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &["avx512vbmi"],
    run: [qx8_codebook4_gemm_8x32c8_vbmi_u8a, qx8_codebook4_gemm_8x32c8_vbmi_i8a],
};

/// 5-bit 8×32 tile, u8 activations.
///
/// # Safety
/// [`codebook_tile`]'s contract for an 8×32 tile of 5-bit codes (32-entry table).
pub unsafe fn qx8_codebook5_gemm_8x32c8_u8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<8, 2, 32, false, true, false>(args) }
}

/// 5-bit 8×32 tile, i8 activations (flipped to u8).
///
/// # Safety
/// [`codebook_tile`]'s contract for an 8×32 tile of 5-bit codes (32-entry table).
pub unsafe fn qx8_codebook5_gemm_8x32c8_i8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<8, 2, 32, true, true, false>(args) }
}

/// `qx8_codebook5_gemm_8x32c8__avx512vnni`: 5-bit codes (APoT-5, 32-level codebooks):
/// the 4-bit tile plus, per 64 code bytes, two `kmovq` masks from the bit plane and two
/// masked blends of a second 16-entry lookup (AVX-512BW only; no VBMI needed).
pub const QX8_CODEBOOK5_GEMM_8X32C8__AVX512VNNI: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_8x32c8__avx512vnni",
    family: CodebookFamily::Lut,
    isa: Isa::Avx512Vnni,
    bits: 5,
    mr: 8,
    format: CodebookFormat { nr: 32, bits: 5 },
    a_offset: [0, 128],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_codebook5_gemm_8x32c8_u8a, qx8_codebook5_gemm_8x32c8_i8a],
};

/// The `MR × 16` tile of the i16-table kernels (grids beyond int8: PoT-5, 4-bit log):
/// codes zero-extended to words (`vpmovzxbw`), the nibble (and, for 5-bit codes, bit 4
/// from the group's bit plane as a masked `+16`) picks one of the 32 i16 table entries
/// held in one zmm (`vpermw`), and `vpdpwssd` multiplies them with the activations the
/// driver widened to i16 (`a_offset` 0), a K quad broadcast per row. One zmm of weights is 8
/// columns × 4 K, so a dword lane sums two K of one column; the pairs are added at the
/// end. Every product `|a·w| ≤ 255·32767` and pair sum `< 2^24` is exact; the
/// accumulators wrap as the [`CodebookArgs`] contract allows.
///
/// Reads `m` rows of `k` i16 activations (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (64 bytes, or 80 with `B5`), the 32 i16 of `table16`; writes
/// the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ MR`, `n ≤ 16`; the CPU supports
/// AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn wide_tile<const MR: usize, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ the row count. Short tiles (GEMV) keep the two
    // K halves in separate accumulators (two dependency chains per column block).
    unsafe {
        match args.m {
            1 => wide::<1, true, B5>(args),
            2 => wide::<2, true, B5>(args),
            3 | 4 if MR > 4 => wide::<4, false, B5>(args),
            _ => wide::<MR, false, B5>(args),
        }
    }
}

/// # Safety
/// As [`wide_tile`], `m ≤ R`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn wide<const R: usize, const SPLIT: bool, const B5: bool>(args: &CodebookArgs) {
    const NR: usize = 16;
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: every access stays within the contract's ranges: full groups read 8
    // activation bytes at k0 ≤ k − 8, the tail reads k − k0 bytes, the panel has
    // k.div_ceil(8) groups of `gb` bytes, the table 32 i16; rows ≥ m are never read.
    unsafe {
        let table = _mm512_loadu_si512(args.table16.cast());
        let low = _mm512_set1_epi16(0x0F);
        let sixteen = _mm512_set1_epi16(16);
        let zero = _mm512_setzero_si512();
        let mut acc = [[zero; 2]; R];
        let mut acc2 = [[zero; 2]; R];
        let full = args.k / 8;
        let m = args.m;
        // The weights of a group as i16: [lo-nibble K (8g..8g+4) of columns 0–7, of
        // columns 8–15, hi-nibble K (8g+4..8g+8) of columns 0–7, of columns 8–15].
        let decode = |p: *const u8| -> [__m512i; 4] {
            let mut w = [zero; 4];
            for v in 0..2 {
                // `vpmovzxbw zmm, m256`: the load folded in, no lane extract.
                let words = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.add(32 * v).cast()));
                let mut il = _mm512_and_si512(words, low);
                let mut ih = _mm512_srli_epi16(words, 4);
                if B5 {
                    // Bit 32v + i of each bitmap is bit 4 of the code at word i.
                    let plane = p.add(NR * 4);
                    let ml: __mmask32 = plane.add(4 * v).cast::<u32>().read_unaligned();
                    let mh: __mmask32 = plane.add(NR / 2 + 4 * v).cast::<u32>().read_unaligned();
                    il = _mm512_mask_add_epi16(il, ml, il, sixteen);
                    ih = _mm512_mask_add_epi16(ih, mh, ih, sixteen);
                }
                w[v] = _mm512_permutexvar_epi16(il, table);
                w[2 + v] = _mm512_permutexvar_epi16(ih, table);
            }
            w
        };
        // The pre-widened A (i16): a K quad is one qword, broadcast from memory (a load,
        // no shuffle).
        let a16 = args.a.cast::<i16>();
        for g in 0..full {
            let w = decode(args.b.add(g * gb));
            for r in 0..R {
                if r >= m {
                    break;
                }
                let p = a16.add(r * args.lda + 8 * g);
                let alo = _mm512_set1_epi64(p.cast::<i64>().read_unaligned());
                let ahi = _mm512_set1_epi64(p.add(4).cast::<i64>().read_unaligned());
                for v in 0..2 {
                    acc[r][v] = _mm512_dpwssd_epi32(acc[r][v], alo, w[v]);
                    if SPLIT {
                        acc2[r][v] = _mm512_dpwssd_epi32(acc2[r][v], ahi, w[2 + v]);
                    } else {
                        acc[r][v] = _mm512_dpwssd_epi32(acc[r][v], ahi, w[2 + v]);
                    }
                }
            }
        }
        let kn = args.k - 8 * full;
        if kn > 0 {
            let w = decode(args.b.add(full * gb));
            for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                // Words past K are 0: the padding codes meet a zero activation.
                let (lo, hi) = a_quads16(a16.add(r * args.lda + 8 * full), kn);
                for v in 0..2 {
                    acc_r[v] = _mm512_dpwssd_epi32(acc_r[v], _mm512_set1_epi64(lo), w[v]);
                    acc_r[v] = _mm512_dpwssd_epi32(acc_r[v], _mm512_set1_epi64(hi), w[2 + v]);
                }
            }
        }
        let mut out = [[0i32; NR]; R];
        for ((o, a1), a2) in out.iter_mut().zip(&acc).zip(&acc2).take(m) {
            for v in 0..2 {
                let s = if SPLIT { _mm512_add_epi32(a1[v], a2[v]) } else { a1[v] };
                // Dword lanes 2c, 2c + 1 are column c's two K pairs: add them into the low
                // dword of each qword, then narrow the qwords.
                let s = _mm512_cvtepi64_epi32(_mm512_add_epi32(s, _mm512_srli_epi64(s, 32)));
                _mm256_storeu_si256(o[8 * v..].as_mut_ptr().cast(), s);
            }
        }
        store_tile::<R, NR>(args, &out);
    }
}

/// `qx8_codebook4_i16_gemm_8x16c8__avx512vnni`: 4-bit codes, any i16 table (4-bit log:
/// grid 2^14), `vpermw` decode + `vpdpwssd`.
pub const QX8_CODEBOOK4_I16_GEMM_8X16C8__AVX512VNNI: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_i16_gemm_8x16c8__avx512vnni",
    family: CodebookFamily::Lut,
    isa: Isa::Avx512Vnni,
    bits: 4,
    mr: 8,
    format: CodebookFormat { nr: 16, bits: 4 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: true,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [wide_tile::<8, false>, wide_tile::<8, false>],
};

/// `qx8_codebook5_i16_gemm_8x16c8__avx512vnni`: 5-bit codes, any 32-entry i16 table
/// (PoT-5: grid 2^14): the whole table in one zmm, bit 4 a masked add.
pub const QX8_CODEBOOK5_I16_GEMM_8X16C8__AVX512VNNI: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_i16_gemm_8x16c8__avx512vnni",
    family: CodebookFamily::Lut,
    isa: Isa::Avx512Vnni,
    bits: 5,
    mr: 8,
    format: CodebookFormat { nr: 16, bits: 5 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: true,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [wide_tile::<8, true>, wide_tile::<8, true>],
};

/// AVX-512 VNNI codebook kernels, least preferred first (the i16-table ones run only
/// grids beyond int8, which no other kernel here takes).
pub const CODEBOOK_KERNELS: &[CodebookUkernel] = &[
    QX8_CODEBOOK4_I16_GEMM_8X16C8__AVX512VNNI,
    QX8_CODEBOOK5_I16_GEMM_8X16C8__AVX512VNNI,
    QX8_CODEBOOK4_GEMM_8X32C8__AVX512VNNI,
    QX8_CODEBOOK5_GEMM_8X32C8__AVX512VNNI,
    QX8_CODEBOOK4_GEMM_8X32C8__AVX512VBMI,
];
