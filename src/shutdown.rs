//! A shutdown signal shared by every task and thread: set once, observed by polling
//! (`is_triggered`) from blocking threads or by awaiting (`wait`) from async tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_io::Timer;
use event_listener::Event;
use futures_lite::future;

/// Cloneable handle to one shutdown signal.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown. Calling it again does nothing.
    pub fn trigger(&self) {
        if !self.inner.triggered.swap(true, Ordering::SeqCst) {
            self.inner.event.notify(usize::MAX);
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Waits until `trigger` has been called.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }

    /// Runs `work` to completion, or returns `None` as soon as the shutdown starts.
    pub async fn or_stop<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let work = async { Some(work.await) };
        let stop = async {
            self.wait().await;
            None
        };
        future::or(stop, work).await
    }

    /// Sleeps until `deadline`. Returns false, early, when the shutdown starts first.
    pub async fn sleep_until(&self, deadline: Instant) -> bool {
        let sleep = async {
            Timer::at(deadline).await;
            true
        };
        let stop = async {
            self.wait().await;
            false
        };
        future::or(stop, sleep).await
    }

    /// Sleeps for `duration`. Returns false, early, when the shutdown starts first.
    pub async fn sleep(&self, duration: Duration) -> bool {
        self.sleep_until(Instant::now() + duration).await
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}
