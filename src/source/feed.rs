//! A reader thread feeding the capture thread: how live sources wait for frames without blocking
//! shutdown.
//!
//! Reading a pipe, a socket or a camera can block for as long as the other end likes. The
//! `pipe`, `http_mjpeg` and `camera` sources therefore read on a thread of their own (the
//! producer) and hand frames to the capture thread through a small bounded channel. The capture
//! thread waits on that channel in short slices, so it sees the [`StopToken`] within
//! [`crate::stop::POLL`] and notices a stall (no frame for the source's `stall_timeout_secs`).
//! What the producer reads and how it splits frames is left to each source.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use super::SourceError;
use crate::frame::Frame;
use crate::stop::{StopToken, POLL};

/// Frames waiting between the producer and the capture thread. The capture thread takes frames
/// as soon as they come (it never blocks downstream), so two is plenty.
const FEED_CAPACITY: usize = 2;

/// The producer's end, handed to the reader thread.
pub(crate) struct FeedTx {
    /// Frames, or the error that ends production: producer -> capture thread. Full: the producer
    /// waits in [`POLL`] slices, giving up when `quit` is set. Closes when the producer returns.
    tx: Sender<Result<Frame, SourceError>>,
    /// Set by the capture thread's [`Feed::close`]; the producer checks it between reads.
    quit: Arc<AtomicBool>,
}

impl FeedTx {
    /// Hands over a frame or an error. Returns `false` when the producer should stop (the source
    /// is being closed).
    pub fn send(&self, item: Result<Frame, SourceError>) -> bool {
        let mut item = item;
        loop {
            if self.quitting() {
                return false;
            }
            match self.tx.send_timeout(item, POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) => item = back,
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// Whether the source is being closed.
    pub fn quitting(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }
}

/// What the capture thread got from the producer.
#[derive(Debug)]
pub(crate) enum Next {
    Frame(Frame),
    /// The stop token was set while waiting.
    Stopped,
    /// No frame for the stall timeout.
    Stalled(Duration),
    /// The producer ended without an error (end of stream, program exited).
    Ended,
    /// The producer reported an error and ended.
    Failed(SourceError),
}

/// The capture thread's end of a producer thread.
pub(crate) struct Feed {
    /// See [`FeedTx::tx`].
    rx: Receiver<Result<Frame, SourceError>>,
    /// See [`FeedTx::quit`]. Also set on drop.
    quit: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// When the last frame (or the start) was seen, for stall detection.
    last: Instant,
}

impl Feed {
    /// Starts `produce` on a thread named `name`.
    pub fn spawn(
        name: &str,
        produce: impl FnOnce(FeedTx) + Send + 'static,
    ) -> Result<Feed, SourceError> {
        let (tx, rx) = bounded(FEED_CAPACITY);
        let quit = Arc::new(AtomicBool::new(false));
        let feed_tx = FeedTx {
            tx,
            quit: Arc::clone(&quit),
        };
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || produce(feed_tx))
            .map_err(|source| SourceError::Io {
                what: format!("cannot start thread {name}"),
                source,
            })?;
        Ok(Feed {
            rx,
            quit,
            handle: Some(handle),
            last: Instant::now(),
        })
    }

    /// Waits for the next frame, at most `stall` after the previous one, waking on `stop`.
    pub fn next(&mut self, stop: &StopToken, stall: Duration) -> Next {
        loop {
            if stop.is_stopped() {
                return Next::Stopped;
            }
            match self.rx.recv_timeout(POLL) {
                Ok(Ok(frame)) => {
                    self.last = Instant::now();
                    return Next::Frame(frame);
                }
                Ok(Err(e)) => return Next::Failed(e),
                Err(RecvTimeoutError::Disconnected) => return Next::Ended,
                Err(RecvTimeoutError::Timeout) => {
                    let waited = self.last.elapsed();
                    if waited >= stall {
                        return Next::Stalled(waited);
                    }
                }
            }
        }
    }

    /// Tells the producer to stop and waits up to `wait` for its thread. A producer stuck in a
    /// read that never returns (a hung device) is left behind, logged; it ends when its read does.
    pub fn close(&mut self, wait: Duration) {
        self.quit.store(true, Ordering::SeqCst);
        // Unblock a producer waiting for room.
        while self.rx.try_recv().is_ok() {}
        if let Some(handle) = self.handle.take() {
            let until = Instant::now() + wait;
            while !handle.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
                while self.rx.try_recv().is_ok() {}
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                log::debug!(
                    "Source reader thread still blocked in a read; leaving it to end on its own. thread={}",
                    handle.thread().name().unwrap_or("?")
                );
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    #[test]
    fn stall_is_reported_after_the_timeout() {
        let mut feed = Feed::spawn("test-feed", |tx| {
            tx.send(Ok(Frame::new(PixelFormat::Gray8, 1, 1, vec![0])));
            while !tx.quitting() {
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .expect("spawn");
        let stop = StopToken::new();
        assert!(matches!(
            feed.next(&stop, Duration::from_secs(5)),
            Next::Frame(_)
        ));
        let t0 = Instant::now();
        assert!(matches!(
            feed.next(&stop, Duration::from_millis(200)),
            Next::Stalled(_)
        ));
        assert!(t0.elapsed() >= Duration::from_millis(190));
        feed.close(Duration::from_secs(2));
        assert!(feed.handle.is_none());
    }

    #[test]
    fn end_error_and_stop_are_distinguished() {
        let stop = StopToken::new();
        let mut feed = Feed::spawn("test-feed", |_tx| {}).expect("spawn");
        assert!(matches!(
            feed.next(&stop, Duration::from_secs(5)),
            Next::Ended
        ));
        let mut feed = Feed::spawn("test-feed", |tx| {
            tx.send(Err(SourceError::Input("boom".into())));
        })
        .expect("spawn");
        assert!(matches!(
            feed.next(&stop, Duration::from_secs(5)),
            Next::Failed(_)
        ));
        let mut feed = Feed::spawn("test-feed", |tx| {
            while !tx.quitting() {
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .expect("spawn");
        stop.stop();
        assert!(matches!(
            feed.next(&stop, Duration::from_secs(5)),
            Next::Stopped
        ));
        feed.close(Duration::from_secs(2));
    }
}
