//! Prepacked weights: packed once, reused across calls, with the column sums stored so
//! zero points cost nothing per call.

use qkern_kernels::{GemmUkernel, Int8, pack::pack_b_kgroups};

use super::{MatrixRef, WeightQuant};
use crate::dispatch::Context;
use crate::error::{Error, Result, check_matrix, check_scale};

/// K is split in chunks of this many elements when the whole-K i32 accumulation is not
/// provably exact: `8192 · 255 · 255 < 2^31`, so one chunk never overflows i32 for any
/// 8-bit operands and zero points.
pub const K_CHUNK: usize = 8192;

/// Weights `B[K][N]` packed for one GEMM microkernel.
#[derive(Clone, Debug)]
pub struct PackedWeights {
    pub(crate) kernel: GemmUkernel,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) signed: bool,
    pub(crate) data: Vec<u8>,
    /// Per column zero point (length n).
    pub(crate) zero_point: Vec<i32>,
    pub(crate) any_zero_point: bool,
    /// Per column scale (length n), or empty when no scales were given.
    pub(crate) scale: Vec<f32>,
    /// Σ_k B[k][n] over each K chunk: `chunk_col_sum[c·n + j]` (raw values).
    pub(crate) chunk_col_sum: Vec<i32>,
    /// Σ_k B[k][n] over all K, wrapping (exact modulo 2^32, which is all the kernels need).
    pub(crate) col_sum: Vec<i32>,
    /// max over k, n of |B[k][n] − zb[n]| (the bound the overflow policy uses).
    pub(crate) max_abs_centered: i32,
}

impl PackedWeights {
    /// Packs `b` (`K × N`) for the default context's GEMM kernel.
    pub fn new<B: Int8>(b: MatrixRef<'_, B>, quant: WeightQuant<'_>) -> Result<PackedWeights> {
        Self::new_in(&Context::new()?, b, quant)
    }

    /// Packs `b` (`K × N`) for `ctx`'s GEMM kernel.
    ///
    /// `quant.zero_point` must hold 1 (per tensor) or N (per column) values within B's
    /// type; `quant.scale` holds 0 (integer outputs only), 1 or N finite positive values.
    pub fn new_in<B: Int8>(ctx: &Context, b: MatrixRef<'_, B>, quant: WeightQuant<'_>) -> Result<PackedWeights> {
        let (k, n) = (b.rows, b.cols);
        check_matrix("b", b.data.len(), k, n, b.stride)?;
        let zero_point = quant.zero_point.expand("weight zero_point", n)?;
        for &z in &zero_point {
            if z < B::MIN || z > B::MAX {
                return Err(Error::ZeroPointOutOfRange {
                    what: "weight zero_point",
                    value: z as i64,
                    min: B::MIN as i64,
                    max: B::MAX as i64,
                });
            }
        }
        let scale = match quant.scale {
            Some(s) => s.expand("weight scale", n)?,
            None => Vec::new(),
        };
        for &s in &scale {
            check_scale("weight scale", s)?;
        }
        let kernel = ctx.kernels().gemm;
        // N = 0 admits any K, even one whose padded panel size overflows usize: no panels.
        let packed_len = if n == 0 { 0 } else { kernel.format.packed_bytes(k, n) };
        let mut data = vec![0u8; packed_len];
        if n > 0 {
            pack_b_kgroups(kernel.format, b.data, k, n, b.stride, &mut data);
        }

        let chunks = k.div_ceil(K_CHUNK).max(1);
        let mut chunk_col_sum = vec![0i32; chunks * n];
        let mut col_sum = vec![0i32; n];
        let mut max_abs_centered = 0i32;
        // With N = 0, B may be empty whatever its stride and K (`check_matrix` accepts
        // that): no rows to read, and none to loop over.
        for kk in 0..if n == 0 { 0 } else { k } {
            let c = kk / K_CHUNK;
            let row = &b.data[kk * b.stride..kk * b.stride + n];
            for (j, v) in row.iter().enumerate() {
                let v = v.to_i32();
                chunk_col_sum[c * n + j] += v; // ≤ 8192·255: no overflow
                col_sum[j] = col_sum[j].wrapping_add(v);
                max_abs_centered = max_abs_centered.max((v - zero_point[j]).abs());
            }
        }
        let any_zero_point = zero_point.iter().any(|&z| z != 0);
        Ok(PackedWeights {
            kernel,
            k,
            n,
            signed: B::SIGNED,
            data,
            zero_point,
            any_zero_point,
            scale,
            chunk_col_sum,
            col_sum,
            max_abs_centered,
        })
    }

    /// K (rows of B).
    pub fn k(&self) -> usize {
        self.k
    }
    /// N (columns of B).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Whether B is i8 (else u8).
    pub fn is_signed(&self) -> bool {
        self.signed
    }
    /// The microkernel these weights were packed for.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }
    /// Per-column zero points.
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_point
    }
    /// Per-column scales (empty if packed without scales).
    pub fn scales(&self) -> &[f32] {
        &self.scale
    }
    /// Bytes held by the packed panels.
    pub fn packed_bytes(&self) -> usize {
        self.data.len()
    }
}

