"""Run-membership tags: how a node tells the portal which people a run used, without
telling it who they are.

A tag is SHA-256 over a label, the Flower run and one pseudonym. Pseudonyms are 128
random-looking bits (OPRF outputs), so a tag cannot be reversed or guessed: whoever
holds tags learns a person's membership only for a pseudonym it already holds, and
tags of two runs do not link. The portal computes the tag of a signed-in citizen's
own pseudonym to find their runs; the rest of a cohort stays a set of opaque
tags and a count (`tre.portal.services.me`, docs/citizen-view.md).
"""

from __future__ import annotations

import hashlib

LABEL = b"tre-run-member-v1"
TAG_PATTERN = r"^[0-9a-f]{64}$"
MAX_TAGS_PER_REPORT = 10_000  # ~680 kB of JSON per request: under the portal's body limit


def member_tag(run: str, pseudonym: str) -> str:
    """The tag of one person in one run (`run`: the node's `flwr-<id>`)."""
    return hashlib.sha256(b"\0".join((LABEL, run.encode(), pseudonym.encode()))).hexdigest()
