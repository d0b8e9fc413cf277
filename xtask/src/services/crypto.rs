//! Encryption at rest with age: who can read new backups (recipients) and
//! what reads them (identities), parsed from the settings, failing closed.
//!
//! Recipients: age X25519 public keys (`age1...`) and SSH public keys
//! (`ssh-ed25519`, `ssh-rsa`), from BACKUP_AGE_RECIPIENTS (comma-separated)
//! and BACKUP_AGE_RECIPIENTS_FILE (one a line, `#` comments). Identities:
//! the file BACKUP_AGE_IDENTITY_FILE names (age identities, or an SSH
//! private key). An entry that is wrong is named by its position, never by
//! its text: it may be a secret pasted in the wrong place.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, format_err};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::core::config::AgeConfig;
use crate::core::meta::RecipientId;

/// Public keys that new backups are encrypted to.
pub(crate) struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send + Sync>>,
    /// Each key's fingerprint, for `.meta` (never a secret).
    pub(crate) ids: Vec<RecipientId>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipients")
            .field("ids", &self.ids)
            .finish()
    }
}

/// Private keys that read encrypted backups. `Debug` shows nothing of them.
pub(crate) struct Identities {
    keys: Vec<Box<dyn age::Identity>>,
    /// Where they came from, for messages.
    pub(crate) file: PathBuf,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identities({} from {})",
            self.keys.len(),
            self.file.display()
        )
    }
}

/// The recipients the settings name; `None` when encryption is not asked
/// for. Any problem stops here, before a dump starts.
pub(crate) fn recipients(config: &AgeConfig) -> anyhow::Result<Option<Recipients>> {
    if !config.encrypts() {
        return Ok(None);
    }
    let mut entries: Vec<(String, String)> = Vec::new(); // (where, text)
    if let Some(list) = &config.recipients {
        if list.expose().trim().is_empty() {
            bail!(
                "BACKUP_AGE_RECIPIENTS is set but empty: name at least one age (age1...) or SSH public key, or unset it to back up unencrypted"
            );
        }
        for (i, e) in list.expose().split(',').enumerate() {
            entries.push((
                format!("entry {} of BACKUP_AGE_RECIPIENTS", i + 1),
                e.trim().to_string(),
            ));
        }
    }
    if let Some(file) = &config.recipients_file {
        if file.as_os_str().is_empty() {
            bail!(
                "BACKUP_AGE_RECIPIENTS_FILE is set but empty: name a file of recipients, or unset it"
            );
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            format_err!(
                "BACKUP_AGE_RECIPIENTS_FILE: cannot read {} ({e}); nothing was backed up",
                file.display()
            )
        })?;
        let before = entries.len();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            entries.push((
                format!("line {} of {}", n + 1, file.display()),
                line.to_string(),
            ));
        }
        if entries.len() == before {
            bail!(
                "BACKUP_AGE_RECIPIENTS_FILE: {} names no recipient (only comments or blank lines); nothing was backed up",
                file.display()
            );
        }
    }
    let mut keys: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
    let mut ids = Vec::new();
    for (at, text) in &entries {
        let (key, id) = parse_recipient(text).map_err(|why| format_err!("{at}: {why}"))?;
        keys.push(key);
        ids.push(id);
    }
    Ok(Some(Recipients { keys, ids }))
}

type Parsed = (Box<dyn age::Recipient + Send + Sync>, RecipientId);

/// One recipient; the error never quotes the text.
fn parse_recipient(text: &str) -> Result<Parsed, String> {
    let upper = text.to_ascii_uppercase();
    if upper.starts_with("AGE-SECRET-KEY-") || upper.starts_with("AGE-PLUGIN-") {
        return Err("it is an age secret key (AGE-SECRET-KEY-...), not a public key: put its public key (age1..., from `age-keygen -y`) here and keep the secret key out of the settings".into());
    }
    if text.contains("PRIVATE KEY") {
        return Err(
            "it is a private key, not a public key: give the public key (the .pub file) instead"
                .into(),
        );
    }
    if text.is_empty() {
        return Err("it is empty: remove the stray comma".into());
    }
    if text.starts_with("age1") {
        let key: age::x25519::Recipient = text
            .parse()
            .map_err(|_| "it is not a valid age public key (age1...)".to_string())?;
        let id = RecipientId {
            kind: "x25519".into(),
            fingerprint: format!("SHA256:{}", b64(&Sha256::digest(text.as_bytes()))),
        };
        return Ok((Box::new(key), id));
    }
    if text.starts_with("ssh-ed25519 ") || text.starts_with("ssh-rsa ") {
        // The key without its comment: what `ssh-keygen -l` fingerprints.
        let mut parts = text.split_whitespace();
        let (kind, blob) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let key: age::ssh::Recipient = format!("{kind} {blob}")
            .parse()
            .map_err(|_| format!("it is not a valid {kind} public key"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| format!("it is not a valid {kind} public key"))?;
        let id = RecipientId {
            kind: kind.into(),
            fingerprint: format!("SHA256:{}", b64(&Sha256::digest(&raw))),
        };
        return Ok((Box::new(key), id));
    }
    Err("it is not an age public key (age1...) or an SSH public key (ssh-ed25519, ssh-rsa)".into())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// The identities BACKUP_AGE_IDENTITY_FILE names; `None` when unset.
pub(crate) fn identities(config: &AgeConfig) -> anyhow::Result<Option<Identities>> {
    let Some(file) = &config.identity_file else {
        return Ok(None);
    };
    if file.as_os_str().is_empty() {
        bail!("BACKUP_AGE_IDENTITY_FILE is set but empty: name the file that holds the key");
    }
    read_identities(file).map(Some)
}

fn read_identities(file: &Path) -> anyhow::Result<Identities> {
    let cannot = |why: String| format_err!("BACKUP_AGE_IDENTITY_FILE: {} {why}", file.display());
    let bytes = std::fs::read(file).map_err(|e| cannot(format!("cannot be read ({e})")))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut keys: Vec<Box<dyn age::Identity>> = Vec::new();
    if text.contains("-----BEGIN") {
        let key = age::ssh::Identity::from_buffer(&bytes[..], Some(file.display().to_string()))
            .map_err(|_| cannot("is not an SSH private key age can use".into()))?;
        match key {
            age::ssh::Identity::Unencrypted(_) => keys.push(Box::new(key)),
            age::ssh::Identity::Encrypted(_) => {
                return Err(cannot("is a passphrase-protected SSH key, which cannot be used unattended: use an age identity (age-keygen), or a key without a passphrase kept in a secret store".into()));
            }
            age::ssh::Identity::Unsupported(_) => {
                return Err(cannot(
                    "is an SSH key of a kind age does not support (use ssh-ed25519 or ssh-rsa)"
                        .into(),
                ));
            }
        }
    } else {
        let parsed = age::IdentityFile::from_buffer(&bytes[..])
            .map_err(|_| cannot("holds no age identity (AGE-SECRET-KEY-... lines)".into()))?;
        for key in parsed
            .into_identities()
            .map_err(|_| cannot("holds an identity that cannot be used (a plugin's?)".into()))?
        {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(cannot("holds no identity".into()));
    }
    Ok(Identities {
        keys,
        file: file.to_path_buf(),
    })
}

/// How an age file begins (age-encryption.org/v1).
pub(crate) const HEADER_PREFIX: &[u8] = b"age-encryption.org/v1\n";

/// Whether a file's first bytes are an age file's header.
pub(crate) fn is_age(head: &[u8]) -> bool {
    head.starts_with(HEADER_PREFIX)
}

/// A writer that encrypts to `recipients` what it is given into `out`;
/// [`Sealing::finish`] ends the age stream and hands `out` back.
pub(crate) enum Sealing<W: Write> {
    Open(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealing<W> {
    pub(crate) fn new(out: W, recipients: Option<&Recipients>) -> io::Result<Sealing<W>> {
        let Some(r) = recipients else {
            return Ok(Sealing::Open(out));
        };
        let encryptor = age::Encryptor::with_recipients(
            r.keys.iter().map(|k| k.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        Ok(Sealing::Age(encryptor.wrap_output(out)?))
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Sealing::Open(w) => Ok(w),
            Sealing::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealing::Open(w) => w.write(buf),
            Sealing::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealing::Open(w) => w.flush(),
            Sealing::Age(w) => w.flush(),
        }
    }
}

/// Why an age file could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No identity was given.
    NoIdentity,
    /// None of the identities is a recipient of the file.
    WrongIdentity(PathBuf),
    /// The header is not a valid age header: the file is damaged.
    Header(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoIdentity => f.write_str(
                "it is encrypted with age: set BACKUP_AGE_IDENTITY_FILE to the file of a key it was encrypted to",
            ),
            OpenError::WrongIdentity(file) => write!(
                f,
                "no key in {} can decrypt it (BACKUP_AGE_IDENTITY_FILE): it was encrypted to other recipients (see .meta's encryption)",
                file.display()
            ),
            OpenError::Header(e) => write!(f, "its age header is damaged ({e})"),
        }
    }
}

/// Opens an age file: its header is read from `input`; with identities,
/// the plaintext stream (each 64 KiB chunk authenticated as it is read).
pub(crate) fn open<R: io::Read>(
    input: R,
    identities: Option<&Identities>,
) -> Result<age::stream::StreamReader<R>, OpenError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| OpenError::Header(e.to_string()))?;
    let Some(ids) = identities else {
        return Err(OpenError::NoIdentity);
    };
    decryptor
        .decrypt(ids.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::WrongIdentity(ids.file.clone()),
            e => OpenError::Header(e.to_string()),
        })
}

/// Reads an age header only (no identity): whether it parses.
pub(crate) fn check_header<R: io::Read>(input: R) -> Result<(), OpenError> {
    age::Decryptor::new(input)
        .map(drop)
        .map_err(|e| OpenError::Header(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Secret;

    fn config(recipients: &str) -> AgeConfig {
        AgeConfig {
            recipients: Some(Secret::new(recipients)),
            ..AgeConfig::default()
        }
    }

    #[test]
    fn recipients_fail_closed_and_never_quote_a_secret() {
        let secret = age::x25519::Identity::generate();
        let public = secret.to_public().to_string();
        let pasted = age::secrecy::ExposeSecret::expose_secret(&secret.to_string()).to_string();
        let ok = recipients(&config(&format!("{public}, {public}")))
            .unwrap()
            .unwrap();
        assert_eq!(ok.ids.len(), 2);
        assert!(ok.ids[0].fingerprint.starts_with("SHA256:"));
        for (list, says) in [
            ("", "set but empty"),
            (" ", "set but empty"),
            (
                &format!("{public},{pasted}") as &str,
                "entry 2 of BACKUP_AGE_RECIPIENTS: it is an age secret key",
            ),
            (
                "age1nonsense",
                "entry 1 of BACKUP_AGE_RECIPIENTS: it is not a valid age public key",
            ),
            (
                &format!("{public},"),
                "entry 2 of BACKUP_AGE_RECIPIENTS: it is empty",
            ),
            ("gpg:ABCDEF", "not an age public key"),
        ] {
            let err = recipients(&config(list)).unwrap_err().to_string();
            assert!(err.contains(says), "{list}: {err}");
            assert!(!err.contains(&pasted), "the secret key leaked: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let missing = AgeConfig {
            recipients_file: Some("/nonexistent/recipients.txt".into()),
            ..AgeConfig::default()
        };
        let err = recipients(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read /nonexistent/recipients.txt"),
            "{err}"
        );
        assert!(recipients(&AgeConfig::default()).unwrap().is_none());
    }

    #[test]
    fn a_sealed_stream_opens_with_its_key_only() {
        let key = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("key.txt");
        std::fs::write(
            &id_file,
            format!(
                "# created: now\n{}\n",
                age::secrecy::ExposeSecret::expose_secret(&key.to_string())
            ),
        )
        .unwrap();
        let r = recipients(&config(&key.to_public().to_string()))
            .unwrap()
            .unwrap();
        let mut w = Sealing::new(Vec::new(), Some(&r)).unwrap();
        w.write_all(b"the dump").unwrap();
        let sealed = w.finish().unwrap();
        assert!(is_age(&sealed));
        let ids = read_identities(&id_file).unwrap();
        assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
        let mut plain = Vec::new();
        io::Read::read_to_end(&mut open(&sealed[..], Some(&ids)).unwrap(), &mut plain).unwrap();
        assert_eq!(plain, b"the dump");
        assert!(matches!(
            open(&sealed[..], None),
            Err(OpenError::NoIdentity)
        ));
        let other = age::x25519::Identity::generate();
        std::fs::write(
            &id_file,
            age::secrecy::ExposeSecret::expose_secret(&other.to_string()).as_bytes(),
        )
        .unwrap();
        let wrong = read_identities(&id_file).unwrap();
        assert!(matches!(
            open(&sealed[..], Some(&wrong)),
            Err(OpenError::WrongIdentity(_))
        ));
        check_header(&sealed[..]).unwrap();
    }
}
