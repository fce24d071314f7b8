//! Non-uniform quantization on a table of levels: the machinery shared by log / PoT
//! ([`super::pot`]), APoT ([`super::apot`]) and any learned codebook (e.g. IQ4_NL's table).
//!
//! * [`LevelSet`] — the levels (at most 32, codes of 1–5 bits), how codes map to them
//!   ([`CodeAssignment`]) and, when the levels are integer multiples of a power of two,
//!   their integer [`Grid`] (what the integer kernels multiply with).
//! * [`LevelParams`] — a level set, a [`Granularity`] and one float scale (and, after weight
//!   normalisation, one offset) per slot: quantize, dequantize, error.
//! * [`LevelQuantizer`] — a recipe that derives [`LevelParams`] from data ([`LevelRange`]:
//!   min-max, percentile, MSE-optimal clipping or a given range; optional power-of-two
//!   scale; optional weight normalisation).
//! * [`LevelTensor`] — codes, their shape and their parameters.
//!
//! # The numbers
//!
//! With slot scale `s`, slot offset `o` (0 without normalisation) and level `L[c]` of code
//! `c`, a code dequantizes to the f32 value `w[c] = fl(L[c] · s)`, or `fl(o + fl(L[c] · s))`
//! with an offset — one f32 multiply (and one f32 add), as written.
//!
//! Quantization is the **nearest-level projection in the linear domain** onto exactly those
//! dequantized values: `x` goes to the code whose `w[c]` minimises `|x − w[c]|`. Linear rather
//! than Miyashita's log-domain rounding because it is what minimises the squared error the
//! schemes are judged by, it is what the APoT authors' `power_quant` does, and one rule then
//! serves every level set. It is implemented with the midpoints `(w[i] + w[i+1]) / 2` of the
//! sorted values, computed in f64 — exact whenever the two f32 values' exponents differ by at
//! most 29, which always holds for grid sets without offsets (|g| ≤ 32767); beyond that the
//! midpoint is rounded once to f64.
//!
//! * **Ties** (`x` exactly at a midpoint) go to the level of smaller magnitude, i.e. toward
//!   zero; at `x = 0` exactly between `−a` and `+a` (a set without a zero level) to `+a`.
//!   For sets with an integer grid this equals round-half-to-even whenever the two levels
//!   are 0 and ±1 (APoT's ternary weights, which the authors round with `torch.round`).
//! * Values beyond the extreme levels go to the extreme levels (clipping), `±inf` too.
//! * NaN goes where `0.0` goes (the zero level when the set has one), as uniform
//!   quantization maps NaN to its zero point.
//! * A value that is a level comes back exactly: `dequantize(quantize(w[c])) = w[c]`.
//! * When several codes share a value (sign-magnitude sets: `+0` and `−0`), quantize
//!   produces the smallest of those codes (`+0` = code 0); dequantize accepts every code.

use super::calibration::{self, Calibration};
use super::layout::{Layout, Run, numel};
use super::metrics::{self, ErrorStats};
use super::uniform::Granularity;
use crate::error::{Error, Result, check_scale};

/// The widest code: 5 bits, 32 codes (a 5-bit table fits one `vpermb` / two-register `tbl`).
pub const MAX_CODE_BITS: u32 = 5;

/// The largest magnitude of an integer grid value (the grid is stored as `i16`).
pub const MAX_GRID_ABS: u16 = i16::MAX as u16;

/// How codes `0..2^bits` are assigned to levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeAssignment {
    /// Code `i` is the `i`-th smallest level (a learned codebook, unsigned PoT/APoT
    /// activations). Codes `≥` the number of levels are invalid.
    Sorted,
    /// Sign and magnitude: with `h = 2^(bits−1)`, code `m` (`m < h`) is `+mag[m]` and code
    /// `h + m` is `−mag[m]`, magnitudes ascending (PoT and APoT weights: "sign + exponent
    /// index"). Every code is valid; when `mag[0] = 0`, code `h` (`−0`) dequantizes to 0 but
    /// quantize never produces it.
    SignMagnitude,
}

/// The integer grid of a level set: every level is `value · 2^step_exp` with an integer
/// `|value| ≤ 32767`. Kernels multiply the integers and fold `2^step_exp` into the scale.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grid {
    step_exp: i32,
    values: Vec<i16>,
    max_abs: u16,
}

impl Grid {
    /// The grid step is `2^step_exp` (the largest power of two dividing every level).
    pub fn step_exp(&self) -> i32 {
        self.step_exp
    }

    /// The integer value of every code (indexed by code, one per valid code).
    pub fn values(&self) -> &[i16] {
        &self.values
    }

    /// `max |value|` (e.g. 64 for PoT-4, 10 for APoT-4 weights, 48 / 100 for 4- / 5-bit
    /// APoT activations).
    pub fn max_abs(&self) -> u16 {
        self.max_abs
    }

    /// Whether every value fits `i8` (`max_abs ≤ 127`): the int8 dot-product path applies.
    pub fn fits_i8(&self) -> bool {
        self.max_abs <= 127
    }
}

/// A validated set of reconstruction levels with its code assignment (see the module docs).
///
/// The levels are in *level units*: a slot's scale multiplies them. Predefined sets come
/// from [`super::PotFormat::level_set`] and [`super::ApotFormat::level_set`]; a learned
/// table from [`LevelSet::codebook`].
#[derive(Clone, Debug, PartialEq)]
pub struct LevelSet {
    bits: u32,
    assignment: CodeAssignment,
    /// The level of every valid code, indexed by code (`+0.0` for both signed zeros).
    levels: Vec<f32>,
    grid: Option<Grid>,
    /// The distinct levels, ascending.
    sorted: Vec<f32>,
    /// `sorted_codes[i]`: the smallest code whose level is `sorted[i]`.
    sorted_codes: Vec<u8>,
    max_abs: f32,
}

impl LevelSet {
    /// A codebook with [`CodeAssignment::Sorted`] codes: `levels` must be finite and strictly
    /// increasing (so sorted and distinct; `−0.0` counts as `0.0`), with `2 ≤ len ≤ 2^bits`,
    /// `bits ∈ 1..=5` — e.g. `LevelSet::codebook(4, &IQ4_NL)`.
    pub fn codebook(bits: u32, levels: &[f32]) -> Result<Self> {
        check_code_bits(bits, 1)?;
        let cap = 1usize << bits;
        if levels.len() < 2 || levels.len() > cap {
            return Err(Error::InvalidParameter(format!(
                "`levels`: a {bits}-bit codebook needs 2 to {cap} levels, got {}",
                levels.len()
            )));
        }
        check_ascending("levels", levels, f32::NEG_INFINITY)?;
        Self::build(bits, CodeAssignment::Sorted, levels.iter().map(|&v| v + 0.0).collect())
    }

    /// A codebook on an integer grid (step 1, or a coarser power of two when every value
    /// shares one): [`LevelSet::codebook`] of the values as f32.
    pub fn codebook_i16(bits: u32, levels: &[i16]) -> Result<Self> {
        let f: Vec<f32> = levels.iter().map(|&v| v as f32).collect();
        Self::codebook(bits, &f)
    }

    /// A sign-magnitude set ([`CodeAssignment::SignMagnitude`]): `magnitudes` finite, `≥ 0`,
    /// strictly increasing, exactly `2^(bits−1)` of them, `bits ∈ 2..=5`.
    pub fn sign_magnitude(bits: u32, magnitudes: &[f32]) -> Result<Self> {
        check_code_bits(bits, 2)?;
        let half = 1usize << (bits - 1);
        if magnitudes.len() != half {
            return Err(Error::InvalidParameter(format!(
                "`magnitudes`: a {bits}-bit sign-magnitude set needs exactly {half} magnitudes, got {}",
                magnitudes.len()
            )));
        }
        check_ascending("magnitudes", magnitudes, 0.0)?;
        let mut levels: Vec<f32> = magnitudes.iter().map(|&m| m + 0.0).collect();
        // `0.0 - m` rather than `-m`: a zero magnitude stays +0.0.
        levels.extend(magnitudes.iter().map(|&m| 0.0 - m));
        Self::build(bits, CodeAssignment::SignMagnitude, levels)
    }

    /// Derives the sorted view and the grid; `levels` by code, already validated.
    fn build(bits: u32, assignment: CodeAssignment, levels: Vec<f32>) -> Result<Self> {
        let mut pairs: Vec<(f32, u8)> = levels.iter().enumerate().map(|(c, &v)| (v, c as u8)).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        pairs.dedup_by(|later, first| later.0 == first.0);
        if pairs.len() < 2 {
            return Err(Error::InvalidParameter("a level set needs at least 2 distinct levels".into()));
        }
        let sorted = pairs.iter().map(|p| p.0).collect();
        let sorted_codes = pairs.iter().map(|p| p.1).collect();
        let max_abs = levels.iter().fold(0f32, |m, v| m.max(v.abs()));
        let grid = find_grid(&levels);
        Ok(LevelSet { bits, assignment, levels, grid, sorted, sorted_codes, max_abs })
    }

    /// The code width in bits (1–5).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// How codes map to levels.
    pub fn assignment(&self) -> CodeAssignment {
        self.assignment
    }

    /// The number of valid codes (`0..num_codes()`).
    pub fn num_codes(&self) -> usize {
        self.levels.len()
    }

    /// The level of every valid code, indexed by code.
    pub fn levels(&self) -> &[f32] {
        &self.levels
    }

    /// The level of `code`, or `None` if the code is not valid.
    pub fn level(&self, code: u8) -> Option<f32> {
        self.levels.get(code as usize).copied()
    }

    /// The distinct levels, ascending.
    pub fn sorted_levels(&self) -> &[f32] {
        &self.sorted
    }

    /// For each of [`LevelSet::sorted_levels`], the code quantize produces for it.
    pub fn sorted_codes(&self) -> &[u8] {
        &self.sorted_codes
    }

    /// `max |level|` — a calibrated range maps to this level.
    pub fn max_abs(&self) -> f32 {
        self.max_abs
    }

    /// The code of the level 0, if 0 is a level (the code quantize gives 0.0).
    pub fn zero_code(&self) -> Option<u8> {
        self.sorted.iter().position(|&v| v == 0.0).map(|i| self.sorted_codes[i])
    }

    /// The integer grid, if every level is an integer multiple of a common power of two
    /// with `|multiple| ≤ 32767`.
    pub fn grid(&self) -> Option<&Grid> {
        self.grid.as_ref()
    }

    /// Whether the set has negative / positive levels (which side of the data a
    /// calibrated range measures).
    fn sides(&self) -> (bool, bool) {
        (self.sorted[0] < 0.0, self.sorted[self.sorted.len() - 1] > 0.0)
    }
}

/// `bits ∈ min..=5`, else [`Error::InvalidBits`].
fn check_code_bits(bits: u32, min: u32) -> Result<()> {
    if (min..=MAX_CODE_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidBits { bits, min, max: MAX_CODE_BITS })
    }
}

/// Finite, `≥ floor`, strictly increasing.
fn check_ascending(what: &'static str, v: &[f32], floor: f32) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidParameter(format!("`{what}` must be finite, but element {i} is {}", v[i])));
    }
    if let Some(i) = v.iter().position(|&x| x < floor) {
        return Err(Error::InvalidParameter(format!("`{what}` must be ≥ {floor}, but element {i} is {}", v[i])));
    }
    if let Some(i) = v.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::InvalidParameter(format!(
            "`{what}` must be strictly increasing (sorted, distinct), but element {} ({}) is ≥ element {} ({})",
            i,
            v[i],
            i + 1,
            v[i + 1]
        )));
    }
    Ok(())
}

/// `v = mant · 2^exp` with an odd `mant` (`v ≠ 0`, finite).
fn odd_decompose(v: f32) -> (u32, i32) {
    let b = v.to_bits() & 0x7fff_ffff;
    let e = (b >> 23) as i32;
    let m = b & 0x7f_ffff;
    let (mant, exp) = if e == 0 { (m, -149) } else { (m | 0x80_0000, e - 150) };
    let tz = mant.trailing_zeros();
    (mant >> tz, exp + tz as i32)
}

/// The integer grid of `levels` (see [`Grid`]), if it exists.
fn find_grid(levels: &[f32]) -> Option<Grid> {
    let nonzero = || levels.iter().filter(|v| **v != 0.0).map(|&v| odd_decompose(v));
    let step_exp = nonzero().map(|(_, e)| e).min()?;
    let mut values = Vec::with_capacity(levels.len());
    for &v in levels {
        if v == 0.0 {
            values.push(0i16);
            continue;
        }
        let (mant, exp) = odd_decompose(v);
        let shift = (exp - step_exp) as u32; // ≥ 0 by the choice of step_exp
        if shift >= 16 || (mant as u64) << shift > MAX_GRID_ABS as u64 {
            return None;
        }
        let g = ((mant as u64) << shift) as i16;
        values.push(if v < 0.0 { -g } else { g });
    }
    let max_abs = values.iter().map(|g| g.unsigned_abs()).max().unwrap_or(0);
    Some(Grid { step_exp, values, max_abs })
}

/// One slot's projection table: the midpoints between consecutive dequantized values
/// (sorted), and the code of every sorted level.
#[derive(Clone, Debug, PartialEq)]
struct SlotTable {
    midpoints: Vec<f64>,
    codes: Vec<u8>,
    /// Where NaN goes: the projection of 0.0.
    nan_code: u8,
}

impl SlotTable {
    /// Builds the table from the dequantized values of the sorted levels (non-decreasing).
    fn new(sorted_values: &[f32], codes: &[u8]) -> SlotTable {
        let midpoints = sorted_values.windows(2).map(|w| (w[0] as f64 + w[1] as f64) * 0.5).collect();
        let mut t = SlotTable { midpoints, codes: codes.to_vec(), nan_code: 0 };
        t.nan_code = t.project(0.0);
        t
    }

    /// The code of the nearest level (module docs: ties toward zero, NaN as 0.0).
    #[inline]
    fn project(&self, x: f32) -> u8 {
        if x.is_nan() {
            return self.nan_code;
        }
        let xf = x as f64;
        let m = &self.midpoints;
        let mut i = m.partition_point(|&t| t < xf);
        // x == m[i]: equidistant from sorted levels i and i+1. The upper one has the
        // smaller magnitude exactly when the midpoint is negative; at 0, the upper (+a).
        if i < m.len() && m[i] == xf && xf <= 0.0 {
            i += 1;
        }
        self.codes[i]
    }
}

/// The dequantized value of `level` under scale `s` and offset `o`.
#[inline]
pub(crate) fn level_value(level: f32, s: f32, o: Option<f32>) -> f32 {
    let v = level * s;
    match o {
        Some(o) => o + v,
        None => v,
    }
}

/// The tables of one slot: the projection table and the value of every code.
fn slot_tables(set: &LevelSet, s: f32, o: Option<f32>) -> (SlotTable, Vec<f32>) {
    let sorted_values: Vec<f32> = set.sorted.iter().map(|&l| level_value(l, s, o)).collect();
    let by_code = set.levels.iter().map(|&l| level_value(l, s, o)).collect();
    (SlotTable::new(&sorted_values, &set.sorted_codes), by_code)
}

/// Checks a slot's scale (and offset): finite and > 0, and every level's value finite.
pub(crate) fn check_slot(set: &LevelSet, s: f32, o: Option<f32>) -> Result<()> {
    check_scale("scales", s)?;
    if let Some(o) = o
        && !o.is_finite()
    {
        return Err(Error::InvalidParameter(format!("`offsets` must be finite, got {o}")));
    }
    for &l in &set.levels {
        let v = level_value(l, s, o);
        if !v.is_finite() {
            return Err(Error::InvalidScale {
                what: "scales (a level times the scale, plus any offset, overflows f32)",
                value: s as f64,
            });
        }
    }
    Ok(())
}

/// Validated parameters of a non-uniform scheme: a level set, a granularity, one scale
/// per slot and optionally one offset per slot (see the module docs for the numbers).
#[derive(Clone, Debug, PartialEq)]
pub struct LevelParams {
    set: LevelSet,
    granularity: Granularity,
    scales: Vec<f32>,
    offsets: Option<Vec<f32>>,
    tables: Vec<SlotTable>,
    /// `values[p · num_codes + c]`: the dequantized value of code `c` in slot `p`.
    values: Vec<f32>,
}

impl LevelParams {
    /// Parameters given directly: `scales` non-empty (exactly 1 for
    /// [`Granularity::PerTensor`]; for the other granularities the count is checked
    /// against the shape when used), every scale finite, `> 0`, and small enough that
    /// every level times it is finite.
    pub fn new(set: LevelSet, granularity: Granularity, scales: Vec<f32>) -> Result<Self> {
        Self::with_parts(set, granularity, scales, None)
    }

    /// One scale for the whole tensor.
    pub fn per_tensor(set: LevelSet, scale: f32) -> Result<Self> {
        Self::new(set, Granularity::PerTensor, vec![scale])
    }

    /// One scale per index along `axis`.
    pub fn per_channel(set: LevelSet, axis: usize, scales: Vec<f32>) -> Result<Self> {
        Self::new(set, Granularity::PerChannel { axis }, scales)
    }

    /// The same parameters with one offset per slot (`x̂ = o + L · s`, as left by weight
    /// normalisation); `offsets` must be finite, one per scale.
    pub fn with_offsets(self, offsets: Vec<f32>) -> Result<Self> {
        if offsets.len() != self.scales.len() {
            return Err(Error::ShapeMismatch(format!(
                "`offsets` has {} entries but there are {} scales",
                offsets.len(),
                self.scales.len()
            )));
        }
        Self::with_parts(self.set, self.granularity, self.scales, Some(offsets))
    }

    fn with_parts(
        set: LevelSet,
        granularity: Granularity,
        scales: Vec<f32>,
        offsets: Option<Vec<f32>>,
    ) -> Result<Self> {
        if scales.is_empty() {
            return Err(Error::InvalidParameter("`scales` is empty; at least one scale is needed".into()));
        }
        if granularity == Granularity::PerTensor && scales.len() != 1 {
            return Err(Error::ShapeMismatch(format!(
                "per-tensor parameters need exactly one scale, got {}",
                scales.len()
            )));
        }
        if let Granularity::PerGroup { group_size: 0, .. } = granularity {
            return Err(Error::InvalidParameter("per-group `group_size` must be at least 1".into()));
        }
        for (p, &s) in scales.iter().enumerate() {
            check_slot(&set, s, offsets.as_ref().map(|o| o[p]))?;
        }
        let mut tables = Vec::with_capacity(scales.len());
        let mut values = Vec::with_capacity(scales.len() * set.num_codes());
        for (p, &s) in scales.iter().enumerate() {
            let (t, v) = slot_tables(&set, s, offsets.as_ref().map(|o| o[p]));
            tables.push(t);
            values.extend(v);
        }
        Ok(LevelParams { set, granularity, scales, offsets, tables, values })
    }

    /// The level set.
    pub fn level_set(&self) -> &LevelSet {
        &self.set
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The scales, one per slot (row-major parameter order, see [`Granularity`]).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The offsets, one per slot, if any.
    pub fn offsets(&self) -> Option<&[f32]> {
        self.offsets.as_deref()
    }

    /// The dequantized value of `code` in slot `slot`, if both are valid.
    pub fn value(&self, slot: usize, code: u8) -> Option<f32> {
        if slot >= self.scales.len() || code as usize >= self.set.num_codes() {
            return None;
        }
        Some(self.values[slot * self.set.num_codes() + code as usize])
    }

    fn layout(&self, shape: &[usize], what: &'static str, len: usize) -> Result<Layout> {
        let layout = Layout::new(shape, &self.granularity, what, len)?;
        let need = layout.num_params();
        if need != self.scales.len() {
            return Err(Error::ShapeMismatch(format!(
                "{:?} over shape {shape:?} needs {need} scales, the parameters have {}",
                self.granularity,
                self.scales.len()
            )));
        }
        Ok(layout)
    }

    /// Quantizes `x` (row-major, `shape`) into `out` (same length): the nearest level of
    /// each element's slot (module docs).
    pub fn quantize_into(&self, x: &[f32], shape: &[usize], out: &mut [u8]) -> Result<()> {
        let layout = self.layout(shape, "x", x.len())?;
        check_out_len("out", out.len(), layout.numel)?;
        self.quantize_layout(&layout, x, out);
        Ok(())
    }

    /// Quantizes `x` into a new [`LevelTensor`].
    pub fn quantize(&self, x: &[f32], shape: &[usize]) -> Result<LevelTensor> {
        let layout = self.layout(shape, "x", x.len())?;
        let mut codes = vec![0u8; layout.numel];
        self.quantize_layout(&layout, x, &mut codes);
        Ok(LevelTensor { codes, shape: shape.to_vec(), params: self.clone(), layout })
    }

    fn quantize_layout(&self, layout: &Layout, x: &[f32], out: &mut [u8]) {
        for run in layout.runs() {
            match run {
                Run::Uniform { start, len, p } => {
                    let t = &self.tables[p];
                    for (o, &v) in out[start..start + len].iter_mut().zip(&x[start..start + len]) {
                        *o = t.project(v);
                    }
                }
                Run::Varying { start, len, p0 } => {
                    for j in 0..len {
                        out[start + j] = self.tables[p0 + j].project(x[start + j]);
                    }
                }
            }
        }
    }

    /// Dequantizes `codes` (row-major, `shape`) into `out`; a code that is not valid for
    /// the level set is an error.
    pub fn dequantize_into(&self, codes: &[u8], shape: &[usize], out: &mut [f32]) -> Result<()> {
        let layout = self.layout(shape, "codes", codes.len())?;
        check_out_len("out", out.len(), layout.numel)?;
        check_codes(&self.set, codes, "codes")?;
        self.dequantize_layout(&layout, codes, out);
        Ok(())
    }

    /// Dequantizes `codes` into a new vector.
    pub fn dequantize(&self, codes: &[u8], shape: &[usize]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; codes.len()];
        self.dequantize_into(codes, shape, &mut out)?;
        Ok(out)
    }

    fn dequantize_layout(&self, layout: &Layout, codes: &[u8], out: &mut [f32]) {
        let nc = self.set.num_codes();
        for run in layout.runs() {
            match run {
                Run::Uniform { start, len, p } => {
                    let v = &self.values[p * nc..(p + 1) * nc];
                    for (o, &c) in out[start..start + len].iter_mut().zip(&codes[start..start + len]) {
                        *o = v[c as usize];
                    }
                }
                Run::Varying { start, len, p0 } => {
                    for j in 0..len {
                        out[start + j] = self.values[(p0 + j) * nc + codes[start + j] as usize];
                    }
                }
            }
        }
    }

    /// Quantize then dequantize (`x̂`).
    pub fn fake_quantize(&self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let layout = self.layout(shape, "x", x.len())?;
        let mut codes = vec![0u8; layout.numel];
        self.quantize_layout(&layout, x, &mut codes);
        let mut out = vec![0f32; layout.numel];
        self.dequantize_layout(&layout, &codes, &mut out);
        Ok(out)
    }

    /// The quantization error of `x` (MSE, SQNR, max abs error); `x` finite, non-empty.
    pub fn error(&self, x: &[f32], shape: &[usize]) -> Result<ErrorStats> {
        metrics::check_finite(x, "x")?;
        let xh = self.fake_quantize(x, shape)?;
        ErrorStats::between(x, &xh)
    }
}

impl super::Scheme<u8> for LevelParams {
    fn quantize_into(&self, x: &[f32], shape: &[usize], codes: &mut [u8]) -> Result<()> {
        LevelParams::quantize_into(self, x, shape, codes)
    }

    fn dequantize_into(&self, codes: &[u8], shape: &[usize], out: &mut [f32]) -> Result<()> {
        LevelParams::dequantize_into(self, codes, shape, out)
    }
}

/// Every code below the set's code count.
pub(crate) fn check_codes(set: &LevelSet, codes: &[u8], what: &'static str) -> Result<()> {
    let nc = set.num_codes();
    match codes.iter().position(|&c| c as usize >= nc) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidParameter(format!(
            "`{what}`: element {i} is code {}, but the level set has codes 0..{nc}",
            codes[i]
        ))),
    }
}

fn check_out_len(what: &'static str, got: usize, needed: usize) -> Result<()> {
    if got < needed {
        Err(Error::BufferTooSmall { what, needed, got })
    } else if got > needed {
        Err(Error::ShapeMismatch(format!("`{what}` has {got} elements, the shape has {needed}")))
    } else {
        Ok(())
    }
}

/// Where the range `R` of each slot comes from; `R` maps to the level of largest
/// magnitude (`scale = R / max|L|`, computed in f64 and rounded once to f32).
///
/// The data side measured follows the set: `|x|` when the set has levels of both signs,
/// `max(x, 0)` when it has no negative level (activations), `max(−x, 0)` when it has no
/// positive one. A zero range is taken as 1, as uniform quantization does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LevelRange {
    /// From data: min-max (`R = max`), percentile, or MSE-optimal clipping (candidates
    /// `R_max · k / grid`, `k = grid, …, 1`, the smallest MSE wins, ties keep the larger
    /// range — as in [`Calibration`]).
    Calibrated(Calibration),
    /// A given `R` (APoT's clipping threshold α; `2^FSR` for PoT), finite and `> 0`.
    /// With weight normalisation it is in units of the standard deviation (the paper
    /// initialises weight α at 3.0).
    Fixed(f32),
}

impl Default for LevelRange {
    fn default() -> Self {
        LevelRange::Calibrated(Calibration::MinMax)
    }
}

/// A recipe that derives [`LevelParams`] from data: a level set, a granularity, a
/// [`LevelRange`], an optional power-of-two constraint on the scale (PoT: the levels stay
/// pure powers of two) and optional weight normalisation.
///
/// Weight normalisation (APoT, Li et al. 2020 §3.3) quantizes `(x − μ) / σ` with `μ` the
/// mean and `σ` the sample standard deviation (`n − 1`, as `torch.std`) of each slot
/// (per tensor, as the paper; per channel when the granularity is), both in f64. The
/// range is then measured on the normalised data, and the parameters record the slot's
/// scale `σ · R / max|L|` and offset `μ`, so dequantization returns values on the data's
/// own scale (`x̂ = μ + L · scale`). A slot with `σ = 0` or one element uses `σ = 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelQuantizer {
    set: LevelSet,
    granularity: Granularity,
    range: LevelRange,
    power_of_two_scale: bool,
    normalize: bool,
}

impl LevelQuantizer {
    /// A per-tensor, min-max quantizer on `set`, free scale, no normalisation.
    pub fn new(set: LevelSet) -> Self {
        LevelQuantizer {
            set,
            granularity: Granularity::PerTensor,
            range: LevelRange::default(),
            power_of_two_scale: false,
            normalize: false,
        }
    }

    /// With another granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// With another range rule.
    pub fn with_range(mut self, range: LevelRange) -> Self {
        self.range = range;
        self
    }

    /// With the range calibrated from data by `calibration`.
    pub fn with_calibration(self, calibration: Calibration) -> Self {
        self.with_range(LevelRange::Calibrated(calibration))
    }

    /// Whether every scale is rounded up to a power of two (`2^⌈log2(R / max|L|)⌉`, so the
    /// largest level covers `R`).
    pub fn with_power_of_two_scale(mut self, on: bool) -> Self {
        self.power_of_two_scale = on;
        self
    }

    /// Whether to normalise each slot to zero mean and unit standard deviation first.
    pub fn with_normalization(mut self, on: bool) -> Self {
        self.normalize = on;
        self
    }

    /// The level set.
    pub fn level_set(&self) -> &LevelSet {
        &self.set
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The range rule.
    pub fn range(&self) -> LevelRange {
        self.range
    }

    /// Whether scales are powers of two.
    pub fn power_of_two_scale(&self) -> bool {
        self.power_of_two_scale
    }

    /// Whether slots are normalised.
    pub fn normalization(&self) -> bool {
        self.normalize
    }

    /// Derives the parameters from `x` (row-major, `shape`; non-empty and finite).
    pub fn calibrate(&self, x: &[f32], shape: &[usize]) -> Result<LevelParams> {
        match self.range {
            LevelRange::Calibrated(c) => c.validate()?,
            LevelRange::Fixed(r) => {
                if !(r.is_finite() && r > 0.0) {
                    return Err(Error::InvalidParameter(format!(
                        "fixed range `R` must be finite and > 0, got {r}"
                    )));
                }
            }
        }
        let layout = Layout::new(shape, &self.granularity, "x", x.len())?;
        if x.is_empty() {
            return Err(Error::InvalidParameter(format!("calibration needs data; `x` is empty (shape {shape:?})")));
        }
        metrics::check_finite(x, "x")?;
        let np = layout.num_params();
        let mut scales = Vec::with_capacity(np);
        let mut offsets = Vec::with_capacity(np);
        let mut one = |slice: &[f32]| -> Result<()> {
            let (s, o) = self.calibrate_slot(slice)?;
            scales.push(s);
            offsets.push(o);
            Ok(())
        };
        if np == 1 {
            one(x)?;
        } else {
            let (values, offs) = layout.gather(x);
            for p in 0..np {
                one(&values[offs[p]..offs[p + 1]])?;
            }
        }
        let params = LevelParams::new(self.set.clone(), self.granularity, scales)?;
        if self.normalize { params.with_offsets(offsets) } else { Ok(params) }
    }

    /// Calibrates on `x`, then quantizes it.
    pub fn quantize(&self, x: &[f32], shape: &[usize]) -> Result<LevelTensor> {
        self.calibrate(x, shape)?.quantize(x, shape)
    }

    /// Calibrates on `x`, quantizes it into `out`, and returns the parameters.
    pub fn quantize_into(&self, x: &[f32], shape: &[usize], out: &mut [u8]) -> Result<LevelParams> {
        check_out_len("out", out.len(), numel(shape)?)?;
        let params = self.calibrate(x, shape)?;
        params.quantize_into(x, shape, out)?;
        Ok(params)
    }

    /// (scale, offset) of one slot's values (non-empty, finite).
    fn calibrate_slot(&self, x: &[f32]) -> Result<(f32, f32)> {
        let (mu, sigma) = if self.normalize { mean_std(x) } else { (0.0, 1.0) };
        let (neg, pos) = self.set.sides();
        // The side of the normalised data the set covers.
        let side = |v: f32| -> f64 {
            let y = (v as f64 - mu) / sigma;
            match (neg, pos) {
                (true, true) => y.abs(),
                (false, _) => y.max(0.0),
                (true, false) => (-y).max(0.0),
            }
        };
        let r_max = || x.iter().map(|&v| side(v)).fold(0f64, f64::max);
        let r = match self.range {
            LevelRange::Fixed(r) => r as f64,
            LevelRange::Calibrated(Calibration::MinMax | Calibration::Mse { .. }) => r_max(),
            LevelRange::Calibrated(Calibration::Percentile(p)) => {
                let a: Vec<f32> = x.iter().map(|&v| side(v) as f32).collect();
                calibration::percentile(&a, p)? as f64
            }
        };
        let r = if r == 0.0 { 1.0 } else { r };
        let offset = mu as f32;
        let off = self.normalize.then_some(offset);
        let full = self.scale_for(sigma * r)?;
        let LevelRange::Calibrated(Calibration::Mse { grid }) = self.range else {
            return Ok((full, offset));
        };
        // MSE search: same candidates and tie rule as uniform calibration.
        let codes_err = |s: f32| -> Option<f64> {
            check_slot(&self.set, s, off).ok()?;
            let (t, v) = slot_tables(&self.set, s, off);
            Some(x.iter().map(|&xv| (xv as f64 - v[t.project(xv) as usize] as f64).powi(2)).fold(0.0, |a, d| a + d))
        };
        let mut best = full;
        let Some(mut best_err) = codes_err(full) else {
            return Ok((full, offset));
        };
        let mut last = full;
        for k in (1..grid).rev() {
            let Ok(s) = self.scale_for(sigma * r * k as f64 / grid as f64) else {
                continue;
            };
            if s == last {
                continue; // power-of-two scales repeat; each is measured once
            }
            last = s;
            if let Some(e) = codes_err(s)
                && e < best_err
            {
                best = s;
                best_err = e;
            }
        }
        Ok((best, offset))
    }

    /// The scale mapping a (data-unit) range `r > 0` to the largest level.
    fn scale_for(&self, r: f64) -> Result<f32> {
        let ideal = r / self.set.max_abs as f64;
        let s = if self.power_of_two_scale {
            let e = ceil_log2(ideal);
            if !(-149..=127).contains(&e) {
                return Err(Error::InvalidScale { what: "power-of-two scale derived from range", value: ideal });
            }
            (2f64).powi(e) as f32
        } else {
            ideal as f32
        };
        check_scale("scale derived from range", s)?;
        Ok(s)
    }
}

/// `⌈log2 v⌉` for a finite `v > 0`, exactly.
pub(crate) fn ceil_log2(v: f64) -> i32 {
    // v = m · 2^e with m in [1, 2): log2 v is an integer exactly when m == 1.
    let b = v.to_bits();
    let e = ((b >> 52) & 0x7ff) as i32;
    let m = b & ((1u64 << 52) - 1);
    if e == 0 {
        // Subnormal: v = m · 2^−1074.
        let top = 63 - m.leading_zeros() as i32; // position of the highest bit
        let exact = m.is_power_of_two();
        return top - 1074 + if exact { 0 } else { 1 };
    }
    (e - 1023) + if m == 0 { 0 } else { 1 }
}

/// Mean and sample standard deviation in f64 (σ = 1 when it is 0 or undefined).
fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mu = x.iter().map(|&v| v as f64).fold(0.0, |a, v| a + v) / n;
    if x.len() < 2 {
        return (mu, 1.0);
    }
    let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).fold(0.0, |a, d| a + d) / (n - 1.0);
    let sd = var.sqrt();
    (mu, if sd > 0.0 && sd.is_finite() { sd } else { 1.0 })
}

/// Codes with their shape and the parameters that produced them.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelTensor {
    codes: Vec<u8>,
    shape: Vec<usize>,
    params: LevelParams,
    layout: Layout,
}

impl LevelTensor {
    /// Wraps existing codes; checks the shape, the scale count and that every code is valid.
    pub fn new(codes: Vec<u8>, shape: &[usize], params: LevelParams) -> Result<Self> {
        let layout = params.layout(shape, "codes", codes.len())?;
        check_codes(&params.set, &codes, "codes")?;
        Ok(LevelTensor { codes, shape: shape.to_vec(), params, layout })
    }

    /// The codes, row-major.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The parameters.
    pub fn params(&self) -> &LevelParams {
        &self.params
    }

    /// The real values the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        self.params.dequantize_layout(&self.layout, &self.codes, &mut out);
        out
    }

    /// [`LevelTensor::dequantize`] into a caller buffer of exactly the element count.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        check_out_len("out", out.len(), self.codes.len())?;
        self.params.dequantize_layout(&self.layout, &self.codes, out);
        Ok(())
    }

    /// `(codes, shape, params)`.
    pub fn into_parts(self) -> (Vec<u8>, Vec<usize>, LevelParams) {
        (self.codes, self.shape, self.params)
    }
}
