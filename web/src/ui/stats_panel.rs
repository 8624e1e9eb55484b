//! The player page's live swarm panel: where this title's bytes come from,
//! who we are connected to, current rates, a five-minute plot, and the upload
//! cap. It only renders the driver's snapshot; the cap goes back through
//! `upload_cap`, which the driver applies.

use leptos::prelude::*;
use web_sys::HtmlInputElement;

use crate::host::swarm::{RateSample, SwarmSnapshot};

/// The plot's viewBox. The SVG stretches to the panel's width
/// (`preserveAspectRatio="none"`), so these are units, not pixels.
const PLOT_W: f64 = 300.0;
const PLOT_H: f64 = 80.0;
/// The x axis spans this much time, matching the driver's history length.
const WINDOW_MS: f64 = 300_000.0;
/// The y axis never goes below this: an idle swarm shows flat lines at the
/// bottom instead of noise blown up to full height.
const MIN_SCALE_BITS: f64 = 1_000_000.0;
/// Far beyond any uplink; keeps a typo from becoming an absurd bucket size.
const MAX_CAP_MBIT: f64 = 10_000.0;

/// What the SVG draws, precomputed so the view only swaps strings.
#[derive(Clone, Debug, Default, PartialEq)]
struct PlotGeometry {
    /// The y axis' top, bytes per second.
    y_max_bps: f64,
    /// Area under origin + peers (drawn first, so peers show above origin).
    total_area: String,
    /// Area under origin alone.
    origin_area: String,
    upload_line: String,
}

#[component]
pub fn StatsPanel(
    swarm: Signal<Option<SwarmSnapshot>>,
    upload_cap: RwSignal<u64>,
) -> impl IntoView {
    // Everything below reads single fields so that a new snapshot each second
    // updates text nodes in place; re-rendering the panel would also reset
    // the cap input while the viewer types in it.
    let field = move |f: fn(&SwarmSnapshot) -> String| {
        swarm.with(|s| s.as_ref().map(f).unwrap_or_default())
    };
    let share =
        Memo::new(move |_| swarm.with(|s| s.as_ref().map_or(0.0, |s| clamp_share(s.peer_share))));
    let refused = Memo::new(move |_| swarm.with(|s| s.as_ref().and_then(|s| s.refused.clone())));
    let plot = Memo::new(move |_| {
        swarm.with(|s| {
            s.as_ref()
                .map(|s| plot_geometry(&s.history))
                .unwrap_or_default()
        })
    });

    let on_cap_change = move |ev: web_sys::Event| {
        let input = event_target::<HtmlInputElement>(&ev);
        match parse_cap_mbit(&input.value()) {
            Some(bps) => upload_cap.set(bps),
            // Put the last good value back rather than leave a cap on screen
            // that is not the one applied.
            None => input.set_value(&cap_mbit_text(upload_cap.get_untracked())),
        }
    };

    view! {
        <Show when=move || swarm.with(Option::is_some)>
            <section id="swarm-stats" class="swarm-stats" aria-label="Swarm statistics">
                <div class="swarm-head">
                    <span class="swarm-title">"Swarm"</span>
                    <span id="swarm-peer-share" class="swarm-share">{move || format_share(share.get())}</span>
                    <span class="swarm-dim">"from peers"</span>
                </div>
                <div class="swarm-share-bar">
                    <div class="swarm-share-peers" style:width=move || format!("{:.1}%", share.get() * 100.0)></div>
                </div>
                <div class="swarm-row swarm-totals swarm-dim">
                    <span>
                        <i class="swarm-key peers"></i>"Peers "
                        <b id="swarm-bytes-peers">{move || field(|s| format_bytes(s.bytes_from_peers))}</b>
                    </span>
                    <span>
                        <i class="swarm-key origin"></i>"Origin "
                        <b id="swarm-bytes-origin">{move || field(|s| format_bytes(s.bytes_from_origin))}</b>
                    </span>
                    <span>
                        <i class="swarm-key upload"></i>"Sent "
                        <b id="swarm-bytes-sent">{move || field(|s| format_bytes(s.bytes_uploaded))}</b>
                    </span>
                </div>
                <div class="swarm-row">
                    <span>
                        <b id="swarm-peers">{move || field(|s| s.peers.to_string())}</b>
                        {move || field(|s| peers_detail(s.peers, s.connecting, s.peers_banned))}
                    </span>
                    <span id="swarm-titles" class="swarm-dim">
                        {move || field(|s| plural(s.titles_shared, "title shared", "titles shared"))}
                    </span>
                </div>
                <div class="swarm-row">
                    <span>"↓ "<b id="swarm-down">{move || field(|s| format_rate(s.download_bps))}</b></span>
                    <span>"↑ "<b id="swarm-up">{move || field(|s| format_rate(s.upload_bps))}</b></span>
                </div>
                {move || {
                    swarm
                        .with(|s| s.as_ref().and_then(status_line))
                        .map(|text| view! { <p id="swarm-status" class="swarm-status">{text}</p> })
                }}
                {move || match refused.get() {
                    Some(reason) => {
                        view! { <p id="swarm-refused" class="swarm-refused">"Not sharing: "{reason}</p> }.into_any()
                    }
                    None => {
                        view! {
                            <div class="swarm-plot-box">
                                <svg class="swarm-plot" viewBox="0 0 300 80" preserveAspectRatio="none" aria-hidden="true">
                                    <path class="swarm-area peers" d=move || plot.with(|p| p.total_area.clone())></path>
                                    <path class="swarm-area origin" d=move || plot.with(|p| p.origin_area.clone())></path>
                                    <polyline class="swarm-line upload" points=move || plot.with(|p| p.upload_line.clone())></polyline>
                                </svg>
                                <span id="swarm-plot-max" class="swarm-plot-max">{move || format_rate(plot.with(|p| p.y_max_bps))}</span>
                                <div class="swarm-axis swarm-dim"><span>"5 min ago"</span><span>"now"</span></div>
                            </div>
                        }
                            .into_any()
                    }
                }}
                <label class="swarm-cap">
                    "Upload cap "
                    <input
                        id="swarm-upload-cap"
                        type="number"
                        min="0"
                        step="0.5"
                        prop:value=move || cap_mbit_text(upload_cap.get())
                        on:change=on_cap_change
                    />
                    " Mbit/s "
                    <span id="swarm-upload-cap-now" class="swarm-cap-now">
                        {move || field(|s| format!("applied {}", format_cap(s.upload_cap_bps)))}
                    </span>
                </label>
            </section>
        </Show>
    }
}

/// One line the viewer should notice, refusals aside (they replace the plot).
fn status_line(s: &SwarmSnapshot) -> Option<&'static str> {
    if s.refused.is_some() {
        None
    } else if !s.signalling_connected {
        Some("Signalling lost, reconnecting…")
    } else if !s.joined {
        Some("Joining the swarm…")
    } else {
        None
    }
}

fn clamp_share(share: f64) -> f64 {
    if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// `87 %`: the form the end-to-end tests read.
fn format_share(share: f64) -> String {
    format!("{:.0} %", clamp_share(share) * 100.0)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text after the peer count: ` peers · 2 connecting · 1 banned`.
fn peers_detail(peers: usize, connecting: usize, banned: usize) -> String {
    let mut text = String::from(if peers == 1 { " peer" } else { " peers" });
    if connecting > 0 {
        text.push_str(&format!(" · {connecting} connecting"));
    }
    if banned > 0 {
        text.push_str(&format!(" · {banned} banned"));
    }
    text
}

/// Decimal units, as network traffic is counted: `0 B`, `950 kB`, `12.3 MB`.
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{} {}", three_digits(value), UNITS[unit])
}

/// A rate given in bytes per second, shown in bits: `350 kbit/s`, `12.4 Mbit/s`.
fn format_rate(bytes_per_second: f64) -> String {
    let bits = if bytes_per_second.is_finite() {
        bytes_per_second.max(0.0) * 8.0
    } else {
        0.0
    };
    if bits < 999_500.0 {
        format!("{:.0} kbit/s", bits / 1e3)
    } else if bits < 999_950_000.0 {
        format!("{} Mbit/s", three_digits(bits / 1e6))
    } else {
        format!("{} Gbit/s", three_digits(bits / 1e9))
    }
}

/// About three significant digits without trailing noise: `1.25`, `12.3`, `512`.
fn three_digits(v: f64) -> String {
    if v < 9.995 {
        format!("{v:.2}")
    } else if v < 99.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn format_cap(bytes_per_second: u64) -> String {
    if bytes_per_second == 0 {
        "off".to_string()
    } else {
        format_rate(bytes_per_second as f64)
    }
}

/// The input shows Mbit/s; `0` means no uploading at all.
fn cap_mbit_text(bytes_per_second: u64) -> String {
    let mbit = bytes_per_second as f64 * 8.0 / 1e6;
    // Up to three decimals, then drop the zeros: 8 → "8", 0.8 → "0.8".
    let text = format!("{mbit:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The input's text, in Mbit/s, as a cap in bytes per second.
fn parse_cap_mbit(text: &str) -> Option<u64> {
    let mbit: f64 = text.trim().parse().ok()?;
    if !mbit.is_finite() || mbit < 0.0 {
        return None;
    }
    Some((mbit.min(MAX_CAP_MBIT) * 1e6 / 8.0).round() as u64)
}

/// The y axis' top: the busiest second (download stacked, or upload), rounded
/// up to 1, 2 or 5 × 10ⁿ bit/s so the label reads as a round number.
fn scale_max(history: &[RateSample]) -> f64 {
    let peak = history
        .iter()
        .map(|s| (finite(s.from_peers_bps) + finite(s.from_origin_bps)).max(finite(s.uploaded_bps)))
        .fold(0.0, f64::max);
    let bits = (peak * 8.0).max(MIN_SCALE_BITS);
    let base = 10f64.powf(bits.log10().floor());
    // A hair of tolerance: 1e7 / 1e7 must stay 1, not tip over to 2.
    let mantissa = bits / base - 1e-9;
    let step = [1.0, 2.0, 5.0]
        .into_iter()
        .find(|&m| mantissa <= m)
        .unwrap_or(10.0);
    step * base / 8.0
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v.max(0.0) } else { 0.0 }
}

/// SVG coordinates of one series: newest sample at the right edge, older ones
/// leftwards by their age, so a gap (a throttled background tab) stays a gap
/// in time rather than being squeezed out.
fn plot_points(
    history: &[RateSample],
    y_max_bps: f64,
    value: impl Fn(&RateSample) -> f64,
) -> Vec<(f64, f64)> {
    let Some(newest) = history.last().map(|s| s.at_ms) else {
        return Vec::new();
    };
    history
        .iter()
        .map(|s| {
            let x = PLOT_W - (newest - s.at_ms) / WINDOW_MS * PLOT_W;
            let y = PLOT_H - finite(value(s)) / y_max_bps * PLOT_H;
            (x.clamp(0.0, PLOT_W), y.clamp(0.0, PLOT_H))
        })
        .collect()
}

/// A `<polyline points>` value: `x,y x,y …`.
fn polyline(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `<path d>` closing the series down to the x axis, for a filled area.
fn area(points: &[(f64, f64)]) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return String::new();
    };
    format!(
        "M{:.1},{PLOT_H:.1} L{} L{:.1},{PLOT_H:.1} Z",
        first.0,
        polyline(points).replace(' ', " L"),
        last.0
    )
}

fn plot_geometry(history: &[RateSample]) -> PlotGeometry {
    let y_max_bps = scale_max(history);
    let series = |f: fn(&RateSample) -> f64| plot_points(history, y_max_bps, f);
    PlotGeometry {
        y_max_bps,
        total_area: area(&series(|s| {
            finite(s.from_peers_bps) + finite(s.from_origin_bps)
        })),
        origin_area: area(&series(|s| s.from_origin_bps)),
        upload_line: polyline(&series(|s| s.uploaded_bps)),
    }
}

// Run in the browser with the crate's other tests (`cargo xtask test`).
#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    fn sample(at_ms: f64, peers: f64, origin: f64, up: f64) -> RateSample {
        RateSample {
            at_ms,
            from_peers_bps: peers,
            from_origin_bps: origin,
            uploaded_bps: up,
        }
    }

    #[test]
    fn known_history_scales_to_the_box() {
        // 8 + 2 Mbit/s download at the peak: the axis tops out at exactly 10 Mbit/s.
        let history = [
            sample(1_000.0, 0.0, 0.0, 0.0),
            sample(2_000.0, 500_000.0, 125_000.0, 62_500.0),
            sample(3_000.0, 1_000_000.0, 250_000.0, 125_000.0),
        ];
        assert_eq!(scale_max(&history), 1_250_000.0);
        let total = plot_points(&history, 1_250_000.0, |s| {
            s.from_peers_bps + s.from_origin_bps
        });
        assert_eq!(polyline(&total), "298.0,80.0 299.0,40.0 300.0,0.0");
        let g = plot_geometry(&history);
        assert_eq!(
            g.total_area,
            "M298.0,80.0 L298.0,80.0 L299.0,40.0 L300.0,0.0 L300.0,80.0 Z"
        );
        assert_eq!(g.upload_line, "298.0,80.0 299.0,76.0 300.0,72.0");
        // Older than the window: pinned to the left edge.
        let old = [sample(0.0, 1.0, 0.0, 0.0), sample(600_000.0, 1.0, 0.0, 0.0)];
        assert_eq!(
            polyline(&plot_points(&old, 125_000.0, |s| s.from_peers_bps)),
            "0.0,80.0 300.0,80.0"
        );
    }

    #[test]
    fn empty_history_draws_nothing() {
        let g = plot_geometry(&[]);
        assert_eq!(g.y_max_bps, MIN_SCALE_BITS / 8.0);
        assert_eq!(
            (
                g.total_area.as_str(),
                g.origin_area.as_str(),
                g.upload_line.as_str()
            ),
            ("", "", "")
        );
    }

    #[test]
    fn all_zero_history_lies_on_the_axis() {
        let history: Vec<_> = (0..300)
            .map(|i| sample(f64::from(i) * 1000.0, 0.0, 0.0, 0.0))
            .collect();
        let g = plot_geometry(&history);
        assert_eq!(g.y_max_bps, MIN_SCALE_BITS / 8.0);
        assert!(g.upload_line.split(' ').all(|p| p.ends_with(",80.0")));
        // Garbage in a sample reads as zero rather than poisoning the plot.
        let bad = [
            sample(0.0, f64::NAN, f64::INFINITY, -5.0),
            sample(1000.0, 1000.0, 0.0, 0.0),
        ];
        let g = format!("{:?}", plot_geometry(&bad));
        assert!(!g.contains("NaN") && !g.contains("inf"), "{g}");
    }

    #[test]
    fn scale_rounds_up_to_1_2_5() {
        let at = |bits: f64| scale_max(&[sample(0.0, bits / 8.0, 0.0, 0.0)]) * 8.0;
        assert_eq!(at(1.2e7), 2e7);
        assert_eq!(at(2.5e7), 5e7);
        assert_eq!(at(6e7), 1e8);
        assert_eq!(at(5e6), 5e6);
        assert_eq!(at(10.0), MIN_SCALE_BITS);
        // Upload counts too.
        assert_eq!(scale_max(&[sample(0.0, 0.0, 0.0, 3e6 / 8.0)]) * 8.0, 5e6);
    }

    #[test]
    fn rates_format_in_bits() {
        assert_eq!(format_rate(0.0), "0 kbit/s");
        assert_eq!(format_rate(43_750.0), "350 kbit/s");
        assert_eq!(format_rate(125_000.0), "1.00 Mbit/s");
        assert_eq!(format_rate(1_550_000.0), "12.4 Mbit/s");
        assert_eq!(format_rate(31_250_000.0), "250 Mbit/s");
        assert_eq!(format_rate(250_000_000.0), "2.00 Gbit/s");
        assert_eq!(format_rate(f64::NAN), "0 kbit/s");
        assert_eq!(format_rate(-1.0), "0 kbit/s");
    }

    #[test]
    fn bytes_format_in_decimal_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(1_500), "1.50 kB");
        assert_eq!(format_bytes(950_000), "950 kB");
        assert_eq!(format_bytes(999_999), "1.00 MB");
        assert_eq!(format_bytes(12_345_678), "12.3 MB");
        assert_eq!(format_bytes(3_200_000_000), "3.20 GB");
    }

    #[test]
    fn share_and_peers_read_naturally() {
        assert_eq!(format_share(0.87), "87 %");
        assert_eq!(format_share(1.5), "100 %");
        assert_eq!(format_share(f64::NAN), "0 %");
        assert_eq!(peers_detail(1, 0, 0), " peer");
        assert_eq!(peers_detail(3, 2, 1), " peers · 2 connecting · 1 banned");
        assert_eq!(plural(1, "title shared", "titles shared"), "1 title shared");
    }

    #[test]
    fn cap_round_trips_through_mbit() {
        assert_eq!(parse_cap_mbit("8"), Some(1_000_000));
        assert_eq!(parse_cap_mbit(" 0.5 "), Some(62_500));
        assert_eq!(parse_cap_mbit("0"), Some(0));
        assert_eq!(parse_cap_mbit("-1"), None);
        assert_eq!(parse_cap_mbit(""), None);
        assert_eq!(parse_cap_mbit("1e9"), Some(1_250_000_000));
        assert_eq!(cap_mbit_text(1_000_000), "8");
        assert_eq!(cap_mbit_text(100_000), "0.8");
        assert_eq!(cap_mbit_text(0), "0");
        assert_eq!(format_cap(0), "off");
    }

    #[test]
    fn status_prefers_refusal_then_reconnecting() {
        let mut s = SwarmSnapshot {
            joined: true,
            signalling_connected: true,
            ..Default::default()
        };
        assert_eq!(status_line(&s), None);
        s.signalling_connected = false;
        assert_eq!(status_line(&s), Some("Signalling lost, reconnecting…"));
        s.refused = Some("no grant".into());
        assert_eq!(status_line(&s), None);
    }
}
