//! The WebSocket client-frame parser (`schemas::frames::parse_client_frame`, what the edge runs
//! on every text frame) on arbitrary text: it never panics, every answer is one PROTOCOL.md
//! allows, and a frame it reads is read back the same from its own JSON.
#![no_main]

use schemas::frames::{parse_client_frame, valid_idem, ClientFrame, FrameError, MAX_FRAME_BYTES};
use schemas::Cents;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // tungstenite refuses a text frame that is not UTF-8 or is over the limit before the parser
    // sees it; the parser must still cope with any string, so only UTF-8 is the filter.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = MAX_FRAME_BYTES;
    match parse_client_frame(text) {
        Ok(frame) => {
            if let ClientFrame::Bid {
                amount,
                seen_high,
                idem,
                ..
            } = &frame
            {
                assert!(amount.get() > 0 && amount.get() <= Cents::MAX, "{amount:?}");
                assert!(seen_high.is_none_or(|h| h >= 0), "{seen_high:?}");
                assert!(valid_idem(idem), "{idem:?}");
            }
            let json = serde_json::to_string(&frame).expect("a frame serialises");
            let again = parse_client_frame(&json).expect("a frame's own JSON parses");
            match (&frame, &again) {
                // `t` is any JSON value, echoed in the pong; a float may come back one ULP off
                // (serde_json's default float parsing), which a client's clock cannot tell.
                (ClientFrame::Ping { .. }, ClientFrame::Ping { .. }) => {}
                _ => assert_eq!(again, frame, "parse(to_json(frame)) != frame"),
            }
        }
        Err(FrameError::BadFrame(m)) => assert!(!m.is_empty()),
        Err(FrameError::UnknownType(t)) => assert!(t.chars().count() <= 64, "{t:?}"),
        Err(FrameError::InvalidBid { idem, message, .. }) => {
            assert!(valid_idem(&idem), "{idem:?}");
            assert!(!message.is_empty());
        }
    }
});
