//! Uniform quantization: vector loops against a scalar oracle written here, rounding
//! modes, granularities, stochastic rounding statistics, calibration, metrics, ONNX
//! conformance data, and bad input for every public entry point.

use std::path::PathBuf;

use qkern::Error;
use qkern::quant::reference::{UniformStream, dequantize_value, quantize_value};
use qkern::quant::{
    Calibration, ErrorStats, Granularity, IntFormat, Mapping, QuantParams, QuantizedTensor, Rounding, Scheme,
    UniformQuantizer, max_abs_error, min_max, mse, percentile, sqnr_db,
};
use qkern_kernels::Int8;
use qkern_kernels::reference::round_half_even_f32;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, StudentT};

// ---------------------------------------------------------------------------------------
// The oracle: one element at a time, written from the spec, not from the library.
// ---------------------------------------------------------------------------------------

/// Deterministic rounding of `v` to an integral value.
fn oracle_round(v: f32, r: Rounding) -> f64 {
    match r {
        Rounding::HalfEven => round_half_even_f32(v) as f64,
        Rounding::HalfAway => {
            if v.is_nan() || v.abs() >= 8_388_608.0 {
                return v as f64;
            }
            // |v| + 0.5 is exact in f64 whenever it matters (see the notes in the tests).
            let a = (v as f64).abs();
            (a + 0.5).floor().copysign(v as f64)
        }
        Rounding::Stochastic { .. } => unreachable!("oracle_round is deterministic"),
    }
}

/// `clamp(round(x / scale) + zp)` with NaN → zp; the sum and clamp in f64.
fn oracle_q(x: f32, scale: f32, zp: i32, qmin: i32, qmax: i32, r: Rounding) -> i32 {
    let v = x / scale;
    if v.is_nan() {
        return zp;
    }
    let q = oracle_round(v, r) + zp as f64;
    q.clamp(qmin as f64, qmax as f64) as i32
}

/// Stochastic: `floor(v) + [u < frac(v)]`, one draw per element in flat order.
fn oracle_q_stochastic(x: f32, scale: f32, zp: i32, qmin: i32, qmax: i32, u: f64) -> i32 {
    let v = x / scale;
    if v.is_nan() {
        return zp;
    }
    let r = if v.is_nan() || v.abs() >= 8_388_608.0 {
        v as f64
    } else {
        let fl = v.floor() as f64;
        if u < v as f64 - fl { fl + 1.0 } else { fl }
    };
    (r + zp as f64).clamp(qmin as f64, qmax as f64) as i32
}

fn oracle_dq(q: i32, scale: f32, zp: i32) -> f32 {
    ((q - zp) as f32) * scale
}

/// The parameter slot of flat element `flat` of a row-major tensor.
fn oracle_param_index(shape: &[usize], flat: usize, g: Granularity) -> usize {
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let mut r = flat;
    for a in (0..rank).rev() {
        idx[a] = r % shape[a];
        r /= shape[a];
    }
    match g {
        Granularity::PerTensor => 0,
        Granularity::PerChannel { axis } => idx[axis],
        Granularity::PerGroup { axis, group_size } => {
            let mut pshape = shape.to_vec();
            pshape[axis] = shape[axis].div_ceil(group_size);
            idx[axis] /= group_size;
            idx.iter().zip(&pshape).fold(0usize, |acc, (&i, &d)| acc * d + i)
        }
    }
}

fn oracle_num_params(shape: &[usize], g: Granularity) -> usize {
    match g {
        Granularity::PerTensor => 1,
        Granularity::PerChannel { axis } => shape[axis],
        Granularity::PerGroup { axis, group_size } => {
            shape.iter().enumerate().map(|(a, &d)| if a == axis { d.div_ceil(group_size) } else { d }).product()
        }
    }
}

/// Every valid format (narrow 1-bit is invalid and checked elsewhere).
fn all_formats() -> Vec<IntFormat> {
    let mut v = Vec::new();
    for bits in 1..=8 {
        for signed in [true, false] {
            for narrow in [false, true] {
                if narrow && bits == 1 {
                    continue;
                }
                v.push(IntFormat::new(bits, signed, narrow).unwrap());
            }
        }
    }
    v
}

/// Inputs that stress the vector loop: ties at this scale, neighbours of ties, ±0, NaN,
/// ±inf, f32::MAX, subnormals, the 2²³ boundary, random values and random bit patterns.
fn stress_values(scale: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        -f32::from_bits(1),
        1e-40,
        -3e-39,
        1e30,
        -1e30,
    ];
    for t in [8_388_607.5f32, 8_388_608.0, 8_388_609.0, 16_777_216.0, 4_194_303.5, 4_194_304.5] {
        v.push(t * scale);
        v.push(-t * scale);
    }
    for k in -300..300 {
        let tie = (k as f32 + 0.5) * scale;
        v.push(tie);
        v.push(tie.next_up());
        v.push(tie.next_down());
        v.push(k as f32 * scale);
    }
    for _ in 0..3000 {
        v.push(rng.random_range(-300.0f32..300.0) * scale);
    }
    for _ in 0..1000 {
        v.push(f32::from_bits(rng.next_u32()));
    }
    v.shuffle(rng);
    v
}

fn check_codes_against_oracle<T: Int8>(p: &QuantParams, x: &[f32], codes: &[T], ctx: &str) {
    let (qmin, qmax) = (p.format().qmin(), p.format().qmax());
    let (s, z) = (p.scales()[0], p.zero_points()[0]);
    for (i, (&xi, c)) in x.iter().zip(codes).enumerate() {
        let want = oracle_q(xi, s, z, qmin, qmax, p.rounding());
        assert_eq!(
            c.to_i32(),
            want,
            "{ctx}: element {i} x = {xi:e} ({:#010x}), scale {s:e}, zp {z}, {:?}, {}",
            xi.to_bits(),
            p.rounding(),
            p.format()
        );
        // The library's own scalar definition agrees too.
        assert_eq!(quantize_value(xi, s, z, qmin, qmax, p.rounding(), 0.0), want, "{ctx}: reference::quantize_value");
    }
}

fn run_per_tensor_vs_oracle<T: Int8>(format: IntFormat, rng: &mut ChaCha8Rng) {
    let scales = [1.0f32, 0.5, 0.25, 1.0 / 1024.0, 0.1, 0.0372, 3.7e3, 1e-40, f32::MIN_POSITIVE, 1e30];
    let (qmin, qmax) = (format.qmin(), format.qmax());
    for &scale in &scales {
        let x = stress_values(scale, rng);
        let mid = (qmin + qmax) / 2;
        let rz = rng.random_range(qmin..=qmax);
        for zp in [qmin, qmax, mid, rz] {
            for rounding in [Rounding::HalfEven, Rounding::HalfAway] {
                let p = QuantParams::per_tensor(format, scale, zp).unwrap().with_rounding(rounding);
                // Lengths around the vector width and the 256-element chunk, and an
                // unaligned start.
                for (lo, hi) in [(0, x.len()), (1, 258), (3, 3 + 17), (5, 5), (0, 7)] {
                    let xs = &x[lo..hi];
                    let mut codes = vec![T::default(); xs.len()];
                    p.quantize_into(xs, &[xs.len()], &mut codes).unwrap();
                    check_codes_against_oracle(&p, xs, &codes, "per-tensor");
                    let mut y = vec![0f32; xs.len()];
                    p.dequantize_into(&codes, &[xs.len()], &mut y).unwrap();
                    for (i, (&c, &yi)) in codes.iter().zip(&y).enumerate() {
                        let want = oracle_dq(c.to_i32(), scale, zp);
                        assert_eq!(yi.to_bits(), want.to_bits(), "dequantize element {i}: code {c:?}");
                        assert_eq!(dequantize_value(c.to_i32(), scale, zp).to_bits(), want.to_bits());
                    }
                }
            }
        }
    }
}

#[test]
fn per_tensor_vector_loop_equals_scalar_oracle_all_formats() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for f in all_formats() {
        if f.is_signed() {
            run_per_tensor_vs_oracle::<i8>(f, &mut rng);
        } else {
            run_per_tensor_vs_oracle::<u8>(f, &mut rng);
        }
    }
}

#[test]
fn nan_goes_to_zero_point_and_infinities_saturate() {
    for rounding in [Rounding::HalfEven, Rounding::HalfAway, Rounding::Stochastic { seed: 3 }] {
        let p = QuantParams::per_tensor(IntFormat::UINT8, 0.1, 77).unwrap().with_rounding(rounding);
        let x = [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN];
        let q = p.quantize::<u8>(&x, &[6]).unwrap();
        assert_eq!(q.codes(), &[77, 77, 255, 0, 255, 0], "{rounding:?}");
        // NaN dequantizes to exactly 0.
        assert_eq!(q.dequantize()[0].to_bits(), 0.0f32.to_bits());
    }
}

// ---------------------------------------------------------------------------------------
// Formats and rounding modes.
// ---------------------------------------------------------------------------------------

#[test]
fn format_ranges() {
    for bits in 1..=8u32 {
        let h = 1i32 << (bits - 1);
        let f = IntFormat::new(bits, true, false).unwrap();
        assert_eq!((f.qmin(), f.qmax()), (-h, h - 1), "int{bits}");
        let f = IntFormat::new(bits, false, false).unwrap();
        assert_eq!((f.qmin(), f.qmax()), (0, 2 * h - 1), "uint{bits}");
        if bits > 1 {
            let f = IntFormat::new(bits, true, true).unwrap();
            assert_eq!((f.qmin(), f.qmax()), (-h + 1, h - 1), "int{bits} narrow");
            let f = IntFormat::new(bits, false, true).unwrap();
            assert_eq!((f.qmin(), f.qmax()), (1, 2 * h - 1), "uint{bits} narrow");
        } else {
            assert!(matches!(IntFormat::new(1, true, true), Err(Error::InvalidParameter(_))));
            assert!(matches!(IntFormat::new(1, false, true), Err(Error::InvalidParameter(_))));
        }
    }
    assert_eq!((IntFormat::INT8_NARROW.qmin(), IntFormat::INT8_NARROW.qmax()), (-127, 127));
    assert_eq!((IntFormat::INT8.qmin(), IntFormat::INT8.qmax()), (-128, 127));
    assert_eq!((IntFormat::UINT8.qmin(), IntFormat::UINT8.qmax()), (0, 255));
    assert_eq!(IntFormat::signed(4).unwrap().levels(), 16);
}

#[test]
fn half_even_vs_half_away_known_values_int8() {
    let even = QuantParams::per_tensor(IntFormat::INT8, 1.0, 0).unwrap();
    let away = even.clone().with_rounding(Rounding::HalfAway);
    let x = [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, 1e10, -1e10, 0.49999997, -0.49999997];
    let e = even.quantize::<i8>(&x, &[x.len()]).unwrap();
    let a = away.quantize::<i8>(&x, &[x.len()]).unwrap();
    assert_eq!(e.codes(), &[0, 2, 2, 0, -2, -2, 126, 127, -128, -128, 127, -128, 0, 0]);
    assert_eq!(a.codes(), &[1, 2, 3, -1, -2, -3, 127, 127, -128, -128, 127, -128, 0, 0]);
}

#[test]
fn ties_and_saturation_every_format_and_zero_point() {
    for f in all_formats() {
        let (qmin, qmax) = (f.qmin(), f.qmax());
        for scale in [0.5f32, 0.25, 8.0] {
            for zp in qmin..=qmax {
                let ts: Vec<i32> = ((qmin - zp - 3)..=(qmax - zp + 2)).collect();
                // Exact ties: (t + 0.5)·scale with a power-of-two scale.
                let mut x: Vec<f32> = ts.iter().map(|&t| (t as f32 + 0.5) * scale).collect();
                x.extend([f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30]);
                let mut want_even: Vec<i32> = ts
                    .iter()
                    .map(|&t| {
                        let r = if t % 2 == 0 { t } else { t + 1 };
                        (r + zp).clamp(qmin, qmax)
                    })
                    .collect();
                let mut want_away: Vec<i32> = ts
                    .iter()
                    .map(|&t| {
                        let r = if t >= 0 { t + 1 } else { t };
                        (r + zp).clamp(qmin, qmax)
                    })
                    .collect();
                for w in [&mut want_even, &mut want_away] {
                    w.extend([qmax, qmin, qmax, qmin]);
                }
                for (rounding, want) in [(Rounding::HalfEven, &want_even), (Rounding::HalfAway, &want_away)] {
                    let p = QuantParams::per_tensor(f, scale, zp).unwrap().with_rounding(rounding);
                    let got: Vec<i32> = if f.is_signed() {
                        p.quantize::<i8>(&x, &[x.len()]).unwrap().codes().iter().map(|c| c.to_i32()).collect()
                    } else {
                        p.quantize::<u8>(&x, &[x.len()]).unwrap().codes().iter().map(|c| c.to_i32()).collect()
                    };
                    assert_eq!(&got, want, "{f} scale {scale} zp {zp} {rounding:?}");
                }
                // Saturation reaches both ends exactly.
                assert_eq!(*want_even.iter().max().unwrap(), qmax);
                assert_eq!(*want_even.iter().min().unwrap(), qmin);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Granularities.
// ---------------------------------------------------------------------------------------

fn random_params(format: IntFormat, n: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<i32>) {
    let scales = (0..n)
        .map(|i| if i % 3 == 0 { 2f32.powi(rng.random_range(-6..3)) } else { rng.random_range(0.01f32..2.0) })
        .collect();
    let zps = (0..n).map(|_| rng.random_range(format.qmin()..=format.qmax())).collect();
    (scales, zps)
}

/// Data with ties relative to each element's own scale, NaN/inf sprinkled in.
fn granular_data(shape: &[usize], g: Granularity, scales: &[f32], rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| {
            let s = scales[oracle_param_index(shape, i, g)];
            match rng.random_range(0..20) {
                0 => (rng.random_range(-140i32..140) as f32 + 0.5) * s,
                1 => f32::NAN,
                2 => f32::INFINITY,
                3 => f32::NEG_INFINITY,
                _ => rng.random_range(-140.0f32..140.0) * s,
            }
        })
        .collect()
}

fn check_granularity<T: Int8>(format: IntFormat, shape: &[usize], g: Granularity, rng: &mut ChaCha8Rng) {
    let np = oracle_num_params(shape, g);
    let (scales, zps) = random_params(format, np, rng);
    let x = granular_data(shape, g, &scales, rng);
    let (qmin, qmax) = (format.qmin(), format.qmax());
    for rounding in [Rounding::HalfEven, Rounding::HalfAway, Rounding::Stochastic { seed: 99 }] {
        let p = QuantParams::new(format, g, scales.clone(), zps.clone()).unwrap().with_rounding(rounding);
        let q = p.quantize::<T>(&x, shape).unwrap();
        let mut stream = UniformStream::new(99);
        for (i, c) in q.codes().iter().enumerate() {
            let k = oracle_param_index(shape, i, g);
            let want = match rounding {
                Rounding::Stochastic { .. } => {
                    oracle_q_stochastic(x[i], scales[k], zps[k], qmin, qmax, stream.next_u())
                }
                r => oracle_q(x[i], scales[k], zps[k], qmin, qmax, r),
            };
            assert_eq!(c.to_i32(), want, "{g:?} shape {shape:?} element {i} {rounding:?}");
        }
        let y = q.dequantize();
        let mut y2 = vec![0f32; y.len()];
        p.dequantize_into(q.codes(), shape, &mut y2).unwrap();
        for (i, (c, (&a, &b))) in q.codes().iter().zip(y.iter().zip(&y2)).enumerate() {
            let k = oracle_param_index(shape, i, g);
            let want = oracle_dq(c.to_i32(), scales[k], zps[k]);
            assert_eq!(a.to_bits(), want.to_bits(), "{g:?} dequantize element {i}");
            assert_eq!(b.to_bits(), want.to_bits());
        }
    }
}

#[test]
fn per_channel_every_axis_of_3d_tensors() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for shape in [[3usize, 4, 5], [2, 3, 37], [5, 1, 300], [7, 9, 1]] {
        for axis in 0..3 {
            let g = Granularity::PerChannel { axis };
            check_granularity::<i8>(IntFormat::INT8, &shape, g, &mut rng);
            check_granularity::<u8>(IntFormat::UINT8, &shape, g, &mut rng);
            check_granularity::<i8>(IntFormat::new(4, true, true).unwrap(), &shape, g, &mut rng);
            check_granularity::<u8>(IntFormat::unsigned(3).unwrap(), &shape, g, &mut rng);
        }
    }
}

#[test]
fn per_group_with_short_last_block() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // (shape, axis, group size): the last block of each row is short in all but the first.
    let cases: [(&[usize], usize, usize); 8] = [
        (&[3, 8, 4], 1, 4),
        (&[2, 10, 19], 1, 4),
        (&[3, 37, 2], 0, 2),
        (&[3, 10, 4], 1, 4),
        (&[2, 3, 11], 2, 4),
        (&[2, 3, 300], 2, 64),
        (&[7, 3, 2], 0, 3),
        (&[5, 33], 1, 32),
    ];
    for (shape, axis, gs) in cases {
        let g = Granularity::PerGroup { axis, group_size: gs };
        check_granularity::<i8>(IntFormat::INT8, shape, g, &mut rng);
        check_granularity::<u8>(IntFormat::unsigned(4).unwrap(), shape, g, &mut rng);
        check_granularity::<i8>(IntFormat::signed(2).unwrap(), shape, g, &mut rng);
    }
    // A group larger than the axis is one (short) block.
    check_granularity::<u8>(IntFormat::UINT8, &[4, 5], Granularity::PerGroup { axis: 1, group_size: 8 }, &mut rng);
}

/// The affine min-max rule, written here from ONNX DynamicQuantizeLinear.
fn expect_affine(lo: f32, hi: f32, qmin: i32, qmax: i32) -> (f32, i32) {
    let rmin = lo.min(0.0);
    let rmax = hi.max(0.0);
    let scale = if rmax == rmin { 1.0 } else { rmax - rmin } / (qmax - qmin) as f32;
    let zp = round_half_even_f32((qmin as f32 - rmin / scale).clamp(qmin as f32, qmax as f32)) as i32;
    (scale, zp)
}

#[test]
fn calibration_per_channel_and_per_group_min_max() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let shape = [3usize, 10, 6];
    let x: Vec<f32> = (0..180).map(|_| rng.random_range(-5.0f32..7.0)).collect();
    for g in [
        Granularity::PerTensor,
        Granularity::PerChannel { axis: 0 },
        Granularity::PerChannel { axis: 1 },
        Granularity::PerChannel { axis: 2 },
        Granularity::PerGroup { axis: 1, group_size: 4 },
        Granularity::PerGroup { axis: 2, group_size: 4 },
    ] {
        for format in [IntFormat::UINT8, IntFormat::signed(4).unwrap()] {
            let p = UniformQuantizer::new(format, Mapping::Affine).with_granularity(g).calibrate(&x, &shape).unwrap();
            let np = oracle_num_params(&shape, g);
            assert_eq!(p.scales().len(), np);
            for k in 0..np {
                let vals: Vec<f32> =
                    (0..x.len()).filter(|&i| oracle_param_index(&shape, i, g) == k).map(|i| x[i]).collect();
                let lo = vals.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let (s, z) = expect_affine(lo, hi, format.qmin(), format.qmax());
                assert_eq!((p.scales()[k].to_bits(), p.zero_points()[k]), (s.to_bits(), z), "{g:?} {format} slot {k}");
            }
            // Symmetric: absmax / h with the centre zero point.
            let p =
                UniformQuantizer::new(format, Mapping::Symmetric).with_granularity(g).calibrate(&x, &shape).unwrap();
            let zc = if format.is_signed() { 0 } else { 1 << (format.bits() - 1) };
            let h = (format.qmax() - zc).min(zc - format.qmin());
            for k in 0..np {
                let am = (0..x.len())
                    .filter(|&i| oracle_param_index(&shape, i, g) == k)
                    .map(|i| x[i].abs())
                    .fold(0.0f32, f32::max);
                assert_eq!(p.scales()[k].to_bits(), (am / h as f32).to_bits());
                assert_eq!(p.zero_points()[k], zc);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stochastic rounding.
// ---------------------------------------------------------------------------------------

#[test]
fn stochastic_rounding_is_unbiased_and_not_deterministic() {
    const N: usize = 1 << 20;
    // (x, scale): fractional positions 1/8, 1/4, 1/2, 3/4, 7/8, a non-dyadic one, negative
    // values, and a non-unit scale.
    let cases = [
        (3.125f32, 1.0f32),
        (3.25, 1.0),
        (0.5, 1.0),
        (-6.75, 1.0),
        (-0.125, 1.0),
        (10.875, 1.0),
        (0.1, 1.0),
        (1.3, 0.37),
        (-2.93, 0.05),
    ];
    let p0 = QuantParams::per_tensor(IntFormat::INT8, 1.0, 0).unwrap();
    for (xv, scale) in cases {
        let p = QuantParams::per_tensor(IntFormat::INT8, scale, 0)
            .unwrap()
            .with_rounding(Rounding::Stochastic { seed: 2024 });
        let v = xv / scale; // what the quantizer rounds
        let fl = v.floor() as f64;
        let f = v as f64 - fl;
        assert!(f > 0.0 && f < 1.0);
        let x = vec![xv; N];
        let q = p.quantize::<i8>(&x, &[N]).unwrap();
        let (mut up, mut down, mut sum_err) = (0usize, 0usize, 0.0f64);
        for &c in q.codes() {
            let c = c as f64;
            if c == fl + 1.0 {
                up += 1;
            } else if c == fl {
                down += 1;
            } else {
                panic!("x = {xv}: code {c} is neither neighbour of {v}");
            }
            sum_err += c - v as f64;
        }
        // Each draw's error is Bernoulli(f) − f: mean 0, σ² = f(1 − f).
        let sigma = (f * (1.0 - f)).sqrt();
        let bound = 5.0 * sigma / (N as f64).sqrt();
        let mean_err = sum_err / N as f64;
        assert!(mean_err.abs() <= bound, "x = {xv}: mean error {mean_err:e} exceeds 5σ/√N = {bound:e}");
        let freq = up as f64 / N as f64;
        assert!((freq - f).abs() <= bound, "x = {xv}: P(up) = {freq}, expected {f} ± {bound:e}");
        assert!(up > 0 && down > 0);
        // Deterministic rounding would give one value for all N copies.
        let det = p0.quantize::<i8>(&[v], &[1]).unwrap().codes()[0];
        assert!(q.codes().iter().any(|&c| c != det));
    }
}

#[test]
fn stochastic_rounding_unbiased_on_random_data_and_seeded() {
    const N: usize = 1 << 20;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let scale = 0.0625f32;
    let x: Vec<f32> = (0..N).map(|_| rng.random_range(-7.0f32..7.0)).collect();
    let p = QuantParams::per_tensor(IntFormat::INT8, scale, 0).unwrap().with_rounding(Rounding::Stochastic { seed: 7 });
    let q = p.quantize::<i8>(&x, &[N]).unwrap();
    let (mut sum_err, mut var) = (0.0f64, 0.0f64);
    for (&c, &xi) in q.codes().iter().zip(&x) {
        let v = (xi / scale) as f64;
        let f = v - v.floor();
        var += f * (1.0 - f);
        sum_err += c as f64 - v;
    }
    let bound = 5.0 * var.sqrt() / N as f64;
    assert!((sum_err / N as f64).abs() <= bound, "mean error {} > {bound}", sum_err / N as f64);
    // Same seed → same codes; another seed → different codes.
    assert_eq!(p.quantize::<i8>(&x, &[N]).unwrap().codes(), q.codes());
    let p2 = p.clone().with_rounding(Rounding::Stochastic { seed: 8 });
    assert_ne!(p2.quantize::<i8>(&x, &[N]).unwrap().codes(), q.codes());
    // The documented stream: one draw per element in order.
    let mut s = UniformStream::new(7);
    for (i, (&c, &xi)) in q.codes().iter().zip(&x).enumerate().take(10_000) {
        assert_eq!(c as i32, oracle_q_stochastic(xi, scale, 0, -128, 127, s.next_u()), "element {i}");
    }
}

// ---------------------------------------------------------------------------------------
// Calibration.
// ---------------------------------------------------------------------------------------

#[test]
fn min_max_calibration_exact() {
    let x = [0.5f32, -1.25, 3.0, 2.0, -0.75];
    assert_eq!(min_max(&x).unwrap(), (-1.25, 3.0));
    let p = UniformQuantizer::new(IntFormat::UINT8, Mapping::Affine).calibrate(&x, &[5]).unwrap();
    // scale = 4.25 / 255, zp = round(0 + 1.25 / scale) = round(75.0) = 75.
    assert_eq!(p.scales()[0].to_bits(), (4.25f32 / 255.0).to_bits());
    assert_eq!(p.zero_points()[0], round_half_even_f32(1.25 / (4.25f32 / 255.0)) as i32);
    assert_eq!(p.zero_points()[0], 75);
    // All-positive data: the range is extended to include 0, so zp = qmin.
    let p = UniformQuantizer::new(IntFormat::INT8, Mapping::Affine).calibrate(&[1.0, 2.0, 5.1], &[3]).unwrap();
    assert_eq!((p.scales()[0].to_bits(), p.zero_points()[0]), ((5.1f32 / 255.0).to_bits(), -128));
    // Symmetric int8: absmax / 127, zp 0; uint8: zp 128.
    let p = UniformQuantizer::new(IntFormat::INT8, Mapping::Symmetric).calibrate(&x, &[5]).unwrap();
    assert_eq!((p.scales()[0].to_bits(), p.zero_points()[0]), ((3.0f32 / 127.0).to_bits(), 0));
    let p = UniformQuantizer::new(IntFormat::UINT8, Mapping::Symmetric).calibrate(&x, &[5]).unwrap();
    assert_eq!((p.scales()[0].to_bits(), p.zero_points()[0]), ((3.0f32 / 127.0).to_bits(), 128));
    // All zeros: width 1 as ONNX does.
    let p = UniformQuantizer::new(IntFormat::UINT8, Mapping::Affine).calibrate(&[0.0; 4], &[4]).unwrap();
    assert_eq!((p.scales()[0].to_bits(), p.zero_points()[0]), ((1.0f32 / 255.0).to_bits(), 0));
    // from_range is the same rule.
    let p2 = QuantParams::from_range(IntFormat::UINT8, Mapping::Affine, -1.25, 3.0).unwrap();
    let p1 = UniformQuantizer::new(IntFormat::UINT8, Mapping::Affine).calibrate(&x, &[5]).unwrap();
    assert_eq!(p1, p2);
}

#[test]
fn affine_zero_point_uses_division() {
    // Ranges where `qmin − rmin / scale` and `qmin − rmin · (1 / scale)` round to
    // different zero points: the library must follow the division (ONNX).
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut found = 0;
    for _ in 0..2_000_000 {
        let lo = -rng.random_range(0.001f32..10.0);
        let hi = rng.random_range(0.001f32..10.0);
        let scale = (hi - lo) / 255.0;
        let by_div = round_half_even_f32((0.0 - lo / scale).clamp(0.0, 255.0));
        let by_mul = round_half_even_f32((0.0 - lo * (1.0 / scale)).clamp(0.0, 255.0));
        if by_div != by_mul {
            found += 1;
            let p = QuantParams::from_range(IntFormat::UINT8, Mapping::Affine, lo, hi).unwrap();
            assert_eq!(p.zero_points()[0], by_div as i32, "range [{lo}, {hi}]");
            assert_eq!((p.scales()[0].to_bits(), p.zero_points()[0]), {
                let (s, z) = expect_affine(lo, hi, 0, 255);
                (s.to_bits(), z)
            });
            if found == 20 {
                break;
            }
        }
    }
    assert!(found > 0, "no distinguishing range found");
}

#[test]
fn percentile_known_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut x: Vec<f32> = (0..=100).map(|i| i as f32).collect();
    x.shuffle(&mut rng);
    assert_eq!(percentile(&x, 99.0).unwrap(), 99.0);
    assert_eq!(percentile(&x, 99.5).unwrap(), 99.5);
    assert_eq!(percentile(&x, 100.0).unwrap(), 100.0);
    assert_eq!(percentile(&x, 0.0).unwrap(), 0.0);
    assert_eq!(percentile(&x, 12.25).unwrap(), 12.25);
    // Ties: sorted [1, 2, 2, 2, 3, 5].
    let t = [3.0f32, 2.0, 5.0, 2.0, 1.0, 2.0];
    assert_eq!(percentile(&t, 50.0).unwrap(), 2.0); // h = 2.5 between two 2s
    assert_eq!(percentile(&t, 75.0).unwrap(), 2.75); // h = 3.75: 2 + 0.75·(3 − 2)
    assert_eq!(percentile(&t, 90.0).unwrap(), 4.0); // h = 4.5: 3 + 0.5·(5 − 3)
    assert_eq!(percentile(&[7.5], 30.0).unwrap(), 7.5);

    // Percentile calibration: affine uses P(100 − p) and P(p), then includes 0.
    let p = UniformQuantizer::new(IntFormat::UINT8, Mapping::Affine)
        .with_calibration(Calibration::Percentile(99.0))
        .calibrate(&x, &[101])
        .unwrap();
    assert_eq!(p, QuantParams::from_range(IntFormat::UINT8, Mapping::Affine, 1.0, 99.0).unwrap());
    // Symmetric uses the percentile of |x|: |x| of −50..=50 is 0, 1, 1, 2, 2, …, 50, 50.
    let y: Vec<f32> = (-50..=50).map(|i| i as f32).collect();
    let p = UniformQuantizer::new(IntFormat::INT8, Mapping::Symmetric)
        .with_calibration(Calibration::Percentile(90.0))
        .calibrate(&y, &[101])
        .unwrap();
    // h = 100 · 0.9 = 90 → sorted |y|[90] = 45.
    assert_eq!(p.scales()[0].to_bits(), (45.0f32 / 127.0).to_bits());
    // p = 100 is min-max.
    let a = UniformQuantizer::new(IntFormat::INT8, Mapping::Affine).with_calibration(Calibration::Percentile(100.0));
    let b = UniformQuantizer::new(IntFormat::INT8, Mapping::Affine);
    assert_eq!(a.calibrate(&y, &[101]).unwrap(), b.calibrate(&y, &[101]).unwrap());
}

fn laplace(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let e = Exp::new(1.0f64).unwrap();
    (0..n)
        .map(|_| {
            let m = e.sample(&mut rng);
            (if rng.random::<bool>() { m } else { -m }) as f32
        })
        .collect()
}

fn heavy_tailed(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = StudentT::new(1.5f64).unwrap();
    (0..n).map(|_| t.sample(&mut rng) as f32).collect()
}

#[test]
fn mse_clipping_beats_min_max() {
    let n = 100_000;
    let lap = laplace(n, 11);
    let heavy = heavy_tailed(n, 12);
    for (format, mapping) in [
        (IntFormat::INT8, Mapping::Symmetric),
        (IntFormat::signed(4).unwrap(), Mapping::Symmetric),
        (IntFormat::UINT8, Mapping::Affine),
        (IntFormat::unsigned(3).unwrap(), Mapping::Affine),
    ] {
        let mm = UniformQuantizer::new(format, mapping);
        let ms = mm.with_calibration(Calibration::mse());
        for (name, data, strict) in [("laplace", &lap, false), ("student-t(1.5)", &heavy, true)] {
            let e_mm = mm.calibrate(data, &[n]).unwrap().error(data, &[n]).unwrap().mse;
            let pm = ms.calibrate(data, &[n]).unwrap();
            let e_ms = pm.error(data, &[n]).unwrap().mse;
            assert!(e_ms <= e_mm, "{name} {format} {mapping:?}: mse-clip {e_ms} > min-max {e_mm}");
            if strict {
                assert!(e_ms < e_mm, "{name} {format} {mapping:?}: mse-clip {e_ms} not < min-max {e_mm}");
            }
            // The choice is the grid's argmin (larger ratio on ties), checked by brute force.
            let (lo, hi) = min_max(data).unwrap();
            let mut best = (f64::INFINITY, None);
            for k in (1..=100u32).rev() {
                let c = k as f32 / 100.0;
                let Ok(cand) = QuantParams::from_range(format, mapping, c * lo, c * hi) else {
                    continue;
                };
                let e = cand.error(data, &[n]).unwrap().mse;
                if e < best.0 {
                    best = (e, Some(cand));
                }
            }
            assert_eq!(Some(pm), best.1, "{name} {format} {mapping:?}");
        }
    }
}

#[test]
fn mse_clipping_grid_and_tie_rule() {
    // 2-bit symmetric: levels {−2, −1, 0, 1}·scale, scale = c · max|x|.
    let f = IntFormat::signed(2).unwrap();
    let x = [1.0f32, 0.5];
    let uq = UniformQuantizer::new(f, Mapping::Symmetric);
    // grid 2: c = 1 (errors 0 + 0.25², 0.5 rounds half-even to 0) and c = 0.5 (1 saturates
    // to 0.5, 0.5 exact) tie at 0.25; the larger ratio wins.
    let p = uq.with_calibration(Calibration::Mse { grid: 2 }).calibrate(&x, &[2]).unwrap();
    assert_eq!(p.scales()[0], 1.0);
    // grid 4 adds c = 0.75 (both errors 0.25² → total 0.125), strictly better.
    let p = uq.with_calibration(Calibration::Mse { grid: 4 }).calibrate(&x, &[2]).unwrap();
    assert_eq!(p.scales()[0], 0.75);
    assert_eq!(p.error(&x, &[2]).unwrap().mse, 0.0625);
    // grid 1 is min-max.
    let p = uq.with_calibration(Calibration::Mse { grid: 1 }).calibrate(&x, &[2]).unwrap();
    assert_eq!(p, uq.calibrate(&x, &[2]).unwrap());
}

// ---------------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------------

#[test]
fn metrics_known_values() {
    let r = [1.0f32, 2.0, 3.0, 4.0];
    let a = [1.0f32, 2.0, 3.0, 5.0];
    assert_eq!(mse(&r, &a).unwrap(), 0.25);
    assert_eq!(max_abs_error(&r, &[1.5, 2.0, 2.75, 4.0]).unwrap(), 0.5);
    assert_eq!(sqnr_db(&r, &a).unwrap(), 10.0 * 30f64.log10());
    assert_eq!(sqnr_db(&[0.0, 0.0], &[0.0, 0.0]).unwrap(), f64::INFINITY);
    assert_eq!(sqnr_db(&r, &r).unwrap(), f64::INFINITY);
    assert_eq!(sqnr_db(&[0.0, 0.0], &[0.0, 1.0]).unwrap(), f64::NEG_INFINITY);
    let s = ErrorStats::between(&r, &a).unwrap();
    assert_eq!((s.mse, s.max_abs_error), (0.25, 1.0));
    assert_eq!(s.sqnr_db, 10.0 * 30f64.log10());
    // Quantization error stays within half a step inside the range.
    let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 100.0).collect();
    let p = UniformQuantizer::new(IntFormat::INT8, Mapping::Symmetric).calibrate(&x, &[1000]).unwrap();
    let e = p.error(&x, &[1000]).unwrap();
    assert!(e.max_abs_error <= p.scales()[0] as f64 / 2.0 * (1.0 + 1e-6));
    // SQNR of 8-bit uniform on uniform data is about 6.02·8 − 1.25 dB ≈ 47 dB (loosely).
    assert!(e.sqnr_db > 40.0 && e.sqnr_db < 55.0, "{}", e.sqnr_db);
}

// ---------------------------------------------------------------------------------------
// API shape: QuantizedTensor, Scheme, quantize_into.
// ---------------------------------------------------------------------------------------

#[test]
fn quantized_tensor_and_scheme_round_trip() {
    let x = [0.3f32, -1.0, 0.7, 2.0, -0.2, 0.0];
    let uq = UniformQuantizer::new(IntFormat::INT8, Mapping::Symmetric)
        .with_granularity(Granularity::PerChannel { axis: 1 });
    let q = uq.quantize::<i8>(&x, &[2, 3]).unwrap();
    assert_eq!(q.shape(), &[2, 3]);
    let mut out = vec![0i8; 6];
    let p = uq.quantize_into(&x, &[2, 3], &mut out).unwrap();
    assert_eq!(&out, q.codes());
    assert_eq!(&p, q.params());
    let mut y = [0f32; 6];
    q.dequantize_into(&mut y).unwrap();
    assert_eq!(y.to_vec(), q.dequantize());
    // Through the trait.
    fn via_scheme<S: Scheme<i8>>(s: &S, x: &[f32], shape: &[usize]) -> Vec<f32> {
        s.fake_quantize(x, shape).unwrap()
    }
    assert_eq!(via_scheme(&p, &x, &[2, 3]), q.dequantize());
    assert_eq!(Scheme::<i8>::error(&p, &x, &[2, 3]).unwrap(), p.error(&x, &[2, 3]).unwrap());
    let (codes, shape, params) = q.clone().into_parts();
    let q2 = QuantizedTensor::new(codes, &shape, params).unwrap();
    assert_eq!(q2, q);
}

// ---------------------------------------------------------------------------------------
// ONNX conformance data (bit-exact): QuantizeLinear, DequantizeLinear,
// DynamicQuantizeLinear on the 1–8-bit integer cases.
// ---------------------------------------------------------------------------------------

fn onnx_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/onnx")
}

struct Npy {
    shape: Vec<usize>,
    f32s: Vec<f32>,
    ints: Vec<i32>,
}

fn load(case: &str, name: &str) -> Npy {
    let path = onnx_dir().join(case).join(format!("{name}.npy"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let (f32s, ints) = if descr.contains("f4") {
        (npy.into_vec::<f32>().unwrap(), vec![])
    } else if descr.contains("u1") {
        (vec![], npy.into_vec::<u8>().unwrap().into_iter().map(i32::from).collect())
    } else if descr.contains("i1") {
        (vec![], npy.into_vec::<i8>().unwrap().into_iter().map(i32::from).collect())
    } else {
        panic!("{case}/{name}: unexpected dtype {descr}")
    };
    Npy { shape, f32s, ints }
}

fn onnx_meta(case: &str) -> (usize, usize, String) {
    let text = std::fs::read_to_string(onnx_dir().join(case).join("test.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let a = &j["attributes_with_schema_defaults"];
    let axis = a["axis"].as_i64().unwrap_or(1) as usize;
    let block = a["block_size"].as_i64().unwrap_or(0) as usize;
    let dtype = j["outputs"][0]["onnx_dtype"].as_str().unwrap().to_string();
    (axis, block, dtype)
}

fn onnx_format(dtype: &str) -> IntFormat {
    match dtype {
        "UINT8" => IntFormat::UINT8,
        "INT8" => IntFormat::INT8,
        "UINT4" => IntFormat::unsigned(4).unwrap(),
        "INT4" => IntFormat::signed(4).unwrap(),
        "UINT2" => IntFormat::unsigned(2).unwrap(),
        "INT2" => IntFormat::signed(2).unwrap(),
        other => panic!("unexpected dtype {other}"),
    }
}

fn onnx_granularity(scale_len: usize, axis: usize, block: usize) -> Granularity {
    if scale_len == 1 {
        Granularity::PerTensor
    } else if block > 0 {
        Granularity::PerGroup { axis, group_size: block }
    } else {
        Granularity::PerChannel { axis }
    }
}

fn codes_of<T: Int8>(q: &[T]) -> Vec<i32> {
    q.iter().map(|c| c.to_i32()).collect()
}

fn to_codes<T: Int8>(v: &[i32]) -> Vec<T> {
    v.iter().map(|&c| T::saturate_from(c)).collect()
}

#[test]
fn onnx_quantize_linear_cases() {
    let cases = [
        "test_quantizelinear",
        "test_quantizelinear_axis",
        "test_quantizelinear_blocked_asymmetric",
        "test_quantizelinear_int4",
        "test_quantizelinear_uint4",
        "test_quantizelinear_int2",
        "test_quantizelinear_uint2",
    ];
    for case in cases {
        let (axis, block, dtype) = onnx_meta(case);
        let format = onnx_format(&dtype);
        let x = load(case, "x");
        let s = load(case, "y_scale");
        let z = load(case, "y_zero_point");
        let y = load(case, "y");
        let g = onnx_granularity(s.f32s.len(), axis, block);
        let p = QuantParams::new(format, g, s.f32s.clone(), z.ints.clone()).unwrap();
        let got = if format.is_signed() {
            codes_of(p.quantize::<i8>(&x.f32s, &x.shape).unwrap().codes())
        } else {
            codes_of(p.quantize::<u8>(&x.f32s, &x.shape).unwrap().codes())
        };
        assert_eq!(got, y.ints, "{case}");
        println!("onnx {case}: ok ({} elements, {g:?}, {format})", got.len());
    }
    println!(
        "onnx QuantizeLinear not applicable to 1–8-bit uniform quant (covered by the onnx module): test_quantizelinear_blocked_symmetric (int16), _int16, _uint16, _e4m3fn, _e5m2, _float4e2m1"
    );
}

#[test]
fn onnx_dequantize_linear_cases() {
    let cases = [
        "test_dequantizelinear",
        "test_dequantizelinear_axis",
        "test_dequantizelinear_blocked",
        "test_dequantizelinear_int4",
        "test_dequantizelinear_uint4",
        "test_dequantizelinear_int2",
        "test_dequantizelinear_uint2",
    ];
    for case in cases {
        let (axis, block, _) = onnx_meta(case);
        let x = load(case, "x");
        let s = load(case, "x_scale");
        let z = load(case, "x_zero_point");
        let y = load(case, "y");
        let text = std::fs::read_to_string(onnx_dir().join(case).join("test.json")).unwrap();
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        let format = onnx_format(j["inputs"][0]["onnx_dtype"].as_str().unwrap());
        let g = onnx_granularity(s.f32s.len(), axis, block);
        let p = QuantParams::new(format, g, s.f32s.clone(), z.ints.clone()).unwrap();
        let got = if format.is_signed() {
            p.dequantize::<i8>(&to_codes(&x.ints), &x.shape).unwrap()
        } else {
            p.dequantize::<u8>(&to_codes(&x.ints), &x.shape).unwrap()
        };
        let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let wb: Vec<u32> = y.f32s.iter().map(|v| v.to_bits()).collect();
        assert_eq!(gb, wb, "{case}");
        println!("onnx {case}: ok ({} elements, {g:?}, {format})", got.len());
    }
}

#[test]
fn onnx_dynamic_quantize_linear_is_affine_uint8_min_max() {
    for case in [
        "test_dynamicquantizelinear",
        "test_dynamicquantizelinear_max_adjusted",
        "test_dynamicquantizelinear_min_adjusted",
        "test_dynamicquantizelinear_expanded",
        "test_dynamicquantizelinear_max_adjusted_expanded",
        "test_dynamicquantizelinear_min_adjusted_expanded",
    ] {
        let x = load(case, "x");
        let y = load(case, "y");
        let s = load(case, "y_scale");
        let z = load(case, "y_zero_point");
        let q = UniformQuantizer::new(IntFormat::UINT8, Mapping::Affine).quantize::<u8>(&x.f32s, &x.shape).unwrap();
        assert_eq!(q.params().scales()[0].to_bits(), s.f32s[0].to_bits(), "{case} scale");
        assert_eq!(q.params().zero_points()[0], z.ints[0], "{case} zero point");
        assert_eq!(codes_of(q.codes()), y.ints, "{case} codes");
        println!("onnx {case}: ok");
    }
}

// ---------------------------------------------------------------------------------------
// Bad input, for every public entry point.
// ---------------------------------------------------------------------------------------

macro_rules! assert_err {
    ($e:expr, $pat:pat) => {{
        let r = $e;
        assert!(matches!(r, Err($pat)), "{} returned {:?}", stringify!($e), r.as_ref().map(|_| ()));
    }};
}

#[test]
fn bad_formats() {
    for bits in [0u32, 9, 16, u32::MAX] {
        assert_err!(IntFormat::new(bits, true, false), Error::InvalidBits { .. });
        assert_err!(IntFormat::signed(bits), Error::InvalidBits { .. });
        assert_err!(IntFormat::unsigned(bits), Error::InvalidBits { .. });
    }
    assert_err!(IntFormat::new(1, true, true), Error::InvalidParameter(_));
    match IntFormat::new(9, false, false) {
        Err(Error::InvalidBits { bits: 9, min: 1, max: 8 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_params() {
    let f = IntFormat::INT8;
    for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -1.0] {
        assert_err!(QuantParams::per_tensor(f, s, 0), Error::InvalidScale { .. });
        assert_err!(QuantParams::per_channel(f, 0, vec![1.0, s], vec![0, 0]), Error::InvalidScale { .. });
        assert_err!(QuantParams::per_group(f, 0, 2, vec![s], vec![0]), Error::InvalidScale { .. });
    }
    assert_err!(QuantParams::per_tensor(f, 1.0, 128), Error::ZeroPointOutOfRange { .. });
    assert_err!(QuantParams::per_tensor(IntFormat::INT8_NARROW, 1.0, -128), Error::ZeroPointOutOfRange { .. });
    assert_err!(QuantParams::per_tensor(IntFormat::UINT8, 1.0, -1), Error::ZeroPointOutOfRange { .. });
    assert_err!(QuantParams::per_tensor(IntFormat::signed(4).unwrap(), 1.0, 8), Error::ZeroPointOutOfRange { .. });
    assert_err!(
        QuantParams::per_channel(IntFormat::unsigned(2).unwrap(), 0, vec![1.0; 2], vec![0, 4]),
        Error::ZeroPointOutOfRange { .. }
    );
    assert_err!(QuantParams::per_channel(f, 0, vec![], vec![]), Error::InvalidParameter(_));
    assert_err!(QuantParams::per_channel(f, 0, vec![1.0; 3], vec![0; 2]), Error::ShapeMismatch(_));
    assert_err!(QuantParams::new(f, Granularity::PerTensor, vec![1.0; 2], vec![0; 2]), Error::ShapeMismatch(_));
    assert_err!(QuantParams::per_group(f, 0, 0, vec![1.0], vec![0]), Error::InvalidParameter(_));

    // from_range / from_ranges.
    for (lo, hi) in [(f32::NAN, 1.0), (0.0, f32::NAN), (f32::NEG_INFINITY, 1.0), (0.0, f32::INFINITY), (2.0, 1.0)] {
        assert_err!(QuantParams::from_range(f, Mapping::Affine, lo, hi), Error::InvalidParameter(_));
        assert_err!(QuantParams::from_range(f, Mapping::Symmetric, lo, hi), Error::InvalidParameter(_));
    }
    assert_err!(QuantParams::from_range(f, Mapping::Affine, -3e38, 3e38), Error::InvalidScale { .. });
    assert_err!(QuantParams::from_range(f, Mapping::Affine, 0.0, 1e-44), Error::InvalidScale { .. });
    assert_err!(QuantParams::from_range(f, Mapping::Symmetric, 0.0, 1e-44), Error::InvalidScale { .. });
    for fmt in [IntFormat::signed(1).unwrap(), IntFormat::unsigned(1).unwrap()] {
        assert_err!(QuantParams::from_range(fmt, Mapping::Symmetric, -1.0, 1.0), Error::InvalidParameter(_));
    }
    assert_err!(
        QuantParams::from_ranges(f, Mapping::Affine, Granularity::PerChannel { axis: 0 }, &[0.0], &[1.0, 2.0]),
        Error::ShapeMismatch(_)
    );
    assert_err!(
        QuantParams::from_ranges(f, Mapping::Affine, Granularity::PerChannel { axis: 0 }, &[], &[]),
        Error::InvalidParameter(_)
    );
    assert_err!(
        QuantParams::from_ranges(f, Mapping::Affine, Granularity::PerChannel { axis: 0 }, &[3.0], &[1.0]),
        Error::InvalidParameter(_)
    );
}

#[test]
fn bad_quantize_and_dequantize_calls() {
    let p = QuantParams::per_tensor(IntFormat::INT8, 0.5, 0).unwrap();
    let pu = QuantParams::per_tensor(IntFormat::UINT8, 0.5, 0).unwrap();
    let pc = QuantParams::per_channel(IntFormat::INT8, 1, vec![1.0; 3], vec![0; 3]).unwrap();
    let pg = QuantParams::per_group(IntFormat::INT8, 1, 2, vec![1.0; 4], vec![0; 4]).unwrap();
    let x = [1.0f32; 6];
    let mut o8 = [0i8; 6];
    let mut ou = [0u8; 6];
    // Wrong storage type.
    assert_err!(p.quantize_into(&x, &[6], &mut ou), Error::InvalidParameter(_));
    assert_err!(pu.quantize_into(&x, &[6], &mut o8), Error::InvalidParameter(_));
    assert_err!(p.quantize::<u8>(&x, &[6]), Error::InvalidParameter(_));
    assert_err!(p.dequantize::<u8>(&ou, &[6]), Error::InvalidParameter(_));
    // Shape vs data.
    assert_err!(p.quantize_into(&x, &[5], &mut o8), Error::ShapeMismatch(_));
    assert_err!(p.quantize::<i8>(&x, &[2, 4]), Error::ShapeMismatch(_));
    assert_err!(p.quantize::<i8>(&x, &[usize::MAX, 2]), Error::InvalidParameter(_));
    assert_err!(p.dequantize::<i8>(&o8, &[7]), Error::ShapeMismatch(_));
    // Output length.
    assert_err!(p.quantize_into(&x, &[6], &mut o8[..5]), Error::BufferTooSmall { .. });
    let mut big = [0i8; 7];
    assert_err!(p.quantize_into(&x, &[6], &mut big), Error::ShapeMismatch(_));
    let mut y5 = [0f32; 5];
    assert_err!(p.dequantize_into(&o8, &[6], &mut y5), Error::BufferTooSmall { .. });
    let mut y7 = [0f32; 7];
    assert_err!(p.dequantize_into(&o8, &[6], &mut y7), Error::ShapeMismatch(_));
    // Axis and parameter count.
    assert_err!(pc.quantize::<i8>(&x, &[6]), Error::InvalidParameter(_)); // axis 1 of rank 1
    assert_err!(pc.quantize::<i8>(&x, &[3, 2]), Error::ShapeMismatch(_)); // 2 channels, 3 scales
    assert!(pc.quantize::<i8>(&x, &[2, 3]).is_ok());
    assert_err!(pc.dequantize::<i8>(&o8, &[3, 2]), Error::ShapeMismatch(_));
    assert!(pg.quantize::<i8>(&x, &[2, 3]).is_ok()); // 2 rows · ceil(3 / 2) blocks = 4 slots
    assert_err!(pg.quantize::<i8>(&x, &[3, 2]), Error::ShapeMismatch(_)); // 3 · 1 = 3 ≠ 4
    assert_err!(pg.quantize::<i8>(&x, &[1, 6]), Error::ShapeMismatch(_)); // 1 · 3 = 3 ≠ 4
    assert_err!(pg.quantize::<i8>(&x, &[6]), Error::InvalidParameter(_));
    // Codes outside a narrow / sub-byte format.
    let p4 = QuantParams::per_tensor(IntFormat::signed(4).unwrap(), 1.0, 0).unwrap();
    assert_err!(p4.dequantize::<i8>(&[0, 8, 1], &[3]), Error::InvalidParameter(_));
    assert_err!(p4.dequantize::<i8>(&[-9], &[1]), Error::InvalidParameter(_));
    let pn = QuantParams::per_tensor(IntFormat::INT8_NARROW, 1.0, 0).unwrap();
    assert_err!(pn.dequantize::<i8>(&[-128], &[1]), Error::InvalidParameter(_));
    // fake_quantize / error.
    assert_err!(p.fake_quantize(&x, &[7]), Error::ShapeMismatch(_));
    assert_err!(p.error(&[1.0, f32::NAN], &[2]), Error::InvalidParameter(_));
    assert_err!(p.error(&[1.0, f32::INFINITY], &[2]), Error::InvalidParameter(_));
    assert_err!(p.error(&[], &[0]), Error::InvalidParameter(_));
    // Scheme trait entry points.
    assert_err!(Scheme::<i8>::quantize_into(&p, &x, &[6], &mut o8[..2]), Error::BufferTooSmall { .. });
    assert_err!(Scheme::<u8>::dequantize_into(&p, &ou, &[6], &mut [0f32; 6]), Error::InvalidParameter(_));
    assert_err!(Scheme::<i8>::fake_quantize(&p, &x, &[3]), Error::ShapeMismatch(_));
    assert_err!(Scheme::<i8>::error(&p, &[f32::NAN], &[1]), Error::InvalidParameter(_));
    // QuantizedTensor.
    assert_err!(QuantizedTensor::new(vec![0u8; 6], &[6], p.clone()), Error::InvalidParameter(_));
    assert_err!(QuantizedTensor::new(vec![0i8; 6], &[5], p.clone()), Error::ShapeMismatch(_));
    assert_err!(QuantizedTensor::new(vec![9i8], &[1], p4.clone()), Error::InvalidParameter(_));
    let q = p.quantize::<i8>(&x, &[6]).unwrap();
    assert_err!(q.dequantize_into(&mut [0f32; 5]), Error::BufferTooSmall { .. });
    assert_err!(q.dequantize_into(&mut [0f32; 8]), Error::ShapeMismatch(_));
    // An empty tensor quantizes to nothing (not an error: nothing is needed).
    assert_eq!(p.quantize::<i8>(&[], &[0, 3]).unwrap().codes().len(), 0);
}

#[test]
fn bad_calibration_calls() {
    let uq = UniformQuantizer::new(IntFormat::INT8, Mapping::Affine);
    let x = [1.0f32, -2.0, 3.0, 0.5];
    assert_err!(uq.calibrate(&[], &[0]), Error::InvalidParameter(_));
    assert_err!(uq.calibrate(&[], &[2, 0]), Error::InvalidParameter(_));
    assert_err!(uq.calibrate(&[1.0, f32::NAN], &[2]), Error::InvalidParameter(_));
    assert_err!(uq.calibrate(&[1.0, f32::INFINITY], &[2]), Error::InvalidParameter(_));
    assert_err!(uq.calibrate(&[f32::NEG_INFINITY], &[1]), Error::InvalidParameter(_));
    assert_err!(uq.calibrate(&x, &[3]), Error::ShapeMismatch(_));
    assert_err!(
        uq.with_granularity(Granularity::PerChannel { axis: 2 }).calibrate(&x, &[2, 2]),
        Error::InvalidParameter(_)
    );
    assert_err!(
        uq.with_granularity(Granularity::PerGroup { axis: 0, group_size: 0 }).calibrate(&x, &[4]),
        Error::InvalidParameter(_)
    );
    for p in [49.9, 100.1, f64::NAN, -1.0, f64::INFINITY] {
        assert_err!(uq.with_calibration(Calibration::Percentile(p)).calibrate(&x, &[4]), Error::InvalidParameter(_));
    }
    for grid in [0, Calibration::MAX_MSE_GRID + 1] {
        assert_err!(uq.with_calibration(Calibration::Mse { grid }).calibrate(&x, &[4]), Error::InvalidParameter(_));
    }
    let sym1 = UniformQuantizer::new(IntFormat::signed(1).unwrap(), Mapping::Symmetric);
    assert_err!(sym1.calibrate(&x, &[4]), Error::InvalidParameter(_));
    // Overflowing range.
    assert_err!(uq.calibrate(&[-3e38, 3e38], &[2]), Error::InvalidScale { .. });
    // quantize / quantize_into.
    assert_err!(uq.quantize::<u8>(&x, &[4]), Error::InvalidParameter(_));
    assert_err!(uq.quantize::<i8>(&[f32::NAN], &[1]), Error::InvalidParameter(_));
    assert_err!(uq.quantize_into(&x, &[4], &mut [0i8; 3]), Error::BufferTooSmall { .. });
    assert_err!(uq.quantize_into(&x, &[4], &mut [0u8; 4]), Error::InvalidParameter(_));
    assert_err!(uq.quantize_into(&x, &[usize::MAX, 3], &mut [0i8; 4]), Error::InvalidParameter(_));
    // Free functions.
    assert_err!(percentile(&[], 50.0), Error::InvalidParameter(_));
    assert_err!(percentile(&[1.0, f32::NAN], 50.0), Error::InvalidParameter(_));
    for p in [-0.1, 100.5, f64::NAN] {
        assert_err!(percentile(&x, p), Error::InvalidParameter(_));
    }
    assert_err!(min_max(&[]), Error::InvalidParameter(_));
    assert_err!(min_max(&[f32::INFINITY]), Error::InvalidParameter(_));
    assert_err!(Calibration::Percentile(10.0).validate(), Error::InvalidParameter(_));
    assert!(Calibration::mse().validate().is_ok());
}

#[test]
fn bad_metric_calls() {
    for f in [mse, sqnr_db, max_abs_error] {
        assert_err!(f(&[1.0], &[1.0, 2.0]), Error::ShapeMismatch(_));
        assert_err!(f(&[], &[]), Error::InvalidParameter(_));
        assert_err!(f(&[f32::NAN], &[1.0]), Error::InvalidParameter(_));
        assert_err!(f(&[1.0], &[f32::INFINITY]), Error::InvalidParameter(_));
    }
    assert_err!(ErrorStats::between(&[1.0], &[]), Error::ShapeMismatch(_));
    assert_err!(ErrorStats::between(&[], &[]), Error::InvalidParameter(_));
    assert_err!(ErrorStats::between(&[f32::NAN], &[0.0]), Error::InvalidParameter(_));
}

#[test]
fn reference_functions_do_not_panic_on_odd_arguments() {
    // The scalar definitions do not validate; they must still not panic.
    let _ = quantize_value(1.0, 0.0, 0, 5, -5, Rounding::HalfEven, 0.0);
    let _ = quantize_value(f32::NAN, f32::NAN, i32::MAX, i32::MIN, i32::MAX, Rounding::HalfAway, 0.5);
    let _ = quantize_value(1.5, 1.0, 0, -8, 7, Rounding::Stochastic { seed: 0 }, 2.0);
    let _ = dequantize_value(i32::MIN, f32::INFINITY, i32::MAX);
}
