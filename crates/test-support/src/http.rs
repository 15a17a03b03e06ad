//! An API server in the test's process, and what HTTP tests assert about its answers.
//!
//! Both APIs are started the same way: settings parsed from a command line
//! ([`server_args`]), the application built on a pool, then served by [`TestServer::start`]
//! until the test stops it or drops it; [`serve!`](crate::serve) does all of that for either
//! API. [`test_app!`](crate::test_app) declares an API's test server type and the functions that
//! start one on a database of its own, or with an unreachable database.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::TestDatabase;

/// The Ed25519 key test command-api servers sign tokens with (so tests can sign tokens they
/// accept); test query-api servers are given only [`TEST_PUBLIC_KEY`].
pub const TEST_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIHX/uAg+AVr4aMaEXr+zjIDYIMLSDT5sxvYAbR0Bw7YY
-----END PRIVATE KEY-----
";

/// The public half of [`TEST_SIGNING_KEY`].
pub const TEST_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEApwB/vDOhkfB1VJG1McRNQsaC6b9upSBMvhMr/cLfdZU=
-----END PUBLIC KEY-----
";

/// A second key pair, for rotations and for forgeries by a key the servers do not know.
pub const OTHER_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILypqhe/0OUVLCE669jA5WGtzArfp8gByzHgTQtJE/gJ
-----END PRIVATE KEY-----
";

/// The public half of [`OTHER_SIGNING_KEY`].
pub const OTHER_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEASXdETVrH85jb/vrLl/NpnJdbYtQMH9fi2DmSJkGBYOI=
-----END PUBLIC KEY-----
";

/// A 10-minute token for `user_id` with `role`, signed by the PEM private key `signing_key`.
pub fn token_signed_by(signing_key: &str, user_id: uuid::Uuid, role: domain::Role) -> String {
    let key = http_api::tokens::SigningKey::from_pem(signing_key).unwrap();
    let public = key.public_key().clone();
    http_api::tokens::TokenIssuer::new(key, &[public], Duration::from_secs(600)).issue(user_id, role).unwrap()
}

/// A token test servers accept: signed by [`TEST_SIGNING_KEY`].
pub fn test_token(user_id: uuid::Uuid, role: domain::Role) -> String {
    token_signed_by(TEST_SIGNING_KEY, user_id, role)
}

/// The command line of `binary` listening on a free port of 127.0.0.1, on `database_url`, with
/// `CATALOG_ENV=development` and the test token keys (command-api: [`TEST_SIGNING_KEY`];
/// query-api: [`TEST_PUBLIC_KEY`] only), then `extra_args` (which override those).
pub fn server_args(binary: &str, database_url: &str, extra_args: &[&str]) -> Vec<String> {
    let keys = match binary {
        "command-api" => ["--token-signing-key", TEST_SIGNING_KEY],
        _ => ["--token-verify-keys", TEST_PUBLIC_KEY],
    };
    let args = [binary, "--addr", "127.0.0.1:0", "--database-url", database_url, "--environment", "development"];
    args.iter().chain(&keys).chain(extra_args).map(|arg| (*arg).to_owned()).collect()
}

/// A Postgres URL nothing listens on (a port just closed): a server built on it starts, and
/// finds its database unreachable.
pub fn unreachable_database_url() -> String {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("postgres://postgres@127.0.0.1:{closed_port}/nowhere")
}

/// What a server is given to await: it resolves when the server is to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server running in a task of the test's runtime; told to stop when dropped (before the
/// database it may own is dropped).
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: Client,
    /// A pool on the server's database: the server's own, or the database owner's when the
    /// server runs under a least-privilege role ([`Self::on_own_database_as`]).
    pub pool: PgPool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    database: Option<TestDatabase>,
}

impl TestServer {
    /// Serves what `run` returns (given the [`Shutdown`] to stop on) for a server bound to
    /// `addr` that uses `pool`.
    pub fn start<F, Fut>(addr: SocketAddr, pool: PgPool, run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (shutdown, stopped) = oneshot::channel();
        let server = tokio::spawn(run(Box::pin(async move {
            let _ = stopped.await;
        })));
        let base = format!("http://{addr}");
        Self { base, client: Client::new(), pool, shutdown: Some(shutdown), server: Some(server), database: None }
    }

    /// The API `serve` builds from its command line and starts, named `binary`, on a database
    /// of its own, with extra settings as command-line flags.
    pub async fn on_own_database<Fut>(binary: &str, extra_args: &[&str], serve: impl FnOnce(Vec<String>) -> Fut) -> Self
    where
        Fut: Future<Output = TestServer>,
    {
        let database = TestDatabase::new().await;
        let mut server = serve(server_args(binary, &database.url, extra_args)).await;
        server.database = Some(database);
        server
    }

    /// Like [`Self::on_own_database`], but the API connects as a login user that is a member of
    /// the database role `role` only (see [`TestDatabase::login_as`]), as in production. The
    /// test's [`pool`](Self::pool) stays the database owner's, for fixtures.
    pub async fn on_own_database_as<Fut>(
        binary: &str,
        role: &str,
        extra_args: &[&str],
        serve: impl FnOnce(Vec<String>) -> Fut,
    ) -> Self
    where
        Fut: Future<Output = TestServer>,
    {
        let mut database = TestDatabase::new().await;
        let url = database.login_as(role).await;
        let mut server = serve(server_args(binary, &url, extra_args)).await;
        server.pool = database.pool.clone();
        server.database = Some(database);
        server
    }

    /// The API `serve` builds and starts, named `binary`, with its Postgres unreachable.
    pub async fn without_database<Fut>(binary: &str, serve: impl FnOnce(Vec<String>) -> Fut) -> Self
    where
        Fut: Future<Output = TestServer>,
    {
        serve(server_args(binary, &unreachable_database_url(), &[])).await
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Stops the server gracefully and waits (10 s at most) for it to finish.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.server.take() {
            Some(server) => tokio::time::timeout(Duration::from_secs(10), server).await??,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Asserts an RFC 9457 problem response with `status`, and returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// `serve!(command_api, args)`: a future that builds the API crate `command_api` (its
/// `Settings` and `Application`; `query_api` has the same shape) from the command line `args`
/// (see [`server_args`]) and serves it: its [`TestServer`].
///
/// A macro because this crate cannot depend on the APIs: their tests depend on it.
#[macro_export]
macro_rules! serve {
    ($api:ident, $args:expr) => {
        async move {
            let settings =
                <$api::Settings as $crate::__private::Parser>::try_parse_from($args).expect("valid test settings");
            let pool = $crate::__private::database::pool(&settings.database).unwrap();
            let metrics = $crate::__private::telemetry::init_metrics();
            let app = $api::Application::build(settings, pool.clone(), metrics).await.expect("build app");
            $crate::http::TestServer::start(app.local_addr(), pool, |stopped| app.run(stopped))
        }
    };
}

/// `test_app!(/// docs  TestApp: command_api as "command-api", role "catalog_command")`
/// declares, for the tests of the API crate `command_api` (started as [`serve!`](crate::serve)
/// does, named `command-api` on its command line, connected as a member of the database role
/// `catalog_command` when one is named):
/// - `pub struct TestApp`, a [`TestServer`] on a database of its own (it dereferences to it),
///   for the tests to add their fixtures to;
/// - `spawn_app_with(extra_args)`, one with extra settings as command-line flags;
/// - `spawn_app()`, one with none;
/// - `spawn_app_without_database()`, a plain [`TestServer`] whose Postgres is unreachable.
#[macro_export]
macro_rules! test_app {
    ($(#[$attr:meta])* $name:ident: $api:ident as $binary:literal $(, role $role:literal)?) => {
        $(#[$attr])*
        pub struct $name($crate::http::TestServer);

        impl ::std::ops::Deref for $name {
            type Target = $crate::http::TestServer;
            fn deref(&self) -> &$crate::http::TestServer {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $crate::http::TestServer {
                &mut self.0
            }
        }

        /// A server on a database of its own, with extra settings as command-line flags (and
        /// connected as a member of the declared database role, if any).
        pub async fn spawn_app_with(extra_args: &[&str]) -> $name {
            let role: Option<&str> = None $(.or(Some($role)))?;
            match role {
                Some(role) => spawn_app_as(role, extra_args).await,
                None => $name(
                    $crate::http::TestServer::on_own_database($binary, extra_args, |args| $crate::serve!($api, args))
                        .await,
                ),
            }
        }

        /// A server on a database of its own that connects as a member of the database role
        /// `role` only (such as `catalog_query`), with extra settings as command-line flags.
        #[allow(dead_code)] // not every test crate runs its API under its role
        pub async fn spawn_app_as(role: &str, extra_args: &[&str]) -> $name {
            $name(
                $crate::http::TestServer::on_own_database_as($binary, role, extra_args, |args| {
                    $crate::serve!($api, args)
                })
                .await,
            )
        }

        /// A server on a database of its own.
        pub async fn spawn_app() -> $name {
            spawn_app_with(&[]).await
        }

        /// A server whose Postgres is unreachable (a closed port).
        pub async fn spawn_app_without_database() -> $crate::http::TestServer {
            $crate::http::TestServer::without_database($binary, |args| $crate::serve!($api, args)).await
        }
    };
}
