//! The NEON `smull` + `smlal2` + `sadalp` kernel may run only where the packer proved that
//! no i16 pair sum wraps (DESIGN.md §2, issue 7 item 1): stored weights within ±127, i.e.
//! no −128 (i8 weights) or 0 (u8 weights, stored as `b − 128`). These tests show that
//!
//! * the packer picks it at the NEON tier for weights within the bound (both ends
//!   present) and falls back to the exact kernel when a single weight is the excluded
//!   extreme, for both weight types; the results are exact either way, through the API;
//! * the bound is needed: on a −128 weight the kernel's pair `2·(−128)·(−128) = 32768`
//!   really wraps, so the fallback is what keeps the result right.
//!
//! The kernel's own exactness over shapes, zero points and extremes at its bound is the
//! shared tester's (`tests/kernels.rs`); this file is about the precondition.
#![cfg(target_arch = "aarch64")]

mod common;

use qkern::{Activations, Context, Int8, Isa, MatrixMut, MatrixRef, PackedWeights, WeightQuant};
use qkern_kernels::aarch64::neon::QX8_GEMM_4X16C1__NEON as EXACT;
use qkern_kernels::aarch64::neon::pairs::QX8_GEMM_4X4C16_SADALP__NEON as PAIRS;
use qkern_kernels::reference::gemm_i64;
use qkern_kernels::GemmUkernel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The NEON-capped context, with one thread (the tests compare single tiles' kernels).
fn neon(what: &str) -> Option<Context> {
    common::isa_or_skip(what, Isa::Neon).then(|| Context::for_isa(Isa::Neon).unwrap().with_threads(1).unwrap())
}

#[test]
fn the_bound_is_127() {
    assert_eq!(PAIRS.max_abs_stored_b, Some(127));
    assert_eq!(EXACT.max_abs_stored_b, None);
    // |a| ≤ 128 (u8 activations flipped to i8): two products of 127 fit an i16, of 128 not.
    assert!(2 * 128 * 127 <= i16::MAX as i32 && 2 * 128 * 128 > i16::MAX as i32);
    assert_eq!(PAIRS.a_offset, [-128, 0], "u8 activations must be flipped to i8");
    assert_eq!(PAIRS.b_offset_for(true), 0);
    assert_eq!(PAIRS.b_offset_for(false), 128);
}

/// `C = (A − za)(B − zb)` through `gemm_i32` on `ctx`, checked against the i64 reference;
/// returns the kernel the packer chose.
fn exact_through_api<A: Int8, B: Int8>(ctx: &Context, rng: &mut ChaCha8Rng, b: &[B], zb: i32, (m, n, k): (usize, usize, usize)) -> &'static str {
    let a: Vec<A> = (0..m * k).map(|_| A::from_bits(rng.random())).collect();
    let za = A::from_bits(rng.random());
    let w = PackedWeights::new_in(ctx, MatrixRef::new(b, k, n), WeightQuant::per_tensor(zb, 0.05)).unwrap();
    let mut want = vec![0i64; m * n];
    gemm_i64(m, n, k, &a, k, za.to_i32(), b, n, &[zb], &mut want, n);
    let mut c = vec![0i32; m * n];
    ctx.gemm_i32(Activations::new(MatrixRef::new(&a, m, k), za, 0.02), &w, None, MatrixMut::new(&mut c, m, n)).unwrap();
    for (i, (&g, &e)) in c.iter().zip(&want).enumerate() {
        assert_eq!(g as i64, e, "{} x {} {m}x{n}x{k} C[{}][{}] on {}", A::NAME, B::NAME, i / n, i % n, w.kernel_name());
    }
    w.kernel_name()
}

/// Within the bound (both ends present): the pair kernel; one weight at the excluded
/// extreme (anywhere, or last): the exact one. Exact results both ways, both activation
/// types.
fn selection<B: Int8>(seed: u64) {
    let Some(ctx) = neon("NEON pair-kernel selection") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let off = PAIRS.b_offset_for(B::SIGNED);
    let (lo, hi) = (off - 127, off + 127);
    assert_eq!((lo.max(B::MIN), hi.min(B::MAX)), (lo, hi), "the bound excludes exactly one value of {}", B::NAME);
    // Stored −128 for both types: the i8 weight −128, the u8 weight 0.
    let excluded = B::MIN;
    for &(m, n, k) in &[(1usize, 1usize, 1usize), (5, 7, 17), (4, 4, 16), (9, 33, 300)] {
        for zb in [0.clamp(B::MIN, B::MAX), B::MIN, B::MAX] {
            let mut b: Vec<B> = (0..k * n).map(|_| B::saturate_from(rng.random_range(lo..=hi))).collect();
            b[0] = B::saturate_from(lo);
            *b.last_mut().unwrap() = B::saturate_from(hi);
            assert_eq!(exact_through_api::<i8, B>(&ctx, &mut rng, &b, zb, (m, n, k)), PAIRS.name, "{} in {lo}..={hi}", B::NAME);
            assert_eq!(exact_through_api::<u8, B>(&ctx, &mut rng, &b, zb, (m, n, k)), PAIRS.name, "{} in {lo}..={hi}", B::NAME);
            for at in [rng.random_range(0..k * n), k * n - 1] {
                let mut b2 = b.clone();
                b2[at] = B::saturate_from(excluded);
                let name = exact_through_api::<i8, B>(&ctx, &mut rng, &b2, zb, (m, n, k));
                assert_eq!(name, EXACT.name, "{} weights with {excluded} at {at}: must fall back", B::NAME);
                assert_eq!(exact_through_api::<u8, B>(&ctx, &mut rng, &b2, zb, (m, n, k)), EXACT.name);
            }
        }
    }
}

#[test]
fn pair_kernel_only_within_the_bound_i8_weights() {
    selection::<i8>(1);
}

#[test]
fn pair_kernel_only_within_the_bound_u8_weights() {
    selection::<u8>(2);
}

/// One full tile of `kernel` on i8 activations and stored i8 weights (no zero points,
/// I32 output).
fn run_tile(kernel: &GemmUkernel, a: &[i8], b_stored: &[i8], k: usize) -> Vec<i32> {
    let a: Vec<u8> = a.iter().map(|&v| v as u8).collect();
    // SAFETY: NEON is the AArch64 baseline. The weights may break the pair kernel's
    // precondition: then its results are wrong, which is what this shows.
    unsafe { common::run_tile_i32(kernel, &a, true, b_stored, k) }
}

/// The precondition is not conservative: at ±127 the pair kernel is exact against −128
/// activations, at −128 its i16 pairs wrap (32768 → −32768) and the result is wrong.
#[test]
fn the_pair_kernel_really_wraps_at_minus_128() {
    let k = 16;
    let a = vec![-128i8; PAIRS.mr * k];
    let a_exact = vec![-128i8; EXACT.mr * k];
    for (bv, exact) in [(127i8, true), (-127, true), (-128, false)] {
        let want = k as i32 * -128 * bv as i32;
        let b = vec![bv; k * PAIRS.nr()];
        let got = run_tile(&PAIRS, &a, &b, k);
        assert_eq!(got.iter().all(|&v| v == want), exact, "-128 x {bv}: pair kernel gave {}, exact {want}", got[0]);
        if !exact {
            // Each of the 8 i16 lanes per column wraps to −32768.
            assert_eq!(got[0], 8 * i16::MIN as i32, "-128 x {bv}");
        }
        let b = vec![bv; k * EXACT.nr()];
        assert!(run_tile(&EXACT, &a_exact, &b, k).iter().all(|&v| v == want), "exact kernel, -128 x {bv}");
    }
}
