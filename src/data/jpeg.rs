//! JPEG decoding with libjpeg-turbo, the decoder PIL and `torchvision.io.decode_jpeg`
//! use (through `mozjpeg-sys`, built from source with its SIMD kernels where `nasm` is
//! installed; mozjpeg changes only the encoder). Same library, same defaults
//! (accurate integer IDCT, fancy upsampling), so the same pixels as the references.
//!
//! A whole image, or only a region of it, which is what a random crop needs: rows
//! above the region are skipped (`jpeg_skip_scanlines`: entropy-decoded only), rows
//! below it are never decoded, and only the iMCU columns around it are transformed
//! (`jpeg_crop_scanline`). The region is decoded with a margin of one iMCU on every
//! side, so libjpeg's edge handling (upsampling context at a crop's border) never
//! touches a pixel of the region: its pixels are the whole image's, bit for bit.
//!
//! Gray, YCbCr and RGB JPEGs come out as RGB (gray replicated, as PIL's
//! `convert("RGB")`). CMYK and YCCK are `Ok(None)`: the caller converts those its own
//! way. libjpeg's fatal errors unwind out of its frames (the crate builds it with
//! unwinding) as a payload that skips the panic hook, and come back as `Err`;
//! warnings are dropped as PIL drops them, except a premature end of data, which PIL
//! reports as a truncated file and so does this.

use mozjpeg_sys as j;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// A region of an image: rows `top..top + height`, columns `left..left + width`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// What a decode hands back: `width × height` RGB pixels (HWC) holding the region's
/// at `(dy, dx)` (a region is decoded with a margin; a whole image has offset 0).
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    pub dy: u32,
    pub dx: u32,
}

/// libjpeg's message, carried out of its frames by unwinding.
struct JpegError(String);

/// Decode `bytes` into `buf` (its allocation reused). After the header is read,
/// `pick(width, height)` says what to decode: `Ok(None)` the whole image,
/// `Ok(Some(region))` a region inside it, `Err` stops (an image too large, say).
/// `Ok(None)` from this function: not a colour space decoded here (CMYK, YCCK).
pub fn decode<E: From<String>>(
    bytes: &[u8],
    buf: Vec<u8>,
    pick: impl FnOnce(u32, u32) -> Result<Option<Region>, E>,
) -> Result<Option<Decoded>, E> {
    let mut err: j::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    let mut cinfo: j::jpeg_decompress_struct = unsafe { std::mem::zeroed() };
    unsafe {
        j::jpeg_std_error(&mut err);
    }
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    cinfo.common.err = &mut err;
    let mut refused = None;
    let run = catch_unwind(AssertUnwindSafe(|| unsafe {
        j::jpeg_create_decompress(&mut cinfo);
        decode_in(&mut cinfo, bytes, buf, |w, h| pick(w, h).map_err(|e| refused = Some(e)).ok())
    }));
    unsafe { j::jpeg_destroy_decompress(&mut cinfo) };
    let out = match run {
        Ok(out) => out,
        Err(payload) => match payload.downcast::<JpegError>() {
            Ok(e) => return Err(E::from(e.0)),
            Err(other) => resume_unwind(other),
        },
    };
    match refused {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The decode proper, inside the unwinding guard. `pick` returns `None` to stop (the
/// caller keeps its reason), else the region to decode (`Some(None)`: all of it).
unsafe fn decode_in(
    cinfo: &mut j::jpeg_decompress_struct,
    bytes: &[u8],
    mut buf: Vec<u8>,
    pick: impl FnOnce(u32, u32) -> Option<Option<Region>>,
) -> Option<Decoded> {
    unsafe {
        j::jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as _);
        j::jpeg_read_header(cinfo, 1);
    }
    use j::J_COLOR_SPACE::*;
    if !matches!(cinfo.jpeg_color_space, JCS_GRAYSCALE | JCS_YCbCr | JCS_RGB) {
        return None;
    }
    let (w, h) = (cinfo.image_width, cinfo.image_height);
    let region = pick(w, h)?;
    if region.is_some_and(|r| r.width == 0 || r.height == 0 || r.left + r.width > w || r.top + r.height > h) {
        fail(format!("region {region:?} is not inside the {w}×{h} image"));
    }
    cinfo.out_color_space = JCS_RGB;
    unsafe { j::jpeg_start_decompress(cinfo) };
    // One iMCU: the unit libjpeg crops, skips and upsamples in.
    let (mw, mh) = (8 * cinfo.max_h_samp_factor.max(1) as u32, 8 * cinfo.max_v_samp_factor.max(1) as u32);
    let (mut x0, mut cw, y0, y1) = match region {
        None => (0, w, 0, h),
        Some(r) => {
            let x0 = r.left.saturating_sub(mw);
            let x1 = (r.left + r.width + mw).min(w);
            (x0, x1 - x0, r.top.saturating_sub(mh), r.top + r.height)
        }
    };
    if cw < w {
        unsafe { j::jpeg_crop_scanline(cinfo, &mut x0, &mut cw) };
    }
    let skipped = if y0 > 0 { unsafe { j::jpeg_skip_scanlines(cinfo, y0) } } else { 0 };
    let stride = cinfo.output_width as usize * 3;
    let rows = (y1 - skipped) as usize;
    let n = rows * stride;
    if buf.len() < n {
        buf.resize(n, 0);
    }
    buf.truncate(n);
    let mut done = 0;
    while done < rows {
        let mut ptrs: [*mut u8; 16] = [std::ptr::null_mut(); 16];
        let k = (rows - done).min(16);
        for (i, p) in ptrs.iter_mut().take(k).enumerate() {
            *p = unsafe { buf.as_mut_ptr().add((done + i) * stride) };
        }
        let got = unsafe { j::jpeg_read_scanlines(cinfo, ptrs.as_mut_ptr(), k as u32) } as usize;
        if got == 0 {
            fail("libjpeg returned no rows".into());
        }
        done += got;
    }
    if y1 == h && cw == w {
        unsafe { j::jpeg_finish_decompress(cinfo) };
    } else {
        unsafe { j::jpeg_abort_decompress(cinfo) };
    }
    let (dy, dx) = match region {
        None => (0, 0),
        Some(r) => (r.top - skipped, r.left - x0),
    };
    Some(Decoded { width: cinfo.output_width, height: rows as u32, data: buf, dy, dx })
}

fn fail(msg: String) -> ! {
    resume_unwind(Box::new(JpegError(msg)))
}

/// libjpeg's message for the error it holds.
unsafe fn message(cinfo: &mut j::jpeg_common_struct) -> String {
    let buf = [0u8; 80];
    unsafe {
        if let Some(format) = (*cinfo.err).format_message {
            format(cinfo, &buf);
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

unsafe extern "C-unwind" fn error_exit(cinfo: &mut j::jpeg_common_struct) {
    let msg = unsafe { message(cinfo) };
    fail(msg)
}

unsafe extern "C-unwind" fn emit_message(cinfo: &mut j::jpeg_common_struct, level: std::ffi::c_int) {
    if level < 0 {
        let msg = unsafe { message(cinfo) };
        if msg.starts_with("Premature end of JPEG file") {
            fail("image file is truncated (premature end of JPEG data)".into());
        }
    }
}
