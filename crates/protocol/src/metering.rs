//! Metered pricing on the wire (version 3 of the offer, voucher and receipt JSON).
//!
//! A metered offer carries `"version": 3` and a `metering` object; a metered voucher
//! `"version": 3` and `accepted`; a metered receipt `"version": 3` and its usage (`unitsIn`,
//! `unitsOut`, `outputBytes`, `ttfbMs`, `totalMs`, `cut`, `streamed`, `unitsEstimated`). Without
//! them the JSON is the v2 JSON, byte for byte. The signatures cover the v3 binary layouts of
//! [`x402pp_messages::metered`].
//!
//! ```json
//! "version": 3,
//! "metering": {"unit": "tokens", "unitSize": 1000, "unitPriceIn": "0", "unitPriceOut": "2000", "maxPerRequest": "1000"}
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x402pp_messages::{Cut, Metering, UnitKind};

use crate::encoding::Amount;

/// The version number the JSON of metered messages carries.
pub const METERED_VERSION: u8 = 3;

#[derive(Serialize, Deserialize)]
#[serde(remote = "UnitKind", rename_all = "snake_case")]
enum UnitKindDef {
    Tokens,
    Bytes,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Cut", rename_all = "snake_case")]
pub(crate) enum CutDef {
    None,
    ClientGone,
    UpstreamError,
    IdleTimeout,
    MaxDuration,
    HoldReached,
}

/// The usage prices of a metered offer, as the JSON carries them (the `metering` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteringTerms {
    /// What is counted: `"tokens"` (attested by the provider) or `"bytes"` (request and
    /// response body bytes, which the agent counts too).
    #[serde(with = "UnitKindDef")]
    pub unit: UnitKind,
    /// How many units the prices are for (e.g. 1 000 tokens); never 0.
    pub unit_size: u32,
    /// Atomic units per `unitSize` input units (0: input is free).
    pub unit_price_in: Amount,
    /// Atomic units per `unitSize` output units.
    pub unit_price_out: Amount,
    /// The most one request may cost: at least the base (`pricePerRequest`) and above 0. It is
    /// the request's price for x402 (the `session` option's `amount`, what an intent's
    /// `maxPricePerRequest` is compared with).
    pub max_per_request: Amount,
}

impl MeteringTerms {
    /// The terms as the signed layout holds them.
    pub const fn metering(&self) -> Metering {
        Metering {
            unit_price_in: self.unit_price_in.0,
            unit_price_out: self.unit_price_out.0,
            unit_size: self.unit_size,
            max_per_request: self.max_per_request.0,
            unit_kind: self.unit,
        }
    }
}

impl From<Metering> for MeteringTerms {
    fn from(m: Metering) -> Self {
        Self {
            unit: m.unit_kind,
            unit_size: m.unit_size,
            unit_price_in: Amount(m.unit_price_in),
            unit_price_out: Amount(m.unit_price_out),
            max_per_request: Amount(m.max_per_request),
        }
    }
}

impl From<MeteringTerms> for Metering {
    fn from(terms: MeteringTerms) -> Self {
        terms.metering()
    }
}

/// Checks a `version` field against whether the v3 fields are there: absent or 2 without them,
/// absent or 3 with them.
pub(crate) fn check_version(version: Option<u64>, metered: bool) -> Result<(), String> {
    match (version, metered) {
        (None, _) | (Some(2), false) => Ok(()),
        (Some(v), true) if v == u64::from(METERED_VERSION) => Ok(()),
        (Some(v), true) => Err(format!(
            "version {v} cannot carry metered fields (version 3)"
        )),
        (Some(v), false) => Err(format!(
            "version {v} without its metered fields (version 2 has none)"
        )),
    }
}

/// The offer's `version` and `metering` keys, flattened into the offer's JSON.
pub(crate) mod offer_fields {
    use super::*;

    #[derive(Serialize)]
    struct Out<'a> {
        version: u8,
        metering: &'a MeteringTerms,
    }

    #[derive(Deserialize)]
    struct In {
        #[serde(default)]
        version: Option<u64>,
        #[serde(default)]
        metering: Option<MeteringTerms>,
    }

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<MeteringTerms>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(metering) => Out {
                version: METERED_VERSION,
                metering,
            }
            .serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<MeteringTerms>, D::Error> {
        let In { version, metering } = In::deserialize(d)?;
        check_version(version, metering.is_some()).map_err(serde::de::Error::custom)?;
        Ok(metering)
    }
}

/// What a metered receipt adds to the v2 receipt: the usage it charged for and how the answer was
/// delivered. Its JSON sits in the receipt object beside the v2 fields, after `"version": 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptUsage {
    /// Input units (prompt tokens, or request body bytes).
    pub units_in: u64,
    /// Output units delivered.
    pub units_out: u64,
    /// Bytes of the response body covered by `outputHash`.
    pub output_bytes: u64,
    /// Voucher accepted → first billable byte handed to the connection, ms. The receipt's
    /// `latencyMs` equals it (the latency promise applies to it).
    pub ttfb_ms: u32,
    /// Voucher accepted → last byte handed to the connection (or the cut), ms.
    pub total_ms: u32,
    /// Why the answer stopped early ([`Cut::None`] when complete).
    pub cut: Cut,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Whether the units were estimated (counted from the output) rather than reported.
    pub units_estimated: bool,
}

impl ReceiptUsage {
    /// The `flags` byte of the signed layout.
    pub const fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.streamed {
            flags |= x402pp_messages::metered::FLAG_STREAMED;
        }
        if self.units_estimated {
            flags |= x402pp_messages::metered::FLAG_UNITS_ESTIMATED;
        }
        flags
    }
}

/// The receipt's v3 keys, flattened into the receipt's JSON.
pub(crate) mod receipt_fields {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        version: Option<u64>,
        units_in: Option<u64>,
        units_out: Option<u64>,
        output_bytes: Option<u64>,
        ttfb_ms: Option<u32>,
        total_ms: Option<u32>,
        #[serde(default, with = "opt_cut")]
        cut: Option<Cut>,
        streamed: Option<bool>,
        units_estimated: Option<bool>,
    }

    mod opt_cut {
        use super::*;

        #[derive(Serialize, Deserialize)]
        struct Wrap(#[serde(with = "CutDef")] Cut);

        pub(super) fn serialize<S: Serializer>(
            value: &Option<Cut>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            value.map(Wrap).serialize(s)
        }

        pub(super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Cut>, D::Error> {
            Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(cut)| cut))
        }
    }

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<ReceiptUsage>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(u) => Wire {
                version: Some(u64::from(METERED_VERSION)),
                units_in: Some(u.units_in),
                units_out: Some(u.units_out),
                output_bytes: Some(u.output_bytes),
                ttfb_ms: Some(u.ttfb_ms),
                total_ms: Some(u.total_ms),
                cut: Some(u.cut),
                streamed: Some(u.streamed),
                units_estimated: Some(u.units_estimated),
            }
            .serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<ReceiptUsage>, D::Error> {
        let w = Wire::deserialize(d)?;
        let usage = match (
            w.units_in,
            w.units_out,
            w.output_bytes,
            w.ttfb_ms,
            w.total_ms,
            w.cut,
            w.streamed,
            w.units_estimated,
        ) {
            (None, None, None, None, None, None, None, None) => None,
            (
                Some(units_in),
                Some(units_out),
                Some(output_bytes),
                Some(ttfb_ms),
                Some(total_ms),
                Some(cut),
                Some(streamed),
                Some(units_estimated),
            ) => Some(ReceiptUsage {
                units_in,
                units_out,
                output_bytes,
                ttfb_ms,
                total_ms,
                cut,
                streamed,
                units_estimated,
            }),
            _ => {
                return Err(serde::de::Error::custom(
                    "a metered receipt needs all of unitsIn, unitsOut, outputBytes, ttfbMs, \
                     totalMs, cut, streamed and unitsEstimated",
                ))
            }
        };
        check_version(w.version, usage.is_some()).map_err(serde::de::Error::custom)?;
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_must_agree_with_the_metered_fields() {
        assert!(check_version(None, false).is_ok());
        assert!(check_version(Some(2), false).is_ok());
        assert!(check_version(None, true).is_ok());
        assert!(check_version(Some(3), true).is_ok());
        assert!(check_version(Some(3), false).is_err());
        assert!(check_version(Some(2), true).is_err());
        assert!(check_version(Some(4), true).is_err());
    }

    #[test]
    fn metering_terms_have_the_documented_json() {
        let terms = MeteringTerms {
            unit: UnitKind::Tokens,
            unit_size: 1_000,
            unit_price_in: Amount(0),
            unit_price_out: Amount(2_000),
            max_per_request: Amount(1_000),
        };
        assert_eq!(
            serde_json::to_string(&terms).expect("serialises"),
            r#"{"unit":"tokens","unitSize":1000,"unitPriceIn":"0","unitPriceOut":"2000","maxPerRequest":"1000"}"#
        );
        assert_eq!(MeteringTerms::from(terms.metering()), terms);
        let bytes = serde_json::json!({"unit": "bytes", "unitSize": 1, "unitPriceIn": "1",
            "unitPriceOut": "1", "maxPerRequest": "9"});
        let parsed: MeteringTerms = serde_json::from_value(bytes).expect("parses");
        assert_eq!(parsed.unit, UnitKind::Bytes);
        let unknown = serde_json::json!({"unit": "words", "unitSize": 1, "unitPriceIn": "1",
            "unitPriceOut": "1", "maxPerRequest": "9"});
        assert!(serde_json::from_value::<MeteringTerms>(unknown).is_err());
    }
}
