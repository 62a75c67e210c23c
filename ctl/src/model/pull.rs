//! `r1ctl model pull ORG/NAME`: a model folder r1 loads, from the Hugging Face Hub. It lists the
//! repository at the revision asked for (pinning the commit), picks what a model folder needs
//! (config.json, the tokenizer files and generation_config.json when present, model.safetensors
//! or the shards model.safetensors.index.json names), fetches each into the Hub cache (resumed,
//! checked: hub.rs), then fills `--dir` with hard links to the cached files (copies where the
//! cache is on another file system): no second copy on disk, and nothing dangles when the cache
//! is cleaned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use super::hub::{Fetched, Hub, Listing, RepoFile};
use crate::remote::Output;

/// Files a model folder uses when the repository has them, beside config.json and the weights.
const OPTIONAL_FILES: [&str; 4] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Arguments of `r1ctl model pull`.
#[derive(Args)]
pub struct PullArgs {
    /// The model repository on the Hub, ORG/NAME (e.g. Qwen/Qwen2.5-0.5B).
    #[arg(value_name = "ORG/NAME")]
    repo: String,
    /// Branch, tag or commit to fetch.
    #[arg(long, default_value = "main")]
    revision: String,
    /// The model folder to fill (default: models/NAME).
    #[arg(long, value_name = "DEST")]
    dir: Option<PathBuf>,
    /// Replace files in DEST that differ from the repository's.
    #[arg(long)]
    force: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

/// One file of the pulled folder, as the summary shows it.
#[derive(Serialize)]
struct PulledFile {
    /// Path inside the repository and the folder.
    name: String,
    /// Its size.
    bytes: u64,
    /// Bytes this pull transferred for it.
    downloaded: u64,
    /// Bytes an earlier, interrupted pull had kept, that this one resumed from.
    resumed_from: u64,
    /// `fetched`, `resumed` or `cached`.
    source: &'static str,
    /// What it was checked against (`sha256:…`, `git-sha1:…`), null when the Hub gave nothing.
    checksum: Option<String>,
}

/// What `-o json` prints.
#[derive(Serialize)]
struct PullSummary {
    /// ORG/NAME as given.
    repo: String,
    /// `--revision` as given.
    revision: String,
    /// The commit it resolved to: every file is from this commit.
    commit: String,
    /// The Hub asked (HF_ENDPOINT or the default).
    endpoint: String,
    /// The folder to put in a config's `[model] path`.
    dir: String,
    /// The Hub cache folder the files came through.
    cache: String,
    /// The files of the folder.
    files: Vec<PulledFile>,
    /// Their total size.
    bytes: u64,
    /// Bytes this pull transferred.
    downloaded: u64,
}

/// Runs `r1ctl model pull`; returns the exit code.
pub fn run(args: PullArgs) -> anyhow::Result<i32> {
    let name = repo_name(&args.repo)?;
    let dest = args
        .dir
        .clone()
        .unwrap_or_else(|| Path::new("models").join(name));
    let progress =
        args.output == Output::Table && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let hub = Hub::from_env(progress)?;
    let listing = hub.listing(&args.repo, &args.revision)?;
    let commit = listing.sha.clone();
    eprintln!(
        "r1ctl: {} at {} is commit {commit} ({} files on {})",
        args.repo,
        args.revision,
        listing.siblings.len(),
        hub.endpoint
    );

    let mut wanted = model_files(&args.repo, &listing)?;
    let mut fetched: Vec<(RepoFile, Fetched)> = Vec::new();
    // The index names the shards, so it is fetched (and read) before them.
    if let Some(index) = listing.file("model.safetensors.index.json") {
        let got = fetch_one(&hub, &args.repo, &commit, index)?;
        let shards = index_shards(&got.blob)
            .with_context(|| format!("{}: model.safetensors.index.json", args.repo))?;
        for shard in shards {
            let Some(file) = listing.file(&shard) else {
                bail!(
                    "{}: model.safetensors.index.json names {shard}, which the repository at {commit} does not have",
                    args.repo
                );
            };
            wanted.push(file.clone());
        }
        fetched.push((index.clone(), got));
    }
    for file in &wanted {
        let got = fetch_one(&hub, &args.repo, &commit, file)?;
        fetched.push((file.clone(), got));
    }
    if args.revision != commit {
        hub.record_ref(&args.repo, &args.revision, &commit)?;
    }

    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    for (file, got) in &fetched {
        place(got, &dest.join(&file.name), args.force)?;
    }

    let files: Vec<PulledFile> = fetched
        .iter()
        .map(|(file, got)| PulledFile {
            name: file.name.clone(),
            bytes: got.bytes,
            downloaded: got.downloaded,
            resumed_from: got.resumed_from,
            source: if got.resumed_from > 0 {
                "resumed"
            } else if got.downloaded > 0 || got.bytes == 0 {
                "fetched"
            } else {
                "cached"
            },
            checksum: got.checksum.clone(),
        })
        .collect();
    let summary = PullSummary {
        repo: args.repo.clone(),
        revision: args.revision.clone(),
        commit,
        endpoint: hub.endpoint.clone(),
        dir: dest.display().to_string(),
        cache: hub.cache_dir.display().to_string(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        downloaded: files.iter().map(|f| f.downloaded).sum(),
        files,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Output::Table => print_table(&summary),
    }
    Ok(0)
}

/// NAME of ORG/NAME, refusing what is not a repository id.
fn repo_name(repo: &str) -> anyhow::Result<&str> {
    let valid_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((org, name)) if valid_part(org) && valid_part(name) => Ok(name),
        _ => bail!(
            "`{repo}` is not a Hub model id: give ORG/NAME, e.g. Qwen/Qwen2.5-0.5B (letters, digits, `-`, `_`, `.`)"
        ),
    }
}

/// What a model folder needs from `listing`, shards excepted (they come from the index):
/// config.json, the optional files present, model.safetensors when there is no index. A
/// repository without safetensors weights is refused, saying what it has instead.
fn model_files(repo: &str, listing: &Listing) -> anyhow::Result<Vec<RepoFile>> {
    let commit = &listing.sha;
    let Some(config) = listing.file("config.json") else {
        bail!("{repo}: no config.json at {commit}, so it is not a transformers model repository");
    };
    let mut files = vec![config.clone()];
    files.extend(
        OPTIONAL_FILES
            .iter()
            .filter_map(|name| listing.file(name).cloned()),
    );
    if listing.file("tokenizer.json").is_none() {
        eprintln!(
            "r1ctl: {repo} has no tokenizer.json; r1 reads a model's tokenizer from it (pass --tokenizer byte only for r1's byte-level models)"
        );
    }
    if listing.file("model.safetensors.index.json").is_some() {
        return Ok(files);
    }
    if let Some(weights) = listing.file("model.safetensors") {
        files.push(weights.clone());
        return Ok(files);
    }
    let with_suffix = |suffix: &str| -> Vec<&str> {
        listing
            .siblings
            .iter()
            .map(|f| f.name.as_str())
            .filter(|n| n.ends_with(suffix))
            .collect()
    };
    let (safetensors, gguf, bins) = (
        with_suffix(".safetensors"),
        with_suffix(".gguf"),
        with_suffix(".bin"),
    );
    if !safetensors.is_empty() {
        bail!(
            "{repo}: no model.safetensors or model.safetensors.index.json at {commit}, only {}; r1 reads the transformers layout",
            safetensors.join(", ")
        );
    }
    if !gguf.is_empty() {
        bail!(
            "{repo}: no safetensors weights at {commit}; it has GGUF files ({}): download one and import it with `r1ctl model import FILE.gguf DIR`",
            gguf.join(", ")
        );
    }
    if !bins.is_empty() {
        bail!(
            "{repo}: no safetensors weights at {commit}, only PyTorch files ({}), which r1 does not read; look for a safetensors revision or convert them with transformers (`save_pretrained(..., safe_serialization=True)`)",
            bins.join(", ")
        );
    }
    bail!("{repo}: no weights at {commit} (no model.safetensors, no model.safetensors.index.json)")
}

/// Fetches one file, saying so on stderr.
fn fetch_one(hub: &Hub, repo: &str, commit: &str, file: &RepoFile) -> anyhow::Result<Fetched> {
    let got = hub.fetch(repo, commit, file)?;
    let how = if got.downloaded == 0 && got.bytes > 0 {
        "in the cache".to_string()
    } else if got.resumed_from > 0 {
        format!("resumed at byte {}", got.resumed_from)
    } else {
        "fetched".to_string()
    };
    eprintln!(
        "r1ctl: {} ({} bytes) {how}{}",
        file.name,
        got.bytes,
        if got.checksum.is_some() {
            ", checksum ok"
        } else {
            ", no checksum listed"
        }
    );
    Ok(got)
}

/// The shard files model.safetensors.index.json names (its `weight_map` values), each once.
fn index_shards(index: &Path) -> anyhow::Result<BTreeSet<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index)?;
    let index: Index = serde_json::from_str(&text).context("no valid `weight_map`")?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    for shard in &shards {
        if shard.contains("..") || shard.starts_with('/') {
            bail!("`weight_map` names `{shard}`, which is not a file of the repository");
        }
    }
    if shards.is_empty() {
        bail!("`weight_map` is empty");
    }
    Ok(shards)
}

/// Puts the cached `got` at `target`: a hard link, else a copy, through a temporary name so a
/// reader never sees half a file. A file already there that is the same is left; a different
/// one needs `force`.
fn place(got: &Fetched, target: &Path, force: bool) -> anyhow::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(target) {
        if same_file(&got.blob, target) {
            return Ok(());
        }
        if meta.is_file() && meta.len() == got.bytes && same_content(&got.blob, target) {
            return Ok(());
        }
        if !force {
            bail!(
                "{} exists and is not the repository's file; pass --force to replace it",
                target.display()
            );
        }
    }
    let tmp = target.with_file_name(format!(
        ".{}.pull-tmp",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&got.blob, &tmp).is_err() {
        std::fs::copy(&got.blob, &tmp)
            .with_context(|| format!("copying {} to {}", got.blob.display(), tmp.display()))?;
    }
    std::fs::rename(&tmp, target)
        .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    Ok(())
}

/// Whether two files hold the same bytes, read side by side in 1 MiB blocks (shards are GBs).
fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (Ok(mut a), Ok(mut b)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = match read_full(&mut a, &mut x) {
            Ok(n) => n,
            Err(_) => return false,
        };
        match read_full(&mut b, &mut y) {
            Ok(m) if m == n => {}
            _ => return false,
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
    /// Fills `buf` as far as the file allows; the count read.
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// Whether two paths are the same file (one inode), as a hard link makes them.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The table: the files, the totals, and the line to put in a config.
fn print_table(s: &PullSummary) {
    println!(
        "{:<40} {:>14} {:>14}  SOURCE",
        "FILE", "BYTES", "DOWNLOADED"
    );
    for f in &s.files {
        println!(
            "{:<40} {:>14} {:>14}  {}",
            f.name, f.bytes, f.downloaded, f.source
        );
    }
    println!(
        "{} files, {} bytes, {} downloaded; {} at {} (commit {})",
        s.files.len(),
        s.bytes,
        s.downloaded,
        s.repo,
        s.revision,
        s.commit
    );
    println!("model folder: {}", s.dir);
    println!("in a job config: [model] path = \"{}\"", s.dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Listing {
        Listing {
            sha: "c0ffee".into(),
            siblings: names
                .iter()
                .map(|n| RepoFile {
                    name: n.to_string(),
                    size: Some(1),
                    blob_id: None,
                    lfs: None,
                })
                .collect(),
        }
    }

    #[test]
    fn repo_ids_are_org_slash_name() {
        assert_eq!(repo_name("Qwen/Qwen2.5-0.5B").unwrap(), "Qwen2.5-0.5B");
        for bad in ["gpt2", "a/b/c", "../x", "org/..", "org/", "/name", "o rg/x"] {
            let e = repo_name(bad).unwrap_err().to_string();
            assert!(e.contains("ORG/NAME"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_model_folder_takes_config_tokenizer_and_weights_only() {
        let l = listing(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "generation_config.json",
            "merges.txt",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
        ]);
        let names: Vec<String> = model_files("o/m", &l)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            names,
            [
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "model.safetensors"
            ]
        );
        // With an index, the shards come from it, not from here.
        let l = listing(&[
            "config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
        ]);
        let names: Vec<String> = model_files("o/m", &l)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["config.json"]);
    }

    #[test]
    fn repositories_without_safetensors_say_what_they_have() {
        let gguf = model_files("o/m", &listing(&["config.json", "m-Q4_0.gguf"]))
            .unwrap_err()
            .to_string();
        assert!(
            gguf.contains("m-Q4_0.gguf") && gguf.contains("r1ctl model import"),
            "{gguf}"
        );
        let bin = model_files("o/m", &listing(&["config.json", "pytorch_model.bin"]))
            .unwrap_err()
            .to_string();
        assert!(
            bin.contains("pytorch_model.bin") && bin.contains("does not read"),
            "{bin}"
        );
        let none = model_files("o/m", &listing(&["README.md"]))
            .unwrap_err()
            .to_string();
        assert!(none.contains("no config.json"), "{none}");
    }

    #[test]
    fn placing_links_the_cached_file_and_refuses_a_different_one_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"weights").unwrap();
        let got = Fetched {
            blob: blob.clone(),
            bytes: 7,
            downloaded: 7,
            resumed_from: 0,
            checksum: None,
        };
        let target = dir.path().join("m/model.safetensors");
        place(&got, &target, false).unwrap();
        assert!(same_file(&blob, &target), "a hard link on one file system");
        place(&got, &target, false).unwrap();

        let copy = dir.path().join("copy.safetensors");
        std::fs::write(&copy, b"weights").unwrap();
        place(&got, &copy, false).unwrap();
        assert!(
            !same_file(&blob, &copy),
            "the same bytes are left as they are"
        );

        let other = dir.path().join("other.safetensors");
        std::fs::write(&other, b"another").unwrap();
        let e = place(&got, &other, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(&other).unwrap(), b"another");
        place(&got, &other, true).unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"weights");
        assert!(!dir.path().join(".other.safetensors.pull-tmp").exists());
    }

    #[test]
    fn index_shards_are_read_once_each_and_stay_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.json");
        std::fs::write(
            &p,
            r#"{"metadata":{},"weight_map":{"a":"model-1.safetensors","b":"model-2.safetensors","c":"model-1.safetensors"}}"#,
        )
        .unwrap();
        let shards: Vec<String> = index_shards(&p).unwrap().into_iter().collect();
        assert_eq!(shards, ["model-1.safetensors", "model-2.safetensors"]);
        std::fs::write(&p, r#"{"weight_map":{"a":"../../etc/passwd"}}"#).unwrap();
        assert!(index_shards(&p).is_err());
    }
}
