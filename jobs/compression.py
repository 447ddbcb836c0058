"""Compression of message bodies: which messages to compress, and decompressing with a cap.

kombu compresses (``Producer.publish(compression=...)``, the ``compression`` header says how),
so Celery reads our compressed messages and we read Celery's. What is added here:
small bodies (under ``TASK_COMPRESSION_THRESHOLD`` bytes) are sent as they are, since
compressing them costs time and saves nothing; and nothing decompresses more than
``TASK_MAX_MESSAGE_SIZE`` bytes, so a small hostile message can't inflate into gigabytes.
kombu's own decoders are capped too (:func:`install`, at import): kombu's ``Message``
decompresses a body as it arrives, before the worker sees it. A body that fails there keeps
its ``compression`` header, and the worker's checks dead-letter it with the reason.
"""

from __future__ import annotations

import bz2
import lzma
import zlib

from kombu import compression as kombu_compression

from jobs.compat.kombu import compression_aliases, compression_content_type
from jobs.conf import settings
from jobs.exceptions import InvalidMessage

_STREAMING = {
    "application/x-gzip": zlib.decompressobj,  # kombu's "zlib" (zlib format, despite the name)
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


def _capped_decoder(content_type: str, original):
    def decode(body: bytes) -> bytes:
        limit = settings.TASK_MAX_MESSAGE_SIZE
        if not limit:
            return original(body)
        return _capped(_STREAMING[content_type](), body, limit)

    decode.capped = True
    return decode


def install() -> None:
    """Cap kombu's own decoders: its Message decompresses a body as soon as it arrives, in
    the worker's main process, before any check of ours could run."""
    for content_type in _STREAMING:
        try:
            encoder, _ = kombu_compression.get_encoder(content_type)
            decoder = kombu_compression.get_decoder(content_type)
        except KeyError:  # not registered (its module is missing)
            continue
        if not getattr(decoder, "capped", False):
            kombu_compression.register(encoder, _capped_decoder(content_type, decoder),
                                       content_type)


install()


def known(name: str) -> bool:
    """Whether kombu can compress with ``name`` ("zlib", "bzip2", ... or a content type)."""
    if not isinstance(name, str):
        return False
    try:
        kombu_compression.get_encoder(name)
    except KeyError:
        return False
    return True


def names() -> list[str]:
    aliases = compression_aliases()
    return sorted(aliases) + sorted(
        t for t in kombu_compression.encoders() if t not in aliases.values())


def for_payload(compression: str | None, payload: bytes | str) -> str | None:
    """The compression to publish ``payload`` with: none under the threshold."""
    if not compression:
        return None
    if not known(compression):
        raise ValueError(f"compression={compression!r} is not available; use one of "
                         f"{', '.join(names())}")
    threshold = settings.TASK_COMPRESSION_THRESHOLD
    if threshold and len(payload) < threshold:
        return None
    return compression


def decompress(body: bytes, compression: str, limit: int | None) -> bytes:
    """``body`` decompressed, or InvalidMessage if it can't be or would pass ``limit`` bytes."""
    if not isinstance(compression, str):
        raise InvalidMessage(f"unknown compression {compression!r}")
    content_type = compression_content_type(compression)
    if isinstance(body, str):
        body = body.encode("latin-1", "replace")
    try:
        if limit and content_type in _STREAMING:
            data = _capped(_STREAMING[content_type](), body, limit)
        else:
            data = kombu_compression.decompress(body, content_type)
    except InvalidMessage:
        raise
    except KeyError:
        raise InvalidMessage(f"unknown compression {compression!r}") from None
    except Exception as exc:
        raise InvalidMessage(f"can't decompress the body ({compression}): {exc}") from exc
    if limit and len(data) > limit:
        raise _too_large(limit)
    return data


def _capped(decompressor, body: bytes, limit: int) -> bytes:
    data = decompressor.decompress(body, limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    if not decompressor.eof:
        raise InvalidMessage("can't decompress the body: the compressed data is truncated")
    return data


def _too_large(limit: int) -> InvalidMessage:
    return InvalidMessage(f"the body decompresses to more than TASK_MAX_MESSAGE_SIZE "
                          f"({limit:,} bytes)")
