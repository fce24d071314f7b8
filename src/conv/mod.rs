//! Convolution: NHWC conv2d with prepacked OHWI filters.

pub mod geometry;

pub use geometry::Conv2dGeometry;
