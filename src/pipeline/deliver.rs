//! The sink loop: one thread per sink, delivering the events of its queue in order, flushing
//! when the queue is empty and at shutdown, counting what was sent and what failed.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};

use super::{Delivery, Throttled};
use crate::metrics::SinkMetrics;
use crate::retry::chain;
use crate::sink::Sink;

pub(super) fn sink_loop(
    name: String,
    mut sink: Box<dyn Sink>,
    rx: Receiver<Delivery>,
    counters: Arc<SinkMetrics>,
) {
    let mut warn = Throttled::new(Duration::from_secs(10));
    loop {
        let delivery = match rx.try_recv() {
            Ok(d) => d,
            Err(TryRecvError::Empty) => {
                if let Err(e) = sink.flush() {
                    counters.failed.fetch_add(1, Relaxed);
                    warn.warn(format_args!(
                        "Sink flush failed. sink={name} error={}",
                        chain(&e)
                    ));
                }
                match rx.recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let sent = match &delivery.frame {
            Some(frame) => sink.send_with_frame(&delivery.event, frame),
            None => sink.send(&delivery.event),
        };
        match sent {
            Ok(()) => {
                counters.sent.fetch_add(1, Relaxed);
                counters.latency.record(delivery.captured.elapsed());
            }
            Err(e) => {
                counters.failed.fetch_add(1, Relaxed);
                warn.warn(format_args!(
                    "Sink could not deliver an event. sink={name} frame={} error={}",
                    delivery.event.frame_seq,
                    chain(&e)
                ));
            }
        }
    }
    if let Err(e) = sink.flush() {
        counters.failed.fetch_add(1, Relaxed);
        log::error!(
            "Sink flush at shutdown failed. sink={name} error={}",
            chain(&e)
        );
    }
}
