//! Scenario files (TOML): audience, arrivals, capacities, latency, churn, seeks,
//! title. Every field has a default except the name; see bench/scenarios/.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Benchmark name, e.g. "sim-flash-1k".
    pub name: String,
    #[serde(default = "one")]
    pub seed: u64,
    pub viewers: usize,
    #[serde(default = "default_title_s")]
    pub title_s: u64,
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u64,
    #[serde(default = "default_block_s")]
    pub block_s: u64,
    pub arrival: Arrival,
    /// Upload capacity as a multiple of the bitrate, uniform in [min, max].
    pub upload_x_bitrate: Range,
    /// Download capacity in Mbit/s, uniform in [min, max].
    #[serde(default = "default_download")]
    pub download_mbps: Range,
    /// One-way access latency of each viewer in ms, uniform in [min, max]; a link's
    /// latency is the sum of its two ends' halves.
    #[serde(default = "default_latency")]
    pub latency_ms: Range,
    #[serde(default = "default_origin_latency")]
    pub origin_latency_ms: u64,
    /// Share of viewers that leave mid-title, at a uniform random point.
    #[serde(default)]
    pub churn: f64,
    /// Share of viewers that seek once, to a uniform random point ahead.
    #[serde(default)]
    pub seek: f64,
    /// Seconds a viewer stays (and shares) after the title ends.
    #[serde(default)]
    pub linger_s: u64,
    /// Peers the tracker gives each joiner.
    #[serde(default = "default_peers")]
    pub peers: usize,
    /// Most connections a viewer accepts.
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    /// Upper bound of origin egress / theoretical minimum (the benchmark target).
    #[serde(default)]
    pub target_origin_over_min: Option<f64>,
    /// Also run Telly with store-and-forward only, to measure what relaying buys.
    #[serde(default)]
    pub compare_relay: bool,
    /// Engine knobs to override (see telly_swarm::Config).
    #[serde(default)]
    pub engine: EngineKnobs,
}

/// The engine settings a scenario may change; unset ones keep the defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineKnobs {
    pub urgent_window_ms: Option<u64>,
    pub horizon_ms: Option<u64>,
    pub margin_ms: Option<u64>,
    pub min_margin_ms: Option<u64>,
    pub startup_budget_ms: Option<u64>,
    pub origin_spread_ms: Option<u64>,
    pub upload_slots: Option<usize>,
    pub min_request_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Arrival {
    /// Everyone arrives uniformly within `window_s` of the start (a premiere).
    Flash { window_s: u64 },
    /// Poisson arrivals spread over `over_s` (on demand).
    Staggered { over_s: u64 },
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

impl Range {
    pub fn mean(&self) -> f64 {
        (self.min + self.max) / 2.0
    }
}

fn one() -> u64 {
    1
}
fn default_title_s() -> u64 {
    600
}
fn default_bitrate() -> u64 {
    2_000
}
fn default_block_s() -> u64 {
    2
}
fn default_download() -> Range {
    Range {
        min: 10.0,
        max: 50.0,
    }
}
fn default_latency() -> Range {
    Range {
        min: 5.0,
        max: 40.0,
    }
}
fn default_origin_latency() -> u64 {
    40
}
fn default_peers() -> usize {
    10
}
fn default_max_peers() -> usize {
    24
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("scenario is unusable: {0}")]
    Invalid(String),
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |why: &str| Err(ScenarioError::Invalid(why.into()));
        if self.viewers == 0 || self.viewers > 1_000_000 {
            return bad("viewers must be 1..=1000000");
        }
        if self.block_s == 0 || self.title_s < self.block_s || self.title_s > 24 * 3600 {
            return bad("title_s must be at least one block and at most a day");
        }
        if self.bitrate_kbps == 0 || self.bitrate_kbps > 100_000 {
            return bad("bitrate_kbps must be 1..=100000");
        }
        let block_bytes = self.bitrate_kbps * 125 * self.block_s;
        if block_bytes > telly_proto::manifest::MAX_BLOCK_SIZE {
            return bad("a block would exceed the maximum block size");
        }
        for (name, r) in [
            ("upload_x_bitrate", self.upload_x_bitrate),
            ("download_mbps", self.download_mbps),
            ("latency_ms", self.latency_ms),
        ] {
            if !(r.min >= 0.0 && r.max >= r.min && r.max.is_finite()) {
                return Err(ScenarioError::Invalid(format!(
                    "{name}: need 0 <= min <= max"
                )));
            }
        }
        if self.download_mbps.min * 1000.0 < self.bitrate_kbps as f64 {
            return bad("every viewer's download must carry the bitrate");
        }
        if !(0.0..=1.0).contains(&self.churn) || !(0.0..=1.0).contains(&self.seek) {
            return bad("churn and seek are shares in 0..=1");
        }
        if self.peers == 0 || self.max_peers < self.peers {
            return bad("need 1 <= peers <= max_peers");
        }
        Ok(())
    }

    pub fn block_bytes(&self) -> u64 {
        self.bitrate_kbps * 125 * self.block_s
    }

    pub fn blocks(&self) -> u64 {
        self.title_s / self.block_s
    }

    pub fn title_bytes(&self) -> u64 {
        self.block_bytes() * self.blocks()
    }
}
