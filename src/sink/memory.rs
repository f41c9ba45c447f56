//! The recording sink: keeps every event in memory. For tests and for programs that embed the
//! pipeline; it has no config entry.

use std::sync::{Arc, Mutex};

use super::{Sink, SinkError};
use crate::event::Event;

/// Appends events to a shared list. The `Arc<Mutex<..>>` is shared with [`MemorySink::events`]
/// callers: the sink thread pushes, readers clone the list.
#[derive(Clone, Default)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<Event>>>,
}

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// A copy of the events recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Sink for MemorySink {
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        if let Ok(mut v) = self.events.lock() {
            v.push(event.clone());
        }
        Ok(())
    }
}
