//! PWLQ kernels (issue 6, points 3–4): the SIMD dequantization (f32, and i8 for
//! grid-aligned PWLQ) and the exact-mode GEMM, each bit-exact against its scalar
//! reference on every tier this CPU has (x86; NEON on AArch64; missing tiers are skipped visibly), over odd
//! lengths, all-extreme codes and activations, and per-channel parameters.

mod common;

use std::io::Write;

use qkern::quant::Granularity;
use qkern::quant::pwlq::{
    Breakpoint, GridScope, PwlqGemmWeights, PwlqPacked, PwlqPackedParts, PwlqQuantizer, dequant_kernel_name, gemm_exact_ref,
};
use qkern::{Activations, Context, Error, Int8, MatrixMut, MatrixRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Per-channel Gaussian weights `[K][N]` (channel axis 1), a different σ per channel.
fn weights(k: usize, n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..k * n)
        .map(|i| {
            let v: f64 = StandardNormal.sample(&mut r);
            (v * 0.01 * (1 + i % n) as f64) as f32
        })
        .collect()
}

fn quantized(bits: u32, k: usize, n: usize, seed: u64) -> PwlqPacked {
    let w = weights(k, n, seed);
    PwlqQuantizer::new(bits, Breakpoint::Gaussian)
        .with_granularity(Granularity::PerChannel { axis: 1 })
        .quantize(&w, &[k, n])
        .unwrap()
        .pack()
        .unwrap()
}

/// Packed weights whose every field is drawn from `fields` (the extremes), with
/// per-channel `m` and `p`, through the checked `from_parts`.
fn extreme(bits: u32, n: usize, k: usize, seed: u64) -> PwlqPacked {
    let mut r = rng(seed);
    let q = (1u16 << (bits - 1)) - 1;
    let neg = 1u16 << (bits - 1);
    let region = 1u16 << bits;
    // Largest centre ±Q, smallest and largest tail ±0 / ±Q, zero.
    let pool = [q, neg | q, region, region | neg, region | q, region | neg | q, 0, 1, neg | 1];
    let blocks = k.div_ceil(64);
    let bpb = if bits == 4 { 32 } else { 64 };
    let mut values = vec![0u8; n * blocks * bpb];
    let mut regions = vec![0u64; if bits == 6 { 0 } else { n * blocks }];
    for c in 0..n {
        for kk in 0..k {
            let f = pool[r.random_range(0..pool.len())];
            let (kb, i) = (kk / 64, kk % 64);
            match bits {
                4 => {
                    values[c * blocks * 32 + kb * 32 + i % 32] |= ((f & 0xF) as u8) << (4 * (i / 32));
                    regions[c * blocks + kb] |= ((f >> 4) as u64 & 1) << i;
                }
                6 => values[c * blocks * 64 + kb * 64 + i] = f as u8,
                _ => {
                    values[c * blocks * 64 + kb * 64 + i] = f as u8;
                    regions[c * blocks + kb] |= ((f >> 8) as u64 & 1) << i;
                }
            }
        }
    }
    let m: Vec<f32> = (0..n).map(|c| 0.37 * (c + 1) as f32).collect();
    let p: Vec<f32> = m.iter().enumerate().map(|(c, &m)| m * [0.0, 0.31, 0.77, 1.0][c % 4]).collect();
    PwlqPacked::from_parts(PwlqPackedParts { bits, channels: n, k, channel_axis: 0, values, regions, m, p }).unwrap()
}

fn contexts() -> Vec<Context> {
    common::available_isas().into_iter().map(|i| Context::for_isa(i).unwrap()).collect()
}

fn check_dequant(w: &PwlqPacked, ctx: &Context, what: &str) {
    let want = w.dequantize_channel_major();
    let mut got = vec![f32::NAN; want.len()];
    w.dequantize_f32_in(ctx, &mut got).unwrap();
    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{what} {} bits {} K {}: element {i}: {g} vs {e}",
            dequant_kernel_name(ctx.kernels().isa, w.bits(), "f32"),
            w.bits(),
            w.k()
        );
    }
}

const KS: [usize; 13] = [1, 2, 7, 15, 16, 31, 33, 63, 64, 65, 300, 4095, 4097];

#[test]
fn dequant_f32_equals_the_reference_on_every_tier() {
    for ctx in contexts() {
        for bits in [4u32, 6, 8] {
            for (i, &k) in KS.iter().enumerate() {
                for n in [1usize, 3] {
                    check_dequant(&quantized(bits, k, n, 10 + i as u64), &ctx, "gaussian");
                    check_dequant(&extreme(bits, n, k, 20 + i as u64), &ctx, "extreme");
                }
            }
        }
    }
}

#[test]
fn dequant_rejects_bad_buffers() {
    let w = quantized(4, 65, 3, 1);
    let ctx = Context::new().unwrap();
    let mut small = vec![0f32; 3 * 65 - 1];
    assert!(matches!(w.dequantize_f32_in(&ctx, &mut small), Err(Error::BufferTooSmall { .. })));
    let mut big = vec![0f32; 3 * 65 + 1];
    assert!(matches!(w.dequantize_f32_in(&ctx, &mut big), Err(Error::ShapeMismatch(_))));
    let mut o8 = vec![0i8; 3 * 65];
    assert!(matches!(w.dequantize_i8_in(&ctx, &[[0i8; 32]; 2], &mut o8), Err(Error::ShapeMismatch(_))));
    assert!(w.dequant_table(3).is_err());
    let mut row = vec![0f32; 65];
    assert!(matches!(w.dequantize_channel_f32_in(&ctx, 3, &mut row), Err(Error::InvalidParameter(m)) if m.contains("`channel`")));
    assert!(matches!(w.dequantize_channel_f32_in(&ctx, 0, &mut row[..64]), Err(Error::ShapeMismatch(_))));
    let w6 = quantized(6, 65, 3, 1);
    assert!(matches!(w6.dequantize_i8_in(&ctx, &[[0i8; 32]; 3], &mut o8), Err(Error::Unsupported(_))));
}

#[test]
fn dequant_i8_of_grid_aligned_pwlq_equals_its_levels() {
    for ctx in contexts() {
        for (i, &k) in KS.iter().enumerate() {
            let n = 5;
            let x = weights(k, n, 40 + i as u64);
            let params = PwlqQuantizer::new(4, Breakpoint::Search)
                .with_granularity(Granularity::PerChannel { axis: 1 })
                .calibrate(&x, &[k, n])
                .unwrap();
            for scope in [GridScope::PerChannel, GridScope::Shared] {
                let g = params.snap_to_grid(&x, &[k, n], scope, 127).unwrap();
                let packed = g.pack().unwrap();
                let tables: Vec<[i8; 32]> = (0..n).map(|s| g.table_i8(s).unwrap()).collect();
                let mut got = vec![0i8; n * k];
                packed.dequantize_i8_in(&ctx, &tables, &mut got).unwrap();
                let xg = g.dequantize();
                for c in 0..n {
                    for kk in 0..k {
                        // The level of the grid code, as the scalar definition gives it.
                        let want = g.level(c, g.codes()[kk * n + c]);
                        assert_eq!(got[c * k + kk] as i32, want, "{} K {k} ({c},{kk})", ctx.kernels().isa.name());
                        // And L·g is the grid-aligned value.
                        assert_eq!(
                            (got[c * k + kk] as f32 * g.grid_scales()[c]).to_bits(),
                            xg[kk * n + c].to_bits()
                        );
                    }
                }
            }
        }
        // All-extreme fields with an arbitrary table.
        for &k in &KS {
            let w = extreme(4, 3, k, 7);
            let tables: Vec<[i8; 32]> = (0..3).map(|c| core::array::from_fn(|f| (f as i32 * 8 - 128 + c) as i8)).collect();
            let mut got = vec![0i8; 3 * k];
            w.dequantize_i8_in(&ctx, &tables, &mut got).unwrap();
            for c in 0..3 {
                for kk in 0..k {
                    assert_eq!(got[c * k + kk], tables[c][w.field(c, kk) as usize]);
                }
            }
        }
    }
}

fn check_gemm<A: Int8>(ctx: &Context, w: &PwlqPacked, a: &[A], m: usize, za: A, sa: f32, bias: Option<&[f32]>) {
    let (n, k) = (w.channels(), w.k());
    let g = PwlqGemmWeights::new_in(ctx, w).unwrap();
    let am = MatrixRef::new(a, m, k);
    let mut want = vec![f32::NAN; m * n];
    gemm_exact_ref(Activations::new(am, za, sa), w, bias, MatrixMut::new(&mut want, m, n)).unwrap();
    let mut got = vec![f32::NAN; m * n];
    g.gemm_f32_in(ctx, Activations::new(am, za, sa), bias, MatrixMut::new(&mut got, m, n)).unwrap();
    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{} M {m} N {n} K {k} bits {}: ({}, {})", ctx.kernels().isa.name(), w.bits(), i / n, i % n);
    }
}

/// Every tier, each with the default thread count and with one thread (the fused
/// single-pass kernel runs on one thread only).
fn gemm_contexts() -> Vec<Context> {
    common::available_isas()
        .into_iter()
        .flat_map(|i| [Context::for_isa(i).unwrap(), Context::for_isa(i).unwrap().with_threads(1).unwrap()])
        .collect()
}

#[test]
fn exact_gemm_equals_the_reference_on_every_tier() {
    let mut r = rng(99);
    let mut fused_runs = 0;
    for ctx in gemm_contexts() {
        for bits in [4u32, 8] {
            for (ms, k, n) in [(1usize, 1usize, 1usize), (2, 63, 7), (5, 65, 33), (17, 300, 18), (16, 129, 5), (8, 1000, 9), (3, 64, 4)] {
                let ws = [quantized(bits, k, n, (k * 3 + n) as u64), extreme(bits, n, k, (k + n) as u64)];
                let fused = PwlqGemmWeights::new_in(&ctx, &ws[0]).unwrap().uses_fused(&ctx, ms);
                fused_runs += fused as usize;
                if fused_kernel(ctx.kernels().isa, ms).is_some() && ctx.threads() == 1 {
                    assert_eq!(fused, bits == 4);
                }
                for w in &ws {
                    let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.25 - 1.0).collect();
                    // u8: extremes 0/255 mixed in, zero points at the edges.
                    let au: Vec<u8> = (0..ms * k).map(|i| if i % 5 == 0 { [0, 255][i % 2] } else { r.random() }).collect();
                    for za in [0u8, 128, 255] {
                        check_gemm(&ctx, w, &au, ms, za, 0.0123, Some(&bias));
                    }
                    let ai: Vec<i8> = (0..ms * k).map(|i| if i % 3 == 0 { [-128, 127][i % 2] } else { r.random() }).collect();
                    for za in [-128i8, 0, 127] {
                        check_gemm(&ctx, w, &ai, ms, za, 1.5, None);
                    }
                }
            }
        }
    }
    if fused_contexts("fused PWLQ GEMM kernel").is_empty() {
        assert_eq!(fused_runs, 0);
    } else {
        assert!(fused_runs > 0);
    }
}

#[test]
fn exact_gemm_rejects_bad_arguments() {
    let w = quantized(4, 10, 3, 5);
    let ctx = Context::new().unwrap();
    let g = PwlqGemmWeights::new_in(&ctx, &w).unwrap();
    let a = vec![0u8; 20];
    let mut c = vec![0f32; 6];
    let am = MatrixRef::new(&a, 2, 10);
    assert!(g.gemm_f32_in(&ctx, Activations::new(am, 0, f32::NAN), None, MatrixMut::new(&mut c, 2, 3)).is_err());
    assert!(g.gemm_f32_in(&ctx, Activations::new(am, 0, 1.0), Some(&[0.0; 2]), MatrixMut::new(&mut c, 2, 3)).is_err());
    assert!(g.gemm_f32_in(&ctx, Activations::new(MatrixRef::new(&a, 2, 9), 0, 1.0), None, MatrixMut::new(&mut c, 2, 3)).is_err());
    assert!(g.gemm_f32_in(&ctx, Activations::new(am, 0, 1.0), None, MatrixMut::new(&mut c, 3, 2)).is_err());
    assert!(g.gemm_f32_in(&ctx, Activations::new(am, 0, 1.0), None, MatrixMut::new(&mut c[..5], 2, 3)).is_err());
    let mut d = vec![0i64; 17];
    assert!(g.dots_in(&ctx, am, 0u8, &mut d).is_err());
}

#[test]
fn grid_alignment_reports_its_extra_mse() {
    let (k, n) = (512, 16);
    let x = weights(k, n, 3);
    let params = PwlqQuantizer::new(4, Breakpoint::Search)
        .with_granularity(Granularity::PerChannel { axis: 1 })
        .calibrate(&x, &[k, n])
        .unwrap();
    for (scope, max_level) in [(GridScope::PerChannel, 127), (GridScope::Shared, 127), (GridScope::PerChannel, 64), (GridScope::Shared, 64)] {
        let g = params.snap_to_grid(&x, &[k, n], scope, max_level).unwrap();
        assert!(g.max_level() <= max_level);
        assert!(g.mse_grid() > 0.0 && g.mse_pwlq() > 0.0);
        let _ = writeln!(
            std::io::stderr(),
            "grid-aligned 4-bit PWLQ, Gaussian {k}x{n} per channel, {scope:?}, |L| <= {max_level}: MSE pwlq {:.4e}, grid {:.4e}, extra {:+.2} %",
            g.mse_pwlq(),
            g.mse_grid(),
            100.0 * g.extra_mse() / g.mse_pwlq()
        );
    }
}

/// The fused kernel a one-thread context of `isa` must run for `m ≥ 1` rows of 4-bit
/// weights (None: that tier has none, the driver path serves it).
fn fused_kernel(isa: qkern::Isa, m: usize) -> Option<&'static str> {
    use qkern::Isa;
    match isa {
        Isa::Avx512Vnni | Isa::Amx if m == 1 => Some("pwlq4_dot3_u8__avx512vnni"),
        Isa::Avx2 | Isa::AvxVnni if m == 1 => Some("pwlq4_dot3_u8__avx2"),
        Isa::Avx512Vnni | Isa::Amx => Some("qs8_pwlq_dot3_gemm_8x16c4__avx512vnni"),
        Isa::Dotprod | Isa::I8mm => Some("qs8_pwlq_dot3_gemm_8x16c4__dotprod"),
        Isa::Neon => Some("qs8_pwlq_dot3_gemm_8x16c4__neon"),
        _ => None,
    }
}

/// A one-thread context of every tier here that has fused kernels (AVX2: one row only;
/// AVX-512 VNNI; NEON, dotprod and i8mm on AArch64), each with a visible skip when there
/// is none.
fn fused_contexts(what: &str) -> Vec<Context> {
    let ctxs: Vec<Context> = common::available_isas()
        .into_iter()
        .filter(|&i| fused_kernel(i, 1).is_some())
        .map(|i| Context::for_isa(i).unwrap().with_threads(1).unwrap())
        .collect();
    if ctxs.is_empty() {
        let _ = writeln!(std::io::stderr(), "SKIP {what}: no tier with fused PWLQ kernels on this CPU (or in QKERN_TEST_TIERS)");
    }
    ctxs
}

#[test]
fn fused_gemm_microkernel_odd_shapes_and_extremes() {
    // qs8_pwlq_dot3_gemm_8x16c4: every row count 2..=9 and past 16 (the 8-row tile and
    // each remainder instantiation), channels around the 16-wide panel, K around the
    // 4-wide step and the 64-wide block; extreme fields and activations, zero points at
    // both ends.
    // One row: the GEMV kernels on x86 (AVX2's only fused kernel; more rows take the
    // driver there), the 1-row tile on AArch64.
    for ctx in fused_contexts("qs8_pwlq_dot3_gemm_8x16c4") {
        let isa = ctx.kernels().isa;
        let mut r = rng(123);
        let mut runs = 0;
        let rows: &[usize] = if fused_kernel(isa, 2).is_some() { &[1, 2, 3, 4, 5, 6, 7, 8, 9, 17] } else { &[1] };
        for &ms in rows {
            for (n, k) in [(1usize, 1usize), (15, 3), (16, 4), (17, 5), (33, 63), (16, 65), (5, 129), (31, 260)] {
                let ws = [quantized(4, k, n, (ms * 7 + n * 3 + k) as u64), extreme(4, n, k, (ms + n + k) as u64)];
                let g = PwlqGemmWeights::new_in(&ctx, &ws[0]).unwrap();
                assert_eq!(g.fused_kernel_name(&ctx, ms), fused_kernel(isa, ms));
                for w in &ws {
                    let bias: Vec<f32> = (0..n).map(|c| 0.5 - c as f32 * 0.125).collect();
                    let au: Vec<u8> = (0..ms * k).map(|i| if i % 4 == 0 { [0, 255][(i / 4) % 2] } else { r.random() }).collect();
                    for za in [0u8, 77, 255] {
                        check_gemm(&ctx, w, &au, ms, za, 0.031, Some(&bias));
                    }
                    let all_max = vec![255u8; ms * k];
                    check_gemm(&ctx, w, &all_max, ms, 0, 1.0, None);
                    let ai: Vec<i8> = (0..ms * k).map(|i| if i % 2 == 0 { [-128, 127][(i / 2) % 2] } else { r.random() }).collect();
                    for za in [-128i8, 127] {
                        check_gemm(&ctx, w, &ai, ms, za, 0.5, Some(&bias));
                    }
                    runs += 1;
                }
            }
        }
        assert_eq!(runs, rows.len() * 8 * 2);
        // One row keeps the GEMV kernel on the 4-bit planes on x86; the driver serves other
        // contexts: no rows, two threads, another tier's family.
        let g = PwlqGemmWeights::new_in(&ctx, &quantized(4, 64, 4, 1)).unwrap();
        assert_eq!(g.fused_kernel_name(&ctx, 1), fused_kernel(isa, 1));
        assert_eq!(g.fused_kernel_name(&ctx, 0), None);
        let two = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
        assert_eq!(g.fused_kernel_name(&two, 8), None);
        let scalar = Context::for_isa(qkern::Isa::Scalar).unwrap().with_threads(1).unwrap();
        assert_eq!(g.fused_kernel_name(&scalar, 8), None);
    }
}

#[test]
fn fused_gemm_microkernel_past_the_i32_bound() {
    // Q = 7, |a − za| = 255: the kernel's raw i32 sums are exact up to 18 798 blocks of
    // 64 (K = 1 203 072); one weight more and the dots pass i32, so the path must chunk K
    // and carry i64. 9 rows: the 8-row tile and the 1-row remainder of the microkernel.
    // u8 and i8 activations at both ends (the x86 kernels take u8, the ARM ones i8: each
    // flips the other type, which must leave a − za intact).
    use qkern::quant::pwlq::{PwlqParams, PwlqTensor};
    fn run<A: Int8>(ctx: &Context, g: &PwlqGemmWeights, ms: usize, a: A, za: A, x: i64, (m_range, p): (f32, f32)) {
        let k = g.k();
        let kk = k as i64;
        // Exact dots, then the combine as documented (one rounding per i64 dot).
        let d = [(kk * x * 7, 0, 0), (0, -kk * x * 7, -kk * x)];
        let (s1, s2) = (p / 7.0, (m_range - p) / 7.0);
        let want: Vec<f32> = d.iter().map(|&(dc, dt, ds)| ((s1 * dc as f32 + s2 * dt as f32) + p * ds as f32) * 0.5).collect();
        let av = vec![a; ms * k];
        let mut got = vec![f32::NAN; ms * 2];
        g.gemm_f32_in(ctx, Activations::new(MatrixRef::new(&av, ms, k), za, 0.5), None, MatrixMut::new(&mut got, ms, 2)).unwrap();
        for r in 0..ms {
            assert_eq!(
                [got[2 * r].to_bits(), got[2 * r + 1].to_bits()],
                [want[0].to_bits(), want[1].to_bits()],
                "{} K {k} row {r} {}",
                ctx.kernels().isa.name(),
                A::NAME
            );
        }
    }
    let k_at = 18_798 * 64;
    let range = (3.0f32, 1.25f32);
    let params = PwlqParams::new(4, Granularity::PerChannel { axis: 0 }, vec![range.0; 2], vec![range.1; 2]).unwrap();
    let ctxs = fused_contexts("qs8_pwlq_dot3_gemm_8x16c4 past i32");
    for k in [k_at, k_at + 1] {
        assert_eq!(k as i64 * 255 * 7 > i32::MAX as i64, k > k_at);
        // Channel 0: c = 7 everywhere; channel 1: t = −7, s = −1 everywhere.
        let codes: Vec<i16> = (0..2 * k).map(|i| if i < k { 7 } else { -15 }).collect();
        let packed = PwlqTensor::new(codes, &[2, k], params.clone()).unwrap().pack().unwrap();
        for ctx in &ctxs {
            let g = PwlqGemmWeights::new_in(ctx, &packed).unwrap();
            // 9 rows where the tier has a GEMM kernel, and one row (the x86 GEMV kernels).
            let rows: &[usize] = if fused_kernel(ctx.kernels().isa, 2).is_some() { &[9, 1] } else { &[1] };
            for &ms in rows {
                assert_eq!(g.fused_kernel_name(ctx, ms), fused_kernel(ctx.kernels().isa, ms));
                run(ctx, &g, ms, 255u8, 0u8, 255, range);
                run(ctx, &g, ms, 0u8, 255u8, -255, range);
                run(ctx, &g, ms, 127i8, -128i8, 255, range);
                run(ctx, &g, ms, -128i8, 127i8, -255, range);
            }
        }
    }
}

#[test]
fn grid_aligned_pwlq_runs_on_the_codebook_kernels() {
    use qkern::codebook::CodebookWeights;
    let mut r = rng(77);
    for ctx in contexts() {
        for (k, n, axis) in [(70usize, 5usize, 1usize), (33, 17, 0), (256, 8, 1)] {
            let shape = if axis == 1 { [k, n] } else { [n, k] };
            let mut x = weights(shape[0], shape[1], (k + n) as u64);
            // One all-zero channel: g = 0, stored as level 0.
            for kk in 0..k {
                x[if axis == 1 { kk * n + 2 } else { 2 * k + kk }] = 0.0;
            }
            let params = PwlqQuantizer::new(4, Breakpoint::Search).with_granularity(Granularity::PerChannel { axis }).calibrate(&x, &shape).unwrap();
            for max_level in [127, 64] {
                let ga = params.snap_to_grid(&x, &shape, GridScope::Shared, max_level).unwrap();
                let pc = ga.codebook_codes().unwrap();
                assert_eq!((pc.k(), pc.n()), (k, n));
                // The codebook weights' values are the grid-aligned values, bit for bit.
                let (deq, xg) = (pc.dequantize(), ga.dequantize());
                let at = |kk: usize, c: usize| if axis == 1 { kk * n + c } else { c * k + kk };
                for kk in 0..k {
                    for c in 0..n {
                        assert_eq!(deq[kk * n + c].to_bits(), xg[at(kk, c)].to_bits(), "K {k} ({kk},{c})");
                    }
                }
                // And the kernels give Σ (a − za)·L exactly.
                let cw = CodebookWeights::new_in(&ctx, &pc).unwrap();
                let m = 3;
                let a: Vec<u8> = (0..m * k).map(|i| if i % 7 == 0 { 255 } else { r.random() }).collect();
                let za = 131u8;
                let mut got = vec![0i32; m * n];
                ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, m, k), za, 1.0), &cw, None, MatrixMut::new(&mut got, m, n)).unwrap();
                let grid_step = ga.grid_scales().iter().zip(pc.grid_scales().unwrap()).find(|(g, _)| **g > 0.0).map_or(1.0, |(g, s)| s / g);
                for i in 0..m {
                    for c in 0..n {
                        let acc: i64 = (0..k).map(|kk| (a[i * k + kk] as i64 - za as i64) * ga.level(c, ga.codes()[at(kk, c)]) as i64).sum();
                        let want = if ga.grid_scales()[c] > 0.0 { acc as f64 / grid_step as f64 } else { 0.0 };
                        assert_eq!(got[i * n + c] as f64, want, "{} K {k} ({i},{c})", ctx.kernels().isa.name());
                    }
                }
            }
        }
    }
    // What the codebook kernels cannot take is an error naming the way out.
    let (k, n) = (64, 6);
    let x = weights(k, n, 5);
    let params = PwlqQuantizer::new(4, Breakpoint::Search).with_granularity(Granularity::PerChannel { axis: 1 }).calibrate(&x, &[k, n]).unwrap();
    // Breakpoints at 0.2·m and 0.8·m in turn: per-channel snapping keeps two ratios.
    let two = qkern::quant::pwlq::PwlqParams::new(4, Granularity::PerChannel { axis: 1 }, vec![1.0; n], (0..n).map(|c| [0.2, 0.8][c % 2]).collect()).unwrap();
    let per_channel = two.snap_to_grid(&x, &[k, n], GridScope::PerChannel, 127).unwrap();
    assert_ne!(per_channel.ratios()[0], per_channel.ratios()[1]);
    assert!(matches!(per_channel.codebook_codes(), Err(Error::Unsupported(m)) if m.contains("GridScope::Shared")));
    let wide = params.snap_to_grid(&x, &[k, n], GridScope::Shared, 7 * 1024).unwrap();
    if wide.max_level() > 127 {
        assert!(matches!(wide.codebook_codes(), Err(Error::Unsupported(m)) if m.contains("max_level")));
    }
    let p6 = PwlqQuantizer::new(6, Breakpoint::Search).with_granularity(Granularity::PerChannel { axis: 1 }).calibrate(&x, &[k, n]).unwrap();
    assert!(matches!(p6.snap_to_grid(&x, &[k, n], GridScope::Shared, 127).unwrap().codebook_codes(), Err(Error::Unsupported(_))));
    // Rank 1: no channel axis to make columns of.
    let flat = PwlqQuantizer::new(4, Breakpoint::Search).calibrate(&x[..64], &[64]).unwrap();
    assert!(matches!(flat.snap_to_grid(&x[..64], &[64], GridScope::Shared, 127).unwrap().codebook_codes(), Err(Error::Unsupported(_))));
}

/// The 4-bit dequant kernels of `isa`, if this architecture has them: (f32, i8).
#[allow(clippy::type_complexity)]
fn raw_kernels(isa: qkern::Isa) -> Option<(unsafe fn(&[u8], &[u64], &[f32; 32], &mut [f32]), unsafe fn(&[u8], &[u64], &[i8; 32], &mut [i8]))> {
    let _ = isa;
    #[cfg(target_arch = "x86_64")]
    {
        use qkern_kernels::x86_64::{avx2, avx512vnni};
        match isa {
            qkern::Isa::Avx2 => return Some((avx2::pwlq::pwlq4_dequant_f32_u64, avx2::pwlq::pwlq4_dequant_i8_u64)),
            qkern::Isa::Avx512Vnni => {
                return Some((avx512vnni::pwlq::pwlq4_dequant_f32_u64, avx512vnni::pwlq::pwlq4_dequant_i8_u64));
            }
            _ => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    if isa == qkern::Isa::Neon {
        use qkern_kernels::aarch64::neon::pwlq;
        return Some((pwlq::pwlq4_dequant_f32_u64, pwlq::pwlq4_dequant_i8_u64));
    }
    None
}

/// Each SIMD kernel directly, against `table[field]` computed here from the planes: every
/// length 0…130, 300, 1000 and 4095–4097 (odd tails, partial 16-lane groups, partial blocks), every
/// (region, nibble) field in every lane position, NaN-free tables with distinct entries
/// and both zeros, and a sentinel after `out` that must stay untouched. The AVX2 f32
/// kernel assumes the table's odd symmetry (see its docs), so it gets an odd table and
/// no `0b0_1000` field; the NEON and AVX-512 ones get an arbitrary table and every field.
#[test]
fn raw_dequant_kernels_equal_the_table_lookup() {
    let mut r = rng(77);
    let mut tested = 0;
    for isa in common::available_isas() {
        let Some((kf, ki)) = raw_kernels(isa) else { continue };
        let symmetric = isa == qkern::Isa::Avx2;
        for k in (0..=130usize).chain([300, 1000, 4095, 4096, 4097]) {
            let blocks = k.div_ceil(64);
            // One spare block after the planes: kernels must not depend on it.
            let mut values = vec![0u8; (blocks + 1) * 32];
            let mut regions = vec![0u64; blocks + 1];
            r.fill(&mut values[..]);
            r.fill(&mut regions[..]);
            // Fields cycling through all 32 for the first 64·32 lanes when not random.
            if k % 3 == 0 {
                for i in 0..blocks * 64 {
                    let f = (i + i / 64) % 32;
                    let b = 32 * (i / 64) + i % 32;
                    let sh = 4 * ((i % 64) / 32);
                    values[b] = (values[b] & !(0xF << sh)) | (((f & 0xF) as u8) << sh);
                    regions[i / 64] = (regions[i / 64] & !(1 << (i % 64))) | (((f >> 4) as u64) << (i % 64));
                }
            }
            if symmetric {
                // No negative centre zero (not canonical): turn 0b0_1000 into 0b0_0000.
                for i in 0..blocks * 64 {
                    if field(&values, &regions, i) == 0b0_1000 {
                        values[32 * (i / 64) + i % 32] &= !(0x8 << (4 * ((i % 64) / 32)));
                    }
                }
            }
            let lut: [f32; 32] = if symmetric {
                let mut t = [0f32; 32];
                for f in 0..32 {
                    let mag = if f % 8 == 0 && f < 16 { 0.0 } else { r.random_range(0.0f32..1e6) + f as f32 };
                    t[f] = if f & 8 == 0 { mag } else { -t[f & !8] };
                }
                t
            } else {
                core::array::from_fn(|f| match f {
                    0 => 0.0,
                    8 => -0.0,
                    _ => f32::from_bits(r.random::<u32>() & 0x7F7F_FFFF | ((f as u32 & 1) << 31)),
                })
            };
            let table: [i8; 32] = core::array::from_fn(|f| (f as i32 * 8 - 128 + (k as i32 % 7)) as i8);
            let mut got = vec![f32::NAN; k + 5];
            let mut got8 = vec![0x55i8; k + 5];
            // SAFETY: `available_isas` lists only tiers this CPU runs.
            unsafe {
                kf(&values, &regions, &lut, &mut got[..k]);
                ki(&values, &regions, &table, &mut got8[..k]);
            }
            for i in 0..k {
                let f = field(&values, &regions, i);
                assert_eq!(got[i].to_bits(), lut[f].to_bits(), "{} f32 K {k} element {i} field {f}", isa.name());
                assert_eq!(got8[i], table[f], "{} i8 K {k} element {i} field {f}", isa.name());
            }
            assert!(got[k..].iter().all(|x| x.is_nan()), "{} f32 K {k}: wrote past out", isa.name());
            assert!(got8[k..].iter().all(|&x| x == 0x55), "{} i8 K {k}: wrote past out", isa.name());
            tested += 1;
        }
    }
    // NEON is the AArch64 baseline: there the sweep must reach it (unless narrowed).
    if cfg!(target_arch = "aarch64") && !common::tiers_filtered() {
        assert!(tested > 0, "the NEON PWLQ dequant kernels were not tested");
    }
}

/// The 5-bit field (`region·16 | nibble`) of weight `i` in the 4-bit planes.
fn field(values: &[u8], regions: &[u64], i: usize) -> usize {
    let v = values[32 * (i / 64) + i % 32];
    let nib = if i % 64 < 32 { v & 0xF } else { v >> 4 };
    nib as usize | ((((regions[i / 64] >> (i % 64)) & 1) as usize) << 4)
}
