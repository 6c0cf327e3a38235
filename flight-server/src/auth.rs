//! Authentication: a username/password handshake (HTTP Basic) that issues a bearer token
//! valid for a configured time, and static bearer tokens from the configuration. Every
//! call but the handshake must carry `authorization: Bearer <token>`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Who may connect.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Username and password pairs for the handshake.
    pub users: Vec<(String, String)>,
    /// Tokens accepted as they are (they do not expire).
    pub static_tokens: Vec<String>,
    /// How long a token issued by the handshake is valid.
    pub token_ttl: Duration,
}

/// An authenticated caller: the identity its session is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The bearer token the call carried.
    pub token: String,
    /// The user it was issued to (`token` for a static token).
    pub user: String,
}

/// Checks credentials and tokens.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    issued: Mutex<HashMap<String, (String, Instant)>>,
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn new_token() -> Result<String, Status> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Status::internal(format!("cannot draw a random token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Authenticator {
    /// An authenticator for `config`.
    pub fn new(config: AuthConfig) -> Self {
        Self {
            config,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// The handshake: checks `authorization: Basic base64(user:password)` and issues a
    /// token.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the handshake needs an 'authorization: Basic ...' header with a username and password",
                )
            })?;
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the handshake takes Basic credentials (username and password)",
                )
            })?;
        // padded (RFC 7617) or not (the Go Flight client omits the padding)
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = engine
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
        let known = self
            .config
            .users
            .iter()
            .any(|(u, p)| same(u, user) & same(p, password));
        if !known {
            return Err(Status::unauthenticated("wrong username or password"));
        }
        let token = new_token()?;
        let expires = Instant::now() + self.config.token_ttl;
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (user.to_owned(), expires));
        Ok(Caller {
            token,
            user: user.to_owned(),
        })
    }

    /// Checks the bearer token of a call.
    pub fn check(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no credentials: call Handshake with a username and password, or send 'authorization: Bearer <token>'",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("send 'authorization: Bearer <token>'"))?
            .trim();
        if self.config.static_tokens.iter().any(|t| same(t, token)) {
            return Ok(Caller {
                token: token.to_owned(),
                user: "token".to_owned(),
            });
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        match issued.get(token) {
            Some((user, expires)) if *expires > Instant::now() => Ok(Caller {
                token: token.to_owned(),
                user: user.clone(),
            }),
            Some(_) => {
                issued.remove(token);
                Err(Status::unauthenticated(
                    "the token has expired: call Handshake again",
                ))
            }
            None => Err(Status::unauthenticated("invalid token")),
        }
    }

    /// Forgets expired tokens; returns those removed (their sessions can go too).
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = issued
            .iter()
            .filter(|(_, (_, e))| *e <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for t in &gone {
            issued.remove(t);
        }
        gone
    }
}
