//! The discovery catalog behind `GET /discovery/resources` (x402 v2 `bazaar`).
//!
//! Every payment this facilitator settles whose payload carries a valid `bazaar` extension (the
//! provider declares it in its `PAYMENT-REQUIRED`; x402 clients echo the challenge's
//! `extensions` in their payment) puts its resource in the catalog: the resource URL (origin and
//! path), the requirements it was paid with, the payment's description and MIME type, and the
//! extension. A resource without the extension did not ask to be listed and is not; an invalid
//! extension is logged and the resource is not listed. Only settled payments count: a
//! verification alone lists nothing, so every entry cost its provider's customer a real payment.
//!
//! Memory is bounded: at most [`Catalog::capacity`] resources (10 000 by default), the least
//! recently paid for leaving first; an extension larger than [`MAX_EXTENSION_BYTES`] and a URL
//! longer than [`MAX_URL_BYTES`] are not kept; a resource keeps at most [`MAX_ACCEPTS`] ways to
//! pay (the latest per scheme, network, asset and recipient).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Map, Value};
use x402pp_protocol::bazaar::{
    BazaarError, BazaarExtension, DiscoveryResource, DiscoveryResourcesResponse, Pagination,
    BAZAAR, RESOURCE_TYPE_HTTP,
};
use x402pp_protocol::x402::FacilitatorRequest;

/// Resources kept by default.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Items per page when the query gives no `limit`.
pub const DEFAULT_LIMIT: u64 = 100;
/// The largest `limit` a query may ask for.
pub const MAX_LIMIT: u64 = 1_000;
/// The largest `bazaar` extension kept, serialized.
pub const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// The longest resource URL kept.
pub const MAX_URL_BYTES: usize = 2_048;
/// Ways to pay kept per resource.
pub const MAX_ACCEPTS: usize = 8;

/// Why a settled payment did not put its resource in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotListed {
    /// The payload has no `bazaar` extension: the resource did not ask to be listed.
    #[error("the payment carries no bazaar extension")]
    NoExtension,
    /// The `bazaar` extension is invalid.
    #[error(transparent)]
    Invalid(#[from] BazaarError),
    /// The extension is larger than [`MAX_EXTENSION_BYTES`].
    #[error("the bazaar extension is {0} bytes, more than {MAX_EXTENSION_BYTES}")]
    TooLarge(usize),
    /// The payload names no resource, or one that is not an http(s) URL of at most
    /// [`MAX_URL_BYTES`].
    #[error("the payment names no http(s) resource URL of at most {MAX_URL_BYTES} bytes")]
    NoResource,
    /// The catalog's capacity is 0.
    #[error("the discovery catalog is off (capacity 0)")]
    Off,
}

/// A query of `GET /discovery/resources` (the official `ListDiscoveryResourcesParams`); unknown
/// parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Only resources of this type (`http`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only resources paid to this address.
    pub pay_to: Option<String>,
    /// Only resources paid with this scheme.
    pub scheme: Option<String>,
    /// Only resources paid on this network (CAIP-2).
    pub network: Option<String>,
    /// Only resources carrying this extension key.
    pub extensions: Option<String>,
    /// Items per page, 1 to [`MAX_LIMIT`] ([`DEFAULT_LIMIT`] when absent).
    pub limit: Option<u64>,
    /// Items to skip (0 when absent).
    pub offset: Option<u64>,
}

/// A query the catalog refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// `limit` outside 1..=[`MAX_LIMIT`].
    #[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
    Limit(u64),
}

struct Entry {
    stamp: u64,
    resource: DiscoveryResource,
}

#[derive(Default)]
struct Inner {
    next_stamp: u64,
    by_url: HashMap<String, Entry>,
    /// Stamp → URL, oldest first.
    by_stamp: BTreeMap<u64, String>,
}

/// The catalog of paid, discoverable resources.
pub struct Catalog {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Catalog {
    /// An empty catalog of at most `capacity` resources (0: nothing is listed).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The most resources kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Resources listed now.
    pub fn len(&self) -> usize {
        self.lock().by_url.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (each update is a few inserts).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lists the resource of a settled payment, at `now_secs` (unix seconds); the resource
    /// becomes the most recent, the least recent leaves when the catalog is full.
    pub fn record(&self, request: &FacilitatorRequest, now_secs: u64) -> Result<(), NotListed> {
        if self.capacity == 0 {
            return Err(NotListed::Off);
        }
        let payload = &request.payment_payload;
        let extension = BazaarExtension::from_extensions(payload.extensions.as_ref())
            .ok_or(NotListed::NoExtension)??;
        let extension = serde_json::to_value(&extension).map_err(|e| {
            NotListed::Invalid(BazaarError::Malformed(format!("cannot re-encode: {e}")))
        })?;
        let size = extension.to_string().len();
        if size > MAX_EXTENSION_BYTES {
            return Err(NotListed::TooLarge(size));
        }
        let info = payload.resource.as_ref().ok_or(NotListed::NoResource)?;
        let url = canonical_url(&info.url).ok_or(NotListed::NoResource)?;
        let mut extensions = Map::new();
        extensions.insert(BAZAAR.into(), extension);
        let requirements = request.payment_requirements.clone();

        let mut inner = self.lock();
        let stamp = inner.next_stamp;
        inner.next_stamp = inner.next_stamp.saturating_add(1);
        let mut accepts = match inner.by_url.remove(&url) {
            Some(old) => {
                inner.by_stamp.remove(&old.stamp);
                old.resource.accepts
            }
            None => Vec::new(),
        };
        accepts.retain(|a| {
            (&a.scheme, &a.network, &a.asset, &a.pay_to)
                != (
                    &requirements.scheme,
                    &requirements.network,
                    &requirements.asset,
                    &requirements.pay_to,
                )
        });
        accepts.insert(0, requirements);
        accepts.truncate(MAX_ACCEPTS);
        while inner.by_url.len() >= self.capacity {
            let Some((_, oldest)) = inner.by_stamp.pop_first() else {
                break;
            };
            inner.by_url.remove(&oldest);
        }
        let resource = DiscoveryResource {
            resource: url.clone(),
            kind: RESOURCE_TYPE_HTTP.into(),
            x402_version: 2,
            accepts,
            last_updated: rfc3339(now_secs),
            description: info.description.clone(),
            mime_type: info.mime_type.clone(),
            extensions: Some(Value::Object(extensions)),
        };
        inner.by_stamp.insert(stamp, url.clone());
        inner.by_url.insert(url, Entry { stamp, resource });
        Ok(())
    }

    /// One page of the resources matching `query`, most recently paid for first.
    pub fn list(&self, query: &ListQuery) -> Result<DiscoveryResourcesResponse, QueryError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError::Limit(limit));
        }
        let offset = query.offset.unwrap_or(0);
        let inner = self.lock();
        let matching = inner
            .by_stamp
            .values()
            .rev()
            .filter_map(|url| inner.by_url.get(url))
            .map(|entry| &entry.resource)
            .filter(|r| matches(r, query));
        let mut total: u64 = 0;
        let mut items = Vec::new();
        for resource in matching {
            if total >= offset && (items.len() as u64) < limit {
                items.push(resource.clone());
            }
            total = total.saturating_add(1);
        }
        Ok(DiscoveryResourcesResponse {
            x402_version: 2,
            items,
            pagination: Pagination {
                limit,
                offset,
                total,
            },
        })
    }
}

fn matches(resource: &DiscoveryResource, query: &ListQuery) -> bool {
    let any_accept = |want: &Option<String>, field: fn(&_) -> String| {
        want.as_ref()
            .is_none_or(|want| resource.accepts.iter().any(|a| &field(a) == want))
    };
    query.kind.as_ref().is_none_or(|k| &resource.kind == k)
        && any_accept(&query.pay_to, |a| a.pay_to.clone())
        && any_accept(&query.scheme, |a| a.scheme.clone())
        && any_accept(&query.network, |a| a.network.to_string())
        && query.extensions.as_ref().is_none_or(|key| {
            resource
                .extensions
                .as_ref()
                .is_some_and(|e| e.get(key).is_some())
        })
}

/// `scheme://authority/path` of an http(s) URL (query and fragment dropped), when it is one of
/// at most [`MAX_URL_BYTES`].
fn canonical_url(url: &str) -> Option<String> {
    if url.len() > MAX_URL_BYTES || url.chars().any(char::is_control) {
        return None;
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end == 0 {
        return None;
    }
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let base = &url[..end];
    Some(
        if authority_end == rest.len() || rest[authority_end..].starts_with(['?', '#']) {
            format!("{base}/")
        } else {
            base.to_owned()
        },
    )
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` for unix seconds (the civil-from-days algorithm).
// Every intermediate is bounded: doe < 146 097, yoe < 400, doy < 366, mp < 12, and
// era × 400 + yoe ≤ u64::MAX / 146 097 × 400 + 399.
#[allow(clippy::arithmetic_side_effects)]
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3_600, (rem % 3_600) / 60, rem % 60);
    // Days since 0000-03-01: shift the epoch so leap days end a year.
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.000Z")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

    use serde_json::json;
    use x402pp_protocol::bazaar::DiscoveryDeclaration;
    use x402pp_protocol::x402::{PaymentPayload, PaymentRequirements, ResourceInfo, X402Version2};
    use x402pp_protocol::Network;

    use super::*;

    fn request(url: &str, pay_to: &str, bazaar: bool) -> FacilitatorRequest {
        let requirements = PaymentRequirements {
            scheme: "exact".into(),
            network: Network::solana_devnet(),
            amount: "1000".into(),
            asset: "mint".into(),
            pay_to: pay_to.into(),
            max_timeout_seconds: 60,
            extra: None,
        };
        let declaration = DiscoveryDeclaration::post_json(json!({"q": "x"}), json!({}));
        FacilitatorRequest {
            x402_version: X402Version2,
            payment_payload: PaymentPayload {
                x402_version: X402Version2,
                resource: Some(ResourceInfo {
                    url: url.into(),
                    description: Some("d".into()),
                    mime_type: None,
                }),
                accepted: requirements.clone(),
                payload: json!({}),
                extensions: bazaar.then(|| declaration.extensions()),
            },
            payment_requirements: requirements,
        }
    }

    #[test]
    fn the_catalog_keeps_the_most_recent_resources_up_to_its_capacity() {
        let catalog = Catalog::new(2);
        for (i, url) in ["http://a/x", "http://b/x", "http://a/x?q=1", "http://c/x"]
            .iter()
            .enumerate()
        {
            catalog
                .record(&request(url, "p", true), 1_700_000_000 + i as u64)
                .unwrap();
        }
        let page = catalog.list(&ListQuery::default()).unwrap();
        let urls: Vec<_> = page.items.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(urls, ["http://c/x", "http://a/x"]);
        assert_eq!(page.pagination.total, 2);
        assert_eq!(page.items[1].last_updated, "2023-11-14T22:13:22.000Z");
    }

    #[test]
    fn resources_without_a_valid_bazaar_extension_are_not_listed() {
        let catalog = Catalog::default();
        assert_eq!(
            catalog.record(&request("http://a/x", "p", false), 0),
            Err(NotListed::NoExtension)
        );
        let mut bad = request("http://a/x", "p", true);
        bad.payment_payload.extensions = Some(json!({"bazaar": {"info": {}, "schema": {}}}));
        assert!(matches!(
            catalog.record(&bad, 0),
            Err(NotListed::Invalid(_))
        ));
        assert_eq!(
            catalog.record(&request("ftp://a/x", "p", true), 0),
            Err(NotListed::NoResource)
        );
        assert!(catalog.is_empty());
    }

    #[test]
    fn a_resource_paid_two_ways_lists_both_latest_first() {
        let catalog = Catalog::default();
        catalog
            .record(&request("http://a/x", "p1", true), 0)
            .unwrap();
        catalog
            .record(&request("http://a/x", "p2", true), 1)
            .unwrap();
        catalog
            .record(&request("http://a/x", "p1", true), 2)
            .unwrap();
        let page = catalog.list(&ListQuery::default()).unwrap();
        let pay_to: Vec<_> = page.items[0]
            .accepts
            .iter()
            .map(|a| a.pay_to.as_str())
            .collect();
        assert_eq!(pay_to, ["p1", "p2"]);
        let only_p2 = ListQuery {
            pay_to: Some("p2".into()),
            ..ListQuery::default()
        };
        assert_eq!(catalog.list(&only_p2).unwrap().pagination.total, 1);
    }

    #[test]
    fn a_limit_outside_one_to_the_maximum_is_refused() {
        let catalog = Catalog::default();
        for limit in [0, MAX_LIMIT + 1] {
            let query = ListQuery {
                limit: Some(limit),
                ..ListQuery::default()
            };
            assert_eq!(catalog.list(&query), Err(QueryError::Limit(limit)));
        }
    }

    #[test]
    fn urls_are_cut_to_origin_and_path() {
        assert_eq!(
            canonical_url("https://h:1/a/b?c#d").unwrap(),
            "https://h:1/a/b"
        );
        assert_eq!(canonical_url("http://h?x").unwrap(), "http://h/");
        assert_eq!(canonical_url("http:///x"), None);
        assert_eq!(canonical_url("javascript:x"), None);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00.000Z");
    }
}
