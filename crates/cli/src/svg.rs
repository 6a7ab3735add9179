//! A small SVG line chart: axes with labelled ticks, one polyline per series, vertical markers
//! and a legend. The caller chooses the coordinates (a log scale is the caller's transform of
//! its values) and the tick labels; this module only draws.
//!
//! Invariant: the output is a complete, self-contained SVG document that depends on nothing but
//! the chart given (no time, no randomness), so it can be compared in tests.

use std::fmt::Write as _;

/// One line of the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend text.
    pub label: String,
    /// `(x, y)` in chart coordinates, drawn in the order given.
    pub points: Vec<(f64, f64)>,
}

/// A vertical line across the plot at `x`, labelled at its top.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// Where, in chart coordinates.
    pub x: f64,
    /// The text next to it.
    pub label: String,
}

/// What to draw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// The text under the x axis.
    pub x_label: String,
    /// The text beside the y axis.
    pub y_label: String,
    /// `(x, label)` ticks on the x axis; they also fix the x range.
    pub x_ticks: Vec<(f64, String)>,
    /// `(y, label)` ticks on the y axis, with grid lines; they also fix the y range.
    pub y_ticks: Vec<(f64, String)>,
    /// The lines.
    pub series: Vec<Series>,
    /// The vertical markers.
    pub markers: Vec<Marker>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const BOTTOM: f64 = 60.0;
const TOP: f64 = 40.0;
const LEGEND: f64 = 240.0;

fn range(ticks: &[(f64, String)]) -> (f64, f64) {
    let lo = ticks.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let hi = ticks.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// The chart as an SVG document. Series and markers take colours in order (a marker the
/// colour of the series with the same index).
pub fn line_chart(c: &Chart) -> String {
    let (x0, x1) = range(&c.x_ticks);
    let (y0, y1) = range(&c.y_ticks);
    let right = WIDTH - LEGEND;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (right - LEFT);
    let sy = |y: f64| HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - BOTTOM - TOP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"22\" font-size=\"15\">{}</text>",
        escape(&c.title)
    );
    let base = HEIGHT - BOTTOM;
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"black\"/>\n<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\" stroke=\"black\"/>"
    );
    for (x, label) in &c.x_ticks {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(*x),
            base + 18.0,
            escape(label)
        );
    }
    for (y, label) in &c.y_ticks {
        let py = sy(*y);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{right}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            py + 4.0,
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>",
        (LEFT + right) / 2.0,
        HEIGHT - 18.0,
        escape(&c.x_label),
        (TOP + base) / 2.0,
        (TOP + base) / 2.0,
        escape(&c.y_label)
    );
    for (i, m) in c.markers.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let x = sx(m.x);
        // Right of the line in the plot's left half, left of it in the right half, so that
        // the label stays clear of the legend.
        let (tx, anchor) = if x < (LEFT + right) / 2.0 {
            (x + 4.0, "start")
        } else {
            (x - 4.0, "end")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{base}\" stroke=\"{colour}\" stroke-dasharray=\"4,4\"/>\n<text x=\"{tx:.1}\" y=\"{:.1}\" fill=\"{colour}\" text-anchor=\"{anchor}\">{}</text>",
            TOP + 14.0 + 14.0 * i as f64,
            escape(&m.label)
        );
    }
    for (i, ser) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
            points.join(" "),
            right + 15.0,
            right + 45.0,
            right + 52.0,
            ly + 4.0,
            escape(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_its_series_markers_and_escaped_text() {
        let c = Chart {
            title: "a < b".into(),
            x_ticks: vec![(0.0, "0".into()), (10.0, "10".into())],
            y_ticks: vec![(0.0, "0%".into()), (1.0, "100%".into())],
            series: vec![Series {
                label: "one".into(),
                points: vec![(0.0, 0.0), (10.0, 1.0)],
            }],
            markers: vec![Marker {
                x: 5.0,
                label: "knee".into(),
            }],
            ..Chart::default()
        };
        let svg = line_chart(&c);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt; b"));
        // The series spans the plot: from the origin to the top right corner.
        assert!(svg.contains(&format!(
            "points=\"{LEFT:.1},{:.1} {:.1},{TOP:.1}\"",
            HEIGHT - BOTTOM,
            WIDTH - LEGEND
        )));
        // The marker sits in the middle.
        assert!(svg.contains(&format!("x1=\"{:.1}\"", (LEFT + WIDTH - LEGEND) / 2.0)));
        assert!(svg.contains(">knee</text>"));
    }
}
