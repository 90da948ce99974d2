#!/usr/bin/env python3
"""Checks the layer graph from the sources' #include "..." lines.

Every header belongs to the folder it lives in: a layer's public headers sit in
<layer>/include/, its private ones beside its sources. A file may include
  - any header of its own layer (public or private),
  - public headers of the layers its layer is allowed to use (below),
and nothing else: no upward edge (vhost -> vsock, mdl -> rpc, ...), no
sideways edge, and no other layer's private header. The build enforces the
same with include directories; this check also catches a header that some
include path happens to make visible, and prints the offending line.

usage: layering.py [ROOT]   (ROOT: the source tree; default: this checkout)
Exit status 0 when the graph is clean, 1 with one line per violation.
"""
import os
import re
import sys

# layer -> layers whose public headers it may include
ALLOWED = {
    "proto": set(),
    "common": {"proto"},
    "hostd/core": set(),
    "hostd/mem": {"hostd/core"},
    "hostd/qmp": {"hostd/core", "common"},
    "hostd/vhost": {"hostd/core", "hostd/mem", "common"},
    "hostd/vsock": {"hostd/core", "hostd/mem", "hostd/vhost", "common"},
    "hostd/mdl": {"hostd/core", "hostd/mem"},
    "hostd/introspect": {"hostd/core", "hostd/mem"},
    "hostd/rpc": {"hostd/core", "hostd/mem", "hostd/vhost", "hostd/vsock", "hostd/mdl", "common", "proto"},
    "hostd/api": {"hostd/core", "hostd/mem", "hostd/mdl", "hostd/introspect", "hostd/qmp", "common", "proto"},
    "hostd/daemon": {"hostd/core", "hostd/mem", "hostd/vhost", "hostd/vsock", "hostd/mdl", "hostd/rpc",
                     "hostd/api", "hostd/introspect", "hostd/qmp", "common", "proto"},
    "hostd/cli": {"common", "proto"},
    "guest-agent/libmdlmap": {"common", "proto"},
    "guest-agent": {"guest-agent/libmdlmap", "common", "proto"},
}
# headers generated at build time, by the layer that generates them
GENERATED = {"mdlmap.pb-c.h": ("proto", True)}
# Layers whose public headers are named rather than kept in include/.
PUBLIC_NAMED = {
    "guest-agent/libmdlmap": {"mdlmap.h", "wdm_compat.h", "mdl_except.h"},
}
# The library's internal interface, open to the agent built with it (the
# daemon and the conformance selftest work below the public API) and to no
# one else.
INTERNAL_USERS = {
    ("guest-agent", "mdl_transport.h"),
    ("guest-agent", "mdl_internal.h"),
}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(rel):
    """The layer a file belongs to: the longest ALLOWED key that prefixes it."""
    best = None
    for layer in ALLOWED:
        if rel == layer or rel.startswith(layer + "/"):
            if best is None or len(layer) > len(best):
                best = layer
    return best


def scan(root):
    headers = {}  # basename -> list of (layer, public)
    sources = []
    for layer in ALLOWED:
        top = os.path.join(root, layer)
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, root)
            if layer_of(rel_dir) != layer:
                continue  # a nested layer walks its own folder
            for f in filenames:
                if not f.endswith((".c", ".h")):
                    continue
                rel = os.path.join(rel_dir, f)
                sources.append((rel, layer))
                if f.endswith(".h"):
                    if layer in PUBLIC_NAMED:
                        public = f in PUBLIC_NAMED[layer]
                    else:
                        public = os.path.basename(rel_dir) == "include" or layer in ("proto", "hostd/cli")
                    headers.setdefault(f, []).append((layer, public))
    for name, owner in GENERATED.items():
        headers.setdefault(name, []).append(owner)
    return headers, sources


def check(root):
    headers, sources = scan(root)
    problems = []
    for rel, layer in sorted(sources):
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                name = os.path.basename(m.group(1))
                owners = headers.get(name)
                if not owners:
                    continue  # a test-only or system-style header outside the layers
                ok = any(o == layer or (o in ALLOWED[layer] and (public or (layer, name) in INTERNAL_USERS))
                         for o, public in owners)
                if not ok:
                    where = ", ".join("%s (%s)" % (o, "public" if p else "private") for o, p in owners)
                    problems.append("%s:%d: %s includes %s of %s" % (rel, lineno, layer, name, where))
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = check(root)
    for p in problems:
        print("layering: " + p)
    layers = len(ALLOWED)
    print("layering: %d layers, %d violation(s)" % (layers, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
