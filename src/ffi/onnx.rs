//! The ONNX quantized operators from C, over [`crate::onnx`], with ONNX's inputs:
//! tensors as data pointer + dtype + shape array (`int64_t`, as in ONNX) + rank;
//! scales and zero points as pointer + element count (their shape follows from the
//! operator's rules, see each function); outputs as pointer + element count.
//!
//! 4-bit tensors (`QK_INT4`, `QK_UINT4`) are packed as ONNX and onnxruntime store them:
//! two elements per byte, the first in the low nibble, an odd count padded with a zero
//! high nibble. Counts are always in elements; such a buffer holds `(count + 1) / 2`
//! bytes. (The Rust API takes them unpacked; the conversion happens here.)

use std::ffi::c_void;

use qkern_kernels::Int8;

use super::runtime::context;
use super::util::{Span, check_disjoint, check_outputs_disjoint, opt_span, slice, slice_mut, span};
use super::{Dtype, Failure, guard, qk_dtype, qk_status};
use crate::onnx::{self, DequantizeAttrs, QLinearInput, QuantSliceMut, QuantTensor, QuantizeAttrs, TensorRef};

/// Largest rank accepted: far beyond any model, small enough that a wrong rank is caught
/// before a large shape array is read.
const MAX_RANK: usize = 64;

/// Reads a shape (`int64_t` dims, each ≥ 0) of `rank` dims; NULL is allowed for rank 0.
pub(super) fn read_shape(ptr: *const i64, rank: usize, what: &'static str) -> Result<Vec<usize>, Failure> {
    if rank == 0 {
        return Ok(Vec::new());
    }
    if rank > MAX_RANK {
        return Err(Failure::invalid(format!("`{what}`: rank {rank} is larger than {MAX_RANK}")));
    }
    let s = span(ptr, rank, what)?;
    // SAFETY: checked non-null, aligned and sized; the caller guarantees `rank` readable
    // int64_t. The dims are copied at once, so no reference outlives this call.
    let dims = unsafe { slice(ptr, rank, &s) };
    dims.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Failure::shape(format!("`{what}` = {dims:?}: dimension {d} is negative or too large")))
        })
        .collect()
}

/// The number of elements of `shape`, or an overflow failure.
pub(super) fn numel(shape: &[usize], what: &str) -> Result<usize, Failure> {
    shape
        .iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .ok_or_else(|| Failure::overflow(format!("`{what}`: the shape {shape:?} has more elements than size_t holds")))
}

/// A zero-filled vector of `n` elements, or a failure instead of an abort when the
/// allocation is impossible.
fn alloc<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>, Failure> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Failure::overflow(format!("`{what}`: cannot allocate {n} elements for unpacking")))?;
    v.resize(n, T::default());
    Ok(v)
}

/// The span of a buffer of `count` elements of `dtype` (4-bit types: packed bytes).
fn dtype_span(ptr: *const c_void, dtype: Dtype, count: usize, what: &'static str) -> Result<Span, Failure> {
    match dtype {
        Dtype::U8 | Dtype::I8 => span(ptr.cast::<u8>(), count, what),
        Dtype::U16 | Dtype::I16 => span(ptr.cast::<u16>(), count, what),
        Dtype::I32 => span(ptr.cast::<i32>(), count, what),
        Dtype::F32 => span(ptr.cast::<f32>(), count, what),
        Dtype::Uint4 | Dtype::Int4 => span(ptr.cast::<u8>(), count.div_ceil(2), what),
    }
}

/// As [`dtype_span`] for an optional buffer (NULL with count 0: absent).
fn opt_dtype_span(ptr: *const c_void, dtype: Dtype, count: usize, what: &'static str) -> Result<Option<Span>, Failure> {
    match (ptr.is_null(), count) {
        (_, 0) => Ok(None),
        (true, _) => opt_span(ptr.cast::<u8>(), count, what), // the NULL-with-count failure
        (false, _) => dtype_span(ptr, dtype, count, what).map(Some),
    }
}

/// 4-bit values unpacked from ONNX's two-per-byte layout.
fn unpack4(packed: &[u8], count: usize, signed: bool, what: &str) -> Result<Vec<u8>, Failure> {
    let mut out = alloc::<u8>(count, what)?;
    for (i, o) in out.iter_mut().enumerate() {
        let nib = (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
        // Signed: sign-extend the nibble (stored as the i8 bit pattern).
        *o = if signed { (((nib << 4) as i8) >> 4) as u8 } else { nib };
    }
    Ok(out)
}

/// Packs unpacked 4-bit values (already in range) two per byte, low nibble first.
fn pack4(values: &[u8], packed: &mut [u8]) {
    for (i, byte) in packed.iter_mut().enumerate() {
        let lo = values[2 * i] & 0x0F;
        let hi = values.get(2 * i + 1).map_or(0, |v| v & 0x0F);
        *byte = lo | (hi << 4);
    }
}

/// A quantized input read from C: borrowed, or unpacked into a vector for 4-bit types.
enum QIn<'a> {
    U8(&'a [u8]),
    I8(&'a [i8]),
    U16(&'a [u16]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    U4(Vec<u8>),
    I4(Vec<i8>),
}

impl QIn<'_> {
    /// Reads `count` elements of `dtype` at `ptr` (checked as `s`).
    ///
    /// # Safety
    ///
    /// `s` was checked by [`dtype_span`] with the same pointer, dtype and count, the
    /// memory is readable and not written during `'a`.
    unsafe fn read<'a>(ptr: *const c_void, dtype: Dtype, count: usize, s: &Span, what: &str) -> Result<QIn<'a>, Failure> {
        // Each arm reads the element type the span was checked for (4-bit: packed bytes).
        Ok(match dtype {
            // SAFETY: forwarded from the caller (u8 span).
            Dtype::U8 => QIn::U8(unsafe { slice(ptr.cast(), count, s) }),
            // SAFETY: as above (i8 has the layout of u8).
            Dtype::I8 => QIn::I8(unsafe { slice(ptr.cast(), count, s) }),
            // SAFETY: forwarded from the caller (u16 span: alignment 2 checked).
            Dtype::U16 => QIn::U16(unsafe { slice(ptr.cast(), count, s) }),
            // SAFETY: as above (i16 has the layout of u16).
            Dtype::I16 => QIn::I16(unsafe { slice(ptr.cast(), count, s) }),
            // SAFETY: forwarded from the caller (i32 span: alignment 4 checked).
            Dtype::I32 => QIn::I32(unsafe { slice(ptr.cast(), count, s) }),
            Dtype::Uint4 => {
                // SAFETY: forwarded from the caller (a span of (count + 1) / 2 bytes).
                let packed = unsafe { slice(ptr.cast(), count.div_ceil(2), s) };
                QIn::U4(unpack4(packed, count, false, what)?)
            }
            Dtype::Int4 => {
                // SAFETY: as above.
                let packed = unsafe { slice(ptr.cast(), count.div_ceil(2), s) };
                QIn::I4(unpack4(packed, count, true, what)?.into_iter().map(|b| b as i8).collect())
            }
            Dtype::F32 => return Err(Failure::new(qk_status::QK_ERR_INTERNAL, "internal error: QIn::read on QK_F32")),
        })
    }

    /// The tensor view with `shape`.
    fn tensor<'s>(&'s self, shape: &'s [usize]) -> QuantTensor<'s> {
        match self {
            QIn::U8(d) => QuantTensor::U8(TensorRef::new(d, shape)),
            QIn::I8(d) => QuantTensor::I8(TensorRef::new(d, shape)),
            QIn::U16(d) => QuantTensor::U16(TensorRef::new(d, shape)),
            QIn::I16(d) => QuantTensor::I16(TensorRef::new(d, shape)),
            QIn::I32(d) => QuantTensor::I32(TensorRef::new(d, shape)),
            QIn::U4(d) => QuantTensor::U4(TensorRef::new(d, shape)),
            QIn::I4(d) => QuantTensor::I4(TensorRef::new(d, shape)),
        }
    }
}

/// ONNX's shape for a QuantizeLinear / DequantizeLinear scale (and zero point) given as
/// `count` values: 1 → a scalar (per tensor); else, without blocks, `[count]` (per
/// axis); with `block_size > 0`, x's shape with `ceil(x.shape[axis] / block_size)` along
/// the axis (blocked), which must hold `count` values.
fn qdq_param_shape(x_shape: &[usize], axis: i64, block_size: i64, count: usize, what: &str) -> Result<Vec<usize>, Failure> {
    if count == 1 {
        return Ok(Vec::new());
    }
    if block_size <= 0 {
        // A negative block size is refused by the operator, with its message.
        return Ok(vec![count]);
    }
    let rank = x_shape.len() as i64;
    if axis < -rank || axis >= rank {
        return Err(Failure::invalid(format!("`axis` = {axis} is out of range [{}, {}] for a rank-{rank} x", -rank, rank - 1)));
    }
    let ax = if axis < 0 { axis + rank } else { axis } as usize;
    let block = usize::try_from(block_size).unwrap_or(usize::MAX);
    let mut shape = x_shape.to_vec();
    shape[ax] = shape[ax].div_ceil(block);
    let want = numel(&shape, what)?;
    if want != count {
        return Err(Failure::shape(format!(
            "`{what}` has {count} values; blocked quantization of x {x_shape:?} along axis {ax} with block_size {block} needs {want} (shape {shape:?})"
        )));
    }
    Ok(shape)
}

/// Which way a matmul parameter varies.
#[derive(Clone, Copy)]
enum Along {
    /// Per row of a (and of y): `[M]` or `[..., M, 1]`.
    Rows,
    /// Per column of b: `[N]` or `[..., 1, N]`.
    Cols,
}

/// The shapes a matmul needs to place its parameters.
struct MatmulDims {
    m: usize,
    n: usize,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    out_batch: Vec<usize>,
}

impl MatmulDims {
    /// From the operand shapes; errors (the operator's) when they do not multiply.
    fn new(a: &[usize], b: &[usize]) -> Result<MatmulDims, Failure> {
        let out = onnx::matmul_output_shape(a, b)?;
        let (a_batch, m) = match a.len() {
            1 => (Vec::new(), 1),
            r => (a[..r - 2].to_vec(), a[r - 2]),
        };
        let (b_batch, n) = match b.len() {
            1 => (Vec::new(), 1),
            r => (b[..r - 2].to_vec(), b[r - 1]),
        };
        let out_batch = out[..out.len() - (a.len() > 1) as usize - (b.len() > 1) as usize].to_vec();
        Ok(MatmulDims { m, n, a_batch, b_batch, out_batch })
    }

    /// The ONNX shape of a parameter given as `count` values: 1 → per tensor; M (N) →
    /// `[M]` (`[N]`); `batches·M` → `[batch..., M, 1]` (`[batch..., 1, N]`), the batch
    /// dimensions the output's or the operand's own.
    fn param_shape(&self, count: usize, along: Along, own_batch: &[usize], what: &str) -> Result<Vec<usize>, Failure> {
        let len = match along {
            Along::Rows => self.m,
            Along::Cols => self.n,
        };
        if count == 1 {
            return Ok(Vec::new());
        }
        if count == len {
            return Ok(vec![len]);
        }
        for batch in [&self.out_batch[..], own_batch] {
            if !batch.is_empty() && numel(batch, what)?.checked_mul(len) == Some(count) {
                let mut s = batch.to_vec();
                s.extend(match along {
                    Along::Rows => [len, 1],
                    Along::Cols => [1, len],
                });
                return Ok(s);
            }
        }
        let (kind, dim) = match along {
            Along::Rows => ("per row", "M"),
            Along::Cols => ("per column", "N"),
        };
        let batched = if self.out_batch.is_empty() {
            String::new()
        } else {
            format!(", or {len} per matrix of the batch {:?}", self.out_batch)
        };
        Err(Failure::shape(format!("`{what}` has {count} values; give 1 (per tensor) or {dim} = {len} ({kind}){batched}")))
    }
}

/// u8 or i8 for the matmul operands, else unsupported.
fn int8_dtype(v: qk_dtype, what: &str) -> Result<Dtype, Failure> {
    match Dtype::from_c(v, what)? {
        d @ (Dtype::U8 | Dtype::I8) => Ok(d),
        d => Err(Failure::unsupported(format!("`{what}` = {}: the operator takes QK_U8 or QK_I8", d.name()))),
    }
}

/// Binds the type `$t` to u8 or i8 by `$d` and evaluates `$body`.
macro_rules! with_int8 {
    ($d:expr, $t:ident, $body:expr) => {
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

/// A slice of `count` 8-bit elements of type `T` (u8 or i8) behind a checked span.
///
/// # Safety
///
/// As [`slice`]: `s` was checked with `ptr` and `count` (bytes), memory readable and
/// unchanged during `'a`.
pub(super) unsafe fn int8_slice<'a, T: Int8>(ptr: *const c_void, count: usize, s: &Span) -> &'a [T] {
    // SAFETY: u8 and i8 have size and alignment 1, so a span checked in bytes is valid
    // for T; the rest is the caller's guarantee.
    unsafe { slice(ptr.cast::<T>(), count, s) }
}

/// As [`int8_slice`] for an optional buffer.
///
/// # Safety
///
/// As [`int8_slice`] when `s` is `Some`.
pub(super) unsafe fn opt_int8_slice<'a, T: Int8>(ptr: *const c_void, count: usize, s: &Option<Span>) -> Option<&'a [T]> {
    // SAFETY: forwarded.
    s.as_ref().map(|s| unsafe { int8_slice(ptr, count, s) })
}

/// All spans present, for the overlap checks.
fn present<'s>(spans: &[&'s Option<Span>]) -> Vec<&'s Span> {
    spans.iter().filter_map(|s| s.as_ref()).collect()
}

/// MatMulInteger (ONNX opset 10): `y = (a − a_zero_point)·(b − b_zero_point)` in
/// `int32_t`, exact, with `numpy.matmul` shapes (1-D operands promoted, batch dimensions
/// broadcast). `QK_ERR_OVERFLOW` if a result does not fit `int32_t` (only possible for
/// very long K).
///
/// * `a`: dtype `a_dtype` (`QK_U8`/`QK_I8`), shape `a_shape[a_rank]` (`[..., M, K]` or `[K]`).
/// * `a_zero_point`: optional (NULL with count 0 means 0), `a_dtype`; 1 value (per
///   tensor), M values (per row), or M per batch matrix (`[..., M, 1]`).
/// * `b`: dtype `b_dtype` (`QK_U8`/`QK_I8`), shape `[..., K, N]` or `[K]`.
/// * `b_zero_point`: optional, `b_dtype`; 1, N (per column) or N per batch matrix.
/// * `y`: `y_count` elements, which must equal the element count of the output shape
///   (see [`qk_matmul_output_shape`]); must not overlap an input.
///
/// # Safety
///
/// Each data pointer must be NULL (an error, unless optional) or point to at least its
/// count of readable elements (`y`: writable), the shape arrays to `rank` readable
/// `int64_t` (NULL allowed for rank 0); no other thread may write the inputs or access
/// `y` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_matmul_integer(
    a: *const c_void,
    a_dtype: qk_dtype,
    a_shape: *const i64,
    a_rank: usize,
    a_zero_point: *const c_void,
    a_zero_point_count: usize,
    b: *const c_void,
    b_dtype: qk_dtype,
    b_shape: *const i64,
    b_rank: usize,
    b_zero_point: *const c_void,
    b_zero_point_count: usize,
    y: *mut i32,
    y_count: usize,
) -> qk_status {
    guard("qk_matmul_integer", || {
        let a_dtype = int8_dtype(a_dtype, "a_dtype")?;
        let b_dtype = int8_dtype(b_dtype, "b_dtype")?;
        let a_shape = read_shape(a_shape, a_rank, "a_shape")?;
        let b_shape = read_shape(b_shape, b_rank, "b_shape")?;
        let (a_n, b_n) = (numel(&a_shape, "a_shape")?, numel(&b_shape, "b_shape")?);
        let a_s = span(a.cast::<u8>(), a_n, "a")?;
        let b_s = span(b.cast::<u8>(), b_n, "b")?;
        let za_s = opt_span(a_zero_point.cast::<u8>(), a_zero_point_count, "a_zero_point")?;
        let zb_s = opt_span(b_zero_point.cast::<u8>(), b_zero_point_count, "b_zero_point")?;
        let y_s = span(y.cast_const(), y_count, "y")?;
        let mut ins = vec![&a_s, &b_s];
        ins.extend(present(&[&za_s, &zb_s]));
        check_disjoint(&y_s, &ins)?;
        let dims = MatmulDims::new(&a_shape, &b_shape)?;
        // Absent zero points (count 0) have no shape.
        let za_shape = match za_s {
            Some(_) => dims.param_shape(a_zero_point_count, Along::Rows, &dims.a_batch, "a_zero_point")?,
            None => Vec::new(),
        };
        let zb_shape = match zb_s {
            Some(_) => dims.param_shape(b_zero_point_count, Along::Cols, &dims.b_batch, "b_zero_point")?,
            None => Vec::new(),
        };
        // SAFETY: `y` was checked (non-null, aligned, size) and disjoint from every input;
        // the caller guarantees it is writable and unshared during the call.
        let y = unsafe { slice_mut(y, y_count, &y_s) };
        with_int8!(a_dtype, A, {
            with_int8!(b_dtype, B, {
                // SAFETY: spans checked with these pointers and counts; the caller
                // guarantees the inputs are readable and unchanged during the call.
                let (a, b, za, zb) = unsafe {
                    (
                        int8_slice::<A>(a, a_n, &a_s),
                        int8_slice::<B>(b, b_n, &b_s),
                        opt_int8_slice::<A>(a_zero_point, a_zero_point_count, &za_s),
                        opt_int8_slice::<B>(b_zero_point, b_zero_point_count, &zb_s),
                    )
                };
                onnx::matmul_integer_in(
                    &*context()?,
                    TensorRef::new(a, &a_shape),
                    za.map(|z| TensorRef::new(z, &za_shape)),
                    TensorRef::new(b, &b_shape),
                    zb.map(|z| TensorRef::new(z, &zb_shape)),
                    y,
                )?;
                Ok(())
            })
        })
    })
}

/// QLinearMatMul (ONNX opset 21):
/// `y = saturate(round_half_even(((a − a_zero_point)·(b − b_zero_point)) · m) + y_zero_point)`
/// with `m = a_scale · b_scale / y_scale` in `float` (onnxruntime's arithmetic), and
/// `numpy.matmul` shapes.
///
/// * `a`, `b`, `y`: `QK_U8` or `QK_I8` each, in any combination; shapes as
///   [`qk_matmul_integer`]; `y_count` must equal the output's element count.
/// * Scales (finite, > 0) and zero points (the dtype of their tensor), all required,
///   each scale with as many values as its zero point: `a_*` and `y_*` 1 value (per
///   tensor), M (per row) or M per batch matrix; `b_*` 1, N (per column) or N per batch
///   matrix.
///
/// # Safety
///
/// As [`qk_matmul_integer`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_qlinear_matmul(
    a: *const c_void,
    a_dtype: qk_dtype,
    a_shape: *const i64,
    a_rank: usize,
    a_scale: *const f32,
    a_scale_count: usize,
    a_zero_point: *const c_void,
    a_zero_point_count: usize,
    b: *const c_void,
    b_dtype: qk_dtype,
    b_shape: *const i64,
    b_rank: usize,
    b_scale: *const f32,
    b_scale_count: usize,
    b_zero_point: *const c_void,
    b_zero_point_count: usize,
    y_scale: *const f32,
    y_scale_count: usize,
    y_zero_point: *const c_void,
    y_zero_point_count: usize,
    y: *mut c_void,
    y_dtype: qk_dtype,
    y_count: usize,
) -> qk_status {
    guard("qk_qlinear_matmul", || {
        let a_dtype = int8_dtype(a_dtype, "a_dtype")?;
        let b_dtype = int8_dtype(b_dtype, "b_dtype")?;
        let y_dtype = int8_dtype(y_dtype, "y_dtype")?;
        let a_shape = read_shape(a_shape, a_rank, "a_shape")?;
        let b_shape = read_shape(b_shape, b_rank, "b_shape")?;
        let (a_n, b_n) = (numel(&a_shape, "a_shape")?, numel(&b_shape, "b_shape")?);
        let a_s = span(a.cast::<u8>(), a_n, "a")?;
        let b_s = span(b.cast::<u8>(), b_n, "b")?;
        let sa_s = span(a_scale, a_scale_count, "a_scale")?;
        let sb_s = span(b_scale, b_scale_count, "b_scale")?;
        let sy_s = span(y_scale, y_scale_count, "y_scale")?;
        let za_s = span(a_zero_point.cast::<u8>(), a_zero_point_count, "a_zero_point")?;
        let zb_s = span(b_zero_point.cast::<u8>(), b_zero_point_count, "b_zero_point")?;
        let zy_s = span(y_zero_point.cast::<u8>(), y_zero_point_count, "y_zero_point")?;
        let y = y.cast::<u8>();
        let y_s = span(y.cast_const(), y_count, "y")?;
        check_disjoint(&y_s, &[&a_s, &b_s, &sa_s, &sb_s, &sy_s, &za_s, &zb_s, &zy_s])?;
        let dims = MatmulDims::new(&a_shape, &b_shape)?;
        for (s, z, sw, zw) in [
            (a_scale_count, a_zero_point_count, "a_scale", "a_zero_point"),
            (b_scale_count, b_zero_point_count, "b_scale", "b_zero_point"),
            (y_scale_count, y_zero_point_count, "y_scale", "y_zero_point"),
        ] {
            if s != z {
                return Err(Failure::shape(format!("`{sw}` has {s} values but `{zw}` has {z}; ONNX requires the same shape")));
            }
        }
        let pa = dims.param_shape(a_scale_count, Along::Rows, &dims.a_batch, "a_scale")?;
        let pb = dims.param_shape(b_scale_count, Along::Cols, &dims.b_batch, "b_scale")?;
        let py = dims.param_shape(y_scale_count, Along::Rows, &dims.out_batch, "y_scale")?;
        // SAFETY: spans checked with these pointers and counts; the caller guarantees the
        // inputs are readable and unchanged during the call.
        let (sa, sb, sy) =
            unsafe { (slice(a_scale, a_scale_count, &sa_s), slice(b_scale, b_scale_count, &sb_s), slice(y_scale, y_scale_count, &sy_s)) };
        // SAFETY: `y` checked and disjoint from every input; writable and unshared.
        let y_bytes = unsafe { slice_mut(y, y_count, &y_s) };
        with_int8!(a_dtype, A, {
            with_int8!(b_dtype, B, {
                with_int8!(y_dtype, Y, {
                    // SAFETY: as for the scales; u8/i8 views of byte spans.
                    let (a, za, b, zb, zy) = unsafe {
                        (
                            int8_slice::<A>(a, a_n, &a_s),
                            int8_slice::<A>(a_zero_point, a_zero_point_count, &za_s),
                            int8_slice::<B>(b, b_n, &b_s),
                            int8_slice::<B>(b_zero_point, b_zero_point_count, &zb_s),
                            int8_slice::<Y>(y_zero_point, y_zero_point_count, &zy_s),
                        )
                    };
                    let y: &mut [Y] = bytemuck::cast_slice_mut(&mut *y_bytes);
                    onnx::qlinear_matmul_in(
                        &*context()?,
                        QLinearInput::new(TensorRef::new(a, &a_shape), TensorRef::new(sa, &pa), TensorRef::new(za, &pa)),
                        QLinearInput::new(TensorRef::new(b, &b_shape), TensorRef::new(sb, &pb), TensorRef::new(zb, &pb)),
                        TensorRef::new(sy, &py),
                        TensorRef::new(zy, &py),
                        y,
                    )?;
                    Ok(())
                })
            })
        })
    })
}

/// QuantizeLinear (ONNX opset 25): `y = saturate(round_half_even(x / y_scale) + y_zero_point)`
/// with a true `float` division. NaN gives the type's minimum; ±inf saturate.
///
/// * `x`: `float`, shape `x_shape[x_rank]`.
/// * `y_scale`: finite, > 0; `y_scale_count` values: 1 (per tensor); without blocks
///   (`block_size` 0), `x_shape[axis]` values (per axis); with `block_size > 0`, x's
///   shape with `ceil(x_shape[axis] / block_size)` along `axis`, row-major (blocked).
/// * `y_zero_point`: optional (NULL with count 0 means 0), dtype `y_dtype`, as many
///   values as `y_scale`.
/// * `axis`: ONNX's attribute (default 1; negative counts from the back);
///   `block_size`: ONNX's attribute (0: not blocked).
/// * `y`: dtype `y_dtype` (`QK_U8`, `QK_I8`, `QK_U16`, `QK_I16`, `QK_UINT4`,
///   `QK_INT4`), `y_count` = x's element count.
///
/// # Safety
///
/// As [`qk_matmul_integer`]; 4-bit buffers hold `(count + 1) / 2` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_quantize_linear(
    x: *const f32,
    x_shape: *const i64,
    x_rank: usize,
    y_scale: *const f32,
    y_scale_count: usize,
    y_zero_point: *const c_void,
    y_zero_point_count: usize,
    axis: i64,
    block_size: i64,
    y: *mut c_void,
    y_dtype: qk_dtype,
    y_count: usize,
) -> qk_status {
    guard("qk_quantize_linear", || {
        let y_dtype = Dtype::from_c(y_dtype, "y_dtype")?;
        if matches!(y_dtype, Dtype::F32 | Dtype::I32) {
            return Err(Failure::unsupported(format!(
                "`y_dtype` = {}: QuantizeLinear produces QK_U8, QK_I8, QK_U16, QK_I16, QK_UINT4 or QK_INT4",
                y_dtype.name()
            )));
        }
        let x_shape = read_shape(x_shape, x_rank, "x_shape")?;
        let x_n = numel(&x_shape, "x_shape")?;
        let x_s = span(x, x_n, "x")?;
        let s_s = span(y_scale, y_scale_count, "y_scale")?;
        let z_s = opt_dtype_span(y_zero_point, y_dtype, y_zero_point_count, "y_zero_point")?;
        let y_s = dtype_span(y.cast_const(), y_dtype, y_count, "y")?;
        let mut ins = vec![&x_s, &s_s];
        ins.extend(present(&[&z_s]));
        check_disjoint(&y_s, &ins)?;
        if y_count != x_n {
            return Err(Failure::shape(format!("`y` has {y_count} elements but x {x_shape:?} has {x_n}")));
        }
        if z_s.is_some() && y_zero_point_count != y_scale_count {
            return Err(Failure::shape(format!(
                "`y_zero_point` has {y_zero_point_count} values but `y_scale` has {y_scale_count}; ONNX requires the same shape"
            )));
        }
        let p_shape = qdq_param_shape(&x_shape, axis, block_size, y_scale_count, "y_scale")?;
        // SAFETY: spans checked with these pointers and counts; inputs readable and
        // unchanged during the call.
        let (x, scale) = unsafe { (slice(x, x_n, &x_s), slice(y_scale, y_scale_count, &s_s)) };
        let zp = match &z_s {
            // SAFETY: as above, read as the dtype the span was checked for.
            Some(s) => Some(unsafe { QIn::read(y_zero_point, y_dtype, y_zero_point_count, s, "y_zero_point")? }),
            None => None,
        };
        let zp = zp.as_ref().map(|z| z.tensor(&p_shape));
        let attrs = QuantizeAttrs { axis, block_size, saturate: true };
        let (x, scale) = (TensorRef::new(x, &x_shape), TensorRef::new(scale, &p_shape));
        // In each arm: `y` was checked for this dtype and count and is disjoint from every
        // input; the caller guarantees it is writable and unshared during the call.
        match y_dtype {
            Dtype::U8 => {
                // SAFETY: see above.
                let y = unsafe { slice_mut(y.cast(), y_count, &y_s) };
                onnx::quantize_linear(x, scale, zp, &attrs, QuantSliceMut::U8(y))?
            }
            Dtype::I8 => {
                // SAFETY: see above.
                let y = unsafe { slice_mut(y.cast(), y_count, &y_s) };
                onnx::quantize_linear(x, scale, zp, &attrs, QuantSliceMut::I8(y))?
            }
            Dtype::U16 => {
                // SAFETY: see above.
                let y = unsafe { slice_mut(y.cast(), y_count, &y_s) };
                onnx::quantize_linear(x, scale, zp, &attrs, QuantSliceMut::U16(y))?
            }
            Dtype::I16 => {
                // SAFETY: see above.
                let y = unsafe { slice_mut(y.cast(), y_count, &y_s) };
                onnx::quantize_linear(x, scale, zp, &attrs, QuantSliceMut::I16(y))?
            }
            Dtype::Uint4 | Dtype::Int4 => {
                let mut tmp = alloc::<u8>(y_count, "y")?;
                if y_dtype == Dtype::Uint4 {
                    onnx::quantize_linear(x, scale, zp, &attrs, QuantSliceMut::U4(&mut tmp))?;
                } else {
                    onnx::quantize_linear(x, scale, zp, &attrs, QuantSliceMut::I4(bytemuck::cast_slice_mut(&mut tmp)))?;
                }
                // SAFETY: `y` was checked as `(y_count + 1) / 2` bytes, disjoint from every
                // input; writable and unshared during the call.
                let packed = unsafe { slice_mut(y.cast::<u8>(), y_count.div_ceil(2), &y_s) };
                pack4(&tmp, packed);
            }
            Dtype::F32 | Dtype::I32 => return Err(Failure::new(qk_status::QK_ERR_INTERNAL, "internal error: y_dtype")),
        }
        Ok(())
    })
}

/// DequantizeLinear (ONNX opset 25): `y = (x − x_zero_point) · x_scale` in `float`, the
/// subtraction exact and one rounding for the product.
///
/// * `x`: dtype `x_dtype` (`QK_U8`, `QK_I8`, `QK_U16`, `QK_I16`, `QK_I32`, `QK_UINT4`,
///   `QK_INT4`), shape `x_shape[x_rank]`.
/// * `x_scale`, `axis`, `block_size`: as `y_scale` of [`qk_quantize_linear`].
/// * `x_zero_point`: optional (NULL with count 0 means 0), dtype `x_dtype`, as many values
///   as `x_scale`; for `QK_I32` only zeros are allowed (ONNX has no int32 zero point).
/// * `y`: `float`, `y_count` = x's element count.
///
/// # Safety
///
/// As [`qk_matmul_integer`]; 4-bit buffers hold `(count + 1) / 2` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_dequantize_linear(
    x: *const c_void,
    x_dtype: qk_dtype,
    x_shape: *const i64,
    x_rank: usize,
    x_scale: *const f32,
    x_scale_count: usize,
    x_zero_point: *const c_void,
    x_zero_point_count: usize,
    axis: i64,
    block_size: i64,
    y: *mut f32,
    y_count: usize,
) -> qk_status {
    guard("qk_dequantize_linear", || {
        let x_dtype = Dtype::from_c(x_dtype, "x_dtype")?;
        if x_dtype == Dtype::F32 {
            return Err(Failure::unsupported(
                "`x_dtype` = QK_F32: DequantizeLinear takes QK_U8, QK_I8, QK_U16, QK_I16, QK_I32, QK_UINT4 or QK_INT4",
            ));
        }
        let x_shape = read_shape(x_shape, x_rank, "x_shape")?;
        let x_n = numel(&x_shape, "x_shape")?;
        let x_s = dtype_span(x, x_dtype, x_n, "x")?;
        let s_s = span(x_scale, x_scale_count, "x_scale")?;
        let z_s = opt_dtype_span(x_zero_point, x_dtype, x_zero_point_count, "x_zero_point")?;
        let y_s = span(y.cast_const(), y_count, "y")?;
        let mut ins = vec![&x_s, &s_s];
        ins.extend(present(&[&z_s]));
        check_disjoint(&y_s, &ins)?;
        if y_count != x_n {
            return Err(Failure::shape(format!("`y` has {y_count} elements but x {x_shape:?} has {x_n}")));
        }
        if z_s.is_some() && x_zero_point_count != x_scale_count {
            return Err(Failure::shape(format!(
                "`x_zero_point` has {x_zero_point_count} values but `x_scale` has {x_scale_count}; ONNX requires the same shape"
            )));
        }
        let p_shape = qdq_param_shape(&x_shape, axis, block_size, x_scale_count, "x_scale")?;
        // SAFETY: spans checked with these pointers, dtypes and counts; inputs readable and
        // unchanged during the call.
        let (xq, scale) = unsafe { (QIn::read(x, x_dtype, x_n, &x_s, "x")?, slice(x_scale, x_scale_count, &s_s)) };
        let zp = match &z_s {
            // SAFETY: as above.
            Some(s) => Some(unsafe { QIn::read(x_zero_point, x_dtype, x_zero_point_count, s, "x_zero_point")? }),
            None => None,
        };
        // SAFETY: `y` checked and disjoint from every input; writable and unshared.
        let y = unsafe { slice_mut(y, y_count, &y_s) };
        let attrs = DequantizeAttrs { axis, block_size };
        onnx::dequantize_linear(
            xq.tensor(&x_shape),
            TensorRef::new(scale, &p_shape),
            zp.as_ref().map(|z| z.tensor(&p_shape)),
            &attrs,
            y,
        )?;
        Ok(())
    })
}

/// DynamicQuantizeLinear (ONNX opset 11), `uint8_t` output:
/// `scale = (max(0, max(x)) − min(0, min(x))) / 255`,
/// `zero_point = round_half_even(clamp(−min / scale, 0, 255))`,
/// `y = saturate(round_half_even(x / scale) + zero_point)`. An all-zero or empty x
/// gives scale 1 and zero point 0.
///
/// * `x`: `float`, shape `x_shape[x_rank]`, finite.
/// * `y`: `y_count` = x's element count.
/// * `y_scale`, `y_zero_point`: one value each.
///
/// # Safety
///
/// As [`qk_matmul_integer`]; `y_scale` and `y_zero_point` point to one writable value
/// each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_dynamic_quantize_linear(
    x: *const f32,
    x_shape: *const i64,
    x_rank: usize,
    y: *mut u8,
    y_count: usize,
    y_scale: *mut f32,
    y_zero_point: *mut u8,
) -> qk_status {
    guard("qk_dynamic_quantize_linear", || {
        let x_shape = read_shape(x_shape, x_rank, "x_shape")?;
        let x_n = numel(&x_shape, "x_shape")?;
        let x_s = span(x, x_n, "x")?;
        let y_s = span(y.cast_const(), y_count, "y")?;
        let s_s = span(y_scale.cast_const(), 1, "y_scale")?;
        let z_s = span(y_zero_point.cast_const(), 1, "y_zero_point")?;
        for out in [&y_s, &s_s, &z_s] {
            check_disjoint(out, &[&x_s])?;
        }
        check_outputs_disjoint(&[&y_s, &s_s, &z_s])?;
        if y_count != x_n {
            return Err(Failure::shape(format!("`y` has {y_count} elements but x {x_shape:?} has {x_n}")));
        }
        // SAFETY: checked spans; `x` readable and unchanged, `y` writable, disjoint, unshared.
        let (x, y_out) = unsafe { (slice(x, x_n, &x_s), slice_mut(y, y_count, &y_s)) };
        let q = onnx::dynamic_quantize_linear(x, y_out)?;
        // SAFETY: checked non-null, aligned and disjoint; the caller guarantees writable.
        unsafe {
            y_scale.write(q.scale);
            y_zero_point.write(q.zero_point);
        }
        Ok(())
    })
}

/// The shape of `numpy.matmul(a, b)` (the output of [`qk_matmul_integer`] and
/// [`qk_qlinear_matmul`]): the broadcast batch dimensions, then M (unless a is 1-D),
/// then N (unless b is 1-D).
///
/// * `y_shape`: room for `y_shape_capacity` dims; `max(a_rank, b_rank)` always suffices.
/// * `y_rank`: receives the output's rank.
///
/// `QK_ERR_SHAPE` if the operands do not multiply; `QK_ERR_BUFFER_TOO_SMALL` if the rank
/// exceeds `y_shape_capacity`.
///
/// # Safety
///
/// The shape arrays must hold `rank` readable `int64_t` (NULL allowed for rank 0);
/// `y_shape` must be NULL (an error) or hold `y_shape_capacity` writable `int64_t`, and
/// `y_rank` must be NULL (an error) or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_matmul_output_shape(
    a_shape: *const i64,
    a_rank: usize,
    b_shape: *const i64,
    b_rank: usize,
    y_shape: *mut i64,
    y_shape_capacity: usize,
    y_rank: *mut usize,
) -> qk_status {
    guard("qk_matmul_output_shape", || {
        let a = read_shape(a_shape, a_rank, "a_shape")?;
        let b = read_shape(b_shape, b_rank, "b_shape")?;
        let ys = span(y_shape.cast_const(), y_shape_capacity, "y_shape")?;
        let rs = span(y_rank.cast_const(), 1, "y_rank")?;
        check_outputs_disjoint(&[&ys, &rs])?;
        let out = onnx::matmul_output_shape(&a, &b)?;
        if out.len() > y_shape_capacity {
            return Err(Failure::new(
                qk_status::QK_ERR_BUFFER_TOO_SMALL,
                format!("buffer too small: `y_shape` needs {} dims, got {y_shape_capacity}", out.len()),
            ));
        }
        // SAFETY: checked spans (the shapes were copied before any write); the caller
        // guarantees they are writable.
        let dst = unsafe { slice_mut(y_shape, y_shape_capacity, &ys) };
        for (d, &v) in dst.iter_mut().zip(&out) {
            *d = i64::try_from(v).map_err(|_| Failure::overflow(format!("output dimension {v} does not fit int64_t")))?;
        }
        // SAFETY: as above.
        unsafe { y_rank.write(out.len()) };
        Ok(())
    })
}
