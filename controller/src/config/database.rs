//! `DATABASE_URL`: which store holds the controller's state. Unset, SQLite in `STATE_DIR`
//! (nothing to install); `postgres://…` (or `postgresql://…`), a PostgreSQL server the
//! operator runs, which several controller replicas can share.
//!
//! Parsed here, as a pure function of the string, so a bad URL is a configuration error that
//! names the variable at start (and in `check-config`), not a failure at the first webhook.
//! The URL carries a password: [`DatabaseUrl`]'s `Debug` and [`DatabaseUrl::redacted`] never
//! show it.
//!
//! TLS follows libpq's parameters in the URL's query, read here and not passed to the driver:
//! - `sslmode=require`, `verify-ca` or `verify-full`: TLS (rustls), and the server's certificate
//!   is always verified, chain **and** host name, against `sslrootcert=PATH` (a PEM bundle) or,
//!   without it (or with `sslrootcert=system`), the system's CA certificates. Stricter than
//!   libpq, whose `require` accepts any certificate: a certificate that is not checked does not
//!   keep the database's password from a man in the middle.
//! - `sslmode=disable`, `allow` or `prefer` (the default): no TLS, as before (libpq's `prefer`
//!   would try an unverified TLS first, which protects nothing).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Whether and how the connection to PostgreSQL is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTls {
    /// Plain TCP or a unix socket (`sslmode` disable, allow or prefer).
    Off,
    /// TLS with the server's certificate verified (chain and host name).
    Verified {
        /// `sslrootcert`: the CA bundle; `None`, the system's CA certificates.
        root_cert: Option<PathBuf>,
    },
}

/// A validated PostgreSQL connection URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// As given: shown (redacted) and logged.
    given: String,
    /// What the driver parses: the URL without the TLS parameters read here.
    driver: String,
    tls: DatabaseTls,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl DatabaseUrl {
    /// Checks `DATABASE_URL`'s value; the error says what is wrong with it (without the
    /// password), to be shown after the variable's name.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let Some((scheme, _)) = value.split_once("://") else {
            return Err("is not a URL: it must start with postgres:// (for example \
                 postgres://gha:PASSWORD@db.internal:5432/gha_scaler); unset it to keep the \
                 state in SQLite under STATE_DIR"
                .into());
        };
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(format!(
                "has the scheme {scheme:?}; only postgres:// (PostgreSQL) is supported; unset \
                 it to keep the state in SQLite under STATE_DIR"
            ));
        }
        let (driver, tls) = split_tls(value)?;
        let config = tokio_postgres::Config::from_str(&driver).map_err(|e| {
            // The parser's message names the bad part, never the password.
            format!("is not a valid PostgreSQL URL: {e}")
        })?;
        if config.get_hosts().is_empty() {
            return Err(
                "names no host (postgres://USER:PASSWORD@HOST:PORT/DATABASE, or \
                 ?host=/run/postgresql for a unix socket)"
                    .into(),
            );
        }
        if tls != DatabaseTls::Off
            && config
                .get_hosts()
                .iter()
                .any(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)))
        {
            return Err(
                "asks for TLS (sslmode=require, verify-ca or verify-full) on a unix \
                 socket, where PostgreSQL has none: name a TCP host, or use sslmode=disable \
                 for the socket"
                    .into(),
            );
        }
        Ok(Self {
            given: value.to_owned(),
            driver,
            tls,
        })
    }

    /// How the connection is encrypted.
    pub fn tls(&self) -> &DatabaseTls {
        &self.tls
    }

    /// The driver's connection settings (`sslmode` as [`DatabaseUrl::tls`] says).
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, DatabaseTlsError> {
        let mut config = tokio_postgres::Config::from_str(&self.driver)
            .map_err(|e| DatabaseTlsError(format!("DATABASE_URL: {e}")))?;
        config.ssl_mode(match self.tls {
            DatabaseTls::Off => tokio_postgres::config::SslMode::Disable,
            DatabaseTls::Verified { .. } => tokio_postgres::config::SslMode::Require,
        });
        Ok(config)
    }

    /// The TLS connector for the driver: reads `sslrootcert` (or the system's CA certificates)
    /// now. With TLS off it is never used (`sslmode=disable` is given to the driver).
    pub(crate) fn connector(
        &self,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DatabaseTlsError> {
        let roots = match &self.tls {
            DatabaseTls::Off => rustls::RootCertStore::empty(),
            DatabaseTls::Verified {
                root_cert: Some(path),
            } => {
                let certs = shared::tls::read_certs(path).map_err(|e| {
                    DatabaseTlsError(format!(
                        "DATABASE_URL's sslrootcert: {}",
                        shared::error::chain(&e)
                    ))
                })?;
                let mut roots = rustls::RootCertStore::empty();
                let (_, ignored) = roots.add_parsable_certificates(certs);
                if roots.is_empty() {
                    return Err(DatabaseTlsError(format!(
                        "DATABASE_URL's sslrootcert {} holds no usable CA certificate \
                         ({ignored} could not be parsed)",
                        path.display()
                    )));
                }
                roots
            }
            DatabaseTls::Verified { root_cert: None } => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(DatabaseTlsError(
                        "DATABASE_URL asks for TLS but names no sslrootcert, and this system \
                         has no CA certificates (an image FROM scratch has none): add \
                         sslrootcert=/path/to/ca.pem (the CA of the server's certificate)"
                            .into(),
                    ));
                }
                roots
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| DatabaseTlsError(format!("TLS to PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// The URL with any password (in the user part or a `password=` parameter) replaced by
    /// `****`, to show and log.
    pub fn redacted(&self) -> String {
        let given = &self.given;
        let (scheme, rest) = given.split_once("://").unwrap_or(("postgres", given));
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((user_info, host)) => match user_info.split_once(':') {
                Some((user, _password)) => format!("{user}:****@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some(("password", _)) => "password=****".to_owned(),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        format!("{scheme}://{authority}{tail}")
    }
}

/// TLS to PostgreSQL could not be set up (the CA file, the system's certificates).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DatabaseTlsError(String);

/// Takes libpq's `sslmode` and `sslrootcert` out of the URL's query (the driver knows neither
/// `verify-ca`, `verify-full` nor `sslrootcert`) and says what TLS they ask for.
fn split_tls(url: &str) -> Result<(String, DatabaseTls), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), DatabaseTls::Off));
    };
    let (mut mode, mut root) = (None, None);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(percent_decode(v)?),
            _ => rest.push(pair),
        }
    }
    let driver = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let tls = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => {
            if root.is_some() {
                return Err(
                    "names sslrootcert, but its sslmode does not ask for TLS, so the \
                     certificate would never be checked: add sslmode=verify-full"
                        .into(),
                );
            }
            DatabaseTls::Off
        }
        Some("require" | "verify-ca" | "verify-full") => DatabaseTls::Verified {
            root_cert: root.filter(|r| r != "system").map(PathBuf::from),
        },
        Some(other) => {
            return Err(format!(
                "has sslmode={other:?}; use disable, prefer, require, verify-ca or verify-full"
            ));
        }
    };
    Ok((driver, tls))
}

/// `%XX` escapes of a query value (a path may hold spaces or `&`).
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("has a bad %-escape in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("has a %-escape that is not UTF-8 in {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_accepted_and_shown_without_their_password() {
        let url = DatabaseUrl::parse("postgres://gha:s3cr3t@db.internal:5432/gha_scaler").unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://gha:****@db.internal:5432/gha_scaler"
        );
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let socket = DatabaseUrl::parse("postgresql://gha@/gha?host=/run/postgresql").unwrap();
        assert_eq!(
            socket.redacted(),
            "postgresql://gha@/gha?host=/run/postgresql"
        );
        let in_query = DatabaseUrl::parse("postgres://db/x?user=gha&password=hunter2").unwrap();
        assert_eq!(
            in_query.redacted(),
            "postgres://db/x?user=gha&password=****"
        );
    }

    #[test]
    fn tls_follows_libpq_parameters_and_always_verifies() {
        for (query, tls) in [
            ("", DatabaseTls::Off),
            ("?sslmode=disable", DatabaseTls::Off),
            ("?sslmode=prefer", DatabaseTls::Off),
            (
                "?sslmode=require",
                DatabaseTls::Verified { root_cert: None },
            ),
            (
                "?sslmode=verify-full&sslrootcert=/etc/gha/db%20ca.pem",
                DatabaseTls::Verified {
                    root_cert: Some(PathBuf::from("/etc/gha/db ca.pem")),
                },
            ),
            (
                "?sslrootcert=system&sslmode=verify-ca",
                DatabaseTls::Verified { root_cert: None },
            ),
        ] {
            let url = DatabaseUrl::parse(&format!("postgres://u:p@db:5432/x{query}")).unwrap();
            assert_eq!(url.tls(), &tls, "{query}");
            let config = url.pg_config().unwrap();
            assert_eq!(
                config.get_ssl_mode(),
                if tls == DatabaseTls::Off {
                    tokio_postgres::config::SslMode::Disable
                } else {
                    tokio_postgres::config::SslMode::Require
                },
                "{query}"
            );
            // The driver is given its own parameters only.
            assert_eq!(config.get_dbname(), Some("x"));
        }
        let mixed = DatabaseUrl::parse(
            "postgres://u:p@db/x?application_name=ctl&sslmode=require&connect_timeout=3",
        )
        .unwrap();
        let config = mixed.pg_config().unwrap();
        assert_eq!(config.get_application_name(), Some("ctl"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
    }

    #[test]
    fn a_ca_file_that_cannot_be_read_is_an_error_naming_it() {
        let url = DatabaseUrl::parse(
            "postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let err = url.connector().err().expect("refused").to_string();
        assert!(
            err.contains("sslrootcert") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (value, says) in [
            ("/var/lib/gha.db", "must start with postgres://"),
            ("mysql://u:p@h/db", "only postgres://"),
            (
                "postgres://h/db?sslmode=sometimes",
                "use disable, prefer, require",
            ),
            ("postgres://h/db?sslrootcert=/ca.pem", "never be checked"),
            (
                "postgres://u@/db?host=/run/postgresql&sslmode=require",
                "unix socket",
            ),
            (
                "postgres://h/db?sslrootcert=%zz&sslmode=require",
                "bad %-escape",
            ),
            (
                "postgres://h/db?connect_timeout=soon",
                "not a valid PostgreSQL URL",
            ),
        ] {
            let err = DatabaseUrl::parse(value).unwrap_err();
            assert!(err.contains(says), "{value}: {err}");
        }
        let err = DatabaseUrl::parse("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
