//! Requests a session answers without a server connection.

use bytes::BytesMut;

use super::Session;

impl Session {
    /// Answers `Parse(named)... Sync` without a server when every statement is one a
    /// server has already accepted. Synchronous prepares (libpq's PQprepare) then never
    /// wait for a pooled connection, which matters when the application holds other
    /// connections in open transactions on the same thread (pgbench -M prepared).
    pub(super) fn answer_locally(&mut self, bytes: &[u8]) -> Option<BytesMut> {
        let mut rest = bytes;
        let mut found = Vec::new();
        loop {
            let h = pgsluice_protocol::frame::parse_header(rest, u32::MAX).ok()??;
            let body = rest.get(5..h.total_len())?;
            rest = &rest[h.total_len()..];
            match h.tag {
                b'P' => {
                    // The unnamed statement is never answered here: its name (the
                    // first string of the body) is enough to tell, without parsing the
                    // rest.
                    if body.first() == Some(&0) {
                        return None;
                    }
                    let p = pgsluice_protocol::frontend::parse_parse(body).ok()?;
                    if p.name.is_empty()
                        || self.stmts.contains(p.name)
                        || found.iter().any(|(n, _)| n == p.name)
                    {
                        return None;
                    }
                    let stmt = self.ctx.statements.verified(p.query, &p.param_types)?;
                    found.push((p.name.to_owned(), stmt));
                }
                b'S' if rest.is_empty() && !found.is_empty() => break,
                _ => return None,
            }
        }
        let mut reply = BytesMut::with_capacity(found.len() * 5 + 6);
        self.route
            .home()
            .stats
            .add_prepared(crate::client::prepared::PreparedCounts {
                client_parses: found.len() as u64,
                ..Default::default()
            });
        for (name, stmt) in found {
            self.stmts.insert(&name, stmt);
            reply.extend_from_slice(&[b'1', 0, 0, 0, 4]);
        }
        pgsluice_protocol::backend::ready_for_query(
            &mut reply,
            pgsluice_protocol::backend::TxStatus::Idle,
        );
        Some(reply)
    }
}
