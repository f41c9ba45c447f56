//! Reloading a configuration: the workers, dispatcher and sinks of the running one drain and
//! stop, and those of the next start on the same frame queue while the sources keep capturing.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::running::{join_stages, Running};
use super::start::start_generation;
use super::{Downstream, StartError};

impl Running {
    /// Stops the workers, dispatcher and sinks after they have finished what they hold: every
    /// frame a worker took is classified and every event produced is delivered (or counted),
    /// within `deadline`. The sources keep capturing into the frame queue (a live one dropping
    /// its oldest frame when its lane is full). Start the next configuration with [`Running::start_downstream`].
    pub fn drain_downstream(&mut self, deadline: Duration) {
        if let Some(g) = self.generation.take() {
            g.quit.store(true, Relaxed);
            join_stages(g.stages, Instant::now() + deadline, &g.abort);
            let counts: Vec<String> = self
                .metrics
                .sinks()
                .iter()
                .map(|c| {
                    format!(
                        "sink.{0}.sent={1} sink.{0}.failed={2} sink.{0}.dropped={3}",
                        c.name,
                        c.sent.load(Relaxed),
                        c.failed.load(Relaxed),
                        c.dropped.load(Relaxed)
                    )
                })
                .collect();
            log::info!("Previous sinks finished. {}", counts.join(" "));
        }
    }

    /// Starts workers, dispatcher and sinks for `d` on the running sources (after
    /// [`Running::drain_downstream`]).
    pub fn start_downstream(&mut self, d: Downstream) -> Result<(), StartError> {
        self.drain_downstream(Duration::from_secs(10));
        self.generation = Some(start_generation(d, &self.queue, &self.metrics)?);
        Ok(())
    }
}
