//! Mail addresses and domain names, parsed once at the edge (pure, no I/O).
//!
//! An [`EmailAddress`] is a dot-atom local part (RFC 5321 §4.1.2) and a domain in its
//! ASCII (A-label, lower-case) form, so that `Bauamt@Lemgo.EXAMPLE` and
//! `bauamt@lemgo.example` compare equal by [`EmailAddress::key`] and IDN domains have one
//! spelling in the database. Quoted local parts and address literals are refused: no
//! De-Mail style gateway needs them and they are a rich source of parser confusion.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// RFC 5321 §4.5.3.1.1: local part at most 64 octets.
const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: domain at most 255 octets; as a DNS name without the root dot 253.
const MAX_DOMAIN: usize = 253;
/// RFC 5321 §4.5.3.1.3 path limit of 256 octets, minus the angle brackets.
const MAX_ADDRESS: usize = 254;
/// RFC 1035: a label is at most 63 octets.
const MAX_LABEL: usize = 63;

/// Why a string is not an acceptable address or domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing given.
    #[error("address is empty")]
    Empty,
    /// No `@`, or more than one.
    #[error("`{0}` is not of the form local-part@domain")]
    Shape(String),
    /// Local part breaks RFC 5321 dot-atom rules.
    #[error("local part of `{0}` is invalid: {1}")]
    LocalPart(String, &'static str),
    /// Domain is not a valid (internationalised) host name.
    #[error("domain `{0}` is invalid: {1}")]
    Domain(String, &'static str),
    /// Longer than RFC 5321 allows.
    #[error("`{0}` is too long: {1}")]
    TooLong(String, &'static str),
}

/// A validated DNS domain in lower-case ASCII (IDNs in their A-label form).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Parses a domain, converting an IDN to its A-label form and lower-casing it.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(AddressError::Domain(input.to_owned(), "it is empty"));
        }
        if trimmed.starts_with('[') {
            return Err(AddressError::Domain(
                input.to_owned(),
                "address literals are not accepted, use a domain name",
            ));
        }
        // Length first: the IDNA library refuses over-long names with a vaguer error.
        if trimmed.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong(
                input.to_owned(),
                "a domain has at most 253 octets",
            ));
        }
        if trimmed.split('.').any(|l| l.len() > MAX_LABEL) {
            return Err(AddressError::TooLong(
                input.to_owned(),
                "a domain label has at most 63 octets",
            ));
        }
        let ascii = idna::domain_to_ascii_strict(trimmed).map_err(|_| {
            AddressError::Domain(
                input.to_owned(),
                "not a valid (internationalised) domain name",
            )
        })?;
        if ascii.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong(
                input.to_owned(),
                "a domain has at most 253 octets",
            ));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(AddressError::Domain(
                input.to_owned(),
                "a mail domain needs at least two labels (e.g. example.org)",
            ));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(AddressError::Domain(
                    input.to_owned(),
                    "it has an empty label",
                ));
            }
            if label.len() > MAX_LABEL {
                return Err(AddressError::TooLong(
                    input.to_owned(),
                    "a domain label has at most 63 octets",
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(AddressError::Domain(
                    input.to_owned(),
                    "labels are letters, digits and inner hyphens",
                ));
            }
        }
        Ok(Self(ascii))
    }

    /// The domain in lower-case ASCII.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated mail address: dot-atom local part, canonical domain.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    local: String,
    domain: DomainName,
}

impl EmailAddress {
    /// Parses `local@domain`; surrounding white space is ignored.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        let (local, domain) = match input.split_once('@') {
            Some((l, d)) if !d.contains('@') => (l, d),
            _ => return Err(AddressError::Shape(input.to_owned())),
        };
        check_local_part(input, local)?;
        let domain = DomainName::parse(domain)?;
        let address = Self {
            local: local.to_owned(),
            domain,
        };
        if address.to_string().len() > MAX_ADDRESS {
            return Err(AddressError::TooLong(
                input.to_owned(),
                "an address has at most 254 octets",
            ));
        }
        Ok(address)
    }

    /// The local part as given (RFC 5321 leaves its case to the receiving domain).
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The canonical domain.
    pub fn domain(&self) -> &DomainName {
        &self.domain
    }

    /// The Web Key Directory hash of the local part: z-base-32 of the SHA-1 of its
    /// lower-case form (draft-koch-openpgp-webkey-service §3.1).
    pub fn wkd_hash(&self) -> String {
        let digest = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            self.local.to_ascii_lowercase().as_bytes(),
        );
        zbase32(digest.as_ref())
    }

    /// Case-insensitive identity used for uniqueness: two addresses that differ only in
    /// case would confuse every human reader, so bote treats them as the same mailbox.
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

fn check_local_part(input: &str, local: &str) -> Result<(), AddressError> {
    let err = |why| Err(AddressError::LocalPart(input.to_owned(), why));
    if local.is_empty() {
        return err("it is empty");
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::TooLong(
            input.to_owned(),
            "a local part has at most 64 octets",
        ));
    }
    if local.starts_with('"') {
        return err("quoted local parts are not accepted");
    }
    if !local.is_ascii() {
        return err("only ASCII local parts are accepted (no SMTPUTF8)");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return err("dots may not lead, trail or repeat");
    }
    if !local.bytes().all(|b| b == b'.' || is_atext(b)) {
        return err("it contains a character not allowed in a dot-atom");
    }
    Ok(())
}

/// z-base-32 (the WKD alphabet), most significant bits first, no padding.
fn zbase32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in data {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// RFC 5322 §3.2.3 `atext`.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainName({})", self.0)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({self})")
    }
}

impl FromStr for EmailAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl FromStr for DomainName {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for DomainName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_domain_and_keeps_local_part() {
        let a = EmailAddress::parse(" Anna.Muster@Lemgo.EXAMPLE ").unwrap();
        assert_eq!(a.to_string(), "Anna.Muster@lemgo.example");
        assert_eq!(a.key(), "anna.muster@lemgo.example");
    }

    #[test]
    fn wkd_hash_matches_the_draft_example() {
        // draft-koch-openpgp-webkey-service §3.1: "Joe.Doe" hashes to this.
        let a = EmailAddress::parse("Joe.Doe@Example.ORG").unwrap();
        assert_eq!(a.wkd_hash(), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
    }

    #[test]
    fn converts_idn_to_a_labels() {
        let a = EmailAddress::parse("amt@Bürgerbüro.example").unwrap();
        assert_eq!(a.domain().as_str(), "xn--brgerbro-65af.example");
    }

    #[test]
    fn enforces_rfc5321_sizes() {
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert!(matches!(
            EmailAddress::parse(&long_local),
            Err(AddressError::TooLong(..))
        ));
        let ok_local = format!("{}@example.org", "a".repeat(64));
        assert!(EmailAddress::parse(&ok_local).is_ok());
        let long_label = format!("a@{}.org", "b".repeat(64));
        assert!(matches!(
            EmailAddress::parse(&long_label),
            Err(AddressError::TooLong(..))
        ));
        let labels = vec!["c".repeat(60); 4].join(".");
        let long_total = format!("{}@{labels}.org", "a".repeat(10));
        assert!(EmailAddress::parse(&long_total).is_err());
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "no-at-sign",
            "two@@example.org",
            "a@b@example.org",
            ".lead@example.org",
            "trail.@example.org",
            "dou..ble@example.org",
            "\"quoted\"@example.org",
            "sp ace@example.org",
            "ümlaut@example.org",
            "user@localhost",
            "user@[127.0.0.1]",
            "user@-bad.example",
            "user@exa_mple.org",
            "user@example..org",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
