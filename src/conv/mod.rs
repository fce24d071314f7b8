//! Convolution: NHWC conv2d with prepacked OHWI filters.

#[allow(unsafe_code)] // calls the depthwise microkernels (DESIGN.md §1)
mod depthwise;
pub mod geometry;

pub use depthwise::{DepthwiseConv, DepthwiseFilter};
pub use geometry::Conv2dGeometry;
