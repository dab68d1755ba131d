//! Whether a dataset fits what a spec's inputs declare beyond their shapes: the
//! normalisation (`input image: f32[B, 3, 224, 224] normalized imagenet`) against the
//! transform `dataset.json` records. `graft train`, `eval` and `data check --spec`
//! report through here before any weight loads; [`raw_inputs`] names the inputs the
//! model may normalise itself.

use crate::backend::Plan;
use crate::data::Dataset;
use crate::pipeline::Compiled;
use std::collections::BTreeSet;

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

/// The stored image and video inputs the reader may hand over as raw `u8` pixels
/// ([`crate::data::Dataset::raw`]) for `plan` to normalise on its device: the input
/// declares `normalized` with exactly the statistics the dataset records (so the table,
/// and the bits, are the ones the reader would use) over the axis the transform puts
/// the channels on.
pub fn raw_inputs(plan: &Plan, ds: &Dataset) -> BTreeSet<String> {
    use crate::data::{Transform, VideoLayout};
    plan.inputs()
        .iter()
        .filter(|slot| {
            let (Some(norm), Some(spec)) = (&slot.norm, ds.meta.inputs.get(&slot.name)) else { return false };
            let (image, axis) = match &spec.transform {
                Some(Transform::Image(i)) => (i, 1),
                Some(Transform::Video(v)) if v.layout == VideoLayout::Cthw => (&v.image, 1),
                Some(Transform::Video(v)) => (&v.image, 2),
                Some(Transform::Audio(_)) | None => return false,
            };
            spec.stored.is_some()
                && norm.axis == axis
                && norm.mean == image.normalize.mean
                && norm.std == image.normalize.std
        })
        .map(|slot| slot.name.clone())
        .collect()
}
