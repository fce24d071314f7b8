//! QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear.
//!
//! The arithmetic is onnxruntime's and the ONNX reference evaluator's, which agree:
//! - quantize: `y = saturate(round_half_even(x / scale) + zero_point)`, with a true f32
//!   division (not a multiply by the reciprocal, which rounds differently);
//! - dequantize: `y = ((x − zero_point) as f32) · scale`, the subtraction exact in
//!   integers and one f32 rounding for the product.

use qkern_kernels::reference::round_half_even_f32;

use super::{QuantSliceMut, QuantTensor, QuantType, TensorRef, normalize_axis, numel};
use crate::error::{Error, Result, check_scale};

/// QuantizeLinear attributes (opset 25), with ONNX's defaults from [`Default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantizeAttrs {
    /// The quantization axis for per-axis and blocked quantization (default 1; negative
    /// counts from the back). Ignored for per-tensor quantization, as in ONNX.
    pub axis: i64,
    /// The block size for blocked quantization; 0 (the default) means not blocked.
    pub block_size: i64,
    /// ONNX's `saturate` (default true). It only concerns float8 outputs, which qkern does
    /// not produce: integer outputs always saturate, whatever its value.
    pub saturate: bool,
}

impl Default for QuantizeAttrs {
    fn default() -> Self {
        QuantizeAttrs { axis: 1, block_size: 0, saturate: true }
    }
}

/// DequantizeLinear attributes (opset 25), with ONNX's defaults from [`Default`]. The
/// output type is always f32 here (ONNX's `output_dtype` = FLOAT, or the type of an f32
/// scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DequantizeAttrs {
    /// The quantization axis for per-axis and blocked quantization (default 1; negative
    /// counts from the back). Ignored for per-tensor quantization, as in ONNX.
    pub axis: i64,
    /// The block size for blocked quantization; 0 (the default) means not blocked.
    pub block_size: i64,
}

impl Default for DequantizeAttrs {
    fn default() -> Self {
        DequantizeAttrs { axis: 1, block_size: 0 }
    }
}

/// QuantizeLinear's output type, by ONNX's rule: the zero point's type if there is one
/// (and then `output_dtype`, if set, must agree), else `output_dtype`, else `UINT8`.
///
/// `output_dtype` is the attribute's `TensorProto.DataType` code, 0 when absent.
pub fn quantize_output_type(output_dtype: i64, zero_point: Option<QuantType>) -> Result<QuantType> {
    let attr = match output_dtype {
        0 => None,
        code => match QuantType::from_onnx_dtype(code) {
            Some(QuantType::I32) | None => {
                return Err(Error::Unsupported(format!(
                    "QuantizeLinear output_dtype {code} is not an integer type qkern quantizes to (UINT8, INT8, UINT16, INT16, UINT4, INT4, UINT2, INT2)"
                )));
            }
            Some(t) => Some(t),
        },
    };
    match (attr, zero_point) {
        (_, Some(QuantType::I32)) => Err(Error::InvalidParameter("y_zero_point: INT32 is not a QuantizeLinear output type".into())),
        (Some(a), Some(z)) if a != z => Err(Error::InvalidParameter(format!(
            "output_dtype is {} but y_zero_point is {}; ONNX requires them to agree",
            a.name(),
            z.name()
        ))),
        (_, Some(z)) => Ok(z),
        (Some(a), None) => Ok(a),
        (None, None) => Ok(QuantType::U8),
    }
}

/// How scale and zero point map onto the elements of `x`.
#[derive(Clone, Copy, Debug)]
enum Granularity {
    /// One scale.
    Tensor,
    /// One scale per index along the axis: `x` is `outer × dim × inner`.
    Axis { outer: usize, dim: usize, inner: usize },
    /// One scale per block of `block` indices along the axis; the scale is
    /// `outer × nblocks × inner`.
    Blocked { outer: usize, dim: usize, inner: usize, block: usize, nblocks: usize },
}

/// Writes `out[e] = f(x[e], p)` for every element `e`, where `p` is the index of the
/// element's scale and zero point under `g` (quantize and dequantize share this walk).
fn map_with_params<X: Copy, Y>(g: Granularity, x: &[X], out: &mut [Y], mut f: impl FnMut(X, usize) -> Y) {
    // An empty x may still have a huge dimension ([2^40, 0]): don't walk it.
    if x.is_empty() {
        return;
    }
    match g {
        Granularity::Tensor => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = f(v, 0);
            }
        }
        Granularity::Axis { outer, dim, inner } => {
            for o in 0..outer {
                for d in 0..dim {
                    let base = (o * dim + d) * inner;
                    for (q, &v) in out[base..base + inner].iter_mut().zip(&x[base..base + inner]) {
                        *q = f(v, d);
                    }
                }
            }
        }
        Granularity::Blocked { outer, dim, inner, block, nblocks } => {
            for o in 0..outer {
                for d in 0..dim {
                    let base = (o * dim + d) * inner;
                    let p = (o * nblocks + d / block) * inner;
                    for r in 0..inner {
                        out[base + r] = f(x[base + r], p + r);
                    }
                }
            }
        }
    }
}

/// Whether a scale or zero point of this shape is ONNX's per-tensor form: a scalar or a
/// 1-element vector (onnxruntime's `IsScalarOr1ElementVector`).
fn is_per_tensor(shape: &[usize]) -> bool {
    shape.len() <= 1 && numel(shape) == Some(1)
}

/// ONNX's granularity rule, from the scale's shape and the attributes.
fn granularity(x_shape: &[usize], s_shape: &[usize], axis: i64, block_size: i64, scale_name: &str) -> Result<Granularity> {
    if block_size < 0 {
        return Err(Error::InvalidParameter(format!("block_size = {block_size} must be ≥ 0")));
    }
    if is_per_tensor(s_shape) {
        return Ok(Granularity::Tensor);
    }
    let rank = x_shape.len();
    let ax = normalize_axis("axis", axis, rank)?;
    // x's own length check bounds the whole product, but not these partial ones when
    // another dimension is 0 (x = [0, 2^40, 2^40] is empty yet its inner product overflows).
    let overflow = || Error::InvalidParameter(format!("x's shape {x_shape:?} overflows usize on one side of axis {ax}"));
    let outer = numel(&x_shape[..ax]).ok_or_else(overflow)?;
    let dim = x_shape[ax];
    let inner = numel(&x_shape[ax + 1..]).ok_or_else(overflow)?;
    if block_size == 0 {
        if s_shape.len() != 1 || s_shape[0] != dim {
            return Err(Error::ShapeMismatch(format!(
                "`{scale_name}` has shape {s_shape:?}: per-axis quantization needs a 1-D tensor of x.shape[{ax}] = {dim} values (x is {x_shape:?}); a scalar means per tensor, and a rank-{rank} tensor needs block_size > 0"
            )));
        }
        return Ok(Granularity::Axis { outer, dim, inner });
    }
    let block = block_size as usize;
    let nblocks = dim.div_ceil(block);
    let ok =
        s_shape.len() == rank && s_shape.iter().zip(x_shape).enumerate().all(|(i, (&s, &d))| if i == ax { s == nblocks } else { s == d });
    if !ok {
        let mut want = x_shape.to_vec();
        want[ax] = nblocks;
        return Err(Error::ShapeMismatch(format!(
            "`{scale_name}` has shape {s_shape:?}: blocked quantization of x {x_shape:?} along axis {ax} with block_size {block} needs {want:?} (ceil({dim}/{block}) = {nblocks} blocks)"
        )));
    }
    Ok(Granularity::Blocked { outer, dim, inner, block, nblocks })
}

/// Checks a zero point against its scale's shape and its type's range.
fn check_zero_point<S: Elem>(zp: &TensorRef<'_, S>, s_shape: &[usize], qt: QuantType, what: &'static str) -> Result<()> {
    zp.check(what)?;
    let same = zp.shape == s_shape || (is_per_tensor(zp.shape) && is_per_tensor(s_shape));
    if !same {
        return Err(Error::ShapeMismatch(format!(
            "`{what}` has shape {:?} but the scale has shape {s_shape:?}; ONNX requires the same shape",
            zp.shape
        )));
    }
    match out_of_range(zp.data, qt) {
        Some(v) => {
            let (lo, hi) = qt.range();
            Err(Error::ZeroPointOutOfRange { what, value: v, min: lo as i64, max: hi as i64 })
        }
        None => Ok(()),
    }
}

/// The first stored value outside `qt`'s range (the sub-byte types are stored wider).
fn out_of_range<S: Elem>(data: &[S], qt: QuantType) -> Option<i64> {
    let (lo, hi) = qt.range();
    data.iter().map(|v| v.to_i64()).find(|&v| v < lo as i64 || v > hi as i64)
}

fn check_scales(s: &[f32], what: &'static str) -> Result<()> {
    s.iter().try_for_each(|&v| check_scale(what, v))
}

/// The storage types of the quantized tensors.
trait Elem: Copy + Send + Sync + 'static {
    fn to_i64(self) -> i64;
    /// `v` must be in the type's range.
    fn from_i64(v: i64) -> Self;
    /// The view inside `t` if it is stored as `Self`.
    fn extract<'a>(t: &QuantTensor<'a>) -> Option<TensorRef<'a, Self>>;
}

macro_rules! elem {
    ($t:ty, $($v:ident),+) => {
        impl Elem for $t {
            #[inline(always)]
            fn to_i64(self) -> i64 {
                self as i64
            }
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn extract<'a>(t: &QuantTensor<'a>) -> Option<TensorRef<'a, Self>> {
                match t {
                    $(QuantTensor::$v(v) => Some(*v),)+
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}
elem!(u8, U8, U4, U2);
elem!(i8, I8, I4, I2);
elem!(u16, U16);
elem!(i16, I16);
elem!(i32, I32);

/// One quantized value: `saturate(round_half_even(x / s) + z)`. NaN maps to `lo`, as in
/// onnxruntime's vector kernel and the ONNX reference (whose NaN → int32 cast gives
/// INT32_MIN before the clip); ±inf saturate.
#[inline(always)]
fn quantize_one(x: f32, s: f32, z: i64, lo: i64, hi: i64) -> i64 {
    let r = round_half_even_f32(x / s);
    if r.is_nan() {
        return lo;
    }
    // `as` saturates at the i64 range; the clamp then saturates to the type.
    (r as i64).saturating_add(z).clamp(lo, hi)
}

#[inline(always)]
fn dequantize_one(v: i64, z: i64, s: f32) -> f32 {
    // Exact in i64, one rounding to f32 (exact for every type but i32), one for the product.
    (v - z) as f32 * s
}

/// QuantizeLinear (opset 25): `y = saturate(round_half_even(x / y_scale) + y_zero_point)`.
///
/// - `y_scale`: a scalar or 1-element vector (per tensor), a 1-D tensor of
///   `x.shape[axis]` values (per axis), or, with `block_size > 0`, x's shape with
///   `ceil(x.shape[axis] / block_size)` along the axis (blocked). Finite and positive.
/// - `y_zero_point`: optional (0 when absent), the scale's shape, the output's type.
/// - `y`: x's number of elements; its variant is the output type (see
///   [`quantize_output_type`] for ONNX's rule choosing it).
///
/// NaN inputs give the type's minimum (onnxruntime and the ONNX reference do the same);
/// ±inf saturate.
pub fn quantize_linear(
    x: TensorRef<'_, f32>,
    y_scale: TensorRef<'_, f32>,
    y_zero_point: Option<QuantTensor<'_>>,
    attrs: &QuantizeAttrs,
    y: QuantSliceMut<'_>,
) -> Result<()> {
    let qt = y.qtype();
    if let Some(z) = &y_zero_point
        && z.qtype() != qt
    {
        return Err(Error::InvalidParameter(format!(
            "y_zero_point is {} but y is {}; ONNX requires the same type",
            z.qtype().name(),
            qt.name()
        )));
    }
    match y {
        QuantSliceMut::U8(o) | QuantSliceMut::U4(o) | QuantSliceMut::U2(o) => {
            quantize_typed(x, y_scale, zp_view(&y_zero_point)?, qt, attrs, o)
        }
        QuantSliceMut::I8(o) | QuantSliceMut::I4(o) | QuantSliceMut::I2(o) => {
            quantize_typed(x, y_scale, zp_view(&y_zero_point)?, qt, attrs, o)
        }
        QuantSliceMut::U16(o) => quantize_typed(x, y_scale, zp_view(&y_zero_point)?, qt, attrs, o),
        QuantSliceMut::I16(o) => quantize_typed(x, y_scale, zp_view(&y_zero_point)?, qt, attrs, o),
    }
}

/// The zero point's typed view (its type was checked against the other operand).
fn zp_view<'a, S: Elem>(z: &Option<QuantTensor<'a>>) -> Result<Option<TensorRef<'a, S>>> {
    match z {
        None => Ok(None),
        Some(t) => S::extract(t).map(Some).ok_or_else(|| Error::Internal("zero point storage type".into())),
    }
}

fn quantize_typed<S: Elem>(
    x: TensorRef<'_, f32>,
    scale: TensorRef<'_, f32>,
    zp: Option<TensorRef<'_, S>>,
    qt: QuantType,
    attrs: &QuantizeAttrs,
    out: &mut [S],
) -> Result<()> {
    let n = x.check("x")?;
    scale.check("y_scale")?;
    if out.len() != n {
        return Err(Error::ShapeMismatch(format!("`y` has {} elements but x {:?} has {n}", out.len(), x.shape)));
    }
    let g = granularity(x.shape, scale.shape, attrs.axis, attrs.block_size, "y_scale")?;
    check_scales(scale.data, "y_scale")?;
    if let Some(z) = &zp {
        check_zero_point(z, scale.shape, qt, "y_zero_point")?;
    }
    let (lo, hi) = qt.range();
    let (lo, hi) = (lo as i64, hi as i64);
    let zat = |i: usize| zp.as_ref().map_or(0, |z| z.data[i].to_i64());
    map_with_params(g, x.data, out, |v, i| S::from_i64(quantize_one(v, scale.data[i], zat(i), lo, hi)));
    Ok(())
}

/// DequantizeLinear (opset 25): `y = (x − x_zero_point) · x_scale`, in f32.
///
/// - `x`: any [`QuantType`]; sub-byte values must lie in their type's range.
/// - `x_scale`: as in [`quantize_linear`]; finite and positive.
/// - `x_zero_point`: optional (0 when absent), the scale's shape, x's type. For int32
///   inputs ONNX has no zero point: one may be given only if it is all zeros.
/// - `y`: x's number of elements.
///
/// The subtraction is exact (in integers) and the product is one f32 rounding, which is
/// what onnxruntime and the ONNX reference compute.
pub fn dequantize_linear(
    x: QuantTensor<'_>,
    x_scale: TensorRef<'_, f32>,
    x_zero_point: Option<QuantTensor<'_>>,
    attrs: &DequantizeAttrs,
    y: &mut [f32],
) -> Result<()> {
    let qt = x.qtype();
    if let Some(z) = &x_zero_point
        && z.qtype() != qt
    {
        return Err(Error::InvalidParameter(format!(
            "x_zero_point is {} but x is {}; ONNX requires the same type",
            z.qtype().name(),
            qt.name()
        )));
    }
    match x {
        QuantTensor::U8(t) | QuantTensor::U4(t) | QuantTensor::U2(t) => dequantize_typed(t, x_scale, zp_view(&x_zero_point)?, qt, attrs, y),
        QuantTensor::I8(t) | QuantTensor::I4(t) | QuantTensor::I2(t) => dequantize_typed(t, x_scale, zp_view(&x_zero_point)?, qt, attrs, y),
        QuantTensor::U16(t) => dequantize_typed(t, x_scale, zp_view(&x_zero_point)?, qt, attrs, y),
        QuantTensor::I16(t) => dequantize_typed(t, x_scale, zp_view(&x_zero_point)?, qt, attrs, y),
        QuantTensor::I32(t) => dequantize_typed(t, x_scale, zp_view(&x_zero_point)?, qt, attrs, y),
    }
}

fn dequantize_typed<S: Elem>(
    x: TensorRef<'_, S>,
    scale: TensorRef<'_, f32>,
    zp: Option<TensorRef<'_, S>>,
    qt: QuantType,
    attrs: &DequantizeAttrs,
    out: &mut [f32],
) -> Result<()> {
    let n = x.check("x")?;
    scale.check("x_scale")?;
    if out.len() != n {
        return Err(Error::ShapeMismatch(format!("`y` has {} elements but x {:?} has {n}", out.len(), x.shape)));
    }
    let g = granularity(x.shape, scale.shape, attrs.axis, attrs.block_size, "x_scale")?;
    check_scales(scale.data, "x_scale")?;
    if let Some(z) = &zp {
        check_zero_point(z, scale.shape, qt, "x_zero_point")?;
        if qt == QuantType::I32 && z.data.iter().any(|v| v.to_i64() != 0) {
            return Err(Error::InvalidParameter(
                "x_zero_point: ONNX dequantizes int32 without a zero point (it is 0); a nonzero int32 zero point is not allowed".into(),
            ));
        }
    }
    // Only the sub-byte types can hold values outside their range.
    if matches!(qt, QuantType::U4 | QuantType::I4 | QuantType::U2 | QuantType::I2)
        && let Some(v) = out_of_range(x.data, qt)
    {
        let (lo, hi) = qt.range();
        return Err(Error::InvalidParameter(format!("`x` holds {v}, outside the {} range [{lo}, {hi}]", qt.name())));
    }
    let zat = |i: usize| zp.as_ref().map_or(0, |z| z.data[i].to_i64());
    map_with_params(g, x.data, out, |v, i| dequantize_one(v.to_i64(), zat(i), scale.data[i]));
    Ok(())
}

/// DynamicQuantizeLinear's scale and zero point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynamicQuantized {
    /// `y_scale`.
    pub scale: f32,
    /// `y_zero_point`.
    pub zero_point: u8,
}

/// DynamicQuantizeLinear (opset 11), u8 output, exactly ONNX's definition in f32:
///
/// ```text
/// x_min = min(0, min(x)),  x_max = max(0, max(x))
/// scale = (x_max − x_min) / 255           (1 when x_max = x_min, i.e. x is all zeros)
/// zero_point = round_half_even(clamp(0 − x_min / scale, 0, 255))
/// y = saturate(round_half_even(x / scale) + zero_point)
/// ```
///
/// `y` must have `x.len()` elements (x's shape does not matter). An empty `x` gives
/// scale 1 and zero point 0, as an all-zero one does. Errors: a NaN or infinite input, a
/// range `x_max − x_min` that overflows f32, or one so small that the scale underflows
/// to zero.
pub fn dynamic_quantize_linear(x: &[f32], y: &mut [u8]) -> Result<DynamicQuantized> {
    if y.len() != x.len() {
        return Err(Error::ShapeMismatch(format!("`y` has {} elements but x has {}", y.len(), x.len())));
    }
    // The range always includes 0; fold from there. `finite` is tracked separately
    // because f32::min/max ignore NaN.
    let (mut lo, mut hi, mut finite) = (0.0f32, 0.0f32, true);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
        finite &= v.is_finite();
    }
    if !finite {
        let (i, v) = x.iter().enumerate().find(|(_, v)| !v.is_finite()).map_or((0, f32::NAN), |(i, v)| (i, *v));
        return Err(Error::InvalidParameter(format!("DynamicQuantizeLinear: x[{i}] = {v}; the input must be finite")));
    }
    let scale = if hi == lo { 1.0f32 } else { (hi - lo) / 255.0f32 };
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidParameter(format!(
            "DynamicQuantizeLinear: the range [{lo}, {hi}] gives the scale {scale}, which is not a finite positive f32"
        )));
    }
    let zp = round_half_even_f32((0.0f32 - lo / scale).clamp(0.0, 255.0)) as i64;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = quantize_one(v, scale, zp, 0, 255) as u8;
    }
    Ok(DynamicQuantized { scale, zero_point: zp as u8 })
}
