//! Calibration: the real range each parameter slot should cover.
//!
//! * [`Calibration::MinMax`] — the data's min and max (symmetric: its max |x|).
//! * [`Calibration::Percentile`] — `p`-th percentile (and, for affine, the `100 − p`-th)
//!   by [`percentile`]'s linear interpolation; symmetric uses the `p`-th percentile of |x|.
//! * [`Calibration::Mse`] — clip-ratio search: candidates `c = k / grid`, `k = grid, grid−1,
//!   …, 1`, clip the min-max range to `c·[min, max]` (symmetric: `c·max|x|`), quantize and
//!   dequantize the data with each, keep the smallest MSE; ties keep the larger `c`, so
//!   `c = 1` (plain min-max) wins unless something is strictly better. The MSE is
//!   measured with the quantizer's rounding (half to even when it is stochastic).
//!
//! KL-divergence (TensorRT entropy) calibration is not implemented yet.

use qkern_kernels::Int8;

use super::layout::Layout;
use super::metrics::sum_sq_diff;
use super::simd::{DequantizeOp, QuantizeOp};
use super::uniform::{Granularity, IntFormat, Mapping, params_from_range};
use crate::error::{Error, Result};

/// How the range of a parameter slot is chosen from data.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Calibration {
    /// Min and max of the data.
    #[default]
    MinMax,
    /// The `p`-th percentile, `p ∈ [50, 100]` (e.g. 99.99); `100` equals min-max.
    Percentile(f64),
    /// MSE-optimal clipping: `grid` ratios `k / grid` of the min-max range, `grid` in
    /// 1..=[`Calibration::MAX_MSE_GRID`] (see the module docs).
    Mse {
        /// Number of clip ratios tried.
        grid: u32,
    },
}

impl Calibration {
    /// The default number of clip ratios of [`Calibration::mse`]: 0.01, 0.02, …, 1.00.
    pub const DEFAULT_MSE_GRID: u32 = 100;
    /// The largest accepted grid (the search costs `grid` quantize passes).
    pub const MAX_MSE_GRID: u32 = 10_000;

    /// MSE-optimal clipping with [`Calibration::DEFAULT_MSE_GRID`] ratios.
    pub fn mse() -> Self {
        Calibration::Mse { grid: Self::DEFAULT_MSE_GRID }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Calibration::MinMax => Ok(()),
            Calibration::Percentile(p) => {
                if (50.0..=100.0).contains(&p) {
                    Ok(())
                } else {
                    Err(Error::InvalidParameter(format!("percentile `p` must be in [50, 100], got {p}")))
                }
            }
            Calibration::Mse { grid } => {
                if (1..=Self::MAX_MSE_GRID).contains(&grid) {
                    Ok(())
                } else {
                    Err(Error::InvalidParameter(format!(
                        "MSE calibration `grid` must be in [1, {}], got {grid}",
                        Self::MAX_MSE_GRID
                    )))
                }
            }
        }
    }
}

/// `(min, max)` of `x`; `x` must be non-empty and finite.
pub fn min_max(x: &[f32]) -> Result<(f32, f32)> {
    check_data(x)?;
    Ok(min_max_unchecked(x))
}

fn min_max_unchecked(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// The `p`-th percentile of `x`, `p ∈ [0, 100]`, as NumPy's default (`linear`) method:
/// with `s` the values sorted ascending and `h = (n − 1) · p / 100` (in f64), the result
/// is `s[⌊h⌋] + (h − ⌊h⌋) · (s[⌊h⌋ + 1] − s[⌊h⌋])`, computed in f64 and rounded once to
/// f32. Equal values need no tie rule: order statistics do not depend on which of equal
/// values comes first. `p = 0` / `100` give the min / max exactly. `x` must be non-empty
/// and finite.
pub fn percentile(x: &[f32], p: f64) -> Result<f32> {
    check_data(x)?;
    if !(0.0..=100.0).contains(&p) {
        return Err(Error::InvalidParameter(format!("percentile `p` must be in [0, 100], got {p}")));
    }
    let mut v = x.to_vec();
    Ok(percentile_in_place(&mut v, p))
}

/// [`percentile`] on scratch data (reordered); `v` non-empty and finite, `p` in range.
fn percentile_in_place(v: &mut [f32], p: f64) -> f32 {
    let n = v.len();
    let h = (n - 1) as f64 * p / 100.0;
    let i = (h.floor() as usize).min(n - 1);
    let frac = h - i as f64;
    let (_, &mut lo, upper) = v.select_nth_unstable_by(i, f32::total_cmp);
    if frac == 0.0 || upper.is_empty() {
        return lo;
    }
    // The next order statistic is the smallest of the values above position i.
    let hi = upper.iter().copied().fold(f32::INFINITY, f32::min);
    (lo as f64 + frac * (hi as f64 - lo as f64)) as f32
}

fn check_data(x: &[f32]) -> Result<()> {
    if x.is_empty() {
        return Err(Error::InvalidParameter("calibration data `x` is empty".into()));
    }
    super::metrics::check_finite(x, "x")
}

/// (scale, zero point) for one slot's values (non-empty, finite; calibration validated).
pub(crate) fn calibrate_slice(
    x: &[f32],
    format: IntFormat,
    mapping: Mapping,
    calibration: Calibration,
    away: bool,
) -> Result<(f32, i32)> {
    let (lo, hi) = match calibration {
        Calibration::MinMax | Calibration::Mse { .. } => min_max_unchecked(x),
        Calibration::Percentile(p) => match mapping {
            Mapping::Symmetric => {
                let mut a: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                let m = percentile_in_place(&mut a, p);
                (-m, m)
            }
            Mapping::Affine => {
                let mut v = x.to_vec();
                let lo = percentile_in_place(&mut v, 100.0 - p);
                let hi = percentile_in_place(&mut v, p);
                (lo, hi)
            }
        },
    };
    let Calibration::Mse { grid } = calibration else {
        return params_from_range(format, mapping, lo, hi);
    };
    let best = params_from_range(format, mapping, lo, hi)?;
    if format.is_signed() {
        Ok(mse_search::<i8>(x, format, mapping, lo, hi, grid, best, away))
    } else {
        Ok(mse_search::<u8>(x, format, mapping, lo, hi, grid, best, away))
    }
}

#[allow(clippy::too_many_arguments)]
fn mse_search<T: Int8>(
    x: &[f32],
    format: IntFormat,
    mapping: Mapping,
    lo: f32,
    hi: f32,
    grid: u32,
    full: (f32, i32),
    away: bool,
) -> (f32, i32) {
    let n = x.len();
    // Infallible: a one-dimensional per-tensor layout of x's own length.
    let Ok(layout) = Layout::new(&[n], &Granularity::PerTensor, "x", n) else {
        return full;
    };
    let mut codes = vec![T::default(); n];
    let mut xh = vec![0f32; n];
    let mut err = |(scale, zp): (f32, i32)| -> f64 {
        let zpf = [zp as f32];
        let sc = [scale];
        QuantizeOp {
            layout: &layout,
            x,
            out: &mut codes,
            scales: &sc,
            zps: &zpf,
            qmin: format.qmin(),
            qmax: format.qmax(),
        }
        .run(away);
        DequantizeOp { layout: &layout, q: &codes, out: &mut xh, scales: &sc, zps: &zpf }.run();
        sum_sq_diff(x, &xh)
    };
    let mut best = full;
    let mut best_err = err(full);
    for k in (1..grid).rev() {
        let c = k as f32 / grid as f32;
        // A candidate whose scale underflows is simply not a candidate.
        let Ok(cand) = params_from_range(format, mapping, c * lo, c * hi) else {
            continue;
        };
        let e = err(cand);
        if e < best_err {
            best = cand;
            best_err = e;
        }
    }
    best
}
