//! The oracle: plain loops, i64 accumulation, and the single definition of every
//! rounding rule in qkern. Production kernels must equal these bit for bit.

pub mod codebook;
pub mod conv;
pub mod dwconv;
pub mod gemm;
pub mod requant;

pub use codebook::*;
pub use conv::*;
pub use dwconv::*;
pub use gemm::*;
pub use requant::*;
