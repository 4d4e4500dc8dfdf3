//! The wall clock, in the unit of reading timestamps.

/// The wall clock in milliseconds since the Unix epoch (0 before it), the
/// unit of reading timestamps.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
