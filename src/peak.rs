//! Measured instruction-path peaks of this host: each probe runs a long loop of
//! independent multiply-adds of one path and reports int8 GOPS on one core, so
//! benchmarks quote a fraction of what this CPU really does (DESIGN.md §7's figures
//! were measured on another host class).
//!
//! Memory-bound kernels (GEMV) are judged by bytes per second instead: [`read_bandwidth`]
//! streams a buffer of a given size with wide loads and reports the single-core read
//! bandwidth at that size (L2, L3 or DRAM, by where the buffer falls).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// A buffer for [`read_bandwidth`]: 64-byte aligned (no load splits a line) and filled
/// with nonzero bytes, so every page is really mapped (a fresh zeroed allocation may
/// share the kernel's zero page and read at a speed no real data has).
pub struct StreamBuffer {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl StreamBuffer {
    /// A buffer of `bytes` bytes, backed by huge pages where the OS grants them, as
    /// packed weights are (`PackedWeights` advises them so): the probe and a GEMV then
    /// stream the same kind of memory.
    pub fn new(bytes: usize) -> StreamBuffer {
        // Zeroed by the allocator, untouched until the fill below (after the advice).
        let mut raw = vec![0u8; bytes + 64];
        let start = raw.as_ptr().align_offset(64).min(64);
        crate::gemm::advise_huge_pages(&mut raw[start..start + bytes]);
        for (i, line) in raw[start..start + bytes].chunks_mut(64).enumerate() {
            line.fill((i as u8) | 1);
        }
        StreamBuffer { raw, start, len: bytes }
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// The load width the read probe uses on this CPU: `"zmm"` (AVX-512), `"ymm"` (AVX2) or
/// `"portable"` (a plain Rust loop the compiler vectorises).
pub fn stream_loads() -> &'static str {
    if cpu().flags.contains(&"avx512f") {
        "zmm"
    } else if cpu().has(Isa::Avx2) {
        "ymm"
    } else {
        "portable"
    }
}

/// Streams `data` once with the widest loads this CPU has ([`stream_loads`]) and returns
/// a checksum of it (x86: the wrapping sum of its little-endian u32 words).
#[allow(unsafe_code)] // the probe is a kernel; the CPU is checked first
pub fn stream_read(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use qkern_kernels::x86_64::bandwidth;
        match stream_loads() {
            // SAFETY: AVX-512 F was detected.
            "zmm" => return unsafe { bandwidth::read_stream_zmm(data) },
            // SAFETY: AVX2 was detected.
            "ymm" => return unsafe { bandwidth::read_stream_ymm(data) },
            _ => {}
        }
    }
    // Portable: 8 independent u32 lanes per 32 bytes, which compilers vectorise.
    let mut acc = [0u32; 8];
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (a, w) in acc.iter_mut().zip(c.chunks_exact(4)) {
            *a = a.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    let mut s = acc.iter().fold(0u32, |s, &a| s.wrapping_add(a));
    for w in chunks.remainder().chunks(4) {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        s = s.wrapping_add(u32::from_le_bytes(b));
    }
    s
}

/// A read-bandwidth measurement ([`read_bandwidth`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Bandwidth {
    /// Bytes streamed per repetition.
    pub bytes: usize,
    /// GB/s (10^9 bytes per second) at the median repetition time.
    pub gbps_median: f64,
    /// GB/s of the fastest repetition.
    pub gbps_best: f64,
    /// Load width used ([`stream_loads`]).
    pub loads: &'static str,
}

/// Measures the single-core read bandwidth for a buffer of `bytes`: the buffer is
/// streamed once per repetition, repeatedly, for at least `min_time` (the timing of
/// [`crate::bench::time`]), so it lives in whatever cache level (or DRAM) that size
/// falls to — the conditions a GEMV streaming the same number of weight bytes sees.
/// `bytes = 0` gives `None`.
pub fn read_bandwidth(bytes: usize, min_time: Duration) -> Option<Bandwidth> {
    if bytes == 0 {
        return None;
    }
    let buf = StreamBuffer::new(bytes);
    read_bandwidth_of(&buf, min_time)
}

/// [`read_bandwidth`] on a caller's buffer (so repeated measurements reuse its pages).
pub fn read_bandwidth_of(buf: &StreamBuffer, min_time: Duration) -> Option<Bandwidth> {
    let data = buf.bytes();
    if data.is_empty() {
        return None;
    }
    let mut sink = 0u32;
    let t = crate::bench::time(min_time, || {
        sink = sink.wrapping_add(stream_read(std::hint::black_box(data)));
        Ok::<(), ()>(())
    })
    .ok()?;
    std::hint::black_box(sink);
    let gbps = |s: f64| data.len() as f64 / s / 1e9;
    Some(Bandwidth { bytes: data.len(), gbps_median: gbps(t.median), gbps_best: gbps(t.min), loads: stream_loads() })
}

/// `(L2, L3)` sizes in bytes of CPU 0, from Linux's sysfs (`None` where unknown).
pub fn cache_sizes() -> (Option<usize>, Option<usize>) {
    let mut l2 = None;
    let mut l3 = None;
    for idx in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{idx}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok().map(|s| s.trim().to_string());
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
        if kind == "Instruction" {
            continue;
        }
        let bytes = match size.strip_suffix('K') {
            Some(kb) => kb.parse::<usize>().ok().map(|v| v << 10),
            None => match size.strip_suffix('M') {
                Some(mb) => mb.parse::<usize>().ok().map(|v| v << 20),
                None => size.parse::<usize>().ok(),
            },
        };
        match level.as_str() {
            "2" => l2 = bytes,
            "3" => l3 = bytes,
            _ => {}
        }
    }
    (l2, l3)
}

/// The three buffer sizes `qkern info` probes: half the L2 (fits in L2), half the L3
/// (fits in L3, not in L2) and 8× the L3, at least 256 MiB (DRAM). Defaults of 1 MiB
/// L2 and 32 MiB L3 where sysfs does not say.
pub fn probe_sizes() -> [(&'static str, usize); 3] {
    let (l2, l3) = cache_sizes();
    let (l2, l3) = (l2.unwrap_or(1 << 20), l3.unwrap_or(32 << 20));
    [("L2", l2 / 2), ("L3", l3 / 2), ("DRAM", (8 * l3).max(256 << 20))]
}
