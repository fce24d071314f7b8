//! Codebook GEMM: random level sets (PoT, APoT, learned tables, 4 and 5 bits, and
//! invalid ones, which must be refused), random codes, shapes and zero points; pack →
//! every kernel of every family at every ISA against dequantize-to-grid → reference.

use qkern::codebook::CodebookWeights;
use qkern::quant::{ApotFormat, LevelParams, LevelSet, PackedCodes, PotFormat};
use qkern::{Activations, Context, Int8, MatrixMut, MatrixRef};
use qkern_kernels::reference::codebook_gemm_i64;

use super::common::Gen;

pub fn run(data: &[u8]) {
    let mut g = Gen::new(data);
    let set = match g.size(0, 5) {
        0 => PotFormat::signed(g.size(3, 5) as u32).ok().map(|f| f.level_set()),
        1 => ApotFormat::weight(g.pick(&[4, 5])).ok().map(|f| f.level_set()),
        2 => ApotFormat::activation(g.pick(&[4, 5])).ok().map(|f| f.level_set()),
        _ => {
            // A learned table: any count, any values (unsorted and duplicates must be
            // refused; values past the i8 grid run on the i16-table kernels).
            let bits = g.pick(&[4u32, 5, 3, 6]);
            let n = g.size(0, 34);
            let fill = g.fill();
            let levels: Vec<i16> = g.values(n, -140, 140, fill).into_iter().map(|v| v as i16).collect();
            LevelSet::codebook_i16(bits, &levels).ok()
        }
    };
    let Some(set) = set else { return };
    if set.grid().is_none() {
        return;
    }
    if g.flip() { case::<u8>(&mut g, &set) } else { case::<i8>(&mut g, &set) }
}

fn case<A: Int8>(g: &mut Gen, set: &LevelSet) {
    let (m, n, k) = match g.size(0, 5) {
        0 => (g.size(1, 2), g.size(1, 70), g.size(1, 3000)),
        _ => (g.size(1, 20), g.size(1, 80), g.size(0, 300)),
    };
    let nc = set.num_codes() as i64;
    let fill = g.fill();
    let codes: Vec<u8> = g.values(k * n, 0, nc - 1, fill).into_iter().map(|v| v as u8).collect();
    let params = LevelParams::per_tensor(set.clone(), 0.125).unwrap();
    let p = PackedCodes::pack(&codes, k, n, &params).unwrap();
    let lda = k + g.size(0, 2);
    let fill = g.fill();
    let a: Vec<A> = g.values(m * lda, A::MIN as i64, A::MAX as i64, fill).into_iter().map(|v| A::saturate_from(v as i32)).collect();
    let za = A::saturate_from(g.pick(&[A::MIN, A::MAX, 0]));
    let grid: Vec<i16> = set.grid().unwrap().values().to_vec();
    let mut want = vec![0i64; m * n];
    codebook_gemm_i64(m, n, k, &a, lda, za.to_i32(), |kk, j| p.code(kk, j).unwrap(), &grid, &mut want, n);
    let fits = want.iter().all(|v| i32::try_from(*v).is_ok());
    for &isa in &qkern::dispatch::cpu().isas {
        let ctx = Context::for_isa(isa).unwrap();
        for kern in ctx.kernels().codebook_candidates.clone() {
            let Ok(w) = CodebookWeights::with_kernel(&ctx, &p, kern.name) else { continue };
            let mut c = vec![0i32; m * n];
            match ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, m, k).with_stride(lda), za, 1.0), &w, None, MatrixMut::new(&mut c, m, n)) {
                Ok(()) => {
                    for (i, (&got, &wv)) in c.iter().zip(&want).enumerate() {
                        assert_eq!(got as i64, wv, "{isa:?} {} C[{}][{}] m={m} n={n} k={k}", kern.name, i / n, i % n);
                    }
                }
                Err(e) => assert!(!fits, "{isa:?} {}: error {e} although every result fits", kern.name),
            }
        }
    }
}
