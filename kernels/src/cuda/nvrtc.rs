//! NVRTC: compiles a kernel source to a cubin for one architecture, and reads ptxas' resource
//! report (registers, shared memory, spills) from the program log.
//!
//! Used by the GPU path (compile for the device at first use) and by the CI compile check
//! (`tests/cuda_nvrtc.rs`: every kernel for sm_80 and sm_90, no spills allowed). NVRTC needs no
//! GPU: `scripts/install-nvrtc.sh` installs it from PyPI. It does not ship `cuda_fp16.h` and
//! `cuda_bf16.h`; [`include_dirs`] looks for them in a CUDA toolkit and in the PyPI layout.

use super::{CudaError, KernelSource};
use cudarc::nvrtc::{result, sys};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Whether `libnvrtc` can be loaded. Checked before any call into cudarc's NVRTC bindings,
/// which panic when the library is missing.
pub fn library_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library's candidate names.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// NVRTC's version, `(major, minor)` (None when the library is missing).
pub fn version() -> Option<(i32, i32)> {
    if !library_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the pointers are valid.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().ok()?;
    Some((major, minor))
}

/// Directories searched for the CUDA headers (`cuda_fp16.h`), in order: `$STAPES_NVRTC_DIR`
/// (the PyPI layout of `scripts/install-nvrtc.sh`: `nvidia/cu13/include`, or the CUDA 12 wheels'
/// `nvidia/cuda_runtime/include`), the repository's `.nvrtc/`, `$CUDA_HOME`, `$CUDA_PATH`,
/// `/usr/local/cuda`.
pub fn header_search_path() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("STAPES_NVRTC_DIR") {
        roots.push(PathBuf::from(d));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".nvrtc"));
    let mut dirs: Vec<PathBuf> = Vec::new();
    for r in roots {
        dirs.push(r.join("nvidia").join("cu13").join("include"));
        dirs.push(r.join("nvidia").join("cuda_runtime").join("include"));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(var) {
            dirs.push(PathBuf::from(d).join("include"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs
}

/// The directories of [`header_search_path`] that hold `cuda_fp16.h` (deduplicated).
pub fn include_dirs() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for d in header_search_path() {
        if d.join("cuda_fp16.h").is_file() {
            let d = d.canonicalize().unwrap_or(d);
            if !found.contains(&d) {
                found.push(d);
            }
        }
    }
    found
}

/// What one compilation produced.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The cubin (loadable by `cuModuleLoadData`).
    pub cubin: Vec<u8>,
    /// NVRTC's program log: warnings, and ptxas' report when `verbose_ptxas` was asked.
    pub log: String,
}

/// Compiles `src` for the real architecture `arch` (`sm_80`, `sm_90`, ...), so ptxas runs and
/// the result is a cubin. `verbose_ptxas` adds `--ptxas-options=-v` (the resource report).
pub fn compile(src: &KernelSource, arch: &str, verbose_ptxas: bool) -> Result<Compiled, CudaError> {
    if !library_present() {
        return Err(CudaError::NvrtcMissing);
    }
    let includes = include_dirs();
    if includes.is_empty() {
        for header in ["cuda_fp16.h", "cuda_bf16.h", "cuda_runtime.h"] {
            if src.source.contains(header) {
                let searched: Vec<String> = header_search_path().iter().map(|p| p.display().to_string()).collect();
                return Err(CudaError::HeadersMissing { file: src.file, header, searched: searched.join(", ") });
            }
        }
    }
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    if verbose_ptxas {
        options.push("--ptxas-options=-v".to_string());
    }
    options.extend(includes.iter().map(|d| format!("-I{}", d.display())));

    let nvrtc_err = |e: result::NvrtcError| CudaError::Nvrtc { file: src.file, message: e.to_string() };
    let code =
        CString::new(src.source).map_err(|_| CudaError::Nvrtc { file: src.file, message: "NUL in source".into() })?;
    let name = CString::new(src.file).expect("file names have no NUL");
    let prog = result::create_program(&code, Some(&name)).map_err(nvrtc_err)?;
    // SAFETY: `prog` is a live program until destroy_program below; code and name outlive it.
    unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog).map(|l| c_chars_to_string(&l)).unwrap_or_default();
        let out = match compiled {
            Ok(()) => cubin(prog).map(|cubin| Compiled { cubin, log }).map_err(nvrtc_err),
            Err(e) if e.0 == sys::nvrtcResult::NVRTC_ERROR_COMPILATION => {
                Err(CudaError::Compile { file: src.file, arch: arch.to_string(), log })
            }
            Err(e) => Err(nvrtc_err(e)),
        };
        let _ = result::destroy_program(prog);
        out
    }
}

/// The cubin of a compiled program.
///
/// # Safety
/// `prog` must be a live, successfully compiled program.
unsafe fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
    let mut buf = vec![0u8; size];
    sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char).result()?;
    Ok(buf)
}

fn c_chars_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Resources of one kernel for one architecture, from ptxas' `-v` report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's name, as ptxas reports it.
    pub kernel: String,
    /// The architecture compiled for, e.g. `sm_90`.
    pub arch: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory in bytes (dynamic shared memory is set at launch).
    pub shared_bytes: u32,
    /// Barriers used (ptxas' `used N barriers`).
    pub barriers: u32,
    /// Stack frame per thread, in bytes.
    pub stack_frame_bytes: u32,
    /// Bytes of register spill stores to local memory.
    pub spill_store_bytes: u32,
    /// Bytes of register spill loads from local memory.
    pub spill_load_bytes: u32,
}

impl KernelResources {
    /// Whether ptxas spilled registers to local memory.
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }
}

/// Parses ptxas' `-v` report, one entry per `Compiling entry function 'name' for 'sm_XX'`:
///
/// ```text
/// ptxas info    : Compiling entry function 'reduce_sum_rows_f32' for 'sm_90'
/// ptxas info    : Function properties for reduce_sum_rows_f32
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 16 registers, used 1 barriers, 128 bytes smem
/// ```
pub fn parse_ptxas_report(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let mut current: Option<usize> = None;
    let mut properties_of: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or_default().to_string();
            let arch = rest.split("for '").nth(1).and_then(|a| a.split('\'').next()).unwrap_or_default().to_string();
            out.push(KernelResources { kernel, arch, ..Default::default() });
            current = Some(out.len() - 1);
            properties_of = None;
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            properties_of = Some(rest.trim().to_string());
        } else if line.contains("bytes stack frame") {
            let target = properties_of.take();
            if let Some(k) = current.filter(|&i| target.as_deref() == Some(out[i].kernel.as_str())) {
                let r = &mut out[k];
                r.stack_frame_bytes = number_before(line, "bytes stack frame");
                r.spill_store_bytes = number_before(line, "bytes spill stores");
                r.spill_load_bytes = number_before(line, "bytes spill loads");
            }
        } else if line.contains("Used ") && line.contains("registers") {
            if let Some(k) = current {
                let r = &mut out[k];
                r.registers = number_before(line, "registers");
                r.shared_bytes = number_before(line, "bytes smem");
                r.barriers = number_before(line, "barriers");
            }
        }
    }
    out
}

/// Every `Function properties` line of the log (entry or not: a non-inlined device function
/// can spill too) that reports spill stores or loads.
pub fn spill_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("bytes spill stores"))
        .filter(|l| number_before(l, "bytes spill stores") > 0 || number_before(l, "bytes spill loads") > 0)
        .map(|l| l.trim().to_string())
        .collect()
}

/// The integer right before `marker` in `line` (0 when absent).
fn number_before(line: &str, marker: &str) -> u32 {
    let Some(pos) = line.find(marker) else { return 0 };
    line[..pos]
        .split(|c: char| !c.is_ascii_digit())
        .rev()
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'dyn' for 'sm_90'\n\
            ptxas info    : Function properties for dyn\n\
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 10 registers, used 1 barriers\n\
            ptxas info    : Compile time = 2.844 ms\n\
            ptxas info    : Function properties for helper\n\
            ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
            ptxas info    : Compiling entry function 'add_h' for 'sm_80'\n\
            ptxas info    : Function properties for add_h\n\
            ptxas         .     16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads\n\
            ptxas info    : Used 255 registers, used 1 barriers, 256 bytes smem, 380 bytes cmem[0]\n";
        let r = parse_ptxas_report(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                kernel: "dyn".into(),
                arch: "sm_90".into(),
                registers: 10,
                barriers: 1,
                ..Default::default()
            }
        );
        assert!(!r[0].spills());
        assert_eq!(r[1].kernel, "add_h");
        assert_eq!(r[1].arch, "sm_80");
        assert_eq!((r[1].registers, r[1].shared_bytes, r[1].stack_frame_bytes), (255, 256, 16));
        assert_eq!((r[1].spill_store_bytes, r[1].spill_load_bytes), (12, 8));
        assert!(r[1].spills());
        assert_eq!(spill_lines(log).len(), 2);
    }

    #[test]
    fn number_before_marker() {
        assert_eq!(number_before("Used 32 registers, used 1 barriers, 128 bytes smem", "bytes smem"), 128);
        assert_eq!(number_before("Used 32 registers", "bytes smem"), 0);
        assert_eq!(number_before("Used 32 registers", "registers"), 32);
    }
}
