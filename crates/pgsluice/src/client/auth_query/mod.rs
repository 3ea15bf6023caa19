//! PgBouncer's `auth_query`: the secret of a user missing from the auth file is
//! fetched from PostgreSQL (as `auth_user`, in `auth_dbname`), cached briefly, and
//! the client is checked against it. A user the query did not find is remembered for
//! `auth_query_miss_ttl`, and gets the same answer meanwhile without a lookup. After a successful login, the client's
//! credential (SCRAM ClientKey or md5 hash) is passed through to the user's pool for
//! its server logins.
//!
//! Users in the auth file keep their file secret. A user with no usable secret (no
//! such role, NULL password, `VALID UNTIL` past, `NOLOGIN`) gets the same exchange and
//! the same 28P01 as a wrong password. A lookup that fails (server down...) gets a
//! FATAL of its own for that client only.

mod cache;
mod lookup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

pub use cache::{Cached, LookupKey, SecretCache};
pub use lookup::{LookupError, LookupPools, SAFE_SEARCH_PATH};

use super::auth::{self, UserSecret, Verdict};
use super::LoginFailure;
use crate::config::{AuthLookup, AuthType, Config};
use crate::generation::Generation;
use crate::net::Stream;
use crate::pool::IdGen;
use crate::server::ServerTarget;
use crate::tls::ServerTls;

/// How long a fetched secret is used before it is fetched again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most secrets cached at once.
pub const CACHE_CAPACITY: usize = 4096;
/// application_name of lookup connections (visible in pg_stat_activity).
const LOOKUP_APPLICATION_NAME: &str = "pgsluice auth_query";

/// The auth_query state of one pgsluice server: cache and lookup connections.
#[derive(Debug)]
pub struct AuthQuery {
    /// Fetched secrets.
    pub cache: SecretCache,
    lookups: LookupPools,
}

/// Where a user's secret came from.
enum Source {
    /// The auth file / `[users]`, or nothing looked up.
    Config,
    /// auth_query (fresh or cached), under this cache key.
    Lookup(Arc<LookupKey>),
}

impl AuthQuery {
    /// Empty cache, no connections; server connection ids come from `ids`.
    pub fn new(ids: Arc<IdGen>) -> AuthQuery {
        AuthQuery {
            cache: SecretCache::new(CACHE_TTL, CACHE_CAPACITY),
            lookups: LookupPools::new(ids),
        }
    }

    /// The secret of `user` per `lookup`, from the cache or fetched.
    async fn secret(
        &self,
        cfg: &Config,
        tls: Option<Arc<ServerTls>>,
        lookup: &AuthLookup,
        user: &str,
    ) -> Result<(Arc<LookupKey>, Option<Arc<UserSecret>>), LookupError> {
        let target = lookup_target(cfg, tls, lookup)?;
        let key = Arc::new(LookupKey {
            host: target.host.clone(),
            port: target.port,
            dbname: target.database.clone(),
            user: target.user.clone(),
            query: lookup.query.clone(),
        });
        match self.cache.get(&key, user, Instant::now()) {
            Some(Cached::Found(s)) => return Ok((key, Some(s))),
            Some(Cached::Missing) => return Ok((key, None)),
            None => {}
        }
        let limit = cfg.general.server_connect_timeout.0;
        let found = self.lookups.fetch(&key, target, user, limit).await?;
        let secret = found.map(|s| Arc::new(UserSecret::from_config(user, &s)));
        match &secret {
            Some(s) => self.cache.insert(&key, user, s.clone(), Instant::now()),
            None => self.cache.insert_miss(
                &key,
                user,
                Instant::now(),
                cfg.general.auth_query_miss_ttl.0,
            ),
        }
        Ok((key, secret))
    }
}

/// The lookup connection's target: the server of `lookup.database`, as `lookup.user`
/// with that user's password from the auth file.
fn lookup_target(
    cfg: &Config,
    tls: Option<Arc<ServerTls>>,
    lookup: &AuthLookup,
) -> Result<ServerTarget, LookupError> {
    let db = cfg
        .database(&lookup.database)
        .ok_or_else(|| LookupError::NoDatabase(lookup.database.clone()))?;
    // A replicated database: the first configured host (the lookup only reads, so a
    // standby serves it as well as the primary).
    let first = db.host_list().into_iter().next();
    let (host, port) = first.map_or((db.host.clone(), db.port), |h| (h.host, h.port));
    Ok(ServerTarget {
        host,
        port,
        database: db.dbname.clone().unwrap_or_else(|| lookup.database.clone()),
        user: lookup.user.clone(),
        password: cfg.users.get(&lookup.user).and_then(|u| u.password.clone()),
        application_name: Some(LOOKUP_APPLICATION_NAME.to_owned()),
        tls,
        passthrough: None,
        scram_keys: Default::default(),
    })
}

/// Authenticates a pool client: against its auth-file secret, else (with an
/// `auth_user` for `database`) against the secret auth_query finds, else against the
/// decoy, with `method` (the global `auth_type` or the HBA rule's). Returns the verdict; a lookup failure is a FATAL for this client.
pub(super) async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    auth_query: &AuthQuery,
    generation: &Generation,
    method: AuthType,
    database: &str,
    user: &str,
) -> Result<Verdict, LoginFailure> {
    let (cfg, secrets) = (&*generation.config, &generation.secrets);
    let mut source = Source::Config;
    let mut fetched = None;
    let needs_secret = !matches!(method, AuthType::Trust | AuthType::Cert);
    if let (None, true, Some(lookup)) = (secrets.get(user), needs_secret, cfg.auth_lookup(database))
    {
        match auth_query
            .secret(cfg, generation.tls.servers.clone(), &lookup, user)
            .await
        {
            Ok((key, secret)) => {
                source = Source::Lookup(key);
                fetched = secret;
            }
            Err(e) => {
                tracing::warn!(
                    user,
                    db = database,
                    auth_user = %lookup.user,
                    auth_dbname = %lookup.database,
                    error = %e,
                    "auth_query lookup failed"
                );
                return Err(LoginFailure::Notice(e.to_notice()));
            }
        }
    }
    let secret = fetched.as_deref().or_else(|| secrets.get(user));
    let verdict =
        auth::authenticate_with(stream, buf, method, user, secret, secrets.decoy()).await?;
    if let (false, Source::Lookup(key), Some(_)) = (verdict.ok, &source, &fetched) {
        // The password may have changed in PostgreSQL: fetch it again next time.
        auth_query.cache.remove(key, user);
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[general]\nauth_user = \"lookup\"\n\
                        [databases.a]\nhost = \"h1\"\n\
                        [databases.b]\nhost = \"h2\"\nport = 5433\ndbname = \"bdb\"\n\
                        auth_user = \"other\"\nauth_query = \"SELECT u, p FROM f($1)\"\nauth_dbname = \"a\"\n\
                        [users.lookup]\npassword = \"pw\"\n";

    fn cfg(text: &str) -> Result<Config, crate::config::ConfigError> {
        crate::config::parse_str(text, "t.toml", Vec::new())
    }

    #[test]
    fn per_database_settings_win() {
        let c = cfg(BASE).unwrap();
        let a = c.auth_lookup("a").unwrap();
        assert_eq!(
            (a.user.as_str(), a.query.as_str(), a.database.as_str()),
            ("lookup", crate::config::DEFAULT_AUTH_QUERY, "a")
        );
        let b = c.auth_lookup("b").unwrap();
        assert_eq!(
            (b.user.as_str(), b.query.as_str(), b.database.as_str()),
            ("other", "SELECT u, p FROM f($1)", "a")
        );
        assert!(c.auth_lookup("nosuch").is_none());
        // The lookup connection: the auth database's server, as the auth_user with
        // that user's password.
        let t = lookup_target(&c, None, &a).unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.database.as_str(),
                t.user.as_str()
            ),
            ("h1", 5432, "a", "lookup")
        );
        assert_eq!(t.password.as_deref(), Some("pw"));
        let no_auth_user = cfg("[databases.a]\nhost = \"h\"\n").unwrap();
        assert!(no_auth_user.auth_lookup("a").is_none());
    }

    /// PgBouncer reads any auth_query and auth_dbname and fails only the logins that
    /// use them: such files load, with a warning naming the key.
    #[test]
    fn odd_settings_load_and_warn_with_the_key() {
        let c = cfg(&BASE.replace("auth_dbname = \"a\"", "auth_dbname = \"zz\"")).unwrap();
        let w = c.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("databases.b.auth_dbname") && w.contains("zz")),
            "{w:?}"
        );
        // The lookup itself then fails with a clear error.
        let lookup = c.auth_lookup("b").unwrap();
        assert!(matches!(
            lookup_target(&c, None, &lookup),
            Err(LookupError::NoDatabase(d)) if d == "zz"
        ));
        for (from, to, key) in [
            ("f($1)", "f('x')", "databases.b.auth_query"),
            (
                "auth_user = \"lookup\"\n",
                "auth_user = \"lookup\"\nauth_query = \"\"\n",
                "general.auth_query",
            ),
        ] {
            let c = cfg(&BASE.replacen(from, to, 1)).unwrap();
            let w = c.warnings();
            assert!(
                w.iter().any(|w| w.contains(key) && w.contains("$1")),
                "{key}: {w:?}"
            );
        }
        assert!(
            !cfg(BASE)
                .unwrap()
                .warnings()
                .iter()
                .any(|w| w.contains("auth_")),
            "{:?}",
            cfg(BASE).unwrap().warnings()
        );
    }
}
