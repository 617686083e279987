//! Summaries of measured values, as the tables in docs/perf.md show them.

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The value at fraction `p` of a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// "NAME: median …, p90 …, max … (N values)".
pub fn summary(name: &str, unit: &str, v: &mut [f64]) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{name}: median {:.2} {unit}, p90 {:.2} {unit}, max {:.2} {unit} ({} values)",
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 1.0),
        v.len()
    )
}

/// KiB as MB with one decimal.
pub fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}
