//! conv2d benchmarks: u8 NHWC (zero point 128) × i8 OHWI prepacked → u8 requantized, on
//! the layers of `qkern::bench::CONV_SHAPES` (the names of `peer_bench.py`'s `CONVS`),
//! one criterion group per ISA tier (scalar skipped: its portable kernel would take
//! minutes). Throughput is `2·MACs` elements, so `Gelem/s` reads as GOPS.
//!
//! Environment: `QKERN_BENCH_CONVS=r50_3x3_56x56x64,...` (default: all),
//! `QKERN_BENCH_ISAS=avx2,avx512vnni` (default: every SIMD tier the CPU has),
//! `QKERN_BENCH_THREADS=N` (default 1). Criterion's filter works too:
//! `cargo bench --bench conv -- r50`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use qkern::bench::{self, ConvCase};
use qkern::{Context, Isa, dispatch};

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if items.is_empty() { None } else { Some(items) }
}

fn main() {
    let shapes: Vec<bench::ConvShape> = match env_list("QKERN_BENCH_CONVS") {
        Some(names) => names.iter().map(|n| bench::find_conv_shape(n).unwrap_or_else(|e| panic!("QKERN_BENCH_CONVS: {e}"))).collect(),
        None => bench::CONV_SHAPES.to_vec(),
    };
    let threads: usize = std::env::var("QKERN_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let isas: Vec<Isa> = match env_list("QKERN_BENCH_ISAS") {
        Some(names) => names.iter().map(|n| Isa::from_name(n).unwrap_or_else(|| panic!("QKERN_BENCH_ISAS: unknown {n}"))).collect(),
        None => dispatch::cpu().isas.iter().copied().filter(|&i| i != Isa::Scalar).collect(),
    };
    let mut c = Criterion::default().configure_from_args().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for isa in isas {
        if !dispatch::cpu().has(isa) {
            eprintln!("SKIP conv benches at {}: not available on this CPU", isa.name());
            continue;
        }
        let ctx = Context::for_isa(isa).and_then(|c| c.with_threads(threads)).expect("context");
        let mut group = c.benchmark_group(format!("conv/{}", isa.name()));
        group.sample_size(10);
        for (i, shape) in shapes.iter().enumerate() {
            let mut case = ConvCase::new(&ctx, shape, 0x9e37_79b9 + i as u64).expect("conv case");
            case.run().expect("conv run");
            case.check().expect("conv result");
            group.throughput(Throughput::Elements(shape.ops() as u64));
            group.bench_function(BenchmarkId::new(shape.name, case.kernel_name()), |b| b.iter(|| case.run().expect("conv run")));
        }
        group.finish();
    }
    c.final_summary();
}
