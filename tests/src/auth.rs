//! The client's side of PostgreSQL's password authentication, for the raw-protocol client
//! ([`crate::suite::raw::RawClient::login`]): what an Authentication message asks for, and
//! the password message that answers it (cleartext, md5 or SCRAM-SHA-256 without channel
//! binding). Servers and the proxy may ask for any of them.

use anyhow::{bail, ensure, Context, Result};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};

/// An Authentication message ('R'), by its request code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// 0: logged in.
    Ok,
    /// 3: the password in clear.
    Cleartext,
    /// 5: md5 of the password and user name, salted.
    Md5 { salt: [u8; 4] },
    /// 10: a SASL exchange, with the mechanisms the server offers.
    Sasl { mechanisms: Vec<String> },
    /// 11: the server's next SASL message.
    SaslContinue(Vec<u8>),
    /// 12: the server's last SASL message.
    SaslFinal(Vec<u8>),
    /// Anything else (Kerberos, GSSAPI, SSPI...): not spoken here.
    Unsupported(i32),
}

impl AuthRequest {
    /// Reads the body of an Authentication message.
    pub fn parse(body: &[u8]) -> Result<AuthRequest> {
        ensure!(
            body.len() >= 4,
            "Authentication message of {} bytes",
            body.len()
        );
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let rest = &body[4..];
        Ok(match code {
            0 => AuthRequest::Ok,
            3 => AuthRequest::Cleartext,
            5 => AuthRequest::Md5 {
                salt: rest
                    .try_into()
                    .context("md5 request without a 4-byte salt")?,
            },
            10 => AuthRequest::Sasl {
                mechanisms: rest
                    .split(|&b| b == 0)
                    .filter(|m| !m.is_empty())
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect(),
            },
            11 => AuthRequest::SaslContinue(rest.to_vec()),
            12 => AuthRequest::SaslFinal(rest.to_vec()),
            other => AuthRequest::Unsupported(other),
        })
    }
}

/// One login's answers: the credentials, and the SCRAM exchange once one has begun.
pub struct PasswordAuth<'a> {
    user: &'a str,
    password: Option<&'a str>,
    scram: Option<ScramSha256>,
}

impl<'a> PasswordAuth<'a> {
    pub fn new(user: &'a str, password: Option<&'a str>) -> PasswordAuth<'a> {
        PasswordAuth {
            user,
            password,
            scram: None,
        }
    }

    /// The body of the PasswordMessage ('p') that answers `request`, or None when the
    /// request needs no answer (logged in, or SCRAM's last message checked).
    pub fn reply(&mut self, request: AuthRequest) -> Result<Option<Vec<u8>>> {
        match request {
            AuthRequest::Ok => Ok(None),
            AuthRequest::Cleartext => Ok(Some(c_string(self.password()?))),
            AuthRequest::Md5 { salt } => {
                let hash = md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), salt);
                Ok(Some(c_string(&hash)))
            }
            AuthRequest::Sasl { mechanisms } => {
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    bail!("the server offers SASL mechanisms {mechanisms:?}, none of them {SCRAM_SHA_256}");
                }
                let scram =
                    ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                // SASLInitialResponse: mechanism, then the length-prefixed client-first message.
                let first = scram.message();
                let mut body = c_string(SCRAM_SHA_256);
                body.extend_from_slice(&(first.len() as i32).to_be_bytes());
                body.extend_from_slice(first);
                self.scram = Some(scram);
                Ok(Some(body))
            }
            AuthRequest::SaslContinue(data) => {
                let scram = self
                    .scram
                    .as_mut()
                    .context("SASL continue before SASL began")?;
                scram.update(&data).context("the server's SCRAM message")?;
                Ok(Some(scram.message().to_vec()))
            }
            AuthRequest::SaslFinal(data) => {
                let mut scram = self.scram.take().context("SASL final before SASL began")?;
                scram
                    .finish(&data)
                    .context("the server's SCRAM signature")?;
                Ok(None)
            }
            AuthRequest::Unsupported(code) => {
                bail!("authentication request {code} is not supported")
            }
        }
    }

    fn password(&self) -> Result<&'a str> {
        self.password.with_context(|| {
            format!(
                "the server asks {} for a password, and none was given",
                self.user
            )
        })
    }
}

/// `text` and its NUL terminator.
fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i32, rest: &[u8]) -> Vec<u8> {
        [&code.to_be_bytes()[..], rest].concat()
    }

    #[test]
    fn requests_are_read_by_their_code() {
        let cases: [(Vec<u8>, AuthRequest); 7] = [
            (body(0, b""), AuthRequest::Ok),
            (body(3, b""), AuthRequest::Cleartext),
            (body(5, b"abcd"), AuthRequest::Md5 { salt: *b"abcd" }),
            (
                body(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
                AuthRequest::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
                },
            ),
            (body(11, b"r=x"), AuthRequest::SaslContinue(b"r=x".to_vec())),
            (body(12, b"v=y"), AuthRequest::SaslFinal(b"v=y".to_vec())),
            (body(7, b""), AuthRequest::Unsupported(7)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(AuthRequest::parse(&bytes).unwrap(), expected, "{bytes:?}");
        }
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bytes in [vec![0, 0], body(5, b"abc")] {
            assert!(AuthRequest::parse(&bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn replies_answer_each_request() {
        let md5 = format!("{}\0", md5_hash(b"u", b"pw", *b"salt"));
        let cases: [(AuthRequest, Option<&[u8]>); 3] = [
            (AuthRequest::Ok, None),
            (AuthRequest::Cleartext, Some(b"pw\0")),
            (AuthRequest::Md5 { salt: *b"salt" }, Some(md5.as_bytes())),
        ];
        for (request, expected) in cases {
            let reply = PasswordAuth::new("u", Some("pw")).reply(request.clone());
            assert_eq!(reply.unwrap().as_deref(), expected, "{request:?}");
        }
    }

    #[test]
    fn a_sasl_exchange_starts_with_the_mechanism_and_the_client_first_message() {
        let mut auth = PasswordAuth::new("u", Some("pw"));
        let reply = auth
            .reply(AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into()],
            })
            .unwrap()
            .unwrap();
        let (mechanism, rest) = reply.split_at(SCRAM_SHA_256.len() + 1);
        assert_eq!(mechanism, b"SCRAM-SHA-256\0");
        let len = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert_eq!(len, rest.len() - 4);
        assert!(rest[4..].starts_with(b"n,,n=,r="), "{:?}", &rest[4..]);
    }

    #[test]
    fn requests_that_cannot_be_answered_are_errors() {
        let cases: [(Option<&str>, AuthRequest); 6] = [
            (None, AuthRequest::Cleartext),
            (None, AuthRequest::Md5 { salt: *b"salt" }),
            (
                Some("pw"),
                AuthRequest::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS".into()],
                },
            ),
            (Some("pw"), AuthRequest::SaslContinue(b"r=x".to_vec())),
            (Some("pw"), AuthRequest::SaslFinal(b"v=y".to_vec())),
            (Some("pw"), AuthRequest::Unsupported(7)),
        ];
        for (password, request) in cases {
            let reply = PasswordAuth::new("u", password).reply(request.clone());
            assert!(reply.is_err(), "{password:?} {request:?}: {reply:?}");
        }
    }
}
