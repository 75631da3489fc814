"""Random generators derived from the run seed and what the draw is for.

Every random draw in the project comes from a generator keyed by its purpose,
e.g. ``derive_rng(seed, "link", round, device_id, "down")``, never from the
order of calls. So results do not change with the number of workers, the order
in which devices are visited, or how devices are grouped into cohorts.

Keys are ints or strings. They become the ``spawn_key`` of a numpy
:class:`~numpy.random.SeedSequence` whose entropy is the seed; each key takes
two words (a type tag and a value) so that ``("a", 1)`` and ``(1, "a")`` or an
int equal to a string's hash cannot collide. Strings are hashed with BLAKE2b,
which is stable across processes and Python versions (``hash()`` is not).
"""

from __future__ import annotations

import hashlib
import operator

import numpy as np

_INT, _STR = 0, 1


def _zigzag(value: int) -> int:
    """Map any int to a distinct non-negative int (SeedSequence takes no negatives)."""
    return 2 * value if value >= 0 else -2 * value - 1


def _key_words(keys: tuple[int | str, ...]) -> tuple[int, ...]:
    words: list[int] = []
    for key in keys:
        if isinstance(key, str):
            digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
            words += [_STR, int.from_bytes(digest, "little")]
        else:
            try:
                number = operator.index(key)
            except TypeError:
                raise TypeError(f"rng keys must be ints or strings, got {type(key).__name__}: {key!r}") from None
            words += [_INT, _zigzag(number)]
    return tuple(words)


def seed_sequence(seed: int, *keys: int | str) -> np.random.SeedSequence:
    return np.random.SeedSequence(_zigzag(operator.index(seed)), spawn_key=_key_words(keys))


def derive_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy generator for the purpose named by ``keys`` under the run ``seed``."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *keys)))


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit integer seed for the purpose named by ``keys`` (for libraries that take an int)."""
    state = seed_sequence(seed, *keys).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def derive_torch_generator(seed: int, *keys: int | str):
    """A CPU ``torch.Generator`` for the purpose named by ``keys``."""
    import torch  # only the callers that need torch pay for importing it

    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
