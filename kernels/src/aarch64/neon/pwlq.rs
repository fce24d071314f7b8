//! PWLQ dequantization kernels, NEON. Same contract as the x86 ones
//! (`x86_64::avx512vnni::pwlq`): one channel of the 4-bit PWLQ packed format
//! (`qkern::quant::pwlq::PwlqPacked`) — per block of 64 weights a 32-byte value plane (byte
//! `i` = nibble of weight `i` in bits 0–3 and of weight `32 + i` in bits 4–7) and a `u64`
//! region word (bit `i` = region of weight `i`); the 5-bit field is `region·16 | nibble`.
//!
//! Each output is `table[field]` of a table the caller built with the scalar definition,
//! for *every* one of the 32 fields (no symmetry assumed), so the results are bit-exact by
//! construction: the kernels only move bytes.
//!
//! Per 16 weights the field bytes are built once: the 2 region bytes of the group are
//! spread over the 16 lanes (`tbl`), each lane's bit shifted to bit 4 (`ushl`), masked to
//! `0x10` and merged with the nibble (`bsl` for the low nibbles, `sri #4` for the high
//! ones, which also does the shift). The i8 kernel then runs one `tbl` over the 32-byte
//! table; the f32 kernel keeps the 128-byte table as four 32-byte *byte planes* (plane
//! `j` = byte `j` of every entry, split by two `ld4` once per call), gathers each plane
//! with one `tbl` and writes the 16 floats with one `st4`, which interleaves the four
//! planes back into little-endian f32 lanes (llvm-mca: cheaper than `zip1`/`zip2` +
//! `st1` on the Cortex-A53, Neoverse-V1 and A57-class models; `benches/arm-mca.sh`).

use core::arch::aarch64::*;

/// Checks the plane lengths for `k` weights (the kernels' only preconditions); a panic
/// here is a caller bug, the safe wrapper validates first.
#[inline]
fn check(values: &[u8], regions: &[u64], k: usize) -> usize {
    let blocks = k.div_ceil(64);
    assert!(values.len() >= blocks * 32 && regions.len() >= blocks, "PWLQ planes shorter than K");
    blocks
}

/// The four 16-byte field vectors (`region·16 | nibble`) of the block whose value plane
/// is at `vp` and whose region word is `r`: weights 0–15, 16–31, 32–47, 48–63.
///
/// # Safety
/// `vp` is readable for 32 bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fields(vp: *const u8, r: u64) -> [uint8x16_t; 4] {
    // SAFETY: forwarded.
    let (v0, v1) = unsafe { (vld1q_u8(vp), vld1q_u8(vp.add(16))) };
    let rb = vreinterpretq_u8_u64(vdupq_n_u64(r));
    // Lane j: shift bit j%8 of its region byte to bit 4 (negative = right).
    let to4 = vreinterpretq_s8_u64(vdupq_n_u64(0xFDFE_FF00_0102_0304));
    let ten = vdupq_n_u8(0x10);
    let lo_nib = vdupq_n_u8(0x0F);
    // Lane j of group g: region byte 2g + j/8, bit j%8 → 0x10 or 0.
    let region = |g: u8| {
        let spread = vcombine_u8(vdup_n_u8(2 * g), vdup_n_u8(2 * g + 1));
        vandq_u8(vshlq_u8(vqtbl1q_u8(rb, spread), to4), ten)
    };
    [
        vbslq_u8(lo_nib, v0, region(0)),
        vbslq_u8(lo_nib, v1, region(1)),
        vsriq_n_u8::<4>(region(2), v0),
        vsriq_n_u8::<4>(region(3), v1),
    ]
}

/// 4-bit PWLQ codes of one channel → f32: `out[i] = lut[field(i)]` for `i < out.len()`,
/// for every field (all 32 entries are looked up, none derived). Four `tbl` (one per byte
/// plane of the table) and one `st4` per 16 weights. Reads `⌈K/64⌉` blocks of both planes,
/// writes exactly `out`.
///
/// # Safety
/// The CPU must support NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn pwlq4_dequant_f32_u64(values: &[u8], regions: &[u64], lut: &[f32; 32], out: &mut [f32]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // SAFETY: `lut` holds 128 bytes; each `ld4` reads 64 of them (entries 0–15, 16–31).
    let (a, b) = unsafe { (vld4q_u8(lut.as_ptr().cast()), vld4q_u8(lut.as_ptr().add(16).cast())) };
    // Byte plane j: byte j of entries 0–31.
    let planes = [
        uint8x16x2_t(a.0, b.0),
        uint8x16x2_t(a.1, b.1),
        uint8x16x2_t(a.2, b.2),
        uint8x16x2_t(a.3, b.3),
    ];
    let gather = |idx: uint8x16_t| {
        uint8x16x4_t(
            vqtbl2q_u8(planes[0], idx),
            vqtbl2q_u8(planes[1], idx),
            vqtbl2q_u8(planes[2], idx),
            vqtbl2q_u8(planes[3], idx),
        )
    };
    let vp = values.as_ptr();
    let op = out.as_mut_ptr().cast::<u8>();
    // Whole blocks: no per-group branch in the loop.
    let whole = k / 64;
    for (bi, &r) in regions[..whole].iter().enumerate() {
        // SAFETY: 32·bi + 32 ≤ values.len() (checked above).
        let f = unsafe { fields(vp.add(32 * bi), r) };
        for (g, idx) in f.into_iter().enumerate() {
            // SAFETY: floats 64·bi + 16·g + 16 ≤ 64·whole ≤ out.len(); `st4` writes byte j
            // of float i from plane j, lane i — little-endian f32 lanes.
            unsafe { vst4q_u8(op.add(4 * (64 * bi + 16 * g)), gather(idx)) };
        }
    }
    if whole < blocks {
        // SAFETY: as above, block `whole` < blocks.
        let f = unsafe { fields(vp.add(32 * whole), regions[whole]) };
        let mut tmp = [0f32; 64];
        for (g, idx) in f.into_iter().enumerate() {
            // SAFETY: `tmp` holds 64 floats.
            unsafe { vst4q_u8(tmp.as_mut_ptr().add(16 * g).cast(), gather(idx)) };
        }
        out[64 * whole..].copy_from_slice(&tmp[..k - 64 * whole]);
    }
}

/// 4-bit PWLQ codes of one channel → i8 on a common integer grid: `out[i] =
/// table[field(i)]` (`table[0..16]` centre levels, `table[16..32]` tail levels, by nibble;
/// one two-register `tbl` per 16 weights). Reads `⌈K/64⌉` blocks of both planes, writes
/// exactly `out`.
///
/// # Safety
/// The CPU must support NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn pwlq4_dequant_i8_u64(values: &[u8], regions: &[u64], table: &[i8; 32], out: &mut [i8]) {
    let k = out.len();
    let blocks = check(values, regions, k);
    // SAFETY: `table` holds 32 bytes.
    let t = unsafe { int8x16x2_t(vld1q_s8(table.as_ptr()), vld1q_s8(table.as_ptr().add(16))) };
    let vp = values.as_ptr();
    let op = out.as_mut_ptr();
    // Whole blocks: no per-group branch in the loop.
    let whole = k / 64;
    for (bi, &r) in regions[..whole].iter().enumerate() {
        // SAFETY: 32·bi + 32 ≤ values.len() (checked above).
        let f = unsafe { fields(vp.add(32 * bi), r) };
        for (g, idx) in f.into_iter().enumerate() {
            // SAFETY: 64·bi + 16·g + 16 ≤ 64·whole ≤ out.len().
            unsafe { vst1q_s8(op.add(64 * bi + 16 * g), vqtbl2q_s8(t, idx)) };
        }
    }
    if whole < blocks {
        // SAFETY: as above, block `whole` < blocks.
        let f = unsafe { fields(vp.add(32 * whole), regions[whole]) };
        let mut tmp = [0i8; 64];
        for (g, idx) in f.into_iter().enumerate() {
            // SAFETY: `tmp` holds 64 bytes.
            unsafe { vst1q_s8(tmp.as_mut_ptr().add(16 * g), vqtbl2q_s8(t, idx)) };
        }
        out[64 * whole..].copy_from_slice(&tmp[..k - 64 * whole]);
    }
}
