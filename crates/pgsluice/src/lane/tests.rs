use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;

fn lanes(n: usize) -> Lanes {
    Lanes::start(n, tokio::runtime::Handle::current()).expect("lanes start")
}

fn pair() -> (Sock, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    (Sock::Unix(a), b)
}

async fn until_idle(l: &Lanes) {
    for _ in 0..500 {
        if l.tasks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("lane tasks did not end: {}", l.tasks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_spawned_task_runs_on_the_lane_thread_and_is_counted_until_it_ends() {
    let l = lanes(1);
    let (tx, rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    l.pick().spawn(async move {
        let _ = go_rx.await;
        let name = std::thread::current().name().map(str::to_owned);
        let _ = tx.send((name, on_lane(), current().is_some()));
    });
    assert_eq!(l.tasks(), 1);
    // Woken from this (tokio) thread: through the inbox and the eventfd.
    go_tx.send(()).unwrap();
    let (name, on, cur) = rx.await.unwrap();
    assert_eq!(name.as_deref(), Some("pgsluice-lane-0"));
    assert!(on && cur);
    assert!(!on_lane());
    until_idle(&l).await;
    l.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_lane_socket_echoes_and_sees_the_peer_close() {
    let l = lanes(1);
    let (ours, mut theirs) = pair();
    let sock = l.pick().adopt(ours).unwrap();
    let (tx, rx) = oneshot::channel();
    l.pick().spawn(async move {
        let mut sock = sock;
        let mut buf = [0u8; 64];
        let mut total = 0;
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
            sock.write_all(&buf[..n]).await.unwrap();
        }
        let _ = tx.send(total);
    });
    let echo = tokio::task::spawn_blocking(move || {
        for round in 0..50u8 {
            let msg = [round; 10];
            theirs.write_all(&msg).unwrap();
            let mut back = [0u8; 10];
            theirs.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        drop(theirs);
    });
    echo.await.unwrap();
    assert_eq!(rx.await.unwrap(), 500);
    until_idle(&l).await;
    l.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_full_socket_buffer_waits_for_room_and_loses_nothing() {
    let l = lanes(1);
    let (ours, mut theirs) = pair();
    let sock = l.pick().adopt(ours).unwrap();
    const TOTAL: usize = 4 * 1024 * 1024;
    l.pick().spawn(async move {
        let mut sock = sock;
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            sent += sock
                .write(&chunk[..(TOTAL - sent).min(chunk.len())])
                .await
                .unwrap();
        }
    });
    let got = tokio::task::spawn_blocking(move || {
        // Slow at first, so the lane's writes hit a full buffer.
        std::thread::sleep(Duration::from_millis(100));
        let mut all = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while all.len() < TOTAL {
            let n = theirs.read(&mut buf).unwrap();
            assert!(n > 0);
            all.extend_from_slice(&buf[..n]);
        }
        all
    })
    .await
    .unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(got.iter().all(|&b| b == 7));
    until_idle(&l).await;
    l.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_tokio_task_can_use_a_lane_socket() {
    let l = lanes(1);
    let (ours, mut theirs) = pair();
    let mut sock = l.pick().adopt(ours).unwrap();
    let writer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(50));
        theirs.write_all(b"hello").unwrap();
        theirs
    });
    let mut buf = [0u8; 5];
    // Pending first (nothing yet): the lane's event wakes this tokio task.
    sock.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    assert!(!sock.is_closed_or_dirty());
    let theirs = writer.await.unwrap();
    drop(theirs);
    // The close is seen by the probe once the lane reports it.
    let mut closed = false;
    for _ in 0..200 {
        if sock.is_closed_or_dirty() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(closed);
    drop(sock);
    l.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_panic_ends_its_task_only() {
    let l = lanes(1);
    l.pick().spawn(async { panic!("on purpose") });
    let (tx, rx) = oneshot::channel();
    l.pick().spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = tx.send(42);
    });
    assert_eq!(rx.await.unwrap(), 42);
    until_idle(&l).await;
    l.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_socket_taken_out_of_the_lane_is_plain_again() {
    let l = lanes(2);
    let (ours, mut theirs) = pair();
    let sock = l.pick().adopt(ours).unwrap();
    let Sock::Unix(plain) = sock.into_sock() else {
        panic!("not the unix socket");
    };
    // Another lane takes it.
    let mut again = l.pick().adopt(Sock::Unix(plain)).unwrap();
    theirs.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    again.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"x");
    drop(again);
    l.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_closed_lane_serves_its_sockets_until_they_are_gone() {
    let l = lanes(1);
    let (ours, mut theirs) = pair();
    let mut sock = l.pick().adopt(ours).unwrap();
    l.close();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!l.ended(), "a lane with a socket in use ended");
    // Still served: a read from a tokio task is woken by the lane.
    let w = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(20));
        theirs.write_all(b"y").unwrap();
        theirs
    });
    let mut b = [0u8; 1];
    sock.read_exact(&mut b).await.unwrap();
    drop(w.await.unwrap());
    drop(sock);
    let mut ended = false;
    for _ in 0..200 {
        if l.ended() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ended, "the lane did not end once its last socket closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn stop_waits_for_the_tasks_then_joins() {
    let l = lanes(2);
    let (tx, rx) = std::sync::mpsc::channel();
    l.pick().spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
    });
    tokio::task::spawn_blocking(move || l.stop()).await.unwrap();
    // The task had ended before stop returned.
    assert!(rx.try_recv().is_ok());
}
