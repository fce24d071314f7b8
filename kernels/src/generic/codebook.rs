//! Portable codebook (table-lookup) microkernel on the [`CodebookFormat`] layout.

use crate::generic::gemm::output_value;
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Int8, Isa, OutputKind};

/// Adds the column terms and writes an `m × n` tile of accumulators through the output
/// stage, shared by every codebook kernel's epilogue (the K loop dominates: K ≥ 8 per
/// output, usually thousands).
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract; `acc[i][j]` for `i < m`, `j < n`.
#[inline(always)]
pub unsafe fn store_tile<const MR: usize, const NR: usize>(args: &CodebookArgs, acc: &[[i32; NR]; MR]) {
    let out = &args.out;
    for (i, row) in acc.iter().enumerate().take(args.m) {
        for (j, &v) in row.iter().enumerate().take(args.n) {
            // SAFETY: col_offset has `n` entries (contract).
            let acc = v.wrapping_add(unsafe { *out.col_offset.add(j) });
            let val = output_value(acc, j, out);
            let idx = i * args.ldc + j;
            // SAFETY: the output tile is `m × n`, row stride `ldc` (contract).
            unsafe {
                match out.kind {
                    OutputKind::I32 | OutputKind::F32 => (args.c as *mut u32).add(idx).write_unaligned(val),
                    OutputKind::U8 | OutputKind::I8 => args.c.add(idx).write(val as u8),
                }
            }
        }
    }
}

/// The two K quads of pre-widened (i16) activations at a group of `kn` real K (the
/// i16-table kernels), four words each as an i64 (lanes past K are 0, so the padding
/// codes meet a zero activation).
///
/// # Safety
/// `p` is readable for `min(kn, 8)` i16.
#[inline(always)]
pub unsafe fn a_quads16(p: *const i16, kn: usize) -> (i64, i64) {
    if kn >= 8 {
        // SAFETY: 8 i16 readable (caller).
        return unsafe { (p.cast::<i64>().read_unaligned(), p.add(4).cast::<i64>().read_unaligned()) };
    }
    let mut w = [0i16; 8];
    // SAFETY: kn < 8 i16 readable (caller); `w` holds 8.
    unsafe { core::ptr::copy_nonoverlapping(p, w.as_mut_ptr(), kn) };
    let quad = |o: usize| (0..4).fold(0u64, |q, t| q | (w[o + t] as u16 as u64) << (16 * t)) as i64;
    (quad(0), quad(4))
}

/// Portable tile: decodes each code through the table (the i8 one, or with `WIDE` the
/// i16 one) and multiplies plainly.
///
/// Reads `m` rows of `k` activations (stride `lda`; i16 ones when `WIDE`), the panel's
/// `k.div_ceil(8)·NR·BITS` bytes and the `2^BITS` table entries; nothing past them.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract; `m ≤ MR`, `n ≤ NR`, panel of `NR` columns.
pub unsafe fn codebook_tile<A: Int8, const MR: usize, const NR: usize, const BITS: u32, const WIDE: bool>(args: &CodebookArgs) {
    let gb = CodebookFormat { nr: NR, bits: BITS }.group_bytes();
    let mut table = [0i32; 32];
    for (c, t) in table.iter_mut().enumerate().take(1 << BITS) {
        // SAFETY: 2^BITS entries of the table the kernel reads (contract).
        *t = unsafe { if WIDE { *args.table16.add(c) as i32 } else { *args.table.add(c) as i32 } };
    }
    let mut acc = [[0i32; NR]; MR];
    for g in 0..args.k.div_ceil(8) {
        let k0 = 8 * g;
        let kn = 8.min(args.k - k0);
        // SAFETY: group g of the panel holds `gb` bytes (contract).
        let blk = unsafe { core::slice::from_raw_parts(args.b.add(g * gb), gb) };
        for (i, acc_row) in acc.iter_mut().enumerate().take(args.m) {
            for r in 0..kn {
                let at = i * args.lda + k0 + r;
                // SAFETY: row i has `k` elements (bytes, or i16 when WIDE) from `a + i·lda`
                // (contract); k0 + r < k.
                let av = unsafe { if WIDE { *args.a.cast::<i16>().add(at) as i32 } else { A::from_bits(*args.a.add(at)).to_i32() } };
                let (t, shift) = (r % 4, 4 * (r / 4));
                for (j, accv) in acc_row.iter_mut().enumerate() {
                    let mut code = (blk[4 * j + t] >> shift) & 0x0F;
                    if BITS == 5 {
                        let bit = (r / 4) * NR * 4 + 4 * j + t;
                        code |= ((blk[NR * 4 + bit / 8] >> (bit % 8)) & 1) << 4;
                    }
                    *accv = accv.wrapping_add(av * table[code as usize]);
                }
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<MR, NR>(args, &acc) }
}

/// The portable 4×16 lookup tile for `BITS`-bit codes, its table in i8 or (`WIDE`) i16.
const fn lut_kernel<const BITS: u32, const WIDE: bool>(name: &'static str) -> CodebookUkernel {
    CodebookUkernel {
        name,
        family: CodebookFamily::Lut,
        isa: Isa::Scalar,
        bits: BITS,
        mr: 4,
        format: CodebookFormat { nr: 16, bits: BITS },
        a_offset: [0, 0],
        max_abs_table: None,
        table_i16: WIDE,
        a_sign_split: false,
        gemv: None,
        extra_features: &[],
        run: [codebook_tile::<u8, 4, 16, BITS, WIDE>, codebook_tile::<i8, 4, 16, BITS, WIDE>],
    }
}

/// `qx8_codebook4_gemm_4x16c8__generic`: any i8 table, u8 or i8 activations as they are.
pub const QX8_CODEBOOK4_GEMM_4X16C8__GENERIC: CodebookUkernel = lut_kernel::<4, false>("qx8_codebook4_gemm_4x16c8__generic");

/// `qx8_codebook5_gemm_4x16c8__generic`: 5-bit codes, any 32-entry i8 table.
pub const QX8_CODEBOOK5_GEMM_4X16C8__GENERIC: CodebookUkernel = lut_kernel::<5, false>("qx8_codebook5_gemm_4x16c8__generic");

/// `qx8_codebook4_i16_gemm_4x16c8__generic`: 4-bit codes, any i16 table (grids beyond
/// int8: 4-bit log, learned tables up to ±32767).
pub const QX8_CODEBOOK4_I16_GEMM_4X16C8__GENERIC: CodebookUkernel = lut_kernel::<4, true>("qx8_codebook4_i16_gemm_4x16c8__generic");

/// `qx8_codebook5_i16_gemm_4x16c8__generic`: 5-bit codes, any 32-entry i16 table (PoT-5:
/// grid 2^14).
pub const QX8_CODEBOOK5_I16_GEMM_4X16C8__GENERIC: CodebookUkernel = lut_kernel::<5, true>("qx8_codebook5_i16_gemm_4x16c8__generic");

/// Every portable codebook kernel, least preferred first.
/// The bit-shift ones ([`crate::generic::shift`]) come first: within a family the
/// packer takes the best (last) kernel that fits.
pub const CODEBOOK_KERNELS: &[CodebookUkernel] = &[
    crate::generic::shift::QX8_SHIFT_POT_GEMM_4X16C2__GENERIC,
    crate::generic::shift::QX8_SHIFT_APOT_GEMM_4X16C2__GENERIC,
    QX8_CODEBOOK4_I16_GEMM_4X16C8__GENERIC,
    QX8_CODEBOOK5_I16_GEMM_4X16C8__GENERIC,
    QX8_CODEBOOK4_GEMM_4X16C8__GENERIC,
    QX8_CODEBOOK5_GEMM_4X16C8__GENERIC,
];
