//! Shared by the benchmark tools: command-line flags, percentiles and
//! exchange.sql for the relays.

pub mod exchange;

use std::time::Duration;

/// `--name value` pairs; a missing flag takes its default.
pub struct Flags(Vec<String>);

impl Flags {
    pub fn from_env() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    pub fn text(&self, name: &str, default: &str) -> String {
        self.0
            .iter()
            .position(|arg| arg.strip_prefix("--") == Some(name))
            .and_then(|at| self.0.get(at + 1))
            .map_or_else(|| default.to_owned(), Clone::clone)
    }

    pub fn number(&self, name: &str, default: u64) -> u64 {
        let text = self.text(name, &default.to_string());
        text.parse()
            .unwrap_or_else(|_| panic!("--{name} takes a whole number, not {text:?}"))
    }

    pub fn millis(&self, name: &str, default: u64) -> Duration {
        Duration::from_millis(self.number(name, default))
    }
}

/// The value below which `quantile` of the sorted samples fall (nearest rank).
pub fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&samples, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
