//! Who is calling: a keyed hash of the client's own provider key (passthrough), or the
//! tenant and attributes a tollgate key maps to (managed). A client's key is never kept,
//! logged or counted in a metric; in managed mode it never reaches the upstream either.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{GatewayConfig, KeyMode};

/// The built-in secret of the keyed hash, used when the configuration names none.
const BUILT_IN_SECRET: &[u8] = b"tollgate-gateway/passthrough-key/v1";

/// The caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The tenant: the key's hash (passthrough) or the managed key's tenant.
    pub tenant: String,
    /// The managed key's name (`passthrough` otherwise), for logs.
    pub name: String,
    /// The tier, if the managed key has one.
    pub tier: Option<String>,
    /// The managed key's other attributes.
    pub attributes: Vec<(String, String)>,
    /// How long the call may wait for capacity.
    pub max_wait: Duration,
    /// Index of the managed key, if any.
    pub managed: Option<usize>,
}

/// Why a caller is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No key in the request.
    Missing,
    /// A key no managed client has.
    Unknown,
}

/// Identifies callers.
#[derive(Clone)]
pub struct Keys {
    mode: KeyMode,
    mac: Hmac<Sha256>,
    /// The managed keys' bytes, with their index.
    managed: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("mode", &self.mode)
            .field("managed", &self.managed.len())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The identification `config` asks for.
    pub fn new(config: &GatewayConfig) -> Self {
        let secret = config
            .key_hash_secret
            .as_ref()
            .map_or(BUILT_IN_SECRET, |s| s.0.as_bytes());
        #[allow(clippy::expect_used)]
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        Keys {
            mode: config.key_mode,
            mac,
            managed: config
                .clients
                .iter()
                .map(|c| c.key.0.as_bytes().to_vec())
                .collect(),
        }
    }

    /// The keyed hash that names a passthrough caller: `k_` and 24 hex digits (96 bits).
    pub fn hash(&self, key: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        let out = mac.finalize().into_bytes();
        format!("k_{}", hex::encode(&out[..12]))
    }

    /// The caller presenting `key` (as the provider's auth header carried it).
    ///
    /// # Errors
    /// No key, or (managed) a key that no client has.
    pub fn identify(&self, config: &GatewayConfig, key: Option<&str>) -> Result<Caller, KeyError> {
        let key = key.ok_or(KeyError::Missing)?;
        match self.mode {
            KeyMode::Passthrough => Ok(Caller {
                tenant: self.hash(key),
                name: "passthrough".to_owned(),
                tier: None,
                attributes: Vec::new(),
                max_wait: config.max_wait,
                managed: None,
            }),
            KeyMode::Managed => {
                // Compare with every key in constant time per key, so that timing tells
                // nothing about which key nearly matched.
                let mut found = None;
                for (i, k) in self.managed.iter().enumerate() {
                    if ct_eq(k, key.as_bytes()) && found.is_none() {
                        found = Some(i);
                    }
                }
                let i = found.ok_or(KeyError::Unknown)?;
                let c = &config.clients[i];
                Ok(Caller {
                    tenant: c.tenant.clone(),
                    name: c.name.clone(),
                    tier: c.tier.clone(),
                    attributes: c
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    max_wait: c.max_wait.unwrap_or(config.max_wait),
                    managed: Some(i),
                })
            }
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ManagedKey, Secret};

    #[test]
    fn passthrough_hash_hides_the_key() {
        let c = GatewayConfig::default();
        let k = Keys::new(&c);
        let who = k.identify(&c, Some("sk-secret-123")).unwrap();
        assert!(who.tenant.starts_with("k_") && who.tenant.len() == 26);
        assert!(!who.tenant.contains("secret"));
        assert_eq!(who.tenant, k.hash("sk-secret-123"));
        assert_ne!(who.tenant, k.hash("sk-secret-124"));
        let other = GatewayConfig {
            key_hash_secret: Some(Secret("another-secret-of-16".into())),
            ..GatewayConfig::default()
        };
        assert_ne!(Keys::new(&other).hash("sk-secret-123"), who.tenant);
        assert_eq!(k.identify(&c, None), Err(KeyError::Missing));
    }

    #[test]
    fn managed_keys_map_to_tenants() {
        let c = GatewayConfig {
            key_mode: KeyMode::Managed,
            clients: vec![ManagedKey {
                name: "acme".into(),
                key: Secret("tg-acme-0123456789".into()),
                tenant: "acme".into(),
                tier: Some("pro".into()),
                attributes: [("team".to_owned(), "search".to_owned())]
                    .into_iter()
                    .collect(),
                max_wait: Some(Duration::from_secs(3)),
            }],
            ..GatewayConfig::default()
        };
        let k = Keys::new(&c);
        let who = k.identify(&c, Some("tg-acme-0123456789")).unwrap();
        assert_eq!(
            (who.tenant.as_str(), who.tier.as_deref()),
            ("acme", Some("pro"))
        );
        assert_eq!(who.max_wait, Duration::from_secs(3));
        assert_eq!(
            k.identify(&c, Some("tg-acme-0123456780")),
            Err(KeyError::Unknown)
        );
    }
}
