//! File descriptors across a Unix stream socket (SCM_RIGHTS), through `rustix`'s safe
//! `sendmsg`/`recvmsg`: no `unsafe` here.
//!
//! On a stream socket the kernel attaches the descriptors of one `sendmsg` to the first
//! byte that call sent, hands them to the `recvmsg` that reads that byte, and never
//! merges two calls' descriptors into one read. So a receiver that queues descriptors in
//! arrival order and gives each decoded message that carries one the front of the
//! queue pairs them right ([`super::channel`] does). Received descriptors are
//! close-on-exec (`MSG_CMSG_CLOEXEC`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// The most descriptors one call sends or receives.
pub const MAX_FDS: usize = 8;

/// Sends `bytes` (as much as the socket takes) with `fds` attached; returns how many
/// bytes went. Non-blocking sockets give `WouldBlock` as usual, and then nothing was
/// sent: the descriptors go only with bytes.
pub fn send_with_fds(sock: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    if bytes.is_empty() && !fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte to travel with",
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let iov = [IoSlice::new(bytes)];
    Ok(sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL)?)
}

/// Reads into `buf` and appends the descriptors that came with the bytes to `fds`;
/// returns the number of bytes (0: the peer closed). Descriptors cut off because the
/// control buffer was short are an error (they would be lost silently otherwise).
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let got = recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were cut off (more than MAX_FDS in one message)",
        ));
    }
    Ok(got.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_work_on_the_other_side() {
        let (a, b) = UnixStream::pair().unwrap();
        // Three descriptors: a file, one end of a pipe-like socket pair, a listener.
        let mut file = tempfile_in_target();
        file.write_all(b"written before").unwrap();
        let (left, right) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fds = [file.as_fd(), right.as_fd(), listener.as_fd()];
        assert_eq!(send_with_fds(&a, b"xyz", &fds).unwrap(), 3);
        // Drop our copies: what the receiver holds must still work.
        drop((file, right, listener));

        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        let n = recv_with_fds(&b, &mut buf, &mut got).unwrap();
        assert_eq!(&buf[..n], b"xyz");
        assert_eq!(got.len(), 3);
        let mut it = got.into_iter();
        let mut file = std::fs::File::from(it.next().unwrap());
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "written before");
        let mut right = UnixStream::from(it.next().unwrap());
        let mut left = left;
        left.write_all(b"ping").unwrap();
        let mut four = [0u8; 4];
        right.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"ping");
        let listener = std::net::TcpListener::from(it.next().unwrap());
        assert_eq!(listener.local_addr().unwrap().port(), port);
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn descriptors_of_two_sends_are_not_merged() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _x2) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"1", &[x.as_fd()]).unwrap();
        send_with_fds(&a, b"2", &[x.as_fd(), x.as_fd()]).unwrap();
        send_with_fds(&a, b"3", &[]).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        assert_eq!(recv_with_fds(&b, &mut buf, &mut got).unwrap(), 1);
        assert_eq!(got.len(), 1);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut got).unwrap(), 1);
        assert_eq!(got.len(), 3);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut got).unwrap(), 1);
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut got).unwrap(), 0);
    }

    #[test]
    fn limits_are_errors() {
        let (a, _b) = UnixStream::pair().unwrap();
        let many = vec![a.as_fd(); MAX_FDS + 1];
        assert!(send_with_fds(&a, b"x", &many).is_err());
        assert!(send_with_fds(&a, b"", &[a.as_fd()]).is_err());
    }

    fn tempfile_in_target() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("pgsluice-fdpass-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let _ = std::fs::remove_file(&p);
        f
    }
}
