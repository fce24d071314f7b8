//! Times the two AVX2 GEMM kernels on the same weights — within ±64, so both may run —
//! and this host's AVX2 int8 peaks, so results read as a measured fraction of the limit.
//!
//! ```text
//! cargo run --release --example avx2_fast_bench -- [--shape NAME|MxNxK]... [--min-ms N] [--threads N] [--peaks-only] [--tiles]
//! ```
//!
//! `--tiles` also times each microkernel alone on one L1-resident tile (no driver), for
//! K = 96, 576, 1024 and 3072: the kernel's own ceiling.
//!
//! Default shapes: sq1024, 128x3072x768, 784x128x1152, 3136x24x96. Single thread by
//! default. Each GEMM is `C (i32) = (A − 128)·B`, u8 activations, i8 weights drawn
//! uniformly from −64..=64 (per-tensor zero point 0), packed once per kernel with
//! `Context::with_gemm_kernel`. The two kernels' outputs must be identical, and equal
//! to an exact i64 dot product on sampled entries, before a time is printed.

#[cfg(target_arch = "x86_64")]
fn main() -> Result<(), String> {
    x86::main()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("SKIP: AVX2 is an x86-64 instruction set");
}

/// Everything x86-64: the kernels and probes benchmarked here exist only there.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::time::{Duration, Instant};

    use qkern::bench::{self, Shape};
    use qkern::{Activations, Context, Isa, MatrixMut, MatrixRef, PackedWeights, WeightQuant};
    use qkern_kernels::pack::pack_b_kgroups;
    use qkern_kernels::x86_64::avx2::{QX8_GEMM_4X16C4_MADDUBS__AVX2, QX8_GEMM_6X16C2__AVX2, peak};
    use qkern_kernels::{GemmArgs, GemmUkernel, OutputStage};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The largest stored weight the `vpmaddubsw` kernel takes.
    const BOUND: i8 = 64;

    /// Samples per measurement. Each lasts about [`SAMPLE_SECS`]: short enough that many
    /// fall inside one scheduler time slice on a shared, loaded host, so the best sample is
    /// the unloaded speed and the median shows the load.
    const SAMPLES: usize = 200;
    /// Target length of one sample.
    const SAMPLE_SECS: f64 = 0.002;

    /// (median, best) of `SAMPLES` rates from `run`, which does `units` of work per call and
    /// returns the rate of one sample given its elapsed seconds.
    fn sample(mut run: impl FnMut() -> f64) -> (f64, f64) {
        let mut rates: Vec<f64> = (0..SAMPLES + 5).map(|_| run()).skip(5).collect();
        rates.sort_by(f64::total_cmp);
        (rates[SAMPLES / 2], rates[SAMPLES - 1])
    }

    /// A peak probe: runs its loop `iters` times, returns the MACs done.
    type Probe = unsafe fn(u64) -> u64;

    /// (median, best) GOPS of `probe`.
    fn measure_probe(probe: Probe) -> (f64, f64) {
        // Calibrate the iteration count to about SAMPLE_SECS.
        let mut iters = 1u64 << 10;
        loop {
            let t = Instant::now();
            // SAFETY: main() checked that this CPU has AVX2, all the probes need.
            std::hint::black_box(unsafe { probe(iters) });
            let dt = t.elapsed().as_secs_f64();
            if dt > SAMPLE_SECS / 4.0 {
                iters = ((iters as f64) * SAMPLE_SECS / dt).max(1.0) as u64;
                break;
            }
            iters *= 2;
        }
        sample(|| {
            let t = Instant::now();
            // SAFETY: as above.
            let macs = unsafe { probe(iters) };
            2.0 * macs as f64 / t.elapsed().as_secs_f64() / 1e9
        })
    }

    /// Times `kernel` alone on one full `mr × nr` tile over `k`, u8 (or i8) activations × i8 weights
    /// within ±64, I32 output: (median, best) GOPS.
    fn time_tile(kernel: &GemmUkernel, k: usize, a_signed: bool) -> (f64, f64) {
        let (mr, nr) = (kernel.mr, kernel.nr());
        let mut rng = ChaCha8Rng::seed_from_u64(k as u64);
        let a: Vec<u8> = (0..mr * k).map(|_| rng.random()).collect();
        let b: Vec<i8> = (0..k * nr).map(|_| rng.random_range(-BOUND..=BOUND)).collect();
        let mut packed = vec![0u8; kernel.format.packed_bytes(k, nr)];
        pack_b_kgroups(kernel.format, &b, k, nr, nr, kernel.b_offset_for(true), &mut packed);
        let col_offset = vec![0i32; nr];
        let mut c = vec![0i32; mr * nr];
        let f = kernel.run[a_signed as usize][1].expect("an x8 x i8 entry point");
        let args = GemmArgs {
            m: mr,
            n: nr,
            k,
            a: a.as_ptr(),
            lda: k,
            b: packed.as_ptr(),
            a_row_sum: std::ptr::null(),
            b_zero_point: std::ptr::null(),
            c: c.as_mut_ptr().cast(),
            ldc: nr,
            out: OutputStage::raw_i32(col_offset.as_ptr()),
        };
        let ops = 2.0 * (mr * nr * k) as f64;
        let calls = ((SAMPLE_SECS * 150e9 / ops) as usize).max(1); // ~SAMPLE_SECS at 150 GOPS
        sample(|| {
            let t = Instant::now();
            for _ in 0..calls {
                // SAFETY: main() checked AVX2; `args` describes one full tile: `mr` rows of
                // `k` activations, a panel packed in the kernel's format (weights within ±64,
                // the fast kernel's precondition), `nr` column offsets, and an `mr × nr` i32
                // output; the zero-point pointers are null (all zero).
                unsafe { f(std::hint::black_box(&args)) };
            }
            ops * calls as f64 / t.elapsed().as_secs_f64() / 1e9
        })
    }

    struct Args {
        shapes: Vec<Shape>,
        min_time: Duration,
        threads: usize,
        peaks_only: bool,
        tiles: bool,
    }

    fn parse_args() -> Result<Args, String> {
        let mut args = Args {
            shapes: Vec::new(),
            min_time: Duration::from_millis(1500),
            threads: 1,
            peaks_only: false,
            tiles: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = |what: &str| it.next().ok_or_else(|| format!("{a} needs {what}"));
            match a.as_str() {
                "--shape" => args.shapes.push(bench::find_shape(&value("a shape")?).map_err(|e| e.to_string())?),
                "--min-ms" => {
                    let v = value("milliseconds")?;
                    args.min_time = Duration::from_millis(v.parse().map_err(|e| format!("--min-ms {v:?}: {e}"))?);
                }
                "--threads" => {
                    let v = value("a thread count")?;
                    args.threads = v.parse().map_err(|e| format!("--threads {v:?}: {e}"))?;
                }
                "--peaks-only" => args.peaks_only = true,
                "--tiles" => args.tiles = true,
                "-h" | "--help" => {
                    println!(
                        "usage: avx2_fast_bench [--shape NAME|MxNxK]... [--min-ms N] [--threads N] [--peaks-only] [--tiles]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        if args.shapes.is_empty() {
            for s in ["sq1024", "128x3072x768", "784x128x1152", "3136x24x96"] {
                args.shapes.push(bench::find_shape(s).map_err(|e| e.to_string())?);
            }
        }
        Ok(args)
    }

    pub fn main() -> Result<(), String> {
        let args = parse_args()?;
        if !qkern::dispatch::cpu().has(Isa::Avx2) {
            println!("SKIP: this CPU has no AVX2");
            return Ok(());
        }

        println!(
            "AVX2 int8 peaks on this host, one core ({SAMPLES} samples of {} ms; GOPS = 2·MACs/s):",
            SAMPLE_SECS * 1e3
        );
        let probes: [(&str, Probe); 3] = [
            ("exact: vpmaddwd + vpaddd", peak::exact_path),
            ("vpmaddwd alone", peak::maddwd_only),
            ("maddubs: vpmaddubsw + vpmaddwd(1) + vpaddd", peak::maddubs_path),
        ];
        let mut peaks = Vec::new();
        for (name, probe) in probes {
            let (med, best) = measure_probe(probe);
            println!("  {name:<44} median {med:7.1}  best {best:7.1}");
            peaks.push(best);
        }
        let (exact_peak, fast_peak) = (peaks[0], peaks[2]);
        if args.tiles {
            println!("\nOne full tile, data in L1, output I32, no driver:");
            for kernel in [QX8_GEMM_6X16C2__AVX2, QX8_GEMM_4X16C4_MADDUBS__AVX2] {
                for a_signed in [false, true] {
                    for k in [96, 576, 1024, 3072] {
                        let (med, best) = time_tile(&kernel, k, a_signed);
                        let peak = if kernel.max_abs_stored_b.is_some() { fast_peak } else { exact_peak };
                        println!(
                            "  {:<32} {}xi8 K={k:<5} median {med:7.1} GOPS  best {best:7.1}  ({:.0}% of the host peak)",
                            kernel.name,
                            if a_signed { "i8" } else { "u8" },
                            100.0 * best / peak
                        );
                    }
                }
            }
        }
        if args.peaks_only {
            return Ok(());
        }

        let base = Context::for_isa(Isa::Avx2).and_then(|c| c.with_threads(args.threads)).map_err(|e| e.to_string())?;
        let kernels = [QX8_GEMM_6X16C2__AVX2, QX8_GEMM_4X16C4_MADDUBS__AVX2];
        let ctxs: Vec<Context> = kernels
            .iter()
            .map(|k| base.clone().with_gemm_kernel(k.name))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;

        println!(
            "\nThrough the public API (gemm_i32; GOPS at the median and the best call time; %peak of the best):\n{:<14} {:>16} {:<32} {:>3} {:>10} {:>8} {:>8} {:>7}  {:>8}",
            "shape", "MxNxK", "kernel", "thr", "median", "GOPS", "best", "%peak", "vs exact"
        );
        for (si, shape) in args.shapes.iter().enumerate() {
            let (m, n, k) = (shape.m, shape.n, shape.k);
            let mut rng = ChaCha8Rng::seed_from_u64(0xa5a5 + si as u64);
            let a: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
            let b: Vec<i8> = (0..k * n).map(|_| rng.random_range(-BOUND..=BOUND)).collect();
            // The default selection at the AVX2 cap takes the fast kernel for these weights.
            let auto = PackedWeights::new_in(&base, MatrixRef::new(&b, k, n), WeightQuant::per_tensor(0, 0.01))
                .map_err(|e| e.to_string())?;
            if auto.kernel_name() != QX8_GEMM_4X16C4_MADDUBS__AVX2.name {
                return Err(format!("weights within ±64 packed for {}, not the maddubs kernel", auto.kernel_name()));
            }
            let mut results: Vec<Vec<i32>> = Vec::new();
            let mut exact_gops = 0.0;
            for (kernel, ctx) in kernels.iter().zip(&ctxs) {
                let w = PackedWeights::new_in(ctx, MatrixRef::new(&b, k, n), WeightQuant::per_tensor(0, 0.01))
                    .map_err(|e| e.to_string())?;
                assert_eq!(w.kernel_name(), kernel.name);
                let mut c = vec![1i32; m * n];
                let t = bench::time(args.min_time, || {
                    let acts = Activations::new(MatrixRef::new(&a, m, k), 128u8, 0.02);
                    ctx.gemm_i32(acts, &w, None, MatrixMut::new(&mut c, m, n))
                })
                .map_err(|e| e.to_string())?;
                // Sampled entries against the exact dot product.
                for s in 0..64 {
                    let (i, j) = ((s * 7919) % m, (s * 104_729) % n);
                    let want: i64 = (0..k).map(|kk| (a[i * k + kk] as i64 - 128) * b[kk * n + j] as i64).sum();
                    if c[i * n + j] as i64 != want {
                        return Err(format!(
                            "{} on {shape}: C[{i}][{j}] = {}, exact {want}",
                            kernel.name,
                            c[i * n + j]
                        ));
                    }
                }
                results.push(c);
                let gops = bench::gops(shape.ops(), t.median);
                let best = bench::gops(shape.ops(), t.min);
                let peak = if kernel.max_abs_stored_b.is_some() { fast_peak } else { exact_peak };
                let rel = if kernel.max_abs_stored_b.is_none() {
                    exact_gops = best;
                    String::from("1.00x")
                } else {
                    format!("{:.2}x", best / exact_gops)
                };
                println!(
                    "{:<14} {:>16} {:<32} {:>3} {:>8.3}ms {:>8.1} {:>8.1} {:>6.1}%  {:>8}",
                    shape.name,
                    shape.dims(),
                    kernel.name,
                    args.threads,
                    t.median * 1e3,
                    gops,
                    best,
                    100.0 * best / (peak * args.threads.min(2) as f64),
                    rel
                );
            }
            if results[0] != results[1] {
                return Err(format!("{shape}: the two kernels disagree"));
            }
        }
        Ok(())
    }
}
