//! x86-64 kernels, one module per ISA tier. Each tier lists its kernels in its own
//! `GEMM_KERNELS`; [`gemm_kernels`] joins them, least preferred first.

pub mod avx2;
pub mod avx512vnni;
pub mod avxvnni;

use crate::types::{CodebookUkernel, GemmUkernel};

/// Every x86-64 GEMM microkernel in this build, least preferred first. The AVX-VNNI
/// kernels' EVEX twins belong to the AVX-512 VNNI tier, below its zmm kernels.
pub fn gemm_kernels() -> impl Iterator<Item = GemmUkernel> {
    avx2::GEMM_KERNELS
        .iter()
        .chain(avxvnni::GEMM_KERNELS)
        .chain(avxvnni::AVX512_TWIN_KERNELS)
        .chain(avx512vnni::GEMM_KERNELS)
        .copied()
}

/// Every x86-64 codebook microkernel in this build (both families: the table-lookup
/// kernels now, the bit-shift ones join this list), least preferred first.
pub fn codebook_kernels() -> impl Iterator<Item = CodebookUkernel> {
    avx2::codebook::CODEBOOK_KERNELS.iter().chain(avx512vnni::codebook::CODEBOOK_KERNELS).copied()
}
