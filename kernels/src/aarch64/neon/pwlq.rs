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
use core::arch::asm;

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

// ---------------------------------------------------------------------------------------
// Exact-mode fused GEMM: the shared decode and the plain-NEON kernel
// ---------------------------------------------------------------------------------------

/// Columns per panel of the fused exact-mode GEMM kernels (this one and
/// `aarch64::dotprod::pwlq`): the panel layout of the x86 kernel
/// (`x86_64::avx512vnni::pwlq::pwlq_dot3_gemm_8x16c4`), so one packer serves every tier.
pub const DOT3_PANEL_NR: usize = 16;

/// Bytes of one K step (4 weights of each of the 16 columns) of a panel.
pub const DOT3_STEP_BYTES: usize = 64;

/// The decode constants of a panel byte `nibble | region·0x80` (`nibble = sign·8 | q`):
/// `tq` maps the nibble to `±q`, `ts` to `±1`, `flip` is 0x80 in every byte.
#[derive(Clone, Copy)]
pub(crate) struct Dot3Tables {
    pub(crate) tq: int8x16_t,
    pub(crate) ts: int8x16_t,
    pub(crate) flip: uint8x16_t,
}

impl Dot3Tables {
    /// The constants (three registers for the whole K loop).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) fn new() -> Self {
        const TQ: [i8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7];
        const TS: [i8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1];
        // SAFETY: both tables hold 16 bytes.
        let (tq, ts) = unsafe { (vld1q_s8(TQ.as_ptr()), vld1q_s8(TS.as_ptr())) };
        Dot3Tables { tq, ts, flip: vdupq_n_u8(0x80) }
    }
}

/// Decodes 16 panel bytes to the three int8 operands `[c, t, s]` of the exact-mode
/// dots, the x86 kernel's decode in `tbl`: `tbl` returns 0 for an index ≥ 16, as
/// `vpshufb` does for bit 7, so `tbl(tq, b)` is the centre code (a tail byte, bit 7 set,
/// gives 0) and, after `b ^ 0x80` (now the centre bytes have bit 7), `tbl(tq, ·)` and
/// `tbl(ts, ·)` are the tail code and the tail sign. A zero byte (padding) gives 0 in
/// all three. One `eor` and three `tbl` per 16 weights.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn dot3_decode(b: uint8x16_t, t: &Dot3Tables) -> [int8x16_t; 3] {
    let c = vqtbl1q_s8(t.tq, b);
    let x = veorq_u8(b, t.flip);
    [c, vqtbl1q_s8(t.tq, x), vqtbl1q_s8(t.ts, x)]
}

/// The K steps of `panel`, checking that `a` holds `rows` packed rows of that many (the
/// fused kernels' length contract; a panic here is a caller bug).
#[inline]
pub(crate) fn dot3_steps(a: &[u8], panel: &[u8], rows: usize) -> usize {
    let steps = panel.len() / DOT3_STEP_BYTES;
    assert!(a.len() >= 4 * rows * steps, "packed activations shorter than the panel's K");
    steps
}

/// Rows per register tile of [`pwlq_dot3_gemm_8x16c4`]: 2 × 3 planes × 2 halves = 12
/// accumulators beside the 6 decoded operands of two K steps, 4 activation vectors, 6
/// product temporaries and 3 constants (the 2-row tile is the `asm!` loop
/// [`pair_loop2`]; a 3-row tile in intrinsics spilled 17 vector registers per iteration).
const NEON_SUB_ROWS: usize = 2;

/// Exact-mode PWLQ GEMM microkernel without `sdot`, `qs8_pwlq_dot3_gemm_8x16c4__neon`:
/// the contract of `aarch64::dotprod::pwlq::pwlq_dot3_gemm_8x16c4` (and of the x86
/// kernel, with **i8** activations: u8 ones XOR 0x80, the caller moves the zero point) —
/// `R ≤ 8` rows packed step-major (`a[(s·R + r)·4 + i] = a[r][4s + i]`, `4·R·steps`
/// bytes) × one 16-channel panel of `steps` K steps of [`DOT3_STEP_BYTES`], returning the
/// raw sums `out[r][j][col] = Σ_k a[r][k]·plane_j[k][col]`, planes `c`, `t`, `s`.
///
/// Per 4 columns (16 panel bytes = 4 columns × 4 K) the bytes are decoded by
/// [`dot3_decode`]; each row's 4 activation bytes, duplicated, multiply the low and high
/// 8 bytes (`smull`, `smull2`: products per column and K), the products of two K steps
/// are summed in i16 (`smlal`, `smlal2`) and the i16 lanes added pairwise into i32
/// (`sadalp`); at the end `addp` joins each column's two i32 halves. Rows go in register
/// tiles of 2 (the decode is shared by the tile's rows; [`pair_loop2`]), a last odd row
/// and an odd last K step through the same operations in intrinsics. A fallback for cores without
/// `sdot` (Cortex-A53/A72): per 2 K steps and 4 columns, 8 decode instructions against
/// 12 multiplies and 6 `sadalp` per row.
///
/// **Overflow.** An activation is an i8, `|a| ≤ 128`, and a decoded weight `|c|, |t| ≤
/// Q = 7`, `|s| ≤ 1`: one product is at most 128·7 = 896 in magnitude, and an i16 lane
/// holds the sum of exactly two (the `smull` of step `s`, the `smlal` of step `s + 1`),
/// at most 1 792 < 2^15 − 1 — no i16 sum can overflow (the bound would allow 36
/// products). Everything past that is i32 (`sadalp` widens each pair before adding), exact
/// while `4·steps·896 < 2^31` (the caller chunks K far below that).
///
/// # Safety
/// The CPU must support NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn pwlq_dot3_gemm_8x16c4<const R: usize>(a: &[u8], panel: &[u8]) -> [[[i32; DOT3_PANEL_NR]; 3]; R] {
    const { assert!(R != 0 && R <= 8, "1 to 8 rows") };
    let steps = dot3_steps(a, panel, R);
    let mut out = [[[0i32; DOT3_PANEL_NR]; 3]; R];
    let mut r0 = 0;
    while r0 < R {
        let rows = (R - r0).min(NEON_SUB_ROWS);
        let dst = &mut out[r0..r0 + rows];
        // SAFETY: rows r0..r0 + rows < R of every step lie in `a` (checked above), the
        // panel holds `steps` steps.
        unsafe {
            match rows {
                3 => neon_rows::<3>(a.as_ptr().add(4 * r0), 4 * R, panel.as_ptr(), steps, dst),
                2 => neon_rows::<2>(a.as_ptr().add(4 * r0), 4 * R, panel.as_ptr(), steps, dst),
                _ => neon_rows::<1>(a.as_ptr().add(4 * r0), 4 * R, panel.as_ptr(), steps, dst),
            }
        }
        r0 += rows;
    }
    out
}

/// The full 8-row call of [`pwlq_dot3_gemm_8x16c4`] (four register tiles of 2 rows),
/// instantiated in this crate so that its loops are in this crate's code
/// (`benches/arm-mca.sh` reads them).
///
/// # Safety
/// As [`pwlq_dot3_gemm_8x16c4`].
#[target_feature(enable = "neon")]
pub unsafe fn pwlq_dot3_gemm_8x16c4_rows8(a: &[u8], panel: &[u8]) -> [[[i32; DOT3_PANEL_NR]; 3]; 8] {
    // SAFETY: forwarded.
    unsafe { pwlq_dot3_gemm_8x16c4::<8>(a, panel) }
}

/// Two K steps of two rows per iteration (`iters` iterations), one `asm!` block (the
/// compiler's schedule of the intrinsics kept 20 register moves and a spill pair in this
/// loop): per step one 16-byte panel load and the [`dot3_decode`] (`c`, `t`, `s` in
/// `v8..v10`, `v11..v13`), per row and step one `ld1r` of its 4 bytes (so the high half
/// of the activation vector repeats the low one and `smull2` needs no `ext`), per row
/// and plane `smull`, `smull2`, `smlal`, `smlal2`, two `sadalp` into `v20..v31`
/// (`acc[r][j][h]` = `v(20 + 6r + 2j + h)`), three (row, plane) pairs at a time so that
/// dependent instructions stand six apart (for in-order cores such as the Cortex-A53).
///
/// # Safety
/// `acc` points to 12 accumulators; for `s < 2·iters`, `a + s·stride` and `+ 4` are
/// readable for 4 bytes and `w + 64·s` for 16.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn pair_loop2(acc: *mut [int32x4_t; 12], a: *const u8, stride: usize, w: *const u8, iters: usize, t: &Dot3Tables) {
    // SAFETY: the caller's contract.
    let c = unsafe { &mut *acc };
    // SAFETY: the loop reads what the contract allows (see above).
    unsafe {
        asm!(
            "// qkern-mca-begin qs8_pwlq_dot3_gemm_8x16c4__neon 2-steps",
            "2:",
            "ldr q0, [{w}]",
            "ldr q1, [{w}, #64]",
            "add {w}, {w}, #128",
            "ld1r {{v2.4s}}, [{p0}], {st}",
            "ld1r {{v3.4s}}, [{p0}], {st}",
            "ld1r {{v4.4s}}, [{p1}], {st}",
            "ld1r {{v14.4s}}, [{p1}], {st}",
            "tbl v8.16b, {{v5.16b}}, v0.16b",
            "eor v0.16b, v0.16b, v7.16b",
            "tbl v11.16b, {{v5.16b}}, v1.16b",
            "eor v1.16b, v1.16b, v7.16b",
            "tbl v9.16b, {{v5.16b}}, v0.16b",
            "tbl v10.16b, {{v6.16b}}, v0.16b",
            "tbl v12.16b, {{v5.16b}}, v1.16b",
            "tbl v13.16b, {{v6.16b}}, v1.16b",
            // row 0 c, row 1 c, row 0 t: products of step s, + step s + 1, into i32
            "smull v15.8h, v8.8b, v2.8b",
            "smull2 v16.8h, v8.16b, v2.16b",
            "smull v17.8h, v8.8b, v4.8b",
            "smull2 v18.8h, v8.16b, v4.16b",
            "smull v19.8h, v9.8b, v2.8b",
            "smull2 v1.8h, v9.16b, v2.16b",
            "smlal v15.8h, v11.8b, v3.8b",
            "smlal2 v16.8h, v11.16b, v3.16b",
            "smlal v17.8h, v11.8b, v14.8b",
            "smlal2 v18.8h, v11.16b, v14.16b",
            "smlal v19.8h, v12.8b, v3.8b",
            "smlal2 v1.8h, v12.16b, v3.16b",
            "sadalp v20.4s, v15.8h",
            "sadalp v21.4s, v16.8h",
            "sadalp v26.4s, v17.8h",
            "sadalp v27.4s, v18.8h",
            "sadalp v22.4s, v19.8h",
            "sadalp v23.4s, v1.8h",
            // row 1 t, row 0 s, row 1 s: products of step s, + step s + 1, into i32
            "smull v15.8h, v9.8b, v4.8b",
            "smull2 v16.8h, v9.16b, v4.16b",
            "smull v17.8h, v10.8b, v2.8b",
            "smull2 v18.8h, v10.16b, v2.16b",
            "smull v19.8h, v10.8b, v4.8b",
            "smull2 v1.8h, v10.16b, v4.16b",
            "smlal v15.8h, v12.8b, v14.8b",
            "smlal2 v16.8h, v12.16b, v14.16b",
            "smlal v17.8h, v13.8b, v3.8b",
            "smlal2 v18.8h, v13.16b, v3.16b",
            "smlal v19.8h, v13.8b, v14.8b",
            "smlal2 v1.8h, v13.16b, v14.16b",
            "sadalp v28.4s, v15.8h",
            "sadalp v29.4s, v16.8h",
            "sadalp v24.4s, v17.8h",
            "sadalp v25.4s, v18.8h",
            "sadalp v30.4s, v19.8h",
            "sadalp v31.4s, v1.8h",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "// qkern-mca-end",
            w = inout(reg) w => _,
            p0 = inout(reg) a => _,
            p1 = inout(reg) a.wrapping_add(4) => _,
            st = in(reg) stride,
            n = inout(reg) iters => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
            in("v5") t.tq, in("v6") t.ts, in("v7") t.flip,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            inout("v20") c[0], inout("v21") c[1], inout("v22") c[2], inout("v23") c[3],
            inout("v24") c[4], inout("v25") c[5], inout("v26") c[6], inout("v27") c[7],
            inout("v28") c[8], inout("v29") c[9], inout("v30") c[10], inout("v31") c[11],
            options(nostack, readonly),
        );
    }
}

/// `S` rows (the first at `a`, each step `stride` bytes on) × the panel, into
/// `out[..S]`.
///
/// # Safety
/// `a + s·stride + 4r` is readable for 4 bytes for `s < steps`, `r < S`; `panel` for
/// `steps·64` bytes.
#[target_feature(enable = "neon")]
unsafe fn neon_rows<const S: usize>(a: *const u8, stride: usize, panel: *const u8, steps: usize, out: &mut [[[i32; DOT3_PANEL_NR]; 3]]) {
    let t = Dot3Tables::new();
    // SAFETY (the loads below): within the bounds of the contract.
    let arow = |s: usize, r: usize| unsafe { vreinterpretq_s8_u32(vdupq_n_u32(a.add(s * stride + 4 * r).cast::<u32>().read_unaligned())) };
    for g in 0..DOT3_PANEL_NR / 4 {
        // SAFETY: step s of column group g is bytes 64s + 16g .. + 16 of the panel.
        let w = |s: usize| unsafe { dot3_decode(vld1q_u8(panel.add(DOT3_STEP_BYTES * s + 16 * g)), &t) };
        // acc[r][j]: [col 0 (K 0–1, 2–3), col 1 (…)], [col 2, col 3].
        let mut acc = [[[vdupq_n_s32(0); 2]; 3]; S];
        let mut s = 0;
        if S == 2 && steps >= 2 {
            // SAFETY: the two rows' bytes of steps 0..2·⌊steps/2⌋ and those steps of
            // column group g (contract); `acc` is 12 vectors when S = 2.
            unsafe { pair_loop2(acc.as_mut_ptr().cast(), a, stride, panel.add(16 * g), steps / 2, &t) };
            s = steps / 2 * 2;
        }
        while s + 2 <= steps {
            let (d0, d1) = (w(s), w(s + 1));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let (a0, a1) = (arow(s, r), arow(s + 1, r));
                for j in 0..3 {
                    let lo = vmlal_s8(vmull_s8(vget_low_s8(d0[j]), vget_low_s8(a0)), vget_low_s8(d1[j]), vget_low_s8(a1));
                    let hi = vmlal_high_s8(vmull_high_s8(d0[j], a0), d1[j], a1);
                    acc_r[j][0] = vpadalq_s16(acc_r[j][0], lo);
                    acc_r[j][1] = vpadalq_s16(acc_r[j][1], hi);
                }
            }
            s += 2;
        }
        if s < steps {
            let d0 = w(s);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a0 = arow(s, r);
                for j in 0..3 {
                    acc_r[j][0] = vpadalq_s16(acc_r[j][0], vmull_s8(vget_low_s8(d0[j]), vget_low_s8(a0)));
                    acc_r[j][1] = vpadalq_s16(acc_r[j][1], vmull_high_s8(d0[j], a0));
                }
            }
        }
        for (o, acc_r) in out.iter_mut().zip(&acc) {
            for j in 0..3 {
                // SAFETY: 4 lanes at 4g ≤ 12 of a 16-lane row.
                unsafe { vst1q_s32(o[j].as_mut_ptr().add(4 * g), vpaddq_s32(acc_r[j][0], acc_r[j][1])) };
            }
        }
    }
}
