//! Depthwise microkernels on zmm: 64-channel tiles, taps in pairs, `vpdpwssd`.
//!
//! Per output pixel and tap pair `(t, t+1)` the kernel loads 64 channel bytes of each
//! tap row (masked past the last channel: nothing past `channels` is read) and builds,
//! with one `vpermt2b` per 16 channels, the dwords `(x[t][c], x[t+1][c])` as two
//! zero-extended u16 (`vpermt2b` with a zero mask on the odd bytes). One `vpdpwssd` with
//! the packed dwords `(wc[t][c], wc[t+1][c])` (centred weights, i16 in `[−255, 255]`)
//! adds the pair's two products to each channel's i32 accumulator, non-saturating
//! (wrapping), exactly: each product is at most `255·255` in magnitude. i8 activations
//! are flipped to u8 (`XOR 0x80`, `a_offset` 128) as they are loaded.
//!
//! A call is blocked into groups of `PX` pixels × one 64-channel tile: `PX·NU`
//! accumulators (`NU` = 16-channel vectors in the tile, fewer in the last tile), the
//! tile's weights loaded once per tap pair and used by all `PX` pixels. The output stage
//! is vectorised (i32, f32, the three requantization modes; the fixed-point ones reuse the
//! GEMM kernels' i64-lane code) and bit-exact with `generic::gemm::output_value`.
//!
//! Needs AVX-512 VBMI besides F/BW/VL/VNNI (`vpermt2b`): the descriptors list it in
//! `extra_features`.

use core::arch::x86_64::*;

use super::gemm::{Bounds, FixedCols, requant_double, requant_single};
use crate::generic::dwconv::{store_one, tap_row};
use crate::types::{DwPackFormat, DwconvArgs, DwconvUkernel, Isa, OutputKind, RequantMode};

/// Channels per tile.
const CT: usize = 64;
/// Pixels per block.
const PX: usize = 4;

/// The `vpermt2b` indexes of the accumulator vectors: for vector `r` (channels
/// `16r .. 16r+16`), dword `i` takes byte `16r + i` of the first tap row (byte 0) and of
/// the second (byte 2, index `64 + …`); bytes 1 and 3 are zeroed by [`PAIR_MASK`].
static PAIR_INDEX: [[u8; 64]; 4] = {
    let mut t = [[0u8; 64]; 4];
    let mut r = 0;
    while r < 4 {
        let mut i = 0;
        while i < 16 {
            t[r][4 * i] = (16 * r + i) as u8;
            t[r][4 * i + 2] = (64 + 16 * r + i) as u8;
            i += 1;
        }
        r += 1;
    }
    t
};

/// Bytes 0 and 2 of every dword.
const PAIR_MASK: __mmask64 = 0x5555_5555_5555_5555;

/// Lanes of vector `v` (channels `16v..`) below `rem` channels.
#[inline(always)]
fn lane_mask(rem: usize, v: usize) -> __mmask16 {
    let lo = 16 * v;
    if rem >= lo + 16 {
        0xffff
    } else if rem > lo {
        ((1u32 << (rem - lo)) - 1) as __mmask16
    } else {
        0
    }
}

/// The kernel: `T` taps (0 = `args.taps`, any count), `FLIP` for i8 activations.
///
/// Reads, for each pixel and tap, `channels` bytes of the tap row (masked loads), the
/// whole packed filter of the `ct = 64` format, `channels` entries of each per-channel
/// table the output stage uses; writes only the `pixels × channels` output.
///
/// # Safety
/// `args` satisfies the [`DwconvArgs`] contract (with `args.taps == T` when `T > 0`); the
/// CPU supports AVX-512 F/BW/VL/VNNI/VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn dwconv<const T: usize, const FLIP: bool>(args: &DwconvArgs) {
    let taps = if T > 0 { T } else { args.taps };
    let tile_bytes = DwPackFormat { ct: CT }.tile_bytes(taps);
    let c_all = args.channels;
    let mut p0 = 0;
    while p0 < args.pixels {
        let npx = PX.min(args.pixels - p0);
        let mut c0 = 0;
        let mut wt = args.weights;
        while c0 < c_all {
            let rem = CT.min(c_all - c0);
            // SAFETY (each arm): forwarded contract; NU = rem.div_ceil(16) vectors cover
            // the tile's channels, `wt` is its packed tile.
            unsafe {
                match rem.div_ceil(16) {
                    1 => block::<T, 1, FLIP>(args, taps, p0, npx, c0, rem, wt),
                    2 => block::<T, 2, FLIP>(args, taps, p0, npx, c0, rem, wt),
                    3 => block::<T, 3, FLIP>(args, taps, p0, npx, c0, rem, wt),
                    _ => block::<T, 4, FLIP>(args, taps, p0, npx, c0, rem, wt),
                }
            }
            c0 += CT;
            wt = wt.wrapping_add(tile_bytes);
        }
        p0 += PX;
    }
}

/// Pixels `p0 .. p0 + npx` (`npx ≤ PX`) × channels `c0 .. c0 + rem` (`rem ≤ 16·NU`).
/// Pixels past `npx` recompute the last one (no branch in the tap loop); only `npx`
/// are stored.
///
/// # Safety
/// As [`dwconv`]; `wt` is the packed tile of channel `c0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn block<const T: usize, const NU: usize, const FLIP: bool>(
    args: &DwconvArgs,
    taps: usize,
    p0: usize,
    npx: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
) {
    let lmask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
    let mut idx = [_mm512_setzero_si512(); NU];
    for (r, x) in idx.iter_mut().enumerate() {
        // SAFETY: 64 bytes of the static table.
        *x = unsafe { _mm512_loadu_si512(PAIR_INDEX[r].as_ptr().cast()) };
    }
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let mut pix = [p0; PX];
    for (i, p) in pix.iter_mut().enumerate() {
        *p = p0 + i.min(npx - 1);
    }
    let mut acc = [[_mm512_setzero_si512(); NU]; PX];
    let pairs = taps.div_ceil(2);
    for pr in 0..pairs {
        let t0 = 2 * pr;
        // An odd last pair has no second tap: re-read the first (its weight is 0).
        let t1 = if t0 + 1 < taps { t0 + 1 } else { t0 };
        let mut w = [_mm512_setzero_si512(); NU];
        for r in 0..NU {
            // SAFETY: pair `pr` of the tile holds 64 dwords (256 bytes).
            w[r] = unsafe { _mm512_loadu_si512(wt.add(pr * 4 * CT + 64 * r).cast()) };
        }
        for i in 0..PX {
            // SAFETY: pix[i] < pixels, t0, t1 < taps; each row has `channels` bytes from
            // its start, so bytes c0 .. c0 + rem are readable (the rest masked).
            let (a, b) = unsafe {
                let r0 = tap_row(args, pix[i], t0).wrapping_add(c0);
                let r1 = tap_row(args, pix[i], t1).wrapping_add(c0);
                (_mm512_maskz_loadu_epi8(lmask, r0.cast()), _mm512_maskz_loadu_epi8(lmask, r1.cast()))
            };
            let (a, b) = if FLIP { (_mm512_xor_si512(a, flip), _mm512_xor_si512(b, flip)) } else { (a, b) };
            for r in 0..NU {
                let x = _mm512_maskz_permutex2var_epi8(PAIR_MASK, a, idx[r], b);
                acc[i][r] = _mm512_dpwssd_epi32(acc[i][r], x, w[r]);
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { epilogue::<NU>(args, p0, npx, c0, rem, &acc) }
}

/// Adds `col_offset` and runs the output stage on `npx` pixels × `rem` channels.
///
/// # Safety
/// As [`block`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline(never)]
#[allow(clippy::needless_range_loop)]
unsafe fn epilogue<const NU: usize>(
    args: &DwconvArgs,
    p0: usize,
    npx: usize,
    c0: usize,
    rem: usize,
    acc: &[[__m512i; NU]; PX],
) {
    let out = &args.out;
    let mut masks = [0 as __mmask16; NU];
    for (v, m) in masks.iter_mut().enumerate() {
        *m = lane_mask(rem, v);
    }
    let mut colo = [_mm512_setzero_si512(); NU];
    for v in 0..NU {
        // SAFETY: col_offset has `channels` entries; masked-off lanes are not read.
        colo[v] = unsafe { _mm512_maskz_loadu_epi32(masks[v], out.col_offset.wrapping_add(c0 + 16 * v)) };
    }
    let row = |i: usize| -> [__m512i; NU] {
        let mut r = acc[i];
        for v in 0..NU {
            r[v] = _mm512_add_epi32(r[v], colo[v]);
        }
        r
    };
    let stride = args.output_pixel_stride;
    match (out.kind, out.mode) {
        (OutputKind::I32, _) => {
            for i in 0..npx {
                let r = row(i);
                let c = args.output.cast::<i32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    // SAFETY: pixel p0+i, channels c0+16v.. < channels (masked).
                    unsafe { _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], r[v]) };
                }
            }
        }
        (OutputKind::F32, _) => {
            let mut scale = [_mm512_setzero_ps(); NU];
            let mut bias = [_mm512_setzero_ps(); NU];
            for v in 0..NU {
                // SAFETY: scale has `channels` entries for F32; bias_f32 too when non-null.
                unsafe {
                    scale[v] = _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(c0 + 16 * v));
                    if !out.bias_f32.is_null() {
                        bias[v] = _mm512_maskz_loadu_ps(masks[v], out.bias_f32.wrapping_add(c0 + 16 * v));
                    }
                }
            }
            for i in 0..npx {
                let r = row(i);
                let c = args.output.cast::<f32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    // Multiply, then add (no FMA), `+ 0.0` without a bias: the reference.
                    let y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(r[v]), scale[v]), bias[v]);
                    // SAFETY: as for I32.
                    unsafe { _mm512_mask_storeu_ps(c.wrapping_add(16 * v), masks[v], y) };
                }
            }
        }
        (OutputKind::U8 | OutputKind::I8, mode) => {
            let zp = out.out_zero_point as i64;
            let (lo, hi) = (out.qmin as i64 - zp, out.qmax as i64 - zp);
            const EXACT: i64 = 1 << 24;
            if out.qmin > out.qmax || (mode == RequantMode::Fp32 && !(-EXACT <= lo && hi <= EXACT)) {
                // Outside the contract's clamp bounds: the scalar reference per element.
                let mut lanes = [0i32; 16];
                for i in 0..npx {
                    let r = row(i);
                    for v in 0..NU {
                        // SAFETY: `lanes` holds 16 i32.
                        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), r[v]) };
                        for (jj, &a) in lanes.iter().enumerate().take(rem.saturating_sub(16 * v).min(16)) {
                            // SAFETY: pixel p0+i < pixels, channel < channels.
                            unsafe { store_one(args, p0 + i, c0 + 16 * v + jj, a) };
                        }
                    }
                }
                return;
            }
            if mode == RequantMode::Fp32 {
                // As the GEMM epilogue: clamp the float to the small integer bounds
                // before converting (rounding is monotone), NaN → 0.
                let lo_f = _mm512_set1_ps(lo as f32);
                let hi_f = _mm512_set1_ps(hi as f32);
                let zpv = _mm512_set1_epi32(out.out_zero_point);
                let mut scale = [_mm512_setzero_ps(); NU];
                for v in 0..NU {
                    // SAFETY: scale has `channels` entries in Fp32 mode.
                    scale[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(c0 + 16 * v)) };
                }
                let all_finite =
                    scale.iter().all(|&s| _mm512_cmp_ps_mask::<_CMP_ORD_Q>(_mm512_sub_ps(s, s), s) == 0xffff);
                for i in 0..npx {
                    let r = row(i);
                    let c = args.output.wrapping_add((p0 + i) * stride + c0);
                    for v in 0..NU {
                        let x = _mm512_mul_ps(_mm512_cvtepi32_ps(r[v]), scale[v]);
                        let x = if all_finite {
                            x
                        } else {
                            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), x)
                        };
                        let x = _mm512_min_ps(_mm512_max_ps(x, lo_f), hi_f);
                        let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                        let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, zpv));
                        // SAFETY: pixel p0+i, channels c0+16v.. < channels (masked).
                        unsafe { _mm_mask_storeu_epi8(c.wrapping_add(16 * v).cast(), masks[v], bytes) };
                    }
                }
                return;
            }
            let single = mode == RequantMode::SingleRounding;
            let bounds = Bounds {
                zp: _mm512_set1_epi64(zp),
                qmin: _mm512_set1_epi64(out.qmin as i64),
                qmax: _mm512_set1_epi64(out.qmax as i64),
            };
            let mut cols = [[FixedCols::double(_mm512_setzero_si512()); 2]; NU];
            let mut any_shl = false;
            for v in 0..NU {
                for h in 0..2 {
                    let m8 = (masks[v] >> (8 * h)) as __mmask8;
                    // SAFETY: qmult has `channels` entries in the fixed-point modes; one
                    // {multiplier, shift} per i64 lane; masked-off lanes are not read.
                    let q = unsafe {
                        _mm512_maskz_loadu_epi64(m8, out.qmult.wrapping_add(c0 + 16 * v + 8 * h).cast())
                    };
                    cols[v][h] = if single { FixedCols::single(q) } else { FixedCols::double(q) };
                    any_shl |= cols[v][h].shl != 0;
                }
            }
            for i in 0..npx {
                let r = row(i);
                let c = args.output.wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    let a_lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(r[v]));
                    let a_hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(r[v]));
                    let (q_lo, q_hi) = if single {
                        (requant_single(a_lo, &cols[v][0], any_shl, &bounds), requant_single(a_hi, &cols[v][1], any_shl, &bounds))
                    } else {
                        (requant_double(a_lo, &cols[v][0], any_shl, &bounds), requant_double(a_hi, &cols[v][1], any_shl, &bounds))
                    };
                    let bytes = _mm_unpacklo_epi64(_mm512_cvtepi64_epi8(q_lo), _mm512_cvtepi64_epi8(q_hi));
                    // SAFETY: as above.
                    unsafe { _mm_mask_storeu_epi8(c.wrapping_add(16 * v).cast(), masks[v], bytes) };
                }
            }
        }
    }
}

/// Declares the plain entry points around the `#[target_feature]` kernel.
macro_rules! entry {
    ($name:ident, $t:literal, $flip:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`DwconvArgs`] contract for the `ct = 64` packed format
        /// (and the tap count the kernel is specialised for), and the CPU supports
        /// AVX-512 F/BW/VL/VNNI/VBMI (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &DwconvArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { dwconv::<$t, $flip>(args) }
        }
    };
}

entry!(dw_up64_u8a, 0, false, "Any tap count, u8 activations.");
entry!(dw_up64_i8a, 0, true, "Any tap count, i8 activations.");
entry!(dw_9p64_u8a, 9, false, "9 taps (3×3), u8 activations.");
entry!(dw_9p64_i8a, 9, true, "9 taps (3×3), i8 activations.");
entry!(dw_25p64_u8a, 25, false, "25 taps (5×5), u8 activations.");
entry!(dw_25p64_i8a, 25, true, "25 taps (5×5), i8 activations.");

const fn desc(name: &'static str, taps: Option<usize>, u8a: crate::DwconvUkernelFn, i8a: crate::DwconvUkernelFn) -> DwconvUkernel {
    DwconvUkernel {
        name,
        isa: Isa::Avx512Vnni,
        extra_features: &["avx512vbmi"],
        taps,
        format: DwPackFormat { ct: CT },
        a_offset: [0, 128],
        run: [Some(u8a), Some(i8a)],
    }
}

/// `qx8_dwconv_up64__avx512vnni`: any tap count, 64-channel tiles.
pub const QX8_DWCONV_UP64__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_up64__avx512vnni", None, dw_up64_u8a, dw_up64_i8a);
/// `qx8_dwconv_9p64__avx512vnni`: 3×3 filters (the tap loop unrolled).
pub const QX8_DWCONV_9P64__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_9p64__avx512vnni", Some(9), dw_9p64_u8a, dw_9p64_i8a);
/// `qx8_dwconv_25p64__avx512vnni`: 5×5 filters.
pub const QX8_DWCONV_25P64__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_25p64__avx512vnni", Some(25), dw_25p64_u8a, dw_25p64_i8a);

/// AVX-512 depthwise kernels, least preferred first (specialised ones last: dispatch
/// takes the last that handles the tap count).
pub const DWCONV_KERNELS: &[DwconvUkernel] =
    &[QX8_DWCONV_UP64__AVX512VNNI, QX8_DWCONV_9P64__AVX512VNNI, QX8_DWCONV_25P64__AVX512VNNI];
