//! Piecewise-linear quantization (PWLQ, Fang et al. 2020) from C: quantize float weights
//! per channel, pack the codes into an opaque handle, dequantize it to `float`, run
//! the exact-mode fused GEMM (three integer dot products combined in `float`), correct a
//! bias for the quantization error, and snap to grid-aligned PWLQ for the codebook
//! kernels. See [`crate::quant::pwlq`] for the numbers.

use std::ffi::c_void;

use super::gemm::{AIn, a_in, inputs, with_a, zero_point};
use super::codebook::{clear_out, from_packed, give, qk_codebook_weights};
use super::runtime::context;
use super::util::{Span, free_handle, handle_ref, check_disjoint, check_extent, check_outputs_disjoint, opt_slice, opt_span, slice, slice_mut, span};
use super::{Dtype, Failure, guard, qk_dtype, qk_status};
use crate::error::check_matrix;
use crate::gemm::{Activations, MatrixMut, MatrixRef};
use crate::quant::Granularity;
use crate::quant::pwlq::{Breakpoint, GridScope, PwlqGemmWeights, PwlqPacked, PwlqParams, PwlqQuantizer, PwlqTensor};

/// How [`qk_pwlq_quantize`] chooses each channel's breakpoint `p`, passed from C as an
/// `int32_t`.
#[allow(non_camel_case_types)]
pub type qk_pwlq_breakpoint = i32;

/// The paper's Gaussian closed form `p = σ·ln(0.8614·m/σ + 0.6079)`.
pub const QK_PWLQ_GAUSSIAN: qk_pwlq_breakpoint = 0;
/// The paper's Laplace closed form `p = σ·(0.8030·√(m/σ) − 0.3167)`.
pub const QK_PWLQ_LAPLACE: qk_pwlq_breakpoint = 1;
/// Coarse-to-fine search on `p/m` (steps 0.1, 0.01, 0.001) minimising the squared error.
pub const QK_PWLQ_SEARCH: qk_pwlq_breakpoint = 2;

/// PWLQ weights: the packed codes of `N` channels of `K` weights with each channel's
/// range `m` and breakpoint `p`, prepared for the exact-mode GEMM. Opaque: create with
/// [`qk_pwlq_pack`], release with [`qk_pwlq_weights_free`]. Immutable once created, so
/// one handle may be used by several threads at once.
#[allow(non_camel_case_types)]
pub struct qk_pwlq_weights {
    pub(super) packed: PwlqPacked,
    gemm: PwlqGemmWeights,
}

fn breakpoint_of(v: qk_pwlq_breakpoint) -> Result<Breakpoint, Failure> {
    match v {
        QK_PWLQ_GAUSSIAN => Ok(Breakpoint::Gaussian),
        QK_PWLQ_LAPLACE => Ok(Breakpoint::Laplace),
        QK_PWLQ_SEARCH => Ok(Breakpoint::Search),
        _ => Err(Failure::invalid(format!(
            "`breakpoint` = {v} is not a qk_pwlq_breakpoint (QK_PWLQ_GAUSSIAN = 0, QK_PWLQ_LAPLACE = 1, \
             QK_PWLQ_SEARCH = 2)"
        ))),
    }
}

/// `(elements, channels)` of a `rows × cols` tensor with channels on `channel_axis`.
fn dims(rows: usize, cols: usize, channel_axis: usize) -> Result<(usize, usize), Failure> {
    let channels = match channel_axis {
        0 => rows,
        1 => cols,
        _ => return Err(Failure::invalid(format!("`channel_axis` is {channel_axis}; it must be 0 or 1"))),
    };
    if rows == 0 || cols == 0 {
        return Err(Failure::shape(format!("`rows` × `cols` is {rows} × {cols}; PWLQ weights need both ≥ 1")));
    }
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| Failure::overflow(format!("`rows` × `cols` = {rows} × {cols} overflows size_t")))?;
    Ok((len, channels))
}

/// The per-channel `m` and `p` counts, each exactly the number of channels.
fn channel_counts(m_count: usize, p_count: usize, channels: usize) -> Result<(), Failure> {
    exact_count("m_count", m_count, channels, "the number of channels")?;
    exact_count("p_count", p_count, channels, "the number of channels")
}

/// The PWLQ parameters of `bits`-bit weights with channels on `axis` from C's `m`, `p`.
fn params_of(bits: u32, axis: usize, m: &[f32], p: &[f32]) -> Result<PwlqParams, Failure> {
    Ok(PwlqParams::new(bits, Granularity::PerChannel { axis }, m.to_vec(), p.to_vec())?)
}

/// Refuses a non-finite value in `x`, naming the C argument (the Rust check names its
/// own parameter).
fn check_finite(what: &str, x: &[f32]) -> Result<(), Failure> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Failure::invalid(format!("`{what}` must be finite, but element {i} is {}", x[i]))),
    }
}

/// A count that must equal the shape's, as `QK_ERR_SHAPE` naming the argument.
fn exact_count(what: &str, got: usize, want: usize, of: &str) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure::shape(format!("`{what}` is {got}, but {of} is {want}")))
    }
}

/// Quantizes the row-major `rows × cols` float weights `w` with `bits`-bit PWLQ, one
/// range and breakpoint per channel.
///
/// * `channel_axis`: 1 when `w` is the GEMM operand `B[K][N]` (`rows` = K, `cols` = N
///   channels), 0 when it is `W[N][K]` (rows are channels, as a Linear layer's weight).
/// * `bits`: 4, 6 or 8 — a sign and `bits − 1` magnitude bits per region; a weight also
///   stores the region bit, so `bits + 1` bits in all. Others: `QK_ERR_BITS` or
///   `QK_ERR_INVALID_PARAMETER`.
/// * `breakpoint`: a `qk_pwlq_breakpoint`; the range `m` of a channel is `max |w|`.
/// * `codes`, `codes_count`: receives the level indices (`int16_t`, same layout as `w`):
///   `|j| ≤ Q` is the centre `j·s1`, `Q < |j| ≤ 2Q + 1` the tail
///   `sign(j)·(p + (|j| − Q − 1)·s2)`, with `Q = 2^(bits−1) − 1`, `s1 = p / Q`,
///   `s2 = (m − p) / Q`. The count must be exactly `rows · cols`.
/// * `m`, `m_count`, `p`, `p_count`: receive each channel's range and breakpoint; the
///   counts must be exactly the number of channels.
///
/// `w` must hold exactly `rows · cols` finite values, `rows, cols ≥ 1`.
///
/// # Safety
///
/// Each pointer must be NULL (an error) or point to at least its count of elements,
/// readable (`w`) or writable (the outputs); the outputs must not overlap each other or
/// `w`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_quantize(
    w: *const f32,
    w_count: usize,
    rows: usize,
    cols: usize,
    channel_axis: usize,
    bits: u32,
    breakpoint: qk_pwlq_breakpoint,
    codes: *mut i16,
    codes_count: usize,
    m: *mut f32,
    m_count: usize,
    p: *mut f32,
    p_count: usize,
) -> qk_status {
    guard("qk_pwlq_quantize", || {
        let w_span = span(w, w_count, "w")?;
        let c_span = span(codes.cast_const(), codes_count, "codes")?;
        let m_span = span(m.cast_const(), m_count, "m")?;
        let p_span = span(p.cast_const(), p_count, "p")?;
        for o in [&c_span, &m_span, &p_span] {
            check_disjoint(o, &[&w_span])?;
        }
        check_outputs_disjoint(&[&c_span, &m_span, &p_span])?;
        let bp = breakpoint_of(breakpoint)?;
        let (len, channels) = dims(rows, cols, channel_axis)?;
        exact_count("w_count", w_count, len, "rows · cols")?;
        exact_count("codes_count", codes_count, len, "rows · cols")?;
        channel_counts(m_count, p_count, channels)?;
        // SAFETY: every span was checked with its pointer and count; the outputs are
        // disjoint from each other and from `w`; the caller guarantees validity.
        let (x, codes, ms, ps) = unsafe {
            (
                slice(w, w_count, &w_span),
                slice_mut(codes, codes_count, &c_span),
                slice_mut(m, m_count, &m_span),
                slice_mut(p, p_count, &p_span),
            )
        };
        let t = PwlqQuantizer::new(bits, bp)
            .with_granularity(Granularity::PerChannel { axis: channel_axis })
            .quantize(x, &[rows, cols])?;
        codes.copy_from_slice(t.codes());
        for ((ch, mo), po) in t.params().channels().iter().zip(ms.iter_mut()).zip(ps.iter_mut()) {
            *mo = ch.m;
            *po = ch.p;
        }
        Ok(())
    })
}

/// Packs PWLQ level indices (as [`qk_pwlq_quantize`] writes them) with each channel's
/// range and breakpoint into a handle for [`qk_pwlq_dequantize`] and [`qk_pwlq_gemm_f32`].
///
/// * `codes`, `codes_count`: exactly `rows · cols` level indices, laid out as the weights
///   were (`channel_axis` as in [`qk_pwlq_quantize`]); a code with `|j| > 2Q + 1` is
///   `QK_ERR_INVALID_PARAMETER` naming its position.
/// * `bits`: 4, 6 or 8.
/// * `m`, `p`: one range (finite, ≥ 0) and breakpoint (`0 ≤ p ≤ m`) per channel; the
///   counts must equal the number of channels. `s1 = p / Q` and `s2 = (m − p) / Q` are
///   derived in `float`, as in [`qk_pwlq_quantize`].
/// * `out`: receives the handle; set to NULL first, so it is NULL on any failure.
///
/// The inputs are copied; they may be freed after the call.
///
/// # Safety
///
/// Each pointer must be NULL (an error) or point to at least its count of readable
/// elements; `out` must be NULL (an error) or point to a writable `qk_pwlq_weights*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_pack(
    codes: *const i16,
    codes_count: usize,
    rows: usize,
    cols: usize,
    channel_axis: usize,
    bits: u32,
    m: *const f32,
    m_count: usize,
    p: *const f32,
    p_count: usize,
    out: *mut *mut qk_pwlq_weights,
) -> qk_status {
    guard("qk_pwlq_pack", || {
        span(out.cast_const(), 1, "out")?;
        // SAFETY: `out` is non-null and aligned (checked above); the caller guarantees it
        // is writable. Cleared first so that every failure leaves NULL behind.
        unsafe { out.write(std::ptr::null_mut()) };
        let c_span = span(codes, codes_count, "codes")?;
        let m_span = span(m, m_count, "m")?;
        let p_span = span(p, p_count, "p")?;
        let (len, channels) = dims(rows, cols, channel_axis)?;
        exact_count("codes_count", codes_count, len, "rows · cols")?;
        channel_counts(m_count, p_count, channels)?;
        // SAFETY: each span was checked with the same pointer and count; the caller
        // guarantees the memory is readable, and nothing here writes it.
        let (codes, ms, ps) = unsafe { (slice(codes, codes_count, &c_span), slice(m, m_count, &m_span), slice(p, p_count, &p_span)) };
        let params = params_of(bits, channel_axis, ms, ps)?;
        let packed = PwlqTensor::new(codes.to_vec(), &[rows, cols], params)?.pack()?;
        let gemm = PwlqGemmWeights::new_in(&*context()?, &packed)?;
        let handle = Box::into_raw(Box::new(qk_pwlq_weights { packed, gemm }));
        // SAFETY: as above; `out` is writable.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Releases weights created by [`qk_pwlq_pack`]. NULL is accepted and does nothing
/// (`QK_OK`).
///
/// # Safety
///
/// `weights` must be NULL or a live handle from [`qk_pwlq_pack`], not freed before, and
/// no other thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_weights_free(weights: *mut qk_pwlq_weights) -> qk_status {
    guard("qk_pwlq_weights_free", || {
        free_handle(weights);
        Ok(())
    })
}

/// The handle behind a pointer.
fn weights_ref<'a>(w: *const qk_pwlq_weights) -> Result<&'a qk_pwlq_weights, Failure> {
    handle_ref(w, "weights", "qk_pwlq_pack")
}

/// The number of channels N, the weights per channel K and the bit width of a handle.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle; each out-pointer must be NULL (an
/// error) or point to a writable value of its type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_weights_shape(
    weights: *const qk_pwlq_weights,
    channels: *mut usize,
    k: *mut usize,
    bits: *mut u32,
) -> qk_status {
    guard("qk_pwlq_weights_shape", || {
        let w = weights_ref(weights)?;
        let cs = span(channels.cast_const(), 1, "channels")?;
        let ks = span(k.cast_const(), 1, "k")?;
        let bs = span(bits.cast_const(), 1, "bits")?;
        check_outputs_disjoint(&[&cs, &ks, &bs])?;
        // SAFETY: the three pointers were checked non-null, aligned and disjoint; the
        // caller guarantees they are writable.
        unsafe {
            channels.write(w.packed.channels());
            k.write(w.packed.k());
            bits.write(w.packed.bits());
        }
        Ok(())
    })
}

/// Dequantizes the weights to `float`, channel-major: `out[n·K + k]` is weight `k` of
/// channel `n` (whatever `channel_axis` the weights were given with), with the SIMD
/// kernel of the tier in use; bit-exact with the scalar definition.
///
/// * `out`, `out_count`: exactly `N · K` floats.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle; `out` must be NULL (an error) or
/// point to `out_count` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_dequantize(weights: *const qk_pwlq_weights, out: *mut f32, out_count: usize) -> qk_status {
    guard("qk_pwlq_dequantize", || {
        let w = weights_ref(weights)?;
        let o_span = span(out.cast_const(), out_count, "out")?;
        // SAFETY: checked with this pointer and count; the handle's memory is qkern's own,
        // so `out` cannot alias it without violating the caller's contract.
        let o = unsafe { slice_mut(out, out_count, &o_span) };
        w.packed.dequantize_f32_in(&*context()?, o)?;
        Ok(())
    })
}

/// The exact-mode PWLQ GEMM:
/// `C[m][n] = a_scale · Σ_k (A[m][k] − a_zero_point)·ŵ[k][n] + bias[n]` in `float`,
/// computed as three exact integer dot products (centre codes, tail codes, tail signs)
/// combined per channel as `((s1·Dc + s2·Dt) + p·Ds)·a_scale + bias`, each step one
/// `float` operation, no FMA (the Rust `qkern::quant::pwlq::combine_exact`).
///
/// * `a`: `m × K` row-major, dtype `a_dtype` (`QK_U8` or `QK_I8`), rows `lda` elements
///   apart (≥ K), `a_count` elements readable.
/// * `a_zero_point`: within `a_dtype`'s range; `a_scale` finite and > 0.
/// * `bias`, `bias_count`: may be NULL with count 0; else `N` values.
/// * `c`: `m × N`, rows `ldc` apart (≥ N), `c_count` elements writable; must not overlap
///   `a` or `bias`.
///
/// Exact for any K: the dot products are carried in 64-bit integers, so a long K is not
/// an error.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle. Each buffer pointer must be NULL
/// (an error, unless optional) or point to at least its count of elements, readable
/// (inputs) or writable (`c`), and not modified by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_gemm_f32(
    weights: *const qk_pwlq_weights,
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
    guard("qk_pwlq_gemm_f32", || {
        let w = weights_ref(weights)?;
        let a_in: AIn = a_in(a, a_dtype, a_count)?;
        let bias_span: Option<Span> = opt_span(bias, bias_count, "bias")?;
        let c_span = span(c.cast_const(), c_count, "c")?;
        check_disjoint(&c_span, &inputs(&a_in.span, &bias_span))?;
        // SAFETY: spans checked with these pointers and counts, `c` disjoint from the
        // inputs; the caller guarantees validity for the duration of the call.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.gemm.k(), w.gemm.channels());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        // Every path checks C; the A operand is checked here so that a short buffer is
        // an error on every path.
        check_matrix("a", a_count, m, k, lda)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, a_scale);
            w.gemm.gemm_f32_in(&*context()?, act, bias, MatrixMut::new(c, m, n).with_stride(ldc))?;
            Ok(())
        })
    })
}

/// Grid-aligned PWLQ as codebook weights: snaps the 4-bit PWLQ parameters `m`, `p` of
/// the float weights `w` to one ratio `p/m = i/(i+j)` shared by every channel, so that
/// each weight is an integer level `L` (`|L| ≤ 7·(i+j) ≤ max_level`) times its channel's
/// grid `g = m / (7·(i+j))`, and packs the result for the codebook kernels: the handle
/// runs with `qk_codebook_gemm_i32`, `qk_codebook_gemm_f32` and
/// `qk_codebook_gemm_requantize` (weights `B[K][N]`; `qk_codebook_weights_table` gives
/// the integer levels and grid scales) and is released with `qk_codebook_weights_free`.
/// The Rust `PwlqParams::snap_to_grid(.., GridScope::Shared, max_level)` then
/// `GridAligned::codebook_codes`.
///
/// * `w`, `w_count`, `rows`, `cols`, `channel_axis`: the float weights as for
///   [`qk_pwlq_quantize`] (exactly `rows · cols` finite values); with `channel_axis` 0
///   (`W[N][K]`) the handle holds the transpose `B[K][N]`.
/// * `bits`: must be 4 (6- and 8-bit PWLQ have more levels than a codebook kernel
///   takes: `QK_ERR_UNSUPPORTED`).
/// * `m`, `p`: each channel's range and breakpoint (as [`qk_pwlq_quantize`] writes
///   them); the counts must equal the number of channels.
/// * `max_level`: the largest `|L|` allowed, at least 7 (else
///   `QK_ERR_INVALID_PARAMETER`): 127 for the int8 tables of the codebook kernels (64
///   keeps AVX2's `vpmaddubsw` path exact); a snapped table past 127 is
///   `QK_ERR_UNSUPPORTED`.
/// * `mse`, `mse_count`: may be NULL with count 0; else exactly 2 doubles, receiving the
///   mean squared error of the PWLQ weights before snapping and of the grid-aligned
///   weights (their difference is what the snapping costs). Written only on success.
/// * `out`: receives the handle; set to NULL first, so it is NULL on any failure.
///
/// # Safety
///
/// Each pointer must be NULL (an error, unless optional) or point to at least its count
/// of elements, readable (`w`, `m`, `p`) or writable (`mse`); `mse` must not overlap the
/// inputs; `out` must be NULL (an error) or point to a writable `qk_codebook_weights*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_snap_to_grid(
    w: *const f32,
    w_count: usize,
    rows: usize,
    cols: usize,
    channel_axis: usize,
    bits: u32,
    m: *const f32,
    m_count: usize,
    p: *const f32,
    p_count: usize,
    max_level: i32,
    mse: *mut f64,
    mse_count: usize,
    out: *mut *mut qk_codebook_weights,
) -> qk_status {
    guard("qk_pwlq_snap_to_grid", || {
        clear_out(out)?;
        let w_span = span(w, w_count, "w")?;
        let m_span = span(m, m_count, "m")?;
        let p_span = span(p, p_count, "p")?;
        let mse_span = opt_span(mse.cast_const(), mse_count, "mse")?;
        if let Some(s) = &mse_span {
            check_disjoint(s, &[&w_span, &m_span, &p_span])?;
            exact_count("mse_count", mse_count, 2, "the number of MSE values written")?;
        }
        let (len, channels) = dims(rows, cols, channel_axis)?;
        exact_count("w_count", w_count, len, "rows · cols")?;
        channel_counts(m_count, p_count, channels)?;
        // SAFETY: each input span was checked with the same pointer and count; the caller
        // guarantees the memory is readable, and nothing here writes it.
        let (x, ms, ps) = unsafe { (slice(w, w_count, &w_span), slice(m, m_count, &m_span), slice(p, p_count, &p_span)) };
        check_finite("w", x)?;
        let params = params_of(bits, channel_axis, ms, ps)?;
        let grid = params.snap_to_grid(x, &[rows, cols], GridScope::Shared, max_level)?;
        let handle = from_packed(&grid.codebook_codes()?)?;
        if let Some(s) = &mse_span {
            // SAFETY: checked with this pointer and count, disjoint from the inputs.
            unsafe { slice_mut(mse, mse_count, s) }.copy_from_slice(&[grid.mse_pwlq(), grid.mse_grid()]);
        }
        give(out, handle);
        Ok(())
    })
}

/// Bias correction (Fang et al., as for uniform quantization by Nagel et al.): the bias
/// that cancels the expected output error of the quantized weights for inputs of mean
/// `μ`, `out[n] = bias[n] + Σ_k μ_k·(w[k][n] − ŵ[k][n])` (the sum in double, rounded to
/// `float`, then added to the bias in `float`) — the Rust
/// `PwlqTensor::corrected_bias`.
///
/// * `weights`: the PWLQ handle (its `ŵ`).
/// * `w`, `w_count`: the original float weights the handle was quantized from, in the
///   layout given to [`qk_pwlq_pack`] (`rows · cols` = `N · K` finite values).
/// * `input_mean`, `input_mean_count`: the mean of each input feature (`K` values) or
///   one for all (1 value), finite.
/// * `bias`, `bias_count`: may be NULL with count 0 (a zero bias); else `N` values.
/// * `out`, `out_count`: exactly `N` floats; must not overlap the inputs (write to a
///   copy to update a bias in place).
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle. Each buffer pointer must be NULL
/// (an error, unless optional) or point to at least its count of elements, readable
/// (inputs) or writable (`out`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_pwlq_bias_correction(
    weights: *const qk_pwlq_weights,
    w: *const f32,
    w_count: usize,
    input_mean: *const f32,
    input_mean_count: usize,
    bias: *const f32,
    bias_count: usize,
    out: *mut f32,
    out_count: usize,
) -> qk_status {
    guard("qk_pwlq_bias_correction", || {
        let h = weights_ref(weights)?;
        let w_span = span(w, w_count, "w")?;
        let mean_span = span(input_mean, input_mean_count, "input_mean")?;
        let bias_span: Option<Span> = opt_span(bias, bias_count, "bias")?;
        let o_span = span(out.cast_const(), out_count, "out")?;
        let ins: Vec<&Span> = [Some(&w_span), Some(&mean_span), bias_span.as_ref()].into_iter().flatten().collect();
        check_disjoint(&o_span, &ins)?;
        let (n, k) = (h.packed.channels(), h.packed.k());
        exact_count("w_count", w_count, n * k, "N · K of the weights")?;
        exact_count("out_count", out_count, n, "the number of channels")?;
        // SAFETY: spans checked with these pointers and counts, `out` disjoint from the
        // inputs; the caller guarantees validity for the duration of the call.
        let (x, mean, bias, o) = unsafe {
            (
                slice(w, w_count, &w_span),
                slice(input_mean, input_mean_count, &mean_span),
                opt_slice(bias, bias_count, &bias_span),
                slice_mut(out, out_count, &o_span),
            )
        };
        check_finite("w", x)?;
        o.copy_from_slice(&h.packed.unpack().corrected_bias(x, mean, bias)?);
        Ok(())
    })
}
