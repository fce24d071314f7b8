//! Prepacked int8 convolution from C, for engines: pack an OHWI filter once for a
//! geometry into an opaque handle, run it on NHWC activations with any of the three
//! output stages. Depthwise layers (`groups == in_c == out_c`) take the depthwise
//! kernels, other layers the GEMM microkernels (see [`crate::conv`]).

use std::ffi::c_void;

use qkern_kernels::Int8;

use super::gemm::{int8_dtype, per_channel, zero_point};
use super::util::{Span, free_handle, handle_ref, check_disjoint, opt_slice, opt_span, slice, slice_mut, span};
use super::runtime::context;
use super::{Dtype, Failure, guard, qk_dtype, qk_requant_mode, qk_status, requant_mode_from_c};
use crate::conv::{Conv2d, Conv2dGeometry, ConvInput};
use crate::gemm::{Requantize, WeightQuant};

/// The shape of a 2-D convolution on NHWC tensors (all sizes in elements).
///
/// Input `[batch][in_h][in_w][in_c]`, filter OHWI `[out_c][kernel_h][kernel_w][in_c/groups]`,
/// output `[batch][out_h][out_w][out_c]` with
/// `out_h = (in_h + pad_top + pad_bottom − ((kernel_h − 1)·dilation_h + 1)) / stride_h + 1`
/// (likewise `out_w`). Every size, stride, dilation and `groups` must be ≥ 1, `groups`
/// must divide `in_c` and `out_c`, and the output must not be empty.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qk_conv_geometry {
    /// Images.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Rows of padding above (padding reads the input zero point).
    pub pad_top: usize,
    /// Columns of padding on the left.
    pub pad_left: usize,
    /// Rows of padding below.
    pub pad_bottom: usize,
    /// Columns of padding on the right.
    pub pad_right: usize,
    /// Groups (`in_c` for depthwise).
    pub groups: usize,
}

impl qk_conv_geometry {
    fn to_rust(self) -> Conv2dGeometry {
        Conv2dGeometry::new(self.batch, self.in_h, self.in_w, self.in_c, self.out_c, self.kernel_h, self.kernel_w)
            .stride(self.stride_h, self.stride_w)
            .dilation(self.dilation_h, self.dilation_w)
            .padding(self.pad_top, self.pad_left, self.pad_bottom, self.pad_right)
            .groups(self.groups)
    }
}

/// A convolution filter prepacked for one geometry. Opaque: create with
/// [`qk_conv_filter_create`], release with [`qk_conv_filter_free`]. Runs only read it
/// (its caches are internally synchronised), so one handle may be used by several
/// threads at once.
#[allow(non_camel_case_types)]
pub struct qk_conv_filter {
    filter: Conv2d,
}

/// Packs the OHWI filter `weights` (dtype `weights_dtype`, `QK_U8` or `QK_I8`) for
/// `*geometry`.
///
/// * `weights_count`: elements at `weights`; must equal
///   `out_c · kernel_h · kernel_w · in_c / groups`.
/// * `zero_point`, `zero_point_count`: 1 value (per tensor) or `out_c` values (per
///   output channel), each within `weights_dtype`'s range.
/// * `scale`, `scale_count`: may be NULL with count 0 (integer output only), else 1 or
///   `out_c` finite positive values (needed by [`qk_conv_f32`] and [`qk_conv_requantize`]).
/// * `out`: receives the handle; set to NULL first, so it is NULL on any failure.
///
/// The inputs are copied. Errors: NULL pointers, a geometry that is not valid (an empty
/// output, `groups` not dividing the channels, a zero size), a weight count that does
/// not match, bad zero points or scales.
///
/// # Safety
///
/// `geometry` must be NULL (an error) or point to a readable `qk_conv_geometry`; each
/// buffer pointer must be NULL (an error, unless optional) or point to at least its count
/// of readable elements; `out` must be NULL (an error) or point to a writable
/// `qk_conv_filter*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv_filter_create(
    geometry: *const qk_conv_geometry,
    weights: *const c_void,
    weights_dtype: qk_dtype,
    weights_count: usize,
    zero_point: *const i32,
    zero_point_count: usize,
    scale: *const f32,
    scale_count: usize,
    out: *mut *mut qk_conv_filter,
) -> qk_status {
    guard("qk_conv_filter_create", || {
        span(out.cast_const(), 1, "out")?;
        // SAFETY: `out` is non-null and aligned (checked above); the caller guarantees it
        // is writable. Cleared first so that every failure leaves NULL behind.
        unsafe { out.write(std::ptr::null_mut()) };
        let gs = span(geometry, 1, "geometry")?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is readable. Copied.
        let g = unsafe { slice(geometry, 1, &gs) }[0].to_rust();
        g.validate()?;
        let dtype = int8_dtype(weights_dtype, "weights_dtype")?;
        let w_span = span(weights.cast::<u8>(), weights_count, "weights")?;
        let zp_span = span(zero_point, zero_point_count, "zero_point")?;
        let scale_span = opt_span(scale, scale_count, "scale")?;
        // SAFETY: each span was checked with the same pointer and count; the caller
        // guarantees the memory is readable, and nothing here writes it.
        let (w_bytes, zps, scales) = unsafe {
            (
                slice(weights.cast::<u8>(), weights_count, &w_span),
                slice(zero_point, zero_point_count, &zp_span),
                opt_slice(scale, scale_count, &scale_span),
            )
        };
        let quant = WeightQuant {
            zero_point: per_channel(zps, g.out_c, "zero_point")?,
            scale: scales.map(|s| per_channel(s, g.out_c, "scale")).transpose()?,
        };
        let filter = match dtype {
            Dtype::U8 => Conv2d::new_in(&*context()?, g, w_bytes, quant)?,
            _ => Conv2d::new_in(&*context()?, g, bytemuck::cast_slice::<u8, i8>(w_bytes), quant)?,
        };
        let handle = Box::into_raw(Box::new(qk_conv_filter { filter }));
        // SAFETY: as above; `out` is writable.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Releases a filter created by [`qk_conv_filter_create`]. NULL is accepted and does
/// nothing (`QK_OK`).
///
/// # Safety
///
/// `filter` must be NULL or a handle returned by [`qk_conv_filter_create`] that has not
/// been freed, and no other thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv_filter_free(filter: *mut qk_conv_filter) -> qk_status {
    guard("qk_conv_filter_free", || {
        free_handle(filter);
        Ok(())
    })
}

/// The handle behind a pointer.
fn filter_ref<'a>(f: *const qk_conv_filter) -> Result<&'a Conv2d, Failure> {
    Ok(&handle_ref(f, "filter", "qk_conv_filter_create")?.filter)
}

/// The validated input span.
struct XIn {
    ptr: *const u8,
    count: usize,
    span: Span,
    dtype: Dtype,
}

fn x_in(x: *const c_void, x_dtype: qk_dtype, x_count: usize) -> Result<XIn, Failure> {
    let dtype = int8_dtype(x_dtype, "x_dtype")?;
    let ptr = x.cast::<u8>();
    let span = span(ptr, x_count, "x")?;
    Ok(XIn { ptr, count: x_count, span, dtype })
}

/// Runs `$body` with the input as a typed slice.
macro_rules! with_x {
    ($x:expr, |$slice:ident : $t:ident| $body:expr) => {{
        let x: &XIn = &$x;
        // SAFETY: `x.span` was checked with this pointer and count, and the output was
        // checked disjoint from it; the caller guarantees the input is readable and
        // unchanged during the call.
        let bytes: &[u8] = unsafe { slice(x.ptr, x.count, &x.span) };
        match x.dtype {
            Dtype::U8 => {
                type $t = u8;
                let $slice: &[u8] = bytes;
                $body
            }
            _ => {
                type $t = i8;
                let $slice: &[i8] = bytemuck::cast_slice(bytes);
                $body
            }
        }
    }};
}

fn inputs<'s>(x: &'s Span, bias: &'s Option<Span>) -> Vec<&'s Span> {
    [Some(x), bias.as_ref()].into_iter().flatten().collect()
}

/// `y[n][oy][ox][oc] = Σ (x − x_zero_point)·(w − zw[oc]) + bias[oc]` in `int32_t`
/// (NHWC), exact; `QK_ERR_OVERFLOW` if a result does not fit.
///
/// * `x`: NHWC input of the filter's geometry, dtype `x_dtype` (`QK_U8` or `QK_I8`),
///   `x_count` ≥ `batch·in_h·in_w·in_c` elements.
/// * `x_zero_point`: within `x_dtype`'s range; padding reads it.
/// * `bias`, `bias_count`: may be NULL with count 0; else `out_c` values.
/// * `y`: `y_count` ≥ `batch·out_h·out_w·out_c` elements; must not overlap `x` or `bias`.
///
/// # Safety
///
/// `filter` must be NULL (an error) or a live handle. Each buffer pointer must be NULL
/// (an error, unless optional) or point to at least its count of elements, readable
/// (inputs) or writable (`y`), and not modified by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv_i32(
    filter: *const qk_conv_filter,
    x: *const c_void,
    x_dtype: qk_dtype,
    x_count: usize,
    x_zero_point: i32,
    bias: *const i32,
    bias_count: usize,
    y: *mut i32,
    y_count: usize,
) -> qk_status {
    guard("qk_conv_i32", || {
        let f = filter_ref(filter)?;
        let xi = x_in(x, x_dtype, x_count)?;
        let bias_span = opt_span(bias, bias_count, "bias")?;
        let y_span = span(y.cast_const(), y_count, "y")?;
        check_disjoint(&y_span, &inputs(&xi.span, &bias_span))?;
        // SAFETY: spans checked with these pointers and counts, `y` disjoint from the
        // inputs; the caller guarantees validity for the duration of the call.
        let (bias, y) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(y, y_count, &y_span)) };
        with_x!(xi, |x: A| {
            let za = zero_point::<A>(x_zero_point, "x_zero_point")?;
            context()?.conv2d_i32(f, ConvInput::new(x, za, 1.0), bias, y)?;
            Ok(())
        })
    })
}

/// `y = x_scale · sw[oc] · Σ (x − x_zero_point)·(w − zw[oc]) + bias[oc]` in `float`
/// (NHWC). The filter must have been created with scales.
///
/// Arguments as [`qk_conv_i32`], plus `x_scale` (finite, > 0) and a `float` bias (may be
/// NULL with count 0, else `out_c` values).
///
/// # Safety
///
/// As [`qk_conv_i32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv_f32(
    filter: *const qk_conv_filter,
    x: *const c_void,
    x_dtype: qk_dtype,
    x_count: usize,
    x_zero_point: i32,
    x_scale: f32,
    bias: *const f32,
    bias_count: usize,
    y: *mut f32,
    y_count: usize,
) -> qk_status {
    guard("qk_conv_f32", || {
        let f = filter_ref(filter)?;
        let xi = x_in(x, x_dtype, x_count)?;
        let bias_span = opt_span(bias, bias_count, "bias")?;
        let y_span = span(y.cast_const(), y_count, "y")?;
        check_disjoint(&y_span, &inputs(&xi.span, &bias_span))?;
        // SAFETY: as in `qk_conv_i32`.
        let (bias, y) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(y, y_count, &y_span)) };
        with_x!(xi, |x: A| {
            let za = zero_point::<A>(x_zero_point, "x_zero_point")?;
            context()?.conv2d_f32(f, ConvInput::new(x, za, x_scale), bias, y)?;
            Ok(())
        })
    })
}

/// `y = clamp(requantize(Σ (x − x_zero_point)·(w − zw[oc]) + bias[oc]), out_min,
/// out_max)` in `y_dtype` (`QK_U8` or `QK_I8`, NHWC), with the multiplier
/// `x_scale · sw[oc] / y_scale` applied in `mode`. The filter must have been created
/// with scales.
///
/// Arguments as [`qk_conv_i32`], plus `x_scale` and `y_scale` (finite, > 0),
/// `y_zero_point` and the clamp `out_min ≤ out_max` (within `y_dtype`'s range), and
/// `mode` (a `qk_requant_mode`).
///
/// # Safety
///
/// As [`qk_conv_i32`]; `y` points to `y_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv_requantize(
    filter: *const qk_conv_filter,
    x: *const c_void,
    x_dtype: qk_dtype,
    x_count: usize,
    x_zero_point: i32,
    x_scale: f32,
    bias: *const i32,
    bias_count: usize,
    y_scale: f32,
    y_zero_point: i32,
    mode: qk_requant_mode,
    out_min: i32,
    out_max: i32,
    y: *mut c_void,
    y_dtype: qk_dtype,
    y_count: usize,
) -> qk_status {
    guard("qk_conv_requantize", || {
        let f = filter_ref(filter)?;
        let xi = x_in(x, x_dtype, x_count)?;
        let y_dtype = int8_dtype(y_dtype, "y_dtype")?;
        let mode = requant_mode_from_c(mode, "mode")?;
        let bias_span = opt_span(bias, bias_count, "bias")?;
        let y = y.cast::<u8>();
        let y_span = span(y.cast_const(), y_count, "y")?;
        check_disjoint(&y_span, &inputs(&xi.span, &bias_span))?;
        // SAFETY: as in `qk_conv_i32`.
        let (bias, y) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(y, y_count, &y_span)) };
        let stage = Stage { bias, y_scale, y_zero_point, mode, out_min, out_max };
        with_x!(xi, |x: A| {
            let za = zero_point::<A>(x_zero_point, "x_zero_point")?;
            let input = ConvInput::new(x, za, x_scale);
            match y_dtype {
                Dtype::U8 => stage.run::<A, u8>(f, input, y),
                _ => stage.run::<A, i8>(f, input, bytemuck::cast_slice_mut(y)),
            }
        })
    })
}

/// The requantization arguments of [`qk_conv_requantize`].
struct Stage<'a> {
    bias: Option<&'a [i32]>,
    y_scale: f32,
    y_zero_point: i32,
    mode: crate::RequantMode,
    out_min: i32,
    out_max: i32,
}

impl Stage<'_> {
    fn run<A: Int8, O: Int8>(&self, f: &Conv2d, input: ConvInput<'_, A>, y: &mut [O]) -> Result<(), Failure> {
        let zo = zero_point::<O>(self.y_zero_point, "y_zero_point")?;
        for (v, what) in [(self.out_min, "out_min"), (self.out_max, "out_max")] {
            if v < O::MIN || v > O::MAX {
                return Err(Failure::invalid(format!("`{what}` is {v}, outside {} [{}, {}]", O::NAME, O::MIN, O::MAX)));
            }
        }
        if self.out_min > self.out_max {
            return Err(Failure::invalid(format!("`out_min` {} is greater than `out_max` {}", self.out_min, self.out_max)));
        }
        let mut rq = Requantize::new(self.y_scale, zo)
            .mode(self.mode)
            .clamp(O::saturate_from(self.out_min), O::saturate_from(self.out_max));
        if let Some(b) = self.bias {
            rq = rq.bias(b);
        }
        context()?.conv2d_requantize(f, input, &rq, y)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// ONNX QLinearConv / ConvInteger (NCHW)

/// ONNX's `auto_pad` attribute.
#[allow(non_camel_case_types)]
pub type qk_auto_pad = i32;

/// `"NOTSET"`: explicit `pads` (the default).
pub const QK_AUTO_PAD_NOTSET: qk_auto_pad = 0;
/// `"SAME_UPPER"`: output `ceil(in / stride)`, the extra padding at the end.
pub const QK_AUTO_PAD_SAME_UPPER: qk_auto_pad = 1;
/// `"SAME_LOWER"`: output `ceil(in / stride)`, the extra padding at the beginning.
pub const QK_AUTO_PAD_SAME_LOWER: qk_auto_pad = 2;
/// `"VALID"`: no padding.
pub const QK_AUTO_PAD_VALID: qk_auto_pad = 3;

/// The attributes of ONNX QLinearConv / ConvInteger. Each list is a pointer and a count;
/// NULL with count 0 means the ONNX default (pads 0, strides and dilations 1,
/// kernel_shape from the weights). Zero-initialise and set `group = 1` for the defaults.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qk_conv_attrs {
    /// A `qk_auto_pad` value.
    pub auto_pad: qk_auto_pad,
    /// `pads`: all the beginnings, then all the ends (`[h_begin, w_begin, h_end, w_end]`).
    pub pads: *const i64,
    /// Values at `pads`.
    pub pads_count: usize,
    /// `strides`, one per spatial axis.
    pub strides: *const i64,
    /// Values at `strides`.
    pub strides_count: usize,
    /// `dilations`, one per spatial axis.
    pub dilations: *const i64,
    /// Values at `dilations`.
    pub dilations_count: usize,
    /// `kernel_shape`: if given, must equal the weights' spatial dimensions.
    pub kernel_shape: *const i64,
    /// Values at `kernel_shape`.
    pub kernel_shape_count: usize,
    /// `group` (≥ 1).
    pub group: i64,
}

/// Reads an attribute list (NULL with count 0: empty; values ≥ 0).
fn read_list(ptr: *const i64, count: usize, what: &'static str) -> Result<Vec<usize>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    super::onnx::read_shape(ptr, count, what)
}

/// The Rust attributes from `*attrs`.
fn read_attrs(attrs: *const qk_conv_attrs) -> Result<crate::onnx::ConvAttrs, Failure> {
    use crate::onnx::AutoPad;
    let s = span(attrs, 1, "attrs")?;
    // SAFETY: checked non-null and aligned; the caller guarantees it is readable. Copied.
    let a = unsafe { slice(attrs, 1, &s) }[0];
    let auto_pad = match a.auto_pad {
        QK_AUTO_PAD_NOTSET => AutoPad::NotSet,
        QK_AUTO_PAD_SAME_UPPER => AutoPad::SameUpper,
        QK_AUTO_PAD_SAME_LOWER => AutoPad::SameLower,
        QK_AUTO_PAD_VALID => AutoPad::Valid,
        v => return Err(Failure::invalid(format!("`attrs.auto_pad` = {v} is not a qk_auto_pad value (0..=3)"))),
    };
    let group = usize::try_from(a.group)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| Failure::invalid(format!("`attrs.group` = {} must be at least 1", a.group)))?;
    Ok(crate::onnx::ConvAttrs {
        auto_pad,
        pads: read_list(a.pads, a.pads_count, "attrs.pads")?,
        strides: read_list(a.strides, a.strides_count, "attrs.strides")?,
        dilations: read_list(a.dilations, a.dilations_count, "attrs.dilations")?,
        kernel_shape: read_list(a.kernel_shape, a.kernel_shape_count, "attrs.kernel_shape")?,
        group,
    })
}

/// Binds the type `$t` to u8 or i8 by the (already checked) dtype `$d`.
macro_rules! with_int8 {
    ($d:expr, $t:ident, $body:block) => {
        match $d {
            Dtype::U8 => {
                type $t = u8;
                $body
            }
            _ => {
                type $t = i8;
                $body
            }
        }
    };
}

/// The shape of a per-tensor (1 value) or per-output-channel (`count` values) parameter.
fn param_shape(count: usize) -> Vec<usize> {
    if count == 1 { Vec::new() } else { vec![count] }
}

/// QLinearConv (ONNX opset 10) on NCHW tensors:
/// `y = saturate(round_half_even((conv(x − x_zero_point, w − w_zero_point) + bias) · m) + y_zero_point)`
/// with `m = x_scale · w_scale / y_scale` in `float` (onnxruntime's arithmetic).
///
/// * `x`: dtype `x_dtype` (`QK_U8`/`QK_I8`), shape `x_shape[x_rank]` = `[N, C, H, W]`
///   (or `[N, C, W]`).
/// * `w`: dtype `w_dtype`, shape `[M, C/group, kH, kW]` (or `[M, C/group, kW]`).
/// * `x_scale`, `x_zero_point` (dtype `x_dtype`), `y_scale`, `y_zero_point` (dtype
///   `y_dtype`): one value each. `w_scale`, `w_zero_point` (dtype `w_dtype`): 1 value or
///   M values (per output channel).
/// * `bias`: optional (NULL with count 0), else M `int32_t` values.
/// * `attrs`: the operator's attributes.
/// * `y`: dtype `y_dtype`, `[N, M, OH, OW]`, `y_count` equal to its element count.
///
/// # Safety
///
/// Each pointer must be NULL (an error, unless optional) or point to at least its count
/// of readable elements (`y`: writable), not modified by another thread during the call;
/// the lists in `*attrs` likewise.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_qlinear_conv(
    x: *const c_void,
    x_dtype: qk_dtype,
    x_shape: *const i64,
    x_rank: usize,
    x_scale: *const f32,
    x_scale_count: usize,
    x_zero_point: *const c_void,
    x_zero_point_count: usize,
    w: *const c_void,
    w_dtype: qk_dtype,
    w_shape: *const i64,
    w_rank: usize,
    w_scale: *const f32,
    w_scale_count: usize,
    w_zero_point: *const c_void,
    w_zero_point_count: usize,
    y_scale: *const f32,
    y_scale_count: usize,
    y_zero_point: *const c_void,
    y_zero_point_count: usize,
    bias: *const i32,
    bias_count: usize,
    attrs: *const qk_conv_attrs,
    y: *mut c_void,
    y_dtype: qk_dtype,
    y_count: usize,
) -> qk_status {
    use super::onnx::{int8_slice, numel, read_shape};
    use crate::onnx::{self, TensorRef};
    guard("qk_qlinear_conv", || {
        let x_dtype = int8_dtype(x_dtype, "x_dtype")?;
        let w_dtype = int8_dtype(w_dtype, "w_dtype")?;
        let y_dtype = int8_dtype(y_dtype, "y_dtype")?;
        let x_shape = read_shape(x_shape, x_rank, "x_shape")?;
        let w_shape = read_shape(w_shape, w_rank, "w_shape")?;
        let (x_n, w_n) = (numel(&x_shape, "x_shape")?, numel(&w_shape, "w_shape")?);
        let attrs = read_attrs(attrs)?;
        let x_s = span(x.cast::<u8>(), x_n, "x")?;
        let w_s = span(w.cast::<u8>(), w_n, "w")?;
        let sx_s = span(x_scale, x_scale_count, "x_scale")?;
        let sw_s = span(w_scale, w_scale_count, "w_scale")?;
        let sy_s = span(y_scale, y_scale_count, "y_scale")?;
        let zx_s = span(x_zero_point.cast::<u8>(), x_zero_point_count, "x_zero_point")?;
        let zw_s = span(w_zero_point.cast::<u8>(), w_zero_point_count, "w_zero_point")?;
        let zy_s = span(y_zero_point.cast::<u8>(), y_zero_point_count, "y_zero_point")?;
        let b_s = opt_span(bias, bias_count, "bias")?;
        let y = y.cast::<u8>();
        let y_s = span(y.cast_const(), y_count, "y")?;
        let mut ins = vec![&x_s, &w_s, &sx_s, &sw_s, &sy_s, &zx_s, &zw_s, &zy_s];
        ins.extend(b_s.as_ref());
        check_disjoint(&y_s, &ins)?;
        let (px, pw, py, pb) = (param_shape(x_scale_count), param_shape(w_scale_count), param_shape(y_scale_count), [bias_count]);
        let (pzx, pzw, pzy) = (param_shape(x_zero_point_count), param_shape(w_zero_point_count), param_shape(y_zero_point_count));
        // SAFETY: spans checked with these pointers and counts; the caller guarantees the
        // inputs are readable and unchanged during the call, `y` writable and unshared
        // (checked disjoint from every input).
        let (sx, sw, sy, b, y_bytes) = unsafe {
            (
                slice(x_scale, x_scale_count, &sx_s),
                slice(w_scale, w_scale_count, &sw_s),
                slice(y_scale, y_scale_count, &sy_s),
                opt_slice(bias, bias_count, &b_s),
                slice_mut(y, y_count, &y_s),
            )
        };
        with_int8!(x_dtype, A, {
            with_int8!(w_dtype, B, {
                with_int8!(y_dtype, Y, {
                    // SAFETY: as above; u8/i8 views of byte spans.
                    let (xv, zx, wv, zw, zy) = unsafe {
                        (
                            int8_slice::<A>(x, x_n, &x_s),
                            int8_slice::<A>(x_zero_point, x_zero_point_count, &zx_s),
                            int8_slice::<B>(w, w_n, &w_s),
                            int8_slice::<B>(w_zero_point, w_zero_point_count, &zw_s),
                            int8_slice::<Y>(y_zero_point, y_zero_point_count, &zy_s),
                        )
                    };
                    let yv: &mut [Y] = bytemuck::cast_slice_mut(&mut *y_bytes);
                    onnx::qlinear_conv_in(
                        &*context()?,
                        TensorRef::new(xv, &x_shape),
                        TensorRef::new(sx, &px),
                        TensorRef::new(zx, &pzx),
                        TensorRef::new(wv, &w_shape),
                        TensorRef::new(sw, &pw),
                        TensorRef::new(zw, &pzw),
                        TensorRef::new(sy, &py),
                        TensorRef::new(zy, &pzy),
                        b.map(|b| TensorRef::new(b, &pb)),
                        &attrs,
                        yv,
                    )?;
                    Ok(())
                })
            })
        })
    })
}

/// ConvInteger (ONNX opset 10) on NCHW tensors: `y = conv(x − x_zero_point, w − w_zero_point)`
/// in `int32_t`, exact; `QK_ERR_OVERFLOW` if a result does not fit.
///
/// Shapes and `attrs` as [`qk_qlinear_conv`]. `x_zero_point` (dtype `x_dtype`) and
/// `w_zero_point` (dtype `w_dtype`) are optional (NULL with count 0 means 0):
/// `x_zero_point` one value, `w_zero_point` 1 or M values. `y_count` must equal the
/// output's element count.
///
/// # Safety
///
/// As [`qk_qlinear_conv`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_conv_integer(
    x: *const c_void,
    x_dtype: qk_dtype,
    x_shape: *const i64,
    x_rank: usize,
    x_zero_point: *const c_void,
    x_zero_point_count: usize,
    w: *const c_void,
    w_dtype: qk_dtype,
    w_shape: *const i64,
    w_rank: usize,
    w_zero_point: *const c_void,
    w_zero_point_count: usize,
    attrs: *const qk_conv_attrs,
    y: *mut i32,
    y_count: usize,
) -> qk_status {
    use super::onnx::{int8_slice, numel, opt_int8_slice, read_shape};
    use crate::onnx::{self, TensorRef};
    guard("qk_conv_integer", || {
        let x_dtype = int8_dtype(x_dtype, "x_dtype")?;
        let w_dtype = int8_dtype(w_dtype, "w_dtype")?;
        let x_shape = read_shape(x_shape, x_rank, "x_shape")?;
        let w_shape = read_shape(w_shape, w_rank, "w_shape")?;
        let (x_n, w_n) = (numel(&x_shape, "x_shape")?, numel(&w_shape, "w_shape")?);
        let attrs = read_attrs(attrs)?;
        let x_s = span(x.cast::<u8>(), x_n, "x")?;
        let w_s = span(w.cast::<u8>(), w_n, "w")?;
        let zx_s = opt_span(x_zero_point.cast::<u8>(), x_zero_point_count, "x_zero_point")?;
        let zw_s = opt_span(w_zero_point.cast::<u8>(), w_zero_point_count, "w_zero_point")?;
        let y_s = span(y.cast_const(), y_count, "y")?;
        let mut ins = vec![&x_s, &w_s];
        ins.extend(zx_s.as_ref());
        ins.extend(zw_s.as_ref());
        check_disjoint(&y_s, &ins)?;
        let (pzx, pzw) = (param_shape(x_zero_point_count), param_shape(w_zero_point_count));
        // SAFETY: `y` checked and disjoint from every input; writable and unshared.
        let yv = unsafe { slice_mut(y, y_count, &y_s) };
        with_int8!(x_dtype, A, {
            with_int8!(w_dtype, B, {
                // SAFETY: spans checked with these pointers and counts; the caller
                // guarantees the inputs are readable and unchanged; u8/i8 byte views.
                let (xv, zx, wv, zw) = unsafe {
                    (
                        int8_slice::<A>(x, x_n, &x_s),
                        opt_int8_slice::<A>(x_zero_point, x_zero_point_count, &zx_s),
                        int8_slice::<B>(w, w_n, &w_s),
                        opt_int8_slice::<B>(w_zero_point, w_zero_point_count, &zw_s),
                    )
                };
                onnx::conv_integer_in(
                    &*context()?,
                    TensorRef::new(xv, &x_shape),
                    TensorRef::new(wv, &w_shape),
                    zx.map(|z| TensorRef::new(z, &pzx)),
                    zw.map(|z| TensorRef::new(z, &pzw)),
                    &attrs,
                    yv,
                )?;
                Ok(())
            })
        })
    })
}
