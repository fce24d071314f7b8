//! The README's Rust example: pack int8 weights once, run a GEMM with a requantized u8
//! output, in two rounding modes. `cargo run --release --example gemm`.

use qkern::gemm::{gemm_i32, gemm_requantize};
use qkern::{Activations, MatrixMut, MatrixRef, PackedWeights, RequantMode, Requantize, WeightQuant};

fn main() -> qkern::Result<()> {
    // Activations A: 2×3 u8, zero point 128, scale 0.5.
    let a: [u8; 6] = [130, 126, 128, 138, 128, 120];
    let a = Activations::new(MatrixRef::new(&a, 2, 3), 128, 0.5);

    // Weights B: 3×2 i8, zero point 0, scale 0.25. Packed once, reused by every call.
    let b: [i8; 6] = [10, -3, 4, 5, 7, 1];
    let w = PackedWeights::new(MatrixRef::new(&b, 3, 2), WeightQuant::per_tensor(0, 0.25))?;
    let bias = [4, -4]; // i32, in accumulator units (scale 0.5 · 0.25)

    // Exact integer result: (A − 128)·B + bias.
    let mut acc = [0i32; 4];
    gemm_i32(a, &w, Some(&bias), MatrixMut::new(&mut acc, 2, 2))?;
    assert_eq!(acc, [16, -20, 48, -42]);

    // Requantized to u8 with output scale 1.0 and zero point 128:
    // out = clamp(round(acc · 0.5 · 0.25 / 1.0) + 128, 0, 255).
    // ONNX rounding (Fp32 mode) rounds the tie −2.5 to even: −2.
    let rq = Requantize::new(1.0, 128u8).bias(&bias);
    let mut out = [0u8; 4];
    gemm_requantize(a, &w, &rq, MatrixMut::new(&mut out, 2, 2))?;
    assert_eq!(out, [130, 126, 134, 123]);

    // TFLite's fixed-point rounding takes the same tie away from zero: −3.
    let rq = rq.mode(RequantMode::TfliteDoubleRounding);
    gemm_requantize(a, &w, &rq, MatrixMut::new(&mut out, 2, 2))?;
    assert_eq!(out, [130, 125, 134, 123]);

    // Fused ReLU clamps below at the zero point.
    gemm_requantize(a, &w, &rq.relu(), MatrixMut::new(&mut out, 2, 2))?;
    assert_eq!(out, [130, 128, 134, 128]);
    println!("requantized: {out:?}");
    Ok(())
}
