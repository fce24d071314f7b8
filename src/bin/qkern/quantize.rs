//! `qkern quantize weights.npy --scheme S --bits B [--per-channel AXIS]`: quantize a
//! weight tensor with one scheme or all of them and print MSE, SQNR and max error side by
//! side, so a user can choose. Every bad input (file, dtype, shape, bits, axis) is an
//! error message, never a panic.

use std::path::PathBuf;

use qkern::quant::codebook::{LevelQuantizer, LevelSet};
use qkern::quant::pwlq::{Breakpoint, GridScope, PwlqQuantizer};
use qkern::quant::{ApotFormat, ErrorStats, Granularity, IntFormat, Mapping, PotBase, PotFormat, Scheme, UniformQuantizer};

/// The schemes `--scheme` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemeArg {
    /// Piecewise-linear (Fang et al. 2020): b-bit codes per region plus a region bit.
    Pwlq,
    /// Additive powers of two (Li et al. 2020), weight levels.
    Apot,
    /// Powers of two, base 2 (Miyashita et al. 2016).
    Pot,
    /// Logarithmic, base √2 (Miyashita et al.'s finer variant).
    Log,
    /// Uniform symmetric, min-max range.
    Uniform,
    /// A learned 4-bit codebook: llama.cpp's IQ4_NL table.
    Codebook,
    /// Every scheme above.
    All,
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// A .npy file of f32 or f64 weights (C order).
    file: PathBuf,
    /// The scheme to run.
    #[arg(long, value_enum, default_value = "all")]
    scheme: SchemeArg,
    /// Bits per code (PWLQ: per region, 4/6/8, stored with one more region bit).
    #[arg(long, default_value_t = 4)]
    bits: u32,
    /// Quantize per channel along this axis (default: per tensor).
    #[arg(long, value_name = "AXIS")]
    per_channel: Option<usize>,
}

/// llama.cpp's IQ4_NL table (`kvalues_iq4nl`), a learned 4-bit codebook on the int8 grid.
const IQ4_NL: [i16; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// `(shape, values)` of a .npy file of f32 or f64, C order.
fn read_npy(path: &PathBuf) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format!("{}: not a readable .npy file ({e})", path.display()))?;
    if npy.order() != npyz::Order::C {
        return Err(format!("{}: Fortran-order arrays are not supported; save it in C order", path.display()));
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{}: dimension {d} is too large", path.display())))
        .collect::<Result<_, _>>()?;
    let dtype = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => return Err(format!("{}: structured dtype {other:?} is not supported; give f32 or f64", path.display())),
    };
    let values: Vec<f32> = match dtype.as_str() {
        "<f4" | ">f4" => npy.into_vec::<f32>().map_err(|e| format!("{}: {e}", path.display()))?,
        "<f8" | ">f8" => npy.into_vec::<f64>().map_err(|e| format!("{}: {e}", path.display()))?.into_iter().map(|v| v as f32).collect(),
        d => return Err(format!("{}: dtype {d} is not supported; give f32 or f64 weights", path.display())),
    };
    if values.is_empty() {
        return Err(format!("{}: the array is empty (shape {shape:?})", path.display()));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("{}: element {i} is {} (not finite, or out of f32 range)", path.display(), values[i]));
    }
    Ok((shape, values))
}

/// One row of the report: a scheme's name, its code bits, the bits it stores per weight,
/// its error (or why it does not apply) and, for the histogram, its levels within the
/// data's range from a per-tensor fit (none where the scheme has no per-tensor form).
struct Row {
    name: String,
    stored_bits: u32,
    result: Result<ErrorStats, String>,
    levels: Option<Vec<f32>>,
}

/// Quantize-then-dequantize with calibrated parameters, whatever the scheme's code type.
type FakeQuant = Box<dyn Fn(&[f32], &[usize]) -> qkern::Result<Vec<f32>>>;

fn boxed<C: Copy + Default, S: Scheme<C> + 'static>(s: S) -> FakeQuant {
    Box::new(move |x, shape| s.fake_quantize(x, shape))
}

/// The tensor every scheme's row is computed on.
struct Data<'a> {
    x: &'a [f32],
    shape: &'a [usize],
    granularity: Granularity,
    /// A fine sweep of `[min x, max x]`, built once for every scheme's levels: much finer
    /// than any level spacing a ≤ 8-bit code can have on that range.
    sweep: Vec<f32>,
}

impl<'a> Data<'a> {
    fn new(x: &'a [f32], shape: &'a [usize], granularity: Granularity) -> Self {
        let (lo, hi) = min_max(x);
        const STEPS: usize = 1 << 16;
        let sweep = (0..=STEPS).map(|i| lo + (hi - lo) * (i as f32 / STEPS as f32)).collect();
        Data { x, shape, granularity, sweep }
    }
}

/// A scheme's row: fitted with `fit(granularity)` on the data for the error, and fitted
/// per tensor for the levels the histogram shows.
fn row(name: String, stored_bits: u32, d: &Data<'_>, fit: impl Fn(Granularity) -> qkern::Result<FakeQuant>) -> Row {
    let result = fit(d.granularity).and_then(|fq| ErrorStats::between(d.x, &fq(d.x, d.shape)?)).map_err(|e| e.to_string());
    let levels = result.is_ok().then(|| fit(Granularity::PerTensor).and_then(|fq| levels_in_range(&fq, &d.sweep)).ok()).flatten();
    Row { name, stored_bits, result, levels }
}

/// The distinct values `fq` (fitted per tensor) produces over `sweep`: the scheme's
/// levels in the data's range.
fn levels_in_range(fq: &FakeQuant, sweep: &[f32]) -> qkern::Result<Vec<f32>> {
    let mut v = fq(sweep, &[sweep.len()])?;
    v.sort_by(f32::total_cmp);
    v.dedup();
    Ok(v)
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

pub fn run(args: QuantizeArgs) -> Result<(), String> {
    if !(1..=8).contains(&args.bits) {
        return Err(format!("--bits must be in 1..=8, got {}", args.bits));
    }
    let (shape, x) = read_npy(&args.file)?;
    let g = match args.per_channel {
        None => Granularity::PerTensor,
        Some(axis) if axis < shape.len() => Granularity::PerChannel { axis },
        Some(axis) => {
            return Err(format!("--per-channel {axis}: the array has rank {} (shape {shape:?})", shape.len()));
        }
    };
    let b = args.bits;
    let all = args.scheme == SchemeArg::All;
    let want = |s: SchemeArg| all || args.scheme == s;
    let mut rows = Vec::new();
    let (xs, sh) = (&x[..], &shape[..]);
    let data = Data::new(xs, sh, g);
    let uniform = move |bits: u32| {
        move |g: Granularity| -> qkern::Result<FakeQuant> {
            let f = IntFormat::signed(bits)?;
            Ok(boxed::<i8, _>(UniformQuantizer::new(f, Mapping::Symmetric).with_granularity(g).calibrate(xs, sh)?))
        }
    };
    let levels = move |q: qkern::Result<LevelQuantizer>| {
        move |g: Granularity| -> qkern::Result<FakeQuant> { Ok(boxed(q.clone()?.with_granularity(g).calibrate(xs, sh)?)) }
    };
    if want(SchemeArg::Uniform) {
        rows.push(row("uniform (symmetric, min-max)".into(), b, &data, uniform(b)));
    }
    if want(SchemeArg::Pot) {
        let q = PotFormat::signed(b).map(|f| f.with_base(PotBase::Two).quantizer());
        rows.push(row("pot (base 2)".into(), b, &data, levels(q)));
    }
    if want(SchemeArg::Log) {
        let q = PotFormat::signed(b).map(|f| f.with_base(PotBase::Sqrt2).quantizer());
        rows.push(row("log (base sqrt 2)".into(), b, &data, levels(q)));
    }
    if want(SchemeArg::Apot) {
        let q = ApotFormat::weight(b).map(|f| f.quantizer());
        rows.push(row("apot (weights)".into(), b, &data, levels(q)));
    }
    if want(SchemeArg::Codebook) {
        if b == 4 {
            let q = LevelSet::codebook_i16(4, &IQ4_NL).map(LevelQuantizer::new);
            rows.push(row("codebook (IQ4_NL)".into(), b, &data, levels(q)));
        } else {
            let result = Err(format!("the built-in learned codebook (IQ4_NL) is 4-bit; --bits is {b}"));
            rows.push(Row { name: "codebook (IQ4_NL)".into(), stored_bits: b, result, levels: None });
        }
    }
    if want(SchemeArg::Pwlq) && b < 8 {
        // PWLQ stores b + 1 bits; uniform at that width is the fair comparison too.
        rows.push(row(format!("uniform at {} bits (PWLQ's storage)", b + 1), b + 1, &data, uniform(b + 1)));
    }
    if want(SchemeArg::Pwlq) {
        for (label, bp) in [("gaussian p", Breakpoint::Gaussian), ("laplace p", Breakpoint::Laplace), ("search p", Breakpoint::Search)] {
            let fit = |g: Granularity| -> qkern::Result<FakeQuant> { Ok(boxed(PwlqQuantizer::new(b, bp).with_granularity(g).calibrate(&x, &shape)?)) };
            rows.push(row(format!("pwlq ({label})"), b + 1, &data, fit));
        }
        // Grid-aligned PWLQ (a ≤ 32-entry int8 codebook at 4 bits): what the snap costs,
        // for an int8 table (±127) and for one AVX2 `vpmaddubsw` runs (±64).
        // One calibration (the breakpoint search is the costly part), snapped twice.
        let params = PwlqQuantizer::new(b, Breakpoint::Search).with_granularity(g).calibrate(&x, &shape);
        for max_level in [127, 64] {
            let grid = params.as_ref().map_err(|e| e.clone()).and_then(|p| p.snap_to_grid(&x, &shape, GridScope::PerChannel, max_level));
            let r = grid.map_err(|e| e.to_string()).and_then(|gr| {
                let xh = gr.dequantize();
                ErrorStats::between(&x, &xh).map_err(|e| e.to_string()).map(|s| (s, gr.extra_mse() / gr.mse_pwlq()))
            });
            let (result, extra) = match r {
                Ok((s, f)) => (Ok(s), Some(f)),
                Err(m) => (Err(m), None),
            };
            let name = match extra {
                Some(f) => format!("pwlq grid-aligned |L|<={max_level} ({:+.2}% MSE vs search p)", 100.0 * f),
                None => format!("pwlq grid-aligned |L|<={max_level}"),
            };
            rows.push(Row { name, stored_bits: b + 1, result, levels: None });
        }
    }
    let gran = match g {
        Granularity::PerChannel { axis } => format!("per channel (axis {axis})"),
        _ => "per tensor".into(),
    };
    println!("{}: shape {shape:?}, {} values, {gran}, --bits {b}", args.file.display(), x.len());
    println!("{:<52} {:>6} {:>12} {:>9} {:>12}", "scheme", "bits/w", "MSE", "SQNR dB", "max |err|");
    for r in &rows {
        match &r.result {
            Ok(s) => println!("{:<52} {:>6} {:>12.4e} {:>9.2} {:>12.4e}", r.name, r.stored_bits, s.mse, s.sqnr_db, s.max_abs_error),
            Err(m) => println!("{:<52} {:>6} n/a: {m}", r.name, r.stored_bits),
        }
    }
    println!("bits/w = stored bits per weight (PWLQ adds its region bit); SQNR = 10*log10(signal power / MSE)");
    println!();
    let plotted: Vec<(&str, &[f32])> = rows.iter().filter_map(|r| Some((r.name.as_str(), r.levels.as_deref()?))).collect();
    for line in histogram(&x, &plotted) {
        println!("{line}");
    }
    if g != Granularity::PerTensor {
        println!("  levels: a per-tensor fit of each scheme (per channel, every channel has its own scale)");
    }
    // A scheme asked for by name that cannot run is an error; in `all` the other rows
    // still help, so there the n/a rows are only reported.
    if !all && rows.iter().any(|r| r.result.is_err()) {
        return Err(rows.into_iter().find_map(|r| r.result.err()).unwrap_or_default());
    }
    Ok(())
}

/// Columns of the histogram.
const BINS: usize = 64;
/// Rows of the histogram's bars.
const HEIGHT: usize = 10;
/// Width of the label column before the plot.
const LABEL: usize = 22;

/// The ASCII histogram of `x` over [min, max] in [`BINS`] columns, then one line per
/// scheme marking the columns that hold its levels (`|` one level, `2`–`9` that many,
/// `+` more), so a user sees where each scheme spends its levels against where the
/// weights are. Lines are indented, so no line starts with a scheme name.
fn histogram(x: &[f32], schemes: &[(&str, &[f32])]) -> Vec<String> {
    let (lo, hi) = min_max(x);
    let width = (hi - lo) as f64;
    let column = |v: f32| -> Option<usize> {
        if !(lo..=hi).contains(&v) {
            return None;
        }
        if width <= 0.0 {
            return Some(BINS / 2);
        }
        Some((((v - lo) as f64 / width * BINS as f64) as usize).min(BINS - 1))
    };
    let mut counts = [0usize; BINS];
    for &v in x {
        if let Some(c) = column(v) {
            counts[c] += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut out = vec![format!("  weights: {} values in [{lo:.4e}, {hi:.4e}], {BINS} bins; tallest bin {top}", x.len())];
    for level in (1..=HEIGHT).rev() {
        // A bin shows `#` up to its height rounded up, so a non-empty bin is visible.
        let bar: String = counts.iter().map(|&c| if c * HEIGHT > (level - 1) * top && c > 0 { '#' } else { ' ' }).collect();
        out.push(format!("  {:>w$} {bar}", "", w = LABEL));
    }
    let mut axis = vec!['-'; BINS];
    if let Some(z) = column(0.0) {
        axis[z] = '0';
    }
    out.push(format!("  {:>w$} {}", "", axis.into_iter().collect::<String>(), w = LABEL));
    let lo_s = format!("{lo:.3e}");
    let hi_s = format!("{hi:.3e}");
    out.push(format!("  {:>w$} {lo_s}{hi_s:>pad$}", "", w = LABEL, pad = BINS.saturating_sub(lo_s.len())));
    for (name, levels) in schemes {
        let mut n = [0usize; BINS];
        for &l in levels.iter() {
            if let Some(c) = column(l) {
                n[c] += 1;
            }
        }
        let marks: String = n
            .iter()
            .map(|&k| match k {
                0 => ' ',
                1 => '|',
                2..=9 => char::from(b'0' + k as u8),
                _ => '+',
            })
            .collect();
        let short: String = name.chars().take(LABEL).collect();
        out.push(format!("  {short:<w$} {marks}  ({} levels in range)", levels.len(), w = LABEL));
    }
    out
}
