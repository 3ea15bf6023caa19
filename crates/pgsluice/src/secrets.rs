//! What pgsluice holds of every configured user's password, in each form a client
//! login may need (plaintext, md5, SCRAM verifier), derived once per configuration
//! generation (SCRAM derivation runs PBKDF2, so it is built off the runtime threads).

use std::collections::HashMap;

use pgsluice_protocol::auth::{md5, scram};

use crate::config::Config;

/// What pgsluice knows of one user's password, in every form it can check.
#[derive(Clone)]
pub struct UserSecret {
    /// The plaintext, when configured as such.
    pub plain: Option<String>,
    /// The md5 form ("md5..."), when derivable.
    pub md5: Option<String>,
    /// The SCRAM verifier, when derivable.
    pub scram: Option<scram::ScramSecret>,
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSecret")
            .field("plain", &self.plain.as_ref().map(|_| "<redacted>"))
            .field("md5", &self.md5.is_some())
            .field("scram", &self.scram.is_some())
            .finish()
    }
}

impl UserSecret {
    /// Derives the forms from a configured password (plaintext, md5 or SCRAM).
    pub fn from_config(user: &str, password: &str) -> UserSecret {
        if let Some(s) = scram::ScramSecret::parse(password) {
            UserSecret {
                plain: None,
                md5: None,
                scram: Some(s),
            }
        } else if md5::is_md5_hash(password) {
            UserSecret {
                plain: None,
                md5: Some(password.to_owned()),
                scram: None,
            }
        } else {
            UserSecret {
                plain: Some(password.to_owned()),
                md5: Some(md5::hash_password(user, password)),
                scram: Some(scram::ScramSecret::generate(password)),
            }
        }
    }
}

/// Secrets for every configured user, computed once per configuration.
#[derive(Debug)]
pub struct Secrets {
    users: HashMap<String, UserSecret>,
    /// Used for unknown users so that they cannot be told from wrong passwords.
    decoy: scram::ScramSecret,
}

impl Secrets {
    /// Builds the table from the configuration.
    pub fn from_config(cfg: &Config) -> Secrets {
        let users = cfg
            .users
            .iter()
            .filter_map(|(name, u)| {
                u.password
                    .as_deref()
                    .map(|p| (name.clone(), UserSecret::from_config(name, p)))
            })
            .collect();
        let decoy_pw: [u8; 16] = rand::random();
        Secrets {
            users,
            decoy: scram::ScramSecret::generate(&format!("{decoy_pw:?}")),
        }
    }

    /// The secret of a user.
    pub fn get(&self, user: &str) -> Option<&UserSecret> {
        self.users.get(user)
    }

    /// The verifier unknown users are run against.
    pub fn decoy(&self) -> &scram::ScramSecret {
        &self.decoy
    }
}
