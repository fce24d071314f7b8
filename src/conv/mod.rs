//! Convolution: NHWC conv2d with prepacked OHWI filters, on the GEMM microkernels.
//!
//! A [`Conv2d`] (alias [`PackedFilter`]) is built once from OHWI weights and a
//! [`Conv2dGeometry`]; each group's filter is packed as a GEMM B matrix
//! (`K = kernel_h·kernel_w·in_c/groups` × `N = out_c/groups`). A run then takes one of four paths:
//!
//! * **pointwise** (1×1, stride 1, no padding): the NHWC input already is the GEMM's A
//!   matrix `(batch·H·W) × in_c`; each group is a strided view of it, with no copy.
//! * **indirect GEMM**: an indirection buffer (per output pixel and tap, the offset of the
//!   input pixel, or a padding mark) is built on the first run and kept in the filter;
//!   the GEMM kernel's indirect entry (`GemmUkernel::indirect`) reads each output
//!   pixel's taps in place through it — a padding tap reads a row of input zero points —
//!   on the same packed filter, with the GEMM driver's tiling, threads and output stages.
//!   Runs only where whole-K i32 accumulation is exact (DESIGN.md §2; always for real
//!   layers: K up to ~33 000 even at the worst zero points); other runs gather.
//! * **implicit GEMM** (gather): otherwise, each block of output pixels gathers its A
//!   rows through the same indirection buffer into a reused workspace (im2col by block,
//!   padding filled with the input zero point so padded taps add 0) and runs the GEMM
//!   driver and microkernels on it (with K chunks in i64 where i32 is not exact). Blocks
//!   are spread over the context's threads.
//! * **depthwise** (`groups == in_c == out_c`): the filter is packed once for the
//!   depthwise microkernels ([`DepthwiseFilter`]) and bound to the geometry
//!   ([`DepthwiseConv`], whose indirection buffer is built at packing time); the GEMM path
//!   would run `in_c` GEMMs of one column each.
//!
//! Which of indirect and gather a filter takes is decided once, when it is packed, by a
//! rule from measurements (`takes_indirect`): indirect wherever the kernel has the
//! entry, the channels per group are a multiple of its `kr` and the filter has more than
//! one tap; gather for 1×1 filters that are not pointwise (strided or padded), where it
//! measured as fast or faster, and, for a kernel that widens A once per row tile on the
//! gather path (a packed-A entry: AVX2's exact kernel), for ungrouped layers of more than
//! one column tile (more than two where packing A only re-lays bytes out, the AArch64
//! dotprod and i8mm kernels: argued from instruction counts, not timed).
//! [`Context::without_indirect_conv`] forces the gather path.
//!
//! ```
//! use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput};
//! use qkern::WeightQuant;
//! // One 2×2 image, 1 channel, a 2×2 kernel of ones: the sum of the four pixels.
//! let g = Conv2dGeometry::new(1, 2, 2, 1, 1, 2, 2);
//! let w = Conv2d::new(g, &[1i8, 1, 1, 1], WeightQuant::per_tensor(0, 1.0)).unwrap();
//! let mut out = [0i32; 1];
//! qkern::conv::conv2d_i32(&w, ConvInput::new(&[10u8, 20, 30, 40], 0, 1.0), None, &mut out).unwrap();
//! assert_eq!(out, [100]);
//! ```

#[allow(unsafe_code)] // calls the depthwise microkernels (DESIGN.md §1)
mod depthwise;
pub mod geometry;

pub use depthwise::{DepthwiseConv, DepthwiseFilter};
use std::sync::{Mutex, OnceLock};

use qkern_kernels::Int8;
use rayon::prelude::*;

use crate::dispatch::Context;
use crate::error::{Error, Result};
use crate::gemm::{ARows, ASource, Activations, IndirectRows, Indirection, MatrixMut, MatrixRef, PackedWeights, PerChannel, Requantize, WeightQuant, whole_k_exact};

pub use geometry::Conv2dGeometry;

/// Marks a padding tap in the indirection buffer (the kernels' marker).
const PAD: usize = qkern_kernels::IGEMM_ZERO_TAP;

/// NHWC activations `[batch][in_h][in_w][in_c]` with their per-tensor zero point and scale.
#[derive(Clone, Copy, Debug)]
pub struct ConvInput<'a, A> {
    /// The elements; at least `batch·in_h·in_w·in_c`.
    pub data: &'a [A],
    /// Zero point (also the value padding reads).
    pub zero_point: A,
    /// Scale (used by the f32 and requantized outputs).
    pub scale: f32,
}

impl<'a, A> ConvInput<'a, A> {
    /// Input with zero point and scale.
    pub fn new(data: &'a [A], zero_point: A, scale: f32) -> Self {
        ConvInput { data, zero_point, scale }
    }
}

/// Which conv path a filter takes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// 1×1, stride 1, no padding: the input is the GEMM's A, no copy.
    Pointwise,
    /// Indirection buffer + per-block gather (im2col) into a workspace + GEMM
    /// microkernels.
    ImplicitGemm,
    /// Indirection buffer read in place by the GEMM kernel's indirect entry, no copy
    /// (a run whose whole-K i32 accumulation is not provably exact gathers instead).
    IndirectGemm,
    /// `groups == in_c == out_c`: the depthwise microkernels.
    Depthwise,
}

/// A convolution plan: the geometry, the filter packed once per group for the GEMM
/// microkernels, the cached indirection buffer and the reusable gather workspaces.
#[derive(Debug)]
pub struct Conv2d {
    geometry: Conv2dGeometry,
    path: ConvPath,
    /// One packed B (`K × out_c/groups`) per group (empty on the depthwise path).
    weights: Vec<PackedWeights>,
    /// The depthwise plan (depthwise path only). A run mutates its per-call tables, so
    /// it sits behind a lock: runs on one filter from several threads take turns (each
    /// run already spreads over its context's threads).
    depthwise: Option<Mutex<DepthwiseConv>>,
    /// Name of the depthwise microkernel (depthwise path only), readable without the lock.
    dw_kernel: &'static str,
    /// Output pixels gathered per block on the implicit-GEMM path.
    block_rows: usize,
    /// Per output pixel (all batches), per tap: element offset of the input pixel, or `PAD`.
    indirection: OnceLock<Indirection>,
    /// Gather workspaces (bytes), taken by a block and given back: after the first run
    /// there is one per concurrently running block and no run allocates another.
    workspaces: Mutex<Vec<Vec<u8>>>,
}

/// The name engines know: a prepacked filter is a [`Conv2d`] plan.
pub type PackedFilter = Conv2d;

/// A per-channel parameter restricted to one group's output channels.
fn group_slice<'a, T: Copy>(p: PerChannel<'a, T>, what: &str, out_c: usize, g: usize, opg: usize) -> Result<PerChannel<'a, T>> {
    match p {
        PerChannel::Tensor(v) => Ok(PerChannel::Tensor(v)),
        PerChannel::Channel(s) if s.len() == out_c => Ok(PerChannel::Channel(&s[g * opg..(g + 1) * opg])),
        PerChannel::Channel(s) => Err(Error::ShapeMismatch(format!(
            "conv2d {what} has {} values; per output channel needs out_c = {out_c}",
            s.len()
        ))),
    }
}

impl Conv2d {
    /// Packs OHWI `weights` (`[out_c][kernel_h][kernel_w][in_c/groups]`) for `geometry`
    /// on the default context. See [`new_in`](Self::new_in).
    pub fn new<B: Int8>(geometry: Conv2dGeometry, weights: &[B], quant: WeightQuant<'_>) -> Result<Conv2d> {
        Self::new_in(&Context::new()?, geometry, weights, quant)
    }

    /// Packs OHWI `weights` for `geometry` for `ctx`'s GEMM kernels.
    ///
    /// `quant` holds the weight zero point(s) and optional scale(s), per tensor or per
    /// output channel (`out_c` values). Errors on an invalid geometry, a weight slice of
    /// the wrong length, per-channel parameters of the wrong length, zero points outside
    /// the weight type, or invalid scales.
    pub fn new_in<B: Int8>(ctx: &Context, geometry: Conv2dGeometry, weights: &[B], quant: WeightQuant<'_>) -> Result<Conv2d> {
        geometry.validate()?;
        let g = &geometry;
        let need = g.weight_len();
        if weights.len() != need {
            return Err(Error::ShapeMismatch(format!(
                "conv2d weights have {} elements; OHWI {}×{}×{}×{} (out_c × kernel_h × kernel_w × in_c/groups) needs {need}",
                weights.len(),
                g.out_c,
                g.kernel_h,
                g.kernel_w,
                g.group_in_c()
            )));
        }
        let (opg, k) = (g.group_out_c(), g.kernel_h * g.kernel_w * g.group_in_c());
        if g.is_depthwise() {
            // The depthwise kernels take any kernel size up to DW_MAX_TAPS; if they
            // cannot take this filter, the GEMM path below still can (or reports why not).
            let plan = DepthwiseFilter::new_in(ctx, weights, g.in_c, g.kernel_h, g.kernel_w, quant)
                .and_then(|f| DepthwiseConv::new(f, &geometry));
            if let Ok(plan) = plan {
                return Ok(Conv2d {
                    geometry,
                    path: ConvPath::Depthwise,
                    weights: Vec::new(),
                    dw_kernel: plan.filter().kernel_name(),
                    depthwise: Some(Mutex::new(plan)),
                    block_rows: 0,
                    indirection: OnceLock::new(),
                    workspaces: Mutex::new(Vec::new()),
                });
            }
        }
        // OHWI rows are the GEMM's B columns (B transposed): transpose each group once
        // into K × N, then pack it as any GEMM B.
        let mut bt = vec![B::default(); k * opg];
        let mut packed = Vec::with_capacity(g.groups);
        for gi in 0..g.groups {
            for j in 0..opg {
                let row = &weights[(gi * opg + j) * k..(gi * opg + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    bt[kk * opg + j] = v;
                }
            }
            let q = WeightQuant {
                zero_point: group_slice(quant.zero_point, "weight zero_point", g.out_c, gi, opg)?,
                scale: quant.scale.map(|s| group_slice(s, "weight scale", g.out_c, gi, opg)).transpose()?,
            };
            packed.push(PackedWeights::new_in(ctx, MatrixRef::new(&bt, k, opg), q)?);
        }
        let path = if g.is_pointwise() {
            ConvPath::Pointwise
        } else if ctx.indirect_conv() && !packed.is_empty() && packed.iter().all(|w| takes_indirect(&w.kernel(), g, B::SIGNED)) {
            // Every group reads in place, or the filter gathers: a group whose kernel has
            // no indirect entry (a bounded fast kernel) would gather anyway.
            ConvPath::IndirectGemm
        } else {
            ConvPath::ImplicitGemm
        };
        // A block's gathered rows (block_rows × K bytes) should stay in L2 while the
        // microkernel streams the filter; rows a multiple of 48 (every MR divides it).
        let block_rows = ((192 * 1024) / k.max(1)).clamp(48, 480) / 48 * 48;
        Ok(Conv2d {
            geometry,
            path,
            weights: packed,
            depthwise: None,
            dw_kernel: "",
            block_rows,
            indirection: OnceLock::new(),
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The geometry this filter was packed for.
    pub fn geometry(&self) -> &Conv2dGeometry {
        &self.geometry
    }

    /// The path a run takes.
    pub fn path(&self) -> ConvPath {
        self.path
    }

    /// The microkernel the filter was packed for (GEMM, or depthwise on that path); for a
    /// grouped GEMM filter, the first group's ([`Conv2d::group_kernel_names`]).
    pub fn kernel_name(&self) -> &'static str {
        self.weights.first().map_or(self.dw_kernel, PackedWeights::kernel_name)
    }

    /// The GEMM microkernel of each group, in group order (empty on the depthwise path).
    /// Groups can differ: a kernel with a bound on the stored weights (AVX2
    /// `vpmaddubsw`, NEON `smull` pairs) takes the groups whose weights meet it.
    pub fn group_kernel_names(&self) -> Vec<&'static str> {
        self.weights.iter().map(PackedWeights::kernel_name).collect()
    }

    /// Whether the indirection buffer has been built (by a first implicit-GEMM run; the
    /// depthwise path builds its own when the filter is packed).
    pub fn indirection_built(&self) -> bool {
        self.depthwise.is_some() || self.indirection.get().is_some()
    }

    /// Bytes held by the gather workspaces: 0 until a run takes the gather path (never,
    /// on the pointwise and depthwise paths, nor on the indirect path while its whole-K
    /// accumulation is exact), so tests can tell which path ran.
    pub fn workspace_bytes(&self) -> usize {
        self.workspaces.lock().map_or(0, |w| w.iter().map(Vec::capacity).sum())
    }

    /// Bytes held by the packed filter, indirection buffer and workspaces.
    pub fn memory_bytes(&self) -> usize {
        let ws: usize = self.workspaces.lock().map_or(0, |w| w.iter().map(Vec::capacity).sum());
        let dw = self.depthwise.as_ref().map_or(0, |p| p.lock().map_or(0, |p| p.memory_bytes()));
        self.weights.iter().map(PackedWeights::packed_bytes).sum::<usize>()
            + self.indirection.get().map_or(0, Indirection::bytes)
            + ws
            + dw
    }

    /// Validates the buffers and runs `call` on the depthwise plan with the input and
    /// output as pixel-row × channel matrices.
    fn run_depthwise<A: Int8, T>(
        &self,
        plan: &Mutex<DepthwiseConv>,
        input: &ConvInput<'_, A>,
        out: &mut [T],
        call: impl FnOnce(&mut DepthwiseConv, Activations<'_, A>, MatrixMut<'_, T>) -> Result<()>,
    ) -> Result<()> {
        let g = &self.geometry;
        let in_len = g.input_len();
        if input.data.len() < in_len {
            return Err(Error::BufferTooSmall { what: "conv2d input", needed: in_len, got: input.data.len() });
        }
        let out_len = g.output_len();
        if out.len() < out_len {
            return Err(Error::BufferTooSmall { what: "conv2d output", needed: out_len, got: out.len() });
        }
        let a = MatrixRef::new(&input.data[..in_len], g.batch * g.in_h * g.in_w, g.in_c);
        let c = MatrixMut::new(&mut out[..out_len], g.batch * g.out_h() * g.out_w(), g.out_c);
        // A poisoned lock only means an earlier run panicked; the plan rebuilds its
        // per-call tables on every run, so it is still usable.
        let mut plan = plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        call(&mut plan, act(a, input), c)
    }

    /// Errors: a buffer that cannot be allocated (`Error::Overflow`), not an abort.
    fn build_indirection(&self) -> Result<Indirection> {
        let g = &self.geometry;
        let (oh, ow) = (g.out_h(), g.out_w());
        let taps = g.kernel_h * g.kernel_w;
        let n = g.batch.checked_mul(oh).and_then(|v| v.checked_mul(ow)).and_then(|v| v.checked_mul(taps));
        let mut ind = crate::error::try_vec_with_capacity(n, || {
            format!("the conv indirection buffer ({} images × {oh}×{ow} pixels × {taps} taps)", g.batch)
        })?;
        for n in 0..g.batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..g.kernel_h {
                        // wrapping_sub turns "above/left of the image" into a huge value,
                        // which the bounds test below treats as padding.
                        let iy = (oy * g.stride_h + ky * g.dilation_h).wrapping_sub(g.pad_top);
                        for kx in 0..g.kernel_w {
                            let ix = (ox * g.stride_w + kx * g.dilation_w).wrapping_sub(g.pad_left);
                            ind.push(if iy < g.in_h && ix < g.in_w { ((n * g.in_h + iy) * g.in_w + ix) * g.in_c } else { PAD });
                        }
                    }
                }
            }
        }
        Ok(Indirection::new(ind, taps, g.in_c))
    }

    /// Validates the buffers, then runs `call(ctx, A, packed B of group g, g, C)` for
    /// every group over the whole output (pointwise, indirect) or per gathered block.
    /// `bias` is the i32 bias the output stage adds (for the overflow bound).
    fn run<A: Int8, T: Send>(
        &self,
        ctx: &Context,
        input: &ConvInput<'_, A>,
        bias: Option<&[i32]>,
        out: &mut [T],
        call: impl Fn(&Context, ASource<'_, A>, &PackedWeights, usize, MatrixMut<'_, T>) -> Result<()> + Sync,
    ) -> Result<()> {
        let g = &self.geometry;
        let in_len = g.input_len();
        if input.data.len() < in_len {
            return Err(Error::BufferTooSmall { what: "conv2d input", needed: in_len, got: input.data.len() });
        }
        let out_len = g.output_len();
        if out.len() < out_len {
            return Err(Error::BufferTooSmall { what: "conv2d output", needed: out_len, got: out.len() });
        }
        let (cpg, opg) = (g.group_in_c(), g.group_out_c());
        match self.path {
            ConvPath::Pointwise => {
                // The NHWC input is (batch·H·W) × in_c; group gi reads columns
                // gi·cpg.. with stride in_c and writes columns gi·opg.. with stride out_c.
                let m = g.batch * g.in_h * g.in_w;
                for (gi, w) in self.weights.iter().enumerate() {
                    let a = MatrixRef::new(&input.data[gi * cpg..in_len], m, cpg).with_stride(g.in_c);
                    let c = MatrixMut::new(&mut out[gi * opg..out_len], m, opg).with_stride(g.out_c);
                    call(ctx, act(a, input).into(), w, gi, c)?;
                }
                Ok(())
            }
            ConvPath::Depthwise => Err(Error::Internal("conv2d: the depthwise path has no GEMM plan".into())),
            ConvPath::IndirectGemm | ConvPath::ImplicitGemm => {
                // Built once per plan (`OnceLock::get_or_try_init` is not stable yet).
                if self.indirection.get().is_none() {
                    let _ = self.indirection.set(self.build_indirection()?);
                }
                let indirection = self.indirection.get().ok_or_else(|| Error::Internal("conv2d: indirection buffer missing".into()))?;
                let m = g.batch * g.out_h() * g.out_w();
                // The indirect kernels run whole K in i32 only (DESIGN.md §2): where that
                // is not provably exact for this call's zero point and bias, gather.
                if self.path == ConvPath::IndirectGemm && self.weights.iter().all(|w| {
                        whole_k_exact(input.zero_point, w, bias) && w.kernel.indirect.is_some_and(|e| e.run[A::SIGNED as usize][w.signed as usize].is_some())
                    }) {
                    // Group gi reads channels gi·cpg.. of every pixel (the offsets are
                    // pixel starts) and writes columns gi·opg.. with stride out_c.
                    for (gi, w) in self.weights.iter().enumerate() {
                        let rows = IndirectRows { input: &input.data[gi * cpg..in_len], indirection, kc: cpg };
                        let a = ASource { rows: ARows::Indirect(rows), zero_point: input.zero_point, scale: input.scale };
                        let c = MatrixMut::new(&mut out[gi * opg..out_len], m, opg).with_stride(g.out_c);
                        call(ctx, a, w, gi, c)?;
                    }
                    return Ok(());
                }
                let ind = indirection.offsets();
                let taps = g.kernel_h * g.kernel_w;
                let k = taps * cpg;
                let br = self.block_rows;
                let blocks = m.div_ceil(br);
                let block = |ctx: &Context, b: usize, chunk: &mut [T]| -> Result<()> {
                    let rows = chunk.len() / g.out_c;
                    let mut ws = self.workspaces.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
                    if ws.len() < br * k {
                        ws.resize(br * k, 0);
                    }
                    let wa: &mut [A] = bytemuck::cast_slice_mut(&mut ws[..rows * k]);
                    let mut r = Ok(());
                    for (gi, w) in self.weights.iter().enumerate() {
                        gather(&ind[b * br * taps..(b * br + rows) * taps], taps, &input.data[gi * cpg..in_len], input.zero_point, cpg, g.in_c, wa);
                        let c = MatrixMut::new(&mut chunk[gi * opg..], rows, opg).with_stride(g.out_c);
                        r = call(ctx, act(MatrixRef::new(wa, rows, k), input).into(), w, gi, c);
                        if r.is_err() {
                            break;
                        }
                    }
                    if let Ok(mut p) = self.workspaces.lock() {
                        p.push(ws);
                    }
                    r
                };
                if blocks > 1 && ctx.threads() > 1 {
                    // Blocks over the pool; each block's GEMM stays on its thread.
                    let serial = ctx.serial();
                    let chunks = out[..out_len].par_chunks_mut(br * g.out_c);
                    ctx.install(|| chunks.enumerate().try_for_each(|(b, c)| block(&serial, b, c)))
                } else {
                    out[..out_len].chunks_mut(br * g.out_c).enumerate().try_for_each(|(b, c)| block(ctx, b, c))
                }
            }
        }
    }
}

/// Whether a filter packed for `kernel` (weights signed or not) takes the indirect path
/// for geometry `g`: the kernel has an indirect entry for these weights (with either
/// activation type), each tap's channels (`in_c/groups`) fill whole K groups of the
/// packed filter (a group straddling two taps would need two row pointers), and the
/// filter has more than one tap.
///
/// The last condition is measured (AVX-512 VNNI, Zen 4, one thread, the two paths
/// interleaved in one process, best of 11): with several taps the indirect path wins
/// everywhere — ResNet-50 3×3 56×56×64 1.06–1.3×, 3×3 with 4–32 channels 1.1–1.6×,
/// 5×5 and 7×7 stride 2 1.6–2.3×, grouped 3×3 2.9–4.2× (the gather copies `cpg` bytes
/// per tap), large 3×3 (256, 512 channels) even. With one tap (a strided or padded
/// 1×1), the gather is a single contiguous copy per row and hands the kernel dense rows,
/// while rows read in place lie `stride·in_c` bytes apart — a power of two for usual
/// channel counts, so a tile's rows collide in the same L1 sets (and 4 KiB-alias from
/// 1024 channels): there the gather path was as fast or faster (1×1 stride 2,
/// 128→256 … 1024→2048: 0.76–1.0× for indirect in most runs), so it keeps it.
///
/// A kernel with a packed-A entry (the AVX2 exact kernel, which widens A to i16) widens
/// each row tile once on the gather path (the driver's packed A, reused by every column
/// tile) but once per 16-column tile on the indirect one. Measured (AVX2, Zen 4, one
/// thread, interleaved, `examples/conv_paths.rs`, medians): with one group and more than
/// `nr` output channels the gather path won — ResNet-50 3×3 56×56×64 and stride-2
/// 56×56×128 0.86–0.94×, 3×3 with 4–32 channels to 64 0.55–0.93× — while grouped layers
/// (3×3 g4/g8/g16/g32: 1.05–1.8×) and layers of one column tile (64→16: 1.13×) went
/// faster indirect. So such a kernel takes the indirect path only for grouped layers or
/// `out_c/groups ≤ nr`. The AVX2 `vpmaddubsw` kernel (no packed A, rows read in place)
/// was as fast or faster indirect on every layer measured (1.0–2.7×).
///
/// A packed-A kernel whose packer only re-lays bytes out (no widening: the AArch64
/// dotprod and i8mm kernels, 8 rows × 8 K per 64-byte block) gets twice that width,
/// `out_c/groups ≤ 2·nr`. Not measured (no ARM machine; qemu says nothing about speed):
/// argued from instruction counts. Their indirect entries run the raw-row K loop, which
/// by `benches/arm-mca.sh` (llvm-mca 16) takes per 8 K × 8 rows × 8 columns 16 / 20
/// cycles (dotprod i8 / u8, the u8 flip's 8 `eor`) and 10 (i8mm, the `ld1` lane loads)
/// on the Neoverse-V1 model against the packed loop's 16 and 8, and 22 / 24 against 16
/// on the Cortex-A57 model LLVM 16 uses for Neoverse-N1: 0–8 cycles more per block and
/// column tile. The gather path instead pays once per row tile and block a gather copy
/// and `pack_a_8x8` (≈ 45 scalar instructions, 8 loads + 8 stores, compiled; ≈ 10–15
/// cycles with the copy), which the packed loop then reuses for every column tile. So
/// indirect wins up to about 2–5 column tiles depending on the core and activation type:
/// 2 is on the safe side of every case. Grouped layers stay indirect (the gather copies
/// only `cpg` bytes per tap there, a short copy per tap and row). A kernel without packed
/// A (the NEON one: same loop on raw and indirect rows) reads rows in place everywhere.
fn takes_indirect(kernel: &qkern_kernels::GemmUkernel, g: &Conv2dGeometry, b_signed: bool) -> bool {
    let cpg = g.group_in_c();
    // Column tiles up to which a packed-A kernel still reads rows in place (see above).
    let tiles = kernel.packed_a.map_or(usize::MAX, |p| if p.group_bytes > kernel.mr * p.kr { 1 } else { 2 });
    kernel.indirect.is_some_and(|e| e.run[0][b_signed as usize].is_some() || e.run[1][b_signed as usize].is_some())
        && cpg >= 1
        && cpg.is_multiple_of(kernel.format.kr)
        && g.kernel_h * g.kernel_w > 1
        && (g.groups > 1 || g.group_out_c().div_ceil(kernel.format.nr) <= tiles)
}

fn act<'a, A: Int8>(m: MatrixRef<'a, A>, input: &ConvInput<'_, A>) -> Activations<'a, A> {
    Activations::new(m, input.zero_point, input.scale)
}

/// Gathers the A rows of one block: row r, tap t is the `cpg` channels of the input pixel
/// at `ind[r·taps + t]` (already offset to the group's first channel by the caller's
/// `input` slice), or `za` for a padding tap. Taps that are adjacent in memory (one group,
/// horizontal neighbours) are copied as one run.
fn gather<A: Int8>(ind: &[usize], taps: usize, input: &[A], za: A, cpg: usize, in_c: usize, ws: &mut [A]) {
    let k = taps * cpg;
    for (offs, dst) in ind.chunks_exact(taps).zip(ws.chunks_exact_mut(k)) {
        let mut t = 0;
        while t < taps {
            let o = offs[t];
            if o == PAD {
                dst[t * cpg..(t + 1) * cpg].fill(za);
                t += 1;
                continue;
            }
            let mut e = t + 1;
            if cpg == in_c {
                while e < taps && offs[e] == o + (e - t) * in_c {
                    e += 1;
                }
            }
            let len = (e - t) * cpg;
            dst[t * cpg..t * cpg + len].copy_from_slice(&input[o..o + len]);
            t = e;
        }
    }
}

fn check_bias_len(len: usize, out_c: usize) -> Result<()> {
    if len != out_c {
        return Err(Error::ShapeMismatch(format!("conv2d bias has {len} values; out_c = {out_c}")));
    }
    Ok(())
}

impl Context {
    /// `out (i32, NHWC) = conv(input − za, W − zw) + bias`. Errors if a result does not
    /// fit in i32, on short buffers, or a bias that is not `out_c` long.
    pub fn conv2d_i32<A: Int8>(&self, filter: &Conv2d, input: ConvInput<'_, A>, bias: Option<&[i32]>, out: &mut [i32]) -> Result<()> {
        let opg = filter.geometry.group_out_c();
        if let Some(b) = bias {
            check_bias_len(b.len(), filter.geometry.out_c)?;
        }
        if let Some(plan) = &filter.depthwise {
            return filter.run_depthwise(plan, &input, out, |p, a, c| p.run_i32(self, a, bias, c));
        }
        filter.run(self, &input, bias, out, |ctx, a, w, g, c| ctx.gemm_i32_src(a, w, bias.map(|b| &b[g * opg..(g + 1) * opg]), c))
    }

    /// `out (f32, NHWC) = sa·sw[oc]·conv(input − za, W − zw) + bias`. Needs weight scales.
    pub fn conv2d_f32<A: Int8>(&self, filter: &Conv2d, input: ConvInput<'_, A>, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let opg = filter.geometry.group_out_c();
        if let Some(b) = bias {
            check_bias_len(b.len(), filter.geometry.out_c)?;
        }
        if let Some(plan) = &filter.depthwise {
            return filter.run_depthwise(plan, &input, out, |p, a, c| p.run_f32(self, a, bias, c));
        }
        filter.run(self, &input, None, out, |ctx, a, w, g, c| ctx.gemm_f32_src(a, w, bias.map(|b| &b[g * opg..(g + 1) * opg]), c))
    }

    /// `out (u8/i8, NHWC) = requantize(conv(input − za, W − zw) + bias)` with `rq`'s
    /// scale, zero point, rounding mode, clamp and optional `out_c` i32 bias. Needs weight scales.
    pub fn conv2d_requantize<A: Int8, O: Int8>(&self, filter: &Conv2d, input: ConvInput<'_, A>, rq: &Requantize<'_, O>, out: &mut [O]) -> Result<()> {
        let opg = filter.geometry.group_out_c();
        if let Some(b) = rq.bias {
            check_bias_len(b.len(), filter.geometry.out_c)?;
        }
        if let Some(plan) = &filter.depthwise {
            return filter.run_depthwise(plan, &input, out, |p, a, c| p.run_requantize(self, a, rq, c));
        }
        filter.run(self, &input, rq.bias, out, |ctx, a, w, g, c| {
            let rqg = Requantize { bias: rq.bias.map(|b| &b[g * opg..(g + 1) * opg]), ..*rq };
            ctx.gemm_requantize_src(a, w, &rqg, c)
        })
    }
}

/// [`Context::conv2d_i32`] on the default context.
pub fn conv2d_i32<A: Int8>(filter: &Conv2d, input: ConvInput<'_, A>, bias: Option<&[i32]>, out: &mut [i32]) -> Result<()> {
    Context::new()?.conv2d_i32(filter, input, bias, out)
}

/// [`Context::conv2d_f32`] on the default context.
pub fn conv2d_f32<A: Int8>(filter: &Conv2d, input: ConvInput<'_, A>, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    Context::new()?.conv2d_f32(filter, input, bias, out)
}

/// [`Context::conv2d_requantize`] on the default context.
pub fn conv2d_requantize<A: Int8, O: Int8>(filter: &Conv2d, input: ConvInput<'_, A>, rq: &Requantize<'_, O>, out: &mut [O]) -> Result<()> {
    Context::new()?.conv2d_requantize(filter, input, rq, out)
}
