//! Every differentiable op checked against central finite differences in f64, on random shapes
//! drawn by proptest (small, so that the numeric Jacobian stays cheap).
// `&[x.clone()]` keeps the many one-input checks uniform
#![allow(clippy::cloned_ref_to_slice_refs)]

use proptest::prelude::*;
use stapes::autograd::{gradcheck, Var};
use stapes::tensor::{DType, Device, Generator, PadMode, Result, Tensor};

const EPS: f64 = 1e-6;
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-5;

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

fn rand_pos(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::rand_with(&mut Generator::new(seed), 0.5, 2.0, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

fn check(name: &str, f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor]) {
    if let Err(e) = gradcheck(f, inputs, EPS, ATOL, RTOL) {
        panic!(
            "gradcheck of {name} failed on shapes {:?}: {e}",
            inputs.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>()
        );
    }
}

fn shape_strategy(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=4, 1..=max_rank)
}

/// A shape that broadcasts against `s`: some dims set to 1, maybe fewer leading dims.
fn broadcast_partner(s: &[usize], mask: u32, drop: usize) -> Vec<usize> {
    let drop = drop.min(s.len() - 1);
    s[drop..].iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn unary_ops(shape in shape_strategy(3), seed in 0u64..1000) {
        let x = randn(seed, &shape);
        let p = rand_pos(seed, &shape);
        check("neg", |v| v[0].neg(), &[x.clone()]);
        check("exp", |v| v[0].exp(), &[x.clone()]);
        check("log", |v| v[0].log(), &[p.clone()]);
        check("sqrt", |v| v[0].sqrt(), &[p.clone()]);
        check("rsqrt", |v| v[0].rsqrt(), &[p.clone()]);
        check("abs", |v| v[0].abs(), &[x.clone()]);
        check("relu", |v| v[0].relu(), &[x.clone()]);
        check("gelu", |v| v[0].gelu(), &[x.clone()]);
        check("gelu_tanh", |v| v[0].gelu_tanh(), &[x.clone()]);
        check("sigmoid", |v| v[0].sigmoid(), &[x.clone()]);
        check("tanh", |v| v[0].tanh(), &[x.clone()]);
        check("sin", |v| v[0].sin(), &[x.clone()]);
        check("cos", |v| v[0].cos(), &[x.clone()]);
        check("powf", |v| v[0].powf(2.5), &[p.clone()]);
        check("clamp", |v| v[0].clamp(-0.5, 0.7), &[x.clone()]);
        // through f32 the function is a staircase at 1e-7 relative: difference on a coarser step
        gradcheck(|v| v[0].to_dtype(DType::F32)?.to_dtype(DType::F64), &[x.clone()], 1e-2, 1e-4, 1e-4).expect("to_dtype");
    }

    #[test]
    fn binary_ops_with_broadcasting(shape in shape_strategy(3), mask in 0u32..8, drop in 0usize..2, seed in 0u64..1000) {
        let other = broadcast_partner(&shape, mask, drop);
        let a = randn(seed, &shape);
        let b = randn(seed + 1, &other);
        let pa = rand_pos(seed, &shape);
        let pb = rand_pos(seed + 1, &other);
        check("add", |v| v[0].add(&v[1]), &[a.clone(), b.clone()]);
        check("sub", |v| v[0].sub(&v[1]), &[b.clone(), a.clone()]);
        check("mul", |v| v[0].mul(&v[1]), &[a.clone(), b.clone()]);
        check("div", |v| v[0].div(&v[1]), &[a.clone(), pb.clone()]);
        check("maximum", |v| v[0].maximum(&v[1]), &[a.clone(), b.clone()]);
        check("minimum", |v| v[0].minimum(&v[1]), &[a.clone(), b.clone()]);
        check("pow", |v| v[0].pow(&v[1]), &[pa.clone(), b.clone()]);
        let mask_t = a.cmp_scalar(0.0, stapes::tensor::CmpOp::Gt).unwrap();
        check("where_cond", |v| Var::where_cond(&mask_t, &v[0], &v[1]), &[a.clone(), b.clone()]);
        check("masked_fill", |v| v[0].masked_fill(&mask_t, 3.0), &[a.clone()]);
    }

    #[test]
    fn reductions(shape in shape_strategy(3), pick in 0usize..3, keepdim: bool, seed in 0u64..1000) {
        let x = randn(seed, &shape);
        let d = pick % shape.len();
        check("sum", |v| v[0].sum([d], keepdim), &[x.clone()]);
        check("mean", |v| v[0].mean([d], keepdim), &[x.clone()]);
        check("max", |v| v[0].max([d], keepdim), &[x.clone()]);
        check("min", |v| v[0].min([d], keepdim), &[x.clone()]);
        check("logsumexp", |v| v[0].logsumexp([d], keepdim), &[x.clone()]);
        if shape[d] > 1 {
            check("var", |v| v[0].var([d], 1, keepdim), &[x.clone()]);
            check("std", |v| v[0].std([d], 0, keepdim), &[x.clone()]);
        }
        check("sum_all", |v| v[0].sum_all(), &[x.clone()]);
        check("mean_all", |v| v[0].mean_all(), &[x.clone()]);
        if shape.len() > 1 {
            check("sum_two_dims", |v| v[0].sum([0, shape.len() - 1], keepdim), &[x.clone()]);
        }
        check("softmax", |v| v[0].softmax(d), &[x.clone()]);
        check("log_softmax", |v| v[0].log_softmax(d), &[x.clone()]);
    }

    #[test]
    fn matmul_shapes(m in 1usize..4, k in 1usize..4, n in 1usize..4, batch in 1usize..3, bcast: bool, seed in 0u64..1000) {
        let a = randn(seed, &[batch, m, k]);
        let b = if bcast { randn(seed + 1, &[k, n]) } else { randn(seed + 1, &[batch, k, n]) };
        check("matmul", |v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
        check("matmul_transposed", |v| v[0].matmul(&v[1].transpose(-1i32, -2i32)?), &[a.clone(), randn(seed + 2, &[n, k])]);
        check("matmul_vec", |v| v[0].matmul(&v[1]), &[randn(seed + 3, &[k]), b.clone()]);
        check("matmul_mat_vec", |v| v[0].matmul(&v[1]), &[a.clone(), randn(seed + 4, &[k])]);
    }

    #[test]
    fn views_and_shape_ops(shape in prop::collection::vec(2usize..=4, 2..=3), seed in 0u64..1000) {
        let x = randn(seed, &shape);
        let r = shape.len();
        let n: usize = shape.iter().product();
        check("reshape", |v| v[0].reshape([n]), &[x.clone()]);
        check("transpose", |v| v[0].transpose(0usize, r - 1)?.mul(&v[0].transpose(0usize, r - 1)?), &[x.clone()]);
        let perm: Vec<usize> = (0..r).rev().collect();
        check("permute", |v| v[0].permute(&perm)?.contiguous()?.sin(), &[x.clone()]);
        check("narrow", |v| v[0].narrow(r - 1, 1, shape[r - 1] - 1), &[x.clone()]);
        check("unsqueeze_squeeze", |v| v[0].unsqueeze(1usize)?.exp()?.squeeze(1usize), &[x.clone()]);
        let mut big = vec![3];
        big.extend(&shape);
        check("expand", |v| v[0].expand(big.clone())?.sin(), &[x.clone()]);
        check("cat", |v| Var::cat(&[&v[0], &v[1]], r - 1), &[x.clone(), randn(seed + 1, &shape)]);
        check("stack", |v| Var::stack(&[&v[0], &v[1]], 0usize), &[x.clone(), randn(seed + 1, &shape)]);
        check("split", |v| { let p = v[0].split(&[1, shape[0] - 1], 0usize)?; p[0].sum_all()?.add(&p[1].sqr()?.sum_all()?) }, &[x.clone()]);
        check("chunk", |v| { let p = v[0].chunk(2, r - 1)?; p[0].exp()?.sum_all()?.add(&p.last().unwrap().sum_all()?) }, &[x.clone()]);
        check("pad_constant", |v| v[0].pad(&[1, 2, 0, 1], PadMode::Constant, 0.5), &[x.clone()]);
        check("pad_reflect", |v| v[0].pad(&[1, 1], PadMode::Reflect, 0.0), &[x.clone()]);
    }

    #[test]
    fn indexing(rows in 2usize..5, cols in 1usize..4, seed in 0u64..1000) {
        let x = randn(seed, &[rows, cols]);
        let mut g = Generator::new(seed);
        let idx: Vec<i64> = (0..5).map(|_| (g.next_u64() % rows as u64) as i64).collect();
        let idx_t = Tensor::from_vec(idx.clone(), [5], &Device::Cpu).unwrap();
        check("index_select", |v| v[0].index_select(0usize, &idx_t), &[x.clone()]);
        check("embedding", |v| v[0].embedding(&idx_t.reshape([5, 1])?), &[x.clone()]);
        let gidx: Vec<i64> = (0..rows * cols).map(|_| (g.next_u64() % cols as u64) as i64).collect();
        let gidx_t = Tensor::from_vec(gidx, [rows, cols], &Device::Cpu).unwrap();
        check("gather", |v| v[0].gather(1usize, &gidx_t), &[x.clone()]);
        check("scatter_add", |v| v[0].scatter_add(1usize, &gidx_t, &v[1]), &[x.clone(), randn(seed + 5, &[rows, cols])]);
    }

    #[test]
    fn conv_pool_norm(n in 1usize..3, c in 1usize..3, hw in 4usize..7, stride in 1usize..3, seed in 0u64..1000) {
        let x = randn(seed, &[n, c * 2, hw, hw + 1]);
        let w = randn(seed + 1, &[3, c, 3, 2]);
        let b = randn(seed + 2, &[3]);
        check("conv2d", |v| v[0].conv2d(&v[1], Some(&v[2]), [stride, 1], [1, 0], [1, 2], 1), &[randn(seed, &[n, c, hw, hw + 1]), w.clone(), b.clone()]);
        let wg = randn(seed + 3, &[4, c, 2, 2]);
        check("conv2d_groups", |v| v[0].conv2d(&v[1], None, [1, stride], [0, 1], [1, 1], 2), &[x.clone(), wg]);
        check("conv1d", |v| v[0].conv1d(&v[1], Some(&v[2]), stride, 1, 1, 1), &[randn(seed, &[n, c, hw + 3]), randn(seed + 4, &[3, c, 3]), b.clone()]);
        check("max_pool2d", |v| v[0].max_pool2d([2, 2], [stride, stride], [1, 0], [1, 1], stride == 2), &[x.clone()]);
        check("avg_pool2d", |v| v[0].avg_pool2d([3, 2], [stride, 1], [1, 1], stride == 2, stride == 1), &[x.clone()]);
        let ns = [hw, hw + 1];
        check("layer_norm", |v| v[0].layer_norm(&ns, Some(&v[1]), Some(&v[2]), 1e-5), &[x.clone(), randn(seed + 5, &ns), randn(seed + 6, &ns)]);
        check("layer_norm_plain", |v| v[0].layer_norm(&ns[1..], None, None, 1e-5), &[x.clone()]);
        let ch = c * 2;
        check("batch_norm_train", |v| Ok(v[0].batch_norm(None, None, Some(&v[1]), Some(&v[2]), true, 0.1, 1e-5)?.0), &[x.clone(), randn(seed + 7, &[ch]), randn(seed + 8, &[ch])]);
        let rm = randn(seed + 9, &[ch]);
        let rv = rand_pos(seed + 10, &[ch]);
        check("batch_norm_eval", |v| Ok(v[0].batch_norm(Some(&rm), Some(&rv), Some(&v[1]), Some(&v[2]), false, 0.1, 1e-5)?.0), &[x.clone(), randn(seed + 7, &[ch]), randn(seed + 8, &[ch])]);
    }
}

#[test]
fn gradients_accumulate_and_graph_is_freed() {
    let x = Var::leaf(randn(1, &[3]));
    let y = x.sqr().unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let g1 = x.grad().unwrap().to_vec::<f64>().unwrap();
    // a second backward through the same (freed) graph is a clear error
    let e = y.backward().unwrap_err();
    assert!(e.to_string().contains("retain_graph"), "{e}");
    // a new graph accumulates into the same leaf
    x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = x.grad().unwrap().to_vec::<f64>().unwrap();
    for (a, b) in g1.iter().zip(&g2) {
        assert!((2.0 * a - b).abs() < 1e-12);
    }
    x.zero_grad();
    assert!(x.grad().is_none());
    // retain_graph allows two passes
    let y = x.exp().unwrap().sum_all().unwrap();
    let seed = Tensor::ones((), DType::F64, &Device::Cpu).unwrap();
    y.backward_with_options(&seed, true).unwrap();
    y.backward_with_options(&seed, false).unwrap();
    assert!(y.backward().is_err());
}

#[test]
fn no_grad_and_detach_cut_the_graph() {
    let x = Var::leaf(randn(2, &[4]));
    let y = stapes::autograd::no_grad(|| x.exp().unwrap());
    assert!(!y.requires_grad());
    let z = x.detach().exp().unwrap();
    assert!(!z.requires_grad());
    assert!(z.sum_all().unwrap().backward().is_err());
}

#[test]
fn fused_op_with_custom_backward() {
    // a user-registered op: y = 3x, with its own backward
    let x = Var::leaf(randn(3, &[5]));
    let y = Var::from_op(
        "triple",
        x.tensor().mul_scalar(3.0).unwrap(),
        &[&x],
        Box::new(|g| Ok(vec![Some(g.mul_scalar(3.0)?)])),
    );
    y.sum_all().unwrap().backward().unwrap();
    assert!(x.grad().unwrap().to_vec::<f64>().unwrap().iter().all(|&v| (v - 3.0).abs() < 1e-12));
}

#[test]
fn long_chain_backward_does_not_overflow_the_stack() {
    let x = Var::leaf(Tensor::ones([2], DType::F64, &Device::Cpu).unwrap());
    let mut y = x.clone();
    for _ in 0..20_000 {
        y = y.mul_scalar(1.0).unwrap();
    }
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![1.0, 1.0]);
}
