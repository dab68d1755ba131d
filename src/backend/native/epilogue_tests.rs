//! The GELU epilogue of linear layers ([`Epilogue::Gelu`]) against the unfused path:
//! the same bits as the product followed by the elementwise GELU group, for the packed
//! kernel (ragged rows and columns, with and without bias, one and two column parts).
//! End to end through lowering: `tests/native_lowering.rs`.

use super::ew::{EwBroadcast, EwCompiler, EwGroup, EwInstr, EwStrategy, EwValue};
use super::gemm::part;
use super::gemm::tests::seq;
use super::math::{self, SimdLevel};
use super::packed::{self, Packed, PANEL};
use super::program::Epilogue;

/// Values that reach every branch of the GELU: both signs of zero, tiny, moderate,
/// the cut-offs of its `erf` (±3.925·√2) and of the result (-10), huge, ±∞ and NaN.
fn edge_values() -> Vec<f32> {
    let mut v = vec![0.0, -0.0, 1e-30, -1e-30, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e-7, -1e-7];
    v.extend([5.55, -5.55, 5.551, -5.551, 10.0, -10.0, -10.001, -9.999, 20.0, -20.0, 1e30, -1e30]);
    v.extend([f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN]);
    // A wide sweep: every binade from 2⁻²⁰ to 2²⁰, both signs, a few mantissas each.
    for e in -20..=20 {
        for m in [1.0f32, 1.1, 1.37, 1.5, 1.999] {
            let x = m * 2f32.powi(e);
            v.extend([x, -x]);
        }
    }
    v.extend(seq(4000, 9).iter().map(|x| x * 7.0));
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The elementwise kernels' GELU (one `[rows, cols]` group, as lowering compiles it).
fn gelu_group(strategy: EwStrategy, rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let group = EwGroup {
        inputs: vec![EwBroadcast::Full],
        body: vec![EwInstr::Gelu(EwValue::Input(0))],
        outputs: vec![EwValue::Instr(0)],
    };
    let kernel = EwCompiler::new(strategy).unwrap().compile(&group).unwrap();
    let mut out = vec![f32::NAN; rows * cols];
    kernel.run(rows, cols, &[x], &mut [&mut out]);
    out
}

#[test]
fn the_gelu_is_the_same_bits_however_a_buffer_is_sliced() {
    // The epilogue passes 6×16 tiles; the groups pass L1 blocks (the JIT its scratch
    // slots) or whole buffers. A vector body and a scalar tail must agree.
    let x = edge_values();
    for level in SimdLevel::all_available() {
        let mut whole = x.clone();
        math::gelu_erf_inplace_at(level, &mut whole);
        for chunk in [1, 3, 7, 8, 16, 96, 1000] {
            let mut y = x.clone();
            y.chunks_mut(chunk).for_each(|c| math::gelu_erf_inplace_at(level, c));
            assert_eq!(bits(&y), bits(&whole), "{level:?}, chunks of {chunk}");
        }
        if level == math::best() {
            for s in [EwStrategy::Jit, EwStrategy::Blocks, EwStrategy::Unfused] {
                assert_eq!(bits(&gelu_group(s, x.len(), 1, &x)), bits(&whole), "{s:?}");
                let cols = 16;
                let rows = x.len() / cols;
                let got = gelu_group(s, rows, cols, &x[..rows * cols]);
                assert_eq!(bits(&got), bits(&whole[..rows * cols]), "{s:?} in rows of {cols}");
            }
        }
    }
}

#[test]
fn the_packed_linears_gelu_epilogue_gives_the_bits_of_the_gelu_group_after_it() {
    let levels: Vec<SimdLevel> = SimdLevel::all_available().into_iter().filter(|&l| packed::available(l)).collect();
    // Rows that are not a multiple of the tile height, columns not a multiple of the
    // panel, and a reduction past the row block.
    for (m, n, k) in [(1, 1, 1), (7, 37, 19), (13, 64, 40), (29, 50, 300), (8, 16, 1100)] {
        let ldx = k + 3;
        let mut x = seq(m * ldx, 1);
        // Rows with huge, infinite and NaN inputs give outputs at the GELU's edges.
        for (row, v) in [(1, 1e30), (2, f32::INFINITY), (3, f32::NAN), (4, -1e25)] {
            if row < m {
                x[row * ldx] = v;
            }
        }
        if m > 5 {
            x[5 * ldx..5 * ldx + k].fill(0.0);
        }
        let w: Vec<f32> = seq(n * k, 2).iter().map(|v| v * 3.0).collect();
        let mut bias = seq(n, 3);
        bias[0] = -0.0;
        let pk = Packed::new(&w, n, k).unwrap();
        for &level in &levels {
            for b in [None, Some(&bias[..])] {
                // The unfused path: the product into `y` (row stride `n`), then the group.
                let mut plain = vec![f32::NAN; m * n];
                let len = plain.len();
                // SAFETY: each call writes its own columns of `plain`.
                unsafe {
                    packed::linear(
                        level,
                        m,
                        &x,
                        ldx,
                        pk.panels(),
                        (0, n),
                        b,
                        (plain.as_mut_ptr(), len, n),
                        Epilogue::None,
                    )
                };
                let want = gelu_group(EwStrategy::Jit, m, n, &plain);
                for parts in [1, 2] {
                    let ldy = n + 5;
                    let mut y = vec![f32::NAN; m * ldy];
                    let len = y.len();
                    for t in 0..parts {
                        let (c0, c1) = part(n, t, parts, PANEL);
                        if c0 < c1 {
                            let dst = (unsafe { y.as_mut_ptr().add(c0) }, len - c0, ldy);
                            // SAFETY: columns [c0, c1) of every row, this part's alone.
                            unsafe { packed::linear(level, m, &x, ldx, pk.panels(), (c0, c1), b, dst, Epilogue::Gelu) };
                        }
                    }
                    for i in 0..m {
                        let got = bits(&y[i * ldy..i * ldy + n]);
                        assert_eq!(
                            got,
                            bits(&want[i * n..(i + 1) * n]),
                            "{m}x{n}x{k} row {i}, {parts} parts, bias {}",
                            b.is_some()
                        );
                        assert!(y[i * ldy + n..(i + 1) * ldy].iter().all(|v| v.is_nan()), "past the last column");
                    }
                }
            }
        }
    }
}
