//! What a request is charged: only a request whose handler answered 2xx or 3xx is `ok` and pays
//! the price; a handler error, a timeout or a request a crash cut off pays nothing.

use x402pp_protocol::ReceiptStatus;

/// The receipt status of a handler's HTTP answer: 2xx and 3xx are `ok`, anything else a
/// `handler_error` (a timeout has its own status, set by whoever timed it out).
pub fn status_of_http(http_status: u16) -> ReceiptStatus {
    if (200..400).contains(&http_status) {
        ReceiptStatus::Ok
    } else {
        ReceiptStatus::HandlerError
    }
}

/// What a request that ended with `status` is charged at a fixed `price`. (`partial` exists only
/// in metered receipts, priced by the messages crate's `charge`; a fixed-price one charges 0.)
pub fn charged(status: ReceiptStatus, price: u64) -> u64 {
    match status {
        ReceiptStatus::Ok => price,
        ReceiptStatus::HandlerError | ReceiptStatus::Timeout | ReceiptStatus::Partial => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_and_3xx_answers_are_ok() {
        let table = [
            (100, ReceiptStatus::HandlerError),
            (199, ReceiptStatus::HandlerError),
            (200, ReceiptStatus::Ok),
            (204, ReceiptStatus::Ok),
            (302, ReceiptStatus::Ok),
            (399, ReceiptStatus::Ok),
            (400, ReceiptStatus::HandlerError),
            (404, ReceiptStatus::HandlerError),
            (500, ReceiptStatus::HandlerError),
            (504, ReceiptStatus::HandlerError),
        ];
        for (http, status) in table {
            assert_eq!(status_of_http(http), status, "HTTP {http}");
        }
    }

    #[test]
    fn only_ok_is_charged() {
        assert_eq!(charged(ReceiptStatus::Ok, 7), 7);
        assert_eq!(charged(ReceiptStatus::HandlerError, 7), 0);
        assert_eq!(charged(ReceiptStatus::Timeout, 7), 0);
    }
}
