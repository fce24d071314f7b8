//! Bit-shift codebook tiles on AVX2: `vpsllvd` on i32 lanes (AVX2 has no `vpsllvw`),
//! the sign by `vpsignd`, `vpaddd` into the accumulators.
//!
//! Layout ([`crate::pack::shift`]): 8 consecutive term bytes are 4 columns × 2
//! consecutive K; `vpmovsxbd` makes them i32 lanes `(j, u)` whose value is the
//! `vpsignd` selector (term 0 is never 0 as an i8, negative for negative weights), and
//! `& 0x3F` the shift count (32 for a missing term, where `vpsllvd` gives 0). The
//! activation pair `(x_k, x_{k+1})`, widened to i32 once per block and broadcast as a
//! qword, meets every lane. Per K pair and 8 columns the decode (two `vpmovsxbd` + two
//! `vpand`, two `vpmovzxbd` for APoT's second term) is shared by the `R ≤ 4` rows; per
//! row and 4 columns × 2 K: `vpsllvd` (twice + `vpaddd` for APoT), `vpsignd`, `vpaddd`.
//! The lane pairs `(j, 0)`, `(j, 1)` are added in the epilogue.
//!
//! Exactness: `|x| ≤ 255`, terms `≤ 2^6`, so every product `|x·w| ≤ 255·127` and each
//! lane's sum is an i32 that wraps only as the [`CodebookArgs`] contract allows.

use core::arch::x86_64::*;

use crate::generic::codebook::store_tile;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// Activations per block widened to i32 on the stack (8 K groups).
const KB: usize = 64;

/// The `MR × 8` tile, dispatched on `m` to an exact row count.
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)·8·8·T` bytes; not the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ 4`, `n ≤ 8`, the panel in the
/// `T`-term shift layout with `nr = 8`; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn shift_tile<const T: usize, const SIGNED: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ the row count.
    unsafe {
        match args.m {
            1 => tile::<1, T, SIGNED>(args),
            2 => tile::<2, T, SIGNED>(args),
            3 => tile::<3, T, SIGNED>(args),
            _ => tile::<4, T, SIGNED>(args),
        }
    }
}

/// # Safety
/// As [`shift_tile`], `m ≤ R`.
// The row and vector indices address several register arrays at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile<const R: usize, const T: usize, const SIGNED: bool>(args: &CodebookArgs) {
    const NR: usize = 8;
    const NV: usize = 2;
    let plane = NR * 8;
    let gb = plane * T;
    // SAFETY: every access stays within the contract's ranges: activation row r < m
    // reads k0..k0+kb < k; the panel has k.div_ceil(8) groups of gb bytes; the widened
    // buffer is local.
    unsafe {
        let zero = _mm256_setzero_si256();
        let cmask = _mm256_set1_epi32(0x3F);
        let mut acc = [[zero; NV]; R];
        let mut xb = [[0i32; KB]; R];
        let mut kb0 = 0;
        while kb0 < args.k {
            let kb = KB.min(args.k - kb0);
            let groups = kb.div_ceil(8);
            for (r, row) in xb.iter_mut().enumerate() {
                if r >= args.m {
                    continue;
                }
                let src = args.a.add(r * args.lda + kb0);
                if kb == KB {
                    for h in 0..KB / 8 {
                        let v = _mm_loadl_epi64(src.add(8 * h).cast());
                        let w = if SIGNED { _mm256_cvtepi8_epi32(v) } else { _mm256_cvtepu8_epi32(v) };
                        _mm256_storeu_si256(row[8 * h..].as_mut_ptr().cast(), w);
                    }
                } else {
                    for (t, d) in row.iter_mut().enumerate() {
                        let b = if t < kb { *src.add(t) } else { 0 };
                        *d = if SIGNED { b as i8 as i32 } else { b as i32 };
                    }
                }
            }
            let bp = args.b.add(kb0 / 8 * gb);
            for g in 0..groups {
                let gp = bp.add(g * gb);
                for p in 0..4 {
                    for v in 0..NV {
                        let off = 2 * NR * p + 8 * v;
                        let sel = _mm256_cvtepi8_epi32(_mm_loadl_epi64(gp.add(off).cast()));
                        let c0 = _mm256_and_si256(sel, cmask);
                        let c1 = if T == 2 { _mm256_cvtepu8_epi32(_mm_loadl_epi64(gp.add(plane + off).cast())) } else { zero };
                        for r in 0..R {
                            let x = _mm256_set1_epi64x(xb[r].as_ptr().add(8 * g + 2 * p).cast::<i64>().read_unaligned());
                            let mut t = _mm256_sllv_epi32(x, c0);
                            if T == 2 {
                                t = _mm256_add_epi32(t, _mm256_sllv_epi32(x, c1));
                            }
                            acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_sign_epi32(t, sel));
                        }
                    }
                }
            }
            kb0 += kb;
        }
        let mut out = [[0i32; NR]; R];
        for (o, a) in out.iter_mut().zip(&acc).take(args.m) {
            // hadd: [c0 c1 c4 c5 | c2 c3 c6 c7] (per 128-bit lane), then the qwords in order.
            let s = _mm256_hadd_epi32(a[0], a[1]);
            _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm256_permute4x64_epi64::<0xD8>(s));
        }
        store_tile::<R, NR>(args, &out);
    }
}

macro_rules! entry {
    ($name:ident, $t:literal, $signed:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// [`shift_tile`]'s contract.
        pub unsafe fn $name(args: &CodebookArgs) {
            // SAFETY: forwarded.
            unsafe { shift_tile::<$t, $signed>(args) }
        }
    };
}

entry!(qx8_shift_pot_gemm_4x8c2_u8a, 1, false, "4×8 PoT (one term) tile, u8 activations.");
entry!(qx8_shift_pot_gemm_4x8c2_i8a, 1, true, "4×8 PoT (one term) tile, i8 activations.");
entry!(qx8_shift_apot_gemm_4x8c2_u8a, 2, false, "4×8 APoT (two terms) tile, u8 activations.");
entry!(qx8_shift_apot_gemm_4x8c2_i8a, 2, true, "4×8 APoT (two terms) tile, i8 activations.");

/// `qx8_shift_pot_gemm_4x8c2__avx2`: PoT weights (`±x << e`), i32 lanes; any grid.
pub const QX8_SHIFT_POT_GEMM_4X8C2__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_shift_pot_gemm_4x8c2__avx2",
    family: CodebookFamily::Shift,
    isa: Isa::Avx2,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 8 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_shift_pot_gemm_4x8c2_u8a, qx8_shift_pot_gemm_4x8c2_i8a],
};

/// `qx8_shift_apot_gemm_4x8c2__avx2`: APoT weights (`±((x << e1) + (x << e2))`), i32
/// lanes; any grid.
pub const QX8_SHIFT_APOT_GEMM_4X8C2__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_shift_apot_gemm_4x8c2__avx2",
    family: CodebookFamily::Shift,
    isa: Isa::Avx2,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 16 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_shift_apot_gemm_4x8c2_u8a, qx8_shift_apot_gemm_4x8c2_i8a],
};

/// AVX2 bit-shift codebook kernels, least preferred first.
pub const SHIFT_KERNELS: &[CodebookUkernel] = &[QX8_SHIFT_POT_GEMM_4X8C2__AVX2, QX8_SHIFT_APOT_GEMM_4X8C2__AVX2];
