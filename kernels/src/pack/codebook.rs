//! Packer of the codebook kernels' [`CodebookFormat`] (nibble pairs, K groups of 8).

use crate::types::CodebookFormat;

/// Packs the 4-bit codes of `B[K][N]`, given by `code(k, n)` (each `< 16`), into
/// `format`: `out` must hold `format.packed_bytes(k, n)` bytes. Codes past K or N are 0;
/// the kernels never multiply a K-padding code by a real activation.
///
/// Panics if `out` is too short (the caller sizes it).
pub fn pack_codebook4(format: CodebookFormat, k: usize, n: usize, code: impl Fn(usize, usize) -> u8, out: &mut [u8]) {
    pack_codebook(format, k, n, code, out)
}

/// Packs 4- or 5-bit codes (`format.bits`, each code `< 2^bits`) into `format`; see
/// [`pack_codebook4`]. For 5 bits, bit 4 goes to the group's bit plane.
pub fn pack_codebook(format: CodebookFormat, k: usize, n: usize, code: impl Fn(usize, usize) -> u8, out: &mut [u8]) {
    let nr = format.nr;
    let gb = format.group_bytes();
    let panel = format.panel_bytes(k);
    let out = &mut out[..format.packed_bytes(k, n)];
    out.fill(0);
    if panel == 0 {
        return;
    }
    for (p, dst) in out.chunks_exact_mut(panel).enumerate() {
        let n0 = p * nr;
        for j in 0..nr.min(n - n0) {
            for kk in 0..k {
                let (g, r) = (kk / 8, kk % 8);
                let c = code(kk, n0 + j);
                let p = 4 * j + r % 4;
                dst[g * gb + p] |= (c & 0x0F) << (4 * (r / 4));
                if format.bits == 5 && c & 0x10 != 0 {
                    let bit = (r / 4) * nr * 4 + p;
                    dst[g * gb + nr * 4 + bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }
}
