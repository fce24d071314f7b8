//! x86-64 kernels, one module per ISA tier. Each tier lists its kernels in its own
//! `GEMM_KERNELS`; [`gemm_kernels`] joins them, least preferred first.

pub mod avx2;
pub mod avx512vnni;

use crate::types::{DwconvUkernel, GemmUkernel};

/// Every x86-64 GEMM microkernel in this build, least preferred first.
pub fn gemm_kernels() -> impl Iterator<Item = GemmUkernel> {
    avx2::GEMM_KERNELS.iter().chain(avx512vnni::GEMM_KERNELS).copied()
}

/// Every x86-64 depthwise microkernel in this build, least preferred first.
pub fn dwconv_kernels() -> impl Iterator<Item = DwconvUkernel> {
    avx2::DWCONV_KERNELS.iter().chain(avx512vnni::DWCONV_KERNELS).copied()
}
