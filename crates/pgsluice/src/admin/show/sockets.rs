//! SHOW CLIENTS, SERVERS, SOCKETS, ACTIVE_SOCKETS and FDS: one row per connection,
//! from the pools' client and server lists.

use std::sync::Arc;

use super::super::result::{format_time, Cell, ResultSet, Ty};
use super::super::Ctx;
use super::ADMIN_DB;
use crate::clock::wall_us_now;
use crate::pool::{ClientInfo, ClientState, Pool, ServerInfo, ServerState};

use Ty::{Int4, Text};

/// The columns shared by SHOW CLIENTS, SERVERS and SOCKETS.
const SOCKET_COLUMNS: [(&str, Ty); 21] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int4),
    ("local_addr", Text),
    ("local_port", Int4),
    ("connect_time", Text),
    ("request_time", Text),
    ("wait", Int4),
    ("wait_us", Int4),
    ("close_needed", Int4),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int4),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int4),
    ("id", Int4),
];

/// The extra columns of SHOW SOCKETS (buffer positions; pgsluice keeps no per-socket
/// buffers outside a relay, so they are 0).
const DEBUG_COLUMNS: [(&str, Ty); 7] = [
    ("recv_pos", Int4),
    ("pkt_pos", Int4),
    ("pkt_remain", Int4),
    ("send_pos", Int4),
    ("send_remain", Int4),
    ("pkt_avail", Int4),
    ("send_avail", Int4),
];

/// A stable pseudo-address for a client, shown in `ptr` and `link`.
fn client_ptr(id: u64) -> String {
    format!("{:#x}", 0x7c00_0000_0000u64 | id)
}

/// A stable pseudo-address for a server connection.
fn server_ptr(id: u64) -> String {
    format!("{:#x}", 0x7e00_0000_0000u64 | id)
}

fn client_row(c: &ClientInfo, state: &str, debug: bool) -> Vec<Cell> {
    let wait_us = c
        .wait_since_us()
        .map_or(0, |t| wall_us_now().saturating_sub(t));
    let mut row: Vec<Cell> = vec![
        "C".into(),
        (&*c.user).into(),
        (&*c.database).into(),
        "none".into(),
        state.into(),
        c.remote.addr().into(),
        c.remote.port.into(),
        c.local.addr().into(),
        c.local.port.into(),
        format_time(c.connect_time_us).into(),
        format_time(c.request_time_us()).into(),
        (wait_us / 1_000_000).into(),
        (wait_us % 1_000_000).into(),
        0i32.into(),
        client_ptr(c.id).into(),
        c.link().map(server_ptr).unwrap_or_default().into(),
        0i32.into(),
        (&*c.tls.text()).into(),
        c.application_name.as_deref().unwrap_or("").into(),
        c.prepared_statements().into(),
        c.id.into(),
    ];
    if debug {
        row.extend(DEBUG_COLUMNS.iter().map(|_| Cell::from(0i32)));
    }
    row
}

fn server_row(p: &Pool, s: &ServerInfo, state: &str, debug: bool) -> Vec<Cell> {
    let app_name = s
        .link()
        .and_then(|id| p.clients().into_iter().find(|c| c.id == id))
        .and_then(|c| c.application_name.as_deref().map(str::to_owned))
        .unwrap_or_default();
    let mut row: Vec<Cell> = vec![
        "S".into(),
        p.key().user.as_ref().into(),
        p.key().database.as_ref().into(),
        "none".into(),
        state.into(),
        s.remote.addr().into(),
        s.remote.port.into(),
        s.local.addr().into(),
        s.local.port.into(),
        format_time(s.connect_time_us).into(),
        format_time(s.request_time_us()).into(),
        0i32.into(),
        0i32.into(),
        p.close_needed(s).into(),
        server_ptr(s.id).into(),
        s.link().map(client_ptr).unwrap_or_default().into(),
        s.remote_pid.into(),
        (&*s.tls.text()).into(),
        app_name.into(),
        s.prepared_statements().into(),
        s.id.into(),
    ];
    if debug {
        row.extend(DEBUG_COLUMNS.iter().map(|_| Cell::from(0i32)));
    }
    row
}

fn client_state(c: &ClientInfo) -> &'static str {
    match c.state() {
        ClientState::Active => "active",
        ClientState::Waiting => "waiting",
        ClientState::Idle => "idle",
    }
}

fn server_state(s: &ServerInfo) -> &'static str {
    match s.state() {
        ServerState::Active => "active",
        ServerState::Tested => "tested",
        ServerState::Idle | ServerState::Closing => "idle",
    }
}

fn admin_clients(ctx: &Ctx<'_>) -> Vec<Arc<ClientInfo>> {
    ctx.console.admin_clients().snapshot()
}

/// SHOW CLIENTS.
pub(super) fn clients(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&SOCKET_COLUMNS);
    for p in ctx.console.router().pools() {
        for c in p.clients() {
            rs.push(client_row(&c, client_state(&c), false));
        }
    }
    for c in admin_clients(ctx) {
        debug_assert_eq!(&*c.database, ADMIN_DB);
        rs.push(client_row(&c, "active", false));
    }
    rs
}

/// SHOW SERVERS.
pub(super) fn servers(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&SOCKET_COLUMNS);
    for p in ctx.console.router().pools() {
        for s in p.servers() {
            rs.push(server_row(&p, &s, server_state(&s), false));
        }
    }
    rs
}

/// SHOW SOCKETS (every connection) and SHOW ACTIVE_SOCKETS (those relaying now).
pub(super) fn sockets(ctx: &Ctx<'_>, active_only: bool) -> ResultSet {
    let mut cols = SOCKET_COLUMNS.to_vec();
    cols.extend(DEBUG_COLUMNS);
    let mut rs = ResultSet::new(&cols);
    for p in ctx.console.router().pools() {
        for c in p.clients() {
            let state = match c.state() {
                ClientState::Waiting => "cl_waiting",
                _ => "cl_active",
            };
            if !active_only || c.link().is_some() {
                rs.push(client_row(&c, state, true));
            }
        }
        for s in p.servers() {
            let state = match s.state() {
                ServerState::Active => "sv_active",
                ServerState::Tested => "sv_tested",
                _ => "sv_idle",
            };
            if !active_only || s.state() == ServerState::Active {
                rs.push(server_row(&p, &s, state, true));
            }
        }
    }
    if !active_only {
        for c in admin_clients(ctx) {
            rs.push(client_row(&c, "cl_active", true));
        }
    }
    rs
}

/// SHOW FDS: the file descriptors of listeners, clients and servers. Cancel keys and
/// passwords are not shown (pgsluice does not hand sockets over for online restart).
pub(super) fn fds(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("fd", Int4),
        ("task", Text),
        ("user", Text),
        ("database", Text),
        ("addr", Text),
        ("port", Int4),
        ("cancel", Ty::Int8),
        ("link", Int4),
        ("client_encoding", Text),
        ("std_strings", Text),
        ("datestyle", Text),
        ("timezone", Text),
        ("password", Text),
        ("scram_client_key", Ty::Bytea),
        ("scram_server_key", Ty::Bytea),
    ]);
    let nulls = || std::iter::repeat_with(|| Cell::Null).take(7);
    for a in ctx.console.listen_addrs() {
        let mut row: Vec<Cell> = vec![
            Cell::Null,
            "pooler".into(),
            Cell::Null,
            Cell::Null,
            a.ip().to_string().into(),
            a.port().into(),
            0u64.into(),
            0i32.into(),
        ];
        row.extend(nulls());
        rs.push(row);
    }
    for p in ctx.console.router().pools() {
        let servers = p.servers();
        let fd_of_server = |id: u64| servers.iter().find(|s| s.id == id).map_or(0, |s| s.fd);
        for c in p.clients() {
            let mut row: Vec<Cell> = vec![
                c.fd.into(),
                "client".into(),
                (&*c.user).into(),
                (&*c.database).into(),
                c.remote.addr().into(),
                c.remote.port.into(),
                0u64.into(),
                c.link().map_or(0, fd_of_server).into(),
            ];
            row.extend(nulls());
            rs.push(row);
        }
        let clients = p.clients();
        for s in &servers {
            let link = s
                .link()
                .and_then(|id| clients.iter().find(|c| c.id == id))
                .map_or(0, |c| c.fd);
            let mut row: Vec<Cell> = vec![
                s.fd.into(),
                "server".into(),
                p.key().user.as_ref().into(),
                p.key().database.as_ref().into(),
                s.remote.addr().into(),
                s.remote.port.into(),
                0u64.into(),
                link.into(),
            ];
            row.extend(nulls());
            rs.push(row);
        }
    }
    rs
}
