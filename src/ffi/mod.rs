//! The C ABI. Header: `include/qkern.h`.
