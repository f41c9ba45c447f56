//! The `lookout` binary: parses the command line, sets up logging, calls the library, prints
//! errors with their whole chain, and maps them to exit codes (0 ok, 1 run-time failure,
//! 2 bad usage or configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lookout::config::{Config, ConfigError};
use lookout::model::ModelConfig;

#[derive(Parser)]
#[command(
    name = "lookout",
    version,
    about = "Edge computer-vision inference daemon: camera -> ONNX classifier -> rules -> actions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT/SIGTERM (or the end of a finite source).
    Run {
        /// Configuration file. Default: the embedded reference config (bundled model, synthetic frames).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration, load the model and describe it.
    Check {
        #[arg(long, short, conflicts_with_all = ["model", "labels"])]
        config: Option<PathBuf>,
        /// Check and describe this ONNX model alone (no rules, default preprocessing).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Labels file for --model, one per line.
        #[arg(long, requires = "model")]
        labels: Option<PathBuf>,
    },
    /// Classify image files: one JSON line per image.
    Classify {
        /// Take [model] from this configuration file.
        #[arg(long, short, conflicts_with_all = ["model", "labels"])]
        config: Option<PathBuf>,
        /// ONNX model file (default preprocessing: stretch, pixel/255).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Labels file, one per line.
        #[arg(long, requires = "model")]
        labels: Option<PathBuf>,
        /// Number of labels per image.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Also print the model's raw output (before softmax).
        #[arg(long)]
        raw: bool,
        /// Write the exact input tensors fed to the model to this .npy file (the images
        /// classified, in order, along the batch axis), to compare with a training pipeline.
        #[arg(long, value_name = "FILE")]
        dump_input: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Measure model-only latency, preprocessing and the pipeline; print a summary.
    Bench {
        /// Configuration file: its [model] and [pipeline] are measured. Default: embedded config.
        #[arg(long, short, conflicts_with = "model")]
        config: Option<PathBuf>,
        /// Measure this ONNX model instead (default preprocessing).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print one JSON object instead of the readable summary.
        #[arg(long)]
        json: bool,
        /// Also run the Python baseline (benches/peer.py: Pillow + numpy + onnxruntime) on the same frames.
        #[arg(long)]
        peer: bool,
        /// Timed model runs (after warm-up).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Frames through the pipeline.
        #[arg(long, default_value_t = 300)]
        frames: u64,
        /// Camera rate of the paced (latency) pipeline run (0 = half of what one worker keeps up with)
        #[arg(long, default_value_t = 0.0)]
        fps: f64,
        /// Python interpreter for --peer.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Also time every operator of the model (per operator type and the slowest nodes).
        #[arg(long)]
        profile: bool,
        /// Measure the model only (no preprocessing, pipeline or peer).
        #[arg(long, conflicts_with = "peer")]
        model_only: bool,
        /// Run the model on tract's own kernels (model.kernels = "tract"), for comparison.
        #[arg(long)]
        tract_kernels: bool,
        /// Also time this model (model only, same preprocessing, same run) and report its
        /// latency as a ratio of the benchmarked model's. Repeatable.
        #[arg(long, value_name = "MODEL")]
        vs: Vec<PathBuf>,
        /// Also time the model (and each --vs model) on tract's own kernels, in the same run.
        #[arg(long)]
        vs_tract_kernels: bool,
        /// Also replay N 640x480 MJPEG streams through the shared worker pool, each at --fps
        /// (default 15): per-source fps, latency, drops, fairness under overload, one failing.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            conflicts_with = "model_only"
        )]
        sources: usize,
        /// Also classify a 1920x1080 frame's 3x2 grid of regions, batched and one crop per
        /// run, and time its JPEG decoded only in a corner region's window.
        #[arg(long, conflicts_with = "model_only")]
        regions: bool,
    },
    /// Train a classifier head on a backbone's features: DIR/<label>/<image> -> NEW.onnx and
    /// NEW.card.json.
    Train {
        /// The backbone: an ONNX classifier (fp32, QDQ or QOperator int8) whose features are
        /// the input of its final Gemm/MatMul.
        #[arg(long, value_name = "MODEL.onnx")]
        backbone: PathBuf,
        /// Training images: one subfolder per label.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The trained model (its card is written beside it as NAME.card.json).
        #[arg(long, value_name = "NEW.onnx")]
        out: PathBuf,
        /// The feature tensor (or node) to train on, where the backbone has no final Gemm/MatMul.
        #[arg(long, value_name = "NODE")]
        features: Option<String>,
        /// Take the backbone's preprocessing ([model.preprocess], kernels) from this config file.
        #[arg(long, short, conflicts_with = "preset")]
        config: Option<PathBuf>,
        /// The backbone's preprocessing preset, e.g. torchvision-imagenet (default: stretch, /255).
        #[arg(long)]
        preset: Option<String>,
        /// Also train on every training image flipped left-right.
        #[arg(long)]
        flip: bool,
        /// Share of each label's images held out to choose the L2 strength and report accuracy.
        #[arg(long, default_value_t = 0.2)]
        validation: f64,
        /// Seed of the train/validation split.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Embedding cache folder (default: ~/.cache/lookout/embeddings).
        #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
        cache: Option<PathBuf>,
        /// Compute every embedding afresh and store none.
        #[arg(long)]
        no_cache: bool,
        /// Embedding threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Quantize the trained model. Not wired yet: given, train stops with an error that
        /// says to run `lookout quantize` on the result.
        #[arg(long)]
        quantize: bool,
    },
    /// The `[collect]` dataset: frames kept for labelling and training.
    Dataset {
        #[command(subcommand)]
        action: DatasetCommand,
    },
    /// Make an int8 (QDQ) model from an fp32 one, calibrated on a folder of your own images,
    /// and report how well it agrees with the fp32 model on images held out.
    Quantize {
        /// The fp32 ONNX model.
        #[arg(long, required_unless_present = "config")]
        model: Option<PathBuf>,
        /// Labels file for --model, one per line.
        #[arg(long, requires = "model")]
        labels: Option<PathBuf>,
        /// Take the model and its preprocessing ([model]) from this configuration file.
        #[arg(long, short, conflicts_with_all = ["model", "preset"])]
        config: Option<PathBuf>,
        /// The model's preprocessing preset, e.g. torchvision-imagenet (default: stretch, /255).
        #[arg(long)]
        preset: Option<String>,
        /// Calibration images: DIR/*.jpg, or DIR/<label>/*.jpg (then the report has accuracy).
        #[arg(long, value_name = "DIR")]
        calibrate: PathBuf,
        /// Where the int8 model goes (OUT.quant.json beside it: the report).
        #[arg(long)]
        out: PathBuf,
        /// Most calibration images used.
        #[arg(long, default_value_t = 200)]
        images: usize,
        /// How activation ranges are chosen.
        #[arg(long, value_enum, default_value_t = lookout::quantize::Method::Minmax)]
        method: lookout::quantize::Method,
        /// For --method percentile: the share of values kept inside the range.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// One weight scale per tensor instead of one per output channel.
        #[arg(long)]
        per_tensor: bool,
        /// Share of each label's images held out to judge the int8 model.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// Seed of the calibration/held-out split.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Leave this convolution (node or output name) in float. Repeatable.
        #[arg(long, value_name = "NODE")]
        keep_float: Vec<String>,
    },
    /// List cameras (V4L2 devices) with the formats, sizes and rates they offer.
    Cameras,
    /// Render synthetic scenes to PNG files with a labels.csv (demos, training data).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 320)]
        width: u32,
        #[arg(long, default_value_t = 240)]
        height: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Copy an image folder into the dataset, to review on /collect and train on:
    /// SRC/<label>/*.jpg as labelled, images directly in SRC under --label (unreviewed).
    Import {
        /// The folder to import.
        src: PathBuf,
        /// The dataset folder. Default: [collect] dir of --config.
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
        /// The daemon's configuration file, whose [collect] dir is the dataset.
        #[arg(long, short, conflicts_with = "into")]
        config: Option<PathBuf>,
        /// The label of the images directly in SRC.
        #[arg(long)]
        label: Option<String>,
    },
}

/// Sets `--preset NAME` on `model`; an unknown name is an error (exit 2).
fn apply_preset(model: &mut ModelConfig, name: &str) -> Result<(), ExitCode> {
    match serde_json::from_value(serde_json::Value::String(name.to_owned())) {
        Ok(p) => {
            model.preprocess.preset = Some(p);
            Ok(())
        }
        Err(_) => {
            eprintln!("error: --preset {name:?} is not a preset: torchvision-imagenet, timm, ultralytics-cls, paddle-cls or keras-mobilenet");
            Err(ExitCode::from(2))
        }
    }
}

fn print_error(err: &dyn std::error::Error) {
    eprintln!("error: {err}");
    let mut cause = err.source();
    while let Some(c) = cause {
        eprintln!("  caused by: {c}");
        cause = c.source();
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
}

fn init_logging(default_level: &str) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Under systemd the journal stamps every line itself.
        b.format_timestamp(None);
    } else {
        b.format_timestamp_millis();
    }
    b.init();
}

fn main() -> ExitCode {
    lookout::memory::limit_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config_path = config.clone();
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    init_logging("info");
                    print_error(&e);
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log.level);
            let notifier = lookout::notify::Notifier::from_env();
            match lookout::daemon::run(&config, config_path.as_deref(), notifier) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Check {
            config,
            model,
            labels,
        } => {
            init_logging("warn");
            let mut config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    print_error(&e);
                    return ExitCode::from(2);
                }
            };
            if let Some(model) = model {
                // The model alone: the embedded config's rules name the bundled model's labels.
                config.model = ModelConfig::for_path(model, labels);
                config.rules.clear();
            }
            match lookout::cli::check(&config, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Classify {
            config,
            model,
            labels,
            top_k,
            raw,
            dump_input,
            images,
        } => {
            init_logging("warn");
            let model_cfg = match (config, model) {
                (Some(path), _) => match Config::load(&path) {
                    Ok(c) => c.model,
                    Err(e) => {
                        print_error(&e);
                        return ExitCode::from(2);
                    }
                },
                (None, Some(model)) => ModelConfig::for_path(model, labels),
                (None, None) => match Config::embedded() {
                    Ok(c) => c.model,
                    Err(e) => {
                        print_error(&e);
                        return ExitCode::from(2);
                    }
                },
            };
            match lookout::cli::classify(
                &model_cfg,
                &images,
                top_k.max(1),
                raw,
                dump_input.as_deref(),
                &mut std::io::stdout(),
            ) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Bench {
            config,
            model,
            json,
            peer,
            runs,
            warmup,
            frames,
            fps,
            python,
            profile,
            model_only,
            tract_kernels,
            vs,
            vs_tract_kernels,
            sources,
            regions,
        } => {
            init_logging("warn");
            let mut cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    print_error(&e);
                    return ExitCode::from(2);
                }
            };
            if let Some(m) = model {
                cfg.model = ModelConfig::for_path(m, None);
            }
            if tract_kernels {
                cfg.model.kernels = lookout::model::Kernels::Tract;
            }
            let opts = lookout::bench::BenchOptions {
                runs: runs.max(1),
                warmup,
                frames: frames.max(1),
                fps,
                peer,
                python,
                profile,
                model_only,
                vs,
                vs_tract_kernels,
                sources,
                regions,
            };
            match lookout::bench::run(&cfg, &opts) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    } else {
                        print!("{}", lookout::bench::render_text(&report));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(1)
                }
            }
        }
        Command::Train {
            backbone,
            data,
            out,
            features,
            config,
            preset,
            flip,
            validation,
            seed,
            cache,
            no_cache,
            threads,
            quantize,
        } => {
            init_logging("warn");
            let mut model = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c.model,
                    Err(e) => {
                        print_error(&e);
                        return ExitCode::from(2);
                    }
                },
                None => ModelConfig::default(),
            };
            if let Some(name) = preset {
                if let Err(code) = apply_preset(&mut model, &name) {
                    return code;
                }
            }
            if !(0.0..1.0).contains(&validation) || validation == 0.0 {
                eprintln!("error: --validation {validation} must be between 0 and 1 (e.g. 0.2)");
                return ExitCode::from(2);
            }
            let opts = lookout::train::TrainOptions {
                backbone,
                data,
                out,
                features,
                model,
                flip,
                validation,
                seed,
                cache: if no_cache {
                    None
                } else {
                    cache.or_else(lookout::train::default_cache)
                },
                threads,
                quantize,
            };
            match lookout::train::run(&opts, &mut std::io::stdout()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(match e {
                        lookout::train::TrainError::Model(_)
                        | lookout::train::TrainError::Write { .. } => 1,
                        _ => 2,
                    })
                }
            }
        }
        Command::Dataset {
            action:
                DatasetCommand::Import {
                    src,
                    into,
                    config,
                    label,
                },
        } => {
            init_logging("warn");
            let dir = match (into, config) {
                (Some(d), _) => d,
                (None, Some(path)) => match Config::load(&path) {
                    Ok(c) => match c.collect {
                        Some(c) => c.dir,
                        None => {
                            eprintln!("error: {} has no [collect] table: add one with dir = \"...\", or pass --into DIR", path.display());
                            return ExitCode::from(2);
                        }
                    },
                    Err(e) => {
                        print_error(&e);
                        return ExitCode::from(2);
                    }
                },
                (None, None) => {
                    eprintln!("error: say where the dataset is: --into DIR, or --config FILE with a [collect] table");
                    return ExitCode::from(2);
                }
            };
            let result = lookout::collect::Dataset::open(&dir)
                .map_err(lookout::collect::import::ImportError::from)
                .and_then(|d| lookout::collect::import::import(&d, &src, label.as_deref()));
            match result {
                Ok(got) => {
                    print!("{}", got.describe(&dir));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(2)
                }
            }
        }
        Command::Quantize {
            model,
            labels,
            config,
            preset,
            calibrate,
            out,
            images,
            method,
            percentile,
            per_tensor,
            holdout,
            seed,
            keep_float,
        } => {
            init_logging("warn");
            let mut model_cfg = match (config, model) {
                (Some(path), _) => match Config::load(&path) {
                    Ok(c) => c.model,
                    Err(e) => {
                        print_error(&e);
                        return ExitCode::from(2);
                    }
                },
                (None, Some(model)) => ModelConfig::for_path(model, labels),
                (None, None) => unreachable!("clap requires --model or --config"),
            };
            if let Some(name) = preset {
                if let Err(code) = apply_preset(&mut model_cfg, &name) {
                    return code;
                }
            }
            if !(holdout > 0.0 && holdout < 1.0) {
                eprintln!("error: --holdout {holdout} must be between 0 and 1 (e.g. 0.2)");
                return ExitCode::from(2);
            }
            if !(percentile > 50.0 && percentile <= 100.0) {
                eprintln!("error: --percentile {percentile} must be above 50 and at most 100 (e.g. 99.99)");
                return ExitCode::from(2);
            }
            let opts = lookout::quantize::QuantizeOptions {
                model: model_cfg,
                calibrate,
                out,
                images: images.max(1),
                method,
                percentile,
                per_channel: !per_tensor,
                holdout,
                seed,
                keep_float,
            };
            match lookout::quantize::run(&opts, &mut std::io::stdout()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(match e {
                        lookout::quantize::QuantizeError::Write { .. }
                        | lookout::quantize::QuantizeError::Reload(_) => 1,
                        _ => 2,
                    })
                }
            }
        }
        Command::Cameras => {
            init_logging("warn");
            match lookout::source::camera::list(&mut std::io::stdout()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e);
                    ExitCode::from(1)
                }
            }
        }
        Command::Synth {
            out,
            count,
            width,
            height,
            seed,
        } => {
            init_logging("warn");
            match lookout::cli::synth(&out, count, width.max(32), height.max(32), seed) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write scenes to {}: {e}", out.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}
