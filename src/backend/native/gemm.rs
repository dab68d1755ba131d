//! Matrix products through the `gemm` crate (its AVX-512 kernels with the `x86-v4`
//! feature, AVX2+FMA otherwise, portable elsewhere; chosen at run time).
//!
//! Every product graft needs is `dst (+)= alpha · lhs · rhs` over row-major f32
//! matrices addressed by a pointer and a row stride, so views (a head's columns of a
//! fused qkv buffer, one group of a grouped linear, half of a weight's rows for one
//! thread) cost nothing. Weights `[out, in]` are read in place as the transposed
//! operand. `accumulate` adds into what `dst` holds: a bias broadcast into it
//! beforehand, or the residual stream.

use gemm::Parallelism;

/// A row-major matrix operand: `rows × cols` with row stride `rs` (elements);
/// `trans` reads it transposed (then it is `cols × rows` in memory).
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub trans: bool,
}

impl<'a> Operand<'a> {
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Operand { data, rs, trans: false }
    }

    /// A `[n, k]` weight used as the `k × n` right-hand side.
    pub fn transposed(data: &'a [f32], rs: usize) -> Self {
        Operand { data, rs, trans: true }
    }

    /// Element strides (row, column) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.rs as isize)
        } else {
            (self.rs as isize, 1)
        }
    }

    /// Elements the logical `r × c` matrix spans.
    fn span(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            return 0;
        }
        let (rr, cc) = if self.trans { (c, r) } else { (r, c) };
        (rr - 1) * self.rs + cc
    }
}

/// `dst[m, n] = alpha · lhs[m, k] · rhs[k, n] (+ dst if accumulate)`, single-threaded.
/// `dst` has row stride `ldd`. Panics on operands too short for their view (a plan bug).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    lhs: Operand,
    rhs: Operand,
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
) {
    // SAFETY: `dst` is an exclusive slice of the given length.
    unsafe { gemm_raw(m, n, k, alpha, lhs, rhs, dst.as_mut_ptr(), dst.len(), ldd, accumulate) }
}

/// [`gemm`] into `dst_len` elements at `dst`, of which only the `m × n` window (row
/// stride `ldd`) is written, so threads can write disjoint column blocks of one matrix.
///
/// # Safety
/// `dst..dst + dst_len` must be valid for writes, not overlap the operands, and no
/// other thread may access the window while this runs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    lhs: Operand,
    rhs: Operand,
    dst: *mut f32,
    dst_len: usize,
    ldd: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_len >= (m - 1) * ldd + n, "gemm: destination too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                std::slice::from_raw_parts_mut(dst.add(r * ldd), n).fill(0.0);
            }
        }
        return;
    }
    assert!(lhs.data.len() >= lhs.span(m, k), "gemm: lhs too short");
    assert!(rhs.data.len() >= rhs.span(k, n), "gemm: rhs too short");
    let (lrs, lcs) = lhs.strides();
    let (rrs, rcs) = rhs.strides();
    // SAFETY: the asserts above keep every addressed element inside its buffer; the
    // caller guarantees the destination window is ours.
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        lhs.data.as_ptr(),
        lcs,
        lrs,
        rhs.data.as_ptr(),
        rcs,
        rrs,
        1.0,
        alpha,
        false,
        false,
        false,
        Parallelism::None,
    )
}

/// The part `[lo, hi)` of `0..n` that worker `t` of `threads` computes, in whole
/// blocks of `align` (so every thread count cuts at the same kind of boundary).
pub fn part(n: usize, t: usize, threads: usize, align: usize) -> (usize, usize) {
    let blocks = n.div_ceil(align);
    let lo = (blocks * t / threads * align).min(n);
    let hi = (blocks * (t + 1) / threads * align).min(n);
    (lo, hi)
}

/// Chunk `t` of `chunks` of `0..n` in whole blocks of `align`, the chunks' sizes
/// falling linearly with `t` (the first `chunks` times the last): the pool hands
/// chunks out in index order, so a region's last claims are its smallest and the
/// participants finish within a small chunk of each other instead of half an even
/// one apart. (Sizes are rounded to whole blocks, so neighbours may differ by one.)
pub fn falling(n: usize, t: usize, chunks: usize, align: usize) -> (usize, usize) {
    let blocks = n.div_ceil(align);
    // Chunk i weighs chunks − i; the first t chunks weigh t·chunks − t(t−1)/2.
    let before = |t: usize| t * chunks - t * t.saturating_sub(1) / 2;
    let total = before(chunks);
    let at = |t: usize| (blocks * before(t) / total * align).min(n);
    (at(t), at(t + 1))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Deterministic test values in [-1, 1] (97 levels), different per `seed`.
    pub(in crate::backend::native) fn seq(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 97) as f32 / 48.0 - 1.0)
            .collect()
    }

    #[test]
    fn linear_matches_naive_with_bias_accumulation_and_strides() {
        let (m, n, k) = (5, 7, 9);
        let x = seq(m * 11, 1); // row stride 11
        let w = seq(n * k, 2);
        let mut y = vec![0.5f32; m * 8]; // row stride 8, accumulate onto 0.5
        gemm(m, n, k, 1.0, Operand::rows(&x, 11), Operand::transposed(&w, k), &mut y, 8, true);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 0.5 + (0..k).map(|p| x[i * 11 + p] as f64 * w[j * k + p] as f64).sum::<f64>();
                assert!((y[i * 8 + j] as f64 - want).abs() < 1e-5, "{i},{j}");
            }
            assert_eq!(y[i * 8 + 7], 0.5, "columns past n untouched");
        }
    }

    #[test]
    fn column_split_is_bit_identical() {
        let (m, n, k) = (3, 50, 40);
        let x = seq(m * k, 3);
        let w = seq(n * k, 4);
        let mut one = vec![0f32; m * n];
        gemm(m, n, k, 0.5, Operand::rows(&x, k), Operand::transposed(&w, k), &mut one, n, false);
        let mut two = vec![f32::NAN; m * n];
        for t in 0..3 {
            let (lo, hi) = part(n, t, 3, 16);
            gemm(
                m,
                hi - lo,
                k,
                0.5,
                Operand::rows(&x, k),
                Operand::transposed(&w[lo * k..], k),
                &mut two[lo..],
                n,
                false,
            );
        }
        assert_eq!(one, two);
    }

    #[test]
    fn falling_chunks_tile_the_range_in_aligned_pieces_that_shrink() {
        for (n, align) in [(12 * 32, 32), (197, 14), (1576, 14), (1152, 32), (7, 16), (0, 8), (100, 1)] {
            for chunks in 1..=12 {
                let parts: Vec<_> = (0..chunks).map(|t| falling(n, t, chunks, align)).collect();
                assert_eq!(parts[0].0, 0);
                assert_eq!(parts[chunks - 1].1, n, "{n} in {chunks}: the last chunk ends the range");
                for w in parts.windows(2) {
                    assert_eq!(w[0].1, w[1].0, "{n} in {chunks}: contiguous");
                }
                for &(lo, hi) in &parts {
                    assert!(lo <= hi && lo % align == 0, "{n} in {chunks}: {lo}..{hi} on whole blocks");
                }
                // Where there are blocks to spare, the last chunk is at most a third of the first.
                let blocks = n.div_ceil(align);
                let size = |(lo, hi): (usize, usize)| hi - lo;
                if chunks >= 4 && blocks >= 4 * chunks {
                    assert!(3 * size(parts[chunks - 1]) <= size(parts[0]), "{n} in {chunks}: {parts:?}");
                }
            }
        }
    }

    #[test]
    fn empty_reduction_zeroes_or_keeps() {
        let mut y = vec![3.0f32; 4];
        gemm(2, 2, 0, 1.0, Operand::rows(&[], 0), Operand::rows(&[], 0), &mut y, 2, true);
        assert_eq!(y, [3.0; 4]);
        gemm(2, 2, 0, 1.0, Operand::rows(&[], 0), Operand::rows(&[], 0), &mut y, 2, false);
        assert_eq!(y, [0.0; 4]);
    }
}
