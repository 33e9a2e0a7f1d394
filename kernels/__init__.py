"""fastnet.kernels: the hand-written kernels, one module per family.

Installed as ``fastnet.kernels`` (see pyproject.toml); imports only NumPy, Numba and its own
modules, never ``fastnet``, and no family imports another.

Each family module holds, side by side:

* ``reference_*``: the float64 NumPy specification, written as the simplest obviously-right
  algorithm (and, where one exists, a different algorithm from the kernel);
* ``<op>_cpu``: the CPU kernel, Numba ``@njit`` behind a small Python wrapper that validates its
  arguments, allocates the outputs and calls the jitted function;
* ``<op>_cuda``: the CUDA kernel, Numba ``@cuda.jit`` behind a launcher with the same signature as
  the CPU wrapper, running on CuPy arrays on a GPU or on NumPy arrays in Numba's CUDA simulator;
* ``bench_cases``: its benchmark cases at training shapes, with their peers (plain NumPy, PyTorch);
* ``FAMILY``: the declaration (``_contract.Family``) of all of the above, which the backend, the
  PTX check (``ptx``) and the benchmarks discover; adding a family touches nothing else.

Families: ``matmul`` (tiled, and split-K for skinny products), ``conv`` (im2col / col2im),
``winograd`` (F(2x2, 3x3) convolution: the transforms, and the whole convolution a chunk of
images at a time), ``depthwise`` (per-channel convolution),
``pool`` (max- and average-pool), ``resample`` (nearest and bilinear), ``softmax_xent`` (fused
softmax + cross-entropy, and the soft-target KL of distillation), ``contrastive`` (the NT-Xent
loss's row kernels), ``optim`` (fused Adam/AdamW and SGD updates, per parameter and over flat
multi-parameter buffers), ``gather``
(many arrays into one flat buffer), ``norm`` (layer and batch norm), ``softmax`` (row softmax with
masks, for attention), ``activation`` (ReLU), ``augment`` (a batch gathered, cropped, flipped and
normalised from a uint8 image store), ``warp`` (batched affine warps, for augmented views),
``quant`` (int8 quantize / dequantize, int8 linear and convolution with int32 accumulators and a
fused epilogue), ``sparse`` (CSR sparse x dense products, for pruned layers).

Shared helpers, one concern each: ``_contract`` (the family declaration and the benchmark
vocabulary), ``_cpu`` (when a CPU kernel runs serial or parallel, and a thread's kernel
workspace), ``_cuda`` (the launch path and allocation), ``_relu`` (the ReLU rule the activation
kernels and the convolutions' fused ReLU share), ``_checks`` (argument checks), ``_geometry``
(sliding windows), ``_fastmath`` (vectorisable exp and max, fastmath flags), ``_reduce`` (CUDA
block reductions), ``_simd`` (CPU SIMD micro-kernels as Numba intrinsics: the int8 GEMM tiles),
``_winograd_simd`` (the Winograd transforms on groups of neighbouring tiles, as Numba
intrinsics), ``_blas`` (NumPy's own BLAS GEMM, callable from inside Numba kernels, so that a
kernel splitting its work over threads calls a single-threaded BLAS per piece).

Numba's on-disk cache (``cache=True``, beside each module or under ``NUMBA_CACHE_DIR``) keys a
compiled kernel on its own source file only: after editing a helper module that kernels inline
(``_relu``, ``_simd``, ``_winograd_simd``, ``_fastmath``, ``_reduce``, ``_blas``, ``_cpu``,
``_geometry``), the kernels of the other modules keep their old machine code. Delete the cached
kernels (``kernels/__pycache__/*.nbi`` and ``*.nbc``) or point ``NUMBA_CACHE_DIR`` at a fresh
folder before testing or timing such an edit.
"""
