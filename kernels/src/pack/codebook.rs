//! Packer of the codebook kernels' [`CodebookFormat`] (nibble pairs, K groups of 8).

use crate::types::{CodebookFormat, Int8};

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

/// Bytes per K group of 8 in a sign-split activation row: 8 signed values, their 8 sign
/// masks, 8 magnitudes.
pub const SIGN_SPLIT_GROUP_BYTES: usize = 24;

/// Bytes per K element of a sign-split row (the unit of its [`crate::CodebookArgs::lda`]).
pub const SIGN_SPLIT_BYTES_PER_K: usize = SIGN_SPLIT_GROUP_BYTES / 8;

/// Writes the activation row `a` (K = `a.len()`) in the sign-split form of the kernels
/// with [`crate::types::CodebookUkernel::a_sign_split`]: for each K group of 8, the eight
/// `s = a + a_offset` as i8, their eight sign masks (`0xFF` where `s < 0`, else 0), then
/// their eight magnitudes `|s|` as u8 (128 for −128). The masks serve the kernels that
/// apply the sign by `XOR` (one's complement, `|s|·(w ⊕ 0xFF) = s·w − |s|`, corrected by
/// the row's `Σ_{s<0} |s|`), `s` those that use `vpsignb`. Past K, up to the end of the
/// last group, all three are 0, so the padding multiplies to 0 whatever code the panel
/// holds there. `out` must hold `a.len().div_ceil(8) · 24` bytes.
///
/// Panics (a caller's bug, not a data error) if `out` is too short or if `a_offset` moves
/// some value of `A` out of i8: the kernels' offsets, −128 for u8 and 0 for i8, do not.
pub fn sign_split_row<A: Int8>(a: &[A], a_offset: i32, out: &mut [u8]) {
    assert!((-128..=127).contains(&(A::MIN + a_offset)) && (-128..=127).contains(&(A::MAX + a_offset)), "offset {a_offset} takes {} out of i8", A::NAME);
    let out = &mut out[..a.len().div_ceil(8) * SIGN_SPLIT_GROUP_BYTES];
    let split = |src: &[A], dst: &mut [u8]| {
        let (s, rest) = dst.split_at_mut(8);
        let (neg, m) = rest.split_at_mut(8);
        for (((v, s), neg), m) in src.iter().zip(s.iter_mut()).zip(neg.iter_mut()).zip(m.iter_mut()) {
            let x = (v.to_i32() + a_offset) as i8;
            *s = x as u8;
            *neg = (x >> 7) as u8;
            *m = x.unsigned_abs();
        }
    };
    // Whole groups in fixed chunks of 8 (which the compiler vectorises), then the last
    // partial group over zeros.
    let mut groups = out.chunks_exact_mut(SIGN_SPLIT_GROUP_BYTES);
    let full = a.chunks_exact(8);
    let rest = full.remainder();
    for (src, dst) in full.zip(&mut groups) {
        split(src, dst);
    }
    if let Some(dst) = groups.next() {
        dst.fill(0);
        split(rest, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_split_row_writes_values_masks_magnitudes_and_zero_padding() {
        // K = 11: one whole group, one of 3 (zeros past K), over a dirty buffer.
        let a: [u8; 11] = [0, 1, 127, 128, 129, 255, 64, 200, 0, 128, 255];
        let mut out = [0xA5u8; 2 * SIGN_SPLIT_GROUP_BYTES + 5];
        sign_split_row(&a, -128, &mut out);
        let mut want = [0u8; 2 * SIGN_SPLIT_GROUP_BYTES];
        for (k, &v) in a.iter().enumerate() {
            let s = (v as i32 - 128) as i8;
            let g = SIGN_SPLIT_GROUP_BYTES * (k / 8);
            want[g + k % 8] = s as u8;
            want[g + 8 + k % 8] = if s < 0 { 0xFF } else { 0 };
            want[g + 16 + k % 8] = s.unsigned_abs();
        }
        assert_eq!(out[..2 * SIGN_SPLIT_GROUP_BYTES], want);
        assert_eq!(out[24 + 8], 0xFF, "−128 is negative");
        assert_eq!(out[24 + 16], 128, "|−128| is 128");
        assert!(out[48..].iter().all(|&b| b == 0xA5), "nothing written past the last group");
        // i8 activations, offset 0: the values as they are.
        let mut out = [0xA5u8; SIGN_SPLIT_GROUP_BYTES];
        sign_split_row(&[-128i8, -1, 0, 1, 127], 0, &mut out);
        #[rustfmt::skip]
        assert_eq!(out, [0x80, 0xFF, 0, 1, 127, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 128, 1, 0, 1, 127, 0, 0, 0]);
    }

    #[test]
    #[should_panic]
    fn sign_split_row_panics_on_a_short_output() {
        sign_split_row(&[1u8; 9], -128, &mut [0u8; SIGN_SPLIT_GROUP_BYTES]);
    }

    #[test]
    #[should_panic(expected = "out of i8")]
    fn sign_split_row_panics_on_an_offset_leaving_i8() {
        sign_split_row(&[1u8; 8], 0, &mut [0u8; SIGN_SPLIT_GROUP_BYTES]);
    }
}
