//! Non-uniform quantization (issue 5, points 1–2): the published level tables, the
//! nearest-level projection against a brute-force search, ties, calibration, the MSE
//! ordering APoT < PoT, uniform on bell-shaped weights, the packed code format, and bad
//! input for every public entry point.

use qkern::Error;
use qkern::quant::{
    ApotFormat, ApotRole, Calibration, CodeAssignment, Granularity, IntFormat, LevelParams, LevelQuantizer,
    LevelRange, LevelSet, LevelTensor, Mapping, PACK_K_BLOCK, PackedCodes, PotBase, PotFormat, Scheme,
    UniformQuantizer, build_power_value,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};

/// llama.cpp's IQ4_NL table (kvalues_iq4nl), a learned 4-bit codebook on the int8 grid.
const IQ4_NL: [i16; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------
// Level tables
// ---------------------------------------------------------------------------------------

/// The authors' `build_power_value`, re-derived here in f64 from their loop structure:
/// returns the normalised levels `value / max`, sorted.
fn oracle_build_power_value(b: u32, additive: bool) -> Vec<f64> {
    let p = |e: i32| 2f64.powi(-e);
    let (mut a, mut bb, mut c) = (vec![0.0], vec![0.0], vec![0.0]);
    if additive {
        for i in 0..3 {
            match b {
                2 => a.push(p(i + 1)),
                4 => {
                    a.push(p(2 * i + 1));
                    bb.push(p(2 * i + 2));
                }
                6 => {
                    a.push(p(3 * i + 1));
                    bb.push(p(3 * i + 2));
                    c.push(p(3 * i + 3));
                }
                3 => {
                    if i < 2 {
                        a.push(p(i + 1));
                    } else {
                        bb.push(p(i + 1));
                        a.push(p(i + 2));
                    }
                }
                5 => {
                    if i < 2 {
                        a.push(p(2 * i + 1));
                        bb.push(p(2 * i + 2));
                    } else {
                        c.push(p(2 * i + 1));
                        a.push(p(2 * i + 2));
                        bb.push(p(2 * i + 3));
                    }
                }
                _ => unreachable!(),
            }
        }
    } else {
        for i in 0..(1 << b) - 1 {
            a.push(p(i + 1));
        }
    }
    let mut v = Vec::new();
    for &x in &a {
        for &y in &bb {
            for &z in &c {
                v.push(x + y + z);
            }
        }
    }
    v.sort_by(f64::total_cmp);
    v.dedup();
    let m = *v.last().unwrap();
    v.iter().map(|x| x / m).collect()
}

#[test]
fn apot_tables_match_the_paper() {
    assert_eq!(build_power_value(2, true).unwrap(), vec![0, 1, 2, 4]);
    assert_eq!(build_power_value(3, true).unwrap(), vec![0, 1, 2, 3, 4, 6, 8, 10]);
    assert_eq!(build_power_value(4, true).unwrap(), vec![0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]);
    let b5 = vec![
        0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 17, 20, 21, 24, 28, 32, 34, 36, 38, 48, 52, 64, 65, 68, 69, 72, 76,
        96, 100,
    ];
    assert_eq!(build_power_value(5, true).unwrap(), b5);
    assert_eq!(build_power_value(6, true).unwrap().len(), 64);
    assert_eq!(*build_power_value(6, true).unwrap().last().unwrap(), 448);
    assert_eq!(build_power_value(3, false).unwrap(), vec![0, 1, 2, 4, 8, 16, 32, 64]);
    // Every case against the float re-derivation of the authors' loops.
    for (b, additive) in (2..=6).map(|b| (b, true)).chain((1..=6).map(|b| (b, false))) {
        let ours = build_power_value(b, additive).unwrap();
        let max = *ours.last().unwrap() as f64;
        let ours_norm: Vec<f64> = ours.iter().map(|&v| v as f64 / max).collect();
        assert_eq!(ours_norm, oracle_build_power_value(b, additive), "B = {b}, additive = {additive}");
    }
}

fn sorted_levels_i(set: &LevelSet) -> Vec<i32> {
    set.sorted_levels()
        .iter()
        .map(|&v| {
            assert_eq!(v, v.trunc(), "level {v} is not an integer");
            v as i32
        })
        .collect()
}

fn symmetric(m: &[i32]) -> Vec<i32> {
    let mut v: Vec<i32> = m.iter().map(|x| -x).chain(m.iter().copied()).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn apot_formats_reproduce_the_issue_tables() {
    let w4 = ApotFormat::weight(4).unwrap();
    let set = w4.level_set();
    assert_eq!(sorted_levels_i(&set), symmetric(&[0, 1, 2, 3, 4, 6, 8, 10]));
    assert_eq!(set.grid().unwrap().max_abs(), 10);
    assert_eq!(w4.grid_max(), 10);
    assert_eq!(set.assignment(), CodeAssignment::SignMagnitude);
    assert_eq!(set.num_codes(), 16);
    // Sign + magnitude codes: 0..8 positive ascending, 8..16 their negatives.
    let by_code: Vec<f32> = (0..16).map(|c| set.level(c).unwrap()).collect();
    assert_eq!(by_code, [0., 1., 2., 3., 4., 6., 8., 10., 0., -1., -2., -3., -4., -6., -8., -10.]);
    assert!(set.level(8).unwrap().is_sign_positive(), "code 8 (−0) must dequantize to +0.0");
    assert_eq!(set.zero_code(), Some(0));

    let a4 = ApotFormat::activation(4).unwrap().level_set();
    assert_eq!(sorted_levels_i(&a4), vec![0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]);
    assert_eq!(a4.grid().unwrap().max_abs(), 48);
    assert_eq!(a4.assignment(), CodeAssignment::Sorted);

    let a5 = ApotFormat::activation(5).unwrap().level_set();
    assert_eq!(a5.sorted_levels().len(), 32);
    assert_eq!(a5.grid().unwrap().max_abs(), 100);
    assert_eq!(a5.bits(), 5);

    let w5 = ApotFormat::weight(5).unwrap().level_set();
    assert_eq!(sorted_levels_i(&w5), symmetric(&[0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]));
    assert_eq!(w5.grid().unwrap().max_abs(), 48);

    let w3 = ApotFormat::weight(3).unwrap().level_set();
    assert_eq!(sorted_levels_i(&w3), symmetric(&[0, 1, 2, 4]));
    let w2 = ApotFormat::weight(2).unwrap().level_set();
    assert_eq!(sorted_levels_i(&w2), vec![-1, 0, 1], "2-bit weights are ternary");
    let a2 = ApotFormat::activation(2).unwrap().level_set();
    assert_eq!(sorted_levels_i(&a2), vec![0, 1, 2, 4]);

    // α scaling: code c stands for level · (α / 10).
    let alpha = 2.5f32;
    let p = w4.params(Granularity::PerTensor, &[alpha]).unwrap();
    for c in 0..16u8 {
        assert_eq!(p.value(0, c).unwrap(), set.level(c).unwrap() * (alpha / 10.0));
    }
    assert_eq!(p.value(0, 7).unwrap(), 2.5);
}

#[test]
fn pot_formats() {
    let p4 = PotFormat::signed(4).unwrap();
    assert_eq!(p4.num_exponents(), 7);
    let set = p4.level_set();
    assert_eq!(sorted_levels_i(&set), symmetric(&[0, 1, 2, 4, 8, 16, 32, 64]));
    assert_eq!(set.grid().unwrap().max_abs(), 64);
    assert!(set.grid().unwrap().fits_i8());
    // Sign + exponent index: code m (1..8) is 2^(m−1) in level units, code 8 + m its negative.
    for m in 1..8u8 {
        assert_eq!(set.level(m).unwrap(), (1u32 << (m - 1)) as f32);
        assert_eq!(set.level(8 + m).unwrap(), -((1u32 << (m - 1)) as f32));
    }
    assert_eq!(sorted_levels_i(&PotFormat::signed(3).unwrap().level_set()), symmetric(&[0, 1, 2, 4]));
    let p5 = PotFormat::signed(5).unwrap().level_set();
    assert_eq!(p5.grid().unwrap().max_abs(), 16384);
    assert!(!p5.grid().unwrap().fits_i8());
    let u4 = PotFormat::unsigned(4).unwrap().level_set();
    assert_eq!(u4.sorted_levels().len(), 16);
    assert_eq!(u4.grid().unwrap().max_abs(), 16384);
    assert_eq!(u4.level(0), Some(0.0));
    assert_eq!(u4.level(15), Some(16384.0));
    assert!(PotFormat::unsigned(5).unwrap().level_set().grid().is_none(), "2^30 does not fit an i16 grid");

    // Base √2: consecutive magnitudes differ by √2 (to f32 rounding), top level 1, no grid.
    let s2 = PotFormat::signed(4).unwrap().with_base(PotBase::Sqrt2).level_set();
    assert!(s2.grid().is_none());
    let mags: Vec<f32> = (1..8).map(|c| s2.level(c).unwrap()).collect();
    assert_eq!(mags[6], 1.0);
    for j in 0..7 {
        assert_eq!(mags[6 - j], (2f64.powf(-(j as f64) / 2.0)) as f32);
    }

    // Given FSR: the top level is 2^FSR.
    let p = p4.params(Granularity::PerTensor, &[0]).unwrap();
    assert_eq!(p.scales(), &[1.0 / 64.0]);
    assert_eq!(p.value(0, 7), Some(1.0));
    assert_eq!(p.value(0, 1), Some(1.0 / 64.0));
    assert_eq!(p.value(0, 15), Some(-1.0));
    assert_eq!(p4.fsr_of_scale(p.scales()[0]), Some(0));
    assert_eq!(p4.fsr_of_scale(0.3), None);

    // FSR from data = ⌈log2 max|x|⌉.
    for (max, fsr) in [(3.0f32, 2), (4.0, 2), (4.0001, 3), (0.75, 0), (0.5, -1), (1e-3, -9)] {
        let x = [0.1f32 * max, -max, 0.5 * max];
        let q = p4.quantizer().calibrate(&x, &[3]).unwrap();
        assert_eq!(p4.fsr_of_scale(q.scales()[0]), Some(fsr), "max |x| = {max}");
    }
    let s2q = PotFormat::signed(4).unwrap().with_base(PotBase::Sqrt2).quantizer().calibrate(&[3.0], &[1]).unwrap();
    assert_eq!(s2q.scales(), &[4.0]);
}

#[test]
fn codebook_grid_detection() {
    let iq = LevelSet::codebook_i16(4, &IQ4_NL).unwrap();
    let g = iq.grid().unwrap();
    assert_eq!(g.step_exp(), 0);
    assert_eq!(g.values(), &IQ4_NL);
    assert_eq!(g.max_abs(), 127);
    assert!(g.fits_i8());
    assert_eq!(iq.zero_code(), None);

    let quarter = LevelSet::codebook(3, &[-0.5, -0.25, 0.0, 0.25, 0.5, 1.0]).unwrap();
    let g = quarter.grid().unwrap();
    assert_eq!((g.step_exp(), g.values()), (-2, &[-2i16, -1, 0, 1, 2, 4][..]));

    let coarse = LevelSet::codebook(2, &[-256.0, 0.0, 64.0, 128.0]).unwrap();
    let g = coarse.grid().unwrap();
    assert_eq!((g.step_exp(), g.values(), g.max_abs()), (6, &[-4i16, 0, 1, 2][..], 4));

    assert_eq!(LevelSet::codebook(1, &[0.0, 40000.0]).unwrap().grid().unwrap().values(), &[0, 625]);
    assert!(LevelSet::codebook(1, &[1.0, 40000.0]).unwrap().grid().is_none(), "40000 > 32767 steps");
    assert!(LevelSet::codebook(2, &[-1.0, -0.3, 0.4, 1.0]).unwrap().grid().is_none());
    assert_eq!(LevelSet::codebook(1, &[-32767.0, 32767.0]).unwrap().grid().unwrap().max_abs(), 32767);
}

// ---------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------

/// The nearest code by brute force over every code (module rule: distance measured
/// exactly, ties to the smaller magnitude, then to the positive value, then the smallest
/// code; NaN as 0.0; ±inf to the extreme values).
fn brute_force(set: &LevelSet, s: f32, o: Option<f32>, x: f32) -> u8 {
    let value = |c: usize| match o {
        Some(o) => o + set.levels()[c] * s,
        None => set.levels()[c] * s,
    };
    let x = if x.is_nan() { 0.0 } else { x };
    let mut best = 0usize;
    for c in 1..set.num_codes() {
        let (w, bw) = (value(c), value(best));
        let better = if x.is_infinite() {
            if x > 0.0 { w > bw } else { w < bw }
        } else {
            let (d, bd) = (exact_dist(x, w), exact_dist(x, bw));
            d < bd || (d == bd && (w.abs() < bw.abs() || (w.abs() == bw.abs() && w > bw)))
        };
        if better {
            best = c;
        }
    }
    best as u8
}

/// `|x − w|` exactly, as an unevaluated f64 pair `(hi, lo)` compared lexicographically:
/// TwoSum gives `x − w = s + e` exactly with `s` the rounded difference, and rounding is
/// monotone, so `|s|` orders the distances and `e · sign(s)` breaks equal `|s|`.
fn exact_dist(x: f32, w: f32) -> (f64, f64) {
    let (a, b) = (x as f64, -(w as f64));
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    if s < 0.0 { (-s, -e) } else { (s, e) }
}

/// Test inputs for one slot: every level value, every midpoint that is an f32 and its
/// two neighbours, random values over and beyond the range, zeros, NaN and infinities.
fn probe_values(set: &LevelSet, s: f32, o: Option<f32>, r: &mut ChaCha8Rng) -> Vec<f32> {
    let w: Vec<f32> = set.sorted_levels().iter().map(|&l| o.unwrap_or(0.0) + l * s).collect();
    let mut v = w.clone();
    for p in w.windows(2) {
        let m = (p[0] as f64 + p[1] as f64) / 2.0;
        let mf = m as f32;
        if mf as f64 == m {
            v.extend([mf, mf.next_up(), mf.next_down()]);
        }
    }
    let span = w[w.len() - 1].abs().max(w[0].abs()) * 1.5;
    v.extend((0..64).map(|_| r.random_range(-span..=span)));
    v.extend([0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-30, -1e-30, 3.0 * span, -3.0 * span]);
    v
}

fn all_sets() -> Vec<(String, LevelSet)> {
    let mut sets = Vec::new();
    for bits in 2..=5 {
        sets.push((format!("apot w{bits}"), ApotFormat::weight(bits).unwrap().level_set()));
        sets.push((format!("apot a{bits}"), ApotFormat::activation(bits).unwrap().level_set()));
        sets.push((format!("pot s{bits}"), PotFormat::signed(bits).unwrap().level_set()));
        sets.push((format!("pot u{bits}"), PotFormat::unsigned(bits).unwrap().level_set()));
        sets.push((
            format!("pot s{bits} sqrt2"),
            PotFormat::signed(bits).unwrap().with_base(PotBase::Sqrt2).level_set(),
        ));
    }
    sets.push(("iq4_nl".into(), LevelSet::codebook_i16(4, &IQ4_NL).unwrap()));
    sets.push(("neg only".into(), LevelSet::codebook(2, &[-3.0, -1.0, -0.5]).unwrap()));
    sets.push(("pm1".into(), LevelSet::codebook(1, &[-1.0, 1.0]).unwrap()));
    let mut r = rng(7);
    let mut learned: Vec<f32> = (0..32).map(|_| r.random_range(-2.0f32..2.0)).collect();
    learned.sort_by(f32::total_cmp);
    learned.dedup();
    sets.push(("learned 5-bit".into(), LevelSet::codebook(5, &learned).unwrap()));
    sets
}

#[test]
fn projection_matches_brute_force_per_tensor() {
    let mut r = rng(11);
    for (name, set) in all_sets() {
        for &s in &[1.0f32, 0.037, 3.3e-3, 17.0] {
            for o in [None, Some(-0.3f32)] {
                let mut p = LevelParams::per_tensor(set.clone(), s).unwrap();
                if let Some(o) = o {
                    p = p.with_offsets(vec![o]).unwrap();
                }
                let x = probe_values(&set, s, o, &mut r);
                let t = p.quantize(&x, &[x.len()]).unwrap();
                let xh = t.dequantize();
                for (i, &xv) in x.iter().enumerate() {
                    let want = brute_force(&set, s, o, xv);
                    assert_eq!(t.codes()[i], want, "{name}, scale {s}, offset {o:?}, x = {xv:e}");
                    assert_eq!(xh[i].to_bits(), p.value(0, want).unwrap().to_bits());
                }
                // A level comes back exactly.
                for (c, &l) in set.levels().iter().enumerate() {
                    let w = o.unwrap_or(0.0) + l * s;
                    let back = p.fake_quantize(&[w], &[1]).unwrap()[0];
                    assert_eq!(back, w, "{name}: level of code {c} does not survive");
                }
            }
        }
    }
}

#[test]
fn projection_matches_brute_force_per_channel() {
    let mut r = rng(12);
    for (name, set) in all_sets() {
        let (rows, cols) = (37usize, 5usize);
        let scales: Vec<f32> = (0..cols).map(|_| r.random_range(0.01f32..4.0)).collect();
        // Axis 1 (columns, innermost) and axis 0 (rows) both.
        for axis in [0usize, 1] {
            let nslots = if axis == 1 { cols } else { rows };
            let sc: Vec<f32> = (0..nslots).map(|i| scales[i % cols] * (1.0 + i as f32 / 8.0)).collect();
            let p = LevelParams::per_channel(set.clone(), axis, sc.clone()).unwrap();
            let mut x = vec![0f32; rows * cols];
            for (i, v) in x.iter_mut().enumerate() {
                let slot = if axis == 1 { i % cols } else { i / cols };
                let probes = probe_values(&set, sc[slot], None, &mut r);
                *v = probes[r.random_range(0..probes.len())];
            }
            let mut codes = vec![0u8; x.len()];
            Scheme::quantize_into(&p, &x, &[rows, cols], &mut codes).unwrap();
            for (i, &xv) in x.iter().enumerate() {
                let slot = if axis == 1 { i % cols } else { i / cols };
                assert_eq!(codes[i], brute_force(&set, sc[slot], None, xv), "{name}, axis {axis}, element {i}");
            }
            let deq = p.dequantize(&codes, &[rows, cols]).unwrap();
            for (i, &c) in codes.iter().enumerate() {
                let slot = if axis == 1 { i % cols } else { i / cols };
                assert_eq!(deq[i], set.levels()[c as usize] * sc[slot]);
            }
        }
    }
}

#[test]
fn ties_go_toward_zero() {
    let q = |set: &LevelSet, s: f32, x: f32| -> f32 {
        LevelParams::per_tensor(set.clone(), s).unwrap().fake_quantize(&[x], &[1]).unwrap()[0]
    };
    let w4 = ApotFormat::weight(4).unwrap().level_set();
    for (x, want) in [
        (5.0, 4.0),
        (-5.0, -4.0),
        (7.0, 6.0),
        (-9.0, -8.0),
        (0.5, 0.0),
        (-0.5, 0.0),
        (2.5, 2.0),
        (11.0, 10.0),
        (1e9, 10.0),
        (-1e9, -10.0),
    ] {
        assert_eq!(q(&w4, 1.0, x), want, "APoT-4 weights, x = {x}");
    }
    // The zero of a sign-magnitude set is code 0, never the −0 code.
    let p = LevelParams::per_tensor(w4.clone(), 1.0).unwrap();
    assert_eq!(p.quantize(&[-0.5, -0.0, 0.0, -1e-20, f32::NAN], &[5]).unwrap().codes(), &[0, 0, 0, 0, 0]);
    assert_eq!(p.quantize(&[f32::INFINITY, f32::NEG_INFINITY], &[2]).unwrap().codes(), &[7, 15]);

    let pot = PotFormat::signed(4).unwrap().level_set();
    for (x, want) in [(1.5, 1.0), (3.0, 2.0), (-3.0, -2.0), (0.5, 0.0), (48.0, 32.0), (-96.0, -64.0)] {
        assert_eq!(q(&pot, 1.0, x), want, "PoT-4, x = {x}");
    }
    // Ternary weights: half-way rounds to 0, as torch.round (half to even) does.
    let t = ApotFormat::weight(2).unwrap().level_set();
    assert_eq!(q(&t, 2.0, 1.0), 0.0);
    assert_eq!(q(&t, 2.0, -1.0), 0.0);
    assert_eq!(q(&t, 2.0, 1.0f32.next_up()), 2.0);
    // No zero level: x = 0 between −1 and +1 goes to +1; so does NaN.
    let pm = LevelSet::codebook(1, &[-1.0, 1.0]).unwrap();
    for x in [0.0, -0.0, f32::NAN] {
        assert_eq!(q(&pm, 1.0, x), 1.0);
    }
    assert_eq!(q(&pm, 1.0, -1e-30), -1.0);
    // Both levels negative: the tie goes to the one nearer zero.
    let neg = LevelSet::codebook(2, &[-3.0, -1.0, 2.0]).unwrap();
    assert_eq!(q(&neg, 1.0, -2.0), -1.0);
    assert_eq!(q(&neg, 1.0, 0.5), -1.0, "midpoint of −1 and 2: −1 is the smaller magnitude");
    assert_eq!(q(&neg, 1.0, 0.5f32.next_up()), 2.0);
    // IQ4_NL: midpoint of −10 and 1 is −4.5 → 1 (smaller magnitude); of 1 and 13 is 7 → 1.
    let iq = LevelSet::codebook_i16(4, &IQ4_NL).unwrap();
    assert_eq!(q(&iq, 1.0, -4.5), 1.0);
    assert_eq!(q(&iq, 1.0, 7.0), 1.0);
    assert_eq!(q(&iq, 1.0, -93.5), -83.0);
}

// ---------------------------------------------------------------------------------------
// Calibration
// ---------------------------------------------------------------------------------------

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let d = Normal::new(0.0f32, 1.0).unwrap();
    let mut r = rng(seed);
    (0..n).map(|_| d.sample(&mut r)).collect()
}

fn laplacian(n: usize, seed: u64) -> Vec<f32> {
    // sign · Exp(1): Laplace(0, 1), variance 2.
    let d = Exp::new(1.0f32).unwrap();
    let mut r = rng(seed);
    (0..n).map(|_| if r.random::<bool>() { d.sample(&mut r) } else { -d.sample(&mut r) }).collect()
}

#[test]
fn mse_search_picks_the_best_candidate() {
    let x = laplacian(4000, 3);
    let n = x.len();
    let grid = 50u32;
    for (name, set, pow2) in [
        ("apot w4", ApotFormat::weight(4).unwrap().level_set(), false),
        ("pot s4", PotFormat::signed(4).unwrap().level_set(), true),
        ("iq4_nl", LevelSet::codebook_i16(4, &IQ4_NL).unwrap(), false),
    ] {
        let qz = LevelQuantizer::new(set.clone())
            .with_calibration(Calibration::Mse { grid })
            .with_power_of_two_scale(pow2);
        let got = qz.calibrate(&x, &[n]).unwrap();
        // Oracle: every candidate R·k/grid, scale R/max|L| (rounded up to 2^e when pow2),
        // the smallest SSE wins, ties keep the first (larger) candidate.
        let rmax = x.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let mut best: Option<(f32, f64)> = None;
        for k in (1..=grid).rev() {
            let ideal = rmax * k as f64 / grid as f64 / set.max_abs() as f64;
            let s = if pow2 { 2f64.powi(ideal.log2().ceil() as i32) as f32 } else { ideal as f32 };
            let xh = LevelParams::per_tensor(set.clone(), s).unwrap().fake_quantize(&x, &[n]).unwrap();
            let sse = x.iter().zip(&xh).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).fold(0.0, |acc, d| acc + d);
            if best.is_none_or(|(_, e)| sse < e) {
                best = Some((s, sse));
            }
        }
        assert_eq!(got.scales()[0], best.unwrap().0, "{name}");
        let mm = LevelQuantizer::new(set).with_power_of_two_scale(pow2).calibrate(&x, &[n]).unwrap();
        assert!(got.error(&x, &[n]).unwrap().mse <= mm.error(&x, &[n]).unwrap().mse, "{name}");
    }
}

#[test]
fn calibration_ranges_and_sides() {
    let x = [-8.0f32, -1.0, 0.5, 2.0, 4.0];
    let w4 = ApotFormat::weight(4).unwrap();
    // Signed set: R = max|x| = 8 → scale 0.8.
    assert_eq!(w4.quantizer().calibrate(&x, &[5]).unwrap().scales(), &[0.8]);
    // Unsigned set: R = max(x, 0) = 4 → scale 4/48.
    let a4 = ApotFormat::activation(4).unwrap();
    assert_eq!(a4.quantizer().calibrate(&x, &[5]).unwrap().scales(), &[4.0f32 / 48.0]);
    // Negative-only set: R = max(−x, 0) = 8 → scale 8/3.
    let neg = LevelSet::codebook(2, &[-3.0, -1.0, 0.0]).unwrap();
    assert_eq!(LevelQuantizer::new(neg).calibrate(&x, &[5]).unwrap().scales(), &[8.0f32 / 3.0]);
    // Fixed range.
    let p = w4.quantizer().with_range(LevelRange::Fixed(5.0)).calibrate(&x, &[5]).unwrap();
    assert_eq!(p.scales(), &[0.5]);
    // Percentile 100 = min-max; all-zero data → R = 1.
    let p = w4.quantizer().with_calibration(Calibration::Percentile(100.0)).calibrate(&x, &[5]).unwrap();
    assert_eq!(p.scales(), &[0.8]);
    assert_eq!(w4.quantizer().calibrate(&[0.0; 4], &[4]).unwrap().scales(), &[0.1]);
    // Unsigned set on all-negative data: R = 0 → 1.
    assert_eq!(a4.quantizer().calibrate(&[-1.0, -2.0], &[2]).unwrap().scales(), &[1.0f32 / 48.0]);

    // Per channel along axis 1 equals per tensor on each column.
    let mut r = rng(5);
    let (k, n) = (33usize, 4usize);
    let b: Vec<f32> = (0..k * n).map(|i| r.random_range(-1.0f32..1.0) * (1 + i % n) as f32).collect();
    let qz = w4.quantizer().with_granularity(Granularity::PerChannel { axis: 1 }).with_calibration(Calibration::mse());
    let t = qz.quantize(&b, &[k, n]).unwrap();
    for j in 0..n {
        let col: Vec<f32> = (0..k).map(|i| b[i * n + j]).collect();
        let tc = w4.quantizer().with_calibration(Calibration::mse()).quantize(&col, &[k]).unwrap();
        assert_eq!(t.params().scales()[j], tc.params().scales()[0]);
        let codes: Vec<u8> = (0..k).map(|i| t.codes()[i * n + j]).collect();
        assert_eq!(codes, tc.codes());
    }
}

#[test]
fn weight_normalization() {
    let mut x = gaussian(1000, 21);
    for v in &mut x {
        *v = 0.25 + 0.05 * *v;
    }
    let n = x.len();
    let w4 = ApotFormat::weight(4).unwrap();
    let p = w4
        .quantizer()
        .with_normalization(true)
        .with_range(LevelRange::Fixed(3.0))
        .calibrate(&x, &[n])
        .unwrap();
    let mu = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    assert_eq!(p.offsets(), Some(&[mu as f32][..]));
    assert_eq!(p.scales(), &[(var.sqrt() * 3.0 / 10.0) as f32]);
    let set = w4.level_set();
    let t = p.quantize(&x, &[n]).unwrap();
    let xh = t.dequantize();
    for (i, &c) in t.codes().iter().enumerate() {
        assert_eq!(xh[i], mu as f32 + set.levels()[c as usize] * p.scales()[0]);
        assert_eq!(c, brute_force(&set, p.scales()[0], Some(mu as f32), x[i]));
    }
    // Without normalisation the mean is not removed, and the error is far larger.
    let plain = w4.quantizer().with_range(LevelRange::Fixed(3.0 * var.sqrt() as f32)).calibrate(&x, &[n]).unwrap();
    assert!(p.error(&x, &[n]).unwrap().mse * 4.0 < plain.error(&x, &[n]).unwrap().mse);
}

// ---------------------------------------------------------------------------------------
// MSE ordering (the issue's claim) — measured, printed, asserted.
// ---------------------------------------------------------------------------------------

/// 4-bit MSE of each scheme under one calibration rule (the same rule for all).
struct Row {
    apot: f64,
    pot: f64,
    /// Signed int4, full range: 16 levels −8..7 (symmetric scale R/7).
    uniform: f64,
    /// Signed int4, narrow range: 15 levels −7..7, as many as APoT-4 and PoT-4.
    uniform_narrow: f64,
    iq4_nl: f64,
}

fn four_bit_mse(x: &[f32], cal: Calibration) -> Row {
    let shape = [x.len()];
    let level_mse = |q: LevelQuantizer| q.with_calibration(cal).calibrate(x, &shape).unwrap().error(x, &shape).unwrap().mse;
    let uniform_mse = |f: IntFormat| {
        let q = UniformQuantizer::new(f, Mapping::Symmetric).with_calibration(cal);
        q.calibrate(x, &shape).unwrap().error(x, &shape).unwrap().mse
    };
    Row {
        apot: level_mse(ApotFormat::weight(4).unwrap().quantizer()),
        pot: level_mse(PotFormat::signed(4).unwrap().quantizer()),
        uniform: uniform_mse(IntFormat::signed(4).unwrap()),
        uniform_narrow: uniform_mse(IntFormat::new(4, true, true).unwrap()),
        iq4_nl: level_mse(LevelQuantizer::new(LevelSet::codebook_i16(4, &IQ4_NL).unwrap())),
    }
}

/// The issue's claim: 4-bit APoT has a lower MSE than 4-bit PoT and 4-bit uniform on
/// Gaussian and Laplacian weights. Every scheme gets the same calibration rule: min-max,
/// and MSE-optimal clipping (the post-training stand-in for the paper's learned α).
///
/// Measured (n = 65536, seed 2020; checked on other seeds and with a 20× finer α grid,
/// same orderings), the claim holds except in two cells, asserted below as what they are:
/// * Gaussian, MSE clipping: full-range int4 (16 levels) beats APoT-4 (15 levels) by
///   about 3 %; narrow-range int4, with APoT's 15 levels, loses to APoT.
/// * Laplacian, min-max: α = max|x| is far out on the heavy tail, which leaves APoT a
///   coarse step (α/10) near zero; PoT's geometric levels stay fine there, and PoT wins.
#[test]
fn apot4_mse_ordering_on_bell_shaped_weights() {
    let n = 1 << 16;
    for (dist, x) in [("gaussian", gaussian(n, 2020)), ("laplacian", laplacian(n, 2020))] {
        for (cal_name, cal) in [("min-max", Calibration::MinMax), ("mse", Calibration::mse())] {
            let r = four_bit_mse(&x, cal);
            eprintln!(
                "{dist:9} {cal_name:7}: APoT-4 {:.6}  PoT-4 {:.6}  int4 {:.6}  int4 narrow {:.6}  IQ4_NL {:.6}",
                r.apot, r.pot, r.uniform, r.uniform_narrow, r.iq4_nl
            );
            let ctx = format!("{dist}, {cal_name}");
            if (dist, cal_name) == ("laplacian", "min-max") {
                assert!(r.pot < r.apot, "{ctx}: exception no longer measured: PoT-4 {} vs APoT-4 {}", r.pot, r.apot);
            } else {
                assert!(r.apot < r.pot, "{ctx}: APoT-4 {} ≥ PoT-4 {}", r.apot, r.pot);
            }
            if (dist, cal_name) == ("gaussian", "mse") {
                assert!(r.uniform < r.apot, "{ctx}: exception no longer measured: int4 {} vs APoT-4 {}", r.uniform, r.apot);
            } else {
                assert!(r.apot < r.uniform, "{ctx}: APoT-4 {} ≥ int4 {}", r.apot, r.uniform);
            }
            assert!(r.apot < r.uniform_narrow, "{ctx}: APoT-4 {} ≥ narrow int4 {}", r.apot, r.uniform_narrow);
        }
        // The paper's recipe with its initial α: normalised weights, α = 3 (in σ units).
        let paper = ApotFormat::weight(4)
            .unwrap()
            .quantizer()
            .with_normalization(true)
            .with_range(LevelRange::Fixed(3.0))
            .calibrate(&x, &[n])
            .unwrap()
            .error(&x, &[n])
            .unwrap()
            .mse;
        eprintln!("{dist:9} normalised, α = 3σ: APoT-4 {paper:.6}");
    }
}

// ---------------------------------------------------------------------------------------
// Packed codes
// ---------------------------------------------------------------------------------------

/// Reads code (k, n) from the documented byte layout, independently of the library.
fn layout_code(p: &PackedCodes, k: usize, n: usize) -> u8 {
    let kp = p.k_padded();
    let byte = p.nibbles()[n * kp / 2 + k / 2];
    let mut c = if k.is_multiple_of(2) { byte & 0x0F } else { byte >> 4 };
    if p.level_set().bits() == 5 {
        let (b, r) = (k / 128, k % 128);
        let at = n * kp / 8 + 16 * b + 8 * (r % 2);
        let word = u64::from_le_bytes(p.high_bits()[at..at + 8].try_into().unwrap());
        c |= (((word >> (r / 2)) & 1) as u8) << 4;
    }
    c
}

#[test]
fn pack_hand_example() {
    let set = ApotFormat::weight(4).unwrap().level_set();
    let params = LevelParams::per_tensor(set, 0.5).unwrap();
    // B[4][2] = [[1,2],[3,4],[5,6],[7,8]]: column 0 is 1,3,5,7; column 1 is 2,4,6,8.
    let codes = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let p = PackedCodes::pack(&codes, 4, 2, &params).unwrap();
    assert_eq!(p.k_padded(), 128);
    assert_eq!(p.nibbles().len(), 2 * 64);
    assert_eq!(&p.nibbles()[..2], &[0x31, 0x75]);
    assert!(p.nibbles()[2..64].iter().all(|&b| b == 0), "padding is the zero code");
    assert_eq!(&p.nibbles()[64..66], &[0x42, 0x86]);
    assert!(p.high_bits().is_empty());
    let h = p.header();
    assert_eq!((h.bits, h.container_bits, h.k, h.n, h.k_padded, h.num_codes), (4, 4, 4, 2, 128, 16));
    assert_eq!((h.pad_code, h.grid_max, h.grid_step_exp, h.has_offsets), (0, Some(10), Some(0), false));
    let t = h.int_levels.unwrap();
    assert_eq!(&t[..16], &[0, 1, 2, 3, 4, 6, 8, 10, 0, -1, -2, -3, -4, -6, -8, -10]);
    assert!(t[16..].iter().all(|&v| v == 0));
    assert_eq!(p.int_levels_i8().unwrap()[7], 10);
    assert_eq!(p.grid_scales(), Some(&[0.5f32, 0.5][..]));
    assert_eq!(p.unpack(), codes);

    // 5-bit: code 17 (0b1_0001) at k = 0 and code 16 at k = 3 of column 0.
    let a5 = ApotFormat::activation(5).unwrap().level_set();
    let params = LevelParams::per_tensor(a5, 0.01).unwrap();
    let codes = [17u8, 0, 2, 16];
    let p = PackedCodes::pack(&codes, 4, 1, &params).unwrap();
    assert_eq!(&p.nibbles()[..2], &[0x01, 0x02]);
    assert_eq!(p.high_bits().len(), 16);
    // Even word: bit 0 (k = 0). Odd word: bit 1 (k = 3 = 2·1 + 1).
    assert_eq!(p.high_bits()[0], 0b01);
    assert_eq!(p.high_bits()[8], 0b10);
    assert!(p.high_bits().iter().enumerate().all(|(i, &b)| i == 0 || i == 8 || b == 0));
    assert_eq!(p.header().container_bits, 5);
    assert_eq!(p.header().grid_max, Some(100));
    assert_eq!(p.unpack(), codes);

    // Pad code of a set whose zero is not code 0: sorted {−2, −1, 0, 1} → zero is code 2.
    let set = LevelSet::codebook(2, &[-2.0, -1.0, 0.0, 1.0]).unwrap();
    let p = PackedCodes::pack(&[0, 3, 1], 3, 1, &LevelParams::per_tensor(set, 1.0).unwrap()).unwrap();
    assert_eq!(p.header().pad_code, 2);
    assert_eq!(&p.nibbles()[..3], &[0x30, 0x21, 0x22]);
    // IQ4_NL has no zero level: padding is code 0.
    let iq = LevelSet::codebook_i16(4, &IQ4_NL).unwrap();
    let p = PackedCodes::pack(&[5], 1, 1, &LevelParams::per_tensor(iq, 1.0).unwrap()).unwrap();
    assert_eq!(p.header().pad_code, 0);
    assert_eq!(p.nibbles()[0], 0x05);
}

#[test]
fn pack_unpack_round_trip() {
    let mut r = rng(99);
    let mut sets = all_sets();
    sets.push(("codebook 10 of 16".into(), LevelSet::codebook_i16(4, &[-9, -7, -5, -3, -1, 1, 3, 5, 7, 9]).unwrap()));
    for (name, set) in sets {
        for &(k, n) in &[(0usize, 3usize), (1, 1), (3, 5), (127, 2), (128, 3), (129, 1), (257, 3), (300, 4)] {
            let nc = set.num_codes();
            let codes: Vec<u8> = (0..k * n).map(|_| r.random_range(0..nc) as u8).collect();
            let scales: Vec<f32> = (0..n).map(|_| r.random_range(0.01f32..2.0)).collect();
            let offsets: Vec<f32> = (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect();
            for (per_col, with_off) in [(false, false), (true, false), (true, true)] {
                let mut params = if per_col {
                    LevelParams::per_channel(set.clone(), 1, scales.clone()).unwrap()
                } else {
                    LevelParams::per_tensor(set.clone(), scales[0]).unwrap()
                };
                if with_off {
                    params = params.with_offsets(offsets.clone()).unwrap();
                }
                let p = PackedCodes::pack(&codes, k, n, &params).unwrap();
                let ctx = format!("{name}, k = {k}, n = {n}, per column {per_col}, offsets {with_off}");
                assert_eq!(p.unpack(), codes, "{ctx}");
                assert_eq!(p.k_padded() % PACK_K_BLOCK, 0);
                assert!(p.k_padded() >= k && p.k_padded() < k + PACK_K_BLOCK);
                let pad = set.zero_code().unwrap_or(0);
                for j in 0..n {
                    for kk in 0..p.k_padded() {
                        let want = if kk < k { codes[kk * n + j] } else { pad };
                        assert_eq!(layout_code(&p, kk, j), want, "{ctx}: k = {kk}, n = {j}");
                    }
                    assert_eq!(p.column_nibbles(j).unwrap().len(), p.k_padded() / 2);
                }
                for kk in 0..k.min(5) {
                    assert_eq!(p.code(kk, 0), Some(codes[kk * n]));
                }
                // Dequantize: bit for bit the parameters' values; and via the grid.
                let deq = p.dequantize();
                if k > 0 {
                    let want = params.dequantize(&codes, &[k, n]).unwrap();
                    assert_eq!(deq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{ctx}");
                }
                if let (Some(g), Some(gs)) = (set.grid(), p.grid_scales()) {
                    for (i, &c) in codes.iter().enumerate() {
                        let j = i % n;
                        let mut v = g.values()[c as usize] as f32 * gs[j];
                        if let Some(o) = p.offsets() {
                            v += o[j];
                        }
                        assert_eq!(v.to_bits(), deq[i].to_bits(), "{ctx}: grid path, element {i}");
                    }
                } else {
                    assert!(set.grid().is_none() && p.grid_scales().is_none() && p.header().int_levels.is_none());
                }
                // Rebuilt from its parts: the same thing.
                let q = PackedCodes::from_parts(
                    set.clone(),
                    k,
                    n,
                    p.scales().to_vec(),
                    p.offsets().map(|o| o.to_vec()),
                    p.nibbles().to_vec(),
                    p.high_bits().to_vec(),
                )
                .unwrap();
                assert_eq!(q, p, "{ctx}");
                // Through a LevelTensor when rank 2 and non-empty.
                if k > 0 {
                    let t = LevelTensor::new(codes.clone(), &[k, n], params.clone()).unwrap();
                    assert_eq!(PackedCodes::from_tensor(&t).unwrap(), p);
                }
            }
        }
    }
}

#[test]
fn int8_tables() {
    let pot = PackedCodes::pack(&[1], 1, 1, &PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[0]).unwrap())
        .unwrap();
    let t = pot.int_levels_i8().unwrap();
    assert_eq!(&t[..16], &[0, 1, 2, 4, 8, 16, 32, 64, 0, -1, -2, -4, -8, -16, -32, -64]);
    assert_eq!(pot.grid_scales(), Some(&[1.0f32 / 64.0][..]));
    let p5 = PackedCodes::pack(&[1], 1, 1, &PotFormat::signed(5).unwrap().params(Granularity::PerTensor, &[0]).unwrap())
        .unwrap();
    assert!(p5.int_levels_i8().is_none());
    assert_eq!(p5.header().int_levels.unwrap()[15], 16384);
    // Step 2^−2: the grid scale is the level scale / 4... times 4: value = g · (s · 2^−2).
    let q = LevelSet::codebook(3, &[-0.5, -0.25, 0.0, 0.25, 0.5, 1.0]).unwrap();
    let p = PackedCodes::pack(&[5, 0], 2, 1, &LevelParams::per_tensor(q, 3.0).unwrap()).unwrap();
    assert_eq!(p.grid_scales(), Some(&[0.75f32][..]));
    assert_eq!(p.dequantize(), vec![3.0, -1.5]);
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

fn is_invalid_bits<T: std::fmt::Debug>(r: qkern::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidBits { .. }))
}
fn is_invalid_param<T: std::fmt::Debug>(r: qkern::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidParameter(_)))
}
fn is_shape<T: std::fmt::Debug>(r: qkern::Result<T>) -> bool {
    matches!(r, Err(Error::ShapeMismatch(_)))
}
fn is_scale<T: std::fmt::Debug>(r: qkern::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidScale { .. }))
}

#[test]
fn bad_level_sets() {
    assert!(is_invalid_bits(LevelSet::codebook(0, &[0.0, 1.0])));
    assert!(is_invalid_bits(LevelSet::codebook(6, &[0.0, 1.0])));
    assert!(is_invalid_param(LevelSet::codebook(4, &[1.0])));
    assert!(is_invalid_param(LevelSet::codebook(4, &[])));
    let seventeen: Vec<f32> = (0..17).map(|i| i as f32).collect();
    assert!(is_invalid_param(LevelSet::codebook(4, &seventeen)));
    assert!(LevelSet::codebook(5, &seventeen).is_ok());
    assert!(is_invalid_param(LevelSet::codebook(2, &[0.0, f32::NAN])));
    assert!(is_invalid_param(LevelSet::codebook(2, &[0.0, f32::INFINITY])));
    assert!(is_invalid_param(LevelSet::codebook(2, &[1.0, 0.0])));
    assert!(is_invalid_param(LevelSet::codebook(2, &[0.0, 1.0, 1.0])));
    assert!(is_invalid_param(LevelSet::codebook(2, &[-0.0, 0.0])));
    assert!(is_invalid_bits(LevelSet::codebook_i16(7, &[0, 1])));
    assert!(is_invalid_param(LevelSet::codebook_i16(2, &[3, 1])));
    assert!(is_invalid_bits(LevelSet::sign_magnitude(1, &[0.0])));
    assert!(is_invalid_bits(LevelSet::sign_magnitude(6, &[0.0; 32])));
    assert!(is_invalid_param(LevelSet::sign_magnitude(3, &[0.0, 1.0, 2.0])));
    assert!(is_invalid_param(LevelSet::sign_magnitude(2, &[-1.0, 1.0])));
    assert!(is_invalid_param(LevelSet::sign_magnitude(2, &[1.0, 1.0])));
    assert!(is_invalid_param(LevelSet::sign_magnitude(2, &[0.0, f32::NAN])));
    assert!(LevelSet::sign_magnitude(2, &[0.5, 1.0]).is_ok());

    assert!(is_invalid_bits(PotFormat::signed(1)));
    assert!(is_invalid_bits(PotFormat::new(6, false, PotBase::Two)));
    assert!(is_invalid_bits(ApotFormat::new(1, ApotRole::Weight)));
    assert!(is_invalid_bits(ApotFormat::activation(6)));
    assert!(is_invalid_bits(build_power_value(1, true)));
    assert!(is_invalid_bits(build_power_value(7, true)));
    assert!(is_invalid_bits(build_power_value(0, false)));
    assert!(is_invalid_bits(build_power_value(7, false)));
}

#[test]
fn bad_params() {
    let set = ApotFormat::weight(4).unwrap().level_set();
    assert!(is_invalid_param(LevelParams::new(set.clone(), Granularity::PerTensor, vec![])));
    assert!(is_shape(LevelParams::new(set.clone(), Granularity::PerTensor, vec![1.0, 2.0])));
    assert!(is_invalid_param(LevelParams::new(
        set.clone(),
        Granularity::PerGroup { axis: 0, group_size: 0 },
        vec![1.0]
    )));
    for s in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(is_scale(LevelParams::per_tensor(set.clone(), s)), "scale {s}");
    }
    assert!(is_scale(LevelParams::per_tensor(set.clone(), f32::MAX / 4.0)), "10 · scale overflows");
    assert!(is_scale(LevelParams::per_channel(set.clone(), 0, vec![1.0, f32::NAN])));
    let p = LevelParams::per_channel(set.clone(), 1, vec![1.0, 2.0]).unwrap();
    assert!(is_shape(p.clone().with_offsets(vec![0.0])));
    assert!(is_invalid_param(p.clone().with_offsets(vec![0.0, f32::NAN])));
    assert!(is_scale(LevelParams::per_tensor(set.clone(), f32::MAX / 16.0).unwrap().with_offsets(vec![f32::MAX])));

    assert!(is_invalid_param(PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[200])));
    assert!(is_invalid_param(PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[-200])));
    assert!(is_shape(PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[0, 1])));
    assert!(is_invalid_param(PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[])));
    // FSR 127: top level 2^127, fine; FSR 128: scale 2^122 is an f32 but the top level overflows.
    assert!(PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[127]).is_ok());
    assert!(is_scale(PotFormat::signed(4).unwrap().params(Granularity::PerTensor, &[128])));
    let w4 = ApotFormat::weight(4).unwrap();
    for a in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(is_invalid_param(w4.params(Granularity::PerTensor, &[a])), "alpha {a}");
    }
    assert!(is_invalid_param(w4.params(Granularity::PerTensor, &[])));

    // quantize / dequantize arguments.
    let p = LevelParams::per_channel(set.clone(), 1, vec![1.0, 2.0]).unwrap();
    let x = [0.5f32; 6];
    let mut out = [0u8; 6];
    assert!(is_shape(p.quantize_into(&x, &[2, 2], &mut out)));
    assert!(matches!(p.quantize_into(&x, &[3, 2], &mut out[..5]), Err(Error::BufferTooSmall { .. })));
    assert!(is_shape(p.quantize_into(&x, &[3, 2], &mut [0u8; 7])));
    assert!(is_shape(p.quantize_into(&x, &[2, 3], &mut out)), "3 channels, 2 scales");
    let axis5 = LevelParams::per_channel(set.clone(), 5, vec![1.0]).unwrap();
    assert!(is_invalid_param(axis5.quantize_into(&x, &[6], &mut out)), "axis 5 of a rank-1 tensor");
    assert!(is_shape(p.quantize(&x, &[7])));
    let mut xo = [0f32; 6];
    assert!(is_invalid_param(p.dequantize_into(&[0, 1, 2, 3, 16, 0], &[3, 2], &mut xo)), "code 16 of 16");
    assert!(p.dequantize_into(&[0, 1, 2, 3, 15, 8], &[3, 2], &mut xo).is_ok());
    assert!(is_shape(p.dequantize(&[0, 1, 2], &[3, 2])));
    assert!(matches!(p.dequantize_into(&[0; 6], &[3, 2], &mut xo[..2]), Err(Error::BufferTooSmall { .. })));
    let ten = LevelParams::per_tensor(LevelSet::codebook_i16(4, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap(), 1.0).unwrap();
    assert!(is_invalid_param(ten.dequantize(&[9, 10], &[2])), "code 10 of a 10-level codebook");
    assert!(is_invalid_param(p.error(&[0.0, f32::NAN, 0.0, 0.0, 0.0, 0.0], &[3, 2])));
    assert!(is_invalid_param(LevelParams::per_tensor(set.clone(), 1.0).unwrap().error(&[], &[0])));
    assert!(is_shape(p.fake_quantize(&x, &[6, 1])));

    assert!(is_invalid_param(LevelTensor::new(vec![0, 16], &[2], LevelParams::per_tensor(set.clone(), 1.0).unwrap())));
    assert!(is_shape(LevelTensor::new(vec![0, 1], &[3], LevelParams::per_tensor(set.clone(), 1.0).unwrap())));
    let t = LevelTensor::new(vec![0, 1], &[2], LevelParams::per_tensor(set.clone(), 1.0).unwrap()).unwrap();
    assert!(matches!(t.dequantize_into(&mut [0f32; 1]), Err(Error::BufferTooSmall { .. })));
    assert!(is_shape(t.dequantize_into(&mut [0f32; 3])));
}

#[test]
fn bad_calibration() {
    let q = ApotFormat::weight(4).unwrap().quantizer();
    assert!(is_invalid_param(q.calibrate(&[], &[0])));
    assert!(is_invalid_param(q.calibrate(&[1.0, f32::NAN], &[2])));
    assert!(is_invalid_param(q.calibrate(&[1.0, f32::INFINITY], &[2])));
    assert!(is_shape(q.calibrate(&[1.0, 2.0], &[3])));
    for r in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(is_invalid_param(q.clone().with_range(LevelRange::Fixed(r)).calibrate(&[1.0], &[1])), "R = {r}");
    }
    assert!(is_invalid_param(q.clone().with_calibration(Calibration::Percentile(10.0)).calibrate(&[1.0], &[1])));
    assert!(is_invalid_param(q.clone().with_calibration(Calibration::Mse { grid: 0 }).calibrate(&[1.0], &[1])));
    assert!(is_invalid_param(
        q.clone().with_granularity(Granularity::PerChannel { axis: 2 }).calibrate(&[1.0, 2.0], &[2])
    ));
    assert!(is_invalid_param(q.clone().quantize(&[f32::NAN], &[1])));
    assert!(matches!(q.quantize_into(&[1.0, 2.0], &[2], &mut [0u8; 1]), Err(Error::BufferTooSmall { .. })));
    assert!(is_shape(q.quantize_into(&[1.0, 2.0], &[2], &mut [0u8; 3])));
    // A range so large that the scale overflows, and one so small that it underflows.
    let half = LevelQuantizer::new(LevelSet::codebook(1, &[-0.5, 0.5]).unwrap());
    assert!(is_scale(half.with_range(LevelRange::Fixed(f32::MAX)).calibrate(&[1.0], &[1])), "R / 0.5 overflows");
    let tiny = PotFormat::signed(4).unwrap().quantizer().with_range(LevelRange::Fixed(1e-45));
    assert!(is_scale(tiny.calibrate(&[1.0], &[1])), "2^⌈log2(1e-45 / 64)⌉ is below f32");
    let good = q.quantize_into(&[1.0, -2.0], &[2], &mut [0u8; 2]).unwrap();
    assert_eq!(good.scales(), &[0.2]);
}

#[test]
fn bad_packing() {
    let set = ApotFormat::weight(4).unwrap().level_set();
    let pt = LevelParams::per_tensor(set.clone(), 1.0).unwrap();
    assert!(is_shape(PackedCodes::pack(&[0; 5], 2, 3, &pt)));
    assert!(is_invalid_param(PackedCodes::pack(&[0, 16], 2, 1, &pt)));
    assert!(is_invalid_param(PackedCodes::pack(&[], usize::MAX, 2, &pt)));
    let axis0 = LevelParams::per_channel(set.clone(), 0, vec![1.0, 1.0]).unwrap();
    assert!(matches!(PackedCodes::pack(&[0; 4], 2, 2, &axis0), Err(Error::Unsupported(_))));
    let grouped = LevelParams::new(set.clone(), Granularity::PerGroup { axis: 0, group_size: 2 }, vec![1.0, 1.0]).unwrap();
    assert!(matches!(PackedCodes::pack(&[0; 4], 2, 2, &grouped), Err(Error::Unsupported(_))));
    let three = LevelParams::per_channel(set.clone(), 1, vec![1.0; 3]).unwrap();
    assert!(is_shape(PackedCodes::pack(&[0; 8], 2, 4, &three)));
    let t3 = LevelTensor::new(vec![0; 8], &[2, 2, 2], pt.clone()).unwrap();
    assert!(is_shape(PackedCodes::from_tensor(&t3)));
    // A grid scale that is not exact: step 2^−2 times the smallest subnormal.
    let q = LevelSet::codebook(3, &[-0.5, -0.25, 0.0, 0.25, 0.5, 1.0]).unwrap();
    let sub = LevelParams::per_tensor(q, f32::from_bits(1)).unwrap();
    assert!(is_scale(PackedCodes::pack(&[0], 1, 1, &sub)));

    let good = PackedCodes::pack(&[1, 2, 3, 4, 5, 6], 3, 2, &pt).unwrap();
    let parts = |nib: Vec<u8>, hb: Vec<u8>, sc: Vec<f32>, off: Option<Vec<f32>>| {
        PackedCodes::from_parts(set.clone(), 3, 2, sc, off, nib, hb)
    };
    let nib = good.nibbles().to_vec();
    assert!(parts(nib.clone(), vec![], vec![1.0; 2], None).is_ok());
    assert!(is_shape(parts(nib[1..].to_vec(), vec![], vec![1.0; 2], None)));
    assert!(is_shape(parts(nib.clone(), vec![0; 32], vec![1.0; 2], None)), "no bit plane below 5 bits");
    assert!(is_shape(parts(nib.clone(), vec![], vec![1.0; 3], None)));
    assert!(is_scale(parts(nib.clone(), vec![], vec![1.0, f32::NAN], None)));
    assert!(is_shape(parts(nib.clone(), vec![], vec![1.0; 2], Some(vec![0.0]))));
    let mut bad_pad = nib.clone();
    bad_pad[5] = 0x10; // k = 11 of column 0 (padding) set to code 1
    assert!(is_invalid_param(parts(bad_pad, vec![], vec![1.0; 2], None)));
    let ten = LevelSet::codebook_i16(4, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let mut bad_code = vec![0u8; 128];
    bad_code[0] = 0x0C; // code 12 of a 10-code set
    assert!(is_invalid_param(PackedCodes::from_parts(ten, 1, 2, vec![1.0; 2], None, bad_code, vec![])));
    let a5 = ApotFormat::activation(5).unwrap().level_set();
    assert!(is_shape(PackedCodes::from_parts(a5.clone(), 1, 1, vec![1.0], None, vec![0; 64], vec![0; 15])));
    let mut hb = vec![0u8; 16];
    hb[0] = 0b10; // k = 2 set to code 16: k = 2 is padding (k = 1)
    assert!(is_invalid_param(PackedCodes::from_parts(a5.clone(), 1, 1, vec![1.0], None, vec![0; 64], hb)));
    assert!(PackedCodes::from_parts(a5, 1, 1, vec![1.0], None, vec![0; 64], vec![0; 16]).is_ok());

    assert!(matches!(good.unpack_into(&mut [0u8; 5]), Err(Error::BufferTooSmall { .. })));
    assert!(is_shape(good.unpack_into(&mut [0u8; 7])));
    let mut u = [0u8; 6];
    good.unpack_into(&mut u).unwrap();
    assert_eq!(u, [1, 2, 3, 4, 5, 6]);
    assert!(matches!(good.dequantize_into(&mut [0f32; 5]), Err(Error::BufferTooSmall { .. })));
    assert_eq!(good.code(3, 0), None);
    assert_eq!(good.code(0, 2), None);
    assert!(good.column_nibbles(2).is_none());
    assert!(good.column_high_bits(2).is_none());
    assert_eq!(good.column_high_bits(1), Some(&[][..]));
}
