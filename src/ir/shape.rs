//! Tensor types of the IR: element types and shapes with symbolic dimensions.

use serde::Serialize;
use std::fmt;

/// Element type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    Bool,
    /// Raw pixel values, only as given to an input declared `normalized` (see
    /// [`PixelNorm`](super::PixelNorm)): no spec or dataset declares it, so
    /// [`DType::parse`] does not know it.
    U8,
}

impl DType {
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "f64" => DType::F64,
            "i64" => DType::I64,
            "i32" => DType::I32,
            "bool" => DType::Bool,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::Bool => "bool",
            DType::U8 => "u8",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32)
    }
}

/// One dimension: a known size or a symbol bound at run time (`B`, `T`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Sym(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => write!(f, "{s}"),
        }
    }
}

pub type Shape = Vec<Dim>;

/// A value's type: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn fixed(dtype: DType, dims: &[i64]) -> TensorType {
        TensorType { dtype, shape: dims.iter().map(|&d| Dim::Fixed(d)).collect() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Dimension `i`, negative counting from the end.
    pub fn dim(&self, i: isize) -> Option<&Dim> {
        let r = self.shape.len() as isize;
        let i = if i < 0 { r + i } else { i };
        if i < 0 || i >= r {
            None
        } else {
            self.shape.get(i as usize)
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Two dims that may stand for the same size (symbols are checked at run time).
pub fn dims_compatible(a: &Dim, b: &Dim) -> bool {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => x == y,
        (Dim::Sym(x), Dim::Sym(y)) => x == y,
        _ => true,
    }
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r { Some(&a[i + a.len() - r]) } else { None };
        let db = if i + b.len() >= r { Some(&b[i + b.len() - r]) } else { None };
        out.push(match (da, db) {
            (Some(x), None) => x.clone(),
            (None, Some(y)) => y.clone(),
            (Some(x), Some(y)) => {
                if x == y || *y == Dim::Fixed(1) {
                    x.clone()
                } else if *x == Dim::Fixed(1) {
                    y.clone()
                } else if dims_compatible(x, y) {
                    // A symbol against a size: the size is what the program needs.
                    if x.fixed().is_some() {
                        x.clone()
                    } else {
                        y.clone()
                    }
                } else {
                    return None;
                }
            }
            (None, None) => unreachable!("i < r"),
        });
    }
    Some(out)
}
