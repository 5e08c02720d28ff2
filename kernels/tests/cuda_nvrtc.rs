//! The NVRTC compile check: every kernel source of `kernels/cuda/` compiles for sm_80 and sm_90
//! (real architectures, so ptxas runs) with `--ptxas-options=-v`, without register spills; the
//! emulator's self-test kernels must compile too. Writes ptxas' resource report to
//! `benches/kernel_resources.md`, referenced from `benches/RESULTS.md`.
//!
//! Needs `libnvrtc.so.13` on the library path and the CUDA headers (`scripts/install-nvrtc.sh`
//! installs both from PyPI, no GPU needed). Without NVRTC the test prints how to install it and
//! is skipped, except in CI (`CI=true`), where it fails.

use stapes_kernels::cuda::nvrtc::{self, KernelResources};
use stapes_kernels::cuda::{CudaError, KernelSource, EMU_SELFTEST_SOURCES, KERNEL_SOURCES};
use std::path::{Path, PathBuf};

const ARCHS: &[&str] = &["sm_80", "sm_90"];

fn benches_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("benches")
}

/// True when NVRTC is there; otherwise skips (prints why) or, in CI, fails.
fn nvrtc_or_skip() -> bool {
    if nvrtc::library_present() {
        return true;
    }
    let why = CudaError::NvrtcMissing.to_string();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {why}. .ci/run installs it with scripts/install-nvrtc.sh before `cargo test`.");
    }
    eprintln!("SKIPPED the NVRTC compile check (not passed): {why}");
    false
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    assert!(!KERNEL_SOURCES.is_empty(), "no kernel sources found in kernels/cuda/");
    if !nvrtc_or_skip() {
        return;
    }
    let mut failures: Vec<String> = Vec::new();
    let mut table: Vec<(&str, KernelResources)> = Vec::new();
    for src in KERNEL_SOURCES {
        assert!(!src.kernels.is_empty(), "{} has no extern \"C\" __global__ kernel", src.file);
        for &arch in ARCHS {
            let compiled = match nvrtc::compile(src, arch, true) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            let report = nvrtc::parse_ptxas_report(&compiled.log);
            for &kernel in src.kernels {
                match report.iter().find(|r| r.kernel == kernel && r.arch == arch) {
                    None => failures
                        .push(format!("{}: no ptxas report for {kernel} on {arch}:\n{}", src.file, compiled.log)),
                    Some(r) if r.spills() => {
                        failures.push(format!("{}: {kernel} spills registers on {arch}: {r:?}", src.file))
                    }
                    Some(r) => table.push((src.file, r.clone())),
                }
            }
            for line in nvrtc::spill_lines(&compiled.log) {
                failures.push(format!("{} on {arch}: {line}", src.file));
            }
        }
    }
    for src in EMU_SELFTEST_SOURCES {
        if let Err(e) = nvrtc::compile(src, "sm_80", false) {
            failures.push(format!("emulator self-test kernels must be valid CUDA: {e}"));
        }
    }
    assert!(failures.is_empty(), "NVRTC compile check failed:\n{}", failures.join("\n\n"));
    write_resource_table(&table);
}

#[test]
fn compile_errors_and_spills_are_reported() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = KernelSource {
        file: "broken.cu",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = y; }",
        kernels: &["k"],
    };
    let err = nvrtc::compile(&broken, "sm_80", true).unwrap_err();
    assert!(
        matches!(err, CudaError::Compile { .. }) && err.to_string().contains("identifier \"y\" is undefined"),
        "{err}"
    );
    // A kernel that needs more registers than ptxas may give it (forced low with launch bounds
    // and maxrregcount-like pressure) must show up as a spill.
    let spilling = KernelSource {
        file: "spill.cu",
        source: "extern \"C\" __global__ void __launch_bounds__(1024, 2) k(float* x) {\n\
                 float v[64];\n\
                 for (int i = 0; i < 64; i++) v[i] = x[i * blockDim.x + threadIdx.x];\n\
                 float s = 0; for (int i = 0; i < 64; i++) for (int j = 0; j < 64; j++) s += v[i] * v[j] / (1 + v[(i + j) % 64]);\n\
                 for (int i = 0; i < 64; i++) x[i] = v[i] * s; }",
        kernels: &["k"],
    };
    let compiled = nvrtc::compile(&spilling, "sm_80", true).unwrap();
    let report = nvrtc::parse_ptxas_report(&compiled.log);
    assert_eq!(report.len(), 1, "{}", compiled.log);
    assert!(report[0].spills() && !nvrtc::spill_lines(&compiled.log).is_empty(), "{}", compiled.log);
}

/// `benches/kernel_resources.md` (rewritten only when its content changes), and its reference
/// in `benches/RESULTS.md`.
fn write_resource_table(rows: &[(&str, KernelResources)]) {
    let (major, minor) = nvrtc::version().unwrap_or((0, 0));
    let mut md = String::new();
    md.push_str("# CUDA kernel resources\n\n");
    md.push_str("Generated by `cargo test -p stapes-kernels --test cuda_nvrtc` (kernels/tests/cuda_nvrtc.rs): every\n");
    md.push_str(&format!(
        "kernel of `kernels/cuda/` compiled by NVRTC {major}.{minor} with `--ptxas-options=-v`. Registers are per thread,\n"
    ));
    md.push_str(
        "shared memory is static (dynamic shared memory is set at launch), stack and spills in bytes. The test fails\n",
    );
    md.push_str("on any spill. Do not edit by hand.\n\n");
    md.push_str("| kernel | file | arch | registers | shared mem | barriers | stack | spill stores | spill loads |\n");
    md.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (file, r) in rows {
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.kernel,
            file,
            r.arch,
            r.registers,
            r.shared_bytes,
            r.barriers,
            r.stack_frame_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes
        ));
    }
    let dir = benches_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kernel_resources.md");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(md.as_str()) {
        std::fs::write(&path, md).unwrap();
    }
    reference_from_results(&dir.join("RESULTS.md"));
}

/// Makes sure `RESULTS.md` has a "CUDA kernel resources" section pointing at the table,
/// creating the file or appending the section if missing; other sections stay untouched.
fn reference_from_results(results: &Path) {
    const HEADING: &str = "## CUDA kernel resources";
    const LINE: &str = "Registers, shared memory and spills of every CUDA kernel for sm_80 and sm_90 (NVRTC, \
                        generated by the CI compile check): [kernel_resources.md](kernel_resources.md).";
    let text = std::fs::read_to_string(results).unwrap_or_default();
    if text.contains("(kernel_resources.md)") {
        return;
    }
    let updated = if text.is_empty() {
        format!("# Benchmark results\n\n{HEADING}\n\n{LINE}\n")
    } else if let Some(at) = text.find(HEADING) {
        let after_heading = at + HEADING.len();
        format!("{}\n\n{LINE}{}", &text[..after_heading], &text[after_heading..])
    } else {
        format!("{}\n\n{HEADING}\n\n{LINE}\n", text.trim_end())
    };
    std::fs::write(results, updated).unwrap();
}
