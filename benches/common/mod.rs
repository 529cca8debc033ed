//! Set-up shared by the benchmarks: a throwaway gateway directory with keys and a store.

// Each benchmark binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::sync::Arc;

use bote::config::Config;
use bote::keys::{self, KeyRing, Passphrase};
use bote::log::Log;
use bote::store::{OpenMode, Store};

/// A gateway's parts in a temporary directory.
pub struct Parts {
    /// Keeps the directory alive.
    pub _dir: tempfile::TempDir,
    /// Effective configuration.
    pub config: Config,
    /// Unlocked keys.
    pub keys: KeyRing,
    /// The store (SQLite in the directory, or `url`).
    pub store: Store,
    /// The log.
    pub log: Arc<Log>,
}

/// A fresh database on the PostgreSQL server of `url`, so that runs do not meet each
/// other's rows; returns its URL.
async fn fresh_postgres(url: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!("bote_bench_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    with_database(url, &name)
}

/// `url` with its database name replaced by `name` (a query string, such as the socket
/// directory of a Unix-socket URL, is kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (path, query) = url
        .split_once('?')
        .map_or((url, None), |(p, q)| (p, Some(q)));
    let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Keys, store and log for domain `bench.example`, on SQLite or a fresh database on the
/// PostgreSQL server of `url`.
pub async fn parts(url: Option<&str>) -> Parts {
    parts_via(url, true).await
}

/// As [`parts`]; `relay_tcp` false opens PostgreSQL over TCP without bote's relay.
pub async fn parts_via(url: Option<&str>, relay_tcp: bool) -> Parts {
    let fresh = match url {
        Some(u) => Some(fresh_postgres(u).await),
        None => None,
    };
    let url = fresh.as_deref();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passphrase"), "bench passphrase").unwrap();
    let text = format!(
        "[gateway]\ndomains = [\"bench.example\"]\ndata_dir = \"data\"\n\
         [database]\nurl = \"{}\"\nmax_connections = 20\n\
         [http]\nlisten = \"\"\nmetrics_listen = \"\"\n\
         [smtp]\nmx_listen = \"\"\nsubmission_listen = \"\"\nsubmissions_listen = \"\"\n\
         [tls]\ncert = \"\"\nkey = \"\"\nca_cert = \"\"\n\
         [keys]\ndir = \"keys\"\npassphrase_file = \"passphrase\"\n\
         [limits]\nmessage_size_submission = 52428800\n",
        url.unwrap_or("")
    );
    let config =
        Config::from_toml(&text, &dir.path().join("bote.toml"), std::iter::empty()).unwrap();
    keys::generate(&config, &Passphrase::load(&config).unwrap()).unwrap();
    let keys = KeyRing::load(&config).unwrap();
    let store = Store::open_url_via(
        &config.database_url(),
        OpenMode::CreateAndMigrate,
        config.database.max_connections,
        std::time::Duration::from_secs(config.database.connect_timeout_secs),
        relay_tcp,
    )
    .await
    .unwrap();
    let log = Arc::new(Log::new(
        keys.log.clone(),
        keys.origin.clone(),
        &config.gateway.data_dir,
    ));
    Parts {
        _dir: dir,
        config,
        keys,
        store,
        log,
    }
}
