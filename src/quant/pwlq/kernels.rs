//! The PWLQ kernels behind a safe API: SIMD dequantization of [`PwlqPacked`] to f32 (and
//! to i8 for grid-aligned PWLQ), and the exact-mode GEMM ([`PwlqGemmWeights`]).
//!
//! # Dequantization: the formula
//!
//! A channel has `2^(b+1)` possible code fields. [`PwlqPacked::dequant_table`] evaluates
//! the scalar definition [`dequantize_value`] once per field (the same f32 operations in
//! the same order: centre `(j as f32)·s1`; tail `p + (q as f32)·s2`, no FMA, sign applied
//! exactly); every kernel then only *looks up* `table[field]` (the AVX2 one uses the
//! table's exact odd symmetry to look up 16 entries and XOR the sign in, which holds for
//! every canonical field — all a `PwlqPacked` can hold). So each output equals the
//! reference bit for bit by construction, whatever the ISA. The 4-bit AVX2 and AVX-512
//! kernels (`qkern_kernels::x86_64::{avx2, avx512vnni}::pwlq`) do the lookups with
//! `vpermps`/`vpermt2ps`; other widths and the scalar tier use a portable loop.
//!
//! # Exact-mode GEMM: the design
//!
//! `ŵ[k][n] = s1[n]·c + s2[n]·t + p[n]·s` with small integers `c`, `t`, `s` (see
//! [`decompose`]). [`PwlqGemmWeights`] packs the `K × 3N` int8 matrix `[C | T | S]` once as
//! ordinary [`PackedWeights`] (zero point 0), so the int8 GEMM driver — any tier, GEMV
//! path included, threads — gives the three exact dot products
//! `Dc, Dt, Ds = Σ_k (a − za)·{c, t, s}`. They are carried in i64, so **any K** works:
//! `[C | T | S]` is packed in K slices of at most `⌊i32::MAX / (255·Q)⌋` rows (one slice
//! unless K passes that: 66 311 rows for 8-bit, 271 661 for 6-bit, 1 203 072 for 4-bit),
//! each slice's dots are exact in i32 for any activations and zero point
//! (`|a − za| ≤ 255`, `|c|, |t|, |s| ≤ Q`), and the slices are summed in i64. The fused
//! AVX-512 path likewise runs K in chunks whose raw i32 sums are exact, summed in i64
//! (see `FUSED_CHUNK_BLOCKS`). The per-channel epilogue is [`combine_exact`] on the i64
//! dots: `((s1·Dc + s2·Dt) + p·Ds)·sa (+ bias)`, each step one f32 operation, each dot
//! converted i64 → f32 once (round to nearest even), exactly as the reference does.

use qkern_kernels::{Int8, Isa};

use super::{DotTriple, GridAligned, PwlqChannel, PwlqPacked, PwlqParams, PwlqTensor, combine_exact, decompose, dequantize_value, field_to_code};
use crate::dispatch::Context;
use crate::error::{Error, Result, check_matrix, check_scale};
use crate::gemm::{Activations, MatrixMut, MatrixRef, PackedWeights, PerChannel, WeightQuant};

/// Which dequantization kernel a tier runs for `bits`-bit PWLQ (the name reports use).
pub fn dequant_kernel_name(isa: Isa, bits: u32, output: &str) -> &'static str {
    match (tier(isa), bits, output) {
        (Tier::Avx512, 4, "i8") => "pwlq4_dequant_i8_u64__avx512",
        (Tier::Avx512, 4, _) => "pwlq4_dequant_f32_u64__avx512",
        (Tier::Avx2, 4, "i8") => "pwlq4_dequant_i8_u64__avx2",
        (Tier::Avx2, 4, _) => "pwlq4_dequant_f32_u64__avx2",
        (Tier::Neon, 4, "i8") => "pwlq4_dequant_i8_u64__neon",
        (Tier::Neon, 4, _) => "pwlq4_dequant_f32_u64__neon",
        (_, _, "i8") => "pwlq_dequant_i8__scalar",
        _ => "pwlq_dequant_f32__scalar",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Scalar,
    Avx2,
    Avx512,
    /// AArch64: NEON, which every higher ARM tier includes.
    Neon,
}

fn tier(isa: Isa) -> Tier {
    match isa {
        Isa::Avx512Vnni | Isa::Amx => Tier::Avx512,
        Isa::Avx2 | Isa::AvxVnni => Tier::Avx2,
        Isa::Neon | Isa::Dotprod | Isa::I8mm => Tier::Neon,
        _ => Tier::Scalar,
    }
}

/// One channel's planes: `(values, regions)`.
fn planes(w: &PwlqPacked, c: usize) -> (&[u8], &[u64]) {
    let rb = w.row_bytes();
    let nb = w.blocks();
    let values = &w.values[c * rb..(c + 1) * rb];
    let regions = if w.regions.is_empty() { &w.regions[..0] } else { &w.regions[c * nb..(c + 1) * nb] };
    (values, regions)
}

/// Runs the 4-bit f32 kernel of `t` on one channel. The tier was checked against the CPU
/// by the caller ([`Context`] only holds tiers the CPU has) and the planes come from a
/// valid [`PwlqPacked`] (`⌈K/64⌉` whole blocks), which is the kernels' whole contract.
#[allow(unsafe_code)] // the one call site of the dequant kernels
fn run4_f32(t: Tier, values: &[u8], regions: &[u64], lut: &[f32; 32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use qkern_kernels::x86_64::{avx2, avx512vnni};
        match t {
            // SAFETY: the CPU has the tier (see above); the kernels check the plane lengths.
            Tier::Avx512 => return unsafe { avx512vnni::pwlq::pwlq4_dequant_f32_u64(values, regions, lut, out) },
            // SAFETY: as above.
            Tier::Avx2 => return unsafe { avx2::pwlq::pwlq4_dequant_f32_u64(values, regions, lut, out) },
            Tier::Scalar | Tier::Neon => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    if t == Tier::Neon {
        // SAFETY: NEON is part of the AArch64 baseline; the kernel checks the plane lengths.
        return unsafe { qkern_kernels::aarch64::neon::pwlq::pwlq4_dequant_f32_u64(values, regions, lut, out) };
    }
    let _ = t;
    scalar4(values, regions, lut, out);
}

/// As [`run4_f32`], for the i8 kernels.
#[allow(unsafe_code)] // the one call site of the i8 dequant kernels
fn run4_i8(t: Tier, values: &[u8], regions: &[u64], table: &[i8; 32], out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use qkern_kernels::x86_64::{avx2, avx512vnni};
        match t {
            // SAFETY: the CPU has the tier; the kernels check the plane lengths.
            Tier::Avx512 => return unsafe { avx512vnni::pwlq::pwlq4_dequant_i8_u64(values, regions, table, out) },
            // SAFETY: as above.
            Tier::Avx2 => return unsafe { avx2::pwlq::pwlq4_dequant_i8_u64(values, regions, table, out) },
            Tier::Scalar | Tier::Neon => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    if t == Tier::Neon {
        // SAFETY: NEON is part of the AArch64 baseline; the kernel checks the plane lengths.
        return unsafe { qkern_kernels::aarch64::neon::pwlq::pwlq4_dequant_i8_u64(values, regions, table, out) };
    }
    let _ = t;
    scalar4(values, regions, table, out);
}

/// The portable 4-bit loop: `out[i] = table[field(i)]`, block by block.
fn scalar4<T: Copy>(values: &[u8], regions: &[u64], table: &[T; 32], out: &mut [T]) {
    for (kb, chunk) in out.chunks_mut(64).enumerate() {
        let v = &values[kb * 32..kb * 32 + 32];
        let r = regions[kb];
        for (j, o) in chunk.iter_mut().enumerate() {
            let nib = if j < 32 { v[j] & 0xF } else { v[j - 32] >> 4 };
            *o = table[nib as usize | (((r >> j) & 1) as usize) << 4];
        }
    }
}

impl PwlqPacked {
    /// The dequantization table of channel `channel`: entry `f` is [`dequantize_value`] of
    /// the code of field `f` (`2^(b+1)` entries: 32, 128 or 512). See the module docs.
    pub fn dequant_table(&self, channel: usize) -> Result<Vec<f32>> {
        let ch = self.channels.get(channel).ok_or_else(|| {
            Error::InvalidParameter(format!("`channel` is {channel}; the weights have {} channels", self.n))
        })?;
        Ok((0..1u16 << (self.bits + 1)).map(|f| dequantize_value(field_to_code(f, self.q_max, self.bits), self.q_max, ch)).collect())
    }

    /// Dequantizes every channel into `out` (`N·K` floats, channel-major: `out[n·K + k]`),
    /// with the kernel of the context's tier ([`dequant_kernel_name`]); bit-exact with
    /// [`PwlqPacked::dequantize_channel_major`]. Single-threaded (it is memory-bound).
    pub fn dequantize_f32_in(&self, ctx: &Context, out: &mut [f32]) -> Result<()> {
        self.check_out("out", out.len())?;
        if self.k == 0 {
            return Ok(());
        }
        for (c, o) in out.chunks_exact_mut(self.k).enumerate() {
            self.dequantize_channel_f32_in(ctx, c, o)?;
        }
        Ok(())
    }

    /// Dequantizes one channel into `out` (`K` floats) with the kernel of the context's
    /// tier — the piece a consumer that decodes a channel at a time into a cache-resident
    /// buffer calls; bit-exact with [`PwlqPacked::dequantize_channel_major`]'s row.
    pub fn dequantize_channel_f32_in(&self, ctx: &Context, channel: usize, out: &mut [f32]) -> Result<()> {
        let table = self.dequant_table(channel)?;
        if out.len() != self.k {
            return Err(Error::ShapeMismatch(format!("`out` has {} elements, K = {}", out.len(), self.k)));
        }
        if self.bits == 4 {
            let lut: [f32; 32] = table.as_slice().try_into().map_err(|_| Error::Internal("PWLQ table size".into()))?;
            let (v, r) = planes(self, channel);
            run4_f32(tier(ctx.kernels().isa), v, r, &lut, out);
        } else {
            for (kk, x) in out.iter_mut().enumerate() {
                *x = table[self.field(channel, kk) as usize];
            }
        }
        Ok(())
    }

    /// [`PwlqPacked::dequantize_f32_in`] on the default context.
    pub fn dequantize_f32_into(&self, out: &mut [f32]) -> Result<()> {
        self.dequantize_f32_in(&Context::new()?, out)
    }

    /// Decodes 4-bit codes to i8 through one integer table per channel (`tables[n][f]`,
    /// `f` the 5-bit field; [`GridAligned::table_i8`] builds them for grid-aligned PWLQ):
    /// `out[n·K + k] = tables[n][field]`, channel-major, with the tier's `vpshufb` kernel.
    pub fn dequantize_i8_in(&self, ctx: &Context, tables: &[[i8; 32]], out: &mut [i8]) -> Result<()> {
        if self.bits != 4 {
            return Err(Error::Unsupported(format!("i8 decoding is for 4-bit PWLQ (32-entry tables); these weights are {}-bit", self.bits)));
        }
        if tables.len() != self.n {
            return Err(Error::ShapeMismatch(format!("`tables` has {} entries, the weights {} channels", tables.len(), self.n)));
        }
        self.check_out("out", out.len())?;
        let t = tier(ctx.kernels().isa);
        for (c, table) in tables.iter().enumerate() {
            let (v, r) = planes(self, c);
            run4_i8(t, v, r, table, &mut out[c * self.k..(c + 1) * self.k]);
        }
        Ok(())
    }

    fn check_out(&self, what: &'static str, got: usize) -> Result<()> {
        let needed = self.n.checked_mul(self.k).ok_or_else(|| Error::Overflow("N·K overflows usize".into()))?;
        if got < needed {
            Err(Error::BufferTooSmall { what, needed, got })
        } else if got > needed {
            Err(Error::ShapeMismatch(format!("`{what}` has {got} elements, N·K = {needed}")))
        } else {
            Ok(())
        }
    }
}

impl GridAligned {
    /// The grid-aligned codes packed like any PWLQ tensor (rank 2, per channel on axis 0
    /// or 1); its per-channel `m`, `p`, `s1`, `s2` are the grid's `(Q(i+j))·g`, `(Q·i)·g`,
    /// `i·g`, `j·g`.
    pub fn pack(&self) -> Result<PwlqPacked> {
        let channels: Vec<PwlqChannel> = self
            .ratios
            .iter()
            .zip(&self.g)
            .map(|(&(i, j), &g)| {
                let q = self.q_max as u32;
                PwlqChannel { m: (q * (i + j)) as f32 * g, p: (q * i) as f32 * g, s1: i as f32 * g, s2: j as f32 * g }
            })
            .collect();
        let params = PwlqParams { bits: self.bits, q_max: self.q_max, granularity: self.granularity, channels };
        let t = PwlqTensor { codes: self.codes.clone(), shape: self.shape.clone(), params, layout: self.layout };
        t.pack()
    }

    /// Slot `slot`'s integer codebook as an i8 table by code field (4-bit PWLQ only; an
    /// error when a level does not fit in i8 — snap with `max_level ≤ 127`).
    pub fn table_i8(&self, slot: usize) -> Result<[i8; 32]> {
        if self.bits != 4 || slot >= self.ratios.len() {
            return Err(Error::InvalidParameter(format!(
                "an i8 table needs 4-bit PWLQ and a slot below {}; got {}-bit, slot {slot}",
                self.ratios.len(),
                self.bits
            )));
        }
        let levels = self.codebook(slot);
        let mut t = [0i8; 32];
        for (o, &l) in t.iter_mut().zip(&levels) {
            *o = i8::try_from(l).map_err(|_| {
                Error::InvalidParameter(format!("slot {slot}: level {l} does not fit in i8 (snap with max_level ≤ 127)"))
            })?;
        }
        Ok(t)
    }
}

/// PWLQ weights prepared for the exact-mode GEMM: the `K × 3N` int8 matrix `[C | T | S]`
/// of centre codes, tail codes and tail signs, packed for the int8 GEMM driver (in K
/// slices whose dots are exact in i32, see the module docs), and the per-channel `p`,
/// `s1`, `s2`.
#[derive(Debug)]
pub struct PwlqGemmWeights {
    slices: Vec<KSlice>,
    n: usize,
    k: usize,
    channels: Vec<PwlqChannel>,
    fused: Option<Fused>,
}

/// Rows `k0..k0 + k` of `[C | T | S]`, packed.
#[derive(Debug)]
struct KSlice {
    k0: usize,
    k: usize,
    packed: PackedWeights,
}

/// Rows per K slice of `[C | T | S]` for level bound `Q`: the largest `L` with
/// `L·255·Q ≤ i32::MAX`, so the driver's whole-K predicate (`K·max|a − za|·max|b|`, with
/// `max|a − za| ≤ 255` for any 8-bit zero point) holds for every slice and every call:
/// each slice's dots are exact in i32, never an error.
fn slice_rows(q_max: i16) -> usize {
    (i32::MAX as u64 / (255 * (q_max.max(1) as u64))) as usize
}

/// What the fused single-pass path reads: the 4-bit planes themselves and, per channel,
/// `Σc`, `Σt`, `Σs` over K (for the zero-point correction).
#[derive(Debug)]
// Only the x86-64 kernel reads the code planes; elsewhere `Fused` is never built.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Fused {
    values: Vec<u8>,
    regions: Vec<u64>,
    blocks: usize,
    sums: Vec<[i64; 3]>,
}

/// Channels per tile of the fused path (see `fused_f32`).
const FUSED_TILE_N: usize = 32;

/// 64-element blocks per call of the fused kernel: its raw i32 sums of u8 activations ×
/// 4-bit codes (`|c|, |t| ≤ Q = 7`, `|s| ≤ 1`) are exact while `blocks·64·255·7 < 2³¹`,
/// i.e. up to 18 798 blocks (K = 1 203 072). Longer K runs in chunks of this many blocks,
/// the raw sums carried in i64 (`dot3`).
const FUSED_CHUNK_BLOCKS: usize = (i32::MAX as u64 / (64 * 255 * 7)) as usize;
const _: () = assert!((FUSED_CHUNK_BLOCKS as u64) * 64 * 255 * 7 < 1 << 31);

/// `R` rows × `NC` channels of raw sums from channel `c0` (`nc ≤ NC` real channels; the
/// rest repeat the last and are ignored by the caller), over the whole K: the kernel runs
/// on chunks of at most [`FUSED_CHUNK_BLOCKS`] blocks (exact in i32), summed in i64.
fn dot3<const R: usize, const NC: usize>(f: &Fused, a: [&[u8]; R], c0: usize, nc: usize) -> [[[i64; 3]; NC]; R] {
    let mut out = [[[0i64; 3]; NC]; R];
    for b0 in (0..f.blocks).step_by(FUSED_CHUNK_BLOCKS) {
        let b1 = (b0 + FUSED_CHUNK_BLOCKS).min(f.blocks);
        let raw = dot3_chunk::<R, NC>(f, a.map(|r| &r[b0 * 64..b1 * 64]), c0, nc, b0, b1);
        for (o, w) in out.iter_mut().zip(&raw) {
            for (oc, wc) in o.iter_mut().zip(w) {
                for (x, &y) in oc.iter_mut().zip(wc) {
                    *x += y as i64;
                }
            }
        }
    }
    out
}

/// [`dot3`] on blocks `b0..b1` (at most [`FUSED_CHUNK_BLOCKS`]); `a` holds those blocks'
/// activations.
#[allow(unsafe_code)] // the one call site of the fused kernel
fn dot3_chunk<const R: usize, const NC: usize>(f: &Fused, a: [&[u8]; R], c0: usize, nc: usize, b0: usize, b1: usize) -> [[[i32; 3]; NC]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        let rb = f.blocks * 32;
        let v: [&[u8]; NC] = core::array::from_fn(|j| {
            let c = c0 + j.min(nc - 1);
            &f.values[c * rb + b0 * 32..c * rb + b1 * 32]
        });
        let r: [&[u64]; NC] = core::array::from_fn(|j| {
            let c = c0 + j.min(nc - 1);
            &f.regions[c * f.blocks + b0..c * f.blocks + b1]
        });
        // SAFETY: `Fused` exists only when the context's tier is AVX-512 VNNI (checked
        // against the CPU when the context was built); the kernel checks the lengths.
        unsafe { qkern_kernels::x86_64::avx512vnni::pwlq::pwlq4_dot3_u8::<R, NC>(a, v, r) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (f, a, c0, nc, b0, b1);
        unreachable!("the fused path is built only on x86-64")
    }
}

impl PwlqGemmWeights {
    /// Prepares `w` for the GEMM kernels of `ctx`.
    pub fn new_in(ctx: &Context, w: &PwlqPacked) -> Result<Self> {
        let (n, k) = (w.n, w.k);
        if n == 0 || k == 0 {
            return Err(Error::InvalidParameter(format!("exact-mode GEMM needs N, K ≥ 1; got N = {n}, K = {k}")));
        }
        let cols = n.checked_mul(3).filter(|c| c.checked_mul(k).is_some()).ok_or_else(|| Error::Overflow("3·N·K overflows usize".into()))?;
        let mut b = vec![0i8; cols * k];
        for c in 0..n {
            for kk in 0..k {
                let (x, y, z) = decompose(w.code(c, kk), w.q_max);
                let row = kk * cols;
                // |c|, |t| ≤ Q ≤ 127 and |s| ≤ 1: the casts are exact.
                b[row + c] = x as i8;
                b[row + n + c] = y as i8;
                b[row + 2 * n + c] = z as i8;
            }
        }
        let step = slice_rows(w.q_max);
        let mut slices = Vec::with_capacity(k.div_ceil(step));
        for k0 in (0..k).step_by(step) {
            let kl = step.min(k - k0);
            let part = MatrixRef::new(&b[k0 * cols..(k0 + kl) * cols], kl, cols);
            let packed = PackedWeights::new_in(ctx, part, WeightQuant::zero_point_only(PerChannel::Tensor(0)))?;
            slices.push(KSlice { k0, k: kl, packed });
        }
        let blocks = w.blocks();
        // 4-bit only (Q = 7, which FUSED_CHUNK_BLOCKS assumes); any K (`dot3` chunks it).
        let fused = (cfg!(target_arch = "x86_64") && w.bits == 4 && w.q_max == 7 && tier(ctx.kernels().isa) == Tier::Avx512).then(|| {
            let sums = (0..n)
                .map(|c| {
                    let mut s = [0i64; 3];
                    for kk in 0..k {
                        let (x, y, z) = decompose(w.code(c, kk), w.q_max);
                        s[0] += x as i64;
                        s[1] += y as i64;
                        s[2] += z as i64;
                    }
                    s
                })
                .collect();
            Fused { values: w.values.clone(), regions: w.regions.clone(), blocks, sums }
        });
        Ok(PwlqGemmWeights { slices, n, k, channels: w.channels.clone(), fused })
    }

    /// Prepares `w` for the default context.
    pub fn new(w: &PwlqPacked) -> Result<Self> {
        Self::new_in(&Context::new()?, w)
    }

    /// Channels `N`.
    pub fn channels(&self) -> usize {
        self.n
    }

    /// Reduction length `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The packed `[C | T | S]` int8 weights of the first K slice — all of K unless
    /// `K·255·Q` passes i32 (see [`PwlqGemmWeights::k_slices`]); every slice has the same
    /// kernel (for benchmarks and reports).
    pub fn packed(&self) -> &PackedWeights {
        &self.slices[0].packed
    }

    /// How many K slices `[C | T | S]` is packed in: 1 while `K·255·Q ≤ i32::MAX`, else
    /// `⌈K / ⌊i32::MAX / (255·Q)⌋⌉` (each exact in i32, summed in i64).
    pub fn k_slices(&self) -> usize {
        self.slices.len()
    }

    /// The three exact dot products of every output, `M × 3N` i64 row-major into `dots`:
    /// `dots[m][n]` = `Dc`, `dots[m][N + n]` = `Dt`, `dots[m][2N + n]` = `Ds`. Exact for
    /// any K: each K slice runs through the int8 GEMM driver in i32 (exact by the slice
    /// bound), the slices are summed in i64.
    pub fn dots_in<A: Int8>(&self, ctx: &Context, a: MatrixRef<'_, A>, za: A, dots: &mut [i64]) -> Result<()> {
        let cols = 3 * self.n;
        let need = a.rows.checked_mul(cols).ok_or_else(|| Error::Overflow("M·3N overflows usize".into()))?;
        if dots.len() != need {
            return Err(Error::ShapeMismatch(format!("`dots` has {} elements, M·3N = {need}", dots.len())));
        }
        if a.cols != self.k {
            return Err(Error::ShapeMismatch(format!("`a` has {} columns, the PWLQ weights K = {}", a.cols, self.k)));
        }
        check_matrix("a", a.data.len(), a.rows, a.cols, a.stride)?;
        dots.fill(0);
        if a.rows == 0 {
            return Ok(());
        }
        let mut part = vec![0i32; need];
        for s in &self.slices {
            // Columns k0..k0+k of every row: `a` was checked, so (M−1)·stride + K ≤ len
            // and the sub-matrix from offset k0 is in bounds.
            let sub = MatrixRef::new(&a.data[s.k0..], a.rows, s.k).with_stride(a.stride);
            ctx.gemm_i32(Activations::new(sub, za, 1.0), &s.packed, None, MatrixMut::new(&mut part, a.rows, cols))?;
            for (d, &p) in dots.iter_mut().zip(&part) {
                *d += p as i64;
            }
        }
        Ok(())
    }

    /// The exact-mode PWLQ GEMM: `c[m][n] = sa·Σ_k (a[m][k] − za)·ŵ[k][n] (+ bias[n])`,
    /// bit-exact with [`super::gemm_exact_ref`] (same exact i64 integer sums, same f32
    /// combine) for any K: no overflow error. `c` is `M × N`, `bias` N values.
    pub fn gemm_f32_in<A: Int8>(&self, ctx: &Context, a: Activations<'_, A>, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
        check_scale("a.scale", a.scale)?;
        if let Some(b) = bias.filter(|b| b.len() != self.n) {
            return Err(Error::ShapeMismatch(format!("`bias` has {} entries, the weights {} channels", b.len(), self.n)));
        }
        if a.matrix.cols != self.k {
            return Err(Error::ShapeMismatch(format!("`a` has {} columns, the PWLQ weights K = {}", a.matrix.cols, self.k)));
        }
        if c.rows != a.matrix.rows || c.cols != self.n {
            return Err(Error::ShapeMismatch(format!("`c` is {}×{}, the product is {}×{}", c.rows, c.cols, a.matrix.rows, self.n)));
        }
        check_matrix("c", c.data.len(), c.rows, c.cols, c.stride)?;
        // The fused path indexes A directly: check it here, not only in the driver.
        check_matrix("a", a.matrix.data.len(), a.matrix.rows, a.matrix.cols, a.matrix.stride)?;
        let m = a.matrix.rows;
        if let Some(f) = self.fused.as_ref().filter(|_| self.uses_fused(ctx, m)) {
            self.fused_f32(f, a, bias, c);
            return Ok(());
        }
        let mut dots = vec![0i64; m * 3 * self.n];
        self.dots_in(ctx, a.matrix, a.zero_point, &mut dots)?;
        let n = self.n;
        for r in 0..m {
            let d = &dots[r * 3 * n..(r + 1) * 3 * n];
            let row = &mut c.data[r * c.stride..r * c.stride + n];
            for (j, y) in row.iter_mut().enumerate() {
                let t = DotTriple { centre: d[j], tail: d[n + j], tail_sign: d[2 * n + j] };
                *y = combine_exact(t, &self.channels[j], a.scale, bias.map(|b| b[j]));
            }
        }
        Ok(())
    }

    /// Whether a call of `m` rows on `ctx` runs the fused single-pass kernel
    /// (`pwlq4_dot3_u8__avx512vnni`: 4-bit weights, an AVX-512 VNNI context of one thread,
    /// any `m ≥ 1` and any K — measured faster than the driver on `[C | T | S]` at
    /// M = 1…128, which streams three int8 matrices) instead of the int8 GEMM driver on
    /// `[C | T | S]`.
    pub fn uses_fused(&self, ctx: &Context, m: usize) -> bool {
        self.fused.is_some() && m > 0 && ctx.threads() == 1 && tier(ctx.kernels().isa) == Tier::Avx512
    }

    /// The fused path: per row, the activations (as u8: i8 ones XOR 0x80, the zero point
    /// likewise) zero-padded to whole blocks, four channels per kernel call; then
    /// `D = raw − za·Σw` in i64 (`raw` from `dot3`, exact for any K) and [`combine_exact`].
    #[allow(clippy::needless_range_loop)] // raw[row][channel] beside emit(row, channel)
    fn fused_f32<A: Int8>(&self, f: &Fused, a: Activations<'_, A>, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) {
        let (m, n, k) = (a.matrix.rows, self.n, self.k);
        let flip = if A::SIGNED { 0x80u8 } else { 0 };
        let za = ((a.zero_point.to_i32() as u8) ^ flip) as i64;
        let mut rows = vec![0u8; m * f.blocks * 64];
        for (r, dst) in rows.chunks_exact_mut(f.blocks * 64).enumerate() {
            let src = &a.matrix.data[r * a.matrix.stride..r * a.matrix.stride + k];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = (s.to_i32() as u8) ^ flip;
            }
        }
        let row = |r: usize| &rows[r * f.blocks * 64..(r + 1) * f.blocks * 64];
        let (out, ld) = (c.data, c.stride);
        let mut emit = |r: usize, ch: usize, raw: [i64; 3]| {
            let s = &f.sums[ch];
            let t = DotTriple { centre: raw[0] - za * s[0], tail: raw[1] - za * s[1], tail_sign: raw[2] - za * s[2] };
            out[r * ld + ch] = combine_exact(t, &self.channels[ch], a.scale, bias.map(|b| b[ch]));
        };
        // Channel tiles of FUSED_TILE_N outermost, so a tile's codes (80 KiB) stay in L2
        // while every row group reads them; within a tile, groups of 8 rows run 8 rows × 1 channel
        // per call, one row 4 channels, 2–7 rows 4 rows × 2 channels (≤ 24 accumulators).
        for ct in (0..n).step_by(FUSED_TILE_N) {
            let ce = (ct + FUSED_TILE_N).min(n);
            let mut r0 = 0;
            while r0 < m {
                let nr = if m - r0 >= 8 { 8 } else { (m - r0).min(4) };
                if nr == 8 {
                    // 8 rows × 1 channel: the decode is shared by 24 `vpdpbusd`.
                    let ar: [&[u8]; 8] = core::array::from_fn(|i| row(r0 + i));
                    for c0 in ct..ce {
                        let raw = dot3::<8, 1>(f, ar, c0, 1);
                        for (i, rw) in raw.iter().enumerate() {
                            emit(r0 + i, c0, rw[0]);
                        }
                    }
                } else if nr == 1 {
                    for c0 in (ct..ce).step_by(4) {
                        let nc = (ce - c0).min(4);
                        let raw = dot3::<1, 4>(f, [row(r0)], c0, nc);
                        for j in 0..nc {
                            emit(r0, c0 + j, raw[0][j]);
                        }
                    }
                } else {
                    let ar: [&[u8]; 4] = core::array::from_fn(|i| row(r0 + i.min(nr - 1)));
                    for c0 in (ct..ce).step_by(2) {
                        let nc = (ce - c0).min(2);
                        let raw = dot3::<4, 2>(f, ar, c0, nc);
                        for i in 0..nr {
                            for j in 0..nc {
                                emit(r0 + i, c0 + j, raw[i][j]);
                            }
                        }
                    }
                }
                r0 += nr;
            }
        }
    }

    /// [`PwlqGemmWeights::gemm_f32_in`] on the default context.
    pub fn gemm_f32<A: Int8>(&self, a: Activations<'_, A>, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
        self.gemm_f32_in(&Context::new()?, a, bias, c)
    }
}
