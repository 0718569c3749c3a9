#!/usr/bin/env python3
"""Mechanical checks of packaging/docker and packaging/kubernetes (no Docker engine or cluster).

The files are parsed (Dockerfile line by line, compose and Kubernetes YAML with PyYAML) and the
fields that decide whether engines share one budget are checked:
  * LD_PRELOAD and the COPY destinations equal the .deb layout, read from packaging/cpack.cmake
    and packaging/install.cmake (so a layout change that forgets the images fails here);
  * /dev/shm: a memory-backed volume (or the node's /dev/shm) of at least 1 GiB in every engine,
    shared by the engines of one pod; compose engines join one holder's IPC namespace, whose
    shm_size is at least 1 GiB;
  * PID namespace shared by the engines that share a budget (compose pid: service:, Kubernetes
    shareProcessNamespace for several engines in one pod);
  * every COPY source is let through by Dockerfile.dockerignore and exists (build outputs aside).
usage: check_manifests.py SOURCE_DIR [--self-test]
--self-test also breaks each rule on a copy in memory and requires the check to notice.
"""
import copy
import pathlib
import re
import sys

import yaml

GIB = 1 << 30
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "ki": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
         "mi": 1 << 20, "g": GIB, "gb": GIB, "gi": GIB, "t": 1 << 40, "tb": 1 << 40, "ti": 1 << 40}


def size_bytes(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        return None
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def deb_layout(root):
    cpack = (root / "packaging/cpack.cmake").read_text()
    install = (root / "packaging/install.cmake").read_text()
    prefix = re.search(r'set\(CPACK_PACKAGING_INSTALL_PREFIX\s+"([^"]+)"\)', cpack).group(1)
    libdir = re.search(r"set\(KVCACHED_INSTALL_LIBDIR\s+(\S+)\)", install).group(1)
    lib = f"{prefix}/{libdir}"
    return {"shim": f"{lib}/libkvcached_shim.so", "python": f"{lib}/kvcached_python",
            "kvctl": f"{prefix}/bin/kvctl"}


def check_dockerfile(text, ignore_text, root, layout):
    problems = []
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instrs = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    env = {}
    copies = []
    for ins in instrs:
        word, _, rest = ins.partition(" ")
        if word.upper() == "ENV":
            for m in re.finditer(r"(\w+)=(\S+)", rest):
                env[m.group(1)] = m.group(2)
        elif word.upper() == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
    if env.get("LD_PRELOAD") != layout["shim"]:
        problems.append(f"Dockerfile: ENV LD_PRELOAD is {env.get('LD_PRELOAD')!r}, the .deb "
                        f"installs the shim at {layout['shim']}")
    dests = {dst.rstrip("/"): srcs for srcs, dst in copies}
    if layout["shim"] not in dests:
        problems.append(f"Dockerfile: no COPY of the library to {layout['shim']}")
    if layout["python"] not in dests:
        problems.append(f"Dockerfile: no COPY of the engine hook to {layout['python']}/ (the shim "
                        "looks for it next to itself)")
    if layout["kvctl"] not in dests:
        problems.append(f"Dockerfile: no COPY of kvctl to {layout['kvctl']}")
    if not any("LD_PRELOAD=" + layout["shim"] in i and i.upper().startswith("RUN") for i in instrs):
        problems.append("Dockerfile: no RUN that checks the library preloads in the image")
    first_from = next((i for i, s in enumerate(instrs) if s.upper().startswith("FROM")), None)
    if first_from is None:
        problems.append("Dockerfile: no FROM")
    allowed = [ln[1:].rstrip("/") for ln in ignore_text.splitlines() if ln.startswith("!")]
    for srcs, _ in copies:
        for src in srcs:
            if src.rstrip("/") not in allowed:
                problems.append(f"Dockerfile: COPY {src} is excluded by Dockerfile.dockerignore")
            if not src.startswith("build/") and not (root / src).exists():
                problems.append(f"Dockerfile: COPY {src}: no such file in the repository")
    return problems


def check_compose(doc, layout):
    problems = []
    services = doc.get("services") or {}
    engines = {n: s for n, s in services.items() if str(s.get("ipc", "")).startswith("service:")}
    if len(engines) < 2:
        problems.append("compose: fewer than two engines joining a shared IPC namespace")
    holders = set()
    gpus = set()
    labels = []
    for name, svc in engines.items():
        ipc, pid = svc.get("ipc"), svc.get("pid")
        if pid != ipc.replace("ipc", "pid"):
            problems.append(f"compose: {name} has ipc {ipc!r} but pid {pid!r}: engines sharing a "
                            "budget must share the PID namespace too")
        holders.add(ipc.split(":", 1)[1])
        env = svc.get("environment") or {}
        if "LD_PRELOAD" in env and env["LD_PRELOAD"] != layout["shim"]:
            problems.append(f"compose: {name} LD_PRELOAD {env['LD_PRELOAD']} is not {layout['shim']}")
        labels.append(env.get("KVCACHED_LABEL"))
        for dev in (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices", []):
            gpus.add(tuple(dev.get("device_ids") or ["?"]))
    if len(holders) != 1:
        problems.append(f"compose: engines join different IPC holders {sorted(holders)}")
    for h in holders:
        holder = services.get(h)
        if holder is None:
            problems.append(f"compose: IPC holder {h!r} is not a service")
            continue
        if holder.get("ipc") != "shareable":
            problems.append(f"compose: {h} must have ipc: shareable")
        shm = size_bytes(holder.get("shm_size", "64m"))
        if shm is None or shm < GIB:
            problems.append(f"compose: {h} shm_size {holder.get('shm_size', '64m (default)')!r} "
                            "is under 1 GiB")
    if len(gpus) > 1:
        problems.append(f"compose: engines reserve different GPUs {sorted(gpus)}")
    if len(set(labels)) != len(labels):
        problems.append("compose: engines share a KVCACHED_LABEL")
    return problems


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc["metadata"]["name"], doc["spec"], doc
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"], doc


def check_kubernetes(docs_by_file, layout):
    problems = []
    engines_seen = 0
    for fname, docs in docs_by_file.items():
        for doc in docs:
            if doc is None:
                continue
            if doc.get("kind") == "ConfigMap":
                for key, value in (doc.get("data") or {}).items():
                    inner = yaml.safe_load(value)
                    for r in inner["sharing"]["timeSlicing"]["resources"]:
                        if r.get("replicas", 1) < 2:
                            problems.append(f"{fname}: {key}: time-slicing replicas < 2")
            for name, spec, whole in pod_specs(doc):
                volumes = {v["name"]: v for v in spec.get("volumes", [])}
                engines = [c for c in spec.get("containers", []) if "kvcached" in c.get("image", "")]
                engines_seen += len(engines)
                shm_volumes = set()
                for c in engines:
                    where = f"{fname}: {name}/{c['name']}"
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    if "LD_PRELOAD" in env and env["LD_PRELOAD"] != layout["shim"]:
                        problems.append(f"{where}: LD_PRELOAD {env['LD_PRELOAD']} is not {layout['shim']}")
                    mounts = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/dev/shm"]
                    if not mounts:
                        problems.append(f"{where}: no volume at /dev/shm (the default is 64 MB "
                                        "and private to the container)")
                        continue
                    vol = volumes.get(mounts[0]["name"], {})
                    shm_volumes.add(mounts[0]["name"])
                    if "emptyDir" in vol:
                        ed = vol["emptyDir"] or {}
                        if ed.get("medium") != "Memory":
                            problems.append(f"{where}: /dev/shm emptyDir is not medium: Memory")
                        size = size_bytes(ed.get("sizeLimit", "0"))
                        if size is None or size < GIB:
                            problems.append(f"{where}: /dev/shm sizeLimit {ed.get('sizeLimit')!r} "
                                            "is under 1 GiB (or missing)")
                    elif "hostPath" in vol:
                        if vol["hostPath"].get("path") != "/dev/shm":
                            problems.append(f"{where}: hostPath for /dev/shm is {vol['hostPath'].get('path')}")
                    else:
                        problems.append(f"{where}: /dev/shm is neither a memory emptyDir nor hostPath")
                if len(engines) > 1:
                    if not spec.get("shareProcessNamespace"):
                        problems.append(f"{fname}: {name}: {len(engines)} engines in one pod "
                                        "without shareProcessNamespace: true")
                    if len(shm_volumes) != 1:
                        problems.append(f"{fname}: {name}: engines mount different /dev/shm volumes")
                    strategy = ((whole.get("spec") or {}).get("strategy") or {}).get("type")
                    if whole.get("kind") == "Deployment" and strategy != "Recreate":
                        problems.append(f"{fname}: {name}: a pod of several engines needs "
                                        "strategy Recreate (two generations on one GPU otherwise)")
    if engines_seen == 0:
        problems.append("kubernetes: no engine container found")
    return problems


def load(root):
    pk = root / "packaging"
    return {
        "dockerfile": (pk / "docker/Dockerfile").read_text(),
        "ignore": (pk / "docker/Dockerfile.dockerignore").read_text(),
        "compose": yaml.safe_load((pk / "docker/docker-compose.yml").read_text()),
        "k8s": {p.name: list(yaml.safe_load_all(p.read_text()))
                for p in sorted((pk / "kubernetes").glob("*.yaml"))},
    }


def run_checks(root, layout, files):
    return (check_dockerfile(files["dockerfile"], files["ignore"], root, layout)
            + check_compose(files["compose"], layout) + check_kubernetes(files["k8s"], layout))


def self_test(root, layout, files):
    """Each mutation breaks one rule; the checks must report it."""
    def pod(f, name):
        return next(d for d in f["k8s"][name] if d and d.get("kind") == "Deployment")["spec"]["template"]["spec"]

    def set_shm(f, v):
        f["compose"]["services"]["shared"]["shm_size"] = v

    mutations = {
        "LD_PRELOAD path": lambda f: f.update(dockerfile=f["dockerfile"].replace(
            "ENV LD_PRELOAD=/usr/lib/kvcached/", "ENV LD_PRELOAD=/opt/kvcached/")),
        "dockerignore": lambda f: f.update(ignore=f["ignore"].replace("!build/bin/kvctl\n", "")),
        "compose shm": lambda f: set_shm(f, "64m"),
        "compose pid": lambda f: f["compose"]["services"]["model-b"].pop("pid"),
        "pod shareProcessNamespace": lambda f: pod(f, "two-models-one-pod.yaml").pop("shareProcessNamespace"),
        "pod shm medium": lambda f: pod(f, "single-engine.yaml")["volumes"][0]["emptyDir"].pop("medium"),
        "pod LD_PRELOAD": lambda f: pod(f, "single-engine.yaml")["containers"][0]["env"].__setitem__(
            0, {"name": "LD_PRELOAD", "value": "/usr/local/lib/libkvcached_shim.so"}),
    }
    missed = []
    for what, mutate in mutations.items():
        broken = copy.deepcopy(files)
        mutate(broken)
        if not run_checks(root, layout, broken):
            missed.append(what)
    return missed


def main():
    root = pathlib.Path(sys.argv[1]).resolve()
    layout = deb_layout(root)
    files = load(root)
    problems = run_checks(root, layout, files)
    for p in problems:
        print("FAIL:", p)
    print(f"layout from the .deb rules: {layout['shim']}")
    print(f"checked: Dockerfile, docker-compose.yml, {len(files['k8s'])} Kubernetes files: "
          f"{len(problems)} problem(s)")
    if "--self-test" in sys.argv:
        missed = self_test(root, layout, files)
        for m in missed:
            print("FAIL: self-test: breaking", m, "went unnoticed")
        print(f"self-test: {7 - len(missed)} of 7 broken copies caught")
        problems += missed
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
