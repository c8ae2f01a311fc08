//! A SASL listener's authentication exchange, driven by the connection loop: SaslHandshake
//! (v1) picks a mechanism of `--sasl-enabled-mechanisms`, then SaslAuthenticate (v0-v2)
//! carries SCRAM-SHA-256/512 or PLAIN (see `auth::scram`), checked against the SCRAM
//! credentials of the cluster metadata, or an OAUTHBEARER token (see `auth::oauth`), checked
//! against the JWKS of `--sasl-oauthbearer-jwks-endpoint-url`. Only these two APIs and ApiVersions are admitted before
//! it succeeds; the connection then acts for `User:<name>`.
//!
//! A failed login answers SASL_AUTHENTICATION_FAILED after a short delay, with the same message
//! whether the user or the password was wrong, and the connection is closed. With
//! `--connections-max-reauth-ms`, the session lasts that long (KIP-368): the client
//! authenticates again on the connection (as the same user), or the connection is closed at
//! its next request after the session ended.

use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine;
use kafka_protocol::messages::{
    ApiKey, RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};

use super::handlers::Principal;
use crate::auth::scram::{self, Credential, Mechanism, ScramError};
use crate::error::ErrorCode;
use crate::placement::CONTROLLER_SHARD;
use crate::protocol::{Request, encode_response};
use crate::shard::Shard;
use crate::shard::calls::ScramCredentialOf;

/// How long a failed login waits before its answer (Kafka's
/// `connection.failed.authentication.delay.ms` default is 100).
pub const FAILED_AUTHENTICATION_DELAY_MS: u64 = 100;

const FAILED: &str = "Authentication failed: invalid username or password";
const FAILED_TOKEN: &str = "Authentication failed: invalid_token";

/// The mechanism a handshake picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Picked {
    Plain,
    Scram(Mechanism),
    OAuthBearer,
}

thread_local! {
    /// This shard's OAUTHBEARER validator and the reload generation it was built at, from the
    /// JWKS file (each shard is one thread, so this is per shard; no other shard sees it).
    static OAUTH: std::cell::RefCell<Option<(u64, Rc<crate::auth::oauth::Validator>)>> =
        const { std::cell::RefCell::new(None) };
}

/// This shard's OAUTHBEARER validator, read again from the JWKS file after a SIGHUP (None:
/// OAUTHBEARER is not configured, or its JWKS cannot be read and none was before; the error
/// is logged, and a JWKS that turned bad on a reload keeps the last good one).
fn oauth_validator(shard: &Shard) -> Option<Rc<crate::auth::oauth::Validator>> {
    let generation = crate::tls::RELOAD_GENERATION.load(std::sync::atomic::Ordering::Relaxed);
    let cached = OAUTH.with(|o| o.borrow().clone());
    if let Some((g, v)) = &cached
        && *g == generation
    {
        return Some(v.clone());
    }
    match shard.config.oauthbearer.as_ref()?.validator() {
        Ok(v) => {
            let v = Rc::new(v);
            OAUTH.with(|o| *o.borrow_mut() = Some((generation, v.clone())));
            Some(v)
        }
        Err(e) => {
            tracing::error!(error = %e, "the OAUTHBEARER JWKS cannot be used; the last good one stays");
            let (_, v) = cached?;
            OAUTH.with(|o| *o.borrow_mut() = Some((generation, v.clone())));
            Some(v)
        }
    }
}

/// One connection's SASL state.
#[derive(Debug, Default)]
pub struct Session {
    picked: Option<Picked>,
    scram: Option<scram::Server>,
    /// The SCRAM exchange's user, once its first message named it.
    scram_user: Option<String>,
    /// Who the connection acts for, once authenticated.
    pub principal: Option<Principal>,
    /// When the session ends (`connections.max.reauth.ms`).
    pub expires: Option<Instant>,
    /// An OAUTHBEARER token's expiry (ms since the epoch): the session ends then at the latest.
    token_expires_ms: Option<i64>,
}

/// What one SASL request did.
pub struct Step {
    /// The encoded response.
    pub response: bytes::Bytes,
    /// The exchange failed: the connection closes once the response is written.
    pub failed: bool,
}

impl Session {
    /// Whether the session has ended (re-authentication was due and did not happen).
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Handles a SaslHandshake or SaslAuthenticate of this connection.
    pub async fn step(&mut self, shard: &Rc<Shard>, req: Request, peer: &str) -> Step {
        let version = req.version;
        let correlation_id = req.header.correlation_id;
        let encode = |key: ApiKey, body: &dyn Fn() -> anyhow::Result<bytes::Bytes>| {
            body().unwrap_or_else(|e| {
                tracing::error!(api = ?key, error = %e, "cannot encode a SASL response");
                bytes::Bytes::new()
            })
        };
        match req.body {
            RequestKind::SaslHandshake(h) => {
                let enabled = &shard.config.sasl_enabled_mechanisms;
                let asked = h.mechanism.as_str().to_string();
                let mechanisms: Vec<_> = enabled
                    .iter()
                    .map(|m| kafka_protocol::protocol::StrBytes::from_string(m.clone()))
                    .collect();
                let picked = match asked.as_str() {
                    _ if !enabled.contains(&asked) => None,
                    "PLAIN" => Some(Picked::Plain),
                    "OAUTHBEARER" => Some(Picked::OAuthBearer),
                    other => Mechanism::from_name(other).map(Picked::Scram),
                };
                let mut failed = version < 1;
                let code = if version < 1 {
                    // v0 sends raw tokens after the handshake, which Kafka 4 no longer takes.
                    ErrorCode::UNSUPPORTED_VERSION
                } else if let Some(p) = picked {
                    self.picked = Some(p);
                    self.scram = None;
                    self.scram_user = None;
                    ErrorCode::NONE
                } else {
                    failed = true;
                    ErrorCode::UNSUPPORTED_SASL_MECHANISM
                };
                if failed {
                    tracing::debug!(%peer, mechanism = %asked, "SASL handshake refused");
                }
                let body = SaslHandshakeResponse::default()
                    .with_error_code(code.code())
                    .with_mechanisms(mechanisms);
                Step {
                    response: encode(ApiKey::SaslHandshake, &|| {
                        encode_response(ApiKey::SaslHandshake, version, correlation_id, &body)
                    }),
                    failed,
                }
            }
            RequestKind::SaslAuthenticate(a) => {
                let outcome = self.authenticate(shard, &a.auth_bytes).await;
                let mut body = SaslAuthenticateResponse::default();
                let failed = match outcome {
                    Ok((token, done)) => {
                        body = body.with_auth_bytes(bytes::Bytes::from(token));
                        if let Some(user) = done {
                            let principal = Principal {
                                kind: "User".into(),
                                name: user,
                            };
                            match &self.principal {
                                // KIP-368: a re-authentication keeps the principal.
                                Some(p) if *p != principal => {
                                    body = SaslAuthenticateResponse::default()
                                        .with_error_code(
                                            ErrorCode::SASL_AUTHENTICATION_FAILED.code(),
                                        )
                                        .with_error_message(Some(
                                            kafka_protocol::protocol::StrBytes::from_static_str(
                                                "re-authentication as another principal",
                                            ),
                                        ));
                                    tracing::info!(%peer, from = %p, to = %principal, "re-authentication as another principal refused");
                                    true
                                }
                                _ => {
                                    let reauth_ms = shard.config.connections_max_reauth_ms;
                                    // KIP-368: the session lasts connections.max.reauth.ms,
                                    // and no longer than an OAUTHBEARER token.
                                    let token_ms = self
                                        .token_expires_ms
                                        .take()
                                        .map(|exp| (exp - crate::clock::now_ms()).max(1) as u64);
                                    let lifetime = match (reauth_ms, token_ms) {
                                        (0, t) => t,
                                        (r, None) => Some(r),
                                        (r, Some(t)) => Some(r.min(t)),
                                    };
                                    if let Some(ms) = lifetime {
                                        self.expires =
                                            Some(Instant::now() + Duration::from_millis(ms));
                                        body = body.with_session_lifetime_ms(
                                            i64::try_from(ms).unwrap_or(i64::MAX),
                                        );
                                    }
                                    tracing::debug!(%peer, principal = %principal, "SASL authentication succeeded");
                                    self.principal = Some(principal);
                                    self.picked = None;
                                    false
                                }
                            }
                        } else {
                            false
                        }
                    }
                    Err(why) => {
                        tracing::info!(%peer, user = self.scram_user.as_deref().unwrap_or("-"), reason = %why, "SASL authentication failed");
                        glommio::timer::sleep(Duration::from_millis(
                            FAILED_AUTHENTICATION_DELAY_MS,
                        ))
                        .await;
                        let message = if self.picked == Some(Picked::OAuthBearer) {
                            FAILED_TOKEN
                        } else {
                            FAILED
                        };
                        body = body
                            .with_error_code(ErrorCode::SASL_AUTHENTICATION_FAILED.code())
                            .with_error_message(Some(
                                kafka_protocol::protocol::StrBytes::from_static_str(message),
                            ));
                        true
                    }
                };
                Step {
                    response: encode(ApiKey::SaslAuthenticate, &|| {
                        encode_response(ApiKey::SaslAuthenticate, version, correlation_id, &body)
                    }),
                    failed,
                }
            }
            _ => Step {
                response: bytes::Bytes::new(),
                failed: true,
            },
        }
    }

    /// One SaslAuthenticate token: the answer token, and the user once authenticated.
    async fn authenticate(
        &mut self,
        shard: &Rc<Shard>,
        token: &[u8],
    ) -> Result<(Vec<u8>, Option<String>), String> {
        match self.picked {
            None => Err("SaslAuthenticate before a SaslHandshake".into()),
            Some(Picked::OAuthBearer) => {
                let token = crate::auth::oauth::parse_initial_response(token)
                    .map_err(|e| format!("malformed OAUTHBEARER message: {e}"))?;
                let validator = oauth_validator(shard).ok_or("OAUTHBEARER's JWKS is not usable")?;
                let now_s = u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0);
                let t = validator
                    .validate(&token, now_s)
                    .map_err(|e| format!("token refused: {e}"))?;
                self.scram_user = Some(t.principal.clone());
                self.token_expires_ms = Some(t.expires_ms);
                Ok((Vec::new(), Some(t.principal)))
            }
            Some(Picked::Plain) => {
                let (user, password) = scram::parse_plain(token).map_err(|e| format!("{e:?}"))?;
                // Checked against the user's SCRAM credential (SHA-512 first).
                let mut cred = None;
                for m in [Mechanism::Sha512, Mechanism::Sha256] {
                    cred = lookup(shard, &user, m).await;
                    if cred.is_some() {
                        break;
                    }
                }
                self.scram_user = Some(user.clone());
                match cred {
                    Some(c) if c.verifies(&password) => Ok((Vec::new(), Some(user))),
                    Some(_) => Err("wrong password".into()),
                    None => Err("unknown user".into()),
                }
            }
            Some(Picked::Scram(m)) => {
                let server = self.scram.get_or_insert_with(|| scram::Server::new(m));
                let first = matches!(server, scram::Server::Start { .. });
                let (cred, nonce) = if first {
                    let user = scram::Server::user_of(token).map_err(|e| format!("{e:?}"))?;
                    self.scram_user = Some(user.clone());
                    let mut raw = [0u8; 18];
                    getrandom::getrandom(&mut raw).map_err(|e| e.to_string())?;
                    let nonce = base64::engine::general_purpose::STANDARD.encode(raw);
                    (lookup(shard, &user, m).await, nonce)
                } else {
                    (None, String::new())
                };
                let server = self.scram.get_or_insert_with(|| scram::Server::new(m));
                match server.step(token, cred, &nonce) {
                    Ok(answer) => {
                        let done = server.is_done();
                        Ok((answer, done.then(|| self.scram_user.clone()).flatten()))
                    }
                    Err(ScramError::UnknownUser) => Err("unknown user".into()),
                    Err(ScramError::InvalidProof) => Err("wrong password".into()),
                    Err(ScramError::Malformed(m)) => Err(format!("malformed message: {m}")),
                }
            }
        }
    }
}

/// The user's credential for `m`, from the metadata the controller shard holds.
async fn lookup(shard: &Rc<Shard>, user: &str, m: Mechanism) -> Option<Credential> {
    let r = shard
        .call(
            CONTROLLER_SHARD,
            ScramCredentialOf {
                user: user.to_string(),
                mechanism: m.id(),
            },
        )
        .await
        .ok()
        .flatten()?;
    Some(Credential {
        mechanism: m,
        salt: r.salt,
        iterations: r.iterations,
        stored_key: r.stored_key,
        server_key: r.server_key,
    })
}
