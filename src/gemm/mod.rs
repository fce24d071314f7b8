//! Int8 GEMM: `C = (A − za)·(B − zb) (+ bias)`, through a fused output stage.
//!
//! ```
//! use qkern::{Activations, MatrixMut, MatrixRef, PackedWeights, WeightQuant};
//! // A: 2×3 u8 activations (zero point 128), B: 3×2 i8 weights (zero point 0).
//! let a: [u8; 6] = [128, 129, 130, 131, 132, 133];
//! let b: [i8; 6] = [1, -1, 2, -2, 3, -3];
//! let w = PackedWeights::new(MatrixRef::new(&b, 3, 2), WeightQuant::per_tensor(0, 1.0)).unwrap();
//! let mut c = [0i32; 4];
//! qkern::gemm::gemm_i32(Activations::new(MatrixRef::new(&a, 2, 3), 128, 1.0), &w, None, MatrixMut::new(&mut c, 2, 2)).unwrap();
//! assert_eq!(c, [8, -8, 26, -26]);
//! ```

#[allow(unsafe_code)] // the one module that calls kernels (DESIGN.md §1)
mod driver;
mod pack;
pub(crate) mod scratch;

use qkern_kernels::{Int8, RequantMode};

use crate::dispatch::Context;
use crate::error::{Error, Result, check_scale};

pub use pack::{K_CHUNK, PackedWeights};
pub(crate) use pack::holds_weights;
pub(crate) use driver::{Out, Stage, advise_huge_pages, pack_rows, run_with_rows, stage_at, store_value};

/// A read-only row-major matrix view: `rows × cols`, rows `stride` elements apart.
#[derive(Clone, Copy, Debug)]
pub struct MatrixRef<'a, T> {
    /// The elements; must hold `(rows − 1)·stride + cols`.
    pub data: &'a [T],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements between row starts (≥ cols).
    pub stride: usize,
}

impl<'a, T> MatrixRef<'a, T> {
    /// A dense matrix (stride = cols). Checked when used.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatrixRef { data, rows, cols, stride: cols }
    }
    /// The same view with another row stride.
    pub fn with_stride(self, stride: usize) -> Self {
        MatrixRef { stride, ..self }
    }
}

/// A mutable row-major matrix view.
#[derive(Debug)]
pub struct MatrixMut<'a, T> {
    /// The elements; must hold `(rows − 1)·stride + cols`.
    pub data: &'a mut [T],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements between row starts (≥ cols).
    pub stride: usize,
}

impl<'a, T> MatrixMut<'a, T> {
    /// A dense matrix (stride = cols). Checked when used.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        MatrixMut { data, rows, cols, stride: cols }
    }
    /// The same view with another row stride.
    pub fn with_stride(self, stride: usize) -> Self {
        MatrixMut { stride, ..self }
    }
}

/// Activations: an `M × K` u8/i8 matrix with a per-tensor zero point and scale.
#[derive(Clone, Copy, Debug)]
pub struct Activations<'a, A> {
    /// The matrix.
    pub matrix: MatrixRef<'a, A>,
    /// Zero point.
    pub zero_point: A,
    /// Scale (used by the f32 and requantized output stages).
    pub scale: f32,
}

impl<'a, A> Activations<'a, A> {
    /// Activations with zero point and scale.
    pub fn new(matrix: MatrixRef<'a, A>, zero_point: A, scale: f32) -> Self {
        Activations { matrix, zero_point, scale }
    }
}

/// Where the rows of a GEMM's A come from (crate-internal: the public API takes
/// [`Activations`], the convolution also passes rows read through an indirection buffer).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ARows<'a, A> {
    /// A dense (strided) `M × K` matrix.
    Matrix(MatrixRef<'a, A>),
    /// Rows read in place, tap by tap ([`IndirectRows`]), by the kernel's indirect entry.
    Indirect(IndirectRows<'a, A>),
}

/// Activations from either row source, with their zero point and scale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ASource<'a, A> {
    /// The rows.
    pub(crate) rows: ARows<'a, A>,
    /// Zero point (also what a padding tap reads).
    pub(crate) zero_point: A,
    /// Scale.
    pub(crate) scale: f32,
}

impl<'a, A> From<Activations<'a, A>> for ASource<'a, A> {
    fn from(a: Activations<'a, A>) -> Self {
        ASource { rows: ARows::Matrix(a.matrix), zero_point: a.zero_point, scale: a.scale }
    }
}

/// An indirection buffer: per row, `taps` element offsets into the activations, or
/// [`qkern_kernels::IGEMM_ZERO_TAP`] for a padding tap. Immutable once built; its largest
/// offset is measured then, so that a run checks every offset against its input in O(1)
/// (the kernels read `input + offset` unchecked).
#[derive(Debug)]
pub(crate) struct Indirection {
    offsets: Vec<usize>,
    taps: usize,
    /// The largest non-padding offset (`None`: every tap is padding).
    max_offset: Option<usize>,
    /// A positive stride every non-padding offset is a multiple of (a conv's `in_c`: the
    /// offsets are pixel starts), or 0. With it, the row sums that nonzero weight zero
    /// points need are built from one sum per input pixel instead of one per tap.
    pixel_stride: usize,
}

impl Indirection {
    /// From `offsets` (`rows · taps` entries, row-major); `taps ≥ 1`. `pixel_stride`: a
    /// stride the offsets are multiples of, if known (checked here; 0 if none).
    pub(crate) fn new(offsets: Vec<usize>, taps: usize, pixel_stride: usize) -> Indirection {
        let real = || offsets.iter().copied().filter(|&o| o != qkern_kernels::IGEMM_ZERO_TAP);
        let max_offset = real().max();
        let pixel_stride = if pixel_stride > 0 && real().all(|o| o.is_multiple_of(pixel_stride)) { pixel_stride } else { 0 };
        Indirection { offsets, taps: taps.max(1), max_offset, pixel_stride }
    }
    /// The entries.
    pub(crate) fn offsets(&self) -> &[usize] {
        &self.offsets
    }
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.offsets.capacity() * size_of::<usize>()
    }
}

/// A rows read through an [`Indirection`]: row `i` is the concatenation over taps `t` of
/// `input[o .. o + kc]` with `o` the entry `(i, t)`, or `kc` zero points for a padding
/// tap. `M` is the indirection's row count, `K = taps · kc`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndirectRows<'a, A> {
    /// The activations the offsets point into.
    pub(crate) input: &'a [A],
    /// The offsets.
    pub(crate) indirection: &'a Indirection,
    /// Elements per tap.
    pub(crate) kc: usize,
}

/// Whether a GEMM of `w` on activations with zero point `za` and the i32 `bias`
/// accumulates exactly in i32 over the whole K (DESIGN.md §2), so that the driver runs
/// it without K chunks — the condition for indirect rows.
pub(crate) fn whole_k_exact<A: Int8>(za: A, w: &PackedWeights, bias: Option<&[i32]>) -> bool {
    driver::whole_k_exact(za, w.k, w, bias)
}

/// A parameter given per tensor (one value) or per channel (one value per column).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PerChannel<'a, T> {
    /// One value for the whole tensor.
    Tensor(T),
    /// One value per channel (per column of B).
    Channel(&'a [T]),
}

impl<T: Copy> PerChannel<'_, T> {
    /// Expands to `n` values; errors if a per-channel slice does not have `n` entries.
    pub(crate) fn expand(&self, what: &str, n: usize) -> Result<Vec<T>> {
        match *self {
            PerChannel::Tensor(v) => Ok(vec![v; n]),
            PerChannel::Channel(s) if s.len() == n => Ok(s.to_vec()),
            PerChannel::Channel(s) => Err(Error::ShapeMismatch(format!(
                "{what} has {} values; a per-channel parameter needs one per column (N = {n})",
                s.len()
            ))),
        }
    }
}

/// Weight quantization parameters: zero point and (optional) scale, each per tensor or
/// per column. Without scales only the i32 output stage is available.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightQuant<'a> {
    /// Zero point(s), within the weight type.
    pub zero_point: PerChannel<'a, i32>,
    /// Scale(s): finite and positive.
    pub scale: Option<PerChannel<'a, f32>>,
}

impl<'a> WeightQuant<'a> {
    /// Per-tensor zero point and scale.
    pub fn per_tensor(zero_point: i32, scale: f32) -> Self {
        WeightQuant { zero_point: PerChannel::Tensor(zero_point), scale: Some(PerChannel::Tensor(scale)) }
    }
    /// Per-column zero points and scales (N each).
    pub fn per_column(zero_point: &'a [i32], scale: &'a [f32]) -> Self {
        WeightQuant { zero_point: PerChannel::Channel(zero_point), scale: Some(PerChannel::Channel(scale)) }
    }
    /// Zero point only (integer output).
    pub fn zero_point_only(zero_point: PerChannel<'a, i32>) -> Self {
        WeightQuant { zero_point, scale: None }
    }
}

/// Requantization to u8/i8: `out = clamp(requant(acc + bias), min, max)`.
#[derive(Clone, Copy, Debug)]
pub struct Requantize<'a, O> {
    /// Output scale.
    pub scale: f32,
    /// Output zero point.
    pub zero_point: O,
    /// Rounding mode.
    pub mode: RequantMode,
    /// Lower clamp (fused ReLU: the zero point).
    pub min: O,
    /// Upper clamp.
    pub max: O,
    /// Optional i32 bias per column (N values), added to the exact accumulator.
    pub bias: Option<&'a [i32]>,
}

impl<'a, O: Int8> Requantize<'a, O> {
    /// Requantization to `scale`, `zero_point`, ONNX rounding, full-range clamp, no bias.
    pub fn new(scale: f32, zero_point: O) -> Self {
        Requantize { scale, zero_point, mode: RequantMode::Fp32, min: O::saturate_from(O::MIN), max: O::saturate_from(O::MAX), bias: None }
    }
    /// With another rounding mode.
    pub fn mode(self, mode: RequantMode) -> Self {
        Requantize { mode, ..self }
    }
    /// With an i32 bias.
    pub fn bias(self, bias: &'a [i32]) -> Self {
        Requantize { bias: Some(bias), ..self }
    }
    /// With explicit clamp bounds.
    pub fn clamp(self, min: O, max: O) -> Self {
        Requantize { min, max, ..self }
    }
    /// Fused ReLU: clamp below at the zero point.
    pub fn relu(self) -> Self {
        Requantize { min: self.zero_point, ..self }
    }
    /// Fused ReLU6: clamp to the quantized values of 0 and 6.
    pub fn relu6(self) -> Self {
        let six = qkern_kernels::reference::round_half_even_f32(6.0 / self.scale);
        let hi = (six as i64 + self.zero_point.to_i32() as i64).clamp(O::MIN as i64, O::MAX as i64) as i32;
        Requantize { min: self.zero_point, max: O::saturate_from(hi), ..self }
    }
}

/// `C (i32) = (A − za)·(B − zb) + bias`, on the default context.
///
/// Errors if a result does not fit in i32 (possible only for very long K).
pub fn gemm_i32<A: Int8>(a: Activations<'_, A>, w: &PackedWeights, bias: Option<&[i32]>, c: MatrixMut<'_, i32>) -> Result<()> {
    Context::new()?.gemm_i32(a, w, bias, c)
}

/// `C (f32) = sa·sb[n]·((A − za)·(B − zb)) + bias`, on the default context.
pub fn gemm_f32<A: Int8>(a: Activations<'_, A>, w: &PackedWeights, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
    Context::new()?.gemm_f32(a, w, bias, c)
}

/// `C (u8/i8) = requantize((A − za)·(B − zb) + bias)`, on the default context.
pub fn gemm_requantize<A: Int8, O: Int8>(a: Activations<'_, A>, w: &PackedWeights, rq: &Requantize<'_, O>, c: MatrixMut<'_, O>) -> Result<()> {
    Context::new()?.gemm_requantize(a, w, rq, c)
}

impl Context {
    /// `C (i32) = (A − za)·(B − zb) + bias`. See [`gemm_i32`].
    pub fn gemm_i32<A: Int8>(&self, a: Activations<'_, A>, w: &PackedWeights, bias: Option<&[i32]>, c: MatrixMut<'_, i32>) -> Result<()> {
        self.gemm_i32_src(a.into(), w, bias, c)
    }

    /// [`gemm_i32`](Self::gemm_i32) on either row source.
    pub(crate) fn gemm_i32_src<A: Int8>(&self, a: ASource<'_, A>, w: &PackedWeights, bias: Option<&[i32]>, c: MatrixMut<'_, i32>) -> Result<()> {
        let stage = driver::Stage::I32 { bias };
        driver::run(self, &a, w, stage, driver::Out::I32(c))
    }

    /// `C (f32) = sa·sb[n]·((A − za)·(B − zb)) + bias`. See [`gemm_f32`].
    pub fn gemm_f32<A: Int8>(&self, a: Activations<'_, A>, w: &PackedWeights, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
        self.gemm_f32_src(a.into(), w, bias, c)
    }

    /// [`gemm_f32`](Self::gemm_f32) on either row source.
    pub(crate) fn gemm_f32_src<A: Int8>(&self, a: ASource<'_, A>, w: &PackedWeights, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
        check_scale("activation scale", a.scale)?;
        // One scale per column; `is_empty` would also reject scales given for N = 0.
        if w.scale.len() != w.n {
            return Err(Error::InvalidParameter("f32 output needs weight scales; the weights were packed without".into()));
        }
        let scale = scratch::Scratch::collect(w.scale.iter().map(|&s| a.scale * s));
        // Valid factors can still under- or overflow in f32 (as the requantization
        // multiplier is checked in `Stage::requant`): that would be silently 0 or inf/NaN.
        if let Some(&s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidScale { what: "dequantization scale sa·sb", value: s as f64 });
        }
        let stage = driver::Stage::F32 { scale, bias };
        driver::run(self, &a, w, stage, driver::Out::F32(c))
    }

    /// `C (u8/i8) = requantize((A − za)·(B − zb) + bias)`. See [`gemm_requantize`].
    pub fn gemm_requantize<A: Int8, O: Int8>(&self, a: Activations<'_, A>, w: &PackedWeights, rq: &Requantize<'_, O>, c: MatrixMut<'_, O>) -> Result<()> {
        self.gemm_requantize_src(a.into(), w, rq, c)
    }

    /// [`gemm_requantize`](Self::gemm_requantize) on either row source.
    pub(crate) fn gemm_requantize_src<A: Int8, O: Int8>(&self, a: ASource<'_, A>, w: &PackedWeights, rq: &Requantize<'_, O>, c: MatrixMut<'_, O>) -> Result<()> {
        check_scale("activation scale", a.scale)?;
        // One scale per column; `is_empty` would also reject scales given for N = 0.
        if w.scale.len() != w.n {
            return Err(Error::InvalidParameter("requantized output needs weight scales; the weights were packed without".into()));
        }
        // Checks the output scale, the clamp and the multipliers.
        let stage = driver::Stage::requant(a.scale, &w.scale, rq)?;
        driver::run(self, &a, w, stage, requant_out(c))
    }
}

/// The driver's output for a requantized `O` matrix.
pub(crate) fn requant_out<O: Int8>(c: MatrixMut<'_, O>) -> Out<'_> {
    if O::SIGNED { Out::I8(bytemuck_cast_mut(c)) } else { Out::U8(bytemuck_cast_mut(c)) }
}

/// Reinterprets an `O: Int8` output view as bytes (u8 and i8 share layout).
fn bytemuck_cast_mut<O: Int8>(c: MatrixMut<'_, O>) -> MatrixMut<'_, u8> {
    let MatrixMut { data, rows, cols, stride } = c;
    MatrixMut { data: bytemuck::cast_slice_mut(data), rows, cols, stride }
}
