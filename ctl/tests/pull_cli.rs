//! `r1ctl model pull` against a Hub of our own: a std `TcpListener` thread serving, in the Hub's
//! layout, the fixture model `../shared/fixtures/models/tiny-qwen2` as repository
//! `r1-test/tiny-qwen2` — the listing (`/api/models/{repo}/revision/{rev}?blobs=true`, with sizes,
//! git blob ids and LFS SHA-256), `/{repo}/resolve/{rev}/{file}` with the headers hf-hub reads
//! (`ETag`, `X-Linked-Etag`, `X-Repo-Commit`, `Content-Range` for `Range` requests), and, as the
//! real Hub does, LFS files through a redirect to a CDN path. The server can cut a transfer
//! half-way, corrupt a file, demand a token, and counts the body bytes it sends per file.
//!
//! The binary runs with `HF_ENDPOINT` pointing at it and `HF_HOME` in a temporary folder.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

const REPO: &str = "r1-test/tiny-qwen2";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_r1_test_token";
/// The same model with its weights in two shards and model.safetensors.index.json.
const SHARDED: &str = "r1-test/tiny-qwen2-sharded";

/// One file of a served repository.
#[derive(Clone)]
struct RepoFile {
    name: String,
    bytes: Vec<u8>,
    /// Stored in LFS: served through the CDN redirect, ETag = SHA-256.
    lfs: bool,
}

impl RepoFile {
    fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }
    fn git_id(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", self.bytes.len()).as_bytes());
        h.update(&self.bytes);
        hex(&h.finalize())
    }
    fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_id()
        }
    }
}

/// `files` with model.safetensors split into two shards (tensors alternating between them) and
/// the index naming them, as transformers writes a large model.
fn sharded(files: &[RepoFile]) -> Vec<RepoFile> {
    let weights = &files
        .iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap()
        .bytes;
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
    let data = &weights[8 + header_len..];
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut shards = vec![(serde_json::Map::new(), Vec::new()); 2];
    let mut weight_map = serde_json::Map::new();
    let tensors = header.iter().filter(|(name, _)| *name != "__metadata__");
    for (i, (name, info)) in tensors.enumerate() {
        let (shard_header, shard_data) = &mut shards[i % 2];
        let offsets = info["data_offsets"].as_array().unwrap();
        let (start, end) = (
            offsets[0].as_u64().unwrap() as usize,
            offsets[1].as_u64().unwrap() as usize,
        );
        let mut info = info.clone();
        info["data_offsets"] =
            serde_json::json!([shard_data.len(), shard_data.len() + end - start]);
        shard_data.extend_from_slice(&data[start..end]);
        shard_header.insert(name.clone(), info);
        weight_map.insert(name.clone(), names[i % 2].into());
    }
    let mut out: Vec<RepoFile> = files
        .iter()
        .filter(|f| f.name != "model.safetensors")
        .cloned()
        .collect();
    for (name, (shard_header, shard_data)) in names.iter().zip(shards) {
        let head = serde_json::to_vec(&shard_header).unwrap();
        let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
        bytes.extend(head);
        bytes.extend(shard_data);
        out.push(RepoFile {
            name: name.to_string(),
            bytes,
            lfs: true,
        });
    }
    let index =
        serde_json::json!({"metadata": {"total_size": data.len()}, "weight_map": weight_map});
    out.push(RepoFile {
        name: "model.safetensors.index.json".into(),
        bytes: serde_json::to_vec_pretty(&index).unwrap(),
        lfs: false,
    });
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the server does beyond serving files, and what it saw.
#[derive(Default)]
struct State {
    /// The commit every revision resolves to.
    commit: String,
    repos: HashMap<String, Vec<RepoFile>>,
    /// Cut the first full transfer of this file after this many body bytes.
    cut_once: Option<(String, usize)>,
    /// Serve this file with one byte changed.
    corrupt: Option<String>,
    /// Answer a resumed transfer (`Range: bytes=N-`, N > 0) with the whole file and 200, as a
    /// server without range support does.
    ignore_resume_range: bool,
    /// Answer resolve requests without this bearer token with 401 GatedRepo.
    gated_token: Option<String>,
    /// Body bytes sent per file, 1-byte metadata probes (`Range: bytes=0-0`) excluded.
    served: HashMap<String, usize>,
    /// Every request: (path, Range header, Authorization header).
    requests: Vec<(String, Option<String>, Option<String>)>,
}

struct Hub {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl Hub {
    fn start() -> Hub {
        let fixture = fixture_dir();
        let mut files = Vec::new();
        for (name, lfs) in [
            ("config.json", false),
            ("generation_config.json", false),
            ("model.safetensors", true),
        ] {
            let bytes = std::fs::read(fixture.join(name))
                .unwrap_or_else(|e| panic!("fixture {}: {e}", fixture.join(name).display()));
            files.push(RepoFile {
                name: name.into(),
                bytes,
                lfs,
            });
        }
        files.push(RepoFile {
            name: "README.md".into(),
            bytes: b"# tiny-qwen2\n".to_vec(),
            lfs: false,
        });
        let mut state = State {
            commit: COMMIT.into(),
            ..State::default()
        };
        state.repos.insert(SHARDED.into(), sharded(&files));
        state.repos.insert(REPO.into(), files);
        state.repos.insert(
            "r1-test/gguf-only".into(),
            vec![
                RepoFile {
                    name: "README.md".into(),
                    bytes: b"gguf\n".to_vec(),
                    lfs: false,
                },
                RepoFile {
                    name: "config.json".into(),
                    bytes: b"{}".to_vec(),
                    lfs: false,
                },
                RepoFile {
                    name: "tiny-Q4_0.gguf".into(),
                    bytes: vec![7; 64],
                    lfs: true,
                },
            ],
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let base = addr.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                let base = base.clone();
                std::thread::spawn(move || serve(stream, &state, &base));
            }
        });
        Hub { addr, state }
    }

    fn served(&self, file: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .served
            .get(file)
            .copied()
            .unwrap_or(0)
    }
}

/// Reads one request and answers it (one request per connection: `Connection: close`).
fn serve(stream: TcpStream, state: &Mutex<State>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let auth = headers.get("authorization").cloned();
    let path = target.split('?').next().unwrap_or("").to_string();
    state
        .lock()
        .unwrap()
        .requests
        .push((target.clone(), range.clone(), auth.clone()));
    let mut out = stream;
    if method != "GET" {
        return respond(&mut out, 405, &[], b"");
    }

    // The listing.
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, _rev)) = rest.split_once("/revision/") else {
            return respond(&mut out, 404, &[], b"");
        };
        let st = state.lock().unwrap();
        let Some(files) = st.repos.get(repo) else {
            // As the Hub: 401 without a token (a private repository is not admitted to exist),
            // 404 with one.
            return respond(
                &mut out,
                if auth.is_some() { 404 } else { 401 },
                &[
                    ("X-Error-Code", "RepoNotFound".into()),
                    ("X-Error-Message", "Repository not found".into()),
                ],
                b"{\"error\":\"Repository not found\"}",
            );
        };
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let mut v = serde_json::json!({
                    "rfilename": f.name, "size": f.bytes.len(), "blobId": f.git_id(),
                });
                if f.lfs {
                    v["lfs"] = serde_json::json!({"sha256": f.sha256(), "size": f.bytes.len(), "pointerSize": 134});
                }
                v
            })
            .collect();
        let body =
            serde_json::json!({"id": repo, "sha": st.commit, "siblings": siblings}).to_string();
        return respond(
            &mut out,
            200,
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }

    // LFS content behind the redirect: /cdn/{repo}/{file}.
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let mut it = rest.splitn(3, '/');
        let (org, name, file) = (
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
        );
        return send_file(
            &mut out,
            state,
            &format!("{org}/{name}"),
            file,
            range.as_deref(),
            false,
        );
    }

    // /{org}/{name}/resolve/{rev}/{file}
    let mut it = path.trim_start_matches('/').splitn(5, '/');
    let (org, name, kind, _rev, file) = (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    );
    if kind != "resolve" {
        return respond(&mut out, 404, &[], b"");
    }
    let repo = format!("{org}/{name}");
    {
        let st = state.lock().unwrap();
        if let Some(token) = &st.gated_token {
            if auth.as_deref() != Some(&format!("Bearer {token}")) {
                return respond(
                    &mut out,
                    401,
                    &[
                        ("X-Error-Code", "GatedRepo".into()),
                        (
                            "X-Error-Message",
                            format!("Access to model {repo} is restricted."),
                        ),
                    ],
                    b"",
                );
            }
        }
        let Some(f) = st
            .repos
            .get(&repo)
            .and_then(|fs| fs.iter().find(|f| f.name == file))
        else {
            return respond(
                &mut out,
                404,
                &[("X-Error-Code", "EntryNotFound".into())],
                b"",
            );
        };
        if f.lfs {
            let headers = [
                ("Location", format!("{base}/cdn/{repo}/{file}")),
                ("X-Linked-Etag", format!("\"{}\"", f.sha256())),
                ("X-Linked-Size", f.bytes.len().to_string()),
                ("X-Repo-Commit", st.commit.clone()),
                ("ETag", format!("\"{}\"", f.git_id())),
            ];
            return respond(&mut out, 302, &headers, b"");
        }
    }
    send_file(&mut out, state, &repo, file, range.as_deref(), true)
}

/// Sends `file` of `repo`, honouring `Range: bytes=START-[END]`; cuts or corrupts as told.
fn send_file(
    out: &mut TcpStream,
    state: &Mutex<State>,
    repo: &str,
    file: &str,
    range: Option<&str>,
    with_etag: bool,
) {
    let mut st = state.lock().unwrap();
    let Some(f) = st
        .repos
        .get(repo)
        .and_then(|fs| fs.iter().find(|f| f.name == file))
        .cloned()
    else {
        drop(st);
        return respond(out, 404, &[], b"");
    };
    let mut bytes = f.bytes.clone();
    if st.corrupt.as_deref() == Some(file) {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
    let total = bytes.len();
    let probe = range == Some("bytes=0-0");
    let range = if st.ignore_resume_range && !probe {
        None
    } else {
        range
    };
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(total).min(total);
            (a.min(total), b)
        }
        None => (0, total),
    };
    let mut headers = vec![
        ("X-Repo-Commit", st.commit.clone()),
        ("Accept-Ranges", "bytes".into()),
    ];
    if with_etag {
        headers.push(("ETag", format!("\"{}\"", f.etag())));
    }
    let status = if range.is_some() {
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{total}", end.saturating_sub(1)),
        ));
        206
    } else {
        200
    };
    let body = &bytes[start..end];
    let cut = match &st.cut_once {
        Some((name, at)) if name == file && !probe => Some(*at),
        _ => None,
    };
    if cut.is_some() {
        st.cut_once = None;
    }
    let sent = cut.unwrap_or(body.len()).min(body.len());
    if !probe {
        *st.served.entry(file.to_string()).or_default() += sent;
    }
    drop(st);
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&body[..sent]);
    let _ = out.flush();
    if cut.is_some() {
        let _ = out.shutdown(std::net::Shutdown::Both);
    }
}

fn respond(out: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
}

/// `r1ctl ARGS` in `cwd` with the Hub at `endpoint` and the cache under `home`.
fn pull(cwd: &Path, endpoint: &str, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_r1ctl"));
    c.args(args)
        .current_dir(cwd)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The fixture model served as REPO (`R1_FIXTURES` overrides `../shared/fixtures`).
fn fixture_dir() -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("models/tiny-qwen2")
}

fn fixture_file(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap()
}

/// The blobs folder of REPO in the cache under `home`.
fn blobs(home: &Path) -> PathBuf {
    home.join("hub/models--r1-test--tiny-qwen2/blobs")
}

#[test]
fn a_pull_fills_a_folder_r1ctl_generate_loads() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO, "-o", "json"],
        &[],
    );
    assert!(
        out.status.success(),
        "stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["dir"], "models/tiny-qwen2");
    assert_eq!(summary["commit"], COMMIT);
    let names: Vec<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["config.json", "generation_config.json", "model.safetensors"]
    );
    let weights = fixture_file("model.safetensors");
    assert_eq!(summary["downloaded"], summary["bytes"]);
    assert_eq!(
        summary["files"][2]["checksum"],
        format!("sha256:{}", hex(&Sha256::digest(&weights)))
    );
    for name in names {
        assert_eq!(
            std::fs::read(dir.path().join("models/tiny-qwen2").join(name)).unwrap(),
            fixture_file(name),
            "{name}"
        );
    }
    assert!(!dir.path().join("models/tiny-qwen2/README.md").exists());
    // Exactly one full transfer of the weights.
    assert_eq!(hub.served("model.safetensors"), weights.len());

    // The folder is the fixture model to the last parameter, and r1ctl generates with it.
    let pulled = r1_kernels::model::load_model_dir(&dir.path().join("models/tiny-qwen2")).unwrap();
    let original = r1_kernels::model::load_model_dir(&fixture_dir()).unwrap();
    assert_eq!(pulled.config.num_layers, original.config.num_layers);
    assert_eq!(pulled.params, original.params);
    let gen = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args([
            "generate",
            "models/tiny-qwen2",
            "--tokenizer",
            "byte",
            "--prompt-ids",
            "5,6,7",
        ])
        .args(["--max-new-tokens", "2", "--temperature", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(gen.status.success(), "generate: {}", text(&gen.stderr));

    // A second pull transfers nothing: every file comes from the cache, checked again.
    let again = pull(dir.path(), &hub.addr, &home, &["model", "pull", REPO], &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let table = text(&again.stdout);
    assert!(table.contains("0 downloaded"), "{table}");
    assert!(
        table.contains("in a job config: [model] path = \"models/tiny-qwen2\""),
        "{table}"
    );
    assert_eq!(hub.served("model.safetensors"), weights.len());

    // `main` moves to a commit whose files are the same: the cached blobs are linked into the
    // new snapshot, checked, and nothing crosses the wire.
    let moved = "89abcdef0123456789abcdef0123456789abcdef";
    hub.state.lock().unwrap().commit = moved.into();
    let again = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO, "-o", "json"],
        &[],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (summary["commit"].as_str(), summary["downloaded"].as_u64()),
        (Some(moved), Some(0))
    );
    assert_eq!(hub.served("model.safetensors"), weights.len());
    assert_eq!(hub.served("config.json"), fixture_file("config.json").len());
    let snapshot = home.join(format!(
        "hub/models--r1-test--tiny-qwen2/snapshots/{moved}/model.safetensors"
    ));
    assert_eq!(std::fs::read(snapshot).unwrap(), weights);
}

#[test]
fn a_sharded_repository_is_pulled_through_its_index() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", SHARDED, "--revision", "v1", "-o", "json"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "model.safetensors.index.json",
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    let folder = dir.path().join("models/tiny-qwen2-sharded");
    assert!(!folder.join("model.safetensors").exists());
    let pulled = r1_kernels::model::load_model_dir(&folder).unwrap();
    let original = r1_kernels::model::load_model_dir(&fixture_dir()).unwrap();
    assert_eq!(pulled.params, original.params);
    // The revision asked for is recorded in the cache, as the Hub's own client records it.
    let reference = home.join("hub/models--r1-test--tiny-qwen2-sharded/refs/v1");
    assert_eq!(std::fs::read_to_string(reference).unwrap(), COMMIT);
}

#[test]
fn a_broken_pull_resumes_where_it_stopped() {
    let hub = Hub::start();
    let size = fixture_file("model.safetensors").len();
    hub.state.lock().unwrap().cut_once = Some(("model.safetensors".into(), size / 3));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let first = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO, "--dir", "m"],
        &[],
    );
    assert_eq!(first.status.code(), Some(2));
    let err = text(&first.stderr);
    assert!(
        err.contains("model.safetensors") && err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(!dir.path().join("m/model.safetensors").exists());
    let sha = hex(&Sha256::digest(fixture_file("model.safetensors")));
    let kept = std::fs::metadata(blobs(&home).join(format!("{sha}.part")))
        .unwrap()
        .len() as usize;
    assert_eq!(kept, size / 3, "the .part keeps what arrived");
    let served_before = hub.served("model.safetensors");

    let second = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO, "--dir", "m", "-o", "json"],
        &[],
    );
    assert!(second.status.success(), "{}", text(&second.stderr));
    // Only the rest crossed the wire, asked for with a Range from where the first pull stopped.
    assert_eq!(hub.served("model.safetensors") - served_before, size - kept);
    let ranges: Vec<String> = hub
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(p, _, _)| p.contains("model.safetensors"))
        .filter_map(|(_, r, _)| r.clone())
        .collect();
    assert!(ranges.contains(&format!("bytes={kept}-")), "{ranges:?}");
    let summary: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let weights = &summary["files"][2];
    assert_eq!(weights["source"], "resumed");
    assert_eq!(weights["resumed_from"], kept);
    assert_eq!(weights["downloaded"], size - kept);
    assert_eq!(
        std::fs::read(dir.path().join("m/model.safetensors")).unwrap(),
        fixture_file("model.safetensors")
    );
}

#[test]
fn a_server_that_ignores_the_resume_range_is_caught_by_the_size_check() {
    let hub = Hub::start();
    let size = fixture_file("model.safetensors").len();
    hub.state.lock().unwrap().cut_once = Some(("model.safetensors".into(), size / 2));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let first = pull(dir.path(), &hub.addr, &home, &["model", "pull", REPO], &[]);
    assert_eq!(first.status.code(), Some(2));
    // The resume asks for the rest; the server sends everything again, which lands after the
    // half already kept.
    hub.state.lock().unwrap().ignore_resume_range = true;
    let second = pull(dir.path(), &hub.addr, &home, &["model", "pull", REPO], &[]);
    assert_eq!(second.status.code(), Some(2));
    let err = text(&second.stderr);
    assert!(
        err.contains(&format!(
            "model.safetensors: checksum mismatch: the Hub lists size {size}"
        )),
        "{err}"
    );
    assert!(!dir
        .path()
        .join("models/tiny-qwen2/model.safetensors")
        .exists());
    // Nothing of the bad file is left to resume from: the next pull starts at zero and succeeds.
    let third = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO, "-o", "json"],
        &[],
    );
    assert!(third.status.success(), "{}", text(&third.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(summary["files"][2]["resumed_from"], 0);
    assert_eq!(
        std::fs::read(dir.path().join("models/tiny-qwen2/model.safetensors")).unwrap(),
        fixture_file("model.safetensors")
    );
}

#[test]
fn a_corrupted_file_is_a_checksum_error_and_is_not_kept() {
    let hub = Hub::start();
    hub.state.lock().unwrap().corrupt = Some("model.safetensors".into());
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = pull(dir.path(), &hub.addr, &home, &["model", "pull", REPO], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let sha = hex(&Sha256::digest(fixture_file("model.safetensors")));
    assert!(
        err.contains("model.safetensors: checksum mismatch") && err.contains(&sha),
        "{err}"
    );
    assert!(!dir
        .path()
        .join("models/tiny-qwen2/model.safetensors")
        .exists());
    let left: Vec<String> = std::fs::read_dir(blobs(&home))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // hf-hub's `.lock` may stay; neither the blob nor a `.part` of it may.
    assert!(
        !left.contains(&sha) && !left.contains(&format!("{sha}.part")),
        "the bad blob stays in the cache: {left:?}"
    );
    assert!(std::fs::read_link(home.join(format!(
        "hub/models--r1-test--tiny-qwen2/snapshots/{COMMIT}/model.safetensors"
    )))
    .is_err());

    // Served correctly, the next pull fetches it anew and succeeds.
    hub.state.lock().unwrap().corrupt = None;
    let out = pull(dir.path(), &hub.addr, &home, &["model", "pull", REPO], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_gated_repository_asks_for_hf_token_and_the_token_is_sent() {
    let hub = Hub::start();
    hub.state.lock().unwrap().gated_token = Some(TOKEN.into());
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = pull(dir.path(), &hub.addr, &home, &["model", "pull", REPO], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("gated") && err.contains("HF_TOKEN") && err.contains("no token was sent"),
        "{err}"
    );

    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO],
        &[("HF_TOKEN", TOKEN)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bearer = format!("Bearer {TOKEN}");
    let st = hub.state.lock().unwrap();
    let authed = st
        .requests
        .iter()
        .filter(|(_, _, a)| a.as_deref() == Some(&bearer))
        .count();
    assert!(st
        .requests
        .iter()
        .any(|(p, _, a)| p.starts_with("/api/models/") && a.as_deref() == Some(&bearer)));
    assert!(st
        .requests
        .iter()
        .any(|(p, _, a)| p.contains("/resolve/") && a.as_deref() == Some(&bearer)));
    assert!(authed >= 4, "{:?}", st.requests);
    drop(st);

    // The token file `huggingface-cli login` writes works the same.
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", REPO, "--dir", "again"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn unknown_repositories_unreachable_endpoints_and_gguf_only_repositories_say_so() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", "r1-test/nothing-here"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("r1-test/nothing-here: no such model repository on")
            && err.contains(&hub.addr)
            && err.contains("or it is private: set HF_TOKEN"),
        "{err}"
    );
    // With a token the Hub says 404, and the message drops the hint.
    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", "r1-test/nothing-here"],
        &[("HF_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("r1-test/nothing-here: no such model repository on")
            && !err.contains("private"),
        "{err}"
    );

    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", "r1-test/gguf-only"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("tiny-Q4_0.gguf") && err.contains("r1ctl model import"),
        "{err}"
    );

    let out = pull(
        dir.path(),
        &hub.addr,
        &home,
        &["model", "pull", "gpt2"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("ORG/NAME"),
        "{}",
        text(&out.stderr)
    );

    // A port nobody listens on.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = pull(dir.path(), &closed, &home, &["model", "pull", REPO], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the Hub at {closed}")) && err.contains("HF_ENDPOINT"),
        "{err}"
    );
}
