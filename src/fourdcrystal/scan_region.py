"""A rectangle of scan positions named on the command line, ``RX0:RX1,RY0:RY1`` (``predict --probe-from-region``,
``strain --reference``): parsed, and checked against the scan, in one place for both."""
from __future__ import annotations

from fourdcrystal.errors import UserError


def parse_region(text: str, flag: str, example: str) -> tuple[slice, slice]:
    """'rx0:rx1,ry0:ry1' -> (rx slice, ry slice); a malformed one is a ``UserError`` naming ``flag``."""
    try:
        a, b = text.split(",")
        (x0, x1), (y0, y1) = (tuple(int(v) for v in part.split(":")) for part in (a, b))
    except ValueError:
        raise UserError(f"{flag} '{text}' is not of the form RX0:RX1,RY0:RY1", f"give scan ranges {example}") from None
    return slice(x0, x1), slice(y0, y1)


def check_region(region: tuple[slice, slice], scan_shape, flag: str) -> None:
    """A ``UserError`` unless ``region`` lies inside a scan of ``scan_shape`` (Rx, Ry) and holds a position:
    Python's negative and clipped slices would otherwise select other positions than the ones named."""
    sx, sy = region
    Rx, Ry = int(scan_shape[0]), int(scan_shape[1])
    if not (0 <= sx.start < sx.stop <= Rx and 0 <= sy.start < sy.stop <= Ry):
        raise UserError(f"{flag} {sx.start}:{sx.stop},{sy.start}:{sy.stop} is not inside the scan (0:{Rx},0:{Ry})",
                        f"give {flag} RX0:RX1,RY0:RY1 with 0 <= RX0 < RX1 <= {Rx} and 0 <= RY0 < RY1 <= {Ry}")
