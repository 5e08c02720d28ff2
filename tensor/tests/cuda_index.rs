//! Index and shape ops on `Device::Cuda(0)` against the CPU, exactly: gather, scatter_add,
//! index_add, index_select, embedding (and its backward through index_add), cat, stack and pad
//! (constant and reflect), every dtype they take, views as operands, and the errors (the same
//! `IndexOutOfRange`, with the same first bad index, found on the device). Values are small
//! integers and halves, so sums are exact whatever order the atomics take.

use stapes_tensor::{cuda, DType, Device, PadMode, Tensor};

fn vals(shape: &[usize], seed: usize, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) * 0.5).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn ids(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

const FLOATS: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];
const ALL: [DType; 7] = [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8, DType::I8];

/// `f` on CPU tensors and on their uploads: same shape, dtype and values (exact), or the same
/// error message.
fn same(dev: &Device, what: &str, inputs: &[&Tensor], f: impl Fn(&[Tensor]) -> stapes_tensor::Result<Tensor>) {
    let cpu: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let gpu: Vec<Tensor> = inputs.iter().map(|t| t.to_device(dev).unwrap()).collect();
    match (f(&cpu), f(&gpu)) {
        (Ok(want), Ok(got)) => {
            assert_eq!(got.device(), dev, "{what}");
            assert_eq!(got.dims(), want.dims(), "{what}");
            assert_eq!(got.dtype(), want.dtype(), "{what}");
            assert_eq!(got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap(), "{what} {}", want.dtype());
        }
        (Err(want), Err(got)) => assert_eq!(got.to_string(), want.to_string(), "{what}"),
        (want, got) => panic!("{what}: cpu {want:?}, cuda {got:?}"),
    }
}

#[test]
fn gather_matches_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let idx = ids(&[0, 3, 1, 1, 2, 0, 3, 3, 0, 1, 2, 2], &[3, 4]);
    for dtype in ALL {
        let x = vals(&[3, 5], 1, dtype);
        same(&dev, "gather dim 1", &[&x, &idx], |t| t[0].gather(1, &t[1]));
        let x = vals(&[4, 5], 2, dtype);
        same(&dev, "gather dim 0", &[&x, &idx], |t| t[0].gather(0, &t[1]));
    }
    // a transposed source and a 3-D case
    let x = vals(&[5, 3], 3, DType::F32);
    same(&dev, "gather of a view", &[&x, &idx], |t| t[0].t()?.gather(1, &t[1]));
    let x = vals(&[2, 6, 3], 4, DType::F64);
    let i3 = ids(&[5, 0, 1, 2, 4, 3, 0, 0, 5, 1, 1, 2], &[2, 2, 3]);
    same(&dev, "gather 3-D", &[&x, &i3], |t| t[0].gather(1, &t[1]));
    // errors: out of range (first bad in row-major order), negative, wrong dtype, shape
    let bad = ids(&[0, 1, 7, 2, -1, 9], &[2, 3]);
    same(&dev, "gather out of range", &[&vals(&[2, 4], 1, DType::F32), &bad], |t| t[0].gather(1, &t[1]));
    let neg = ids(&[0, -2, 1, 1], &[2, 2]);
    same(&dev, "gather negative", &[&vals(&[2, 4], 1, DType::F32), &neg], |t| t[0].gather(1, &t[1]));
    same(&dev, "gather f32 index", &[&vals(&[2, 4], 1, DType::F32), &vals(&[2, 2], 1, DType::F32)], |t| {
        t[0].gather(1, &t[1])
    });
    same(&dev, "gather shape", &[&vals(&[2, 4], 1, DType::F32), &ids(&[0, 1, 2], &[3, 1])], |t| t[0].gather(1, &t[1]));
}

#[test]
fn scatter_add_matches_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    // duplicates accumulate
    let idx = ids(&[0, 3, 1, 1, 2, 0, 3, 3, 0, 1, 1, 1], &[3, 4]);
    for dtype in FLOATS {
        let x = vals(&[3, 5], 1, dtype);
        let src = vals(&[3, 6], 2, dtype);
        same(&dev, "scatter_add dim 1", &[&x, &idx, &src], |t| t[0].scatter_add(1, &t[1], &t[2]));
        let x = vals(&[4, 4], 3, dtype);
        same(&dev, "scatter_add dim 0", &[&x, &idx, &src], |t| t[0].scatter_add(0, &t[1], &t[2]));
    }
    // the input is not modified
    let x = vals(&[3, 5], 1, DType::F32).to_device(&dev).unwrap();
    let before = x.to_vec_f64().unwrap();
    let _ = x
        .scatter_add(1, &idx.to_device(&dev).unwrap(), &vals(&[3, 6], 2, DType::F32).to_device(&dev).unwrap())
        .unwrap();
    assert_eq!(x.to_vec_f64().unwrap(), before);
    let bad = ids(&[0, 5, 1, 1], &[2, 2]);
    same(
        &dev,
        "scatter_add out of range",
        &[&vals(&[2, 4], 1, DType::F32), &bad, &vals(&[2, 2], 1, DType::F32)],
        |t| t[0].scatter_add(1, &t[1], &t[2]),
    );
    same(
        &dev,
        "scatter_add integer",
        &[&vals(&[2, 4], 1, DType::I64), &ids(&[0, 1], &[1, 2]), &vals(&[2, 2], 1, DType::I64)],
        |t| t[0].scatter_add(1, &t[1], &t[2]),
    );
}

#[test]
fn index_select_and_index_add_match_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let idx = ids(&[2, 0, 2, 1, 3], &[5]);
    for dtype in ALL {
        let x = vals(&[3, 4, 2], 1, dtype);
        same(&dev, "index_select dim 1", &[&x, &idx], |t| t[0].index_select(1, &t[1]));
        let x = vals(&[4, 3], 2, dtype);
        same(&dev, "index_select dim 0", &[&x, &idx], |t| t[0].index_select(0, &t[1]));
    }
    // a view of indices (narrow: dense but not the whole buffer) and of data
    let x = vals(&[4, 6], 3, DType::F32);
    same(&dev, "index_select views", &[&x, &idx], |t| t[0].t()?.index_select(1, &t[1].narrow(0, 1, 3)?));
    for dtype in FLOATS {
        let x = vals(&[3, 4, 2], 4, dtype);
        let src = vals(&[3, 5, 2], 5, dtype);
        same(&dev, "index_add", &[&x, &idx, &src], |t| t[0].index_add(1, &t[1], &t[2]));
    }
    same(&dev, "index_select out of range", &[&vals(&[3, 4], 1, DType::F32), &ids(&[1, 4, 9], &[3])], |t| {
        t[0].index_select(1, &t[1])
    });
    same(
        &dev,
        "index_add out of range",
        &[&vals(&[3, 4], 1, DType::F32), &ids(&[1, -1], &[2]), &vals(&[3, 2], 1, DType::F32)],
        |t| t[0].index_add(1, &t[1], &t[2]),
    );
    same(
        &dev,
        "index_add shape",
        &[&vals(&[3, 4], 1, DType::F32), &ids(&[1, 0], &[2]), &vals(&[3, 3], 1, DType::F32)],
        |t| t[0].index_add(1, &t[1], &t[2]),
    );
    same(&dev, "index_select empty", &[&vals(&[3, 4], 1, DType::F32), &ids(&[], &[0])], |t| {
        t[0].index_select(1, &t[1])
    });
}

#[test]
fn embedding_and_its_backward_match_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let w = vals(&[6, 4], 1, DType::F32);
    let i = ids(&[5, 0, 2, 2, 1, 5], &[2, 3]);
    same(&dev, "embedding", &[&w, &i], |t| t[0].embedding(&t[1]));
    same(&dev, "embedding bf16", &[&w.to_dtype(DType::BF16).unwrap(), &i], |t| t[0].embedding(&t[1]));
    // backward: grad_w = zeros.index_add(0, ids.flatten, grad_out.reshape([-1, dim]))
    let g = vals(&[2, 3, 4], 2, DType::F32);
    same(&dev, "embedding backward", &[&w, &i, &g], |t| {
        t[0].zeros_like()?.index_add(0, &t[1].flatten_all()?, &t[2].reshape([6, 4])?)
    });
    same(&dev, "embedding out of range", &[&w, &ids(&[1, 6], &[2])], |t| t[0].embedding(&t[1]));
}

#[test]
fn cat_stack_pad_match_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for dtype in ALL {
        let (a, b, c) = (vals(&[2, 3, 4], 1, dtype), vals(&[2, 1, 4], 2, dtype), vals(&[2, 5, 4], 3, dtype));
        same(&dev, "cat dim 1", &[&a, &b, &c], |t| Tensor::cat(&[&t[0], &t[1], &t[2]], 1));
        same(&dev, "cat dim 0", &[&a, &a], |t| Tensor::cat(&[&t[0], &t[1]], 0));
        same(&dev, "cat dim 2 with a view", &[&a, &c], |t| Tensor::cat(&[&t[0], &t[1].narrow(1, 1, 3)?], 2));
        same(&dev, "stack", &[&a, &a], |t| Tensor::stack(&[&t[0], &t[1]], 1));
        let x = vals(&[2, 3, 5], 4, dtype);
        same(&dev, "pad constant", &[&x], |t| t[0].pad(&[1, 2, 0, 3], PadMode::Constant, 2.5));
        same(&dev, "pad reflect", &[&x], |t| t[0].pad(&[4, 2, 2, 1], PadMode::Reflect, 0.0));
        same(&dev, "pad reflect of a view", &[&x], |t| t[0].transpose(1, 2)?.pad(&[2, 2], PadMode::Reflect, 0.0));
    }
    let x = vals(&[2, 3], 1, DType::F32);
    same(&dev, "cat with an empty", &[&x, &vals(&[2, 0], 1, DType::F32)], |t| Tensor::cat(&[&t[0], &t[1]], 1));
    same(&dev, "cat shape mismatch", &[&x, &vals(&[3, 3], 1, DType::F32)], |t| Tensor::cat(&[&t[0], &t[1]], 1));
    same(&dev, "cat dtype mismatch", &[&x, &vals(&[2, 3], 1, DType::F64)], |t| Tensor::cat(&[&t[0], &t[1]], 1));
    same(&dev, "pad reflect too large", &[&x], |t| t[0].pad(&[3, 0], PadMode::Reflect, 0.0));
    same(&dev, "pad nothing", &[&x], |t| t[0].pad(&[0, 0], PadMode::Reflect, 0.0));
    same(&dev, "pad constant of an empty", &[&vals(&[2, 0], 1, DType::F32)], |t| {
        t[0].pad(&[1, 1], PadMode::Constant, 1.0)
    });
    same(&dev, "pad bad pairs", &[&x], |t| t[0].pad(&[1, 1, 1], PadMode::Constant, 0.0));
}
