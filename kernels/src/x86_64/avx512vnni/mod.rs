//! AVX-512 VNNI kernels (`vpdpbusd` on zmm).

use crate::types::GemmUkernel;

/// AVX-512 VNNI GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[];
