//! Token amounts as people write them: `1.5` means 1.5 tokens of a mint with `decimals`
//! decimals (1 500 000 atomic units of a 6-decimals USDC), `--atomic` takes raw atomic units.
//!
//! Parsing and formatting work on the decimal digits as text, so there is no floating point and
//! no arithmetic that could overflow: more decimals than the mint has, a sign, anything but digits
//! and one `.`, or a value above `u64::MAX` atomic units are refused with an [`AmountError`].

use serde::Serialize;

/// Why a typed amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal number.
    #[error("`{0}` is not an amount: write digits with at most one `.`, like 1.5")]
    Invalid(String),
    /// A leading `-`.
    #[error("`{0}` is negative: amounts are 0 or more")]
    Negative(String),
    /// More fraction digits than the mint has.
    #[error("`{input}` has {given} decimal places; this amount has at most {decimals}")]
    TooManyDecimals {
        /// What was typed.
        input: String,
        /// Its significant fraction digits.
        given: usize,
        /// The mint's decimals.
        decimals: u8,
    },
    /// A fraction given where atomic units are expected.
    #[error("`{0}` is not a whole number of atomic units (--atomic takes integers)")]
    NotAtomic(String),
    /// Above `u64::MAX` atomic units.
    #[error("`{0}` is too large: it exceeds 18446744073709551615 atomic units")]
    Overflow(String),
}

/// Atomic units of `input`: UI units of a mint with `decimals` decimals, or atomic units when
/// `atomic` is set.
pub fn parse(input: &str, decimals: u8, atomic: bool) -> Result<u64, AmountError> {
    if atomic {
        parse_atomic(input)
    } else {
        parse_ui(input, decimals)
    }
}

/// Atomic units of a whole number.
pub fn parse_atomic(input: &str) -> Result<u64, AmountError> {
    let text = input.trim();
    check_sign(input, text)?;
    if text.contains('.') {
        return Err(AmountError::NotAtomic(input.to_owned()));
    }
    digits_to_u64(input, text)
}

/// Atomic units of `input` in UI units of a mint with `decimals` decimals.
pub fn parse_ui(input: &str, decimals: u8) -> Result<u64, AmountError> {
    let text = input.trim();
    check_sign(input, text)?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(AmountError::Invalid(input.to_owned()));
    }
    if !all_digits(whole) || !all_digits(fraction) {
        return Err(AmountError::Invalid(input.to_owned()));
    }
    // Trailing zeros carry no value: `1.50` is fine for a 1-decimal mint.
    let fraction = fraction.trim_end_matches('0');
    let places = usize::from(decimals);
    if fraction.len() > places {
        return Err(AmountError::TooManyDecimals {
            input: input.to_owned(),
            given: fraction.len(),
            decimals,
        });
    }
    let mut digits = String::with_capacity(whole.len().saturating_add(places));
    digits.push_str(whole);
    digits.push_str(fraction);
    digits.extend(std::iter::repeat_n(
        '0',
        places.saturating_sub(fraction.len()),
    ));
    digits_to_u64(input, &digits)
}

/// `atomic` in UI units of a mint with `decimals` decimals, without trailing zeros
/// (`1500000`, 6 → `1.5`; `0`, 6 → `0`).
pub fn format_ui(atomic: u64, decimals: u8) -> String {
    let places = usize::from(decimals);
    if places == 0 {
        return atomic.to_string();
    }
    let digits = atomic.to_string();
    // At least one digit before the point.
    let width = places.saturating_add(1);
    let padded = format!("{digits:0>width$}");
    let (whole, fraction) = padded.split_at(padded.len().saturating_sub(places));
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    }
}

fn check_sign(input: &str, text: &str) -> Result<(), AmountError> {
    if text.starts_with('-') {
        return Err(AmountError::Negative(input.to_owned()));
    }
    Ok(())
}

fn all_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

fn digits_to_u64(input: &str, digits: &str) -> Result<u64, AmountError> {
    if digits.is_empty() || !all_digits(digits) {
        return Err(AmountError::Invalid(input.to_owned()));
    }
    // Only digits are left, so the one way to fail is overflow.
    digits
        .parse::<u64>()
        .map_err(|_| AmountError::Overflow(input.to_owned()))
}

/// An amount in JSON output, in the shape of Solana's `UiTokenAmount`: atomic units as a string
/// (no precision lost in JavaScript), the mint's decimals, and the UI amount as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenAmount {
    /// Atomic units, as a decimal string.
    pub amount: String,
    /// Decimals of the mint.
    pub decimals: u8,
    /// The same amount in UI units (`"1.5"`).
    pub ui_amount_string: String,
}

impl TokenAmount {
    /// `atomic` units of a mint with `decimals` decimals.
    pub fn new(atomic: u64, decimals: u8) -> Self {
        Self {
            amount: atomic.to_string(),
            decimals,
            ui_amount_string: format_ui(atomic, decimals),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_amounts_scale_by_the_mints_decimals() {
        let cases: &[(&str, u8, u64)] = &[
            ("1.5", 6, 1_500_000),
            ("1", 6, 1_000_000),
            ("0.000001", 6, 1),
            (".5", 6, 500_000),
            ("5.", 6, 5_000_000),
            ("1.50", 1, 15),
            ("0", 6, 0),
            ("007", 2, 700),
            (" 2.25 ", 2, 225),
            ("42", 0, 42),
            ("18446744073709.551615", 6, u64::MAX),
        ];
        for &(input, decimals, atomic) in cases {
            assert_eq!(
                parse_ui(input, decimals),
                Ok(atomic),
                "{input} @ {decimals}"
            );
        }
    }

    #[test]
    fn ui_amounts_with_too_many_decimals_a_sign_or_junk_are_refused() {
        assert_eq!(
            parse_ui("1.0000001", 6),
            Err(AmountError::TooManyDecimals {
                input: "1.0000001".into(),
                given: 7,
                decimals: 6
            })
        );
        assert!(matches!(
            parse_ui("0.5", 0),
            Err(AmountError::TooManyDecimals { .. })
        ));
        assert_eq!(parse_ui("-1", 6), Err(AmountError::Negative("-1".into())));
        for junk in ["", ".", "1.2.3", "1e6", "+1", "1,5", "one", "0x10", "1 000"] {
            assert_eq!(
                parse_ui(junk, 6),
                Err(AmountError::Invalid(junk.into())),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn amounts_above_u64_max_atomic_units_overflow_instead_of_wrapping() {
        assert_eq!(
            parse_ui("18446744073709.551616", 6),
            Err(AmountError::Overflow("18446744073709.551616".into()))
        );
        assert!(matches!(parse_ui("1", 20), Err(AmountError::Overflow(_))));
        assert!(matches!(
            parse_atomic("18446744073709551616"),
            Err(AmountError::Overflow(_))
        ));
    }

    #[test]
    fn atomic_amounts_are_whole_numbers() {
        assert_eq!(parse("1500000", 6, true), Ok(1_500_000));
        assert_eq!(
            parse("1.5", 6, true),
            Err(AmountError::NotAtomic("1.5".into()))
        );
        assert_eq!(
            parse("-3", 6, true),
            Err(AmountError::Negative("-3".into()))
        );
    }

    #[test]
    fn formatting_drops_trailing_zeros_and_round_trips() {
        assert_eq!(format_ui(1_500_000, 6), "1.5");
        assert_eq!(format_ui(1, 6), "0.000001");
        assert_eq!(format_ui(0, 6), "0");
        assert_eq!(format_ui(10_000_000, 6), "10");
        assert_eq!(format_ui(42, 0), "42");
        assert_eq!(format_ui(u64::MAX, 6), "18446744073709.551615");
        assert_eq!(format_ui(7, 30), "0.000000000000000000000000000007");
        for atomic in [0, 1, 9, 10, 999_999, 1_000_000, 123_456_789, u64::MAX] {
            for decimals in [0, 1, 6, 9, 19] {
                assert_eq!(
                    parse_ui(&format_ui(atomic, decimals), decimals),
                    Ok(atomic),
                    "{atomic} @ {decimals}"
                );
            }
        }
    }

    #[test]
    fn json_amounts_carry_atomic_units_as_text_and_the_ui_amount() {
        assert_eq!(
            serde_json::to_value(TokenAmount::new(1_500_000, 6)).ok(),
            Some(serde_json::json!({
                "amount": "1500000", "decimals": 6, "uiAmountString": "1.5"
            }))
        );
    }
}
