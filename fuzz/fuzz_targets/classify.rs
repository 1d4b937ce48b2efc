//! Fuzzes the SQL classifier, by itself and through the classification cache.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgrepl_proxy::fuzzing::classify(data));
