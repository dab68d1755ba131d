//! The Kaldi-compatible log-mel filter bank, as `torchaudio.compliance.kaldi.fbank`
//! computes it with the settings transformers' `ASTFeatureExtractor` passes
//! (`sample_frequency=16000, window_type="hanning", num_mel_bins=128`, every other
//! option at Kaldi's default):
//!
//! - frames of 25 ms every 10 ms, `snip_edges` (only whole frames: `1 + (n − 400) / 160`);
//! - per frame: the mean removed (DC offset), pre-emphasis 0.97 (`x[i] −= 0.97 x[i−1]`,
//!   `x[0] −= 0.97 x[0]`), a symmetric Hann window, zero-padded to 512 points;
//! - the power spectrum (`realfft`), 128 triangular filters evenly spaced on Kaldi's
//!   mel scale (`1127 ln(1 + f/700)`) from 20 Hz to the Nyquist frequency, the
//!   Nyquist bin weighted 0;
//! - `ln(max(energy, f32::EPSILON))`; no dither, no energy column.
//!
//! The waveform is in `[-1, 1]` (not scaled by 2^15, as the feature extractor passes
//! it). [`ast_features`] then pads with zeros or cuts to the model's frame count and
//! normalises, `(x − mean) / (2 · std)` with AudioSet's mean −4.2677393 and std
//! 4.5689974. Computed in f64, returned as f32.

use realfft::RealFftPlanner;

/// The filter-bank settings (Kaldi's defaults otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct FbankOptions {
    pub sample_rate: u32,
    pub mel_bins: usize,
    /// Frames per second = 1000 / shift.
    pub frame_shift_ms: f64,
    pub frame_length_ms: f64,
    pub low_freq: f64,
}

impl Default for FbankOptions {
    fn default() -> FbankOptions {
        FbankOptions { sample_rate: 16000, mel_bins: 128, frame_shift_ms: 10.0, frame_length_ms: 25.0, low_freq: 20.0 }
    }
}

/// AudioSet's statistics, as `ASTFeatureExtractor` normalises with them.
pub use crate::stats::{AST_MEAN, AST_STD};

fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// The filter bank: `mel_bins` rows of `fft / 2 + 1` weights.
fn mel_banks(o: &FbankOptions, fft: usize) -> Vec<Vec<f64>> {
    let half = fft / 2;
    let nyquist = o.sample_rate as f64 / 2.0;
    let width = o.sample_rate as f64 / fft as f64;
    let (lo, hi) = (mel(o.low_freq), mel(nyquist));
    let delta = (hi - lo) / (o.mel_bins + 1) as f64;
    (0..o.mel_bins)
        .map(|b| {
            let left = lo + b as f64 * delta;
            let center = left + delta;
            let right = center + delta;
            let mut row = vec![0.0; half + 1];
            // Kaldi leaves the Nyquist bin out of every filter.
            for (i, w) in row.iter_mut().enumerate().take(half) {
                let m = mel(width * i as f64);
                let up = (m - left) / (center - left);
                let down = (right - m) / (right - center);
                *w = up.min(down).max(0.0);
            }
            row
        })
        .collect()
}

/// Log-mel energies, `frames × mel_bins`, row-major (one row per 10 ms frame).
pub fn fbank(wave: &[f32], o: &FbankOptions) -> Vec<f32> {
    let len = (o.sample_rate as f64 * o.frame_length_ms / 1000.0) as usize;
    let shift = (o.sample_rate as f64 * o.frame_shift_ms / 1000.0) as usize;
    if len == 0 || shift == 0 || wave.len() < len {
        return Vec::new();
    }
    let fft = len.next_power_of_two();
    let frames = 1 + (wave.len() - len) / shift;
    let banks = mel_banks(o, fft);
    let support: Vec<(usize, usize)> = banks
        .iter()
        .map(|row| {
            let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
            let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |i| i + 1);
            (start, end)
        })
        .collect();
    let window: Vec<f64> =
        (0..len).map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (len - 1) as f64).cos()).collect();
    let plan = RealFftPlanner::<f64>::new().plan_fft_forward(fft);
    let mut input = plan.make_input_vec();
    let mut spectrum = plan.make_output_vec();
    let mut power = vec![0.0f64; fft / 2 + 1];
    let mut out = Vec::with_capacity(frames * o.mel_bins);
    for f in 0..frames {
        let frame = &wave[f * shift..f * shift + len];
        let mean = frame.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        input.iter_mut().for_each(|v| *v = 0.0);
        for (x, &v) in input.iter_mut().zip(frame) {
            *x = v as f64 - mean;
        }
        for i in (1..len).rev() {
            input[i] -= 0.97 * input[i - 1];
        }
        input[0] -= 0.97 * input[0];
        for (x, w) in input.iter_mut().zip(&window) {
            *x *= w;
        }
        // The lengths come from the plan itself, so this cannot fail.
        if plan.process(&mut input, &mut spectrum).is_err() {
            return Vec::new();
        }
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (row, &(start, end)) in banks.iter().zip(&support) {
            // Outside its support a filter's weights are 0, which add nothing: the
            // same sum, in the same order, as over the whole row.
            let e: f64 = row[start..end].iter().zip(&power[start..end]).map(|(w, p)| w * p).sum();
            out.push(e.max(f32::EPSILON as f64).ln() as f32);
        }
    }
    out
}

/// `ASTFeatureExtractor`'s `input_values` for one waveform: the filter bank padded
/// with zeros (or cut) to `frames` rows, then `(x − mean) / (2 · std)`.
pub fn ast_features(wave: &[f32], o: &FbankOptions, frames: usize, mean: f32, std: f32) -> Vec<f32> {
    let mut x = fbank(wave, o);
    x.resize(frames * o.mel_bins, 0.0);
    let (m, s) = (mean as f64, 2.0 * std as f64);
    x.iter().map(|&v| ((v as f64 - m) / s) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_and_silence() {
        let o = FbankOptions::default();
        assert!(fbank(&[0.0; 399], &o).is_empty());
        let x = fbank(&[0.0; 16000], &o);
        assert_eq!(x.len(), 98 * 128);
        // Silence is floored at ln(f32::EPSILON).
        assert!(x.iter().all(|&v| (v - f32::EPSILON.ln()).abs() < 1e-6));
        let y = ast_features(&[0.0; 16000], &o, 100, AST_MEAN, AST_STD);
        assert_eq!(y.len(), 100 * 128);
        assert!((y[99 * 128] - (-AST_MEAN / (2.0 * AST_STD))).abs() < 1e-6);
    }

    #[test]
    fn each_filter_over_its_support_gives_the_whole_rows_bits() {
        let o = FbankOptions::default();
        let wave: Vec<f32> = (0..8000).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        let x = fbank(&wave, &o);
        // The dense product, as the filter bank was computed before.
        let banks = mel_banks(&o, 512);
        let plan = RealFftPlanner::<f64>::new().plan_fft_forward(512);
        let (mut input, mut spectrum) = (plan.make_input_vec(), plan.make_output_vec());
        let frame = &wave[160 * 7..160 * 7 + 400];
        let mean = frame.iter().map(|&v| v as f64).sum::<f64>() / 400.0;
        for (x, &v) in input.iter_mut().zip(frame) {
            *x = v as f64 - mean;
        }
        for i in (1..400).rev() {
            input[i] -= 0.97 * input[i - 1];
        }
        input[0] -= 0.97 * input[0];
        for (n, x) in input.iter_mut().enumerate().take(400) {
            *x *= 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / 399.0).cos();
        }
        plan.process(&mut input, &mut spectrum).unwrap();
        let power: Vec<f64> = spectrum.iter().map(|c| c.re * c.re + c.im * c.im).collect();
        for (b, row) in banks.iter().enumerate() {
            let e: f64 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            assert_eq!(x[7 * 128 + b].to_bits(), (e.max(f32::EPSILON as f64).ln() as f32).to_bits(), "filter {b}");
        }
    }

    #[test]
    fn a_tone_lands_in_its_band() {
        let o = FbankOptions::default();
        let wave: Vec<f32> =
            (0..16000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * 0.5).collect();
        let x = fbank(&wave, &o);
        let row = &x[10 * 128..11 * 128];
        let peak = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap();
        let banks = mel_banks(&o, 512);
        // 1 kHz is bin 32 of 512 points at 16 kHz: the peak filter covers it.
        assert!(banks[peak][32] > 0.0, "peak filter {peak}");
    }
}
