//! AVX2 depthwise microkernels: 16-channel tiles, taps in pairs, `vpmaddwd`.
//!
//! Per output pixel and tap pair `(t, t+1)`: 16 channel bytes of each tap row,
//! interleaved (`vpunpckl/hbw`) into byte pairs `(x[t][c], x[t+1][c])`, widened to i16
//! (zero- or sign-extended per activation type, so no operand offset), and one
//! `vpmaddwd` per 8 channels with the packed centred weight pairs gives each channel's
//! two products summed in i32 — exact (`2·255·255` fits easily) — added to its
//! accumulator with wrapping `vpaddd`.
//!
//! `PX` pixels are computed together so that the tile's weights are loaded once per tap
//! pair. A last tile of fewer than 16 channels copies its bytes to a zeroed stack
//! buffer (never reading past `channels`) and finishes through the portable epilogue;
//! full tiles run the vectorised output stage for i32, f32 and the `Fp32`
//! requantization, and the portable per-element code for the fixed-point modes (as the
//! AVX2 GEMM kernels do).

use core::arch::x86_64::*;

use crate::generic::dwconv::{store_one, tap_row};
use crate::types::{DwPackFormat, DwconvArgs, DwconvUkernel, Isa, OutputKind, RequantMode};

/// Channels per tile.
const CT: usize = 16;
/// Pixels per block.
const PX: usize = 4;

/// 16 bytes of a tap row from channel `c0`; with `rem < 16`, only `rem` bytes are read
/// and the rest are zero.
///
/// # Safety
/// `p` is readable for `min(rem, 16)` bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_row(p: *const u8, rem: usize) -> __m128i {
    // SAFETY: forwarded.
    unsafe {
        if rem >= 16 {
            _mm_loadu_si128(p.cast())
        } else {
            let mut b = [0u8; 16];
            core::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), rem);
            _mm_loadu_si128(b.as_ptr().cast())
        }
    }
}

/// The kernel: `T` taps (0 = `args.taps`), `SIGNED` activations.
///
/// Reads, per pixel and tap, `channels` bytes of the tap row, the whole packed filter
/// (`ct = 16`), `channels` entries of the per-channel tables the stage uses; writes
/// only the `pixels × channels` output.
///
/// # Safety
/// `args` satisfies the [`DwconvArgs`] contract (`args.taps == T` when `T > 0`); the CPU
/// supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dwconv<const T: usize, const SIGNED: bool>(args: &DwconvArgs) {
    let taps = if T > 0 { T } else { args.taps };
    let tile_bytes = DwPackFormat { ct: CT, kr: 2 }.tile_bytes(taps);
    let mut p0 = 0;
    while p0 < args.pixels {
        let npx = PX.min(args.pixels - p0);
        let mut c0 = 0;
        let mut wt = args.weights;
        while c0 < args.channels {
            let rem = CT.min(args.channels - c0);
            // SAFETY: forwarded contract; `wt` is the tile of channel c0.
            unsafe { block::<T, SIGNED>(args, taps, p0, npx, c0, rem, wt) };
            c0 += CT;
            wt = wt.wrapping_add(tile_bytes);
        }
        p0 += PX;
    }
}

/// Pixels `p0 .. p0 + npx` × channels `c0 .. c0 + rem`.
///
/// # Safety
/// As [`dwconv`]; `wt` is the packed tile of channel `c0`, `npx ≤ PX`, `rem ≤ 16`.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const T: usize, const SIGNED: bool>(
    args: &DwconvArgs,
    taps: usize,
    p0: usize,
    npx: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
) {
    let pix: [usize; PX] = core::array::from_fn(|i| p0 + i.min(npx - 1));
    let mut acc = [[_mm256_setzero_si256(); 2]; PX];
    let widen = |x: __m128i| if SIGNED { _mm256_cvtepi8_epi16(x) } else { _mm256_cvtepu8_epi16(x) };
    for pr in 0..taps.div_ceil(2) {
        let t0 = 2 * pr;
        let t1 = if t0 + 1 < taps { t0 + 1 } else { t0 };
        // SAFETY: pair `pr` of the tile holds 16 dwords (64 bytes).
        let (w0, w1) = unsafe {
            let p = wt.add(pr * 4 * CT);
            (_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast()))
        };
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: pix[i] < pixels, t0, t1 < taps; bytes c0 .. c0 + rem of each row.
            let (x0, x1) = unsafe {
                (
                    load_row(tap_row(args, pix[i], t0).wrapping_add(c0), rem),
                    load_row(tap_row(args, pix[i], t1).wrapping_add(c0), rem),
                )
            };
            let lo = widen(_mm_unpacklo_epi8(x0, x1));
            let hi = widen(_mm_unpackhi_epi8(x0, x1));
            a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(lo, w0));
            a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(hi, w1));
        }
    }
    // SAFETY: forwarded.
    unsafe { epilogue(args, p0, npx, c0, rem, &acc) }
}

/// Adds `col_offset` and writes the output stage for `npx` pixels × `rem` channels.
///
/// # Safety
/// As [`block`].
#[target_feature(enable = "avx2")]
#[inline(never)]
unsafe fn epilogue(args: &DwconvArgs, p0: usize, npx: usize, c0: usize, rem: usize, acc: &[[__m256i; 2]; PX]) {
    let out = &args.out;
    let requant = matches!(out.kind, OutputKind::U8 | OutputKind::I8);
    let vector = rem == CT
        && (!requant
            || (out.mode == RequantMode::Fp32
                && [out.out_zero_point, out.qmin, out.qmax].iter().all(|v| (-(1 << 29)..(1 << 29)).contains(v))));
    if !vector {
        // A partial tile, or a fixed-point requantization: the portable per-element code.
        let mut lanes = [0i32; CT];
        for (i, a) in acc.iter().enumerate().take(npx) {
            // SAFETY: `lanes` holds 16 i32.
            unsafe {
                _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a[0]);
                _mm256_storeu_si256(lanes.as_mut_ptr().add(8).cast(), a[1]);
            }
            for (j, &x) in lanes.iter().enumerate().take(rem) {
                // SAFETY: pixel p0+i < pixels, channel c0+j < channels; col_offset has
                // `channels` entries.
                unsafe { store_one(args, p0 + i, c0 + j, x.wrapping_add(*out.col_offset.add(c0 + j))) };
            }
        }
        return;
    }
    // SAFETY (table reads): each per-channel table the stage uses has `channels ≥ c0 + 16`
    // entries.
    let colo = unsafe {
        [
            _mm256_loadu_si256(out.col_offset.add(c0).cast()),
            _mm256_loadu_si256(out.col_offset.add(c0 + 8).cast()),
        ]
    };
    let stride = args.output_pixel_stride;
    match out.kind {
        OutputKind::I32 => {
            for (i, a) in acc.iter().enumerate().take(npx) {
                let c = args.output.cast::<i32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..2 {
                    // SAFETY: 16 i32 of pixel p0+i from channel c0 (a full tile).
                    unsafe { _mm256_storeu_si256(c.add(8 * v).cast(), _mm256_add_epi32(a[v], colo[v])) };
                }
            }
        }
        OutputKind::F32 => {
            // SAFETY: as above.
            let (scale, bias) = unsafe {
                let s = [_mm256_loadu_ps(out.scale.add(c0)), _mm256_loadu_ps(out.scale.add(c0 + 8))];
                let b = if out.bias_f32.is_null() {
                    [_mm256_setzero_ps(); 2]
                } else {
                    [_mm256_loadu_ps(out.bias_f32.add(c0)), _mm256_loadu_ps(out.bias_f32.add(c0 + 8))]
                };
                (s, b)
            };
            for (i, a) in acc.iter().enumerate().take(npx) {
                let c = args.output.cast::<f32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..2 {
                    let x = _mm256_cvtepi32_ps(_mm256_add_epi32(a[v], colo[v]));
                    let y = _mm256_add_ps(_mm256_mul_ps(x, scale[v]), bias[v]);
                    // SAFETY: as for I32.
                    unsafe { _mm256_storeu_ps(c.add(8 * v), y) };
                }
            }
        }
        OutputKind::U8 | OutputKind::I8 => {
            // The AVX2 GEMM epilogue's Fp32 requantization: round half to even, NaN → 0,
            // clamp to ±2^30 before converting, add the zero point in i32, clamp.
            // SAFETY: as above.
            let scale = unsafe { [_mm256_loadu_ps(out.scale.add(c0)), _mm256_loadu_ps(out.scale.add(c0 + 8))] };
            let zp = _mm256_set1_epi32(out.out_zero_point);
            let (qmin, qmax) = (_mm256_set1_epi32(out.qmin), _mm256_set1_epi32(out.qmax));
            let lim = _mm256_set1_ps(1073741824.0);
            let nlim = _mm256_set1_ps(-1073741824.0);
            for (i, a) in acc.iter().enumerate().take(npx) {
                let mut q = [_mm256_setzero_si256(); 2];
                for v in 0..2 {
                    let p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a[v], colo[v])), scale[v]);
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
                    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
                    let r = _mm256_min_ps(_mm256_max_ps(r, nlim), lim);
                    let x = _mm256_add_epi32(_mm256_cvtps_epi32(r), zp);
                    q[v] = _mm256_min_epi32(_mm256_max_epi32(x, qmin), qmax);
                }
                // Values are within [−128, 255]: the saturating packs are exact.
                let w16 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q[0], q[1]));
                let w16 = (_mm256_castsi256_si128(w16), _mm256_extracti128_si256::<1>(w16));
                let bytes = if out.kind == OutputKind::U8 {
                    _mm_packus_epi16(w16.0, w16.1)
                } else {
                    _mm_packs_epi16(w16.0, w16.1)
                };
                let c = args.output.wrapping_add((p0 + i) * stride + c0);
                // SAFETY: 16 bytes of pixel p0+i from channel c0 (a full tile).
                unsafe { _mm_storeu_si128(c.cast(), bytes) };
            }
        }
    }
}

/// Declares the plain entry points around the `#[target_feature]` kernel.
macro_rules! entry {
    ($name:ident, $t:literal, $signed:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`DwconvArgs`] contract for the `ct = 16` packed format
        /// (and the tap count the kernel is specialised for); the CPU supports AVX2.
        pub unsafe fn $name(args: &DwconvArgs) {
            // SAFETY: forwarded contract.
            unsafe { dwconv::<$t, $signed>(args) }
        }
    };
}

entry!(dw_up16_u8a, 0, false, "Any tap count, u8 activations.");
entry!(dw_up16_i8a, 0, true, "Any tap count, i8 activations.");
entry!(dw_9p16_u8a, 9, false, "9 taps (3×3), u8 activations.");
entry!(dw_9p16_i8a, 9, true, "9 taps (3×3), i8 activations.");
entry!(dw_25p16_u8a, 25, false, "25 taps (5×5), u8 activations.");
entry!(dw_25p16_i8a, 25, true, "25 taps (5×5), i8 activations.");

const fn desc(name: &'static str, taps: Option<usize>, u8a: crate::DwconvUkernelFn, i8a: crate::DwconvUkernelFn) -> DwconvUkernel {
    DwconvUkernel {
        name,
        isa: Isa::Avx2,
        extra_features: &[],
        taps,
        format: DwPackFormat { ct: CT, kr: 2 },
        a_offset: [0, 0],
        run: [Some(u8a), Some(i8a)],
    }
}

/// `qx8_dwconv_up16__avx2`: any tap count.
pub const QX8_DWCONV_UP16__AVX2: DwconvUkernel = desc("qx8_dwconv_up16__avx2", None, dw_up16_u8a, dw_up16_i8a);
/// `qx8_dwconv_9p16__avx2`: 3×3 filters.
pub const QX8_DWCONV_9P16__AVX2: DwconvUkernel = desc("qx8_dwconv_9p16__avx2", Some(9), dw_9p16_u8a, dw_9p16_i8a);
/// `qx8_dwconv_25p16__avx2`: 5×5 filters.
pub const QX8_DWCONV_25P16__AVX2: DwconvUkernel =
    desc("qx8_dwconv_25p16__avx2", Some(25), dw_25p16_u8a, dw_25p16_i8a);

/// AVX2 depthwise kernels, least preferred first.
pub const DWCONV_KERNELS: &[DwconvUkernel] = &[QX8_DWCONV_UP16__AVX2, QX8_DWCONV_9P16__AVX2, QX8_DWCONV_25P16__AVX2];
