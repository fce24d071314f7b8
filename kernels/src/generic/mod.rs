//! Portable production kernels. They are the fallback on every CPU and the first
//! consumer of each packed format; the compiler may vectorise them, nothing more.

pub mod dwconv;
pub mod codebook;
pub mod gemm;
pub mod requant;
pub mod shift;

pub use dwconv::DWCONV_KERNELS;
pub use gemm::*;
pub use codebook::{
    CODEBOOK_KERNELS, QX8_CODEBOOK4_GEMM_4X16C8__GENERIC, QX8_CODEBOOK4_I16_GEMM_4X16C8__GENERIC, QX8_CODEBOOK5_GEMM_4X16C8__GENERIC,
    QX8_CODEBOOK5_I16_GEMM_4X16C8__GENERIC,
};
