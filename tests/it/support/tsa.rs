//! A local RFC 3161 time-stamping authority (tests/tools/tsa.py: OpenSSL `ts -reply` over
//! HTTP), killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running TSA.
pub struct Tsa {
    child: Child,
    /// Its URL.
    pub url: String,
    /// Its certificate (PEM).
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
}

/// How the TSA's certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsaKey {
    /// EC P-256, critical time-stamping EKU.
    Ec,
    /// RSA 2048, critical time-stamping EKU.
    Rsa,
}

impl Tsa {
    /// Starts one; panics if it does not come up within 20 s.
    pub fn start(key: TsaKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/tsa.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir.path().join("tsa")).arg(&port_file);
        match key {
            TsaKey::Ec => {}
            TsaKey::Rsa => {
                cmd.arg("--rsa");
            }
        }
        let child = cmd.spawn().expect("python3 runs tests/tools/tsa.py");
        let started = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the test TSA did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            cert: dir.path().join("tsa/tsa.crt"),
            _dir: dir,
        }
    }

    /// SHA-256 of the certificate's DER, lower-case hex (what trust files pin).
    pub fn cert_sha256(&self) -> String {
        use sha2::Digest;
        let pem = std::fs::read_to_string(&self.cert).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
        hex::encode(sha2::Sha256::digest(der))
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
