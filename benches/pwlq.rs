//! PWLQ benchmarks (issue 6, point 5), one core, every x86 tier this CPU has:
//!
//! * dequant: 4-bit PWLQ codes → f32 (and → i8 on the grid) in GB/s of *codes read*
//!   (value plane + region words), against a `memcpy` of the same number of bytes timed
//!   in the same run (before and after, averaged). Two modes: `stream` decodes channel by
//!   channel into one K-float buffer that stays in L1/L2 (how a consumer uses it), `full`
//!   writes the whole N·K f32 matrix (6.4× the codes' bytes written). Because the output
//!   is 6.4× (f32) or 1.6× (i8) the codes, a second comparison divides the bytes *written*
//!   per second by those of a `memcpy` of the output's size (`stream`: one K-float row,
//!   `full`: the whole matrix), timed the same way: that is the store bandwidth a
//!   memory-bound decoder can reach, whatever its input size.
//! * gemm: the exact-mode PWLQ GEMM (`PwlqGemmWeights`, three int8 dot products + f32
//!   combine) against our int8 GEMM (`gemm_i32`, u8 × i8 prepacked) at M = 1, 16, 128,
//!   N = K = 4096, same tier, same thread count (1); ratio = int8 time / PWLQ time.
//!   Grid-aligned mode (one shared ratio) runs the same shapes on the codebook kernels,
//!   with levels within ±127 and within ±64 (where AVX2 `vpmaddubsw` runs them); from
//!   M = 4 each pair (int8, path) timed interleaved, at M = 1 each alone (hot weights).
//!
//! `cargo bench --bench pwlq` (add `-- quick` for short timings, `-- dequant` or
//! `-- gemm` for one part).

use std::hint::black_box;
use std::time::Duration;

use qkern::bench::{time, time_interleaved};
use qkern::codebook::CodebookWeights;
use qkern::quant::Granularity;
use qkern::quant::pwlq::{Breakpoint, GridScope, PwlqGemmWeights, PwlqPacked, PwlqQuantizer, dequant_kernel_name};
use qkern::{Activations, Context, Isa, MatrixMut, MatrixRef, PackedWeights, WeightQuant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn weights(k: usize, n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..k * n)
        .map(|_| {
            let v: f64 = StandardNormal.sample(&mut r);
            (0.02 * v) as f32
        })
        .collect()
}

fn pwlq(k: usize, n: usize) -> (Vec<f32>, PwlqPacked) {
    let x = weights(k, n, 7);
    let p = PwlqQuantizer::new(4, Breakpoint::Gaussian)
        .with_granularity(Granularity::PerChannel { axis: 1 })
        .quantize(&x, &[k, n])
        .unwrap()
        .pack()
        .unwrap();
    (x, p)
}

fn tiers() -> Vec<Isa> {
    qkern::dispatch::cpu().isas.iter().copied().filter(|&i| matches!(i, Isa::Scalar | Isa::Avx2 | Isa::Avx512Vnni)).collect()
}

/// `(mode, output type, one call)` of the dequant table.
type Run<'a> = (&'static str, &'static str, Box<dyn FnMut() -> qkern::Result<()> + 'a>);

/// One cache line of bytes: the unit of the benchmark's aligned buffers.
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zeroed buffer of at least `len` bytes starting on a cache line.
struct Lines(Vec<Line>);

impl std::ops::Deref for Lines {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

fn lines(len: usize) -> Lines {
    Lines(vec![Line([0; 64]); len.div_ceil(64)])
}

fn memcpy_gbps(src: &[u8], dst: &mut [u8], t: Duration) -> f64 {
    let tm = time::<()>(t, || {
        dst.copy_from_slice(black_box(src));
        black_box(&mut *dst);
        Ok(())
    })
    .unwrap();
    src.len() as f64 / tm.median / 1e9
}

fn dequant(t: Duration) {
    println!("== dequant: 4-bit PWLQ codes -> f32 / i8, one core; GB/s of codes read (values + region words) ==");
    println!(
        "{:<7} {:>6} {:>6} {:>9} {:<32} {:>9} {:>11} {:>7} | {:>9} {:>11} {:>7}",
        "mode", "N", "K", "codes KiB", "kernel", "GB/s", "memcpy GB/s", "%memcpy", "out GB/s", "memcpy GB/s", "%memcpy"
    );
    for (n, k) in [(64usize, 4096usize), (4096, 4096)] {
        let (x, w) = pwlq(k, n);
        let code_bytes = w.values().len() + 8 * w.regions().len();
        let mut src = lines(code_bytes);
        src.fill(1);
        let src = &src[..code_bytes];
        let mut dst = lines(code_bytes);
        let dst = &mut dst[..code_bytes];
        let grid = PwlqQuantizer::new(4, Breakpoint::Gaussian)
            .with_granularity(Granularity::PerChannel { axis: 1 })
            .calibrate(&x, &[k, n])
            .unwrap()
            .snap_to_grid(&x, &[k, n], GridScope::PerChannel, 127)
            .unwrap();
        let gw = grid.pack().unwrap();
        let tables: Vec<[i8; 32]> = (0..n).map(|c| grid.table_i8(c).unwrap()).collect();
        // Every buffer 64-byte aligned: a copy whose source and destination sit at
        // different offsets in a cache line runs at about half speed on Zen 4, which
        // would flatter the ratios.
        let mut row_buf = lines(4 * k);
        let row: &mut [f32] = bytemuck::cast_slice_mut(&mut row_buf[..4 * k]);
        let mut full_buf = lines(4 * n * k);
        let full: &mut [f32] = bytemuck::cast_slice_mut(&mut full_buf[..4 * n * k]);
        let mut full8_buf = lines(n * k);
        let full8: &mut [i8] = bytemuck::cast_slice_mut(&mut full8_buf[..n * k]);
        let mut out_src = lines(4 * n * k);
        out_src.fill(1);
        let mut out_dst = lines(4 * n * k);
        for isa in tiers() {
            let ctx = Context::for_isa(isa).unwrap();
            let runs: [Run<'_>; 3] = [
                (
                    "stream",
                    "f32",
                    Box::new(|| {
                        for c in 0..n {
                            w.dequantize_channel_f32_in(&ctx, c, row)?;
                            black_box(&mut *row);
                        }
                        Ok(())
                    }),
                ),
                ("full", "f32", Box::new(|| w.dequantize_f32_in(&ctx, full))),
                ("full", "i8", Box::new(|| gw.dequantize_i8_in(&ctx, &tables, full8))),
            ];
            for (mode, out, mut f) in runs {
                // Bytes one call writes, and the buffer a same-size memcpy writes.
                let elem = if out == "f32" { 4 } else { 1 };
                let written = elem * n * k;
                let copy_len = if mode == "stream" { elem * k } else { written };
                let before = memcpy_gbps(src, dst, t / 2);
                let before_out = memcpy_gbps(&out_src[..copy_len], &mut out_dst[..copy_len], t / 2);
                let tm = time(t, &mut f).unwrap();
                let after = memcpy_gbps(src, dst, t / 2);
                let after_out = memcpy_gbps(&out_src[..copy_len], &mut out_dst[..copy_len], t / 2);
                let gbps = code_bytes as f64 / tm.median / 1e9;
                let mc = 0.5 * (before + after);
                let out_gbps = written as f64 / tm.median / 1e9;
                let mc_out = 0.5 * (before_out + after_out);
                println!(
                    "{mode:<7} {n:>6} {k:>6} {:>9.1} {:<32} {gbps:>9.2} {mc:>11.2} {:>7.1} | {out_gbps:>9.2} {mc_out:>11.2} {:>7.1}",
                    code_bytes as f64 / 1024.0,
                    dequant_kernel_name(isa, 4, out),
                    100.0 * gbps / mc,
                    100.0 * out_gbps / mc_out
                );
            }
        }
    }
    println!("memcpy = copy_from_slice of the same number of bytes, timed just before and after (mean of the two medians)");
    println!("right of |: bytes written per second against a memcpy of the output's size (stream: one K row; full: the matrix)");
}

fn gemm(t: Duration) {
    println!();
    println!("== exact-mode PWLQ GEMM vs our int8 GEMM, one thread, N = K = 4096 ==");
    println!(
        "{:<11} {:>4} {:>12} {:>10} {:>12} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7}  pwlq path | grid path | grid64 path",
        "isa", "M", "int8 time", "int8 GOPS", "pwlq time", "pwlq GOPS", "ratio", "grid GOPS", "ratio", "grid64", "ratio"
    );
    let (n, k) = (4096usize, 4096usize);
    let (x, w) = pwlq(k, n);
    // Grid-aligned mode: one shared ratio, so the codes run on the codebook kernels. Two
    // grids: levels within ±127 (an int8 table) and within ±64 (one AVX2 `vpmaddubsw`
    // runs with u8 activations), each with what its snap costs in MSE.
    let params = PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(Granularity::PerChannel { axis: 1 }).calibrate(&x, &[k, n]).unwrap();
    let snap = |max_level: i32| {
        let g = params.snap_to_grid(&x, &[k, n], GridScope::Shared, max_level).unwrap();
        println!("grid |L| <= {max_level}: {:+.2} % MSE vs unsnapped PWLQ (Gaussian p)", 100.0 * g.extra_mse() / g.mse_pwlq());
        g.codebook_codes().unwrap()
    };
    let (grid, grid64) = (snap(127), snap(64));
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let b: Vec<i8> = (0..k * n).map(|_| r.random()).collect();
    for isa in tiers().into_iter().filter(|&i| i != Isa::Scalar) {
        let ctx = Context::for_isa(isa).unwrap().with_threads(1).unwrap();
        let int8 = PackedWeights::new_in(&ctx, MatrixRef::new(&b, k, n), WeightQuant::zero_point_only(qkern::PerChannel::Tensor(0))).unwrap();
        let pw = PwlqGemmWeights::new_in(&ctx, &w).unwrap();
        let gw = CodebookWeights::new_in(&ctx, &grid).unwrap();
        let gw64 = CodebookWeights::new_in(&ctx, &grid64).unwrap();
        for m in [1usize, 4, 8, 16, 32, 128] {
            let a: Vec<u8> = (0..m * k).map(|_| r.random()).collect();
            let am = MatrixRef::new(&a, m, k);
            let mut ci = vec![0i32; m * n];
            let (mut cp, mut cg) = (vec![0f32; m * n], vec![0f32; m * n]);
            // Each path against the int8 GEMM. From M = 4 (compute-bound) side by side,
            // so a ratio sees one machine state; a GEMV (M = 1) streams its weights, and
            // interleaved with another weight set (24–26 MiB together) they leave a
            // 32 MiB L3 between calls: each is timed alone, hot, as in `qkern bench`.
            let mut int8_call = || ctx.gemm_i32(Activations::new(am, 128u8, 1.0), &int8, None, MatrixMut::new(&mut ci, m, n));
            let mut pair = |other: &mut dyn FnMut() -> qkern::Result<()>| -> Vec<qkern::bench::Timing> {
                if m == 1 {
                    vec![time(2 * t, &mut int8_call).unwrap(), time(2 * t, other).unwrap()]
                } else {
                    time_interleaved(2 * t, &mut [&mut int8_call, other]).unwrap()
                }
            };
            let p = pair(&mut || pw.gemm_f32_in(&ctx, Activations::new(am, 128u8, 0.01), None, MatrixMut::new(&mut cp, m, n)));
            let g = pair(&mut || ctx.codebook_gemm_f32(Activations::new(am, 128u8, 0.01), &gw, None, MatrixMut::new(&mut cg, m, n)));
            let g64 = pair(&mut || ctx.codebook_gemm_f32(Activations::new(am, 128u8, 0.01), &gw64, None, MatrixMut::new(&mut cg, m, n)));
            let (ti, tp, tg, tig) = (&p[0], &p[1], &g[1], &g[0]);
            let (tg64, tig64) = (&g64[1], &g64[0]);
            let ops = 2.0 * (m * n * k) as f64;
            println!(
                "{:<11} {m:>4} {:>9.3} ms {:>10.1} {:>9.3} ms {:>10.1} {:>6.1}% {:>10.1} {:>6.1}% {:>10.1} {:>6.1}%  {} | {} | {}",
                isa.name(),
                ti.median * 1e3,
                ops / ti.median / 1e9,
                tp.median * 1e3,
                ops / tp.median / 1e9,
                100.0 * ti.median / tp.median,
                ops / tg.median / 1e9,
                100.0 * tig.median / tg.median,
                ops / tg64.median / 1e9,
                100.0 * tig64.median / tg64.median,
                pw.fused_kernel_name(&ctx, m).unwrap_or("int8 driver on [C|T|S], then combine"),
                gw.kernel_name_for(m),
                gw64.kernel_name_for(m)
            );
        }
    }
    println!("int8 = gemm_i32 (u8 x i8 prepacked -> i32); pwlq = PwlqGemmWeights::gemm_f32_in (three exact dots + f32 combine); GOPS = 2MNK / median time; ratio = int8 time / pwlq time, each pair timed interleaved from M = 4 (rounds of one sample each), alone and hot at M = 1; grid = grid-aligned mode (one shared ratio, snap_to_grid -> codebook_codes, levels within +-127) on the codebook kernels, codebook_gemm_f32; grid64 = the same with levels within +-64");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "quick");
    let t = if quick { Duration::from_millis(100) } else { Duration::from_millis(500) };
    let only = |s: &str| !args.iter().any(|a| a == "dequant" || a == "gemm") || args.iter().any(|a| a == s);
    if only("dequant") {
        dequant(t);
    }
    if only("gemm") {
        gemm(t);
    }
}
