//! Logarithmic / power-of-two (PoT) quantization (Miyashita, Lee and Murmann, 2016).
//!
//! Levels `{0} ∪ {±2^e}` for `e = FSR, FSR − 1, …, FSR − n + 1`: zero, then `n` powers of
//! two below the full-scale-range exponent `FSR`. Codes are sign + exponent index
//! ([`CodeAssignment::SignMagnitude`]) for signed formats — magnitude index `m = 0` is zero,
//! `m ≥ 1` is `2^(FSR − n + m)` — and the exponent index alone for unsigned ones
//! ([`CodeAssignment::Sorted`], code 0 = zero). So a signed `b`-bit format has
//! `n = 2^(b−1) − 1` exponents and an unsigned one `n = 2^b − 1`.
//!
//! In level units the magnitudes are the integers `0, 1, 2, 4, …, 2^(n−1)` (the grid:
//! PoT-4 signed has max 64, PoT-5 signed 16384, 4-bit unsigned 16384; 5-bit unsigned,
//! `2^30`, has no i16 grid) and the scale is `2^(FSR − n + 1)`, a power of two.
//!
//! * FSR from data ([`PotFormat::quantizer`], min-max): `FSR = ⌈log2 max|x|⌉`, the smallest
//!   exponent whose level covers the data. Miyashita et al. write the clip as
//!   `Clip(round(log2|x|), FSR − 2^b, FSR)` with the top level at `2^(FSR−1)`; our FSR is
//!   the exponent of the top level itself (theirs − 1). Percentile and MSE-optimal
//!   clipping apply too; the MSE search then tries each FSR at most once.
//! * FSR given: [`PotFormat::params`].
//! * Projection: nearest level in the linear domain, ties toward zero (see
//!   [`super::codebook`]); the paper rounds `log2|x|`, which moves every threshold
//!   from the arithmetic mean `1.5 · 2^e` to the geometric mean `√2 · 2^e` and costs MSE.
//! * Base √2 ([`PotBase::Sqrt2`]): magnitudes `2^(−j/2)`, `j = 0 … n−1` (top 1, scale
//!   `2^FSR`); the odd powers of √2 are irrational, so the set has no integer grid and only
//!   the float paths apply.
//!
//! [`CodeAssignment::SignMagnitude`]: super::CodeAssignment::SignMagnitude
//! [`CodeAssignment::Sorted`]: super::CodeAssignment::Sorted

use super::codebook::{LevelParams, LevelQuantizer, LevelSet};
use super::uniform::Granularity;
use crate::error::{Error, Result};

/// The base of the powers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PotBase {
    /// Levels `2^e`.
    #[default]
    Two,
    /// Levels `√2^e` (Miyashita et al.'s finer variant).
    Sqrt2,
}

/// A PoT / log format: bits (2–5), signed or unsigned, base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PotFormat {
    bits: u32,
    signed: bool,
    base: PotBase,
}

impl PotFormat {
    /// A format; `bits` outside 2..=5 is [`Error::InvalidBits`].
    pub fn new(bits: u32, signed: bool, base: PotBase) -> Result<Self> {
        if !(2..=super::codebook::MAX_CODE_BITS).contains(&bits) {
            return Err(Error::InvalidBits { bits, min: 2, max: super::codebook::MAX_CODE_BITS });
        }
        Ok(PotFormat { bits, signed, base })
    }

    /// Signed (sign + exponent index), base 2.
    pub fn signed(bits: u32) -> Result<Self> {
        Self::new(bits, true, PotBase::Two)
    }

    /// Unsigned (exponent index only, for non-negative data), base 2.
    pub fn unsigned(bits: u32) -> Result<Self> {
        Self::new(bits, false, PotBase::Two)
    }

    /// The same format with another base.
    pub fn with_base(mut self, base: PotBase) -> Self {
        self.base = base;
        self
    }

    /// The code width.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Whether codes carry a sign.
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// The base.
    pub fn base(&self) -> PotBase {
        self.base
    }

    /// `n`, the number of non-zero magnitudes (exponents).
    pub fn num_exponents(&self) -> u32 {
        if self.signed { (1 << (self.bits - 1)) - 1 } else { (1 << self.bits) - 1 }
    }

    /// The magnitudes in level units, ascending: 0 then the `n` powers (see the module docs).
    pub fn magnitudes(&self) -> Vec<f32> {
        let n = self.num_exponents() as i32;
        let mut m = vec![0f32];
        match self.base {
            PotBase::Two => m.extend((0..n).map(|e| (2f64).powi(e) as f32)),
            // 2^(−j/2) for j = n−1 … 0, from the f64 value rounded once to f32.
            PotBase::Sqrt2 => m.extend((0..n).rev().map(|j| (2f64).powf(-(j as f64) / 2.0) as f32)),
        }
        m
    }

    /// The level set (sign-magnitude when signed, sorted codes when unsigned).
    pub fn level_set(&self) -> LevelSet {
        let m = self.magnitudes();
        let set = if self.signed { LevelSet::sign_magnitude(self.bits, &m) } else { LevelSet::codebook(self.bits, &m) };
        // The magnitudes are valid by construction (finite, ascending, the right count).
        set.unwrap_or_else(|e| unreachable!("PoT level set rejected: {e}"))
    }

    /// `log2` of the scale for a given FSR: the top level is `2^FSR`.
    fn scale_exp(&self, fsr: i32) -> i64 {
        match self.base {
            PotBase::Two => fsr as i64 - (self.num_exponents() as i64 - 1),
            PotBase::Sqrt2 => fsr as i64,
        }
    }

    /// The FSR of a power-of-two `scale` of this format, if `scale` is one.
    pub fn fsr_of_scale(&self, scale: f32) -> Option<i32> {
        if !(scale.is_finite() && scale > 0.0) {
            return None;
        }
        let e = super::codebook::ceil_log2(scale as f64);
        if (2f64).powi(e) != scale as f64 {
            return None;
        }
        let fsr = match self.base {
            PotBase::Two => e as i64 + (self.num_exponents() as i64 - 1),
            PotBase::Sqrt2 => e as i64,
        };
        i32::try_from(fsr).ok()
    }

    /// A quantizer with FSR `⌈log2 max|x|⌉` per slot (power-of-two scale, min-max range);
    /// change the granularity or range rule with the [`LevelQuantizer`] builders.
    pub fn quantizer(&self) -> LevelQuantizer {
        LevelQuantizer::new(self.level_set()).with_power_of_two_scale(true)
    }

    /// Parameters with given FSRs, one per slot (exactly one for per-tensor): scale
    /// `2^FSR / top level`. An FSR whose scale is not a positive finite f32 (or whose top
    /// level overflows) is an error.
    pub fn params(&self, granularity: Granularity, fsr: &[i32]) -> Result<LevelParams> {
        let mut scales = Vec::with_capacity(fsr.len());
        for &f in fsr {
            let e = self.scale_exp(f);
            if !(-149..=127).contains(&e) {
                return Err(Error::InvalidParameter(format!(
                    "`fsr` {f}: the scale 2^{e} of a {}-bit PoT format is not a finite non-zero f32",
                    self.bits
                )));
            }
            scales.push((2f64).powi(e as i32) as f32);
        }
        LevelParams::new(self.level_set(), granularity, scales)
    }
}
