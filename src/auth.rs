//! Token checks. App back ends mint JWTs; the hub only verifies them.
//! HS256 with a shared secret by default; RS256/ES256 with configured public keys.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use signaling::Role;

use crate::config::AuthConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// user, driver, courier, ops, admin …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Channels granted by name (for namespaces with `subscribe = "grant"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// Meeting rooms the token lets its user join, with the role in each (`rooms` claim):
/// `{"rooms": {"standup": "host", "townhall": "viewer"}}`.
pub type RoomGrants = BTreeMap<String, Role>;

/// A whole token: the claims the channel rules read, and the meeting grants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    #[serde(flatten)]
    pub claims: Claims,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rooms: RoomGrants,
}

impl Token {
    /// The claims as the channel rules see them, and the room grants. A room grant also grants
    /// its channel `room:{id}` (namespace `room`, rule `grant`): the room's events and in-meeting
    /// chat are for the users the room's grants name.
    pub fn split(self) -> (Claims, RoomGrants) {
        let mut claims = self.claims;
        for room in self.rooms.keys() {
            let channel = format!("room:{room}");
            if !claims.channels.contains(&channel) {
                claims.channels.push(channel);
            }
        }
        (claims, self.rooms)
    }
}

/// Parses `r1:host,r2:viewer` (the dev token's `rooms` parameter).
pub fn parse_room_grants(list: &str) -> Result<RoomGrants, String> {
    let mut grants = RoomGrants::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let (room, role) = item.rsplit_once(':').ok_or_else(|| format!("{item:?} is not room:role"))?;
        let role = match role {
            "host" => Role::Host,
            "participant" => Role::Participant,
            "viewer" => Role::Viewer,
            other => return Err(format!("unknown room role {other:?} (host, participant, viewer)")),
        };
        grants.insert(room.to_string(), role);
    }
    Ok(grants)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    leeway: u64,
    audience: Option<String>,
}

impl Verifier {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Verifier> {
        let mut keys = Vec::new();
        if !config.hmac_secret.is_empty() {
            keys.push((Algorithm::HS256, DecodingKey::from_secret(config.hmac_secret.as_bytes())));
        }
        for path in &config.rsa_public_keys {
            let pem =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("auth.rsa_public_keys: {}: {e}", path.display()))?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map_err(|e| anyhow::anyhow!("auth.rsa_public_keys: {}: {e}", path.display()))?;
            keys.push((Algorithm::RS256, key));
        }
        for path in &config.ec_public_keys {
            let pem =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("auth.ec_public_keys: {}: {e}", path.display()))?;
            let key = DecodingKey::from_ec_pem(&pem)
                .map_err(|e| anyhow::anyhow!("auth.ec_public_keys: {}: {e}", path.display()))?;
            keys.push((Algorithm::ES256, key));
        }
        Ok(Verifier { keys, leeway: config.leeway.as_secs(), audience: config.audience.clone() })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_token(token).map(|t| t.claims)
    }

    /// Verifies a token and returns its claims and room grants.
    pub fn verify_token(&self, token: &str) -> Result<Token, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut last = AuthError::Invalid(format!("no key for algorithm {:?}", header.alg));
        for (alg, key) in self.keys.iter().filter(|(alg, _)| *alg == header.alg) {
            let mut validation = Validation::new(*alg);
            validation.leeway = self.leeway;
            // `aud` is required and checked only when an audience is configured.
            match &self.audience {
                Some(aud) => {
                    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
                    validation.set_audience(&[aud]);
                }
                None => {
                    validation.set_required_spec_claims(&["exp", "sub"]);
                    validation.validate_aud = false;
                }
            }
            match decode::<Token>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                        _ => AuthError::Invalid(e.to_string()),
                    }
                }
            }
        }
        Err(last)
    }
}

/// Mints an HS256 token (dev mode, tests, load tests).
pub fn mint_hs256<C: Serialize>(secret: &str, claims: &C) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing with a byte secret cannot fail")
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            hmac_secret: "0123456789abcdef0123".into(),
            leeway: std::time::Duration::ZERO,
            ..Default::default()
        }
    }

    fn claims(exp: u64) -> Claims {
        Claims { sub: "alice".into(), exp, role: None, channels: vec![] }
    }

    #[test]
    fn accepts_good_rejects_bad_and_expired() {
        let v = Verifier::new(&config()).unwrap();
        let good = mint_hs256("0123456789abcdef0123", &claims(now_secs() + 60));
        assert_eq!(v.verify(&good).unwrap().sub, "alice");
        let forged = mint_hs256("another-secret-of-length", &claims(now_secs() + 60));
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
        let old = mint_hs256("0123456789abcdef0123", &claims(now_secs() - 60));
        assert_eq!(v.verify(&old), Err(AuthError::Expired));
        assert!(matches!(v.verify("not a token"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn room_grants_ride_along_and_grant_their_channel() {
        let v = Verifier::new(&config()).unwrap();
        let rooms = parse_room_grants("r1:host,r2:viewer").unwrap();
        let token = Token { claims: claims(now_secs() + 60), rooms: rooms.clone() };
        let minted = mint_hs256("0123456789abcdef0123", &token);
        let (claims, grants) = v.verify_token(&minted).unwrap().split();
        assert_eq!(grants, rooms);
        assert_eq!(claims.channels, vec!["room:r1".to_string(), "room:r2".to_string()]);
        assert!(parse_room_grants("r1:owner").is_err());
        assert!(parse_room_grants("r1").is_err());
    }
}
