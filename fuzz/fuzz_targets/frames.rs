//! Fuzzes the framing of typed messages and the fields the proxy reads from them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgrepl_proxy::fuzzing::frames(data));
