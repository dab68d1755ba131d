//! The one comparator of named tensor lists, for every test that checks one
//! computation against another (native against LibTorch, two ranks against one
//! process, a replayed graph against eager code, graft against a reference file).
//!
//! It fails, with the tensor's name, when the lists differ in length or in names (in
//! order), when shapes or known dtypes differ, when either side holds NaN or ±∞, and
//! when the error is past the tolerance; a failure names the worst element by its
//! index. Nothing is zipped away: a missing tensor is an error, not a shorter loop.

use graft::tensor::HostTensor;
use std::fmt;

/// A tensor's values as `f64`, row-major, with its shape (and dtype where known).
#[derive(Clone, Debug, PartialEq)]
pub struct Values {
    pub shape: Vec<i64>,
    pub data: Vec<f64>,
    /// Compared when both sides know it.
    pub dtype: Option<String>,
}

impl Values {
    /// Values of a shape; panics if they disagree (a bug in the test).
    pub fn new(shape: &[i64], data: Vec<f64>) -> Values {
        let n: i64 = shape.iter().product();
        assert_eq!(n as usize, data.len(), "shape {shape:?} does not hold {} values", data.len());
        Values { shape: shape.to_vec(), data, dtype: None }
    }

    /// `f32` values of a shape (kernel outputs).
    pub fn f32(shape: &[i64], data: &[f32]) -> Values {
        let mut v = Values::new(shape, data.iter().map(|&x| x as f64).collect());
        v.dtype = Some("F32".into());
        v
    }

    /// The multi-dimensional index of flat element `i`.
    pub fn index(&self, mut i: usize) -> Vec<usize> {
        let mut idx = vec![0; self.shape.len()];
        for (k, &d) in self.shape.iter().enumerate().rev() {
            let d = d.max(1) as usize;
            idx[k] = i % d;
            i /= d;
        }
        idx
    }
}

impl From<&HostTensor> for Values {
    fn from(t: &HostTensor) -> Values {
        let mut v = Values::new(&t.shape, t.to_f64());
        v.dtype = Some(format!("{:?}", t.dtype));
        v
    }
}

/// Named values from named host tensors.
pub fn named(ts: &[(String, HostTensor)]) -> Vec<(String, Values)> {
    ts.iter().map(|(n, t)| (n.clone(), Values::from(t))).collect()
}

/// How close is close enough.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tol {
    /// Norm-wise: ‖got − want‖₂ ≤ rel·‖want‖₂ (≤ rel when `want` is all zeros); the
    /// metric `graft fuse` reports.
    Norm { rel: f64 },
    /// Element-wise: max |got − want| ≤ abs + rel·max |want|.
    Max { abs: f64, rel: f64 },
    /// Bit for bit (as `f64`, which every narrower float converts to exactly).
    Exact,
}

/// What the comparison of one tensor measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    pub name: String,
    /// ‖got − want‖₂ / ‖want‖₂ (the absolute norm when `want` is all zeros).
    pub rel: f64,
    /// max |got − want|, at `worst` (a multi-dimensional index).
    pub max_abs: f64,
    pub worst: Vec<usize>,
    pub got: f64,
    pub want: f64,
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: relative error {:.3e}, max |Δ| {:.3e} at {:?} (got {:e}, want {:e})",
            self.name, self.rel, self.max_abs, self.worst, self.got, self.want
        )
    }
}

fn names(v: &[(String, Values)]) -> Vec<&str> {
    v.iter().map(|(n, _)| n.as_str()).collect()
}

/// The first element of `v` that is NaN or ±∞.
fn non_finite(v: &Values) -> Option<(usize, f64)> {
    v.data.iter().position(|x| !x.is_finite()).map(|i| (i, v.data[i]))
}

/// Compare one tensor; `Err` says why it does not pass.
pub fn compare_one(name: &str, got: &Values, want: &Values, tol: Tol) -> Result<Stat, String> {
    if got.shape != want.shape {
        return Err(format!("`{name}`: shape {:?}, expected {:?}", got.shape, want.shape));
    }
    if got.data.len() != want.data.len() {
        return Err(format!("`{name}`: {} values, expected {}", got.data.len(), want.data.len()));
    }
    if let (Some(a), Some(b)) = (&got.dtype, &want.dtype) {
        if a != b {
            return Err(format!("`{name}`: dtype {a}, expected {b}"));
        }
    }
    for (side, v) in [("got", got), ("expected", want)] {
        if let Some((i, x)) = non_finite(v) {
            return Err(format!("`{name}`: {side} {x} at {:?}", v.index(i)));
        }
    }
    let (mut num, mut den, mut max_abs, mut at) = (0f64, 0f64, 0f64, 0usize);
    for (i, (&a, &b)) in got.data.iter().zip(&want.data).enumerate() {
        let d = (a - b).abs();
        num += d * d;
        den += b * b;
        if d > max_abs {
            (max_abs, at) = (d, i);
        }
    }
    let (num, den) = (num.sqrt(), den.sqrt());
    let rel = if den == 0.0 { num } else { num / den };
    let (g, w) = got.data.get(at).zip(want.data.get(at)).map(|(g, w)| (*g, *w)).unwrap_or((0.0, 0.0));
    let stat = Stat { name: name.to_string(), rel, max_abs, worst: got.index(at), got: g, want: w };
    let (ok, bound) = match tol {
        Tol::Norm { rel: r } => (rel <= r, format!("relative error ≤ {r:e}")),
        Tol::Max { abs, rel: r } => {
            let scale = want.data.iter().fold(0f64, |m, x| m.max(x.abs()));
            let limit = abs + r * scale;
            (max_abs <= limit, format!("max |Δ| ≤ {limit:e} ({abs:e} + {r:e}·max|want| {scale:e})"))
        }
        Tol::Exact => {
            let same = got.data.iter().zip(&want.data).all(|(a, b)| a.to_bits() == b.to_bits());
            (same, "bit-identical".to_string())
        }
    };
    if ok {
        Ok(stat)
    } else {
        Err(format!("{stat}; expected {bound}"))
    }
}

/// Compare two named lists: the same names in the same order, each tensor within
/// `tol`. `Ok` holds what was measured per tensor.
pub fn compare(got: &[(String, Values)], want: &[(String, Values)], tol: Tol) -> Result<Vec<Stat>, String> {
    if got.len() != want.len() || names(got) != names(want) {
        return Err(format!("{} tensors {:?}, expected {} {:?}", got.len(), names(got), want.len(), names(want)));
    }
    if got.is_empty() {
        return Err("nothing to compare: both lists are empty".into());
    }
    let mut stats = Vec::new();
    let mut errors = Vec::new();
    for ((name, g), (_, w)) in got.iter().zip(want) {
        match compare_one(name, g, w, tol) {
            Ok(s) => stats.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(stats)
    } else {
        Err(errors.join("\n"))
    }
}

/// The measurements of [`compare`] with no bound on the error: names, shapes and
/// finiteness are still checked (for tests that want two results to differ).
pub fn measure(got: &[(String, Values)], want: &[(String, Values)]) -> Result<Vec<Stat>, String> {
    compare(got, want, Tol::Norm { rel: f64::INFINITY })
}

/// [`compare`], panicking with `what` and the reasons; returns the measurements.
#[track_caller]
pub fn assert_close(what: &str, got: &[(String, Values)], want: &[(String, Values)], tol: Tol) -> Vec<Stat> {
    compare(got, want, tol).unwrap_or_else(|e| panic!("{what}:\n{e}"))
}

/// [`assert_close`] over host tensors.
#[track_caller]
pub fn assert_close_host(
    what: &str,
    got: &[(String, HostTensor)],
    want: &[(String, HostTensor)],
    tol: Tol,
) -> Vec<Stat> {
    assert_close(what, &named(got), &named(want), tol)
}
