//! Depthwise convolution (groups = input channels = output channels, depth multiplier 1)
//! on NHWC tensors, through the depthwise microkernels.
//!
//! * [`DepthwiseFilter`] — the prepacked filter: centred weights (`w − zw[c]`, i16) in the
//!   chosen kernel's layout, plus `Σ_t (w − zw[c])` per channel.
//! * [`DepthwiseConv`] — a filter bound to one [`Conv2dGeometry`]: the indirection buffer
//!   (per output pixel, the byte offset of each tap's input pixel, or the zero-point row
//!   for padding) is built once, and the per-call tables live in the plan, so a second
//!   call on the same shape allocates nothing. Any kernel size, stride, dilation and
//!   asymmetric padding; 3×3 and 5×5 run specialised kernels.
//!
//! Exactness: each kernel sums `x·(w − zw)` in i32, exact for `taps ≤ 33025`; the
//! zero-point term `−za·Σ(w − zw)` and the i32 bias are one per-channel constant. When
//! `taps·max|x − za|·max|w − zw| + max|bias|` could pass i32, the kernel produces the
//! bias-free sum (still exact) and the bias and output stage are applied in i64, as the
//! reference does: requantized outputs saturate, an i32 output that does not fit is an
//! [`Error::Overflow`].
//!
//! ```
//! use qkern::conv::{Conv2dGeometry, DepthwiseConv, DepthwiseFilter};
//! use qkern::{Activations, Context, MatrixMut, MatrixRef, WeightQuant};
//! // One 3×3 image of 2 channels, a 3×3 filter per channel, pad 1.
//! let g = Conv2dGeometry { batch: 1, in_h: 3, in_w: 3, in_c: 2, out_c: 2, kernel_h: 3, kernel_w: 3,
//!     stride_h: 1, stride_w: 1, dilation_h: 1, dilation_w: 1,
//!     pad_top: 1, pad_left: 1, pad_bottom: 1, pad_right: 1, groups: 2 };
//! let x = [1u8; 18];
//! let w = [1i8; 18];
//! let ctx = Context::new().unwrap();
//! let f = DepthwiseFilter::new_in(&ctx, &w, 2, 3, 3, WeightQuant::per_tensor(0, 1.0)).unwrap();
//! let mut dw = DepthwiseConv::new(f, &g).unwrap();
//! let mut y = [0i32; 18];
//! dw.run_i32(&ctx, Activations::new(MatrixRef::new(&x, 9, 2), 0, 1.0), None, MatrixMut::new(&mut y, 9, 2)).unwrap();
//! assert_eq!(&y[..4], &[4, 4, 6, 6]); // a corner sees 4 pixels, an edge 6
//! ```

use qkern_kernels::pack::pack_dwconv;
use qkern_kernels::reference::{RefOutput, output_stage_ref, quantize_multiplier};
use qkern_kernels::{
    DW_MAX_TAPS, DW_ZERO_TAP, DwconvArgs, DwconvUkernel, DwconvUkernelFn, Int8, OutputKind, OutputStage,
    QuantizedMultiplier, RequantMode,
};
use rayon::prelude::*;

use super::Conv2dGeometry;
use crate::dispatch::{Context, dwconv_runs_here};
use crate::error::{Error, Result, check_matrix, check_scale};
use crate::gemm::{Activations, MatrixMut, Requantize, WeightQuant};

/// A validated depthwise geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dw {
    batch: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    oh: usize,
    ow: usize,
}

/// `(k − 1)·d + 1` and the output size along one axis, or an error naming the axis.
fn out_size(axis: &str, input: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Result<usize> {
    let eff = (k - 1)
        .checked_mul(d)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| Error::InvalidParameter(format!("dilated kernel {axis} overflows usize")))?;
    let padded = input
        .checked_add(p0)
        .and_then(|v| v.checked_add(p1))
        .ok_or_else(|| Error::InvalidParameter(format!("padded input {axis} overflows usize")))?;
    if padded < eff {
        return Err(Error::InvalidParameter(format!(
            "output {axis} would be ≤ 0: padded input {axis} {padded} < dilated kernel {axis} {eff}"
        )));
    }
    Ok((padded - eff) / s + 1)
}

impl Dw {
    fn new(g: &Conv2dGeometry) -> Result<Dw> {
        g.validate()?;
        for (what, v) in [
            ("batch", g.batch),
            ("in_h", g.in_h),
            ("in_w", g.in_w),
            ("in_c", g.in_c),
            ("kernel_h", g.kernel_h),
            ("kernel_w", g.kernel_w),
            ("stride_h", g.stride_h),
            ("stride_w", g.stride_w),
            ("dilation_h", g.dilation_h),
            ("dilation_w", g.dilation_w),
        ] {
            if v == 0 {
                return Err(Error::InvalidParameter(format!("geometry.{what} must be at least 1")));
            }
        }
        if g.groups != g.in_c || g.out_c != g.in_c {
            return Err(Error::Unsupported(format!(
                "depthwise convolution needs groups == in_c == out_c (depth multiplier 1); got groups {}, in_c {}, out_c {}",
                g.groups, g.in_c, g.out_c
            )));
        }
        let oh = out_size("height", g.in_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top, g.pad_bottom)?;
        let ow = out_size("width", g.in_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left, g.pad_right)?;
        let taps = g.kernel_h.saturating_mul(g.kernel_w);
        if taps > DW_MAX_TAPS {
            return Err(Error::Unsupported(format!(
                "a {}×{} depthwise filter has {taps} taps; at most {DW_MAX_TAPS} keep the i32 sums exact",
                g.kernel_h, g.kernel_w
            )));
        }
        // Every buffer size below must fit usize.
        for (what, dims) in [("input", [g.batch, g.in_h, g.in_w, g.in_c]), ("output", [g.batch, oh, ow, g.in_c])] {
            dims.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|v| v.checked_mul(taps))
                .ok_or_else(|| Error::InvalidParameter(format!("the {what} tensor size overflows usize")))?;
        }
        Ok(Dw {
            batch: g.batch,
            h: g.in_h,
            w: g.in_w,
            c: g.in_c,
            kh: g.kernel_h,
            kw: g.kernel_w,
            sh: g.stride_h,
            sw: g.stride_w,
            dh: g.dilation_h,
            dw: g.dilation_w,
            pt: g.pad_top,
            pl: g.pad_left,
            oh,
            ow,
        })
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// The indirection buffer of one image for input pixels `stride` elements apart:
    /// `oh·ow·taps` byte offsets from the image start, [`DW_ZERO_TAP`] for padding.
    ///
    /// Errors: a size that overflows or cannot be allocated (`Error::Overflow`), e.g. a
    /// geometry of a huge image, which must come back as an error, not an abort.
    fn indirection(&self, stride: usize) -> Result<Vec<usize>> {
        let n = self.oh.checked_mul(self.ow).and_then(|p| p.checked_mul(self.taps()));
        let mut buf = crate::error::try_vec_with_capacity(n, || {
            format!("the depthwise indirection buffer ({}×{} output pixels × {} taps)", self.oh, self.ow, self.taps())
        })?;
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                for ky in 0..self.kh {
                    // Input coordinates as i128: no overflow for any validated geometry.
                    let iy = (oy * self.sh + ky * self.dh) as i128 - self.pt as i128;
                    for kx in 0..self.kw {
                        let ix = (ox * self.sw + kx * self.dw) as i128 - self.pl as i128;
                        let inside = (0..self.h as i128).contains(&iy) && (0..self.w as i128).contains(&ix);
                        buf.push(if inside { (iy as usize * self.w + ix as usize) * stride } else { DW_ZERO_TAP });
                    }
                }
            }
        }
        Ok(buf)
    }
}

/// A prepacked depthwise filter: `channels` filters of `kernel_h × kernel_w` taps.
#[derive(Clone, Debug)]
pub struct DepthwiseFilter {
    channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    kernel: DwconvUkernel,
    packed: Vec<u8>,
    /// `Σ_t (w − zw[c])` per channel.
    sums: Vec<i32>,
    /// `max |w − zw[c]|` over all weights.
    max_abs_centered: i32,
    /// Per-channel weight scales, or empty.
    scale: Vec<f32>,
}

impl DepthwiseFilter {
    /// Packs `weights` (`channels × kernel_h × kernel_w`, the OHWI layout with one input
    /// channel per group) for the default context.
    pub fn new<B: Int8>(weights: &[B], channels: usize, kernel_h: usize, kernel_w: usize, quant: WeightQuant<'_>) -> Result<Self> {
        Self::new_in(&Context::new()?, weights, channels, kernel_h, kernel_w, quant)
    }

    /// Packs `weights` for the best depthwise kernel of `ctx` for this tap count.
    /// `quant`: zero points within `B` and scales (finite, positive), each one per
    /// tensor or one per channel; without scales only the i32 output is available.
    pub fn new_in<B: Int8>(
        ctx: &Context,
        weights: &[B],
        channels: usize,
        kernel_h: usize,
        kernel_w: usize,
        quant: WeightQuant<'_>,
    ) -> Result<Self> {
        if channels == 0 || kernel_h == 0 || kernel_w == 0 {
            return Err(Error::InvalidParameter(format!(
                "depthwise filter: channels ({channels}), kernel_h ({kernel_h}) and kernel_w ({kernel_w}) must be at least 1"
            )));
        }
        let taps = kernel_h.checked_mul(kernel_w).filter(|&t| t <= DW_MAX_TAPS).ok_or_else(|| {
            Error::Unsupported(format!("a {kernel_h}×{kernel_w} depthwise filter has more than {DW_MAX_TAPS} taps"))
        })?;
        let need = channels
            .checked_mul(taps)
            .ok_or_else(|| Error::InvalidParameter("depthwise filter size overflows usize".into()))?;
        if weights.len() != need {
            return Err(Error::ShapeMismatch(format!(
                "weights has {} values; a depthwise filter of {channels} channels × {kernel_h}×{kernel_w} needs {need}",
                weights.len()
            )));
        }
        let zw = quant.zero_point.expand("weight zero point", channels)?;
        for &z in &zw {
            if z < B::MIN || z > B::MAX {
                return Err(Error::ZeroPointOutOfRange {
                    what: "weight zero point",
                    value: z as i64,
                    min: B::MIN as i64,
                    max: B::MAX as i64,
                });
            }
        }
        let scale = match quant.scale {
            Some(s) => s.expand("weight scale", channels)?,
            None => Vec::new(),
        };
        for &s in &scale {
            check_scale("weight scale", s)?;
        }
        let centred = |i: usize, w: &B| w.to_i32() - zw[i / taps];
        let lo = weights.iter().enumerate().map(|(i, w)| centred(i, w)).min().unwrap_or(0);
        let hi = weights.iter().enumerate().map(|(i, w)| centred(i, w)).max().unwrap_or(0);
        let kernel = ctx.kernels().dwconv_for(taps, lo, hi).ok_or_else(|| {
            Error::Internal(format!("no depthwise kernel for {taps} taps at {}", ctx.kernels().isa.name()))
        })?;
        let mut packed = vec![0u8; kernel.format.packed_bytes(channels, taps)];
        let mut sums = vec![0i32; channels];
        pack_dwconv(kernel.format, weights, channels, taps, &zw, &mut packed, &mut sums);
        let max_abs_centered = lo.abs().max(hi.abs());
        Ok(DepthwiseFilter { channels, kernel_h, kernel_w, kernel, packed, sums, max_abs_centered, scale })
    }

    /// Channels (= groups = input = output channels).
    pub fn channels(&self) -> usize {
        self.channels
    }
    /// Kernel height.
    pub fn kernel_h(&self) -> usize {
        self.kernel_h
    }
    /// Kernel width.
    pub fn kernel_w(&self) -> usize {
        self.kernel_w
    }
    /// The microkernel the filter was packed for.
    pub fn kernel(&self) -> DwconvUkernel {
        self.kernel
    }
    /// Its name.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }
    /// Per-channel weight scales (empty if packed without scales).
    pub fn scales(&self) -> &[f32] {
        &self.scale
    }
}

/// The output stage of one call.
enum Stage<'a> {
    I32 { bias: Option<&'a [i32]> },
    F32 { bias: Option<&'a [f32]> },
    Requant { mode: RequantMode, zp: i32, qmin: i32, qmax: i32, bias: Option<&'a [i32]> },
}

/// The output tensor of one call, as raw parts.
struct OutRaw {
    ptr: *mut u8,
    len: usize,
    rows: usize,
    cols: usize,
    stride: usize,
    esize: usize,
    kind: OutputKind,
}

/// Raw pointers shared by the tasks of one call.
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the pointers point into buffers that outlive the call (the validated input and
// output, the plan's tables); tasks only read shared data and write disjoint output rows.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}
impl<T: Copy> Shared<T> {
    fn get(&self) -> T {
        self.0
    }
}

/// A depthwise convolution plan: a [`DepthwiseFilter`] bound to a [`Conv2dGeometry`].
///
/// Input: an [`Activations`] matrix of `batch·in_h·in_w` pixel rows × `channels`
/// (NHWC; the row stride may exceed the channels). Output: a matrix of
/// `batch·out_h·out_w` rows × `channels`. The indirection buffer is built on creation
/// (and again only if the input row stride changes); the per-call tables are kept, so
/// repeated calls allocate nothing.
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    filter: DepthwiseFilter,
    geometry: Conv2dGeometry,
    dw: Dw,
    indirection: Vec<usize>,
    /// The input row stride `indirection` was built for.
    ind_stride: usize,
    zero: Vec<u8>,
    col_offset: Vec<i32>,
    scale: Vec<f32>,
    qmult: Vec<QuantizedMultiplier>,
}

impl DepthwiseConv {
    /// Binds `filter` to `geometry` (validated: every size ≥ 1, output size ≥ 1,
    /// `groups == in_c == out_c == filter.channels()`, kernel size equal to the filter's).
    pub fn new(filter: DepthwiseFilter, geometry: &Conv2dGeometry) -> Result<Self> {
        let dw = Dw::new(geometry)?;
        if dw.c != filter.channels || dw.kh != filter.kernel_h || dw.kw != filter.kernel_w {
            return Err(Error::ShapeMismatch(format!(
                "the filter is {} channels × {}×{}, the geometry {} channels × {}×{}",
                filter.channels, filter.kernel_h, filter.kernel_w, dw.c, dw.kh, dw.kw
            )));
        }
        let indirection = dw.indirection(dw.c)?;
        Ok(DepthwiseConv {
            filter,
            geometry: *geometry,
            dw,
            indirection,
            ind_stride: dw.c,
            zero: vec![0; dw.c],
            col_offset: vec![0; dw.c],
            scale: Vec::with_capacity(dw.c),
            qmult: Vec::with_capacity(dw.c),
        })
    }

    /// The geometry.
    pub fn geometry(&self) -> &Conv2dGeometry {
        &self.geometry
    }
    /// The filter.
    pub fn filter(&self) -> &DepthwiseFilter {
        &self.filter
    }
    /// `(batch, out_h, out_w, channels)`.
    pub fn output_shape(&self) -> (usize, usize, usize, usize) {
        (self.dw.batch, self.dw.oh, self.dw.ow, self.dw.c)
    }
    /// Multiply-accumulates of one call (`batch·out_h·out_w·channels·taps`).
    pub fn macs(&self) -> u64 {
        (self.dw.batch * self.dw.oh * self.dw.ow * self.dw.c * self.dw.taps()) as u64
    }

    /// Bytes held by the packed filter, the indirection buffer and the per-call tables.
    pub fn memory_bytes(&self) -> usize {
        self.filter.packed.capacity()
            + self.filter.sums.capacity() * 4
            + self.filter.scale.capacity() * 4
            + self.indirection.capacity() * size_of::<usize>()
            + self.zero.capacity()
            + self.col_offset.capacity() * 4
            + self.scale.capacity() * 4
            + self.qmult.capacity() * size_of::<QuantizedMultiplier>()
    }

    /// `y (i32) = Σ (x − za)·(w − zw) + bias`. Errors if a result does not fit in i32.
    pub fn run_i32<A: Int8>(&mut self, ctx: &Context, input: Activations<'_, A>, bias: Option<&[i32]>, output: MatrixMut<'_, i32>) -> Result<()> {
        self.scale.clear();
        self.qmult.clear();
        let MatrixMut { data, rows, cols, stride } = output;
        let out = OutRaw { ptr: data.as_mut_ptr().cast(), len: data.len(), rows, cols, stride, esize: 4, kind: OutputKind::I32 };
        self.run(ctx, &input, Stage::I32 { bias }, out)
    }

    /// `y (f32) = sx·sw[c]·Σ (x − za)·(w − zw) + bias`.
    pub fn run_f32<A: Int8>(&mut self, ctx: &Context, input: Activations<'_, A>, bias: Option<&[f32]>, output: MatrixMut<'_, f32>) -> Result<()> {
        check_scale("activation scale", input.scale)?;
        self.need_scales("f32")?;
        self.scale.clear();
        self.scale.extend(self.filter.scale.iter().map(|&s| input.scale * s));
        if let Some(&s) = self.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidScale { what: "dequantization scale sx·sw", value: s as f64 });
        }
        self.qmult.clear();
        let MatrixMut { data, rows, cols, stride } = output;
        let out = OutRaw { ptr: data.as_mut_ptr().cast(), len: data.len(), rows, cols, stride, esize: 4, kind: OutputKind::F32 };
        self.run(ctx, &input, Stage::F32 { bias }, out)
    }

    /// `y (u8/i8) = clamp(requantize(Σ (x − za)·(w − zw) + bias))`, the multiplier
    /// `sx·sw[c]/sy` (in f32 for `Fp32`, as ONNX; in f64 for the fixed-point modes, as
    /// TFLite).
    pub fn run_requantize<A: Int8, O: Int8>(
        &mut self,
        ctx: &Context,
        input: Activations<'_, A>,
        rq: &Requantize<'_, O>,
        output: MatrixMut<'_, O>,
    ) -> Result<()> {
        check_scale("activation scale", input.scale)?;
        check_scale("output scale", rq.scale)?;
        self.need_scales("requantized")?;
        let (qmin, qmax) = (rq.min.to_i32(), rq.max.to_i32());
        if qmin > qmax {
            return Err(Error::InvalidParameter(format!("clamp min {qmin} is greater than max {qmax}")));
        }
        self.scale.clear();
        self.scale.extend(self.filter.scale.iter().map(|&sw| (input.scale * sw) / rq.scale));
        if let Some(&s) = self.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidScale { what: "requantization multiplier sx·sw/sy", value: s as f64 });
        }
        self.qmult.clear();
        if rq.mode != RequantMode::Fp32 {
            let (sx, sy) = (input.scale as f64, rq.scale as f64);
            self.qmult.extend(self.filter.scale.iter().map(|&sw| quantize_multiplier(sx * sw as f64 / sy, rq.mode)));
        }
        let MatrixMut { data, rows, cols, stride } = output;
        let out = OutRaw {
            ptr: bytemuck::cast_slice_mut::<O, u8>(data).as_mut_ptr(),
            len: data.len(),
            rows,
            cols,
            stride,
            esize: 1,
            kind: if O::SIGNED { OutputKind::I8 } else { OutputKind::U8 },
        };
        let stage = Stage::Requant { mode: rq.mode, zp: rq.zero_point.to_i32(), qmin, qmax, bias: rq.bias };
        self.run(ctx, &input, stage, out)
    }

    fn need_scales(&self, what: &str) -> Result<()> {
        if self.filter.scale.len() != self.filter.channels {
            return Err(Error::InvalidParameter(format!(
                "{what} output needs weight scales; the filter was packed without"
            )));
        }
        Ok(())
    }

    /// Validation, tables, threads, kernel calls.
    fn run<A: Int8>(&mut self, ctx: &Context, input: &Activations<'_, A>, stage: Stage<'_>, out: OutRaw) -> Result<()> {
        let dw = self.dw;
        let (c, taps) = (dw.c, dw.taps());
        let in_rows = dw.batch * dw.h * dw.w;
        let out_rows = dw.batch * dw.oh * dw.ow;
        let m = &input.matrix;
        if m.rows != in_rows || m.cols != c {
            return Err(Error::ShapeMismatch(format!(
                "input is {}×{}; the geometry needs batch·in_h·in_w = {in_rows} pixel rows × {c} channels",
                m.rows, m.cols
            )));
        }
        check_matrix("input", m.data.len(), m.rows, m.cols, m.stride)?;
        if out.rows != out_rows || out.cols != c {
            return Err(Error::ShapeMismatch(format!(
                "output is {}×{}; the geometry gives batch·out_h·out_w = {out_rows} pixel rows × {c} channels",
                out.rows, out.cols
            )));
        }
        check_matrix("output", out.len, out.rows, out.cols, out.stride)?;
        let bias_len = match &stage {
            Stage::F32 { bias } => bias.map(<[f32]>::len),
            Stage::I32 { bias } | Stage::Requant { bias, .. } => bias.map(<[i32]>::len),
        };
        if let Some(len) = bias_len.filter(|&l| l != c) {
            return Err(Error::ShapeMismatch(format!("bias has {len} values; the convolution has {c} channels")));
        }
        let kernel = self.filter.kernel;
        if !dwconv_runs_here(&kernel) || !kernel.isa.within(ctx.kernels().isa) {
            return Err(Error::IsaUnavailable(format!(
                "the filter was packed for {} ({}), which this context (capped at {}) does not run; pack it with this context",
                kernel.name,
                kernel.isa.name(),
                ctx.kernels().isa.name()
            )));
        }
        let ukernel: DwconvUkernelFn = kernel.run[A::SIGNED as usize]
            .ok_or_else(|| Error::Unsupported(format!("{} has no {} variant", kernel.name, A::NAME)))?;
        if !kernel.handles_taps(taps) {
            return Err(Error::Internal(format!("{} does not handle {taps} taps", kernel.name)));
        }

        if m.stride != self.ind_stride {
            self.indirection = dw.indirection(m.stride)?;
            self.ind_stride = m.stride;
        }
        let za = input.zero_point.to_i32();
        self.zero.fill(input.zero_point.to_bits());

        // Overflow policy: the kernel's sum is exact (taps ≤ DW_MAX_TAPS); the bias joins
        // it in i32 only when the true result provably fits.
        let max_a = (za - A::MIN).max(A::MAX - za) as u128;
        let bias_i32 = match &stage {
            Stage::I32 { bias } | Stage::Requant { bias, .. } => *bias,
            Stage::F32 { .. } => None,
        };
        let max_bias = bias_i32.map_or(0, |b| b.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0)) as u128;
        let exact = taps as u128 * max_a * self.filter.max_abs_centered as u128 + max_bias <= i32::MAX as u128;
        let za_k = za + kernel.a_offset[A::SIGNED as usize];
        for (ch, off) in self.col_offset.iter_mut().enumerate() {
            let b = if exact { bias_i32.map_or(0, |b| b[ch]) } else { 0 };
            *off = b.wrapping_sub(za_k.wrapping_mul(self.filter.sums[ch]));
        }

        let null_f = std::ptr::null::<f32>();
        let (mode, ozp, qmin, qmax, bias_f32) = match &stage {
            Stage::I32 { .. } => (RequantMode::Fp32, 0, 0, 0, null_f),
            Stage::F32 { bias } => (RequantMode::Fp32, 0, 0, 0, bias.map_or(null_f, |b| b.as_ptr())),
            Stage::Requant { mode, zp, qmin, qmax, .. } => (*mode, *zp, *qmin, *qmax, null_f),
        };
        let stage_out = OutputStage {
            kind: out.kind,
            mode,
            col_offset: self.col_offset.as_ptr(),
            scale: if self.scale.is_empty() { null_f } else { self.scale.as_ptr() },
            bias_f32,
            qmult: if self.qmult.is_empty() { std::ptr::null() } else { self.qmult.as_ptr() },
            out_zero_point: ozp,
            qmin,
            qmax,
        };
        let ref_out = RefOutput {
            kind: out.kind,
            mode,
            bias_i32,
            scale: &self.scale,
            bias_f32: match &stage {
                Stage::F32 { bias } => *bias,
                _ => None,
            },
            qmult: &self.qmult,
            out_zero_point: ozp,
            qmin,
            qmax,
        };

        let image_in = dw.h * dw.w * m.stride;
        let pix_out = dw.oh * dw.ow;
        let base = Shared((m.data.as_ptr().cast::<u8>(), out.ptr, stage_out));
        let ind = &self.indirection;
        let zero = &self.zero;
        let packed = &self.filter.packed;
        let (ostride, esize, kind) = (out.stride, out.esize, out.kind);
        // Rows `r0 .. r1` of image `n`, in one kernel call (pixels of consecutive rows
        // are consecutive in the indirection buffer and the output).
        let task = |n: usize, r0: usize, r1: usize| -> Result<()> {
            let (inp, outp, st) = base.get();
            let p0 = n * pix_out + r0 * dw.ow;
            let pixels = (r1 - r0) * dw.ow;
            let mut args = DwconvArgs {
                channels: c,
                taps,
                pixels,
                input: inp.wrapping_add(n * image_in * std::mem::size_of::<A>()),
                indirection: ind[r0 * dw.ow * taps..].as_ptr(),
                zero: zero.as_ptr(),
                weights: packed.as_ptr(),
                output: outp.wrapping_add(p0 * ostride * esize),
                output_pixel_stride: ostride,
                out: st,
            };
            if exact {
                // SAFETY: validated above: image n's rows lie in `input` (every offset in
                // the indirection is a pixel start with `c` elements after it, for this
                // stride); `zero` has c bytes; `packed` is the kernel's format for c
                // channels × taps; the output rows p0 .. p0 + pixels lie in `output` with
                // stride ≥ c; every table the stage reads has c entries; the true results
                // fit in i32 (`exact`); the kernel handles `taps` and runs on this CPU.
                unsafe { ukernel(&args) };
                return Ok(());
            }
            // The bias-free sums in i32 (exact), then bias and stage in i64, per row.
            let mut tmp = vec![0i32; dw.ow * c];
            for r in r0..r1 {
                args.pixels = dw.ow;
                args.indirection = ind[r * dw.ow * taps..].as_ptr();
                args.output = tmp.as_mut_ptr().cast();
                args.output_pixel_stride = c;
                args.out.kind = OutputKind::I32;
                // SAFETY: as above, for one row into the local `ow × c` i32 buffer.
                unsafe { ukernel(&args) };
                for x in 0..dw.ow {
                    for ch in 0..c {
                        let v = output_stage_ref(tmp[x * c + ch] as i64, ch, &ref_out);
                        let idx = ((n * pix_out + r * dw.ow + x) * ostride + ch) * esize;
                        let p = outp.wrapping_add(idx);
                        // SAFETY: (pixel, ch) lies in the validated output; rows are
                        // disjoint between tasks.
                        unsafe {
                            match kind {
                                OutputKind::I32 => {
                                    let v = i32::try_from(v).map_err(|_| {
                                        Error::Overflow(format!(
                                            "output pixel {} channel {ch} = {v} does not fit in i32; use the f32 or requantized output",
                                            n * pix_out + r * dw.ow + x
                                        ))
                                    })?;
                                    p.cast::<i32>().write_unaligned(v)
                                }
                                OutputKind::F32 => p.cast::<u32>().write_unaligned(v as u32),
                                OutputKind::U8 | OutputKind::I8 => p.write(v as u8),
                            }
                        }
                    }
                }
            }
            Ok(())
        };

        // Threads over output rows: a few chunks per thread, never splitting an image's
        // row across tasks.
        let work = out_rows as u128 * c as u128 * taps as u128;
        let threads = ctx.threads();
        if threads <= 1 || work < 1 << 16 {
            return (0..dw.batch).try_for_each(|n| task(n, 0, dw.oh));
        }
        let chunks_per_image = (4 * threads).div_ceil(dw.batch).clamp(1, dw.oh);
        let rows_per_chunk = dw.oh.div_ceil(chunks_per_image);
        let chunks = dw.oh.div_ceil(rows_per_chunk);
        ctx.install(|| {
            (0..dw.batch * chunks).into_par_iter().try_for_each(|i| {
                let (n, k) = (i / chunks, i % chunks);
                let r0 = k * rows_per_chunk;
                task(n, r0, (r0 + rows_per_chunk).min(dw.oh))
            })
        })
    }
}
