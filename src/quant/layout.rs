//! How the elements of a row-major tensor map to quantization parameters.
//!
//! A tensor of shape `[d0, …, dn]` with a parameter axis `a` is viewed as
//! `outer × dim × inner` (`outer = d0·…·d(a−1)`, `dim = da`, `inner = d(a+1)·…·dn`).
//! The tensor is then covered, in increasing flat order, by *runs*: contiguous element
//! ranges whose parameters are either one index for the whole run, or consecutive
//! indices (one per element). Both kinds vectorise, and the run order is the flat order,
//! which the stochastic path relies on to draw its random numbers in element order.

use super::uniform::Granularity;
use crate::error::{Error, Result};

/// A validated mapping from elements to parameter indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub numel: usize,
    outer: usize,
    dim: usize,
    inner: usize,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tensor,
    Channel,
    Group { block: usize, nblocks: usize },
}

/// A contiguous range of elements and where its parameters are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// Elements `start..start+len` all use parameter `p`.
    Uniform { start: usize, len: usize, p: usize },
    /// Element `start+i` uses parameter `p0+i`, for `i < len`.
    Varying { start: usize, len: usize, p0: usize },
}

/// The number of elements of `shape`, or an error if the product overflows.
pub(crate) fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::InvalidParameter(format!("`shape` {shape:?}: the element count overflows usize")))
}

impl Layout {
    /// Validates `shape` against `granularity` and the data length `len` (of argument `what`).
    pub(crate) fn new(shape: &[usize], granularity: &Granularity, what: &'static str, len: usize) -> Result<Layout> {
        let n = numel(shape)?;
        if n != len {
            return Err(Error::ShapeMismatch(format!("`shape` {shape:?} has {n} elements but `{what}` has {len}")));
        }
        let axis = match *granularity {
            Granularity::PerTensor => {
                return Ok(Layout { numel: n, outer: 1, dim: n, inner: 1, kind: Kind::Tensor });
            }
            Granularity::PerChannel { axis } => axis,
            Granularity::PerGroup { axis, group_size } => {
                if group_size == 0 {
                    return Err(Error::InvalidParameter("per-group `group_size` must be at least 1".into()));
                }
                axis
            }
        };
        if axis >= shape.len() {
            return Err(Error::InvalidParameter(format!(
                "granularity `axis` {axis} is out of range for a tensor of rank {} (shape {shape:?})",
                shape.len()
            )));
        }
        // The sub-products cannot overflow: they divide `n`, or `n` is 0 and a later
        // factor is 0 — in which case compute them with saturation; runs are empty anyway.
        let outer = shape[..axis].iter().fold(1usize, |a, &d| a.saturating_mul(d));
        let dim = shape[axis];
        let inner = shape[axis + 1..].iter().fold(1usize, |a, &d| a.saturating_mul(d));
        let kind = match *granularity {
            Granularity::PerGroup { group_size, .. } => {
                Kind::Group { block: group_size, nblocks: dim.div_ceil(group_size) }
            }
            _ => Kind::Channel,
        };
        let layout = Layout { numel: n, outer, dim, inner, kind };
        // The parameter count must be representable too (it is ≤ n unless n == 0).
        layout.checked_num_params().ok_or_else(|| {
            Error::InvalidParameter(format!("`shape` {shape:?}: the parameter count overflows usize"))
        })?;
        Ok(layout)
    }

    fn checked_num_params(&self) -> Option<usize> {
        match self.kind {
            Kind::Tensor => Some(1),
            Kind::Channel => Some(self.dim),
            Kind::Group { nblocks, .. } => self.outer.checked_mul(nblocks)?.checked_mul(self.inner),
        }
    }

    /// How many (scale, zero point) pairs this layout needs.
    pub(crate) fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// The runs, in increasing flat order; they cover every element once.
    ///
    /// An iterator rather than a callback so that the vector loops can consume it with a
    /// plain `for` inside pulp's target-feature region: a closure body would be compiled
    /// out of line without those features, turning every SIMD operation into a call.
    #[inline(always)]
    pub(crate) fn runs(&self) -> Runs {
        Runs { l: *self, o: 0, j: 0 }
    }

    /// The values of `x` grouped by parameter index: `(values, offsets)` with the values
    /// of parameter `p` in `values[offsets[p]..offsets[p+1]]`, each group in flat order.
    pub(crate) fn gather(&self, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
        let np = self.num_params();
        let mut offsets = vec![0usize; np + 1];
        for r in self.runs() {
            match r {
                Run::Uniform { len, p, .. } => offsets[p + 1] += len,
                Run::Varying { len, p0, .. } => {
                    for c in &mut offsets[p0 + 1..p0 + 1 + len] {
                        *c += 1;
                    }
                }
            }
        }
        for p in 0..np {
            offsets[p + 1] += offsets[p];
        }
        let mut fill = offsets.clone();
        let mut values = vec![0f32; self.numel];
        for r in self.runs() {
            match r {
                Run::Uniform { start, len, p } => {
                    let at = fill[p];
                    values[at..at + len].copy_from_slice(&x[start..start + len]);
                    fill[p] += len;
                }
                Run::Varying { start, len, p0 } => {
                    for (i, &v) in x[start..start + len].iter().enumerate() {
                        values[fill[p0 + i]] = v;
                        fill[p0 + i] += 1;
                    }
                }
            }
        }
        (values, offsets)
    }
}

/// Iterator over the runs of a [`Layout`] (see [`Layout::runs`]).
pub(crate) struct Runs {
    l: Layout,
    /// Index along the outer dimensions.
    o: usize,
    /// Index along the axis (channel) or block index (group, innermost axis).
    j: usize,
}

impl Runs {
    /// Advances `j`, wrapping into `o` after `n` steps.
    #[inline(always)]
    fn step(&mut self, n: usize) {
        self.j += 1;
        if self.j == n {
            self.j = 0;
            self.o += 1;
        }
    }
}

impl Iterator for Runs {
    type Item = Run;

    #[inline(always)]
    fn next(&mut self) -> Option<Run> {
        let Layout { numel, outer, dim, inner, kind } = self.l;
        if numel == 0 || self.o >= outer {
            return None;
        }
        let (o, j) = (self.o, self.j);
        let run = match kind {
            Kind::Tensor => {
                self.o = outer;
                Run::Uniform { start: 0, len: numel, p: 0 }
            }
            // Channel axis innermost: each row holds every channel once.
            Kind::Channel if inner == 1 => {
                self.o += 1;
                Run::Varying { start: o * dim, len: dim, p0: 0 }
            }
            Kind::Channel => {
                self.step(dim);
                Run::Uniform { start: (o * dim + j) * inner, len: inner, p: j }
            }
            Kind::Group { block, nblocks } if inner == 1 => {
                self.step(nblocks);
                let d0 = j * block;
                Run::Uniform { start: o * dim + d0, len: block.min(dim - d0), p: o * nblocks + j }
            }
            Kind::Group { block, nblocks } => {
                self.step(dim);
                Run::Varying { start: (o * dim + j) * inner, len: inner, p0: (o * nblocks + j / block) * inner }
            }
        };
        Some(run)
    }
}
