//! `qkern quantize weights.npy --scheme S --bits B [--per-channel AXIS]`: quantize a
//! weight tensor with one scheme or all of them and print MSE, SQNR and max error side by
//! side, so a user can choose. Every bad input (file, dtype, shape, bits, axis) is an
//! error message, never a panic.

use std::path::PathBuf;

use qkern::quant::codebook::{LevelQuantizer, LevelSet};
use qkern::quant::pwlq::{Breakpoint, GridScope, PwlqQuantizer};
use qkern::quant::{ApotFormat, ErrorStats, Granularity, IntFormat, Mapping, PotBase, PotFormat, UniformQuantizer};

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
/// and its error (or why it does not apply).
struct Row {
    name: String,
    stored_bits: u32,
    result: Result<ErrorStats, String>,
}

fn run_levels(q: LevelQuantizer, x: &[f32], shape: &[usize]) -> qkern::Result<ErrorStats> {
    q.calibrate(x, shape)?.error(x, shape)
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
    let e = |r: qkern::Result<ErrorStats>| r.map_err(|e| e.to_string());
    if want(SchemeArg::Uniform) {
        let r = IntFormat::signed(b).and_then(|f| {
            UniformQuantizer::new(f, Mapping::Symmetric).with_granularity(g).calibrate(&x, &shape)?.error(&x, &shape)
        });
        rows.push(Row { name: "uniform (symmetric, min-max)".into(), stored_bits: b, result: e(r) });
    }
    if want(SchemeArg::Pot) {
        let r = PotFormat::signed(b).and_then(|f| run_levels(f.with_base(PotBase::Two).quantizer().with_granularity(g), &x, &shape));
        rows.push(Row { name: "pot (base 2)".into(), stored_bits: b, result: e(r) });
    }
    if want(SchemeArg::Log) {
        let r = PotFormat::signed(b).and_then(|f| run_levels(f.with_base(PotBase::Sqrt2).quantizer().with_granularity(g), &x, &shape));
        rows.push(Row { name: "log (base sqrt 2)".into(), stored_bits: b, result: e(r) });
    }
    if want(SchemeArg::Apot) {
        let r = ApotFormat::weight(b).and_then(|f| run_levels(f.quantizer().with_granularity(g), &x, &shape));
        rows.push(Row { name: "apot (weights)".into(), stored_bits: b, result: e(r) });
    }
    if want(SchemeArg::Codebook) {
        let r = if b == 4 {
            e(LevelSet::codebook_i16(4, &IQ4_NL).and_then(|s| run_levels(LevelQuantizer::new(s).with_granularity(g), &x, &shape)))
        } else {
            Err(format!("the built-in learned codebook (IQ4_NL) is 4-bit; --bits is {b}"))
        };
        rows.push(Row { name: "codebook (IQ4_NL)".into(), stored_bits: b, result: r });
    }
    if want(SchemeArg::Pwlq) && b < 8 {
        // PWLQ stores b + 1 bits; uniform at that width is the fair comparison too.
        let r = IntFormat::signed(b + 1).and_then(|f| {
            UniformQuantizer::new(f, Mapping::Symmetric).with_granularity(g).calibrate(&x, &shape)?.error(&x, &shape)
        });
        rows.push(Row { name: format!("uniform at {} bits (PWLQ's storage)", b + 1), stored_bits: b + 1, result: e(r) });
    }
    if want(SchemeArg::Pwlq) {
        for (label, bp) in [("gaussian p", Breakpoint::Gaussian), ("laplace p", Breakpoint::Laplace), ("search p", Breakpoint::Search)] {
            let r = PwlqQuantizer::new(b, bp).with_granularity(g).calibrate(&x, &shape).and_then(|p| p.error(&x, &shape));
            rows.push(Row { name: format!("pwlq ({label})"), stored_bits: b + 1, result: e(r) });
        }
        // Grid-aligned PWLQ (a ≤ 32-entry int8 codebook at 4 bits): what the snap costs.
        let grid = PwlqQuantizer::new(b, Breakpoint::Search)
            .with_granularity(g)
            .calibrate(&x, &shape)
            .and_then(|p| p.snap_to_grid(&x, &shape, GridScope::PerChannel, 127));
        let r = grid.map_err(|e| e.to_string()).and_then(|gr| {
            let xh = gr.dequantize();
            ErrorStats::between(&x, &xh).map_err(|e| e.to_string()).map(|s| (s, gr.extra_mse() / gr.mse_pwlq()))
        });
        let (result, extra) = match r {
            Ok((s, f)) => (Ok(s), Some(f)),
            Err(m) => (Err(m), None),
        };
        let name = match extra {
            Some(f) => format!("pwlq grid-aligned |L|<=127 ({:+.2}% MSE vs search p)", 100.0 * f),
            None => "pwlq grid-aligned |L|<=127".into(),
        };
        rows.push(Row { name, stored_bits: b + 1, result });
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
    // A scheme asked for by name that cannot run is an error; in `all` the other rows
    // still help, so there the n/a rows are only reported.
    if !all && rows.iter().any(|r| r.result.is_err()) {
        return Err(rows.into_iter().find_map(|r| r.result.err()).unwrap_or_default());
    }
    Ok(())
}
