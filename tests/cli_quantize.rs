//! `qkern quantize` (issue 6, done-when): the binary on generated .npy files — every
//! scheme's row, the numbers equal to the library's on the same data, and bad input
//! (missing file, garbage, wrong dtype, bad bits, bad axis) an error exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use npyz::WriterBuilder;
use qkern::quant::Granularity;
use qkern::quant::pwlq::{Breakpoint, PwlqQuantizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkern-cli-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut f).begin_nd().unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// The `qkern` binary as a command (under the test's own runner when emulated).
fn command() -> Command {
    let exe = env!("CARGO_BIN_EXE_qkern");
    // An aarch64 build tested under qemu-user (CI) starts its child natively, where the
    // host cannot run it: run the binary under the same runner cargo used for this test.
    let host = Command::new("uname").arg("-m").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let emulated = cfg!(target_arch = "aarch64") && host.is_ok_and(|h| !h.is_empty() && h != "aarch64" && h != "arm64");
    if emulated {
        let runner = std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER")
            .unwrap_or_else(|_| "qemu-aarch64 -L /usr/aarch64-linux-gnu".into());
        let mut words = runner.split_whitespace();
        let mut c = Command::new(words.next().expect("the runner is empty"));
        c.args(words).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(args: &[&str]) -> Output {
    command().arg("quantize").args(args).output().unwrap()
}

fn gaussian(n: usize) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(6);
    (0..n).map(|_| { let v: f64 = StandardNormal.sample(&mut r); (0.02 * v) as f32 }).collect()
}

#[test]
fn quantize_prints_every_scheme_with_the_library_numbers() {
    let d = dir();
    let p = d.join("w.npy");
    let (rows, cols) = (64usize, 96usize);
    let x = gaussian(rows * cols);
    write_npy(&p, &[rows as u64, cols as u64], &x);
    let out = run(&[p.to_str().unwrap(), "--scheme", "all", "--bits", "4", "--per-channel", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    for name in ["uniform", "pot (base 2)", "log (base sqrt 2)", "apot", "codebook (IQ4_NL)", "pwlq (gaussian p)", "pwlq (search p)", "pwlq grid-aligned |L|<=127", "pwlq grid-aligned |L|<=64"] {
        let line = stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no row {name}:\n{stdout}"));
        assert!(!line.contains("n/a"), "{line}");
    }
    // The PWLQ row carries the library's MSE for the same data and settings.
    let want = PwlqQuantizer::new(4, Breakpoint::Search)
        .with_granularity(Granularity::PerChannel { axis: 0 })
        .calibrate(&x, &[rows, cols])
        .unwrap()
        .error(&x, &[rows, cols])
        .unwrap();
    let line = stdout.lines().find(|l| l.starts_with("pwlq (search p)")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let n = fields.len();
    assert_eq!(fields[n - 4], "5", "stored bits: {line}");
    assert_eq!(fields[n - 3], format!("{:.4e}", want.mse), "{line}");
    assert_eq!(fields[n - 2], format!("{:.2}", want.sqnr_db), "{line}");
    assert_eq!(fields[n - 1], format!("{:.4e}", want.max_abs_error), "{line}");
    // f64 input gives the same table (values are exactly representable).
    let p64 = d.join("w64.npy");
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    write_npy(&p64, &[rows as u64, cols as u64], &x64);
    let out64 = run(&[p64.to_str().unwrap(), "--bits", "4", "--per-channel", "0"]);
    assert!(out64.status.success());
    let body = |s: &str| s.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(body(&String::from_utf8_lossy(&out64.stdout)), body(&stdout));
}

/// A reader that goes away (`qkern info | head -1`) ends the tool quietly, not in a
/// panic: the pipe is closed before the child writes its first line.
#[test]
fn closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let d = dir();
    let p = d.join("pipe.npy");
    write_npy(&p, &[64, 96], &gaussian(64 * 96));
    for args in [vec!["info"], vec!["quantize", p.to_str().unwrap(), "--scheme", "all", "--bits", "4"]] {
        let mut child = command().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "qkern {args:?} with stdout closed: {stderr}");
        assert!(out.status.success(), "qkern {args:?} with stdout closed: {:?} {stderr}", out.status);
    }
}

#[test]
fn quantize_rejects_bad_input_without_panicking() {
    let d = dir();
    let good = d.join("g.npy");
    write_npy(&good, &[8, 8], &gaussian(64));
    let ints = d.join("i.npy");
    write_npy(&ints, &[4], &[1i32, 2, 3, 4]);
    let empty = d.join("e.npy");
    write_npy::<f32>(&empty, &[0, 4], &[]);
    let nan = d.join("n.npy");
    write_npy(&nan, &[2], &[1.0f32, f32::NAN]);
    let garbage = d.join("x.npy");
    std::fs::write(&garbage, b"this is not an npy file").unwrap();
    let truncated = d.join("t.npy");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let missing = d.join("missing.npy");
    let g = good.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![missing.to_str().unwrap()], "missing.npy"),
        (vec![garbage.to_str().unwrap()], "npy"),
        (vec![truncated.to_str().unwrap()], "t.npy"),
        (vec![ints.to_str().unwrap()], "dtype"),
        (vec![empty.to_str().unwrap()], "empty"),
        (vec![nan.to_str().unwrap()], "finite"),
        (vec![g, "--bits", "0"], "bits"),
        (vec![g, "--bits", "9"], "bits"),
        (vec![g, "--scheme", "pwlq", "--bits", "5"], "4, 6 or 8"),
        (vec![g, "--scheme", "codebook", "--bits", "3"], "4-bit"),
        (vec![g, "--per-channel", "2"], "rank"),
        (vec![g, "--scheme", "nope"], "nope"),
    ];
    for (args, needle) in cases {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {needle:?} not in {stderr}");
    }
}

#[test]
fn quantize_draws_the_weights_and_each_schemes_levels() {
    use qkern::quant::{IntFormat, Mapping, UniformQuantizer};
    let d = dir();
    let p = d.join("h.npy");
    let x = gaussian(4096);
    write_npy(&p, &[4096], &x);
    let out = run(&[p.to_str().unwrap(), "--bits", "4"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let head = lines.iter().position(|l| l.trim_start().starts_with("weights:")).unwrap_or_else(|| panic!("no histogram:\n{stdout}"));
    // The tallest bar reaches the top row; the bottom row marks every non-empty bin of 64
    // over [min, max].
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let mut filled = [false; 64];
    for &v in &x {
        filled[(((v - lo) as f64 / (hi - lo) as f64 * 64.0) as usize).min(63)] = true;
    }
    let plot_col = |l: &str| l.len() - 64;
    let bottom = lines[head + 10];
    let bars: Vec<bool> = bottom[plot_col(bottom)..].chars().map(|c| c == '#').collect();
    assert_eq!(bars, filled.to_vec(), "bottom row:\n{bottom}");
    assert!(lines[head + 1].contains('#'), "top row empty:\n{stdout}");
    // The uniform row marks exactly the symmetric 4-bit levels inside [min, max].
    let params = UniformQuantizer::new(IntFormat::signed(4).unwrap(), Mapping::Symmetric).calibrate(&x, &[x.len()]).unwrap();
    let s = params.scales()[0];
    let f = IntFormat::signed(4).unwrap();
    let want = (f.qmin()..=f.qmax()).filter(|&q| (lo..=hi).contains(&(q as f32 * s))).count();
    let row = lines.iter().skip(head).find(|l| l.trim_start().starts_with("uniform (symmetric")).unwrap_or_else(|| panic!("no uniform levels:\n{stdout}"));
    let marks: usize = row.split("  (").next().unwrap().chars().skip(2 + 22).map(|c| match c {
        '|' => 1,
        '2'..='9' => c as usize - '0' as usize,
        _ => 0,
    }).sum();
    assert_eq!(marks, want, "{row}");
    assert!(row.ends_with(&format!("({want} levels in range)")), "{row}");
    // Every scheme with levels gets a line; grid-aligned PWLQ (no per-tensor form) none.
    for name in ["pot (base 2)", "log (base sqrt 2)", "apot (weights)", "codebook (IQ4_NL)", "pwlq (search p)"] {
        assert!(lines.iter().skip(head).any(|l| l.trim_start().starts_with(name)), "no levels for {name}:\n{stdout}");
    }
}
