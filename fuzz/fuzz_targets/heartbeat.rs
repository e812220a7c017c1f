//! HA packet decoder (`ha::wire`: heartbeats and runtime-state messages):
//! arbitrary datagrams never panic. The fuzzer's bytes are also signed with the
//! key, so the checks after the HMAC are reached; an accepted message encodes
//! again to a packet that decodes to the same message.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tandem::ha::wire::{decode, encode, encode_state, Key, Message};

const SECRET: &[u8] = b"fuzz-key-of-at-least-thirty-two-bytes";

fuzz_target!(|data: &[u8]| {
    let Ok(key) = Key::new(SECRET) else {
        return;
    };
    let _ = decode(data, &key);

    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET) else {
        return;
    };
    mac.update(data);
    let mut signed = data.to_vec();
    signed.extend_from_slice(&mac.finalize().into_bytes());
    if let Ok(msg) = decode(&signed, &key) {
        let again = match &msg {
            Message::Heartbeat(hb) => encode(hb, &key),
            Message::State(st) => encode_state(st, &key),
        };
        assert_eq!(
            decode(&again, &key).ok(),
            Some(msg),
            "encode/decode round trip differs"
        );
    }
});
