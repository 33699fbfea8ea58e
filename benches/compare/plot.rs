//! The SVG plot: throughput and peak OS threads against concurrency, one
//! line per mode, one row per view delay (log-log axes).

use std::path::Path;

use plotters::prelude::*;

use crate::modes::Mode;
use crate::report::Summary;

const COLORS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Draws `compare.svg`-style charts into `path`.
pub fn draw(
    path: &Path,
    s: &[Summary],
    ns: &[usize],
    ds: &[u64],
    modes: &[Mode],
    k: usize,
) -> PlotResult {
    let rows = ds.len();
    let root = SVGBackend::new(path, (1650, 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((rows, 3));
    let xmin = *ns.iter().min().unwrap_or(&1) as f64;
    let xmax = *ns.iter().max().unwrap_or(&1) as f64;
    for (ri, &d) in ds.iter().enumerate() {
        for (ci, (field, what)) in [
            ("throughput_rps", "requests/s"),
            ("peak_threads", "peak OS threads"),
            ("peak_rss_mib", "peak RSS MiB"),
        ]
        .into_iter()
        .enumerate()
        {
            let pts = |m: Mode| -> Vec<(f64, f64)> {
                s.iter()
                    .filter(|x| x.mode == m && x.d_ms == d)
                    // Hung cells have no medians: no point.
                    .filter(|x| x.median.get(field).is_finite())
                    .map(|x| (x.n as f64, x.median.get(field).max(1.0)))
                    .filter(|p| p.1.is_finite())
                    .collect()
            };
            let all: Vec<f64> = modes.iter().flat_map(|&m| pts(m)).map(|p| p.1).collect();
            let ymax = all.iter().copied().fold(1.0f64, f64::max) * 2.0;
            let ymin =
                (all.iter().copied().fold(f64::INFINITY, f64::min) / 2.0).clamp(0.5, ymax / 4.0);
            let view = if d == 0 {
                "view yields once".to_string()
            } else {
                format!("view awaits {d} ms")
            };
            let mut chart = ChartBuilder::on(&areas[ri * 3 + ci])
                .caption(format!("{what}, K={k}, {view}"), ("sans-serif", 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (xmin * 0.8..xmax * 1.25).log_scale(),
                    (ymin..ymax).log_scale(),
                )?;
            chart
                .configure_mesh()
                .x_desc("concurrent requests N")
                .y_desc(what)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()?;
            for (mi, &m) in modes.iter().enumerate() {
                let color = COLORS[mi % COLORS.len()];
                // Earlier modes are drawn wider, so a line hidden under a
                // later one with the same values stays visible around it.
                let width = 2 + (modes.len() - 1 - mi) as u32;
                let p = pts(m);
                chart
                    .draw_series(LineSeries::new(p.clone(), color.stroke_width(width)))?
                    .label(m.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                    });
                chart.draw_series(p.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
