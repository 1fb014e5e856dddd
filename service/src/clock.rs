//! Wall-clock time as the services exchange it: Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`now_ms`] as the signed column type databases store.
pub fn now_ms_i64() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2026_and_both_forms_agree() {
        let a = now_ms();
        let b = now_ms_i64();
        assert!(a > 1_767_225_600_000, "{a}");
        assert!(b >= i64::try_from(a).unwrap() && b - i64::try_from(a).unwrap() < 60_000);
    }
}
