//! What the native backend executes: a [`Program`], the plan specialised to concrete
//! input shapes and to which optional inputs are present, as a list of [`Step`]s over
//! views into one arena, the parameters and integer buffers.
//!
//! A [`View`] is a tensor whose rows (all dims but the last) are uniformly strided, so
//! a head's columns of a fused qkv buffer, a selected token or a reshape cost nothing.
//! Values produced by a patch-embedding convolution stay token-major
//! ([`View::token_major`]) until a consumer needs another layout.

use super::ew::{EwBroadcast, EwInstr, EwKernel, EwValue};
use super::rows::ConvGeom;

/// Which storage a view addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A buffer of the arena (index into [`Program::buffers`]).
    Arena(usize),
    /// A parameter, read-only.
    Param(usize),
}

/// A float tensor: `shape`, stored as rows of its last dim starting at `offset`, one
/// row every `rs` elements.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub store: Store,
    pub offset: usize,
    pub rs: usize,
    pub shape: Vec<usize>,
    /// The logical `[B, C, s…]` is stored `[B, Π s, C]` (a convolution's output before
    /// `flatten_tokens`); `offset`/`rs` then describe that physical matrix.
    pub token_major: bool,
}

impl View {
    pub fn plain(store: Store, offset: usize, shape: Vec<usize>) -> View {
        let rs = shape.last().copied().unwrap_or(1);
        View { store, offset, rs, shape, token_major: false }
    }
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Stored as one dense row-major block.
    pub fn contiguous(&self) -> bool {
        !self.token_major && (self.rs == self.cols() || self.rows() <= 1)
    }
    /// Element strides of the logical tensor, dim by dim.
    pub fn strides(&self) -> Vec<usize> {
        let r = self.shape.len();
        let mut st = vec![0usize; r];
        if self.token_major {
            // [B, C, s…] stored as [B, Πs, C] with row stride rs.
            let c = self.shape[1];
            st[0] = self.rs * self.shape[2..].iter().product::<usize>();
            st[1] = 1;
            let mut acc = self.rs;
            for i in (2..r).rev() {
                st[i] = acc;
                acc *= self.shape[i];
            }
            debug_assert!(c <= self.rs);
            return st;
        }
        if r == 0 {
            return st;
        }
        st[r - 1] = 1;
        let mut acc = self.rs;
        for i in (0..r - 1).rev() {
            st[i] = acc;
            acc *= self.shape[i];
        }
        st
    }
    /// Elements from `offset` to one past the last addressed element.
    pub fn span(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        1 + self.shape.iter().zip(self.strides()).map(|(&d, s)| (d - 1) * s).sum::<usize>()
    }
}

/// A general strided tensor (for copies): any strides, 0 for a broadcast dim.
#[derive(Clone, Debug, PartialEq)]
pub struct Strided {
    pub store: Store,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

impl Strided {
    pub fn of(v: &View) -> Strided {
        Strided { store: v.store, offset: v.offset, shape: v.shape.clone(), strides: v.strides() }
    }
}

/// Where an attention mask comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Mask {
    Float(View),
    Ids(usize),
}

/// A group while lowering: its operands as views, its outputs with their buffers.
#[derive(Clone, Debug)]
pub struct EwSpec {
    pub rows: usize,
    pub cols: usize,
    pub inputs: Vec<(View, EwBroadcast)>,
    pub body: Vec<EwInstr>,
    pub outputs: Vec<(EwValue, View)>,
}

/// One step of a forward. Shapes are concrete; every step partitions itself over the
/// threads of a region (GEMMs by output columns, attention by (batch, head), the rest
/// by rows), and no result depends on the partition.
#[derive(Clone)]
pub enum Step {
    /// Copy float input `input` (converted to f32) into `dst` (contiguous).
    LoadInput {
        input: usize,
        dst: View,
    },
    /// Copy integer input `input` into integer buffer `dst`.
    LoadIds {
        input: usize,
        dst: usize,
    },
    /// Zero-fill `dst` (an absent `= zeros` input).
    Zero {
        dst: View,
    },
    /// The fixed sine-cosine position table `[1, T, D]` into `dst` (computed in f64,
    /// rounded to f32, as the LibTorch backend does).
    Sinusoid {
        dst: View,
    },
    /// `dst = src` element by element (permutes, broadcasts, concat parts, layouts).
    Copy {
        src: Strided,
        dst: Strided,
    },
    /// Per group: `y[m, n/g] = x[m, k/g] · w[n/g, k/g]ᵀ (+ bias)`, the bias broadcast
    /// into `y` first and the product accumulated onto it.
    Linear {
        x: View,
        w: View,
        bias: Option<View>,
        y: View,
        groups: usize,
    },
    /// Token-major patches of a convolution input.
    Im2col {
        x: View,
        geom: ConvGeom,
        dst: View,
    },
    /// Layer norm of `x` into `out`; with `add`, `x` is first written as `a + b`.
    LayerNorm {
        x: View,
        gamma: View,
        beta: View,
        eps: f32,
        out: View,
        add: Option<(View, View)>,
    },
    /// A fused elementwise group over `[rows, cols]`.
    Ew {
        kernel: EwKernel,
        rows: usize,
        cols: usize,
        inputs: Vec<(View, EwBroadcast)>,
        outputs: Vec<View>,
    },
    /// Multi-head attention; `scratch` holds one `[tq, tk]` score matrix per thread.
    Attention {
        q: View,
        k: View,
        v: View,
        mask: Option<Mask>,
        out: View,
        heads: usize,
        scale: f32,
        scratch: View,
    },
    Embedding {
        ids: usize,
        table: View,
        out: View,
        path: String,
    },
    MeanTokens {
        x: View,
        out: View,
    },
    /// A fusion group still being formed (only while lowering).
    EwPending(Box<EwSpec>),
    /// `out[b] = a[b] · w` for `batch` blocks (`w` shared when `shared`).
    MatMul {
        a: View,
        w: View,
        out: View,
        batch: usize,
        shared: bool,
    },
}

/// An arena buffer: `len` f32 elements at `offset` (elements) once laid out.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub len: usize,
    pub first: usize,
    pub last: usize,
    pub offset: usize,
}

/// An output of the program.
#[derive(Clone, Debug)]
pub enum OutVal {
    Float(View),
    Ids { buf: usize, shape: Vec<usize> },
}

/// The plan for one set of input shapes and present inputs.
pub struct Program {
    pub steps: Vec<Step>,
    pub buffers: Vec<Buffer>,
    /// Integer buffers: ids inputs (filled per run) and constant positions.
    pub ids: Vec<Vec<i64>>,
    pub outputs: Vec<(String, OutVal)>,
    /// Arena size in f32 elements, and the most bytes live at once.
    pub arena_len: usize,
    pub peak_live_bytes: usize,
}
