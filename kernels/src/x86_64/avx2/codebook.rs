//! Table-lookup codebook tiles on AVX2: nibble split + `vpshufb` decode (as the AVX-512
//! tiles), then `vpmaddubsw` (u8 activations × i8 weights → i16 pairs) and `vpmaddwd`
//! by ones into i32.
//!
//! Two kernels: `vpmaddubsw` (fast, tables within ±64) and an exact one for any i8 table
//! (IQ4_NL-style codebooks reach 127) that sign-extends the decoded weights to i16 and
//! multiplies with `vpmaddwd`. The same exact tile also decodes through an i16 table
//! (grids beyond int8: PoT-5, 4-bit log) from two byte planes.
//!
//! `vpmaddubsw` saturates its i16 pair sums. The kernel is registered with
//! `max_abs_table: Some(64)`: with every table value within ±64 a pair is at most
//! `2·255·64 = 32640 ≤ 32767` (DESIGN.md §2), so nothing saturates and the result is
//! exact; the driver picks it only for such tables (PoT-4: 64, APoT-4: 10).
//!
//! The split-table tiles (`qx8_codebook{4,5}_gemm_4x16c8_split__avx2`) keep that decode
//! and `vpmaddubsw` for every i8 table (−128..=127, `max_abs_table: None`): each table
//! value is split as `w = l + 32·h`, `l = w & 31` (0..=31), `h = w >> 5` (−4..=3), two
//! derived 16-byte tables looked up by the same nibble indexes, and `a·w = a·l + 32·a·h`
//! for the u8 activation `a` (i8 ones flipped by `XOR 0x80`). A `vpmaddubsw(a, l)` pair
//! is at most `2·255·31 = 15810`, so the K 0–3 and K 4–7 pairs of a group add in i16
//! (`≤ 31620 ≤ 32767`) before one `vpmaddwd` by ones widens them; a `vpmaddubsw(a, h)`
//! pair is at most `2·255·4 = 2040` in magnitude, a group `≤ 4080`, so the `h` products
//! of 8 groups sum in i16 (`≤ 32640`) and are widened once per 8 groups by `vpmaddwd`
//! with 32. Nothing saturates and every i16 sum is exact, so the tile is exact.
//!
//! Why the table and not the activations is split (the first design split `a = l + 64·h`
//! the same way, with the same i16 sums): the table split costs four more `vpshufb` per
//! group, shared by every row of the tile, where the activation split costs six ALU
//! operations per row and group (`vpand` ×2, `vpandn` ×2, `vpsrlw` ×2). By count, at M = 1
//! 30 against 32 vector ALU uops per group of 8 K × 16 columns (the ±64 tile: 24), both
//! with 10 multiplies (±64 tile: 8); from M = 2 on the table split is clearly ahead. (On
//! the noisy shared host the two were not told apart at M = 1.)
//!
//! The sign tiles (`qx8_codebook{4,5}_gemm_2x32c8_sign__avx2`, tables within ±127, so
//! every learned 4-bit codebook without −128) make the activations, not the table, fit
//! `vpmaddubsw`: `s·w = |s|·(w·sign s)` for the signed activation `s`, one `vpsignb` per
//! lookup; a pair is at most `2·128·127 = 32512`. They replace the split tiles in
//! dispatch (the packer's i8 tables stay within ±127), which remain exact for −128 too.
//! Per group of 8 K × 16 columns at M = 1 that is 26 vector uops (the split tile: 32).
//! Two things keep the GEMV near that count:
//! - `s` and `|s|` are made by the driver once per call (the sign-split rows of
//!   [`crate::pack::codebook::sign_split_row`]), not per tile: that work, its stores and
//!   the chunked K loop around it cost the tile 8 % at M = 1.
//! - Panels are 32 columns wide, so one row's four activation broadcasts per group serve
//!   four column vectors, not two. On Zen 3 a `vpbroadcastd` from memory also takes a
//!   vector pipe: removing the four of a 16-column group from a loop in L1 took it from
//!   8.2 to 7.5 cycles.
//!
//! At M = 1 the 4-bit sign kernel has a GEMV entry, [`sign_gemv`]: one `asm!` loop
//! (`walk32`) walks the panels (no call, setup and epilogue per panel) and signs the
//! weights by `XOR` with the row's sign masks instead of `vpsignb` (which Zen 3 runs on
//! two of its four vector pipes), with a per-row correction.
//!
//! Measured on Zen 3 (GEMV 4096², one thread): 89 GOPS before these two changes, 103
//! after; 107–108 with the one-row loop in `asm!` (for its instruction order) and the
//! vector epilogue (`store_vectors`); 109–112 with the GEMV entry. Against the split tile (same run,
//! N = K = 4096) the sign tile is 22 % faster at M = 1, 10 % at M = 2, 5 % at M = 4 and
//! 3 % at M = 8, so it is preferred for the tables it holds. The decoded path takes over
//! from M = 10 either way.

use core::arch::x86_64::*;

use crate::generic::codebook::{a_quads16, store_tile};
use crate::pack::codebook::{SIGN_SPLIT_BYTES_PER_K, SIGN_SPLIT_GROUP_BYTES};
use crate::types::{CodebookArgs, CodebookFamily, CodebookFormat, CodebookUkernel, GemmArgs, Isa};
use crate::x86_64::avx512vnni::codebook::a_tail_words;

/// The `MR × 16` tile (two ymm columns of 8).
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)·64` bytes, 16 table bytes; writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ MR`, `n ≤ 16`, every table value
/// within ±64; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn codebook_tile<const MR: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ the row count.
    unsafe {
        match args.m {
            1 => tile::<1, FLIP, B5>(args),
            2 => tile::<2, FLIP, B5>(args),
            _ => tile::<MR, FLIP, B5>(args),
        }
    }
}

/// 32 bits of a bit plane (bit `i` for byte `i` of a ymm) expanded to a byte mask.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn expand_bits(bits: u32) -> __m256i {
    // Byte i takes mask byte i / 8, then tests its bit i % 8.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    spread_bits(_mm256_set1_epi32(bits as i32), spread, sel)
}

/// Byte mask from bit-plane bytes held in each lane of `planes`: byte `i` is all ones
/// when bit `sel[i]` (one bit set) of byte `spread[i]` of its lane is set.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn spread_bits(planes: __m256i, spread: __m256i, sel: __m256i) -> __m256i {
    _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(planes, spread), sel), sel)
}

/// The lookup indexes of column vector `v` (columns `8v..8v+8`) of one K group of an
/// `NR`-column panel (`p`: `4·NR` nibble bytes, then with `B5` the `NR`-byte bit plane):
/// the low nibbles (K 0–3) and the high ones (K 4–7), four bytes per column, and with
/// `B5` each one's fifth-bit byte mask (codes 16–31; zero without `B5`). `mask` = `0x0F`
/// bytes.
///
/// # Safety
/// `p` is readable for the group (`4·NR` bytes, `5·NR` with `B5`), `v < NR / 8`; the CPU
/// supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn group_indexes<const NR: usize, const B5: bool>(p: *const u8, v: usize, mask: __m256i) -> [(__m256i, __m256i); 2] {
    // SAFETY: within the group (caller): bytes 32v..32v+32 and the plane's NR.
    let (raw, ml, mh) = unsafe {
        let raw = _mm256_loadu_si256(p.add(32 * v).cast());
        if B5 {
            let plane = p.add(NR * 4);
            (raw, plane.add(4 * v).cast::<u32>().read_unaligned(), plane.add(NR / 2 + 4 * v).cast::<u32>().read_unaligned())
        } else {
            (raw, 0, 0)
        }
    };
    let il = _mm256_and_si256(raw, mask);
    let ih = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
    if B5 { [(il, expand_bits(ml)), (ih, expand_bits(mh))] } else { [(il, _mm256_setzero_si256()), (ih, _mm256_setzero_si256())] }
}

/// The table bytes of `idx` (from [`group_indexes`]): `table` (codes 0–15, broadcast to
/// both lanes), with `B5` blended with `table_hi` (codes 16–31) where `idx.1` is set.
#[target_feature(enable = "avx2")]
#[inline]
fn lookup<const B5: bool>(table: __m256i, table_hi: __m256i, idx: (__m256i, __m256i)) -> __m256i {
    let w = _mm256_shuffle_epi8(table, idx.0);
    if B5 { _mm256_blendv_epi8(w, _mm256_shuffle_epi8(table_hi, idx.0), idx.1) } else { w }
}

/// Decodes one K group of a 16-column panel (as [`group_indexes`]) to i8 weights:
/// `wlo[v]` / `whi[v]` hold columns `8v..8v+8` × K 0–3 / 4–7, four bytes per column.
///
/// # Safety
/// As [`group_indexes`].
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn decode16<const B5: bool>(p: *const u8, table: __m256i, table_hi: __m256i, mask: __m256i, wlo: &mut [__m256i; 2], whi: &mut [__m256i; 2]) {
    for v in 0..2 {
        // SAFETY: forwarded.
        let [l, h] = unsafe { group_indexes::<16, B5>(p, v, mask) };
        wlo[v] = lookup::<B5>(table, table_hi, l);
        whi[v] = lookup::<B5>(table, table_hi, h);
    }
}

/// # Safety
/// As [`codebook_tile`], `m ≤ R`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile<const R: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    const NV: usize = 2;
    const NR: usize = 16;
    // 5-bit groups carry their bit plane after the nibbles.
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: reads stay within the contract's ranges (full groups: 8 bytes at
    // k0 ≤ k − 8; tail: k − k0 bytes; the panel's groups of 64 bytes); rows < m only.
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.cast()));
        let table_hi = if B5 { _mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.add(16).cast())) } else { table };
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(if FLIP { -128 } else { 0 });
        let zero = _mm256_setzero_si256();
        let mut acc = [[zero; NV]; R];
        let full = args.k / 8;
        let m = args.m;
        let decode = |p: *const u8, wlo: &mut [__m256i; NV], whi: &mut [__m256i; NV]| decode16::<B5>(p, table, table_hi, mask, wlo, whi);
        let step = |acc: &mut [__m256i; NV], alo: __m256i, ahi: __m256i, wlo: &[__m256i; NV], whi: &[__m256i; NV]| {
            for v in 0..NV {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(alo, wlo[v]), ones);
                let q = _mm256_madd_epi16(_mm256_maddubs_epi16(ahi, whi[v]), ones);
                acc[v] = _mm256_add_epi32(acc[v], _mm256_add_epi32(p, q));
            }
        };
        let mut wlo = [zero; NV];
        let mut whi = [zero; NV];
        for g in 0..full {
            decode(args.b.add(g * gb), &mut wlo, &mut whi);
            for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                let p = args.a.add(r * args.lda + 8 * g);
                let mut alo = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
                let mut ahi = _mm256_set1_epi32(p.add(4).cast::<i32>().read_unaligned());
                if FLIP {
                    alo = _mm256_xor_si256(alo, flip);
                    ahi = _mm256_xor_si256(ahi, flip);
                }
                step(acc_r, alo, ahi, &wlo, &whi);
            }
        }
        let kn = args.k - 8 * full;
        if kn > 0 {
            decode(args.b.add(full * gb), &mut wlo, &mut whi);
            for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                let (lo, hi) = a_tail_words::<FLIP>(args.a.add(r * args.lda + 8 * full), kn);
                step(acc_r, _mm256_set1_epi32(lo), _mm256_set1_epi32(hi), &wlo, &whi);
            }
        }
        store_vectors::<R, 2>(args, &acc);
    }
}

/// Runs the output stage of the `R × 8·NV` accumulators (`acc[r][v]`: columns
/// `8v..8v+8`, `NV` even) 16 columns at a time through the AVX2 GEMM epilogue
/// ([`super::gemm::store_acc`]: vector adds, scales and requantization, bit-exact with
/// the portable stage; the I32 stage as inline adds and stores), for every tile of this
/// module that stores 16-column blocks. On the GEMV 4096²
/// (Zen 3, perf) the portable per-element stage took about 3 % of the call.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ R`, `n ≤ 8·NV`; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_vectors<const R: usize, const NV: usize>(args: &CodebookArgs, acc: &[[__m256i; NV]; R]) {
    const { assert!(NV.is_multiple_of(2)) };
    for h in 0..NV / 2 {
        let j0 = 16 * h;
        if j0 >= args.n {
            break;
        }
        let block = GemmArgs {
            m: args.m,
            n: (args.n - j0).min(16),
            k: args.k,
            a: core::ptr::null(),
            lda: 0,
            b: core::ptr::null(),
            a_row_sum: core::ptr::null(),
            b_zero_point: core::ptr::null(),
            c: args.c.wrapping_add(j0 * args.out.kind.bytes()),
            ldc: args.ldc,
            out: args.out.from_column(j0),
        };
        // SAFETY: columns j0.. of the tile: the output tile and every per-column table
        // of the stage hold n − j0 ≥ block.n entries from there (contract); no row terms.
        unsafe { super::gemm::store_acc::<R, 2>(&block, core::array::from_fn(|r| [acc[r][2 * h], acc[r][2 * h + 1]])) };
    }
}

/// 4×16 tile, u8 activations.
///
/// # Safety
/// [`codebook_tile`]'s contract for a 4×16 tile.
pub unsafe fn qx8_codebook4_gemm_4x16c8_maddubs_u8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<4, false, false>(args) }
}

/// 4×16 tile, i8 activations (flipped to u8).
///
/// # Safety
/// [`codebook_tile`]'s contract for a 4×16 tile.
pub unsafe fn qx8_codebook4_gemm_4x16c8_maddubs_i8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<4, true, false>(args) }
}

/// `qx8_codebook4_gemm_4x16c8_maddubs__avx2`: 4 rows × 16 columns; tables within ±64 only.
pub const QX8_CODEBOOK4_GEMM_4X16C8_MADDUBS__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_4x16c8_maddubs__avx2",
    family: CodebookFamily::Lut,
    isa: Isa::Avx2,
    bits: 4,
    mr: 4,
    format: CodebookFormat { nr: 16, bits: 4 },
    a_offset: [0, 128],
    max_abs_table: Some(64),
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_codebook4_gemm_4x16c8_maddubs_u8a, qx8_codebook4_gemm_4x16c8_maddubs_i8a],
};

/// The `MR × 16` split tile, exact for every i8 table (−128..=127): the `vpmaddubsw`
/// tile with each table value split as `w = l + 32·h`, `l = w & 31` (0..=31),
/// `h = w >> 5` (arithmetic, −4..=3), looked up from two derived 16-byte tables.
///
/// Reads `m` rows of `k` activation bytes (not one past `k`), the panel's
/// `k.div_ceil(8)` groups (64 bytes, or 80 with `B5`), 16 table bytes (32 with `B5`);
/// writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ MR`, `n ≤ 16`; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn split_tile<const MR: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) {
    const { assert!(MR == 4) };
    // SAFETY (each arm): forwarded, exactly m rows (loops of a fixed trip count keep the
    // accumulators in registers).
    unsafe {
        match args.m {
            1 => store_vectors::<1, 2>(args, &split::<1, FLIP, B5>(args)),
            2 => store_vectors::<2, 2>(args, &split::<2, FLIP, B5>(args)),
            3 => store_vectors::<3, 2>(args, &split::<3, FLIP, B5>(args)),
            _ => store_vectors::<4, 2>(args, &split::<4, FLIP, B5>(args)),
        }
    }
}

/// K groups whose `h` products are summed in i16 before they are widened (see
/// [`split`]): `SPLIT_BLOCK · 4080 ≤ 32767`.
const SPLIT_BLOCK: usize = 8;
const _: () = assert!(SPLIT_BLOCK * 2 * 2 * 255 * 4 <= i16::MAX as usize);

/// The `l` and `h` tables of 16 i8 table entries (`l = w & 31`, `h = w >> 5`), each
/// broadcast to both lanes.
///
/// # Safety
/// `t` is readable for 16 bytes; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn split_tables(t: *const i8) -> (__m256i, __m256i) {
    // SAFETY: 16 bytes readable (caller).
    let w = unsafe { _mm_loadu_si128(t.cast()) };
    let l = _mm_and_si128(w, _mm_set1_epi8(31));
    // The top 3 bits of each byte (no byte shifts: a 16-bit one, masked), sign-extended
    // as `(u ^ 4) − 4`: `(w − l) / 32` exactly.
    let u = _mm_and_si128(_mm_srli_epi16(w, 5), _mm_set1_epi8(7));
    let h = _mm_sub_epi8(_mm_xor_si128(u, _mm_set1_epi8(4)), _mm_set1_epi8(4));
    (_mm256_broadcastsi128_si256(l), _mm256_broadcastsi128_si256(h))
}

/// Exactness, for any i8 table value `w = l + 32·h` and u8 activation `a` (i8 ones
/// flipped by `XOR 0x80`):
/// - `vpmaddubsw(a, l)`: a pair `≤ 2·255·31 = 15810`, so the K 0–3 and K 4–7 pairs of a
///   group add in i16 (`≤ 31620 ≤ 32767`) before one `vpmaddwd` by ones widens them —
///   one widening per column pair and group, half of the ±64 tile's.
/// - `vpmaddubsw(a, h)`: a pair `|·| ≤ 2·255·4 = 2040`, a group `≤ 4080`; summed in i16
///   over [`SPLIT_BLOCK`] = 8 groups (`≤ 32640 ≤ 32767`), then widened by one `vpmaddwd`
///   with 32 (`|32·(x + y)| < 2^21`) per block.
///
/// Nothing saturates and no i16 sum overflows. The i32 accumulators wrap as the contract
/// allows (modulo 2^32: exact whenever the true sum fits, which the driver ensures).
///
/// Returns the i32 sums of the tile's `R` rows.
///
/// # Safety
/// As [`split_tile`], `R = args.m`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn split<const R: usize, const FLIP: bool, const B5: bool>(args: &CodebookArgs) -> [[__m256i; 2]; R] {
    const NV: usize = 2;
    const NR: usize = 16;
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: reads stay within the contract's ranges (full groups: 8 bytes at
    // k0 ≤ k − 8; tail: k − k0 bytes; the panel's groups; both 16-byte table halves with
    // `B5`); rows < m only.
    unsafe {
        let (tl, th) = split_tables(args.table);
        let (tl1, th1) = if B5 { split_tables(args.table.add(16)) } else { (tl, th) };
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let s32 = _mm256_set1_epi16(32);
        let flip = _mm256_set1_epi8(-128);
        let zero = _mm256_setzero_si256();
        let mut acc = [[zero; NV]; R];
        let full = args.k / 8;
        let a0 = args.a;
        // Column vector `v` of a group: [l of K 0–3, l of K 4–7, h of K 0–3, h of K 4–7].
        let decode = |p: *const u8, v: usize| {
            let [il, ih] = group_indexes::<16, B5>(p, v, mask);
            [lookup::<B5>(tl, tl1, il), lookup::<B5>(tl, tl1, ih), lookup::<B5>(th, th1, il), lookup::<B5>(th, th1, ih)]
        };
        let step = |acc: &mut __m256i, hacc: &mut __m256i, alo: __m256i, ahi: __m256i, w: &[__m256i; 4]| {
            let pl = _mm256_add_epi16(_mm256_maddubs_epi16(alo, w[0]), _mm256_maddubs_epi16(ahi, w[1]));
            let ph = _mm256_add_epi16(_mm256_maddubs_epi16(alo, w[2]), _mm256_maddubs_epi16(ahi, w[3]));
            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pl, ones));
            *hacc = _mm256_add_epi16(*hacc, ph);
        };
        let widen = |acc: &mut [[__m256i; NV]; R], hacc: &mut [[__m256i; NV]; R], v0: usize, v1: usize| {
            for (a, h) in acc.iter_mut().zip(hacc.iter_mut()) {
                for v in v0..v1 {
                    a[v] = _mm256_add_epi32(a[v], _mm256_madd_epi16(h[v], s32));
                    h[v] = zero;
                }
            }
        };
        let word = |p: *const u8| {
            let a = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
            if FLIP { _mm256_xor_si256(a, flip) } else { a }
        };
        let mut hacc = [[zero; NV]; R];
        // Columns `8·v0..8·v1` over all of K.
        let run = |v0: usize, v1: usize, acc: &mut [[__m256i; NV]; R], hacc: &mut [[__m256i; NV]; R]| {
            let mut g0 = 0;
            while g0 < full {
                let g1 = full.min(g0 + SPLIT_BLOCK);
                for g in g0..g1 {
                    for v in v0..v1 {
                        let w = decode(args.b.add(g * gb), v);
                        for (r, (a, h)) in acc.iter_mut().zip(hacc.iter_mut()).enumerate() {
                            let p = a0.add(r * args.lda + 8 * g);
                            step(&mut a[v], &mut h[v], word(p), word(p.add(4)), &w);
                        }
                    }
                }
                widen(acc, hacc, v0, v1);
                g0 = g1;
            }
            let kn = args.k - 8 * full;
            if kn > 0 {
                for v in v0..v1 {
                    let w = decode(args.b.add(full * gb), v);
                    for (r, (a, h)) in acc.iter_mut().zip(hacc.iter_mut()).enumerate() {
                        let (lo, hi) = a_tail_words::<FLIP>(a0.add(r * args.lda + 8 * full), kn);
                        step(&mut a[v], &mut h[v], _mm256_set1_epi32(lo), _mm256_set1_epi32(hi), &w);
                    }
                }
                widen(acc, hacc, v0, v1);
            }
        };
        if R <= 2 {
            // Both column vectors per group: the activation split is shared by both.
            run(0, NV, &mut acc, &mut hacc);
        } else {
            // One column vector at a time over all of K: its R i32 and R i16 sums and
            // four decoded registers fit the 16 ymm at four rows (both vectors' do not);
            // the activation broadcasts are loaded twice (loads, no ALU).
            for v in 0..NV {
                run(v, v + 1, &mut acc, &mut hacc);
            }
        }
        acc
    }
}

/// `qx8_codebook4_gemm_4x16c8_split__avx2`: 4 rows × 16 columns, exact for any i8 table
/// (split table, `vpmaddubsw`).
pub const QX8_CODEBOOK4_GEMM_4X16C8_SPLIT__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_4x16c8_split__avx2",
    max_abs_table: None,
    run: [split_tile::<4, false, false>, split_tile::<4, true, false>],
    // The layout, tile and activation offset of the ±64 tile.
    ..QX8_CODEBOOK4_GEMM_4X16C8_MADDUBS__AVX2
};

/// `qx8_codebook5_gemm_4x16c8_split__avx2`: the split tile on 5-bit codes (a 32-level
/// codebook reaching ±127), exact for any i8 table.
pub const QX8_CODEBOOK5_GEMM_4X16C8_SPLIT__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_4x16c8_split__avx2",
    max_abs_table: None,
    run: [split_tile::<4, false, true>, split_tile::<4, true, true>],
    ..QX8_CODEBOOK5_GEMM_4X16C8_MADDUBS__AVX2
};

/// Columns per panel of the sign tiles: one row reads four column vectors per K group,
/// so each activation broadcast (a load that also takes a vector pipe on Zen 3) serves
/// 32 columns instead of 16.
const SIGN_NR: usize = 32;

/// The `MR × 32` sign tile, exact for every i8 table within ±127 (every i8 table the
/// packer builds, e.g. IQ4_NL's −127..=113; it takes −128 as beyond int8): the
/// `vpmaddubsw` tile with the activations, not the table, made unsigned. Each activation
/// is taken as the signed `s = a + a_offset` (u8 minus 128, i8 as it is) and
/// `s·w = |s|·(w·sign s)`: `vpmaddubsw(|s|, vpsignb(w, s))`. A product is at most
/// `128·127` in magnitude, a pair `2·128·127 = 32512 ≤ 32767`, so nothing saturates and
/// `vpsignb` never negates −128 (no table entry is −128). Each pair is widened by
/// `vpmaddwd` with ones; the i32 sums wrap as the contract allows.
///
/// A is read sign-split ([`CodebookUkernel::a_sign_split`]): `s` and `|s|` come from the
/// driver, made once per call, so per row, column vector and K group the vector pipes
/// spend 8 operations, 5 more per column vector and group shared by the rows, and four
/// activation broadcasts per row and group. K is read in whole groups: the padding's `s`
/// is 0. One row of 4-bit codes is the GEMV entry's case ([`sign_gemv`], one panel,
/// all four column vectors in one pass over K); two rows, or 5-bit codes, take them in
/// two passes of two (the accumulators of 2 × 4 vectors and the constants would not fit
/// the 16 ymm), and a panel of at most 16 columns only the first pass.
///
/// Reads `m` sign-split rows of `k.div_ceil(8)·24` bytes (rows `3·lda` bytes apart), the
/// panel's `k.div_ceil(8)` groups (128 bytes, or 160 with `B5`), 16 table bytes (32 with
/// `B5`); writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract for a sign-split kernel, `m ≤ MR`,
/// `n ≤ 32`, every table value within ±127; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn sign_tile<const MR: usize, const B5: bool>(args: &CodebookArgs) {
    const { assert!(MR == 2) };
    if args.m == 1 && !B5 {
        // SAFETY: forwarded; one row, and n ≤ 32 is one panel of the GEMV walk.
        return unsafe { sign_gemv(args) };
    }
    let mut acc = [[_mm256_setzero_si256(); SIGN_NR / 8]; MR];
    let wide = args.n > SIGN_NR / 2;
    // SAFETY (each call): forwarded, exactly m rows, the column vectors of the panel.
    unsafe {
        // Two rows, or the 5-bit lookups' two more constants and plane masks: the
        // accumulators of four vectors would not fit beside them (the one-pass 5-bit
        // GEMV measured 51 GOPS against 56 in two passes, Zen 3).
        for pass in 0..1 + wide as usize {
            let v0 = 2 * pass;
            let rows = if args.m == 1 { [signed::<1, B5>(args, v0)[0], [_mm256_setzero_si256(); 2]] } else { signed::<2, B5>(args, v0) };
            for (a, r) in acc.iter_mut().zip(rows) {
                a[v0..v0 + 2].copy_from_slice(&r);
            }
        }
        store_vectors::<MR, { SIGN_NR / 8 }>(args, &acc);
    }
}

/// Column vectors `v0` and `v0 + 1` (8 columns each) of [`sign_tile`]'s panel over all
/// of K: the i32 sums of its first `R = args.m` rows.
///
/// # Safety
/// As [`sign_tile`], `R = args.m`, `v0 + 2 ≤ 4`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn signed<const R: usize, const B5: bool>(args: &CodebookArgs, v0: usize) -> [[__m256i; 2]; R] {
    const NV: usize = 2;
    let gb = CodebookFormat { nr: SIGN_NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: reads stay within the contract's ranges (rows < m of whole sign-split
    // groups, the panel's groups, the table's 16 or 32 bytes).
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.cast()));
        let table_hi = if B5 { _mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.add(16).cast())) } else { table };
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); NV]; R];
        // Four bytes at `p + off`, in every dword.
        let word = |p: *const u8, off: usize| _mm256_set1_epi32(p.add(off).cast::<i32>().read_unaligned());
        for g in 0..args.k.div_ceil(8) {
            // Group g of each row: s of K 0–3 and 4–7 at 0 and 4, |s| of them at 16 and 20.
            let rows: [*const u8; R] = core::array::from_fn(|r| args.a.add(SIGN_SPLIT_BYTES_PER_K * r * args.lda + SIGN_SPLIT_GROUP_BYTES * g));
            for v in 0..NV {
                let [il, ih] = group_indexes::<SIGN_NR, B5>(args.b.add(g * gb), v0 + v, mask);
                let (wl, wh) = (lookup::<B5>(table, table_hi, il), lookup::<B5>(table, table_hi, ih));
                for (acc, &p) in acc.iter_mut().zip(&rows) {
                    let p0 = _mm256_maddubs_epi16(word(p, 16), _mm256_sign_epi8(wl, word(p, 0)));
                    let p1 = _mm256_maddubs_epi16(word(p, 20), _mm256_sign_epi8(wh, word(p, 4)));
                    acc[v] = _mm256_add_epi32(acc[v], _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones)));
                }
            }
        }
        acc
    }
}

/// Two column vectors of [`walk32`]'s K group (panel bytes `off..off + 64`), their
/// operations interleaved: decode, sign (`XOR` with the masks), `vpmaddubsw`, widen, add
/// to `$c0` / `$c1`.
macro_rules! xor_pair {
    ($off:literal, $c0:ident, $c1:ident) => {
        concat!(
            "vmovdqu {x0}, ymmword ptr [{bp} + ", $off, "]\n",
            "vmovdqu {x2}, ymmword ptr [{bp} + ", $off, " + 32]\n",
            "vpsrlw {x1}, {x0}, 4\n",
            "vpsrlw {x3}, {x2}, 4\n",
            "vpand {x0}, {x0}, {mask}\n",
            "vpand {x2}, {x2}, {mask}\n",
            "vpshufb {x0}, {table}, {x0}\n",
            "vpshufb {x2}, {table}, {x2}\n",
            "vpand {x1}, {x1}, {mask}\n",
            "vpand {x3}, {x3}, {mask}\n",
            "vpshufb {x1}, {table}, {x1}\n",
            "vpshufb {x3}, {table}, {x3}\n",
            "vpxor {x0}, {x0}, {nl}\n",
            "vpxor {x2}, {x2}, {nl}\n",
            "vpxor {x1}, {x1}, {nh}\n",
            "vpxor {x3}, {x3}, {nh}\n",
            "vpmaddubsw {x0}, {ul}, {x0}\n",
            "vpmaddubsw {x2}, {ul}, {x2}\n",
            "vpmaddubsw {x1}, {uh}, {x1}\n",
            "vpmaddubsw {x3}, {uh}, {x3}\n",
            "vpmaddwd {x0}, {x0}, {ones}\n",
            "vpmaddwd {x2}, {x2}, {ones}\n",
            "vpaddd {", stringify!($c0), "}, {", stringify!($c0), "}, {x0}\n",
            "vpaddd {", stringify!($c1), "}, {", stringify!($c1), "}, {x2}\n",
            "vpmaddwd {x1}, {x1}, {ones}\n",
            "vpmaddwd {x3}, {x3}, {ones}\n",
            "vpaddd {", stringify!($c0), "}, {", stringify!($c0), "}, {x1}\n",
            "vpaddd {", stringify!($c1), "}, {", stringify!($c1), "}, {x3}\n",
        )
    };
}

/// Panels per [`walk32`] call in [`sign_gemv`] (their sums pass through a 1 KiB stack
/// buffer on the way to the epilogue).
const WALK_PANELS: usize = 8;

/// The one-row entry of the 4-bit sign kernel ([`CodebookUkernel::gemv`], and
/// [`sign_tile`] at `m = 1`): `n` columns, panel after panel, through `walk32` in
/// runs of `WALK_PANELS`, then each run's sums through the vector epilogue.
///
/// Here the sign goes on by `XOR` with the row's sign masks, not by `vpsignb`: `w ⊕ 0xFF
/// = −w − 1`, so `|s|·(w ⊕ 0xFF) = s·w − |s|` for `s < 0`, and the accumulators start
/// at the row's `Σ_{s<0} |s|` (`neg_magnitudes`, once per call) to cancel it. Every
/// product stays in `[−128·128, 127·127]`, a pair in `[−32768, 32258]`: no saturation, so
/// the sums are exact (wrapping as the contract allows). `vpxor` runs on any of Zen 3's
/// four vector pipes, `vpsignb` on two.
///
/// Reads the sign-split row's `k.div_ceil(8)` groups, the `n.div_ceil(32)` panels of
/// `k.div_ceil(8)·128` bytes from `b` and 16 table bytes; writes `n` outputs.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract for a sign-split kernel's `gemv` entry
/// (`m = 1`, any `n ≥ 1`), 4-bit codes, every table value within ±127; the CPU supports
/// AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn sign_gemv(args: &CodebookArgs) {
    let fmt = CodebookFormat { nr: SIGN_NR, bits: 4 };
    let groups = args.k.div_ceil(8);
    let panels = args.n.div_ceil(SIGN_NR);
    debug_assert!(args.m == 1 && fmt.panel_bytes(args.k) == groups * fmt.group_bytes());
    // SAFETY: the row's groups (contract).
    let corr = unsafe { neg_magnitudes(args.a, groups) };
    let mut sums = [_mm256_setzero_si256(); 4 * WALK_PANELS];
    for p0 in (0..panels).step_by(WALK_PANELS) {
        let np = WALK_PANELS.min(panels - p0);
        // SAFETY: panels p0..p0 + np exist (n.div_ceil(32) of them, each a whole panel,
        // contiguous); `sums` holds 4 vectors per panel; the table's 16 bytes.
        unsafe { walk32(args.a, args.b.add(p0 * fmt.panel_bytes(args.k)), groups, np, args.table, corr, sums.as_mut_ptr()) };
        for (p, acc) in sums.chunks_exact(4).take(np).enumerate() {
            let j0 = (p0 + p) * SIGN_NR;
            let panel = CodebookArgs { n: (args.n - j0).min(SIGN_NR), c: args.c.wrapping_add(j0 * args.out.kind.bytes()), out: args.out.from_column(j0), ..*args };
            // SAFETY: columns j0.. of the row: the output and every per-column table hold
            // n − j0 ≥ panel.n entries from there (contract).
            unsafe { store_vectors::<1, 4>(&panel, &[[acc[0], acc[1], acc[2], acc[3]]]) };
        }
    }
}

/// `Σ_{s<0} |s|` of a sign-split row's first `groups` groups (the masks `AND` the
/// magnitudes, summed by `psadbw`), wrapped to i32 as the contract's sums.
///
/// # Safety
/// `a` is valid for `groups` sign-split groups; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn neg_magnitudes(a: *const u8, groups: usize) -> i32 {
    let mut sum = _mm_setzero_si128();
    for g in 0..groups {
        // SAFETY: bytes 8..24 of group g (the masks and magnitudes), within the row.
        unsafe {
            let p = a.add(g * SIGN_SPLIT_GROUP_BYTES);
            let neg = _mm_and_si128(_mm_loadl_epi64(p.add(8).cast()), _mm_loadl_epi64(p.add(16).cast()));
            sum = _mm_add_epi64(sum, _mm_sad_epu8(neg, _mm_setzero_si128()));
        }
    }
    _mm_cvtsi128_si64(sum) as i32
}

/// One sign-split row over `panels` consecutive 32-column panels of 4-bit codes, in one
/// `asm!` loop: per panel, the four column vectors' i32 sums, started at `corr`, to
/// `out[4p..4p + 4]`. Per K group the four column vectors go in two pairs, each pair's
/// two chains interleaved operation by operation: Zen 3 issues this mix, independent, at
/// four per cycle (6.5 cycles per 16 columns by count), but one column vector's chain
/// (shift, mask, lookup, sign, two multiplies, add) is 11 cycles after its load; LLVM
/// emitted the intrinsics one column vector after another. Measured on 4096² (kernel
/// alone, Zen 3): 7.7 cycles per 16 columns in that order, 7.5 in pairs with `vpsignb` a
/// panel per call, 7.2–7.3 walking the panels with `vpxor`.
///
/// # Safety
/// `a` holds `groups` sign-split groups; `b` `panels · groups` groups of 128 bytes;
/// `table` 16 bytes; `out` `4 · panels` vectors; `groups ≥ 1`, `panels ≥ 1`; the CPU
/// supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn walk32(a: *const u8, b: *const u8, groups: usize, panels: usize, table: *const i8, corr: i32, out: *mut __m256i) {
    if groups == 0 {
        // K = 0: every sum is the (zero) correction.
        for v in 0..4 * panels {
            // SAFETY: `out` holds 4·panels vectors.
            unsafe { out.add(v).write(_mm256_set1_epi32(corr)) };
        }
        return;
    }
    // SAFETY: the table's 16 bytes.
    let table = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(table.cast())) };
    let (mask, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi16(1));
    let corr = _mm256_set1_epi32(corr);
    // SAFETY: per panel, `groups` iterations read one 24-byte group of the row (masks of
    // K 0–3 and 4–7 at 8 and 12, |s| at 16 and 20) and the panel's 128-byte group; the
    // panel's four sums go to `out`; all within the ranges above; AVX2 is enabled; no
    // stack, flags only.
    unsafe {
        core::arch::asm!(
            "3:",
            "vmovdqa {c0}, {corr}",
            "vmovdqa {c1}, {corr}",
            "vmovdqa {c2}, {corr}",
            "vmovdqa {c3}, {corr}",
            "mov {ap}, {a}",
            "mov {n}, {groups}",
            "2:",
            "vpbroadcastd {nl}, dword ptr [{ap} + 8]",
            "vpbroadcastd {nh}, dword ptr [{ap} + 12]",
            "vpbroadcastd {ul}, dword ptr [{ap} + 16]",
            "vpbroadcastd {uh}, dword ptr [{ap} + 20]",
            xor_pair!(0, c0, c1),
            xor_pair!(64, c2, c3),
            "add {ap}, 24",
            "add {bp}, 128",
            "dec {n}",
            "jnz 2b",
            "vmovdqu ymmword ptr [{op}], {c0}",
            "vmovdqu ymmword ptr [{op} + 32], {c1}",
            "vmovdqu ymmword ptr [{op} + 64], {c2}",
            "vmovdqu ymmword ptr [{op} + 96], {c3}",
            "add {op}, 128",
            "dec {p}",
            "jnz 3b",
            a = in(reg) a,
            groups = in(reg) groups,
            ap = out(reg) _,
            n = out(reg) _,
            bp = inout(reg) b => _,
            op = inout(reg) out => _,
            p = inout(reg) panels => _,
            table = in(ymm_reg) table,
            mask = in(ymm_reg) mask,
            ones = in(ymm_reg) ones,
            corr = in(ymm_reg) corr,
            c0 = out(ymm_reg) _,
            c1 = out(ymm_reg) _,
            c2 = out(ymm_reg) _,
            c3 = out(ymm_reg) _,
            nl = out(ymm_reg) _,
            nh = out(ymm_reg) _,
            ul = out(ymm_reg) _,
            uh = out(ymm_reg) _,
            x0 = out(ymm_reg) _,
            x1 = out(ymm_reg) _,
            x2 = out(ymm_reg) _,
            x3 = out(ymm_reg) _,
            options(nostack),
        );
    }
}

/// `qx8_codebook4_gemm_2x32c8_sign__avx2`: 2 rows × 32 columns, tables within ±127
/// (`vpmaddubsw` on `|s|` and `vpsignb`).
pub const QX8_CODEBOOK4_GEMM_2X32C8_SIGN__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_2x32c8_sign__avx2",
    a_offset: [-128, 0],
    max_abs_table: Some(127),
    mr: 2,
    format: CodebookFormat { nr: SIGN_NR, bits: 4 },
    a_sign_split: true,
    run: [sign_tile::<2, false>, sign_tile::<2, false>],
    gemv: Some([sign_gemv, sign_gemv]),
    // The family, tier and code width of the ±64 tile (its own layout and A form above).
    ..QX8_CODEBOOK4_GEMM_4X16C8_MADDUBS__AVX2
};

/// `qx8_codebook5_gemm_2x32c8_sign__avx2`: the sign tile on 5-bit codes.
pub const QX8_CODEBOOK5_GEMM_2X32C8_SIGN__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_2x32c8_sign__avx2",
    a_offset: [-128, 0],
    max_abs_table: Some(127),
    mr: 2,
    format: CodebookFormat { nr: SIGN_NR, bits: 5 },
    a_sign_split: true,
    run: [sign_tile::<2, true>, sign_tile::<2, true>],
    ..QX8_CODEBOOK5_GEMM_4X16C8_MADDUBS__AVX2
};

/// The exact `MR × 8` tile (one ymm of nibbles per K group): decoded weights as i16
/// (4 columns × 4 K per ymm), activations zero-extended to an i16 quad broadcast,
/// `vpmaddwd` leaves two partial sums per column, added pairwise at the end.
///
/// The i8 table (`WIDE = false`): one `vpshufb` per nibble half, sign-extended to i16.
/// The i16 table (`WIDE`, grids beyond int8): its low and high bytes as two 16-byte
/// planes, one `vpshufb` each, interleaved back to i16 by `vpunpck{l,h}bw` (5-bit codes:
/// a second pair of planes for codes 16–31, blended in by the bit plane as the
/// `vpmaddubsw` tile does). Every product `|a·w| ≤ 255·32767` and pair sum `< 2^24` is
/// exact in i32; the accumulators wrap as the contract allows.
///
/// Reads `m` rows of `k` activation bytes (`WIDE`: `k` i16; not one past `k`), the
/// panel's `k.div_ceil(8)` groups (32 bytes, or 40 with `B5`), 16 table bytes (`WIDE`:
/// the 32 i16 of `table16`); writes the `m × n` tile.
///
/// # Safety
/// `args` satisfies the [`CodebookArgs`] contract, `m ≤ MR`, `n ≤ 8`; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn exact_tile<const MR: usize, const FLIP: bool, const WIDE: bool, const B5: bool>(args: &CodebookArgs) {
    // SAFETY (each arm): forwarded, m ≤ the row count.
    unsafe {
        match args.m {
            1 => exact::<1, FLIP, WIDE, B5>(args),
            2 => exact::<2, FLIP, WIDE, B5>(args),
            _ => exact::<MR, FLIP, WIDE, B5>(args),
        }
    }
}

/// The low and high byte planes of 16 i16 table entries, each broadcast to both lanes.
///
/// # Safety
/// `t` is readable for 16 i16; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn byte_planes(t: *const i16) -> (__m256i, __m256i) {
    // Per 8 entries: low bytes to bytes 0–7, high bytes to 8–15.
    let split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    // SAFETY: 16 entries readable (caller).
    let (e0, e1) = unsafe { (_mm_loadu_si128(t.cast()), _mm_loadu_si128(t.add(8).cast())) };
    let (e0, e1) = (_mm_shuffle_epi8(e0, split), _mm_shuffle_epi8(e1, split));
    (_mm256_broadcastsi128_si256(_mm_unpacklo_epi64(e0, e1)), _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(e0, e1)))
}

/// # Safety
/// As [`exact_tile`], `m ≤ R`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn exact<const R: usize, const FLIP: bool, const WIDE: bool, const B5: bool>(args: &CodebookArgs) {
    const NR: usize = 8;
    let gb = CodebookFormat { nr: NR, bits: if B5 { 5 } else { 4 } }.group_bytes();
    // SAFETY: reads stay within the contract's ranges (as in `tile`), rows < m only.
    unsafe {
        // Byte tables: [low plane, high plane] of codes 0–15 and (5-bit) 16–31; the i8
        // table is its own low plane.
        let (lo0, hi0) = if WIDE { byte_planes(args.table16) } else { (_mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.cast())), _mm256_setzero_si256()) };
        let (lo1, hi1) = match (WIDE, B5) {
            (true, true) => byte_planes(args.table16.add(16)),
            (false, true) => (_mm256_broadcastsi128_si256(_mm_loadu_si128(args.table.add(16).cast())), hi0),
            _ => (lo0, hi0),
        };
        let mask = _mm256_set1_epi8(0x0F);
        let zero = _mm256_setzero_si256();
        let mut acc = [[zero; 2]; R];
        let full = args.k / 8;
        let m = args.m;
        // One plane lookup of 32 indexes (codes 16–31 blended in where `sel` is set).
        let look = |t0: __m256i, t1: __m256i, idx: __m256i, sel: __m256i| {
            let v = _mm256_shuffle_epi8(t0, idx);
            if B5 { _mm256_blendv_epi8(v, _mm256_shuffle_epi8(t1, idx), sel) } else { v }
        };
        // The weights of a group as i16. i8 table: [lo cols 0–3, lo cols 4–7, hi cols 0–3,
        // hi cols 4–7]; i16 table: [lo cols 0,1|4,5, lo cols 2,3|6,7, hi …, hi …] (the
        // unpacks work per 128-bit lane).
        let decode = |p: *const u8| -> [__m256i; 4] {
            let raw = _mm256_loadu_si256(p.cast());
            let il = _mm256_and_si256(raw, mask);
            let ih = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            let (sl, sh) = if B5 {
                let plane = p.add(NR * 4);
                (expand_bits(plane.cast::<u32>().read_unaligned()), expand_bits(plane.add(4).cast::<u32>().read_unaligned()))
            } else {
                (zero, zero)
            };
            let (lo, hi) = (look(lo0, lo1, il, sl), look(lo0, lo1, ih, sh));
            if WIDE {
                let (lo_h, hi_h) = (look(hi0, hi1, il, sl), look(hi0, hi1, ih, sh));
                [
                    _mm256_unpacklo_epi8(lo, lo_h),
                    _mm256_unpackhi_epi8(lo, lo_h),
                    _mm256_unpacklo_epi8(hi, hi_h),
                    _mm256_unpackhi_epi8(hi, hi_h),
                ]
            } else {
                [
                    _mm256_cvtepi8_epi16(_mm256_castsi256_si128(lo)),
                    _mm256_cvtepi8_epi16(_mm256_extracti128_si256(lo, 1)),
                    _mm256_cvtepi8_epi16(_mm256_castsi256_si128(hi)),
                    _mm256_cvtepi8_epi16(_mm256_extracti128_si256(hi, 1)),
                ]
            }
        };
        // A K quad as four i16, repeated: bytes zero-extended, or (WIDE) four words of the
        // pre-widened A broadcast as they are.
        let quad = |word: i32| _mm256_cvtepu8_epi16(_mm_set1_epi32(word));
        let quads = |r: usize, g: usize, kn: usize| {
            if WIDE {
                let (lo, hi) = a_quads16(args.a.cast::<i16>().add(r * args.lda + 8 * g), kn);
                (_mm256_set1_epi64x(lo), _mm256_set1_epi64x(hi))
            } else {
                let (lo, hi) = a_tail_words::<FLIP>(args.a.add(r * args.lda + 8 * g), kn);
                (quad(lo), quad(hi))
            }
        };
        let step = |acc: &mut [__m256i; 2], (alo, ahi): (__m256i, __m256i), w: &[__m256i; 4]| {
            acc[0] = _mm256_add_epi32(acc[0], _mm256_add_epi32(_mm256_madd_epi16(alo, w[0]), _mm256_madd_epi16(ahi, w[2])));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_add_epi32(_mm256_madd_epi16(alo, w[1]), _mm256_madd_epi16(ahi, w[3])));
        };
        let flip = if FLIP { 0x8080_8080u32 as i32 } else { 0 };
        for g in 0..full {
            let w = decode(args.b.add(g * gb));
            for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                let a = if WIDE {
                    quads(r, g, 8)
                } else {
                    let p = args.a.add(r * args.lda + 8 * g);
                    (quad(p.cast::<i32>().read_unaligned() ^ flip), quad(p.add(4).cast::<i32>().read_unaligned() ^ flip))
                };
                step(acc_r, a, &w);
            }
        }
        let kn = args.k - 8 * full;
        if kn > 0 {
            let w = decode(args.b.add(full * gb));
            for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                step(acc_r, quads(r, full, kn), &w);
            }
        }
        let mut out = [[0i32; NR]; R];
        for r in 0..R.min(m) {
            let s = _mm256_hadd_epi32(acc[r][0], acc[r][1]);
            // i8: [c0 c1 c4 c5 | c2 c3 c6 c7] → column order; i16: already in order.
            let s = if WIDE { s } else { _mm256_permute4x64_epi64(s, 0b11_01_10_00) };
            _mm256_storeu_si256(out[r].as_mut_ptr().cast(), s);
        }
        store_tile::<R, NR>(args, &out);
    }
}

/// Exact 4×8 tile, u8 activations.
///
/// # Safety
/// [`exact_tile`]'s contract for a 4×8 tile.
pub unsafe fn qx8_codebook4_gemm_4x8c8_u8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { exact_tile::<4, false, false, false>(args) }
}

/// Exact 4×8 tile, i8 activations (flipped to u8).
///
/// # Safety
/// [`exact_tile`]'s contract for a 4×8 tile.
pub unsafe fn qx8_codebook4_gemm_4x8c8_i8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { exact_tile::<4, true, false, false>(args) }
}

/// `qx8_codebook4_gemm_4x8c8__avx2`: exact for any i8 table (`vpmaddwd` on i16).
pub const QX8_CODEBOOK4_GEMM_4X8C8__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_gemm_4x8c8__avx2",
    family: CodebookFamily::Lut,
    isa: Isa::Avx2,
    bits: 4,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 4 },
    a_offset: [0, 128],
    max_abs_table: None,
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_codebook4_gemm_4x8c8_u8a, qx8_codebook4_gemm_4x8c8_i8a],
};

/// 5-bit 4×16 tile, u8 activations.
///
/// # Safety
/// [`codebook_tile`]'s contract for a 4×16 tile of 5-bit codes (32-entry table).
pub unsafe fn qx8_codebook5_gemm_4x16c8_maddubs_u8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<4, false, true>(args) }
}

/// 5-bit 4×16 tile, i8 activations (flipped to u8).
///
/// # Safety
/// [`codebook_tile`]'s contract for a 4×16 tile of 5-bit codes (32-entry table).
pub unsafe fn qx8_codebook5_gemm_4x16c8_maddubs_i8a(args: &CodebookArgs) {
    // SAFETY: forwarded.
    unsafe { codebook_tile::<4, true, true>(args) }
}

/// `qx8_codebook5_gemm_4x16c8_maddubs__avx2`: 5-bit codes (APoT-5: grid 48); the bit
/// plane expanded to byte masks picks between two 16-entry lookups. Tables within ±64.
pub const QX8_CODEBOOK5_GEMM_4X16C8_MADDUBS__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_gemm_4x16c8_maddubs__avx2",
    family: CodebookFamily::Lut,
    isa: Isa::Avx2,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 16, bits: 5 },
    a_offset: [0, 128],
    max_abs_table: Some(64),
    table_i16: false,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [qx8_codebook5_gemm_4x16c8_maddubs_u8a, qx8_codebook5_gemm_4x16c8_maddubs_i8a],
};

/// `qx8_codebook4_i16_gemm_4x8c8__avx2`: 4-bit codes, any i16 table (4-bit log: grid
/// 2^14); two `vpshufb` byte-plane lookups per nibble half, `vpmaddwd`.
pub const QX8_CODEBOOK4_I16_GEMM_4X8C8__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook4_i16_gemm_4x8c8__avx2",
    family: CodebookFamily::Lut,
    isa: Isa::Avx2,
    bits: 4,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 4 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: true,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [exact_tile::<4, false, true, false>, exact_tile::<4, false, true, false>],
};

/// `qx8_codebook5_i16_gemm_4x8c8__avx2`: 5-bit codes, any 32-entry i16 table (PoT-5:
/// grid 2^14); four byte-plane lookups and two blends per nibble half, `vpmaddwd`.
pub const QX8_CODEBOOK5_I16_GEMM_4X8C8__AVX2: CodebookUkernel = CodebookUkernel {
    name: "qx8_codebook5_i16_gemm_4x8c8__avx2",
    family: CodebookFamily::Lut,
    isa: Isa::Avx2,
    bits: 5,
    mr: 4,
    format: CodebookFormat { nr: 8, bits: 5 },
    a_offset: [0, 0],
    max_abs_table: None,
    table_i16: true,
    a_sign_split: false,
    gemv: None,
    extra_features: &[],
    run: [exact_tile::<4, false, true, true>, exact_tile::<4, false, true, true>],
};

/// AVX2 codebook kernels, least preferred first: the packer takes the last one here
/// that runs the codes exactly: the `vpmaddubsw` tile within ±64, else the sign tile
/// (the packer's i8 tables stay within ±127; one holding −128 is a grid for the
/// i16-table tiles). The split tiles, exact for any i8 table, come first, chosen only by
/// name: the 4-bit one is 18 % slower than the sign tile at M = 1 and 9 % at M = 2 (Zen 3,
/// N = K = 4096), the 5-bit one no faster than the i16-table tile at any M (Zen 4). The
/// 5-bit sign tile against the i16-table tile (Zen 3, u8 activations, one thread, measured
/// on its earlier 16-column form): M = 1 0.67 vs 0.93 ms, M = 4 1.89 vs 1.64 ms, M = 8
/// 3.76 vs 3.35 ms (the decoded path takes over from M = 4), preferred for the GEMV. The
/// 32-column form ran the PWLQ ±127 grid GEMV at 56 GOPS against the 16-column one's 52.
pub const CODEBOOK_KERNELS: &[CodebookUkernel] = &[
    QX8_CODEBOOK5_GEMM_4X16C8_SPLIT__AVX2,
    QX8_CODEBOOK4_GEMM_4X16C8_SPLIT__AVX2,
    QX8_CODEBOOK4_I16_GEMM_4X8C8__AVX2,
    QX8_CODEBOOK5_I16_GEMM_4X8C8__AVX2,
    QX8_CODEBOOK4_GEMM_4X8C8__AVX2,
    QX8_CODEBOOK5_GEMM_2X32C8_SIGN__AVX2,
    QX8_CODEBOOK4_GEMM_2X32C8_SIGN__AVX2,
    QX8_CODEBOOK4_GEMM_4X16C8_MADDUBS__AVX2,
    QX8_CODEBOOK5_GEMM_4X16C8_MADDUBS__AVX2,
];
