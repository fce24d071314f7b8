//! The exactness tester of the codebook decoders ([`crate::pack::decode`]): every
//! decoder, on random and extreme codes and tables, over source and target panel widths,
//! K tails (every K below two groups, then longer ones) and odd N, must write exactly
//! what [`pack_b_kgroups`] writes for the decoded weights — K and N padding 0 — and no
//! byte past its panels.

use alloc::vec;
use alloc::vec::Vec;

use super::Rng;
use crate::pack::decode::{CodebookDecodeArgs, CodebookDecoder};
use crate::pack::{pack_b_kgroups, pack_codebook};
use crate::types::{CodebookFormat, PackFormat};

/// What [`check_codebook_decoder`] covered.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeTestSummary {
    /// Decode calls compared.
    pub calls: usize,
    /// Weights compared.
    pub weights: usize,
}

/// Runs `dec` against the packer of the decoded weights; panics on the first byte that
/// differs, naming the case.
///
/// # Safety
/// The CPU supports the decoder's ISA (and its features).
pub unsafe fn check_codebook_decoder(dec: &CodebookDecoder) -> DecodeTestSummary {
    let mut rng = Rng::new(Rng::seed_from_str(dec.name));
    let mut sum = DecodeTestSummary::default();
    let ncodes = 1usize << dec.bits;
    let mut ks: Vec<usize> = (0..=17).collect();
    ks.extend([23, 31, 32, 33, 64, 100, 257]);
    for &src_nr in &[8usize, 16, 32] {
        for &dst_nr in &[16usize, 32] {
            if !src_nr.is_multiple_of(dec.cols) || !dst_nr.is_multiple_of(dec.cols) {
                continue;
            }
            for &k in &ks {
                for &n in &[1usize, 7, 8, 9, 15, 16, 17, 31, 33, 47, 69] {
                    // Tables: random; both ends of i8 (±127, −128); a table with byte 0
                    // nonzero, so padding codes (0) would show if decoded.
                    let table: [u8; 32] = match rng.below(4) {
                        0 => core::array::from_fn(|c| if c % 2 == 0 { 0x7F } else { 0x81 }),
                        1 => core::array::from_fn(|c| if c % 3 == 0 { 0x80 } else { 0x7F }),
                        _ => core::array::from_fn(|_| rng.next_u64() as u8),
                    };
                    let extreme = rng.chance(1, 8);
                    let codes: Vec<u8> = (0..k * n).map(|_| if extreme { (ncodes - 1) as u8 } else { rng.below(ncodes) as u8 }).collect();
                    let sfmt = CodebookFormat { nr: src_nr, bits: dec.bits };
                    let mut src = vec![0u8; sfmt.packed_bytes(k, n)];
                    pack_codebook(sfmt, k, n, |kk, j| codes[kk * n + j], &mut src);
                    let dfmt = PackFormat { nr: dst_nr, kr: dec.kr };
                    let decoded: Vec<i8> = codes.iter().map(|&c| table[c as usize] as i8).collect();
                    let mut want = vec![0u8; dfmt.packed_bytes(k, n)];
                    pack_b_kgroups(dfmt, &decoded, k, n, n, 0, &mut want);
                    let (tiles, pb) = (n.div_ceil(dst_nr), dfmt.panel_bytes(k));
                    // Every start panel, with a random panel count to the end.
                    for p0 in 0..tiles {
                        let panels = 1 + rng.below(tiles - p0);
                        // Garbage before the call, a sentinel past the panels.
                        let mut dst = vec![0x5Au8; panels * pb + 64];
                        let args = CodebookDecodeArgs {
                            src: src.as_ptr(),
                            src_nr,
                            k,
                            n,
                            j0: p0 * dst_nr,
                            panels,
                            table: table.as_ptr(),
                            dst: dst.as_mut_ptr(),
                            dst_nr,
                        };
                        // SAFETY: the arguments satisfy the contract (sizes from the
                        // formats); the CPU feature is the caller's.
                        unsafe { (dec.run)(&args) };
                        let got = &dst[..panels * pb];
                        let exp = &want[p0 * pb..(p0 + panels) * pb];
                        if let Some(i) = (0..got.len()).find(|&i| got[i] != exp[i]) {
                            let (p, off) = (p0 + i / pb, i % pb);
                            let (g, jl, r) = (off / (dst_nr * dec.kr), off / dec.kr % dst_nr, off % dec.kr);
                            panic!(
                                "{}: src_nr={src_nr} dst_nr={dst_nr} k={k} n={n} panels {p0}+{panels}: byte of k={} j={} is {:#04x}, want {:#04x}",
                                dec.name,
                                g * dec.kr + r,
                                p * dst_nr + jl,
                                got[i],
                                exp[i]
                            );
                        }
                        assert!(dst[panels * pb..].iter().all(|&b| b == 0x5A), "{}: wrote past its panels (k={k} n={n})", dec.name);
                        sum.calls += 1;
                        sum.weights += panels * pb;
                    }
                }
            }
        }
    }
    sum
}
