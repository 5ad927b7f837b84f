"""The `sed` model's protocol (KServe v2), the names the server, its client and the repository share.

    inputs   image   BYTES [1]    the encoded image file (JPEG, PNG, ...)
             classes BYTES [N]    optional: class names (absent: the server's vocabulary)
             topk    INT32 [1]    optional: k of category early rejection
    outputs  labels  INT32 [H,W]  class ids into the classes used, at the image's size
             result  BYTES [1]    JSON: what sed-segment writes per image (less "image"), plus
                                  "names", "name_changes" and "weights"

A refused request is answered HTTP 400 with {"error": "<input>: <one line>"}.
"""

from __future__ import annotations

MODEL = "sed"
IMAGE, CLASSES, TOPK = "image", "classes", "topk"
LABELS, RESULT = "labels", "result"


def error_line(status: int | str, message: str) -> str:
    """The one line to show for an error answer: a refusal's own line, or the last line of a failure
    inside the server (a traceback ends with the exception), pointing to the server's log."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return f"HTTP {status}"
    if len(lines) == 1:
        return lines[0]
    return f"HTTP {status}: {lines[-1]} (the server's log has the details)"
