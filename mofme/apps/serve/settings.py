"""What a ``mofme serve`` server accepts and how it restores: :class:`ServeSettings`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServeSettings"]

MB = 1_000_000


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Limits and tiling of a server. Sizes are in bytes and pixels (width x height).

    * ``max_upload_bytes``: the largest file accepted (a larger request is refused before it is read);
    * ``max_pixels``: the largest decoded image; a file declaring more is refused from its header,
      without decoding it (decompression bombs included);
    * ``tile``, ``overlap``, ``batch_size``: the tiled restoration (:func:`mofme.infer.restore.restore_image`).
      128 / 16, not ``mofme restore``'s 256 / 32: on 1-MP photos with the shipped model (trained on
      96-px crops) 1.75x faster through the server (19 s vs 33 s, 1 thread) and no worse (PSNR gain
      +5.1 vs +4.7 dB, rain and haze; ``python -m mofme.benchmarks.serve --tile``);
    * ``max_queue``: jobs arriving, waiting, running, or restored and not downloaded yet (more: 503,
      try again later): every accepted job's result is kept;
    * ``result_ttl_s``: how long a result is kept after its job finished, downloaded or not;
    * ``keep_results``: downloaded results (and failed jobs) kept within that time (the oldest are
      dropped first).
    """

    max_upload_bytes: int = 50 * MB
    max_pixels: int = 25 * MB
    tile: int = 128
    overlap: int = 16
    batch_size: int = 1
    max_queue: int = 32
    keep_results: int = 16
    result_ttl_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "tile", "batch_size", "max_queue", "keep_results"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.result_ttl_s <= 0:
            raise ValueError(f"result_ttl_s must be > 0, got {self.result_ttl_s}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must satisfy 0 <= overlap < tile, got {self.overlap}, {self.tile}")

    def limits(self) -> dict[str, int]:
        """The limits a client may check before uploading."""
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels}
