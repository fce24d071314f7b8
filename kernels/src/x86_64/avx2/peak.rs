//! Throughput probes for the two AVX2 int8 paths, so that "% of peak" is measured on the
//! host instead of assumed (DESIGN.md §7).
//!
//! Each probe runs a register-only loop of independent multiply-accumulate chains (no
//! loads, no stores, no dependency longer than one accumulator) and returns the number
//! of int8 multiply-adds it performed; the caller times it. The loops are `asm!` so the
//! compiler can neither hoist the loop-invariant multiplies nor change the instruction
//! mix. Every operand is zero, so the values never matter.
//!
//! * [`exact_path`]: `vpmaddwd` + `vpaddd`, 16 MACs per pair — the exact kernel's
//!   arithmetic without its operand widening.
//! * [`maddwd_only`]: bare independent `vpmaddwd`, 16 MACs each — the multiplier limit.
//! * [`maddubs_path`]: `vpmaddubsw` + `vpmaddwd` (by ones) + `vpaddd`, 32 MACs per
//!   triple — the fast kernel's arithmetic.
//!
//! GOPS = `2 · returned MACs / seconds / 1e9`.

use core::arch::asm;

/// Independent accumulator chains per loop iteration (more than the multiply latency ×
/// issue width of any AVX2 core, so throughput, not latency, is measured).
const CHAINS: u64 = 12;

/// Runs `iters` iterations of 12 independent `vpmaddwd` + `vpaddd` pairs; returns the
/// int8 MACs performed (`iters · 12 · 16`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn exact_path(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // SAFETY: register-only AVX2 instructions (the caller guarantees AVX2); every
    // register written is declared clobbered; `rcx` counts down to zero.
    unsafe {
        asm!(
            "vpxor ymm0, ymm0, ymm0",
            "vpxor ymm1, ymm1, ymm1",
            "vpxor ymm2, ymm2, ymm2",
            "vpxor ymm3, ymm3, ymm3",
            "vpxor ymm4, ymm4, ymm4",
            "vpxor ymm5, ymm5, ymm5",
            "vpxor ymm6, ymm6, ymm6",
            "vpxor ymm7, ymm7, ymm7",
            "vpxor ymm8, ymm8, ymm8",
            "vpxor ymm9, ymm9, ymm9",
            "vpxor ymm10, ymm10, ymm10",
            "vpxor ymm11, ymm11, ymm11",
            "vpxor ymm14, ymm14, ymm14",
            "vpxor ymm15, ymm15, ymm15",
            "2:",
            "vpmaddwd ymm12, ymm14, ymm15",
            "vpaddd ymm0, ymm0, ymm12",
            "vpmaddwd ymm13, ymm14, ymm15",
            "vpaddd ymm1, ymm1, ymm13",
            "vpmaddwd ymm12, ymm14, ymm15",
            "vpaddd ymm2, ymm2, ymm12",
            "vpmaddwd ymm13, ymm14, ymm15",
            "vpaddd ymm3, ymm3, ymm13",
            "vpmaddwd ymm12, ymm14, ymm15",
            "vpaddd ymm4, ymm4, ymm12",
            "vpmaddwd ymm13, ymm14, ymm15",
            "vpaddd ymm5, ymm5, ymm13",
            "vpmaddwd ymm12, ymm14, ymm15",
            "vpaddd ymm6, ymm6, ymm12",
            "vpmaddwd ymm13, ymm14, ymm15",
            "vpaddd ymm7, ymm7, ymm13",
            "vpmaddwd ymm12, ymm14, ymm15",
            "vpaddd ymm8, ymm8, ymm12",
            "vpmaddwd ymm13, ymm14, ymm15",
            "vpaddd ymm9, ymm9, ymm13",
            "vpmaddwd ymm12, ymm14, ymm15",
            "vpaddd ymm10, ymm10, ymm12",
            "vpmaddwd ymm13, ymm14, ymm15",
            "vpaddd ymm11, ymm11, ymm13",
            "dec rcx",
            "jnz 2b",
            inout("rcx") iters => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, nomem),
        );
    }
    iters * CHAINS * 16
}

/// Runs `iters` iterations of 12 independent `vpmaddwd` (no accumulation); returns the
/// int8 MACs performed (`iters · 12 · 16`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn maddwd_only(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // SAFETY: as in `exact_path`.
    unsafe {
        asm!(
            "vpxor ymm14, ymm14, ymm14",
            "vpxor ymm15, ymm15, ymm15",
            "2:",
            "vpmaddwd ymm0, ymm14, ymm15",
            "vpmaddwd ymm1, ymm14, ymm15",
            "vpmaddwd ymm2, ymm14, ymm15",
            "vpmaddwd ymm3, ymm14, ymm15",
            "vpmaddwd ymm4, ymm14, ymm15",
            "vpmaddwd ymm5, ymm14, ymm15",
            "vpmaddwd ymm6, ymm14, ymm15",
            "vpmaddwd ymm7, ymm14, ymm15",
            "vpmaddwd ymm8, ymm14, ymm15",
            "vpmaddwd ymm9, ymm14, ymm15",
            "vpmaddwd ymm10, ymm14, ymm15",
            "vpmaddwd ymm11, ymm14, ymm15",
            "dec rcx",
            "jnz 2b",
            inout("rcx") iters => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm14") _, out("ymm15") _,
            options(nostack, nomem),
        );
    }
    iters * CHAINS * 16
}

/// Runs `iters` iterations of 8 independent `vpmaddubsw` + `vpmaddwd` (by ones) +
/// `vpaddd` triples; returns the int8 MACs performed (`iters · 8 · 32`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn maddubs_path(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // SAFETY: as in `exact_path`.
    unsafe {
        asm!(
            "vpxor ymm0, ymm0, ymm0",
            "vpxor ymm1, ymm1, ymm1",
            "vpxor ymm2, ymm2, ymm2",
            "vpxor ymm3, ymm3, ymm3",
            "vpxor ymm4, ymm4, ymm4",
            "vpxor ymm5, ymm5, ymm5",
            "vpxor ymm6, ymm6, ymm6",
            "vpxor ymm7, ymm7, ymm7",
            "vpxor ymm13, ymm13, ymm13",
            "vpxor ymm14, ymm14, ymm14",
            "vpxor ymm15, ymm15, ymm15",
            "2:",
            "vpmaddubsw ymm8, ymm14, ymm15",
            "vpmaddwd ymm8, ymm8, ymm13",
            "vpaddd ymm0, ymm0, ymm8",
            "vpmaddubsw ymm9, ymm14, ymm15",
            "vpmaddwd ymm9, ymm9, ymm13",
            "vpaddd ymm1, ymm1, ymm9",
            "vpmaddubsw ymm10, ymm14, ymm15",
            "vpmaddwd ymm10, ymm10, ymm13",
            "vpaddd ymm2, ymm2, ymm10",
            "vpmaddubsw ymm11, ymm14, ymm15",
            "vpmaddwd ymm11, ymm11, ymm13",
            "vpaddd ymm3, ymm3, ymm11",
            "vpmaddubsw ymm12, ymm14, ymm15",
            "vpmaddwd ymm12, ymm12, ymm13",
            "vpaddd ymm4, ymm4, ymm12",
            "vpmaddubsw ymm8, ymm14, ymm15",
            "vpmaddwd ymm8, ymm8, ymm13",
            "vpaddd ymm5, ymm5, ymm8",
            "vpmaddubsw ymm9, ymm14, ymm15",
            "vpmaddwd ymm9, ymm9, ymm13",
            "vpaddd ymm6, ymm6, ymm9",
            "vpmaddubsw ymm10, ymm14, ymm15",
            "vpmaddwd ymm10, ymm10, ymm13",
            "vpaddd ymm7, ymm7, ymm10",
            "dec rcx",
            "jnz 2b",
            inout("rcx") iters => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, nomem),
        );
    }
    iters * 8 * 32
}
