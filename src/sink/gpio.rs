//! The `gpio` sink: drives one output line (a relay, a lamp, a reject gate) from events, through
//! the Linux GPIO character device (`/dev/gpiochipN`, via `gpiocdev`).
//!
//! `mode = "pulse"`: an event makes the line active for `hold_ms`; events during the pulse do not
//! lengthen it. `mode = "follow"`: the line is active while events keep coming and goes inactive
//! `hold_ms` after the last one. `active_low` inverts the electrical level. The timing lives in
//! [`Actuator`], a state machine over the small [`Line`] trait that takes the time as an argument,
//! so it is tested with a software line and no sleeps. The sink owns one thread, `gpio-<name>`,
//! that owns the line and the actuator: `send` only signals it (never blocks), and the thread
//! turns the line off on time. On shutdown, and when the line is dropped, it returns to its safe
//! (inactive) level.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender, TrySendError};
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::problems::Problems;

/// `type = "gpio"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioSinkConfig {
    /// Sink name. Default "gpio".
    #[serde(default)]
    pub name: Option<String>,
    /// GPIO chip: a name under /dev (`gpiochip0`) or a path. Default "gpiochip0". Ignored with
    /// `line_name`.
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Line offset on the chip (e.g. 17 for BCM GPIO17 on a Raspberry Pi). Set this or `line_name`.
    #[serde(default)]
    pub line: Option<u32>,
    /// Line name as the kernel lists it (`gpioinfo`), e.g. "GPIO17"; searched on every chip.
    #[serde(default)]
    pub line_name: Option<String>,
    /// "pulse" (active for hold_ms per event) or "follow" (active while events keep coming).
    /// Default "pulse".
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Pulse length, or for "follow" how long without an event before the line goes inactive,
    /// milliseconds. Default 500.
    #[serde(default = "default_hold")]
    pub hold_ms: u64,
    /// The line is active at the low electrical level. Default false.
    #[serde(default)]
    pub active_low: bool,
}

fn default_chip() -> String {
    "gpiochip0".into()
}
fn default_mode() -> String {
    "pulse".into()
}
fn default_hold() -> u64 {
    500
}

impl GpioSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        match (&self.line, &self.line_name) {
            (None, None) => p.push(format!("{key}.line"), "set line (an offset) or line_name"),
            (Some(_), Some(_)) => p.push(format!("{key}.line"), "set line or line_name, not both"),
            _ => {}
        }
        if Mode::parse(&self.mode).is_none() {
            p.push(
                format!("{key}.mode"),
                format!("expected \"pulse\" or \"follow\", got {:?}", self.mode),
            );
        }
        p.range(&format!("{key}.hold_ms"), self.hold_ms, 1, 3_600_000);
        if self.chip.is_empty() {
            p.push(format!("{key}.chip"), "must not be empty");
        }
    }

    fn chip_path(&self) -> PathBuf {
        if self.chip.contains('/') {
            PathBuf::from(&self.chip)
        } else {
            PathBuf::from("/dev").join(&self.chip)
        }
    }
}

/// How events drive the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pulse,
    Follow,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "pulse" => Some(Mode::Pulse),
            "follow" => Some(Mode::Follow),
            _ => None,
        }
    }
}

/// An output line at the electrical level. Implemented by the GPIO character device line and by
/// [`SoftwareLine`] for tests.
pub trait Line: Send {
    /// Sets the electrical level: `true` = high.
    fn set_level(&mut self, high: bool) -> Result<(), SinkError>;
}

/// A line that records its levels, for tests and dry runs.
#[derive(Debug, Default, Clone)]
pub struct SoftwareLine {
    /// Every level set, in order.
    pub levels: Vec<bool>,
}

impl SoftwareLine {
    pub fn level(&self) -> Option<bool> {
        self.levels.last().copied()
    }
}

impl Line for SoftwareLine {
    fn set_level(&mut self, high: bool) -> Result<(), SinkError> {
        self.levels.push(high);
        Ok(())
    }
}

/// The pulse/follow state machine. Time is passed in; it never sleeps.
pub struct Actuator<L: Line> {
    line: L,
    mode: Mode,
    hold: Duration,
    active_low: bool,
    /// When the line goes inactive; `None` while inactive.
    off_at: Option<Instant>,
}

impl<L: Line> Actuator<L> {
    /// Takes the line and sets it to its safe (inactive) level.
    pub fn new(
        mut line: L,
        mode: Mode,
        hold: Duration,
        active_low: bool,
    ) -> Result<Actuator<L>, SinkError> {
        line.set_level(active_low)?;
        Ok(Actuator {
            line,
            mode,
            hold,
            active_low,
            off_at: None,
        })
    }

    pub fn is_active(&self) -> bool {
        self.off_at.is_some()
    }

    /// When [`Actuator::tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.off_at
    }

    /// An event at `now`.
    pub fn on_event(&mut self, now: Instant) -> Result<(), SinkError> {
        self.tick(now)?;
        match (self.mode, self.off_at) {
            (_, None) => {
                self.line.set_level(!self.active_low)?;
                self.off_at = Some(now + self.hold);
            }
            (Mode::Follow, Some(_)) => self.off_at = Some(now + self.hold),
            (Mode::Pulse, Some(_)) => {}
        }
        Ok(())
    }

    /// Turns the line inactive when its time has come.
    pub fn tick(&mut self, now: Instant) -> Result<(), SinkError> {
        if self.off_at.is_some_and(|t| now >= t) {
            self.off_at = None;
            self.line.set_level(self.active_low)?;
        }
        Ok(())
    }

    /// Returns the line to its safe (inactive) level.
    pub fn stop(&mut self) -> Result<(), SinkError> {
        self.off_at = None;
        self.line.set_level(self.active_low)
    }

    pub fn line(&self) -> &L {
        &self.line
    }

    /// The line, for a caller that keeps state in it (the modbus sink's wanted coil values).
    pub fn line_mut(&mut self) -> &mut L {
        &mut self.line
    }
}

/// A line requested through the GPIO character device. Dropping it releases the line.
pub struct ChipLine {
    request: gpiocdev::Request,
    what: String,
    /// The safe (inactive) electrical level: high for active-low lines.
    safe_high: bool,
}

impl ChipLine {
    /// Requests the line as an output at its inactive level.
    pub fn open(cfg: &GpioSinkConfig) -> Result<ChipLine, SinkError> {
        let name = cfg.name.as_deref().unwrap_or("gpio");
        let initial = if cfg.active_low {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        let mut builder = gpiocdev::Request::builder();
        builder.with_consumer(format!("lookout-{name}"));
        let what = match (&cfg.line_name, cfg.line) {
            (Some(line_name), _) => {
                let found = gpiocdev::find_named_line(line_name).ok_or_else(|| SinkError::Build {
                    what: format!(
                        "gpio sink {name:?}: no GPIO line named {line_name:?} on any /dev/gpiochip*; list lines with `gpioinfo`, or set chip and line"
                    ),
                })?;
                builder.with_found_line(&found);
                format!("{line_name} on {}", found.chip.display())
            }
            (None, Some(offset)) => {
                let chip = cfg.chip_path();
                if !chip.exists() {
                    return Err(SinkError::Build {
                        what: format!(
                            "gpio sink {name:?}: GPIO chip {} does not exist; check `chip` (ls /dev/gpiochip*) and that the GPIO character device is enabled",
                            chip.display()
                        ),
                    });
                }
                builder.on_chip(chip.clone()).with_line(offset);
                format!("line {offset} on {}", chip.display())
            }
            (None, None) => {
                return Err(SinkError::Build {
                    what: format!("gpio sink {name:?}: set line or line_name"),
                })
            }
        };
        builder.as_output(initial);
        let request = builder.request().map_err(|e| SinkError::Build {
            what: format!("gpio sink {name:?}: cannot request {what} as an output ({e}); is it in use, and may this user open the chip?"),
        })?;
        Ok(ChipLine {
            request,
            what,
            safe_high: cfg.active_low,
        })
    }
}

impl Line for ChipLine {
    fn set_level(&mut self, high: bool) -> Result<(), SinkError> {
        let v = if high {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        self.request
            .set_lone_value(v)
            .map_err(|e| SinkError::Build {
                what: format!("cannot set GPIO {} ({e})", self.what),
            })
    }
}

/// The sink half: signals the line thread.
pub struct GpioSink {
    name: String,
    /// Triggers: `send` -> line thread. Capacity 1: a trigger already waiting stands for this one
    /// too (the thread reads the clock when it takes it). Dropping it stops the thread, which sets
    /// the safe level.
    trigger_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GpioSink {
    pub fn open(cfg: &GpioSinkConfig) -> Result<GpioSink, SinkError> {
        let line = ChipLine::open(cfg)?;
        GpioSink::with_line(cfg, line)
    }

    /// The sink over any line (a [`SoftwareLine`] in tests).
    pub fn with_line<L: Line + 'static>(
        cfg: &GpioSinkConfig,
        line: L,
    ) -> Result<GpioSink, SinkError> {
        let name = cfg.name.clone().unwrap_or_else(|| "gpio".into());
        let mode = Mode::parse(&cfg.mode).ok_or_else(|| SinkError::Build {
            what: format!("gpio sink {name:?}: bad mode {:?}", cfg.mode),
        })?;
        let mut actuator = Actuator::new(
            line,
            mode,
            Duration::from_millis(cfg.hold_ms),
            cfg.active_low,
        )?;
        let (trigger_tx, trigger_rx) = bounded::<()>(1);
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("gpio-{name}"))
            .spawn(move || {
                let mut last_warn: Option<Instant> = None;
                let mut report = |r: Result<(), SinkError>| {
                    if let Err(e) = r {
                        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_warn = Some(Instant::now());
                            log::warn!("GPIO line could not be set. sink={thread_name} error={e}");
                        }
                    }
                };
                loop {
                    let wait = actuator.deadline().map_or(Duration::from_secs(3600), |t| {
                        t.saturating_duration_since(Instant::now())
                    });
                    match trigger_rx.recv_timeout(wait) {
                        Ok(()) => report(actuator.on_event(Instant::now())),
                        Err(RecvTimeoutError::Timeout) => report(actuator.tick(Instant::now())),
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                report(actuator.stop());
            })
            .map_err(|source| SinkError::Io {
                what: format!("cannot start the thread of GPIO sink {name:?}"),
                source,
            })?;
        Ok(GpioSink {
            name,
            trigger_tx: Some(trigger_tx),
            thread: Some(thread),
        })
    }
}

impl Sink for GpioSink {
    fn send(&mut self, _event: &Event) -> Result<(), SinkError> {
        match self.trigger_tx.as_ref().map(|tx| tx.try_send(())) {
            Some(Ok(())) | Some(Err(TrySendError::Full(()))) => Ok(()),
            _ => Err(SinkError::Build {
                what: format!("GPIO sink {:?}: its line thread has ended", self.name),
            }),
        }
    }
}

impl Drop for GpioSink {
    fn drop(&mut self) {
        self.trigger_tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("GPIO sink thread panicked. sink={}", self.name);
            }
        }
    }
}

impl Drop for ChipLine {
    fn drop(&mut self) {
        // Safe level before the kernel releases the line (its level is undefined after).
        if let Err(e) = self.set_level(self.safe_high) {
            log::error!(
                "GPIO line could not be returned to its safe level. line={} error={e}",
                self.what
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(500);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn pulse_is_high_for_hold_and_not_extended() {
        let t0 = Instant::now();
        let mut a = Actuator::new(SoftwareLine::default(), Mode::Pulse, HOLD, false).expect("new");
        assert_eq!(a.line().level(), Some(false), "safe level at start");
        a.on_event(t0).expect("event");
        assert_eq!(a.line().level(), Some(true));
        a.on_event(ms(t0, 400)).expect("event during the pulse");
        a.tick(ms(t0, 499)).expect("tick");
        assert!(a.is_active());
        a.tick(ms(t0, 500)).expect("tick");
        assert_eq!(
            a.line().level(),
            Some(false),
            "pulse ends hold_ms after it began"
        );
        assert_eq!(a.line().levels, [false, true, false]);
        a.on_event(ms(t0, 600)).expect("a new pulse");
        assert_eq!(a.deadline(), Some(ms(t0, 1100)));
    }

    #[test]
    fn follow_stays_high_while_events_keep_coming() {
        let t0 = Instant::now();
        let mut a = Actuator::new(SoftwareLine::default(), Mode::Follow, HOLD, false).expect("new");
        for n in [0, 300, 600, 900] {
            a.on_event(ms(t0, n)).expect("event");
            a.tick(ms(t0, n + 299)).expect("tick");
            assert!(a.is_active(), "still active at {}", n + 299);
        }
        a.tick(ms(t0, 1399)).expect("tick");
        assert!(a.is_active());
        a.tick(ms(t0, 1400)).expect("tick");
        assert_eq!(
            a.line().levels,
            [false, true, false],
            "one continuous high period"
        );
    }

    #[test]
    fn active_low_inverts_levels() {
        let t0 = Instant::now();
        let mut a = Actuator::new(SoftwareLine::default(), Mode::Pulse, HOLD, true).expect("new");
        a.on_event(t0).expect("event");
        a.tick(ms(t0, 500)).expect("tick");
        assert_eq!(a.line().levels, [true, false, true]);
    }

    #[test]
    fn stop_returns_to_the_safe_level() {
        let t0 = Instant::now();
        for active_low in [false, true] {
            let mut a = Actuator::new(SoftwareLine::default(), Mode::Follow, HOLD, active_low)
                .expect("new");
            a.on_event(t0).expect("event");
            a.stop().expect("stop");
            assert_eq!(a.line().level(), Some(active_low));
            assert!(!a.is_active());
        }
    }

    #[test]
    fn missing_chip_is_a_clear_error_naming_it() {
        let cfg: GpioSinkConfig =
            toml::from_str("chip = \"gpiochip99\"\nline = 17").expect("config");
        let e = GpioSink::open(&cfg).err().expect("no such chip here");
        assert!(e.to_string().contains("/dev/gpiochip99"), "{e}");
    }

    #[test]
    fn validation_requires_exactly_one_line_selector() {
        let mut p = Problems::default();
        let cfg: GpioSinkConfig = toml::from_str("mode = \"blink\"").expect("config");
        cfg.validate("sinks[0]", &mut p);
        let keys: Vec<&str> = p.0.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(keys, ["sinks[0].line", "sinks[0].mode"]);
    }

    /// On a Raspberry Pi: connect an LED (with resistor) to BCM GPIO17, then
    /// `LOOKOUT_GPIO_CHIP=gpiochip0 LOOKOUT_GPIO_LINE=17 cargo test --lib sink::gpio -- --ignored`;
    /// the LED blinks once for 500 ms and is off at the end.
    #[test]
    #[ignore = "needs a GPIO chip: run on a Raspberry Pi"]
    fn hardware_pulse_on_a_real_line() {
        let chip = std::env::var("LOOKOUT_GPIO_CHIP").unwrap_or_else(|_| "gpiochip0".into());
        let line = std::env::var("LOOKOUT_GPIO_LINE")
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or(17);
        let cfg: GpioSinkConfig =
            toml::from_str(&format!("chip = {chip:?}\nline = {line}")).expect("config");
        let mut sink = GpioSink::open(&cfg).expect("line available");
        let e = Event {
            device: "d".into(),
            source: "s".into(),
            region: None,
            rule: None,
            label: "x".into(),
            score: 1.0,
            top: vec![],
            frame_seq: 0,
            captured_at: String::new(),
            latency_ms: 0.0,
            file: None,
            truth: None,
            snapshot: None,
            model: None,
            drift: None,
        };
        sink.send(&e).expect("trigger");
        std::thread::sleep(Duration::from_millis(800));
    }
}
