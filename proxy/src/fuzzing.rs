//! Entry points for fuzzing the edge of the proxy: the code that reads what a peer sends
//! before anything else has judged it. Each takes arbitrary bytes and must return without
//! panicking, in work and memory bounded by its input. The cargo-fuzz targets in `fuzz/` call
//! them (with the `fuzzing` feature), and so do the bounded property tests below, which run
//! with `cargo test`.

use std::sync::OnceLock;

use crate::client::startup::{read_packet, Packet};
use crate::protocol::{fields, frame};
use crate::route::{Classifier, UserFunctions};

/// Largest message the framing target accepts, as `[proxy] max_message_size` would.
const MAX_MESSAGE: usize = 1 << 20;

/// The startup negotiation: `data` as what a client sends on a new connection, read packet
/// by packet as `negotiate` does (SSLRequest and GSSENCRequest answered, any number of times
/// here) until a StartupMessage, a CancelRequest, a refused packet or the end.
pub fn startup(data: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let mut input = data;
            while let Ok(Ok(packet)) = read_packet(&mut input).await {
                if let Packet::Hello(hello) = packet {
                    std::hint::black_box(hello);
                    return;
                }
            }
        })
    });
}

/// The framing of typed messages: `data` as a stream of them, split as the session splits a
/// client's (header, size check, whole message), each read with the field readers the
/// proxy applies to its type.
pub fn frames(data: &[u8]) {
    let mut rest = data;
    while let Some((ty, total)) = frame::peek_header(rest) {
        if frame::check_size(total, MAX_MESSAGE).is_err() || rest.len() < total {
            return;
        }
        let (msg, after) = rest.split_at(total);
        rest = after;
        match ty {
            b'Q' => {
                if let Some(sql) = fields::query_sql(msg) {
                    classify(sql);
                }
            }
            b'P' => {
                if let Some((_, sql)) = fields::parse_name_sql(msg) {
                    classify(sql);
                }
            }
            b'B' => {
                std::hint::black_box(fields::bind_statement(msg));
            }
            b'D' | b'C' => {
                std::hint::black_box(fields::target(msg));
            }
            b'E' | b'N' => {
                std::hint::black_box((
                    fields::error_is_fatal(msg),
                    fields::error_message(msg),
                    fields::error_field(msg, b'C'),
                ));
            }
            _ => {
                std::hint::black_box(fields::cstr(fields::body(msg)));
            }
        }
    }
}

/// The classifier: `data` (as UTF-8, lossily) as SQL, classified as the `classify` command
/// does and through a shared classifier's cache, as a session does (also as the raw bytes).
pub fn classify(data: &[u8]) {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    let classifier = CLASSIFIER.get_or_init(|| {
        let mut config = pgrepl_config::Config::default();
        config.routing.classify_cache_size = 1024;
        config.routing.write_functions = vec!["audit.log_it".into()];
        config.routing.read_only_functions = vec!["my_random".into()];
        Classifier::new(&config)
    });
    let sql = String::from_utf8_lossy(data);
    std::hint::black_box(crate::route::classify(&sql));
    let functions = UserFunctions::offline();
    std::hint::black_box(classifier.decide(sql.as_bytes(), &functions));
    // As a session looks it up: the bytes as they came. Text that is not UTF-8 is never
    // classified, whatever the cache holds (the lossy forms of earlier inputs).
    let decided = classifier.decide(data, &functions);
    assert_eq!(decided.is_none(), std::str::from_utf8(data).is_err());
}

#[cfg(test)]
mod tests;
