//! Depthwise convolution: every registered microkernel through the shared tester, and the
//! safe API against the direct reference convolution.

mod common;

use std::time::Instant;

use qkern::dispatch;

#[test]
fn every_dwconv_kernel_matches_the_reference() {
    let kernels = dispatch::dwconv_kernels();
    assert!(!kernels.is_empty(), "no depthwise kernel registered");
    let mut ran = 0;
    for k in &kernels {
        if !common::isa_or_skip(&format!("dwconv kernel {}", k.name), k.isa) {
            continue;
        }
        if !dispatch::dwconv_runs_here(k) {
            eprintln!("SKIP dwconv kernel {}: this CPU lacks one of {:?}", k.name, k.extra_features);
            continue;
        }
        let t0 = Instant::now();
        // SAFETY: the CPU runs `k` (its tier and extra features, checked just above); `k`
        // comes from the registered list, whose entry points implement the
        // `DwconvUkernelFn` contract, and the tester builds only arguments within it.
        let s = unsafe { qkern_kernels::testing::check_dwconv_ukernel(k) };
        eprintln!("{}: {} combos, {} cases, {} calls in {:?}", s.kernel, s.combos, s.cases, s.calls, t0.elapsed());
        assert_eq!(s.combos, k.run.iter().filter(|f| f.is_some()).count());
        assert!(s.cases > 0 && s.calls >= s.cases);
        ran += 1;
    }
    assert!(ran >= 1);
}

#[test]
fn dwconv_kernels_are_well_formed() {
    let kernels = dispatch::dwconv_kernels();
    for (i, k) in kernels.iter().enumerate() {
        assert!(kernels[..i].iter().all(|o| o.name != k.name), "{}: registered twice", k.name);
        assert!(k.format.ct >= 1);
        let tile = match k.taps {
            Some(t) => format!("_{t}p{}__", k.format.ct),
            None => format!("_up{}__", k.format.ct),
        };
        assert!(k.name.contains(&tile), "{}: name does not carry {tile}", k.name);
        let suffix = if k.isa == qkern::Isa::Scalar { "generic" } else { k.isa.name() };
        assert!(k.name.ends_with(suffix), "{}: name does not end with {suffix}", k.name);
    }
    let generic = kernels.iter().find(|k| k.isa == qkern::Isa::Scalar).expect("a portable dwconv kernel");
    assert!(generic.taps.is_none() && generic.run.iter().all(Option::is_some));
}
