//! The `[encryption]` table (and a job's own `encryption` table, which replaces it for that job).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::interpolate::Lookup;
use crate::error::Error;
use crate::pipeline::encrypt::{self, DEFAULT_WORK_FACTOR, MAX_WORK_FACTOR};
use crate::pipeline::{Encryption, Passphrase};

/// `[encryption]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EncryptionSpec {
    /// Public keys: `age1...`, `ssh-ed25519 ...`, `ssh-rsa ...`.
    pub recipients: Option<Vec<String>>,
    /// A file holding the passphrase (passphrase mode).
    pub passphrase_file: Option<String>,
    /// The environment variable holding the passphrase (passphrase mode).
    pub passphrase_env: Option<String>,
    /// Passphrase mode: scrypt's work factor (log2 N), pinned so every backup spends the same.
    pub work_factor: Option<u8>,
    /// A job's table only: store this job unencrypted although `[encryption]` is set.
    pub disabled: Option<bool>,
}

impl EncryptionSpec {
    /// The encryption this table describes (`None`: unencrypted). `config_dir` is where a
    /// relative passphrase file is looked up; `lookup` reads a passphrase variable. Errors say
    /// which key is wrong, never a secret.
    pub fn resolve(
        &self,
        config_dir: Option<&Path>,
        lookup: Lookup<'_>,
    ) -> std::result::Result<Option<Encryption>, Error> {
        let modes = [
            self.recipients.is_some(),
            self.passphrase_file.is_some(),
            self.passphrase_env.is_some(),
        ]
        .iter()
        .filter(|m| **m)
        .count();
        if self.disabled == Some(true) {
            if modes > 0 || self.work_factor.is_some() {
                return Err(Error::config(
                    "encryption: disabled = true takes no other key",
                ));
            }
            return Ok(None);
        }
        if modes != 1 {
            return Err(Error::config(
                "encryption: give exactly one of recipients, passphrase-file or passphrase-env",
            )
            .with_hint("age does not mix public keys and passphrases in one file; recipients are the safer choice (the backup host then cannot decrypt)"));
        }
        if let Some(recipients) = &self.recipients {
            if self.work_factor.is_some() {
                return Err(Error::config(
                    "encryption: work-factor applies to a passphrase, not to recipients",
                ));
            }
            if recipients.is_empty() {
                return Err(Error::config("encryption: recipients is empty").with_hint(
                    "add a public key (age1..., from `lifeboat-backup keygen`), or drop the table",
                ));
            }
            for (i, r) in recipients.iter().enumerate() {
                encrypt::parse_recipient(r)
                    .map_err(|e| Error::config(format!("encryption: recipients[{i}]: {e}")))?;
            }
            return Ok(Some(Encryption::Recipients(recipients.clone())));
        }
        let work_factor = self.work_factor.unwrap_or(DEFAULT_WORK_FACTOR);
        if !(10..=MAX_WORK_FACTOR).contains(&work_factor) {
            return Err(Error::config(format!(
                "encryption: work-factor must be 10..={MAX_WORK_FACTOR}, got {work_factor}"
            ))
            .with_hint(format!(
                "restores refuse more than {MAX_WORK_FACTOR}, so a crafted file cannot make them hang"
            )));
        }
        let passphrase = match (&self.passphrase_file, &self.passphrase_env) {
            (Some(file), _) => {
                let path = PathBuf::from(file);
                Passphrase::File(match config_dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path,
                })
            }
            (None, Some(name)) => Passphrase::Env {
                name: name.clone(),
                value: lookup(name)
                    .filter(|v| !v.is_empty())
                    .map(age::secrecy::SecretString::from),
            },
            (None, None) => unreachable!("one mode was checked above"),
        };
        Ok(Some(Encryption::Passphrase {
            passphrase,
            work_factor,
        }))
    }
}
