//! The CUDA caching allocator seen from tensors: freed buffers are reused, statistics add up,
//! and running out of memory is an error naming the request (on the emulator, with a memory
//! cap; on a GPU, with a request larger than the device). One test per binary: the cap and the
//! statistics are process-wide.

use stapes_tensor::{cuda, DType, Error, Tensor};

#[test]
fn buffers_are_cached_and_out_of_memory_is_an_error() {
    let Some(dev) = cuda::test_device() else {
        eprintln!("skipped: no GPU and no CUDA emulator in this build");
        return;
    };
    // A training-loop-like pattern: the same shapes every step reuse cached blocks.
    let x = Tensor::ones([256, 256], DType::F32, &dev).unwrap();
    let before = cuda::memory_stats(&dev).unwrap();
    for _ in 0..5 {
        let y = x.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap()[0], 1.0);
    }
    let after = cuda::memory_stats(&dev).unwrap();
    assert!(after.cache_hits >= before.cache_hits + 8, "{before:?} -> {after:?}");
    assert!(after.device_allocs <= before.device_allocs + 3, "{before:?} -> {after:?}");
    assert!(after.peak_allocated >= after.allocated && after.reserved >= after.allocated, "{after:?}");
    assert!(after.allocated >= 256 * 256 * 4, "x is alive: {after:?}");

    // Out of memory: a clear error, the cache emptied, and the device still usable afterwards.
    let too_big: usize = if cuda::is_emulated() {
        cuda::set_emulator_memory_limit(Some(64 << 20));
        100 << 20
    } else {
        1 << 50 // 1 PiB
    };
    let e = Tensor::zeros([too_big / 4], DType::F32, &dev).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("out of memory") && msg.contains("tried to allocate"), "{msg}");
    let s = cuda::memory_stats(&dev).unwrap();
    assert!(s.oom_retries >= 1, "{s:?}");
    let small = Tensor::ones([1000], DType::F32, &dev).unwrap();
    assert_eq!(small.to_vec::<f32>().unwrap().iter().sum::<f32>(), 1000.0);
    cuda::set_emulator_memory_limit(None);
    cuda::empty_cache(&dev).unwrap();
    let s = cuda::memory_stats(&dev).unwrap();
    assert_eq!(s.reserved, s.allocated, "after empty_cache nothing is cached: {s:?}");
}
