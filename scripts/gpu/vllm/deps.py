#!/usr/bin/env python3
"""Finds the wheels a vLLM release needs on the GPU machine, from the wheels' own metadata.

    deps.py VLLM_WHEEL OUT_DIR [--image image-packages.txt] [--skip skip-packages.txt]

pip's resolver resolves vllm==VERSION (the wheel's) for the GPU machine (Linux x86_64, CPython 3.12) with the
image's PyTorch: torch, torchvision, torchaudio and triton are offered as empty stub wheels of the
image's versions (local label +image, so it wins over the index's wheel), and so is each package
vLLM asks for that the payload leaves out: torch's CUDA wheels and the optional kernels' own
dependencies are neither resolved nor fetched. From the resolved set, walking Requires-Dist from vLLM
(markers evaluated for the machine, extras followed), the payload keeps what the image lacks and
leaves out the packages `vllm serve` never imports there, with everything only they need; it warns
when a requirement excludes the image's known version of a package. Each kept
wheel is downloaded at its resolved version. Writes the wheels to OUT_DIR and OUT_DIR/deps.txt
(name==version, and which package asks for it).
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import subprocess
import sys
import tempfile
import zipfile

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

# The GPU machine: python3 3.12 on Linux x86_64 (its markers, and pip's target tags).
ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.12.3",
    "python_version": "3.12",
    "sys_platform": "linux",
}
MANYLINUX = ["2_39", "2_35", "2_34", "2_31", "2_28", "2_27", "2_26", "2_24", "2_17", "2_5"]
PLATFORM_ARGS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
for abi in ("cp312", "abi3", "none"):
    PLATFORM_ARGS += ["--abi", abi]
for tag in [f"manylinux_{v}_x86_64" for v in MANYLINUX] + ["manylinux2014_x86_64", "manylinux1_x86_64", "any"]:
    PLATFORM_ARGS += ["--platform", tag]


def read_list(path: str) -> dict[str, str | None]:
    """NAME or NAME==VERSION per line (# comments) -> {canonical name: version or None}."""
    out: dict[str, str | None] = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                out[canonicalize_name(name)] = version or None
    return out


def requirements(texts, extras: set[str]) -> list[Requirement]:
    """Requires-Dist entries that apply on the GPU machine for the requested extras."""
    out = []
    for text in texts or []:
        req = Requirement(text)
        if req.marker is None:
            out.append(req)
            continue
        for extra in [""] + sorted(extras):
            if req.marker.evaluate(dict(ENVIRONMENT, extra=extra)):
                out.append(req)
                break
    return out


def write_stub(folder: str, name: str, version: str) -> None:
    """An empty wheel that only says `name version` is installed."""
    dist = f"{name.replace('-', '_')}-{version}+image"
    with zipfile.ZipFile(os.path.join(folder, f"{dist}-py3-none-any.whl"), "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}+image\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: deps.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")


# Image packages offered as stubs: the ones whose own dependencies are CUDA wheels. The others are
# resolved from the index like any package (and then left out as the image's).
STUBBED_IMAGE = {"torch", "torchaudio", "torchvision", "triton", "cupy-cuda13x"}


def stub_version(req: Requirement) -> str:
    """The version a stub of a left-out package takes: the one vLLM pins, or its lowest allowed."""
    for spec in req.specifier:
        if spec.operator in ("==", "==="):
            return spec.version
    for spec in req.specifier:
        if spec.operator in (">=", "~="):
            return spec.version
    return "0"


def vllm_requirements(wheel: str) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        meta = email.parser.Parser().parsestr(z.read(name).decode("utf-8", "replace"))
    return requirements(meta.get_all("Requires-Dist"), set())


def resolve(pip: list[str], wheel: str, image: dict[str, str | None], skip: set[str], work: str) -> dict:
    """pip's report for the vLLM wheel with the image's known packages, and the left-out packages
    vLLM asks for by name, stubbed (so their own dependencies are never resolved)."""
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs, exist_ok=True)
    pinned = {name: known for name, known in image.items() if known and name in STUBBED_IMAGE}
    for req in vllm_requirements(wheel):
        name = canonicalize_name(req.name)
        if name in skip:
            pinned[name] = stub_version(req)
    constraints = os.path.join(work, "constraints.txt")
    with open(constraints, "w") as f:
        for name, known in sorted(pinned.items()):
            write_stub(stubs, name, known)
            f.write(f"{name}=={known}\n")
    report = os.path.join(work, "report.json")
    subprocess.run(
        pip + ["install", "-q", "--dry-run", "--ignore-installed", "--report", report, "--target",
               os.path.join(work, "target"), *PLATFORM_ARGS, "--find-links", stubs, "-c", constraints,
               f"vllm=={os.path.basename(wheel).split('-')[1]}"],
        check=True,
    )
    with open(report) as f:
        return json.load(f)


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel")
    ap.add_argument("out_dir")
    ap.add_argument("--image", default=os.path.join(here, "image-packages.txt"))
    ap.add_argument("--skip", default=os.path.join(here, "skip-packages.txt"))
    ap.add_argument("--pip", default=f"{sys.executable} -m pip")
    args = ap.parse_args()
    image, skip = read_list(args.image), set(read_list(args.skip))
    pip = args.pip.split()
    os.makedirs(args.out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        report = resolve(pip, args.wheel, image, skip, work)
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}

    # Walk from vLLM: keep what the image lacks, never enter skipped packages.
    keep: dict[str, set[str]] = {}  # name -> who asks for it
    extras: dict[str, set[str]] = {"vllm": set()}
    todo = ["vllm"]
    while todo:
        parent = todo.pop()
        for req in requirements(resolved[parent].get("requires_dist"), extras.get(parent, set())):
            name = canonicalize_name(req.name)
            known = image.get(name)
            if known and not req.specifier.contains(known, prereleases=True):
                print(f"deps.py: warning: {parent} asks for {req}; the image has {name} {known}", file=sys.stderr)
            if name in skip or name in image:
                continue
            if name not in resolved:
                print(f"deps.py: {parent} needs {req}, which the resolver left out", file=sys.stderr)
                return 1
            new_extras = {canonicalize_name(e) for e in req.extras} - extras.get(name, set())
            if name not in keep or new_extras:
                extras.setdefault(name, set()).update(new_extras)
                todo.append(name)
            keep.setdefault(name, set()).add(parent)
    keep.pop("vllm", None)
    pins = [f"{name}=={resolved[name]['version']}" for name in sorted(keep)]
    subprocess.run(pip + ["download", "-q", "--no-deps", *PLATFORM_ARGS, "-d", args.out_dir, *pins], check=True)
    with open(os.path.join(args.out_dir, "deps.txt"), "w") as f:
        for pin in pins:
            f.write(f"{pin}  # {', '.join(sorted(keep[canonicalize_name(pin.split('==')[0])]))}\n")
    left_out = sorted(n for n in resolved if n not in keep and n != "vllm" and n not in image)
    print(f"deps.py: {os.path.basename(args.wheel)}: {len(pins)} wheels in {args.out_dir}; left out (skip list and only "
          f"theirs): {' '.join(left_out) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
