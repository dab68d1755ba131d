//! The names the language provides without a definition.
//!
//! Parametric primitives are instantiated like modules (`fc1 = linear(384, 1536)(x)`)
//! and own parameters; functions are applied inline (`gelu(x)`) and own none.

/// Primitives that own parameters: `name = prim(config)(inputs)`.
pub const PRIMITIVES: &[&str] = &["linear", "grouped_linear", "layernorm", "conv2d", "conv3d", "embedding", "param"];

/// Tensor functions: `f(tensors, options)`.
pub const TENSOR_FNS: &[&str] = &[
    "gelu",
    "relu",
    "tanh",
    "sigmoid",
    "sinusoid_positions",
    "sdpa",
    "split",
    "concat",
    "mean_tokens",
    "token",
    "positions",
    "flatten_tokens",
    "reshape",
    "permute",
];

/// Scalar functions over configuration values. `features(x)` is the last dimension
/// of a tensor whose shape is known (an adapter's inputs: `context_dim: int =
/// features(context)`).
pub const SCALAR_FNS: &[&str] = &["int", "float", "min", "max", "len", "sqrt", "features"];

/// Names an adapter module's parameter defaults may read: the features the adapter
/// receives at its site and the features it must give back (`in_features: int =
/// site_in`). Defined only while a module is instantiated as an adapter.
pub const SITE_NAMES: [&str; 2] = ["site_in", "site_out"];

pub fn is_builtin(name: &str) -> bool {
    PRIMITIVES.contains(&name) || TENSOR_FNS.contains(&name) || SCALAR_FNS.contains(&name)
}

/// Closest candidates to `name` by edit distance, for "did you mean" hints.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>, n: usize) -> Vec<&'a str> {
    let limit = |c: &str| (name.len().max(c.len()) / 2).max(2);
    let len = name.chars().count();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        // The difference in length bounds the distance from below: skip hopeless ones
        // without the quadratic comparison.
        .filter(|c| len.abs_diff(c.chars().count()) <= limit(c))
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= limit(c))
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(n).map(|(_, c)| c).collect()
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}
