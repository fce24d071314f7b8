//! The codebook entry points: a round trip per scheme against the Rust API (exact, f32
//! bit for bit), an oracle from the handle's own table, and every error path.

use std::ffi::c_void;
use std::ptr::{NonNull, null, null_mut};

use super::super::runtime::context;
use super::super::*;
use super::{Rng, expect_err, expect_ok};
use crate::codebook::CodebookWeights;
use crate::gemm::{Activations, MatrixMut, MatrixRef};
use crate::quant::{ApotFormat, Granularity, LevelQuantizer, LevelSet, PackedCodes, PotBase, PotFormat};
use qk_status::*;

/// llama.cpp's IQ4_NL table: a learned 4-bit codebook on the integer grid.
const IQ4_NL: [f32; 16] = [-127., -104., -83., -65., -49., -35., -22., -10., 1., 13., 25., 38., 53., 69., 89., 113.];

/// Owns a handle; frees it on drop.
struct Handle(*mut qk_codebook_weights);
impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle from qk_codebook_pack / _create (or NULL), freed once.
        assert_eq!(unsafe { qk_codebook_weights_free(self.0) }, QK_OK);
    }
}

fn opt_ptr<T>(v: &[T]) -> *const T {
    if v.is_empty() { null() } else { v.as_ptr() }
}

fn pack(w: &[f32], k: usize, n: usize, scheme: i32, bits: u32, levels: &[f32], g: i32) -> (qk_status, Handle) {
    let mut out = NonNull::<qk_codebook_weights>::dangling().as_ptr(); // a non-NULL sentinel
    // SAFETY: valid buffers with their lengths, a writable out-pointer.
    let st = unsafe { qk_codebook_pack(w.as_ptr(), w.len(), k, n, scheme, bits, opt_ptr(levels), levels.len(), g, &mut out) };
    if st != QK_OK {
        assert!(out.is_null(), "a failed create leaves NULL");
    }
    (st, Handle(out))
}

fn create(codes: &[u8], k: usize, n: usize, scheme: i32, bits: u32, levels: &[f32], scale: &[f32]) -> (qk_status, Handle) {
    let mut out = NonNull::<qk_codebook_weights>::dangling().as_ptr();
    // SAFETY: as above.
    let st = unsafe {
        qk_codebook_weights_create(codes.as_ptr(), codes.len(), k, n, scheme, bits, opt_ptr(levels), levels.len(), opt_ptr(scale), scale.len(), &mut out)
    };
    if st != QK_OK {
        assert!(out.is_null(), "a failed create leaves NULL");
    }
    (st, Handle(out))
}

fn quantize(w: &[f32], k: usize, n: usize, scheme: i32, bits: u32, levels: &[f32], g: i32) -> (qk_status, Vec<u8>, Vec<f32>) {
    let mut codes = vec![0xEEu8; k * n];
    let mut scales = vec![-1f32; if g == QK_PER_TENSOR { 1 } else { n }];
    // SAFETY: valid, disjoint buffers with their lengths.
    let st = unsafe {
        qk_codebook_quantize(
            w.as_ptr(),
            w.len(),
            k,
            n,
            scheme,
            bits,
            opt_ptr(levels),
            levels.len(),
            g,
            codes.as_mut_ptr(),
            codes.len(),
            scales.as_mut_ptr(),
            scales.len(),
        )
    };
    (st, codes, scales)
}

#[allow(clippy::too_many_arguments)]
fn gemm_i32<A: Copy>(h: &Handle, a: &[A], dtype: i32, m: usize, lda: usize, za: i32, bias: &[i32], c: &mut [i32], ldc: usize) -> qk_status {
    // SAFETY: valid buffers with their lengths; `c` is disjoint from the inputs.
    unsafe { qk_codebook_gemm_i32(h.0, a.as_ptr().cast(), dtype, a.len(), m, lda, za, opt_ptr(bias), bias.len(), c.as_mut_ptr(), c.len(), ldc) }
}

#[allow(clippy::too_many_arguments)]
fn gemm_f32<A: Copy>(h: &Handle, a: &[A], dtype: i32, m: usize, lda: usize, za: i32, sa: f32, bias: &[f32], c: &mut [f32], ldc: usize) -> qk_status {
    // SAFETY: as above.
    unsafe { qk_codebook_gemm_f32(h.0, a.as_ptr().cast(), dtype, a.len(), m, lda, za, sa, opt_ptr(bias), bias.len(), c.as_mut_ptr(), c.len(), ldc) }
}

/// The handle's table as i16 (every grid) and grid scales; the i8 getter agrees where
/// the grid fits int8 and refuses it otherwise.
fn table(h: &Handle, bits: u32, n: usize) -> (Vec<i16>, Vec<f32>) {
    let mut t = vec![99i16; 1 << bits];
    let mut g = vec![0f32; n];
    // SAFETY: valid, disjoint buffers.
    expect_ok(unsafe { qk_codebook_weights_table_i16(h.0, t.as_mut_ptr(), t.len(), g.as_mut_ptr(), g.len()) });
    let mut t8 = vec![99i8; 1 << bits];
    // SAFETY: as above.
    let st = unsafe { qk_codebook_weights_table(h.0, t8.as_mut_ptr(), t8.len(), null_mut(), 0) };
    if t.iter().all(|v| v.unsigned_abs() <= 127) {
        expect_ok(st);
        assert!(t8.iter().zip(&t).all(|(&a, &b)| a as i16 == b), "{t8:?} vs {t:?}");
    } else {
        expect_err(st, QK_ERR_UNSUPPORTED, "qk_codebook_weights_table", "qk_codebook_weights_table_i16");
        assert!(t8.iter().all(|&v| v == 99), "written on failure");
    }
    (t, g)
}

/// The Rust API's quantizer for a scheme (what the C entry points must equal).
fn rust_quantizer(scheme: i32, bits: u32, levels: &[f32]) -> LevelQuantizer {
    match scheme {
        QK_SCHEME_UNIFORM => {
            let h = (1i16 << (bits - 1)) - 1;
            LevelQuantizer::new(LevelSet::codebook_i16(bits, &(-h..=h).collect::<Vec<_>>()).unwrap())
        }
        QK_SCHEME_POT => PotFormat::signed(bits).unwrap().quantizer(),
        QK_SCHEME_LOG => PotFormat::signed(bits).unwrap().with_base(PotBase::Sqrt2).quantizer(),
        QK_SCHEME_APOT => ApotFormat::weight(bits).unwrap().quantizer(),
        _ => LevelQuantizer::new(LevelSet::codebook(bits, levels).unwrap()),
    }
}

fn weights(rng: &mut Rng, k: usize, n: usize) -> Vec<f32> {
    // Columns of different magnitudes, so per-channel scales differ.
    (0..k * n).map(|i| rng.gauss(0.05 * (1 + i % n) as f32)).collect()
}

#[test]
fn round_trip_every_scheme_matches_the_rust_api() {
    let ctx = context().unwrap();
    let mut rng = Rng(0x5eed);
    let cases: Vec<(i32, u32, Vec<f32>)> = vec![
        (QK_SCHEME_UNIFORM, 2, vec![]),
        (QK_SCHEME_UNIFORM, 4, vec![]),
        (QK_SCHEME_UNIFORM, 5, vec![]),
        (QK_SCHEME_POT, 3, vec![]),
        (QK_SCHEME_POT, 4, vec![]),
        // Grids beyond int8 (the int16 kernels): PoT-5 (2^14) and a learned table on a
        // grid of step 1/4 reaching 4000·4.
        (QK_SCHEME_POT, 5, vec![]),
        (QK_SCHEME_CODEBOOK, 4, vec![-4000.0, -1.25, 0.0, 0.5, 3.0, 777.75, 1999.0]),
        (QK_SCHEME_APOT, 2, vec![]),
        (QK_SCHEME_APOT, 4, vec![]),
        (QK_SCHEME_APOT, 5, vec![]),
        (QK_SCHEME_CODEBOOK, 4, IQ4_NL.to_vec()),
        // A 5-bit learned table with fewer levels than codes, on a grid of step 1/2.
        (QK_SCHEME_CODEBOOK, 5, (0..20).map(|i| (i as f32 - 9.5) * 1.5).collect()),
    ];
    for (k, n, m) in [(37usize, 19usize, 5usize), (300, 33, 1), (1, 1, 2)] {
        let w = weights(&mut rng, k, n);
        let a_u8: Vec<u8> = (0..m * (k + 3)).map(|_| rng.byte()).collect();
        let a_i8: Vec<i8> = a_u8.iter().map(|&v| v as i8).collect();
        let bias_i: Vec<i32> = (0..n).map(|j| j as i32 * 1000 - 7000).collect();
        let bias_f: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
        for (scheme, bits, levels) in &cases {
            for g in [QK_PER_TENSOR, QK_PER_CHANNEL] {
                let what = format!("scheme {scheme}, {bits} bits, granularity {g}, {k}×{n}, m {m}");
                let gran = if g == QK_PER_TENSOR { Granularity::PerTensor } else { Granularity::PerChannel { axis: 1 } };
                // The Rust API.
                let t = rust_quantizer(*scheme, *bits, levels).with_granularity(gran).quantize(&w, &[k, n]).unwrap();
                let rw = CodebookWeights::new_in(&ctx, &PackedCodes::from_tensor(&t).unwrap()).unwrap();

                // qk_codebook_quantize: the same codes and scales.
                let (st, codes, scales) = quantize(&w, k, n, *scheme, *bits, levels, g);
                expect_ok(st);
                assert_eq!(codes, t.codes(), "{what}");
                assert_eq!(scales, t.params().scales(), "{what}");

                // qk_codebook_pack and qk_codebook_weights_create: the same packed weights.
                let (st, h) = pack(&w, k, n, *scheme, *bits, levels, g);
                expect_ok(st);
                let (st, h2) = create(&codes, k, n, *scheme, *bits, levels, &scales);
                expect_ok(st);
                for hh in [&h, &h2] {
                    // SAFETY: live handles from the calls above.
                    let cw = unsafe { &(*hh.0).w };
                    assert_eq!(cw.kernel_name(), rw.kernel_name(), "{what}");
                    assert_eq!(cw.data, rw.data, "{what}");
                    assert_eq!(cw.table, rw.table, "{what}");
                    assert_eq!(cw.table16, rw.table16, "{what}");
                    assert_eq!(cw.grid_scales, rw.grid_scales, "{what}");
                }

                // The shape and the table.
                let (mut qk, mut qn, mut qb) = (0usize, 0usize, 0u32);
                // SAFETY: distinct writable out-pointers.
                expect_ok(unsafe { qk_codebook_weights_shape(h.0, &mut qk, &mut qn, &mut qb) });
                assert_eq!((qk, qn, qb), (k, n, *bits), "{what}");
                let (tab, gs) = table(&h, *bits, n);
                assert_eq!(&tab[..], &rw.table_i16()[..1 << bits], "{what}");

                // Runs: i32 and f32, u8 and i8 activations, with and without bias, strided.
                let (lda, ldc) = (k + 3, n + 2);
                for dt in [QK_U8, QK_I8] {
                    let za = if dt == QK_U8 { 131 } else { -3 };
                    for with_bias in [false, true] {
                        let bi: &[i32] = if with_bias { &bias_i } else { &[] };
                        let bf: &[f32] = if with_bias { &bias_f } else { &[] };
                        let mut c = vec![i32::MIN; (m - 1) * ldc + n];
                        let mut want = c.clone();
                        let mut cf = vec![f32::NAN; (m - 1) * ldc + n];
                        let mut want_f = cf.clone();
                        let sa = 0.0123f32;
                        if dt == QK_U8 {
                            expect_ok(gemm_i32(&h, &a_u8, dt, m, lda, za, bi, &mut c, ldc));
                            expect_ok(gemm_f32(&h, &a_u8, dt, m, lda, za, sa, bf, &mut cf, ldc));
                            let act = |s| Activations::new(MatrixRef::new(&a_u8[..], m, k).with_stride(lda), za as u8, s);
                            ctx.codebook_gemm_i32(act(1.0), &rw, (!bi.is_empty()).then_some(bi), MatrixMut::new(&mut want, m, n).with_stride(ldc)).unwrap();
                            ctx.codebook_gemm_f32(act(sa), &rw, (!bf.is_empty()).then_some(bf), MatrixMut::new(&mut want_f, m, n).with_stride(ldc)).unwrap();
                        } else {
                            expect_ok(gemm_i32(&h, &a_i8, dt, m, lda, za, bi, &mut c, ldc));
                            expect_ok(gemm_f32(&h, &a_i8, dt, m, lda, za, sa, bf, &mut cf, ldc));
                            let act = |s| Activations::new(MatrixRef::new(&a_i8[..], m, k).with_stride(lda), za as i8, s);
                            ctx.codebook_gemm_i32(act(1.0), &rw, (!bi.is_empty()).then_some(bi), MatrixMut::new(&mut want, m, n).with_stride(ldc)).unwrap();
                            ctx.codebook_gemm_f32(act(sa), &rw, (!bf.is_empty()).then_some(bf), MatrixMut::new(&mut want_f, m, n).with_stride(ldc)).unwrap();
                        }
                        assert_eq!(c, want, "{what}, dtype {dt}, bias {with_bias}");
                        let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits_of(&cf), bits_of(&want_f), "{what}, dtype {dt}, bias {with_bias}");
                        // An independent oracle from the handle's own table and the codes:
                        // the definition, in i64, and the f32 formula step by step.
                        for r in 0..m {
                            for j in 0..n {
                                let acc: i64 = (0..k)
                                    .map(|kk| {
                                        let av = if dt == QK_U8 { a_u8[r * lda + kk] as i64 } else { a_i8[r * lda + kk] as i64 };
                                        (av - za as i64) * tab[codes[kk * n + j] as usize] as i64
                                    })
                                    .sum::<i64>();
                                let e = acc + bi.get(j).map_or(0, |&b| b as i64);
                                assert_eq!(c[r * ldc + j] as i64, e, "{what}: oracle at ({r}, {j})");
                                let y = (acc as i32 as f32) * (sa * gs[j]);
                                let y = bf.get(j).map_or(y, |&b| y + b);
                                assert_eq!(cf[r * ldc + j].to_bits(), y.to_bits(), "{what}: f32 oracle at ({r}, {j})");
                            }
                        }
                        // The gaps between rows are untouched.
                        for r in 0..m - 1 {
                            assert!(c[r * ldc + n..(r + 1) * ldc].iter().all(|&v| v == i32::MIN));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn log_quantizes_but_does_not_pack() {
    let mut rng = Rng(7);
    let (k, n) = (8, 3);
    let w = weights(&mut rng, k, n);
    let t = rust_quantizer(QK_SCHEME_LOG, 4, &[]).with_granularity(Granularity::PerChannel { axis: 1 }).quantize(&w, &[k, n]).unwrap();
    let (st, codes, scales) = quantize(&w, k, n, QK_SCHEME_LOG, 4, &[], QK_PER_CHANNEL);
    expect_ok(st);
    assert_eq!((&codes[..], &scales[..]), (t.codes(), t.params().scales()));
    let (st, _h) = pack(&w, k, n, QK_SCHEME_LOG, 4, &[], QK_PER_TENSOR);
    expect_err(st, QK_ERR_UNSUPPORTED, "qk_codebook_pack", "integer grid");
    let (st, _h) = create(&codes, k, n, QK_SCHEME_LOG, 4, &[], &scales);
    expect_err(st, QK_ERR_UNSUPPORTED, "qk_codebook_weights_create", "integer grid");
    // 5-bit PoT: a grid beyond int8, run by the int16 kernels.
    let (st, _h) = pack(&w, k, n, QK_SCHEME_POT, 5, &[], QK_PER_TENSOR);
    expect_ok(st);
}

#[test]
fn pack_and_quantize_bad_input() {
    const F: &str = "qk_codebook_pack";
    const Q: &str = "qk_codebook_quantize";
    let mut rng = Rng(11);
    let (k, n) = (6, 4);
    let w = weights(&mut rng, k, n);
    let mut out = null_mut();

    // NULL pointers.
    // SAFETY: NULL is the error under test; everything else valid.
    let st = unsafe { qk_codebook_pack(w.as_ptr(), w.len(), k, n, QK_SCHEME_POT, 4, null(), 0, QK_PER_TENSOR, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`out`");
    // SAFETY: as above.
    let st = unsafe { qk_codebook_pack(null(), w.len(), k, n, QK_SCHEME_POT, 4, null(), 0, QK_PER_TENSOR, &mut out) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`w`");
    assert!(out.is_null());
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 4, &[], QK_PER_TENSOR);
    expect_err(st, QK_ERR_NULL_POINTER, F, "`levels`");
    // SAFETY: a NULL table with a non-zero count is the error under test.
    let st = unsafe { qk_codebook_pack(w.as_ptr(), w.len(), k, n, QK_SCHEME_CODEBOOK, 4, null(), 16, QK_PER_TENSOR, &mut out) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`levels`");

    // Out-of-range enums and bits.
    for s in [-1, 5, i32::MAX, i32::MIN] {
        let (st, _h) = pack(&w, k, n, s, 4, &[], QK_PER_TENSOR);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "not a qk_scheme");
    }
    for g in [-1, 2, i32::MAX] {
        let (st, _h) = pack(&w, k, n, QK_SCHEME_POT, 4, &[], g);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "not a qk_granularity");
        let (st, ..) = quantize(&w, k, n, QK_SCHEME_POT, 4, &[], g);
        expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "not a qk_granularity");
    }
    for (scheme, bits) in [
        (QK_SCHEME_UNIFORM, 1),
        (QK_SCHEME_UNIFORM, 6),
        (QK_SCHEME_POT, 1),
        (QK_SCHEME_POT, 6),
        (QK_SCHEME_LOG, 0),
        (QK_SCHEME_APOT, 9),
        (QK_SCHEME_APOT, u32::MAX),
        (QK_SCHEME_CODEBOOK, 0),
        (QK_SCHEME_CODEBOOK, 6),
    ] {
        let levels: &[f32] = if scheme == QK_SCHEME_CODEBOOK { &[-1.0, 1.0] } else { &[] };
        let (st, _h) = pack(&w, k, n, scheme, bits, levels, QK_PER_TENSOR);
        expect_err(st, QK_ERR_BITS, F, "bit width");
    }
    // A table where none belongs, and bad tables.
    let (st, _h) = pack(&w, k, n, QK_SCHEME_APOT, 4, &IQ4_NL, QK_PER_TENSOR);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "only QK_SCHEME_CODEBOOK takes a table");
    let mut unsorted = IQ4_NL;
    unsorted.swap(3, 4);
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 4, &unsorted, QK_PER_TENSOR);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "strictly increasing");
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 4, &(0..17).map(|i| i as f32).collect::<Vec<_>>(), QK_PER_TENSOR);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "2 to 16 levels");
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 4, &[0.0, f32::NAN], QK_PER_TENSOR);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "finite");
    // Tables the integer kernels cannot run: a grid beyond ±32767, and no grid at all (a
    // grid beyond int8 runs on the int16 kernels).
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 2, &[-201.0, 0.0, 200.0], QK_PER_TENSOR);
    expect_ok(st);
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 2, &[-32768.0, 0.0, 1.0], QK_PER_TENSOR);
    expect_err(st, QK_ERR_UNSUPPORTED, F, "integer grid");
    let (st, _h) = pack(&w, k, n, QK_SCHEME_CODEBOOK, 2, &[-1.0, 0.1, 1.0], QK_PER_TENSOR);
    expect_err(st, QK_ERR_UNSUPPORTED, F, "integer grid");

    // Shapes and counts.
    let (st, _h) = pack(&w[..w.len() - 1], k, n, QK_SCHEME_POT, 4, &[], QK_PER_TENSOR);
    expect_err(st, QK_ERR_SHAPE, F, "`w_count`");
    let (st, _h) = pack(&w, usize::MAX, 2, QK_SCHEME_POT, 4, &[], QK_PER_TENSOR);
    expect_err(st, QK_ERR_OVERFLOW, F, "overflows");
    // Zero sizes: no data to calibrate on.
    let (st, _h) = pack(&[], 0, n, QK_SCHEME_POT, 4, &[], QK_PER_TENSOR);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "needs data");
    // Huge counts: refused before any access.
    // SAFETY: the byte size overflow is refused before any slice is made.
    let st = unsafe { qk_codebook_pack(w.as_ptr(), usize::MAX / 2, k, n, QK_SCHEME_POT, 4, null(), 0, QK_PER_TENSOR, &mut out) };
    expect_err(st, QK_ERR_OVERFLOW, F, "address space");
    // Non-finite weights.
    let mut bad = w.clone();
    bad[5] = f32::INFINITY;
    let (st, _h) = pack(&bad, k, n, QK_SCHEME_POT, 4, &[], QK_PER_CHANNEL);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "finite");

    // qk_codebook_quantize: output counts, NULL outputs, overlaps.
    let mut codes = vec![0u8; k * n];
    let mut scales = vec![0f32; n];
    let q = |codes: &mut [u8], scales: &mut [f32], g: i32| {
        // SAFETY: valid buffers with their lengths.
        unsafe {
            qk_codebook_quantize(w.as_ptr(), w.len(), k, n, QK_SCHEME_APOT, 4, null(), 0, g, codes.as_mut_ptr(), codes.len(), scales.as_mut_ptr(), scales.len())
        }
    };
    expect_err(q(&mut codes[1..], &mut scales, QK_PER_CHANNEL), QK_ERR_SHAPE, Q, "`codes_count`");
    expect_err(q(&mut codes, &mut scales[1..], QK_PER_CHANNEL), QK_ERR_SHAPE, Q, "`scale_count`");
    expect_err(q(&mut codes, &mut scales, QK_PER_TENSOR), QK_ERR_SHAPE, Q, "`scale_count`");
    expect_ok(q(&mut codes, &mut scales[..1], QK_PER_TENSOR));
    // SAFETY: NULL outputs are the error under test.
    let st = unsafe { qk_codebook_quantize(w.as_ptr(), w.len(), k, n, QK_SCHEME_APOT, 4, null(), 0, 0, null_mut(), k * n, scales.as_mut_ptr(), 1) };
    expect_err(st, QK_ERR_NULL_POINTER, Q, "`codes`");
    // SAFETY: as above.
    let st = unsafe { qk_codebook_quantize(w.as_ptr(), w.len(), k, n, QK_SCHEME_APOT, 4, null(), 0, 0, codes.as_mut_ptr(), k * n, null_mut(), 1) };
    expect_err(st, QK_ERR_NULL_POINTER, Q, "`scale`");
    // The scales written over the weights, and over the codes.
    let mut buf = w.clone();
    // SAFETY: the overlap is refused before any slice is made.
    let st = unsafe { qk_codebook_quantize(buf.as_ptr(), k * n, k, n, QK_SCHEME_APOT, 4, null(), 0, 0, codes.as_mut_ptr(), k * n, buf.as_mut_ptr(), 1) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "overlaps");
    let mut cbuf = vec![0u8; k * n + 8];
    let sp = cbuf.as_mut_ptr().wrapping_add(4).cast::<f32>();
    // SAFETY: as above (the scale span lies inside the codes span).
    let st = unsafe { qk_codebook_quantize(w.as_ptr(), w.len(), k, n, QK_SCHEME_APOT, 4, null(), 0, 0, cbuf.as_mut_ptr(), k * n, sp, 1) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "overlaps");
}

#[test]
fn create_bad_input() {
    const F: &str = "qk_codebook_weights_create";
    let (k, n) = (5, 3);
    let codes: Vec<u8> = (0..k * n).map(|i| (i % 10) as u8).collect();
    let levels: Vec<f32> = (0..10).map(|i| i as f32 - 4.0).collect();
    let (st, h) = create(&codes, k, n, QK_SCHEME_CODEBOOK, 4, &levels, &[0.5]);
    expect_ok(st);
    drop(h);
    // A code past the table (10 levels: codes 0..10).
    let mut bad = codes.clone();
    bad[7] = 10;
    let (st, _h) = create(&bad, k, n, QK_SCHEME_CODEBOOK, 4, &levels, &[0.5]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "element 7 is code 10");
    // A code past 2^bits for a full set.
    bad[7] = 16;
    let (st, _h) = create(&bad, k, n, QK_SCHEME_POT, 4, &[], &[0.5]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "element 7 is code 16");
    bad[7] = 255;
    let (st, _h) = create(&bad, k, n, QK_SCHEME_UNIFORM, 4, &[], &[0.5]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "element 7 is code 255");
    // Counts.
    let (st, _h) = create(&codes[1..], k, n, QK_SCHEME_CODEBOOK, 4, &levels, &[0.5]);
    expect_err(st, QK_ERR_SHAPE, F, "`codes_count`");
    let (st, _h) = create(&codes, k, n, QK_SCHEME_CODEBOOK, 4, &levels, &[0.5, 0.5]);
    expect_err(st, QK_ERR_SHAPE, F, "`scale` has 2 values");
    let (st, _h) = create(&codes, k, n, QK_SCHEME_CODEBOOK, 4, &levels, &[]);
    expect_err(st, QK_ERR_NULL_POINTER, F, "`scale`");
    // Scales.
    for s in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let (st, _h) = create(&codes, k, n, QK_SCHEME_CODEBOOK, 4, &levels, &[0.5, s, 0.5]);
        expect_err(st, QK_ERR_SCALE, F, "scale");
    }
    // A table too large for its bits, and a mismatch between the table and the scheme.
    let (st, _h) = create(&codes, k, n, QK_SCHEME_CODEBOOK, 3, &levels, &[0.5]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "2 to 8 levels");
    let (st, _h) = create(&codes, k, n, QK_SCHEME_UNIFORM, 4, &levels, &[0.5]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`levels` must be NULL");
    // NULL codes, NULL out, k·n overflow.
    let mut out = null_mut();
    // SAFETY: NULL is the error under test.
    let st = unsafe { qk_codebook_weights_create(null(), 15, k, n, QK_SCHEME_POT, 4, null(), 0, [0.5f32].as_ptr(), 1, &mut out) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`codes`");
    // SAFETY: as above.
    let st = unsafe { qk_codebook_weights_create(codes.as_ptr(), 15, k, n, QK_SCHEME_POT, 4, null(), 0, [0.5f32].as_ptr(), 1, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`out`");
    let (st, _h) = create(&codes, usize::MAX, 3, QK_SCHEME_POT, 4, &[], &[0.5]);
    expect_err(st, QK_ERR_OVERFLOW, F, "overflows");
    // Zero-size weights are valid (K = 0: every output is the bias).
    let (st, h) = create(&[], 0, n, QK_SCHEME_POT, 4, &[], &[0.5]);
    expect_ok(st);
    let mut c = vec![-1i32; 2 * n];
    let bias = [5, 6, 7];
    // SAFETY: a non-NULL empty A, a valid C.
    let st = unsafe { qk_codebook_gemm_i32(h.0, NonNull::<u8>::dangling().as_ptr().cast(), QK_U8, 0, 2, 0, 0, bias.as_ptr(), 3, c.as_mut_ptr(), c.len(), n) };
    expect_ok(st);
    assert_eq!(c, [5, 6, 7, 5, 6, 7]);
}

#[test]
fn run_and_query_bad_input() {
    const I: &str = "qk_codebook_gemm_i32";
    const FF: &str = "qk_codebook_gemm_f32";
    let (k, n, m) = (9, 4, 3);
    let codes: Vec<u8> = (0..k * n).map(|i| (i * 5 % 16) as u8).collect();
    let (st, h) = create(&codes, k, n, QK_SCHEME_CODEBOOK, 4, &IQ4_NL, &[0.5, 0.25, 1.0, 2.0]);
    expect_ok(st);
    let a = vec![7u8; m * k];
    let mut c = vec![0i32; m * n];
    let mut cf = vec![0f32; m * n];

    expect_ok(gemm_i32(&h, &a, QK_U8, m, k, 0, &[], &mut c, n));
    // A NULL or misaligned handle.
    let nh = Handle(null_mut());
    expect_err(gemm_i32(&nh, &a, QK_U8, m, k, 0, &[], &mut c, n), QK_ERR_NULL_POINTER, I, "`weights`");
    let mut raw = [0u64; 4];
    let odd = Handle((raw.as_mut_ptr() as *mut u8).wrapping_add(1).cast());
    expect_err(gemm_i32(&odd, &a, QK_U8, m, k, 0, &[], &mut c, n), QK_ERR_INVALID_PARAMETER, I, "misaligned");
    std::mem::forget(odd);
    // Dtypes, zero points.
    expect_err(gemm_i32(&h, &a, QK_F32, m, k, 0, &[], &mut c, n), QK_ERR_UNSUPPORTED, I, "`a_dtype`");
    expect_err(gemm_i32(&h, &a, 99, m, k, 0, &[], &mut c, n), QK_ERR_INVALID_PARAMETER, I, "not a qk_dtype");
    expect_err(gemm_i32(&h, &a, QK_U8, m, k, 256, &[], &mut c, n), QK_ERR_ZERO_POINT, I, "a_zero_point");
    expect_err(gemm_i32(&h, &a, QK_I8, m, k, -129, &[], &mut c, n), QK_ERR_ZERO_POINT, I, "a_zero_point");
    // Shapes, strides, sizes.
    expect_err(gemm_i32(&h, &a[1..], QK_U8, m, k, 0, &[], &mut c, n), QK_ERR_BUFFER_TOO_SMALL, I, "a");
    expect_err(gemm_i32(&h, &a, QK_U8, m, k - 1, 0, &[], &mut c, n), QK_ERR_INVALID_STRIDE, I, "a");
    expect_err(gemm_i32(&h, &a, QK_U8, m, k, 0, &[], &mut c[1..], n), QK_ERR_BUFFER_TOO_SMALL, I, "c");
    expect_err(gemm_i32(&h, &a, QK_U8, m, k, 0, &[], &mut c, n - 1), QK_ERR_INVALID_STRIDE, I, "c");
    expect_err(gemm_i32(&h, &a, QK_U8, m, k, 0, &[1, 2, 3], &mut c, n), QK_ERR_SHAPE, I, "bias");
    expect_err(gemm_i32(&h, &a, QK_U8, 2, usize::MAX, 0, &[], &mut c, n), QK_ERR_OVERFLOW, I, "`a`");
    expect_err(gemm_i32(&h, &a, QK_U8, 2, k, 0, &[], &mut c, usize::MAX), QK_ERR_OVERFLOW, I, "`c`");
    // NULL buffers, overlap.
    // SAFETY: NULL is the error under test.
    let st = unsafe { qk_codebook_gemm_i32(h.0, null(), QK_U8, a.len(), m, k, 0, null(), 0, c.as_mut_ptr(), c.len(), n) };
    expect_err(st, QK_ERR_NULL_POINTER, I, "`a`");
    // SAFETY: as above.
    let st = unsafe { qk_codebook_gemm_i32(h.0, a.as_ptr().cast(), QK_U8, a.len(), m, k, 0, null(), 3, c.as_mut_ptr(), c.len(), n) };
    expect_err(st, QK_ERR_NULL_POINTER, I, "`bias`");
    // SAFETY: as above.
    let st = unsafe { qk_codebook_gemm_i32(h.0, a.as_ptr().cast(), QK_U8, a.len(), m, k, 0, null(), 0, null_mut(), 12, n) };
    expect_err(st, QK_ERR_NULL_POINTER, I, "`c`");
    let mut buf = vec![0i32; 64];
    let ap = buf.as_ptr().cast::<c_void>();
    // SAFETY: the overlap is refused before any slice is made.
    let st = unsafe { qk_codebook_gemm_i32(h.0, ap, QK_U8, m * k, m, k, 0, null(), 0, buf.as_mut_ptr(), m * n, n) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, I, "overlaps");

    // f32: the scale.
    for sa in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        expect_err(gemm_f32(&h, &a, QK_U8, m, k, 0, sa, &[], &mut cf, n), QK_ERR_SCALE, FF, "scale");
    }
    expect_err(gemm_f32(&h, &a, QK_U8, m, k, 0, 1.0, &[1.0], &mut cf, n), QK_ERR_SHAPE, FF, "bias");
    expect_ok(gemm_f32(&h, &a, QK_U8, m, k, 0, 1.0, &[], &mut cf, n));

    // Queries.
    const S: &str = "qk_codebook_weights_shape";
    let (mut kk, mut nn, mut bb) = (0usize, 0usize, 0u32);
    // SAFETY: NULL / overlapping out-pointers are the errors under test.
    unsafe {
        expect_err(qk_codebook_weights_shape(null(), &mut kk, &mut nn, &mut bb), QK_ERR_NULL_POINTER, S, "`weights`");
        expect_err(qk_codebook_weights_shape(h.0, null_mut(), &mut nn, &mut bb), QK_ERR_NULL_POINTER, S, "`k`");
        expect_err(qk_codebook_weights_shape(h.0, &mut kk, &mut nn, null_mut()), QK_ERR_NULL_POINTER, S, "`bits`");
        expect_err(qk_codebook_weights_shape(h.0, &mut kk, &mut kk as *mut usize, &mut bb), QK_ERR_INVALID_PARAMETER, S, "overlaps");
    }
    assert_eq!((kk, nn, bb), (0, 0, 0), "untouched on failure");
    const T: &str = "qk_codebook_weights_table";
    let mut t = [0i8; 16];
    let mut g = [0f32; 4];
    // SAFETY: as above; short buffers are refused before any write.
    unsafe {
        expect_err(qk_codebook_weights_table(h.0, t.as_mut_ptr(), 15, null_mut(), 0), QK_ERR_BUFFER_TOO_SMALL, T, "table");
        expect_err(qk_codebook_weights_table(h.0, null_mut(), 0, g.as_mut_ptr(), 3), QK_ERR_BUFFER_TOO_SMALL, T, "grid_scale");
        expect_err(qk_codebook_weights_table(h.0, null_mut(), 16, null_mut(), 0), QK_ERR_NULL_POINTER, T, "`table`");
        expect_err(qk_codebook_weights_table(null(), t.as_mut_ptr(), 16, null_mut(), 0), QK_ERR_NULL_POINTER, T, "`weights`");
        let p = g.as_mut_ptr();
        expect_err(qk_codebook_weights_table(h.0, p.cast(), 16, p, 4), QK_ERR_INVALID_PARAMETER, T, "overlaps");
        expect_ok(qk_codebook_weights_table(h.0, null_mut(), 0, null_mut(), 0));
        expect_ok(qk_codebook_weights_table(h.0, t.as_mut_ptr(), 16, g.as_mut_ptr(), 4));
    }
    let want: Vec<i8> = IQ4_NL.iter().map(|&v| v as i8).collect();
    assert_eq!(&t[..], &want[..]);
    assert_eq!(g, [0.5, 0.25, 1.0, 2.0], "integer levels: the grid scales are the scales");
    // SAFETY: NULL is accepted.
    expect_ok(unsafe { qk_codebook_weights_free(null_mut()) });
}
