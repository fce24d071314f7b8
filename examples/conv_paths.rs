//! The two implicit-GEMM conv paths — indirect (rows read in place) and gather (im2col by
//! block) — timed interleaved in one process on one thread, on layers across channel
//! counts, taps, strides and groups: the measurement behind the dispatch rule in
//! `src/conv/mod.rs` (`takes_indirect`). Both results are compared for equality.
//!
//! `cargo run --release --example conv_paths [isa] [name filter]`
use std::time::Instant;

use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput};
use qkern::{Context, Isa, Requantize, WeightQuant};

fn main() {
    let isa = std::env::args().nth(1).and_then(|s| Isa::from_name(&s)).unwrap_or(Isa::Avx512Vnni);
    let ctx = Context::for_isa(isa).unwrap().with_threads(1).unwrap();
    let gctx = ctx.clone().without_indirect_conv();
    let all: Vec<(&str, Conv2dGeometry)> = vec![
        ("3x3 28x28 c4->64", Conv2dGeometry::new(1, 28, 28, 4, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c8->64", Conv2dGeometry::new(1, 28, 28, 8, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c16->64", Conv2dGeometry::new(1, 28, 28, 16, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c32->64", Conv2dGeometry::new(1, 28, 28, 32, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c64->64", Conv2dGeometry::new(1, 28, 28, 64, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c256->256", Conv2dGeometry::new(1, 28, 28, 256, 256, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 14x14 c512->512 s2", Conv2dGeometry::new(1, 28, 28, 512, 512, 3, 3).padding(1, 1, 1, 1).stride(2, 2)),
        ("7x7 s2 112 c4->64", Conv2dGeometry::new(1, 112, 112, 4, 64, 7, 7).padding(3, 3, 3, 3).stride(2, 2)),
        ("5x5 28x28 c8->32", Conv2dGeometry::new(1, 28, 28, 8, 32, 5, 5).padding(2, 2, 2, 2)),
        ("1x1 s2 56 c64->128", Conv2dGeometry::new(1, 56, 56, 64, 128, 1, 1).stride(2, 2)),
        ("1x1 s2 56 c256->512", Conv2dGeometry::new(1, 56, 56, 256, 512, 1, 1).stride(2, 2)),
        ("1x1 s2 56 c128->256", Conv2dGeometry::new(1, 56, 56, 128, 256, 1, 1).stride(2, 2)),
        ("1x1 s2 28 c512->1024", Conv2dGeometry::new(1, 28, 28, 512, 1024, 1, 1).stride(2, 2)),
        ("1x1 s2 14 c1024->2048", Conv2dGeometry::new(1, 14, 14, 1024, 2048, 1, 1).stride(2, 2)),
        ("r50 3x3 56 c64->64 zw3", Conv2dGeometry::new(1, 56, 56, 64, 64, 3, 3).padding(1, 1, 1, 1)),
        ("r50 3x3 56 c64->64", Conv2dGeometry::new(1, 56, 56, 64, 64, 3, 3).padding(1, 1, 1, 1)),
        ("r50 3x3 s2 56 c128->128", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).stride(2, 2)),
        ("3x3 g4 56 c128->128", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).groups(4)),
        ("3x3 g16 56 c128->128", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).groups(16)),
        ("3x3 g32 28 c128->128 (cpg4)", Conv2dGeometry::new(1, 28, 28, 128, 128, 3, 3).padding(1, 1, 1, 1).groups(32)),
        ("3x3 g8 28 c64->64 (opg8)", Conv2dGeometry::new(1, 28, 28, 64, 64, 3, 3).padding(1, 1, 1, 1).groups(8)),
        // N of one 16-column tile (the AVX2 exact kernel widens A once either way).
        ("3x3 28x28 c8->16", Conv2dGeometry::new(1, 28, 28, 8, 16, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c64->16", Conv2dGeometry::new(1, 28, 28, 64, 16, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 g8 56 c128->128 (cpg16 opg16)", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).groups(8)),
        // Weights within ±40 ("sw"): the AVX2 `vpmaddubsw` kernel takes these.
        ("r50 3x3 56 c64->64 sw", Conv2dGeometry::new(1, 56, 56, 64, 64, 3, 3).padding(1, 1, 1, 1)),
        ("r50 3x3 s2 56 c128->128 sw", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).stride(2, 2)),
        ("3x3 g4 56 c128->128 sw", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).groups(4)),
        ("3x3 28x28 c4->64 sw", Conv2dGeometry::new(1, 28, 28, 4, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 28x28 c16->64 sw", Conv2dGeometry::new(1, 28, 28, 16, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 g16 56 c128->128 sw", Conv2dGeometry::new(1, 56, 56, 128, 128, 3, 3).padding(1, 1, 1, 1).groups(16)),
    ];
    let filt = std::env::args().nth(2).unwrap_or_default();
    let shapes: Vec<_> = all.into_iter().filter(|(n, _)| n.contains(filt.as_str())).collect();
    for (name, g) in shapes {
        let w: Vec<i8> = if name.ends_with(" sw") {
            (0..g.weight_len()).map(|i| ((i * 7919) % 81) as i8 - 40).collect()
        } else {
            (0..g.weight_len()).map(|i| ((i * 7919) % 255) as i8).collect()
        };
        let x: Vec<u8> = (0..g.input_len()).map(|i| ((i * 31) % 251) as u8).collect();
        let zw = if name.ends_with("zw3") { 3 } else { 0 };
        let fi = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(zw, 0.01)).unwrap();
        let fg = Conv2d::new_in(&gctx, g, &w, WeightQuant::per_tensor(zw, 0.01)).unwrap();
        let rq = Requantize::new(0.5, 128u8);
        let mut yi = vec![0u8; g.output_len()];
        let mut yg = vec![0u8; g.output_len()];
        let input = ConvInput::new(&x, 128, 0.02);
        let ops = 2.0 * g.macs() as f64;
        let reps = ((4e9 / ops) as usize).max(1);
        let (mut ti, mut tg) = (Vec::new(), Vec::new());
        for _ in 0..11 {
            let t = Instant::now();
            for _ in 0..reps {
                ctx.conv2d_requantize(&fi, input, &rq, &mut yi).unwrap();
            }
            ti.push(t.elapsed().as_secs_f64() / reps as f64);
            let t = Instant::now();
            for _ in 0..reps {
                gctx.conv2d_requantize(&fg, input, &rq, &mut yg).unwrap();
            }
            tg.push(t.elapsed().as_secs_f64() / reps as f64);
        }
        assert_eq!(yi, yg, "{name}");
        ti.sort_by(f64::total_cmp);
        tg.sort_by(f64::total_cmp);
        let (mi, mg) = (ti[5], tg[5]);
        println!(
            "{name:<34} {} {:?} median: indirect {:>6.1} gather {:>6.1} GOPS ratio {:.3} | best: indirect {:>6.1} gather {:>6.1} ratio {:.3}",
            fi.kernel_name(), fi.path(), ops / mi / 1e9, ops / mg / 1e9, mg / mi, ops / ti[0] / 1e9, ops / tg[0] / 1e9, tg[0] / ti[0]
        );
    }
}
