//! The bench charts, drawn with `plotters` (SVG backend only: no font or image
//! libraries; text becomes SVG `<text>` elements that the viewer lays out).
//!
//! One figure per throughput table (workload and `-M` mode, and the pooler-only
//! runs): on the left tps per client count for pgsluice, PgBouncer and direct, on the
//! right the pooler's CPU per transaction (µs) for pgsluice and PgBouncer. Lines join
//! the medians of the rounds; whiskers span min–max. `chart.svg` stacks every figure.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::model::{Contender, Results, Stat, Summary};

/// Width of a figure, pixels.
const WIDTH: u32 = 1000;
/// Height of one figure row (two panels side by side), pixels.
const ROW_H: u32 = 330;
/// Height of the title line above the rows.
const TITLE_H: u32 = 36;

/// One SVG file to write into the results folder.
#[derive(Debug)]
pub(crate) struct Chart {
    /// File name, e.g. `tps-select-only-simple.svg`.
    pub(crate) file: String,
    pub(crate) svg: String,
}

/// One contender's points in one panel.
struct Series {
    who: Contender,
    /// (index into [`Row::clients`], median/min/max over rounds)
    points: Vec<(u32, Stat)>,
    /// Client counts where the contender had errors or did not run.
    missing: Vec<u32>,
}

/// One figure: a throughput table's tps and CPU per transaction.
struct Row {
    /// File name stem.
    stem: String,
    title: String,
    clients: Vec<u32>,
    tps: Vec<Series>,
    cpu: Vec<Series>,
}

/// `quick run, 2025-01-31 12:00 UTC` (or `full run, ...`) from the run's metadata.
fn label(r: &Results) -> String {
    let get = |k: &str| {
        r.meta
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let kind = match get("mode") {
        Some(m) if m.starts_with("quick") => "quick run",
        Some(_) => "full run",
        None => "run",
    };
    match get("date") {
        Some(d) => format!("{kind}, {d}"),
        None => kind.to_owned(),
    }
}

fn rows(r: &Results) -> Vec<Row> {
    let mut out = Vec::new();
    for section in ["throughput", "pooler-only"] {
        let cells = r.cells(section);
        let mut groups: Vec<_> = cells.iter().map(|c| (c.workload, c.mode)).collect();
        groups.dedup();
        for (w, m) in groups {
            let group: Vec<_> = cells
                .iter()
                .filter(|c| c.workload == w && c.mode == m)
                .copied()
                .collect();
            let (stem, title) = if section == "pooler-only" {
                (
                    format!("pooler-only-{}", m.as_str()),
                    format!("pooler-only (fake backend), -M {}", m.as_str()),
                )
            } else {
                (
                    format!("{}-{}", w.as_str(), m.as_str()),
                    format!("{}, -M {}", w.as_str(), m.as_str()),
                )
            };
            let series = |who: Contender, cpu: bool| {
                let mut s = Series {
                    who,
                    points: Vec::new(),
                    missing: Vec::new(),
                };
                for (i, cell) in group.iter().enumerate() {
                    let stat = match r.summary(section, *cell, who) {
                        Some(Summary::Ok { tps, .. }) if !cpu => Some(tps),
                        Some(Summary::Ok { cpu: c, .. }) if cpu => c,
                        _ => None,
                    };
                    match stat {
                        Some(st) => s.points.push((i as u32, st)),
                        None => s.missing.push(cell.clients),
                    }
                }
                s
            };
            out.push(Row {
                stem,
                title,
                clients: group.iter().map(|c| c.clients).collect(),
                tps: Contender::ALL.iter().map(|w| series(*w, false)).collect(),
                cpu: [Contender::Pgsluice, Contender::Pgbouncer]
                    .iter()
                    .map(|w| series(*w, true))
                    .collect(),
            });
        }
    }
    out
}

/// Renders every chart; empty when the run measured no throughput.
pub(crate) fn charts(r: &Results) -> Result<Vec<Chart>, String> {
    let rows = rows(r);
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let label = label(r);
    let mut out = Vec::new();
    for row in &rows {
        let svg = figure(
            &format!("{} — {label}", row.title),
            std::slice::from_ref(row),
        )?;
        out.push(Chart {
            file: format!("tps-{}.svg", row.stem),
            svg,
        });
    }
    out.push(Chart {
        file: "chart.svg".into(),
        svg: figure(&format!("pgsluice-bench — {label}"), &rows)?,
    });
    Ok(out)
}

/// A figure of `rows` stacked under `title`, as SVG text.
fn figure(title: &str, rows: &[Row]) -> Result<String, String> {
    let mut svg = String::new();
    let height = TITLE_H + ROW_H * rows.len() as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let body = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| e.to_string())?;
        for (row, area) in rows.iter().zip(body.split_evenly((rows.len(), 1))) {
            let (left, right) = area.split_horizontally(WIDTH / 2);
            let tps_title = format!("{} — tps (higher is better)", row.title);
            panel(&left, &tps_title, "tps", &row.clients, &row.tps).map_err(|e| e.to_string())?;
            let cpu_title = format!("{} — pooler CPU µs per transaction", row.title);
            panel(&right, &cpu_title, "µs / tx", &row.clients, &row.cpu)
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// `12.5k` for 12,500; plain numbers below 1,000.
fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{}k", (v / 100.0).round() / 10.0)
    } else if v.abs() >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn rgb(who: Contender) -> RGBColor {
    let (r, g, b) = who.colour();
    RGBColor(r, g, b)
}

/// One panel: a line per series over the client counts (evenly spaced), whiskers for
/// min–max, and a legend naming each contender (with where it has no number).
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    clients: &[u32],
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let n = clients.len().max(1) as u32;
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, st)| st.max))
        .fold(0.0, f64::max);
    // Headroom for the legend in the upper left corner.
    let ymax = if top > 0.0 { top * 1.4 } else { 1.0 };
    // The client counts sit at x = 0, 1, 2...: evenly spaced whatever they are; the
    // axis asks for one tick per count and labels only the whole ones.
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..f64::from(n) - 0.5, 0f64..ymax)?;
    let at = |i: &u32| f64::from(*i);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("clients")
        .y_desc(y_desc)
        .x_labels(n as usize)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            clients
                .get(i as usize)
                .map_or_else(String::new, u32::to_string)
        })
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style(("sans-serif", 12))
        .draw()?;
    for s in series {
        let colour = rgb(s.who);
        let mut name = s.who.name().to_owned();
        if !s.missing.is_empty() {
            let list: Vec<String> = s.missing.iter().map(u32::to_string).collect();
            name.push_str(&format!(" (no number at {} clients)", list.join(", ")));
        }
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|(i, st)| (at(i), st.median)),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|(i, st)| Circle::new((at(i), st.median), 3, colour.filled())),
        )?;
        chart.draw_series(
            s.points
                .iter()
                .filter(|(_, st)| st.n > 1)
                .map(|(i, st)| ErrorBar::new_vertical(at(i), st.min, st.median, st.max, colour, 8)),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cell, Mode, Workload};
    use crate::model::{Sample, Skipped};
    use crate::pgbench::Outcome;

    fn sample(cell: Cell, who: Contender, round: usize, tps: f64) -> Sample {
        Sample {
            section: "throughput",
            cell,
            contender: who,
            round,
            outcome: Outcome {
                tps,
                processed: (tps * 2.0) as u64,
                exit_ok: true,
                ..Outcome::default()
            },
            cpu_us_per_tx: (who != Contender::Direct).then_some(tps / 1000.0),
        }
    }

    fn fixed() -> Results {
        let mut r = Results::default();
        r.meta.push(("date".into(), "2025-01-31 12:00 UTC".into()));
        r.meta.push(("mode".into(), "quick: 2 rounds".into()));
        for clients in [1, 10, 100, 1000] {
            let cell = Cell {
                workload: Workload::SelectOnly,
                mode: Mode::Simple,
                clients,
            };
            for (k, who) in Contender::ALL.into_iter().enumerate() {
                if clients == 1000 && who == Contender::Direct {
                    continue;
                }
                for round in 0..2 {
                    let tps = 3000.0 * f64::from(clients).ln_1p() + 500.0 * (round + k) as f64;
                    r.samples.push(sample(cell, who, round, tps));
                }
            }
        }
        let prepared = Cell {
            workload: Workload::SelectOnly,
            mode: Mode::Prepared,
            clients: 10,
        };
        r.samples
            .push(sample(prepared, Contender::Direct, 0, 5000.0));
        for who in [Contender::Pgsluice, Contender::Pgbouncer] {
            let mut s = sample(prepared, who, 0, 10.0);
            s.outcome.failed = 3;
            r.samples.push(s);
        }
        r.skipped.push(Skipped {
            section: "throughput",
            cell: Cell {
                workload: Workload::SelectOnly,
                mode: Mode::Simple,
                clients: 1000,
            },
            contender: Contender::Direct,
            reason: "max_connections".into(),
        });
        r
    }

    /// The text of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn charts_are_svg_naming_every_series() {
        let charts = charts(&fixed()).unwrap();
        let names: Vec<&str> = charts.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "tps-select-only-simple.svg",
                "tps-select-only-prepared.svg",
                "chart.svg"
            ]
        );
        for c in &charts {
            assert!(c.svg.trim_start().starts_with("<svg"), "{}", c.file);
            assert!(c.svg.trim_end().ends_with("</svg>"), "{}", c.file);
            assert_eq!(c.svg.matches("<text").count(), texts(&c.svg).len());
            let t = texts(&c.svg);
            for name in ["pgsluice", "PgBouncer"] {
                assert!(t.iter().any(|x| x.starts_with(name)), "{}: {name}", c.file);
            }
            assert!(t.iter().any(|x| x.starts_with("direct")), "{}", c.file);
            assert!(t[0].ends_with("quick run, 2025-01-31 12:00 UTC"), "{t:?}");
        }
        let simple = texts(&charts[0].svg);
        // Direct did not run at 1,000 clients; the axis still shows every count.
        assert!(simple.contains(&"direct (no number at 1000 clients)".to_owned()));
        assert!(simple.contains(&"pgsluice".to_owned()), "{simple:?}");
        for label in ["1", "10", "100", "1000"] {
            assert!(simple.contains(&label.to_owned()), "x label {label}");
        }
        assert!(simple
            .iter()
            .any(|t| t.ends_with("pooler CPU µs per transaction")));
        // Lines (2 px wide): per panel, one per contender with numbers and one per
        // legend entry.
        let lines = |svg: &str| svg.matches(r#"stroke-width="2" points="#).count();
        assert_eq!(lines(&charts[0].svg), 2 * (3 + 2));
        // Both poolers failed in prepared mode: named, without a line.
        let prepared = texts(&charts[1].svg);
        assert!(prepared.contains(&"pgsluice (no number at 10 clients)".to_owned()));
        assert_eq!(lines(&charts[1].svg), 1 + (3 + 2));
    }

    #[test]
    fn nothing_measured_nothing_drawn() {
        assert!(charts(&Results::default()).unwrap().is_empty());
    }

    #[test]
    fn ticks() {
        assert_eq!(fmt_tick(2500.0), "2.5k");
        assert_eq!(fmt_tick(250.0), "250");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(0.0), "0");
    }
}
