"""Run by scripts/test.sh: keeps the one-way module dependencies of LAYERING.md (a copy of the
shared hook, so a fresh clone can run it).

Which of the target layering rules the code keeps: reads every `crate::a::b` path in src/ and
checks that no module of one part names a module of a part it must never reach."""
import os
import re
import sys

PARTS = {  # part -> top-level modules under src/
    "server": ["server"], "shard": ["shard"], "router": ["router"], "group": ["group"],
    "storage": ["storage"], "metrics": ["metrics"], "protocol": ["protocol"],
    "tools": ["cli", "tune"], "cluster": ["cluster"], "txn": ["txn"], "auth": ["auth"],
    "quota": ["quota"],
}
NEVER = [  # (from, to, why)
    ("protocol", "storage", "the codec does no I/O"), ("protocol", "shard", "the codec does no I/O"),
    ("protocol", "server", "the codec does no I/O"), ("storage", "server", "storage never decodes a request"),
    ("storage", "shard", "storage knows no cores"), ("storage", "router", "storage knows no cores"),
    ("group", "router", "the group machine knows no transport"), ("group", "server", "the group machine knows no transport"),
    ("group", "shard", "the group machine knows no shard"), ("router", "group", "the router is a mechanism"),
    ("router", "metrics", "the router is a mechanism"), ("router", "storage", "the router is a mechanism"),
    ("shard", "server", "the data layer sets no process flags"), ("metrics", "shard", "metrics are plain data"),
    ("metrics", "router", "metrics are plain data"), ("tools", "server", "tools are clients"),
    ("tools", "shard", "tools are clients"),
    ("cluster", "shard", "the quorum core and the wire know no shard"),
    ("cluster", "server", "the quorum core and the wire know no requests"),
    ("cluster", "router", "the quorum core has its own transport seam"),
    ("txn", "router", "the transaction machine knows no transport"),
    ("txn", "server", "the transaction machine knows no transport"),
    ("txn", "shard", "the transaction machine knows no shard"),
    ("router", "txn", "the router is a mechanism"),
    ("auth", "server", "SASL and ACL decisions know no connection"),
    ("auth", "shard", "SASL and ACL decisions know no shard"),
    ("auth", "router", "SASL and ACL decisions know no transport"),
    ("auth", "storage", "SASL and ACL decisions do no I/O"),
    ("quota", "router", "the quota machine knows no transport"),
    ("quota", "server", "the quota machine knows no requests"),
    ("quota", "shard", "the quota machine knows no shard"),
    ("router", "quota", "the router is a mechanism"),
]


def part_of(module):
    for part, mods in PARTS.items():
        if module in mods:
            return part
    return None


def main(root):
    src = os.path.join(root, "src")
    uses = {}  # (from part, to part) -> [file]
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            frm = part_of(top)
            if frm is None:
                continue
            text = open(path, errors="replace").read()
            text = re.split(r"#\[cfg\(test\)\]", text)[0]  # unit tests may reach anywhere
            names = set(re.findall(r"crate::([a-z_]+)", text))
            for block in re.findall(r"use crate::\{([^;]*)\};", text, re.S):
                names |= set(re.findall(r"(?:^|[,{\s])([a-z_]+)::", block))
            for name in names:
                to = part_of(name)
                if to and to != frm:
                    uses.setdefault((frm, to), set()).add(rel)
    broken = [(a, b, why, sorted(uses[(a, b)])) for a, b, why in NEVER if (a, b) in uses]
    for a, b, why, files in broken:
        print(f"BROKEN {a} -> {b} ({why}): {', '.join(files[:4])}{' ...' if len(files) > 4 else ''}")
    print(f"{len(NEVER) - len(broken)}/{len(NEVER)} layering rules hold")
    sys.exit(1 if broken else 0)


main(sys.argv[1] if len(sys.argv) > 1 else ".")
