"""XLA compiler options for a jitted step that unravels a `FlatTree`."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

# The new (MLIR) loop-fusion emitter of XLA:CPU spends about 10 ms on each
# distinct kernel, the legacy emitter about 3 ms. A loss that unravels N leaves
# makes N distinct kernels, since each slice offset differs.
_CPU_FLAT_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def _compiles_with(backend: str, options: tuple) -> bool:
    """Whether this jaxlib's compiler for ``backend`` accepts ``options``."""
    probe = jax.device_put(np.float32(0), jax.devices(backend)[0])
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(probe).compile()
    except Exception:  # noqa: BLE001 - an unknown option is reported in several ways
        return False
    return True


def flat_compiler_options(backend: str | None = None) -> dict[str, Any]:
    r"""XLA options for a jitted step whose loss unravels a `FlatTree`.

    .. math::
        t_\mathrm{compile} \approx \sum_{\text{distinct kernels}} c_\mathrm{kernel}

    XLA compiles each distinct kernel once. With per-leaf parameters, leaves of
    one shape share a kernel. Through ``unravel``, every leaf is a slice at its
    own offset, so a loss over N leaves makes N distinct small kernels. On CPU
    the legacy loop emitter compiles such a kernel about 3× faster than the
    default fusion emitter (``c_kernel`` about 3 ms against 10 ms), and its step
    ran no slower in the benchmark. Pass these options to the ``jax.jit`` of
    a train step that unravels a `FlatTree` with hundreds or thousands of
    leaves. Do not pass them to a per-leaf train step: there they make the
    compile slower.

    Args:
      backend: the platform the step is compiled for (``"cpu"``, ``"gpu"``,
        ``"tpu"``); default: ``jax.default_backend()``.

    Returns:
      ``{"xla_cpu_use_fusion_emitters": False}`` on CPU when the installed
      jaxlib accepts it, else ``{}`` (other backends, or a jaxlib without the
      legacy emitter): always safe to pass as ``compiler_options``.

    Example:
      >>> import jax, gradxform as gx
      >>> step = jax.jit(lambda f: f, compiler_options=gx.flat_compiler_options())
    """
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"flat_compiler_options: backend must be a platform name such as 'cpu' "
                        f"or None, got {backend!r}")
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return {}
    options = tuple(sorted(_CPU_FLAT_OPTIONS.items()))
    return dict(_CPU_FLAT_OPTIONS) if _compiles_with(backend, options) else {}
