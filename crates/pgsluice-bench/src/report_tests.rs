//! The memory table and goal with and without TLS rows: structure only.

use super::*;
use crate::clients::IdleResult;

fn idle(tls: bool, before: u64, after: u64) -> IdleResult {
    IdleResult {
        wanted: 1000,
        connected: 1000,
        rss_before_kib: before,
        rss_after_kib: after,
        tls,
        ..IdleResult::default()
    }
}

#[test]
fn tls_rows_are_labelled_and_left_out_of_the_goal() {
    let mut r = Results::default();
    r.idle
        .push((Contender::Pgsluice, idle(false, 10_000, 11_000)));
    r.idle
        .push((Contender::Pgbouncer, idle(false, 10_000, 12_000)));
    r.idle
        .push((Contender::Pgsluice, idle(true, 10_000, 20_000)));
    r.idle
        .push((Contender::Pgbouncer, idle(true, 10_000, 30_000)));
    let md = markdown(&r);
    assert!(md.contains("| pgsluice (TLS) | 1000/1000 |"), "{md}");
    assert!(md.contains("| PgBouncer (TLS) | 1000/1000 |"), "{md}");
    // The goal compares the plain rows: 1,024 B against 2,048 B.
    assert!(
        md.contains(
            "| memory per idle client ≤ PgBouncer's | pgsluice 1024 B, PgBouncer 2048 B | met |"
        ),
        "{md}"
    );
    assert!(json(&r).contains("\"tls\": true"));
}

#[test]
fn bytes_per_client_is_the_slope_over_the_second_half() {
    // 1,000 clients: the first 500 take RSS from 10,000 to 12,000 KiB (warm-up included),
    // the other 500 to 12,500 KiB: 500 KiB / 500 clients = 1,024 B each.
    let i = IdleResult {
        rss_mid_kib: 12_000,
        connected_mid: 500,
        ..idle(false, 10_000, 12_500)
    };
    assert_eq!(i.bytes_per_client(), Some(1024.0));
    assert_eq!(i.bytes_per_client_whole_run(), Some(2560.0));
    // Without a half-way reading it falls back to the whole run.
    assert_eq!(idle(false, 10_000, 12_500).bytes_per_client(), Some(2560.0));
    let mut r = Results::default();
    r.idle.push((Contender::Pgsluice, i));
    let md = markdown(&r);
    assert!(
        md.contains("| 9.8 MiB | 11.7 MiB | 12.2 MiB | 1024 | 2560 |"),
        "{md}"
    );
}
