//! Peak probe for AVX-VNNI's VEX `vpdpbusd ymm`: a long run of independent
//! multiply-adds and nothing else, so `2 · MACs / seconds` is the int8 limit of one core
//! on an AVX-VNNI host. (The EVEX ymm form is probed by
//! `avx512vnni::peak::vpdpbusd_ymm_peak`.)

use core::arch::asm;

/// Independent accumulators per iteration: 14 of the 16 ymm registers (two hold the
/// operands), more than latency × throughput of `vpdpbusd ymm` (5 cycles × 2 per cycle on
/// Alder Lake / Sapphire Rapids).
pub const PEAK_ACCUMULATORS: usize = 14;

/// Multiply-accumulates one `vpdpbusd ymm` performs: 8 lanes × 4 u8·s8 products.
pub const MACS_PER_VPDPBUSD_YMM: u64 = 32;

/// Runs `iters` iterations of [`PEAK_ACCUMULATORS`] independent VEX `vpdpbusd ymm` and
/// returns the multiply-accumulates performed (`iters · 14 · 32`). One `asm!` block, no
/// memory.
///
/// # Safety
/// The CPU must support AVX-VNNI (check `qkern::dispatch::cpu()` first).
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn vpdpbusd_ymm_vex_peak(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // SAFETY: only registers are touched (ymm0–ymm15 declared clobbered, the counter
    // in/out); the caller guarantees the instructions exist on this CPU.
    unsafe {
        asm!(
            "vpcmpeqd ymm14, ymm14, ymm14", // all ones: u8 255 × s8 −1
            "vpcmpeqd ymm15, ymm15, ymm15",
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
            "vpxor ymm12, ymm12, ymm12",
            "vpxor ymm13, ymm13, ymm13",
            ".p2align 5",
            "2:",
            "{{vex}} vpdpbusd ymm0, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm1, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm2, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm3, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm4, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm5, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm6, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm7, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm8, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm9, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm10, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm11, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm12, ymm14, ymm15",
            "{{vex}} vpdpbusd ymm13, ymm14, ymm15",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nomem, nostack),
        );
    }
    iters * PEAK_ACCUMULATORS as u64 * MACS_PER_VPDPBUSD_YMM
}
