//! The Prometheus text exposition format, version 0.0.4: for each metric
//! family a `# HELP` and a `# TYPE` line, then its samples, one per line,
//! `name{label="value",...} number`.

use std::fmt::Write;

use crate::HistogramSnapshot;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (from the daemon's start or the VM's arrival); its name ends in `_total`.
    Counter,
    /// A value now.
    Gauge,
    /// Counts of events by duration: `_bucket`, `_sum` and `_count` samples.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape's text, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    family: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Starts the family `name`; the samples that follow belong to it.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        self.family = name.to_owned();
        self
    }

    /// One sample of the current family (a counter or a gauge). Integers
    /// up to 2^53 are exact.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let name = std::mem::take(&mut self.family);
        self.line(&name, "", labels, None, value);
        self.family = name;
        self
    }

    /// The samples of one histogram of the current family.
    pub fn histogram(&mut self, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) -> &mut Self {
        let name = std::mem::take(&mut self.family);
        let mut cumulative = 0;
        for (i, count) in snapshot.counts.iter().enumerate() {
            cumulative += count;
            let bound = snapshot.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| number(*b));
            self.line(&name, "_bucket", labels, Some(&bound), cumulative as f64);
        }
        self.line(&name, "_sum", labels, None, snapshot.sum_secs);
        self.line(&name, "_count", labels, None, cumulative as f64);
        self.family = name;
        self
    }

    /// The page.
    pub fn into_text(self) -> String {
        self.text
    }

    fn line(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
        self.text.push_str(name);
        self.text.push_str(suffix);
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (label, value)) in all.enumerate() {
            self.text.push(if i == 0 { '{' } else { ',' });
            let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(self.text, "{label}=\"{value}\"");
        }
        if !labels.is_empty() || le.is_some() {
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }
}

/// A sample value as Prometheus reads it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Display never uses an exponent and prints 3.0 as "3".
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut page = Exposition::new();
        page.family("jt_pages_total", Kind::Counter, "Pages.\nFetched \\ served.")
            .sample(&[("vm", "vm1"), ("desktop", "a\"b\\c\nd")], 42.0)
            .sample(&[], 0.5);
        assert_eq!(
            page.into_text(),
            "# HELP jt_pages_total Pages.\\nFetched \\\\ served.\n# TYPE jt_pages_total counter\n\
             jt_pages_total{vm=\"vm1\",desktop=\"a\\\"b\\\\c\\nd\"} 42\njt_pages_total 0.5\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_with_an_infinite_bucket() {
        let snapshot = HistogramSnapshot { bounds: vec![0.001, 0.5], counts: vec![2, 0, 1], sum_secs: 3.25 };
        let mut page = Exposition::new();
        page.family("jt_fetch_seconds", Kind::Histogram, "Fetches.").histogram(&[("vm", "v")], &snapshot);
        assert_eq!(
            page.into_text(),
            "# HELP jt_fetch_seconds Fetches.\n# TYPE jt_fetch_seconds histogram\n\
             jt_fetch_seconds_bucket{vm=\"v\",le=\"0.001\"} 2\njt_fetch_seconds_bucket{vm=\"v\",le=\"0.5\"} 2\n\
             jt_fetch_seconds_bucket{vm=\"v\",le=\"+Inf\"} 3\njt_fetch_seconds_sum{vm=\"v\"} 3.25\n\
             jt_fetch_seconds_count{vm=\"v\"} 3\n"
        );
    }

    #[test]
    fn numbers_as_prometheus_reads_them() {
        assert_eq!(
            [3.0, 0.0001, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e15].map(number),
            ["3", "0.0001", "+Inf", "-Inf", "NaN", "1000000000000000"]
        );
    }
}
