//! Lanes: pgsluice's own event loop for the hot path (issue 18, part 1).
//!
//! A lane is one thread with one epoll set (mio's) and a small executor. Logged-in
//! plain clients run their sessions here, and the server connections they check out
//! join the same epoll set the first time they are used from a lane. A socket is
//! registered once, edge-triggered for reading and writing, and keeps its readiness
//! in a word of its own ([`LaneSocket`]): a read or write goes straight to the system
//! call while the word says ready, and a wake-up is one push on the lane's run queue.
//! So a transaction costs no reactor registration change, no task-harness state
//! change and no scheduler turn of tokio's, which is where about 2,000 of pgsluice's
//! instructions per transaction went (`docs/performance.md`).
//!
//! Tokio keeps everything else: logins, the admin console, the parking keeper,
//! timers, opening server connections, maintenance. A lane thread enters the runtime
//! (`Handle::enter`), so a session on a lane can still use tokio's timers, channels
//! and sockets (their wake-ups then reach the lane through its inbox and an eventfd),
//! and tokio tasks can use lane sockets (a lane wakes their wakers like any other).
//!
//! Every task a lane runs is counted; a panic in one is caught and ends that task
//! only; [`Lanes::stop`] ends the threads once their tasks are done and joins them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use crate::sync::LockExt;

mod socket;
use socket::Io;
pub use socket::{LaneSocket, Sock};

#[cfg(test)]
mod tests;

/// The eventfd's token; socket tokens are slab indexes below it.
const WAKE: Token = Token(usize::MAX);

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The lanes of the process, picked round-robin for each client that joins one.
#[derive(Debug)]
pub struct Lanes {
    lanes: Vec<Lane>,
    next: AtomicUsize,
}

impl Lanes {
    /// Starts `n` lane threads inside `runtime`; `None` for `n == 0` or when the
    /// system gives no epoll set or thread (logged; everything then stays on tokio).
    pub fn start(n: usize, runtime: tokio::runtime::Handle) -> Option<Lanes> {
        let mut lanes = Vec::with_capacity(n);
        for i in 0..n {
            match Lane::start(i, runtime.clone()) {
                Ok(l) => lanes.push(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a relay lane; sessions stay on tokio's workers");
                    Lanes::stop_all(&lanes);
                    return None;
                }
            }
        }
        (!lanes.is_empty()).then_some(Lanes {
            lanes,
            next: AtomicUsize::new(0),
        })
    }

    /// The next lane, round-robin.
    pub fn pick(&self) -> &Lane {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        &self.lanes[i]
    }

    /// Tasks running on all lanes.
    pub fn tasks(&self) -> usize {
        self.lanes.iter().map(Lane::tasks).sum()
    }

    /// Ends every lane once its tasks are done and its sockets closed, and waits
    /// for the threads (blocking: call it off the async workers).
    pub fn stop(&self) {
        Lanes::stop_all(&self.lanes);
    }

    /// Asks every lane to end once its tasks are done and its sockets closed (a
    /// tokio task may still be using a lane's socket: the lane serves it until then),
    /// without waiting.
    pub fn close(&self) {
        Lanes::close_all(&self.lanes);
    }

    /// Whether every lane thread has ended; those that have are joined.
    pub fn ended(&self) -> bool {
        let mut all = true;
        for l in &self.lanes {
            let mut slot = l.shared.thread.locked();
            match slot.take() {
                Some(h) if h.is_finished() => {
                    let _ = h.join();
                }
                Some(h) => {
                    *slot = Some(h);
                    all = false;
                }
                None => {}
            }
        }
        all
    }

    fn close_all(lanes: &[Lane]) {
        for l in lanes {
            l.shared.closing.store(true, Ordering::SeqCst);
            l.shared.ring();
        }
    }

    fn stop_all(lanes: &[Lane]) {
        Lanes::close_all(lanes);
        for l in lanes {
            let handle = l.shared.thread.locked().take();
            let on_it = CURRENT.with_borrow(|c| c.as_ref().is_some_and(|c| c.is(l)));
            if let (Some(h), false) = (handle, on_it) {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Ends the threads when nobody stopped them (no join: the last reference may be
        // dropped on a lane thread itself).
        Lanes::close_all(&self.lanes);
    }
}

/// One lane: a handle to its thread.
#[derive(Debug, Clone)]
pub struct Lane {
    shared: Arc<Shared>,
}

struct Shared {
    registry: mio::Registry,
    waker: mio::Waker,
    /// Tasks woken (or spawned) from other threads.
    inbox: Mutex<Vec<Arc<Task>>>,
    /// Set when the eventfd was written and the inbox not yet drained.
    rung: AtomicBool,
    /// Token → the socket's readiness.
    sockets: Mutex<Slab>,
    tasks: AtomicUsize,
    closing: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("tasks", &self.tasks.load(Ordering::Relaxed))
            .field("closing", &self.closing.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Slab {
    entries: Vec<Option<Arc<Io>>>,
    free: Vec<usize>,
}

impl Slab {
    fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

impl Shared {
    /// Wakes the loop from another thread (at most one eventfd write per drain).
    fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

/// Queues a woken task on its lane: on the lane's own thread a push on its run queue
/// (no system call, no lock), from elsewhere the inbox and the eventfd.
fn schedule(task: Arc<Task>) {
    let task = CURRENT.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => match c.as_mut() {
            Some(local) if Arc::ptr_eq(&local.shared, &task.lane) => {
                local.queue.push_back(task);
                None
            }
            _ => Some(task),
        },
        Err(_) => Some(task),
    });
    if let Some(task) = task {
        let lane = task.lane.clone();
        lane.inbox.locked().push(task);
        lane.ring();
    }
}

/// The lane a thread runs, with its run queue.
struct Local {
    shared: Arc<Shared>,
    queue: VecDeque<Arc<Task>>,
}

impl Local {
    fn is(&self, lane: &Lane) -> bool {
        Arc::ptr_eq(&self.shared, &lane.shared)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// The lane this thread runs, when it is a lane thread.
pub fn current() -> Option<Lane> {
    CURRENT.with_borrow(|c| {
        c.as_ref().map(|l| Lane {
            shared: l.shared.clone(),
        })
    })
}

/// Whether this thread runs `lane`.
fn is_current(lane: &Lane) -> bool {
    CURRENT.with_borrow(|c| c.as_ref().is_some_and(|c| c.is(lane)))
}

/// Whether this thread is a lane thread (no reference count touched).
pub fn on_lane() -> bool {
    CURRENT.with_borrow(|c| c.is_some())
}

struct Task {
    lane: Arc<Shared>,
    queued: AtomicBool,
    /// Polled only on the lane's thread; a mutex so that the waker is `Sync`.
    future: Mutex<Option<BoxFuture>>,
}

impl futures_task::ArcWake for Task {
    fn wake(self: Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            schedule(self);
        }
    }

    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::AcqRel) {
            schedule(arc_self.clone());
        }
    }
}

impl Lane {
    fn start(index: usize, runtime: tokio::runtime::Handle) -> io::Result<Lane> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let shared = Arc::new(Shared {
            registry,
            waker,
            inbox: Mutex::default(),
            rung: AtomicBool::new(false),
            sockets: Mutex::default(),
            tasks: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("pgsluice-lane-{index}"))
            .spawn(move || run(for_thread, poll, runtime))?;
        *shared.thread.locked() = Some(handle);
        Ok(Lane { shared })
    }

    /// Runs `future` on this lane. Counted until it ends; a panic in it ends it alone.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.shared.tasks.fetch_add(1, Ordering::SeqCst);
        let task = Arc::new(Task {
            lane: self.shared.clone(),
            queued: AtomicBool::new(true),
            future: Mutex::new(Some(Box::pin(future))),
        });
        schedule(task);
    }

    /// Tasks running on this lane.
    pub fn tasks(&self) -> usize {
        self.shared.tasks.load(Ordering::SeqCst)
    }

    /// Registers `sock` (non-blocking) with this lane's epoll set.
    pub fn adopt(&self, sock: Sock) -> io::Result<LaneSocket> {
        let io = Arc::new(Io::new());
        let token = {
            let mut slab = self.shared.sockets.locked();
            match slab.free.pop() {
                Some(i) => {
                    slab.entries[i] = Some(io.clone());
                    i
                }
                None => {
                    slab.entries.push(Some(io.clone()));
                    slab.entries.len() - 1
                }
            }
        };
        let fd = sock.fd();
        if let Err(e) = self.shared.registry.register(
            &mut SourceFd(&fd),
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.release(token);
            return Err(e);
        }
        Ok(LaneSocket::new(sock, io, self.clone(), token))
    }

    /// Takes a socket's token back; with `fd`, the socket also leaves the epoll set
    /// (it lives on elsewhere), else it is about to be closed, which removes it.
    fn forget(&self, token: usize, fd: Option<RawFd>) {
        if let Some(fd) = fd {
            let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
        }
        self.release(token);
    }

    fn release(&self, token: usize) {
        {
            let mut slab = self.shared.sockets.locked();
            if let Some(e) = slab.entries.get_mut(token) {
                if e.take().is_some() {
                    slab.free.push(token);
                }
            }
        }
        // A closing lane waits for its last socket: it looks again.
        if self.shared.closing.load(Ordering::SeqCst) {
            self.shared.ring();
        }
    }
}

/// Polls one task, catching a panic (which ends the task and nothing else).
fn poll_task(shared: &Shared, task: Arc<Task>) {
    task.queued.store(false, Ordering::Release);
    let mut slot = task.future.locked();
    let Some(future) = slot.as_mut() else {
        return;
    };
    // Lent, not cloned: a reference count is taken only by whoever keeps the waker.
    let waker = futures_task::waker_ref(&task);
    let mut cx = Context::from_waker(&waker);
    let done = match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
        Ok(Poll::Pending) => false,
        Ok(Poll::Ready(())) => true,
        Err(_) => {
            tracing::error!("a session on a relay lane panicked; it is ended");
            true
        }
    };
    if done {
        // Dropped outside the lock, and a panic in a destructor is caught as well.
        let future = slot.take();
        drop(slot);
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(future)));
        shared.tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The lane's thread: run what is ready, then wait for the epoll set.
fn run(shared: Arc<Shared>, mut poll: mio::Poll, runtime: tokio::runtime::Handle) {
    let _runtime = runtime.enter();
    crate::clock::tick();
    CURRENT.set(Some(Local {
        shared: shared.clone(),
        queue: VecDeque::new(),
    }));
    let mut events = Events::with_capacity(256);
    let mut inbox = Vec::new();
    loop {
        // A load first: the swap (a locked instruction) only when the bell rang.
        if shared.rung.load(Ordering::Relaxed) && shared.rung.swap(false, Ordering::AcqRel) {
            std::mem::swap(&mut inbox, &mut *shared.inbox.locked());
            CURRENT.with_borrow_mut(|c| {
                if let Some(local) = c.as_mut() {
                    local.queue.extend(inbox.drain(..));
                }
            });
        }
        while let Some(task) =
            CURRENT.with_borrow_mut(|c| c.as_mut().and_then(|l| l.queue.pop_front()))
        {
            poll_task(&shared, task);
        }
        if shared.closing.load(Ordering::SeqCst)
            && shared.tasks.load(Ordering::SeqCst) == 0
            && shared.sockets.locked().live() == 0
        {
            break;
        }
        let timeout = shared
            .rung
            .load(Ordering::Acquire)
            .then_some(std::time::Duration::ZERO);
        let polled = poll.poll(&mut events, timeout);
        // What the tasks do until the next wait is timed from here (crate::clock).
        crate::clock::tick();
        if let Err(e) = polled {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "relay lane: epoll failed");
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        let slab = shared.sockets.locked();
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            if let Some(Some(io)) = slab.entries.get(ev.token().0) {
                io.event(ev);
            }
        }
    }
    // Tasks left in the queue after the last one ended are empty shells.
    CURRENT.set(None);
    crate::clock::stop();
}
