//! Figures of a run and the report file: JSON with the benchmark fields, and an
//! SVG plot of origin egress over time for Telly and the baselines.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::world::ViewerRecord;

/// The figures of one strategy on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub strategy: String,
    pub viewers: usize,
    pub origin_bytes: u64,
    pub title_bytes: u64,
    pub min_origin_bytes: u64,
    pub origin_over_min: f64,
    pub origin_over_title: f64,
    pub peer_share: f64,
    pub rebuffer_count: u64,
    pub rebuffer_s: f64,
    pub rebuffer_ratio: f64,
    pub rebuffer_max_s: f64,
    /// Viewers that stalled at least once after their first frame.
    pub viewers_rebuffered: usize,
    pub ttff_p50_s: f64,
    pub ttff_p95_s: f64,
    /// From a jump to playing again, over the viewers that jumped.
    pub seek_wait_p50_s: f64,
    pub seek_wait_p95_s: f64,
    /// Mean share of its upload capacity a viewer used while present.
    pub upload_used_mean: f64,
    pub upload_used_p50: f64,
    pub wall_s: f64,
    pub events: u64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// The viewers' values of an optional duration in ms, in seconds, sorted.
fn sorted_seconds(records: &[ViewerRecord], ms: impl Fn(&ViewerRecord) -> Option<u64>) -> Vec<f64> {
    let mut seconds: Vec<f64> = records
        .iter()
        .filter_map(|r| ms(r).map(|t| t as f64 / 1000.0))
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds
}

/// The theoretical minimum origin egress: the title once, or the audience's
/// total deficit when its upload cannot carry what it watches.
pub fn minimum_origin(records: &[ViewerRecord], title_bytes: u64) -> u64 {
    let demand: f64 = records.iter().map(|r| r.demand_bytes as f64).sum();
    let supply: f64 = records
        .iter()
        .map(|r| {
            r.upload_capacity as f64 * (r.left_ms.saturating_sub(r.arrived_ms)) as f64 / 1000.0
        })
        .sum();
    (title_bytes as f64).max(demand - supply) as u64
}

impl Figures {
    pub fn new(
        strategy: &str,
        scenario: &Scenario,
        records: &[ViewerRecord],
        origin_bytes: u64,
        min_origin_bytes: u64,
        wall_s: f64,
        events: u64,
    ) -> Self {
        let title_bytes = scenario.title_bytes();
        let from_peers: u64 = records.iter().map(|r| r.from_peers).sum();
        let played: u64 = records.iter().map(|r| r.played_ms).sum();
        let stalled: u64 = records.iter().map(|r| r.stall_ms).sum();
        let ttff = sorted_seconds(records, |r| r.ttff_ms);
        let seek_wait = sorted_seconds(records, |r| r.seek_wait_ms);
        let mut used: Vec<f64> = records
            .iter()
            .filter(|r| r.upload_capacity > 0 && r.left_ms > r.arrived_ms)
            .map(|r| {
                let capacity =
                    r.upload_capacity as f64 * (r.left_ms - r.arrived_ms) as f64 / 1000.0;
                r.uploaded as f64 / capacity
            })
            .collect();
        used.sort_by(f64::total_cmp);
        let received = (from_peers + origin_bytes).max(1);
        Self {
            strategy: strategy.to_string(),
            viewers: records.len(),
            origin_bytes,
            title_bytes,
            min_origin_bytes,
            origin_over_min: origin_bytes as f64 / min_origin_bytes.max(1) as f64,
            origin_over_title: origin_bytes as f64 / title_bytes.max(1) as f64,
            peer_share: from_peers as f64 / received as f64,
            rebuffer_count: records.iter().map(|r| u64::from(r.stalls)).sum(),
            rebuffer_s: stalled as f64 / 1000.0,
            rebuffer_ratio: stalled as f64 / (played + stalled).max(1) as f64,
            rebuffer_max_s: records.iter().map(|r| r.stall_ms).max().unwrap_or(0) as f64 / 1000.0,
            viewers_rebuffered: records.iter().filter(|r| r.stalls > 0).count(),
            ttff_p50_s: quantile(&ttff, 0.5),
            ttff_p95_s: quantile(&ttff, 0.95),
            seek_wait_p50_s: quantile(&seek_wait, 0.5),
            seek_wait_p95_s: quantile(&seek_wait, 0.95),
            upload_used_mean: used.iter().sum::<f64>() / used.len().max(1) as f64,
            upload_used_p50: quantile(&used, 0.5),
            wall_s,
            events,
        }
    }
}

/// Origin egress over time of each strategy: (label, [(time s, cumulative bytes)]).
pub type Series = Vec<(String, Vec<(f64, u64)>)>;

/// Draws cumulative origin egress, in multiples of the title size, over time.
pub fn plot(path: &Path, title: &str, title_bytes: u64, series: &Series) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_t = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let scale = title_bytes.max(1) as f64;
    let max_y = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1 as f64 / scale))
        .fold(1.0, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_t, (0.0..max_y).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("origin egress (× title size, log)")
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, (label, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|(t, b)| (*t, (*b as f64 / scale).max(max_y / 1e4))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
