//! Client-side encryption in the age format: the write path's stage after compression, the read
//! path's stage before decompression.
//!
//! A backup host holds only public keys (recipients) or, in passphrase mode, the passphrase; the
//! identities that decrypt live where restores run. age authenticates its payload in 64 KiB
//! chunks, so a changed byte fails the read of its chunk and a truncated object fails at the
//! end; both are integrity errors (exit 3) once the stored digest has been compared. A missing
//! or wrong identity is a `Crypto` error (exit 2) that lists the snapshot's recipients.
//!
//! The stored digest is taken over the ciphertext, so `verify --level stored` and the stored
//! half of `--level content` need no key.

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWrite, BufReader};
use tokio_util::compat::{
    FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt, TokioAsyncReadCompatExt,
    TokioAsyncWriteCompatExt,
};

use super::CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};

/// The scrypt work factor (log2 N) a passphrase is encrypted with unless the configuration pins
/// another: about a quarter of a second on a current core, and 256 MiB of memory.
pub const DEFAULT_WORK_FACTOR: u8 = 18;

/// The highest scrypt work factor a decryption accepts (1 GiB of memory, a few seconds): a
/// crafted header cannot make a restore run for hours. Encryption never pins more.
pub const MAX_WORK_FACTOR: u8 = 20;

/// The suffix of an encrypted data object's name (`data.pgdump.zst.age`).
pub const EXTENSION: &str = ".age";

/// How a job's data objects are encrypted, as configured.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// To public keys (`age1...`, `ssh-ed25519 ...`, `ssh-rsa ...`), each checked when the
    /// configuration was read.
    Recipients(Vec<String>),
    /// To a passphrase (age's scrypt), pinned at `work_factor`.
    Passphrase {
        /// Where the passphrase is read from.
        passphrase: Passphrase,
        /// log2 of scrypt's N.
        work_factor: u8,
    },
}

/// Where a passphrase comes from: never a flag, never the configuration file itself.
#[derive(Debug, Clone)]
pub enum Passphrase {
    /// An environment variable, read when the configuration was loaded (`None`: it was unset).
    Env {
        /// The variable's name.
        name: String,
        /// Its value.
        value: Option<SecretString>,
    },
    /// A file holding the passphrase (a trailing newline is not part of it).
    File(PathBuf),
}

impl Passphrase {
    /// The passphrase; the error names the variable or file, never the value.
    pub fn read(&self) -> Result<SecretString> {
        let passphrase = match self {
            Passphrase::Env { name, value } => value.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Crypto,
                    format!("the passphrase variable {name} is not set (or is empty)"),
                )
                .with_hint(format!(
                    "export {name} with the passphrase, or use passphrase-file"
                ))
            })?,
            Passphrase::File(path) => read_passphrase_file(path)?,
        };
        if passphrase.expose_secret().is_empty() {
            return Err(Error::new(
                ErrorKind::Crypto,
                format!("the passphrase from {} is empty", self.describe()),
            ));
        }
        Ok(passphrase)
    }

    /// `passphrase-env LIFEBOAT_PASSPHRASE` or the file's path, for messages.
    pub fn describe(&self) -> String {
        match self {
            Passphrase::Env { name, .. } => format!("the environment variable {name}"),
            Passphrase::File(path) => format!("the file {}", path.display()),
        }
    }
}

fn read_passphrase_file(path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::Crypto,
            format!("cannot read the passphrase file {}: {e}", path.display()),
        )
        .with_hint("check passphrase-file in [encryption]")
    })?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    Ok(SecretString::from(line.strip_suffix('\r').unwrap_or(line)))
}

/// How a snapshot's data object is encrypted, as its manifest records it: the scheme and the
/// recipients' public keys, never an identity or a passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme")]
pub enum EncryptionInfo {
    /// age, to these recipients.
    #[serde(rename = "age")]
    Age {
        /// The public keys, as configured.
        recipients: Vec<String>,
    },
    /// age, to a passphrase (scrypt).
    #[serde(rename = "age-scrypt")]
    AgePassphrase {
        /// log2 of scrypt's N.
        work_factor: u8,
    },
}

impl EncryptionInfo {
    /// What a restore needs, in words: "an identity for one of: age1..., ssh-ed25519 ...".
    pub fn needs(&self) -> String {
        match self {
            EncryptionInfo::Age { recipients } => {
                format!("an identity for one of: {}", recipients.join(", "))
            }
            EncryptionInfo::AgePassphrase { .. } => "the passphrase".to_string(),
        }
    }

    /// Short form for listings: "age (2 recipients)" or "age passphrase".
    pub fn summary(&self) -> String {
        match self {
            EncryptionInfo::Age { recipients } => recipients
                .iter()
                .map(|r| abbreviate(r))
                .collect::<Vec<_>>()
                .join(", "),
            EncryptionInfo::AgePassphrase { .. } => "passphrase".to_string(),
        }
    }
}

/// `age1qyqszqgpqyqszqgp…` or `ssh-ed25519 AAAAC3Nz…`: enough to tell keys apart.
fn abbreviate(recipient: &str) -> String {
    let keep = if recipient.starts_with("ssh-") {
        28
    } else {
        20
    };
    match recipient.char_indices().nth(keep) {
        Some((at, _)) => format!("{}…", &recipient[..at]),
        None => recipient.to_string(),
    }
}

/// A recipient as age takes it.
enum AnyRecipient {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl AnyRecipient {
    fn as_dyn(&self) -> &dyn age::Recipient {
        match self {
            AnyRecipient::X25519(r) => r,
            AnyRecipient::Ssh(r) => r,
        }
    }
}

/// Parses one recipient; the error says what is accepted.
pub fn parse_recipient(text: &str) -> std::result::Result<(), String> {
    any_recipient(text).map(|_| ())
}

fn any_recipient(text: &str) -> std::result::Result<AnyRecipient, String> {
    let text = text.trim();
    if text.starts_with("age1") {
        return text
            .parse::<age::x25519::Recipient>()
            .map(AnyRecipient::X25519)
            .map_err(|e| format!("{} is not a valid age public key: {e}", abbreviate(text)));
    }
    if text.starts_with("ssh-") {
        return text
            .parse::<age::ssh::Recipient>()
            .map(AnyRecipient::Ssh)
            .map_err(|e| {
                format!(
                "{} is not a usable ssh public key ({e:?}); age takes ssh-ed25519 and ssh-rsa keys",
                abbreviate(text)
            )
            });
    }
    if text.starts_with("AGE-SECRET-KEY-") {
        // Said without echoing it: this is a secret that has no business in a backup host's
        // configuration.
        return Err(
            "this is an identity (a secret key), not a recipient: put its public key \
                    (age1..., printed by `lifeboat-backup keygen`) here, and keep the identity \
                    where restores run"
                .to_string(),
        );
    }
    Err(format!(
        "{} is not a recipient: expected an age public key (age1...) or an ssh public key \
         (ssh-ed25519 ..., ssh-rsa ...)",
        abbreviate(text)
    ))
}

/// An encryption ready to apply to one data object: the file key is wrapped for the recipients
/// (or the passphrase) before the dump starts, so a bad key fails the run before any work.
pub struct Sealing {
    encryptor: age::Encryptor,
    info: EncryptionInfo,
}

impl Encryption {
    /// Wraps a new file key for this object; reads the passphrase in passphrase mode.
    pub fn seal(&self) -> Result<Sealing> {
        match self {
            Encryption::Recipients(texts) => {
                let recipients = texts
                    .iter()
                    .map(|t| any_recipient(t))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::config(format!("[encryption] recipients: {e}")))?;
                let encryptor =
                    age::Encryptor::with_recipients(recipients.iter().map(AnyRecipient::as_dyn))
                        .map_err(|e| {
                            Error::new(
                                ErrorKind::Crypto,
                                format!("cannot encrypt to the configured recipients: {e}"),
                            )
                        })?;
                Ok(Sealing {
                    encryptor,
                    info: EncryptionInfo::Age {
                        recipients: texts.iter().map(|t| t.trim().to_string()).collect(),
                    },
                })
            }
            Encryption::Passphrase {
                passphrase,
                work_factor,
            } => {
                let mut recipient = age::scrypt::Recipient::new(passphrase.read()?);
                recipient.set_work_factor(*work_factor);
                let encryptor = age::Encryptor::with_recipients(std::iter::once(
                    &recipient as &dyn age::Recipient,
                ))
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Crypto,
                        format!("cannot encrypt to the passphrase: {e}"),
                    )
                })?;
                Ok(Sealing {
                    encryptor,
                    info: EncryptionInfo::AgePassphrase {
                        work_factor: *work_factor,
                    },
                })
            }
        }
    }

    /// What `--print-config` shows: the scheme and the public keys, or where the passphrase is
    /// read from.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Encryption::Recipients(r) => serde_json::json!({"scheme": "age", "recipients": r}),
            Encryption::Passphrase {
                passphrase,
                work_factor,
            } => serde_json::json!({
                "scheme": "age-scrypt",
                "passphrase-from": passphrase.describe(),
                "work-factor": work_factor,
            }),
        }
    }
}

impl Sealing {
    /// What the manifest records.
    pub fn info(&self) -> &EncryptionInfo {
        &self.info
    }

    /// Wraps `inner` so that what is written is encrypted; the header goes out now. Shut the
    /// writer down to write the last (authenticated, final) chunk.
    pub async fn wrap<'a, W: AsyncWrite + Unpin + Send + 'a>(
        self,
        inner: W,
    ) -> std::io::Result<Box<dyn AsyncWrite + Unpin + Send + 'a>> {
        let writer = self
            .encryptor
            .wrap_async_output(inner.compat_write())
            .await?;
        Ok(Box::new(writer.compat_write()))
    }
}

/// The identities a restore or a check may decrypt with: identity files (`--identity`) and, in
/// passphrase mode, the configured passphrase.
#[derive(Default)]
pub struct Keys {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// The public keys (`age1...`) of the age identities in `identities`: an identity that
    /// belongs to a recipient the manifest records and still cannot open the header tells
    /// damage from a wrong key.
    publics: Vec<String>,
    files: Vec<PathBuf>,
    passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("files", &self.files)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(Passphrase::describe),
            )
            .finish()
    }
}

/// What a decryption could not do.
pub(crate) enum Unsealed<'a> {
    /// The plaintext.
    Open(Box<dyn AsyncBufRead + Unpin + Send + 'a>),
    /// The object's header is not age's, or is damaged (an identity of a recorded recipient
    /// cannot open it): the caller reads on for the stored digest and reports damage.
    Damaged(String),
    /// A wrong key or a damaged header, which the header alone cannot tell apart (a
    /// passphrase): the stored digest decides; if it matches, this error (a wrong key) stands.
    WrongKeyOrDamaged(Error),
}

impl Keys {
    /// No identities: encrypted snapshots can be checked only as far as the ciphertext.
    pub fn none() -> Keys {
        Keys::default()
    }

    /// Reads identity files: age identity files (`AGE-SECRET-KEY-1...`, as `lifeboat-backup
    /// keygen` and `age-keygen` write them) and unencrypted OpenSSH private keys (ssh-ed25519,
    /// ssh-rsa). The errors name the file, never its content.
    pub fn from_files(files: &[PathBuf]) -> Result<Keys> {
        let mut keys = Keys::default();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::new(
                    ErrorKind::Crypto,
                    format!("cannot read the identity file {}: {e}", file.display()),
                )
                .with_hint(
                    "pass --identity FILE (or LIFEBOAT_AGE_IDENTITY_FILE) with a readable file",
                )
            })?;
            let bad = |what: String| {
                Error::new(
                    ErrorKind::Crypto,
                    format!("the identity file {}: {what}", file.display()),
                )
                .with_hint("give an age identity file (from `lifeboat-backup keygen` or age-keygen) or an unencrypted OpenSSH private key")
            };
            if text.contains("-----BEGIN") {
                let identity = age::ssh::Identity::from_buffer(
                    text.as_bytes(),
                    Some(file.display().to_string()),
                )
                .map_err(|e| bad(format!("not a usable ssh private key ({e})")))?;
                match identity {
                    age::ssh::Identity::Unencrypted(_) => keys.identities.push(Box::new(identity)),
                    age::ssh::Identity::Encrypted(_) => {
                        return Err(bad("the ssh key is protected by a passphrase, which an unattended restore cannot type; \
                                        use an age identity instead".into()))
                    }
                    age::ssh::Identity::Unsupported(k) => {
                        return Err(bad(format!("an ssh key of a kind age does not support ({k:?})")))
                    }
                }
            } else {
                let parsed = age::IdentityFile::from_buffer(text.as_bytes())
                    .map_err(|e| bad(format!("not an age identity file ({e})")))?
                    .into_identities()
                    .map_err(|e| bad(format!("cannot use its identities ({e})")))?;
                if parsed.is_empty() {
                    return Err(bad(
                        "it holds no identity (no AGE-SECRET-KEY-1... line)".into()
                    ));
                }
                keys.publics.extend(
                    text.lines()
                        .filter_map(|l| l.trim().parse::<age::x25519::Identity>().ok())
                        .map(|i| i.to_public().to_string()),
                );
                keys.identities.extend(parsed);
            }
            keys.files.push(file.clone());
        }
        Ok(keys)
    }

    /// Adds the passphrase of a job in passphrase mode (read only when a snapshot needs it).
    pub fn with_passphrase(mut self, passphrase: Option<Passphrase>) -> Keys {
        self.passphrase = passphrase;
        self
    }

    /// Whether these keys may open a snapshot encrypted as `info` (before reading anything):
    /// the error says what the snapshot needs.
    pub fn require(&self, info: &EncryptionInfo, what: &str) -> Result<()> {
        let missing = match info {
            EncryptionInfo::Age { .. } => self.identities.is_empty(),
            EncryptionInfo::AgePassphrase { .. } => self.passphrase.is_none(),
        };
        if !missing {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Crypto,
            format!("{what} is encrypted and needs {}", info.needs()),
        )
        .with_hint(match info {
            EncryptionInfo::Age { .. } => {
                "pass --identity FILE (or set LIFEBOAT_AGE_IDENTITY_FILE) with the identity of one of those recipients"
            }
            EncryptionInfo::AgePassphrase { .. } => {
                "run with the configuration whose [encryption] names passphrase-file or passphrase-env"
            }
        }))
    }

    /// Reads the age header from `inner` and unwraps the file key. `Err` is a missing or wrong
    /// identity (exit 2); a header that is not age's is `Unsealed::Damaged`, for the caller to
    /// judge once the stored digest is known.
    pub(crate) async fn open<'a, R: AsyncBufRead + Unpin + Send + 'a>(
        &self,
        info: &EncryptionInfo,
        what: &str,
        inner: R,
    ) -> Result<Unsealed<'a>> {
        self.require(info, what)?;
        let decryptor = match age::Decryptor::new_async_buffered(inner.compat()).await {
            Ok(d) => d,
            Err(e) => return Ok(Unsealed::Damaged(format!("its age header: {e}"))),
        };
        let passphrase = match (&self.passphrase, decryptor.is_scrypt()) {
            (Some(p), true) => {
                let mut identity = age::scrypt::Identity::new(p.read()?);
                identity.set_max_work_factor(MAX_WORK_FACTOR);
                Some(identity)
            }
            _ => None,
        };
        let identities = self
            .identities
            .iter()
            .map(|b| b.as_ref() as &dyn age::Identity)
            .chain(passphrase.iter().map(|p| p as &dyn age::Identity));
        match decryptor.decrypt_async(identities) {
            Ok(reader) => Ok(Unsealed::Open(Box::new(BufReader::with_capacity(
                CHUNK_SIZE,
                reader.compat(),
            )))),
            Err(age::DecryptError::NoMatchingKeys) => match self.recorded_recipient(info) {
                // The age library says "no matching keys" for a damaged stanza too; an identity
                // of a recipient the manifest records that cannot open it means damage.
                Some(public) => Ok(Unsealed::Damaged(format!(
                    "its age header cannot be opened with the identity of {public}, one of the recipients the manifest records: the header is damaged"
                ))),
                None => Err(self.no_match(info, what)),
            },
            Err(age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed)
                if passphrase.is_some() =>
            {
                Ok(Unsealed::WrongKeyOrDamaged(Error::new(
                    ErrorKind::Crypto,
                    format!(
                        "{what}: the passphrase from {} does not decrypt it (its stored digest matches the manifest, so the object is intact and the passphrase is not the one it was made with)",
                        self.passphrase.as_ref().map(Passphrase::describe).unwrap_or_default()
                    ),
                )
                .with_hint("use the passphrase the snapshot was made with; a changed passphrase applies to new snapshots only")))
            }
            Err(age::DecryptError::ExcessiveWork { required, .. }) => Err(Error::new(
                ErrorKind::Crypto,
                format!(
                    "{what} asks for scrypt work factor {required}, above the limit of {MAX_WORK_FACTOR}: \
                     decrypting it could take hours and tens of GiB"
                ),
            )
            .with_hint("Lifeboat never writes such a header; treat the object as tampered with")),
            Err(e) => Ok(Unsealed::Damaged(format!("its age header: {e}"))),
        }
    }

    /// The public key of an identity given that is one of the recipients `info` records.
    fn recorded_recipient(&self, info: &EncryptionInfo) -> Option<&str> {
        let EncryptionInfo::Age { recipients } = info else {
            return None;
        };
        self.publics
            .iter()
            .find(|p| recipients.iter().any(|r| r.trim() == p.as_str()))
            .map(String::as_str)
    }

    fn no_match(&self, info: &EncryptionInfo, what: &str) -> Error {
        let tried = self
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Error::new(
            ErrorKind::Crypto,
            format!(
                "no matching identity: {what} is encrypted to {}, and none of the identities in {tried} is one of them",
                match info {
                    EncryptionInfo::Age { recipients } => recipients.join(", "),
                    EncryptionInfo::AgePassphrase { .. } => "a passphrase".to_string(),
                }
            ),
        )
        .with_hint("pass the identity file of one of those recipients with --identity; after a key rotation, older snapshots need the older identity")
    }
}

/// Reads an age header from `inner` without any key: the keyless content check.
pub(crate) async fn check_header<R: AsyncBufRead + Unpin>(
    inner: R,
) -> std::result::Result<bool, String> {
    age::Decryptor::new_async_buffered(inner.compat())
        .await
        .map(|d| d.is_scrypt())
        .map_err(|e| format!("its age header: {e}"))
}

/// A new X25519 identity, as an age identity file's text, and its public key.
pub fn generate_identity(now: chrono::DateTime<chrono::Utc>) -> (SecretString, String) {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {public}\n{}\n",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    (SecretString::from(text), public)
}

/// Writes a new identity to `path` (which must not exist), readable by its owner only, synced;
/// returns its public key. A failed write leaves no file behind.
pub fn write_new_identity(path: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| {
        Error::new(
            ErrorKind::Store,
            format!("cannot write the identity file {}: {e}", path.display()),
        )
        .with_hint("check that its folder exists, is writable and has free space")
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::new(
                    ErrorKind::Refused,
                    format!("{} exists; an identity is never overwritten", path.display()),
                )
                .with_hint("choose another --output path, or move the old identity away first (snapshots encrypted to it need it to restore)")
            } else {
                failed(e)
            }
        })?;
    let (text, public) = generate_identity(now);
    let written = file
        .write_all(text.expose_secret().as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(failed(e));
    }
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn encrypt(sealing: Sealing, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = sealing.wrap(&mut out).await.unwrap();
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        out
    }

    async fn decrypt(keys: &Keys, info: &EncryptionInfo, data: &[u8]) -> Result<Vec<u8>> {
        match keys.open(info, "snapshot x", data).await? {
            Unsealed::Open(mut r) => {
                let mut out = Vec::new();
                r.read_to_end(&mut out)
                    .await
                    .map_err(|e| Error::integrity(e.to_string()))?;
                Ok(out)
            }
            Unsealed::Damaged(m) => Err(Error::integrity(m)),
            Unsealed::WrongKeyOrDamaged(e) => Err(e),
        }
    }

    fn identity_file(dir: &Path, name: &str) -> (PathBuf, String) {
        let (text, public) = generate_identity(chrono::Utc::now());
        let path = dir.join(name);
        std::fs::write(&path, text.expose_secret()).unwrap();
        (path, public)
    }

    #[tokio::test]
    async fn round_trip_wrong_key_and_tampering() {
        let dir = std::env::temp_dir().join(format!("lifeboat-unit-age-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (right, public) = identity_file(&dir, "right.txt");
        let (wrong, _) = identity_file(&dir, "wrong.txt");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sealing = Encryption::Recipients(vec![public.clone()]).seal().unwrap();
        let info = sealing.info().clone();
        assert_eq!(
            info,
            EncryptionInfo::Age {
                recipients: vec![public]
            }
        );
        let sealed = encrypt(sealing, &data).await;
        assert_ne!(&sealed[..data.len().min(sealed.len())], &data[..]);

        let keys = Keys::from_files(std::slice::from_ref(&right)).unwrap();
        assert_eq!(decrypt(&keys, &info, &sealed).await.unwrap(), data);

        let e = decrypt(&Keys::from_files(&[wrong]).unwrap(), &info, &sealed)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Crypto);
        assert!(e.to_string().contains("no matching identity"), "{e}");

        let e = decrypt(&Keys::none(), &info, &sealed).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Crypto);
        assert!(e.to_string().contains("age1"), "{e}");

        // One byte changed in the payload, one in the header, and a missing tail.
        let mut tampered = sealed.clone();
        let at = tampered.len() - 1000;
        tampered[at] ^= 1;
        let e = decrypt(&keys, &info, &tampered).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let short = &sealed[..sealed.len() - 70_000];
        let e = decrypt(&keys, &info, short).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_passphrase_is_pinned_and_capped() {
        let passphrase = Passphrase::Env {
            name: "X".into(),
            value: Some(SecretString::from("correct horse")),
        };
        let sealing = Encryption::Passphrase {
            passphrase: passphrase.clone(),
            work_factor: 10,
        }
        .seal()
        .unwrap();
        let info = sealing.info().clone();
        let sealed = encrypt(sealing, b"hello").await;
        assert!(String::from_utf8_lossy(&sealed[..sealed.len().min(200)]).contains("scrypt"));
        let keys = Keys::none().with_passphrase(Some(passphrase));
        assert_eq!(decrypt(&keys, &info, &sealed).await.unwrap(), b"hello");
        let wrong = Keys::none().with_passphrase(Some(Passphrase::Env {
            name: "X".into(),
            value: Some(SecretString::from("wrong")),
        }));
        let e = decrypt(&wrong, &info, &sealed).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Crypto, "{e}");
        assert!(!e.to_string().contains("wrong\""), "{e}");

        // A header asking for more work than the cap is refused before any scrypt runs.
        let at = sealed
            .windows(4)
            .position(|w| w == b" 10\n")
            .expect("the scrypt stanza's work factor");
        let mut costly = sealed.clone();
        costly[at + 1] = b'3';
        let e = decrypt(&keys, &info, &costly).await.unwrap_err();
        assert!(e.to_string().contains("work factor 30"), "{e}");
    }

    #[test]
    fn recipients_are_checked_and_secrets_are_not_echoed() {
        assert!(parse_recipient("age1nope").is_err());
        let (secret, public) = generate_identity(chrono::Utc::now());
        assert!(parse_recipient(&public).is_ok());
        let secret_line = secret
            .expose_secret()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_string();
        let e = parse_recipient(&secret_line).unwrap_err();
        assert!(!e.contains(&secret_line[15..]), "{e}");
        assert!(parse_recipient("ssh-dss AAAA").is_err());
    }
}
