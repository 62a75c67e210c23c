//! The collectives of GPU replicas through NCCL (cudarc's `nccl` bindings with dynamic loading:
//! nothing is linked at build time; `libnccl.so.2` is opened when a group is created).
//!
//! One process drives every GPU (one thread per replica), so the group is made at once with
//! `ncclCommInitAll` over the replicas' device ordinals. Each rank runs its collectives on a
//! stream of its own and waits for it before returning: the caller's buffers must be ready
//! (its backend's stream synchronised) before a call, and are ready after it. That costs a
//! synchronisation per collective, a handful per optimizer step.
//!
//! Order: NCCL sums in the order its algorithm (ring or tree) and protocol fix for a given
//! communicator shape, so the same devices, sizes and NCCL version give the same bits run to
//! run. To keep the order fixed across NCCL versions and topologies, pin it with
//! `NCCL_ALGO=Ring NCCL_PROTO=Simple` in the environment of the process (docs/DESIGN.md,
//! "Data-parallel learning").

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::driver::{result as drv, sys as drv_sys, CudaContext};
use cudarc::nccl::{result as nccl, sys as nccl_sys};

use super::{Collective, CollectiveError};
use crate::cuda::DeviceBuffer;

/// One rank of a group of GPUs in this process: its communicator, device and stream.
pub struct NcclCollective {
    comm: nccl_sys::ncclComm_t,
    ctx: Arc<CudaContext>,
    stream: drv_sys::CUstream,
    rank: usize,
    world: usize,
    /// Set by [`Collective::abort`]: an aborted communicator is freed already.
    aborted: AtomicBool,
}

// SAFETY: the communicator and stream are used by one thread at a time (the replica's thread
// that owns this rank), which `&self` calls from that thread guarantee; NCCL communicators and
// CUDA streams may move between threads.
unsafe impl Send for NcclCollective {}

/// Whether `libnccl.so.2` can be opened by this process.
pub fn nccl_available() -> bool {
    catch_unwind(|| unsafe { nccl_sys::is_culib_present() }).unwrap_or(false)
}

fn nccl_error(context: impl Into<String>, e: nccl::NcclError) -> CollectiveError {
    CollectiveError::Nccl {
        context: context.into(),
        message: format!("{:?}", e.0),
    }
}

fn driver_error(context: impl Into<String>, e: cudarc::driver::DriverError) -> CollectiveError {
    CollectiveError::Nccl {
        context: context.into(),
        message: format!("{e:?}"),
    }
}

impl NcclCollective {
    /// The ranks of one group over CUDA devices `ordinals` (rank `r` on `ordinals[r]`), rank 0
    /// first. No driver, a missing device, a repeated ordinal or no NCCL library is
    /// [`CollectiveError::Unavailable`] naming which, never a panic.
    pub fn group(ordinals: &[usize]) -> Result<Vec<NcclCollective>, CollectiveError> {
        if ordinals.is_empty() {
            return Err(CollectiveError::Unavailable(
                "a group needs at least one device".into(),
            ));
        }
        let count = crate::cuda::backend::device_count()
            .map_err(|e| CollectiveError::Unavailable(e.to_string()))?;
        for (i, &ordinal) in ordinals.iter().enumerate() {
            if ordinal >= count {
                return Err(CollectiveError::Unavailable(format!(
                    "CUDA device {ordinal} does not exist ({count} device(s) found)"
                )));
            }
            if ordinals[..i].contains(&ordinal) {
                return Err(CollectiveError::Unavailable(format!(
                    "CUDA device {ordinal} is named twice: one rank per device"
                )));
            }
        }
        if !nccl_available() {
            return Err(CollectiveError::Unavailable(
                "libnccl.so.2 could not be opened (not on the library path, LD_LIBRARY_PATH; \
                 pip's nvidia-nccl-cu13 ships it)"
                    .into(),
            ));
        }
        let devices: Vec<i32> = ordinals.iter().map(|&o| o as i32).collect();
        let mut comms = vec![std::ptr::null_mut(); devices.len()];
        catch_unwind(AssertUnwindSafe(|| unsafe {
            nccl::comm_init_all(comms.as_mut_ptr(), devices.len() as i32, devices.as_ptr())
        }))
        .map_err(|_| {
            CollectiveError::Unavailable(
                "ncclCommInitAll panicked (a symbol missing from libnccl?)".into(),
            )
        })?
        .map_err(|e| nccl_error(format!("ncclCommInitAll over devices {ordinals:?}"), e))?;
        let world = ordinals.len();
        let mut ranks = Vec::with_capacity(world);
        let mut comms = comms.into_iter();
        for (rank, &ordinal) in ordinals.iter().enumerate() {
            let comm = comms.next().unwrap_or(std::ptr::null_mut());
            // From here on a failure drops the ranks made so far, which destroys their
            // communicators; the remaining ones are destroyed by hand.
            let opened = catch_unwind(|| CudaContext::new(ordinal))
                .map_err(|_| CollectiveError::Unavailable("creating a context panicked".into()))
                .and_then(|c| {
                    c.map_err(|e| driver_error(format!("context on device {ordinal}"), e))
                })
                .and_then(|ctx| {
                    ctx.bind_to_thread()
                        .map_err(|e| driver_error("binding the context", e))?;
                    let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
                        .map_err(|e| driver_error(format!("stream on device {ordinal}"), e))?;
                    Ok((ctx, stream))
                });
            match opened {
                Ok((ctx, stream)) => ranks.push(NcclCollective {
                    comm,
                    ctx,
                    stream,
                    rank,
                    world,
                    aborted: AtomicBool::new(false),
                }),
                Err(e) => {
                    for rest in std::iter::once(comm).chain(comms) {
                        unsafe {
                            let _ = nccl::comm_destroy(rest);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(ranks)
    }

    /// Runs one NCCL call on this rank's stream and waits for it.
    /// The CUDA device this rank computes on.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    fn run(
        &self,
        context: &str,
        call: impl FnOnce(nccl_sys::cudaStream_t) -> Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<(), CollectiveError> {
        let context = format!("{context} on rank {}", self.rank);
        if self.aborted.load(Ordering::SeqCst) {
            return Err(CollectiveError::Aborted {
                reason: format!("{context}: this rank's communicator was aborted"),
            });
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| driver_error(context.clone(), e))?;
        call(self.stream as nccl_sys::cudaStream_t).map_err(|e| nccl_error(context.clone(), e))?;
        unsafe { drv::stream::synchronize(self.stream) }.map_err(|e| driver_error(context, e))
    }

    fn mismatch(&self, op: &'static str, message: String) -> CollectiveError {
        CollectiveError::Mismatch {
            op,
            rank: self.rank,
            message,
        }
    }
}

impl Collective for NcclCollective {
    type Buffer = DeviceBuffer<f32>;

    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, buffer: &mut DeviceBuffer<f32>) -> Result<(), CollectiveError> {
        let (ptr, len) = (buffer.ptr(), buffer.len());
        self.run("ncclAllReduce", |stream| unsafe {
            nccl::all_reduce(
                ptr as *const _,
                ptr as *mut _,
                len,
                nccl_sys::ncclDataType_t::ncclFloat32,
                nccl_sys::ncclRedOp_t::ncclSum,
                self.comm,
                stream,
            )
        })
    }

    fn broadcast(
        &self,
        buffer: &mut DeviceBuffer<f32>,
        root: usize,
    ) -> Result<(), CollectiveError> {
        if root >= self.world {
            return Err(self.mismatch(
                "broadcast",
                format!("root {root} in a group of {}", self.world),
            ));
        }
        let (ptr, len) = (buffer.ptr(), buffer.len());
        self.run("ncclBroadcast", |stream| unsafe {
            nccl::broadcast(
                ptr as *const _,
                ptr as *mut _,
                len,
                nccl_sys::ncclDataType_t::ncclFloat32,
                root as i32,
                self.comm,
                stream,
            )
        })
    }

    fn all_gather(
        &self,
        shard: &DeviceBuffer<f32>,
        gathered: &mut DeviceBuffer<f32>,
    ) -> Result<(), CollectiveError> {
        if gathered.len() != shard.len() * self.world {
            return Err(self.mismatch(
                "all_gather",
                format!(
                    "{} values to gather {} shards of {}",
                    gathered.len(),
                    self.world,
                    shard.len()
                ),
            ));
        }
        let (send, recv, len) = (shard.ptr(), gathered.ptr(), shard.len());
        self.run("ncclAllGather", |stream| unsafe {
            nccl::all_gather(
                send as *const _,
                recv as *mut _,
                len,
                nccl_sys::ncclDataType_t::ncclFloat32,
                self.comm,
                stream,
            )
        })
    }

    /// Aborts this rank's communicator: NCCL calls pending on the other ranks return an error
    /// instead of waiting for this one.
    fn abort(&self, reason: &str) {
        tracing::warn!(rank = self.rank, "aborting the NCCL communicator: {reason}");
        if !self.aborted.swap(true, Ordering::SeqCst) {
            unsafe {
                let _ = nccl::comm_abort(self.comm);
            }
        }
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // Errors here have nowhere to go; the process keeps running either way.
        unsafe {
            let _ = self.ctx.bind_to_thread();
            if !self.aborted.load(Ordering::SeqCst) {
                let _ = nccl::comm_destroy(self.comm);
            }
            let _ = drv::stream::destroy(self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_without_a_usable_gpu_is_a_clear_error() {
        // On a machine with two GPUs and NCCL this makes a group; anywhere else it must say why.
        match NcclCollective::group(&[0, 1]) {
            Ok(ranks) => assert_eq!(ranks.len(), 2),
            Err(CollectiveError::Unavailable(why)) => {
                assert!(
                    why.contains("driver") || why.contains("device") || why.contains("libnccl"),
                    "{why}"
                );
            }
            Err(other) => panic!("not an availability error: {other}"),
        }
        assert!(matches!(
            NcclCollective::group(&[]),
            Err(CollectiveError::Unavailable(_))
        ));
    }
}
