"""Checks that the benchmark compares like with like: the floor produces the objects the
original 0.6.5 printed for full/ (but for the documented differences), and the product's
`-N` output holds the same objects as the floor's. Used by run.py and the smoke test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # noqa: E402
from make_data import DATA  # noqa: E402

EXPECTED = DATA / "expected-original" / "full"

# Where this project's contract departs from what 0.6.5 printed, by protocol.
# UDP: Tstat writes UDP durations in seconds; 0.6.5 divided them by 1000 (documented fix).
# TCP: the two fields the original added in 0.6.8 (doc/message-format.md), absent from 0.6.5.
KNOWN_DIFFERENCES = {
    "udp": {"duration", "bits_per_second", "packets_per_second", "end"},
    "tcp": {"tcp_rexmit_rate", "tcp_syn_cnt"},
}


def parse_messages(data: bytes | str) -> list[list[dict]]:
    """Every JSON array in a stream of messages, whatever the layout (one per line or indented)."""
    text = data.decode() if isinstance(data, bytes) else data
    decoder = json.JSONDecoder()
    out: list[list[dict]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


def flatten(messages: list[list[dict]]) -> list[dict]:
    return [flow for message in messages for flow in message]


def _paths(a: object, b: object, prefix: str = "") -> list[str]:
    """The keys (dotted) where a and b differ, including key order."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = [f"{prefix}(key order)"] if list(a) != list(b) and set(a) == set(b) else []
        for k in dict.fromkeys([*a, *b]):
            diffs += (
                _paths(a.get(k), b.get(k), f"{prefix}{k}.")
                if k in a and k in b
                else [f"{prefix}{k}"]
            )
        return diffs
    if a != b or type(a) is not type(b):
        return [prefix.rstrip(".")]
    return []


def compare(
    expected: list[dict], got: list[dict], allowed: dict[str, set[str]] | None = None
) -> dict:
    """Compare two flow lists in order.

    Returns {"equal": bool, "count": (len expected, len got), "allowed": {field: n},
    "unexpected": [first few descriptions]}; `allowed` differences (by protocol, leaf key)
    are counted but do not make the lists unequal.
    """
    allowed = allowed or {}
    result: dict = {"count": (len(expected), len(got)), "allowed": {}, "unexpected": []}
    if len(expected) != len(got):
        result["unexpected"].append(f"{len(expected)} objects expected, {len(got)} produced")
    for i, (a, b) in enumerate(zip(expected, got)):
        protocol = a.get("meta", {}).get("protocol") if isinstance(a, dict) else None
        for path in _paths(a, b):
            leaf = path.rsplit(".", 1)[-1]
            if leaf in allowed.get(protocol, ()):
                result["allowed"][f"{protocol}.{leaf}"] = (
                    result["allowed"].get(f"{protocol}.{leaf}", 0) + 1
                )
            elif len(result["unexpected"]) < 5:
                result["unexpected"].append(
                    f"object {i}: {path}: {_get(a, path)!r} != {_get(b, path)!r}"
                )
            else:
                result["unexpected"].append("...")
                break
    result["equal"] = not result["unexpected"]
    return result


def _get(obj: object, path: str) -> object:
    for part in path.replace("(key order)", "").strip(".").split("."):
        if not part:
            break
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def floor_vs_original(expected_dir: Path = EXPECTED) -> dict[str, dict]:
    """Run the floor on each directory of full/ and compare with what 0.6.5 printed."""
    results = {}
    for exp in sorted(expected_dir.glob("*.out.json")):
        name = exp.name[: -len(".json")]
        with tempfile.TemporaryDirectory() as root:
            os.symlink(DATA / "full" / name, Path(root) / name)
            got = [f for text, _ in floor.messages(root, 0, "testsensor") for f in json.loads(text)]
        results[name] = compare(json.loads(exp.read_text()), got, KNOWN_DIFFERENCES)
    return results


def main() -> int:
    ok = True
    for name, r in floor_vs_original().items():
        ok &= r["equal"]
        print(
            name, "equal" if r["equal"] else "DIFFERENT", r["count"], r["allowed"], *r["unexpected"]
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
