//! What a conv call allocates: the indirection buffer and the gather workspaces only on
//! the first call; later calls on the same shape allocate only the GEMM driver's small
//! per-call tables (per-column offsets and scales, the task list), never buffers that
//! grow with the image. Counted by a global allocator, in its own test binary so other
//! tests' threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput};
use qkern::{Context, Requantize, WeightQuant};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        COUNT.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size(), Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        COUNT.fetch_add(1, Relaxed);
        BYTES.fetch_add(n, Relaxed);
        LARGEST.fetch_max(n, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (allocations, bytes, largest single allocation) while `f` runs, on any thread (the
/// pool's included; rayon's job queue adds a few small ones now and then).
fn counted(f: impl FnOnce()) -> (usize, usize, usize) {
    let (c0, b0) = (COUNT.load(Relaxed), BYTES.load(Relaxed));
    LARGEST.store(0, Relaxed);
    f();
    (COUNT.load(Relaxed) - c0, BYTES.load(Relaxed) - b0, LARGEST.load(Relaxed))
}

/// One test function: the counter is global, so a second test running in parallel would
/// be counted too.
#[test]
fn allocations_per_call() {
    second_call_allocates_only_driver_tables();
    pointwise_call_allocates_no_image_sized_buffer();
}

fn second_call_allocates_only_driver_tables() {
    let ctx = Context::new().unwrap().with_threads(1).unwrap();
    let g = Conv2dGeometry::new(1, 56, 56, 64, 64, 3, 3).padding(1, 1, 1, 1);
    let w = vec![1i8; g.weight_len()];
    let f = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(0, 0.01)).unwrap();
    let x = vec![7u8; g.input_len()];
    let mut y = vec![0u8; g.output_len()];
    let rq = Requantize::new(0.5, 128u8);
    let run = |y: &mut [u8]| ctx.conv2d_requantize(&f, ConvInput::new(&x, 128, 0.02), &rq, y).unwrap();
    let (c1, b1, l1) = counted(|| run(&mut y));
    let (c2, b2, l2) = counted(|| run(&mut y));
    let (c3, b3, l3) = counted(|| run(&mut y));
    eprintln!(
        "conv 56x56x64 3x3: first call {c1} allocations / {b1} bytes (largest {l1}); second {c2} / {b2} ({l2}); third {c3} / {b3} ({l3})"
    );
    // The indirection buffer alone is 56·56·9 offsets.
    assert!(l1 >= 56 * 56 * 9 * size_of::<usize>());
    // Later calls: no indirection buffer, no workspace; only O(N) driver tables per block.
    for (c, b, l) in [(c2, b2, l2), (c3, b3, l3)] {
        assert!(l <= 4096 && b < 64 * 1024, "a later call allocated {b} bytes in {c} allocations, the largest {l}");
    }
}

fn pointwise_call_allocates_no_image_sized_buffer() {
    let ctx = Context::new().unwrap().with_threads(1).unwrap();
    let g = Conv2dGeometry::new(1, 56, 56, 256, 64, 1, 1);
    let w = vec![1i8; g.weight_len()];
    let f = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(0, 0.01)).unwrap();
    let x = vec![7u8; g.input_len()];
    let mut y = vec![0i32; g.output_len()];
    let (c, b, l) = counted(|| ctx.conv2d_i32(&f, ConvInput::new(&x, 128, 0.02), None, &mut y).unwrap());
    eprintln!("conv 1x1 56x56x256: {c} allocations / {b} bytes per call (largest {l})");
    assert!(l <= 4096, "{b} bytes, the largest {l}");
}
