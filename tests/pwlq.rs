//! Piecewise-linear quantization (issue 6, points 1, 2 and the grid snap of point 4):
//! the quantizer against an oracle written here from the spec, the breakpoint rules
//! (closed forms against the search and against the continuous error model), the MSE
//! against qkern's uniform quantizer (the paper's 9/16 bound), bad input, the packed
//! layout byte by byte, the exact-mode GEMM reference (integer dots exact, f32 epilogue
//! bit for bit, and an f64 comparison within a derived bound), bias correction, and the
//! grid-aligned snap with its extra MSE.
//!
//! Measured numbers are written straight to stderr (past the harness's capture) so an
//! ordinary `cargo test --release --test pwlq` shows them.

use std::io::Write;

use qkern::quant::pwlq::{
    Breakpoint, DotTriple, GridScope, PWLQ_BLOCK, PwlqChannel, PwlqPacked, PwlqPackedParts, PwlqParams, PwlqQuantizer,
    PwlqTensor, combine_exact, gaussian_breakpoint, gemm_exact_dots_ref, gemm_exact_ref, laplace_breakpoint,
    max_magnitude, search_breakpoint,
};
use qkern::quant::{Granularity, IntFormat, Mapping, Scheme, UniformQuantizer, mse};
use qkern::{Activations, Error, Int8, MatrixMut, MatrixRef};
use qkern_kernels::reference::round_half_even_f32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, StandardNormal};

macro_rules! report {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` Gaussian weights, σ = 0.05.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let v: f64 = StandardNormal.sample(&mut r);
            (0.05 * v) as f32
        })
        .collect()
}

/// `n` Laplacian weights (exponential magnitude, random sign), scale 0.05.
fn laplacian(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let e = Exp::new(1.0).unwrap();
    (0..n)
        .map(|_| {
            let v: f64 = e.sample(&mut r);
            let s = if r.random::<bool>() { 1.0 } else { -1.0 };
            (0.05 * s * v) as f32
        })
        .collect()
}

const AXIS1: Granularity = Granularity::PerChannel { axis: 1 };

// ---------------------------------------------------------------------------------------
// The oracle, from the spec (module docs of qkern::quant::pwlq / issue 6)
// ---------------------------------------------------------------------------------------

fn q_of(bits: u32) -> i32 {
    (1 << (bits - 1)) - 1
}

/// Level index of `x`: clip to m; centre `|x| ≤ p` → ±rhe(|x|/s1); tail → ±(Q+1+rhe((|x|−p)/s2)).
fn oracle_code(x: f32, bits: u32, ch: &PwlqChannel) -> i32 {
    let q = q_of(bits);
    let a = if x.abs() > ch.m { ch.m } else { x.abs() };
    let lvl = if a <= ch.p {
        if ch.s1 == 0.0 { 0 } else { (round_half_even_f32(a / ch.s1) as i32).min(q) }
    } else {
        let t = if ch.s2 == 0.0 { 0 } else { (round_half_even_f32((a - ch.p) / ch.s2) as i32).min(q) };
        q + 1 + t
    };
    if x < 0.0 { -lvl } else { lvl }
}

/// Value of a level index: centre `j·s1`; tail `sign·(p + q·s2)` with a separate multiply and add.
fn oracle_value(j: i32, bits: u32, ch: &PwlqChannel) -> f32 {
    let q = q_of(bits);
    if j.abs() <= q {
        j as f32 * ch.s1
    } else {
        let prod = (j.abs() - q - 1) as f32 * ch.s2;
        let v = ch.p + prod;
        if j < 0 { -v } else { v }
    }
}

/// `(centre, tail, tail sign)` integers of a level index.
fn oracle_parts(j: i32, bits: u32) -> (i64, i64, i64) {
    let q = q_of(bits);
    if j.abs() <= q { (j as i64, 0, 0) } else { (0, (j.signum() * (j.abs() - q - 1)) as i64, j.signum() as i64) }
}

/// The slot of element `(r, c)` of an `R × C` tensor.
fn oracle_slot(g: Granularity, r: usize, c: usize, cols: usize) -> usize {
    match g {
        Granularity::PerTensor => 0,
        Granularity::PerChannel { axis: 0 } => r,
        Granularity::PerChannel { .. } => c,
        Granularity::PerGroup { axis: 1, group_size } => r * cols.div_ceil(group_size) + c / group_size,
        Granularity::PerGroup { group_size, .. } => panic!("oracle: group size {group_size} on axis 0 not used"),
    }
}

// ---------------------------------------------------------------------------------------
// b and the bit budget
// ---------------------------------------------------------------------------------------

#[test]
fn bit_width_counts_sign_and_magnitude_plus_a_region_bit() {
    assert_eq!(max_magnitude(4).unwrap(), 7);
    assert_eq!(max_magnitude(6).unwrap(), 31);
    assert_eq!(max_magnitude(8).unwrap(), 127);
    for bits in [0u32, 1, 2, 3, 9, 16] {
        assert!(matches!(max_magnitude(bits), Err(Error::InvalidBits { min: 4, max: 8, .. })), "bits {bits}");
    }
    for bits in [5u32, 7] {
        assert!(matches!(max_magnitude(bits), Err(Error::InvalidParameter(_))), "bits {bits}");
    }
    // A dense sweep uses every one of the 2·(2Q+1)+1 level indices, and every packed field
    // fits in b + 1 bits: 4-bit PWLQ stores 5 bits per weight.
    for bits in [4u32, 6, 8] {
        let q = q_of(bits);
        let params = PwlqParams::new(bits, Granularity::PerTensor, vec![1.0], vec![0.3]).unwrap();
        let x: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 / 40_000.0).collect();
        let t = params.quantize(&x, &[x.len()]).unwrap();
        let mut used: Vec<i16> = t.codes().to_vec();
        used.sort();
        used.dedup();
        assert_eq!(used.len() as i32, 4 * q + 3, "bits {bits}");
        assert_eq!(*used.first().unwrap() as i32, -(2 * q + 1));
        let packed =
            PwlqTensor::new(used.clone(), &[1, used.len()], params_axis0(bits, 1.0, 0.3)).unwrap().pack().unwrap();
        for k in 0..used.len() {
            assert!(packed.field(0, k) < 1 << (bits + 1), "bits {bits}: field exceeds b + 1 bits");
        }
        report!(
            "bits: {bits}-bit PWLQ = sign + {} magnitude bits per region + 1 region bit = {} bits stored; {} level indices",
            bits - 1,
            bits + 1,
            used.len()
        );
    }
}

fn params_axis0(bits: u32, m: f32, p: f32) -> PwlqParams {
    PwlqParams::new(bits, Granularity::PerChannel { axis: 0 }, vec![m], vec![p]).unwrap()
}

// ---------------------------------------------------------------------------------------
// Quantize / dequantize against the oracle
// ---------------------------------------------------------------------------------------

/// Values that probe every rule: region boundary ±p (and its neighbours), ±m, beyond m,
/// exact half steps (ties), zeros of both signs, tiny values.
fn probe_values(ch: &PwlqChannel, r: &mut ChaCha8Rng) -> Vec<f32> {
    let mut v = vec![0.0, -0.0, ch.p, -ch.p, ch.m, -ch.m, 2.0 * ch.m + 1.0, -3.0 * ch.m - 1.0, 1e-30, -1e-30];
    for x in [ch.p, ch.m] {
        v.push(f32::from_bits(x.to_bits().wrapping_add(1)));
        v.push(f32::from_bits(x.to_bits().saturating_sub(1)));
    }
    for q in 0..8 {
        v.push((q as f32 + 0.5) * ch.s1);
        v.push(-(q as f32 + 0.5) * ch.s1);
        v.push(ch.p + (q as f32 + 0.5) * ch.s2);
        v.push(-(ch.p + (q as f32 + 0.5) * ch.s2));
    }
    for _ in 0..2000 {
        v.push(r.random_range(-1.2 * ch.m.max(1e-3)..1.2 * ch.m.max(1e-3)));
    }
    v
}

#[test]
fn quantize_and_dequantize_equal_the_oracle() {
    let mut r = rng(11);
    for bits in [4u32, 6, 8] {
        for &(m, ratio) in &[(1.0f32, 0.3f32), (0.07, 0.41), (3.5, 1.0), (2.0, 0.0), (0.5, 0.999), (0.0, 0.0)] {
            let p = m * ratio;
            let params = PwlqParams::new(bits, Granularity::PerTensor, vec![m], vec![p]).unwrap();
            let ch = params.channels()[0];
            assert_eq!(ch.s1, p / q_of(bits) as f32);
            assert_eq!(ch.s2, (m - p) / q_of(bits) as f32);
            let x = probe_values(&ch, &mut r);
            let t = params.quantize(&x, &[x.len()]).unwrap();
            let xh = t.dequantize();
            for (i, &xi) in x.iter().enumerate() {
                let j = oracle_code(xi, bits, &ch);
                assert_eq!(t.codes()[i] as i32, j, "bits {bits} m {m} p {p}: x = {xi:e}");
                let want = oracle_value(j, bits, &ch);
                assert_eq!(xh[i].to_bits(), want.to_bits(), "bits {bits}: value of code {j}");
                // Independent of the f32 definition: within half a step of the clipped value.
                let a = xi.abs().min(m) as f64;
                let step = if a <= p as f64 { ch.s1 } else { ch.s2 } as f64;
                let err = (a - (xh[i] as f64).abs()).abs();
                assert!(
                    err <= 0.5 * step + 4.0 * f32::EPSILON as f64 * m as f64 + f64::MIN_POSITIVE,
                    "bits {bits}: x {xi} x̂ {} err {err} step {step}",
                    xh[i]
                );
                if xi != 0.0 && xh[i] != 0.0 {
                    assert_eq!(xi < 0.0, xh[i] < 0.0, "sign of {xi}");
                }
            }
        }
    }
}

#[test]
fn granularities_pick_the_right_slot() {
    let (rows, cols) = (6usize, 10usize);
    let x = gaussian(rows * cols, 3);
    for (g, slots) in [
        (Granularity::PerTensor, 1),
        (Granularity::PerChannel { axis: 0 }, rows),
        (AXIS1, cols),
        (Granularity::PerGroup { axis: 1, group_size: 4 }, rows * 3),
    ] {
        for bp in [Breakpoint::Gaussian, Breakpoint::Laplace, Breakpoint::Search, Breakpoint::Ratio(0.25)] {
            let params = PwlqQuantizer::new(4, bp).with_granularity(g).calibrate(&x, &[rows, cols]).unwrap();
            assert_eq!(params.channels().len(), slots);
            // m of each slot is its max |x|.
            let mut m = vec![0f32; slots];
            for r in 0..rows {
                for c in 0..cols {
                    let s = oracle_slot(g, r, c, cols);
                    m[s] = m[s].max(x[r * cols + c].abs());
                }
            }
            for (s, ch) in params.channels().iter().enumerate() {
                assert_eq!(ch.m, m[s], "{g:?} slot {s}");
                assert!(ch.p >= 0.0 && ch.p <= ch.m);
            }
            if let Breakpoint::Ratio(rt) = bp {
                assert!(params.channels().iter().all(|c| c.p == (c.m as f64 * rt as f64) as f32));
            }
            let t = params.quantize(&x, &[rows, cols]).unwrap();
            let xh = t.dequantize();
            let mut codes = vec![0i16; x.len()];
            Scheme::<i16>::quantize_into(&params, &x, &[rows, cols], &mut codes).unwrap();
            assert_eq!(codes, t.codes());
            for r in 0..rows {
                for c in 0..cols {
                    let i = r * cols + c;
                    let ch = &params.channels()[oracle_slot(g, r, c, cols)];
                    let j = oracle_code(x[i], 4, ch);
                    assert_eq!(t.codes()[i] as i32, j, "{g:?} ({r},{c})");
                    assert_eq!(xh[i].to_bits(), oracle_value(j, 4, ch).to_bits());
                }
            }
            assert_eq!(Scheme::<i16>::fake_quantize(&params, &x, &[rows, cols]).unwrap(), xh);
            assert_eq!(
                Scheme::<i16>::error(&params, &x, &[rows, cols]).unwrap(),
                params.error(&x, &[rows, cols]).unwrap()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Breakpoints
// ---------------------------------------------------------------------------------------

/// Standard normal CDF by Simpson integration of the density from 0 (error ≲ 1e-12 for
/// |x| ≤ 10 with 1000 panels).
fn normal_cdf(x: f64) -> f64 {
    let n = 1000;
    let h = x.abs() / n as f64;
    let f = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut s = f(0.0) + f(x.abs());
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    let half = s * h / 3.0;
    if x >= 0.0 { 0.5 + half } else { 0.5 - half }
}

/// Unit-variance Laplace CDF.
fn laplace_cdf(x: f64) -> f64 {
    let b = 0.5f64.sqrt();
    if x >= 0.0 { 1.0 - 0.5 * (-x / b).exp() } else { 0.5 * (x / b).exp() }
}

/// The minimiser over p ∈ [0, m] of the authors' continuous error model
/// `[F(p) − F(−p)]·p² + 2·[F(m) − F(p)]·(m − p)²` (σ = 1), by a fine scan.
fn model_optimum(m: f64, cdf: impl Fn(f64) -> f64) -> f64 {
    let fm = cdf(m);
    let err = |p: f64| (cdf(p) - cdf(-p)) * p * p + 2.0 * (fm - cdf(p)) * (m - p) * (m - p);
    let n = 4000;
    (0..=n).map(|i| m * i as f64 / n as f64).min_by(|a, b| err(*a).total_cmp(&err(*b))).unwrap()
}

#[test]
fn closed_forms_follow_the_paper_and_fit_the_error_model() {
    // The rounded constants: p = σ·ln(0.8614·m/σ + 0.6079).
    for (m, s) in [(0.2f64, 0.05f64), (1.0, 0.25), (3.0, 0.5)] {
        let want = s * (0.8614 * m / s + 0.6079).ln();
        assert!((gaussian_breakpoint(m, s) - want).abs() <= 1e-4 * m, "m {m} σ {s}");
    }
    // Both fits track the optimum of the error model they were fitted to.
    for r in [3.0f64, 4.0, 5.0, 6.0, 8.0] {
        let g = model_optimum(r, normal_cdf);
        let l = model_optimum(r, laplace_cdf);
        let (gc, lc) = (gaussian_breakpoint(r, 1.0), laplace_breakpoint(r, 1.0));
        report!(
            "breakpoint model m/σ = {r}: Gaussian closed form {gc:.4} vs model optimum {g:.4}; Laplace {lc:.4} vs {l:.4}"
        );
        assert!((gc - g).abs() / r <= 0.01, "Gaussian m/σ {r}: closed {gc} model {g}");
        assert!((lc - l).abs() / r <= 0.01, "Laplace m/σ {r}: closed {lc} model {l}");
    }
    // Edge cases: m = 0 → 0; σ = 0 (constant slot) → m; always inside [0, m].
    assert_eq!(gaussian_breakpoint(0.0, 0.0), 0.0);
    assert_eq!(gaussian_breakpoint(1.5, 0.0), 1.5);
    assert_eq!(laplace_breakpoint(1.5, 0.0), 1.5);
    assert_eq!(gaussian_breakpoint(f64::NAN, 1.0), 0.0);
    for r in [1.0f64, 1.0001, 2.0, 100.0, 1e6] {
        for f in [gaussian_breakpoint, laplace_breakpoint] {
            let p = f(r, 1.0);
            assert!((0.0..=r).contains(&p), "m/σ {r}: p {p}");
        }
    }
}

/// The issue's criterion: "the closed-form breakpoint matches the search within 2 % on
/// Gaussian data", read as |p_closed − p_search| / m ≤ 0.02 (the search works on p/m, so
/// the difference is measured in units of m). One slot of 65 536 Gaussian weights per seed,
/// at every bit width.
#[test]
fn gaussian_closed_form_matches_the_search_within_two_percent() {
    let n = 1 << 16;
    for seed in 1..=4u64 {
        let x = gaussian(n, 100 + seed);
        for bits in [4u32, 6, 8] {
            let cf = PwlqQuantizer::new(bits, Breakpoint::Gaussian).calibrate(&x, &[n]).unwrap();
            let se = PwlqQuantizer::new(bits, Breakpoint::Search).calibrate(&x, &[n]).unwrap();
            let (c, s) = (cf.channels()[0], se.channels()[0]);
            let d = (c.p as f64 - s.p as f64).abs() / c.m as f64;
            let cost = cf.error(&x, &[n]).unwrap().mse / se.error(&x, &[n]).unwrap().mse - 1.0;
            report!(
                "breakpoint seed {seed} b={bits}: p/m closed {:.4} search {:.4} |Δ|/m {d:.4}; closed-form MSE +{:.2} % over search",
                c.p / c.m,
                s.p / s.m,
                100.0 * cost
            );
            assert!(d <= 0.02, "seed {seed} bits {bits}: |Δp|/m = {d}");
            assert_eq!(search_breakpoint(&x, bits, c.m).unwrap(), s.p);
        }
    }
    // Per channel (32 channels of K = 4096) the search optimum is noisier — the error is
    // flat near the optimum and the tails hold few samples. The mean agrees within 2 %;
    // the worst channel is reported, not asserted.
    let (k, nc) = (4096usize, 32usize);
    let x = gaussian(k * nc, 7);
    for bits in [4u32, 6, 8] {
        let cf =
            PwlqQuantizer::new(bits, Breakpoint::Gaussian).with_granularity(AXIS1).calibrate(&x, &[k, nc]).unwrap();
        let se = PwlqQuantizer::new(bits, Breakpoint::Search).with_granularity(AXIS1).calibrate(&x, &[k, nc]).unwrap();
        let d: Vec<f64> = cf.ratios().iter().zip(se.ratios()).map(|(a, b)| (a - b).abs()).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let max = d.iter().copied().fold(0.0, f64::max);
        report!("breakpoint per channel K={k} b={bits}: |Δp|/m mean {mean:.4}, max {max:.4}");
        assert!(mean <= 0.02, "bits {bits}: mean |Δp|/m = {mean}");
    }
}

/// The search keeps the best of its candidates and ends in a local minimum at its finest
/// step (0.001 of m).
#[test]
fn search_ends_in_a_local_minimum() {
    let n = 20_000;
    for (x, bits) in [(laplacian(n, 21), 4u32), (gaussian(n, 22), 6), (laplacian(n, 23), 8)] {
        let params = PwlqQuantizer::new(bits, Breakpoint::Search).calibrate(&x, &[n]).unwrap();
        let ch = params.channels()[0];
        let sse_at = |r: i64| {
            let p = ((ch.m as f64 * r as f64 / 1000.0) as f32).min(ch.m);
            PwlqParams::new(bits, Granularity::PerTensor, vec![ch.m], vec![p]).unwrap().error(&x, &[n]).unwrap().mse
        };
        let best = params.error(&x, &[n]).unwrap().mse;
        let r = (ch.p as f64 / ch.m as f64 * 1000.0).round() as i64;
        assert_eq!(sse_at(r), best, "the breakpoint is a thousandth of m");
        for rr in [r - 1, r + 1] {
            if (0..=1000).contains(&rr) {
                assert!(best <= sse_at(rr), "bits {bits}: r {r} beaten by {rr}");
            }
        }
        for rr in (100..=900).step_by(100) {
            assert!(best <= sse_at(rr), "bits {bits}: r {r} beaten by coarse {rr}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// MSE against uniform quantization (the paper's Lemma 2 bound)
// ---------------------------------------------------------------------------------------

fn uniform_mse(x: &[f32], shape: &[usize], bits: u32) -> f64 {
    UniformQuantizer::new(IntFormat::signed(bits).unwrap(), Mapping::Symmetric)
        .with_granularity(AXIS1)
        .calibrate(x, shape)
        .unwrap()
        .error(x, shape)
        .unwrap()
        .mse
}

/// PWLQ 4-bit MSE ≤ 9/16 of qkern's uniform symmetric 4-bit per-channel min-max MSE, on
/// Gaussian and Laplacian weights, with the paper's recipe (closed form for the matching
/// distribution, and the search). The same ratios at 6 and 8 bits, and 4-bit PWLQ against
/// 5-bit uniform — the same storage, since PWLQ stores b + 1 bits — are reported.
#[test]
fn pwlq_mse_is_below_nine_sixteenths_of_uniform() {
    let (k, n) = (4096usize, 32usize);
    let shape = [k, n];
    for (name, x, closed) in [
        ("Gaussian", gaussian(k * n, 31), Breakpoint::Gaussian),
        ("Laplacian", laplacian(k * n, 32), Breakpoint::Laplace),
    ] {
        for bits in [4u32, 6, 8] {
            let u = uniform_mse(&x, &shape, bits);
            for bp in [closed, Breakpoint::Search] {
                let e = PwlqQuantizer::new(bits, bp)
                    .with_granularity(AXIS1)
                    .calibrate(&x, &shape)
                    .unwrap()
                    .error(&x, &shape)
                    .unwrap();
                let ratio = e.mse / u;
                let same_storage = if bits < 8 {
                    format!("{:.3}", e.mse / uniform_mse(&x, &shape, bits + 1))
                } else {
                    "n/a (9-bit)".into()
                };
                report!(
                    "MSE {name} b={bits} {bp:?}: PWLQ/uniform {ratio:.3} (bound 0.5625); PWLQ b/uniform b+1 (same storage) {same_storage}; SQNR {:.2} dB",
                    e.sqnr_db
                );
                if bits == 4 {
                    assert!(ratio <= 9.0 / 16.0, "{name} {bp:?}: PWLQ/uniform = {ratio}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Degenerate slots and bad input
// ---------------------------------------------------------------------------------------

#[test]
fn zero_constant_and_single_value_channels() {
    // Columns: all zero, constant 0.3, constant −0.7, one non-zero, Gaussian.
    let (k, n) = (50usize, 5usize);
    let g = gaussian(k, 41);
    let mut x = vec![0f32; k * n];
    for r in 0..k {
        x[r * n + 1] = 0.3;
        x[r * n + 2] = -0.7;
        x[r * n + 3] = if r == 17 { 0.25 } else { 0.0 };
        x[r * n + 4] = g[r];
    }
    for bits in [4u32, 6, 8] {
        for bp in [Breakpoint::Gaussian, Breakpoint::Laplace, Breakpoint::Search, Breakpoint::Ratio(0.5)] {
            let params = PwlqQuantizer::new(bits, bp).with_granularity(AXIS1).calibrate(&x, &[k, n]).unwrap();
            let c = params.channels();
            assert!(c.iter().all(|c| c.p.is_finite() && c.s1.is_finite() && c.s2.is_finite()));
            assert_eq!((c[0].m, c[0].p, c[0].s1, c[0].s2), (0.0, 0.0, 0.0, 0.0), "{bp:?}");
            let t = params.quantize(&x, &[k, n]).unwrap();
            let xh = t.dequantize();
            for r in 0..k {
                assert_eq!(t.codes()[r * n], 0);
                assert_eq!(xh[r * n].to_bits(), 0f32.to_bits(), "zero channel dequantizes to +0.0");
                if matches!(bp, Breakpoint::Gaussian | Breakpoint::Laplace) {
                    // σ = 0: p = m, so the constant is the top centre level.
                    for col in [1usize, 2] {
                        let (v, vh) = (x[r * n + col] as f64, xh[r * n + col] as f64);
                        assert!((v - vh).abs() <= 2.0 * f32::EPSILON as f64 * v.abs(), "{bp:?} b={bits}: {v} → {vh}");
                    }
                }
            }
            let top = 32767.min(1024 * q_of(bits));
            assert!(params.snap_to_grid(&x, &[k, n], GridScope::Shared, top + 1).is_err());
            let ga = params.snap_to_grid(&x, &[k, n], GridScope::Shared, top).unwrap();
            assert_eq!(ga.grid_scales()[0], 0.0);
            assert!(ga.dequantize().iter().all(|v| v.is_finite()));
            assert!(ga.mse_grid().is_finite());
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let x = gaussian(64, 51);
    let shape = [8usize, 8];
    let q = PwlqQuantizer::new(4, Breakpoint::Search).with_granularity(AXIS1);
    let params = q.calibrate(&x, &shape).unwrap();

    // Bits.
    for bits in [0u32, 3, 5, 7, 9] {
        assert!(PwlqQuantizer::new(bits, Breakpoint::Gaussian).calibrate(&x, &[64]).is_err(), "bits {bits}");
        assert!(PwlqParams::new(bits, Granularity::PerTensor, vec![1.0], vec![0.5]).is_err());
        assert!(PwlqChannel::new(bits, 1.0, 0.5).is_err());
        assert!(search_breakpoint(&x, bits, 1.0).is_err());
    }
    // NaN / inf data.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut y = x.clone();
        y[13] = bad;
        assert!(matches!(q.calibrate(&y, &shape), Err(Error::InvalidParameter(_))), "{bad}");
        assert!(params.quantize(&y, &shape).is_err());
        assert!(params.quantize_into(&y, &shape, &mut [0i16; 64]).is_err());
        assert!(params.snap_to_grid(&y, &shape, GridScope::PerChannel, 127).is_err());
        assert!(search_breakpoint(&y, 4, 1.0).is_err());
        let t = params.quantize(&x, &shape).unwrap();
        assert!(t.bias_correction(&y, &[0.5]).is_err());
        assert!(t.bias_correction(&x, &[bad]).is_err());
    }
    // Empty data.
    assert!(matches!(
        PwlqQuantizer::new(4, Breakpoint::Gaussian).calibrate(&[], &[0]),
        Err(Error::InvalidParameter(_))
    ));
    assert!(PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(AXIS1).calibrate(&[], &[0, 4]).is_err());
    let one = PwlqParams::new(4, Granularity::PerTensor, vec![1.0], vec![0.5]).unwrap();
    assert!(one.snap_to_grid(&[], &[0], GridScope::Shared, 127).is_err());
    assert!(one.error(&[], &[0]).is_err());
    // Parameters.
    for (m, p) in [(-1.0f32, 0.0f32), (f32::NAN, 0.0), (f32::INFINITY, 0.0), (1.0, 1.5), (1.0, -0.1), (1.0, f32::NAN)] {
        assert!(PwlqParams::new(4, Granularity::PerTensor, vec![m], vec![p]).is_err(), "m {m} p {p}");
    }
    assert!(PwlqParams::new(4, Granularity::PerTensor, vec![], vec![]).is_err());
    assert!(PwlqParams::new(4, AXIS1, vec![1.0, 1.0], vec![0.5]).is_err());
    assert!(PwlqParams::new(4, Granularity::PerTensor, vec![1.0, 1.0], vec![0.5, 0.5]).is_err());
    assert!(PwlqParams::new(4, Granularity::PerGroup { axis: 0, group_size: 0 }, vec![1.0], vec![0.5]).is_err());
    assert!(PwlqQuantizer::new(4, Breakpoint::Ratio(1.5)).calibrate(&x, &[64]).is_err());
    assert!(PwlqQuantizer::new(4, Breakpoint::Ratio(f32::NAN)).calibrate(&x, &[64]).is_err());
    assert!(q.clone().with_clip(vec![1.0, 2.0]).calibrate(&x, &shape).is_err());
    assert!(q.clone().with_clip(vec![-1.0]).calibrate(&x, &shape).is_err());
    assert!(q.clone().with_clip(vec![f32::NAN]).calibrate(&x, &shape).is_err());
    // Shapes and buffers.
    assert!(params.quantize(&x, &[8, 9]).is_err());
    assert!(params.quantize(&x, &[64]).is_err(), "slot count");
    assert!(params.quantize(&x, &[8, 8, 1]).is_ok(), "axis 1 of a rank-3 tensor still has 8 channels");
    assert!(matches!(params.quantize_into(&x, &shape, &mut [0i16; 63]), Err(Error::BufferTooSmall { .. })));
    assert!(params.quantize_into(&x, &shape, &mut [0i16; 65]).is_err());
    assert!(
        PwlqQuantizer::new(4, Breakpoint::Gaussian)
            .with_granularity(Granularity::PerChannel { axis: 2 })
            .calibrate(&x, &shape)
            .is_err()
    );
    // Codes out of range.
    let mut codes = vec![0i16; 64];
    codes[5] = 16;
    assert!(params.dequantize(&codes, &shape).is_err());
    assert!(PwlqTensor::new(codes.clone(), &shape, params.clone()).is_err());
    codes[5] = -16;
    assert!(PwlqTensor::new(codes.clone(), &shape, params.clone()).is_err());
    codes[5] = i16::MIN;
    assert!(params.dequantize(&codes, &shape).is_err());
    codes[5] = 15;
    assert!(params.dequantize(&codes, &shape).is_ok());
    assert!(params.dequantize_into(&codes, &shape, &mut [0f32; 10]).is_err());
    // Grid limits.
    assert!(params.snap_to_grid(&x, &shape, GridScope::PerChannel, 6).is_err());
    assert!(params.snap_to_grid(&x, &shape, GridScope::PerChannel, 40_000).is_err());
    assert!(params.snap_to_grid(&x, &[64], GridScope::PerChannel, 127).is_err());
    // Packing needs rank 2 per channel on axis 0 or 1.
    let t = params.quantize(&x, &shape).unwrap();
    assert!(t.pack().is_ok());
    let pt = PwlqQuantizer::new(4, Breakpoint::Gaussian).quantize(&x, &shape).unwrap();
    assert!(matches!(pt.pack(), Err(Error::Unsupported(_))));
    assert!(pt.bias_correction(&x, &[0.0]).is_err());
    let r3 = PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(AXIS1).quantize(&x, &[8, 8, 1]).unwrap();
    assert!(r3.pack().is_err());
    // Bias correction arguments.
    assert!(t.bias_correction(&x[..63], &[0.0]).is_err());
    assert!(t.bias_correction(&x, &[0.0; 7]).is_err());
    assert!(t.corrected_bias(&x, &[0.0], Some(&[0.0; 7])).is_err());
    assert_eq!(t.corrected_bias(&x, &[0.0], Some(&[0.5; 8])).unwrap(), vec![0.5; 8]);
}

// ---------------------------------------------------------------------------------------
// Packed layout
// ---------------------------------------------------------------------------------------

/// The packed planes built here from the documented layout.
fn oracle_planes(codes_nk: &[i32], n: usize, k: usize, bits: u32) -> (Vec<u8>, Vec<u64>) {
    let q = q_of(bits);
    let blocks = k.div_ceil(64);
    let bb = if bits == 4 { 32 } else { 64 };
    let mut values = vec![0u8; n * blocks * bb];
    let mut regions = vec![0u64; if bits == 6 { 0 } else { n * blocks }];
    for c in 0..n {
        for kk in 0..k {
            let j = codes_nk[c * k + kk];
            let region = (j.abs() > q) as u32;
            let mag = if region == 1 { j.abs() - q - 1 } else { j.abs() } as u32;
            let sign = (j < 0) as u32;
            let (kb, i) = (kk / 64, kk % 64);
            match bits {
                4 => {
                    let nib = (sign << 3 | mag) as u8;
                    let at = c * blocks * 32 + kb * 32 + i % 32;
                    values[at] |= if i < 32 { nib } else { nib << 4 };
                    regions[c * blocks + kb] |= (region as u64) << i;
                }
                6 => values[c * blocks * 64 + kb * 64 + i] = (region << 6 | sign << 5 | mag) as u8,
                _ => {
                    values[c * blocks * 64 + kb * 64 + i] = (sign << 7 | mag) as u8;
                    regions[c * blocks + kb] |= (region as u64) << i;
                }
            }
        }
    }
    (values, regions)
}

#[test]
fn pack_layout_is_the_documented_one_and_round_trips() {
    let mut r = rng(61);
    assert_eq!(PWLQ_BLOCK, 64);
    for bits in [4u32, 6, 8] {
        let q = q_of(bits);
        for axis in [0usize, 1] {
            for &(n, k) in &[(1usize, 1usize), (3, 63), (2, 64), (5, 65), (4, 130), (1, 200)] {
                let m: Vec<f32> = (0..n).map(|_| r.random_range(0.01f32..2.0)).collect();
                let p: Vec<f32> = m.iter().map(|&m| m * r.random_range(0.0f32..1.0)).collect();
                let g = Granularity::PerChannel { axis };
                let params = PwlqParams::new(bits, g, m.clone(), p.clone()).unwrap();
                let shape = if axis == 0 { [n, k] } else { [k, n] };
                // Random codes over the full range, plus the extremes.
                let mut nk: Vec<i32> = (0..n * k).map(|_| r.random_range(-(2 * q + 1)..=2 * q + 1)).collect();
                nk[0] = -(2 * q + 1);
                if n * k > 1 {
                    nk[n * k - 1] = -(q + 1); // tail, q = 0, negative: the sign matters
                }
                let mut codes = vec![0i16; n * k];
                for c in 0..n {
                    for kk in 0..k {
                        let i = if axis == 0 { c * k + kk } else { kk * n + c };
                        codes[i] = nk[c * k + kk] as i16;
                    }
                }
                let t = PwlqTensor::new(codes, &shape, params).unwrap();
                let packed = t.pack().unwrap();
                let (values, regions) = oracle_planes(&nk, n, k, bits);
                assert_eq!(packed.values(), &values[..], "bits {bits} axis {axis} {n}×{k}");
                assert_eq!(packed.regions(), &regions[..]);
                assert_eq!(
                    (packed.channels(), packed.k(), packed.blocks(), packed.channel_axis()),
                    (n, k, k.div_ceil(64), axis)
                );
                assert_eq!(packed.row_bytes() * n, values.len());
                // Fields, codes, padding.
                for c in 0..n {
                    for kk in 0..packed.blocks() * 64 {
                        let want = if kk < k { nk[c * k + kk] } else { 0 };
                        assert_eq!(packed.code(c, kk) as i32, want);
                        if kk >= k {
                            assert_eq!(packed.field(c, kk), 0, "padding");
                        }
                    }
                }
                // Round trips.
                let back = packed.unpack();
                assert_eq!(&back, &t);
                let again = PwlqPacked::from_parts(packed.clone().into_parts()).unwrap();
                assert_eq!(again, packed);
                // The channel-major reference dequant equals the tensor's, bit for bit.
                let cm = packed.dequantize_channel_major();
                let xh = t.dequantize();
                for c in 0..n {
                    for kk in 0..k {
                        let i = if axis == 0 { c * k + kk } else { kk * n + c };
                        assert_eq!(cm[c * k + kk].to_bits(), xh[i].to_bits());
                    }
                }
            }
        }
    }
}

#[test]
fn from_parts_rejects_malformed_planes() {
    let x = gaussian(3 * 70, 71);
    for bits in [4u32, 6, 8] {
        let t = PwlqQuantizer::new(bits, Breakpoint::Search)
            .with_granularity(Granularity::PerChannel { axis: 0 })
            .quantize(&x, &[3, 70])
            .unwrap();
        let good = t.pack().unwrap().into_parts();
        assert!(PwlqPacked::from_parts(good.clone()).is_ok());
        let with = |f: &dyn Fn(&mut PwlqPackedParts)| {
            let mut p = good.clone();
            f(&mut p);
            PwlqPacked::from_parts(p)
        };
        assert!(with(&|p| p.bits = 5).is_err());
        assert!(with(&|p| p.channel_axis = 2).is_err());
        assert!(
            with(&|p| {
                p.values.pop();
            })
            .is_err()
        );
        assert!(with(&|p| p.values.push(0)).is_err());
        assert!(with(&|p| p.regions.push(0)).is_err());
        assert!(
            with(&|p| {
                p.m.pop();
            })
            .is_err()
        );
        assert!(with(&|p| p.p[1] = p.m[1] * 2.0).is_err());
        assert!(with(&|p| p.k = 200).is_err());
        // Padding (weights 70..128 of each channel) must be zero.
        let row = good.values.len() / 3;
        let last_block = row - if bits == 4 { 32 } else { 64 };
        let pad_byte = last_block + 10; // weight 64 + 10 = 74 ≥ K = 70 (b = 4: the low nibble)
        assert!(with(&|p| p.values[pad_byte] |= 1).is_err(), "bits {bits}: padding value");
        if bits != 6 {
            assert!(with(&|p| p.regions[1] |= 1 << 20).is_err(), "bits {bits}: padding region");
        }
        // Negative centre zero is not canonical; bit 7 is not part of a 6-bit field.
        let mut at = None;
        for kk in 0..70 {
            if t.codes()[kk] == 0 {
                at = Some(kk);
                break;
            }
        }
        if let Some(kk) = at {
            let neg_zero = match bits {
                4 => (0x8u8 << (4 * (kk / 32)), kk % 32),
                6 => (0x20, kk),
                _ => (0x80, kk),
            };
            assert!(with(&|p| p.values[neg_zero.1] |= neg_zero.0).is_err(), "bits {bits}: −0");
        }
        if bits == 6 {
            assert!(with(&|p| p.values[0] |= 0x80).is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The exact-mode GEMM reference
// ---------------------------------------------------------------------------------------

const U: f64 = 1.0 / 16_777_216.0; // 2⁻²⁴, the f32 unit roundoff

struct GemmCase<A: Int8> {
    a: Vec<A>,
    za: A,
    m: usize,
}

fn check_gemm<A: Int8>(case: &GemmCase<A>, t: &PwlqTensor, sa: f32, bias: Option<&[f32]>) -> (f64, f64) {
    let packed = t.pack().unwrap();
    let (n, k) = (packed.channels(), packed.k());
    let bits = packed.bits();
    let m = case.m;
    let am = MatrixRef::new(&case.a, m, k);
    // (a) The integer dots equal the oracle's, from the unpacked level indices.
    let dots = gemm_exact_dots_ref(am, case.za, &packed).unwrap();
    assert_eq!((dots.rows, dots.cols), (m, n));
    let codes = t.codes();
    let axis = packed.channel_axis();
    let code_at = |kk: usize, c: usize| codes[if axis == 1 { kk * n + c } else { c * k + kk }] as i32;
    let za = case.za.to_i32() as i64;
    let mut worst = (0f64, 0f64);
    let mut out = vec![f32::NAN; m * n];
    gemm_exact_ref(Activations::new(am, case.za, sa), &packed, bias, MatrixMut::new(&mut out, m, n)).unwrap();
    let xh = t.dequantize();
    let wh = |kk: usize, c: usize| xh[if axis == 1 { kk * n + c } else { c * k + kk }] as f64;
    for r in 0..m {
        for c in 0..n {
            let mut want = DotTriple::default();
            let (mut y64, mut s) = (0f64, 0f64);
            for kk in 0..k {
                let av = case.a[r * k + kk].to_i32() as i64 - za;
                let (x, y, z) = oracle_parts(code_at(kk, c), bits);
                want.centre += av * x;
                want.tail += av * y;
                want.tail_sign += av * z;
                y64 += av as f64 * wh(kk, c);
                s += (av as f64).abs() * wh(kk, c).abs();
            }
            assert_eq!(dots.dots[r * n + c], want, "dots ({r},{c})");
            // (b) The f32 epilogue, written out here.
            let ch = &packed.channel_params()[c];
            let e = ((ch.s1 * want.centre as f32 + ch.s2 * want.tail as f32) + ch.p * want.tail_sign as f32) * sa;
            let e = match bias {
                Some(b) => e + b[c],
                None => e,
            };
            assert_eq!(out[r * n + c].to_bits(), e.to_bits(), "output ({r},{c})");
            assert_eq!(combine_exact(want, ch, sa, bias.map(|b| b[c])).to_bits(), e.to_bits());
            // (c) Against the f64 GEMM of the dequantized f32 weights. With T = Σ|a−za||ŵ|:
            // the fused value is within γ4·T of the exact-real one (4 roundings on the
            // centre and tail terms, 3 on the p term), each dequantized weight within
            // (2u + u²)|ŵ*| of it, and the f64 sum within K·2⁻⁵³·S; then the scale and
            // the bias add one rounding each.
            let t_real = s / (1.0 - 3.0 * U);
            let raw = (4.0 * U / (1.0 - 4.0 * U) + 2.0 * U + U * U) * t_real + k as f64 * f64::EPSILON * s;
            let fused = ((ch.s1 * want.centre as f32 + ch.s2 * want.tail as f32) + ch.p * want.tail_sign as f32) as f64;
            let b = bias.map_or(0.0, |b| b[c] as f64);
            let bound = sa as f64 * raw * (1.0 + U) * (1.0 + U)
                + U * (fused * sa as f64).abs() * (1.0 + U)
                + if bias.is_some() { U * (out[r * n + c] as f64).abs() } else { 0.0 };
            let err = (out[r * n + c] as f64 - (sa as f64 * y64 + b)).abs();
            assert!(err <= bound, "({r},{c}): |fused − f64| = {err:e} > bound {bound:e}");
            // The bound is tight enough to see a wrong p term.
            let p_term = (ch.p as f64 * want.tail_sign as f64 * sa as f64).abs();
            if p_term > worst.1 {
                worst = (bound, p_term);
            }
        }
    }
    worst
}

fn u8_case(m: usize, k: usize, za: u8, seed: u64) -> GemmCase<u8> {
    let mut r = rng(seed);
    let a = (0..m * k).map(|i| if i % 17 == 0 { if i % 2 == 0 { 255 } else { 0 } } else { r.random() }).collect();
    GemmCase { a, za, m }
}

fn i8_case(m: usize, k: usize, za: i8, seed: u64) -> GemmCase<i8> {
    let mut r = rng(seed);
    let a = (0..m * k).map(|i| if i % 13 == 0 { if i % 2 == 0 { 127 } else { -128 } } else { r.random() }).collect();
    GemmCase { a, za, m }
}

#[test]
fn exact_gemm_reference_is_exact_and_within_the_derived_bound() {
    let mut seed = 80;
    let mut max_ratio = 0f64;
    for bits in [4u32, 6, 8] {
        for &(m, k, n) in &[(1usize, 1usize, 1usize), (3, 65, 5), (2, 3000, 17), (4, 64, 3)] {
            for axis in [0usize, 1] {
                seed += 1;
                let x = if seed % 2 == 0 { gaussian(k * n, seed) } else { laplacian(k * n, seed) };
                let shape = if axis == 0 { [n, k] } else { [k, n] };
                let t = PwlqQuantizer::new(bits, Breakpoint::Search)
                    .with_granularity(Granularity::PerChannel { axis })
                    .quantize(&x, &shape)
                    .unwrap();
                let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 1.0).collect();
                for (za, sa, b) in [(128u8, 1.0f32, None), (0, 0.0371, Some(&bias[..])), (255, 2.5, None)] {
                    let (bound, p_term) = check_gemm(&u8_case(m, k, za, seed), &t, sa, b);
                    if p_term > 0.0 {
                        max_ratio = max_ratio.max(p_term / bound);
                    }
                }
                for (za, sa, b) in [(0i8, 1.0f32, Some(&bias[..])), (-128, 0.5, None), (5, 1.0, None)] {
                    check_gemm(&i8_case(m, k, za, seed), &t, sa, b);
                }
            }
        }
    }
    report!(
        "exact GEMM: largest |p·Ds| is {max_ratio:.2e} × the error bound (a missing or mis-signed p term would fail)"
    );
    assert!(max_ratio > 1e4);
}

/// K large enough that the dots leave i32 and f32's 24-bit mantissa: the i64 path and
/// the i64 → f32 rounding are exercised.
#[test]
fn exact_gemm_reference_large_k() {
    let k = 70_000usize;
    let bits = 8;
    // Channel 0: every weight at the top centre level (+127); channel 1: every weight in
    // the top tail (−(2Q+1)).
    let mut codes = vec![0i16; 2 * k];
    for kk in 0..k {
        codes[kk] = 127;
        codes[k + kk] = -255;
    }
    let params = PwlqParams::new(bits, Granularity::PerChannel { axis: 0 }, vec![1.0, 2.0], vec![0.3, 0.9]).unwrap();
    let t = PwlqTensor::new(codes, &[2, k], params).unwrap();
    let case = GemmCase { a: vec![255u8; k], za: 0, m: 1 };
    check_gemm(&case, &t, 1.0, None);
    let d = gemm_exact_dots_ref(MatrixRef::new(&case.a, 1, k), 0u8, &t.pack().unwrap()).unwrap();
    assert_eq!(d.dots[0].centre, 255 * 127 * k as i64);
    assert!(d.dots[0].centre > i32::MAX as i64);
    assert_eq!(d.dots[1], DotTriple { centre: 0, tail: -255 * 127 * k as i64, tail_sign: -255 * k as i64 });
}

#[test]
fn exact_gemm_reference_rejects_bad_arguments() {
    let x = gaussian(32 * 4, 91);
    let packed = PwlqQuantizer::new(4, Breakpoint::Gaussian)
        .with_granularity(AXIS1)
        .quantize(&x, &[32, 4])
        .unwrap()
        .pack()
        .unwrap();
    let a = vec![1u8; 2 * 32];
    let mut c = vec![0f32; 8];
    let act = |k: usize| Activations::new(MatrixRef::new(&a, 2, k), 0u8, 1.0);
    assert!(gemm_exact_ref(act(32), &packed, None, MatrixMut::new(&mut c, 2, 4)).is_ok());
    assert!(gemm_exact_ref(act(31), &packed, None, MatrixMut::new(&mut c, 2, 4)).is_err(), "K mismatch");
    assert!(gemm_exact_ref(act(32), &packed, None, MatrixMut::new(&mut c, 2, 3)).is_err());
    assert!(gemm_exact_ref(act(32), &packed, None, MatrixMut::new(&mut c, 3, 4)).is_err());
    assert!(gemm_exact_ref(act(32), &packed, Some(&[0.0; 3]), MatrixMut::new(&mut c, 2, 4)).is_err());
    assert!(gemm_exact_ref(act(32), &packed, None, MatrixMut::new(&mut c[..7], 2, 4)).is_err());
    assert!(gemm_exact_ref(act(32), &packed, None, MatrixMut::new(&mut c, 2, 4).with_stride(3)).is_err());
    for sa in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let act = Activations::new(MatrixRef::new(&a, 2, 32), 0u8, sa);
        assert!(gemm_exact_ref(act, &packed, None, MatrixMut::new(&mut c, 2, 4)).is_err(), "sa {sa}");
    }
    assert!(gemm_exact_dots_ref(MatrixRef::new(&a[..40], 2, 32), 0u8, &packed).is_err());
    assert!(gemm_exact_dots_ref(MatrixRef::new(&a, 2, 32).with_stride(31), 0u8, &packed).is_err());
    // M = 0 is an empty product, not an error.
    let mut none: Vec<f32> = vec![];
    assert!(
        gemm_exact_ref(
            Activations::new(MatrixRef::new(&a[..0], 0, 32), 0u8, 1.0),
            &packed,
            None,
            MatrixMut::new(&mut none, 0, 4)
        )
        .is_ok()
    );
}

// ---------------------------------------------------------------------------------------
// Bias correction
// ---------------------------------------------------------------------------------------

#[test]
fn bias_correction_cancels_the_mean_output_error() {
    let (k, n) = (64usize, 8usize);
    let w = gaussian(k * n, 101);
    let t = PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(AXIS1).quantize(&w, &[k, n]).unwrap();
    let wh = t.dequantize();
    let mut r = rng(102);
    let mu: Vec<f32> = (0..k).map(|_| r.random_range(0.0f32..2.0)).collect(); // post-ReLU-like means
    let bias: Vec<f32> = (0..n).map(|i| 0.1 * i as f32).collect();
    let delta = t.bias_correction(&w, &mu).unwrap();
    let corrected = t.corrected_bias(&w, &mu, Some(&bias)).unwrap();
    // δ[n] = Σ_k μ_k (w − ŵ), summed here in the same order.
    for c in 0..n {
        let d: f64 = (0..k).map(|kk| mu[kk] as f64 * (w[kk * n + c] as f64 - wh[kk * n + c] as f64)).sum();
        assert_eq!(delta[c], d as f32);
        assert_eq!(corrected[c], bias[c] + d as f32);
    }
    // A batch whose per-feature mean is exactly μ: pairs μ ± d.
    let rows = 200;
    let mut batch = vec![vec![0f64; k]; rows];
    for pair in 0..rows / 2 {
        for kk in 0..k {
            let d = r.random_range(-1.0f32..1.0) as f64;
            batch[2 * pair][kk] = mu[kk] as f64 + d;
            batch[2 * pair + 1][kk] = mu[kk] as f64 - d;
        }
    }
    for c in 0..n {
        let (mut plain, mut fixed) = (0f64, 0f64);
        for row in &batch {
            let y: f64 = (0..k).map(|kk| row[kk] * w[kk * n + c] as f64).sum::<f64>() + bias[c] as f64;
            let yq: f64 = (0..k).map(|kk| row[kk] * wh[kk * n + c] as f64).sum::<f64>();
            plain += y - (yq + bias[c] as f64);
            fixed += y - (yq + corrected[c] as f64);
        }
        let (plain, fixed) = (plain / rows as f64, fixed / rows as f64);
        let scale: f64 =
            (0..k).map(|kk| (mu[kk] as f64 * (w[kk * n + c] as f64 - wh[kk * n + c] as f64)).abs()).sum::<f64>()
                + bias[c].abs() as f64;
        // The corrected bias is off only by its f32 roundings (and the f64 sums).
        let tol = 4.0 * U * scale + 1e-12;
        assert!(fixed.abs() <= tol, "channel {c}: mean error after correction {fixed:e} > {tol:e}");
        assert!(plain.abs() > 100.0 * tol, "channel {c}: uncorrected mean error {plain:e} is not visibly larger");
    }
}

// ---------------------------------------------------------------------------------------
// Grid-aligned snapping
// ---------------------------------------------------------------------------------------

fn reduced_ratios(q: i32, max_level: i32) -> Vec<(u32, u32)> {
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut v = vec![];
    for i in 0..=max_level as u32 {
        for j in 0..=max_level as u32 {
            if i + j >= 1 && q as u32 * (i + j) <= max_level as u32 && gcd(i, j) == 1 {
                v.push((i, j));
            }
        }
    }
    v
}

/// The grid definition written out: `g = m/(Q(i+j))` rounded once from f64, codes by the
/// PWLQ rule with `m' = Q(i+j)·g`, `p' = Qi·g`, `s1 = i·g`, `s2 = j·g`, value `L·g`.
fn oracle_grid(x: f32, m: f32, (i, j): (u32, u32)) -> (i32, f32) {
    let q = 7u32;
    let g = (m as f64 / (q * (i + j)) as f64) as f32;
    let ch = PwlqChannel { m: (q * (i + j)) as f32 * g, p: (q * i) as f32 * g, s1: i as f32 * g, s2: j as f32 * g };
    let code = oracle_code(x, 4, &ch);
    let (c, t, s) = oracle_parts(code, 4);
    let l = c * i as i64 + t * j as i64 + s * (q * i) as i64;
    (code, l as f32 * g)
}

#[test]
fn grid_aligned_snap_makes_an_integer_codebook_and_reports_its_cost() {
    let (k, n) = (4096usize, 32usize);
    let shape = [k, n];
    for (name, x, closed) in [
        ("Gaussian", gaussian(k * n, 111), Breakpoint::Gaussian),
        ("Laplacian", laplacian(k * n, 112), Breakpoint::Laplace),
    ] {
        for bp in [closed, Breakpoint::Search] {
            let params = PwlqQuantizer::new(4, bp).with_granularity(AXIS1).calibrate(&x, &shape).unwrap();
            let base = params.error(&x, &shape).unwrap().mse;
            for (max_level, scope) in [
                (127, GridScope::PerChannel),
                (127, GridScope::Shared),
                (64, GridScope::PerChannel),
                (64, GridScope::Shared),
            ] {
                let ga = params.snap_to_grid(&x, &shape, scope, max_level).unwrap();
                assert_eq!(ga.mse_pwlq(), base);
                let xg = ga.dequantize();
                assert_eq!(ga.mse_grid(), mse(&x, &xg).unwrap());
                assert!(ga.max_level() <= max_level);
                let cands = reduced_ratios(7, max_level);
                // Every value is an integer level of the slot's 32-entry codebook times g.
                for c in 0..n {
                    let (i, j) = ga.ratios()[c];
                    assert!(cands.contains(&(i, j)), "({i},{j}) is not a reduced ratio with 7(i+j) ≤ {max_level}");
                    let book = ga.codebook(c);
                    assert_eq!(book.len(), 32);
                    assert!(book.iter().all(|l| l.abs() <= max_level));
                    let mut distinct = book.clone();
                    distinct.sort();
                    distinct.dedup();
                    assert!(distinct.len() <= 29, "centre ±p and tail ±p coincide, −0 = 0: {}", distinct.len());
                    let g = ga.grid_scales()[c];
                    for kk in 0..k {
                        let code = ga.codes()[kk * n + c] as i32;
                        let q = 7;
                        let (mag, sign) = (code.abs(), (code < 0) as usize);
                        let field =
                            if mag > q { 16 | sign << 3 | (mag - q - 1) as usize } else { sign << 3 | mag as usize };
                        let l = book[field];
                        assert_eq!(l, ga.level(c, code as i16));
                        assert_eq!(xg[kk * n + c].to_bits(), (l as f32 * g).to_bits());
                    }
                    if scope == GridScope::PerChannel {
                        // One of the two reduced ratios bracketing the slot's p/m.
                        let r0 = params.ratios()[c];
                        let v = |&(a, b): &(u32, u32)| a as f64 / (a + b) as f64;
                        let lo = cands.iter().filter(|c| v(c) <= r0).max_by(|a, b| v(a).total_cmp(&v(b))).unwrap();
                        let hi = cands.iter().filter(|c| v(c) >= r0).min_by(|a, b| v(a).total_cmp(&v(b))).unwrap();
                        assert!((i, j) == *lo || (i, j) == *hi, "slot {c}: p/m {r0} snapped to {i}/{}", i + j);
                    }
                }
                for c in 0..n {
                    let m = params.channels()[c].m;
                    for kk in (c..k).step_by(7) {
                        let (code, v) = oracle_grid(x[kk * n + c], m, ga.ratios()[c]);
                        assert_eq!(ga.codes()[kk * n + c] as i32, code);
                        assert_eq!(xg[kk * n + c].to_bits(), v.to_bits());
                    }
                }
                if scope == GridScope::Shared {
                    assert!(ga.ratios().iter().all(|r| *r == ga.ratios()[0]));
                    if max_level == 127 && matches!(bp, Breakpoint::Search) {
                        // Few candidates lie in range here, so the search is exhaustive:
                        // no reduced ratio between the brackets does better.
                        let v = |&(a, b): &(u32, u32)| a as f64 / (a + b) as f64;
                        let rs = params.ratios();
                        let (lo, hi) = rs.iter().fold((1f64, 0f64), |(a, b), &r| (a.min(r), b.max(r)));
                        let from = cands.iter().filter(|c| v(c) <= lo).map(v).fold(0.0, f64::max);
                        let to = cands.iter().filter(|c| v(c) >= hi).map(v).fold(1.0, f64::min);
                        let total = |r: (u32, u32)| -> f64 {
                            (0..k * n)
                                .map(|e| {
                                    (x[e] as f64 - oracle_grid(x[e], params.channels()[e % n].m, r).1 as f64).powi(2)
                                })
                                .sum()
                        };
                        let chosen = total(ga.ratios()[0]);
                        let mut tried = 0;
                        for c in cands.iter().filter(|c| v(c) >= from && v(c) <= to) {
                            tried += 1;
                            assert!(chosen <= total(*c), "{name}: shared {:?} beaten by {c:?}", ga.ratios()[0]);
                        }
                        assert!((2..=64).contains(&tried), "{tried} candidates in range");
                    }
                }
                let rel = ga.extra_mse() / ga.mse_pwlq();
                report!(
                    "grid {name} {bp:?} max_level {max_level} {scope:?}: extra MSE {:+.3} % (PWLQ {:.4e} → grid {:.4e}); largest level {}; first ratio {:?}",
                    100.0 * rel,
                    ga.mse_pwlq(),
                    ga.mse_grid(),
                    ga.max_level(),
                    ga.ratios()[0]
                );
                // Bounds set with margin over what these seeds measure (worst: per channel
                // +0.21 % at level 127 and +0.95 % at 64; shared +1.7 % and +3.0 %).
                let bound = match (scope, max_level) {
                    (GridScope::PerChannel, 127) => 0.01,
                    (GridScope::Shared, 127) => 0.03,
                    (GridScope::PerChannel, _) => 0.03,
                    (GridScope::Shared, _) => 0.06,
                };
                assert!(rel <= bound, "{name} {bp:?} {scope:?} {max_level}: extra MSE {rel}");
            }
        }
    }
    // 6- and 8-bit PWLQ snap too, with coarser ratios (Q(i+j) must stay ≤ max_level).
    let x = gaussian(1024 * 8, 113);
    for (bits, max_level) in [(6u32, 127), (8, 127), (8, 32767)] {
        let params =
            PwlqQuantizer::new(bits, Breakpoint::Search).with_granularity(AXIS1).calibrate(&x, &[1024, 8]).unwrap();
        let ga = params.snap_to_grid(&x, &[1024, 8], GridScope::PerChannel, max_level).unwrap();
        assert_eq!(ga.codebook(0).len(), 1 << (bits + 1));
        report!(
            "grid b={bits} max_level {max_level}: extra MSE {:+.2} %, ratios {:?}…",
            100.0 * ga.extra_mse() / ga.mse_pwlq(),
            &ga.ratios()[..2]
        );
    }
}
