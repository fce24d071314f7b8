//! conv2d: every path against the 7-loop reference, exactly, on every ISA tier here.

mod common;

use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput, ConvPath};
use qkern::{Context, Error, Int8, PerChannel, RequantMode, Requantize, WeightQuant};
use qkern_kernels::OutputKind;
use qkern_kernels::reference::{RefOutput, conv2d_i64, output_stage_ref, quantize_multiplier};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One context per tier this CPU runs (skips printed by `common`).
fn contexts() -> Vec<Context> {
    common::available_isas().into_iter().map(|i| Context::for_isa(i).unwrap()).collect()
}

/// How the random data is drawn.
#[derive(Clone, Copy, Debug)]
enum Values {
    /// Uniform over the type.
    Full,
    /// Weights within ±40 (lets the AVX2 `maddubs` kernel take the filter).
    SmallWeights,
    /// Only the type's extremes, zero points at the extremes too.
    Extreme,
}

fn draw<T: Int8>(r: &mut ChaCha8Rng, v: Values, small: bool) -> T {
    let x = match v {
        Values::Extreme => {
            if r.random_bool(0.5) {
                T::MIN
            } else {
                T::MAX
            }
        }
        _ if small => r.random_range(-40..=40) + if T::SIGNED { 0 } else { 128 },
        _ => r.random_range(T::MIN..=T::MAX),
    };
    T::saturate_from(x)
}

fn zp<T: Int8>(r: &mut ChaCha8Rng, v: Values) -> i32 {
    match v {
        Values::Extreme => {
            if r.random_bool(0.5) {
                T::MIN
            } else {
                T::MAX
            }
        }
        _ => r.random_range(T::MIN..=T::MAX),
    }
}

/// The dispatch rule, restated: the indirect path wherever the filter's kernel has an
/// indirect entry, each tap's channels fill whole K groups and there is more than one
/// tap — and, for a kernel with a packed-A entry, only for grouped layers or at most `nr`
/// output channels per group where its packer widens A (AVX2's exact kernel, faster on
/// the gather path there), `2·nr` where it only re-lays bytes out (AArch64 dotprod,
/// i8mm); the gather path otherwise.
fn rule_indirect(ctx: &Context, filter: &Conv2d, g: &Conv2dGeometry) -> bool {
    let names = filter.group_kernel_names();
    let kernels: Vec<_> = names.iter().map(|&n| ctx.kernels().gemm_candidates.iter().find(|k| k.name == n)).collect();
    ctx.indirect_conv()
        && g.kernel_h * g.kernel_w > 1
        && !kernels.is_empty()
        && kernels.into_iter().all(|kernel| kernel.is_some_and(|k| {
            let max_oc = match k.packed_a {
                None => usize::MAX,
                Some(p) if p.group_bytes > k.mr * p.kr => k.format.nr,
                Some(_) => 2 * k.format.nr,
            };
            k.indirect.is_some() && g.group_in_c().is_multiple_of(k.format.kr) && (g.groups > 1 || g.group_out_c() <= max_oc)
        }))
}

/// Runs `g` through every output stage on `ctx` and compares with the reference;
/// returns the path the filter took.
fn check<A: Int8, B: Int8>(ctx: &Context, g: Conv2dGeometry, r: &mut ChaCha8Rng, per_channel: bool, v: Values) -> ConvPath {
    let small = matches!(v, Values::SmallWeights);
    let input: Vec<A> = (0..g.input_len()).map(|_| draw(r, v, false)).collect();
    let weights: Vec<B> = (0..g.weight_len()).map(|_| draw(r, v, small)).collect();
    let za = zp::<A>(r, v);
    let zw: Vec<i32> = if per_channel {
        (0..g.out_c).map(|_| if small { B::saturate_from(r.random_range(-40..=40) + if B::SIGNED { 0 } else { 128 }).to_i32() } else { zp::<B>(r, v) }).collect()
    } else {
        vec![if small { if B::SIGNED { 3 } else { 131 } } else { zp::<B>(r, v) }]
    };
    let sa: f32 = r.random_range(0.01..0.1);
    let sw: Vec<f32> = (0..zw.len()).map(|_| r.random_range(0.001..0.05)).collect();
    let quant = if per_channel { WeightQuant::per_column(&zw, &sw) } else { WeightQuant::per_tensor(zw[0], sw[0]) };
    let filter = Conv2d::new_in(ctx, g, &weights, quant).unwrap_or_else(|e| panic!("{g:?}: {e}"));
    let indirect = rule_indirect(ctx, &filter, &g);
    let expect_path = if g.is_depthwise() {
        ConvPath::Depthwise
    } else if g.is_pointwise() {
        ConvPath::Pointwise
    } else if indirect {
        ConvPath::IndirectGemm
    } else {
        ConvPath::ImplicitGemm
    };
    assert_eq!(filter.path(), expect_path, "{} {g:?}", filter.kernel_name());

    let mut acc = vec![0i64; g.output_len()];
    conv2d_i64(&g.to_reference(), &input, za, &weights, &zw, &mut acc);
    let oc = g.out_c;
    let sw_at = |j: usize| if per_channel { sw[j] } else { sw[0] };
    let bias: Vec<i32> = (0..oc).map(|_| r.random_range(-5000..=5000)).collect();
    let bias_f: Vec<f32> = (0..oc).map(|_| r.random_range(-3.0..3.0)).collect();
    let inp = ConvInput::new(&input, A::saturate_from(za), sa);
    let ctxs = format!("{} {:?} {g:?} per_channel={per_channel} {v:?} {}x{}", ctx.kernels().isa.name(), filter.path(), A::NAME, B::NAME);

    // i32 with and without bias.
    for b in [None, Some(&bias[..])] {
        let mut out = vec![0i32; g.output_len()];
        ctx.conv2d_i32(&filter, inp, b, &mut out).unwrap_or_else(|e| panic!("{ctxs}: {e}"));
        for (i, (&o, &e)) in out.iter().zip(&acc).enumerate() {
            let e = e + b.map_or(0, |b| b[i % oc] as i64);
            assert_eq!(o as i64, e, "i32 bias={} at {i}: {ctxs}", b.is_some());
        }
    }
    // f32 with bias.
    let fscale: Vec<f32> = (0..oc).map(|j| sa * sw_at(j)).collect();
    let mut outf = vec![0f32; g.output_len()];
    ctx.conv2d_f32(&filter, inp, Some(&bias_f), &mut outf).unwrap_or_else(|e| panic!("{ctxs}: {e}"));
    let ro = RefOutput { kind: OutputKind::F32, mode: RequantMode::Fp32, bias_i32: None, scale: &fscale, bias_f32: Some(&bias_f), qmult: &[], out_zero_point: 0, qmin: 0, qmax: 0 };
    for (i, (&o, &e)) in outf.iter().zip(&acc).enumerate() {
        assert_eq!(o.to_bits() as i64, output_stage_ref(e, i % oc, &ro), "f32 at {i}: {ctxs}");
    }
    // Every case here keeps whole-K i32 exact: the indirect path never fell back to
    // gathering (which would have created a workspace).
    if expect_path == ConvPath::IndirectGemm {
        assert_eq!(filter.workspace_bytes(), 0, "the indirect path gathered: {ctxs}");
    }
    // Requantized u8 and i8, every mode, with bias and a clamp.
    let k = (g.kernel_h * g.kernel_w * g.group_in_c()) as f32;
    let sy = sa * sw[0] * k.sqrt() * 60.0;
    for mode in [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
        check_rq::<A, u8>(ctx, &filter, inp, &acc, &bias, sa, &sw_at, sy, mode, &ctxs, r);
        check_rq::<A, i8>(ctx, &filter, inp, &acc, &bias, sa, &sw_at, sy, mode, &ctxs, r);
    }
    expect_path
}

#[allow(clippy::too_many_arguments)]
fn check_rq<A: Int8, O: Int8>(
    ctx: &Context,
    filter: &Conv2d,
    inp: ConvInput<'_, A>,
    acc: &[i64],
    bias: &[i32],
    sa: f32,
    sw_at: &dyn Fn(usize) -> f32,
    sy: f32,
    mode: RequantMode,
    ctxs: &str,
    r: &mut ChaCha8Rng,
) {
    let oc = filter.geometry().out_c;
    let ozp = r.random_range(O::MIN..=O::MAX);
    let relu = r.random_bool(0.3);
    let mut rq = Requantize::new(sy, O::saturate_from(ozp)).mode(mode).bias(bias);
    if relu {
        rq = rq.relu();
    }
    let mut out = vec![O::default(); acc.len()];
    ctx.conv2d_requantize(filter, inp, &rq, &mut out).unwrap_or_else(|e| panic!("{ctxs}: {e}"));
    let scale: Vec<f32> = (0..oc).map(|j| (sa * sw_at(j)) / sy).collect();
    let qmult: Vec<_> = (0..oc).map(|j| quantize_multiplier(sa as f64 * sw_at(j) as f64 / sy as f64, mode)).collect();
    let kind = if O::SIGNED { OutputKind::I8 } else { OutputKind::U8 };
    let ro = RefOutput {
        kind,
        mode,
        bias_i32: Some(bias),
        scale: &scale,
        bias_f32: None,
        qmult: &qmult,
        out_zero_point: ozp,
        qmin: rq.min.to_i32(),
        qmax: rq.max.to_i32(),
    };
    for (i, (&o, &e)) in out.iter().zip(acc).enumerate() {
        assert_eq!(o.to_i32() as i64, output_stage_ref(e, i % oc, &ro), "{} {mode:?} relu={relu} at {i}: {ctxs}", O::NAME);
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Channels (in_c, out_c) for a group count: 1, 2, or depthwise (`usize::MAX` = C).
fn channels(r: &mut ChaCha8Rng, groups: usize) -> (usize, usize, usize) {
    // Multiples of 4 (channels per group) take the indirect path where a kernel has one.
    const C: &[usize] = &[1, 3, 4, 5, 7, 8, 9, 12, 17];
    match groups {
        1 => (C[r.random_range(0..C.len())], C[r.random_range(0..C.len())], 1),
        2 => (2 * C[r.random_range(0..C.len())], 2 * C[r.random_range(0..C.len())], 2),
        _ => {
            let c = C[r.random_range(0..C.len())];
            (c, c, c)
        }
    }
}

/// The generated family: kernel 1–7 × stride 1–3 × dilation 1–3 × 16 padding
/// combinations, groups cycling 1 / 2 / C, image sizes from the smallest that fits
/// (often 1×1) upward, batch 1–2.
fn family(seed: u64) -> Vec<(Conv2dGeometry, bool, Values)> {
    let mut r = rng(seed);
    let mut out = Vec::new();
    let mut n = 0usize;
    for k in 1..=7usize {
        for s in 1..=3 {
            for d in 1..=3 {
                for pads in 0..16usize {
                    n += 1;
                    let p = |bit: usize, r: &mut ChaCha8Rng| if pads >> bit & 1 == 1 { r.random_range(1..=k.max(2)) } else { 0 };
                    let (pt, pl, pb, pr) = (p(0, &mut r), p(1, &mut r), p(2, &mut r), p(3, &mut r));
                    // Rectangular kernels too: kw from 1..=7 around k.
                    let kw = if n.is_multiple_of(3) { r.random_range(1..=7) } else { k };
                    let eff_h = (k - 1) * d + 1;
                    let eff_w = (kw - 1) * d + 1;
                    let min_h = eff_h.saturating_sub(pt + pb).max(1);
                    let min_w = eff_w.saturating_sub(pl + pr).max(1);
                    let h = min_h + r.random_range(0..=3);
                    let w = min_w + r.random_range(0..=3);
                    let groups = [1, 2, usize::MAX][n % 3];
                    let (ic, oc, grp) = channels(&mut r, groups);
                    let batch = 1 + n.is_multiple_of(5) as usize;
                    let g = Conv2dGeometry::new(batch, h, w, ic, oc, k, kw).stride(s, s + (n % 2) * (s < 3) as usize).dilation(d, d).padding(pt, pl, pb, pr).groups(grp);
                    let v = [Values::Full, Values::SmallWeights, Values::Extreme, Values::Full][n % 4];
                    out.push((g, n.is_multiple_of(2), v));
                }
            }
        }
    }
    out
}

fn run_family<A: Int8, B: Int8>(seed: u64) {
    let fam = family(seed);
    let mut r = rng(seed ^ 0x5eed);
    for ctx in contexts() {
        let mut paths = std::collections::BTreeMap::<String, usize>::new();
        for &(g, pc, v) in &fam {
            g.validate().unwrap_or_else(|e| panic!("{g:?}: {e}"));
            *paths.entry(format!("{:?}", check::<A, B>(&ctx, g, &mut r, pc, v))).or_default() += 1;
        }
        eprintln!("{} {}x{}: {paths:?}", ctx.kernels().isa.name(), A::NAME, B::NAME);
        // The family reaches the indirect path wherever the tier has an indirect kernel
        // (about 60 layers for a kernel with K groups of 8, i8mm: of the channel counts
        // only 8 fills whole groups; 170 and more for K groups of at most 4).
        let indirect = paths.get("IndirectGemm").copied().unwrap_or(0);
        assert_eq!(indirect > 40, ctx.kernels().gemm.indirect.is_some(), "{}: {paths:?}", ctx.kernels().isa.name());
    }
}

#[test]
fn family_u8_i8() {
    run_family::<u8, i8>(1);
}

#[test]
fn family_i8_i8() {
    run_family::<i8, i8>(2);
}

#[test]
fn family_u8_u8() {
    run_family::<u8, u8>(3);
}

#[test]
fn family_i8_u8() {
    run_family::<i8, u8>(4);
}

/// Larger shapes: channels past the SIMD widths, K past 64, many blocks, pointwise with
/// groups, on one and two threads.
#[test]
fn larger_shapes_and_threads() {
    let shapes = [
        Conv2dGeometry::new(1, 11, 13, 37, 67, 3, 3).padding(1, 1, 1, 1),
        Conv2dGeometry::new(2, 9, 10, 64, 33, 3, 3).stride(2, 2).padding(0, 1, 1, 0),
        Conv2dGeometry::new(1, 23, 21, 70, 35, 1, 1),
        Conv2dGeometry::new(1, 23, 21, 70, 35, 1, 1).groups(5),
        Conv2dGeometry::new(1, 23, 21, 70, 35, 1, 1).stride(2, 1),
        Conv2dGeometry::new(1, 17, 19, 48, 96, 3, 3).padding(1, 1, 1, 1).groups(4),
        Conv2dGeometry::new(1, 30, 30, 16, 24, 5, 5).padding(2, 2, 2, 2).dilation(2, 1),
        Conv2dGeometry::new(1, 12, 12, 16, 16, 3, 3).padding(1, 1, 1, 1).groups(16),
    ];
    let mut r = rng(7);
    for isa in common::available_isas() {
        for threads in [1, 2] {
            let ctx = Context::for_isa(isa).unwrap().with_threads(threads).unwrap();
            for (i, &g) in shapes.iter().enumerate() {
                check::<u8, i8>(&ctx, g, &mut r, i % 2 == 0, Values::Full);
                check::<i8, i8>(&ctx, g, &mut r, i % 2 == 1, Values::SmallWeights);
            }
        }
    }
}

/// The indirection buffer is built on the first run and kept; later runs reuse it and
/// the gather workspaces (the plan's memory does not grow).
#[test]
fn indirection_built_once() {
    let g = Conv2dGeometry::new(1, 20, 20, 32, 32, 3, 3).padding(1, 1, 1, 1);
    let w = vec![1i8; g.weight_len()];
    let f = Conv2d::new(g, &w, WeightQuant::per_tensor(0, 1.0)).unwrap();
    assert!(!f.indirection_built());
    let x = vec![3u8; g.input_len()];
    let mut out = vec![0i32; g.output_len()];
    let ctx = Context::new().unwrap().with_threads(1).unwrap();
    ctx.conv2d_i32(&f, ConvInput::new(&x, 1, 1.0), None, &mut out).unwrap();
    assert!(f.indirection_built());
    let m1 = f.memory_bytes();
    ctx.conv2d_i32(&f, ConvInput::new(&x, 1, 1.0), None, &mut out).unwrap();
    assert_eq!(f.memory_bytes(), m1);
    // Interior pixel: 9 taps × 32 channels × (3 − 1) · 1.
    assert_eq!(out[(10 * 20 + 10) * 32], 9 * 32 * 2);
    // Corner: 4 taps inside.
    assert_eq!(out[0], 4 * 32 * 2);
}

/// The indirect path: which layers take it on each tier, that a run really reads rows in
/// place (no gather workspace), exactly; and the overflow policy's fallback: where
/// whole-K i32 accumulation is not provably exact, the same filter gathers and chunks K.
#[test]
fn indirect_path_runs_and_falls_back_exactly() {
    let mut r = rng(21);
    for ctx in contexts() {
        let isa = ctx.kernels().isa;
        // Whether a layer takes the indirect path is the dispatch rule's call
        // (`rule_indirect`): per layer, from the kernel the filter was packed for.
        for threads in [1, 2] {
            let ctx = ctx.clone().with_threads(threads).unwrap();
            for g in [
                Conv2dGeometry::new(1, 9, 11, 64, 40, 3, 3).padding(1, 1, 1, 1),
                Conv2dGeometry::new(2, 10, 9, 32, 16, 3, 3).stride(2, 2).padding(1, 0, 1, 1).dilation(1, 2),
                Conv2dGeometry::new(1, 12, 12, 32, 48, 3, 3).padding(1, 1, 1, 1).groups(4),
                Conv2dGeometry::new(1, 7, 7, 4, 9, 5, 5).padding(2, 2, 2, 2),
                Conv2dGeometry::new(1, 1, 13, 24, 20, 1, 3).stride(1, 2).padding(0, 1, 0, 0),
            ] {
                let ws = |f: &Conv2d| f.workspace_bytes();
                check::<u8, i8>(&ctx, g, &mut r, true, Values::Extreme);
                check::<i8, u8>(&ctx, g, &mut r, false, Values::Full);
                let w: Vec<i8> = (0..g.weight_len()).map(|_| r.random()).collect();
                let f = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(0, 1.0)).unwrap();
                let has_indirect = rule_indirect(&ctx, &f, &g);
                assert_eq!(f.path(), if has_indirect { ConvPath::IndirectGemm } else { ConvPath::ImplicitGemm }, "{} {g:?}", isa.name());
                let x: Vec<u8> = (0..g.input_len()).map(|_| r.random()).collect();
                let mut out = vec![0i32; g.output_len()];
                ctx.conv2d_i32(&f, ConvInput::new(&x, 7, 1.0), None, &mut out).unwrap();
                assert_eq!(ws(&f) == 0, has_indirect, "{} {g:?}: workspace {} bytes", isa.name(), ws(&f));
            }
            // A strided 1×1 gathers (the dispatch rule), exactly.
            let g = Conv2dGeometry::new(1, 13, 13, 24, 20, 1, 1).stride(2, 2);
            let w: Vec<i8> = (0..g.weight_len()).map(|_| r.random()).collect();
            assert_eq!(Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(0, 1.0)).unwrap().path(), ConvPath::ImplicitGemm);
            check::<u8, i8>(&ctx, g, &mut r, true, Values::Full);
            // Gather forced: the same layer on the gather path.
            let g = Conv2dGeometry::new(1, 9, 11, 64, 40, 3, 3).padding(1, 1, 1, 1);
            let gctx = ctx.clone().without_indirect_conv();
            let w: Vec<i8> = (0..g.weight_len()).map(|_| r.random()).collect();
            assert_eq!(Conv2d::new_in(&gctx, g, &w, WeightQuant::per_tensor(0, 1.0)).unwrap().path(), ConvPath::ImplicitGemm);
            check::<u8, i8>(&gctx, g, &mut r, true, Values::Full);
        }

        // K = 9·4096 = 36 864: with u8 activations at zero point 0 and u8 weights at zero
        // point 0, K·255·255 passes i32, so that run gathers and carries K chunks in i64
        // (all operands 255: the true sum 36 864·65 025 does not fit in i32 either);
        // at zero point 128 (K·128·255 fits) the same filter reads rows in place.
        let g = Conv2dGeometry::new(1, 3, 3, 4096, 2, 3, 3).padding(1, 1, 1, 1);
        let w = vec![255u8; g.weight_len()];
        let f = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(0, 1.0)).unwrap();
        let has_indirect = rule_indirect(&ctx, &f, &g);
        let x = vec![255u8; g.input_len()];
        let mut acc = vec![0i64; g.output_len()];
        let mut out = vec![0f32; g.output_len()];
        for za in [128u8, 0] {
            conv2d_i64(&g.to_reference(), &x, za as i32, &w, &[0], &mut acc);
            ctx.conv2d_f32(&f, ConvInput::new(&x, za, 1.0), None, &mut out).unwrap();
            for (i, (&o, &e)) in out.iter().zip(&acc).enumerate() {
                assert_eq!(o, e as f32, "{} za={za} at {i}", isa.name());
            }
            let gathered = f.workspace_bytes() > 0;
            assert_eq!(gathered, za == 0 || !has_indirect, "{} za={za}", isa.name());
            if za == 0 {
                let mut o32 = vec![0i32; g.output_len()];
                let e = ctx.conv2d_i32(&f, ConvInput::new(&x, za, 1.0), None, &mut o32).unwrap_err();
                assert!(matches!(e, Error::Overflow(_)), "{e}");
            }
        }
    }
}

/// The same layers on the indirect path and with the gather forced
/// ([`Context::without_indirect_conv`]) write identical bytes, for every output stage and
/// u8 / i8 activations: tap K tails (4, 12 channels: half a dotprod block), taps that
/// are whole blocks, grouped layers, padding; layers of at most `2·nr` output channels
/// per group, which every kernel with an indirect entry reads in place.
fn paths_agree<A: Int8>(ctx: &Context, r: &mut ChaCha8Rng) -> usize {
    let mut indirect = 0;
    for g in [
        Conv2dGeometry::new(1, 7, 9, 4, 8, 3, 3).padding(1, 1, 1, 1),
        Conv2dGeometry::new(2, 6, 7, 12, 16, 3, 3).stride(2, 1).padding(1, 0, 1, 1),
        Conv2dGeometry::new(1, 8, 8, 16, 13, 3, 3).padding(1, 1, 1, 1).dilation(2, 1),
        Conv2dGeometry::new(1, 9, 9, 24, 9, 5, 5).padding(2, 2, 2, 2),
        Conv2dGeometry::new(1, 8, 9, 32, 16, 3, 3).padding(1, 1, 1, 1).groups(2),
        Conv2dGeometry::new(1, 10, 10, 64, 8, 3, 3).padding(1, 1, 1, 1),
    ] {
        let mut w: Vec<i8> = (0..g.weight_len()).map(|_| r.random()).collect();
        // A −128 in every output channel keeps each group on the tier's exact kernel (a
        // kernel bounded on the stored weights, e.g. NEON's `smull` pairs, has no
        // indirect entry, and its layers gather).
        let per_oc = g.weight_len() / g.out_c;
        w.iter_mut().step_by(per_oc).for_each(|v| *v = -128);
        let zw: Vec<i32> = (0..g.out_c).map(|_| r.random_range(-128..=127)).collect();
        let sw: Vec<f32> = (0..g.out_c).map(|_| r.random_range(0.001..0.05)).collect();
        let quant = WeightQuant::per_column(&zw, &sw);
        let gctx = ctx.clone().without_indirect_conv();
        let fi = Conv2d::new_in(ctx, g, &w, quant).unwrap();
        let fg = Conv2d::new_in(&gctx, g, &w, quant).unwrap();
        assert_eq!(fi.path(), if rule_indirect(ctx, &fi, &g) { ConvPath::IndirectGemm } else { ConvPath::ImplicitGemm });
        assert_eq!(fg.path(), ConvPath::ImplicitGemm);
        indirect += (fi.path() == ConvPath::IndirectGemm) as usize;
        let x: Vec<A> = (0..g.input_len()).map(|_| A::saturate_from(r.random_range(A::MIN..=A::MAX))).collect();
        let inp = ConvInput::new(&x, A::saturate_from(r.random_range(A::MIN..=A::MAX)), 0.02);
        let what = format!("{} {} {g:?}", ctx.kernels().isa.name(), A::NAME);
        let bias: Vec<i32> = (0..g.out_c).map(|_| r.random_range(-5000..=5000)).collect();
        let (mut a, mut b) = (vec![0i32; g.output_len()], vec![0i32; g.output_len()]);
        ctx.conv2d_i32(&fi, inp, Some(&bias), &mut a).unwrap();
        gctx.conv2d_i32(&fg, inp, Some(&bias), &mut b).unwrap();
        assert_eq!(a, b, "i32: {what}");
        let bf: Vec<f32> = (0..g.out_c).map(|_| r.random_range(-3.0..3.0)).collect();
        let (mut a, mut b) = (vec![0f32; g.output_len()], vec![0f32; g.output_len()]);
        ctx.conv2d_f32(&fi, inp, Some(&bf), &mut a).unwrap();
        gctx.conv2d_f32(&fg, inp, Some(&bf), &mut b).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "f32: {what}");
        for mode in [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
            let rq = Requantize::new(0.02 * 0.02 * 40.0, 3u8).mode(mode).bias(&bias);
            let (mut a, mut b) = (vec![0u8; g.output_len()], vec![0u8; g.output_len()]);
            ctx.conv2d_requantize(&fi, inp, &rq, &mut a).unwrap();
            gctx.conv2d_requantize(&fg, inp, &rq, &mut b).unwrap();
            assert_eq!(a, b, "u8 {mode:?}: {what}");
            let rq = Requantize::new(0.02 * 0.02 * 40.0, -5i8).mode(mode).bias(&bias).relu();
            let (mut a, mut b) = (vec![0i8; g.output_len()], vec![0i8; g.output_len()]);
            ctx.conv2d_requantize(&fi, inp, &rq, &mut a).unwrap();
            gctx.conv2d_requantize(&fg, inp, &rq, &mut b).unwrap();
            assert_eq!(a, b, "i8 {mode:?}: {what}");
        }
    }
    indirect
}

#[test]
fn indirect_and_gather_paths_agree_bit_for_bit() {
    let mut r = rng(33);
    for ctx in contexts() {
        let n = paths_agree::<u8>(&ctx, &mut r) + paths_agree::<i8>(&ctx, &mut r);
        // Every layer here takes the indirect path where the tier's kernel has an entry
        // (channels per group multiples of 4; of 8 for the i8mm kernel's K groups: 4 of 6).
        let k = ctx.kernels().gemm;
        let want = if k.indirect.is_none() { 0 } else if k.format.kr > 4 { 8 } else { 12 };
        assert_eq!(n, want, "{} ({}): indirect layers", ctx.kernels().isa.name(), k.name);
    }
}

#[test]
fn bad_parameters() {
    let ok = Conv2dGeometry::new(1, 5, 5, 4, 6, 3, 3);
    assert!(ok.validate().is_ok());
    // Output ≤ 0.
    let e = Conv2dGeometry::new(1, 2, 5, 4, 6, 3, 3).validate().unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(ref m) if m.contains("output size")), "{e}");
    assert!(Conv2dGeometry::new(1, 5, 5, 4, 6, 3, 3).dilation(3, 1).validate().is_err());
    assert!(Conv2dGeometry::new(1, 1, 1, 4, 6, 3, 3).padding(1, 1, 1, 1).validate().is_ok());
    // Groups not dividing channels.
    let e = ok.groups(3).validate().unwrap_err();
    assert!(matches!(e, Error::InvalidParameter(ref m) if m.contains("groups")), "{e}");
    assert!(Conv2dGeometry::new(1, 5, 5, 6, 4, 3, 3).groups(3).validate().is_err());
    // Zero sizes, stride, dilation.
    assert!(ok.stride(0, 1).validate().is_err());
    assert!(ok.dilation(1, 0).validate().is_err());
    assert!(ok.groups(0).validate().is_err());
    assert!(Conv2dGeometry::new(0, 5, 5, 4, 6, 3, 3).validate().is_err());
    assert!(Conv2dGeometry::new(1, 5, 5, 0, 6, 3, 3).validate().is_err());
    // Overflow.
    let e = Conv2dGeometry::new(usize::MAX / 2, 5, 5, 4, 6, 3, 3).validate().unwrap_err();
    assert!(matches!(e, Error::Overflow(_)), "{e}");
    assert!(Conv2dGeometry::new(1, 5, 5, 4, 6, 3, 3).padding(usize::MAX, 0, 1, 0).validate().is_err());
    // Constructors reject invalid geometry.
    assert!(Conv2d::new(ok.groups(4).groups(5), &[0i8; 0], WeightQuant::per_tensor(0, 1.0)).is_err());
    // Mismatched weight shape.
    let e = Conv2d::new(ok, &vec![0i8; ok.weight_len() - 1], WeightQuant::per_tensor(0, 1.0)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch(ref m) if m.contains("OHWI")), "{e}");
    assert!(Conv2d::new(ok.groups(2), &vec![0i8; ok.weight_len()], WeightQuant::per_tensor(0, 1.0)).is_err());
    // Per-channel parameters of the wrong length; zero point outside the type.
    let zps = [0i32; 5];
    let sc = [1.0f32; 5];
    assert!(matches!(Conv2d::new(ok, &vec![0i8; ok.weight_len()], WeightQuant::per_column(&zps, &sc)), Err(Error::ShapeMismatch(_))));
    assert!(matches!(Conv2d::new(ok, &vec![0i8; ok.weight_len()], WeightQuant::per_tensor(300, 1.0)), Err(Error::ZeroPointOutOfRange { .. })));
    assert!(Conv2d::new(ok, &vec![0i8; ok.weight_len()], WeightQuant::per_tensor(0, f32::NAN)).is_err());
    // Short buffers, bad bias, missing scales.
    let f = Conv2d::new(ok, &vec![1i8; ok.weight_len()], WeightQuant::per_tensor(0, 1.0)).unwrap();
    let x = vec![0u8; ok.input_len()];
    let mut out = vec![0i32; ok.output_len()];
    let e = qkern::conv::conv2d_i32(&f, ConvInput::new(&x[1..], 0, 1.0), None, &mut out).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { what: "conv2d input", .. }), "{e}");
    let e = qkern::conv::conv2d_i32(&f, ConvInput::new(&x, 0, 1.0), None, &mut out[1..]).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { what: "conv2d output", .. }), "{e}");
    let e = qkern::conv::conv2d_i32(&f, ConvInput::new(&x, 0, 1.0), Some(&[0; 5]), &mut out).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
    let mut of = vec![0f32; ok.output_len()];
    assert!(qkern::conv::conv2d_f32(&f, ConvInput::new(&x, 0, f32::NAN), None, &mut of).is_err());
    let nos = Conv2d::new(ok, &vec![1i8; ok.weight_len()], WeightQuant::zero_point_only(PerChannel::Tensor(0))).unwrap();
    assert!(qkern::conv::conv2d_f32(&nos, ConvInput::new(&x, 0, 1.0), None, &mut of).is_err());
    let mut oq = vec![0u8; ok.output_len()];
    let rq = Requantize::new(1.0, 0u8).bias(&[1, 2]);
    assert!(qkern::conv::conv2d_requantize(&f, ConvInput::new(&x, 0, 1.0), &rq, &mut oq).is_err());
    let rq = Requantize::new(1.0, 0u8).clamp(10, 5);
    assert!(qkern::conv::conv2d_requantize(&f, ConvInput::new(&x, 0, 1.0), &rq, &mut oq).is_err());
}

// ---------------------------------------------------------------------------------------
// ONNX adapters (NCHW): every auto_pad mode, groups, dilations, strides, 1-D, against the
// NHWC reference with the padding derived here from the ONNX formulas.

use qkern::onnx::{AutoPad, ConvAttrs, TensorRef, conv_integer_in, conv_output_shape, qlinear_conv_in};

fn nchw_to_nhwc<T: Copy + Default>(x: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    let mut o = vec![T::default(); x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                o[(b * hw + p) * c + ch] = x[(b * c + ch) * hw + p];
            }
        }
    }
    o
}

/// (begin, end) padding of one axis per ONNX's auto_pad.
fn onnx_pads(auto: AutoPad, input: usize, k: usize, s: usize, d: usize, explicit: (usize, usize)) -> (usize, usize) {
    match auto {
        AutoPad::NotSet => explicit,
        AutoPad::Valid => (0, 0),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(s);
            let need = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(input);
            if auto == AutoPad::SameUpper { (need / 2, need - need / 2) } else { (need - need / 2, need / 2) }
        }
    }
}

#[test]
fn onnx_conv_integer_and_qlinear_conv_attrs() {
    let mut r = rng(11);
    let autos = [AutoPad::NotSet, AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid];
    for ctx in contexts() {
        for case in 0..60usize {
            let auto = autos[case % 4];
            let one_d = case % 5 == 4;
            let group = [1, 2, 3][case % 3];
            let (c, m) = (group * r.random_range(1..=4), group * r.random_range(1..=4));
            let (kh, kw) = if one_d { (1, r.random_range(1..=4)) } else { (r.random_range(1..=4), r.random_range(1..=4)) };
            let (sh, sw) = if one_d { (1, r.random_range(1..=3)) } else { (r.random_range(1..=3), r.random_range(1..=3)) };
            let (dh, dw) = if one_d { (1, r.random_range(1..=2)) } else { (r.random_range(1..=2), r.random_range(1..=2)) };
            let h = if one_d { 1 } else { (kh - 1) * dh + 1 + r.random_range(0..=4) };
            let w = (kw - 1) * dw + 1 + r.random_range(0..=4);
            let explicit: Vec<usize> = (0..4).map(|_| r.random_range(0..=2)).collect();
            let (pt, pb) = if one_d { (0, 0) } else { onnx_pads(auto, h, kh, sh, dh, (explicit[0], explicit[2])) };
            let (pl, pr) = onnx_pads(auto, w, kw, sw, dw, (explicit[1], explicit[3]));
            let n = 1 + case % 2;
            let (xshape, wshape, attrs) = if one_d {
                (
                    vec![n, c, w],
                    vec![m, c / group, kw],
                    ConvAttrs { auto_pad: auto, dilations: vec![dw], group, kernel_shape: vec![kw], pads: if auto == AutoPad::NotSet { vec![explicit[1], explicit[3]] } else { vec![] }, strides: vec![sw] },
                )
            } else {
                (
                    vec![n, c, h, w],
                    vec![m, c / group, kh, kw],
                    ConvAttrs { auto_pad: auto, dilations: vec![dh, dw], group, kernel_shape: vec![], pads: if auto == AutoPad::NotSet { explicit.clone() } else { vec![] }, strides: vec![sh, sw] },
                )
            };
            let g = Conv2dGeometry::new(n, h, w, c, m, kh, kw).stride(sh, sw).dilation(dh, dw).padding(pt, pl, pb, pr).groups(group);
            g.validate().unwrap();
            let (oh, ow) = (g.out_h(), g.out_w());
            let want_shape = if one_d { vec![n, m, ow] } else { vec![n, m, oh, ow] };
            assert_eq!(conv_output_shape(&xshape, &wshape, &attrs).unwrap(), want_shape, "{attrs:?}");
            let x: Vec<u8> = (0..n * c * h * w).map(|_| r.random()).collect();
            let wt: Vec<i8> = (0..m * (c / group) * kh * kw).map(|_| r.random()).collect();
            let zx: u8 = r.random();
            let zw: Vec<i8> = (0..m).map(|_| r.random()).collect();
            let mut acc = vec![0i64; g.output_len()];
            let zw32: Vec<i32> = zw.iter().map(|&v| v as i32).collect();
            conv2d_i64(&g.to_reference(), &nchw_to_nhwc(&x, n, c, h * w), zx as i32, &nchw_to_nhwc(&wt, m, c / group, kh * kw), &zw32, &mut acc);
            // Reference back to NCHW.
            let hw = oh * ow;
            let at = |b: usize, ch: usize, p: usize| acc[(b * hw + p) * m + ch];
            let zshape = [m];
            let mut y = vec![0i32; g.output_len()];
            conv_integer_in(&ctx, TensorRef::new(&x, &xshape), TensorRef::new(&wt, &wshape), Some(TensorRef::scalar(&zx)), Some(TensorRef::new(&zw, &zshape)), &attrs, &mut y).unwrap();
            for b in 0..n {
                for ch in 0..m {
                    for p in 0..hw {
                        assert_eq!(y[(b * m + ch) * hw + p] as i64, at(b, ch, p), "ConvInteger {attrs:?} {g:?}");
                    }
                }
            }
            // QLinearConv with per-channel scales and a bias.
            let (sx, sy) = (0.05f32, 0.9f32);
            let sw: Vec<f32> = (0..m).map(|_| r.random_range(0.001..0.02)).collect();
            let bias: Vec<i32> = (0..m).map(|_| r.random_range(-2000..2000)).collect();
            let zy: i8 = r.random();
            let mut yq = vec![0i8; g.output_len()];
            qlinear_conv_in(
                &ctx,
                TensorRef::new(&x, &xshape),
                TensorRef::scalar(&sx),
                TensorRef::scalar(&zx),
                TensorRef::new(&wt, &wshape),
                TensorRef::new(&sw, &zshape),
                TensorRef::new(&zw, &zshape),
                TensorRef::scalar(&sy),
                TensorRef::scalar(&zy),
                Some(TensorRef::new(&bias, &zshape)),
                &attrs,
                &mut yq,
            )
            .unwrap();
            for b in 0..n {
                for ch in 0..m {
                    for p in 0..hw {
                        let mult = (sx * sw[ch]) / sy;
                        let v = qkern_kernels::reference::requantize_fp32(at(b, ch, p) + bias[ch] as i64, mult, zy as i32).clamp(-128, 127);
                        assert_eq!(yq[(b * m + ch) * hw + p] as i64, v, "QLinearConv {attrs:?} {g:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn onnx_conv_bad_parameters() {
    let x = vec![0u8; 2 * 4 * 5 * 5];
    let w = vec![0i8; 6 * 2 * 3 * 3];
    let xs = [2, 4, 5, 5];
    let ws = [6, 2, 3, 3];
    let run = |attrs: &ConvAttrs, ws: &[usize], w: &[i8], ylen: usize| {
        let mut y = vec![0i32; ylen];
        conv_integer_in(&Context::new().unwrap(), TensorRef::new(&x, &xs), TensorRef::new(w, ws), None, None, attrs, &mut y)
    };
    let ok = ConvAttrs { group: 2, ..ConvAttrs::default() };
    assert!(run(&ok, &ws, &w, 2 * 6 * 3 * 3).is_ok());
    // Group not dividing the channels / not matching w.
    assert!(run(&ConvAttrs { group: 3, ..ConvAttrs::default() }, &ws, &w, 2 * 6 * 9).is_err());
    assert!(run(&ConvAttrs::default(), &ws, &w, 2 * 6 * 9).is_err());
    assert!(run(&ConvAttrs { group: 0, ..ConvAttrs::default() }, &ws, &w, 2 * 6 * 9).is_err());
    // Output ≤ 0: a dilated kernel larger than the input.
    assert!(run(&ConvAttrs { dilations: vec![3, 3], ..ok.clone() }, &ws, &w, 0).is_err());
    // Wrong y length, wrong attribute lengths, kernel_shape disagreeing, zero stride.
    assert!(run(&ok, &ws, &w, 7).is_err());
    assert!(run(&ConvAttrs { strides: vec![1], ..ok.clone() }, &ws, &w, 2 * 6 * 9).is_err());
    assert!(run(&ConvAttrs { pads: vec![1, 1], ..ok.clone() }, &ws, &w, 2 * 6 * 9).is_err());
    assert!(run(&ConvAttrs { kernel_shape: vec![2, 2], ..ok.clone() }, &ws, &w, 2 * 6 * 9).is_err());
    assert!(run(&ConvAttrs { strides: vec![0, 1], ..ok.clone() }, &ws, &w, 2 * 6 * 9).is_err());
    // w data not matching its shape; 3-D conv unsupported.
    assert!(run(&ok, &ws, &w[1..], 2 * 6 * 9).is_err());
    let e = conv_output_shape(&[1, 1, 2, 2, 2], &[1, 1, 1, 1, 1], &ConvAttrs::default()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert!(AutoPad::from_onnx("SAME").is_err());
}

/// Found by the ffi fuzzer (regression input `conv_filter_create_depthwise_huge_image_indirection`):
/// a depthwise filter bound to a huge image built its indirection buffer with an
/// infallible allocation, and the process aborted. Binding must be an `Overflow` error;
/// `Conv2d` then falls back to the GEMM path, whose indirection is built at the first
/// run, after the buffers are checked.
#[test]
fn huge_images_are_an_error_not_an_abort() {
    use qkern::conv::{DepthwiseConv, DepthwiseFilter};
    let c = 16;
    let w = vec![1i8; c * 9];
    for (h, wd) in [(1usize << 31, 1usize << 20), (1 << 40, 1 << 22), (usize::MAX / 2, 3)] {
        let g = Conv2dGeometry { groups: c, ..Conv2dGeometry::new(1, h, wd, c, c, 3, 3) };
        let f = DepthwiseFilter::new(&w, c, 3, 3, WeightQuant::per_tensor(0, 1.0)).unwrap();
        match DepthwiseConv::new(f, &g) {
            // The first image fits the address space: its indirection buffer is what fails.
            Err(qkern::Error::Overflow(m)) => assert!(h != 1 << 31 || m.contains("cannot be allocated"), "{m}"),
            Err(qkern::Error::InvalidParameter(_)) => {}
            r => panic!("{h}×{wd}: {r:?}"),
        }
        if let Ok(conv) = Conv2d::new(g, &w, WeightQuant::per_tensor(0, 1.0)) {
            assert_ne!(conv.path(), ConvPath::Depthwise, "{h}×{wd}");
            let mut y = vec![0i32; 16];
            let r = qkern::conv::conv2d_i32(&conv, ConvInput::new(&[0u8; 16], 0, 1.0), None, &mut y);
            assert!(matches!(r, Err(qkern::Error::BufferTooSmall { .. })), "{h}×{wd}: {r:?}");
        }
    }
}
