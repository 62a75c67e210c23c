//! The HTTP control API (actix-web): routes in [`crate::api`], bearer token on everything but
//! `/healthz`, JSON errors, body size limits, request metrics, and bounds on what clients can
//! hold (connections, idle time, concurrent downloads streamed in chunks).

use std::future::{ready, Ready};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::dev::{Payload, Service};
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;

use crate::api::{EvalRequest, StartRequest, MAX_BODY_BYTES};
use crate::metrics::Metrics;
use crate::runs::{evaluate_run, Control, ControlRun, DeleteRun, EvalRecorded, Hub, StartRun};
use crate::store::Store;

pub use crate::error::ApiError;

/// What every handler can reach.
pub struct AppState {
    /// The state store (reads go straight to it).
    pub store: Store,
    /// The run owner (writes and control go through it).
    pub hub: Addr<Hub>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The bearer token.
    pub token: String,
    /// Bounds the checkpoint-file downloads served at once.
    pub downloads: DownloadSlots,
}

/// A counting semaphore for checkpoint-file downloads: each holds a slot until its body has
/// been sent (or the client went away), and a download beyond the limit is refused with 503
/// rather than queued, so clients cannot pile up open files and buffers.
#[derive(Clone)]
pub struct DownloadSlots {
    /// Downloads in progress.
    busy: Arc<AtomicUsize>,
    /// Most downloads at once.
    max: usize,
}

/// A download slot; given back when dropped (with the response body).
pub struct DownloadSlot(Arc<AtomicUsize>);

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DownloadSlots {
    /// At most `max` downloads at once (at least 1).
    pub fn new(max: usize) -> Self {
        DownloadSlots {
            busy: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    /// A slot, or `None` when all are taken.
    pub fn try_take(&self) -> Option<DownloadSlot> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| DownloadSlot(self.busy.clone()))
    }
}

/// How much the server lets clients hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once, all workers together (see `exposure::connection_cap`).
    pub max_connections: usize,
    /// A client must send its request head within this time after connecting (idle
    /// connections are closed, not kept for ever).
    pub client_request_timeout: Duration,
    /// Idle time a kept-alive connection is held between requests.
    pub keep_alive: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            client_request_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// Worker threads of the HTTP server.
const WORKERS: usize = 2;

/// Bytes read from a checkpoint file per chunk of a download.
const CHUNK_BYTES: usize = 256 << 10;

/// Proof that the request carried the right bearer token.
pub struct Authorized;

/// Compares without an early exit, so timing does not reveal a prefix of the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Internal("no app state".into())));
        };
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        ready(match given {
            Some(token) if same(token.as_bytes(), state.token.as_bytes()) => Ok(Authorized),
            _ => Err(ApiError::Unauthorized),
        })
    }
}

fn mailbox(e: actix::MailboxError) -> ApiError {
    ApiError::Internal(format!("the run hub did not answer: {e}"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn metrics(_: Authorized, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

async fn start_run(
    _: Authorized,
    state: web::Data<AppState>,
    body: web::Json<StartRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let base_dir = match body.base_dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => {
            return Err(ApiError::BadRequest(format!(
                "base_dir {} must be absolute",
                dir.display()
            )))
        }
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    };
    let info = state
        .hub
        .send(StartRun {
            config_toml: body.config_toml,
            source: body.source,
            base_dir,
            queue: body.queue,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Created().json(info))
}

/// `GET /v1/devices`: the machine's devices with their memory, and why CUDA is unavailable when
/// it is. Listed on the blocking pool: opening CUDA contexts takes a moment.
async fn devices(_: Authorized) -> Result<HttpResponse, ApiError> {
    let list = web::block(r1_kernels::device::list)
        .await
        .map_err(|e| ApiError::Internal(format!("listing devices failed: {e}")))?;
    Ok(HttpResponse::Ok().json(crate::api::DevicesResponse {
        devices: list
            .devices
            .into_iter()
            .map(|d| crate::api::DeviceEntry {
                device: d.device.to_string(),
                name: d.name,
                total_bytes: d.total_bytes,
                free_bytes: d.free_bytes,
            })
            .collect(),
        cuda_unavailable: list.cuda_unavailable,
        nccl_unavailable: list.nccl_unavailable,
    }))
}

async fn list_runs(_: Authorized, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.runs()?))
}

fn find_run(state: &AppState, id: &str) -> Result<crate::api::RunInfo, ApiError> {
    state
        .store
        .run(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))
}

async fn get_run(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(find_run(&state, &id)?))
}

async fn delete_run(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let info = state
        .hub
        .send(DeleteRun {
            id: id.into_inner(),
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Ok().json(info))
}

async fn control(
    _: Authorized,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let action = match action.as_str() {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "stop" => Control::Stop,
        other => return Err(ApiError::NotFound(format!("no action {other:?}"))),
    };
    let info = state
        .hub
        .send(ControlRun { id, action })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Accepted().json(info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn steps(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    find_run(&state, &id)?;
    Ok(HttpResponse::Ok().json(state.store.steps(&id, page.after, page.limit.min(10_000))?))
}

async fn samples(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    find_run(&state, &id)?;
    Ok(HttpResponse::Ok().json(state.store.samples(&id, page.limit)?))
}

async fn checkpoints(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    find_run(&state, &id)?;
    Ok(HttpResponse::Ok().json(state.store.checkpoints(&id)?))
}

/// Files of a checkpoint a client may fetch.
const CHECKPOINT_FILES: &[&str] = &[
    "model.safetensors",
    "config.json",
    "optimizer.safetensors",
    "trainer.json",
];

async fn checkpoint_file(
    _: Authorized,
    state: web::Data<AppState>,
    path: web::Path<(String, u64, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, step, name) = path.into_inner();
    find_run(&state, &id)?;
    if !CHECKPOINT_FILES.contains(&name.as_str()) {
        return Err(ApiError::NotFound(format!(
            "no checkpoint file {name:?} (files: {})",
            CHECKPOINT_FILES.join(", ")
        )));
    }
    let saved = state
        .store
        .checkpoints(&id)?
        .into_iter()
        .find(|c| c.step == step)
        .ok_or_else(|| ApiError::NotFound(format!("run {id} has no checkpoint at step {step}")))?;
    let slot = state.downloads.try_take().ok_or_else(|| {
        ApiError::Busy(format!(
            "{} checkpoint downloads are in progress, the most r1d serves at once (r1d \
             --max-downloads); retry shortly",
            state.downloads.max
        ))
    })?;
    let path = saved.path.join(&name);
    let shown = format!("{name} of step {step}");
    let (file, len) = web::block(move || {
        let file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok((file, meta.len()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::NotFound(format!("{shown}: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .no_chunking(len)
        .streaming(file_chunks(file, len, slot)))
}

/// The bytes of `file` (`len` long) in chunks of [`CHUNK_BYTES`], each read off the event
/// loop; holds the download `slot` until the last chunk is sent or the client goes away. Memory
/// per download is one chunk, whatever the file's size.
fn file_chunks(
    file: std::fs::File,
    len: u64,
    slot: DownloadSlot,
) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((file, len, slot)), |state| async move {
        let (mut file, left, slot) = state?;
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).map_or(CHUNK_BYTES, |l| l.min(CHUNK_BYTES));
        let read = web::block(move || {
            use std::io::Read;
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf).map(|()| (file, buf))
        })
        .await;
        match read {
            Ok(Ok((file, buf))) => {
                let left = left - buf.len() as u64;
                Some((Ok(web::Bytes::from(buf)), Some((file, left, slot))))
            }
            // The file shrank or could not be read: the response ends short, and the client
            // sees fewer bytes than Content-Length promised.
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

async fn eval(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<EvalRequest>,
) -> Result<HttpResponse, ApiError> {
    let info = find_run(&state, &id)?;
    let checkpoints = state.store.checkpoints(&id)?;
    let request = body.into_inner();
    let report = web::block(move || evaluate_run(&info, &checkpoints, &request))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    state.store.put_eval(&id, &report)?;
    state.hub.do_send(EvalRecorded(id.into_inner()));
    Ok(HttpResponse::Ok().json(report))
}

async fn evals(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    find_run(&state, &id)?;
    Ok(HttpResponse::Ok().json(state.store.evals(&id)?))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route {} {}",
        req.method(),
        req.path()
    )))
}

fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge.into()
        }
        other => ApiError::BadRequest(format!("request body: {other}")).into(),
    }
}

fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("query: {err}")).into()
}

fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("path: {err}")).into()
}

/// The HTTP server on `listener`, serving `state`, holding no more than `limits` allow.
pub fn serve(
    listener: std::net::TcpListener,
    state: web::Data<AppState>,
    limits: ServerLimits,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(move || {
        let recorder = state.metrics.clone();
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .wrap_fn(move |req, srv| {
                let began = Instant::now();
                let method = req.method().to_string();
                let metrics = recorder.clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    metrics.observe_http(
                        &route,
                        &method,
                        res.status().as_u16(),
                        began.elapsed().as_secs_f64(),
                    );
                    Ok(res)
                }
            })
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .route("/v1/devices", web::get().to(devices))
            .route("/v1/runs", web::post().to(start_run))
            .route("/v1/runs", web::get().to(list_runs))
            .route("/v1/runs/{id}", web::get().to(get_run))
            .route("/v1/runs/{id}", web::delete().to(delete_run))
            .route("/v1/runs/{id}/steps", web::get().to(steps))
            .route("/v1/runs/{id}/samples", web::get().to(samples))
            .route("/v1/runs/{id}/checkpoints", web::get().to(checkpoints))
            .route(
                "/v1/runs/{id}/checkpoints/{step}/files/{name}",
                web::get().to(checkpoint_file),
            )
            .route("/v1/runs/{id}/eval", web::post().to(eval))
            .route("/v1/runs/{id}/evals", web::get().to(evals))
            .route("/v1/runs/{id}/{action}", web::post().to(control))
            .default_service(web::to(not_found))
    })
    .workers(WORKERS)
    // Per worker; connections beyond it wait in the kernel's backlog, costing r1d nothing.
    .max_connections(limits.max_connections.div_ceil(WORKERS).max(1))
    .backlog(1024)
    .client_request_timeout(limits.client_request_timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(limits.keep_alive)
    .disable_signals()
    .listen(listener)?
    .run())
}
