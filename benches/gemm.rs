//! Int8 GEMM benchmarks: u8 activations × i8 prepacked weights → i32, on the shapes of
//! `qkern::bench::SHAPES` (DESIGN.md §7), one criterion group per kernel family and ISA
//! tier. Throughput is `2·M·N·K` elements, so criterion's `elem/s` reads as ops/s
//! (`Gelem/s` = GOPS).
//!
//! Environment:
//! * `QKERN_BENCH_SHAPES=sq256,dec4096,64x64x64` — only these shapes (names or MxNxK),
//!   run whatever they cost. Default: every shape whose one call is estimated to take at
//!   most `QKERN_BENCH_MAX_CALL_MS` (default 250 ms) at that tier's measured rate; the
//!   others are listed as skipped, so the portable kernel finishes in a few minutes and
//!   SIMD tiers run everything.
//! * `QKERN_BENCH_ISAS=scalar,avx2` — only these tiers (default: every tier the CPU has;
//!   a tier whose kernels are the same as the tier below it is skipped, with a note).
//! * `QKERN_BENCH_THREADS=N` — threads per call (default 1: per-core numbers, as the
//!   peaks in `qkern::bench::PEAKS` and `peer_bench.py`'s default).
//!
//! Criterion's own filter works too: `cargo bench --bench gemm -- sq256`.

use std::process::exit;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use qkern::bench::{self, GemmCase, Shape};
use qkern::{Context, Isa, dispatch};

fn fail(msg: String) -> ! {
    eprintln!("benches/gemm: {msg}");
    exit(1)
}

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if items.is_empty() || items.iter().any(|s| s.eq_ignore_ascii_case("all")) { None } else { Some(items) }
}

fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => x,
            _ => fail(format!("{name}={v:?} is not a positive number")),
        },
        Err(_) => default,
    }
}

fn main() {
    let explicit: Option<Vec<Shape>> = env_list("QKERN_BENCH_SHAPES").map(|names| {
        names.iter().map(|n| bench::find_shape(n).unwrap_or_else(|e| fail(format!("QKERN_BENCH_SHAPES: {e}")))).collect()
    });
    let shapes = explicit.clone().unwrap_or_else(|| bench::SHAPES.to_vec());
    let max_call = env_number("QKERN_BENCH_MAX_CALL_MS", 250.0) / 1e3;
    let threads = env_number("QKERN_BENCH_THREADS", 1.0) as usize;
    let cpu = dispatch::cpu();
    let isas: Vec<Isa> = match env_list("QKERN_BENCH_ISAS") {
        None => cpu.isas.clone(),
        Some(names) => names
            .iter()
            .map(|n| match Isa::from_name(n) {
                Some(isa) if cpu.has(isa) => isa,
                Some(_) => fail(format!("QKERN_BENCH_ISAS: this CPU has no {n}")),
                None => fail(format!("QKERN_BENCH_ISAS: unknown ISA {n:?}")),
            })
            .collect(),
    };

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();

    let mut benched: Vec<(Isa, Vec<(&str, &str)>)> = Vec::new();
    for isa in isas {
        let ctx = Context::for_isa(isa)
            .and_then(|c| c.with_threads(threads))
            .unwrap_or_else(|e| fail(format!("{}: {e}", isa.name())));
        let chosen = ctx.kernels().chosen();
        // Timing the same kernels twice tells nothing; say so instead.
        if let Some((lower, _)) = benched.iter().find(|(_, k)| *k == chosen) {
            eprintln!("gemm_u8i8_i32/{}: same kernels as {} ({}), skipped", isa.name(), lower.name(), ctx.kernels().gemm.name);
            continue;
        }
        benched.push((isa, chosen));

        // The tier's rate on a small shape, to estimate what each shape costs.
        let probe = bench::find_shape("sq256").unwrap_or_else(|e| fail(e.to_string()));
        let mut probe_case = GemmCase::new(&ctx, &probe, 1).unwrap_or_else(|e| fail(e.to_string()));
        let t = bench::time(Duration::from_millis(30), || probe_case.run()).unwrap_or_else(|e| fail(e.to_string()));
        let rate = probe.ops() / t.median;

        let kernel = ctx.kernels().gemm.name;
        let mut group = c.benchmark_group(format!("gemm_u8i8_i32/{}", isa.name()));
        group.sampling_mode(SamplingMode::Flat);
        for shape in &shapes {
            let est = shape.ops() / rate;
            if explicit.is_none() && est > max_call {
                eprintln!(
                    "gemm_u8i8_i32/{}/{}/{}: skipped, one call would take about {:.2} s (> QKERN_BENCH_MAX_CALL_MS={:.0}); \
                     run it with QKERN_BENCH_SHAPES={}",
                    isa.name(),
                    kernel,
                    shape.name,
                    est,
                    max_call * 1e3,
                    shape.name
                );
                continue;
            }
            let mut case = GemmCase::new(&ctx, shape, 2).unwrap_or_else(|e| fail(format!("{shape}: {e}")));
            case.run().unwrap_or_else(|e| fail(format!("{shape}: {e}")));
            case.check().unwrap_or_else(|e| fail(format!("{shape}: wrong result: {e}")));
            // Ten samples must fit: stretch the measurement time for the slow shapes.
            group.measurement_time(Duration::from_secs_f64((12.0 * est).max(1.0)));
            group.throughput(Throughput::Elements(2 * (shape.m * shape.n * shape.k) as u64));
            // Named after the kernel that runs the shape (the GEMV kernel for M ≤ 4).
            group.bench_function(BenchmarkId::new(case.kernel_name(), &shape.name), |b| {
                b.iter(|| case.run().unwrap_or_else(|e| fail(e.to_string())))
            });
        }
        group.finish();
    }
    c.final_summary();
}
