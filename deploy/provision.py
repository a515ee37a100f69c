"""Provision a federation's TLS and node keys: `python deploy/provision.py OUT HOSPITAL...`.

The same as `tre federation provision --out OUT --hospital H ...` (see
`federation.provision`), for deployments that script it without the `tre` CLI.
"""

from __future__ import annotations

import json
import sys

from federation.provision import provision


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    p = provision(argv[0], argv[1:])
    print(json.dumps({"ca_cert": str(p.ca_cert), "superlink_cert": str(p.superlink_cert),
                      "node_keys": {h: str(k) for h, k in p.node_keys.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
