//! Step 4's password, when none is configured: random, from the operating system's generator
//! (the tutorial uses `openssl rand -hex 12`; this is longer).

use rand::rngs::OsRng;
use rand::TryRngCore;

/// Random bytes in the password, shown as twice as many hex characters.
const BYTES: usize = 24;

/// 48 hex characters from the OS RNG.
pub fn random_password() -> std::io::Result<String> {
    let mut bytes = [0u8; BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_hex_and_different_every_time() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 2 * BYTES);
        assert!(a.len() >= 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
