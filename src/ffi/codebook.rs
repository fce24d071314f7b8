//! Non-uniform (codebook) GEMM from C: quantize float weights `B[K][N]` to a level set
//! (uniform, PoT, log, APoT or a learned codebook), pack the codes once into an opaque
//! handle of [`CodebookWeights`], run it many times with `int32_t`, `float` or
//! requantized 8-bit output (the table-lookup kernels of [`crate::codebook`], exact in
//! integers).

use std::ffi::c_void;

use super::gemm::{AIn, a_in, inputs, int8_dtype, per_channel, requantize_params, with_a, zero_point};
use super::runtime::context;
use super::util::{Span, free_handle, handle_ref, check_disjoint, check_extent, check_outputs_disjoint, opt_slice, opt_span, slice, slice_mut, span};
use super::{Dtype, Failure, guard, qk_dtype, qk_requant_mode, qk_status, requant_mode_from_c};
use crate::codebook::CodebookWeights;
use crate::error::Error;
use crate::gemm::{Activations, MatrixMut, MatrixRef, PerChannel};
use crate::quant::{ApotFormat, Granularity, LevelParams, LevelQuantizer, LevelSet, PackedCodes, PotBase, PotFormat};

/// A non-uniform quantization scheme, passed from C as an `int32_t`, with a code width
/// `bits` beside it. The weights' levels are the scheme's levels times a float scale (one
/// per tensor or per column).
#[allow(non_camel_case_types)]
pub type qk_scheme = i32;

/// Uniform symmetric: the integers `−(2^(bits−1) − 1) … 2^(bits−1) − 1` (sorted codes,
/// code 0 = the most negative), `bits` 2–5.
pub const QK_SCHEME_UNIFORM: qk_scheme = 0;
/// Power of two (Miyashita et al.): `{0} ∪ {±2^e}`, sign + exponent-index codes, a
/// power-of-two scale (the full-scale-range exponent), `bits` 2–5. 2–4 bits run on the
/// int8 lookup kernels; 5 bits (grid 16384, beyond int8) on the int16 ones.
pub const QK_SCHEME_POT: qk_scheme = 1;
/// Logarithmic base √2: `{0} ∪ {±√2^−j}`, `bits` 2–5. Its levels have no integer grid, so
/// it can be quantized ([`qk_codebook_quantize`]) but not packed for the integer kernels
/// (`QK_ERR_UNSUPPORTED`).
pub const QK_SCHEME_LOG: qk_scheme = 2;
/// Additive powers of two for weights (Li et al., ICLR 2020): sign + magnitude, 4-bit =
/// `±{0, 1, 2, 3, 4, 6, 8, 10}`, `bits` 2–5.
pub const QK_SCHEME_APOT: qk_scheme = 3;
/// A learned codebook: the caller's `levels` (2 to `2^bits` finite, strictly increasing
/// values; code `c` is `levels[c]`), `bits` 1–5. Packing needs the levels on an integer
/// grid: every level an integer multiple `g·2^e` of one power of two with `|g| ≤ 32767`
/// (`|g| ≤ 127`, e.g. llama.cpp's IQ4_NL table, runs on the int8 kernels; wider grids on
/// the int16 ones).
pub const QK_SCHEME_CODEBOOK: qk_scheme = 4;

/// One scale for the whole weight tensor, or one per output column, passed from C as an
/// `int32_t`.
#[allow(non_camel_case_types)]
pub type qk_granularity = i32;

/// One scale for the whole tensor.
pub const QK_PER_TENSOR: qk_granularity = 0;
/// One scale per output channel (column `n` of `B[K][N]`).
pub const QK_PER_CHANNEL: qk_granularity = 1;

/// Prepacked codebook weights `B[K][N]`: the codes in the kernel's layout, the integer
/// table and the per-column scales. Opaque: create with [`qk_codebook_pack`],
/// [`qk_codebook_weights_create`] or (grid-aligned PWLQ) `qk_pwlq_snap_to_grid`, release
/// with [`qk_codebook_weights_free`]. Immutable once created, so one handle may be used
/// by several threads at once.
#[allow(non_camel_case_types)]
pub struct qk_codebook_weights {
    pub(super) w: CodebookWeights,
    /// The scheme's code width (the kernel's container may be wider).
    bits: u32,
}

/// The scheme and its levels, validated: the level set, and the quantizer that derives
/// scales from data (min-max range; PoT and log keep power-of-two scales).
struct Scheme {
    set: LevelSet,
    quantizer: LevelQuantizer,
}

fn scheme_of(scheme: qk_scheme, bits: u32, levels: Option<&[f32]>) -> Result<Scheme, Failure> {
    let no_levels = |name: &str| match levels {
        None => Ok(()),
        Some(_) => Err(Failure::invalid(format!(
            "`levels` must be NULL with `levels_count` 0 for {name}: only QK_SCHEME_CODEBOOK takes a table"
        ))),
    };
    let quantizer = match scheme {
        QK_SCHEME_UNIFORM => {
            no_levels("QK_SCHEME_UNIFORM")?;
            if !(2..=5).contains(&bits) {
                return Err(Error::InvalidBits { bits, min: 2, max: 5 }.into());
            }
            let h = (1i16 << (bits - 1)) - 1;
            let ints: Vec<i16> = (-h..=h).collect();
            LevelQuantizer::new(LevelSet::codebook_i16(bits, &ints)?)
        }
        QK_SCHEME_POT => {
            no_levels("QK_SCHEME_POT")?;
            PotFormat::signed(bits)?.quantizer()
        }
        QK_SCHEME_LOG => {
            no_levels("QK_SCHEME_LOG")?;
            PotFormat::signed(bits)?.with_base(PotBase::Sqrt2).quantizer()
        }
        QK_SCHEME_APOT => {
            no_levels("QK_SCHEME_APOT")?;
            ApotFormat::weight(bits)?.quantizer()
        }
        QK_SCHEME_CODEBOOK => {
            let l = levels.ok_or_else(|| Failure::null("levels"))?;
            LevelQuantizer::new(LevelSet::codebook(bits, l)?)
        }
        _ => {
            return Err(Failure::invalid(format!(
                "`scheme` = {scheme} is not a qk_scheme (QK_SCHEME_UNIFORM = 0, QK_SCHEME_POT = 1, \
                 QK_SCHEME_LOG = 2, QK_SCHEME_APOT = 3, QK_SCHEME_CODEBOOK = 4)"
            )));
        }
    };
    Ok(Scheme { set: quantizer.level_set().clone(), quantizer })
}

/// Decodes a granularity from C as the granularity of `B[K][N]` (per column = axis 1).
fn granularity_of(v: qk_granularity) -> Result<Granularity, Failure> {
    match v {
        QK_PER_TENSOR => Ok(Granularity::PerTensor),
        QK_PER_CHANNEL => Ok(Granularity::PerChannel { axis: 1 }),
        _ => Err(Failure::invalid(format!(
            "`granularity` = {v} is not a qk_granularity (QK_PER_TENSOR = 0, QK_PER_CHANNEL = 1)"
        ))),
    }
}

/// `k · n`, or `QK_ERR_OVERFLOW`.
fn numel(k: usize, n: usize) -> Result<usize, Failure> {
    k.checked_mul(n).ok_or_else(|| Failure::overflow(format!("`k` × `n` = {k} × {n} overflows size_t")))
}

/// A count that must equal the shape's, as `QK_ERR_SHAPE` naming the argument.
fn exact_count(what: &str, got: usize, want: usize, of: &str) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure::shape(format!("`{what}` is {got}, but {of} is {want}")))
    }
}

/// The optional level table of a call (NULL with count 0 = absent), checked as a span.
fn levels_span(levels: *const f32, levels_count: usize) -> Result<Option<Span>, Failure> {
    opt_span(levels, levels_count, "levels")
}

/// Quantizes the row-major `k × n` float weights `w` (`B[K][N]`, columns = output
/// channels) to codes of `scheme` with `bits`-bit codes, calibrating the scales by
/// min-max (per tensor, or per column with `QK_PER_CHANNEL`; PoT and log round the scale
/// up to a power of two). Each value goes to the nearest level (ties toward zero).
///
/// * `w`, `w_count`: exactly `k · n` finite values (`k, n ≥ 1`).
/// * `levels`, `levels_count`: the table of `QK_SCHEME_CODEBOOK` (see there); NULL with
///   count 0 for the other schemes.
/// * `codes`, `codes_count`: receives `k · n` codes (row-major, like `w`); the count must
///   be exactly `k · n`.
/// * `scale`, `scale_count`: receives the scales; the count must be exactly 1
///   (`QK_PER_TENSOR`) or `n` (`QK_PER_CHANNEL`).
///
/// The codes and scales are what [`qk_codebook_weights_create`] takes (with the same
/// scheme, bits and levels); `w[k][n] ≈ level(codes[k][n]) · scale[n]`.
///
/// # Safety
///
/// Each pointer must be NULL (an error, unless documented optional) or point to at least
/// its count of elements, readable (`w`, `levels`) or writable (`codes`, `scale`); the
/// outputs must not overlap each other or the inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_quantize(
    w: *const f32,
    w_count: usize,
    k: usize,
    n: usize,
    scheme: qk_scheme,
    bits: u32,
    levels: *const f32,
    levels_count: usize,
    granularity: qk_granularity,
    codes: *mut u8,
    codes_count: usize,
    scale: *mut f32,
    scale_count: usize,
) -> qk_status {
    guard("qk_codebook_quantize", || {
        let w_span = span(w, w_count, "w")?;
        let l_span = levels_span(levels, levels_count)?;
        let c_span = span(codes.cast_const(), codes_count, "codes")?;
        let s_span = span(scale.cast_const(), scale_count, "scale")?;
        let ins: Vec<&Span> = [Some(&w_span), l_span.as_ref()].into_iter().flatten().collect();
        check_disjoint(&c_span, &ins)?;
        check_disjoint(&s_span, &ins)?;
        check_outputs_disjoint(&[&c_span, &s_span])?;
        let g = granularity_of(granularity)?;
        // SAFETY: every span was checked with its pointer and count; the outputs are
        // disjoint from each other and from the inputs; the caller guarantees validity.
        let (x, lv, codes, scales) = unsafe {
            (
                slice(w, w_count, &w_span),
                opt_slice(levels, levels_count, &l_span),
                slice_mut(codes, codes_count, &c_span),
                slice_mut(scale, scale_count, &s_span),
            )
        };
        let s = scheme_of(scheme, bits, lv)?;
        let len = numel(k, n)?;
        exact_count("w_count", w_count, len, "k · n")?;
        exact_count("codes_count", codes_count, len, "k · n")?;
        let want_scales = if g == Granularity::PerTensor { 1 } else { n };
        exact_count("scale_count", scale_count, want_scales, "the number of scales (1 per tensor, n per channel)")?;
        let params = s.quantizer.with_granularity(g).quantize_into(x, &[k, n], codes)?;
        scales.copy_from_slice(params.scales());
        Ok(())
    })
}

/// Packs `params`' codes for the kernels of the C context.
fn pack(codes: &[u8], k: usize, n: usize, params: &LevelParams, bits: u32) -> Result<qk_codebook_weights, Failure> {
    let packed = PackedCodes::pack(codes, k, n, params)?;
    let w = CodebookWeights::new_in(&*context()?, &packed)?;
    Ok(qk_codebook_weights { w, bits })
}

/// Prepares codes packed elsewhere (grid-aligned PWLQ) for the kernels of the C
/// context; the code width is the level set's.
pub(super) fn from_packed(packed: &PackedCodes) -> Result<qk_codebook_weights, Failure> {
    let w = CodebookWeights::new_in(&*context()?, packed)?;
    Ok(qk_codebook_weights { w, bits: packed.level_set().bits() })
}

/// Clears `*out` and checks it; every create function starts so, so that every failure
/// leaves NULL behind.
pub(super) fn clear_out(out: *mut *mut qk_codebook_weights) -> Result<(), Failure> {
    span(out.cast_const(), 1, "out")?;
    // SAFETY: `out` is non-null and aligned (checked above); the caller guarantees it is
    // writable.
    unsafe { out.write(std::ptr::null_mut()) };
    Ok(())
}

/// Hands a new handle to C.
pub(super) fn give(out: *mut *mut qk_codebook_weights, w: qk_codebook_weights) {
    let handle = Box::into_raw(Box::new(w));
    // SAFETY: `out` was checked non-null and aligned by `clear_out`; writable per the caller.
    unsafe { out.write(handle) };
}

/// Creates prepacked codebook weights from codes: the row-major `k × n` codes of
/// `B[K][N]` of `scheme` with `bits`-bit codes (as [`qk_codebook_quantize`] writes them,
/// or a learned codebook's indices into `levels`), and the scales.
///
/// * `codes`, `codes_count`: exactly `k · n` codes, each a valid code of the level set
///   (below the number of `levels` for `QK_SCHEME_CODEBOOK`, below `2^bits` otherwise);
///   an out-of-range code is `QK_ERR_INVALID_PARAMETER` naming its position.
/// * `levels`, `levels_count`: the table of `QK_SCHEME_CODEBOOK` (finite, strictly
///   increasing, 2 to `2^bits` values); NULL with count 0 for the other schemes. A table
///   with no integer grid (within ±32767) is `QK_ERR_UNSUPPORTED`.
/// * `scale`, `scale_count`: 1 (per tensor) or `n` (per column) finite positive scales;
///   `B[k][n] = levels[codes[k][n]] · scale[n]`.
/// * `out`: receives the handle; set to NULL first, so it is NULL on any failure.
///
/// The inputs are copied; they may be freed after the call.
///
/// # Safety
///
/// Each pointer must be NULL (an error, unless documented optional) or point to at least
/// its count of readable elements; `out` must be NULL (an error) or point to a writable
/// `qk_codebook_weights*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_weights_create(
    codes: *const u8,
    codes_count: usize,
    k: usize,
    n: usize,
    scheme: qk_scheme,
    bits: u32,
    levels: *const f32,
    levels_count: usize,
    scale: *const f32,
    scale_count: usize,
    out: *mut *mut qk_codebook_weights,
) -> qk_status {
    guard("qk_codebook_weights_create", || {
        clear_out(out)?;
        let c_span = span(codes, codes_count, "codes")?;
        let l_span = levels_span(levels, levels_count)?;
        let s_span = span(scale, scale_count, "scale")?;
        // SAFETY: each span was checked with the same pointer and count; the caller
        // guarantees the memory is readable, and nothing here writes it.
        let (codes, lv, scales) = unsafe {
            (slice(codes, codes_count, &c_span), opt_slice(levels, levels_count, &l_span), slice(scale, scale_count, &s_span))
        };
        let s = scheme_of(scheme, bits, lv)?;
        exact_count("codes_count", codes_count, numel(k, n)?, "k · n")?;
        let params = match per_channel(scales, n, "scale")? {
            PerChannel::Tensor(v) => LevelParams::per_tensor(s.set, v)?,
            PerChannel::Channel(v) => LevelParams::per_channel(s.set, 1, v.to_vec())?,
        };
        give(out, pack(codes, k, n, &params, bits)?);
        Ok(())
    })
}

/// Quantizes the float weights `w` (`B[K][N]`, `k · n` values) as
/// [`qk_codebook_quantize`] does and packs the codes into a handle, in one call: the same
/// weights as `qk_codebook_quantize` followed by [`qk_codebook_weights_create`].
///
/// Errors: those of both, in particular `QK_ERR_UNSUPPORTED` for a scheme the integer
/// kernels cannot run (`QK_SCHEME_LOG`, a learned table without an integer grid within
/// ±32767). `out` is set to NULL first, so it is NULL on any failure.
///
/// # Safety
///
/// `w` and `levels` as in [`qk_codebook_quantize`]; `out` must be NULL (an error) or
/// point to a writable `qk_codebook_weights*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_pack(
    w: *const f32,
    w_count: usize,
    k: usize,
    n: usize,
    scheme: qk_scheme,
    bits: u32,
    levels: *const f32,
    levels_count: usize,
    granularity: qk_granularity,
    out: *mut *mut qk_codebook_weights,
) -> qk_status {
    guard("qk_codebook_pack", || {
        clear_out(out)?;
        let w_span = span(w, w_count, "w")?;
        let l_span = levels_span(levels, levels_count)?;
        // SAFETY: each span was checked with the same pointer and count; the caller
        // guarantees the memory is readable, and nothing here writes it.
        let (x, lv) = unsafe { (slice(w, w_count, &w_span), opt_slice(levels, levels_count, &l_span)) };
        let g = granularity_of(granularity)?;
        let s = scheme_of(scheme, bits, lv)?;
        exact_count("w_count", w_count, numel(k, n)?, "k · n")?;
        let t = s.quantizer.with_granularity(g).quantize(x, &[k, n])?;
        give(out, pack(t.codes(), k, n, t.params(), bits)?);
        Ok(())
    })
}

/// Releases weights created by [`qk_codebook_pack`], [`qk_codebook_weights_create`] or
/// `qk_pwlq_snap_to_grid`. NULL is accepted and does nothing (`QK_OK`).
///
/// # Safety
///
/// `weights` must be NULL or a live handle from those functions, not freed before, and
/// no other thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_weights_free(weights: *mut qk_codebook_weights) -> qk_status {
    guard("qk_codebook_weights_free", || {
        free_handle(weights);
        Ok(())
    })
}

/// The handle behind a pointer.
fn weights_ref<'a>(w: *const qk_codebook_weights) -> Result<&'a qk_codebook_weights, Failure> {
    handle_ref(w, "weights", "qk_codebook_pack, qk_codebook_weights_create or qk_pwlq_snap_to_grid")
}

/// K, N and the code width of a handle.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle; each out-pointer must be NULL (an
/// error) or point to a writable value of its type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_weights_shape(
    weights: *const qk_codebook_weights,
    k: *mut usize,
    n: *mut usize,
    bits: *mut u32,
) -> qk_status {
    guard("qk_codebook_weights_shape", || {
        let w = weights_ref(weights)?;
        let ks = span(k.cast_const(), 1, "k")?;
        let ns = span(n.cast_const(), 1, "n")?;
        let bs = span(bits.cast_const(), 1, "bits")?;
        check_outputs_disjoint(&[&ks, &ns, &bs])?;
        // SAFETY: the three pointers were checked non-null, aligned and disjoint; the
        // caller guarantees they are writable.
        unsafe {
            k.write(w.w.k());
            n.write(w.w.n());
            bits.write(w.bits);
        }
        Ok(())
    })
}

/// What the kernels multiply with: the integer grid value of every code, and each
/// column's grid scale. The exact results are
/// `qk_codebook_gemm_i32: C[m][n] = Σ_k (A[m][k] − za)·table[code(k, n)] + bias[n]` and
/// `qk_codebook_gemm_f32: C[m][n] = (float)Σ_k (A[m][k] − za)·table[code(k, n)] ·
/// (a_scale · grid_scale[n]) + bias[n]`; a weight's value is
/// `table[code] · grid_scale[n]` (= level · scale, exactly).
///
/// * `table`, `table_count`: may be NULL with count 0 (not wanted); else at least
///   `2^bits` entries, of which the first `2^bits` are written (0 for a code the level set
///   does not have). A grid beyond int8 (5-bit PoT, a learned table reaching ±128 or
///   more) has no `int8_t` table: `QK_ERR_UNSUPPORTED` (use
///   [`qk_codebook_weights_table_i16`]).
/// * `grid_scale`, `grid_scale_count`: may be NULL with count 0; else at least N entries,
///   of which the first N are written.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle; each buffer must be NULL (with
/// count 0) or point to its count of writable elements; the two must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_weights_table(
    weights: *const qk_codebook_weights,
    table: *mut i8,
    table_count: usize,
    grid_scale: *mut f32,
    grid_scale_count: usize,
) -> qk_status {
    guard("qk_codebook_weights_table", || {
        let w = weights_ref(weights)?;
        if !table.is_null() && w.w.table().is_empty() {
            return Err(Error::Unsupported(format!(
                "the grid reaches {}, beyond int8: read the table with qk_codebook_weights_table_i16",
                w.w.grid_max()
            ))
            .into());
        }
        // SAFETY: forwarded (the caller's guarantees on both buffers).
        unsafe { write_table(w, table, table_count, w.w.table(), grid_scale, grid_scale_count) }
    })
}

/// As [`qk_codebook_weights_table`], the table as `int16_t`: every level set with an
/// integer grid (within ±32767), including those beyond int8.
///
/// # Safety
///
/// As [`qk_codebook_weights_table`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_weights_table_i16(
    weights: *const qk_codebook_weights,
    table: *mut i16,
    table_count: usize,
    grid_scale: *mut f32,
    grid_scale_count: usize,
) -> qk_status {
    guard("qk_codebook_weights_table_i16", || {
        let w = weights_ref(weights)?;
        // SAFETY: forwarded (the caller's guarantees on both buffers).
        unsafe { write_table(w, table, table_count, w.w.table_i16(), grid_scale, grid_scale_count) }
    })
}

/// The body of the two table getters: `values` (the `2^bits` table entries) to `table`,
/// the grid scales to `grid_scale`.
///
/// # Safety
///
/// Each buffer is NULL (with count 0) or its count of writable elements; they do not
/// overlap (checked).
unsafe fn write_table<T: Copy>(
    w: &qk_codebook_weights,
    table: *mut T,
    table_count: usize,
    values: &[T],
    grid_scale: *mut f32,
    grid_scale_count: usize,
) -> Result<(), Failure> {
    let t_span = opt_span(table.cast_const(), table_count, "table")?;
    let g_span = opt_span(grid_scale.cast_const(), grid_scale_count, "grid_scale")?;
    if let (Some(t), Some(g)) = (&t_span, &g_span) {
        check_outputs_disjoint(&[t, g])?;
    }
    let codes = 1usize << w.bits;
    let n = w.w.n();
    if let Some(t) = &t_span {
        if table_count < codes {
            return Err(Error::BufferTooSmall { what: "table", needed: codes, got: table_count }.into());
        }
        if values.len() < codes {
            return Err(Error::Internal("codebook weights with a short table".into()).into());
        }
        // SAFETY: checked with this pointer and count, disjoint from `grid_scale`.
        let out = unsafe { slice_mut(table, table_count, t) };
        out[..codes].copy_from_slice(&values[..codes]);
    }
    if let Some(g) = &g_span {
        if grid_scale_count < n {
            return Err(Error::BufferTooSmall { what: "grid_scale", needed: n, got: grid_scale_count }.into());
        }
        if w.w.grid_scales.len() != n {
            return Err(Error::Internal("codebook weights without grid scales".into()).into());
        }
        // SAFETY: as above.
        let out = unsafe { slice_mut(grid_scale, grid_scale_count, g) };
        out[..n].copy_from_slice(&w.w.grid_scales);
    }
    Ok(())
}

/// The checked buffers of a codebook GEMM call.
#[allow(clippy::too_many_arguments)]
fn run_prologue<'w, B, C>(
    weights: *const qk_codebook_weights,
    a: *const c_void,
    a_dtype: qk_dtype,
    a_count: usize,
    bias: *const B,
    bias_count: usize,
    c: *mut C,
    c_count: usize,
) -> Result<(&'w qk_codebook_weights, AIn, Option<Span>, Span), Failure> {
    let w = weights_ref(weights)?;
    let ai = a_in(a, a_dtype, a_count)?;
    let bias_span = opt_span(bias, bias_count, "bias")?;
    let c_span = span(c.cast_const(), c_count, "c")?;
    check_disjoint(&c_span, &inputs(&ai.span, &bias_span))?;
    Ok((w, ai, bias_span, c_span))
}

/// `C[m][n] = Σ_k (A[m][k] − a_zero_point)·table[code(k, n)] + bias[n]` in `int32_t`,
/// exact (integer grid units: see [`qk_codebook_weights_table`]); `QK_ERR_OVERFLOW` if a
/// result does not fit.
///
/// * `a`: `m × K` row-major, dtype `a_dtype` (`QK_U8` or `QK_I8`), rows `lda` elements
///   apart (≥ K), `a_count` elements readable.
/// * `a_zero_point`: within `a_dtype`'s range.
/// * `bias`, `bias_count`: may be NULL with count 0; else `N` values.
/// * `c`: `m × N`, rows `ldc` apart (≥ N), `c_count` elements writable; must not overlap
///   `a` or `bias`.
///
/// # Safety
///
/// `weights` must be NULL (an error) or a live handle. Each buffer pointer must be NULL
/// (an error, unless optional) or point to at least its count of elements, readable
/// (inputs) or writable (`c`), and not modified by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_gemm_i32(
    weights: *const qk_codebook_weights,
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
    guard("qk_codebook_gemm_i32", || {
        let (w, a_in, bias_span, c_span) = run_prologue(weights, a, a_dtype, a_count, bias, bias_count, c, c_count)?;
        // SAFETY: spans checked with these pointers and counts, `c` disjoint from the
        // inputs; the caller guarantees validity for the duration of the call.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.w.k(), w.w.n());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, 1.0);
            context()?.codebook_gemm_i32(act, &w.w, bias, MatrixMut::new(c, m, n).with_stride(ldc))?;
            Ok(())
        })
    })
}

/// `C[m][n] = (float)Σ_k (A[m][k] − a_zero_point)·table[code(k, n)] · (a_scale ·
/// grid_scale[n]) + bias[n]` in `float`: the dequantized product (see
/// [`qk_codebook_weights_table`]), each step one `float` operation.
///
/// Arguments as [`qk_codebook_gemm_i32`], plus `a_scale` (finite, > 0) and a `float`
/// bias (may be NULL with count 0, else `N` values).
///
/// # Safety
///
/// As [`qk_codebook_gemm_i32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_gemm_f32(
    weights: *const qk_codebook_weights,
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
    guard("qk_codebook_gemm_f32", || {
        let (w, a_in, bias_span, c_span) = run_prologue(weights, a, a_dtype, a_count, bias, bias_count, c, c_count)?;
        // SAFETY: as in `qk_codebook_gemm_i32`.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.w.k(), w.w.n());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, a_scale);
            context()?.codebook_gemm_f32(act, &w.w, bias, MatrixMut::new(c, m, n).with_stride(ldc))?;
            Ok(())
        })
    })
}


/// `C[m][n] = clamp(requantize(Σ_k (A[m][k] − a_zero_point)·table[code(k, n)] + bias[n]),
/// out_min, out_max)` in `c_dtype` (`QK_U8` or `QK_I8`), with the per-column multiplier
/// `a_scale · grid_scale[n] / out_scale` (see [`qk_codebook_weights_table`]) applied in
/// `mode`: the output stage of `qk_gemm_requantize`, exact
/// (a sum beyond `int32_t` is carried in 64 bits and saturates to the clamp).
///
/// Arguments as [`qk_codebook_gemm_i32`], plus `a_scale` and `out_scale` (finite, > 0),
/// `out_zero_point` and the clamp `out_min ≤ out_max` (all within `c_dtype`'s range;
/// pass the type's full range for no clamp, `out_min = out_zero_point` for a fused
/// ReLU), and `mode` (a `qk_requant_mode`).
///
/// # Safety
///
/// As [`qk_codebook_gemm_i32`]; `c` points to `c_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_codebook_gemm_requantize(
    weights: *const qk_codebook_weights,
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
    guard("qk_codebook_gemm_requantize", || {
        let c = c.cast::<u8>();
        let (w, a_in, bias_span, c_span) = run_prologue(weights, a, a_dtype, a_count, bias, bias_count, c, c_count)?;
        let c_dtype = int8_dtype(c_dtype, "c_dtype")?;
        let mode = requant_mode_from_c(mode, "mode")?;
        // SAFETY: as in `qk_codebook_gemm_i32`.
        let (bias, c) = unsafe { (opt_slice(bias, bias_count, &bias_span), slice_mut(c, c_count, &c_span)) };
        let (k, n) = (w.w.k(), w.w.n());
        check_extent("a", m, k, lda)?;
        check_extent("c", m, n, ldc)?;
        with_a!(a_in, |a: A| {
            let za = zero_point::<A>(a_zero_point, "a_zero_point")?;
            let act = Activations::new(MatrixRef::new(a, m, k).with_stride(lda), za, a_scale);
            let ctx = context()?;
            match c_dtype {
                Dtype::U8 => {
                    let rq = requantize_params::<u8>(bias, out_scale, out_zero_point, mode, out_min, out_max)?;
                    ctx.codebook_gemm_requantize(act, &w.w, &rq, MatrixMut::new(c, m, n).with_stride(ldc))?;
                }
                _ => {
                    let rq = requantize_params::<i8>(bias, out_scale, out_zero_point, mode, out_min, out_max)?;
                    let c: &mut [i8] = bytemuck::cast_slice_mut(c);
                    ctx.codebook_gemm_requantize(act, &w.w, &rq, MatrixMut::new(c, m, n).with_stride(ldc))?;
                }
            }
            Ok(())
        })
    })
}
