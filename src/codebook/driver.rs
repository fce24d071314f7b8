//! The codebook driver: validation, overflow policy, tiling, threads, kernel calls.

use qkern_kernels::reference::output_stage_ref;
use qkern_kernels::{CodebookArgs, CodebookFormat, Int8, OutputKind};
use rayon::prelude::*;

use qkern_kernels::pack::codebook::{SIGN_SPLIT_BYTES_PER_K, sign_split_row};
use qkern_kernels::pack::decode::CodebookDecodeArgs;

use super::{CodebookWeights, DecodePlan};
use crate::dispatch::cpu;
use crate::dispatch::Context;
use crate::error::{Error, Result, check_matrix, try_vec_with_capacity};
// The output stage (its tables, the kernels' and the reference's view of it, the
// chunked path's stores) is the int8 GEMM driver's: the codebook kernels take the same
// `OutputStage`.
use crate::gemm::scratch::Scratch;
use crate::gemm::{ASource, Activations, K_CHUNK, Out, PackedWeights, Stage, pack_rows, run_with_rows, stage_at, store_value};

#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the pointers inside point to data that outlives the call; tasks write
// disjoint output tiles.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}
impl<T: Copy> Shared<T> {
    fn get(&self) -> T {
        self.0
    }
}

pub(super) fn run<A: Int8>(ctx: &Context, a: &Activations<'_, A>, w: &CodebookWeights, stage: Stage<'_>, mut out: Out<'_>) -> Result<()> {
    let (m, k, n) = (a.matrix.rows, w.k, w.n);
    if a.matrix.cols != k {
        return Err(Error::ShapeMismatch(format!("A is {m}×{} but the codebook weights have K = {k}", a.matrix.cols)));
    }
    check_matrix("a", a.matrix.data.len(), m, k, a.matrix.stride)?;
    let (c_ptr, c_rows, c_cols, ldc, esize, c_len) = out.raw();
    if c_rows != m || c_cols != n {
        return Err(Error::ShapeMismatch(format!("C is {c_rows}×{c_cols} but A·B is {m}×{n}")));
    }
    check_matrix("c", c_len, m, n, ldc)?;
    let bias_i32 = stage.bias_i32();
    if let Some(len) = stage.bias_len().filter(|&len| len != n) {
        return Err(Error::ShapeMismatch(format!("bias has {len} values, N = {n}")));
    }
    let kernel = w.kernel;
    if !crate::dispatch::codebook_runs_here(&kernel) || !kernel.isa.within(ctx.kernels().isa) {
        return Err(Error::IsaUnavailable(format!(
            "the codebook weights were packed for {} ({}), which this context (capped at {}) does not run; pack them with this context",
            kernel.name,
            kernel.isa.name(),
            ctx.kernels().isa.name()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if let Some(plan) = w.decode.as_ref().filter(|p| m >= p.min_m && k > 0 && decoded_runs_in(ctx, p)) {
        return run_decoded(ctx, a, w, plan, stage, out);
    }
    let ukernel = kernel.run[A::SIGNED as usize];

    // Overflow policy (DESIGN.md §2): one i32 pass while max|a−za|·max_n Σ_k|grid| +
    // max|bias| fits (the packer's per-column bound, at most K·max|grid|): the kernel's
    // wrapping sum is then the exact value. Otherwise K chunks whose raw sums are exact in
    // i32 (`k_chunk`), carried in i64.
    let za = a.zero_point.to_i32();
    let max_a = (za - A::MIN).max(A::MAX - za) as u128;
    let max_bias = bias_i32.map_or(0, |b| b.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0)) as u128;
    let exact_i32 = max_a * w.col_abs_max as u128 + max_bias <= i32::MAX as u128;
    let k_chunk = k_chunk(w.grid_max);
    let za_k = (za + kernel.a_offset[A::SIGNED as usize]) as i64;

    let kind = out.kind();
    // Σ (a + off − za − off)·g = raw − (za + off)·Σg; modulo 2^32 in the one-pass case,
    // so computed in wrapping i32 (one pass over N, vectorised: this ran at about 1 % of
    // the GEMV 4096² call as a per-column i64 closure).
    let zk = za_k as i32;
    let col_offset: Vec<i32> = match bias_i32.filter(|_| exact_i32) {
        Some(b) => w.col_sum.iter().zip(b).map(|(&s, &b)| b.wrapping_sub(zk.wrapping_mul(s as i32))).collect(),
        None => w.col_sum.iter().map(|&s| zk.wrapping_mul(s as i32).wrapping_neg()).collect(),
    };
    let zeros = vec![0i32; kernel.format.nr];
    let base = Shared(stage.kernel_stage(kind));
    let stage_for = |j0: usize, col_off: *const i32| stage_at(&base.get(), j0, col_off);

    let (mr, nr) = (kernel.mr, kernel.format.nr);
    let fmt: CodebookFormat = kernel.format;
    let panel_bytes = fmt.panel_bytes(k);
    let (tiles_m, tiles_n) = (m.div_ceil(mr), n.div_ceil(nr));
    let a_data = a.matrix.data;
    let lda = if k == 0 { 0 } else { a.matrix.stride };
    // The i16-table kernels read A widened to i16 (rows of K, packed): once per call, m·k
    // conversions against m·n·k products, instead of a shuffle per row, K group and
    // column tile in the kernel.
    let mut wide_a: Scratch<i16> = Scratch::unused();
    if kernel.table_i16 {
        wide_a = Scratch::new();
        wide_a.reserve(m * k);
        for i in 0..m {
            wide_a.extend(a_data[i * lda..i * lda + k].iter().map(|v| v.to_i32() as i16));
        }
    }
    // The sign-split kernels read each row as `s`, sign masks and `|s|` per K group (see
    // `sign_split_row`), also once per call: 3·m·k bytes written instead of that work per
    // column tile. Rows of whole groups: `lda` counts three-byte elements.
    let mut split_a: Scratch<u8> = Scratch::unused();
    let split_ld = k.div_ceil(8) * 8;
    if kernel.a_sign_split && k > 0 {
        split_a = Scratch::new();
        split_a.resize(m * SIGN_SPLIT_BYTES_PER_K * split_ld, 0);
        let off = kernel.a_offset[A::SIGNED as usize];
        for (i, row) in split_a.chunks_exact_mut(SIGN_SPLIT_BYTES_PER_K * split_ld).enumerate() {
            sign_split_row(&a_data[i * lda..i * lda + k], off, row);
        }
    }
    let (a_ptr, lda, a_esize): (*const u8, usize, usize) = if kernel.table_i16 {
        (wide_a.as_ptr().cast(), k, 2)
    } else if kernel.a_sign_split {
        (split_a.as_ptr(), split_ld, SIGN_SPLIT_BYTES_PER_K)
    } else {
        (a_data.as_ptr().cast(), lda, 1)
    };
    let a_ptr = Shared(a_ptr);
    let cptr = Shared(c_ptr);
    let table = Shared(w.table.as_ptr());
    let table16 = Shared(w.table16.as_ptr());

    // The arguments of rows i0.. and columns j0.. (panel j0 / nr on), `rows × cols`.
    let tile_args = |i0: usize, j0: usize, rows: usize, cols: usize| CodebookArgs {
        m: rows,
        n: cols,
        k,
        a: a_ptr.get().wrapping_add(i0 * lda * a_esize),
        lda,
        b: w.data[j0 / nr * panel_bytes..].as_ptr(),
        table: table.get(),
        table16: table16.get(),
        c: cptr.get().wrapping_add((i0 * ldc + j0) * esize),
        ldc,
        out: stage_for(j0, col_offset[j0..].as_ptr()),
    };
    // One row: the kernel's GEMV entry, if it has one, walks a task's panels in one call.
    let gemv = kernel.gemv.filter(|_| m == 1).map(|g| g[A::SIGNED as usize]);
    let exact_task = |ti0: usize, ti1: usize, tj0: usize, tj1: usize| {
        if let Some(gemv) = gemv {
            let j0 = tj0 * nr;
            // SAFETY: as below, for the one row and the panels tj0..tj1 (columns j0..,
            // every per-column table holding n − j0 entries from j0).
            unsafe { gemv(&tile_args(0, j0, 1, (tj1 * nr).min(n) - j0)) };
            return;
        }
        for tj in tj0..tj1 {
            let j0 = tj * nr;
            for ti in ti0..ti1 {
                let i0 = ti * mr;
                // SAFETY: shapes and strides validated above: rows i0.. of A (or its i16 or sign-split copy) hold k
                // elements, the panel holds panel_bytes, the C tile lies inside `c`, the
                // per-column tables have n entries, both tables 32; the kernel's ISA is
                // available (checked). Tiles are disjoint.
                unsafe { ukernel(&tile_args(i0, j0, mr.min(m - i0), nr.min(n - j0))) };
            }
        }
    };

    let ro = stage.ref_output(kind);
    let chunked_task = |ti0: usize, ti1: usize, tj0: usize, tj1: usize| -> Result<()> {
        let cptr = cptr.get();
        let mut tile = vec![0i32; mr * nr];
        let mut acc = vec![0i64; mr * nr];
        for tj in tj0..tj1 {
            let j0 = tj * nr;
            let nn = nr.min(n - j0);
            for ti in ti0..ti1 {
                let i0 = ti * mr;
                let mm = mr.min(m - i0);
                acc.fill(0);
                for k0 in (0..k).step_by(k_chunk) {
                    let mut st = stage_for(j0, zeros.as_ptr());
                    st.kind = OutputKind::I32;
                    let args = CodebookArgs {
                        m: mm,
                        n: nn,
                        k: k_chunk.min(k - k0),
                        a: a_ptr.get().wrapping_add((i0 * lda + k0) * a_esize),
                        lda,
                        b: w.data[tj * panel_bytes + k0 / CodebookFormat::KR * fmt.group_bytes()..].as_ptr(),
                        table: table.get(),
                    table16: table16.get(),
                        c: tile.as_mut_ptr().cast(),
                        ldc: nr,
                        out: st,
                    };
                    // SAFETY: as in the one-pass case for the K range [k0, k0 + kc):
                    // k_chunk is a multiple of 8, so the chunk starts on a packed group;
                    // the output is the local mr × nr tile, col_offset nr zeros.
                    unsafe { ukernel(&args) };
                    for ii in 0..mm {
                        for jj in 0..nn {
                            acc[ii * nr + jj] += tile[ii * nr + jj] as i64;
                        }
                    }
                }
                for ii in 0..mm {
                    for jj in 0..nn {
                        let j = j0 + jj;
                        let total = acc[ii * nr + jj] - za_k * w.col_sum[j];
                        let v = output_stage_ref(total, j, &ro);
                        let p = cptr.wrapping_add(((i0 + ii) * ldc + j) * esize);
                        // SAFETY: (i0+ii, j) is inside the validated C; tiles are disjoint.
                        unsafe { store_value(p, kind, v, i0 + ii, j, k)? };
                    }
                }
            }
        }
        Ok(())
    };

    // Column blocks whose panels fit in ~L2, row blocks of up to 64 rows; for a GEMV
    // entry, which reads each panel once, all of them.
    let cb = if gemv.is_some() { tiles_n } else { (512 * 1024 / panel_bytes.max(1)).clamp(1, tiles_n) };
    let rb = (64 / mr).clamp(1, tiles_m);
    let mut tasks: Vec<(usize, usize, usize, usize)> = (0..tiles_n)
        .step_by(cb)
        .flat_map(|tj| (0..tiles_m).step_by(rb).map(move |ti| (ti, (ti + rb).min(tiles_m), tj, (tj + cb).min(tiles_n))))
        .collect();
    let work = m as u128 * n as u128 * k.max(1) as u128;
    let parallel = ctx.threads() > 1 && work >= 1 << 18;
    if parallel && tasks.len() < 4 * ctx.threads() {
        // GEMV: every thread streams its share of the codes; one column tile per task, or
        // for a GEMV entry four runs of tiles per thread.
        let step = if gemv.is_some() { tiles_n.div_ceil(4 * ctx.threads()) } else { 1 };
        tasks = (0..tiles_n).step_by(step).flat_map(|tj| (0..tiles_m).step_by(rb).map(move |ti| (ti, (ti + rb).min(tiles_m), tj, (tj + step).min(tiles_n)))).collect();
    }
    let parallel = parallel && tasks.len() > 1;
    if exact_i32 {
        if parallel {
            ctx.install(|| tasks.par_iter().for_each(|&(a0, a1, b0, b1)| exact_task(a0, a1, b0, b1)));
        } else {
            tasks.iter().for_each(|&(a0, a1, b0, b1)| exact_task(a0, a1, b0, b1));
        }
        Ok(())
    } else if parallel {
        ctx.install(|| tasks.par_iter().try_for_each(|&(a0, a1, b0, b1)| chunked_task(a0, a1, b0, b1)))
    } else {
        tasks.iter().try_for_each(|&(a0, a1, b0, b1)| chunked_task(a0, a1, b0, b1))
    }
}

/// The K chunk of the chunked path for a grid reaching `grid_max`: the largest multiple of
/// 8 (a packed group) with `chunk · 255 · grid_max ≤ i32::MAX` — every kernel's raw
/// activation `a + a_offset` is within ±255 — capped at the int8 GEMM's [`K_CHUNK`]. So
/// 8192 for int8 grids (`8192·255·127 < 2^31`), 512 for PoT-5 / 4-bit log (2^14), 256
/// for a grid reaching 32767.
fn k_chunk(grid_max: u16) -> usize {
    let c = i32::MAX as usize / (255 * (grid_max as usize).max(1));
    (c & !(CodebookFormat::KR - 1)).min(K_CHUNK)
}

/// Whether `ctx` runs the decoded path's kernels (the weights may be used with a context
/// capped below the one that packed them: then the codebook kernel runs alone).
fn decoded_runs_in(ctx: &Context, p: &DecodePlan) -> bool {
    let tier = ctx.kernels().isa;
    p.gemm.isa.within(tier) && p.decoder.isa.within(tier) && cpu().has(p.gemm.isa) && cpu().has(p.decoder.isa)
}

/// The decoded path (validated call, `m, n, k > 0`): per column strip, the codes decoded
/// into the int8 GEMM kernel's packed B (`plan.decoder`, the strip's panels split between
/// the threads), then the int8 GEMM driver on that strip — its zero-point terms, output
/// stages, overflow policy (whole K in i32 when provably exact, else K chunks carried in
/// i64) and threads. A strip is as many panels per thread as the int8 driver puts in one
/// column block (~512 KiB), so the decoded panels are still in L2 when every row tile
/// reads them.
fn run_decoded<A: Int8>(ctx: &Context, a: &Activations<'_, A>, w: &CodebookWeights, plan: &DecodePlan, stage: Stage<'_>, mut out: Out<'_>) -> Result<()> {
    let (k, n) = (w.k, w.n);
    let gemm = plan.gemm;
    let (nr, pb) = (gemm.format.nr, gemm.format.panel_bytes(k));
    let tiles_n = n.div_ceil(nr);
    let per_thread = (512 * 1024 / pb.max(1)).clamp(1, tiles_n);
    let strip = (per_thread * ctx.threads()).min(tiles_n);
    let chunks = k.div_ceil(K_CHUNK).max(1);
    let src = Shared(w.data.as_ptr());
    let table = Shared(plan.table.as_ptr());
    let decode = |p0: usize, panels: usize, dst: &mut [u8]| {
        let args = CodebookDecodeArgs {
            src: src.get(),
            src_nr: w.kernel.format.nr,
            k,
            n,
            j0: p0 * nr,
            panels,
            table: table.get(),
            dst: dst.as_mut_ptr(),
            dst_nr: nr,
        };
        debug_assert!(dst.len() >= panels * pb && p0 * nr < n && panels <= (n - p0 * nr).div_ceil(nr));
        // SAFETY: `w.data` holds the codebook panels of all n columns in `w.kernel.format`
        // (the decoder reads that width and 4 or 5 bits, as the plan was built for); the
        // table has 32 bytes; `dst` holds `panels` target panels of `pb` bytes, starting
        // at a panel below n; the decoder's ISA is available (`decoded_runs_in`).
        unsafe { (plan.decoder.run)(&args) };
    };
    let src_a: ASource<'_, A> = (*a).into();
    // The strip buffer is kept per thread between calls: a fresh 0.5 MiB+ allocation
    // per call went through brk / mmap, page faults and the zeroing of a huge page every
    // time (measured on Zen 4: as long as the decode itself at M = 16).
    let mut data = STRIP.take();
    if data.len() < strip * pb {
        // One panel is `nr·K` bytes, twice the codes of its columns: a huge K must be an
        // error, not an allocation abort.
        drop(data);
        data = try_vec_with_capacity(strip.checked_mul(pb), || format!("the decoded path's buffer of {strip} panels of {pb} bytes"))?;
        data.resize(strip * pb, 0);
    }
    let mut rows = None;
    for s0 in (0..tiles_n).step_by(strip) {
        let np = strip.min(tiles_n - s0);
        let (j0, j1) = (s0 * nr, ((s0 + np) * nr).min(n));
        let buf = &mut data[..np * pb];
        if ctx.threads() > 1 && np > 1 {
            ctx.install(|| buf.par_chunks_mut(pb).enumerate().for_each(|(p, d)| decode(s0 + p, 1, d)));
        } else {
            decode(s0, np, buf);
        }
        let ns = j1 - j0;
        let pw = PackedWeights {
            kernel: gemm,
            k,
            n: ns,
            signed: true,
            data: std::mem::take(&mut data),
            zero_point: vec![0; ns],
            stored_zero_point: vec![0; ns],
            any_zero_point: false,
            scale: Vec::new(),
            chunk_col_sum: (0..chunks).flat_map(|c| plan.chunk_col_sum[c * n + j0..c * n + j1].iter().copied()).collect(),
            // Wrapping, as the int8 driver's sums: exact modulo 2^32.
            col_sum: w.col_sum[j0..j1].iter().map(|&s| s as i32).collect(),
            max_abs_centered: plan.max_abs,
        };
        // A is packed once, by the first strip's weights (every strip has the kernel).
        let rows = rows.get_or_insert_with(|| pack_rows(ctx, &src_a, &pw)).as_ref();
        let res = run_with_rows(ctx, &src_a, &pw, stage.columns(j0, j1), out.columns(j0, j1), rows);
        data = pw.data;
        if let Err(e) = res {
            STRIP.set(data);
            return Err(match e {
                Error::Overflow(msg) => Error::Overflow(format!("{msg} (columns counted from column {j0}, where this block of the decoded path starts)")),
                e => e,
            });
        }
    }
    STRIP.set(data);
    Ok(())
}

thread_local! {
    /// The decoded path's strip buffer of this thread, reused by its next call (empty
    /// while a call holds it, so a nested call allocates its own).
    static STRIP: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}
