//! PLACEHOLDER until the `conv` branch lands: the fields of its `Conv2dGeometry`, which
//! the depthwise module reads (merge resolution takes the `conv` branch's file).

/// Geometry of a 2-D convolution on NHWC tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Conv2dGeometry {
    /// Images.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Padding above.
    pub pad_top: usize,
    /// Padding left.
    pub pad_left: usize,
    /// Padding below.
    pub pad_bottom: usize,
    /// Padding right.
    pub pad_right: usize,
    /// Groups.
    pub groups: usize,
}
