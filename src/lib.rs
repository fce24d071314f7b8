//! # qkern
//!
//! Hand-tuned SIMD CPU kernels for quantized neural-network inference, exact by
//! construction: every SIMD kernel equals a scalar reference bit for bit.
//!
//! * [`gemm`] — int8 GEMM: u8/i8 activations × i8/u8 prepacked weights, zero points,
//!   per-tensor / per-column scales, fused output stages (i32, f32, requantized u8/i8).
//! * [`conv`] — NHWC conv2d (geometry, prepacked filters, indirection); depthwise
//!   convolution with 3×3 / 5×5 specialised kernels.
//! * [`quant`] — quantizers: uniform symmetric/affine at 1–8 bits, per tensor / channel /
//!   group, rounding modes, calibration, error metrics.
//! * [`requant`] — the three requantization modes (ONNX fp32, TFLite double rounding,
//!   single rounding) and TFLite's multiplier derivation.
//! * [`onnx`] — ONNX operator semantics, bit for bit: QLinearMatMul, MatMulInteger,
//!   QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearConv, ConvInteger.
//! * [`dispatch`] — CPU detection, the kernel table, `QKERN_MAX_ISA`.
//! * [`ffi`] — the C ABI (`include/qkern.h`).
//!
//! Every bad input returns an [`Error`]; nothing reachable from the public API panics.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod codebook;
pub mod conv;
pub mod dispatch;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod gemm;
pub mod onnx;
pub mod peak;
pub mod quant;
pub mod requant;

pub use dispatch::{Context, KernelTable};
pub use error::{Error, Result};
pub use gemm::{Activations, MatrixMut, MatrixRef, PackedWeights, PerChannel, Requantize, WeightQuant};
pub use qkern_kernels::{Int8, Isa, QuantizedMultiplier, RequantMode};

/// The library version, `MAJOR.MINOR.PATCH`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
