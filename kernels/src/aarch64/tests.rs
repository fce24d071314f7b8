//! The NEON epilogue ([`store_tile_neon`](super::store_tile_neon)) against the scalar
//! reference on the inputs the shared tester (realistic GEMM cases, TFLite-range
//! multipliers) rarely reaches: the fixed-point requantization at every corner —
//! accumulators and multipliers at the i32 extremes (`INT32_MIN·INT32_MIN`, the one
//! product `sqrdmulh` saturates), small accumulators whose products land on exact `.5`
//! ties of both signs, shifts at and past both ends of every range the code
//! distinguishes, zero points and clamps beyond the output type. With `k = 0` the
//! accumulator of column `j` is exactly `col_offset[j]`, so every value can be chosen.

extern crate std;

use std::vec;
use std::vec::Vec;

use super::gemm_kernels;
use crate::generic::gemm::output_value;
use crate::types::{GemmArgs, GemmUkernel, Isa, OutputKind, OutputStage, QuantizedMultiplier, RequantMode};

fn runs_here(k: &GemmUkernel) -> bool {
    match k.isa {
        Isa::Neon => true,
        Isa::Dotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
        Isa::I8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
        _ => false,
    }
}

/// Accumulators: the extremes, every small value (ties after the products below), and
/// values around powers of two.
fn accs() -> Vec<i32> {
    let mut v: Vec<i32> = (-24..=24).collect();
    v.extend_from_slice(&[i32::MIN, i32::MIN + 1, i32::MIN + 2, i32::MAX, i32::MAX - 1, -(1 << 30), 1 << 30, (1 << 30) + 1]);
    v.extend_from_slice(&[-(1 << 16) - 1, -(1 << 16), 1 << 16, 3 << 20, -(3 << 20), 1_000_001, -1_000_001]);
    v
}

/// Multipliers: `2^30` (one half: ties), the extremes, values just off them, and
/// negative ones (TFLite keeps `−2^31` for a negative real).
const MULTS: &[i32] = &[1 << 30, i32::MIN, i32::MAX, (1 << 30) + 1, -(1 << 30), i32::MIN + 1, 0, 1, -1, 3 << 28, 1_518_500_250, -1_518_500_250];

/// Shifts: every value the paths treat differently (`r = 0`, `r = 32` and beyond for the
/// narrow path; `s` saturating at −64 and 63 for the wide one; the i32 extremes).
fn shifts() -> Vec<i32> {
    let mut v: Vec<i32> = (-34..=3).collect();
    v.extend_from_slice(&[i32::MIN, i32::MIN + 1, -200, -96, -95, -94, -93, -66, -65, -64, -63, -62, -61, -40]);
    v.extend_from_slice(&[8, 20, 29, 30, 31, 32, 33, 40, 61, 62, 63, 64, 93, 94, 95, 96, 200, i32::MAX - 1, i32::MAX]);
    v
}

const ZPS: &[i32] = &[0, -128, 127, 255, -1, 1, i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 1 << 24, -(1 << 24)];

/// Runs every entry of every AArch64 kernel this CPU has on one stage with `k = 0` and
/// per-column tables, in tiles of `nr` columns (and a partial last one), and compares
/// every byte with `output_value`, plus no write outside the tile.
fn check_stage(mode: RequantMode, kind: OutputKind, accs: &[i32], qm: &[QuantizedMultiplier], zp: i32, qmin: i32, qmax: i32) {
    let dummy = [0u8; 64];
    const GUARD: usize = 16;
    // The reference does not depend on the row: once per column.
    let stage_of = |j0: usize| OutputStage {
        kind,
        mode,
        col_offset: accs[j0..].as_ptr(),
        scale: core::ptr::null(),
        bias_f32: core::ptr::null(),
        qmult: qm[j0..].as_ptr(),
        out_zero_point: zp,
        qmin,
        qmax,
    };
    let want: Vec<u8> = (0..accs.len()).map(|j| output_value(accs[j], 0, &stage_of(j)) as u8).collect();
    for kernel in gemm_kernels().filter(runs_here) {
        let (mr, nr) = (kernel.mr, kernel.nr());
        let mut j0 = 0;
        // Every column once; the last tile may be partial, and the tile before it is
        // offset so that groups of 4 straddle the per-column pattern differently.
        while j0 < accs.len() {
            let n = nr.min(accs.len() - j0);
            let m = if j0 % 3 == 0 { mr } else { 1 };
            let ldc = n + 3;
            let mut c = vec![0xa5u8; GUARD + m * ldc + GUARD];
            let out = stage_of(j0);
            let args = GemmArgs {
                m,
                n,
                k: 0,
                a: dummy.as_ptr(),
                lda: 0,
                b: dummy.as_ptr(),
                a_row_sum: core::ptr::null(),
                b_zero_point: core::ptr::null(),
                c: c[GUARD..].as_mut_ptr(),
                ldc,
                out,
            };
            for run in kernel.run.iter().flatten().flatten() {
                c.fill(0xa5);
                // SAFETY: the CPU has the kernel's ISA (`runs_here`); k = 0 reads no
                // activation or weight; col_offset and qmult have ≥ n entries from j0;
                // C holds the m × n tile at stride ldc.
                unsafe { run(&args) };
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[GUARD + i * ldc + j];
                        if j < n {
                            assert_eq!(
                                got,
                                want[j0 + j],
                                "{}: {kind:?} {mode:?} acc={} qm={:?} zp={zp} clamp=[{qmin},{qmax}] (m={m}, n={n}, i={i}, column {})",
                                kernel.name,
                                accs[j0 + j],
                                qm[j0 + j],
                                j0 + j
                            );
                        } else {
                            assert_eq!(got, 0xa5, "{}: wrote past column {n} in row {i}", kernel.name);
                        }
                    }
                }
                assert!(c[..GUARD].iter().chain(&c[GUARD + m * ldc..]).all(|&b| b == 0xa5), "{}: wrote outside the tile", kernel.name);
            }
            j0 += n;
        }
    }
}

/// Every (accumulator, multiplier, shift) of the corner grids, for both fixed-point
/// modes, with the full clamp range of each type and several zero points. Columns run
/// shift-major, so most groups of 4 share a shift (all ≤ 0: the `sqrdmulh` path; any
/// > 0: the i64 path) and some mix them.
#[test]
fn fixed_point_epilogue_is_exact_at_every_corner() {
    let accs = accs();
    let mut col_acc = Vec::new();
    let mut col_qm = Vec::new();
    for &shift in &shifts() {
        for &multiplier in MULTS {
            for &a in &accs {
                col_acc.push(a);
                col_qm.push(QuantizedMultiplier { multiplier, shift });
            }
        }
    }
    for mode in [RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
        for (t, &zp) in ZPS.iter().enumerate() {
            // In turn: the widest clamp (every value distinguishable, as far as the stored
            // low byte goes) and the two output types' own ranges.
            match t % 3 {
                0 => check_stage(mode, OutputKind::I8, &col_acc, &col_qm, zp, i32::MIN, i32::MAX),
                1 => check_stage(mode, OutputKind::I8, &col_acc, &col_qm, zp, -128, 127),
                _ => check_stage(mode, OutputKind::U8, &col_acc, &col_qm, zp, 0, 255),
            }
        }
    }
}

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Random accumulators, multipliers and shifts (every i32, and the ranges that matter),
/// each column its own: groups of 4 mix the two paths.
#[test]
fn fixed_point_epilogue_is_exact_on_random_columns() {
    let mut rng = Rng(0x5eed_0a64);
    const N: usize = 4096;
    for round in 0..6 {
        let col_acc: Vec<i32> = (0..N).map(|_| (rng.next() as i32) >> (rng.next() % 32)).collect();
        let col_qm: Vec<QuantizedMultiplier> = (0..N)
            .map(|_| QuantizedMultiplier {
                multiplier: if rng.next().is_multiple_of(2) { rng.next() as i32 } else { (1 << 30) + (rng.next() % (1 << 30)) as i32 },
                shift: match rng.next() % 4 {
                    0 => rng.next() as i32,
                    1 => (rng.next() % 140) as i32 - 70,
                    _ => (rng.next() % 40) as i32 - 32,
                },
            })
            .collect();
        let zp = ZPS[round % ZPS.len()];
        for mode in [RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding] {
            check_stage(mode, OutputKind::I8, &col_acc, &col_qm, zp, i32::MIN, i32::MAX);
            check_stage(mode, OutputKind::U8, &col_acc, &col_qm, zp, 0, 255);
        }
    }
}
