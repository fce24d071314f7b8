//! The AVX2 `vpmaddubsw` kernel may run only where the packer proved that no i16 pair
//! saturates (DESIGN.md §2, issue 3): stored weights within ±64. These tests show that
//!
//! * the packer picks it for weights within the bound and never for weights one step
//!   past it (±65, and the extremes), for both weight types;
//! * the bound is needed: the kernel itself really does saturate at 65, so picking the
//!   exact kernel there is what keeps results right;
//! * 255 × −128 pairs (the largest saturating products) give the exact result through
//!   the public API, and forcing the fast kernel on such weights is an error from
//!   `PackedWeights::new_in`, never a wrong answer;
//! * the automatically chosen fast kernel is exact through the driver, including the
//!   K-chunked (i64-carried) path and i8 activations (flipped to u8 by the kernel).
//!
//! Skipped (with a SKIP line) on a CPU without AVX2; a failure under
//! `QKERN_REQUIRE_ISA=avx2`.
#![cfg(target_arch = "x86_64")]

mod common;

use qkern::{
    Activations, Context, Error, Int8, Isa, MatrixMut, MatrixRef, PackedWeights, RequantMode, Requantize, WeightQuant,
};
use qkern_kernels::reference::{RefOutput, gemm_i64, output_stage_ref, quantize_multiplier};
use qkern_kernels::x86_64::avx2::{QX8_GEMM_4X16C4_MADDUBS__AVX2 as FAST, QX8_GEMM_6X16C2__AVX2 as EXACT};
use qkern_kernels::{GemmUkernel, OutputKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The AVX2-capped context, or `None` (after a SKIP line) on a CPU without AVX2.
fn avx2(what: &str) -> Option<Context> {
    common::isa_or_skip(what, Isa::Avx2).then(|| Context::for_isa(Isa::Avx2).unwrap())
}

/// `k × n` weights drawn uniformly from `lo..=hi`.
fn weights<B: Int8>(rng: &mut ChaCha8Rng, k: usize, n: usize, lo: i32, hi: i32) -> Vec<B> {
    (0..k * n).map(|_| B::saturate_from(rng.random_range(lo..=hi))).collect()
}

fn pack<B: Int8>(ctx: &Context, b: &[B], k: usize, n: usize, zb: i32) -> qkern::Result<PackedWeights> {
    PackedWeights::new_in(ctx, MatrixRef::new(b, k, n), WeightQuant::per_tensor(zb, 0.05))
}

/// The stored-weight range of the fast kernel for weight type `B`: values `b` with
/// `|b − b_offset| ≤ 64`.
fn fast_range<B: Int8>() -> (i32, i32) {
    let off = FAST.b_offset_for(B::SIGNED);
    (off - 64, off + 64)
}

#[test]
fn the_bound_is_64() {
    assert_eq!(FAST.max_abs_stored_b, Some(64));
    assert_eq!(EXACT.max_abs_stored_b, None);
    assert!(FAST.name.contains("maddubs"), "the bench keys the vpmaddubsw peak on the name");
    // 2·255·64 fits an i16, 2·255·65 does not.
    assert!(2 * 255 * 64 <= i16::MAX as i32 && 2 * 255 * 65 > i16::MAX as i32);
    assert_eq!(fast_range::<i8>(), (-64, 64));
    assert_eq!(fast_range::<u8>(), (64, 192)); // u8 weights are stored as b − 128
}

/// Within ±64 (stored) the fast kernel; one weight past it anywhere, the exact one.
fn selection<B: Int8>(seed: u64) {
    let Some(ctx) = avx2("fast-kernel selection") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (lo, hi) = fast_range::<B>();
    let (lo_t, hi_t) = (lo.max(B::MIN), hi.min(B::MAX));
    for &(k, n) in &[(1usize, 1usize), (7, 5), (64, 33), (300, 16)] {
        for zb in [0.clamp(B::MIN, B::MAX), B::MIN, B::MAX] {
            let mut b = weights::<B>(&mut rng, k, n, lo_t, hi_t);
            // Both ends of the range present (when there is room).
            b[0] = B::saturate_from(lo_t);
            *b.last_mut().unwrap() = B::saturate_from(hi_t);
            let w = pack(&ctx, &b, k, n, zb).unwrap();
            assert_eq!(w.kernel_name(), FAST.name, "{} weights in {lo_t}..={hi_t}, zb {zb}, {k}x{n}", B::NAME);

            // One weight one step past the bound, or at a type extreme, at a random place
            // or the very last one: the exact kernel.
            let past: Vec<i32> = [lo - 1, hi + 1, B::MIN, B::MAX]
                .into_iter()
                .filter(|v| (B::MIN..=B::MAX).contains(v) && !(lo..=hi).contains(v))
                .collect();
            assert!(!past.is_empty());
            for &v in &past {
                for at in [rng.random_range(0..k * n), k * n - 1] {
                    let mut b2 = b.clone();
                    b2[at] = B::saturate_from(v);
                    let w = pack(&ctx, &b2, k, n, zb).unwrap();
                    assert_eq!(
                        w.kernel_name(),
                        EXACT.name,
                        "{} weights with one {v} at {at} ({k}x{n}, zb {zb}) must not use {}",
                        B::NAME,
                        FAST.name
                    );
                }
            }
        }
    }
}

#[test]
fn fast_kernel_only_within_the_bound_i8_weights() {
    selection::<i8>(1);
}

#[test]
fn fast_kernel_only_within_the_bound_u8_weights() {
    selection::<u8>(2);
}

/// Runs one full tile of `kernel` directly on u8 activations and stored i8 weights (no
/// zero points, I32 output) and returns the tile.
fn run_tile(kernel: &GemmUkernel, a: &[u8], b_stored: &[i8], k: usize) -> Vec<i32> {
    // SAFETY: the callers checked AVX2. The weights may break the fast kernel's
    // precondition: then its results are wrong (saturated), which is what this shows.
    unsafe { common::run_tile_i32(kernel, a, false, b_stored, k) }
}

/// The precondition is not conservative: at 64 the fast kernel is exact, at 65 (and at
/// −128) its `vpmaddubsw` pairs saturate and the result is wrong. So choosing the exact
/// kernel past the bound is necessary, not a formality.
#[test]
fn the_fast_kernel_really_saturates_past_64() {
    if !common::isa_or_skip("vpmaddubsw saturation", Isa::Avx2) {
        return;
    }
    let k = 8;
    let a = vec![255u8; FAST.mr * k];
    for (bv, exact) in [(64i8, true), (-64, true), (65, false), (-65, false), (127, false), (-128, false)] {
        let b = vec![bv; k * FAST.nr()];
        let want = vec![k as i32 * 255 * bv as i32; FAST.mr * FAST.nr()];
        // The exact kernel on the same weights: right every time.
        let a_exact = vec![255u8; EXACT.mr * k];
        assert_eq!(run_tile(&EXACT, &a_exact, &b, k), vec![want[0]; EXACT.mr * EXACT.nr()], "exact kernel, 255 x {bv}");
        let got = run_tile(&FAST, &a, &b, k);
        assert_eq!(got == want, exact, "255 x {bv}: fast kernel gave {:?}, exact {}", &got[..2], want[0]);
        if !exact {
            // Each pair clamps at ±32767/−32768: K/2 pairs of the clamped value.
            let pair = (2 * 255 * bv as i32).clamp(i16::MIN as i32, i16::MAX as i32);
            assert_eq!(got[0], (k as i32 / 2) * pair, "255 x {bv}");
        }
    }
}

/// The reference output of one GEMM (dense, per-tensor zero points).
struct Expect {
    acc: Vec<i64>,
}

impl Expect {
    fn new<A: Int8, B: Int8>(a: &[A], za: A, b: &[B], zb: i32, m: usize, n: usize, k: usize) -> Self {
        let mut acc = vec![0i64; m * n];
        gemm_i64(m, n, k, a, k, za.to_i32(), b, n, &[zb], &mut acc, n);
        Expect { acc }
    }

    fn stage(&self, n: usize, ro: &RefOutput<'_>) -> Vec<i64> {
        self.acc.iter().enumerate().map(|(idx, &v)| output_stage_ref(v, idx % n, ro)).collect()
    }
}

fn ref_out<'a>(
    kind: OutputKind,
    mode: RequantMode,
    scale: &'a [f32],
    qmult: &'a [qkern::QuantizedMultiplier],
) -> RefOutput<'a> {
    RefOutput { kind, mode, bias_i32: None, scale, bias_f32: None, qmult, out_zero_point: 3, qmin: -128, qmax: 127 }
}

/// Runs `gemm_i32`, `gemm_f32` and i8 requantization in every mode through `ctx` and
/// checks each against the reference. Returns the kernel used.
fn check_through_api<A: Int8, B: Int8>(
    ctx: &Context,
    a: &[A],
    za: A,
    b: &[B],
    zb: i32,
    (m, n, k): (usize, usize, usize),
    what: &str,
) -> &'static str {
    let (sa, sb) = (0.02f32, 0.05f32);
    let w = pack(ctx, b, k, n, zb).unwrap_or_else(|e| panic!("{what}: packing: {e}"));
    let e = Expect::new(a, za, b, zb, m, n, k);
    let acts = || Activations::new(MatrixRef::new(a, m, k), za, sa);
    let label = format!("{what} on {} ({}x{} M={m} N={n} K={k} za={za:?} zb={zb})", w.kernel_name(), A::NAME, B::NAME);

    if e.acc.iter().all(|v| i32::try_from(*v).is_ok()) {
        let mut c = vec![0i32; m * n];
        ctx.gemm_i32(acts(), &w, None, MatrixMut::new(&mut c, m, n)).unwrap();
        let want = e.stage(n, &ref_out(OutputKind::I32, RequantMode::Fp32, &[], &[]));
        assert!(c.iter().zip(&want).all(|(g, w)| *g as i64 == *w), "{label}: i32 differs from the reference");
    }

    let scale = vec![sa * sb; n];
    let mut c = vec![0f32; m * n];
    ctx.gemm_f32(acts(), &w, None, MatrixMut::new(&mut c, m, n)).unwrap();
    let want = e.stage(n, &ref_out(OutputKind::F32, RequantMode::Fp32, &scale, &[]));
    assert!(c.iter().zip(&want).all(|(g, w)| g.to_bits() as i64 == *w), "{label}: f32 differs from the reference");

    // An output scale that spreads the results over the i8 range (and clamps some).
    let amax = e.acc.iter().map(|v| v.unsigned_abs()).max().unwrap_or(1).max(1) as f32;
    let sy = sa * sb * amax / 100.0;
    for mode in RequantMode::ALL {
        let rq = Requantize::new(sy, 3i8).mode(mode);
        let mut c = vec![0i8; m * n];
        ctx.gemm_requantize(acts(), &w, &rq, MatrixMut::new(&mut c, m, n)).unwrap();
        let rscale = vec![(sa * sb) / sy; n];
        let qm = vec![quantize_multiplier(sa as f64 * sb as f64 / sy as f64, mode); n];
        let want = e.stage(n, &ref_out(OutputKind::I8, mode, &rscale, &qm));
        assert!(
            c.iter().zip(&want).all(|(g, w)| *g as i64 == *w),
            "{label}: requantized i8 ({}) differs from the reference",
            mode.name()
        );
    }
    w.kernel_name()
}

/// The check: 255 × −128 pairs (and the other saturating extremes) through the
/// public API give the exact result, on the exact kernel; forcing the fast kernel on
/// those weights is refused by the packer.
#[test]
fn saturating_pairs_are_exact_through_the_api() {
    let Some(ctx) = avx2("255 x -128 through the API") else { return };
    let forced = ctx.clone().with_gemm_kernel(FAST.name).unwrap();
    let (m, n, k) = (9, 21, 301);

    // u8 activations 255 (za 0) × i8 weights −128: every pair would be 2·255·(−128).
    let a = vec![255u8; m * k];
    let b = vec![-128i8; k * n];
    assert_eq!(check_through_api(&ctx, &a, 0u8, &b, 0, (m, n, k), "255 x -128"), EXACT.name);
    // i8 activations 127 (the kernel sees 255 after XOR 0x80) × −128, and × 127.
    let a8 = vec![127i8; m * k];
    assert_eq!(check_through_api(&ctx, &a8, 0i8, &b, 0, (m, n, k), "127 x -128"), EXACT.name);
    let b127 = vec![127i8; k * n];
    assert_eq!(check_through_api(&ctx, &a8, -128i8, &b127, -128, (m, n, k), "127 x 127"), EXACT.name);
    // u8 weights 0 and 255 (stored −128 and 127).
    let bu0 = vec![0u8; k * n];
    assert_eq!(check_through_api(&ctx, &a, 0u8, &bu0, 255, (m, n, k), "255 x u8 0"), EXACT.name);
    let bu255 = vec![255u8; k * n];
    assert_eq!(check_through_api(&ctx, &a, 0u8, &bu255, 0, (m, n, k), "255 x u8 255"), EXACT.name);
    // Mixed: mostly within ±64, one column of −128 pairs.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut bm = weights::<i8>(&mut rng, k, n, -64, 64);
    for kk in 0..k {
        bm[kk * n + 7] = -128;
    }
    assert_eq!(check_through_api(&ctx, &a, 0u8, &bm, 0, (m, n, k), "one column of -128"), EXACT.name);

    // Forcing the fast kernel on weights past its bound: an error naming the values,
    // never a result.
    for (what, r) in [
        ("i8 -128", pack(&forced, &b, k, n, 0)),
        ("i8 127", pack(&forced, &b127, k, n, 0)),
        ("one column of -128", pack(&forced, &bm, k, n, 0)),
    ] {
        match r {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("i8") && msg.contains("values"), "{what}: {msg}"),
            other => panic!("{what}: forcing {} must fail, got {other:?}", FAST.name),
        }
    }
    for (what, r) in [("u8 0", pack(&forced, &bu0, k, n, 0)), ("u8 255", pack(&forced, &bu255, k, n, 0))] {
        match r {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("u8"), "{what}: {msg}"),
            other => panic!("{what}: forcing {} must fail, got {other:?}", FAST.name),
        }
    }
    // Within the bound the forced context packs, and agrees with the reference.
    let b64 = vec![-64i8; k * n];
    assert_eq!(check_through_api(&forced, &a, 0u8, &b64, 0, (m, n, k), "255 x -64 forced"), FAST.name);
}

/// The automatically chosen fast kernel is exact through the driver for every
/// signedness combination, random data and zero points, edge tiles, and K past the
/// whole-K i32 bound (chunks carried in i64).
#[test]
fn fast_kernel_is_exact_through_the_driver() {
    let Some(ctx) = avx2("fast kernel through the driver") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    fn run<A: Int8, B: Int8>(ctx: &Context, rng: &mut ChaCha8Rng, m: usize, n: usize, k: usize) {
        let (lo, hi) = fast_range::<B>();
        let b = weights::<B>(rng, k, n, lo.max(B::MIN), hi.min(B::MAX));
        let a: Vec<A> = (0..m * k).map(|_| A::from_bits(rng.random())).collect();
        let za = A::from_bits(rng.random());
        let zb = rng.random_range(B::MIN..=B::MAX);
        let used = check_through_api(ctx, &a, za, &b, zb, (m, n, k), "random within the bound");
        assert_eq!(used, FAST.name);
    }
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 3), (4, 16, 4), (5, 17, 7), (13, 33, 129), (67, 45, 300), (9, 40, 1001)] {
        run::<u8, u8>(&ctx, &mut rng, m, n, k);
        run::<u8, i8>(&ctx, &mut rng, m, n, k);
        run::<i8, u8>(&ctx, &mut rng, m, n, k);
        run::<i8, i8>(&ctx, &mut rng, m, n, k);
    }

    // K = 50 000 with a − za up to 255 and b − zb up to 192: past the i32 bound, so the
    // driver runs K chunks through the fast kernel and carries them in i64.
    let (m, n, k) = (5, 19, 50_000);
    let a: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
    let b = weights::<i8>(&mut rng, k, n, -64, 64);
    assert!(k as u64 * 255 * 192 > i32::MAX as u64);
    assert_eq!(check_through_api(&ctx, &a, 0u8, &b, -128, (m, n, k), "long K"), FAST.name);
    // And an all-extreme long K whose exact sums do not fit in i32: f32 and requantized
    // outputs are still exact (i32 reports Overflow, tested in tests/gemm.rs).
    let a = vec![255u8; m * k];
    let b = vec![64i8; k * n];
    assert_eq!(check_through_api(&ctx, &a, 0u8, &b, -128, (m, n, k), "long K, extremes"), FAST.name);
    let a8 = vec![-128i8; m * k];
    assert_eq!(check_through_api(&ctx, &a8, 127i8, &b, -128, (m, n, k), "long K, i8 extremes"), FAST.name);
}
