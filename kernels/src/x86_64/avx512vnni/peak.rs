//! Peak probe for `vpdpbusd` on zmm: a long run of independent multiply-adds and nothing
//! else, so `2 · MACs / seconds` is the int8 limit of one core on this host (DESIGN.md §7
//! quotes kernel results as a fraction of it).

use core::arch::asm;

/// Independent accumulators per loop iteration: more than `latency × throughput` of
/// `vpdpbusd` on every AVX-512 VNNI core known (Intel: 5 cycles × 1–2 per cycle; AMD
/// Zen 4/5: 4 cycles × 1–2 per cycle), so the loop is bound by throughput alone.
pub const PEAK_ACCUMULATORS: usize = 16;

/// Multiply-accumulates one `vpdpbusd zmm` performs: 16 lanes × 4 u8·s8 products.
pub const MACS_PER_VPDPBUSD_ZMM: u64 = 64;

/// Runs `iters` iterations of [`PEAK_ACCUMULATORS`] independent `vpdpbusd zmm` and
/// returns the multiply-accumulates performed (`iters · 16 · 64`). Time it from outside:
/// GOPS = `2 · MACs / seconds / 1e9`. The loop is one `asm!` block, so the compiler can
/// neither drop nor reorder the work, and it touches no memory.
///
/// # Safety
/// The CPU must support AVX-512 F and AVX-512 VNNI (check with
/// `is_x86_feature_detected!` or `qkern::dispatch::cpu()` first).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vpdpbusd_zmm_peak(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // SAFETY: only registers are touched (zmm0–zmm17 declared clobbered, the counter
    // declared in/out); the caller guarantees the instructions exist on this CPU.
    unsafe {
        asm!(
            "vpternlogd zmm16, zmm16, zmm16, 0xff", // all ones: u8 255 × s8 −1
            "vpternlogd zmm17, zmm17, zmm17, 0xff",
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "vpxord zmm14, zmm14, zmm14",
            "vpxord zmm15, zmm15, zmm15",
            ".p2align 5",
            "2:",
            "vpdpbusd zmm0, zmm16, zmm17",
            "vpdpbusd zmm1, zmm16, zmm17",
            "vpdpbusd zmm2, zmm16, zmm17",
            "vpdpbusd zmm3, zmm16, zmm17",
            "vpdpbusd zmm4, zmm16, zmm17",
            "vpdpbusd zmm5, zmm16, zmm17",
            "vpdpbusd zmm6, zmm16, zmm17",
            "vpdpbusd zmm7, zmm16, zmm17",
            "vpdpbusd zmm8, zmm16, zmm17",
            "vpdpbusd zmm9, zmm16, zmm17",
            "vpdpbusd zmm10, zmm16, zmm17",
            "vpdpbusd zmm11, zmm16, zmm17",
            "vpdpbusd zmm12, zmm16, zmm17",
            "vpdpbusd zmm13, zmm16, zmm17",
            "vpdpbusd zmm14, zmm16, zmm17",
            "vpdpbusd zmm15, zmm16, zmm17",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _,
            options(nomem, nostack),
        );
    }
    iters * PEAK_ACCUMULATORS as u64 * MACS_PER_VPDPBUSD_ZMM
}

/// The same probe on ymm (the EVEX-encoded AVX-512VL form): 32 MACs per instruction.
/// Comparing it with [`vpdpbusd_zmm_peak`] shows whether the core splits zmm operations
/// into two 256-bit halves (AMD Zen 4) or runs them whole (Intel).
///
/// # Safety
/// As [`vpdpbusd_zmm_peak`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vpdpbusd_ymm_peak(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // SAFETY: as in `vpdpbusd_zmm_peak`: registers only, declared clobbered.
    unsafe {
        asm!(
            "vpternlogd ymm16, ymm16, ymm16, 0xff",
            "vpternlogd ymm17, ymm17, ymm17, 0xff",
            "vpxord ymm0, ymm0, ymm0",
            "vpxord ymm1, ymm1, ymm1",
            "vpxord ymm2, ymm2, ymm2",
            "vpxord ymm3, ymm3, ymm3",
            "vpxord ymm4, ymm4, ymm4",
            "vpxord ymm5, ymm5, ymm5",
            "vpxord ymm6, ymm6, ymm6",
            "vpxord ymm7, ymm7, ymm7",
            "vpxord ymm8, ymm8, ymm8",
            "vpxord ymm9, ymm9, ymm9",
            "vpxord ymm10, ymm10, ymm10",
            "vpxord ymm11, ymm11, ymm11",
            "vpxord ymm12, ymm12, ymm12",
            "vpxord ymm13, ymm13, ymm13",
            "vpxord ymm14, ymm14, ymm14",
            "vpxord ymm15, ymm15, ymm15",
            ".p2align 5",
            "2:",
            "vpdpbusd ymm0, ymm16, ymm17",
            "vpdpbusd ymm1, ymm16, ymm17",
            "vpdpbusd ymm2, ymm16, ymm17",
            "vpdpbusd ymm3, ymm16, ymm17",
            "vpdpbusd ymm4, ymm16, ymm17",
            "vpdpbusd ymm5, ymm16, ymm17",
            "vpdpbusd ymm6, ymm16, ymm17",
            "vpdpbusd ymm7, ymm16, ymm17",
            "vpdpbusd ymm8, ymm16, ymm17",
            "vpdpbusd ymm9, ymm16, ymm17",
            "vpdpbusd ymm10, ymm16, ymm17",
            "vpdpbusd ymm11, ymm16, ymm17",
            "vpdpbusd ymm12, ymm16, ymm17",
            "vpdpbusd ymm13, ymm16, ymm17",
            "vpdpbusd ymm14, ymm16, ymm17",
            "vpdpbusd ymm15, ymm16, ymm17",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _,
            options(nomem, nostack),
        );
    }
    iters * PEAK_ACCUMULATORS as u64 * (MACS_PER_VPDPBUSD_ZMM / 2)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::time::Instant;

    /// Times the probes (best of several runs: the host is shared) and prints GOPS;
    /// `cargo test --release -p qkern-kernels peak -- --nocapture` shows the numbers.
    #[test]
    fn peak_probe_runs_and_reports() {
        if !(std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vnni"))
        {
            std::eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        // SAFETY: the features were just detected.
        assert_eq!(unsafe { vpdpbusd_zmm_peak(0) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { vpdpbusd_zmm_peak(3) }, 3 * 16 * 64);
        for (name, f) in [
            ("zmm", vpdpbusd_zmm_peak as unsafe fn(u64) -> u64),
            ("ymm", vpdpbusd_ymm_peak),
        ] {
            let mut best = 0f64;
            for _ in 0..7 {
                let t = Instant::now();
                // SAFETY: as above.
                let macs = unsafe { f(20_000_000) };
                best = best.max(2.0 * macs as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
            std::eprintln!("vpdpbusd {name} peak: {best:.1} GOPS (best of 7)");
            assert!(best > 0.0);
        }
    }
}
