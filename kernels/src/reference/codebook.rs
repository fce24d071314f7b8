//! The codebook GEMM oracle: decode each code to its integer level and multiply plainly.

use crate::types::Int8;

/// `c[i·ldc + j] = Σ_k (A[i][k] − za) · levels[code(k, j)]` in i64, for `i < m`, `j < n`.
/// `levels` is indexed by code (the integer grid of the level set).
///
/// Panics if a slice is too short or a code has no level (a test bug, not an input).
#[allow(clippy::too_many_arguments)]
pub fn codebook_gemm_i64<A: Int8>(
    m: usize,
    n: usize,
    k: usize,
    a: &[A],
    lda: usize,
    za: i32,
    code: impl Fn(usize, usize) -> u8,
    levels: &[i16],
    c: &mut [i64],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i64;
            for kk in 0..k {
                let w = levels[code(kk, j) as usize] as i64;
                s += (a[i * lda + kk].to_i32() - za) as i64 * w;
            }
            c[i * ldc + j] = s;
        }
    }
}
