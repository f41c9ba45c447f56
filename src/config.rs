//! The configuration file: parse, validate without I/O, then let each component `build()`.
//!
//! One TOML file holds `[source]` (or `[[sources]]`), `[model]` (+ `[model.preprocess]`, and
//! named `[models.NAME]` tables, see [`crate::models`]), `[pipeline]`, `[[rules]]`,
//! `[[sinks]]` and `[log]`. Every struct denies unknown keys, so a misspelt key is an error that
//! names the file, the key path and the keys that are allowed. Validation ([`Config::validate`])
//! is pure and reports every problem at once. Each component's config struct lives beside the
//! component ([`crate::source::SourceConfig`], [`crate::model::ModelConfig`], ...); their doc
//! comments are the user reference, mirrored in `config/lookout.toml`.
//!
//! Relative paths in the file are taken relative to the working directory of the daemon.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::problems::{Problem, Problems};

use crate::model::ModelConfig;
use crate::rules::RuleConfig;
use crate::sink::SinkConfig;
use crate::source::list::NamedSource;
use crate::source::SourceConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this device in events and MQTT topics. Default: the host name.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Where frames come from, when there is one source (a shorthand for one `[[sources]]`
    /// entry named after it). Neither this nor `sources`: the synthetic source.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Several named sources, one capture thread each, sharing the workers.
    #[serde(default)]
    pub sources: Vec<NamedSource>,
    /// The classifier: the model of every source and region that names none (its name is
    /// "default").
    #[serde(default)]
    pub model: ModelConfig,
    /// More classifiers, `[models.NAME]` tables with `[model]`'s keys, for the sources and
    /// regions that name them (`model = "NAME"`). Each one in use is loaded once and shared;
    /// one that nothing names is not loaded. Default none.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Workers and queues.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Scores -> events. Without rules, every classification is an event.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// `[drift]`: drift figures per source and region (docs/drift.md). Default: off.
    #[serde(default)]
    pub drift: Option<crate::drift::DriftConfig>,
    /// `[collect]`: frames worth labelling kept as an image-folder dataset, labelled on the
    /// live view's `/collect` page (docs/training.md). Default: off.
    #[serde(default)]
    pub collect: Option<crate::collect::CollectConfig>,
    /// Where events go. Default: one `log` sink.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkConfig>,
    /// The embedded HTTP server (live view, health, metrics). Off unless `listen` is set.
    #[serde(default)]
    pub http: crate::http::HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::default()]
}

/// `[pipeline]`: worker threads and queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Inference worker threads. 0 = one per available core. Default 0.
    #[serde(default)]
    pub workers: usize,
    /// Workers with no frame help a busy worker with its frame's convolutions, which shortens
    /// each frame's latency when frames come slower than the workers keep up with; under load
    /// no worker is idle and each frame runs on one core. Default true.
    #[serde(default = "default_assist")]
    pub assist: bool,
    /// Frames waiting for a worker. When full, the OLDEST frame is dropped (and counted). With
    /// a live source a worker takes the newest frame waiting and drops the older ones, unless
    /// another worker is waiting for a frame. Default 2.
    #[serde(default = "default_frame_queue")]
    pub frame_queue: usize,
    /// Events waiting in each sink's queue. When full, new events for that sink are dropped and
    /// counted. Default 1024.
    #[serde(default = "default_sink_queue")]
    pub sink_queue: usize,
    /// Number of `top` entries in each event. Default 3.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Seconds before the first attempt to reopen a failed, stalled or exited source; each
    /// further attempt waits twice as long (with +-20% jitter). Default 0.1.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_secs: f64,
    /// Longest wait between reopening attempts, seconds. Attempts go on forever. Default 30.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: f64,
}

fn default_reconnect_min() -> f64 {
    0.1
}
fn default_reconnect_max() -> f64 {
    30.0
}

fn default_assist() -> bool {
    true
}

fn default_frame_queue() -> usize {
    2
}
fn default_sink_queue() -> usize {
    1024
}
fn default_top_k() -> usize {
    3
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 0,
            assist: default_assist(),
            frame_queue: default_frame_queue(),
            sink_queue: default_sink_queue(),
            top_k: default_top_k(),
            reconnect_min_secs: default_reconnect_min(),
            reconnect_max_secs: default_reconnect_max(),
        }
    }
}

impl PipelineConfig {
    /// Workers to start: `workers`, or the number of available cores when 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// `[log]`: logging. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// "error" | "warn" | "info" | "debug" | "trace". Default "info".
    #[serde(default = "default_level")]
    pub level: String,
    /// Seconds between `info` summaries of the counters; 0 turns them off. Default 10.
    #[serde(default = "default_summary_secs")]
    pub summary_secs: f64,
}

fn default_level() -> String {
    "info".into()
}
fn default_summary_secs() -> f64 {
    10.0
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            summary_secs: default_summary_secs(),
        }
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Embedded => f.write_str("<embedded default config>"),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: check the path and its permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {key}{message}")]
    Parse {
        origin: Origin,
        key: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: invalid configuration:\n{}", list(.problems))]
    Invalid {
        origin: Origin,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, Origin::File(path.to_owned()))
    }

    /// The compiled-in reference configuration (`config/lookout.toml`).
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(crate::DEFAULT_CONFIG, Origin::Embedded)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: Origin) -> Result<Config, ConfigError> {
        let config = parse_toml(text, &origin)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin,
                problems: problems.0,
            })
        }
    }

    /// Checks every value and cross-reference without touching the file system.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::default();
        if let Some(id) = &self.device_id {
            if id.trim().is_empty() || id.contains(['/', '#', '+']) {
                p.push(
                    "device_id",
                    "must be non-empty and contain no '/', '#' or '+' (it is used in MQTT topics)",
                );
            }
        }
        let model_names = crate::models::names(&self.models);
        crate::source::list::validate(self.source.as_ref(), &self.sources, &model_names, &mut p);
        self.model.validate("model", &mut p);
        crate::models::validate(&self.models, &mut p);
        p.range("pipeline.workers", self.pipeline.workers, 0, 256);
        p.range("pipeline.frame_queue", self.pipeline.frame_queue, 1, 1024);
        p.range(
            "pipeline.sink_queue",
            self.pipeline.sink_queue,
            1,
            1_000_000,
        );
        p.range("pipeline.top_k", self.pipeline.top_k, 1, 100);
        p.range(
            "pipeline.reconnect_min_secs",
            self.pipeline.reconnect_min_secs,
            0.001,
            3600.0,
        );
        p.range(
            "pipeline.reconnect_max_secs",
            self.pipeline.reconnect_max_secs,
            0.001,
            86_400.0,
        );
        if self.pipeline.reconnect_max_secs < self.pipeline.reconnect_min_secs {
            p.push(
                "pipeline.reconnect_max_secs",
                "must be at least reconnect_min_secs",
            );
        }
        if !["error", "warn", "info", "debug", "trace", "off"].contains(&self.log.level.as_str()) {
            p.push(
                "log.level",
                format!(
                    "expected one of error, warn, info, debug, trace, off; got {:?}",
                    self.log.level
                ),
            );
        }
        p.range("log.summary_secs", self.log.summary_secs, 0.0, 86_400.0);
        self.http.validate(&mut p);

        let mut sink_names: Vec<String> = Vec::new();
        if self.sinks.is_empty() {
            p.push(
                "sinks",
                "at least one sink is needed (for example `[[sinks]] type = \"log\"`)",
            );
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            let key = format!("sinks[{i}]");
            sink.validate(&key, &mut p);
            let name = sink.name().to_owned();
            if sink_names.contains(&name) {
                p.push(
                    format!("{key}.name"),
                    format!("sink name {name:?} is used twice; give each sink a distinct `name`"),
                );
            }
            sink_names.push(name);
        }
        let scope: Vec<(String, Vec<String>)> = self
            .sources()
            .iter()
            .map(|s| {
                let regions = s.regions().iter().map(|r| r.name.to_string()).collect();
                (s.name.clone(), regions)
            })
            .collect();
        let mut rule_names: Vec<&str> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            rule.validate(&key, &sink_names, &mut p);
            rule.validate_scope(&key, &scope, &mut p);
            if rule_names.contains(&rule.name.as_str()) {
                p.push(
                    format!("{key}.name"),
                    format!("rule name {:?} is used twice", rule.name),
                );
            }
            rule_names.push(&rule.name);
        }
        crate::drift::config::validate(self.drift.as_ref(), &self.rules, &scope, &mut p);
        if let Some(c) = &self.collect {
            let names: Vec<String> = scope.iter().map(|(n, _)| n.clone()).collect();
            c.validate(&names, &mut p);
        }
        p
    }

    /// The sources to run, in config order: `[[sources]]`, or `[source]` (or the default
    /// synthetic source) as a one-entry list.
    pub fn sources(&self) -> Vec<NamedSource> {
        crate::source::list::resolve(self.source.as_ref(), &self.sources)
    }

    /// `device_id`, or the host name, or "lookout".
    pub fn device_id(&self) -> String {
        if let Some(id) = &self.device_id {
            return id.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "lookout".into())
    }
}

fn parse_toml(text: &str, origin: &Origin) -> Result<Config, ConfigError> {
    let position = |span: Option<std::ops::Range<usize>>| -> (usize, usize) {
        let Some(span) = span else { return (0, 0) };
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = position(e.span());
        ConfigError::Parse {
            origin: origin.clone(),
            key: String::new(),
            line,
            column,
            message: format!("malformed TOML: {}", e.message().trim()),
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (mut line, mut column) = position(inner.span());
        // Tagged enums (`[source]`, `[[sinks]]`) are buffered by serde and lose the span of an
        // unknown key; find the key's own line instead.
        if let Some(name) = inner
            .message()
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            let found = text.lines().position(|l| {
                l.trim_start()
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            if let Some(i) = found {
                line = i + 1;
                column = text
                    .lines()
                    .nth(i)
                    .map_or(1, |l| l.len() - l.trim_start().len() + 1);
            }
        }
        let key = if path == "." || path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        ConfigError::Parse {
            origin: origin.clone(),
            key,
            line,
            column,
            message: inner.message().trim().to_owned(),
        }
    })
}

#[cfg(test)]
mod models_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Origin::File("test.toml".into()))
    }

    fn err(text: &str) -> String {
        parse(text)
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn embedded_reference_config_is_valid() {
        let c = Config::embedded().expect("config/lookout.toml must be valid");
        assert!(!c.sinks.is_empty());
    }

    #[test]
    fn idle_workers_assist_by_default() {
        assert!(parse("").expect("valid").pipeline.assist);
        assert!(
            !parse("[pipeline]\nassist = false")
                .expect("valid")
                .pipeline
                .assist
        );
        let e = err("[pipeline]\nassist = \"yes\"");
        assert!(e.contains("assist"), "{e}");
    }

    #[test]
    fn model_kernels_default_to_lookout_and_name_the_choices() {
        use crate::model::Kernels;
        assert_eq!(parse("").expect("valid").model.kernels, Kernels::Lookout);
        let c = parse("[model]\nkernels = \"tract\"").expect("valid");
        assert_eq!(c.model.kernels, Kernels::Tract);
        let e = err("[model]\nkernels = \"fast\"");
        assert!(
            e.contains("model.kernels") && e.contains("lookout") && e.contains("tract"),
            "{e}"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.pipeline.frame_queue, 2);
        assert_eq!(c.sinks.len(), 1);
        assert!(c.rules.is_empty());
    }

    #[test]
    fn config_errors_name_file_key_and_expectation() {
        // (toml, fragments every message must contain)
        let cases: &[(&str, &[&str])] = &[
            (
                "[pipeline\nworkers = 2",
                &["test.toml:1:", "malformed TOML"],
            ),
            (
                "[pipeline]\nwokers = 2",
                &[
                    "test.toml:2:1",
                    "pipeline",
                    "unknown field `wokers`",
                    "`workers`",
                ],
            ),
            (
                "[pipeline]\nworkers = \"two\"",
                &["test.toml:2:", "pipeline.workers", "invalid type"],
            ),
            (
                "[pipeline]\nframe_queue = 0",
                &["pipeline.frame_queue", "from 1 to 1024, got 0"],
            ),
            (
                "[model.preprocess]\nresize = \"squash\"",
                &["model.preprocess.resize", "stretch", "letterbox"],
            ),
            (
                "[source]\ntype = \"webcam\"",
                &["source", "webcam", "synthetic"],
            ),
            (
                "[[sinks]]\ntype = \"jsonl\"",
                &["sinks[0]", "missing field `path`"],
            ),
            (
                "[[rules]]\nname = \"r\"\nlabels = [\"x\"]\nmin_score = 1.5",
                &["rules[0].min_score", "from 0 to 1, got 1.5"],
            ),
            (
                "[[rules]]\nname = \"r\"\nlabels = [\"x\"]\nframes = 3\nwindow = 2",
                &["rules[0].window", "frames (3)"],
            ),
            (
                "[[rules]]\nname = \"r\"\nlabels = [\"x\"]\nsinks = [\"mqtt\"]",
                &["rules[0].sinks", "\"mqtt\"", "log"],
            ),
            ("[log]\nlevel = \"loud\"", &["log.level", "loud"]),
            (
                "[pipeline]\nreconnect_min_secs = 5.0\nreconnect_max_secs = 1.0",
                &["pipeline.reconnect_max_secs", "at least reconnect_min_secs"],
            ),
            (
                "[pipeline]\nreconnect_min_secs = 0",
                &["pipeline.reconnect_min_secs", "got 0"],
            ),
        ];
        for (text, fragments) in cases {
            let msg = err(text);
            for f in *fragments {
                assert!(
                    msg.contains(f),
                    "error for {text:?} should contain {f:?}, got:\n{msg}"
                );
            }
        }
    }

    #[test]
    fn several_sources_parse_with_names_and_errors_name_the_entry() {
        let c = parse(
            "[[sources]]\nname = \"line-1\"\ntype = \"synthetic\"\nfps = 5\n\
             [[sources]]\nname = \"line_2\"\ntype = \"files\"\npath = \"/data\"\n",
        )
        .expect("valid");
        let names: Vec<String> = c.sources().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["line-1", "line_2"]);
        // (toml, fragments every message must contain)
        let cases: &[(&str, &[&str])] = &[
            (
                "[[sources]]\nname = \"a\"\ntype = \"synthetic\"\n\
                 [[sources]]\nname = \"a\"\ntype = \"synthetic\"\n",
                &["sources[1].name", "\"a\" is already used by sources[0]"],
            ),
            (
                "[source]\ntype = \"synthetic\"\n[[sources]]\nname = \"a\"\ntype = \"synthetic\"\n",
                &["source:", "both given"],
            ),
            (
                "[[sources]]\nname = \"cam/1\"\ntype = \"synthetic\"\n",
                &["sources[0].name", "'/'"],
            ),
            (
                "[[sources]]\ntype = \"synthetic\"\n",
                &["sources[0]", "missing field `name`"],
            ),
            (
                "[[sources]]\nname = \"a\"\ntype = \"synthetic\"\nfsp = 5\n",
                &["test.toml:4:1", "sources[0]", "unknown field `fsp`"],
            ),
            (
                "[[sources]]\nname = \"a\"\ntype = \"synthetic\"\nfps = -1\n",
                &["sources[0].fps", "got -1"],
            ),
        ];
        for (text, fragments) in cases {
            let msg = err(text);
            for f in *fragments {
                assert!(
                    msg.contains(f),
                    "error for {text:?} should contain {f:?}, got:\n{msg}"
                );
            }
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let msg = err("[pipeline]\nframe_queue = 0\ntop_k = 0\n");
        assert!(
            msg.contains("frame_queue") && msg.contains("top_k"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/lookout.toml")).expect_err("no such file");
        assert!(e.to_string().contains("/nonexistent/lookout.toml"));
    }
}
