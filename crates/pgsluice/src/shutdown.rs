//! One shutdown primitive for every task: a watch channel carrying the shutdown kind, and
//! a tracker that tells when every client task has ended.
//!
//! Tasks look at it only at protocol-safe points: an idle client between transactions, a
//! relay that has just reached ReadyForQuery(idle), an accept loop between accepts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// What the process has been asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    /// Serving normally.
    Running,
    /// Stop accepting; let in-flight transactions finish; close idle clients with 57P01.
    Graceful,
    /// Close everything now.
    Immediate,
}

/// The sending side, owned by the server.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<ShutdownKind>,
    /// Set with the first shutdown request: read on every poll of a session, where the
    /// watch channel's lock would be too much; shared with every watch.
    requested: Arc<AtomicBool>,
}

/// A task's view of the shutdown state.
#[derive(Debug, Clone)]
pub struct ShutdownWatch {
    rx: watch::Receiver<ShutdownKind>,
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    /// A new primitive in the `Running` state.
    pub fn new() -> Self {
        Shutdown {
            tx: watch::Sender::new(ShutdownKind::Running),
            requested: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle for a task.
    pub fn watch(&self) -> ShutdownWatch {
        ShutdownWatch {
            rx: self.tx.subscribe(),
            requested: self.requested.clone(),
        }
    }

    /// Moves to `kind` (never back to a milder kind).
    pub fn trigger(&self, kind: ShutdownKind) {
        if kind != ShutdownKind::Running {
            self.requested.store(true, Ordering::SeqCst);
        }
        self.tx.send_if_modified(|k| {
            let stronger = matches!(
                (*k, kind),
                (
                    ShutdownKind::Running,
                    ShutdownKind::Graceful | ShutdownKind::Immediate
                ) | (ShutdownKind::Graceful, ShutdownKind::Immediate)
            );
            if stronger {
                *k = kind;
            }
            stronger
        });
    }

    /// The current kind.
    pub fn kind(&self) -> ShutdownKind {
        *self.tx.borrow()
    }

    /// True once any shutdown was requested: one atomic load.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownWatch {
    /// The current kind.
    pub fn kind(&self) -> ShutdownKind {
        *self.rx.borrow()
    }

    /// True once any shutdown was requested: one atomic load (no lock), for the
    /// per-poll checks of sessions.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Resolves once a shutdown of any kind is requested (at once if it already was).
    pub async fn requested(&mut self) -> ShutdownKind {
        match self.rx.wait_for(|k| *k != ShutdownKind::Running).await {
            Ok(k) => *k,
            // The server is gone: behave as if told to stop now.
            Err(_) => ShutdownKind::Immediate,
        }
    }

    /// Resolves once an immediate shutdown is requested.
    pub async fn immediate(&mut self) {
        let _ = self.rx.wait_for(|k| *k == ShutdownKind::Immediate).await;
    }
}

/// Counts live tasks so that shutdown can wait for them to finish.
#[derive(Debug, Clone, Default)]
pub struct TaskTracker {
    inner: Arc<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by a tracked task; dropping it marks the task finished.
#[derive(Debug)]
pub struct TaskToken {
    inner: Arc<TrackerInner>,
}

impl TaskTracker {
    /// A token for a new task.
    pub fn token(&self) -> TaskToken {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        TaskToken {
            inner: self.inner.clone(),
        }
    }

    /// Spawns `fut` on the current runtime as a tracked task: it holds a token until
    /// it ends, so [`TaskTracker::wait`] waits for it.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token();
        tokio::spawn(async move {
            let out = fut.await;
            drop(token);
            out
        })
    }

    /// [`TaskTracker::spawn`] on the given runtime (from a thread outside it, or from a
    /// `Drop` that may run anywhere).
    pub fn spawn_on<F>(
        &self,
        rt: &tokio::runtime::Handle,
        fut: F,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token();
        rt.spawn(async move {
            let out = fut.await;
            drop(token);
            out
        })
    }

    /// Number of tasks still running.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Waits until no task holds a token.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kinds_only_escalate() {
        let s = Shutdown::new();
        let mut w = s.watch();
        s.trigger(ShutdownKind::Graceful);
        assert_eq!(w.requested().await, ShutdownKind::Graceful);
        s.trigger(ShutdownKind::Immediate);
        s.trigger(ShutdownKind::Graceful);
        assert_eq!(s.kind(), ShutdownKind::Immediate);
        w.immediate().await;
    }

    #[tokio::test]
    async fn tracker_waits_for_tokens() {
        let t = TaskTracker::default();
        let tok = t.token();
        let t2 = t.clone();
        let h = tokio::spawn(async move { t2.wait().await });
        tokio::task::yield_now().await;
        assert!(!h.is_finished());
        drop(tok);
        h.await.unwrap();
        assert_eq!(t.live(), 0);
    }

    #[tokio::test]
    async fn spawned_tasks_are_counted_until_they_end() {
        let t = TaskTracker::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = t.spawn(async move { rx.await.is_ok() });
        assert_eq!(t.live(), 1);
        tx.send(()).unwrap();
        assert!(h.await.unwrap());
        assert_eq!(t.live(), 0);
        t.wait().await;
    }
}
