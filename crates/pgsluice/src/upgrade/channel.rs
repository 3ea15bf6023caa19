//! The async upgrade channel: [`super::frame`] messages over a tokio Unix stream, with
//! the descriptor some of them carry (through [`super::fdpass`]). A thin driver: the
//! framing decides, this only moves bytes and descriptors.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::fdpass::{recv_with_fds, send_with_fds};
use super::frame::{decode, encode, FrameError, Message};

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed.
    #[error("upgrade channel: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a message.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message that carries a descriptor came without one.
    #[error("upgrade channel: a message came without its descriptor")]
    MissingFd,
    /// The peer closed the channel in the middle of a message.
    #[error("upgrade channel: closed in the middle of a message")]
    Truncated,
}

/// One end of the upgrade channel.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    buf: BytesMut,
    fds: VecDeque<OwnedFd>,
}

impl Channel {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> Self {
        Channel {
            stream,
            buf: BytesMut::new(),
            fds: VecDeque::new(),
        }
    }

    /// Sends `msg`, with `fd` when the message carries one.
    pub async fn send(
        &mut self,
        msg: &Message,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ChannelError> {
        if msg.carries_fd() != fd.is_some() {
            return Err(ChannelError::MissingFd);
        }
        let mut out = BytesMut::new();
        encode(msg, &mut out);
        let mut fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        let mut sent = 0;
        while sent < out.len() {
            let chunk = &out[sent..];
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    send_with_fds(self.stream.as_fd(), chunk, &fds)
                })
                .await?;
            if n == 0 {
                return Err(ChannelError::Io(io::ErrorKind::WriteZero.into()));
            }
            // The descriptors went with the first bytes.
            fds.clear();
            sent += n;
        }
        Ok(())
    }

    /// The next message and its descriptor; `Ok(None)`: the peer closed the channel
    /// between messages.
    pub async fn recv(&mut self) -> Result<Option<(Message, Option<OwnedFd>)>, ChannelError> {
        loop {
            if let Some(msg) = decode(&mut self.buf)? {
                let fd = if msg.carries_fd() {
                    Some(self.fds.pop_front().ok_or(ChannelError::MissingFd)?)
                } else {
                    None
                };
                return Ok(Some((msg, fd)));
            }
            let mut chunk = [0u8; 8192];
            let mut fds = Vec::new();
            let n = self
                .stream
                .async_io(Interest::READABLE, || {
                    recv_with_fds(self.stream.as_fd(), &mut chunk, &mut fds)
                })
                .await?;
            self.fds.extend(fds);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ChannelError::Truncated)
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::frame::{ListenerKind, PROTOCOL_VERSION};

    #[tokio::test]
    async fn messages_and_descriptors_arrive_paired() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Channel::new(a), Channel::new(b));
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            pid: 1,
        };
        let big = Message::Client {
            image: vec![7; 300_000],
        };
        let sender = async {
            tx.send(&hello, None).await.unwrap();
            for l in [&l1, &l2] {
                let m = Message::Listener {
                    kind: ListenerKind::Tcp,
                    addr: l.local_addr().unwrap().to_string(),
                };
                tx.send(&m, Some(l.as_fd())).await.unwrap();
            }
            tx.send(&big, Some(l1.as_fd())).await.unwrap();
            tx.send(&Message::Done, None).await.unwrap();
            drop(tx);
        };
        let receiver = async {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await.unwrap() {
                got.push(m);
            }
            got
        };
        let ((), got) = tokio::join!(sender, receiver);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].0, hello);
        for (i, l) in [&l1, &l2].into_iter().enumerate() {
            let (msg, fd) = &got[1 + i];
            let addr = l.local_addr().unwrap();
            assert_eq!(
                *msg,
                Message::Listener {
                    kind: ListenerKind::Tcp,
                    addr: addr.to_string()
                }
            );
            let passed = std::net::TcpListener::from(fd.as_ref().unwrap().try_clone().unwrap());
            assert_eq!(passed.local_addr().unwrap(), addr);
        }
        assert_eq!(got[3].0, big);
        assert!(got[3].1.is_some());
        assert_eq!(got[4].0, Message::Done);
        assert!(got[4].1.is_none());
    }

    #[tokio::test]
    async fn garbage_and_a_cut_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut rx = Channel::new(b);
        a.try_write(b"Q\0\0\0\0").unwrap();
        assert!(matches!(rx.recv().await, Err(ChannelError::Frame(_))));
        let (a, b) = UnixStream::pair().unwrap();
        let mut rx = Channel::new(b);
        a.try_write(b"R\0\0").unwrap();
        drop(a);
        assert!(matches!(rx.recv().await, Err(ChannelError::Truncated)));
        // A descriptor-carrying message without one.
        let (a, b) = UnixStream::pair().unwrap();
        let mut rx = Channel::new(b);
        let mut out = BytesMut::new();
        encode(&Message::Client { image: vec![1] }, &mut out);
        a.try_write(&out).unwrap();
        assert!(matches!(rx.recv().await, Err(ChannelError::MissingFd)));
    }
}
