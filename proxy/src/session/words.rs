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
