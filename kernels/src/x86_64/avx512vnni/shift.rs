//! Bit-shift codebook tiles on AVX-512BW: `vpsllvw` on i16 lanes (32 per zmm), the sign by
//! a masked `vpsubw`, sums of i16 terms widened to i32 by `vpdpwssd` against ones.
//!
//! Layout ([`crate::pack::shift`]): 32 consecutive term bytes are 16 columns × 2
//! consecutive K, so `vpmovzxbw` turns them into the i16 lanes `(j, u)` and the
//! activation pair `(x_k, x_{k+1})`, broadcast as one dword, meets every lane. Per K pair
//! and 16 columns the decode (one `vpmovb2m` for the signs, `vpmovzxbw` + `vpand` for the
//! counts, one more `vpmovzxbw` for an APoT second term) is shared by the `R ≤ 8` rows;
//! per row it is `vpsllvw` (twice for APoT, plus `vpaddw`), a masked `vpsubw` (negate the
//! negative weights), and a `vpaddw` into the row's i16 sum or, every `W`-th K pair, a
//! `vpdpwssd` (× 1) that adds the lane pairs `(j, 0) + (j, 1)` into column `j`'s i32.
//!
//! # Why i16 is exact
//!
//! An activation is `|x| ≤ 255` (u8 zero-extended, i8 sign-extended: `|x| ≤ 128`). A
//! weight of the level set is `±(2^a [+ 2^b])` with `|w| ≤ G`, its terms `a, b ≤ 6`.
//! * One shift: `|x << a| ≤ 255·64 = 16320 < 2^15`: `vpsllvw` never drops a bit.
//! * One K step of one lane: `|±((x << a) + (x << b))| = |x·w| ≤ 255·G`.
//! * A lane sums `W` K steps before it is widened: `|Σ| ≤ W·255·G`. The kernels here use
//!   `W = 2` and are registered with `max_abs_table: Some(64)`, so `|Σ| ≤ 2·255·64 =
//!   32640 ≤ 32767`: no i16 wrap (PoT-4: G = 64, APoT-4: 10, APoT-5: 48). `W` is the
//!   largest power of two with that guarantee for G = 64 (`W = 3` would need G ≤ 42).
//! * `vpdpwssd` adds two such lanes to the i32 accumulator exactly (its products are by
//!   1); the i32 sum wraps, as the [`CodebookArgs`] contract allows (the driver keeps the
//!   true value within i32 or chunks K).
//!
//! `vpdpwssd` is used only as a widening pairwise add (the multiplier sees ones), the
//! weights' magnitudes come from the shifts and their signs from the masked subtract.

use core::arch::x86_64::*;

use crate::generic::codebook::store_tile;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// Activations per block widened to i16 on the stack (8 K groups).
const KB: usize = 64;

/// The `MR × 16` tile, dispatched on `m` to an exact row count.
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)·16·8·T` bytes; not the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ 8`, `n ≤ 16`, the panel in the
/// `T`-term shift layout with `nr = 16`, every weight within ±64; the CPU supports
/// AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn shift_tile<const T: usize, const SIGNED: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ the row count.
    unsafe {
        match args.m {
            1 => tile::<1, T, SIGNED, true>(args),
            2 => tile::<2, T, SIGNED, true>(args),
            3 => tile::<3, T, SIGNED, false>(args),
            4 => tile::<4, T, SIGNED, false>(args),
            5 | 6 => tile::<6, T, SIGNED, false>(args),
            _ => tile::<8, T, SIGNED, false>(args),
        }
    }
}

/// # Safety
/// As [`shift_tile`], `m ≤ R`. Rows `m..R` are computed on a zero buffer, never read
/// from `a` nor written.
// The row and vector indices address several register arrays at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tile<const R: usize, const T: usize, const SIGNED: bool, const SPLIT: bool>(args: &CodebookArgs) {
    const NR: usize = 16;
    /// K pairs summed in i16 before widening (see the module's bound).
    const W: usize = 2;
    let plane = NR * 8;
    let gb = plane * T;
    // SAFETY: every access stays within the contract's ranges: activation row r < m
    // reads k0..k0+kb < k; the panel has k.div_ceil(8) groups of gb bytes; the widened
    // buffer is local.
    unsafe {
        let zero = _mm512_setzero_si512();
        let ones = _mm512_set1_epi16(1);
        let cmask = _mm512_set1_epi16(0x3F);
        // Two i32 accumulator sets for 1–2 rows, so the `vpdpwssd` chains overlap.
        let mut acc = [[zero; 2]; R];
        let mut acc16 = [zero; R];
        let mut xb = [[0i16; KB]; R];
        let m = args.m;
        let mut kb0 = 0;
        while kb0 < args.k {
            let kb = KB.min(args.k - kb0);
            let groups = kb.div_ceil(8);
            // Widen the rows' activations of this block (zeros past K and for rows ≥ m:
            // padding weights are 0, padding rows are not stored).
            for (r, row) in xb.iter_mut().enumerate() {
                if r >= m {
                    continue;
                }
                let src = args.a.add(r * args.lda + kb0);
                if kb == KB {
                    for h in 0..KB / 32 {
                        let v = _mm256_loadu_si256(src.add(32 * h).cast());
                        let w = if SIGNED { _mm512_cvtepi8_epi16(v) } else { _mm512_cvtepu8_epi16(v) };
                        _mm512_storeu_si512(row[32 * h..].as_mut_ptr().cast(), w);
                    }
                } else {
                    for (t, d) in row.iter_mut().enumerate() {
                        let b = if t < kb { *src.add(t) } else { 0 };
                        *d = if SIGNED { b as i8 as i16 } else { b as i16 };
                    }
                }
            }
            let bp = args.b.add(kb0 / 8 * gb);
            for g in 0..groups {
                let gp = bp.add(g * gb);
                for p in 0..4 {
                    let raw = _mm256_loadu_si256(gp.add(32 * p).cast());
                    let neg: __mmask32 = _mm256_movepi8_mask(raw);
                    let c0 = _mm512_and_si512(_mm512_cvtepu8_epi16(raw), cmask);
                    let c1 = if T == 2 { _mm512_cvtepu8_epi16(_mm256_loadu_si256(gp.add(plane + 32 * p).cast())) } else { zero };
                    let set = if SPLIT { p / 2 } else { 0 };
                    for r in 0..R {
                        let x = _mm512_set1_epi32(xb[r].as_ptr().add(8 * g + 2 * p).cast::<i32>().read_unaligned());
                        let mut t = _mm512_sllv_epi16(x, c0);
                        if T == 2 {
                            t = _mm512_add_epi16(t, _mm512_sllv_epi16(x, c1));
                        }
                        t = _mm512_mask_sub_epi16(t, neg, zero, t);
                        acc16[r] = if p % W == 0 { t } else { _mm512_add_epi16(acc16[r], t) };
                        if p % W == W - 1 {
                            acc[r][set] = _mm512_dpwssd_epi32(acc[r][set], acc16[r], ones);
                        }
                    }
                }
            }
            kb0 += kb;
        }
        let mut out = [[0i32; NR]; R];
        for (o, a) in out.iter_mut().zip(&acc).take(m) {
            let s = if SPLIT { _mm512_add_epi32(a[0], a[1]) } else { a[0] };
            _mm512_storeu_si512(o.as_mut_ptr().cast(), s);
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

entry!(qx8_shift_pot_gemm_8x16c2_u8a, 1, false, "8×16 PoT (one term) tile, u8 activations.");
entry!(qx8_shift_pot_gemm_8x16c2_i8a, 1, true, "8×16 PoT (one term) tile, i8 activations.");
entry!(qx8_shift_apot_gemm_8x16c2_u8a, 2, false, "8×16 APoT (two terms) tile, u8 activations.");
entry!(qx8_shift_apot_gemm_8x16c2_i8a, 2, true, "8×16 APoT (two terms) tile, i8 activations.");

/// `qx8_shift_pot_gemm_8x16c2__avx512vnni`: PoT weights (`±x << e`), i16 lanes, 8 rows
/// share each decode; exact for grids within ±64 (the i16 bound above).
pub const QX8_SHIFT_POT_GEMM_8X16C2__AVX512VNNI: CodebookUkernel = CodebookUkernel {
    name: "qx8_shift_pot_gemm_8x16c2__avx512vnni",
    family: CodebookFamily::Shift,
    isa: Isa::Avx512Vnni,
    bits: 5,
    mr: 8,
    format: CodebookFormat { nr: 16, bits: 8 },
    a_offset: [0, 0],
    max_abs_table: Some(64),
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_shift_pot_gemm_8x16c2_u8a, qx8_shift_pot_gemm_8x16c2_i8a],
};

/// `qx8_shift_apot_gemm_8x16c2__avx512vnni`: APoT weights (`±((x << e1) + (x << e2))`),
/// i16 lanes; exact for grids within ±64.
pub const QX8_SHIFT_APOT_GEMM_8X16C2__AVX512VNNI: CodebookUkernel = CodebookUkernel {
    name: "qx8_shift_apot_gemm_8x16c2__avx512vnni",
    family: CodebookFamily::Shift,
    isa: Isa::Avx512Vnni,
    bits: 5,
    mr: 8,
    format: CodebookFormat { nr: 16, bits: 16 },
    a_offset: [0, 0],
    max_abs_table: Some(64),
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_shift_apot_gemm_8x16c2_u8a, qx8_shift_apot_gemm_8x16c2_i8a],
};

/// AVX-512 bit-shift codebook kernels, least preferred first.
pub const SHIFT_KERNELS: &[CodebookUkernel] = &[QX8_SHIFT_POT_GEMM_8X16C2__AVX512VNNI, QX8_SHIFT_APOT_GEMM_8X16C2__AVX512VNNI];
