//! An admin console session on a client connection: the login and logout lines
//! (`log_connections`, `log_disconnections`), the entry in the admin client list, and
//! the console itself ([`crate::admin::serve`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::context::ClientContext;
use crate::admin::{self, Access, Console};
use crate::cancel::CancelHandle;
use crate::net::Stream;
use crate::pool::listing::Endpoint;
use crate::pool::{ClientInfo, ClientReg};

/// An admin console login.
pub(super) struct AdminLogin {
    pub(super) user: String,
    pub(super) access: Access,
    pub(super) application_name: String,
    pub(super) cancel: CancelHandle,
    pub(super) pending: BytesMut,
}

/// Runs an admin console session.
pub(super) async fn serve_admin(
    stream: Stream,
    peer: String,
    ctx: &ClientContext,
    console: &dyn Console,
    a: AdminLogin,
    (remote, local, fd): (Endpoint, Endpoint, i32),
    started: Instant,
) {
    let (client_id, _) = a.cancel.key();
    let (log_in, log_out) = {
        let generation = ctx.live.load();
        let g = &generation.config.general;
        (g.log_connections, g.log_disconnections)
    };
    if log_in {
        tracing::info!(client = client_id, peer = %peer, user = %a.user, access = ?a.access, "admin console login");
    }
    let info = Arc::new(ClientInfo::new(
        client_id as u64,
        a.user.into(),
        "pgbouncer".into(),
        remote,
        local,
        (!a.application_name.is_empty()).then(|| a.application_name.as_str().into()),
        fd,
    ));
    let reg = ClientReg::new(info.clone(), ctx.admin_clients.clone());
    let reason = admin::serve(stream, a.pending, console, a.access, info).await;
    drop(reg);
    drop(a.cancel);
    if !log_out {
        return;
    }
    tracing::info!(
        client = client_id,
        peer = %peer,
        duration_ms = started.elapsed().as_millis() as u64,
        reason,
        "admin console logout"
    );
}
