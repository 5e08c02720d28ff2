//! Every CUDA kernel of `kernels/cuda/` against its Rust CPU reference, on the emulator (every
//! run) and on the GPU (when one is present): one test body per family, shapes that are not
//! multiples of 32 or of the block size, and grids small enough that the grid-stride loops
//! iterate. `STAPES_EMU_RANDOM_SCHEDULE=1` reruns them with shuffled thread orders.

use half::{bf16, f16};
use stapes_kernels::cpu::binary::{binary_map, Strided};
use stapes_kernels::cpu::copy::copy_strided;
use stapes_kernels::cpu::reduce::{reduce_last, ReduceOp};
use stapes_kernels::cpu::softmax::softmax_last;
use stapes_kernels::cpu::unary::unary_map;
use stapes_kernels::cpu::vmath::exp_f32;
use stapes_kernels::cuda::elementwise::{self, BinaryOp};
use stapes_kernels::cuda::parity::{assert_close, backends, Tolerance};
use stapes_kernels::cuda::{emu, reduce, softmax, tensor, Backend, DeviceElem, FloatElem, KERNEL_SOURCES};
use std::collections::BTreeSet;

/// Every kernel of `kernels/cuda/` and the test below that checks it. A new kernel without an
/// entry here fails [`every_cuda_kernel_has_a_parity_test`].
const TESTED: &[(&str, &str)] = &[
    ("binary_add_f32", "elementwise_binary_matches_cpu"),
    ("binary_add_f16", "elementwise_binary_matches_cpu"),
    ("binary_add_bf16", "elementwise_binary_matches_cpu"),
    ("binary_mul_f32", "elementwise_binary_matches_cpu"),
    ("binary_mul_f16", "elementwise_binary_matches_cpu"),
    ("binary_mul_bf16", "elementwise_binary_matches_cpu"),
    ("unary_exp_f32", "elementwise_exp_matches_cpu"),
    ("unary_exp_f16", "elementwise_exp_matches_cpu"),
    ("unary_exp_bf16", "elementwise_exp_matches_cpu"),
    ("reduce_sum_rows_f32", "row_sum_matches_cpu"),
    ("softmax_last_f32", "softmax_matches_cpu"),
    ("log_softmax_last_f32", "softmax_matches_cpu"),
    ("softmax_warp_f32", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("log_softmax_warp_f32", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("softmax_warp_f16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("log_softmax_warp_f16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("softmax_warp_bf16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("log_softmax_warp_bf16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("softmax_warp_f64", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("log_softmax_warp_f64", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim, softmax_special_values_as_the_cpu"),
    ("reduce_cols_f16", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_partial_f16", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_bf16", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_partial_bf16", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_f32", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_partial_f32", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_f64", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_cols_partial_f64", "tensor/tests/cuda_reduce.rs: middle_dims_reduce_in_place"),
    ("reduce_rows_f16", "tensor/tests/cuda_reduce.rs: reductions_match_cpu_every_dtype_and_dim, row_lengths_around_warp_and_block_sizes"),
    ("reduce_partial_f16", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("reduce_finish_f16", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("argreduce_rows_f16", "tensor/tests/cuda_reduce.rs: argmax_argmin_first_index_on_ties"),
    ("reduce_rows_bf16", "tensor/tests/cuda_reduce.rs: reductions_match_cpu_every_dtype_and_dim, row_lengths_around_warp_and_block_sizes"),
    ("reduce_partial_bf16", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("reduce_finish_bf16", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("argreduce_rows_bf16", "tensor/tests/cuda_reduce.rs: argmax_argmin_first_index_on_ties"),
    ("reduce_rows_f32", "tensor/tests/cuda_reduce.rs: reductions_match_cpu_every_dtype_and_dim, row_lengths_around_warp_and_block_sizes"),
    ("reduce_partial_f32", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("reduce_finish_f32", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("argreduce_rows_f32", "tensor/tests/cuda_reduce.rs: argmax_argmin_first_index_on_ties"),
    ("reduce_rows_f64", "tensor/tests/cuda_reduce.rs: reductions_match_cpu_every_dtype_and_dim, row_lengths_around_warp_and_block_sizes"),
    ("reduce_partial_f64", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("reduce_finish_f64", "tensor/tests/cuda_reduce.rs: few_long_rows_take_the_grid_path"),
    ("argreduce_rows_f64", "tensor/tests/cuda_reduce.rs: argmax_argmin_first_index_on_ties"),
    ("softmax_last_f16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_last_f16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("softmax_last_bf16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_last_bf16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("softmax_last_f64", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_last_f64", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("softmax_backward_last_f16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_backward_last_f16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("softmax_backward_last_bf16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_backward_last_bf16", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("softmax_backward_last_f32", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_backward_last_f32", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("softmax_backward_last_f64", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("log_softmax_backward_last_f64", "tensor/tests/cuda_reduce.rs: softmax_matches_cpu_every_dtype_and_dim"),
    ("ctc_alpha_beta_f32", "cuda_ctc.rs: ctc_matches_cpu"),
    ("ctc_grad_f32", "cuda_ctc.rs: ctc_matches_cpu"),
    ("lstm_step_forward_f32", "cuda_rnn.rs: lstm_step_matches_cpu, lstm_sequence_matches_cpu"),
    ("lstm_step_backward_f32", "cuda_rnn.rs: lstm_step_matches_cpu, lstm_sequence_matches_cpu"),
    ("gru_step_forward_f32", "cuda_rnn.rs: gru_step_matches_cpu, gru_sequence_matches_cpu"),
    ("gru_step_backward_f32", "cuda_rnn.rs: gru_step_matches_cpu, gru_sequence_matches_cpu"),
    ("lstm_forward_persistent_f32", "cuda_rnn.rs: lstm_persistent_forward_matches_cpu"),
    ("rnn_output_f32", "cuda_rnn.rs: rnn_output_matches_cpu; nn/tests/cuda_rnn.rs"),
    ("im2col_f32", "cuda_conv.rs: conv_matches_cpu"),
    ("col2im_f32", "cuda_conv.rs: conv_matches_cpu"),
    ("conv_bias_act_f32", "cuda_conv.rs: conv_matches_cpu"),
    ("conv_bias_grad_f32", "cuda_conv.rs: conv_matches_cpu, bias_grad_shapes"),
    ("conv_bias_relu_backward_f32", "cuda_conv.rs: conv_matches_cpu"),
    ("max_pool2d_forward_f32", "cuda_pool.rs: max_pool_matches_cpu"),
    ("max_pool2d_backward_f32", "cuda_pool.rs: max_pool_matches_cpu"),
    ("avg_pool2d_forward_f32", "cuda_pool.rs: avg_pool_matches_cpu"),
    ("avg_pool2d_backward_f32", "cuda_pool.rs: avg_pool_matches_cpu"),
    ("layer_norm_forward_f32", "cuda_norm.rs: layer_norm_matches_cpu"),
    ("layer_norm_warp_forward_f32", "cuda_norm.rs: layer_norm_matches_cpu (rows of at most 1024 columns)"),
    ("layer_norm_backward_input_f32", "cuda_norm.rs: layer_norm_matches_cpu"),
    ("layer_norm_grad_params_partial_f32", "cuda_norm.rs: layer_norm_matches_cpu"),
    ("layer_norm_grad_params_finish_f32", "cuda_norm.rs: layer_norm_matches_cpu"),
    ("batch_norm_stats_f32", "cuda_norm.rs: batch_norm_matches_cpu"),
    ("batch_norm_eval_stats_f32", "cuda_norm.rs: batch_norm_matches_cpu"),
    ("batch_norm_apply_f32", "cuda_norm.rs: batch_norm_matches_cpu"),
    ("batch_norm_grad_sums_f32", "cuda_norm.rs: batch_norm_matches_cpu"),
    ("batch_norm_grad_params_f32", "cuda_norm.rs: batch_norm_matches_cpu"),
    ("batch_norm_backward_input_f32", "cuda_norm.rs: batch_norm_matches_cpu"),
    ("adam_step_f32", "tests/cuda_optim.rs: adam_variants_match_the_cpu"),
    ("adam_step_f64", "tests/cuda_optim.rs: adam_variants_match_the_cpu"),
    ("sgd_step_f32", "tests/cuda_optim.rs: sgd_variants_match_the_cpu"),
    ("sgd_step_f64", "tests/cuda_optim.rs: sgd_variants_match_the_cpu"),
    ("philox_words", "tensor/tests/cuda_random.rs: philox_words_kernel_matches_the_reference_at_large_offsets"),
    ("rand_uniform_f32", "tensor/tests/cuda_random.rs: uniform_matches_the_philox_reference_exactly"),
    ("rand_normal_f32", "tensor/tests/cuda_random.rs: normal_matches_box_muller_on_the_reference_words"),
    (
        "rand_bernoulli_f32",
        "tensor/tests/cuda_random.rs: bernoulli_matches_the_reference_and_rejects_bad_probabilities",
    ),
    ("rand_uniform_f16", "tensor/tests/cuda_random.rs: uniform_matches_the_philox_reference_exactly"),
    ("rand_normal_f16", "tensor/tests/cuda_random.rs: normal_matches_box_muller_on_the_reference_words"),
    (
        "rand_bernoulli_f16",
        "tensor/tests/cuda_random.rs: bernoulli_matches_the_reference_and_rejects_bad_probabilities",
    ),
    ("rand_uniform_bf16", "tensor/tests/cuda_random.rs: uniform_matches_the_philox_reference_exactly"),
    ("rand_normal_bf16", "tensor/tests/cuda_random.rs: normal_matches_box_muller_on_the_reference_words"),
    (
        "rand_bernoulli_bf16",
        "tensor/tests/cuda_random.rs: bernoulli_matches_the_reference_and_rejects_bad_probabilities",
    ),
    ("rand_uniform_f64", "tensor/tests/cuda_random.rs: uniform_matches_the_philox_reference_exactly"),
    ("rand_normal_f64", "tensor/tests/cuda_random.rs: normal_matches_box_muller_on_the_reference_words"),
    (
        "rand_bernoulli_f64",
        "tensor/tests/cuda_random.rs: bernoulli_matches_the_reference_and_rejects_bad_probabilities",
    ),
    ("qgemm_u8i8_dequant", "cuda_gemm.rs: int8_gemm_matches_the_cpu_kernel_bitwise"),
    ("quantize_u8_f32", "cuda_gemm.rs: int8_activation_levels_match_the_cpu_kernel"),
    (
        "gemm_f32",
        "cuda_gemm.rs: gemm_transposes_batches_and_strides, gemm_alpha_beta_and_empty; tensor/tests/cuda_matmul.rs",
    ),
    (
        "gemm_f16",
        "cuda_gemm.rs: gemm_transposes_batches_and_strides, gemm_alpha_beta_and_empty; tensor/tests/cuda_matmul.rs",
    ),
    (
        "gemm_bf16",
        "cuda_gemm.rs: gemm_transposes_batches_and_strides, gemm_alpha_beta_and_empty; tensor/tests/cuda_matmul.rs",
    ),
    (
        "gemm_f64",
        "cuda_gemm.rs: gemm_transposes_batches_and_strides, gemm_alpha_beta_and_empty; tensor/tests/cuda_matmul.rs",
    ),
    ("index_find_bad", "tensor/tests/cuda_index.rs"),
    ("index_fetch_bad", "tensor/tests/cuda_index.rs"),
    ("gather_b1", "tensor/tests/cuda_index.rs"),
    ("gather_b2", "tensor/tests/cuda_index.rs"),
    ("gather_b4", "tensor/tests/cuda_index.rs"),
    ("gather_b8", "tensor/tests/cuda_index.rs"),
    ("index_select_b1", "tensor/tests/cuda_index.rs"),
    ("index_select_b2", "tensor/tests/cuda_index.rs"),
    ("index_select_b4", "tensor/tests/cuda_index.rs"),
    ("index_select_b8", "tensor/tests/cuda_index.rs"),
    ("cat_slab_b1", "tensor/tests/cuda_index.rs"),
    ("cat_slab_b2", "tensor/tests/cuda_index.rs"),
    ("cat_slab_b4", "tensor/tests/cuda_index.rs"),
    ("cat_slab_b8", "tensor/tests/cuda_index.rs"),
    ("pad_b1", "tensor/tests/cuda_index.rs"),
    ("pad_b2", "tensor/tests/cuda_index.rs"),
    ("pad_b4", "tensor/tests/cuda_index.rs"),
    ("pad_b8", "tensor/tests/cuda_index.rs"),
    ("scatter_add_f32", "tensor/tests/cuda_index.rs"),
    ("scatter_add_f64", "tensor/tests/cuda_index.rs"),
    ("index_add_f32", "tensor/tests/cuda_index.rs"),
    ("index_add_f64", "tensor/tests/cuda_index.rs"),
    ("copy_strided_b1", "tensor/tests/cuda_tensor.rs: views_become_dense_on_the_device"),
    ("fill_b1", "tensor/tests/cuda_tensor.rs: full_zeros_ones_on_the_device"),
    ("copy_strided_b2", "tensor/tests/cuda_tensor.rs: views_become_dense_on_the_device"),
    ("fill_b2", "tensor/tests/cuda_tensor.rs: full_zeros_ones_on_the_device"),
    ("copy_strided_b4", "tensor/tests/cuda_tensor.rs: views_become_dense_on_the_device"),
    ("fill_b4", "tensor/tests/cuda_tensor.rs: full_zeros_ones_on_the_device"),
    ("copy_strided_b8", "tensor/tests/cuda_tensor.rs: views_become_dense_on_the_device"),
    ("fill_b8", "tensor/tests/cuda_tensor.rs: full_zeros_ones_on_the_device"),
    ("arange_f64", "tensor/tests/cuda_tensor.rs: arange_on_the_device_matches_the_cpu"),
    ("transpose_b1", "transpose_copy_matches_cpu; tensor/tests/cuda_tensor.rs: transposed_views_become_dense_exactly"),
    ("transpose_b2", "transpose_copy_matches_cpu; tensor/tests/cuda_tensor.rs: transposed_views_become_dense_exactly"),
    ("transpose_b4", "transpose_copy_matches_cpu; tensor/tests/cuda_tensor.rs: transposed_views_become_dense_exactly"),
    ("transpose_b8", "transpose_copy_matches_cpu; tensor/tests/cuda_tensor.rs: transposed_views_become_dense_exactly"),
    ("cast_f16_bf16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f16_f32", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f16_f64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f16_i64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f16_u8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f16_i8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_bf16_f16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_bf16_f32", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_bf16_f64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_bf16_i64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_bf16_u8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_bf16_i8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f32_f16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f32_bf16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f32_f64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f32_i64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f32_u8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f32_i8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f64_f16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f64_bf16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f64_f32", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f64_i64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f64_u8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_f64_i8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i64_f16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i64_bf16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i64_f32", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i64_f64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i64_u8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i64_i8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_u8_f16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_u8_bf16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_u8_f32", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_u8_f64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_u8_i64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_u8_i8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i8_f16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i8_bf16", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i8_f32", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i8_f64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i8_i64", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("cast_i8_u8", "tensor/tests/cuda_tensor.rs: casts_match_the_cpu_for_every_dtype_pair"),
    ("ew_unary_f32", "tensor/tests/cuda_elementwise.rs: unary_ops_match_cpu_for_every_float_dtype, unary_sizes_empty_scalar_and_grid_stride"),
    ("ew_unary_f16", "tensor/tests/cuda_elementwise.rs: unary_ops_match_cpu_for_every_float_dtype, unary_sizes_empty_scalar_and_grid_stride"),
    ("ew_unary_bf16", "tensor/tests/cuda_elementwise.rs: unary_ops_match_cpu_for_every_float_dtype, unary_sizes_empty_scalar_and_grid_stride"),
    ("ew_unary_f64", "tensor/tests/cuda_elementwise.rs: unary_ops_match_cpu_for_every_float_dtype, unary_sizes_empty_scalar_and_grid_stride"),
    ("ew_binary_f32", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, maximum_minimum_nan_and_signed_zero"),
    ("ew_binary_f16", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, maximum_minimum_nan_and_signed_zero"),
    ("ew_binary_bf16", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, maximum_minimum_nan_and_signed_zero"),
    ("ew_binary_f64", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, maximum_minimum_nan_and_signed_zero"),
    ("ew_binary_bcast_f32", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, binary_ops_read_views_in_place"),
    ("ew_binary_bcast_f16", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, binary_ops_read_views_in_place"),
    ("ew_binary_bcast_bf16", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, binary_ops_read_views_in_place"),
    ("ew_binary_bcast_f64", "tensor/tests/cuda_elementwise.rs: binary_ops_match_cpu_with_broadcasting, binary_ops_read_views_in_place"),
    ("ew_cmp_f32", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_cmp_f16", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_cmp_bf16", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_cmp_f64", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_cmp_i64", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_cmp_u8", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_cmp_i8", "tensor/tests/cuda_elementwise.rs: comparisons_match_cpu_for_every_dtype"),
    ("ew_where_b1", "tensor/tests/cuda_elementwise.rs: where_and_masked_fill_match_cpu_for_every_dtype"),
    ("ew_where_b2", "tensor/tests/cuda_elementwise.rs: where_and_masked_fill_match_cpu_for_every_dtype"),
    ("ew_where_b4", "tensor/tests/cuda_elementwise.rs: where_and_masked_fill_match_cpu_for_every_dtype"),
    ("ew_where_b8", "tensor/tests/cuda_elementwise.rs: where_and_masked_fill_match_cpu_for_every_dtype"),
    ("ew_all_finite_f32", "tensor/tests/cuda_elementwise.rs: all_finite_matches_cpu"),
    ("ew_all_finite_f16", "tensor/tests/cuda_elementwise.rs: all_finite_matches_cpu"),
    ("ew_all_finite_bf16", "tensor/tests/cuda_elementwise.rs: all_finite_matches_cpu"),
    ("ew_all_finite_f64", "tensor/tests/cuda_elementwise.rs: all_finite_matches_cpu"),
];

/// Element counts: around one warp, one block (256) and the emulator's grid (8 blocks of 256
/// threads, so the larger ones loop), none a multiple of 32 except 256.
const SIZES: &[usize] = &[0, 1, 31, 33, 255, 256, 257, 1000, 2049, 4099, 70_001];

/// `[rows, n]` shapes for the row kernels: n around a warp and the 256-thread block; the last
/// three have more rows than the emulator's row grid (16 blocks), so blocks loop over rows, with
/// one warp (n = 17) and with several (a block's warps then race from one row into the next).
const ROW_SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 31),
    (5, 32),
    (7, 33),
    (4, 255),
    (2, 256),
    (3, 257),
    (2, 1000),
    (9, 4099),
    (1, 70_001),
    (300, 17),
    (40, 300),
    (50, 1000),
];

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

fn contiguous<T>(data: &[T]) -> Strided<'_, T> {
    Strided { data, strides: &[1], offset: 0 }
}

fn context(kernel: &str, shape: &str, backend: &Backend) -> String {
    format!("{kernel} {shape} on the {}", backend.describe())
}

fn check_binary<T: FloatElem>(backend: &Backend, op: BinaryOp, n: usize) {
    let a: Vec<T> = values(n, 1, -2.0, 2.0).into_iter().map(T::from_f32).collect();
    let b: Vec<T> = values(n, 2, -2.0, 2.0).into_iter().map(T::from_f32).collect();
    let mut expected = vec![T::default(); n];
    binary_map(&[n], contiguous(&a), contiguous(&b), &mut expected, |x: T, y: T| {
        T::from_f32(op.apply(x.to_f32(), y.to_f32()))
    });
    let (ad, bd) = (backend.upload(&a).unwrap(), backend.upload(&b).unwrap());
    let mut out = backend.zeros::<T>(n).unwrap();
    elementwise::binary(backend, op, &ad, &bd, &mut out).unwrap();
    let kernel = format!("binary_{}_{}", op.name(), T::NAME);
    assert_close(
        &backend.download(&out).unwrap(),
        &expected,
        Tolerance::for_dtype::<T>(),
        &context(&kernel, &format!("n={n}"), backend),
    );
}

fn check_exp<T: FloatElem>(backend: &Backend, n: usize) {
    let x: Vec<T> = values(n, 3, -10.0, 10.0).into_iter().map(T::from_f32).collect();
    let mut expected = vec![T::default(); n];
    unary_map(&x, &mut expected, |v: T| T::from_f32(exp_f32(v.to_f32())));
    let xd = backend.upload(&x).unwrap();
    let mut out = backend.zeros::<T>(n).unwrap();
    elementwise::exp(backend, &xd, &mut out).unwrap();
    let kernel = format!("unary_exp_{}", T::NAME);
    assert_close(
        &backend.download(&out).unwrap(),
        &expected,
        Tolerance::for_dtype::<T>(),
        &context(&kernel, &format!("n={n}"), backend),
    );
}

#[test]
fn elementwise_binary_matches_cpu() {
    for backend in backends() {
        for &n in SIZES {
            for op in [BinaryOp::Add, BinaryOp::Mul] {
                check_binary::<f32>(&backend, op, n);
                check_binary::<f16>(&backend, op, n);
                check_binary::<bf16>(&backend, op, n);
            }
        }
    }
}

#[test]
fn elementwise_exp_matches_cpu() {
    for backend in backends() {
        for &n in SIZES {
            check_exp::<f32>(&backend, n);
            check_exp::<f16>(&backend, n);
            check_exp::<bf16>(&backend, n);
        }
    }
}

#[test]
fn elementwise_rejects_mismatched_lengths() {
    let backend = Backend::emulator();
    let a = backend.upload(&[1.0f32; 4]).unwrap();
    let b = backend.upload(&[1.0f32; 5]).unwrap();
    let mut out = backend.zeros::<f32>(4).unwrap();
    let err = elementwise::binary(&backend, BinaryOp::Add, &a, &b, &mut out).unwrap_err();
    assert!(err.to_string().contains("b=5"), "{err}");
}

#[test]
fn row_sum_matches_cpu() {
    for backend in backends() {
        for &(rows, n) in ROW_SHAPES.iter().chain(&[(37, 0)]) {
            let x = values(rows * n, 4, -1.0, 1.0);
            let mut expected = vec![0.0f32; rows];
            reduce_last(&x, rows, n, ReduceOp::Sum, &mut expected);
            let xd = backend.upload(&x).unwrap();
            let mut out = backend.zeros::<f32>(rows).unwrap();
            reduce::sum_rows_f32(&backend, &xd, rows, n, &mut out).unwrap();
            let out = backend.download(&out).unwrap();
            for r in 0..rows {
                // Both sums are f32 in different orders: allow a few roundings of sum |x|.
                let abs_sum: f32 = x[r * n..(r + 1) * n].iter().map(|v| v.abs()).sum();
                let tol = Tolerance::new(1e-5, 2e-6 * abs_sum as f64 + 1e-6);
                let ctx = context("reduce_sum_rows_f32", &format!("[{rows}, {n}] row {r}"), &backend);
                assert_close(&out[r..r + 1], &expected[r..r + 1], tol, &ctx);
            }
        }
    }
}

fn check_softmax(backend: &Backend, x: &[f32], rows: usize, n: usize, what: &str) {
    for log in [false, true] {
        let mut expected = vec![0.0f32; rows * n];
        softmax_last(x, rows, n, log, &mut expected);
        let xd = backend.upload(x).unwrap();
        let mut y = backend.zeros::<f32>(rows * n).unwrap();
        softmax::softmax_last_f32(backend, &xd, rows, n, log, &mut y).unwrap();
        let kernel = if log { "log_softmax_last_f32" } else { "softmax_last_f32" };
        // exp and the row sum in a different order than the CPU's: a few f32 roundings.
        let tol = if log { Tolerance::new(1e-5, 1e-5) } else { Tolerance::new(1e-5, 1e-7) };
        let ctx = context(kernel, &format!("[{rows}, {n}] {what}"), backend);
        assert_close(&backend.download(&y).unwrap(), &expected, tol, &ctx);
    }
}

#[test]
fn softmax_matches_cpu() {
    for backend in backends() {
        for &(rows, n) in ROW_SHAPES {
            check_softmax(&backend, &values(rows * n, 5, -8.0, 8.0), rows, n, "uniform in [-8, 8)");
        }
        // Large offsets (the max must be subtracted), masked (-inf) entries, a fully masked row
        // (NaN, as PyTorch), a NaN entry (the row is NaN).
        let n = 300;
        let mut x = values(6 * n, 6, -3.0, 3.0);
        x[..n].iter_mut().for_each(|v| *v += 1e4);
        for j in (0..n).step_by(3) {
            x[n + j] = f32::NEG_INFINITY;
        }
        x[2 * n..3 * n].fill(f32::NEG_INFINITY);
        x[3 * n + 17] = f32::NAN;
        x[4 * n] = f32::INFINITY;
        check_softmax(&backend, &x, 6, n, "special values");
    }
}

/// `transpose_copy` of the view (dims, strides, offset) of a `len`-element buffer against the CPU
/// strided copy, exactly (the kernel moves bytes).
fn check_transpose<T: DeviceElem + FromIndex + PartialEq>(
    backend: &Backend,
    len: usize,
    dims: [usize; 3],
    strides: [usize; 3],
    offset: usize,
) {
    let src: Vec<T> = (0..len).map(|i| T::from_index(i)).collect();
    let n: usize = dims.iter().product();
    let mut expected = vec![T::default(); n];
    copy_strided(&src, &dims, &strides, offset, &mut expected);
    let sd = backend.upload(&src).unwrap();
    let mut out = backend.alloc::<T>(n).unwrap();
    tensor::transpose_copy(backend, &sd, dims, strides, offset, &mut out).unwrap();
    let got = backend.download(&out).unwrap();
    let what = format!("{dims:?} strides {strides:?} offset {offset}");
    let ctx = context(&format!("transpose_copy<{}>", T::NAME), &what, backend);
    if let Some(i) = (0..n).find(|&i| got[i] != expected[i]) {
        panic!("{ctx}: element {i}: got {:?}, expected {:?}", got[i], expected[i]);
    }
}

/// Distinct-ish values of each element type (wrapping for the narrow ones).
trait FromIndex {
    fn from_index(i: usize) -> Self;
}
impl FromIndex for u8 {
    fn from_index(i: usize) -> Self {
        (i * 7 % 251) as u8
    }
}
impl FromIndex for f16 {
    fn from_index(i: usize) -> Self {
        f16::from_f32((i % 2039) as f32)
    }
}
impl FromIndex for f32 {
    fn from_index(i: usize) -> Self {
        i as f32 + 0.25
    }
}
impl FromIndex for f64 {
    fn from_index(i: usize) -> Self {
        -(i as f64) - 0.5
    }
}

fn check_transpose_all(backend: &Backend, len: usize, dims: [usize; 3], strides: [usize; 3], offset: usize) {
    check_transpose::<u8>(backend, len, dims, strides, offset);
    check_transpose::<f16>(backend, len, dims, strides, offset);
    check_transpose::<f32>(backend, len, dims, strides, offset);
    check_transpose::<f64>(backend, len, dims, strides, offset);
}

#[test]
fn transpose_copy_matches_cpu() {
    for backend in backends() {
        // x.t() of a dense [r, c] x: dims [c, r], strides [1, c]; tile edges on both sides, and
        // grids larger than the emulator's caps of 2 blocks per dim (the grid-stride loops).
        for (r, c) in [(1, 1), (1, 40), (40, 1), (31, 33), (32, 32), (33, 65), (7, 100), (100, 7), (97, 130)] {
            check_transpose_all(&backend, r * c, [1, c, r], [0, 1, c], 0);
        }
        // batches: dense [b, r, c] transposed to [b, c, r]; many small ones and a few tiled ones
        for (b, r, c) in [(3, 100, 7), (5, 33, 65), (70, 3, 5), (1, 64, 64)] {
            check_transpose_all(&backend, b * r * c, [b, c, r], [r * c, 1, c], 0);
        }
        // a padded leading dimension, an offset, batch strides that are not the tile's size, a
        // broadcast (stride 0) batch and last dim
        check_transpose_all(&backend, 5000, [3, 37, 35], [1500, 1, 40], 123);
        check_transpose_all(&backend, 2000, [4, 33, 40], [0, 1, 41], 7);
        check_transpose_all(&backend, 100, [2, 40, 50], [50, 1, 0], 3);
    }
}

#[test]
fn transpose_copy_checks_its_bounds() {
    let backend = Backend::emulator();
    let src = backend.upload(&[0f32; 100]).unwrap();
    let mut dst = backend.alloc::<f32>(100).unwrap();
    // reaches element 99 + 1: one past the end
    let e = tensor::transpose_copy(&backend, &src, [1, 10, 10], [0, 1, 10], 1, &mut dst).unwrap_err();
    assert!(e.to_string().contains("reaches element 100 of a 100-element buffer"), "{e}");
    let e = tensor::transpose_copy(&backend, &src, [1, 10, 9], [0, 1, 10], 0, &mut dst).unwrap_err();
    assert!(e.to_string().contains("dst holds 100 elements, expected 90"), "{e}");
    let mut empty = backend.alloc::<f32>(0).unwrap();
    tensor::transpose_copy(&backend, &src, [0, 10, 10], [0, 1, 10], 0, &mut empty).unwrap();
}

#[test]
fn gpu_probe_answers_without_panicking() {
    // On a machine without CUDA this must be an error that says why, not a panic in cudarc.
    match Backend::gpu(0) {
        Ok(b) => eprintln!("GPU present: {}", b.describe()),
        Err(why) => assert!(!why.to_string().is_empty()),
    }
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Backend>();
    send_sync::<stapes_kernels::cuda::DeviceBuffer<f32>>();
}

#[test]
fn every_cuda_kernel_has_a_parity_test() {
    let kernels: BTreeSet<&str> = KERNEL_SOURCES.iter().flat_map(|s| s.kernels.iter().copied()).collect();
    assert!(!kernels.is_empty(), "no kernels found in kernels/cuda/ (build.rs found no extern \"C\" __global__)");
    for s in KERNEL_SOURCES {
        assert!(!s.kernels.is_empty(), "{} declares no extern \"C\" __global__ kernel", s.file);
    }
    // The table must list every .cu file on disk (a stale build would not).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|f| f.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = KERNEL_SOURCES.iter().map(|s| s.file.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "kernels/cuda/*.cu and the build script's table differ");

    let tested: BTreeSet<&str> = TESTED.iter().map(|(k, _)| *k).collect();
    let untested: Vec<&&str> = kernels.difference(&tested).collect();
    assert!(untested.is_empty(), "kernels without a parity test (add one and list it in TESTED): {untested:?}");
    let gone: Vec<&&str> = tested.difference(&kernels).collect();
    assert!(gone.is_empty(), "TESTED lists kernels that no longer exist: {gone:?}");

    assert!(emu::is_built(), "the emulator is not built: the parity tests would check nothing");
    let emulated: BTreeSet<&str> = emu::kernel_names().into_iter().collect();
    let missing: Vec<&&str> = kernels.difference(&emulated).collect();
    assert!(missing.is_empty(), "kernels missing from the emulator library: {missing:?}");
}
