//! Throwaway PostgreSQL databases for tests. `GHA_TEST_PG_URL` names a server and a user that
//! may create databases (scripts/test.sh starts one and sets it); each [`TestDb`] is a new
//! database of a unique name, dropped when the value is dropped, also when the test panics.
//!
//! Without a server the PostgreSQL tests are skipped with a message, except on CI
//! (`CI=true`), where they fail: a green CI must mean they ran. (The system tests have the
//! same helper in `tests/src/postgres.rs`, for databases that real controller processes use.)

use tokio_postgres::NoTls;

use crate::config::database::DatabaseUrl;

/// A database created for one test.
pub struct TestDb {
    admin: String,
    name: String,
    pub url: DatabaseUrl,
    /// `url` as text, for variants of it.
    plain: String,
}

fn unavailable(why: String) -> Option<TestDb> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "the PostgreSQL tests must run on CI but cannot: {why} \
             (scripts/test.sh starts a server and exports GHA_TEST_PG_URL)"
        );
    }
    eprintln!(
        "skipped: no PostgreSQL for this test ({why}); run scripts/test.sh, or set \
         GHA_TEST_PG_URL=postgres://USER@HOST:PORT/postgres"
    );
    None
}

impl TestDb {
    /// A new, empty database; `None` (skip) only when no server is configured off CI.
    pub async fn create() -> Option<TestDb> {
        let admin = match std::env::var("GHA_TEST_PG_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => return unavailable("GHA_TEST_PG_URL is not set".into()),
        };
        let (client, connection) = match tokio_postgres::connect(&admin, NoTls).await {
            Ok(pair) => pair,
            Err(e) => return unavailable(format!("cannot connect to GHA_TEST_PG_URL: {e}")),
        };
        tokio::spawn(connection);
        let name = format!(
            "gha_test_{}_{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let mut url = url::Url::parse(&admin).expect("GHA_TEST_PG_URL is a postgres:// URL");
        url.set_path(&format!("/{name}"));
        let plain = url.to_string();
        let url = DatabaseUrl::parse(&plain).expect("a valid test database URL");
        Some(TestDb {
            admin,
            name,
            url,
            plain,
        })
    }

    /// This database's URL with `params` added to its query (`sslmode=…&sslrootcert=…`) and,
    /// if `host` is given, connecting to the same address under that host name (`hostaddr`).
    pub fn url_with(&self, params: &str, host: Option<&str>) -> Result<DatabaseUrl, String> {
        let mut url = url::Url::parse(&self.plain).map_err(|e| e.to_string())?;
        let mut query = vec![params.to_owned()];
        if let Some(host) = host {
            query.push(format!("hostaddr={}", url.host_str().unwrap_or_default()));
            url.set_host(Some(host)).map_err(|e| e.to_string())?;
        }
        url.set_query(Some(&query.join("&")));
        DatabaseUrl::parse(url.as_str())
    }

    /// The CA of the test server's TLS certificate (`GHA_TEST_PG_CA`, set by
    /// scripts/test-postgres.sh); `None` (skip) only off CI.
    pub fn server_ca() -> Option<std::path::PathBuf> {
        match std::env::var("GHA_TEST_PG_CA") {
            Ok(path) if !path.trim().is_empty() => Some(path.into()),
            _ => {
                // Panics on CI; off CI, says why the test is skipped.
                let _ = unavailable("GHA_TEST_PG_CA is not set".into());
                None
            }
        }
    }

    /// For each of the controller's connections to this database now: whether it is encrypted.
    pub async fn controller_connections_encrypted(&self) -> Vec<bool> {
        let (client, connection) = tokio_postgres::connect(&self.admin, NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(connection);
        client
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND a.application_name = 'gha-controller'",
                &[&self.name],
            )
            .await
            .expect("pg_stat_ssl")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Runs `sql` in this database (to set up a state the store must cope with).
    pub async fn execute(&self, sql: &str) {
        let (client, connection) = self
            .url
            .pg_config()
            .expect("the test database's URL")
            .connect(NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client.batch_execute(sql).await.expect("test SQL");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Its own thread and runtime: drop may run inside the test's runtime, or while it
        // unwinds from a panic.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}
