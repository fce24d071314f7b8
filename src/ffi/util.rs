//! Turning C pointers and counts into slices, only after validating them.
//!
//! The order matters: every buffer of a call is first checked as a raw [`Span`]
//! (non-null, aligned, byte size within `isize::MAX` and the address space), then the
//! output spans are checked disjoint from every other span, and only then are slices
//! made. Building a `&mut [T]` that overlaps a `&[T]` would be undefined behaviour
//! even if never read, so overlap must be refused before either slice exists.

use std::mem::{align_of, size_of};

use super::Failure;

/// A checked buffer: where it is and how many bytes it spans.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) what: &'static str,
    addr: usize,
    bytes: usize,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        self.bytes != 0 && other.bytes != 0 && self.addr < other.addr + other.bytes && other.addr < self.addr + self.bytes
    }
}

/// Checks a required buffer of `len` elements of `T` at `ptr`.
pub(crate) fn span<T>(ptr: *const T, len: usize, what: &'static str) -> Result<Span, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    layout::<T>(ptr, len, what)
}

/// Checks an optional buffer: NULL is allowed with `len == 0` (absent); a non-null
/// pointer with `len == 0` is also treated as absent.
pub(crate) fn opt_span<T>(ptr: *const T, len: usize, what: &'static str) -> Result<Option<Span>, Failure> {
    match (ptr.is_null(), len) {
        (true, 0) => Ok(None),
        (true, _) => Err(Failure::null(what)),
        (false, 0) => Ok(None),
        (false, _) => layout::<T>(ptr, len, what).map(Some),
    }
}

fn layout<T>(ptr: *const T, len: usize, what: &'static str) -> Result<Span, Failure> {
    let addr = ptr as usize;
    if !addr.is_multiple_of(align_of::<T>()) {
        return Err(Failure::invalid(format!(
            "`{what}` ({addr:#x}) is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    let bytes = len
        .checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize && addr.checked_add(b).is_some())
        .ok_or_else(|| Failure::overflow(format!("`{what}`: {len} elements of {} bytes exceed the address space", size_of::<T>())))?;
    Ok(Span { what, addr, bytes })
}

/// Refuses an output span that overlaps any other span of the call.
pub(crate) fn check_disjoint(out: &Span, others: &[&Span]) -> Result<(), Failure> {
    for o in others {
        if out.overlaps(o) {
            return Err(Failure::invalid(format!("output `{}` overlaps `{}`", out.what, o.what)));
        }
    }
    Ok(())
}

/// Refuses any two output spans of a call that overlap.
pub(crate) fn check_outputs_disjoint(outs: &[&Span]) -> Result<(), Failure> {
    for (i, a) in outs.iter().enumerate() {
        check_disjoint(a, &outs[i + 1..])?;
    }
    Ok(())
}

/// The slice behind a checked span.
///
/// # Safety
///
/// `ptr` and `len` must be those `s` was checked with, `ptr` must point to `len`
/// initialized elements readable for `'a`, and nothing may write them during `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize, _s: &Span) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the span check proved `ptr` non-null and aligned and `len·size_of::<T>()`
    // within `isize::MAX` without wrapping the address space; the caller guarantees the
    // memory is valid, initialized and not written during 'a.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// The optional slice behind a checked optional span.
///
/// # Safety
///
/// As [`slice`], when `s` is `Some`.
pub(crate) unsafe fn opt_slice<'a, T>(ptr: *const T, len: usize, s: &Option<Span>) -> Option<&'a [T]> {
    // SAFETY: forwarded to the caller's guarantee.
    s.as_ref().map(|s| unsafe { slice(ptr, len, s) })
}

/// The mutable slice behind a checked span.
///
/// # Safety
///
/// `ptr` and `len` must be those `s` was checked with, `ptr` must point to `len`
/// elements of a plain integer or float type, readable and writable for `'a`, `s` must
/// have been checked disjoint from every other buffer of the call, and nothing else may
/// access the memory during `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize, _s: &Span) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as in `slice`, plus exclusivity: the caller checked `s` disjoint from the
    // call's other buffers and guarantees no other access during 'a.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// Refuses a `rows × cols` matrix with row stride `ld` whose extent
/// `(rows − 1)·ld + cols` overflows `size_t`, as `QK_ERR_OVERFLOW` (the library checks
/// the rest: stride ≥ cols, buffer long enough).
pub(crate) fn check_extent(what: &str, rows: usize, cols: usize, ld: usize) -> Result<(), Failure> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(cols))
        .map(|_| ())
        .ok_or_else(|| Failure::overflow(format!("`{what}`: {rows} rows of stride {ld} (+ {cols} columns) overflow size_t")))
}

/// The handle behind `ptr`, an argument named `what` that must come from `origin` (the
/// function that creates such handles): NULL and misaligned pointers are errors.
///
/// Every extern function taking a handle requires, in its `# Safety`, a live handle
/// from `origin` that no other thread frees meanwhile; handles are never mutated through
/// shared references (caches inside sit behind locks).
pub(crate) fn handle_ref<'a, T>(ptr: *const T, what: &'static str, origin: &str) -> Result<&'a T, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!("`{what}` is misaligned: not a handle from {origin}")));
    }
    // SAFETY: non-null and aligned; live and unaliased mutably per the extern function's
    // documented contract (above).
    Ok(unsafe { &*ptr })
}

/// Frees a handle made by `Box::into_raw`; NULL does nothing.
///
/// The extern `*_free` functions require (in their `# Safety`) NULL or a live handle
/// from their creating function, freed once, used by no other thread.
pub(crate) fn free_handle<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: per the extern function's contract, `ptr` came from `Box::into_raw`
        // and is freed exactly once.
        drop(unsafe { Box::from_raw(ptr) });
    }
}
