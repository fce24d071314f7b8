//! `QKERN_CODEBOOK_KERNEL=shift` through the default constructors: the shift kernels run
//! the PoT / APoT level sets, a learned codebook falls back to the lookup kernels, and
//! the results stay exact. One test in its own binary, so setting the variable races
//! with nothing.

use qkern::codebook::{CodebookFamily, CodebookWeights};
use qkern::quant::{ApotFormat, LevelParams, LevelSet, PackedCodes, PotFormat};
use qkern::{Activations, Context, MatrixMut, MatrixRef};
use qkern_kernels::reference::codebook_gemm_i64;

#[test]
fn env_selects_shift_and_falls_back_to_lut() {
    // SAFETY: the only test of this binary, before any thread reads the environment.
    unsafe { std::env::set_var("QKERN_CODEBOOK_KERNEL", "shift") };
    let ctx = Context::new().unwrap();
    let (k, n, m) = (300usize, 37usize, 5usize);
    for (name, set, shift) in [
        ("pot4", PotFormat::signed(4).unwrap().level_set(), true),
        ("apot4", ApotFormat::weight(4).unwrap().level_set(), true),
        ("iq4_nl", LevelSet::codebook_i16(4, &[-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]).unwrap(), false),
    ] {
        let nc = set.num_codes();
        let codes: Vec<u8> = (0..k * n).map(|i| ((i * 7 + i / 13) % nc) as u8).collect();
        let p = PackedCodes::pack(&codes, k, n, &LevelParams::per_channel(set.clone(), 1, vec![0.5; n]).unwrap()).unwrap();
        let w = CodebookWeights::new(&p).unwrap();
        let kernel = ctx.kernels().codebook_candidates.iter().find(|c| c.name == w.kernel_name()).unwrap();
        let want = if shift { CodebookFamily::Shift } else { CodebookFamily::Lut };
        assert_eq!(kernel.family, want, "{name}: {}", kernel.name);
        let a: Vec<u8> = (0..m * k).map(|i| (i * 31 % 256) as u8).collect();
        let mut c = vec![0i32; m * n];
        ctx.codebook_gemm_i32(Activations::new(MatrixRef::new(&a, m, k), 3u8, 1.0), &w, None, MatrixMut::new(&mut c, m, n)).unwrap();
        let grid = set.grid().unwrap().values().to_vec();
        let mut r = vec![0i64; m * n];
        codebook_gemm_i64(m, n, k, &a, k, 3, |kk, j| p.code(kk, j).unwrap(), &grid, &mut r, n);
        assert_eq!(c.iter().map(|&v| v as i64).collect::<Vec<_>>(), r, "{name}: {}", kernel.name);
    }
}
