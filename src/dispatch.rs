//! Dispatch: detect the CPU once, build the table of the best kernel per family, and
//! let callers, tests and `QKERN_MAX_ISA` cap or choose the tier (DESIGN.md §5).

use std::sync::{Arc, OnceLock};

use qkern_kernels::pack::decode::CodebookDecoder;
use qkern_kernels::{CodebookUkernel, DwconvUkernel, GemmUkernel, Isa};

use crate::error::{Error, Result};

/// What this CPU (and this build) can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// Tiers available, in order (always starts with `Scalar`).
    pub isas: Vec<Isa>,
    /// Feature names detected, for reports (`qkern info`).
    pub flags: Vec<&'static str>,
}

impl CpuFeatures {
    /// Whether `isa` can run here.
    pub fn has(&self, isa: Isa) -> bool {
        self.isas.contains(&isa)
    }
    /// The most capable tier.
    pub fn best(&self) -> Isa {
        *self.isas.last().unwrap_or(&Isa::Scalar)
    }
}

fn detect_uncached() -> CpuFeatures {
    let mut isas = vec![Isa::Scalar];
    let mut flags = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! flag {
            ($f:tt) => {{
                let on = std::arch::is_x86_feature_detected!($f);
                if on {
                    flags.push($f);
                }
                on
            }};
        }
        let avx2 = flag!("avx2") & flag!("fma");
        let avxvnni = flag!("avxvnni");
        let avx512 = flag!("avx512f") & flag!("avx512bw") & flag!("avx512vl");
        let avx512vnni = flag!("avx512vnni");
        flag!("avx512vbmi");
        if avx2 {
            isas.push(Isa::Avx2);
            if avxvnni {
                isas.push(Isa::AvxVnni);
            }
            if avx512 && avx512vnni {
                // AMX detection (CPUID + XCR0 + arch_prctl) arrives with the AMX kernels:
                // `is_x86_feature_detected!("amx-int8")` is unstable on Rust 1.95.
                isas.push(Isa::Avx512Vnni);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Linux reports these through HWCAP/HWCAP2 (qemu-user sets them per `-cpu` model).
        macro_rules! flag {
            ($f:tt) => {{
                let on = std::arch::is_aarch64_feature_detected!($f);
                if on {
                    flags.push($f);
                }
                on
            }};
        }
        let (neon, dotprod, i8mm) = (flag!("neon"), flag!("dotprod"), flag!("i8mm"));
        // Each tier includes the ones below it (a capped table may pick any of their
        // kernels), so a tier is listed only when every feature below it is present too.
        if neon {
            isas.push(Isa::Neon);
            if dotprod {
                isas.push(Isa::Dotprod);
                if i8mm {
                    isas.push(Isa::I8mm);
                }
            }
        }
    }
    CpuFeatures { isas, flags }
}

/// The CPU's features, detected once per process.
pub fn cpu() -> &'static CpuFeatures {
    static CPU: OnceLock<CpuFeatures> = OnceLock::new();
    CPU.get_or_init(detect_uncached)
}

/// Parses `QKERN_MAX_ISA`. `Ok(None)` when unset or empty.
pub fn max_isa_from_env() -> Result<Option<Isa>> {
    match std::env::var("QKERN_MAX_ISA") {
        Ok(s) => parse_max_isa(&s),
        Err(std::env::VarError::NotPresent) => Ok(None),
        // Not silently ignored: a set but unreadable cap is as wrong as a misspelt one.
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(Error::InvalidParameter(format!("QKERN_MAX_ISA={v:?} is not valid UTF-8")))
        }
    }
}

/// Parses a `QKERN_MAX_ISA` value: an ISA name (case-insensitive, surrounding blanks
/// ignored), or `Ok(None)` when blank. Pure, so tests need not touch the environment.
pub fn parse_max_isa(value: &str) -> Result<Option<Isa>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    Isa::from_name(v).map(Some).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "QKERN_MAX_ISA={value:?} is not one of scalar, avx2, avxvnni, avx512vnni, amx, neon, dotprod, i8mm"
        ))
    })
}

/// The kernel chosen for each family at one ISA cap.
#[derive(Clone, Debug)]
pub struct KernelTable {
    /// The cap the table was built for (the best tier ≤ the request that this CPU has).
    pub isa: Isa,
    /// The int8 GEMM microkernel that takes any weights (reports name this one).
    pub gemm: GemmUkernel,
    /// Every GEMM microkernel the packer may pick, best first: a kernel with a
    /// precondition on the weights (`max_abs_stored_b`) is used only where it holds.
    pub gemm_candidates: Vec<GemmUkernel>,
    /// GEMV microkernels (`mr ≤ 4`), best first: a call of at most `mr` rows runs on the
    /// first whose packed format and offsets match the weights' kernel (so the same
    /// packed weights serve it); other calls, or weights no GEMV kernel reads, use the
    /// GEMM kernel the weights were packed for.
    pub gemv: Vec<GemmUkernel>,
    /// Every depthwise microkernel this CPU runs within the cap, best first; the first
    /// that handles a filter's tap count runs it ([`KernelTable::dwconv_for`]).
    pub dwconv_candidates: Vec<DwconvUkernel>,
    /// Every codebook microkernel (lookup and shift families) usable at this tier, best
    /// first; the packer picks the first of the requested family whose table bound holds.
    pub codebook_candidates: Vec<CodebookUkernel>,
}

/// Every codebook microkernel compiled into this build, least preferred first: the one
/// registration list the dispatch table, the tests and the benches read.
pub fn codebook_kernels() -> Vec<CodebookUkernel> {
    #[allow(unused_mut)]
    let mut v = qkern_kernels::generic::CODEBOOK_KERNELS.to_vec();
    #[cfg(target_arch = "x86_64")]
    v.extend(qkern_kernels::x86_64::codebook_kernels());
    #[cfg(target_arch = "aarch64")]
    v.extend(qkern_kernels::aarch64::codebook_kernels());
    v
}

/// Every codebook decoder (codes to int8 GEMM panels, for the codebook calls with many
/// rows) compiled into this build, least preferred first: the portable reference ones,
/// then the SIMD ones of each tier.
pub fn codebook_decoders() -> Vec<CodebookDecoder> {
    #[allow(unused_mut)]
    let mut v = qkern_kernels::pack::decode::GENERIC_DECODERS.to_vec();
    #[cfg(target_arch = "x86_64")]
    v.extend(qkern_kernels::x86_64::codebook_decoders());
    v
}

/// Every depthwise microkernel compiled into this build, in preference order (best last;
/// at one tier the specialised ones come after the any-size one).
pub fn dwconv_kernels() -> Vec<DwconvUkernel> {
    #[allow(unused_mut)]
    let mut v = qkern_kernels::generic::DWCONV_KERNELS.to_vec();
    #[cfg(target_arch = "x86_64")]
    v.extend(qkern_kernels::x86_64::dwconv_kernels());
    #[cfg(target_arch = "aarch64")]
    v.extend(qkern_kernels::aarch64::dwconv_kernels());
    v
}

/// Whether this CPU runs codebook kernel `k`: its tier and its `extra_features`.
pub fn codebook_runs_here(k: &CodebookUkernel) -> bool {
    cpu().has(k.isa) && k.extra_features.iter().all(|f| cpu().flags.contains(f))
}

/// Whether this CPU runs `k`: its tier and its `extra_features` (e.g. `avx512vbmi`).
pub fn dwconv_runs_here(k: &DwconvUkernel) -> bool {
    cpu().has(k.isa) && k.extra_features.iter().all(|f| cpu().flags.contains(f))
}

/// Every GEMM microkernel compiled into this build, in preference order (best last).
pub fn gemm_kernels() -> Vec<GemmUkernel> {
    #[allow(unused_mut)]
    let mut v = qkern_kernels::generic::GEMM_KERNELS.to_vec();
    #[cfg(target_arch = "x86_64")]
    v.extend(qkern_kernels::x86_64::gemm_kernels());
    #[cfg(target_arch = "aarch64")]
    v.extend(qkern_kernels::aarch64::gemm_kernels());
    v
}

/// Every GEMV microkernel compiled into this build, in preference order (best last).
pub fn gemv_kernels() -> Vec<GemmUkernel> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    v.extend(qkern_kernels::x86_64::gemv_kernels());
    v
}

/// Whether `gemv` can run weights packed for `packed`: the same packed format and the
/// same operand offsets (what the packer stored and the driver's sums assume), no
/// stricter precondition on the weights, and an entry for each signedness `packed` has.
pub fn gemv_reads(gemv: &GemmUkernel, packed: &GemmUkernel) -> bool {
    gemv.format == packed.format
        && gemv.a_offset == packed.a_offset
        && gemv.b_offset == packed.b_offset
        && gemv.max_abs_stored_b.is_none_or(|g| packed.max_abs_stored_b.is_some_and(|p| p <= g))
        && (0..2).all(|a| (0..2).all(|b| packed.run[a][b].is_none() || gemv.run[a][b].is_some()))
}

impl KernelTable {
    /// The best kernels at or below `cap` that this CPU runs. Errors if the CPU lacks `cap`.
    pub fn for_isa(cap: Isa) -> Result<KernelTable> {
        if !cpu().has(cap) {
            return Err(Error::IsaUnavailable(format!(
                "{} is not supported by this CPU (available: {})",
                cap.name(),
                cpu().isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
            )));
        }
        let gemm_candidates: Vec<GemmUkernel> =
            gemm_kernels().into_iter().rev().filter(|k| k.isa.within(cap) && cpu().has(k.isa)).collect();
        let gemm = gemm_candidates
            .iter()
            .copied()
            .find(|k| k.max_abs_stored_b.is_none())
            .ok_or_else(|| Error::Internal("no unconditional GEMM kernel registered".into()))?;
        let gemv = gemv_kernels().into_iter().rev().filter(|k| k.isa.within(cap) && cpu().has(k.isa)).collect();
        let dwconv_candidates: Vec<DwconvUkernel> =
            dwconv_kernels().into_iter().rev().filter(|k| k.isa.within(cap) && dwconv_runs_here(k)).collect();
        let codebook_candidates =
            codebook_kernels().into_iter().rev().filter(|k| k.isa.within(cap) && codebook_runs_here(k)).collect();
        Ok(KernelTable { isa: cap, gemm, gemm_candidates, gemv, dwconv_candidates, codebook_candidates })
    }

    /// The lookup-family codebook kernel for a table of `bits`-bit codes filling the i8
    /// range (±127, a typical learned table): what [`Self::codebook_kernel_for`] picks for
    /// it, so `qkern info` and the runtime report name the kernel dispatch runs.
    pub fn codebook_kernel(&self, bits: u32) -> Option<&CodebookUkernel> {
        self.codebook_kernel_for(qkern_kernels::CodebookFamily::Lut, bits, 127, false)
    }

    /// The codebook kernel of `family` for `bits`-bit codes whose integer grid lies within
    /// `±grid_max` (`wide`: beyond int8, so only an i16-table kernel runs it). The
    /// candidates come best first (each tier's registration list orders its own kernels;
    /// a higher tier's come before a lower one's, the portable ones last), so this is the
    /// first that runs the codes exactly: an i8 grid takes the tier's i8-table kernel
    /// where one holds its bound, else the tier's i16-table one, which beats any lower
    /// tier's.
    pub fn codebook_kernel_for(&self, family: qkern_kernels::CodebookFamily, bits: u32, grid_max: i32, wide: bool) -> Option<&CodebookUkernel> {
        self.codebook_candidates.iter().find(|k| {
            k.family == family && k.bits == bits && (k.table_i16 || !wide) && k.max_abs_table.is_none_or(|x| grid_max <= x)
        })
    }

    /// The bit-shift codebook kernel for levels of `terms` power-of-two terms (PoT 1,
    /// APoT 2) whose integer grid lies within `±grid_max`: the best candidate with exactly
    /// the terms needed (PoT: one byte per weight), else one with room for them.
    pub fn shift_kernel_for(&self, terms: u32, grid_max: i32) -> Option<&CodebookUkernel> {
        let fits = |k: &&CodebookUkernel| k.family == qkern_kernels::CodebookFamily::Shift && k.max_abs_table.is_none_or(|x| grid_max <= x);
        let cands = || self.codebook_candidates.iter().filter(fits);
        cands().find(|k| k.format.bits == 8 * terms).or_else(|| cands().find(|k| k.format.bits >= 8 * terms))
    }

    /// The GEMV kernel for a call of `m` rows on weights packed for `packed`, if any.
    pub fn gemv_for(&self, packed: &GemmUkernel, m: usize) -> Option<GemmUkernel> {
        self.gemv.iter().copied().find(|g| m <= g.mr && gemv_reads(g, packed))
    }

    /// `(family, kernel name)` for every family, for `qkern info` and tests. `gemv` is
    /// the kernel for calls of at most 4 rows on weights packed for `gemm` (that kernel
    /// itself where no GEMV kernel reads its format).
    pub fn chosen(&self) -> Vec<(&'static str, &'static str)> {
        let gemv = self.gemv_for(&self.gemm, 1).unwrap_or(self.gemm);
        let mut v = vec![("gemm", self.gemm.name), ("gemv", gemv.name)];
        // For a typical filter: i8 weights, zero point 0.
        for (family, taps) in [("dwconv", 7 * 7), ("dwconv3x3", 9), ("dwconv5x5", 25)] {
            if let Some(k) = self.dwconv_for(taps, -128, 127) {
                v.push((family, k.name));
            }
        }
        v
    }

    /// The depthwise kernel for a filter of `taps` taps whose centred weights
    /// `w − zw` lie in `[lo, hi]`: the best candidate that takes both (at the best tier,
    /// an i8-weight kernel before an i16 one, a specialised one before the any-size one).
    pub fn dwconv_for(&self, taps: usize, lo: i32, hi: i32) -> Option<DwconvUkernel> {
        self.dwconv_candidates.iter().copied().find(|k| k.handles_taps(taps) && k.takes_weights(lo, hi))
    }
}

/// The process-wide default table: the best tier, capped by `QKERN_MAX_ISA` when set.
/// An invalid `QKERN_MAX_ISA`, or one naming a tier this CPU lacks, is an error here
/// (and in [`Context::new`]); it never falls back silently.
pub fn default_table() -> Result<&'static KernelTable> {
    static TABLE: OnceLock<Result<KernelTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let cap = match max_isa_from_env()? {
                Some(req) => req,
                None => cpu().best(),
            };
            KernelTable::for_isa(cap)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Where qkern runs: the kernel table and the threads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    table: KernelTable,
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
    /// Whether convolutions may read their rows through the GEMM kernel's indirect entry
    /// (see `conv`); off only to compare with the gather path.
    indirect_conv: bool,
}

impl Context {
    /// The default: [`default_table`] and rayon's global pool.
    pub fn new() -> Result<Context> {
        Ok(Context { table: default_table()?.clone(), pool: None, threads: rayon::current_num_threads(), indirect_conv: true })
    }

    /// A context whose kernels are capped at `isa` (error if the CPU lacks it).
    pub fn for_isa(isa: Isa) -> Result<Context> {
        Ok(Context { table: KernelTable::for_isa(isa)?, pool: None, threads: rayon::current_num_threads(), indirect_conv: true })
    }

    /// The same kernels on a private pool of `threads` threads (1 = run on the caller).
    pub fn with_threads(mut self, threads: usize) -> Result<Context> {
        if threads == 0 {
            return Err(Error::InvalidParameter("threads must be at least 1".into()));
        }
        if threads == 1 {
            // Every path runs serially on one thread: no pool, no idle worker.
            self.pool = None;
            self.threads = 1;
            return Ok(self);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("qkern-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start {threads} threads: {e}")))?;
        self.pool = Some(Arc::new(pool));
        self.threads = threads;
        Ok(self)
    }

    /// The same context with one GEMM microkernel forced (by name, from this context's
    /// candidates): for tests and benchmarks that compare kernels.
    pub fn with_gemm_kernel(mut self, name: &str) -> Result<Context> {
        let k = self.table.gemm_candidates.iter().copied().find(|k| k.name == name).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "no GEMM kernel named {name:?} at {} (candidates: {})",
                self.table.isa.name(),
                self.table.gemm_candidates.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            ))
        })?;
        self.table.gemm_candidates = vec![k];
        if k.max_abs_stored_b.is_none() {
            self.table.gemm = k;
        }
        Ok(self)
    }

    /// The same context without GEMV kernels: every call runs the GEMM kernel its
    /// weights were packed for (to compare the two paths, in tests and benchmarks).
    pub fn without_gemv(mut self) -> Context {
        self.table.gemv.clear();
        self
    }

    /// The same context, but convolutions packed with it always gather their rows into a
    /// matrix (im2col by block) instead of using a kernel's indirect entry: to compare
    /// the two paths, in tests and benchmarks.
    pub fn without_indirect_conv(mut self) -> Context {
        self.indirect_conv = false;
        self
    }

    /// Whether convolutions packed with this context may use indirect GEMM kernels.
    pub fn indirect_conv(&self) -> bool {
        self.indirect_conv
    }

    /// The microkernel a call of `m` rows on `w` runs: the GEMV kernel
    /// ([`KernelTable::gemv_for`]) or the one `w` was packed for.
    pub fn gemm_kernel_for(&self, w: &crate::gemm::PackedWeights, m: usize) -> GemmUkernel {
        self.table.gemv_for(&w.kernel(), m).unwrap_or(w.kernel())
    }

    /// The kernel table.
    pub fn kernels(&self) -> &KernelTable {
        &self.table
    }

    /// Number of threads a call may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The same kernels, run on the caller's thread only: for work items that are
    /// already spread over the pool (conv row blocks) and must not fan out again.
    pub(crate) fn serial(&self) -> Context {
        Context { table: self.table.clone(), pool: None, threads: 1, indirect_conv: self.indirect_conv }
    }

    /// Runs `f` on this context's pool.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}
