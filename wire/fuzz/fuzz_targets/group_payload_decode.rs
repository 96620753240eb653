//! Fuzz target: arbitrary bytes into `decode_payload` for both consumer protocol payloads,
//! `ConsumerSubscription` (a member's `JoinGroup` metadata, decoded by the group leader) and
//! `ConsumerAssignment` (the leader's `SyncGroup` assignment, decoded by each member). Both come
//! from another client, so neither may panic; a payload that decodes is the canonical encoding
//! of what it decoded to (`encode_payload` gives back exactly the input).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::protocol::{decode_payload, encode_payload, ConsumerAssignment, ConsumerSubscription};

fuzz_target!(|data: &[u8]| {
    if let Ok(subscription) = decode_payload::<ConsumerSubscription>(data) {
        assert_eq!(encode_payload(&subscription), data, "{subscription:?}");
    }
    if let Ok(assignment) = decode_payload::<ConsumerAssignment>(data) {
        assert_eq!(encode_payload(&assignment), data, "{assignment:?}");
    }
});
