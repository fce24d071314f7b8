//! Table-lookup codebook tiles on plain NEON: nibble split + `tbl` decode to the i8
//! levels, then `smull`/`smull2` (i8 × i8 → i16) and `sadalp` (pairwise add-accumulate
//! into i32).
//!
//! Decode ([`decode16`], shared with the dotprod kernel): 16 bytes of a group (4 columns
//! × 4 K of the [`CodebookFormat`] layout) → `and 0x0F` / `ushr 4` → one `tbl` each
//! gives the i8 weights of K `t` and `4 + t` (5-bit codes: the group's bit plane,
//! expanded to a byte mask by `tbl` + `cmtst`, adds 16 to the index of a 32-entry
//! two-register `tbl`).
//!
//! Multiply: activations are taken as i8 (u8 ones XOR 0x80, i.e. `a − 128`, `a_offset`
//! −128): each row's K quad is broadcast (`dup` of its 32-bit lane) against the decoded
//! quads of the 4 columns. Exactness: one `smull` lane is a single product
//! `|a·w| ≤ 128·128 = 2^14`, within i16 — no two products are ever summed in i16 (that
//! pairing, `smlal`, could reach `2·(−128)·(−128) = 2^15` and would need a table bound);
//! `sadalp` adds two such lanes in i32 and accumulates, wrapping modulo 2^32 as the
//! [`CodebookArgs`] contract asks. So the kernel is exact for every i8 table
//! (`max_abs_table: None`).
//!
//! Accumulators: lanes `(col j, K 0–1)` and `(col j, K 2–3)` (a `sadalp` leaves two per
//! column), so a 4 × 8 tile needs 16 vectors; one `addp` per 4 columns at the end.
//!
//! Grids beyond int8 (PoT-5, 4-bit log) run on the i16-table tile ([`wide_tile`]):
//! the same indexes, two byte-plane `tbl`s zipped to i16, `smlal`/`smlal2`.

use core::arch::aarch64::*;

use crate::generic::codebook::{a_quads16, store_tile};
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, Isa};

/// The decoded i8 weights of 16 bytes of a group: `(lo, hi)` = the weights of K `t` and
/// `4 + t` at byte `4j + t` (4 columns × 4 K each).
///
/// `plane` (5-bit codes): the group's 16 bit-plane bytes (8 for the low-nibble codes, 8
/// for the high ones); `v` is which 16 bytes of the group's nibbles `raw` is (bits
/// `16v .. 16v + 16` of each half of the plane: the low half's bytes at 0.., the high
/// half's at 8..).
///
/// `#[inline(always)]` (NEON is the AArch64 baseline, so no `target_feature` is needed):
/// the decode must sit in the K loop of its caller, never behind a call.
#[inline(always)]
pub(crate) fn decode16<const B5: bool>(
    raw: uint8x16_t,
    tables: int8x16x2_t,
    plane: uint8x16_t,
    v: usize,
) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only NEON operations (baseline on AArch64).
    unsafe { decode16_inner::<B5>(raw, tables, plane, v) }
}

/// The body of [`decode16`].
///
/// # Safety
/// None beyond NEON (the AArch64 baseline).
#[inline(always)]
unsafe fn decode16_inner<const B5: bool>(
    raw: uint8x16_t,
    tables: int8x16x2_t,
    plane: uint8x16_t,
    v: usize,
) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only NEON operations.
    unsafe {
        let (il, ih) = indices16::<B5>(raw, plane, v);
        if !B5 {
            return (vqtbl1q_s8(tables.0, il), vqtbl1q_s8(tables.0, ih));
        }
        (vqtbl2q_s8(tables, il), vqtbl2q_s8(tables, ih))
    }
}

/// The table indexes of 16 bytes of a group: `(lo, hi)` = the codes of K `t` and `4 + t`
/// at byte `4j + t`, with bit 4 from `plane` for 5-bit codes (see [`decode16`]).
///
/// # Safety
/// None beyond NEON (the AArch64 baseline).
#[inline(always)]
unsafe fn indices16<const B5: bool>(raw: uint8x16_t, plane: uint8x16_t, v: usize) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: register-only NEON operations.
    unsafe {
        let il = vandq_u8(raw, vdupq_n_u8(0x0F));
        let ih = vshrq_n_u8::<4>(raw);
        if !B5 {
            return (il, ih);
        }
        // Element e of this vector is bit 16v + e of each half of the plane: byte 2v + e / 8,
        // bit e % 8.
        let b = (2 * v) as u8;
        let lo_idx = vcombine_u8(vdup_n_u8(b), vdup_n_u8(b + 1));
        let hi_idx = vaddq_u8(lo_idx, vdupq_n_u8(8));
        let sel = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        let sixteen = vdupq_n_u8(0x10);
        let bl = vandq_u8(vtstq_u8(vqtbl1q_u8(plane, lo_idx), sel), sixteen);
        let bh = vandq_u8(vtstq_u8(vqtbl1q_u8(plane, hi_idx), sel), sixteen);
        (vorrq_u8(il, bl), vorrq_u8(ih, bh))
    }
}

/// The decoded i8 weights of group `g` of an `nr = 8` panel (the NEON, dotprod and i8mm
/// kernels' shared decode): element `v` is [`decode16`] of the group's bytes
/// `16v .. 16v + 16`, i.e. `(lo, hi)` = columns `4v .. 4v + 4` × K `t` / `4 + t` at byte
/// `4(j − 4v) + t`.
///
/// # Safety
/// Group `g` of an `nr = 8` panel of `bits = 4` (5 with `B5`) codes lies at
/// `b + g·group_bytes` (32 nibble bytes, then 8 plane bytes with `B5`).
#[inline(always)]
pub(crate) unsafe fn decode_group8<const B5: bool>(
    b: *const u8,
    g: usize,
    tables: int8x16x2_t,
) -> [(int8x16_t, int8x16_t); 2] {
    const NR: usize = 8;
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: the group's nibble and plane bytes (caller); NEON is the AArch64 baseline.
    unsafe {
        let p = b.add(g * gb);
        let plane = plane_of::<B5>(p, NR);
        [decode16::<B5>(vld1q_u8(p), tables, plane, 0), decode16::<B5>(vld1q_u8(p.add(16)), tables, plane, 1)]
    }
}

/// The 8 activation bytes of a row at K `8g` as i8 (XOR 0x80 with `FLIP`); with
/// `kn < 8`, only `kn` bytes are read and the rest are 0 (after the flip: padding codes
/// must meet a zero activation).
///
/// # Safety
/// `p` is readable for `min(kn, 8)` bytes.
#[inline(always)]
pub(crate) unsafe fn load_a8<const FLIP: bool>(p: *const u8, kn: usize) -> int8x8_t {
    if kn >= 8 {
        // A vector load and `eor` (no general-register round trip).
        // SAFETY: 8 bytes readable (contract); NEON is the AArch64 baseline.
        return unsafe {
            let v = vld1_u8(p);
            vreinterpret_s8_u8(if FLIP { veor_u8(v, vdup_n_u8(0x80)) } else { v })
        };
    }
    let flip = if FLIP { 0x8080_8080_8080_8080u64 } else { 0 };
    let mut b = [0u8; 8];
    // SAFETY: kn bytes readable; `b` holds 8 > kn.
    unsafe { core::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), kn) };
    let word = u64::from_le_bytes(b) ^ (flip & ((1u64 << (8 * kn)) - 1));
    // SAFETY: NEON is the AArch64 baseline.
    unsafe { vcreate_s8(word) }
}

/// The two tables of a kernel (the second only for 5-bit codes) and the bit plane of
/// group `g` (zero for 4-bit codes).
///
/// # Safety
/// `args.table` holds `2^bits` bytes; for 5 bits the group's plane (16 bytes after its
/// `nr·4` nibble bytes) is readable.
#[inline(always)]
pub(crate) unsafe fn tables<const B5: bool>(args: &CodebookArgs) -> int8x16x2_t {
    // SAFETY: 16 (or 32) table bytes (contract).
    unsafe {
        let t0 = vld1q_s8(args.table);
        int8x16x2_t(t0, if B5 { vld1q_s8(args.table.add(16)) } else { t0 })
    }
}

/// The bit plane of a group of `nr` columns (5-bit codes; zero otherwise) as
/// [`decode16`] reads it: the first `min(nr / 2, 4)` bytes of the low-nibble bitmap at
/// bytes 0.., those of the high-nibble bitmap at 8.. (the bits of the group's first 32
/// code bytes), zero elsewhere.
///
/// # Safety
/// With `B5`, the group's `nr` plane bytes after its `nr·4` nibble bytes at `p` are
/// readable.
#[inline(always)]
pub(crate) unsafe fn plane_of<const B5: bool>(p: *const u8, nr: usize) -> uint8x16_t {
    let mut b = [0u8; 16];
    if B5 {
        let w = (nr / 2).min(4);
        // SAFETY: 2 × w ≤ nr plane bytes readable (caller); `b` holds 16.
        unsafe {
            core::ptr::copy_nonoverlapping(p.add(nr * 4), b.as_mut_ptr(), w);
            core::ptr::copy_nonoverlapping(p.add(nr * 4 + nr / 2), b.as_mut_ptr().add(8), w);
        }
    }
    // SAFETY: 16 bytes; NEON is the AArch64 baseline.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// The exact `R × 8` tile (`R ≤ 4`).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (`32` or `40` bytes each), the table; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m = R`, `n ≤ 8`, an `nr = 8`
/// panel of `bits = 4` (or 5 with `B5`) codes.
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    const NR: usize = 8;
    // SAFETY: table bytes (contract).
    let tables = unsafe { tables::<B5>(args) };
    // acc[r][2v + h]: row r, columns 4v + 2h .. 4v + 2h + 2, two K halves per column.
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    // Group `g` of `kn ≤ 8` real K: expanded with a constant 8 for the whole groups (a
    // branch-free loop body), once more for the K tail. A macro, so both copies are
    // inline (a closure called twice may be outlined, a call per group).
    macro_rules! group {
        ($g:expr, $kn:expr) => {{
            let (g, kn): (usize, usize) = ($g, $kn);
            // SAFETY: group g < k.div_ceil(8) of the panel (contract).
            let w = unsafe { decode_group8::<B5>(args.b, g, tables) };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: row r < m, bytes 8g .. 8g + kn ≤ k.
                let a = unsafe { load_a8::<FLIP>(args.a.add(r * args.lda + 8 * g), kn) };
                let a = vreinterpret_s32_s8(a);
                let alo = vreinterpretq_s8_s32(vdupq_lane_s32::<0>(a));
                let ahi = vreinterpretq_s8_s32(vdupq_lane_s32::<1>(a));
                for (v, (wlo, whi)) in w.iter().enumerate() {
                    acc_r[2 * v] =
                        vpadalq_s16(acc_r[2 * v], vmull_s8(vget_low_s8(*wlo), vget_low_s8(alo)));
                    acc_r[2 * v + 1] = vpadalq_s16(acc_r[2 * v + 1], vmull_high_s8(*wlo, alo));
                    acc_r[2 * v] =
                        vpadalq_s16(acc_r[2 * v], vmull_s8(vget_low_s8(*whi), vget_low_s8(ahi)));
                    acc_r[2 * v + 1] = vpadalq_s16(acc_r[2 * v + 1], vmull_high_s8(*whi, ahi));
                }
            }
        }};
    }
    let full = args.k / 8;
    for g in 0..full {
        group!(g, 8);
    }
    if !args.k.is_multiple_of(8) {
        group!(full, args.k % 8);
    }
    let mut out = [[0i32; NR]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        // SAFETY: 8 i32 of the row.
        unsafe {
            vst1q_s32(o.as_mut_ptr(), vpaddq_s32(a[0], a[1]));
            vst1q_s32(o.as_mut_ptr().add(4), vpaddq_s32(a[2], a[3]));
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<R, NR>(args, &out) }
}

/// Dispatches on the tile's row count.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m ≤ 4`, `n ≤ 8`, an `nr = 8`
/// panel of `bits = 4` (5 with `B5`) codes.
unsafe fn entry<const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, R = m; NEON is the AArch64 baseline.
    unsafe {
        match args.m {
            1 => tile::<1, FLIP, B5>(args),
            2 => tile::<2, FLIP, B5>(args),
            3 => tile::<3, FLIP, B5>(args),
            _ => tile::<4, FLIP, B5>(args),
        }
    }
}

/// `qx8_codebook4_gemm_4x8c8__neon`: 4-bit codes, any i8 table, `smull` + `sadalp`.
pub const QX8_CODEBOOK4_GEMM_4X8C8__NEON: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_4x8c8__neon",
    family: CodebookFamily::Lut,
    isa: Isa::Neon,
    bits: 4,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 4 },
    a_offset: [-128, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [entry::<true, false>, entry::<false, false>],
};

/// `qx8_codebook5_gemm_4x8c8__neon`: 5-bit codes (32-entry two-register `tbl`), any i8
/// table.
pub const QX8_CODEBOOK5_GEMM_4X8C8__NEON: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_4x8c8__neon",
    family: CodebookFamily::Lut,
    isa: Isa::Neon,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 5 },
    a_offset: [-128, 0],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [entry::<true, true>, entry::<false, true>],
};

/// The exact `R × 4` tile of the i16-table kernels (grids beyond int8: PoT-5, 4-bit log;
/// `R ≤ 4`): the codes' table indexes as [`decode16`] makes them, one `tbl` on the low
/// and one on the high byte plane of the i16 table (`ld2` splits it; two-register `tbl`
/// for 5-bit codes), `zip1`/`zip2` back to i16 (2 columns × 4 K per vector), then
/// `smlal`/`smlal2` with the row's K quads of the activations the driver widened to i16
/// (`a_offset` 0). One lane of an accumulator is one K residue of one column (4 per
/// column, 16 for the tile's row), each step a single product `|a·w| ≤ 255·32767`
/// added in wrapping i32 as the [`CodebookArgs`] contract allows; two `addp` per row at
/// the end.
///
/// Reads `m` rows of `k` i16 activations (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (16 bytes, or 20 with `B5`), the 32 i16 of `table16`; writes
/// the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m = R`, `n ≤ 4`, an `nr = 4`
/// panel of `bits = 4` (or 5 with `B5`) codes.
#[target_feature(enable = "neon")]
unsafe fn wide_tile<const R: usize, const B5: bool>(args: &CodebookArgs) {
    const NR: usize = 4;
    let gb = CodebookFormat {
        nr: NR,
        bits: if B5 { 5 } else { 4 },
    }
    .group_bytes();
    // SAFETY: the table's 32 i16 (64 bytes): `ld2` deinterleaves low and high bytes.
    let (lo_t, hi_t) = unsafe {
        let t0 = vld2q_u8(args.table16.cast::<u8>());
        let t1 = vld2q_u8(args.table16.cast::<u8>().add(32));
        (uint8x16x2_t(t0.0, t1.0), uint8x16x2_t(t0.1, t1.1))
    };
    let look = |t: uint8x16x2_t, idx: uint8x16_t| if B5 { vqtbl2q_u8(t, idx) } else { vqtbl1q_u8(t.0, idx) };
    // acc[r][j]: row r, column j, lanes = K residues 0–3.
    let mut acc = [[vdupq_n_s32(0); NR]; R];
    // As in `tile`: one copy for the whole groups, one for the K tail.
    macro_rules! group {
        ($g:expr, $kn:expr) => {{
            let (g, kn): (usize, usize) = ($g, $kn);
            // SAFETY: group g of the panel: 16 nibble bytes, then (5 bits) 4 plane bytes.
            let w = unsafe {
                let p = args.b.add(g * gb);
                let plane = plane_of::<B5>(p, NR);
                let (il, ih) = indices16::<B5>(vld1q_u8(p), plane, 0);
                let (ll, lh, hl, hh) = (look(lo_t, il), look(hi_t, il), look(lo_t, ih), look(hi_t, ih));
                // [K 0–3 of columns 0,1; columns 2,3; K 4–7 of columns 0,1; columns 2,3].
                [
                    vreinterpretq_s16_u8(vzip1q_u8(ll, lh)),
                    vreinterpretq_s16_u8(vzip2q_u8(ll, lh)),
                    vreinterpretq_s16_u8(vzip1q_u8(hl, hh)),
                    vreinterpretq_s16_u8(vzip2q_u8(hl, hh)),
                ]
            };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: row r < m, i16 8g .. 8g + kn ≤ k (zero past them).
                let a = unsafe {
                    let p = args.a.cast::<i16>().add(r * args.lda + 8 * g);
                    if kn >= 8 {
                        vld1q_s16(p)
                    } else {
                        let (lo, hi) = a_quads16(p, kn);
                        vreinterpretq_s16_s64(vcombine_s64(vcreate_s64(lo as u64), vcreate_s64(hi as u64)))
                    }
                };
                let (alo, ahi) = (vget_low_s16(a), vget_high_s16(a));
                let (alo2, ahi2) = (vcombine_s16(alo, alo), vcombine_s16(ahi, ahi));
                for h in 0..2 {
                    acc_r[2 * h] = vmlal_s16(acc_r[2 * h], vget_low_s16(w[h]), alo);
                    acc_r[2 * h + 1] = vmlal_high_s16(acc_r[2 * h + 1], w[h], alo2);
                    acc_r[2 * h] = vmlal_s16(acc_r[2 * h], vget_low_s16(w[2 + h]), ahi);
                    acc_r[2 * h + 1] = vmlal_high_s16(acc_r[2 * h + 1], w[2 + h], ahi2);
                }
            }
        }};
    }
    let full = args.k / 8;
    for g in 0..full {
        group!(g, 8);
    }
    if !args.k.is_multiple_of(8) {
        group!(full, args.k % 8);
    }
    let mut out = [[0i32; NR]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        // SAFETY: 4 i32 of the row.
        unsafe { vst1q_s32(o.as_mut_ptr(), vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]))) };
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile::<R, NR>(args, &out) }
}

/// Dispatches on the tile's row count.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract with `m ≤ 4`, `n ≤ 4`, an `nr = 4`
/// panel of `bits = 4` (5 with `B5`) codes.
unsafe fn wide_entry<const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, R = m; NEON is the AArch64 baseline.
    unsafe {
        match args.m {
            1 => wide_tile::<1, B5>(args),
            2 => wide_tile::<2, B5>(args),
            3 => wide_tile::<3, B5>(args),
            _ => wide_tile::<4, B5>(args),
        }
    }
}

/// `qx8_codebook4_i16_gemm_4x4c8__neon`: 4-bit codes, any i16 table (4-bit log: grid
/// 2^14), `tbl` on two byte planes + `smlal`/`smlal2`.
pub const QX8_CODEBOOK4_I16_GEMM_4X4C8__NEON: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_i16_gemm_4x4c8__neon",
    family: CodebookFamily::Lut,
    isa: Isa::Neon,
    bits: 4,
    mr: 4,
    format: CodebookFormat { nr: 4, bits: 4 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: true,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [wide_entry::<false>, wide_entry::<false>],
};

/// `qx8_codebook5_i16_gemm_4x4c8__neon`: 5-bit codes, any 32-entry i16 table (PoT-5:
/// grid 2^14), two-register `tbl` per byte plane.
pub const QX8_CODEBOOK5_I16_GEMM_4X4C8__NEON: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_i16_gemm_4x4c8__neon",
    family: CodebookFamily::Lut,
    isa: Isa::Neon,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 4, bits: 5 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: true,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [wide_entry::<true>, wide_entry::<true>],
};

/// NEON codebook kernels, least preferred first (the i16-table ones run only grids
/// beyond int8, which no other kernel here takes).
pub const CODEBOOK_KERNELS: &[CodebookUkernel] = &[
    QX8_CODEBOOK4_I16_GEMM_4X4C8__NEON,
    QX8_CODEBOOK5_I16_GEMM_4X4C8__NEON,
    QX8_CODEBOOK4_GEMM_4X8C8__NEON,
    QX8_CODEBOOK5_GEMM_4X8C8__NEON,
];
