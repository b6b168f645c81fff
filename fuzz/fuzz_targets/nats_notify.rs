//! `NotifyJob` (the `notify` subject family) from arbitrary MessagePack bytes.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::check::<schemas::nats::NotifyJob>("notify.won", data);
});
