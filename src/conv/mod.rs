//! Convolution on NHWC tensors.

#[allow(unsafe_code)] // calls the depthwise microkernels (DESIGN.md §1)
mod depthwise;
mod geometry;

pub use depthwise::{DepthwiseConv, DepthwiseFilter};
pub use geometry::Conv2dGeometry;
