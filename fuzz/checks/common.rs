//! Case generation: bounded integers from the fuzzer's bytes, and bulk data from a
//! seeded xorshift so that large buffers do not need large inputs, biased towards the
//! extremes where saturation and overflow live.

use arbitrary::Unstructured;

/// The fuzzer's bytes as a source of bounded choices; an exhausted source yields the
/// low end of every range (so every input, even empty, is a valid case).
pub struct Gen<'a> {
    u: Unstructured<'a>,
    seed: u64,
}

/// How bulk values are drawn.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// Every value the low end.
    Lo,
    /// Every value the high end.
    Hi,
    /// Low and high alternating.
    Alternate,
    /// Uniform.
    Uniform,
    /// A quarter low, a quarter high, the rest uniform.
    Extremes,
}

impl<'a> Gen<'a> {
    /// A generator over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        let mut u = Unstructured::new(data);
        let seed = u.arbitrary::<u64>().unwrap_or(0) | 1;
        Gen { u, seed }
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        self.u.int_in_range(lo..=hi).unwrap_or(lo)
    }

    /// A size in `lo..=hi`.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.u.int_in_range(lo..=hi).unwrap_or(lo)
    }

    /// A coin flip (false when exhausted).
    pub fn flip(&mut self) -> bool {
        self.u.arbitrary().unwrap_or(false)
    }

    /// One of `xs` (the first when exhausted).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.size(0, xs.len() - 1)]
    }

    /// A fill pattern.
    pub fn fill(&mut self) -> Fill {
        self.pick(&[Fill::Extremes, Fill::Uniform, Fill::Lo, Fill::Hi, Fill::Alternate])
    }

    /// A raw f32 from the fuzzer's bytes (any bit pattern: NaN, ±inf, subnormals).
    pub fn f32_bits(&mut self) -> f32 {
        f32::from_bits(self.u.arbitrary().unwrap_or(0))
    }

    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    /// `len` integers in `lo..=hi` drawn by `fill`.
    pub fn values(&mut self, len: usize, lo: i64, hi: i64, fill: Fill) -> Vec<i64> {
        let span = (hi - lo + 1) as u64;
        (0..len)
            .map(|i| match fill {
                Fill::Lo => lo,
                Fill::Hi => hi,
                Fill::Alternate => [lo, hi][i % 2],
                Fill::Uniform => lo + (self.next() % span) as i64,
                Fill::Extremes => match self.next() % 4 {
                    0 => lo,
                    1 => hi,
                    _ => lo + (self.next() % span) as i64,
                },
            })
            .collect()
    }

    /// `len` f32 values: mostly moderate, with the specials (NaN, ±inf, ±0, subnormals,
    /// huge, exact halves) mixed in when `specials`.
    pub fn floats(&mut self, len: usize, scale: f32, specials: bool) -> Vec<f32> {
        const SPECIAL: [f32; 12] =
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-45, -1e-40, f32::MAX, f32::MIN, 0.5, -2.5, 3.5];
        (0..len)
            .map(|_| {
                let r = self.next();
                if specials && r.is_multiple_of(8) {
                    SPECIAL[(r >> 8) as usize % SPECIAL.len()]
                } else {
                    // Uniform in [−4·scale, 4·scale), on a grid of scale/8 half the time
                    // (exact ties after division by a power-of-two scale).
                    let v = ((r >> 16) % 65536) as f32 / 8192.0 - 4.0;
                    if r & 2 == 0 { (v * 8.0).round() / 8.0 * scale } else { v * scale }
                }
            })
            .collect()
    }
}
