//! Receipts: decoded, checked by the session core ([`SessionTerms::check_receipt`]), recorded; an invalid one abandons the session.

use super::*;

/// How a recorded receipt's request went, for the agent's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A 2xx answer whose body matches an `ok` receipt: served.
    Served,
    /// An answer with a receipt, not served (a handler failure, or a non-2xx status).
    Failed,
    /// A receipt adopted from a `409 voucher_conflict`: its answer was lost, so nothing shows
    /// the request was served. Counted as failed, kept apart from the verified receipts.
    Recovered,
    /// The receipt of a streamed answer that lost its receipt event (the agent stopped reading,
    /// or the connection or the provider broke), fetched by resending the voucher and checked
    /// against the bytes read: served when `ok`, or `partial` because the agent cut it.
    Cut,
}

/// Whether `receipt` shows a breach of the offer's latency promise that a dispute records: a
/// charged request the promise covered, slower than promised (a metered receipt's latency is
/// its time to the first billable byte, and its penalty a share of its charge, which must not
/// round to nothing).
pub(super) fn breaches(sla: &x402pp_protocol::OfferSla, receipt: &Receipt) -> bool {
    let body = &receipt.body;
    if !body.sla_covered || body.latency_ms <= sla.max_latency_ms {
        return false;
    }
    match body.usage {
        None => body.status == ReceiptStatus::Ok,
        Some(_) => {
            matches!(body.status, ReceiptStatus::Ok | ReceiptStatus::Partial)
                && u128::from(body.amount_charged.0)
                    .checked_mul(u128::from(sla.latency_penalty_bps))
                    .and_then(|share| share.checked_div(10_000))
                    .is_some_and(|penalty| penalty > 0)
        }
    }
}

impl Agent {
    /// Verifies the receipt of a paid response and records it; returns the response rebuilt
    /// with its body, and the seq of a breach receipt.
    pub(super) async fn accept_receipt(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        input: RequestInput,
        response: Response,
    ) -> Result<(Response, Option<u64>), ClientError> {
        let status = response.status();
        let version = response.version();
        let url = response.url().clone();
        let response_headers = response.headers().clone();
        let body = response.bytes().await?;
        let exchange = Exchange::Answered {
            input_hash: input.hash,
            input_bytes: input.bytes,
            output_hash: output_hash(&body),
            output_bytes: u64::try_from(body.len()).unwrap_or(u64::MAX),
            http_status: status.as_u16(),
            streamed: false,
        };
        let checked = Self::decode_receipt(&response_headers).and_then(|receipt| {
            let progress = self.check_receipt(session, voucher, &receipt, exchange)?;
            Ok((receipt, progress))
        });
        match checked {
            Ok((receipt, progress)) => {
                let outcome = if receipt.body.status == ReceiptStatus::Ok && status.is_success() {
                    Outcome::Served
                } else {
                    Outcome::Failed
                };
                let breach = self.record_receipt(session, receipt, progress, outcome);
                let mut builder = http::Response::builder()
                    .status(status)
                    .version(version)
                    .url(url);
                if let Some(map) = builder.headers_mut() {
                    *map = response_headers;
                }
                let rebuilt = builder
                    .body(body)
                    .map_err(reqwest_middleware::Error::middleware)?;
                Ok((Response::from(rebuilt), breach.then_some(voucher.seq)))
            }
            Err(why) => Err(self.abandon(session, why)),
        }
    }

    /// Adopts the receipt a provider attached to `409 voucher_conflict` for a voucher it served
    /// before (the answer was lost). It is checked like any receipt except against the request
    /// and response, which this agent no longer has. The agent records it because the voucher
    /// it signed lets the provider claim that seq anyway and the next receipt links to it — but
    /// as *recovered*, not verified: an `ok` status whose output cannot be checked proves no
    /// service, so the request counts as failed (uptime) and the seq is listed in the session's
    /// `recovered` receipts.
    pub(super) fn recover_receipt(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        response_headers: &reqwest::header::HeaderMap,
    ) -> Result<(), ClientError> {
        let checked = Self::decode_receipt(response_headers).and_then(|receipt| {
            let progress = self.check_receipt(session, voucher, &receipt, Exchange::Recovered)?;
            Ok((progress, receipt))
        });
        match checked {
            Ok((progress, receipt)) => {
                tracing::warn!(
                    session = %session.address(),
                    seq = voucher.seq,
                    status = ?receipt.body.status,
                    charged = receipt.body.amount_charged.0,
                    "recovered the receipt of a request whose answer was lost"
                );
                // A breach is recorded for `dispute_breaches`; not disputed on the spot.
                self.record_receipt(session, receipt, progress, Outcome::Recovered);
                Ok(())
            }
            Err(why) => Err(self.abandon(session, why)),
        }
    }

    /// Stores a verified receipt: moves the session's progress (seq, accepted amount, head),
    /// counts the request as served or failed, records an SLA breach; returns whether it
    /// breaches.
    pub(super) fn record_receipt(
        &self,
        session: &SessionHandle,
        receipt: Receipt,
        progress: Progress,
        outcome: Outcome,
    ) -> bool {
        let ok = match outcome {
            Outcome::Served => true,
            Outcome::Cut => {
                receipt.body.status == ReceiptStatus::Ok
                    || (receipt.body.status == ReceiptStatus::Partial
                        && receipt
                            .body
                            .usage
                            .is_some_and(|u| u.cut == x402pp_protocol::Cut::ClientGone))
            }
            Outcome::Failed | Outcome::Recovered => false,
        };
        let seq = receipt.body.request_number;
        // Only a request the promise covers can breach it (an uncovered receipt is not
        // disputable: the program refuses it with NoBreach).
        let breach = breaches(&session.offer.terms.sla, &receipt);
        {
            let mut data = lock(&session.data);
            data.progress = progress;
            if ok {
                data.ok_requests = data.ok_requests.saturating_add(1);
            } else {
                data.failed_requests = data.failed_requests.saturating_add(1);
            }
            if outcome == Outcome::Recovered {
                data.recovered.push(seq);
            }
            if breach {
                data.breaches.push(BreachRecord {
                    seq,
                    dispute_signature: None,
                    paid: 0,
                    disputed: false,
                });
            }
            data.receipts.push(receipt.clone());
        }
        if outcome == Outcome::Recovered {
            bump(&self.inner.stats.receipts_recovered, 1);
        } else {
            bump(&self.inner.stats.receipts_verified, 1);
        }
        if ok {
            bump(&self.inner.stats.ok_requests, 1);
        }
        if breach {
            bump(&self.inner.stats.sla_breaches, 1);
            tracing::warn!(
                session = %session.address(),
                seq,
                latency_ms = receipt.body.latency_ms,
                max_latency_ms = session.offer.terms.sla.max_latency_ms,
                "SLA breach"
            );
        }
        if let Err(e) = self
            .inner
            .store
            .append_receipt(&proto_key(&session.address()), &receipt)
        {
            tracing::warn!(error = %e, "cannot store the receipt");
        }
        self.persist(session);
        breach
    }

    /// Marks the session abandoned after an invalid receipt.
    pub(super) fn abandon(&self, session: &SessionHandle, why: ReceiptError) -> ClientError {
        self.abandon_with(session, ClientError::ReceiptInvalid(why))
    }

    /// Marks the session abandoned (no further voucher is signed on it) because of `error`,
    /// counts the request as failed, and returns the error.
    pub(super) fn abandon_with(&self, session: &SessionHandle, error: ClientError) -> ClientError {
        {
            let mut data = lock(&session.data);
            data.state = AgentSessionState::Abandoned;
            data.failed_requests = data.failed_requests.saturating_add(1);
        }
        lock(&self.inner.routes).retain(|_, a| *a != session.address());
        self.persist(session);
        tracing::error!(session = %session.address(), reason = %error, "session abandoned");
        error
    }

    /// The session core's check of `receipt` for the request paid with `voucher`
    /// ([`SessionTerms::check_receipt`]); returns the session's progress after it.
    pub(super) fn check_receipt(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        receipt: &Receipt,
        exchange: Exchange,
    ) -> Result<Progress, ReceiptError> {
        let progress = lock(&session.data).progress;
        let voucher = NextVoucher {
            seq: voucher.seq,
            cumulative: voucher.cumulative.0,
            receipt_head: voucher.receipt_head,
            accepted: voucher.accepted.map(|a| a.0),
        };
        session
            .session_terms()
            .check_receipt(&progress, voucher, receipt, exchange)
    }

    pub(super) fn decode_receipt(
        response_headers: &reqwest::header::HeaderMap,
    ) -> Result<Receipt, ReceiptError> {
        let value = response_headers
            .get(headers::X402_RECEIPT)
            .ok_or(ReceiptError::Missing)?;
        headers::decode(headers::X402_RECEIPT, value.as_bytes()).map_err(ReceiptError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ed25519_dalek::SigningKey;
    use x402pp_protocol::crypto::pubkey_of;
    use x402pp_protocol::{Cut, Metering, OfferSla, Pubkey, UnitKind};
    use x402pp_session::{Served, ServedUsage};

    use super::*;

    const SLA: OfferSla = OfferSla {
        max_latency_ms: 100,
        max_input_bytes: 0,
        latency_penalty_bps: 5_000,
    };

    fn receipt(metered: bool, status: ReceiptStatus, ttfb_ms: u32, units_out: u64) -> Receipt {
        let key = SigningKey::from_bytes(&[5; 32]);
        let terms = SessionTerms {
            session: Pubkey([1; 32]),
            opened_slot: 9,
            provider: pubkey_of(&key),
            price_per_request: 100,
            max_latency_ms: SLA.max_latency_ms,
            max_input_bytes: 0,
            metering: metered.then_some(Metering {
                unit_price_in: 0,
                unit_price_out: 2_000,
                unit_size: 1_000,
                max_per_request: 1_000,
                unit_kind: UnitKind::Tokens,
            }),
        };
        let served = Served {
            status,
            input_hash: Hash32::ZERO,
            input_bytes: Some(1),
            output_hash: Hash32::ZERO,
            latency_ms: ttfb_ms,
            completed_at_ms: 1_700_000_000_000,
        };
        let body = if metered {
            let cut = if status == ReceiptStatus::Partial {
                Cut::ClientGone
            } else {
                Cut::None
            };
            let usage = ServedUsage {
                hold: 1_000,
                units_in: 0,
                units_out,
                output_bytes: units_out.max(1),
                total_ms: ttfb_ms,
                cut,
                streamed: true,
                units_estimated: false,
            };
            terms
                .metered_receipt_body(&Progress::default(), 1, served, usage)
                .unwrap()
        } else {
            terms.receipt_body(&Progress::default(), 1, served).unwrap()
        };
        Receipt::sign(body, &key).unwrap()
    }

    #[test]
    fn a_metered_breach_is_a_slow_first_byte_of_a_charged_answer_partial_ones_included() {
        assert!(breaches(&SLA, &receipt(true, ReceiptStatus::Ok, 101, 10)));
        assert!(breaches(
            &SLA,
            &receipt(true, ReceiptStatus::Partial, 101, 10)
        ));
        assert!(!breaches(&SLA, &receipt(true, ReceiptStatus::Ok, 100, 10)));
        assert!(!breaches(
            &SLA,
            &receipt(true, ReceiptStatus::HandlerError, 101, 10)
        ));
        // A fixed-price receipt breaches as before: only `ok`.
        assert!(breaches(&SLA, &receipt(false, ReceiptStatus::Ok, 101, 0)));
        assert!(!breaches(
            &SLA,
            &receipt(false, ReceiptStatus::HandlerError, 101, 0)
        ));
        // A penalty that rounds to nothing is no breach the program would record.
        let stingy = OfferSla {
            latency_penalty_bps: 1,
            ..SLA
        };
        assert!(!breaches(
            &stingy,
            &receipt(true, ReceiptStatus::Ok, 101, 10)
        ));
    }
}
