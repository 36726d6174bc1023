//! Line and scatter charts as SVG text, drawn with plotters: `loss.svg`, `pred_vs_true.svg`,
//! the charts of `report.html` and of `losskit compare`. Axes run between round ticks
//! ([`nice_ticks`]), labelled with just the decimals the tick step needs; the legend has its own
//! column, as wide as its longest label, so no label is cut or drawn over a line.

use plotters::{
    element::{Circle, PathElement, Text},
    prelude::{ChartBuilder, IntoDrawingArea, LineSeries, SVGBackend},
    style::{Color, RGBColor, ShapeStyle, WHITE},
};

/// One line (or scatter) of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend text.
    pub label: String,
    /// A colour as `#rrggbb`.
    pub color: String,
    /// The points (x, y); a non-finite value breaks the line there.
    pub points: Vec<(f64, f64)>,
    /// Draw a dot on each point.
    pub dots: bool,
    /// Join the points with a line (off: a scatter plot).
    pub line: bool,
    /// The stroke width in pixels.
    pub width: f64,
}

const PLOT_WIDTH: u32 = 540;
const HEIGHT: u32 = 420;
const FONT: &str = "sans-serif";
/// plotters writes a font size of `size / 1.24` into the SVG: these give 16, 13 and 12 pixels.
const TITLE_SIZE: f64 = 19.84;
const DESC_SIZE: f64 = 16.12;
const TEXT_SIZE: f64 = 14.88;

/// A chart of `series` as SVG text.
pub fn svg_plot(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut svg = String::new();
    if let Err(error) = draw(&mut svg, title, x_label, y_label, series) {
        // Drawing into a string cannot fail on I/O; say so in the picture if it ever does.
        svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{PLOT_WIDTH}\" height=\"{HEIGHT}\"><text x=\"10\" y=\"20\">cannot draw {}: {}</text></svg>\n",
            escape(title),
            escape(&error)
        );
    }
    svg
}

fn draw(
    svg: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let failed = |error: &dyn std::fmt::Display| error.to_string();
    let longest = series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    let legend_width = (longest as u32 * 7 + 50).clamp(120, 640);
    let root =
        SVGBackend::with_string(svg, (PLOT_WIDTH + legend_width, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let (plot, legend) = root.split_horizontally(PLOT_WIDTH);
    let (x_ticks, x_decimals) = axis(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
    );
    let (y_ticks, y_decimals) = axis(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
    );
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FONT, TITLE_SIZE))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(
            x_ticks[0]..x_ticks[x_ticks.len() - 1],
            y_ticks[0]..y_ticks[y_ticks.len() - 1],
        )
        .map_err(|e| failed(&e))?;
    let x_format = |v: &f64| format!("{v:.x_decimals$}");
    let y_format = |v: &f64| format!("{v:.y_decimals$}");
    chart
        .configure_mesh()
        .x_labels(x_ticks.len())
        .y_labels(y_ticks.len())
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT, TEXT_SIZE))
        .axis_desc_style((FONT, DESC_SIZE))
        .bold_line_style(RGBColor(224, 224, 224))
        .x_max_light_lines(0)
        .y_max_light_lines(0)
        .draw()
        .map_err(|e| failed(&e))?;
    for s in series {
        let color = rgb(&s.color);
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: false,
            stroke_width: s.width.round().max(1.0) as u32,
        };
        if s.line {
            for run in finite_runs(&s.points) {
                chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err(|e| failed(&e))?;
            }
        }
        if s.dots {
            let radius = if s.line { 3 } else { 2 };
            chart
                .draw_series(
                    s.points
                        .iter()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .map(|&point| Circle::new(point, radius, color.filled())),
                )
                .map_err(|e| failed(&e))?;
        }
    }
    for (i, s) in series.iter().enumerate() {
        let y = 52 + 20 * i as i32;
        let style = ShapeStyle {
            color: rgb(&s.color).to_rgba(),
            filled: true,
            stroke_width: 3,
        };
        legend
            .draw(&PathElement::new(vec![(4, y), (24, y)], style))
            .map_err(|e| failed(&e))?;
        legend
            .draw(&Text::new(s.label.clone(), (30, y - 7), (FONT, TEXT_SIZE)))
            .map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

/// The ticks and decimals of an axis over `values` (non-finite ones ignored); a loss or metric
/// axis (`from_zero`) starts at zero unless a value is negative.
fn axis(values: impl Iterator<Item = f64>, from_zero: bool) -> (Vec<f64>, usize) {
    let (mut low, mut high) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if low > high {
        (low, high) = (0.0, 1.0);
    }
    if from_zero {
        low = low.min(0.0);
    }
    if high <= low {
        high = low + 1.0;
    }
    nice_ticks(low, high)
}

/// The stretches of `points` between non-finite values.
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    points
        .split(|(x, y)| !x.is_finite() || !y.is_finite())
        .filter(|run| !run.is_empty())
        .map(<[_]>::to_vec)
        .collect()
}

/// `#rrggbb` as a colour (grey for anything else).
fn rgb(hex: &str) -> RGBColor {
    let channel = |i: usize| {
        hex.get(1 + 2 * i..3 + 2 * i)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    match (hex.len(), channel(0), channel(1), channel(2)) {
        (7, Some(r), Some(g), Some(b)) => RGBColor(r, g, b),
        _ => RGBColor(128, 128, 128),
    }
}

/// Round tick values covering `[low, high]`: steps of 1, 2 or 5 times a power of ten, about
/// five of them, and the decimals that show the step exactly.
pub fn nice_ticks(low: f64, high: f64) -> (Vec<f64>, usize) {
    let range = (high - low).max(f64::MIN_POSITIVE);
    let rough = range / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= rough)
        .unwrap_or(10.0 * power);
    let first = (low / step).floor();
    let last = (high / step).ceil().max(first + 1.0);
    let ticks = (0..=(last - first) as usize)
        .map(|i| (first + i as f64) * step)
        .collect();
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (ticks, decimals)
}

/// Text for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 95.6),
            (vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0], 0)
        );
        let (ticks, decimals) = nice_ticks(0.0, 0.683);
        assert_eq!(decimals, 1);
        assert_eq!(ticks.len(), 5);
        assert!((ticks[4] - 0.8).abs() < 1e-12);
        let (ticks, _) = nice_ticks(1.0, 240.0);
        assert_eq!(ticks, [0.0, 50.0, 100.0, 150.0, 200.0, 250.0]);
    }

    /// The text elements of an SVG, in document order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn the_chart_has_round_tick_labels_every_legend_label_and_one_line_per_finite_run() {
        let series = [
            Series {
                label: "train loss, a label far longer than the old legend column allowed".into(),
                color: "#08519c".into(),
                points: vec![
                    (1.0, 0.683),
                    (2.0, 0.41),
                    (3.0, f64::NAN),
                    (4.0, 0.2),
                    (5.0, 0.1),
                ],
                dots: true,
                line: true,
                width: 2.0,
            },
            Series {
                label: "a & b <validation>".into(),
                color: "#d94801".into(),
                points: vec![(1.0, 0.7), (5.0, 0.3)],
                dots: false,
                line: true,
                width: 1.0,
            },
        ];
        let svg = svg_plot("loss", "step", "loss", &series);
        assert!(svg.starts_with("<svg"), "{svg}");
        let texts = texts(&svg);
        for label in ["0.0", "0.2", "0.4", "0.6", "0.8"] {
            assert!(
                texts.iter().any(|t| t == label),
                "y tick {label}: {texts:?}"
            );
        }
        assert!(
            !texts
                .iter()
                .any(|t| t.contains("0.683") || t.contains("0.30000")),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "step") && texts.iter().any(|t| t == "loss"));
        assert!(
            texts.contains(&series[0].label),
            "the long label whole: {texts:?}"
        );
        assert!(
            texts.contains(&"a &amp; b &lt;validation&gt;".to_string()),
            "{texts:?}"
        );
        // The NaN splits the first line in two; the second is one line; each has a legend line.
        let lines = |stroke: &str| svg.matches(&format!("stroke=\"{stroke}\"")).count();
        assert_eq!(lines("#08519C\" stroke-width=\"2"), 2, "{svg}");
        assert_eq!(lines("#D94801\" stroke-width=\"1"), 1, "{svg}");
        assert_eq!(
            lines("#08519C\" stroke-width=\"3") + lines("#D94801\" stroke-width=\"3"),
            2
        );
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        let width: u32 = svg
            .split("width=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            width >= PLOT_WIDTH + 7 * series[0].label.len() as u32,
            "{width}"
        );
    }
}
