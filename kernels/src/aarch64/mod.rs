//! AArch64 kernels, one module per ISA tier (NEON, dotprod, i8mm). Each tier lists its
//! kernels in its own `GEMM_KERNELS`; [`gemm_kernels`] joins them, least preferred first.
//!
//! The lists are empty for now: every tier runs the portable kernels until the NEON ones
//! land (issue 7), but the detection, the tiers and the qemu test runs are already real.

pub mod dotprod;
pub mod i8mm;
pub mod neon;

use crate::types::GemmUkernel;

/// Every AArch64 GEMM microkernel in this build, least preferred first.
pub fn gemm_kernels() -> impl Iterator<Item = GemmUkernel> {
    neon::GEMM_KERNELS.iter().chain(dotprod::GEMM_KERNELS).chain(i8mm::GEMM_KERNELS).copied()
}
