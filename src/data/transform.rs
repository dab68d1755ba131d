//! Image transforms, matched to torchvision / timm:
//!
//! - train: `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))` with
//!   torchvision's sampling (ten tries at an area fraction and a log-uniform aspect
//!   ratio, then the central crop of the clamped ratio), then a horizontal flip with
//!   probability 0.5;
//! - eval (timm's convention): resize the short side to `floor(size / crop_pct)` (the
//!   long side to `int(new_short × long / short)`, as `transforms.Resize(int)`), then
//!   `CenterCrop(size)` (offsets rounded half to even, as Python's `round`; zero
//!   padding where the image is smaller);
//! - resizing is antialiased bilinear or bicubic (`fast_image_resize`'s convolution,
//!   Pillow's filters, as `resized_crop(..., antialias=True)`); the resizer reads the
//!   integer crop box as an image of its own (a view, or a copy where the box leaves
//!   the image), so no pixel outside it is read;
//! - `to_chw`: `(v / 255 − mean) / std` in f32, the operations
//!   `F.normalize(t.float() / 255, mean, std)` performs, channel-major.
//!
//! Randomness comes from the caller's [`Rng`] (a stream per (seed, epoch, sample)).

use super::decode::{is_jpeg, not_a_bomb, DecodeError, Rgb};
use super::jpeg;
use crate::rng::Rng;
use fast_image_resize as fr;
use serde::{Deserialize, Serialize};

/// The resampling filter (antialiased when downscaling).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// Per-channel normalisation, `(v / 255 − mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

pub use crate::stats::NAMED_STATS;

impl Normalize {
    /// `--mean NAME|R,G,B --std NAME|R,G,B`: a name sets both (`--std` may repeat it);
    /// numbers need both, three positive stds.
    pub fn parse(mean: &str, std: Option<&str>) -> Result<Normalize, String> {
        let named = |s: &str| NAMED_STATS.iter().find(|(n, _, _)| *n == s.trim());
        let numbers = |s: &str, what: &str| -> Result<Vec<f32>, String> {
            let v: Result<Vec<f32>, _> = s.split(',').map(|x| x.trim().parse::<f32>()).collect();
            match v {
                Ok(v) if v.len() == 3 && v.iter().all(|x| x.is_finite()) => Ok(v),
                _ => Err(format!(
                    "--{what} `{s}`: expected a name ({}) or three numbers R,G,B",
                    NAMED_STATS.map(|n| n.0).join(", ")
                )),
            }
        };
        let (m, s) = match (named(mean), std) {
            (Some((_, m, s)), None) => (m.to_vec(), s.to_vec()),
            (Some((name, m, s)), Some(sd)) if named(sd).is_some_and(|n| n.0 == *name) => (m.to_vec(), s.to_vec()),
            (Some((name, _, _)), Some(sd)) => {
                return Err(format!("--mean {name} with --std `{sd}`: give --std {name} or numbers for both"))
            }
            (None, None) => return Err(format!("--mean `{mean}` is numbers: give --std R,G,B too")),
            (None, Some(sd)) => (numbers(mean, "mean")?, numbers(sd, "std")?),
        };
        if s.iter().any(|&x| x <= 0.0) {
            return Err(format!("--std {s:?}: every std must be positive"));
        }
        Ok(Normalize { mean: m, std: s })
    }

    /// The statistics' name, when they are named ones.
    pub fn name(&self) -> Option<&'static str> {
        NAMED_STATS.iter().find(|(_, m, s)| self.mean == m[..] && self.std == s[..]).map(|n| n.0)
    }
}

/// An integer crop box; `top`/`left` may be negative (zero padding).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: i64,
    pub left: i64,
    pub height: u32,
    pub width: u32,
}

impl CropBox {
    /// Whether the box is non-empty and lies inside a `width × height` image (no padding).
    pub fn inside(&self, width: u32, height: u32) -> bool {
        self.top >= 0
            && self.left >= 0
            && self.width > 0
            && self.height > 0
            && self.left + self.width as i64 <= width as i64
            && self.top + self.height as i64 <= height as i64
    }
}

/// torchvision's `RandomResizedCrop.get_params` for an image of `h × w`.
pub fn random_resized_crop_box(rng: &mut Rng, h: u32, w: u32, scale: (f64, f64), ratio: (f64, f64)) -> CropBox {
    let area = h as f64 * w as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    let uniform = |rng: &mut Rng, a: f64, b: f64| a + (b - a) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round_ties_even();
        let ch = (target / aspect).sqrt().round_ties_even();
        if cw > 0.0 && ch > 0.0 && cw <= w as f64 && ch <= h as f64 {
            let (ch, cw) = (ch as u32, cw as u32);
            let top = rng.below((h - ch + 1) as u64) as i64;
            let left = rng.below((w - cw + 1) as u64) as i64;
            return CropBox { top, left, height: ch, width: cw };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < ratio.0 {
        ((w as f64 / ratio.0).round_ties_even() as u32, w)
    } else if in_ratio > ratio.1 {
        (h, (h as f64 * ratio.1).round_ties_even() as u32)
    } else {
        (h, w)
    };
    CropBox { top: ((h - ch.min(h)) / 2) as i64, left: ((w - cw.min(w)) / 2) as i64, height: ch, width: cw }
}

/// torchvision's `center_crop` box (zero padding where the image is smaller).
pub fn center_crop_box(h: u32, w: u32, ch: u32, cw: u32) -> CropBox {
    let offset = |n: u32, c: u32| -> i64 {
        if n >= c {
            ((n - c) as f64 / 2.0).round_ties_even() as i64
        } else {
            -(((c - n) / 2) as i64)
        }
    };
    CropBox { top: offset(h, ch), left: offset(w, cw), height: ch, width: cw }
}

/// Square crop `crop` of `crops` (`size × size`): spread evenly along the long side,
/// starting at `floor(crop × (long − size) / (crops − 1))` (VideoMAE's `spatial_start`;
/// the height when `h ≥ w`), centred across the other; `crops = 1` is
/// [`center_crop_box`].
pub fn view_crop_box(h: u32, w: u32, size: u32, crop: u32, crops: u32) -> CropBox {
    let centre = center_crop_box(h, w, size, size);
    let long = h.max(w);
    if crops <= 1 || long < size {
        return centre;
    }
    let start = (crop.min(crops - 1) as u64 * (long - size) as u64 / (crops - 1) as u64) as i64;
    if h >= w {
        CropBox { top: start, ..centre }
    } else {
        CropBox { left: start, ..centre }
    }
}

/// `transforms.Resize(short)`'s output size `(h, w)`.
pub fn short_side_size(h: u32, w: u32, short: u32) -> (u32, u32) {
    if h <= w {
        (short, ((short as u64 * w as u64) / h.max(1) as u64).max(1) as u32)
    } else {
        (((short as u64 * h as u64) / w.max(1) as u64).max(1) as u32, short)
    }
}

/// Copy a crop box out of an image (pixels outside the image are 0).
pub fn crop(img: &Rgb, b: CropBox) -> Rgb {
    crop_raw(&img.data, img.width, img.height, b)
}

/// [`crop`] of HWC RGB bytes of `width × height`.
pub fn crop_raw(data: &[u8], width: u32, height: u32, b: CropBox) -> Rgb {
    let (w, h) = (width as i64, height as i64);
    let mut out = vec![0u8; b.width as usize * b.height as usize * 3];
    let x0 = b.left.max(0);
    let x1 = (b.left + b.width as i64).min(w);
    for y in 0..b.height as i64 {
        let sy = b.top + y;
        if sy < 0 || sy >= h || x0 >= x1 {
            continue;
        }
        let src = ((sy * w + x0) * 3) as usize..((sy * w + x1) * 3) as usize;
        let dst = (((y * b.width as i64) + (x0 - b.left)) * 3) as usize;
        out[dst..dst + src.len()].copy_from_slice(&data[src]);
    }
    Rgb { width: b.width, height: b.height, data: out }
}

/// Decode only what a crop box needs of a JPEG: `pick(width, height)` chooses the box
/// (inside the image) once the header is read. Returns the decoded region and the
/// box's place in it, whose pixels are those of [`super::decode::decode_image`] at the box; `None`
/// when the file is not a JPEG decoded this way (decode it whole instead; `pick` was
/// not called).
pub fn decode_jpeg_box(
    bytes: &[u8],
    buf: Vec<u8>,
    pick: impl FnOnce(u32, u32) -> CropBox,
) -> Result<Option<(Rgb, CropBox)>, DecodeError> {
    if !is_jpeg(bytes) {
        return Ok(None);
    }
    let mut chosen = None;
    let pick = |w: u32, h: u32| {
        not_a_bomb(w, h)?;
        let b = pick(w, h);
        let inside = b.inside(w, h);
        chosen = Some((b, inside));
        Ok::<_, DecodeError>(inside.then_some(jpeg::Region {
            top: b.top as u32,
            left: b.left as u32,
            height: b.height,
            width: b.width,
        }))
    };
    let Some(d) = jpeg::decode(bytes, buf, pick)? else { return Ok(None) };
    let image = Rgb::decoded(d.width, d.height, d.data)?;
    let (b, inside) = chosen.expect("a decoded JPEG had its box picked");
    // A box leaving the image (zero-padded) is cut from the whole image, decoded whole.
    let placed =
        if inside { CropBox { top: d.dy as i64, left: d.dx as i64, height: b.height, width: b.width } } else { b };
    Ok(Some((image, placed)))
}

thread_local! {
    static RESIZER: std::cell::RefCell<fr::Resizer> = std::cell::RefCell::new(fr::Resizer::new());
}

/// Resize with an antialiased convolution (Pillow's bilinear / bicubic filters).
pub fn resize(img: &Rgb, h: u32, w: u32, interp: Interpolation) -> Rgb {
    if (img.height, img.width) == (h, w) {
        return img.clone();
    }
    if img.width == 0 || img.height == 0 || w == 0 || h == 0 {
        return Rgb { width: w, height: h, data: vec![0; w as usize * h as usize * 3] };
    }
    let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(filter(interp)));
    let mut dst = fr::images::Image::new(w, h, fr::PixelType::U8x3);
    let done = fr::images::ImageRef::new(img.width, img.height, &img.data, fr::PixelType::U8x3)
        .map_err(|e| e.to_string())
        .and_then(|src| RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &opts).map_err(|e| e.to_string())));
    // Sizes and pixel types are consistent by construction; keep zeros otherwise.
    let _ = done;
    Rgb { width: w, height: h, data: dst.into_vec() }
}

/// `resize(&crop(img, b), h, w, interp)` without copying the box out: where the box
/// lies inside the image the resizer reads it in place, as a view whose rows are
/// the box's, so it reads exactly the pixels the copy would hold.
pub fn resized_crop(img: &Rgb, b: CropBox, h: u32, w: u32, interp: Interpolation) -> Rgb {
    resized_crop_raw(&img.data, img.width, img.height, b, h, w, interp)
}

/// [`resized_crop`] of HWC RGB bytes of `width × height` (a video frame in place).
pub fn resized_crop_raw(
    data: &[u8],
    width: u32,
    height: u32,
    b: CropBox,
    h: u32,
    w: u32,
    interp: Interpolation,
) -> Rgb {
    let inside = b.inside(width, height);
    let fallback = || resize(&crop_raw(data, width, height, b), h, w, interp);
    if !inside || (b.height, b.width) == (h, w) || w == 0 || h == 0 {
        return fallback();
    }
    let mut dst = fr::images::Image::new(w, h, fr::PixelType::U8x3);
    let done = fr::images::ImageRef::new(width, height, data, fr::PixelType::U8x3).map_err(|e| e.to_string()).and_then(
        |src| {
            let view = fr::images::CroppedImage::new(&src, b.left as u32, b.top as u32, b.width, b.height)
                .map_err(|e| e.to_string())?;
            let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(filter(interp)));
            RESIZER.with(|r| r.borrow_mut().resize(&view, &mut dst, &opts).map_err(|e| e.to_string()))
        },
    );
    match done {
        Ok(()) => Rgb { width: w, height: h, data: dst.into_vec() },
        // The box was checked against the image: fall back rather than guess.
        Err(_) => fallback(),
    }
}

fn filter(interp: Interpolation) -> fr::FilterType {
    match interp {
        Interpolation::Bilinear => fr::FilterType::Bilinear,
        Interpolation::Bicubic => fr::FilterType::CatmullRom,
    }
}

/// Mirror left to right.
pub fn hflip(img: &mut Rgb) {
    let w = img.width as usize;
    if w == 0 {
        return;
    }
    for row in img.data.chunks_exact_mut(w * 3) {
        row.as_chunks_mut::<3>().0.reverse();
    }
}

/// Append the image as `[3, H, W]` f32, normalised. Each channel's 256 possible
/// values are computed once, with the formula above, and looked up: the same bits.
pub fn to_chw(img: &Rgb, norm: &Normalize, out: &mut Vec<f32>) {
    let n = img.width as usize * img.height as usize;
    let lut = crate::stats::norm_lut(&norm.mean, &norm.std);
    out.reserve(3 * n);
    for (c, lut) in lut.iter().enumerate() {
        out.extend(img.data.chunks_exact(3).take(n).map(|px| lut[px[c] as usize]));
    }
}

/// The image transform a dataset declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTransform {
    pub size: u32,
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    #[serde(flatten)]
    pub normalize: Normalize,
    /// RandomResizedCrop's area fraction and aspect-ratio ranges (train).
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    /// Probability of a horizontal flip (train).
    pub hflip: f64,
}

impl ImageTransform {
    /// timm's defaults for `size`: crop_pct 0.875, bilinear, ImageNet statistics.
    pub fn new(size: u32) -> ImageTransform {
        ImageTransform {
            size,
            crop_pct: 0.875,
            interpolation: Interpolation::Bilinear,
            normalize: Normalize::parse("imagenet", None)
                .unwrap_or(Normalize { mean: vec![0.0; 3], std: vec![1.0; 3] }),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: 0.5,
        }
    }

    /// Check the numbers (from `dataset.json` or the command line).
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 || self.size > 8192 {
            return Err(format!("image size {} is outside 1..=8192", self.size));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!("crop_pct {} is outside (0, 1]", self.crop_pct));
        }
        let ok = |r: (f64, f64)| r.0 > 0.0 && r.0 <= r.1 && r.1.is_finite();
        if !ok(self.scale) || self.scale.1 > 1.0 || !ok(self.ratio) || !(0.0..=1.0).contains(&self.hflip) {
            return Err(format!("scale {:?} / ratio {:?} / hflip {} out of range", self.scale, self.ratio, self.hflip));
        }
        if self.normalize.mean.len() != 3
            || self.normalize.std.len() != 3
            || self.normalize.std.iter().any(|&s| s <= 0.0)
        {
            return Err("mean and std need three values each, std positive".into());
        }
        Ok(())
    }

    /// The short side eval resizes to: `floor(size / crop_pct)`.
    pub fn eval_short_side(&self) -> u32 {
        (self.size as f64 / self.crop_pct + 1e-9).floor() as u32
    }

    /// RandomResizedCrop + flip, to `size × size`.
    pub fn train(&self, img: &Rgb, rng: &mut Rng) -> Rgb {
        let b = self.train_box(img.height, img.width, rng);
        self.train_crop(img, b, rng)
    }

    /// The first half of [`ImageTransform::train`]: the crop box of an `h × w` image.
    pub fn train_box(&self, h: u32, w: u32, rng: &mut Rng) -> CropBox {
        random_resized_crop_box(rng, h, w, self.scale, self.ratio)
    }

    /// The second half: resize box `b` of `img` and flip it.
    pub fn train_crop(&self, img: &Rgb, b: CropBox, rng: &mut Rng) -> Rgb {
        let mut out = resized_crop(img, b, self.size, self.size, self.interpolation);
        if (rng.f32() as f64) < self.hflip {
            hflip(&mut out);
        }
        out
    }

    /// Resize the short side, then crop `size × size`: crop `view` of `views` along the
    /// long side ([`view_crop_box`]; `0, 1` is the center crop).
    pub fn eval(&self, img: &Rgb, view: u32, views: u32) -> Rgb {
        let (h, w) = short_side_size(img.height, img.width, self.eval_short_side());
        let r = resize(img, h, w, self.interpolation);
        crop(&r, view_crop_box(h, w, self.size, view, views))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> Rgb {
        Rgb::new(w, h, (0..w * h * 3).map(|i| (i % 251) as u8).collect()).unwrap()
    }

    #[test]
    fn boxes_follow_torchvision() {
        assert_eq!(center_crop_box(256, 341, 224, 224), CropBox { top: 16, left: 58, height: 224, width: 224 });
        // (225 - 224) / 2 = 0.5 rounds to 0, (227 - 224) / 2 = 1.5 to 2.
        assert_eq!(center_crop_box(225, 227, 224, 224).top, 0);
        assert_eq!(center_crop_box(225, 227, 224, 224).left, 2);
        assert_eq!(center_crop_box(200, 224, 224, 224).top, -12);
        assert_eq!(short_side_size(375, 500, 256), (256, 341));
        assert_eq!(short_side_size(500, 375, 256), (341, 256));
        // Three crops along the long side (VideoMAE's test crops), centred across.
        let lefts: Vec<i64> = (0..3).map(|j| view_crop_box(256, 341, 224, j, 3).left).collect();
        assert_eq!(lefts, vec![0, 58, 117]);
        assert!((0..3).all(|j| view_crop_box(256, 341, 224, j, 3).top == 16));
        assert_eq!(view_crop_box(341, 256, 224, 2, 3), CropBox { top: 117, left: 16, height: 224, width: 224 });
        assert_eq!(view_crop_box(256, 341, 224, 0, 1), center_crop_box(256, 341, 224, 224));
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let b = random_resized_crop_box(&mut rng, 375, 500, (0.08, 1.0), (0.75, 4.0 / 3.0));
            assert!(b.top >= 0 && b.left >= 0 && b.top + b.height as i64 <= 375 && b.left + b.width as i64 <= 500);
            let a = b.height as f64 * b.width as f64 / (375.0 * 500.0);
            assert!((0.07..=1.0).contains(&a), "{b:?}");
        }
    }

    #[test]
    fn crop_flip_and_normalise_are_exact() {
        let img = ramp(5, 4);
        let c = crop(&img, CropBox { top: 1, left: 2, height: 2, width: 2 });
        assert_eq!(&c.data[..3], &img.data[(5 + 2) * 3..(5 + 2) * 3 + 3]);
        let mut f = c.clone();
        hflip(&mut f);
        assert_eq!(&f.data[..3], &c.data[3..6]);
        let n = Normalize::parse("imagenet", None).unwrap();
        let mut out = Vec::new();
        to_chw(&c, &n, &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(out[4], (c.data[1] as f32 / 255.0 - 0.456) / 0.224);
        // Every level of every channel, exactly the formula's bits, channel-major.
        let all = Rgb::new(256, 1, (0..256 * 3).map(|i| ((i / 3 + 85 * (i % 3)) % 256) as u8).collect()).unwrap();
        let clip = Normalize::parse("clip", None).unwrap();
        let mut out = vec![7.0];
        to_chw(&all, &clip, &mut out);
        assert_eq!(out.len(), 1 + 3 * 256);
        for (i, px) in all.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let want = (px[c] as f32 / 255.0 - clip.mean[c]) / clip.std[c];
                assert_eq!(out[1 + c * 256 + i].to_bits(), want.to_bits());
            }
        }
        assert_eq!(resize(&img, 4, 5, Interpolation::Bicubic), img);
        let small = resize(&ramp(64, 48), 24, 32, Interpolation::Bilinear);
        assert_eq!((small.width, small.height, small.data.len()), (32, 24, 32 * 24 * 3));
    }

    #[test]
    fn resizing_a_box_in_place_reads_what_the_copy_holds() {
        // Detail everywhere, so a pixel read from outside a box would show.
        let img = Rgb::new(97, 61, (0..97 * 61 * 3).map(|i| ((i * 37) % 256) as u8).collect()).unwrap();
        let mut rng = Rng::new(3);
        for i in 0..200 {
            let b = random_resized_crop_box(&mut rng, img.height, img.width, (0.08, 1.0), (0.75, 4.0 / 3.0));
            let interp = if i % 2 == 0 { Interpolation::Bilinear } else { Interpolation::Bicubic };
            let (h, w) = [(32, 32), (40, 24), (100, 120)][i % 3];
            assert_eq!(resized_crop(&img, b, h, w, interp), resize(&crop(&img, b), h, w, interp), "{b:?}");
        }
        // Boxes leaving the image are zero-padded copies, as before.
        let out = CropBox { top: -3, left: 90, height: 20, width: 20 };
        assert_eq!(
            resized_crop(&img, out, 8, 8, Interpolation::Bilinear),
            resize(&crop(&img, out), 8, 8, Interpolation::Bilinear)
        );
        let mut odd = ramp(5, 2);
        hflip(&mut odd);
        assert_eq!(
            &odd.data[..6],
            &ramp(5, 2).data[12..15].iter().chain(&ramp(5, 2).data[9..12]).copied().collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn statistics_by_name_or_numbers() {
        assert_eq!(Normalize::parse("clip", None).unwrap().name(), Some("clip"));
        assert_eq!(Normalize::parse("0.5", Some("0.5")).unwrap().mean, vec![0.5; 3]);
        assert_eq!(Normalize::parse("0.1,0.2,0.3", Some("1,1,1")).unwrap().name(), None);
        assert!(Normalize::parse("0.1,0.2", Some("1,1,1")).is_err());
        assert!(Normalize::parse("imagenet", Some("clip")).is_err());
        assert!(Normalize::parse("0,0,0", Some("1,0,1")).is_err());
    }
}
