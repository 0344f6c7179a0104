//! The desktop's power over time as an SVG line chart, like the paper's
//! Figure 8: time in minutes across, watts up, the power as a step line, a
//! dashed line at idle power (the baseline) and a legend with the share of
//! energy saved.
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

    let mut svg = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(&labels.title)
    );

    // Axes, ticks and labels.
    let (x0, y0) = (LEFT, TOP + plot_h);
    let _ = writeln!(svg, r#"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="black"/>"#, LEFT + plot_w);
    let _ = writeln!(svg, r#"<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" stroke="black"/>"#);
    for k in 0..=(w_top / 20.0) as u32 {
        let w = f64::from(k) * 20.0;
        let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{w}</text>"#, LEFT - 6.0, y(w) + 4.0);
    }
    let minutes = (t_end - t_start) / 60.0;
    let tick_min = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0].into_iter().find(|&m| minutes / m <= 12.0).unwrap_or(120.0);
    let mut m = 0.0;
    while m <= minutes {
        let tx = x(t_start + m * 60.0);
        let _ = writeln!(svg, r#"<line x1="{tx:.1}" y1="{y0}" x2="{tx:.1}" y2="{}" stroke="black"/>"#, y0 + 4.0);
        let _ = writeln!(svg, r#"<text x="{tx:.1}" y="{}" text-anchor="middle">{m}</text>"#, y0 + 18.0);
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

/// Escapes text for an SVG text node.
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
    fn an_empty_trace_still_renders() {
        let svg = power_chart(&[], &ChartLabels { title: String::new(), idle_watts: 61.4, saved_percent: 0.0 });
        assert!(svg.contains("<svg ") && svg.contains("</svg>"));
    }
}
