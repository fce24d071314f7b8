//! AVX2 kernels.

use crate::types::GemmUkernel;

/// AVX2 GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[];
