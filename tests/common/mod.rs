//! Helpers shared by the integration-test binaries (`mod common;` in each).
//!
//! Not every binary uses every helper.
#![allow(dead_code)]

use std::io::Write;

use qkern::Isa;

/// The ISAs listed in `QKERN_REQUIRE_ISA` (comma-separated, case-insensitive). Panics on
/// a name that is not an ISA: a typo there would otherwise turn a required tier into a
/// silent skip.
pub fn required_isas() -> Vec<Isa> {
    let Ok(list) = std::env::var("QKERN_REQUIRE_ISA") else {
        return Vec::new();
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Isa::from_name(s).unwrap_or_else(|| panic!("QKERN_REQUIRE_ISA names an unknown ISA {s:?}")))
        .collect()
}

/// Whether `isa` runs on this CPU. If not, prints `SKIP <what>: <isa> not available on
/// this CPU` and returns false — or panics when `QKERN_REQUIRE_ISA` lists `isa`, so CI on
/// a host that must have the tier fails instead of skipping.
///
/// The message goes straight to the process's stderr, past the test harness's capture,
/// so skips are visible in an ordinary `cargo test` run.
pub fn isa_or_skip(what: &str, isa: Isa) -> bool {
    if qkern::dispatch::cpu().has(isa) {
        return true;
    }
    if required_isas().contains(&isa) {
        panic!(
            "{what}: {} is required by QKERN_REQUIRE_ISA but not available on this CPU",
            isa.name()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {what}: {} not available on this CPU",
        isa.name()
    );
    false
}

/// Whether `QKERN_TEST_TIERS` (comma-separated tier names; unset = every tier) lets the
/// tier sweeps test `isa`. CI sets it per qemu CPU model to the tiers that model adds
/// (cortex-a53: scalar,neon; neoverse-n1: dotprod; max: i8mm): qemu emulates an
/// instruction the same way whatever `-cpu` says, so re-running the lower tiers' kernels
/// under every model repeats identical work. Dispatch and `QKERN_REQUIRE_ISA` checks are
/// not filtered. A name that is not an ISA panics, as in `QKERN_REQUIRE_ISA`.
pub fn tier_selected(what: &str, isa: Isa) -> bool {
    static TIERS: std::sync::OnceLock<Option<Vec<Isa>>> = std::sync::OnceLock::new();
    let tiers = TIERS.get_or_init(|| {
        let list = std::env::var("QKERN_TEST_TIERS").ok()?;
        Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Isa::from_name(s).unwrap_or_else(|| panic!("QKERN_TEST_TIERS names an unknown ISA {s:?}")))
                .collect(),
        )
    });
    match tiers {
        Some(t) if !t.contains(&isa) => {
            let _ = writeln!(std::io::stderr(), "SKIP {what}: {} not in QKERN_TEST_TIERS", isa.name());
            false
        }
        _ => true,
    }
}

/// Whether `QKERN_TEST_TIERS` narrows the sweeps (then a sweep may legitimately test no
/// kernel of a family on this run).
pub fn tiers_filtered() -> bool {
    std::env::var_os("QKERN_TEST_TIERS").is_some()
}

/// [`isa_or_skip`] and then [`tier_selected`]: whether a tier sweep tests `isa` here.
pub fn test_tier(what: &str, isa: Isa) -> bool {
    isa_or_skip(what, isa) && tier_selected(what, isa)
}

/// Whether `isa` belongs to the architecture this binary was built for (scalar belongs
/// to all): tiers of another architecture are not "skipped", they do not exist here.
pub fn native_arch(isa: Isa) -> bool {
    let arch = (isa as u8) >> 4; // the `Isa` discriminants group tiers by architecture
    isa == Isa::Scalar || (cfg!(target_arch = "x86_64") && arch == 0) || (cfg!(target_arch = "aarch64") && arch == 1)
}

/// Every tier of this architecture that this CPU runs and `QKERN_TEST_TIERS` selects (all
/// of them, at least `Scalar`, when it is unset), for tests that sweep the tiers. The first call prints a SKIP line (or fails, per `QKERN_REQUIRE_ISA`)
/// for each tier it lacks; later calls reuse the answer quietly.
pub fn available_isas() -> Vec<Isa> {
    static ISAS: std::sync::OnceLock<Vec<Isa>> = std::sync::OnceLock::new();
    ISAS.get_or_init(|| {
        let what = concat!("tier sweep in tests/", env!("CARGO_CRATE_NAME"), ".rs");
        Isa::ALL
            .iter()
            .copied()
            .filter(|&i| native_arch(i) && test_tier(what, i))
            .collect()
    })
    .clone()
}

/// Runs one full `mr × nr` tile of `kernel` directly: `mr` rows of `k` activation bytes
/// (the entry for `a_signed` activations and i8-stored weights), the stored weights
/// `b_stored` (`k × nr`, row-major) packed in the kernel's format, no zero points, I32
/// output. Returns the tile. For the tests that show a conditional kernel going wrong
/// past its `max_abs_stored_b`: such weights give wrong values, but every access stays
/// inside the buffers.
///
/// # Safety
/// The CPU runs `kernel.isa`.
pub unsafe fn run_tile_i32(
    kernel: &qkern_kernels::GemmUkernel,
    a: &[u8],
    a_signed: bool,
    b_stored: &[i8],
    k: usize,
) -> Vec<i32> {
    use qkern_kernels::{GemmArgs, OutputStage, pack::pack_b_kgroups};
    let (mr, nr) = (kernel.mr, kernel.nr());
    assert_eq!((a.len(), b_stored.len()), (mr * k, k * nr));
    let mut packed = vec![0u8; kernel.format.packed_bytes(k, nr)];
    pack_b_kgroups(kernel.format, b_stored, k, nr, nr, 0, &mut packed);
    let col_offset = vec![0i32; nr];
    let mut c = vec![0i32; mr * nr];
    let args = GemmArgs {
        m: mr,
        n: nr,
        k,
        a: a.as_ptr(),
        lda: k,
        b: packed.as_ptr(),
        a_row_sum: std::ptr::null(),
        b_zero_point: std::ptr::null(),
        c: c.as_mut_ptr().cast(),
        ldc: nr,
        out: OutputStage::raw_i32(col_offset.as_ptr()),
    };
    let f = kernel.run[a_signed as usize][1].expect("an entry for i8-stored weights");
    // SAFETY: the CPU runs the kernel's ISA (caller). `args` is one full tile: `mr` rows
    // of `k` activations, a panel packed in the kernel's format, `nr` column offsets, an
    // `mr × nr` i32 output; no zero points.
    unsafe { f(&args) };
    c
}
