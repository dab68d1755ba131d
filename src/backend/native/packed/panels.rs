//! The packed form of a linear layer's weight and what both kernels share: column
//! panels ([`Packed`], and [`Panels`], the view the kernels read, also over panels an
//! operator packs into its scratch per call), the arguments of one call's tiles ([`Tiles`]), and the row block of
//! `x` kept in L2.

use crate::backend::alloc::reserve;
use crate::backend::BackendError;
use memmap2::MmapMut;
use std::sync::Arc;

/// Output columns per panel.
pub const PANEL: usize = 16;

/// A `[n, k]` weight in column panels (see the module doc of [`super`]), in a mapping
/// shared with the other weights packed with it ([`super::slab`]).
pub struct Packed {
    pub n: usize,
    pub k: usize,
    map: Arc<MmapMut>,
    /// Index of the first panel's first element in the mapping's floats (64-byte aligned).
    start: usize,
}

/// Floats of an `[n, k]` weight's panels: whole panels, so consecutive weights stay
/// 64-byte aligned.
pub fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(PANEL) * PANEL * k
}

/// The panels of the row-major `[n, k]` weight `w` into `dst` (zeroed, [`packed_len`]
/// floats): the padding columns of the last panel stay zero.
pub(super) fn write_panels(dst: &mut [f32], w: &[f32], n: usize, k: usize) {
    assert!(w.len() >= n * k && dst.len() >= packed_len(n, k), "pack: weight or room too short");
    for (j, row) in w[..n * k].chunks_exact(k.max(1)).enumerate().take(n) {
        let base = (j / PANEL) * PANEL * k + j % PANEL;
        for (p, &v) in row.iter().enumerate() {
            dst[base + p * PANEL] = v;
        }
    }
}

impl Packed {
    /// Whether this is the packed form of an `n × k` weight.
    pub fn fits(&self, n: usize, k: usize) -> bool {
        self.n == n && self.k == k
    }

    /// The `[n, k]` weight whose panels start at float `start` of `map` (64-byte aligned).
    pub(super) fn in_map(n: usize, k: usize, map: Arc<MmapMut>, start: usize) -> Packed {
        Packed { n, k, map, start }
    }

    fn floats(&self) -> &[f32] {
        // SAFETY: every bit pattern is an f32; the mapping is page-aligned.
        let (head, mid, _) = unsafe { self.map.align_to::<f32>() };
        assert!(head.is_empty(), "the mapping is aligned");
        mid
    }

    /// The row-major `[n, k]` weight back (exactly the packed values).
    pub fn unpack(&self) -> Result<Vec<f32>, BackendError> {
        let (n, k) = (self.n, self.k);
        let data = &self.floats()[self.start..];
        let mut w = Vec::new();
        reserve(&mut w, n * k, "an unpacked weight")?;
        w.extend((0..n * k).map(|i| {
            let (j, p) = (i / k.max(1), i % k.max(1));
            data[(j / PANEL) * PANEL * k + p * PANEL + j % PANEL]
        }));
        Ok(w)
    }

    /// Bytes of its panels.
    pub fn bytes(&self) -> usize {
        packed_len(self.n, self.k) * 4
    }

    /// The view the kernels read.
    pub fn panels(&self) -> Panels<'_> {
        Panels { data: &self.floats()[self.start..self.start + packed_len(self.n, self.k)], n: self.n, k: self.k }
    }
}

/// The panels of an `[n, k]` weight, wherever they lie: a [`Packed`] weight's, or ones
/// an operator packed into its scratch ([`pack_rows`], [`pack_columns`]).
#[derive(Clone, Copy)]
pub struct Panels<'a> {
    data: &'a [f32],
    pub n: usize,
    pub k: usize,
}

impl<'a> Panels<'a> {
    /// The panels of an `[n, k]` weight at the start of `data` ([`packed_len`] floats,
    /// 64-byte aligned: the kernels load whole lines with aligned loads).
    pub fn new(data: &'a [f32], n: usize, k: usize) -> Panels<'a> {
        assert!(data.len() >= packed_len(n, k), "panels: {} floats for a {n}×{k} weight", data.len());
        assert_eq!(data.as_ptr() as usize % 64, 0, "panels: 64-byte aligned");
        Panels { data, n, k }
    }

    pub(super) fn panel(&self, j: usize) -> *const f32 {
        self.data[j * PANEL * self.k..].as_ptr()
    }
}

/// A 16 × 16 block transposed, times a scale: `dst[p * PANEL + c] = scale · src[c * ld +
/// p]` for `c, p < 16` (`src` valid for 16 rows of stride `ld`, `dst` for 256 floats).
pub(super) type Transpose16 = unsafe fn(src: *const f32, ld: usize, dst: *mut f32, scale: f32);

/// Panels of the `[n, k]` weight whose row `j` is `src[j * ld..j * ld + k]`, each value
/// times `scale`, into `dst` ([`packed_len`]`(n, k)` floats; the padding columns zeroed).
/// Attention packs a head's keys so, the `1/√d` folded in. Whole 16 × 16 blocks go
/// through `block` where there is one (a kernel's in-register transpose), the rest value
/// by value: the same products in the same places either way.
///
/// # Safety
/// `block`, where given, must run on this CPU (its instruction set available).
pub(super) unsafe fn pack_rows(
    dst: &mut [f32],
    src: &[f32],
    (ld, n, k): (usize, usize, usize),
    scale: f32,
    block: Option<Transpose16>,
) {
    assert!(n == 0 || src.len() >= (n - 1) * ld + k, "pack: source too short");
    let dst = &mut dst[..packed_len(n, k)];
    for (j0, panel) in (0..n).step_by(PANEL).zip(dst.chunks_exact_mut(PANEL * k.max(1))) {
        let cols = PANEL.min(n - j0);
        prefetch_rows(src, (j0 + PANEL..n.min(j0 + 2 * PANEL), ld), k);
        let done = match block {
            Some(f) if cols == PANEL => {
                let whole = k / PANEL * PANEL;
                for p0 in (0..whole).step_by(PANEL) {
                    // SAFETY: rows j0..j0 + 16 hold k ≥ p0 + 16 values each (asserted
                    // above); the panel's lines p0..p0 + 16 are 256 floats of `panel`;
                    // the caller vouches that `f` runs on this CPU.
                    unsafe { f(src.as_ptr().add(j0 * ld + p0), ld, panel.as_mut_ptr().add(p0 * PANEL), scale) };
                }
                whole
            }
            _ => 0,
        };
        if cols < PANEL {
            panel.fill(0.0);
        }
        // Row by row: each read is a contiguous run, each write one lane of a line.
        for c in 0..cols {
            let row = &src[(j0 + c) * ld + done..(j0 + c) * ld + k];
            for (line, &v) in panel[done * PANEL..].chunks_exact_mut(PANEL).zip(row) {
                line[c] = v * scale;
            }
        }
    }
}

/// Panels of the transpose of the `[k, n]` matrix whose row `p` starts at `src[p *
/// ld]` (the `[n, k]` weight of a product by that matrix) into `dst`
/// ([`packed_len`]`(n, k)` floats; the padding columns zeroed): each panel's line `p`
/// is a run of row `p`. Attention packs a head's values so.
pub fn pack_columns(dst: &mut [f32], src: &[f32], ld: usize, k: usize, n: usize) {
    assert!(k == 0 || src.len() >= (k - 1) * ld + n, "pack: source too short");
    let dst = &mut dst[..packed_len(n, k)];
    // Row by row, so each row of `src` is read once, whole (its rows lie far apart in a
    // fused qkv buffer), its runs going to the panels' lines `p`.
    for p in 0..k {
        prefetch_rows(src, (p + AHEAD..k.min(p + AHEAD + 1), ld), n);
        let row = &src[p * ld..p * ld + n];
        for (j0, run) in (0..n).step_by(PANEL).zip(row.chunks(PANEL)) {
            let at = (j0 * k + p * PANEL)..(j0 * k + (p + 1) * PANEL);
            let line = &mut dst[at];
            line[..run.len()].copy_from_slice(run);
            line[run.len()..].fill(0.0);
        }
    }
}

/// Rows [`pack_columns`] reads ahead of the one it copies.
const AHEAD: usize = 8;

/// Ask for the first `len` floats of each row in `rows` (stride `ld`) of `src` into L1
/// ahead of their use. The packers read a head's keys and values from a fused qkv
/// buffer whose rows lie kilobytes apart, past L2 for long sequences, one row's few
/// lines at a time: without the hint each row waited on its load.
fn prefetch_rows(src: &[f32], (rows, ld): (std::ops::Range<usize>, usize), len: usize) {
    #[cfg(target_arch = "x86_64")]
    for j in rows {
        for at in (j * ld..j * ld + len).step_by(16) {
            // SAFETY: a hint, which cannot fault, at an element of `src` (bounds-checked).
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(src[at..].as_ptr().cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, rows, ld, len);
}

/// Rows per tile of the AVX2 kernel.
pub const MR: usize = 6;

/// Rows of `x` kept in L2 while the panels pass over them: about `bytes` of `x`, whole
/// tiles of `mr` rows.
pub(super) fn row_block(k: usize, mr: usize, bytes: usize) -> usize {
    ((bytes / 4 / k.max(1)) / mr).max(1) * mr
}

/// What every tile of one call shares.
pub(super) struct Tiles {
    pub k: usize,
    pub x: *const f32,
    pub ldx: usize,
    /// Null: no bias.
    pub bias: *const f32,
    /// `y[0, c0]`.
    pub dst: *mut f32,
    pub ldy: usize,
    pub c0: usize,
    /// Apply the GELU to each block of the output ([`Epilogue::Gelu`]).
    pub gelu: bool,
}
