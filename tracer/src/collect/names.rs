//! Names connections: from the first bytes the process wrote on them (TLS SNI, HTTP Host),
//! and, as a fallback, from the addresses the provider catalogue's hostnames resolve to.
//! Only names leave this module; the captured bytes are dropped as soon as they are parsed.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use crate::{
    model::{ConnName, NameSource},
    naming::{catalogue::Catalogue, name_from_first_bytes, resolver::AddressBook, Named},
};

/// Connections whose first bytes are still being gathered (a ClientHello cut in two writes).
/// Bounded: a burst of connects cannot make this grow without limit.
const MAX_PENDING: usize = 4096;

/// Hostnames whose provider is remembered. A relay talks to a handful of hosts, so the
/// catalogue's patterns run once per host rather than once per connection (they were a
/// tenth of the collector's CPU with a new connection per request); emptied when full.
const MAX_PROVIDERS_KEPT: usize = 1024;

pub struct Namer {
    catalogue: Arc<Catalogue>,
    pending: HashMap<u64, Vec<u8>>,
    /// Hostname -> its provider in the catalogue (`MAX_PROVIDERS_KEPT`).
    providers: HashMap<String, Option<String>>,
    addresses: Option<AddressBook>,
    last_address_names: Vec<(IpAddr, ConnName)>,
}

impl Namer {
    pub fn new(catalogue: Arc<Catalogue>, addresses: Option<AddressBook>) -> Self {
        Self {
            catalogue,
            pending: HashMap::new(),
            providers: HashMap::new(),
            addresses,
            last_address_names: Vec::new(),
        }
    }

    fn name(&mut self, host: String, source: NameSource) -> ConnName {
        let provider = match self.providers.get(&host) {
            Some(provider) => provider.clone(),
            None => {
                let provider = self.catalogue.provider_of(&host).map(str::to_owned);
                if self.providers.len() >= MAX_PROVIDERS_KEPT {
                    self.providers.clear();
                }
                self.providers.insert(host.clone(), provider.clone());
                provider
            }
        };
        ConnName {
            host,
            provider,
            source,
        }
    }

    /// Takes the next captured write of socket `sk`; returns its name once known.
    pub fn first_bytes(&mut self, sk: u64, bytes: &[u8]) -> Option<ConnName> {
        let named = match self.pending.get_mut(&sk) {
            Some(earlier) => {
                earlier.extend_from_slice(bytes);
                name_from_first_bytes(earlier)
            }
            None => name_from_first_bytes(bytes),
        };
        let found = match named {
            Named::Sni(host) => Some(self.name(host, NameSource::Sni)),
            Named::HttpHost(host) => Some(self.name(host, NameSource::HttpHost)),
            Named::NeedMore => {
                if !self.pending.contains_key(&sk) {
                    if self.pending.len() >= MAX_PENDING {
                        self.pending.clear();
                    }
                    self.pending.insert(sk, bytes.to_vec());
                }
                return None;
            }
            Named::NotRecognized => None,
        };
        self.pending.remove(&sk);
        found
    }

    /// The socket closed: whatever was gathered for it goes.
    pub fn forget(&mut self, sk: u64) {
        self.pending.remove(&sk);
    }

    /// Fallback names for `addresses`, when they changed since the last call.
    pub fn address_names(
        &mut self,
        addresses: &HashSet<IpAddr>,
    ) -> Option<Vec<(IpAddr, ConnName)>> {
        let book = self.addresses.as_ref()?;
        let hosts: Vec<(IpAddr, String)> = addresses
            .iter()
            .filter_map(|ip| book.lookup(*ip).map(|host| (*ip, host)))
            .collect();
        let mut names: Vec<(IpAddr, ConnName)> = hosts
            .into_iter()
            .map(|(ip, host)| (ip, self.name(host, NameSource::Dns)))
            .collect();
        names.sort_by_key(|(ip, _)| *ip);
        if names == self.last_address_names {
            return None;
        }
        self.last_address_names = names.clone();
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer() -> Namer {
        Namer::new(Arc::new(Catalogue::builtin()), None)
    }

    #[test]
    fn an_http_request_head_names_its_connection_and_provider() {
        let mut n = namer();
        let name = n
            .first_bytes(1, b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nAuthorization: Bearer sk-x\r\n\r\n")
            .expect("named");
        assert_eq!(name.host, "api.anthropic.com");
        assert_eq!(name.provider.as_deref(), Some("anthropic"));
        assert_eq!(name.source, NameSource::HttpHost);
        assert!(n.pending.is_empty(), "nothing of the request is kept");
    }

    #[test]
    fn a_request_head_split_over_two_writes_is_joined_then_dropped() {
        let mut n = namer();
        assert_eq!(
            n.first_bytes(7, b"GET /v1/models HTTP/1.1\r\nUser-Agent: x\r\n"),
            None
        );
        assert_eq!(n.pending.len(), 1);
        let name = n
            .first_bytes(7, b"Host: api.openai.com:443\r\n\r\n")
            .expect("named");
        assert_eq!(
            (name.host.as_str(), name.provider.as_deref()),
            ("api.openai.com", Some("openai"))
        );
        assert!(n.pending.is_empty());
    }

    #[test]
    fn unrecognised_bytes_name_nothing_and_leave_nothing() {
        let mut n = namer();
        assert_eq!(n.first_bytes(3, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
        assert_eq!(n.first_bytes(4, b"\x00\x01garbage"), None);
        assert!(n.pending.is_empty());
        assert_eq!(n.first_bytes(5, b"GET / HTTP/1.1\r\n"), None);
        n.forget(5);
        assert!(n.pending.is_empty());
    }

    #[test]
    fn a_host_seen_again_keeps_its_provider_from_the_cache() {
        let mut n = namer();
        for sk in 1..=3 {
            let name = n
                .first_bytes(sk, b"GET / HTTP/1.1\r\nHost: API.OpenAI.com\r\n\r\n")
                .expect("named");
            assert_eq!(name.provider.as_deref(), Some("openai"));
        }
        let name = n
            .first_bytes(4, b"GET / HTTP/1.1\r\nHost: internal.example\r\n\r\n")
            .expect("named");
        assert_eq!(name.provider, None);
        assert_eq!(n.providers.len(), 2, "one catalogue lookup per host");
    }

    #[test]
    fn an_unknown_host_is_named_without_a_provider() {
        let mut n = namer();
        let name = n
            .first_bytes(9, b"GET / HTTP/1.1\r\nHost: internal.example\r\n\r\n")
            .expect("named");
        assert_eq!(
            (name.host.as_str(), name.provider),
            ("internal.example", None)
        );
    }
}
