//! The C entry points with hostile arguments: NULL pointers, zero and huge sizes,
//! unknown dtypes, inconsistent shapes and strides, short buffers. Every call must
//! return a status (never unwind, never QK_ERR_PANIC / QK_ERR_INTERNAL) with a message
//! on failure, and a call that succeeds must agree with the Rust API. Every buffer
//! really holds its declared count, as the C contract requires; ASan (nightly) watches
//! for reads past them.

use std::ffi::{CStr, c_void};
use std::ptr;

use qkern::ffi::*;
use qkern::{Activations, MatrixMut, MatrixRef, PackedWeights, WeightQuant};

use super::common::Gen;

/// A size: usually small, sometimes 0 or huge.
fn dim(g: &mut Gen, small: usize) -> usize {
    match g.size(0, 15) {
        0 => 0,
        1 => usize::MAX / g.pick(&[1, 2, 3, 7, 1 << 20]),
        2 => g.pick(&[1 << 31, 1 << 32, (1 << 32) + 1]),
        _ => g.size(1, small),
    }
}

/// A buffer of `count` elements (capped) and the pointer to pass: NULL sometimes.
fn buf<T: Clone + Default>(g: &mut Gen, want: usize) -> (Vec<T>, usize, bool) {
    let count = match g.size(0, 7) {
        0 => want.saturating_sub(1).min(1 << 16),
        1 => g.size(0, 64),
        _ => want.min(1 << 16),
    };
    (vec![T::default(); count], count, g.size(0, 9) == 0)
}

fn ptr_of<T>(v: &[T], null: bool) -> *const T {
    if null { ptr::null() } else { v.as_ptr() }
}

fn check_status(s: qk_status, what: &str) {
    assert!(s != qk_status::QK_ERR_PANIC && s != qk_status::QK_ERR_INTERNAL, "{what}: {s:?}: {}", last_error());
    if s != qk_status::QK_OK {
        assert!(!last_error().is_empty(), "{what}: {s:?} without a message");
    }
}

fn last_error() -> String {
    // SAFETY: qk_last_error never returns NULL and the string lives until the next call.
    unsafe { CStr::from_ptr(qk_last_error()) }.to_string_lossy().into_owned()
}

pub fn run(data: &[u8]) {
    let mut g = Gen::new(data);
    match g.size(0, 3) {
        0 => gemm(&mut g),
        1 => conv(&mut g),
        2 => quantize(&mut g),
        _ => requantize(&mut g),
    }
}

fn gemm(g: &mut Gen) {
    let (k, n) = (dim(g, 40), dim(g, 40));
    let ldb = n.saturating_add(g.size(0, 2));
    let b_dtype = g.pick(&[QK_I8, QK_U8, QK_F32, 0, 99]);
    let (bv, b_count, b_null) = buf::<u8>(g, k.saturating_mul(ldb));
    let fill = g.fill();
    let bv: Vec<u8> = if bv.is_empty() { bv } else { g.values(bv.len(), 0, 255, fill).into_iter().map(|v| v as u8).collect() };
    let zp_count = g.pick(&[1, n, 0, 2]);
    let zps = vec![g.int(-130, 260) as i32; zp_count.min(1 << 16)];
    let zp_null = g.size(0, 9) == 0;
    let mut w: *mut qk_gemm_weights = ptr::null_mut();
    // SAFETY: every pointer is NULL or points to at least its count of elements.
    let s = unsafe {
        qk_gemm_weights_create(
            ptr_of(&bv, b_null).cast::<c_void>(),
            b_dtype,
            b_count,
            k,
            n,
            ldb,
            ptr_of(&zps, zp_null),
            zps.len(),
            ptr::null(),
            0,
            &mut w,
        )
    };
    check_status(s, "qk_gemm_weights_create");
    if s != qk_status::QK_OK {
        assert!(w.is_null(), "failed create left a handle");
        return;
    }
    let m = dim(g, 20);
    let lda = k.saturating_add(g.size(0, 2));
    let ldc = n.saturating_add(g.size(0, 2));
    let a_dtype = g.pick(&[QK_U8, QK_I8, QK_I32]);
    let (av, a_count, a_null) = buf::<u8>(g, m.saturating_mul(lda));
    let fill = g.fill();
    let av: Vec<u8> = if av.is_empty() { av } else { g.values(av.len(), 0, 255, fill).into_iter().map(|v| v as u8).collect() };
    let (mut cv, c_count, c_null) = buf::<i32>(g, m.saturating_mul(ldc));
    let za = g.int(-130, 260) as i32;
    let c_ptr = if c_null { ptr::null_mut() } else { cv.as_mut_ptr() };
    // SAFETY: as above; `c` is writable and disjoint from the inputs.
    let s = unsafe { qk_gemm_i32(w, ptr_of(&av, a_null).cast(), a_dtype, a_count, m, lda, za, ptr::null(), 0, c_ptr, c_count, ldc) };
    check_status(s, "qk_gemm_i32");
    if s == qk_status::QK_OK && b_dtype == QK_I8 && a_dtype == QK_U8 && zp_count == 1 {
        // The same product through the Rust API.
        let b: &[i8] = bytemuck_i8(&bv);
        let pw = PackedWeights::new(MatrixRef::new(b, k, n).with_stride(ldb), WeightQuant { zero_point: qkern::PerChannel::Tensor(zps[0]), scale: None }).unwrap();
        let mut c2 = vec![0i32; cv.len()];
        qkern::gemm::gemm_i32(Activations::new(MatrixRef::new(&av, m, k).with_stride(lda), za as u8, 1.0), &pw, None, MatrixMut::new(&mut c2, m, n).with_stride(ldc)).unwrap();
        // With N = 0 (and K = 0) a call may have a huge M and empty buffers: nothing to
        // compare, and looping over M rows would hang (found by the ASan campaign).
        if n > 0 {
            for i in 0..m {
                assert_eq!(cv[i * ldc..i * ldc + n], c2[i * ldc..i * ldc + n], "row {i}");
            }
        }
    }
    // SAFETY: a live handle, freed once.
    assert_eq!(unsafe { qk_gemm_weights_free(w) }, qk_status::QK_OK);
}

fn bytemuck_i8(v: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size and alignment, and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) }
}

fn conv(g: &mut Gen) {
    let geo = qk_conv_geometry {
        batch: dim(g, 2),
        in_h: dim(g, 9),
        in_w: dim(g, 9),
        in_c: dim(g, 8),
        out_c: dim(g, 8),
        kernel_h: g.size(0, 5),
        kernel_w: g.size(0, 5),
        stride_h: g.size(0, 3),
        stride_w: g.size(0, 3),
        dilation_h: g.size(0, 3),
        dilation_w: g.size(0, 3),
        pad_top: dim(g, 3),
        pad_left: g.size(0, 3),
        pad_bottom: g.size(0, 3),
        pad_right: g.size(0, 3),
        groups: g.pick(&[1, 2, 0, 3]),
    };
    // An image of 2^20..2^40 padded pixels is valid and allocatable, just slow: building
    // its indirection buffer writes up to gigabytes (seconds, past the fuzz timeout under
    // coverage instrumentation). Smaller images run; larger ones exercise the refusal.
    let pixels = geo.in_h.saturating_add(geo.pad_top).saturating_add(geo.pad_bottom).saturating_mul(
        geo.in_w.saturating_add(geo.pad_left).saturating_add(geo.pad_right),
    );
    if (1 << 20..1 << 40).contains(&pixels) {
        return;
    }
    let wlen = geo.out_c.saturating_mul(geo.kernel_h).saturating_mul(geo.kernel_w).saturating_mul(geo.in_c.checked_div(geo.groups).unwrap_or(1));
    let (wv, w_count, w_null) = buf::<i8>(g, wlen);
    let zps = [g.int(-130, 130) as i32];
    let mut f: *mut qk_conv_filter = ptr::null_mut();
    // SAFETY: every pointer is NULL or points to at least its count of elements.
    let s = unsafe {
        qk_conv_filter_create(&geo, ptr_of(&wv, w_null).cast(), g.pick(&[QK_I8, QK_U8, 7]), w_count, zps.as_ptr(), 1, ptr::null(), 0, &mut f)
    };
    check_status(s, "qk_conv_filter_create");
    if s != qk_status::QK_OK {
        assert!(f.is_null());
        return;
    }
    let in_len = geo.batch * geo.in_h * geo.in_w * geo.in_c;
    let (xv, x_count, x_null) = buf::<u8>(g, in_len);
    let (mut yv, y_count, y_null) = { let want = g.size(0, 4096); buf::<i32>(g, want) };
    let y_ptr = if y_null { ptr::null_mut() } else { yv.as_mut_ptr() };
    // SAFETY: as above.
    let s = unsafe { qk_conv_i32(f, ptr_of(&xv, x_null).cast(), QK_U8, x_count, g.int(-1, 256) as i32, ptr::null(), 0, y_ptr, y_count) };
    check_status(s, "qk_conv_i32");
    // SAFETY: a live handle, freed once.
    assert_eq!(unsafe { qk_conv_filter_free(f) }, qk_status::QK_OK);
}

fn quantize(g: &mut Gen) {
    let rank = g.size(0, 4);
    let shape: Vec<i64> = (0..rank).map(|_| g.pick(&[0i64, 1, 3, 5, -1, i64::MAX, 1 << 40])).collect();
    let numel = shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))).unwrap_or(0);
    let (xv, _x_count, x_null) = buf::<f32>(g, numel);
    // The element count is implied by the shape: only pass a shape the buffer covers.
    if xv.len() < numel.min(1 << 16) || numel > 1 << 16 {
        return;
    }
    let scale_count = g.pick(&[1usize, 0, 3, 5]);
    let scales = vec![g.pick(&[1.0f32, 0.0, -1.0, f32::NAN, 0.25]); scale_count];
    let y_dtype = g.pick(&[QK_U8, QK_I8, QK_U16, QK_I16, QK_UINT4, QK_INT4, QK_F32, QK_I32, 42]);
    // y_count is in elements; the buffer (u32-aligned) holds that many of y_dtype.
    let elems = match g.size(0, 3) {
        0 => numel.saturating_sub(1),
        1 => numel + 1,
        _ => numel,
    };
    let bytes = match y_dtype {
        QK_U16 | QK_I16 => elems * 2,
        QK_UINT4 | QK_INT4 => elems.div_ceil(2),
        _ => elems * 4,
    };
    let mut yv = vec![0u32; bytes.div_ceil(4)];
    let y_null = g.size(0, 9) == 0;
    let y_ptr = if y_null { ptr::null_mut() } else { yv.as_mut_ptr() };
    let shape_ptr = if rank == 0 && g.flip() { ptr::null() } else { shape.as_ptr() };
    // SAFETY: x holds numel floats, shape holds rank values, y holds y_count bytes = elems
    // elements of y_dtype; scales holds scale_count floats; no zero point.
    let s = unsafe {
        qk_quantize_linear(
            ptr_of(&xv, x_null),
            shape_ptr,
            rank,
            scales.as_ptr(),
            scales.len(),
            ptr::null(),
            0,
            g.int(-3, 3),
            g.pick(&[0, 1, 2, -1]),
            y_ptr.cast(),
            y_dtype,
            elems,
        )
    };
    check_status(s, "qk_quantize_linear");
}

fn requantize(g: &mut Gen) {
    let (rows, cols) = (dim(g, 9), dim(g, 9));
    let want = rows.saturating_mul(cols);
    let (mut acc, acc_count, acc_null) = buf::<i32>(g, want);
    // The element count is rows·cols: only pass a shape the buffer covers.
    if acc_count < want {
        return;
    }
    acc.iter_mut().for_each(|a| *a = g.pick(&[0, 1, -1, i32::MAX, i32::MIN, 1 << 20, 12_345]));
    let scale_count = g.pick(&[1usize, 0, cols.min(64), 2]);
    let scales: Vec<f32> = (0..scale_count).map(|_| g.pick(&[0.5f32, 1e-6, 3.0e9, 0.0, -1.0, f32::NAN, f32::MIN_POSITIVE])).collect();
    let out_count = match g.size(0, 3) {
        0 => want.saturating_sub(1),
        1 => want.saturating_add(1),
        _ => want,
    };
    let mut out = vec![0u8; out_count.min(1 << 16)];
    if out.len() < out_count {
        return;
    }
    let mode = g.pick(&[QK_REQUANT_FP32, QK_REQUANT_TFLITE_DOUBLE_ROUNDING, QK_REQUANT_SINGLE_ROUNDING, 7]);
    let dtype = g.pick(&[QK_U8, QK_I8, QK_I32, 0]);
    let (zp, lo, hi) = (g.pick(&[0, 128, -128, 255, 300]), g.pick(&[i32::MIN, 0, 10, 200]), g.pick(&[i32::MAX, 100, 5]));
    let out_ptr = if g.size(0, 9) == 0 { ptr::null_mut() } else { out.as_mut_ptr() };
    // SAFETY: acc holds acc_count ≥ rows·cols i32, scales scale_count floats, out
    // out_count bytes; out is a separate allocation.
    let s = unsafe {
        qk_requantize(ptr_of(&acc, acc_null), rows, cols, scales.as_ptr(), scale_count, mode, zp, lo, hi, out_ptr.cast(), dtype, out_count)
    };
    check_status(s, "qk_requantize");
}
