//! How an input is stored in the shards and the transform that turns a stored sample
//! into what the model receives (f32, normalised, the input's declared shape).
//!
//! A *plain* input is one tensor `NAME` of its declared dtype and shape, as graft has
//! always stored datasets. A *stored* input is two tensors per shard:
//!
//! - `NAME.data`: `u8[bytes]`, the samples' bytes end to end;
//! - `NAME.index`: `i64[n, 5]`, per sample `(offset, length, d0, d1, d2)` into it.
//!
//! | form | bytes of a sample | `d0, d1, d2` |
//! |---|---|---|
//! | `pixels` | RGB, `H × W × 3` | `H, W, 3` |
//! | `encoded` | the JPEG / PNG / WebP file | `0, 0, 0` |
//! | `frames` | RGB frames, `T × H × W × 3` | `T, H, W` |
//! | `pcm16` | mono int16 samples (little-endian) at the transform's rate | `samples, 0, 0` |
//!
//! [`materialize`] decodes and transforms one sample, deterministically from the
//! caller's random stream; [`View`] picks the training augmentation or the
//! evaluation transform.

use super::decode::{decode_image_reusing, Rgb};
use super::fbank::{ast_features, FbankOptions};
use super::transform::{
    crop, decode_jpeg_box, hflip, random_resized_crop_box, resize, resized_crop_raw, short_side_size, to_chw,
    view_crop_box, ImageTransform,
};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// The stored form of an input (absent: a plain tensor).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// uint8 RGB pixels.
    Pixels,
    /// The encoded image file (decoded while reading: random crops at full resolution).
    Encoded,
    /// uint8 RGB video frames.
    Frames,
    /// int16 mono audio samples.
    Pcm16,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Pixels => "pixels",
            Form::Encoded => "encoded",
            Form::Frames => "frames",
            Form::Pcm16 => "pcm16",
        }
    }
}

/// The per-sample index row: `(offset, length, d0, d1, d2)`.
pub type IndexRow = [i64; 5];

/// Where the video's channel axis goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VideoLayout {
    /// `[C, T, H, W]` (VideoMAE's original repository, CM3T).
    Cthw,
    /// `[T, C, H, W]` (transformers' `VideoMAEModel`).
    Tchw,
}

/// VideoMAE-style clips: `frames` frames `sampling_rate` apart, one crop box for the clip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoTransform {
    pub frames: u32,
    pub sampling_rate: u32,
    pub layout: VideoLayout,
    #[serde(flatten)]
    pub image: ImageTransform,
}

/// Where the filter bank's axes go: time × mel (`ASTFeatureExtractor`), mel × time,
/// with or without a leading channel of 1.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AudioLayout {
    Tf,
    Ft,
    #[value(name = "1tf")]
    #[serde(rename = "1tf")]
    OneTf,
    #[value(name = "1ft")]
    #[serde(rename = "1ft")]
    OneFt,
}

/// The AST filter bank, padded or cut to `frames`, normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AudioTransform {
    pub sample_rate: u32,
    pub mel_bins: u32,
    pub frames: u32,
    pub mean: f32,
    pub std: f32,
    pub layout: AudioLayout,
}

/// The transform of an input, by modality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    Image(ImageTransform),
    Video(VideoTransform),
    Audio(AudioTransform),
}

impl Transform {
    /// The shape a sample has after the transform (f32).
    pub fn output_shape(&self) -> Vec<i64> {
        match self {
            Transform::Image(t) => vec![3, t.size as i64, t.size as i64],
            Transform::Video(v) => {
                let (t, s) = (v.frames as i64, v.image.size as i64);
                match v.layout {
                    VideoLayout::Cthw => vec![3, t, s, s],
                    VideoLayout::Tchw => vec![t, 3, s, s],
                }
            }
            Transform::Audio(a) => {
                let (t, f) = (a.frames as i64, a.mel_bins as i64);
                match a.layout {
                    AudioLayout::Tf => vec![t, f],
                    AudioLayout::Ft => vec![f, t],
                    AudioLayout::OneTf => vec![1, t, f],
                    AudioLayout::OneFt => vec![1, f, t],
                }
            }
        }
    }

    /// Check the numbers (a `dataset.json` read from disk goes through this).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Transform::Image(t) => t.validate(),
            Transform::Video(v) if v.frames == 0 || v.frames > 1024 || v.sampling_rate == 0 || v.sampling_rate > 64 => {
                Err(format!("video: {} frames at sampling rate {} (1..=1024, 1..=64)", v.frames, v.sampling_rate))
            }
            Transform::Video(v) => v.image.validate(),
            Transform::Audio(a) if a.sample_rate < 1000 || a.sample_rate > 384_000 => {
                Err(format!("audio: sample rate {} outside 1000..=384000", a.sample_rate))
            }
            Transform::Audio(a) if a.mel_bins == 0 || a.mel_bins > 512 || a.frames == 0 || a.frames > 100_000 => {
                Err(format!("audio: {} mel bins × {} frames out of range", a.mel_bins, a.frames))
            }
            Transform::Audio(a) if !(a.std > 0.0 && a.mean.is_finite()) => Err("audio: std must be positive".into()),
            Transform::Audio(_) => Ok(()),
        }
    }

    /// Whether `form` is a stored form this transform reads.
    pub fn reads(&self, form: Form) -> bool {
        matches!(
            (self, form),
            (Transform::Image(_), Form::Pixels | Form::Encoded)
                | (Transform::Video(_), Form::Frames)
                | (Transform::Audio(_), Form::Pcm16)
        )
    }
}

/// Which transform [`materialize`] applies.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum View {
    /// Random augmentation (RandomResizedCrop + flip; a random clip window).
    #[default]
    Train,
    /// A deterministic evaluation transform (resize the short side, then one crop of
    /// one clip window; [`EvalView::CENTRE`] is the single-view evaluation).
    Eval(EvalView),
}

/// One evaluation view, VideoMAE's multi-view testing: temporal window `clip` of
/// `clips` spread evenly over the video (`clips = 1`: the central window), and square
/// crop `crop` of `crops` spread evenly along the long side of the resized frame
/// (`crops = 1`: the center crop).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EvalView {
    pub clip: u32,
    pub clips: u32,
    pub crop: u32,
    pub crops: u32,
}

impl EvalView {
    /// The central clip, center-cropped: the single-view evaluation.
    pub const CENTRE: EvalView = EvalView { clip: 0, clips: 1, crop: 0, crops: 1 };

    /// Every view of `clips × crops`, clip-major.
    pub fn all(clips: u32, crops: u32) -> Vec<EvalView> {
        (0..clips).flat_map(|clip| (0..crops).map(move |crop| EvalView { clip, clips, crop, crops })).collect()
    }
}

/// Check one index row against its form and the data length; the reason if bad.
pub fn check_row(form: Form, row: &IndexRow, data_len: u64) -> Result<(), String> {
    let [off, len, d0, d1, d2] = *row;
    if off < 0 || len < 0 || (off as u64).checked_add(len as u64).is_none_or(|e| e > data_len) {
        return Err(format!("bytes {off}..{} outside the {data_len} data bytes", off.saturating_add(len)));
    }
    let want = match form {
        Form::Pixels if d2 == 3 && d0 > 0 && d1 > 0 => d0.checked_mul(d1).and_then(|x| x.checked_mul(3)),
        Form::Encoded if len > 0 => Some(len),
        Form::Frames if d0 > 0 && d1 > 0 && d2 > 0 => d0.checked_mul(d1).and_then(|x| x.checked_mul(d2 * 3)),
        Form::Pcm16 => d0.checked_mul(2),
        _ => None,
    };
    if want != Some(len) {
        return Err(format!("dims ({d0}, {d1}, {d2}) do not fit {len} bytes of {}", form.name()));
    }
    Ok(())
}

/// Where [`materialize`] appends a sample's values: normalised f32, what the model
/// receives; or, for images and video, the raw u8 pixels in the same layout, for a
/// model input declared `normalized` that normalises them on its device
/// ([`crate::ir::PixelNorm`]).
pub enum Sink<'a> {
    F32(&'a mut Vec<f32>),
    U8(&'a mut Vec<u8>),
}

impl Sink<'_> {
    /// Channel `c` of `img`, through channel `c`'s row of `lut` or raw.
    fn plane(&mut self, img: &Rgb, c: usize, lut: &[[f32; 256]]) {
        let px = img.data.chunks_exact(3);
        match self {
            Sink::F32(o) => o.extend(px.map(|p| lut[c][p[c] as usize])),
            Sink::U8(o) => o.extend(px.map(|p| p[c])),
        }
    }
}

thread_local! {
    /// The reader thread's decoded-image buffer, reused from one encoded image to
    /// the next (no allocation and no zeroing per image).
    static DECODED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Decode and transform one stored sample, appending `numel(output_shape)` values.
pub fn materialize(
    form: Form,
    t: &Transform,
    bytes: &[u8],
    row: &IndexRow,
    view: View,
    rng: &mut Rng,
    out: Sink,
) -> Result<(), String> {
    match (t, form) {
        (Transform::Image(it), Form::Pixels | Form::Encoded) => {
            let jpeg = match (form, view) {
                // Training crops a JPEG: decode only the rows and columns around the box.
                (Form::Encoded, View::Train) => {
                    decode_jpeg_box(bytes, DECODED.take(), |w, h| it.train_box(h, w, rng)).map_err(|e| e.to_string())?
                }
                _ => None,
            };
            let img = if let Some((region, b)) = jpeg {
                let img = it.train_crop(&region, b, rng);
                DECODED.set(region.data);
                img
            } else {
                let decoded = match form {
                    Form::Encoded => decode_image_reusing(bytes, DECODED.take()).map_err(|e| e.to_string())?,
                    _ => Rgb::new(row[3] as u32, row[2] as u32, bytes.to_vec())
                        .ok_or("pixel bytes disagree with H × W")?,
                };
                let img = match view {
                    View::Train => it.train(&decoded, rng),
                    View::Eval(v) => it.eval(&decoded, v.crop, v.crops),
                };
                if form == Form::Encoded {
                    DECODED.set(decoded.data);
                }
                img
            };
            match out {
                Sink::F32(o) => to_chw(&img, &it.normalize, o),
                mut raw @ Sink::U8(_) => (0..3).for_each(|c| raw.plane(&img, c, &[])),
            }
            Ok(())
        }
        (Transform::Video(vt), Form::Frames) => video_clip(vt, bytes, row, view, rng, out),
        (Transform::Audio(at), Form::Pcm16) => {
            let Sink::F32(out) = out else {
                return Err("audio has no raw u8 form: its filter bank is computed in f32".into());
            };
            let wave: Vec<f32> =
                bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0).collect();
            let o = FbankOptions { sample_rate: at.sample_rate, mel_bins: at.mel_bins as usize, ..Default::default() };
            let x = ast_features(&wave, &o, at.frames as usize, at.mean, at.std);
            let (frames, mels) = (at.frames as usize, at.mel_bins as usize);
            match at.layout {
                AudioLayout::Tf | AudioLayout::OneTf => out.extend_from_slice(&x),
                AudioLayout::Ft | AudioLayout::OneFt => {
                    out.extend((0..mels).flat_map(|m| (0..frames).map(move |f| (m, f))).map(|(m, f)| x[f * mels + m]))
                }
            }
            Ok(())
        }
        _ => Err(format!("a {} sample cannot feed this transform", form.name())),
    }
}

/// The frame indices of one clip (VideoMAE's `_sample_train_indices` / its test
/// windows): `frames` indices spread by linspace over a window of `frames × rate`
/// frames. Training draws the window's start; evaluation takes the central window, or
/// with `clips` K > 1 window k starts at `floor(k × (total − window) / (K − 1))` (VideoMAE's
/// `temporal_start`). A shorter video is spread over its whole length and the last
/// frame repeated.
pub fn clip_indices(total: usize, frames: usize, rate: usize, view: View, rng: &mut Rng) -> Vec<usize> {
    let window = frames * rate;
    if total == 0 {
        return vec![0; frames];
    }
    if total <= window {
        let n = (total / rate).max(1);
        let mut idx: Vec<usize> = (0..n)
            .map(|i| if n == 1 { 0.0 } else { i as f64 * total as f64 / (n - 1) as f64 })
            .map(|x| (x as usize).min(total - 1))
            .collect();
        idx.resize(frames, total - 1);
        idx.truncate(frames);
        return idx;
    }
    let end = match view {
        View::Train => window + rng.below((total - window) as u64) as usize,
        View::Eval(v) if v.clips > 1 => {
            window + (v.clip.min(v.clips - 1) as usize * (total - window)) / (v.clips as usize - 1)
        }
        View::Eval(_) => window + (total - window) / 2,
    };
    let start = end - window;
    (0..frames)
        .map(|i| {
            let x =
                if frames == 1 { start as f64 } else { start as f64 + i as f64 * window as f64 / (frames - 1) as f64 };
            (x as usize).clamp(start, end - 1)
        })
        .collect()
}

fn video_clip(
    vt: &VideoTransform,
    bytes: &[u8],
    row: &IndexRow,
    view: View,
    rng: &mut Rng,
    mut out: Sink,
) -> Result<(), String> {
    let (t, h, w) = (row[2] as usize, row[3] as u32, row[4] as u32);
    let frame_bytes = h as usize * w as usize * 3;
    let it = &vt.image;
    let picks = clip_indices(t, vt.frames as usize, vt.sampling_rate as usize, view, rng);
    let size = it.size;
    let (box_, flip, scaled) = match view {
        View::Train => {
            let b = random_resized_crop_box(rng, h, w, it.scale, it.ratio);
            (b, (rng.f32() as f64) < it.hflip, None)
        }
        View::Eval(v) => {
            let (nh, nw) = short_side_size(h, w, it.eval_short_side());
            (view_crop_box(nh, nw, size, v.crop, v.crops), false, Some((nh, nw)))
        }
    };
    let mut clip = Vec::with_capacity(picks.len());
    for &f in &picks {
        let data = bytes.get(f * frame_bytes..(f + 1) * frame_bytes).ok_or("frame outside the stored bytes")?;
        let mut img = match scaled {
            None => resized_crop_raw(data, w, h, box_, size, size, it.interpolation),
            Some((nh, nw)) => {
                let frame = Rgb { width: w, height: h, data: data.to_vec() };
                crop(&resize(&frame, nh, nw, it.interpolation), box_)
            }
        };
        if flip {
            hflip(&mut img);
        }
        clip.push(img);
    }
    let lut = crate::stats::norm_lut(&it.normalize.mean, &it.normalize.std);
    match vt.layout {
        VideoLayout::Tchw => clip.iter().for_each(|f| (0..3).for_each(|c| out.plane(f, c, &lut))),
        VideoLayout::Cthw => (0..3).for_each(|c| clip.iter().for_each(|f| out.plane(f, c, &lut))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_follow_videomae() {
        let mut rng = Rng::new(0);
        // 100 frames, 4 × 2: the central window of 8 frames is 46..54.
        assert_eq!(clip_indices(100, 4, 2, View::Eval(EvalView::CENTRE), &mut rng), vec![46, 48, 51, 53]);
        // Three test windows (VideoMAE's temporal_start = k × (100 − 8) / 2): the first,
        // the central and the last.
        let views = EvalView::all(3, 1);
        let three: Vec<_> = views.iter().map(|&v| clip_indices(100, 4, 2, View::Eval(v), &mut rng)).collect();
        assert_eq!(three, vec![vec![0, 2, 5, 7], vec![46, 48, 51, 53], vec![92, 94, 97, 99]]);
        assert_eq!(EvalView::all(2, 3).len(), 6);
        let short = clip_indices(5, 4, 2, View::Train, &mut rng);
        assert_eq!(short, vec![0, 4, 4, 4]);
        for _ in 0..100 {
            let c = clip_indices(100, 16, 4, View::Train, &mut rng);
            assert_eq!(c.len(), 16);
            assert!(c.windows(2).all(|w| w[0] <= w[1]) && c[15] - c[0] < 64);
        }
    }

    #[test]
    fn rows_are_checked() {
        assert!(check_row(Form::Pixels, &[0, 12, 2, 2, 3], 12).is_ok());
        assert!(check_row(Form::Pixels, &[4, 12, 2, 2, 3], 12).is_err());
        assert!(check_row(Form::Pixels, &[0, 12, 2, 3, 3], 100).is_err());
        assert!(check_row(Form::Pcm16, &[0, 8, 4, 0, 0], 8).is_ok());
        assert!(check_row(Form::Encoded, &[0, 0, 0, 0, 0], 8).is_err());
        assert!(check_row(Form::Frames, &[i64::MAX, 1, 1, 1, 1], 8).is_err());
    }
}
