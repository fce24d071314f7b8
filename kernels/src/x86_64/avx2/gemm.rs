//! AVX2 int8 GEMM microkernels on the generic `[k/KR][NR][KR]` byte layout
//! (`pack_b_kgroups`).
//!
//! * [`QX8_GEMM_6X16C2__AVX2`] — exact for every input: both operands widened to i16
//!   (sign- or zero-extended per type), `vpmaddwd` sums pairs of i16 products into i32.
//!   A product is at most `255·255` in magnitude and a pair `2·255·255 = 130050`, far
//!   inside i32; accumulation wraps modulo 2^32 as the contract asks. Its packed-A entry
//!   points ([`PackedA`]) take A already widened by `pack_a_blocks`, which the driver
//!   runs once per row tile instead of once per 16 columns; the raw-row ones widen a
//!   chunk at a time into a stack buffer. Per K pair the loop is 2 B widenings, 6
//!   broadcasts, 12 `vpmaddwd` + 12 `vpaddd`: 26 vector ALU ops on Zen 4's 4 pipes, so
//!   at most 24/26 ≈ 92 % of the `vpmaddwd + vpaddd` probe (measured 92 % in asm).
//! * [`QX8_GEMM_4X16C4_MADDUBS__AVX2`] — `vpmaddubsw` (u8 × s8 pairs summed to i16 with
//!   signed saturation) + `vpmaddwd` by ones. Exact only while a pair cannot saturate:
//!   `2·255·|b| ≤ 32767`, i.e. stored `|b| ≤ 64` (`2·255·64 = 32640`; 65 gives 33150).
//!   The packer selects it only after measuring the weights (`max_abs_stored_b`).
//!   i8 activations are flipped to u8 with `XOR 0x80` (`a_offset` 128) and u8 weights
//!   are stored as `b − 128` (`b_offset` 128); the driver moves the zero points.
//!
//! Both share one epilogue: the zero-point terms, then the output stage in AVX2 for
//! I32, F32 and the `Fp32` requantization, the portable per-element code for the
//! fixed-point requantization modes. Both also have indirect entries (convolution rows
//! read in place through an indirection buffer, [`super::igemm`]) built from the same
//! inner loops (`widen_rows` + `exact_k_loop`, `maddubs_groups`) and epilogue.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use crate::generic::gemm::output_value;
use crate::types::{GemmArgs, GemmUkernel, Isa, OutputKind, PackFormat, PackedA, RequantMode};

/// Rows per tile of the exact kernel.
pub(super) const MR_EXACT: usize = 6;
/// Rows per tile of the `vpmaddubsw` kernel.
pub(super) const MR_FAST: usize = 4;
/// Columns per tile.
pub(super) const NR: usize = 16;
/// 8-lane i32 vectors per tile row.
pub(super) const NV: usize = NR / 8;
/// K elements widened to i16 at a time by the raw-row entry of the exact kernel, into a
/// stack buffer (a multiple of 16, so chunks start on a packed block). Tuned for the
/// earlier per-tile widening (Zen 4, one tile in L1: 128 gave 156 GOPS, 96 gave 155,
/// 192–256 gave 144–152, 64 gave 133); the packed-A entry, the driver's, has no chunks.
pub(super) const KC: usize = 128;
/// K elements per block of a packed A tile: one 32-byte vector of 16 i16 per row.
pub(super) const A_BLOCK_K: usize = 16;
/// Bytes of one K block of a packed A tile (`MR_EXACT` rows).
pub(super) const A_BLOCK_BYTES: usize = MR_EXACT * A_BLOCK_K * 2;
/// K elements of i8 activations flipped to u8 at a time by the `vpmaddubsw` kernel (a
/// multiple of 4, so chunks start on a K group). Measured likewise: 256 gave 212 GOPS (i8 × i8), 128 gave 207.
pub(super) const KC4: usize = 256;

/// The accumulator tile: `MR` rows of `NV` vectors of 8 i32 columns.
pub(super) type Acc<const MR: usize> = [[__m256i; NV]; MR];

/// The row pointers of a tile: rows at and past `m` repeat row `m − 1`, so the K loop
/// runs all `MR` rows without a branch; their results are never stored.
///
/// # Safety
/// `args.m ≥ 1` rows of A exist `args.lda` apart.
#[inline(always)]
unsafe fn row_pointers<const MR: usize>(args: &GemmArgs) -> [*const u8; MR] {
    let mut rows = [args.a; MR];
    for r in 1..MR {
        // SAFETY: row r < m lies inside A (contract); rows past m are not formed.
        rows[r] = if r < args.m { unsafe { args.a.add(r * args.lda) } } else { rows[r - 1] };
    }
    rows
}

// ---------------------------------------------------------------------------------------
// Exact kernel: i16 widening + vpmaddwd.

/// Packs `m ≤ MR_EXACT` rows of `k` activations into the exact kernel's A layout: K in
/// blocks of 16; per block, each of the `MR_EXACT` rows as 16 i16 (sign- or
/// zero-extended per type) in one 32-byte vector, so the i32 at `4p` of row `r` is the
/// row's K pair `p` of the block, ready to broadcast with one load. Rows past `m` and K
/// past `k` are zero. Writes exactly `k.div_ceil(16)·A_BLOCK_BYTES` bytes.
///
/// (A pair-major layout, `[k/2][MR]` i32, would need an 8×8 transpose per block: it
/// measured 2.7 cycles per K pair, 4–5 % of the GEMM time where A is packed once for
/// 8–16 column tiles; this one is a load, a widening and a store per row and block.)
///
/// # Safety
/// `m ≥ 1` rows of `k` bytes are readable from `a`, `lda` apart; `dst` is writable for
/// `k.div_ceil(16)·A_BLOCK_BYTES` bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_a_blocks<const SIGNED: bool>(a: *const u8, lda: usize, m: usize, k: usize, dst: *mut u8) {
    let m = m.min(MR_EXACT);
    // Rows past m are never read (they are written as zeros): any pointer will do.
    let rows: [*const u8; MR_EXACT] = core::array::from_fn(|r| if r < m { a.wrapping_add(r * lda) } else { a });
    // The driver packs row tiles one after another, and rows of a few hundred bytes are
    // too short for the hardware prefetcher to learn: while this tile is packed, the
    // next tile's rows are requested, one line per block. A prefetch never faults, so
    // it may name rows past the end of A (it only wastes a request there).
    let next = Some((a.wrapping_add(MR_EXACT * lda), lda));
    // SAFETY: forwarded contract: row r < m is readable for k bytes at rows[r].
    unsafe { widen_rows::<SIGNED>(&rows, m, k, dst, next) }
}

/// [`pack_a_blocks`] on `m` rows given by pointer (the indirect kernel's tap rows): the
/// same blocks, rows past `m` and K past `k` zero. With `next = Some((p, lda))`, the
/// `MR_EXACT` rows from `p`, `lda` apart, are prefetched one line per 64 K.
///
/// # Safety
/// `rows[r]` is readable for `k` bytes for every `r < m ≤ MR_EXACT`; `dst` is writable
/// for `k.div_ceil(16)·A_BLOCK_BYTES` bytes.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn widen_rows<const SIGNED: bool>(
    rows: &[*const u8; MR_EXACT],
    m: usize,
    k: usize,
    dst: *mut u8,
    next: Option<(*const u8, usize)>,
) {
    let widen = |x: __m128i| if SIGNED { _mm256_cvtepi8_epi16(x) } else { _mm256_cvtepu8_epi16(x) };
    for blk in 0..k.div_ceil(A_BLOCK_K) {
        let t = blk * A_BLOCK_K;
        if let Some((nx, lda)) = next
            && t.is_multiple_of(64)
        {
            for r in 0..MR_EXACT {
                _mm_prefetch::<_MM_HINT_T0>(nx.wrapping_add(r * lda + t).cast());
            }
        }
        let len = A_BLOCK_K.min(k - t);
        for (r, &row) in rows.iter().enumerate() {
            let v = if r >= m {
                _mm256_setzero_si256()
            } else if len == A_BLOCK_K {
                // SAFETY: r < m: bytes t..t+16 ≤ k of row r are readable.
                widen(unsafe { _mm_loadu_si128(row.add(t).cast()) })
            } else {
                // The last, partial block: only its `len` bytes are read.
                let mut bytes = [0u8; A_BLOCK_K];
                // SAFETY: bytes t..t+len = k of row r are readable; `bytes` holds 16.
                unsafe { core::ptr::copy_nonoverlapping(row.add(t), bytes.as_mut_ptr(), len) };
                // SAFETY: 16 bytes.
                widen(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) })
            };
            // SAFETY: block blk < k.div_ceil(16) of dst, row r's 32 bytes.
            unsafe { _mm256_storeu_si256(dst.add(blk * A_BLOCK_BYTES + r * 32).cast(), v) };
        }
    }
}

/// 16 packed weight bytes widened to 16 i16 (8 columns × a K pair).
///
/// # Safety
/// `p` is readable for 16 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_b16<const SIGNED: bool>(p: *const u8) -> __m256i {
    // SAFETY: forwarded.
    let x = unsafe { _mm_loadu_si128(p.cast()) };
    if SIGNED { _mm256_cvtepi8_epi16(x) } else { _mm256_cvtepu8_epi16(x) }
}

/// One K pair of the exact loop: B widened 16 bytes at a time, each of the first `MR`
/// rows' packed pair (`a + 32r`) broadcast, `vpmaddwd` + `vpaddd` into the first `NVA`
/// (1 or 2) blocks of 8 columns of `c`.
///
/// # Safety
/// `a + 32r` is readable for 4 bytes for every row `r < MR`, `b` for `16·NVA`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn exact_pair<const MR: usize, const NVA: usize, const B_SIGNED: bool>(c: &mut Acc<MR>, a: *const u8, b: *const u8) {
    // SAFETY: forwarded.
    unsafe {
        let mut bv = [_mm256_setzero_si256(); NVA];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = load_b16::<B_SIGNED>(b.add(16 * v));
        }
        for (r, cr) in c.iter_mut().enumerate() {
            let av = _mm256_set1_epi32(a.add(32 * r).cast::<i32>().read_unaligned());
            for (x, y) in cr.iter_mut().zip(&bv) {
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(av, *y));
            }
        }
    }
}

/// The exact K loop over `pairs` K pairs of packed A ([`pack_a_blocks`]) and of the
/// panel: whole blocks of 8 pairs unrolled (constant offsets), then the last pairs.
///
/// # Safety
/// `a` holds `pairs.div_ceil(8)·A_BLOCK_BYTES` packed bytes, `b` `pairs·32` panel bytes.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn exact_k_loop<const MR: usize, const NVA: usize, const B_SIGNED: bool>(
    c: &mut Acc<MR>,
    mut a: *const u8,
    mut b: *const u8,
    pairs: usize,
) {
    const PAIRS: usize = A_BLOCK_K / 2;
    for _ in 0..pairs / PAIRS {
        // SAFETY: a whole block of A and its 8 pairs of the panel (contract).
        unsafe {
            for p in 0..PAIRS {
                exact_pair::<MR, NVA, B_SIGNED>(c, a.add(4 * p), b.add(NR * 2 * p));
            }
            a = a.add(A_BLOCK_BYTES);
            b = b.add(NR * 2 * PAIRS);
        }
    }
    for p in 0..pairs % PAIRS {
        // SAFETY: pair p of the last, partial block, inside both (contract).
        unsafe { exact_pair::<MR, NVA, B_SIGNED>(c, a.add(4 * p), b.add(NR * 2 * p)) };
    }
}

/// The exact tile on packed A (`args.a` as written by [`pack_a_blocks`]) for its first
/// `MR` (2, 4 or 6) rows: the whole K loop with the accumulators in registers, then the
/// epilogue. A short tile (e.g. the last 2 rows of M = 128) runs only the rows it has.
///
/// Reads `k.div_ceil(16)·192` bytes of packed A (at most) and the panel's
/// `k.div_ceil(2)·16·2` bytes; nothing past them.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`GemmArgs`] contract with `m ≤ MR ≤ 6`,
/// `n ≤ 8·NVA`, a panel in the `{nr: 16, kr: 2}` format and `a` a packed A tile.
#[target_feature(enable = "avx2")]
unsafe fn exact_packed_tile<const MR: usize, const NVA: usize, const B_SIGNED: bool>(args: &GemmArgs) {
    let mut c: Acc<MR> = [[_mm256_setzero_si256(); NV]; MR];
    // SAFETY: forwarded contract: k.div_ceil(2) pairs of packed A and of the panel.
    unsafe {
        exact_k_loop::<MR, NVA, B_SIGNED>(&mut c, args.a, args.b, args.k.div_ceil(2));
        store_acc::<MR, NVA>(args, c)
    }
}

/// The epilogue of an accumulator tile: [`store_i32_plain`] where it applies (I32
/// output, no weight-zero-point row terms), else [`store_tile`].
///
/// # Safety
/// As [`store_tile`], with `n ≤ 8·NVA`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn store_acc<const MR: usize, const NVA: usize>(args: &GemmArgs, acc: Acc<MR>) {
    // SAFETY: forwarded; the plain store only for the case it covers.
    unsafe {
        if args.out.kind == OutputKind::I32 && (args.a_row_sum.is_null() || args.b_zero_point.is_null()) {
            store_i32_plain::<MR, NVA>(args, &acc)
        } else {
            store_tile(args, acc)
        }
    }
}

/// The I32 output without weight zero points, from registers: what [`store_tile`]
/// does in that case, kept inline so the accumulators need not go through memory.
///
/// # Safety
/// As [`store_tile`], with `n ≤ 8·NVA`, kind I32 and no row-sum terms.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_i32_plain<const MR: usize, const NVA: usize>(args: &GemmArgs, c: &Acc<MR>) {
    for v in 0..NVA {
        if 8 * v >= args.n {
            break;
        }
        // SAFETY: col_offset has n entries; row i < m of the output tile, columns 8v.. < n.
        unsafe {
            let off = load_cols(args.out.col_offset, args.n, v);
            for (i, row) in c.iter().enumerate().take(args.m) {
                store_cols(args.c.cast::<i32>().add(i * args.ldc + 8 * v), _mm256_add_epi32(row[v], off), args.n, v);
            }
        }
    }
}

/// The exact tile on raw rows: A packed `KC` elements at a time into a stack buffer,
/// then the same K loop as [`exact_packed_tile`].
///
/// Reads `m` rows of `k` bytes of A (stride `lda`) and the panel's
/// `k.div_ceil(2)·16·2` bytes; nothing past them.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`GemmArgs`] contract with `m ≤ 6`,
/// `n ≤ 8·NVA` and a panel in the `{nr: 16, kr: 2}` format.
#[target_feature(enable = "avx2")]
unsafe fn exact_tile<const NVA: usize, const A_SIGNED: bool, const B_SIGNED: bool>(args: &GemmArgs) {
    let mut acc: Acc<MR_EXACT> = [[_mm256_setzero_si256(); NV]; MR_EXACT];
    let mut buf = [MaybeUninit::<u8>::uninit(); KC / A_BLOCK_K * A_BLOCK_BYTES];
    let mut bp = args.b;
    let mut k0 = 0;
    while k0 < args.k {
        let kc = KC.min(args.k - k0);
        // A local copy the compiler keeps in registers (the tile itself escapes to the
        // epilogue, which made it spill every accumulator on every iteration).
        let mut c = acc;
        // SAFETY: m rows of k ≥ k0 + kc bytes (contract); buf holds KC/16 ≥ kc.div_ceil(16)
        // blocks; the chunk's pairs of the panel follow bp (KC is a multiple of 16, so
        // every chunk but the last is whole blocks).
        unsafe {
            pack_a_blocks::<A_SIGNED>(args.a.add(k0), args.lda, args.m, kc, buf.as_mut_ptr().cast());
            exact_k_loop::<MR_EXACT, NVA, B_SIGNED>(&mut c, buf.as_ptr().cast(), bp, kc.div_ceil(2));
            bp = bp.add(kc.div_ceil(2) * NR * 2);
        }
        acc = c;
        k0 += kc;
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile(args, acc) }
}

// ---------------------------------------------------------------------------------------
// Fast kernel: vpmaddubsw + vpmaddwd by ones.

/// Copies bytes `k0..k0 + kc` of every row to `dst` (row `r` at `dst + r·KC4`) with
/// `XOR 0x80` (i8 → u8 + 128), zero-padded to a multiple of 4. Done 32 bytes at a time
/// once per chunk, so the K loop broadcasts ready operands straight from memory (a
/// broadcast load costs no vector ALU slot; an XOR per broadcast would).
///
/// # Safety
/// Every row is readable for `k0 + kc` bytes; `dst` is writable for `MR·KC4` bytes and
/// `kc ≤ KC4`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn flip_rows<const MR: usize>(rows: &[*const u8; MR], k0: usize, kc: usize, dst: *mut u8) {
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let mut t = 0;
    while t + 32 <= kc {
        for (r, row) in rows.iter().enumerate() {
            // SAFETY: bytes k0+t..k0+t+32 ≤ k0+kc of the row are readable; row r of dst
            // holds KC4 ≥ kc bytes.
            unsafe {
                let x = _mm256_loadu_si256(row.add(k0 + t).cast());
                _mm256_storeu_si256(dst.add(r * KC4 + t).cast(), _mm256_xor_si256(x, flip));
            }
        }
        t += 32;
    }
    let padded = kc.next_multiple_of(4);
    for (r, row) in rows.iter().enumerate() {
        // SAFETY: bytes k0+u < k0+kc of the row are readable; row r of dst holds KC4 ≥
        // padded bytes (KC4 is a multiple of 4).
        unsafe {
            for u in t..kc {
                *dst.add(r * KC4 + u) = *row.add(k0 + u) ^ 0x80;
            }
            for u in kc..padded {
                *dst.add(r * KC4 + u) = 0;
            }
        }
    }
}

/// `groups` K groups of the `vpmaddubsw` loop: per group, `NVA` loads of 32 panel bytes,
/// each row's 4 bytes (`src[r] + 4g`) broadcast, `vpmaddubsw` + `vpmaddwd` by ones +
/// `vpaddd` into the first `NVA` blocks of 8 columns of `c`. Returns the panel pointer
/// past the groups.
///
/// # Safety
/// Every `src[r]` is readable for `4·groups` bytes; `bp` for `groups·64`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn maddubs_groups<const MR: usize, const NVA: usize>(
    c: &mut Acc<MR>,
    src: &[*const u8; MR],
    groups: usize,
    mut bp: *const u8,
) -> *const u8 {
    let ones = _mm256_set1_epi16(1);
    for g in 0..groups {
        // SAFETY: group g < groups of every row and of the panel (contract).
        unsafe {
            let mut b = [_mm256_setzero_si256(); NVA];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = _mm256_loadu_si256(bp.add(32 * v).cast());
            }
            for (r, cr) in c.iter_mut().enumerate() {
                let a = _mm256_set1_epi32(src[r].add(4 * g).cast::<i32>().read_unaligned());
                for (x, bv) in cr.iter_mut().zip(&b) {
                    *x = _mm256_add_epi32(*x, _mm256_madd_epi16(_mm256_maddubs_epi16(a, *bv), ones));
                }
            }
            bp = bp.add(NR * 4);
        }
    }
    bp
}

/// The `vpmaddubsw` tile: per K group of 4, each row's 4 activation bytes broadcast and
/// multiplied as u8 by the stored i8 weights of 8 columns (`vpmaddubsw`, pairs to i16),
/// the pairs summed to i32 (`vpmaddwd` by ones), over the first `NVA` (1 or 2) blocks of
/// 8 columns. With `A_FLIP` (i8 activations) the rows are first copied `XOR 0x80` to a
/// stack buffer, `KC4` bytes at a time.
///
/// Reads `m` rows of `k` bytes of A (4-byte words only where all 4 lie inside the row;
/// the K tail byte by byte) and the panel's `k.div_ceil(4)·16·4` bytes; nothing past
/// them. Exact when every stored weight has `|b| ≤ 64` (the kernel's
/// `max_abs_stored_b`); larger weights may saturate.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`GemmArgs`] contract with `m ≤ MR`,
/// `n ≤ 8·NVA` and a panel in the `{nr: 16, kr: 4}` format.
#[target_feature(enable = "avx2")]
unsafe fn maddubs_tile<const MR: usize, const NVA: usize, const A_FLIP: bool>(args: &GemmArgs) {
    // SAFETY: m ≥ 1 rows of A (contract).
    let rows = unsafe { row_pointers::<MR>(args) };
    let ones = _mm256_set1_epi16(1);
    let mut acc: Acc<MR> = [[_mm256_setzero_si256(); NV]; MR];
    let mut buf = [[MaybeUninit::<u8>::uninit(); KC4]; MR];
    let mut bp = args.b;
    let mut k0 = 0;
    while k0 < args.k {
        // Unflipped rows are read in place, all of K at once.
        let kc = if A_FLIP { KC4.min(args.k - k0) } else { args.k - k0 };
        let mut src = [core::ptr::null::<u8>(); MR];
        for (r, p) in src.iter_mut().enumerate() {
            // SAFETY: k0 < k: inside row r; buf row r is inside buf.
            *p = if A_FLIP { buf[r].as_ptr().cast() } else { unsafe { rows[r].add(k0) } };
        }
        if A_FLIP {
            // SAFETY: rows hold k ≥ k0 + kc bytes; buf holds MR rows of KC4 ≥ kc bytes.
            unsafe { flip_rows::<MR>(&rows, k0, kc, buf.as_mut_ptr().cast()) };
        }
        // The flipped buffer is zero-padded to whole groups; in place, the last partial
        // group is read byte by byte below.
        let full = if A_FLIP { kc.div_ceil(4) } else { kc / 4 };
        // A local copy kept in registers, as in `exact_tile`.
        let mut c = acc;
        // SAFETY: bytes 0..4·full of every source row are inside it (in place: 4·full ≤
        // kc; flipped: inside the padded buffer row, written above); the groups' panel
        // bytes are inside the panel.
        bp = unsafe { maddubs_groups::<MR, NVA>(&mut c, &src, full, bp) };
        let rem = if A_FLIP { 0 } else { kc % 4 };
        if rem != 0 {
            // SAFETY: the last group's 64 panel bytes are inside the panel (zero-padded
            // past k, so the zero padding of `bytes` only ever multiplies zeros).
            unsafe {
                let mut b = [_mm256_setzero_si256(); NVA];
                for (v, bv) in b.iter_mut().enumerate() {
                    *bv = _mm256_loadu_si256(bp.add(32 * v).cast());
                }
                for (r, cr) in c.iter_mut().enumerate() {
                    let mut bytes = [0u8; 4];
                    for (t, x) in bytes.iter_mut().enumerate().take(rem) {
                        // SAFETY: 4·full + t < kc.
                        *x = *src[r].add(4 * full + t);
                    }
                    let a = _mm256_set1_epi32(i32::from_le_bytes(bytes));
                    for (x, bv) in cr.iter_mut().zip(&b) {
                        *x = _mm256_add_epi32(*x, _mm256_madd_epi16(_mm256_maddubs_epi16(a, *bv), ones));
                    }
                }
            }
        }
        acc = c;
        k0 += kc;
    }
    // SAFETY: forwarded contract.
    unsafe { store_tile(args, acc) }
}

// ---------------------------------------------------------------------------------------
// The shared epilogue.

/// Lane mask of the columns `8v..8v+8` that are `< n`.
#[target_feature(enable = "avx2")]
#[inline]
fn col_mask(n: usize, v: usize) -> __m256i {
    let left = (n - 8 * v).min(8) as i32;
    _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// 8 i32 (or f32 bits) of a per-column table from column `8v`, lanes past `n` zero
/// (masked: nothing past the table's `n` entries is read).
///
/// # Safety
/// `p` has `n > 8v` readable entries.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_cols(p: *const i32, n: usize, v: usize) -> __m256i {
    // SAFETY: full vectors lie inside the table; a partial one is masked.
    unsafe {
        if 8 * v + 8 <= n {
            _mm256_loadu_si256(p.add(8 * v).cast())
        } else {
            _mm256_maskload_epi32(p.add(8 * v), col_mask(n, v))
        }
    }
}

/// Stores 8 i32 (or f32 bits) at `p`, only the lanes of columns `< n`.
///
/// # Safety
/// `p` is writable for `min(8, n − 8v)` i32.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_cols(p: *mut i32, x: __m256i, n: usize, v: usize) {
    // SAFETY: full vectors are inside the row; a partial one is masked.
    unsafe {
        if 8 * v + 8 <= n { _mm256_storeu_si256(p.cast(), x) } else { _mm256_maskstore_epi32(p, col_mask(n, v), x) }
    }
}

/// Whether the vectorised `Fp32` requantization below is exact for these parameters:
/// it clamps the rounded product to ±2^30 and adds the zero point in i32, which equals
/// the reference's i64 arithmetic whenever the zero point and the clamp bounds are
/// within ±2^29 (always, for 8-bit outputs).
fn fp32_requant_vectorisable(zp: i32, qmin: i32, qmax: i32) -> bool {
    const LIM: i32 = 1 << 29;
    [zp, qmin, qmax].iter().all(|v| (-LIM..LIM).contains(v))
}

/// Adds the zero-point terms to the tile and writes it through the output stage.
///
/// Reads `n` entries of each per-column table the stage uses and `m` row sums; writes
/// the `m × n` output tile only.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`GemmArgs`] contract for an `m × n`
/// tile with `m ≤ MR`, `n ≤ NR`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_tile<const MR: usize>(args: &GemmArgs, acc: Acc<MR>) {
    let out = &args.out;
    let (m, n) = (args.m, args.n);
    let requant = matches!(out.kind, OutputKind::U8 | OutputKind::I8);
    let zb_terms = !args.a_row_sum.is_null() && !args.b_zero_point.is_null();
    if requant && !(out.mode == RequantMode::Fp32 && fp32_requant_vectorisable(out.out_zero_point, out.qmin, out.qmax))
    {
        // Fixed-point modes: the portable per-element code, the reference's own formula.
        let mut tile = [[0i32; NR]; MR];
        for (row, vecs) in tile.iter_mut().zip(&acc) {
            for (v, x) in vecs.iter().enumerate() {
                // SAFETY: 8 i32 inside the row array.
                unsafe { _mm256_storeu_si256(row.as_mut_ptr().add(8 * v).cast(), *x) };
            }
        }
        for (i, row) in tile.iter().enumerate().take(m) {
            // SAFETY: m row sums and n zero points when non-null (contract).
            let rs = if zb_terms { unsafe { *args.a_row_sum.add(i) } } else { 0 };
            for (j, &x) in row.iter().enumerate().take(n) {
                // SAFETY: as above; col_offset has n entries; (i, j) is inside the tile.
                unsafe {
                    let zb = if zb_terms { *args.b_zero_point.add(j) } else { 0 };
                    let x = x.wrapping_add(*out.col_offset.add(j)).wrapping_sub(zb.wrapping_mul(rs));
                    args.c.add(i * args.ldc + j).write(output_value(x, j, out) as u8);
                }
            }
        }
        return;
    }

    // `v` is a block of 8 columns, across every row of the tile.
    #[allow(clippy::needless_range_loop)]
    for v in 0..NV {
        if 8 * v >= n {
            break;
        }
        // SAFETY (every table read below): the contract gives n entries for each table
        // the stage uses; `load_cols` reads only those.
        let col_off = unsafe { load_cols(out.col_offset, n, v) };
        let zb = if zb_terms { unsafe { load_cols(args.b_zero_point, n, v) } } else { _mm256_setzero_si256() };
        let x_of = |i: usize| {
            let x = _mm256_add_epi32(acc[i][v], col_off);
            if zb_terms {
                // SAFETY: i < m row sums.
                let rs = _mm256_set1_epi32(unsafe { *args.a_row_sum.add(i) });
                _mm256_sub_epi32(x, _mm256_mullo_epi32(zb, rs))
            } else {
                x
            }
        };
        match out.kind {
            OutputKind::I32 => {
                for i in 0..m {
                    // SAFETY: row i of the output tile, columns 8v.. < n.
                    unsafe { store_cols(args.c.cast::<i32>().add(i * args.ldc + 8 * v), x_of(i), n, v) };
                }
            }
            OutputKind::F32 => {
                // SAFETY: scale has n entries; bias_f32 too when non-null.
                let scale = _mm256_castsi256_ps(unsafe { load_cols(out.scale.cast(), n, v) });
                let bias = if out.bias_f32.is_null() {
                    _mm256_setzero_ps() // the reference adds +0.0 (turning −0.0 into +0.0)
                } else {
                    _mm256_castsi256_ps(unsafe { load_cols(out.bias_f32.cast(), n, v) })
                };
                for i in 0..m {
                    // Multiply, then add: two roundings, as the reference (no FMA).
                    let y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(x_of(i)), scale), bias);
                    // SAFETY: row i of the output tile.
                    unsafe { store_cols(args.c.cast::<i32>().add(i * args.ldc + 8 * v), _mm256_castps_si256(y), n, v) };
                }
            }
            OutputKind::U8 | OutputKind::I8 => {
                // SAFETY: scale has n entries.
                let scale = _mm256_castsi256_ps(unsafe { load_cols(out.scale.cast(), n, v) });
                let zp = _mm256_set1_epi32(out.out_zero_point);
                let (qmin, qmax) = (_mm256_set1_epi32(out.qmin), _mm256_set1_epi32(out.qmax));
                let lim = _mm256_set1_ps(1073741824.0); // 2^30
                // Low byte of each i32 lane to the front of its 128-bit lane, then the
                // two lanes' first dwords together.
                let pick = _mm256_setr_epi8(
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                );
                let join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
                for i in 0..m {
                    let p = _mm256_mul_ps(_mm256_cvtepi32_ps(x_of(i)), scale);
                    // Round half to even (the default MXCSR mode), as `round_half_even_f32`.
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
                    // NaN → 0 (the reference's `as i64`); ±∞ and huge values → ±2^30,
                    // which the clamp below maps as the reference's saturation does.
                    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
                    let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
                    let q = _mm256_add_epi32(_mm256_cvtps_epi32(r), zp);
                    let q = _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax);
                    let bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, pick), join);
                    let word = _mm_cvtsi128_si64(_mm256_castsi256_si128(bytes)) as u64;
                    // SAFETY: row i of the u8 output tile, columns 8v.. < n.
                    unsafe {
                        let dst = args.c.add(i * args.ldc + 8 * v);
                        if 8 * v + 8 <= n {
                            dst.cast::<u64>().write_unaligned(word);
                        } else {
                            for t in 0..n - 8 * v {
                                dst.add(t).write((word >> (8 * t)) as u8);
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points and registration.

/// Entry point of the exact kernel on raw rows, for one (A, B) signedness pair.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`GemmArgs`] contract for a tile of at
/// most 6 × 16 with a `{nr: 16, kr: 2}` panel.
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_6x16c2__avx2<const A_SIGNED: bool, const B_SIGNED: bool>(args: &GemmArgs) {
    // SAFETY: forwarded.
    // A tile of at most 8 columns computes only the first 8 (e.g. the last tile of
    // N = 24): half the work, same result.
    unsafe {
        if args.n <= 8 {
            exact_tile::<1, A_SIGNED, B_SIGNED>(args)
        } else {
            exact_tile::<NV, A_SIGNED, B_SIGNED>(args)
        }
    }
}

/// Entry point of the exact kernel on A packed by [`pack_a_blocks`] (already widened, so
/// only the weights' signedness matters).
///
/// # Safety
/// As [`qx8_gemm_6x16c2__avx2`], with `args.a` a packed A tile (see [`PackedA`]).
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_6x16c2__avx2_packed_a<const B_SIGNED: bool>(args: &GemmArgs) {
    // SAFETY: forwarded.
    // Tiles of at most 8 columns compute only those; tiles of at most 2 or 4 rows only
    // those rows (the packed rows past m are zeros, never read then).
    unsafe {
        match (args.m, args.n <= 8) {
            (..=2, true) => exact_packed_tile::<2, 1, B_SIGNED>(args),
            (..=2, false) => exact_packed_tile::<2, NV, B_SIGNED>(args),
            (3..=4, true) => exact_packed_tile::<4, 1, B_SIGNED>(args),
            (3..=4, false) => exact_packed_tile::<4, NV, B_SIGNED>(args),
            (_, true) => exact_packed_tile::<MR_EXACT, 1, B_SIGNED>(args),
            (_, false) => exact_packed_tile::<MR_EXACT, NV, B_SIGNED>(args),
        }
    }
}

/// The exact kernel's A packer for one activation signedness (see [`pack_a_blocks`]).
///
/// # Safety
/// The CPU supports AVX2; as [`APackFn`](crate::types::APackFn).
unsafe fn pack_a_6x16_blocks<const SIGNED: bool>(a: *const u8, lda: usize, m: usize, k: usize, dst: *mut u8) {
    // SAFETY: forwarded.
    unsafe { pack_a_blocks::<SIGNED>(a, lda, m, k, dst) }
}

/// Entry point of the `vpmaddubsw` kernel; `A_FLIP` for i8 activations.
///
/// # Safety
/// The CPU supports AVX2; `args` satisfies the [`GemmArgs`] contract for a tile of at
/// most 4 × 16 with a `{nr: 16, kr: 4}` panel whose stored weights all satisfy
/// `|b| ≤ 64`.
#[allow(non_snake_case)] // the kernel's XNNPACK-style name (DESIGN.md §4)
unsafe fn qx8_gemm_4x16c4_maddubs__avx2<const A_FLIP: bool>(args: &GemmArgs) {
    // SAFETY: forwarded.
    // As in the exact kernel: at most 8 columns, half the work.
    unsafe {
        if args.n <= 8 { maddubs_tile::<MR_FAST, 1, A_FLIP>(args) } else { maddubs_tile::<MR_FAST, NV, A_FLIP>(args) }
    }
}

/// `qx8_gemm_6x16c2__avx2`: exact for all inputs — i16 widening + `vpmaddwd`, 6×16
/// tiles, K pairs. All four u8/i8 combinations, no operand offsets.
pub const QX8_GEMM_6X16C2__AVX2: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_6x16c2__avx2",
    isa: Isa::Avx2,
    mr: MR_EXACT,
    format: PackFormat { nr: NR, kr: 2 },
    a_offset: [0, 0],
    b_offset: [0, 0],
    max_abs_stored_b: None,
    run: [
        [Some(qx8_gemm_6x16c2__avx2::<false, false>), Some(qx8_gemm_6x16c2__avx2::<false, true>)],
        [Some(qx8_gemm_6x16c2__avx2::<true, false>), Some(qx8_gemm_6x16c2__avx2::<true, true>)],
    ],
    // Convolution rows read in place, tap by tap (`super::igemm`).
    indirect: Some(super::igemm::INDIRECT_6X16C2),
    // Widening A to i16 once per row tile instead of once per 16 columns.
    packed_a: Some(PackedA {
        kr: A_BLOCK_K,
        group_bytes: A_BLOCK_BYTES,
        pack: [pack_a_6x16_blocks::<false>, pack_a_6x16_blocks::<true>],
        run: [
            [Some(qx8_gemm_6x16c2__avx2_packed_a::<false>), Some(qx8_gemm_6x16c2__avx2_packed_a::<true>)],
            [Some(qx8_gemm_6x16c2__avx2_packed_a::<false>), Some(qx8_gemm_6x16c2__avx2_packed_a::<true>)],
        ],
    }),
};

/// The largest stored weight magnitude for which no `vpmaddubsw` pair saturates:
/// `2·255·64 = 32640 ≤ 32767 < 2·255·65 = 33150`.
pub const MADDUBS_MAX_ABS_B: i32 = 64;

/// `qx8_gemm_4x16c4_maddubs__avx2`: `vpmaddubsw` + `vpmaddwd` by ones, 4×16 tiles, K
/// groups of 4; exact only for stored weights within ±64 (the packer checks). i8
/// activations XOR 0x80 (offset 128), u8 weights stored as `b − 128`.
pub const QX8_GEMM_4X16C4_MADDUBS__AVX2: GemmUkernel = GemmUkernel {
    name: "qx8_gemm_4x16c4_maddubs__avx2",
    isa: Isa::Avx2,
    mr: MR_FAST,
    format: PackFormat { nr: NR, kr: 4 },
    a_offset: [0, 128],
    b_offset: [128, 0],
    max_abs_stored_b: Some(MADDUBS_MAX_ABS_B),
    run: [
        [Some(qx8_gemm_4x16c4_maddubs__avx2::<false>), Some(qx8_gemm_4x16c4_maddubs__avx2::<false>)],
        [Some(qx8_gemm_4x16c4_maddubs__avx2::<true>), Some(qx8_gemm_4x16c4_maddubs__avx2::<true>)],
    ],
    // Convolution rows read in place, tap by tap (`super::igemm`), same weight bound.
    indirect: Some(super::igemm::INDIRECT_4X16C4_MADDUBS),
    packed_a: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound is the largest that keeps every `vpmaddubsw` pair within i16.
    #[test]
    fn maddubs_bound_is_tight() {
        let pair = |b: i32| 2 * 255 * b;
        assert!(pair(MADDUBS_MAX_ABS_B) <= i16::MAX as i32);
        assert!(pair(MADDUBS_MAX_ABS_B + 1) > i16::MAX as i32);
        // Also the negative side: u8 × (−64) pairs reach −32640 ≥ −32768.
        assert!(-pair(MADDUBS_MAX_ABS_B) >= i16::MIN as i32);
    }

    #[test]
    fn fp32_requant_range_check() {
        assert!(fp32_requant_vectorisable(0, -128, 127));
        assert!(fp32_requant_vectorisable(255, 0, 255));
        assert!(!fp32_requant_vectorisable(1 << 29, 0, 255));
        assert!(!fp32_requant_vectorisable(0, i32::MIN, 255));
    }
}
