//! The device event loop (event-manager): host-side input for the devices —
//! the harness's terminal into COM1 when the console is inherited — and a stop
//! event for teardown.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::vcpu::Shared;
use crate::VmmError;

/// Stops the loop when its eventfd is written.
struct Stop {
    evt: Arc<EventFd>,
    stopped: Arc<AtomicBool>,
}

impl MutEventSubscriber for Stop {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        self.stopped.store(true, Ordering::SeqCst);
    }
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&*self.evt, EventSet::IN));
    }
}

/// Feeds the harness's stdin into COM1's receive FIFO.
struct StdinToCom1 {
    shared: Arc<Shared>,
}

impl MutEventSubscriber for StdinToCom1 {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let n = std::io::stdin().lock().read(&mut buf).unwrap_or(0);
        if n == 0 || events.event_set().contains(EventSet::HANG_UP) {
            // End of input: stop watching it.
            let _ = ops.remove(Events::new_raw(0, EventSet::IN));
            return;
        }
        let mut com1 = self
            .shared
            .bus
            .com1
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = com1.enqueue_raw_bytes(&buf[..n]);
    }
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new_raw(std::io::stdin().as_raw_fd(), EventSet::IN));
    }
}

/// The running loop; stopping it joins its thread.
#[derive(Debug)]
pub(crate) struct EventLoop {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

type Subscriber = Box<dyn MutEventSubscriber + Send>;

impl EventLoop {
    /// Starts the loop; `stdin` also routes the terminal into COM1.
    pub(crate) fn start(shared: Arc<Shared>, stdin: bool) -> Result<Self, VmmError> {
        let os = |what: &'static str| move |e: std::io::Error| VmmError::Os { what, source: e };
        let stop =
            Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(os("eventfd for the event loop"))?);
        let stopped = Arc::new(AtomicBool::new(false));
        let mut em: EventManager<Subscriber> = EventManager::new()
            .map_err(|e| VmmError::Control(format!("creating the event loop: {e:?}")))?;
        em.add_subscriber(Box::new(Stop {
            evt: Arc::clone(&stop),
            stopped: Arc::clone(&stopped),
        }));
        if stdin {
            em.add_subscriber(Box::new(StdinToCom1 { shared }));
        }
        let thread = std::thread::Builder::new()
            .name("ktstr-vmm-io".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    if em.run_with_timeout(1000).is_err() {
                        break;
                    }
                }
            })
            .map_err(os("starting the event loop thread"))?;
        Ok(EventLoop {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits for its thread.
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.write(1);
            let _ = t.join();
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}
