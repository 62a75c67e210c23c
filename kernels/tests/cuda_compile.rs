//! Every CUDA kernel source compiles to PTX with NVRTC 13.0 — no GPU needed, so a kernel that does
//! not compile never lands — and to sm_90 machine code without register spills (ptxas inside
//! NVRTC; each kernel's registers are printed). NVRTC comes from PyPI's
//! `nvidia-cuda-nvrtc==13.0.88` wheel, fetched by `scripts/fetch-nvrtc.sh` into `.cache/nvrtc/`
//! (or `R1_NVRTC_DIR`); without it the test says so and skips.
//!
//! cudarc opens `libnvrtc.so.13` by name, and glibc reads `LD_LIBRARY_PATH` only when a process
//! starts, so when NVRTC is not already loadable the test runs itself again in a child process
//! with the wheel's `lib/` on `LD_LIBRARY_PATH`.
//!
//! With `R1_PTX_OUT=<dir>` the PTX of every source is also written there, named as the backend's
//! on-disk cache expects (`scripts/build-device-check.sh` carries that folder to the GPU machine).

use std::path::PathBuf;
use std::process::Command;

use r1_kernels::cuda::backend::{fill_ptx_cache, ptx_cache_path};
use r1_kernels::cuda::{compile_kernel_ptx, kernel_resources, kernel_sources, nvrtc_available};

/// The architecture of the GPU machine (H200, compute capability 9.0).
const ARCH: &str = "compute_90";
/// Its SM, for the machine-code check (registers, spills).
const SM: &str = "sm_90";
const REEXEC_FLAG: &str = "R1_NVRTC_TEST_CHILD";

fn nvrtc_dir() -> PathBuf {
    std::env::var_os("R1_NVRTC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".cache")
                .join("nvrtc")
        })
}

/// Names of the `extern "C" __global__` kernels a source defines.
fn kernel_names(source: &str) -> Vec<String> {
    source
        .split("extern \"C\" __global__ void ")
        .skip(1)
        .filter_map(|rest| {
            // `__launch_bounds__(N)` may sit between `void` and the name.
            let rest = match rest.strip_prefix("__launch_bounds__(") {
                Some(after) => after.split_once(')')?.1,
                None => rest,
            };
            rest.split('(').next().map(|s| s.trim().to_string())
        })
        .collect()
}

#[test]
fn every_kernel_source_compiles_to_ptx_with_nvrtc() {
    let root = nvrtc_dir().join("nvidia").join("cu13");
    let lib = root.join("lib");
    if !lib.join("libnvrtc.so.13").exists() {
        eprintln!(
            "SKIP: no NVRTC at {} (scripts/fetch-nvrtc.sh fetches nvidia-cuda-nvrtc==13.0.88 from PyPI)",
            lib.display()
        );
        return;
    }
    if !nvrtc_available() {
        assert!(
            std::env::var_os(REEXEC_FLAG).is_none(),
            "{} holds libnvrtc.so.13 but it cannot be opened even with LD_LIBRARY_PATH set",
            lib.display()
        );
        let mut path = lib.clone().into_os_string();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            path.push(":");
            path.push(old);
        }
        let exe = std::env::current_exe().expect("the test binary's own path");
        let status = Command::new(exe)
            .args(["--nocapture", "--test-threads=1"])
            .env("LD_LIBRARY_PATH", path)
            .env(REEXEC_FLAG, "1")
            .status()
            .expect("re-running the test binary with LD_LIBRARY_PATH");
        assert!(
            status.success(),
            "the NVRTC compile test failed in the child process (its output is above)"
        );
        return;
    }
    let include = vec![root.join("include")];
    let mut failures = Vec::new();
    for kernel in kernel_sources() {
        match compile_kernel_ptx(kernel, ARCH, &include) {
            Ok(ptx) => {
                let names = kernel_names(kernel.source);
                assert!(!names.is_empty(), "{}.cu: no kernel found", kernel.name);
                for name in names {
                    assert!(
                        ptx.contains(&format!(".entry {name}(")),
                        "{}.cu: kernel `{name}` is missing from the PTX",
                        kernel.name
                    );
                }
                assert!(
                    ptx.contains(".target sm_90"),
                    "{}.cu: PTX targets sm_90",
                    kernel.name
                );
                eprintln!("{}.cu: {} bytes of PTX", kernel.name, ptx.len());
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "kernels that do not compile:\n{}",
        failures.join("\n\n")
    );

    // Machine code for the GPU machine's SM (ptxas inside NVRTC): registers per thread and no
    // register spills, kernel by kernel.
    let mut spills = Vec::new();
    for kernel in kernel_sources() {
        let report = kernel_resources(kernel, SM, &include)
            .unwrap_or_else(|e| panic!("{}.cu for {SM}: {e}", kernel.name));
        assert_eq!(
            report.len(),
            kernel_names(kernel.source).len(),
            "{}.cu: ptxas reports every kernel",
            kernel.name
        );
        for k in report {
            eprintln!(
                "{}.cu {}: {} registers, {} bytes smem, stack {}, spills {}/{}",
                kernel.name, k.name, k.registers, k.shared, k.stack, k.spill_stores, k.spill_loads
            );
            if k.spill_stores > 0 || k.spill_loads > 0 {
                spills.push(format!("{}.cu {}", kernel.name, k.name));
            }
        }
    }
    assert!(
        spills.is_empty(),
        "kernels that spill registers: {spills:?}"
    );

    if let Some(out) = std::env::var_os("R1_PTX_OUT") {
        let out = PathBuf::from(out);
        let written = fill_ptx_cache(&out, ARCH, &include).expect("writing the PTX cache");
        for (kernel, path) in kernel_sources().iter().zip(&written) {
            assert_eq!(path, &ptx_cache_path(&out, kernel, ARCH));
        }
        eprintln!("wrote {} PTX files to {}", written.len(), out.display());
    }
}

#[test]
fn a_kernel_with_a_syntax_error_fails_with_nvrtcs_log() {
    // Runs where NVRTC loads in this process: in the child the test above starts (which runs
    // every test of this file), or in a shell with LD_LIBRARY_PATH set.
    if !nvrtc_available() {
        eprintln!("SKIP: NVRTC is not loadable in this process");
        return;
    }
    let broken = r1_kernels::cuda::KernelSource {
        name: "broken",
        source: "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }",
    };
    let err =
        compile_kernel_ptx(&broken, ARCH, &[]).expect_err("an undefined name must not compile");
    let text = err.to_string();
    assert!(text.contains("broken"), "{text}");
    assert!(
        text.contains("undefined_name"),
        "NVRTC's log names the identifier: {text}"
    );
}
