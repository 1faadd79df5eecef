"""Exception hierarchy.

Every error a user can cause is a :class:`FracturescanError` subclass whose message says what is
wrong and what to do; the CLI prints it as one line and exits non-zero.
"""


class FracturescanError(Exception):
    """Base class for every error raised deliberately by fracturescan."""


class DatasetError(FracturescanError):
    """A data set on disk is missing, malformed or contradicts itself."""


class ImageReadError(FracturescanError):
    """An image file cannot be decoded (corrupt, wrong type, too large, no pixels)."""


class UnsupportedImageError(ImageReadError):
    """The file is a valid container but holds something fracturescan cannot read."""


class ConfigError(FracturescanError):
    """A configuration file or option is invalid."""


class CheckpointError(FracturescanError):
    """A model checkpoint is missing, corrupt, tampered with or incompatible."""


class WeightsNotFoundError(FracturescanError):
    """Pretrained weights were requested but are not available offline."""


class MissingExtraError(FracturescanError):
    """An optional dependency is needed for this feature but not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package: install it with "
            f"pip install 'fracturescan[{extra}]'"
        )


class RoutingError(FracturescanError):
    """A study cannot be sent to a model: mixed body parts, a part no model covers, or a DICOM
    body part that contradicts the one chosen."""
