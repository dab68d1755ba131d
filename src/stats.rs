//! Named normalisation statistics, shared by the spec front end (`normalized
//! imagenet`) and the data pipeline (`graft data import --mean imagenet`), so both read
//! one table.

/// Image statistics by name: `imagenet`, `clip`, `0.5` (many ViT checkpoints,
/// VideoMAE's processor), `none` (0 / 1: only scaled to [0, 1]).
pub const NAMED_STATS: [(&str, [f32; 3], [f32; 3]); 4] = [
    ("imagenet", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ("clip", [0.481_454_66, 0.457_827_5, 0.408_210_73], [0.268_629_54, 0.261_302_6, 0.275_777_1]),
    ("0.5", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ("none", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
];

/// AudioSet's filter-bank mean, as `ASTFeatureExtractor` normalises.
pub const AST_MEAN: f32 = -4.267_739_3;
/// AudioSet's filter-bank std (the extractor divides by twice it).
pub const AST_STD: f32 = 4.568_997_4;

/// Per-channel normalisation as a table: `(v / 255 − mean[c]) / std[c]` for every
/// byte `v` of every channel `c`, in f32. The data pipeline normalises through it and a
/// backend normalises raw pixels through it, so both give the same bits.
pub fn norm_lut(mean: &[f32], std: &[f32]) -> Vec<[f32; 256]> {
    mean.iter().zip(std).map(|(&m, &s)| std::array::from_fn(|v| (v as f32 / 255.0 - m) / s)).collect()
}
