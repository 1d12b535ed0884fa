//! The time of one bcrypt hash at `--cost`, the floor of a login: prints
//! `{"cost": N, "median_ms": ..., "min_ms": ..., "max_ms": ...}` over `--hashes`.

use std::time::Instant;

use bench::{Flags, percentile};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let flags = Flags::from_env();
    let cost = u32::try_from(flags.number("cost", 12))?;
    let hashes = flags.number("hashes", 10);
    let mut millis: Vec<f64> = (0..hashes)
        .map(|_| {
            let started = Instant::now();
            bcrypt::hash("bench-password-1", cost).map(|_| started.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_, _>>()?;
    millis.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "cost": cost,
            "median_ms": percentile(&millis, 0.5),
            "min_ms": millis.first(),
            "max_ms": millis.last(),
        })
    );
    Ok(())
}
