//! A small SVG line chart: axes with labelled ticks and titles, one polyline per series with a
//! symbol at every point, vertical markers and a legend. The caller chooses the coordinates (a
//! log scale is the caller's transform of its values; [`decade_ticks`] labels one) and the tick
//! labels; this module only draws.
//!
//! Invariants:
//! - the output is a complete, self-contained SVG document that depends on nothing but the
//!   chart given (no time, no randomness), so it can be compared in tests;
//! - every series stays visible where lines coincide: each point carries a hollow symbol, and
//!   by default series differ in colour and symbol both;
//! - the default colours are the Okabe–Ito palette (distinct under the common colour-vision
//!   deficiencies), its yellow last because it fades on white.

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

/// The shape drawn, hollow, at every point of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symbol {
    /// ○
    Circle,
    /// □
    Square,
    /// △
    Triangle,
    /// ◇
    Diamond,
    /// ▽
    TriangleDown,
    /// ×
    Cross,
    /// +
    Plus,
}

/// The symbols series take in order by default.
pub const SYMBOLS: [Symbol; 7] = [
    Symbol::Circle,
    Symbol::Square,
    Symbol::Triangle,
    Symbol::Diamond,
    Symbol::TriangleDown,
    Symbol::Cross,
    Symbol::Plus,
];

/// The Okabe–Ito palette (Okabe and Ito, "Color Universal Design", 2002), in the order series
/// take it: blue, orange, bluish green, vermillion, reddish purple, sky blue, black, yellow.
pub const OKABE_ITO: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
];

/// How one series is drawn; `None` fields take the defaults of its index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Style {
    /// The stroke colour (an SVG colour).
    pub colour: Option<String>,
    /// An SVG `stroke-dasharray` (`"6,3"`); solid when `None`.
    pub dash: Option<String>,
    /// The point symbol.
    pub symbol: Option<Symbol>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const BOTTOM: f64 = 60.0;
const TOP: f64 = 40.0;
const LEGEND: f64 = 240.0;
/// Half the width of a point symbol.
const R: f64 = 4.5;

fn range(ticks: &[(f64, String)]) -> (f64, f64) {
    let lo = ticks.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let hi = ticks.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Ticks for a log10 axis: one per power of ten from `10^floor(lo)` to `10^ceil(hi)`, where
/// `lo` and `hi` are already log10 values; `label` names each tick from its value (not its
/// logarithm). At least two ticks, so that the axis has a range.
pub fn decade_ticks(lo: f64, hi: f64, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi >= lo {
        (lo.floor(), hi.ceil())
    } else {
        (0.0, 1.0)
    };
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let mut ticks = Vec::new();
    let mut e = lo;
    while e <= hi {
        ticks.push((e, label(10f64.powf(e))));
        e += 1.0;
    }
    ticks
}

/// The chart as an SVG document, every series in its default style: colours from
/// [`OKABE_ITO`] and symbols from [`SYMBOLS`] in order, solid lines; a marker takes the colour
/// of the series with the same index.
pub fn line_chart(c: &Chart) -> String {
    line_chart_styled(c, &[])
}

/// The chart with series `i` drawn in `styles[i]` (defaults for what it leaves `None`, and for
/// series beyond `styles`). A marker takes the colour of the series with the same index.
pub fn line_chart_styled(c: &Chart, styles: &[Style]) -> String {
    let style = |i: usize| {
        let s = styles.get(i);
        let colour = s
            .and_then(|s| s.colour.clone())
            .unwrap_or_else(|| OKABE_ITO[i % OKABE_ITO.len()].to_string());
        let dash = s.and_then(|s| s.dash.clone()).unwrap_or_default();
        let symbol = s
            .and_then(|s| s.symbol)
            .unwrap_or(SYMBOLS[i % SYMBOLS.len()]);
        (colour, dash, symbol)
    };
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
        let (colour, _, _) = style(i);
        let x = sx(m.x);
        // Right of the line in the plot's left half, left of it in the right half, so that
        // the label stays clear of the legend; in the right half at mid-height, where a curve
        // that rose on the left (a smaller reach) has already passed above.
        let (tx, anchor, ty) = if x < (LEFT + right) / 2.0 {
            (x + 4.0, "start", TOP + 14.0 + 14.0 * i as f64)
        } else {
            (x - 4.0, "end", (TOP + base) / 2.0 + 14.0 * i as f64)
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{base}\" stroke=\"{colour}\" stroke-dasharray=\"4,4\"/>\n<text x=\"{tx:.1}\" y=\"{:.1}\" fill=\"{colour}\" text-anchor=\"{anchor}\">{}</text>",
            ty,
            escape(&m.label)
        );
    }
    for (i, ser) in c.series.iter().enumerate() {
        let (colour, dash, symbol) = style(i);
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        let points: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash_attr} points=\"{}\"/>",
            points.join(" "),
        );
        for &(x, y) in &ser.points {
            s += &symbol_svg(symbol, sx(x), sy(y), &colour);
        }
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash_attr}/>{}<text x=\"{}\" y=\"{}\">{}</text>",
            right + 15.0,
            right + 45.0,
            symbol_svg(symbol, right + 30.0, ly, &colour).trim_end(),
            right + 52.0,
            ly + 4.0,
            escape(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A hollow `symbol` centred on (x, y), one line of SVG.
fn symbol_svg(symbol: Symbol, x: f64, y: f64, colour: &str) -> String {
    let stroke = format!("fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"");
    let poly = |pts: &[(f64, f64)]| {
        let p: Vec<String> = pts
            .iter()
            .map(|(dx, dy)| format!("{:.1},{:.1}", x + dx, y + dy))
            .collect();
        format!("<polygon {stroke} points=\"{}\"/>\n", p.join(" "))
    };
    let path = |d: String| format!("<path {stroke} d=\"{d}\"/>\n");
    match symbol {
        Symbol::Circle => format!("<circle {stroke} cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{R}\"/>\n"),
        Symbol::Square => poly(&[(-R, -R), (R, -R), (R, R), (-R, R)]),
        Symbol::Triangle => poly(&[(0.0, -1.3 * R), (1.2 * R, R), (-1.2 * R, R)]),
        Symbol::TriangleDown => poly(&[(0.0, 1.3 * R), (1.2 * R, -R), (-1.2 * R, -R)]),
        Symbol::Diamond => poly(&[
            (0.0, -1.4 * R),
            (1.4 * R, 0.0),
            (0.0, 1.4 * R),
            (-1.4 * R, 0.0),
        ]),
        Symbol::Cross => path(format!(
            "M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}",
            x - R,
            y - R,
            x + R,
            y + R,
            x - R,
            y + R,
            x + R,
            y - R
        )),
        Symbol::Plus => path(format!(
            "M{:.1},{y:.1}L{:.1},{y:.1}M{x:.1},{:.1}L{x:.1},{:.1}",
            x - 1.3 * R,
            x + 1.3 * R,
            y - 1.3 * R,
            y + 1.3 * R
        )),
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(label: &str, points: &[(f64, f64)]) -> Series {
        Series {
            label: label.into(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn a_chart_has_its_series_markers_and_escaped_text() {
        let c = Chart {
            title: "a < b".into(),
            x_ticks: vec![(0.0, "0".into()), (10.0, "10".into())],
            y_ticks: vec![(0.0, "0%".into()), (1.0, "100%".into())],
            series: vec![one("one", &[(0.0, 0.0), (10.0, 1.0)])],
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

    #[test]
    fn default_series_differ_in_okabe_ito_colour_and_symbol_with_one_symbol_per_point() {
        let c = Chart {
            x_ticks: vec![(0.0, "0".into()), (2.0, "2".into())],
            y_ticks: vec![(0.0, "0".into()), (1.0, "1".into())],
            // Three series on the very same points: only their symbols tell them apart.
            series: (0..3)
                .map(|i| one(&format!("s{i}"), &[(0.0, 0.5), (1.0, 0.5), (2.0, 0.5)]))
                .collect(),
            ..Chart::default()
        };
        let svg = line_chart(&c);
        for (i, colour) in OKABE_ITO.iter().take(3).enumerate() {
            assert!(
                svg.contains(&format!("<polyline fill=\"none\" stroke=\"{colour}\"")),
                "series {i} not in {colour}"
            );
        }
        // Series 0: three points and the legend sample, circles; series 1 squares (polygons
        // of four corners); series 2 triangles.
        assert_eq!(svg.matches("<circle ").count(), 4);
        let polygons: Vec<&str> = svg.split("<polygon ").skip(1).collect();
        let corners = |p: &&str| {
            let pts = p.split("points=\"").nth(1).unwrap();
            pts[..pts.find('"').unwrap()].split(' ').count()
        };
        assert_eq!(polygons.iter().filter(|l| corners(l) == 4).count(), 4);
        assert_eq!(polygons.iter().filter(|l| corners(l) == 3).count(), 4);
        assert!(!svg.contains("#1f77b4"), "the old palette is gone");
    }

    #[test]
    fn styles_set_colour_dash_and_symbol_and_markers_follow_their_series() {
        let c = Chart {
            x_ticks: vec![(0.0, "0".into()), (1.0, "1".into())],
            y_ticks: vec![(0.0, "0".into()), (1.0, "1".into())],
            series: vec![one("a", &[(0.0, 0.0)]), one("b", &[(1.0, 1.0)])],
            markers: vec![
                Marker {
                    x: 0.3,
                    label: "m0".into(),
                },
                Marker {
                    x: 0.7,
                    label: "m1".into(),
                },
            ],
            ..Chart::default()
        };
        let styles = [Style {
            colour: Some("#123456".into()),
            dash: Some("6,3".into()),
            symbol: Some(Symbol::Cross),
        }];
        let svg = line_chart_styled(&c, &styles);
        assert!(svg.contains("stroke=\"#123456\" stroke-width=\"2\" stroke-dasharray=\"6,3\""));
        // The one-point series is still drawn: its symbol (a cross is a path) and its legend.
        assert_eq!(
            svg.matches("<path fill=\"none\" stroke=\"#123456\"")
                .count(),
            2
        );
        // Series 1 keeps its defaults: the second colour, squares, a solid line.
        assert!(svg.contains(&format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=",
            OKABE_ITO[1]
        )));
        assert!(svg.contains(&format!("fill=\"{}\" text-anchor=\"end\">m1", OKABE_ITO[1])));
        assert!(svg.contains("fill=\"#123456\" text-anchor=\"start\">m0"));
    }

    #[test]
    fn decade_ticks_cover_the_range_in_powers_of_ten() {
        let t = decade_ticks(-2.5, 0.3, |v| format!("{v}"));
        let at: Vec<f64> = t.iter().map(|t| t.0).collect();
        assert_eq!(at, [-3.0, -2.0, -1.0, 0.0, 1.0]);
        assert_eq!(t[0].1, "0.001");
        assert_eq!(t[4].1, "10");
        // One value still gives an axis of one decade; nonsense gives 1 to 10.
        assert_eq!(decade_ticks(2.0, 2.0, |_| String::new()).len(), 2);
        assert_eq!(decade_ticks(f64::NAN, 1.0, |_| String::new()).len(), 2);
    }
}
