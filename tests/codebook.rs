//! Codebook (table-lookup) GEMM / GEMV: every kernel at every tier this CPU runs, exact
//! against the plain decode-and-multiply reference (`qkern_kernels::reference`).

mod common;

use qkern::codebook::{self, CodebookFamily, CodebookWeights};
use qkern::quant::{ApotFormat, Granularity, LevelParams, LevelSet, PackedCodes, PotFormat};
use qkern::{Activations, Context, Error, Int8, Isa, MatrixMut, MatrixRef, Requantize, RequantMode};
use qkern_kernels::reference::codebook_gemm_i64;
use qkern_kernels::reference::requant::{quantize_multiplier, requantize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// llama.cpp's IQ4_NL table: a learned codebook whose grid reaches 127 (beyond the
/// AVX2 `vpmaddubsw` bound of 64).
const IQ4_NL: [i16; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

fn sets() -> Vec<(&'static str, LevelSet)> {
    vec![
        ("pot4", PotFormat::signed(4).unwrap().level_set()),
        ("apot4", ApotFormat::weight(4).unwrap().level_set()),
        ("iq4_nl", LevelSet::codebook_i16(4, &IQ4_NL).unwrap()),
        // A codebook with fewer than 16 levels and no zero: K padding must not count.
        ("cb7", LevelSet::codebook_i16(4, &[-90, -33, -5, 3, 17, 40, 101]).unwrap()),
        // 5-bit: APoT-5 weights (grid 48) and a 32-level codebook reaching ±127.
        ("apot5", ApotFormat::weight(5).unwrap().level_set()),
        ("cb32", LevelSet::codebook_i16(5, &(0..32).map(|i| (i * 8 - 127).min(127) as i16).collect::<Vec<_>>()).unwrap()),
        // Every level `±(2^a [+ 2^b])`, up to the shift format's largest, 96 = 2^6 + 2^5:
        // the bit-shift kernels without a table bound run it (255·96 in one i16 lane).
        ("shift96", LevelSet::codebook_i16(4, &[-96, -80, -72, -68, -66, -65, -64, -40, -3, 0, 1, 6, 34, 65, 80, 96]).unwrap()),
    ]
    .into_iter()
    .chain(wide_sets())
    .collect()
}

/// Grids beyond int8, run by the i16-table kernels: PoT-5 (grid 2^14), 4-bit log
/// (unsigned PoT: 2^0 … 2^14), and a learned 4-bit table at both ends of i16 with the
/// values around the int8 edge.
fn wide_sets() -> Vec<(&'static str, LevelSet)> {
    vec![
        ("pot5", PotFormat::signed(5).unwrap().level_set()),
        ("log4", PotFormat::unsigned(4).unwrap().level_set()),
        ("cb16w", LevelSet::codebook_i16(4, &[-32767, -20001, -129, -128, -1, 0, 1, 127, 128, 1000, 32767]).unwrap()),
    ]
}

/// Packed codes of a random K × N matrix over `set` (per-column power-of-two scales),
/// or the extreme code everywhere when `extreme`.
fn packed(set: &LevelSet, k: usize, n: usize, rng: &mut ChaCha8Rng, extreme: Option<u8>) -> PackedCodes {
    let nc = set.num_codes() as u8;
    let codes: Vec<u8> = (0..k * n).map(|_| extreme.unwrap_or_else(|| rng.random_range(0..nc))).collect();
    let scales: Vec<f32> = (0..n).map(|j| (2f32).powi(-(j as i32 % 5) - 3)).collect();
    let params = LevelParams::per_channel(set.clone(), 1, scales).unwrap();
    PackedCodes::pack(&codes, k, n, &params).unwrap()
}

/// The code of `set` with the largest |grid value|.
fn max_code(set: &LevelSet) -> u8 {
    let g = set.grid().unwrap().values();
    (0..g.len()).max_by_key(|&c| g[c].unsigned_abs()).unwrap() as u8
}

/// The codes of `set`'s largest and smallest grid values (both signs at full magnitude
/// for the symmetric sets).
fn end_codes(set: &LevelSet) -> [u8; 2] {
    let g = set.grid().unwrap().values();
    let n = set.num_codes();
    [(0..n).max_by_key(|&c| g[c]).unwrap() as u8, (0..n).min_by_key(|&c| g[c]).unwrap() as u8]
}

fn grid(set: &LevelSet) -> Vec<i16> {
    set.grid().unwrap().values().to_vec()
}

/// The exact product (i64, no bias) by the plain decode-and-multiply reference; computed
/// once per input and shared by every kernel checked on it (this keeps the suite fast
/// under qemu).
fn reference<A: Int8>(p: &PackedCodes, set: &LevelSet, m: usize, a: &[A], lda: usize, za: A) -> Vec<i64> {
    let (k, n) = (p.k(), p.n());
    let mut r = vec![0i64; m * n];
    codebook_gemm_i64(m, n, k, a, lda, za.to_i32(), |kk, j| p.code(kk, j).unwrap(), &grid(set), &mut r, n);
    r
}

/// Runs i32 and f32 output through `ctx` with `w`, against the reference product `r`
/// (from [`reference`] on the same inputs).
#[allow(clippy::too_many_arguments)]
fn check<A: Int8>(ctx: &Context, w: &CodebookWeights, p: &PackedCodes, m: usize, a: &[A], lda: usize, za: A, r: &[i64], what: &str) {
    let (k, n) = (p.k(), p.n());
    let bias: Vec<i32> = (0..n as i32).map(|j| j * 7 - 50).collect();
    let sa = 0.03125f32;
    let am = MatrixRef::new(a, m, k).with_stride(lda);
    // i32, with bias; a result beyond i32 must be an Overflow error.
    let mut c = vec![0i32; m * n];
    let res = ctx.codebook_gemm_i32(Activations::new(am, za, sa), w, Some(&bias), MatrixMut::new(&mut c, m, n));
    let want: Vec<i64> = r.iter().enumerate().map(|(i, v)| v + bias[i % n] as i64).collect();
    if want.iter().all(|v| i32::try_from(*v).is_ok()) {
        res.unwrap_or_else(|e| panic!("{what}: {e}"));
        for (i, (&got, &wv)) in c.iter().zip(&want).enumerate() {
            assert_eq!(got as i64, wv, "{what}: i32 C[{}][{}] (kernel {})", i / n, i % n, w.kernel_name_for(m));
        }
    } else {
        assert!(matches!(res, Err(Error::Overflow(_))), "{what}: expected an overflow error, got {res:?}");
    }
    // f32, with an f32 bias.
    let fb: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
    let mut cf = vec![0f32; m * n];
    ctx.codebook_gemm_f32(Activations::new(am, za, sa), w, Some(&fb), MatrixMut::new(&mut cf, m, n)).unwrap_or_else(|e| panic!("{what}: {e}"));
    let gs = p.grid_scales().unwrap();
    for (i, (&got, &acc)) in cf.iter().zip(r).enumerate() {
        let j = i % n;
        let e = acc as f32 * (sa * gs[j]) + fb[j];
        assert_eq!(got.to_bits(), e.to_bits(), "{what}: f32 C[{}][{j}] = {got} want {e} (kernel {})", i / n, w.kernel_name_for(m));
    }
}

/// Every codebook kernel usable at `isa` that can run `p` exactly; and for each with a
/// decoded path (codes decoded to int8 panels, the int8 GEMM over the rows), the same
/// weights taking it from one row on, so every test here runs that path too.
fn weights_for(ctx: &Context, p: &PackedCodes) -> Vec<CodebookWeights> {
    let ws: Vec<CodebookWeights> =
        ctx.kernels().codebook_candidates.iter().filter_map(|k| CodebookWeights::with_kernel(ctx, p, k.name).ok()).collect();
    let decoded: Vec<CodebookWeights> = ws.iter().filter(|w| w.decode_kernels().is_some()).map(|w| w.clone().with_decode_min_m(1)).collect();
    ws.into_iter().chain(decoded).collect()
}

fn sweep<A: Int8>(rng: &mut ChaCha8Rng) {
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap().with_threads(1).unwrap();
        for (name, set) in sets() {
            for &k in &[1usize, 7, 8, 9, 63, 64, 129, 1001] {
                for &n in &[1usize, 17, 33, 47] {
                    let p = packed(&set, k, n, rng, None);
                    let ws = weights_for(&ctx, &p);
                    assert!(!ws.is_empty(), "{name} at {}: no kernel", isa.name());
                    for m in 1..=9usize {
                        let lda = k + 3;
                        let a: Vec<A> = (0..m * lda).map(|_| A::from_bits(rng.random())).collect();
                        let za = A::from_bits(rng.random());
                        let r = reference(&p, &set, m, &a, lda, za);
                        for w in &ws {
                            let what = format!("{} {name} {} m={m} n={n} k={k} {}", isa.name(), w.kernel_name_for(m), A::NAME);
                            check(&ctx, w, &p, m, &a, lda, za, &r, &what);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn exact_u8_every_kernel_every_tier() {
    sweep::<u8>(&mut ChaCha8Rng::seed_from_u64(1));
}

#[test]
fn exact_i8_every_kernel_every_tier() {
    sweep::<i8>(&mut ChaCha8Rng::seed_from_u64(2));
}

/// Extremes: activations at the ends of their range against the zero point at the other
/// end, weights all at the largest |grid| code; also a K long enough for the chunked
/// (i64) path, where the i32 result overflows (error) and the f32 one does not.
fn extremes<A: Int8>() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
        for (name, set) in sets() {
            for &k in &[33usize, 4099, 70_001] {
                let n = 35;
                let mut ends = vec![max_code(&set)];
                ends.extend(end_codes(&set).into_iter().filter(|&c| c != max_code(&set)));
                for code in ends {
                let p = packed(&set, k, n, &mut rng, Some(code));
                let ws = weights_for(&ctx, &p);
                for (av, zv) in [(A::MAX, A::MIN), (A::MIN, A::MAX), (A::MAX, A::MAX)] {
                    let m = 3;
                    let a = vec![A::saturate_from(av); m * k];
                    let r = reference(&p, &set, m, &a, k, A::saturate_from(zv));
                    for w in &ws {
                        let what = format!("{} {name} {} extremes k={k} a={av} za={zv} {}", isa.name(), w.kernel_name_for(3), A::NAME);
                        check(&ctx, w, &p, m, &a, k, A::saturate_from(zv), &r, &what);
                    }
                }
                }
                // Random codes at the long K: results fit, chunked path compared exactly.
                if k > 65_000 {
                    let p = packed(&set, k, n, &mut rng, None);
                    let m = 5;
                    let a: Vec<A> = (0..m * k).map(|_| A::from_bits(rng.random())).collect();
                    let r = reference(&p, &set, m, &a, k, A::saturate_from(A::MIN));
                    for w in weights_for(&ctx, &p) {
                        let what = format!("{} {name} {} long K {}", isa.name(), w.kernel_name_for(5), A::NAME);
                        check(&ctx, &w, &p, m, &a, k, A::saturate_from(A::MIN), &r, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn extremes_and_long_k_u8() {
    extremes::<u8>();
}

#[test]
fn extremes_and_long_k_i8() {
    extremes::<i8>();
}

#[test]
fn threads_split_gemv_and_gemm() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let ctx = Context::new().unwrap().with_threads(2).unwrap();
    for set in [PotFormat::signed(4).unwrap().level_set(), PotFormat::signed(5).unwrap().level_set()] {
        // k = 4099 with PoT-5: the chunked path (its i32 bound is K ≈ 514 at grid 2^14).
        for &(m, n, k) in &[(1usize, 1000usize, 515usize), (3, 200, 700), (70, 130, 300), (2, 300, 4099)] {
            let p = packed(&set, k, n, &mut rng, None);
            let w = CodebookWeights::new_in(&ctx, &p).unwrap();
            let a: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
            let r = reference(&p, &set, m, &a, k, 0u8);
            check(&ctx, &w, &p, m, &a, k, 0u8, &r, &format!("threads {} m={m} n={n} k={k}", w.kernel_name_for(m)));
        }
    }
}

/// One row over many panels: the kernels' GEMV entries (`CodebookUkernel::gemv`) walk
/// all of a task's panels in one call, in runs of several, so N here crosses those runs,
/// with every output stage, one thread and two (each thread's share walked in one call).
#[test]
fn gemv_entries_walk_many_panels_every_stage() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for isa in common::available_isas() {
        for threads in [1, 2] {
            let ctx = Context::for_isa(isa).unwrap().with_threads(threads).unwrap();
            for (name, set) in sets().into_iter().filter(|(name, _)| ["iq4_nl", "cb7", "pot4"].contains(name)) {
                for &(n, k) in &[(257usize, 9usize), (289, 1001), (1000, 64), (4100, 17)] {
                    let p = packed(&set, k, n, &mut rng, None);
                    for w in weights_for(&ctx, &p) {
                        let a: Vec<u8> = (0..k).map(|_| rng.random()).collect();
                        let ai: Vec<i8> = (0..k).map(|_| rng.random()).collect();
                        let (za, zi) = (rng.random::<u8>(), rng.random::<i8>());
                        let (r, ri) = (reference(&p, &set, 1, &a, k, za), reference(&p, &set, 1, &ai, k, zi));
                        let what = format!("{} {name} {} threads={threads} n={n} k={k}", isa.name(), w.kernel_name_for(1));
                        check(&ctx, &w, &p, 1, &a, k, za, &r, &what);
                        check(&ctx, &w, &p, 1, &ai, k, zi, &ri, &what);
                        rq_case::<u8, u8>(&ctx, &w, &p, 1, &a, k, za, &r, MODES[n % 3], n, &what);
                        rq_case::<i8, i8>(&ctx, &w, &p, 1, &ai, k, zi, &ri, MODES[k % 3], k, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn dispatch_picks_the_best_exact_kernel_per_tier() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Besides the sweep's sets, learned tables reaching −128 (beyond the sign tiles).
    let m128 = [
        ("cb_m128", LevelSet::codebook_i16(4, &[-128, -60, 0, 5, 127]).unwrap()),
        ("cb32_m128", LevelSet::codebook_i16(5, &(0..32).map(|i| (i * 8 - 128) as i16).collect::<Vec<_>>()).unwrap()),
    ];
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap();
        for (name, set) in sets().into_iter().chain(m128.clone()) {
            let p = packed(&set, 16, 16, &mut rng, None);
            let w = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Lut).unwrap();
            let k = ctx.kernels().codebook_candidates.iter().find(|k| k.name == w.kernel_name()).unwrap();
            let gmax = set.grid().unwrap().max_abs() as i32;
            assert!(k.max_abs_table.is_none_or(|x| gmax <= x), "{name}: {} picked beyond its bound", k.name);
            // The i16 table exactly when the grid is beyond int8 (a table holding −128
            // counts: the packer takes ±127 as the i8 range), at the tier's own kernel
            // (ARM: NEON's, from every tier).
            assert_eq!(k.table_i16, gmax > 127, "{name} at {}: {}", isa.name(), k.name);
            if gmax > 127 {
                let expect_isa = match isa {
                    Isa::AvxVnni => Isa::Avx2,
                    Isa::Amx => Isa::Avx512Vnni,
                    Isa::Dotprod | Isa::I8mm => Isa::Neon,
                    _ => isa,
                };
                assert_eq!(k.isa, expect_isa, "{name} at {}: {}", isa.name(), k.name);
                assert_eq!(k.bits, set.bits().max(4), "{name}: {}", k.name);
                continue;
            }
            // `qkern info` and the runtime report name the kernel for a ±127 grid.
            if gmax == 127 {
                let reported = ctx.kernels().codebook_kernel(k.bits).map(|r| r.name);
                assert_eq!(reported, Some(k.name), "{name} at {}: the reported kernel", isa.name());
            }
            // AVX2: the `vpmaddubsw` tile within ±64, else the sign tile (within ±127).
            if matches!(isa, Isa::Avx2 | Isa::AvxVnni) {
                let want = if gmax <= 64 { "_maddubs__" } else { "_sign__" };
                assert!(k.name.contains(want), "{name} at {}: {}, want {want}", isa.name(), k.name);
            }
            let expect_isa = match isa {
                Isa::Avx512Vnni => Isa::Avx512Vnni,
                Isa::Avx2 | Isa::AvxVnni => Isa::Avx2,
                // AArch64: `smull` at NEON, `sdot` at dotprod, `smmla` at i8mm.
                Isa::Neon | Isa::Dotprod | Isa::I8mm => isa,
                _ => k.isa,
            };
            assert_eq!(k.isa, expect_isa, "{name} at {}: {}", isa.name(), k.name);
        }
    }
}

/// Every i8-table lookup kernel this CPU runs, called directly by the shared tester
/// (`qkern_kernels::testing::check_codebook_ukernel`): tables over the kernel's whole
/// range (both ends of i8, −128 included, for the kernels without a table bound — the
/// packer never builds such a table, the kernels must still be exact for it), K tails and
/// K past the i32 bound (wrapping sums), every tile height, activation extremes.
#[test]
fn every_lookup_kernel_direct_any_table() {
    let tiers = common::available_isas();
    let mut checked = 0;
    for k in qkern::dispatch::codebook_kernels() {
        if k.family != CodebookFamily::Lut || k.table_i16 || !tiers.contains(&k.isa) || !qkern::dispatch::codebook_runs_here(&k) {
            continue;
        }
        // SAFETY: the CPU runs the kernel's tier and features (checked above).
        let s = unsafe { qkern_kernels::testing::check_codebook_ukernel(&k) };
        assert!(s.calls > 0, "{}", k.name);
        checked += 1;
    }
    assert!(checked > 0, "no lookup kernel checked");
}

#[test]
fn errors_name_the_argument() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let set = ApotFormat::weight(4).unwrap().level_set();
    let p = packed(&set, 10, 4, &mut rng, None);
    let ctx = Context::new().unwrap();
    let w = CodebookWeights::new_in(&ctx, &p).unwrap();
    let a = [0u8; 30];
    let mut c = [0i32; 12];
    let e = ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, 3, 9), 0u8, 1.0), &w, None, MatrixMut::new(&mut c, 3, 4));
    assert!(matches!(e, Err(Error::ShapeMismatch(_))), "{e:?}");
    let e = ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, 3, 10), 0u8, 1.0), &w, None, MatrixMut::new(&mut c, 3, 3));
    assert!(matches!(e, Err(Error::ShapeMismatch(_))), "{e:?}");
    let e = ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a[..20], 3, 10), 0u8, 1.0), &w, None, MatrixMut::new(&mut c, 3, 4));
    assert!(e.is_err(), "short A accepted");
    let e = ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, 3, 10), 0u8, 1.0), &w, Some(&[1, 2]), MatrixMut::new(&mut c, 3, 4));
    assert!(matches!(e, Err(Error::ShapeMismatch(_))), "{e:?}");
    let mut cf = [0f32; 12];
    let e = ctx.codebook_gemm_f32(Activations::new(MatrixRef::new(&a, 3, 10), 0u8, f32::NAN), &w, None, MatrixMut::new(&mut cf, 3, 4));
    assert!(e.is_err(), "NaN scale accepted");
    // A set the lookup kernels cannot run: no grid (base √2).
    let sqrt2 = PotFormat::signed(4).unwrap().with_base(qkern::quant::PotBase::Sqrt2).level_set();
    let p = PackedCodes::pack(&[0u8; 8], 4, 2, &LevelParams::new(sqrt2, Granularity::PerTensor, vec![1.0]).unwrap()).unwrap();
    let e = CodebookWeights::new_in(&ctx, &p);
    assert!(matches!(&e, Err(Error::Unsupported(m)) if m.contains("no integer grid")), "{e:?}");
    // A grid beyond int8 (PoT-5): the lookup family runs it on an i16 table; the shift
    // family and every i8-table kernel refuse it by its grid.
    let pot5 = PotFormat::signed(5).unwrap().level_set();
    let p5 = packed(&pot5, 8, 8, &mut rng, None);
    let w5 = CodebookWeights::new_in(&ctx, &p5).unwrap();
    assert!(w5.table().is_empty() && w5.table_i16() == pot5.grid().unwrap().values(), "{:?}", w5.table_i16());
    assert_eq!(w5.grid_max(), 16384);
    let e = CodebookWeights::with_family(&ctx, &p5, CodebookFamily::Shift);
    assert!(matches!(&e, Err(Error::Unsupported(m)) if m.contains("16384") && m.contains("lut")), "{e:?}");
    for k in ctx.kernels().codebook_candidates.iter().filter(|k| !k.table_i16 && (k.family == CodebookFamily::Shift || k.bits == 5)) {
        let e = CodebookWeights::with_kernel(&ctx, &p5, k.name);
        assert!(matches!(&e, Err(Error::Unsupported(m)) if m.contains("16384")), "{}: {e:?}", k.name);
    }
    // The shift family refuses a learned codebook by value (the lookup family runs it).
    let iq = LevelSet::codebook_i16(4, &IQ4_NL).unwrap();
    let p_iq = packed(&iq, 8, 8, &mut rng, None);
    let e = CodebookWeights::with_family(&ctx, &p_iq, CodebookFamily::Shift);
    assert!(matches!(&e, Err(Error::Unsupported(m)) if m.contains("-127") && m.contains("lut")), "{e:?}");
    assert!(CodebookWeights::with_family(&ctx, &p_iq, CodebookFamily::Lut).is_ok());
    assert_eq!(codebook::parse_family(" LUT ").unwrap(), Some(CodebookFamily::Lut));
    assert_eq!(codebook::parse_family("").unwrap(), None);
    assert!(codebook::parse_family("lookup").is_err());
    // A kernel whose table bound does not hold is refused by name.
    let iq = LevelSet::codebook_i16(4, &IQ4_NL).unwrap();
    let p = packed(&iq, 8, 8, &mut rng, None);
    if let Some(k) = ctx.kernels().codebook_candidates.iter().find(|k| k.max_abs_table.is_some()) {
        assert!(matches!(CodebookWeights::with_kernel(&ctx, &p, k.name), Err(Error::Unsupported(_))));
    }
}

/// The shift family at every tier: the packer picks the tier's own shift kernel with the
/// number of terms the level set needs (PoT one, APoT two), a one-term kernel refuses
/// APoT weights, and each shift kernel of the tier is among those the sweeps run.
#[test]
fn shift_family_picks_the_tier_kernel_with_the_right_terms() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap();
        let shift: Vec<_> = ctx.kernels().codebook_candidates.iter().filter(|k| k.family == CodebookFamily::Shift).copied().collect();
        assert!(!shift.is_empty(), "no shift kernel at {}", isa.name());
        for (name, set, terms) in [
            ("pot4", PotFormat::signed(4).unwrap().level_set(), 1),
            ("apot4", ApotFormat::weight(4).unwrap().level_set(), 2),
            ("apot5", ApotFormat::weight(5).unwrap().level_set(), 2),
        ] {
            let p = packed(&set, 40, 20, &mut rng, None);
            let w = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Shift).unwrap();
            let k = shift.iter().find(|k| k.name == w.kernel_name()).unwrap();
            assert_eq!(k.format.bits, 8 * terms, "{name} at {}: {}", isa.name(), k.name);
            // x86: each tier's own shift kernels (AVX-VNNI adds none over AVX2); ARM: the
            // NEON ones at every tier (dotprod and i8mm add none).
            let want_isa = match isa {
                Isa::AvxVnni => Isa::Avx2,
                Isa::Amx => Isa::Avx512Vnni,
                Isa::Neon | Isa::Dotprod | Isa::I8mm => Isa::Neon,
                Isa::Scalar | Isa::Avx2 | Isa::Avx512Vnni => isa,
            };
            assert_eq!(k.isa, want_isa, "{name} at {}: {}", isa.name(), k.name);
            let runs: Vec<_> = weights_for(&ctx, &p).iter().map(|w| w.kernel_name()).collect();
            for s in shift.iter().filter(|s| s.format.bits >= 8 * terms) {
                assert!(runs.contains(&s.name), "{name} at {}: {} not swept", isa.name(), s.name);
            }
            if terms == 2 {
                for s in shift.iter().filter(|s| s.format.bits == 8) {
                    assert!(matches!(CodebookWeights::with_kernel(&ctx, &p, s.name), Err(Error::Unsupported(_))), "{}", s.name);
                }
            }
            let a: Vec<u8> = (0..120).map(|i| (i * 37 % 256) as u8).collect();
            let r = reference(&p, &set, 3, &a, 40, 9u8);
            check(&ctx, &w, &p, 3, &a, 40, 9u8, &r, name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requantized output (u8 / i8)

const MODES: [RequantMode; 3] = [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding];

/// The requantized reference, built here from the exact product `r` (no bias): per column
/// the multiplier `(sa·gs[j])/so` in f32 (ONNX) or TFLite's `QuantizeMultiplier` of it in
/// f64, then the scalar `requantize` of `r + bias` (i64, no wrap), clamped.
#[allow(clippy::too_many_arguments)]
fn requant_ref(r: &[i64], n: usize, bias: Option<&[i32]>, sa: f32, gs: &[f32], so: f32, mode: RequantMode, zo: i32, lo: i32, hi: i32) -> Vec<i32> {
    r.iter()
        .enumerate()
        .map(|(i, &acc)| {
            let j = i % n;
            let acc = acc + bias.map_or(0, |b| b[j] as i64);
            let scale = (sa * gs[j]) / so;
            let qm = quantize_multiplier(sa as f64 * gs[j] as f64 / so as f64, mode);
            requantize(acc, mode, scale, qm, zo, lo, hi)
        })
        .collect()
}

/// One requantized call through `ctx` and `w` (C rows `ldc` apart, the gaps between rows
/// checked untouched) against [`requant_ref`] on the reference product `r`.
#[allow(clippy::too_many_arguments)]
fn check_rq<A: Int8, O: Int8>(
    ctx: &Context,
    w: &CodebookWeights,
    p: &PackedCodes,
    m: usize,
    a: &[A],
    lda: usize,
    za: A,
    sa: f32,
    r: &[i64],
    rq: &Requantize<'_, O>,
    ldc: usize,
    what: &str,
) {
    let (k, n) = (p.k(), p.n());
    let sentinel = O::from_bits(0xA5);
    let mut c = vec![sentinel; (m - 1) * ldc + n];
    let am = MatrixRef::new(a, m, k).with_stride(lda);
    ctx.codebook_gemm_requantize(Activations::new(am, za, sa), w, rq, MatrixMut::new(&mut c, m, n).with_stride(ldc))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = requant_ref(r, n, rq.bias, sa, p.grid_scales().unwrap(), rq.scale, rq.mode, rq.zero_point.to_i32(), rq.min.to_i32(), rq.max.to_i32());
    for i in 0..m {
        for j in 0..n {
            let got = c[i * ldc + j].to_i32();
            assert_eq!(
                got,
                want[i * n + j],
                "{what}: {} {} C[{i}][{j}] (acc {}, so {}, zo {}, clamp [{}, {}], bias {:?}; kernel {})",
                O::NAME,
                rq.mode.name(),
                r[i * n + j],
                rq.scale,
                rq.zero_point.to_i32(),
                rq.min.to_i32(),
                rq.max.to_i32(),
                rq.bias.map(|b| b[j]),
                w.kernel_name_for(m)
            );
        }
        if i + 1 < m {
            assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.to_bits() == 0xA5), "{what}: a gap between rows was written");
        }
    }
}

/// The output configurations of one case, rotated by `case` so the sweep covers each
/// with every mode and output type without running all of them everywhere: a spread
/// scale (some columns saturate) with bias, ReLU, a narrow clamp with a small scale
/// (mostly saturating), and power-of-two multipliers (½, ¼, …: exact ties).
#[allow(clippy::too_many_arguments)]
fn rq_case<A: Int8, O: Int8>(ctx: &Context, w: &CodebookWeights, p: &PackedCodes, m: usize, a: &[A], lda: usize, za: A, r: &[i64], mode: RequantMode, case: usize, what: &str) {
    let n = p.n();
    let gs = p.grid_scales().unwrap();
    let sa = 0.03125f32;
    let bias: Vec<i32> = (0..n as i32).map(|j| j * 37 - 300).collect();
    let amax = r.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0).max(1) as f32;
    let spread = sa * gs[0] * amax / 150.0 * 1.37;
    let zmid = O::saturate_from((O::MIN + O::MAX) / 2 + 3);
    let rq = match case % 4 {
        0 => Requantize::new(spread, zmid).mode(mode).bias(&bias),
        1 => Requantize::new(spread, O::saturate_from(O::MIN + 37)).mode(mode).relu(),
        2 => Requantize::new(spread / 8.0, zmid).mode(mode).bias(&bias).clamp(O::saturate_from(O::MIN + 20), O::saturate_from(O::MAX - 30)),
        _ => Requantize::new(sa * gs[0] * 2.0, zmid).mode(mode).bias(&bias),
    };
    let ldc = n + case % 2;
    check_rq(ctx, w, p, m, a, lda, za, sa, r, &rq, ldc, &format!("{what} case {}", case % 4));
}

fn requant_sweep<A: Int8>(rng: &mut ChaCha8Rng) {
    let mut case = 0usize;
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap().with_threads(1).unwrap();
        for (name, set) in sets() {
            for &k in &[1usize, 9, 64, 1001] {
                for &n in &[1usize, 17, 47] {
                    let p = packed(&set, k, n, rng, None);
                    let ws = weights_for(&ctx, &p);
                    assert!(!ws.is_empty(), "{name} at {}: no kernel", isa.name());
                    for m in [1usize, 4, 9] {
                        let lda = k + 3;
                        let a: Vec<A> = (0..m * lda).map(|_| A::from_bits(rng.random())).collect();
                        let za = A::from_bits(rng.random());
                        let r = reference(&p, &set, m, &a, lda, za);
                        for w in &ws {
                            for mode in MODES {
                                let what = format!("{} {name} {} m={m} n={n} k={k} {}", isa.name(), w.kernel_name_for(m), A::NAME);
                                rq_case::<A, u8>(&ctx, w, &p, m, &a, lda, za, &r, mode, case, &what);
                                rq_case::<A, i8>(&ctx, w, &p, m, &a, lda, za, &r, mode, case + 1, &what);
                                case += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn requantize_exact_u8_activations_every_kernel_every_tier() {
    requant_sweep::<u8>(&mut ChaCha8Rng::seed_from_u64(11));
}

#[test]
fn requantize_exact_i8_activations_every_kernel_every_tier() {
    requant_sweep::<i8>(&mut ChaCha8Rng::seed_from_u64(12));
}

/// Extremes: activations at one end of their range against the zero point at the other,
/// weights all at the largest |grid| code, at a short K and at a K whose sums pass the
/// i32 bound (the chunked i64 path: results must saturate, not wrap); also biases at the
/// ends of i32, which push even the short K onto the chunked path. Output scales: one
/// that saturates everything and one that maps the largest sum into range (exact
/// requantization of accumulators beyond i32).
fn requant_extremes<A: Int8>() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let big = [
        ("pot4", PotFormat::signed(4).unwrap().level_set()),
        ("iq4_nl", LevelSet::codebook_i16(4, &IQ4_NL).unwrap()),
        ("cb32", LevelSet::codebook_i16(5, &(0..32).map(|i| (i * 8 - 127).min(127) as i16).collect::<Vec<_>>()).unwrap()),
        ("pot5", PotFormat::signed(5).unwrap().level_set()),
    ];
    let mut case = 0usize;
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
        for (name, set) in &big {
            for &k in &[33usize, 70_001] {
                let (m, n) = (1, 17);
                let p = packed(set, k, n, &mut rng, Some(max_code(set)));
                let ws = weights_for(&ctx, &p);
                let gs = p.grid_scales().unwrap().to_vec();
                let sa = 0.5f32;
                let ext_bias: Vec<i32> = (0..n).map(|j| [i32::MAX, i32::MIN, 0, i32::MAX - 77][j % 4]).collect();
                for (av, zv) in [(A::MAX, A::MIN), (A::MIN, A::MAX)] {
                    let a = vec![A::saturate_from(av); m * k];
                    let za = A::saturate_from(zv);
                    let r = reference(&p, set, m, &a, k, za);
                    if k > 65_000 && *name != "pot4" {
                        assert!(r.iter().any(|v| i32::try_from(*v).is_err()), "{name}: the long K should pass the i32 bound");
                    }
                    let amax = r.iter().map(|v| v.unsigned_abs()).max().unwrap().max(1) as f32;
                    for w in &ws {
                        for mode in MODES {
                            let what = format!("{} {name} {} extremes k={k} a={av} za={zv} {}", isa.name(), w.kernel_name_for(m), A::NAME);
                            case += 1;
                            // Saturating: a multiplier near 1 on sums of thousands or more.
                            let sat_u8 = Requantize::new(sa * gs[0] * 1.1, 7u8).mode(mode);
                            let sat_i8 = Requantize::new(sa * gs[0] * 1.1, -7i8).mode(mode).relu();
                            // In range: the largest |sum| of column 0 maps to ~100.
                            let fit = sa * gs[0] * amax / 100.0;
                            let fit_u8 = Requantize::new(fit, 128u8).mode(mode);
                            let fit_i8 = Requantize::new(fit, 0i8).mode(mode).clamp(-100, 90);
                            if case.is_multiple_of(2) {
                                check_rq(&ctx, w, &p, m, &a, k, za, sa, &r, &sat_u8, n, &what);
                                check_rq(&ctx, w, &p, m, &a, k, za, sa, &r, &fit_i8, n, &what);
                            } else {
                                check_rq(&ctx, w, &p, m, &a, k, za, sa, &r, &fit_u8, n, &what);
                                check_rq(&ctx, w, &p, m, &a, k, za, sa, &r, &sat_i8, n, &what);
                            }
                            // Extreme biases (chunked even at the short K): both outputs.
                            if k < 1000 {
                                check_rq(&ctx, w, &p, m, &a, k, za, sa, &r, &fit_u8.bias(&ext_bias), n, &what);
                                check_rq(&ctx, w, &p, m, &a, k, za, sa, &r, &sat_i8.bias(&ext_bias), n, &what);
                            }
                        }
                    }
                }
                // Random codes and activations at the long K: sums of both signs, in range
                // after requantization, through the chunked path.
                if k > 65_000 {
                    let p = packed(set, k, n, &mut rng, None);
                    let m = 2;
                    let a: Vec<A> = (0..m * k).map(|_| A::from_bits(rng.random())).collect();
                    let za = A::saturate_from(A::MIN);
                    let r = reference(&p, set, m, &a, k, za);
                    let gs = p.grid_scales().unwrap();
                    let amax = r.iter().map(|v| v.unsigned_abs()).max().unwrap().max(1) as f32;
                    for w in weights_for(&ctx, &p) {
                        for mode in MODES {
                            let what = format!("{} {name} {} long K random {}", isa.name(), w.kernel_name_for(m), A::NAME);
                            let rq = Requantize::new(sa * gs[0] * amax / 120.0, 3i8).mode(mode);
                            check_rq(&ctx, &w, &p, m, &a, k, za, sa, &r, &rq, n, &what);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn requantize_extremes_and_long_k_u8_activations() {
    requant_extremes::<u8>();
}

#[test]
fn requantize_extremes_and_long_k_i8_activations() {
    requant_extremes::<i8>();
}

#[test]
fn requantize_errors_name_the_argument() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let set = ApotFormat::weight(4).unwrap().level_set();
    let p = packed(&set, 10, 4, &mut rng, None);
    let ctx = Context::new().unwrap();
    let w = CodebookWeights::new_in(&ctx, &p).unwrap();
    let a = [3u8; 30];
    let am = MatrixRef::new(&a, 3, 10);
    let run = |sa: f32, rq: &Requantize<'_, u8>, c: &mut [u8], rows: usize, cols: usize| {
        ctx.codebook_gemm_requantize(Activations::new(am, 0u8, sa), &w, rq, MatrixMut::new(c, rows, cols))
    };
    let mut c = [0xA5u8; 12];
    let ok = Requantize::new(0.5f32, 128u8);
    for s in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let e = run(s, &ok, &mut c, 3, 4);
        assert!(matches!(e, Err(Error::InvalidScale { what, .. }) if what.contains("activation")), "{e:?}");
        let e = run(1.0, &Requantize::new(s, 128u8), &mut c, 3, 4);
        assert!(matches!(e, Err(Error::InvalidScale { what, .. }) if what.contains("output")), "{e:?}");
    }
    // Multipliers that overflow or underflow f32 are refused, not saturated silently.
    let e = run(1e30, &Requantize::new(1e-30, 0u8), &mut c, 3, 4);
    assert!(matches!(e, Err(Error::InvalidScale { what, .. }) if what.contains("multiplier")), "{e:?}");
    let e = run(1e-30, &Requantize::new(1e30, 0u8), &mut c, 3, 4);
    assert!(matches!(e, Err(Error::InvalidScale { what, .. }) if what.contains("multiplier")), "{e:?}");
    let e = run(1.0, &ok.clamp(200, 100), &mut c, 3, 4);
    assert!(matches!(&e, Err(Error::InvalidParameter(m)) if m.contains("clamp")), "{e:?}");
    // Shapes: A's K, C's shape, bias length, a C buffer too short.
    let e = ctx.codebook_gemm_requantize(Activations::new(MatrixRef::new(&a, 3, 9), 0u8, 1.0), &w, &ok, MatrixMut::new(&mut c, 3, 4));
    assert!(matches!(e, Err(Error::ShapeMismatch(_))), "{e:?}");
    let e = run(1.0, &ok, &mut c, 3, 3);
    assert!(matches!(e, Err(Error::ShapeMismatch(_))), "{e:?}");
    let e = run(1.0, &ok.bias(&[1, 2]), &mut c, 3, 4);
    assert!(matches!(&e, Err(Error::ShapeMismatch(m)) if m.contains("bias")), "{e:?}");
    let e = run(1.0, &ok, &mut c[..10], 3, 4);
    assert!(e.is_err(), "short C accepted");
    assert!(c.iter().all(|&v| v == 0xA5), "nothing written on failure");
    // i8 output: the same checks apply.
    let mut ci = [0i8; 12];
    let e = ctx.codebook_gemm_requantize(Activations::new(am, 0u8, 1.0), &w, &Requantize::new(0.5f32, 0i8).clamp(5, -5), MatrixMut::new(&mut ci, 3, 4));
    assert!(matches!(e, Err(Error::InvalidParameter(_))), "{e:?}");
    // Weights with per-column offsets (weight normalisation): no scaled output yet.
    let params = LevelParams::per_channel(set.clone(), 1, vec![0.5; 4]).unwrap().with_offsets(vec![0.25; 4]).unwrap();
    let po = PackedCodes::pack(&[0u8; 40], 10, 4, &params).unwrap();
    let wo = CodebookWeights::new_in(&ctx, &po).unwrap();
    let e = ctx.codebook_gemm_requantize(Activations::new(am, 0u8, 1.0), &wo, &ok, MatrixMut::new(&mut c, 3, 4));
    assert!(matches!(e, Err(Error::Unsupported(_))), "{e:?}");
    // The free function runs on the default context.
    codebook::gemm_requantize(Activations::new(am, 0u8, 1.0), &w, &ok, MatrixMut::new(&mut c, 3, 4)).unwrap();
    // Weights packed for a tier above the context's are refused (not run).
    if let Some(&top) = common::available_isas().last() {
        let tctx = Context::for_isa(top).unwrap();
        let wt = CodebookWeights::new_in(&tctx, &p).unwrap();
        let k = tctx.kernels().codebook_candidates.iter().find(|k| k.name == wt.kernel_name()).unwrap();
        if k.isa != Isa::Scalar {
            let e = Context::for_isa(Isa::Scalar).unwrap().codebook_gemm_requantize(Activations::new(am, 0u8, 1.0), &wt, &ok, MatrixMut::new(&mut c, 3, 4));
            assert!(matches!(e, Err(Error::IsaUnavailable(_))), "{e:?}");
        }
    }
}

/// Every codebook decoder this CPU runs (codes → int8 GEMM panels, the decoded path of
/// calls with many rows) writes exactly the packer's bytes of the decoded weights, at
/// every source and target panel width, K tail and odd N (the shared tester).
#[test]
fn every_decoder_writes_the_packed_int8_panels() {
    let mut tested = 0;
    for d in qkern::dispatch::codebook_decoders() {
        if !common::tier_selected(d.name, d.isa) || !common::isa_or_skip(d.name, d.isa) {
            continue;
        }
        // SAFETY: the CPU supports the decoder's ISA (checked).
        let s = unsafe { qkern_kernels::testing::check_codebook_decoder(&d) };
        assert!(s.calls > 1000, "{}: only {} calls", d.name, s.calls);
        tested += 1;
    }
    assert!(tested > 0 || common::tiers_filtered(), "no decoder tested");
}

/// The decoded path at its default threshold: shapes whose M crosses it (below, at,
/// above, several row tiles and a partial one) at every tier, one and two threads, K
/// tails, odd N, every int8-grid set; i32, f32 and requantized outputs exact; and
/// `kernel_name_for` names the path each M takes.
fn decoded_threshold<A: Int8>(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut crossed = 0;
    for isa in common::available_isas() {
        for threads in [1, 2] {
            let ctx = Context::for_isa(isa).unwrap().with_threads(threads).unwrap();
            for (name, set) in sets().into_iter().filter(|(_, s)| s.grid().unwrap().max_abs() <= 127) {
                for &(k, n) in &[(9usize, 47usize), (64, 17), (1001, 100)] {
                    let p = packed(&set, k, n, &mut rng, None);
                    let w = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Lut).unwrap();
                    let Some(min) = w.decode_min_m() else { continue };
                    let (dec, gemm) = w.decode_kernels().unwrap();
                    crossed += 1;
                    for m in [min - 1, min, min + 1, 2 * min + 5] {
                        let run = w.kernel_name_for(m);
                        assert_eq!(run.contains(gemm), m >= min, "{name} m={m}: {run}");
                        assert_eq!(run.contains(dec), m >= min, "{name} m={m}: {run}");
                        let lda = k + 1;
                        let a: Vec<A> = (0..m * lda).map(|_| A::from_bits(rng.random())).collect();
                        let za = A::from_bits(rng.random());
                        let r = reference(&p, &set, m, &a, lda, za);
                        let what = format!("{} t{threads} {name} {run} m={m} n={n} k={k} {}", isa.name(), A::NAME);
                        check(&ctx, &w, &p, m, &a, lda, za, &r, &what);
                        rq_case::<A, u8>(&ctx, &w, &p, m, &a, lda, za, &r, RequantMode::Fp32, m, &what);
                        rq_case::<A, i8>(&ctx, &w, &p, m, &a, lda, za, &r, RequantMode::TfliteDoubleRounding, m + 1, &what);
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    assert!(crossed > 0 || common::tiers_filtered() || !qkern::dispatch::cpu().has(Isa::Avx2), "no decoded path crossed");
    let _ = crossed;
}

#[test]
fn decoded_path_across_its_threshold_u8() {
    decoded_threshold::<u8>(21);
}

#[test]
fn decoded_path_across_its_threshold_i8() {
    decoded_threshold::<i8>(22);
}

/// The decoded path over several column strips (one 512 KiB block of decoded panels per
/// thread each) and row tiles with random activations, one and two threads: the strips
/// share one packing of A, which must hold every row for every strip.
#[test]
fn decoded_path_strips_share_packed_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let mut ran = 0;
    for isa in common::available_isas() {
        for threads in [1, 2] {
            let ctx = Context::for_isa(isa).unwrap().with_threads(threads).unwrap();
            for (name, set) in sets().into_iter().filter(|(n, _)| ["iq4_nl", "cb32", "pot4"].contains(n)) {
                // 32 KiB panels of 16 columns: 16 per strip and thread, so 3 or 2 strips; 12
                // row tiles of 6, in two row blocks.
                let (k, n, m) = (2048usize, 600usize, 67usize);
                let p = packed(&set, k, n, &mut rng, None);
                let w = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Lut).unwrap().with_decode_min_m(1);
                if w.decode_kernels().is_none() {
                    continue;
                }
                ran += 1;
                let a: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
                let za = rng.random::<u8>();
                let r = reference(&p, &set, m, &a, k, za);
                let what = format!("{} t{threads} {name} {} strips m={m}", isa.name(), w.kernel_name_for(m));
                check(&ctx, &w, &p, m, &a, k, za, &r, &what);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    assert!(ran > 0 || common::tiers_filtered() || !qkern::dispatch::cpu().has(Isa::Avx2), "no decoded path ran");
    let _ = ran;
}

/// The decoded path at large M past the i32-exact bound (K chunks carried in i64 by the
/// int8 driver), with activations at their extremes against the zero point at the other
/// end and the ±127 ends of the tables: i32 results that overflow are errors, f32 and
/// requantized ones exact.
#[test]
fn decoded_path_huge_k_extremes() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for isa in common::available_isas() {
        let ctx = Context::for_isa(isa).unwrap().with_threads(2).unwrap();
        for (name, set) in sets().into_iter().filter(|(n, _)| ["iq4_nl", "cb32", "pot4"].contains(n)) {
            let (k, n) = (70_001usize, 33usize);
            for code in end_codes(&set) {
                let p = packed(&set, k, n, &mut rng, Some(code));
                let w = CodebookWeights::with_family(&ctx, &p, CodebookFamily::Lut).unwrap();
                let Some(min) = w.decode_min_m() else { continue };
                let m = min + 1;
                for (av, zv) in [(u8::MAX, u8::MIN), (u8::MIN, u8::MAX)] {
                    let a = vec![av; m * k];
                    let r = reference(&p, &set, m, &a, k, zv);
                    let what = format!("{} {name} {} huge K code {code} a={av} za={zv}", isa.name(), w.kernel_name_for(m));
                    check(&ctx, &w, &p, m, &a, k, zv, &r, &what);
                    rq_case::<u8, i8>(&ctx, &w, &p, m, &a, k, zv, &r, RequantMode::SingleRounding, 3, &what);
                }
                let a = vec![i8::MIN; m * k];
                let r = reference(&p, &set, m, &a, k, i8::MAX);
                check(&ctx, &w, &p, m, &a, k, i8::MAX, &r, &format!("{} {name} huge K i8 extremes", isa.name()));
            }
        }
    }
}
