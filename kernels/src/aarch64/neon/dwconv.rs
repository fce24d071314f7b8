//! NEON depthwise microkernels: 16-channel tiles (8 channels per step), i16 widening
//! `smlal`/`smlal2` into i32.
//!
//! The packed filter is the shared `{ct: 16, kr: 2}` layout of [`DwPackFormat`]: per tap
//! pair, 16 dwords `(wc[t][c], wc[t+1][c])` of centred i16 weights. One `ld2` of 32 bytes
//! splits 8 of them into the even-tap and the odd-tap vector, so each tap multiplies 8
//! channels with no shuffle of the activations.
//!
//! Per output pixel and tap, 16 channel bytes of the tap row are loaded and widened to
//! i16 (`uxtl`/`sxtl` per activation type, no operand offset), then `smlal` / `smlal2`
//! (`vmlal_s16` / `vmlal_high_s16`) multiply them by the tap's weights into four i32x4
//! accumulators.
//!
//! Exactness (no overflow anywhere but the contract's wrapping accumulation):
//! * the widened activation is the exact value `x ∈ [−128, 255]`, the packed weight the
//!   exact `wc` with `|wc| ≤ 32768` (the i16 format; the driver's centred weights are
//!   within ±255);
//! * `smlal` forms the full 32-bit product of two i16 lanes — `|x·wc| ≤ 255·32768 < 2^31`
//!   — and adds it to its own i32 lane: no i16 intermediate sum of two products exists
//!   (the `smull`+`sadalp` pairing would need `2·|x·w| ≤ 32767`, which two 255·255
//!   products break), so every product enters its accumulator exactly;
//! * the accumulators wrap modulo 2^32, as the [`DwconvArgs`] contract asks; the driver
//!   guarantees the true sum fits (`taps ≤ DW_MAX_TAPS`, its i64 fallback otherwise).
//!
//! `PX` pixels are computed together so each tap pair's weights are loaded once for all
//! of them (16 accumulators + 4 weight vectors + temporaries fit the 32 registers). A
//! tile of at most 8 channels runs the one-vector variant. Tap rows are read for the
//! tile's channels only: a partial tile copies its bytes to a zeroed stack buffer.
//!
//! Output stage: I32, F32 and the `Fp32` requantization vectorised 4 channels at a time
//! (the GEMM epilogue's instruction sequence: `scvtf`, separate `fmul`/`fadd`, `fcvtns`
//! — round half to even, saturating, NaN → 0 — a saturating zero-point add, then
//! `max(qmin)`, `min(qmax)`), lanes past the channel count and the fixed-point modes
//! through the portable per-element code, the reference's own formula.

use core::arch::aarch64::*;

use crate::generic::dwconv::{store_one, tap_row};
use crate::types::{DwPackFormat, DwconvArgs, DwconvUkernel, Isa, OutputKind, RequantMode};

/// Channels per tile.
const CT: usize = 16;
/// Pixels per block.
const PX: usize = 4;

/// `8·H` bytes of a tap row from `p`, widened to `H` i16x8 vectors; with `rem < 8·H`
/// only `rem` bytes are read and the rest are zero.
///
/// # Safety
/// `p` is readable for `min(rem, 8·H)` bytes.
#[inline(always)]
unsafe fn load_row<const H: usize, const SIGNED: bool>(p: *const u8, rem: usize) -> [int16x8_t; H] {
    let mut buf = [0u8; 16];
    let src = if rem >= 8 * H {
        p
    } else {
        // SAFETY: `rem < 8·H ≤ 16` bytes are readable from `p` and fit `buf`.
        unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), rem) };
        buf.as_ptr()
    };
    // SAFETY: NEON is the AArch64 baseline.
    let mut out = [unsafe { vdupq_n_s16(0) }; H];
    // SAFETY: `src` is readable for 8·H bytes (the row, or `buf`).
    unsafe {
        if H == 2 {
            if SIGNED {
                let x = vld1q_s8(src.cast());
                out[0] = vmovl_s8(vget_low_s8(x));
                out[H - 1] = vmovl_high_s8(x);
            } else {
                let x = vld1q_u8(src);
                out[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(x)));
                out[H - 1] = vreinterpretq_s16_u16(vmovl_high_u8(x));
            }
        } else if SIGNED {
            out[0] = vmovl_s8(vld1_s8(src.cast()));
        } else {
            out[0] = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(src)));
        }
    }
    out
}

/// The kernel: `T` taps (0 = `args.taps`, any count), `SIGNED` activations.
///
/// Reads, per pixel and tap, `channels` bytes of the tap row (or of `zero`), the whole
/// packed filter (`ct = 16`, `kr = 2`), `channels` entries of each per-channel table the
/// output stage uses; writes only the `pixels × channels` output.
///
/// # Safety
/// `args` satisfies the [`DwconvArgs`] contract (`args.taps == T` when `T > 0`).
#[target_feature(enable = "neon")]
pub unsafe fn dwconv<const T: usize, const SIGNED: bool>(args: &DwconvArgs) {
    let mut p0 = 0;
    while p0 < args.pixels {
        let npx = PX.min(args.pixels - p0);
        // Pixels past `npx` repeat the last one (no branch in the tap loop; only `npx`
        // are stored).
        let pix: [usize; PX] = core::array::from_fn(|i| p0 + i.min(npx - 1));
        // SAFETY (both arms): forwarded contract; every `pix[i] < pixels`, `t < taps`.
        unsafe {
            if T > 0 {
                // Specialised: each tap row resolved once per pixel block for every
                // channel tile (the indirection's scalar work does not grow with C).
                let mut rows = [[core::ptr::null::<u8>(); T]; PX];
                for (i, r) in rows.iter_mut().enumerate() {
                    for (t, x) in r.iter_mut().enumerate() {
                        *x = tap_row(args, pix[i], t);
                    }
                }
                tiles::<SIGNED>(args, T, npx, p0, |i, t| rows[i][t]);
            } else {
                tiles::<SIGNED>(args, args.taps, npx, p0, |i, t| tap_row(args, pix[i], t));
            }
        }
        p0 += PX;
    }
}

/// Every channel tile of one pixel block: the full 16-channel tiles (straight loads),
/// then the last partial one (8-channel variant when it has at most 8).
///
/// # Safety
/// As [`dwconv`]; `row(i, t)` is the row of tap `t < taps` of pixel
/// `p0 + min(i, npx − 1)`, `p0 + npx ≤ pixels`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn tiles<const SIGNED: bool>(args: &DwconvArgs, taps: usize, npx: usize, p0: usize, row: impl Fn(usize, usize) -> *const u8 + Copy) {
    let tile_bytes = DwPackFormat { ct: CT, kr: 2 }.tile_bytes(taps);
    let full = args.channels / CT;
    let mut wt = args.weights;
    // SAFETY (each call): forwarded; `wt` is the packed tile of channel c0.
    unsafe {
        for tile in 0..full {
            block::<SIGNED, 2, true>(args, taps, p0, npx, CT * tile, CT, wt, row);
            wt = wt.wrapping_add(tile_bytes);
        }
        let (c0, rem) = (CT * full, args.channels - CT * full);
        match rem {
            0 => {}
            8 => block::<SIGNED, 1, true>(args, taps, p0, npx, c0, rem, wt, row),
            1..=7 => block::<SIGNED, 1, false>(args, taps, p0, npx, c0, rem, wt, row),
            _ => block::<SIGNED, 2, false>(args, taps, p0, npx, c0, rem, wt, row),
        }
    }
}

/// One pixel block × channels `c0 .. c0 + rem` (`rem ≤ 8·H`; `FULL`: `rem == 8·H`, the
/// rows are loaded directly): the sums over whole tap pairs, the odd last tap, then the
/// output stage.
///
/// # Safety
/// As [`tiles`]; `wt` is the packed tile of channel `c0`.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn block<const SIGNED: bool, const H: usize, const FULL: bool>(
    args: &DwconvArgs,
    taps: usize,
    p0: usize,
    npx: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
    row: impl Fn(usize, usize) -> *const u8,
) {
    let rem = if FULL { 8 * H } else { rem };
    let mut acc = [[vdupq_n_s32(0); 4]; PX];
    // SAFETY: pair `pr` of the tile holds 16 dwords (64 bytes), half h is bytes
    // 32h .. 32h + 32; rows: bytes c0 .. c0 + rem of the row of a tap < taps.
    unsafe {
        let weights = |pr: usize| -> [int16x8x2_t; H] { core::array::from_fn(|h| vld2q_s16(wt.add(pr * 4 * CT + 32 * h).cast())) };
        let x = |i: usize, t: usize| load_row::<H, SIGNED>(row(i, t).wrapping_add(c0), rem);
        for pr in 0..taps / 2 {
            let w = weights(pr);
            for i in 0..PX {
                let (x0, x1) = (x(i, 2 * pr), x(i, 2 * pr + 1));
                for h in 0..H {
                    acc[i][2 * h] = vmlal_s16(acc[i][2 * h], vget_low_s16(x0[h]), vget_low_s16(w[h].0));
                    acc[i][2 * h + 1] = vmlal_high_s16(acc[i][2 * h + 1], x0[h], w[h].0);
                    acc[i][2 * h] = vmlal_s16(acc[i][2 * h], vget_low_s16(x1[h]), vget_low_s16(w[h].1));
                    acc[i][2 * h + 1] = vmlal_high_s16(acc[i][2 * h + 1], x1[h], w[h].1);
                }
            }
        }
        if taps % 2 == 1 {
            // The last tap alone (its pair's odd weights are the packer's zeros).
            let (pr, t) = (taps / 2, taps - 1);
            let w = weights(pr);
            for i in 0..PX {
                let x0 = x(i, t);
                for h in 0..H {
                    acc[i][2 * h] = vmlal_s16(acc[i][2 * h], vget_low_s16(x0[h]), vget_low_s16(w[h].0));
                    acc[i][2 * h + 1] = vmlal_high_s16(acc[i][2 * h + 1], x0[h], w[h].0);
                }
            }
        }
        epilogue::<H>(args, p0, npx, c0, rem, &acc)
    }
}

/// Adds `col_offset` and writes the output stage of pixels `p0 .. p0 + npx` × channels
/// `c0 .. c0 + rem` (vector `v` of `acc[i]` holds channels `c0 + 4v ..`).
///
/// # Safety
/// As [`block`]; `p0 + npx ≤ pixels`, `c0 + rem ≤ channels`.
#[target_feature(enable = "neon")]
#[inline(never)]
unsafe fn epilogue<const H: usize>(args: &DwconvArgs, p0: usize, npx: usize, c0: usize, rem: usize, acc: &[[int32x4_t; 4]; PX]) {
    let out = &args.out;
    let stride = args.output_pixel_stride;
    let fixed = matches!(out.kind, OutputKind::U8 | OutputKind::I8) && out.mode != RequantMode::Fp32;
    for v in 0..2 * H {
        let (lo, n) = (4 * v, rem.saturating_sub(4 * v).min(4));
        if n == 0 {
            break;
        }
        let c = c0 + lo;
        if n < 4 || fixed {
            // Lanes past the channel count, or a fixed-point requantization: the portable
            // per-element code.
            for (i, a) in acc.iter().enumerate().take(npx) {
                let mut lanes = [0i32; 4];
                // SAFETY: `lanes` holds 4 i32.
                unsafe { vst1q_s32(lanes.as_mut_ptr(), a[v]) };
                for (j, &x) in lanes.iter().enumerate().take(n) {
                    // SAFETY: pixel p0+i < pixels, channel c+j < channels; col_offset has
                    // `channels` entries.
                    unsafe { store_one(args, p0 + i, c + j, x.wrapping_add(*out.col_offset.add(c + j))) };
                }
            }
            continue;
        }
        // SAFETY (every table read below): channels c .. c + 4 ≤ channels of each table
        // the stage uses (contract); the stores write 4 elements of pixel p0+i from
        // channel c, inside the output.
        unsafe {
            let colo = vld1q_s32(out.col_offset.add(c));
            match out.kind {
                OutputKind::I32 => {
                    for (i, a) in acc.iter().enumerate().take(npx) {
                        let dst = args.output.cast::<i32>().add((p0 + i) * stride + c);
                        vst1q_s32(dst, vaddq_s32(a[v], colo));
                    }
                }
                OutputKind::F32 => {
                    let scale = vld1q_f32(out.scale.add(c));
                    // The reference adds +0.0 without a bias (turning −0.0 into +0.0).
                    let bias = if out.bias_f32.is_null() { vdupq_n_f32(0.0) } else { vld1q_f32(out.bias_f32.add(c)) };
                    for (i, a) in acc.iter().enumerate().take(npx) {
                        let x = vcvtq_f32_s32(vaddq_s32(a[v], colo));
                        let dst = args.output.cast::<f32>().add((p0 + i) * stride + c);
                        vst1q_f32(dst, vaddq_f32(vmulq_f32(x, scale), bias));
                    }
                }
                OutputKind::U8 | OutputKind::I8 => {
                    let scale = vld1q_f32(out.scale.add(c));
                    let zp = vdupq_n_s32(out.out_zero_point);
                    let (qmin, qmax) = (vdupq_n_s32(out.qmin), vdupq_n_s32(out.qmax));
                    for (i, a) in acc.iter().enumerate().take(npx) {
                        let x = vcvtq_f32_s32(vaddq_s32(a[v], colo));
                        let q = vcvtnq_s32_f32(vmulq_f32(x, scale));
                        let q = vminq_s32(vmaxq_s32(vqaddq_s32(q, zp), qmin), qmax);
                        // Within the byte range now: each lane's low byte is the value.
                        let b = vmovn_s16(vcombine_s16(vmovn_s32(q), vdup_n_s16(0)));
                        let dst = args.output.add((p0 + i) * stride + c);
                        dst.cast::<u32>().write_unaligned(vget_lane_u32::<0>(vreinterpret_u32_s8(b)));
                    }
                }
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
        /// `args` satisfies the [`DwconvArgs`] contract for the `{ct: 16, kr: 2}` packed
        /// format (and the tap count the kernel is specialised for).
        pub unsafe fn $name(args: &DwconvArgs) {
            // SAFETY: forwarded contract; NEON is part of the AArch64 baseline.
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
        isa: Isa::Neon,
        extra_features: &[],
        taps,
        format: DwPackFormat { ct: CT, kr: 2 },
        a_offset: [0, 0],
        run: [Some(u8a), Some(i8a)],
    }
}

/// `qx8_dwconv_up16__neon`: any tap count, any weights.
pub const QX8_DWCONV_UP16__NEON: DwconvUkernel = desc("qx8_dwconv_up16__neon", None, dw_up16_u8a, dw_up16_i8a);
/// `qx8_dwconv_9p16__neon`: 3×3 filters (the tap loop unrolled), any weights.
pub const QX8_DWCONV_9P16__NEON: DwconvUkernel = desc("qx8_dwconv_9p16__neon", Some(9), dw_9p16_u8a, dw_9p16_i8a);
/// `qx8_dwconv_25p16__neon`: 5×5 filters, any weights.
pub const QX8_DWCONV_25P16__NEON: DwconvUkernel = desc("qx8_dwconv_25p16__neon", Some(25), dw_25p16_u8a, dw_25p16_i8a);

/// NEON depthwise kernels, least preferred first.
pub const DWCONV_KERNELS: &[DwconvUkernel] = &[QX8_DWCONV_UP16__NEON, QX8_DWCONV_9P16__NEON, QX8_DWCONV_25P16__NEON];
