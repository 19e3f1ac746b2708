//! The `--plot` SVG: throughput (Mpps, log scale) against threads, one
//! line per strategy and GRO factor.

use crate::Row;
use plotters::prelude::*;
use std::path::Path;

pub fn write_svg(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_t = rows.iter().map(|r| r.threads).max().unwrap_or(1) as f64;
    // Log scale: GRO 16 rates are an order of magnitude below GRO 1.
    let max_y = rows.iter().map(|r| r.mops).fold(0.0, f64::max).max(0.1) * 1.5;
    let min_y = rows
        .iter()
        .map(|r| r.mops)
        .filter(|m| *m > 0.0)
        .fold(max_y, f64::min)
        / 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("Header pool throughput", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0.5f64..max_t + 0.5,
            (min_y.min(max_y / 10.0)..max_y).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc("Mpps (packets, log scale)")
        .x_labels(max_t as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        let name = format!("{} gro{}", r.strategy, r.gro);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, pts)) => pts.push((r.threads as f64, r.mops)),
            None => series.push((name, vec![(r.threads as f64, r.mops)])),
        }
    }
    for (i, (name, mut pts)) in series.into_iter().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = pts.into_iter().filter(|p| p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
