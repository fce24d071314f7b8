//! Differential conv2d: random kernel size, stride, dilation, padding, groups (1, 2, C,
//! or ones that do not divide), channels, batch and zero points, including invalid
//! parameters, which must give an error, never a panic; every valid case on every ISA
//! against the direct 7-loop i64 reference (i32 output, which must error exactly when a
//! result does not fit).

use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput};
use qkern::{Context, Int8, PerChannel, WeightQuant};
use qkern_kernels::reference::conv::{RefConvShape, conv2d_i64};

use super::common::Gen;

pub fn run(data: &[u8]) {
    let mut g = Gen::new(data);
    match (g.flip(), g.flip()) {
        (false, false) => case::<u8, i8>(&mut g),
        (false, true) => case::<u8, u8>(&mut g),
        (true, false) => case::<i8, i8>(&mut g),
        (true, true) => case::<i8, u8>(&mut g),
    }
}

fn case<A: Int8, B: Int8>(g: &mut Gen) {
    // Sizes may be 0 and groups may not divide: those must be rejected.
    let groups = g.pick(&[1, 1, 2, 3, 0, 4]);
    let (cpg, opg) = (g.size(0, 9), g.size(0, 9));
    let depthwise = g.size(0, 3) == 0;
    let (in_c, out_c, groups) = if depthwise {
        let c = g.size(1, 40);
        (c, c * g.pick(&[1, 1, 2]), c)
    } else if g.size(0, 15) == 0 {
        (g.size(0, 12), g.size(0, 12), groups) // arbitrary: may not divide
    } else {
        (cpg * groups.max(1), opg * groups.max(1), groups)
    };
    let mut geo = Conv2dGeometry::new(g.size(1, 2), g.size(0, 11), g.size(0, 11), in_c, out_c, g.size(0, 7), g.size(0, 7));
    geo.stride_h = g.size(0, 3);
    geo.stride_w = g.size(0, 3);
    geo.dilation_h = g.size(0, 3);
    geo.dilation_w = g.size(0, 3);
    geo.pad_top = g.size(0, 3);
    geo.pad_left = g.size(0, 3);
    geo.pad_bottom = g.size(0, 3);
    geo.pad_right = g.size(0, 3);
    geo.groups = groups;

    let valid = independent_valid(&geo);
    // Lengths computed without trusting the geometry's own helpers on invalid input.
    let w_len = if valid { geo.weight_len() } else { out_c * geo.kernel_h * geo.kernel_w * in_c.checked_div(groups).unwrap_or(1) };
    let (fa, fb) = (g.fill(), g.fill());
    let w: Vec<B> = g.values(w_len, B::MIN as i64, B::MAX as i64, fb).into_iter().map(|v| B::saturate_from(v as i32)).collect();
    let zw: Vec<i32> = if g.flip() {
        vec![g.pick(&[0, B::MIN, B::MAX])]
    } else {
        { let f = g.fill(); g.values(out_c, B::MIN as i64, B::MAX as i64, f) }.into_iter().map(|v| v as i32).collect()
    };
    let quant = WeightQuant {
        zero_point: if zw.len() == 1 { PerChannel::Tensor(zw[0]) } else { PerChannel::Channel(&zw) },
        scale: None,
    };
    let ctx0 = Context::for_isa(qkern::Isa::Scalar).unwrap();
    let filter = Conv2d::new_in(&ctx0, geo, &w, quant);
    if !valid {
        assert!(filter.is_err(), "invalid geometry {geo:?} was accepted");
        return;
    }
    if let Err(e) = &filter {
        panic!("valid geometry {geo:?} rejected: {e}");
    }
    let za = A::saturate_from(g.pick(&[A::MIN, A::MAX, 0, 1]));
    let x: Vec<A> = g.values(geo.input_len(), A::MIN as i64, A::MAX as i64, fa).into_iter().map(|v| A::saturate_from(v as i32)).collect();
    let s = RefConvShape {
        batch: geo.batch,
        in_h: geo.in_h,
        in_w: geo.in_w,
        in_c: geo.in_c,
        out_c: geo.out_c,
        kernel_h: geo.kernel_h,
        kernel_w: geo.kernel_w,
        stride_h: geo.stride_h,
        stride_w: geo.stride_w,
        dilation_h: geo.dilation_h,
        dilation_w: geo.dilation_w,
        pad_top: geo.pad_top,
        pad_left: geo.pad_left,
        pad_bottom: geo.pad_bottom,
        pad_right: geo.pad_right,
        groups: geo.groups,
    };
    let mut expect = vec![0i64; geo.output_len()];
    conv2d_i64(&s, &x, za.to_i32(), &w, &zw, &mut expect);
    let fits = expect.iter().all(|&v| i32::try_from(v).is_ok());
    let short_input = g.size(0, 15) == 0;
    for &isa in &qkern::dispatch::cpu().isas {
        let ctx = Context::for_isa(isa).unwrap();
        let f = Conv2d::new_in(&ctx, geo, &w, quant).unwrap();
        let mut y = vec![0i32; geo.output_len()];
        if short_input {
            // A buffer one element short must be an error.
            let r = ctx.conv2d_i32(&f, ConvInput::new(&x[..x.len() - 1], za, 1.0), None, &mut y);
            assert!(r.is_err(), "{isa:?}: a short input was accepted");
            continue;
        }
        // Twice: the second call runs on the cached indirection buffer and workspaces.
        for call in 0..2 {
            match ctx.conv2d_i32(&f, ConvInput::new(&x, za, 1.0), None, &mut y) {
                Ok(()) => {
                    for (i, (&got, &want)) in y.iter().zip(&expect).enumerate() {
                        assert_eq!(got as i64, want, "{isa:?} call {call} {} output {i} of {geo:?}", f.kernel_name());
                    }
                }
                Err(e) => assert!(!fits, "{isa:?}: error {e} although every result fits i32 ({geo:?})"),
            }
        }
    }
}

/// Validity from the definition, independently of `Conv2dGeometry::validate`.
fn independent_valid(g: &Conv2dGeometry) -> bool {
    let sizes = [g.batch, g.in_h, g.in_w, g.in_c, g.out_c, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.dilation_h, g.dilation_w, g.groups];
    if sizes.contains(&0) || !g.in_c.is_multiple_of(g.groups) || !g.out_c.is_multiple_of(g.groups) {
        return false;
    }
    let eff_h = (g.kernel_h - 1) * g.dilation_h + 1;
    let eff_w = (g.kernel_w - 1) * g.dilation_w + 1;
    eff_h <= g.in_h + g.pad_top + g.pad_bottom && eff_w <= g.in_w + g.pad_left + g.pad_right
}
