//! Renderers for the synthetic modalities. Each draws its nuisance parameters from the
//! generator it is given and writes one sample, row-major, into an `f32` slice.
//!
//! - video `f32[3, 8, 32, 32]` (C, T, H, W): a bright filled shape (square, disc, cross,
//!   triangle; radius 4–6.5 px, random colour) moving 1.2–2 px/frame in one of four
//!   directions over a dark, tinted, noisy background. Values in about [-1.2, 1.1].
//! - audio `f32[1, 32, 64]` (mel × time): a tone in one of four mel bands (centres 4.5,
//!   12, 19.5, 27 ± 1.5 bins), pulsing slow (period 16) or fast (period 8), over a
//!   noisy, gently sloped floor with two broadband clicks. Values in about [-1.1, 1.5].
//! - pose `f32[8, 5, 2]` (frame, keypoint, x/y): head, left hand, right hand, left
//!   foot, right foot in body coordinates (y down, about [-1, 1]) doing one of four
//!   gestures — wave (one hand above the head, swinging), raise (both hands rise
//!   overhead), clap (hands meet in front of the chest), squat (the body dips) —
//!   with random body position, scale, tempo and per-frame jitter.

use crate::rng::Rng;
use std::f32::consts::PI;

pub const VIDEO_SHAPE: [i64; 4] = [3, 8, 32, 32];
pub const AUDIO_SHAPE: [i64; 3] = [1, 32, 64];
pub const POSE_SHAPE: [i64; 3] = [8, 5, 2];
pub const VIDEO_LEN: usize = 3 * 8 * 32 * 32;
pub const AUDIO_LEN: usize = 32 * 64;
pub const POSE_LEN: usize = 8 * 5 * 2;

pub const SHAPES: [&str; 4] = ["square", "disc", "cross", "triangle"];
/// Motion directions; `direction / 2` is the axis (0 horizontal, 1 vertical).
pub const DIRECTIONS: [&str; 4] = ["right", "left", "down", "up"];
/// Audio bands, low to high; `band / 2` is the pitch (0 low, 1 high).
pub const BANDS: [&str; 4] = ["band_0", "band_1", "band_2", "band_3"];
/// Gestures; `gesture / 2` is the group (0 hands up, 1 hands low).
pub const GESTURES: [&str; 4] = ["wave", "raise", "clap", "squat"];

const T: usize = 8;
const S: usize = 32;

fn inside(shape: usize, dx: f32, dy: f32, r: f32) -> bool {
    match shape {
        0 => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
        1 => dx * dx + dy * dy <= r * r,
        2 => (dx.abs() <= 0.35 * r && dy.abs() <= r) || (dy.abs() <= 0.35 * r && dx.abs() <= r),
        _ => dy >= -r && dy <= 0.8 * r && dx.abs() <= 0.55 * (dy + r),
    }
}

/// A moving shape; `out.len() == VIDEO_LEN`.
pub fn video(shape: usize, direction: usize, rng: &mut Rng, out: &mut [f32]) {
    let r = rng.range(4.0, 6.5);
    let speed = rng.range(1.2, 2.0);
    let travel = speed * (T - 1) as f32;
    let (lo, hi) = (r + 0.5, S as f32 - 1.0 - r - 0.5);
    let forward = direction.is_multiple_of(2);
    let along = if forward { rng.range(lo, hi - travel) } else { rng.range(lo + travel, hi) };
    let across = rng.range(lo, hi);
    let step = if forward { speed } else { -speed };
    let (x0, y0, vx, vy) = if direction < 2 { (along, across, step, 0.0) } else { (across, along, 0.0, step) };
    let mut colour = [rng.range(0.2, 1.0), rng.range(0.2, 1.0), rng.range(0.2, 1.0)];
    let top = colour.iter().cloned().fold(0.0, f32::max);
    colour.iter_mut().for_each(|c| *c /= top);
    let tint = [rng.range(-0.85, -0.45), rng.range(-0.85, -0.45), rng.range(-0.85, -0.45)];
    rng.fill_noise(out, 0.3);
    for t in 0..T {
        let (cx, cy) = (x0 + vx * t as f32, y0 + vy * t as f32);
        for y in 0..S {
            for x in 0..S {
                let on = inside(shape, x as f32 - cx, y as f32 - cy, r);
                for c in 0..3 {
                    let v = &mut out[((c * T + t) * S + y) * S + x];
                    *v = if on { 0.35 + 0.6 * colour[c] + 0.3 * *v } else { tint[c] + *v };
                }
            }
        }
    }
}

pub const BAND_CENTRES: [f32; 4] = [4.5, 12.0, 19.5, 27.0];

/// A pulsing tone; `rhythm` 0 is slow (period 16 frames), 1 fast (period 8).
pub fn audio(band: usize, rhythm: usize, rng: &mut Rng, out: &mut [f32]) {
    let (mels, frames) = (AUDIO_SHAPE[1] as usize, AUDIO_SHAPE[2] as usize);
    let centre = BAND_CENTRES[band] + rng.range(-1.5, 1.5);
    let sigma = rng.range(1.0, 1.6);
    let amp = rng.range(1.0, 1.5);
    let period = if rhythm == 0 { 16 } else { 8 };
    let phase = rng.below(period as u64) as usize;
    let clicks = [rng.below(frames as u64) as usize, rng.below(frames as u64) as usize];
    rng.fill_noise(out, 0.25);
    for m in 0..mels {
        let floor = -0.8 + 0.2 * (1.0 - m as f32 / (mels - 1) as f32);
        let d = m as f32 - centre;
        let tone = amp * (-d * d / (2.0 * sigma * sigma)).exp();
        for t in 0..frames {
            let on = (t + phase) % period < period / 2;
            let click = if clicks.contains(&t) { 0.3 } else { 0.0 };
            out[m * frames + t] += floor + click + if on { tone } else { 0.0 };
        }
    }
}

/// A gesture; `out.len() == POSE_LEN`.
pub fn pose(gesture: usize, rng: &mut Rng, out: &mut [f32]) {
    let scale = rng.range(0.8, 1.1);
    let (ox, oy) = (rng.range(-0.15, 0.15), rng.range(-0.15, 0.15));
    let phase = rng.range(0.0, 2.0 * PI);
    let tempo = rng.range(0.8, 1.2);
    let side = if rng.below(2) == 0 { -1.0 } else { 1.0 };
    for t in 0..T {
        let p = t as f32 / (T - 1) as f32;
        let swing = (2.0 * PI * 2.0 * tempo * p + phase).sin();
        let mut k: [(f32, f32); 5] = [(0.0, -0.6), (-0.35, 0.0), (0.35, 0.0), (-0.2, 0.8), (0.2, 0.8)];
        match gesture {
            0 => {
                let h = if side < 0.0 { 1 } else { 2 };
                k[h] = (side * 0.45 + 0.2 * swing, -0.75);
            }
            1 => {
                let up = p * p * (3.0 - 2.0 * p);
                k[1] = (-0.35 + 0.15 * up, -0.85 * up);
                k[2] = (0.35 - 0.15 * up, -0.85 * up);
            }
            2 => {
                let open = 0.05 + 0.3 * (0.5 + 0.5 * swing);
                k[1] = (-open, -0.15);
                k[2] = (open, -0.15);
            }
            _ => {
                let dip = 0.35 * (PI * p * tempo).sin().abs();
                k[0].1 += dip;
                k[1] = (-0.3, -0.1 + dip);
                k[2] = (0.3, -0.1 + dip);
            }
        }
        for (j, (x, y)) in k.iter().enumerate() {
            let at = (t * 5 + j) * 2;
            out[at] = ox + scale * x + rng.range(-0.03, 0.03);
            out[at + 1] = oy + scale * y + rng.range(-0.03, 0.03);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Hand-written decoders recover each factor: the information the tasks put in a
    //! modality is really there (the ceilings documented in `synth` rest on this).
    use super::*;

    fn decode_direction(v: &[f32]) -> usize {
        let centroid = |t: usize| {
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
            for y in 0..S {
                for x in 0..S {
                    if v[(t * S + y) * S + x] > 0.1 {
                        (sx, sy, n) = (sx + x as f32, sy + y as f32, n + 1.0);
                    }
                }
            }
            (sx / n, sy / n)
        };
        let ((x0, y0), (x1, y1)) = (centroid(0), centroid(T - 1));
        let (dx, dy) = (x1 - x0, y1 - y0);
        if dx.abs() > dy.abs() {
            if dx > 0.0 {
                0
            } else {
                1
            }
        } else if dy > 0.0 {
            2
        } else {
            3
        }
    }

    fn decode_band(a: &[f32]) -> usize {
        let energy: Vec<f32> =
            (0..32).map(|m| a[m * 64..(m + 1) * 64].iter().cloned().fold(f32::MIN, f32::max)).collect();
        let peak = (0..32).max_by(|&i, &j| energy[i].total_cmp(&energy[j])).unwrap_or(0) as f32;
        (0..4).min_by(|&i, &j| (BAND_CENTRES[i] - peak).abs().total_cmp(&(BAND_CENTRES[j] - peak).abs())).unwrap_or(0)
    }

    fn decode_gesture_group(p: &[f32]) -> usize {
        // Hands above the head in some frame: wave or raise.
        let above = (0..T).any(|t| {
            let head = p[t * 10 + 1];
            p[t * 10 + 3] < head - 0.05 || p[t * 10 + 5] < head - 0.05
        });
        if above {
            0
        } else {
            1
        }
    }

    #[test]
    fn every_factor_is_recoverable() {
        let mut v = vec![0.0; VIDEO_LEN];
        let mut a = vec![0.0; AUDIO_LEN];
        let mut p = vec![0.0; POSE_LEN];
        let mut errors = (0, 0, 0);
        for i in 0..200u64 {
            let mut rng = Rng::derive(&[i]);
            let (shape, dir, band, gesture) =
                (i as usize % 4, (i / 4) as usize % 4, (i / 16) as usize % 4, (i / 64) as usize % 4);
            video(shape, dir, &mut rng, &mut v);
            audio(band, i as usize % 2, &mut rng, &mut a);
            pose(gesture, &mut rng, &mut p);
            errors.0 += (decode_direction(&v) != dir) as usize;
            errors.1 += (decode_band(&a) != band) as usize;
            errors.2 += (decode_gesture_group(&p) != gesture / 2) as usize;
        }
        assert!(errors.0 == 0 && errors.1 <= 2 && errors.2 <= 4, "{errors:?}");
    }

    #[test]
    fn shapes_differ_and_stay_in_frame() {
        let mut masks = Vec::new();
        for shape in 0..4 {
            for dir in 0..4 {
                let mut v = vec![0.0; VIDEO_LEN];
                video(shape, dir, &mut Rng::derive(&[42, dir as u64]), &mut v);
                let mask: Vec<bool> = v[..S * S].iter().map(|&x| x > 0.1).collect();
                // The shape never touches the border (it stays whole in every frame).
                for t in 0..T {
                    for i in 0..S {
                        for (y, x) in [(0, i), (S - 1, i), (i, 0), (i, S - 1)] {
                            assert!(v[(t * S + y) * S + x] < 0.1, "shape {shape} dir {dir} touches the border");
                        }
                    }
                }
                if dir == 0 {
                    masks.push(mask);
                }
            }
        }
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(masks[i], masks[j]);
            }
        }
    }
}
