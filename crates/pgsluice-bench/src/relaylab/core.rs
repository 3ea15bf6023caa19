//! The sans-IO pooling logic shared by the mio and io_uring loops: connections are
//! plain ids, bytes come in through [`Core::on_data`], and what must be written sits in
//! each connection's out buffer, listed by [`Core::next_dirty`]. The driver owns the
//! sockets, writes the out buffers and drops what [`Core::next_closed`] names.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::{client_startup, scan_client, scan_server, Scanner, Startup};

/// A connection's index in the core (and the driver's token).
pub type Id = usize;

/// The pooling state of one worker.
#[derive(Debug)]
pub struct Core {
    slots: Vec<Slot>,
    free_ids: Vec<Id>,
    idle: Vec<Id>,
    queue: VecDeque<Id>,
    dirty: Vec<Id>,
    closed: Vec<Id>,
    reply: Vec<u8>,
}

#[derive(Debug)]
struct Slot {
    out: Vec<u8>,
    dirty: bool,
    role: Role,
}

#[derive(Debug)]
enum Role {
    /// Reusable once the driver calls [`Core::release_id`].
    Closed,
    Client(Client),
    Server(Server),
}

#[derive(Debug)]
struct Client {
    /// Startup bytes until the login is done.
    startup: Option<BytesMut>,
    /// Bytes read while no server was attached.
    unsent: Vec<u8>,
    scan: Scanner,
    /// Queries and Syncs sent whose ReadyForQuery has not come back.
    pending: u32,
    server: Option<Id>,
    queued: bool,
}

#[derive(Debug)]
struct Server {
    client: Option<Id>,
    scan: Scanner,
    status: u8,
}

impl Core {
    /// An empty core; `reply` is the canned login answer.
    pub fn new(reply: Vec<u8>) -> Core {
        Core {
            slots: Vec::new(),
            free_ids: Vec::new(),
            idle: Vec::new(),
            queue: VecDeque::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            reply,
        }
    }

    fn add(&mut self, role: Role) -> Id {
        let slot = Slot {
            out: Vec::new(),
            dirty: false,
            role,
        };
        match self.free_ids.pop() {
            Some(id) => {
                self.slots[id] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    /// A new client connection, in its startup phase.
    pub fn add_client(&mut self) -> Id {
        self.add(Role::Client(Client {
            startup: Some(BytesMut::new()),
            unsent: Vec::new(),
            scan: Scanner::default(),
            pending: 0,
            server: None,
            queued: false,
        }))
    }

    /// A logged-in idle server connection, put in the pool.
    pub fn add_server(&mut self) -> Id {
        let id = self.add(Role::Server(Server {
            client: None,
            scan: Scanner::default(),
            status: b'I',
        }));
        self.idle.push(id);
        id
    }

    /// The bytes waiting to be written to `id`. The driver removes what it wrote.
    pub fn out(&mut self, id: Id) -> &mut Vec<u8> {
        &mut self.slots[id].out
    }

    /// A connection that got bytes to write since it was last returned.
    pub fn next_dirty(&mut self) -> Option<Id> {
        let id = self.dirty.pop()?;
        self.slots[id].dirty = false;
        Some(id)
    }

    /// A connection the core closed: the driver drops its socket, then calls
    /// [`Core::release_id`] once nothing in flight refers to it.
    pub fn next_closed(&mut self) -> Option<Id> {
        self.closed.pop()
    }

    /// Makes a closed id reusable.
    pub fn release_id(&mut self, id: Id) {
        debug_assert!(matches!(self.slots[id].role, Role::Closed));
        self.free_ids.push(id);
    }

    fn mark_dirty(&mut self, id: Id) {
        let slot = &mut self.slots[id];
        if !slot.dirty && !slot.out.is_empty() {
            slot.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Bytes read from `id`.
    pub fn on_data(&mut self, id: Id, data: &[u8]) {
        match &self.slots[id].role {
            Role::Client(_) => self.client_data(id, data),
            Role::Server(_) => self.server_data(id, data),
            Role::Closed => {}
        }
    }

    /// `id` reached end of file or failed.
    pub fn on_eof(&mut self, id: Id) {
        match &self.slots[id].role {
            Role::Client(_) => self.close_client(id),
            Role::Server(_) => self.close_server(id),
            Role::Closed => {}
        }
    }

    fn client_data(&mut self, id: Id, data: &[u8]) {
        let Role::Client(c) = &mut self.slots[id].role else {
            return;
        };
        let mut rest = BytesMut::new();
        if let Some(buf) = &mut c.startup {
            buf.extend_from_slice(data);
            let mut out = Vec::new();
            let done = client_startup(buf, &mut out, &self.reply);
            if done == Startup::Done {
                rest = std::mem::take(buf);
                c.startup = None;
            }
            self.slots[id].out.extend_from_slice(&out);
            self.mark_dirty(id);
            match done {
                Startup::NeedMore => return,
                Startup::Reject => return self.close_client(id),
                Startup::Done if rest.is_empty() => return,
                Startup::Done => {}
            }
        }
        let data: &[u8] = if rest.is_empty() { data } else { &rest };
        let Role::Client(c) = &mut self.slots[id].role else {
            return;
        };
        let (syncs, term) = scan_client(&mut c.scan, data);
        c.pending += syncs;
        let fwd = &data[..term.unwrap_or(data.len())];
        match c.server {
            Some(s) => {
                self.slots[s].out.extend_from_slice(fwd);
                self.mark_dirty(s);
            }
            None if !fwd.is_empty() => {
                c.unsent.extend_from_slice(fwd);
                if !c.queued {
                    self.acquire(id);
                }
            }
            None => {}
        }
        if term.is_some() {
            self.close_client(id);
        }
    }

    fn server_data(&mut self, id: Id, data: &[u8]) {
        let Role::Server(s) = &mut self.slots[id].role else {
            return;
        };
        let Some(c) = s.client else {
            return; // nothing is asked of an idle server
        };
        let (ready, status) = scan_server(&mut s.scan, data);
        if let Some(st) = status {
            s.status = st;
        }
        let server_mid = s.scan.mid_message();
        let server_status = s.status;
        let slot = &mut self.slots[c];
        slot.out.extend_from_slice(data);
        let Role::Client(cl) = &mut slot.role else {
            return;
        };
        cl.pending = cl.pending.saturating_sub(ready);
        let done = cl.pending == 0
            && server_status == b'I'
            && !server_mid
            && cl.unsent.is_empty()
            && !cl.scan.mid_message();
        if done {
            cl.server = None;
        }
        self.mark_dirty(c);
        if done {
            if let Role::Server(s) = &mut self.slots[id].role {
                s.client = None;
            }
            self.hand_over(id);
        }
    }

    /// Gives server `s` to `c` now, or queues `c`.
    fn acquire(&mut self, c: Id) {
        match self.idle.pop() {
            Some(s) => self.attach(c, s),
            None => {
                if let Role::Client(cl) = &mut self.slots[c].role {
                    cl.queued = true;
                }
                self.queue.push_back(c);
            }
        }
    }

    fn attach(&mut self, c: Id, s: Id) {
        let Role::Client(cl) = &mut self.slots[c].role else {
            return;
        };
        cl.server = Some(s);
        cl.queued = false;
        let unsent = std::mem::take(&mut cl.unsent);
        let slot = &mut self.slots[s];
        if let Role::Server(sv) = &mut slot.role {
            sv.client = Some(c);
        }
        slot.out.extend_from_slice(&unsent);
        self.mark_dirty(s);
    }

    /// A released server goes to the first queued client, else back to the pool.
    fn hand_over(&mut self, s: Id) {
        while let Some(c) = self.queue.pop_front() {
            if matches!(&self.slots[c].role, Role::Client(cl) if cl.queued) {
                return self.attach(c, s);
            }
        }
        self.idle.push(s);
    }

    fn close_client(&mut self, id: Id) {
        let Role::Client(c) = std::mem::replace(&mut self.slots[id].role, Role::Closed) else {
            return;
        };
        self.slots[id].out.clear();
        self.closed.push(id);
        if c.queued {
            self.queue.retain(|&q| q != id);
        }
        if let Some(s) = c.server {
            let clean = c.pending == 0
                && !c.scan.mid_message()
                && matches!(&self.slots[s].role,
                    Role::Server(sv) if sv.status == b'I' && !sv.scan.mid_message());
            if let Role::Server(sv) = &mut self.slots[s].role {
                sv.client = None;
            }
            if clean {
                self.hand_over(s);
            } else {
                self.close_server(s);
            }
        }
    }

    fn close_server(&mut self, id: Id) {
        let Role::Server(s) = std::mem::replace(&mut self.slots[id].role, Role::Closed) else {
            return;
        };
        self.slots[id].out.clear();
        self.closed.push(id);
        self.idle.retain(|&i| i != id);
        if let Some(c) = s.client {
            if let Role::Client(cl) = &mut self.slots[c].role {
                cl.server = None;
            }
            self.close_client(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsluice_protocol::backend::{self, TxStatus};
    use pgsluice_protocol::{frontend, startup};

    fn login(core: &mut Core) -> Id {
        let c = core.add_client();
        let mut b = BytesMut::new();
        startup::write_startup(&mut b, &[("user", "u")]);
        core.on_data(c, &b);
        assert_eq!(core.next_dirty(), Some(c));
        assert_eq!(core.out(c).as_slice(), b"LOGIN");
        core.out(c).clear();
        c
    }

    fn query() -> Vec<u8> {
        let mut b = BytesMut::new();
        frontend::query(&mut b, "select 1");
        b.to_vec()
    }

    fn ready(status: TxStatus) -> Vec<u8> {
        let mut b = BytesMut::new();
        backend::command_complete(&mut b, "SELECT 1");
        backend::ready_for_query(&mut b, status);
        b.to_vec()
    }

    #[test]
    fn pools_one_server_between_two_clients() {
        let mut core = Core::new(b"LOGIN".to_vec());
        let s = core.add_server();
        let (a, b) = (login(&mut core), login(&mut core));
        core.on_data(a, &query());
        core.on_data(b, &query()); // queued: the only server is a's
        assert_eq!(core.next_dirty(), Some(s));
        assert_eq!(core.out(s).as_slice(), query().as_slice());
        core.out(s).clear();
        core.on_data(s, &ready(TxStatus::InTransaction));
        assert_eq!(core.queue.len(), 1, "in a transaction: kept");
        core.on_data(a, &query());
        core.out(s).clear();
        core.on_data(s, &ready(TxStatus::Idle));
        // Released to b, whose query is forwarded.
        assert_eq!(core.out(s).as_slice(), query().as_slice());
        assert!(core.queue.is_empty() && core.idle.is_empty());
        core.out(s).clear();
        let mut x = BytesMut::new();
        frontend::terminate(&mut x);
        core.on_data(a, &x);
        assert_eq!(core.next_closed(), Some(a));
        core.on_data(s, &ready(TxStatus::Idle));
        assert_eq!(core.idle, vec![s]);
    }

    #[test]
    fn server_eof_closes_its_client() {
        let mut core = Core::new(b"LOGIN".to_vec());
        let s = core.add_server();
        let a = login(&mut core);
        core.on_data(a, &query());
        core.on_eof(s);
        let mut closed = Vec::new();
        while let Some(id) = core.next_closed() {
            closed.push(id);
        }
        closed.sort();
        assert_eq!(closed, vec![s, a]);
    }
}
