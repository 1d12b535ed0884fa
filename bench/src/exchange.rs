//! `bench/exchange.sql` for the relays: its two statements with pgbench's
//! `:variables` as numbered parameters, and each request's values for them.

use anyhow::bail;

/// The variables exchange.sql takes, in the order `Exchanges::values` gives them.
const VARIABLES: [&str; 4] = ["sid", "uid", "month", "day"];

/// One statement of exchange.sql, its `:variables` numbered as parameters in
/// the order they first appear, as pgbench numbers them.
pub struct Statement {
    pub text: String,
    variables: Vec<usize>,
}

impl Statement {
    fn parse(script: &str) -> Self {
        let mut text = String::new();
        let mut variables = Vec::new();
        let mut rest = script.trim().trim_end_matches(';');
        while let Some(at) = rest.find(':') {
            text.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let named = VARIABLES.iter().position(|name| {
                rest.starts_with(name) && !rest[name.len()..].starts_with(is_word)
            });
            match named {
                Some(index) => {
                    let number = match variables.iter().position(|&seen| seen == index) {
                        Some(number) => number,
                        None => {
                            variables.push(index);
                            variables.len() - 1
                        }
                    };
                    text.push_str(&format!("${}", number + 1));
                    rest = &rest[VARIABLES[index].len()..];
                }
                None => text.push(':'),
            }
        }
        text.push_str(rest);
        Self { text, variables }
    }

    /// Which of a request's values (`Exchanges::values`) this statement's
    /// parameters are, in order: 0 and 1 are numbers, 2 and 3 text.
    pub fn parameters(&self) -> &[usize] {
        &self.variables
    }

    /// This statement's parameters, in order, from all of a request's values.
    pub fn values<'v>(&self, all: &'v [String; 4]) -> Vec<&'v str> {
        self.variables
            .iter()
            .map(|&index| all[index].as_str())
            .collect()
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// exchange.sql's two statements, without its comments and `\set` lines.
pub fn statements(script: &str) -> anyhow::Result<(Statement, Statement)> {
    let sql: String = script
        .lines()
        .filter(|line| !line.trim_start().starts_with("--") && !line.starts_with('\\'))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut parts = sql
        .split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty());
    let (Some(question), Some(answer), None) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--script should hold two statements");
    };
    Ok((Statement::parse(question), Statement::parse(answer)))
}

/// Where each request goes: like exchange.sql under pgbench, a random session
/// s of `sessions`, as user (s - 1) / 4 + 1.
pub struct Exchanges {
    pub sessions: u64,
    pub month: String,
    pub day: String,
}

impl Exchanges {
    /// The session a request goes to, and the values of `VARIABLES` for it.
    pub fn values(&self, random: &mut Random) -> (u64, [String; 4]) {
        let session = random.next_u64() % self.sessions + 1;
        let values = [
            session.to_string(),
            ((session - 1) / 4 + 1).to_string(),
            self.month.clone(),
            self.day.clone(),
        ];
        (session, values)
    }
}

/// xorshift64: the sessions spread as pgbench's `random` spreads them.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_variables_in_order_of_first_use() {
        let script = "-- a comment: :sid\n\\set sid random(1, :sessions)\n\
            SELECT :uid, :sid, :uid, 'a:b', :month::text, :sidx;\n\
            UPDATE t SET d = :day WHERE s = :sid;\n";
        let (question, answer) = statements(script).unwrap();
        assert_eq!(question.text, "SELECT $1, $2, $1, 'a:b', $3::text, :sidx");
        assert_eq!(question.parameters(), [1, 0, 2]);
        assert_eq!(answer.text, "UPDATE t SET d = $1 WHERE s = $2");
        assert_eq!(answer.parameters(), [3, 0]);
        let values = ["7", "2", "2026-12", "2026-12-06"].map(String::from);
        assert_eq!(answer.values(&values), ["2026-12-06", "7"]);
    }

    #[test]
    fn refuses_a_script_without_two_statements() {
        assert!(statements("SELECT 1;").is_err());
        assert!(statements("SELECT 1; SELECT 2; SELECT 3;").is_err());
    }

    #[test]
    fn sessions_stay_within_their_range_and_users_own_four() {
        let exchanges = Exchanges {
            sessions: 256,
            month: "2026-12".into(),
            day: "2026-12-06".into(),
        };
        let mut random = Random::new(3);
        for _ in 0..1_000 {
            let (session, values) = exchanges.values(&mut random);
            assert!((1..=256).contains(&session));
            assert_eq!(values[0], session.to_string());
            assert_eq!(values[1], ((session - 1) / 4 + 1).to_string());
        }
    }
}
