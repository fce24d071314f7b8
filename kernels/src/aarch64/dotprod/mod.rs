//! AArch64 dot product (`sdot`/`udot`) kernels.

use crate::types::GemmUkernel;

/// dotprod GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[];
