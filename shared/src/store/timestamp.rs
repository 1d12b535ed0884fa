//! Timestamps as the stores write them.
//!
//! Postgres compares `timestamptz` values. SQLite and DynamoDB compare text, and
//! sqlx's default RFC 3339 text trims trailing zeros (`…:05Z` sorts after
//! `…:05.5Z`), so there every timestamp is written with exactly six fractional
//! digits: then text order is time order, for `ORDER BY updated_at`,
//! `expires_at > $n` and DynamoDB's activity key.

use sqlx::{Database, Encode, Postgres, Sqlite, Type, encode::IsNull, error::BoxDynError};
use time::{OffsetDateTime, UtcOffset, format_description::FormatItem, macros::format_description};

const SORTABLE_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

#[derive(Debug, Clone, Copy)]
pub struct DbTime(pub OffsetDateTime);

impl DbTime {
    pub fn sortable_text(self) -> Result<String, time::error::Format> {
        self.0.to_offset(UtcOffset::UTC).format(SORTABLE_FORMAT)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.sortable_text()?, buf)
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <OffsetDateTime as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::DbTime;

    #[test]
    fn sortable_text_has_a_fixed_width_so_it_sorts_as_time() {
        let whole = DbTime(datetime!(2026-11-27 12:00:05 UTC))
            .sortable_text()
            .unwrap();
        let half = DbTime(datetime!(2026-11-27 12:00:05.5 UTC))
            .sortable_text()
            .unwrap();
        assert_eq!(whole, "2026-11-27T12:00:05.000000Z");
        assert_eq!(half, "2026-11-27T12:00:05.500000Z");
        assert!(whole < half);
    }
}
