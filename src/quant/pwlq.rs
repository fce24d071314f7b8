//! Piecewise-linear quantization (PWLQ), after Fang et al., "Post-Training Piecewise
//! Linear Quantization for Deep Neural Networks" (ECCV 2020).
//!
//! Each parameter slot (normally an output channel) covers `[−m, m]` (`m = max|w|` or a
//! given clip), split at a breakpoint `0 ≤ p ≤ m` into a dense centre `[−p, p]` and two
//! sparse tails. With `Q = 2^(b−1) − 1`:
//!
//! * centre, `|w| ≤ p`: `ŵ = sign · s1 · q`, `s1 = p / Q`, `q ∈ 0..=Q`;
//! * tails, `|w| > p`: `ŵ = sign · (p + s2 · q)`, `s2 = (m − p) / Q`, `q ∈ 0..=Q`.
//!
//! # What `b` counts
//!
//! `b ∈ {4, 6, 8}` is the width of each region's code: a sign and `b − 1` magnitude bits
//! (the issue's and the paper's `s1 = p/(2^(b−1)−1)`). A weight also needs the region bit,
//! so **b-bit PWLQ stores b + 1 bits per weight**: 4-bit PWLQ is 5 bits (31 distinct
//! levels: 15 in the centre, 16 in the tails, ±p appearing in both), 6-bit is 7 bits,
//! 8-bit is 9 bits. Compare it with b-bit uniform quantization as the paper does, but
//! remember the extra bit; the tests print both comparisons.
//!
//! # Codes
//!
//! A quantized weight is an `i16` *level index* `j`, ordered like its value (up to the f32
//! rounding of the boundary level ±p, which centre `±Q` and tail `±(Q+1)` both stand for):
//!
//! * `|j| ≤ Q`: centre, `ŵ = j · s1`;
//! * `Q < |j| ≤ 2Q + 1`: tail with `q = |j| − Q − 1`, `ŵ = sign(j) · (p + q · s2)`.
//!
//! The exact f32 rules ([`quantize_value`], [`dequantize_value`]) are the definitions that
//! every loop and kernel equals bit for bit:
//!
//! * quantize: `a = min(|x|, m)`; if `a ≤ p`: `q = min(rhe(a / s1), Q)` (0 when `s1 = 0`),
//!   `j = ±q`; else `q = min(rhe((a − p) / s2), Q)` (0 when `s2 = 0`), `j = ±(Q + 1 + q)`;
//!   the sign is that of `x < 0`. `rhe` is round half to even; every operation is one
//!   IEEE f32 operation (division, not a reciprocal multiply). Non-finite `x` is rejected
//!   by the public entry points.
//! * dequantize: centre `(j as f32) · s1` (one rounding); tail `p + (q as f32) · s2` — a
//!   multiply then an add, two roundings, **no FMA** — then the sign applied exactly.
//! * `s1 = p / (Q as f32)` and `s2 = (m − p) / (Q as f32)`, computed once in f32 from the
//!   slot's `m` and `p` ([`PwlqChannel::new`]).
//!
//! # Breakpoint
//!
//! [`Breakpoint::Gaussian`] and [`Breakpoint::Laplace`] are the authors' closed forms
//! (constants from their released code, `jun-fang/PWLQ`, `quant/pwlq.py`), in units of the
//! slot's standard deviation `σ` (sample std, `n − 1`, as `torch.std`), `r = m / σ`:
//!
//! * Gaussian: `p = σ · ln(0.86143114 · r + 0.607901097496529)`;
//! * Laplace: `p = σ · (0.80304483 · √r − 0.3166785508381478)`.
//!
//! Both fit the minimiser of the continuous error model `F_c·p² + F_t·(m − p)²` (`F_c`,
//! `F_t` the probability of the centre and the tails). [`Breakpoint::Search`] is the
//! authors' coarse-to-fine search on `p/m`: `0.1, 0.2, …, 0.9`, then ±0.1 around the best
//! in steps of 0.01, then ±0.01 in steps of 0.001, keeping the smallest summed squared
//! error of the actual b-bit quantizer (ties keep the earlier candidate).
//!
//! # Packed format
//!
//! [`PwlqPacked`] stores a rank-2 weight tensor channel by channel; see its docs for the
//! byte layout. [`gemm_exact_ref`] is the scalar reference of the fused "exact mode" GEMM
//! (three integer dot products combined in f32); [`combine_exact`] is its f32 formula.
//!
//! # Grid-aligned PWLQ
//!
//! [`PwlqParams::snap_to_grid`] moves `p/m` to a ratio `i/(i+j)` so that `s1 = i·g` and
//! `s2 = j·g` share a grid `g`: every level is then an integer `L` times `g`, and 4-bit
//! PWLQ becomes a 32-entry int8 codebook (at most 29 distinct levels). It reports the MSE
//! the snapping costs.

mod kernels;

pub use kernels::{PwlqGemmWeights, dequant_kernel_name, fused_kernel_name_for};

use std::borrow::Cow;

use qkern_kernels::Int8;
use qkern_kernels::reference::round_half_even_f32;
use rayon::prelude::*;

use super::layout::{Layout, Run};
use super::metrics::{self, ErrorStats};
use super::uniform::Granularity;
use crate::error::{Error, Result, check_matrix, check_scale};
use crate::gemm::{Activations, MatrixMut, MatrixRef};

/// Gaussian closed form: slope inside the logarithm (authors' code).
pub const GAUSSIAN_COEF: f64 = 0.86143114;
/// Gaussian closed form: intercept inside the logarithm (authors' code).
pub const GAUSSIAN_INTERCEPT: f64 = 0.607901097496529;
/// Laplace closed form: slope of `√(m/σ)` (authors' code).
pub const LAPLACE_COEF: f64 = 0.80304483;
/// Laplace closed form: intercept (authors' code).
pub const LAPLACE_INTERCEPT: f64 = -0.3166785508381478;

/// Weights per block of the packed format (see [`PwlqPacked`]).
pub const PWLQ_BLOCK: usize = 64;

/// The largest ratio denominator `i + j` grid alignment considers (it bounds the
/// candidate list to about 320 000 ratios).
pub const GRID_MAX_DENOMINATOR: u32 = 1024;

/// `Q = 2^(b−1) − 1`, the largest magnitude code of b-bit PWLQ; `bits` must be 4, 6 or 8.
pub fn max_magnitude(bits: u32) -> Result<i16> {
    match bits {
        4 | 6 | 8 => Ok(((1u32 << (bits - 1)) - 1) as i16),
        5 | 7 => Err(Error::InvalidParameter(format!(
            "PWLQ `bits` must be 4, 6 or 8 (sign + magnitude per region; the region bit comes on top), got {bits}"
        ))),
        _ => Err(Error::InvalidBits { bits, min: 4, max: 8 }),
    }
}

// ---------------------------------------------------------------------------------------
// The scalar definitions
// ---------------------------------------------------------------------------------------

/// The f32 parameters of one slot: range `m`, breakpoint `p` and the two steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PwlqChannel {
    /// Half-range: values are clipped to `[−m, m]`.
    pub m: f32,
    /// Breakpoint, `0 ≤ p ≤ m`.
    pub p: f32,
    /// Centre step `p / Q`.
    pub s1: f32,
    /// Tail step `(m − p) / Q`.
    pub s2: f32,
}

impl PwlqChannel {
    /// The slot of b-bit PWLQ with range `m` (finite, ≥ 0) and breakpoint `p` (`0 ≤ p ≤ m`);
    /// the steps are derived in f32: `s1 = p / Q`, `s2 = (m − p) / Q`.
    pub fn new(bits: u32, m: f32, p: f32) -> Result<Self> {
        let q = max_magnitude(bits)?;
        if !(m.is_finite() && m >= 0.0) {
            return Err(Error::InvalidParameter(format!("PWLQ range `m` must be finite and ≥ 0, got {m}")));
        }
        if !(p.is_finite() && (0.0..=m).contains(&p)) {
            return Err(Error::InvalidParameter(format!("PWLQ breakpoint `p` must lie in [0, m] = [0, {m}], got {p}")));
        }
        Ok(Self::derive(q, m, p))
    }

    /// Steps from validated `m` and `p`. `m − p ≥ 0` in f32 whenever `p ≤ m`.
    fn derive(q: i16, m: f32, p: f32) -> Self {
        let qf = q as f32;
        PwlqChannel { m, p, s1: p / qf, s2: (m - p) / qf }
    }
}

/// Quantizes one value to its level index (the definition; see the module docs).
///
/// `x` should be finite (the public entry points reject the rest; here NaN gives a
/// meaningless but non-panicking code).
#[inline]
pub fn quantize_value(x: f32, q_max: i16, ch: &PwlqChannel) -> i16 {
    let a = x.abs().min(ch.m);
    let qf = q_max as f32;
    let level = if a <= ch.p {
        if ch.s1 > 0.0 { round_half_even_f32(a / ch.s1).min(qf) as i16 } else { 0 }
    } else {
        let q = if ch.s2 > 0.0 { round_half_even_f32((a - ch.p) / ch.s2).min(qf) as i16 } else { 0 };
        q_max + 1 + q
    };
    if x < 0.0 { -level } else { level }
}

/// Dequantizes one level index (the definition; see the module docs). Codes with
/// `|code| > 2·q_max + 1` are not valid; they give a meaningless but non-panicking value.
#[inline]
pub fn dequantize_value(code: i16, q_max: i16, ch: &PwlqChannel) -> f32 {
    let mag = code.unsigned_abs() as i32;
    let qm = q_max as i32;
    if mag <= qm {
        code as f32 * ch.s1
    } else {
        let t = ch.p + (mag - qm - 1) as f32 * ch.s2;
        if code < 0 { -t } else { t }
    }
}

/// The integer parts of a level index for the exact-mode GEMM, `ŵ = s1·c + s2·t + p·s`:
/// `(c, t, s)` = `(j, 0, 0)` in the centre, `(0, ±q, ±1)` in a tail.
#[inline]
pub fn decompose(code: i16, q_max: i16) -> (i32, i32, i32) {
    let mag = code.unsigned_abs() as i32;
    let qm = q_max as i32;
    if mag <= qm {
        (code as i32, 0, 0)
    } else {
        let sign = if code < 0 { -1 } else { 1 };
        (0, sign * (mag - qm - 1), sign)
    }
}

/// The three exact dot products of one output of the exact-mode GEMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DotTriple {
    /// `Σ_k (a − za) · c_k`, centre codes.
    pub centre: i64,
    /// `Σ_k (a − za) · t_k`, signed tail codes.
    pub tail: i64,
    /// `Σ_k (a − za) · s_k`, tail signs (±1 in a tail, 0 in the centre).
    pub tail_sign: i64,
}

/// The f32 epilogue of the exact-mode GEMM — **the definition every kernel matches bit
/// for bit**:
///
/// ```text
/// y = fl( fl( fl(s1·Dc) + fl(s2·Dt) ) + fl(p·Ds) )      Dc, Dt, Ds converted i64 → f32 (RNE)
/// y = fl(y · sa)                                      activation scale
/// y = fl(y + bias)                                    only when a bias is given
/// ```
///
/// Every `fl` is one IEEE f32 operation, round to nearest even, in exactly this order,
/// with no FMA. The dots are the exact i64 totals over the whole K (any K: no i32 bound),
/// and each is converted to f32 **once**, round to nearest even (exact up to 2^24 in
/// magnitude, then the nearest multiple of the f32 spacing; e.g. `i32::MAX` → 2^31) —
/// never as a sum of per-chunk conversions. For a dot that fits i32 this is the same
/// rounding of the same integer as i32 → f32 (`cvtdq2ps`/`scvtf`), so the result is
/// bit-identical to combining i32 dots.
#[inline]
pub fn combine_exact(d: DotTriple, ch: &PwlqChannel, sa: f32, bias: Option<f32>) -> f32 {
    let c = ch.s1 * d.centre as f32;
    let t = ch.s2 * d.tail as f32;
    let s = ch.p * d.tail_sign as f32;
    let y = ((c + t) + s) * sa;
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

// ---------------------------------------------------------------------------------------
// Breakpoints
// ---------------------------------------------------------------------------------------

/// How the breakpoint `p` of each slot is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Breakpoint {
    /// The Gaussian closed form (see the module docs).
    #[default]
    Gaussian,
    /// The Laplace closed form.
    Laplace,
    /// Coarse-to-fine search on `p/m` minimising the squared error.
    Search,
    /// A fixed ratio `p/m ∈ [0, 1]` for every slot.
    Ratio(f32),
}

impl Breakpoint {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Breakpoint::Ratio(r) if !(0.0..=1.0).contains(&r) => {
                Err(Error::InvalidParameter(format!("breakpoint ratio `p/m` must be in [0, 1], got {r}")))
            }
            _ => Ok(()),
        }
    }
}

/// The Gaussian closed-form breakpoint for range `m` and standard deviation `sigma`,
/// clamped to `[0, m]`. `m ≤ 0` (or NaN) gives 0; `sigma ≤ 0` (a constant slot) gives `m`.
pub fn gaussian_breakpoint(m: f64, sigma: f64) -> f64 {
    closed_form(m, sigma, |r| (GAUSSIAN_COEF * r + GAUSSIAN_INTERCEPT).ln())
}

/// The Laplace closed-form breakpoint, same conventions as [`gaussian_breakpoint`].
pub fn laplace_breakpoint(m: f64, sigma: f64) -> f64 {
    closed_form(m, sigma, |r| LAPLACE_COEF * r.sqrt() + LAPLACE_INTERCEPT)
}

fn closed_form(m: f64, sigma: f64, f: impl Fn(f64) -> f64) -> f64 {
    if m.is_nan() || m <= 0.0 {
        return 0.0;
    }
    let r = m / sigma;
    if sigma.is_nan() || sigma <= 0.0 || !r.is_finite() {
        return m;
    }
    let p = sigma * f(r);
    if p.is_nan() { m } else { p.clamp(0.0, m) }
}

/// Sample standard deviation (`n − 1`, around the mean) in f64; 0 for fewer than 2 values.
fn std_dev(v: &[f32]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let ss = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>();
    (ss / (n - 1.0)).sqrt()
}

fn abs_max(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, &x| a.max(x.abs()))
}

/// A breakpoint computed in f64, as an f32 in `[0, m]`.
fn p_in_range(m: f32, p: f64) -> f32 {
    let p = p as f32;
    if p.is_nan() { m } else { p.clamp(0.0, m) }
}

/// `p = m · r / 1000` for a ratio in thousandths.
fn p_from_milli(m: f32, r: u32) -> f32 {
    p_in_range(m, m as f64 * r as f64 / 1000.0)
}

/// `Σ (x − x̂)²` of one slot, in f64, in order.
fn slot_sse(v: &[f32], q: i16, ch: &PwlqChannel) -> f64 {
    v.iter()
        .map(|&x| {
            let d = x as f64 - dequantize_value(quantize_value(x, q, ch), q, ch) as f64;
            d * d
        })
        .fold(0.0, |s, d| s + d)
}

/// The coarse-to-fine search: `(ratio in thousandths, p)`.
fn search(v: &[f32], q: i16, m: f32) -> (u32, f32) {
    let eval = |r: u32| slot_sse(v, q, &PwlqChannel::derive(q, m, p_from_milli(m, r)));
    let mut best = (u32::MAX, f64::INFINITY);
    let consider = |r: u32, best: &mut (u32, f64)| {
        let e = eval(r);
        if e < best.1 {
            *best = (r, e);
        }
    };
    for r in (100..=900).step_by(100) {
        consider(r, &mut best);
    }
    for (half, step) in [(100u32, 10usize), (10, 1)] {
        let c = best.0;
        for r in (c.saturating_sub(half)..=(c + half).min(1000)).step_by(step) {
            consider(r, &mut best);
        }
    }
    (best.0, p_from_milli(m, best.0))
}

/// The search breakpoint of one slot's values for b-bit PWLQ with range `m` (see
/// [`Breakpoint::Search`]). `values` must be finite; `m` finite and ≥ 0.
pub fn search_breakpoint(values: &[f32], bits: u32, m: f32) -> Result<f32> {
    let q = max_magnitude(bits)?;
    metrics::check_finite(values, "values")?;
    PwlqChannel::new(bits, m, 0.0)?;
    Ok(search(values, q, m).1)
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

/// Validated PWLQ parameters: a bit width, a granularity and one [`PwlqChannel`] per slot.
#[derive(Clone, Debug, PartialEq)]
pub struct PwlqParams {
    bits: u32,
    q_max: i16,
    granularity: Granularity,
    channels: Vec<PwlqChannel>,
}

impl PwlqParams {
    /// Parameters given directly: one range `m[i]` and breakpoint `p[i]` per slot (same
    /// length, non-empty; exactly one for [`Granularity::PerTensor`]; the count is checked
    /// against the shape when used). See [`PwlqChannel::new`] for the per-slot rules.
    pub fn new(bits: u32, granularity: Granularity, m: Vec<f32>, p: Vec<f32>) -> Result<Self> {
        let q_max = max_magnitude(bits)?;
        if m.is_empty() {
            return Err(Error::InvalidParameter("`m` is empty; at least one slot is needed".into()));
        }
        if m.len() != p.len() {
            return Err(Error::ShapeMismatch(format!("`m` has {} entries but `p` has {}", m.len(), p.len())));
        }
        if granularity == Granularity::PerTensor && m.len() != 1 {
            return Err(Error::ShapeMismatch(format!("per-tensor PWLQ needs exactly one slot, got {}", m.len())));
        }
        if let Granularity::PerGroup { group_size: 0, .. } = granularity {
            return Err(Error::InvalidParameter("per-group `group_size` must be at least 1".into()));
        }
        let channels = m.iter().zip(&p).map(|(&m, &p)| PwlqChannel::new(bits, m, p)).collect::<Result<Vec<_>>>()?;
        Ok(PwlqParams { bits, q_max, granularity, channels })
    }

    /// The bit width `b` (4, 6 or 8; b + 1 bits are stored per weight).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// `Q = 2^(b−1) − 1`.
    pub fn q_max(&self) -> i16 {
        self.q_max
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The per-slot parameters, in the slot order of [`Granularity`].
    pub fn channels(&self) -> &[PwlqChannel] {
        &self.channels
    }

    /// The breakpoint ratios `p/m` (0 for a slot with `m = 0`).
    pub fn ratios(&self) -> Vec<f64> {
        self.channels.iter().map(|c| if c.m > 0.0 { c.p as f64 / c.m as f64 } else { 0.0 }).collect()
    }

    fn layout(&self, shape: &[usize], what: &'static str, len: usize) -> Result<Layout> {
        let layout = Layout::new(shape, &self.granularity, what, len)?;
        let need = layout.num_params();
        if need != self.channels.len() {
            return Err(Error::ShapeMismatch(format!(
                "{:?} over shape {shape:?} needs {need} PWLQ slots, the parameters have {}",
                self.granularity,
                self.channels.len()
            )));
        }
        Ok(layout)
    }

    /// Quantizes `x` (row-major, `shape`, finite) into level indices `codes`.
    pub fn quantize_into(&self, x: &[f32], shape: &[usize], codes: &mut [i16]) -> Result<()> {
        let layout = self.layout(shape, "x", x.len())?;
        check_len("codes", codes.len(), layout.numel)?;
        metrics::check_finite(x, "x")?;
        self.quantize_layout(&layout, x, codes);
        Ok(())
    }

    /// Quantizes `x` (finite) into a new [`PwlqTensor`].
    pub fn quantize(&self, x: &[f32], shape: &[usize]) -> Result<PwlqTensor> {
        let layout = self.layout(shape, "x", x.len())?;
        metrics::check_finite(x, "x")?;
        let mut codes = vec![0i16; layout.numel];
        self.quantize_layout(&layout, x, &mut codes);
        Ok(PwlqTensor { codes, shape: shape.to_vec(), params: self.clone(), layout })
    }

    fn quantize_layout(&self, layout: &Layout, x: &[f32], codes: &mut [i16]) {
        let q = self.q_max;
        for_each_element(layout, |i, s| codes[i] = quantize_value(x[i], q, &self.channels[s]));
    }

    /// Dequantizes level indices (`|code| ≤ 2Q + 1`, else an error) into `out`.
    pub fn dequantize_into(&self, codes: &[i16], shape: &[usize], out: &mut [f32]) -> Result<()> {
        let layout = self.layout(shape, "codes", codes.len())?;
        check_len("out", out.len(), layout.numel)?;
        self.check_codes(codes)?;
        self.dequantize_layout(&layout, codes, out);
        Ok(())
    }

    /// Dequantizes level indices into a new vector.
    pub fn dequantize(&self, codes: &[i16], shape: &[usize]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; codes.len()];
        self.dequantize_into(codes, shape, &mut out)?;
        Ok(out)
    }

    fn dequantize_layout(&self, layout: &Layout, codes: &[i16], out: &mut [f32]) {
        let q = self.q_max;
        for_each_element(layout, |i, s| out[i] = dequantize_value(codes[i], q, &self.channels[s]));
    }

    fn check_codes(&self, codes: &[i16]) -> Result<()> {
        let lim = 2 * self.q_max as u16 + 1;
        match codes.iter().position(|c| c.unsigned_abs() > lim) {
            None => Ok(()),
            Some(i) => Err(Error::InvalidParameter(format!(
                "`codes`: element {i} is {}, outside ±{lim} of {}-bit PWLQ",
                codes[i], self.bits
            ))),
        }
    }

    /// Quantize then dequantize `x` (finite).
    pub fn fake_quantize(&self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.quantize(x, shape)?;
        Ok(t.dequantize())
    }

    /// The quantization error of `x` (finite, non-empty) under these parameters.
    pub fn error(&self, x: &[f32], shape: &[usize]) -> Result<ErrorStats> {
        let xh = self.fake_quantize(x, shape)?;
        ErrorStats::between(x, &xh)
    }
}

impl super::Scheme<i16> for PwlqParams {
    fn quantize_into(&self, x: &[f32], shape: &[usize], codes: &mut [i16]) -> Result<()> {
        PwlqParams::quantize_into(self, x, shape, codes)
    }

    fn dequantize_into(&self, codes: &[i16], shape: &[usize], out: &mut [f32]) -> Result<()> {
        PwlqParams::dequantize_into(self, codes, shape, out)
    }
}

fn for_each_element(layout: &Layout, mut f: impl FnMut(usize, usize)) {
    for run in layout.runs() {
        match run {
            Run::Uniform { start, len, p } => (start..start + len).for_each(|i| f(i, p)),
            Run::Varying { start, len, p0 } => (0..len).for_each(|j| f(start + j, p0 + j)),
        }
    }
}

fn check_len(what: &'static str, got: usize, needed: usize) -> Result<()> {
    if got < needed {
        Err(Error::BufferTooSmall { what, needed, got })
    } else if got > needed {
        Err(Error::ShapeMismatch(format!("`{what}` has {got} elements, the shape has {needed}")))
    } else {
        Ok(())
    }
}

/// The values of each slot: `(values, offsets)` as [`Layout::gather`], without a copy for
/// one slot.
fn slots<'a>(layout: &Layout, x: &'a [f32]) -> (Cow<'a, [f32]>, Vec<usize>) {
    if layout.num_params() == 1 {
        (Cow::Borrowed(x), vec![0, x.len()])
    } else {
        let (v, o) = layout.gather(x);
        (Cow::Owned(v), o)
    }
}

// ---------------------------------------------------------------------------------------
// The quantizer
// ---------------------------------------------------------------------------------------

/// A PWLQ recipe: bit width, granularity, breakpoint rule and optional clip.
#[derive(Clone, Debug, PartialEq)]
pub struct PwlqQuantizer {
    bits: u32,
    granularity: Granularity,
    breakpoint: Breakpoint,
    clip: Option<Vec<f32>>,
}

impl PwlqQuantizer {
    /// b-bit PWLQ (checked when used), per tensor, `m = max|w|`.
    pub fn new(bits: u32, breakpoint: Breakpoint) -> Self {
        PwlqQuantizer { bits, granularity: Granularity::PerTensor, breakpoint, clip: None }
    }

    /// With another granularity (normally [`Granularity::PerChannel`] on the output axis).
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// With given clips `m` instead of `max|w|`: one for every slot, or one per slot (each
    /// finite and ≥ 0). The closed forms still use the slot's own `σ`.
    pub fn with_clip(mut self, clip: Vec<f32>) -> Self {
        self.clip = Some(clip);
        self
    }

    /// The bit width.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The breakpoint rule.
    pub fn breakpoint(&self) -> Breakpoint {
        self.breakpoint
    }

    /// Derives parameters from `x` (row-major, `shape`, non-empty, finite).
    pub fn calibrate(&self, x: &[f32], shape: &[usize]) -> Result<PwlqParams> {
        let q = max_magnitude(self.bits)?;
        self.breakpoint.validate()?;
        let layout = Layout::new(shape, &self.granularity, "x", x.len())?;
        if x.is_empty() {
            return Err(Error::InvalidParameter(format!(
                "PWLQ calibration needs data; `x` is empty (shape {shape:?})"
            )));
        }
        metrics::check_finite(x, "x")?;
        let np = layout.num_params();
        if let Some(c) = &self.clip {
            if c.len() != 1 && c.len() != np {
                return Err(Error::ShapeMismatch(format!(
                    "`clip` has {} entries; give 1 or one per slot ({np})",
                    c.len()
                )));
            }
            if let Some(&bad) = c.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::InvalidParameter(format!("`clip` values must be finite and ≥ 0, got {bad}")));
            }
        }
        let (vals, offs) = slots(&layout, x);
        let channels: Vec<PwlqChannel> = (0..np)
            .into_par_iter()
            .map(|s| {
                let v = &vals[offs[s]..offs[s + 1]];
                let m = match &self.clip {
                    Some(c) => c[if c.len() == 1 { 0 } else { s }],
                    None => abs_max(v),
                };
                let p = match self.breakpoint {
                    Breakpoint::Gaussian => p_in_range(m, gaussian_breakpoint(m as f64, std_dev(v))),
                    Breakpoint::Laplace => p_in_range(m, laplace_breakpoint(m as f64, std_dev(v))),
                    Breakpoint::Ratio(r) => p_in_range(m, m as f64 * r as f64),
                    Breakpoint::Search => search(v, q, m).1,
                };
                PwlqChannel::derive(q, m, p)
            })
            .collect();
        Ok(PwlqParams { bits: self.bits, q_max: q, granularity: self.granularity, channels })
    }

    /// Calibrates on `x`, then quantizes it.
    pub fn quantize(&self, x: &[f32], shape: &[usize]) -> Result<PwlqTensor> {
        self.calibrate(x, shape)?.quantize(x, shape)
    }
}

// ---------------------------------------------------------------------------------------
// Quantized tensors
// ---------------------------------------------------------------------------------------

/// PWLQ level indices with their shape and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PwlqTensor {
    codes: Vec<i16>,
    shape: Vec<usize>,
    params: PwlqParams,
    layout: Layout,
}

impl PwlqTensor {
    /// Wraps existing codes; checks the shape, the slot count and the code range.
    pub fn new(codes: Vec<i16>, shape: &[usize], params: PwlqParams) -> Result<Self> {
        let layout = params.layout(shape, "codes", codes.len())?;
        params.check_codes(&codes)?;
        Ok(PwlqTensor { codes, shape: shape.to_vec(), params, layout })
    }

    /// The level indices, row-major.
    pub fn codes(&self) -> &[i16] {
        &self.codes
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The parameters.
    pub fn params(&self) -> &PwlqParams {
        &self.params
    }

    /// The real values the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        self.params.dequantize_layout(&self.layout, &self.codes, &mut out);
        out
    }

    /// `(codes, shape, params)`.
    pub fn into_parts(self) -> (Vec<i16>, Vec<usize>, PwlqParams) {
        (self.codes, self.shape, self.params)
    }

    /// The packed form (rank 2, per channel on axis 0 or 1; see [`PwlqPacked`]).
    pub fn pack(&self) -> Result<PwlqPacked> {
        PwlqPacked::from_tensor(self)
    }

    /// `(channels, k, channel_axis)` of a rank-2 per-channel tensor.
    fn matrix_dims(&self, what: &str) -> Result<(usize, usize, usize)> {
        match (self.shape.as_slice(), self.params.granularity) {
            (&[r, c], Granularity::PerChannel { axis: 0 }) => Ok((r, c, 0)),
            (&[r, c], Granularity::PerChannel { axis: 1 }) => Ok((c, r, 1)),
            _ => Err(Error::Unsupported(format!(
                "{what} needs a rank-2 tensor quantized per channel on axis 0 or 1; got shape {:?}, {:?}",
                self.shape, self.params.granularity
            ))),
        }
    }

    /// Bias correction: the per-channel shift `δ[n] = Σ_k μ_k · (w[k][n] − ŵ[k][n])` that,
    /// added to the layer's bias, cancels the expected output error for inputs of mean `μ`
    /// (`E[Σ a·w] − E[Σ a·ŵ] = Σ μ·(w − ŵ)`). `x` is the original weight tensor (same shape,
    /// finite); `input_mean` has one entry per input feature `k` (the non-channel axis) or
    /// one for all. Sums in f64, result rounded to f32.
    pub fn bias_correction(&self, x: &[f32], input_mean: &[f32]) -> Result<Vec<f32>> {
        let (n, k, axis) = self.matrix_dims("bias correction")?;
        if x.len() != self.codes.len() {
            return Err(Error::ShapeMismatch(format!(
                "`x` has {} elements, the quantized tensor {}",
                x.len(),
                self.codes.len()
            )));
        }
        metrics::check_finite(x, "x")?;
        metrics::check_finite(input_mean, "input_mean")?;
        if input_mean.len() != k && input_mean.len() != 1 {
            return Err(Error::ShapeMismatch(format!(
                "`input_mean` has {} entries; give 1 or one per input feature ({k})",
                input_mean.len()
            )));
        }
        let xh = self.dequantize();
        let mut delta = vec![0f64; n];
        for kk in 0..k {
            let mu = input_mean[if input_mean.len() == 1 { 0 } else { kk }] as f64;
            for (c, d) in delta.iter_mut().enumerate() {
                let i = if axis == 1 { kk * n + c } else { c * k + kk };
                *d += mu * (x[i] as f64 - xh[i] as f64);
            }
        }
        Ok(delta.into_iter().map(|d| d as f32).collect())
    }

    /// `bias + δ` (see [`PwlqTensor::bias_correction`]); a missing bias is zero.
    pub fn corrected_bias(&self, x: &[f32], input_mean: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let delta = self.bias_correction(x, input_mean)?;
        match bias {
            None => Ok(delta),
            Some(b) if b.len() != delta.len() => Err(Error::ShapeMismatch(format!(
                "`bias` has {} entries, the tensor has {} channels",
                b.len(),
                delta.len()
            ))),
            Some(b) => Ok(b.iter().zip(&delta).map(|(&b, &d)| b + d).collect()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Packed format
// ---------------------------------------------------------------------------------------

/// The code field of a level index: `region·2^b | sign·2^(b−1) | magnitude`.
#[inline]
fn code_to_field(code: i16, q: i16, bits: u32) -> u16 {
    let mag = code.unsigned_abs();
    let (region, m) = if mag <= q as u16 { (0u16, mag) } else { (1, mag - q as u16 - 1) };
    (region << bits) | (((code < 0) as u16) << (bits - 1)) | m
}

#[inline]
fn field_to_code(f: u16, q: i16, bits: u32) -> i16 {
    let mag = (f & ((1 << (bits - 1)) - 1)) as i16;
    let level = if (f >> bits) & 1 == 1 { q + 1 + mag } else { mag };
    if (f >> (bits - 1)) & 1 == 1 { -level } else { level }
}

/// PWLQ weights packed for the kernels: one row of codes per output channel.
///
/// A weight's *code field* is the (b+1)-bit integer
/// `f = region·2^b | sign·2^(b−1) | magnitude` (region 1 = tail; magnitude `q ∈ 0..=Q`;
/// in the centre `q = 0` always has sign 0). Within a channel, the `K` weights are cut into
/// blocks of [`PWLQ_BLOCK`] = 64; the last block is padded with zero fields (which decode
/// to 0.0 and add nothing to any dot product, so a kernel may run whole blocks if its
/// activations are zero-padded too).
///
/// * **b = 4** (5-bit fields): *value plane* of 32 bytes per block; byte `i` (0..32) of
///   block `kb` holds the low nibble `f & 0xF` of weight `64·kb + i` in bits 0–3 and that of
///   weight `64·kb + 32 + i` in bits 4–7 (so `v & 0x0F` of a 32-byte load gives weights
///   0..32 in order and `v >> 4` weights 32..64 — one AND and one shift, no shuffle; the
///   nibble, `sign·8 | q`, indexes a 16-entry `pshufb`/`tbl` table). *Region plane*: one
///   `u64` per block, bit `i` = region of weight `64·kb + i` (an AVX-512 mask as is; AVX2 /
///   NEON expand it with the usual broadcast-shuffle-test).
/// * **b = 6** (7-bit fields): value plane of 64 bytes per block, byte `i` = `f` of weight
///   `64·kb + i` (bit 7 zero); no region plane — the region is bit 6. The byte indexes a
///   128-entry table directly.
/// * **b = 8** (9-bit fields): value plane of 64 bytes per block, byte `i` = `f & 0xFF`
///   (`sign·128 | q`, so the sign is the i8 sign bit); region plane as for b = 4.
///
/// Channel `n`'s value row starts at byte `n · blocks · (32 or 64)` and its region words at
/// word `n · blocks`, `blocks = ⌈K / 64⌉`. Region words are native `u64`s; as bytes they
/// are little-endian on every target qkern supports. Per channel: `m`, `p`, `s1`, `s2`
/// (f32, see [`PwlqChannel`]). Codebook-style kernels index a `2^(b+1)`-entry table by `f`.
#[derive(Clone, Debug, PartialEq)]
pub struct PwlqPacked {
    bits: u32,
    q_max: i16,
    n: usize,
    k: usize,
    channel_axis: usize,
    values: Vec<u8>,
    regions: Vec<u64>,
    channels: Vec<PwlqChannel>,
}

/// The raw parts of a [`PwlqPacked`], for storage and foreign callers.
#[derive(Clone, Debug, PartialEq)]
pub struct PwlqPackedParts {
    /// Bit width b (4, 6, 8).
    pub bits: u32,
    /// Number of channels `N`.
    pub channels: usize,
    /// Weights per channel `K`.
    pub k: usize,
    /// Axis of the unpacked `[rows, cols]` tensor that is the channel: 0 (`[N][K]`) or 1
    /// (`[K][N]`, the GEMM B layout).
    pub channel_axis: usize,
    /// The value plane.
    pub values: Vec<u8>,
    /// The region plane (empty for b = 6).
    pub regions: Vec<u64>,
    /// Per-channel range `m`.
    pub m: Vec<f32>,
    /// Per-channel breakpoint `p`.
    pub p: Vec<f32>,
}

impl PwlqPacked {
    /// Bytes of the value plane per block.
    fn block_bytes(bits: u32) -> usize {
        if bits == 4 { PWLQ_BLOCK / 2 } else { PWLQ_BLOCK }
    }

    /// `(value bytes, region words)` for `n` channels of `k` weights, overflow-checked.
    fn plane_sizes(bits: u32, n: usize, k: usize) -> Result<(usize, usize)> {
        let blocks = k.div_ceil(PWLQ_BLOCK);
        let words = n.checked_mul(blocks);
        let bytes = words.and_then(|w| w.checked_mul(Self::block_bytes(bits)));
        match (bytes, words) {
            (Some(b), Some(w)) => Ok((b, if bits == 6 { 0 } else { w })),
            _ => Err(Error::InvalidParameter(format!("PWLQ packing of {n} channels × {k} weights overflows usize"))),
        }
    }

    /// Packs a rank-2 tensor quantized per channel on axis 0 or 1.
    pub fn from_tensor(t: &PwlqTensor) -> Result<Self> {
        let (n, k, channel_axis) = t.matrix_dims("PWLQ packing")?;
        let bits = t.params.bits;
        let q = t.params.q_max;
        let (nb, nw) = Self::plane_sizes(bits, n, k)?;
        let mut p = PwlqPacked {
            bits,
            q_max: q,
            n,
            k,
            channel_axis,
            values: vec![0u8; nb],
            regions: vec![0u64; nw],
            channels: t.params.channels.clone(),
        };
        for c in 0..n {
            for kk in 0..k {
                let i = if channel_axis == 1 { kk * n + c } else { c * k + kk };
                p.set_field(c, kk, code_to_field(t.codes[i], q, bits));
            }
        }
        Ok(p)
    }

    /// Rebuilds from raw parts, checking everything: sizes, per-channel `m`/`p`, zero
    /// padding, bit 7 clear for b = 6, and canonical zeros (no negative centre zero).
    pub fn from_parts(parts: PwlqPackedParts) -> Result<Self> {
        let PwlqPackedParts { bits, channels: n, k, channel_axis, values, regions, m, p } = parts;
        let q = max_magnitude(bits)?;
        if channel_axis > 1 {
            return Err(Error::InvalidParameter(format!("`channel_axis` must be 0 or 1, got {channel_axis}")));
        }
        let (nb, nw) = Self::plane_sizes(bits, n, k)?;
        if values.len() != nb {
            return Err(Error::ShapeMismatch(format!(
                "`values` has {} bytes, {n}×{k} {bits}-bit PWLQ needs {nb}",
                values.len()
            )));
        }
        if regions.len() != nw {
            return Err(Error::ShapeMismatch(format!(
                "`regions` has {} words, {n}×{k} {bits}-bit PWLQ needs {nw}",
                regions.len()
            )));
        }
        if m.len() != n || p.len() != n {
            return Err(Error::ShapeMismatch(format!(
                "`m` and `p` need one entry per channel ({n}), got {} and {}",
                m.len(),
                p.len()
            )));
        }
        let channels = m.iter().zip(&p).map(|(&m, &p)| PwlqChannel::new(bits, m, p)).collect::<Result<Vec<_>>>()?;
        if let Some(i) = values.iter().position(|&v| v & 0x80 != 0).filter(|_| bits == 6) {
            return Err(Error::InvalidParameter(format!(
                "`values` byte {i} has bit 7 set; 6-bit PWLQ fields are 7 bits"
            )));
        }
        let packed = PwlqPacked { bits, q_max: q, n, k, channel_axis, values, regions, channels };
        let blocks = k.div_ceil(PWLQ_BLOCK);
        let neg_zero = 1u16 << (bits - 1);
        for c in 0..n {
            for kk in 0..blocks * PWLQ_BLOCK {
                let f = packed.field(c, kk);
                if kk >= k && f != 0 {
                    return Err(Error::InvalidParameter(format!(
                        "channel {c}: padding position {kk} (K = {k}) holds field {f:#x}; padding must be zero"
                    )));
                }
                if f == neg_zero {
                    return Err(Error::InvalidParameter(format!(
                        "channel {c}, weight {kk}: negative centre zero (field {f:#x}) is not canonical"
                    )));
                }
            }
        }
        Ok(packed)
    }

    /// The raw parts (see [`PwlqPackedParts`]).
    pub fn into_parts(self) -> PwlqPackedParts {
        PwlqPackedParts {
            bits: self.bits,
            channels: self.n,
            k: self.k,
            channel_axis: self.channel_axis,
            values: self.values,
            regions: self.regions,
            m: self.channels.iter().map(|c| c.m).collect(),
            p: self.channels.iter().map(|c| c.p).collect(),
        }
    }

    /// Bit width b.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// `Q = 2^(b−1) − 1`.
    pub fn q_max(&self) -> i16 {
        self.q_max
    }

    /// Number of channels `N`.
    pub fn channels(&self) -> usize {
        self.n
    }

    /// Weights per channel `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Blocks of [`PWLQ_BLOCK`] weights per channel, `⌈K / 64⌉`.
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(PWLQ_BLOCK)
    }

    /// The channel axis of the unpacked tensor (0: `[N][K]`, 1: `[K][N]`).
    pub fn channel_axis(&self) -> usize {
        self.channel_axis
    }

    /// Bytes of one channel's value row.
    pub fn row_bytes(&self) -> usize {
        self.blocks() * Self::block_bytes(self.bits)
    }

    /// The value plane.
    pub fn values(&self) -> &[u8] {
        &self.values
    }

    /// The region plane (empty for b = 6).
    pub fn regions(&self) -> &[u64] {
        &self.regions
    }

    /// Per-channel parameters.
    pub fn channel_params(&self) -> &[PwlqChannel] {
        &self.channels
    }

    fn set_field(&mut self, c: usize, kk: usize, f: u16) {
        let (kb, i) = (kk / PWLQ_BLOCK, kk % PWLQ_BLOCK);
        let blocks = self.blocks();
        let row = c * self.row_bytes();
        match self.bits {
            4 => {
                let byte = row + kb * 32 + i % 32;
                self.values[byte] |= ((f & 0xF) as u8) << (4 * (i / 32));
                self.regions[c * blocks + kb] |= ((f >> 4) as u64 & 1) << i;
            }
            6 => self.values[row + kb * 64 + i] = f as u8,
            _ => {
                self.values[row + kb * 64 + i] = (f & 0xFF) as u8;
                self.regions[c * blocks + kb] |= ((f >> 8) as u64 & 1) << i;
            }
        }
    }

    /// The code field of weight `kk` of channel `c`; positions up to the padded block end
    /// are readable (padding is zero). Out-of-range positions read as 0.
    pub fn field(&self, c: usize, kk: usize) -> u16 {
        if c >= self.n || kk >= self.blocks() * PWLQ_BLOCK {
            return 0;
        }
        let (kb, i) = (kk / PWLQ_BLOCK, kk % PWLQ_BLOCK);
        let blocks = self.blocks();
        let row = c * self.row_bytes();
        match self.bits {
            4 => {
                let nib = (self.values[row + kb * 32 + i % 32] >> (4 * (i / 32))) & 0xF;
                let r = (self.regions[c * blocks + kb] >> i) & 1;
                nib as u16 | (r as u16) << 4
            }
            6 => self.values[row + kb * 64 + i] as u16,
            _ => {
                let r = (self.regions[c * blocks + kb] >> i) & 1;
                self.values[row + kb * 64 + i] as u16 | (r as u16) << 8
            }
        }
    }

    /// The level index of weight `kk` of channel `c` (0 out of range, as [`Self::field`]).
    pub fn code(&self, c: usize, kk: usize) -> i16 {
        field_to_code(self.field(c, kk), self.q_max, self.bits)
    }

    /// Back to a [`PwlqTensor`] of the original orientation.
    pub fn unpack(&self) -> PwlqTensor {
        let (n, k) = (self.n, self.k);
        let shape = if self.channel_axis == 1 { vec![k, n] } else { vec![n, k] };
        let mut codes = vec![0i16; n * k];
        for c in 0..n {
            for kk in 0..k {
                let i = if self.channel_axis == 1 { kk * n + c } else { c * k + kk };
                codes[i] = self.code(c, kk);
            }
        }
        let params = PwlqParams {
            bits: self.bits,
            q_max: self.q_max,
            granularity: Granularity::PerChannel { axis: self.channel_axis },
            channels: self.channels.clone(),
        };
        let layout = Layout::new(&shape, &params.granularity, "codes", codes.len())
            .expect("a packed tensor's own shape is valid");
        PwlqTensor { codes, shape, params, layout }
    }

    /// The scalar reference dequantization, channel-major: `out[n·K + k]` =
    /// [`dequantize_value`] of weight `k` of channel `n`, decoded from the planes. The
    /// SIMD dequant kernels equal it bit for bit.
    pub fn dequantize_channel_major(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for c in 0..self.n {
            let ch = &self.channels[c];
            for kk in 0..self.k {
                out[c * self.k + kk] = dequantize_value(self.code(c, kk), self.q_max, ch);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Exact-mode GEMM reference
// ---------------------------------------------------------------------------------------

/// The three dot products of every output, `rows × cols` row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExactDots {
    /// `M`.
    pub rows: usize,
    /// `N`.
    pub cols: usize,
    /// `dots[m·N + n]`.
    pub dots: Vec<DotTriple>,
}

/// The exact integer dot products of the exact-mode GEMM: for activations `a` (`M × K`,
/// zero point `za`) and packed weights `w` (`N` channels of `K`), `Dc`, `Dt`, `Ds` of
/// every `(m, n)` in i64 (exact for any `K` that fits in memory: `|a − za| ≤ 255`,
/// `|c|, |t| ≤ 127`, so i64 would overflow only past `K ≈ 2.8·10^14`). Every kernel's
/// dots equal these, also past i32.
pub fn gemm_exact_dots_ref<A: Int8>(a: MatrixRef<'_, A>, za: A, w: &PwlqPacked) -> Result<ExactDots> {
    check_matrix("a", a.data.len(), a.rows, a.cols, a.stride)?;
    if a.cols != w.k {
        return Err(Error::ShapeMismatch(format!("`a` has {} columns, the PWLQ weights K = {}", a.cols, w.k)));
    }
    let (m, n, k) = (a.rows, w.n, w.k);
    let za = za.to_i32() as i64;
    let mut dots = vec![DotTriple::default(); m * n];
    let mut parts = vec![(0i64, 0i64, 0i64); k];
    for c in 0..n {
        for (kk, part) in parts.iter_mut().enumerate() {
            let (x, y, z) = decompose(w.code(c, kk), w.q_max);
            *part = (x as i64, y as i64, z as i64);
        }
        for r in 0..m {
            let row = &a.data[r * a.stride..r * a.stride + k];
            let mut d = DotTriple::default();
            for (av, &(x, y, z)) in row.iter().zip(&parts) {
                let v = av.to_i32() as i64 - za;
                d.centre += v * x;
                d.tail += v * y;
                d.tail_sign += v * z;
            }
            dots[r * n + c] = d;
        }
    }
    Ok(ExactDots { rows: m, cols: n, dots })
}

/// The scalar reference of the fused exact-mode PWLQ GEMM:
/// `c[m][n] = Σ_k (a[m][k] − za) · ŵ[k][n] · sa (+ bias[n])`, computed as three exact
/// integer dot products combined by [`combine_exact`] — the definition the SIMD kernels
/// match bit for bit. `c` is `M × N` (N = channels).
pub fn gemm_exact_ref<A: Int8>(
    a: Activations<'_, A>,
    w: &PwlqPacked,
    bias: Option<&[f32]>,
    c: MatrixMut<'_, f32>,
) -> Result<()> {
    check_scale("a.scale", a.scale)?;
    if let Some(b) = bias.filter(|b| b.len() != w.n) {
        return Err(Error::ShapeMismatch(format!("`bias` has {} entries, the weights {} channels", b.len(), w.n)));
    }
    if c.rows != a.matrix.rows || c.cols != w.n {
        return Err(Error::ShapeMismatch(format!(
            "`c` is {}×{}, the product is {}×{}",
            c.rows, c.cols, a.matrix.rows, w.n
        )));
    }
    check_matrix("c", c.data.len(), c.rows, c.cols, c.stride)?;
    let d = gemm_exact_dots_ref(a.matrix, a.zero_point, w)?;
    for r in 0..d.rows {
        for n in 0..d.cols {
            c.data[r * c.stride + n] =
                combine_exact(d.dots[r * d.cols + n], &w.channels[n], a.scale, bias.map(|b| b[n]));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Grid-aligned PWLQ
// ---------------------------------------------------------------------------------------

/// Which slots share a grid ratio `i/(i+j)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GridScope {
    /// Each slot snaps its own ratio: the smallest error, one table per slot.
    #[default]
    PerChannel,
    /// One ratio for the whole tensor (one shared integer table, per-slot scale `g`): what
    /// a codebook GEMM kernel with one table per tensor needs.
    Shared,
}

/// Grid-aligned PWLQ: PWLQ level indices whose values are integers `L` times a per-slot
/// grid `g`.
///
/// With ratio `(i, j)` (`p/m = i/(i+j)`) and `g = m / (Q·(i+j))` (f64 quotient rounded
/// once to f32): centre code `c` has level `L = c·i`, tail code `±(Q+1+q)` has
/// `L = ±(Q·i + q·j)`, and `ŵ = (L as f32) · g` (one rounding). Codes are assigned by
/// [`quantize_value`] with the slot parameters `m' = (Q(i+j))·g`, `p' = (Q·i)·g`,
/// `s1' = i·g`, `s2' = j·g` (each one f32 multiply).
#[derive(Clone, Debug, PartialEq)]
pub struct GridAligned {
    bits: u32,
    q_max: i16,
    granularity: Granularity,
    shape: Vec<usize>,
    ratios: Vec<(u32, u32)>,
    g: Vec<f32>,
    codes: Vec<i16>,
    layout: Layout,
    mse_pwlq: f64,
    mse_grid: f64,
}

/// All reduced ratios `(i, j)`, `i + j ≥ 1`, with `Q·(i+j) ≤ max_level`, by ascending
/// `i/(i+j)`.
fn grid_candidates(q: i16, max_level: i32) -> Vec<(u32, u32)> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let smax = (max_level / q as i32) as u32;
    let mut v: Vec<(u32, u32)> =
        (1..=smax).flat_map(|s| (0..=s).map(move |i| (i, s - i))).filter(|&(i, j)| gcd(i, j) == 1).collect();
    // i1/(s1) < i2/(s2)  ⇔  i1·s2 < i2·s1 (exact in u64).
    v.sort_by(|&(i1, j1), &(i2, j2)| ((i1 as u64) * (i2 + j2) as u64).cmp(&((i2 as u64) * (i1 + j1) as u64)));
    v
}

/// The grid `g` of a slot and the f32 parameters that assign its codes.
fn grid_channel(q: i16, m: f32, (i, j): (u32, u32)) -> (f32, PwlqChannel) {
    let s = q as u32 * (i + j);
    let g = (m as f64 / s as f64) as f32;
    let ch = PwlqChannel { m: s as f32 * g, p: (q as u32 * i) as f32 * g, s1: i as f32 * g, s2: j as f32 * g };
    (g, ch)
}

/// The integer level of a code under ratio `(i, j)`.
fn grid_level(code: i16, q: i16, (i, j): (u32, u32)) -> i32 {
    let (c, t, s) = decompose(code, q);
    c * i as i32 + t * j as i32 + s * q as i32 * i as i32
}

fn grid_sse(v: &[f32], q: i16, m: f32, r: (u32, u32)) -> f64 {
    let (g, ch) = grid_channel(q, m, r);
    v.iter()
        .map(|&x| {
            let xh = grid_level(quantize_value(x, q, &ch), q, r) as f32 * g;
            (x as f64 - xh as f64).powi(2)
        })
        .fold(0.0, |s, d| s + d)
}

/// Indices of the candidates bracketing ratio `r`: the last with ratio ≤ r, the first ≥ r.
/// (Distinct candidates differ by at least 1/1024², far above f64 rounding.)
fn bracket(cands: &[(u32, u32)], r: f64) -> (usize, usize) {
    let ratio = |&(i, j): &(u32, u32)| i as f64 / (i + j) as f64;
    let lo = cands.partition_point(|c| ratio(c) <= r).saturating_sub(1);
    let hi = cands.partition_point(|c| ratio(c) < r).min(cands.len() - 1);
    (lo, hi)
}

/// The candidate index in `from..=to` with the smallest `err` (ties: the smaller index).
/// Exhaustive when at most 64 candidates remain; otherwise 33 evenly spaced candidates,
/// then the same search between the neighbours of the best of them — the total error is
/// a sum of near-quadratic slot errors, smooth in the ratio at that scale.
fn coarse_to_fine(mut from: usize, mut to: usize, err: impl Fn(usize) -> f64 + Sync) -> usize {
    loop {
        let picks: Vec<usize> = if to - from < 64 {
            (from..=to).collect()
        } else {
            let mut v: Vec<usize> = (0..=32).map(|t| from + (to - from) * t / 32).collect();
            v.dedup();
            v
        };
        let errs: Vec<f64> = picks.par_iter().map(|&c| err(c)).collect();
        let mut best = 0;
        for (i, e) in errs.iter().enumerate() {
            if *e < errs[best] {
                best = i;
            }
        }
        if to - from < 64 {
            return picks[best];
        }
        from = picks[best.saturating_sub(1)];
        to = picks[(best + 1).min(picks.len() - 1)];
    }
}

impl PwlqParams {
    /// Grid-aligned PWLQ of `x` (the data these parameters were made for; finite,
    /// non-empty): each slot's `p/m` moves to a reduced ratio `i/(i+j)` with integer
    /// levels `|L| ≤ Q·(i+j) ≤ max_level` (`Q ≤ max_level ≤ min(32767,`
    /// [`GRID_MAX_DENOMINATOR`]`·Q)`; 127 for an int8 table, 64 for one that AVX2
    /// `vpmaddubsw` may use with u8 activations).
    ///
    /// [`GridScope::PerChannel`] tries the two candidates bracketing the slot's own ratio
    /// and keeps the one with the smaller squared error (ties: the smaller ratio);
    /// [`GridScope::Shared`] searches the candidates from the one bracketing the smallest
    /// slot ratio below to the one bracketing the largest above for the smallest total
    /// error — exhaustively when at most 64, else coarse to fine (33 evenly spaced, then
    /// between the best one's neighbours). A slot with `m = 0` keeps `g = 0`.
    pub fn snap_to_grid(&self, x: &[f32], shape: &[usize], scope: GridScope, max_level: i32) -> Result<GridAligned> {
        let q = self.q_max;
        let top = (i16::MAX as i32).min(q as i32 * GRID_MAX_DENOMINATOR as i32);
        if !(q as i32..=top).contains(&max_level) {
            return Err(Error::InvalidParameter(format!(
                "`max_level` must be in [Q, min(32767, {GRID_MAX_DENOMINATOR}·Q)] = [{q}, {top}] for {}-bit PWLQ, got {max_level}",
                self.bits
            )));
        }
        let layout = self.layout(shape, "x", x.len())?;
        if x.is_empty() {
            return Err(Error::InvalidParameter("grid alignment needs data; `x` is empty".into()));
        }
        metrics::check_finite(x, "x")?;
        let cands = grid_candidates(q, max_level);
        let (vals, offs) = slots(&layout, x);
        let slot = |s: usize| &vals[offs[s]..offs[s + 1]];
        let np = self.channels.len();
        let live: Vec<usize> = (0..np).filter(|&s| self.channels[s].m > 0.0).collect();
        let ratio_of = |s: usize| self.channels[s].p as f64 / self.channels[s].m as f64;
        let zero_ratio = (1u32, 0u32);
        let ratios: Vec<(u32, u32)> = match scope {
            GridScope::PerChannel => (0..np)
                .into_par_iter()
                .map(|s| {
                    let ch = &self.channels[s];
                    if ch.m <= 0.0 {
                        return zero_ratio;
                    }
                    let (lo, hi) = bracket(&cands, ratio_of(s));
                    let e_lo = grid_sse(slot(s), q, ch.m, cands[lo]);
                    let e_hi = if hi == lo { f64::INFINITY } else { grid_sse(slot(s), q, ch.m, cands[hi]) };
                    if e_hi < e_lo { cands[hi] } else { cands[lo] }
                })
                .collect(),
            GridScope::Shared => {
                let r = if live.is_empty() {
                    zero_ratio
                } else {
                    let rmin = live.iter().map(|&s| ratio_of(s)).fold(f64::INFINITY, f64::min);
                    let rmax = live.iter().map(|&s| ratio_of(s)).fold(f64::NEG_INFINITY, f64::max);
                    let (from, _) = bracket(&cands, rmin);
                    let (_, to) = bracket(&cands, rmax);
                    let total =
                        |ci: usize| live.iter().map(|&s| grid_sse(slot(s), q, self.channels[s].m, cands[ci])).sum();
                    cands[coarse_to_fine(from, to, total)]
                };
                (0..np).map(|s| if self.channels[s].m > 0.0 { r } else { zero_ratio }).collect()
            }
        };
        let grid: Vec<(f32, PwlqChannel)> = (0..np).map(|s| grid_channel(q, self.channels[s].m, ratios[s])).collect();
        let mut codes = vec![0i16; layout.numel];
        let mut xg = vec![0f32; layout.numel];
        for_each_element(&layout, |e, s| {
            let (g, ch) = &grid[s];
            codes[e] = quantize_value(x[e], q, ch);
            xg[e] = grid_level(codes[e], q, ratios[s]) as f32 * g;
        });
        let n = x.len() as f64;
        // The unsnapped PWLQ error on the same data, for the report.
        let mut pc = vec![0i16; layout.numel];
        let mut xp = vec![0f32; layout.numel];
        self.quantize_layout(&layout, x, &mut pc);
        self.dequantize_layout(&layout, &pc, &mut xp);
        Ok(GridAligned {
            bits: self.bits,
            q_max: q,
            granularity: self.granularity,
            shape: shape.to_vec(),
            g: grid.iter().map(|(g, _)| *g).collect(),
            ratios,
            codes,
            layout,
            mse_pwlq: metrics::sum_sq_diff(x, &xp) / n,
            mse_grid: metrics::sum_sq_diff(x, &xg) / n,
        })
    }
}

impl GridAligned {
    /// Bit width b.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The level indices (same meaning as [`PwlqTensor::codes`]).
    pub fn codes(&self) -> &[i16] {
        &self.codes
    }

    /// Per slot, the ratio `(i, j)`: `p/m = i/(i+j)`, `s1 = i·g`, `s2 = j·g`.
    pub fn ratios(&self) -> &[(u32, u32)] {
        &self.ratios
    }

    /// Per slot, the grid `g`.
    pub fn grid_scales(&self) -> &[f32] {
        &self.g
    }

    /// The integer level of `code` in slot `slot` (0 for an out-of-range slot).
    pub fn level(&self, slot: usize, code: i16) -> i32 {
        self.ratios.get(slot).map_or(0, |&r| grid_level(code, self.q_max, r))
    }

    /// The integer codebook of slot `slot`, indexed by the packed code field
    /// `f = region·2^b | sign·2^(b−1) | q` ([`PwlqPacked`]): `2^(b+1)` entries — 32 for
    /// 4-bit PWLQ, the table of a codebook kernel.
    pub fn codebook(&self, slot: usize) -> Vec<i32> {
        (0..1u16 << (self.bits + 1)).map(|f| self.level(slot, field_to_code(f, self.q_max, self.bits))).collect()
    }

    /// The largest `|L|` over all slots' tables, `max Q·(i+j)` (with `i ≥ 1` or `j ≥ 1`).
    pub fn max_level(&self) -> i32 {
        self.ratios.iter().map(|&(i, j)| self.q_max as i32 * (i + j) as i32).max().unwrap_or(0)
    }

    /// The real values: `(L as f32) · g`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        for_each_element(&self.layout, |e, s| out[e] = self.level(s, self.codes[e]) as f32 * self.g[s]);
        out
    }

    /// MSE of the PWLQ parameters the grid was snapped from, on the same data.
    pub fn mse_pwlq(&self) -> f64 {
        self.mse_pwlq
    }

    /// MSE of the grid-aligned quantization.
    pub fn mse_grid(&self) -> f64 {
        self.mse_grid
    }

    /// What the snapping costs: `mse_grid − mse_pwlq` (can be negative when the grid
    /// ratio happens to suit the data better than the unsnapped breakpoint).
    pub fn extra_mse(&self) -> f64 {
        self.mse_grid - self.mse_pwlq
    }
}
