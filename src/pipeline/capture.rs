//! The capture loop: one thread that owns the source, numbers its frames and puts them in the
//! bounded frame queue. A live source never waits: when the queue is full the oldest frame is
//! dropped and counted; a finite source waits for a worker. A failed source is reopened with
//! capped back-off; the loop ends at the stop token or the source's end, dropping the sender.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::retry::{chain, Backoff};
use crate::source::FrameSource;
use crate::stop::StopToken;

pub(super) fn capture_loop(
    mut source: Box<dyn FrameSource>,
    frame_tx: Sender<Frame>,
    drop_rx: Receiver<Frame>,
    m: Arc<Metrics>,
    stop: StopToken,
    reconnect: (Duration, Duration),
) {
    let name = source.describe();
    let live = source.live();
    let mut seq = 0u64;
    let mut backoff = Backoff::new(reconnect.0, reconnect.1);
    'frames: while !stop.is_stopped() {
        m.capture_beat.store(crate::metrics::now_ms(), Relaxed);
        match source.next_frame(&stop) {
            Ok(Some(mut frame)) => {
                frame.seq = seq;
                seq += 1;
                m.captured.fetch_add(1, Relaxed);
                if live {
                    // Never block: make room by dropping the oldest queued frame.
                    let mut frame = frame;
                    loop {
                        match frame_tx.try_send(frame) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                frame = back;
                                if drop_rx.try_recv().is_ok() {
                                    m.dropped.fetch_add(1, Relaxed);
                                }
                            }
                            Err(TrySendError::Disconnected(_)) => break 'frames,
                        }
                    }
                } else {
                    // Not live: wait for a worker, every frame is processed.
                    let mut frame = frame;
                    loop {
                        match frame_tx.send_timeout(frame, crate::stop::POLL) {
                            Ok(()) => break,
                            Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                                if stop.is_stopped() {
                                    break 'frames;
                                }
                                frame = back;
                            }
                            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                                break 'frames
                            }
                        }
                    }
                }
            }
            Ok(None) => {
                if stop.is_stopped() {
                    log::info!("Source stopped. source={name} frames={seq}");
                } else {
                    log::info!("Source ended: no more frames. source={name} frames={seq}");
                }
                break;
            }
            Err(e) => {
                m.source_errors.fetch_add(1, Relaxed);
                log::warn!(
                    "Source failed; reopening with back-off. source={name} error={}",
                    chain(&e)
                );
                source.close();
                loop {
                    if stop.sleep(backoff.next_delay()) {
                        break 'frames;
                    }
                    m.capture_beat.store(crate::metrics::now_ms(), Relaxed);
                    match source.open() {
                        Ok(()) => {
                            m.reconnects.fetch_add(1, Relaxed);
                            backoff.reset();
                            log::info!("Source reopened. source={name}");
                            break;
                        }
                        Err(e) => {
                            m.source_errors.fetch_add(1, Relaxed);
                            log::debug!("Source still failing. source={name} error={}", chain(&e));
                        }
                    }
                }
            }
        }
    }
    source.close();
}
