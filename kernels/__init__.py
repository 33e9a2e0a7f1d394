"""fastnet.kernels: the hand-written kernels, one module per family.

Installed as ``fastnet.kernels`` (see pyproject.toml); imports only NumPy, Numba and its own
modules, never ``fastnet``.

Each family module holds, side by side:

* ``reference_*``: the float64 NumPy specification, written as the simplest obviously-right
  algorithm (and, where one exists, a different algorithm from the kernel);
* ``*_cpu``: the CPU kernel, Numba ``@njit`` behind a small Python wrapper that validates its
  arguments, allocates the outputs and calls the jitted function;
* ``*_cuda``: the CUDA kernel, Numba ``@cuda.jit`` behind a launcher with the same signature as
  the CPU wrapper, running on CuPy arrays on a GPU or on NumPy arrays in Numba's CUDA simulator;
* ``cuda_kernels()``: the list of :class:`~fastnet.kernels._cuda.KernelSpec` that the PTX
  compile check (``fastnet.kernels.ptx``) builds for real hardware.

Families: ``matmul``, ``conv`` (im2col / col2im), ``winograd`` (F(2x2, 3x3) convolution
transforms), ``pool`` (max-pool), ``softmax_xent``
(fused softmax + cross-entropy), ``optim`` (fused Adam/AdamW and SGD updates), ``norm`` (layer
and batch norm), ``softmax`` (row softmax with masks, for attention), ``activation`` (ReLU). ``ptx`` builds them all
for real hardware; ``_cuda`` holds the launch path they share, ``_fastmath`` the vectorisable
exp and max of the CPU kernels.
"""
