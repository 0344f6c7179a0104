//! Power over time as SVG line charts, like the paper's Figure 8:
//! [`power_chart`] draws the desktop alone (time in minutes across, watts
//! up, the power as a step line, a dashed line at idle power, the baseline,
//! and a legend with the share of energy saved); [`power_timeline`] draws
//! several hosts over the same time, one panel each (the desktop above the
//! consolidation server, as in the figure), with spans shaded across them
//! (when the VM was on the server); [`xy_chart`] draws series of points
//! against each other on linear or logarithmic axes (the fleet
//! simulator's energy against network and latency, like the paper's
//! Figures 10 and 11); [`span_rows_chart`] draws rows of spans over a
//! shared axis (users' days at their desktops, like the paper's Figure 1).
//!
//! Written by hand: a chart of one step line needs a path, two axes and a
//! few labels, not a plotting library.

use std::fmt::Write;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// What the chart says besides the line.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartLabels {
    /// The title above the plot.
    pub title: String,
    /// Idle power, watts, drawn as the dashed baseline.
    pub idle_watts: f64,
    /// Energy saved against staying idle, percent, for the legend.
    pub saved_percent: f64,
}

/// Renders `steps` (`(seconds, watts)`: from each time on, that power; as
/// [`EnergyLedger::power_trace`](crate::EnergyLedger::power_trace) gives
/// them, ascending in time) as an SVG document.
///
/// The path has one point for the first step and two for each later one
/// (the old power up to its time, then the new power): `2n - 1` points for
/// `n` steps.
pub fn power_chart(steps: &[(f64, f64)], labels: &ChartLabels) -> String {
    let t_end = steps.last().map_or(1.0, |&(t, _)| t).max(1.0);
    let t_start = steps.first().map_or(0.0, |&(t, _)| t).min(t_end - 1.0);
    let max_watts = steps.iter().map(|&(_, w)| w).fold(labels.idle_watts, f64::max);
    // Round the axis up to a multiple of 20 W, with headroom for the legend.
    let w_top = ((max_watts * 1.15 / 20.0).ceil() * 20.0).max(20.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + (t - t_start) / (t_end - t_start) * plot_w;
    let y = |w: f64| TOP + plot_h - w / w_top * plot_h;

    // Writing to a String cannot fail; the results are ignored for that reason.
    let mut svg = open_svg(HEIGHT, &labels.title);

    // Axes, ticks and labels.
    let (x0, y0) = (LEFT, TOP + plot_h);
    axes(&mut svg, TOP, y0, plot_w);
    for k in 0..=(w_top / 20.0) as u32 {
        let w = f64::from(k) * 20.0;
        let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{w}</text>"#, LEFT - 6.0, y(w) + 4.0);
    }
    let minutes = (t_end - t_start) / 60.0;
    let tick_min = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0].into_iter().find(|&m| minutes / m <= 12.0).unwrap_or(120.0);
    let mut m = 0.0;
    while m <= minutes {
        let tx = x(t_start + m * 60.0);
        x_tick(&mut svg, tx, y0, m);
        m += tick_min;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">time (minutes)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">power (W)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );

    // The idle baseline.
    let yi = y(labels.idle_watts);
    let _ = writeln!(
        svg,
        r#"<line x1="{x0}" y1="{yi:.1}" x2="{}" y2="{yi:.1}" stroke="gray" stroke-dasharray="6 4"/>"#,
        LEFT + plot_w
    );

    // The power as a step line.
    let d = step_path(steps, &x, &y);
    let _ = writeln!(svg, r##"<path d="{d}" fill="none" stroke="#c0392b" stroke-width="1.2"/>"##);

    // Legend.
    let lx = LEFT + plot_w - 300.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="#c0392b"/>"##,
        TOP + 6.0,
        lx + 24.0,
        TOP + 6.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}">desktop power: {:.1}% saved vs idle</text>"#,
        lx + 30.0,
        TOP + 10.0,
        labels.saved_percent
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="gray" stroke-dasharray="6 4"/>"#,
        TOP + 22.0,
        lx + 24.0,
        TOP + 22.0
    );
    let _ = writeln!(svg, r#"<text x="{}" y="{}">idle ({} W)</text>"#, lx + 30.0, TOP + 26.0, labels.idle_watts);
    svg.push_str("</svg>\n");
    svg
}

/// One host's power in a [`power_timeline`].
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePanel {
    /// The host, as the panel's heading says it ("desktop").
    pub host: String,
    /// Where its watts come from, printed beside the heading.
    pub source: String,
    /// `(seconds, watts)` steps, ascending in time, as for [`power_chart`].
    pub steps: Vec<(f64, f64)>,
    /// A dashed reference line (the desktop's idle power), if any, and its label.
    pub baseline: Option<(f64, String)>,
    /// The line's colour (an SVG colour).
    pub colour: String,
}

/// A time span shaded across every panel, with its label ("VM on the server").
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineSpan {
    /// From, seconds.
    pub from_secs: f64,
    /// To, seconds.
    pub to_secs: f64,
    /// What happened then.
    pub label: String,
}

/// Several hosts' power over the same time, one panel each, stacked on a
/// shared time axis: the layout of the paper's Figure 8 (the desktop
/// above, the consolidation server below).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The title above the panels.
    pub title: String,
    /// The panels, top to bottom.
    pub panels: Vec<TimelinePanel>,
    /// Spans shaded in every panel.
    pub spans: Vec<TimelineSpan>,
    /// Lines of notes under the time axis (what the figures are).
    pub notes: Vec<String>,
}

const PANEL_HEIGHT: f64 = 220.0;
const PANEL_GAP: f64 = 40.0;

/// Renders `timeline` as an SVG document: each panel a step line in its
/// own watts scale, every panel over the same seconds, shaded spans
/// behind the lines.
pub fn power_timeline(timeline: &Timeline) -> String {
    let all = timeline.panels.iter().flat_map(|panel| panel.steps.iter().map(|&(t, _)| t));
    let spans = timeline.spans.iter().flat_map(|span| [span.from_secs, span.to_secs]);
    let (t_start, t_end) = all.chain(spans).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| (a.min(t), b.max(t)));
    let (t_start, t_end) = if t_start.is_finite() { (t_start, t_end.max(t_start + 1.0)) } else { (0.0, 1.0) };
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t - t_start) / (t_end - t_start) * plot_w;
    let n = timeline.panels.len() as f64;
    let axis_y = TOP + n * PANEL_HEIGHT + (n - 1.0).max(0.0) * PANEL_GAP;
    let height = axis_y + BOTTOM + 10.0 + 16.0 * timeline.notes.len() as f64;

    // Writing to a String cannot fail; the results are ignored for that reason.
    let mut svg = open_svg(height, &timeline.title);

    for (i, panel) in timeline.panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_HEIGHT + PANEL_GAP);
        let bottom = top + PANEL_HEIGHT;
        let reference = panel.baseline.as_ref().map_or(0.0, |(w, _)| *w);
        let max_watts = panel.steps.iter().map(|&(_, w)| w).fold(reference, f64::max);
        let step = if max_watts > 100.0 { 50.0 } else { 20.0 };
        let w_top = ((max_watts * 1.2 / step).ceil() * step).max(step);
        let y = |w: f64| bottom - w / w_top * PANEL_HEIGHT;

        for span in &timeline.spans {
            let (x1, x2) = (x(span.from_secs), x(span.to_secs));
            let _ = writeln!(
                svg,
                r##"<rect x="{x1:.1}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#dfe9f5"/>"##,
                (x2 - x1).max(0.5)
            );
            if i == 0 {
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#34618f">{}</text>"##,
                    (x1 + x2) / 2.0,
                    top + 14.0,
                    escape(&span.label)
                );
            }
        }
        axes(&mut svg, top, bottom, plot_w);
        let mut w = 0.0;
        while w <= w_top {
            let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{w}</text>"#, LEFT - 6.0, y(w) + 4.0);
            w += step;
        }
        let middle = (top + bottom) / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="16" y="{middle}" text-anchor="middle" transform="rotate(-90 16 {middle})">{} (W)</text>"#,
            escape(&panel.host)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-weight="bold">{}</text><text x="{}" y="{}" fill="#555">{}</text>"##,
            LEFT + 8.0,
            top - 6.0,
            escape(&panel.host),
            LEFT + 8.0 + 8.0 * panel.host.len() as f64 + 10.0,
            top - 6.0,
            escape(&panel.source)
        );
        if let Some((watts, label)) = &panel.baseline {
            let yb = y(*watts);
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{yb:.1}" x2="{}" y2="{yb:.1}" stroke="gray" stroke-dasharray="6 4"/>"#,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{:.1}" text-anchor="end" fill="gray">{}</text>"#,
                LEFT + plot_w - 4.0,
                yb - 4.0,
                escape(label)
            );
        }
        let _ = writeln!(
            svg,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            step_path(&panel.steps, &x, &y),
            escape(&panel.colour)
        );
    }

    // The shared time axis, under the last panel.
    let secs = t_end - t_start;
    let tick = [5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0]
        .into_iter()
        .find(|&s| secs / s <= 12.0)
        .unwrap_or(7200.0);
    let in_minutes = tick >= 60.0;
    let mut s = 0.0;
    while s <= secs {
        let tx = x(t_start + s);
        x_tick(&mut svg, tx, axis_y, if in_minutes { s / 60.0 } else { s });
        s += tick;
    }
    x_title(&mut svg, axis_y, plot_w, format!("time ({})", if in_minutes { "minutes" } else { "seconds" }));
    for (k, note) in timeline.notes.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{LEFT}" y="{}" fill="#333">{}</text>"##,
            axis_y + 58.0 + 16.0 * k as f64,
            escape(note)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One series of an [`XyChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct XySeries {
    /// Its name in the legend.
    pub name: String,
    /// Its colour (an SVG colour).
    pub colour: String,
    /// `(x, y)` points, in the order they are joined.
    pub points: Vec<(f64, f64)>,
    /// A label beside each point (as many as the points), or none.
    pub labels: Vec<String>,
    /// Whether a line joins the points.
    pub joined: bool,
}

/// Series of points against each other.
#[derive(Debug, Clone, PartialEq)]
pub struct XyChart {
    /// The title above the plot.
    pub title: String,
    /// What the x axis is.
    pub x_label: String,
    /// What the y axis is.
    pub y_label: String,
    /// A logarithmic x axis (points at or below 0 are left out).
    pub x_log: bool,
    /// A logarithmic y axis (points at or below 0 are left out).
    pub y_log: bool,
    /// The series.
    pub series: Vec<XySeries>,
    /// Lines of notes under the x axis.
    pub notes: Vec<String>,
}

/// One axis of an [`XyChart`]: its range (in log10 units when
/// logarithmic) and its ticks.
struct Axis {
    log: bool,
    low: f64,
    high: f64,
}

impl Axis {
    /// The axis over `values`, with a margin, from 0 when linear and all
    /// positive.
    fn over(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut low, mut high) = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .map(|v| if log { v.log10() } else { v })
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if !low.is_finite() {
            (low, high) = (0.0, 1.0);
        }
        if log {
            (low, high) = (low.floor(), high.ceil().max(low.floor() + 1.0));
        } else {
            low = low.min(0.0);
            let step = nice_step((high - low).max(1e-9));
            (low, high) = ((low / step).floor() * step, ((high / step).ceil() * step).max(low + step));
        }
        Axis { log, low, high }
    }

    /// Where `value` falls, 0 at the low end and 1 at the high end.
    fn fraction(&self, value: f64) -> f64 {
        let v = if self.log { value.log10() } else { value };
        (v - self.low) / (self.high - self.low)
    }

    /// Tick values, in data units.
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let decades = (self.high - self.low).round() as i32;
            let steps: &[f64] = if decades <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            let mut ticks = Vec::new();
            for exponent in self.low as i32..=self.high as i32 {
                for &m in steps {
                    let v = m * 10f64.powi(exponent);
                    if v.log10() <= self.high + 1e-9 {
                        ticks.push(v);
                    }
                }
            }
            ticks
        } else {
            let step = nice_step(self.high - self.low);
            let n = ((self.high - self.low) / step).round() as i32;
            (0..=n).map(|k| self.low + f64::from(k) * step).collect()
        }
    }
}

/// A round tick step that cuts `span` into 4 to 10 parts.
fn nice_step(span: f64) -> f64 {
    let raw = span / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&step| step >= raw).unwrap_or(10.0 * magnitude)
}

/// A tick's label: no more digits than it needs.
fn tick_label(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0".to_owned()
    } else if !(1e-3..1e5).contains(&magnitude) {
        format!("{value:.0e}")
    } else if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{}", (value * 1000.0).round() / 1000.0)
    }
}

/// Renders `chart` as an SVG document: the points of each series as dots
/// (joined by a line if asked), labelled if labels are given, a legend.
pub fn xy_chart(chart: &XyChart) -> String {
    let usable = |log: bool, v: f64| v.is_finite() && (!log || v > 0.0);
    let points = || chart.series.iter().flat_map(|series| series.points.iter().copied());
    let x_axis = Axis::over(points().filter(|&(_, y)| usable(chart.y_log, y)).map(|(x, _)| x), chart.x_log);
    let y_axis = Axis::over(points().filter(|&(x, _)| usable(chart.x_log, x)).map(|(_, y)| y), chart.y_log);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let height = HEIGHT + 16.0 * chart.notes.len() as f64;
    let x = |v: f64| LEFT + x_axis.fraction(v) * plot_w;
    let y = |v: f64| TOP + plot_h - y_axis.fraction(v) * plot_h;

    // Writing to a String cannot fail; the results are ignored for that reason.
    let mut svg = open_svg(height, &chart.title);
    let (x0, y0) = (LEFT, TOP + plot_h);
    axes(&mut svg, TOP, y0, plot_w);
    for tick in x_axis.ticks() {
        let tx = x(tick);
        let _ = writeln!(svg, r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{y0}" stroke="#eee"/>"##);
        let _ =
            writeln!(svg, r#"<text x="{tx:.1}" y="{}" text-anchor="middle">{}</text>"#, y0 + 18.0, tick_label(tick));
    }
    for tick in y_axis.ticks() {
        let ty = y(tick);
        let _ = writeln!(svg, r##"<line x1="{x0}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#eee"/>"##, LEFT + plot_w);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            ty + 4.0,
            tick_label(tick)
        );
    }
    x_title(&mut svg, y0, plot_w, escape(&chart.x_label));
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&chart.y_label)
    );

    for (k, series) in chart.series.iter().enumerate() {
        let colour = escape(&series.colour);
        let shown: Vec<(usize, (f64, f64))> = series
            .points
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, (px, py))| usable(chart.x_log, px) && usable(chart.y_log, py))
            .collect();
        if series.joined && shown.len() > 1 {
            let d: Vec<String> = shown
                .iter()
                .enumerate()
                .map(|(n, &(_, (px, py)))| format!("{}{:.2},{:.2}", if n == 0 { 'M' } else { 'L' }, x(px), y(py)))
                .collect();
            let _ = writeln!(svg, r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#, d.join(" "));
        }
        for &(i, (px, py)) in &shown {
            let _ = writeln!(svg, r#"<circle cx="{:.2}" cy="{:.2}" r="3.5" fill="{colour}"/>"#, x(px), y(py));
            if let Some(label) = series.labels.get(i).filter(|label| !label.is_empty()) {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.2}" y="{:.2}" font-size="10" fill="{colour}">{}</text>"#,
                    x(px) + 5.0,
                    y(py) - 5.0,
                    escape(label)
                );
            }
        }
        let ly = TOP + 6.0 + 16.0 * k as f64;
        let lx = LEFT + plot_w - 260.0;
        let _ = writeln!(svg, r#"<circle cx="{}" cy="{ly}" r="3.5" fill="{colour}"/>"#, lx + 12.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, lx + 24.0, ly + 4.0, escape(&series.name));
    }
    for (k, note) in chart.notes.iter().enumerate() {
        let _ =
            writeln!(svg, r##"<text x="{LEFT}" y="{}" fill="#333">{}</text>"##, HEIGHT + 16.0 * k as f64, escape(note));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Rows of spans over one axis: each row a line of filled spans (the
/// times something was on), one row per subject.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRows {
    /// The title above the plot.
    pub title: String,
    /// What the x axis is.
    pub x_label: String,
    /// The axis's range, `(from, to)`.
    pub x_range: (f64, f64),
    /// Tick positions on the axis and their labels.
    pub ticks: Vec<(f64, String)>,
    /// The rows, top to bottom: each a list of `(from, to)` spans.
    pub rows: Vec<Vec<(f64, f64)>>,
    /// The spans' colour (an SVG colour).
    pub colour: String,
    /// Lines of notes under the x axis.
    pub notes: Vec<String>,
}

/// Renders `chart` as an SVG document: a thin band per row, its spans
/// filled, clipped to the axis's range.
pub fn span_rows_chart(chart: &SpanRows) -> String {
    let (from, to) = chart.x_range;
    let span = if to > from { to - from } else { 1.0 };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let height = HEIGHT + 16.0 * chart.notes.len() as f64;
    let x = |v: f64| LEFT + (v.clamp(from, from + span) - from) / span * plot_w;
    let row_h = plot_h / chart.rows.len().max(1) as f64;

    // Writing to a String cannot fail; the results are ignored for that reason.
    let mut svg = open_svg(height, &chart.title);
    let colour = escape(&chart.colour);
    for (i, row) in chart.rows.iter().enumerate() {
        let top = TOP + i as f64 * row_h;
        for &(start, end) in row {
            let (x1, x2) = (x(start), x(end));
            if x2 > x1 {
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x1:.2}" y="{top:.2}" width="{:.2}" height="{:.2}" fill="{colour}"/>"#,
                    x2 - x1,
                    (row_h * 0.8).max(0.5)
                );
            }
        }
    }
    let y0 = TOP + plot_h;
    let _ = writeln!(svg, r#"<line x1="{LEFT}" y1="{y0}" x2="{}" y2="{y0}" stroke="black"/>"#, LEFT + plot_w);
    for (at, label) in &chart.ticks {
        let tx = x(*at);
        x_tick(&mut svg, tx, y0, escape(label));
    }
    x_title(&mut svg, y0, plot_w, escape(&chart.x_label));
    for (k, note) in chart.notes.iter().enumerate() {
        let _ =
            writeln!(svg, r##"<text x="{LEFT}" y="{}" fill="#333">{}</text>"##, HEIGHT + 16.0 * k as f64, escape(note));
    }
    svg.push_str("</svg>\n");
    svg
}

/// The SVG path of a step line: one point for the first step, two for
/// each later one (the old power up to its time, then the new power).
fn step_path(steps: &[(f64, f64)], x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut previous: Option<f64> = None;
    for &(t, w) in steps {
        match previous {
            None => {
                let _ = write!(d, "M{:.2},{:.2}", x(t), y(w));
            }
            Some(old) => {
                let _ = write!(d, " L{:.2},{:.2} L{:.2},{:.2}", x(t), y(old), x(t), y(w));
            }
        }
        previous = Some(w);
    }
    d
}

/// Escapes text for an SVG text node.
/// An SVG document of `height` (the charts' `WIDTH`) on a white ground
/// with `title` centred at the top, to which a chart adds its lines.
fn open_svg(height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    svg
}

/// A plot's two axes: the x axis along `bottom`, `plot_w` wide from
/// `LEFT`, the y axis from `top` down to it.
fn axes(svg: &mut String, top: f64, bottom: f64, plot_w: f64) {
    let _ = writeln!(svg, r#"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="black"/>"#, LEFT + plot_w);
    let _ = writeln!(svg, r#"<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="black"/>"#);
}

/// A tick on an x axis along `axis_y` at `tx`, with its label below.
fn x_tick(svg: &mut String, tx: f64, axis_y: f64, label: impl std::fmt::Display) {
    let _ = writeln!(svg, r#"<line x1="{tx:.1}" y1="{axis_y}" x2="{tx:.1}" y2="{}" stroke="black"/>"#, axis_y + 4.0);
    let _ = writeln!(svg, r#"<text x="{tx:.1}" y="{}" text-anchor="middle">{label}</text>"#, axis_y + 18.0);
}

/// The title of an x axis along `axis_y`, `plot_w` wide, centred below
/// its tick labels.
fn x_title(svg: &mut String, axis_y: f64, plot_w: f64, title: impl std::fmt::Display) {
    let _ =
        writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{title}</text>"#, LEFT + plot_w / 2.0, axis_y + 36.0);
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnergyLedger, PowerProfile, PowerState};

    #[test]
    fn a_ledger_trace_renders_with_one_point_per_step_edge() {
        let mut ledger = EnergyLedger::new(PowerProfile::TABLE_1);
        ledger.begin(PowerState::Idle, 0.0).unwrap();
        ledger.enter(PowerState::Suspending, 6.0).unwrap();
        ledger.enter(PowerState::Asleep, 14.38).unwrap();
        ledger.enter(PowerState::Resuming, 300.0).unwrap();
        ledger.enter(PowerState::Serving, 308.58).unwrap();
        let report = ledger.end(310.0).unwrap();
        let trace = ledger.power_trace();
        assert_eq!(trace.len(), 6);
        let labels =
            ChartLabels { title: "a <test> & more".into(), idle_watts: 61.4, saved_percent: report.saved_percent };
        let svg = power_chart(&trace, &labels);

        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt; &amp; more"));
        assert!(svg.contains(&format!("{:.1}% saved vs idle", report.saved_percent)));
        let path = svg.lines().find(|line| line.starts_with("<path ")).unwrap();
        let d = path.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        let points = d.matches(['M', 'L']).count();
        assert_eq!(points, 2 * trace.len() - 1);
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }

    #[test]
    fn a_timeline_has_a_panel_per_host_on_one_time_axis_and_its_spans() {
        let desktop = TimelinePanel {
            host: "desktop".into(),
            source: "its ledger".into(),
            steps: vec![(0.0, 61.4), (10.0, 1.95), (40.0, 121.72), (42.0, 61.4), (60.0, 61.4)],
            baseline: Some((61.4, "idle 61.4 W".into())),
            colour: "#c0392b".into(),
        };
        let server = TimelinePanel {
            host: "server".into(),
            source: "the paper's 150.7 W & <more>".into(),
            steps: vec![(0.0, 150.7), (60.0, 150.7)],
            baseline: None,
            colour: "#2c6fbb".into(),
        };
        let span = TimelineSpan { from_secs: 8.0, to_secs: 50.0, label: "VM on the server".into() };
        let timeline = Timeline {
            title: "t".into(),
            panels: vec![desktop, server],
            spans: vec![span],
            notes: vec!["a note".into()],
        };
        let svg = power_timeline(&timeline);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.lines().filter(|line| line.starts_with("<path ")).count(), 2);
        let first = svg.lines().find(|line| line.starts_with("<path ")).unwrap();
        assert_eq!(first.matches(['M', 'L']).count(), 2 * 5 - 1);
        assert_eq!(svg.matches("VM on the server").count(), 1);
        assert!(svg.contains("the paper's 150.7 W &amp; &lt;more&gt;"));
        assert!(svg.contains("time (seconds)") && svg.contains("a note"));
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
        // An empty timeline still renders.
        let empty = power_timeline(&Timeline { title: String::new(), panels: vec![], spans: vec![], notes: vec![] });
        assert!(empty.contains("</svg>"));
    }

    #[test]
    fn an_xy_chart_has_a_dot_per_shown_point_and_a_legend_per_series() {
        let series = |name: &str, points: Vec<(f64, f64)>, joined| XySeries {
            name: name.into(),
            colour: "#c0392b".into(),
            labels: points.iter().map(|(x, _)| format!("{x} min")).collect(),
            points,
            joined,
        };
        let chart = XyChart {
            title: "energy & <latency>".into(),
            x_label: "latency (s)".into(),
            y_label: "kWh".into(),
            x_log: true,
            y_log: false,
            // The log axis leaves the point at x = 0 out.
            series: vec![
                series("full", vec![(1.0, 5.0), (300.0, 8.0), (0.0, 9.0)], true),
                series("partial", vec![(2.0, 6.0)], false),
            ],
            notes: vec!["a note".into()],
        };
        let svg = xy_chart(&chart);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("energy &amp; &lt;latency&gt;") && svg.contains("a note"));
        // Three points shown, two legend dots.
        assert_eq!(svg.matches("<circle ").count(), 3 + 2);
        assert_eq!(svg.lines().filter(|line| line.starts_with("<path ")).count(), 1);
        // Decades 10^0..10^3 on the log axis.
        for tick in [">1<", ">10<", ">100<", ">1000<"] {
            assert!(svg.contains(tick), "{tick}");
        }
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
        let empty = xy_chart(&XyChart { series: vec![], ..chart });
        assert!(empty.contains("</svg>"));
    }

    #[test]
    fn span_rows_fill_each_span_clipped_to_the_axis() {
        let chart = SpanRows {
            title: "days & <nights>".into(),
            x_label: "time of day".into(),
            x_range: (0.0, 10.0),
            ticks: vec![(0.0, "0".into()), (10.0, "10".into())],
            // The last span lies outside the axis and is not drawn.
            rows: vec![vec![(1.0, 2.0), (3.0, 12.0)], vec![], vec![(20.0, 30.0)]],
            colour: "black".into(),
            notes: vec![],
        };
        let svg = span_rows_chart(&chart);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("days &amp; &lt;nights&gt;"));
        // The background and two spans.
        assert_eq!(svg.matches("<rect ").count(), 1 + 2);
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }

    #[test]
    fn an_empty_trace_still_renders() {
        let svg = power_chart(&[], &ChartLabels { title: String::new(), idle_watts: 61.4, saved_percent: 0.0 });
        assert!(svg.contains("<svg ") && svg.contains("</svg>"));
    }
}
