//! QLinearConv (opset 10) and ConvInteger (opset 10) on NCHW tensors.
//!
//! An adapter over [`crate::conv`]: the NCHW input is transposed to NHWC, the OIHW
//! weights to OHWI, the NHWC convolution runs on the GEMM microkernels, and the result is
//! transposed back to NCHW. 1-D (`[N, C, W]`) and 2-D (`[N, C, H, W]`) convolutions are
//! supported; 3-D and higher return [`Error::Unsupported`].

use qkern_kernels::Int8;

use super::TensorRef;
use crate::conv::{Conv2d, Conv2dGeometry, ConvInput};
use crate::dispatch::Context;
use crate::error::{Error, Result, check_scale};
use crate::gemm::{PerChannel, Requantize, WeightQuant};

/// ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads` (default).
    #[default]
    NotSet,
    /// Output `ceil(in / stride)`, the extra padding at the end.
    SameUpper,
    /// Output `ceil(in / stride)`, the extra padding at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    /// From the ONNX attribute string (`"NOTSET"`, `"SAME_UPPER"`, `"SAME_LOWER"`, `"VALID"`).
    pub fn from_onnx(s: &str) -> Result<AutoPad> {
        match s {
            "NOTSET" | "" => Ok(AutoPad::NotSet),
            "SAME_UPPER" => Ok(AutoPad::SameUpper),
            "SAME_LOWER" => Ok(AutoPad::SameLower),
            "VALID" => Ok(AutoPad::Valid),
            other => Err(Error::InvalidParameter(format!("auto_pad {other:?} is not NOTSET, SAME_UPPER, SAME_LOWER or VALID"))),
        }
    }
}

/// The attributes of ONNX Conv / QLinearConv / ConvInteger. An empty list means the
/// ONNX default (strides and dilations 1, pads 0, kernel_shape from the weights).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    /// `auto_pad`.
    pub auto_pad: AutoPad,
    /// `dilations`, one per spatial axis.
    pub dilations: Vec<usize>,
    /// `group`.
    pub group: usize,
    /// `kernel_shape`: if given, must equal the weights' spatial dimensions.
    pub kernel_shape: Vec<usize>,
    /// `pads`: all the beginnings, then all the ends (`[x1_begin, x2_begin, x1_end, x2_end]`).
    pub pads: Vec<usize>,
    /// `strides`, one per spatial axis.
    pub strides: Vec<usize>,
}

impl Default for ConvAttrs {
    fn default() -> Self {
        ConvAttrs { auto_pad: AutoPad::NotSet, dilations: Vec::new(), group: 1, kernel_shape: Vec::new(), pads: Vec::new(), strides: Vec::new() }
    }
}

/// The geometry of an ONNX conv: x `[N, C, (H,) W]`, w `[M, C/group, (kH,) kW]`.
fn geometry(x_shape: &[usize], w_shape: &[usize], attrs: &ConvAttrs) -> Result<Conv2dGeometry> {
    let rank = x_shape.len();
    if !(3..=4).contains(&rank) {
        return if rank > 4 {
            Err(Error::Unsupported(format!("conv over {} spatial axes (x is {x_shape:?}); qkern runs 1-D and 2-D", rank - 2)))
        } else {
            Err(Error::ShapeMismatch(format!("conv x must be [N, C, H, W] or [N, C, W], got {x_shape:?}")))
        };
    }
    if w_shape.len() != rank {
        return Err(Error::ShapeMismatch(format!("conv w {w_shape:?} must have the rank of x {x_shape:?}")));
    }
    let sp = rank - 2;
    let list = |what: &str, v: &[usize], len: usize, default: usize| -> Result<Vec<usize>> {
        match v.len() {
            0 => Ok(vec![default; len]),
            l if l == len => Ok(v.to_vec()),
            l => Err(Error::InvalidParameter(format!("conv `{what}` has {l} values, needs {len}"))),
        }
    };
    let strides = list("strides", &attrs.strides, sp, 1)?;
    let dilations = list("dilations", &attrs.dilations, sp, 1)?;
    let kernel: Vec<usize> = w_shape[2..].to_vec();
    if !attrs.kernel_shape.is_empty() && attrs.kernel_shape != kernel {
        return Err(Error::ShapeMismatch(format!("conv kernel_shape {:?} but w is {w_shape:?}", attrs.kernel_shape)));
    }
    if attrs.group == 0 {
        return Err(Error::InvalidParameter("conv `group` must be at least 1".into()));
    }
    let (n, c, m) = (x_shape[0], x_shape[1], w_shape[0]);
    if !c.is_multiple_of(attrs.group) || w_shape[1].checked_mul(attrs.group) != Some(c) {
        return Err(Error::ShapeMismatch(format!(
            "conv x has {c} channels; with group = {} w's second dimension must be {} (w is {w_shape:?})",
            attrs.group,
            c / attrs.group
        )));
    }
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(Error::InvalidParameter("conv strides and dilations must be at least 1".into()));
    }
    let input = &x_shape[2..];
    let mut pads = vec![0usize; 2 * sp];
    match attrs.auto_pad {
        AutoPad::NotSet => {
            if !attrs.pads.is_empty() {
                pads = list("pads", &attrs.pads, 2 * sp, 0)?;
            }
        }
        AutoPad::Valid => {}
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..sp {
                let out = input[i].div_ceil(strides[i]);
                let eff = kernel[i]
                    .checked_sub(1)
                    .and_then(|k| k.checked_mul(dilations[i]))
                    .map(|v| v + 1)
                    .ok_or_else(|| Error::InvalidParameter(format!("conv kernel {kernel:?} has a zero dimension")))?;
                let total = (out.saturating_sub(1).saturating_mul(strides[i]).saturating_add(eff)).saturating_sub(input[i]);
                let (small, big) = (total / 2, total - total / 2);
                (pads[i], pads[sp + i]) = if attrs.auto_pad == AutoPad::SameUpper { (small, big) } else { (big, small) };
            }
        }
    }
    // 1-D runs as 2-D with H = 1.
    let (ih, iw, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr) = if sp == 1 {
        (1, input[0], 1, kernel[0], 1, strides[0], 1, dilations[0], 0, pads[0], 0, pads[1])
    } else {
        (input[0], input[1], kernel[0], kernel[1], strides[0], strides[1], dilations[0], dilations[1], pads[0], pads[1], pads[2], pads[3])
    };
    let g = Conv2dGeometry::new(n, ih, iw, c, m, kh, kw).stride(sh, sw).dilation(dh, dw).padding(pt, pl, pb, pr).groups(attrs.group);
    g.validate()?;
    Ok(g)
}

/// The NCHW output shape `[N, M, (OH,) OW]` of a conv of `x_shape` by `w_shape`.
pub fn conv_output_shape(x_shape: &[usize], w_shape: &[usize], attrs: &ConvAttrs) -> Result<Vec<usize>> {
    let g = geometry(x_shape, w_shape, attrs)?;
    Ok(if x_shape.len() == 3 { vec![g.batch, g.out_c, g.out_w()] } else { vec![g.batch, g.out_c, g.out_h(), g.out_w()] })
}

/// NCHW → NHWC (`planes` = H·W).
fn to_nhwc<T: Copy + Default>(x: &[T], n: usize, c: usize, planes: usize) -> Vec<T> {
    let mut out = vec![T::default(); n * c * planes];
    for b in 0..n {
        for ch in 0..c {
            let src = &x[(b * c + ch) * planes..(b * c + ch + 1) * planes];
            for (p, &v) in src.iter().enumerate() {
                out[(b * planes + p) * c + ch] = v;
            }
        }
    }
    out
}

/// NHWC → NCHW into `y`.
fn to_nchw<T: Copy>(x: &[T], n: usize, c: usize, planes: usize, y: &mut [T]) {
    for b in 0..n {
        for p in 0..planes {
            for ch in 0..c {
                y[(b * c + ch) * planes + p] = x[(b * planes + p) * c + ch];
            }
        }
    }
}

/// Checks x and w against their shapes and returns the geometry, the NHWC input and the
/// OHWI weights.
fn prepare<A: Int8, B: Int8>(x: &TensorRef<'_, A>, w: &TensorRef<'_, B>, attrs: &ConvAttrs, y_len: usize) -> Result<(Conv2dGeometry, Vec<A>, Vec<B>)> {
    x.check("conv x")?;
    w.check("conv w")?;
    let g = geometry(x.shape, w.shape, attrs)?;
    if y_len != g.output_len() {
        return Err(Error::ShapeMismatch(format!("conv y has {y_len} elements; the output {:?} needs {}", conv_output_shape(x.shape, w.shape, attrs)?, g.output_len())));
    }
    let xn = to_nhwc(x.data, g.batch, g.in_c, g.in_h * g.in_w);
    let wn = to_nhwc(w.data, g.out_c, g.group_in_c(), g.kernel_h * g.kernel_w);
    Ok((g, xn, wn))
}

/// A scalar (rank 0 or one element) parameter.
fn scalar<T: Copy>(what: &str, t: &TensorRef<'_, T>) -> Result<T> {
    t.check(what)?;
    match t.data {
        [v] if t.shape.iter().all(|&d| d == 1) => Ok(*v),
        _ => Err(Error::ShapeMismatch(format!("{what} must be a scalar (per tensor), got shape {:?}", t.shape))),
    }
}

/// A per-tensor (scalar) or per-output-channel (1-D of M) parameter.
fn per_channel<'a, T: Copy>(what: &str, t: &TensorRef<'a, T>, m: usize) -> Result<PerChannel<'a, T>> {
    t.check(what)?;
    match (t.shape, t.data) {
        (s, [v]) if s.iter().all(|&d| d == 1) => Ok(PerChannel::Tensor(*v)),
        ([len], d) if *len == m => Ok(PerChannel::Channel(d)),
        (s, _) => Err(Error::ShapeMismatch(format!("{what} must be a scalar or have one value per output channel ({m}), got shape {s:?}"))),
    }
}

/// QLinearConv on the default context. See [`qlinear_conv_in`].
#[allow(clippy::too_many_arguments)]
pub fn qlinear_conv<A: Int8, B: Int8, Y: Int8>(
    x: TensorRef<'_, A>,
    x_scale: TensorRef<'_, f32>,
    x_zero_point: TensorRef<'_, A>,
    w: TensorRef<'_, B>,
    w_scale: TensorRef<'_, f32>,
    w_zero_point: TensorRef<'_, B>,
    y_scale: TensorRef<'_, f32>,
    y_zero_point: TensorRef<'_, Y>,
    bias: Option<TensorRef<'_, i32>>,
    attrs: &ConvAttrs,
    y: &mut [Y],
) -> Result<()> {
    qlinear_conv_in(&Context::new()?, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias, attrs, y)
}

/// QLinearConv (opset 10): `y = saturate(round_half_even((conv(x − zx, w − zw) + B) · (sx·sw/sy)) + zy)`,
/// the multiplier in f32 as onnxruntime computes it.
///
/// `x` is `[N, C, H, W]` (or `[N, C, W]`), `w` `[M, C/group, kH, kW]`, `y` `[N, M, OH, OW]`
/// ([`conv_output_shape`]). `x_scale`, `x_zero_point`, `y_scale`, `y_zero_point` are
/// scalars; `w_scale` and `w_zero_point` are scalars or 1-D with M values; `bias` is 1-D
/// with M values. Errors on any shape disagreement, invalid attributes, an output size
/// ≤ 0, or a non-finite or non-positive scale.
#[allow(clippy::too_many_arguments)]
pub fn qlinear_conv_in<A: Int8, B: Int8, Y: Int8>(
    ctx: &Context,
    x: TensorRef<'_, A>,
    x_scale: TensorRef<'_, f32>,
    x_zero_point: TensorRef<'_, A>,
    w: TensorRef<'_, B>,
    w_scale: TensorRef<'_, f32>,
    w_zero_point: TensorRef<'_, B>,
    y_scale: TensorRef<'_, f32>,
    y_zero_point: TensorRef<'_, Y>,
    bias: Option<TensorRef<'_, i32>>,
    attrs: &ConvAttrs,
    y: &mut [Y],
) -> Result<()> {
    let (g, xn, wn) = prepare(&x, &w, attrs, y.len())?;
    let sx = scalar("x_scale", &x_scale)?;
    check_scale("x_scale", sx)?;
    let zx = scalar("x_zero_point", &x_zero_point)?;
    let sy = scalar("y_scale", &y_scale)?;
    check_scale("y_scale", sy)?;
    let zy = scalar("y_zero_point", &y_zero_point)?;
    let sw = per_channel("w_scale", &w_scale, g.out_c)?;
    let zw: Vec<i32> = match per_channel("w_zero_point", &w_zero_point, g.out_c)? {
        PerChannel::Tensor(v) => vec![v.to_i32()],
        PerChannel::Channel(s) => s.iter().map(|v| v.to_i32()).collect(),
    };
    let zwc = if zw.len() == 1 { PerChannel::Tensor(zw[0]) } else { PerChannel::Channel(&zw) };
    let b = match &bias {
        Some(b) => {
            b.check("B")?;
            if b.shape != [g.out_c] {
                return Err(Error::ShapeMismatch(format!("QLinearConv B must be 1-D with {} values, got shape {:?}", g.out_c, b.shape)));
            }
            Some(b.data)
        }
        None => None,
    };
    let filter = Conv2d::new_in(ctx, g, &wn, WeightQuant { zero_point: zwc, scale: Some(sw) })?;
    let mut out = vec![Y::default(); g.output_len()];
    let mut rq = Requantize::new(sy, zy);
    if let Some(b) = b {
        rq = rq.bias(b);
    }
    ctx.conv2d_requantize(&filter, ConvInput::new(&xn, zx, sx), &rq, &mut out)?;
    to_nchw(&out, g.batch, g.out_c, g.out_h() * g.out_w(), y);
    Ok(())
}

/// ConvInteger on the default context. See [`conv_integer_in`].
pub fn conv_integer<A: Int8, B: Int8>(
    x: TensorRef<'_, A>,
    w: TensorRef<'_, B>,
    x_zero_point: Option<TensorRef<'_, A>>,
    w_zero_point: Option<TensorRef<'_, B>>,
    attrs: &ConvAttrs,
    y: &mut [i32],
) -> Result<()> {
    conv_integer_in(&Context::new()?, x, w, x_zero_point, w_zero_point, attrs, y)
}

/// ConvInteger (opset 10): `y = conv(x − x_zero_point, w − w_zero_point)` in i32.
///
/// Shapes as in [`qlinear_conv_in`]; `x_zero_point` is a scalar, `w_zero_point` a scalar
/// or 1-D with M values; absent means 0. A result that does not fit in i32 is an
/// [`Error::Overflow`], never a wrap.
pub fn conv_integer_in<A: Int8, B: Int8>(
    ctx: &Context,
    x: TensorRef<'_, A>,
    w: TensorRef<'_, B>,
    x_zero_point: Option<TensorRef<'_, A>>,
    w_zero_point: Option<TensorRef<'_, B>>,
    attrs: &ConvAttrs,
    y: &mut [i32],
) -> Result<()> {
    let (g, xn, wn) = prepare(&x, &w, attrs, y.len())?;
    let zx = x_zero_point.map(|z| scalar("x_zero_point", &z)).transpose()?.unwrap_or_default();
    let zw: Vec<i32> = match w_zero_point {
        None => vec![0],
        Some(z) => match per_channel("w_zero_point", &z, g.out_c)? {
            PerChannel::Tensor(v) => vec![v.to_i32()],
            PerChannel::Channel(s) => s.iter().map(|v| v.to_i32()).collect(),
        },
    };
    let zwc = if zw.len() == 1 { PerChannel::Tensor(zw[0]) } else { PerChannel::Channel(&zw) };
    let filter = Conv2d::new_in(ctx, g, &wn, WeightQuant::zero_point_only(zwc))?;
    let mut out = vec![0i32; g.output_len()];
    ctx.conv2d_i32(&filter, ConvInput::new(&xn, zx, 1.0), None, &mut out)?;
    to_nchw(&out, g.batch, g.out_c, g.out_h() * g.out_w(), y);
    Ok(())
}
