//! Launch wrappers for `kernels/cuda/norm.cu`: layer norm and batch norm, forward and backward,
//! `f32`. CPU reference: [`crate::cpu::norm`]; the wrappers take the same operands with the
//! same meaning as [`layer_norm_forward`](crate::cpu::norm::layer_norm_forward),
//! [`layer_norm_backward`](crate::cpu::norm::layer_norm_backward),
//! [`batch_norm_forward`](crate::cpu::norm::batch_norm_forward) and
//! [`batch_norm_backward`](crate::cpu::norm::batch_norm_backward) (optional weights, biases,
//! running statistics and parameter gradients included), with device buffers.
//!
//! Statistics are Welford in `f32` (see `norm.cu`), reductions deterministic. Two backward
//! passes allocate a small device workspace per call (the layer-norm column partials,
//! `2·chunks·cols` floats; the batch-norm channel sums, `2·c` floats); nothing synchronises
//! with the host.

use super::elementwise::launch_config;
use super::launch::{Backend, DeviceBuffer, KernelArg, LaunchConfig};
use super::reduce::row_launch_config;
use super::CudaError;

fn check_len(op: &'static str, what: &str, len: usize, want: usize, shape: &str) -> Result<(), CudaError> {
    if len != want {
        return Err(CudaError::Shape {
            op,
            message: format!("{what} has {len} elements, expected {want} for {shape}"),
        });
    }
    Ok(())
}

fn check_opt(op: &'static str, what: &str, len: Option<usize>, want: usize, shape: &str) -> Result<(), CudaError> {
    len.map_or(Ok(()), |l| check_len(op, what, l, want, shape))
}

/// Layer norm over the last `cols` elements of each of `rows` rows of `x`:
/// `y = (x - mean) · rstd · weight + bias`, saving `mean` and `rstd` (`[rows]`) for
/// [`layer_norm_backward_f32`]. `weight`, `bias`: `[cols]`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
    weight: Option<&DeviceBuffer<f32>>,
    bias: Option<&DeviceBuffer<f32>>,
    eps: f64,
    y: &mut DeviceBuffer<f32>,
    mean: &mut DeviceBuffer<f32>,
    rstd: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::norm::layer_norm_forward_f32";
    let shape = format!("[rows={rows}, cols={cols}]");
    check_len(OP, "x", x.len(), rows * cols, &shape)?;
    check_len(OP, "y", y.len(), rows * cols, &shape)?;
    check_len(OP, "mean", mean.len(), rows, &shape)?;
    check_len(OP, "rstd", rstd.len(), rows, &shape)?;
    check_opt(OP, "weight", weight.map(|w| w.len()), cols, &shape)?;
    check_opt(OP, "bias", bias.map(|b| b.len()), cols, &shape)?;
    if rows == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(x),
        KernelArg::u64(rows as u64),
        KernelArg::u64(cols as u64),
        KernelArg::input(weight.unwrap_or(x)),
        KernelArg::u32(weight.is_some() as u32),
        KernelArg::input(bias.unwrap_or(x)),
        KernelArg::u32(bias.is_some() as u32),
        KernelArg::f32(eps as f32),
        KernelArg::output(y),
        KernelArg::output(mean),
        KernelArg::output(rstd),
    ];
    let (kernel, cfg) = if cols <= super::softmax::WARP_ROW_MAX {
        ("layer_norm_warp_forward_f32", super::softmax::warp_row_launch_config(backend, rows))
    } else {
        ("layer_norm_forward_f32", row_launch_config(backend, rows, cols))
    };
    // SAFETY: row r < rows (one block, or one warp for the warp kernel) reads/writes x and y at
    // [r·cols, (r + 1)·cols), weight/bias at j < cols when given, mean/rstd at r: all lengths
    // checked above; the warp kernel's 32 registers per lane cover cols <= WARP_ROW_MAX.
    unsafe { backend.launch(kernel, cfg, &mut args) }
}

/// Rows of the layer-norm parameter-gradient chunks: enough chunks (each at least 32 rows) that
/// the column tiles times the chunks fill about 8 blocks per SM.
fn param_chunks(backend: &Backend, rows: usize, cols: usize) -> (usize, usize) {
    let tiles = cols.div_ceil(32).max(1);
    let want = ((backend.multiprocessor_count() as usize * 8).div_ceil(tiles)).max(1);
    let chunks = want.min(rows.div_ceil(32)).clamp(1, 65_535);
    let per_chunk = rows.div_ceil(chunks).max(1);
    (rows.div_ceil(per_chunk).max(1), per_chunk)
}

/// Layer norm backward with the forward's `mean`/`rstd`: `grad_x` (overwritten) and, when
/// given, `grad_weight = Σ_rows grad_y · xhat` and `grad_bias = Σ_rows grad_y` (`[cols]`,
/// overwritten).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    grad_y: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
    weight: Option<&DeviceBuffer<f32>>,
    mean: &DeviceBuffer<f32>,
    rstd: &DeviceBuffer<f32>,
    grad_x: &mut DeviceBuffer<f32>,
    grad_weight: Option<&mut DeviceBuffer<f32>>,
    grad_bias: Option<&mut DeviceBuffer<f32>>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::norm::layer_norm_backward_f32";
    let shape = format!("[rows={rows}, cols={cols}]");
    check_len(OP, "x", x.len(), rows * cols, &shape)?;
    check_len(OP, "grad_y", grad_y.len(), rows * cols, &shape)?;
    check_len(OP, "grad_x", grad_x.len(), rows * cols, &shape)?;
    check_len(OP, "mean", mean.len(), rows, &shape)?;
    check_len(OP, "rstd", rstd.len(), rows, &shape)?;
    check_opt(OP, "weight", weight.map(|w| w.len()), cols, &shape)?;
    check_opt(OP, "grad_weight", grad_weight.as_ref().map(|g| g.len()), cols, &shape)?;
    check_opt(OP, "grad_bias", grad_bias.as_ref().map(|g| g.len()), cols, &shape)?;
    if rows > 0 && cols > 0 {
        let mut args = [
            KernelArg::input(x),
            KernelArg::input(grad_y),
            KernelArg::u64(rows as u64),
            KernelArg::u64(cols as u64),
            KernelArg::input(weight.unwrap_or(x)),
            KernelArg::u32(weight.is_some() as u32),
            KernelArg::input(mean),
            KernelArg::input(rstd),
            KernelArg::output(grad_x),
        ];
        let cfg = row_launch_config(backend, rows, cols);
        // SAFETY: block r < rows touches [r·cols, (r + 1)·cols) of x, grad_y, grad_x, weight[j < cols]
        // when given, mean[r], rstd[r]: lengths checked above.
        unsafe { backend.launch("layer_norm_backward_input_f32", cfg, &mut args)? };
    }
    if (grad_weight.is_none() && grad_bias.is_none()) || cols == 0 {
        return Ok(());
    }
    let (has_gw, has_gb) = (grad_weight.is_some() as u32, grad_bias.is_some() as u32);
    // empty buffers stand in for a missing output (never written; no allocation)
    let (mut none_w, mut none_b) = (backend.zeros::<f32>(0)?, backend.zeros::<f32>(0)?);
    let (chunks, per_chunk) = param_chunks(backend, rows, cols);
    let mut partial = backend.zeros::<f32>(2 * chunks * cols)?;
    if rows > 0 {
        let tiles = cols.div_ceil(32).min(65_535) as u32;
        let cfg = LaunchConfig { grid: (tiles, chunks as u32, 1), block: (32, 8, 1), shared_mem_bytes: 0 };
        let mut args = [
            KernelArg::input(x),
            KernelArg::input(grad_y),
            KernelArg::u64(rows as u64),
            KernelArg::u64(cols as u64),
            KernelArg::input(mean),
            KernelArg::input(rstd),
            KernelArg::u64(per_chunk as u64),
            KernelArg::output(&mut partial),
        ];
        // SAFETY: chunk k < chunks reads rows [k·per_chunk, min(rows, (k + 1)·per_chunk)) of x and
        // grad_y at columns < cols, writes partial[(0|chunks + k)·cols + j] < 2·chunks·cols.
        unsafe { backend.launch("layer_norm_grad_params_partial_f32", cfg, &mut args)? };
    }
    let mut args = [
        KernelArg::input(&partial),
        KernelArg::u64(chunks as u64),
        KernelArg::u64(cols as u64),
        KernelArg::output(grad_weight.unwrap_or(&mut none_w)),
        KernelArg::u32(has_gw),
        KernelArg::output(grad_bias.unwrap_or(&mut none_b)),
        KernelArg::u32(has_gb),
    ];
    // SAFETY: column j < cols reads partial[(0|chunks + k)·cols + j] and writes the given outputs
    // ([cols], checked); a missing output is never written.
    unsafe { backend.launch("layer_norm_grad_params_finish_f32", launch_config(backend, cols), &mut args) }
}

/// `[n, c, s]` of batch norm data.
fn bn_shape(n: usize, c: usize, s: usize) -> String {
    format!("[n={n}, c={c}, s={s}]")
}

/// Batch norm forward over `x` `[n, c, s]` (`s` the product of the spatial dims), as the CPU's
/// [`batch_norm_forward`](crate::cpu::norm::batch_norm_forward): training uses the batch
/// statistics (saved in `save_mean`/`save_rstd`, `[c]`) and updates the given running stats
/// (`running = (1 - momentum)·running + momentum·stat`, unbiased variance); inference uses the
/// running stats (both required) and saves them as `save_mean` and `1 / sqrt(running_var + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    (n, c, s): (usize, usize, usize),
    weight: Option<&DeviceBuffer<f32>>,
    bias: Option<&DeviceBuffer<f32>>,
    running_mean: Option<&mut DeviceBuffer<f32>>,
    running_var: Option<&mut DeviceBuffer<f32>>,
    training: bool,
    momentum: f64,
    eps: f64,
    y: &mut DeviceBuffer<f32>,
    save_mean: &mut DeviceBuffer<f32>,
    save_rstd: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::norm::batch_norm_forward_f32";
    let shape = bn_shape(n, c, s);
    check_len(OP, "x", x.len(), n * c * s, &shape)?;
    check_len(OP, "y", y.len(), n * c * s, &shape)?;
    check_len(OP, "save_mean", save_mean.len(), c, &shape)?;
    check_len(OP, "save_rstd", save_rstd.len(), c, &shape)?;
    check_opt(OP, "weight", weight.map(|w| w.len()), c, &shape)?;
    check_opt(OP, "bias", bias.map(|b| b.len()), c, &shape)?;
    check_opt(OP, "running_mean", running_mean.as_ref().map(|r| r.len()), c, &shape)?;
    check_opt(OP, "running_var", running_var.as_ref().map(|r| r.len()), c, &shape)?;
    if c == 0 {
        return Ok(());
    }
    if training {
        let (has_rm, has_rv) = (running_mean.is_some() as u32, running_var.is_some() as u32);
        let (mut none_m, mut none_v) = (backend.zeros::<f32>(0)?, backend.zeros::<f32>(0)?);
        let mut args = [
            KernelArg::input(x),
            KernelArg::u64(n as u64),
            KernelArg::u64(c as u64),
            KernelArg::u64(s as u64),
            KernelArg::f32(eps as f32),
            KernelArg::f32(momentum as f32),
            KernelArg::u32(has_rm),
            KernelArg::output(running_mean.unwrap_or(&mut none_m)),
            KernelArg::u32(has_rv),
            KernelArg::output(running_var.unwrap_or(&mut none_v)),
            KernelArg::output(save_mean),
            KernelArg::output(save_rstd),
        ];
        // SAFETY: block ch < c reads x at (b·c + ch)·s + j (b < n, j < s) < n·c·s and writes the
        // [c] statistics at ch (lengths checked); a missing running stat is never touched.
        unsafe { backend.launch("batch_norm_stats_f32", row_launch_config(backend, c, n * s), &mut args)? };
    } else {
        let (Some(rm), Some(rv)) = (running_mean, running_var) else {
            let message = "inference (training = false) needs running_mean and running_var".to_string();
            return Err(CudaError::Shape { op: OP, message });
        };
        let mut args = [
            KernelArg::input(rm),
            KernelArg::input(rv),
            KernelArg::u64(c as u64),
            KernelArg::f32(eps as f32),
            KernelArg::output(save_mean),
            KernelArg::output(save_rstd),
        ];
        // SAFETY: thread ch < c touches index ch of four [c] buffers (checked).
        unsafe { backend.launch("batch_norm_eval_stats_f32", launch_config(backend, c), &mut args)? };
    }
    let total = n * c * s;
    if total == 0 {
        return Ok(());
    }
    let mut args = [
        KernelArg::input(x),
        KernelArg::u64(n as u64),
        KernelArg::u64(c as u64),
        KernelArg::u64(s as u64),
        KernelArg::input(weight.unwrap_or(x)),
        KernelArg::u32(weight.is_some() as u32),
        KernelArg::input(bias.unwrap_or(x)),
        KernelArg::u32(bias.is_some() as u32),
        KernelArg::input(save_mean),
        KernelArg::input(save_rstd),
        KernelArg::output(y),
    ];
    // SAFETY: element e < n·c·s of x and y, channel (e / s) % c of the [c] operands (checked).
    unsafe { backend.launch("batch_norm_apply_f32", launch_config(backend, total), &mut args) }
}

/// Batch norm backward with the forward's `save_mean`/`save_rstd`, as the CPU's
/// [`batch_norm_backward`](crate::cpu::norm::batch_norm_backward): `grad_x` (overwritten) and,
/// when given, `grad_weight = Σ grad_y · xhat` and `grad_bias = Σ grad_y` per channel.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_f32(
    backend: &Backend,
    x: &DeviceBuffer<f32>,
    grad_y: &DeviceBuffer<f32>,
    (n, c, s): (usize, usize, usize),
    weight: Option<&DeviceBuffer<f32>>,
    save_mean: &DeviceBuffer<f32>,
    save_rstd: &DeviceBuffer<f32>,
    training: bool,
    grad_x: &mut DeviceBuffer<f32>,
    grad_weight: Option<&mut DeviceBuffer<f32>>,
    grad_bias: Option<&mut DeviceBuffer<f32>>,
) -> Result<(), CudaError> {
    const OP: &str = "cuda::norm::batch_norm_backward_f32";
    let shape = bn_shape(n, c, s);
    check_len(OP, "x", x.len(), n * c * s, &shape)?;
    check_len(OP, "grad_y", grad_y.len(), n * c * s, &shape)?;
    check_len(OP, "grad_x", grad_x.len(), n * c * s, &shape)?;
    check_len(OP, "save_mean", save_mean.len(), c, &shape)?;
    check_len(OP, "save_rstd", save_rstd.len(), c, &shape)?;
    check_opt(OP, "weight", weight.map(|w| w.len()), c, &shape)?;
    check_opt(OP, "grad_weight", grad_weight.as_ref().map(|g| g.len()), c, &shape)?;
    check_opt(OP, "grad_bias", grad_bias.as_ref().map(|g| g.len()), c, &shape)?;
    if c == 0 {
        return Ok(());
    }
    let need_sums = training || grad_weight.is_some() || grad_bias.is_some();
    let mut sums = backend.zeros::<f32>(if need_sums { 2 * c } else { 0 })?;
    if need_sums {
        let mut args = [
            KernelArg::input(x),
            KernelArg::input(grad_y),
            KernelArg::u64(n as u64),
            KernelArg::u64(c as u64),
            KernelArg::u64(s as u64),
            KernelArg::input(save_mean),
            KernelArg::output(&mut sums),
        ];
        // SAFETY: block ch < c reads x and grad_y inside n·c·s, writes sums[2ch], sums[2ch + 1].
        unsafe { backend.launch("batch_norm_grad_sums_f32", row_launch_config(backend, c, n * s), &mut args)? };
    }
    let total = n * c * s;
    if total > 0 {
        let mut args = [
            KernelArg::input(x),
            KernelArg::input(grad_y),
            KernelArg::u64(n as u64),
            KernelArg::u64(c as u64),
            KernelArg::u64(s as u64),
            KernelArg::input(weight.unwrap_or(x)),
            KernelArg::u32(weight.is_some() as u32),
            KernelArg::input(save_mean),
            KernelArg::input(save_rstd),
            KernelArg::input(&sums),
            KernelArg::u32(training as u32),
            KernelArg::output(grad_x),
        ];
        // SAFETY: element e < n·c·s, channel (e / s) % c of the [c] operands and of sums [2c]
        // (read only when training, when it was computed).
        unsafe { backend.launch("batch_norm_backward_input_f32", launch_config(backend, total), &mut args)? };
    }
    if grad_weight.is_none() && grad_bias.is_none() {
        return Ok(());
    }
    let (has_gw, has_gb) = (grad_weight.is_some() as u32, grad_bias.is_some() as u32);
    let (mut none_w, mut none_b) = (backend.zeros::<f32>(0)?, backend.zeros::<f32>(0)?);
    let mut args = [
        KernelArg::input(&sums),
        KernelArg::input(save_rstd),
        KernelArg::u64(c as u64),
        KernelArg::output(grad_weight.unwrap_or(&mut none_w)),
        KernelArg::u32(has_gw),
        KernelArg::output(grad_bias.unwrap_or(&mut none_b)),
        KernelArg::u32(has_gb),
    ];
    // SAFETY: thread ch < c reads sums[2ch..2ch + 2] and save_rstd[ch], writes the given [c]
    // outputs at ch (checked); a missing one is never written.
    unsafe { backend.launch("batch_norm_grad_params_f32", launch_config(backend, c), &mut args) }
}
