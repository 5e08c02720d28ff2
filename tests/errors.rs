//! Bad input returns an error naming the op and the offending values, never a panic.

use stapes::autograd::Var;
use stapes::tensor::{DType, Device, Error, PadMode, Tensor};

fn t(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape.to_vec(), DType::F32, &Device::Cpu).unwrap()
}

fn msg<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn mismatched_shapes() {
    let m = msg(t(&[8, 3, 5]).matmul(&t(&[4, 6])));
    assert_eq!(m, "matmul: lhs [8, 3, 5] and rhs [4, 6] do not agree on the contracted dim (5 vs 4)");
    let m = msg(t(&[2, 3]).add(&t(&[4])));
    assert!(m.starts_with("add: shapes [2, 3] and [4] cannot be broadcast together"), "{m}");
    let m = msg(Tensor::cat(&[&t(&[2, 3]), &t(&[2, 4])], 0usize));
    assert!(m.contains("shape mismatch in cat") && m.contains("[2, 3]") && m.contains("[2, 4]"), "{m}");
    let m = msg(t(&[1, 3, 8, 8]).conv2d(&t(&[4, 2, 3, 3]), None, [1, 1], [0, 0], [1, 1], 1));
    assert!(m.starts_with("conv2d:") && m.contains("[4, 2, 3, 3]"), "{m}");
    let m = msg(t(&[2, 5]).layer_norm(&[4], None, None, 1e-5));
    assert!(m.contains("normalized_shape [4]"), "{m}");
    let m = msg(Tensor::stack(&[&t(&[2]), &t(&[3])], 0usize));
    assert!(m.contains("shape mismatch in stack"), "{m}");
    let m = msg(t(&[4]).split(&[1, 2], 0usize));
    assert!(m.contains("sum to 3"), "{m}");
}

#[test]
fn wrong_dtype_and_device() {
    let i = Tensor::zeros([3], DType::I64, &Device::Cpu).unwrap();
    let m = msg(i.exp());
    assert_eq!(m, "exp: unsupported dtype I64 (expected a floating point tensor (f16, bf16, f32, f64))");
    let m = msg(t(&[3]).add(&Tensor::zeros([3], DType::F64, &Device::Cpu).unwrap()));
    assert_eq!(m, "add: dtype mismatch, F32 vs F64");
    let m = msg(t(&[3]).to_vec::<f64>());
    assert!(m.contains("dtype mismatch"), "{m}");
    let m = msg(t(&[3]).index_select(0usize, &t(&[1])));
    assert!(m.contains("indices must be i64"), "{m}");
    let m = msg(t(&[3]).masked_fill(&t(&[3]), 1.0));
    assert!(m.contains("masks must be u8"), "{m}");
    let m = msg(Tensor::zeros([2], DType::F32, &Device::Cuda(0)));
    assert!(m.contains("cuda:0") || m.contains("Cuda(0)"), "{m}");
}

#[test]
fn out_of_range_indices_and_dims() {
    let idx = Tensor::from_vec(vec![0i64, 7], [2], &Device::Cpu).unwrap();
    let m = msg(t(&[5, 2]).index_select(0usize, &idx));
    assert_eq!(m, "index_select: index 7 out of range for dim 0 of size 5");
    let m = msg(t(&[5, 2]).embedding(&idx));
    assert!(m.starts_with("embedding: index 7"), "{m}");
    let neg = Tensor::from_vec(vec![-1i64], [1, 1], &Device::Cpu).unwrap();
    assert!(msg(t(&[2, 2]).gather(1usize, &neg)).contains("index -1"));
    let m = msg(t(&[2, 3]).sum([2usize], false));
    assert_eq!(m, "sum: dim 2 out of range for a tensor of rank 2 (valid: -2..=1)");
    assert!(msg(t(&[2, 3]).softmax(-3i32)).contains("dim -3 out of range"));
    assert!(msg(t(&[2, 3]).narrow(1usize, 2, 2)).contains("out of bounds for dim 1 of size 3"));
    assert!(msg(t(&[2, 3]).permute(&[0, 0])).contains("not a permutation"));
}

#[test]
fn reshape_to_wrong_element_count() {
    let m = msg(t(&[2, 3]).reshape([4, 2]));
    assert_eq!(m, "reshape: cannot reshape [2, 3] (6 elements) into [4, 2] (8 elements)");
    let m = msg(Tensor::from_vec(vec![1.0f32; 5], [2, 3], &Device::Cpu));
    assert!(m.contains("5 elements") && m.contains("6 elements"), "{m}");
    assert!(msg(t(&[6]).reshape_infer(&[-1, -1])).contains("at most one -1"));
    assert!(msg(t(&[6]).reshape_infer(&[4, -1])).contains("invalid for input of size 6"));
}

#[test]
fn invalid_arguments() {
    assert!(msg(t(&[1, 1, 4, 4]).max_pool2d([2, 2], [0, 1], [0, 0], [1, 1], false)).contains("must be positive"));
    assert!(msg(t(&[1, 1, 4, 4]).max_pool2d([2, 2], [1, 1], [2, 2], [1, 1], false)).contains("at most half"));
    assert!(msg(t(&[1, 2, 3]).pad(&[3, 0], PadMode::Reflect, 0.0)).contains("reflect padding"));
    assert!(msg(t(&[3]).clamp(1.0, 0.0)).contains("min 1 is greater than max 0"));
    assert!(
        msg(t(&[1, 3]).batch_norm(None, None, None, None, true, 0.1, 1e-5)).contains("more than 1 value per channel")
    );
    assert!(msg(t(&[2, 3]).chunk(0, 0usize)).contains("positive"));
    assert!(msg(Tensor::arange(0.0, 1.0, 0.0, DType::F32, &Device::Cpu)).contains("arange"));
    // autograd errors
    let x = Var::leaf(t(&[3]));
    assert!(msg(x.exp().unwrap().backward()).contains("one-element outputs"));
    assert!(msg(x.backward_with(&t(&[4]))).contains("seed gradient has shape [4]"));
}

#[test]
fn nan_input_propagates_without_panicking() {
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], [3], &Device::Cpu).unwrap();
    assert!(x.max([0usize], false).unwrap().to_vec::<f32>().unwrap()[0].is_nan());
    assert!(x.softmax(0usize).unwrap().to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
    assert_eq!(x.argmax(0usize, false).unwrap().to_vec::<i64>().unwrap(), vec![1]);
    assert!(!x.all_finite().unwrap());
    assert!(x.relu().unwrap().to_vec::<f32>().unwrap()[1].is_nan());
}
