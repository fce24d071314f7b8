//! The PWLQ entry points: quantize / pack / dequantize / fused GEMM against the Rust API
//! and the scalar reference (f32 bit for bit), on both GEMM paths, and every error path.

use std::ffi::c_void;
use std::ptr::{NonNull, null, null_mut};

use super::super::runtime::context;
use super::super::*;
use super::{Rng, THREADS, expect_err, expect_ok};
use crate::gemm::{Activations, MatrixMut, MatrixRef};
use crate::quant::Granularity;
use crate::quant::pwlq::{Breakpoint, PwlqGemmWeights, PwlqQuantizer, gemm_exact_ref};
use qk_status::*;

/// Owns a handle; frees it on drop.
struct Handle(*mut qk_pwlq_weights);
impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle from qk_pwlq_pack (or NULL), freed once.
        assert_eq!(unsafe { qk_pwlq_weights_free(self.0) }, QK_OK);
    }
}

fn opt_ptr<T>(v: &[T]) -> *const T {
    if v.is_empty() { null() } else { v.as_ptr() }
}

struct Quantized {
    codes: Vec<i16>,
    m: Vec<f32>,
    p: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn quantize(w: &[f32], rows: usize, cols: usize, axis: usize, bits: u32, bp: i32, nch: usize) -> (qk_status, Quantized) {
    let mut q = Quantized { codes: vec![i16::MIN; rows * cols], m: vec![-1.0; nch], p: vec![-1.0; nch] };
    // SAFETY: valid, disjoint buffers with their lengths.
    let st = unsafe {
        qk_pwlq_quantize(
            w.as_ptr(),
            w.len(),
            rows,
            cols,
            axis,
            bits,
            bp,
            q.codes.as_mut_ptr(),
            q.codes.len(),
            q.m.as_mut_ptr(),
            q.m.len(),
            q.p.as_mut_ptr(),
            q.p.len(),
        )
    };
    (st, q)
}

fn pack(codes: &[i16], rows: usize, cols: usize, axis: usize, bits: u32, m: &[f32], p: &[f32]) -> (qk_status, Handle) {
    let mut out = NonNull::<qk_pwlq_weights>::dangling().as_ptr(); // a non-NULL sentinel
    // SAFETY: valid buffers, a writable out-pointer.
    let st = unsafe { qk_pwlq_pack(codes.as_ptr(), codes.len(), rows, cols, axis, bits, m.as_ptr(), m.len(), p.as_ptr(), p.len(), &mut out) };
    if st != QK_OK {
        assert!(out.is_null(), "a failed pack leaves NULL");
    }
    (st, Handle(out))
}

#[allow(clippy::too_many_arguments)]
fn gemm<A: Copy>(h: &Handle, a: &[A], dtype: i32, m: usize, lda: usize, za: i32, sa: f32, bias: &[f32], c: &mut [f32], ldc: usize) -> qk_status {
    // SAFETY: valid buffers with their lengths; `c` is disjoint from the inputs.
    unsafe { qk_pwlq_gemm_f32(h.0, a.as_ptr().cast(), dtype, a.len(), m, lda, za, sa, opt_ptr(bias), bias.len(), c.as_mut_ptr(), c.len(), ldc) }
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn round_trip_matches_the_rust_api_and_the_reference() {
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(0xb1ea);
    for (k, n) in [(70usize, 9usize), (128, 33), (1, 1)] {
        // Laplacian-ish weights with a few outliers, so the tails are used.
        let base: Vec<f32> = (0..k * n).map(|i| rng.gauss(0.1) * if i % 17 == 0 { 4.0 } else { 1.0 }).collect();
        for axis in [0usize, 1] {
            let (rows, cols) = if axis == 1 { (k, n) } else { (n, k) };
            for bits in [4u32, 6, 8] {
                for (bp_c, bp) in [(QK_PWLQ_GAUSSIAN, Breakpoint::Gaussian), (QK_PWLQ_LAPLACE, Breakpoint::Laplace), (QK_PWLQ_SEARCH, Breakpoint::Search)] {
                    let what = format!("{rows}×{cols} axis {axis}, {bits} bits, breakpoint {bp_c}");
                    let t = PwlqQuantizer::new(bits, bp).with_granularity(Granularity::PerChannel { axis }).quantize(&base, &[rows, cols]).unwrap();
                    let (st, q) = quantize(&base, rows, cols, axis, bits, bp_c, n);
                    expect_ok(st);
                    assert_eq!(q.codes, t.codes(), "{what}");
                    let ms: Vec<f32> = t.params().channels().iter().map(|c| c.m).collect();
                    let ps: Vec<f32> = t.params().channels().iter().map(|c| c.p).collect();
                    assert_eq!(bits_of(&q.m), bits_of(&ms), "{what}");
                    assert_eq!(bits_of(&q.p), bits_of(&ps), "{what}");

                    let (st, h) = pack(&q.codes, rows, cols, axis, bits, &q.m, &q.p);
                    expect_ok(st);
                    let packed = t.pack().unwrap();
                    // SAFETY: a live handle.
                    assert_eq!(unsafe { &(*h.0).packed }, &packed, "{what}");
                    let (mut nc, mut kk, mut bb) = (0usize, 0usize, 0u32);
                    // SAFETY: distinct writable out-pointers.
                    expect_ok(unsafe { qk_pwlq_weights_shape(h.0, &mut nc, &mut kk, &mut bb) });
                    assert_eq!((nc, kk, bb), (n, k, bits), "{what}");

                    // Dequantize: the SIMD kernel equals the scalar definition.
                    let mut d = vec![f32::NAN; n * k];
                    // SAFETY: a valid buffer.
                    expect_ok(unsafe { qk_pwlq_dequantize(h.0, d.as_mut_ptr(), d.len()) });
                    assert_eq!(bits_of(&d), bits_of(&packed.dequantize_channel_major()), "{what}");

                    // The fused GEMM, on both paths (one thread: the fused 4-bit kernel on an
                    // AVX-512 VNNI tier; the default: the int8 driver on [C | T | S]).
                    for threads in [1usize, 0] {
                        expect_ok(qk_set_num_threads(threads));
                        let ctx = context().unwrap();
                        let rg = PwlqGemmWeights::new_in(&ctx, &packed).unwrap();
                        for mm in [1usize, 3, 9] {
                            let (lda, ldc) = (k + 5, n + 1);
                            let a_u8: Vec<u8> = (0..(mm - 1) * lda + k).map(|_| rng.byte()).collect();
                            let a_i8: Vec<i8> = a_u8.iter().map(|&v| v as i8).collect();
                            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 2.0).collect();
                            let sa = 0.0371f32;
                            for (dt, za) in [(QK_U8, 128), (QK_I8, -5)] {
                                for b in [&[][..], &bias[..]] {
                                    let mut c = vec![f32::NAN; (mm - 1) * ldc + n];
                                    let mut want = c.clone();
                                    let mut reference = vec![0f32; mm * n];
                                    let bo = (!b.is_empty()).then_some(b);
                                    if dt == QK_U8 {
                                        expect_ok(gemm(&h, &a_u8, dt, mm, lda, za, sa, b, &mut c, ldc));
                                        let act = Activations::new(MatrixRef::new(&a_u8[..], mm, k).with_stride(lda), za as u8, sa);
                                        rg.gemm_f32_in(&ctx, act, bo, MatrixMut::new(&mut want, mm, n).with_stride(ldc)).unwrap();
                                        gemm_exact_ref(act, &packed, bo, MatrixMut::new(&mut reference, mm, n)).unwrap();
                                    } else {
                                        expect_ok(gemm(&h, &a_i8, dt, mm, lda, za, sa, b, &mut c, ldc));
                                        let act = Activations::new(MatrixRef::new(&a_i8[..], mm, k).with_stride(lda), za as i8, sa);
                                        rg.gemm_f32_in(&ctx, act, bo, MatrixMut::new(&mut want, mm, n).with_stride(ldc)).unwrap();
                                        gemm_exact_ref(act, &packed, bo, MatrixMut::new(&mut reference, mm, n)).unwrap();
                                    }
                                    let w2 = format!("{what}, threads {threads}, m {mm}, dtype {dt}, bias {}", !b.is_empty());
                                    assert_eq!(bits_of(&c), bits_of(&want), "{w2}");
                                    for r in 0..mm {
                                        assert_eq!(bits_of(&c[r * ldc..r * ldc + n]), bits_of(&reference[r * n..(r + 1) * n]), "{w2}: row {r}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    expect_ok(qk_set_num_threads(0));
}

#[test]
fn quantize_and_pack_bad_input() {
    const Q: &str = "qk_pwlq_quantize";
    const P: &str = "qk_pwlq_pack";
    let mut rng = Rng(3);
    let (k, n) = (10, 3);
    let w: Vec<f32> = (0..k * n).map(|_| rng.gauss(1.0)).collect();
    let (st, q) = quantize(&w, k, n, 1, 4, QK_PWLQ_GAUSSIAN, n);
    expect_ok(st);

    for bp in [-1, 3, i32::MAX] {
        let (st, _) = quantize(&w, k, n, 1, 4, bp, n);
        expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "not a qk_pwlq_breakpoint");
    }
    let (st, _) = quantize(&w, k, n, 2, 4, QK_PWLQ_GAUSSIAN, n);
    expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "`channel_axis`");
    for bits in [5u32, 7] {
        let (st, _) = quantize(&w, k, n, 1, bits, QK_PWLQ_GAUSSIAN, n);
        expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "4, 6 or 8");
    }
    for bits in [0u32, 3, 9, u32::MAX] {
        let (st, _) = quantize(&w, k, n, 1, bits, QK_PWLQ_GAUSSIAN, n);
        expect_err(st, QK_ERR_BITS, Q, "bit width");
    }
    // Counts: the channel count follows the axis.
    let (st, _) = quantize(&w, k, n, 0, 4, QK_PWLQ_GAUSSIAN, n);
    expect_err(st, QK_ERR_SHAPE, Q, "`m_count`");
    let (st, _) = quantize(&w[1..], k, n, 1, 4, QK_PWLQ_GAUSSIAN, n);
    expect_err(st, QK_ERR_SHAPE, Q, "`w_count`");
    let (st, _) = quantize(&w, 0, n, 1, 4, QK_PWLQ_GAUSSIAN, n);
    expect_err(st, QK_ERR_SHAPE, Q, "both ≥ 1");
    let (mut c1, mut m1, mut p1) = ([0i16; 4], [0f32; 2], [0f32; 2]);
    // SAFETY: valid buffers; the shape overflow is refused before the counts are compared.
    let st = unsafe {
        qk_pwlq_quantize(w.as_ptr(), 4, usize::MAX, 2, 0, 4, 0, c1.as_mut_ptr(), 4, m1.as_mut_ptr(), 2, p1.as_mut_ptr(), 2)
    };
    expect_err(st, QK_ERR_OVERFLOW, Q, "overflows");
    let mut bad = w.clone();
    bad[4] = f32::NAN;
    let (st, _) = quantize(&bad, k, n, 1, 4, QK_PWLQ_SEARCH, n);
    expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "finite");
    // NULL and overlapping outputs.
    let mut codes = vec![0i16; k * n];
    let mut m = vec![0f32; n];
    // SAFETY: NULL / overlapping outputs are the errors under test, refused before any access.
    unsafe {
        let st = qk_pwlq_quantize(null(), k * n, k, n, 1, 4, 0, codes.as_mut_ptr(), k * n, m.as_mut_ptr(), n, m.as_mut_ptr(), n);
        expect_err(st, QK_ERR_NULL_POINTER, Q, "`w`");
        let st = qk_pwlq_quantize(w.as_ptr(), k * n, k, n, 1, 4, 0, codes.as_mut_ptr(), k * n, m.as_mut_ptr(), n, null_mut(), n);
        expect_err(st, QK_ERR_NULL_POINTER, Q, "`p`");
        let st = qk_pwlq_quantize(w.as_ptr(), k * n, k, n, 1, 4, 0, codes.as_mut_ptr(), k * n, m.as_mut_ptr(), n, m.as_mut_ptr(), n);
        expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "overlaps");
        let wp = w.as_ptr().cast_mut();
        let st = qk_pwlq_quantize(w.as_ptr(), k * n, k, n, 1, 4, 0, codes.as_mut_ptr(), k * n, wp, n, m.as_mut_ptr(), n);
        expect_err(st, QK_ERR_INVALID_PARAMETER, Q, "overlaps");
    }

    // Pack.
    let (st, h) = pack(&q.codes, k, n, 1, 4, &q.m, &q.p);
    expect_ok(st);
    drop(h);
    let mut bad = q.codes.clone();
    bad[13] = 16; // 4-bit: |j| ≤ 2Q + 1 = 15
    let (st, _h) = pack(&bad, k, n, 1, 4, &q.m, &q.p);
    expect_err(st, QK_ERR_INVALID_PARAMETER, P, "element 13 is 16");
    bad[13] = i16::MIN;
    let (st, _h) = pack(&bad, k, n, 1, 4, &q.m, &q.p);
    expect_err(st, QK_ERR_INVALID_PARAMETER, P, "element 13");
    let (st, _h) = pack(&q.codes, k, n, 1, 4, &q.m, &q.p[1..]);
    expect_err(st, QK_ERR_SHAPE, P, "`p_count`");
    let (st, _h) = pack(&q.codes, k, n, 0, 4, &q.m, &q.p);
    expect_err(st, QK_ERR_SHAPE, P, "`m_count`");
    let (st, _h) = pack(&q.codes[1..], k, n, 1, 4, &q.m, &q.p);
    expect_err(st, QK_ERR_SHAPE, P, "`codes_count`");
    let mut p2 = q.p.clone();
    p2[1] = q.m[1] * 2.0;
    let (st, _h) = pack(&q.codes, k, n, 1, 4, &q.m, &p2);
    expect_err(st, QK_ERR_INVALID_PARAMETER, P, "breakpoint `p`");
    let mut m2 = q.m.clone();
    m2[0] = f32::NAN;
    let (st, _h) = pack(&q.codes, k, n, 1, 4, &m2, &q.p);
    expect_err(st, QK_ERR_INVALID_PARAMETER, P, "range `m`");
    let (st, _h) = pack(&q.codes, k, n, 1, 6 + 1, &q.m, &q.p);
    expect_err(st, QK_ERR_INVALID_PARAMETER, P, "4, 6 or 8");
    let (st, _h) = pack(&q.codes, k, n, 3, 4, &q.m, &q.p);
    expect_err(st, QK_ERR_INVALID_PARAMETER, P, "`channel_axis`");
    // SAFETY: NULL is the error under test.
    unsafe {
        let mut out = null_mut();
        let st = qk_pwlq_pack(q.codes.as_ptr(), k * n, k, n, 1, 4, q.m.as_ptr(), n, q.p.as_ptr(), n, null_mut());
        expect_err(st, QK_ERR_NULL_POINTER, P, "`out`");
        let st = qk_pwlq_pack(q.codes.as_ptr(), k * n, k, n, 1, 4, null(), n, q.p.as_ptr(), n, &mut out);
        expect_err(st, QK_ERR_NULL_POINTER, P, "`m`");
        assert!(out.is_null());
        let st = qk_pwlq_pack(q.codes.as_ptr(), usize::MAX, k, n, 1, 4, q.m.as_ptr(), n, q.p.as_ptr(), n, &mut out);
        expect_err(st, QK_ERR_OVERFLOW, P, "address space");
    }
}

#[test]
fn dequantize_gemm_and_shape_bad_input() {
    const D: &str = "qk_pwlq_dequantize";
    const G: &str = "qk_pwlq_gemm_f32";
    const S: &str = "qk_pwlq_weights_shape";
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(5);
    let (k, n, m) = (70, 4, 3);
    let w: Vec<f32> = (0..k * n).map(|_| rng.gauss(1.0)).collect();
    let (st, q) = quantize(&w, k, n, 1, 4, QK_PWLQ_LAPLACE, n);
    expect_ok(st);
    let (st, h) = pack(&q.codes, k, n, 1, 4, &q.m, &q.p);
    expect_ok(st);

    let mut d = vec![0f32; n * k + 1];
    // SAFETY: valid or NULL buffers; short or long buffers are refused before any write.
    unsafe {
        expect_err(qk_pwlq_dequantize(h.0, d.as_mut_ptr(), n * k - 1), QK_ERR_BUFFER_TOO_SMALL, D, "out");
        expect_err(qk_pwlq_dequantize(h.0, d.as_mut_ptr(), n * k + 1), QK_ERR_SHAPE, D, "out");
        expect_err(qk_pwlq_dequantize(h.0, null_mut(), n * k), QK_ERR_NULL_POINTER, D, "`out`");
        expect_err(qk_pwlq_dequantize(null(), d.as_mut_ptr(), n * k), QK_ERR_NULL_POINTER, D, "`weights`");
        let (mut a, mut c) = (0usize, 0u32);
        expect_err(qk_pwlq_weights_shape(h.0, &mut a, null_mut(), &mut c), QK_ERR_NULL_POINTER, S, "`k`");
        expect_err(qk_pwlq_weights_shape(h.0, &mut a, &mut a as *mut usize, &mut c), QK_ERR_INVALID_PARAMETER, S, "overlaps");
        assert_eq!((a, c), (0, 0), "untouched on failure");
        expect_ok(qk_pwlq_weights_free(null_mut()));
    }

    let a = vec![3u8; m * k];
    let mut c = vec![0f32; m * n];
    // Both GEMM paths must refuse a short A (the fused one-thread path indexes A itself).
    for threads in [1usize, 0] {
        expect_ok(qk_set_num_threads(threads));
        expect_ok(gemm(&h, &a, QK_U8, m, k, 0, 1.0, &[], &mut c, n));
        expect_err(gemm(&h, &a[1..], QK_U8, m, k, 0, 1.0, &[], &mut c, n), QK_ERR_BUFFER_TOO_SMALL, G, "a");
        expect_err(gemm(&h, &a, QK_U8, m, k - 1, 0, 1.0, &[], &mut c, n), QK_ERR_INVALID_STRIDE, G, "a");
        expect_err(gemm(&h, &a, QK_U8, m, k, 0, 1.0, &[], &mut c[1..], n), QK_ERR_BUFFER_TOO_SMALL, G, "c");
        expect_err(gemm(&h, &a, QK_U8, m, k, 0, 1.0, &[], &mut c, n - 1), QK_ERR_INVALID_STRIDE, G, "c");
        expect_err(gemm(&h, &a, QK_U8, m, k, 0, 1.0, &[1.0], &mut c, n), QK_ERR_SHAPE, G, "bias");
        for sa in [0.0, -2.0, f32::NAN, f32::NEG_INFINITY] {
            expect_err(gemm(&h, &a, QK_U8, m, k, 0, sa, &[], &mut c, n), QK_ERR_SCALE, G, "scale");
        }
        expect_err(gemm(&h, &a, QK_U8, m, k, 300, 1.0, &[], &mut c, n), QK_ERR_ZERO_POINT, G, "a_zero_point");
        expect_err(gemm(&h, &a, QK_I32, m, k, 0, 1.0, &[], &mut c, n), QK_ERR_UNSUPPORTED, G, "`a_dtype`");
        expect_err(gemm(&h, &a, -7, m, k, 0, 1.0, &[], &mut c, n), QK_ERR_INVALID_PARAMETER, G, "not a qk_dtype");
        expect_err(gemm(&h, &a, QK_U8, 2, usize::MAX, 0, 1.0, &[], &mut c, n), QK_ERR_OVERFLOW, G, "`a`");
        // m = 0: nothing to compute, nothing written.
        expect_ok(gemm(&h, &a[..0], QK_U8, 0, k, 0, 1.0, &[], &mut c[..0], n));
    }
    expect_ok(qk_set_num_threads(0));
    // NULL and overlapping buffers, a NULL or misaligned handle.
    let nh = Handle(null_mut());
    expect_err(gemm(&nh, &a, QK_U8, m, k, 0, 1.0, &[], &mut c, n), QK_ERR_NULL_POINTER, G, "`weights`");
    let mut raw = [0u64; 4];
    let odd = Handle((raw.as_mut_ptr() as *mut u8).wrapping_add(1).cast());
    expect_err(gemm(&odd, &a, QK_U8, m, k, 0, 1.0, &[], &mut c, n), QK_ERR_INVALID_PARAMETER, G, "misaligned");
    std::mem::forget(odd);
    let mut buf = vec![0f32; 256];
    let ap = buf.as_ptr().cast::<c_void>();
    // SAFETY: the overlap / NULL is refused before any slice is made.
    unsafe {
        let st = qk_pwlq_gemm_f32(h.0, ap, QK_U8, m * k, m, k, 0, 1.0, null(), 0, buf.as_mut_ptr(), m * n, n);
        expect_err(st, QK_ERR_INVALID_PARAMETER, G, "overlaps");
        let st = qk_pwlq_gemm_f32(h.0, a.as_ptr().cast(), QK_U8, m * k, m, k, 0, 1.0, null(), n, c.as_mut_ptr(), m * n, n);
        expect_err(st, QK_ERR_NULL_POINTER, G, "`bias`");
        let st = qk_pwlq_gemm_f32(h.0, a.as_ptr().cast(), QK_U8, m * k, m, k, 0, 1.0, null(), 0, null_mut(), m * n, n);
        expect_err(st, QK_ERR_NULL_POINTER, G, "`c`");
    }
}

/// The Rust API under the entry point: a short A is an error on the fused one-thread
/// path too (it indexes A itself), not a panic.
#[test]
fn rust_fused_path_refuses_a_short_a() {
    let mut rng = Rng(9);
    let (k, n, m) = (64, 4, 2);
    let w: Vec<f32> = (0..k * n).map(|_| rng.gauss(1.0)).collect();
    let t = PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(Granularity::PerChannel { axis: 1 }).quantize(&w, &[k, n]).unwrap();
    let packed = t.pack().unwrap();
    let ctx = crate::Context::new().unwrap().with_threads(1).unwrap();
    let g = PwlqGemmWeights::new_in(&ctx, &packed).unwrap();
    let a = vec![1u8; m * k - 1];
    let mut c = vec![0f32; m * n];
    let e = g.gemm_f32_in(&ctx, Activations::new(MatrixRef::new(&a, m, k), 0, 1.0), None, MatrixMut::new(&mut c, m, n)).unwrap_err();
    assert!(matches!(e, crate::Error::BufferTooSmall { what: "a", .. }), "{e}");
}
