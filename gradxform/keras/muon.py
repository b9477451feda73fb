r"""Keras 3's ``Muon``: orthogonalised momentum for the matrices, Keras's Adam for the rest.

A `partition` of two chains of catalogue transforms inside Keras's order of
operations (`gradxform.keras.chain`); it defines no arithmetic. Each chain
ends with its own ``decoupled_weight_decay``, since Keras decays the Muon
leaves by ``weight_decay`` and the others by ``adam_weight_decay``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from gradxform.core import masks, numerics, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule
from gradxform.core.combine import chain
from gradxform.keras.arguments import checked_base
from gradxform.keras.chain import fill_docstrings, keras_chain, keras_preset
from gradxform.transforms.adam import scale_by_adam
from gradxform.transforms.orthogonalize import scale_by_muon
from gradxform.transforms.partition import partition
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.shape_scaling import scale_by_shape
from gradxform.transforms.weight_decay import decoupled_weight_decay

# Keras's constant in zeropower_via_newtonschulz5: X / (||X||_F + 1e-7).
_NS_EPS = 1e-7


def muon_labels(params: Any, exclude_layers: str | Sequence[str] | None = None,
                exclude_embeddings: bool = True) -> Any:
    r"""Which leaves Keras 3's ``Muon`` moves by its Muon step and which by its Adam step.

    .. math::
        \ell_i = \begin{cases} \texttt{"muon"} & \theta_i \text{ is 2-D, and not }
        (\text{exclude\_embeddings} \wedge \texttt{"embedding"} \in \mathrm{lower}(p_i)),
        \text{ and no } r \in \text{exclude\_layers} \text{ is found in } p_i \\
        \texttt{"adam"} & \text{otherwise} \end{cases}

    Keras's ``Muon._should_use_adamw`` with each leaf's key path :math:`p_i`
    (``"dense/kernel"``, searched with ``re.search``) in place of the
    variable's path: the labels `muon` partitions by, for a `gx.partition`
    of one's own.

    Args:
      params: the parameter tree (arrays, or anything with a ``shape``).
      exclude_layers: regex patterns (a string or a list), or None.
      exclude_embeddings: label the leaves whose key path contains
        ``"embedding"`` (any case) ``"adam"``.

    Returns:
      A tree like ``params`` of ``"muon"`` and ``"adam"``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> gx.keras.muon_labels({"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
      ...                       "token_embedding": jnp.ones((9, 3))})
      {'dense': {'bias': 'adam', 'kernel': 'muon'}, 'token_embedding': 'adam'}
    """
    owner = "keras.muon_labels"
    regex = masks.compile_patterns(owner, "exclude_layers", exclude_layers)
    validation.boolean(owner, "exclude_embeddings", exclude_embeddings)

    def label(path, leaf):
        if len(getattr(leaf, "shape", ())) != 2:
            return "adam"
        if exclude_embeddings and "embedding" in path.lower():
            return "adam"
        if regex is not None and regex.search(path):
            return "adam"
        return "muon"

    return jax.tree.map(label, masks.tree_paths(params), params)


def muon(
    learning_rate: ScalarOrSchedule = 0.001,
    adam_beta_1: float = 0.9,
    adam_beta_2: float = 0.999,
    adam_weight_decay: float | None = 0.004,
    epsilon: float = 1e-7,
    weight_decay: float | None = 0.004,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    name: str | None = None,
    exclude_layers: str | Sequence[str] | None = None,
    exclude_embeddings: bool = True,
    muon_a: float = 3.4445,
    muon_b: float = -4.7750,
    muon_c: float = 2.0315,
    adam_lr_ratio: float = 1,
    momentum: float = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    rms_rate: float | None = 0.2,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``Muon``, every argument, same numbers.

    For a 2-D leaf (see below for the exclusions), with :math:`n \times k` its shape:

    .. math::
        m_t = \mu m_{t-1} + g_t, \quad
        O_t = \mathrm{NS}_{a,b,c}(g_t + \mu m_t \text{ if nesterov else } m_t), \qquad
        \theta \leftarrow \theta - \theta\lambda\eta - \eta\, \rho \sqrt{\max(n, k)}\, O_t

    with :math:`\mathrm{NS}` ``ns_steps`` Newton–Schulz steps from
    :math:`X_0 = X / (\lVert X \rVert_F + 10^{-7})` and :math:`\rho` the
    ``rms_rate`` (no factor when None). Every other leaf takes Keras's Adam
    step at :math:`r\eta` (:math:`r` the ``adam_lr_ratio``):

    .. math::
        \alpha_t = r\eta \sqrt{1-\beta_2^t}/(1-\beta_1^t), \qquad
        \theta \leftarrow \theta - \theta\lambda_{adam}\eta
        - \alpha_t\, m_t / (\sqrt{v_t} + \epsilon)

    A leaf takes the Adam step when it is not 2-D, when ``exclude_embeddings``
    and its key path (``"params/Embed_0/embedding"``), lower-cased, contains
    ``"embedding"``, or when an ``exclude_layers`` pattern is found
    (``re.search``) in its key path (`muon_labels`). The chain is a ``partition`` of
    ``chain(scale_by_muon(momentum_form="sum", eps=1e-7),
    scale_by_shape(consistent_rms=rms_rate), scale_by_learning_rate,
    decoupled_weight_decay(weight_decay))`` and of
    ``chain(scale_by_adam(eps_hat=True), scale(adam_lr_ratio), scale_by_learning_rate,
    decoupled_weight_decay(adam_weight_decay))``, inside Keras's clipping,
    accumulation, loss scale and EMA. Both decays use the plain learning rate
    :math:`\eta`, as Keras's do, and both skip the leaves
    ``exclude_from_weight_decay`` names; ``weight_decay=None`` still decays
    the Adam leaves, as in Keras.

    Beside the differences below: Keras matches ``exclude_layers`` and
    ``"embedding"`` against its variables' paths (``"dense/kernel"``, the
    layer's name then the variable's), these against key paths, which name
    the same layers in a Keras-built tree; a string ``exclude_layers`` is one
    pattern (Keras would search each of its characters); ``momentum`` must be
    in [0, 1), ``ns_steps`` an int >= 0, ``adam_lr_ratio`` and ``rms_rate``
    >= 0, and ``muon_a``, ``muon_b``, ``muon_c`` finite; Keras's momentum is
    :math:`m + (g + m(\mu - 1))`, which rounds within a unit or two of this
    :math:`\mu m + g`.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      adam_beta_1: :math:`\beta_1` in [0, 1), of the Adam step.
      adam_beta_2: :math:`\beta_2` in [0, 1), of the Adam step.
      adam_weight_decay: :math:`\lambda_{adam} \ge 0` for the Adam leaves, or None.
      epsilon: :math:`\epsilon > 0` of the Adam step (Keras's "epsilon hat").
      weight_decay: :math:`\lambda \ge 0` for the Muon leaves, or None.
      exclude_layers: regex patterns (a string or a list); leaves whose key
        path matches one take the Adam step.
      exclude_embeddings: send the leaves whose key path contains
        ``"embedding"`` to the Adam step.
      muon_a: :math:`a`, a finite number.
      muon_b: :math:`b`, a finite number.
      muon_c: :math:`c`, a finite number.
      adam_lr_ratio: :math:`r \ge 0`, the Adam step's learning rate over :math:`\eta`.
      momentum: :math:`\mu` in [0, 1).
      ns_steps: the number of Newton–Schulz steps, an int >= 0.
      nesterov: orthogonalise :math:`g_t + \mu m_t` rather than :math:`m_t`.
      rms_rate: :math:`\rho \ge 0` (Liu et al., 2025), or None for no factor.
      {base_args}
    {differences}
    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.keras.muon(learning_rate=0.02, exclude_layers=["head"])
      >>> state = tx.init({"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}})
    """
    arguments = dict(locals())
    owner = "keras.muon"
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "adam_beta_1", adam_beta_1)
    validation.decay_rate(owner, "adam_beta_2", adam_beta_2)
    if adam_weight_decay is not None:
        validation.non_negative(owner, "adam_weight_decay", adam_weight_decay)
    masks.compile_patterns(owner, "exclude_layers", exclude_layers)
    validation.boolean(owner, "exclude_embeddings", exclude_embeddings)
    for argument in ("muon_a", "muon_b", "muon_c"):
        validation.real_number(owner, argument, arguments[argument])
    validation.non_negative(owner, "adam_lr_ratio", adam_lr_ratio)
    validation.decay_rate(owner, "momentum", momentum)
    ns_steps = validation.positive_int(owner, "ns_steps", ns_steps, minimum=0)
    validation.boolean(owner, "nesterov", nesterov)
    if rms_rate is not None:
        validation.non_negative(owner, "rms_rate", rms_rate)
    coefficients = tuple(numerics.python_number(arguments[k]) for k in ("muon_a", "muon_b",
                                                                          "muon_c"))
    if not all(isinstance(c, (int, float)) for c in coefficients):  # inject_hyperparams' arrays
        coefficients = jnp.stack([jnp.asarray(c, jnp.float32) for c in coefficients])

    def decayed(steps, decay, learning_rate):
        if decay is not None:
            steps.append(decoupled_weight_decay(decay, learning_rate,
                                                exclude=exclude_from_weight_decay))
        return chain(*steps)

    def rule(learning_rate):
        muon_steps = [scale_by_muon(coefficients, ns_steps, beta=momentum, eps=_NS_EPS,
                                    nesterov=nesterov, momentum_form="sum")]
        if rms_rate is not None:
            muon_steps.append(scale_by_shape(consistent_rms=rms_rate))
        muon_steps.append(scale_by_learning_rate(learning_rate))
        adam_steps = [scale_by_adam(b1=adam_beta_1, b2=adam_beta_2, eps=epsilon, eps_hat=True)]
        # Always there (x 1 is exact), so that an injected ratio builds the same chain.
        adam_steps += [scale(adam_lr_ratio), scale_by_learning_rate(learning_rate)]
        labels = functools.partial(muon_labels, exclude_layers=exclude_layers,
                                   exclude_embeddings=exclude_embeddings)
        return [partition({"muon": decayed(muon_steps, weight_decay, learning_rate),
                           "adam": decayed(adam_steps, adam_weight_decay, learning_rate)},
                          labels)]

    # The decays are the partition's own: Keras's per-leaf weight_decay / adam_weight_decay.
    return keras_preset(owner, keras_chain(rule, base._replace(weight_decay=None)), arguments)


fill_docstrings(muon)
