//! A user's token usage, month by month and model by model, with its
//! estimated cost where `LLM_PRICES` names the model.

use serde::Serialize;

use crate::{config::ModelPrice, store::MonthlyUsage};

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct UsageReport {
    /// This month's token quota, if one applies.
    pub quota: Quota,
    /// Newest first; the current month always leads, even before any chat.
    pub months: Vec<MonthReport>,
}

#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Quota {
    /// `null`: unlimited.
    pub monthly_tokens: Option<i64>,
    pub used_tokens: i64,
    pub remaining_tokens: Option<i64>,
}

impl Quota {
    pub fn new(monthly_tokens: Option<i64>, used_tokens: i64) -> Self {
        Self {
            monthly_tokens,
            used_tokens,
            remaining_tokens: monthly_tokens.map(|quota| (quota - used_tokens).max(0)),
        }
    }
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MonthReport {
    /// `YYYY-MM`, UTC.
    pub month: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub models: Vec<ModelReport>,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ModelReport {
    pub model: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Totals {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub requests: i64,
    /// Estimated USD; `null` when a model in it has no price configured.
    pub cost_usd: Option<f64>,
}

impl Totals {
    /// One model's figures, priced from `LLM_PRICES`.
    pub fn priced(
        model: &str,
        prompt_tokens: i64,
        completion_tokens: i64,
        requests: i64,
        prices: &[ModelPrice],
    ) -> Self {
        let price = prices.iter().find(|price| price.model == model);
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            requests,
            cost_usd: price.map(|price| {
                round_micro(
                    (prompt_tokens as f64 * price.input_per_million
                        + completion_tokens as f64 * price.output_per_million)
                        / 1e6,
                )
            }),
        }
    }

    pub fn zero() -> Self {
        Self {
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            requests: 0,
            cost_usd: Some(0.0),
        }
    }

    pub fn add(&mut self, other: &Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.requests += other.requests;
        self.cost_usd = self
            .cost_usd
            .zip(other.cost_usd)
            .map(|(a, b)| round_micro(a + b));
    }
}

/// `rows` as the store returns them: newest month first, then by model.
pub fn report(
    rows: &[MonthlyUsage],
    prices: &[ModelPrice],
    current_month: &str,
    quota: Quota,
) -> UsageReport {
    let mut months: Vec<MonthReport> = Vec::new();
    for row in rows {
        let model = ModelReport {
            model: row.model.clone(),
            totals: priced(row, prices),
        };
        match months.last_mut() {
            Some(month) if month.month == row.month => {
                month.totals.add(&model.totals);
                month.models.push(model);
            }
            _ => {
                let mut totals = Totals::zero();
                totals.add(&model.totals);
                months.push(MonthReport {
                    month: row.month.clone(),
                    totals,
                    models: vec![model],
                });
            }
        }
    }
    if months
        .first()
        .is_none_or(|month| month.month != current_month)
    {
        months.insert(
            0,
            MonthReport {
                month: current_month.to_owned(),
                totals: Totals::zero(),
                models: Vec::new(),
            },
        );
    }
    UsageReport { quota, months }
}

fn priced(row: &MonthlyUsage, prices: &[ModelPrice]) -> Totals {
    Totals::priced(
        &row.model,
        row.prompt_tokens,
        row.completion_tokens,
        row.requests,
        prices,
    )
}

/// Millionths of a dollar: finer than any bill, and free of float noise.
fn round_micro(usd: f64) -> f64 {
    (usd * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(month: &str, model: &str, prompt: i64, completion: i64, requests: i64) -> MonthlyUsage {
        MonthlyUsage {
            month: month.into(),
            model: model.into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            requests,
        }
    }

    fn price(model: &str, input: f64, output: f64) -> ModelPrice {
        ModelPrice {
            model: model.into(),
            input_per_million: input,
            output_per_million: output,
        }
    }

    #[test]
    fn groups_months_and_prices_each_model() {
        let rows = [
            row("2026-11", "gpt-4o-mini", 1_000_000, 500_000, 40),
            row("2026-11", "mock", 10, 20, 1),
            row("2026-10", "gpt-4o-mini", 2_000, 1_000, 3),
        ];
        let prices = [price("gpt-4o-mini", 0.15, 0.60), price("mock", 0.0, 0.0)];
        let report = report(&rows, &prices, "2026-11", Quota::new(None, 0));
        let november = &report.months[0];
        assert_eq!(november.month, "2026-11");
        assert_eq!(november.totals.total_tokens, 1_500_030);
        assert_eq!(november.totals.requests, 41);
        assert_eq!(november.totals.cost_usd, Some(0.45));
        assert_eq!(november.models[0].totals.cost_usd, Some(0.45));
        assert_eq!(report.months[1].totals.cost_usd, Some(0.0009));
    }

    #[test]
    fn an_unpriced_model_leaves_its_month_without_a_total_cost() {
        let rows = [
            row("2026-11", "a", 10, 10, 1),
            row("2026-11", "b", 10, 10, 1),
        ];
        let report = report(
            &rows,
            &[price("a", 1.0, 1.0)],
            "2026-11",
            Quota::new(None, 0),
        );
        let november = &report.months[0];
        assert_eq!(november.models[0].totals.cost_usd, Some(0.00002));
        assert_eq!(november.models[1].totals.cost_usd, None);
        assert_eq!(november.totals.cost_usd, None);
    }

    #[test]
    fn the_current_month_leads_even_before_any_chat() {
        let report = report(
            &[row("2026-10", "a", 1, 1, 1)],
            &[],
            "2026-11",
            Quota::new(Some(5), 9),
        );
        assert_eq!(report.months.len(), 2);
        assert_eq!(report.months[0].month, "2026-11");
        assert_eq!(report.months[0].totals.requests, 0);
        assert_eq!(report.months[1].totals.cost_usd, None);
        // An answer may overshoot the quota; what remains is never negative.
        assert_eq!(report.quota.remaining_tokens, Some(0));
    }
}
