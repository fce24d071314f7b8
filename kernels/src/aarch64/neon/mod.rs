//! AArch64 Advanced SIMD (NEON) kernels.

use crate::types::GemmUkernel;

/// NEON GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[];
