//! Read-bandwidth probe: streams a buffer once with the widest loads of a tier and sums
//! it into registers, so `bytes / seconds` is what one core reads from the cache level
//! (or DRAM) the buffer lives in. Memory-bound kernels (GEMV: every weight byte is read
//! once per call) are quoted against it at the same byte size (DESIGN.md §7).
//!
//! The loop is the shape a streaming kernel has: several independent accumulators, one
//! full-width load per add, no stores; the hardware prefetchers see one sequential
//! stream. The returned checksum (wrapping sum of the little-endian u32 words, the last
//! partial word zero-padded) makes the loads observable and lets a test check that
//! every byte was read exactly once.

use core::arch::x86_64::*;

/// Bytes per iteration of the unrolled main loop of [`read_stream_zmm`] (8 zmm loads).
pub const ZMM_STEP: usize = 512;
/// Bytes per iteration of the unrolled main loop of [`read_stream_ymm`] (8 ymm loads).
pub const YMM_STEP: usize = 256;

/// Sums the words of the bytes not covered by full vectors (the tail), scalar.
#[inline]
fn tail_sum(tail: &[u8]) -> u32 {
    let mut s = 0u32;
    for w in tail.chunks(4) {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        s = s.wrapping_add(u32::from_le_bytes(b));
    }
    s
}

/// Streams `data` once with 64-byte loads (8 independent zmm accumulators, 512 bytes
/// per iteration) and returns the wrapping sum of its u32 words (see the module doc).
/// Reads exactly `data`; no alignment needed (an aligned buffer measures best).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
pub unsafe fn read_stream_zmm(data: &[u8]) -> u32 {
    let p = data.as_ptr();
    let main = data.len() / ZMM_STEP * ZMM_STEP;
    let mut acc = [_mm512_setzero_si512(); 8];
    let mut off = 0;
    while off < main {
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: off + 64·v + 64 ≤ main ≤ data.len().
            *a = _mm512_add_epi32(*a, unsafe { _mm512_loadu_si512(p.add(off + 64 * v).cast()) });
        }
        off += ZMM_STEP;
    }
    let vecs = data.len() / 64 * 64;
    while off < vecs {
        // SAFETY: off + 64 ≤ vecs ≤ data.len().
        acc[0] = _mm512_add_epi32(acc[0], unsafe { _mm512_loadu_si512(p.add(off).cast()) });
        off += 64;
    }
    let mut s = acc[0];
    for a in &acc[1..] {
        s = _mm512_add_epi32(s, *a);
    }
    (_mm512_reduce_add_epi32(s) as u32).wrapping_add(tail_sum(&data[vecs..]))
}

/// [`read_stream_zmm`] with 32-byte loads (AVX2 hosts): 8 ymm accumulators, 256 bytes
/// per iteration; the same checksum.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn read_stream_ymm(data: &[u8]) -> u32 {
    let p = data.as_ptr();
    let main = data.len() / YMM_STEP * YMM_STEP;
    let mut acc = [_mm256_setzero_si256(); 8];
    let mut off = 0;
    while off < main {
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: off + 32·v + 32 ≤ main ≤ data.len().
            *a = _mm256_add_epi32(*a, unsafe { _mm256_loadu_si256(p.add(off + 32 * v).cast()) });
        }
        off += YMM_STEP;
    }
    let vecs = data.len() / 32 * 32;
    while off < vecs {
        // SAFETY: off + 32 ≤ vecs ≤ data.len().
        acc[0] = _mm256_add_epi32(acc[0], unsafe { _mm256_loadu_si256(p.add(off).cast()) });
        off += 32;
    }
    let mut s = acc[0];
    for a in &acc[1..] {
        s = _mm256_add_epi32(s, *a);
    }
    let mut lanes = [0u32; 8];
    // SAFETY: `lanes` holds 32 bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
    lanes.iter().fold(tail_sum(&data[vecs..]), |t, &l| t.wrapping_add(l))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn checksum_covers_every_byte_once() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in [0, 1, 3, 4, 5, 31, 32, 33, 63, 64, 65, 255, 256, 257, 511, 512, 513, 1000, 4097, 5000] {
            for start in [0, 1, 7] {
                let d = &data[start..(start + len).min(data.len())];
                let want = tail_sum(d);
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: feature detected.
                    assert_eq!(unsafe { read_stream_zmm(d) }, want, "zmm len {len} start {start}");
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: feature detected.
                    assert_eq!(unsafe { read_stream_ymm(d) }, want, "ymm len {len} start {start}");
                }
            }
        }
    }
}
