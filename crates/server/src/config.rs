//! What a provider sells: per-route prices and terms, and the provider's identity.

use std::collections::BTreeMap;
use std::time::Duration;

use x402pp_protocol::bazaar::{DeclarationError, DiscoveryDeclaration};
use x402pp_protocol::messages::Metering;
use x402pp_protocol::{Network, OfferSla};

use crate::limits::{RateLimit, RequestLimits};

/// Price and terms of one paid route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePrice {
    /// Atomic units per successful request.
    pub price_per_request: u64,
    /// Smallest deposit accepted for a session.
    pub min_deposit: u64,
    /// Session lifetime offered.
    pub session_ttl_secs: u64,
    /// Claim window after expiry or close request; at least
    /// [`ServerConfig::min_grace_secs`] (checked by [`ServerConfig::validate`]).
    pub grace_secs: u64,
    /// SLA terms offered.
    pub sla: OfferSla,
    /// Whether the x402 `exact` scheme is accepted as a fallback.
    pub exact: bool,
    /// How long a signed offer can open a session.
    pub offer_ttl_secs: u64,
    /// Description in the x402 challenge.
    pub description: String,
    /// MIME type of the response, in the x402 challenge.
    pub mime_type: String,
    /// The most session requests the route serves at once (`None`: no limit). At the limit a
    /// session request gets `503 overloaded` with `Retry-After` before its voucher is accepted
    /// (nothing charged), rather than being served late, into a latency breach. Set it to what
    /// the handler can answer within `sla.max_latency_ms`.
    pub max_in_flight: Option<u32>,
    /// What the route does, as intents name it (`X-402-Intent.capability`, e.g. `inference`):
    /// an intent for another capability gets `402 no_acceptable_offer`; `None` answers any.
    pub capability: Option<String>,
    /// How to call the route and what it answers (method, input and output examples and JSON
    /// schemas), advertised as the x402 v2 `bazaar` extension in the `extensions` of every
    /// `PAYMENT-REQUIRED` the route sends; `None`: the route is not advertised.
    pub discovery: Option<DiscoveryDeclaration>,
    /// Commitment price tiers: an intent whose `commitment` reaches a tier's `min_deposit` is
    /// answered with the cheapest such tier (its price and its `min_deposit` signed in the
    /// offer; the escrow refuses a smaller deposit). Each tier must be cheaper than
    /// `price_per_request` and ask more than `min_deposit` ([`ServerConfig::validate`]). Empty
    /// (the default): one price for everyone.
    pub tiers: Vec<PriceTier>,
    /// Usage pricing (`None`: a fixed price). When set, `price_per_request` is the base charged
    /// per request and the route opens metered sessions (offer, voucher and receipt v3): each
    /// request is charged its units at these prices, at most `max_per_request`, which is also
    /// the route's x402 price (the `session` option's amount) and its `exact` price. Handlers
    /// report units through [`crate::UsageReporter`]; SSE answers are counted by the layer.
    pub metering: Option<Metering>,
}

/// A commitment price tier of a route: sessions that lock at least `min_deposit` pay
/// `price_per_request` (e.g. "deposit ≥ 1 000 000 → 800 instead of 1 000").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PriceTier {
    /// The smallest deposit of the tier: the `min_deposit` of the offers it answers with.
    pub min_deposit: u64,
    /// The tier's price per successful request, atomic units.
    pub price_per_request: u64,
}

impl PriceTier {
    /// The tier locking at least `min_deposit` at `price_per_request`.
    pub const fn new(min_deposit: u64, price_per_request: u64) -> Self {
        Self {
            min_deposit,
            price_per_request,
        }
    }
}

impl std::fmt::Display for PriceTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.min_deposit, self.price_per_request)
    }
}

/// A [`PriceTier`] written `MIN_DEPOSIT:PRICE` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a tier: expected MIN_DEPOSIT:PRICE in atomic units (e.g. 1000000:800)")]
pub struct PriceTierParseError {
    /// What was given.
    pub input: String,
}

impl std::str::FromStr for PriceTier {
    type Err = PriceTierParseError;

    /// `MIN_DEPOSIT:PRICE`, both in atomic units (`1000000:800`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || PriceTierParseError {
            input: s.to_owned(),
        };
        let (deposit, price) = s.trim().split_once(':').ok_or_else(error)?;
        let number = |text: &str| -> Result<u64, PriceTierParseError> {
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error());
            }
            text.parse().map_err(|_| error())
        };
        Ok(Self::new(number(deposit)?, number(price)?))
    }
}

/// The input bound of [`RoutePrice::new`]'s latency promise: 64 KiB of request body.
pub const DEFAULT_MAX_INPUT_BYTES: u32 = 64 * 1024;

impl RoutePrice {
    /// A route at `price_per_request` with defaults: deposit 100 × price, one-hour sessions,
    /// ten-minute grace, a 1 s latency promise for request bodies up to
    /// [`DEFAULT_MAX_INPUT_BYTES`] with a 50 % penalty, exact on.
    pub fn new(price_per_request: u64) -> Self {
        Self {
            price_per_request,
            min_deposit: price_per_request.saturating_mul(100),
            session_ttl_secs: 3_600,
            grace_secs: 600,
            sla: OfferSla {
                max_latency_ms: 1_000,
                max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
                latency_penalty_bps: 5_000,
            },
            exact: true,
            offer_ttl_secs: 300,
            description: "paid API".into(),
            mime_type: "application/json".into(),
            max_in_flight: None,
            capability: None,
            discovery: None,
            tiers: Vec::new(),
            metering: None,
        }
    }

    /// A metered route: `base` per request plus `metering`'s unit prices, at most
    /// `metering.max_per_request` per request; the deposit defaults to 100 × that maximum.
    pub fn metered(base: u64, metering: Metering) -> Self {
        Self {
            min_deposit: metering.max_per_request.saturating_mul(100),
            metering: Some(metering),
            ..Self::new(base)
        }
    }

    /// The most one request can cost: `max_per_request` when metered, else the price.
    pub fn max_per_request(&self) -> u64 {
        self.metering
            .map_or(self.price_per_request, |m| m.max_per_request)
    }

    /// The same route with commitment price tier `tier` added.
    pub fn with_tier(mut self, tier: PriceTier) -> Self {
        self.tiers.push(tier);
        self
    }

    /// The tier an intent committing `commitment` gets: the cheapest whose `min_deposit` it
    /// reaches (of equal prices, the smallest deposit); `None` without a commitment or when it
    /// reaches none (the base terms apply).
    pub fn tier_for(&self, commitment: Option<u64>) -> Option<&PriceTier> {
        let commitment = commitment?;
        self.tiers
            .iter()
            .filter(|tier| tier.min_deposit <= commitment)
            .min_by_key(|tier| (tier.price_per_request, tier.min_deposit))
    }

    /// The price and minimum deposit an offer of this route signs for an intent committing
    /// `commitment`: its tier's, or the route's own.
    pub fn price_for(&self, commitment: Option<u64>) -> (u64, u64) {
        match self.tier_for(commitment) {
            Some(tier) => (tier.price_per_request, tier.min_deposit),
            None => (self.price_per_request, self.min_deposit),
        }
    }

    /// The deposit a session charging `price_per_request` must lock to be served at that price
    /// on this route: nothing more for the route's own price, a tier's `min_deposit` for a
    /// tier's price (the smallest, should two tiers share a price); `None` when no price of the
    /// route is `price_per_request`.
    pub fn deposit_for_price(&self, price_per_request: u64) -> Option<u64> {
        if price_per_request == self.price_per_request {
            return Some(0);
        }
        self.tiers
            .iter()
            .filter(|tier| tier.price_per_request == price_per_request)
            .map(|tier| tier.min_deposit)
            .min()
    }

    /// Whether a session charging `price_per_request` with `deposit` locked may be served at
    /// one of this route's prices: its own, or a tier's with at least the tier's `min_deposit`
    /// locked. (The session account stores the deposit, not the signed `min_deposit`; the
    /// escrow made the opening deposit at least the signed minimum and top-ups only raise it,
    /// so a session opened on a tier's offer always passes, and one that never locked the
    /// tier's deposit never does.) The SLA terms are compared separately.
    pub fn prices(&self, price_per_request: u64, deposit: u64) -> bool {
        self.deposit_for_price(price_per_request)
            .is_some_and(|needed| deposit >= needed)
    }

    /// The same route, advertised for discovery with `declaration`.
    pub fn with_discovery(mut self, declaration: DiscoveryDeclaration) -> Self {
        self.discovery = Some(declaration);
        self
    }
}

/// The provider's configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// CAIP-2 network of the escrow and payments.
    pub network: Network,
    /// The mint prices are in.
    pub mint: solana_sdk::pubkey::Pubkey,
    /// Public base URL (scheme://host:port) used in offers' `resource`.
    pub public_url: String,
    /// Paid routes by path; unlisted routes are free.
    pub routes: BTreeMap<String, RoutePrice>,
    /// Largest request body hashed into receipts.
    pub max_request_body: usize,
    /// Largest response body hashed into receipts.
    pub max_response_body: usize,
    /// A handler that runs longer gets a `timeout` receipt and a 504.
    pub handler_timeout: Duration,
    /// A request whose voucher was accepted longer than `handler_timeout + orphan_grace` ago
    /// and which still has no receipt was cut off by a crash: it gets a zero-charge
    /// `handler_error` receipt when its session is next used (see docs/reliability.md).
    pub orphan_grace: Duration,
    /// A streamed answer (an SSE answer on a metered session) that sends nothing for this long
    /// is cut and charged what it delivered (`partial`, `idle_timeout`; nothing delivered:
    /// `timeout`, 0).
    pub stream_idle_timeout: Duration,
    /// A streamed answer running longer than this (from its voucher's acceptance) is cut and
    /// charged what it delivered (`partial`, `max_duration`). It also bounds how long a request
    /// on a metered session may go without a receipt before another replica takes it for one a
    /// crash cut off.
    pub stream_max_duration: Duration,
    /// Cached sessions are refreshed from the chain after this long: a session whose agent
    /// asked to close is served from the cache for up to this long after the request (see
    /// [`ServerConfig::min_grace_secs`]).
    pub session_refresh: Duration,
    /// How long the provider's settlement task may take to notice that a session is closing (or
    /// its claim deadline nears) and land a claim: its tick, a confirmation and a margin
    /// (default 30 s, for the settler's default 10 s tick). With
    /// [`ServerConfig::session_refresh`] it bounds the grace a route may offer.
    pub claim_lead: Duration,
    /// At most this many sessions are cached (least recently used go first); an entry also
    /// leaves the cache `session_refresh` after it was last written.
    pub max_cached_sessions: u64,
    /// Per-session rate on paid routes (default 5 000/s, bursts of 5 000; `None` turns it off),
    /// counted only for requests whose voucher verified against the session's voucher signer:
    /// junk sent under a (public) session id is refused without using the agent's quota. A
    /// session's requests are sequential, so an honest agent stays far below it.
    pub per_session_rate: Option<RateLimit>,
    /// Limits on every request (header bytes, body bytes, read timeout, per-IP rate), applied by
    /// [`crate::limits::RequestLimitsLayer`] (the reference provider's `app` adds it).
    pub limits: RequestLimits,
    /// Fee sponsorship of this provider's sessions (`None`, the default: agents pay their own
    /// fees and rent). When set, the provider's key pays the fees and rent of its agents'
    /// escrow transactions under this policy (its `providers` are replaced by the provider
    /// itself: it sponsors its own sessions only), served at [`crate::sponsor::SPONSOR_PATH`]
    /// and named in every session option (docs/protocol.md, "Fee-sponsored sessions").
    pub sponsor: Option<x402pp_solana::sponsor::SponsorPolicy>,
}

impl ServerConfig {
    /// A configuration with default limits and no routes.
    pub fn new(
        network: Network,
        mint: solana_sdk::pubkey::Pubkey,
        public_url: impl Into<String>,
    ) -> Self {
        Self {
            network,
            mint,
            public_url: public_url.into(),
            routes: BTreeMap::new(),
            max_request_body: 1024 * 1024,
            max_response_body: 16 * 1024 * 1024,
            handler_timeout: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(30),
            stream_max_duration: Duration::from_secs(600),
            session_refresh: Duration::from_secs(30),
            claim_lead: Duration::from_secs(30),
            max_cached_sessions: 100_000,
            per_session_rate: RateLimit::per_second(5_000, 5_000),
            limits: RequestLimits::default(),
            sponsor: None,
        }
    }

    /// Adds a paid route.
    pub fn route(mut self, path: impl Into<String>, price: RoutePrice) -> Self {
        self.routes.insert(path.into(), price);
        self
    }

    /// The shortest grace a route may offer, in whole seconds: `session_refresh + claim_lead`,
    /// rounded up, and never below the program's own floor
    /// (`session_escrow::constants::MIN_GRACE_SECS`, which refuses to open a session on a
    /// shorter one). After an agent's `request_close` the program accepts claims for the grace;
    /// the provider may serve from its cache for up to `session_refresh` after the request, and
    /// its settler needs `claim_lead` to claim what those requests earned. A shorter grace would
    /// serve requests that can never be claimed.
    pub fn min_grace_secs(&self) -> u64 {
        let needed = self.session_refresh.saturating_add(self.claim_lead);
        needed
            .as_secs()
            .saturating_add(u64::from(needed.subsec_nanos() > 0))
            .max(session_escrow::constants::MIN_GRACE_SECS)
    }

    /// Checks the configuration before a provider serves it: every route's grace is at least
    /// [`ServerConfig::min_grace_secs`], every discovery declaration fits its method, and every
    /// price tier is a discount for a larger deposit (cheaper than the route's price, asking
    /// more than its `min_deposit`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let required_secs = self.min_grace_secs();
        for (route, price) in &self.routes {
            if let Some(declaration) = &price.discovery {
                declaration
                    .validate()
                    .map_err(|source| ConfigError::Discovery {
                        route: route.clone(),
                        source,
                    })?;
            }
            if let Some(metering) = &price.metering {
                let reason = if !metering.is_valid(price.price_per_request) {
                    Some(format!(
                        "unit size {} must be above 0, max_per_request {} above 0 and at least \
                         the base {}",
                        metering.unit_size, metering.max_per_request, price.price_per_request
                    ))
                } else if !price.tiers.is_empty() {
                    Some("commitment tiers are for fixed-price routes".to_owned())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(ConfigError::InvalidMetering {
                        route: route.clone(),
                        reason,
                    });
                }
            }
            for tier in &price.tiers {
                let reason = if tier.price_per_request >= price.price_per_request {
                    Some(format!(
                        "its price {} is not below the route's {}",
                        tier.price_per_request, price.price_per_request
                    ))
                } else if tier.min_deposit <= price.min_deposit {
                    Some(format!(
                        "its deposit {} is not above the route's min_deposit {}",
                        tier.min_deposit, price.min_deposit
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(ConfigError::InvalidTier {
                        route: route.clone(),
                        tier: *tier,
                        reason,
                    });
                }
            }
            if price.grace_secs < required_secs {
                return Err(ConfigError::GraceTooShort {
                    route: route.clone(),
                    grace_secs: price.grace_secs,
                    required_secs,
                    session_refresh_secs: self.session_refresh.as_secs_f64(),
                    claim_lead_secs: self.claim_lead.as_secs_f64(),
                });
            }
        }
        Ok(())
    }
}

/// A configuration the provider refuses to serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A route's grace is shorter than the provider needs to claim what it serves after a close
    /// request.
    #[error(
        "route {route}: grace_secs {grace_secs} is too short; the provider needs at least \
         {required_secs} s (session_refresh {session_refresh_secs} s, during which a closing \
         session may still be served from the cache, + claim_lead {claim_lead_secs} s to claim \
         it): raise the grace or lower session_refresh / claim_lead"
    )]
    GraceTooShort {
        /// The route's path.
        route: String,
        /// The grace it offers.
        grace_secs: u64,
        /// The shortest grace accepted ([`ServerConfig::min_grace_secs`]).
        required_secs: u64,
        /// [`ServerConfig::session_refresh`], in seconds.
        session_refresh_secs: f64,
        /// [`ServerConfig::claim_lead`], in seconds.
        claim_lead_secs: f64,
    },
    /// A route's `PAYMENT-REQUIRED` (its payment options, signed offer and extensions, base64)
    /// would not fit in the header size clients decode.
    #[error(
        "route {route}: its PAYMENT-REQUIRED header would be {bytes} bytes, over the {limit} a \
         client decodes: shorten its description or discovery declaration"
    )]
    ChallengeTooLarge {
        /// The route's path.
        route: String,
        /// The encoded header's size.
        bytes: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// A route's commitment price tier is not a discount for a larger deposit.
    #[error(
        "route {route}: tier {tier} (MIN_DEPOSIT:PRICE): {reason}; a tier must be cheaper than \
         the route's price and ask a larger deposit than its min_deposit"
    )]
    InvalidTier {
        /// The route's path.
        route: String,
        /// The tier.
        tier: PriceTier,
        /// What is wrong with it.
        reason: String,
    },
    /// A metered route's terms cannot be signed.
    #[error("route {route}: metering: {reason}")]
    InvalidMetering {
        /// The route's path.
        route: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A route's discovery declaration cannot be advertised.
    #[error("route {route}: discovery declaration: {source}")]
    Discovery {
        /// The route's path.
        route: String,
        /// What is wrong with it.
        source: DeclarationError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiered() -> RoutePrice {
        // Base 1 000 with a 100 000 minimum; 800 from 1 000 000, 600 from 5 000 000.
        RoutePrice::new(1_000)
            .with_tier(PriceTier::new(5_000_000, 600))
            .with_tier(PriceTier::new(1_000_000, 800))
    }

    #[test]
    fn an_intent_gets_the_cheapest_tier_its_commitment_reaches() {
        let route = tiered();
        assert_eq!(route.price_for(None), (1_000, 100_000));
        assert_eq!(route.price_for(Some(999_999)), (1_000, 100_000));
        assert_eq!(route.price_for(Some(1_000_000)), (800, 1_000_000));
        assert_eq!(route.price_for(Some(4_999_999)), (800, 1_000_000));
        assert_eq!(route.price_for(Some(u64::MAX)), (600, 5_000_000));
        assert_eq!(
            RoutePrice::new(1_000).price_for(Some(u64::MAX)),
            (1_000, 100_000)
        );
    }

    #[test]
    fn a_session_binds_to_a_tier_price_only_with_the_tiers_deposit() {
        let route = tiered();
        assert!(route.prices(1_000, 1));
        assert!(route.prices(800, 1_000_000));
        assert!(route.prices(800, 7_000_000));
        assert!(!route.prices(800, 999_999));
        assert!(!route.prices(600, 4_999_999));
        assert!(!route.prices(700, u64::MAX), "not a price of the route");
    }

    #[test]
    fn tiers_are_read_as_min_deposit_colon_price() {
        assert_eq!("1000000:800".parse(), Ok(PriceTier::new(1_000_000, 800)));
        assert_eq!(" 5 : 4 ".parse(), Ok(PriceTier::new(5, 4)));
        for bad in [
            "", "800", ":800", "1000000:", "+1:2", "1:-2", "1e6:800", "1:2:3",
        ] {
            assert!(bad.parse::<PriceTier>().is_err(), "{bad:?} was read");
        }
        assert_eq!(PriceTier::new(1_000_000, 800).to_string(), "1000000:800");
    }

    #[test]
    fn a_tier_that_is_no_discount_for_a_larger_deposit_is_refused() {
        let Ok(mint) = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU".parse() else {
            panic!("a valid key");
        };
        let config = |tier: PriceTier| {
            ServerConfig::new(Network::solana_devnet(), mint, "http://127.0.0.1:8080")
                .route("/v1/inference", RoutePrice::new(1_000).with_tier(tier))
        };
        assert_eq!(config(PriceTier::new(1_000_000, 800)).validate(), Ok(()));
        for tier in [
            PriceTier::new(1_000_000, 1_000),
            PriceTier::new(1_000_000, 1_200),
            PriceTier::new(100_000, 800),
            PriceTier::new(1, 800),
        ] {
            let result = config(tier).validate();
            assert!(
                matches!(&result, Err(ConfigError::InvalidTier { tier: t, .. }) if *t == tier),
                "{tier}: {result:?}"
            );
        }
    }
}
