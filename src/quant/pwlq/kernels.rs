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
//! AVX-512 paths (one thread, 4-bit: [`PwlqGemmWeights::fused_kernel_name`]) likewise run
//! K in chunks whose raw i32 sums are exact, summed in i64 (see `FUSED_CHUNK_BLOCKS`).
//! The per-channel epilogue is [`combine_exact`] on the i64 dots:
//! `((s1·Dc + s2·Dt) + p·Ds)·sa (+ bias)`, each step one f32 operation, each dot
//! converted i64 → f32 once (round to nearest even), exactly as the reference does.
//!
//! The fused GEMM kernel (two or more rows) reads the codes one byte per weight in
//! 16-channel panels and decodes them in registers (one XOR, three `vpshufb` per 24
//! `vpdpbusd`), an 8 × 16 × 3 accumulator tile. On AArch64 the same panels run on
//! `qs8_pwlq_dot3_gemm_8x16c4__dotprod` (dotprod and i8mm contexts: one `eor`, three
//! `tbl` per 24 `sdot`, 8 rows × 4 columns × 3 planes at a time) or
//! `qs8_pwlq_dot3_gemm_8x16c4__neon` (`tbl`, then `smull`/`smlal`/`sadalp`) for every M
//! ≥ 1, one thread, with i8 activations (u8 ones and the zero point XOR 0x80) and the
//! scalar epilogue ([`combine_exact`] on the i64 dots). Int8 `[C | T | S]` panels, tried first,
//! need no decode but stream three bytes per weight: at M = 8–16 (N = K = 4096) they ran
//! DRAM-bound at 1/8–1/6 of the int8 GEMM, which streams one.

use qkern_kernels::{Int8, Isa};

use super::{DotTriple, GridAligned, grid_level, PwlqChannel, PwlqPacked, PwlqParams, PwlqTensor, combine_exact, decompose, dequantize_value, field_to_code};
use crate::dispatch::Context;
use crate::error::{Error, Result, check_matrix, check_scale};
use crate::gemm::{Activations, MatrixMut, MatrixRef, PackedWeights, PerChannel, WeightQuant};
use crate::quant::{Granularity, LevelParams, LevelSet, PackedCodes};

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
        let ch = self.channel_at(channel)?;
        Ok((0..1u16 << (self.bits + 1)).map(|f| self.field_value(ch, f)).collect())
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
        let ch = self.channel_at(channel)?;
        if out.len() != self.k {
            return Err(Error::ShapeMismatch(format!("`out` has {} elements, K = {}", out.len(), self.k)));
        }
        if self.bits == 4 {
            // On the stack, not `dequant_table`'s Vec: a consumer calls this per channel
            // of a cache-resident row, and at K = 4096 the Vec cost ~60 ns a call, a third
            // of the AVX-512 kernel's time. The same entries.
            let lut: [f32; 32] = core::array::from_fn(|f| self.field_value(ch, f as u16));
            let (v, r) = planes(self, channel);
            run4_f32(tier(ctx.kernels().isa), v, r, &lut, out);
        } else {
            let table = self.dequant_table(channel)?;
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

    /// Entry `f` of a channel's dequantization table: [`dequantize_value`] of the code of
    /// field `f`.
    fn field_value(&self, ch: &PwlqChannel, f: u16) -> f32 {
        dequantize_value(field_to_code(f, self.q_max, self.bits), self.q_max, ch)
    }

    /// Channel `channel`'s parameters, or an error naming the argument.
    fn channel_at(&self, channel: usize) -> Result<&PwlqChannel> {
        self.channels.get(channel).ok_or_else(|| {
            Error::InvalidParameter(format!("`channel` is {channel}; the weights have {} channels", self.n))
        })
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

    /// The grid-aligned weights as [`PackedCodes`] `B[K][N]` for the codebook GEMM
    /// kernels ([`crate::codebook::CodebookWeights`]): one integer level set — the
    /// distinct levels of the shared table, ascending (4-bit codes when there are at most
    /// 16, else 5-bit) — and one scale per column, the slot's grid `g`; so a weight's
    /// value is `(L as f32)·g`, what [`GridAligned::dequantize`] gives.
    ///
    /// Needs 4-bit PWLQ, a rank-2 tensor with one slot per channel (axis 1; axis 0, a
    /// `W[N][K]`, is transposed), one ratio shared by every slot with `g > 0` (snap with
    /// [`GridScope::Shared`](super::GridScope::Shared): the codebook kernels take one
    /// table per tensor) and levels within int8 (`max_level ≤ 127`); otherwise
    /// [`Error::Unsupported`]. A slot with `g = 0` (`m = 0`) weighs nothing: its codes
    /// are stored as the level 0 with scale 1, so its weights are `+0.0`.
    pub fn codebook_codes(&self) -> Result<PackedCodes> {
        let (k, n, axis) = match (self.shape.as_slice(), self.granularity) {
            (&[r, c], Granularity::PerChannel { axis: 1 }) => (r, c, 1),
            (&[r, c], Granularity::PerChannel { axis: 0 }) => (c, r, 0),
            _ => {
                return Err(Error::Unsupported(format!(
                    "codebook weights need a rank-2 tensor snapped per channel on axis 0 or 1; got shape {:?}, {:?}",
                    self.shape, self.granularity
                )));
            }
        };
        if self.bits != 4 {
            return Err(Error::Unsupported(format!(
                "the codebook kernels take at most 32 levels: 4-bit PWLQ; these weights are {}-bit",
                self.bits
            )));
        }
        let mut live = self.ratios.iter().zip(&self.g).filter(|&(_, &g)| g > 0.0).map(|(&r, _)| r);
        let ratio = live.next().unwrap_or((1, 0));
        if let Some(other) = live.find(|&r| r != ratio) {
            return Err(Error::Unsupported(format!(
                "the codebook kernels take one table per tensor, but the slots have ratios {ratio:?} and {other:?}: \
                 snap with GridScope::Shared"
            )));
        }
        let q = self.q_max;
        let level = |code: i16| grid_level(code, q, ratio);
        let mut levels: Vec<i32> = (-(2 * q + 1)..=2 * q + 1).map(level).collect();
        levels.sort_unstable();
        levels.dedup();
        let top = levels.iter().map(|l| l.abs()).max().unwrap_or(0);
        if top > 127 {
            return Err(Error::Unsupported(format!(
                "the shared table reaches level {top}; the codebook kernels need int8 levels (snap with max_level ≤ 127)"
            )));
        }
        let small: Vec<i16> = levels.iter().map(|&l| l as i16).collect(); // |l| ≤ 127
        let set = LevelSet::codebook_i16(if levels.len() <= 16 { 4 } else { 5 }, &small)?;
        // Every code's level is in `levels` (built from all codes above).
        let code_of = |c: i16| levels.binary_search(&level(c)).unwrap_or(0) as u8;
        let zero = code_of(0);
        let mut codes = vec![0u8; k * n];
        for kk in 0..k {
            for c in 0..n {
                let i = if axis == 1 { kk * n + c } else { c * k + kk };
                codes[kk * n + c] = if self.g[c] > 0.0 { code_of(self.codes[i]) } else { zero };
            }
        }
        let scales = self.g.iter().map(|&g| if g > 0.0 { g } else { 1.0 }).collect();
        PackedCodes::pack(&codes, k, n, &LevelParams::per_channel(set, 1, scales)?)
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

/// What the fused single-pass paths read: the 4-bit planes themselves (one row: the
/// GEMV kernel), the same codes one byte per weight in the panels of the GEMM
/// microkernel (two or more rows) — both decoded in registers — and, per channel, `Σc`,
/// `Σt`, `Σs` over K (for the zero-point correction).
#[derive(Debug)]
// Only the x86-64 GEMV kernel reads the planes (the ARM tiers run the panels for every M).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Fused {
    /// The kernel family (the context's tier when the weights were prepared).
    kind: FusedKind,
    values: Vec<u8>,
    regions: Vec<u64>,
    blocks: usize,
    /// `⌈N/16⌉` panels of `steps` K steps ([`PANEL_NR`] channels × 4 K, one byte per
    /// weight, the layout of `pwlq_dot3_gemm_8x16c4`); padding channels and K are zero.
    panels: Vec<u8>,
    /// `⌈K/4⌉`.
    steps: usize,
    sums: Vec<[i64; 3]>,
}

/// Channels per panel of the GEMM microkernel, and bytes per K step of a panel (one
/// layout on every architecture).
#[cfg(target_arch = "aarch64")]
use qkern_kernels::aarch64::neon::pwlq::{DOT3_PANEL_NR as PANEL_NR, DOT3_STEP_BYTES as STEP_BYTES};
#[cfg(target_arch = "x86_64")]
use qkern_kernels::x86_64::avx512vnni::pwlq::{DOT3_PANEL_NR as PANEL_NR, DOT3_STEP_BYTES as STEP_BYTES};
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const PANEL_NR: usize = 16;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const STEP_BYTES: usize = 64;

/// Which fused exact-mode kernels a tier runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FusedKind {
    /// AVX-512 VNNI: the GEMV kernel on the 4-bit planes (M = 1), the 8 × 16 panel
    /// kernel (u8 activations) otherwise.
    Avx512,
    /// AVX2: the GEMV kernel on the 4-bit planes (M = 1, `vpmaddubsw`); more rows take
    /// the int8 GEMM driver on `[C | T | S]`.
    Avx2,
    /// AArch64 dotprod (and i8mm, which includes it): the `sdot` panel kernel, i8
    /// activations, every M.
    Dotprod,
    /// AArch64 NEON: the `smull`/`smlal`/`sadalp` panel kernel, i8 activations, every M.
    Neon,
}

impl FusedKind {
    /// The fused kernels of `isa`, if it has any (compiled for this architecture only).
    fn of(isa: Isa) -> Option<FusedKind> {
        match isa {
            Isa::Avx512Vnni | Isa::Amx if cfg!(target_arch = "x86_64") => Some(FusedKind::Avx512),
            Isa::Avx2 | Isa::AvxVnni if cfg!(target_arch = "x86_64") => Some(FusedKind::Avx2),
            Isa::Dotprod | Isa::I8mm if cfg!(target_arch = "aarch64") => Some(FusedKind::Dotprod),
            Isa::Neon if cfg!(target_arch = "aarch64") => Some(FusedKind::Neon),
            _ => None,
        }
    }

    /// Whether the kernels take the activations as i8 (`sdot`, `smull`) rather than u8
    /// (`vpdpbusd`).
    fn signed_activations(self) -> bool {
        matches!(self, FusedKind::Dotprod | FusedKind::Neon)
    }

    /// Whether the kind has a kernel for `m` rows: AVX2 only the one-row GEMV.
    fn runs(self, m: usize) -> bool {
        m > 0 && (self != FusedKind::Avx2 || m == 1)
    }

    /// The kernel a call of `m` rows runs (where [`Self::runs`] holds).
    fn kernel_name(self, m: usize) -> &'static str {
        match (self, m) {
            (FusedKind::Avx512, 1) => "pwlq4_dot3_u8__avx512vnni",
            (FusedKind::Avx2, _) => "pwlq4_dot3_u8__avx2",
            (FusedKind::Avx512, _) => "qs8_pwlq_dot3_gemm_8x16c4__avx512vnni",
            (FusedKind::Dotprod, _) => "qs8_pwlq_dot3_gemm_8x16c4__dotprod",
            (FusedKind::Neon, _) => "qs8_pwlq_dot3_gemm_8x16c4__neon",
        }
    }
}

/// The fused exact-mode kernel a one-thread call of `m` rows on 4-bit weights runs at
/// `isa`, or `None` where that call takes the int8 GEMM driver on `[C | T | S]` (for
/// reports; [`PwlqGemmWeights::fused_kernel_name`] answers for given weights).
pub fn fused_kernel_name_for(isa: Isa, m: usize) -> Option<&'static str> {
    FusedKind::of(isa).filter(|k| k.runs(m)).map(|k| k.kernel_name(m))
}

/// Rows per call of the GEMM microkernel (its 8 × 16 × 3 = 24 accumulators).
const PANEL_MR: usize = 8;

/// The 4-bit codes of `w` as the microkernel's panels (see [`Fused::panels`]): byte
/// `nibble | region·0x80` of each weight, 16 channels × 4 K per 64-byte step.
fn pack_panels(w: &PwlqPacked) -> Vec<u8> {
    let (n, k) = (w.n, w.k);
    let steps = k.div_ceil(4);
    let mut out = vec![0u8; n.div_ceil(PANEL_NR) * steps * STEP_BYTES];
    // As the int8 weights: huge pages before the first write (the panels stream).
    crate::gemm::advise_huge_pages(&mut out);
    for c in 0..n {
        let (p, col) = (c / PANEL_NR, c % PANEL_NR);
        for kk in 0..k {
            let f = w.field(c, kk);
            out[(p * steps + kk / 4) * STEP_BYTES + col * 4 + kk % 4] = (f & 0xF) as u8 | ((f >> 4) as u8) << 7;
        }
    }
    out
}

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

/// Raw sums of row group `a` (`nr ≤ 8` rows packed step-major, `4·nr·(s1 − s0)` bytes;
/// see `pwlq_dot3_gemm_8x16c4`) × steps `s0..s1` of panel `p` (within the i32 bound of
/// one chunk) into `out[..nr]`, `[plane][col]`.
fn panel_chunk(f: &Fused, a: &[u8], p: usize, s0: usize, s1: usize, out: &mut [[[i32; PANEL_NR]; 3]; PANEL_MR]) {
    let base = p * f.steps * STEP_BYTES;
    let panel = &f.panels[base + s0 * STEP_BYTES..base + s1 * STEP_BYTES];
    let nr = a.len() / (4 * (s1 - s0)).max(1);
    fn run<const R: usize>(kind: FusedKind, a: &[u8], panel: &[u8], out: &mut [[[i32; PANEL_NR]; 3]]) {
        out[..R].copy_from_slice(&microkernel::<R>(kind, a, panel));
    }
    let k = f.kind;
    match nr {
        8 => run::<8>(k, a, panel, out),
        7 => run::<7>(k, a, panel, out),
        6 => run::<6>(k, a, panel, out),
        5 => run::<5>(k, a, panel, out),
        4 => run::<4>(k, a, panel, out),
        3 => run::<3>(k, a, panel, out),
        2 => run::<2>(k, a, panel, out),
        _ => run::<1>(k, a, panel, out),
    }
}

/// One call of the GEMM microkernel of `kind`.
#[allow(unsafe_code)] // the one call site of the panel kernels
fn microkernel<const R: usize>(kind: FusedKind, a: &[u8], panel: &[u8]) -> [[[i32; PANEL_NR]; 3]; R] {
    let _ = kind;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `Fused` of this kind exists only when the context's tier is AVX-512
        // VNNI (checked against the CPU when the context was built), and runs only on
        // such a context (`uses_fused`); the kernel checks the lengths.
        unsafe { qkern_kernels::x86_64::avx512vnni::pwlq::pwlq_dot3_gemm_8x16c4::<R>(a, panel) }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use qkern_kernels::aarch64::{dotprod, neon};
        match kind {
            // SAFETY: a dotprod `Fused` runs only on a context whose tier has dotprod
            // (checked against the CPU when the context was built); the kernel checks
            // the lengths.
            FusedKind::Dotprod => unsafe { dotprod::pwlq::pwlq_dot3_gemm_8x16c4::<R>(a, panel) },
            // SAFETY: NEON is the AArch64 baseline; the kernel checks the lengths.
            _ => unsafe { neon::pwlq::pwlq_dot3_gemm_8x16c4::<R>(a, panel) },
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (a, panel);
        unreachable!("the fused path is built only on x86-64 and AArch64")
    }
}

/// The vectorised epilogue of one panel row (`pwlq_combine_row16`), for dots that fit
/// i32.
#[allow(unsafe_code)] // the one call site of the combine kernel
fn combine_row16(raw: &[[i32; 16]; 3], zsum: &[[i32; 16]; 3], params: &[[f32; 16]; 3], sa: f32, bias: Option<&[f32; 16]>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as for the microkernel (AVX-512 F is part of the tier); the kernel
        // checks `out`'s length.
        unsafe { qkern_kernels::x86_64::avx512vnni::pwlq::pwlq_combine_row16(raw, zsum, params, sa, bias, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (raw, zsum, params, sa, bias, out);
        unreachable!("the fused path is built only on x86-64")
    }
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
        match f.kind {
            // SAFETY: an AVX2 `Fused` runs only on a context whose tier is AVX2 (checked
            // against the CPU when the context was built); the kernel checks the lengths.
            FusedKind::Avx2 => unsafe { qkern_kernels::x86_64::avx2::pwlq::pwlq4_dot3_u8::<R, NC>(a, v, r) },
            // SAFETY: any other x86 `Fused` is AVX-512 VNNI's, run only on such a
            // context; the kernel checks the lengths.
            _ => unsafe { qkern_kernels::x86_64::avx512vnni::pwlq::pwlq4_dot3_u8::<R, NC>(a, v, r) },
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (f, a, c0, nc, b0, b1);
        unreachable!("the fused path is built only on x86-64")
    }
}

/// One row of a panel tile: `out[j]` = [`combine_exact`] of the raw sums minus `za·Σw`
/// (`z`), for the channels `ch` (the bias test hoisted out of the loop, which the
/// per-output epilogue otherwise pays for on every one of the M·N outputs).
#[inline]
fn store_row(out: &mut [f32], raw: &[[i64; PANEL_NR]; 3], z: &[[i64; 3]], ch: &[PwlqChannel], sa: f32, bias: Option<&[f32]>) {
    let dots = |j: usize| DotTriple { centre: raw[0][j] - z[j][0], tail: raw[1][j] - z[j][1], tail_sign: raw[2][j] - z[j][2] };
    match bias {
        Some(b) => {
            for (j, ((y, c), &b)) in out.iter_mut().zip(ch).zip(b).enumerate() {
                *y = combine_exact(dots(j), c, sa, Some(b));
            }
        }
        None => {
            for (j, (y, c)) in out.iter_mut().zip(ch).enumerate() {
                *y = combine_exact(dots(j), c, sa, None);
            }
        }
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
        let kind = FusedKind::of(ctx.kernels().isa).filter(|_| w.bits == 4 && w.q_max == 7);
        let fused = kind.map(|kind| {
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
            // The GEMV kernel's planes: only AVX-512 has one.
            let gemv = matches!(kind, FusedKind::Avx512 | FusedKind::Avx2);
            let (values, regions) = if gemv { (w.values.clone(), w.regions.clone()) } else { (Vec::new(), Vec::new()) };
            // The panels of the GEMM kernel: AVX2 has none.
            let panels = if kind == FusedKind::Avx2 { Vec::new() } else { pack_panels(w) };
            Fused { kind, values, regions, blocks, panels, steps: k.div_ceil(4), sums }
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

    /// Whether a call of `m` rows on `ctx` runs a fused single-pass kernel (4-bit
    /// weights prepared for a context of the same kernel family — AVX-512 VNNI, AArch64
    /// dotprod/i8mm or AArch64 NEON — a context of one thread, any `m ≥ 1` and any K;
    /// see [`PwlqGemmWeights::fused_kernel_name`]) instead of the int8 GEMM driver on
    /// `[C | T | S]` followed by a separate combine pass.
    pub fn uses_fused(&self, ctx: &Context, m: usize) -> bool {
        let kind = FusedKind::of(ctx.kernels().isa);
        self.fused.as_ref().is_some_and(|f| Some(f.kind) == kind && f.kind.runs(m)) && ctx.threads() == 1
    }

    /// The fused kernel a call of `m` rows on `ctx` runs, or `None` for the driver path:
    /// `m = 1`, `pwlq4_dot3_u8__avx512vnni` (decodes the 4-bit planes in registers,
    /// four channels per call: the codes are what streams); `m ≥ 2`,
    /// `qs8_pwlq_dot3_gemm_8x16c4__avx512vnni` (8 rows × 16 channels × 3 accumulators
    /// on prepacked int8 `[C | T | S]` panels, the tile of the int8 GEMM kernel with three
    /// planes instead of two column vectors).
    ///
    /// On AArch64 every `m` runs the panel kernel: `qs8_pwlq_dot3_gemm_8x16c4__dotprod`
    /// (dotprod and i8mm contexts: `tbl` decode, three `sdot` per row and 4 columns) or
    /// `qs8_pwlq_dot3_gemm_8x16c4__neon` (`tbl` decode, `smull`/`smlal`/`sadalp`).
    pub fn fused_kernel_name(&self, ctx: &Context, m: usize) -> Option<&'static str> {
        if !self.uses_fused(ctx, m) {
            return None;
        }
        Some(self.fused.as_ref()?.kind.kernel_name(m))
    }

    /// The fused path: per row, the activations in the kernel's type (u8 on AVX-512: i8
    /// ones XOR 0x80; i8 on AArch64: u8 ones XOR 0x80; the zero point likewise, so
    /// `a − za` is unchanged) zero-padded to whole blocks; the raw sums of the kernel
    /// ([`PwlqGemmWeights::fused_kernel_name`]), exact for any K; then
    /// `D = raw − za·Σw` in i64 and [`combine_exact`] straight into `c` (no `M × 3N`
    /// intermediate).
    #[allow(clippy::needless_range_loop)] // raw[row][channel] beside emit(row, channel)
    fn fused_f32<A: Int8>(&self, f: &Fused, a: Activations<'_, A>, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) {
        let (m, n, k) = (a.matrix.rows, self.n, self.k);
        let signed = f.kind.signed_activations();
        let flip = if A::SIGNED == signed { 0 } else { 0x80u8 };
        let zb = (a.zero_point.to_i32() as u8) ^ flip;
        let za = if signed { zb as i8 as i64 } else { zb as i64 };
        let u8_of = |v: A| (v.to_i32() as u8) ^ flip;
        let src = |r: usize| &a.matrix.data[r * a.matrix.stride..r * a.matrix.stride + k];
        let (out, ld) = (c.data, c.stride);
        // za·Σw per channel, once per call rather than per output.
        let zsum: Vec<[i64; 3]> = f.sums.iter().map(|s| s.map(|v| za * v)).collect();
        let value = |ch: usize, raw: [i64; 3]| {
            let z = &zsum[ch];
            let t = DotTriple { centre: raw[0] - z[0], tail: raw[1] - z[1], tail_sign: raw[2] - z[2] };
            combine_exact(t, &self.channels[ch], a.scale, bias.map(|b| b[ch]))
        };
        if m == 1 && matches!(f.kind, FusedKind::Avx512 | FusedKind::Avx2) {
            // One row: the GEMV kernel on the 4-bit planes (the codes are the bytes that
            // stream; decoding them in registers beats reading the 3-byte panels), four
            // channels per call, on the row zero-padded to whole blocks.
            let mut row = vec![0u8; f.blocks * 64];
            for (d, &v) in row.iter_mut().zip(src(0)) {
                *d = u8_of(v);
            }
            if f.kind == FusedKind::Avx2 {
                // One channel per call: its six accumulators and the decode fit 16 ymm.
                for c in 0..n {
                    out[c] = value(c, dot3::<1, 1>(f, [&row], c, 1)[0][0]);
                }
                return;
            }
            for c0 in (0..n).step_by(4) {
                let nc = (n - c0).min(4);
                let raw = dot3::<1, 4>(f, [&row], c0, nc);
                for j in 0..nc {
                    out[c0 + j] = value(c0 + j, raw[0][j]);
                }
            }
            return;
        }
        // Two or more rows: the 8 × 16 GEMM microkernel on the [C | T | S] panels. The
        // rows go in groups of PANEL_MR, each packed step-major as the kernel reads it
        // (group at row r0: 4·steps·r0 bytes in), zero-padded to whole steps.
        let steps = f.steps;
        let mut packed = vec![0u8; m * 4 * steps];
        for (r0, group) in (0..m).step_by(PANEL_MR).zip(packed.chunks_mut(PANEL_MR * 4 * steps)) {
            let nr = (m - r0).min(PANEL_MR);
            for r in 0..nr {
                for (st, quad) in src(r0 + r).chunks(4).enumerate() {
                    let at = (st * nr + r) * 4;
                    for (d, &v) in group[at..at + quad.len()].iter_mut().zip(quad) {
                        *d = u8_of(v);
                    }
                }
            }
        }
        // Panel outermost, so that a panel (16 channels × K bytes: 64 KiB at K = 4096)
        // stays in L1/L2 while every row group reads it.
        let chunk = 16 * FUSED_CHUNK_BLOCKS;
        let mut raw = [[[0i32; PANEL_NR]; 3]; PANEL_MR];
        let mut sums = [[[0i64; PANEL_NR]; 3]; PANEL_MR];
        for p in 0..n.div_ceil(PANEL_NR) {
            let c0 = p * PANEL_NR;
            let nc = (n - c0).min(PANEL_NR);
            let (ch, z) = (&self.channels[c0..c0 + nc], &zsum[c0..c0 + nc]);
            let bias = bias.map(|b| &b[c0..c0 + nc]);
            // One K chunk: every dot, `za·Σw` and raw sum fits i32 (the chunk bound, with
            // |a|, |a − za| ≤ 255), so the vector epilogue converts i32 → f32 directly.
            let lanes = |g: &dyn Fn(usize) -> f32| -> [f32; 16] { core::array::from_fn(|j| if j < nc { g(j) } else { 0.0 }) };
            let params = [lanes(&|j| ch[j].s1), lanes(&|j| ch[j].s2), lanes(&|j| ch[j].p)];
            let bias16 = bias.map(|b| lanes(&|j| b[j]));
            let zsum32: [[i32; 16]; 3] = core::array::from_fn(|q| core::array::from_fn(|j| if j < nc { z[j][q] as i32 } else { 0 }));
            for (r0, group) in (0..m).step_by(PANEL_MR).zip(packed.chunks(PANEL_MR * 4 * steps)) {
                let nr = group.len() / (4 * steps);
                // The vector epilogue is AVX-512's; elsewhere the i64 path below runs the
                // scalar one (`store_row`: `combine_exact` per output).
                if steps <= chunk && f.kind == FusedKind::Avx512 {
                    panel_chunk(f, group, p, 0, steps, &mut raw);
                    for (rr, rw) in raw[..nr].iter().enumerate() {
                        let at = (r0 + rr) * ld + c0;
                        combine_row16(rw, &zsum32, &params, a.scale, bias16.as_ref(), &mut out[at..at + nc]);
                    }
                    continue;
                }
                sums[..nr].fill([[0; PANEL_NR]; 3]);
                for s0 in (0..steps).step_by(chunk) {
                    let s1 = (s0 + chunk).min(steps);
                    panel_chunk(f, &group[4 * nr * s0..4 * nr * s1], p, s0, s1, &mut raw);
                    for (o, w) in sums.iter_mut().zip(&raw).take(nr) {
                        for (op, wp) in o.iter_mut().zip(w) {
                            for (x, &y) in op.iter_mut().zip(wp) {
                                *x += y as i64;
                            }
                        }
                    }
                }
                for (rr, rw) in sums[..nr].iter().enumerate() {
                    let at = (r0 + rr) * ld + c0;
                    store_row(&mut out[at..at + nc], rw, z, ch, a.scale, bias);
                }
            }
        }
    }

    /// [`PwlqGemmWeights::gemm_f32_in`] on the default context.
    pub fn gemm_f32<A: Int8>(&self, a: Activations<'_, A>, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
        self.gemm_f32_in(&Context::new()?, a, bias, c)
    }
}
