use std::io::Write;
use std::os::unix::net::UnixStream;

use super::*;

fn pair() -> (ParkedStream, UnixStream) {
    let (parked, peer) = UnixStream::pair().unwrap();
    parked.set_nonblocking(true).unwrap();
    (ParkedStream::Unix(parked), peer)
}

/// A readable wake-up with nothing to read keeps the client parked; with data it
/// hands over what came (up to the limit, the rest stays in the socket); the
/// client's close and errors end it.
#[test]
fn a_wake_up_without_input_is_spurious() {
    let (mut parked, mut peer) = pair();
    assert!(matches!(parked.take_input(8), Woken::Spurious));
    assert!(matches!(parked.take_input(8), Woken::Spurious));
    peer.write_all(b"Q\0\0\0\x0dselect 1\0").unwrap();
    match parked.take_input(8) {
        Woken::Bytes(b) => assert_eq!(&b[..], b"Q\0\0\0\x0dsel"),
        other => panic!("{other:?}"),
    }
    match parked.take_input(64) {
        Woken::Bytes(b) => assert_eq!(&b[..], b"ect 1\0"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(parked.take_input(8), Woken::Spurious));
    drop(peer);
    assert!(matches!(parked.take_input(8), Woken::Closed));
}

#[test]
fn a_broken_connection_is_gone() {
    // A TCP connection reset by the peer reads as an error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    // Unread data in the client's socket makes its close a reset.
    (&server).write_all(b"x").unwrap();
    drop(client);
    let mut parked = ParkedStream::Tcp(server);
    let woken = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            parked.take_input(8)
        })
        .find(|w| !matches!(w, Woken::Spurious))
        .expect("the reset arrives");
    assert!(matches!(woken, Woken::Failed), "{woken:?}");
}
