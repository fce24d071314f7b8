//! AVX-VNNI kernels (VEX `vpdpbusd` on ymm), and their AVX-512 twins.
//!
//! * [`gemm`] — u8×s8 GEMM tiles on the `[k/4][NR][4]` packed format, the output stage
//!   fused and vectorised, written once ([`gemm::vex`], [`gemm::evex`]).
//! * [`peak`] — the VEX instruction's throughput probe.
//!
//! [`GEMM_KERNELS`] is the AVX-VNNI tier. [`AVX512_TWIN_KERNELS`] holds the same tiles
//! compiled with the EVEX `vpdpbusd ymm`, registered in the AVX-512 VNNI tier below its
//! zmm kernels (never its default): on a host without AVX-VNNI they are how the shared
//! logic is tested, and timed as an indication of the AVX-VNNI tier.

pub mod gemm;
pub mod peak;

#[cfg(test)]
mod tests;

use crate::types::{GemmArgs, GemmUkernel, GemmUkernelFn, IgemmArgs, IgemmUkernelFn, Indirect, Isa, PackFormat};

/// Declares the entry point of one tile for one activation signedness: a plain
/// `unsafe fn(&GemmArgs)` (what [`GemmUkernel::run`] stores) around the
/// `#[target_feature]` tile of instance `$inst`.
macro_rules! entry {
    ($name:ident, $inst:ident, $mr:literal, $nv:literal, $flip:literal, $cpu:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`GemmArgs`] contract for this tile (`m ≤ MR`, `n ≤ NR`)
        /// and its `[k/4][NR][4]` packed panel, and the CPU supports
        #[doc = $cpu]
        /// (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &GemmArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { gemm::$inst::gemm_tile::<$mr, $nv, $flip>(args) }
        }
    };
}

entry!(vex_6x16c4_u8a, vex, 6, 2, false, "AVX2 and AVX-VNNI", "6×16 tile, u8 activations, VEX.");
entry!(vex_6x16c4_i8a, vex, 6, 2, true, "AVX2 and AVX-VNNI", "6×16 tile, i8 activations (flipped to u8), VEX.");
entry!(evex_6x16c4_u8a, evex, 6, 2, false, "AVX-512 F/BW/VL/VNNI", "6×16 tile, u8 activations, EVEX twin.");
entry!(evex_6x16c4_i8a, evex, 6, 2, true, "AVX-512 F/BW/VL/VNNI", "6×16 tile, i8 activations (flipped to u8), EVEX twin.");

/// Declares the indirect entry point ([`IgemmArgs`]) of one tile for one activation
/// signedness, around instance `$inst`'s `#[target_feature]` indirect tile.
macro_rules! ientry {
    ($name:ident, $inst:ident, $mr:literal, $nv:literal, $flip:literal, $cpu:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `args` satisfies the [`IgemmArgs`] contract for this tile (`m ≤ MR`, `n ≤ NR`,
        /// `kc` a multiple of 4) and its `[k/4][NR][4]` packed panel, and the CPU supports
        #[doc = $cpu]
        /// (dispatch registers the kernel only then).
        pub unsafe fn $name(args: &IgemmArgs) {
            // SAFETY: forwarded contract, which includes the CPU features.
            unsafe { gemm::$inst::igemm_tile::<$mr, $nv, $flip>(args) }
        }
    };
}

ientry!(vex_igemm_6x16c4_u8a, vex, 6, 2, false, "AVX2 and AVX-VNNI", "Indirect 6×16 tile, u8 activations, VEX.");
ientry!(vex_igemm_6x16c4_i8a, vex, 6, 2, true, "AVX2 and AVX-VNNI", "Indirect 6×16 tile, i8 activations (flipped to u8), VEX.");
ientry!(evex_igemm_6x16c4_u8a, evex, 6, 2, false, "AVX-512 F/BW/VL/VNNI", "Indirect 6×16 tile, u8 activations, EVEX twin.");
ientry!(evex_igemm_6x16c4_i8a, evex, 6, 2, true, "AVX-512 F/BW/VL/VNNI", "Indirect 6×16 tile, i8 activations (flipped to u8), EVEX twin.");

/// The indirect entries of a u8×s8 kernel: one per activation signedness, both weight types.
const fn qu8s8_indirect(u8a: IgemmUkernelFn, i8a: IgemmUkernelFn) -> Option<Indirect> {
    Some(Indirect { run: [[Some(u8a), Some(u8a)], [Some(i8a), Some(i8a)]] })
}

/// A u8×s8 `vpdpbusd` kernel descriptor: i8 activations get `+128` (`XOR 0x80`), u8
/// weights are stored as i8 (`−128`); one entry point per activation signedness serves
/// both weight types.
const fn qu8s8(name: &'static str, isa: Isa, mr: usize, nr: usize, u8a: GemmUkernelFn, i8a: GemmUkernelFn) -> GemmUkernel {
    GemmUkernel {
        name,
        isa,
        mr,
        format: PackFormat { nr, kr: 4 },
        a_offset: [0, 128],
        b_offset: [128, 0],
        max_abs_stored_b: None,
        indirect: None,
        packed_a: None,
        run: [[Some(u8a), Some(u8a)], [Some(i8a), Some(i8a)]],
    }
}

/// `qu8s8_gemm_6x16c4__avxvnni`: 6 rows × 16 columns (two ymm), 12 accumulators — per K
/// group 2 weight loads and 6 broadcasts feed 12 `vpdpbusd`: 15 of AVX-VNNI's 16 ymm,
/// the 16th holding the `0x80` flip of i8 activations. (A 4×24 tile, also 12
/// accumulators, needs 16 plus the flip: compiled for 16 registers its K loop spilled and
/// shuffled accumulators, and it measured slower through its EVEX twin.)
///
/// Indirect entries ([`gemm::vex::igemm_tile`]): the same tile reading a convolution's
/// rows in place. Not executed on hosts without AVX-VNNI; the shared code runs there
/// through the EVEX twin's.
pub const QU8S8_GEMM_6X16C4__AVXVNNI: GemmUkernel = GemmUkernel {
    indirect: qu8s8_indirect(vex_igemm_6x16c4_u8a, vex_igemm_6x16c4_i8a),
    ..qu8s8("qu8s8_gemm_6x16c4__avxvnni", Isa::AvxVnni, 6, 16, vex_6x16c4_u8a, vex_6x16c4_i8a)
};

/// `qu8s8_gemm_6x16c4__avx512vnni_ymm`: [`QU8S8_GEMM_6X16C4__AVXVNNI`] with the EVEX
/// instruction, in the AVX-512 VNNI tier.
pub const QU8S8_GEMM_6X16C4__AVX512VNNI_YMM: GemmUkernel = GemmUkernel {
    indirect: qu8s8_indirect(evex_igemm_6x16c4_u8a, evex_igemm_6x16c4_i8a),
    ..qu8s8("qu8s8_gemm_6x16c4__avx512vnni_ymm", Isa::Avx512Vnni, 6, 16, evex_6x16c4_u8a, evex_6x16c4_i8a)
};

/// AVX-VNNI GEMM microkernels, least preferred first.
pub const GEMM_KERNELS: &[GemmUkernel] = &[QU8S8_GEMM_6X16C4__AVXVNNI];

/// The EVEX twins of [`GEMM_KERNELS`], in the same order; registered in the AVX-512
/// VNNI tier before (below) its zmm kernels.
pub const AVX512_TWIN_KERNELS: &[GemmUkernel] = &[QU8S8_GEMM_6X16C4__AVX512VNNI_YMM];
