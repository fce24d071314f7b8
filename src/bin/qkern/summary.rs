//! `qkern bench` with no `--op`: every kernel family on its default shapes in one table —
//! int8 GEMM, convolution (depthwise layers included), the 4-/5-bit codebook kernels
//! (table lookup and bit shift) and exact-mode PWLQ — with GOPS, the fraction of the
//! measured per-core peak for the int8 kernels, and for the non-int8 weights the speed
//! ratio to our int8 GEMM timed on the same shape in the same minute. Progress goes to
//! stderr while it runs; `--json` prints the rows for scripts.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use qkern::bench::{self, CodebookCase, ConvCase, GemmCase, PwlqCase, Shape, Timing};
use qkern::codebook::CodebookFamily;
use qkern::{Context, Error};

use super::{human_secs, json_num, json_str, kernel_peak};

/// Codebook and PWLQ shapes of the summary: GEMV 4096² and a batch of 128 (issue 5's and
/// 6's headline shapes); `qkern bench --op codebook` runs the full set.
const CODEBOOK_SHAPES: &[&str] = &["dec4096", "b128_4096"];
const PWLQ_SHAPES: &[&str] = &["dec4096", "b16_4096", "b128_4096"];

/// One timed row.
struct Row {
    family: &'static str,
    shape: String,
    dims: String,
    kernel: String,
    ops: f64,
    timing: Timing,
    /// Per-core peak × threads of the kernel's path (int8 kernels with a probe only).
    peak: Option<f64>,
    /// Median seconds of our int8 GEMM on the same shape, timed just before.
    int8_median: Option<f64>,
}

impl Row {
    fn gops(&self) -> f64 {
        bench::gops(self.ops, self.timing.median)
    }
    fn peak_fraction(&self) -> Option<f64> {
        self.peak.map(|p| self.gops() / p)
    }
    fn vs_int8(&self) -> Option<f64> {
        self.int8_median.map(|t| t / self.timing.median)
    }
}

/// Counts rows and prints `[i/n] …` with an estimate of the time left.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    show: bool,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if !self.show {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if self.done > 1 {
            format!(", about {:.0} s left", elapsed / (self.done - 1) as f64 * (self.total + 1 - self.done) as f64)
        } else {
            String::new()
        };
        eprintln!("[{}/{}] {what} ({elapsed:.0} s{left})", self.done, self.total);
    }
}

fn shapes(names: &[&str]) -> Result<Vec<Shape>, String> {
    names.iter().map(|s| bench::find_shape(s).map_err(|e| e.to_string())).collect()
}


/// Times one int8 GEMM case and returns its row.
fn gemm_row(ctx: &Context, shape: &Shape, seed: u64, min_time: Duration) -> Result<Row, String> {
    let err = |e: Error| format!("gemm {shape}: {e}");
    let mut case = GemmCase::new(ctx, shape, seed).map_err(err)?;
    let timing = bench::time(min_time, || case.run()).map_err(err)?;
    case.check().map_err(|e| format!("gemm {shape}: wrong result: {e}"))?;
    Ok(Row {
        family: "gemm",
        shape: shape.name.to_string(),
        dims: shape.dims(),
        kernel: case.kernel_name().to_string(),
        ops: shape.ops(),
        timing,
        peak: kernel_peak(&case.kernel(), ctx.threads()),
        int8_median: None,
    })
}

/// Runs every family; `Err` names the family and shape that failed.
pub fn run(ctx: &Context, min_time: Duration, json: bool) -> Result<(), String> {
    let gemm_shapes = bench::SHAPES.to_vec();
    let cb_shapes = shapes(CODEBOOK_SHAPES)?;
    let pwlq_shapes = shapes(PWLQ_SHAPES)?;
    // Rows: int8 + lookup per scheme + shift where it applies (at most one per scheme).
    let planned = gemm_shapes.len()
        + bench::CONV_SHAPES.len()
        + cb_shapes.len() * (1 + 2 * bench::CODEBOOK_SCHEMES.len())
        + pwlq_shapes.len() * 2;
    let mut progress = Progress { total: planned, done: 0, started: Instant::now(), show: !json || std::io::stderr().is_terminal() };
    let mut rows = Vec::new();

    for (i, shape) in gemm_shapes.iter().enumerate() {
        progress.step(&format!("gemm {} {}", shape.name, shape.dims()));
        rows.push(gemm_row(ctx, shape, 0x9e37_79b9 + i as u64, min_time)?);
    }

    for (i, shape) in bench::CONV_SHAPES.iter().enumerate() {
        progress.step(&format!("conv {}", shape.name));
        let err = |e: Error| format!("conv {}: {e}", shape.name);
        let mut case = ConvCase::new(ctx, shape, 0x9e37_79b9 + i as u64).map_err(err)?;
        let timing = bench::time(min_time, || case.run()).map_err(err)?;
        case.check().map_err(|e| format!("conv {}: wrong result: {e}", shape.name))?;
        let kernel = ctx.kernels().gemm_candidates.iter().copied().find(|k| k.name == case.kernel_name());
        rows.push(Row {
            family: "conv",
            shape: shape.name.to_string(),
            dims: shape.dims(),
            kernel: case.kernel_name().to_string(),
            ops: shape.ops(),
            timing,
            peak: kernel.and_then(|k| kernel_peak(&k, ctx.threads())),
            int8_median: None,
        });
    }

    for (i, shape) in cb_shapes.iter().enumerate() {
        let seed = 0x5ca1_ab1e + i as u64;
        progress.step(&format!("codebook {}: int8 baseline", shape.name));
        let base = gemm_row(ctx, shape, seed, min_time)?.timing.median;
        for scheme in bench::CODEBOOK_SCHEMES {
            for family in [CodebookFamily::Lut, CodebookFamily::Shift] {
                let what = format!("codebook {} {scheme} {}", shape.name, family.name());
                progress.step(&what);
                let mut case = match CodebookCase::with_family(ctx, shape, scheme, seed, Some(family)) {
                    Ok(c) => c,
                    // A learned table is not a sum of powers of two: no shift row.
                    Err(Error::Unsupported(_)) if family == CodebookFamily::Shift => continue,
                    Err(e) => return Err(format!("{what}: {e}")),
                };
                let timing = bench::time(min_time, || case.run()).map_err(|e| format!("{what}: {e}"))?;
                case.check().map_err(|e| format!("{what}: wrong result: {e}"))?;
                rows.push(Row {
                    family: if family == CodebookFamily::Lut { "codebook-lut" } else { "codebook-shift" },
                    shape: format!("{}/{scheme}", shape.name),
                    dims: shape.dims(),
                    kernel: case.kernel_name().to_string(),
                    ops: shape.ops(),
                    timing,
                    peak: None,
                    int8_median: Some(base),
                });
            }
        }
    }

    for (i, shape) in pwlq_shapes.iter().enumerate() {
        let seed = 0x0dd_ba11 + i as u64;
        progress.step(&format!("pwlq {}: int8 baseline", shape.name));
        let base = gemm_row(ctx, shape, seed, min_time)?.timing.median;
        progress.step(&format!("pwlq {} exact mode", shape.name));
        let err = |e: Error| format!("pwlq {shape}: {e}");
        let mut case = PwlqCase::new(ctx, shape, seed).map_err(err)?;
        let timing = bench::time(min_time, || case.run()).map_err(err)?;
        case.check().map_err(|e| format!("pwlq {shape}: wrong result: {e}"))?;
        rows.push(Row {
            family: "pwlq-exact",
            shape: format!("{}/pwlq4", shape.name),
            dims: shape.dims(),
            kernel: case.kernel_name().to_string(),
            ops: shape.ops(),
            timing,
            peak: None,
            int8_median: Some(base),
        });
    }
    if progress.show {
        eprintln!("done: {} rows in {:.1} s", rows.len(), progress.started.elapsed().as_secs_f64());
    }

    if json {
        print_json(ctx, &rows);
    } else {
        print_table(ctx, &rows);
    }
    Ok(())
}

fn print_table(ctx: &Context, rows: &[Row]) {
    println!(
        "{:<14} {:<26} {:<26} {:<40} {:>10} {:>8} {:>6} {:>8}",
        "family", "shape", "dims", "kernel", "time/call", "GOPS", "%peak", "vs int8"
    );
    let mut last = "";
    for r in rows {
        if r.family != last && !last.is_empty() && !(last.starts_with("codebook") && r.family.starts_with("codebook")) {
            println!();
        }
        last = r.family;
        let pct = r.peak_fraction().map_or("-".into(), |f| format!("{:.1}", 100.0 * f));
        let vs = r.vs_int8().map_or("-".into(), |v| format!("{v:.2}x"));
        println!(
            "{:<14} {:<26} {:<26} {:<40} {:>10} {:>8.1} {:>6} {:>8}",
            r.family,
            r.shape,
            r.dims,
            r.kernel,
            human_secs(r.timing.median),
            r.gops(),
            pct,
            vs
        );
    }
    println!();
    println!(
        "isa cap {}, {} thread(s); u8 activations (zero point 128); gemm: x i8 -> i32; conv: NHWC x i8 OHWI -> u8 requantized \
         (conv rows layer names as peer_bench.py); codebook: 4-/5-bit codes -> i32; pwlq: 4-bit exact mode -> f32.",
        ctx.kernels().isa.name(),
        ctx.threads()
    );
    println!(
        "GOPS = 2*MACs / median time. %peak = GOPS / the per-core peak of the int8 kernel's instruction path measured on this \
         host (`qkern info`) x threads. vs int8 = our int8 GEMM's median time on the same shape, timed just before, / this \
         row's (above 1 = faster than int8). Every row's result is checked against a reference."
    );
}

fn print_json(ctx: &Context, rows: &[Row]) {
    println!("[");
    for (i, r) in rows.iter().enumerate() {
        let fields = [
            ("family", json_str(r.family)),
            ("shape", json_str(&r.shape)),
            ("dims", json_str(&r.dims)),
            ("isa", json_str(ctx.kernels().isa.name())),
            ("kernel", json_str(&r.kernel)),
            ("threads", ctx.threads().to_string()),
            ("seconds_median", json_num(Some(r.timing.median))),
            ("gops_median", json_num(Some(r.gops()))),
            ("gops_min", json_num(Some(bench::gops(r.ops, r.timing.max)))),
            ("gops_max", json_num(Some(bench::gops(r.ops, r.timing.min)))),
            ("peak_gops", json_num(r.peak)),
            ("peak_fraction", json_num(r.peak_fraction())),
            ("int8_seconds_median", json_num(r.int8_median)),
            ("vs_int8", json_num(r.vs_int8())),
            ("check", json_str("ok")),
        ];
        let body = fields.iter().map(|(k, v)| format!("{}: {v}", json_str(k))).collect::<Vec<_>>().join(", ");
        println!("  {{{body}}}{}", if i + 1 < rows.len() { "," } else { "" });
    }
    println!("]");
}
