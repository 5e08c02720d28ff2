//! # stapes-cuda-build
//!
//! Build-script support for CUDA C kernels that run through stapes: the kernels of
//! `stapes-kernels` itself, and the kernels of a crate of your own (a custom fused op).
//!
//! It does two things at build time:
//!
//! 1. **Finds the kernels.** Every `extern "C" __global__` function of each `.cu` file (the
//!    names become C symbols and NVRTC lookup keys, so they must be unmangled and unique), and
//!    every `extern __shared__` array. The source text is embedded (`include_str!`) in a
//!    generated Rust table; on a GPU, stapes compiles it with NVRTC at run time.
//! 2. **Builds them for the emulator** (optional): each `.cu` is compiled as C++17 against
//!    `include/cuda_emu.h` (CUDA threads as fibers, `__syncthreads` a barrier, `__shared__` per
//!    block, warp collectives, atomics, half types; see that header), with a C launcher per
//!    kernel, into a static library; the generated table lists the launchers. The emulator's
//!    scheduler itself is linked once, by `stapes-kernels` with its `emu` feature.
//!
//! A crate with its own kernels (`cuda/my_op.cu`) uses it from its `build.rs`:
//!
//! ```ignore
//! // build.rs
//! fn main() {
//!     // emulate when this crate's own `emu` feature (which enables `stapes-kernels/emu`) is on
//!     let emulate = std::env::var_os("CARGO_FEATURE_EMU").is_some();
//!     stapes_cuda_build::UserKernels::new("cuda").emulate(emulate).build("my_op_kernels");
//! }
//! ```
//!
//! and, in the crate, includes the generated module and registers it once before launching:
//!
//! ```ignore
//! mod kernels {
//!     include!(concat!(env!("OUT_DIR"), "/my_op_kernels.rs"));
//! }
//! kernels::register()?; // then Backend::launch("my_kernel", ...) finds it, on a GPU or the emulator
//! ```

#![warn(missing_docs)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One `.cu` file and what the scan found in it.
#[derive(Clone, Debug)]
pub struct CudaFile {
    /// The file's path.
    pub path: PathBuf,
    /// Its file name, e.g. `elementwise.cu`.
    pub file_name: String,
    /// Its `extern "C" __global__` kernels, in file order.
    pub kernels: Vec<String>,
    /// The names of its `extern __shared__` (dynamic shared memory) arrays.
    pub dynamic_shared: Vec<String>,
}

/// The directory holding `cuda_emu.h` (and stand-ins for `cuda_fp16.h`, `cuda_bf16.h`,
/// `cuda_runtime.h`), for compiling `.cu` files as C++ against the emulator.
pub fn emu_include_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Scans `dir` for `*.cu` files (in name order; none when it does not exist) and prints the
/// `cargo:rerun-if-changed` lines for them. Panics, as a build script should, on a kernel that
/// is not `extern "C" __global__ void name(`.
pub fn scan_dir(dir: &Path) -> Vec<CudaFile> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect()
        }
        Err(_) => Vec::new(),
    };
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let code = strip_comments(&text);
            let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
            let kernels = find_kernels(&code, &file_name);
            let dynamic_shared = find_dynamic_shared(&code);
            CudaFile { path, file_name, kernels, dynamic_shared }
        })
        .collect()
}

/// Panics when a kernel name appears twice (kernel names are C symbols).
pub fn check_unique_names<'a>(files: impl IntoIterator<Item = &'a CudaFile>) {
    let mut seen = BTreeSet::new();
    for f in files {
        for k in &f.kernels {
            assert!(
                seen.insert(k.clone()),
                "kernel `{k}` ({}) is defined twice: kernel names must be unique",
                f.file_name
            );
        }
    }
}

/// Appends `static NAME: &[KernelSource] = &[...]` for `files` to `out`: each file's name, its
/// source through `include_str!` and its kernels. `source_type` is the path of
/// `stapes_kernels::cuda::KernelSource` as seen where the code is included, `visibility`
/// e.g. `"pub"`.
pub fn write_source_table(
    out: &mut String,
    visibility: &str,
    name: &str,
    source_type: &str,
    doc: &str,
    files: &[CudaFile],
) {
    writeln!(out, "/// {doc}").unwrap();
    writeln!(out, "{visibility} static {name}: &[{source_type}] = &[").unwrap();
    for f in files {
        let kernels: Vec<String> = f.kernels.iter().map(|k| format!("{k:?}")).collect();
        writeln!(
            out,
            "    {source_type} {{ file: {:?}, source: include_str!({:?}), kernels: &[{}] }},",
            f.file_name,
            f.path.display().to_string(),
            kernels.join(", ")
        )
        .unwrap();
    }
    writeln!(out, "];\n").unwrap();
}

/// How [`compile_emulated`] names and links what it generates.
#[derive(Clone, Debug)]
pub struct EmuBuild<'a> {
    /// The static library's name (unique in the final binary).
    pub lib_name: &'a str,
    /// Where generated C++ goes (a folder under `OUT_DIR`).
    pub gen_dir: PathBuf,
    /// More C++ files compiled into the library (the emulator's runtime, for stapes-kernels).
    pub extra_sources: Vec<PathBuf>,
    /// Path prefix of the emulator's Rust types (`EmuKernel`, `EmuLaunchConfig`) where the
    /// table is included: `""` inside `stapes_kernels::cuda::emu`, else
    /// `"::stapes_kernels::cuda::emu::"`.
    pub emu_types: &'a str,
    /// Visibility and name of the generated `&[EmuKernel]` table.
    pub table: (&'a str, &'a str),
    /// Define the dynamic-shared-memory buffers strongly, with the poisoning function the
    /// runtime calls (stapes-kernels); otherwise weakly, so that a name shared with
    /// stapes-kernels' kernels resolves to one buffer.
    pub owns_runtime: bool,
}

/// Compiles `files` as C++17 against the emulator header into the static library
/// `build.lib_name` and returns the Rust source of the launcher table (the `extern "C"`
/// declarations and `static TABLE: &[EmuKernel]`), to be written into `OUT_DIR` and included.
pub fn compile_emulated(files: &[&CudaFile], build: &EmuBuild<'_>) -> String {
    std::fs::create_dir_all(&build.gen_dir).unwrap_or_else(|e| panic!("creating {}: {e}", build.gen_dir.display()));
    let include = emu_include_dir();
    println!("cargo:rerun-if-changed={}", include.display());
    let mut cc = cc::Build::new();
    cc.cpp(true)
        .std("c++17")
        // The emulator runs every CUDA thread as a fiber: it must be optimised even in test builds.
        .opt_level(2)
        .include(&include)
        .define("STAPES_EMU", "1")
        .flag_if_supported("-Wno-unused-function")
        // `#pragma unroll` is for NVRTC; the host compiler ignores it
        .flag_if_supported("-Wno-unknown-pragmas");
    for f in &build.extra_sources {
        println!("cargo:rerun-if-changed={}", f.display());
        cc.file(f);
    }

    let t = build.emu_types;
    // One translation unit per .cu: the shim, the kernel source unchanged, then its launchers.
    let mut rust = String::from("// Generated by stapes-cuda-build. Do not edit.\n\nextern \"C\" {\n");
    let (vis, name) = build.table;
    let mut table =
        format!("/// Every emulated kernel: name, source file, launcher.\n{vis} static {name}: &[{t}EmuKernel] = &[\n");
    for f in files {
        let mut tu = format!("// Generated by stapes-cuda-build from {}.\n#include \"cuda_emu.h\"\n", f.file_name);
        writeln!(tu, "#include {:?}", f.path.display().to_string()).unwrap();
        for k in &f.kernels {
            writeln!(tu, "STAPES_EMU_EXPORT({k})").unwrap();
            writeln!(
                rust,
                "    fn stapes_emu_launch_{k}(cfg: *const {t}EmuLaunchConfig, args: *const *mut ::std::ffi::c_void, \
                 arg_sizes: *const usize, n_args: usize) -> ::std::ffi::c_int;"
            )
            .unwrap();
            writeln!(
                table,
                "    {t}EmuKernel {{ name: {k:?}, file: {:?}, launch: stapes_emu_launch_{k} }},",
                f.file_name
            )
            .unwrap();
        }
        let stem = f.file_name.trim_end_matches(".cu");
        let tu_path = build.gen_dir.join(format!("kernels_{stem}.cpp"));
        write_if_changed(&tu_path, &tu);
        cc.file(tu_path);
    }
    rust.push_str("}\n\n");
    rust.push_str(&table);
    rust.push_str("];\n");

    // Dynamic shared memory: one thread-local buffer per `extern __shared__` name (see cuda_emu.h).
    let mut names: Vec<&String> = files.iter().flat_map(|f| &f.dynamic_shared).collect();
    names.sort();
    names.dedup();
    let mut smem = String::from(
        "// Generated by stapes-cuda-build: the storage behind each `extern __shared__` array.\n\
         #include \"cuda_emu.h\"\n",
    );
    let linkage = if build.owns_runtime { "" } else { "__attribute__((weak)) " };
    for n in &names {
        writeln!(smem, "{linkage}alignas(64) thread_local unsigned char {n}[STAPES_EMU_MAX_DYNAMIC_SMEM];").unwrap();
    }
    if build.owns_runtime {
        smem.push_str("extern \"C\" void stapes_emu_poison_dynamic_smem(std::size_t bytes) {\n    (void)bytes;\n");
        for n in &names {
            writeln!(smem, "    std::memset({n}, 0xff, bytes);").unwrap();
        }
        smem.push_str("}\n");
    }
    let smem_path = build.gen_dir.join("dynamic_shared.cpp");
    write_if_changed(&smem_path, &smem);
    cc.file(smem_path);

    cc.compile(build.lib_name);
    rust
}

/// The kernels of a crate of your own, for its `build.rs` (see the crate docs).
#[derive(Clone, Debug)]
pub struct UserKernels {
    dir: PathBuf,
    emulate: bool,
}

impl UserKernels {
    /// The `.cu` files of `dir`, relative to the crate's manifest directory.
    pub fn new(dir: impl AsRef<Path>) -> UserKernels {
        let manifest =
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR (run from build.rs)"));
        UserKernels { dir: manifest.join(dir), emulate: false }
    }
    /// Whether to compile them for the emulator too (needs a C++17 compiler, and
    /// `stapes-kernels` with its `emu` feature in the final binary, which links the runtime).
    pub fn emulate(mut self, emulate: bool) -> UserKernels {
        self.emulate = emulate;
        self
    }
    /// Writes `$OUT_DIR/{name}.rs`: `pub static SOURCES` (the sources, for NVRTC),
    /// `pub static EMULATED` (the emulator's launchers; empty without emulation) and
    /// `pub fn register()`, which hands both to `stapes_kernels::cuda::register_kernels`.
    /// With emulation, also builds the static library `{name}_emu`.
    pub fn build(self, name: &str) {
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR (run from build.rs)"));
        let files = scan_dir(&self.dir);
        assert!(!files.is_empty(), "no .cu files in {}", self.dir.display());
        check_unique_names(&files);
        let mut rust = String::from("// Generated by stapes-cuda-build. Do not edit.\n\n");
        write_source_table(
            &mut rust,
            "pub",
            "SOURCES",
            "::stapes_kernels::cuda::KernelSource",
            "The CUDA C sources of this crate's kernels.",
            &files,
        );
        if self.emulate {
            let build = EmuBuild {
                lib_name: &format!("{name}_emu"),
                gen_dir: out_dir.join(format!("{name}_emu")),
                extra_sources: Vec::new(),
                emu_types: "::stapes_kernels::cuda::emu::",
                table: ("pub", "EMULATED"),
                owns_runtime: false,
            };
            rust.push_str(&compile_emulated(&files.iter().collect::<Vec<_>>(), &build));
        } else {
            rust.push_str(
                "/// This build has no emulated kernels.\npub static EMULATED: &[::stapes_kernels::cuda::emu::EmuKernel] = &[];\n",
            );
        }
        rust.push_str(
            "\n/// Registers these kernels with stapes (idempotent), so `Backend::launch` finds them by name.\n\
             pub fn register() -> ::std::result::Result<(), ::stapes_kernels::cuda::CudaError> {\n    \
             ::stapes_kernels::cuda::register_kernels(SOURCES, EMULATED)\n}\n",
        );
        write_if_changed(&out_dir.join(format!("{name}.rs")), &rust);
    }
}

/// Removes `//` and `/* */` comments (kernel sources have no comment markers inside strings).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            out.push(' ');
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Positions of `word` in `code` as a whole token.
fn token_positions<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

fn read_ident(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// `s` without a leading `__launch_bounds__(...)` (and the whitespace around it).
fn skip_launch_bounds<'a>(s: &'a str, file: &str) -> &'a str {
    let s = s.trim_start();
    let Some(r) = s.strip_prefix("__launch_bounds__") else { return s };
    let mut depth = 0;
    for (i, c) in r.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 1 => return r[i + 1..].trim_start(),
            ')' => depth -= 1,
            _ => {}
        }
    }
    panic!("{file}: unbalanced __launch_bounds__")
}

/// Names of the `__global__` kernels, in file order; each must be `extern "C" ... void name(`.
fn find_kernels(code: &str, file: &str) -> Vec<String> {
    let mut names = Vec::new();
    for pos in token_positions(code, "__global__") {
        // The declaration starts after the previous `;`, `}` or `{`.
        let decl_start = code[..pos].rfind([';', '}', '{']).map_or(0, |i| i + 1);
        let prefix = &code[decl_start..pos];
        // `__global__ [__launch_bounds__(..)] void [__launch_bounds__(..)] name(`
        let rest = skip_launch_bounds(&code[pos + "__global__".len()..], file);
        let (ret, rest) = read_ident(rest);
        let (name, rest) = read_ident(skip_launch_bounds(rest, file));
        assert!(
            ret == "void" && !name.is_empty() && rest.trim_start().starts_with('('),
            "{file}: cannot read the kernel declared at `__global__{}`",
            &code[pos + 10..(pos + 60).min(code.len())]
        );
        assert!(
            prefix.contains("extern \"C\""),
            "{file}: kernel `{name}` must be declared `extern \"C\" __global__` (unmangled, found by name)"
        );
        names.push(name.to_string());
    }
    names
}

/// Names declared `extern __shared__ T name[]` (dynamic shared memory).
fn find_dynamic_shared(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for pos in token_positions(code, "extern") {
        let rest = code[pos + "extern".len()..].trim_start();
        let Some(decl) = rest.strip_prefix("__shared__") else { continue };
        let decl = &decl[..decl.find(';').unwrap_or(decl.len())];
        let bracket = decl.find('[').expect("extern __shared__ declaration without []");
        let before = decl[..bracket].trim_end();
        let start = before.rfind(|c: char| !is_ident_char(c)).map_or(0, |i| i + 1);
        let name = before[start..].to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Writes `text` to `path` unless it already holds exactly that (so nothing is rebuilt).
pub fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
