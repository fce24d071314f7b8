//! Packed codes of GEMM weights `B[K][N]` (N = output channels), the form the codebook
//! kernels read: the codes at 4 or 5 bits each, one float scale per column, and a header
//! holding the integer level table so a kernel can decode codes to exact integers.
//!
//! # Byte layout
//!
//! K is padded with the *pad code* ([`PackedHeader::pad_code`]: the code of level 0 when
//! the set has one, else code 0) to `K_p`, a multiple of [`PACK_K_BLOCK`] = 128. Each
//! column `n` is stored contiguously along K, so a GEMV streams one column (or a few) at a
//! time and a GEMM packer reads K runs.
//!
//! **Codes of 1–4 bits** (one nibble each): `nibbles` holds `N · K_p / 2` bytes; column `n`
//! starts at byte `n · K_p / 2`, and its byte `i` holds code `(k = 2i)` in bits 0–3 (the low
//! nibble is the even index) and code `(k = 2i + 1)` in bits 4–7 — the ONNX int4 packing
//! order. `high_bits` is empty.
//!
//! **5-bit codes**: `nibbles` as above with the low 4 bits of each code, plus a bit plane
//! `high_bits` of `N · K_p / 8` bytes holding bit 4 of each code. Column `n` starts at byte
//! `n · K_p / 8`; its block `b` (codes `k = 128b … 128b + 127`) is 16 bytes at `16b`:
//! bytes `0..8` are a little-endian u64 whose bit `t` is bit 4 of code `k = 128b + 2t`,
//! bytes `8..16` a little-endian u64 whose bit `t` is bit 4 of code `k = 128b + 2t + 1`.
//! So the high bits of the even codes and of the odd codes are separate, in the order the
//! nibble split produces them.
//!
//! # Decoding (what the layout is for)
//!
//! Load `V` nibble bytes of a column (`V` = 64 for zmm, 32 for ymm, 16 for NEON, always
//! within one 128-code block when aligned to `V`): `lo = v & 0x0F` are the even-k codes and
//! `hi = (v >> 4) & 0x0F` the odd-k codes, each in order. For 5-bit codes OR in `0x10`
//! under the matching `V` bits of the even / odd word (AVX-512: `kmovq` + masked `vpord`;
//! AVX2 / NEON: expand the bits to bytes with a shuffle + test). Then one table lookup per
//! vector — `pshufb` / `tbl` with the 16-entry i8 table, or `vpermb` / two-register `tbl`
//! with the 32-entry one — gives the weights as integers. The dot product does not care
//! about order, so the activations are split once into their even-k and odd-k halves
//! (`O(M·K)`, against `O(M·N·K)` multiplies) and `lo` / `hi` meet them without any shuffle
//! of the weights.
//!
//! # Numbers
//!
//! Column `n`'s code `c` stands for `levels[c] · scales[n]` (+ `offsets[n]`), the same f32
//! value [`LevelParams`] dequantizes to. When the set has an integer grid, it is also
//! `int_levels[c] · grid_scales[n]` exactly (`grid_scales[n] = scales[n] · 2^step_exp`,
//! checked exact when packing): kernels accumulate `Σ a · int_levels[c]` in integers and
//! apply `grid_scales[n]` once.

use super::codebook::{LevelParams, LevelSet, LevelTensor, check_codes, check_slot, level_value};
use super::uniform::Granularity;
use crate::error::{Error, Result};

/// K is padded to a multiple of this many codes (one zmm load of nibbles, 64 bytes).
pub const PACK_K_BLOCK: usize = 128;

/// The packed header: everything a kernel needs besides the code bytes and scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedHeader {
    /// The code width of the scheme (1–5).
    pub bits: u32,
    /// The container: 4 (nibbles) for 1–4-bit codes, 5 (nibbles + bit plane) for 5-bit.
    pub container_bits: u32,
    /// Rows of `B` (the reduction dimension).
    pub k: usize,
    /// Columns of `B` (output channels).
    pub n: usize,
    /// `k` rounded up to a multiple of [`PACK_K_BLOCK`].
    pub k_padded: usize,
    /// Valid codes are `0..num_codes`.
    pub num_codes: usize,
    /// The code stored at `k ≥ K`.
    pub pad_code: u8,
    /// `max |int level|`, when the set has an integer grid.
    pub grid_max: Option<u16>,
    /// The grid step is `2^grid_step_exp`, when the set has an integer grid.
    pub grid_step_exp: Option<i32>,
    /// The integer level of every code (entries `≥ num_codes` are 0), when the set has a grid.
    pub int_levels: Option<[i16; 32]>,
    /// Whether columns carry offsets (weight normalisation).
    pub has_offsets: bool,
}

/// Packed codes of `B[K][N]` with per-column scales (see the module docs for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedCodes {
    set: LevelSet,
    k: usize,
    n: usize,
    k_padded: usize,
    pad_code: u8,
    scales: Vec<f32>,
    grid_scales: Option<Vec<f32>>,
    offsets: Option<Vec<f32>>,
    nibbles: Vec<u8>,
    high_bits: Vec<u8>,
}

/// `(K_p, nibble bytes, high-bit bytes)` for a `k × n` matrix, or an overflow error.
fn sizes(k: usize, n: usize, bits: u32) -> Result<(usize, usize, usize)> {
    let overflow = || Error::InvalidParameter(format!("packed size of a {k} × {n} matrix overflows usize"));
    let kp = k.div_ceil(PACK_K_BLOCK).checked_mul(PACK_K_BLOCK).ok_or_else(overflow)?;
    let nib = (kp / 2).checked_mul(n).ok_or_else(overflow)?;
    let hb = if bits == 5 { (kp / 8).checked_mul(n).ok_or_else(overflow)? } else { 0 };
    Ok((kp, nib, hb))
}

/// Where bit 4 of code `kk` of a column lives: (byte offset in the column's plane, bit).
#[inline]
fn high_bit_pos(kk: usize) -> (usize, u32) {
    let (b, r) = (kk / PACK_K_BLOCK, kk % PACK_K_BLOCK);
    let t = r / 2;
    (16 * b + 8 * (r & 1) + t / 8, (t % 8) as u32)
}

impl PackedCodes {
    /// Packs the codes of `B[K][N]` (row-major, `codes.len() == k · n`) quantized with
    /// `params`, whose granularity must be per tensor or per channel along axis 1 (one
    /// scale per column). Every code must be valid for the level set.
    pub fn pack(codes: &[u8], k: usize, n: usize, params: &LevelParams) -> Result<Self> {
        let len = k
            .checked_mul(n)
            .ok_or_else(|| Error::InvalidParameter(format!("`k` × `n` = {k} × {n} overflows usize")))?;
        if codes.len() != len {
            return Err(Error::ShapeMismatch(format!("`codes` has {} elements but k × n = {k} × {n} = {len}", codes.len())));
        }
        let set = params.level_set();
        check_codes(set, codes, "codes")?;
        let per_column = |v: &[f32], what: &str| -> Result<Vec<f32>> {
            match params.granularity() {
                Granularity::PerTensor => Ok(vec![v[0]; n]),
                Granularity::PerChannel { axis: 1 } if v.len() == n => Ok(v.to_vec()),
                Granularity::PerChannel { axis: 1 } => Err(Error::ShapeMismatch(format!(
                    "per-column {what}: the parameters have {} but `n` is {n}",
                    v.len()
                ))),
                g => Err(Error::Unsupported(format!(
                    "packed GEMM weights B[K][N] need per-tensor or per-column (axis 1) parameters, got {g:?}"
                ))),
            }
        };
        let scales = per_column(params.scales(), "scales")?;
        let offsets = params.offsets().map(|o| per_column(o, "offsets")).transpose()?;
        let bits = set.bits();
        let (kp, nib_len, hb_len) = sizes(k, n, bits)?;
        let pad_code = pad_code(set);
        let mut nibbles = vec![0u8; nib_len];
        let mut high_bits = vec![0u8; hb_len];
        let (col_nib, col_hb) = (kp / 2, kp / 8);
        for j in 0..n {
            let nib = &mut nibbles[j * col_nib..(j + 1) * col_nib];
            for kk in 0..kp {
                let c = if kk < k { codes[kk * n + j] } else { pad_code };
                nib[kk / 2] |= (c & 0x0F) << (4 * (kk & 1));
                if bits == 5 && c & 0x10 != 0 {
                    let (byte, bit) = high_bit_pos(kk);
                    high_bits[j * col_hb + byte] |= 1 << bit;
                }
            }
        }
        Self::assemble(set.clone(), k, n, scales, offsets, nibbles, high_bits)
    }

    /// Packs a rank-2 [`LevelTensor`] of shape `[K, N]` (see [`PackedCodes::pack`]).
    pub fn from_tensor(t: &LevelTensor) -> Result<Self> {
        let &[k, n] = t.shape() else {
            return Err(Error::ShapeMismatch(format!(
                "packing needs a rank-2 tensor B[K][N], got shape {:?}",
                t.shape()
            )));
        };
        Self::pack(t.codes(), k, n, t.params())
    }

    /// Rebuilds packed codes from their parts (e.g. read from a file or passed through the
    /// C ABI), validating everything [`PackedCodes::pack`] guarantees: buffer sizes, one
    /// valid scale (and offset) per column, every stored code valid, padding = the pad code.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        set: LevelSet,
        k: usize,
        n: usize,
        scales: Vec<f32>,
        offsets: Option<Vec<f32>>,
        nibbles: Vec<u8>,
        high_bits: Vec<u8>,
    ) -> Result<Self> {
        let (kp, nib_len, hb_len) = sizes(k, n, set.bits())?;
        if nibbles.len() != nib_len {
            return Err(Error::ShapeMismatch(format!(
                "`nibbles` has {} bytes; {n} columns of {kp} padded codes need {nib_len}",
                nibbles.len()
            )));
        }
        if high_bits.len() != hb_len {
            return Err(Error::ShapeMismatch(format!(
                "`high_bits` has {} bytes; {}-bit codes of {n} columns of {kp} padded codes need {hb_len}",
                high_bits.len(),
                set.bits()
            )));
        }
        let p = Self::assemble(set, k, n, scales, offsets, nibbles, high_bits)?;
        let nc = p.set.num_codes();
        for j in 0..n {
            for kk in 0..kp {
                let c = p.stored_code(kk, j);
                if c as usize >= nc {
                    return Err(Error::InvalidParameter(format!(
                        "packed code at k = {kk}, n = {j} is {c}, but the level set has codes 0..{nc}"
                    )));
                }
                if kk >= k && c != p.pad_code {
                    return Err(Error::InvalidParameter(format!(
                        "padding code at k = {kk}, n = {j} is {c}, must be the pad code {}",
                        p.pad_code
                    )));
                }
            }
        }
        Ok(p)
    }

    /// Checks scales and offsets, derives the grid scales.
    fn assemble(
        set: LevelSet,
        k: usize,
        n: usize,
        scales: Vec<f32>,
        offsets: Option<Vec<f32>>,
        nibbles: Vec<u8>,
        high_bits: Vec<u8>,
    ) -> Result<Self> {
        if scales.len() != n {
            return Err(Error::ShapeMismatch(format!("`scales` has {} entries, `n` is {n}", scales.len())));
        }
        if let Some(o) = &offsets
            && o.len() != n
        {
            return Err(Error::ShapeMismatch(format!("`offsets` has {} entries, `n` is {n}", o.len())));
        }
        for (j, &s) in scales.iter().enumerate() {
            check_slot(&set, s, offsets.as_ref().map(|o| o[j]))?;
        }
        let grid_scales = match set.grid() {
            None => None,
            Some(g) => {
                let step = (2f64).powi(g.step_exp());
                let mut v = Vec::with_capacity(n);
                for &s in &scales {
                    let gs = (s as f64 * step) as f32;
                    if !(gs.is_finite() && gs > 0.0 && gs as f64 == s as f64 * step) {
                        return Err(Error::InvalidScale {
                            what: "scales (the scale times the grid step 2^step_exp is not exact in f32)",
                            value: s as f64,
                        });
                    }
                    v.push(gs);
                }
                Some(v)
            }
        };
        let (kp, _, _) = sizes(k, n, set.bits())?;
        let pad_code = pad_code(&set);
        Ok(PackedCodes { set, k, n, k_padded: kp, pad_code, scales, grid_scales, offsets, nibbles, high_bits })
    }

    /// The code stored at `(kk, j)`, `kk < k_padded`, `j < n` (unchecked indices).
    #[inline]
    fn stored_code(&self, kk: usize, j: usize) -> u8 {
        let mut c = (self.nibbles[j * (self.k_padded / 2) + kk / 2] >> (4 * (kk & 1))) & 0x0F;
        if self.set.bits() == 5 {
            let (byte, bit) = high_bit_pos(kk);
            c |= ((self.high_bits[j * (self.k_padded / 8) + byte] >> bit) & 1) << 4;
        }
        c
    }

    /// The header (see [`PackedHeader`]).
    pub fn header(&self) -> PackedHeader {
        let grid = self.set.grid();
        let int_levels = grid.map(|g| {
            let mut t = [0i16; 32];
            t[..g.values().len()].copy_from_slice(g.values());
            t
        });
        PackedHeader {
            bits: self.set.bits(),
            container_bits: if self.set.bits() == 5 { 5 } else { 4 },
            k: self.k,
            n: self.n,
            k_padded: self.k_padded,
            num_codes: self.set.num_codes(),
            pad_code: self.pad_code,
            grid_max: grid.map(|g| g.max_abs()),
            grid_step_exp: grid.map(|g| g.step_exp()),
            int_levels,
            has_offsets: self.offsets.is_some(),
        }
    }

    /// The level set.
    pub fn level_set(&self) -> &LevelSet {
        &self.set
    }

    /// Rows of `B`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `K` padded to a multiple of [`PACK_K_BLOCK`].
    pub fn k_padded(&self) -> usize {
        self.k_padded
    }

    /// The scale of every column, in level units (`value = levels[c] · scale`).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The scale of every column in grid units (`value = int_levels[c] · grid_scale`),
    /// when the set has an integer grid.
    pub fn grid_scales(&self) -> Option<&[f32]> {
        self.grid_scales.as_deref()
    }

    /// The offset of every column, if the weights were normalised.
    pub fn offsets(&self) -> Option<&[f32]> {
        self.offsets.as_deref()
    }

    /// The 16- or 32-entry lookup table as i8 (entries `≥ num_codes` are 0), when the set
    /// has a grid that fits i8 — the `pshufb` / `vpermb` / `tbl` table.
    pub fn int_levels_i8(&self) -> Option<[i8; 32]> {
        let g = self.set.grid().filter(|g| g.fits_i8())?;
        let mut t = [0i8; 32];
        for (d, &v) in t.iter_mut().zip(g.values()) {
            *d = v as i8;
        }
        Some(t)
    }

    /// The nibble plane (see the module docs).
    pub fn nibbles(&self) -> &[u8] {
        &self.nibbles
    }

    /// The bit plane of 5-bit codes (empty for narrower codes).
    pub fn high_bits(&self) -> &[u8] {
        &self.high_bits
    }

    /// The nibble bytes of column `n` (`k_padded / 2` bytes), or `None` if `n` is out of range.
    pub fn column_nibbles(&self, n: usize) -> Option<&[u8]> {
        let w = self.k_padded / 2;
        (n < self.n).then(|| &self.nibbles[n * w..(n + 1) * w])
    }

    /// The high-bit bytes of column `n` (`k_padded / 8` bytes; empty below 5 bits), or
    /// `None` if `n` is out of range.
    pub fn column_high_bits(&self, n: usize) -> Option<&[u8]> {
        if n >= self.n {
            return None;
        }
        if self.set.bits() != 5 {
            return Some(&[]);
        }
        let w = self.k_padded / 8;
        Some(&self.high_bits[n * w..(n + 1) * w])
    }

    /// The code of `B[k][n]`, or `None` outside `K × N`.
    pub fn code(&self, k: usize, n: usize) -> Option<u8> {
        (k < self.k && n < self.n).then(|| self.stored_code(k, n))
    }

    /// The codes of `B[K][N]`, row-major.
    pub fn unpack(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.k * self.n];
        self.fill(&mut out, |_, c| c);
        out
    }

    /// [`PackedCodes::unpack`] into `out` (exactly `K · N` elements).
    pub fn unpack_into(&self, out: &mut [u8]) -> Result<()> {
        self.check_out("out", out.len())?;
        self.fill(out, |_, c| c);
        Ok(())
    }

    /// The values of `B[K][N]`, row-major: bit for bit what [`LevelParams`] dequantizes to.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.k * self.n];
        self.fill_values(&mut out);
        out
    }

    /// [`PackedCodes::dequantize`] into `out` (exactly `K · N` elements).
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        self.check_out("out", out.len())?;
        self.fill_values(out);
        Ok(())
    }

    fn fill_values(&self, out: &mut [f32]) {
        let levels = self.set.levels();
        self.fill(out, |j, c| {
            level_value(levels[c as usize], self.scales[j], self.offsets.as_ref().map(|o| o[j]))
        });
    }

    /// Writes `f(column, code)` for every element of `B[K][N]`, row-major.
    fn fill<T>(&self, out: &mut [T], f: impl Fn(usize, u8) -> T) {
        for j in 0..self.n {
            for kk in 0..self.k {
                out[kk * self.n + j] = f(j, self.stored_code(kk, j));
            }
        }
    }

    fn check_out(&self, what: &'static str, got: usize) -> Result<()> {
        let needed = self.k * self.n; // k · n was checked when packing
        if got < needed {
            Err(Error::BufferTooSmall { what, needed, got })
        } else if got > needed {
            Err(Error::ShapeMismatch(format!("`{what}` has {got} elements, K × N is {needed}")))
        } else {
            Ok(())
        }
    }
}

/// The code of level 0 when there is one (so padding contributes nothing), else code 0.
fn pad_code(set: &LevelSet) -> u8 {
    set.zero_code().unwrap_or(0)
}
