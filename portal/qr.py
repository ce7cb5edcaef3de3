"""QR codes as inline SVG, rendered in the portal (segno, pure Python): what a code holds (a TOTP secret, a
WireGuard private key) never goes to a third-party service, and the SVG needs neither scripts nor styles, so
the Content-Security-Policy lets it in as it is."""

from __future__ import annotations

import segno


def qr_svg(data: str, title: str, error: str = "m", scale: int = 5) -> str:
    """The QR code (never a Micro QR, which phones do not read) of `data` as an inline `<svg>`: black on white,
    the standard quiet zone of 4 modules, `title` (escaped) for screen readers; ValueError if it does not fit."""
    try:
        code = segno.make_qr(data, error=error)
    except segno.DataOverflowError as error_:
        raise ValueError(f"too much data for one QR code ({len(data)} characters)") from error_
    return code.svg_inline(scale=scale, border=4, dark="#000", light="#fff", title=title)
