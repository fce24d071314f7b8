//! x86-64 kernels, one module per ISA tier. Each tier lists its kernels in its own
//! `GEMM_KERNELS`; [`gemm_kernels`] joins them, least preferred first.

pub mod avx2;
pub mod avx512vnni;
pub mod avxvnni;
pub mod bandwidth;

use crate::pack::decode::CodebookDecoder;
use crate::types::{CodebookUkernel, DwconvUkernel, GemmUkernel};

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

/// Every x86-64 GEMV microkernel (short tiles, `mr ≤ 4`, for memory-bound calls of at
/// most `mr` rows) in this build, least preferred first. Each reads the packed format of
/// a GEMM kernel, so weights packed for GEMM run through it unchanged.
pub fn gemv_kernels() -> impl Iterator<Item = GemmUkernel> {
    avx512vnni::GEMV_KERNELS.iter().copied()
}

/// Every x86-64 depthwise microkernel in this build, least preferred first.
pub fn dwconv_kernels() -> impl Iterator<Item = DwconvUkernel> {
    avx2::DWCONV_KERNELS.iter().chain(avx512vnni::DWCONV_KERNELS).copied()
}

/// Every x86-64 codebook microkernel in this build (both families: table lookup and
/// bit shift), least preferred first.
pub fn codebook_kernels() -> impl Iterator<Item = CodebookUkernel> {
    avx2::shift::SHIFT_KERNELS
        .iter()
        .chain(avx2::codebook::CODEBOOK_KERNELS)
        .chain(avx512vnni::shift::SHIFT_KERNELS)
        .chain(avx512vnni::codebook::CODEBOOK_KERNELS)
        .copied()
}

/// Every x86-64 codebook decoder (codes to int8 GEMM panels, for calls with many rows)
/// in this build, least preferred first.
pub fn codebook_decoders() -> impl Iterator<Item = CodebookDecoder> {
    avx2::decode::DECODERS.iter().chain(avx512vnni::decode::DECODERS).copied()
}
