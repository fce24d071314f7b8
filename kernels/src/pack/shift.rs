//! Packer of the bit-shift codebook kernels ([`CodebookFamily::Shift`](crate::CodebookFamily)):
//! each weight as a sign and one or two shift counts, `w = ±(2^e1 [+ 2^e2])`, so a kernel
//! computes `Σ_k ±((x << e1) + (x << e2))` without a multiply.
//!
//! # Byte layout
//!
//! A [`CodebookFormat`] with `bits = 8·T` (`T = 1` term for PoT level sets, `T = 2` for
//! APoT ones): panels of `nr` columns; K in groups of 8; group `g` of a panel is `T`
//! planes of `nr·8` bytes; in plane `t`, the byte at `2·nr·p + 2j + u` is term `t` of the
//! weight at `k = 8g + 2p + u` (`p < 4`, `u < 2`), column `j`. So 32 consecutive bytes are
//! 16 columns × 2 consecutive K: `vpmovzxbw` makes them the i16 lanes `(j, u)` of a zmm,
//! `vpmovzxbd` of 8 bytes the i32 lanes of a ymm (4 columns × 2 K), and an activation pair
//! `(x_k, x_{k+1})` broadcast as one dword / qword multiplies every lane.
//!
//! A term byte:
//! * bits 0–5: the shift count: the exponent `0..=6`, or [`SHIFT_NONE`] (32) for a
//!   missing term — a count ≥ the lane width, so `x << 32` is 0 in i16 and i32 lanes
//!   (`vpsllvw`/`vpsllvd`/`sshl` all give 0 there, and so does the portable kernel);
//! * term 0 only: bit 6 ([`SHIFT_LEAD`]) always set, so the byte read as i8 is never 0,
//!   and bit 7 ([`SHIFT_NEG`]) the sign of the weight. Sign-extended, the byte is a
//!   `vpsignd` selector (negative: negate, positive: keep); masked with
//!   [`SHIFT_COUNT_MASK`] it is the count.
//! * term 1: the count only (bits 6–7 clear).
//!
//! Zero is `[SHIFT_LEAD | SHIFT_NONE, SHIFT_NONE]` (both terms missing, positive); K and
//! N padding is zero weights, so a kernel may run the padding with any finite activation.
//! Two terms are stored with the larger exponent first.

use crate::types::CodebookFormat;

/// The count of a missing term (32: past every lane width, the shift gives 0).
pub const SHIFT_NONE: u8 = 0x20;
/// Set in every term-0 byte (never 0 as an i8, so a `vpsignd` selector).
pub const SHIFT_LEAD: u8 = 0x40;
/// The sign bit of term 0.
pub const SHIFT_NEG: u8 = 0x80;
/// The count bits of a term byte.
pub const SHIFT_COUNT_MASK: u8 = 0x3F;
/// The largest exponent of a term (grids fit i8: `2^6 + 2^5 = 96`, `2^6 = 64`).
pub const SHIFT_MAX_EXP: u32 = 6;

/// The term bytes of the zero weight.
pub const SHIFT_ZERO: [u8; 2] = [SHIFT_LEAD | SHIFT_NONE, SHIFT_NONE];

/// How many shift terms `v` needs (`|v|`'s set bits: 0 for 0), or `None` when `|v|` has
/// a bit above `2^SHIFT_MAX_EXP` or more than two set bits (not `±(2^a [+ 2^b])`).
pub const fn shift_terms(v: i32) -> Option<u32> {
    let m = v.unsigned_abs();
    let ones = m.count_ones();
    if m >> (SHIFT_MAX_EXP + 1) != 0 || ones > 2 { None } else { Some(ones) }
}

/// The term bytes of `v` (`[term0, term1]`; term 1 is [`SHIFT_NONE`] when unused), or
/// `None` when `v` needs more than `terms` terms (see [`shift_terms`]).
pub const fn shift_encode(v: i32, terms: u32) -> Option<[u8; 2]> {
    match shift_terms(v) {
        Some(t) if t <= terms => {
            let m = v.unsigned_abs();
            if m == 0 {
                return Some(SHIFT_ZERO);
            }
            let hi = 31 - m.leading_zeros();
            let rest = m & !(1 << hi);
            let lo = if rest == 0 { SHIFT_NONE } else { rest.trailing_zeros() as u8 };
            let sign = if v < 0 { SHIFT_NEG } else { 0 };
            Some([sign | SHIFT_LEAD | hi as u8, lo])
        }
        _ => None,
    }
}

/// The weight `[term0, term1]` stands for (the inverse of [`shift_encode`]; term 1 is
/// ignored when `terms = 1`). Counts ≥ 32 contribute 0.
pub const fn shift_decode(t: [u8; 2], terms: u32) -> i32 {
    let mut m = term_value(t[0]);
    if terms == 2 {
        m += term_value(t[1]);
    }
    if t[0] & SHIFT_NEG != 0 { -m } else { m }
}

/// `2^count` of one term byte, 0 for a missing term.
const fn term_value(b: u8) -> i32 {
    let c = (b & SHIFT_COUNT_MASK) as u32;
    if c < 32 { 1i32 << c } else { 0 }
}

/// Packs the term bytes `enc(k, n)` (from [`shift_encode`] with `format.bits / 8` terms)
/// of `B[K][N]` into `format` (`bits` 8 or 16): `out` must hold
/// `format.packed_bytes(k, n)` bytes. K and N padding gets [`SHIFT_ZERO`].
///
/// Panics if `out` is too short or `format.bits` is not 8 or 16 (the caller sizes it).
pub fn pack_shift(format: CodebookFormat, k: usize, n: usize, enc: impl Fn(usize, usize) -> [u8; 2], out: &mut [u8]) {
    assert!(format.bits == 8 || format.bits == 16, "shift formats hold 1 or 2 terms");
    let terms = (format.bits / 8) as usize;
    let nr = format.nr;
    let gb = format.group_bytes();
    let plane = nr * 8;
    let panel = format.panel_bytes(k);
    let out = &mut out[..format.packed_bytes(k, n)];
    // Zero weights everywhere first (the padding), then the real ones.
    for grp in out.chunks_exact_mut(gb) {
        for (t, p) in grp.chunks_exact_mut(plane).enumerate() {
            p.fill(SHIFT_ZERO[t]);
        }
    }
    if panel == 0 {
        return;
    }
    for (p, dst) in out.chunks_exact_mut(panel).enumerate() {
        let n0 = p * nr;
        for j in 0..nr.min(n - n0) {
            for kk in 0..k {
                let (g, r) = (kk / 8, kk % 8);
                let at = g * gb + 2 * nr * (r / 2) + 2 * j + r % 2;
                let e = enc(kk, n0 + j);
                for (t, &b) in e.iter().enumerate().take(terms) {
                    dst[at + t * plane] = b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_every_representable_value() {
        for v in -200..=200 {
            for terms in 1..=2 {
                match shift_encode(v, terms) {
                    Some(t) => {
                        assert_eq!(shift_decode(t, terms), v, "{v} with {terms} terms");
                        assert_ne!(t[0] as i8, 0);
                        assert_eq!(t[1] & !SHIFT_COUNT_MASK, 0);
                    }
                    None => {
                        let m = v.unsigned_abs();
                        assert!(m > 127 || m.count_ones() > terms, "{v} refused with {terms} terms");
                    }
                }
            }
        }
        assert_eq!(shift_encode(10, 2), Some([SHIFT_LEAD | 3, 1]));
        assert_eq!(shift_encode(-64, 1), Some([SHIFT_NEG | SHIFT_LEAD | 6, SHIFT_NONE]));
        assert_eq!(shift_encode(3, 1), None);
        assert_eq!(shift_encode(7, 2), None);
    }
}
