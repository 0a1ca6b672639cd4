//! Human output: aligned tables (numbers right-aligned, text left-aligned, two spaces between
//! columns) and UTC times.

use std::fmt::Write as _;

/// How a column aligns its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table with a header row.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and alignments.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (title, _))| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .chain(std::iter::once(title.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let titles: Vec<String> = self.columns.iter().map(|(t, _)| (*t).to_owned()).collect();
        for row in std::iter::once(&titles).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, ((_, align), width)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = match align {
                    Align::Left => write!(line, "{cell:<width$}"),
                    Align::Right => write!(line, "{cell:>width$}"),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the keys padded to one width (`session show`).
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let _ = writeln!(out, "{key:<width$} {value}");
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian; the raw number outside the
/// years 0 to 9999).
pub fn utc(unix: i64) -> String {
    match civil(unix) {
        Some((y, mo, d, h, mi, s)) if (0..=9_999).contains(&y) => {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
        }
        _ => unix.to_string(),
    }
}

/// Howard Hinnant's `civil_from_days`, with checked arithmetic.
fn civil(unix: i64) -> Option<(i64, i64, i64, i64, i64, i64)> {
    let days = unix.checked_div_euclid(86_400)?;
    let secs = unix.checked_rem_euclid(86_400)?;
    let z = days.checked_add(719_468)?;
    let era = z.checked_div_euclid(146_097)?;
    let doe = z.checked_sub(era.checked_mul(146_097)?)?;
    let yoe = doe
        .checked_sub(doe.checked_div(1_460)?)?
        .checked_add(doe.checked_div(36_524)?)?
        .checked_sub(doe.checked_div(146_096)?)?
        .checked_div(365)?;
    let doy = doe.checked_sub(
        yoe.checked_mul(365)?
            .checked_add(yoe.checked_div(4)?)?
            .checked_sub(yoe.checked_div(100)?)?,
    )?;
    let mp = doy.checked_mul(5)?.checked_add(2)?.checked_div(153)?;
    let day = doy
        .checked_sub(mp.checked_mul(153)?.checked_add(2)?.checked_div(5)?)?
        .checked_add(1)?;
    let month = if mp < 10 {
        mp.checked_add(3)?
    } else {
        mp.checked_sub(9)?
    };
    let year = yoe
        .checked_add(era.checked_mul(400)?)?
        .checked_add(i64::from(month <= 2))?;
    Some((
        year,
        month,
        day,
        secs.checked_div(3_600)?,
        secs.checked_rem(3_600)?.checked_div(60)?,
        secs.checked_rem(60)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_numbers_right_and_text_left() {
        let mut table = Table::new(&[("NAME", Align::Left), ("AMOUNT", Align::Right)]);
        table.row(vec!["a".into(), "1.5".into()]);
        table.row(vec!["longer".into(), "1000".into()]);
        assert_eq!(
            table.render(),
            "NAME    AMOUNT\n\
             a          1.5\n\
             longer    1000\n"
        );
    }

    #[test]
    fn fields_pad_their_keys() {
        assert_eq!(
            fields(&[("a", "1".into()), ("long", "2".into())]),
            "a:    1\nlong: 2\n"
        );
    }

    #[test]
    fn unix_seconds_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_237_045), "2026-12-02 18:44:05 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(utc(i64::MAX), i64::MAX.to_string());
    }
}
