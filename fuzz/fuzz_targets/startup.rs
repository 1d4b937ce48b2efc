//! Fuzzes the startup negotiation: SSLRequest, GSSENCRequest, CancelRequest and StartupMessage packets.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgrepl_proxy::fuzzing::startup(data));
