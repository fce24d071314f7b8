//! Quantize / dequantize on hostile floats (NaN, ±inf, subnormals, f32::MAX, exact
//! ties, empty and odd-length inputs): the vectorised uniform quantizer against the
//! scalar definition, ONNX QuantizeLinear against an f64 oracle, and
//! DynamicQuantizeLinear, which must return an error or ONNX's exact answer.

use qkern::onnx::{QuantSliceMut, QuantizeAttrs, TensorRef, dynamic_quantize_linear, quantize_linear};
use qkern::quant::reference::{dequantize_value, quantize_value};
use qkern::quant::{IntFormat, QuantParams, Rounding};

use super::common::Gen;

pub fn run(data: &[u8]) {
    let mut g = Gen::new(data);
    let len = g.pick(&[0usize, 1, 3, 7, 15, 16, 17, 31, 33, 64, 100, 257]);
    let scale_mag = g.pick(&[1.0f32, 0.02, 1e-30, 3.0e5, 1e-38]);
    let x = g.floats(len, scale_mag, true);

    // The uniform quantizer, per tensor or per channel (rows of a 2-D view).
    let bits = g.size(1, 8) as u32;
    let (signed, narrow) = (g.flip(), g.flip());
    let scale = match g.size(0, 2) {
        0 => g.f32_bits(), // anything, including invalid: must be refused, not used
        1 => g.pick(&[1.0f32, 0.5, 0.1, 2.0f32.powi(-20), 1e-38, 3.0e38]),
        _ => scale_mag,
    };
    let rounding = g.pick(&[Rounding::HalfEven, Rounding::HalfAway]);
    if let Ok(fmt) = IntFormat::new(bits, signed, narrow) {
        let zp = g.int(fmt.qmin() as i64 - 2, fmt.qmax() as i64 + 2) as i32;
        match QuantParams::per_tensor(fmt, scale, zp) {
            Ok(p) => {
                let p = p.with_rounding(rounding);
                if signed {
                    check_uniform::<i8>(&p, &x, scale, zp, fmt, rounding);
                } else {
                    check_uniform::<u8>(&p, &x, scale, zp, fmt, rounding);
                }
            }
            Err(_) => assert!(
                !(scale.is_finite() && scale > 0.0) || zp < fmt.qmin() || zp > fmt.qmax(),
                "valid parameters refused: bits {bits} scale {scale} zp {zp}"
            ),
        }
    }

    // ONNX QuantizeLinear, per tensor, u8 and i8.
    let shape = [len];
    let (zp8, zpi8) = (g.int(0, 255) as u8, g.int(-128, 127) as i8);
    let sc = [scale];
    let mut y = vec![0u8; len];
    let zp_t = [zp8];
    let r = quantize_linear(
        TensorRef::new(&x, &shape),
        TensorRef::new(&sc, &[]),
        Some(qkern::onnx::QuantTensor::U8(TensorRef::new(&zp_t, &[]))),
        &QuantizeAttrs::default(),
        QuantSliceMut::U8(&mut y),
    );
    onnx_check(r.is_ok(), scale, &x, |i| y[i] as i64, zp8 as i64, 0, 255);
    let mut y = vec![0i8; len];
    let zp_t = [zpi8];
    let r = quantize_linear(
        TensorRef::new(&x, &shape),
        TensorRef::new(&sc, &[]),
        Some(qkern::onnx::QuantTensor::I8(TensorRef::new(&zp_t, &[]))),
        &QuantizeAttrs::default(),
        QuantSliceMut::I8(&mut y),
    );
    onnx_check(r.is_ok(), scale, &x, |i| y[i] as i64, zpi8 as i64, -128, 127);

    // DynamicQuantizeLinear.
    let mut y = vec![0u8; len];
    match dynamic_quantize_linear(&x, &mut y) {
        Ok(d) => {
            assert!(x.iter().all(|v| v.is_finite()), "accepted a non-finite input");
            let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let want_scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
            assert_eq!(d.scale.to_bits(), want_scale.to_bits(), "dynamic scale");
            let zp = ((0.0 - lo / d.scale).clamp(0.0, 255.0) as f64).round_ties_even() as i64;
            assert_eq!(d.zero_point as i64, zp, "dynamic zero point");
            for (i, &v) in x.iter().enumerate() {
                let q = ((v / d.scale) as f64).round_ties_even() as i64 + zp;
                assert_eq!(y[i] as i64, q.clamp(0, 255), "dynamic y[{i}] for {v}");
            }
        }
        Err(_) => {
            let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let range_bad = !((hi - lo) / 255.0).is_finite() || ((hi - lo) / 255.0 == 0.0 && hi != lo);
            assert!(x.iter().any(|v| !v.is_finite()) || range_bad, "dynamic quantize refused a valid input");
        }
    }
}

fn check_uniform<T: qkern::Int8 + Default + Copy + std::fmt::Debug>(p: &QuantParams, x: &[f32], scale: f32, zp: i32, fmt: IntFormat, r: Rounding) {
    let mut q = vec![T::default(); x.len()];
    p.quantize_into(x, &[x.len()], &mut q).unwrap();
    for (i, (&v, &c)) in x.iter().zip(&q).enumerate() {
        let want = quantize_value(v, scale, zp, fmt.qmin(), fmt.qmax(), r, 0.0);
        assert_eq!(c.to_i32(), want, "quantize x[{i}] = {v:e} scale {scale:e} zp {zp} {fmt:?} {r:?}");
    }
    let mut d = vec![0f32; x.len()];
    p.dequantize_into(&q, &[x.len()], &mut d).unwrap();
    for (i, (&c, &v)) in q.iter().zip(&d).enumerate() {
        assert_eq!(v.to_bits(), dequantize_value(c.to_i32(), scale, zp).to_bits(), "dequantize code[{i}]");
    }
}

/// ONNX: y = saturate(round_half_even(x / scale) + zp); NaN → the type's minimum; the
/// scale must be finite and positive.
fn onnx_check(ok: bool, scale: f32, x: &[f32], y: impl Fn(usize) -> i64, zp: i64, lo: i64, hi: i64) {
    let valid = scale.is_finite() && scale > 0.0;
    assert_eq!(ok, valid, "QuantizeLinear with scale {scale:e}");
    if !ok {
        return;
    }
    for (i, &v) in x.iter().enumerate() {
        let d = v / scale;
        let want = if d.is_nan() { lo } else { ((d as f64).round_ties_even() + zp as f64).clamp(lo as f64, hi as f64) as i64 };
        assert_eq!(y(i), want, "QuantizeLinear x[{i}] = {v:e} scale {scale:e} zp {zp}");
    }
}
