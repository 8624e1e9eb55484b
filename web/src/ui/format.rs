//! Times as a viewer reads them.

/// A playback position: `m:ss`, or `h:mm:ss` from an hour on.
pub fn format_clock(seconds: f64) -> String {
    let total = if seconds.is_finite() && seconds > 0.0 {
        seconds.floor() as u64
    } else {
        0
    };
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A title's running time: `45 s`, `3 min`, `1 h 05 min`.
pub fn format_runtime(duration_ms: u64) -> String {
    let seconds = duration_ms.div_ceil(1000);
    if seconds < 60 {
        return format!("{seconds} s");
    }
    let minutes = (seconds + 30) / 60;
    if minutes < 60 {
        format!("{minutes} min")
    } else {
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn clock_formats() {
        assert_eq!(format_clock(0.0), "0:00");
        assert_eq!(format_clock(65.9), "1:05");
        assert_eq!(format_clock(3725.0), "1:02:05");
        assert_eq!(format_clock(f64::NAN), "0:00");
        assert_eq!(format_clock(-3.0), "0:00");
    }

    #[test]
    fn runtime_formats() {
        assert_eq!(format_runtime(45_000), "45 s");
        assert_eq!(format_runtime(179_000), "3 min");
        assert_eq!(format_runtime(3_900_000), "1 h 05 min");
    }
}
