//! Outgoing HTTPS: witnesses and time-stamping authorities. One client, the ring provider,
//! the public web roots plus the peer CA (`tls.peer_ca`).

use std::time::Duration;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS client for witnesses (and time-stamping authorities).
#[derive(Debug, Clone)]
pub struct HttpClient {
    http: reqwest::Client,
}

impl HttpClient {
    /// A client with the given TLS configuration ([`crate::tls::client_config`]).
    pub fn new(tls: rustls::ClientConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http })
    }

    /// POSTs `body` with `content_type` to `url`; the status, content type and body.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String, Vec<u8>), String> {
        let unreachable = |e: reqwest::Error| one_line(&e);
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(unreachable)?;
        Ok((status, kind, bytes.to_vec()))
    }
}

/// An error and its causes on one line (reqwest nests the reason).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
