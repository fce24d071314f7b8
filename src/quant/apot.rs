//! Additive powers-of-two (APoT) quantization (Li, Dong and Wang, "Additive Powers-of-Two
//! Quantization", ICLR 2020).
//!
//! Every level is a sum of up to three power-of-two terms, one from each of the authors'
//! base sets; [`build_power_value`] reproduces their `build_power_value(B, additive)`
//! exactly, as integers on a common grid (the authors' floats are these integers divided by
//! the largest). The formats, as in the authors' `QuantConv2d`:
//!
//! | format | levels | grid max |
//! |---|---|---|
//! | 2-bit weights | `{−1, 0, 1} · α` (ternary: the authors use uniform 2-bit here) | 1 |
//! | 3-bit weights (`B = 2`) | `±{0, 1, 2, 4} · α/4` | 4 |
//! | 4-bit weights (`B = 3`) | `±{0, 1, 2, 3, 4, 6, 8, 10} · α/10` | 10 |
//! | 5-bit weights (`B = 4`) | `±{0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48} · α/48` | 48 |
//! | `b`-bit activations (`B = b`, 2–5) | the `2^b` values of `build_power_value(b)`, unsigned; 4-bit: `{0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48} · α/48`, 5-bit: 32 levels `· α/100` | 4, 10, 48, 100 |
//!
//! Weights are sign + magnitude ([`CodeAssignment::SignMagnitude`], `B = bits − 1` magnitude
//! bits), activations are unsigned ([`CodeAssignment::Sorted`]). The scale of a slot is
//! `α / grid max`, so the top level is `α` (up to the rounding of that division).
//!
//! * α (the clipping threshold): given ([`ApotFormat::params`], or [`LevelRange::Fixed`]),
//!   min-max, percentile, or the MSE-optimal search of [`LevelRange::Calibrated`] — the
//!   authors learn α by gradient descent during training; in post-training use the MSE
//!   search is the substitute.
//! * Weight normalisation (zero mean, unit standard deviation before clipping, as the
//!   authors' `QuantConv2d.forward`): [`LevelQuantizer::with_normalization`].
//! * Projection: nearest level in the linear domain, as the authors' `power_quant` (which
//!   takes the `argmin` of `|x − level|`, leaving ties to `torch.min`); ours go toward zero
//!   (see [`super::codebook`]).
//!
//! [`CodeAssignment::SignMagnitude`]: super::CodeAssignment::SignMagnitude
//! [`CodeAssignment::Sorted`]: super::CodeAssignment::Sorted
//! [`LevelRange::Fixed`]: super::LevelRange::Fixed
//! [`LevelRange::Calibrated`]: super::LevelRange::Calibrated

use super::codebook::{LevelParams, LevelQuantizer, LevelSet};
use super::uniform::Granularity;
use crate::error::{Error, Result};

/// The authors' level construction as integers: the sorted distinct sums `a + b + c` over
/// their base sets, in units of the smallest term, so that `value / max` is their
/// normalised level. `additive = true` takes `b ∈ 2..=6` (their implemented cases); the
/// plain PoT variant (`additive = false`: zero and `2^B − 1` single terms) takes `b ∈ 1..=6`.
///
/// Base sets, each with 0 added, as exponents `e` of the terms `2^−e`
/// (additive; `i` is the authors' loop index 0..3):
///
/// * `B = 2`: `a = {1, 2, 3}`
/// * `B = 3`: `a = {1, 2, 4}`, `b = {3}`
/// * `B = 4`: `a = {1, 3, 5}`, `b = {2, 4, 6}`
/// * `B = 5`: `a = {1, 3, 6}`, `b = {2, 4, 7}`, `c = {5}`
/// * `B = 6`: `a = {1, 4, 7}`, `b = {2, 5, 8}`, `c = {3, 6, 9}`
pub fn build_power_value(b: u32, additive: bool) -> Result<Vec<u64>> {
    let (a_set, b_set, c_set): (Vec<u32>, Vec<u32>, Vec<u32>) = if additive {
        match b {
            2 => (vec![1, 2, 3], vec![], vec![]),
            3 => (vec![1, 2, 4], vec![3], vec![]),
            4 => (vec![1, 3, 5], vec![2, 4, 6], vec![]),
            5 => (vec![1, 3, 6], vec![2, 4, 7], vec![5]),
            6 => (vec![1, 4, 7], vec![2, 5, 8], vec![3, 6, 9]),
            _ => return Err(Error::InvalidBits { bits: b, min: 2, max: 6 }),
        }
    } else {
        if !(1..=6).contains(&b) {
            return Err(Error::InvalidBits { bits: b, min: 1, max: 6 });
        }
        ((1..(1u32 << b)).collect(), vec![], vec![])
    };
    // The unit is the smallest term 2^−d; a term 2^−e is 2^(d−e) units.
    let d = a_set.iter().chain(&b_set).chain(&c_set).copied().max().unwrap_or(0);
    let units = |set: &[u32]| -> Vec<u64> {
        let mut v = vec![0u64];
        v.extend(set.iter().map(|&e| 1u64 << (d - e)));
        v
    };
    let (ua, ub, uc) = (units(&a_set), units(&b_set), units(&c_set));
    let mut values = Vec::with_capacity(ua.len() * ub.len() * uc.len());
    for &x in &ua {
        for &y in &ub {
            values.extend(uc.iter().map(|&z| x + y + z));
        }
    }
    values.sort_unstable();
    values.dedup();
    Ok(values)
}

/// Whether an APoT format quantizes weights (signed) or activations (unsigned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApotRole {
    /// Sign + magnitude, magnitudes from `build_power_value(bits − 1)`; 2-bit is ternary.
    Weight,
    /// Unsigned, levels from `build_power_value(bits)`.
    Activation,
}

/// An APoT format: 2–5 bits, weights or activations (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApotFormat {
    bits: u32,
    role: ApotRole,
}

impl ApotFormat {
    /// A format; `bits` outside 2..=5 is [`Error::InvalidBits`].
    pub fn new(bits: u32, role: ApotRole) -> Result<Self> {
        if !(2..=super::codebook::MAX_CODE_BITS).contains(&bits) {
            return Err(Error::InvalidBits { bits, min: 2, max: super::codebook::MAX_CODE_BITS });
        }
        Ok(ApotFormat { bits, role })
    }

    /// Weights (signed).
    pub fn weight(bits: u32) -> Result<Self> {
        Self::new(bits, ApotRole::Weight)
    }

    /// Activations (unsigned).
    pub fn activation(bits: u32) -> Result<Self> {
        Self::new(bits, ApotRole::Activation)
    }

    /// The code width.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Weights or activations.
    pub fn role(&self) -> ApotRole {
        self.role
    }

    /// The magnitudes (weights) or levels (activations) on the integer grid, ascending.
    pub fn magnitudes(&self) -> Vec<u16> {
        let v = match (self.role, self.bits) {
            (ApotRole::Weight, 2) => Ok(vec![0, 1]),
            (ApotRole::Weight, b) => build_power_value(b - 1, true),
            (ApotRole::Activation, b) => build_power_value(b, true),
        };
        // bits ∈ 2..=5 gives B ∈ 2..=5 here, all implemented, every value ≤ 100.
        v.unwrap_or_default().into_iter().map(|x| x as u16).collect()
    }

    /// The largest grid value (1, 4, 10, 48 for weights; 4, 10, 48, 100 for activations).
    pub fn grid_max(&self) -> u16 {
        self.magnitudes().last().copied().unwrap_or(1)
    }

    /// The level set.
    pub fn level_set(&self) -> LevelSet {
        let m: Vec<f32> = self.magnitudes().iter().map(|&v| v as f32).collect();
        let set = match self.role {
            ApotRole::Weight => LevelSet::sign_magnitude(self.bits, &m),
            ApotRole::Activation => LevelSet::codebook(self.bits, &m),
        };
        // Valid by construction: ascending, distinct, 2^(bits−1) magnitudes / 2^bits levels.
        set.unwrap_or_else(|e| unreachable!("APoT level set rejected: {e}"))
    }

    /// A per-tensor min-max quantizer (α = max of the covered side of the data); set the
    /// range (e.g. `Calibration::mse()`), granularity and normalisation with the
    /// [`LevelQuantizer`] builders.
    pub fn quantizer(&self) -> LevelQuantizer {
        LevelQuantizer::new(self.level_set())
    }

    /// Parameters with given clipping thresholds α, one per slot: scale `α / grid max`.
    /// Each α must be finite and `> 0`.
    pub fn params(&self, granularity: Granularity, alphas: &[f32]) -> Result<LevelParams> {
        let g = self.grid_max() as f32;
        let mut scales = Vec::with_capacity(alphas.len());
        for &a in alphas {
            if !(a.is_finite() && a > 0.0) {
                return Err(Error::InvalidParameter(format!("`alphas`: every α must be finite and > 0, got {a}")));
            }
            scales.push(a / g);
        }
        LevelParams::new(self.level_set(), granularity, scales)
    }
}
