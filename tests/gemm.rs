//! The public GEMM API (`qkern::gemm`, `Context`) against the reference, exactly: shapes,
//! signedness, quantization granularity, every output stage and rounding mode, strides,
//! threads, every ISA tier of this CPU, the overflow policy at and past its bound, and
//! every bad input (which must come back as the right `Error`, never a panic).

mod common;

use qkern::gemm::{self, K_CHUNK};
use qkern::{
    Activations, Context, Error, Int8, Isa, MatrixMut, MatrixRef, PackedWeights, PerChannel, RequantMode, Requantize,
    WeightQuant,
};
use qkern_kernels::OutputKind;
use qkern_kernels::reference::{RefOutput, gemm_i64, output_stage_ref, quantize_multiplier};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------
// The reference model of the public API.

/// One GEMM problem: A (M×K, row stride `lda`), B (K×N, row stride `ldb`) and their
/// quantization parameters.
#[derive(Clone, Debug)]
struct Problem<A, B> {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<A>,
    lda: usize,
    za: A,
    sa: f32,
    b: Vec<B>,
    ldb: usize,
    /// Per column (all equal when `per_column` is false).
    zb: Vec<i32>,
    sb: Vec<f32>,
    per_column: bool,
}

impl<A: Int8, B: Int8> Problem<A, B> {
    /// Random data; strides with random gaps when `strided`.
    fn random(rng: &mut ChaCha8Rng, m: usize, n: usize, k: usize, per_column: bool, strided: bool) -> Self {
        let lda = k + if strided { rng.random_range(1..=5) } else { 0 };
        let ldb = n + if strided { rng.random_range(1..=3) } else { 0 };
        let a_len = if m == 0 { 0 } else { (m - 1) * lda + k };
        let a = (0..a_len).map(|_| A::from_bits(rng.random())).collect();
        let b = (0..if k == 0 { 0 } else { (k - 1) * ldb + n })
            .map(|_| B::from_bits(rng.random()))
            .collect();
        let zp = |rng: &mut ChaCha8Rng| match rng.random_range(0..5) {
            0 => 0i32.clamp(B::MIN, B::MAX),
            1 => B::MIN,
            2 => B::MAX,
            _ => rng.random_range(B::MIN..=B::MAX),
        };
        let scale = |rng: &mut ChaCha8Rng| rng.random_range(0.001f32..0.1);
        let (zb, sb) = if per_column {
            ((0..n).map(|_| zp(rng)).collect(), (0..n).map(|_| scale(rng)).collect())
        } else {
            (vec![zp(rng); n], vec![scale(rng); n])
        };
        Problem {
            m,
            n,
            k,
            a,
            lda,
            za: A::from_bits(rng.random()),
            sa: rng.random_range(0.001f32..0.1),
            b,
            ldb,
            zb,
            sb,
            per_column,
        }
    }

    /// Every element of A equal to `av`, of B to `bv`, dense.
    fn constant(m: usize, n: usize, k: usize, av: A, za: A, bv: B, zb: i32) -> Self {
        Problem {
            m,
            n,
            k,
            a: vec![av; m * k],
            lda: k,
            za,
            sa: 0.5,
            b: vec![bv; k * n],
            ldb: n,
            zb: vec![zb; n],
            sb: vec![0.25; n],
            per_column: false,
        }
    }

    fn quant(&self) -> WeightQuant<'_> {
        if self.per_column {
            WeightQuant::per_column(&self.zb, &self.sb)
        } else {
            WeightQuant::per_tensor(
                self.zb.first().copied().unwrap_or(0),
                self.sb.first().copied().unwrap_or(1.0),
            )
        }
    }

    fn weights(&self) -> MatrixRef<'_, B> {
        MatrixRef::new(&self.b, self.k, self.n).with_stride(self.ldb)
    }

    /// The same problem with B clamped into the values `ctx`'s kernel admits, when every
    /// candidate of `ctx` has a precondition on the weights (a conditional kernel forced
    /// with `with_gemm_kernel`, e.g. AVX2 `vpmaddubsw`: stored `|b| ≤ 64`). The packer
    /// refuses other weights for it, so the sweep feeds it weights it may run on.
    fn fit_to(&self, ctx: &Context) -> Self {
        let mut p = self.clone();
        if let Some((lo, hi)) = admitted_b_range::<B>(ctx) {
            p.b.iter_mut().for_each(|v| *v = B::saturate_from(v.to_i32().clamp(lo, hi)));
        }
        p
    }

    fn pack(&self, ctx: &Context) -> PackedWeights {
        PackedWeights::new_in(ctx, self.weights(), self.quant())
            .unwrap_or_else(|e| panic!("packing {}: {e}", self.label()))
    }

    fn acts(&self) -> Activations<'_, A> {
        Activations::new(
            MatrixRef::new(&self.a, self.m, self.k).with_stride(self.lda),
            self.za,
            self.sa,
        )
    }

    /// The exact `(A − za)·(B − zb)`, M×N dense.
    fn exact(&self) -> Vec<i64> {
        let mut c = vec![0i64; self.m * self.n];
        gemm_i64(
            self.m,
            self.n,
            self.k,
            &self.a,
            self.lda,
            self.za.to_i32(),
            &self.b,
            self.ldb,
            &self.zb,
            &mut c,
            self.n,
        );
        c
    }

    fn label(&self) -> String {
        format!(
            "{}x{} M={} N={} K={} lda={} ldb={} za={} zb={} {}",
            A::NAME,
            B::NAME,
            self.m,
            self.n,
            self.k,
            self.lda,
            self.ldb,
            self.za.to_i32(),
            if self.per_column {
                format!("{:?}", &self.zb[..self.zb.len().min(8)])
            } else {
                format!("{:?}", self.zb.first())
            },
            if self.per_column { "per-column" } else { "per-tensor" }
        )
    }

    /// What `gemm_i32` must produce (exact values; the caller checks they fit).
    fn expect_i32(&self, acc: &[i64], bias: Option<&[i32]>) -> Vec<i64> {
        let ro = RefOutput {
            kind: OutputKind::I32,
            mode: RequantMode::Fp32,
            bias_i32: bias,
            scale: &[],
            bias_f32: None,
            qmult: &[],
            out_zero_point: 0,
            qmin: 0,
            qmax: 0,
        };
        self.apply(acc, &ro)
    }

    /// What `gemm_f32` must produce: `(sa·sb[n]) · acc + bias`, the product in f32.
    fn expect_f32(&self, acc: &[i64], bias: Option<&[f32]>) -> Vec<i64> {
        let scale: Vec<f32> = self.sb.iter().map(|&sb| self.sa * sb).collect();
        let ro = RefOutput {
            kind: OutputKind::F32,
            mode: RequantMode::Fp32,
            bias_i32: None,
            scale: &scale,
            bias_f32: bias,
            qmult: &[],
            out_zero_point: 0,
            qmin: 0,
            qmax: 0,
        };
        self.apply(acc, &ro)
    }

    /// What `gemm_requantize` must produce. The multiplier is `(sa·sb)/sy` in f32 for
    /// `Fp32` (onnxruntime's QLinearMatMul) and TFLite's `QuantizeMultiplier` of the f64
    /// effective scale for the fixed-point modes.
    fn expect_requant<O: Int8>(&self, acc: &[i64], rq: &Requantize<'_, O>) -> Vec<i64> {
        let scale: Vec<f32> = self.sb.iter().map(|&sb| (self.sa * sb) / rq.scale).collect();
        let qmult: Vec<_> = self
            .sb
            .iter()
            .map(|&sb| quantize_multiplier(self.sa as f64 * sb as f64 / rq.scale as f64, rq.mode))
            .collect();
        let ro = RefOutput {
            kind: if O::SIGNED { OutputKind::I8 } else { OutputKind::U8 },
            mode: rq.mode,
            bias_i32: rq.bias,
            scale: &scale,
            bias_f32: None,
            qmult: &qmult,
            out_zero_point: rq.zero_point.to_i32(),
            qmin: rq.min.to_i32(),
            qmax: rq.max.to_i32(),
        };
        self.apply(acc, &ro)
    }

    fn apply(&self, acc: &[i64], ro: &RefOutput<'_>) -> Vec<i64> {
        acc.iter()
            .enumerate()
            .map(|(idx, &v)| output_stage_ref(v, idx % self.n, ro))
            .collect()
    }
}

/// An output element type, seen as the reference's representation (`output_stage_ref`):
/// the integer, or the f32 bit pattern.
trait Out: Copy + std::fmt::Debug {
    /// A value the library would be unlikely to write by chance, to see untouched cells.
    const SENTINEL: Self;
    fn repr(self) -> i64;
}
impl Out for i32 {
    const SENTINEL: i32 = 0x5a5a_5a5a;
    fn repr(self) -> i64 {
        self as i64
    }
}
impl Out for f32 {
    const SENTINEL: f32 = f32::from_bits(0x7fc0_dead);
    fn repr(self) -> i64 {
        self.to_bits() as i64
    }
}
impl Out for u8 {
    const SENTINEL: u8 = 0xa5;
    fn repr(self) -> i64 {
        self as i64
    }
}
impl Out for i8 {
    const SENTINEL: i8 = -0x5b;
    fn repr(self) -> i64 {
        self as i64
    }
}

/// A strided C: `m × n`, stride `n + gap`, and `tail` extra elements, all sentinels.
struct COut<T> {
    data: Vec<T>,
    m: usize,
    n: usize,
    ldc: usize,
}

impl<T: Out> COut<T> {
    fn new(m: usize, n: usize, gap: usize, tail: usize) -> Self {
        let ldc = n + gap;
        let len = if m == 0 { 0 } else { (m - 1) * ldc + n } + tail;
        COut {
            data: vec![T::SENTINEL; len],
            m,
            n,
            ldc,
        }
    }
    fn view(&mut self) -> MatrixMut<'_, T> {
        MatrixMut::new(&mut self.data, self.m, self.n).with_stride(self.ldc)
    }
    /// Every element of the tile equals `expected` (M×N dense, reference representation);
    /// every gap and tail element is still the sentinel.
    fn check(&self, what: &str, expected: &[i64]) {
        for (idx, v) in self.data.iter().enumerate() {
            let (i, j) = (idx / self.ldc, idx % self.ldc);
            if i < self.m && j < self.n {
                let e = expected[i * self.n + j];
                assert_eq!(v.repr(), e, "{what}: C[{i}][{j}] = {v:?}, expected {e} (repr)");
            } else {
                assert_eq!(
                    v.repr(),
                    T::SENTINEL.repr(),
                    "{what}: element {idx} outside the {}x{} tile (stride {}) was written: {v:?}",
                    self.m,
                    self.n,
                    self.ldc
                );
            }
        }
    }
}

/// Whether every value fits in i32.
fn fits_i32(v: &[i64]) -> bool {
    v.iter().all(|&x| i32::try_from(x).is_ok())
}

/// Runs `p` through every output stage on `ctx` and checks each against the reference.
fn check_all_outputs<A: Int8, B: Int8>(ctx: &Context, p: &Problem<A, B>, rng: &mut ChaCha8Rng, what: &str) {
    let p = &p.fit_to(ctx);
    let w = p.pack(ctx);
    let acc = p.exact();
    let label = format!("{what} [{}] on {}", p.label(), ctx.kernels().gemm.name);
    let (m, n) = (p.m, p.n);
    let gap = |rng: &mut ChaCha8Rng| {
        if rng.random_bool(0.5) {
            rng.random_range(1..=4)
        } else {
            0
        }
    };

    // i32, with and without bias.
    let bias: Vec<i32> = (0..n).map(|_| rng.random_range(-100_000..=100_000)).collect();
    for b in [None, Some(&bias[..])] {
        let expected = p.expect_i32(&acc, b);
        let mut c = COut::<i32>::new(m, n, gap(rng), 2);
        let r = ctx.gemm_i32(p.acts(), &w, b, c.view());
        if fits_i32(&expected) {
            r.unwrap_or_else(|e| panic!("{label}: gemm_i32: {e}"));
            c.check(&format!("{label}: gemm_i32 bias={}", b.is_some()), &expected);
        } else {
            assert!(
                matches!(r, Err(Error::Overflow(_))),
                "{label}: gemm_i32 should overflow: {r:?}"
            );
        }
    }

    // f32, with and without bias.
    let fbias: Vec<f32> = (0..n).map(|_| rng.random_range(-10.0f32..10.0)).collect();
    for b in [None, Some(&fbias[..])] {
        let mut c = COut::<f32>::new(m, n, gap(rng), 1);
        ctx.gemm_f32(p.acts(), &w, b, c.view())
            .unwrap_or_else(|e| panic!("{label}: gemm_f32: {e}"));
        c.check(
            &format!("{label}: gemm_f32 bias={}", b.is_some()),
            &p.expect_f32(&acc, b),
        );
    }

    // Requantized, every mode, both output types, several clamps.
    let amax = acc.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0).max(1) as f32;
    let sb_max = p.sb.iter().copied().fold(0.0f32, f32::max);
    for mode in RequantMode::ALL {
        // Output scale so that results spread over, and a bit past, the 8-bit range.
        let sy = p.sa * sb_max * amax / 100.0 * rng.random_range(0.3f32..3.0);
        check_requant::<A, B, u8>(ctx, p, &w, &acc, mode, sy, &bias, rng, &label);
        check_requant::<A, B, i8>(ctx, p, &w, &acc, mode, sy, &bias, rng, &label);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_requant<A: Int8, B: Int8, O: Int8 + Out>(
    ctx: &Context,
    p: &Problem<A, B>,
    w: &PackedWeights,
    acc: &[i64],
    mode: RequantMode,
    sy: f32,
    bias: &[i32],
    rng: &mut ChaCha8Rng,
    label: &str,
) {
    let zp = O::saturate_from(rng.random_range(O::MIN..=O::MAX));
    let base = Requantize::new(sy, zp).mode(mode);
    let lo = rng.random_range(O::MIN..=O::MAX);
    let hi = rng.random_range(lo..=O::MAX);
    let variants = [
        base,
        base.bias(bias),
        base.bias(bias).relu(),
        base.relu6(),
        base.clamp(O::saturate_from(lo), O::saturate_from(hi)),
    ];
    for (vi, rq) in variants.iter().enumerate() {
        let mut c = COut::<O>::new(p.m, p.n, rng.random_range(0..=3), 1);
        ctx.gemm_requantize(p.acts(), w, rq, c.view())
            .unwrap_or_else(|e| panic!("{label}: gemm_requantize {} {} variant {vi}: {e}", O::NAME, mode.name()));
        let what = format!(
            "{label}: gemm_requantize -> {} {} sy={sy:e} zp={:?} clamp=[{:?},{:?}] bias={} (variant {vi})",
            O::NAME,
            mode.name(),
            rq.zero_point,
            rq.min,
            rq.max,
            rq.bias.is_some()
        );
        c.check(&what, &p.expect_requant(acc, rq));
    }
}

/// The B values `ctx` can pack, when none of its candidates takes every weight: those
/// whose stored form `b − b_offset` is within the first candidate's `max_abs_stored_b`.
fn admitted_b_range<B: Int8>(ctx: &Context) -> Option<(i32, i32)> {
    let cands = &ctx.kernels().gemm_candidates;
    if cands.iter().any(|k| k.max_abs_stored_b.is_none()) {
        return None;
    }
    let k = cands.first()?;
    let (lim, off) = (k.max_abs_stored_b?, k.b_offset_for(B::SIGNED));
    Some(((off - lim).max(B::MIN), (off + lim).min(B::MAX)))
}

/// One context per tier this CPU runs and per GEMM kernel of that tier (each kernel
/// once, at the lowest tier that offers it), so every kernel runs through the driver.
fn contexts() -> Vec<Context> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for isa in common::available_isas() {
        let base = Context::for_isa(isa).unwrap();
        for k in base.kernels().gemm_candidates.clone() {
            if !seen.contains(&k.name) {
                seen.push(k.name);
                out.push(base.clone().with_gemm_kernel(k.name).unwrap());
            }
        }
    }
    out
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------
// Correctness against the reference.

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 2),
    (1, 7, 1),
    (3, 1, 5),
    (1, 16, 64),
    (4, 16, 4),
    (5, 17, 3),
    (7, 33, 31),
    (13, 5, 129),
    (2, 64, 257),
    (67, 45, 300),
    (1, 200, 777),
    (128, 96, 1000),
];

fn random_shapes<A: Int8, B: Int8>(seed: u64) {
    let mut r = rng(seed);
    for ctx in contexts() {
        for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
            let per_column = si % 2 == 0;
            let strided = si % 3 != 1;
            let p = Problem::<A, B>::random(&mut r, m, n, k, per_column, strided);
            check_all_outputs(&ctx, &p, &mut r, "random shapes");
        }
    }
}

#[test]
fn random_shapes_u8_u8() {
    random_shapes::<u8, u8>(1);
}
#[test]
fn random_shapes_u8_i8() {
    random_shapes::<u8, i8>(2);
}
#[test]
fn random_shapes_i8_u8() {
    random_shapes::<i8, u8>(3);
}
#[test]
fn random_shapes_i8_i8() {
    random_shapes::<i8, i8>(4);
}

/// Panels so long that the driver splits N into column blocks (and M into row blocks):
/// tasks on the same rows reuse the activations a kernel packed (`GemmUkernel::packed_a`)
/// — in a row on one thread, split between two.
#[test]
fn packed_activations_reused_across_column_blocks() {
    let mut r = rng(5);
    for ctx in contexts() {
        for threads in [1, 2] {
            let ctx = ctx.clone().with_threads(threads).unwrap();
            let p = Problem::<u8, i8>::random(&mut r, 70, 80, 8000, true, true);
            check_all_outputs(&ctx, &p, &mut r, &format!("column blocks, {threads} threads"));
        }
    }
}

/// Every operand and zero point at its edges: the largest |a−za|·|b−zb| there is.
#[test]
fn extreme_values_all_combinations() {
    fn run<A: Int8, B: Int8>(ctx: &Context, r: &mut ChaCha8Rng) {
        for av in [A::MIN, A::MAX] {
            for za in [A::MIN, A::MAX] {
                for bv in [B::MIN, B::MAX] {
                    for zb in [B::MIN, 0.clamp(B::MIN, B::MAX), B::MAX] {
                        let p = Problem::constant(
                            9,
                            21,
                            301,
                            A::saturate_from(av),
                            A::saturate_from(za),
                            B::saturate_from(bv),
                            zb,
                        );
                        check_all_outputs(ctx, &p, r, "extremes");
                    }
                }
            }
        }
    }
    let mut r = rng(5);
    for ctx in contexts() {
        run::<u8, u8>(&ctx, &mut r);
        run::<u8, i8>(&ctx, &mut r);
        run::<i8, u8>(&ctx, &mut r);
        run::<i8, i8>(&ctx, &mut r);
    }
}

/// Threads change the schedule, never the result: 1 and 2 threads give identical
/// outputs (and both the reference), on the whole-K path and on the K-chunked one.
#[test]
fn one_and_two_threads_agree() {
    let mut r = rng(6);
    for isa in common::available_isas() {
        let c1 = Context::for_isa(isa).unwrap().with_threads(1).unwrap();
        let c2 = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
        assert_eq!((c1.threads(), c2.threads()), (1, 2));
        // 128 rows make two row blocks of 64: two tasks. K = 70 000 with full-range data
        // is past the i32 bound: the chunked path.
        for &(m, n, k) in &[(128usize, 96usize, 1000usize), (72, 16, 70_000)] {
            let p = Problem::<u8, i8>::random(&mut r, m, n, k, true, true);
            let w = p.pack(&c1);
            let acc = p.exact();
            let bias: Vec<i32> = (0..n).map(|_| r.random_range(-1000..=1000)).collect();
            let what = format!("{isa:?} {}", p.label());

            let expected = p.expect_i32(&acc, Some(&bias));
            let mut o1 = COut::<i32>::new(m, n, 3, 0);
            let mut o2 = COut::<i32>::new(m, n, 3, 0);
            c1.gemm_i32(p.acts(), &w, Some(&bias), o1.view()).unwrap();
            c2.gemm_i32(p.acts(), &w, Some(&bias), o2.view()).unwrap();
            assert_eq!(o1.data, o2.data, "{what}: i32 differs between 1 and 2 threads");
            o1.check(&what, &expected);

            let mut f1 = COut::<f32>::new(m, n, 1, 0);
            let mut f2 = COut::<f32>::new(m, n, 1, 0);
            c1.gemm_f32(p.acts(), &w, None, f1.view()).unwrap();
            c2.gemm_f32(p.acts(), &w, None, f2.view()).unwrap();
            let bits = |c: &COut<f32>| c.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&f1), bits(&f2), "{what}: f32 differs between 1 and 2 threads");
            f1.check(&what, &p.expect_f32(&acc, None));

            for mode in RequantMode::ALL {
                let amax = acc.iter().map(|v| v.unsigned_abs()).max().unwrap() as f32;
                let rq = Requantize::new(p.sa * 0.05 * amax / 100.0, 3i8).mode(mode).bias(&bias);
                let mut q1 = COut::<i8>::new(m, n, 2, 0);
                let mut q2 = COut::<i8>::new(m, n, 2, 0);
                c1.gemm_requantize(p.acts(), &w, &rq, q1.view()).unwrap();
                c2.gemm_requantize(p.acts(), &w, &rq, q2.view()).unwrap();
                assert_eq!(
                    q1.data,
                    q2.data,
                    "{what}: requantized {} differs between 1 and 2 threads",
                    mode.name()
                );
                q1.check(&what, &p.expect_requant(&acc, &rq));
            }
        }
    }
}

/// The free functions run on the default context, with weights packed by `PackedWeights::new`.
#[test]
fn free_functions_on_the_default_context() {
    let mut r = rng(7);
    let p = Problem::<i8, u8>::random(&mut r, 9, 19, 45, true, true);
    let w = PackedWeights::new(p.weights(), p.quant()).unwrap();
    assert_eq!(w.kernel_name(), Context::new().unwrap().kernels().gemm.name);
    assert_eq!((w.k(), w.n(), w.is_signed()), (45, 19, false));
    assert_eq!(w.zero_points(), &p.zb[..]);
    assert_eq!(w.scales(), &p.sb[..]);
    let acc = p.exact();
    let bias: Vec<i32> = (0..19).map(|j| j * 1000 - 9000).collect();

    let mut c = COut::<i32>::new(9, 19, 2, 1);
    gemm::gemm_i32(p.acts(), &w, Some(&bias), c.view()).unwrap();
    c.check("gemm::gemm_i32", &p.expect_i32(&acc, Some(&bias)));

    let fbias: Vec<f32> = (0..19).map(|j| j as f32 * 0.5).collect();
    let mut c = COut::<f32>::new(9, 19, 0, 0);
    gemm::gemm_f32(p.acts(), &w, Some(&fbias), c.view()).unwrap();
    c.check("gemm::gemm_f32", &p.expect_f32(&acc, Some(&fbias)));

    let rq = Requantize::new(0.02f32, 128u8)
        .bias(&bias)
        .mode(RequantMode::TfliteDoubleRounding)
        .relu();
    let mut c = COut::<u8>::new(9, 19, 5, 3);
    gemm::gemm_requantize(p.acts(), &w, &rq, c.view()).unwrap();
    c.check("gemm::gemm_requantize", &p.expect_requant(&acc, &rq));
}

/// The fused ReLU/ReLU6 clamps are the quantized 0 and 6.
#[test]
fn relu_and_relu6_clamp_bounds() {
    for (scale, zp) in [(0.05f32, 10u8), (0.023, 0), (0.5, 250), (1e-3, 128), (100.0, 7)] {
        let rq = Requantize::new(scale, zp).relu6();
        let six = (6.0f32 / scale).round_ties_even() as i64 + zp as i64;
        assert_eq!(
            (rq.min, rq.max as i64),
            (zp, six.clamp(0, 255)),
            "relu6 u8 scale {scale} zp {zp}"
        );
        let rq = Requantize::new(scale, zp).relu();
        assert_eq!((rq.min, rq.max), (zp, 255));
    }
    for (scale, zp) in [(0.05f32, -128i8), (0.1, 0), (0.01, 100)] {
        let rq = Requantize::new(scale, zp).relu6();
        let six = (6.0f32 / scale).round_ties_even() as i64 + zp as i64;
        assert_eq!(
            (rq.min, rq.max as i64),
            (zp, six.clamp(-128, 127)),
            "relu6 i8 scale {scale} zp {zp}"
        );
    }
    let rq = Requantize::new(1.0, 0i8);
    assert_eq!((rq.min, rq.max, rq.mode, rq.bias), (-128, 127, RequantMode::Fp32, None));
}

/// K = 0 gives the bias; M = 0 or N = 0 touches nothing.
#[test]
fn empty_dimensions() {
    let mut r = rng(8);
    for ctx in contexts() {
        // K = 0, with zero points (every result is the bias), A with a stride and no data.
        for (m, n) in [(1usize, 1usize), (5, 3), (9, 33)] {
            let mut p = Problem::<u8, i8>::random(&mut r, m, n, 0, true, false);
            p.zb = (0..n as i32).map(|j| j - 5).collect();
            p.lda = 4;
            assert!(p.a.is_empty());
            check_all_outputs(&ctx, &p, &mut r, "K = 0");
        }
        // M = 0 and N = 0.
        for (m, n, k) in [(0usize, 5usize, 7usize), (4, 0, 7), (0, 0, 0), (0, 3, 0)] {
            let p = Problem::<i8, i8>::random(&mut r, m, n, k, false, true).fit_to(&ctx);
            let w = p.pack(&ctx);
            let mut c = COut::<i32>::new(m, n, 1, 2);
            ctx.gemm_i32(p.acts(), &w, Some(&vec![1; n]), c.view()).unwrap();
            c.check("empty i32", &[]);
            let mut c = COut::<f32>::new(m, n, 1, 2);
            ctx.gemm_f32(p.acts(), &w, None, c.view()).unwrap();
            c.check("empty f32", &[]);
            let mut c = COut::<u8>::new(m, n, 1, 2);
            ctx.gemm_requantize(p.acts(), &w, &Requantize::new(1.0, 0u8), c.view())
                .unwrap();
            c.check("empty requant", &[]);
        }
    }
}

/// Weights packed for a tier a context does not run are refused, not run.
#[test]
fn weights_from_another_tier() {
    let isas = common::available_isas();
    let b = [1i8, 2, 3, 4, 5, 6];
    let a = [1u8, 2, 3, 4, 5, 6];
    for &hi in &isas {
        let w = PackedWeights::new_in(
            &Context::for_isa(hi).unwrap(),
            MatrixRef::new(&b, 3, 2),
            WeightQuant::per_tensor(0, 1.0),
        )
        .unwrap();
        let packed_isa = Context::for_isa(hi).unwrap().kernels().gemm.isa;
        for &lo in &isas {
            let ctx = Context::for_isa(lo).unwrap();
            let mut c = [0i32; 4];
            let r = ctx.gemm_i32(
                Activations::new(MatrixRef::new(&a, 2, 3), 0, 1.0),
                &w,
                None,
                MatrixMut::new(&mut c, 2, 2),
            );
            if packed_isa.within(lo) {
                r.unwrap();
                assert_eq!(c, [22, 28, 49, 64]);
            } else {
                assert!(
                    matches!(r, Err(Error::IsaUnavailable(_))),
                    "{hi:?} weights on {lo:?}: {r:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// GEMV (M ≤ 4): its own kernel and tiling in the driver, on the same packed weights.

/// Whether a call of `m` rows on `w` runs a GEMV kernel on `ctx`, which must be so for
/// M ≤ 4 whenever the context has a GEMV kernel that reads the weights' format.
fn runs_gemv(ctx: &Context, w: &PackedWeights, m: usize) -> bool {
    let k = ctx.gemm_kernel_for(w, m);
    let expected = ctx.kernels().gemv_for(&w.kernel(), m).is_some();
    assert_eq!(k.name != w.kernel_name(), expected, "M={m}: {} for weights of {}", k.name, w.kernel_name());
    if expected {
        assert!(m <= k.mr && k.name.contains("gemv"), "M={m} runs {}", k.name);
    }
    expected
}

/// M = 1..4 through the GEMV path of every context, every signedness, per-tensor and
/// per-column zero points, strided A and C, N across panel edges, and K below, at and
/// far past the i32-safe bound (so the chunked path runs): every output stage exact.
fn gemv_shapes<A: Int8, B: Int8>(seed: u64) {
    let mut r = rng(seed);
    let mut ran_gemv = 0;
    for ctx in contexts() {
        for m in 1..=4 {
            for (i, &(n, k)) in [(1, 1), (17, 3), (32, 64), (33, 257), (100, 1001), (75, 40_000)].iter().enumerate() {
                let p = Problem::<A, B>::random(&mut r, m, n, k, (i + m) % 2 == 0, i % 3 != 2);
                let p = p.fit_to(&ctx);
                ran_gemv += runs_gemv(&ctx, &p.pack(&ctx), m) as usize;
                check_all_outputs(&ctx, &p, &mut r, "gemv");
            }
        }
    }
    // On a CPU with a GEMV kernel, some context must have run it.
    let have = common::available_isas().iter().any(|&i| !Context::for_isa(i).unwrap().kernels().gemv.is_empty());
    assert_eq!(ran_gemv > 0, have, "GEMV kernels available: {have}, GEMV cases run: {ran_gemv}");
}

#[test]
fn gemv_rows_1_to_4_u8_u8() {
    gemv_shapes::<u8, u8>(21);
}
#[test]
fn gemv_rows_1_to_4_u8_i8() {
    gemv_shapes::<u8, i8>(22);
}
#[test]
fn gemv_rows_1_to_4_i8_u8() {
    gemv_shapes::<i8, u8>(23);
}
#[test]
fn gemv_rows_1_to_4_i8_i8() {
    gemv_shapes::<i8, i8>(24);
}

/// The GEMV path and the GEMM path give identical results, for 1 and 2 threads (the
/// GEMV splits N between threads), on whole-K and on chunked K, and M = 5 leaves the
/// GEMV path.
#[test]
fn gemv_matches_gemm_path_and_threads() {
    let mut r = rng(25);
    for isa in common::available_isas() {
        let c1 = Context::for_isa(isa).unwrap().with_threads(1).unwrap();
        let c2 = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
        let no_gemv = c1.clone().without_gemv();
        for &(m, n, k) in &[(1usize, 1000usize, 4096usize), (3, 333, 2000), (4, 97, 50_000), (2, 40, 70_000), (5, 64, 100)] {
            let p = Problem::<u8, i8>::random(&mut r, m, n, k, true, true).fit_to(&c1);
            let w = p.pack(&c1);
            let gemv = runs_gemv(&c1, &w, m);
            assert!(!gemv || m <= 4);
            assert_eq!(no_gemv.gemm_kernel_for(&w, m).name, w.kernel_name());
            let acc = p.exact();
            let what = format!("{isa:?} {} gemv={gemv}", p.label());
            for mode in RequantMode::ALL {
                let amax = acc.iter().map(|v| v.unsigned_abs()).max().unwrap().max(1) as f32;
                let rq = Requantize::new(p.sa * 0.05 * amax / 100.0, 3u8).mode(mode);
                let outs: Vec<Vec<u8>> = [&c1, &c2, &no_gemv]
                    .iter()
                    .map(|ctx| {
                        let mut q = COut::<u8>::new(m, n, 2, 0);
                        ctx.gemm_requantize(p.acts(), &w, &rq, q.view()).unwrap();
                        q.check(&format!("{what} {}", mode.name()), &p.expect_requant(&acc, &rq));
                        q.data
                    })
                    .collect();
                assert!(outs.iter().all(|o| *o == outs[0]), "{what}: paths differ");
            }
            let expected = p.expect_i32(&acc, None);
            if fits_i32(&expected) {
                for ctx in [&c1, &c2, &no_gemv] {
                    let mut c = COut::<i32>::new(m, n, 1, 1);
                    ctx.gemm_i32(p.acts(), &w, None, c.view()).unwrap();
                    c.check(&format!("{what} i32 threads={}", ctx.threads()), &expected);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Overflow policy (DESIGN.md §2): exact i32 or Error::Overflow; f32 and requantized
// outputs from the exact i64 accumulator.

/// The largest K with `K·255·255 ≤ i32::MAX`.
const K_BOUND: usize = (i32::MAX as usize) / (255 * 255);
/// `i32::MAX − K_BOUND·255·255`: the bias that lands exactly on `i32::MAX`.
const BIAS_TO_MAX: i32 = i32::MAX - (K_BOUND as i32) * 255 * 255;

/// Checks every output of `p` with `bias` on every context: i32 exact or Overflow as
/// `expect_overflow` says; f32 and requantized equal to the reference.
fn check_overflow_case(p: &Problem<u8, i8>, bias: &[i32], expect_overflow: bool, what: &str) {
    let acc = p.exact();
    let expected = p.expect_i32(&acc, Some(bias));
    assert_eq!(!fits_i32(&expected), expect_overflow, "{what}: test construction");
    for ctx in contexts() {
        if admitted_b_range::<i8>(&ctx).is_some() {
            // These cases are built from full-range weights (127, −128); a conditional
            // kernel cannot take them (its own long-K tests live beside it).
            continue;
        }
        let w = p.pack(&ctx);
        let label = format!("{what} on {}", ctx.kernels().gemm.name);
        let mut c = COut::<i32>::new(p.m, p.n, 1, 1);
        let r = ctx.gemm_i32(p.acts(), &w, Some(bias), c.view());
        if expect_overflow {
            match r {
                Err(Error::Overflow(msg)) => assert!(msg.contains("i32"), "{label}: {msg}"),
                other => panic!("{label}: expected Error::Overflow, got {other:?}"),
            }
        } else {
            r.unwrap_or_else(|e| panic!("{label}: {e}"));
            c.check(&label, &expected);
        }
        let mut c = COut::<f32>::new(p.m, p.n, 2, 0);
        ctx.gemm_f32(p.acts(), &w, None, c.view()).unwrap();
        c.check(&format!("{label}: f32"), &p.expect_f32(&acc, None));
        for mode in RequantMode::ALL {
            for sy in [1.0e8f32, 5.0e6, 1.0] {
                let rq = Requantize::new(sy, 100u8).mode(mode).bias(bias);
                let mut c = COut::<u8>::new(p.m, p.n, 1, 1);
                ctx.gemm_requantize(p.acts(), &w, &rq, c.view()).unwrap();
                c.check(
                    &format!("{label}: u8 {} sy={sy}", mode.name()),
                    &p.expect_requant(&acc, &rq),
                );
                let rq = Requantize::new(sy, -5i8).mode(mode).bias(bias);
                let mut c = COut::<i8>::new(p.m, p.n, 0, 2);
                ctx.gemm_requantize(p.acts(), &w, &rq, c.view()).unwrap();
                c.check(
                    &format!("{label}: i8 {} sy={sy}", mode.name()),
                    &p.expect_requant(&acc, &rq),
                );
            }
        }
    }
}

#[test]
fn overflow_far_past_the_bound() {
    // All 255 (za = 0) × all 127 (zb = −128): every term is 255·255, K = 70 000.
    let p = Problem::<u8, i8>::constant(3, 5, 70_000, 255, 0, 127, -128);
    check_overflow_case(&p, &[0; 5], true, "K=70000 all 255x127 zb=-128");
    // The negative side: a − za = −255.
    let p = Problem::<u8, i8>::constant(2, 17, 70_000, 0, 255, 127, -128);
    check_overflow_case(&p, &[7; 17], true, "K=70000 -255x255");
}

#[test]
fn past_the_bound_but_fits_is_exact() {
    // Bound: 70 000·255·128 > i32::MAX, but the sums cancel: B alternates 127 / −128
    // by row (zb = 0), so each column sums to 255·35 000·(127 − 128).
    let mut p = Problem::<u8, i8>::constant(3, 18, 70_000, 255, 0, 127, 0);
    for kk in (1..p.k).step_by(2) {
        p.b[kk * p.n..(kk + 1) * p.n].fill(-128);
    }
    check_overflow_case(&p, &[0; 18], false, "K=70000 cancelling");
    // Random data and per-column zero points over 9 K chunks (K not a multiple of the
    // chunk), i32 results well inside the range.
    let mut r = rng(9);
    let p = Problem::<u8, i8>::random(&mut r, 5, 19, 8 * K_CHUNK + 4464, true, true);
    check_overflow_case(&p, &[-3; 19], false, "K=70000 random per-column");
    // Exactly two chunks, and one element more: every term is ≥ 0 (za = 0, zb = −128),
    // so a bias of −i32::MAX keeps every result in range and one of i32::MAX − 1 does not;
    // either bias alone is past the bound.
    for k in [2 * K_CHUNK, 2 * K_CHUNK + 1] {
        let mut p = Problem::<u8, i8>::random(&mut r, 4, 16, k, false, false);
        p.za = 0;
        p.zb = vec![-128; 16];
        check_overflow_case(&p, &[-i32::MAX; 16], false, &format!("K={k} bias -i32::MAX"));
        check_overflow_case(&p, &[i32::MAX - 1; 16], true, &format!("K={k} bias i32::MAX-1"));
    }
}

#[test]
fn at_the_bound_and_one_step_past() {
    assert_eq!(K_BOUND, 33_025);
    assert_eq!(BIAS_TO_MAX, 33_022);
    let n = 6;
    // At the bound: K·255·255 + |bias| = i32::MAX exactly, whole-K i32 accumulation, the
    // result is i32::MAX.
    let p = Problem::<u8, i8>::constant(2, n, K_BOUND, 255, 0, 127, -128);
    check_overflow_case(&p, &vec![BIAS_TO_MAX; n], false, "at the bound: i32::MAX");
    // One past via the bias: the true value is i32::MAX + 1.
    check_overflow_case(&p, &vec![BIAS_TO_MAX + 1; n], true, "bias one past");
    // One past via the bias, but the result fits: bias −(BIAS_TO_MAX + 1) on −255·255
    // terms is exactly i32::MIN.
    let neg = Problem::<u8, i8>::constant(2, n, K_BOUND, 0, 255, 127, -128);
    check_overflow_case(&neg, &vec![-(BIAS_TO_MAX + 1); n], false, "past the bound: i32::MIN");
    check_overflow_case(&neg, &vec![-(BIAS_TO_MAX + 2); n], true, "below i32::MIN");
    // One past via K.
    let p = Problem::<u8, i8>::constant(2, n, K_BOUND + 1, 255, 0, 127, -128);
    check_overflow_case(&p, &vec![0; n], true, "K one past");
    // Mixed columns: a bias past the bound on one column sends the whole call to the
    // chunked path; only the overflowing column may fail it.
    let mut bias = vec![0; n];
    bias[3] = BIAS_TO_MAX + 1;
    let p = Problem::<u8, i8>::constant(2, n, K_BOUND, 255, 0, 127, -128);
    check_overflow_case(&p, &bias, true, "one column past");
    bias[3] = -(BIAS_TO_MAX + 1);
    check_overflow_case(&p, &bias, false, "past the bound, fits");
    // The bias alone: K small, bias at the edge of i32.
    let p = Problem::<u8, i8>::constant(3, n, 10, 255, 0, 127, -128);
    let at = i32::MAX - 10 * 255 * 255;
    check_overflow_case(&p, &vec![at; n], false, "bias to i32::MAX");
    check_overflow_case(&p, &vec![at + 1; n], true, "bias one past i32::MAX");
}

// ---------------------------------------------------------------------------------------
// Bad inputs: the right error variant, never a panic.

fn valid_weights() -> PackedWeights {
    PackedWeights::new(MatrixRef::new(&[1i8; 12], 3, 4), WeightQuant::per_tensor(0, 0.5)).unwrap()
}

#[test]
fn packed_weights_bad_inputs() {
    let b = [0i8; 12];
    let pack_i8 = |m: MatrixRef<'_, i8>, q: WeightQuant<'_>| PackedWeights::new(m, q);
    let q = WeightQuant::per_tensor(0, 1.0);
    // Stride < cols.
    assert_eq!(
        pack_i8(MatrixRef::new(&b, 3, 4).with_stride(3), q).unwrap_err(),
        Error::InvalidStride {
            what: "b",
            stride: 3,
            min: 4
        }
    );
    // Short buffer.
    assert_eq!(
        pack_i8(MatrixRef::new(&b[..11], 3, 4), q).unwrap_err(),
        Error::BufferTooSmall {
            what: "b",
            needed: 12,
            got: 11
        }
    );
    assert_eq!(
        pack_i8(MatrixRef::new(&b, 3, 4).with_stride(5), q).unwrap_err(),
        Error::BufferTooSmall {
            what: "b",
            needed: 14,
            got: 12
        }
    );
    // Rows × stride overflowing usize.
    assert!(matches!(
        pack_i8(MatrixRef::new(&b, usize::MAX, 4), q),
        Err(Error::InvalidParameter(_))
    ));
    // Zero points outside the weight type.
    for (zp, signed) in [
        (128, true),
        (-129, true),
        (-1, false),
        (256, false),
        (i32::MIN, true),
        (i32::MAX, false),
    ] {
        let r = if signed {
            pack_i8(MatrixRef::new(&b, 3, 4), WeightQuant::per_tensor(zp, 1.0))
        } else {
            PackedWeights::new(MatrixRef::new(&[0u8; 12], 3, 4), WeightQuant::per_tensor(zp, 1.0))
        };
        assert!(
            matches!(r, Err(Error::ZeroPointOutOfRange { value, .. }) if value == zp as i64),
            "zp {zp}: {r:?}"
        );
    }
    let r = pack_i8(
        MatrixRef::new(&b, 3, 4),
        WeightQuant::per_column(&[0, 1, 128, 2], &[1.0; 4]),
    );
    assert!(
        matches!(
            r,
            Err(Error::ZeroPointOutOfRange {
                value: 128,
                min: -128,
                max: 127,
                ..
            })
        ),
        "{r:?}"
    );
    // Per-column lengths.
    for (zps, scales) in [
        (&[0; 3][..], &[1.0; 4][..]),
        (&[0; 5], &[1.0; 4]),
        (&[0; 4], &[1.0; 3]),
        (&[], &[1.0; 4]),
        (&[0; 4], &[]),
    ] {
        let r = pack_i8(MatrixRef::new(&b, 3, 4), WeightQuant::per_column(zps, scales));
        assert!(
            matches!(r, Err(Error::ShapeMismatch(_))),
            "{} zps, {} scales: {r:?}",
            zps.len(),
            scales.len()
        );
    }
    let r = pack_i8(
        MatrixRef::new(&b, 3, 4),
        WeightQuant::zero_point_only(PerChannel::Channel(&[0; 2])),
    );
    assert!(matches!(r, Err(Error::ShapeMismatch(_))), "{r:?}");
    // Bad scales, per tensor and in one column.
    for s in [
        f32::NAN,
        0.0,
        -0.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -f32::MIN_POSITIVE,
    ] {
        let r = pack_i8(MatrixRef::new(&b, 3, 4), WeightQuant::per_tensor(0, s));
        assert!(
            matches!(
                r,
                Err(Error::InvalidScale {
                    what: "weight scale",
                    ..
                })
            ),
            "scale {s}: {r:?}"
        );
        let r = pack_i8(
            MatrixRef::new(&b, 3, 4),
            WeightQuant::per_column(&[0; 4], &[1.0, 2.0, s, 3.0]),
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidScale {
                    what: "weight scale",
                    ..
                })
            ),
            "column scale {s}: {r:?}"
        );
    }
    // Degenerate but valid: no rows or no columns, with any stride.
    for (k, n, stride) in [
        (0usize, 4usize, 4usize),
        (3, 0, 0),
        (3, 0, 7),
        (0, 0, 9),
        (usize::MAX, 0, 0),
        (1 << 40, 0, 3),
    ] {
        let w = pack_i8(
            MatrixRef::new(&[], k, n).with_stride(stride),
            WeightQuant::per_tensor(1, 1.0),
        )
        .unwrap();
        assert_eq!((w.k(), w.n()), (k, n));
    }
}

/// Calls every GEMM entry point (context and free) with the same arguments and returns
/// each one's result, so a bad input is checked everywhere at once.
fn all_entry_points(
    a: Activations<'_, u8>,
    w: &PackedWeights,
    m: usize,
    n: usize,
    ldc: usize,
    len: usize,
) -> Vec<(&'static str, qkern::Result<()>)> {
    let ctx = Context::new().unwrap();
    let rq = Requantize::new(0.1, 3u8);
    let mut ci = vec![0i32; len];
    let mut cf = vec![0f32; len];
    let mut cq = vec![0u8; len];
    let mut cs = vec![0i8; len];
    vec![
        (
            "ctx.gemm_i32",
            ctx.gemm_i32(a, w, None, MatrixMut::new(&mut ci, m, n).with_stride(ldc)),
        ),
        (
            "ctx.gemm_f32",
            ctx.gemm_f32(a, w, None, MatrixMut::new(&mut cf, m, n).with_stride(ldc)),
        ),
        (
            "ctx.gemm_requantize u8",
            ctx.gemm_requantize(a, w, &rq, MatrixMut::new(&mut cq, m, n).with_stride(ldc)),
        ),
        (
            "ctx.gemm_requantize i8",
            ctx.gemm_requantize(
                a,
                w,
                &Requantize::new(0.1, 0i8),
                MatrixMut::new(&mut cs, m, n).with_stride(ldc),
            ),
        ),
        (
            "gemm::gemm_i32",
            gemm::gemm_i32(a, w, None, MatrixMut::new(&mut ci, m, n).with_stride(ldc)),
        ),
        (
            "gemm::gemm_f32",
            gemm::gemm_f32(a, w, None, MatrixMut::new(&mut cf, m, n).with_stride(ldc)),
        ),
        (
            "gemm::gemm_requantize",
            gemm::gemm_requantize(a, w, &rq, MatrixMut::new(&mut cq, m, n).with_stride(ldc)),
        ),
    ]
}

fn assert_ok(results: Vec<(&'static str, qkern::Result<()>)>, case: &str) {
    for (f, r) in results {
        r.unwrap_or_else(|e| panic!("{case}: {f} returned {e:?}"));
    }
}

fn assert_all(results: Vec<(&'static str, qkern::Result<()>)>, case: &str, ok: impl Fn(&Error) -> bool) {
    for (f, r) in results {
        match r {
            Err(e) if ok(&e) => {}
            other => panic!("{case}: {f} returned {other:?}"),
        }
    }
}

#[test]
fn gemm_bad_shapes_buffers_strides() {
    let w = valid_weights(); // K = 3, N = 4
    static A: [u8; 64] = [1; 64];
    let a: &'static [u8] = &A;
    let act = |data: &'static [u8], m, k, lda| Activations::new(MatrixRef::new(data, m, k).with_stride(lda), 0u8, 0.5);
    // K mismatch.
    assert_all(all_entry_points(act(a, 2, 4, 4), &w, 2, 4, 4, 8), "K mismatch", |e| {
        matches!(e, Error::ShapeMismatch(_))
    });
    assert_all(all_entry_points(act(a, 2, 2, 2), &w, 2, 4, 4, 8), "K mismatch", |e| {
        matches!(e, Error::ShapeMismatch(_))
    });
    // Short A.
    assert_all(
        all_entry_points(act(&a[..5], 2, 3, 3), &w, 2, 4, 4, 8),
        "short A",
        |e| {
            *e == Error::BufferTooSmall {
                what: "a",
                needed: 6,
                got: 5,
            }
        },
    );
    assert_all(
        all_entry_points(act(&a[..7], 2, 3, 5), &w, 2, 4, 4, 8),
        "short strided A",
        |e| {
            *e == Error::BufferTooSmall {
                what: "a",
                needed: 8,
                got: 7,
            }
        },
    );
    // A stride < K.
    assert_all(all_entry_points(act(a, 2, 3, 2), &w, 2, 4, 4, 8), "A stride", |e| {
        *e == Error::InvalidStride {
            what: "a",
            stride: 2,
            min: 3,
        }
    });
    // A rows × stride overflowing usize.
    assert_all(
        all_entry_points(act(a, usize::MAX, 3, 3), &w, usize::MAX, 4, 4, 8),
        "A overflow",
        |e| matches!(e, Error::InvalidParameter(_)),
    );
    // Short C.
    assert_all(all_entry_points(act(a, 2, 3, 3), &w, 2, 4, 4, 7), "short C", |e| {
        *e == Error::BufferTooSmall {
            what: "c",
            needed: 8,
            got: 7,
        }
    });
    assert_all(
        all_entry_points(act(a, 2, 3, 3), &w, 2, 4, 6, 9),
        "short strided C",
        |e| {
            *e == Error::BufferTooSmall {
                what: "c",
                needed: 10,
                got: 9,
            }
        },
    );
    // C stride < N.
    assert_all(all_entry_points(act(a, 2, 3, 3), &w, 2, 4, 3, 64), "C stride", |e| {
        *e == Error::InvalidStride {
            what: "c",
            stride: 3,
            min: 4,
        }
    });
    // C of the wrong shape.
    assert_all(all_entry_points(act(a, 2, 3, 3), &w, 3, 4, 4, 64), "C rows", |e| {
        matches!(e, Error::ShapeMismatch(_))
    });
    assert_all(all_entry_points(act(a, 2, 3, 3), &w, 2, 5, 5, 64), "C cols", |e| {
        matches!(e, Error::ShapeMismatch(_))
    });
    assert_all(all_entry_points(act(a, 2, 3, 3), &w, 2, 3, 4, 64), "C cols", |e| {
        matches!(e, Error::ShapeMismatch(_))
    });
    // And the same call with good arguments works, so the above failed for their reason.
    assert_ok(all_entry_points(act(a, 2, 3, 3), &w, 2, 4, 4, 8), "valid");
    assert_ok(all_entry_points(act(a, 2, 3, 5), &w, 2, 4, 7, 11), "valid strided");
}

#[test]
fn gemm_bad_bias_scales_and_clamps() {
    let w = valid_weights(); // K = 3, N = 4
    let ctx = Context::new().unwrap();
    let a = [7u8; 6];
    let act = |scale: f32| Activations::new(MatrixRef::new(&a, 2, 3), 1u8, scale);
    let mut ci = [0i32; 8];
    let mut cf = [0f32; 8];
    let mut cq = [0u8; 8];
    // Bias length.
    for len in [0usize, 3, 5] {
        let bias = vec![1i32; len];
        let r = ctx.gemm_i32(act(1.0), &w, Some(&bias), MatrixMut::new(&mut ci, 2, 4));
        assert!(matches!(r, Err(Error::ShapeMismatch(_))), "i32 bias {len}: {r:?}");
        let r = gemm::gemm_i32(act(1.0), &w, Some(&bias), MatrixMut::new(&mut ci, 2, 4));
        assert!(matches!(r, Err(Error::ShapeMismatch(_))), "free i32 bias {len}: {r:?}");
        let fb = vec![1f32; len];
        let r = ctx.gemm_f32(act(1.0), &w, Some(&fb), MatrixMut::new(&mut cf, 2, 4));
        assert!(matches!(r, Err(Error::ShapeMismatch(_))), "f32 bias {len}: {r:?}");
        let r = ctx.gemm_requantize(
            act(1.0),
            &w,
            &Requantize::new(1.0, 0u8).bias(&bias),
            MatrixMut::new(&mut cq, 2, 4),
        );
        assert!(matches!(r, Err(Error::ShapeMismatch(_))), "requant bias {len}: {r:?}");
    }
    // Weights without scales: integer output only.
    let w0 = PackedWeights::new(
        MatrixRef::new(&[1i8; 12], 3, 4),
        WeightQuant::zero_point_only(PerChannel::Tensor(0)),
    )
    .unwrap();
    assert!(w0.scales().is_empty());
    ctx.gemm_i32(act(1.0), &w0, None, MatrixMut::new(&mut ci, 2, 4))
        .unwrap();
    assert_eq!(ci, [18; 8]); // (7 − 1)·1·3
    let r = ctx.gemm_f32(act(1.0), &w0, None, MatrixMut::new(&mut cf, 2, 4));
    assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
    let r = gemm::gemm_f32(act(1.0), &w0, None, MatrixMut::new(&mut cf, 2, 4));
    assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
    let r = ctx.gemm_requantize(act(1.0), &w0, &Requantize::new(1.0, 0u8), MatrixMut::new(&mut cq, 2, 4));
    assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
    let r = gemm::gemm_requantize(
        act(1.0),
        &w0,
        &Requantize::new(1.0, 0i8),
        MatrixMut::new(&mut [0i8; 8], 2, 4),
    );
    assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
    // Bad activation and output scales.
    for s in [f32::NAN, 0.0, -0.0, -2.0, f32::INFINITY, f32::NEG_INFINITY] {
        let r = ctx.gemm_f32(act(s), &w, None, MatrixMut::new(&mut cf, 2, 4));
        assert!(
            matches!(
                r,
                Err(Error::InvalidScale {
                    what: "activation scale",
                    ..
                })
            ),
            "f32 sa={s}: {r:?}"
        );
        let r = ctx.gemm_requantize(act(s), &w, &Requantize::new(1.0, 0u8), MatrixMut::new(&mut cq, 2, 4));
        assert!(
            matches!(
                r,
                Err(Error::InvalidScale {
                    what: "activation scale",
                    ..
                })
            ),
            "requant sa={s}: {r:?}"
        );
        let r = ctx.gemm_requantize(act(1.0), &w, &Requantize::new(s, 0u8), MatrixMut::new(&mut cq, 2, 4));
        assert!(
            matches!(
                r,
                Err(Error::InvalidScale {
                    what: "output scale",
                    ..
                })
            ),
            "requant sy={s}: {r:?}"
        );
        let r = ctx.gemm_requantize(
            act(1.0),
            &w,
            &Requantize::new(s, 0u8).relu6(),
            MatrixMut::new(&mut cq, 2, 4),
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidScale {
                    what: "output scale",
                    ..
                })
            ),
            "relu6 sy={s}: {r:?}"
        );
    }
    // Valid scales whose combination is not representable: sa·sb/sy is 0 or infinite.
    for (sa, sy) in [(1e-30f32, 1e30f32), (1e30, 1e-30)] {
        for mode in RequantMode::ALL {
            let r = ctx.gemm_requantize(
                act(sa),
                &w,
                &Requantize::new(sy, 0u8).mode(mode),
                MatrixMut::new(&mut cq, 2, 4),
            );
            assert!(
                matches!(r, Err(Error::InvalidScale { .. })),
                "sa={sa} sy={sy} {}: {r:?}",
                mode.name()
            );
        }
    }
    // The dequantization scale sa·sb of the f32 output, likewise.
    for (sa, sb) in [(1e-30f32, 1e-30f32), (1e30, 1e30)] {
        let wb = PackedWeights::new(MatrixRef::new(&[1i8; 12], 3, 4), WeightQuant::per_tensor(0, sb)).unwrap();
        let r = ctx.gemm_f32(act(sa), &wb, None, MatrixMut::new(&mut cf, 2, 4));
        assert!(
            matches!(r, Err(Error::InvalidScale { .. })),
            "f32 sa={sa} sb={sb}: {r:?}"
        );
    }
    // Clamp min > max.
    let r = ctx.gemm_requantize(
        act(1.0),
        &w,
        &Requantize::new(1.0, 0u8).clamp(9, 8),
        MatrixMut::new(&mut cq, 2, 4),
    );
    assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
    let r = gemm::gemm_requantize(
        act(1.0),
        &w,
        &Requantize::new(1.0, 0i8).clamp(1, -1),
        MatrixMut::new(&mut [0i8; 8], 2, 4),
    );
    assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
    // min == max is a valid (constant) clamp.
    ctx.gemm_requantize(
        act(1.0),
        &w,
        &Requantize::new(1.0, 0u8).clamp(9, 9),
        MatrixMut::new(&mut cq, 2, 4),
    )
    .unwrap();
    assert_eq!(cq, [9; 8]);
}

#[test]
fn context_bad_inputs() {
    // Every tier this CPU lacks (another architecture's, at least) is refused.
    let mut lacked = 0;
    for isa in Isa::ALL {
        if !qkern::dispatch::cpu().has(isa) {
            lacked += 1;
            let r = Context::for_isa(isa);
            assert!(
                matches!(r, Err(Error::IsaUnavailable(ref m)) if m.contains(isa.name())),
                "{isa:?}: {:?}",
                r.map(|c| c.threads())
            );
        }
    }
    assert!(lacked >= 3, "a CPU never has both architectures' tiers");
    let foreign = if cfg!(target_arch = "aarch64") {
        Isa::Avx2
    } else {
        Isa::Neon
    };
    assert!(matches!(Context::for_isa(foreign), Err(Error::IsaUnavailable(_))));
    // Zero threads.
    let r = Context::new().unwrap().with_threads(0);
    assert!(
        matches!(r, Err(Error::InvalidParameter(_))),
        "{:?}",
        r.map(|c| c.threads())
    );
    let r = Context::for_isa(Isa::Scalar).unwrap().with_threads(0);
    assert!(
        matches!(r, Err(Error::InvalidParameter(_))),
        "{:?}",
        r.map(|c| c.threads())
    );
    assert_eq!(Context::new().unwrap().with_threads(3).unwrap().threads(), 3);
}

/// Multipliers far above 1 (sa·sb/sy up to f32::MAX, finite and valid): every nonzero
/// accumulator saturates to the clamp on its side, zero gives the zero point — in every
/// mode, with no overflow inside the fixed-point arithmetic.
#[test]
fn huge_multipliers_saturate() {
    // A: one row each of +1, 0 and −1 around za; B: all 1 with zb = 0; K = 2.
    let a = [11u8, 11, 10, 10, 9, 9];
    let b = [1i8; 8];
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap();
        for (sa, sb, sy) in [
            (1e19f32, 1e19f32, 1.0f32),
            (3e38, 1.0, 1.0),
            (1e10, 1e10, 1e-10),
            (1.0, 1.0, 1e-9),
            (1.0, 1.0, 2f32.powi(-31)),
        ] {
            let w = PackedWeights::new_in(&ctx, MatrixRef::new(&b, 2, 4), WeightQuant::per_tensor(0, sb)).unwrap();
            for mode in RequantMode::ALL {
                let mut c = [0u8; 12];
                let rq = Requantize::new(sy, 100u8).mode(mode).clamp(3, 250);
                ctx.gemm_requantize(
                    Activations::new(MatrixRef::new(&a, 3, 2), 10u8, sa),
                    &w,
                    &rq,
                    MatrixMut::new(&mut c, 3, 4),
                )
                .unwrap();
                assert_eq!(
                    c,
                    [250, 250, 250, 250, 100, 100, 100, 100, 3, 3, 3, 3],
                    "{isa:?} sa={sa} sb={sb} sy={sy} {}",
                    mode.name()
                );
            }
        }
    }
}

/// Fuzz finding (ffi, fuzz/regressions/ffi/gemm_weights_create_k0_huge_n_capacity_overflow):
/// K = 0 with a huge N passes the buffer check (B is empty) and used to panic with a
/// capacity overflow while allocating the per-column tables. Now an `Overflow` error.
#[test]
fn packing_refuses_unaddressable_sizes() {
    let empty: [i8; 0] = [];
    for (k, n) in [(0usize, usize::MAX), (0, usize::MAX / 3), (0, 1 << 60)] {
        let r = PackedWeights::new(MatrixRef::new(&empty, k, n), WeightQuant::per_tensor(0, 1.0));
        assert!(matches!(r, Err(Error::Overflow(_))), "K = {k}, N = {n}: {r:?}");
    }
}
