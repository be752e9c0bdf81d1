//! The HTML report of a run: one self-contained file (inline SVG, no
//! scripts, nothing fetched) with the verdict table, the failures' text on
//! top, and per test SVG plots (plotters) of what each worker did.

use std::fmt::Write as _;

use ktstr_record::{RunRecord, Verdict, WorkerRecord, secs};
use plotters::prelude::*;

use crate::report::{or_unknown, xml_escape};

/// Why a plot was not drawn: plotters' error on the SVG backend.
type PlotError = DrawingAreaErrorKind<std::io::Error>;

/// One bar per worker: (label, value).
fn bars(title: &str, unit: &str, values: &[(String, f64)]) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = values
            .iter()
            .map(|(_, v)| *v)
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let n = values.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((0usize..n).into_segmented(), 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(16))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    values.get(*i).map(|(l, _)| l.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .x_desc("worker")
            .y_desc(unit)
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, (_, v))| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                BLUE.mix(0.6).filled(),
            );
            r.set_margin(0, 0, 4, 4);
            r
        }))?;
        root.present()?;
    }
    Ok(svg)
}

/// The scenario's step boundaries of a record: (seconds from boot, label),
/// on the monitor series' clock.
fn step_marks(r: &RunRecord) -> Vec<(f64, String)> {
    r.steps
        .iter()
        .map(|s| (s.t, format!("step {}", s.index)))
        .collect()
}

/// One line per series over time: (name, [(seconds, value)]), with each
/// step boundary of `marks` as a dashed vertical line.
fn lines(
    title: &str,
    unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
    marks: &[(f64, String)],
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts = series.iter().flat_map(|(_, p)| p.iter());
        let (t0, t1, max) = pts.fold((f64::MAX, f64::MIN, 0.0f64), |(a, b, m), (t, v)| {
            (a.min(*t), b.max(*t), m.max(*v))
        });
        // The marks widen the time axis: a step outside the samples shows.
        let (t0, t1) = marks
            .iter()
            .fold((t0, t1), |(a, b), (t, _)| (a.min(*t), b.max(*t)));
        let (t0, t1) = if t0 < t1 { (t0, t1) } else { (0.0, 1.0) };
        // Room on the right for the label of a step at the end.
        let t1 = if marks.is_empty() {
            t1
        } else {
            t1 + (t1 - t0) * 0.08
        };
        let top = (max * 1.15).max(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(t0..t1, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds from boot")
            .y_desc(unit)
            .draw()?;
        for (t, label) in marks {
            let grey = RGBColor(90, 90, 90);
            chart.draw_series(DashedLineSeries::new(
                [(*t, 0.0), (*t, top)],
                5,
                4,
                grey.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*t, top),
                ("sans-serif", 13).into_font().color(&grey),
            )))?;
        }
        for (i, (name, p)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(p.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// A count sampled over time as steps: each value holds until the next
/// sample (a count never passes through the values between two samples).
fn held(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(t, v)) in points.iter().enumerate() {
        if i > 0
            && let Some(&(_, prev)) = points.get(i - 1)
            && prev != v
        {
            out.push((t, prev));
        }
        out.push((t, v));
    }
    out
}

/// The monitor's time series of a record: per-CPU nr_running, DSQ depth.
fn monitor_plots(r: &RunRecord) -> Vec<Result<String, PlotError>> {
    let samples: Vec<&ktstr_record::MonitorSample> =
        r.monitor.iter().flat_map(|m| &m.series).collect();
    let cpus = samples
        .iter()
        .filter_map(|s| s.nr_running.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    let marks = step_marks(r);
    let mut out = Vec::new();
    if cpus > 0 {
        let series: Vec<(String, Vec<(f64, f64)>)> = (0..cpus.min(16))
            .map(|c| {
                let p = samples
                    .iter()
                    .filter_map(|s| {
                        let n = (*s.nr_running.as_ref()?.get(c)?)?;
                        Some((s.t, f64::from(n)))
                    })
                    .collect();
                (format!("cpu{c}"), held(p))
            })
            .collect();
        out.push(lines(
            "runnable tasks per CPU (nr_running)",
            "tasks",
            &series,
            &marks,
        ));
    }
    let dsq: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.t, f64::from(s.deepest_dsq?))))
        .collect();
    if !dsq.is_empty() {
        out.push(lines(
            "deepest DSQ of the scheduler",
            "queued tasks",
            &[("deepest".into(), held(dsq))],
            &marks,
        ));
    }
    out
}

/// The plots of one record: the monitor's series and its workers' figures.
fn plots(r: &RunRecord) -> Vec<Result<String, PlotError>> {
    let mut out = monitor_plots(r);
    out.extend(worker_plots(r));
    out
}

/// The plots of one record's workers (none without workers).
fn worker_plots(r: &RunRecord) -> Vec<Result<String, PlotError>> {
    let workers = &r.workers;
    if workers.is_empty() {
        return Vec::new();
    }
    let label = |w: &WorkerRecord| w.index.to_string();
    let rate: Vec<(String, f64)> = workers
        .iter()
        .map(|w| {
            let wall = secs(w.wall);
            let p = w.progress as f64;
            (label(w), if wall > 0.0 { p / wall } else { 0.0 })
        })
        .collect();
    let delay: Vec<(String, f64)> = workers
        .iter()
        .map(|w| {
            let wall = secs(w.wall);
            let d = secs(w.run_delay);
            (label(w), if wall > 0.0 { 100.0 * d / wall } else { 0.0 })
        })
        .collect();
    let gap: Vec<(String, f64)> = workers
        .iter()
        .map(|w| (label(w), secs(w.max_gap) * 1e3))
        .collect();
    let mut out = vec![
        bars("work done per second, by worker", "units/s", &rate),
        bars(
            "time runnable but waiting, by worker",
            "% of window",
            &delay,
        ),
        bars("longest gap in its own loop, by worker", "ms", &gap),
    ];
    let wake: Vec<(String, f64)> = workers
        .iter()
        .filter_map(|w| Some((label(w), secs(w.wake_latency?.p99) * 1e6)))
        .collect();
    if !wake.is_empty() {
        out.push(bars("wake-up latency p99, by worker", "us", &wake));
    }
    out
}

/// The HTML report of `run`'s records.
/// Where each cgroup's workers lived, per NUMA node, LLC and core (empty
/// without placement).
fn placement_table(r: &RunRecord) -> String {
    if r.placement.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h3>Placement by topology</h3>\n<table><tr><th>cgroup</th><th>level</th>\
         <th>domain</th><th>CPUs</th><th>workers</th><th>CPU time</th><th>split</th></tr>\n",
    );
    for g in &r.placement {
        for l in &g.levels {
            let stable = if l.moves == 0 {
                format!("unchanged for the whole {:.2} s", l.window.as_secs_f64())
            } else {
                format!(
                    "{} moves, then unchanged for {:.2} s",
                    l.moves,
                    l.stable_for.as_secs_f64()
                )
            };
            let mut rows: Vec<[String; 4]> = l
                .domains
                .iter()
                .map(|d| {
                    [
                        format!("{} {}", l.level, d.domain),
                        d.cpus.to_string(),
                        format!("{} ({:?})", d.workers.len(), d.workers),
                        format!(
                            "{:.2}–{:.2} s",
                            d.cpu_time_min.as_secs_f64(),
                            d.cpu_time_max.as_secs_f64()
                        ),
                    ]
                })
                .collect();
            if !l.homeless.is_empty() {
                rows.push([
                    format!("spread over {}s", l.level),
                    String::new(),
                    format!("{} ({:?})", l.homeless.len(), l.homeless),
                    String::new(),
                ]);
            }
            for row in rows {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td></tr>",
                    xml_escape(&g.group),
                    l.level,
                    xml_escape(&row[0]),
                    row[1],
                    row[2],
                    row[3],
                    xml_escape(&stable)
                );
            }
        }
    }
    h.push_str("</table>\n");
    h
}

pub fn html(run: &str, records: &[RunRecord]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ktstr run {0}</title>\
         <style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}\
         .fail{{color:#b00}}.pass{{color:#070}}.inconclusive{{color:#a60}}\
         pre{{background:#f6f6f6;padding:6px;white-space:pre-wrap}}</style></head><body>\n\
         <h1>ktstr run {0}</h1>\n",
        xml_escape(run)
    );
    for r in records.iter().filter(|r| r.verdict == Verdict::Fail) {
        let _ = write!(
            h,
            "<h2 class=\"fail\">FAIL: {}</h2>\n<pre>{}</pre>\n",
            xml_escape(r.name()),
            xml_escape(r.failure.as_deref().unwrap_or(""))
        );
    }
    h.push_str(
        "<h2>Verdicts</h2>\n<table><tr><th>test</th><th>topology</th><th>kernel</th>\
         <th>verdict</th><th>wall</th><th>key figures</th></tr>\n",
    );
    for r in records {
        let v = r.verdict.as_str();
        let figs: Vec<String> = r
            .figures
            .iter()
            .map(|(k, f)| format!("{k} {f:.1}"))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{v}\">{v}</td><td>{:.1} s</td><td>{}</td></tr>",
            xml_escape(r.name()),
            xml_escape(or_unknown(&r.topology)),
            xml_escape(r.kernel_label().unwrap_or("?")),
            r.phases_s.total,
            xml_escape(&figs.join(", "))
        );
    }
    h.push_str("</table>\n");
    for r in records {
        let ps = plots(r);
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| {
                format!(
                    "<li>step {} at {:.2} s from boot (guest uptime {:.2} s): {}</li>",
                    s.index,
                    s.t,
                    s.guest_s,
                    xml_escape(&s.ops.join(", "))
                )
            })
            .collect();
        let dump = crate::html_dump::sections(r);
        if ps.is_empty() && steps.is_empty() && dump.is_empty() && r.placement.is_empty() {
            continue;
        }
        let _ = writeln!(h, "<h2>{}</h2>", xml_escape(r.name()));
        if !steps.is_empty() {
            let _ = writeln!(
                h,
                "<p>Scenario steps (dashed lines in the plots over time):</p>\n<ul>{}</ul>",
                steps.concat()
            );
        }
        h.push_str(&dump);
        for p in ps {
            match p {
                Ok(svg) => {
                    h.push_str(&svg);
                    h.push('\n');
                }
                Err(e) => {
                    let _ = writeln!(h, "<p>(plot not drawn: {})</p>", xml_escape(&e.to_string()));
                }
            }
        }
        h.push_str(&placement_table(r));
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_drawn_as_steps_between_samples() {
        let p = held(vec![(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 0.0)]);
        assert_eq!(
            p,
            [
                (0.0, 0.0),
                (1.0, 0.0),
                (1.0, 1.0),
                (2.0, 1.0),
                (3.0, 1.0),
                (3.0, 0.0)
            ]
        );
        assert!(held(Vec::new()).is_empty());
    }
    use ktstr_record::{
        DomainShare, GroupPlacement, Level, LevelSplit, MonitorSample, MonitorSummary, StepRecord,
    };
    use std::time::Duration;

    #[test]
    fn the_report_puts_failures_first_and_draws_worker_plots() {
        let w = |index: usize, progress: u64| WorkerRecord {
            index,
            progress,
            wall: Duration::from_secs(2),
            run_delay: Duration::from_secs(1),
            max_gap: Duration::from_millis(30),
            ..WorkerRecord::default()
        };
        let sample = |t: f64, nr: [u32; 2], dsq: u32| MonitorSample {
            t,
            nr_running: Some(nr.into_iter().map(Some).collect()),
            deepest_dsq: Some(dsq),
            scheduler: None,
            guest_s: None,
        };
        let step = |index: u32, t: f64, guest_s: f64, op: &str| StepRecord {
            index,
            t,
            guest_s,
            ops: vec![op.into()],
        };
        let mut ok = RunRecord::new("t::ok", Verdict::Pass);
        ok.topology = "1n1l2c1t".into();
        ok.figures = [("worst_gap_ms".to_string(), 30.0)].into();
        ok.workers = vec![w(0, 100), w(1, 300)];
        ok.monitor = Some(MonitorSummary {
            hz: 10,
            samples: 2,
            series: vec![sample(1.0, [1, 2], 3), sample(2.0, [2, 2], 1)],
            unavailable: None,
            kernel: None,
            deepest_dsq: Some(3),
            oldest_wait_ms: None,
            last: None,
        });
        ok.steps = vec![
            step(0, 1.5, 2.4, "add cg_0 (2 workers)"),
            step(1, 2.5, 4.0, "stop <cg_0>"),
        ];
        ok.phases_s.total = 10.0;
        let mut bad = RunRecord::new("t::bad", Verdict::Fail);
        bad.variant = Some("gauntlet/bad/llc3".into());
        bad.failure = Some("fairness <spread> 60%".into());
        bad.phases_s.total = 9.0;
        let share = |domain: u32, workers: Vec<usize>, secs: f64| DomainShare {
            domain,
            cpus: 2,
            workers,
            cpu_time_min: Duration::from_secs_f64(secs),
            cpu_time_max: Duration::from_secs_f64(secs),
            cpu_time_mean: Duration::from_secs_f64(secs),
        };
        bad.placement = vec![GroupPlacement {
            group: "cg_<1>".into(),
            levels: vec![LevelSplit {
                level: Level::Node,
                domains: vec![share(0, vec![4, 5, 6], 1.65), share(1, vec![7], 4.99)],
                homeless: vec![],
                moves: 0,
                stable_for: Duration::from_secs(5),
                window: Duration::from_secs(5),
            }],
        }];
        let recs = vec![ok, bad];
        let h = html("r1", &recs);
        let fail_at = h.find("FAIL: gauntlet/bad/llc3").expect("failure heading");
        assert!(
            fail_at < h.find("<table>").expect("table"),
            "failures come first"
        );
        assert!(h.contains("fairness &lt;spread&gt; 60%"));
        assert_eq!(
            h.matches("<svg").count(),
            5,
            "two monitor plots and three worker plots of the one test with them"
        );
        assert!(h.contains("runnable tasks per CPU") && h.contains("deepest DSQ"));
        assert!(h.contains("work done per second"));
        // Each step boundary: a dashed line and its label in both plots over
        // time (the second outside the samples widens the axis), and a list.
        assert_eq!(h.matches("\nstep 0\n</text>").count(), 2, "{h}");
        assert_eq!(h.matches("\nstep 1\n</text>").count(), 2);
        assert!(h.contains(
            "<li>step 1 at 2.50 s from boot (guest uptime 4.00 s): stop &lt;cg_0&gt;</li>"
        ));
        assert!(h.contains("<h3>Placement by topology</h3>"));
        assert!(
            h.contains(
                "<tr><td>cg_&lt;1&gt;</td><td>node</td><td>node 0</td><td>2</td><td>3 ([4, 5, \
                 6])</td><td>1.65–1.65 s</td><td>unchanged for the whole 5.00 s</td></tr>"
            ),
            "{h}"
        );
        assert!(h.contains("<td>node 1</td><td>2</td><td>1 ([7])</td><td>4.99–4.99 s</td>"));
        assert!(
            !h.contains("<script") && !h.contains("src=") && !h.contains("href="),
            "self-contained"
        );
    }
}
