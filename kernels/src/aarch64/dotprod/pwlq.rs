//! Exact-mode fused PWLQ GEMM with `sdot`: `qs8_pwlq_dot3_gemm_8x16c4__dotprod`.
//!
//! The ARM counterpart of `x86_64::avx512vnni::pwlq::pwlq_dot3_gemm_8x16c4`, on the same
//! panels (one byte per weight, `nibble | region·0x80`, 16 channels × 4 K per 64-byte
//! step) and the same step-major packed activations, but as **i8** (`sdot` multiplies
//! i8 × i8: u8 activations XOR 0x80, i.e. `a − 128`, and the caller moves the zero point
//! the same way, so `a − za` is unchanged). The result is the raw sums, the caller
//! subtracts `za·Σw` and runs the scalar epilogue (`qkern::quant::pwlq::combine_exact`).
//!
//! Per step and group of 4 columns (16 bytes = 4 columns × 4 K, the `.16b` operand of
//! `sdot .4s`): one `eor` and three `tbl` decode the centre codes, tail codes and tail
//! signs ([`dot3_decode`]), and the 8 rows' K groups (two 16-byte loads of the packed
//! activations, a row per 4-byte lane) multiply them by element: 24 `sdot` into
//! 8 rows × 3 planes = 24 accumulators (`v8..v31`; decode and operands in `v0..v7`: all
//! 32 registers, no spill). 4 decode instructions per 24 `sdot`, both on the vector
//! pipes: at most 24/28 of the `sdot` peak, i.e. 2/7 of the int8 GEMM's useful MACs
//! (three dots per output). llvm-mca 16 (`benches/arm-mca.sh`): 14.0 cycles per step on
//! its Neoverse-V1 model (85.7 % of the `sdot` peak, 28.5 % of the int8 GEMM loop's
//! MACs/cycle), 17.1 on the Cortex-A57-class model it uses for `-mcpu=neoverse-n1`, which
//! charges a `tbl` three pipe cycles (Neoverse-N1 issues two per cycle). Tiles of fewer than 8 rows (the last row group, and
//! `M = 1`) run the same decode with one `sdot` per row and plane (compiler-scheduled
//! one-instruction `asm!`, `sdot_lane!`).
//!
//! **Exactness.** `sdot` sums four i8 × i8 products, each at most 128·7 = 896 in
//! magnitude (`|c|, |t| ≤ Q = 7`, `|s| ≤ 1`), into an i32 lane: exact while
//! `4·steps·896 < 2^31`, which the caller's K chunks (`FUSED_CHUNK_BLOCKS`, sized for
//! 255·7 per product) guarantee.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::aarch64::neon::pwlq::{DOT3_PANEL_NR, DOT3_STEP_BYTES, Dot3Tables, dot3_decode, dot3_steps};

/// Exact-mode PWLQ GEMM microkernel, `qs8_pwlq_dot3_gemm_8x16c4__dotprod`: `R ≤ 8`
/// activation rows (i8, packed step-major: `a[(s·R + r)·4 + i] = a[r][4s + i]`,
/// `4·R·steps` bytes) × one panel of 16 channels (`steps` K steps of
/// [`DOT3_STEP_BYTES`]), returning the raw sums `out[r][j][col] = Σ_k a[r][k] ·
/// plane_j[k][col]` for the planes `j` = 0 (centre codes), 1 (tail codes), 2 (tail signs)
/// — no zero point. The module docs give the loop and the i32 bound.
///
/// # Safety
/// The CPU must support NEON and dotprod.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn pwlq_dot3_gemm_8x16c4<const R: usize>(a: &[u8], panel: &[u8]) -> [[[i32; DOT3_PANEL_NR]; 3]; R] {
    const { assert!(R != 0 && R <= 8, "1 to 8 rows") };
    let steps = dot3_steps(a, panel, R);
    let mut out = [[[0i32; DOT3_PANEL_NR]; 3]; R];
    if steps == 0 {
        return out;
    }
    let t = Dot3Tables::new();
    for g in 0..DOT3_PANEL_NR / 4 {
        // acc[r][j]: row r, plane j, columns 4g..4g + 4.
        let mut acc = [[vdupq_n_s32(0); 3]; R];
        // SAFETY: `a` holds 4·R·steps bytes, the panel `steps` steps (checked above); the
        // CPU has dotprod (contract).
        unsafe {
            let wp = panel.as_ptr().add(16 * g);
            if R == 8 {
                loop8(acc.as_mut_ptr().cast(), a.as_ptr(), wp, steps, &t);
            } else {
                loop_rows::<R>(&mut acc, a.as_ptr(), wp, steps, &t);
            }
        }
        for (o, acc_r) in out.iter_mut().zip(&acc) {
            for (oj, x) in o.iter_mut().zip(acc_r) {
                // SAFETY: 4 lanes at 4g ≤ 12 of a 16-lane row.
                unsafe { vst1q_s32(oj.as_mut_ptr().add(4 * g), *x) };
            }
        }
    }
    out
}

/// The full 8-row tile of [`pwlq_dot3_gemm_8x16c4`], instantiated in this crate (the
/// generic one is instantiated by its callers) so that its loop is in this crate's code
/// (`benches/arm-mca.sh` reads it).
///
/// # Safety
/// As [`pwlq_dot3_gemm_8x16c4`].
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn pwlq_dot3_gemm_8x16c4_rows8(a: &[u8], panel: &[u8]) -> [[[i32; DOT3_PANEL_NR]; 3]; 8] {
    // SAFETY: forwarded.
    unsafe { pwlq_dot3_gemm_8x16c4::<8>(a, panel) }
}

/// The 8-row K loop, one `asm!` block: per step one 16-byte panel load (`post-index`
/// 64: the next step of the same column group), two 16-byte activation loads (rows 0–3,
/// 4–7), the decode into `v3` (c), `v4` (t), `v2` (s, over the flipped byte), 24 `sdot`
/// by element — the centre ones first, so they start while the other `tbl` run.
///
/// # Safety
/// The CPU has dotprod; `acc` points to 24 accumulators (row-major `[row][plane]`), `a` is
/// readable for `32·steps` bytes, `w` for 16 bytes at every `64·s`, `s < steps ≥ 1`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn loop8(acc: *mut [int32x4_t; 24], a: *const u8, w: *const u8, steps: usize, t: &Dot3Tables) {
    // SAFETY: the caller's contract.
    let c = unsafe { &mut *acc };
    // SAFETY: the loop reads 32 bytes of `a` and 16 of `w` per step (contract).
    unsafe {
        asm!(
            "// qkern-mca-begin qs8_pwlq_dot3_gemm_8x16c4__dotprod k-step",
            "2:",
            "ldr q2, [{w}], #64",
            "ldp q0, q1, [{a}], #32",
            "tbl v3.16b, {{v5.16b}}, v2.16b",
            "eor v2.16b, v2.16b, v7.16b",
            "tbl v4.16b, {{v5.16b}}, v2.16b",
            "tbl v2.16b, {{v6.16b}}, v2.16b",
            "sdot v8.4s, v3.16b, v0.4b[0]",
            "sdot v11.4s, v3.16b, v0.4b[1]",
            "sdot v14.4s, v3.16b, v0.4b[2]",
            "sdot v17.4s, v3.16b, v0.4b[3]",
            "sdot v20.4s, v3.16b, v1.4b[0]",
            "sdot v23.4s, v3.16b, v1.4b[1]",
            "sdot v26.4s, v3.16b, v1.4b[2]",
            "sdot v29.4s, v3.16b, v1.4b[3]",
            "sdot v9.4s, v4.16b, v0.4b[0]",
            "sdot v12.4s, v4.16b, v0.4b[1]",
            "sdot v15.4s, v4.16b, v0.4b[2]",
            "sdot v18.4s, v4.16b, v0.4b[3]",
            "sdot v21.4s, v4.16b, v1.4b[0]",
            "sdot v24.4s, v4.16b, v1.4b[1]",
            "sdot v27.4s, v4.16b, v1.4b[2]",
            "sdot v30.4s, v4.16b, v1.4b[3]",
            "sdot v10.4s, v2.16b, v0.4b[0]",
            "sdot v13.4s, v2.16b, v0.4b[1]",
            "sdot v16.4s, v2.16b, v0.4b[2]",
            "sdot v19.4s, v2.16b, v0.4b[3]",
            "sdot v22.4s, v2.16b, v1.4b[0]",
            "sdot v25.4s, v2.16b, v1.4b[1]",
            "sdot v28.4s, v2.16b, v1.4b[2]",
            "sdot v31.4s, v2.16b, v1.4b[3]",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "// qkern-mca-end",
            a = inout(reg) a => _,
            w = inout(reg) w => _,
            n = inout(reg) steps => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
            in("v5") t.tq, in("v6") t.ts, in("v7") t.flip,
            inout("v8") c[0], inout("v9") c[1], inout("v10") c[2], inout("v11") c[3],
            inout("v12") c[4], inout("v13") c[5], inout("v14") c[6], inout("v15") c[7],
            inout("v16") c[8], inout("v17") c[9], inout("v18") c[10], inout("v19") c[11],
            inout("v20") c[12], inout("v21") c[13], inout("v22") c[14], inout("v23") c[15],
            inout("v24") c[16], inout("v25") c[17], inout("v26") c[18], inout("v27") c[19],
            inout("v28") c[20], inout("v29") c[21], inout("v30") c[22], inout("v31") c[23],
            options(nostack, readonly),
        );
    }
}

/// The K loop of a tile of `R < 8` rows: the same decode, each row's 4 bytes broadcast
/// (a row per call of `sdot` by lane 0), `3R` `sdot` per step.
///
/// # Safety
/// The CPU has dotprod; `a` is readable for `4·R·steps` bytes, `w` for 16 bytes at every
/// `64·s`, `s < steps`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn loop_rows<const R: usize>(acc: &mut [[int32x4_t; 3]; R], a: *const u8, w: *const u8, steps: usize, t: &Dot3Tables) {
    for s in 0..steps {
        // SAFETY: step s of the column group (contract).
        let [c, tt, sg] = unsafe { dot3_decode(vld1q_u8(w.add(DOT3_STEP_BYTES * s)), t) };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: bytes 4(sR + r) .. + 4 of `a` (contract); dotprod (contract).
            unsafe {
                let av = vreinterpretq_s8_u32(vdupq_n_u32(a.add(4 * (s * R + r)).cast::<u32>().read_unaligned()));
                sdot_lane!(acc_r[0], c, av, 0);
                sdot_lane!(acc_r[1], tt, av, 0);
                sdot_lane!(acc_r[2], sg, av, 0);
            }
        }
    }
}
