//! Portable depthwise microkernel on the [`DwPackFormat`] layout (16-channel tiles).

use crate::generic::gemm::output_value;
use crate::types::{DW_ZERO_TAP, DwPackFormat, DwconvArgs, DwconvUkernel, Int8, Isa, OutputKind};

/// Channels per tile of the portable kernel.
const CT: usize = 16;

/// The row of tap `t` of pixel `p`: the input at its offset, or the zero-point row.
///
/// # Safety
/// `args.indirection` holds `pixels · taps` entries and `p·taps + t` is one of them.
#[inline(always)]
pub(crate) unsafe fn tap_row(args: &DwconvArgs, p: usize, t: usize) -> *const u8 {
    // SAFETY: forwarded.
    let off = unsafe { *args.indirection.add(p * args.taps + t) };
    if off == DW_ZERO_TAP { args.zero } else { args.input.wrapping_add(off) }
}

/// Writes the output-stage value of `acc` (already including `col_offset`) for channel
/// `c` of pixel `p`.
///
/// # Safety
/// The [`DwconvArgs`] contract; `p < pixels`, `c < channels`.
#[inline(always)]
pub(crate) unsafe fn store_one(args: &DwconvArgs, p: usize, c: usize, acc: i32) {
    let out = &args.out;
    let val = output_value(acc, c, out);
    let idx = p * args.output_pixel_stride + c;
    // SAFETY: element (p, c) lies in the output (contract).
    unsafe {
        match out.kind {
            OutputKind::I32 | OutputKind::F32 => args.output.cast::<u32>().add(idx).write_unaligned(val),
            OutputKind::U8 | OutputKind::I8 => args.output.add(idx).write(val as u8),
        }
    }
}

/// The portable kernel: per pixel and 16-channel tile, `Σ x·wc` over the tap pairs.
/// Reads `channels` bytes of each tap row and of `zero`, the whole packed filter, and
/// nothing past them.
///
/// # Safety
/// `args` satisfies the [`DwconvArgs`] contract, weights packed with `ct = 16`.
pub unsafe fn dwconv_generic<A: Int8>(args: &DwconvArgs) {
    let (c_all, taps) = (args.channels, args.taps);
    let fmt = DwPackFormat { ct: CT, kr: 2 };
    for p in 0..args.pixels {
        for tile in 0..c_all.div_ceil(CT) {
            let c0 = tile * CT;
            let cn = CT.min(c_all - c0);
            let mut acc = [0i32; CT];
            // SAFETY: the tile holds `pairs·CT` dwords (contract).
            let wt = unsafe { args.weights.add(tile * fmt.tile_bytes(taps)) };
            for t in 0..taps {
                // SAFETY: p < pixels, t < taps.
                let row = unsafe { tap_row(args, p, t) };
                for (cc, a) in acc.iter_mut().enumerate().take(cn) {
                    // SAFETY: the row has `channels` bytes; the weight is inside the tile.
                    let (x, w) = unsafe {
                        let x = A::from_bits(*row.add(c0 + cc)).to_i32();
                        let wp = wt.add(((t / 2) * CT + cc) * 4 + 2 * (t % 2));
                        (x, i16::from_le_bytes([*wp, *wp.add(1)]) as i32)
                    };
                    *a = a.wrapping_add(x * w);
                }
            }
            for (cc, &a) in acc.iter().enumerate().take(cn) {
                let c = c0 + cc;
                // SAFETY: col_offset has `channels` entries; (p, c) is in the output.
                unsafe { store_one(args, p, c, a.wrapping_add(*args.out.col_offset.add(c))) };
            }
        }
    }
}

/// `qx8_dwconv_up16__generic`: any tap count, 16-channel tiles, both activation types.
pub const QX8_DWCONV_UP16__GENERIC: DwconvUkernel = DwconvUkernel {
    name: "qx8_dwconv_up16__generic",
    isa: Isa::Scalar,
    extra_features: &[],
    taps: None,
    format: DwPackFormat { ct: CT, kr: 2 },
    a_offset: [0, 0],
    run: [Some(dwconv_generic::<u8>), Some(dwconv_generic::<i8>)],
};

/// Every portable depthwise kernel, least preferred first.
pub const DWCONV_KERNELS: &[DwconvUkernel] = &[QX8_DWCONV_UP16__GENERIC];
