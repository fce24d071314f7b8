//! ONNX quantized operators with ONNX's exact semantics.
//!
//! | operator | entry point | ONNX opset semantics |
//! |---|---|---|
//! | QuantizeLinear | [`quantize_linear`] | 25: per tensor, per axis, blocked; u8, i8, u16, i16, uint4, int4, uint2, int2 |
//! | DequantizeLinear | [`dequantize_linear`] | 25: the same granularities and types, plus i32 |
//! | DynamicQuantizeLinear | [`dynamic_quantize_linear`] | 11 (u8) |
//! | QLinearMatMul | [`qlinear_matmul`] | 21 with f32 scales (u8/i8 in any combination) |
//! | MatMulInteger | [`matmul_integer`] | 10 |
//! | QLinearConv | [`qlinear_conv`] | 10 (1-D and 2-D, NCHW, per-channel weight parameters, auto_pad) |
//! | ConvInteger | [`conv_integer`] | 10 (1-D and 2-D) |
//!
//! Tensors are passed as light views: [`TensorRef`] (a dense row-major slice and its
//! shape) for inputs, and a caller-provided slice for the output, whose shape the
//! operator defines (the input's for the element-wise operators, [`matmul_output_shape`]
//! for the matrix products). Sub-byte integer types (int4, uint4, int2, uint2) are stored
//! unpacked, one value per `i8`/`u8`, as the ONNX test data stores them.
//!
//! Every malformed input (shapes, axis, block size, scale and zero-point shapes, types,
//! values out of range, NaN or non-positive scales) returns an [`Error`]; nothing
//! panics.
//!
//! Scales are f32. ONNX also allows f16/bf16 scales: convert them to f32 first (exact),
//! after which every computation below is the f32 one that onnxruntime performs.
//!
//! ```
//! use qkern::onnx::{quantize_linear, QuantizeAttrs, QuantSliceMut, QuantTensor, TensorRef};
//! let x = [0.0f32, 1.0, 2.5, -3.0, 1000.0];
//! let (scale, zp) = (2.0f32, 128u8);
//! let mut y = [0u8; 5];
//! quantize_linear(
//!     TensorRef::new(&x, &[5]),
//!     TensorRef::scalar(&scale),
//!     Some(QuantTensor::U8(TensorRef::scalar(&zp))),
//!     &QuantizeAttrs::default(),
//!     QuantSliceMut::U8(&mut y),
//! )
//! .unwrap();
//! // 1.0/2 = 0.5 and −3.0/2 = −1.5 are ties: they round to the even 0 and −2; 1000/2 saturates.
//! assert_eq!(y, [128, 128, 129, 126, 255]);
//! ```

mod conv;
mod matmul;
mod quantize;

pub use conv::{AutoPad, ConvAttrs, conv_integer, conv_integer_in, conv_output_shape, qlinear_conv, qlinear_conv_in};
pub use matmul::{QLinearInput, matmul_integer, matmul_integer_in, matmul_output_shape, qlinear_matmul, qlinear_matmul_in};
pub use quantize::{
    DequantizeAttrs, DynamicQuantized, QuantizeAttrs, dequantize_linear, dynamic_quantize_linear, quantize_linear, quantize_output_type,
};

use crate::error::{Error, Result};

/// A read-only view of a dense, row-major (C order) n-d tensor: `data` holds exactly the
/// product of `shape` elements. A rank-0 tensor (`shape = []`) is a scalar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRef<'a, T> {
    /// The elements, row-major.
    pub data: &'a [T],
    /// The dimensions, outermost first.
    pub shape: &'a [usize],
}

impl<'a, T> TensorRef<'a, T> {
    /// A view of `data` with `shape` (checked when used).
    pub fn new(data: &'a [T], shape: &'a [usize]) -> Self {
        TensorRef { data, shape }
    }

    /// A rank-0 tensor holding `*v`.
    pub fn scalar(v: &'a T) -> Self {
        TensorRef { data: std::slice::from_ref(v), shape: &[] }
    }

    /// The number of elements the shape describes (`None` if it overflows usize).
    pub fn numel(&self) -> Option<usize> {
        numel(self.shape)
    }

    /// Checks that `data` holds exactly the elements `shape` describes.
    pub(crate) fn check(&self, what: &str) -> Result<usize> {
        check_len(what, self.data.len(), self.shape)
    }
}

/// The integer types of the ONNX quantization operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// `uint8`, [0, 255].
    U8,
    /// `int8`, [−128, 127].
    I8,
    /// `uint16`, [0, 65535].
    U16,
    /// `int16`, [−32768, 32767].
    I16,
    /// `uint4`, [0, 15], stored one per `u8`.
    U4,
    /// `int4`, [−8, 7], stored one per `i8`.
    I4,
    /// `uint2`, [0, 3], stored one per `u8`.
    U2,
    /// `int2`, [−2, 1], stored one per `i8`.
    I2,
    /// `int32` (a DequantizeLinear input only).
    I32,
}

impl QuantType {
    /// Every type.
    pub const ALL: [QuantType; 9] = [
        QuantType::U8,
        QuantType::I8,
        QuantType::U16,
        QuantType::I16,
        QuantType::U4,
        QuantType::I4,
        QuantType::U2,
        QuantType::I2,
        QuantType::I32,
    ];

    /// The value range `(min, max)`, as i32.
    pub const fn range(self) -> (i32, i32) {
        match self {
            QuantType::U8 => (0, 255),
            QuantType::I8 => (-128, 127),
            QuantType::U16 => (0, 65535),
            QuantType::I16 => (-32768, 32767),
            QuantType::U4 => (0, 15),
            QuantType::I4 => (-8, 7),
            QuantType::U2 => (0, 3),
            QuantType::I2 => (-2, 1),
            QuantType::I32 => (i32::MIN, i32::MAX),
        }
    }

    /// The ONNX name (`TensorProto.DataType`), e.g. `"UINT8"`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::U8 => "UINT8",
            QuantType::I8 => "INT8",
            QuantType::U16 => "UINT16",
            QuantType::I16 => "INT16",
            QuantType::U4 => "UINT4",
            QuantType::I4 => "INT4",
            QuantType::U2 => "UINT2",
            QuantType::I2 => "INT2",
            QuantType::I32 => "INT32",
        }
    }

    /// The ONNX `TensorProto.DataType` code.
    pub const fn onnx_dtype(self) -> i64 {
        match self {
            QuantType::U8 => 2,
            QuantType::I8 => 3,
            QuantType::U16 => 4,
            QuantType::I16 => 5,
            QuantType::I32 => 6,
            QuantType::U4 => 21,
            QuantType::I4 => 22,
            QuantType::U2 => 25,
            QuantType::I2 => 26,
        }
    }

    /// The type with ONNX `TensorProto.DataType` code `code`, if it is one of these.
    pub fn from_onnx_dtype(code: i64) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.onnx_dtype() == code)
    }

    /// The type with ONNX name `name` (`"UINT8"`, `"INT4"`, ...), if it is one of these.
    pub fn from_onnx_name(name: &str) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A read-only quantized tensor of any [`QuantType`]. Sub-byte types hold one value per
/// element of their storage type, which must lie in the type's range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuantTensor<'a> {
    /// `uint8`.
    U8(TensorRef<'a, u8>),
    /// `int8`.
    I8(TensorRef<'a, i8>),
    /// `uint16`.
    U16(TensorRef<'a, u16>),
    /// `int16`.
    I16(TensorRef<'a, i16>),
    /// `uint4`, unpacked.
    U4(TensorRef<'a, u8>),
    /// `int4`, unpacked.
    I4(TensorRef<'a, i8>),
    /// `uint2`, unpacked.
    U2(TensorRef<'a, u8>),
    /// `int2`, unpacked.
    I2(TensorRef<'a, i8>),
    /// `int32`.
    I32(TensorRef<'a, i32>),
}

impl QuantTensor<'_> {
    /// The element type.
    pub fn qtype(&self) -> QuantType {
        match self {
            QuantTensor::U8(_) => QuantType::U8,
            QuantTensor::I8(_) => QuantType::I8,
            QuantTensor::U16(_) => QuantType::U16,
            QuantTensor::I16(_) => QuantType::I16,
            QuantTensor::U4(_) => QuantType::U4,
            QuantTensor::I4(_) => QuantType::I4,
            QuantTensor::U2(_) => QuantType::U2,
            QuantTensor::I2(_) => QuantType::I2,
            QuantTensor::I32(_) => QuantType::I32,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            QuantTensor::U8(t) | QuantTensor::U4(t) | QuantTensor::U2(t) => t.shape,
            QuantTensor::I8(t) | QuantTensor::I4(t) | QuantTensor::I2(t) => t.shape,
            QuantTensor::U16(t) => t.shape,
            QuantTensor::I16(t) => t.shape,
            QuantTensor::I32(t) => t.shape,
        }
    }
}

/// A mutable output buffer of a QuantizeLinear type (every [`QuantType`] but `I32`).
/// Sub-byte types are written unpacked, one value per element.
#[derive(Debug)]
pub enum QuantSliceMut<'a> {
    /// `uint8`.
    U8(&'a mut [u8]),
    /// `int8`.
    I8(&'a mut [i8]),
    /// `uint16`.
    U16(&'a mut [u16]),
    /// `int16`.
    I16(&'a mut [i16]),
    /// `uint4`, unpacked.
    U4(&'a mut [u8]),
    /// `int4`, unpacked.
    I4(&'a mut [i8]),
    /// `uint2`, unpacked.
    U2(&'a mut [u8]),
    /// `int2`, unpacked.
    I2(&'a mut [i8]),
}

impl QuantSliceMut<'_> {
    /// The element type.
    pub fn qtype(&self) -> QuantType {
        match self {
            QuantSliceMut::U8(_) => QuantType::U8,
            QuantSliceMut::I8(_) => QuantType::I8,
            QuantSliceMut::U16(_) => QuantType::U16,
            QuantSliceMut::I16(_) => QuantType::I16,
            QuantSliceMut::U4(_) => QuantType::U4,
            QuantSliceMut::I4(_) => QuantType::I4,
            QuantSliceMut::U2(_) => QuantType::U2,
            QuantSliceMut::I2(_) => QuantType::I2,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            QuantSliceMut::U8(s) | QuantSliceMut::U4(s) | QuantSliceMut::U2(s) => s.len(),
            QuantSliceMut::I8(s) | QuantSliceMut::I4(s) | QuantSliceMut::I2(s) => s.len(),
            QuantSliceMut::U16(s) => s.len(),
            QuantSliceMut::I16(s) => s.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Product of the dimensions, `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d))
}

/// Checks that a buffer of `len` elements is exactly a tensor of `shape`.
fn check_len(what: &str, len: usize, shape: &[usize]) -> Result<usize> {
    let n = numel(shape).ok_or_else(|| Error::InvalidParameter(format!("`{what}`: the shape {shape:?} overflows usize")))?;
    if n != len {
        return Err(Error::ShapeMismatch(format!("`{what}` has {len} elements but its shape {shape:?} needs {n}")));
    }
    Ok(n)
}

/// ONNX axis normalisation: `axis` in `[−rank, rank − 1]`, negative counting from the back.
fn normalize_axis(what: &str, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(Error::InvalidParameter(format!("`{what}` = {axis} is out of range [{}, {}] for a rank-{rank} input", -r, r - 1)));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}
