//! `graft data import`: images, videos or audio files in, a dataset of compact shards
//! out (see [`super::stored`] for the forms, [`super::sources`] for what is read).
//!
//! The samples are listed, put in a seeded order (an image-folder listing is sorted by
//! class, and the batch reader shuffles only two shards at a time), converted on
//! `workers` threads and written a shard at a time, atomically. After each shard the
//! import's state (`import-state.json`: a fingerprint of the options and the listing,
//! the next sample, the skips so far) is written too, so an interrupted import run
//! again with the same arguments continues after its last whole shard; `dataset.json`
//! comes last and the state file goes.
//!
//! A file that cannot be read or decoded (empty, truncated, corrupt, a decompression
//! bomb, an unknown format) is skipped and listed with its reason; every mode PIL
//! converts (grayscale, palette, alpha, CMYK, 16-bit) is converted as
//! `convert("RGB")` does. With `strict`, the first skip is an error. Progress is
//! reported through a callback; the library prints nothing.

use super::audio::{read_wav, resample, to_pcm16};
use super::decode::decode_image;
use super::error::DataError;
use super::meta::{shard_file, InputSpec, Meta, IMPORT_STATE, META_FILE};
use super::sources::{read_source, Item, ItemSource, Listing, Skip};
use super::stored::{Form, Transform};
use super::tensor::{Batch, HostTensor};
use super::transform::{resize, short_side_size};
use super::video::{decode_audio, decode_frame_folder, decode_video, FrameSize};
use super::writer::{DatasetWriter, StoredColumn, Written};
use crate::ir::DType;
use crate::rng::{fnv64, hash_str, Rng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// How samples are stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// uint8 RGB pixels (images), short side at most `store_short_side`.
    Pixels,
    /// The image file's own bytes (decoded while training: crops at full resolution).
    Encoded,
    /// uint8 RGB frames (video).
    Frames,
    /// int16 samples (audio; the filter bank computed while reading).
    Pcm16,
    /// The normalised filter bank, precomputed (f32).
    Fbank,
}

/// What to import and how.
#[derive(Clone, Debug, Serialize)]
pub struct ImportOptions {
    /// The input's name (the model's `input`).
    pub input: String,
    pub store: Store,
    pub transform: Transform,
    /// Images / frames are stored with their short side at most this (0: as they are).
    pub store_short_side: u32,
    /// Frames kept per video.
    pub max_frames: usize,
    pub shard_size: usize,
    pub seed: u64,
    pub strict: bool,
    #[serde(skip)]
    pub workers: usize,
}

/// Where an import stands (reported after every chunk of samples).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub skipped: usize,
    pub bytes: u64,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub written: Written,
    pub skipped: Vec<Skip>,
    /// Samples that were already imported by an interrupted run.
    pub resumed: usize,
}

#[derive(Serialize, Deserialize)]
struct State {
    fingerprint: String,
    next: usize,
    meta: String,
    per_class: Vec<usize>,
    bytes: u64,
    skipped: Vec<Skip>,
}

/// One converted sample.
enum Converted {
    Stored(Vec<u8>, [i64; 3]),
    Plain(Vec<f32>),
}

/// The dataset's declaration of the input.
fn input_spec(o: &ImportOptions) -> Result<InputSpec, DataError> {
    let form = match (o.store, &o.transform) {
        (Store::Pixels, Transform::Image(_)) => Some(Form::Pixels),
        (Store::Encoded, Transform::Image(_)) => Some(Form::Encoded),
        (Store::Frames, Transform::Video(_)) => Some(Form::Frames),
        (Store::Pcm16, Transform::Audio(_)) => Some(Form::Pcm16),
        (Store::Fbank, Transform::Audio(_)) => None,
        (s, _) => return Err(DataError::Invalid(format!("--store {s:?} does not fit this modality").to_lowercase())),
    };
    Ok(InputSpec {
        dtype: DType::F32,
        shape: o.transform.output_shape(),
        optional: false,
        stored: form,
        transform: Some(o.transform.clone()),
    })
}

/// Convert one sample to its stored form.
fn convert(item: &Item, o: &ImportOptions) -> Result<Converted, String> {
    let read = |max: u64| read_source(&item.source, max);
    match &o.transform {
        Transform::Image(t) => {
            let bytes = read(1 << 30)?;
            let img = decode_image(&bytes).map_err(|e| e.to_string())?;
            if o.store == Store::Encoded {
                return Ok(Converted::Stored(bytes, [0, 0, 0]));
            }
            let img = if o.store_short_side > 0 && img.height.min(img.width) > o.store_short_side {
                let (h, w) = short_side_size(img.height, img.width, o.store_short_side);
                resize(&img, h, w, t.interpolation)
            } else {
                img
            };
            Ok(Converted::Stored(img.data, [img.height as i64, img.width as i64, 3]))
        }
        Transform::Video(v) => {
            let size =
                FrameSize { short: o.store_short_side, max_frames: o.max_frames, interpolation: v.image.interpolation };
            let frames = match &item.source {
                ItemSource::FrameDir(d) => decode_frame_folder(d, &size)?,
                ItemSource::File(p) => decode_video(p, &size)?,
                ItemSource::TarMember { .. } => return Err("videos inside tars are not read: extract them".into()),
            };
            Ok(Converted::Stored(frames.data, [frames.count as i64, frames.height as i64, frames.width as i64]))
        }
        Transform::Audio(a) => {
            // What the filter bank of `frames` frames reads, and no more.
            let keep = (a.frames as usize - 1) * (a.sample_rate as usize / 100) + a.sample_rate as usize * 25 / 1000;
            let is_wav = item.name.to_ascii_lowercase().ends_with(".wav");
            let wave = match (&item.source, is_wav) {
                (ItemSource::File(p), false) => decode_audio(p, a.sample_rate, keep)?,
                _ => {
                    let (w, rate) = read_wav(&read(1 << 30)?)?;
                    let need = (keep as u64 * rate as u64).div_ceil(a.sample_rate as u64) as usize + 64;
                    resample(&w[..w.len().min(need)], rate, a.sample_rate)
                }
            };
            let wave = &wave[..wave.len().min(keep)];
            let pcm = to_pcm16(wave);
            if o.store == Store::Fbank {
                let mut out = Vec::new();
                let dims = [wave.len() as i64, 0, 0];
                super::stored::materialize(
                    Form::Pcm16,
                    &o.transform,
                    &pcm,
                    &[0, pcm.len() as i64, dims[0], 0, 0],
                    super::stored::View::Eval(super::stored::EvalView::CENTRE),
                    &mut Rng::new(0),
                    super::stored::Sink::F32(&mut out),
                )?;
                return Ok(Converted::Plain(out));
            }
            Ok(Converted::Stored(pcm, [wave.len() as i64, 0, 0]))
        }
    }
}

/// Convert items on `workers` threads, results in item order.
fn convert_all(items: &[Item], o: &ImportOptions) -> Vec<Result<Converted, String>> {
    let threads = o.workers.max(1).min(items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            items.chunks(chunk).map(|c| s.spawn(move || c.iter().map(|i| convert(i, o)).collect::<Vec<_>>())).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("the converter panicked".into())]))
            .collect()
    })
}

fn fingerprint(listing: &Listing, o: &ImportOptions) -> String {
    let opts = serde_json::to_string(o).unwrap_or_default();
    let names: Vec<String> = listing.items.iter().map(|i| format!("{}\u{0}{}", i.name, i.label)).collect();
    fnv64(&[opts.as_bytes(), names.join("\n").as_bytes(), listing.class_names.join("\n").as_bytes()])
}

/// Import `listing` into the dataset directory `out`.
pub fn import(
    listing: Listing,
    out: &Path,
    task: &str,
    o: &ImportOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<ImportReport, DataError> {
    if o.shard_size == 0 {
        return Err(DataError::Invalid("--shard-size must be at least 1".into()));
    }
    if o.strict {
        if let Some(s) = listing.skipped.first() {
            return Err(DataError::Invalid(format!("{}: {} (--strict)", s.item, s.reason)));
        }
    }
    let spec = input_spec(o)?;
    let classes = listing.class_names.len();
    let mut items = listing.items.clone();
    Rng::derive(&[o.seed, hash_str("graft.data.import")]).shuffle(&mut items);
    let fp = fingerprint(&listing, o);
    let state_path = out.join(IMPORT_STATE);
    let previous: Option<State> = crate::input_file::read_limited(&state_path, 256 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &State| s.fingerprint == fp);
    let (mut writer, mut next, mut skipped) = match previous.and_then(|s| {
        let meta = Meta::parse(&s.meta).ok()?;
        (0..meta.shards).all(|i| out.join(shard_file(i)).is_file()).then_some((s, meta))
    }) {
        Some((s, meta)) => (DatasetWriter::resume(out, meta, s.per_class, s.bytes)?, s.next, s.skipped),
        None => {
            let inputs = BTreeMap::from([(o.input.clone(), spec.clone())]);
            let w =
                DatasetWriter::create(out, task, classes.max(1), listing.class_names.clone(), inputs, Some(o.seed))?;
            (w, 0, listing.skipped.clone())
        }
    };
    let resumed = writer.meta().samples;
    let total = items.len();
    progress(&Progress { done: next, total, skipped: skipped.len(), bytes: writer.bytes() });
    while next < total {
        let mut labels = Vec::new();
        let mut column = StoredColumn::default();
        let mut plain: Vec<f32> = Vec::new();
        // Fill one shard, converting a chunk at a time.
        while labels.len() < o.shard_size && next < total {
            let want = (o.shard_size - labels.len()).min(o.workers.max(1) * 8);
            let end = (next + want).min(total);
            for (item, r) in items[next..end].iter().zip(convert_all(&items[next..end], o)) {
                match r {
                    Ok(Converted::Stored(bytes, dims)) => {
                        column.push(&bytes, dims);
                        labels.push(item.label as i64);
                    }
                    Ok(Converted::Plain(v)) => {
                        plain.extend_from_slice(&v);
                        labels.push(item.label as i64);
                    }
                    Err(reason) if o.strict => {
                        return Err(DataError::Invalid(format!("{}: {reason} (--strict)", item.name)))
                    }
                    Err(reason) => skipped.push(Skip { item: item.name.clone(), reason }),
                }
            }
            next = end;
            progress(&Progress { done: next, total, skipped: skipped.len(), bytes: writer.bytes() });
        }
        if labels.is_empty() {
            continue;
        }
        let mut batch = Batch { inputs: BTreeMap::new(), labels };
        let mut stored = BTreeMap::new();
        if spec.stored.is_some() {
            stored.insert(o.input.clone(), column);
        } else {
            let mut shape = vec![batch.labels.len() as i64];
            shape.extend_from_slice(&spec.shape);
            let t = HostTensor::from_f32(&shape, &plain)
                .ok_or_else(|| DataError::Invalid("converted features disagree with the input's shape".into()))?;
            batch.inputs.insert(o.input.clone(), t);
        }
        writer.write_shard_with(&batch, &stored)?;
        let state = State {
            fingerprint: fp.clone(),
            next,
            meta: writer.meta().to_json(),
            per_class: writer.per_class().to_vec(),
            bytes: writer.bytes(),
            skipped: skipped.clone(),
        };
        let text = serde_json::to_string(&state).unwrap_or_default();
        crate::durable::write_atomic(&state_path, text.as_bytes())?;
        progress(&Progress { done: next, total, skipped: skipped.len(), bytes: writer.bytes() });
    }
    if writer.meta().samples == 0 {
        let why = skipped.first().map(|s| format!(" (first: {}: {})", s.item, s.reason)).unwrap_or_default();
        return Err(DataError::Invalid(format!("no sample could be imported: {} skipped{why}", skipped.len())));
    }
    let written = writer.finish()?;
    let _ = std::fs::remove_file(&state_path);
    let _ = crate::durable::sync_dir(out);
    debug_assert!(out.join(META_FILE).is_file());
    Ok(ImportReport { written, skipped, resumed })
}
