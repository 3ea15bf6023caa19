//! The results folder: results.md (tables and the goals), runs.csv and results.json
//! (raw runs). The charts are in [`crate::chart`].

use std::fmt::Write as _;

use crate::args::{Mode, Workload};
use crate::model::{Contender, Results, Summary};

fn fmt_tps(summary: Option<&Summary>, mode: Mode) -> String {
    match summary {
        None => "–".into(),
        // The probe failed: neither pooler keeps protocol-level prepared statements
        // across server connections in transaction mode.
        Some(Summary::Errors {
            aborted, failed, ..
        }) if mode == Mode::Prepared => format!(
            "n/a (unsupported: probe had {aborted} clients aborted, {failed} failed tx)"
        ),
        Some(Summary::Ok { tps, .. }) => {
            format!("{:.0} [{:.0}–{:.0}]", tps.median, tps.min, tps.max)
        }
        Some(Summary::Errors {
            rounds_with_errors,
            rounds,
            failed,
            aborted,
            ..
        }) => format!(
            "errors in {rounds_with_errors}/{rounds} rounds ({aborted} clients aborted, {failed} failed tx)"
        ),
        Some(Summary::NotRun(reason)) => format!("n/a ({reason})"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Renders results.md.
pub(crate) fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# pgsluice benchmark results\n");
    for (k, v) in &r.meta {
        let _ = writeln!(md, "- **{k}**: {v}");
    }
    md.push('\n');
    md.push_str(
        "Throughput cells are pgbench transactions per second, \"median [min–max]\" over the \
         rounds; contenders alternate within each round. CPU is the pooler process's \
         utime + stime (from /proc/PID/stat, all threads, including pgbench's connection \
         setup) divided by the transactions processed. Ratios use medians.\n\n",
    );
    if !r.failures.is_empty() {
        md.push_str("## Sections that could not run\n\n");
        for f in &r.failures {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
    goals(r, &mut md);
    throughput_tables(r, "throughput", &mut md);
    latency_table(r, &mut md);
    memory_table(r, &mut md);
    throughput_tables(r, "pooler-only", &mut md);
    storm_table(r, &mut md);
    md
}

fn section_title(section: &str, workload: Workload, mode: Mode) -> String {
    match section {
        "pooler-only" => format!(
            "Pooler-only throughput (fake backend, `select 1` script), -M {}",
            mode.as_str()
        ),
        _ => format!("Throughput: {}, -M {}", workload.as_str(), mode.as_str()),
    }
}

fn throughput_tables(r: &Results, section: &str, md: &mut String) {
    let cells = r.cells(section);
    let mut groups: Vec<(Workload, Mode)> = cells.iter().map(|c| (c.workload, c.mode)).collect();
    groups.dedup();
    for (workload, mode) in groups {
        let _ = writeln!(md, "## {}\n", section_title(section, workload, mode));
        let direct = if section == "pooler-only" {
            "fake direct"
        } else {
            "direct"
        };
        let _ = writeln!(
            md,
            "| clients | pgsluice tps | PgBouncer tps | {direct} tps | pgsluice / PgBouncer | pgsluice / {direct} | pgsluice CPU µs/tx | PgBouncer CPU µs/tx | CPU ratio |"
        );
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut notes = Vec::new();
        for cell in cells
            .iter()
            .filter(|c| c.workload == workload && c.mode == mode)
        {
            let s = |who| r.summary(section, *cell, who);
            let (a, b, d) = (
                s(Contender::Pgsluice),
                s(Contender::Pgbouncer),
                s(Contender::Direct),
            );
            let tps = |x: &Option<Summary>| x.as_ref().and_then(Summary::tps);
            let cpu = |x: &Option<Summary>| x.as_ref().and_then(Summary::cpu);
            let cpu_s = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell.clients,
                fmt_tps(a.as_ref(), mode),
                fmt_tps(b.as_ref(), mode),
                fmt_tps(d.as_ref(), mode),
                ratio(tps(&a), tps(&b)),
                ratio(tps(&a), tps(&d)),
                cpu_s(cpu(&a)),
                cpu_s(cpu(&b)),
                ratio(cpu(&a), cpu(&b)),
            );
            for (who, x) in [
                (Contender::Pgsluice, &a),
                (Contender::Pgbouncer, &b),
                (Contender::Direct, &d),
            ] {
                if let Some(Summary::Errors {
                    first_error: Some(e),
                    ..
                }) = x
                {
                    notes.push(format!("{} at {} clients: `{e}`", who.name(), cell.clients));
                }
            }
        }
        if !notes.is_empty() {
            md.push_str("\nFirst error per failing cell:\n\n");
            for n in notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md.push('\n');
    }
}

fn latency_table(r: &Results, md: &mut String) {
    if r.latency.is_empty() {
        return;
    }
    let mode = r.latency[0].mode;
    let _ = writeln!(
        md,
        "## Added latency (select-only, -M {}, pgbench per-transaction log)\n",
        mode.as_str()
    );
    md.push_str(
        "| clients | contender | transactions | p50 µs | p99 µs | p50 − direct µs | p99 − direct µs |\n\
         |---:|---|---:|---:|---:|---:|---:|\n",
    );
    let mut clients: Vec<u32> = r.latency.iter().map(|l| l.clients).collect();
    clients.sort();
    clients.dedup();
    for c in clients {
        let direct = r
            .latency
            .iter()
            .find(|l| l.clients == c && l.contender == Contender::Direct);
        for l in r.latency.iter().filter(|l| l.clients == c) {
            let diff = |q: f64| match (l.p(q), direct.and_then(|d| d.p(q))) {
                (Some(a), Some(b)) if l.contender != Contender::Direct => format!("{:+.0}", a - b),
                _ => "–".into(),
            };
            let p = |q: f64| l.p(q).map_or("–".into(), |v| format!("{v:.0}"));
            let errors = if l.errors > 0 {
                format!(" ({} errors)", l.errors)
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {c} | {} | {}{errors} | {} | {} | {} | {} |",
                l.contender.name(),
                l.samples_us.len(),
                p(0.5),
                p(0.99),
                diff(0.5),
                diff(0.99)
            );
        }
    }
    md.push('\n');
}

fn memory_table(r: &Results, md: &mut String) {
    if r.idle.is_empty() {
        return;
    }
    md.push_str("## Memory: idle authenticated clients\n\n");
    md.push_str(
        "RSS is VmRSS of the pooler process (a fresh one) before the clients connect, once \
         half of them have logged in and once all of them have. Bytes per client is the \
         slope over the second half: what one more idle client costs, without the \
         pooler's fixed warm-up after its listening line (threads, code paged in, \
         allocator arenas). The whole-run figure, fixed costs included, is beside it. Then \
         every client runs `select 1` at the same time. (TLS): the clients connect with \
         `sslmode=require` to a pooler that requires TLS from clients.\n\n\
         | pooler | clients connected | connect errors | RSS before | RSS at half | RSS after | bytes per client | whole run | login time s | all-at-once `select 1`: errors | time s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (who, i) in &r.idle {
        let _ = writeln!(
            md,
            "| {}{} | {}/{} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {} | {:.1} | {} | {:.2} |",
            who.name(),
            if i.tls { " (TLS)" } else { "" },
            i.connected,
            i.wanted,
            i.connect_errors,
            i.rss_before_kib as f64 / 1024.0,
            i.rss_mid_kib as f64 / 1024.0,
            i.rss_after_kib as f64 / 1024.0,
            i.bytes_per_client()
                .map_or("–".into(), |b| format!("{b:.0}")),
            i.bytes_per_client_whole_run()
                .map_or("–".into(), |b| format!("{b:.0}")),
            i.connect_secs,
            i.query_errors,
            i.query_secs
        );
    }
    for (who, i) in &r.idle {
        if let Some(e) = &i.first_error {
            let tls = if i.tls { " (TLS)" } else { "" };
            let _ = writeln!(md, "\n{}{tls} first error: `{e}`", who.name());
        }
    }
    md.push('\n');
}

fn storm_table(r: &Results, md: &mut String) {
    if r.storm.is_empty() {
        return;
    }
    md.push_str("## Connection storm\n\n");
    md.push_str(
        "All clients are released at once; each connects (SCRAM), runs `select 1` and \
         disconnects. The client side (tokio-postgres, 2 threads, SCRAM key derivation \
         included) shares the 2 cores with the pooler.\n\n\
         | pooler | clients | ok | errors | time until all served s | p50 ms | p99 ms | max ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (who, s) in &r.storm {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0} |",
            who.name(),
            s.clients,
            s.ok,
            s.errors,
            s.total_secs,
            s.p50_ms,
            s.p99_ms,
            s.max_ms
        );
    }
    for (who, s) in &r.storm {
        if let Some(e) = &s.first_error {
            let _ = writeln!(md, "\n{} first error: `{e}`", who.name());
        }
    }
    md.push('\n');
}

/// The goals, each with the measured value; nothing is judged that was not
/// measured.
fn goals(r: &Results, md: &mut String) {
    md.push_str("## Goals\n\n| goal | measured | status |\n|---|---|---|\n");
    let mut row = |goal: &str, measured: String, status: &str| {
        let _ = writeln!(md, "| {goal} | {measured} | {status} |");
    };
    // 1. select-only >= 1.0x PgBouncer at every client count and mode.
    let sel: Vec<_> = r
        .cells("throughput")
        .into_iter()
        .filter(|c| c.workload == Workload::SelectOnly)
        .collect();
    let mut worst: Option<(f64, String)> = None;
    let mut compared = 0;
    let mut not_comparable = Vec::new();
    for c in &sel {
        let a = r.summary("throughput", *c, Contender::Pgsluice);
        let b = r.summary("throughput", *c, Contender::Pgbouncer);
        match (
            a.as_ref().and_then(Summary::tps),
            b.as_ref().and_then(Summary::tps),
        ) {
            (Some(a), Some(b)) => {
                compared += 1;
                let x = a / b;
                let better = match &worst {
                    Some((w, _)) => x < *w,
                    None => true,
                };
                if better {
                    worst = Some((x, format!("-M {} c={}", c.mode.as_str(), c.clients)));
                }
            }
            _ => not_comparable.push(format!("-M {} c={}", c.mode.as_str(), c.clients)),
        }
    }
    let nc = if not_comparable.is_empty() {
        String::new()
    } else {
        format!(
            "; not comparable (errors / n/a): {}",
            not_comparable.join(", ")
        )
    };
    match &worst {
        Some((w, at)) => row(
            "select-only tps ≥ 1.0x PgBouncer, every client count and mode",
            format!("worst {w:.2}x ({at}) over {compared} cells{nc}"),
            pass(*w >= 1.0 && not_comparable.is_empty()),
        ),
        None => row(
            "select-only tps ≥ 1.0x PgBouncer, every client count and mode",
            format!("not measured{nc}"),
            "–",
        ),
    }
    // 2. >= 0.85x direct at 10 clients.
    let mut vs_direct = Vec::new();
    for c in sel.iter().filter(|c| c.clients == 10) {
        let a = r
            .summary("throughput", *c, Contender::Pgsluice)
            .and_then(|s| s.tps());
        let d = r
            .summary("throughput", *c, Contender::Direct)
            .and_then(|s| s.tps());
        if let (Some(a), Some(d)) = (a, d) {
            vs_direct.push((a / d, c.mode));
        }
    }
    if vs_direct.is_empty() {
        row(
            "select-only tps ≥ 0.85x direct at 10 clients",
            "not measured".into(),
            "–",
        );
    } else {
        let txt: Vec<String> = vs_direct
            .iter()
            .map(|(x, m)| format!("{x:.2}x (-M {})", m.as_str()))
            .collect();
        let ok = vs_direct.iter().all(|(x, _)| *x >= 0.85);
        row(
            "select-only tps ≥ 0.85x direct at 10 clients",
            txt.join(", "),
            pass(ok),
        );
    }
    // 3. CPU per transaction <= 0.8x PgBouncer's.
    let mut cpu = Vec::new();
    for c in r.cells("throughput") {
        let a = r
            .summary("throughput", c, Contender::Pgsluice)
            .and_then(|s| s.cpu());
        let b = r
            .summary("throughput", c, Contender::Pgbouncer)
            .and_then(|s| s.cpu());
        if let (Some(a), Some(b)) = (a, b) {
            if b > 0.0 {
                cpu.push(a / b);
            }
        }
    }
    if cpu.is_empty() {
        row(
            "pooler CPU per transaction ≤ 0.8x PgBouncer's",
            "not measured".into(),
            "–",
        );
    } else {
        cpu.sort_by(f64::total_cmp);
        let med = cpu[cpu.len() / 2];
        let worst = cpu[cpu.len() - 1];
        row(
            "pooler CPU per transaction ≤ 0.8x PgBouncer's",
            format!(
                "median ratio {med:.2}x, best {:.2}x, worst {worst:.2}x over {} cells",
                cpu[0],
                cpu.len()
            ),
            pass(worst <= 0.8),
        );
    }
    // 4. Memory per idle client <= PgBouncer's.
    let per = |who| {
        r.idle
            .iter()
            .find(|(w, i)| *w == who && !i.tls)
            .and_then(|(_, i)| i.bytes_per_client())
    };
    match (per(Contender::Pgsluice), per(Contender::Pgbouncer)) {
        (Some(a), Some(b)) => row(
            "memory per idle client ≤ PgBouncer's",
            format!("pgsluice {a:.0} B, PgBouncer {b:.0} B"),
            pass(a <= b),
        ),
        _ => row(
            "memory per idle client ≤ PgBouncer's",
            "not measured".into(),
            "–",
        ),
    }
    // 5. Pooler-only >= 1.5x PgBouncer.
    let mut po = Vec::new();
    for c in r.cells("pooler-only") {
        let a = r
            .summary("pooler-only", c, Contender::Pgsluice)
            .and_then(|s| s.tps());
        let b = r
            .summary("pooler-only", c, Contender::Pgbouncer)
            .and_then(|s| s.tps());
        if let (Some(a), Some(b)) = (a, b) {
            po.push((a / b, c.clients));
        }
    }
    if po.is_empty() {
        row(
            "pooler-only tps ≥ 1.5x PgBouncer (pgsluice with 2 workers)",
            "not measured".into(),
            "–",
        );
    } else {
        let txt: Vec<String> = po
            .iter()
            .map(|(x, c)| format!("{x:.2}x at {c} clients"))
            .collect();
        let ok = po.iter().all(|(x, _)| *x >= 1.5);
        row(
            "pooler-only tps ≥ 1.5x PgBouncer (pgsluice with 2 workers)",
            txt.join(", "),
            pass(ok),
        );
    }
    // 6. 10,000 concurrent clients, zero errors.
    match r.idle.iter().find(|(w, _)| *w == Contender::Pgsluice) {
        Some((_, i)) => {
            let errors = i.connect_errors + i.query_errors;
            let status = if i.wanted < 10_000 {
                "– (fewer than 10,000 clients tried)"
            } else {
                pass(errors == 0 && i.connected == i.wanted)
            };
            row(
                "10,000 concurrent clients through pgsluice, zero errors",
                format!(
                    "{} of {} connected, {} connect errors, {} query errors",
                    i.connected, i.wanted, i.connect_errors, i.query_errors
                ),
                status,
            );
        }
        None => row(
            "10,000 concurrent clients through pgsluice, zero errors",
            "not measured".into(),
            "–",
        ),
    }
    md.push('\n');
}

/// All pgbench runs as CSV.
pub(crate) fn csv(r: &Results) -> String {
    let mut out = String::from(
        "section,workload,mode,clients,contender,round,tps,processed,failed,aborted,latency_ms,cpu_us_per_tx,exit_ok\n",
    );
    for s in &r.samples {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.3},{},{},{},{:.4},{},{}",
            s.section,
            s.cell.workload.as_str(),
            s.cell.mode.as_str(),
            s.cell.clients,
            s.contender.name(),
            s.round,
            s.outcome.tps,
            s.outcome.processed,
            s.outcome.failed,
            s.outcome.aborted,
            s.outcome.latency_ms,
            s.cpu_us_per_tx.map_or(String::new(), |c| format!("{c:.3}")),
            s.outcome.exit_ok
        );
    }
    out
}

#[path = "report_json.rs"]
mod json_out;
pub(crate) use json_out::json;

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
