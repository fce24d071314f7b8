//! Quantization error metrics: MSE, SQNR (dB), max abs error.
//!
//! All sums are taken in f64, sequentially in index order, so the same two slices give
//! the same numbers every time (the MSE calibration search relies on it).

use crate::error::{Error, Result};

/// The error of an approximation `approx` of `reference`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorStats {
    /// Mean squared error `Σ (x − x̂)² / n`.
    pub mse: f64,
    /// Signal-to-quantization-noise ratio in dB; see [`sqnr_db`] for the edge cases.
    pub sqnr_db: f64,
    /// `max |x − x̂|`.
    pub max_abs_error: f64,
}

impl ErrorStats {
    /// All three metrics in one pass over both slices.
    pub fn between(reference: &[f32], approx: &[f32]) -> Result<Self> {
        check(reference, approx)?;
        let (signal, noise) = powers(reference, approx);
        let max_abs_error = max_abs(reference, approx);
        let n = reference.len() as f64;
        Ok(ErrorStats { mse: noise / n, sqnr_db: sqnr_from_powers(signal, noise), max_abs_error })
    }
}

/// Mean squared error between `reference` and `approx` (same length, non-empty, finite).
pub fn mse(reference: &[f32], approx: &[f32]) -> Result<f64> {
    check(reference, approx)?;
    Ok(sum_sq_diff(reference, approx) / reference.len() as f64)
}

/// SQNR in dB: `10 · log10(Σ x² / Σ (x − x̂)²)`.
///
/// Zero noise (exact reconstruction, including an all-zero signal) is `+∞`; a zero
/// signal with non-zero noise is `−∞`.
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> Result<f64> {
    check(reference, approx)?;
    let (signal, noise) = powers(reference, approx);
    Ok(sqnr_from_powers(signal, noise))
}

/// `max |reference[i] − approx[i]|` (computed in f64, so it is exact).
pub fn max_abs_error(reference: &[f32], approx: &[f32]) -> Result<f64> {
    check(reference, approx)?;
    Ok(max_abs(reference, approx))
}

fn check(reference: &[f32], approx: &[f32]) -> Result<()> {
    if reference.len() != approx.len() {
        return Err(Error::ShapeMismatch(format!(
            "`reference` has {} elements but `approx` has {}",
            reference.len(),
            approx.len()
        )));
    }
    if reference.is_empty() {
        return Err(Error::InvalidParameter("error metrics need at least one element; `reference` is empty".into()));
    }
    check_finite(reference, "reference")?;
    check_finite(approx, "approx")
}

/// Errors if `x` holds a NaN or an infinity, naming the argument and the first index.
pub(crate) fn check_finite(x: &[f32], what: &'static str) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidParameter(format!("`{what}` must be finite, but element {i} is {}", x[i]))),
    }
}

/// `Σ (a − b)²` in f64, in index order. Each difference is exact in f64.
pub(crate) fn sum_sq_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).fold(0.0, |s, d| s + d)
}

fn powers(reference: &[f32], approx: &[f32]) -> (f64, f64) {
    let signal = reference.iter().map(|&x| (x as f64).powi(2)).fold(0.0, |s, d| s + d);
    (signal, sum_sq_diff(reference, approx))
}

fn max_abs(reference: &[f32], approx: &[f32]) -> f64 {
    reference.iter().zip(approx).map(|(&x, &y)| (x as f64 - y as f64).abs()).fold(0.0, f64::max)
}

fn sqnr_from_powers(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else if signal == 0.0 {
        f64::NEG_INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}
