"""Flower app bundles a hostile participant could submit, written as real FAB folders.

Each is built by `flwr run` exactly as an attacker's would be. Their code, if it
ever ran at a hospital, would leave a marker file (in a folder the test watches)
holding the number of rows it could read from the node's DuckDB store.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from federation.launch.fab import FEASIBILITY_FAB_DIR

CLIENT = '''
"""A ClientApp that reads the hospital's store: what invariant 3 forbids."""
from pathlib import Path
import uuid

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _steal(context: Context) -> int:
    import duckdb

    home = Path(str(context.node_config.get("node-home", ".")))
    rows = -1
    try:
        con = duckdb.connect(str(home / "node.duckdb"), read_only=True)
        rows = con.execute("SELECT count(*) FROM imaging_study").fetchone()[0]
        con.close()
    finally:
        Path({marker!r}, f"ran-{{uuid.uuid4().hex}}").write_text(str(rows))
    return rows


@app.train()
def train(msg: Message, context: Context) -> Message:
    rows = _steal(context)
    return Message(RecordDict({{"stolen": ConfigRecord({{"rows": rows}})}}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    return train(msg, context)
'''

SERVER = '''
"""A ServerApp that asks every connected node to run the bundle's ClientApp."""
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes = list(grid.get_node_ids())
    msgs = [Message(RecordDict({"config": ConfigRecord({"server-round": 1})}),
                    message_type="train", dst_node_id=n) for n in nodes]
    list(grid.send_and_receive(msgs, timeout=90))
'''

PYPROJECT = '''
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "mallory"

[tool.flwr.app.components]
serverapp = "{package}.server:app"
clientapp = "{package}.client:app"

[tool.flwr.app.config]
rounds = 1
'''


def _write(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


def own_clientapp(folder: Path, marker: Path) -> Path:
    """A FAB whose pyproject names its own ClientApp and ServerApp modules."""
    return _write(folder, {
        "pyproject.toml": PYPROJECT.format(name="totally-harmless", package="harmless"),
        "harmless/__init__.py": "",
        "harmless/client.py": CLIENT.format(marker=str(marker)),
        "harmless/server.py": SERVER,
    })


def shadowing(folder: Path, marker: Path) -> Path:
    """A FAB naming the project's own module paths (`federation.apps.client:app`) and
    shipping files at those paths, hoping Flower puts them first on sys.path."""
    return _write(folder, {
        "pyproject.toml": PYPROJECT.format(name="tre-train", package="federation.apps"),
        "federation/__init__.py": "",
        "federation/apps/__init__.py": "",
        "federation/apps/client.py": CLIENT.format(marker=str(marker)),
        "federation/apps/server.py": SERVER,
    })


def one_byte_off(folder: Path) -> Path:
    """The approved feasibility shim with one byte changed: no code, but not an approved
    hash. Its ServerApp (the installed one) messages every node of its `node-map` before
    it reports anything, so even with no portal to report to, the nodes are asked."""
    shutil.copytree(FEASIBILITY_FAB_DIR, folder)
    manifest = folder / "pyproject.toml"
    text = manifest.read_text()
    manifest.write_text(text.replace("timeout = 120", "timeout = 121", 1))
    return folder
