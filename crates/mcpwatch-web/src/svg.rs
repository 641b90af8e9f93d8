//! Charts drawn on the server as inline SVG: sparklines and small multi-line charts. Colours
//! come from CSS classes (the policy forbids inline style); numbers are the only input.

use maud::{html, Markup};

/// The points of a polyline through `values`, scaled into `w`×`h` with `max` at the top.
fn points(values: &[f64], w: f64, h: f64, max: f64) -> String {
    let n = values.len();
    if n == 0 {
        return String::new();
    }
    let step = if n > 1 { w / (n - 1) as f64 } else { 0.0 };
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let y = if max > 0.0 {
            h - (v / max) * (h - 2.0) - 1.0
        } else {
            h - 1.0
        };
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{:.1},{:.1}", i as f64 * step, y));
    }
    out
}

fn max_of<'a>(series: impl Iterator<Item = &'a f64>) -> f64 {
    series
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

/// A sparkline, 120×24, with a text alternative for screen readers.
pub fn sparkline(values: &[f64], label: &str) -> Markup {
    let (w, h) = (120.0, 24.0);
    let max = max_of(values.iter());
    html! {
        svg.spark viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) role="img" aria-label=(label) {
            polyline points=(points(values, w, h, max)) fill="none";
        }
    }
}

/// One line of a [`chart`]: a CSS class (from a closed set in this crate), a legend label and
/// values, one per bucket.
pub struct Line<'a> {
    /// `l1`…`l4`, chosen by the caller.
    pub class: &'static str,
    /// Legend text.
    pub label: &'a str,
    /// One value per bucket.
    pub values: Vec<f64>,
}

/// A chart of a few lines over the same buckets, with the maximum written on the axis and
/// `start`/`end` labels under it.
pub fn chart(lines: &[Line<'_>], start: &str, end: &str, unit: &dyn Fn(f64) -> String) -> Markup {
    let (w, h) = (600.0, 120.0);
    let max = max_of(lines.iter().flat_map(|l| l.values.iter()));
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {w} {h}")) preserveAspectRatio="none" role="img"
                aria-label=(lines.iter().map(|l| l.label).collect::<Vec<_>>().join(", ")) {
                line.axis x1="0" y1=(h - 0.5) x2=(w) y2=(h - 0.5) {}
                @for l in lines {
                    polyline class=(l.class) points=(points(&l.values, w, h, max)) fill="none" {}
                }
            }
            figcaption {
                span.axis-max { "max " (unit(max)) }
                span.range { (start) " – " (end) }
                @for l in lines {
                    span class=(format!("key {}", l.class)) { (l.label) }
                }
            }
        }
    }
}

/// A horizontal gauge for a percentage (0–100), as SVG so no inline style is needed.
pub fn gauge(percent: f64, label: &str) -> Markup {
    let p = if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let class = if p >= 90.0 {
        "bad"
    } else if p >= 75.0 {
        "warn"
    } else {
        "ok"
    };
    html! {
        svg.gauge viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label=(label) {
            rect.track x="0" y="0" width="100" height="8" {}
            rect class=(class) x="0" y="0" width=(format!("{p:.1}")) height="8" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::points;

    #[test]
    fn points_scale_into_the_box_and_ignore_junk() {
        assert_eq!(points(&[0.0, 10.0], 100.0, 10.0, 10.0), "0.0,9.0 100.0,1.0");
        assert_eq!(
            points(&[f64::NAN, -3.0], 10.0, 10.0, 0.0),
            "0.0,9.0 10.0,9.0"
        );
        assert_eq!(points(&[], 10.0, 10.0, 1.0), "");
    }
}
