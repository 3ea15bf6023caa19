//! A session crossing to another process (an upgrade's handover): whether it can, its
//! [`ClientImage`], and the session rebuilt from one. Only at the idle point: no server
//! connection held, nothing half-relayed.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Session, Traffic};
use crate::cancel::CancelHandle;
use crate::client::context::ClientContext;
use crate::client::handover_image::{ClientImage, ExtraParam, TrafficImage};
use crate::client::prepared::ClientStatements;
use crate::params::ParamSet;
use crate::pool::listing::ClientInfo;
use crate::router::Route;

impl Session {
    /// Whether the session can go on in another process (see [`Session::image`]); a
    /// quick check, without building the image.
    pub(in crate::client) fn can_move(&self) -> bool {
        !self.listening && self.route.shards().is_none() && self.stmts.portable()
    }

    /// The session's image, when it can go on in another process: not of a sharded
    /// database (its sharding state stays here), not LISTENing (its subscriptions are
    /// this process's), and no named statement that runs a SQL-level one by this
    /// process's server name. `None`: the client stays.
    pub(in crate::client) fn image(&self, info: &ClientInfo) -> Option<ClientImage> {
        if !self.can_move() {
            return None;
        }
        let (statements, sql_statements) = self.stmts.export()?;
        let params = self
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let extras = self
            .params
            .extras()
            .map(|(name, value, learned)| ExtraParam {
                name: name.to_owned(),
                value: value.map(str::to_owned),
                learned,
            })
            .collect();
        Some(ClientImage {
            database: info.database.to_string(),
            user: info.user.to_string(),
            application_name: info
                .application_name
                .as_deref()
                .unwrap_or_default()
                .to_owned(),
            cancel_key: self.cancel.key(),
            params,
            extras,
            statements,
            sql_statements,
            pending: self
                .pending
                .as_deref()
                .map_or_else(Vec::new, |p| p.to_vec()),
            traffic: TrafficImage {
                bytes_in: self.traffic.bytes_in,
                bytes_out: self.traffic.bytes_out,
                transactions: self.traffic.transactions,
            },
            setting_up: self.setting_up,
            connect_time_us: info.connect_time_us,
            // A login sets it on the pool when the pool logs in as the client's user.
            passthrough: Some(self.route.home())
                .filter(|pool| *pool.key().user == *info.user)
                .and_then(|pool| pool.passthrough())
                .map(|p| (*p).clone()),
        })
    }

    /// The session of a client handed over by another process, on `route`, with its
    /// cancel key registered here as `cancel`.
    pub(in crate::client) fn from_image(
        ctx: Arc<ClientContext>,
        route: Route,
        image: &ClientImage,
        cancel: CancelHandle,
    ) -> Session {
        let mut params = ParamSet::default();
        for (k, v) in &image.params {
            params.set(k, v);
        }
        for e in &image.extras {
            params.restore_extra(&e.name, e.value.as_deref(), e.learned);
        }
        let stmts =
            ClientStatements::import(&ctx.statements, &image.statements, &image.sql_statements);
        let t = image.traffic;
        Session {
            route,
            params,
            cancel,
            pending: (!image.pending.is_empty())
                .then(|| Box::new(BytesMut::from(&image.pending[..]))),
            stmts,
            traffic: Traffic {
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
                transactions: t.transactions,
            },
            setting_up: image.setting_up,
            listening: false,
            ctx,
        }
    }

    /// How many named statements the client has (its admin entry shows it).
    pub(in crate::client) fn statement_count(&self) -> usize {
        self.stmts.len()
    }
}
