//! The old process's side of the upgrade channel, in process: a test plays the new
//! process with a raw [`Channel`].

use std::os::fd::OwnedFd;

use super::*;
use crate::config::Config;

fn config(name: &str) -> (Config, PathBuf) {
    let dir = std::env::temp_dir().join(format!("pgsluice-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = Config::default();
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.general.pidfile = Some(dir.join("pgsluice.pid"));
    let control = crate::upgrade::control_path(&cfg.general).unwrap();
    (cfg, control)
}

async fn hello(ch: &mut Channel, version: u16) -> Option<(Message, Option<OwnedFd>)> {
    let m = Message::Hello { version, pid: 1 };
    ch.send(&m, None).await.unwrap();
    ch.recv().await.unwrap()
}

/// Receives the old process's hello and listeners; the TCP listener's address.
async fn listeners(ch: &mut Channel) -> (String, i32) {
    let mut tcp = None;
    loop {
        match ch.recv().await.unwrap().unwrap() {
            (Message::Listener { kind, addr }, Some(_fd)) => {
                assert_eq!(kind, ListenerKind::Tcp);
                tcp = Some(addr);
            }
            (Message::ListenersSent { key_floor }, None) => return (tcp.unwrap(), key_floor),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn another_protocol_version_is_refused_and_nothing_changes() {
    let (cfg, control) = config("version");
    let instance = Instance::start(cfg).await.unwrap();
    let mut ch = Channel::new(UnixStream::connect(&control).await.unwrap());
    match hello(&mut ch, PROTOCOL_VERSION + 1).await {
        Some((Message::Error { text }, None)) => assert!(text.contains("protocol"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(!*instance.app().handed_over.borrow());
    instance
        .shutdown(Duration::ZERO, std::future::pending())
        .await;
    assert!(
        !control.exists(),
        "the control socket is removed at a plain exit"
    );
}

#[tokio::test]
async fn a_new_process_that_gives_up_leaves_the_old_one_serving() {
    let (cfg, control) = config("gives-up");
    let instance = Instance::start(cfg).await.unwrap();
    let addr = instance.local_addrs()[0];
    let mut ch = Channel::new(UnixStream::connect(&control).await.unwrap());
    let Some((Message::Hello { pid, .. }, None)) = hello(&mut ch, PROTOCOL_VERSION).await else {
        panic!("no hello");
    };
    assert_eq!(pid, std::process::id());
    let (tcp, key_floor) = listeners(&mut ch).await;
    assert_eq!(tcp, addr.to_string());
    assert!(key_floor >= KEY_HEADROOM);
    let gives_up = Message::Error {
        text: "cannot start".into(),
    };
    ch.send(&gives_up, None).await.unwrap();
    // Still accepting, and ready for another upgrade request.
    let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut again = Channel::new(UnixStream::connect(&control).await.unwrap());
    assert!(matches!(
        hello(&mut again, PROTOCOL_VERSION).await,
        Some((Message::Hello { .. }, None))
    ));
    assert!(!*instance.app().handed_over.borrow());
    instance
        .shutdown(Duration::ZERO, std::future::pending())
        .await;
}

#[tokio::test]
async fn after_ready_the_old_process_stops_accepting_and_asks_to_stop() {
    let (cfg, control) = config("ready");
    let instance = Instance::start(cfg).await.unwrap();
    let addr = instance.local_addrs()[0];
    let mut ch = Channel::new(UnixStream::connect(&control).await.unwrap());
    hello(&mut ch, PROTOCOL_VERSION).await.unwrap();
    listeners(&mut ch).await;
    ch.send(&Message::Ready { pid: 2 }, None).await.unwrap();
    // No client: done at once, and the process asks itself to stop.
    assert!(matches!(
        ch.recv().await.unwrap(),
        Some((Message::Done, None))
    ));
    let how = instance.app().stop_requested().await;
    assert_eq!(how, StopRequest::WaitForServers);
    assert!(*instance.app().handed_over.borrow());
    // Its accept loop ended and its copies are closed: with the passed sockets dropped
    // here too, the port is closed.
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting on {addr}");
    // The control socket file is left to the new process (here: nobody bound a new one,
    // so it is the old one's, unlinked by no one).
    assert!(control.exists());
    instance
        .shutdown(Duration::ZERO, std::future::pending())
        .await;
}
