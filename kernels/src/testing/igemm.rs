//! The indirect entry points ([`GemmUkernel::indirect`]) against the exact reference.
//!
//! [`check_igemm_ukernel`] builds random indirection buffers — taps pointing anywhere in
//! a poisoned input buffer, repeated taps, padding taps that read the zero row — gathers
//! the same rows into a matrix itself, and requires the indirect entry's output to equal
//! [`gemm_i64`] on that matrix followed by [`output_stage_ref`], bit for bit, for every
//! output stage, on every `m × n` subtile, tap count 1–9, `kc` from `kr` to past 256, and
//! zero points and operands at their extremes. The raw GEMM entry of the same kernel is
//! tested by [`super::check_gemm_ukernel`]; this checks that reading rows tap by tap (and
//! the zero row) changes nothing.

use alloc::vec;
use alloc::vec::Vec;

use super::Rng;
use crate::pack::pack_b_kgroups;
use crate::reference::{RefOutput, gemm_i64, output_stage_ref, quantize_multiplier};
use crate::types::{
    GemmUkernel, IGEMM_ZERO_TAP, IgemmArgs, IgemmUkernelFn, Int8, OutputKind, OutputStage, QuantizedMultiplier,
    RequantMode,
};

/// What [`check_igemm_ukernel`] ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgemmTestSummary {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Indirect (A, B) signedness entries tested.
    pub combos: usize,
    /// Kernel calls, each checked element by element.
    pub calls: usize,
}

/// Poison bytes around the input and after the panel.
const TAIL: usize = 64;
/// Canary elements after each output row's `n` elements and after the tile.
const GUARD: usize = 8;

/// Runs every indirect entry of `kernel` (none: an empty summary) against the reference;
/// panics on the first mismatch, naming the kernel, the case and the element.
///
/// # Safety
/// As [`super::check_gemm_ukernel`]: the entries implement the [`IgemmArgs`] contract
/// and the CPU supports `kernel.isa`.
pub unsafe fn check_igemm_ukernel(kernel: &GemmUkernel) -> IgemmTestSummary {
    let mut s = IgemmTestSummary { kernel: kernel.name, ..IgemmTestSummary::default() };
    let Some(ind) = kernel.indirect else {
        return s;
    };
    let mut rng = Rng::new(Rng::seed_from_str(kernel.name) ^ 0x1d1e);
    for a_signed in [false, true] {
        for b_signed in [false, true] {
            let Some(f) = ind.run[a_signed as usize][b_signed as usize] else {
                continue;
            };
            s.combos += 1;
            // SAFETY: forwarded contract.
            s.calls += unsafe {
                match (a_signed, b_signed) {
                    (false, false) => combo::<u8, u8>(kernel, f, &mut rng),
                    (false, true) => combo::<u8, i8>(kernel, f, &mut rng),
                    (true, false) => combo::<i8, u8>(kernel, f, &mut rng),
                    (true, true) => combo::<i8, i8>(kernel, f, &mut rng),
                }
            };
        }
    }
    s
}

/// All cases of one signedness pair; returns the number of kernel calls.
///
/// # Safety
/// As [`check_igemm_ukernel`], for `f`.
unsafe fn combo<A: Int8, B: Int8>(kernel: &GemmUkernel, f: IgemmUkernelFn, rng: &mut Rng) -> usize {
    let (mr, nr, kr) = (kernel.mr, kernel.format.nr, kernel.format.kr);
    let mut calls = 0;
    let mut case = 0usize;
    for taps in [1usize, 2, 3, 9] {
        // Small taps, a K group past 16 of them, and multiples of 16 (the AVX2 exact
        // kernel's widening block) below and past its 128-element chunk and the
        // `vpmaddubsw` kernel's 256-element flip chunk.
        for kc in [kr, 2 * kr, 3 * kr, 16 * kr + kr, 32usize.next_multiple_of(kr), 272usize.next_multiple_of(kr)] {
            let mut shapes = vec![(mr, nr), (1, 1), (mr, 1), (1, nr)];
            for _ in 0..6 {
                shapes.push((1 + rng.below(mr), 1 + rng.below(nr)));
            }
            for (m, n) in shapes {
                case += 1;
                // SAFETY: forwarded contract.
                calls += unsafe { run_case::<A, B>(kernel, f, rng, m, n, taps, kc, case) };
            }
        }
    }
    calls
}

/// One random case through every output stage; returns the number of kernel calls.
///
/// # Safety
/// As [`check_igemm_ukernel`], for `f`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_case<A: Int8, B: Int8>(
    kernel: &GemmUkernel,
    f: IgemmUkernelFn,
    rng: &mut Rng,
    m: usize,
    n: usize,
    taps: usize,
    kc: usize,
    case: usize,
) -> usize {
    let k = taps * kc;
    let extreme = case.is_multiple_of(3);
    let val = |rng: &mut Rng, lo: i32, hi: i32| if extreme { if rng.chance(1, 2) { lo } else { hi } } else { rng.range_i32(lo, hi) };
    // The input: `pixels` rows of `kc` elements, `pitch` apart, in poison.
    let pixels = 1 + rng.below(6);
    let pitch = kc + rng.below(5);
    let lead = rng.below(8);
    let mut input: Vec<u8> = (0..lead + pixels * pitch + TAIL).map(|_| rng.next_u64() as u8).collect();
    for p in 0..pixels {
        for x in &mut input[lead + p * pitch..lead + p * pitch + kc] {
            *x = A::saturate_from(val(rng, A::MIN, A::MAX)).to_bits();
        }
    }
    let za = match case % 4 {
        0 => A::MIN,
        1 => A::MAX,
        _ => rng.range_i32(A::MIN, A::MAX),
    };
    let zero: Vec<u8> = vec![A::saturate_from(za).to_bits(); kc];
    // Offsets from `input + lead`: a pixel start, or a padding tap (about one in four).
    let ind: Vec<usize> = (0..m * taps)
        .map(|_| if rng.chance(1, 4) { IGEMM_ZERO_TAP } else { rng.below(pixels) * pitch })
        .collect();
    // The gathered matrix the reference sees.
    let mut a: Vec<A> = Vec::with_capacity(m * k);
    for &o in &ind {
        let src = if o == IGEMM_ZERO_TAP { &zero[..] } else { &input[lead + o..lead + o + kc] };
        a.extend(src.iter().map(|&b| A::from_bits(b)));
    }
    // A kernel with a precondition on the stored weights (`max_abs_stored_b`, e.g. AVX2
    // `vpmaddubsw`) gets only weights whose stored form `b − b_offset` meets it: the
    // packer never hands it others (DESIGN.md §2).
    let (b_lo, b_hi) = match kernel.max_abs_stored_b {
        None => (B::MIN, B::MAX),
        Some(lim) => {
            let off = kernel.b_offset_for(B::SIGNED);
            ((off - lim).max(B::MIN), (off + lim).min(B::MAX))
        }
    };
    let b: Vec<B> = (0..k * n).map(|_| B::saturate_from(val(rng, b_lo, b_hi))).collect();
    let zb: Vec<i32> = (0..n)
        .map(|_| match rng.below(4) {
            0 => 0,
            1 => B::MIN,
            2 => B::MAX,
            _ => rng.range_i32(B::MIN, B::MAX),
        })
        .collect();
    let mut acc = vec![0i64; m * n];
    gemm_i64(m, n, k, &a, k, za, &b, n, &zb, &mut acc, n);
    let bias: Vec<i32> = (0..n).map(|_| rng.range_i32(-(1 << 20), 1 << 20)).collect();

    // The driver's tables, in the kernel's view of the operands (see `check_gemm_ukernel`).
    let (a_off, b_off) = (kernel.a_offset_for(A::SIGNED), kernel.b_offset_for(B::SIGNED));
    let zb_k: Vec<i32> = zb.iter().map(|&z| z - b_off).collect();
    let zb_null = zb_k.iter().all(|&z| z == 0) && rng.chance(1, 2);
    let a_row_sum: Vec<i32> = (0..m).map(|i| crate::gemm_row_sum(&a[i * k..(i + 1) * k], a_off)).collect();
    let col_offset: Vec<i32> = (0..n)
        .map(|j| {
            let col_sum = (0..k).fold(0i32, |s, kk| s.wrapping_add(b[kk * n + j].to_i32() - b_off));
            crate::gemm_col_term(k, za + a_off, zb_k[j], col_sum, bias[j])
        })
        .collect();
    let format = kernel.format;
    let mut packed: Vec<u8> = (0..format.packed_bytes(k, n) + TAIL).map(|_| rng.next_u64() as u8).collect();
    pack_b_kgroups(format, &b, k, n, n, b_off, &mut packed);

    let scale: Vec<f32> = (0..n).map(|_| (1.0 + rng.unit_f64()) as f32 / (1u32 << (8 + rng.below(12))) as f32).collect();
    let bias_f32: Vec<f32> = (0..n).map(|_| ((rng.unit_f64() - 0.5) * 100.0) as f32).collect();
    let qm_double: Vec<QuantizedMultiplier> =
        scale.iter().map(|&s| quantize_multiplier(s as f64, RequantMode::TfliteDoubleRounding)).collect();
    let qm_single: Vec<QuantizedMultiplier> =
        scale.iter().map(|&s| quantize_multiplier(s as f64, RequantMode::SingleRounding)).collect();
    let stages = [
        (OutputKind::I32, RequantMode::Fp32),
        (OutputKind::F32, RequantMode::Fp32),
        (OutputKind::U8, RequantMode::Fp32),
        (OutputKind::I8, RequantMode::TfliteDoubleRounding),
        (OutputKind::U8, RequantMode::SingleRounding),
        (OutputKind::I8, RequantMode::Fp32),
    ];
    let mut calls = 0;
    for (kind, mode) in stages {
        let (lo, hi) = if kind == OutputKind::U8 { (0, 255) } else { (-128, 127) };
        let ozp = rng.range_i32(lo, hi);
        let (qmin, qmax) = if rng.chance(1, 3) { (ozp, hi) } else { (lo, hi) };
        let q8 = matches!(kind, OutputKind::U8 | OutputKind::I8);
        let qmult: &[QuantizedMultiplier] = match mode {
            RequantMode::Fp32 => &[],
            RequantMode::TfliteDoubleRounding => &qm_double,
            RequantMode::SingleRounding => &qm_single,
        };
        let uses_scale = kind == OutputKind::F32 || (q8 && mode == RequantMode::Fp32);
        let with_bias_f32 = kind == OutputKind::F32 && rng.chance(1, 2);
        let null_f = core::ptr::null::<f32>();
        let out = OutputStage {
            kind,
            mode,
            col_offset: col_offset.as_ptr(),
            scale: if uses_scale { scale.as_ptr() } else { null_f },
            bias_f32: if with_bias_f32 { bias_f32.as_ptr() } else { null_f },
            qmult: if qmult.is_empty() { core::ptr::null() } else { qmult.as_ptr() },
            out_zero_point: ozp,
            qmin,
            qmax,
        };
        let ro = RefOutput {
            kind,
            mode,
            bias_i32: Some(&bias),
            scale: if uses_scale { &scale } else { &[] },
            bias_f32: if with_bias_f32 { Some(&bias_f32) } else { None },
            qmult,
            out_zero_point: ozp,
            qmin,
            qmax,
        };
        // Output: m rows of ldc = n + GUARD words (4 bytes per element even for 8-bit
        // outputs, which use the low bytes of the words' byte view), canaries elsewhere.
        let esz = if q8 { 1 } else { 4 };
        let ldc = n + GUARD;
        let canary = 0xa5a5_a5a5u32;
        let mut words = vec![canary; (m * ldc * esz).div_ceil(4) + GUARD];
        let args = IgemmArgs {
            m,
            n,
            taps,
            kc,
            input: input[lead..].as_ptr(),
            indirection: ind.as_ptr(),
            zero: zero.as_ptr(),
            b: packed.as_ptr(),
            a_row_sum: if zb_null { core::ptr::null() } else { a_row_sum.as_ptr() },
            b_zero_point: if zb_null { core::ptr::null() } else { zb_k.as_ptr() },
            c: words.as_mut_ptr().cast(),
            ldc,
            out,
        };
        // SAFETY: `f` is sound on this CPU (function contract). The arguments satisfy
        // `IgemmArgs`: 1 ≤ m ≤ MR, 1 ≤ n ≤ NR, kc a positive multiple of kr; every
        // non-padding offset o has kc readable bytes at input + lead + o; the zero row has
        // kc bytes; the panel holds packed_bytes(k, n); the tables have n (or m) entries
        // or are null where the stage does not read them; the tile (m−1)·ldc + n
        // elements lies inside `words`; the true results plus bias fit in i32 (|acc| ≤
        // 9·272·255·255 + 2^20 < 2^31).
        unsafe { f(&args) };
        calls += 1;
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        for i in 0..m {
            for j in 0..ldc {
                let e = i * ldc + j;
                let got = if esz == 4 { words[e] } else { bytes[e] as u32 };
                if j >= n {
                    let c = if esz == 4 { canary } else { canary & 0xff };
                    assert_eq!(got, c, "{}: wrote past the tile at ({i}, {j})", kernel.name);
                    continue;
                }
                let want = output_stage_ref(acc[i * n + j], j, &ro);
                let want = if esz == 4 { want as u32 } else { want as u8 as u32 };
                assert_eq!(
                    got, want,
                    "{} {}x{} {kind:?} {mode:?}: m={m} n={n} taps={taps} kc={kc} za={za} zb={zb:?} ind={ind:?}: ({i}, {j}) exact {}",
                    kernel.name,
                    A::NAME,
                    B::NAME,
                    acc[i * n + j] + bias[j] as i64
                );
            }
        }
    }
    calls
}
