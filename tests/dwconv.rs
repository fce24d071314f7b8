//! Depthwise convolution: every registered microkernel through the shared tester, and the
//! safe API against the direct reference convolution.

mod common;

use std::time::Instant;

use qkern::dispatch;

#[test]
fn every_dwconv_kernel_matches_the_reference() {
    let kernels = dispatch::dwconv_kernels();
    assert!(!kernels.is_empty(), "no depthwise kernel registered");
    let mut ran = 0;
    for k in &kernels {
        if !common::test_tier(&format!("dwconv kernel {}", k.name), k.isa) {
            continue;
        }
        if !dispatch::dwconv_runs_here(k) {
            eprintln!("SKIP dwconv kernel {}: this CPU lacks one of {:?}", k.name, k.extra_features);
            continue;
        }
        let t0 = Instant::now();
        // SAFETY: the CPU runs `k` (its tier and extra features, checked just above); `k`
        // comes from the registered list, whose entry points implement the
        // `DwconvUkernelFn` contract, and the tester builds only arguments within it.
        let s = unsafe { qkern_kernels::testing::check_dwconv_ukernel(k) };
        eprintln!("{}: {} combos, {} cases, {} calls in {:?}", s.kernel, s.combos, s.cases, s.calls, t0.elapsed());
        assert_eq!(s.combos, k.run.iter().filter(|f| f.is_some()).count());
        assert!(s.cases > 0 && s.calls >= s.cases);
        ran += 1;
    }
    assert!(ran >= 1 || common::tiers_filtered());
}

#[test]
fn dwconv_kernels_are_well_formed() {
    let kernels = dispatch::dwconv_kernels();
    for (i, k) in kernels.iter().enumerate() {
        assert!(kernels[..i].iter().all(|o| o.name != k.name), "{}: registered twice", k.name);
        assert!(k.format.ct >= 1);
        let kr = if k.format.kr == 4 { "c4" } else { "" };
        let tile = match k.taps {
            Some(t) => format!("_{t}p{}{kr}__", k.format.ct),
            None => format!("_up{}{kr}__", k.format.ct),
        };
        assert!(k.name.contains(&tile), "{}: name does not carry {tile}", k.name);
        let suffix = if k.isa == qkern::Isa::Scalar { "generic" } else { k.isa.name() };
        assert!(k.name.ends_with(suffix), "{}: name does not end with {suffix}", k.name);
    }
    let generic = kernels.iter().find(|k| k.isa == qkern::Isa::Scalar).expect("a portable dwconv kernel");
    assert!(generic.taps.is_none() && generic.run.iter().all(Option::is_some));
}

/// The kernel dispatch picks is the best registered one of the tier, never the portable
/// kernel where the tier has its own: at every tier this CPU runs (a tier listed in
/// `QKERN_REQUIRE_ISA` but missing fails in `available_isas`), through the table and
/// through a filter packed by the public API. On AArch64, NEON is the baseline: a
/// detection or registration mistake that silently fell back to the generic kernel
/// fails here under every qemu model.
#[test]
fn dispatch_picks_the_tier_s_own_dwconv_kernel() {
    use qkern::conv::DepthwiseFilter;
    use qkern::{Context, Isa, WeightQuant};
    let all = dispatch::dwconv_kernels();
    if cfg!(target_arch = "aarch64") {
        assert!(dispatch::cpu().has(Isa::Neon), "NEON not detected on AArch64");
        assert!(all.iter().any(|k| k.isa == Isa::Neon), "no NEON depthwise kernel registered");
    }
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap();
        // (kernel size, centred weight range): 3×3, 5×5 and an any-size 7×1; i8-range
        // weights (zero point 0) and full i16-range ones.
        for (kh, kw) in [(3, 3), (5, 5), (7, 1)] {
            let taps = kh * kw;
            for (lo, hi) in [(-128, 127), (-255, 255)] {
                let eligible = |k: &&qkern_kernels::DwconvUkernel| {
                    k.isa.within(isa) && dispatch::dwconv_runs_here(k) && k.handles_taps(taps) && k.takes_weights(lo, hi)
                };
                // The best tier that has a kernel for this filter, then its best kernel.
                let tier = all.iter().filter(eligible).map(|k| k.isa).max().unwrap();
                let want = all.iter().filter(eligible).rfind(|k| k.isa == tier).unwrap();
                if isa != Isa::Scalar && all.iter().any(|k| k.isa == isa) {
                    assert_ne!(tier, Isa::Scalar, "{}: {taps} taps fall back to the portable kernel", isa.name());
                }
                if taps != 7 {
                    assert!(want.taps == Some(taps) || tier == Isa::Scalar, "{}: no specialised {kh}x{kw} kernel", want.name);
                }
                let got = ctx.kernels().dwconv_for(taps, lo, hi).unwrap();
                assert_eq!(got.name, want.name, "{}: {kh}x{kw} weights in [{lo}, {hi}]", isa.name());
                // The same through a filter packed by the public API (u8 weights
                // `z + max(lo, −z)` and 255, zero point `z = 255 − hi`: centred within [lo, hi]).
                let z = 255 - hi;
                let w: Vec<u8> = (0..2 * taps).map(|i| if i % 2 == 0 { (z + lo.max(-z)) as u8 } else { 255 }).collect();
                let f = DepthwiseFilter::new_in(&ctx, &w, 2, kh, kw, WeightQuant::per_tensor(z, 1.0)).unwrap();
                let fw = dispatch::dwconv_kernels().into_iter().find(|k| k.name == f.kernel_name()).unwrap();
                assert!(fw.isa == tier, "{}: packed for {} instead of a {} kernel", isa.name(), f.kernel_name(), tier.name());
            }
        }
    }
}

mod api {
    use super::common;
    use qkern::conv::{Conv2dGeometry, DepthwiseConv, DepthwiseFilter};
    use qkern::{Activations, Context, Error, Int8, MatrixMut, MatrixRef, RequantMode, Requantize, WeightQuant};
    use qkern_kernels::reference::{RefConvShape, RefOutput, conv2d_i64, output_stage_ref, quantize_multiplier};
    use qkern_kernels::OutputKind;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The direct 7-loop reference convolution (`reference::conv2d_i64`, exact in i64)
    /// with groups = channels: NHWC input, OHWI weights `[c][ky][kx][1]`.
    fn reference<A: Int8, B: Int8>(g: &Conv2dGeometry, x: &[A], za: i32, w: &[B], zw: &[i32]) -> (usize, usize, Vec<i64>) {
        let s = RefConvShape {
            batch: g.batch,
            in_h: g.in_h,
            in_w: g.in_w,
            in_c: g.in_c,
            out_c: g.out_c,
            kernel_h: g.kernel_h,
            kernel_w: g.kernel_w,
            stride_h: g.stride_h,
            stride_w: g.stride_w,
            dilation_h: g.dilation_h,
            dilation_w: g.dilation_w,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            pad_bottom: g.pad_bottom,
            pad_right: g.pad_right,
            groups: g.groups,
        };
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut y = vec![0i64; g.batch * oh * ow * g.out_c];
        conv2d_i64(&s, x, za, w, zw, &mut y);
        (oh, ow, y)
    }

    fn geometry(rng: &mut ChaCha8Rng, c: usize) -> Conv2dGeometry {
        loop {
            let (kh, kw) = (rng.random_range(1..=7), rng.random_range(1..=7));
            let g = Conv2dGeometry {
                batch: rng.random_range(1..=2),
                in_h: if rng.random_bool(0.15) { 1 } else { rng.random_range(1..=12) },
                in_w: if rng.random_bool(0.15) { 1 } else { rng.random_range(1..=12) },
                in_c: c,
                out_c: c,
                kernel_h: kh,
                kernel_w: kw,
                stride_h: rng.random_range(1..=3),
                stride_w: rng.random_range(1..=3),
                dilation_h: rng.random_range(1..=3),
                dilation_w: rng.random_range(1..=3),
                pad_top: rng.random_range(0..=3),
                pad_left: rng.random_range(0..=3),
                pad_bottom: rng.random_range(0..=3),
                pad_right: rng.random_range(0..=3),
                groups: c,
            };
            let ok = |i: usize, k: usize, d: usize, p: usize| i + p > (k - 1) * d;
            if ok(g.in_h, g.kernel_h, g.dilation_h, g.pad_top + g.pad_bottom)
                && ok(g.in_w, g.kernel_w, g.dilation_w, g.pad_left + g.pad_right)
            {
                return g;
            }
        }
    }

    /// One random case on one context: every output stage against the reference.
    fn case<A: Int8, B: Int8>(ctx: &Context, rng: &mut ChaCha8Rng, g: &Conv2dGeometry, extreme: bool, symmetric: bool) {
        let c = g.in_c;
        let taps = g.kernel_h * g.kernel_w;
        let in_px = g.batch * g.in_h * g.in_w;
        let xstride = c + if rng.random_bool(0.3) { rng.random_range(1..4) } else { 0 };
        let pick = |rng: &mut ChaCha8Rng, lo: i32, hi: i32| if extreme { if rng.random_bool(0.5) { lo } else { hi } } else { rng.random_range(lo..=hi) };
        let x: Vec<A> = (0..(in_px - 1) * xstride + c).map(|_| A::saturate_from(pick(rng, A::MIN, A::MAX))).collect();
        let w: Vec<B> = (0..c * taps).map(|_| B::saturate_from(pick(rng, B::MIN, B::MAX))).collect();
        let za = pick(rng, A::MIN, A::MAX);
        let zw: Vec<i32> = if symmetric {
            // Centred weights within i8: the `…c4` kernels where the tier has them.
            vec![if B::SIGNED { 0 } else { 128 }; c]
        } else if rng.random_bool(0.5) { vec![pick(rng, B::MIN, B::MAX); c] } else { (0..c).map(|_| pick(rng, B::MIN, B::MAX)).collect() };
        let sw: Vec<f32> = (0..c).map(|_| rng.random_range(0.001f32..0.05)).collect();
        let filter = DepthwiseFilter::new_in(ctx, &w, c, g.kernel_h, g.kernel_w, WeightQuant::per_column(&zw, &sw)).unwrap();
        if symmetric && ctx.kernels().isa == qkern::Isa::Avx512Vnni && qkern::dispatch::dwconv_runs_here(&filter.kernel()) {
            assert!(filter.kernel_name().contains("c4"), "{}: not the i8-weight kernel", filter.kernel_name());
        }
        let mut conv = DepthwiseConv::new(filter, g).unwrap();
        // The reference over a dense copy of the (possibly strided) input.
        let dense: Vec<A> = (0..in_px).flat_map(|p| x[p * xstride..p * xstride + c].to_vec()).collect();
        let (oh, ow, acc) = reference(g, &dense, za, &w, &zw);
        assert_eq!(conv.output_shape(), (g.batch, oh, ow, c));
        let out_px = g.batch * oh * ow;
        let ostride = c + if rng.random_bool(0.3) { 2 } else { 0 };
        let bias: Vec<i32> = (0..c).map(|_| if extreme && rng.random_bool(0.3) { i32::MAX - 5 } else { rng.random_range(-50_000..50_000) }).collect();
        let bias_f: Vec<f32> = (0..c).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        let sx = 0.02f32;
        let input = Activations::new(MatrixRef::new(&x, in_px, c).with_stride(xstride), A::saturate_from(za), sx);
        let ctxs = format!("{} {}x{} {g:?} za={za} extreme={extreme}", conv.filter().kernel_name(), A::NAME, B::NAME);
        let idx = |p: usize, ch: usize| p * ostride + ch;

        // I32 (the bias may push results past i32: then an Overflow error is the answer).
        let mut y = vec![7i32; (out_px - 1) * ostride + c];
        let r = conv.run_i32(ctx, input, Some(&bias), MatrixMut::new(&mut y, out_px, c).with_stride(ostride));
        let fits = acc.iter().enumerate().all(|(i, &v)| i32::try_from(v + bias[i % c] as i64).is_ok());
        match r {
            Ok(()) => {
                assert!(fits, "{ctxs}: i32 output accepted a result past i32");
                for p in 0..out_px {
                    for ch in 0..c {
                        assert_eq!(y[idx(p, ch)] as i64, acc[p * c + ch] + bias[ch] as i64, "{ctxs}: i32 at ({p}, {ch})");
                    }
                }
            }
            Err(Error::Overflow(_)) => assert!(!fits, "{ctxs}: spurious overflow"),
            Err(e) => panic!("{ctxs}: {e}"),
        }
        // F32.
        let mut yf = vec![0f32; (out_px - 1) * ostride + c];
        conv.run_f32(ctx, input, Some(&bias_f), MatrixMut::new(&mut yf, out_px, c).with_stride(ostride)).unwrap();
        let scale: Vec<f32> = sw.iter().map(|&s| sx * s).collect();
        for p in 0..out_px {
            for ch in 0..c {
                let want = (acc[p * c + ch] as f32 * scale[ch] + bias_f[ch]).to_bits();
                assert_eq!(yf[idx(p, ch)].to_bits(), want, "{ctxs}: f32 at ({p}, {ch})");
            }
        }
        // Requantized, every mode, u8 and i8 outputs.
        for mode in RequantMode::ALL {
            let sy = rng.random_range(0.0005f32..0.05);
            requant::<A, u8>(ctx, &mut conv, input, &acc, &bias, &sw, sy, mode, rng, ostride, &ctxs);
            requant::<A, i8>(ctx, &mut conv, input, &acc, &bias, &sw, sy, mode, rng, ostride, &ctxs);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn requant<A: Int8, O: Int8>(
        ctx: &Context,
        conv: &mut DepthwiseConv,
        input: Activations<'_, A>,
        acc: &[i64],
        bias: &[i32],
        sw: &[f32],
        sy: f32,
        mode: RequantMode,
        rng: &mut ChaCha8Rng,
        ostride: usize,
        ctxs: &str,
    ) {
        let c = sw.len();
        let out_px = acc.len() / c;
        let zp = O::saturate_from(rng.random_range(O::MIN..=O::MAX));
        let mut rq = Requantize::new(sy, zp).mode(mode).bias(bias);
        if rng.random_bool(0.3) {
            rq = rq.relu();
        }
        let mut y = vec![O::default(); (out_px - 1) * ostride + c];
        conv.run_requantize(ctx, input, &rq, MatrixMut::new(&mut y, out_px, c).with_stride(ostride)).unwrap();
        let real: Vec<f32> = sw.iter().map(|&s| (input.scale * s) / sy).collect();
        let qm: Vec<_> = match mode {
            RequantMode::Fp32 => Vec::new(),
            m => sw.iter().map(|&s| quantize_multiplier(input.scale as f64 * s as f64 / sy as f64, m)).collect(),
        };
        let ro = RefOutput {
            kind: if O::SIGNED { OutputKind::I8 } else { OutputKind::U8 },
            mode,
            bias_i32: Some(bias),
            scale: &real,
            bias_f32: None,
            qmult: &qm,
            out_zero_point: zp.to_i32(),
            qmin: rq.min.to_i32(),
            qmax: rq.max.to_i32(),
        };
        for p in 0..out_px {
            for ch in 0..c {
                let want = output_stage_ref(acc[p * c + ch], ch, &ro);
                assert_eq!(y[p * ostride + ch].to_i32() as i64, want, "{ctxs}: {} {} at ({p}, {ch})", O::NAME, mode.name());
            }
        }
    }

    #[test]
    fn depthwise_matches_the_direct_convolution_on_every_isa() {
        let mut rng = ChaCha8Rng::seed_from_u64(0xd3c0);
        let channels = [1usize, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 70, 96, 130];
        for isa in common::available_isas() {
            let ctx = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
            for (i, &c) in channels.iter().enumerate() {
                for j in 0..6 {
                    let g = geometry(&mut rng, c);
                    let extreme = j % 3 == 2;
                    let sym = j % 2 == 1;
                    match (i + j) % 4 {
                        0 => case::<u8, i8>(&ctx, &mut rng, &g, extreme, sym),
                        1 => case::<u8, u8>(&ctx, &mut rng, &g, extreme, sym),
                        2 => case::<i8, i8>(&ctx, &mut rng, &g, extreme, sym),
                        _ => case::<i8, u8>(&ctx, &mut rng, &g, extreme, sym),
                    }
                }
                // The specialised tap counts.
                for k in [3, 5] {
                    let mut g = geometry(&mut rng, c);
                    (g.kernel_h, g.kernel_w, g.dilation_h, g.dilation_w) = (k, k, 1, 1);
                    (g.in_h, g.in_w) = (g.in_h.max(k), g.in_w.max(k));
                    case::<u8, i8>(&ctx, &mut rng, &g, i % 2 == 0, true);
                    case::<i8, u8>(&ctx, &mut rng, &g, i % 2 == 1, i % 3 == 0);
                }
            }
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let ctx = Context::new().unwrap();
        let w = [1i8; 2 * 9];
        let f = DepthwiseFilter::new_in(&ctx, &w, 2, 3, 3, WeightQuant::per_tensor(0, 1.0)).unwrap();
        let good = Conv2dGeometry {
            batch: 1, in_h: 4, in_w: 4, in_c: 2, out_c: 2, kernel_h: 3, kernel_w: 3, stride_h: 1, stride_w: 1,
            dilation_h: 1, dilation_w: 1, pad_top: 0, pad_left: 0, pad_bottom: 0, pad_right: 0, groups: 2,
        };
        assert!(DepthwiseConv::new(f.clone(), &good).is_ok());
        for bad in [
            Conv2dGeometry { in_h: 2, ..good },             // output height ≤ 0
            Conv2dGeometry { dilation_w: 3, ..good },       // dilated kernel wider than the input
            Conv2dGeometry { groups: 1, ..good },           // not depthwise
            Conv2dGeometry { out_c: 4, ..good },            // depth multiplier 2
            Conv2dGeometry { in_c: 3, out_c: 3, groups: 3, ..good }, // filter mismatch
            Conv2dGeometry { kernel_h: 2, ..good },         // filter mismatch
            Conv2dGeometry { stride_h: 0, ..good },
            Conv2dGeometry { batch: 0, ..good },
        ] {
            assert!(DepthwiseConv::new(f.clone(), &bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(DepthwiseFilter::new_in(&ctx, &w[..17], 2, 3, 3, WeightQuant::per_tensor(0, 1.0)), Err(Error::ShapeMismatch(_))));
        assert!(matches!(DepthwiseFilter::new_in(&ctx, &w, 2, 3, 3, WeightQuant::per_tensor(200, 1.0)), Err(Error::ZeroPointOutOfRange { .. })));
        assert!(DepthwiseFilter::new_in(&ctx, &w, 2, 3, 3, WeightQuant::per_tensor(0, f32::NAN)).is_err());
        assert!(DepthwiseFilter::new_in(&ctx, &w, 0, 3, 3, WeightQuant::per_tensor(0, 1.0)).is_err());
        let mut conv = DepthwiseConv::new(f, &good).unwrap();
        let x = [0u8; 32];
        let mut y = [0i32; 8];
        let a = Activations::new(MatrixRef::new(&x, 16, 2), 0u8, 1.0);
        assert!(conv.run_i32(&ctx, a, None, MatrixMut::new(&mut y[..7], 4, 2)).is_err(), "output too small");
        assert!(conv.run_i32(&ctx, a, None, MatrixMut::new(&mut y, 3, 2)).is_err(), "wrong output rows");
        let mut y = [0i32; 8];
        assert!(conv.run_i32(&ctx, Activations::new(MatrixRef::new(&x[..31], 16, 2), 0u8, 1.0), None, MatrixMut::new(&mut y, 4, 2)).is_err());
        assert!(conv.run_i32(&ctx, a, Some(&[1, 2, 3]), MatrixMut::new(&mut y, 4, 2)).is_err(), "bias length");
        let mut yu = [0u8; 8];
        assert!(conv.run_requantize(&ctx, a, &Requantize::new(0.0, 0u8), MatrixMut::new(&mut yu, 4, 2)).is_err());
        assert!(conv.run_requantize(&ctx, a, &Requantize::new(1.0, 9u8).clamp(10, 5), MatrixMut::new(&mut yu, 4, 2)).is_err());
        conv.run_i32(&ctx, a, None, MatrixMut::new(&mut y, 4, 2)).unwrap();
        // Without scales, only the i32 output.
        let f = DepthwiseFilter::new_in(&ctx, &w, 2, 3, 3, WeightQuant::zero_point_only(qkern::PerChannel::Tensor(0))).unwrap();
        let mut conv = DepthwiseConv::new(f, &good).unwrap();
        let mut yf = [0f32; 8];
        assert!(conv.run_f32(&ctx, a, None, MatrixMut::new(&mut yf, 4, 2)).is_err());
    }
}
