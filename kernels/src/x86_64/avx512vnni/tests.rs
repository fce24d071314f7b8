//! The vectorised output stages against the scalar reference on inputs the shared tester
//! (which builds realistic cases) rarely reaches: accumulators at the i32 extremes,
//! multipliers and shifts far outside TFLite's range, NaN/infinite/negative scales and
//! zero points outside the output type. With `k = 0` the accumulator of column `j` is
//! exactly `col_offset[j]`, so every value can be chosen.

extern crate std;

use std::vec;
use std::vec::Vec;

use super::GEMM_KERNELS;
use crate::generic::gemm::output_value;
use crate::types::{GemmArgs, OutputKind, OutputStage, QuantizedMultiplier, RequantMode};

fn have_isa() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
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
    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[(self.next() % s.len() as u64) as usize]
    }
}

const ACCS: &[i32] = &[i32::MIN, i32::MIN + 1, -(1 << 30), -65_536, -255, -1, 0, 1, 2, 127, 128, 255, 1 << 24, (1 << 24) + 1, 1 << 30, i32::MAX - 1, i32::MAX];
const MULTS: &[i32] = &[0, 1, -1, 1 << 30, (1 << 30) + 1, i32::MAX, i32::MIN, -(1 << 30), 1_518_500_250];
const SHIFTS: &[i32] = &[i32::MIN, -200, -64, -63, -62, -61, -40, -33, -32, -31, -30, -20, -8, -1, 0, 1, 2, 8, 20, 29, 30, 31, 32, 33, 40, 61, 62, 63, 64, 200, i32::MAX];
const SCALES: &[f32] = &[0.0, -0.0, 1.0, 0.5, -0.5, 1e-10, 3.0e38, -3.0e38, f32::MIN_POSITIVE, 1e-45, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.003_921_569, 1.5, 2.5];
const ZPS: &[i32] = &[-128, 0, 127, 255, 1, -1, i32::MIN, i32::MAX, 1 << 24, -(1 << 24), (1 << 24) + 200, 100_000];

/// One stage with per-column tables; runs every kernel (both activation entry points)
/// with `k = 0` and compares every element with `output_value`, and the canaries.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn check_stage(kind: OutputKind, mode: RequantMode, accs: &[i32], scale: &[f32], bias: Option<&[f32]>, qm: &[QuantizedMultiplier], zp: i32, qmin: i32, qmax: i32) {
    let n_max = accs.len();
    let dummy = [0u8; 64];
    for kernel in GEMM_KERNELS {
        let (mr, nr) = (kernel.mr, kernel.nr());
        assert!(nr <= n_max);
        for &n in &[nr, nr - 1, 17, 16, 9, 1] {
            for &m in &[mr, 1] {
                let esize = if matches!(kind, OutputKind::I32 | OutputKind::F32) { 4 } else { 1 };
                let ldc = n + 3;
                const GUARD: usize = 64;
                let mut c = vec![0xa5u8; GUARD + m * ldc * esize + GUARD];
                let out = OutputStage {
                    kind,
                    mode,
                    col_offset: accs.as_ptr(),
                    scale: if scale.is_empty() { core::ptr::null() } else { scale.as_ptr() },
                    bias_f32: bias.map_or(core::ptr::null(), |b| b.as_ptr()),
                    qmult: if qm.is_empty() { core::ptr::null() } else { qm.as_ptr() },
                    out_zero_point: zp,
                    qmin,
                    qmax,
                };
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
                for run in [kernel.run[0][1], kernel.run[1][1]] {
                    c.fill(0xa5);
                    // SAFETY: the CPU has the ISA (checked by the caller); k = 0 reads no
                    // activation or weight; every table has ≥ n entries; C holds the tile.
                    unsafe { run.unwrap()(&args) };
                    for i in 0..m {
                        for j in 0..ldc {
                            let at = GUARD + (i * ldc + j) * esize;
                            let got = &c[at..at + esize];
                            if j < n {
                                let want = output_value(accs[j], j, &out);
                                let want = &want.to_le_bytes()[..esize];
                                assert_eq!(
                                    got, want,
                                    "{}: {kind:?} {mode:?} acc={} scale={:?} qm={:?} zp={zp} clamp=[{qmin},{qmax}] (m={m}, n={n}, i={i}, j={j})",
                                    kernel.name,
                                    accs[j],
                                    scale.get(j),
                                    qm.get(j)
                                );
                            } else {
                                assert!(got.iter().all(|&b| b == 0xa5), "{}: wrote past column {n} in row {i}", kernel.name);
                            }
                        }
                    }
                    assert!(c[..GUARD].iter().all(|&b| b == 0xa5), "{}: wrote before the tile", kernel.name);
                    assert!(c[GUARD + m * ldc * esize..].iter().all(|&b| b == 0xa5), "{}: wrote after the tile", kernel.name);
                }
            }
        }
    }
}

#[test]
fn output_stages_match_the_reference_at_the_extremes() {
    if !have_isa() {
        std::eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    const N: usize = 64;
    let mut rng = Rng(0x5eed_a512);
    let accs_of = |rng: &mut Rng| -> Vec<i32> {
        (0..N).map(|_| if rng.next().is_multiple_of(3) { rng.next() as i32 >> (rng.next() % 32) } else { rng.pick(ACCS) }).collect()
    };
    for iter in 0..40 {
        let accs = accs_of(&mut rng);
        check_stage(OutputKind::I32, RequantMode::Fp32, &accs, &[], None, &[], 0, 0, 0);
        let scale: Vec<f32> = (0..N).map(|_| if rng.next().is_multiple_of(2) { rng.pick(SCALES) } else { f32::from_bits(rng.next() as u32) }).collect();
        // Every other round all finite (the Fp32 path skips its NaN fix-up then).
        let scale: Vec<f32> = scale.iter().map(|&s| if iter % 2 == 0 && !s.is_finite() { 0.75 } else { s }).collect();
        let bias: Vec<f32> = (0..N).map(|_| rng.pick(SCALES)).collect();
        check_stage(OutputKind::F32, RequantMode::Fp32, &accs, &scale, None, &[], 0, 0, 0);
        check_stage(OutputKind::F32, RequantMode::Fp32, &accs, &scale, Some(&bias), &[], 0, 0, 0);
        let qm: Vec<QuantizedMultiplier> = (0..N)
            .map(|_| QuantizedMultiplier {
                multiplier: if rng.next().is_multiple_of(2) { rng.pick(MULTS) } else { rng.next() as i32 },
                shift: if rng.next().is_multiple_of(4) { (rng.next() % 80) as i32 - 40 } else { rng.pick(SHIFTS) },
            })
            .collect();
        for kind in [OutputKind::U8, OutputKind::I8] {
            let (lo, hi) = if kind == OutputKind::U8 { (0, 255) } else { (-128, 127) };
            for _ in 0..4 {
                let zp = if rng.next().is_multiple_of(2) { rng.pick(ZPS) } else { lo + (rng.next() % 256) as i32 };
                let a = lo + (rng.next() % 256) as i32;
                let b = lo + (rng.next() % 256) as i32;
                let (qmin, qmax) = match rng.next() % 4 {
                    0 => (lo, hi),
                    1 => (a.min(b), a.max(b)),
                    2 => (a, a),
                    // Wider than the type (the stored byte is the low 8 bits, as in the
                    // reference's `as u8`).
                    _ => (i32::MIN + (rng.next() % 3) as i32, i32::MAX - (rng.next() % 3) as i32),
                };
                check_stage(kind, RequantMode::Fp32, &accs, &scale, None, &[], zp, qmin, qmax);
                check_stage(kind, RequantMode::TfliteDoubleRounding, &accs, &[], None, &qm, zp, qmin, qmax);
                check_stage(kind, RequantMode::SingleRounding, &accs, &[], None, &qm, zp, qmin, qmax);
            }
        }
    }
}

/// The short-tile (GEMV) paths, which split K over several accumulator sets: every
/// `m ≤ MR` (each row count class), K residues modulo every set count and the K-group
/// step, and K long enough for the i32 sums to wrap (all-extreme inputs: 255 × −128),
/// against a scalar wrapping dot product; and no write outside the tile.
#[test]
#[allow(clippy::needless_range_loop)]
fn short_tiles_split_k_exactly() {
    if !have_isa() {
        std::eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    let mut rng = Rng(0x9e7d_0001);
    const GUARD: usize = 64;
    for kernel in GEMM_KERNELS {
        let (mr, nr) = (kernel.mr, kernel.nr());
        for &k in &[1usize, 4, 5, 12, 15, 16, 17, 31, 33, 36, 63, 64, 67, 1023, 4096, 4097, 70_001] {
            let k4 = k.div_ceil(4);
            for extreme in [false, true] {
                // Activation bytes as stored (either entry point reads bit patterns) and
                // stored weights (i8), packed [k/4][nr][4], zero-padded.
                let lda = k + 5;
                let a: Vec<u8> =
                    (0..mr * lda).map(|_| if extreme { 0xff } else { rng.next() as u8 }).collect();
                let bw: Vec<i8> =
                    (0..k * nr).map(|_| if extreme { -128 } else { rng.next() as i8 }).collect();
                let mut packed = vec![0u8; k4 * nr * 4];
                for kk in 0..k {
                    for j in 0..nr {
                        packed[(kk / 4) * nr * 4 + j * 4 + kk % 4] = bw[kk * nr + j] as u8;
                    }
                }
                let zeros = vec![0i32; nr];
                for m in 1..=mr {
                    for &n in &[nr, nr - 1, 17, 16, 1] {
                        for flip in [false, true] {
                            let run = kernel.run[flip as usize][1].unwrap();
                            let ldc = n + 3;
                            let mut c = vec![0x5a5a_5a5au32 as i32; GUARD + m * ldc + GUARD];
                            let args = GemmArgs {
                                m,
                                n,
                                k,
                                a: a.as_ptr(),
                                lda,
                                b: packed.as_ptr(),
                                a_row_sum: core::ptr::null(),
                                b_zero_point: core::ptr::null(),
                                c: c[GUARD..].as_mut_ptr().cast(),
                                ldc,
                                out: OutputStage::raw_i32(zeros.as_ptr()),
                            };
                            // SAFETY: the CPU has the ISA; rows 0..m of A hold k bytes
                            // (stride lda); the panel holds k4·nr·4 bytes; col_offset has
                            // nr ≥ n entries; C holds the m × n tile at stride ldc.
                            unsafe { run(&args) };
                            for i in 0..m {
                                for j in 0..ldc {
                                    let got = c[GUARD + i * ldc + j];
                                    if j < n {
                                        let want = (0..k).fold(0i32, |s, kk| {
                                            let x = a[i * lda + kk] ^ if flip { 0x80 } else { 0 };
                                            s.wrapping_add(x as i32 * bw[kk * nr + j] as i32)
                                        });
                                        assert_eq!(
                                            got, want,
                                            "{}: m={m} n={n} k={k} flip={flip} extreme={extreme} i={i} j={j}",
                                            kernel.name
                                        );
                                    } else {
                                        assert_eq!(got, 0x5a5a_5a5a, "{}: wrote past column {n}", kernel.name);
                                    }
                                }
                            }
                            assert!(c[..GUARD].iter().all(|&v| v == 0x5a5a_5a5a), "{}: wrote before the tile", kernel.name);
                            assert!(
                                c[GUARD + m * ldc..].iter().all(|&v| v == 0x5a5a_5a5a),
                                "{}: wrote after the tile",
                                kernel.name
                            );
                        }
                    }
                }
            }
        }
    }
}
