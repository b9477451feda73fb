"""The shared training problem of the integration tests: scikit-learn's digits, fixed batches."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

STEPS = 300
BATCH = 64


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Standardised float32 features and int32 labels of the 1,797 digits."""
    digits = load_digits()
    x = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-6)
    return x.astype(np.float32), digits.target.astype(np.int32)


X, Y = load_data()
BATCHES = np.random.default_rng(0).integers(0, len(Y), (STEPS, BATCH))


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
