//! Codebook GEMM / GEMV: activations (u8/i8, zero point, scale) times weights stored as
//! 4- or 5-bit codes of a level set with an integer grid (PoT-4, APoT-4, a learned codebook),
//! computed exactly in integers by the table-lookup kernels (DESIGN.md §2: an i8 table
//! and the int8 dot products; for grids beyond int8 — PoT-5 and 4-bit log reach 2^14,
//! any grid within ±32767 — an i16 table and the i16 products `vpmaddwd` / `vpdpwssd` /
//! `smlal`), or, on
//! request ([`CodebookFamily::Shift`], `QKERN_CODEBOOK_KERNEL=shift`), by the bit-shift
//! kernels (`Σ ±((x << e1) + (x << e2))`) for level sets whose grid values are all
//! `±(2^a [+ 2^b])` (PoT, APoT). The lookup family is the default: measured, it is the
//! faster one on every x86 tier here.
//!
//! Calls with many rows (from [`CodebookWeights::decode_min_m`], measured per tier: 8
//! to 64) of an int8 grid take the decoded path instead: the codes of a column strip are
//! decoded once by a SIMD decoder (`qkern_kernels::pack::decode`) into the packed B of
//! the tier's int8 GEMM kernel, which then runs over every row tile through the int8
//! GEMM driver — the in-register kernels decode again for every row tile.
//! [`CodebookWeights::kernel_name_for`] says which path a call of `m` rows takes; the
//! result is the same integers either way.
//!
//! `C[m][n] = Σ_k (A[m][k] − za) · grid[code(k, n)]` (+ bias), where `grid` is the level
//! set's integer grid ([`crate::quant::Grid`]); [`gemm_f32`] returns
//! `(acc as f32) · (sa · grid_scale[n]) + bias[n]`, the dequantized product, with
//! `grid_scale` from [`PackedCodes::grid_scales`]; [`gemm_requantize`] requantizes
//! `acc + bias[n]` to u8/i8 exactly as the int8 GEMM ([`crate::gemm::gemm_requantize`])
//! does, with the per-column multiplier `sa · grid_scale[n] / sy`.
//!
//! ```
//! use qkern::codebook::{self, CodebookWeights};
//! use qkern::quant::{ApotFormat, Granularity, PackedCodes};
//! use qkern::{Activations, MatrixMut, MatrixRef};
//! # fn main() -> qkern::Result<()> {
//! let fmt = ApotFormat::weight(4)?;
//! let params = fmt.params(Granularity::PerTensor, &[1.0])?;
//! let w = [0.1f32, -0.3, 0.6, 1.0, 0.0, -1.0]; // B: 3 × 2
//! let t = params.quantize(&w, &[3, 2])?;
//! let packed = PackedCodes::from_tensor(&t)?;
//! let cw = CodebookWeights::new(&packed)?;
//! let a = [1u8, 2, 3];
//! let mut c = [0i32; 2];
//! codebook::gemm_i32(Activations::new(MatrixRef::new(&a, 1, 3), 0, 1.0), &cw, None, MatrixMut::new(&mut c, 1, 2))?;
//! // The same sum, decoded plainly.
//! let t = cw.table();
//! for j in 0..2 {
//!     let s: i32 = (0..3).map(|k| a[k] as i32 * t[packed.code(k, j).unwrap() as usize] as i32).sum();
//!     assert_eq!(c[j], s);
//! }
//! # Ok(()) }
//! ```

#[allow(unsafe_code)] // the one module here that calls kernels (DESIGN.md §1)
mod driver;

use qkern_kernels::pack::shift::SHIFT_ZERO;
use qkern_kernels::pack::decode::CodebookDecoder;
use qkern_kernels::{CodebookFormat, CodebookUkernel, GemmUkernel, Int8, Isa};

pub use qkern_kernels::CodebookFamily;

use crate::dispatch::Context;
use crate::error::{Error, Result, check_scale};
use crate::gemm::scratch::Scratch;
use crate::gemm::{Activations, K_CHUNK, MatrixMut, Out, Requantize, Stage, requant_out};
use crate::quant::PackedCodes;

/// Parses a `QKERN_CODEBOOK_KERNEL` value (`lut` / `shift`, case-insensitive; blank =
/// `Ok(None)`).
pub fn parse_family(value: &str) -> Result<Option<CodebookFamily>> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "lut" => Ok(Some(CodebookFamily::Lut)),
        "shift" => Ok(Some(CodebookFamily::Shift)),
        _ => Err(Error::InvalidParameter(format!("QKERN_CODEBOOK_KERNEL={value:?} is not one of lut, shift"))),
    }
}

/// The family `QKERN_CODEBOOK_KERNEL` selects, or the default (the lookup kernels, the
/// faster on today's CPUs) when it is unset.
pub fn family_from_env() -> Result<CodebookFamily> {
    match std::env::var("QKERN_CODEBOOK_KERNEL") {
        Ok(s) => Ok(parse_family(&s)?.unwrap_or(CodebookFamily::Lut)),
        Err(std::env::VarError::NotPresent) => Ok(CodebookFamily::Lut),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(Error::InvalidParameter(format!("QKERN_CODEBOOK_KERNEL={v:?} is not valid UTF-8")))
        }
    }
}

/// Codebook weights prepacked for one kernel: the codes in the kernel's layout, the
/// integer table, the per-column grid scales and column sums.
#[derive(Clone, Debug)]
pub struct CodebookWeights {
    pub(crate) kernel: CodebookUkernel,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) data: Vec<u8>,
    /// The 32-entry i8 table (entries past the code count are 0; 4-bit kernels read 16);
    /// all 0 for a grid beyond int8.
    pub(crate) table: [i8; 32],
    /// The same table as i16 (every grid), read by the i16-table kernels.
    pub(crate) table16: [i16; 32],
    pub(crate) bits: u32,
    pub(crate) grid_max: u16,
    pub(crate) grid_scales: Vec<f32>,
    /// `Σ_{k<K} grid[code(k, n)]` per column.
    pub(crate) col_sum: Vec<i64>,
    /// `max_n Σ_{k<K} |grid[code(k, n)]|`: with it the driver proves one i32 pass exact
    /// (`max|a − za| · this + max|bias| ≤ i32::MAX`), never looser than `K · grid_max`.
    pub(crate) col_abs_max: u64,
    pub(crate) has_offsets: bool,
    /// The path of calls with many rows: decode to int8 panels, run the int8 GEMM.
    pub(crate) decode: Option<DecodePlan>,
}

/// How a call of at least `min_m` rows runs: the codes decoded, a column strip at a time,
/// into the packed B of the int8 GEMM kernel `gemm` by `decoder`, then the int8 GEMM
/// driver over every row tile on that strip — each weight decoded once per call instead of
/// once per row tile.
#[derive(Clone, Debug)]
pub(crate) struct DecodePlan {
    pub(crate) gemm: GemmUkernel,
    pub(crate) decoder: CodebookDecoder,
    /// The byte stored for each code (the grid value; the kernel's i8 `b_offset` is 0).
    pub(crate) table: [u8; 32],
    pub(crate) min_m: usize,
    /// `Σ grid` of each K chunk of [`K_CHUNK`] per column, `[c·n + j]` (the int8 driver's
    /// long-K path).
    pub(crate) chunk_col_sum: Vec<i32>,
    /// A bound `b` with `K·b ≥ max_n Σ_k |grid|` (the int8 driver proves one i32 pass
    /// exact from `K·max|a − za|·b`, so this keeps the codebook's tighter bound).
    pub(crate) max_abs: i32,
}

/// The default `min_m` of the decoded path for the int8 GEMM kernel `gemm`. Measured on
/// Zen 4 (N = K = 4096, one thread; 2 shared cores, so ±10 %): decoding all of B costs
/// about as much as 3–5 rows of the int8 GEMM (AVX-512 ≈ 0.5 ms for 4096²). The
/// in-register kernels run at 0.85–0.95× of the int8 GEMM on AVX-512 (4-bit, `vpermb`),
/// at 0.65× on AVX2 with the exact kernel (±127 tables) and near 1.0× with `vpmaddubsw`
/// (tables within ±64). Measured crossovers: AVX2 exact, M = 16 already 4.25 ms decoded
/// vs 5.25 ms in-register (IQ4_NL); AVX2 `vpmaddubsw`, M = 16 3.3 vs 3.05 ms, M = 128
/// 42 vs 53 ms; AVX-512, M = 32 5.1 vs 4.5 ms (4-bit) and 5.3 vs 5.1 ms (5-bit), M = 64
/// 5.7 vs 5.4 ms (4-bit) and 6.3–7.0 vs 6.8–10.3 ms (5-bit), M = 128 16.8 vs 17.2 ms
/// (4-bit) and 16.2 vs 21.3 ms (5-bit). Below
/// the crossover the in-register kernels' reuse of each decoded register across their
/// row tile is the better deal.
///
/// AVX2 tables beyond ±64 (decoded for the exact int8 GEMM `qx8_gemm_6x16c2__avx2`),
/// re-measured with the split-table kernel (session 15; N = K = 4096, u8 activations,
/// IQ4_NL and a 32-level ±127 table, one thread, fastest of 9–15 interleaved rounds while
/// the other core was busy): 4-bit `qx8_codebook4_gemm_4x16c8_split__avx2` vs decoded,
/// M = 8 2.62 vs 2.69 ms, M = 10 3.29 vs 3.18 ms, M = 12 3.71 vs 3.51 ms, M = 16 4.77
/// vs 4.40 ms: from 10; 5-bit `qx8_codebook5_i16_gemm_4x8c8__avx2` vs decoded, M = 4
/// 1.65 vs 2.13 ms, M = 8 3.14 vs 2.98 ms, M = 16 6.02 vs 4.60 ms: from 8.
///
/// Re-measured on Zen 3 (AVX2 only; `time_interleaved` rounds of int8, in-register and
/// decoded, 3 s per M, ratios to the int8 GEMM): 4-bit tables within ±64 (PoT-4, APoT-4)
/// in-register 1.17–1.24× up to M = 32, decoded 0.97× at M = 8 rising to 1.19× at 32:
/// from 32 stands; IQ4_NL (sign tile vs exact decoded) 0.76 vs 0.74 at M = 8, 0.77 vs
/// 0.83 at M = 12: from 10 stands; 5-bit tables within ±64 (APoT-5, grid-aligned PWLQ
/// at ±64) 0.91 vs 0.89 at M = 8, 0.89 vs 0.97 at M = 12, 0.88 vs 1.04 at M = 16: from
/// 10 (it was 32, the 4-bit bound; the 5-bit tile's blend makes decoding pay earlier).
///
/// After the 16-column `c2` decoder and one packing of A per call (Zen 3, the same
/// rounds, 1.5 s per M): 5-bit tables beyond ±64 (a 32-level ±127 table) in-register vs
/// decoded 1.07 vs 0.80× at M = 2, 0.78 vs 0.72 at 3, 0.64 vs 0.70 at 4, 0.60 vs 0.68 at
/// 5, 0.55 vs 0.74 at 8: from 4 (was 8); IQ4_NL 0.76 vs 0.78 at M = 8, 0.81 vs 0.80 at 9,
/// 0.75 vs 0.81 at 10: from 10 stands; PoT-4 in-register ahead up to 32 (1.18 vs 1.15×):
/// 32 stands.
fn default_decode_min_m(gemm: &GemmUkernel, bits: u32) -> usize {
    match gemm.isa {
        // 5-bit: the in-register kernel blends two lookups per weight (0.8× of int8).
        Isa::Avx512Vnni | Isa::Amx if bits == 5 => 32,
        Isa::Avx512Vnni | Isa::Amx => 64,
        _ if gemm.max_abs_stored_b.is_some() && bits == 5 => 10,
        _ if gemm.max_abs_stored_b.is_some() => 32,
        _ if bits == 5 => 4,
        _ => 10,
    }
}

/// The decoded path for weights packed for `kernel` at `ctx`'s tier, if there is one:
/// a lookup kernel on 4-/5-bit codes of an int8 grid, an int8 GEMM kernel of the tier
/// that takes i8 weights within the grid (the first, best, of the candidates: the AVX2
/// `vpmaddubsw` one only within its bound), and a SIMD decoder for the codes' width and
/// the GEMM's K group. (Without a SIMD decoder — the portable tier, ARM — none.)
fn decode_pair(ctx: &Context, kernel: &CodebookUkernel, tables: &Tables) -> Option<(GemmUkernel, CodebookDecoder)> {
    if kernel.family != CodebookFamily::Lut || tables.wide() || !matches!(kernel.format.bits, 4 | 5) || !kernel.format.nr.is_multiple_of(8) {
        return None;
    }
    let g = tables.grid_max as i32;
    let decoders = crate::dispatch::codebook_decoders();
    let decoder_for = |gk: &GemmUkernel| {
        decoders.iter().rev().copied().find(|d| {
            d.isa != Isa::Scalar
                && d.isa.within(ctx.kernels().isa)
                && crate::dispatch::cpu().has(d.isa)
                && d.bits == kernel.format.bits
                && d.kr == gk.format.kr
                && kernel.format.nr.is_multiple_of(d.cols)
                && gk.format.nr.is_multiple_of(d.cols)
        })
    };
    let gemm = ctx.kernels().gemm_candidates.iter().copied().find(|gk| {
        gk.isa != Isa::Scalar
            && gk.run[0][1].is_some()
            && gk.run[1][1].is_some()
            && gk.b_offset_for(true) == 0
            && crate::gemm::holds_weights(gk, true, -g, g)
    })?;
    Some((gemm, decoder_for(&gemm)?))
}

impl CodebookWeights {
    /// Packs `codes` for the default context and the family `QKERN_CODEBOOK_KERNEL`
    /// selects (lookup by default).
    pub fn new(codes: &PackedCodes) -> Result<Self> {
        Self::new_in(&Context::new()?, codes)
    }

    /// Packs `codes` for `ctx`'s kernels and the family `QKERN_CODEBOOK_KERNEL` selects.
    /// With `shift`, a level set the bit-shift kernels cannot represent (a grid value
    /// not `±(2^a [+ 2^b])`, e.g. a learned codebook) runs on the lookup kernels instead
    /// ([`CodebookWeights::kernel_name`] tells which); [`CodebookWeights::with_family`]
    /// refuses it.
    pub fn new_in(ctx: &Context, codes: &PackedCodes) -> Result<Self> {
        let family = family_from_env()?;
        if family == CodebookFamily::Shift && shift_terms_of(codes).is_err() {
            return Self::with_family(ctx, codes, CodebookFamily::Lut);
        }
        Self::with_family(ctx, codes, family)
    }

    /// Packs `codes` for the best kernel of `family` at `ctx`'s tier: for the lookup
    /// family an i8-table kernel when the grid fits int8, else an i16-table one. The
    /// shift family errors ([`Error::Unsupported`], naming the value) for a level set
    /// whose grid is not made of `±(2^a [+ 2^b])` values, or is beyond int8.
    pub fn with_family(ctx: &Context, codes: &PackedCodes, family: CodebookFamily) -> Result<Self> {
        let tables = table_of(codes)?;
        let (grid_max, wide) = (tables.grid_max, tables.wide());
        if family == CodebookFamily::Shift {
            let terms = shift_terms_of(codes)?;
            let kernel = *ctx
                .kernels()
                .shift_kernel_for(terms, grid_max as i32)
                .ok_or_else(|| Error::Internal("no unconditional shift codebook kernel registered".into()))?;
            return Ok(Self::pack(ctx, kernel, codes, &tables));
        }
        if !ctx.kernels().codebook_candidates.iter().any(|k| k.family == family) {
            return Err(Error::Unsupported(format!(
                "the {} codebook kernels (QKERN_CODEBOOK_KERNEL={}) are not built yet; use lut",
                family.name(),
                family.name()
            )));
        }
        let bits = codes.level_set().bits().max(4);
        let kernel = *ctx
            .kernels()
            .codebook_kernel_for(family, bits, grid_max as i32, wide)
            .ok_or_else(|| Error::Internal("no unconditional codebook kernel registered".into()))?;
        Ok(Self::pack(ctx, kernel, codes, &tables))
    }

    /// Packs `codes` for the kernel named `name` among `ctx`'s candidates (tests and
    /// benches that compare kernels); errors if it cannot run these codes exactly.
    pub fn with_kernel(ctx: &Context, codes: &PackedCodes, name: &str) -> Result<Self> {
        let tables = table_of(codes)?;
        let grid_max = tables.grid_max;
        let kernel = ctx.kernels().codebook_candidates.iter().copied().find(|k| k.name == name).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "no codebook kernel named {name:?} at {} (candidates: {})",
                ctx.kernels().isa.name(),
                ctx.kernels().codebook_candidates.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let bits = codes.level_set().bits().max(4);
        if kernel.family == CodebookFamily::Shift {
            let terms = shift_terms_of(codes)?;
            if kernel.format.bits < 8 * terms {
                return Err(Error::Unsupported(format!("{name} adds one shift term per weight; this level set needs {terms}")));
            }
        } else if kernel.bits != bits {
            return Err(Error::Unsupported(format!("{name} decodes {}-bit codes; these codes need the {bits}-bit layout", kernel.bits)));
        }
        if let Some(x) = kernel.max_abs_table.filter(|&x| grid_max as i32 > x) {
            return Err(Error::Unsupported(format!(
                "{name} is exact only for grids within ±{x}; this level set's grid reaches {grid_max}"
            )));
        }
        if tables.wide() && !kernel.table_i16 {
            return Err(Error::Unsupported(format!(
                "{name} decodes through an i8 table; this level set's grid reaches {grid_max}: use an i16-table kernel"
            )));
        }
        Ok(Self::pack(ctx, kernel, codes, &tables))
    }

    fn pack(ctx: &Context, kernel: CodebookUkernel, codes: &PackedCodes, tables: &Tables) -> Self {
        let Tables { t8: table, t16: table16, grid_max } = *tables;
        let (k, n) = (codes.k(), codes.n());
        let fmt: CodebookFormat = kernel.format;
        let mut data = vec![0u8; fmt.packed_bytes(k, n)];
        // As the int8 weights: huge pages before the first write, so a GEMV's stream of
        // codes does not stall on a TLB miss every 4 KiB.
        crate::gemm::advise_huge_pages(&mut data);
        let nib = codes.nibbles();
        let col = codes.k_padded() / 2;
        let five = codes.level_set().bits() == 5;
        // Straight from the nibble plane (and, for 5 bits, the checked accessor).
        let code = |kk: usize, j: usize| {
            if five { codes.code(kk, j).unwrap_or(0) } else { (nib[j * col + kk / 2] >> (4 * (kk & 1))) & 0x0F }
        };
        if kernel.family == CodebookFamily::Shift {
            // Every table value was checked representable (`shift_terms_of`) with the
            // kernel's terms; a code past the set's levels decodes as 0, as in the table.
            let terms = fmt.bits / 8;
            let enc: Vec<[u8; 2]> = table.iter().map(|&v| qkern_kernels::pack::shift_encode(v as i32, terms).unwrap_or(SHIFT_ZERO)).collect();
            qkern_kernels::pack::pack_shift(fmt, k, n, |kk, j| enc[code(kk, j) as usize], &mut data);
        } else {
            qkern_kernels::pack::pack_codebook(fmt, k, n, code, &mut data);
        }
        let pair = decode_pair(ctx, &kernel, tables);
        let chunks = k.div_ceil(K_CHUNK).max(1);
        let mut chunk_col_sum = vec![0i32; if pair.is_some() { chunks * n } else { 0 }];
        let mut col_sum = Vec::with_capacity(n);
        let mut col_abs_max = 0u64;
        for j in 0..n {
            let (mut s, mut a) = (0i64, 0u64);
            for kk in 0..k {
                let g = table16[code(kk, j) as usize] as i64;
                (s, a) = (s + g, a + g.unsigned_abs());
                if let Some(c) = chunk_col_sum.get_mut(kk / K_CHUNK * n + j) {
                    *c += g as i32; // |Σ| ≤ 8192·128 for an int8 grid
                }
            }
            col_sum.push(s);
            col_abs_max = col_abs_max.max(a);
        }
        let decode = pair.map(|(gemm, decoder)| DecodePlan {
            gemm,
            decoder,
            table: table.map(|v| v as u8),
            min_m: default_decode_min_m(&gemm, decoder.bits),
            chunk_col_sum,
            max_abs: if k == 0 { 0 } else { col_abs_max.div_ceil(k as u64).min(i32::MAX as u64) as i32 },
        });
        let grid_scales = codes.grid_scales().map(<[f32]>::to_vec).unwrap_or_default();
        let bits = codes.level_set().bits().max(4);
        CodebookWeights {
            kernel,
            k,
            n,
            data,
            table,
            table16,
            bits,
            grid_max,
            grid_scales,
            col_sum,
            col_abs_max,
            has_offsets: codes.offsets().is_some(),
            decode,
        }
    }

    /// The same weights with the decoded path (codes decoded to int8 panels, the int8 GEMM
    /// over every row tile) taken from `min_m` rows on (`usize::MAX`: never; 1: always).
    /// No effect on weights without that path ([`CodebookWeights::decode_kernels`] is
    /// `None`). The default is the measured crossover of the tier.
    pub fn with_decode_min_m(mut self, min_m: usize) -> Self {
        self.set_decode_min_m(min_m);
        self
    }

    /// In place, as [`CodebookWeights::with_decode_min_m`].
    pub(crate) fn set_decode_min_m(&mut self, min_m: usize) {
        if let Some(p) = &mut self.decode {
            p.min_m = min_m.max(1);
        }
    }

    /// The row count from which a call takes the decoded path, if these weights have one.
    pub fn decode_min_m(&self) -> Option<usize> {
        self.decode.as_ref().map(|p| p.min_m)
    }

    /// The decoder and the int8 GEMM kernel of the decoded path, if these weights have
    /// one (a lookup kernel on an int8 grid at a tier with a SIMD decoder).
    pub fn decode_kernels(&self) -> Option<(&'static str, &'static str)> {
        self.decode.as_ref().map(|p| (p.decoder.name, p.gemm.name))
    }

    /// What a call of `m` rows runs: [`CodebookWeights::kernel_name`], or from
    /// [`CodebookWeights::decode_min_m`] rows on `"<decoder> + <int8 GEMM kernel>"`.
    pub fn kernel_name_for(&self, m: usize) -> String {
        match &self.decode {
            Some(p) if m >= p.min_m && self.k > 0 => format!("{} + {}", p.decoder.name, p.gemm.name),
            _ => self.kernel.name.to_string(),
        }
    }

    /// The codebook kernel these weights were packed for: what calls with fewer rows
    /// than [`CodebookWeights::decode_min_m`] run ([`CodebookWeights::kernel_name_for`]
    /// names what a call of `m` rows runs).
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }

    /// Rows of B (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The i8 table the kernel decodes through (16 entries for 4-bit codes, 32 for
    /// 5-bit), indexed by code; empty when the grid is beyond int8 (the kernel decodes
    /// through [`CodebookWeights::table_i16`]).
    pub fn table(&self) -> &[i8] {
        if self.grid_max > 127 { &[] } else { &self.table[..1 << self.bits] }
    }

    /// The integer grid value of every code as i16 (16 or 32 entries, indexed by code),
    /// for every level set: the table of the i16-table kernels, and the same values as
    /// [`CodebookWeights::table`] otherwise.
    pub fn table_i16(&self) -> &[i16] {
        &self.table16[..1 << self.bits]
    }

    /// The largest `|grid value|` of the level set (its i8 kernels need ≤ 127; the i16
    /// ones take up to 32767).
    pub fn grid_max(&self) -> u16 {
        self.grid_max
    }

    /// Packed bytes (the codes in the kernel's layout).
    pub fn packed_bytes(&self) -> usize {
        self.data.len()
    }
}

/// The tables of a level set's integer grid (32 entries each, 0 past its codes).
#[derive(Clone, Copy)]
struct Tables {
    /// As i8, all 0 when the grid is beyond int8.
    t8: [i8; 32],
    /// As i16 (every grid).
    t16: [i16; 32],
    grid_max: u16,
}

impl Tables {
    /// Whether the grid needs the i16-table kernels (`|g| > 127`).
    fn wide(&self) -> bool {
        self.grid_max > 127
    }
}

/// The tables of `codes` and their largest magnitude, or why the lookup kernels cannot
/// run them (no integer grid; a grid is always within ±32767, [`crate::quant::Grid`]).
fn table_of(codes: &PackedCodes) -> Result<Tables> {
    let set = codes.level_set();
    let grid = set.grid().ok_or_else(|| {
        Error::Unsupported("the level set has no integer grid (e.g. base-√2 PoT); only the float paths apply".into())
    })?;
    let mut t16 = [0i16; 32];
    for (d, &v) in t16.iter_mut().zip(grid.values()) {
        *d = v;
    }
    let t8 = codes.int_levels_i8().unwrap_or([0; 32]);
    Ok(Tables { t8, t16, grid_max: grid.max_abs() })
}

/// The shift terms per weight (1 or 2) of `codes`' level set, or why the bit-shift
/// kernels cannot run it (a grid value not `±(2^a [+ 2^b])`, `a, b ≤ 6`; a grid beyond
/// int8).
fn shift_terms_of(codes: &PackedCodes) -> Result<u32> {
    let tables = table_of(codes)?;
    if tables.wide() {
        return Err(Error::Unsupported(format!(
            "the level set's grid reaches {}, beyond int8: the bit-shift (shift) codebook kernels take int8 grids only; use the lookup (lut) family",
            tables.grid_max
        )));
    }
    let table = tables.t8;
    let mut terms = 1;
    for &v in &table[..codes.level_set().num_codes()] {
        let t = qkern_kernels::pack::shift_terms(v as i32).ok_or_else(|| {
            Error::Unsupported(format!(
                "the level set's grid value {v} is not ±(2^a [+ 2^b]): the bit-shift (shift) codebook kernels cannot run it; use the lookup (lut) family"
            ))
        })?;
        terms = terms.max(t);
    }
    Ok(terms)
}

/// `C (i32) = Σ_k (A − za)·grid[code] + bias`, on the default context. Errors if a
/// result does not fit in i32.
pub fn gemm_i32<A: Int8>(a: Activations<'_, A>, w: &CodebookWeights, bias: Option<&[i32]>, c: MatrixMut<'_, i32>) -> Result<()> {
    Context::new()?.codebook_gemm_i32(a, w, bias, c)
}

/// `C (f32) = (acc as f32)·(sa·grid_scale[n]) + bias[n]`, on the default context.
pub fn gemm_f32<A: Int8>(a: Activations<'_, A>, w: &CodebookWeights, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
    Context::new()?.codebook_gemm_f32(a, w, bias, c)
}

/// `C (u8/i8) = clamp(requantize(Σ_k (A − za)·grid[code] + rq.bias[n]), rq.min, rq.max)`
/// with the per-column multiplier `sa·grid_scale[n]/rq.scale` in `rq.mode`, on the
/// default context: the int8 GEMM's output stage ([`crate::gemm::gemm_requantize`]), the
/// grid scale in the role of the weight scale. Accumulators past the i32 bound are carried
/// in i64 and saturate to the clamp.
pub fn gemm_requantize<A: Int8, O: Int8>(a: Activations<'_, A>, w: &CodebookWeights, rq: &Requantize<'_, O>, c: MatrixMut<'_, O>) -> Result<()> {
    Context::new()?.codebook_gemm_requantize(a, w, rq, c)
}

impl CodebookWeights {
    /// The per-column grid scales, for the scaled outputs (`what`: the output, for the
    /// message): errors for weights with per-column offsets, whose dequantized value is
    /// not a multiple of the integer product.
    fn scales_for(&self, what: &str) -> Result<&[f32]> {
        if self.has_offsets {
            return Err(Error::Unsupported(format!(
                "{what} output of weights with per-column offsets (weight normalisation) is not built yet; use gemm_i32"
            )));
        }
        if self.grid_scales.len() != self.n {
            return Err(Error::Internal("codebook weights without grid scales".into()));
        }
        Ok(&self.grid_scales)
    }
}

impl Context {
    /// `C (i32) = Σ_k (A − za)·grid[code] + bias`. See [`gemm_i32`].
    pub fn codebook_gemm_i32<A: Int8>(&self, a: Activations<'_, A>, w: &CodebookWeights, bias: Option<&[i32]>, c: MatrixMut<'_, i32>) -> Result<()> {
        driver::run(self, &a, w, Stage::I32 { bias }, Out::I32(c))
    }

    /// `C (f32) = (acc as f32)·(sa·grid_scale[n]) + bias[n]`. See [`gemm_f32`].
    pub fn codebook_gemm_f32<A: Int8>(&self, a: Activations<'_, A>, w: &CodebookWeights, bias: Option<&[f32]>, c: MatrixMut<'_, f32>) -> Result<()> {
        check_scale("activation scale", a.scale)?;
        let scale = Scratch::collect(w.scales_for("f32")?.iter().map(|&s| a.scale * s));
        if let Some(&s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidScale { what: "dequantization scale sa·grid_scale", value: s as f64 });
        }
        driver::run(self, &a, w, Stage::F32 { scale, bias }, Out::F32(c))
    }

    /// `C (u8/i8) = clamp(requantize(Σ_k (A − za)·grid[code] + bias))`. See
    /// [`gemm_requantize`].
    pub fn codebook_gemm_requantize<A: Int8, O: Int8>(
        &self,
        a: Activations<'_, A>,
        w: &CodebookWeights,
        rq: &Requantize<'_, O>,
        c: MatrixMut<'_, O>,
    ) -> Result<()> {
        check_scale("activation scale", a.scale)?;
        // The int8 GEMM's stage: checks the output scale, the clamp and every multiplier.
        let stage = Stage::requant(a.scale, w.scales_for("requantized")?, rq)?;
        driver::run(self, &a, w, stage, requant_out(c))
    }
}
