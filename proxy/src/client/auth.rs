//! Authenticating clients against `[[users]]`: SCRAM-SHA-256 (pgwire's server state machine),
//! md5 or trust. Unknown users go through a SCRAM exchange that cannot succeed, so the answer
//! never reveals which user names exist, as PostgreSQL does.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgrepl_config::{AuthMethod, UserConfig};
use pgwire::api::auth::md5pass::hash_md5_password;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramServerAuth, SCRAM_ITERATIONS};
use pgwire::api::auth::Password;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{DecodeContext, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::sqlstate;
use crate::protocol::write::ProxyError;
use crate::protocol::{peek_header, HEADER_LEN};

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// Authentication messages are small; PostgreSQL caps them near this too.
const MAX_AUTH_MESSAGE: usize = 10000;

/// Salt and salted password of one user, computed once at start (PBKDF2 is deliberately slow).
#[derive(Clone)]
struct ScramKeys {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl ScramKeys {
    fn new(password: &str) -> ScramKeys {
        let salt: [u8; 16] = rand::random();
        ScramKeys {
            salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
        }
    }
}

#[derive(Clone)]
struct UserEntry {
    method: AuthMethod,
    password: Option<Arc<str>>,
    scram: Option<ScramKeys>,
}

/// The configured users, ready for authentication.
pub struct Users {
    map: HashMap<String, UserEntry>,
    /// Keys for users that do not exist: the exchange runs and fails like a wrong password.
    mock: ScramKeys,
}

impl UserEntry {
    fn new(user: &UserConfig) -> UserEntry {
        UserEntry {
            method: user.auth,
            password: user.password.as_deref().map(Arc::from),
            scram: match (user.auth, &user.password) {
                (AuthMethod::ScramSha256, Some(pw)) => Some(ScramKeys::new(pw)),
                _ => None,
            },
        }
    }

    /// Whether it authenticates `user` as configured now.
    fn is(&self, user: &UserConfig) -> bool {
        self.method == user.auth && self.password.as_deref() == user.password.as_deref()
    }
}

impl Users {
    pub fn new(users: &[UserConfig]) -> Users {
        let mock_password: [u8; 16] = rand::random();
        Users::with_keys(users, None, ScramKeys::new(&format!("{mock_password:?}")))
    }

    /// The users of a reloaded `[[users]]`: those configured as before keep their keys (no
    /// new salting), the others get new ones.
    pub fn reloaded(&self, users: &[UserConfig]) -> Users {
        Users::with_keys(users, Some(self), self.mock.clone())
    }

    fn with_keys(users: &[UserConfig], before: Option<&Users>, mock: ScramKeys) -> Users {
        let map = users
            .iter()
            .map(|u| {
                let kept = before
                    .and_then(|before| before.map.get(&u.name))
                    .filter(|entry| entry.is(u));
                let entry = kept.cloned().unwrap_or_else(|| UserEntry::new(u));
                (u.name.clone(), entry)
            })
            .collect();
        Users { map, mock }
    }
}

fn auth_failed(user: &str) -> ProxyError {
    ProxyError::fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// Why authentication ended without success.
pub enum AuthError {
    /// The client went away (psql does this to ask for a password); nothing to say.
    Gone,
    Rejected(ProxyError),
}

impl From<ProxyError> for AuthError {
    fn from(e: ProxyError) -> Self {
        AuthError::Rejected(e)
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, msg: Authentication) -> Result<(), AuthError> {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).map_err(|e| {
        ProxyError::fatal(
            "XX000",
            format!("cannot encode authentication request: {e}"),
        )
    })?;
    s.write_all(&buf).await.map_err(|_| AuthError::Gone)
}

/// Reads the client's next password-family message ('p').
async fn receive<S: AsyncRead + Unpin>(s: &mut S) -> Result<PasswordMessageFamily, AuthError> {
    let mut buf = BytesMut::zeroed(HEADER_LEN);
    s.read_exact(&mut buf).await.map_err(|_| AuthError::Gone)?;
    let (ty, total) = peek_header(&buf).ok_or(AuthError::Gone)?;
    if ty != b'p' {
        return Err(ProxyError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "expected password response, got message type {:?}",
                ty as char
            ),
        )
        .into());
    }
    if !(HEADER_LEN..=MAX_AUTH_MESSAGE).contains(&total) {
        return Err(ProxyError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid password packet size ({total} bytes)"),
        )
        .into());
    }
    buf.resize(total, 0);
    s.read_exact(&mut buf[HEADER_LEN..])
        .await
        .map_err(|_| AuthError::Gone)?;
    match PasswordMessageFamily::decode(&mut buf, &DecodeContext::default()) {
        Ok(Some(msg)) => Ok(msg),
        _ => {
            Err(ProxyError::fatal(sqlstate::PROTOCOL_VIOLATION, "malformed password packet").into())
        }
    }
}

/// Runs the user's authentication method and sends AuthenticationOk. Returns the password
/// the proxy uses for this user's backend connections.
pub async fn authenticate<S>(
    s: &mut S,
    users: &Users,
    user: &str,
) -> Result<Option<Arc<str>>, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let entry = users.map.get(user);
    match entry.map(|e| e.method) {
        Some(AuthMethod::Trust) => {}
        Some(AuthMethod::Md5) => {
            let password = entry.and_then(|e| e.password.clone()).unwrap_or_default();
            md5(s, user, &password).await?
        }
        Some(AuthMethod::ScramSha256) | None => {
            let keys = entry.and_then(|e| e.scram.as_ref()).unwrap_or(&users.mock);
            scram(s, user, keys, entry.is_some()).await?
        }
    }
    send(s, Authentication::Ok).await?;
    Ok(entry.and_then(|e| e.password.clone()))
}

async fn md5<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    user: &str,
    password: &str,
) -> Result<(), AuthError> {
    let salt: [u8; 4] = rand::random();
    send(s, Authentication::MD5Password(salt.to_vec())).await?;
    let answer = receive(s).await?.into_password().map_err(|_| {
        ProxyError::fatal(sqlstate::PROTOCOL_VIOLATION, "malformed password packet")
    })?;
    if answer.password != hash_md5_password(user, password, &salt) {
        return Err(auth_failed(user).into());
    }
    Ok(())
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    user: &str,
    keys: &ScramKeys,
    known: bool,
) -> Result<(), AuthError> {
    send(s, Authentication::SASL(vec![SCRAM_SHA_256.to_owned()])).await?;
    let initial = receive(s)
        .await?
        .into_sasl_initial_response()
        .map_err(|_| {
            ProxyError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed SASL initial response",
            )
        })?;
    if initial.auth_method != SCRAM_SHA_256 {
        return Err(ProxyError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!(
                "client selected an invalid SASL authentication mechanism: {}",
                initial.auth_method
            ),
        )
        .into());
    }
    let client_first = initial.data.unwrap_or_default();
    let server = ScramServerAuth::new();
    let (server_first, waiting) = server
        .on_client_first_message(
            &client_first,
            Password::new(Some(keys.salt.clone()), keys.salted.clone()),
        )
        .map_err(|e| {
            ProxyError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("malformed SCRAM message: {e}"),
            )
        })?;
    send(s, Authentication::SASLContinue(Bytes::from(server_first))).await?;
    let client_final = receive(s)
        .await?
        .into_sasl_response()
        .map_err(|_| ProxyError::fatal(sqlstate::PROTOCOL_VIOLATION, "malformed SASL response"))?;
    match waiting.on_client_final_message(&client_final.data) {
        Ok(server_final) if known => {
            send(s, Authentication::SASLFinal(Bytes::from(server_final))).await
        }
        _ => Err(auth_failed(user).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: Option<&str>, auth: AuthMethod) -> UserConfig {
        UserConfig {
            name: name.to_owned(),
            password: password.map(str::to_owned),
            auth,
        }
    }

    #[test]
    fn a_reload_keeps_the_keys_of_unchanged_users_only() {
        let before = Users::new(&[
            user("kept", Some("a"), AuthMethod::ScramSha256),
            user("new_password", Some("b"), AuthMethod::ScramSha256),
            user("removed", Some("c"), AuthMethod::Md5),
        ]);
        let after = before.reloaded(&[
            user("kept", Some("a"), AuthMethod::ScramSha256),
            user("new_password", Some("B"), AuthMethod::ScramSha256),
            user("added", None, AuthMethod::Trust),
        ]);
        let salt = |users: &Users, name: &str| users.map[name].scram.as_ref().unwrap().salt.clone();
        assert_eq!(salt(&after, "kept"), salt(&before, "kept"));
        assert_ne!(salt(&after, "new_password"), salt(&before, "new_password"));
        assert_eq!(after.map["new_password"].password.as_deref(), Some("B"));
        assert!(!after.map.contains_key("removed"));
        assert_eq!(after.map["added"].method, AuthMethod::Trust);
        assert_eq!(after.mock.salt, before.mock.salt);
    }
}
