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
    /// Per column zero point (length n), as given.
    pub(crate) zero_point: Vec<i32>,
    /// Per column zero point as the kernel sees it: `zb − b_offset`.
    pub(crate) stored_zero_point: Vec<i32>,
    /// Whether any stored zero point is nonzero (the kernel then needs row sums).
    pub(crate) any_zero_point: bool,
    /// Per column scale (length n), or empty when no scales were given.
    pub(crate) scale: Vec<f32>,
    /// Σ_k (B[k][n] − b_offset) over each K chunk: `chunk_col_sum[c·n + j]`.
    pub(crate) chunk_col_sum: Vec<i32>,
    /// The same over all K, wrapping (exact modulo 2^32, which is all the kernels need).
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
        check_pack_size(k, n)?;
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
        // Measure B once: raw column sums per K chunk, the range of its values, and the
        // largest centred magnitude (the overflow policy's bound).
        let chunks = k.div_ceil(K_CHUNK).max(1);
        let mut chunk_col_sum = vec![0i32; chunks * n];
        let (mut bmin, mut bmax, mut max_abs_centered) = (i32::MAX, i32::MIN, 0i32);
        // With N = 0, B may be empty whatever its stride and K (`check_matrix` accepts
        // that): no rows to read, and none to loop over.
        for kk in 0..if n == 0 { 0 } else { k } {
            let c = kk / K_CHUNK;
            let row = &b.data[kk * b.stride..kk * b.stride + n];
            for (j, v) in row.iter().enumerate() {
                let v = v.to_i32();
                chunk_col_sum[c * n + j] += v; // ≤ 8192·255: no overflow
                (bmin, bmax) = (bmin.min(v), bmax.max(v));
                max_abs_centered = max_abs_centered.max((v - zero_point[j]).abs());
            }
        }

        let empty = bmin > bmax; // no weights at all: any kernel's precondition holds
        // The first candidate (best first) that handles this weight type and whose
        // precondition on the stored weights holds.
        let kernel = ctx
            .kernels()
            .gemm_candidates
            .iter()
            .copied()
            .find(|kn| {
                let handles = kn.run[0][B::SIGNED as usize].is_some() || kn.run[1][B::SIGNED as usize].is_some();
                handles && (empty || holds_weights(kn, B::SIGNED, bmin, bmax))
            })
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "no GEMM kernel in this context takes these {} weights (values {bmin}..={bmax})",
                    B::NAME
                ))
            })?;

        // Everything below is in the stored domain: b − b_offset, zb − b_offset.
        let off = kernel.b_offset_for(B::SIGNED);
        let stored_zero_point: Vec<i32> = zero_point.iter().map(|&z| z - off).collect();
        for (c, sums) in chunk_col_sum.chunks_mut(n.max(1)).enumerate() {
            let kc = K_CHUNK.min(k.saturating_sub(c * K_CHUNK)) as i32;
            sums.iter_mut().for_each(|s| *s -= kc * off); // |Σ(b − off)| ≤ 8192·255
        }
        let col_sum: Vec<i32> = (0..n)
            .map(|j| (0..chunks).fold(0i32, |s, c| s.wrapping_add(chunk_col_sum[c * n + j])))
            .collect();

        // N = 0 admits any K, even one whose padded panel size overflows usize: no panels.
        let packed_len = if n == 0 { 0 } else { kernel.format.packed_bytes(k, n) };
        // Zeroed by the allocator (fresh pages, not yet touched), then advised onto huge
        // pages before the packer writes them: streamed weights read much faster so.
        let mut data = vec![0u8; packed_len];
        super::advise_huge_pages(&mut data);
        if n > 0 {
            pack_b_kgroups(kernel.format, b.data, k, n, b.stride, off, &mut data);
        }
        let any_zero_point = stored_zero_point.iter().any(|&z| z != 0);
        Ok(PackedWeights {
            kernel,
            k,
            n,
            signed: B::SIGNED,
            data,
            zero_point,
            stored_zero_point,
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
    /// The microkernel descriptor these weights were packed for.
    pub fn kernel(&self) -> GemmUkernel {
        self.kernel
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

/// Whether `kn`'s precondition on its stored weights (`max_abs_stored_b`) holds for
/// weights of signedness `signed` within `bmin..=bmax` (stored as `b − b_offset`).
pub(crate) fn holds_weights(kn: &GemmUkernel, signed: bool, bmin: i32, bmax: i32) -> bool {
    let off = kn.b_offset_for(signed);
    kn.max_abs_stored_b.is_none_or(|lim| (bmin - off).abs().max((bmax - off).abs()) <= lim)
}

/// Refuses a K × N whose packed panels and per-column tables could not be allocated —
/// their sizes overflow, pass `isize::MAX`, or the allocator refuses them — with an
/// error instead of a capacity-overflow panic or an allocation-failure abort. (K may be
/// 0 with a huge N, or N 0 with any K: B is then empty and passes `check_matrix`.)
fn check_pack_size(k: usize, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    // Per column: K-chunk sums, column sum, zero points (given and stored), scale: i32/f32.
    let chunks = k.div_ceil(K_CHUNK).max(1);
    // Panels: K and N padded by at most one tile (≤ 64) each.
    let bytes = chunks
        .checked_add(5)
        .and_then(|c| c.checked_mul(4))
        .and_then(|c| c.checked_mul(n))
        .and_then(|t| k.checked_add(64)?.checked_mul(n.checked_add(64)?)?.checked_add(t))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| Error::Overflow(format!("packing B ({k} × {n}) needs more memory than can be addressed")))?;
    Vec::<u8>::new()
        .try_reserve_exact(bytes)
        .map_err(|_| Error::Overflow(format!("packing B ({k} × {n}) needs {bytes} bytes, which cannot be allocated")))
}
