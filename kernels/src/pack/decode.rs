//! Codebook decode to int8 GEMM panels: the 4-/5-bit codes of the codebook kernels'
//! [`CodebookFormat`] turned, through a 32-byte table, into the packed B layout
//! ([`PackFormat`], `[k/kr][nr][kr]`) of an int8 GEMM microkernel, so that a call with
//! many rows decodes each weight once and runs the int8 kernel over every row tile,
//! instead of decoding in registers once per row tile.
//!
//! Why no shuffle pass is needed for `kr = 4`: group `g` of a codebook panel holds, at
//! byte `(j, t)`, the codes of `k = 8g + t` (low nibble) and `8g + 4 + t` (high nibble),
//! so the low nibbles of a group, in order, are exactly K group `2g` of a `c4` panel and
//! the high nibbles K group `2g + 1`. For `kr = 2` one in-lane byte shuffle per 8 columns
//! separates `t ∈ {0, 1}` from `t ∈ {2, 3}`.
//!
//! [`decode_codebook_ref`] is the scalar definition; the SIMD decoders
//! ([`CodebookDecoder`], registered per tier) must write the same bytes.

use crate::types::{CodebookFormat, Isa, PackFormat};

/// Arguments of one decode call: `panels` target panels of `dst_nr` columns, from column
/// `j0` on, over the whole K.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CodebookDecodeArgs {
    /// The whole codebook packed matrix (panels of `src_nr` columns, [`CodebookFormat`]
    /// with `bits` 4 or 5).
    pub src: *const u8,
    /// Columns per source panel (a multiple of 8).
    pub src_nr: usize,
    /// Reduction length.
    pub k: usize,
    /// Columns of B.
    pub n: usize,
    /// First column decoded: a multiple of `dst_nr`, below `n`.
    pub j0: usize,
    /// Target panels written, each `PackFormat { nr: dst_nr, kr }.panel_bytes(k)` bytes;
    /// at most `(n − j0).div_ceil(dst_nr)`.
    pub panels: usize,
    /// 32 bytes: the byte stored for each code (the weight minus the GEMM kernel's
    /// `b_offset`, as its bit pattern); 4-bit decoders read the first 16.
    pub table: *const u8,
    /// The target panels.
    pub dst: *mut u8,
    /// Columns per target panel (a multiple of 8).
    pub dst_nr: usize,
}

/// A decoder entry point.
///
/// # Safety
/// `args` satisfies the [`CodebookDecodeArgs`] contract for the decoder's code width and
/// target `kr` ([`CodebookDecoder`]): `src` holds the codebook panels of every column
/// `< n` (`CodebookFormat { nr: src_nr, bits }.packed_bytes(k, n)` bytes), `table` 32
/// bytes, `dst` the target panels; the CPU supports the decoder's ISA.
pub type CodebookDecodeFn = unsafe fn(args: &CodebookDecodeArgs);

/// A registered decoder: codes of one width into panels of one `kr`.
#[derive(Clone, Copy, Debug)]
pub struct CodebookDecoder {
    /// XNNPACK-style name, e.g. `codebook4_decode_c4__avx2`.
    pub name: &'static str,
    /// The tier the decoder needs.
    pub isa: Isa,
    /// Source code width (4 or 5).
    pub bits: u32,
    /// Target K group (2 or 4).
    pub kr: usize,
    /// Columns per SIMD step: both `src_nr` and `dst_nr` must be multiples of it.
    pub cols: usize,
    /// The entry point.
    pub run: CodebookDecodeFn,
}

/// The code of `(kk, j)` in a codebook panel set (`bits` 4 or 5; `panel_bytes` per panel).
///
/// # Safety
/// `src` holds the panel of column `j` and its group of `kk`.
#[inline]
pub(crate) unsafe fn code_at(src: *const u8, fmt: CodebookFormat, panel_bytes: usize, kk: usize, j: usize) -> u8 {
    let (p, jl) = (j / fmt.nr, j % fmt.nr);
    let (g, r) = (kk / 8, kk % 8);
    let group = p * panel_bytes + g * fmt.group_bytes();
    let pos = 4 * jl + r % 4;
    // SAFETY: the caller's contract: the byte and the bit plane lie in the group.
    unsafe {
        let mut c = (*src.add(group + pos) >> (4 * (r / 4))) & 0x0F;
        if fmt.bits == 5 {
            let bit = (r / 4) * fmt.nr * 4 + pos;
            c |= ((*src.add(group + fmt.nr * 4 + bit / 8) >> (bit % 8)) & 1) << 4;
        }
        c
    }
}

/// Writes one target panel element range by the scalar definition: for columns
/// `jl0..jl1` of the target panel starting at column `jp`, and K rows `kk0..kk1` (within
/// the panel's padded K): `table[code]` for `kk < k` and `j < n`, else 0.
///
/// # Safety
/// As [`CodebookDecodeFn`] for a decoder of `bits`, `kr`; `dst` is the target panel.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn decode_scalar_block(args: &CodebookDecodeArgs, bits: u32, kr: usize, jp: usize, jl: (usize, usize), kk: (usize, usize), dst: *mut u8) {
    let fmt = CodebookFormat { nr: args.src_nr, bits };
    let pb = fmt.panel_bytes(args.k);
    for kk in kk.0..kk.1 {
        for jl in jl.0..jl.1 {
            let j = jp + jl;
            let v = if kk < args.k && j < args.n {
                // SAFETY: column j < n and row kk < k lie in the source (the contract).
                unsafe { *args.table.add(code_at(args.src, fmt, pb, kk, j) as usize) }
            } else {
                0
            };
            // SAFETY: (kk, jl) lies in the target panel (kk below its padded K).
            unsafe { *dst.add((kk / kr * args.dst_nr + jl) * kr + kk % kr) = v };
        }
    }
}

/// The layout of one decode call's source and target, computed once per call.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD decoders' helpers
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Bytes of one source panel and of one source K group.
    pub(crate) src_panel: usize,
    pub(crate) src_group: usize,
    /// Bytes of one target panel, and its padded K.
    pub(crate) dst_panel: usize,
    pub(crate) k_padded: usize,
    /// Whole source K groups (8 rows each); a K tail past them is decoded by the scalar
    /// definition.
    pub(crate) groups: usize,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD decoders' helpers
impl CodebookDecodeArgs {
    /// The geometry of this call for codes of `bits` into panels of `kr`.
    pub(crate) fn geometry(&self, bits: u32, kr: usize) -> Geometry {
        let sfmt = CodebookFormat { nr: self.src_nr, bits };
        let dfmt = PackFormat { nr: self.dst_nr, kr };
        Geometry {
            src_panel: sfmt.panel_bytes(self.k),
            src_group: sfmt.group_bytes(),
            dst_panel: dfmt.panel_bytes(self.k),
            k_padded: dfmt.k_padded(self.k),
            groups: self.k / 8,
        }
    }

    /// Target panel `p`: its first column, its bytes, and how many of its columns a SIMD
    /// decoder of `cols` columns per step covers (whole steps below `n`).
    pub(crate) fn panel(&self, geo: &Geometry, p: usize, cols: usize) -> (usize, *mut u8, usize) {
        let jp = self.j0 + p * self.dst_nr;
        (jp, self.dst.wrapping_add(p * geo.dst_panel), (self.n - jp).min(self.dst_nr) / cols * cols)
    }

    /// The start of source K group `g` of column `j`'s panel (its nibble bytes for `j`
    /// are `4·(j mod src_nr)` further).
    pub(crate) fn src_group(&self, geo: &Geometry, j: usize, g: usize) -> *const u8 {
        self.src.wrapping_add(j / self.src_nr * geo.src_panel + g * geo.src_group)
    }
}

/// Completes target panel `dst` (first column `jp`) after a SIMD decoder wrote the whole
/// K groups of its first `full` columns: the K tail of those and every row of the rest,
/// by the scalar definition.
///
/// # Safety
/// As [`CodebookDecodeFn`]; `dst` is the panel.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD decoders' helpers
pub(crate) unsafe fn finish_panel(args: &CodebookDecodeArgs, geo: &Geometry, bits: u32, kr: usize, jp: usize, full: usize, dst: *mut u8) {
    // SAFETY: forwarded; both blocks lie in the panel.
    unsafe {
        decode_scalar_block(args, bits, kr, jp, (0, full), (8 * geo.groups, geo.k_padded), dst);
        decode_scalar_block(args, bits, kr, jp, (full, args.dst_nr), (0, geo.k_padded), dst);
    }
}

/// The scalar decoder (the reference the SIMD decoders are tested against): writes
/// exactly what [`crate::pack::pack_b_kgroups`] writes for the decoded bytes, zero in the
/// K and N padding.
///
/// # Safety
/// As [`CodebookDecodeFn`].
pub unsafe fn decode_codebook_ref<const BITS: u32, const KR: usize>(args: &CodebookDecodeArgs) {
    let dfmt = PackFormat { nr: args.dst_nr, kr: KR };
    let pb = dfmt.panel_bytes(args.k);
    for p in 0..args.panels {
        let jp = args.j0 + p * args.dst_nr;
        // SAFETY: the contract; the block is the whole panel.
        unsafe { decode_scalar_block(args, BITS, KR, jp, (0, args.dst_nr), (0, dfmt.k_padded(args.k)), args.dst.add(p * pb)) };
    }
}

/// The portable decoders (the reference itself), for every code width and `kr`.
pub const GENERIC_DECODERS: &[CodebookDecoder] = &[
    CodebookDecoder { name: "codebook4_decode_c2__scalar", isa: Isa::Scalar, bits: 4, kr: 2, cols: 1, run: decode_codebook_ref::<4, 2> },
    CodebookDecoder { name: "codebook4_decode_c4__scalar", isa: Isa::Scalar, bits: 4, kr: 4, cols: 1, run: decode_codebook_ref::<4, 4> },
    CodebookDecoder { name: "codebook5_decode_c2__scalar", isa: Isa::Scalar, bits: 5, kr: 2, cols: 1, run: decode_codebook_ref::<5, 2> },
    CodebookDecoder { name: "codebook5_decode_c4__scalar", isa: Isa::Scalar, bits: 5, kr: 4, cols: 1, run: decode_codebook_ref::<5, 4> },
];
