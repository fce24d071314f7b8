//! Benchmark support shared by `qkern bench` and `cargo bench`: the one list of shapes
//! (DESIGN.md §7), the per-ISA peak table the results are quoted against, a ready-made
//! GEMM case, and a small timing helper.
//!
//! ```
//! use qkern::bench::{self, GemmCase};
//! use std::time::Duration;
//!
//! let ctx = qkern::Context::new().unwrap().with_threads(1).unwrap();
//! let shape = bench::find_shape("64x64x64").unwrap();
//! let mut case = GemmCase::new(&ctx, &shape, 1).unwrap();
//! let t = bench::time(Duration::from_millis(5), || case.run()).unwrap();
//! case.check().unwrap();
//! assert!(t.median > 0.0 && bench::gops(shape.ops(), t.median) > 0.0);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use qkern_kernels::{GemmUkernel, Isa};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dispatch::Context;
use crate::error::{Error, Result};
use crate::gemm::{Activations, MatrixMut, MatrixRef, PackedWeights, WeightQuant};

/// One GEMM problem: `C[M×N] = A[M×K] · B[K×N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Short name (the same as `../shared/tools/peer_bench.py` uses), or `MxNxK` for a
    /// shape given on the command line.
    pub name: Cow<'static, str>,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// Where the shape comes from, for reports.
    pub origin: &'static str,
}

impl Shape {
    const fn named(name: &'static str, m: usize, n: usize, k: usize, origin: &'static str) -> Shape {
        Shape { name: Cow::Borrowed(name), m, n, k, origin }
    }

    /// Operations of one call, `2·M·N·K` (a multiply and an add per MAC), as `f64` so
    /// the product cannot overflow.
    pub fn ops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// `MxNxK`.
    pub fn dims(&self) -> String {
        format!("{}x{}x{}", self.m, self.n, self.k)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.dims())
    }
}

/// The default benchmark shapes (DESIGN.md §7), in the order and with the names of
/// `../shared/tools/peer_bench.py`, so the two tools' rows line up.
pub const SHAPES: &[Shape] = &[
    Shape::named("sq256", 256, 256, 256, "square"),
    Shape::named("sq512", 512, 512, 512, "square"),
    Shape::named("sq1024", 1024, 1024, 1024, "square"),
    Shape::named("sq2048", 2048, 2048, 2048, "square"),
    Shape::named("dec4096", 1, 4096, 4096, "LLM decode (GEMV)"),
    Shape::named("dec11008", 1, 11008, 4096, "LLM decode (GEMV), MLP up"),
    Shape::named("b16_4096", 16, 4096, 4096, "LLM batch 16"),
    Shape::named("b64_4096", 64, 4096, 4096, "LLM batch 64"),
    Shape::named("bert_qkv", 128, 768, 768, "BERT-base, seq 128"),
    Shape::named("bert_ffn1", 128, 3072, 768, "BERT-base, seq 128"),
    Shape::named("bert_ffn2", 128, 768, 3072, "BERT-base, seq 128"),
    Shape::named("b128_4096", 128, 4096, 4096, "LLM batch 128"),
    Shape::named("r50_conv2_3x3", 3136, 64, 576, "ResNet-50 conv-as-GEMM"),
    Shape::named("r50_conv3_3x3", 784, 128, 1152, "ResNet-50 conv-as-GEMM"),
    Shape::named("r50_conv5_3x3", 49, 512, 4608, "ResNet-50 conv-as-GEMM"),
    Shape::named("mbv2_pw_24", 3136, 24, 96, "MobileNet-v2 pointwise"),
    Shape::named("mbv2_pw_384", 196, 384, 64, "MobileNet-v2 pointwise"),
];

/// Largest total size of one benchmark case's buffers (A, packed B, C), so that a typo
/// on the command line is an error, not an out-of-memory kill.
pub const MAX_CASE_BYTES: u64 = 8 << 30;

/// A shape by name (from [`SHAPES`], case-insensitive) or as `MxNxK` (`x`, `X` or `×`
/// between the numbers). Every dimension must be at least 1.
pub fn find_shape(s: &str) -> Result<Shape> {
    let s = s.trim();
    if let Some(shape) = SHAPES.iter().find(|sh| sh.name.eq_ignore_ascii_case(s)) {
        return Ok(shape.clone());
    }
    let parts: Vec<&str> = s.split(['x', 'X', '×']).collect();
    if parts.len() != 3 || !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::InvalidParameter(format!(
            "shape {s:?} is neither MxNxK nor a known name ({})",
            SHAPES.iter().map(|sh| sh.name.as_ref()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut dims = [0usize; 3];
    for (d, (p, what)) in dims.iter_mut().zip(parts.iter().zip(["M", "N", "K"])) {
        *d = p.trim().parse::<usize>().map_err(|e| {
            Error::InvalidParameter(format!("shape {s:?}: {what} = {p:?} is not a number ({e})"))
        })?;
        if *d == 0 {
            return Err(Error::InvalidParameter(format!("shape {s:?}: {what} must be at least 1")));
        }
    }
    let [m, n, k] = dims;
    let shape = Shape { name: Cow::Owned(format!("{m}x{n}x{k}")), m, n, k, origin: "command line" };
    case_bytes(&shape)?;
    Ok(shape)
}

/// Bytes a [`GemmCase`] of `shape` allocates (A, B before and after packing, C), or an
/// error if that exceeds [`MAX_CASE_BYTES`].
pub fn case_bytes(shape: &Shape) -> Result<u64> {
    let (m, n, k) = (shape.m as u128, shape.n as u128, shape.k as u128);
    // A (1 byte), B twice (source and packed, padded to a few columns), C (4 bytes).
    let bytes = m * k + 2 * (k + 64) * (n + 64) + 4 * m * n;
    if bytes > MAX_CASE_BYTES as u128 {
        return Err(Error::InvalidParameter(format!(
            "shape {} needs about {} MiB of buffers; the benchmark limit is {} MiB",
            shape.dims(),
            bytes >> 20,
            MAX_CASE_BYTES >> 20
        )));
    }
    Ok(bytes as u64)
}

/// The instruction path a peak was measured for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// Short name of the path, e.g. `avx2-exact`.
    pub path: &'static str,
    /// The tier whose kernels use it.
    pub isa: Isa,
    /// Measured int8 multiply-add limit, GOPS (2 ops per MAC) on one core.
    pub gops_per_core: f64,
    /// The instruction sequence.
    pub note: &'static str,
}

/// Physical limits of one core of the 2-core Sapphire-Rapids-class reference host
/// (DESIGN.md §7), for reference. `qkern bench` quotes results against the peaks
/// measured on the running host instead ([`crate::peak::measured_gops`]): other CPUs
/// (e.g. AMD Zen 4, where `vpdpbusd zmm` issues once per cycle) differ.
/// Scalar and ARM tiers have no entry: their `%peak` is shown as `-`.
pub const PEAKS: &[Peak] = &[
    Peak { path: "avx2-exact", isa: Isa::Avx2, gops_per_core: 183.0, note: "sign-extend + vpmaddwd" },
    Peak { path: "avx2-maddubs", isa: Isa::Avx2, gops_per_core: 237.0, note: "vpmaddubsw (i16 pair bound proved by the packer)" },
    Peak { path: "avxvnni", isa: Isa::AvxVnni, gops_per_core: 513.0, note: "vpdpbusd ymm" },
    // The EVEX ymm form issues like the VEX one there (the AVX-VNNI kernels' twins).
    Peak { path: "avx512vnni-ymm", isa: Isa::Avx512Vnni, gops_per_core: 513.0, note: "vpdpbusd ymm (EVEX)" },
    Peak { path: "avx512vnni", isa: Isa::Avx512Vnni, gops_per_core: 959.0, note: "vpdpbusd zmm" },
    Peak { path: "amx", isa: Isa::Amx, gops_per_core: 7180.0, note: "tdpbusd" },
];

/// The reference-host peak of the path `kernel` runs on ([`crate::peak::path_of`]), or
/// `None` (portable and ARM kernels).
pub fn peak_for_kernel(kernel: &GemmUkernel) -> Option<&'static Peak> {
    let path = crate::peak::path_of(kernel)?;
    PEAKS.iter().find(|p| p.path == path && p.isa == kernel.isa)
}

/// `ops / seconds` in GOPS.
pub fn gops(ops: f64, seconds: f64) -> f64 {
    ops / seconds / 1e9
}

/// The result of [`time`]: seconds per call.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Median over the samples.
    pub median: f64,
    /// Fastest sample.
    pub min: f64,
    /// Slowest sample.
    pub max: f64,
    /// Samples taken (each the mean of `calls_per_sample` calls).
    pub samples: usize,
    /// Calls per sample.
    pub calls_per_sample: usize,
    /// Calls made in all, the warm-up included.
    pub calls: usize,
    /// Wall time spent, the warm-up included.
    pub total: Duration,
}

/// Each sample lasts at least this long, so that timer overhead and jitter stay small
/// for tiny shapes.
const SAMPLE_TARGET: f64 = 1e-3;
/// Enough for a stable median; more only costs memory.
const MAX_SAMPLES: usize = 10_000;

/// Times `f`: one warm-up call, then samples until `min_time` has passed (warm-up
/// included) or 10,000 samples were taken; returns the median, min and max seconds
/// per call. A sample is the mean of enough calls to last about a millisecond.
///
/// At least one call is made. When the warm-up alone takes `min_time` or longer (a
/// slow kernel on a large shape), it is the only sample, so a slow run costs one call
/// per shape, not two. The first error from `f` is returned.
pub fn time<E>(min_time: Duration, mut f: impl FnMut() -> std::result::Result<(), E>) -> std::result::Result<Timing, E> {
    let start = Instant::now();
    f()?;
    let warm = start.elapsed().as_secs_f64();
    if start.elapsed() >= min_time {
        return Ok(Timing { median: warm, min: warm, max: warm, samples: 1, calls_per_sample: 1, calls: 1, total: start.elapsed() });
    }
    // The warm-up is slower than a steady call (page faults, cold caches), so this
    // errs toward fewer calls per sample.
    let per_sample = calls_per_sample(warm);
    let mut samples = Vec::new();
    loop {
        let t = Instant::now();
        for _ in 0..per_sample {
            f()?;
        }
        samples.push(t.elapsed().as_secs_f64() / per_sample as f64);
        if start.elapsed() >= min_time || samples.len() >= MAX_SAMPLES {
            break;
        }
    }
    Ok(summarize(samples, per_sample, start.elapsed()))
}

/// Calls per sample of a function whose warm-up call took `warm` seconds: enough to
/// last [`SAMPLE_TARGET`].
fn calls_per_sample(warm: f64) -> usize {
    ((SAMPLE_TARGET / warm.max(1e-9)).ceil() as usize).clamp(1, 1 << 20)
}

/// The [`Timing`] of non-empty `samples` (seconds per call), each of `calls` calls,
/// after one warm-up call.
fn summarize(mut samples: Vec<f64>, calls: usize, total: Duration) -> Timing {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 { samples[n / 2] } else { 0.5 * (samples[n / 2 - 1] + samples[n / 2]) };
    Timing { median, min: samples[0], max: samples[n - 1], samples: n, calls_per_sample: calls, calls: 1 + n * calls, total }
}

/// Times several functions side by side, for ratios on a shared, noisy machine: after
/// one warm-up call each, rounds of one sample per function (each sample the mean of
/// enough calls to last about a millisecond, counted per function from its warm-up)
/// until `min_time` has passed (at least one round) or 10,000 rounds were taken. A
/// slowdown of the machine then hits every function in the same rounds rather than
/// whichever was timed during it.
/// Returns one [`Timing`] per function, in order; the first error is returned.
pub fn time_interleaved<E>(min_time: Duration, fs: &mut [&mut dyn FnMut() -> std::result::Result<(), E>]) -> std::result::Result<Vec<Timing>, E> {
    let start = Instant::now();
    let mut per_sample = Vec::with_capacity(fs.len());
    for f in fs.iter_mut() {
        let t = Instant::now();
        f()?;
        per_sample.push(calls_per_sample(t.elapsed().as_secs_f64()));
    }
    let mut samples = vec![Vec::new(); fs.len()];
    // At least one round: a warm-up is no steady sample to compare.
    loop {
        for ((f, &calls), v) in fs.iter_mut().zip(&per_sample).zip(&mut samples) {
            let t = Instant::now();
            for _ in 0..calls {
                f()?;
            }
            v.push(t.elapsed().as_secs_f64() / calls as f64);
        }
        if start.elapsed() >= min_time || samples.first().is_none_or(|v| v.len() >= MAX_SAMPLES) {
            break;
        }
    }
    let total = start.elapsed();
    Ok(samples.into_iter().zip(per_sample).map(|(v, calls)| summarize(v, calls, total)).collect())
}

/// The benchmarked operation: `C (i32) = (A − 128)·B`, u8 activations (zero point 128)
/// × i8 weights (zero point 0, prepacked), pseudo-random data from a fixed seed.
#[derive(Debug)]
pub struct GemmCase {
    shape: Shape,
    ctx: Context,
    a: Vec<u8>,
    b: Vec<i8>,
    w: PackedWeights,
    /// Extra identical copies of `w` that [`GemmCase::run`] rotates through with `w`
    /// ([`GemmCase::with_weight_copies`]); empty for hot weights.
    copies: Vec<PackedWeights>,
    next: usize,
    c: Vec<i32>,
}

/// Activation zero point of [`GemmCase`] (onnxruntime's dynamic-quantization default,
/// also what `peer_bench.py` uses).
pub const A_ZERO_POINT: u8 = 128;

fn try_vec<T: Clone>(what: &str, len: usize, fill: T) -> Result<Vec<T>> {
    let mut v = crate::error::try_vec_with_capacity(Some(len), || format!("{what} ({len} elements)"))?;
    v.resize(len, fill);
    Ok(v)
}

impl GemmCase {
    /// Allocates and fills A and B from `seed`, packs B for `ctx`'s GEMM kernel.
    pub fn new(ctx: &Context, shape: &Shape, seed: u64) -> Result<GemmCase> {
        let (m, n, k) = (shape.m, shape.n, shape.k);
        if m == 0 || n == 0 || k == 0 {
            return Err(Error::InvalidParameter(format!("shape {}: every dimension must be at least 1", shape.dims())));
        }
        case_bytes(shape)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a = try_vec("A", m * k, 0u8)?;
        rng.fill_bytes(&mut a);
        let mut b_bits = try_vec("B", k * n, 0u8)?;
        rng.fill_bytes(&mut b_bits);
        let b: Vec<i8> = bytemuck::cast_slice(&b_bits).to_vec();
        drop(b_bits);
        let w = PackedWeights::new_in(ctx, MatrixRef::new(&b, k, n), WeightQuant::per_tensor(0, 0.01))?;
        // Non-zero so the pages are mapped now, not during the first timed call.
        let c = try_vec("C", m * n, 1i32)?;
        Ok(GemmCase { shape: shape.clone(), ctx: ctx.clone(), a, b, w, copies: Vec::new(), next: 0, c })
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The GEMM microkernel the weights were packed for.
    pub fn kernel(&self) -> GemmUkernel {
        self.w.kernel()
    }

    /// The name of the kernel that runs this shape: the GEMV kernel for `M ≤ 4` where
    /// the context has one for the weights' packed format, else [`Self::kernel`]'s.
    pub fn kernel_name(&self) -> &'static str {
        self.ctx.gemm_kernel_for(&self.w, self.shape.m).name
    }

    /// Bytes of packed weights one call streams (for memory-bound shapes, GB/s).
    pub fn weight_bytes(&self) -> usize {
        self.w.packed_bytes()
    }

    /// The same case over `copies` identical copies of the packed weights, one per call
    /// in turn (see [`cold_copies`]).
    pub fn with_weight_copies(mut self, copies: usize) -> Result<GemmCase> {
        self.copies = clone_copies(&self.w, self.w.packed_bytes(), copies)?;
        Ok(self)
    }

    /// Copies of the packed weights the calls rotate through (1: hot weights).
    pub fn weight_copies(&self) -> usize {
        1 + self.copies.len()
    }

    /// One GEMM call (on the next copy of the weights, when there are several).
    pub fn run(&mut self) -> Result<()> {
        let (m, n, k) = (self.shape.m, self.shape.n, self.shape.k);
        let a = Activations::new(MatrixRef::new(&self.a, m, k), A_ZERO_POINT, 0.02);
        let w = rotate(&self.w, &self.copies, &mut self.next);
        self.ctx.gemm_i32(a, w, None, MatrixMut::new(&mut self.c, m, n))
    }

    /// Checks up to 64 entries of the last result (corners and pseudo-random ones)
    /// against an exact i64 dot product, so a benchmark never reports the speed of a
    /// wrong kernel.
    pub fn check(&self) -> Result<()> {
        let (m, n, k) = (self.shape.m, self.shape.n, self.shape.k);
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let mut points = vec![(0, 0), (m - 1, n - 1), (0, n - 1), (m - 1, 0)];
        while points.len() < 64.min(m * n) {
            let r = rng.next_u64() as usize;
            points.push((r % m, (r >> 32) % n));
        }
        for (i, j) in points {
            let want: i64 = (0..k)
                .map(|kk| (self.a[i * k + kk] as i64 - A_ZERO_POINT as i64) * self.b[kk * n + j] as i64)
                .sum();
            let got = self.c[i * n + j] as i64;
            if got != want {
                return Err(Error::Internal(format!(
                    "{} on {}: C[{i}][{j}] = {got}, the exact result is {want}",
                    self.w.kernel_name(),
                    self.shape.dims()
                )));
            }
        }
        Ok(())
    }
}

/// How many copies of `bytes` of weights make a rotation that no cache level holds: at
/// least twice the L3 (sysfs, 32 MiB where it does not say), so that each call reads its
/// weights from DRAM, as an inference engine streaming a model's layers does. Capped at
/// 1 GiB in all; 1 when one copy is already that large.
pub fn cold_copies(bytes: usize) -> usize {
    let l3 = crate::peak::cache_sizes().1.unwrap_or(32 << 20);
    let want = (2 * l3).div_ceil(bytes.max(1));
    want.clamp(1, ((1usize << 30) / bytes.max(1)).max(1))
}

/// `copies − 1` clones of `w` (`bytes` each, for the error), allocation failures as errors.
fn clone_copies<W: Clone>(w: &W, bytes: usize, copies: usize) -> Result<Vec<W>> {
    let extra = copies.saturating_sub(1);
    let mut v = crate::error::try_vec_with_capacity(Some(extra), || format!("{extra} weight copies"))?;
    if extra.checked_mul(bytes).is_none_or(|total| total > 1 << 30) {
        return Err(Error::InvalidParameter(format!("{copies} copies of {bytes} bytes of weights exceed the 1 GiB cap")));
    }
    v.extend((0..extra).map(|_| w.clone()));
    Ok(v)
}

/// The weights of the next call: `first`, then each of `rest`, round robin.
fn rotate<'a, W>(first: &'a W, rest: &'a [W], next: &mut usize) -> &'a W {
    let i = *next;
    *next = if i >= rest.len() { 0 } else { i + 1 };
    if i == 0 { first } else { &rest[i - 1] }
}

/// A depthwise convolution benchmark layer (batch 1, square kernel, symmetric padding),
/// named as in `../shared/tools/peer_bench.py`'s `CONVS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwShape {
    /// The name `peer_bench.py` uses.
    pub name: &'static str,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on every side.
    pub pad: usize,
}

/// The depthwise layers of DESIGN.md §7 and issue 4.
pub const DW_SHAPES: &[DwShape] = &[
    DwShape { name: "mbv2_dw3x3_56x56x144", c: 144, h: 56, w: 56, k: 3, stride: 1, pad: 1 },
    DwShape { name: "mbv2_dw3x3_s2_112x112x96", c: 96, h: 112, w: 112, k: 3, stride: 2, pad: 1 },
    DwShape { name: "dw5x5_28x28x192", c: 192, h: 28, w: 28, k: 5, stride: 1, pad: 2 },
];

impl DwShape {
    /// The convolution geometry.
    pub fn geometry(&self) -> crate::conv::Conv2dGeometry {
        crate::conv::Conv2dGeometry {
            batch: 1,
            in_h: self.h,
            in_w: self.w,
            in_c: self.c,
            out_c: self.c,
            kernel_h: self.k,
            kernel_w: self.k,
            stride_h: self.stride,
            stride_w: self.stride,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: self.pad,
            pad_left: self.pad,
            pad_bottom: self.pad,
            pad_right: self.pad,
            groups: self.c,
        }
    }
    /// Output height (= width).
    pub fn out_size(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// `2·MACs` of one call.
    pub fn ops(&self) -> f64 {
        2.0 * (self.out_size() * self.out_size() * self.c * self.k * self.k) as f64
    }
}

/// A depthwise layer by name (case-insensitive).
pub fn find_dw_shape(s: &str) -> Result<DwShape> {
    DW_SHAPES.iter().copied().find(|d| d.name.eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "depthwise layer {s:?} is not one of {}",
            DW_SHAPES.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The benchmarked depthwise operation, as `peer_bench.py`'s NHWC `QLinearConv`: u8
/// activations (zero point 128, scale 0.02), i8 weights (zero point 0, scale 0.01),
/// u8 output requantized in `Fp32` mode (zero point 128, scale `0.0002·k·100`).
#[derive(Debug)]
pub struct DwconvCase {
    shape: DwShape,
    ctx: Context,
    x: Vec<u8>,
    w: Vec<i8>,
    conv: crate::conv::DepthwiseConv,
    y: Vec<u8>,
    y_scale: f32,
}

impl DwconvCase {
    /// Random input and filter from `seed`, the filter packed for `ctx`.
    pub fn new(ctx: &Context, shape: &DwShape, seed: u64) -> Result<DwconvCase> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = vec![0u8; shape.h * shape.w * shape.c];
        rng.fill_bytes(&mut x);
        // Weights in [−127, 127], as peer_bench.py draws them.
        let w: Vec<i8> = (0..shape.c * shape.k * shape.k).map(|_| ((rng.next_u32() % 255) as i32 - 127) as i8).collect();
        let f = crate::conv::DepthwiseFilter::new_in(ctx, &w, shape.c, shape.k, shape.k, WeightQuant::per_tensor(0, 0.01))?;
        let conv = crate::conv::DepthwiseConv::new(f, &shape.geometry())?;
        let o = shape.out_size();
        let y = vec![1u8; o * o * shape.c];
        let y_scale = 0.02 * 0.01 * (shape.k as f32) * 100.0;
        Ok(DwconvCase { shape: *shape, ctx: ctx.clone(), x, w, conv, y, y_scale })
    }

    /// The microkernel that runs.
    pub fn kernel_name(&self) -> &'static str {
        self.conv.filter().kernel_name()
    }

    /// One convolution.
    pub fn run(&mut self) -> Result<()> {
        let s = &self.shape;
        let o = s.out_size();
        let a = Activations::new(MatrixRef::new(&self.x, s.h * s.w, s.c), A_ZERO_POINT, 0.02);
        let rq = crate::gemm::Requantize::new(self.y_scale, 128u8);
        self.conv.run_requantize(&self.ctx, a, &rq, MatrixMut::new(&mut self.y, o * o, s.c))
    }

    /// Checks 256 outputs (corners and pseudo-random) against a direct i64 convolution
    /// and the reference requantization.
    pub fn check(&self) -> Result<()> {
        let s = &self.shape;
        let o = s.out_size();
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let mut pts = vec![(0, 0, 0), (o - 1, o - 1, s.c - 1), (0, o - 1, 0), (o - 1, 0, s.c - 1)];
        while pts.len() < 256 {
            let r = rng.next_u64() as usize;
            pts.push((r % o, (r >> 20) % o, (r >> 40) % s.c));
        }
        let mult = (0.02f32 * 0.01) / self.y_scale;
        for (oy, ox, c) in pts {
            let mut acc = 0i64;
            for ky in 0..s.k {
                for kx in 0..s.k {
                    let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                    let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                        continue;
                    }
                    let xv = self.x[(iy as usize * s.w + ix as usize) * s.c + c] as i64 - A_ZERO_POINT as i64;
                    acc += xv * self.w[(c * s.k + ky) * s.k + kx] as i64;
                }
            }
            let want = qkern_kernels::reference::requantize_fp32(acc, mult, 128).clamp(0, 255);
            let got = self.y[(oy * o + ox) * s.c + c] as i64;
            if got != want {
                return Err(Error::Internal(format!(
                    "{} on {}: y[{oy}][{ox}][{c}] = {got}, the exact result is {want} (acc {acc})",
                    self.kernel_name(),
                    s.name
                )));
            }
        }
        Ok(())
    }
}

/// The shapes `qkern bench --op codebook` times by default (issue 5): GEMV 4096² and
/// 11008×4096, GEMM M = 16 and 128 with N = K = 4096.
pub const CODEBOOK_SHAPES: &[&str] = &["dec4096", "dec11008", "b16_4096", "b128_4096"];

/// The schemes `qkern bench --op codebook` times: PoT-4, APoT-4 weights, and
/// `codebook4` = llama.cpp's IQ4_NL learned table (grid up to 127), and 5-bit APoT
/// weights (`apot5`, grid 48) on the int8 lookup kernels; PoT-5 (`pot5`, grid 2^14) and
/// 4-bit log (`log4`, unsigned PoT, grid 2^14) on the int16 ones.
pub const CODEBOOK_SCHEMES: &[&str] = &["pot4", "apot4", "codebook4", "apot5", "pot5", "log4"];

/// The level set of a [`CODEBOOK_SCHEMES`] name.
pub fn codebook_scheme(name: &str) -> Result<crate::quant::LevelSet> {
    use crate::quant::{ApotFormat, LevelSet, PotFormat};
    match name {
        "pot4" => Ok(PotFormat::signed(4)?.level_set()),
        "apot4" => Ok(ApotFormat::weight(4)?.level_set()),
        "apot5" => Ok(ApotFormat::weight(5)?.level_set()),
        "pot5" => Ok(PotFormat::signed(5)?.level_set()),
        "log4" => Ok(PotFormat::unsigned(4)?.level_set()),
        "codebook4" => LevelSet::codebook_i16(4, &[-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]),
        _ => Err(Error::InvalidParameter(format!("codebook scheme {name:?} is not one of {}", CODEBOOK_SCHEMES.join(", ")))),
    }
}

/// A codebook benchmark case: `C (i32) = (A − 128)·grid[codes]`, u8 activations, random
/// 4-bit codes of `scheme` with per-column scales, prepacked for `ctx`.
#[derive(Debug)]
pub struct CodebookCase {
    shape: Shape,
    ctx: Context,
    a: Vec<u8>,
    codes: crate::quant::PackedCodes,
    w: crate::codebook::CodebookWeights,
    /// Extra identical copies of `w` for cold-weight timing, as in [`GemmCase`].
    copies: Vec<crate::codebook::CodebookWeights>,
    next: usize,
    c: Vec<i32>,
}

impl CodebookCase {
    /// Allocates and fills A and the codes from `seed`, packs them for `ctx` and the
    /// family `QKERN_CODEBOOK_KERNEL` selects.
    pub fn new(ctx: &Context, shape: &Shape, scheme: &str, seed: u64) -> Result<CodebookCase> {
        Self::with_family(ctx, shape, scheme, seed, None)
    }

    /// As [`CodebookCase::new`], packed for the best kernel of `family` when given (an
    /// error if that family cannot run `scheme`, e.g. shift on a learned codebook).
    pub fn with_family(
        ctx: &Context,
        shape: &Shape,
        scheme: &str,
        seed: u64,
        family: Option<crate::codebook::CodebookFamily>,
    ) -> Result<CodebookCase> {
        Self::build(ctx, shape, scheme, seed, |codes| match family {
            Some(f) => crate::codebook::CodebookWeights::with_family(ctx, codes, f),
            None => crate::codebook::CodebookWeights::new_in(ctx, codes),
        })
    }

    /// As [`CodebookCase::new`], packed for the kernel named `kernel` (an error if it is
    /// not a candidate of `ctx` or cannot run `scheme` exactly).
    pub fn with_kernel(ctx: &Context, shape: &Shape, scheme: &str, seed: u64, kernel: &str) -> Result<CodebookCase> {
        Self::build(ctx, shape, scheme, seed, |codes| crate::codebook::CodebookWeights::with_kernel(ctx, codes, kernel))
    }

    fn build(
        ctx: &Context,
        shape: &Shape,
        scheme: &str,
        seed: u64,
        pack: impl FnOnce(&crate::quant::PackedCodes) -> Result<crate::codebook::CodebookWeights>,
    ) -> Result<CodebookCase> {
        use crate::quant::{LevelParams, PackedCodes};
        let (m, n, k) = (shape.m, shape.n, shape.k);
        case_bytes(shape)?;
        let set = codebook_scheme(scheme)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a = try_vec("A", m * k, 0u8)?;
        rng.fill_bytes(&mut a);
        let nc = set.num_codes() as u64;
        let mut codes = try_vec("codes", k * n, 0u8)?;
        codes.iter_mut().for_each(|c| *c = (rng.next_u64() % nc) as u8);
        let params = LevelParams::per_channel(set, 1, (0..n).map(|j| (2f32).powi(-((j % 7) as i32) - 4)).collect())?;
        let codes = PackedCodes::pack(&codes, k, n, &params)?;
        let w = pack(&codes)?;
        let c = try_vec("C", m * n, 1i32)?;
        Ok(CodebookCase { shape: shape.clone(), ctx: ctx.clone(), a, codes, w, copies: Vec::new(), next: 0, c })
    }

    /// What runs at this M: the codebook kernel, or the decoder and the int8 GEMM kernel
    /// of the decoded path ([`crate::codebook::CodebookWeights::kernel_name_for`]).
    pub fn kernel_name(&self) -> String {
        self.w.kernel_name_for(self.shape.m)
    }

    /// Whether this M takes the decoded path (codes decoded to int8 panels).
    pub fn decodes(&self) -> bool {
        self.w.decode_min_m().is_some_and(|min| self.shape.m >= min && self.shape.k > 0)
    }

    /// The same case on the in-register codebook kernel at every M (the decoded path
    /// off), to time both paths side by side.
    pub fn without_decode(self) -> CodebookCase {
        self.with_decode_min_m(usize::MAX)
    }

    /// The same case with the decoded path from `min_m` rows
    /// ([`crate::codebook::CodebookWeights::with_decode_min_m`]), to time the crossover.
    pub fn with_decode_min_m(mut self, min_m: usize) -> CodebookCase {
        for w in std::iter::once(&mut self.w).chain(&mut self.copies) {
            w.set_decode_min_m(min_m);
        }
        self
    }

    /// Bytes of packed codes one call streams.
    pub fn weight_bytes(&self) -> usize {
        self.w.packed_bytes()
    }

    /// Copies of the packed codes the calls rotate through (1: hot weights).
    pub fn weight_copies(&self) -> usize {
        1 + self.copies.len()
    }

    /// The same case over `copies` identical copies of the packed codes, one per call in
    /// turn (see [`cold_copies`]).
    pub fn with_weight_copies(mut self, copies: usize) -> Result<CodebookCase> {
        self.copies = clone_copies(&self.w, self.w.packed_bytes(), copies)?;
        Ok(self)
    }

    /// One call (on the next copy of the codes, when there are several).
    pub fn run(&mut self) -> Result<()> {
        let (m, n, k) = (self.shape.m, self.shape.n, self.shape.k);
        let a = Activations::new(MatrixRef::new(&self.a, m, k), A_ZERO_POINT, 0.02);
        let w = rotate(&self.w, &self.copies, &mut self.next);
        self.ctx.codebook_gemm_i32(a, w, None, MatrixMut::new(&mut self.c, m, n))
    }

    /// Checks up to 64 entries of the last result against a plain decode-and-multiply.
    pub fn check(&self) -> Result<()> {
        let (m, n, k) = (self.shape.m, self.shape.n, self.shape.k);
        let grid = self.codes.level_set().grid().map(|g| g.values().to_vec()).unwrap_or_default();
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let mut points = vec![(0, 0), (m - 1, n - 1), (0, n - 1), (m - 1, 0)];
        while points.len() < 64.min(m * n) {
            let r = rng.next_u64() as usize;
            points.push((r % m, (r >> 32) % n));
        }
        for (i, j) in points {
            let want: i64 = (0..k)
                .map(|kk| {
                    let g = grid[self.codes.code(kk, j).unwrap_or(0) as usize] as i64;
                    (self.a[i * k + kk] as i64 - A_ZERO_POINT as i64) * g
                })
                .sum();
            let got = self.c[i * n + j] as i64;
            if got != want {
                return Err(Error::Internal(format!(
                    "{} on {}: C[{i}][{j}] = {got}, the exact result is {want}",
                    self.w.kernel_name(),
                    self.shape.dims()
                )));
            }
        }
        Ok(())
    }
}

/// An exact-mode PWLQ benchmark case (issue 6): `C (f32) = (A − 128)·ŵ·sa` with 4-bit
/// PWLQ weights (Gaussian breakpoint, per output channel) of N(0, 0.02²) data, u8
/// activations, through [`crate::quant::pwlq::PwlqGemmWeights`] prepared for `ctx`.
#[derive(Debug)]
pub struct PwlqCase {
    shape: Shape,
    ctx: Context,
    a: Vec<u8>,
    packed: crate::quant::pwlq::PwlqPacked,
    w: crate::quant::pwlq::PwlqGemmWeights,
    c: Vec<f32>,
}

/// Activation scale of [`PwlqCase`].
const PWLQ_A_SCALE: f32 = 0.01;

impl PwlqCase {
    /// Generates the weights from `seed`, quantizes, packs and prepares them for `ctx`.
    pub fn new(ctx: &Context, shape: &Shape, seed: u64) -> Result<PwlqCase> {
        use crate::quant::Granularity;
        use crate::quant::pwlq::{Breakpoint, PwlqGemmWeights, PwlqQuantizer};
        let (m, n, k) = (shape.m, shape.n, shape.k);
        if m == 0 || n == 0 || k == 0 {
            return Err(Error::InvalidParameter(format!("shape {}: every dimension must be at least 1", shape.dims())));
        }
        case_bytes(shape)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a = try_vec("A", m * k, 0u8)?;
        rng.fill_bytes(&mut a);
        let mut x = try_vec("weights", k * n, 0f32)?;
        // N(0, 0.02²) by Box–Muller, so the breakpoint sits where the paper puts it.
        for v in x.iter_mut() {
            let (u1, u2) = ((rng.next_u32() as f64 + 1.0) / 4294967297.0, rng.next_u32() as f64 / 4294967296.0);
            *v = (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
        }
        let packed = PwlqQuantizer::new(4, Breakpoint::Gaussian)
            .with_granularity(Granularity::PerChannel { axis: 1 })
            .quantize(&x, &[k, n])?
            .pack()?;
        let w = PwlqGemmWeights::new_in(ctx, &packed)?;
        let c = try_vec("C", m * n, 1f32)?;
        Ok(PwlqCase { shape: shape.clone(), ctx: ctx.clone(), a, packed, w, c })
    }

    /// What runs: a fused single-pass kernel, or the int8 GEMM kernel on the three code
    /// matrices.
    pub fn kernel_name(&self) -> &'static str {
        match self.w.fused_kernel_name(&self.ctx, self.shape.m) {
            Some(name) => name,
            None => self.ctx.gemm_kernel_for(self.w.packed(), self.shape.m).name,
        }
    }

    /// One call.
    pub fn run(&mut self) -> Result<()> {
        let (m, n, k) = (self.shape.m, self.shape.n, self.shape.k);
        let a = Activations::new(MatrixRef::new(&self.a, m, k), A_ZERO_POINT, PWLQ_A_SCALE);
        self.w.gemm_f32_in(&self.ctx, a, None, MatrixMut::new(&mut self.c, m, n))
    }

    /// Checks the first and last rows of the last result bit for bit against
    /// [`crate::quant::pwlq::gemm_exact_ref`].
    pub fn check(&self) -> Result<()> {
        let (m, n, k) = (self.shape.m, self.shape.n, self.shape.k);
        let mut want = vec![0f32; n];
        for r in [0, m - 1] {
            let a = Activations::new(MatrixRef::new(&self.a[r * k..(r + 1) * k], 1, k), A_ZERO_POINT, PWLQ_A_SCALE);
            crate::quant::pwlq::gemm_exact_ref(a, &self.packed, None, MatrixMut::new(&mut want, 1, n))?;
            let got = &self.c[r * n..(r + 1) * n];
            if let Some(j) = (0..n).find(|&j| got[j].to_bits() != want[j].to_bits()) {
                return Err(Error::Internal(format!(
                    "{} on {}: C[{r}][{j}] = {}, the reference gives {}",
                    self.kernel_name(),
                    self.shape.dims(),
                    got[j],
                    want[j]
                )));
            }
        }
        Ok(())
    }
}

/// The README's code blocks, run as doc tests so its example stays correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// One convolution layer of `../shared/tools/peer_bench.py`'s `CONVS` (batch 1, square
/// kernel, symmetric padding), same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Name, as in `peer_bench.py`.
    pub name: &'static str,
    /// Input channels.
    pub in_c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on every side.
    pub pad: usize,
    /// Groups.
    pub groups: usize,
}

impl ConvShape {
    /// The NHWC geometry.
    pub fn geometry(&self) -> crate::conv::Conv2dGeometry {
        let p = self.pad;
        crate::conv::Conv2dGeometry::new(1, self.h, self.w, self.in_c, self.out_c, self.k, self.k)
            .stride(self.stride, self.stride)
            .padding(p, p, p, p)
            .groups(self.groups)
    }
    /// `2·MACs`, the op count GOPS are quoted on (as `peer_bench.py`).
    pub fn ops(&self) -> f64 {
        2.0 * self.geometry().macs() as f64
    }
    /// `HxWxCin->Cout kKsS pP gG`.
    pub fn dims(&self) -> String {
        format!("{}x{}x{}->{} k{}s{}p{} g{}", self.h, self.w, self.in_c, self.out_c, self.k, self.stride, self.pad, self.groups)
    }
}

/// The conv layers `peer_bench.py` times onnxruntime on (its `CONVS`, same order).
pub const CONV_SHAPES: &[ConvShape] = &[
    ConvShape { name: "r50_3x3_56x56x64", in_c: 64, h: 56, w: 56, out_c: 64, k: 3, stride: 1, pad: 1, groups: 1 },
    ConvShape { name: "r50_1x1_56x56x256", in_c: 256, h: 56, w: 56, out_c: 64, k: 1, stride: 1, pad: 0, groups: 1 },
    ConvShape { name: "r50_3x3_s2_56x56x128", in_c: 128, h: 56, w: 56, out_c: 128, k: 3, stride: 2, pad: 1, groups: 1 },
    ConvShape { name: "grp4_3x3_56x56x128", in_c: 128, h: 56, w: 56, out_c: 128, k: 3, stride: 1, pad: 1, groups: 4 },
    ConvShape { name: "mbv2_dw3x3_56x56x144", in_c: 144, h: 56, w: 56, out_c: 144, k: 3, stride: 1, pad: 1, groups: 144 },
    ConvShape { name: "mbv2_dw3x3_s2_112x112x96", in_c: 96, h: 112, w: 112, out_c: 96, k: 3, stride: 2, pad: 1, groups: 96 },
    ConvShape { name: "dw5x5_28x28x192", in_c: 192, h: 28, w: 28, out_c: 192, k: 5, stride: 1, pad: 2, groups: 192 },
];

/// A [`CONV_SHAPES`] entry by name.
pub fn find_conv_shape(name: &str) -> Result<ConvShape> {
    CONV_SHAPES.iter().copied().find(|c| c.name == name).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "unknown conv shape {name:?}; known: {}",
            CONV_SHAPES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The benchmarked convolution, as `peer_bench.py`'s QLinearConv: u8 NHWC input (zero
/// point 128, scale 0.02) × i8 OHWI weights (zero point 0, scale 0.01, prepacked) →
/// u8 requantized (scale from the layer's K, zero point 128), ONNX fp32 rounding.
#[derive(Debug)]
pub struct ConvCase {
    shape: ConvShape,
    ctx: Context,
    x: Vec<u8>,
    w: Vec<i8>,
    filter: crate::conv::Conv2d,
    y_scale: f32,
    y: Vec<u8>,
}

impl ConvCase {
    /// Allocates and fills input and weights from `seed`, packs the filter for `ctx`.
    pub fn new(ctx: &Context, shape: &ConvShape, seed: u64) -> Result<ConvCase> {
        let g = shape.geometry();
        g.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = try_vec("input", g.input_len(), 0u8)?;
        rng.fill_bytes(&mut x);
        let mut wb = try_vec("weights", g.weight_len(), 0u8)?;
        rng.fill_bytes(&mut wb);
        let w: Vec<i8> = bytemuck::cast_slice(&wb).to_vec();
        let filter = crate::conv::Conv2d::new_in(ctx, g, &w, WeightQuant::per_tensor(0, 0.01))?;
        let k = (g.kernel_h * g.kernel_w * g.group_in_c()) as f32;
        // About one standard deviation of the accumulator per 32 output steps.
        let y_scale = 0.02 * 0.01 * k.sqrt() * 74.0 * 74.0 / 32.0;
        let y = try_vec("output", g.output_len(), 1u8)?;
        Ok(ConvCase { shape: *shape, ctx: ctx.clone(), x, w, filter, y_scale, y })
    }

    /// The layer.
    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// The GEMM microkernel that runs.
    pub fn kernel_name(&self) -> &'static str {
        self.filter.kernel_name()
    }

    /// One conv call.
    pub fn run(&mut self) -> Result<()> {
        let rq = crate::gemm::Requantize::new(self.y_scale, 128u8);
        self.ctx.conv2d_requantize(&self.filter, crate::conv::ConvInput::new(&self.x, A_ZERO_POINT, 0.02), &rq, &mut self.y)
    }

    /// Checks the whole last result against the reference convolution and output stage.
    pub fn check(&self) -> Result<()> {
        use qkern_kernels::reference::{RefOutput, conv2d_i64, output_stage_ref};
        let g = self.filter.geometry();
        let mut acc = vec![0i64; g.output_len()];
        conv2d_i64(&g.to_reference(), &self.x, A_ZERO_POINT as i32, &self.w, &[0], &mut acc);
        let scale = vec![(0.02f32 * 0.01) / self.y_scale; g.out_c];
        let ro = RefOutput {
            kind: qkern_kernels::OutputKind::U8,
            mode: crate::RequantMode::Fp32,
            bias_i32: None,
            scale: &scale,
            bias_f32: None,
            qmult: &[],
            out_zero_point: 128,
            qmin: 0,
            qmax: 255,
        };
        for (i, (&y, &a)) in self.y.iter().zip(&acc).enumerate() {
            let want = output_stage_ref(a, i % g.out_c, &ro);
            if y as i64 != want {
                return Err(Error::Internal(format!("conv {}: y[{i}] = {y}, the reference gives {want}", self.shape.name)));
            }
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use qkern_kernels::PackFormat;

    #[test]
    fn shapes_parse_by_name_and_dims() {
        let s = find_shape("SQ1024").unwrap();
        assert_eq!((s.name.as_ref(), s.m, s.n, s.k), ("sq1024", 1024, 1024, 1024));
        let s = find_shape(" 3x5X7 ").unwrap();
        assert_eq!((s.name.as_ref(), s.m, s.n, s.k), ("3x5x7", 3, 5, 7));
        let s = find_shape("2×4×8").unwrap();
        assert_eq!((s.m, s.n, s.k), (2, 4, 8));
        assert_eq!(s.ops(), 128.0);
        for bad in ["", "foo", "1x2", "1x2x3x4", "0x1x1", "1x0x1", "1x1x0", "-1x2x3", "1x2xq", "x1x1", "99999999999999999999x1x1"] {
            assert!(find_shape(bad).is_err(), "{bad:?} was accepted");
        }
        let e = find_shape("1x0x1").unwrap_err().to_string();
        assert!(e.contains("N must be at least 1"), "{e}");
        let e = find_shape("100000x100000x100000").unwrap_err().to_string();
        assert!(e.contains("MiB"), "{e}");
    }

    #[test]
    fn shape_list_is_design_section_7() {
        let dims: Vec<(usize, usize, usize)> = SHAPES.iter().map(|s| (s.m, s.n, s.k)).collect();
        let mut want = vec![(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048)];
        want.extend([(1, 4096, 4096), (1, 11008, 4096), (16, 4096, 4096), (64, 4096, 4096)]);
        want.extend([(128, 768, 768), (128, 3072, 768), (128, 768, 3072), (128, 4096, 4096)]);
        want.extend([(3136, 64, 576), (784, 128, 1152), (49, 512, 4608), (3136, 24, 96), (196, 384, 64)]);
        assert_eq!(dims, want);
        let mut names: Vec<&str> = SHAPES.iter().map(|s| s.name.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SHAPES.len(), "duplicate shape names");
    }

    /// The names and dimensions must match `peer_bench.py`'s table, so rows line up.
    #[test]
    fn shape_names_match_peer_bench() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tools/peer_bench.py");
        let Ok(src) = std::fs::read_to_string(path) else {
            eprintln!("skipped: {path} not found");
            return;
        };
        // Lines like `    ("sq256", 256, 256, 256),` inside `SHAPES = [ ... ]`.
        let table = src.split("SHAPES = [").nth(1).and_then(|t| t.split(']').next()).expect("SHAPES table in peer_bench.py");
        let mut peer = Vec::new();
        for line in table.lines() {
            let line = line.trim().trim_end_matches(',');
            let Some(inner) = line.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else { continue };
            let f: Vec<&str> = inner.split(',').map(|x| x.trim().trim_matches('"')).collect();
            let d = |i: usize| f[i].parse::<usize>().expect("a number");
            peer.push((f[0].to_string(), d(1), d(2), d(3)));
        }
        let ours: Vec<(String, usize, usize, usize)> = SHAPES.iter().map(|s| (s.name.to_string(), s.m, s.n, s.k)).collect();
        assert_eq!(ours, peer);
    }

    fn kernel(name: &'static str, isa: Isa) -> GemmUkernel {
        GemmUkernel {
            name,
            isa,
            mr: 4,
            format: PackFormat { nr: 16, kr: 4 },
            a_offset: [0; 2],
            b_offset: [0; 2],
            max_abs_stored_b: None,
            run: [[None; 2]; 2],
            indirect: None,
            packed_a: None,
        }
    }

    #[test]
    fn peaks_by_path() {
        let p = |name, isa| peak_for_kernel(&kernel(name, isa)).map(|p| p.gops_per_core);
        assert_eq!(p("qx8_gemm_4x16c4__generic", Isa::Scalar), None);
        assert_eq!(p("qs8_gemm_4x8c8__avx2", Isa::Avx2), Some(183.0));
        assert_eq!(p("qs8_gemm_4x8c2_maddubs__avx2", Isa::Avx2), Some(237.0));
        assert_eq!(p("qs8_gemm_4x16c4__avxvnni", Isa::AvxVnni), Some(513.0));
        assert_eq!(p("qs8_gemm_4x16c4__avx512vnni", Isa::Avx512Vnni), Some(959.0));
        assert_eq!(p("qu8s8_gemm_6x16c4__avx512vnni_ymm", Isa::Avx512Vnni), Some(513.0));
        assert_eq!(p("qs8_gemm_16x64__amx", Isa::Amx), Some(7180.0));
        for isa in [Isa::Neon, Isa::Dotprod, Isa::I8mm] {
            assert_eq!(p("k", isa), None);
        }
    }

    #[test]
    fn timing_makes_at_least_one_call_and_respects_min_time() {
        // A call slower than min_time: the warm-up is the only call and sample.
        let mut calls = 0;
        let t = time(Duration::from_millis(1), || {
            calls += 1;
            std::thread::sleep(Duration::from_millis(3));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!((calls, t.calls, t.samples), (1, 1, 1));
        assert!(t.median >= 0.003 && t.min == t.median && t.max == t.median);

        // A 50 µs call: several calls per ~1 ms sample, samples until min_time.
        let mut calls = 0;
        let t = time(Duration::from_millis(20), || {
            calls += 1;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_micros(50) {}
            Ok::<(), ()>(())
        })
        .unwrap();
        // Calls per sample follow the warm-up call, which can itself take a whole sample
        // (emulated under qemu, or descheduled): at least one, and every call counted.
        assert_eq!(t.calls, calls);
        assert!(t.calls_per_sample >= 1 && t.samples > 1 && t.calls == 1 + t.samples * t.calls_per_sample, "{t:?}");
        assert!(t.total >= Duration::from_millis(20), "{t:?}");
        assert!(t.min <= t.median && t.median <= t.max && t.min >= 50e-6, "{t:?}");

        assert!(t.min <= t.median && t.median <= t.max);

        // The first error stops the timing and is returned.
        let mut calls = 0;
        let r = time(Duration::from_secs(10), || {
            calls += 1;
            if calls == 3 { Err("boom") } else { Ok(()) }
        });
        assert_eq!((r, calls), (Err("boom"), 3));
    }

    #[test]
    fn interleaved_timing_samples_every_function_each_round() {
        let spin = |us: u64| {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_micros(us) {}
        };
        let (mut a, mut b) = (0usize, 0usize);
        let mut fa = || {
            a += 1;
            spin(50);
            Ok::<(), &str>(())
        };
        let mut fb = || {
            b += 1;
            spin(200);
            Ok(())
        };
        let t = time_interleaved(Duration::from_millis(30), &mut [&mut fa, &mut fb]).unwrap();
        assert_eq!(t.len(), 2);
        // The same number of rounds, every call counted, each near its own cost.
        assert_eq!(t[0].samples, t[1].samples, "{t:?}");
        assert_eq!((t[0].calls, t[1].calls), (a, b));
        for (x, us) in t.iter().zip([50e-6, 200e-6]) {
            assert!(x.calls == 1 + x.samples * x.calls_per_sample && x.min >= us && x.min <= x.median && x.median <= x.max, "{x:?}");
        }
        assert!(t[0].total >= Duration::from_millis(30));
        // A slow pair: one round after the warm-ups, never none.
        let mut slow = || {
            spin(3000);
            Ok::<(), &str>(())
        };
        let t = time_interleaved(Duration::from_millis(1), &mut [&mut slow]).unwrap();
        assert_eq!((t[0].samples, t[0].calls), (1, 2));
        // The first error stops the timing and is returned.
        let mut n = 0;
        let mut fe = || {
            n += 1;
            if n == 3 { Err("boom") } else { Ok(()) }
        };
        let mut ok = || Ok(());
        assert_eq!(time_interleaved(Duration::from_secs(10), &mut [&mut ok, &mut fe]).unwrap_err(), "boom");
    }

    #[test]
    fn cold_copies_outgrow_the_l3_and_rotate_in_turn() {
        let l3 = crate::peak::cache_sizes().1.unwrap_or(32 << 20);
        for bytes in [1, 4096, 8 << 20, 45 << 20, 2 << 30] {
            let n = cold_copies(bytes);
            assert!(n >= 1);
            // Twice the L3 in all, unless that would pass the 1 GiB cap.
            assert!(n * bytes >= (2 * l3).min(1 << 30) || n == 1, "{bytes} bytes: {n} copies");
            assert!(n == 1 || n * bytes <= 1 << 30, "{bytes} bytes: {n} copies");
        }
        let (first, rest) = (0, [1, 2]);
        let mut next = 0;
        let seen: Vec<i32> = (0..7).map(|_| *rotate(&first, &rest, &mut next)).collect();
        assert_eq!(seen, [0, 1, 2, 0, 1, 2, 0]);
        assert!(clone_copies(&0u8, 1 << 30, 3).is_err());
        assert_eq!(clone_copies(&7u8, 1, 3).unwrap(), [7, 7]);

        // A cold case computes what the hot one does, whichever copy ran last.
        let ctx = Context::new().unwrap();
        let shape = find_shape("1x40x70").unwrap();
        let mut c = CodebookCase::new(&ctx, &shape, "codebook4", 3).unwrap().with_weight_copies(3).unwrap();
        assert_eq!(c.weight_copies(), 3);
        for _ in 0..4 {
            c.run().unwrap();
            c.check().unwrap();
        }
        let mut g = GemmCase::new(&ctx, &shape, 3).unwrap().with_weight_copies(2).unwrap();
        assert_eq!(g.weight_copies(), 2);
        for _ in 0..3 {
            g.run().unwrap();
            g.check().unwrap();
        }
    }

    #[test]
    fn gemm_case_runs_and_check_catches_a_wrong_entry() {
        let ctx = Context::for_isa(Isa::Scalar).unwrap().with_threads(1).unwrap();
        for dims in ["1x1x1", "5x17x9", "33x20x70"] {
            let shape = find_shape(dims).unwrap();
            let mut case = GemmCase::new(&ctx, &shape, 7).unwrap();
            case.run().unwrap();
            case.check().unwrap();
            let last = case.c.len() - 1;
            case.c[last] = case.c[last].wrapping_add(1);
            assert!(case.check().is_err(), "{dims}: a wrong C[M-1][N-1] passed the check");
        }
    }
}
