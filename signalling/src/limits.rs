//! Per-socket limits: how big, how fast, how often wrong, how long silent.
//!
//! [`TokenBucket`] and [`Strikes`] are pure (time is an argument) so their rules
//! are tested without sleeping; the socket loop owns one of each.

use std::time::{Duration, Instant};

use telly_proto::signal::{Limits, MAX_SIGNAL_MESSAGE_BYTES};

use crate::rooms::RoomsConfig;

/// What one socket may do. The defaults are chosen for browsers on the public
/// internet; tests shorten the timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketLimits {
    /// A longer text frame gets a `too_large` error and a strike.
    pub max_message_bytes: usize,
    /// A frame longer than this is not even buffered: the socket is closed.
    pub max_transport_bytes: usize,
    /// Sustained messages per second (every frame counts, pings included).
    pub messages_per_second: u32,
    /// Messages allowed at once on top of the sustained rate.
    pub burst: u32,
    /// Strikes (malformed, oversized or over-rate messages, hostile joins) that
    /// close the socket.
    pub max_strikes: u32,
    /// One strike is forgiven per this much time.
    pub strike_forgiveness: Duration,
    /// The server pings this often.
    pub heartbeat_interval: Duration,
    /// A socket silent this long (no frame, not even a pong) is dropped.
    pub idle_timeout: Duration,
    /// A socket that has not joined a swarm by then is closed.
    pub join_timeout: Duration,
    /// A socket that cannot take a frame within this long is dropped.
    pub write_timeout: Duration,
    /// Messages waiting for one socket; past this, messages to it are dropped.
    pub outbox_capacity: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: MAX_SIGNAL_MESSAGE_BYTES,
            max_transport_bytes: 4 * MAX_SIGNAL_MESSAGE_BYTES,
            // A tab dialling 8 peers sends 8 offers and a few dozen candidates in
            // its first second, then a have-summary every few seconds.
            messages_per_second: 20,
            burst: 60,
            max_strikes: 5,
            strike_forgiveness: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(40),
            join_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            outbox_capacity: 256,
        }
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl SocketLimits {
    /// The limits as [`telly_proto::signal::ServerMessage::Welcome`] tells them.
    pub fn advertised(&self, rooms: &RoomsConfig) -> Limits {
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Limits {
            max_message_bytes: to_u32(self.max_message_bytes),
            messages_per_second: self.messages_per_second,
            burst: self.burst,
            heartbeat_ms: millis(self.heartbeat_interval),
            idle_timeout_ms: millis(self.idle_timeout),
            max_swarms: to_u32(rooms.max_swarms_per_socket),
            peers_per_answer: to_u32(rooms.tracker.peers_per_answer),
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            capacity,
            per_second: f64::from(per_second),
            tokens: capacity,
            refilled_at: now,
        }
    }

    /// Takes a token if there is one. Time going backwards refills nothing.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        self.refilled_at = self.refilled_at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts a socket's offences, forgiving one per `forgiveness`.
#[derive(Clone, Debug)]
pub struct Strikes {
    count: u32,
    max: u32,
    forgiveness: Duration,
    forgiven_at: Instant,
}

impl Strikes {
    pub fn new(max: u32, forgiveness: Duration, now: Instant) -> Self {
        Self {
            count: 0,
            max,
            forgiveness,
            forgiven_at: now,
        }
    }

    /// Adds a strike; true when the socket has now used up its allowance.
    pub fn add(&mut self, now: Instant) -> bool {
        self.forgive(now);
        self.count = self.count.saturating_add(1);
        self.count >= self.max
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    fn forgive(&mut self, now: Instant) {
        if self.forgiveness.is_zero() {
            self.count = 0;
            return;
        }
        let elapsed = now.saturating_duration_since(self.forgiven_at);
        let periods = elapsed.as_nanos() / self.forgiveness.as_nanos();
        if periods == 0 {
            return;
        }
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.count = self.count.saturating_sub(periods);
        // Keep the remainder so that forgiveness runs at a steady pace.
        self.forgiven_at = match self.forgiveness.checked_mul(periods) {
            Some(step) if self.count > 0 => self.forgiven_at + step,
            _ => now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, start);
        assert_eq!((0..20).filter(|_| bucket.take(start)).count(), 5);
        // 10 per second: one more every 100 ms.
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(101)));
        assert!(!bucket.take(start + Duration::from_millis(102)));
        // A long pause refills to the burst, no further.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.take(later)).count(), 5);
        // The clock going backwards refills nothing and does not panic.
        assert!(!bucket.take(start));
    }

    #[test]
    fn a_zero_rate_bucket_still_allows_its_burst_once() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0, 0, start);
        assert!(bucket.take(start));
        assert!(!bucket.take(start + Duration::from_secs(3600)));
    }

    #[test]
    fn strikes_add_up_and_are_forgiven_slowly() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut strikes = Strikes::new(3, minute, start);
        assert!(!strikes.add(start));
        assert!(!strikes.add(start));
        // One forgiven after a minute, so the third strike is not yet the last.
        assert!(!strikes.add(start + minute));
        assert_eq!(strikes.count(), 2);
        assert!(strikes.add(start + minute));
        // Much later everything is forgiven.
        let mut strikes = Strikes::new(3, minute, start);
        strikes.add(start);
        strikes.add(start);
        assert!(!strikes.add(start + 10 * minute));
        assert_eq!(strikes.count(), 1);
    }
}
