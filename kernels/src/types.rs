//! Types shared by the kernels, the packers, the reference and the driver.

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// An 8-bit integer operand type: `u8` or `i8`.
pub trait Int8: bytemuck::Pod + Send + Sync + Default + PartialEq + core::fmt::Debug + 'static + sealed::Sealed {
    /// Whether the type is signed.
    const SIGNED: bool;
    /// Smallest value, as i32.
    const MIN: i32;
    /// Largest value, as i32.
    const MAX: i32;
    /// `"u8"` or `"i8"`.
    const NAME: &'static str;
    /// The value as i32.
    fn to_i32(self) -> i32;
    /// `v` saturated to the type's range.
    fn saturate_from(v: i32) -> Self;
    /// The bit pattern.
    fn to_bits(self) -> u8;
    /// From a bit pattern.
    fn from_bits(b: u8) -> Self;
}

impl Int8 for u8 {
    const SIGNED: bool = false;
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    const NAME: &'static str = "u8";
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn saturate_from(v: i32) -> Self {
        v.clamp(0, 255) as u8
    }
    #[inline(always)]
    fn to_bits(self) -> u8 {
        self
    }
    #[inline(always)]
    fn from_bits(b: u8) -> Self {
        b
    }
}

impl Int8 for i8 {
    const SIGNED: bool = true;
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    const NAME: &'static str = "i8";
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn saturate_from(v: i32) -> Self {
        v.clamp(-128, 127) as i8
    }
    #[inline(always)]
    fn to_bits(self) -> u8 {
        self as u8
    }
    #[inline(always)]
    fn from_bits(b: u8) -> Self {
        b as i8
    }
}

/// Instruction-set tiers, ordered from least to most capable within an architecture.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD assumptions (the compiler may still vectorise).
    Scalar = 0,
    /// x86-64 AVX2.
    Avx2 = 1,
    /// x86-64 AVX-VNNI (VEX-encoded `vpdpbusd` on ymm).
    AvxVnni = 2,
    /// x86-64 AVX-512 F/BW/VL + VNNI.
    Avx512Vnni = 3,
    /// x86-64 AMX-INT8.
    Amx = 4,
    /// AArch64 Advanced SIMD.
    Neon = 16,
    /// AArch64 dot product (`sdot`/`udot`).
    Dotprod = 17,
    /// AArch64 int8 matrix multiply (`smmla`/`usmmla`/`ummla`).
    I8mm = 18,
}

impl Isa {
    /// Every tier, in order.
    pub const ALL: [Isa; 8] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
        Isa::Amx,
        Isa::Neon,
        Isa::Dotprod,
        Isa::I8mm,
    ];

    /// The name used by `QKERN_MAX_ISA`, kernel names and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
        }
    }

    /// Parses a name produced by [`Isa::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name().eq_ignore_ascii_case(s))
    }

    /// Whether `self` is a tier at or below `cap` on the same architecture
    /// (scalar is below everything).
    pub fn within(self, cap: Isa) -> bool {
        if self == Isa::Scalar {
            return true;
        }
        let arch = |i: Isa| (i as u8) >> 4;
        arch(self) == arch(cap) && self <= cap
    }
}

/// How an i32 (or i64) accumulator becomes a u8/i8 output (DESIGN.md §2).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RequantMode {
    /// ONNX / onnxruntime / PyTorch / XNNPACK: `acc as f32 * scale`, round half to even,
    /// add the zero point, saturate.
    #[default]
    Fp32 = 0,
    /// gemmlowp / TFLite: `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << l, M), r)`,
    /// the multiplier from TFLite's `QuantizeMultiplier`.
    TfliteDoubleRounding = 1,
    /// ruy / TFLite built with `TFLITE_SINGLE_ROUNDING`: one rounding of `acc * M` by `31 - shift`.
    SingleRounding = 2,
}

impl RequantMode {
    /// Every mode.
    pub const ALL: [RequantMode; 3] =
        [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding];
    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            RequantMode::Fp32 => "fp32",
            RequantMode::TfliteDoubleRounding => "tflite-double-rounding",
            RequantMode::SingleRounding => "single-rounding",
        }
    }
}

/// A real multiplier in fixed point: `real ≈ multiplier · 2^(shift − 31)`, with
/// `multiplier` in `[2^30, 2^31)` (or 0 for a zero multiplier), as TFLite's `QuantizeMultiplier`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct QuantizedMultiplier {
    /// Q0.31 mantissa.
    pub multiplier: i32,
    /// Power-of-two exponent: positive shifts left, negative right.
    pub shift: i32,
}

/// What a GEMM microkernel writes (its output stage, fused into the epilogue).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Exact i32 result (already including zero-point corrections and i32 bias).
    I32 = 0,
    /// `scale[n] · acc + bias_f32[n]` as f32.
    F32 = 1,
    /// Requantized to u8 with clamp.
    U8 = 2,
    /// Requantized to i8 with clamp.
    I8 = 3,
}

impl OutputKind {
    /// Bytes of one output element.
    pub const fn bytes(self) -> usize {
        match self {
            OutputKind::I32 | OutputKind::F32 => 4,
            OutputKind::U8 | OutputKind::I8 => 1,
        }
    }
}

/// The fused output stage of a GEMM microkernel. Per-column arrays are indexed from the
/// tile's first column (the driver offsets the pointers).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OutputStage {
    /// Element type written to `c`.
    pub kind: OutputKind,
    /// Requantization mode (for `U8`/`I8`).
    pub mode: RequantMode,
    /// Per-column i32 term added to the raw dot product: it carries the zero-point
    /// corrections (`−za·Σb + K·za·zb`) and the i32 bias. Never null.
    pub col_offset: *const i32,
    /// Per-column f32 scale: the dequant scale (`F32`) or the requant multiplier
    /// (`Fp32` mode). Null when unused.
    pub scale: *const f32,
    /// Per-column f32 bias for `F32`, or null.
    pub bias_f32: *const f32,
    /// Per-column fixed-point multipliers for the fixed-point requant modes, or null.
    pub qmult: *const QuantizedMultiplier,
    /// Output zero point (`U8`/`I8`).
    pub out_zero_point: i32,
    /// Clamp bounds on the requantized value, within the output type's range.
    pub qmin: i32,
    /// See `qmin`.
    pub qmax: i32,
}

impl OutputStage {
    /// The same stage for the columns from `j0` on: every per-column table that is not
    /// null advanced by `j0` entries (a kernel storing its tile in column blocks).
    pub fn from_column(&self, j0: usize) -> OutputStage {
        let off = |p: *const f32| if p.is_null() { p } else { p.wrapping_add(j0) };
        OutputStage {
            col_offset: self.col_offset.wrapping_add(j0),
            scale: off(self.scale),
            bias_f32: off(self.bias_f32),
            qmult: if self.qmult.is_null() { self.qmult } else { self.qmult.wrapping_add(j0) },
            ..*self
        }
    }

    /// The raw i32 stage (`OutputKind::I32`) adding `col_offset` (one i32 per column):
    /// no scale, bias or requantization tables (null, so a kernel that reads them
    /// faults). What the testers and benchmarks that call a kernel directly use.
    pub const fn raw_i32(col_offset: *const i32) -> OutputStage {
        OutputStage {
            kind: OutputKind::I32,
            mode: RequantMode::Fp32,
            col_offset,
            scale: core::ptr::null(),
            bias_f32: core::ptr::null(),
            qmult: core::ptr::null(),
            out_zero_point: 0,
            qmin: 0,
            qmax: 0,
        }
    }
}

/// Arguments of one GEMM microkernel call: one `m ≤ MR` × `n ≤ NR` tile over K.
///
/// The kernel computes, for `i < m`, `j < n`,
/// `acc = Σ_{k<K} A[i][k]·B[k][j] + col_offset[j] − b_zero_point[j]·a_row_sum[i]`
/// in wrapping i32 arithmetic — exact whenever the true value fits in i32, which the
/// driver guarantees — and writes the output stage of `acc` to `c[i·ldc + j]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GemmArgs {
    /// Rows in this tile (1..=MR).
    pub m: usize,
    /// Columns in this tile (1..=NR).
    pub n: usize,
    /// Reduction length (the real K, not padded).
    pub k: usize,
    /// First activation row (u8 or i8 bit patterns, per the kernel's A type).
    pub a: *const u8,
    /// Distance in elements between activation rows.
    pub lda: usize,
    /// Start of this tile's packed weight panel (format fixed by the kernel's packer).
    pub b: *const u8,
    /// Per-row Σ_k A[i][k] (raw values), or null when every weight zero point is 0.
    pub a_row_sum: *const i32,
    /// Per-column weight zero point, or null when all are 0.
    pub b_zero_point: *const i32,
    /// Output tile origin.
    pub c: *mut u8,
    /// Distance in elements (of the output type) between output rows.
    pub ldc: usize,
    /// The fused output stage.
    pub out: OutputStage,
}

/// A GEMM microkernel entry point.
///
/// # Safety
/// The caller guarantees every pointer in `args` is valid for the reads and writes the
/// kernel's documentation lists, for the tile described by `args`.
pub type GemmUkernelFn = unsafe fn(args: &GemmArgs);

/// The packed layout of weights `B[K][N]`: panels of `nr` columns; inside a panel, K is
/// split in groups of `kr` (zero-padded to a multiple of `kr`) and stored
/// `[k/kr][nr][kr]`. This is the `c4`/`c8` layout of VNNI-style kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackFormat {
    /// Columns per panel.
    pub nr: usize,
    /// K elements per group.
    pub kr: usize,
}

impl PackFormat {
    /// K rounded up to a multiple of `kr`.
    pub const fn k_padded(&self, k: usize) -> usize {
        k.div_ceil(self.kr) * self.kr
    }
    /// Bytes of one panel.
    pub const fn panel_bytes(&self, k: usize) -> usize {
        self.k_padded(k) * self.nr
    }
    /// Total packed bytes for `k × n`.
    pub const fn packed_bytes(&self, k: usize, n: usize) -> usize {
        n.div_ceil(self.nr) * self.panel_bytes(k)
    }
}

/// A registered GEMM microkernel: one name, one tile shape, one packed format, and an
/// entry point per (activation, weight) signedness pair.
#[derive(Clone, Copy, Debug)]
pub struct GemmUkernel {
    /// XNNPACK-style name, e.g. `qx8_gemm_4x16c4__generic`.
    pub name: &'static str,
    /// The tier the kernel needs.
    pub isa: Isa,
    /// Rows per tile.
    pub mr: usize,
    /// Packed format of B (columns per tile = `format.nr`).
    pub format: PackFormat,
    /// Added by the kernel to every activation before it multiplies, indexed by
    /// `a_signed as usize` (e.g. 128 when i8 activations are flipped to u8 with `XOR 0x80`
    /// for a u8×s8 instruction). The driver presents `za + a_offset` as the zero point and
    /// row sums of the offset values, so `(a − za)` is unchanged.
    pub a_offset: [i32; 2],
    /// Subtracted from every weight by the packer, indexed by `b_signed as usize` (e.g. 128
    /// when u8 weights are stored as i8). The driver uses `zb − b_offset` as the zero point
    /// and column sums of the stored values, so `(b − zb)` is unchanged.
    pub b_offset: [i32; 2],
    /// `Some(x)`: the kernel is exact only when every stored weight satisfies `|b| ≤ x`
    /// (e.g. `vpmaddubsw`'s saturating i16 pairs: `2·255·x ≤ 32767`). The packer chooses
    /// such a kernel only after measuring the weights. `None`: exact for any weights.
    pub max_abs_stored_b: Option<i32>,
    /// Entry points indexed `[a_signed as usize][b_signed as usize]`; `None` where the
    /// kernel does not handle that combination. They read raw rows of A.
    pub run: [[Option<GemmUkernelFn>; 2]; 2],
    /// `Some`: the kernel also has entry points that read A already packed by its own
    /// packer (e.g. widened to i16), which a driver packs once per row tile and reuses
    /// across every column tile instead of letting the kernel redo it per tile. `None`
    /// (most kernels): raw rows only.
    pub packed_a: Option<PackedA>,
    /// `Some`: the kernel also has indirect entry points ([`IgemmArgs`]) that read each
    /// row's K range tap by tap through an indirection buffer (convolution without an
    /// im2col copy), on the same packed weights and with the same offsets and output
    /// stages. `None`: the driver gathers rows into a matrix first.
    pub indirect: Option<Indirect>,
}

/// The [`IgemmArgs::indirection`] value that stands for a padding tap: the kernel reads
/// [`IgemmArgs::zero`] (a row of activation zero points) instead of the input.
pub const IGEMM_ZERO_TAP: usize = usize::MAX;

/// Arguments of one indirect GEMM microkernel call: one `m ≤ MR` × `n ≤ NR` tile over
/// `K = taps·kc`.
///
/// Row `i` of A is the concatenation over taps `t < taps` of the `kc` elements at
/// `input + indirection[i·taps + t]` (or at `zero` where that entry is
/// [`IGEMM_ZERO_TAP`]). With that A, the kernel computes exactly what [`GemmArgs`]
/// specifies — `Σ_k A[i][k]·B[k][j] + col_offset[j] − b_zero_point[j]·a_row_sum[i]` in
/// wrapping i32 arithmetic, then the output stage — on the same packed panel.
/// `kc` is a positive multiple of the kernel's `format.kr`, so every packed K group lies
/// within one tap.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IgemmArgs {
    /// Rows in this tile (1..=MR).
    pub m: usize,
    /// Columns in this tile (1..=NR).
    pub n: usize,
    /// Taps per row (≥ 1).
    pub taps: usize,
    /// Elements per tap (a positive multiple of the kernel's `format.kr`).
    pub kc: usize,
    /// Base of the activations: every non-padding tap row is `input + offset` and holds
    /// `kc` readable elements.
    pub input: *const u8,
    /// `m·taps` element offsets from `input` (row-major), or [`IGEMM_ZERO_TAP`].
    pub indirection: *const usize,
    /// `kc` elements: the activation zero point, read for padding taps.
    pub zero: *const u8,
    /// Start of this tile's packed weight panel (`K = taps·kc`).
    pub b: *const u8,
    /// Per-row Σ_k A[i][k] (raw values plus the kernel's `a_offset`), or null when every
    /// weight zero point is 0.
    pub a_row_sum: *const i32,
    /// Per-column weight zero point, or null when all are 0.
    pub b_zero_point: *const i32,
    /// Output tile origin.
    pub c: *mut u8,
    /// Distance in elements (of the output type) between output rows.
    pub ldc: usize,
    /// The fused output stage.
    pub out: OutputStage,
}

impl IgemmArgs {
    /// The [`GemmArgs`] of the same tile for the output side (the epilogues read only
    /// `m`, `n`, `a_row_sum`, `b_zero_point`, `c`, `ldc` and `out`): `a` is null and
    /// `k` is `taps·kc`.
    pub const fn epilogue_args(&self) -> GemmArgs {
        GemmArgs {
            m: self.m,
            n: self.n,
            k: self.taps * self.kc,
            a: core::ptr::null(),
            lda: 0,
            b: self.b,
            a_row_sum: self.a_row_sum,
            b_zero_point: self.b_zero_point,
            c: self.c,
            ldc: self.ldc,
            out: self.out,
        }
    }

    /// The first element of tap `t` of row `i` (`input + offset`, or `zero`).
    ///
    /// # Safety
    /// `i < m` (or any row whose entries the caller knows to be readable), `t < taps`,
    /// and `indirection` valid as the contract says.
    #[inline(always)]
    pub unsafe fn tap_ptr(&self, i: usize, t: usize) -> *const u8 {
        // SAFETY: entry (i, t) lies in the m·taps entries (caller).
        let off = unsafe { *self.indirection.add(i * self.taps + t) };
        if off == IGEMM_ZERO_TAP { self.zero } else { self.input.wrapping_add(off) }
    }
}

/// An indirect GEMM microkernel entry point.
///
/// # Safety
/// The caller guarantees every pointer in `args` is valid for the reads and writes the
/// [`IgemmArgs`] contract lists, and that the CPU supports the kernel's ISA.
pub type IgemmUkernelFn = unsafe fn(args: &IgemmArgs);

/// The indirect entry points of a GEMM kernel ([`GemmUkernel::indirect`]).
#[derive(Clone, Copy, Debug)]
pub struct Indirect {
    /// Entry points indexed as [`GemmUkernel::run`].
    pub run: [[Option<IgemmUkernelFn>; 2]; 2],
}

/// Packs up to `mr` rows of raw A (`m` rows of `k` elements, `lda` apart, from `a`) into
/// `dst`, in the layout of one [`PackedA`].
///
/// # Safety
/// `1 ≤ m ≤ mr` rows of `k` elements are readable from `a`, `lda` apart; `dst` is writable
/// for [`PackedA::tile_bytes`]`(k)` bytes; the CPU supports the kernel's ISA.
pub type APackFn = unsafe fn(a: *const u8, lda: usize, m: usize, k: usize, dst: *mut u8);

/// Entry points of a kernel that read A pre-packed by the kernel's own packer
/// ([`GemmUkernel::packed_a`]).
///
/// The packed tile is K-group-major: group `g` (K elements `g·kr..g·kr + kr`, zero past
/// K) of all `mr` rows (zero past `m`) takes `group_bytes` bytes at offset
/// `g·group_bytes`. So the K range starting at a multiple of `kr` is addressed by
/// offsetting the pointer, as the packed weights are. A packed entry point takes the
/// same [`GemmArgs`] as the raw one except that `a` points at such a packed tile (or at
/// the group where its K range starts) and `lda` is ignored; it reads
/// `args.k.div_ceil(kr)·group_bytes` bytes from `a`.
#[derive(Clone, Copy, Debug)]
pub struct PackedA {
    /// K elements per group (K is zero-padded to a multiple).
    pub kr: usize,
    /// Bytes of one K group of a packed tile (all `mr` rows).
    pub group_bytes: usize,
    /// The packer, indexed `[a_signed as usize]`.
    pub pack: [APackFn; 2],
    /// Entry points indexed as [`GemmUkernel::run`], reading packed A.
    pub run: [[Option<GemmUkernelFn>; 2]; 2],
}

impl PackedA {
    /// Bytes of one packed row tile for a K range of length `k`.
    pub const fn tile_bytes(&self, k: usize) -> usize {
        k.div_ceil(self.kr) * self.group_bytes
    }
}

impl GemmUkernel {
    /// Columns per tile.
    pub const fn nr(&self) -> usize {
        self.format.nr
    }
    /// The activation offset for activations of type `A`.
    pub const fn a_offset_for(&self, a_signed: bool) -> i32 {
        self.a_offset[a_signed as usize]
    }
    /// The weight offset for weights of type `B`.
    pub const fn b_offset_for(&self, b_signed: bool) -> i32 {
        self.b_offset[b_signed as usize]
    }
}

/// Σ (a + a_offset) over one activation row, modulo 2^32: the `a_row_sum` a kernel
/// with that activation offset expects.
#[inline]
pub fn gemm_row_sum<A: Int8>(row: &[A], a_offset: i32) -> i32 {
    row.iter().fold(0i32, |s, v| s.wrapping_add(v.to_i32().wrapping_add(a_offset)))
}

/// The per-column term of [`OutputStage::col_offset`] for a K range of length `k`:
/// `K·za·zb − za·Σb + bias` modulo 2^32, where `za`, `zb` and `Σb` are as the kernel
/// sees them (`za + a_offset`, `zb − b_offset`, Σ of stored weights).
#[inline]
pub fn gemm_col_term(k: usize, za: i32, zb: i32, col_sum: i32, bias: i32) -> i32 {
    (k as u32 as i32).wrapping_mul(za).wrapping_mul(zb).wrapping_sub(za.wrapping_mul(col_sum)).wrapping_add(bias)
}

// ---------------------------------------------------------------------------------------
// Depthwise convolution (depth multiplier 1: one filter per channel).

/// The [`DwconvArgs::indirection`] value that stands for a padding tap: the kernel reads
/// [`DwconvArgs::zero`] (a row of activation zero points) instead of the input.
pub const DW_ZERO_TAP: usize = usize::MAX;

/// The largest tap count for which any centred filter keeps the raw sum in i32:
/// `taps · 255 · 255 ≤ 2^31 − 1` (`33025 · 65025 = 2 147 450 625`). The driver must also
/// keep the true result (with the bias) within i32, or split the work.
pub const DW_MAX_TAPS: usize = 33025;

/// Packed layout of a depthwise filter: the weights centred (`wc = w − zw[c]`), channel
/// tiles of `ct` channels, taps in groups of `kr`, `[c/ct][t/kr][ct][kr]`, zero-padded
/// (channels past `C`, taps past the count).
///
/// * `kr = 2`: little-endian i16 (`wc ∈ [−255, 255]`, any filter): one dword per channel
///   and tap pair, `(wc[2p][c], wc[2p+1][c])`, for `vpmaddwd`/`vpdpwssd` with the dword
///   `(x[2p][c], x[2p+1][c])` of widened activations.
/// * `kr = 4`: i8, only for filters whose centred weights all lie in `[−128, 127]` (e.g.
///   i8 weights with zero point 0): one dword per channel and tap quad, for `vpdpbusd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DwPackFormat {
    /// Channels per tile.
    pub ct: usize,
    /// Taps per group: 2 (i16 weights) or 4 (i8 weights).
    pub kr: usize,
}

impl DwPackFormat {
    /// Tap groups (`taps.div_ceil(kr)`).
    pub const fn groups(&self, taps: usize) -> usize {
        taps.div_ceil(self.kr)
    }
    /// Bytes of one channel tile (4 bytes per channel and tap group in both layouts).
    pub const fn tile_bytes(&self, taps: usize) -> usize {
        self.groups(taps) * self.ct * 4
    }
    /// Total packed bytes for `channels × taps`.
    pub const fn packed_bytes(&self, channels: usize, taps: usize) -> usize {
        channels.div_ceil(self.ct) * self.tile_bytes(taps)
    }
    /// Whether the layout can hold a centred weight `wc`.
    pub const fn holds(&self, wc: i32) -> bool {
        if self.kr == 4 { wc >= -128 && wc <= 127 } else { wc >= -32768 && wc <= 32767 }
    }
}

/// Arguments of one depthwise microkernel call: `pixels` output pixels × all `channels`.
///
/// For `p < pixels`, `c < channels`, with `x[t] = ` byte `c` of the row of tap `t` of
/// pixel `p` (the input at `input + indirection[p·taps + t]`, or `zero` where that entry
/// is [`DW_ZERO_TAP`]) read as the kernel's activation type plus its `a_offset`, and `wc`
/// the packed centred weights, the kernel computes
/// `acc = Σ_{t<taps} x[t]·wc[t][c] + col_offset[c]` in wrapping i32 arithmetic — exact
/// whenever the true value fits in i32, which the driver guarantees — and writes the
/// output stage of `acc` to `output[p·output_pixel_stride + c]` (elements of the output
/// type). The per-channel tables of `out` are indexed by `c` from 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DwconvArgs {
    /// Channels (≥ 1).
    pub channels: usize,
    /// Taps per output pixel (≥ 1; equal to the kernel's `taps` when it is specialised).
    pub taps: usize,
    /// Output pixels in this call (≥ 1).
    pub pixels: usize,
    /// Base of the activations: every non-padding tap row is `input + offset` and holds
    /// `channels` readable bytes.
    pub input: *const u8,
    /// `pixels · taps` byte offsets from `input` (pixel-major), or [`DW_ZERO_TAP`].
    pub indirection: *const usize,
    /// `channels` bytes: the activation zero point, read for padding taps.
    pub zero: *const u8,
    /// The packed filter ([`DwPackFormat`] of the kernel), all channel tiles.
    pub weights: *const u8,
    /// First output pixel.
    pub output: *mut u8,
    /// Distance in elements (of the output type) between output pixels (≥ channels).
    pub output_pixel_stride: usize,
    /// The fused output stage (per-channel tables of `channels` entries).
    pub out: OutputStage,
}

/// A depthwise microkernel entry point.
///
/// # Safety
/// The caller guarantees every pointer in `args` is valid for the reads and writes the
/// [`DwconvArgs`] contract lists, and that the CPU has the kernel's features.
pub type DwconvUkernelFn = unsafe fn(args: &DwconvArgs);

/// A registered depthwise microkernel.
#[derive(Clone, Copy, Debug)]
pub struct DwconvUkernel {
    /// XNNPACK-style name, e.g. `qx8_dwconv_9p64c__avx512vnni`.
    pub name: &'static str,
    /// The tier the kernel needs.
    pub isa: Isa,
    /// CPU features needed beyond `isa` (names as `is_x86_feature_detected!`), e.g.
    /// `avx512vbmi`: dispatch checks them.
    pub extra_features: &'static [&'static str],
    /// `Some(t)`: the kernel handles exactly `t` taps (specialised); `None`: any count
    /// in `1..=DW_MAX_TAPS`.
    pub taps: Option<usize>,
    /// Packed filter layout (channels per tile = `format.ct`). With `kr = 4` the kernel
    /// takes only filters whose centred weights all fit in i8 ([`DwPackFormat::holds`]):
    /// dispatch checks the filter first.
    pub format: DwPackFormat,
    /// Added by the kernel to every activation (indexed `a_signed as usize`), e.g. 128
    /// for i8 activations flipped to u8 with `XOR 0x80`. The driver uses
    /// `za + a_offset` in `col_offset`.
    pub a_offset: [i32; 2],
    /// Entry points indexed by `a_signed as usize`. The weight type does not matter:
    /// the packed weights are centred i16.
    pub run: [Option<DwconvUkernelFn>; 2],
}

impl DwconvUkernel {
    /// Whether the kernel takes a filter whose centred weights lie in `[lo, hi]`.
    pub const fn takes_weights(&self, lo: i32, hi: i32) -> bool {
        self.format.holds(lo) && self.format.holds(hi)
    }
    /// Whether the kernel handles `taps` taps.
    pub const fn handles_taps(&self, taps: usize) -> bool {
        match self.taps {
            Some(t) => t == taps,
            None => taps >= 1 && taps <= DW_MAX_TAPS,
        }
    }
}

/// Arguments of one codebook (table-lookup) microkernel call: one `m ≤ MR` × `n ≤ NR`
/// tile over K, weights given as 4-bit codes in the [`CodebookFormat`] panel layout.
///
/// The kernel computes, for `i < m`, `j < n`,
/// `acc = Σ_{k<K} (A[i][k] + a_offset)·table[code(k, j)] + col_offset[j]` in wrapping i32
/// arithmetic (exact whenever the true value fits in i32, which the driver guarantees)
/// and writes the output stage of `acc` to `c[i·ldc + j]`. `a_offset` is the kernel's
/// [`CodebookUkernel::a_offset`] (128 for i8 activations flipped to u8 by `XOR 0x80`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CodebookArgs {
    /// Rows in this tile (1..=MR).
    pub m: usize,
    /// Columns in this tile (1..=NR; any `n ≥ 1` for a [`CodebookUkernel::gemv`] entry).
    pub n: usize,
    /// Reduction length (the real K).
    pub k: usize,
    /// First activation row (u8 or i8 bit patterns, per the entry point; for the kernels
    /// with [`CodebookUkernel::table_i16`], i16 values the driver widened from them, so
    /// that no kernel spends a shuffle per row and K group on the widening; for the kernels
    /// with [`CodebookUkernel::a_sign_split`], sign-split rows of three bytes per K).
    pub a: *const u8,
    /// Distance in elements between activation rows (in sign-split rows, K elements of
    /// [`crate::pack::codebook::SIGN_SPLIT_BYTES_PER_K`] bytes).
    pub lda: usize,
    /// Start of this tile's packed code panel.
    pub b: *const u8,
    /// The table: the integer grid value of each code, as i8 (16 entries for 4-bit
    /// kernels, 32 for 5-bit ones). Read by the kernels without
    /// [`CodebookUkernel::table_i16`].
    pub table: *const i8,
    /// The same table as i16, always 32 entries (zero past the level set's codes), for
    /// grids beyond int8 (PoT-5, 4-bit log: up to ±2^14; any grid within ±32767). Read
    /// only by the kernels with [`CodebookUkernel::table_i16`].
    pub table16: *const i16,
    /// Output tile origin.
    pub c: *mut u8,
    /// Distance in elements (of the output type) between output rows.
    pub ldc: usize,
    /// The fused output stage (the GEMM one; `a_row_sum`-style terms are not used).
    pub out: OutputStage,
}

/// A codebook microkernel entry point.
///
/// # Safety
/// The caller guarantees every pointer in `args` is valid for the reads and writes the
/// kernel's documentation lists, and that the CPU supports the kernel's ISA.
pub type CodebookUkernelFn = unsafe fn(args: &CodebookArgs);

/// The packed code layout of the codebook kernels (`c8n`, nibble pairs): panels of `nr`
/// columns; K in groups of 8 (zero codes past K, the kernel never multiplies them by a
/// real activation); group `g` of a panel is `nr · 4` bytes `[g][nr][4]`, byte `(j, t)`
/// holding the code of `k = 8g + t` in its low nibble and of `k = 8g + 4 + t` in its high
/// nibble. So one nibble split of a 64-byte load gives two `vpdpbusd` operands (16
/// columns × 4 consecutive K each) without any shuffle of weights or activations.
///
/// The bit-shift family ([`CodebookFamily::Shift`]) reads `bits = 8` (one exponent byte
/// per weight: PoT) or `bits = 16` (two: APoT) from the same panels and K groups of 8;
/// see [`crate::pack::shift`] for the byte layout. In every layout one group of a panel
/// is `nr · bits` bytes.
///
/// 5-bit codes (`bits = 5`): each group is followed by `nr` bytes of bit 4 of its codes,
/// two bitmaps of `nr·4` bits: the first has bit `4j + t` = bit 4 of the low-nibble code
/// at byte `(j, t)`, the second the same for the high-nibble codes. So the 64 bytes of 16
/// columns come with one u64 mask for each half (`kmovq` + a masked blend of two
/// 16-entry lookups, or `vpermb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodebookFormat {
    /// Columns per panel.
    pub nr: usize,
    /// Packed bits per weight: 4, or 5 (nibbles plus a bit plane per group) for the
    /// lookup family; 8 or 16 (one or two shift terms) for the shift family.
    pub bits: u32,
}

impl CodebookFormat {
    /// K elements per group.
    pub const KR: usize = 8;
    /// Bytes of one K group of a panel: `nr·bits` (8 K per group), i.e. `nr·4`, `nr·5`
    /// with the bit plane, `nr·8` / `nr·16` for one / two shift terms.
    pub const fn group_bytes(&self) -> usize {
        self.nr * self.bits as usize
    }
    /// Bytes of one panel for `k` rows.
    pub const fn panel_bytes(&self, k: usize) -> usize {
        k.div_ceil(Self::KR) * self.group_bytes()
    }
    /// Total packed bytes for `k × n`.
    pub const fn packed_bytes(&self, k: usize, n: usize) -> usize {
        n.div_ceil(self.nr) * self.panel_bytes(k)
    }
}

/// The kernel families that run codebook weights (DESIGN.md §2).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodebookFamily {
    /// Decode through a byte table, multiply with the int8 dot-product instructions.
    Lut = 0,
    /// Bit-shift accumulation (`Σ ±(x << e)`).
    Shift = 1,
}

impl CodebookFamily {
    /// `"lut"` or `"shift"` (the `QKERN_CODEBOOK_KERNEL` values).
    pub const fn name(self) -> &'static str {
        match self {
            CodebookFamily::Lut => "lut",
            CodebookFamily::Shift => "shift",
        }
    }
}

/// A registered codebook microkernel.
#[derive(Clone, Copy, Debug)]
pub struct CodebookUkernel {
    /// XNNPACK-style name, e.g. `qx8_codebook4_gemm_8x32c8__avx512vnni`.
    pub name: &'static str,
    /// The family (lookup or shift).
    pub family: CodebookFamily,
    /// The tier the kernel needs.
    pub isa: Isa,
    /// Code width the kernel decodes (4 or 5; the same as `format.bits`). Shift kernels
    /// read exponents, not codes: 5 (any code width up to 5 whose grid they represent).
    pub bits: u32,
    /// Rows per tile.
    pub mr: usize,
    /// The packed layout (columns per tile = `format.nr`).
    pub format: CodebookFormat,
    /// Added by the kernel to every activation, indexed by `a_signed as usize` (128 for
    /// i8 activations flipped to u8); the driver moves the zero point to match.
    pub a_offset: [i32; 2],
    /// `Some(x)`: exact only when every table value satisfies `|v| ≤ x` (AVX2
    /// `vpmaddubsw`: `2·255·64 ≤ 32767`). `None`: exact for any i8 table.
    pub max_abs_table: Option<i32>,
    /// Decodes through the i16 table ([`CodebookArgs::table16`]), reads A as i16
    /// ([`CodebookArgs::a`]) and multiplies in i16 (`vpmaddwd`, `vpdpwssd`, `smlal`):
    /// exact for every grid within ±32767, one product `|a·g| ≤ 255·32767 < 2^23` and a
    /// pair of them `< 2^24`, so nothing saturates. `false`: the i8 table
    /// ([`CodebookArgs::table`]) and byte activations.
    pub table_i16: bool,
    /// Reads A in the sign-split form ([`crate::pack::codebook::sign_split_row`]), which
    /// the driver writes once per call: per K group of 8, the signed activations
    /// `s = a + a_offset` as i8, their sign masks (`0xFF` where `s < 0`), then their
    /// magnitudes `|s|`, zeros past K. A kernel that multiplies `|s|` by `w·sign(s)`
    /// (AVX2 `vpmaddubsw` after `vpsignb`) then spends no operation per tile on `s` and
    /// `|s|`, and no tail code: the padded K adds zeros. Both entry points take the same
    /// form (the offset made it signed). [`CodebookArgs::lda`] counts K elements of
    /// [`crate::pack::codebook::SIGN_SPLIT_BYTES_PER_K`] bytes.
    pub a_sign_split: bool,
    /// CPU features needed beyond `isa` (`cpuid` flag names, e.g. `"avx512vbmi"`); dispatch
    /// skips the kernel on CPUs that lack one.
    pub extra_features: &'static [&'static str],
    /// Entry points indexed by `a_signed as usize`.
    pub run: [CodebookUkernelFn; 2],
    /// One-row entry points (GEMV), indexed as `run`, for kernels that have them: the
    /// same computation and A form as `run` with `m = 1` and any `n ≥ 1` — the
    /// `n.div_ceil(nr)` panels from [`CodebookArgs::b`], `format.panel_bytes(k)` apart,
    /// and every per-column table of the stage holding `n` entries — in one call, so
    /// the panels go through one loop without a call, setup and epilogue per panel.
    pub gemv: Option<[CodebookUkernelFn; 2]>,
}
