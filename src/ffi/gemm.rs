//! Prepacked int8 GEMM from C: pack the weights once into an opaque handle, run it many
//! times with any of the three output stages.

use std::ffi::c_void;

use qkern_kernels::Int8;

use super::util::{Span, free_handle, handle_ref, check_disjoint, check_extent, opt_slice, opt_span, slice, slice_mut, span};
use super::runtime::context;
use super::{Dtype, Failure, guard, qk_dtype, qk_requant_mode, qk_status, requant_mode_from_c};
use crate::error::Error;
use crate::gemm::{Activations, MatrixMut, MatrixRef, PackedWeights, PerChannel, Requantize, WeightQuant};

/// Prepacked GEMM weights `B[K][N]` (u8 or i8) with their zero points and scales.
/// Opaque: create with [`qk_gemm_weights_create`], release with
/// [`qk_gemm_weights_free`]. Immutable once created, so one handle may be used by
/// several threads at once.
#[allow(non_camel_case_types)]
pub struct qk_gemm_weights {
    packed: PackedWeights,
}

/// The 8-bit dtypes the GEMM takes, or `QK_ERR_UNSUPPORTED` naming the argument.
pub(super) fn int8_dtype(v: qk_dtype, what: &str) -> Result<Dtype, Failure> {
    match Dtype::from_c(v, what)? {
        d @ (Dtype::U8 | Dtype::I8) => Ok(d),
        d => Err(Failure::unsupported(format!("`{what}` = {}: the GEMM takes QK_U8 or QK_I8", d.name()))),
    }
}

/// A zero point given as `int32_t`, checked within `T`'s range.
pub(super) fn zero_point<T: Int8>(v: i32, what: &'static str) -> Result<T, Failure> {
    if v < T::MIN || v > T::MAX {
        return Err(Error::ZeroPointOutOfRange { what, value: v as i64, min: T::MIN as i64, max: T::MAX as i64 }.into());
    }
    Ok(T::saturate_from(v))
}

/// 1 value → per tensor, N values → per column, else a shape failure.
pub(super) fn per_channel<'a, T: Copy>(v: &'a [T], n: usize, what: &str) -> Result<PerChannel<'a, T>, Failure> {
    match v.len() {
        1 => Ok(PerChannel::Tensor(v[0])),
        len if len == n => Ok(PerChannel::Channel(v)),
        len => Err(Failure::shape(format!("`{what}` has {len} values; give 1 (per tensor) or N = {n} (per column)"))),
    }
}

/// Creates prepacked weights from the row-major `k × n` matrix `b` (rows `ldb` elements
/// apart) of dtype `b_dtype` (`QK_U8` or `QK_I8`).
///
/// * `b_count`: elements readable at `b`; at least `(k − 1)·ldb + n` when `k, n > 0`.
/// * `ldb`: row stride in elements, ≥ `n`.
/// * `zero_point`, `zero_point_count`: 1 value (per tensor) or `n` values (per column),
///   each within `b_dtype`'s range.
/// * `scale`, `scale_count`: may be NULL with count 0 (integer output only), else 1 or
///   `n` finite positive values (needed by [`qk_gemm_f32`] and [`qk_gemm_requantize`]).
/// * `out`: receives the handle; set to NULL first, so it is NULL on any failure.
///
/// The inputs are copied; they may be freed after the call.
///
/// # Safety
///
/// Each pointer must be NULL (an error, unless documented optional) or point to at
/// least its count of readable elements (`b`: bytes); `out` must be NULL (an error) or
/// point to a writable `qk_gemm_weights*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_weights_create(
    b: *const c_void,
    b_dtype: qk_dtype,
    b_count: usize,
    k: usize,
    n: usize,
    ldb: usize,
    zero_point: *const i32,
    zero_point_count: usize,
    scale: *const f32,
    scale_count: usize,
    out: *mut *mut qk_gemm_weights,
) -> qk_status {
    guard("qk_gemm_weights_create", || {
        span(out.cast_const(), 1, "out")?;
        // SAFETY: `out` is non-null and aligned (checked above); the caller guarantees it
        // is writable. Cleared first so that every failure leaves NULL behind.
        unsafe { out.write(std::ptr::null_mut()) };
        let b_dtype = int8_dtype(b_dtype, "b_dtype")?;
        let b_span = span(b.cast::<u8>(), b_count, "b")?;
        let zp_span = span(zero_point, zero_point_count, "zero_point")?;
        let scale_span = opt_span(scale, scale_count, "scale")?;
        // SAFETY: each span was checked (non-null, aligned, size) with the same pointer and
        // count; the caller guarantees the memory is readable, and nothing here writes it.
        let (b_bytes, zps, scales) = unsafe {
            (
                slice(b.cast::<u8>(), b_count, &b_span),
                slice(zero_point, zero_point_count, &zp_span),
                opt_slice(scale, scale_count, &scale_span),
            )
        };
        check_extent("b", k, n, ldb)?;
        let quant = WeightQuant {
            zero_point: per_channel(zps, n, "zero_point")?,
            scale: scales.map(|s| per_channel(s, n, "scale")).transpose()?,
        };
        let ctx = context()?;
        let packed = match b_dtype {
            Dtype::U8 => PackedWeights::new_in(&ctx, MatrixRef::new(b_bytes, k, n).with_stride(ldb), quant)?,
            _ => {
                let b_i8: &[i8] = bytemuck::cast_slice(b_bytes);
                PackedWeights::new_in(&ctx, MatrixRef::new(b_i8, k, n).with_stride(ldb), quant)?
            }
        };
        let handle = Box::into_raw(Box::new(qk_gemm_weights { packed }));
        // SAFETY: as above; `out` is writable.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Releases weights created by [`qk_gemm_weights_create`]. NULL is accepted and does
/// nothing (`QK_OK`).
///
/// # Safety
///
/// `weights` must be NULL or a handle returned by [`qk_gemm_weights_create`] that has
/// not been freed, and no other thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_weights_free(weights: *mut qk_gemm_weights) -> qk_status {
    guard("qk_gemm_weights_free", || {
        free_handle(weights);
        Ok(())
    })
}

/// K, N and the packed dtype of a handle (for engines that keep only the handle).
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle; each out-pointer must be NULL
/// (an error) or point to a writable value of its type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_weights_shape(
    weights: *const qk_gemm_weights,
    k: *mut usize,
    n: *mut usize,
    b_dtype: *mut qk_dtype,
) -> qk_status {
    guard("qk_gemm_weights_shape", || {
        let w = weights_ref(weights)?;
        let ks = span(k.cast_const(), 1, "k")?;
        let ns = span(n.cast_const(), 1, "n")?;
        let ds = span(b_dtype.cast_const(), 1, "b_dtype")?;
        super::util::check_outputs_disjoint(&[&ks, &ns, &ds])?;
        // SAFETY: the three pointers were checked non-null, aligned and disjoint; the
        // caller guarantees they are writable.
        unsafe {
            k.write(w.packed.k());
            n.write(w.packed.n());
            b_dtype.write(if w.packed.is_signed() { super::QK_I8 } else { super::QK_U8 });
        }
        Ok(())
    })
}

/// The handle behind a pointer.
fn weights_ref<'a>(w: *const qk_gemm_weights) -> Result<&'a qk_gemm_weights, Failure> {
    handle_ref(w, "weights", "qk_gemm_weights_create")
}

/// The A operand of a GEMM call, validated as a span (dtype, pointer, count) but not yet
/// a slice.
pub(super) struct AIn {
    pub(super) ptr: *const u8,
    pub(super) count: usize,
    pub(super) span: Span,
    pub(super) dtype: Dtype,
}

/// The input spans of a GEMM call, for the overlap check.
pub(super) fn inputs<'s>(a: &'s Span, bias: &'s Option<Span>) -> Vec<&'s Span> {
    [Some(a), bias.as_ref()].into_iter().flatten().collect()
}

pub(super) fn a_in(a: *const c_void, a_dtype: qk_dtype, a_count: usize) -> Result<AIn, Failure> {
    let dtype = int8_dtype(a_dtype, "a_dtype")?;
    let ptr = a.cast::<u8>();
    let span = span(ptr, a_count, "a")?;
    Ok(AIn { ptr, count: a_count, span, dtype })
}

/// Runs `f` with A as a typed slice: the one place the dtype becomes a type parameter.
macro_rules! with_a {
    ($a:expr, |$slice:ident : $t:ident| $body:expr) => {{
        let a: &AIn = &$a;
        // SAFETY: `a.span` was checked with this pointer and count, and the output was
        // checked disjoint from it; the caller guarantees A is readable and unchanged
        // during the call.
        let bytes: &[u8] = unsafe { slice(a.ptr, a.count, &a.span) };
        match a.dtype {
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
// The codebook and PWLQ entry points take their A operand the same way.
pub(super) use with_a;

/// `C[m][n] = Σ_k (A[m][k] − a_zero_point)·(B[k][n] − zb[n]) + bias[n]` in `int32_t`,
/// exact; `QK_ERR_OVERFLOW` if a result does not fit (possible only for very long K).
///
/// * `a`: `m × K` row-major, dtype `a_dtype` (`QK_U8` or `QK_I8`), rows `lda` elements
///   apart (≥ K), `a_count` elements readable.
/// * `a_zero_point`: within `a_dtype`'s range.
/// * `bias`, `bias_count`: may be NULL with count 0; else `N` values.
/// * `c`: `m × N`, rows `ldc` apart (≥ N), `c_count` elements writable; must not
///   overlap `a` or `bias`.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle. Each buffer pointer must be NULL
/// (an error, unless optional) or point to at least its count of elements, readable
/// (inputs) or writable (`c`), and not modified by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_i32(
    weights: *const qk_gemm_weights,
    a: *const c_void,
    a_dtype: qk_dtype,
    a_count: usize,
    m: usize,
    lda: usize,
    a_zero_point: i32,
    bias: *const i32,
    bias_count: usize,
    c: *mut i32,
    c_count: usize,
    ldc: usize,
) -> qk_status {
    guard("qk_gemm_i32", || {
        let w = &weights_ref(weights)?.packed;
        let a_in = a_in(a, a_dtype, a_count)?;
        let bias_span = opt_span(bias, bias_count, "bias")?;
        let c_span = span(c.cast_const(), c_count, "c")?;
        check_disjoint(&c_span, &inputs(&a_in.span, &bias_span))?;
        // SAFETY: spans checked with these pointers and counts, `c` disjoint from the
        // inputs; the caller guarantees validity for the duration of the call.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.k(), w.n());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, 1.0);
            context()?.gemm_i32(act, w, bias, MatrixMut::new(c, m, n).with_stride(ldc))?;
            Ok(())
        })
    })
}

/// `C[m][n] = a_scale · sb[n] · Σ_k (A[m][k] − a_zero_point)·(B[k][n] − zb[n]) + bias[n]`
/// in `float`. The weights must have been created with scales.
///
/// Arguments as [`qk_gemm_i32`], plus `a_scale` (finite, > 0) and a `float` bias (may
/// be NULL with count 0, else `N` values).
///
/// # Safety
///
/// As [`qk_gemm_i32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_f32(
    weights: *const qk_gemm_weights,
    a: *const c_void,
    a_dtype: qk_dtype,
    a_count: usize,
    m: usize,
    lda: usize,
    a_zero_point: i32,
    a_scale: f32,
    bias: *const f32,
    bias_count: usize,
    c: *mut f32,
    c_count: usize,
    ldc: usize,
) -> qk_status {
    guard("qk_gemm_f32", || {
        let w = &weights_ref(weights)?.packed;
        let a_in = a_in(a, a_dtype, a_count)?;
        let bias_span = opt_span(bias, bias_count, "bias")?;
        let c_span = span(c.cast_const(), c_count, "c")?;
        check_disjoint(&c_span, &inputs(&a_in.span, &bias_span))?;
        // SAFETY: as in `qk_gemm_i32`.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.k(), w.n());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, a_scale);
            context()?.gemm_f32(act, w, bias, MatrixMut::new(c, m, n).with_stride(ldc))?;
            Ok(())
        })
    })
}

/// `C[m][n] = clamp(requantize(Σ_k (A[m][k] − a_zero_point)·(B[k][n] − zb[n]) + bias[n]),
/// out_min, out_max)` in `c_dtype` (`QK_U8` or `QK_I8`), with the multiplier
/// `a_scale · sb[n] / out_scale` applied in `mode`. The weights must have been created
/// with scales.
///
/// Arguments as [`qk_gemm_i32`], plus `a_scale` and `out_scale` (finite, > 0),
/// `out_zero_point` and the clamp `out_min ≤ out_max` (all within `c_dtype`'s range;
/// pass the type's full range for no clamp, `out_min = out_zero_point` for a fused
/// ReLU), and `mode` (a `qk_requant_mode`).
///
/// # Safety
///
/// As [`qk_gemm_i32`]; `c` points to `c_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_gemm_requantize(
    weights: *const qk_gemm_weights,
    a: *const c_void,
    a_dtype: qk_dtype,
    a_count: usize,
    m: usize,
    lda: usize,
    a_zero_point: i32,
    a_scale: f32,
    bias: *const i32,
    bias_count: usize,
    out_scale: f32,
    out_zero_point: i32,
    mode: qk_requant_mode,
    out_min: i32,
    out_max: i32,
    c: *mut c_void,
    c_dtype: qk_dtype,
    c_count: usize,
    ldc: usize,
) -> qk_status {
    guard("qk_gemm_requantize", || {
        let w = &weights_ref(weights)?.packed;
        let a_in = a_in(a, a_dtype, a_count)?;
        let c_dtype = int8_dtype(c_dtype, "c_dtype")?;
        let mode = requant_mode_from_c(mode, "mode")?;
        let bias_span = opt_span(bias, bias_count, "bias")?;
        let c = c.cast::<u8>();
        let c_span = span(c.cast_const(), c_count, "c")?;
        check_disjoint(&c_span, &inputs(&a_in.span, &bias_span))?;
        // SAFETY: as in `qk_gemm_i32`.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.k(), w.n());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, a_scale);
            match c_dtype {
                Dtype::U8 => requantize_into::<A, u8>(act, w, c, m, n, ldc, bias, out_scale, out_zero_point, mode, out_min, out_max),
                _ => {
                    let c: &mut [i8] = bytemuck::cast_slice_mut(c);
                    requantize_into::<A, i8>(act, w, c, m, n, ldc, bias, out_scale, out_zero_point, mode, out_min, out_max)
                }
            }
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn requantize_into<A: Int8, O: Int8>(
    act: Activations<'_, A>,
    w: &PackedWeights,
    c: &mut [O],
    m: usize,
    n: usize,
    ldc: usize,
    bias: Option<&[i32]>,
    out_scale: f32,
    out_zero_point: i32,
    mode: crate::RequantMode,
    out_min: i32,
    out_max: i32,
) -> Result<(), Failure> {
    let rq = requantize_params::<O>(bias, out_scale, out_zero_point, mode, out_min, out_max)?;
    context()?.gemm_requantize(act, w, &rq, MatrixMut::new(c, m, n).with_stride(ldc))?;
    Ok(())
}

/// The [`Requantize`] of a C requantizing call, its `int32_t` zero point and clamp
/// checked within `O`'s range (the codebook entry point takes them the same way).
pub(super) fn requantize_params<O: Int8>(
    bias: Option<&[i32]>,
    out_scale: f32,
    out_zero_point: i32,
    mode: crate::RequantMode,
    out_min: i32,
    out_max: i32,
) -> Result<Requantize<'_, O>, Failure> {
    let zo = zero_point::<O>(out_zero_point, "out_zero_point")?;
    for (v, what) in [(out_min, "out_min"), (out_max, "out_max")] {
        if v < O::MIN || v > O::MAX {
            return Err(Failure::invalid(format!("`{what}` is {v}, outside {} [{}, {}]", O::NAME, O::MIN, O::MAX)));
        }
    }
    if out_min > out_max {
        return Err(Failure::invalid(format!("`out_min` {out_min} is greater than `out_max` {out_max}")));
    }
    let mut rq = Requantize::new(out_scale, zo).mode(mode).clamp(O::saturate_from(out_min), O::saturate_from(out_max));
    if let Some(b) = bias {
        rq = rq.bias(b);
    }
    Ok(rq)
}
