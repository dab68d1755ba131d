//! Audio in: WAV files (`hound`: 8–32-bit integer PCM and 32-bit float, any channel
//! count mixed down to mono by the mean, as `torchaudio.load(p)[0].mean(0)`), samples
//! scaled to `[-1, 1]` (integer PCM divided by `2^(bits-1)`, as torchaudio loads
//! it), resampled to the transform's rate with torchaudio's default band-limited
//! sinc (`torchaudio.functional.resample`: Hann window, 6 zero crossings, rolloff
//! 0.99); stored as int16.

use std::io::Cursor;

/// A WAV file's samples as mono f32 in `[-1, 1]`, and its rate.
pub fn read_wav(bytes: &[u8]) -> Result<(Vec<f32>, u32), String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| format!("not a readable WAV file: {e}"))?;
    let spec = reader.spec();
    let channels = spec.channels.max(1) as usize;
    if spec.sample_rate == 0 {
        return Err("sample rate 0".into());
    }
    // hound checks the declared length against the data as it reads.
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.into_samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>()
        }
    }
    .map_err(|e| format!("corrupt or truncated WAV data: {e}"))?;
    if samples.len() < channels {
        return Err("no samples".into());
    }
    let mono = samples.chunks_exact(channels).map(|c| c.iter().sum::<f32>() / channels as f32).collect();
    Ok((mono, spec.sample_rate))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `torchaudio.functional.resample(wave, from, to)` with its defaults
/// (`sinc_interp_hann`, `lowpass_filter_width=6`, `rolloff=0.99`), in f64.
pub fn resample(wave: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || wave.is_empty() {
        return wave.to_vec();
    }
    let g = gcd(from as u64, to as u64);
    let (orig, new) = ((from as u64 / g) as usize, (to as u64 / g) as usize);
    let width_zc = 6.0f64;
    let base = orig.min(new) as f64 * 0.99;
    let width = (width_zc * orig as f64 / base).ceil() as usize;
    let taps = 2 * width + orig;
    // kernels[k][i]: output phase k, input tap i (torchaudio's `_get_sinc_resample_kernel`).
    let kernels: Vec<Vec<f64>> = (0..new)
        .map(|k| {
            (0..taps)
                .map(|i| {
                    let idx = (i as f64 - width as f64) / orig as f64;
                    let t = ((-(k as f64) / new as f64 + idx) * base).clamp(-width_zc, width_zc);
                    let window = (t * std::f64::consts::PI / width_zc / 2.0).cos().powi(2);
                    let t = t * std::f64::consts::PI;
                    let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
                    sinc * window * base / orig as f64
                })
                .collect()
        })
        .collect();
    let n = wave.len();
    let target = (new * n).div_ceil(orig);
    let at = |j: isize| -> f64 {
        if j < 0 || j as usize >= n {
            0.0
        } else {
            wave[j as usize] as f64
        }
    };
    (0..target)
        .map(|o| {
            let (block, k) = (o / new, o % new);
            let start = (block * orig) as isize - width as isize;
            kernels[k].iter().enumerate().map(|(i, w)| w * at(start + i as isize)).sum::<f64>() as f32
        })
        .collect()
}

/// Samples in `[-1, 1]` as little-endian int16 (rounded, clamped).
pub fn to_pcm16(wave: &[f32]) -> Vec<u8> {
    wave.iter().flat_map(|&x| ((x * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()).collect()
}

/// Whether a file name is audio graft reads (WAV itself; the rest through ffmpeg).
pub fn is_audio_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"].iter().any(|e| lower.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_a_tone() {
        let wave: Vec<f32> =
            (0..4410).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44100.0).sin()).collect();
        let out = resample(&wave, 44100, 16000);
        assert_eq!(out.len(), 1600);
        // Away from the edges the resampled tone is the tone at the new rate.
        for (i, v) in out.iter().enumerate().skip(100).take(1400) {
            let want = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin();
            assert!((v - want).abs() < 0.02, "{i}: {v} vs {want}");
        }
        assert_eq!(
            to_pcm16(&[1.0, -1.0, 0.5]),
            [32767i16, -32768, 16384].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
        );
    }
}
