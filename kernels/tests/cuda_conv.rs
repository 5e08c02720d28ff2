//! The convolution kernels of `kernels/cuda/conv.cu` against the Rust CPU convolution
//! (`stapes_kernels::cpu::conv`), on the emulator (and on the GPU when one is present): every
//! GEMM runs on the CPU (a GPU build uses cuBLAS there), the column and epilogue kernels in the
//! emulator, and the composition must give what the CPU kernels give:
//!
//! * forward: im2col + GEMM + bias epilogue == `conv2d_forward` (and with ReLU, its ReLU);
//! * backward input: GEMM `Wᵀ · grad_out` + col2im == `conv2d_backward_input`;
//! * backward weight: im2col + GEMM `grad_out · colᵀ` == `conv2d_backward_weight`;
//! * bias gradient (plain and through the ReLU) == `conv2d_backward_bias`.
//!
//! Geometries: strides, paddings, dilations, groups, 1x1 (pointwise and strided), a 1-D
//! convolution (h = 1), a kernel larger than the input (all padding), stride larger than the
//! kernel (input pixels no tap reads), and planes bigger than the emulator's grid.

use stapes_kernels::cpu::conv::{
    conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dGeom,
};
use stapes_kernels::cpu::rnn::{gemm_strided, Strided};
use stapes_kernels::cuda::conv::{self, col_len, col_rows, Activation};
use stapes_kernels::cuda::emu::EmuSchedule;
use stapes_kernels::cuda::parity::{assert_close, backends, Tolerance};
use stapes_kernels::cuda::Backend;

/// Deterministic values uniform in `[lo, hi)`.
fn values(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            lo + (hi - lo) * ((s >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn geom(
    n: usize,
    c_in: usize,
    (h, w): (usize, usize),
    c_out: usize,
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dGeom {
    Conv2dGeom { n, c_in, h, w, c_out, kh, kw, stride, padding, dilation, groups }
}

fn geoms() -> Vec<Conv2dGeom> {
    vec![
        geom(2, 3, (7, 9), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        geom(2, 4, (8, 7), 6, (3, 2), (2, 1), (1, 0), (1, 1), 2),
        geom(1, 2, (9, 10), 3, (3, 3), (1, 2), (2, 1), (2, 2), 1),
        geom(3, 4, (6, 11), 4, (2, 3), (2, 2), (1, 2), (2, 1), 2),
        geom(2, 4, (5, 6), 6, (1, 1), (1, 1), (0, 0), (1, 1), 2),
        geom(2, 3, (6, 7), 2, (1, 1), (2, 2), (0, 0), (1, 1), 1),
        geom(2, 3, (1, 20), 4, (1, 5), (1, 2), (0, 2), (1, 1), 1),
        geom(1, 2, (5, 5), 2, (2, 2), (3, 3), (1, 1), (1, 1), 1),
        geom(1, 1, (1, 1), 1, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        geom(2, 2, (2, 3), 3, (5, 5), (1, 1), (2, 2), (1, 1), 1),
        // a CRDNN-like layer: 80 mel bins x 37 frames, 31 channels: planes of 2960 > the
        // emulator's 2048-thread grid
        geom(2, 3, (80, 37), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ]
}

fn ctx(what: &str, g: &Conv2dGeom, backend: &Backend) -> String {
    format!("conv2d {what} {g:?} on the {}", backend.describe())
}

/// GEMM sums of `K` products in another order than the CPU convolution's blocked GEMMs: a few
/// f32 roundings of values of order 1-10.
fn gemm_tol() -> Tolerance {
    Tolerance::new(1e-5, 1e-5)
}

struct Sizes {
    ohw: usize,
    k: usize,
    kg: usize,
    cog: usize,
}

fn sizes(g: &Conv2dGeom) -> Sizes {
    Sizes { ohw: g.out_h() * g.out_w(), k: col_rows(g), kg: col_rows(g) / g.groups, cog: g.c_out / g.groups }
}

/// `out[b] = W · col[b]` per image and group, on the CPU; col holds images `first..` of `g.n`.
fn forward_gemm(g: &Conv2dGeom, w: &[f32], col: &[f32], out: &mut [f32]) {
    let Sizes { ohw, k, kg, cog } = sizes(g);
    for b in 0..g.n {
        for grp in 0..g.groups {
            gemm_strided(
                cog,
                ohw,
                kg,
                out,
                Strided::rows((b * g.c_out + grp * cog) * ohw, ohw),
                false,
                w,
                Strided::rows(grp * cog * kg, kg),
                col,
                Strided::rows((b * k + grp * kg) * ohw, ohw),
                1,
            );
        }
    }
}

fn check_conv(backend: &Backend, g: &Conv2dGeom) {
    let Sizes { ohw, k, kg, cog } = sizes(g);
    let x = values(g.n * g.c_in * g.h * g.w, 1, -1.0, 1.0);
    let w = values(g.c_out * kg, 2, -1.0, 1.0);
    let bias = values(g.c_out, 3, -1.0, 1.0);
    let out_len = g.n * g.c_out * ohw;
    let go = values(out_len, 4, -1.0, 1.0);
    let dims = (g.n, g.c_out, ohw);

    // forward: im2col of all images at once
    let d_x = backend.upload(&x).unwrap();
    let mut d_col = backend.zeros::<f32>(col_len(g, g.n)).unwrap();
    conv::im2col_f32(backend, g, &d_x, 0..g.n, &mut d_col).unwrap();
    let col = backend.download(&d_col).unwrap();
    let mut out = vec![0.0f32; out_len];
    forward_gemm(g, &w, &col, &mut out);
    let d_bias = backend.upload(&bias).unwrap();
    let mut want = vec![0.0f32; out_len];
    conv2d_forward(g, &x, &w, Some(&bias), &mut want);
    for act in [Activation::Identity, Activation::Relu] {
        let mut d_out = backend.upload(&out).unwrap();
        conv::bias_act_f32(backend, &mut d_out, dims, Some(&d_bias), act).unwrap();
        let want_act: Vec<f32> = want.iter().map(|&v| if act == Activation::Relu { v.max(0.0) } else { v }).collect();
        assert_close(
            &backend.download(&d_out).unwrap(),
            &want_act,
            gemm_tol(),
            &ctx(&format!("forward {act:?}"), g, backend),
        );
    }
    // without a bias, ReLU only
    let mut want_nb = vec![0.0f32; out_len];
    conv2d_forward(g, &x, &w, None, &mut want_nb);
    let mut d_out = backend.upload(&out).unwrap();
    conv::bias_act_f32(backend, &mut d_out, dims, None, Activation::Relu).unwrap();
    let want_nb: Vec<f32> = want_nb.iter().map(|v| v.max(0.0)).collect();
    assert_close(&backend.download(&d_out).unwrap(), &want_nb, gemm_tol(), &ctx("forward ReLU, no bias", g, backend));

    // im2col of one image at a time (first_image > 0) gives the same columns
    if g.n > 1 {
        let per = col_len(g, 1);
        for b in 0..g.n {
            let mut d_one = backend.zeros::<f32>(per).unwrap();
            conv::im2col_f32(backend, g, &d_x, b..b + 1, &mut d_one).unwrap();
            assert_eq!(
                backend.download(&d_one).unwrap(),
                &col[b * per..(b + 1) * per],
                "{}",
                ctx(&format!("im2col image {b}"), g, backend)
            );
        }
    }

    // backward weight: dW[g] = Σ_b grad_out[b, g] · col[b][g]ᵀ
    let mut dw = vec![0.0f32; g.c_out * kg];
    for b in 0..g.n {
        for grp in 0..g.groups {
            gemm_strided(
                cog,
                kg,
                ohw,
                &mut dw,
                Strided::rows(grp * cog * kg, kg),
                true,
                &go,
                Strided::rows((b * g.c_out + grp * cog) * ohw, ohw),
                &col,
                Strided::rows((b * k + grp * kg) * ohw, ohw).t(),
                1,
            );
        }
    }
    let mut want_dw = vec![0.0f32; dw.len()];
    conv2d_backward_weight(g, &x, &go, &mut want_dw);
    assert_close(&dw, &want_dw, gemm_tol(), &ctx("backward weight", g, backend));

    // backward input: gcol[b][g] = W[g]ᵀ · grad_out[b, g], then col2im (in two image ranges)
    let mut gcol = vec![0.0f32; col_len(g, g.n)];
    for b in 0..g.n {
        for grp in 0..g.groups {
            gemm_strided(
                kg,
                ohw,
                cog,
                &mut gcol,
                Strided::rows((b * k + grp * kg) * ohw, ohw),
                false,
                &w,
                Strided::rows(grp * cog * kg, kg).t(),
                &go,
                Strided::rows((b * g.c_out + grp * cog) * ohw, ohw),
                1,
            );
        }
    }
    let mut want_gi = vec![0.0f32; x.len()];
    conv2d_backward_input(g, &go, &w, &mut want_gi);
    let mut d_gi = backend.upload(&vec![f32::NAN; x.len()]).unwrap();
    let split = g.n / 2;
    let per = col_len(g, 1);
    for range in [0..split, split..g.n] {
        let d_gcol = backend.upload(&gcol[range.start * per..range.end * per]).unwrap();
        conv::col2im_f32(backend, g, &d_gcol, range, &mut d_gi).unwrap();
    }
    assert_close(&backend.download(&d_gi).unwrap(), &want_gi, gemm_tol(), &ctx("backward input", g, backend));

    // bias gradients: sums over n·oh·ow values of [-1, 1), f32 tree vs f64 on the CPU
    let bias_tol = Tolerance::new(1e-5, 2e-6 * (g.n * ohw) as f64 + 1e-6);
    let mut want_gb = vec![0.0f32; g.c_out];
    conv2d_backward_bias(g, &go, &mut want_gb);
    let d_go = backend.upload(&go).unwrap();
    let mut d_gb = backend.zeros::<f32>(g.c_out).unwrap();
    conv::bias_grad_f32(backend, &d_go, dims, &mut d_gb).unwrap();
    assert_close(&backend.download(&d_gb).unwrap(), &want_gb, bias_tol, &ctx("bias grad", g, backend));
    // through the ReLU of the forward output
    let y: Vec<f32> = want.iter().map(|v| v.max(0.0)).collect();
    let pre: Vec<f32> = go.iter().zip(&y).map(|(&g, &y)| if y > 0.0 { g } else { 0.0 }).collect();
    conv2d_backward_bias(g, &pre, &mut want_gb);
    let d_y = backend.upload(&y).unwrap();
    let mut d_pre = backend.zeros::<f32>(out_len).unwrap();
    conv::bias_relu_backward_f32(backend, &d_go, &d_y, dims, &mut d_pre, &mut d_gb).unwrap();
    assert_eq!(backend.download(&d_pre).unwrap(), pre, "{}", ctx("ReLU backward", g, backend));
    assert_close(&backend.download(&d_gb).unwrap(), &want_gb, bias_tol, &ctx("bias grad through ReLU", g, backend));
}

#[test]
fn conv_matches_cpu() {
    for backend in backends() {
        for g in geoms() {
            check_conv(&backend, &g);
        }
    }
}

#[test]
fn conv_matches_cpu_with_random_schedule() {
    let backend = Backend::emulator_with(EmuSchedule::random(0xc0de));
    for g in geoms().into_iter().take(4) {
        check_conv(&backend, &g);
    }
}

/// Many channels with one value each (BatchNorm1d-like `s = 1`, more channels than the
/// emulator's reduction grid), and planes far longer than a block.
#[test]
fn bias_grad_shapes() {
    for backend in backends() {
        for (n, c, s) in [(3, 37, 1), (1, 1, 5000), (4, 2, 777), (2, 40, 33)] {
            let go = values(n * c * s, 9, -1.0, 1.0);
            let g = geom(n, 1, (1, s), c, (1, 1), (1, 1), (0, 0), (1, 1), 1);
            let mut want = vec![0.0f32; c];
            conv2d_backward_bias(&g, &go, &mut want);
            let d_go = backend.upload(&go).unwrap();
            let mut d_gb = backend.zeros::<f32>(c).unwrap();
            conv::bias_grad_f32(&backend, &d_go, (n, c, s), &mut d_gb).unwrap();
            let tol = Tolerance::new(1e-5, 2e-6 * (n * s) as f64 + 1e-6);
            assert_close(&backend.download(&d_gb).unwrap(), &want, tol, &format!("bias grad [{n}, {c}, {s}]"));
        }
    }
}

#[test]
fn conv_shapes_are_checked() {
    let backend = Backend::emulator();
    let g = geom(2, 3, (5, 5), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let x = backend.zeros::<f32>(2 * 3 * 25).unwrap();
    let mut col = backend.zeros::<f32>(col_len(&g, 1)).unwrap();
    let e = conv::im2col_f32(&backend, &g, &x, 0..2, &mut col).unwrap_err();
    assert!(e.to_string().contains("col 675 (expected 1350)"), "{e}");
    let e = conv::im2col_f32(&backend, &g, &x, 2..3, &mut col).unwrap_err();
    assert!(e.to_string().contains("not a range of the batch"), "{e}");
    let bad = Conv2dGeom { groups: 2, ..g };
    let e = conv::im2col_f32(&backend, &bad, &x, 0..1, &mut col).unwrap_err();
    assert!(e.to_string().contains("divisible"), "{e}");
}
