//! The one error type. Every bad input to the public API ends here, never in a panic.

use std::fmt;

/// Everything that can go wrong in a qkern call. The message says what was wrong and
/// with which argument, so an engine can forward it to its user as is.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Dimensions that must agree do not (`what` names the operands and sizes).
    ShapeMismatch(String),
    /// A slice is shorter than the shape and strides require.
    BufferTooSmall {
        /// The argument.
        what: &'static str,
        /// Elements required.
        needed: usize,
        /// Elements given.
        got: usize,
    },
    /// A row stride is smaller than the row length.
    InvalidStride {
        /// The argument.
        what: &'static str,
        /// The stride given.
        stride: usize,
        /// The smallest valid stride.
        min: usize,
    },
    /// A zero point outside its integer type or quantization range.
    ZeroPointOutOfRange {
        /// The argument.
        what: &'static str,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A scale that is NaN, infinite, zero or negative (or not representable).
    InvalidScale {
        /// The argument.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A bit width out of range.
    InvalidBits {
        /// The value given.
        bits: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// Any other parameter out of its domain (the message says which and why).
    InvalidParameter(String),
    /// A combination qkern does not implement (dtype pair, ONNX attribute, ...).
    Unsupported(String),
    /// An exact result does not fit the requested output type.
    Overflow(String),
    /// The requested instruction set is not available on this CPU or build.
    IsaUnavailable(String),
    /// An internal invariant failed (a bug; reported instead of panicking).
    Internal(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch(s) => write!(f, "shape mismatch: {s}"),
            Error::BufferTooSmall { what, needed, got } => {
                write!(f, "buffer too small: `{what}` needs {needed} elements, got {got}")
            }
            Error::InvalidStride { what, stride, min } => {
                write!(f, "invalid stride: `{what}` is {stride}, must be at least {min}")
            }
            Error::ZeroPointOutOfRange { what, value, min, max } => {
                write!(f, "zero point out of range: `{what}` is {value}, must be in [{min}, {max}]")
            }
            Error::InvalidScale { what, value } => {
                write!(f, "invalid scale: `{what}` is {value}, must be finite and positive")
            }
            Error::InvalidBits { bits, min, max } => {
                write!(f, "invalid bit width: {bits}, must be in [{min}, {max}]")
            }
            Error::InvalidParameter(s) => write!(f, "invalid parameter: {s}"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::Overflow(s) => write!(f, "overflow: {s}"),
            Error::IsaUnavailable(s) => write!(f, "instruction set unavailable: {s}"),
            Error::Internal(s) => write!(f, "internal error (please report): {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// An empty vector with room for `n` elements, or [`Error::Overflow`] naming `what`
/// when `n` overflowed (`None`) or the allocator refuses: an error instead of a
/// capacity-overflow panic or an allocation-failure abort.
pub(crate) fn try_vec_with_capacity<T>(n: Option<usize>, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = Vec::new();
    match n.map(|n| v.try_reserve_exact(n)) {
        Some(Ok(())) => Ok(v),
        _ => Err(Error::Overflow(format!("{} cannot be allocated", what()))),
    }
}

/// Checks a scale: finite and > 0.
pub(crate) fn check_scale(what: &'static str, s: f32) -> Result<()> {
    if s.is_finite() && s > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidScale { what, value: s as f64 })
    }
}

/// Checks that a row-major `rows × cols` matrix with row stride `ld` fits in `len`
/// elements, returning the number of elements it spans.
pub(crate) fn check_matrix(what: &'static str, len: usize, rows: usize, cols: usize, ld: usize) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    if ld < cols {
        return Err(Error::InvalidStride { what, stride: ld, min: cols });
    }
    let needed = (rows - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(cols))
        .ok_or_else(|| Error::InvalidParameter(format!("`{what}`: {rows} rows of stride {ld} overflow usize")))?;
    if len < needed {
        return Err(Error::BufferTooSmall { what, needed, got: len });
    }
    Ok(needed)
}
