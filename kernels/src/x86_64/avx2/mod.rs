//! AVX2 kernels. [`gemm`]: the int8 GEMM tiles; [`igemm`]: their indirect (convolution)
//! entries.

pub mod dwconv;
pub mod codebook;
pub mod decode;
pub mod gemm;
pub mod igemm;
pub mod pwlq;
pub mod peak;
pub mod shift;

use crate::types::GemmUkernel;

pub use gemm::{QX8_GEMM_4X16C4_MADDUBS__AVX2, QX8_GEMM_6X16C2__AVX2};

/// AVX2 GEMM microkernels, least preferred first: the exact `vpmaddwd` kernel (any
/// weights), then the faster `vpmaddubsw` one (weights within ±64 only; the packer
/// picks it only when that holds).
pub const GEMM_KERNELS: &[GemmUkernel] = &[QX8_GEMM_6X16C2__AVX2, QX8_GEMM_4X16C4_MADDUBS__AVX2];

pub use dwconv::DWCONV_KERNELS;
