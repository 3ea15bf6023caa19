//! The merge against real PostgreSQL: one table's rows split over two servers, each
//! statement run on both (as rewritten by the plan) and merged, compared with the
//! same statement on a database holding every row. Text (simple protocol) and binary
//! (extended protocol, binary results) formats.

use std::io::{Read, Write};
use std::net::TcpStream;

use pgsluice_protocol::frontend;
use pgsluice_testkit::{ClusterOptions, HostAuth, PgCluster};

use super::plan_tests::select_of;
use super::*;

/// A bare protocol client (trust auth), enough to collect a result's messages.
struct Raw(TcpStream);

impl Raw {
    fn connect(port: u16, db: &str) -> Raw {
        let mut raw = Raw(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
        let mut buf = BytesMut::new();
        pgsluice_protocol::startup::write_startup(
            &mut buf,
            &[("user", "postgres"), ("database", db)],
        );
        raw.0.write_all(&buf).unwrap();
        while raw.read_msg()[0] != tag::READY_FOR_QUERY {}
        raw
    }

    fn read_msg(&mut self) -> Vec<u8> {
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut msg = head.to_vec();
        msg.resize(1 + len, 0);
        self.0.read_exact(&mut msg[5..]).unwrap();
        msg
    }

    /// The RowDescription, DataRows and CommandComplete of `sql`.
    fn run(&mut self, sql: &str, binary: bool) -> Vec<Vec<u8>> {
        let mut buf = BytesMut::new();
        if binary {
            use bytes::BufMut;
            frontend::parse(&mut buf, "", sql.as_bytes(), &[]);
            buf.put_u8(b'B');
            buf.put_u32(4 + 1 + 1 + 2 + 2 + 2 + 2);
            buf.put_slice(&[0, 0]); // portal, statement
            buf.put_i16(0);
            buf.put_i16(0);
            buf.put_i16(1);
            buf.put_i16(1); // every result column binary
            frontend::target_message(&mut buf, b'D', b'P', "");
            frontend::execute(&mut buf, "", 0);
            frontend::sync(&mut buf);
        } else {
            frontend::query(&mut buf, sql);
        }
        self.0.write_all(&buf).unwrap();
        let mut out = Vec::new();
        loop {
            let msg = self.read_msg();
            match msg[0] {
                tag::READY_FOR_QUERY => return out,
                tag::ERROR_RESPONSE => panic!("{sql}: {:?}", String::from_utf8_lossy(&msg)),
                tag::ROW_DESCRIPTION | tag::DATA_ROW | tag::COMMAND_COMPLETE | tag::EMPTY_QUERY => {
                    out.push(msg)
                }
                _ => {}
            }
        }
    }
}

type Rows = Vec<Vec<Option<Vec<u8>>>>;

/// The (type OIDs, rows) of a result's messages.
fn rows_of(msgs: &[u8]) -> (Vec<u32>, Rows, String) {
    let mut buf = BytesMut::from(msgs);
    let (mut types, mut rows, mut done) = (Vec::new(), Vec::new(), String::new());
    while let Some(m) = pgsluice_protocol::frame::split_message(&mut buf, 1 << 24).unwrap() {
        match m.tag {
            tag::ROW_DESCRIPTION => {
                types = columns::parse_row_description(&m.body)
                    .unwrap()
                    .iter()
                    .map(|c| c.type_oid)
                    .collect()
            }
            tag::DATA_ROW => rows.push(
                backend::parse_data_row(&m.body)
                    .unwrap()
                    .into_iter()
                    .map(|v| v.map(<[u8]>::to_vec))
                    .collect(),
            ),
            tag::COMMAND_COMPLETE => {
                done = String::from_utf8_lossy(&m.body[..m.body.len() - 1]).into_owned()
            }
            _ => {}
        }
    }
    (types, rows, done)
}

const SCHEMA: &str = "create table orders (customer_id bigint, note text, amount int, big bigint, \
num numeric(12,3), f8 float8, f4 real, ts timestamp, tstz timestamptz, day date, uid uuid, flag bool);";

fn fill(cluster: &PgCluster, db: &str, filter: &str) {
    cluster.psql(&format!("create database {db};")).unwrap();
    cluster
        .psql_db(
            db,
            &format!(
                "{SCHEMA}
insert into orders select i, case when i % 11 = 0 then null else 'note ' || (i % 37) end,
  (i * 7) % 100 - 50, i * 1000000000::bigint, ((i % 13) - 6) * 1.125, (i % 17) * 0.25,
  (i % 19) * 0.5, timestamp '2024-01-01' + i * interval '37 minutes',
  timestamptz '2024-03-30 12:00+00' + i * interval '5 minutes', date '2024-01-01' + (i % 40),
  md5(i::text)::uuid, i % 3 = 0
from generate_series(1, 900) i where {filter};"
            ),
        )
        .unwrap();
}

/// (statement, the order is total so rows compare in order).
const QUERIES: &[(&str, bool)] = &[
    ("select customer_id from orders order by customer_id desc limit 3", true),
    ("select count(*) from orders", true),
    ("select customer_id, note from orders where customer_id % 10 = 0", false),
    ("select * from orders order by customer_id limit 10 offset 3", true),
    ("select note, customer_id from orders order by note nulls first, customer_id desc limit 20 offset 7", true),
    ("select customer_id, f8, f4 from orders order by f8 desc, f4, customer_id limit 15", true),
    ("select customer_id, tstz, ts, day from orders order by tstz desc, customer_id offset 880", true),
    ("select uid, flag from orders order by uid limit 5", true),
    ("select customer_id, num from orders order by num, customer_id desc limit 12", true),
    (
        "select count(*), count(note), sum(amount), sum(big), sum(num), min(note), max(note), min(ts), \
max(tstz), sum(f8), max(f4), min(day), min(num) from orders",
        true,
    ),
    ("select sum(num / 7), min(num / 7), max(amount::numeric / 3), sum(big::numeric / 9) from orders", true),
    ("select count(*), sum(amount), max(tstz), sum(f8), min(f4) from orders", true),
    ("select sum(f4), sum(amount::int2), sum(customer_id::int4), max(customer_id::oid) from orders", true),
    ("select count(*), sum(amount), sum(num), max(note) from orders where false", true),
    ("select customer_id % 7 as k, count(*), sum(amount) from orders group by 1 order by 2 desc, 1 limit 5 offset 1", true),
    ("select day, count(*), min(customer_id), max(note) from orders group by day order by day", true),
    ("select num, count(*) from orders group by num order by num", true),
    ("select note, flag, count(*), sum(f8) from orders group by note, flag order by note nulls first, flag", true),
    ("select flag, count(*) from orders group by flag", false),
    ("select customer_id from orders where customer_id < 5 union all select customer_id from orders where customer_id > 895 order by 1", true),
];

#[test]
fn merged_results_equal_one_server() {
    let opts = || ClusterOptions::with_auth(HostAuth::Trust).setting("timezone", "Europe/Berlin");
    let a = PgCluster::start_with(opts()).expect("cluster a");
    let b = PgCluster::start_with(opts()).expect("cluster b");
    fill(&a, "whole", "true");
    fill(&a, "shard0", "i % 2 = 0");
    fill(&b, "shard1", "i % 2 = 1");
    let mut whole = Raw::connect(a.port(), "whole");
    let mut shards = [
        Raw::connect(a.port(), "shard0"),
        Raw::connect(b.port(), "shard1"),
    ];
    for &(sql, ordered) in QUERIES {
        let plan = plan_select(&select_of(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        for binary in [false, true] {
            let want = whole.run(sql, binary).concat();
            let mut m = Merger::new(&plan, 2, true);
            let mut out = BytesMut::new();
            for (i, s) in shards.iter_mut().enumerate() {
                for msg in s.run(plan.shard_sql().unwrap_or(sql), binary) {
                    m.push(i, &msg).unwrap_or_else(|e| panic!("{sql}: {e}"));
                    m.drain(&mut out).unwrap();
                }
            }
            m.finish(&mut out).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let (want_types, mut want_rows, want_tag) = rows_of(&want);
            let (types, mut rows, tag) = rows_of(&out);
            if !ordered {
                want_rows.sort();
                rows.sort();
            }
            assert_eq!(types, want_types, "{sql} (binary {binary})");
            assert_eq!(tag, want_tag, "{sql} (binary {binary})");
            assert!(
                rows == want_rows,
                "{sql} (binary {binary}):\n got {rows:?}\nwant {want_rows:?}"
            );
        }
    }
}
