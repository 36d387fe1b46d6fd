//! `DATABASE_URL`: which store holds the controller's state. Unset, SQLite in `STATE_DIR`
//! (nothing to install); `postgres://…` (or `postgresql://…`), a PostgreSQL server the
//! operator runs, which several controller replicas can share.
//!
//! Parsed here, as a pure function of the string, so a bad URL is a configuration error that
//! names the variable at start (and in `check-config`), not a failure at the first webhook.
//! The URL carries a password: [`DatabaseUrl`]'s `Debug` and [`DatabaseUrl::redacted`] never
//! show it.

use std::str::FromStr;

/// A validated PostgreSQL connection URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

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
        let config = tokio_postgres::Config::from_str(value).map_err(|e| {
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
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(
                "asks for sslmode=require, but this build talks to PostgreSQL \
                 without TLS: use a unix socket or a private network with sslmode=disable"
                    .into(),
            );
        }
        Ok(Self(value.to_owned()))
    }

    /// The URL as given, password included: for the driver only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (in the user part or a `password=` parameter) replaced by
    /// `****`, to show and log.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("postgres", &self.0));
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
    fn bad_urls_say_what_is_wrong() {
        for (value, says) in [
            ("/var/lib/gha.db", "must start with postgres://"),
            ("mysql://u:p@h/db", "only postgres://"),
            ("postgres://h/db?sslmode=require", "without TLS"),
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
