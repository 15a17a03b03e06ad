//! Bearer tokens: EdDSA (Ed25519) JWTs with a `kid` in the header.
//!
//! command-api alone holds a private key ([`TokenIssuer`]); both APIs verify with public keys
//! only ([`TokenVerifier`]), so the read side cannot mint a token. A verifier accepts several
//! keys at once (looked up by `kid`), which is how keys are rotated without downtime. The
//! algorithm is pinned: a token whose header names anything but `EdDSA` (HS256, `none`, ...) or
//! an unknown `kid` is rejected before any signature is looked at.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::Role;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

/// Tokens may live at most this long, whatever the configuration says.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

const ISSUER: &str = "catalog";

/// The PUBLIC development signing key: used only when `CATALOG_ENV=development` is set and no
/// key is given, and refused everywhere else. Anyone can sign tokens with it.
pub const DEV_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFZkKPkrEEiuyImG+EOFRq0w35SgD0UU8PQZUEqhpCmw
-----END PRIVATE KEY-----
";

/// The public half of [`DEV_SIGNING_KEY`].
pub const DEV_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAn46g/Oq62+bqGmyl2KqI6/fPaTnlyjcel37JDEgLWOU=
-----END PUBLIC KEY-----
";

/// The public half of the example key in `deploy/k8s/secret.example.yaml`: never accepted, in
/// any environment, so a copied example cannot go live.
const EXAMPLE_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAUykoEw8SafAN8z/NnlMkldwoVjwe2Pr+oY44lSR33U4=
-----END PUBLIC KEY-----
";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// An Ed25519 public key and its key id (the RFC 7638 JWK thumbprint, so the id follows from
/// the key and needs no configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    kid: String,
}

impl PublicKey {
    fn from_raw(raw: [u8; 32]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(raw);
        // RFC 7638: the required members, lexicographically ordered, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Self { raw, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// As a JSON Web Key, as `/.well-known/jwks.json` lists it.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP",
            crv: "Ed25519",
            alg: "EdDSA",
            key_use: "sig",
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(self.raw),
        }
    }
}

/// Public keys from PEM text holding one or more `PUBLIC KEY` blocks (SubjectPublicKeyInfo,
/// as `openssl pkey -pubout` writes). A private key here is refused: whoever is handed this text
/// verifies only.
pub fn parse_public_keys(text: &str) -> anyhow::Result<Vec<PublicKey>> {
    let blocks = pem::parse_many(text)?;
    if blocks.is_empty() {
        anyhow::bail!("no PEM block found (expected -----BEGIN PUBLIC KEY-----)");
    }
    blocks
        .iter()
        .map(|block| match block.tag() {
            "PUBLIC KEY" => {
                let der = block.contents();
                let raw = der
                    .strip_prefix(&ED25519_SPKI_PREFIX[..])
                    .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
                    .ok_or_else(|| anyhow::anyhow!("a PUBLIC KEY that is not an Ed25519 key"))?;
                Ok(PublicKey::from_raw(raw))
            }
            tag if tag.contains("PRIVATE KEY") => {
                anyhow::bail!("a private key where only public keys belong: give verifiers the public key only")
            }
            tag => anyhow::bail!("unexpected PEM block {tag:?} (expected PUBLIC KEY)"),
        })
        .collect()
}

/// An Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes).
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicKey,
}

impl SigningKey {
    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let block = pem::parse(text.trim())?;
        if block.tag() != "PRIVATE KEY" {
            anyhow::bail!("expected an Ed25519 PRIVATE KEY (PKCS#8), found {:?}", block.tag());
        }
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents())
            .map_err(|_| anyhow::anyhow!("the PRIVATE KEY is not an Ed25519 key"))?;
        use ring::signature::KeyPair as _;
        let raw = <[u8; 32]>::try_from(pair.public_key().as_ref()).expect("Ed25519 public keys are 32 bytes");
        Ok(Self { encoding: EncodingKey::from_ed_der(block.contents()), public: PublicKey::from_raw(raw) })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// Refuses the example key always, and the development key unless `development`.
fn check_allowed(key: &PublicKey, development: bool) -> anyhow::Result<()> {
    let example = parse_public_keys(EXAMPLE_PUBLIC_KEY).expect("valid example key");
    if example.contains(key) {
        anyhow::bail!(
            "the token key is the example from deploy/k8s/secret.example.yaml, which is public: generate your own \
             (openssl genpkey -algorithm ed25519)"
        );
    }
    let dev = parse_public_keys(DEV_PUBLIC_KEY).expect("valid development key");
    if !development && dev.contains(key) {
        anyhow::bail!("the public development token key is only accepted with CATALOG_ENV=development");
    }
    Ok(())
}

/// The signing key from its PEM text (`TOKEN_SIGNING_KEY` or the file `TOKEN_SIGNING_KEY_FILE`
/// names): required unless `development`, where the public [`DEV_SIGNING_KEY`] stands in.
pub fn resolve_signing_key(pem: Option<&str>, development: bool) -> anyhow::Result<SigningKey> {
    let key = match pem {
        Some(pem) => SigningKey::from_pem(pem)?,
        None if development => {
            tracing::warn!(
                "!!! TOKEN_SIGNING_KEY is not set: signing bearer tokens with the PUBLIC DEVELOPMENT KEY. \
                 Anyone can forge tokens. Only because CATALOG_ENV=development. !!!"
            );
            SigningKey::from_pem(DEV_SIGNING_KEY).expect("valid development key")
        }
        None => anyhow::bail!(
            "TOKEN_SIGNING_KEY or TOKEN_SIGNING_KEY_FILE is required (the public development key is used only \
             with CATALOG_ENV=development)"
        ),
    };
    check_allowed(key.public_key(), development)?;
    Ok(key)
}

/// The keys tokens are verified with: `own` (command-api's signing key) and those in `pem`
/// (`TOKEN_VERIFY_KEYS` or the file `TOKEN_VERIFY_KEYS_FILE`: during a rotation, the other
/// key). With none at all, only `development` falls back to [`DEV_PUBLIC_KEY`].
pub fn resolve_verify_keys(
    pem: Option<&str>,
    own: Option<&PublicKey>,
    development: bool,
) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys: Vec<PublicKey> = own.into_iter().cloned().collect();
    for key in pem.map(parse_public_keys).transpose()?.unwrap_or_default() {
        check_allowed(&key, development)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        if !development {
            anyhow::bail!(
                "TOKEN_VERIFY_KEYS or TOKEN_VERIFY_KEYS_FILE is required: the public key(s) command-api signs with \
                 (the public development key is used only with CATALOG_ENV=development)"
            );
        }
        tracing::warn!("!!! TOKEN_VERIFY_KEYS is not set: accepting tokens signed with the PUBLIC DEVELOPMENT KEY !!!");
        keys = parse_public_keys(DEV_PUBLIC_KEY).expect("valid development key");
    }
    Ok(keys)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The most privileged role the user held when the token was issued.
    pub role: Role,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

/// One public key as a JSON Web Key (RFC 8037: an Ed25519 `OKP` key).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
    "kid": "Qvq7bJ6x2n0eO4s0q6W2pT1cYtZrHcA5mK8dF3uVwXs", "x": "n46g_Oq62-bqGmyl2KqI6_fPaTnlyjcel37JDEgLWOU"}))]
pub struct Jwk {
    #[schema(value_type = String, pattern = "^OKP$")]
    pub kty: &'static str,
    #[schema(value_type = String, pattern = "^Ed25519$")]
    pub crv: &'static str,
    #[schema(value_type = String, pattern = "^EdDSA$")]
    pub alg: &'static str,
    #[serde(rename = "use")]
    #[schema(value_type = String, pattern = "^sig$")]
    pub key_use: &'static str,
    /// The key's id, as tokens name it in their header.
    pub kid: String,
    /// The public key, base64url.
    pub x: String,
}

/// The keys bearer tokens are verified with.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// Tokens whose signature was checked, remembered so that the next request with the same
/// token skips the Ed25519 verification (half the CPU of a small command). Only tokens that
/// verified are kept, each no longer than [`VERIFIED_TTL`] and never past its own `exp`, so
/// an attacker cannot fill it with junk, and the keys cannot change under it (they are fixed
/// for the life of the process).
const VERIFIED_MAX_ENTRIES: u64 = 10_000;
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Seconds of clock skew a token's `exp` is allowed (as the signature check allows).
const LEEWAY_SECONDS: u64 = 5;

/// Verifies bearer tokens with public keys only.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<Vec<(PublicKey, DecodingKey)>>,
    /// Shared: the verifier is cloned with the app state into every request, and a
    /// `Validation` is several hash sets.
    validation: Arc<Validation>,
    verified: moka::sync::Cache<String, Arc<Claims>>,
}

impl TokenVerifier {
    pub fn new(keys: &[PublicKey]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = LEEWAY_SECONDS;
        let keys = keys.iter().map(|key| (key.clone(), DecodingKey::from_ed_der(&key.raw))).collect();
        let verified =
            moka::sync::Cache::builder().max_capacity(VERIFIED_MAX_ENTRIES).time_to_live(VERIFIED_TTL).build();
        Self { keys: Arc::new(keys), validation: Arc::new(validation), verified }
    }

    /// The claims of `token` if a known key signed it with EdDSA and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        if let Some(claims) = self.verified.get(token) {
            if claims.exp + LEEWAY_SECONDS >= jsonwebtoken::get_current_timestamp() {
                return Ok(Claims::clone(&claims));
            }
            self.verified.invalidate(token);
            return Err(ErrorKind::ExpiredSignature.into());
        }
        let claims = self.check_signature(token)?;
        self.verified.insert(token.to_owned(), Arc::new(claims.clone()));
        Ok(claims)
    }

    fn check_signature(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let kid = header.kid.ok_or(ErrorKind::InvalidToken)?;
        let (_, key) = self.keys.iter().find(|(public, _)| public.kid == kid).ok_or(ErrorKind::InvalidSignature)?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map(|data| data.claims)
    }

    /// The accepted keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.keys.iter().map(|(public, _)| public.jwk()).collect() }
    }
}

/// Signs bearer tokens (command-api only) and verifies them with its own and any other
/// accepted public key.
#[derive(Clone)]
pub struct TokenIssuer {
    signing: SigningKey,
    verifier: TokenVerifier,
    ttl: Duration,
}

impl TokenIssuer {
    /// `verify_keys` should include `signing`'s public key (see [`resolve_verify_keys`]).
    pub fn new(signing: SigningKey, verify_keys: &[PublicKey], ttl: Duration) -> Self {
        Self { verifier: TokenVerifier::new(verify_keys), signing, ttl: ttl.min(MAX_TOKEN_TTL) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    pub fn issue(&self, user_id: Uuid, role: Role) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims { sub: user_id, role, iss: ISSUER.into(), iat: now, exp: now + self.ttl.as_secs() };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing.public.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.signing.encoding)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIHX/uAg+AVr4aMaEXr+zjIDYIMLSDT5sxvYAbR0Bw7YY
-----END PRIVATE KEY-----
";
    const KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILypqhe/0OUVLCE669jA5WGtzArfp8gByzHgTQtJE/gJ
-----END PRIVATE KEY-----
";
    const PUBLIC_B: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEASXdETVrH85jb/vrLl/NpnJdbYtQMH9fi2DmSJkGBYOI=
-----END PUBLIC KEY-----
";
    const EXAMPLE_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJuFezDoCa3zjYgBvnMHOobAQpZm72D7HRRYxqyrFJLa
-----END PRIVATE KEY-----
";

    fn issuer(pem: &str) -> TokenIssuer {
        let key = SigningKey::from_pem(pem).unwrap();
        let public = key.public_key().clone();
        TokenIssuer::new(key, &[public], Duration::from_secs(600))
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn the_public_half_of_a_signing_key_is_what_openssl_derives() {
        let key = SigningKey::from_pem(KEY_B).unwrap();
        assert_eq!(parse_public_keys(PUBLIC_B).unwrap(), vec![key.public_key().clone()]);
        assert_eq!(key.public_key().kid().len(), 43, "a base64url SHA-256 thumbprint");
    }

    #[test]
    fn an_issued_token_verifies_and_carries_subject_role_and_kid() {
        let issuer = issuer(KEY_A);
        let id = Uuid::new_v4();
        let token = issuer.issue(id, Role::Admin).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(SigningKey::from_pem(KEY_A).unwrap().public_key().kid()));
        let claims = issuer.verifier().verify(&token).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Admin);
        assert!(claims.exp - claims.iat <= 3600);
    }

    #[test]
    fn a_verifier_holding_public_keys_only_accepts_both_keys_of_a_rotation() {
        let (a, b) = (issuer(KEY_A), issuer(KEY_B));
        let public_a = SigningKey::from_pem(KEY_A).unwrap().public_key().clone();
        let public_b = parse_public_keys(PUBLIC_B).unwrap().remove(0);
        let both = TokenVerifier::new(&[public_a.clone(), public_b]);
        assert!(both.verify(&a.issue(Uuid::new_v4(), Role::Customer).unwrap()).is_ok());
        assert!(both.verify(&b.issue(Uuid::new_v4(), Role::Customer).unwrap()).is_ok());
        // Once the old key is dropped, its tokens stop verifying.
        let only_a = TokenVerifier::new(&[public_a]);
        assert!(only_a.verify(&b.issue(Uuid::new_v4(), Role::Customer).unwrap()).is_err());
        assert_eq!(both.jwks().keys.len(), 2);
    }

    #[test]
    fn a_verified_token_is_remembered_and_a_rejected_one_is_not() {
        let issuer = issuer(KEY_A);
        let verifier = issuer.verifier().clone();
        let token = issuer.issue(Uuid::new_v4(), Role::Customer).unwrap();
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verified.contains_key(&token));
        let mut forged = token.clone();
        forged.pop();
        assert!(verifier.verify(&forged).is_err());
        assert!(!verifier.verified.contains_key(&forged));
        assert!(verifier.verify(&forged).is_err(), "still checked, not remembered");
    }

    #[test]
    fn a_remembered_token_stops_verifying_when_it_expires() {
        let issuer = issuer(KEY_A);
        let verifier = issuer.verifier().clone();
        let token = issuer.issue(Uuid::new_v4(), Role::Admin).unwrap();
        let mut claims = verifier.verify(&token).unwrap();
        // As if the token had been remembered just before its expiry.
        claims.exp = jsonwebtoken::get_current_timestamp() - LEEWAY_SECONDS - 1;
        verifier.verified.insert(token.clone(), Arc::new(claims));
        assert!(verifier.verify(&token).is_err());
        assert!(!verifier.verified.contains_key(&token), "forgotten once expired");
    }

    #[test]
    fn ttl_is_capped_at_one_hour() {
        let key = SigningKey::from_pem(KEY_A).unwrap();
        let public = key.public_key().clone();
        assert_eq!(TokenIssuer::new(key, &[public], Duration::from_secs(86_400)).ttl(), MAX_TOKEN_TTL);
    }

    #[test]
    fn alg_none_and_hs256_are_rejected() {
        let verifier = issuer(KEY_A).verifier().clone();
        let kid = SigningKey::from_pem(KEY_A).unwrap().public_key().kid().to_owned();
        let now = jsonwebtoken::get_current_timestamp();
        let payload =
            format!(r#"{{"sub":"{}","role":"admin","iss":"catalog","iat":{now},"exp":{}}}"#, Uuid::new_v4(), now + 60);
        let none = format!("{}.{}.", b64(&format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#)), b64(&payload));
        assert!(verifier.verify(&none).is_err());
        // HS256 keyed with the public key's bytes: the classic algorithm-confusion forgery.
        let claims = Claims { sub: Uuid::new_v4(), role: Role::Admin, iss: ISSUER.into(), iat: now, exp: now + 60 };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        let raw = SigningKey::from_pem(KEY_A).unwrap().public_key().raw;
        let hs256 = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&raw)).unwrap();
        assert!(verifier.verify(&hs256).is_err());
    }

    #[test]
    fn a_token_of_an_unknown_key_or_without_kid_is_rejected() {
        let verifier = issuer(KEY_A).verifier().clone();
        assert!(verifier.verify(&issuer(KEY_B).issue(Uuid::new_v4(), Role::Admin).unwrap()).is_err());
        // Signed by key B but claiming key A's kid.
        let key_b = SigningKey::from_pem(KEY_B).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims { sub: Uuid::new_v4(), role: Role::Admin, iss: ISSUER.into(), iat: now, exp: now + 60 };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(SigningKey::from_pem(KEY_A).unwrap().public_key().kid().to_owned());
        assert!(verifier.verify(&jsonwebtoken::encode(&header, &claims, &key_b.encoding).unwrap()).is_err());
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key_b.encoding).unwrap();
        assert!(verifier.verify(&no_kid).is_err());
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let key = SigningKey::from_pem(KEY_A).unwrap();
        let claims = Claims { sub: Uuid::new_v4(), role: Role::Admin, iss: ISSUER.into(), iat: 0, exp: 1_000 };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.public_key().kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        assert!(issuer(KEY_A).verifier().verify(&token).is_err());
    }

    #[test]
    fn the_development_key_needs_catalog_env_development_and_the_example_key_is_never_accepted() {
        assert!(resolve_signing_key(None, false).is_err());
        assert!(resolve_signing_key(Some(DEV_SIGNING_KEY), false).is_err());
        let dev = resolve_signing_key(None, true).unwrap();
        assert_eq!(dev.public_key(), &parse_public_keys(DEV_PUBLIC_KEY).unwrap()[0]);
        assert!(resolve_signing_key(Some(EXAMPLE_SIGNING_KEY), true).is_err());
        assert!(resolve_signing_key(Some(EXAMPLE_SIGNING_KEY), false).is_err());
        assert!(resolve_signing_key(Some(KEY_A), false).is_ok());

        assert!(resolve_verify_keys(None, None, false).is_err());
        assert!(resolve_verify_keys(Some(DEV_PUBLIC_KEY), None, false).is_err());
        assert!(resolve_verify_keys(Some(EXAMPLE_PUBLIC_KEY), None, true).is_err());
        assert_eq!(resolve_verify_keys(None, None, true).unwrap(), parse_public_keys(DEV_PUBLIC_KEY).unwrap());
        assert_eq!(resolve_verify_keys(Some(PUBLIC_B), None, false).unwrap().len(), 1);
    }

    #[test]
    fn verifiers_refuse_a_private_key() {
        let error = parse_public_keys(KEY_A).unwrap_err().to_string();
        assert!(error.contains("only public keys"), "{error}");
        assert!(resolve_verify_keys(Some(&format!("{PUBLIC_B}{KEY_A}")), None, false).is_err());
    }
}
