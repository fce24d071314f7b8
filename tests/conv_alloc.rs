//! What a conv call allocates: the indirection buffer, the gather workspaces and the
//! GEMM driver's per-call tables on the first call; nothing at all on later calls on
//! the same shape (issue 4: the setup is amortised), on every path and output stage.
//! Counted by a global allocator, on the calling thread, in its own test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use qkern::conv::{Conv2d, Conv2dGeometry, ConvInput};
use qkern::{Context, Requantize, WeightQuant};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted: only the caller's, since a
    /// one-thread context runs everything on the caller, while rayon's global workers
    /// (started by `Context::new`) may still be allocating their start-up state.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        COUNT.fetch_add(1, Relaxed);
        BYTES.fetch_add(size, Relaxed);
        LARGEST.fetch_max(size, Relaxed);
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (allocations, bytes, largest single allocation) made by this thread while `f` runs.
fn counted(f: impl FnOnce()) -> (usize, usize, usize) {
    let (c0, b0) = (COUNT.load(Relaxed), BYTES.load(Relaxed));
    LARGEST.store(0, Relaxed);
    COUNTED.set(true);
    f();
    COUNTED.set(false);
    (COUNT.load(Relaxed) - c0, BYTES.load(Relaxed) - b0, LARGEST.load(Relaxed))
}

/// One test function, on one thread (`with_threads(1)` runs on the caller).
#[test]
fn allocations_per_call() {
    let ctx = Context::new().unwrap().with_threads(1).unwrap();
    for (name, g) in [
        ("3x3 56x56x64 pad 1 (implicit GEMM)", Conv2dGeometry::new(1, 56, 56, 64, 64, 3, 3).padding(1, 1, 1, 1)),
        ("3x3 s2 28x28x32 grp 4 (implicit GEMM)", Conv2dGeometry::new(1, 28, 28, 32, 64, 3, 3).padding(1, 1, 1, 1).stride(2, 2).groups(4)),
        ("3x3 s2 56x56x64 zw 3 (indirect, row sums)", Conv2dGeometry::new(1, 56, 56, 64, 32, 3, 3).padding(1, 1, 1, 1).stride(2, 2)),
        ("1x1 s2 28x28x64 zw 3 (gather, row sums)", Conv2dGeometry::new(1, 28, 28, 64, 32, 1, 1).stride(2, 2)),
        ("1x1 56x56x256 (pointwise)", Conv2dGeometry::new(1, 56, 56, 256, 64, 1, 1)),
        ("dw 3x3 56x56x144 (depthwise)", Conv2dGeometry::new(1, 56, 56, 144, 144, 3, 3).padding(1, 1, 1, 1).groups(144)),
    ] {
        let w: Vec<i8> = (0..g.weight_len()).map(|i| (i % 7) as i8 - 3).collect();
        // A nonzero weight zero point makes the driver build row sums.
        let zw = if name.contains("zw 3") { 3 } else { 0 };
        let f = Conv2d::new_in(&ctx, g, &w, WeightQuant::per_tensor(zw, 0.01)).unwrap();
        let x: Vec<u8> = (0..g.input_len()).map(|i| (i % 251) as u8).collect();
        let input = ConvInput::new(&x, 128, 0.02);
        let (mut y8, mut y32, mut yf) = (vec![0u8; g.output_len()], vec![0i32; g.output_len()], vec![0f32; g.output_len()]);
        let rq = Requantize::new(0.5, 128u8);
        let calls: [(&str, &mut dyn FnMut()); 3] = [
            ("requantize", &mut || ctx.conv2d_requantize(&f, input, &rq, &mut y8).unwrap()),
            ("i32", &mut || ctx.conv2d_i32(&f, input, None, &mut y32).unwrap()),
            ("f32", &mut || ctx.conv2d_f32(&f, input, None, &mut yf).unwrap()),
        ];
        for (stage, run) in calls {
            let (c1, b1, l1) = counted(&mut *run);
            let (c2, b2, l2) = counted(&mut *run);
            let (c3, b3, _) = counted(&mut *run);
            eprintln!("conv {name} -> {stage}: first call {c1} allocations / {b1} bytes (largest {l1}); second {c2} / {b2}; third {c3} / {b3}");
            if name.starts_with("3x3 56") && stage == "requantize" {
                // The counter sees the first call build the indirection buffer (56·56·9 offsets).
                assert!(l1 >= 56 * 56 * 9 * size_of::<usize>(), "first call: largest allocation {l1} bytes");
            }
            assert!(c2 == 0 && c3 == 0, "{name} -> {stage}: a later call allocated {b2} bytes in {c2} allocations (largest {l2})");
        }
        // Pointwise needs none; depthwise builds its own when packed.
        assert_eq!(f.indirection_built(), !name.contains("pointwise"), "{name}");
    }
}
