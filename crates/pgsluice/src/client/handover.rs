//! Clients crossing to a new process in a zero-downtime upgrade (`pgsluice --upgrade`).
//!
//! The old process, once the new one has its listening sockets, calls
//! [`begin_handover`]: from then on every pool client that can move (see below) is taken
//! at its next idle point (a parked one at once), its socket and its [`ClientImage`] are
//! sent to the sink as a [`Departing`], and the old process forgets it. The upgrade
//! channel (`crate::upgrade`) carries them over a Unix socket (the socket with
//! SCM_RIGHTS), and the new process calls [`adopt`] for each: the client goes on
//! there, never having noticed.
//!
//! SKELETON: the interface is fixed; the bodies are being written (issue 20 part 1).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::{Admission, ClientContext};
use crate::admin::Console;
use crate::shutdown::TaskToken;

/// A logged-in pool client's state as it crosses to another process: everything its
/// session needs to go on (database and user, parameters, cancel key, prepared
/// statements, bytes already read, counters). Encoded by the old process, decoded by
/// the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientImage {
    _private: (),
}

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes end before the image does, or hold something else.
    #[error("malformed client image: {0}")]
    Malformed(&'static str),
}

impl ClientImage {
    /// The image as bytes (the upgrade channel frames them).
    pub fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    /// The image from bytes made by [`ClientImage::encode`] (of this or an older
    /// version of pgsluice).
    pub fn decode(_bytes: &[u8]) -> Result<ClientImage, ImageError> {
        Err(ImageError::Malformed("not built yet"))
    }
}

/// A client leaving the old process: its socket and its state.
#[derive(Debug)]
pub struct Departing {
    /// The client's socket (TCP or Unix), non-blocking.
    pub fd: OwnedFd,
    /// Everything else.
    pub image: ClientImage,
}

/// Where departing clients go (the upgrade channel's sender side drains it).
pub type HandoverSink = tokio::sync::mpsc::UnboundedSender<Departing>;

/// Old process: from now on, every pool client that can move is sent to `sink` at its
/// next idle point, parked clients at once. Clients that cannot move (under TLS, in
/// session mode holding a server, of the admin console, of a sharded database) stay and
/// are served here until they leave.
pub fn begin_handover(_ctx: &ClientContext, _sink: HandoverSink) {}

/// Why a handed-over client could not be taken on (its socket is then closed).
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// Its database or user is not in this process's configuration.
    #[error("client of {database}/{user} has no pool here")]
    NoPool {
        /// The database it was logged into.
        database: String,
        /// Its user.
        user: String,
    },
    /// Not built yet.
    #[error("adopting clients is not built yet")]
    Unsupported,
}

/// New process: takes on a client handed over by the old one: places under the client
/// limits (`admission`, taken by the caller as the accept loop does), an entry in the
/// admin views, its cancel key registered, then parked (or its session started when
/// bytes came with it). Must run inside the runtime.
pub fn adopt(
    _ctx: &Arc<ClientContext>,
    _console: Arc<dyn Console>,
    _departing: Departing,
    _admission: Admission,
    _token: TaskToken,
) -> Result<(), AdoptError> {
    Err(AdoptError::Unsupported)
}
