//! Differential GEMM: random shapes, strides, zero points (per tensor or per column),
//! scales and output stages (i32, f32, requantized u8/i8 in every mode, with bias and
//! clamp), u8/i8 on both sides, values biased to the extremes and K up to past the
//! i32-safe bound; every ISA against the i64 reference and its output stage.

use qkern::{Activations, Context, Int8, MatrixMut, MatrixRef, PackedWeights, PerChannel, Requantize, RequantMode, WeightQuant};
use qkern_kernels::OutputKind;
use qkern_kernels::reference::{RefOutput, gemm_i64, output_stage_ref, quantize_multiplier};

use super::common::Gen;

const SCALES: [f32; 6] = [1.0, 0.5, 0.003_921_569, 0.0173, 2.0e-5, 37.5];

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
    // Shapes: small and ragged, or a long K at and past the bound where i32 stops being
    // exact (255·128·65793 > 2^31), with few outputs to keep a case fast.
    let (m, n, k) = if g.size(0, 7) == 0 {
        (g.size(1, 2), g.size(1, 9), g.size(65_000, 70_000))
    } else {
        (g.size(1, 37), g.size(1, 70), g.size(0, 600))
    };
    let (lda, ldb, ldc) = (k + g.size(0, 3), n + g.size(0, 3), n + g.size(0, 3));
    let (fa, fb) = (g.fill(), g.fill());
    let a: Vec<A> = g.values(m * lda, A::MIN as i64, A::MAX as i64, fa).into_iter().map(|v| A::saturate_from(v as i32)).collect();
    let b: Vec<B> = g.values(k * ldb, B::MIN as i64, B::MAX as i64, fb).into_iter().map(|v| B::saturate_from(v as i32)).collect();
    let za = { let r = g.int(A::MIN as i64, A::MAX as i64) as i32; A::saturate_from(g.pick(&[A::MIN, A::MAX, 0, 1, r])) };
    let zb: Vec<i32> = if g.flip() {
        let r = g.int(B::MIN as i64, B::MAX as i64) as i32;
        vec![g.pick(&[0, B::MIN, B::MAX, r])]
    } else {
        { let f = g.fill(); g.values(n, B::MIN as i64, B::MAX as i64, f) }.into_iter().map(|v| v as i32).collect()
    };
    let sa = g.pick(&SCALES);
    let sb: Vec<f32> = (0..n).map(|_| g.pick(&SCALES)).collect();
    let bias: Option<Vec<i32>> =
        if g.flip() {
        let f = g.fill();
        Some(g.values(n, -(1 << 24), 1 << 24, f).into_iter().map(|v| v as i32).collect())
    } else {
        None
    };

    let mut acc = vec![0i64; m * n];
    gemm_i64(m, n, k, &a, lda, za.to_i32(), &b, ldb, &zb, &mut acc, n);

    let quant = WeightQuant {
        zero_point: if zb.len() == 1 { PerChannel::Tensor(zb[0]) } else { PerChannel::Channel(&zb) },
        scale: Some(PerChannel::Channel(&sb)),
    };
    let stage = g.size(0, 3);
    let mode = g.pick(&[RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding]);
    let sy = g.pick(&[1.0f32, 0.05, 0.7, 3.0e-3, 250.0]);
    let zy = g.int(-128, 255) as i32;
    let (lo, hi) = (g.int(-128, 255) as i32, g.int(-128, 255) as i32);
    let (lo, hi) = (lo.min(hi), lo.max(hi));

    for &isa in &qkern::dispatch::cpu().isas {
        let ctx = Context::for_isa(isa).unwrap();
        let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, k, n).with_stride(ldb), quant).unwrap();
        let act = Activations::new(MatrixRef::new(&a, m, k).with_stride(lda), za, sa);
        match stage {
            0 => {
                let mut c = vec![0i32; m * ldc];
                let r = ctx.gemm_i32(act, &w, bias.as_deref(), MatrixMut::new(&mut c, m, n).with_stride(ldc));
                let expect = |i: usize, j: usize| acc[i * n + j] + bias.as_ref().map_or(0, |b| b[j] as i64);
                match r {
                    Ok(()) => each(m, n, |i, j| assert_eq!(c[i * ldc + j] as i64, expect(i, j), "{isa:?} i32 C[{i}][{j}] m={m} n={n} k={k}")),
                    Err(e) => {
                        let fits = (0..m).all(|i| (0..n).all(|j| i32::try_from(expect(i, j)).is_ok()));
                        assert!(!fits, "{isa:?}: error {e} although every result fits i32");
                    }
                }
            }
            1 => {
                let fbias: Option<Vec<f32>> = bias.as_ref().map(|b| b.iter().map(|&v| v as f32 * 0.25).collect());
                let mut c = vec![0f32; m * ldc];
                ctx.gemm_f32(act, &w, fbias.as_deref(), MatrixMut::new(&mut c, m, n).with_stride(ldc)).unwrap();
                let scale: Vec<f32> = sb.iter().map(|&s| sa * s).collect();
                let ro = RefOutput {
                    kind: OutputKind::F32,
                    mode: RequantMode::Fp32,
                    bias_i32: None,
                    scale: &scale,
                    bias_f32: fbias.as_deref(),
                    qmult: &[],
                    out_zero_point: 0,
                    qmin: 0,
                    qmax: 0,
                };
                each(m, n, |i, j| {
                    let want = output_stage_ref(acc[i * n + j], j, &ro) as u32;
                    assert_eq!(c[i * ldc + j].to_bits(), want, "{isa:?} f32 C[{i}][{j}] m={m} n={n} k={k}");
                });
            }
            _ => {
                // The driver's multipliers: sa·sb/sy in f32 (Fp32), in f64 for the fixed modes.
                let scale: Vec<f32> = sb.iter().map(|&s| (sa * s) / sy).collect();
                let qmult: Vec<_> = sb.iter().map(|&s| quantize_multiplier(sa as f64 * s as f64 / sy as f64, mode)).collect();
                let ro = |zy: i32, qmin: i32, qmax: i32| RefOutput {
                    kind: OutputKind::U8,
                    mode,
                    bias_i32: bias.as_deref(),
                    scale: &scale,
                    bias_f32: None,
                    qmult: &qmult,
                    out_zero_point: zy,
                    qmin,
                    qmax,
                };
                let mut got = vec![0i32; m * n];
                let (zy, lo, hi) = if stage == 2 {
                    let (zy, lo, hi) = (zy.clamp(0, 255), lo.clamp(0, 255), hi.clamp(0, 255));
                    let mut rq = Requantize::new(sy, zy as u8).mode(mode).clamp(lo as u8, hi as u8);
                    if let Some(b) = &bias {
                        rq = rq.bias(b);
                    }
                    let mut c = vec![0u8; m * ldc];
                    ctx.gemm_requantize(act, &w, &rq, MatrixMut::new(&mut c, m, n).with_stride(ldc)).unwrap();
                    each(m, n, |i, j| got[i * n + j] = c[i * ldc + j] as i32);
                    (zy, lo, hi)
                } else {
                    let (zy, lo, hi) = (zy.clamp(-128, 127), lo.clamp(-128, 127), hi.clamp(-128, 127));
                    let mut rq = Requantize::new(sy, zy as i8).mode(mode).clamp(lo as i8, hi as i8);
                    if let Some(b) = &bias {
                        rq = rq.bias(b);
                    }
                    let mut c = vec![0i8; m * ldc];
                    ctx.gemm_requantize(act, &w, &rq, MatrixMut::new(&mut c, m, n).with_stride(ldc)).unwrap();
                    each(m, n, |i, j| got[i * n + j] = c[i * ldc + j] as i32);
                    (zy, lo, hi)
                };
                let ro = ro(zy, lo, hi);
                each(m, n, |i, j| {
                    assert_eq!(got[i * n + j] as i64, output_stage_ref(acc[i * n + j], j, &ro), "{isa:?} {mode:?} C[{i}][{j}] m={m} n={n} k={k}")
                });
            }
        }
    }
}

fn each(m: usize, n: usize, mut f: impl FnMut(usize, usize)) {
    for i in 0..m {
        for j in 0..n {
            f(i, j)
        }
    }
}
