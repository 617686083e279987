//! A builder's series drawn as SVG charts by the master (plotters' SVG
//! backend, no fonts loaded: the browser renders the text):
//! `GET /api/v1/builders/{name}/charts/{chart}.svg` with `duration`,
//! `tests`, `warnings` or `figure-NAME` (docs/api.md, "Charts"). Each
//! build of the series is one marker (`<circle>`) on each line, at its
//! build number.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use plotters::prelude::*;

use super::series::{limit, points, Point, SeriesQuery};
use crate::api_error::{ApiError, ApiResult as R};
use crate::state::Shared;

const SIZE: (u32, u32) = (640, 220);

/// One line of a chart: its label, colour and a value per build (None: the
/// build has no value, no marker).
struct Line {
    label: String,
    colour: RGBColor,
    values: Vec<(u64, f64)>,
}

/// The lines of a chart and the unit of its y axis.
fn lines(chart: &str, points: &[Point]) -> Option<(String, Vec<Line>)> {
    let line = |label: &str, colour, f: &dyn Fn(&Point) -> Option<f64>| Line {
        label: label.to_string(),
        colour,
        values: points
            .iter()
            .filter_map(|p| f(p).map(|v| (p.number, v)))
            .collect(),
    };
    Some(match chart {
        "duration" => (
            "seconds".into(),
            vec![line("build duration", BLUE, &|p| {
                Some(p.duration_ms as f64 / 1000.0)
            })],
        ),
        "warnings" => (
            "warnings".into(),
            vec![line("warnings", RGBColor(200, 140, 0), &|p| {
                Some(p.warnings as f64)
            })],
        ),
        "tests" => (
            "tests".into(),
            vec![
                line("passed", RGBColor(0, 140, 60), &|p| {
                    p.tests.as_ref().map(|t| t.passed as f64)
                }),
                line("failed", RED, &|p| {
                    p.tests.as_ref().map(|t| t.failed as f64)
                }),
                line("skipped", RGBColor(120, 120, 120), &|p| {
                    p.tests.as_ref().map(|t| t.skipped as f64)
                }),
            ],
        ),
        _ => {
            let name = chart.strip_prefix("figure-")?;
            let unit = points
                .iter()
                .rev()
                .find_map(|p| p.figures.get(name).map(|f| f.unit.clone()))
                .unwrap_or_default();
            (
                unit,
                vec![line(name, BLUE, &|p| p.figures.get(name).map(|f| f.value))],
            )
        }
    })
}

/// The SVG text of a chart.
fn draw(title: &str, unit: &str, lines: &[Line]) -> Result<String, String> {
    let all = lines.iter().flat_map(|l| l.values.iter());
    let (mut x0, mut x1, mut y1) = (u64::MAX, 0u64, 0f64);
    for (x, y) in all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1) = (0, 1);
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| format!("cannot draw the chart: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(x0 as f64 - 0.5..x1 as f64 + 0.5, 0f64..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("build")
            .y_desc(unit)
            // Build numbers only: ticks between builds get no label.
            .x_labels(((x1 - x0) as usize + 1).min(12))
            .x_label_formatter(&|x| {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| err(&e))?;
        for l in lines {
            let pts: Vec<(f64, f64)> = l.values.iter().map(|(x, y)| (*x as f64, *y)).collect();
            let colour = l.colour;
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(l.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| err(&e))?;
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// `GET /api/v1/builders/{name}/charts/{chart}.svg[?limit=N]`.
pub(super) async fn chart(
    State(s): State<Arc<Shared>>,
    Path((name, file)): Path<(String, String)>,
    Query(q): Query<SeriesQuery>,
) -> R<Response> {
    let n = limit(q.limit)?;
    let chart = file
        .strip_suffix(".svg")
        .ok_or_else(|| ApiError::not_found(format!("no chart `{file}`: charts end in .svg")))?;
    let points = points(&s, name.clone(), n).await?;
    let (unit, lines) = lines(chart, &points).ok_or_else(|| {
        ApiError::not_found(format!(
            "no chart `{chart}`: one of duration, tests, warnings, figure-NAME"
        ))
    })?;
    let title = format!("{name}: {}", chart.trim_start_matches("figure-"));
    let svg = draw(&title, &unit, &lines)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        svg,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_at_each_build() {
        let mut pts = Vec::new();
        for (n, d) in [(3u64, 2000i64), (4, 3500), (6, 1000)] {
            pts.push(Point {
                id: n,
                number: n,
                duration_ms: d,
                ..Default::default()
            });
        }
        let (unit, l) = lines("duration", &pts).unwrap();
        assert_eq!(unit, "seconds");
        let svg = draw("b: duration", &unit, &l).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("b: duration"));
        // No points at all still draws the axes.
        let (unit, l) = lines("tests", &pts).unwrap();
        let svg = draw("b: tests", &unit, &l).unwrap();
        assert_eq!(svg.matches("<circle").count(), 0);
        assert!(lines("nope", &pts).is_none());
        // A title with markup is escaped by the backend.
        let svg = draw("<b>&", "", &[]).unwrap();
        assert!(!svg.contains("<b>&"), "{svg}");
    }
}
