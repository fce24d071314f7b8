//! Conv2d geometry: the shape arithmetic every conv path shares, validated once.

use crate::error::{Error, Result};

/// NHWC conv2d geometry (batch, input H/W/C, output C, kernel, stride, dilation,
/// asymmetric padding, groups).
///
/// Input is `[batch][in_h][in_w][in_c]`, weights OHWI `[out_c][kernel_h][kernel_w][in_c/groups]`,
/// output `[batch][out_h][out_w][out_c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels (all groups).
    pub in_c: usize,
    /// Output channels (all groups).
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
    /// Rows of padding above.
    pub pad_top: usize,
    /// Columns of padding on the left.
    pub pad_left: usize,
    /// Rows of padding below.
    pub pad_bottom: usize,
    /// Columns of padding on the right.
    pub pad_right: usize,
    /// Channel groups; `in_c` and `out_c` must both be multiples of it.
    pub groups: usize,
}

impl Conv2dGeometry {
    /// A geometry with stride 1, dilation 1, no padding and one group; adjust it with the
    /// builder methods, then [`validate`](Self::validate) (every conv entry point does).
    pub fn new(batch: usize, in_h: usize, in_w: usize, in_c: usize, out_c: usize, kernel_h: usize, kernel_w: usize) -> Self {
        Conv2dGeometry {
            batch,
            in_h,
            in_w,
            in_c,
            out_c,
            kernel_h,
            kernel_w,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            groups: 1,
        }
    }

    /// Sets the strides.
    pub fn stride(mut self, stride_h: usize, stride_w: usize) -> Self {
        self.stride_h = stride_h;
        self.stride_w = stride_w;
        self
    }

    /// Sets the dilations.
    pub fn dilation(mut self, dilation_h: usize, dilation_w: usize) -> Self {
        self.dilation_h = dilation_h;
        self.dilation_w = dilation_w;
        self
    }

    /// Sets the padding (top, left, bottom, right).
    pub fn padding(mut self, top: usize, left: usize, bottom: usize, right: usize) -> Self {
        self.pad_top = top;
        self.pad_left = left;
        self.pad_bottom = bottom;
        self.pad_right = right;
        self
    }

    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Input channels per group (the GEMM K per tap).
    pub fn group_in_c(&self) -> usize {
        self.in_c / self.groups.max(1)
    }

    /// Output channels per group (the GEMM N).
    pub fn group_out_c(&self) -> usize {
        self.out_c / self.groups.max(1)
    }

    /// Output height; 0 when the dilated kernel does not fit the padded input
    /// ([`validate`](Self::validate) rejects that).
    pub fn out_h(&self) -> usize {
        out_size(self.in_h, self.pad_top, self.pad_bottom, self.kernel_h, self.dilation_h, self.stride_h)
    }

    /// Output width; 0 when the dilated kernel does not fit the padded input.
    pub fn out_w(&self) -> usize {
        out_size(self.in_w, self.pad_left, self.pad_right, self.kernel_w, self.dilation_w, self.stride_w)
    }

    /// `groups == in_c == out_c`: one filter per channel (the depthwise kernels' case).
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_c && self.groups == self.out_c
    }

    /// `1×1` kernel, stride 1, no padding: the input is already the GEMM's A matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.pad_bottom == 0
            && self.pad_right == 0
    }

    /// Elements of the NHWC input `batch·in_h·in_w·in_c` (valid after `validate`).
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

    /// Elements of the OHWI weights `out_c·kernel_h·kernel_w·(in_c/groups)`.
    pub fn weight_len(&self) -> usize {
        self.out_c * self.kernel_h * self.kernel_w * self.group_in_c()
    }

    /// Elements of the NHWC output `batch·out_h·out_w·out_c`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.out_c
    }

    /// Multiply-accumulates of one run: `batch·out_h·out_w·out_c·kernel_h·kernel_w·in_c/groups`.
    pub fn macs(&self) -> u64 {
        self.output_len() as u64 * (self.kernel_h * self.kernel_w * self.group_in_c()) as u64
    }

    /// Checks every parameter: sizes non-zero, stride and dilation ≥ 1, groups dividing
    /// both channel counts, an output of at least one pixel, and every size the kernels
    /// compute (tensor lengths, padded extents, the GEMM K) fitting `usize` and `i32` offsets.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("batch", self.batch),
            ("in_h", self.in_h),
            ("in_w", self.in_w),
            ("in_c", self.in_c),
            ("out_c", self.out_c),
            ("kernel_h", self.kernel_h),
            ("kernel_w", self.kernel_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
            ("dilation_h", self.dilation_h),
            ("dilation_w", self.dilation_w),
            ("groups", self.groups),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(Error::InvalidParameter(format!("conv2d: `{name}` must be at least 1, got 0")));
            }
        }
        if !self.in_c.is_multiple_of(self.groups) {
            return Err(Error::InvalidParameter(format!(
                "conv2d: `groups` ({}) must divide the input channels `in_c` ({})",
                self.groups, self.in_c
            )));
        }
        if !self.out_c.is_multiple_of(self.groups) {
            return Err(Error::InvalidParameter(format!(
                "conv2d: `groups` ({}) must divide the output channels `out_c` ({})",
                self.groups, self.out_c
            )));
        }
        let ovf = |what: &str| Error::Overflow(format!("conv2d: {what} overflows"));
        // Padded extents and dilated kernel extents.
        let padded_h = self
            .in_h
            .checked_add(self.pad_top)
            .and_then(|v| v.checked_add(self.pad_bottom))
            .ok_or_else(|| ovf("padded height"))?;
        let padded_w = self
            .in_w
            .checked_add(self.pad_left)
            .and_then(|v| v.checked_add(self.pad_right))
            .ok_or_else(|| ovf("padded width"))?;
        let eff_kh = (self.kernel_h - 1).checked_mul(self.dilation_h).ok_or_else(|| ovf("dilated kernel height"))? + 1;
        let eff_kw = (self.kernel_w - 1).checked_mul(self.dilation_w).ok_or_else(|| ovf("dilated kernel width"))? + 1;
        if eff_kh > padded_h || eff_kw > padded_w {
            return Err(Error::InvalidParameter(format!(
                "conv2d: output size would be ≤ 0: dilated kernel {eff_kh}×{eff_kw} is larger than the padded input {padded_h}×{padded_w}"
            )));
        }
        let mul = |a: usize, b: usize, what: &str| a.checked_mul(b).ok_or_else(|| ovf(what));
        let in_len = mul(mul(mul(self.batch, self.in_h, "input size")?, self.in_w, "input size")?, self.in_c, "input size")?;
        let taps = mul(self.kernel_h, self.kernel_w, "kernel size")?;
        let k = mul(taps, self.group_in_c(), "weight size")?;
        let w_len = mul(k, self.out_c, "weight size")?;
        let pixels = mul(mul(self.batch, self.out_h(), "output size")?, self.out_w(), "output size")?;
        let out_len = mul(pixels, self.out_c, "output size")?;
        let ind_len = mul(pixels, taps, "indirection buffer size")?;
        // Offsets are kept in i32-sized arithmetic in places (and isize for pointers): keep
        // every length within isize::MAX so element offsets never wrap.
        for (what, v) in [("input size", in_len), ("weight size", w_len), ("output size", out_len), ("indirection buffer size", ind_len)] {
            if v > isize::MAX as usize / 8 {
                return Err(ovf(what));
            }
        }
        Ok(())
    }
}

fn out_size(input: usize, pad0: usize, pad1: usize, kernel: usize, dilation: usize, stride: usize) -> usize {
    if stride == 0 || kernel == 0 || dilation == 0 {
        return 0;
    }
    let padded = match input.checked_add(pad0).and_then(|v| v.checked_add(pad1)) {
        Some(v) => v,
        None => return 0,
    };
    let eff = match (kernel - 1).checked_mul(dilation) {
        Some(v) => v + 1,
        None => return 0,
    };
    if eff > padded { 0 } else { (padded - eff) / stride + 1 }
}

impl Conv2dGeometry {
    /// The same shape for the scalar reference `qkern_kernels::reference::conv2d_i64`.
    pub fn to_reference(&self) -> qkern_kernels::reference::RefConvShape {
        qkern_kernels::reference::RefConvShape {
            batch: self.batch,
            in_h: self.in_h,
            in_w: self.in_w,
            in_c: self.in_c,
            out_c: self.out_c,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            pad_top: self.pad_top,
            pad_left: self.pad_left,
            pad_bottom: self.pad_bottom,
            pad_right: self.pad_right,
            groups: self.groups,
        }
    }
}
