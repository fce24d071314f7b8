//! The GEMM driver: validates, applies the overflow policy, splits the work into
//! tiles across threads and calls the microkernel. The only code in `qkern` that calls
//! a kernel, hence the only `unsafe` outside the C ABI.
//!
//! Calls of at most 4 rows (GEMV, memory-bound) run the context's GEMV kernel on the
//! same packed weights when one reads their format (`gemv_kernel`), with their own
//! tiling (`gemv_tasks`: one contiguous run of panels per thread, N split between
//! threads, so each thread streams its weights once, in order).

use qkern_kernels::reference::{RefOutput, output_stage_ref, quantize_multiplier};
use qkern_kernels::{
    GemmArgs, GemmUkernelFn, IGEMM_ZERO_TAP, IgemmArgs, IgemmUkernelFn, Int8, OutputKind, OutputStage, PackedA, QuantizedMultiplier,
    RequantMode, gemm_col_term, gemm_row_sum,
};
use rayon::prelude::*;

use super::scratch::Scratch;
use super::{ARows, ASource, IndirectRows, K_CHUNK, MatrixMut, PackedWeights, Requantize};
use crate::dispatch::{Context, cpu};
use crate::error::{Error, Result, check_matrix, check_scale};

/// The output stage, with its per-column tables computed for this call. Shared with the
/// codebook driver (`crate::codebook`), whose kernels take the same [`OutputStage`].
pub(crate) enum Stage<'a> {
    I32 { bias: Option<&'a [i32]> },
    F32 { scale: Scratch<f32>, bias: Option<&'a [f32]> },
    Requant { mode: RequantMode, scale: Scratch<f32>, qmult: Scratch<QuantizedMultiplier>, zero_point: i32, qmin: i32, qmax: i32, bias: Option<&'a [i32]> },
}

impl<'a> Stage<'a> {
    /// The requantization stage of `rq` for activations of scale `sa` and per-column
    /// weight scales `sb` (the scale of one unit of the accumulator in column `n` is
    /// `sa·sb[n]`): checks the output scale, the clamp and every multiplier.
    pub(crate) fn requant<O: Int8>(sa: f32, sb: &[f32], rq: &Requantize<'a, O>) -> Result<Stage<'a>> {
        check_scale("output scale", rq.scale)?;
        let (qmin, qmax) = (rq.min.to_i32(), rq.max.to_i32());
        if qmin > qmax {
            return Err(Error::InvalidParameter(format!("clamp min {qmin} is greater than max {qmax}")));
        }
        // ONNX / onnxruntime: the multiplier is (sa·sb)/sy in f32.
        let scale = Scratch::collect(sb.iter().map(|&sb| (sa * sb) / rq.scale));
        if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidScale { what: "requantization multiplier sa·sb/sy", value: *s as f64 });
        }
        let qmult = match rq.mode {
            RequantMode::Fp32 => Scratch::unused(),
            // TFLite: the effective scale in double.
            mode => Scratch::collect(sb.iter().map(|&sb| quantize_multiplier(sa as f64 * sb as f64 / rq.scale as f64, mode))),
        };
        Ok(Stage::Requant { mode: rq.mode, scale, qmult, zero_point: rq.zero_point.to_i32(), qmin, qmax, bias: rq.bias })
    }

    /// The i32 bias added to the exact accumulator, if any.
    pub(crate) fn bias_i32(&self) -> Option<&'a [i32]> {
        match *self {
            Stage::I32 { bias } | Stage::Requant { bias, .. } => bias,
            Stage::F32 { .. } => None,
        }
    }

    /// The length of the bias (i32 or f32), if there is one.
    pub(crate) fn bias_len(&self) -> Option<usize> {
        match self {
            Stage::F32 { bias, .. } => bias.map(<[f32]>::len),
            _ => self.bias_i32().map(<[i32]>::len),
        }
    }

    /// The same stage for output columns `j0..j1` only (its per-column tables and bias
    /// sliced), for a caller that runs a GEMM column strip by column strip (the codebook
    /// driver's decoded path).
    pub(crate) fn columns(&self, j0: usize, j1: usize) -> Stage<'a> {
        let cols = |v: &Scratch<f32>| Scratch::collect(v[j0..j1].iter().copied());
        match self {
            Stage::I32 { bias } => Stage::I32 { bias: bias.map(|b| &b[j0..j1]) },
            Stage::F32 { scale, bias } => Stage::F32 { scale: cols(scale), bias: bias.map(|b| &b[j0..j1]) },
            Stage::Requant { mode, scale, qmult, zero_point, qmin, qmax, bias } => Stage::Requant {
                mode: *mode,
                scale: cols(scale),
                qmult: if qmult.is_empty() { Scratch::unused() } else { Scratch::collect(qmult[j0..j1].iter().copied()) },
                zero_point: *zero_point,
                qmin: *qmin,
                qmax: *qmax,
                bias: bias.map(|b| &b[j0..j1]),
            },
        }
    }

    /// The kernels' output stage writing `kind`, its per-column tables from column 0 and
    /// no column offsets yet ([`stage_at`] places it on a tile).
    pub(crate) fn kernel_stage(&self, kind: OutputKind) -> OutputStage {
        let null_f = std::ptr::null::<f32>();
        let (scale, bias_f32, qmult, mode, out_zero_point, qmin, qmax) = match self {
            Stage::I32 { .. } => (null_f, null_f, std::ptr::null(), RequantMode::Fp32, 0, 0, 0),
            Stage::F32 { scale, bias } => (scale.as_ptr(), bias.map_or(null_f, <[f32]>::as_ptr), std::ptr::null(), RequantMode::Fp32, 0, 0, 0),
            Stage::Requant { mode, scale, qmult, zero_point, qmin, qmax, .. } => {
                (scale.as_ptr(), null_f, if qmult.is_empty() { std::ptr::null() } else { qmult.as_ptr() }, *mode, *zero_point, *qmin, *qmax)
            }
        };
        OutputStage { kind, mode, col_offset: std::ptr::null(), scale, bias_f32, qmult, out_zero_point, qmin, qmax }
    }

    /// The same stage for the scalar reference the long-K (chunked) paths finish with.
    pub(crate) fn ref_output(&self, kind: OutputKind) -> RefOutput<'_> {
        match self {
            Stage::I32 { bias } => {
                RefOutput { kind, mode: RequantMode::Fp32, bias_i32: *bias, scale: &[], bias_f32: None, qmult: &[], out_zero_point: 0, qmin: 0, qmax: 0 }
            }
            Stage::F32 { scale, bias } => {
                RefOutput { kind, mode: RequantMode::Fp32, bias_i32: None, scale, bias_f32: *bias, qmult: &[], out_zero_point: 0, qmin: 0, qmax: 0 }
            }
            Stage::Requant { mode, scale, qmult, zero_point, qmin, qmax, bias } => RefOutput {
                kind,
                mode: *mode,
                bias_i32: *bias,
                scale,
                bias_f32: None,
                qmult,
                out_zero_point: *zero_point,
                qmin: *qmin,
                qmax: *qmax,
            },
        }
    }
}

/// `base` (from [`Stage::kernel_stage`]) for a tile starting at column `j0`, with the
/// tile's column offsets `col_off` (each per-column table has n entries or is null).
pub(crate) fn stage_at(base: &OutputStage, j0: usize, col_off: *const i32) -> OutputStage {
    OutputStage { col_offset: col_off, ..base.from_column(j0) }
}

/// Writes one result `v` of the scalar output stage ([`output_stage_ref`]) at `p` as
/// `kind`; an i32 result beyond i32 is an [`Error::Overflow`] naming `C[i][j]` (`k`: the
/// call's K, for the message).
///
/// # Safety
/// `p` is valid for an (unaligned) write of one element of `kind`, which nothing else
/// accesses during the call.
pub(crate) unsafe fn store_value(p: *mut u8, kind: OutputKind, v: i64, i: usize, j: usize, k: usize) -> Result<()> {
    match kind {
        OutputKind::I32 => {
            let v = i32::try_from(v).map_err(|_| {
                Error::Overflow(format!("C[{i}][{j}] = {v} does not fit in i32 (K = {k}); use the f32 or requantized output"))
            })?;
            // SAFETY: the caller's contract.
            unsafe { p.cast::<i32>().write_unaligned(v) }
        }
        // SAFETY (both): the caller's contract; F32 values arrive as their bit pattern,
        // U8/I8 ones clamped to the type.
        OutputKind::F32 => unsafe { p.cast::<u32>().write_unaligned(v as u32) },
        OutputKind::U8 | OutputKind::I8 => unsafe { p.write(v as u8) },
    }
    Ok(())
}

/// The output matrix, by element type.
pub(crate) enum Out<'a> {
    I32(MatrixMut<'a, i32>),
    F32(MatrixMut<'a, f32>),
    U8(MatrixMut<'a, u8>),
    I8(MatrixMut<'a, u8>),
}

impl Out<'_> {
    pub(crate) fn kind(&self) -> OutputKind {
        match self {
            Out::I32(_) => OutputKind::I32,
            Out::F32(_) => OutputKind::F32,
            Out::U8(_) => OutputKind::U8,
            Out::I8(_) => OutputKind::I8,
        }
    }
    /// The view of output columns `j0..j1` (`j0 ≤ j1 ≤` the columns): the same rows and
    /// stride, starting at column `j0`.
    pub(crate) fn columns(&mut self, j0: usize, j1: usize) -> Out<'_> {
        fn cols<'b, T>(c: &'b mut MatrixMut<'_, T>, j0: usize, j1: usize) -> MatrixMut<'b, T> {
            MatrixMut { data: &mut c.data[j0..], rows: c.rows, cols: j1 - j0, stride: c.stride }
        }
        match self {
            Out::I32(c) => Out::I32(cols(c, j0, j1)),
            Out::F32(c) => Out::F32(cols(c, j0, j1)),
            Out::U8(c) => Out::U8(cols(c, j0, j1)),
            Out::I8(c) => Out::I8(cols(c, j0, j1)),
        }
    }
    /// (base pointer, rows, cols, stride, element bytes, slice length)
    pub(crate) fn raw(&mut self) -> (*mut u8, usize, usize, usize, usize, usize) {
        match self {
            Out::I32(c) => (c.data.as_mut_ptr().cast(), c.rows, c.cols, c.stride, 4, c.data.len()),
            Out::F32(c) => (c.data.as_mut_ptr().cast(), c.rows, c.cols, c.stride, 4, c.data.len()),
            Out::U8(c) | Out::I8(c) => (c.data.as_mut_ptr(), c.rows, c.cols, c.stride, 1, c.data.len()),
        }
    }
}

/// Raw kernel arguments shared by the tasks of one call.
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the pointers inside point to data that outlives the call (validated slices and
// this call's tables); tasks read it and write disjoint output tiles.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}
impl<T: Copy> Shared<T> {
    /// By method, so closures capture the whole wrapper, not its non-Sync field.
    fn get(&self) -> T {
        self.0
    }
}

/// Whether whole-K i32 accumulation is provably exact (DESIGN.md §2):
/// `K·max|a−za|·max|b−zb| + max|bias|` fits in i32.
pub(super) fn whole_k_exact<A: Int8>(za: A, k: usize, w: &PackedWeights, bias: Option<&[i32]>) -> bool {
    let za = za.to_i32();
    let max_a = (za - A::MIN).max(A::MAX - za) as u128;
    let max_bias = bias.map_or(0, |b| b.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0)) as u128;
    k as u128 * max_a * w.max_abs_centered as u128 + max_bias <= i32::MAX as u128
}

/// Runs one GEMM: validation, overflow policy, tiling, threads.
///
/// Indirect rows ([`ARows::Indirect`]) run on the kernel's indirect entry, and only
/// where whole-K i32 accumulation is exact (the caller checks [`whole_k_exact`] and
/// gathers the rows into a matrix otherwise): an `Internal` error if not.
pub(crate) fn run<A: Int8>(ctx: &Context, a: &ASource<'_, A>, w: &PackedWeights, stage: Stage<'_>, out: Out<'_>) -> Result<()> {
    run_with_rows(ctx, a, w, stage, out, None)
}

/// Activations packed once, every row tile, by the A packer of one kernel
/// ([`pack_rows`]), for several [`run_with_rows`] calls on the same activations: the
/// codebook decoded path runs the driver once per column strip, and each call would
/// otherwise pack the whole A again (32 times at N = K = 4096: grid-aligned PWLQ on
/// AVX2 at M = 16 went from 79 to 83 % of the int8 GEMM's speed on Zen 3 without it).
pub(crate) struct PackedRows {
    buf: Scratch<u8>,
    /// The kernel whose packer wrote `buf`, and the shape packed.
    kernel: &'static str,
    m: usize,
    k: usize,
}

/// Packs every row tile of `a` as [`run_with_rows`] on `w` would (None where that call
/// reads raw rows: no packer, a GEMV kernel, indirect rows, or an empty or mismatched A).
pub(crate) fn pack_rows<A: Int8>(ctx: &Context, a: &ASource<'_, A>, w: &PackedWeights) -> Option<PackedRows> {
    let ARows::Matrix(mat) = &a.rows else { return None };
    let (m, k) = (mat.rows, w.k);
    let runs = cpu().has(w.kernel.isa) && w.kernel.isa.within(ctx.kernels().isa);
    if !runs || m == 0 || k == 0 || mat.cols != k || check_matrix("a", mat.data.len(), m, k, mat.stride).is_err() {
        return None;
    }
    let (p, _) = a_packer::<A>(ctx, w, m, false)?;
    let mut buf = Scratch::new();
    pack_tiles(p, mat.data, mat.stride, m, w.kernel.mr, k, 0, m.div_ceil(w.kernel.mr), &mut buf);
    Some(PackedRows { buf, kernel: w.kernel.name, m, k })
}

/// [`run`], its tasks reading the row tiles from `rows` (when packed for this kernel and
/// shape, else ignored) instead of packing them. The caller passes the activations
/// `rows` was packed from.
pub(crate) fn run_with_rows<A: Int8>(
    ctx: &Context,
    a: &ASource<'_, A>,
    w: &PackedWeights,
    stage: Stage<'_>,
    mut out: Out<'_>,
    rows: Option<&PackedRows>,
) -> Result<()> {
    let (m, k, n) = match &a.rows {
        ARows::Matrix(mat) => (mat.rows, w.k, w.n),
        ARows::Indirect(ir) => (ir.indirection.offsets.len() / ir.indirection.taps, w.k, w.n),
    };
    match &a.rows {
        ARows::Matrix(mat) => {
            if mat.cols != k {
                return Err(Error::ShapeMismatch(format!("A is {m}×{} but the weights have K = {k}", mat.cols)));
            }
            check_matrix("a", mat.data.len(), m, k, mat.stride)?;
        }
        ARows::Indirect(ir) => {
            let taps = ir.indirection.taps;
            if taps.checked_mul(ir.kc) != Some(k) {
                return Err(Error::ShapeMismatch(format!("indirect A has {taps} taps of {} elements but the weights have K = {k}", ir.kc)));
            }
            if let Some(mo) = ir.indirection.max_offset
                && mo.checked_add(ir.kc).is_none_or(|end| end > ir.input.len())
            {
                return Err(Error::BufferTooSmall { what: "indirect A input", needed: mo.saturating_add(ir.kc), got: ir.input.len() });
            }
        }
    }
    let (c_ptr, c_rows, c_cols, ldc, esize, c_len) = out.raw();
    if c_rows != m || c_cols != n {
        return Err(Error::ShapeMismatch(format!("C is {c_rows}×{c_cols} but A·B is {m}×{n}")));
    }
    check_matrix("c", c_len, m, n, ldc)?;
    if let Some(len) = stage.bias_len().filter(|&len| len != n) {
        return Err(Error::ShapeMismatch(format!("bias has {len} values, N = {n}")));
    }
    let kernel = w.kernel;
    if !cpu().has(kernel.isa) || !kernel.isa.within(ctx.kernels().isa) {
        return Err(Error::IsaUnavailable(format!(
            "the weights were packed for {} ({}), which this context (capped at {}) does not run; pack them with this context",
            kernel.name,
            kernel.isa.name(),
            ctx.kernels().isa.name()
        )));
    }
    let ukernel = kernel.run[A::SIGNED as usize][w.signed as usize].ok_or_else(|| {
        Error::Unsupported(format!("{} has no {}×{} variant", kernel.name, A::NAME, if w.signed { "i8" } else { "u8" }))
    })?;
    // The indirect entry, for indirect rows: it needs K groups that never straddle a tap.
    let indirect: Option<(IgemmUkernelFn, &IndirectRows<'_, A>)> = match &a.rows {
        ARows::Matrix(_) => None,
        ARows::Indirect(ir) => {
            let f = kernel.indirect.and_then(|e| e.run[A::SIGNED as usize][w.signed as usize]).ok_or_else(|| {
                Error::Unsupported(format!("{} has no indirect {}×{} entry", kernel.name, A::NAME, if w.signed { "i8" } else { "u8" }))
            })?;
            if ir.kc == 0 || !ir.kc.is_multiple_of(kernel.format.kr) {
                return Err(Error::Unsupported(format!("{}: indirect taps of {} elements are not a multiple of {}", kernel.name, ir.kc, kernel.format.kr)));
            }
            Some((f, ir))
        }
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    // GEMV (m ≤ 4): its own kernel on the same packed weights, and its own tiling (raw
    // rows only).
    let gemv = if indirect.is_some() { None } else { gemv_kernel::<A>(ctx, w, m) };
    let packed_a = a_packer::<A>(ctx, w, m, indirect.is_some());
    let ukernel = packed_a.map_or(ukernel, |(_, f)| f);
    let (tile_mr, ukernel) = gemv.unwrap_or((kernel.mr, ukernel));
    let rows = rows.filter(|r| packed_a.is_some() && r.kernel == kernel.name && r.m == m && r.k == k).map(|r| &r.buf[..]);

    // Overflow policy (DESIGN.md §2): whole-K i32 accumulation is exact while
    // K·max|a−za|·max|b−zb| + max|bias| fits in i32; otherwise chunk K and carry i64.
    let za = a.zero_point.to_i32();
    let exact_i32 = whole_k_exact(a.zero_point, k, w, stage.bias_i32());
    if indirect.is_some() && !exact_i32 {
        return Err(Error::Internal("indirect GEMM rows need whole-K i32 exactness; gather them into a matrix instead".into()));
    }

    // Per-row raw sums of A (only needed for nonzero weight zero points).
    let (a_data, a_stride) = match &a.rows {
        ARows::Matrix(mat) => (mat.data, mat.stride),
        ARows::Indirect(_) => (&[][..], 0),
    };
    // With K = 0, A may be empty whatever its stride (`check_matrix` accepts that): a
    // zero stride keeps every row slice below in bounds.
    let lda = if k == 0 { 0 } else { a_stride };
    // The kernel sees activations a + a_offset and weights b − b_offset; the zero
    // points move with them, so every (a − za)·(b − zb) is unchanged.
    let a_off = kernel.a_offset_for(A::SIGNED);
    let za_k = za + a_off;
    let row_sum = |i: usize, k0: usize, k1: usize| gemm_row_sum(&a_data[i * lda + k0..i * lda + k1], a_off);
    // The row of zero points a padding tap reads (indirect rows only).
    let zero_row: Scratch<u8> = Scratch::collect(std::iter::repeat_n(a.zero_point.to_bits(), indirect.map_or(0, |(_, ir)| ir.kc)));
    let a_row_sum = if w.any_zero_point && exact_i32 {
        match indirect {
            None => Scratch::collect((0..m).map(|i| row_sum(i, 0, k))),
            Some((_, ir)) => {
                // Σ over the taps of each row's tap sums; a padding tap sums the zero row.
                let zsum = gemm_row_sum::<A>(bytemuck::cast_slice(&zero_row), a_off);
                let ind = ir.indirection;
                let rows = ind.offsets[..m * ind.taps].chunks_exact(ind.taps);
                let stride = ind.pixel_stride;
                // The last pixel read (None without a known stride, or when every tap
                // is padding).
                if let Some(last) = ind.max_offset.and_then(|mx| mx.checked_div(stride)) {
                    // Offsets are pixel starts: sum each pixel once (a 3×3 conv reads each
                    // ~9 times), then add up the taps. Pixel p ≤ max/stride starts at
                    // p·stride ≤ max, so its kc elements lie in the input (checked above).
                    // The result's buffer is taken from the pool before the pixel sums',
                    // so that every call takes the same buffers in the same order (a
                    // repeated call allocates nothing).
                    let mut sums = Scratch::new();
                    let pix: Scratch<i32> =
                        Scratch::collect((0..=last).map(|p| gemm_row_sum(&ir.input[p * stride..p * stride + ir.kc], a_off)));
                    sums.extend(rows.map(|offs| {
                        offs.iter().fold(0i32, |s, &o| s.wrapping_add(if o == IGEMM_ZERO_TAP { zsum } else { pix[o / stride] }))
                    }));
                    sums
                } else {
                    Scratch::collect(rows.map(|offs| {
                        offs.iter().fold(0i32, |s, &o| {
                            s.wrapping_add(if o == IGEMM_ZERO_TAP { zsum } else { gemm_row_sum(&ir.input[o..o + ir.kc], a_off) })
                        })
                    }))
                }
            }
        }
    } else {
        Scratch::unused()
    };

    // Per-column term: K·za·zb − za·Σb + bias, modulo 2^32.
    let bias = stage.bias_i32();
    let col_offset = Scratch::collect((0..n).map(|j| {
        let b = if exact_i32 { bias.map_or(0, |b| b[j]) } else { 0 };
        gemm_col_term(k, za_k, w.stored_zero_point[j], w.col_sum[j], b)
    }));

    let kind = out.kind();
    let base = Shared(stage.kernel_stage(kind));
    // The stage for a tile starting at column j0.
    let stage_for = |j0: usize, col_off: *const i32| stage_at(&base.get(), j0, col_off);

    let (mr, nr) = (tile_mr, kernel.nr());
    let panel_bytes = kernel.format.panel_bytes(k);
    let tiles_m = m.div_ceil(mr);
    let tiles_n = n.div_ceil(nr);
    let cptr = Shared(c_ptr);
    let zb_for = |j0: usize| if w.any_zero_point { w.stored_zero_point[j0..].as_ptr() } else { std::ptr::null() };

    // One task: a block of row tiles × column tiles.
    let exact_task = |ws: &mut AWorkspace, ti0: usize, ti1: usize, tj0: usize, tj1: usize| {
        let cptr = cptr.get();
        let a_tile = pack_a_tiles(packed_a.map(|(p, _)| p), rows, a_data, lda, m, mr, k, ti0, ti1, ws);
        for tj in tj0..tj1 {
            let j0 = tj * nr;
            let nn = nr.min(n - j0);
            for ti in ti0..ti1 {
                let i0 = ti * mr;
                let mm = mr.min(m - i0);
                let args = GemmArgs {
                    m: mm,
                    n: nn,
                    k,
                    a: a_tile(&ws.buf, ti, 0),
                    lda,
                    b: w.data[tj * panel_bytes..].as_ptr(),
                    a_row_sum: if a_row_sum.is_empty() { std::ptr::null() } else { a_row_sum[i0..].as_ptr() },
                    b_zero_point: zb_for(j0),
                    c: cptr.wrapping_add((i0 * ldc + j0) * esize),
                    ldc,
                    out: stage_for(j0, col_offset[j0..].as_ptr()),
                };
                // SAFETY: shapes and strides were validated above: rows i0..i0+mm of A
                // hold k elements, the panel holds panel_bytes, the C tile lies inside
                // `c`, and every per-column table has n entries. Tiles are disjoint.
                unsafe { ukernel(&args) };
            }
        }
    };

    // Indirect rows: the same tiles through the kernel's indirect entry (whole K only).
    let indirect_task = |ti0: usize, ti1: usize, tj0: usize, tj1: usize| {
        let Some((iuk, ir)) = indirect else { return };
        let cptr = cptr.get();
        let taps = ir.indirection.taps;
        for tj in tj0..tj1 {
            let j0 = tj * nr;
            let nn = nr.min(n - j0);
            for ti in ti0..ti1 {
                let i0 = ti * mr;
                let mm = mr.min(m - i0);
                let args = IgemmArgs {
                    m: mm,
                    n: nn,
                    taps,
                    kc: ir.kc,
                    input: ir.input.as_ptr().cast(),
                    indirection: ir.indirection.offsets[i0 * taps..].as_ptr(),
                    zero: zero_row.as_ptr(),
                    b: w.data[tj * panel_bytes..].as_ptr(),
                    a_row_sum: if a_row_sum.is_empty() { std::ptr::null() } else { a_row_sum[i0..].as_ptr() },
                    b_zero_point: zb_for(j0),
                    c: cptr.wrapping_add((i0 * ldc + j0) * esize),
                    ldc,
                    out: stage_for(j0, col_offset[j0..].as_ptr()),
                };
                // SAFETY: rows i0..i0+mm have `taps` entries each in the indirection
                // (m = entries / taps); every non-padding entry o satisfies
                // o + kc ≤ input.len() (its maximum was checked above); the zero row has
                // kc elements; kc is a positive multiple of the panel's kr and taps·kc =
                // k, so the panel holds panel_bytes; the C tile lies inside `c`; every
                // per-column table has n entries. Tiles are disjoint.
                unsafe { iuk(&args) };
            }
        }
    };

    // Long K: chunks of K_CHUNK accumulate exactly in i32, carried in i64.
    let ro = stage.ref_output(kind);
    let chunked_task = |ws: &mut AWorkspace, ti0: usize, ti1: usize, tj0: usize, tj1: usize| -> Result<()> {
        let cptr = cptr.get();
        let a_tile = pack_a_tiles(packed_a.map(|(p, _)| p), rows, a_data, lda, m, mr, k, ti0, ti1, ws);
        let mut tile = vec![0i32; mr * nr];
        let mut acc = vec![0i64; mr * nr];
        let mut col_off = vec![0i32; nr];
        let mut rsum = vec![0i32; mr];
        for tj in tj0..tj1 {
            let j0 = tj * nr;
            let nn = nr.min(n - j0);
            for ti in ti0..ti1 {
                let i0 = ti * mr;
                let mm = mr.min(m - i0);
                acc.fill(0);
                for (c, k0) in (0..k).step_by(K_CHUNK).enumerate() {
                    let kc = K_CHUNK.min(k - k0);
                    for (jj, off) in col_off.iter_mut().enumerate().take(nn) {
                        let j = j0 + jj;
                        *off = gemm_col_term(kc, za_k, w.stored_zero_point[j], w.chunk_col_sum[c * n + j], 0);
                    }
                    if w.any_zero_point {
                        for (ii, r) in rsum.iter_mut().enumerate().take(mm) {
                            *r = row_sum(i0 + ii, k0, k0 + kc);
                        }
                    }
                    let mut st = stage_for(j0, col_off.as_ptr());
                    st.kind = OutputKind::I32;
                    let args = GemmArgs {
                        m: mm,
                        n: nn,
                        k: kc,
                        a: a_tile(&ws.buf, ti, k0),
                        lda,
                        b: w.data[tj * panel_bytes + (k0 / kernel.format.kr) * nr * kernel.format.kr..].as_ptr(),
                        a_row_sum: if w.any_zero_point { rsum.as_ptr() } else { std::ptr::null() },
                        b_zero_point: zb_for(j0),
                        c: tile.as_mut_ptr().cast(),
                        ldc: nr,
                        out: st,
                    };
                    // SAFETY: as in the exact path, for the K range [k0, k0+kc): K_CHUNK is
                    // a multiple of kr, so the chunk starts on a packed K group; the output
                    // is the local mr×nr tile.
                    unsafe { ukernel(&args) };
                    for ii in 0..mm {
                        for jj in 0..nn {
                            acc[ii * nr + jj] += tile[ii * nr + jj] as i64;
                        }
                    }
                }
                for ii in 0..mm {
                    for jj in 0..nn {
                        let v = output_stage_ref(acc[ii * nr + jj], j0 + jj, &ro);
                        let idx = ((i0 + ii) * ldc + j0 + jj) * esize;
                        let p = cptr.wrapping_add(idx);
                        // SAFETY: (i0+ii, j0+jj) is inside the validated C; tiles are disjoint.
                        unsafe { store_value(p, kind, v, i0 + ii, j0 + jj, k)? };
                    }
                }
            }
        }
        Ok(())
    };

    // Blocking: column blocks whose panels fit in ~L2, row blocks of up to 64 rows;
    // enough tasks for the threads.
    let cb = (512 * 1024 / panel_bytes.max(1)).clamp(1, tiles_n);
    let rb = (64 / mr).clamp(1, tiles_m);
    let mut tasks = Scratch::new();
    if gemv.is_some() {
        tasks.extend(gemv_tasks(tiles_n, ctx.threads()));
    } else {
        tasks.extend(
            (0..tiles_n)
                .step_by(cb)
                .flat_map(|tj| (0..tiles_m).step_by(rb).map(move |ti| (ti, (ti + rb).min(tiles_m), tj, (tj + cb).min(tiles_n)))),
        );
    }
    if packed_a.is_some() {
        // Row blocks outermost, so consecutive tasks reuse the packed A (`pack_a_tiles`).
        tasks.sort_by_key(|&(ti0, _, tj0, _)| (ti0, tj0));
    }
    let work = m as u128 * n as u128 * k.max(1) as u128;
    let parallel = ctx.threads() > 1 && tasks.len() > 1 && work >= 1 << 18;
    // `ws`: the packed-A workspace, one per thread (or per rayon split), reused by its tasks.
    if indirect.is_some() {
        // Whole-K exact (checked above); no A workspace: the kernel reads rows in place.
        if parallel {
            ctx.install(|| tasks.par_iter().for_each(|&(a0, a1, b0, b1)| indirect_task(a0, a1, b0, b1)));
        } else {
            tasks.iter().for_each(|&(a0, a1, b0, b1)| indirect_task(a0, a1, b0, b1));
        }
        Ok(())
    } else if exact_i32 {
        if parallel {
            ctx.install(|| tasks.par_iter().for_each_init(AWorkspace::default, |ws, &(a0, a1, b0, b1)| exact_task(ws, a0, a1, b0, b1)));
        } else {
            let mut ws = AWorkspace::default();
            tasks.iter().for_each(|&(a0, a1, b0, b1)| exact_task(&mut ws, a0, a1, b0, b1));
        }
        Ok(())
    } else if parallel {
        ctx.install(|| tasks.par_iter().try_for_each_init(AWorkspace::default, |ws, &(a0, a1, b0, b1)| chunked_task(ws, a0, a1, b0, b1)))
    } else {
        let mut ws = AWorkspace::default();
        tasks.iter().try_for_each(|&(a0, a1, b0, b1)| chunked_task(&mut ws, a0, a1, b0, b1))
    }
}

/// The A packer of a call of `m` rows on `w`, with the kernel entry that reads its rows:
/// the one rule of [`run_with_rows`] and [`pack_rows`]. Kernels that widen A per tile
/// may prefer it packed once per row tile, but never the GEMV kernel (it reads raw rows)
/// nor indirect rows; and only a packer whose K groups divide the overflow chunks, which
/// must start on a group.
fn a_packer<A: Int8>(ctx: &Context, w: &PackedWeights, m: usize, indirect: bool) -> Option<(PackedA, GemmUkernelFn)> {
    if indirect || gemv_kernel::<A>(ctx, w, m).is_some() {
        return None;
    }
    let p = w.kernel.packed_a.filter(|p| p.kr >= 1 && K_CHUNK.is_multiple_of(p.kr))?;
    Some((p, p.run[A::SIGNED as usize][w.signed as usize]?))
}

/// The packed-A workspace of one thread (or rayon split) for one call, reused by its
/// tasks: grown as needed, never per tile; its buffer comes from the thread's
/// [`Scratch`] pool, so later calls on the thread allocate nothing.
#[derive(Default)]
struct AWorkspace {
    buf: Scratch<u8>,
    /// The row tiles `buf` holds (packed during this call), so that a task on the same
    /// rows skips packing.
    rows: Option<(usize, usize)>,
}

/// Packs the row tiles `ti0..ti1` of A (rows of `k` elements, `lda` apart, `mr` rows per
/// tile) with the kernel's A packer into `ws`, unless it holds them already or `all`
/// holds every row tile, so that every column tile of the task (and of the next tasks
/// on the same rows) reuses them. Returns the function giving the `a` pointer of row
/// tile `ti` at K offset `k0` (a multiple of the packer's `kr`, or of 1 without a
/// packer) from `ws.buf` (or `all`): packed when there is a packer, else the raw row.
#[allow(clippy::too_many_arguments)]
fn pack_a_tiles<'a, A: Int8>(
    packer: Option<PackedA>,
    all: Option<&'a [u8]>,
    a: &'a [A],
    lda: usize,
    m: usize,
    mr: usize,
    k: usize,
    ti0: usize,
    ti1: usize,
    ws: &mut AWorkspace,
) -> impl Fn(&[u8], usize, usize) -> *const u8 + use<'a, A> {
    let tile_bytes = packer.map_or(0, |p| p.tile_bytes(k));
    if let Some(p) = packer.filter(|_| all.is_none() && ws.rows != Some((ti0, ti1))) {
        ws.rows = Some((ti0, ti1));
        pack_tiles(p, a, lda, m, mr, k, ti0, ti1, &mut ws.buf);
    }
    move |ws: &[u8], ti: usize, k0: usize| match (packer, all) {
        (Some(p), Some(all)) => all[ti * tile_bytes + k0 / p.kr * p.group_bytes..].as_ptr(),
        (Some(p), None) => ws[(ti - ti0) * tile_bytes + k0 / p.kr * p.group_bytes..].as_ptr(),
        (None, _) => a[ti * mr * lda + k0..].as_ptr().cast(),
    }
}

/// Packs row tiles `ti0..ti1` of A (as [`pack_a_tiles`]) into `buf`, tile `ti` at
/// `(ti − ti0)·tile_bytes`, growing it as needed.
#[allow(clippy::too_many_arguments)]
fn pack_tiles<A: Int8>(p: PackedA, a: &[A], lda: usize, m: usize, mr: usize, k: usize, ti0: usize, ti1: usize, buf: &mut Scratch<u8>) {
    let tile_bytes = p.tile_bytes(k);
    let need = (ti1 - ti0) * tile_bytes;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    for ti in ti0..ti1 {
        let i0 = ti * mr;
        let mm = mr.min(m - i0);
        // SAFETY: rows i0..i0+mm of A hold k elements `lda` apart (validated by the
        // caller); the destination is this tile's `tile_bytes` inside `buf`; the packer
        // belongs to the kernel whose ISA the caller checked.
        unsafe { (p.pack[A::SIGNED as usize])(a[i0 * lda..].as_ptr().cast(), lda, mm, k, buf[(ti - ti0) * tile_bytes..].as_mut_ptr()) };
    }
}

/// The GEMV kernel (and its entry for activations `A`) for a call of `m` rows on `w`,
/// when the context has one that reads `w`'s packed format (`KernelTable::gemv_for`).
fn gemv_kernel<A: Int8>(ctx: &Context, w: &PackedWeights, m: usize) -> Option<(usize, qkern_kernels::GemmUkernelFn)> {
    let g = ctx.kernels().gemv_for(&w.kernel, m)?;
    if !cpu().has(g.isa) {
        return None;
    }
    Some((g.mr, g.run[A::SIGNED as usize][w.signed as usize]?))
}

/// The tasks of a GEMV (one row tile): the column panels in one contiguous range per
/// thread, so that each thread streams its part of the packed weights once, strictly
/// sequentially (panels are adjacent in memory), and the threads split N evenly.
fn gemv_tasks(tiles_n: usize, threads: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let parts = threads.clamp(1, tiles_n);
    (0..parts).map(move |p| (0, 1, p * tiles_n / parts, (p + 1) * tiles_n / parts))
}

/// Asks Linux to back the 2 MiB-aligned part of `buf` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`; this host's THP mode is `madvise`, so without the advice
/// every buffer gets 4 KiB pages). Call it before the buffer is first written, so the
/// page faults allocate huge pages directly.
///
/// Why: a GEMV streams its packed weights once per call, and on 4 KiB pages a
/// single-core read stream runs at half the speed or less — measured on this Zen 4 host,
/// interleaved runs of the same read loop: 16 MiB (L3) 56 → 80 GB/s, 45 MiB 17 → 31,
/// 256 MiB (DRAM) 8.5 → 15.6 (a TLB miss and a stopped hardware prefetch stream at
/// every 4 KiB page). The advice changes no data and no semantics; where it is refused
/// (other OS, THP disabled) nothing changes but the speed.
///
/// Not a kernel call: it lives here because the driver is the one module of this crate
/// allowed `unsafe` (the system call), as the buffer is the kernels' operand.
pub(crate) fn advise_huge_pages(buf: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    #[cfg(target_os = "linux")]
    {
        let start = (buf.as_mut_ptr() as usize).next_multiple_of(HUGE);
        let end = (buf.as_mut_ptr() as usize + buf.len()) / HUGE * HUGE;
        if end > start {
            // SAFETY: [start, end) lies inside `buf`, which this call borrows mutably;
            // MADV_HUGEPAGE is advice only (no data or mapping changes), and its result
            // is ignored on purpose: a refusal leaves the 4 KiB pages.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (buf, HUGE);
}
