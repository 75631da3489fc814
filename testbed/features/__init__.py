"""Feature codecs by name: how a device puts a tensor of intermediate features on its uplink.

Like strategies, a codec is one class (subclass of
:class:`testbed.features.base.FeatureCodec`) in one file plus one line in the
table below, or an entry point of an installed package::

    [project.entry-points."testbed.features"]
    mycodec = "mypackage.codec:MyCodec"

A config names one as ``{codec: NAME, ...options}`` (the split scenario's
``features``).
"""

from __future__ import annotations

from pydantic import ValidationError

from testbed.features.base import FeatureCodec
from testbed.plugins import Registry


class FeatureCodecSpecError(ValueError):
    """A feature codec spec that cannot be used; the message is one line (key: problem)."""


FEATURE_CODECS = Registry(
    "feature codec",
    "testbed.features",
    {
        "float": "testbed.features.float:FloatFeatures",
        "quantised": "testbed.features.quantised:QuantisedFeatures",
        "zlib": "testbed.features.compressed:ZlibFeatures",
        "zstd": "testbed.features.compressed:ZstdFeatures",
        "rans-features": "testbed.features.rans:RansFeatures",
        "png": "testbed.features.image:PngFeatures",
        "jpeg": "testbed.features.image:JpegFeatures",
    },
    FeatureCodecSpecError,
    base=FeatureCodec,
)


def build_codec(spec: dict) -> FeatureCodec:
    """A codec from ``{codec: NAME, **options}``; any problem is one FeatureCodecSpecError line."""
    spec = dict(spec)
    name = spec.pop("codec", None)
    if name is None:
        raise FeatureCodecSpecError("codec: missing (e.g. {codec: rans-features, bits: 4})")
    cls = FEATURE_CODECS.get(str(name))
    try:
        return cls(**spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise FeatureCodecSpecError(f"{name}.{where}: {err['msg']}") from None


__all__ = ["FEATURE_CODECS", "FeatureCodec", "FeatureCodecSpecError", "build_codec"]
