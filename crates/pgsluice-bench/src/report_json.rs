//! results.json: every measurement of the run, for other tools.

use std::fmt::Write as _;

use crate::model::Results;

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// Raw results as JSON (written by hand: no serde_json in this crate).
pub(crate) fn json(r: &Results) -> String {
    let mut o = String::from("{\n  \"meta\": {");
    let meta: Vec<String> = r
        .meta
        .iter()
        .map(|(k, v)| format!("{}: {}", json_str(k), json_str(v)))
        .collect();
    o.push_str(&meta.join(", "));
    o.push_str("},\n  \"runs\": [\n");
    let runs: Vec<String> = r
        .samples
        .iter()
        .map(|s| {
            format!(
                "    {{\"section\": {}, \"workload\": {}, \"mode\": {}, \"clients\": {}, \"contender\": {}, \"round\": {}, \"tps\": {}, \"processed\": {}, \"failed\": {}, \"aborted\": {}, \"cpu_us_per_tx\": {}, \"error\": {}}}",
                json_str(s.section),
                json_str(s.cell.workload.as_str()),
                json_str(s.cell.mode.as_str()),
                s.cell.clients,
                json_str(s.contender.name()),
                s.round,
                json_num(s.outcome.tps),
                s.outcome.processed,
                s.outcome.failed,
                s.outcome.aborted,
                s.cpu_us_per_tx.map_or("null".into(), json_num),
                s.outcome.first_error.as_deref().map_or("null".into(), json_str),
            )
        })
        .collect();
    o.push_str(&runs.join(",\n"));
    o.push_str("\n  ],\n  \"latency\": [\n");
    let lat: Vec<String> = r
        .latency
        .iter()
        .map(|l| {
            format!(
                "    {{\"contender\": {}, \"clients\": {}, \"count\": {}, \"p50_us\": {}, \"p99_us\": {}, \"errors\": {}}}",
                json_str(l.contender.name()),
                l.clients,
                l.samples_us.len(),
                l.p(0.5).map_or("null".into(), json_num),
                l.p(0.99).map_or("null".into(), json_num),
                l.errors
            )
        })
        .collect();
    o.push_str(&lat.join(",\n"));
    o.push_str("\n  ],\n  \"idle\": [\n");
    let idle: Vec<String> = r
        .idle
        .iter()
        .map(|(w, i)| {
            format!(
                "    {{\"contender\": {}, \"wanted\": {}, \"connected\": {}, \"connect_errors\": {}, \"rss_before_kib\": {}, \"rss_mid_kib\": {}, \"connected_mid\": {}, \"rss_after_kib\": {}, \"query_errors\": {}, \"connect_secs\": {}, \"query_secs\": {}, \"tls\": {}}}",
                json_str(w.name()),
                i.wanted,
                i.connected,
                i.connect_errors,
                i.rss_before_kib,
                i.rss_mid_kib,
                i.connected_mid,
                i.rss_after_kib,
                i.query_errors,
                json_num(i.connect_secs),
                json_num(i.query_secs),
                i.tls
            )
        })
        .collect();
    o.push_str(&idle.join(",\n"));
    o.push_str("\n  ],\n  \"storm\": [\n");
    let storm: Vec<String> = r
        .storm
        .iter()
        .map(|(w, s)| {
            format!(
                "    {{\"contender\": {}, \"clients\": {}, \"ok\": {}, \"errors\": {}, \"total_secs\": {}, \"p50_ms\": {}, \"p99_ms\": {}, \"max_ms\": {}}}",
                json_str(w.name()),
                s.clients,
                s.ok,
                s.errors,
                json_num(s.total_secs),
                json_num(s.p50_ms),
                json_num(s.p99_ms),
                json_num(s.max_ms)
            )
        })
        .collect();
    o.push_str(&storm.join(",\n"));
    o.push_str("\n  ]\n}\n");
    o
}
