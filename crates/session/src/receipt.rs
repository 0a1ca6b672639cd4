//! Receipts: the body a provider signs for a request, and the agent's check of a signed receipt.
//!
//! A metered session's receipts are v3: they carry the units, output bytes and timings, and
//! charge [`x402pp_protocol::messages::charge`] of them under the voucher's hold. The agent checks
//! everything a v2 receipt is checked for, plus the charge of the units (`WrongCharge`), the
//! hold (`OverHold`), `units_out ≤ output_bytes` (`UnitsOverOutput`), for units of bytes the
//! bytes it counted itself (`WrongUnits`), the output length it received and how it was
//! delivered (`WrongDelivery`).

use x402pp_protocol::messages::{ReceiptMessage, ReceiptMessageV3};
use x402pp_protocol::{
    receipt_hash, Amount, AnyReceiptMessage, Cut, Hash32, Metering, ProtocolError, Pubkey, Receipt,
    ReceiptBody, ReceiptLink, ReceiptStatus, ReceiptUsage, SlaVerification, UnitKind,
};

use crate::charge::{charged, status_of_http};
use crate::pricing::{Pricing, Units};
use crate::progress::{Charge, NextVoucher, Progress};
use crate::SessionError;

/// The terms of a session that receipts depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTerms {
    /// The session account address.
    pub session: Pubkey,
    /// The session's incarnation (its `opened_slot`): vouchers and receipts name it.
    pub opened_slot: u64,
    /// The provider's key: it signs receipts.
    pub provider: Pubkey,
    /// Atomic units an `ok` request is charged: the fixed price, or the **base** of a metered
    /// session.
    pub price_per_request: u64,
    /// The latency the provider promised.
    pub max_latency_ms: u32,
    /// The largest request body the promise covers (0: no bound).
    pub max_input_bytes: u32,
    /// The usage prices of a metered session (its offer is v3); `None`: a fixed price.
    pub metering: Option<Metering>,
}

/// What a metered request used and how it was delivered, as the provider measured it (the v3
/// fields of its receipt beside [`Served`]; `Served::latency_ms` is the time to the first
/// billable byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedUsage {
    /// The request's hold: its voucher's `cumulative − accepted`.
    pub hold: u64,
    /// Input units.
    pub units_in: u64,
    /// Output units delivered.
    pub units_out: u64,
    /// Bytes of the response body sent (covered by the output hash).
    pub output_bytes: u64,
    /// Voucher accepted → last byte handed to the connection (or the cut), ms.
    pub total_ms: u32,
    /// Why the answer stopped early ([`Cut::None`] when complete).
    pub cut: Cut,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Whether the units were estimated rather than reported.
    pub units_estimated: bool,
}

/// How a request went, as the provider measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Outcome.
    pub status: ReceiptStatus,
    /// sha256(method ‖ path+query ‖ body) of the request ([`Hash32::ZERO`] when unknown).
    pub input_hash: Hash32,
    /// Length of the request body (what the offer's input bound is about); `None` when unknown
    /// (a request recovered after a crash), which the promise does not cover.
    pub input_bytes: Option<u64>,
    /// sha256 of the response body sent.
    pub output_hash: Hash32,
    /// Handler latency.
    pub latency_ms: u32,
    /// Unix milliseconds at which the request completed.
    pub completed_at_ms: i64,
}

/// What the agent saw of the exchange a receipt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The answer arrived complete: the request sent, the body received and the HTTP status.
    Answered {
        /// sha256(method ‖ path+query ‖ body) of the request sent.
        input_hash: Hash32,
        /// Length of the request body sent.
        input_bytes: u64,
        /// sha256 of the body received.
        output_hash: Hash32,
        /// Length of the body received (a metered receipt's `outputBytes` must equal it).
        output_bytes: u64,
        /// The HTTP status of the answer.
        http_status: u16,
        /// Whether the answer came as a stream (a metered receipt's `streamed` flag must say
        /// so).
        streamed: bool,
    },
    /// The answer was lost and the provider sent the receipt again (409 with the receipt
    /// attached): nothing to hold the hashes against.
    Recovered,
    /// A streamed answer the agent stopped reading (or whose connection broke) before its
    /// receipt arrived; the receipt was then fetched by resending the voucher (§3.7 of the
    /// metered-streaming design). The agent knows what it sent and what it read: the bytes it
    /// read and their hash. The provider may have handed more bytes to the connection than the
    /// agent read (they sat in buffers): that tail cannot be verified and is accepted up to
    /// `max_unverified_tail` bytes. (A fixed-price receipt has no output length: its output is
    /// not checked, as for [`Exchange::Recovered`].)
    Cut {
        /// sha256(method ‖ path+query ‖ body) of the request sent.
        input_hash: Hash32,
        /// Length of the request body sent.
        input_bytes: u64,
        /// The HTTP status of the answer's head.
        http_status: u16,
        /// Bytes of the answer's body the agent read (before the cut).
        bytes_read: u64,
        /// sha256 of those bytes.
        read_hash: Hash32,
        /// The longest tail the provider may claim to have delivered beyond what was read.
        max_unverified_tail: u64,
    },
}

/// Why an agent refuses a receipt. After any of these it signs no further voucher on the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A paid answer carried no `X-402-Receipt`.
    #[error("the answer carries no X-402-Receipt")]
    Missing,
    /// The header does not decode to a receipt.
    #[error("the receipt does not decode: {0}")]
    Malformed(ProtocolError),
    /// The signature does not verify for the session's provider, or the unsigned fields
    /// disagree with the signed ones.
    #[error("the receipt does not verify: {0}")]
    Unverified(ProtocolError),
    /// The receipt is for another session.
    #[error("the receipt is for session {0}")]
    WrongSession(Pubkey),
    /// The receipt is for an earlier session opened at the same address.
    #[error("the receipt is for the session opened at slot {0}")]
    WrongIncarnation(u64),
    /// The receipt says the promise does not cover a request that is within the offer's bound
    /// (or the reverse): a provider cannot opt out of its SLA by mislabelling requests.
    #[error("slaCovered is {found} for a request the offer's promise {}", if *found { "does not cover" } else { "covers" })]
    WrongCoverage {
        /// The receipt's flag.
        found: bool,
    },
    /// The receipt is for another request.
    #[error("receipt seq {receipt} for voucher seq {voucher}")]
    WrongSeq {
        /// The receipt's seq.
        receipt: u64,
        /// The voucher's seq.
        voucher: u64,
    },
    /// The receipt is not for the request that was sent.
    #[error("inputHash is not the hash of the request sent")]
    InputMismatch,
    /// The receipt is not for the body that was received.
    #[error("outputHash is not the hash of the body received")]
    OutputMismatch,
    /// The receipt charges for an answer that was not 2xx or 3xx.
    #[error("the receipt charges for an HTTP {0} answer")]
    ChargesFailedAnswer(u16),
    /// The amount charged is not what the status costs (metered: what its units, status and
    /// cut cost under the hold).
    #[error("amountCharged {charged} for a {status:?} request at price {price}")]
    WrongCharge {
        /// The receipt's amount.
        charged: u64,
        /// The receipt's status.
        status: ReceiptStatus,
        /// The session's price; for a metered receipt, the charge its units, status and cut
        /// price to under the voucher's hold (what it should have charged).
        price: u64,
    },
    /// A receipt of the other version than the session's: v2 on a metered session, or v3 on a
    /// fixed-price one.
    #[error("a version {found} receipt on a session whose receipts are version {expected}")]
    WrongVersion {
        /// The session's receipt version.
        expected: u8,
        /// The receipt's.
        found: u8,
    },
    /// A metered receipt charges more than the request's hold.
    #[error("amountCharged {charged} exceeds the request's hold {hold}")]
    OverHold {
        /// The receipt's amount.
        charged: u64,
        /// The voucher's hold.
        hold: u64,
    },
    /// A metered receipt counts more output units than output bytes (a token is at least one
    /// byte of the body that carried it).
    #[error("unitsOut {units_out} exceeds outputBytes {output_bytes}")]
    UnitsOverOutput {
        /// The receipt's output units.
        units_out: u64,
        /// The receipt's output bytes.
        output_bytes: u64,
    },
    /// Units of bytes that are not the bytes: `unitsIn` is not the request body sent, or
    /// `unitsOut` not `outputBytes`.
    #[error("{field} is {found}, the bytes are {expected}")]
    WrongUnits {
        /// `unitsIn` or `unitsOut`.
        field: &'static str,
        /// The receipt's count.
        found: u64,
        /// The bytes.
        expected: u64,
    },
    /// A metered receipt's `outputBytes` is not the length of the body received.
    #[error("outputBytes {found} is not the {received} bytes received")]
    OutputLengthMismatch {
        /// The receipt's output bytes.
        found: u64,
        /// The bytes received.
        received: u64,
    },
    /// A metered receipt's `streamed` flag is not how the answer arrived.
    #[error("the receipt says streamed = {found}, the answer {}", if *found { "was buffered" } else { "was streamed" })]
    WrongDelivery {
        /// The receipt's flag.
        found: bool,
    },
    /// The receipt does not link to the last receipt the agent accepted.
    #[error("prevReceiptHash {found} is not the head {expected}")]
    BrokenChain {
        /// The agent's head.
        expected: Hash32,
        /// The receipt's previous hash.
        found: Hash32,
    },
    /// The cumulative charged does not continue the accepted amount.
    #[error("cumulativeCharged {found} is not the accepted {accepted} + {charged}")]
    CumulativeMismatch {
        /// The receipt's cumulative.
        found: u64,
        /// What the agent accepted so far.
        accepted: u64,
        /// The receipt's amount.
        charged: u64,
    },
    /// A cut stream's receipt claims more bytes delivered beyond what the agent read than it
    /// accepts unverified (`max_unverified_tail`).
    #[error(
        "outputBytes {output_bytes} exceeds the {bytes_read} bytes read by more than the {max} \
         bytes accepted unverified"
    )]
    UnverifiedTailTooLong {
        /// The receipt's output bytes.
        output_bytes: u64,
        /// The bytes the agent read.
        bytes_read: u64,
        /// The agent's `max_unverified_tail`.
        max: u64,
    },
    /// The cumulative charged exceeds what the voucher authorised.
    #[error("cumulativeCharged {found} exceeds the voucher's {authorised}")]
    OverVoucher {
        /// The receipt's cumulative.
        found: u64,
        /// The voucher's cumulative.
        authorised: u64,
    },
}

impl SessionTerms {
    /// The session's pricing: the fixed price, or the base and the metering terms.
    pub const fn pricing(&self) -> Pricing {
        Pricing::of(self.price_per_request, self.metering)
    }

    /// The version of the session's vouchers and receipts: 3 when metered, 2 otherwise.
    pub const fn version(&self) -> u8 {
        if self.metering.is_some() {
            3
        } else {
            2
        }
    }

    /// Whether the offer's promise covers a request with a body of `input_bytes` (unknown: no).
    pub fn covers(&self, input_bytes: Option<u64>) -> bool {
        input_bytes.is_some_and(|bytes| {
            self.max_input_bytes == 0 || bytes <= u64::from(self.max_input_bytes)
        })
    }

    /// The receipt body of request `seq` of a fixed-price session, served as `served`, on a
    /// session at `progress` (the previous receipt's head and the accepted amount). A metered
    /// session's receipts are [`Self::metered_receipt_body`]'s ([`SessionError::WrongPricing`]).
    pub fn receipt_body(
        &self,
        progress: &Progress,
        seq: u64,
        served: Served,
    ) -> Result<ReceiptBody, SessionError> {
        if self.metering.is_some() {
            return Err(SessionError::WrongPricing { metered: true });
        }
        let charge = progress.charge(served.status, self.price_per_request)?;
        Ok(self.body(progress, seq, served, charge, None))
    }

    /// The fields every receipt body has, charging `charge`.
    fn body(
        &self,
        progress: &Progress,
        seq: u64,
        served: Served,
        charge: Charge,
        usage: Option<ReceiptUsage>,
    ) -> ReceiptBody {
        ReceiptBody {
            session_id: self.session,
            opened_slot: self.opened_slot,
            request_number: seq,
            input_hash: served.input_hash,
            output_hash: served.output_hash,
            request_started_at: served
                .completed_at_ms
                .saturating_sub(i64::from(served.latency_ms)),
            request_completed_at: served.completed_at_ms,
            latency_ms: served.latency_ms,
            status: served.status,
            sla_covered: self.covers(served.input_bytes),
            amount_charged: Amount(charge.amount),
            cumulative_charged: Amount(charge.cumulative),
            prev_receipt_hash: progress.head,
            sla_verification: SlaVerification::latency(self.max_latency_ms, served.latency_ms),
            provider: self.provider,
            usage,
        }
    }

    /// The (v3) receipt body of request `seq` of a metered session: `served` as for
    /// [`Self::receipt_body`] (its `latency_ms` is the time to the first billable byte,
    /// `ttfbMs`), and `usage` measured by the provider. The amount is
    /// [`x402pp_protocol::messages::charge`] of the units, status and cut under the hold.
    pub fn metered_receipt_body(
        &self,
        progress: &Progress,
        seq: u64,
        served: Served,
        usage: ServedUsage,
    ) -> Result<ReceiptBody, SessionError> {
        if self.metering.is_none() {
            return Err(SessionError::WrongPricing { metered: false });
        }
        let amount = self.pricing().charge(
            usage.hold,
            served.status,
            Units {
                units_in: usage.units_in,
                units_out: usage.units_out,
                cut: usage.cut,
            },
        );
        let charge = Charge {
            amount,
            cumulative: progress
                .accepted
                .checked_add(amount)
                .ok_or(SessionError::Overflow("cumulative"))?,
        };
        let usage = ReceiptUsage {
            units_in: usage.units_in,
            units_out: usage.units_out,
            output_bytes: usage.output_bytes,
            ttfb_ms: served.latency_ms,
            total_ms: usage.total_ms.max(served.latency_ms),
            cut: usage.cut,
            streamed: usage.streamed,
            units_estimated: usage.units_estimated,
        };
        Ok(self.body(progress, seq, served, charge, Some(usage)))
    }

    /// The agent's check of `receipt` for the request it paid with `voucher`, on a session at
    /// `progress`: the provider's signature (strict), the session and seq, the exchange it is
    /// for, the charge for its status, the link to the last receipt and the cumulative amount.
    /// A metered session's (v3) receipt is also checked for its units' charge under the
    /// voucher's hold, `units_out ≤ output_bytes`, units of bytes against the bytes, and the
    /// output length and delivery the agent saw. Returns the progress after it.
    pub fn check_receipt(
        &self,
        progress: &Progress,
        voucher: NextVoucher,
        receipt: &Receipt,
        exchange: Exchange,
    ) -> Result<Progress, ReceiptError> {
        let message = receipt
            .verify_any(&self.provider)
            .map_err(ReceiptError::Unverified)?;
        match (message, self.metering) {
            (AnyReceiptMessage::V2(message), None) => {
                self.check_fixed(voucher, receipt, &message, exchange)?;
            }
            (AnyReceiptMessage::V3(message), Some(metering)) => {
                self.check_metered(progress, voucher, receipt, &message, metering, exchange)?;
            }
            (message, _) => {
                return Err(ReceiptError::WrongVersion {
                    expected: self.version(),
                    found: if message.metered().is_some() { 3 } else { 2 },
                })
            }
        }
        Self::check_link(progress, voucher, &message)?;
        let mut next = *progress;
        next.record(
            message.seq(),
            message.cumulative_charged(),
            receipt_hash(&message),
        );
        Ok(next)
    }

    /// The session, incarnation and seq a receipt of either version names.
    fn check_names(
        &self,
        voucher: &NextVoucher,
        session: [u8; 32],
        opened_slot: u64,
        seq: u64,
    ) -> Result<(), ReceiptError> {
        if session != self.session.0 {
            return Err(ReceiptError::WrongSession(Pubkey(session)));
        }
        if opened_slot != self.opened_slot {
            return Err(ReceiptError::WrongIncarnation(opened_slot));
        }
        if seq != voucher.seq {
            return Err(ReceiptError::WrongSeq {
                receipt: seq,
                voucher: voucher.seq,
            });
        }
        Ok(())
    }

    /// The hashes, coverage and status of an answer the agent received in full (nothing to
    /// check for a recovered receipt). Of a cut answer, the request's hash and coverage and the
    /// status (its output is checked by [`Self::check_cut_output`]); a zero-charge failure
    /// receipt of a cut answer (a provider that crashed mid-stream knows no input) is not held
    /// to the request's hash.
    fn check_answer(
        &self,
        receipt: &Receipt,
        sla_covered: bool,
        may_charge: bool,
        exchange: Exchange,
    ) -> Result<(), ReceiptError> {
        let (input_hash, input_bytes, output_hash, http_status) = match exchange {
            Exchange::Answered {
                input_hash,
                input_bytes,
                output_hash,
                http_status,
                ..
            } => (input_hash, input_bytes, Some(output_hash), http_status),
            Exchange::Cut {
                input_hash,
                input_bytes,
                http_status,
                ..
            } => {
                if !may_charge && receipt.body.amount_charged.0 == 0 {
                    return Ok(());
                }
                (input_hash, input_bytes, None, http_status)
            }
            Exchange::Recovered => return Ok(()),
        };
        if sla_covered != self.covers(Some(input_bytes)) {
            return Err(ReceiptError::WrongCoverage { found: sla_covered });
        }
        if receipt.body.input_hash != input_hash {
            return Err(ReceiptError::InputMismatch);
        }
        if output_hash.is_some_and(|hash| receipt.body.output_hash != hash) {
            return Err(ReceiptError::OutputMismatch);
        }
        if may_charge && status_of_http(http_status) != ReceiptStatus::Ok {
            return Err(ReceiptError::ChargesFailedAnswer(http_status));
        }
        Ok(())
    }

    /// The output of a cut stream's receipt against what the agent read: the same length → the
    /// same hash; longer → a tail of at most `max_unverified_tail` bytes the agent never read;
    /// shorter → under-counted, in the agent's favour, accepted.
    fn check_cut_output(
        receipt: &Receipt,
        output_bytes: u64,
        exchange: Exchange,
    ) -> Result<(), ReceiptError> {
        let Exchange::Cut {
            bytes_read,
            read_hash,
            max_unverified_tail,
            ..
        } = exchange
        else {
            return Ok(());
        };
        match output_bytes.checked_sub(bytes_read) {
            Some(0) if receipt.body.output_hash != read_hash => Err(ReceiptError::OutputMismatch),
            Some(tail) if tail > max_unverified_tail => Err(ReceiptError::UnverifiedTailTooLong {
                output_bytes,
                bytes_read,
                max: max_unverified_tail,
            }),
            _ => Ok(()),
        }
    }

    /// The v2 checks, unchanged.
    fn check_fixed(
        &self,
        voucher: NextVoucher,
        receipt: &Receipt,
        message: &ReceiptMessage,
        exchange: Exchange,
    ) -> Result<(), ReceiptError> {
        self.check_names(&voucher, message.session, message.opened_slot, message.seq)?;
        self.check_answer(
            receipt,
            message.sla_covered,
            message.status == ReceiptStatus::Ok,
            exchange,
        )?;
        let price = self.price_per_request;
        if message.amount_charged != charged(message.status, price) {
            return Err(ReceiptError::WrongCharge {
                charged: message.amount_charged,
                status: message.status,
                price,
            });
        }
        Ok(())
    }

    /// The v3 checks: the v2 ones, the units, the hold and the delivery.
    fn check_metered(
        &self,
        progress: &Progress,
        voucher: NextVoucher,
        receipt: &Receipt,
        message: &ReceiptMessageV3,
        metering: Metering,
        exchange: Exchange,
    ) -> Result<(), ReceiptError> {
        self.check_names(&voucher, message.session, message.opened_slot, message.seq)?;
        let bytes = metering.unit_kind == UnitKind::Bytes;
        self.check_answer(
            receipt,
            message.sla_covered,
            matches!(message.status, ReceiptStatus::Ok | ReceiptStatus::Partial),
            exchange,
        )?;
        if let Exchange::Answered {
            input_bytes,
            output_bytes,
            streamed,
            ..
        } = exchange
        {
            if message.output_bytes != output_bytes {
                return Err(ReceiptError::OutputLengthMismatch {
                    found: message.output_bytes,
                    received: output_bytes,
                });
            }
            if message.streamed() != streamed {
                return Err(ReceiptError::WrongDelivery {
                    found: message.streamed(),
                });
            }
            if bytes && message.units_in != input_bytes {
                return Err(ReceiptError::WrongUnits {
                    field: "unitsIn",
                    found: message.units_in,
                    expected: input_bytes,
                });
            }
        }
        if let Exchange::Cut { input_bytes, .. } = exchange {
            // Only a streamed answer can be cut and its receipt fetched apart: a zero-charge
            // failure receipt (written for a request a crash cut off) may not say so.
            if !message.streamed() && message.amount_charged != 0 {
                return Err(ReceiptError::WrongDelivery {
                    found: message.streamed(),
                });
            }
            if bytes && message.amount_charged != 0 && message.units_in != input_bytes {
                return Err(ReceiptError::WrongUnits {
                    field: "unitsIn",
                    found: message.units_in,
                    expected: input_bytes,
                });
            }
            Self::check_cut_output(receipt, message.output_bytes, exchange)?;
        }
        if message.units_out > message.output_bytes {
            return Err(ReceiptError::UnitsOverOutput {
                units_out: message.units_out,
                output_bytes: message.output_bytes,
            });
        }
        if bytes && message.units_out != message.output_bytes {
            return Err(ReceiptError::WrongUnits {
                field: "unitsOut",
                found: message.units_out,
                expected: message.output_bytes,
            });
        }
        let accepted = voucher.accepted.unwrap_or(progress.accepted);
        let hold = voucher.cumulative.saturating_sub(accepted);
        if message.amount_charged > hold {
            return Err(ReceiptError::OverHold {
                charged: message.amount_charged,
                hold,
            });
        }
        let expected = self.pricing().charge(
            hold,
            message.status,
            Units {
                units_in: message.units_in,
                units_out: message.units_out,
                cut: message.cut,
            },
        );
        if message.amount_charged != expected {
            return Err(ReceiptError::WrongCharge {
                charged: message.amount_charged,
                status: message.status,
                price: expected,
            });
        }
        Ok(())
    }

    /// The link to the last receipt accepted, and the cumulative amount.
    fn check_link(
        progress: &Progress,
        voucher: NextVoucher,
        message: &AnyReceiptMessage,
    ) -> Result<(), ReceiptError> {
        if message.prev_receipt_hash() != progress.head.0 {
            return Err(ReceiptError::BrokenChain {
                expected: progress.head,
                found: Hash32(message.prev_receipt_hash()),
            });
        }
        let (amount, cumulative) = (message.amount_charged(), message.cumulative_charged());
        if Some(cumulative) != progress.accepted.checked_add(amount) {
            return Err(ReceiptError::CumulativeMismatch {
                found: cumulative,
                accepted: progress.accepted,
                charged: amount,
            });
        }
        if cumulative > voucher.cumulative {
            return Err(ReceiptError::OverVoucher {
                found: cumulative,
                authorised: voucher.cumulative,
            });
        }
        Ok(())
    }
}
