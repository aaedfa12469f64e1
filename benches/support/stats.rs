//! Medians and percentiles of measured samples.
//!
//! Interpolated between the two nearest ranks, as `benchlib.py`'s `pct` does, so the Rust and
//! the Python figures of one run can be compared.

/// The `p`-th percentile (0 to 100) of `values`, or `None` when there are none.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() - 1) as f64 * p / 100.0;
    let low = rank.floor() as usize;
    let high = (low + 1).min(sorted.len() - 1);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}
