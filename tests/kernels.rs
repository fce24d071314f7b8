//! Every registered microkernel through the shared tester (DESIGN.md §6), and the
//! dispatch table and its `QKERN_MAX_ISA` cap (DESIGN.md §5).

mod common;

use std::time::Instant;

use qkern::dispatch::{self, KernelTable, cpu, parse_max_isa};
use qkern::{Context, Error, Isa};

#[test]
fn every_gemm_kernel_matches_the_reference() {
    let kernels = dispatch::gemm_kernels();
    assert!(!kernels.is_empty(), "no GEMM kernel registered");
    let mut ran = 0;
    for k in &kernels {
        if !common::test_tier(&format!("gemm kernel {}", k.name), k.isa) {
            continue;
        }
        let t0 = Instant::now();
        // SAFETY: `isa_or_skip` just confirmed that this CPU runs `k.isa`, and `k` comes
        // from the registered list, whose entry points implement the `GemmUkernelFn`
        // contract. The tester builds only arguments within that contract.
        let s = unsafe { qkern_kernels::testing::check_gemm_ukernel(k) };
        eprintln!(
            "{}: {} combos, {} cases, {} calls in {:?}",
            s.kernel,
            s.combos,
            s.cases,
            s.calls,
            t0.elapsed()
        );
        assert_eq!(s.kernel, k.name);
        let entries = |run: &[[Option<qkern_kernels::GemmUkernelFn>; 2]; 2]| run.iter().flatten().filter(|f| f.is_some()).count();
        // Raw-row entry points, plus the packed-A ones where the kernel has them.
        let have = entries(&k.run) + k.packed_a.as_ref().map_or(0, |p| entries(&p.run));
        assert_eq!(s.combos, have, "{}: every signedness entry must be tested", k.name);
        assert!(s.cases > 0 && s.calls >= s.cases, "{}: the tester ran nothing", k.name);
        ran += 1;
    }
    // The portable kernel runs everywhere.
    assert!(ran >= 1 || common::tiers_filtered());
}

/// Every indirect GEMM entry (the convolution's in-place rows) against the reference,
/// and the tiers that must have one do (the portable twins, both AVX2 kernels, the
/// AVX-512 VNNI default and the AArch64 NEON, dotprod and i8mm kernels).
#[test]
fn every_indirect_gemm_entry_matches_the_reference() {
    let kernels = dispatch::gemm_kernels();
    for name in [
        "qx8_gemm_4x16c4__generic",
        "qu8s8_gemm_4x16c4__generic",
        "qx8_gemm_6x16c2__avx2",
        "qx8_gemm_4x16c4_maddubs__avx2",
        "qu8s8_gemm_6x16c4__avxvnni",
        "qu8s8_gemm_6x16c4__avx512vnni_ymm",
        "qu8s8_gemm_8x32c4__avx512vnni",
        "qx8_gemm_4x16c1__neon",
        "qx8_gemm_8x8c4__dotprod",
        "qx8_gemm_8x8c8__i8mm",
    ] {
        if let Some(k) = kernels.iter().find(|k| k.name == name) {
            assert!(k.indirect.is_some(), "{name} lost its indirect entry");
        }
    }
    let mut ran = 0;
    for k in kernels.iter().filter(|k| k.indirect.is_some()) {
        if !common::test_tier(&format!("indirect gemm kernel {}", k.name), k.isa) {
            continue;
        }
        let t0 = Instant::now();
        // SAFETY: the CPU runs `k.isa` (just checked) and `k` is a registered kernel whose
        // indirect entries implement the `IgemmArgs` contract; the tester builds only
        // arguments within it.
        let s = unsafe { qkern_kernels::testing::check_igemm_ukernel(k) };
        eprintln!("{} (indirect): {} combos, {} calls in {:?}", s.kernel, s.combos, s.calls, t0.elapsed());
        let have = k.indirect.map_or(0, |e| e.run.iter().flatten().filter(|f| f.is_some()).count());
        assert_eq!(s.combos, have, "{}: every indirect entry must be tested", k.name);
        assert!(s.calls > 0, "{}: the tester ran nothing", k.name);
        ran += 1;
    }
    assert!(ran >= 2 || common::tiers_filtered(), "the portable indirect kernels run everywhere");
}

/// The GEMV kernels (`mr ≤ 4`, used for calls of at most 4 rows) through the same
/// tester, and each reads the packed weights of some registered GEMM kernel (else the
/// driver could never pick it).
#[test]
fn every_gemv_kernel_matches_the_reference() {
    let gemm = dispatch::gemm_kernels();
    for k in &dispatch::gemv_kernels() {
        assert!(k.mr >= 1 && k.mr <= 4, "{}: a GEMV kernel has at most 4 rows", k.name);
        assert!(k.name.contains(&format!("{}x{}c{}", k.mr, k.nr(), k.format.kr)), "{}: name lacks its tile", k.name);
        assert!(
            gemm.iter().any(|g| g.isa == k.isa && dispatch::gemv_reads(k, g)),
            "{}: reads no GEMM kernel's packed weights",
            k.name
        );
        if !common::test_tier(&format!("gemv kernel {}", k.name), k.isa) {
            continue;
        }
        let t0 = Instant::now();
        // SAFETY: as in `every_gemm_kernel_matches_the_reference`: the CPU runs `k.isa`
        // and `k` is a registered kernel implementing the `GemmUkernelFn` contract.
        let s = unsafe { qkern_kernels::testing::check_gemm_ukernel(k) };
        eprintln!("{}: {} combos, {} cases, {} calls in {:?}", s.kernel, s.combos, s.cases, s.calls, t0.elapsed());
        let have = k.run.iter().flatten().filter(|f| f.is_some()).count();
        assert_eq!(s.combos, have, "{}: every signedness entry must be tested", k.name);
        assert!(s.cases > 0 && s.calls >= s.cases, "{}: the tester ran nothing", k.name);
    }
}

#[test]
fn gemm_kernels_are_well_formed() {
    let kernels = dispatch::gemm_kernels();
    for (i, k) in kernels.iter().enumerate() {
        assert!(k.mr >= 1 && k.nr() >= 1 && k.format.kr >= 1, "{}: empty tile", k.name);
        assert!(
            kernels[..i].iter().all(|o| o.name != k.name),
            "{}: registered twice",
            k.name
        );
        // XNNPACK-style names carry the tile, so reports and benches name it right.
        let tile = format!("{}x{}c{}", k.mr, k.nr(), k.format.kr);
        let tile_c1 = format!("{}x{}_", k.mr, k.nr());
        assert!(
            k.name.contains(&tile) || (k.format.kr == 1 && k.name.contains(&tile_c1)),
            "{}: name does not carry the tile {tile}",
            k.name
        );
        assert!(
            k.run.iter().flatten().any(Option::is_some),
            "{}: no entry point",
            k.name
        );
    }
    // The portable kernel handles every combination: it is what every CPU falls back to.
    let generic = kernels
        .iter()
        .find(|k| k.isa == Isa::Scalar)
        .expect("a scalar GEMM kernel");
    assert!(
        generic.run.iter().flatten().all(Option::is_some),
        "{} lacks a signedness combination",
        generic.name
    );
}

#[test]
fn cpu_features_are_consistent() {
    let c = cpu();
    assert_eq!(c.isas.first(), Some(&Isa::Scalar), "scalar must always be available");
    assert!(
        c.isas.windows(2).all(|w| w[0] < w[1]),
        "tiers out of order: {:?}",
        c.isas
    );
    assert_eq!(c.best(), *c.isas.last().unwrap());
    assert!(
        c.isas.iter().all(|&i| common::native_arch(i)),
        "a tier of another architecture: {:?}",
        c.isas
    );
}

#[test]
fn kernel_table_picks_the_best_kernel_within_the_cap() {
    let kernels = dispatch::gemm_kernels();
    for cap in Isa::ALL {
        match KernelTable::for_isa(cap) {
            Ok(t) => {
                assert!(cpu().has(cap), "for_isa({cap:?}) succeeded on a CPU without it");
                assert_eq!(t.isa, cap);
                assert!(
                    t.gemm.isa.within(cap),
                    "{}: {:?} is above the cap {cap:?}",
                    t.gemm.name,
                    t.gemm.isa
                );
                assert!(cpu().has(t.gemm.isa));
                // `gemm` is the best kernel that takes any weights; a conditional one
                // (`max_abs_stored_b`) is only a candidate the packer may prefer.
                let best = kernels
                    .iter()
                    .rfind(|k| k.isa.within(cap) && cpu().has(k.isa) && k.max_abs_stored_b.is_none())
                    .unwrap();
                assert_eq!(t.gemm.name, best.name, "cap {cap:?}: not the best eligible kernel");
                // `gemv`: the best GEMV kernel that reads `gemm`'s packed weights, else `gemm`.
                let gemv = dispatch::gemv_kernels()
                    .into_iter()
                    .rfind(|k| k.isa.within(cap) && cpu().has(k.isa) && dispatch::gemv_reads(k, best))
                    .map_or(best.name, |k| k.name);
                assert_eq!(t.chosen()[..2], [("gemm", best.name), ("gemv", gemv)]);
                let ctx = Context::for_isa(cap).unwrap();
                assert_eq!(ctx.kernels().gemm.name, best.name);
                assert_eq!(ctx.kernels().isa, cap);
            }
            Err(e) => {
                assert!(matches!(e, Error::IsaUnavailable(_)), "for_isa({cap:?}): {e:?}");
                assert!(!cpu().has(cap), "for_isa({cap:?}) failed on a CPU that has it: {e}");
                assert!(matches!(Context::for_isa(cap), Err(Error::IsaUnavailable(_))));
                if common::native_arch(cap) {
                    common::isa_or_skip("KernelTable::for_isa", cap);
                }
            }
        }
    }
}

#[test]
fn max_isa_parser_accepts_every_tier_name() {
    for isa in Isa::ALL {
        let name = isa.name();
        assert_eq!(parse_max_isa(name), Ok(Some(isa)));
        assert_eq!(parse_max_isa(&name.to_ascii_uppercase()), Ok(Some(isa)));
        assert_eq!(parse_max_isa(&format!("  {name}\t\n")), Ok(Some(isa)));
        assert_eq!(Isa::from_name(name), Some(isa));
    }
    assert_eq!(parse_max_isa(""), Ok(None));
    assert_eq!(parse_max_isa(" \t "), Ok(None));
}

#[test]
fn max_isa_parser_rejects_bad_names() {
    for bad in [
        "avx",
        "avx512",
        "avx-512",
        "avx512_vnni",
        "avx512vnni2",
        "sse4.2",
        "x86_64",
        "native",
        "0",
        "avx2,avx512vnni",
        "avx2 neon",
        "avx2;",
        "\"avx2\"",
        "avx2\0",
        "ａvx2", // full-width letter: not an ASCII case variant
        "scalär",
    ] {
        match parse_max_isa(bad) {
            Err(Error::InvalidParameter(msg)) => {
                assert!(
                    msg.contains("QKERN_MAX_ISA"),
                    "{bad:?}: message does not name the variable: {msg}"
                );
                assert!(
                    msg.contains(&format!("{bad:?}")),
                    "{bad:?}: message does not quote the value: {msg}"
                );
            }
            other => panic!("QKERN_MAX_ISA={bad:?} gave {other:?}, expected InvalidParameter"),
        }
    }
}

/// Reads (never sets) the environment, so it cannot race other tests: whatever
/// `QKERN_MAX_ISA` says in this run, the default context must follow it.
#[test]
fn default_context_follows_qkern_max_isa() {
    let raw = std::env::var("QKERN_MAX_ISA").ok();
    let parsed = dispatch::max_isa_from_env();
    if let Some(raw) = &raw {
        assert_eq!(parsed, parse_max_isa(raw));
    } else {
        assert_eq!(parsed, Ok(None));
    }
    match parsed {
        Ok(None) => assert_eq!(Context::new().unwrap().kernels().isa, cpu().best()),
        Ok(Some(cap)) if cpu().has(cap) => {
            let ctx = Context::new().unwrap();
            assert_eq!(ctx.kernels().isa, cap);
            assert!(ctx.kernels().gemm.isa.within(cap));
        }
        Ok(Some(_)) => assert!(matches!(Context::new(), Err(Error::IsaUnavailable(_)))),
        Err(e) => assert_eq!(Context::new().unwrap_err(), e),
    }
}

#[test]
fn required_isas_are_available() {
    for isa in common::required_isas() {
        assert!(common::isa_or_skip("QKERN_REQUIRE_ISA", isa));
    }
}
