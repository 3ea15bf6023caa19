//! A hand-written SVG chart: one panel per throughput table, grouped bars (one group
//! per client count, one bar per contender, median height, min–max whisker).

use std::fmt::Write as _;

use crate::args::Mode;
use crate::model::{Contender, Results, Summary};

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 250.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 40.0;

/// One bar: median with its min and max, or a short text when there is no number.
enum Bar {
    Value { median: f64, min: f64, max: f64 },
    Text(&'static str),
}

struct Panel {
    title: String,
    /// (group label, bars per contender)
    groups: Vec<(String, Vec<(Contender, Bar)>)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum and tick step for values up to `max`.
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_tick(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", (v / 100.0).round() / 10.0)
    } else {
        format!("{v}")
    }
}

fn panels(r: &Results) -> Vec<Panel> {
    let mut out = Vec::new();
    for section in ["throughput", "pooler-only"] {
        let cells = r.cells(section);
        let mut groups: Vec<_> = cells.iter().map(|c| (c.workload, c.mode)).collect();
        groups.dedup();
        for (w, m) in groups {
            let title = if section == "pooler-only" {
                format!(
                    "pooler-only, -M {} — tps (direct = the fake backend alone)",
                    m.as_str()
                )
            } else {
                format!("{}, -M {} — tps", w.as_str(), m.as_str())
            };
            let mut panel = Panel {
                title,
                groups: Vec::new(),
            };
            for cell in cells.iter().filter(|c| c.workload == w && c.mode == m) {
                let bars = Contender::ALL
                    .iter()
                    .map(|who| {
                        let bar = match r.summary(section, *cell, *who) {
                            Some(Summary::Ok { tps, .. }) => Bar::Value {
                                median: tps.median,
                                min: tps.min,
                                max: tps.max,
                            },
                            Some(Summary::Errors { .. }) if m == Mode::Prepared => {
                                Bar::Text("unsupp.")
                            }
                            Some(Summary::Errors { .. }) => Bar::Text("errors"),
                            Some(Summary::NotRun(_)) | None => Bar::Text("n/a"),
                        };
                        (*who, bar)
                    })
                    .collect();
                let label = match cell.clients {
                    1 => "1 client".to_owned(),
                    n => format!("{n} clients"),
                };
                panel.groups.push((label, bars));
            }
            out.push(panel);
        }
    }
    out
}

/// Renders the chart; None when there is nothing to draw.
pub(crate) fn chart(r: &Results) -> Option<String> {
    let panels = panels(r);
    if panels.is_empty() {
        return None;
    }
    let legend_h = 30.0;
    let height = legend_h + panels.len() as f64 * PANEL_H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Legend.
    for (i, who) in Contender::ALL.iter().enumerate() {
        let x = LEFT + i as f64 * 150.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="10" width="14" height="14" fill="{}"/><text x="{}" y="22">{}</text>"#,
            who.colour(),
            x + 20.0,
            who.name()
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="22" fill="#555">bars: median; whiskers: min–max</text>"##,
        LEFT + 460.0
    );
    for (pi, p) in panels.iter().enumerate() {
        let y0 = legend_h + pi as f64 * PANEL_H;
        draw_panel(&mut s, p, y0);
    }
    s.push_str("</svg>\n");
    Some(s)
}

fn draw_panel(s: &mut String, p: &Panel, y0: f64) {
    let plot_top = y0 + TOP;
    let plot_h = PANEL_H - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let max = p
        .groups
        .iter()
        .flat_map(|(_, bars)| bars.iter())
        .filter_map(|(_, b)| match b {
            Bar::Value { max, .. } => Some(*max),
            Bar::Text(_) => None,
        })
        .fold(0.0, f64::max);
    let (ymax, step) = axis(max);
    let y_of = |v: f64| plot_top + plot_h - v / ymax * plot_h;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 + 22.0,
        escape(&p.title)
    );
    // Grid and ticks.
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/>"##,
        y_of(0.0),
        LEFT + plot_w,
        y_of(0.0)
    );
    let n = p.groups.len().max(1) as f64;
    let group_w = plot_w / n;
    let bar_w = (group_w * 0.8 / Contender::ALL.len() as f64).min(60.0);
    for (gi, (label, bars)) in p.groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * group_w;
        let start = gx + (group_w - bar_w * bars.len() as f64) / 2.0;
        for (bi, (who, bar)) in bars.iter().enumerate() {
            let x = start + bi as f64 * bar_w;
            match bar {
                Bar::Value { median, min, max } => {
                    let y = y_of(*median);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {median:.0} tps</title></rect>"#,
                        x + 1.0,
                        bar_w - 2.0,
                        (y_of(0.0) - y).max(0.0),
                        who.colour(),
                        who.name()
                    );
                    let cx = x + bar_w / 2.0;
                    let _ = writeln!(
                        s,
                        r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#222"/>"##,
                        y_of(*min),
                        y_of(*max)
                    );
                }
                Bar::Text(t) => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#999" font-size="10">{t}</text>"##,
                        x + bar_w / 2.0,
                        y_of(0.0) - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            y_of(0.0) + 16.0,
            escape(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(axis(9_300.0), (10_000.0, 2_000.0));
        assert_eq!(axis(23_000.0), (25_000.0, 5_000.0));
        assert_eq!(axis(0.0), (1.0, 0.25));
        assert_eq!(fmt_tick(2500.0), "2.5k");
    }
}
