//! Video and audio through the `ffmpeg` program (Debian's `ffmpeg` package: `ffmpeg`
//! and `ffprobe` on `PATH`), and frame folders (`VIDEO/img_00001.jpg …`, the layout of
//! Something-Something / Epic-Kitchens frame dumps).
//!
//! One `ffmpeg` process per video (its start costs ~70 ms, more than a clip's
//! decoding): frames come out as raw RGB at the video's own size (`-noautorotate`, so
//! they match what `ffprobe` reports), and graft resizes them itself with the image
//! path's antialiased filter, so video and image pixels go through the same resize.
//! A missing or too old `ffmpeg` is an error that names the install command.

use super::decode::{decode_image, is_image_name, Rgb};
use super::transform::{resize, short_side_size, Interpolation};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to install the programs graft runs.
pub const FFMPEG_HINT: &str = "install it: `apt-get install -y ffmpeg` (Debian/Ubuntu), `brew install ffmpeg` (macOS)";

/// The oldest `ffmpeg` major version graft runs (Debian 11 ships 4.3).
pub const MIN_FFMPEG_MAJOR: u32 = 4;

/// A checked `ffmpeg` (and its `ffprobe`).
#[derive(Clone, Debug)]
pub struct Ffmpeg {
    pub version: String,
}

/// Find `ffmpeg` and `ffprobe` on `PATH` and check the version.
pub fn find_ffmpeg() -> Result<Ffmpeg, String> {
    let out = Command::new("ffmpeg")
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the `ffmpeg` program ({e}): {FFMPEG_HINT}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next().and_then(|l| l.strip_prefix("ffmpeg version ")).unwrap_or("").to_string();
    let version = version.split_whitespace().next().unwrap_or("").to_string();
    let major: Option<u32> = version.trim_start_matches('n').split(['.', '-']).next().and_then(|m| m.parse().ok());
    match major {
        Some(m) if m >= MIN_FFMPEG_MAJOR => {}
        Some(_) => {
            return Err(format!("ffmpeg {version} is too old (graft needs {MIN_FFMPEG_MAJOR} or newer): {FFMPEG_HINT}"))
        }
        // Git builds print `ffmpeg version N-12345-g…`: accept them.
        None if version.starts_with('N') => {}
        None => return Err(format!("`ffmpeg -version` did not print a version: {FFMPEG_HINT}")),
    }
    Command::new("ffprobe")
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the `ffprobe` program ({e}), which comes with ffmpeg: {FFMPEG_HINT}"))?;
    Ok(Ffmpeg { version })
}

/// Frames of one video, all of one size.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    pub count: usize,
    pub height: u32,
    pub width: u32,
    /// `count × height × width × 3` bytes.
    pub data: Vec<u8>,
}

/// Where frames are resized to: the short side `short` (0: kept), at most `max_frames`.
#[derive(Copy, Clone, Debug)]
pub struct FrameSize {
    pub short: u32,
    pub max_frames: usize,
    pub interpolation: Interpolation,
}

impl FrameSize {
    fn target(&self, h: u32, w: u32) -> (u32, u32) {
        if self.short == 0 || h.min(w) <= self.short {
            (h, w)
        } else {
            short_side_size(h, w, self.short)
        }
    }
}

/// `ffprobe`'s width and height of the first video stream.
fn probe(path: &Path) -> Result<(u32, u32), String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ffprobe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let dims: Vec<u32> = text.trim().split(',').filter_map(|x| x.trim().parse().ok()).collect();
    match dims[..] {
        [w, h, ..] if out.status.success() && w > 0 && h > 0 => Ok((w, h)),
        _ => Err(last_line(&out.stderr).unwrap_or_else(|| "no video stream".into())),
    }
}

fn last_line(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr).lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
}

/// Decode a video file's frames with `ffmpeg`, resized to `size`.
pub fn decode_video(path: &Path, size: &FrameSize) -> Result<Frames, String> {
    let (w, h) = probe(path)?;
    if w as u64 * h as u64 > super::decode::MAX_PIXELS {
        return Err(format!("{w}×{h} frames are too large"));
    }
    let (th, tw) = size.target(h, w);
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-noautorotate", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("ffmpeg gave no output pipe")?;
    // Read stderr on a thread so a chatty ffmpeg never blocks on a full pipe.
    let mut stderr = child.stderr.take().ok_or("ffmpeg gave no error pipe")?;
    let errs = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let frame_bytes = w as usize * h as usize * 3;
    let mut frame = vec![0u8; frame_bytes];
    let mut data = Vec::new();
    let mut count = 0;
    while count < size.max_frames {
        if stdout.read_exact(&mut frame).is_err() {
            break;
        }
        let img = Rgb { width: w, height: h, data: std::mem::take(&mut frame) };
        let r = resize(&img, th, tw, size.interpolation);
        frame = img.data;
        data.extend_from_slice(&r.data);
        count += 1;
    }
    drop(stdout);
    let stopped_early = count == size.max_frames;
    if stopped_early {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("waiting for ffmpeg: {e}"))?;
    let errs = errs.join().unwrap_or_default();
    if !stopped_early && !status.success() {
        return Err(last_line(&errs).unwrap_or_else(|| format!("ffmpeg failed ({status})")));
    }
    if count == 0 {
        return Err(last_line(&errs).unwrap_or_else(|| "no frames".into()));
    }
    Ok(Frames { count, height: th, width: tw, data })
}

/// Whether a file name is a video container graft hands to ffmpeg.
pub fn is_video_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v"].iter().any(|e| lower.ends_with(e))
}

/// The image files of a frame folder, sorted by name.
pub fn frame_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| is_image_name(&n.to_string_lossy())))
        .collect();
    files.sort();
    Ok(files)
}

/// Decode a frame folder; every frame is resized to the first frame's target size.
pub fn decode_frame_folder(dir: &Path, size: &FrameSize) -> Result<Frames, String> {
    let files = frame_files(dir).map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    let mut dims = None;
    let mut count = 0;
    for f in files.iter().take(size.max_frames) {
        let bytes = crate::input_file::read_limited(f, 256 << 20).map_err(|e| format!("{}: {e}", f.display()))?;
        let img = decode_image(&bytes).map_err(|e| format!("{}: {e}", f.display()))?;
        let (th, tw) = *dims.get_or_insert_with(|| size.target(img.height, img.width));
        data.extend_from_slice(&resize(&img, th, tw, size.interpolation).data);
        count += 1;
    }
    let Some((height, width)) = dims else {
        return Err("no image files in the frame folder".into());
    };
    Ok(Frames { count, height, width, data })
}

/// Decode any audio container with `ffmpeg` to mono f32 at `rate` Hz (ffmpeg's
/// resampler), at most `max_samples`.
pub fn decode_audio(path: &Path, rate: u32, max_samples: usize) -> Result<Vec<f32>, String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-ac", "1", "-ar", &rate.to_string(), "-f", "s16le", "-"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e} ({FFMPEG_HINT})"))?;
    if !out.status.success() {
        return Err(last_line(&out.stderr).unwrap_or_else(|| format!("ffmpeg failed ({})", out.status)));
    }
    let wave: Vec<f32> = out
        .stdout
        .chunks_exact(2)
        .take(max_samples)
        .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
        .collect();
    if wave.is_empty() {
        return Err("no audio samples".into());
    }
    Ok(wave)
}
