//! The C ABI. Header: `include/qkern.h` (generated from this module by cbindgen).
//!
//! Conventions, shared by every entry point:
//!
//! * Every function returns a [`qk_status`]; `QK_OK` (0) is success. On failure,
//!   [`qk_last_error`] returns a message naming the function and the argument.
//! * Nothing unwinds into C: each body runs under `catch_unwind`, and a panic (a qkern
//!   bug) becomes `QK_ERR_PANIC` with the panic message.
//! * Buffers are passed as a pointer plus an explicit element count. The Rust side builds
//!   a slice only after checking the pointer (non-null, aligned), the count (its byte
//!   size fits `isize`) and that every output buffer is disjoint from every input
//!   buffer. A required pointer must be non-null even when its count is 0; an optional
//!   one (documented "may be NULL") may be NULL only together with a count of 0.
//! * Enumerations that come from C ([`qk_dtype`], [`qk_requant_mode`], [`qk_scheme`],
//!   [`qk_granularity`], [`qk_pwlq_breakpoint`]) are plain `int32_t` in the signatures
//!   and are validated here: an out-of-range value is `QK_ERR_INVALID_PARAMETER`, never
//!   undefined behaviour.
//! * On failure, scalar out-parameters are left untouched and a handle out-parameter is
//!   NULL; the contents of output buffers are unspecified (an error found while
//!   computing, such as an `int32_t` overflow, may come after part of the output was
//!   written).
//!
//! Threads: every function may be called from any thread; the error message is
//! per thread. Handles ([`qk_gemm_weights`], [`qk_conv_filter`],
//! [`qk_codebook_weights`], [`qk_pwlq_weights`]) are immutable after creation and may be
//! used by several threads at once.
//!
//! Context: every entry point runs on one process-wide [`crate::Context`] — the kernel
//! table of the best tier this CPU has (capped by `QKERN_MAX_ISA`) and the threads set by
//! [`qk_set_num_threads`] (by default rayon's global pool). [`qk_info`] reports it.

mod codebook;
mod conv;
mod gemm;
mod onnx;
mod pwlq;
mod requant;
mod runtime;
mod util;

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Error;

pub use codebook::*;
pub use conv::*;
pub use gemm::*;
pub use onnx::*;
pub use pwlq::*;
pub use requant::*;
pub use runtime::*;

/// Status code returned by every qkern C function. `QK_OK` is 0; every other value is
/// an error whose message [`qk_last_error`] returns.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum qk_status {
    /// Success.
    QK_OK = 0,
    /// A required pointer argument was NULL (or an optional one was NULL with a non-zero count).
    QK_ERR_NULL_POINTER = 1,
    /// Dimensions that must agree do not, or a count does not match a shape.
    QK_ERR_SHAPE = 2,
    /// A buffer holds fewer elements than its shape and strides require.
    QK_ERR_BUFFER_TOO_SMALL = 3,
    /// A row stride is smaller than the row length.
    QK_ERR_INVALID_STRIDE = 4,
    /// A zero point lies outside its integer type or quantization range.
    QK_ERR_ZERO_POINT = 5,
    /// A scale is NaN, infinite, zero or negative.
    QK_ERR_SCALE = 6,
    /// A bit width is out of range.
    QK_ERR_BITS = 7,
    /// Any other argument out of its domain: an unknown enum value, a misaligned
    /// pointer, an output buffer overlapping an input.
    QK_ERR_INVALID_PARAMETER = 8,
    /// A valid combination qkern does not implement (for example a dtype an operation does not take).
    QK_ERR_UNSUPPORTED = 9,
    /// A size computation overflows, or an exact result does not fit its output type.
    QK_ERR_OVERFLOW = 10,
    /// The requested instruction set is not available on this CPU or build (`QKERN_MAX_ISA`).
    QK_ERR_ISA_UNAVAILABLE = 11,
    /// An internal invariant failed: a qkern bug, reported instead of crashing.
    QK_ERR_INTERNAL = 12,
    /// qkern panicked (a bug); the panic was caught at the C boundary.
    QK_ERR_PANIC = 13,
}

/// An element type, passed from C as an `int32_t`. The values are those of ONNX's
/// `TensorProto.DataType`, so an engine can pass a model's type through unchanged.
#[allow(non_camel_case_types)]
pub type qk_dtype = i32;

/// `float` (ONNX FLOAT).
pub const QK_F32: qk_dtype = 1;
/// `uint8_t` (ONNX UINT8).
pub const QK_U8: qk_dtype = 2;
/// `int8_t` (ONNX INT8).
pub const QK_I8: qk_dtype = 3;
/// `uint16_t` (ONNX UINT16).
pub const QK_U16: qk_dtype = 4;
/// `int16_t` (ONNX INT16).
pub const QK_I16: qk_dtype = 5;
/// `int32_t` (ONNX INT32).
pub const QK_I32: qk_dtype = 6;
/// Unsigned 4-bit integers, two per byte, the first element in the low nibble (ONNX UINT4).
pub const QK_UINT4: qk_dtype = 21;
/// Signed 4-bit integers, two per byte, the first element in the low nibble (ONNX INT4).
pub const QK_INT4: qk_dtype = 22;

/// A requantization rounding mode, passed from C as an `int32_t`.
#[allow(non_camel_case_types)]
pub type qk_requant_mode = i32;

/// ONNX / onnxruntime: `acc * scale` in float, round half to even, add the zero point, saturate.
pub const QK_REQUANT_FP32: qk_requant_mode = 0;
/// gemmlowp / TFLite: SaturatingRoundingDoublingHighMul then RoundingDivideByPOT.
pub const QK_REQUANT_TFLITE_DOUBLE_ROUNDING: qk_requant_mode = 1;
/// ruy / TFLite built with `TFLITE_SINGLE_ROUNDING`: one rounding of `acc * M` by `31 - shift`.
pub const QK_REQUANT_SINGLE_ROUNDING: qk_requant_mode = 2;

/// The element types the ABI names, decoded from a [`qk_dtype`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    Uint4,
    Int4,
}

impl Dtype {
    /// Decodes a dtype from C; an unknown value is an invalid parameter naming `what`.
    pub(crate) fn from_c(v: qk_dtype, what: &str) -> Result<Dtype, Failure> {
        Ok(match v {
            QK_F32 => Dtype::F32,
            QK_U8 => Dtype::U8,
            QK_I8 => Dtype::I8,
            QK_U16 => Dtype::U16,
            QK_I16 => Dtype::I16,
            QK_I32 => Dtype::I32,
            QK_UINT4 => Dtype::Uint4,
            QK_INT4 => Dtype::Int4,
            _ => {
                return Err(Failure::invalid(format!(
                    "`{what}` = {v} is not a qk_dtype (QK_F32 = 1, QK_U8 = 2, QK_I8 = 3, QK_U16 = 4, \
                     QK_I16 = 5, QK_I32 = 6, QK_UINT4 = 21, QK_INT4 = 22)"
                )));
            }
        })
    }

    /// The C name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "QK_F32",
            Dtype::U8 => "QK_U8",
            Dtype::I8 => "QK_I8",
            Dtype::U16 => "QK_U16",
            Dtype::I16 => "QK_I16",
            Dtype::I32 => "QK_I32",
            Dtype::Uint4 => "QK_UINT4",
            Dtype::Int4 => "QK_INT4",
        }
    }
}

/// Decodes a requantization mode from C.
pub(crate) fn requant_mode_from_c(v: qk_requant_mode, what: &str) -> Result<crate::RequantMode, Failure> {
    use crate::RequantMode;
    match v {
        QK_REQUANT_FP32 => Ok(RequantMode::Fp32),
        QK_REQUANT_TFLITE_DOUBLE_ROUNDING => Ok(RequantMode::TfliteDoubleRounding),
        QK_REQUANT_SINGLE_ROUNDING => Ok(RequantMode::SingleRounding),
        _ => Err(Failure::invalid(format!(
            "`{what}` = {v} is not a qk_requant_mode (QK_REQUANT_FP32 = 0, \
             QK_REQUANT_TFLITE_DOUBLE_ROUNDING = 1, QK_REQUANT_SINGLE_ROUNDING = 2)"
        ))),
    }
}

/// A failed call: the status to return and the message for [`qk_last_error`].
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: qk_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: qk_status, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }
    pub(crate) fn null(what: &str) -> Failure {
        Failure::new(qk_status::QK_ERR_NULL_POINTER, format!("null pointer: `{what}` must not be NULL"))
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(qk_status::QK_ERR_INVALID_PARAMETER, format!("invalid parameter: {}", message.into()))
    }
    pub(crate) fn shape(message: impl Into<String>) -> Failure {
        Failure::new(qk_status::QK_ERR_SHAPE, format!("shape mismatch: {}", message.into()))
    }
    pub(crate) fn overflow(message: impl Into<String>) -> Failure {
        Failure::new(qk_status::QK_ERR_OVERFLOW, format!("overflow: {}", message.into()))
    }
    pub(crate) fn unsupported(message: impl Into<String>) -> Failure {
        Failure::new(qk_status::QK_ERR_UNSUPPORTED, format!("unsupported: {}", message.into()))
    }
}

/// The status of each [`Error`] variant. The match is exhaustive on purpose: a new
/// variant must be given a status here.
pub(crate) fn status_of(e: &Error) -> qk_status {
    match e {
        Error::ShapeMismatch(_) => qk_status::QK_ERR_SHAPE,
        Error::BufferTooSmall { .. } => qk_status::QK_ERR_BUFFER_TOO_SMALL,
        Error::InvalidStride { .. } => qk_status::QK_ERR_INVALID_STRIDE,
        Error::ZeroPointOutOfRange { .. } => qk_status::QK_ERR_ZERO_POINT,
        Error::InvalidScale { .. } => qk_status::QK_ERR_SCALE,
        Error::InvalidBits { .. } => qk_status::QK_ERR_BITS,
        Error::InvalidParameter(_) => qk_status::QK_ERR_INVALID_PARAMETER,
        Error::Unsupported(_) => qk_status::QK_ERR_UNSUPPORTED,
        Error::Overflow(_) => qk_status::QK_ERR_OVERFLOW,
        Error::IsaUnavailable(_) => qk_status::QK_ERR_ISA_UNAVAILABLE,
        Error::Internal(_) => qk_status::QK_ERR_INTERNAL,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure { status: status_of(&e), message: e.to_string() }
    }
}

thread_local! {
    /// The message of the last failed call on this thread (None after a success).
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Stores (or, with `None`, clears) this thread's error message. Never panics: during
/// thread teardown the thread-local may be gone, and then the message is dropped.
fn set_last_error(message: Option<String>) {
    let c = message.map(|m| {
        // A CString cannot hold NUL; a message never should, but user-provided text
        // (a panic message) might.
        let bytes: Vec<u8> = m.into_bytes().into_iter().map(|b| if b == 0 { b'?' } else { b }).collect();
        CString::new(bytes).unwrap_or_default()
    });
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            *slot = c;
        }
    });
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs the body of the entry point `name`: catches panics, maps failures to a status
/// and records (or clears) the thread's error message.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), Failure>) -> qk_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error(None);
            qk_status::QK_OK
        }
        Ok(Err(f)) => {
            set_last_error(Some(format!("{name}: {}", f.message)));
            f.status
        }
        Err(payload) => {
            let msg = panic_message(&*payload);
            // Dropping a payload can itself panic (a payload whose Drop panics); do not
            // let that escape either.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(Some(format!("{name}: panic (a qkern bug, please report): {msg}")));
            qk_status::QK_ERR_PANIC
        }
    }
}

const VERSION_C: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(s) => s,
    Err(_) => panic!("the crate version contains a NUL byte"),
};

/// The library version, `"MAJOR.MINOR.PATCH"`, as a static NUL-terminated string.
///
/// # Safety
///
/// Always safe to call. The returned pointer is never NULL, points to static storage
/// and must not be freed or written through.
#[unsafe(no_mangle)]
pub extern "C" fn qk_version() -> *const c_char {
    VERSION_C.as_ptr()
}

/// The message of the last qkern call on this thread that failed, or `""` if the last
/// call succeeded (or there was none). Never NULL. Calling `qk_last_error` or
/// `qk_version` does not change it.
///
/// # Safety
///
/// Always safe to call. The returned string is owned by qkern: do not free it, and do
/// not use it after the next qkern call on the same thread (copy it if you need it
/// longer).
#[unsafe(no_mangle)]
pub extern "C" fn qk_last_error() -> *const c_char {
    // Nothing here can panic; the fallback covers a thread-local already torn down.
    LAST_ERROR
        .try_with(|cell| match cell.try_borrow() {
            Ok(slot) => slot.as_ref().map_or(c"".as_ptr(), |s| s.as_ptr()),
            Err(_) => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests;
