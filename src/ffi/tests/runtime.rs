//! `qk_set_num_threads`, `qk_get_num_threads` and `qk_info`.

use std::ffi::CStr;
use std::ptr::null_mut;

use super::super::runtime::{context, info_text};
use super::super::*;
use super::{THREADS, expect_err, expect_ok};
use qk_status::*;

fn threads() -> usize {
    let mut n = usize::MAX;
    // SAFETY: a writable out-pointer.
    expect_ok(unsafe { qk_get_num_threads(&mut n) });
    n
}

#[test]
fn set_and_get_num_threads() {
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    expect_ok(qk_set_num_threads(0));
    assert_eq!(threads(), rayon::current_num_threads());
    for n in [1usize, 3, 2] {
        expect_ok(qk_set_num_threads(n));
        assert_eq!(threads(), n);
        assert_eq!(context().unwrap().threads(), n);
    }
    // Refused, and the setting is unchanged.
    for n in [QK_MAX_THREADS + 1, usize::MAX] {
        expect_err(qk_set_num_threads(n), QK_ERR_INVALID_PARAMETER, "qk_set_num_threads", "QK_MAX_THREADS");
        assert_eq!(threads(), 2);
    }
    // SAFETY: NULL is the error under test.
    expect_err(unsafe { qk_get_num_threads(null_mut()) }, QK_ERR_NULL_POINTER, "qk_get_num_threads", "`threads`");
    // The report follows the setting.
    assert!(info_text().contains("\nthreads: 2\n"), "{}", info_text());
    expect_ok(qk_set_num_threads(1));
    assert!(info_text().contains("\nthreads: 1\n"));
    expect_ok(qk_set_num_threads(0));
    assert_eq!(threads(), rayon::current_num_threads());
}

#[test]
fn info_reports_the_kernels_in_use() {
    const F: &str = "qk_info";
    // The report names the thread count and the kernels for it: hold it still.
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let mut needed = 0usize;
    // SAFETY: a size query: NULL buffer of size 0, a writable `needed`.
    expect_ok(unsafe { qk_info(null_mut(), 0, &mut needed) });
    assert!(needed > 1);
    // One byte short: refused, `needed` written, the buffer untouched.
    let mut buf = vec![0x55u8; needed + 8];
    let mut got = 0usize;
    // SAFETY: a writable buffer of the size given.
    let st = unsafe { qk_info(buf.as_mut_ptr().cast(), needed - 1, &mut got) };
    expect_err(st, QK_ERR_BUFFER_TOO_SMALL, F, "buf");
    assert_eq!(got, needed);
    assert!(buf.iter().all(|&b| b == 0x55));
    // A non-NULL buffer of size 0 is too small too.
    // SAFETY: as above.
    let st = unsafe { qk_info(buf.as_mut_ptr().cast(), 0, &mut got) };
    expect_err(st, QK_ERR_BUFFER_TOO_SMALL, F, "buf");
    // Exactly the size, and larger.
    for size in [needed, needed + 8] {
        buf.fill(0x55);
        // SAFETY: as above.
        expect_ok(unsafe { qk_info(buf.as_mut_ptr().cast(), size, &mut got) });
        assert_eq!(got, needed);
        let s = CStr::from_bytes_until_nul(&buf).unwrap().to_str().unwrap();
        assert_eq!(s.len() + 1, needed);
        assert!(buf[needed..].iter().all(|&b| b == 0x55), "nothing past the NUL");
        let ctx = context().unwrap();
        let t = ctx.kernels();
        let line = |key: &str| s.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap_or_else(|| panic!("no {key}: in {s}"));
        assert_eq!(line("qkern"), crate::VERSION);
        assert_eq!(line("isa"), t.isa.name());
        assert_eq!(line("gemm"), t.gemm.name);
        for (family, kernel) in t.chosen() {
            assert_eq!(line(family), kernel);
        }
        let isas: Vec<&str> = crate::dispatch::cpu().isas.iter().map(|i| i.name()).collect();
        assert_eq!(line("isas available"), isas.join(" "));
        for key in ["cpu features", "arch", "QKERN_MAX_ISA", "threads", "codebook4", "codebook5", "pwlq4_dequant", "pwlq_dequant", "pwlq4_gemm"] {
            line(key);
        }
        if let Some(k) = t.codebook_kernel(4).filter(|_| crate::codebook::family_from_env().ok() == Some(crate::codebook::CodebookFamily::Lut)) {
            assert_eq!(line("codebook4"), k.name);
        }
    }
    // Argument errors.
    // SAFETY: NULL / overlapping pointers are the errors under test, refused before any write.
    unsafe {
        expect_err(qk_info(buf.as_mut_ptr().cast(), buf.len(), null_mut()), QK_ERR_NULL_POINTER, F, "`needed`");
        expect_err(qk_info(null_mut(), 10, &mut got), QK_ERR_NULL_POINTER, F, "`buf`");
        let mut words = [0usize; 64];
        let p = words.as_mut_ptr();
        expect_err(qk_info(p.cast(), 64 * 8, p.wrapping_add(3)), QK_ERR_INVALID_PARAMETER, F, "overlaps");
        expect_err(qk_info(buf.as_mut_ptr().cast(), usize::MAX, &mut got), QK_ERR_OVERFLOW, F, "address space");
    }
}
