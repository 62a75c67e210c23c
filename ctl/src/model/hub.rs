//! The Hugging Face Hub as `r1ctl model pull` talks to it: where it is (`HF_ENDPOINT`), where its
//! cache lives (`HF_HUB_CACHE`, else `HF_HOME/hub`), which token to send (`HF_TOKEN`, else the
//! token file), a repository's file list with sizes and checksums, and one file fetched into the
//! cache, resumed from its `.part` and checked before it is used.
//!
//! Transfers go through `hf-hub`'s blocking client (the cache layout, `.part` resume, locks).
//! It lacks three things this file adds on its side: `HF_TOKEN` (it reads only the token file),
//! the listing with checksums (`?blobs=true`), and any checksum at all: a fetched file is hashed
//! here (SHA-256 for LFS files, the git blob id for the others) and removed from the cache when
//! it does not match, so a bad file is never left looking good.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The Hub's address when `HF_ENDPOINT` is unset.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Why a pull failed; every message names the repository, file or endpoint it is about.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The endpoint could not be reached at all (DNS, refused connection, TLS).
    #[error("cannot reach the Hub at {endpoint} ({detail}); check the network, or HF_ENDPOINT if it is set")]
    Unreachable {
        /// The endpoint tried (HF_ENDPOINT or the default), so a wrong mirror is visible.
        endpoint: String,
        /// What the connection said (the URL and the system's error).
        detail: String,
    },
    /// No such repository (or a private one the token cannot see).
    #[error("{repo}: no such model repository on {endpoint}{hint}")]
    RepoNotFound {
        /// ORG/NAME as given.
        repo: String,
        /// The endpoint asked.
        endpoint: String,
        /// What a token would change, when none or the wrong one was sent.
        hint: String,
    },
    /// The revision (branch, tag or commit) is not in the repository.
    #[error("{repo}: no revision `{revision}` on {endpoint}")]
    RevisionNotFound {
        /// ORG/NAME as given.
        repo: String,
        /// `--revision` as given.
        revision: String,
        /// The endpoint asked.
        endpoint: String,
    },
    /// The repository needs a token, or a token with access.
    #[error("{repo}: {what}")]
    Denied {
        /// ORG/NAME as given.
        repo: String,
        /// Why, and what to do: accept the terms, set HF_TOKEN.
        what: String,
    },
    /// Any other HTTP answer that is not a success.
    #[error("{url}: HTTP {status}{message}")]
    Http {
        /// The URL asked.
        url: String,
        /// Its status.
        status: u16,
        /// `: X-Error-Message` when the Hub sent one.
        message: String,
    },
    /// The connection broke during a transfer; the bytes received stay in the `.part` file.
    #[error("{repo}: the transfer of {file} broke after {kept} of {size} bytes ({detail}); run the same command again to resume from there")]
    Interrupted {
        /// ORG/NAME as given.
        repo: String,
        /// The file whose transfer broke.
        file: String,
        /// Bytes kept in its `.part`, where the next pull resumes.
        kept: u64,
        /// Its full size, as listed.
        size: u64,
        /// What the connection said.
        detail: String,
    },
    /// A fetched file is not the file the Hub listed: it was removed from the cache.
    #[error("{repo}: {file}: checksum mismatch: the Hub lists {algorithm} {expected}, the file received ({bytes} bytes) has {algorithm} {actual}; it was removed from the cache, run the command again to fetch it anew")]
    Checksum {
        /// ORG/NAME as given.
        repo: String,
        /// The file that failed.
        file: String,
        /// `size`, `sha256` or `git-sha1`: the first check that failed.
        algorithm: &'static str,
        /// What the listing says.
        expected: String,
        /// What the bytes received give.
        actual: String,
        /// How many bytes were received.
        bytes: u64,
    },
    /// The endpoint answered, but not as the Hub does (a missing header, a listing that is not JSON).
    #[error("{endpoint}: {detail} (is HF_ENDPOINT a Hugging Face Hub?)")]
    NotAHub {
        /// The endpoint asked.
        endpoint: String,
        /// What was wrong with its answer.
        detail: String,
    },
    /// Reading or writing the cache.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Where the token sent to the Hub came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The `HF_TOKEN` environment variable.
    Env,
    /// A token file (`HF_TOKEN_PATH`, else `HF_HOME/token`, as `huggingface-cli login` writes it).
    File(PathBuf),
}

/// One file of a repository, as the Hub's listing gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoFile {
    /// Path inside the repository.
    #[serde(rename = "rfilename")]
    pub name: String,
    /// Size in bytes (for an LFS file, the file's, not its pointer's).
    #[serde(default)]
    pub size: Option<u64>,
    /// The git blob id (SHA-1 of `blob LEN\0` and the content) of a file stored in git.
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
    /// Set for a file stored in LFS: its SHA-256 and size.
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

/// The LFS part of a listing entry.
#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
}

impl RepoFile {
    /// The size the file must have, when the listing gives it.
    pub fn expected_size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// A repository at one revision: the commit it resolved to and its files.
#[derive(Debug, Deserialize)]
pub struct Listing {
    /// The commit the revision points at; every file is fetched at this commit.
    pub sha: String,
    /// The files.
    pub siblings: Vec<RepoFile>,
}

impl Listing {
    /// The entry for `name`, if the repository has it.
    pub fn file(&self, name: &str) -> Option<&RepoFile> {
        self.siblings.iter().find(|f| f.name == name)
    }
}

/// A file present and checked in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The blob in the cache (`…/blobs/ETAG`), the file's bytes.
    pub blob: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes transferred by this pull (0 when it was already cached).
    pub downloaded: u64,
    /// Bytes a previous, interrupted pull had left in the `.part` file, now resumed.
    pub resumed_from: u64,
    /// `sha256:HEX` or `git-sha1:HEX`, what the file was checked against; None when the
    /// listing gave no checksum (a mirror without `?blobs=true`).
    pub checksum: Option<String>,
}

/// A connection to the Hub and its local cache.
pub struct Hub {
    /// hf-hub's blocking client: transfers, `.part` resume, the cache layout.
    api: Api,
    /// The endpoint, without a trailing slash.
    pub endpoint: String,
    /// The `hub` cache folder (holding `models--ORG--NAME`).
    pub cache_dir: PathBuf,
    /// Where the token came from, if one is sent.
    pub token: Option<TokenSource>,
}

impl Hub {
    /// The Hub as the environment describes it: `HF_ENDPOINT`, `HF_HUB_CACHE` or `HF_HOME`,
    /// `HF_TOKEN` or the token file; `progress` draws hf-hub's per-file progress bar.
    pub fn from_env(progress: bool) -> Result<Hub, HubError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
            var("XDG_CACHE_HOME")
                .map(|d| PathBuf::from(d).join("huggingface"))
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))
        });
        let Some(home) = home else {
            return Err(HubError::Io {
                path: PathBuf::from("HF_HOME"),
                source: std::io::Error::other("neither HF_HOME nor HOME is set"),
            });
        };
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("token"));
        let (token, source) = match var("HF_TOKEN") {
            Some(t) => (Some(t.trim().to_string()), Some(TokenSource::Env)),
            None => match std::fs::read_to_string(&token_file) {
                Ok(t) if !t.trim().is_empty() => (
                    Some(t.trim().to_string()),
                    Some(TokenSource::File(token_file)),
                ),
                _ => (None, None),
            },
        };
        let api = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
            .with_endpoint(endpoint.clone())
            .with_token(token)
            .with_progress(progress)
            .with_user_agent("r1ctl", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Unreachable {
                endpoint: endpoint.clone(),
                detail: e.to_string(),
            })?;
        Ok(Hub {
            api,
            endpoint,
            cache_dir,
            token: source,
        })
    }

    /// The files of model repository `repo` at `revision`, with sizes and checksums
    /// (`GET /api/models/{repo}/revision/{revision}?blobs=true`).
    pub fn listing(&self, repo: &str, revision: &str) -> Result<Listing, HubError> {
        let handle = self.api.repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        let request = handle.info_request().query("blobs", "true");
        let url = request.url().to_string();
        let response = request
            .call()
            .map_err(|e| self.request_error(e, repo, revision, &url))?;
        let text = response.into_string().map_err(|e| HubError::NotAHub {
            endpoint: self.endpoint.clone(),
            detail: format!("reading {url}: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| HubError::NotAHub {
            endpoint: self.endpoint.clone(),
            detail: format!("{url} is not a model listing: {e}"),
        })
    }

    /// Fetches `file` of `repo` at `commit` into the cache (nothing when it is there already,
    /// the rest of it when a `.part` is left), then checks its size and checksum against the
    /// listing. A file that fails the check is removed from the cache.
    pub fn fetch(&self, repo: &str, commit: &str, file: &RepoFile) -> Result<Fetched, HubError> {
        let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, commit.to_string());
        let blobs = self.cache_dir.join(hf_repo.folder_name()).join("blobs");
        let cached = Cache::new(self.cache_dir.clone())
            .repo(hf_repo.clone())
            .get(&file.name);
        // The `.part` a broken transfer left: hf-hub names it after the ETag, which the Hub
        // sets to the LFS SHA-256 or the git blob id.
        let etag = file
            .lfs
            .as_ref()
            .map(|l| l.sha256.clone())
            .or_else(|| file.blob_id.clone());
        let part_len = |etag: &Option<String>| {
            etag.as_ref()
                .and_then(|e| std::fs::metadata(blobs.join(format!("{e}.part"))).ok())
                .map_or(0, |m| m.len())
        };
        // A blob another commit already brought (a new `main` whose weights did not change) is
        // linked into this commit's snapshot rather than fetched again; the check below reads it.
        let from_cache = cached.is_some() || self.adopt_blob(&hf_repo, commit, file, &etag)?;
        let resumed_from = if from_cache { 0 } else { part_len(&etag) };
        let api_repo = self.api.repo(hf_repo);
        let pointer = match api_repo.get(&file.name) {
            Ok(p) => p,
            Err(e) => {
                let kept = part_len(&etag);
                return Err(self.fetch_error(e, repo, commit, file, kept));
            }
        };
        let blob = std::fs::canonicalize(&pointer).map_err(|source| HubError::Io {
            path: pointer.clone(),
            source,
        })?;
        let bytes = std::fs::metadata(&blob)
            .map_err(|source| HubError::Io {
                path: blob.clone(),
                source,
            })?
            .len();
        let checksum = match verify(&blob, file, bytes) {
            Ok(c) => c,
            Err(mismatch) => {
                // Neither the blob nor the snapshot link may outlive a failed check.
                let _ = std::fs::remove_file(&pointer);
                let _ = std::fs::remove_file(&blob);
                return Err(HubError::Checksum {
                    repo: repo.to_string(),
                    file: file.name.clone(),
                    algorithm: mismatch.algorithm,
                    expected: mismatch.expected,
                    actual: mismatch.actual,
                    bytes,
                });
            }
        };
        let downloaded = if from_cache {
            0
        } else {
            bytes.saturating_sub(resumed_from)
        };
        Ok(Fetched {
            blob,
            bytes,
            downloaded,
            resumed_from,
            checksum,
        })
    }

    /// Links `blobs/ETAG`, when the cache has it, into the snapshot of `commit` as `file` (a
    /// relative symlink, as hf-hub and huggingface_hub make them) and records the commit, so
    /// hf-hub finds it without a transfer. Whether it did.
    fn adopt_blob(
        &self,
        hf_repo: &Repo,
        commit: &str,
        file: &RepoFile,
        etag: &Option<String>,
    ) -> Result<bool, HubError> {
        let Some(etag) = etag else {
            return Ok(false);
        };
        let folder = self.cache_dir.join(hf_repo.folder_name());
        if !folder.join("blobs").join(etag).is_file() {
            return Ok(false);
        }
        let pointer = folder.join("snapshots").join(commit).join(&file.name);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HubError::Io { path, source }
        };
        if let Some(parent) = pointer.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let up = "../".repeat(2 + file.name.matches('/').count());
        let _ = std::fs::remove_file(&pointer);
        std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &pointer).map_err(io(&pointer))?;
        Cache::new(self.cache_dir.clone())
            .repo(hf_repo.clone())
            .create_ref(commit)
            .map_err(io(&folder.join("refs")))?;
        Ok(true)
    }

    /// Records that `revision` of `repo` is `commit` in the cache (`refs/REVISION`), as the
    /// Hub's own client does, so other tools find the snapshot under the name asked for.
    pub fn record_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<(), HubError> {
        let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
        let refs = self
            .cache_dir
            .join(hf_repo.folder_name())
            .join("refs")
            .join(revision);
        Cache::new(self.cache_dir.clone())
            .repo(hf_repo)
            .create_ref(commit)
            .map_err(|source| HubError::Io { path: refs, source })
    }

    /// Says what a failed request means for the user.
    fn request_error(&self, e: ureq::Error, repo: &str, revision: &str, url: &str) -> HubError {
        match e {
            ureq::Error::Status(status, response) => {
                let code = response.header("x-error-code").unwrap_or("").to_string();
                let message = response
                    .header("x-error-message")
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                self.status_error(status, &code, &message, repo, revision, url)
            }
            ureq::Error::Transport(t) => HubError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: t.to_string(),
            },
        }
    }

    /// An HTTP error status with the Hub's `X-Error-Code`, in words.
    fn status_error(
        &self,
        status: u16,
        code: &str,
        message: &str,
        repo: &str,
        revision: &str,
        url: &str,
    ) -> HubError {
        let token_hint = match &self.token {
            None => "; no token was sent".to_string(),
            Some(TokenSource::Env) => "; the token in HF_TOKEN was sent".to_string(),
            Some(TokenSource::File(p)) => format!("; the token in {} was sent", p.display()),
        };
        match (status, code) {
            (_, "RevisionNotFound") => HubError::RevisionNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                endpoint: self.endpoint.clone(),
            },
            (_, "RepoNotFound") | (404, "") => HubError::RepoNotFound {
                repo: repo.to_string(),
                endpoint: self.endpoint.clone(),
                // The Hub answers 401 for a private repository it will not admit exists.
                hint: if status == 401 || self.token.is_none() {
                    format!(" (or it is private: set HF_TOKEN to a token that may read it{token_hint})")
                } else {
                    String::new()
                },
            },
            (401 | 403, "GatedRepo") => HubError::Denied {
                repo: repo.to_string(),
                what: format!(
                    "gated: accept its terms at {}/{repo} with your account, then set HF_TOKEN to a \
                     token of that account (HTTP {status}{message}{token_hint})",
                    self.endpoint
                ),
            },
            (401, _) => HubError::Denied {
                repo: repo.to_string(),
                what: format!(
                    "the Hub asks for a token (HTTP 401{message}{token_hint}); set HF_TOKEN to a \
                     token with read access (or log in with `huggingface-cli login`)"
                ),
            },
            (403, _) => HubError::Denied {
                repo: repo.to_string(),
                what: format!(
                    "access refused (HTTP 403{message}{token_hint}); the token's account needs \
                     read access to {}/{repo}",
                    self.endpoint
                ),
            },
            _ => HubError::Http {
                url: url.to_string(),
                status,
                message: message.to_string(),
            },
        }
    }

    /// An hf-hub error while fetching `file`, in words.
    fn fetch_error(
        &self,
        e: ApiError,
        repo: &str,
        commit: &str,
        file: &RepoFile,
        kept: u64,
    ) -> HubError {
        let url = format!("{}/{repo}/resolve/{commit}/{}", self.endpoint, file.name);
        match e {
            ApiError::RequestError(e) => match *e {
                // A transfer that broke after it began keeps its bytes for the next pull.
                ureq::Error::Transport(t) if kept > 0 => self.interrupted(repo, file, kept, t),
                other => self.request_error(other, repo, commit, &url),
            },
            // A cut connection surfaces as an I/O error from the body copy; the `.part` keeps
            // what arrived.
            ApiError::IoError(io) if io.kind() != std::io::ErrorKind::PermissionDenied => {
                self.interrupted(repo, file, kept, io)
            }
            ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => HubError::NotAHub {
                endpoint: self.endpoint.clone(),
                detail: format!("{url}: the answer has no valid {h} header"),
            },
            ApiError::LockAcquisition(path) => HubError::Io {
                path,
                source: std::io::Error::other(
                    "another pull is fetching this file (its lock is held)",
                ),
            },
            other => HubError::Io {
                path: self.cache_dir.clone(),
                source: std::io::Error::other(format!("{}: {other}", file.name)),
            },
        }
    }

    /// A transfer that stopped part-way.
    fn interrupted(
        &self,
        repo: &str,
        file: &RepoFile,
        kept: u64,
        detail: impl std::fmt::Display,
    ) -> HubError {
        HubError::Interrupted {
            repo: repo.to_string(),
            file: file.name.clone(),
            kept,
            size: file.expected_size().unwrap_or(0),
            detail: detail.to_string(),
        }
    }
}

/// What a checksum mismatch found.
struct Mismatch {
    algorithm: &'static str,
    expected: String,
    actual: String,
}

/// Checks `path` (`bytes` long) against the listing entry: size, then SHA-256 (LFS) or the git
/// blob id. Returns what it was checked against, or None when the listing gives no checksum.
fn verify(path: &Path, file: &RepoFile, bytes: u64) -> Result<Option<String>, Mismatch> {
    if let Some(size) = file.expected_size() {
        if size != bytes {
            return Err(Mismatch {
                algorithm: "size",
                expected: size.to_string(),
                actual: bytes.to_string(),
            });
        }
    }
    let (algorithm, expected, actual) = if let Some(lfs) = &file.lfs {
        ("sha256", &lfs.sha256, digest_file::<Sha256>(path, b""))
    } else if let Some(id) = &file.blob_id {
        // A git blob id hashes a header, then the content.
        let header = format!("blob {bytes}\0");
        ("git-sha1", id, digest_file::<Sha1>(path, header.as_bytes()))
    } else {
        return Ok(None);
    };
    let actual = actual.unwrap_or_else(|e| format!("(unreadable: {e})"));
    if actual.eq_ignore_ascii_case(expected) {
        Ok(Some(format!("{algorithm}:{actual}")))
    } else {
        Err(Mismatch {
            algorithm,
            expected: expected.clone(),
            actual,
        })
    }
}

/// The hex digest of `prefix` followed by the bytes of `path`, read in 1 MiB blocks.
fn digest_file<D: Digest>(path: &Path, prefix: &[u8]) -> std::io::Result<String> {
    let mut hasher = D::new();
    hasher.update(prefix);
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
