"""The node's refusal: one exception type for every check that stops a use of data, so
that the gate (`federation.node.gate`) audits each one in one place."""

from __future__ import annotations


class Refusal(Exception):
    """The node refuses to run: `code` is stable (tests, reports), the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.reason = message
