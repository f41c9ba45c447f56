//! The `check`, `classify` and `synth` commands, as library functions the binary calls and the
//! tests drive. They write to the given writer and return what the exit code depends on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::daemon::DaemonError;
use crate::event::TopEntry;
use crate::frame::{Frame, PixelFormat};
use crate::model::{postprocess::top_k, Model, ModelConfig};
use crate::models;
use crate::retry::chain;
use crate::source::scene;

/// `lookout check`: loads each model in use, checks the rules' labels against them, and
/// describes what was found.
pub fn check(config: &Config, out: &mut dyn Write) -> Result<(), DaemonError> {
    let sources = config.sources();
    let loaded = models::load(&models::uses(&config.model, &config.models, &sources))
        .map_err(crate::daemon::load_error)?;
    models::check_rules(&config.rules, &sources, &loaded)?;
    let sink_names: Vec<String> = config.sinks.iter().map(|s| s.name().to_owned()).collect();
    let mut lines = vec!["config ok".to_owned()];
    let mut notes = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        if i > 0 {
            lines.push(String::new());
        }
        let cfg = config.models.get(&*l.name).unwrap_or(&config.model);
        lines.extend(model_lines(&l.model, cfg));
        lines.push(format!(
            "used by:      {} ({}): {}",
            l.name,
            if &*l.name == models::DEFAULT {
                "[model]".to_owned()
            } else {
                format!("[models.{}]", l.name)
            },
            l.used_by.join(", ")
        ));
        let b = l.model.input.batch;
        if b > 1 {
            let waiting = config.pipeline.frame_queue + 1;
            notes.push(format!(
                "note:         model {} has a fixed batch of {b}: each run takes the frames already waiting, up to {}, \
                 and repeats the last in the empty slots (pipeline.frame_queue = {} lets at most {waiting} wait; \
                 a batch-1 export of the model runs a single frame {b} times cheaper)",
                l.name,
                waiting.min(b),
                config.pipeline.frame_queue,
            ));
        }
    }
    for name in models::unused(&config.models, &sources) {
        lines.push(format!(
            "not loaded:   {name} ([models.{name}]): no source or region names it"
        ));
    }
    lines.extend([
        format!(
            "sources:      {}",
            sources
                .iter()
                .map(|s| {
                    let what = s.source.build().describe();
                    if what == s.name {
                        what
                    } else {
                        format!("{} ({what})", s.name)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "rules:        {}",
            if config.rules.is_empty() {
                "none (every classification is an event)".to_owned()
            } else {
                config
                    .rules
                    .iter()
                    .map(|r| r.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        format!("sinks:        {}", sink_names.join(", ")),
    ]);
    for line in lines.iter().chain(&notes) {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// What `check` says of one model (`cfg`: its table).
fn model_lines(model: &Model, cfg: &ModelConfig) -> Vec<String> {
    let i = &model.input;
    let shown: Vec<&str> = model.labels.iter().take(10).map(String::as_str).collect();
    let more = if model.labels.len() > 10 {
        format!(" ... ({} more)", model.labels.len() - 10)
    } else {
        String::new()
    };
    let p = &model.preprocess;
    [
        format!("model:        {}", model.name),
        format!(
            "input:        {:?} {:?} shape {:?} (dtype {:?})",
            i.name,
            i.layout,
            i.shape(),
            i.dtype
        ),
        format!(
            "size:         {}x{} pixels, {} channel(s), batch {}",
            i.width, i.height, i.channels, i.batch
        ),
        format!(
            "output:       {} classes, {:?}: {}",
            model.classes(),
            model.output,
            model.output_why
        ),
        format!(
            "labels:       {} from {}: {}{more}",
            model.labels.len(),
            model.labels_from,
            shown.join(", ")
        ),
        format!("quantization: {}", model.quantization.describe()),
        format!("kernels:      {}", model.kernels),
        format!(
            "translated:   {}",
            if model.translations.is_empty() {
                "nothing (tract runs every operator as it is)".to_owned()
            } else {
                model
                    .translations
                    .iter()
                    .map(|t| format!("{}x{} -> {}", t.op_type, t.count, t.into))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        ),
        format!(
            "operators:    {}",
            model
                .op_counts
                .iter()
                .map(|(k, v)| format!("{k}x{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        format!(
            "preprocess:   resize {:?}{} resampler {:?} order {:?} scale {} mean {:?} std {:?}{}",
            p.resize,
            match p.resize {
                crate::model::ResizeMode::Crop => format!(
                    " (shorter side to {}, margin halves {:?})",
                    p.resize_to, p.crop_rounding
                ),
                crate::model::ResizeMode::Stretch => String::new(),
                _ => format!(" (pad {:?} with {:?})", p.pad, p.pad_fill),
            },
            p.resampler,
            p.channel_order,
            p.scale,
            p.mean,
            p.std,
            cfg.preprocess
                .preset
                .map_or(String::new(), |s| format!(" (preset {s:?})"))
        ),
        format!(
            "loaded in:    {:.0} ms",
            model.load_time.as_secs_f64() * 1000.0
        ),
    ]
    .into()
}

/// One line of `classify` output.
#[derive(Debug, Serialize)]
struct ClassifyLine<'a> {
    image: &'a str,
    top: Vec<TopEntry>,
    infer_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a [f32]>,
}

/// `lookout classify`: one JSON line per image. Returns the number of images that failed.
/// With `dump_input`, the input tensors the model was fed (those of the images classified, in
/// order, joined along the batch axis) are written there as one `.npy` file.
pub fn classify(
    model_cfg: &ModelConfig,
    images: &[PathBuf],
    k: usize,
    raw: bool,
    dump_input: Option<&Path>,
    out: &mut dyn Write,
) -> Result<usize, DaemonError> {
    let model = Arc::new(Model::load(model_cfg)?);
    let mut session = model.session()?;
    let mut failed = 0;
    let mut fed = Vec::new();
    for path in images {
        let shown = path.display().to_string();
        let result = std::fs::read(path)
            .map_err(|e| format!("cannot read file: {e}"))
            .and_then(|data| {
                let format = if data.starts_with(&[0xFF, 0xD8]) {
                    PixelFormat::Mjpeg
                } else {
                    PixelFormat::Encoded
                };
                let t0 = Instant::now();
                let frame = Frame::new(format, 0, 0, data);
                if dump_input.is_some() {
                    return session
                        .classify_frame_with_input(&frame)
                        .map(|(s, tensor)| {
                            fed.push(tensor);
                            (s, t0.elapsed())
                        })
                        .map_err(|e| chain(&e));
                }
                session
                    .classify_frame(&frame)
                    .map(|s| (s, t0.elapsed()))
                    .map_err(|e| chain(&e))
            });
        let line = match result {
            Ok((scores, _)) => {
                let top = top_k(&scores.probs, k)
                    .into_iter()
                    .map(|(index, score)| TopEntry {
                        index,
                        label: model.labels[index].clone(),
                        score,
                    })
                    .collect();
                let line = ClassifyLine {
                    image: &shown,
                    top,
                    infer_ms: scores.infer.as_secs_f64() * 1000.0,
                    raw: raw.then_some(scores.raw.as_slice()),
                };
                serde_json::to_string(&line).unwrap_or_default()
            }
            Err(message) => {
                failed += 1;
                log::error!("Cannot classify image. image={shown} error={message}");
                #[derive(Serialize)]
                struct ErrorLine<'a> {
                    image: &'a str,
                    error: &'a str,
                }
                serde_json::to_string(&ErrorLine {
                    image: &shown,
                    error: &message,
                })
                .unwrap_or_default()
            }
        };
        let _ = writeln!(out, "{line}");
    }
    if let Some(path) = dump_input {
        write_inputs(path, &fed, model.input.has_batch_axis)?;
    }
    Ok(failed)
}

/// Writes the tensors `classify` fed the model to `path` as one `.npy` file (none: nothing).
fn write_inputs(
    path: &Path,
    fed: &[tract_onnx::prelude::Tensor],
    has_batch_axis: bool,
) -> Result<(), DaemonError> {
    let err = |source| DaemonError::DumpInput {
        path: path.to_owned(),
        source,
    };
    let Some(all) = crate::model::npy::stack(fed, has_batch_axis) else {
        return Ok(());
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    crate::model::npy::write(&all, &mut file).map_err(err)?;
    file.flush().map_err(err)
}

/// `lookout synth`: writes `count` rendered scenes as PNG files plus `labels.csv` into `dir`.
pub fn synth(dir: &Path, count: usize, width: u32, height: u32, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = scene::SceneRng::new(seed);
    let mut csv = String::from("file,label\n");
    for n in 0..count {
        let class = rng.below(scene::CLASSES.len());
        let img = scene::render(class, &mut rng, width, height);
        let name = format!("{n:06}_{}.png", scene::CLASSES[class]);
        img.save(dir.join(&name)).map_err(std::io::Error::other)?;
        csv.push_str(&format!("{name},{}\n", scene::CLASSES[class]));
    }
    std::fs::write(dir.join("labels.csv"), csv)
}
