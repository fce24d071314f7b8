//! The pulp-vectorised quantize / dequantize loops (safe code: pulp does the dispatch).
//!
//! They compute exactly [`super::reference`] for the deterministic rounding modes:
//!
//! * `x / scale` is a vector IEEE division, correctly rounded like the scalar one.
//! * Round half to even of `v` with `|v| < 2²³` is `(|v| + 2²³) − 2²³` with the sign put
//!   back: in `[2²³, 2²⁴)` the f32 spacing is 1, so the addition rounds `|v|` to an
//!   integer by the default IEEE rule, ties to even — the same as `round_half_even_f32`.
//!   `|v| ≥ 2²³` (and ±inf) are integral already; the trick can move them by one unit,
//!   but they stay ≥ 2²³ in magnitude and saturate, as in the reference (every qkern
//!   grid lies far inside ±2²²).
//! * Half away from zero adds 1 where that result lies exactly 0.5 below `|v|` (the only
//!   place where the two rules differ); `|v| − r` is exact there.
//! * NaN is replaced by 0 before rounding, so it lands on the zero point.
//! * After adding the zero point and clamping to `[qmin, qmax]` (no NaN is left, so
//!   min/max are unambiguous), the integral value `q ∈ [−128, 255]` becomes an i32 by
//!   the bit trick `bits(q + 1.5·2²³) − bits(1.5·2²³)`, exact for `|q| < 2²²`.
//!
//! Codes are produced as i32 lanes into a small stack buffer and narrowed to u8/i8 in a
//! plain loop (pulp has no byte vectors; the compiler vectorises the narrowing inside the
//! target-feature region).

use pulp::{Arch, Simd, WithSimd};
use qkern_kernels::Int8;

use super::layout::{Layout, Run};

const TWO23: f32 = 8_388_608.0;
const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
const MAGIC_BITS: i32 = 0x4B40_0000;
const CHUNK: usize = 256;

/// Per-call constants, splatted once.
#[derive(Clone, Copy)]
struct K<S: Simd> {
    zero: S::f32s,
    one: S::f32s,
    half: S::f32s,
    sign: S::f32s,
    two23: S::f32s,
    magic: S::f32s,
    magic_bits: S::i32s,
    qmin: S::f32s,
    qmax: S::f32s,
}

impl<S: Simd> K<S> {
    #[inline(always)]
    fn new(s: S, qmin: i32, qmax: i32) -> Self {
        K {
            zero: s.splat_f32s(0.0),
            one: s.splat_f32s(1.0),
            half: s.splat_f32s(0.5),
            sign: s.splat_f32s(-0.0),
            two23: s.splat_f32s(TWO23),
            magic: s.splat_f32s(MAGIC),
            magic_bits: s.splat_i32s(MAGIC_BITS),
            qmin: s.splat_f32s(qmin as f32),
            qmax: s.splat_f32s(qmax as f32),
        }
    }
}

/// One vector of codes: `clamp(round(x / scale) + zp)`, NaN → zp.
#[inline(always)]
fn quant_lanes<S: Simd, const AWAY: bool>(s: S, x: S::f32s, scale: S::f32s, zp: S::f32s, k: &K<S>) -> S::i32s {
    let v = s.div_f32s(x, scale);
    let not_nan = s.equal_f32s(v, v);
    let v = s.select_f32s_m32s(not_nan, v, k.zero);
    let a = s.abs_f32s(v);
    let sign = s.and_f32s(v, k.sign);
    let mut r = s.sub_f32s(s.add_f32s(a, k.two23), k.two23);
    if AWAY {
        let tie = s.equal_f32s(s.sub_f32s(a, r), k.half);
        r = s.add_f32s(r, s.select_f32s_m32s(tie, k.one, k.zero));
    }
    // For |v| ≥ 2²³ (and ±inf) the trick may move v by one unit, but the result keeps
    // |r| ≥ 2²³ and saturates below, exactly as v itself would: no select needed.
    let r = s.or_f32s(r, sign);
    let q = s.add_f32s(r, zp);
    let q = s.min_f32s(s.max_f32s(q, k.qmin), k.qmax);
    s.sub_i32s(s.transmute_i32s_f32s(s.add_f32s(q, k.magic)), k.magic_bits)
}

/// Quantizes `x` into `buf` (same length ≤ CHUNK) with one (scale, zp) for all.
#[inline(always)]
fn quant_chunk_uniform<S: Simd, const AWAY: bool>(s: S, x: &[f32], buf: &mut [i32], scale: f32, zp: f32, k: &K<S>) {
    let sv = s.splat_f32s(scale);
    let zv = s.splat_f32s(zp);
    let (xh, xt) = S::as_simd_f32s(x);
    let (bh, bt) = S::as_mut_simd_i32s(buf);
    for (xv, bv) in xh.iter().zip(bh.iter_mut()) {
        *bv = quant_lanes::<S, AWAY>(s, *xv, sv, zv, k);
    }
    if !xt.is_empty() {
        let q = quant_lanes::<S, AWAY>(s, s.partial_load_f32s(xt), sv, zv, k);
        s.partial_store_i32s(bt, q);
    }
}

/// Quantizes `x` into `buf` with element `i` using `scales[i]`, `zps[i]` (all same length).
#[inline(always)]
fn quant_chunk_varying<S: Simd, const AWAY: bool>(
    s: S,
    x: &[f32],
    buf: &mut [i32],
    scales: &[f32],
    zps: &[f32],
    k: &K<S>,
) {
    let (xh, xt) = S::as_simd_f32s(x);
    let (sh, st) = S::as_simd_f32s(scales);
    let (zh, zt) = S::as_simd_f32s(zps);
    let (bh, bt) = S::as_mut_simd_i32s(buf);
    for (((xv, sv), zv), bv) in xh.iter().zip(sh).zip(zh).zip(bh.iter_mut()) {
        *bv = quant_lanes::<S, AWAY>(s, *xv, *sv, *zv, k);
    }
    if !xt.is_empty() {
        let q = quant_lanes::<S, AWAY>(s, s.partial_load_f32s(xt), s.partial_load_f32s(st), s.partial_load_f32s(zt), k);
        s.partial_store_i32s(bt, q);
    }
}

#[inline(always)]
fn narrow<T: Int8>(buf: &[i32], out: &mut [T]) {
    // Every value is within [qmin, qmax] ⊆ T's range, so the low byte is T's bit pattern.
    for (o, &q) in out.iter_mut().zip(buf) {
        *o = T::from_bits(q as u8);
    }
}

/// Quantizes a whole tensor by `layout` (deterministic rounding only).
pub(crate) struct QuantizeOp<'a, T> {
    pub layout: &'a Layout,
    pub x: &'a [f32],
    pub out: &'a mut [T],
    pub scales: &'a [f32],
    pub zps: &'a [f32],
    pub qmin: i32,
    pub qmax: i32,
}

impl<T: Int8> QuantizeOp<'_, T> {
    /// Runs with the best instruction set pulp finds; `away` selects half-away rounding.
    pub(crate) fn run(self, away: bool) {
        if away {
            Arch::new().dispatch(Quantize::<T, true>(self));
        } else {
            Arch::new().dispatch(Quantize::<T, false>(self));
        }
    }
}

struct Quantize<'a, T, const AWAY: bool>(QuantizeOp<'a, T>);

impl<T: Int8, const AWAY: bool> WithSimd for Quantize<'_, T, AWAY> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let QuantizeOp { layout, x, out, scales, zps, qmin, qmax } = self.0;
        let k = K::<S>::new(s, qmin, qmax);
        let mut buf = [0i32; CHUNK];
        for run in layout.runs() {
            match run {
                Run::Uniform { start, len, p } => {
                    let xs = &x[start..start + len];
                    let os = &mut out[start..start + len];
                    for (xc, oc) in xs.chunks(CHUNK).zip(os.chunks_mut(CHUNK)) {
                        let b = &mut buf[..xc.len()];
                        quant_chunk_uniform::<S, AWAY>(s, xc, b, scales[p], zps[p], &k);
                        narrow(b, oc);
                    }
                }
                Run::Varying { start, len, p0 } => {
                    let xs = &x[start..start + len];
                    let os = &mut out[start..start + len];
                    let ss = &scales[p0..p0 + len];
                    let zs = &zps[p0..p0 + len];
                    let it = xs.chunks(CHUNK).zip(os.chunks_mut(CHUNK)).zip(ss.chunks(CHUNK).zip(zs.chunks(CHUNK)));
                    for ((xc, oc), (sc, zc)) in it {
                        let b = &mut buf[..xc.len()];
                        quant_chunk_varying::<S, AWAY>(s, xc, b, sc, zc, &k);
                        narrow(b, oc);
                    }
                }
            }
        }
    }
}

/// Dequantizes a whole tensor by `layout`: `(q − zp) · scale`.
pub(crate) struct DequantizeOp<'a, T> {
    pub layout: &'a Layout,
    pub q: &'a [T],
    pub out: &'a mut [f32],
    pub scales: &'a [f32],
    pub zps: &'a [f32],
}

impl<T: Int8> DequantizeOp<'_, T> {
    /// Runs with the best instruction set pulp finds.
    pub(crate) fn run(self) {
        Arch::new().dispatch(self);
    }
}

#[inline(always)]
fn widen<T: Int8>(q: &[T], buf: &mut [f32]) {
    for (b, &v) in buf.iter_mut().zip(q) {
        *b = v.to_i32() as f32;
    }
}

impl<T: Int8> WithSimd for DequantizeOp<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let DequantizeOp { layout, q, out, scales, zps } = self;
        let mut buf = [0f32; CHUNK];
        // (q − zp) is exact in f32 for 8-bit codes, so the product is the one rounding,
        // exactly as in `reference::dequantize_value`.
        for run in layout.runs() {
            match run {
                Run::Uniform { start, len, p } => {
                    let sv = s.splat_f32s(scales[p]);
                    let zv = s.splat_f32s(zps[p]);
                    let qs = &q[start..start + len];
                    let os = &mut out[start..start + len];
                    for (qc, oc) in qs.chunks(CHUNK).zip(os.chunks_mut(CHUNK)) {
                        let b = &mut buf[..qc.len()];
                        widen(qc, b);
                        let (bh, bt) = S::as_simd_f32s(b);
                        let (oh, ot) = S::as_mut_simd_f32s(oc);
                        for (bv, ov) in bh.iter().zip(oh.iter_mut()) {
                            *ov = s.mul_f32s(s.sub_f32s(*bv, zv), sv);
                        }
                        if !bt.is_empty() {
                            let v = s.mul_f32s(s.sub_f32s(s.partial_load_f32s(bt), zv), sv);
                            s.partial_store_f32s(ot, v);
                        }
                    }
                }
                Run::Varying { start, len, p0 } => {
                    let qs = &q[start..start + len];
                    let os = &mut out[start..start + len];
                    let ss = &scales[p0..p0 + len];
                    let zs = &zps[p0..p0 + len];
                    let it = qs.chunks(CHUNK).zip(os.chunks_mut(CHUNK)).zip(ss.chunks(CHUNK).zip(zs.chunks(CHUNK)));
                    for ((qc, oc), (sc, zc)) in it {
                        let b = &mut buf[..qc.len()];
                        widen(qc, b);
                        let (bh, bt) = S::as_simd_f32s(b);
                        let (sh, st) = S::as_simd_f32s(sc);
                        let (zh, zt) = S::as_simd_f32s(zc);
                        let (oh, ot) = S::as_mut_simd_f32s(oc);
                        for (((bv, sv), zv), ov) in bh.iter().zip(sh).zip(zh).zip(oh.iter_mut()) {
                            *ov = s.mul_f32s(s.sub_f32s(*bv, *zv), *sv);
                        }
                        if !bt.is_empty() {
                            let v = s.mul_f32s(
                                s.sub_f32s(s.partial_load_f32s(bt), s.partial_load_f32s(zt)),
                                s.partial_load_f32s(st),
                            );
                            s.partial_store_f32s(ot, v);
                        }
                    }
                }
            }
        }
    }
}
