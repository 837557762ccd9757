#!/usr/bin/env python3
"""layers.py — fails on an #include that docs/architecture.md's layer table forbids.

The table ("| layer | folder | may use | what it is |") is the rule: a file in a layer's folder may
include its own layer's headers and those of the layers its "may use" cell names, nothing else.
Every folder under src/ must have a row (programs included), headers named *-internal.h or
*-private.h are never included from outside their folder. The build says the same: each
library's static_library() in its folder's meson.build may depend only on the libraries of the
layers its row allows (the compiler then sees no other layer's include folder). Exits 1 with one
line per violation."""

import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DOC = os.path.join(ROOT, "docs", "architecture.md")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def read_table():
    """Rows of the layer table: name -> (folders, may_use set, programs?)."""
    rows = {}
    in_table = False
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| layer | folder | may use"):
                in_table = True
                continue
            if not in_table:
                continue
            if not line.startswith("|"):
                break
            if set(cells[0]) <= set("-: "):
                continue
            name = cells[0].strip("` ")
            folders = re.findall(r"`([^`]+)`", cells[1])
            may = {m.strip("` ").lower() for m in cells[2].split(",")}
            rows[name] = (folders, may, cells[2].strip() == "what they need")
    return rows


# Libraries whose dependency name is not dep_<layer>: the layer they belong to.
DEP_ALIASES = {"manifest": "agent", "createopts": "engine", "keeper_proto": "engine",
               "image_ref": "image", "hub_message": "hub"}
STATIC_LIB = re.compile(r"static_library\((.*?)\n(?=\S)", re.S)
LIST = re.compile(r"^(\w+)\s*=\s*\[([^\]]*)\]", re.M)


def check_meson(rows, owner_of):
    """Each static_library() in src/<x>/meson.build names only dep_<layer>s its row allows."""
    errors = []
    layer_names = {name.lower() for name in rows}
    src = os.path.join(ROOT, "src")
    for d in sorted(os.listdir(src)):
        mf = os.path.join(src, d, "meson.build")
        if not os.path.isfile(mf):
            continue
        me = owner_of(f"src/{d}")
        if me is None or rows[me][2]:
            continue
        may = rows[me][1]
        with open(mf, encoding="utf-8") as f:
            text = f.read()
        lists = {m.group(1): m.group(2) for m in LIST.finditer(text)}
        for m in STATIC_LIB.finditer(text):
            call = m.group(1)
            name = re.match(r"\s*'([^']+)'", call).group(1)
            deps = re.search(r"dependencies\s*:\s*(\[[^\]]*\]|\w+)", call)
            if not deps:
                continue
            body = deps.group(1)
            if not body.startswith("["):
                body = lists.get(body, "")
            for dep in re.findall(r"\bdep_(\w+)", body):
                layer = DEP_ALIASES.get(dep, dep)
                if layer not in layer_names or layer == me.lower():
                    continue  # an outside package (dep_event, dep_ssl) or the layer itself
                if layer not in may:
                    errors.append(f"src/{d}/meson.build: {name} depends on dep_{dep} (layer {layer}), "
                                  f"which the {me} row does not allow")
    return errors


def main():
    rows = read_table()
    errors = []
    if not rows:
        print(f"layers: no layer table found in {DOC}")
        return 1
    # folder (relative to ROOT) -> layer; most specific folder wins (src/hub/main.c is a program).
    owners = []
    for name, (folders, may, prog) in rows.items():
        for folder in folders:
            owners.append((folder.rstrip("/*").rstrip("/"), name))
    owners.sort(key=lambda o: -len(o[0]))

    def owner_of(rel):
        for folder, name in owners:
            if rel == folder or rel.startswith(folder + "/"):
                return name
        return None

    # Every folder under src/ has a row.
    src = os.path.join(ROOT, "src")
    for d in sorted(os.listdir(src)):
        if os.path.isdir(os.path.join(src, d)) and owner_of(f"src/{d}") is None:
            errors.append(f"src/{d}: no row in docs/architecture.md's layer table")

    # The include prefix "x/..." names the layer whose folder is src/x (or its include root).
    def layer_of_include(inc):
        first = inc.split("/", 1)[0]
        return owner_of(f"src/{first}") if "/" in inc else None

    for top in ("src", "modules"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for fn in files:
                if not fn.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, ROOT)
                me = owner_of(rel)
                if me is None:
                    errors.append(f"{rel}: not in any layer's folder")
                    continue
                folders, may, prog = rows[me]
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                for m in INCLUDE.finditer(text):
                    inc = m.group(1)
                    line = text.count("\n", 0, m.start()) + 1
                    target = layer_of_include(inc)
                    if target is None:
                        continue  # same-folder include ("route-internal.h") or not a layer
                    base = os.path.basename(inc)
                    inc_dir = os.path.dirname(os.path.join("src", inc))
                    if (base.endswith("-internal.h") or base.endswith("-private.h")) and \
                            os.path.dirname(rel) != inc_dir:
                        errors.append(f"{rel}:{line}: includes {inc}, private to {inc_dir}")
                    if target == me or prog:
                        continue
                    if target.lower() not in may:
                        errors.append(f"{rel}:{line}: layer {me} includes {inc} (layer {target}), "
                                      f"which its row does not allow (may use: {', '.join(sorted(may))})")
    errors += check_meson(rows, owner_of)
    for e in errors:
        print("layers: " + e)
    if not errors:
        print(f"layers: {len(rows)} layers, every include allowed by docs/architecture.md")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
