//! The depthwise tester: every registered [`DwconvUkernel`] against [`dwconv_i64`] and
//! [`output_stage_ref`], bit for bit.
//!
//! Families: channels 1..=70 (every remainder of 16 and 64) and a few wide ones; every
//! tap count 1..=25 for a generic kernel (only its own count for a specialised one);
//! 1..=9 pixels per call (full and partial pixel blocks); random data with padding taps;
//! the extremes (all activations and weights at the type's ends, zero points at the
//! edges, per-channel weight zero points); biases putting results exactly at
//! `i32::MAX`/`i32::MIN`; every output stage (I32, F32 with and without bias, U8/I8 in
//! every requantization mode with random clamps). Tap rows lie in a buffer with poison
//! between them, outputs in a strided buffer with canaries around and between pixels.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::{GUARD, I32_MAX, Rng, StageSpec, pow2, show, zero_point_edges};
use crate::pack::pack_dwconv;
use crate::reference::{RefOutput, dwconv_i64, output_stage_ref, quantize_multiplier};
use crate::types::{
    DW_ZERO_TAP, DwconvArgs, DwconvUkernel, DwconvUkernelFn, Int8, OutputKind, OutputStage, QuantizedMultiplier,
    RequantMode,
};

/// What [`check_dwconv_ukernel`] ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DwconvTestSummary {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Activation types tested (entry points).
    pub combos: usize,
    /// Distinct inputs.
    pub cases: usize,
    /// Kernel calls, each checked element by element.
    pub calls: usize,
}

/// How a case's data is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    Random,
    /// Activations at one end of their type, weights at one end, zero points at edges.
    Extreme,
}

/// Runs every entry point of `kernel` through the families above. Panics on the first
/// mismatch, naming the kernel, types, shape, stage and element.
///
/// # Safety
/// `kernel`'s entry points implement the [`DwconvUkernelFn`] contract and this CPU has
/// `kernel.isa` and its `extra_features`.
pub unsafe fn check_dwconv_ukernel(kernel: &DwconvUkernel) -> DwconvTestSummary {
    let mut t = DwTester {
        kernel,
        rng: Rng::new(Rng::seed_from_str(kernel.name)),
        summary: DwconvTestSummary { kernel: kernel.name, ..Default::default() },
    };
    for a_signed in [false, true] {
        let Some(f) = kernel.run[a_signed as usize] else { continue };
        t.summary.combos += 1;
        // SAFETY: forwarded.
        unsafe {
            if a_signed {
                t.combo::<i8, u8>(f);
                t.combo::<i8, i8>(f);
            } else {
                t.combo::<u8, u8>(f);
                t.combo::<u8, i8>(f);
            }
        }
    }
    t.summary
}

/// A 3×3 convolution's geometry over an image of `iw` columns (padding `pad` on the left
/// and top; the right and bottom pad what the output needs).
#[derive(Clone, Copy, Debug)]
struct Grid {
    iw: usize,
    stride: usize,
    pad: usize,
    dil: usize,
}

impl Grid {
    /// Output columns (`iw + 2·pad ≥ 2·dil + 1` by construction).
    fn out_w(&self) -> usize {
        (self.iw + 2 * self.pad - 2 * self.dil - 1) / self.stride + 1
    }
}

struct DwTester<'k> {
    kernel: &'k DwconvUkernel,
    rng: Rng,
    summary: DwconvTestSummary,
}

impl DwTester<'_> {
    /// # Safety
    /// As [`check_dwconv_ukernel`].
    unsafe fn combo<A: Int8, B: Int8>(&mut self, f: DwconvUkernelFn) {
        let tap_counts: Vec<usize> = match self.kernel.taps {
            Some(t) => vec![t],
            None => (1..=25).collect(),
        };
        let mut channels: Vec<usize> = (1..=70).collect();
        channels.extend([96, 127, 144, 192, 200]);
        for (i, &c) in channels.iter().enumerate() {
            for (j, &taps) in tap_counts.iter().enumerate() {
                // Every channel count with every tap count for specialised kernels; a
                // rotating subset of tap counts (always including 9 and 25) otherwise.
                if tap_counts.len() > 1 && (i + j) % 5 != 0 && taps != 9 && taps != 25 && c > 20 {
                    continue;
                }
                let pixels = 1 + self.rng.below(9);
                // SAFETY: forwarded.
                unsafe { self.run_case::<A, B>(f, c, taps, pixels, Data::Random) };
            }
        }
        // 3×3 filters on real image geometries (kernels that share columns between
        // neighbouring pixels must find them): stride 1 and 2, dilation 1 and 2, padding,
        // calls crossing output rows and long runs of pixels.
        if tap_counts.contains(&9) {
            for (k, c) in [1usize, 16, 17, 33, 64, 96, 127, 144].into_iter().enumerate() {
                for stride in [1, 2] {
                    let dil = if k % 3 == 2 { 2 } else { 1 };
                    let iw = 2 * dil + 1 + self.rng.below(12);
                    let pad = self.rng.below(2) * dil;
                    let pixels = 1 + self.rng.below(60);
                    let data = if k % 2 == 1 { Data::Extreme } else { Data::Random };
                    // SAFETY: forwarded.
                    unsafe { self.run_grid::<A, B>(f, c, pixels, data, Grid { iw, stride, pad, dil }) };
                }
            }
        }
        for &taps in &tap_counts {
            for c in [1, 15, 16, 17, 63, 64, 65, 70] {
                for _ in 0..3 {
                    let pixels = 1 + self.rng.below(9);
                    // SAFETY: forwarded.
                    unsafe { self.run_case::<A, B>(f, c, taps, pixels, Data::Extreme) };
                }
            }
        }
    }

    /// [`Self::run_case`] with random tap rows.
    ///
    /// # Safety
    /// As [`check_dwconv_ukernel`].
    unsafe fn run_case<A: Int8, B: Int8>(&mut self, f: DwconvUkernelFn, ch: usize, taps: usize, pixels: usize, data: Data) {
        // SAFETY: forwarded.
        unsafe { self.run_layout::<A, B>(f, ch, taps, pixels, data, None) }
    }

    /// [`Self::run_case`] for a 3×3 filter on an image of `grid.iw` columns.
    ///
    /// # Safety
    /// As [`check_dwconv_ukernel`].
    unsafe fn run_grid<A: Int8, B: Int8>(&mut self, f: DwconvUkernelFn, ch: usize, pixels: usize, data: Data, grid: Grid) {
        // SAFETY: forwarded.
        unsafe { self.run_layout::<A, B>(f, ch, 9, pixels, data, Some(grid)) }
    }

    /// One input, every output stage; tap rows random (`grid` None) or those of a 3×3
    /// convolution over an image.
    ///
    /// # Safety
    /// As [`check_dwconv_ukernel`].
    unsafe fn run_layout<A: Int8, B: Int8>(
        &mut self,
        f: DwconvUkernelFn,
        ch: usize,
        taps: usize,
        pixels: usize,
        data: Data,
        grid: Option<Grid>,
    ) {
        self.summary.cases += 1;
        let kernel = self.kernel;
        let rng = &mut self.rng;
        // Tap rows: `rows` rows of `ch` bytes, `gap` poison bytes apart (for a grid, the
        // image's pixels row-major: enough image rows for every output pixel).
        let rows = match grid {
            None => 1 + rng.below(taps * pixels + 1),
            Some(g) => {
                let ow = g.out_w();
                let oh = pixels.div_ceil(ow);
                g.iw * ((oh - 1) * g.stride + 2 * g.dil + 1)
            }
        };
        let gap = rng.pick(&[0usize, 1, 5, 64]);
        let row_stride = ch + gap;
        let (za, zw): (i32, Vec<i32>) = match data {
            Data::Random => {
                let za = if rng.chance(1, 4) { rng.pick(&zero_point_edges::<A>()) } else { rng.range_i32(A::MIN, A::MAX) };
                let zw = if rng.chance(1, 2) {
                    vec![rng.range_i32(B::MIN, B::MAX)]
                } else {
                    (0..ch).map(|_| rng.range_i32(B::MIN, B::MAX)).collect()
                };
                (za, zw)
            }
            Data::Extreme => {
                let za = rng.pick(&zero_point_edges::<A>());
                let edges = zero_point_edges::<B>();
                let zw = if rng.chance(1, 2) {
                    vec![rng.pick(&edges)]
                } else {
                    (0..ch).map(|_| rng.pick(&edges)).collect()
                };
                (za, zw)
            }
        };
        let mut input: Vec<A> = (0..rows * row_stride + 64).map(|_| A::from_bits(rng.next_u64() as u8)).collect();
        // The weights the kernel may be given: centred values its format holds (i8
        // kernels: within [−128, 127] of the channel's zero point).
        let fmt = kernel.format;
        let wrange = |z: i32| -> (i32, i32) {
            let (mut lo, mut hi) = (B::MIN, B::MAX);
            while !fmt.holds(lo - z) {
                lo += 1;
            }
            while !fmt.holds(hi - z) {
                hi -= 1;
            }
            (lo, hi)
        };
        let zw_of = |i: usize| if zw.len() == 1 { zw[0] } else { zw[i / taps] };
        let weights: Vec<B> = match data {
            Data::Random => (0..ch * taps)
                .map(|i| {
                    let (lo, hi) = wrange(zw_of(i));
                    if (lo, hi) == (B::MIN, B::MAX) {
                        B::from_bits(rng.next_u64() as u8)
                    } else {
                        B::saturate_from(rng.range_i32(lo, hi))
                    }
                })
                .collect(),
            Data::Extreme => {
                // Each channel's weights at the end farthest from its zero point, or
                // alternating ends; activations at the end farthest from za.
                let xa = if za - A::MIN > A::MAX - za { A::MIN } else { A::MAX };
                for r in 0..rows {
                    for x in &mut input[r * row_stride..r * row_stride + ch] {
                        *x = A::saturate_from(if rng.chance(7, 8) { xa } else { A::MIN + A::MAX - xa });
                    }
                }
                let alt = rng.chance(1, 2);
                (0..ch * taps)
                    .map(|i| {
                        let z = zw_of(i);
                        let (lo, hi) = wrange(z);
                        let far = if z - lo > hi - z { lo } else { hi };
                        let v = if alt && i % 2 == 1 { lo + hi - far } else { far };
                        B::saturate_from(v)
                    })
                    .collect()
            }
        };
        let pad_chance = if rng.chance(1, 3) { 0 } else { rng.below(3) + 1 };
        let indirection: Vec<usize> = match grid {
            None => (0..pixels * taps)
                .map(|_| if rng.below(8) < pad_chance { DW_ZERO_TAP } else { rng.below(rows) * row_stride })
                .collect(),
            Some(g) => {
                let (ow, ih) = (g.out_w(), rows / g.iw);
                (0..pixels * 9)
                    .map(|i| {
                        let (p, t) = (i / 9, i % 9);
                        let iy = ((p / ow) * g.stride + (t / 3) * g.dil) as isize - g.pad as isize;
                        let ix = ((p % ow) * g.stride + (t % 3) * g.dil) as isize - g.pad as isize;
                        if (0..ih as isize).contains(&iy) && (0..g.iw as isize).contains(&ix) {
                            (iy as usize * g.iw + ix as usize) * row_stride
                        } else {
                            DW_ZERO_TAP
                        }
                    })
                    .collect()
            }
        };
        // The zero-point row, with poison after it.
        let mut zero: Vec<u8> = vec![A::saturate_from(za).to_bits(); ch];
        zero.extend((0..64).map(|_| rng.next_u64() as u8));

        let mut acc = vec![0i64; pixels * ch];
        dwconv_i64(ch, taps, pixels, &input, &indirection, za, &weights, &zw, &mut acc);

        // Bias: random, or at the edge of the room each channel has.
        let edges = rng.chance(1, 3);
        let bias: Vec<i32> = (0..ch)
            .map(|c| {
                let col = acc.iter().skip(c).step_by(ch);
                let hi = col.clone().copied().max().unwrap_or(0);
                let lo = col.copied().min().unwrap_or(0);
                let bmin = (i32::MIN as i64 - lo).max(i32::MIN as i64);
                let bmax = (I32_MAX - hi).min(I32_MAX);
                let b = if edges {
                    match rng.below(3) {
                        0 => bmax,
                        1 => bmin,
                        _ => 0,
                    }
                } else {
                    rng.range_i64(-(1 << 20), 1 << 20).clamp(bmin, bmax)
                };
                b as i32
            })
            .collect();

        // What the driver computes: the packed filter and col_offset = −za'·Σwc + bias.
        let boff = rng.below(4);
        let mut packed = vec![0u8; boff + fmt.packed_bytes(ch, taps) + 64];
        for b in packed.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        let mut sums = vec![0i32; ch];
        pack_dwconv(fmt, &weights, ch, taps, &zw, &mut packed[boff..], &mut sums);
        let za_k = za + kernel.a_offset[A::SIGNED as usize];
        let col_offset: Vec<i32> = (0..ch).map(|c| bias[c].wrapping_sub(za_k.wrapping_mul(sums[c]))).collect();

        // Output-stage parameters, as the GEMM tester draws them.
        let f32_scale: Vec<f32> = (0..ch).map(|_| (pow2(rng.range_i32(-16, 2)) * (1.0 + rng.unit_f64())) as f32).collect();
        let bias_f32: Vec<f32> = (0..ch).map(|_| ((rng.unit_f64() - 0.5) * 2000.0) as f32).collect();
        let amax = acc
            .iter()
            .enumerate()
            .map(|(i, &v)| (v + bias[i % ch] as i64).unsigned_abs())
            .max()
            .unwrap_or(0)
            .max(1);
        let l2 = 63 - amax.leading_zeros() as i32;
        let real: Vec<f32> = (0..ch)
            .map(|_| {
                (match rng.below(8) {
                    0 => pow2(rng.range_i32(-l2 - 1, 2)),
                    1 => pow2(rng.range_i32(-44, -30)) * (1.0 + rng.unit_f64()),
                    2 => pow2(rng.range_i32(0, 10)) * (1.0 + rng.unit_f64()),
                    _ => pow2(rng.range_i32(-2, 9) - l2) * (1.0 + rng.unit_f64()),
                }) as f32
            })
            .collect();
        let qm_double: Vec<QuantizedMultiplier> =
            real.iter().map(|&r| quantize_multiplier(r as f64, RequantMode::TfliteDoubleRounding)).collect();
        let qm_single: Vec<QuantizedMultiplier> =
            real.iter().map(|&r| quantize_multiplier(r as f64, RequantMode::SingleRounding)).collect();
        let mut specs = vec![
            StageSpec { kind: OutputKind::I32, mode: RequantMode::Fp32, ozp: 0, qmin: 0, qmax: 0, with_bias_f32: false },
            StageSpec { kind: OutputKind::F32, mode: RequantMode::Fp32, ozp: 0, qmin: 0, qmax: 0, with_bias_f32: rng.chance(1, 2) },
        ];
        for mode in RequantMode::ALL {
            for kind in [OutputKind::U8, OutputKind::I8] {
                let (lo, hi) = if kind == OutputKind::U8 { (0, 255) } else { (-128, 127) };
                let ozp = match rng.below(4) {
                    0 => lo,
                    1 => hi,
                    _ => rng.range_i32(lo, hi),
                };
                let (qmin, qmax) = match rng.below(4) {
                    0 | 1 => (lo, hi),
                    2 => (ozp, hi),
                    _ => {
                        let (x, y) = (rng.range_i32(lo, hi), rng.range_i32(lo, hi));
                        (x.min(y), x.max(y))
                    }
                };
                specs.push(StageSpec { kind, mode, ozp, qmin, qmax, with_bias_f32: false });
            }
        }

        for spec in specs {
            let (scale, qmult): (&[f32], &[QuantizedMultiplier]) = match (spec.kind, spec.mode) {
                (OutputKind::I32, _) => (&[], &[]),
                (OutputKind::F32, _) => (&f32_scale, &[]),
                (_, RequantMode::Fp32) => (&real, &[]),
                (_, RequantMode::TfliteDoubleRounding) => (&[], &qm_double),
                (_, RequantMode::SingleRounding) => (&[], &qm_single),
            };
            let bias_f32_opt = if spec.with_bias_f32 { Some(&bias_f32[..]) } else { None };
            let null_f = core::ptr::null::<f32>();
            let stage = OutputStage {
                kind: spec.kind,
                mode: spec.mode,
                col_offset: col_offset.as_ptr(),
                scale: if scale.is_empty() { null_f } else { scale.as_ptr() },
                bias_f32: bias_f32_opt.map_or(null_f, |b| b.as_ptr()),
                qmult: if qmult.is_empty() { core::ptr::null() } else { qmult.as_ptr() },
                out_zero_point: spec.ozp,
                qmin: spec.qmin,
                qmax: spec.qmax,
            };
            let ref_out = RefOutput {
                kind: spec.kind,
                mode: spec.mode,
                bias_i32: Some(&bias),
                scale,
                bias_f32: bias_f32_opt,
                qmult,
                out_zero_point: spec.ozp,
                qmin: spec.qmin,
                qmax: spec.qmax,
            };
            let esz = spec.elem_bytes();
            let ostride = ch + self.rng.pick(&[0usize, 0, 1, 3]);
            let elems = GUARD + (pixels - 1) * ostride + ch + GUARD;
            let canary = self.rng.next_u64() as u32;
            let canary = if esz == 4 { canary } else { canary & 0xff };
            let mut words: Vec<u32> = vec![if esz == 4 { canary } else { canary * 0x0101_0101 }; (elems * esz).div_ceil(4)];
            let base = words.as_mut_ptr().cast::<u8>();
            let args = DwconvArgs {
                channels: ch,
                taps,
                pixels,
                input: input.as_ptr().cast(),
                indirection: indirection.as_ptr(),
                zero: zero.as_ptr(),
                weights: packed[boff..].as_ptr(),
                output: base.wrapping_add(GUARD * esz),
                output_pixel_stride: ostride,
                out: stage,
            };
            // SAFETY: `f` runs on this CPU (contract). Every indirection entry is a row
            // start with `ch` bytes after it or DW_ZERO_TAP; `zero` holds ch bytes; the
            // filter is packed in the kernel's format; the tables the stage reads hold ch
            // entries; the output of (pixels−1)·ostride + ch elements lies in `words`;
            // the true results fit in i32 (bias chosen so).
            unsafe { f(&args) };
            self.summary.calls += 1;
            let read = |e: usize| -> u32 {
                if esz == 4 { words[e] } else { bytemuck::cast_slice::<u32, u8>(&words)[e] as u32 }
            };
            for e in 0..elems {
                let got = read(e);
                let inside = e >= GUARD && (e - GUARD) / ostride < pixels && (e - GUARD) % ostride < ch;
                let ctx = || {
                    format!(
                        "kernel `{}` ({}x{}) {:?}: channels={ch} taps={taps} pixels={pixels} za={za} zw={:?} out stride={ostride} grid={grid:?}, output {}",
                        kernel.name,
                        A::NAME,
                        B::NAME,
                        data,
                        if zw.len() == 1 { &zw[..] } else { &zw[..zw.len().min(8)] },
                        spec.describe()
                    )
                };
                if !inside {
                    assert!(got == canary, "{}: wrote outside the output at element {e}", ctx());
                    continue;
                }
                let (p, c) = ((e - GUARD) / ostride, (e - GUARD) % ostride);
                let exp = output_stage_ref(acc[p * ch + c], c, &ref_out);
                let exp = match spec.kind {
                    OutputKind::I32 => exp as i32 as u32,
                    OutputKind::F32 => exp as u32,
                    OutputKind::U8 | OutputKind::I8 => exp as u8 as u32,
                };
                assert!(
                    got == exp,
                    "{}: mismatch at (pixel, channel) = ({p}, {c}): got {}, expected {} (exact {} + bias {})",
                    ctx(),
                    show(spec.kind, got),
                    show(spec.kind, exp),
                    acc[p * ch + c],
                    bias[c]
                );
            }
        }
    }
}
