//! Whether a dataset fits what a spec's inputs declare beyond their shapes: the
//! normalisation (`input image: f32[B, 3, 224, 224] normalized imagenet`) against the
//! transform `dataset.json` records. `graft train`, `eval` and `data check --spec`
//! report through here before any weight loads.

use crate::data::Dataset;
use crate::pipeline::Compiled;

/// The inputs' declared normalisation (`normalized imagenet`) against the transform
/// each records in `dataset.json`: (mismatches, notes). An input stored as plain
/// tensors records none, so its declaration is a note, not an error.
pub fn check_normalization(c: &Compiled, ds: &Dataset) -> (Vec<String>, Vec<String>) {
    use crate::data::Transform;
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for (input, want) in &c.input_norms {
        let (line, col) = c.sources.line_col(want.span);
        let at = format!("{}:{line}:{col}", c.sources.get(want.span.file).name);
        let Some(spec) = ds.meta.inputs.get(input) else { continue };
        let (mean, std, audio) = match &spec.transform {
            Some(Transform::Image(i)) => (i.normalize.mean.clone(), i.normalize.std.clone(), false),
            Some(Transform::Video(v)) => (v.image.normalize.mean.clone(), v.image.normalize.std.clone(), false),
            Some(Transform::Audio(a)) => (vec![a.mean], vec![a.std], true),
            None => {
                notes.push(format!(
                    "data input `{input}` is stored as plain tensors with no recorded transform: the \
                     normalisation {at} declares ({}) is not checked",
                    want.describe()
                ));
                continue;
            }
        };
        if mean != want.mean || std != want.std {
            let list = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
            let flag = match (&want.name, audio) {
                (Some(n), false) if n != "audioset" => format!("--mean {n}"),
                _ => format!("--mean {} --std {}", list(&want.mean), list(&want.std)),
            };
            problems.push(format!(
                "input `{input}` is normalised with mean {mean:?} std {std:?} in {}, but {at} declares `normalized {}`: \
                 re-import the data with `{flag}`, or change the declaration",
                ds.dir.join("dataset.json").display(),
                want.describe()
            ));
        }
    }
    (problems, notes)
}
