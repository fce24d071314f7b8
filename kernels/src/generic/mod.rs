//! Portable production kernels. They are the fallback on every CPU and the first
//! consumer of each packed format; the compiler may vectorise them, nothing more.

pub mod dwconv;
pub mod gemm;

pub use dwconv::DWCONV_KERNELS;
pub use gemm::*;
