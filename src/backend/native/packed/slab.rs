//! One mapping for the packed weights of a [`Weights::pack`] call: from 2 MiB on,
//! 2 MiB-aligned and, on Linux, advised for transparent huge pages
//! ([`zeroed_map`]), so a forward that streams ~90 MB of
//! weights (ViT-S/16) walks a few dozen pages instead of ~22,000. Where the weights come
//! from memory rather than cache (another model or runtime ran in between), the page
//! walks of 4 KiB pages cost a forward about 2% (ViT-S/16, batch 1, one thread,
//! measured forward by forward against ONNX Runtime; in the commit that added this).
//!
//! [`SlabBuilder::new`] maps room for every weight at once (untouched pages cost no
//! memory); [`SlabBuilder::fill`] packs one weight into its place, so the caller can
//! release each plain copy as soon as it is packed; [`SlabBuilder::finish`] hands out
//! the [`Packed`] weights, which share the mapping.
//!
//! [`Weights::pack`]: super::super::weights::Weights::pack

use super::panels::{packed_len, write_panels, Packed};
use crate::backend::alloc::zeroed_map;
use crate::backend::BackendError;
use memmap2::MmapMut;
use std::sync::Arc;

/// Packed weights being written into one mapping.
pub struct SlabBuilder {
    map: MmapMut,
    /// Byte offset of the first weight in `map` (0, or a multiple of a huge page).
    base: usize,
    /// Per weight: `n`, `k` and its offset in floats from `base`.
    at: Vec<(usize, usize, usize)>,
}

impl SlabBuilder {
    /// Room for weights of these `[n, k]` shapes, each 64-byte aligned (an error past
    /// the memory limit).
    pub fn new(shapes: &[(usize, usize)]) -> Result<SlabBuilder, BackendError> {
        let mut at = Vec::with_capacity(shapes.len());
        let mut floats = 0;
        for &(n, k) in shapes {
            at.push((n, k, floats));
            // Whole panels of PANEL floats: every offset stays a multiple of 64 bytes.
            floats += packed_len(n, k);
        }
        let (map, base) = zeroed_map(floats * 4, "the packed weights")?;
        Ok(SlabBuilder { map, base, at })
    }

    /// Pack weight `i` (row-major `[n, k]`, its shape as given to [`SlabBuilder::new`]).
    pub fn fill(&mut self, i: usize, w: &[f32]) {
        let (n, k, off) = self.at[i];
        let dst = &mut floats_mut(&mut self.map[self.base..])[off..off + packed_len(n, k)];
        write_panels(dst, w, n, k);
    }

    /// The packed weights, in the order of their shapes.
    pub fn finish(self) -> Vec<Packed> {
        let map = Arc::new(self.map);
        let base = self.base;
        self.at.into_iter().map(|(n, k, off)| Packed::in_map(n, k, map.clone(), base / 4 + off)).collect()
    }
}

/// A mapping's bytes as floats (the mapping is page-aligned and `base` a multiple of 4).
fn floats_mut(bytes: &mut [u8]) -> &mut [f32] {
    // SAFETY: every bit pattern is an f32 and the middle part is aligned for it.
    let (head, mid, _) = unsafe { bytes.align_to_mut::<f32>() };
    assert!(head.is_empty(), "the mapping is aligned");
    mid
}

#[cfg(test)]
impl Packed {
    /// Pack the row-major `[n, k]` weight `w` alone (an error past the memory limit).
    pub fn new(w: &[f32], n: usize, k: usize) -> Result<Packed, BackendError> {
        let mut slab = SlabBuilder::new(&[(n, k)])?;
        slab.fill(0, w);
        Ok(slab.finish().pop().expect("one weight"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::gemm::tests::seq;
    use super::*;

    #[test]
    fn weights_in_one_mapping_are_aligned_and_unpack_to_themselves() {
        let shapes = [(33, 7), (16, 1), (1, 40), (70, 23)];
        let ws: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, &(n, k))| seq(n * k, i as u32 + 1)).collect();
        let mut b = SlabBuilder::new(&shapes).unwrap();
        for (i, w) in ws.iter().enumerate() {
            b.fill(i, w);
        }
        for ((pk, w), &(n, k)) in b.finish().iter().zip(&ws).zip(&shapes) {
            assert!(pk.fits(n, k));
            assert_eq!(pk.panels().panel(0) as usize % 64, 0, "64-byte aligned");
            assert_eq!(&pk.unpack().unwrap(), w);
            // The last panel's padding columns are zero.
            let last = unsafe { std::slice::from_raw_parts(pk.panels().panel(n.div_ceil(16) - 1), 16 * k) };
            let pad = if n % 16 != 0 { n % 16..16 } else { 0..0 };
            assert!(last.chunks(16).all(|r| r[pad.clone()].iter().all(|&v| v == 0.0)), "{n}x{k}: padding");
        }
    }
}
