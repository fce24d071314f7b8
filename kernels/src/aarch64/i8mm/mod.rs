//! AArch64 int8 matrix multiply (`smmla`/`usmmla`/`ummla`) kernels.

use crate::types::GemmUkernel;

/// i8mm GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[];
