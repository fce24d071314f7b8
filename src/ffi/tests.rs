//! Unit tests of the C-boundary machinery that the extern functions cannot reach from
//! outside: the panic guard and the error-message store.

use std::ffi::CStr;

use super::*;

fn last_error() -> String {
    // SAFETY: `qk_last_error` never returns NULL and the string stays valid until the
    // next qkern call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(qk_last_error()) }.to_str().unwrap().to_owned()
}

#[test]
fn a_panic_becomes_qk_err_panic_with_its_message() {
    let st = guard("qk_test", || panic!("boom {}", 42));
    assert_eq!(st, qk_status::QK_ERR_PANIC);
    let msg = last_error();
    assert!(msg.starts_with("qk_test: panic"), "{msg}");
    assert!(msg.contains("boom 42"), "{msg}");

    // A literal payload (&str) as well as a formatted one (String).
    assert_eq!(guard("qk_test", || panic!("literal")), qk_status::QK_ERR_PANIC);
    assert!(last_error().contains("literal"));

    // A non-string payload still gives a status and a message.
    assert_eq!(guard("qk_test", || std::panic::panic_any(7u32)), qk_status::QK_ERR_PANIC);
    assert!(last_error().contains("non-string"));
}

#[test]
fn success_clears_and_failure_sets_the_message() {
    assert_eq!(guard("qk_test", || Err(Failure::null("x"))), qk_status::QK_ERR_NULL_POINTER);
    assert_eq!(last_error(), "qk_test: null pointer: `x` must not be NULL");
    assert_eq!(guard("qk_test", || Ok(())), qk_status::QK_OK);
    assert_eq!(last_error(), "");
}

#[test]
fn nul_in_a_message_does_not_lose_it() {
    assert_eq!(guard("qk_test", || Err(Failure::invalid("a\0b"))), qk_status::QK_ERR_INVALID_PARAMETER);
    assert_eq!(last_error(), "qk_test: invalid parameter: a?b");
}

#[test]
fn every_error_variant_has_its_status() {
    let cases = [
        (Error::ShapeMismatch(String::new()), qk_status::QK_ERR_SHAPE),
        (Error::BufferTooSmall { what: "x", needed: 2, got: 1 }, qk_status::QK_ERR_BUFFER_TOO_SMALL),
        (Error::InvalidStride { what: "x", stride: 1, min: 2 }, qk_status::QK_ERR_INVALID_STRIDE),
        (Error::ZeroPointOutOfRange { what: "x", value: 300, min: 0, max: 255 }, qk_status::QK_ERR_ZERO_POINT),
        (Error::InvalidScale { what: "x", value: 0.0 }, qk_status::QK_ERR_SCALE),
        (Error::InvalidBits { bits: 9, min: 1, max: 8 }, qk_status::QK_ERR_BITS),
        (Error::InvalidParameter(String::new()), qk_status::QK_ERR_INVALID_PARAMETER),
        (Error::Unsupported(String::new()), qk_status::QK_ERR_UNSUPPORTED),
        (Error::Overflow(String::new()), qk_status::QK_ERR_OVERFLOW),
        (Error::IsaUnavailable(String::new()), qk_status::QK_ERR_ISA_UNAVAILABLE),
        (Error::Internal(String::new()), qk_status::QK_ERR_INTERNAL),
    ];
    for (e, st) in cases {
        let msg = e.to_string();
        assert_eq!(guard("qk_test", move || Err(e.into())), st);
        assert_eq!(last_error(), format!("qk_test: {msg}"));
    }
}

/// Asserts a status and that the message names the function and contains `needle`.
#[track_caller]
pub(super) fn expect_err(st: qk_status, want: qk_status, func: &str, needle: &str) {
    let msg = last_error();
    assert_eq!(st, want, "status (message: {msg})");
    assert!(msg.starts_with(&format!("{func}: ")), "message should name {func}: {msg}");
    assert!(msg.contains(needle), "message should contain {needle:?}: {msg}");
}

/// Asserts success and that the message was cleared.
#[track_caller]
pub(super) fn expect_ok(st: qk_status) {
    let msg = last_error();
    assert_eq!(st, qk_status::QK_OK, "{msg}");
    assert_eq!(msg, "", "a success clears the message");
}

/// Serialises the tests that change the process-wide thread count (the others do not
/// depend on it: every path is exact).
pub(super) static THREADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Deterministic pseudo-random values (SplitMix64), so a failure reproduces.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Roughly Gaussian (sum of four uniforms), scaled.
    pub(super) fn gauss(&mut self, scale: f32) -> f32 {
        let s: f64 = (0..4).map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5).sum();
        (s * 1.7) as f32 * scale
    }
    pub(super) fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

mod codebook;
mod pwlq;
mod runtime;
