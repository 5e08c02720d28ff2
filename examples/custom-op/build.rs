//! Finds the kernels of `cuda/*.cu` (their sources go to NVRTC on a GPU) and, with the `emu`
//! feature, compiles them for the CPU emulator: `$OUT_DIR/bias_silu_kernels.rs`.
fn main() {
    let emulate = std::env::var_os("CARGO_FEATURE_EMU").is_some();
    stapes_cuda_build::UserKernels::new("cuda").emulate(emulate).build("bias_silu_kernels");
}
