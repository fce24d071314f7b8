//! QLinearMatMul and MatMulInteger on the GEMM API.
//!
//! Both behave like `numpy.matmul`: 1-D operands are promoted (a `(K,)` to `(1, K)`, b
//! `(K,)` to `(K, 1)`, the added dimension dropped from the output) and batch
//! dimensions broadcast. Each matrix product is one call of [`Context::gemm_requantize`]
//! or [`Context::gemm_i32`] on B packed for that call (ONNX does not say B is constant).
//!
//! Cost notes:
//! - When B and its parameters do not vary over the batch and A is not broadcast, the
//!   batch is folded into M: one pack of B and one GEMM for the whole call.
//! - Per-row parameters of A (and of Y for QLinearMatMul) are not in the GEMM API (its
//!   activations have one zero point and one scale). Rows are split into maximal runs of
//!   equal parameters and each run is one GEMM on the same packed B. With all-distinct
//!   per-row parameters that is one GEMV per row: correct and exact, but it streams
//!   packed B once per row instead of once per row block.

use qkern_kernels::Int8;

use super::{TensorRef, numel};
use crate::dispatch::Context;
use crate::error::{Error, Result, check_scale};
use crate::gemm::{Activations, MatrixMut, MatrixRef, PackedWeights, PerChannel, Requantize, WeightQuant};

/// One quantized input of QLinearMatMul: the tensor, its scale and its zero point.
///
/// Scale and zero point have the same shape: one value (a scalar or 1-element vector:
/// per tensor), or per row of `a` (a 1-D tensor of M values, or `[..., M, 1]` whose batch
/// dimensions broadcast to the output's), or per column of `b` (N values, or
/// `[..., 1, N]`). Scales are finite and positive.
#[derive(Clone, Copy, Debug)]
pub struct QLinearInput<'a, T> {
    /// The quantized tensor.
    pub tensor: TensorRef<'a, T>,
    /// Its scale(s).
    pub scale: TensorRef<'a, f32>,
    /// Its zero point(s).
    pub zero_point: TensorRef<'a, T>,
}

impl<'a, T> QLinearInput<'a, T> {
    /// An input from its three parts.
    pub fn new(tensor: TensorRef<'a, T>, scale: TensorRef<'a, f32>, zero_point: TensorRef<'a, T>) -> Self {
        QLinearInput { tensor, scale, zero_point }
    }
}

/// The shape of `numpy.matmul(a, b)`: the broadcast batch dimensions, then M (unless `a`
/// is 1-D), then N (unless `b` is 1-D). Errors if a rank is 0, K differs or the batch
/// dimensions do not broadcast.
pub fn matmul_output_shape(a_shape: &[usize], b_shape: &[usize]) -> Result<Vec<usize>> {
    Ok(Plan::new(a_shape, b_shape)?.out_shape)
}

/// The shapes of one matrix product.
struct Plan<'s> {
    m: usize,
    k: usize,
    n: usize,
    a_batch: &'s [usize],
    b_batch: &'s [usize],
    out_batch: Vec<usize>,
    batches: usize,
    out_shape: Vec<usize>,
}

impl<'s> Plan<'s> {
    fn new(a: &'s [usize], b: &'s [usize]) -> Result<Plan<'s>> {
        if a.is_empty() || b.is_empty() {
            return Err(Error::ShapeMismatch(format!("matmul needs operands of rank ≥ 1; a is {a:?}, b is {b:?}")));
        }
        let (a_batch, m, ka) = match a.len() {
            1 => (&a[..0], 1, a[0]),
            r => (&a[..r - 2], a[r - 2], a[r - 1]),
        };
        let (b_batch, kb, n) = match b.len() {
            1 => (&b[..0], b[0], 1),
            r => (&b[..r - 2], b[r - 2], b[r - 1]),
        };
        if ka != kb {
            return Err(Error::ShapeMismatch(format!("a {a:?} has K = {ka} columns but b {b:?} has {kb} rows")));
        }
        let out_batch = broadcast_shapes(a_batch, b_batch)
            .ok_or_else(|| Error::ShapeMismatch(format!("the batch dimensions of a {a:?} and b {b:?} do not broadcast")))?;
        let mut out_shape = out_batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        let overflow = || Error::InvalidParameter(format!("the output shape of a {a:?} · b {b:?} overflows usize"));
        let batches = numel(&out_batch).ok_or_else(overflow)?;
        numel(&out_shape).ok_or_else(overflow)?;
        Ok(Plan { m, k: ka, n, a_batch, b_batch, out_batch, batches, out_shape })
    }
}

/// numpy broadcasting of two shapes (right-aligned; equal dimensions or 1).
fn broadcast_shapes(x: &[usize], y: &[usize]) -> Option<Vec<usize>> {
    let r = x.len().max(y.len());
    (0..r)
        .map(|i| {
            let dx = if i + x.len() >= r { x[i + x.len() - r] } else { 1 };
            let dy = if i + y.len() >= r { y[i + y.len() - r] } else { 1 };
            match (dx, dy) {
                (a, b) if a == b => Some(a),
                (1, b) => Some(b),
                (a, 1) => Some(a),
                _ => None,
            }
        })
        .collect()
}

/// Whether `inp` broadcasts to `out` (numpy rules, one direction).
fn broadcasts_to(inp: &[usize], out: &[usize]) -> bool {
    inp.len() <= out.len() && inp.iter().rev().zip(out.iter().rev()).all(|(&i, &o)| i == o || i == 1)
}

/// The linear index in a tensor of shape `inp` (broadcast to `out`) of the element at
/// linear index `t` of `out`.
fn broadcast_index(out: &[usize], inp: &[usize], mut t: usize) -> usize {
    let (mut idx, mut stride) = (0, 1);
    for (j, &od) in out.iter().enumerate().rev() {
        let c = t % od.max(1);
        t /= od.max(1);
        let back = out.len() - 1 - j;
        if back < inp.len() {
            let id = inp[inp.len() - 1 - back];
            if id != 1 {
                idx += c * stride;
            }
            stride *= id;
        }
    }
    idx
}

/// Which matrix dimension a parameter runs along.
#[derive(Clone, Copy, PartialEq)]
enum Along {
    Rows,
    Cols,
}

/// A scale or zero point of one operand, resolved against the output batch.
struct Param<'a, T> {
    data: &'a [T],
    /// The parameter's own batch dimensions (broadcast to the output's).
    batch: &'a [usize],
    /// Values per batch entry: 1 (shared by all rows/columns) or M/N.
    per: usize,
}

impl<T: Copy> Param<'_, T> {
    fn batch_index(&self, out_batch: &[usize], t: usize) -> usize {
        if self.batch.is_empty() { 0 } else { broadcast_index(out_batch, self.batch, t) }
    }
    fn at(&self, out_batch: &[usize], t: usize, i: usize) -> T {
        let b = self.batch_index(out_batch, t);
        self.data[b * self.per + if self.per == 1 { 0 } else { i }]
    }
    fn batch_invariant(&self) -> bool {
        self.batch.iter().all(|&d| d == 1)
    }
    /// The values of batch entry `t` (1 or `per` of them).
    fn slice(&self, out_batch: &[usize], t: usize) -> &[T] {
        let b = self.batch_index(out_batch, t);
        &self.data[b * self.per..(b + 1) * self.per]
    }
}

/// Resolves a parameter's shape: one value, a 1-D vector of `len` (= M or N) values, or
/// a tensor `[..., len or 1, 1]` (rows) / `[..., 1, len or 1]` (columns) whose batch
/// dimensions broadcast to the output's.
fn parse_param<'a, T>(what: &str, p: TensorRef<'a, T>, along: Along, len: usize, out_batch: &[usize]) -> Result<Param<'a, T>> {
    p.check(what)?;
    let s = p.shape;
    let (kind, dim) = match along {
        Along::Rows => ("per row of a", "M"),
        Along::Cols => ("per column of b", "N"),
    };
    if s.len() <= 1 && p.data.len() == 1 {
        return Ok(Param { data: p.data, batch: &[], per: 1 });
    }
    if s.len() == 1 {
        if s[0] == len {
            return Ok(Param { data: p.data, batch: &[], per: len });
        }
    } else if s.len() >= 2 {
        let r = s.len();
        let (vec_dim, unit_dim) = match along {
            Along::Rows => (s[r - 2], s[r - 1]),
            Along::Cols => (s[r - 1], s[r - 2]),
        };
        if unit_dim == 1 && (vec_dim == len || vec_dim == 1) && broadcasts_to(&s[..r - 2], out_batch) {
            return Ok(Param { data: p.data, batch: &s[..r - 2], per: vec_dim });
        }
    }
    let want = match along {
        Along::Rows => format!("[..., {len}, 1]"),
        Along::Cols => format!("[..., 1, {len}]"),
    };
    Err(Error::ShapeMismatch(format!(
        "`{what}` has shape {s:?}: it must be one value (per tensor), {len} values ({kind}, {dim} = {len}), or {want} with batch dimensions broadcasting to {out_batch:?}"
    )))
}

/// Scale and zero point must have the same shape (two single values always agree).
fn check_pair_shape(scale: &str, s: &[usize], zp: &str, z: &[usize]) -> Result<()> {
    let single = |sh: &[usize]| sh.len() <= 1 && numel(sh) == Some(1);
    if s == z || (single(s) && single(z)) {
        Ok(())
    } else {
        Err(Error::ShapeMismatch(format!("`{scale}` has shape {s:?} but `{zp}` has shape {z:?}; ONNX requires the same shape")))
    }
}

fn check_scales(what: &'static str, s: &[f32]) -> Result<()> {
    s.iter().try_for_each(|&v| check_scale(what, v))
}

/// Checks the operand and output buffers against the plan.
fn check_buffers(plan: &Plan<'_>, a_len: usize, a_shape: &[usize], b_len: usize, b_shape: &[usize], y_len: usize) -> Result<()> {
    super::check_len("a", a_len, a_shape)?;
    super::check_len("b", b_len, b_shape)?;
    let want = numel(&plan.out_shape).unwrap_or(usize::MAX);
    if y_len != want {
        return Err(Error::ShapeMismatch(format!("`y` has {y_len} elements but the output shape {:?} needs {want}", plan.out_shape)));
    }
    Ok(())
}

/// Calls `f(t, a_row, y_row, rows, key)` for each maximal run of consecutive output rows
/// whose row parameters (`key(t, i)`) are equal, where `t` is the output batch entry of
/// the run's first row, `a_row` the index of its first row among all rows of `a`, and
/// `y_row` among all rows of the output. With `fold`, the batch is one tall matrix (A
/// is not broadcast and B is batch-invariant), so runs cross batch entries.
fn for_each_run<K: PartialEq + Copy>(
    plan: &Plan<'_>,
    fold: bool,
    key: impl Fn(usize, usize) -> K,
    mut f: impl FnMut(usize, usize, usize, usize, K) -> Result<()>,
) -> Result<()> {
    let m = plan.m;
    if fold {
        let total = plan.batches * m;
        let mut r0 = 0;
        while r0 < total {
            let k0 = key(r0 / m, r0 % m);
            let mut r1 = r0 + 1;
            while r1 < total && key(r1 / m, r1 % m) == k0 {
                r1 += 1;
            }
            f(r0 / m, r0, r0, r1 - r0, k0)?;
            r0 = r1;
        }
    } else {
        for t in 0..plan.batches {
            let ai = if plan.a_batch.is_empty() { 0 } else { broadcast_index(&plan.out_batch, plan.a_batch, t) };
            let mut i0 = 0;
            while i0 < m {
                let k0 = key(t, i0);
                let mut i1 = i0 + 1;
                while i1 < m && key(t, i1) == k0 {
                    i1 += 1;
                }
                f(t, ai * m + i0, t * m + i0, i1 - i0, k0)?;
                i0 = i1;
            }
        }
    }
    Ok(())
}

/// Whether the batch can be folded into M: A not broadcast, B and its parameters the
/// same for every batch entry.
fn can_fold(plan: &Plan<'_>, b_params_invariant: bool) -> bool {
    numel(plan.a_batch) == Some(plan.batches) && plan.b_batch.iter().all(|&d| d == 1) && b_params_invariant
}

/// B for batch entry `t`, packed once per distinct (matrix, scale entry, zero-point entry).
struct BCache {
    key: Option<(usize, usize, usize)>,
    w: Option<PackedWeights>,
}

impl BCache {
    fn get<B: Int8>(
        &mut self,
        ctx: &Context,
        plan: &Plan<'_>,
        b: &[B],
        t: usize,
        zp: &Param<'_, B>,
        scale: Option<&Param<'_, f32>>,
    ) -> Result<&PackedWeights> {
        let ob = &plan.out_batch;
        let bi = if plan.b_batch.is_empty() { 0 } else { broadcast_index(ob, plan.b_batch, t) };
        let key = (bi, scale.map_or(0, |s| s.batch_index(ob, t)), zp.batch_index(ob, t));
        if self.key != Some(key) || self.w.is_none() {
            let (k, n) = (plan.k, plan.n);
            let mat = MatrixRef::new(&b[bi * k * n..(bi + 1) * k * n], k, n);
            let zps: Vec<i32> = zp.slice(ob, t).iter().map(|v| v.to_i32()).collect();
            let zpc = if zps.len() == 1 { PerChannel::Tensor(zps[0]) } else { PerChannel::Channel(&zps) };
            let quant = match scale {
                None => WeightQuant::zero_point_only(zpc),
                Some(s) => {
                    let sv = s.slice(ob, t);
                    let sc = if sv.len() == 1 { PerChannel::Tensor(sv[0]) } else { PerChannel::Channel(sv) };
                    WeightQuant { zero_point: zpc, scale: Some(sc) }
                }
            };
            self.w = Some(PackedWeights::new_in(ctx, mat, quant)?);
            self.key = Some(key);
        }
        self.w.as_ref().ok_or_else(|| Error::Internal("packed B missing".into()))
    }
}

/// QLinearMatMul (opset 21) on the default context. See [`qlinear_matmul_in`].
pub fn qlinear_matmul<A: Int8, B: Int8, Y: Int8>(
    a: QLinearInput<'_, A>,
    b: QLinearInput<'_, B>,
    y_scale: TensorRef<'_, f32>,
    y_zero_point: TensorRef<'_, Y>,
    y: &mut [Y],
) -> Result<()> {
    qlinear_matmul_in(&Context::new()?, a, b, y_scale, y_zero_point, y)
}

/// QLinearMatMul (opset 21): `y = saturate(round_half_even(((a − za)·(b − zb)) · m) + zy)`
/// with `m = (a_scale · b_scale) / y_scale` in f32, exactly onnxruntime's arithmetic
/// (the GEMM API's `Fp32` requantization).
///
/// `a` (`[..., M, K]` or `[K]`) and `b` (`[..., K, N]` or `[K]`) are u8 or i8 in any
/// combination, as is the output `y`, which has [`matmul_output_shape`]. `a` and `y`
/// parameters are per tensor or per row, `b` parameters per tensor or per column (see
/// [`QLinearInput`]); `y_scale` and `y_zero_point` have the same shape rules as `a`'s.
/// Errors on any shape disagreement, a non-finite or non-positive scale, or a
/// multiplier that is not a finite positive f32.
pub fn qlinear_matmul_in<A: Int8, B: Int8, Y: Int8>(
    ctx: &Context,
    a: QLinearInput<'_, A>,
    b: QLinearInput<'_, B>,
    y_scale: TensorRef<'_, f32>,
    y_zero_point: TensorRef<'_, Y>,
    y: &mut [Y],
) -> Result<()> {
    let plan = Plan::new(a.tensor.shape, b.tensor.shape)?;
    check_buffers(&plan, a.tensor.data.len(), a.tensor.shape, b.tensor.data.len(), b.tensor.shape, y.len())?;
    let ob = plan.out_batch.as_slice();
    check_pair_shape("a_scale", a.scale.shape, "a_zero_point", a.zero_point.shape)?;
    check_pair_shape("b_scale", b.scale.shape, "b_zero_point", b.zero_point.shape)?;
    check_pair_shape("y_scale", y_scale.shape, "y_zero_point", y_zero_point.shape)?;
    let sa = parse_param("a_scale", a.scale, Along::Rows, plan.m, ob)?;
    let za = parse_param("a_zero_point", a.zero_point, Along::Rows, plan.m, ob)?;
    let sb = parse_param("b_scale", b.scale, Along::Cols, plan.n, ob)?;
    let zb = parse_param("b_zero_point", b.zero_point, Along::Cols, plan.n, ob)?;
    let sy = parse_param("y_scale", y_scale, Along::Rows, plan.m, ob)?;
    let zy = parse_param("y_zero_point", y_zero_point, Along::Rows, plan.m, ob)?;
    check_scales("a_scale", a.scale.data)?;
    check_scales("b_scale", b.scale.data)?;
    check_scales("y_scale", y_scale.data)?;
    if y.is_empty() {
        return Ok(());
    }
    let fold = can_fold(&plan, sb.batch_invariant() && zb.batch_invariant());
    let (k, n) = (plan.k, plan.n);
    let (a_data, b_data) = (a.tensor.data, b.tensor.data);
    let mut cache = BCache { key: None, w: None };
    let key = |t: usize, i: usize| (za.at(ob, t, i), sa.at(ob, t, i).to_bits(), sy.at(ob, t, i).to_bits(), zy.at(ob, t, i));
    if k == 0 {
        // Every accumulator is 0, so every output is its row's y_zero_point. (Done here
        // rather than by a GEMM: there is nothing to pack.)
        return for_each_run(&plan, fold, key, |_, _, yr, rows, (_, _, _, zy)| {
            y[yr * n..(yr + rows) * n].fill(zy);
            Ok(())
        });
    }
    for_each_run(&plan, fold, key, |t, ar, yr, rows, (za, sa, sy, zy)| {
        let w = cache.get(ctx, &plan, b_data, t, &zb, Some(&sb))?;
        let am = MatrixRef::new(&a_data[ar * k..(ar + rows) * k], rows, k);
        let ym = MatrixMut::new(&mut y[yr * n..(yr + rows) * n], rows, n);
        ctx.gemm_requantize(Activations::new(am, za, f32::from_bits(sa)), w, &Requantize::new(f32::from_bits(sy), zy), ym)
    })
}

/// MatMulInteger (opset 10) on the default context. See [`matmul_integer_in`].
pub fn matmul_integer<A: Int8, B: Int8>(
    a: TensorRef<'_, A>,
    a_zero_point: Option<TensorRef<'_, A>>,
    b: TensorRef<'_, B>,
    b_zero_point: Option<TensorRef<'_, B>>,
    y: &mut [i32],
) -> Result<()> {
    matmul_integer_in(&Context::new()?, a, a_zero_point, b, b_zero_point, y)
}

/// MatMulInteger (opset 10): `y = (a − a_zero_point)·(b − b_zero_point)` in i32.
///
/// `a` and `b` are u8 or i8 in any combination, shaped as for [`qlinear_matmul_in`]; `y`
/// has [`matmul_output_shape`]. `a_zero_point` is per tensor or per row of `a` (M
/// values, or `[..., M, 1]`), `b_zero_point` per tensor or per column of `b` (N values,
/// or `[..., 1, N]`); absent means 0. The products are exact; a result that does not fit
/// in i32 (possible only for very long K) is an [`Error::Overflow`], never a wrap.
pub fn matmul_integer_in<A: Int8, B: Int8>(
    ctx: &Context,
    a: TensorRef<'_, A>,
    a_zero_point: Option<TensorRef<'_, A>>,
    b: TensorRef<'_, B>,
    b_zero_point: Option<TensorRef<'_, B>>,
    y: &mut [i32],
) -> Result<()> {
    let plan = Plan::new(a.shape, b.shape)?;
    check_buffers(&plan, a.data.len(), a.shape, b.data.len(), b.shape, y.len())?;
    let ob = plan.out_batch.as_slice();
    let zero_a = A::default();
    let zero_b = B::default();
    let za = match a_zero_point {
        Some(z) => parse_param("a_zero_point", z, Along::Rows, plan.m, ob)?,
        None => Param { data: std::slice::from_ref(&zero_a), batch: &[], per: 1 },
    };
    let zb = match b_zero_point {
        Some(z) => parse_param("b_zero_point", z, Along::Cols, plan.n, ob)?,
        None => Param { data: std::slice::from_ref(&zero_b), batch: &[], per: 1 },
    };
    if y.is_empty() {
        return Ok(());
    }
    let fold = can_fold(&plan, zb.batch_invariant());
    let (k, n) = (plan.k, plan.n);
    if k == 0 {
        // Empty sums; nothing to pack.
        y.fill(0);
        return Ok(());
    }
    let mut cache = BCache { key: None, w: None };
    for_each_run(
        &plan,
        fold,
        |t, i| za.at(ob, t, i),
        |t, ar, yr, rows, za| {
            let w = cache.get(ctx, &plan, b.data, t, &zb, None)?;
            let am = MatrixRef::new(&a.data[ar * k..(ar + rows) * k], rows, k);
            let ym = MatrixMut::new(&mut y[yr * n..(yr + rows) * n], rows, n);
            ctx.gemm_i32(Activations::new(am, za, 1.0), w, None, ym)
        },
    )
}
