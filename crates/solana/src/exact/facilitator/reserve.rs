//! What payments being settled will take from their source token accounts: a settle reserves its
//! amount on its source before it simulates and sends, so that payments from one source settled
//! at once cannot all pass the balance check and simulation against the same balance, all be
//! sent, and all but one fail on chain with the fee payer paying for each.
//!
//! A reservation is released when its settlement's outcome is known (confirmed, failed, or
//! refused before sending); one answered `settlement_pending` is kept until its blockhash can no
//! longer land (the duplicate window). The map is in memory, per facilitator process.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signature;

/// One settlement's hold on its source.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// The client's signature: the settlement's identity.
    key: Signature,
    /// Atomic units it moves.
    amount: u64,
    /// For a settlement that may still land: when its blockhash has surely expired.
    until: Option<Instant>,
}

/// A refusal to reserve: the source cannot cover the payment besides what is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Short {
    /// Atomic units held by other settlements of the source.
    pub(super) held: u64,
}

/// In-flight amounts by source token account.
#[derive(Debug, Default)]
pub(super) struct Reservations {
    holds: Mutex<HashMap<Pubkey, Vec<Hold>>>,
}

impl Reservations {
    fn lock(&self) -> MutexGuard<'_, HashMap<Pubkey, Vec<Hold>>> {
        // A poisoned map is still a consistent map (every update is one push or retain).
        self.holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What settlements other than `except` hold on `source` now (expired holds dropped).
    pub(super) fn held(&self, source: &Pubkey, except: Option<&Signature>) -> u64 {
        let mut holds = self.lock();
        prune(&mut holds, Instant::now());
        sum(holds.get(source), except)
    }

    /// Reserves `amount` on `source` for the settlement `key` when `balance` covers it besides
    /// what the others hold; otherwise [`Short`] with what they hold. Reserving again under the
    /// same key replaces the earlier hold.
    pub(super) fn reserve(
        &self,
        source: Pubkey,
        key: Signature,
        amount: u64,
        balance: u64,
    ) -> Result<(), Short> {
        let mut holds = self.lock();
        prune(&mut holds, Instant::now());
        let held = sum(holds.get(&source), Some(&key));
        let needed = held.checked_add(amount).ok_or(Short { held })?;
        if needed > balance {
            return Err(Short { held });
        }
        let entry = holds.entry(source).or_default();
        entry.retain(|hold| hold.key != key);
        entry.push(Hold {
            key,
            amount,
            until: None,
        });
        Ok(())
    }

    /// Drops the settlement's hold (its outcome is known, or nothing was sent).
    pub(super) fn release(&self, source: &Pubkey, key: &Signature) {
        let mut holds = self.lock();
        if let Some(entry) = holds.get_mut(source) {
            entry.retain(|hold| hold.key != *key);
            if entry.is_empty() {
                holds.remove(source);
            }
        }
    }

    /// Keeps the settlement's hold until `until` (it may still land before then).
    pub(super) fn keep_until(&self, source: &Pubkey, key: &Signature, until: Instant) {
        let mut holds = self.lock();
        if let Some(hold) = holds
            .get_mut(source)
            .and_then(|entry| entry.iter_mut().find(|hold| hold.key == *key))
        {
            hold.until = Some(until);
        }
    }
}

/// The sum of the holds in `entry` other than `except` (saturating: u64::MAX covers anything).
fn sum(entry: Option<&Vec<Hold>>, except: Option<&Signature>) -> u64 {
    entry.map_or(0, |holds| {
        holds
            .iter()
            .filter(|hold| Some(&hold.key) != except)
            .fold(0u64, |total, hold| total.saturating_add(hold.amount))
    })
}

/// Drops holds whose settlement can no longer land.
fn prune(holds: &mut HashMap<Pubkey, Vec<Hold>>, now: Instant) {
    holds.retain(|_, entry| {
        entry.retain(|hold| hold.until.is_none_or(|until| now < until));
        !entry.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(byte: u8) -> Signature {
        Signature::from([byte; 64])
    }

    #[test]
    fn a_source_is_never_reserved_beyond_its_balance_and_releases_free_it() {
        let reservations = Reservations::default();
        let source = Pubkey::new_unique();
        assert_eq!(reservations.reserve(source, key(1), 600, 1_000), Ok(()));
        assert_eq!(
            reservations.reserve(source, key(2), 600, 1_000),
            Err(Short { held: 600 })
        );
        assert_eq!(reservations.reserve(source, key(3), 400, 1_000), Ok(()));
        assert_eq!(reservations.held(&source, None), 1_000);
        assert_eq!(reservations.held(&source, Some(&key(1))), 400);
        // Another source is apart.
        assert_eq!(
            reservations.reserve(Pubkey::new_unique(), key(2), 600, 1_000),
            Ok(())
        );
        reservations.release(&source, &key(1));
        assert_eq!(reservations.reserve(source, key(2), 600, 1_000), Ok(()));
        assert_eq!(
            reservations.reserve(source, key(4), u64::MAX, u64::MAX),
            Err(Short { held: 1_000 }),
            "no overflow"
        );
    }

    #[test]
    fn a_pending_settlement_holds_until_its_deadline() {
        let reservations = Reservations::default();
        let source = Pubkey::new_unique();
        assert_eq!(reservations.reserve(source, key(1), 1_000, 1_000), Ok(()));
        let later = Instant::now().checked_add(Duration::from_secs(3_600));
        reservations.keep_until(&source, &key(1), later.unwrap_or_else(Instant::now));
        assert_eq!(reservations.held(&source, None), 1_000);
        reservations.keep_until(&source, &key(1), Instant::now());
        assert_eq!(reservations.held(&source, None), 0, "expired");
    }
}
