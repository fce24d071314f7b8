//! `vpdpbusd` ymm GEMM tiles, written once and compiled twice.
//!
//! AVX-VNNI's VEX `vpdpbusd ymm` (`_mm256_dpbusd_avx_epi32`) and AVX-512 VNNI+VL's EVEX
//! `vpdpbusd ymm` (`_mm256_dpbusd_epi32`) compute the same thing. `ymm_vnni_gemm!`
//! holds the whole kernel — K loop, edge tiles, every output stage — with the
//! instruction and the `#[target_feature]` list as its two parameters, and is
//! instantiated as [`vex`] (the AVX-VNNI tier) and [`evex`] (a twin registered in the
//! AVX-512 VNNI tier). The twin is what tests the shared logic on hosts without AVX-VNNI
//! (AVX-512 Ice Lake, Zen 4), which no emulator runs (qemu TCG lacks AVX-VNNI).
//!
//! The body uses AVX2 intrinsics only, apart from the multiply-add, so the VEX instance
//! needs no mask register and no register above ymm15 (AVX-VNNI cores have 16 ymm). The
//! twin, compiled with AVX-512 enabled, may still get EVEX encodings, mask compares and
//! ymm16–31 in its epilogue (LLVM's choice; fine on its tier), but its K loops are the
//! VEX instance's instruction for instruction. `tools/check_vex.py` (run after
//! `cargo build --release`) disassembles the binary and checks exactly that: every
//! function of the VEX instance holds `{vex} vpdpbusd` and no EVEX-only instruction, no
//! K loop of it touches the stack, and each K loop of the twin is the same instruction
//! sequence once the `{vex}` prefix and register numbers are ignored. By hand:
//!
//! ```text
//! objdump -d --no-show-raw-insn -M intel -C target/release/qkern |
//!   grep -c '{vex} vpdpbusd'
//! ```
//!
//! The tile: `MR` rows × `8·NV` columns, `MR·NV` ymm accumulators kept in registers over
//! the whole K loop. Per K group of 4: `NV` loads of 32 packed weight bytes, `MR`
//! broadcasts of 4 activation bytes (`XOR 0x80` for i8 activations, the descriptor's
//! `a_offset` 128), `MR·NV` `vpdpbusd`. u8 weights are stored as i8 by the packer
//! (`b_offset` 128). `vpdpbusd` adds with wrapping i32 arithmetic, as the contract asks.
//!
//! Without mask registers, edges use: row pointers that repeat the last real row (rows
//! past `m` compute but are never stored); a K tail of 1–3 bytes read as byte/word
//! loads into a zeroed i32 (missing bytes meet the packer's zero padding); `vpmaskmovd`
//! / `vpmaskmovq` for per-column tables and i32/f32 outputs of a partial 8-column
//! block (it neither reads nor faults on masked lanes), and 4/2/1-byte stores for the
//! u8/i8 outputs of one.
//!
//! Every output stage is vectorised and bit-exact with `generic::gemm::output_value`:
//! F32 and the `Fp32` requantization in f32 lanes, the fixed-point modes in i64 lanes
//! (the exact product `vpmuldq`, AVX2's missing 64-bit arithmetic shift and min/max
//! built from logical shifts, compares and blends). Only clamp bounds outside the
//! contract fall back to the scalar reference.

/// The whole ymm `vpdpbusd` kernel, generic over the instruction.
///
/// `features` is the `#[target_feature]` list of every function (it must enable the
/// instruction `dpbusd` names and AVX2); `dpbusd` is a path to a
/// `fn(__m256i, __m256i, __m256i) -> __m256i` computing `vpdpbusd` (accumulator, u8
/// operand, s8 operand). `cpu` names the features in the `# Safety` docs.
macro_rules! ymm_vnni_gemm {
    (features = $feat:literal, dpbusd = $dp:path, cpu = $cpu:literal) => {
        use core::arch::x86_64::*;

        use crate::generic::gemm::output_value;
        use crate::types::{GemmArgs, IgemmArgs, OutputKind, RequantMode};

        /// The u8×s8 tile: `MR` rows × `8·NV` columns on the `[k/4][8·NV][4]` format.
        ///
        /// Reads only: `m` rows of `k` activation bytes from `a` (stride `lda`) — the
        /// last, partial K group byte by byte, so not one byte past `k` — and of the
        /// panel's `k.div_ceil(4)·32·NV` bytes, per K group those of the 8-column blocks
        /// holding one of the `n` columns; the per-column tables for the `n` columns
        /// (`scale`/`bias_f32`/`qmult` only when the output stage uses them);
        /// `a_row_sum` for `m` rows and `b_zero_point` for `n` columns when both are
        /// non-null. Writes only the `m × n` output tile. No pointer needs any alignment.
        ///
        /// # Safety
        /// `args` satisfies the [`GemmArgs`] contract with `1 ≤ args.m ≤ MR`,
        /// `1 ≤ args.n ≤ 8·NV`, `b` packed in the `[k/4][8·NV][4]` format; the CPU
        /// supports
        #[doc = $cpu]
        #[target_feature(enable = $feat)]
        pub unsafe fn gemm_tile<const MR: usize, const NV: usize, const A_FLIP: bool>(args: &GemmArgs) {
            // A narrow tile (the last panel of an N that is not a multiple of NR)
            // multiplies only the 8-column blocks it stores: the K loop's cost follows n.
            // SAFETY (each arm): forwarded contract; n ≤ 8·NU, and NU ≤ NV by each guard.
            unsafe {
                match args.n.div_ceil(8) {
                    1 if NV > 1 => rows::<MR, NV, 1, A_FLIP>(args),
                    2 if NV > 2 => rows::<MR, NV, 2, A_FLIP>(args),
                    _ => rows::<MR, NV, NV, A_FLIP>(args),
                }
            }
        }

        /// Picks the rows the K loop computes: a short tile (GEMV, `m ≤ 4`) runs only
        /// `R ≥ m` rows, and splits K over `G` accumulator sets so that at least 8
        /// `vpdpbusd` are independent (latency 4–5 cycles × 2 per cycle on every
        /// AVX-VNNI / Zen 4 core).
        ///
        /// # Safety
        /// As [`gemm_tile`], and `args.n ≤ 8·NU`.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn rows<const MR: usize, const NV: usize, const NU: usize, const A_FLIP: bool>(args: &GemmArgs) {
            // SAFETY (each arm): forwarded contract; m ≤ R in each arm (R ≤ MR by the guards).
            unsafe {
                match args.m {
                    1 if MR > 1 => tile::<1, NV, NU, 4, A_FLIP>(args),
                    2 if MR > 2 => tile::<2, NV, NU, 2, A_FLIP>(args),
                    3 | 4 if MR > 4 => tile::<4, NV, NU, 1, A_FLIP>(args),
                    _ => tile::<MR, NV, NU, 1, A_FLIP>(args),
                }
            }
        }

        /// The activation word of a partial last K group: `rem` (1..=3) bytes from `p`,
        /// zero above them.
        ///
        /// # Safety
        /// `p` is readable for `rem` bytes.
        #[inline(always)]
        unsafe fn tail_word(p: *const u8, rem: usize) -> i32 {
            // SAFETY: reads bytes 0..rem only.
            unsafe {
                let lo = if rem >= 2 { p.cast::<u16>().read_unaligned() as u32 } else { *p as u32 };
                let hi = if rem == 3 { (*p.add(2) as u32) << 16 } else { 0 };
                (lo | hi) as i32
            }
        }

        /// [`gemm_tile`] computing `R` rows (`m ≤ R`) and only the first `NU` of the
        /// panel's `NV` 8-column blocks (`n ≤ 8·NU`), with `G` accumulator sets: set `g`
        /// takes the K groups `≡ g (mod G)` of the main loop, and the sets are summed
        /// (wrapping, as `vpdpbusd` adds) before the epilogue.
        ///
        /// # Safety
        /// As [`gemm_tile`], and `args.m ≤ R`, `args.n ≤ 8·NU`.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn tile<const R: usize, const NV: usize, const NU: usize, const G: usize, const A_FLIP: bool>(
            args: &GemmArgs,
        ) {
            const { assert!(NU >= 1 && NU <= NV && G >= 1 && R >= 1) };
            let (m, k) = (args.m, args.k);
            // Rows past `m` re-read row m−1 (always valid memory) instead of branching
            // in the loop; their accumulators are never stored.
            let mut rows = [args.a; R];
            for i in 1..R {
                rows[i] = if i < m { args.a.wrapping_add(i * args.lda) } else { rows[i - 1] };
            }
            let flip = _mm256_set1_epi32(0x8080_8080u32 as i32);
            let mut accs = [[[_mm256_setzero_si256(); NU]; R]; G];
            let mut bp = args.b;
            let mut off = 0usize;
            // One K group at byte `off` of every row, `bp` the group's 32·NV packed bytes.
            // `tail: Some(rem)` for the last, partial group: only its `rem` (1..=3)
            // bytes of each row exist, read into a zeroed word; the packer zero-padded
            // B's group, so the zero bytes above them (0x80 once flipped) multiply zeros.
            // Each call says why its reads are sound. (The word is read at its use, so
            // that LLVM broadcasts it straight from memory.)
            let group = |acc: &mut [[__m256i; NU]; R], bp: *const u8, off: usize, tail: Option<usize>| {
                let mut bv = [_mm256_setzero_si256(); NU];
                for (v, b) in bv.iter_mut().enumerate() {
                    // SAFETY: the group's 32·NV bytes lie in the panel (each call).
                    *b = unsafe { _mm256_loadu_si256(bp.add(32 * v).cast()) };
                }
                for i in 0..R {
                    // SAFETY: row i (or row m−1 standing in for it) has bytes
                    // off..off+4 (full group) or off..off+rem (tail) (each call).
                    let x = unsafe {
                        match tail {
                            None => rows[i].add(off).cast::<i32>().read_unaligned(),
                            Some(rem) => tail_word(rows[i].add(off), rem),
                        }
                    };
                    let mut a = _mm256_set1_epi32(x);
                    if A_FLIP {
                        a = _mm256_xor_si256(a, flip);
                    }
                    for v in 0..NU {
                        // Safe: the closure has the function's features, `$dp`'s among them.
                        acc[i][v] = $dp(acc[i][v], a, bv[v]);
                    }
                }
            };
            let groups = k / 4;
            for _ in 0..groups / G {
                for (g, acc) in accs.iter_mut().enumerate() {
                    // Full groups off/4 + g < groups of the rows and of the panel.
                    group(acc, bp.wrapping_add(32 * NV * g), off + 4 * g, None);
                }
                bp = bp.wrapping_add(32 * NV * G);
                off += 4 * G;
            }
            let (acc, rest) = accs.split_first_mut().expect("G ≥ 1");
            for _ in 0..groups % G {
                // The `groups % G` full groups left after the main loop.
                group(acc, bp, off, None);
                bp = bp.wrapping_add(32 * NV);
                off += 4;
            }
            for r in rest.iter() {
                for i in 0..R {
                    for v in 0..NU {
                        acc[i][v] = _mm256_add_epi32(acc[i][v], r[i][v]);
                    }
                }
            }
            let rem = k % 4;
            if rem != 0 {
                // Rows have bytes off..off + rem (k = off + rem); the panel's last group.
                group(acc, bp, off, Some(rem));
            }
            if args.out.kind == OutputKind::I32 {
                // The i32 output finishes here, accumulators still in registers (every
                // index a constant; the runtime `m` only guards stores).
                // SAFETY: forwarded contract; m ≤ R, n ≤ 8·NU.
                unsafe { store_i32::<R, NU>(args, acc) };
                return;
            }
            // A separate (not inlined) epilogue keeps the K loop's accumulators out of
            // memory; it gets them in a fresh array written once (handing it `accs`
            // made LLVM zero that array in memory first).
            let mut fin = core::mem::MaybeUninit::<[[__m256i; NU]; R]>::uninit();
            let fp = fin.as_mut_ptr().cast::<__m256i>();
            for (i, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    // SAFETY: element (i, v) of the R × NU array `fin`, written once.
                    unsafe { fp.add(i * NU + v).write(x) };
                }
            }
            // SAFETY: every element was written just above; forwarded contract.
            unsafe { epilogue::<R, NU>(args, fin.assume_init_ref()) }
        }

        /// The indirect u8×s8 tile ([`IgemmArgs`]): the convolution's A rows read in
        /// place, tap by tap, through the indirection buffer. The K loop is `tile`'s
        /// (full tiles: `G` = 1), split at tap boundaries: per tap the `MR` row pointers
        /// are looked up once (a padding tap reads the shared zero-point row), then
        /// `kc/4` K groups each do `NU` loads of 32 packed bytes, `MR` broadcasts and
        /// `MR·NU` `vpdpbusd`; the epilogue is `tile`'s, so the results are the GEMM
        /// tile's bit for bit. `kc` is a multiple of 4 (contract): no partial group.
        ///
        /// Reads only: the `m·taps` indirection entries; per row `i < m` and tap `t`, the
        /// `kc` bytes at [`IgemmArgs::tap_ptr`]`(i, t)`; the panel's `taps·kc/4·32·NV`
        /// bytes (per K group, those of the 8-column blocks holding one of the `n`
        /// columns); the per-column tables and row sums as [`gemm_tile`]. Writes only the
        /// `m × n` output tile.
        ///
        /// # Safety
        /// `args` satisfies the [`IgemmArgs`] contract with `1 ≤ args.m ≤ MR`,
        /// `1 ≤ args.n ≤ 8·NV`, `args.kc` a positive multiple of 4, `b` packed in the
        /// `[k/4][8·NV][4]` format; the CPU supports
        #[doc = $cpu]
        #[target_feature(enable = $feat)]
        pub unsafe fn igemm_tile<const MR: usize, const NV: usize, const A_FLIP: bool>(args: &IgemmArgs) {
            // As [`gemm_tile`]: a narrow tile multiplies only the blocks it stores.
            // SAFETY (each arm): forwarded contract; n ≤ 8·NU, and NU ≤ NV by each guard.
            unsafe {
                match args.n.div_ceil(8) {
                    1 if NV > 1 => itile::<MR, NV, 1, A_FLIP>(args),
                    2 if NV > 2 => itile::<MR, NV, 2, A_FLIP>(args),
                    _ => itile::<MR, NV, NV, A_FLIP>(args),
                }
            }
        }

        /// [`igemm_tile`] over the first `NU` of the panel's `NV` 8-column blocks.
        ///
        /// # Safety
        /// As [`igemm_tile`], and `args.n ≤ 8·NU`.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn itile<const R: usize, const NV: usize, const NU: usize, const A_FLIP: bool>(args: &IgemmArgs) {
            const { assert!(NU >= 1 && NU <= NV && R >= 1) };
            let (m, taps, kc) = (args.m, args.taps, args.kc);
            let flip = _mm256_set1_epi32(0x8080_8080u32 as i32);
            let mut acc = [[_mm256_setzero_si256(); NU]; R];
            let mut bp = args.b;
            for t in 0..taps {
                // Rows past `m` read row m−1's taps (valid memory); never stored.
                let rows: [*const u8; R] = core::array::from_fn(|i| {
                    // SAFETY: min(i, m−1) < m and t < taps (contract).
                    unsafe { args.tap_ptr(i.min(m - 1), t) }
                });
                let mut off = 0usize;
                while off < kc {
                    let mut bv = [_mm256_setzero_si256(); NU];
                    for (v, b) in bv.iter_mut().enumerate() {
                        // SAFETY: K group (t·kc + off)/4 of the panel holds 32·NV bytes.
                        *b = unsafe { _mm256_loadu_si256(bp.add(32 * v).cast()) };
                    }
                    for i in 0..R {
                        // SAFETY: each tap row holds kc ≥ off + 4 bytes (kc a multiple of 4).
                        let x = unsafe { rows[i].add(off).cast::<i32>().read_unaligned() };
                        let mut a = _mm256_set1_epi32(x);
                        if A_FLIP {
                            a = _mm256_xor_si256(a, flip);
                        }
                        for v in 0..NU {
                            acc[i][v] = $dp(acc[i][v], a, bv[v]);
                        }
                    }
                    // Within the panel (or one past its end after the last group).
                    bp = bp.wrapping_add(32 * NV);
                    off += 4;
                }
            }
            let ga = args.epilogue_args();
            if args.out.kind == OutputKind::I32 {
                // SAFETY: the output side of `args` is a GemmArgs tile; m ≤ R, n ≤ 8·NU.
                unsafe { store_i32::<R, NU>(&ga, &acc) };
                return;
            }
            // As [`tile`]: the epilogue receives the accumulators in a fresh array.
            let mut fin = core::mem::MaybeUninit::<[[__m256i; NU]; R]>::uninit();
            let fp = fin.as_mut_ptr().cast::<__m256i>();
            for (i, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    // SAFETY: element (i, v) of the R × NU array `fin`, written once.
                    unsafe { fp.add(i * NU + v).write(x) };
                }
            }
            // SAFETY: every element was written just above; the output side of `args`
            // is a GemmArgs tile.
            unsafe { epilogue::<R, NU>(&ga, fin.assume_init_ref()) }
        }

        /// All-ones i32 lanes for the columns `8v..8v+8` that are `< n`.
        #[target_feature(enable = $feat)]
        #[inline]
        fn col_mask(n: usize, v: usize) -> __m256i {
            let left = n.saturating_sub(8 * v).min(8) as i32;
            _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
        }

        /// 8 i32 (or f32 bits) of a per-column table from column `8v`, lanes of columns
        /// `≥ n` zero and not read.
        ///
        /// # Safety
        /// `p` has `n > 8v` readable entries.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn load_cols(p: *const i32, n: usize, v: usize) -> __m256i {
            // SAFETY: a full block lies inside the table; a partial one is masked
            // (`vpmaskmovd` does not touch masked lanes).
            unsafe {
                if 8 * v + 8 <= n {
                    _mm256_loadu_si256(p.add(8 * v).cast())
                } else {
                    _mm256_maskload_epi32(p.add(8 * v), col_mask(n, v))
                }
            }
        }

        /// Stores the lanes of columns `< n` of 8 i32 (or f32 bits) at `p` (column `8v`).
        ///
        /// # Safety
        /// `p` is writable for `min(8, n − 8v)` i32, `n > 8v`.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn store_cols(p: *mut i32, x: __m256i, n: usize, v: usize) {
            // SAFETY: a full block lies inside the row; a partial one is masked.
            unsafe {
                if 8 * v + 8 <= n {
                    _mm256_storeu_si256(p.cast(), x)
                } else {
                    _mm256_maskstore_epi32(p, col_mask(n, v), x)
                }
            }
        }

        /// Writes the low `cnt` (≤ 8) bytes of `word` to `p`, as at most three stores.
        ///
        /// # Safety
        /// `p` is writable for `cnt` bytes.
        #[inline(always)]
        unsafe fn store_bytes(p: *mut u8, word: u64, cnt: usize) {
            // SAFETY: each store writes bytes below `cnt`.
            unsafe {
                if cnt >= 8 {
                    p.cast::<u64>().write_unaligned(word);
                    return;
                }
                let (mut w, mut o) = (word, 0);
                if cnt & 4 != 0 {
                    p.cast::<u32>().write_unaligned(w as u32);
                    w >>= 32;
                    o = 4;
                }
                if cnt & 2 != 0 {
                    p.add(o).cast::<u16>().write_unaligned(w as u16);
                    w >>= 16;
                    o += 2;
                }
                if cnt & 1 != 0 {
                    p.add(o).write(w as u8);
                }
            }
        }

        /// The low bytes of 8 i32 lanes, in order, as one u64.
        #[target_feature(enable = $feat)]
        #[inline]
        fn low_bytes(q: __m256i) -> u64 {
            // Each lane's low byte to the front of its 128-bit half, then the two
            // halves' first dwords together.
            let pick = _mm256_setr_epi8(
                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
            );
            let join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
            let b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, pick), join);
            _mm_cvtsi128_si64(_mm256_castsi256_si128(b)) as u64
        }

        /// The I32 output stage of [`tile`], inlined so the accumulators stay in
        /// registers (hence no `#[target_feature]`: the caller's apply).
        ///
        /// # Safety
        /// As [`gemm_tile`], and `args.m ≤ R`, `args.n ≤ 8·NU`; called only from a
        /// function compiled with the kernel's features.
        #[inline(always)]
        #[allow(clippy::needless_range_loop)] // parallel arrays indexed by v
        unsafe fn store_i32<const R: usize, const NU: usize>(args: &GemmArgs, acc: &[[__m256i; NU]; R]) {
            let (m, n) = (args.m, args.n);
            // SAFETY: the CPU features hold (caller). Memory: col_offset and
            // b_zero_point (when non-null) have n entries, a_row_sum (when non-null) m;
            // row i < m of the tile holds n i32 from c + i·ldc (contract); block v < NU
            // starts at column 8v < n (n > 8·(NU − 1) by the choice of NU).
            unsafe {
                let mut colo = [_mm256_setzero_si256(); NU];
                for v in 0..NU {
                    colo[v] = load_cols(args.out.col_offset, n, v);
                }
                let c0 = args.c.cast::<i32>();
                let zb_terms = !args.b_zero_point.is_null() && !args.a_row_sum.is_null();
                let mut zb = [_mm256_setzero_si256(); NU];
                if zb_terms {
                    for v in 0..NU {
                        zb[v] = load_cols(args.b_zero_point, n, v);
                    }
                }
                for i in 0..R {
                    if i < m {
                        let c = c0.add(i * args.ldc);
                        let rs = if zb_terms { _mm256_set1_epi32(*args.a_row_sum.add(i)) } else { _mm256_setzero_si256() };
                        for v in 0..NU {
                            let mut r = _mm256_add_epi32(acc[i][v], colo[v]);
                            if zb_terms {
                                r = _mm256_sub_epi32(r, _mm256_mullo_epi32(zb[v], rs));
                            }
                            store_cols(c.add(8 * v), r, n, v);
                        }
                    }
                }
            }
        }

        /// Adds the column and row terms and runs the F32 / U8 / I8 output stage on the
        /// `m × n` tile. Reads `n` entries of each per-column table the stage uses and
        /// `m` row sums; writes the `m × n` output tile only.
        ///
        /// # Safety
        /// As [`gemm_tile`], and `args.m ≤ R`, `args.n ≤ 8·NU`.
        #[target_feature(enable = $feat)]
        #[inline(never)]
        #[allow(clippy::needless_range_loop)] // parallel arrays indexed by v
        unsafe fn epilogue<const R: usize, const NU: usize>(args: &GemmArgs, acc: &[[__m256i; NU]; R]) {
            let (m, n) = (args.m.min(R), args.n);
            let out = &args.out;
            // SAFETY (table reads): col_offset has n entries, b_zero_point n when
            // non-null; block v < NU starts below n.
            let colo: [__m256i; NU] = core::array::from_fn(|v| unsafe { load_cols(out.col_offset, n, v) });
            let with_zb = !args.b_zero_point.is_null() && !args.a_row_sum.is_null();
            let zb: [__m256i; NU] = core::array::from_fn(|v| {
                if with_zb { unsafe { load_cols(args.b_zero_point, n, v) } } else { _mm256_setzero_si256() }
            });
            // Row i of the accumulators plus col_offset[j] − b_zero_point[j]·a_row_sum[i],
            // wrapping.
            let row_acc = |i: usize| -> [__m256i; NU] {
                // SAFETY: a_row_sum, non-null, has m > i entries.
                let rs = if with_zb { _mm256_set1_epi32(unsafe { *args.a_row_sum.add(i) }) } else { _mm256_setzero_si256() };
                core::array::from_fn(|v| {
                    let r = _mm256_add_epi32(acc[i][v], colo[v]);
                    if with_zb { _mm256_sub_epi32(r, _mm256_mullo_epi32(zb[v], rs)) } else { r }
                })
            };
            match (out.kind, out.mode) {
                (OutputKind::I32, _) => {
                    for i in 0..m {
                        let row = row_acc(i);
                        let c = args.c.cast::<i32>().wrapping_add(i * args.ldc);
                        for v in 0..NU {
                            // SAFETY: row i of the output tile, block v inside it.
                            unsafe { store_cols(c.wrapping_add(8 * v), row[v], n, v) };
                        }
                    }
                }
                (OutputKind::F32, _) => {
                    // SAFETY: scale has n entries for F32; bias_f32 too when non-null.
                    let scale: [__m256; NU] =
                        core::array::from_fn(|v| _mm256_castsi256_ps(unsafe { load_cols(out.scale.cast(), n, v) }));
                    let bias: [__m256; NU] = core::array::from_fn(|v| {
                        if out.bias_f32.is_null() {
                            _mm256_setzero_ps() // the reference adds +0.0 (−0.0 becomes +0.0)
                        } else {
                            _mm256_castsi256_ps(unsafe { load_cols(out.bias_f32.cast(), n, v) })
                        }
                    });
                    for i in 0..m {
                        let row = row_acc(i);
                        let c = args.c.cast::<i32>().wrapping_add(i * args.ldc);
                        for v in 0..NU {
                            // `acc as f32 * s + b` as the reference: two roundings, no FMA.
                            let y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(row[v]), scale[v]), bias[v]);
                            // SAFETY: row i of the output tile, block v inside it.
                            unsafe { store_cols(c.wrapping_add(8 * v), _mm256_castps_si256(y), n, v) };
                        }
                    }
                }
                (OutputKind::U8 | OutputKind::I8, mode) => {
                    let zp = out.out_zero_point as i64;
                    let (lo, hi) = (out.qmin as i64 - zp, out.qmax as i64 - zp);
                    // Integers up to 2^24 are exact in f32 (the Fp32 clamp below needs it).
                    const EXACT: i64 = 1 << 24;
                    if out.qmin > out.qmax || (mode == RequantMode::Fp32 && !(-EXACT <= lo && hi <= EXACT)) {
                        // Outside the contract's clamp bounds (an output-type zero point,
                        // qmin ≤ qmax): the scalar reference, whatever it does.
                        let mut lanes = [0i32; 8];
                        for i in 0..m {
                            let row = row_acc(i);
                            let c = args.c.wrapping_add(i * args.ldc);
                            for v in 0..NU {
                                // SAFETY: `lanes` holds 8 i32.
                                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), row[v]) };
                                for (jj, &a) in lanes.iter().enumerate().take(n.saturating_sub(8 * v)) {
                                    let j = 8 * v + jj;
                                    // SAFETY: `output_value` reads only the tables this
                                    // stage uses, at column j < n; (i, j) is in the tile.
                                    unsafe { c.add(j).write(output_value(a, j, out) as u8) };
                                }
                            }
                        }
                        return;
                    }
                    match mode {
                        RequantMode::Fp32 => {
                            // The reference: clamp(sat(round_half_even(acc·s)) + zp, qmin, qmax)
                            // = zp + clamp(round_half_even(acc·s), qmin − zp, qmax − zp), NaN → 0.
                            // The bounds are small integers, so the clamp runs on the float
                            // before the conversion (rounding is monotone and keeps
                            // integers): the conversion never sees an out-of-range value.
                            let lo_f = _mm256_set1_ps(lo as f32);
                            let hi_f = _mm256_set1_ps(hi as f32);
                            let zpv = _mm256_set1_epi32(out.out_zero_point);
                            // SAFETY: scale has n entries in Fp32 mode.
                            let scale: [__m256; NU] =
                                core::array::from_fn(|v| _mm256_castsi256_ps(unsafe { load_cols(out.scale.cast(), n, v) }));
                            // A finite scale times an accumulator is never NaN: the NaN fix-up
                            // is needed only when some scale is NaN or infinite (`s − s` is
                            // then NaN). Lanes past n are 0, finite.
                            let all_finite = scale.iter().all(|&s| {
                                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_ORD_Q>(_mm256_sub_ps(s, s), s)) == 0xff
                            });
                            for i in 0..m {
                                let row = row_acc(i);
                                let c = args.c.wrapping_add(i * args.ldc);
                                for v in 0..NU {
                                    let x = _mm256_mul_ps(_mm256_cvtepi32_ps(row[v]), scale[v]);
                                    // NaN → 0 (the reference's `as i64`), before max/min,
                                    // which would return their second operand for a NaN.
                                    let x = if all_finite { x } else { _mm256_and_ps(x, _mm256_cmp_ps::<_CMP_ORD_Q>(x, x)) };
                                    let x = _mm256_min_ps(_mm256_max_ps(x, lo_f), hi_f);
                                    // Round half to even: Rust runs with the default MXCSR.
                                    let q = _mm256_add_epi32(_mm256_cvtps_epi32(x), zpv);
                                    // In [qmin, qmax]: the low byte is the u8/i8 pattern.
                                    // SAFETY: row i of the tile, columns 8v.. < n.
                                    unsafe { store_bytes(c.add(8 * v), low_bytes(q), n - 8 * v) };
                                }
                            }
                        }
                        fixed => {
                            let single = fixed == RequantMode::SingleRounding;
                            let bounds = Bounds {
                                zp: _mm256_set1_epi64x(zp),
                                qmin: _mm256_set1_epi64x(out.qmin as i64),
                                qmax: _mm256_set1_epi64x(out.qmax as i64),
                            };
                            // Per-column parameters, columns 8v..8v+4 and 8v+4..8v+8, each
                            // 8-byte {multiplier, shift} one i64 lane.
                            let mut cols = [[FixedCols::from_lanes(_mm256_setzero_si256(), single); 2]; NU];
                            let mut any_shl = false;
                            for v in 0..NU {
                                for h in 0..2 {
                                    let first = 8 * v + 4 * h;
                                    let cnt = n.saturating_sub(first).min(4);
                                    let p = out.qmult.wrapping_add(first).cast::<i64>();
                                    // SAFETY: qmult has n entries in the fixed-point modes;
                                    // lanes of columns ≥ n are masked (not read).
                                    let q = unsafe {
                                        if cnt == 4 {
                                            _mm256_loadu_si256(p.cast())
                                        } else if cnt > 0 {
                                            let lane = _mm256_setr_epi64x(0, 1, 2, 3);
                                            _mm256_maskload_epi64(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(cnt as i64), lane))
                                        } else {
                                            _mm256_setzero_si256()
                                        }
                                    };
                                    cols[v][h] = FixedCols::from_lanes(q, single);
                                    any_shl |= _mm256_movemask_pd(_mm256_castsi256_pd(cols[v][h].shl)) != 0;
                                }
                            }
                            for i in 0..m {
                                let row = row_acc(i);
                                let c = args.c.wrapping_add(i * args.ldc);
                                for v in 0..NU {
                                    let a_lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(row[v]));
                                    let a_hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(row[v]));
                                    let (q_lo, q_hi) = if single {
                                        (
                                            finish(scale_fixed(a_lo, &cols[v][0], any_shl), &bounds),
                                            finish(scale_fixed(a_hi, &cols[v][1], any_shl), &bounds),
                                        )
                                    } else {
                                        (
                                            requant_double(a_lo, &cols[v][0], any_shl, &bounds),
                                            requant_double(a_hi, &cols[v][1], any_shl, &bounds),
                                        )
                                    };
                                    // In [qmin, qmax]: the low dword of each i64 lane holds
                                    // the value; gather them as 8 i32 lanes.
                                    let even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
                                    let q = _mm256_permute2x128_si256::<0x20>(
                                        _mm256_permutevar8x32_epi32(q_lo, even),
                                        _mm256_permutevar8x32_epi32(q_hi, even),
                                    );
                                    // SAFETY: row i of the tile, columns 8v.. < n.
                                    unsafe { store_bytes(c.add(8 * v), low_bytes(q), n - 8 * v) };
                                }
                            }
                        }
                    }
                }
            }
        }

        /// Output zero point and clamp bounds, in i64 lanes.
        struct Bounds {
            zp: __m256i,
            qmin: __m256i,
            qmax: __m256i,
        }

        /// The fixed-point parameters of 4 columns, in i64 lanes, derived once per tile
        /// from their `QuantizedMultiplier {multiplier, shift}`.
        ///
        /// Both modes start with `x = round_half_up(acc·M / 2^t)` on the exact product
        /// (`|acc·M| ≤ 2^62`): TfliteDoubleRounding's
        /// `SaturatingRoundingDoublingHighMul(acc·2^left, M)` is
        /// `floor((acc·M·2^left + 2^30) / 2^31)`, that with `t = 31 − left`;
        /// SingleRounding is that with `t = 31 − shift`. Where `t ≤ 0` it is an exact
        /// left shift by `−t`. TfliteDoubleRounding then applies
        /// `RoundingDivideByPOT(x, right)`.
        #[derive(Clone, Copy)]
        struct FixedCols {
            /// The multiplier in the low 32 bits (what `vpmuldq` reads).
            mult: __m256i,
            /// The rounding right shift `t`.
            t: __m256i,
            /// All-ones lanes where `t ≤ 0`: an exact left shift by `−t` instead.
            shl: __m256i,
            /// `max(−t, 0)`.
            s: __m256i,
            /// `2^61 >> s`: the largest `|product|` whose left shift stays within `2^61`.
            lim: __m256i,
            /// TfliteDoubleRounding: `min(max(−shift, 0), 62)` (a larger exponent gives 0
            /// as 62 does, since then `|x| ≤ 2^31`); 0 for SingleRounding.
            right: __m256i,
            /// `2^right − 1`, for the ties-away rounding.
            rmask: __m256i,
            /// `rmask >> 1`.
            rhalf: __m256i,
        }

        /// `max(a, b)` of i64 lanes.
        #[target_feature(enable = $feat)]
        #[inline]
        fn max64(a: __m256i, b: __m256i) -> __m256i {
            _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(a, b))
        }

        /// `min(a, b)` of i64 lanes.
        #[target_feature(enable = $feat)]
        #[inline]
        fn min64(a: __m256i, b: __m256i) -> __m256i {
            _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b))
        }

        /// Arithmetic right shift of i64 lanes by per-lane counts, a count of 64 or more
        /// (as unsigned) giving the sign fill, like AVX-512's `vpsravq`: a logical shift
        /// of `x XOR sign`, XORed back.
        #[target_feature(enable = $feat)]
        #[inline]
        fn sra64(x: __m256i, count: __m256i) -> __m256i {
            let s = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
            _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(x, s), count), s)
        }

        impl FixedCols {
            /// From 4 `{multiplier, shift}` lanes, for TfliteDoubleRounding
            /// (`t = 31 − max(shift, 0)`, `right = min(max(−shift, 0), 62)`) or, with
            /// `single`, SingleRounding (`t = 31 − shift`, no second rounding).
            #[target_feature(enable = $feat)]
            fn from_lanes(q: __m256i, single: bool) -> FixedCols {
                let zero = _mm256_setzero_si256();
                let one = _mm256_set1_epi64x(1);
                // The shift: each lane's high dword, sign-extended.
                let h = _mm256_shuffle_epi32::<0b11_11_01_01>(q);
                let shift = _mm256_blend_epi32::<0b1010_1010>(h, _mm256_srai_epi32::<31>(h));
                let c31 = _mm256_set1_epi64x(31);
                let (t, right) = if single {
                    (_mm256_sub_epi64(c31, shift), zero)
                } else {
                    (
                        _mm256_sub_epi64(c31, max64(shift, zero)),
                        min64(max64(_mm256_sub_epi64(zero, shift), zero), _mm256_set1_epi64x(62)),
                    )
                };
                let s = max64(_mm256_sub_epi64(zero, t), zero);
                let rmask = _mm256_sub_epi64(_mm256_sllv_epi64(one, right), one);
                FixedCols {
                    mult: q,
                    t,
                    shl: _mm256_cmpgt_epi64(one, t),
                    s,
                    // Logical shift: counts ≥ 64 give 0, so any nonzero product saturates.
                    lim: _mm256_srlv_epi64(_mm256_set1_epi64x(1 << 61), s),
                    right,
                    rmask,
                    rhalf: _mm256_srli_epi64::<1>(rmask),
                }
            }
        }

        /// `round_half_up(acc·M / 2^t)` for 4 accumulators (sign-extended to i64
        /// lanes), exact: `(p >> t) + bit t−1 of p`. Lanes with `t ≤ 0` (only when
        /// `any_shl`) take `p << −t`, or `±2^61` where that would pass `2^61` — beyond
        /// any clamp range, with the product's sign, as the reference's exact
        /// arithmetic gives.
        #[target_feature(enable = $feat)]
        #[inline]
        fn scale_fixed(a: __m256i, c: &FixedCols, any_shl: bool) -> __m256i {
            let p = _mm256_mul_epi32(a, c.mult);
            let one = _mm256_set1_epi64x(1);
            let bit = _mm256_and_si256(sra64(p, _mm256_sub_epi64(c.t, one)), one);
            let x = _mm256_add_epi64(sra64(p, c.t), bit);
            if !any_shl {
                return x;
            }
            let zero = _mm256_setzero_si256();
            let neg = _mm256_cmpgt_epi64(zero, p);
            let ovf = _mm256_and_si256(
                c.shl,
                _mm256_or_si256(_mm256_cmpgt_epi64(p, c.lim), _mm256_cmpgt_epi64(_mm256_sub_epi64(zero, c.lim), p)),
            );
            let big = _mm256_blendv_epi8(_mm256_set1_epi64x(1 << 61), _mm256_set1_epi64x(-(1 << 61)), neg);
            let shifted = _mm256_blendv_epi8(_mm256_sllv_epi64(p, c.s), big, ovf);
            _mm256_blendv_epi8(x, shifted, c.shl)
        }

        /// `+ zp`, clamped to `[qmin, qmax]` (no i64 overflow: `|x| ≤ 2^62`).
        #[target_feature(enable = $feat)]
        #[inline]
        fn finish(x: __m256i, b: &Bounds) -> __m256i {
            min64(max64(_mm256_add_epi64(x, b.zp), b.qmin), b.qmax)
        }

        /// TfliteDoubleRounding on 4 accumulators, exactly as
        /// `reference::requant::requantize_fixed`: [`scale_fixed`], then gemmlowp's
        /// `RoundingDivideByPOT(high, right)` (ties away from zero), `+ zp`, clamp.
        #[target_feature(enable = $feat)]
        #[inline]
        fn requant_double(a: __m256i, c: &FixedCols, any_shl: bool, b: &Bounds) -> __m256i {
            let high = scale_fixed(a, c, any_shl);
            // right > 0 only where shift < 0, i.e. t = 31 and |high| ≤ 2^31.
            let neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), high);
            let remainder = _mm256_and_si256(high, c.rmask);
            let threshold = _mm256_sub_epi64(c.rhalf, neg);
            let q = sra64(high, c.right);
            // `cmpgt` is −1 where the remainder passes the threshold: subtracting adds 1.
            let q = _mm256_sub_epi64(q, _mm256_cmpgt_epi64(remainder, threshold));
            finish(q, b)
        }
    };
}

/// The AVX-VNNI instance: VEX `vpdpbusd ymm`, AVX2 + AVX-VNNI only.
pub mod vex {
    ymm_vnni_gemm!(features = "avx2,fma,avxvnni", dpbusd = _mm256_dpbusd_avx_epi32, cpu = "AVX2 and AVX-VNNI.");
}

/// The AVX-512 twin: the same kernel with EVEX `vpdpbusd ymm` (AVX-512 VNNI + VL), so
/// that hosts without AVX-VNNI test and time the shared logic.
pub mod evex {
    ymm_vnni_gemm!(
        features = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni",
        dpbusd = _mm256_dpbusd_epi32,
        cpu = "AVX2 and AVX-512 F/BW/VL/VNNI."
    );
}
