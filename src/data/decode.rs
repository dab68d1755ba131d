//! Decoding image files to 8-bit RGB, the way `PIL.Image.open(p).convert("RGB")`
//! does: JPEG with libjpeg-turbo as PIL ([`super::jpeg`]; CMYK and YCCK JPEGs through
//! `image`'s zune-jpeg), PNG and WebP through `image`. A training crop can decode a
//! JPEG's box only ([`super::transform::decode_jpeg_box`]). Every mode becomes RGB:
//! grayscale is replicated, a palette expanded, alpha dropped (not composited, as
//! PIL's `convert("RGB")`), CMYK converted, 16-bit samples scaled to 8 bits (as
//! `torchvision.transforms.v2.functional.to_dtype` scales them: `round(v / 257)`).
//!
//! What cannot be decoded is a [`DecodeError`] with the reason, never a panic: an
//! empty file, a truncated or corrupt one, a format graft does not read, and a
//! decompression bomb (more pixels than [`MAX_PIXELS`], PIL's
//! `DecompressionBombError` threshold), which is refused from the header alone,
//! before any pixel memory is allocated.

use super::jpeg;
use std::io::Cursor;

/// PIL refuses images above `2 × Image.MAX_IMAGE_PIXELS` (2 × 89 478 485) pixels.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// An 8-bit RGB image, rows top to bottom, pixels `R, G, B` interleaved (HWC).
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb {
    /// An image from HWC bytes; `None` when the length disagrees with the size.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Option<Rgb> {
        (data.len() as u64 == width as u64 * height as u64 * 3).then_some(Rgb { width, height, data })
    }

    /// [`Rgb::new`] of a decoder's output: a length that disagrees is a corrupt file.
    pub(crate) fn decoded(width: u32, height: u32, data: Vec<u8>) -> Result<Rgb, DecodeError> {
        Rgb::new(width, height, data)
            .ok_or_else(|| DecodeError::Corrupt("decoded size disagrees with the header".into()))
    }
}

/// Why a file could not be decoded (the reason a skipped file is listed with).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty file")]
    Empty,
    #[error("not an image graft reads (JPEG, PNG, WebP)")]
    UnknownFormat,
    #[error("{width}×{height} is {} pixels, more than {MAX_PIXELS} (a decompression bomb, as PIL refuses it)", *width as u64 * *height as u64)]
    TooLarge { width: u32, height: u32 },
    #[error("corrupt or truncated: {0}")]
    Corrupt(String),
}

impl From<String> for DecodeError {
    fn from(libjpeg: String) -> DecodeError {
        DecodeError::Corrupt(libjpeg)
    }
}

/// Decode an image file's bytes to RGB.
pub fn decode_image(bytes: &[u8]) -> Result<Rgb, DecodeError> {
    decode_image_reusing(bytes, Vec::new())
}

/// [`decode_image`], writing the pixels into `buf` (its allocation is reused: a
/// reader thread passes back the previous image's buffer, so decoding neither
/// allocates nor zeroes a fresh one per image).
pub fn decode_image_reusing(bytes: &[u8], buf: Vec<u8>) -> Result<Rgb, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if is_jpeg(bytes) {
        if let Some(d) = jpeg::decode(bytes, buf, |w, h| not_a_bomb(w, h).map(|()| None))? {
            return Rgb::decoded(d.width, d.height, d.data);
        }
    }
    decode_through_image(bytes)
}

pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// PIL's decompression-bomb rule, from the header alone.
pub(crate) fn not_a_bomb(width: u32, height: u32) -> Result<(), DecodeError> {
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!("{width}×{height} image")));
    }
    Ok(())
}

/// Every format and mode, through `image`.
fn decode_through_image(bytes: &[u8]) -> Result<Rgb, DecodeError> {
    use image::{ImageFormat, ImageReader, Limits};
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
        return Err(DecodeError::UnknownFormat);
    }
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    let probe = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = probe.into_dimensions().map_err(corrupt)?;
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!("{width}×{height} image")));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // RGBA at 16 bits per channel is the largest form a decoder allocates.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(corrupt)?;
    let rgb = to_rgb8(img);
    Rgb::decoded(rgb.width(), rgb.height(), rgb.into_raw())
}

/// Any decoded image as 8-bit RGB (alpha dropped, 16-bit scaled by 1/257, rounded).
fn to_rgb8(img: image::DynamicImage) -> image::RgbImage {
    use image::DynamicImage as D;
    let scale16 = |v: u16| ((v as u32 * 255 + 32767) / 65535) as u8;
    match img {
        D::ImageRgb8(i) => i,
        D::ImageLuma16(i) => {
            let (w, h) = i.dimensions();
            let data = i.into_raw().iter().flat_map(|&v| [scale16(v); 3]).collect();
            image::RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        D::ImageLumaA16(i) => {
            let (w, h) = i.dimensions();
            let data = i.into_raw().chunks_exact(2).flat_map(|p| [scale16(p[0]); 3]).collect();
            image::RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        D::ImageRgb16(i) => {
            let (w, h) = i.dimensions();
            let data = i.into_raw().iter().map(|&v| scale16(v)).collect();
            image::RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        D::ImageRgba16(i) => {
            let (w, h) = i.dimensions();
            let data =
                i.into_raw().chunks_exact(4).flat_map(|p| [scale16(p[0]), scale16(p[1]), scale16(p[2])]).collect();
            image::RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        // 8-bit gray, gray + alpha, RGBA: replicate / drop alpha, no compositing.
        other => other.to_rgb8(),
    }
}

/// Whether a file name has an image extension torchvision's `ImageFolder` reads
/// and graft decodes (`.jpg`, `.jpeg`, `.png`, `.webp`, any case).
pub fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png", ".webp"].iter().any(|e| lower.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(color: image::ColorType, w: u32, h: u32, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        image::write_buffer_with_format(&mut Cursor::new(&mut out), raw, w, h, color, image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn every_mode_becomes_rgb() {
        let gray = decode_image(&png(image::ColorType::L8, 2, 1, &[10, 200])).unwrap();
        assert_eq!(gray.data, vec![10, 10, 10, 200, 200, 200]);
        let rgba = decode_image(&png(image::ColorType::Rgba8, 1, 1, &[1, 2, 3, 0])).unwrap();
        assert_eq!(rgba.data, vec![1, 2, 3], "alpha is dropped, not composited");
        let deep: Vec<u8> = [65535u16, 257, 128].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let rgb16 = decode_image(&png(image::ColorType::Rgb16, 1, 1, &deep)).unwrap();
        assert_eq!(rgb16.data, vec![255, 1, 0]);
    }

    /// A JPEG of a smooth pattern with detail, as `image` encodes it (4:2:0).
    fn jpeg(color: image::ColorType, w: u32, h: u32) -> Vec<u8> {
        let ch = color.channel_count() as u32;
        let raw: Vec<u8> =
            (0..w * h * ch).map(|i| ((i / ch % w) * 7 + (i / ch / w) * 3 + (i % ch) * 50) as u8).collect();
        let mut out = Vec::new();
        image::write_buffer_with_format(&mut Cursor::new(&mut out), &raw, w, h, color, image::ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn jpegs_decode_through_libjpeg_into_any_buffer() {
        for (color, w, h) in
            [(image::ColorType::Rgb8, 1, 1), (image::ColorType::Rgb8, 17, 9), (image::ColorType::L8, 64, 48)]
        {
            let file = jpeg(color, w, h);
            let got = decode_image(&file).unwrap();
            // zune-jpeg (through `image`) is another decoder: within 5 levels of it.
            let other = decode_through_image(&file).unwrap();
            assert_eq!((got.width, got.height), (w, h));
            let d = got.data.iter().zip(&other.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(d <= 5, "{color:?} {w}×{h}: {d} levels from zune-jpeg");
            for buf in [vec![9; 5], vec![9; (w * h * 3 + 100) as usize]] {
                assert_eq!(decode_image_reusing(&file, buf).unwrap(), got, "the buffer's old bytes never show");
            }
        }
        let file = jpeg(image::ColorType::Rgb8, 64, 48);
        let cut = decode_image(&file[..file.len() / 2]).unwrap_err().to_string();
        assert!(cut.contains("truncated"), "{cut}");
        assert!(matches!(decode_image(&file[..40]), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn bad_files_are_errors() {
        assert_eq!(decode_image(b""), Err(DecodeError::Empty));
        assert_eq!(decode_image(b"hello, world"), Err(DecodeError::UnknownFormat));
        let good = png(image::ColorType::Rgb8, 4, 4, &[7; 48]);
        assert!(matches!(decode_image(&good[..good.len() / 2]), Err(DecodeError::Corrupt(_))));
    }
}
