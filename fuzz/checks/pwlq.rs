//! PWLQ: quantize random (and hostile) weights per channel with each breakpoint rule and
//! bit width, pack, then on every ISA the SIMD dequantization against the scalar one and
//! the exact-mode GEMM (fused and three-dot paths) against its scalar reference, bit for
//! bit in f32. Non-finite weights must be refused, not packed.

use qkern::quant::Granularity;
use qkern::quant::pwlq::{Breakpoint, PwlqGemmWeights, PwlqQuantizer, gemm_exact_ref};
use qkern::{Activations, Context, Int8, MatrixMut, MatrixRef};

use super::common::Gen;

pub fn run(data: &[u8]) {
    let mut g = Gen::new(data);
    let bits = g.pick(&[4u32, 6, 8, 5, 2]);
    let bp = g.pick(&[Breakpoint::Gaussian, Breakpoint::Laplace, Breakpoint::Search]);
    let (k, n) = (g.size(1, 200), g.size(1, 40));
    let specials = g.size(0, 7) == 0;
    let mag = g.pick(&[1.0f32, 0.01, 1e-20, 1e20]);
    let w = g.floats(k * n, mag, specials);
    let q = PwlqQuantizer::new(bits, bp).with_granularity(Granularity::PerChannel { axis: 1 });
    let t = match q.quantize(&w, &[k, n]) {
        Ok(t) => t,
        Err(_) => {
            // Only a bad bit width or non-finite weights may be refused.
            assert!(![4, 6, 8].contains(&bits) || w.iter().any(|v| !v.is_finite()), "PWLQ refused finite weights at {bits} bits");
            return;
        }
    };
    assert!(w.iter().all(|v| v.is_finite()), "PWLQ accepted non-finite weights");
    let Ok(p) = t.pack() else { panic!("a quantized tensor failed to pack") };
    let mut want = vec![0f32; k * n];
    p.dequantize_f32_into(&mut want).unwrap();
    if g.flip() { gemm::<u8>(&mut g, &p, &want) } else { gemm::<i8>(&mut g, &p, &want) }
}

fn gemm<A: Int8>(g: &mut Gen, p: &qkern::quant::pwlq::PwlqPacked, deq: &[f32]) {
    let (k, n) = (p.k(), p.channels());
    let m = g.pick(&[1usize, 2, 3, 5, 8, 13]);
    let fill = g.fill();
    let a: Vec<A> = g.values(m * k, A::MIN as i64, A::MAX as i64, fill).into_iter().map(|v| A::saturate_from(v as i32)).collect();
    let za = A::saturate_from(g.pick(&[A::MIN, A::MAX, 0]));
    let sa = g.pick(&[1.0f32, 0.0125, 3.0]);
    let bias: Option<Vec<f32>> = if g.flip() { Some((0..n).map(|j| j as f32 * 0.5 - 2.0).collect()) } else { None };
    let am = MatrixRef::new(&a, m, k);
    let mut want = vec![f32::NAN; m * n];
    gemm_exact_ref(Activations::new(am, za, sa), p, bias.as_deref(), MatrixMut::new(&mut want, m, n)).unwrap();
    for &isa in &qkern::dispatch::cpu().isas {
        for threads in [1, 2] {
            let ctx = Context::for_isa(isa).unwrap().with_threads(threads).unwrap();
            let mut d = vec![0f32; k * n];
            p.dequantize_f32_in(&ctx, &mut d).unwrap();
            for (i, (x, y)) in d.iter().zip(deq).enumerate() {
                assert_eq!(x.to_bits(), y.to_bits(), "{isa:?} dequant [{i}]");
            }
            let gw = PwlqGemmWeights::new_in(&ctx, p).unwrap();
            let mut got = vec![f32::NAN; m * n];
            gw.gemm_f32_in(&ctx, Activations::new(am, za, sa), bias.as_deref(), MatrixMut::new(&mut got, m, n)).unwrap();
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert_eq!(x.to_bits(), y.to_bits(), "{isa:?} threads {threads} gemm ({}, {}) m={m} n={n} k={k} bits {}", i / n, i % n, p.bits());
            }
        }
    }
}
