//! Codebook benchmarks (issue 5): u8 activations × 4-/5-bit codebook weights → i32, on
//! `qkern::bench::CODEBOOK_SHAPES` (GEMV 4096² and 11008×4096, GEMM M = 16 / 128 with
//! N = K = 4096), for each scheme of `CODEBOOK_SCHEMES` (PoT-4, APoT-4, IQ4_NL-style
//! codebook-4, APoT-5; PoT-5 and 4-bit log, grids beyond int8, on the int16 lookup
//! kernels) on the table-lookup kernels and, where the level set is
//! `±(2^a [+ 2^b])`, the bit-shift kernels; the int8 GEMM on the same shape beside them.
//! One criterion group per ISA tier; benchmark ids are `<family>_<scheme>/<shape>`
//! (`int8/<shape>`); where dispatch takes the decoded path (M at or past
//! `CodebookWeights::decode_min_m`: codes decoded to int8 panels, then the int8 GEMM),
//! `lutr_<scheme>/<shape>` times the in-register lookup kernel beside it. The kernels
//! each id runs go to stderr. Throughput is `2·M·N·K` elements (`Gelem/s` = GOPS).
//!
//! Environment:
//! * `QKERN_BENCH_SHAPES=dec4096,b16_4096` — only these shapes (names or MxNxK).
//! * `QKERN_BENCH_ISAS=avx2,avx512vnni` — only these tiers (default: every x86/ARM tier
//!   the CPU has, the portable one only when named: a 128×4096² call takes seconds there).
//! * `QKERN_BENCH_THREADS=N` — threads per call (default 1).
//!
//! Criterion's own filter works too: `cargo bench --bench codebook -- shift_pot4`.

use std::process::exit;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use qkern::bench::{self, CodebookCase, GemmCase, Shape};
use qkern::codebook::CodebookFamily;
use qkern::{Context, Isa, dispatch};

fn fail(msg: String) -> ! {
    eprintln!("benches/codebook: {msg}");
    exit(1)
}

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if items.is_empty() || items.iter().any(|s| s.eq_ignore_ascii_case("all")) { None } else { Some(items) }
}

fn main() {
    let names = env_list("QKERN_BENCH_SHAPES").unwrap_or_else(|| bench::CODEBOOK_SHAPES.iter().map(|s| s.to_string()).collect());
    let shapes: Vec<Shape> =
        names.iter().map(|n| bench::find_shape(n).unwrap_or_else(|e| fail(format!("QKERN_BENCH_SHAPES: {e}")))).collect();
    let threads = match std::env::var("QKERN_BENCH_THREADS") {
        Ok(v) => v.trim().parse::<usize>().ok().filter(|&t| t > 0).unwrap_or_else(|| fail(format!("QKERN_BENCH_THREADS={v:?}"))),
        Err(_) => 1,
    };
    let cpu = dispatch::cpu();
    let isas: Vec<Isa> = match env_list("QKERN_BENCH_ISAS") {
        None => cpu.isas.iter().copied().filter(|&i| i != Isa::Scalar).collect(),
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

    let mut benched: Vec<(Isa, Vec<&str>)> = Vec::new();
    for isa in isas {
        let ctx = Context::for_isa(isa).and_then(|c| c.with_threads(threads)).unwrap_or_else(|e| fail(format!("{}: {e}", isa.name())));
        let cands: Vec<&str> = ctx.kernels().codebook_candidates.iter().map(|k| k.name).collect();
        // A tier with the same codebook kernels as one below it (AVX-VNNI) tells nothing new.
        if let Some((lower, _)) = benched.iter().find(|(_, k)| *k == cands) {
            eprintln!("codebook/{}: same kernels as {}, skipped", isa.name(), lower.name());
            continue;
        }
        benched.push((isa, cands));
        let mut group = c.benchmark_group(format!("codebook/{}", isa.name()));
        group.sampling_mode(SamplingMode::Flat);
        for (i, shape) in shapes.iter().enumerate() {
            let seed = 0x9e37_79b9 + i as u64;
            let ops = 2 * (shape.m * shape.n * shape.k) as u64;
            group.throughput(Throughput::Elements(ops));
            let mut g = GemmCase::new(&ctx, shape, seed).unwrap_or_else(|e| fail(format!("{shape}: {e}")));
            let t = bench::time(Duration::from_millis(20), || g.run()).unwrap_or_else(|e| fail(e.to_string()));
            g.check().unwrap_or_else(|e| fail(format!("{shape}: wrong result: {e}")));
            group.measurement_time(Duration::from_secs_f64((12.0 * t.median).max(1.0)));
            group.bench_function(BenchmarkId::new("int8", &shape.name), |b| b.iter(|| g.run().unwrap_or_else(|e| fail(e.to_string()))));
            drop(g);
            for scheme in bench::CODEBOOK_SCHEMES {
                for family in [CodebookFamily::Lut, CodebookFamily::Shift] {
                    let case = match CodebookCase::with_family(&ctx, shape, scheme, seed, Some(family)) {
                        Ok(c) => c,
                        Err(qkern::Error::Unsupported(e)) if family == CodebookFamily::Shift => {
                            eprintln!("codebook/{}/shift_{scheme}: no row ({e})", isa.name());
                            continue;
                        }
                        Err(e) => fail(format!("{shape} {scheme}: {e}")),
                    };
                    // The dispatched path; where that is the decoded one (codes decoded to
                    // int8 panels, the int8 GEMM), also the in-register kernel it replaces
                    // (`lutr_<scheme>`).
                    let inreg = case.decodes().then(|| {
                        CodebookCase::with_family(&ctx, shape, scheme, seed, Some(family))
                            .unwrap_or_else(|e| fail(format!("{shape} {scheme}: {e}")))
                            .without_decode()
                    });
                    for (label, mut case) in [(family.name(), Some(case)), ("lutr", inreg)] {
                        let Some(case) = case.as_mut() else { continue };
                        let t = bench::time(Duration::from_millis(20), || case.run()).unwrap_or_else(|e| fail(e.to_string()));
                        case.check().unwrap_or_else(|e| fail(format!("{shape} {scheme}: wrong result: {e}")));
                        eprintln!("codebook/{}/{label}_{scheme}/{}: {}", isa.name(), shape.name, case.kernel_name());
                        // Ten samples must fit: stretch the measurement time for the slow cases.
                        group.measurement_time(Duration::from_secs_f64((12.0 * t.median).max(1.0)));
                        let id = BenchmarkId::new(format!("{label}_{scheme}"), &shape.name);
                        group.bench_function(id, |b| b.iter(|| case.run().unwrap_or_else(|e| fail(e.to_string()))));
                    }
                }
            }
        }
        group.finish();
    }
    c.final_summary();
}
