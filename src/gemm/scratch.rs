//! Per-thread spare buffers for the tables a GEMM call builds (per-column offsets and
//! scales, row sums, the task list, the packed-A workspace), so that repeated calls — a
//! conv's row blocks, an engine's next inference — allocate nothing once warm.
//!
//! A [`Scratch`] takes a buffer from its thread's pool (or starts empty) and gives it
//! back, cleared, when dropped. Nested calls on one thread simply take another buffer.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

use qkern_kernels::QuantizedMultiplier;

/// The most spare buffers of one type a thread keeps.
const POOL_CAP: usize = 8;

/// An element type with a per-thread pool of spare buffers.
pub(crate) trait Pooled: Sized + 'static {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
                thread_local!(static POOL: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) });
                &POOL
            }
        }
    )*};
}
pooled!(
    u8,
    i16,
    i32,
    f32,
    QuantizedMultiplier,
    (usize, usize, usize, usize)
);

/// An empty `Vec<T>` borrowed from this thread's pool; returned to it on drop.
pub(crate) struct Scratch<T: Pooled>(Vec<T>);

impl<T: Pooled> Scratch<T> {
    pub(crate) fn new() -> Self {
        // `try_with`: a thread being torn down has no pool left; then allocate.
        let v = T::pool()
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        Scratch(v)
    }

    /// An empty buffer that takes nothing from the pool, for a table this call does not
    /// need: popping a spare it never fills would leave the next table of the call to
    /// allocate (a one-GEMM conv call would then allocate on its second run).
    pub(crate) fn unused() -> Self {
        Scratch(Vec::new())
    }

    /// A scratch buffer holding `it`'s items.
    pub(crate) fn collect(it: impl IntoIterator<Item = T>) -> Self {
        let mut s = Self::new();
        s.0.extend(it);
        s
    }
}

impl<T: Pooled> Default for Scratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Pooled> Drop for Scratch<T> {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        v.clear();
        let _ = T::pool().try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut()
                && p.len() < POOL_CAP
            {
                p.push(v);
            }
        });
    }
}

impl<T: Pooled> Deref for Scratch<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Pooled> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}
