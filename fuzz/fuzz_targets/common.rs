//! What every NATS decoder target asserts, whatever the bytes: decoding never panics, and a
//! message that decodes re-encodes to the same message, whose `type` tag is the `Gavel-Type`
//! header the publisher would send. `gavel tail`'s decoder (`to_json`) never panics either.

use schemas::nats::{to_json, NatsMessage};
use std::fmt::Debug;

pub fn check<T: NatsMessage + PartialEq + Debug>(subject: &str, data: &[u8]) {
    let _ = to_json(subject, data);
    let Ok(msg) = T::decode(data) else { return };
    let bytes = msg.encode();
    let again = T::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(again, msg, "decode(encode(x)) != x");
    let json = to_json(subject, &bytes).expect("tail reads what we encode");
    assert_eq!(
        json["type"],
        msg.gavel_type(),
        "the body's tag and the Gavel-Type header disagree"
    );
}
