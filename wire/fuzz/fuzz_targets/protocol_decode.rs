//! Fuzz target: arbitrary bytes into every decode entry point of the protocol codec
//! (`check_frame`, `decode_request_header`, `decode_response_header`, `decode_request`, and
//! `decode_response::<T>` for every response type). None of them may panic, and whatever
//! decodes must re-encode consistently: a request to exactly the same bytes, a response body to
//! a frame that decodes to the same body.
//!
//! The input is copied into a 16-aligned buffer first, as a broker's receive buffer is. The
//! first input byte is a mode: if its low bit is set, the length prefix is rewritten to match
//! the input, so the fuzzer spends its time in the body decoders rather than on the prefix.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::protocol::*;
use wire::AlignedVec;

/// `encode_request` for any decoded request.
fn encode_any<'b>(
    buffer: &'b mut Vec<u8>,
    correlation_id: u32,
    request: &'b Request<'_>,
) -> FrameParts<'b> {
    match request {
        Request::Handshake(b) => encode_request(buffer, ApiKey::Handshake, correlation_id, b),
        Request::Metadata(b) => encode_request(buffer, ApiKey::Metadata, correlation_id, b),
        Request::CreateTopics(b) => encode_request(buffer, ApiKey::CreateTopics, correlation_id, b),
        Request::DeleteTopics(b) => encode_request(buffer, ApiKey::DeleteTopics, correlation_id, b),
        Request::Produce(b) => encode_request(buffer, ApiKey::Produce, correlation_id, b),
        Request::Fetch(b) => encode_request(buffer, ApiKey::Fetch, correlation_id, b),
        Request::ListOffsets(b) => encode_request(buffer, ApiKey::ListOffsets, correlation_id, b),
    }
}

/// Decodes `$frame` as a `$ty` response; a decoded body must survive encode → decode.
macro_rules! response {
    ($frame:expr, $ty:ty) => {{
        let frame: &[u8] = $frame;
        if let Ok((correlation_id, result)) = decode_response::<$ty>(frame) {
            match result {
                Ok(body) => {
                    let ok = WireError::none();
                    let mut buffer = Vec::new();
                    let bytes =
                        encode_response(&mut buffer, correlation_id, &ok, Some(&body)).to_vec();
                    let mut again = AlignedVec::<16>::new();
                    again.extend_from_slice(&bytes);
                    match decode_response::<$ty>(&again) {
                        Ok((id, Ok(again_body))) => {
                            assert_eq!(id, correlation_id);
                            assert_eq!(again_body, body);
                        }
                        other => panic!("re-encoded response does not decode: {other:?}"),
                    }
                }
                Err(error) => assert!(!error.is_ok()),
            }
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(rest);
    if mode & 1 == 1 && frame.len() >= LENGTH_PREFIX_SIZE {
        let length = (frame.len() - LENGTH_PREFIX_SIZE) as u32;
        frame[..LENGTH_PREFIX_SIZE].copy_from_slice(&length.to_le_bytes());
    }
    let frame: &[u8] = &frame;

    for limit in [FRAME_SIZE_MAX, 4096, 16, 0] {
        if let Ok(Some(total)) = check_frame(frame, limit) {
            assert!(total <= limit && total % 16 == 0);
        }
    }
    let _ = decode_request_header(frame);
    let _ = decode_response_header(frame);

    if let Ok((header, request)) = decode_request(frame) {
        let mut buffer = Vec::new();
        let again = encode_any(&mut buffer, header.correlation_id, &request).to_vec();
        assert_eq!(
            again, frame,
            "a decoded request re-encodes to its own bytes"
        );
        assert_eq!(check_frame(frame, FRAME_SIZE_MAX), Ok(Some(frame.len())));
    }

    response!(frame, HandshakeResponse);
    response!(frame, MetadataResponse);
    response!(frame, CreateTopicsResponse);
    response!(frame, DeleteTopicsResponse);
    response!(frame, ProduceResponse);
    response!(frame, FetchResponse<'_>);
    response!(frame, ListOffsetsResponse);
});
