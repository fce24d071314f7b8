//! Uniform (linear) quantization: `q = clamp(round(x / scale) + zero_point, qmin, qmax)`,
//! `x̂ = (q − zero_point) · scale`.
//!
//! * [`IntFormat`] — the integer grid: 1–8 bits, signed or unsigned, full or narrow range.
//! * [`Mapping`] — how a real range becomes (scale, zero point): symmetric or affine.
//! * [`Granularity`] — one parameter pair per tensor, per channel, or per group.
//! * [`Rounding`] — half to even (ONNX, the default), half away from zero (TFLite),
//!   stochastic (seeded).
//! * [`QuantParams`] — concrete, validated parameters; quantizes and dequantizes.
//! * [`UniformQuantizer`] — a recipe (format, mapping, granularity, rounding,
//!   [`Calibration`]) that derives [`QuantParams`] from data.
//! * [`QuantizedTensor`] — codes, their shape and their parameters.
//!
//! Codes are stored in `i8` for signed formats and `u8` for unsigned ones, whatever the
//! bit width (every width ≤ 8 fits); asking for the other type is an error. The exact
//! per-element rules (NaN, ±inf, ties) are in [`super::reference`].

use std::fmt;

use qkern_kernels::Int8;
use qkern_kernels::reference::round_half_even_f32;

use super::calibration::{self, Calibration};
use super::layout::{Layout, Run, numel};
use super::metrics::{self, ErrorStats};
use super::reference::{UniformStream, quantize_value};
use super::simd::{DequantizeOp, QuantizeOp};
use crate::error::{Error, Result, check_scale};

/// An integer grid `[qmin, qmax]`: `bits` ∈ 1..=8, signed or unsigned, full or narrow.
///
/// | | full range | narrow range |
/// |---|---|---|
/// | signed | `[−2^(b−1), 2^(b−1) − 1]` | `[−2^(b−1) + 1, 2^(b−1) − 1]` (int8: ±127) |
/// | unsigned | `[0, 2^b − 1]` | `[1, 2^b − 1]` |
///
/// Narrow range drops the lowest code, as TensorFlow's `narrow_range` does; for signed
/// formats that makes the grid symmetric about 0. A 1-bit narrow grid would have a single
/// level and is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IntFormat {
    bits: u32,
    signed: bool,
    narrow: bool,
}

impl IntFormat {
    /// Signed 8-bit, full range `[−128, 127]`.
    pub const INT8: IntFormat = IntFormat { bits: 8, signed: true, narrow: false };
    /// Unsigned 8-bit, full range `[0, 255]`.
    pub const UINT8: IntFormat = IntFormat { bits: 8, signed: false, narrow: false };
    /// Signed 8-bit, narrow range `[−127, 127]`.
    pub const INT8_NARROW: IntFormat = IntFormat { bits: 8, signed: true, narrow: true };

    /// A format; `bits` outside 1..=8 is [`Error::InvalidBits`], a single-level grid
    /// (1-bit narrow) is [`Error::InvalidParameter`].
    pub fn new(bits: u32, signed: bool, narrow: bool) -> Result<Self> {
        if !(1..=8).contains(&bits) {
            return Err(Error::InvalidBits { bits, min: 1, max: 8 });
        }
        if narrow && bits == 1 {
            return Err(Error::InvalidParameter(
                "a 1-bit narrow-range format has a single level; use full range or more bits".into(),
            ));
        }
        Ok(IntFormat { bits, signed, narrow })
    }

    /// Signed, full range.
    pub fn signed(bits: u32) -> Result<Self> {
        Self::new(bits, true, false)
    }

    /// Unsigned, full range.
    pub fn unsigned(bits: u32) -> Result<Self> {
        Self::new(bits, false, false)
    }

    /// The bit width.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Whether codes are signed (stored as `i8`) or unsigned (`u8`).
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// Whether the lowest code is excluded.
    pub fn is_narrow(&self) -> bool {
        self.narrow
    }

    /// The smallest code.
    pub fn qmin(&self) -> i32 {
        let full = if self.signed { -(1i32 << (self.bits - 1)) } else { 0 };
        full + self.narrow as i32
    }

    /// The largest code.
    pub fn qmax(&self) -> i32 {
        if self.signed { (1i32 << (self.bits - 1)) - 1 } else { (1i32 << self.bits) - 1 }
    }

    /// The number of codes, `qmax − qmin + 1`.
    pub fn levels(&self) -> u32 {
        (self.qmax() - self.qmin() + 1) as u32
    }

    /// The zero point of [`Mapping::Symmetric`]: 0 for signed formats, `2^(b−1)` for
    /// unsigned ones (the centre of the full unsigned grid, and of the narrow one exactly).
    pub fn symmetric_zero_point(&self) -> i32 {
        if self.signed { 0 } else { 1 << (self.bits - 1) }
    }

    /// Checks that the storage type `T` matches the signedness.
    pub(crate) fn check_code_type<T: Int8>(&self, what: &'static str) -> Result<()> {
        if T::SIGNED == self.signed {
            Ok(())
        } else {
            Err(Error::InvalidParameter(format!(
                "`{what}`: codes of format {self} are stored as {}, not {}",
                if self.signed { "i8" } else { "u8" },
                T::NAME
            )))
        }
    }
}

impl fmt::Display for IntFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}int{}", if self.signed { "" } else { "u" }, self.bits)?;
        if self.narrow {
            write!(f, " narrow [{}, {}]", self.qmin(), self.qmax())?;
        }
        Ok(())
    }
}

/// How a real range `[min, max]` becomes a scale and a zero point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mapping {
    /// Zero point fixed at [`IntFormat::symmetric_zero_point`];
    /// `scale = max(|min|, |max|) / h` with `h = min(qmax − zp, zp − qmin)`, so the
    /// calibrated magnitude is representable on both sides without clipping (int8:
    /// `absmax / 127`, as TFLite's symmetric weights). Needs `h ≥ 1` (2+ bits).
    Symmetric,
    /// The range is first extended to include 0 (as ONNX and TFLite do, so 0.0 is
    /// exactly representable); `scale = (max − min) / (qmax − qmin)` and
    /// `zero_point = round_half_even(qmin − min / scale)` clamped to `[qmin, qmax]`, all in
    /// f32 — exactly ONNX `DynamicQuantizeLinear` for uint8.
    #[default]
    Affine,
}

/// Which elements share a (scale, zero point) pair, for a row-major tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Granularity {
    /// One pair for the whole tensor.
    #[default]
    PerTensor,
    /// One pair per index along `axis` (`shape[axis]` pairs).
    PerChannel {
        /// The channel axis, `< rank`.
        axis: usize,
    },
    /// Blocks of `group_size` consecutive indices along `axis` share a pair, separately
    /// for every index of the other axes (ONNX blocked quantization): the parameters form
    /// a tensor of the input's shape with `shape[axis]` replaced by
    /// `ceil(shape[axis] / group_size)`, in row-major order. When `group_size` does not
    /// divide `shape[axis]`, the last block of each row is shorter.
    PerGroup {
        /// The blocked axis, `< rank`.
        axis: usize,
        /// Block length, ≥ 1.
        group_size: usize,
    },
}

/// How `x / scale` becomes an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Rounding {
    /// Round half to even (ONNX, onnxruntime, PyTorch, `nearbyint`).
    #[default]
    HalfEven,
    /// Round half away from zero (TFLite's `TfLiteRound`, C `round`).
    HalfAway,
    /// `floor(v + u)`, `u` uniform in `[0, 1)` from a ChaCha8 stream seeded with `seed`
    /// (see [`super::reference::UniformStream`]): unbiased, `E[q] = v` inside the range.
    /// One `u` is drawn per element in flat order, and every quantize call restarts the
    /// stream, so a call is a deterministic function of its inputs and the seed; use a new
    /// seed for independent noise. This path is scalar (the draws are sequential).
    Stochastic {
        /// The seed of the stream.
        seed: u64,
    },
}

/// Validated quantization parameters: a format, a granularity, one scale and zero point
/// per parameter slot, and the rounding used when quantizing.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    format: IntFormat,
    granularity: Granularity,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    /// `zero_points` as f32 (exact), for the vector loops.
    zero_points_f: Vec<f32>,
    rounding: Rounding,
}

impl QuantParams {
    /// Parameters given directly. `scales` and `zero_points` must be non-empty and of the
    /// same length (1 for [`Granularity::PerTensor`]; for the other granularities the
    /// count is checked against the tensor shape when used). Every scale must be finite
    /// and > 0, every zero point in `[qmin, qmax]`. Rounding defaults to half to even.
    pub fn new(format: IntFormat, granularity: Granularity, scales: Vec<f32>, zero_points: Vec<i32>) -> Result<Self> {
        if scales.is_empty() {
            return Err(Error::InvalidParameter("`scales` is empty; at least one scale is needed".into()));
        }
        if scales.len() != zero_points.len() {
            return Err(Error::ShapeMismatch(format!(
                "`scales` has {} entries but `zero_points` has {}",
                scales.len(),
                zero_points.len()
            )));
        }
        if granularity == Granularity::PerTensor && scales.len() != 1 {
            return Err(Error::ShapeMismatch(format!(
                "per-tensor parameters need exactly one scale, got {}",
                scales.len()
            )));
        }
        if let Granularity::PerGroup { group_size: 0, .. } = granularity {
            return Err(Error::InvalidParameter("per-group `group_size` must be at least 1".into()));
        }
        for &s in &scales {
            check_scale("scales", s)?;
        }
        let (qmin, qmax) = (format.qmin(), format.qmax());
        if let Some(&z) = zero_points.iter().find(|&&z| z < qmin || z > qmax) {
            return Err(Error::ZeroPointOutOfRange {
                what: "zero_points",
                value: z as i64,
                min: qmin as i64,
                max: qmax as i64,
            });
        }
        Ok(Self::new_unchecked(format, granularity, scales, zero_points))
    }

    /// Already-validated parts.
    pub(crate) fn new_unchecked(
        format: IntFormat,
        granularity: Granularity,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    ) -> Self {
        let zero_points_f = zero_points.iter().map(|&z| z as f32).collect();
        QuantParams { format, granularity, scales, zero_points, zero_points_f, rounding: Rounding::HalfEven }
    }

    /// One scale and zero point for the whole tensor.
    pub fn per_tensor(format: IntFormat, scale: f32, zero_point: i32) -> Result<Self> {
        Self::new(format, Granularity::PerTensor, vec![scale], vec![zero_point])
    }

    /// One pair per index along `axis`.
    pub fn per_channel(format: IntFormat, axis: usize, scales: Vec<f32>, zero_points: Vec<i32>) -> Result<Self> {
        Self::new(format, Granularity::PerChannel { axis }, scales, zero_points)
    }

    /// One pair per block of `group_size` along `axis` (see [`Granularity::PerGroup`]).
    pub fn per_group(
        format: IntFormat,
        axis: usize,
        group_size: usize,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    ) -> Result<Self> {
        Self::new(format, Granularity::PerGroup { axis, group_size }, scales, zero_points)
    }

    /// Per-tensor parameters from a real range by `mapping` (see [`Mapping`]).
    /// `min`/`max` must be finite with `min ≤ max`; a zero-width range (after including
    /// 0 for affine) is treated as width 1, as ONNX `DynamicQuantizeLinear` does.
    pub fn from_range(format: IntFormat, mapping: Mapping, min: f32, max: f32) -> Result<Self> {
        let (s, z) = params_from_range(format, mapping, min, max)?;
        Ok(Self::new_unchecked(format, Granularity::PerTensor, vec![s], vec![z]))
    }

    /// Parameters from one real range per slot (`mins[i]`, `maxs[i]`), as
    /// [`QuantParams::from_range`] for each.
    pub fn from_ranges(
        format: IntFormat,
        mapping: Mapping,
        granularity: Granularity,
        mins: &[f32],
        maxs: &[f32],
    ) -> Result<Self> {
        if mins.len() != maxs.len() {
            return Err(Error::ShapeMismatch(format!(
                "`mins` has {} entries but `maxs` has {}",
                mins.len(),
                maxs.len()
            )));
        }
        let mut scales = Vec::with_capacity(mins.len());
        let mut zps = Vec::with_capacity(mins.len());
        for (&lo, &hi) in mins.iter().zip(maxs) {
            let (s, z) = params_from_range(format, mapping, lo, hi)?;
            scales.push(s);
            zps.push(z);
        }
        Self::new(format, granularity, scales, zps)
    }

    /// The same parameters with another rounding rule.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// The integer format.
    pub fn format(&self) -> IntFormat {
        self.format
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The scales, one per slot (row-major parameter order, see [`Granularity`]).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The zero points, one per slot.
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }

    /// The rounding rule used by quantize.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Validates `shape` for data of length `len` and checks the parameter count.
    fn layout(&self, shape: &[usize], what: &'static str, len: usize) -> Result<Layout> {
        let layout = Layout::new(shape, &self.granularity, what, len)?;
        let need = layout.num_params();
        if need != self.scales.len() {
            return Err(Error::ShapeMismatch(format!(
                "{:?} over shape {shape:?} needs {need} scales and zero points, the parameters have {}",
                self.granularity,
                self.scales.len()
            )));
        }
        Ok(layout)
    }

    /// Quantizes `x` (row-major, `shape`) into `out` (same length). `T` must be `i8` for a
    /// signed format and `u8` for an unsigned one. NaN becomes the zero point, ±inf
    /// saturates (see [`super::reference`]).
    pub fn quantize_into<T: Int8>(&self, x: &[f32], shape: &[usize], out: &mut [T]) -> Result<()> {
        self.format.check_code_type::<T>("out")?;
        let layout = self.layout(shape, "x", x.len())?;
        check_out_len("out", out.len(), layout.numel)?;
        self.quantize_layout(&layout, x, out);
        Ok(())
    }

    /// Quantizes `x` into a new [`QuantizedTensor`].
    pub fn quantize<T: Int8>(&self, x: &[f32], shape: &[usize]) -> Result<QuantizedTensor<T>> {
        self.format.check_code_type::<T>("T")?;
        let layout = self.layout(shape, "x", x.len())?;
        let mut codes = vec![T::default(); layout.numel];
        self.quantize_layout(&layout, x, &mut codes);
        Ok(QuantizedTensor { codes, shape: shape.to_vec(), params: self.clone(), layout })
    }

    /// The quantize loop on a validated layout.
    fn quantize_layout<T: Int8>(&self, layout: &Layout, x: &[f32], out: &mut [T]) {
        let (qmin, qmax) = (self.format.qmin(), self.format.qmax());
        match self.rounding {
            Rounding::HalfEven | Rounding::HalfAway => {
                QuantizeOp { layout, x, out, scales: &self.scales, zps: &self.zero_points_f, qmin, qmax }
                    .run(self.rounding == Rounding::HalfAway)
            }
            Rounding::Stochastic { seed } => {
                // Scalar: one draw per element, in flat order (runs come in flat order).
                let mut stream = UniformStream::new(seed);
                let mut one = |i: usize, p: usize| {
                    let q = quantize_value(
                        x[i],
                        self.scales[p],
                        self.zero_points[p],
                        qmin,
                        qmax,
                        self.rounding,
                        stream.next_u(),
                    );
                    out[i] = T::from_bits(q as u8);
                };
                for run in layout.runs() {
                    match run {
                        Run::Uniform { start, len, p } => (start..start + len).for_each(|i| one(i, p)),
                        Run::Varying { start, len, p0 } => (0..len).for_each(|j| one(start + j, p0 + j)),
                    }
                }
            }
        }
    }

    /// Dequantizes `codes` (row-major, `shape`) into `out`: `(q − zero_point) · scale`.
    /// Codes outside `[qmin, qmax]` of the format are an error.
    pub fn dequantize_into<T: Int8>(&self, codes: &[T], shape: &[usize], out: &mut [f32]) -> Result<()> {
        self.format.check_code_type::<T>("codes")?;
        let layout = self.layout(shape, "codes", codes.len())?;
        check_out_len("out", out.len(), layout.numel)?;
        self.check_codes(codes)?;
        self.dequantize_layout(&layout, codes, out);
        Ok(())
    }

    /// Dequantizes `codes` into a new vector.
    pub fn dequantize<T: Int8>(&self, codes: &[T], shape: &[usize]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; codes.len()];
        self.dequantize_into(codes, shape, &mut out)?;
        Ok(out)
    }

    fn dequantize_layout<T: Int8>(&self, layout: &Layout, codes: &[T], out: &mut [f32]) {
        DequantizeOp { layout, q: codes, out, scales: &self.scales, zps: &self.zero_points_f }.run();
    }

    fn check_codes<T: Int8>(&self, codes: &[T]) -> Result<()> {
        let (qmin, qmax) = (self.format.qmin(), self.format.qmax());
        if qmin == T::MIN && qmax == T::MAX {
            return Ok(()); // every value of T is a valid code
        }
        match codes.iter().position(|c| !(qmin..=qmax).contains(&c.to_i32())) {
            None => Ok(()),
            Some(i) => Err(Error::InvalidParameter(format!(
                "`codes`: element {i} is {}, outside [{qmin}, {qmax}] of format {}",
                codes[i].to_i32(),
                self.format
            ))),
        }
    }

    /// Quantize then dequantize (`x̂`), with the codes stored in the format's type.
    pub fn fake_quantize(&self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        if self.format.is_signed() {
            self.fake_quantize_as::<i8>(x, shape)
        } else {
            self.fake_quantize_as::<u8>(x, shape)
        }
    }

    fn fake_quantize_as<T: Int8>(&self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let layout = self.layout(shape, "x", x.len())?;
        let mut codes = vec![T::default(); layout.numel];
        self.quantize_layout(&layout, x, &mut codes);
        let mut out = vec![0f32; layout.numel];
        self.dequantize_layout(&layout, &codes, &mut out);
        Ok(out)
    }

    /// The quantization error of `x` under these parameters (MSE, SQNR, max abs error);
    /// `x` must be finite and non-empty.
    pub fn error(&self, x: &[f32], shape: &[usize]) -> Result<ErrorStats> {
        metrics::check_finite(x, "x")?;
        let xh = self.fake_quantize(x, shape)?;
        ErrorStats::between(x, &xh)
    }
}

impl<T: Int8> super::Scheme<T> for QuantParams {
    fn quantize_into(&self, x: &[f32], shape: &[usize], codes: &mut [T]) -> Result<()> {
        QuantParams::quantize_into(self, x, shape, codes)
    }

    fn dequantize_into(&self, codes: &[T], shape: &[usize], out: &mut [f32]) -> Result<()> {
        QuantParams::dequantize_into(self, codes, shape, out)
    }
}

fn check_out_len(what: &'static str, got: usize, needed: usize) -> Result<()> {
    if got < needed {
        Err(Error::BufferTooSmall { what, needed, got })
    } else if got > needed {
        Err(Error::ShapeMismatch(format!("`{what}` has {got} elements, the shape has {needed}")))
    } else {
        Ok(())
    }
}

/// (scale, zero point) from a real range, per [`Mapping`].
pub(crate) fn params_from_range(format: IntFormat, mapping: Mapping, min: f32, max: f32) -> Result<(f32, i32)> {
    if !min.is_finite() || !max.is_finite() {
        return Err(Error::InvalidParameter(format!("range bounds must be finite, got min {min}, max {max}")));
    }
    if min > max {
        return Err(Error::InvalidParameter(format!("range `min` {min} is greater than `max` {max}")));
    }
    let (qmin, qmax) = (format.qmin(), format.qmax());
    match mapping {
        Mapping::Affine => {
            let rmin = min.min(0.0);
            let rmax = max.max(0.0);
            let width = if rmax == rmin { 1.0 } else { rmax - rmin };
            if !width.is_finite() {
                return Err(Error::InvalidScale {
                    what: "scale derived from range (max − min overflows f32)",
                    value: width as f64,
                });
            }
            let scale = width / (qmax - qmin) as f32;
            check_scale("scale derived from range", scale)?;
            let zp = (qmin as f32 - rmin / scale).max(qmin as f32).min(qmax as f32);
            Ok((scale, round_half_even_f32(zp) as i32))
        }
        Mapping::Symmetric => {
            let zp = format.symmetric_zero_point();
            let h = (qmax - zp).min(zp - qmin);
            if h < 1 {
                return Err(Error::InvalidParameter(format!(
                    "symmetric quantization needs at least one level on each side of the zero point; format {format} has none"
                )));
            }
            let absmax = min.abs().max(max.abs());
            let a = if absmax == 0.0 { 1.0 } else { absmax };
            let scale = a / h as f32;
            check_scale("scale derived from range", scale)?;
            Ok((scale, zp))
        }
    }
}

/// A recipe for uniform quantization: format, mapping, granularity, rounding and the
/// calibration that derives the range of every parameter slot from data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformQuantizer {
    format: IntFormat,
    mapping: Mapping,
    granularity: Granularity,
    rounding: Rounding,
    calibration: Calibration,
}

impl UniformQuantizer {
    /// A per-tensor, half-to-even, min-max quantizer for `format` and `mapping`.
    pub fn new(format: IntFormat, mapping: Mapping) -> Self {
        UniformQuantizer {
            format,
            mapping,
            granularity: Granularity::PerTensor,
            rounding: Rounding::HalfEven,
            calibration: Calibration::MinMax,
        }
    }

    /// With another granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// With another rounding rule.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// With another calibration.
    pub fn with_calibration(mut self, calibration: Calibration) -> Self {
        self.calibration = calibration;
        self
    }

    /// The integer format.
    pub fn format(&self) -> IntFormat {
        self.format
    }

    /// The mapping.
    pub fn mapping(&self) -> Mapping {
        self.mapping
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The rounding rule.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// The calibration.
    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    /// Derives parameters from `x` (row-major, `shape`): the calibration gives a range per
    /// slot, [`Mapping`] turns it into a scale and zero point. `x` must be non-empty and
    /// finite.
    pub fn calibrate(&self, x: &[f32], shape: &[usize]) -> Result<QuantParams> {
        self.calibration.validate()?;
        if self.mapping == Mapping::Symmetric {
            // Reject an unusable format before looking at the data.
            params_from_range(self.format, self.mapping, 0.0, 0.0)?;
        }
        let layout = Layout::new(shape, &self.granularity, "x", x.len())?;
        if x.is_empty() {
            return Err(Error::InvalidParameter(format!("calibration needs data; `x` is empty (shape {shape:?})")));
        }
        metrics::check_finite(x, "x")?;
        let np = layout.num_params();
        let mut scales = Vec::with_capacity(np);
        let mut zps = Vec::with_capacity(np);
        let away = self.rounding == Rounding::HalfAway;
        if np == 1 {
            let (s, z) = calibration::calibrate_slice(x, self.format, self.mapping, self.calibration, away)?;
            scales.push(s);
            zps.push(z);
        } else {
            let (values, offsets) = layout.gather(x);
            for p in 0..np {
                let slice = &values[offsets[p]..offsets[p + 1]];
                let (s, z) = calibration::calibrate_slice(slice, self.format, self.mapping, self.calibration, away)?;
                scales.push(s);
                zps.push(z);
            }
        }
        Ok(QuantParams::new_unchecked(self.format, self.granularity, scales, zps).with_rounding(self.rounding))
    }

    /// Calibrates on `x`, then quantizes it.
    pub fn quantize<T: Int8>(&self, x: &[f32], shape: &[usize]) -> Result<QuantizedTensor<T>> {
        self.format.check_code_type::<T>("T")?;
        self.calibrate(x, shape)?.quantize(x, shape)
    }

    /// Calibrates on `x`, quantizes it into `out`, and returns the parameters.
    pub fn quantize_into<T: Int8>(&self, x: &[f32], shape: &[usize], out: &mut [T]) -> Result<QuantParams> {
        self.format.check_code_type::<T>("out")?;
        check_out_len("out", out.len(), numel(shape)?)?;
        let params = self.calibrate(x, shape)?;
        params.quantize_into(x, shape, out)?;
        Ok(params)
    }
}

/// Integer codes with their shape and the parameters that produced them.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor<T> {
    codes: Vec<T>,
    shape: Vec<usize>,
    params: QuantParams,
    layout: Layout,
}

impl<T: Int8> QuantizedTensor<T> {
    /// Wraps existing codes; checks the shape, the parameter count, the storage type and
    /// that every code lies in the format's range.
    pub fn new(codes: Vec<T>, shape: &[usize], params: QuantParams) -> Result<Self> {
        params.format.check_code_type::<T>("codes")?;
        let layout = params.layout(shape, "codes", codes.len())?;
        params.check_codes(&codes)?;
        Ok(QuantizedTensor { codes, shape: shape.to_vec(), params, layout })
    }

    /// The codes, row-major.
    pub fn codes(&self) -> &[T] {
        &self.codes
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The parameters.
    pub fn params(&self) -> &QuantParams {
        &self.params
    }

    /// The real values the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        self.params.dequantize_layout(&self.layout, &self.codes, &mut out);
        out
    }

    /// [`QuantizedTensor::dequantize`] into a caller buffer of exactly the element count.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        check_out_len("out", out.len(), self.codes.len())?;
        self.params.dequantize_layout(&self.layout, &self.codes, out);
        Ok(())
    }

    /// `(codes, shape, params)`.
    pub fn into_parts(self) -> (Vec<T>, Vec<usize>, QuantParams) {
        (self.codes, self.shape, self.params)
    }
}
