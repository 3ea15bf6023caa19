//! Criterion micro-benchmarks for the protocol crate's hot paths, so regressions show
//! up without a database: header framing, the streaming scanner over a realistic
//! server stream (the relay's ReadyForQuery scan), startup packet parsing, and the
//! SCRAM-SHA-256 exchange.
//!
//! Run with `cargo bench -p pgsluice-protocol` (add `-- scan` to filter). Parse/Bind
//! statement-name extraction is not benchmarked: the crate has no such code yet.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgsluice_protocol::auth::scram::{ScramClient, ScramSecret, ScramServer};
use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::frame::{parse_header, split_message};
use pgsluice_protocol::scan::{ScanEvent, Scanner, TagSet};
use pgsluice_protocol::startup::{parse_startup, write_startup};
use pgsluice_protocol::ProtocolError;

/// What the relay scans in the server-to-client direction (same capture set).
fn server_scanner() -> Scanner {
    Scanner::new(u32::MAX, TagSet::of(b"ZS"), 4096)
}

/// A server's answer to a query returning `rows` rows of three columns.
fn result_stream(rows: usize) -> Vec<u8> {
    let mut b = BytesMut::new();
    backend::row_description(&mut b, &[("aid", 23), ("bid", 23), ("filler", 1042)]);
    for i in 0..rows {
        let aid = i.to_string();
        backend::data_row(
            &mut b,
            &[
                Some(&aid),
                Some("1"),
                Some("                                        "),
            ],
        );
    }
    backend::command_complete(&mut b, &format!("SELECT {rows}"));
    backend::ready_for_query(&mut b, TxStatus::Idle);
    b.to_vec()
}

/// Feeds `data` in chunks of `chunk` bytes; returns how many ReadyForQuery bodies
/// were captured.
fn scan(scanner: &mut Scanner, data: &[u8], chunk: usize) -> usize {
    let mut ready = 0;
    for piece in data.chunks(chunk) {
        scanner
            .feed(piece, |ev| {
                if let ScanEvent::Captured { tag: b'Z', .. } = ev {
                    ready += 1;
                }
                Ok::<(), ProtocolError>(())
            })
            .expect("valid stream");
    }
    ready
}

fn framing(c: &mut Criterion) {
    let header = *b"D\0\0\0\x40";
    c.bench_function("frame/parse_header", |b| {
        b.iter(|| parse_header(black_box(&header), 1 << 30))
    });
    let stream = result_stream(100);
    let mut g = c.benchmark_group("frame/split_message");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("100 rows", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&stream[..]),
            |buf| {
                let mut n = 0;
                while let Some(m) = split_message(buf, 1 << 30).expect("valid") {
                    n += m.body.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn scanner(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan/server_stream");
    // pgbench -S: one small result per transaction.
    let small = result_stream(1);
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("1 row, one read", |b| {
        let mut s = server_scanner();
        b.iter(|| scan(&mut s, black_box(&small), usize::MAX))
    });
    // A larger result arriving in 8 KiB reads (headers straddle reads).
    let big = result_stream(10_000);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("10k rows, 8 KiB reads", |b| {
        let mut s = server_scanner();
        b.iter(|| scan(&mut s, black_box(&big), 8192))
    });
    g.bench_function("10k rows, 1 KiB reads", |b| {
        let mut s = server_scanner();
        b.iter(|| scan(&mut s, black_box(&big), 1024))
    });
    g.finish();
}

fn startup(c: &mut Criterion) {
    let mut packet = BytesMut::new();
    write_startup(
        &mut packet,
        &[
            ("user", "app"),
            ("database", "appdb"),
            ("application_name", "pgbench"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
        ],
    );
    c.bench_function("startup/parse_startup", |b| {
        b.iter_batched_ref(
            || packet.clone(),
            |buf| parse_startup(buf).expect("valid"),
            BatchSize::SmallInput,
        )
    });
}

fn scram(c: &mut Criterion) {
    let secret = ScramSecret::from_password("s3cret", b"0123456789abcdef", 4096);
    let client_nonce = "rOprNGfwEbeRWgbNEkqO".to_owned();
    let server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned();
    // One recorded exchange (fixed nonces make it deterministic).
    let mut client = ScramClient::with_nonce("s3cret", client_nonce.clone());
    let client_first = client.client_first();
    let mut server = ScramServer::with_nonce(secret.clone(), server_nonce.clone());
    let server_first = server
        .handle_client_first("SCRAM-SHA-256", &client_first)
        .expect("client-first");
    let client_final = client
        .handle_server_first(&server_first)
        .expect("server-first");
    server
        .handle_client_final(&client_final)
        .expect("client-final");
    let client_key = server.client_key().expect("client key after success");

    let mut g = c.benchmark_group("scram");
    // The pooler's cost per client login: verify a client against a stored verifier.
    g.bench_function("server side of one login", |b| {
        b.iter(|| {
            let mut s = ScramServer::with_nonce(secret.clone(), server_nonce.clone());
            s.handle_client_first("SCRAM-SHA-256", black_box(&client_first))
                .expect("first");
            s.handle_client_final(black_box(&client_final))
                .expect("final")
        })
    });
    // A login to PostgreSQL with the client key recovered from a client's proof
    // (no PBKDF2), against a server.
    g.bench_function("pass-through client + server", |b| {
        b.iter(|| {
            let mut cl = ScramClient::with_client_key(client_key, secret.clone());
            let mut s = ScramServer::new(secret.clone());
            let sf = s
                .handle_client_first("SCRAM-SHA-256", &cl.client_first())
                .expect("first");
            let cf = cl.handle_server_first(&sf).expect("server-first");
            let fin = s.handle_client_final(&cf).expect("final");
            cl.handle_server_final(&fin).expect("server-final")
        })
    });
    // Both sides with a password: dominated by the client's PBKDF2 (4096 iterations).
    g.sample_size(20);
    g.bench_function("full exchange with password", |b| {
        b.iter(|| {
            let mut cl = ScramClient::new("s3cret");
            let mut s = ScramServer::new(secret.clone());
            let sf = s
                .handle_client_first("SCRAM-SHA-256", &cl.client_first())
                .expect("first");
            let cf = cl.handle_server_first(&sf).expect("server-first");
            let fin = s.handle_client_final(&cf).expect("final");
            cl.handle_server_final(&fin).expect("server-final")
        })
    });
    g.finish();
}

criterion_group!(benches, framing, scanner, startup, scram);
criterion_main!(benches);
