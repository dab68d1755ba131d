//! The raw form of an input declared `normalized` (`input image: f32[B, 3, 224, 224]
//! normalized imagenet`): besides the normalised f32 values the declaration names, such
//! an input accepts the raw `u8` pixel values `v` they came from, and the backend
//! computes `(v / 255 − mean[c]) / std[c]` on its device as it places the input (`c`
//! the index along the channel axis). The data pipeline then hands over a quarter of
//! the bytes and normalises nothing itself.
//!
//! The values are those of [`PixelNorm::lut`], the table the data pipeline's own
//! normalisation reads ([`crate::stats::norm_lut`]), so both forms give the model the
//! same bits.

use serde::Serialize;

/// Per-channel statistics and the axis (of the full input shape, batch included) that
/// indexes them; one channel applies to every element.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PixelNorm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub axis: usize,
}

impl PixelNorm {
    /// The statistics of a declaration over an input of `shape` (fixed dims, `None`
    /// for symbols): the channel axis is the first dim after the batch whose size is
    /// the number of channels. `None` where no dim is.
    pub fn over(mean: &[f32], std: &[f32], shape: &[Option<i64>]) -> Option<PixelNorm> {
        let c = mean.len() as i64;
        let axis = match c {
            1 => 0,
            _ => (1..shape.len()).find(|&i| shape[i] == Some(c))?,
        };
        Some(PixelNorm { mean: mean.to_vec(), std: std.to_vec(), axis })
    }

    /// Every channel's 256 values, channel-major.
    pub fn lut(&self) -> Vec<[f32; 256]> {
        crate::stats::norm_lut(&self.mean, &self.std)
    }

    /// The channel count.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// `u8` values laid out in `shape`, normalised into `out` (one value per byte).
    pub fn apply(&self, shape: &[i64], bytes: &[u8], out: &mut [f32]) {
        let lut = self.lut();
        let inner: usize = shape.iter().skip(self.axis + 1).map(|&d| d.max(0) as usize).product::<usize>().max(1);
        for (i, (o, &v)) in out.iter_mut().zip(bytes).enumerate() {
            *o = lut[(i / inner) % lut.len()][v as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_axis_is_the_first_dim_after_the_batch_of_that_size() {
        let m = [0.5f32; 3];
        let over = |s: &[Option<i64>]| PixelNorm::over(&m, &m, s).map(|n| n.axis);
        assert_eq!(over(&[None, Some(3), Some(224), Some(224)]), Some(1));
        assert_eq!(over(&[None, Some(16), Some(3), Some(224), Some(224)]), Some(2));
        // A batch of 3 is not the channel axis.
        assert_eq!(over(&[Some(3), Some(4), Some(4)]), None);
        assert_eq!(PixelNorm::over(&[0.0], &[1.0], &[None, Some(7)]).map(|n| n.axis), Some(0));
    }

    #[test]
    fn apply_indexes_channels_along_the_axis() {
        let n = PixelNorm { mean: vec![0.0, 1.0], std: vec![1.0, 1.0], axis: 1 };
        // [1, 2, 3]: channel 0 then channel 1, three values each.
        let mut out = [0f32; 6];
        n.apply(&[1, 2, 3], &[0, 255, 51, 0, 255, 51], &mut out);
        let fifth = 51f32 / 255.0;
        assert_eq!(out, [0.0, 1.0, fifth, -1.0, 0.0, fifth - 1.0]);
    }
}
