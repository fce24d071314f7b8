//! AVX-512 VNNI kernels (`vpdpbusd` on zmm).
//!
//! * [`gemm`] — u8×s8 GEMM tiles on the `[k/4][NR][4]` packed format, the output stage
//!   fused and vectorised.
//! * [`gemv`] — short tiles (`m ≤ 4`) on the same packed format, for memory-bound
//!   calls: the weights streamed once, sequentially.
//! * [`dwconv`] — depthwise convolution, 64-channel tiles, `vpermt2b` + `vpdpwssd`.
//! * [`peak`] — the instruction's throughput probe, the limit results are quoted against.

pub mod dwconv;
pub mod codebook;
pub mod decode;
pub mod gemm;
pub mod gemv;
pub mod igemm;
pub mod pwlq;
pub mod peak;
pub mod shift;

#[cfg(test)]
mod tests;

use crate::types::{GemmArgs, GemmUkernel, GemmUkernelFn, IgemmArgs, IgemmUkernelFn, Indirect, Isa, PackFormat};

/// Declares the entry point of one tile for one activation signedness: a plain
/// `unsafe fn(&GemmArgs)` (what [`GemmUkernel::run`] stores) around the
/// `#[target_feature]` tile.
macro_rules! entry {
    ($name:ident, $mr:literal, $nv:literal, $flip:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`GemmArgs`] contract for this tile (`m ≤ MR`, `n ≤ NR`)
        /// and its `[k/4][NR][4]` packed panel, and the CPU supports AVX-512
        /// F/BW/VL/VNNI (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &GemmArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { gemm::gemm_tile::<$mr, $nv, $flip>(args) }
        }
    };
}

entry!(qu8s8_gemm_8x32c4_u8a, 8, 2, false, "8×32 tile, u8 activations.");
entry!(qu8s8_gemm_8x32c4_i8a, 8, 2, true, "8×32 tile, i8 activations (flipped to u8).");
entry!(qu8s8_gemm_4x64c4_u8a, 4, 4, false, "4×64 tile, u8 activations.");
entry!(qu8s8_gemm_4x64c4_i8a, 4, 4, true, "4×64 tile, i8 activations (flipped to u8).");

/// Declares the indirect entry point of one tile for one activation signedness.
macro_rules! ientry {
    ($name:ident, $mr:literal, $nv:literal, $flip:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`IgemmArgs`] contract for this tile (`m ≤ MR`, `n ≤ NR`,
        /// `kc` a multiple of 4) and its `[k/4][NR][4]` packed panel, and the CPU supports
        /// AVX-512 F/BW/VL/VNNI (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &IgemmArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { igemm::igemm_tile::<$mr, $nv, $flip>(args) }
        }
    };
}

ientry!(qu8s8_igemm_8x32c4_u8a, 8, 2, false, "Indirect 8×32 tile, u8 activations.");
ientry!(qu8s8_igemm_8x32c4_i8a, 8, 2, true, "Indirect 8×32 tile, i8 activations (flipped to u8).");
ientry!(qu8s8_igemm_4x64c4_u8a, 4, 4, false, "Indirect 4×64 tile, u8 activations.");
ientry!(qu8s8_igemm_4x64c4_i8a, 4, 4, true, "Indirect 4×64 tile, i8 activations (flipped to u8).");

/// The indirect entries of a u8×s8 kernel: one per activation signedness, both weight types.
const fn qu8s8_indirect(u8a: IgemmUkernelFn, i8a: IgemmUkernelFn) -> Option<Indirect> {
    Some(Indirect { run: [[Some(u8a), Some(u8a)], [Some(i8a), Some(i8a)]] })
}

/// A u8×s8 `vpdpbusd` kernel descriptor: i8 activations get `+128` (`XOR 0x80`), u8
/// weights are stored as i8 (`−128`); one entry point per activation signedness serves
/// both weight types.
const fn qu8s8(name: &'static str, mr: usize, nr: usize, u8a: GemmUkernelFn, i8a: GemmUkernelFn) -> GemmUkernel {
    GemmUkernel {
        name,
        isa: Isa::Avx512Vnni,
        mr,
        format: PackFormat { nr, kr: 4 },
        a_offset: [0, 128],
        b_offset: [128, 0],
        max_abs_stored_b: None,
        run: [[Some(u8a), Some(u8a)], [Some(i8a), Some(i8a)]],
        packed_a: None,
        indirect: None,
    }
}

/// `qu8s8_gemm_4x64c4__avx512vnni`: 4 rows × 64 columns (four zmm), 16 accumulators.
/// Each activation broadcast feeds four `vpdpbusd`, so the i8-activation flip costs
/// less than in the 8×32 tile; but narrow N wastes more of the 64 columns.
pub const QU8S8_GEMM_4X64C4__AVX512VNNI: GemmUkernel = GemmUkernel {
    indirect: qu8s8_indirect(qu8s8_igemm_4x64c4_u8a, qu8s8_igemm_4x64c4_i8a),
    ..qu8s8("qu8s8_gemm_4x64c4__avx512vnni", 4, 64, qu8s8_gemm_4x64c4_u8a, qu8s8_gemm_4x64c4_i8a)
};

/// `qu8s8_gemm_8x32c4__avx512vnni`: 8 rows × 32 columns (two zmm), 16 accumulators —
/// per K group 2 weight loads and 8 broadcasts feed 16 `vpdpbusd`. The default: as fast
/// as the wider tiles on large shapes, and twice as fast as 64-column tiles on narrow N.
///
/// Indirect entries ([`igemm`]): the same tile reading a convolution's rows in place.
pub const QU8S8_GEMM_8X32C4__AVX512VNNI: GemmUkernel = GemmUkernel {
    indirect: qu8s8_indirect(qu8s8_igemm_8x32c4_u8a, qu8s8_igemm_8x32c4_i8a),
    ..qu8s8("qu8s8_gemm_8x32c4__avx512vnni", 8, 32, qu8s8_gemm_8x32c4_u8a, qu8s8_gemm_8x32c4_i8a)
};

/// AVX-512 VNNI GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[QU8S8_GEMM_4X64C4__AVX512VNNI, QU8S8_GEMM_8X32C4__AVX512VNNI];

/// Declares the entry point of one GEMV tile for one activation signedness.
macro_rules! gemv_entry {
    ($name:ident, $flip:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`GemmArgs`] contract for this tile (`m ≤ 4`, `n ≤ 32`)
        /// and its `[k/4][32][4]` packed panel, and the CPU supports AVX-512
        /// F/BW/VL/VNNI (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &GemmArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { gemv::gemv_tile::<$flip>(args) }
        }
    };
}

gemv_entry!(qu8s8_gemv_4x32c4_u8a, false, "GEMV tile, up to 4 rows × 32 columns, u8 activations.");
gemv_entry!(qu8s8_gemv_4x32c4_i8a, true, "GEMV tile, up to 4 rows × 32 columns, i8 activations (flipped to u8).");

/// `qu8s8_gemv_4x32c4__avx512vnni`: the GEMV kernel (`m ≤ 4`) on the 8×32 GEMM kernel's
/// packed format (`[k/4][32][4]`), so the same packed weights serve both: the driver
/// switches to it for calls of at most 4 rows. See [`gemv`] for what differs.
pub const QU8S8_GEMV_4X32C4__AVX512VNNI: GemmUkernel =
    qu8s8("qu8s8_gemv_4x32c4__avx512vnni", 4, 32, qu8s8_gemv_4x32c4_u8a, qu8s8_gemv_4x32c4_i8a);

/// AVX-512 VNNI GEMV microkernels (`mr ≤ 4`), least preferred first.
pub const GEMV_KERNELS: &[GemmUkernel] = &[QU8S8_GEMV_4X32C4__AVX512VNNI];
pub use dwconv::DWCONV_KERNELS;
