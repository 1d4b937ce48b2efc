//! The first words of a statement, for the few statements the session recognises by their
//! opening words on every simple query (so without a parser): `SET pgrepl.route`, `DISCARD ALL`,
//! `DEALLOCATE ALL`.

/// Whitespace-separated words, with `=` a word of its own and a trailing `;` ignored.
pub struct Words<'a>(pub &'a [u8]);

impl<'a> Words<'a> {
    pub fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.0.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &self.0[start..];
        let len = if rest[0] == b'=' {
            1
        } else {
            rest.iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'=' || *b == b';')
                .unwrap_or(rest.len())
        };
        if len == 0 {
            return None;
        }
        self.0 = &rest[len..];
        Some(&rest[..len])
    }

    pub fn rest_is_empty(&self) -> bool {
        self.0.iter().all(|b| b.is_ascii_whitespace() || *b == b';')
    }
}

/// Whether the first word of `sql` may be one of `words` (each at least three letters), by
/// its first three letters: a test cheap enough for every statement, before `Words`.
#[inline]
pub fn may_start_with(sql: &[u8], words: &[&[u8]]) -> bool {
    let Some(start) = sql.iter().position(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    let Some(lead) = sql.get(start..start + 3) else {
        return false;
    };
    words
        .iter()
        .any(|word| lead.eq_ignore_ascii_case(&word[..3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn may_start_with_looks_at_the_first_three_letters_of_the_first_word() {
        let words: &[&[u8]] = &[b"SET", b"RESET"];
        for sql in ["SET x = 1", " \n set", "RESET ALL", "reset", "SETTINGS"] {
            assert!(may_start_with(sql.as_bytes(), words), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "",
            "  ",
            "SE",
            "/* c */ SET x = 1",
            "DISCARD ALL",
        ] {
            assert!(!may_start_with(sql.as_bytes(), words), "{sql}");
        }
    }
}
