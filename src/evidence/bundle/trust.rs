//! Trust files: what a municipal association (or a court) publishes so that verifiers
//! anchor bundles without asking each operator: the gateways' evidence keys, the witnesses
//! whose cosignatures count (and how many must cosign), the time-stamping authorities. Format in docs/proof-bundle.md
//! ("Trust files").

/// One gateway a trust file recognises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedGateway {
    /// Its domain: bundles it issues name it as `issuer`.
    pub domain: String,
    /// Its evidence key's fingerprint (upper-case hex, 40 digits).
    pub fingerprint: String,
    /// Its log verifier key, if the file pins it.
    pub log_key: Option<String>,
}

/// A parsed trust file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustFile {
    /// The gateways.
    pub gateways: Vec<TrustedGateway>,
    /// Witnesses' cosignature verifier keys.
    pub witnesses: Vec<String>,
    /// How many of them must cosign.
    pub quorum: Option<usize>,
    /// SHA-256 (lower-case hex) of the trusted TSA certificates.
    pub tsa: Vec<String>,
}

/// Why a trust file was refused: the line and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {problem}")]
pub struct TrustFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl TrustFile {
    /// Parses a trust file; every line is a directive, blank, or a `#` comment.
    pub fn parse(text: &str) -> Result<Self, TrustFileError> {
        let mut file = Self::default();
        let mut gateways = std::collections::HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let fail = |problem: String| TrustFileError {
                line: i + 1,
                problem,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["gateway", domain, fingerprint, rest @ ..] if rest.len() <= 1 => {
                    let fingerprint = fingerprint.to_ascii_uppercase();
                    if fingerprint.len() != 40
                        || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(fail(format!(
                            "`{fingerprint}` is not a 40-digit OpenPGP v4 fingerprint"
                        )));
                    }
                    if let Some(vkey) = rest.first()
                        && !vkey.starts_with(&format!("{domain}/log+"))
                    {
                        return Err(fail(format!(
                            "the log key `{vkey}` is not named {domain}/log"
                        )));
                    }
                    let domain = domain.to_ascii_lowercase();
                    // A verifier takes the first entry for a (domain, key): a second one
                    // would be ignored, with the log key it may pin, so the file is refused
                    // as ambiguous.
                    if !gateways.insert((domain.clone(), fingerprint.clone())) {
                        return Err(fail(format!(
                            "a second `gateway` line for {domain} with key {fingerprint}"
                        )));
                    }
                    file.gateways.push(TrustedGateway {
                        domain,
                        fingerprint,
                        log_key: rest.first().map(|k| (*k).to_owned()),
                    });
                }
                ["gateway", ..] => {
                    return Err(fail(
                        "expected `gateway DOMAIN FINGERPRINT [LOG-VERIFIER-KEY]`".into(),
                    ));
                }
                ["witness", vkey] => {
                    crate::witness::WitnessKey::parse(vkey).map_err(|e| fail(e.to_string()))?;
                    file.witnesses.push((*vkey).to_owned());
                }
                ["quorum", _] if file.quorum.is_some() => {
                    return Err(fail("a second `quorum` line".into()));
                }
                ["quorum", n] => {
                    let n = n
                        .parse()
                        .map_err(|_| fail(format!("`{n}` is not a number of witnesses")))?;
                    file.quorum = Some(n);
                }
                ["tsa", sha256, ..] => {
                    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(fail(
                            "expected `tsa SHA256-OF-CERTIFICATE [name]` (64 hex digits)".into(),
                        ));
                    }
                    file.tsa.push(sha256.to_ascii_lowercase());
                }
                ["witness" | "quorum", ..] => {
                    return Err(fail("expected `witness VKEY` or `quorum N`".into()));
                }
                [other, ..] => return Err(fail(format!("unknown directive `{other}`"))),
                [] => {}
            }
        }
        if file.gateways.is_empty() {
            return Err(TrustFileError {
                line: 0,
                problem: "the file names no gateway".into(),
            });
        }
        if file.quorum.is_some_and(|q| q > file.witnesses.len()) {
            return Err(TrustFileError {
                line: 0,
                problem: format!(
                    "quorum {} exceeds the {} witnesses listed",
                    file.quorum.unwrap_or_default(),
                    file.witnesses.len()
                ),
            });
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPR: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn parses_gateways_and_names_the_bad_line() {
        let text = format!(
            "# Kreis Lippe\n\ngateway lemgo.example {FPR}\ngateway detmold.example {FPR} \
             detmold.example/log+01020304+AQID\n"
        );
        let file = TrustFile::parse(&text).unwrap();
        assert_eq!(file.gateways.len(), 2);
        assert_eq!(file.gateways[0].fingerprint, FPR.to_ascii_uppercase());
        assert_eq!(
            file.gateways[1].log_key.as_deref(),
            Some("detmold.example/log+01020304+AQID")
        );
        let bad = TrustFile::parse(&format!("gateway lemgo.example {FPR}\ngatway x y\n"));
        assert_eq!(bad.unwrap_err().line, 2);
        assert_eq!(
            TrustFile::parse("gateway lemgo.example 1234\n")
                .unwrap_err()
                .line,
            1
        );
        let foreign_log = format!("gateway lemgo.example {FPR} other.example/log+01+AQ\n");
        assert!(TrustFile::parse(&foreign_log).is_err());
        assert!(TrustFile::parse("# nothing\n").is_err());
    }

    #[test]
    fn a_second_gateway_line_for_the_same_key_and_domain_is_refused() {
        let pinned = format!("gateway lemgo.example {FPR} lemgo.example/log+01020304+AQID\n");
        // The same (domain, fingerprint), however spelt: the file is ambiguous about the
        // log key, so it is refused rather than read with one line silently winning.
        for second in [
            format!("gateway lemgo.example {FPR}\n"),
            format!("gateway LEMGO.example {}\n", FPR.to_ascii_uppercase()),
            format!("gateway lemgo.example {FPR} lemgo.example/log+05060708+BAUG\n"),
            pinned.clone(),
        ] {
            let e = TrustFile::parse(&format!("{pinned}# again\n{second}")).unwrap_err();
            assert_eq!(e.line, 3, "{second}");
            assert!(e.problem.contains("second `gateway` line"), "{e}");
        }
        // One key for two gateways, or two keys for one gateway (a rotation): both fine.
        let other = "fedcba9876543210fedcba9876543210fedcba98";
        let file = TrustFile::parse(&format!(
            "{pinned}gateway detmold.example {FPR}\ngateway lemgo.example {other}\n"
        ))
        .unwrap();
        assert_eq!(file.gateways.len(), 3);
    }
}
