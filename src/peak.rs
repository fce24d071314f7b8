//! Measured instruction-path peaks of this host: each probe runs a long loop of
//! independent multiply-adds of one path and reports int8 GOPS on one core, so
//! benchmarks quote a fraction of what this CPU really does (DESIGN.md §7's figures
//! were measured on another host class).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use qkern_kernels::{GemmUkernel, Isa};

use crate::dispatch::cpu;

/// The instruction path a kernel's inner loop runs on (`None` for the portable kernels).
/// AVX2 has two: a kernel whose name contains `maddubs` uses the saturating
/// `vpmaddubsw` path, any other AVX2 kernel the exact `vpmaddwd` one; every other tier
/// has one path, named after the tier — except the AVX-512 VNNI tier's ymm kernels (the
/// AVX-VNNI kernels' EVEX twins, named `…_ymm`), whose path is `avx512vnni-ymm`.
pub fn path_of(kernel: &GemmUkernel) -> Option<&'static str> {
    match kernel.isa {
        Isa::Scalar => None,
        Isa::Avx2 if kernel.name.contains("maddubs") => Some("avx2-maddubs"),
        Isa::Avx512Vnni if kernel.name.ends_with("_ymm") => Some("avx512vnni-ymm"),
        Isa::Avx2 => Some("avx2-exact"),
        other => Some(other.name()),
    }
}

/// The probe of a path: MACs done for `iters` iterations. Only for paths this CPU runs.
#[allow(unsafe_code)] // the probes are kernels; each call checks the CPU first
fn probe(path: &str) -> Option<fn(u64) -> u64> {
    #[cfg(target_arch = "x86_64")]
    {
        use qkern_kernels::x86_64::{avx2, avx512vnni, avxvnni};
        match path {
            // SAFETY (all five): the probe needs the tier's ISA, checked just before.
            "avx2-exact" if cpu().has(Isa::Avx2) => Some(|n| unsafe { avx2::peak::exact_path(n) }),
            "avx2-maddubs" if cpu().has(Isa::Avx2) => Some(|n| unsafe { avx2::peak::maddubs_path(n) }),
            "avx512vnni" if cpu().has(Isa::Avx512Vnni) => Some(|n| unsafe { avx512vnni::peak::vpdpbusd_zmm_peak(n) }),
            "avx512vnni-ymm" if cpu().has(Isa::Avx512Vnni) => Some(|n| unsafe { avx512vnni::peak::vpdpbusd_ymm_peak(n) }),
            "avxvnni" if cpu().has(Isa::AvxVnni) => Some(|n| unsafe { avxvnni::peak::vpdpbusd_ymm_vex_peak(n) }),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (path, cpu());
        None
    }
}

/// Measured GOPS of `path` on one core (best of 5 runs of ~10 ms), cached per process.
/// `None` for a path without a probe or that this CPU lacks.
pub fn measured_gops(path: &str) -> Option<f64> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<f64>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        return *v;
    }
    let v = probe(path).map(|f| {
        f(1000); // warm up (clock ramps up under wide vector load)
        let mut iters = 1u64 << 16;
        let mut best = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            let macs = f(iters);
            let s = t.elapsed().as_secs_f64();
            best = best.max(2.0 * macs as f64 / s / 1e9);
            if s < 0.01 {
                iters *= 2;
            }
        }
        best
    });
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_string(), v);
    v
}
