//! The off-site copy on S3-compatible storage (AWS S3, MinIO, Ceph, R2, ...).
//!
//! Requests are signed by `rusty-s3` (sans-IO: it builds presigned URLs,
//! nothing else) and sent by `ureq` (blocking, streaming bodies). Uploads
//! are multipart with one part in memory at a time, each part carrying its
//! `Content-MD5` (the server rejects a damaged part) and the completed
//! object's ETag compared with the one computed here (the object is exactly
//! the bytes sent); a store that does not use MD5 ETags (SSE-KMS) is
//! re-read and hashed instead. An upload that fails is aborted, so no object
//! appears: objects of a multipart upload only exist once it completes.
//!
//! Requests are retried with backoff on transient failures (connection
//! errors, 5xx, 429). Errors are one line and never contain a URL (a
//! presigned URL carries the access key id and a signature) or a secret.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use md5::{Digest as _, Md5};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    HeadBucket, HeadObject, ListObjectsV2, PutObject, UploadPart,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::core::config::{S3Config, S3Credentials, Secret, Settings};
use crate::services::catalog::{Entry, NewFile, Store, is_directory_backup, listed_members};
use crate::services::codec;

/// How long a presigned request stays valid (one part, one GET stream).
const SIGNED_FOR: Duration = Duration::from_secs(6 * 3600);
const ATTEMPTS: u32 = 4;

/// The keys: from the settings, or the profile of the shared credentials file.
pub(crate) fn credentials(config: &S3Config) -> anyhow::Result<(String, Secret, Option<Secret>)> {
    match &config.credentials {
        S3Credentials::Keys {
            access_key,
            secret_key,
            session_token,
        } => Ok((
            access_key.clone(),
            secret_key.clone(),
            session_token.clone(),
        )),
        S3Credentials::Profile { name, file } => {
            let file = file.clone().or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials"))
            });
            let text = file
                .as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .unwrap_or_default();
            profile_credentials(&text, name).ok_or_else(|| {
                anyhow::format_err!(
                    "BACKUP_S3_BUCKET is set but there are no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (profile '{name}' is not in {})",
                    file.map_or("~/.aws/credentials".into(), |f| f.display().to_string())
                )
            })
        }
    }
}

/// Pure: one profile of an AWS shared credentials file (INI).
pub(crate) fn profile_credentials(
    text: &str,
    profile: &str,
) -> Option<(String, Secret, Option<Secret>)> {
    let (mut key, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if !inside || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(Secret::new(v)),
                "aws_session_token" => token = Some(Secret::new(v)),
                _ => {}
            }
        }
    }
    Some((key?, secret?, token))
}

/// A failed request, as one line; callers branch on `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Error {
    pub(crate) kind: S3ErrorKind,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum S3ErrorKind {
    NotFound,
    NoBucket,
    /// The stored object is not the bytes sent.
    Corrupt,
    Denied,
    Unreachable,
    Other,
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for S3Error {}

impl From<S3Error> for io::Error {
    fn from(e: S3Error) -> io::Error {
        let kind = match e.kind {
            S3ErrorKind::NotFound => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Pure: the `<Code>` of an S3 error body.
pub(crate) fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end])
}

/// An S3-compatible bucket and prefix.
pub(crate) struct S3Store {
    pub(crate) settings: S3Config,
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store({})", self.settings.location())
    }
}

/// A response: status and body, whatever the status.
type Response = ureq::http::Response<ureq::Body>;

impl S3Store {
    /// The configured bucket, reachable and there: `what` names the option
    /// that needs it when none is configured.
    pub(crate) fn connect(settings: &Settings, what: &str) -> anyhow::Result<S3Store> {
        let Some(config) = settings.s3.clone() else {
            anyhow::bail!(
                "{what} needs BACKUP_S3_BUCKET: set it (and BACKUP_S3_ENDPOINT for a store other than AWS) in the environment or .env"
            );
        };
        let store = S3Store::new(config)?;
        store.check()?;
        Ok(store)
    }

    pub(crate) fn new(settings: S3Config) -> anyhow::Result<S3Store> {
        let endpoint = settings.endpoint.parse().map_err(|_| {
            anyhow::format_err!(
                "BACKUP_S3_ENDPOINT is not a valid URL: set it to the store's address"
            )
        })?;
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, settings.bucket.clone(), settings.region.clone())
            .map_err(|e| anyhow::format_err!("BACKUP_S3_BUCKET/BACKUP_S3_ENDPOINT: {e} (an IP address endpoint needs BACKUP_S3_PATH_STYLE=true)"))?;
        let (access_key, secret_key, session_token) = credentials(&settings)?;
        let credentials = match &session_token {
            Some(t) => Credentials::new_with_token(
                access_key,
                secret_key.expose().to_string(),
                t.expose().to_string(),
            ),
            None => Credentials::new(access_key, secret_key.expose().to_string()),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // A connection that dies while a body streams must not hang the run.
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(S3Store {
            settings,
            bucket,
            credentials,
            agent,
        })
    }

    pub(crate) fn location(&self) -> String {
        self.settings.location()
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.settings.prefix)
    }

    /// Sends a request, retrying transient failures with backoff. `what`
    /// names it in errors.
    fn send(
        &self,
        what: &str,
        request: impl FnMut() -> Result<Response, ureq::Error>,
    ) -> Result<Response, S3Error> {
        self.send_counting(what, request).0
    }

    /// [`S3Store::send`], and whether it took more than one attempt (so an
    /// earlier one may have reached the store, its answer lost).
    fn send_counting(
        &self,
        what: &str,
        mut request: impl FnMut() -> Result<Response, ureq::Error>,
    ) -> (Result<Response, S3Error>, bool) {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let result = request();
            let retry = match &result {
                Err(_) => true,
                Ok(r) => matches!(r.status().as_u16(), 500..=599 | 429),
            };
            if !retry || attempt == ATTEMPTS {
                let result = match result {
                    Ok(r) if r.status().is_success() => Ok(r),
                    Ok(r) => Err(self.status_error(what, r)),
                    Err(e) => Err(self.transport_error(what, &e)),
                };
                return (result, attempt > 1);
            }
            std::thread::sleep(delay);
            delay *= 2;
            attempt += 1;
        }
    }

    fn transport_error(&self, what: &str, e: &ureq::Error) -> S3Error {
        let detail = match e {
            ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
                "connection refused".to_string()
            }
            ureq::Error::Io(io) => io.kind().to_string(),
            ureq::Error::Timeout(_) => "timed out".into(),
            ureq::Error::HostNotFound => "unknown host".into(),
            ureq::Error::ConnectionFailed => "connection failed".into(),
            _ => "the request failed".into(),
        };
        S3Error {
            kind: S3ErrorKind::Unreachable,
            message: format!(
                "{what}: cannot reach the S3 store at {} ({detail}, after {ATTEMPTS} attempts): check BACKUP_S3_ENDPOINT and the network",
                self.settings.endpoint
            ),
        }
    }

    fn status_error(&self, what: &str, mut r: Response) -> S3Error {
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        let code = error_code(&body).unwrap_or("");
        let (kind, advice) = match (status, code) {
            (_, "NoSuchBucket") => (
                S3ErrorKind::NoBucket,
                format!(
                    "bucket '{}' does not exist at {}: create it, or fix BACKUP_S3_BUCKET",
                    self.settings.bucket, self.settings.endpoint
                ),
            ),
            (404, _) | (_, "NoSuchKey") => (S3ErrorKind::NotFound, "no such object".to_string()),
            (401 | 403, c) => (
                S3ErrorKind::Denied,
                format!(
                    "the S3 store refused the credentials ({}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's permissions",
                    if c.is_empty() { "access denied" } else { c }
                ),
            ),
            (s, c) => (
                S3ErrorKind::Other,
                format!(
                    "HTTP {s}{}",
                    if c.is_empty() {
                        String::new()
                    } else {
                        format!(" {c}")
                    }
                ),
            ),
        };
        S3Error {
            kind,
            message: format!("{what}: {advice}"),
        }
    }

    /// Checks the bucket is there and the credentials work: one clear line if not.
    pub(crate) fn check(&self) -> Result<(), S3Error> {
        let what = format!("checking {}", self.location());
        self.send(&what, || {
            let url = HeadBucket::new(&self.bucket, Some(&self.credentials)).sign(SIGNED_FOR);
            self.agent.head(url.as_str()).call()
        })
        .map(drop)
        .map_err(|mut e| {
            // HEAD has no body: a 404 on the bucket is a missing bucket.
            if e.kind == S3ErrorKind::NotFound {
                e = S3Error {
                    kind: S3ErrorKind::NoBucket,
                    message: format!(
                        "{what}: bucket '{}' does not exist at {}: create it, or fix BACKUP_S3_BUCKET",
                        self.settings.bucket, self.settings.endpoint
                    ),
                };
            }
            e
        })
    }

    /// The objects directly under `under` (`""`, or a directory backup's
    /// `name.dir/`), named from there, with their sizes; and the
    /// "directories" there (common prefixes, without their `/`).
    #[allow(clippy::type_complexity)]
    pub(crate) fn list_in(
        &self,
        under: &str,
    ) -> Result<(Vec<(String, u64)>, Vec<String>), S3Error> {
        let mut out = Vec::new();
        let mut dirs = Vec::new();
        let mut token: Option<String> = None;
        let prefix = format!("{}{under}", self.settings.prefix);
        loop {
            let what = format!("listing {}", self.location());
            let mut r = self.send(&what, || {
                let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
                action.with_prefix(prefix.as_str());
                action.with_delimiter("/");
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(SIGNED_FOR);
                self.agent.get(url.as_str()).call()
            })?;
            let body = r
                .body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_string()
                .map_err(|e| self.transport_error(&what, &e))?;
            let parsed = ListObjectsV2::parse_response(&body).map_err(|_| S3Error {
                kind: S3ErrorKind::Other,
                message: format!("{what}: the store's answer is not an S3 object listing"),
            })?;
            for c in parsed.contents {
                if let Some(name) = c.key.strip_prefix(&prefix)
                    && !name.is_empty()
                    && !name.contains('/')
                {
                    out.push((name.to_string(), c.size.unwrap_or(0)));
                }
            }
            for p in parsed.common_prefixes {
                if let Some(name) = p
                    .prefix
                    .strip_prefix(&prefix)
                    .and_then(|n| n.strip_suffix('/'))
                    && !name.is_empty()
                    && !name.contains('/')
                {
                    dirs.push(name.to_string());
                }
            }
            match parsed.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok((out, dirs)),
            }
        }
    }

    /// A small object, whole.
    pub(crate) fn get_bytes(&self, name: &str) -> Result<Vec<u8>, S3Error> {
        let what = format!("reading {name} from {}", self.location());
        let mut r = self.get(&what, name)?;
        r.body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| self.transport_error(&what, &e))
    }

    fn get(&self, what: &str, name: &str) -> Result<Response, S3Error> {
        let key = self.key(name);
        self.send(what, || {
            let url = GetObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
            self.agent.get(url.as_str()).call()
        })
    }

    /// An object as a stream (the bytes are not held in memory).
    pub(crate) fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, S3Error> {
        let what = format!("downloading {name} from {}", self.location());
        let r = self.get(&what, name)?;
        Ok(Box::new(r.into_body().into_reader()))
    }

    /// A small object, in one PUT with its MD5.
    pub(crate) fn put_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), S3Error> {
        let key = self.key(name);
        let md5 = base64(&Md5::digest(bytes));
        let what = format!("uploading {name} to {}", self.location());
        self.send(&what, || {
            let mut action = PutObject::new(&self.bucket, Some(&self.credentials), &key);
            action.headers_mut().insert("content-md5", md5.clone());
            let url = action.sign(SIGNED_FOR);
            self.agent
                .put(url.as_str())
                .header("content-md5", &md5)
                .send(bytes)
        })
        .map(drop)
    }

    pub(crate) fn delete(&self, name: &str) -> Result<(), S3Error> {
        let key = self.key(name);
        let what = format!("deleting {name} from {}", self.location());
        self.send(&what, || {
            let url =
                DeleteObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
            self.agent.delete(url.as_str()).call()
        })
        .map(drop)
    }

    /// Aborts the multipart uploads of `key` other than `keep` (ListMultipartUploads:
    /// a GET of the bucket with `?uploads`, signed as a GetObject of the empty key).
    fn abort_others(&self, key: &str, keep: &str) {
        let what = format!("listing the uploads in {}", self.location());
        let listed = self.send(&what, || {
            let mut action = GetObject::new(&self.bucket, Some(&self.credentials), "");
            action.query_mut().insert("uploads", "");
            action.query_mut().insert("prefix", key);
            self.agent.get(action.sign(SIGNED_FOR).as_str()).call()
        });
        let Ok(mut r) = listed else { return };
        let body = r.body_mut().read_to_string().unwrap_or_default();
        for upload in body.split("<Upload>").skip(1) {
            let field = |name: &str| {
                let start = upload.find(&format!("<{name}>"))? + name.len() + 2;
                let end = upload[start..].find(&format!("</{name}>"))? + start;
                Some(upload[start..end].to_string())
            };
            if let (Some(k), Some(id)) = (field("Key"), field("UploadId"))
                && k == key
                && id != keep
            {
                let _ = self.send(&what, || {
                    let url =
                        AbortMultipartUpload::new(&self.bucket, Some(&self.credentials), key, &id)
                            .sign(SIGNED_FOR);
                    self.agent.delete(url.as_str()).call()
                });
            }
        }
    }

    /// The ETag of an object, if it is there.
    fn etag(&self, name: &str) -> Option<String> {
        let key = self.key(name);
        let r = self
            .send("checking an object", || {
                let url =
                    HeadObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
                self.agent.head(url.as_str()).call()
            })
            .ok()?;
        r.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|e| e.trim_matches('"').to_string())
    }

    /// Starts a multipart upload of `name`: write into it, then `complete`.
    /// Dropped without `complete`, it is aborted.
    pub(crate) fn upload(&self, name: &str) -> Result<Upload<'_>, S3Error> {
        let key = self.key(name);
        let what = format!("uploading {name} to {}", self.location());
        let (r, retried) = self.send_counting(&what, || {
            let url = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            self.agent.post(url.as_str()).send_empty()
        });
        let mut r = r?;
        let body = r
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport_error(&what, &e))?;
        let upload_id = CreateMultipartUpload::parse_response(&body)
            .map_err(|_| S3Error {
                kind: S3ErrorKind::Other,
                message: format!("{what}: the store did not start a multipart upload"),
            })?
            .upload_id()
            .to_string();
        if retried {
            // An earlier attempt may have started an upload whose answer was lost.
            self.abort_others(&key, &upload_id);
        }
        Ok(Upload {
            store: self,
            name: name.to_string(),
            key,
            upload_id,
            what,
            buffer: Vec::with_capacity(self.settings.part_size),
            etags: Vec::new(),
            part_md5s: Vec::new(),
            sent: 0,
            done: false,
        })
    }
}

impl Store for S3Store {
    fn location(&self) -> String {
        S3Store::location(self)
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        let (files, dirs) = self.list_in("")?;
        let mut out: Vec<Entry> = files
            .into_iter()
            .map(|(name, size)| Entry::file(name, size))
            .collect();
        // A directory backup is the objects under `name.dir/`: its size is theirs.
        for dir in dirs.into_iter().filter(|d| is_directory_backup(d)) {
            let size = self.members(&dir)?.iter().map(|e| e.size).sum();
            out.push(Entry {
                name: dir,
                size,
                is_file: false,
                is_dir: true,
            });
        }
        Ok(out)
    }

    fn members(&self, dir: &str) -> io::Result<Vec<Entry>> {
        Ok(self
            .list_in(&format!("{dir}/"))?
            .0
            .into_iter()
            .map(|(name, size)| Entry::file(name, size))
            .collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        Ok(self.get_bytes(name)?)
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(S3Store::open(self, name)?)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        if is_directory_backup(name) {
            for member in listed_members(self, name)? {
                self.delete(&format!("{name}/{}", member.name))?;
            }
            return Ok(());
        }
        Ok(self.delete(name)?)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        Ok(self.put_bytes(name, bytes)?)
    }

    /// S3 has no exclusive create here: the name was checked free when the run chose it.
    fn put_new(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        Ok(self.put_bytes(name, bytes)?)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn NewFile + '_>> {
        Ok(Box::new(self.upload(name)?))
    }
}

impl NewFile for Upload<'_> {
    /// Completes the upload and checks the object is the bytes sent (its
    /// ETag, or a re-read against the SHA-256); an object that fails the
    /// check is deleted.
    fn commit(self: Box<Self>, sha256: &str) -> io::Result<()> {
        let store = self.store;
        let name = self.name.clone();
        let checked = match (*self).complete() {
            Ok(checked) => checked,
            Err(e) => {
                if e.kind == S3ErrorKind::Corrupt {
                    // A copy that failed its check must not stay for anyone to restore.
                    let _ = store.delete(&name);
                }
                return Err(e.into());
            }
        };
        if !checked {
            let read = S3Store::open(store, &name)
                .map_err(io::Error::from)
                .and_then(codec::hash_all);
            if !read.is_ok_and(|(actual, _)| actual.eq_ignore_ascii_case(sha256)) {
                let _ = store.delete(&name);
                return Err(io::Error::other(format!(
                    "{name}: the uploaded object does not read back as the bytes sent; it was removed"
                )));
            }
        }
        Ok(())
    }
}

/// A multipart upload in progress: an `io::Write` holding at most one part.
pub(crate) struct Upload<'a> {
    store: &'a S3Store,
    pub(crate) name: String,
    key: String,
    upload_id: String,
    what: String,
    buffer: Vec<u8>,
    etags: Vec<String>,
    part_md5s: Vec<[u8; 16]>,
    /// Bytes uploaded in completed parts.
    pub(crate) sent: u64,
    done: bool,
}

impl Upload<'_> {
    fn send_part(&mut self) -> Result<(), S3Error> {
        let number = u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| S3Error {
                kind: S3ErrorKind::Other,
                message: format!(
                    "{}: more than 10000 parts: raise BACKUP_S3_PART_SIZE_MIB",
                    self.what
                ),
            })?;
        let digest: [u8; 16] = Md5::digest(&self.buffer).into();
        let md5 = base64(&digest);
        let s = self.store;
        let (key, id, body) = (&self.key, &self.upload_id, &self.buffer);
        let mut r = s.send(&self.what, || {
            let mut action = UploadPart::new(&s.bucket, Some(&s.credentials), key, number, id);
            action.headers_mut().insert("content-md5", md5.clone());
            let url = action.sign(SIGNED_FOR);
            s.agent
                .put(url.as_str())
                .header("content-md5", &md5)
                .send(&body[..])
        })?;
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let _ = r.body_mut().read_to_string();
        self.etags.push(etag);
        self.part_md5s.push(digest);
        self.sent += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Sends what is buffered and completes the upload; checks the object's
    /// ETag against the parts' MD5s. Returns whether that check applied
    /// (false: the store's ETags are not MD5-based, and the caller re-reads).
    pub(crate) fn complete(mut self) -> Result<bool, S3Error> {
        if !self.buffer.is_empty() || self.etags.is_empty() {
            self.send_part()?;
        }
        let s = self.store;
        let body = CompleteMultipartUpload::new(
            &s.bucket,
            Some(&s.credentials),
            &self.key,
            &self.upload_id,
            self.etags.iter().map(String::as_str),
        )
        .body();
        let (key, id, etags) = (&self.key, &self.upload_id, &self.etags);
        let expected = multipart_etag(&self.part_md5s);
        let (r, retried) = s.send_counting(&self.what, || {
            let url = CompleteMultipartUpload::new(
                &s.bucket,
                Some(&s.credentials),
                key,
                id,
                etags.iter().map(String::as_str),
            )
            .sign(SIGNED_FOR);
            s.agent.post(url.as_str()).send(body.as_str())
        });
        let mut r = match r {
            Ok(r) => r,
            // An earlier attempt may have completed it, its answer lost: the
            // upload is gone then (stores say 404 or 403), and the object says so.
            Err(e) if retried && matches!(e.kind, S3ErrorKind::NotFound | S3ErrorKind::Denied) => {
                return match s.etag(&self.name) {
                    Some(etag) => {
                        self.done = true;
                        Ok(etag == expected)
                    }
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let answer = r.body_mut().read_to_string().unwrap_or_default();
        // A 200 can still carry an error (the store failed while completing).
        if let Some(code) = error_code(&answer) {
            return Err(S3Error {
                kind: S3ErrorKind::Other,
                message: format!("{}: completing the upload failed ({code})", self.what),
            });
        }
        self.done = true;
        let got = rusty_s3::actions::CompleteMultipartUploadResponse::parse(&answer)
            .map(|c| c.etag().trim_matches('"').to_string())
            .unwrap_or_default();
        if got == expected {
            return Ok(true);
        }
        if got.len() == expected.len() && got.contains('-') {
            return Err(S3Error {
                kind: S3ErrorKind::Corrupt,
                message: format!(
                    "{}: the stored object differs from the bytes sent (ETag {got}, expected {expected})",
                    self.what
                ),
            });
        }
        Ok(false)
    }

    fn abort(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let s = self.store;
        let _ = s.send(&self.what, || {
            let url = AbortMultipartUpload::new(
                &s.bucket,
                Some(&s.credentials),
                &self.key,
                &self.upload_id,
            )
            .sign(SIGNED_FOR);
            s.agent.delete(url.as_str()).call()
        });
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.abort();
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.store.settings.part_size - self.buffer.len();
        let n = room.min(data.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == self.store.settings.part_size {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pure: the ETag S3 gives a multipart object: the MD5 of the parts' MD5s, `-` and the count.
pub(crate) fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut all = Md5::new();
    for d in part_md5s {
        all.update(d);
    }
    let digest: [u8; 16] = all.finalize().into();
    format!("{:032x}-{}", u128::from_be_bytes(digest), part_md5s.len())
}

/// Standard base64 with padding (for `Content-MD5`).
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_is_standard_base64() {
        assert_eq!(base64(&Md5::digest(b"")), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn multipart_etags() {
        let one: [u8; 16] = Md5::digest(b"hello").into();
        // md5(md5("hello")) with one part, as S3 reports it.
        assert_eq!(
            multipart_etag(&[one]),
            format!("{}-1", {
                format!("{:032x}", u128::from_be_bytes(Md5::digest(one).into()))
            })
        );
        assert!(multipart_etag(&[one, one]).ends_with("-2"));
    }

    #[test]
    fn error_codes_and_profiles() {
        assert_eq!(
            error_code(
                "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>"
            ),
            Some("NoSuchBucket")
        );
        assert_eq!(error_code("<html>"), None);
        let ini = "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = s1\n\n[backup]\naws_access_key_id=AKB\naws_secret_access_key=s2\naws_session_token=t\n";
        let (k, s, t) = profile_credentials(ini, "backup").unwrap();
        assert_eq!(
            (k.as_str(), s.expose(), t.unwrap().expose().to_string()),
            ("AKB", "s2", "t".to_string())
        );
        let (k, _, t) = profile_credentials(ini, "default").unwrap();
        assert_eq!((k.as_str(), t.is_none()), ("AKDEF", true));
        assert!(profile_credentials(ini, "nope").is_none());
    }
}
