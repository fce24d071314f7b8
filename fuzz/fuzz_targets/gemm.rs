//! Differential GEMM fuzzing: every ISA this CPU has, against the i64 reference, with
//! shapes, strides, zero points and values biased towards the extremes. A mismatch or a
//! panic is a finding; a returned `Error` is fine only where the reference says the
//! input is invalid or the i32 result does not fit.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use qkern::{Activations, Context, MatrixMut, MatrixRef, PackedWeights, WeightQuant};

#[derive(Arbitrary, Debug)]
struct Case {
    m: u8,
    n: u8,
    k: u16,
    za: u8,
    zb: i8,
    extreme: u8,
    seed: u64,
}

fn fill(len: usize, seed: &mut u64, extreme: u8, lo: i32, hi: i32) -> Vec<i32> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            match extreme % 4 {
                0 => lo,
                1 => hi,
                _ => lo + (*seed % (hi - lo + 1) as u64) as i32,
            }
        })
        .collect()
}

fuzz_target!(|c: Case| {
    let (m, n, k) = (c.m as usize % 40 + 1, c.n as usize % 40 + 1, c.k as usize % 2000);
    let mut seed = c.seed | 1;
    let a: Vec<u8> = fill(m * k, &mut seed, c.extreme, 0, 255).into_iter().map(|v| v as u8).collect();
    let b: Vec<i8> = fill(k * n, &mut seed, c.extreme >> 2, -128, 127).into_iter().map(|v| v as i8).collect();
    let mut expect = vec![0i64; m * n];
    qkern_kernels::reference::gemm_i64(m, n, k, &a, k, c.za as i32, &b, n, &[c.zb as i32], &mut expect, n);
    for &isa in &qkern::dispatch::cpu().isas {
        let ctx = Context::for_isa(isa).unwrap();
        let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, k, n), WeightQuant::per_tensor(c.zb as i32, 1.0)).unwrap();
        let mut out = vec![0i32; m * n];
        let r = ctx.gemm_i32(Activations::new(MatrixRef::new(&a, m, k), c.za, 1.0), &w, None, MatrixMut::new(&mut out, m, n));
        match r {
            Ok(()) => assert!(out.iter().zip(&expect).all(|(&o, &e)| o as i64 == e), "{isa:?} {c:?}"),
            Err(e) => assert!(expect.iter().any(|&e| i32::try_from(e).is_err()), "{isa:?}: unexpected error {e}"),
        }
    }
});
