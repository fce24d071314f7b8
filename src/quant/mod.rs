//! Quantizers (DESIGN.md §3).
//!
//! * [`uniform`] — uniform symmetric / affine quantization at 1–8 bits, per tensor,
//!   channel or group, with half-even, half-away and stochastic rounding.
//! * [`calibration`] — min-max, percentile and MSE-optimal clipping.
//! * [`metrics`] — MSE, SQNR (dB), max abs error.
//! * [`reference`](mod@reference) — the scalar, one-element definition every vector loop equals.
//!
//! ```
//! use qkern::quant::{Granularity, IntFormat, Mapping, UniformQuantizer};
//! # fn main() -> qkern::Result<()> {
//! let x = [0.5f32, -1.0, 2.0, 0.25, 3.0, -0.75];
//! let q = UniformQuantizer::new(IntFormat::INT8, Mapping::Symmetric)
//!     .with_granularity(Granularity::PerChannel { axis: 0 })
//!     .quantize::<i8>(&x, &[2, 3])?;
//! let xh = q.dequantize();
//! assert!(q.params().error(&x, &[2, 3])?.sqnr_db > 40.0);
//! # let _ = xh; Ok(()) }
//! ```
//!
//! Every scheme offers quantize (f32 → codes), dequantize (codes → f32) and its error;
//! [`Scheme`] is that common shape, for code that wants to compare schemes. The later
//! non-uniform schemes (log / PoT / APoT / PWLQ / codebook) sit beside [`uniform`].

pub mod apot;
pub mod calibration;
pub mod codebook;
mod layout;
pub mod metrics;
pub mod packed;
pub mod pot;
pub mod pwlq;
pub mod reference;
mod simd;
pub mod uniform;

pub use apot::{ApotFormat, ApotRole, build_power_value};
pub use calibration::{Calibration, min_max, percentile};
pub use codebook::{CodeAssignment, Grid, LevelParams, LevelQuantizer, LevelRange, LevelSet, LevelTensor};
pub use metrics::{ErrorStats, max_abs_error, mse, sqnr_db};
pub use packed::{PACK_K_BLOCK, PackedCodes, PackedHeader};
pub use pot::{PotBase, PotFormat};
pub use uniform::{Granularity, IntFormat, Mapping, QuantParams, QuantizedTensor, Rounding, UniformQuantizer};

use crate::error::Result;

/// A quantization scheme with codes of type `C`: the operations every scheme has.
pub trait Scheme<C: Copy + Default> {
    /// Quantizes `x` (row-major, `shape`) into `codes` (same length).
    fn quantize_into(&self, x: &[f32], shape: &[usize], codes: &mut [C]) -> Result<()>;

    /// Dequantizes `codes` (row-major, `shape`) into `out` (same length).
    fn dequantize_into(&self, codes: &[C], shape: &[usize], out: &mut [f32]) -> Result<()>;

    /// Quantize then dequantize.
    fn fake_quantize(&self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let mut codes = vec![C::default(); x.len()];
        self.quantize_into(x, shape, &mut codes)?;
        let mut out = vec![0f32; x.len()];
        self.dequantize_into(&codes, shape, &mut out)?;
        Ok(out)
    }

    /// The error of [`Scheme::fake_quantize`] against `x` (finite, non-empty).
    fn error(&self, x: &[f32], shape: &[usize]) -> Result<ErrorStats> {
        metrics::check_finite(x, "x")?;
        let xh = self.fake_quantize(x, shape)?;
        ErrorStats::between(x, &xh)
    }
}
