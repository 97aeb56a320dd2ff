"""A copy of the first bytes of a request body, as the application reads them.

Usage (the base of the WSGI and ASGI recorders, :mod:`.request` and :mod:`.asgi`)::

    class Recorder(BodyCopy):
        def read(self) -> bytes:
            return self._keep(self._stream.read())   # the app gets the bytes unchanged

    recorder.kept, recorder.bytes_read, recorder.truncated
"""

from __future__ import annotations


class BodyCopy:
    """Keeps up to ``limit`` bytes of what passes through :meth:`_keep`, and counts it all."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept = bytearray()
        self.bytes_read = 0

    def _keep(self, data: bytes) -> bytes:
        self.bytes_read += len(data)
        room = self._limit - len(self._kept)
        if room > 0 and data:
            self._kept += data[:room]
        return data

    @property
    def kept(self) -> bytes:
        return bytes(self._kept)

    @property
    def truncated(self) -> bool:
        return self.bytes_read > len(self._kept)
