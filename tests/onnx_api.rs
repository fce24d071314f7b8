//! Unit, bad-input and randomized tests of `qkern::onnx`, beside the ONNX vectors of
//! `onnx_conformance.rs`. Oracles here are written independently of the implementation:
//! plain index loops, the reference GEMM (`gemm_i64`) and requantization.

use qkern::onnx::{
    DequantizeAttrs, DynamicQuantized, QLinearInput, QuantSliceMut, QuantTensor, QuantType, QuantizeAttrs, TensorRef, dequantize_linear,
    dynamic_quantize_linear, matmul_integer, matmul_integer_in, matmul_output_shape, qlinear_matmul, qlinear_matmul_in, quantize_linear,
    quantize_output_type,
};
use qkern::{Context, Error, Int8, Isa, QuantizedMultiplier, RequantMode};
use qkern_kernels::reference::{gemm_i64, requantize, round_half_even_f32};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------
// Shared oracles

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Multi-index of linear index `t` in `shape`.
fn unravel(shape: &[usize], t: usize) -> Vec<usize> {
    strides(shape).iter().zip(shape).map(|(&st, &d)| (t / st) % d.max(1)).collect()
}

/// Linear index in `inp` (right-aligned, size-1 dims broadcast) of the out multi-index.
fn ravel_broadcast(out_idx: &[usize], inp: &[usize]) -> usize {
    let off = out_idx.len() - inp.len();
    inp.iter().zip(strides(inp)).enumerate().map(|(j, (&d, st))| if d == 1 { 0 } else { out_idx[off + j] * st }).sum()
}

/// The quantization-parameter index of element `idx` of x (shape `xs`), ONNX rules.
fn qparam_index(xs: &[usize], ss: &[usize], axis: i64, block: usize, idx: &[usize]) -> usize {
    if ss.iter().product::<usize>() == 1 && ss.len() <= 1 {
        return 0;
    }
    let ax = if axis < 0 { (axis + xs.len() as i64) as usize } else { axis as usize };
    if block == 0 {
        return idx[ax];
    }
    let mut pidx = idx.to_vec();
    pidx[ax] /= block;
    pidx.iter().zip(strides(ss)).map(|(i, s)| i * s).sum()
}

fn quant_oracle(x: f32, s: f32, z: i64, qt: QuantType) -> i64 {
    let (lo, hi) = qt.range();
    let r = round_half_even_f32(x / s);
    if r.is_nan() {
        return lo as i64;
    }
    (r as i64 + z).clamp(lo as i64, hi as i64)
}

fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// Types and views

#[test]
fn quant_type_codes_and_names() {
    let codes = [
        (QuantType::U8, 2),
        (QuantType::I8, 3),
        (QuantType::U16, 4),
        (QuantType::I16, 5),
        (QuantType::I32, 6),
        (QuantType::U4, 21),
        (QuantType::I4, 22),
        (QuantType::U2, 25),
        (QuantType::I2, 26),
    ];
    for (t, c) in codes {
        assert_eq!(t.onnx_dtype(), c);
        assert_eq!(QuantType::from_onnx_dtype(c), Some(t));
        assert_eq!(QuantType::from_onnx_name(t.name()), Some(t));
    }
    assert_eq!(QuantType::from_onnx_dtype(1), None); // FLOAT
    assert_eq!(QuantType::from_onnx_dtype(17), None); // FLOAT8E4M3FN
    assert_eq!(QuantType::from_onnx_name("FLOAT8E4M3FN"), None);
    assert_eq!(QuantType::I4.range(), (-8, 7));
    assert_eq!(QuantType::U2.range(), (0, 3));
    assert_eq!(QuantType::I2.range(), (-2, 1));
    assert_eq!(QuantType::U16.range(), (0, 65535));
}

#[test]
fn tensor_views() {
    let v = 3.5f32;
    let s = TensorRef::scalar(&v);
    assert_eq!(s.shape, &[] as &[usize]);
    assert_eq!(s.numel(), Some(1));
    assert_eq!(TensorRef::new(&[1u8; 6], &[2, 3]).numel(), Some(6));
    assert_eq!(TensorRef::<u8>::new(&[], &[usize::MAX, 2]).numel(), None);
    let d = [1i8, 2];
    let q = QuantTensor::I4(TensorRef::new(&d, &[2]));
    assert_eq!(q.qtype(), QuantType::I4);
    assert_eq!(q.shape(), &[2]);
    let mut o = [0u8; 3];
    let m = QuantSliceMut::U2(&mut o);
    assert_eq!((m.qtype(), m.len(), m.is_empty()), (QuantType::U2, 3, false));
    assert_eq!(QuantizeAttrs::default(), QuantizeAttrs { axis: 1, block_size: 0, saturate: true });
    assert_eq!(DequantizeAttrs::default(), DequantizeAttrs { axis: 1, block_size: 0 });
}

#[test]
fn output_type_rule() {
    assert_eq!(quantize_output_type(0, None).unwrap(), QuantType::U8);
    assert_eq!(quantize_output_type(5, None).unwrap(), QuantType::I16);
    assert_eq!(quantize_output_type(0, Some(QuantType::I4)).unwrap(), QuantType::I4);
    assert_eq!(quantize_output_type(22, Some(QuantType::I4)).unwrap(), QuantType::I4);
    assert!(matches!(err(quantize_output_type(3, Some(QuantType::U8))), Error::InvalidParameter(_)));
    assert!(matches!(err(quantize_output_type(1, None)), Error::Unsupported(_)));
    assert!(matches!(err(quantize_output_type(6, None)), Error::Unsupported(_)));
    assert!(matches!(err(quantize_output_type(999, None)), Error::Unsupported(_)));
    assert!(matches!(err(quantize_output_type(0, Some(QuantType::I32))), Error::InvalidParameter(_)));
}

// ---------------------------------------------------------------------------------------
// QuantizeLinear

fn q_u8(x: &[f32], s: f32, z: u8) -> Vec<u8> {
    let mut y = vec![0u8; x.len()];
    let shape = [x.len()];
    quantize_linear(
        TensorRef::new(x, &shape),
        TensorRef::scalar(&s),
        Some(QuantTensor::U8(TensorRef::scalar(&z))),
        &QuantizeAttrs::default(),
        QuantSliceMut::U8(&mut y),
    )
    .unwrap();
    y
}

#[test]
fn quantize_ties_saturation_nan() {
    // Ties round to even: 0.5→0, 1.5→2, 2.5→2, −0.5→0, −1.5→−2, −2.5→−2.
    assert_eq!(q_u8(&[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5], 1.0, 10), [10, 12, 12, 10, 8, 8, 14]);
    // Saturation at both ends, ±inf, and NaN → the minimum (what ORT and the reference do).
    assert_eq!(q_u8(&[300.0, -300.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e30, -1e30], 1.0, 128), [255, 0, 255, 0, 0, 255, 0]);
    // Every integer type saturates to its own range.
    let x = [-1e9f32, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 1e9, f32::NAN];
    let shape = [x.len()];
    let one = 1.0f32;
    for qt in [QuantType::U8, QuantType::I8, QuantType::U16, QuantType::I16, QuantType::U4, QuantType::I4, QuantType::U2, QuantType::I2] {
        let want: Vec<i64> = x.iter().map(|&v| quant_oracle(v, 1.0, 0, qt)).collect();
        let got: Vec<i64> = run_quantize(qt, TensorRef::new(&x, &shape), TensorRef::scalar(&one), None, &QuantizeAttrs::default()).unwrap();
        assert_eq!(got, want, "{}", qt.name());
        let (lo, hi) = qt.range();
        assert_eq!((got[0], got[8], got[9]), (lo as i64, hi as i64, lo as i64), "{}", qt.name());
    }
    // 16-bit: values far beyond ±2^24 still saturate exactly, zero point added exactly.
    assert_eq!(
        run_quantize(
            QuantType::U16,
            TensorRef::new(&[65534.6f32, 70000.0, 1.0], &[3]),
            TensorRef::scalar(&one),
            None,
            &QuantizeAttrs::default()
        )
        .unwrap(),
        [65535, 65535, 1]
    );
    let z = 40000u16;
    let zt = QuantTensor::U16(TensorRef::scalar(&z));
    assert_eq!(
        run_quantize(
            QuantType::U16,
            TensorRef::new(&[25535.0f32, 25535.5, -40000.0, -40001.0], &[4]),
            TensorRef::scalar(&one),
            Some(zt),
            &QuantizeAttrs::default()
        )
        .unwrap(),
        [65535, 65535, 0, 0]
    );
}

/// Runs quantize_linear for any output type, returning the values widened to i64.
fn run_quantize(
    qt: QuantType,
    x: TensorRef<'_, f32>,
    s: TensorRef<'_, f32>,
    z: Option<QuantTensor<'_>>,
    attrs: &QuantizeAttrs,
) -> Result<Vec<i64>, Error> {
    let n = x.data.len();
    Ok(match qt {
        QuantType::U8 | QuantType::U4 | QuantType::U2 => {
            let mut y = vec![0u8; n];
            let b = match qt {
                QuantType::U8 => QuantSliceMut::U8(&mut y),
                QuantType::U4 => QuantSliceMut::U4(&mut y),
                _ => QuantSliceMut::U2(&mut y),
            };
            quantize_linear(x, s, z, attrs, b)?;
            y.iter().map(|&v| v as i64).collect()
        }
        QuantType::I8 | QuantType::I4 | QuantType::I2 => {
            let mut y = vec![0i8; n];
            let b = match qt {
                QuantType::I8 => QuantSliceMut::I8(&mut y),
                QuantType::I4 => QuantSliceMut::I4(&mut y),
                _ => QuantSliceMut::I2(&mut y),
            };
            quantize_linear(x, s, z, attrs, b)?;
            y.iter().map(|&v| v as i64).collect()
        }
        QuantType::U16 => {
            let mut y = vec![0u16; n];
            quantize_linear(x, s, z, attrs, QuantSliceMut::U16(&mut y))?;
            y.iter().map(|&v| v as i64).collect()
        }
        QuantType::I16 => {
            let mut y = vec![0i16; n];
            quantize_linear(x, s, z, attrs, QuantSliceMut::I16(&mut y))?;
            y.iter().map(|&v| v as i64).collect()
        }
        QuantType::I32 => unreachable!(),
    })
}

#[test]
fn quantize_divides_rather_than_multiplying_by_the_reciprocal() {
    // Find inputs where x / s and x · (1/s) round to different integers; ONNX divides.
    let mut found = 0;
    for s in [3.0f32, 0.1, 0.7, 1.3, 0.05] {
        let inv = 1.0 / s;
        let xs: Vec<f32> = (0..20000)
            .map(|i| (i as f32 + 0.5) * s)
            .filter(|&x| round_half_even_f32(x / s) != round_half_even_f32(x * inv))
            .take(8)
            .collect();
        if xs.is_empty() {
            continue;
        }
        found += xs.len();
        let want: Vec<i64> = xs.iter().map(|&x| quant_oracle(x, s, 0, QuantType::I16)).collect();
        let shape = [xs.len()];
        let got =
            run_quantize(QuantType::I16, TensorRef::new(&xs, &shape), TensorRef::scalar(&s), None, &QuantizeAttrs::default()).unwrap();
        assert_eq!(got, want, "scale {s}");
        let recip: Vec<i64> = xs.iter().map(|&x| round_half_even_f32(x * inv) as i64).collect();
        assert_ne!(got, recip);
    }
    assert!(found > 0, "no distinguishing input found");
}

/// Random per-axis and blocked quantization against an index-by-index oracle.
#[test]
fn quantize_dequantize_granularities_random() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for iter in 0..300 {
        let rank = rng.random_range(1..=4);
        let shape: Vec<usize> = (0..rank).map(|_| rng.random_range(1..=5)).collect();
        let n: usize = shape.iter().product();
        let ax = rng.random_range(0..rank);
        let axis = if rng.random_bool(0.5) { ax as i64 } else { ax as i64 - rank as i64 };
        // 0: per tensor (scalar), 1: per tensor ([1]), 2: per axis, 3: blocked.
        let mode = iter % 4;
        let (sshape, block): (Vec<usize>, usize) = match mode {
            0 => (vec![], 0),
            1 => (vec![1], 0),
            2 => (vec![shape[ax]], 0),
            _ => {
                let b = rng.random_range(1..=shape[ax] + 1);
                let mut s = shape.clone();
                s[ax] = shape[ax].div_ceil(b);
                (s, b)
            }
        };
        if mode == 2 && sshape == [1] {
            continue; // that is the per-tensor form
        }
        let ns: usize = sshape.iter().product();
        let qt = [QuantType::U8, QuantType::I8, QuantType::U16, QuantType::I16, QuantType::U4, QuantType::I4, QuantType::U2, QuantType::I2]
            [iter % 8];
        let (lo, hi) = qt.range();
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-40.0f32..40.0)).collect();
        let s: Vec<f32> = (0..ns).map(|_| rng.random_range(0.05f32..3.0)).collect();
        let z: Vec<i64> = (0..ns).map(|_| rng.random_range(lo as i64..=hi as i64)).collect();
        let attrs = QuantizeAttrs { axis, block_size: block as i64, saturate: true };
        let (zu8, zi8, zu16, zi16): (Vec<u8>, Vec<i8>, Vec<u16>, Vec<i16>) = (
            z.iter().map(|&v| v as u8).collect(),
            z.iter().map(|&v| v as i8).collect(),
            z.iter().map(|&v| v as u16).collect(),
            z.iter().map(|&v| v as i16).collect(),
        );
        let zt = match qt {
            QuantType::U8 => QuantTensor::U8(TensorRef::new(&zu8, &sshape)),
            QuantType::U4 => QuantTensor::U4(TensorRef::new(&zu8, &sshape)),
            QuantType::U2 => QuantTensor::U2(TensorRef::new(&zu8, &sshape)),
            QuantType::I8 => QuantTensor::I8(TensorRef::new(&zi8, &sshape)),
            QuantType::I4 => QuantTensor::I4(TensorRef::new(&zi8, &sshape)),
            QuantType::I2 => QuantTensor::I2(TensorRef::new(&zi8, &sshape)),
            QuantType::U16 => QuantTensor::U16(TensorRef::new(&zu16, &sshape)),
            _ => QuantTensor::I16(TensorRef::new(&zi16, &sshape)),
        };
        let got = run_quantize(qt, TensorRef::new(&x, &shape), TensorRef::new(&s, &sshape), Some(zt), &attrs)
            .unwrap_or_else(|e| panic!("{shape:?} {sshape:?} axis {axis} block {block}: {e}"));
        let pidx: Vec<usize> = (0..n).map(|t| qparam_index(&shape, &sshape, axis, block, &unravel(&shape, t))).collect();
        let want: Vec<i64> = (0..n).map(|t| quant_oracle(x[t], s[pidx[t]], z[pidx[t]], qt)).collect();
        assert_eq!(got, want, "{} {shape:?} scale {sshape:?} axis {axis} block {block}", qt.name());

        // Dequantize the result back with the same parameters.
        let dattrs = DequantizeAttrs { axis, block_size: block as i64 };
        let (gu8, gi8, gu16, gi16): (Vec<u8>, Vec<i8>, Vec<u16>, Vec<i16>) = (
            got.iter().map(|&v| v as u8).collect(),
            got.iter().map(|&v| v as i8).collect(),
            got.iter().map(|&v| v as u16).collect(),
            got.iter().map(|&v| v as i16).collect(),
        );
        let xt = match qt {
            QuantType::U8 => QuantTensor::U8(TensorRef::new(&gu8, &shape)),
            QuantType::U4 => QuantTensor::U4(TensorRef::new(&gu8, &shape)),
            QuantType::U2 => QuantTensor::U2(TensorRef::new(&gu8, &shape)),
            QuantType::I8 => QuantTensor::I8(TensorRef::new(&gi8, &shape)),
            QuantType::I4 => QuantTensor::I4(TensorRef::new(&gi8, &shape)),
            QuantType::I2 => QuantTensor::I2(TensorRef::new(&gi8, &shape)),
            QuantType::U16 => QuantTensor::U16(TensorRef::new(&gu16, &shape)),
            _ => QuantTensor::I16(TensorRef::new(&gi16, &shape)),
        };
        let mut y = vec![0f32; n];
        dequantize_linear(xt, TensorRef::new(&s, &sshape), Some(zt), &dattrs, &mut y).unwrap();
        // f32·f32 is exact in f64, so one rounding of the f64 product is the f32 product.
        let want: Vec<u32> = (0..n).map(|t| (((got[t] - z[pidx[t]]) as f64 * s[pidx[t]] as f64) as f32).to_bits()).collect();
        let gotb: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
        assert_eq!(gotb, want, "dequantize {} {shape:?} scale {sshape:?} axis {axis} block {block}", qt.name());
    }
}

#[test]
fn quantize_blocked_remainder_block() {
    // x: 1×5 along axis 1 with block 2: blocks {0,1}, {2,3}, {4} (the last one short).
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    let s = [1.0f32, 2.0, 4.0];
    let got = run_quantize(
        QuantType::I8,
        TensorRef::new(&x, &[1, 5]),
        TensorRef::new(&s, &[1, 3]),
        None,
        &QuantizeAttrs { axis: 1, block_size: 2, saturate: true },
    )
    .unwrap();
    assert_eq!(got, [1, 2, 2, 2, 1]); // 3/2 = 1.5 → 2, 4/2 = 2, 5/4 = 1.25 → 1
    // block 3 would need ceil(5/3) = 2 blocks, not 3.
    let e = err(run_quantize(
        QuantType::I8,
        TensorRef::new(&x, &[1, 5]),
        TensorRef::new(&s, &[1, 3]),
        None,
        &QuantizeAttrs { axis: 1, block_size: 3, saturate: true },
    ));
    assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
}

#[test]
fn quantize_bad_inputs() {
    let x = [1.0f32; 6];
    let xs = [2usize, 3];
    let one = 1.0f32;
    let a = QuantizeAttrs::default();
    let run = |x: TensorRef<'_, f32>, s: TensorRef<'_, f32>, z: Option<QuantTensor<'_>>, attrs: &QuantizeAttrs, n: usize| {
        let mut y = vec![0u8; n];
        quantize_linear(x, s, z, attrs, QuantSliceMut::U8(&mut y))
    };
    let xt = TensorRef::new(&x, &xs);
    // Buffer and shape mismatches.
    assert!(matches!(err(run(TensorRef::new(&x[..5], &xs), TensorRef::scalar(&one), None, &a, 6)), Error::ShapeMismatch(_)));
    assert!(matches!(err(run(xt, TensorRef::scalar(&one), None, &a, 5)), Error::ShapeMismatch(_)));
    assert!(matches!(err(run(TensorRef::new(&[], &[usize::MAX, 2]), TensorRef::scalar(&one), None, &a, 0)), Error::InvalidParameter(_)));
    assert!(matches!(err(run(xt, TensorRef::new(&[1.0f32, 2.0], &[3]), None, &a, 6)), Error::ShapeMismatch(_)));
    // An empty x whose dimensions on one side of the axis overflow usize (the fuzzer's
    // find: the whole product is 0, the partial one is not representable).
    let huge = [0usize, 1 << 40, 1 << 40];
    let e = err(run(TensorRef::new(&[], &huge), TensorRef::new(&[], &[0]), None, &QuantizeAttrs { axis: 0, ..a }, 0));
    assert!(matches!(&e, Error::InvalidParameter(m) if m.contains("overflows")), "{e}");
    let e = err(dequantize_linear(
        QuantTensor::U8(TensorRef::new(&[], &huge)),
        TensorRef::new(&[], &[0]),
        None,
        &DequantizeAttrs { axis: 0, block_size: 0 },
        &mut [],
    ));
    assert!(matches!(&e, Error::InvalidParameter(m) if m.contains("overflows")), "{e}");
    // Empty x with a huge dimension: nothing to walk (the fuzzer's find: the loops over
    // 2^40 outer rows of nothing did not end).
    let wide = [1usize << 40, 0];
    assert!(run(TensorRef::new(&[], &wide), TensorRef::new(&[], &[0]), None, &QuantizeAttrs { axis: 1, ..a }, 0).is_ok());
    let blocked = QuantizeAttrs { axis: 0, block_size: 1 << 20, saturate: true };
    assert!(run(TensorRef::new(&[], &wide), TensorRef::new(&[], &[1 << 20, 0]), None, &blocked, 0).is_ok());
    // Scales: NaN, ±inf, 0, negative — per tensor and inside a per-axis vector.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -1.0] {
        assert!(matches!(err(run(xt, TensorRef::scalar(&bad), None, &a, 6)), Error::InvalidScale { .. }), "{bad}");
        let v = [1.0f32, bad, 1.0];
        assert!(matches!(err(run(xt, TensorRef::new(&v, &[3]), None, &a, 6)), Error::InvalidScale { .. }), "{bad}");
    }
    // Per-axis: wrong length, axis out of range (both signs), rank-2 scale without block_size.
    let s3 = [1.0f32; 3];
    let s2 = [1.0f32; 2];
    assert!(matches!(err(run(xt, TensorRef::new(&s2, &[2]), None, &a, 6)), Error::ShapeMismatch(_)));
    assert!(run(xt, TensorRef::new(&s2, &[2]), None, &QuantizeAttrs { axis: 0, ..a }, 6).is_ok());
    assert!(run(xt, TensorRef::new(&s2, &[2]), None, &QuantizeAttrs { axis: -2, ..a }, 6).is_ok());
    assert!(run(xt, TensorRef::new(&s3, &[3]), None, &QuantizeAttrs { axis: -1, ..a }, 6).is_ok());
    for axis in [2i64, -3, i64::MAX, i64::MIN] {
        assert!(
            matches!(err(run(xt, TensorRef::new(&s3, &[3]), None, &QuantizeAttrs { axis, ..a }, 6)), Error::InvalidParameter(_)),
            "{axis}"
        );
    }
    let s6 = [1.0f32; 6];
    assert!(matches!(err(run(xt, TensorRef::new(&s6, &[2, 3]), None, &a, 6)), Error::ShapeMismatch(_)));
    // Blocked: negative block size, wrong rank, wrong block count, wrong other dims.
    assert!(matches!(err(run(xt, TensorRef::new(&s3, &[3]), None, &QuantizeAttrs { block_size: -1, ..a }, 6)), Error::InvalidParameter(_)));
    let blk = QuantizeAttrs { axis: 1, block_size: 2, saturate: true };
    assert!(run(xt, TensorRef::new(&s2[..], &[1, 2]), None, &blk, 6).is_err());
    let s4 = [1.0f32; 4];
    assert!(run(xt, TensorRef::new(&s4, &[2, 2]), None, &blk, 6).is_ok());
    assert!(matches!(err(run(xt, TensorRef::new(&s4, &[4]), None, &blk, 6)), Error::ShapeMismatch(_)));
    assert!(matches!(err(run(xt, TensorRef::new(&s6, &[2, 3]), None, &blk, 6)), Error::ShapeMismatch(_)));
    assert!(matches!(err(run(xt, TensorRef::new(&s4, &[1, 2, 2]), None, &blk, 6)), Error::ShapeMismatch(_)));
    // Zero point: type differing from the output, shape differing from the scale, value
    // outside a sub-byte range, buffer mismatch.
    let zi8 = 0i8;
    assert!(matches!(
        err(run(xt, TensorRef::scalar(&one), Some(QuantTensor::I8(TensorRef::scalar(&zi8))), &a, 6)),
        Error::InvalidParameter(_)
    ));
    let z3 = [0u8; 3];
    assert!(matches!(
        err(run(xt, TensorRef::scalar(&one), Some(QuantTensor::U8(TensorRef::new(&z3, &[3]))), &a, 6)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(run(xt, TensorRef::new(&s3, &[3]), Some(QuantTensor::U8(TensorRef::new(&z3[..2], &[2]))), &QuantizeAttrs { axis: 1, ..a }, 6)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(run(xt, TensorRef::new(&s3, &[3]), Some(QuantTensor::U8(TensorRef::new(&z3[..2], &[3]))), &QuantizeAttrs { axis: 1, ..a }, 6)),
        Error::ShapeMismatch(_)
    ));
    // A scalar scale with a [1] zero point (and vice versa) is fine: both per tensor.
    let z1 = [3u8];
    assert!(run(xt, TensorRef::scalar(&one), Some(QuantTensor::U8(TensorRef::new(&z1, &[1]))), &a, 6).is_ok());
    let mut y4 = [0u8; 6];
    let z16 = 16u8;
    let e =
        err(quantize_linear(xt, TensorRef::scalar(&one), Some(QuantTensor::U4(TensorRef::scalar(&z16))), &a, QuantSliceMut::U4(&mut y4)));
    assert!(matches!(e, Error::ZeroPointOutOfRange { value: 16, min: 0, max: 15, .. }), "{e}");
    let mut yi2 = [0i8; 6];
    let zm3 = -3i8;
    let e =
        err(quantize_linear(xt, TensorRef::scalar(&one), Some(QuantTensor::I2(TensorRef::scalar(&zm3))), &a, QuantSliceMut::I2(&mut yi2)));
    assert!(matches!(e, Error::ZeroPointOutOfRange { value: -3, min: -2, max: 1, .. }), "{e}");
    // saturate = false changes nothing for integer outputs.
    assert_eq!(
        run_quantize(
            QuantType::I8,
            TensorRef::new(&[1000.0f32], &[1]),
            TensorRef::scalar(&one),
            None,
            &QuantizeAttrs { saturate: false, ..a }
        )
        .unwrap(),
        [127]
    );
    // Axis is ignored for per-tensor scales (ONNX's test_quantizelinear has a 1-D x and axis 1).
    assert!(run(TensorRef::new(&x, &[6]), TensorRef::scalar(&one), None, &QuantizeAttrs { axis: 5, ..a }, 6).is_ok());
    // Empty tensors are fine.
    assert!(run(TensorRef::new(&[], &[0, 3]), TensorRef::scalar(&one), None, &a, 0).is_ok());
    assert!(run(TensorRef::new(&[], &[2, 0]), TensorRef::new(&s2, &[2]), None, &QuantizeAttrs { axis: 0, ..a }, 0).is_ok());
}

// ---------------------------------------------------------------------------------------
// DequantizeLinear

#[test]
fn dequantize_values_and_bad_inputs() {
    let a = DequantizeAttrs::default();
    let s = 0.5f32;
    let z = 128u8;
    let x = [0u8, 127, 128, 255];
    let mut y = [0f32; 4];
    dequantize_linear(
        QuantTensor::U8(TensorRef::new(&x, &[4])),
        TensorRef::scalar(&s),
        Some(QuantTensor::U8(TensorRef::scalar(&z))),
        &a,
        &mut y,
    )
    .unwrap();
    assert_eq!(y, [-64.0, -0.5, 0.0, 63.5]);
    // Without a zero point.
    dequantize_linear(QuantTensor::U8(TensorRef::new(&x, &[4])), TensorRef::scalar(&s), None, &a, &mut y).unwrap();
    assert_eq!(y, [0.0, 63.5, 64.0, 127.5]);
    // i32: no zero point (or an all-zero one); values beyond 2^24 round once to f32.
    let xi = [16_777_217i32, -16_777_219, i32::MAX, i32::MIN];
    let one = 1.0f32;
    dequantize_linear(QuantTensor::I32(TensorRef::new(&xi, &[4])), TensorRef::scalar(&one), None, &a, &mut y).unwrap();
    assert_eq!(y, [16_777_216.0, -16_777_220.0, 2_147_483_648.0, -2_147_483_648.0]);
    let z0 = 0i32;
    assert!(
        dequantize_linear(
            QuantTensor::I32(TensorRef::new(&xi, &[4])),
            TensorRef::scalar(&one),
            Some(QuantTensor::I32(TensorRef::scalar(&z0))),
            &a,
            &mut y
        )
        .is_ok()
    );
    let z5 = 5i32;
    let e = err(dequantize_linear(
        QuantTensor::I32(TensorRef::new(&xi, &[4])),
        TensorRef::scalar(&one),
        Some(QuantTensor::I32(TensorRef::scalar(&z5))),
        &a,
        &mut y,
    ));
    assert!(matches!(e, Error::InvalidParameter(_)), "{e}");
    // int4: stored values outside [−8, 7] are errors, as are zero points.
    let x4 = [-8i8, 7, 0, 8];
    let e = err(dequantize_linear(QuantTensor::I4(TensorRef::new(&x4, &[4])), TensorRef::scalar(&one), None, &a, &mut y));
    assert!(matches!(e, Error::InvalidParameter(_)), "{e}");
    let x4 = [-8i8, 7, 0, 1];
    dequantize_linear(QuantTensor::I4(TensorRef::new(&x4, &[4])), TensorRef::scalar(&one), None, &a, &mut y).unwrap();
    assert_eq!(y, [-8.0, 7.0, 0.0, 1.0]);
    let zbad = -9i8;
    assert!(matches!(
        err(dequantize_linear(
            QuantTensor::I4(TensorRef::new(&x4, &[4])),
            TensorRef::scalar(&one),
            Some(QuantTensor::I4(TensorRef::scalar(&zbad))),
            &a,
            &mut y
        )),
        Error::ZeroPointOutOfRange { .. }
    ));
    let xu2 = [0u8, 1, 2, 4];
    assert!(matches!(
        err(dequantize_linear(QuantTensor::U2(TensorRef::new(&xu2, &[4])), TensorRef::scalar(&one), None, &a, &mut y)),
        Error::InvalidParameter(_)
    ));
    // Zero-point type must equal x's type (here the same storage, different ONNX type).
    let zu8 = 1u8;
    let e = err(dequantize_linear(
        QuantTensor::U4(TensorRef::new(&[1u8, 2, 3, 4], &[4])),
        TensorRef::scalar(&one),
        Some(QuantTensor::U8(TensorRef::scalar(&zu8))),
        &a,
        &mut y,
    ));
    assert!(matches!(e, Error::InvalidParameter(_)), "{e}");
    // Output size, scale values, scale shape.
    let mut y3 = [0f32; 3];
    assert!(matches!(
        err(dequantize_linear(QuantTensor::U8(TensorRef::new(&x, &[4])), TensorRef::scalar(&one), None, &a, &mut y3)),
        Error::ShapeMismatch(_)
    ));
    let bad = f32::NAN;
    assert!(matches!(
        err(dequantize_linear(QuantTensor::U8(TensorRef::new(&x, &[4])), TensorRef::scalar(&bad), None, &a, &mut y)),
        Error::InvalidScale { .. }
    ));
    let s2 = [1.0f32, 2.0];
    assert!(matches!(
        err(dequantize_linear(
            QuantTensor::U8(TensorRef::new(&x, &[2, 2])),
            TensorRef::new(&s2, &[2]),
            None,
            &DequantizeAttrs { axis: 2, block_size: 0 },
            &mut y
        )),
        Error::InvalidParameter(_)
    ));
    assert!(matches!(
        err(dequantize_linear(
            QuantTensor::U8(TensorRef::new(&x, &[4, 1])),
            TensorRef::new(&s2, &[2]),
            None,
            &DequantizeAttrs { axis: 0, block_size: 0 },
            &mut y
        )),
        Error::ShapeMismatch(_)
    ));
    // Per axis on axis 0 of a 2×2: rows scaled 1 and 2.
    dequantize_linear(
        QuantTensor::U8(TensorRef::new(&x, &[2, 2])),
        TensorRef::new(&s2, &[2]),
        None,
        &DequantizeAttrs { axis: 0, block_size: 0 },
        &mut y,
    )
    .unwrap();
    assert_eq!(y, [0.0, 127.0, 256.0, 510.0]);
}

// ---------------------------------------------------------------------------------------
// DynamicQuantizeLinear

#[test]
fn dynamic_quantize_documented_example() {
    // The example of the ONNX operator documentation.
    let x = [0.0f32, 2.0, -3.0, -2.5, 1.34, 0.5];
    let mut y = [0u8; 6];
    let q = dynamic_quantize_linear(&x, &mut y).unwrap();
    assert_eq!(q.scale, 5.0f32 / 255.0f32);
    assert_eq!(q.zero_point, 153);
    assert_eq!(y, [153, 255, 0, 26, 221, 179]);
}

#[test]
fn dynamic_quantize_edges_and_bad_inputs() {
    let mut y = [7u8; 3];
    // All zeros: range empty, scale defined as 1.
    assert_eq!(dynamic_quantize_linear(&[0.0, -0.0, 0.0], &mut y).unwrap(), DynamicQuantized { scale: 1.0, zero_point: 0 });
    assert_eq!(y, [0, 0, 0]);
    // Empty input: the same parameters, nothing written.
    assert_eq!(dynamic_quantize_linear(&[], &mut []).unwrap(), DynamicQuantized { scale: 1.0, zero_point: 0 });
    // All positive: zero point 0, max maps to 255; all negative: zero point 255.
    let q = dynamic_quantize_linear(&[1.0, 2.0, 51.0], &mut y).unwrap();
    assert_eq!((q.scale, q.zero_point, y), (51.0f32 / 255.0, 0, [5, 10, 255]));
    let q = dynamic_quantize_linear(&[-1.0, -2.0, -51.0], &mut y).unwrap();
    assert_eq!((q.scale, q.zero_point, y), (51.0f32 / 255.0, 255, [250, 245, 0]));
    // Errors: NaN, ±inf, a range overflowing f32, a scale underflowing to 0, size mismatch.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert!(matches!(err(dynamic_quantize_linear(&[1.0, bad, 2.0], &mut y)), Error::InvalidParameter(_)), "{bad}");
    }
    assert!(matches!(err(dynamic_quantize_linear(&[f32::MAX, -f32::MAX, 0.0], &mut y)), Error::InvalidParameter(_)));
    assert!(matches!(err(dynamic_quantize_linear(&[f32::from_bits(1), 0.0, 0.0], &mut y)), Error::InvalidParameter(_)));
    assert!(matches!(err(dynamic_quantize_linear(&[1.0, 2.0], &mut y)), Error::ShapeMismatch(_)));
}

#[test]
fn dynamic_quantize_random_against_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..200 {
        let n = rng.random_range(1..50);
        let lo = rng.random_range(-100.0f32..50.0);
        let hi = lo + rng.random_range(0.001f32..100.0);
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(lo..=hi)).collect();
        let mut y = vec![0u8; n];
        let q = dynamic_quantize_linear(&x, &mut y).unwrap();
        let mx = x.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
        let mn = x.iter().fold(0.0f32, |m, &v| if v < m { v } else { m });
        let scale = (mx - mn) / 255.0;
        let zp = round_half_even_f32((0.0 - mn / scale).clamp(0.0, 255.0));
        assert_eq!(q.scale.to_bits(), scale.to_bits());
        assert_eq!(q.zero_point as f32, zp);
        let want: Vec<u8> = x.iter().map(|&v| (round_half_even_f32(v / scale) + zp).clamp(0.0, 255.0) as u8).collect();
        assert_eq!(y, want);
    }
}

// ---------------------------------------------------------------------------------------
// Matrix products

#[test]
fn matmul_shapes() {
    assert_eq!(matmul_output_shape(&[2, 3], &[3, 4]).unwrap(), [2, 4]);
    assert_eq!(matmul_output_shape(&[3], &[3, 4]).unwrap(), [4]);
    assert_eq!(matmul_output_shape(&[2, 3], &[3]).unwrap(), [2]);
    assert_eq!(matmul_output_shape(&[3], &[3]).unwrap(), [] as [usize; 0]);
    assert_eq!(matmul_output_shape(&[5, 1, 2, 3], &[4, 3, 6]).unwrap(), [5, 4, 2, 6]);
    assert_eq!(matmul_output_shape(&[7, 2, 3], &[3, 6]).unwrap(), [7, 2, 6]);
    assert_eq!(matmul_output_shape(&[0, 2, 3], &[1, 3, 6]).unwrap(), [0, 2, 6]);
    assert!(matches!(err(matmul_output_shape(&[], &[3, 4])), Error::ShapeMismatch(_)));
    assert!(matches!(err(matmul_output_shape(&[2, 3], &[])), Error::ShapeMismatch(_)));
    assert!(matches!(err(matmul_output_shape(&[2, 3], &[4, 5])), Error::ShapeMismatch(_)));
    assert!(matches!(err(matmul_output_shape(&[2, 2, 3], &[3, 3, 4])), Error::ShapeMismatch(_)));
    assert!(matches!(err(matmul_output_shape(&[usize::MAX, 1, 1, 3], &[2, 3, 6])), Error::InvalidParameter(_)));
}

/// A random tensor of `T` values.
fn rand_vec<T: Int8>(rng: &mut ChaCha8Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::saturate_from(rng.random_range(T::MIN..=T::MAX))).collect()
}

/// Reads a matmul parameter (ONNX shapes) for output batch multi-index `bidx`, row or
/// column `i`.
fn param_at<T: Copy>(data: &[T], shape: &[usize], rows: bool, bidx: &[usize], i: usize) -> T {
    if shape.iter().product::<usize>() == 1 && shape.len() <= 1 {
        return data[0];
    }
    if shape.len() == 1 {
        return data[i];
    }
    let r = shape.len();
    let b = ravel_broadcast(bidx, &shape[..r - 2]);
    let (vd, per_batch) = if rows { (shape[r - 2], shape[r - 2]) } else { (shape[r - 1], shape[r - 1]) };
    data[b * per_batch + if vd == 1 { 0 } else { i }]
}

/// Everything of one QLinearMatMul call.
struct QlmCase<A, B, Y> {
    a: Vec<A>,
    ash: Vec<usize>,
    sa: Vec<f32>,
    za: Vec<A>,
    pash: Vec<usize>,
    b: Vec<B>,
    bsh: Vec<usize>,
    sb: Vec<f32>,
    zb: Vec<B>,
    pbsh: Vec<usize>,
    sy: Vec<f32>,
    zy: Vec<Y>,
    pysh: Vec<usize>,
}

/// Parameter shapes: 0 per tensor (scalar), 1 per tensor ([1]), 2 vector, 3 batched.
fn param_shape(kind: usize, rows: bool, len: usize, batch: &[usize]) -> Vec<usize> {
    match kind {
        0 => vec![],
        1 => vec![1],
        2 => vec![len],
        _ => {
            let mut s = batch.to_vec();
            if rows {
                s.extend([len, 1]);
            } else {
                s.extend([1, len]);
            }
            s
        }
    }
}

fn matrix_dims(ash: &[usize], bsh: &[usize]) -> (usize, usize, usize) {
    let m = if ash.len() == 1 { 1 } else { ash[ash.len() - 2] };
    let k = ash[ash.len() - 1];
    let n = if bsh.len() == 1 { 1 } else { bsh[bsh.len() - 1] };
    (m, k, n)
}

fn batch_of(sh: &[usize]) -> &[usize] {
    if sh.len() <= 2 { &[] } else { &sh[..sh.len() - 2] }
}

/// The oracle: per output row, `gemm_i64` with that row's zero point, then the reference
/// `Fp32` requantization with the ONNX multiplier `(sa·sb)/sy` in f32.
fn qlm_oracle<A: Int8, B: Int8, Y: Int8>(c: &QlmCase<A, B, Y>) -> Vec<Y> {
    let out_shape = matmul_output_shape(&c.ash, &c.bsh).unwrap();
    let (m, k, n) = matrix_dims(&c.ash, &c.bsh);
    let (ab, bb) = (batch_of(&c.ash), batch_of(&c.bsh));
    let ob: Vec<usize> = out_shape[..out_shape.len() - (c.ash.len() > 1) as usize - (c.bsh.len() > 1) as usize].to_vec();
    let batches: usize = ob.iter().product();
    let mut y = Vec::with_capacity(batches * m * n);
    for t in 0..batches {
        let bidx = unravel(&ob, t);
        let (ai, bi) = (ravel_broadcast(&bidx, ab), ravel_broadcast(&bidx, bb));
        let bm = &c.b[bi * k * n..(bi + 1) * k * n];
        let zb: Vec<i32> = (0..n).map(|j| param_at(&c.zb, &c.pbsh, false, &bidx, j).to_i32()).collect();
        for i in 0..m {
            let arow = &c.a[(ai * m + i) * k..(ai * m + i + 1) * k];
            let za = param_at(&c.za, &c.pash, true, &bidx, i).to_i32();
            let mut acc = vec![0i64; n];
            gemm_i64(1, n, k, arow, k, za, bm, n, &zb, &mut acc, n);
            let (sa, sy, zy) = (
                param_at(&c.sa, &c.pash, true, &bidx, i),
                param_at(&c.sy, &c.pysh, true, &bidx, i),
                param_at(&c.zy, &c.pysh, true, &bidx, i),
            );
            for (j, &acc) in acc.iter().enumerate() {
                let mult = (sa * param_at(&c.sb, &c.pbsh, false, &bidx, j)) / sy;
                let q =
                    requantize(acc, RequantMode::Fp32, mult, QuantizedMultiplier { multiplier: 0, shift: 0 }, zy.to_i32(), Y::MIN, Y::MAX);
                y.push(Y::saturate_from(q));
            }
        }
    }
    y
}

fn random_shapes(rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let (m, k, n) = (rng.random_range(1..=9), rng.random_range(1..=40), rng.random_range(1..=37));
    match rng.random_range(0..6) {
        0 => (vec![m, k], vec![k, n]),
        1 => (vec![2, m, k], vec![2, k, n]),
        2 => (vec![3, m, k], vec![k, n]),
        3 => (vec![2, 1, m, k], vec![3, k, n]),
        4 => (vec![m, k], vec![2, k, n]),
        _ => {
            if rng.random_bool(0.5) {
                (vec![k], vec![2, k, n])
            } else {
                (vec![2, m, k], vec![k])
            }
        }
    }
}

fn random_qlm_case<A: Int8, B: Int8, Y: Int8>(rng: &mut ChaCha8Rng, b_per_column: bool, rows_kind: usize) -> QlmCase<A, B, Y> {
    let (ash, bsh) = random_shapes(rng);
    let (m, _, n) = matrix_dims(&ash, &bsh);
    let out = matmul_output_shape(&ash, &bsh).unwrap();
    let ob = out[..out.len() - (ash.len() > 1) as usize - (bsh.len() > 1) as usize].to_vec();
    // Batched parameter shapes broadcast over a suffix of the output batch.
    let pb: Vec<usize> = if ob.is_empty() { vec![] } else { ob[ob.len() - 1..].to_vec() };
    let pash = param_shape(if m == 1 && rows_kind == 2 { 0 } else { rows_kind }, true, m, &pb);
    let bkind = if b_per_column {
        if n == 1 {
            0
        } else if rng.random_bool(0.3) {
            3
        } else {
            2
        }
    } else {
        rng.random_range(0..=1)
    };
    let pbsh = param_shape(bkind, false, n, &pb);
    let pysh = param_shape(if m == 1 && rows_kind == 2 { 0 } else { rows_kind }, true, m, &pb);
    let na: usize = ash.iter().product();
    let nb: usize = bsh.iter().product();
    let (npa, npb, npy) = (pash.iter().product::<usize>(), pbsh.iter().product::<usize>(), pysh.iter().product::<usize>());
    // Scales spread so that some outputs saturate and some do not.
    let scale = |rng: &mut ChaCha8Rng| rng.random_range(0.001f32..0.2);
    QlmCase {
        a: rand_vec(rng, na),
        sa: (0..npa).map(|_| scale(rng)).collect(),
        za: rand_vec(rng, npa),
        ash,
        pash,
        b: rand_vec(rng, nb),
        sb: (0..npb).map(|_| scale(rng)).collect(),
        zb: rand_vec(rng, npb),
        bsh,
        pbsh,
        sy: (0..npy).map(|_| rng.random_range(0.01f32..2.0)).collect(),
        zy: rand_vec(rng, npy),
        pysh,
    }
}

fn run_qlm<A: Int8, B: Int8, Y: Int8>(ctx: Option<&Context>, c: &QlmCase<A, B, Y>) -> Result<Vec<Y>, Error> {
    let out = matmul_output_shape(&c.ash, &c.bsh)?;
    let mut y = vec![Y::default(); out.iter().product()];
    let a = QLinearInput::new(TensorRef::new(&c.a, &c.ash), TensorRef::new(&c.sa, &c.pash), TensorRef::new(&c.za, &c.pash));
    let b = QLinearInput::new(TensorRef::new(&c.b, &c.bsh), TensorRef::new(&c.sb, &c.pbsh), TensorRef::new(&c.zb, &c.pbsh));
    let (sy, zy) = (TensorRef::new(&c.sy, &c.pysh), TensorRef::new(&c.zy, &c.pysh));
    match ctx {
        Some(ctx) => qlinear_matmul_in(ctx, a, b, sy, zy, &mut y)?,
        None => qlinear_matmul(a, b, sy, zy, &mut y)?,
    }
    Ok(y)
}

fn qlm_random<A: Int8, B: Int8, Y: Int8>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let single = Context::new().unwrap().with_threads(1).unwrap();
    for iter in 0..60 {
        let per_col = iter % 2 == 1;
        // Per tensor for A and Y most of the time, per row (1-D or batched) otherwise.
        let rows_kind = [0, 1, 0, 2, 1, 3][iter % 6];
        let c = random_qlm_case::<A, B, Y>(&mut rng, per_col, rows_kind);
        let want = qlm_oracle(&c);
        let ctx = if iter % 3 == 0 { Some(&single) } else { None };
        let got =
            run_qlm(ctx, &c).unwrap_or_else(|e| panic!("a {:?} b {:?} pa {:?} pb {:?} py {:?}: {e}", c.ash, c.bsh, c.pash, c.pbsh, c.pysh));
        assert_eq!(
            got,
            want,
            "{}×{}→{}: a {:?} b {:?} params a {:?} b {:?} y {:?}",
            A::NAME,
            B::NAME,
            Y::NAME,
            c.ash,
            c.bsh,
            c.pash,
            c.pbsh,
            c.pysh
        );
    }
}

#[test]
fn qlinear_matmul_random_u8_u8() {
    qlm_random::<u8, u8, u8>(1);
    qlm_random::<u8, u8, i8>(2);
}
#[test]
fn qlinear_matmul_random_u8_i8() {
    qlm_random::<u8, i8, u8>(3);
    qlm_random::<u8, i8, i8>(4);
}
#[test]
fn qlinear_matmul_random_i8_u8() {
    qlm_random::<i8, u8, i8>(5);
    qlm_random::<i8, u8, u8>(6);
}
#[test]
fn qlinear_matmul_random_i8_i8() {
    qlm_random::<i8, i8, i8>(7);
    qlm_random::<i8, i8, u8>(8);
}

/// Every available ISA's context gives the same bits.
#[test]
fn qlinear_matmul_every_isa() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let c = random_qlm_case::<u8, i8, u8>(&mut rng, true, 2);
    let want = qlm_oracle(&c);
    for isa in Isa::ALL {
        match Context::for_isa(isa) {
            Ok(ctx) => assert_eq!(run_qlm(Some(&ctx), &c).unwrap(), want, "{}", isa.name()),
            Err(_) => println!("skip {}: not on this CPU", isa.name()),
        }
    }
}

#[test]
fn qlinear_matmul_k_zero_and_empty() {
    // K = 0: every accumulator is 0, so y = y_zero_point (per row here).
    let (sa, sb) = (0.5f32, 0.25f32);
    let (za, zb) = (3u8, 4i8);
    let sy = [1.0f32, 2.0];
    let zy = [7i8, -9];
    let mut y = [0i8; 6];
    qlinear_matmul(
        QLinearInput::new(TensorRef::new(&[] as &[u8], &[2, 0]), TensorRef::scalar(&sa), TensorRef::scalar(&za)),
        QLinearInput::new(TensorRef::new(&[] as &[i8], &[0, 3]), TensorRef::scalar(&sb), TensorRef::scalar(&zb)),
        TensorRef::new(&sy, &[2]),
        TensorRef::new(&zy, &[2]),
        &mut y,
    )
    .unwrap();
    assert_eq!(y, [7, 7, 7, -9, -9, -9]);
    // M = 0: nothing to do.
    let mut e: [u8; 0] = [];
    let zyu = 0u8;
    qlinear_matmul(
        QLinearInput::new(TensorRef::new(&[] as &[u8], &[0, 2]), TensorRef::scalar(&sa), TensorRef::scalar(&za)),
        QLinearInput::new(TensorRef::new(&[1i8, 2, 3, 4, 5, 6], &[2, 3]), TensorRef::scalar(&sb), TensorRef::scalar(&zb)),
        TensorRef::scalar(&1.0f32),
        TensorRef::scalar(&zyu),
        &mut e,
    )
    .unwrap();
}

#[test]
fn qlinear_matmul_bad_inputs() {
    let a = [1u8; 6];
    let b = [1i8; 12];
    let (one, za, zb, zy) = (1.0f32, 0u8, 0i8, 0u8);
    let (ash, bsh) = ([2usize, 3], [3usize, 4]);
    type R = Result<(), Error>;
    let call = |a: QLinearInput<'_, u8>, b: QLinearInput<'_, i8>, sy: TensorRef<'_, f32>, zyt: TensorRef<'_, u8>, n: usize| -> R {
        let mut y = vec![0u8; n];
        qlinear_matmul(a, b, sy, zyt, &mut y)
    };
    let ok_a = QLinearInput::new(TensorRef::new(&a, &ash), TensorRef::scalar(&one), TensorRef::scalar(&za));
    let ok_b = QLinearInput::new(TensorRef::new(&b, &bsh), TensorRef::scalar(&one), TensorRef::scalar(&zb));
    let sy = TensorRef::scalar(&one);
    let zyt = TensorRef::scalar(&zy);
    assert!(call(ok_a, ok_b, sy, zyt, 8).is_ok());
    // Output size, operand buffers, K mismatch, rank 0.
    assert!(matches!(err(call(ok_a, ok_b, sy, zyt, 7)), Error::ShapeMismatch(_)));
    assert!(matches!(err(call(QLinearInput { tensor: TensorRef::new(&a[..5], &ash), ..ok_a }, ok_b, sy, zyt, 8)), Error::ShapeMismatch(_)));
    assert!(matches!(err(call(ok_a, QLinearInput { tensor: TensorRef::new(&b, &[4, 3]), ..ok_b }, sy, zyt, 6)), Error::ShapeMismatch(_)));
    assert!(matches!(err(call(QLinearInput { tensor: TensorRef::new(&a[..1], &[]), ..ok_a }, ok_b, sy, zyt, 4)), Error::ShapeMismatch(_)));
    // Scales: NaN, 0, negative, inf for each of a, b, y.
    static BAD: [f32; 4] = [f32::NAN, 0.0, -1.0, f32::INFINITY];
    for bad in &BAD {
        assert!(
            matches!(err(call(QLinearInput { scale: TensorRef::scalar(bad), ..ok_a }, ok_b, sy, zyt, 8)), Error::InvalidScale { .. }),
            "{bad}"
        );
        assert!(
            matches!(err(call(ok_a, QLinearInput { scale: TensorRef::scalar(bad), ..ok_b }, sy, zyt, 8)), Error::InvalidScale { .. }),
            "{bad}"
        );
        assert!(matches!(err(call(ok_a, ok_b, TensorRef::scalar(bad), zyt, 8)), Error::InvalidScale { .. }), "{bad}");
    }
    // A multiplier (sa·sb)/sy that underflows to 0 in f32.
    let tiny = 1e-30f32;
    assert!(matches!(
        err(call(
            QLinearInput { scale: TensorRef::scalar(&tiny), ..ok_a },
            QLinearInput { scale: TensorRef::scalar(&tiny), ..ok_b },
            sy,
            zyt,
            8
        )),
        Error::InvalidScale { .. }
    ));
    // Parameter shapes: wrong per-row/per-column length, wrong orientation, scale and
    // zero point shapes differing.
    let s3 = [1.0f32; 3];
    let z3 = [0i8; 3];
    assert!(matches!(err(call(QLinearInput { scale: TensorRef::new(&s3, &[3]), ..ok_a }, ok_b, sy, zyt, 8)), Error::ShapeMismatch(_)));
    assert!(matches!(
        err(call(ok_a, QLinearInput { scale: TensorRef::new(&s3, &[3]), zero_point: TensorRef::new(&z3, &[3]), ..ok_b }, sy, zyt, 8)),
        Error::ShapeMismatch(_)
    ));
    let s2 = [1.0f32; 2];
    let z2 = [0u8; 2];
    assert!(matches!(
        err(call(QLinearInput { scale: TensorRef::new(&s2, &[1, 2]), zero_point: TensorRef::new(&z2, &[1, 2]), ..ok_a }, ok_b, sy, zyt, 8)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(call(QLinearInput { scale: TensorRef::new(&s2, &[2]), zero_point: TensorRef::scalar(&za), ..ok_a }, ok_b, sy, zyt, 8)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(err(call(ok_a, ok_b, TensorRef::new(&s2, &[2]), TensorRef::new(&z2, &[2, 1]), 8)), Error::ShapeMismatch(_)));
    // Per-row A with a batch dimension that does not broadcast to the output's.
    let s6 = [1.0f32; 6];
    let z6 = [0u8; 6];
    assert!(matches!(
        err(call(
            QLinearInput { scale: TensorRef::new(&s6, &[3, 2, 1]), zero_point: TensorRef::new(&z6, &[3, 2, 1]), ..ok_a },
            ok_b,
            sy,
            zyt,
            8
        )),
        Error::ShapeMismatch(_)
    ));
    // Fine: per-row A as [2, 1], per-column B as [1, 4].
    let s4 = [1.0f32; 4];
    let z4 = [0i8; 4];
    assert!(
        call(
            QLinearInput { scale: TensorRef::new(&s2, &[2, 1]), zero_point: TensorRef::new(&z2, &[2, 1]), ..ok_a },
            QLinearInput { scale: TensorRef::new(&s4, &[1, 4]), zero_point: TensorRef::new(&z4, &[1, 4]), ..ok_b },
            sy,
            zyt,
            8
        )
        .is_ok()
    );
}

// MatMulInteger

fn mmi_oracle<A: Int8, B: Int8>(
    a: &[A],
    ash: &[usize],
    za: Option<(&[A], &[usize])>,
    b: &[B],
    bsh: &[usize],
    zb: Option<(&[B], &[usize])>,
) -> Vec<i32> {
    let out_shape = matmul_output_shape(ash, bsh).unwrap();
    let (m, k, n) = matrix_dims(ash, bsh);
    let (ab, bb) = (batch_of(ash), batch_of(bsh));
    let ob: Vec<usize> = out_shape[..out_shape.len() - (ash.len() > 1) as usize - (bsh.len() > 1) as usize].to_vec();
    let mut y = vec![];
    for t in 0..ob.iter().product() {
        let bidx = unravel(&ob, t);
        let (ai, bi) = (ravel_broadcast(&bidx, ab), ravel_broadcast(&bidx, bb));
        let zbv: Vec<i32> = (0..n).map(|j| zb.map_or(0, |(d, s)| param_at(d, s, false, &bidx, j).to_i32())).collect();
        for i in 0..m {
            let zav = za.map_or(0, |(d, s)| param_at(d, s, true, &bidx, i).to_i32());
            let mut acc = vec![0i64; n];
            gemm_i64(1, n, k, &a[(ai * m + i) * k..], k, zav, &b[bi * k * n..], n, &zbv, &mut acc, n);
            y.extend(acc.iter().map(|&v| i32::try_from(v).unwrap()));
        }
    }
    y
}

fn mmi_random<A: Int8, B: Int8>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for iter in 0..60 {
        let (ash, bsh) = random_shapes(&mut rng);
        let (m, _, n) = matrix_dims(&ash, &bsh);
        let out = matmul_output_shape(&ash, &bsh).unwrap();
        let ob = out[..out.len() - (ash.len() > 1) as usize - (bsh.len() > 1) as usize].to_vec();
        let pb: Vec<usize> = if ob.is_empty() { vec![] } else { ob[ob.len() - 1..].to_vec() };
        let a: Vec<A> = rand_vec(&mut rng, ash.iter().product());
        let b: Vec<B> = rand_vec(&mut rng, bsh.iter().product());
        let pash = param_shape([0, 1, 2, 3][iter % 4], true, m, &pb);
        let pbsh = param_shape([0, 2, 1, 3][(iter / 4) % 4], false, n, &pb);
        let za: Vec<A> = rand_vec(&mut rng, pash.iter().product());
        let zb: Vec<B> = rand_vec(&mut rng, pbsh.iter().product());
        let use_za = iter % 5 != 0;
        let use_zb = iter % 7 != 0;
        let za_o = use_za.then_some((&za[..], &pash[..]));
        let zb_o = use_zb.then_some((&zb[..], &pbsh[..]));
        let want = mmi_oracle(&a, &ash, za_o, &b, &bsh, zb_o);
        let mut y = vec![0i32; want.len()];
        matmul_integer(
            TensorRef::new(&a, &ash),
            za_o.map(|(d, s)| TensorRef::new(d, s)),
            TensorRef::new(&b, &bsh),
            zb_o.map(|(d, s)| TensorRef::new(d, s)),
            &mut y,
        )
        .unwrap_or_else(|e| panic!("a {ash:?} b {bsh:?} za {pash:?} zb {pbsh:?}: {e}"));
        assert_eq!(
            y,
            want,
            "{}×{}: a {ash:?} b {bsh:?} za {:?} zb {:?}",
            A::NAME,
            B::NAME,
            use_za.then_some(&pash),
            use_zb.then_some(&pbsh)
        );
    }
}

#[test]
fn matmul_integer_random_all_types() {
    mmi_random::<u8, u8>(21);
    mmi_random::<u8, i8>(22);
    mmi_random::<i8, u8>(23);
    mmi_random::<i8, i8>(24);
}

#[test]
fn matmul_integer_long_k_exact_and_overflow() {
    // K past the i32-exact bound: the driver carries i64; results that fit are exact.
    let k = 40_000;
    let a: Vec<i8> = (0..2 * k).map(|i| if i % 2 == 0 { 127 } else { -128 }).collect();
    let b: Vec<i8> = (0..k * 3).map(|i| [127i8, -128, 5][i % 3]).collect();
    let za = [1i8, -3];
    let mut y = [0i32; 6];
    matmul_integer(TensorRef::new(&a, &[2, k]), Some(TensorRef::new(&za, &[2])), TensorRef::new(&b, &[k, 3]), None, &mut y).unwrap();
    let want = mmi_oracle(&a, &[2, k], Some((&za, &[2])), &b, &[k, 3], None);
    assert_eq!(y.to_vec(), want);
    // All-255 u8 operands: 40000·255·255 > i32::MAX → an overflow error, never a wrap.
    let a = vec![255u8; k];
    let b = vec![255u8; k];
    let e = err(matmul_integer(TensorRef::new(&a, &[1, k]), None, TensorRef::new(&b, &[k, 1]), None, &mut y[..1]));
    assert!(matches!(e, Error::Overflow(_)), "{e}");
}

#[test]
fn matmul_integer_known_values_and_bad_inputs() {
    // A 2×3 · 3×2 by hand, zero points per row of A and per column of B.
    let a = [1u8, 2, 3, 4, 5, 6];
    let b = [1i8, -1, 2, -2, 3, -3];
    let za = [1u8, 4];
    let zb = [0i8, -1];
    let mut y = [0i32; 4];
    matmul_integer(
        TensorRef::new(&a, &[2, 3]),
        Some(TensorRef::new(&za, &[2])),
        TensorRef::new(&b, &[3, 2]),
        Some(TensorRef::new(&zb, &[2])),
        &mut y,
    )
    .unwrap();
    // Row 0: (0,1,2) · cols (1,2,3) and (0,−1,−2) → 8, −5. Row 1: (0,1,2) likewise.
    assert_eq!(y, [8, -5, 8, -5]);
    let ctx = Context::new().unwrap().with_threads(2).unwrap();
    let mut y2 = [0i32; 4];
    matmul_integer_in(
        &ctx,
        TensorRef::new(&a, &[2, 3]),
        Some(TensorRef::new(&za, &[2])),
        TensorRef::new(&b, &[3, 2]),
        Some(TensorRef::new(&zb, &[2])),
        &mut y2,
    )
    .unwrap();
    assert_eq!(y, y2);
    // Errors: zero-point lengths, orientation, output size, operand sizes, K.
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a, &[2, 3]), Some(TensorRef::new(&za, &[1, 2])), TensorRef::new(&b, &[3, 2]), None, &mut y)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a, &[2, 3]), Some(TensorRef::new(&za[..1], &[3])), TensorRef::new(&b, &[3, 2]), None, &mut y)),
        Error::ShapeMismatch(_)
    ));
    let zb3 = [0i8; 3];
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a, &[2, 3]), None, TensorRef::new(&b, &[3, 2]), Some(TensorRef::new(&zb3, &[3])), &mut y)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a, &[2, 3]), None, TensorRef::new(&b, &[3, 2]), Some(TensorRef::new(&zb, &[2, 1])), &mut y)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a, &[2, 3]), None, TensorRef::new(&b, &[3, 2]), None, &mut y[..3])),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a[..5], &[2, 3]), None, TensorRef::new(&b, &[3, 2]), None, &mut y)),
        Error::ShapeMismatch(_)
    ));
    assert!(matches!(
        err(matmul_integer(TensorRef::new(&a, &[3, 2]), None, TensorRef::new(&b, &[3, 2]), None, &mut y[..4])),
        Error::ShapeMismatch(_)
    ));
    // K = 0 gives zeros.
    let mut yz = [9i32; 4];
    matmul_integer(
        TensorRef::new(&[] as &[u8], &[2, 0]),
        Some(TensorRef::new(&za, &[2])),
        TensorRef::new(&[] as &[i8], &[0, 2]),
        None,
        &mut yz,
    )
    .unwrap();
    assert_eq!(yz, [0; 4]);
}
