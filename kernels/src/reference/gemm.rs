//! Reference GEMM: `C[m][n] = Σ_k (A[m][k] − za)·(B[k][n] − zb[n])`, exact in i64.

use crate::types::{Int8, OutputKind, QuantizedMultiplier, RequantMode};

/// Exact GEMM in i64. `zb` holds one zero point (per tensor) or `n` (per column).
/// `A` is `m × k` with row stride `lda`, `B` is `k × n` with row stride `ldb`,
/// `C` is `m × n` with row stride `ldc`.
///
/// Panics if a slice is too short (the reference is only called by tests and by the
/// driver after validation).
#[allow(clippy::too_many_arguments)]
pub fn gemm_i64<A: Int8, B: Int8>(
    m: usize,
    n: usize,
    k: usize,
    a: &[A],
    lda: usize,
    za: i32,
    b: &[B],
    ldb: usize,
    zb: &[i32],
    c: &mut [i64],
    ldc: usize,
) {
    assert!(zb.len() == 1 || zb.len() == n, "zb must have 1 or n entries");
    for i in 0..m {
        for j in 0..n {
            let zbj = if zb.len() == 1 { zb[0] } else { zb[j] } as i64;
            let mut acc: i64 = 0;
            for kk in 0..k {
                let av = a[i * lda + kk].to_i32() as i64 - za as i64;
                let bv = b[kk * ldb + j].to_i32() as i64 - zbj;
                acc += av * bv;
            }
            c[i * ldc + j] = acc;
        }
    }
}

/// Per-column parameters of the reference output stage.
#[derive(Clone, Copy, Debug)]
pub struct RefOutput<'a> {
    /// What to produce.
    pub kind: OutputKind,
    /// Requantization mode for `U8`/`I8`.
    pub mode: RequantMode,
    /// Optional i32 bias per column, added to the exact accumulator.
    pub bias_i32: Option<&'a [i32]>,
    /// `F32`: the dequant scale per column; `U8`/`I8` with `Fp32`: the requant multiplier.
    pub scale: &'a [f32],
    /// `F32`: optional f32 bias per column.
    pub bias_f32: Option<&'a [f32]>,
    /// Fixed-point multipliers per column for the fixed-point modes.
    pub qmult: &'a [QuantizedMultiplier],
    /// Output zero point.
    pub out_zero_point: i32,
    /// Clamp bounds.
    pub qmin: i32,
    /// See `qmin`.
    pub qmax: i32,
}

/// The value the output stage produces for column `j` from the exact accumulator `acc`
/// (bias not yet added): an i64 for `I32`, the f32 bit pattern for `F32`, the clamped
/// integer for `U8`/`I8`.
pub fn output_stage_ref(acc: i64, j: usize, o: &RefOutput<'_>) -> i64 {
    let acc = acc + o.bias_i32.map_or(0, |b| b[j] as i64);
    match o.kind {
        OutputKind::I32 => acc,
        OutputKind::F32 => {
            let v = acc as f32 * o.scale[j] + o.bias_f32.map_or(0.0, |b| b[j]);
            v.to_bits() as i64
        }
        OutputKind::U8 | OutputKind::I8 => {
            let q = match o.mode {
                RequantMode::Fp32 => crate::reference::requant::requantize_fp32(acc, o.scale[j], o.out_zero_point),
                mode => crate::reference::requant::requantize_fixed(acc, o.qmult[j], mode, o.out_zero_point),
            };
            q.clamp(o.qmin as i64, o.qmax as i64)
        }
    }
}
