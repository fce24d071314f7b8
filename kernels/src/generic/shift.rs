//! Portable bit-shift codebook microkernels on the shift layout
//! ([`crate::pack::shift`]): `acc += ±((x << e1) + (x << e2))`, no multiply.

use crate::generic::codebook::store_tile;
use crate::pack::shift::{SHIFT_COUNT_MASK, SHIFT_NEG, SHIFT_NONE};
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Int8, Isa};

/// `x << c`, 0 for a count past the lane width (what `vpsllvd` does; Rust's `<<` would
/// panic or wrap the count instead).
#[inline(always)]
fn shl(x: i32, c: u8) -> i32 {
    if c < 32 { x << c } else { 0 }
}

/// Portable tile: per K step, the `NR` columns' counts and signs are decoded once and
/// shared by the `m` rows.
///
/// Reads `m` rows of `k` activations (stride `lda`), the panel's
/// `k.div_ceil(8)·NR·8·T` bytes; not the table; nothing past them.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract; `m ≤ MR`, `n ≤ NR`, a panel of `NR`
/// columns in the `T`-term shift layout.
pub unsafe fn shift_tile<A: Int8, const MR: usize, const NR: usize, const T: usize>(args: &CodebookArgs) {
    let gb = NR * 8 * T;
    let plane = NR * 8;
    let mut acc = [[0i32; NR]; MR];
    let mut c0 = [0u8; NR];
    let mut c1 = [SHIFT_NONE; NR];
    let mut neg = [false; NR];
    for g in 0..args.k.div_ceil(8) {
        let k0 = 8 * g;
        let kn = 8.min(args.k - k0);
        // SAFETY: group g of the panel holds `gb` bytes (contract).
        let blk = unsafe { core::slice::from_raw_parts(args.b.add(g * gb), gb) };
        for r in 0..kn {
            let at = 2 * NR * (r / 2) + r % 2;
            for j in 0..NR {
                let b0 = blk[at + 2 * j];
                c0[j] = b0 & SHIFT_COUNT_MASK;
                neg[j] = b0 & SHIFT_NEG != 0;
                if T == 2 {
                    c1[j] = blk[plane + at + 2 * j] & SHIFT_COUNT_MASK;
                }
            }
            for (i, acc_row) in acc.iter_mut().enumerate().take(args.m) {
                // SAFETY: row i has `k` elements from `a + i·lda` (contract), k0 + r < k.
                let x = A::from_bits(unsafe { *args.a.add(i * args.lda + k0 + r) }).to_i32();
                for (j, accv) in acc_row.iter_mut().enumerate() {
                    let t = shl(x, c0[j]) + shl(x, c1[j]);
                    *accv = accv.wrapping_add(if neg[j] { -t } else { t });
                }
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<MR, NR>(args, &acc) }
}

/// `qx8_shift_pot_gemm_4x16c2__generic`: one shift term per weight (PoT level sets).
pub const QX8_SHIFT_POT_GEMM_4X16C2__GENERIC: CodebookUkernel = CodebookUkernel {
    name: "qx8_shift_pot_gemm_4x16c2__generic",
    family: CodebookFamily::Shift,
    isa: Isa::Scalar,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 16, bits: 8 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [shift_tile::<u8, 4, 16, 1>, shift_tile::<i8, 4, 16, 1>],
};

/// `qx8_shift_apot_gemm_4x16c2__generic`: two shift terms per weight (APoT level sets).
pub const QX8_SHIFT_APOT_GEMM_4X16C2__GENERIC: CodebookUkernel = CodebookUkernel {
    name: "qx8_shift_apot_gemm_4x16c2__generic",
    family: CodebookFamily::Shift,
    isa: Isa::Scalar,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 16, bits: 16 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [shift_tile::<u8, 4, 16, 2>, shift_tile::<i8, 4, 16, 2>],
};
