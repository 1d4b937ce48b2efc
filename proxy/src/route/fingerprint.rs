//! Literal-blind cache keys. Simple-protocol clients inline their values
//! (`WHERE aid = 4711`), so keying the classification cache on the exact text
//! would miss on nearly every statement. Routing never depends on a literal's
//! value, so numbers and plain `'...'` strings are replaced by a marker before
//! the lookup; a miss still classifies the real text.
//!
//! The scanner is deliberately conservative: anything whose lexing depends on
//! settings or is unusual (backslashes, `E''`/`U&''`/`B''` strings, dollar
//! quoting, unterminated quotes or comments) yields no fingerprint, and the
//! exact text is the key.

/// Marks where a literal stood; never part of a key made from raw text,
/// because the cache keeps the two kinds of keys apart.
const LITERAL: u8 = 0x01;

/// `sql` with its literals shown as `?`, for a log line that must not show
/// values; None when they cannot be told apart safely.
pub fn shown(sql: &str) -> Option<String> {
    match fingerprint(sql) {
        Some(key) => Some(key.replace(char::from(LITERAL), "?")),
        None if !sql.contains(['\'', '$', '"']) && !sql.bytes().any(|b| b.is_ascii_digit()) => {
            Some(sql.to_owned())
        }
        None => None,
    }
}

/// The literal-blind form of `sql`, or None when the exact text must be the
/// key (nothing to replace, or not safe to).
pub fn fingerprint(sql: &str) -> Option<String> {
    let mut out = Vec::with_capacity(sql.len());
    // Valid UTF-8: the text's own pieces between ASCII markers.
    fingerprint_into(sql.as_bytes(), &mut out).then(|| String::from_utf8(out).ok())?
}

/// [`fingerprint`] into `out` (emptied first), a buffer the caller reuses: the cache takes
/// one for every simple query, and an allocation would cost more than the scan. False when
/// the exact text must be the key.
///
/// Works on bytes, so that a statement found in the cache is never checked for UTF-8: text
/// that is not UTF-8 outside its literals gives a key that is not either (no valid text's
/// key can match it), and a string literal that is not UTF-8 gives no fingerprint.
pub fn fingerprint_into(b: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut replaced = false;
    let mut i = 0;
    // b[copied..i] is still to be copied verbatim.
    let mut copied = 0;
    // Where the last number or `$n` ended: a `$` right after one is no name's.
    let mut number_end = usize::MAX;
    loop {
        // Most bytes (keywords, names, spaces, operators) start nothing: skip them in a
        // tight loop. What a byte does depends only on it and the byte before, so nothing
        // is lost by not walking words as wholes.
        i = next_start(b, i);
        let Some(&c) = b.get(i) else {
            break;
        };
        let glued = i > 0 && is_word_byte(b[i - 1]);
        match c {
            b'\\' => return false,
            // E'', U&'', B'', X'', N'' and the like.
            b'\'' if glued || (i > 0 && b[i - 1] == b'&') => return false,
            b'\'' => {
                let Some(end) = string_end(b, i) else {
                    return false;
                };
                if std::str::from_utf8(&b[i..end]).is_err() {
                    return false;
                }
                out.extend_from_slice(&b[copied..i]);
                out.push(LITERAL);
                replaced = true;
                i = end;
                copied = i;
            }
            b'"' => match quoted_end(b, i, b'"') {
                Some(end) => i = end,
                None => return false,
            },
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match block_comment_end(b, i) {
                Some(end) => i = end,
                None => return false,
            },
            // Inside a name (`a$b`) it is part of it.
            b'$' if glued && i != number_end => i += 1,
            b'$' => {
                // `$1` parameters stay; `$$` and `$tag$` quoting is not scanned.
                let digits = b[i + 1..].iter().take_while(|x| x.is_ascii_digit()).count();
                if digits == 0 {
                    return false;
                }
                i += 1 + digits;
                number_end = i;
            }
            b'0'..=b'9' | b'.' if starts_number(b, i) => {
                let len = b[i..]
                    .iter()
                    .take_while(|&&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.')
                    .count();
                out.extend_from_slice(&b[copied..i]);
                out.push(LITERAL);
                replaced = true;
                i += len;
                copied = i;
                number_end = i;
            }
            _ => i += 1,
        }
    }
    if replaced {
        out.extend_from_slice(&b[copied..]);
    }
    replaced
}

/// The first byte from `i` on that may start something ([`STARTS_SOMETHING`]), or the
/// end: eight bytes at a time while none of them can (most of a statement is keywords,
/// names and spaces), then byte by byte.
#[inline]
fn next_start(b: &[u8], mut i: usize) -> usize {
    let starts = |x: &u8| STARTS_SOMETHING[*x as usize];
    while let Some(chunk) = b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        if may_start_something(u64::from_le_bytes(chunk)) {
            if let Some(at) = chunk.iter().position(starts) {
                return i + at;
            }
        }
        i += 8;
    }
    let rest = &b[i.min(b.len())..];
    i + rest.iter().position(starts).unwrap_or(rest.len())
}

/// `byte` in each of a word's eight bytes.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// Whether any of eight bytes may start something: one in `"` ..= `9` (quotes, `$`, `-`,
/// `.`, `/`, digits, and a few harmless others), a backslash, or a byte that is not ASCII
/// (which the sums below cannot take). Never false for a byte of [`STARTS_SOMETHING`].
#[inline]
fn may_start_something(word: u64) -> bool {
    const HIGH: u64 = splat(0x80);
    if word & HIGH != 0 {
        return true;
    }
    // Each byte is below 0x80, so no sum carries into the next byte: the high bit of a
    // byte of `word + splat(0x80 - n)` says whether it is at least n.
    let from_quote = word + splat(0x80 - b'"');
    let past_nine = word + splat(0x80 - (b'9' + 1));
    let in_range = from_quote & !past_nine & HIGH;
    // A zero byte where a backslash was (exact for "any", which is all that is asked).
    let backslash = word ^ splat(b'\\');
    let zero = backslash.wrapping_sub(splat(1)) & !backslash & HIGH;
    (in_range | zero) != 0
}

/// Lookup table of the bytes [`fingerprint_into`] must look at: quotes, comment starts, `$`,
/// backslashes and what may start a number.
static STARTS_SOMETHING: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let x = i as u8;
        table[i] = matches!(
            x,
            b'\'' | b'"' | b'-' | b'/' | b'$' | b'\\' | b'.' | b'0'..=b'9'
        );
        i += 1;
    }
    table
};

/// Letters, digits, `_`, `$` and any non-ASCII byte continue an identifier.
#[inline]
fn is_word_byte(x: u8) -> bool {
    WORD_BYTES[x as usize]
}

/// Lookup table for [`is_word_byte`]: this scan runs on every simple query.
static WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let x = i as u8;
        table[i] = x.is_ascii_alphanumeric() || x == b'_' || x == b'$' || x >= 0x80;
        i += 1;
    }
    table
};

/// A digit (or `.digit`) not glued to a preceding identifier starts a number.
fn starts_number(b: &[u8], i: usize) -> bool {
    let glued = i > 0 && (is_word_byte(b[i - 1]) || b[i - 1] == b'.');
    let digit_here = b[i].is_ascii_digit() || b.get(i + 1).is_some_and(|x| x.is_ascii_digit());
    !glued && digit_here
}

/// End (exclusive) of a standard `'...'` string at `start`; `''` escapes a quote.
/// None for backslashes (their meaning depends on a server setting) or no end.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *b.get(i)? {
            b'\\' => return None,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// End (exclusive) of a `"..."` identifier; a doubled quote escapes it.
fn quoted_end(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *b.get(i)? {
            x if x == quote && b.get(i + 1) == Some(&quote) => i += 2,
            x if x == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// End (exclusive) of a `/* ... */` comment; PostgreSQL nests them.
fn block_comment_end(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_buffer_gives_the_same_fingerprint() {
        let mut buffer = b"left over from the statement before".to_vec();
        for sql in [
            "SELECT * FROM t WHERE id = 7",
            "SELECT now()",
            "SELECT 'a', 2",
        ] {
            let made = fingerprint_into(sql.as_bytes(), &mut buffer);
            let made = made.then(|| String::from_utf8(buffer.clone()).unwrap());
            assert_eq!(made, fingerprint(sql), "{sql}");
        }
    }

    fn fp(sql: &str) -> Option<String> {
        fingerprint(sql).map(|s| s.replace(char::from(LITERAL), "?"))
    }

    #[test]
    fn replaces_numbers_and_plain_strings() {
        assert_eq!(
            fp("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = ?;")
        );
        assert_eq!(
            fp("SELECT 'it''s', 1.5e3, .5").as_deref(),
            Some("SELECT ?, ?, ?")
        );
        assert_eq!(
            fingerprint("SELECT * FROM t WHERE a = 1"),
            fingerprint("SELECT * FROM t WHERE a = 2")
        );
    }

    #[test]
    fn keeps_identifiers_parameters_comments_and_quoted_names() {
        assert_eq!(fp("SELECT t1.c2 FROM t1 WHERE x = $1"), None);
        assert_eq!(
            fp("/* 1 'a' */ SELECT \"col 1\", 7 -- 9\n").as_deref(),
            Some("/* 1 'a' */ SELECT \"col 1\", ? -- 9\n")
        );
        assert_eq!(
            fp("/* a /* nested */ 'x' */ SELECT 1").as_deref(),
            Some("/* a /* nested */ 'x' */ SELECT ?")
        );
    }

    #[test]
    fn bails_out_on_anything_setting_dependent_or_unusual() {
        for sql in [
            "SELECT 'a\\'; DELETE FROM t; --'",
            "SELECT E'a\\n'",
            "SELECT U&'d\\0061t'",
            "SELECT $$ 1 $$",
            "SELECT $tag$ x $tag$",
            "SELECT 'unterminated",
            "SELECT 1 /* unterminated",
            "SELECT \"unterminated",
            "SELECT x'1F'",
        ] {
            assert_eq!(fingerprint(sql), None, "{sql}");
        }
    }

    /// The scan looks at a byte and the one before it, not at whole words: a `$` or a digit
    /// inside a name stays, a `$` after a number or a parameter is quoting.
    #[test]
    fn names_with_digits_and_dollars_stay_whole() {
        assert_eq!(
            fp("SELECT a$b, x1, t.c2, café9 FROM t WHERE a$1 = 3").as_deref(),
            Some("SELECT a$b, x1, t.c2, café9 FROM t WHERE a$1 = ?")
        );
        assert_eq!(fp("SELECT 1, 0e$"), None);
        assert_eq!(fp("SELECT '', $1$"), None);
    }

    /// Text that is not UTF-8 never gets the key of one that is: outside literals its bytes
    /// stay in the key, inside a string literal there is no fingerprint.
    #[test]
    fn text_that_is_not_utf8_keys_apart() {
        let mut key = Vec::new();
        assert!(!fingerprint_into(b"SELECT '\xff', 1", &mut key));
        assert!(fingerprint_into(b"SELECT '\xc3\xa9', 1", &mut key));
        assert!(fingerprint_into(b"SELECT \xff, 1", &mut key));
        assert!(std::str::from_utf8(&key).is_err(), "{key:?}");
    }

    /// The eight-at-a-time skip finds what a byte-by-byte scan finds, wherever in a word
    /// the byte stands, whatever stands around it.
    #[test]
    fn the_word_skip_finds_every_start() {
        let fillers = [b'a', b' ', b'(', b'\x80', b'\xff', b'Z', b'!', b';'];
        for byte in 0..=255u8 {
            for filler in fillers {
                for at in 0..20 {
                    let mut text = vec![filler; 20];
                    text[at] = byte;
                    for from in 0..=at {
                        let naive = (from..text.len())
                            .find(|&i| STARTS_SOMETHING[text[i] as usize])
                            .unwrap_or(text.len());
                        assert_eq!(next_start(&text, from), naive, "{text:?} from {from}");
                    }
                }
            }
        }
        assert_eq!(next_start(b"", 0), 0);
        assert_eq!(next_start(b"abc", 3), 3);
    }

    #[test]
    fn nothing_to_replace_gives_none() {
        assert_eq!(fingerprint("SELECT a FROM t"), None);
        assert_eq!(fingerprint(""), None);
    }
}
