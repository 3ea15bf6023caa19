//! Parked clients in an upgrade's handover: the keeper sends every parked client that
//! can move to the new process at once (its socket is out of the reactor already),
//! without starting a task for it.

use std::os::fd::OwnedFd;

use mio::unix::SourceFd;

use super::{Parked, ParkedStream, ParkingLot, Resume};
use crate::client::context::ClientContext;
use crate::client::task::ClientSocket;

impl ClientSocket for ParkedStream {
    fn can_move(&self) -> bool {
        true
    }

    fn into_fd(self) -> std::io::Result<OwnedFd> {
        // Parked sockets are non-blocking already.
        Ok(match self {
            ParkedStream::Tcp(s) => s.into(),
            ParkedStream::Unix(s) => s.into(),
        })
    }
}

impl ParkingLot {
    /// Sends every parked client that can move to the handover's sink (those that
    /// cannot stay parked). Runs at each bell and tick once the handover has begun, so
    /// a client parked just as it began goes within a second.
    pub(super) fn hand_over(&self, ctx: &ClientContext) {
        if ctx.handover.sink().is_none() {
            return;
        }
        let moving = self.slots().take_where(|p| p.opened.session.can_move());
        for p in moving {
            let Parked { opened, idle_since } = *p;
            let _ = self.registry.deregister(&mut SourceFd(&opened.stream.fd()));
            if let Err(opened) = opened.depart(ctx) {
                // The sink closed meanwhile: the client goes on here.
                opened.held.reg.info().never_park();
                self.unpark(Parked { opened, idle_since }, Resume::Fresh);
            }
        }
    }
}
