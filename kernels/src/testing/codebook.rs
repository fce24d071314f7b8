//! The exactness tester of the i8-table lookup codebook kernels ([`CodebookUkernel`] with
//! `family: Lut`, `table_i16: false`), called directly on panels packed by
//! [`pack_codebook`]: every tile height `m ≤ MR`, widths `1, NR/2, NR/2 + 1, NR − 1, NR`, K tails and
//! long K (below, at and past a kernel's internal block lengths), u8 and i8 activations
//! (random and all at 0 / 255 / −128 / 127; sign-split by [`sign_split_row`] for the
//! kernels that read A so), and tables over the kernel's whole range —
//! for a kernel without a table bound both ends of i8, −128 and 127, included. The raw
//! i32 output (`OutputKind::I32`, zero column offsets) must equal the i64 reference
//! [`codebook_gemm_i64`] modulo 2^32: the kernel contract's wrapping sum, exact whenever
//! the true value fits (the driver's overflow policy, tested through the public API).

use alloc::vec;
use alloc::vec::Vec;

use super::Rng;
use crate::pack::codebook::{SIGN_SPLIT_BYTES_PER_K, sign_split_row};
use crate::pack::pack_codebook;
use crate::reference::codebook_gemm_i64;
use crate::types::{CodebookArgs, CodebookFamily, CodebookUkernel, OutputStage};

/// What [`check_codebook_ukernel`] covered.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodebookTestSummary {
    /// Kernel calls compared.
    pub calls: usize,
    /// Output values compared.
    pub values: usize,
}

/// Runs `kernel` against the reference; panics on the first value that differs, naming
/// the case. Panics if `kernel` is not an i8-table lookup kernel.
///
/// # Safety
/// The CPU supports the kernel's ISA and its `extra_features`.
pub unsafe fn check_codebook_ukernel(kernel: &CodebookUkernel) -> CodebookTestSummary {
    assert!(kernel.family == CodebookFamily::Lut && !kernel.table_i16, "{}: not an i8-table lookup kernel", kernel.name);
    let mut rng = Rng::new(Rng::seed_from_str(kernel.name));
    let mut sum = CodebookTestSummary::default();
    let (mr, nr) = (kernel.mr, kernel.format.nr);
    let bound = kernel.max_abs_table.unwrap_or(128);
    let (lo, hi) = (-bound.min(128), bound.min(127));
    let mut ks: Vec<usize> = (1..=17).collect();
    // Past 2^31 / (255·128) ≈ 65794 the extreme sums wrap: the i32 bound, crossed.
    ks.extend([31, 63, 64, 65, 127, 128, 129, 513, 1031, 66_001]);
    // Tables: random over the range; alternating ends; every entry at one end.
    let tables: Vec<[i8; 32]> = vec![
        core::array::from_fn(|_| (lo + rng.below((hi - lo + 1) as usize) as i32) as i8),
        core::array::from_fn(|c| if c % 2 == 0 { lo as i8 } else { hi as i8 }),
        [lo as i8; 32],
        [hi as i8; 32],
        core::array::from_fn(|c| (lo + (c as i32 * 37) % (hi - lo + 1)) as i8),
    ];
    let zeros = vec![0i32; nr];
    for (ti, table) in tables.iter().enumerate() {
        let levels: Vec<i16> = table.iter().map(|&v| v as i16).collect();
        for &k in &ks {
            // Past half a panel too: a wide tile may run its column halves apart.
            for n in [1, nr / 2, nr / 2 + 1, nr - 1, nr] {
                let (codes, b) = codes_and_panels(kernel, k, n, &mut rng);
                for signed in [false, true] {
                    let fill = fill_for(&mut rng, k, signed);
                    let lda = k + rng.below(3);
                    let a: Vec<u8> = (0..mr * lda).map(|_| fill.unwrap_or_else(|| rng.next_u64() as u8)).collect();
                    let off = kernel.a_offset[signed as usize];
                    let mut want = vec![0i64; mr * n];
                    if signed {
                        let ai: Vec<i8> = a.iter().map(|&v| v as i8).collect();
                        codebook_gemm_i64(mr, n, k, &ai, lda, -off, |kk, j| codes[kk * n + j], &levels, &mut want, n);
                    } else {
                        codebook_gemm_i64(mr, n, k, &a, lda, -off, |kk, j| codes[kk * n + j], &levels, &mut want, n);
                    }
                    // The sign-split kernels read A as the driver writes it: rows of
                    // `lda_split` three-byte elements, one or two groups past the row's end.
                    let lda_split = 8 * (k.div_ceil(8) + rng.below(2));
                    let split: Vec<u8> = if kernel.a_sign_split {
                        let mut v = vec![0xA5u8; mr * SIGN_SPLIT_BYTES_PER_K * lda_split];
                        for r in 0..mr {
                            let (row, out) = (&a[r * lda..r * lda + k], &mut v[SIGN_SPLIT_BYTES_PER_K * r * lda_split..]);
                            if signed {
                                sign_split_row(bytemuck::cast_slice::<u8, i8>(row), off, out);
                            } else {
                                sign_split_row(row, off, out);
                            }
                        }
                        v
                    } else {
                        Vec::new()
                    };
                    let (a_ptr, a_ld) = if kernel.a_sign_split { (split.as_ptr(), lda_split) } else { (a.as_ptr(), lda) };
                    for m in 1..=mr {
                        let ldc = n + 1;
                        let mut c = vec![0x5A5A_5A5Ai32; m * ldc];
                        let args = CodebookArgs {
                            m,
                            n,
                            k,
                            a: a_ptr,
                            lda: a_ld,
                            b: b.as_ptr(),
                            table: table.as_ptr(),
                            table16: core::ptr::null(),
                            c: c.as_mut_ptr().cast(),
                            ldc,
                            out: OutputStage::raw_i32(zeros.as_ptr()),
                        };
                        // SAFETY: A holds `m ≤ MR` rows of `lda ≥ k` bytes (sign-split: of
                        // `3·lda_split ≥ k.div_ceil(8)·24`), the panel its
                        // packed bytes, the table 32 entries, C `m` rows of `ldc ≥ n`; the
                        // CPU feature is the caller's.
                        unsafe { (kernel.run[signed as usize])(&args) };
                        for i in 0..m {
                            for j in 0..ldc {
                                let got = c[i * ldc + j];
                                let exp = if j < n { want[i * n + j] as i32 } else { 0x5A5A_5A5A };
                                assert_eq!(got, exp, "{}: C[{i}][{j}] m={m} n={n} k={k} table #{ti} a_signed={signed} fill={fill:?}", kernel.name);
                            }
                        }
                        sum.calls += 1;
                        sum.values += m * n;
                    }
                }
            }
        }
    }
    if let Some(gemv) = kernel.gemv {
        sum = check_gemv(kernel, gemv, &tables, &mut rng, sum);
    }
    sum
}

/// The [`CodebookUkernel::gemv`] entries: one row over many panels (within and past one
/// panel, partial last panels, runs of panels longer than a kernel's internal batch),
/// K tails and long K, both activation types, extremes, against the same reference.
fn check_gemv(kernel: &CodebookUkernel, gemv: [crate::types::CodebookUkernelFn; 2], tables: &[[i8; 32]], rng: &mut Rng, mut sum: CodebookTestSummary) -> CodebookTestSummary {
    let nr = kernel.format.nr;
    let zeros = vec![0i32; 40 * nr];
    for (ti, table) in tables.iter().enumerate() {
        let levels: Vec<i16> = table.iter().map(|&v| v as i16).collect();
        for k in [0, 1, 7, 8, 9, 64, 129, 1031, 66_001] {
            let widths: &[usize] = if k > 2000 { &[nr + 1] } else { &[1, nr - 1, nr, nr + 1, 3 * nr - 5, 8 * nr, 8 * nr + 1, 17 * nr + 3, 40 * nr] };
            for &n in widths {
                let (codes, b) = codes_and_panels(kernel, k, n, rng);
                for signed in [false, true] {
                    let fill = fill_for(rng, k, signed);
                    let a: Vec<u8> = (0..k).map(|_| fill.unwrap_or_else(|| rng.next_u64() as u8)).collect();
                    let off = kernel.a_offset[signed as usize];
                    let mut want = vec![0i64; n];
                    let mut row = vec![0xA5u8; SIGN_SPLIT_BYTES_PER_K * 8 * (k.div_ceil(8) + 1)];
                    if signed {
                        let ai: &[i8] = bytemuck::cast_slice(&a);
                        codebook_gemm_i64(1, n, k, ai, k, -off, |kk, j| codes[kk * n + j], &levels, &mut want, n);
                        if kernel.a_sign_split {
                            sign_split_row(ai, off, &mut row);
                        }
                    } else {
                        codebook_gemm_i64(1, n, k, &a, k, -off, |kk, j| codes[kk * n + j], &levels, &mut want, n);
                        if kernel.a_sign_split {
                            sign_split_row(&a, off, &mut row);
                        }
                    }
                    let a_ptr = if kernel.a_sign_split { row.as_ptr() } else { a.as_ptr() };
                    let mut c = vec![0x5A5A_5A5Ai32; n + 8];
                    let args = CodebookArgs {
                        m: 1,
                        n,
                        k,
                        a: a_ptr,
                        lda: k,
                        b: b.as_ptr(),
                        table: table.as_ptr(),
                        table16: core::ptr::null(),
                        c: c.as_mut_ptr().cast(),
                        ldc: n,
                        out: OutputStage::raw_i32(zeros.as_ptr()),
                    };
                    // SAFETY: A holds one row of k bytes (sign-split: its groups), the
                    // panels of n columns their packed bytes, the table 32 entries, C and
                    // the column offsets at least n; the CPU feature is the caller's.
                    unsafe { (gemv[signed as usize])(&args) };
                    for (j, &got) in c.iter().enumerate() {
                        let exp = if j < n { want[j] as i32 } else { 0x5A5A_5A5A };
                        assert_eq!(got, exp, "{} (gemv): C[{j}] n={n} k={k} table #{ti} a_signed={signed} fill={fill:?}", kernel.name);
                    }
                    sum.calls += 1;
                    sum.values += n;
                }
            }
        }
    }
    sum
}

/// Random codes of a `k × n` matrix for `kernel` (one case in four: the last code
/// everywhere), and their packed panels.
fn codes_and_panels(kernel: &CodebookUkernel, k: usize, n: usize, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let ncodes = 1usize << kernel.bits;
    let extreme = rng.chance(1, 4);
    let codes: Vec<u8> = (0..k * n).map(|_| if extreme { (ncodes - 1) as u8 } else { rng.below(ncodes) as u8 }).collect();
    let mut b = vec![0u8; kernel.format.packed_bytes(k, n)];
    pack_codebook(kernel.format, k, n, |kk, j| codes[kk * n + j], &mut b);
    (codes, b)
}

/// A case's activation bit pattern: random (`None`), or one extreme everywhere (always
/// the all-ones byte past K = 65536, the sums that cross the i32 bound).
fn fill_for(rng: &mut Rng, k: usize, signed: bool) -> Option<u8> {
    match if k > 65_536 { 1 } else { rng.below(6) } {
        0 => Some(0),
        1 => Some(0xFF),
        2 => Some(if signed { 0x80 } else { 0x01 }),
        3 => Some(if signed { 0x7F } else { 0x80 }),
        _ => None,
    }
}
