//! Depthwise microkernels on zmm: 64-channel tiles, taps in pairs, `vpdpwssd`.
//!
//! Per output pixel and tap pair `(t, t+1)` the kernel loads 64 channel bytes of each
//! tap row (masked past the last channel: nothing past `channels` is read) and builds,
//! with one `vpermt2b` per 16 channels, the dwords `(x[t][c], x[t+1][c])` as two
//! zero-extended u16 (`vpermt2b` with a zero mask on the odd bytes). One `vpdpwssd` with
//! the packed dwords `(wc[t][c], wc[t+1][c])` (centred weights, i16 in `[−255, 255]`)
//! adds the pair's two products to each channel's i32 accumulator, non-saturating
//! (wrapping), exactly: each product is at most `255·255` in magnitude. i8 activations
//! are flipped to u8 (`XOR 0x80`, `a_offset` 128) as they are loaded.
//!
//! A call is blocked into groups of `PX` pixels (`PX9` for 3×3) × one 64-channel tile: `PX·NU`
//! accumulators (`NU` = 16-channel vectors in the tile, fewer in the last tile), the
//! tile's weights loaded once per tap pair and used by all `PX` pixels. The output stage
//! is vectorised (i32, f32, the three requantization modes; the fixed-point ones reuse the
//! GEMM kernels' i64-lane code) and bit-exact with `generic::gemm::output_value`.
//!
//! Kernels named `…c4` take filters whose centred weights fit in i8 (e.g. i8 weights with
//! zero point 0): four taps per dword, `vpdpbusd` (see [`block_quad`]). The 3×3 `c4`
//! kernel works by columns instead ([`cols3`]): neighbouring output pixels share input
//! columns, so each pixel builds only its new ones (one at stride 1, two at stride 2).
//!
//! Needs AVX-512 VBMI besides F/BW/VL/VNNI (`vpermt2b`): the descriptors list it in
//! `extra_features`.

use core::arch::x86_64::*;

use super::gemm::{Bounds, FixedCols, requant_double, requant_single};
use crate::generic::dwconv::{store_one, tap_row};
use crate::types::{DW_ZERO_TAP, DwPackFormat, DwconvArgs, DwconvUkernel, Isa, OutputKind, RequantMode};

/// Channels per tile.
const CT: usize = 64;
/// Pixels per block.
const PX: usize = 4;
/// Pixels per block for short filters (3×3): 2 measured faster on Zen 4 than 4 (8
/// accumulators instead of 16 leave registers for the weights and shuffles: fewer zmm
/// spills), while 4 stays faster for 5×5.
const PX9: usize = 2;

/// The `vpermt2b` indexes of the accumulator vectors: for vector `r` (channels
/// `16r .. 16r+16`), dword `i` takes byte `16r + i` of the first tap row (byte 0) and of
/// the second (byte 2, index `64 + …`); bytes 1 and 3 are zeroed by [`PAIR_MASK`].
static PAIR_INDEX: [[u8; 64]; 4] = {
    let mut t = [[0u8; 64]; 4];
    let mut r = 0;
    while r < 4 {
        let mut i = 0;
        while i < 16 {
            t[r][4 * i] = (16 * r + i) as u8;
            t[r][4 * i + 2] = (64 + 16 * r + i) as u8;
            i += 1;
        }
        r += 1;
    }
    t
};

/// Bytes 0 and 2 of every dword.
const PAIR_MASK: __mmask64 = 0x5555_5555_5555_5555;

/// Lanes of vector `v` (channels `16v..`) below `rem` channels.
#[inline(always)]
fn lane_mask(rem: usize, v: usize) -> __mmask16 {
    let lo = 16 * v;
    if rem >= lo + 16 {
        0xffff
    } else if rem > lo {
        ((1u32 << (rem - lo)) - 1) as __mmask16
    } else {
        0
    }
}

/// The kernel: `T` taps (0 = `args.taps`, any count), `FLIP` for i8 activations.
///
/// Reads, for each pixel and tap, `channels` bytes of the tap row (masked loads), the
/// whole packed filter of the `ct = 64` format, `channels` entries of each per-channel
/// table the output stage uses; writes only the `pixels × channels` output.
///
/// # Safety
/// `args` satisfies the [`DwconvArgs`] contract (with `args.taps == T` when `T > 0`); the
/// CPU supports AVX-512 F/BW/VL/VNNI/VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn dwconv<const T: usize, const KR: usize, const FLIP: bool>(args: &DwconvArgs) {
    let taps = if T > 0 { T } else { args.taps };
    let tile_bytes = DwPackFormat { ct: CT, kr: KR }.tile_bytes(taps);
    // SAFETY: forwarded contract.
    let stage = unsafe { Stage::new(args) };
    // SAFETY (each call below): forwarded contract; NU = rem.div_ceil(16) vectors cover
    // the tile's channels, `wt` is its packed tile, `row(i, t)` is tap t's row of pixel i
    // of the block (pixels past npx repeat the last one).
    macro_rules! one_tile {
        ($p0:expr, $npx:expr, $c0:expr, $wt:expr, $row:expr, $bp:tt) => {{
            let rem = CT.min(args.channels - $c0);
            unsafe {
                match rem.div_ceil(16) {
                    1 => tile::<T, KR, 1, $bp, FLIP>(args, &stage, taps, $p0, $npx, $c0, rem, $wt, $row),
                    2 => tile::<T, KR, 2, $bp, FLIP>(args, &stage, taps, $p0, $npx, $c0, rem, $wt, $row),
                    3 => tile::<T, KR, 3, $bp, FLIP>(args, &stage, taps, $p0, $npx, $c0, rem, $wt, $row),
                    _ => tile::<T, KR, 4, $bp, FLIP>(args, &stage, taps, $p0, $npx, $c0, rem, $wt, $row),
                }
            }
        }};
    }
    if T == 9 && KR == 4 {
        // 3×3 with i8 weights: columns shared between neighbouring pixels.
        // SAFETY: forwarded contract (9 taps, a `kr = 4` filter).
        unsafe { cols3::<FLIP>(args, &stage) };
    } else if T > 0 && T <= 9 {
        // Short filters: pixel blocks outside, each tap row resolved once per block for
        // every channel tile (the indirection's scalar work does not grow with C).
        let mut p0 = 0;
        while p0 < args.pixels {
            let npx = PX9.min(args.pixels - p0);
            let mut rows = [[core::ptr::null::<u8>(); T]; PX9];
            for (i, r) in rows.iter_mut().enumerate() {
                for (t, x) in r.iter_mut().enumerate() {
                    // SAFETY: pixel p0 + min(i, npx − 1) < pixels, t < taps.
                    *x = unsafe { tap_row(args, p0 + i.min(npx - 1), t) };
                }
            }
            let row = |i: usize, t: usize| rows[i][t];
            let (mut c0, mut wt) = (0, args.weights);
            while c0 < args.channels {
                one_tile!(p0, npx, c0, wt, row, PX9);
                c0 += CT;
                wt = wt.wrapping_add(tile_bytes);
            }
            p0 += PX9;
        }
    } else {
        // Long or any-size filters: channel tiles outside (measured faster for 5×5: the
        // tile's weights and tables stay hot), rows resolved as they are read.
        let (mut c0, mut wt) = (0, args.weights);
        while c0 < args.channels {
            let mut p0 = 0;
            while p0 < args.pixels {
                let npx = PX.min(args.pixels - p0);
                // SAFETY: as above.
                let row = |i: usize, t: usize| unsafe { tap_row(args, p0 + i.min(npx - 1), t) };
                one_tile!(p0, npx, c0, wt, row, PX);
                p0 += PX;
            }
            c0 += CT;
            wt = wt.wrapping_add(tile_bytes);
        }
    }
}

/// Pixels per chunk of [`cols3`]: the chunk's tap rows are resolved once for all
/// channel tiles, and a tile's column cache restarts at each chunk. Measured on Zen 4:
/// 32 beats 8, 16 and 48 (the chunk's input rows stay in L1 across the tiles; fewer
/// restarts than shorter chunks).
const CHUNK: usize = 32;

/// How pixel `i` of a [`cols3`] chunk reuses the columns of pixel `i − 1`: 1 = its columns
/// 0 and 1 are the previous pixel's columns 1 and 2 (stride 1), 2 = its column 0 is the
/// previous column 2 (stride 2), 3 = none reused.
#[inline(always)]
fn col_shift(cur: &[usize; 9], prev: &[usize; 9]) -> u8 {
    // Column kx of a pixel is the tap rows (kx, 3 + kx, 6 + kx); equal indirection
    // entries read equal bytes, so a column with the same three entries is the same
    // column.
    let same = |a: usize, b: usize| cur[a] == prev[b] && cur[3 + a] == prev[3 + b] && cur[6 + a] == prev[6 + b];
    if same(0, 1) && same(1, 2) {
        1
    } else if same(0, 2) {
        2
    } else {
        3
    }
}

/// The 3×3 kernel on the `kr = 4` (i8 weights) format, by columns: a column is the three
/// tap rows `(kx, 3 + kx, 6 + kx)` of one pixel, built once as dwords
/// `(x[ky=0][c], x[1][c], x[2][c], any)` by `vpermt2b` and multiplied with `vpdpbusd` by
/// the weights `(w[kx], w[3 + kx], w[6 + kx], 0)` (rearranged once per tile and chunk from
/// the packed quads). Neighbouring output pixels share columns (two of three at stride 1,
/// one at stride 2): a pixel whose column's three row pointers equal those of a column of
/// the previous pixel reuses it ([`col_shift`]), so each pixel builds only its new
/// columns, and every pixel costs three `vpdpbusd` per 16 channels.
///
/// # Safety
/// As [`dwconv`], with 9 taps and a `kr = 4` filter.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn cols3<const FLIP: bool>(args: &DwconvArgs, stage: &Stage) {
    let tile_bytes = DwPackFormat { ct: CT, kr: 4 }.tile_bytes(9);
    let mut rows = [[core::ptr::null::<u8>(); 9]; CHUNK];
    let mut shift = [3u8; CHUNK];
    // The common ONNX stage (u8 output, whole range, every Fp32 scale below 1) gets its
    // own instance: no per-pixel branches on the stage.
    let u8_fast = stage.fast_fp32 && stage.below_one && stage.full_range && args.out.kind == OutputKind::U8;
    let mut p0 = 0;
    while p0 < args.pixels {
        let n = CHUNK.min(args.pixels - p0);
        for i in 0..n {
            // SAFETY: pixel p0 + i < pixels: its 9 entries exist, and pixel p0 + i − 1's
            // when i > 0.
            let cur = unsafe { &*args.indirection.add((p0 + i) * 9).cast::<[usize; 9]>() };
            let sh = if i == 0 {
                3
            } else {
                // SAFETY: as above.
                col_shift(cur, unsafe { &*args.indirection.add((p0 + i - 1) * 9).cast::<[usize; 9]>() })
            };
            shift[i] = sh;
            // Only the columns the pixel builds (the last `sh`) are resolved.
            let resolve = |o: usize| if o == DW_ZERO_TAP { args.zero } else { args.input.wrapping_add(o) };
            for kx in 3 - sh as usize..3 {
                for ky in 0..3 {
                    rows[i][3 * ky + kx] = resolve(cur[3 * ky + kx]);
                }
            }
        }
        let (mut c0, mut wt) = (0, args.weights);
        while c0 < args.channels {
            let rem = CT.min(args.channels - c0);
            // SAFETY: forwarded; NU = rem.div_ceil(16) vectors cover the tile, `wt` is its
            // packed tile, rows[..n] the chunk's tap rows.
            unsafe {
                match (rem.div_ceil(16), u8_fast) {
                    (1, false) => cols3_tile::<1, FLIP, false>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (2, false) => cols3_tile::<2, FLIP, false>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (3, false) => cols3_tile::<3, FLIP, false>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (_, false) => cols3_tile::<4, FLIP, false>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (1, true) => cols3_tile::<1, FLIP, true>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (2, true) => cols3_tile::<2, FLIP, true>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (3, true) => cols3_tile::<3, FLIP, true>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                    (_, true) => cols3_tile::<4, FLIP, true>(args, stage, p0, n, c0, rem, wt, &rows, &shift),
                }
            }
            c0 += CT;
            wt = wt.wrapping_add(tile_bytes);
        }
        p0 += n;
    }
}

/// `vpermt2b` indexes gathering, from quads 0 (`a`) and 1 (`b`) of the packed `kr = 4`
/// tile (dword `i` = taps `4q .. 4q + 4` of channel `i`), the column weights of
/// `kx` = 0 (taps 0, 3, 6) and 1 (taps 1, 4, 7), and of `kx` = 2 the first two (taps 2,
/// 5; tap 8 comes from quad 2).
static COLW_INDEX: [[u8; 64]; 3] = {
    let mut t = [[0u8; 64]; 3];
    let mut i = 0;
    while i < 16 {
        let d = 4 * i as u8;
        t[0][4 * i] = d;
        t[0][4 * i + 1] = d + 3;
        t[0][4 * i + 2] = 64 + d + 2;
        t[1][4 * i] = d + 1;
        t[1][4 * i + 1] = 64 + d;
        t[1][4 * i + 2] = 64 + d + 3;
        t[2][4 * i] = d + 2;
        t[2][4 * i + 1] = 64 + d + 1;
        i += 1;
    }
    t
};

/// `vpermt2b` indexes of a column: from `[a | b]` (32 channels of rows ky = 0 and 1) and
/// `c` (32 channels of row 2, low half), for `r` = 0 or 1 (channels `16r .. 16r + 16` of
/// the 32), dword `i` = `(a[16r+i], b[16r+i], c[16r+i], c[16r+i])` (the fourth byte meets
/// a zero weight).
static COL_INDEX: [[u8; 64]; 2] = dword_gather_index(64);

/// `vpermt2b` indexes that build, for `r` = 0 or 1, dword `i` = bytes `16r + i` of the
/// sources at offsets 0, 32, 64 and `fourth` (of the 128-byte `[a | b]` table).
const fn dword_gather_index(fourth: u8) -> [[u8; 64]; 2] {
    let mut t = [[0u8; 64]; 2];
    let mut r = 0;
    while r < 2 {
        let mut i = 0;
        while i < 16 {
            let c = (16 * r + i) as u8;
            t[r][4 * i] = c;
            t[r][4 * i + 1] = 32 + c;
            t[r][4 * i + 2] = 64 + c;
            t[r][4 * i + 3] = fourth + c;
            i += 1;
        }
        r += 1;
    }
    t
}

/// One chunk of `n` pixels from `p0` × one channel tile of [`cols3`].
///
/// # Safety
/// As [`cols3`]; `wt` is the packed tile of channel `c0`, `rem ≤ 16·NU` its channels,
/// `rows[i]` the nine tap rows of pixel `p0 + i` for `i < n`, `shift[i]` as [`col_shift`]
/// (3 for `i = 0`); `U8_FAST` only for a u8 output, whole range, `stage.fast_fp32` and
/// `stage.below_one`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn cols3_tile<const NU: usize, const FLIP: bool, const U8_FAST: bool>(
    args: &DwconvArgs,
    stage: &Stage,
    p0: usize,
    n: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
    rows: &[[*const u8; 9]; CHUNK],
    shift: &[u8; CHUNK],
) {
    // The column weights, channel order natural: wk[kx][r] dword i = channel 16r + i.
    let mut wk = [[_mm512_setzero_si512(); NU]; 3];
    {
        // SAFETY: 64 bytes of each static table.
        let ix: [__m512i; 3] = core::array::from_fn(|k| unsafe { _mm512_loadu_si512(COLW_INDEX[k].as_ptr().cast()) });
        for r in 0..NU {
            // SAFETY: the tile holds 3 quads × 64 channels × 4 bytes.
            let q: [__m512i; 3] = core::array::from_fn(|k| unsafe { _mm512_loadu_si512(wt.add(k * 4 * CT + 64 * r).cast()) });
            wk[0][r] = _mm512_maskz_permutex2var_epi8(0x7777_7777_7777_7777, q[0], ix[0], q[1]);
            wk[1][r] = _mm512_maskz_permutex2var_epi8(0x7777_7777_7777_7777, q[0], ix[1], q[1]);
            // Quad 2 holds (w8, 0, 0, 0) per channel (taps past 9 are packed as 0).
            wk[2][r] = _mm512_or_si512(
                _mm512_maskz_permutex2var_epi8(0x3333_3333_3333_3333, q[0], ix[2], q[1]),
                _mm512_slli_epi32::<16>(q[2]),
            );
        }
    }
    // SAFETY: 64 bytes of each static table.
    let cidx: [__m512i; 2] = core::array::from_fn(|k| unsafe { _mm512_loadu_si512(COL_INDEX[k].as_ptr().cast()) });
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let lmask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
    let full = rem >= 64;
    // A column from tap rows a, b, c (pixel row starts), NU vectors of 16 channels.
    let build = |a: *const u8, b: *const u8, c: *const u8| -> [__m512i; NU] {
        let mut x = [_mm512_setzero_si512(); NU];
        for h in 0..NU.div_ceil(2) {
            let m = (lmask >> (32 * h)) as __mmask32;
            let off = c0 + 32 * h;
            // SAFETY: bytes of channels c0 .. c0 + rem of each row (masked past unless the
            // tile is full).
            let (ab, cc) = unsafe {
                if full {
                    (
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_loadu_si256(a.add(off).cast())),
                            _mm256_loadu_si256(b.add(off).cast()),
                        ),
                        _mm512_castsi256_si512(_mm256_loadu_si256(c.add(off).cast())),
                    )
                } else {
                    (
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(m, a.wrapping_add(off).cast())),
                            _mm256_maskz_loadu_epi8(m, b.wrapping_add(off).cast()),
                        ),
                        _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(m, c.wrapping_add(off).cast())),
                    )
                }
            };
            let (ab, cc) = if FLIP { (_mm512_xor_si512(ab, flip), _mm512_xor_si512(cc, flip)) } else { (ab, cc) };
            for r in 0..2 {
                if 2 * h + r < NU {
                    x[2 * h + r] = _mm512_permutex2var_epi8(ab, cidx[r], cc);
                }
            }
        }
        x
    };

    // Output-stage constants (as [`tile`]).
    let out = &args.out;
    let mut masks = [0 as __mmask16; NU];
    let mut colo = [_mm512_setzero_si512(); NU];
    let mut scale = [_mm512_setzero_ps(); NU];
    for v in 0..NU {
        masks[v] = lane_mask(rem, v);
        // SAFETY: col_offset has `channels` entries; masked-off lanes are not read.
        colo[v] = unsafe { _mm512_maskz_loadu_epi32(masks[v], out.col_offset.wrapping_add(c0 + 16 * v)) };
    }
    let (fast_fp32, below_one, full_range) =
        if U8_FAST { (true, true, true) } else { (stage.fast_fp32, stage.below_one, stage.full_range) };
    if fast_fp32 {
        for v in 0..NU {
            // SAFETY: scale has `channels` entries in Fp32 mode; masked lanes unread.
            scale[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(c0 + 16 * v)) };
        }
    }
    let fast_i32 = !U8_FAST && out.kind == OutputKind::I32;
    let (lo, hi) = (out.qmin - out.out_zero_point, out.qmax - out.out_zero_point);
    let lo_f = _mm512_set1_ps(lo as f32);
    let hi_f = _mm512_set1_ps(hi as f32);
    let zp16 = _mm512_set1_epi16(out.out_zero_point as i16);
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let signed = !U8_FAST && out.kind == OutputKind::I8;
    let (qmin8, qmax8) = (_mm512_set1_epi8(out.qmin as i8), _mm512_set1_epi8(out.qmax as i8));
    let stride = args.output_pixel_stride;

    let mut cols = [[_mm512_setzero_si512(); NU]; 3];
    for i in 0..n {
        let r = &rows[i];
        match shift[i] {
            1 => {
                cols[0] = cols[1];
                cols[1] = cols[2];
                cols[2] = build(r[2], r[5], r[8]);
            }
            2 => {
                cols[0] = cols[2];
                cols[1] = build(r[1], r[4], r[7]);
                cols[2] = build(r[2], r[5], r[8]);
            }
            _ => {
                cols[0] = build(r[0], r[3], r[6]);
                cols[1] = build(r[1], r[4], r[7]);
                cols[2] = build(r[2], r[5], r[8]);
            }
        }
        let mut acc = colo;
        for v in 0..NU {
            acc[v] = _mm512_dpbusd_epi32(acc[v], cols[0][v], wk[0][v]);
            acc[v] = _mm512_dpbusd_epi32(acc[v], cols[1][v], wk[1][v]);
            acc[v] = _mm512_dpbusd_epi32(acc[v], cols[2][v], wk[2][v]);
        }
        let p = p0 + i;
        if fast_fp32 {
            // As in [`tile`].
            let mut q = [_mm512_setzero_si512(); 4];
            for v in 0..NU {
                let x = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[v]), scale[v]);
                let x = if below_one { x } else { _mm512_min_ps(_mm512_max_ps(x, lo_f), hi_f) };
                q[v] = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            }
            let ab = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zp16);
            let cd = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zp16);
            let bytes = if signed {
                let b = _mm512_packs_epi16(ab, cd);
                if full_range { b } else { _mm512_min_epi8(_mm512_max_epi8(b, qmin8), qmax8) }
            } else {
                let b = _mm512_packus_epi16(ab, cd);
                if full_range { b } else { _mm512_min_epu8(_mm512_max_epu8(b, qmin8), qmax8) }
            };
            let bytes = _mm512_permutexvar_epi32(order, bytes);
            let c = args.output.wrapping_add(p * stride + c0);
            // SAFETY: pixel p < pixels, channels c0 .. c0 + rem < channels (masked past).
            unsafe {
                if full {
                    _mm512_storeu_si512(c.cast(), bytes)
                } else {
                    _mm512_mask_storeu_epi8(c.cast(), lmask, bytes)
                }
            }
        } else if fast_i32 {
            let c = args.output.cast::<i32>().wrapping_add(p * stride + c0);
            for v in 0..NU {
                // SAFETY: pixel p, channels c0+16v.. < channels (masked).
                unsafe { _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], acc[v]) };
            }
        } else {
            // SAFETY: forwarded contract; pixel p < pixels.
            unsafe { epilogue::<NU, 1>(args, p, 1, c0, rem, &[acc]) };
        }
    }
}

/// The output stage's call-wide facts, derived once per call.
struct Stage {
    /// The vectorised `Fp32` requantization applies (u8/i8 output, clamp bounds within
    /// ±2^24 of the zero point, every scale finite: then no product is NaN).
    fast_fp32: bool,
    /// ... and every scale is below 1 (no float clamp needed, see [`tile`]).
    below_one: bool,
    /// The clamp is the output type's whole range.
    full_range: bool,
}

impl Stage {
    /// # Safety
    /// `args` satisfies the [`DwconvArgs`] contract.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    unsafe fn new(args: &DwconvArgs) -> Stage {
        let out = &args.out;
        let requant = matches!(out.kind, OutputKind::U8 | OutputKind::I8);
        let (lo, hi) = (out.qmin as i64 - out.out_zero_point as i64, out.qmax as i64 - out.out_zero_point as i64);
        let mut fast_fp32 = requant
            && out.mode == RequantMode::Fp32
            && out.qmin <= out.qmax
            && (-(1 << 24)..=(1 << 24)).contains(&lo)
            && hi <= 1 << 24;
        let mut below_one = fast_fp32;
        if fast_fp32 {
            let one = _mm512_set1_ps(1.0);
            let mut c = 0;
            while c < args.channels {
                let m = lane_mask(args.channels - c, 0);
                // SAFETY: scale has `channels` entries in Fp32 mode; masked lanes unread.
                let s = unsafe { _mm512_maskz_loadu_ps(m, out.scale.wrapping_add(c)) };
                fast_fp32 &= _mm512_mask_cmp_ps_mask::<_CMP_ORD_Q>(m, _mm512_sub_ps(s, s), s) == m;
                below_one &= _mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(m, s, one) == m;
                c += 16;
            }
        }
        let full_range = if out.kind == OutputKind::I8 {
            (out.qmin, out.qmax) == (-128, 127)
        } else {
            (out.qmin, out.qmax) == (0, 255)
        };
        Stage { fast_fp32, below_one: below_one && fast_fp32, full_range }
    }
}

/// One pixel block × one channel tile: the sums (from `col_offset`) and the output
/// stage. The i32 output and the `Fp32` requantization (the common stages) finish here;
/// the others go through [`epilogue`].
///
/// # Safety
/// As [`dwconv`]; `wt` is the packed tile of channel `c0`, `rem ≤ 16·NU`, `npx ≤ P`,
/// `row(i, t)` the row of tap `t` of pixel `p0 + min(i, npx − 1)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn tile<const T: usize, const KR: usize, const NU: usize, const P: usize, const FLIP: bool>(
    args: &DwconvArgs,
    stage: &Stage,
    taps: usize,
    p0: usize,
    npx: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
    row: impl Fn(usize, usize) -> *const u8 + Copy,
) {
    let out = &args.out;
    let mut masks = [0 as __mmask16; NU];
    let mut colo = [_mm512_setzero_si512(); NU];
    let mut scale = [_mm512_setzero_ps(); NU];
    for v in 0..NU {
        masks[v] = lane_mask(rem, v);
        // SAFETY: col_offset has `channels` entries; masked-off lanes are not read.
        colo[v] = unsafe { _mm512_maskz_loadu_epi32(masks[v], out.col_offset.wrapping_add(c0 + 16 * v)) };
    }
    let (fast_fp32, below_one, full_range) = (stage.fast_fp32, stage.below_one, stage.full_range);
    if fast_fp32 {
        for v in 0..NU {
            // SAFETY: scale has `channels` entries in Fp32 mode; masked lanes unread.
            scale[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(c0 + 16 * v)) };
        }
    }
    let fast_i32 = out.kind == OutputKind::I32;
    let (lo, hi) = (out.qmin - out.out_zero_point, out.qmax - out.out_zero_point);
    let lo_f = _mm512_set1_ps(lo as f32);
    let hi_f = _mm512_set1_ps(hi as f32);
    let zp16 = _mm512_set1_epi16(out.out_zero_point as i16);
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let lmask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
    let signed = out.kind == OutputKind::I8;
    let (qmin8, qmax8) = (_mm512_set1_epi8(out.qmin as i8), _mm512_set1_epi8(out.qmax as i8));
    let stride = args.output_pixel_stride;
    {
        // SAFETY: forwarded contract.
        let acc = unsafe {
            if KR == 2 {
                block::<T, NU, P, FLIP>(taps, c0, rem, wt, &colo, row)
            } else {
                block_quad::<T, NU, P, FLIP>(taps, c0, rem, wt, &colo, row)
            }
        };
        if fast_fp32 {
            // Results within [lo, hi] ⊂ [−383, 383] (or, with every scale below 1, the
            // exact i32 of round(acc·s): |acc·s| < 2^31) pack with saturation to i16,
            // take the zero point with a saturating add, pack with saturation to bytes
            // and clamp there: every saturation is monotone and its range contains
            // [qmin, qmax] (shifted by the zero point), so the result is
            // clamp(round(acc·s) + zp, qmin, qmax) exactly. One `vpermd` restores the
            // channel order the in-lane packs interleave; one store per pixel.
            for i in 0..P {
                if i >= npx {
                    break;
                }
                let mut q = [_mm512_setzero_si512(); 4];
                for v in 0..NU {
                    let x = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][v]), scale[v]);
                    let x = if below_one { x } else { _mm512_min_ps(_mm512_max_ps(x, lo_f), hi_f) };
                    q[v] = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                }
                let ab = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zp16);
                let cd = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zp16);
                let bytes = if signed {
                    let b = _mm512_packs_epi16(ab, cd);
                    if full_range { b } else { _mm512_min_epi8(_mm512_max_epi8(b, qmin8), qmax8) }
                } else {
                    let b = _mm512_packus_epi16(ab, cd);
                    if full_range { b } else { _mm512_min_epu8(_mm512_max_epu8(b, qmin8), qmax8) }
                };
                let bytes = _mm512_permutexvar_epi32(order, bytes);
                let c = args.output.wrapping_add((p0 + i) * stride + c0);
                // SAFETY: pixel p0+i, channels c0 .. c0 + rem < channels (masked past).
                unsafe {
                    if rem >= 64 {
                        _mm512_storeu_si512(c.cast(), bytes)
                    } else {
                        _mm512_mask_storeu_epi8(c.cast(), lmask, bytes)
                    }
                }
            }
        } else if fast_i32 {
            for i in 0..P {
                if i >= npx {
                    break;
                }
                let c = args.output.cast::<i32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    // SAFETY: pixel p0+i, channels c0+16v.. < channels (masked).
                    unsafe {
                        _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], acc[i][v])
                    };
                }
            }
        } else {
            // SAFETY: forwarded contract.
            unsafe { epilogue::<NU, P>(args, p0, npx, c0, rem, &acc) };
        }
    }
}

/// The sums plus `col_offset` (`colo`, the accumulators' start) of pixels
/// `p0 .. p0 + npx` (`npx ≤ P`) × channels `c0 .. c0 + rem` (`rem ≤ 16·NU`). Pixels past `npx` recompute the last one (no
/// branch in the tap loop); the caller stores only `npx`.
///
/// # Safety
/// As [`dwconv`]; `wt` is the packed tile of channel `c0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn block<const T: usize, const NU: usize, const P: usize, const FLIP: bool>(
    taps: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
    colo: &[__m512i; NU],
    row: impl Fn(usize, usize) -> *const u8,
) -> [[__m512i; NU]; P] {
    let lmask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
    let mut idx = [_mm512_setzero_si512(); NU];
    for (r, x) in idx.iter_mut().enumerate() {
        // SAFETY: 64 bytes of the static table.
        *x = unsafe { _mm512_loadu_si512(PAIR_INDEX[r].as_ptr().cast()) };
    }
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let mut acc = [*colo; P];
    let pairs = taps.div_ceil(2);
    for pr in 0..pairs {
        let t0 = 2 * pr;
        // An odd last pair has no second tap: re-read the first (its weight is 0).
        let t1 = if t0 + 1 < taps { t0 + 1 } else { t0 };
        let mut w = [_mm512_setzero_si512(); NU];
        for r in 0..NU {
            // SAFETY: pair `pr` of the tile holds 64 dwords (256 bytes).
            w[r] = unsafe { _mm512_loadu_si512(wt.add(pr * 4 * CT + 64 * r).cast()) };
        }
        for i in 0..P {
            // SAFETY: pix[i] < pixels, t0, t1 < taps; each row has `channels` bytes from
            // its start, so bytes c0 .. c0 + rem are readable (the rest masked).
            let (a, b) = unsafe {
                let r0 = row(i, t0).wrapping_add(c0);
                let r1 = row(i, t1).wrapping_add(c0);
                (_mm512_maskz_loadu_epi8(lmask, r0.cast()), _mm512_maskz_loadu_epi8(lmask, r1.cast()))
            };
            let (a, b) = if FLIP { (_mm512_xor_si512(a, flip), _mm512_xor_si512(b, flip)) } else { (a, b) };
            for r in 0..NU {
                let x = _mm512_maskz_permutex2var_epi8(PAIR_MASK, a, idx[r], b);
                acc[i][r] = _mm512_dpwssd_epi32(acc[i][r], x, w[r]);
            }
        }
    }
    acc
}

/// The `vpermt2b` indexes of the i8 (`kr = 4`) path: for half `h` (channels `32h ..
/// 32h+32`), word `w` of the result holds `(x[t][ch], x[t+1][ch])` with `ch` chosen so
/// that `vpunpcklwd`/`vpunpckhwd` of the two pair vectors (taps `t, t+1` and `t+2, t+3`)
/// give dwords `(x[t..t+4][c])` for channels `32h + d` and `32h + 16 + d` in order: in
/// 128-bit lane `L`, words `j < 4` take channel `4L + j`, words `4 + j` channel
/// `16 + 4L + j`.
static QUAD_INDEX: [[u8; 64]; 2] = {
    let mut t = [[0u8; 64]; 2];
    let mut h = 0;
    while h < 2 {
        let mut w = 0;
        while w < 32 {
            let (l, j) = (w / 8, w % 8);
            let ch = 32 * h + if j < 4 { 4 * l + j } else { 16 + 4 * l + (j - 4) };
            t[h][2 * w] = ch as u8;
            t[h][2 * w + 1] = (64 + ch) as u8;
            w += 1;
        }
        h += 1;
    }
    t
};

/// The `vpermt2b` indexes of the i8 path with pre-joined rows: the first table holds 32
/// channels of taps `t` (low half) and `t+1` (high half), the second of `t+2` and `t+3`;
/// for `r` = 0 or 1 (channels `16r .. 16r+16` of the 32), dword `i` gathers the four
/// taps' bytes of channel `16r + i`.
static JOIN_INDEX: [[u8; 64]; 2] = dword_gather_index(96);

/// [`block`] on the i8 (`kr = 4`) format: per tap quad, the four rows' bytes are paired
/// by `vpermt2b` (taps `t, t+1` and `t+2, t+3`), interleaved by word into dwords
/// `(x[t][c], …, x[t+3][c])` and multiplied by the packed i8 weights with `vpdpbusd`
/// (u8 × s8, four products summed into i32 without saturation) — two instructions
/// fewer per 16 channels and two taps than the i16 path.
///
/// # Safety
/// As [`block`], with a `kr = 4` packed tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn block_quad<const T: usize, const NU: usize, const P: usize, const FLIP: bool>(
    taps: usize,
    c0: usize,
    rem: usize,
    wt: *const u8,
    colo: &[__m512i; NU],
    row: impl Fn(usize, usize) -> *const u8,
) -> [[__m512i; NU]; P] {
    let lmask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
    const HALVES: [usize; 4] = [1, 1, 2, 2];
    let halves = HALVES[NU - 1];
    let mut idx = [_mm512_setzero_si512(); 2];
    for (h, x) in idx.iter_mut().enumerate().take(halves) {
        // SAFETY: 64 bytes of the static table.
        *x = unsafe { _mm512_loadu_si512(QUAD_INDEX[h].as_ptr().cast()) };
    }
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let mut acc = [*colo; P];
    let full = taps / 4;
    let mut jidx = [_mm512_setzero_si512(); 2];
    for (r, x) in jidx.iter_mut().enumerate() {
        // SAFETY: 64 bytes of the static table.
        *x = unsafe { _mm512_loadu_si512(JOIN_INDEX[r].as_ptr().cast()) };
    }
    // Two rows' 32 channels of one half in one zmm (low: `a`, high: `b`); masked past
    // the tile's channels.
    let join = |a: *const u8, b: *const u8, h: usize| -> __m512i {
        let m = (lmask >> (32 * h)) as __mmask32;
        // SAFETY: bytes of channels < rem only (masked; unmasked only for a full tile).
        let v = unsafe {
            if rem >= 64 {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(a.add(32 * h).cast())),
                    _mm256_loadu_si256(b.add(32 * h).cast()),
                )
            } else {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(m, a.wrapping_add(32 * h).cast())),
                    _mm256_maskz_loadu_epi8(m, b.wrapping_add(32 * h).cast()),
                )
            }
        };
        if FLIP { _mm512_xor_si512(v, flip) } else { v }
    };
    for q in 0..full {
        let mut w = [_mm512_setzero_si512(); NU];
        for r in 0..NU {
            // SAFETY: quad `q` of the tile holds 64 dwords (256 bytes).
            w[r] = unsafe { _mm512_loadu_si512(wt.add(q * 4 * CT + 64 * r).cast()) };
        }
        for i in 0..P {
            let rows: [*const u8; 4] = core::array::from_fn(|j| row(i, 4 * q + j).wrapping_add(c0));
            for h in 0..halves {
                let a = join(rows[0], rows[1], h);
                let b = join(rows[2], rows[3], h);
                for r in 0..2 {
                    if 2 * h + r < NU {
                        let x = _mm512_permutex2var_epi8(a, jidx[r], b);
                        acc[i][2 * h + r] = _mm512_dpbusd_epi32(acc[i][2 * h + r], x, w[2 * h + r]);
                    }
                }
            }
        }
    }
    let left = taps - 4 * full;
    if left > 0 {
        let q = full;
        let mut w = [_mm512_setzero_si512(); NU];
        for r in 0..NU {
            // SAFETY: the last quad of the tile holds 64 dwords (256 bytes).
            w[r] = unsafe { _mm512_loadu_si512(wt.add(q * 4 * CT + 64 * r).cast()) };
        }
        for i in 0..P {
            if left == 1 {
                // One tap (9 and 25 taps end so): its bytes zero-extended to dwords
                // `(x, 0, 0, 0)`, 16 channels per `vpmovzxbd`, against weights `(w, 0, 0, 0)`.
                // SAFETY: as above, for tap 4q.
                let row = row(i, 4 * q).wrapping_add(c0);
                for r in 0..NU {
                    let m16 = (lmask >> (16 * r)) as __mmask16;
                    // SAFETY: bytes of channels < rem only (masked).
                    let mut b = unsafe { _mm_maskz_loadu_epi8(m16, row.wrapping_add(16 * r).cast()) };
                    if FLIP {
                        b = _mm_xor_si128(b, _mm512_castsi512_si128(flip));
                    }
                    acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], _mm512_cvtepu8_epi32(b), w[r]);
                }
                continue;
            }
            let mut x = [_mm512_setzero_si512(); 4];
            for j in 0..4 {
                if j >= left {
                    // Past the count: any bytes (their weights are 0); reuse the first row.
                    x[j] = x[0];
                    continue;
                }
                // SAFETY: as above, for tap 4q + j < taps.
                x[j] = unsafe {
                    _mm512_maskz_loadu_epi8(lmask, row(i, 4 * q + j).wrapping_add(c0).cast())
                };
                if FLIP {
                    x[j] = _mm512_xor_si512(x[j], flip);
                }
            }
            for h in 0..halves {
                let p = _mm512_permutex2var_epi8(x[0], idx[h], x[1]);
                let qv = _mm512_permutex2var_epi8(x[2], idx[h], x[3]);
                acc[i][2 * h] = _mm512_dpbusd_epi32(acc[i][2 * h], _mm512_unpacklo_epi16(p, qv), w[2 * h]);
                if 2 * h + 1 < NU {
                    acc[i][2 * h + 1] =
                        _mm512_dpbusd_epi32(acc[i][2 * h + 1], _mm512_unpackhi_epi16(p, qv), w[2 * h + 1]);
                }
            }
        }
    }
    acc
}

/// Runs the output stage on `npx` pixels × `rem` channels (`col_offset` already added).
///
/// # Safety
/// As [`block`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline(never)]
#[allow(clippy::needless_range_loop)]
unsafe fn epilogue<const NU: usize, const P: usize>(
    args: &DwconvArgs,
    p0: usize,
    npx: usize,
    c0: usize,
    rem: usize,
    acc: &[[__m512i; NU]; P],
) {
    let out = &args.out;
    let mut masks = [0 as __mmask16; NU];
    for (v, m) in masks.iter_mut().enumerate() {
        *m = lane_mask(rem, v);
    }
    // `col_offset` is already in the accumulators.
    let row = |i: usize| -> [__m512i; NU] { acc[i] };
    let stride = args.output_pixel_stride;
    match (out.kind, out.mode) {
        (OutputKind::I32, _) => {
            for i in 0..npx {
                let r = row(i);
                let c = args.output.cast::<i32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    // SAFETY: pixel p0+i, channels c0+16v.. < channels (masked).
                    unsafe { _mm512_mask_storeu_epi32(c.wrapping_add(16 * v), masks[v], r[v]) };
                }
            }
        }
        (OutputKind::F32, _) => {
            let mut scale = [_mm512_setzero_ps(); NU];
            let mut bias = [_mm512_setzero_ps(); NU];
            for v in 0..NU {
                // SAFETY: scale has `channels` entries for F32; bias_f32 too when non-null.
                unsafe {
                    scale[v] = _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(c0 + 16 * v));
                    if !out.bias_f32.is_null() {
                        bias[v] = _mm512_maskz_loadu_ps(masks[v], out.bias_f32.wrapping_add(c0 + 16 * v));
                    }
                }
            }
            for i in 0..npx {
                let r = row(i);
                let c = args.output.cast::<f32>().wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    // Multiply, then add (no FMA), `+ 0.0` without a bias: the reference.
                    let y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(r[v]), scale[v]), bias[v]);
                    // SAFETY: as for I32.
                    unsafe { _mm512_mask_storeu_ps(c.wrapping_add(16 * v), masks[v], y) };
                }
            }
        }
        (OutputKind::U8 | OutputKind::I8, mode) => {
            let zp = out.out_zero_point as i64;
            let (lo, hi) = (out.qmin as i64 - zp, out.qmax as i64 - zp);
            const EXACT: i64 = 1 << 24;
            if out.qmin > out.qmax || (mode == RequantMode::Fp32 && !(-EXACT <= lo && hi <= EXACT)) {
                // Outside the contract's clamp bounds: the scalar reference per element.
                let mut lanes = [0i32; 16];
                for i in 0..npx {
                    let r = row(i);
                    for v in 0..NU {
                        // SAFETY: `lanes` holds 16 i32.
                        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), r[v]) };
                        for (jj, &a) in lanes.iter().enumerate().take(rem.saturating_sub(16 * v).min(16)) {
                            // SAFETY: pixel p0+i < pixels, channel < channels.
                            unsafe { store_one(args, p0 + i, c0 + 16 * v + jj, a) };
                        }
                    }
                }
                return;
            }
            if mode == RequantMode::Fp32 {
                // As the GEMM epilogue: clamp the float to the small integer bounds
                // before converting (rounding is monotone), NaN → 0.
                let lo_f = _mm512_set1_ps(lo as f32);
                let hi_f = _mm512_set1_ps(hi as f32);
                let mut scale = [_mm512_setzero_ps(); NU];
                for v in 0..NU {
                    // SAFETY: scale has `channels` entries in Fp32 mode.
                    scale[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], out.scale.wrapping_add(c0 + 16 * v)) };
                }
                let all_finite =
                    scale.iter().all(|&s| _mm512_cmp_ps_mask::<_CMP_ORD_Q>(_mm512_sub_ps(s, s), s) == 0xffff);
                // The four vectors' results, all within [lo, hi] ⊂ [−383, 383], pack
                // exactly to i16, take the zero point there, and pack to bytes (values
                // in [qmin, qmax], inside the output type); one `vpermd` restores the
                // channel order the in-lane packs interleave. One store per pixel (masked
                // only in a partial tile).
                let zp16 = _mm512_set1_epi16(out.out_zero_point as i16);
                let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
                let lmask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
                let signed = out.kind == OutputKind::I8;
                for i in 0..npx {
                    let r = row(i);
                    let mut q = [_mm512_setzero_si512(); 4];
                    for v in 0..NU {
                        let x = _mm512_mul_ps(_mm512_cvtepi32_ps(r[v]), scale[v]);
                        let x = if all_finite {
                            x
                        } else {
                            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), x)
                        };
                        let x = _mm512_min_ps(_mm512_max_ps(x, lo_f), hi_f);
                        q[v] = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                    }
                    let ab = _mm512_add_epi16(_mm512_packs_epi32(q[0], q[1]), zp16);
                    let cd = _mm512_add_epi16(_mm512_packs_epi32(q[2], q[3]), zp16);
                    let bytes = if signed { _mm512_packs_epi16(ab, cd) } else { _mm512_packus_epi16(ab, cd) };
                    let bytes = _mm512_permutexvar_epi32(order, bytes);
                    let c = args.output.wrapping_add((p0 + i) * stride + c0);
                    // SAFETY: pixel p0+i, channels c0 .. c0 + rem < channels (masked past).
                    unsafe {
                        if rem >= 64 {
                            _mm512_storeu_si512(c.cast(), bytes)
                        } else {
                            _mm512_mask_storeu_epi8(c.cast(), lmask, bytes)
                        }
                    }
                }
                return;
            }
            let single = mode == RequantMode::SingleRounding;
            let bounds = Bounds {
                zp: _mm512_set1_epi64(zp),
                qmin: _mm512_set1_epi64(out.qmin as i64),
                qmax: _mm512_set1_epi64(out.qmax as i64),
            };
            let mut cols = [[FixedCols::double(_mm512_setzero_si512()); 2]; NU];
            let mut any_shl = false;
            for v in 0..NU {
                for h in 0..2 {
                    let m8 = (masks[v] >> (8 * h)) as __mmask8;
                    // SAFETY: qmult has `channels` entries in the fixed-point modes; one
                    // {multiplier, shift} per i64 lane; masked-off lanes are not read.
                    let q = unsafe {
                        _mm512_maskz_loadu_epi64(m8, out.qmult.wrapping_add(c0 + 16 * v + 8 * h).cast())
                    };
                    cols[v][h] = if single { FixedCols::single(q) } else { FixedCols::double(q) };
                    any_shl |= cols[v][h].shl != 0;
                }
            }
            for i in 0..npx {
                let r = row(i);
                let c = args.output.wrapping_add((p0 + i) * stride + c0);
                for v in 0..NU {
                    let a_lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(r[v]));
                    let a_hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(r[v]));
                    let (q_lo, q_hi) = if single {
                        (requant_single(a_lo, &cols[v][0], any_shl, &bounds), requant_single(a_hi, &cols[v][1], any_shl, &bounds))
                    } else {
                        (requant_double(a_lo, &cols[v][0], any_shl, &bounds), requant_double(a_hi, &cols[v][1], any_shl, &bounds))
                    };
                    let bytes = _mm_unpacklo_epi64(_mm512_cvtepi64_epi8(q_lo), _mm512_cvtepi64_epi8(q_hi));
                    // SAFETY: as above.
                    unsafe { _mm_mask_storeu_epi8(c.wrapping_add(16 * v).cast(), masks[v], bytes) };
                }
            }
        }
    }
}

/// Declares the plain entry points around the `#[target_feature]` kernel.
macro_rules! entry {
    ($name:ident, $t:literal, $kr:literal, $flip:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`DwconvArgs`] contract for the kernel's packed format
        /// (and the tap count it is specialised for), and the CPU supports AVX-512
        /// F/BW/VL/VNNI/VBMI (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &DwconvArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { dwconv::<$t, $kr, $flip>(args) }
        }
    };
}

entry!(dw_up64_u8a, 0, 2, false, "Any tap count, i16 weights, u8 activations.");
entry!(dw_up64_i8a, 0, 2, true, "Any tap count, i16 weights, i8 activations.");
entry!(dw_9p64_u8a, 9, 2, false, "9 taps (3×3), i16 weights, u8 activations.");
entry!(dw_9p64_i8a, 9, 2, true, "9 taps (3×3), i16 weights, i8 activations.");
entry!(dw_25p64_u8a, 25, 2, false, "25 taps (5×5), i16 weights, u8 activations.");
entry!(dw_25p64_i8a, 25, 2, true, "25 taps (5×5), i16 weights, i8 activations.");
entry!(dw_up64c4_u8a, 0, 4, false, "Any tap count, i8 weights, u8 activations.");
entry!(dw_up64c4_i8a, 0, 4, true, "Any tap count, i8 weights, i8 activations.");
entry!(dw_9p64c4_u8a, 9, 4, false, "9 taps (3×3), i8 weights, u8 activations.");
entry!(dw_9p64c4_i8a, 9, 4, true, "9 taps (3×3), i8 weights, i8 activations.");
entry!(dw_25p64c4_u8a, 25, 4, false, "25 taps (5×5), i8 weights, u8 activations.");
entry!(dw_25p64c4_i8a, 25, 4, true, "25 taps (5×5), i8 weights, i8 activations.");

const fn desc(
    name: &'static str,
    taps: Option<usize>,
    kr: usize,
    u8a: crate::DwconvUkernelFn,
    i8a: crate::DwconvUkernelFn,
) -> DwconvUkernel {
    DwconvUkernel {
        name,
        isa: Isa::Avx512Vnni,
        extra_features: &["avx512vbmi"],
        taps,
        format: DwPackFormat { ct: CT, kr },
        a_offset: [0, 128],
        run: [Some(u8a), Some(i8a)],
    }
}

/// `qx8_dwconv_up64__avx512vnni`: any tap count, 64-channel tiles, any weights.
pub const QX8_DWCONV_UP64__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_up64__avx512vnni", None, 2, dw_up64_u8a, dw_up64_i8a);
/// `qx8_dwconv_9p64__avx512vnni`: 3×3 filters (the tap loop unrolled), any weights.
pub const QX8_DWCONV_9P64__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_9p64__avx512vnni", Some(9), 2, dw_9p64_u8a, dw_9p64_i8a);
/// `qx8_dwconv_25p64__avx512vnni`: 5×5 filters, any weights.
pub const QX8_DWCONV_25P64__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_25p64__avx512vnni", Some(25), 2, dw_25p64_u8a, dw_25p64_i8a);
/// `qx8_dwconv_up64c4__avx512vnni`: any tap count, centred weights within i8.
pub const QX8_DWCONV_UP64C4__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_up64c4__avx512vnni", None, 4, dw_up64c4_u8a, dw_up64c4_i8a);
/// `qx8_dwconv_9p64c4__avx512vnni`: 3×3 filters, centred weights within i8.
pub const QX8_DWCONV_9P64C4__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_9p64c4__avx512vnni", Some(9), 4, dw_9p64c4_u8a, dw_9p64c4_i8a);
/// `qx8_dwconv_25p64c4__avx512vnni`: 5×5 filters, centred weights within i8.
pub const QX8_DWCONV_25P64C4__AVX512VNNI: DwconvUkernel =
    desc("qx8_dwconv_25p64c4__avx512vnni", Some(25), 4, dw_25p64c4_u8a, dw_25p64c4_i8a);

/// AVX-512 depthwise kernels, least preferred first (dispatch takes the last one that
/// handles the tap count and the filter's weights).
pub const DWCONV_KERNELS: &[DwconvUkernel] = &[
    QX8_DWCONV_UP64__AVX512VNNI,
    QX8_DWCONV_9P64__AVX512VNNI,
    QX8_DWCONV_25P64__AVX512VNNI,
    QX8_DWCONV_UP64C4__AVX512VNNI,
    QX8_DWCONV_9P64C4__AVX512VNNI,
    QX8_DWCONV_25P64C4__AVX512VNNI,
];
