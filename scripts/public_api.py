#!/usr/bin/env python3
"""Counts the crate's public functions and methods as `cargo doc` lists them: free functions,
inherent methods of its types, and the methods its own traits declare (trait implementations
such as Clone or Debug are not counted). Run `cargo doc --no-deps` first.

    python3 scripts/public_api.py [DOC_DIR]   # default: cargo's target dir / doc / wgpu_batchnorm
"""

import json
import pathlib
import re
import subprocess
import sys


def doc_dir() -> pathlib.Path:
    if len(sys.argv) > 1:
        return pathlib.Path(sys.argv[1])
    meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
    return pathlib.Path(meta["target_directory"]) / "doc" / "wgpu_batchnorm"


def main() -> int:
    root = doc_dir()
    functions, methods = [], []
    for page in sorted(root.rglob("*.html")):
        name = page.name
        module = "::".join(page.relative_to(root).parts[:-1])
        if name.startswith("fn."):
            functions.append(f"{module}::{name[3:-5]}".strip(":"))
        elif name.startswith(("struct.", "enum.", "trait.")):
            text = page.read_text()
            item = name.split(".")[1]
            # Inherent methods only: the trait-implementation sections follow them.
            inherent = text.split('id="trait-implementations"')[0]
            inherent = inherent.split('id="synthetic-implementations"')[0]
            found = set(re.findall(r'id="(?:method|tymethod)\.(\w+)"', inherent))
            methods.extend(f"{module}::{item}::{m}".strip(":") for m in sorted(found))
    for f in functions + methods:
        print(f)
    print(f"{len(functions)} functions + {len(methods)} methods = {len(functions) + len(methods)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
