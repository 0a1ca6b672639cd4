//! The provider's session cache: what it last read of each session (chain terms and its own
//! progress), so a paid request needs no RPC. Bounded by size and by time (`moka`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ledger::types::{Address, SessionRecord};

struct Entry {
    record: SessionRecord,
    /// When the chain part was last read; updates of the provider's own progress keep it.
    refreshed: Instant,
}

/// Sessions by address. An entry is served for `refresh` after it was read from the chain, then
/// the chain is read again (a top-up, a close request or a dispute shows up within `refresh`).
/// At most `capacity` sessions are kept (least recently used go first), and an entry is dropped
/// `refresh` after it was read from the chain, so idle sessions cost no memory.
///
/// An entry is shared and updated in place: a request's progress updates cost a lookup, not a
/// re-insert (a moka insert is a write to its policy queue; two per request showed in the
/// profiles of docs/perf/).
pub struct SessionCache {
    entries: moka::sync::Cache<Address, Arc<Mutex<Entry>>>,
    refresh: Duration,
}

impl SessionCache {
    /// A cache of at most `capacity` sessions, each served for `refresh` after it was read.
    pub fn new(capacity: u64, refresh: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(refresh)
                .build(),
            refresh,
        }
    }

    /// The cached record, if it was read from the chain less than `refresh` ago.
    pub fn get(&self, address: &Address) -> Option<SessionRecord> {
        let entry = self.entries.get(address)?;
        let entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        (entry.refreshed.elapsed() < self.refresh).then(|| entry.record.clone())
    }

    /// Caches a record just read from the chain (or the ledger).
    pub fn insert(&self, record: SessionRecord) {
        self.entries.insert(
            record.chain.address,
            Arc::new(Mutex::new(Entry {
                record,
                refreshed: Instant::now(),
            })),
        );
    }

    /// Applies the provider's own progress to a cached record, keeping its refresh time.
    /// Concurrent updates of one session race harmlessly: the loser's copy is stale, and a
    /// stale copy only costs a re-read of the ledger when a voucher does not match it.
    pub fn update(&self, address: &Address, update: impl FnOnce(&mut SessionRecord)) {
        if let Some(entry) = self.entries.get(address) {
            update(&mut entry.lock().unwrap_or_else(PoisonError::into_inner).record);
        }
    }

    /// Number of cached sessions (after pending evictions ran).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::types::ChainSession;
    use x402pp_protocol::SessionState;

    fn record(address: u8) -> SessionRecord {
        SessionRecord {
            chain: ChainSession {
                address: [address; 32],
                agent: [0; 32],
                provider: [0; 32],
                mint: [0; 32],
                token_program: [0; 32],
                voucher_signer: [0; 32],
                opened_slot: 1,
                deposit: 0,
                penalties: 0,
                settled: 0,
                settled_seq: 0,
                price_per_request: 1,
                max_latency_ms: 0,
                max_input_bytes: 0,
                latency_penalty_bps: 0,
                expires_at: 0,
                closing_started_at: 0,
                grace_secs: 0,
                state: SessionState::Open,
                metering: None,
            },
            last_seq: 0,
            accepted: 0,
            receipts_head: [0; 32],
            receipt_count: 0,
            best_voucher: None,
        }
    }

    #[test]
    fn the_cache_never_holds_more_sessions_than_its_capacity() {
        let cache = SessionCache::new(100, Duration::from_secs(3_600));
        for address in 0..=255 {
            cache.insert(record(address));
        }
        assert!(cache.len() <= 100, "{} sessions cached", cache.len());
    }

    #[test]
    fn an_update_keeps_the_refresh_time_and_a_stale_entry_is_not_served() {
        let cache = SessionCache::new(10, Duration::ZERO);
        cache.insert(record(1));
        cache.update(&[1; 32], |r| r.last_seq = 5);
        assert_eq!(cache.get(&[1; 32]), None, "a zero refresh serves nothing");
        let cache = SessionCache::new(10, Duration::from_secs(3_600));
        cache.insert(record(1));
        cache.update(&[1; 32], |r| r.last_seq = 5);
        assert_eq!(cache.get(&[1; 32]).map(|r| r.last_seq), Some(5));
    }
}
