//! The body of a REST bid (`schemas::frames::parse_bid_body`, what `POST /api/lots/{id}/bids`
//! runs) on arbitrary bytes: it never panics, a bid it reads is for the path's lot with a
//! positive amount and a usable idem, and an invalid bid is answered for the path's lot.
#![no_main]

use schemas::frames::{parse_bid_body, valid_idem, ClientFrame, FrameError};
use schemas::{Cents, LotId};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let lot: LotId = "07070707-0707-4707-8707-070707070707"
        .parse()
        .expect("a lot id");
    match parse_bid_body(data, lot) {
        Ok(ClientFrame::Bid {
            lot_id,
            amount,
            seen_high,
            idem,
        }) => {
            assert_eq!(lot_id, lot);
            assert!(amount.get() > 0 && amount.get() <= Cents::MAX);
            assert!(seen_high.is_none_or(|h| h >= 0));
            assert!(valid_idem(&idem));
        }
        Ok(other) => panic!("a bid body read as {other:?}"),
        Err(FrameError::InvalidBid { idem, lot_id, .. }) => {
            assert!(valid_idem(&idem));
            assert_eq!(lot_id, Some(lot));
        }
        Err(FrameError::BadFrame(m)) => assert!(!m.is_empty()),
        Err(FrameError::UnknownType(t)) => panic!("a bid body has no type, got {t:?}"),
    }
});
