//! Resampling a position table when weights load: fine-tuning at another image size
//! or clip length than the checkpoint's.
//!
//! A binding's rule `resample "pos_embed" [14, 14] -> [24, 24] keep 1` says that the
//! file's `pos_embed` is `[1, keep + 14·14, D]` (the first `keep` rows are class /
//! register tokens, kept as they are) and the spec's `[1, keep + 24·24, D]`; a table
//! declared without the leading 1 (`[keep + 14·14, D]`, CLIP's
//! `position_embedding.weight`) is resampled the same way. The grid
//! is resampled like timm's `resample_abs_pos_embed`: PyTorch's antialiased bicubic
//! (`F.interpolate(mode="bicubic", antialias=True, align_corners=False)`), one axis
//! after the other. A 3-D grid (`[T, H, W]`, video) uses the same kernel on each of
//! its three axes. Computed in float64, stored in the parameter's dtype.

use super::ParamError;
pub use crate::keymap::Resample;
use crate::tensor::HostTensor;

/// Resample `t` (`[1, keep + prod(from), D]`, or `[keep + prod(from), D]`) to
/// `[1, keep + prod(to), D]` (`[keep + prod(to), D]`).
pub fn apply(rule: &Resample, t: &HostTensor) -> Result<HostTensor, ParamError> {
    rule.apply_to(t)
}

impl Resample {
    fn apply_to(&self, t: &HostTensor) -> Result<HostTensor, ParamError> {
        let d = *t.shape.last().unwrap_or(&0);
        let (want, out_shape) = self.shapes(&t.shape);
        let one_table = t.shape.len() >= 2 && t.shape[..t.shape.len() - 2].iter().all(|&x| x == 1);
        if t.shape != want || !one_table {
            return Err(ParamError::Binding(format!(
                "resample `{}`: the file's table is {}, the rule says {want:?} (keep {} + grid {:?}, width {d})",
                self.key,
                t.type_text(),
                self.keep,
                self.from
            )));
        }
        let v = t.to_f64();
        let (keep, d) = (self.keep as usize, d as usize);
        let mut grid: Vec<f64> = v[keep * d..].to_vec();
        let mut dims: Vec<usize> = self.from.iter().map(|&x| x as usize).collect();
        for axis in 0..dims.len() {
            let to = self.to[axis] as usize;
            grid = resize_axis(&grid, &dims, d, axis, to);
            dims[axis] = to;
        }
        let mut out = v[..keep * d].to_vec();
        out.extend(grid);
        HostTensor::from_f64_as(t.dtype, &out_shape, &out)
            .ok_or_else(|| ParamError::Internal(format!("resample `{}`: size mismatch", self.key)))
    }
}

/// PyTorch's antialiasing bicubic filter (a = -0.5, as PIL).
fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// For each output index: the first input index and the normalised weights
/// (`_compute_indices_weights_aa`, align_corners = false).
fn taps(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax).map(|j| cubic((j as f64 - center + 0.5) * invscale)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|x| *x /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Resize `axis` of a row-major grid `dims` × `d` channels to `to` points.
fn resize_axis(x: &[f64], dims: &[usize], d: usize, axis: usize, to: usize) -> Vec<f64> {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product::<usize>() * d;
    let n = dims[axis];
    let taps = taps(n, to);
    let mut out = vec![0.0; outer * to * inner];
    for o in 0..outer {
        for (i, (start, w)) in taps.iter().enumerate() {
            let dst = &mut out[(o * to + i) * inner..(o * to + i + 1) * inner];
            for (k, wk) in w.iter().enumerate() {
                let src = &x[(o * n + start + k) * inner..(o * n + start + k + 1) * inner];
                for (y, s) in dst.iter_mut().zip(src) {
                    *y += wk * s;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity_and_prefix_rows_are_kept() {
        let r = Resample { key: "pos_embed".into(), from: vec![2, 3], to: vec![2, 3], keep: 1 };
        let v: Vec<f32> = (0..14).map(|i| i as f32 * 0.5).collect();
        let t = HostTensor::from_f32(&[1, 7, 2], &v).unwrap();
        assert_eq!(apply(&r, &t).unwrap(), t);
        // A constant grid stays constant (the weights are normalised); the class row stays.
        let r = Resample { key: "pos_embed".into(), from: vec![2, 2], to: vec![3, 5], keep: 1 };
        let mut v = vec![9.0f32, -9.0];
        v.extend(std::iter::repeat_n([1.5f32, -2.0], 4).flatten());
        let out = apply(&r, &HostTensor::from_f32(&[1, 5, 2], &v).unwrap()).unwrap();
        assert_eq!(out.shape, vec![1, 16, 2]);
        let o = out.as_f32().unwrap();
        assert_eq!(&o[..2], &[9.0, -9.0]);
        assert!(o[2..].chunks(2).all(|c| (c[0] - 1.5).abs() < 1e-6 && (c[1] + 2.0).abs() < 1e-6));
        // A table without the leading 1 (CLIP's `[tokens, D]`): the same values.
        let flat = HostTensor::from_f32(&[5, 2], &v).unwrap();
        let out2 = apply(&r, &flat).unwrap();
        assert_eq!(out2.shape, vec![16, 2]);
        assert_eq!(out2.as_f32().unwrap(), o);
        assert_eq!(r.shapes(&[5, 2]), (vec![5, 2], vec![16, 2]));
        // A wrong file shape is a clear error.
        let err = apply(&r, &HostTensor::from_f32(&[1, 4, 2], &[0.0; 8]).unwrap()).unwrap_err().to_string();
        assert!(err.contains("the rule says [1, 5, 2]"), "{err}");
    }
}
