//! `qkern`: the command-line tool.
//!
//! * `qkern info` — version, CPU features, the ISA tiers available and the kernel chosen
//!   for each family at each tier.
//! * `qkern quantize weights.npy --scheme S --bits B` — every scheme's MSE / SQNR / max
//!   error on a weight tensor (src/bin/qkern/quantize.rs).
//! * `qkern bench` — every kernel family on its default shapes in one table (GOPS, % of
//!   the measured peak, ratio to our int8 GEMM), progress on stderr (src/bin/qkern/summary.rs);
//!   `--op gemm|conv|dwconv|codebook` for one family's full table and options.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `println!` that ends the process quietly when the reader of stdout has gone
/// (`qkern info | head -3`) instead of panicking, and with a message on any other
/// write error. Defined before the modules so they use it too.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e)
        }
    }};
}

/// Ends the process after a failed write to stdout: status 0 for a closed pipe (the
/// reader took what it wanted), 1 with a message otherwise.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("qkern: error: writing to stdout: {e}");
    std::process::exit(1)
}

#[path = "qkern/quantize.rs"]
mod quantize;
#[path = "qkern/summary.rs"]
mod summary;

use clap::{Parser, Subcommand};
use qkern::bench::{self, DwShape, DwconvCase, GemmCase, Shape};
use qkern::dispatch::{self, KernelTable};
use qkern::{Context, Isa};

#[derive(Parser)]
#[command(name = "qkern", version, about = "SIMD CPU kernels for quantized inference: CPU report and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CPU features detected and the kernel chosen for each family per ISA.
    Info,
    /// Time the kernels: every family on its default shapes (the default), or one family
    /// with `--op`.
    Bench(BenchArgs),
    /// Quantize a .npy weight tensor with one scheme or all and print MSE, SQNR and max error.
    Quantize(quantize::QuantizeArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A shape as MxNxK or by name (sq1024, dec4096, ...); repeatable. Default: all of
    /// DESIGN.md §7's shapes.
    /// With `--op conv`: a layer name from `qkern bench --op conv --list`.
    #[arg(long = "shape", value_name = "MxNxK|NAME")]
    shapes: Vec<String>,
    /// What to time (conv: u8 NHWC × i8 prepacked filter → u8 requantized, as
    /// peer_bench.py's QLinearConv).
    /// Default: `all`, or `gemm` when `--shape`, `--kernel`, `--list` or `--no-gemv` is
    /// given (`dwconv` with `--conv`).
    #[arg(long, value_enum)]
    op: Option<Op>,
    /// Threads for each GEMM call (the %peak column scales the per-core peak by them).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Cap the kernels at this ISA tier (default: the best this CPU has, or QKERN_MAX_ISA).
    #[arg(long, value_name = "NAME", value_parser = parse_isa)]
    isa: Option<Isa>,
    /// Force one GEMM microkernel by name (one of the tier's candidates; `qkern info`
    /// lists the defaults), e.g. `qu8s8_gemm_6x16c4__avx512vnni_ymm` with `--isa avx512vnni`.
    /// With `--op codebook`: one codebook kernel, on every scheme it runs exactly, at
    /// every M (no decoded path), e.g. `qx8_codebook4_gemm_4x16c8_split__avx2`.
    #[arg(long, value_name = "NAME")]
    kernel: Option<String>,
    /// Print a JSON array instead of the table.
    #[arg(long)]
    json: bool,
    /// Short timings (0.05 s per shape) for smoke tests; overrides --min-time.
    #[arg(long)]
    quick: bool,
    /// Minimum time spent on each shape, in seconds (default 0.25 with `--op all`, else 0.5).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    min_time: Option<Duration>,
    /// List the named shapes and exit.
    #[arg(long)]
    list: bool,
    /// Run shapes of at most 4 rows on the GEMM kernel instead of the GEMV kernel (to
    /// compare the two paths).
    #[arg(long)]
    no_gemv: bool,
    /// A depthwise layer by name (with `--op dwconv`; `--shape` works too); repeatable.
    /// Default: all of them.
    #[arg(long = "conv", value_name = "NAME", value_parser = parse_dw)]
    convs: Vec<DwShape>,
    /// With `--op codebook`: time cold weights. Each case rotates through enough copies
    /// of its packed weights (at least twice the L3) that every call reads them from
    /// DRAM, as an engine streaming a model's layers does. Without it, weights that fit
    /// in the L3 stay there between calls (hot).
    #[arg(long)]
    cold: bool,
}

impl BenchArgs {
    /// The op asked for, or the one the options imply.
    fn op(&self) -> Op {
        match self.op {
            Some(op) => op,
            None if !self.convs.is_empty() => Op::Dwconv,
            None if !self.shapes.is_empty() || self.kernel.is_some() || self.list || self.no_gemv => Op::Gemm,
            None => Op::All,
        }
    }

    /// Time per shape: `--quick`, else `--min-time`, else the default of the op.
    fn min_time(&self) -> Duration {
        match (self.quick, self.min_time) {
            (true, _) => Duration::from_millis(50),
            (false, Some(t)) => t,
            (false, None) if self.op() == Op::All => Duration::from_millis(250),
            (false, None) => Duration::from_millis(500),
        }
    }
}

fn parse_dw(s: &str) -> Result<DwShape, String> {
    bench::find_dw_shape(s).map_err(|e| e.to_string())
}

/// `qkern bench --op dwconv`: the depthwise layers, one table row each.
fn run_dw_bench(args: BenchArgs) -> Result<(), String> {
    let mut layers = args.convs.clone();
    for s in &args.shapes {
        layers.push(parse_dw(s)?);
    }
    if layers.is_empty() {
        layers = bench::DW_SHAPES.to_vec();
    }
    let min_time = args.min_time();
    let threads = args.threads as usize;
    let ctx = match args.isa {
        Some(isa) => Context::for_isa(isa),
        None => Context::new(),
    }
    .and_then(|c| c.with_threads(threads))
    .map_err(|e| e.to_string())?;
    println!("{:<26} {:<30} {:>3} {:>10} {:>8}  {:>17}", "layer", "kernel", "thr", "time/call", "GOPS", "GOPS min-max");
    for (i, l) in layers.iter().enumerate() {
        let mut case = DwconvCase::new(&ctx, l, 0x9e37_79b9 + i as u64).map_err(|e| format!("{}: {e}", l.name))?;
        let t = bench::time(min_time, || case.run()).map_err(|e| format!("{}: {e}", l.name))?;
        case.check().map_err(|e| format!("{}: wrong result: {e}", l.name))?;
        let g = |s: f64| bench::gops(l.ops(), s);
        println!(
            "{:<26} {:<30} {:>3} {:>10} {:>8.2}  {:>8.2}-{:<8.2}",
            l.name,
            case.kernel_name(),
            threads,
            human_secs(t.median),
            g(t.median),
            g(t.max),
            g(t.min)
        );
    }
    println!(
        "u8 (zero point 128) x i8 depthwise filter -> u8 requantized (fp32 mode); isa cap {}; GOPS = 2*MACs / median time",
        ctx.kernels().isa.name()
    );
    Ok(())
}

/// The operation `qkern bench` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    /// Every family on its default shapes, one table (the options that pick shapes or
    /// kernels belong to one family and are refused here).
    All,
    /// int8 GEMM → i32.
    Gemm,
    /// conv2d → u8 (the peer_bench.py CONVS layers).
    Conv,
    /// The depthwise layers on the depthwise kernels directly → u8.
    Dwconv,
    /// 4-/5-bit codebook weights (PoT-4, APoT-4, codebook-4, APoT-5) through the
    /// table-lookup and the bit-shift kernels, next to the int8 GEMM on the same shapes (default: GEMV 4096²
    /// and 11008×4096, GEMM M = 16 / 128 with N = K = 4096).
    Codebook,
}

fn parse_shape(s: &str) -> Result<Shape, String> {
    bench::find_shape(s).map_err(|e| e.to_string())
}

fn available_isas() -> String {
    dispatch::cpu().isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
}

fn parse_isa(s: &str) -> Result<Isa, String> {
    let isa = Isa::from_name(s.trim()).ok_or_else(|| {
        format!(
            "unknown ISA; known: {}; this CPU has: {}",
            Isa::ALL.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
            available_isas()
        )
    })?;
    if !dispatch::cpu().has(isa) {
        return Err(format!("this CPU does not support {}; available: {}", isa.name(), available_isas()));
    }
    Ok(isa)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("not a number of seconds ({e})"))?;
    if !v.is_finite() || v <= 0.0 || v > 3600.0 {
        return Err("must be more than 0 and at most 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Bench(args) => run_bench(args),
        Command::Quantize(args) => quantize::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // Flush what was printed so the error comes last.
            let _ = std::io::stdout().flush();
            eprintln!("qkern: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> Result<(), String> {
    let cpu = dispatch::cpu();
    println!("qkern {}", qkern::VERSION);
    println!("arch:          {}", std::env::consts::ARCH);
    let flags = if cpu.flags.is_empty() { "(none)".to_string() } else { cpu.flags.join(" ") };
    println!("cpu features:  {flags}");
    println!("isas:          {}", available_isas());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("cpus:          {cores}");
    let env = std::env::var("QKERN_MAX_ISA").ok();
    println!("QKERN_MAX_ISA: {}", env.as_deref().unwrap_or("(unset)"));
    // An invalid QKERN_MAX_ISA, or one naming a tier this CPU lacks, makes the library
    // refuse to run; report it after the rest so the table is still shown.
    let default = dispatch::default_table();
    let default_isa = default.as_ref().ok().map(|t| t.isa);
    println!();
    println!("{:<12} {:<8} kernel", "isa", "family");
    for &isa in &cpu.isas {
        let table = KernelTable::for_isa(isa).map_err(|e| e.to_string())?;
        for (family, kernel) in table.chosen() {
            let mark = if Some(isa) == default_isa { "  (default)" } else { "" };
            println!("{:<12} {:<8} {kernel}{mark}", isa.name(), family);
        }
        for bits in [4, 5] {
            if let Some(k) = table.codebook_kernel(bits) {
                println!("{:<12} {:<8} {}", isa.name(), format!("cb{bits}"), k.name);
            }
        }
        // The bit-shift family (QKERN_CODEBOOK_KERNEL=shift) on PoT-4 (one term, grid 64)
        // and APoT-4 (two terms, grid 10).
        for (family, terms, grid_max) in [("cb-pot", 1, 64), ("cb-apot", 2, 10)] {
            if let Some(k) = table.shift_kernel_for(terms, grid_max) {
                let bound = k.max_abs_table.map(|x| format!(" (grid within ±{x})")).unwrap_or_default();
                println!("{:<12} {:<8} {}{bound}", isa.name(), family, k.name);
            }
        }
    }
    println!();
    println!("measured per-core peaks (int8 GOPS, probe loops of independent multiply-adds):");
    for path in ["avx2-exact", "avx2-maddubs", "avxvnni", "avx512vnni-ymm", "avx512vnni"] {
        if let Some(g) = qkern::peak::measured_gops(path) {
            println!("  {path:<14} {g:8.1}");
        }
    }
    println!();
    println!("single-core read bandwidth (one stream, {} loads, buffer read once per repetition; median GB/s):", qkern::peak::stream_loads());
    for (level, bytes) in qkern::peak::probe_sizes() {
        if let Some(bw) = qkern::peak::read_bandwidth(bytes, Duration::from_millis(300)) {
            println!("  {level:<5} {:>9.1} MiB {:8.1} GB/s  (best {:.1})", bytes as f64 / (1 << 20) as f64, bw.gbps_median, bw.gbps_best);
        }
    }
    match default {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("no default kernel table: {e}")),
    }
}

/// One row of `qkern bench`.
struct Row {
    shape: Shape,
    isa: Isa,
    kernel: &'static str,
    threads: usize,
    timing: bench::Timing,
    peak: Option<f64>,
    /// Memory-bound rows (M ≤ GEMV_ROWS): packed weight bytes per call and the read
    /// probe's median GB/s on a buffer of that size, measured around the GEMM timing.
    bandwidth: Option<(usize, f64)>,
}

/// Shapes of at most this many rows are memory-bound: reported in GB/s of weights too.
const GEMV_ROWS: usize = 4;

impl Row {
    fn gops(&self) -> f64 {
        bench::gops(self.shape.ops(), self.timing.median)
    }
    fn peak_fraction(&self) -> Option<f64> {
        self.peak.map(|p| self.gops() / p)
    }
    /// GB/s of packed weights streamed (memory-bound rows).
    fn gbps(&self) -> Option<f64> {
        self.bandwidth.map(|(bytes, _)| bytes as f64 / self.timing.median / 1e9)
    }
    /// That as a fraction of the read probe at the same byte size.
    fn bandwidth_fraction(&self) -> Option<f64> {
        Some(self.gbps()? / self.bandwidth?.1)
    }
}

fn run_bench(args: BenchArgs) -> Result<(), String> {
    if args.cold && args.op() != Op::Codebook {
        return Err("--cold times the codebook cases (use --op codebook with it)".into());
    }
    match args.op() {
        Op::Conv => return run_bench_conv(args),
        Op::Dwconv => return run_dw_bench(args),
        Op::Codebook => return run_codebook_bench(args),
        Op::All => return run_all(args),
        Op::Gemm => {}
    }
    if args.list {
        println!("{:<14} {:<18} origin", "name", "MxNxK");
        for s in bench::SHAPES {
            println!("{:<14} {:<18} {}", s.name, s.dims(), s.origin);
        }
        return Ok(());
    }
    let shapes: Vec<Shape> = if args.shapes.is_empty() {
        bench::SHAPES.to_vec()
    } else {
        args.shapes.iter().map(|s| parse_shape(s)).collect::<Result<_, _>>()?
    };
    let min_time = args.min_time();
    let threads = args.threads as usize;
    let ctx = match args.isa {
        Some(isa) => Context::for_isa(isa),
        None => Context::new(),
    }
    .and_then(|c| c.with_threads(threads))
    .and_then(|c| match &args.kernel {
        Some(name) => c.with_gemm_kernel(name),
        None => Ok(c),
    })
    .map(|c| if args.no_gemv { c.without_gemv() } else { c })
    .map_err(|e| e.to_string())?;

    let total = shapes.len();
    let started = Instant::now();
    let (mut done_ops, mut done_secs) = (0.0f64, 0.0f64);
    let progress = total > 2 || std::io::stderr().is_terminal();
    let mut rows = Vec::with_capacity(total);
    for (i, shape) in shapes.iter().enumerate() {
        if progress {
            // After the first shape, estimate what is left from the rate so far: each
            // shape costs at least `min_time`, or a warm-up plus one call when slower.
            let left: f64 = shapes[i..]
                .iter()
                .map(|s| {
                    let call = if done_secs > 0.0 { s.ops() * done_secs / done_ops } else { 0.0 };
                    if call >= min_time.as_secs_f64() { call } else { min_time.as_secs_f64() + call }
                })
                .sum();
            eprintln!("[{}/{total}] {} {} … (about {left:.0} s left)", i + 1, shape.name, shape.dims());
        }
        let mut case = GemmCase::new(&ctx, shape, 0x9e37_79b9 + i as u64).map_err(|e| format!("{shape}: {e}"))?;
        // Memory-bound shapes: the read probe on a buffer the size of the packed weights,
        // for half the time before and half after the GEMM (the mean of the two medians),
        // so both see the same machine state.
        let probe_buf = (shape.m <= GEMV_ROWS).then(|| qkern::peak::StreamBuffer::new(case.weight_bytes()));
        let probe = |buf: &Option<qkern::peak::StreamBuffer>| {
            buf.as_ref().and_then(|b| qkern::peak::read_bandwidth_of(b, min_time / 2)).map(|bw| bw.gbps_median)
        };
        let before = probe(&probe_buf);
        let timing = bench::time(min_time, || case.run()).map_err(|e| format!("{shape}: {e}"))?;
        let after = probe(&probe_buf);
        drop(probe_buf);
        case.check().map_err(|e| format!("{shape}: wrong result: {e}"))?;
        let bandwidth = before.zip(after).map(|(b, a)| (case.weight_bytes(), 0.5 * (b + a)));
        let kernel = case.kernel();
        done_ops += shape.ops() * timing.calls as f64;
        done_secs += timing.total.as_secs_f64();
        rows.push(Row {
            shape: shape.clone(),
            isa: ctx.kernels().isa,
            kernel: case.kernel_name(),
            threads,
            timing,
            bandwidth,
            peak: kernel_peak(&kernel, threads),
        });
    }
    if progress {
        eprintln!("done: {total} shapes in {:.1} s", started.elapsed().as_secs_f64());
    }
    if args.json {
        print_json(&rows);
    } else {
        print_table(&rows);
    }
    Ok(())
}

/// `qkern bench` (`--op all`): every family's default shapes, one table.
fn run_all(args: BenchArgs) -> Result<(), String> {
    let family_only = [
        (!args.shapes.is_empty(), "--shape"),
        (args.kernel.is_some(), "--kernel"),
        (args.list, "--list"),
        (args.no_gemv, "--no-gemv"),
        (!args.convs.is_empty(), "--conv"),
    ];
    if let Some((_, flag)) = family_only.iter().find(|(set, _)| *set) {
        return Err(format!("{flag} selects within one family: use --op gemm|conv|dwconv|codebook with it"));
    }
    let ctx = match args.isa {
        Some(isa) => Context::for_isa(isa),
        None => Context::new(),
    }
    .and_then(|c| c.with_threads(args.threads as usize))
    .map_err(|e| e.to_string())?;
    summary::run(&ctx, args.min_time(), args.json)
}

/// `qkern bench --op conv`: the peer_bench.py conv layers, checked against the reference.
fn run_bench_conv(args: BenchArgs) -> Result<(), String> {
    if args.list {
        println!("{:<26} {:<30}", "name", "layer");
        for s in bench::CONV_SHAPES {
            println!("{:<26} {:<30}", s.name, s.dims());
        }
        return Ok(());
    }
    let shapes: Vec<bench::ConvShape> = if args.shapes.is_empty() {
        bench::CONV_SHAPES.to_vec()
    } else {
        args.shapes.iter().map(|s| bench::find_conv_shape(s).map_err(|e| e.to_string())).collect::<Result<_, _>>()?
    };
    let min_time = args.min_time();
    let threads = args.threads as usize;
    let ctx = match args.isa {
        Some(isa) => Context::for_isa(isa),
        None => Context::new(),
    }
    .and_then(|c| c.with_threads(threads))
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if !args.json {
        println!(
            "{:<26} {:<28} {:<26} {:>3} {:>10} {:>8} {:>6}  {:>17}",
            "layer", "HxWxCin->Cout", "kernel", "thr", "time/call", "GOPS", "%peak", "GOPS min-max"
        );
    }
    for (i, shape) in shapes.iter().enumerate() {
        let mut case = bench::ConvCase::new(&ctx, shape, 0x9e37_79b9 + i as u64).map_err(|e| format!("{}: {e}", shape.name))?;
        let t = bench::time(min_time, || case.run()).map_err(|e| format!("{}: {e}", shape.name))?;
        case.check().map_err(|e| format!("{}: wrong result: {e}", shape.name))?;
        let ops = shape.ops();
        let kernel = ctx.kernels().gemm_candidates.iter().copied().find(|k| k.name == case.kernel_name());
        let peak = kernel.and_then(|k| kernel_peak(&k, threads));
        let gops = bench::gops(ops, t.median);
        if args.json {
            let fields = [
                ("op", json_str("conv_u8i8_u8")),
                ("shape", json_str(shape.name)),
                ("isa", json_str(ctx.kernels().isa.name())),
                ("kernel", json_str(case.kernel_name())),
                ("threads", threads.to_string()),
                ("seconds_median", json_num(Some(t.median))),
                ("gops_median", json_num(Some(gops))),
                ("gops_min", json_num(Some(bench::gops(ops, t.max)))),
                ("gops_max", json_num(Some(bench::gops(ops, t.min)))),
                ("peak_gops", json_num(peak)),
                ("peak_fraction", json_num(peak.map(|p| gops / p))),
                ("check", json_str("ok")),
            ];
            out.push(format!("  {{{}}}", fields.iter().map(|(k, v)| format!("{}: {v}", json_str(k))).collect::<Vec<_>>().join(", ")));
        } else {
            let pk = peak.map_or("-".to_string(), |p| format!("{:.1}", 100.0 * gops / p));
            println!(
                "{:<26} {:<28} {:<26} {:>3} {:>10} {:>8.2} {:>6}  {:>8.2}-{:<8.2}",
                shape.name,
                shape.dims(),
                case.kernel_name(),
                threads,
                human_secs(t.median),
                gops,
                pk,
                bench::gops(ops, t.max),
                bench::gops(ops, t.min)
            );
        }
    }
    if args.json {
        println!("[\n{}\n]", out.join(",\n"));
    } else {
        println!(
            "u8 NHWC (zero point 128) x i8 OHWI (prepacked) -> u8 requantized; GOPS = 2*MACs / median time; \
             %peak = GOPS / (per-core peak of the GEMM kernel's path measured on this host x threads); every result checked against the reference"
        );
    }
    Ok(())
}

/// `qkern bench --op codebook`: per shape, the int8 GEMM then each 4-bit scheme on the
/// lookup kernels and (where the level set is `±(2^a [+ 2^b])`) the bit-shift kernels.
/// The cases of one shape are timed in three interleaved rounds (int8, lut, shift, lut,
/// shift, …), each `min_time / 3`; a row quotes the median of its three round medians,
/// so a neighbour's build slowing one round does not decide a ratio.
fn run_codebook_bench(args: BenchArgs) -> Result<(), String> {
    use qkern::codebook::CodebookFamily;
    const ROUNDS: usize = 3;
    let shapes: Vec<Shape> = if args.shapes.is_empty() {
        bench::CODEBOOK_SHAPES.iter().map(|s| bench::find_shape(s)).collect::<Result<_, _>>().map_err(|e| e.to_string())?
    } else {
        args.shapes.iter().map(|s| parse_shape(s)).collect::<Result<_, _>>()?
    };
    let min_time = args.min_time();
    let round_time = min_time / ROUNDS as u32;
    let ctx = match args.isa {
        Some(isa) => Context::for_isa(isa),
        None => Context::new(),
    }
    .and_then(|c| c.with_threads(args.threads as usize))
    .map_err(|e| e.to_string())?;
    println!(
        "{:<10} {:<16} {:<10} {:<6} {:<42} {:>10} {:>8} {:>8}",
        "shape", "MxNxK", "weights", "family", "kernel", "median", "GOPS", "vs int8"
    );
    for (i, shape) in shapes.iter().enumerate() {
        let seed = 0x9e37_79b9 + i as u64;
        // With --cold, every case rotates through copies of its weights (1 when hot).
        let copies = |bytes: usize| if args.cold { bench::cold_copies(bytes) } else { 1 };
        let g = GemmCase::new(&ctx, shape, seed).map_err(|e| format!("{shape}: {e}"))?;
        let n = copies(g.weight_bytes());
        let mut g = g.with_weight_copies(n).map_err(|e| format!("{shape}: {e}"))?;
        // (scheme, family, case); a family that cannot run the scheme has no row.
        let mut cases = Vec::new();
        for scheme in bench::CODEBOOK_SCHEMES {
            if let Some(name) = &args.kernel {
                // One named kernel on every scheme it runs exactly.
                match bench::CodebookCase::with_kernel(&ctx, shape, scheme, seed, name) {
                    Ok(c) => cases.push((*scheme, "named", c.without_decode())),
                    Err(qkern::Error::Unsupported(_)) => {}
                    Err(e) => return Err(format!("{shape} {scheme}: {e}")),
                }
                continue;
            }
            for family in [CodebookFamily::Lut, CodebookFamily::Shift] {
                match bench::CodebookCase::with_family(&ctx, shape, scheme, seed, Some(family)) {
                    Ok(c) if c.decodes() => {
                        // Both paths, the dispatched one first: "lut/r" is the in-register
                        // kernel the decoded path replaces at this M.
                        let r = bench::CodebookCase::with_family(&ctx, shape, scheme, seed, Some(family))
                            .map_err(|e| format!("{shape} {scheme}: {e}"))?
                            .without_decode();
                        cases.push((*scheme, family.name(), c));
                        cases.push((*scheme, "lut/r", r));
                    }
                    Ok(c) => cases.push((*scheme, family.name(), c)),
                    Err(qkern::Error::Unsupported(_)) if family == CodebookFamily::Shift => {}
                    Err(e) => return Err(format!("{shape} {scheme} {}: {e}", family.name())),
                }
            }
        }
        if let (Some(name), true) = (&args.kernel, cases.is_empty()) {
            return Err(format!("{name} runs none of the schemes ({})", bench::CODEBOOK_SCHEMES.join(", ")));
        }
        let cases = cases
            .into_iter()
            .map(|(scheme, family, c)| {
                let n = copies(c.weight_bytes());
                c.with_weight_copies(n).map(|c| (scheme, family, c)).map_err(|e| format!("{shape} {scheme}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if args.cold {
            let mut sizes: Vec<(usize, usize)> = cases.iter().map(|(_, _, c)| (c.weight_copies(), c.weight_bytes())).collect();
            sizes.sort_unstable();
            sizes.dedup();
            let sizes: Vec<String> = sizes.iter().map(|&(n, b)| format!("{n} × {:.1} MiB", b as f64 / (1 << 20) as f64)).collect();
            println!(
                "{:<10} cold weights, rotated per call: int8 {} × {:.1} MiB; codes {}",
                shape.name,
                g.weight_copies(),
                g.weight_bytes() as f64 / (1 << 20) as f64,
                sizes.join(", ")
            );
        }
        let mut cases = cases;
        let mut tg = Vec::new();
        let mut tc: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        for _ in 0..ROUNDS {
            tg.push(bench::time(round_time, || g.run()).map_err(|e| format!("{shape}: {e}"))?.median);
            for (t, (scheme, _, c)) in tc.iter_mut().zip(cases.iter_mut()) {
                t.push(bench::time(round_time, || c.run()).map_err(|e| format!("{shape} {scheme}: {e}"))?.median);
            }
        }
        g.check().map_err(|e| format!("{shape}: wrong result: {e}"))?;
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let base_t = median(&mut tg);
        let base = bench::gops(shape.ops(), base_t);
        let line = |w: &str, family: &str, kernel: &str, t: f64| {
            let r = bench::gops(shape.ops(), t);
            println!(
                "{:<10} {:<16} {:<10} {:<6} {:<42} {:>10} {:>8.1} {:>7.2}x",
                shape.name,
                shape.dims(),
                w,
                family,
                kernel,
                human_secs(t),
                r,
                r / base
            );
        };
        line("int8", "-", g.kernel().name, base_t);
        for ((scheme, family, c), t) in cases.iter().zip(tc.iter_mut()) {
            c.check().map_err(|e| format!("{shape} {scheme}: wrong result: {e}"))?;
            line(scheme, family, &c.kernel_name(), median(t));
        }
    }
    println!(
        "u8 activations (zero point 128), i32 output; median of {ROUNDS} interleaved rounds; {} weights; isa cap {}",
        if args.cold { "cold (from DRAM)" } else { "hot (cache-resident where they fit)" },
        ctx.kernels().isa.name()
    );
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<14} {:>16} {:<26} {:>3} {:>10} {:>8} {:>6}  {:>17}",
        "shape", "MxNxK", "kernel", "thr", "time/call", "GOPS", "%peak", "GOPS min-max"
    );
    for r in rows {
        let peak = match r.peak_fraction() {
            Some(f) => format!("{:.1}", 100.0 * f),
            None => "-".into(),
        };
        let (lo, hi) = (bench::gops(r.shape.ops(), r.timing.max), bench::gops(r.shape.ops(), r.timing.min));
        println!(
            "{:<14} {:>16} {:<26} {:>3} {:>10} {:>8.2} {:>6}  {:>8.2}-{:<8.2}",
            r.shape.name,
            r.shape.dims(),
            r.kernel,
            r.threads,
            human_secs(r.timing.median),
            r.gops(),
            peak,
            lo,
            hi
        );
    }
    if rows.iter().any(|r| r.bandwidth.is_some()) {
        println!();
        println!("{:<14} {:>16} {:>10} {:>8} {:>11} {:>7}", "shape", "MxNxK", "weight MiB", "GB/s", "probe GB/s", "%probe");
        for r in rows {
            if let (Some((bytes, probe)), Some(gbps), Some(f)) = (r.bandwidth, r.gbps(), r.bandwidth_fraction()) {
                println!(
                    "{:<14} {:>16} {:>10.1} {:>8.1} {:>11.1} {:>7.1}",
                    r.shape.name,
                    r.shape.dims(),
                    bytes as f64 / (1 << 20) as f64,
                    gbps,
                    probe,
                    100.0 * f
                );
            }
        }
        println!(
            "GB/s = packed weight bytes / median time; probe = single-core read bandwidth on a buffer of the same \
             size ({} loads), measured just before and after the GEMM; %probe = GB/s / probe",
            qkern::peak::stream_loads()
        );
    }
    let isa = rows.first().map(|r| r.isa.name()).unwrap_or("-");
    println!(
        "u8 (zero point 128) x i8 (prepacked) -> i32; isa cap {isa}; GOPS = 2*M*N*K / median time; \
         %peak = GOPS / (per-core peak of the kernel's path, measured on this host by a probe, x threads), '-' where no probe exists"
    );
}

/// The per-core peak of `kernel`'s instruction path measured on this host, times the
/// threads that can run at once (more threads than cores do not raise it); `None`
/// where no probe exists.
fn kernel_peak(kernel: &qkern_kernels::GemmUkernel, threads: usize) -> Option<f64> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    qkern::peak::path_of(kernel).and_then(qkern::peak::measured_gops).map(|p| p * threads.min(cores) as f64)
}

/// Seconds with a unit that keeps three or four significant digits.
fn human_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.3} us", s * 1e6)
    } else {
        format!("{:.0} ns", s * 1e9)
    }
}

/// A JSON string literal (shape names may come from the command line).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for a value JSON cannot hold.
fn json_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

fn print_json(rows: &[Row]) {
    // Field names follow ../shared/tools/peer_bench.py's records where they overlap.
    println!("[");
    for (i, r) in rows.iter().enumerate() {
        let ops = r.shape.ops();
        let fields = [
            ("op", json_str("gemm_u8i8_i32")),
            ("shape", json_str(&r.shape.name)),
            ("m", r.shape.m.to_string()),
            ("n", r.shape.n.to_string()),
            ("k", r.shape.k.to_string()),
            ("isa", json_str(r.isa.name())),
            ("kernel", json_str(r.kernel)),
            ("threads", r.threads.to_string()),
            ("seconds_median", json_num(Some(r.timing.median))),
            ("gops_median", json_num(Some(r.gops()))),
            ("gops_min", json_num(Some(bench::gops(ops, r.timing.max)))),
            ("gops_max", json_num(Some(bench::gops(ops, r.timing.min)))),
            ("samples", r.timing.samples.to_string()),
            ("calls", r.timing.calls.to_string()),
            ("peak_gops", json_num(r.peak)),
            ("peak_fraction", json_num(r.peak_fraction())),
            ("weight_bytes", json_num(r.bandwidth.map(|b| b.0 as f64))),
            ("gbps_median", json_num(r.gbps())),
            ("probe_gbps", json_num(r.bandwidth.map(|b| b.1))),
            ("probe_fraction", json_num(r.bandwidth_fraction())),
            ("check", json_str("ok")),
        ];
        let body = fields.iter().map(|(k, v)| format!("{}: {v}", json_str(k))).collect::<Vec<_>>().join(", ");
        println!("  {{{body}}}{}", if i + 1 < rows.len() { "," } else { "" });
    }
    println!("]");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench_args(argv: &[&str]) -> BenchArgs {
        let cli = Cli::try_parse_from(["qkern", "bench"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Bench(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn bench_op_defaults_to_all_unless_a_family_option_says_otherwise() {
        assert_eq!(bench_args(&[]).op(), Op::All);
        assert_eq!(bench_args(&["--json", "--threads", "2"]).op(), Op::All);
        assert_eq!(bench_args(&["--shape", "sq256"]).op(), Op::Gemm);
        assert_eq!(bench_args(&["--list"]).op(), Op::Gemm);
        assert_eq!(bench_args(&["--conv", "dw5x5_28x28x192"]).op(), Op::Dwconv);
        assert_eq!(bench_args(&["--op", "codebook", "--shape", "dec4096"]).op(), Op::Codebook);
        assert_eq!(bench_args(&[]).min_time(), Duration::from_millis(250));
        assert_eq!(bench_args(&["--op", "gemm"]).min_time(), Duration::from_millis(500));
        assert_eq!(bench_args(&["--quick"]).min_time(), Duration::from_millis(50));
        // An explicit `all` with an option of one family is refused, naming the option.
        let err = run_all(bench_args(&["--op", "all", "--shape", "sq256"])).unwrap_err();
        assert!(err.contains("--shape"), "{err}");
        // Cold weights are a codebook-table option; elsewhere they are refused, not ignored.
        for argv in [&["--cold"][..], &["--cold", "--op", "gemm"], &["--cold", "--op", "dwconv"]] {
            let err = run_bench(bench_args(argv)).unwrap_err();
            assert!(err.contains("--cold"), "{err}");
        }
    }

    #[test]
    fn parsers_reject_bad_values() {
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs("inf").is_err());
        assert!(parse_secs("x").is_err());
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_isa("foo").unwrap_err().contains("scalar"));
        assert_eq!(parse_isa("SCALAR"), Ok(Isa::Scalar));
        assert!(parse_shape("0x1x1").is_err());
        assert_eq!(parse_shape("dec4096").map(|s| (s.m, s.n, s.k)), Ok((1, 4096, 4096)));
    }

    #[test]
    fn isa_missing_from_cpu_is_an_error_listing_the_available_ones() {
        for isa in Isa::ALL {
            if !dispatch::cpu().has(isa) {
                let e = parse_isa(isa.name()).unwrap_err();
                assert!(e.contains("available: scalar"), "{e}");
            }
        }
    }

    #[test]
    fn json_helpers() {
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(json_num(Some(1.5)), "1.5");
        assert_eq!(json_num(Some(f64::NAN)), "null");
        assert_eq!(json_num(None), "null");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_secs(2.5), "2.500 s");
        assert_eq!(human_secs(0.0123), "12.300 ms");
        assert_eq!(human_secs(8.6e-5), "86.000 us");
        assert_eq!(human_secs(2.1e-7), "210 ns");
    }
}
