//! The shared exactness tester (feature `testing`): every kernel goes through it.
//!
//! [`check_gemm_ukernel`] drives one registered [`GemmUkernel`] directly, on panels packed
//! by [`pack_b_kgroups`] in the kernel's own format, and requires its output to equal
//! [`gemm_i64`] followed by [`output_stage_ref`] bit for bit (DESIGN.md §6). The shapes are
//! derived from the kernel's `MR`, `NR` and `KR`, so a new kernel gets coverage of its own
//! edges without writing a test. Everything is deterministic: the inputs come from a
//! SplitMix64 generator seeded by the kernel's name.
//!
//! The tester stays inside the kernel contract ([`GemmArgs`]): the true accumulator plus
//! bias always fits in i32 — with cases exactly at `i32::MAX` and `i32::MIN` — because
//! going past it is the driver's job (K chunks carried in i64), tested through the public
//! API instead. Likewise a kernel with a precondition on its weights
//! (`max_abs_stored_b`, e.g. AVX2 `vpmaddubsw`) is fed only weights that satisfy it, with
//! its weight extremes at the bound: the packer never gives it others.

pub mod codebook;
pub mod decode;
pub mod dwconv;
pub mod igemm;
pub use codebook::{CodebookTestSummary, check_codebook_ukernel};
pub use decode::{DecodeTestSummary, check_codebook_decoder};
pub use dwconv::{DwconvTestSummary, check_dwconv_ukernel};
pub use igemm::{IgemmTestSummary, check_igemm_ukernel};

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::pack::pack_b_kgroups;
use crate::reference::{RefOutput, gemm_i64, output_stage_ref, quantize_multiplier};
use crate::types::{
    APackFn, GemmArgs, GemmUkernel, GemmUkernelFn, Int8, OutputKind, OutputStage, PackedA, QuantizedMultiplier,
    RequantMode,
};

/// A small deterministic generator (SplitMix64): the kernels crate has no `rand`, and a
/// fixed, documented sequence keeps every failure reproducible on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// A seed derived from a string (FNV-1a), e.g. a kernel name.
    pub fn seed_from_str(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the multiply-shift bias is far below what matters here).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + ((self.next_u64() as u128 * span) >> 64) as i128) as i64
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        self.range_i64(lo as i64, hi as i64) as i32
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len())]
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// What [`check_gemm_ukernel`] ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmTestSummary {
    /// The kernel's name.
    pub kernel: &'static str,
    /// (A, B) signedness combinations the kernel has and that were tested.
    pub combos: usize,
    /// Distinct inputs (shape, strides, data, zero points, bias).
    pub cases: usize,
    /// Kernel calls: one per output stage per case, each checked element by element.
    pub calls: usize,
}

/// `2^e` as f64 (`e` within the normal range), built from bits: `core` has no `powi`.
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// Bytes of poison after A's last row and after the packed panel: a kernel that uses
/// data past its inputs (instead of only reading it) sums poison and fails.
const TAIL: usize = 64;
/// Canary elements before and after the output tile, to catch writes outside it.
const GUARD: usize = 24;
/// The largest accumulator magnitude the kernel contract admits.
const I32_MAX: i64 = i32::MAX as i64;

/// How the i32 bias of a case is chosen, once the exact accumulators are known (the bias
/// must keep every true value within i32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BiasStyle {
    Zero,
    /// Random, up to ±2^20, within the room each column has.
    Random,
    /// At the edge of each column's room: some results are exactly `i32::MAX`/`i32::MIN`.
    Edges,
    /// At-the-bound cases: even columns exactly at `i32::MAX` (or `MIN` when the
    /// accumulators are negative), odd columns 0.
    Saturate,
}

/// Which output stages a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stages {
    /// I32, F32 and every (U8, I8) × mode.
    Full,
    /// I32, F32 and each mode once with a random output type (long-K cases).
    Light,
    /// I32, F32 and one mode, rotating from case to case, with a random output type
    /// (the K-at-the-bound cases, the longest of all).
    Minimal,
}

/// One input of one (A, B) combination.
struct Case<A, B> {
    family: &'static str,
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    /// `(m−1)·lda + k` elements plus [`TAIL`], gaps and tail filled with poison.
    a: Vec<A>,
    za: i32,
    b: Vec<B>,
    ldb: usize,
    /// Per-column weight zero points (`n`).
    zb: Vec<i32>,
    /// Pass `b_zero_point` and `a_row_sum` as null (only when every `zb` is 0).
    zb_null: bool,
    bias: BiasStyle,
    /// Byte offset of the packed panel in its buffer (the driver promises no alignment).
    b_offset: usize,
    stages: Stages,
    /// Every A element, every B element and every zero point equal (so are all results).
    uniform: bool,
}

/// One output stage to run.
#[derive(Clone, Copy, Debug)]
struct StageSpec {
    kind: OutputKind,
    mode: RequantMode,
    ozp: i32,
    qmin: i32,
    qmax: i32,
    with_bias_f32: bool,
}

impl StageSpec {
    fn describe(&self) -> String {
        match self.kind {
            OutputKind::I32 => String::from("I32"),
            OutputKind::F32 => format!("F32 (bias_f32 {})", if self.with_bias_f32 { "set" } else { "null" }),
            OutputKind::U8 | OutputKind::I8 => format!(
                "{:?} {} zero_point={} clamp=[{}, {}]",
                self.kind,
                self.mode.name(),
                self.ozp,
                self.qmin,
                self.qmax
            ),
        }
    }
    fn elem_bytes(&self) -> usize {
        self.kind.bytes()
    }
}

/// Runs `kernel` through every (A, B) signedness combination it has, against the
/// reference, and returns what it ran. Panics on the first mismatch, naming the kernel,
/// the combination, the family, the shape and strides, the output stage, the first
/// differing `(i, j)` and the two values — or the first element written outside the tile.
///
/// Takes a few seconds per kernel in a release build.
///
/// # Safety
/// `kernel` must be sound to call through its [`GemmUkernelFn`] contract on this CPU: its
/// entry points must implement that contract and the CPU must support `kernel.isa`
/// (callers check `qkern::dispatch::cpu()` first). Calling a kernel built for a missing
/// instruction set is undefined behaviour.
pub unsafe fn check_gemm_ukernel(kernel: &GemmUkernel) -> GemmTestSummary {
    assert!(
        kernel.mr >= 1 && kernel.format.nr >= 1 && kernel.format.kr >= 1,
        "kernel `{}` has an empty tile ({}x{}c{})",
        kernel.name,
        kernel.mr,
        kernel.format.nr,
        kernel.format.kr
    );
    let mut t = Tester {
        kernel,
        rng: Rng::new(Rng::seed_from_str(kernel.name)),
        summary: GemmTestSummary {
            kernel: kernel.name,
            ..GemmTestSummary::default()
        },
        packed_a: None,
    };
    // The raw-row entry points, then the packed-A ones (A packed by the kernel's packer).
    for (packed_a, a_signed, b_signed) in core::iter::once(None)
        .chain(kernel.packed_a.map(Some))
        .flat_map(|p| [(p, false, false), (p, false, true), (p, true, false), (p, true, true)])
    {
        let (f, pack) = match packed_a {
            None => (kernel.run[a_signed as usize][b_signed as usize], None),
            Some(p) => (p.run[a_signed as usize][b_signed as usize], Some((p, p.pack[a_signed as usize]))),
        };
        {
            let Some(f) = f else {
                continue;
            };
            t.packed_a = pack;
            t.summary.combos += 1;
            // SAFETY: forwarded from this function's contract; `f` is one of `kernel`'s
            // entry points, and the tester only builds arguments that satisfy `GemmArgs`.
            unsafe {
                match (a_signed, b_signed) {
                    (false, false) => t.combo::<u8, u8>(f),
                    (false, true) => t.combo::<u8, i8>(f),
                    (true, false) => t.combo::<i8, u8>(f),
                    (true, true) => t.combo::<i8, i8>(f),
                }
            }
        }
    }
    t.summary
}

struct Tester<'k> {
    kernel: &'k GemmUkernel,
    rng: Rng,
    summary: GemmTestSummary,
    /// Set while testing packed-A entry points: A is packed by this packer first.
    packed_a: Option<(PackedA, APackFn)>,
}

/// The distinct values of `v`, in order.
fn dedup(v: &mut Vec<usize>) {
    let mut out: Vec<usize> = Vec::with_capacity(v.len());
    for &x in v.iter() {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

impl Tester<'_> {
    /// The weight values the kernel may be given: B's whole range, or for a kernel with
    /// a precondition (`max_abs_stored_b`) the values whose stored form `b − b_offset`
    /// satisfies it — the packer never hands it others (DESIGN.md §2).
    fn b_range<B: Int8>(&self) -> (i32, i32) {
        match self.kernel.max_abs_stored_b {
            None => (B::MIN, B::MAX),
            Some(lim) => {
                let off = self.kernel.b_offset_for(B::SIGNED);
                ((off - lim).max(B::MIN), (off + lim).min(B::MAX))
            }
        }
    }

    /// A random weight within [`Self::b_range`] (uniform bits when that is all of B, so
    /// unconditional kernels see the same sequence as before).
    fn random_b<B: Int8>(&mut self) -> B {
        let (lo, hi) = self.b_range::<B>();
        if (lo, hi) == (B::MIN, B::MAX) {
            B::from_bits(self.rng.next_u64() as u8)
        } else {
            B::saturate_from(self.rng.range_i32(lo, hi))
        }
    }

    /// Every family for one (A, B) combination.
    ///
    /// # Safety
    /// As [`check_gemm_ukernel`], for `f`.
    unsafe fn combo<A: Int8, B: Int8>(&mut self, f: GemmUkernelFn) {
        let (mr, nr, kr) = (self.kernel.mr, self.kernel.format.nr, self.kernel.format.kr);
        // Packed A has its own K groups: the K lengths come from the coarser of the two
        // (a multiple of both when they nest, as 2 and 16 do), so both kinds of edge occur.
        let kr_random = self.packed_a.map_or(kr, |(p, _)| p.kr.max(kr));
        // SAFETY (all three): forwarded contract.
        unsafe {
            self.random_family::<A, B>(f, mr, nr, kr_random);
            self.extreme_family::<A, B>(f, mr, nr, kr);
            self.bound_family::<A, B>(f, mr, nr);
            self.wrap_family::<A, B>(f, mr, nr);
        }
    }

    /// Raw sums that overflow i32 while the true (zero-point-centred) result fits: the
    /// contract asks for wrapping i32 arithmetic, so a kernel that saturates its raw
    /// accumulators (e.g. `vpdpbusds`) fails here. A sits at or next to its zero point,
    /// B mostly at the extreme with the largest `|a·b|`, K = 200 000.
    ///
    /// # Safety
    /// As [`check_gemm_ukernel`], for `f`.
    unsafe fn wrap_family<A: Int8, B: Int8>(&mut self, f: GemmUkernelFn, mr: usize, nr: usize) {
        let k = 200_000;
        // The operand value of largest magnitude: 255 for u8, −128 for i8.
        let big = |signed: bool| if signed { -128 } else { 255 };
        let (blo, bhi) = self.b_range::<B>();
        let (av, bv) = (big(A::SIGNED), if B::SIGNED { blo } else { bhi });
        let za = av;
        let step = if A::SIGNED { 1 } else { -1 }; // stays inside the type
        for (m, n) in [(mr, nr), (1 + self.rng.below(mr), 1 + self.rng.below(nr))] {
            let mut case =
                self.constant_case::<A, B>("raw-wrap", m, n, k, av, za, bv, 0, BiasStyle::Random, Stages::Light);
            case.uniform = false;
            for i in 0..m {
                for x in &mut case.a[i * case.lda..i * case.lda + k] {
                    if self.rng.chance(1, 2) {
                        *x = A::saturate_from(av + step);
                    }
                }
            }
            for x in &mut case.b {
                if self.rng.chance(1, 8) {
                    *x = self.random_b();
                }
            }
            // SAFETY: forwarded contract.
            unsafe { self.run_case(f, &case) };
        }
    }

    /// Random data, zero points, biases and strides over K below, at and above the K
    /// step, its multiples, a few hundred and a long odd K; every `m × n` subtile for the
    /// short K values, the edge subtiles for the long ones.
    ///
    /// # Safety
    /// As [`check_gemm_ukernel`], for `f`.
    unsafe fn random_family<A: Int8, B: Int8>(&mut self, f: GemmUkernelFn, mr: usize, nr: usize, kr: usize) {
        let mut ks = vec![
            0,
            1,
            kr - 1,
            kr,
            kr + 1,
            2 * kr - 1,
            2 * kr,
            2 * kr + 1,
            3 * kr,
            3 * kr + 2,
            4 * kr,
            8 * kr - 1,
            8 * kr,
            16 * kr,
            64 * kr + kr / 2 + 1,
            257,
            300,
            1001,
            4097,
        ];
        dedup(&mut ks);
        let mut style = 0usize;
        for &k in &ks {
            let mut shapes: Vec<(usize, usize)> = Vec::new();
            if k <= 16 * kr.max(4) && mr * nr <= 256 {
                for m in 1..=mr {
                    for n in 1..=nr {
                        shapes.push((m, n));
                    }
                }
            } else if k <= 16 * kr.max(4) {
                // Large tiles (AMX-sized): every m on full rows, every n on full columns,
                // and a few random subtiles, instead of the whole cross product.
                shapes.extend((1..=mr).map(|m| (m, nr)));
                shapes.extend((1..nr).map(|n| (mr, n)));
                for _ in 0..8 {
                    shapes.push((1 + self.rng.below(mr), 1 + self.rng.below(nr)));
                }
            } else {
                shapes.extend_from_slice(&[
                    (mr, nr),
                    (1, 1),
                    (1, nr),
                    (mr, 1),
                    (mr, nr.max(2) - 1),
                    (mr.max(2) - 1, nr),
                ]);
                let r = (1 + self.rng.below(mr), 1 + self.rng.below(nr));
                shapes.push(r);
            }
            for (m, n) in shapes {
                style += 1;
                let case = self.random_case::<A, B>(m, n, k, style);
                // SAFETY: forwarded contract.
                unsafe { self.run_case(f, &case) };
            }
        }
    }

    /// Builds one random case; `style` rotates the data, zero-point and bias patterns so
    /// that every shape family sees each of them.
    fn random_case<A: Int8, B: Int8>(&mut self, m: usize, n: usize, k: usize, style: usize) -> Case<A, B> {
        let (blo, bhi) = self.b_range::<B>();
        let b_full = (blo, bhi) == (B::MIN, B::MAX);
        let rng = &mut self.rng;
        let gap = |rng: &mut Rng| match rng.below(3) {
            0 => 0,
            1 => 1,
            _ => 1 + rng.below(9),
        };
        let lda = k + gap(rng);
        let ldc = n + gap(rng);
        let ldb = n + if rng.chance(1, 3) { 1 + rng.below(5) } else { 0 };
        // Data patterns: uniform bits; only the type's extremes; one of each.
        let data = style % 4;
        let extreme_a = data == 1 || data == 3;
        let extreme_b = data == 1 || data == 2;
        let val_a = |rng: &mut Rng| {
            if extreme_a {
                A::saturate_from(rng.pick(&[A::MIN, A::MAX]))
            } else {
                A::from_bits(rng.next_u64() as u8)
            }
        };
        let val_b = |rng: &mut Rng| {
            if extreme_b {
                B::saturate_from(rng.pick(&[blo, bhi]))
            } else if b_full {
                B::from_bits(rng.next_u64() as u8)
            } else {
                B::saturate_from(rng.range_i32(blo, bhi))
            }
        };
        let a_len = if m == 0 { 0 } else { (m - 1) * lda + k } + TAIL;
        let mut a: Vec<A> = (0..a_len).map(|_| A::from_bits(rng.next_u64() as u8)).collect();
        for i in 0..m {
            for x in &mut a[i * lda..i * lda + k] {
                *x = val_a(rng);
            }
        }
        // B: poison in the stride gap (the packer must skip it).
        let mut b: Vec<B> = (0..k * ldb).map(|_| B::from_bits(rng.next_u64() as u8)).collect();
        for kk in 0..k {
            for x in &mut b[kk * ldb..kk * ldb + n] {
                *x = val_b(rng);
            }
        }
        let edge_or_random = |rng: &mut Rng, lo: i32, hi: i32| match rng.below(4) {
            0 => lo,
            1 => hi,
            _ => rng.range_i32(lo, hi),
        };
        let za = match (style / 4) % 3 {
            0 => 0i32.clamp(A::MIN, A::MAX),
            1 => edge_or_random(rng, A::MIN, A::MAX),
            _ => rng.range_i32(A::MIN, A::MAX),
        };
        let (zb, zb_null) = match style % 5 {
            0 => (vec![0; n], true),
            1 => (vec![0; n], false),
            2 => {
                let z = edge_or_random(rng, B::MIN, B::MAX);
                (vec![z; n], z == 0)
            }
            _ => (
                (0..n).map(|_| edge_or_random(rng, B::MIN, B::MAX)).collect::<Vec<_>>(),
                false,
            ),
        };
        let zb_null = zb_null && zb.iter().all(|&z| z == 0);
        let bias = match style % 3 {
            0 => BiasStyle::Zero,
            1 => BiasStyle::Random,
            _ => {
                if rng.chance(1, 2) {
                    BiasStyle::Edges
                } else {
                    BiasStyle::Random
                }
            }
        };
        Case {
            family: "random",
            m,
            n,
            k,
            lda,
            ldc,
            a,
            za,
            b,
            ldb,
            zb,
            zb_null,
            bias,
            b_offset: if rng.chance(1, 4) { 1 + rng.below(3) } else { 0 },
            stages: if k > 1000 { Stages::Light } else { Stages::Full },
            uniform: false,
        }
    }

    /// A case whose every A element is `av` and every B element is `bv`.
    #[allow(clippy::too_many_arguments)]
    fn constant_case<A: Int8, B: Int8>(
        &mut self,
        family: &'static str,
        m: usize,
        n: usize,
        k: usize,
        av: i32,
        za: i32,
        bv: i32,
        zb: i32,
        bias: BiasStyle,
        stages: Stages,
    ) -> Case<A, B> {
        let lda = k + 1 + self.rng.below(4);
        let ldc = n + self.rng.below(3);
        let a_len = (m - 1) * lda + k + TAIL;
        // Poison everywhere, then the rows.
        let mut a: Vec<A> = (0..a_len).map(|_| A::from_bits(self.rng.next_u64() as u8)).collect();
        for i in 0..m {
            a[i * lda..i * lda + k].fill(A::saturate_from(av));
        }
        Case {
            family,
            m,
            n,
            k,
            lda,
            ldc,
            a,
            za,
            b: vec![B::saturate_from(bv); k * n],
            ldb: n,
            zb: vec![zb; n],
            zb_null: zb == 0 && self.rng.chance(1, 2),
            bias,
            b_offset: 0,
            stages,
            uniform: true,
        }
    }

    /// Every operand at a type extreme with every zero point at an edge (and 0), on
    /// full and partial tiles.
    ///
    /// # Safety
    /// As [`check_gemm_ukernel`], for `f`.
    unsafe fn extreme_family<A: Int8, B: Int8>(&mut self, f: GemmUkernelFn, mr: usize, nr: usize, kr: usize) {
        let zas = zero_point_edges::<A>();
        let zbs = zero_point_edges::<B>();
        for av in [A::MIN, A::MAX] {
            for &za in &zas {
                for bv in <[i32; 2]>::from(self.b_range::<B>()) {
                    for &zb in &zbs {
                        for (m, n, k) in [
                            (mr, nr, 2 * kr + 1),
                            (mr, nr, 37 * kr - 1),
                            (1 + self.rng.below(mr), 1 + self.rng.below(nr), kr),
                        ] {
                            let bias = if k == kr { BiasStyle::Edges } else { BiasStyle::Zero };
                            let case =
                                self.constant_case::<A, B>("extreme", m, n, k, av, za, bv, zb, bias, Stages::Full);
                            // SAFETY: forwarded contract.
                            unsafe { self.run_case(f, &case) };
                        }
                    }
                }
            }
        }
    }

    /// K at the i32 bound: for every nonzero extreme product `p = (a−za)·(b−zb)`, the
    /// largest K with `K·|p| ≤ i32::MAX`, and a bias that lands even columns exactly on
    /// `i32::MAX` (or `i32::MIN`). One K further is the driver's business.
    ///
    /// # Safety
    /// As [`check_gemm_ukernel`], for `f`.
    unsafe fn bound_family<A: Int8, B: Int8>(&mut self, f: GemmUkernelFn, mr: usize, nr: usize) {
        let mut seen: Vec<(i32, i32)> = Vec::new();
        for av in [A::MIN, A::MAX] {
            for za in zero_point_edges::<A>() {
                for bv in <[i32; 2]>::from(self.b_range::<B>()) {
                    for zb in zero_point_edges::<B>() {
                        let (da, db) = (av - za, bv - zb);
                        if da == 0 || db == 0 || seen.contains(&(da, db)) {
                            continue;
                        }
                        seen.push((da, db));
                        let p = (da as i64 * db as i64).abs();
                        let k = (I32_MAX / p) as usize;
                        let case = self.constant_case::<A, B>(
                            "i32-bound",
                            mr,
                            nr,
                            k,
                            av,
                            za,
                            bv,
                            zb,
                            BiasStyle::Saturate,
                            Stages::Minimal,
                        );
                        // SAFETY: forwarded contract.
                        unsafe { self.run_case(f, &case) };
                    }
                }
            }
        }
    }

    /// Runs one case through its output stages and checks every output element and the
    /// canaries around the tile.
    ///
    /// # Safety
    /// As [`check_gemm_ukernel`], for `f`.
    unsafe fn run_case<A: Int8, B: Int8>(&mut self, f: GemmUkernelFn, case: &Case<A, B>) {
        let Case {
            m,
            n,
            k,
            lda,
            ldc,
            za,
            ldb,
            ..
        } = *case;
        let kernel = self.kernel;
        let format = kernel.format;
        assert!(
            m >= 1 && m <= kernel.mr && n >= 1 && n <= format.nr,
            "tester bug: tile {m}x{n}"
        );
        self.summary.cases += 1;

        // The oracle, exact in i64.
        let mut acc = vec![0i64; m * n];
        if case.uniform {
            // Every cell is the same sum: the reference for one, broadcast (long K stays
            // cheap for large tiles).
            gemm_i64(1, 1, k, &case.a, lda, za, &case.b, ldb, &case.zb[..1], &mut acc[..1], 1);
            let v = acc[0];
            acc.fill(v);
        } else {
            gemm_i64(m, n, k, &case.a, lda, za, &case.b, ldb, &case.zb, &mut acc, n);
        }
        let bias = self.choose_bias(case, &acc);
        for (idx, &v) in acc.iter().enumerate() {
            let t = v + bias[idx % n] as i64;
            assert!(
                t >= i32::MIN as i64 && t <= I32_MAX,
                "tester bug: case outside the kernel contract ({} m={m} n={n} k={k}: {t})",
                case.family
            );
        }

        // What the driver computes (src/gemm/driver.rs), in the kernel's view of the
        // operands (a + a_offset, b − b_offset, zero points moved with them): row sums,
        // and the per-column term K·za·zb − za·Σb + bias, both modulo 2^32.
        let a_off = kernel.a_offset_for(A::SIGNED);
        let b_off = kernel.b_offset_for(B::SIGNED);
        let za_k = za + a_off;
        let zb_k: Vec<i32> = case.zb.iter().map(|&z| z - b_off).collect();
        // Null row sums / zero points are allowed only when every stored zero point is 0.
        let zb_null = case.zb_null && zb_k.iter().all(|&z| z == 0);
        let a_row_sum: Vec<i32> = (0..m).map(|i| crate::gemm_row_sum(&case.a[i * lda..i * lda + k], a_off)).collect();
        let col_offset: Vec<i32> = (0..n)
            .map(|j| {
                let col_sum = (0..k).fold(0i32, |s, kk| s.wrapping_add(case.b[kk * ldb + j].to_i32() - b_off));
                crate::gemm_col_term(k, za_k, zb_k[j], col_sum, bias[j])
            })
            .collect();

        // The packed panel, at the case's offset, with poison after it.
        let packed_len = format.packed_bytes(k, n);
        let mut packed: Vec<u8> = (0..case.b_offset + packed_len + TAIL)
            .map(|_| self.rng.next_u64() as u8)
            .collect();
        pack_b_kgroups(format, &case.b, k, n, ldb, b_off, &mut packed[case.b_offset..]);
        // For a packed-A entry point: A packed by the kernel's packer, poison after it
        // (and before it, at a random offset: the driver promises no alignment).
        let mut a_packed: Vec<u8>;
        let a_ptr = match self.packed_a {
            None => case.a.as_ptr().cast::<u8>(),
            Some((p, pack)) => {
                let at = self.rng.below(8);
                let len = at + p.tile_bytes(k) + TAIL;
                a_packed = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                // SAFETY: the packer is sound on this CPU (function contract); m ≤ MR rows
                // of k elements `lda` apart are inside `case.a`; `a_packed` holds
                // tile_bytes(k) bytes from `at`.
                unsafe { pack(case.a.as_ptr().cast(), lda, m, k, a_packed.as_mut_ptr().add(at)) };
                a_packed.as_ptr().wrapping_add(at)
            }
        };

        // Per-column output-stage parameters.
        let rng = &mut self.rng;
        let f32_scale: Vec<f32> = (0..n)
            .map(|_| (pow2(rng.range_i32(-16, 2)) * (1.0 + rng.unit_f64())) as f32)
            .collect();
        let bias_f32: Vec<f32> = (0..n).map(|_| ((rng.unit_f64() - 0.5) * 2000.0) as f32).collect();
        let amax = acc
            .iter()
            .enumerate()
            .map(|(idx, &v)| (v + bias[idx % n] as i64).unsigned_abs())
            .max()
            .unwrap_or(0)
            .max(1);
        let log2_amax = 63 - amax.leading_zeros() as i32;
        let real: Vec<f32> = (0..n)
            .map(|_| {
                let r = match rng.below(8) {
                    // Exact powers of two: ties in every rounding mode.
                    0 => pow2(rng.range_i32(-log2_amax - 1, 2)),
                    // Tiny: fixed-point multipliers flush to zero.
                    1 => pow2(rng.range_i32(-44, -30)) * (1.0 + rng.unit_f64()),
                    // Large: positive shifts.
                    2 => pow2(rng.range_i32(0, 10)) * (1.0 + rng.unit_f64()),
                    // Outputs spanning and overshooting the 8-bit range.
                    _ => pow2(rng.range_i32(-2, 9) - log2_amax) * (1.0 + rng.unit_f64()),
                };
                r as f32
            })
            .collect();
        let qm_double: Vec<QuantizedMultiplier> = real
            .iter()
            .map(|&r| quantize_multiplier(r as f64, RequantMode::TfliteDoubleRounding))
            .collect();
        let qm_single: Vec<QuantizedMultiplier> = real
            .iter()
            .map(|&r| quantize_multiplier(r as f64, RequantMode::SingleRounding))
            .collect();

        let mut specs: Vec<StageSpec> = vec![
            StageSpec {
                kind: OutputKind::I32,
                mode: RequantMode::Fp32,
                ozp: 0,
                qmin: 0,
                qmax: 0,
                with_bias_f32: false,
            },
            StageSpec {
                kind: OutputKind::F32,
                mode: RequantMode::Fp32,
                ozp: 0,
                qmin: 0,
                qmax: 0,
                with_bias_f32: rng.chance(1, 2),
            },
        ];
        let rotate = RequantMode::ALL[self.summary.cases % RequantMode::ALL.len()];
        for mode in RequantMode::ALL {
            let kinds: &[OutputKind] = match case.stages {
                Stages::Full => &[OutputKind::U8, OutputKind::I8],
                Stages::Minimal if mode != rotate => &[],
                Stages::Light | Stages::Minimal => {
                    if rng.chance(1, 2) {
                        &[OutputKind::U8]
                    } else {
                        &[OutputKind::I8]
                    }
                }
            };
            for &kind in kinds {
                let (lo, hi) = if kind == OutputKind::U8 { (0, 255) } else { (-128, 127) };
                let ozp = match rng.below(4) {
                    0 => lo,
                    1 => hi,
                    _ => rng.range_i32(lo, hi),
                };
                let (qmin, qmax) = match rng.below(5) {
                    0 => (lo, hi),
                    1 => (ozp, hi),                                   // ReLU
                    2 => (ozp, (ozp + rng.range_i32(1, 60)).min(hi)), // ReLU6-like
                    3 => {
                        let x = rng.range_i32(lo, hi);
                        (x, x) // a single value
                    }
                    _ => {
                        let x = rng.range_i32(lo, hi);
                        let y = rng.range_i32(lo, hi);
                        (x.min(y), x.max(y))
                    }
                };
                specs.push(StageSpec {
                    kind,
                    mode,
                    ozp,
                    qmin,
                    qmax,
                    with_bias_f32: false,
                });
            }
        }

        for spec in specs {
            let null_f = core::ptr::null::<f32>();
            let (scale, qmult): (&[f32], &[QuantizedMultiplier]) = match (spec.kind, spec.mode) {
                (OutputKind::I32, _) => (&[], &[]),
                (OutputKind::F32, _) => (&f32_scale, &[]),
                (_, RequantMode::Fp32) => (&real, &[]),
                (_, RequantMode::TfliteDoubleRounding) => (&[], &qm_double),
                (_, RequantMode::SingleRounding) => (&[], &qm_single),
            };
            let bias_f32_opt = if spec.with_bias_f32 { Some(&bias_f32[..]) } else { None };
            let stage = OutputStage {
                kind: spec.kind,
                mode: spec.mode,
                col_offset: col_offset.as_ptr(),
                // Null where unused, so a kernel that reads them anyway faults.
                scale: if scale.is_empty() { null_f } else { scale.as_ptr() },
                bias_f32: bias_f32_opt.map_or(null_f, |b| b.as_ptr()),
                qmult: if qmult.is_empty() {
                    core::ptr::null()
                } else {
                    qmult.as_ptr()
                },
                out_zero_point: spec.ozp,
                qmin: spec.qmin,
                qmax: spec.qmax,
            };
            let ref_out = RefOutput {
                kind: spec.kind,
                mode: spec.mode,
                bias_i32: Some(&bias),
                scale,
                bias_f32: bias_f32_opt,
                qmult,
                out_zero_point: spec.ozp,
                qmin: spec.qmin,
                qmax: spec.qmax,
            };

            // Output buffer: GUARD canaries, the strided tile, GUARD canaries. Words keep
            // 4-byte outputs aligned as the driver's `&mut [i32]` is.
            let esz = spec.elem_bytes();
            let elems = GUARD + (m - 1) * ldc + n + GUARD;
            let canary = self.rng.next_u64() as u32;
            let canary = if esz == 4 { canary } else { canary & 0xff };
            let mut words: Vec<u32> =
                vec![if esz == 4 { canary } else { canary * 0x0101_0101 }; (elems * esz).div_ceil(4)];
            let base = words.as_mut_ptr().cast::<u8>();
            let args = GemmArgs {
                m,
                n,
                k,
                a: a_ptr,
                lda,
                b: packed[case.b_offset..].as_ptr(),
                a_row_sum: if zb_null {
                    core::ptr::null()
                } else {
                    a_row_sum.as_ptr()
                },
                b_zero_point: if zb_null {
                    core::ptr::null()
                } else {
                    zb_k.as_ptr()
                },
                // In bounds: GUARD elements into a buffer of `elems` elements.
                c: base.wrapping_add(GUARD * esz),
                ldc,
                out: stage,
            };
            // SAFETY: `f` is sound to call on this CPU (function contract). The arguments
            // satisfy `GemmArgs`: 1 ≤ m ≤ MR and 1 ≤ n ≤ NR; A holds m rows of k elements
            // `lda` apart (plus a poisoned tail); `b` points at a panel of
            // `format.panel_bytes(k)` bytes packed in the kernel's format (plus poison);
            // `a_row_sum` (m) and `b_zero_point` (n) are valid or both null with every
            // zero point 0; `col_offset`, and `scale`/`bias_f32`/`qmult` where the stage
            // reads them, hold n entries; the output tile (m−1)·ldc + n elements of the
            // stage's type lies inside `words`, aligned for i32/f32; and the true
            // accumulators plus bias fit in i32 (asserted above).
            unsafe { f(&args) };
            self.summary.calls += 1;

            let read = |e: usize| -> u32 {
                if esz == 4 {
                    words[e]
                } else {
                    bytemuck::cast_slice::<u32, u8>(&words)[e] as u32
                }
            };
            for e in 0..elems {
                let got = read(e);
                let inside = e >= GUARD && {
                    let off = e - GUARD;
                    off / ldc < m && off % ldc < n
                };
                if !inside {
                    if got != canary {
                        let off = e as isize - GUARD as isize;
                        panic!(
                            "{}: wrote outside the {m}x{n} tile at element offset {off} from c (row stride {ldc}): {} over the canary {}",
                            self.context(case, &spec),
                            show(spec.kind, got),
                            show(spec.kind, canary)
                        );
                    }
                    continue;
                }
                let off = e - GUARD;
                let (i, j) = (off / ldc, off % ldc);
                let exp = output_stage_ref(acc[i * n + j], j, &ref_out);
                let exp = match spec.kind {
                    OutputKind::I32 => exp as i32 as u32,
                    OutputKind::F32 => exp as u32,
                    OutputKind::U8 | OutputKind::I8 => exp as u8 as u32,
                };
                if got != exp {
                    let param = match (spec.kind, spec.mode) {
                        (OutputKind::I32, _) => String::new(),
                        (OutputKind::F32, _) => format!(", scale[{j}]={:e}", f32_scale[j]),
                        (_, RequantMode::Fp32) => format!(", scale[{j}]={:e}", real[j]),
                        (_, RequantMode::TfliteDoubleRounding) => format!(", qmult[{j}]={:?}", qm_double[j]),
                        (_, RequantMode::SingleRounding) => format!(", qmult[{j}]={:?}", qm_single[j]),
                    };
                    panic!(
                        "{}: first mismatch at (i, j) = ({i}, {j}): got {}, expected {} (exact accumulator {} + bias {}{param})",
                        self.context(case, &spec),
                        show(spec.kind, got),
                        show(spec.kind, exp),
                        acc[i * n + j],
                        bias[j]
                    );
                }
            }
        }
    }

    /// The bias of a case, per its style, keeping every `acc + bias` within i32.
    fn choose_bias<A, B>(&mut self, case: &Case<A, B>, acc: &[i64]) -> Vec<i32> {
        let n = case.n;
        (0..n)
            .map(|j| {
                let col = acc.iter().skip(j).step_by(n);
                let hi = col.clone().copied().max().unwrap_or(0);
                let lo = col.copied().min().unwrap_or(0);
                // The bias range keeping the column within i32.
                let (bmin, bmax) = (i32::MIN as i64 - lo, I32_MAX - hi);
                let b = match case.bias {
                    BiasStyle::Zero => 0,
                    BiasStyle::Random => self.rng.range_i64(-(1 << 20), 1 << 20).clamp(bmin, bmax),
                    BiasStyle::Edges => match self.rng.below(3) {
                        0 => bmax,
                        1 => bmin,
                        _ => self.rng.range_i64(-(1 << 20), 1 << 20).clamp(bmin, bmax),
                    },
                    BiasStyle::Saturate if j % 2 == 1 => 0,
                    BiasStyle::Saturate => {
                        if hi > 0 {
                            bmax
                        } else {
                            bmin
                        }
                    }
                };
                b.clamp(i32::MIN as i64, I32_MAX) as i32
            })
            .collect()
    }

    /// The header of a failure message.
    fn context<A: Int8, B: Int8>(&self, case: &Case<A, B>, spec: &StageSpec) -> String {
        let zb = if case.zb.iter().all(|&z| z == case.zb[0]) {
            format!("{} (all columns)", case.zb[0])
        } else {
            format!("{:?}", case.zb)
        };
        format!(
            "kernel `{}` ({}x{}) family `{}`: m={} n={} k={} lda={} ldb={} ldc={} za={} zb={}{} b_offset={}, output {}",
            self.kernel.name,
            A::NAME,
            B::NAME,
            case.family,
            case.m,
            case.n,
            case.k,
            case.lda,
            case.ldb,
            case.ldc,
            case.za,
            zb,
            if case.zb_null { " (passed as null)" } else { "" },
            case.b_offset,
            spec.describe()
        )
    }
}

/// The zero points at the edges of `T`'s range, and 0.
fn zero_point_edges<T: Int8>() -> Vec<i32> {
    let mut v = vec![T::MIN, T::MAX];
    if !v.contains(&0) {
        v.push(0);
    }
    v
}

/// An output element for a message.
fn show(kind: OutputKind, bits: u32) -> String {
    match kind {
        OutputKind::I32 => format!("{}", bits as i32),
        OutputKind::F32 => format!("{:e} ({:#010x})", f32::from_bits(bits), bits),
        OutputKind::U8 => format!("{}", bits as u8),
        OutputKind::I8 => format!("{}", bits as u8 as i8),
    }
}
