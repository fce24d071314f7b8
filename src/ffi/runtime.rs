//! Where the C entry points run: one process-wide [`Context`] (the kernel table and the
//! threads) that every entry point takes, [`qk_set_num_threads`] to change its threads,
//! and [`qk_info`] to report what it runs.

use std::ffi::c_char;
use std::sync::{Arc, RwLock};

use super::util::{check_outputs_disjoint, opt_span, slice_mut, span};
use super::{Failure, guard, qk_status};
use crate::dispatch::{self, Context};
use crate::error::Error;

/// The most threads [`qk_set_num_threads`] accepts: far above any CPU qkern targets, low
/// enough that a garbage count is refused instead of trying to start that many threads.
pub const QK_MAX_THREADS: usize = 1024;

/// The context of the C entry points; `None` until first used or after
/// `qk_set_num_threads(0)`, meaning the default ([`Context::new`]: rayon's global pool).
static CONTEXT: RwLock<Option<Arc<Context>>> = RwLock::new(None);

/// The context every C entry point runs on. Built on first use; an invalid
/// `QKERN_MAX_ISA` is an error here, as in [`Context::new`].
pub(crate) fn context() -> Result<Arc<Context>, Failure> {
    // A poisoned lock only means a thread panicked while holding it; the value inside is
    // a complete `Option<Arc<Context>>` either way (assignments are not torn).
    if let Some(c) = CONTEXT.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(Arc::clone(c));
    }
    let mut slot = CONTEXT.write().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.as_ref() {
        return Ok(Arc::clone(c));
    }
    let c = Arc::new(Context::new()?);
    *slot = Some(Arc::clone(&c));
    Ok(c)
}

/// Sets the number of threads every later qkern call may use, process-wide.
///
/// * `0`: the default — rayon's global pool (one thread per CPU, or `RAYON_NUM_THREADS`).
/// * `1`: every call runs on the calling thread only.
/// * `n` (2 ≤ n ≤ `QK_MAX_THREADS`): a private pool of `n` worker threads, shared by all
///   callers; the previous private pool ends when no call is using it any more.
///
/// Calls already running keep the setting they started with. Handles created before
/// stay valid (the kernel choice does not depend on the thread count). Errors:
/// `n > QK_MAX_THREADS` (`QK_ERR_INVALID_PARAMETER`), an invalid `QKERN_MAX_ISA`, a pool
/// the system cannot start (`QK_ERR_INTERNAL`); the setting is unchanged then.
///
/// # Safety
///
/// Always safe to call, from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn qk_set_num_threads(threads: usize) -> qk_status {
    guard("qk_set_num_threads", || {
        if threads > QK_MAX_THREADS {
            return Err(Failure::invalid(format!("`threads` is {threads}; at most QK_MAX_THREADS = {QK_MAX_THREADS}")));
        }
        let base = Context::new()?;
        let c = if threads == 0 { base } else { base.with_threads(threads)? };
        *CONTEXT.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(c));
        Ok(())
    })
}

/// The number of threads a qkern call may use now (see [`qk_set_num_threads`]).
///
/// # Safety
///
/// `threads` must be NULL (an error) or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_get_num_threads(threads: *mut usize) -> qk_status {
    guard("qk_get_num_threads", || {
        span(threads.cast_const(), 1, "threads")?;
        let n = context()?.threads();
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { threads.write(n) };
        Ok(())
    })
}

/// The report [`qk_info`] writes: `key: value` lines.
pub(crate) fn info_text() -> String {
    use std::fmt::Write;
    let cpu = dispatch::cpu();
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "qkern: {}", crate::VERSION);
    let _ = writeln!(s, "arch: {}", std::env::consts::ARCH);
    let flags = if cpu.flags.is_empty() { "(none)".to_string() } else { cpu.flags.join(" ") };
    let _ = writeln!(s, "cpu features: {flags}");
    let isas: Vec<&str> = cpu.isas.iter().map(|i| i.name()).collect();
    let _ = writeln!(s, "isas available: {}", isas.join(" "));
    let cap = std::env::var("QKERN_MAX_ISA").unwrap_or_default();
    let _ = writeln!(s, "QKERN_MAX_ISA: {}", if cap.is_empty() { "(unset)" } else { cap.as_str() });
    let ctx = match context() {
        Ok(c) => c,
        Err(f) => {
            // Nothing runs until this is fixed; say so rather than fail the report.
            let _ = writeln!(s, "isa: (none: {})", f.message);
            return s;
        }
    };
    let t = ctx.kernels();
    let _ = writeln!(s, "isa: {}", t.isa.name());
    let _ = writeln!(s, "threads: {}", ctx.threads());
    for (family, kernel) in t.chosen() {
        let _ = writeln!(s, "{family}: {kernel}");
    }
    let family = crate::codebook::family_from_env().unwrap_or(crate::codebook::CodebookFamily::Lut);
    for bits in [4u32, 5] {
        // The kernel dispatch runs for a table filling the i8 range.
        let name = t.codebook_kernel_for(family, bits, 127, false).map_or("(none)", |k| k.name);
        let _ = writeln!(s, "codebook{bits}: {name}");
    }
    let _ = writeln!(s, "pwlq4_dequant: {}", crate::quant::pwlq::dequant_kernel_name(t.isa, 4, "f32"));
    let _ = writeln!(s, "pwlq_dequant: {}", crate::quant::pwlq::dequant_kernel_name(t.isa, 8, "f32"));
    // The one-row exact-mode PWLQ kernel (4-bit, one thread), else the int8 GEMM on [C | T | S].
    let fused = crate::quant::pwlq::fused_kernel_name_for(t.isa, 1).filter(|_| ctx.threads() == 1);
    let pwlq_gemm = fused.unwrap_or(t.gemm.name);
    let _ = writeln!(s, "pwlq4_gemm: {pwlq_gemm}");
    s
}

/// Writes a report of the CPU and the kernels qkern runs into `buf`, as a NUL-terminated
/// string of `key: value` lines: the version, the architecture, the CPU features
/// detected, the ISA tiers available, `QKERN_MAX_ISA`, the tier in use (`isa:`), the
/// thread count, and the kernel chosen for each family (`gemm`, `gemv`, `dwconv*`,
/// `codebook4`, `codebook5`, `pwlq4_dequant`, `pwlq_dequant`, `pwlq4_gemm`). The keys
/// are stable; the values depend on the machine.
///
/// * `buf`, `buf_size`: the buffer and its size in bytes. `buf` may be NULL with
///   `buf_size` 0 to ask for the size only.
/// * `needed`: receives the size the report needs, in bytes, including the NUL. It is
///   written on `QK_OK` and on `QK_ERR_BUFFER_TOO_SMALL` (then nothing is written to
///   `buf`: call again with a buffer of `*needed` bytes).
///
/// An invalid `QKERN_MAX_ISA` is reported in the text (`isa: (none: …)`), not as an error.
///
/// # Safety
///
/// `buf` must be NULL (with `buf_size` 0) or point to `buf_size` writable bytes; `needed`
/// must be NULL (an error) or point to a writable `size_t` outside `buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_info(buf: *mut c_char, buf_size: usize, needed: *mut usize) -> qk_status {
    guard("qk_info", || {
        let n_span = span(needed.cast_const(), 1, "needed")?;
        let b_span = opt_span(buf.cast_const().cast::<u8>(), buf_size, "buf")?;
        if let Some(b) = &b_span {
            check_outputs_disjoint(&[&n_span, b])?;
        }
        let text = info_text();
        // The report holds no NUL (names and numbers); replace one defensively so the C
        // string is never cut short.
        let mut bytes: Vec<u8> = text.into_bytes().into_iter().map(|b| if b == 0 { b'?' } else { b }).collect();
        bytes.push(0);
        // SAFETY: checked non-null and aligned, disjoint from `buf`; the caller guarantees
        // it is writable.
        unsafe { needed.write(bytes.len()) };
        let Some(b) = b_span.filter(|_| buf_size >= bytes.len()) else {
            if buf.is_null() {
                return Ok(()); // a size query
            }
            return Err(Error::BufferTooSmall { what: "buf", needed: bytes.len(), got: buf_size }.into());
        };
        // SAFETY: `buf` was checked (non-null, size) with this count and disjoint from
        // `needed`; the caller guarantees `buf_size` writable bytes.
        let out = unsafe { slice_mut(buf.cast::<u8>(), buf_size, &b) };
        out[..bytes.len()].copy_from_slice(&bytes);
        Ok(())
    })
}
