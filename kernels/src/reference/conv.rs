//! Reference conv2d: a direct 7-loop NHWC convolution, exact in i64.
//!
//! `out[n][oy][ox][oc] = Σ_{ky,kx,ic} (in[n][iy][ix][g·cpg+ic] − za) · (w[oc][ky][kx][ic] − zw[oc])`
//! with `iy = oy·stride_h + ky·dilation_h − pad_top` (likewise `ix`), `g = oc / (out_c/groups)`,
//! `cpg = in_c/groups`. A tap that falls in the padding reads the zero point `za` and so
//! contributes 0.

use crate::types::Int8;

/// The shape of a reference convolution (the same fields as `qkern::conv::Conv2dGeometry`,
/// which this crate cannot name). Callers validate it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefConvShape {
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

impl RefConvShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.in_h + self.pad_top + self.pad_bottom - ((self.kernel_h - 1) * self.dilation_h + 1)) / self.stride_h + 1
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.in_w + self.pad_left + self.pad_right - ((self.kernel_w - 1) * self.dilation_w + 1)) / self.stride_w + 1
    }
}

/// Exact conv2d into `out` (`batch·out_h·out_w·out_c` i64, NHWC). `input` is NHWC,
/// `weights` OHWI `[out_c][kernel_h][kernel_w][in_c/groups]`, `zw` holds 1 (per tensor)
/// or `out_c` (per output channel) weight zero points.
///
/// Panics on a slice too short or an invalid shape (only tests and validated callers use it).
pub fn conv2d_i64<A: Int8, B: Int8>(s: &RefConvShape, input: &[A], za: i32, weights: &[B], zw: &[i32], out: &mut [i64]) {
    assert!(zw.len() == 1 || zw.len() == s.out_c, "zw must have 1 or out_c entries");
    let (oh, ow) = (s.out_h(), s.out_w());
    let cpg = s.in_c / s.groups;
    let opg = s.out_c / s.groups;
    for n in 0..s.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..s.out_c {
                    let g = oc / opg;
                    let z = if zw.len() == 1 { zw[0] } else { zw[oc] } as i64;
                    let mut acc: i64 = 0;
                    for ky in 0..s.kernel_h {
                        let iy = (oy * s.stride_h + ky * s.dilation_h) as isize - s.pad_top as isize;
                        for kx in 0..s.kernel_w {
                            let ix = (ox * s.stride_w + kx * s.dilation_w) as isize - s.pad_left as isize;
                            let inside = iy >= 0 && ix >= 0 && (iy as usize) < s.in_h && (ix as usize) < s.in_w;
                            for ic in 0..cpg {
                                let a = if inside {
                                    let p = ((n * s.in_h + iy as usize) * s.in_w + ix as usize) * s.in_c + g * cpg + ic;
                                    input[p].to_i32() as i64 - za as i64
                                } else {
                                    0
                                };
                                let w = weights[((oc * s.kernel_h + ky) * s.kernel_w + kx) * cpg + ic].to_i32() as i64 - z;
                                acc += a * w;
                            }
                        }
                    }
                    out[((n * oh + oy) * ow + ox) * s.out_c + oc] = acc;
                }
            }
        }
    }
}
